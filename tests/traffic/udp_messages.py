#!/usr/bin/env python3
"""One-way UDP messages, as a client sends them to a collector (statsd, syslog, a flow export).

usage: udp_messages.py sink ADDR PORTS SECONDS
           binds ADDR on each of PORTS (comma-separated) and reads without answering, SECONDS
       udp_messages.py send ADDR PORTS COUNT INTERVAL_SECONDS SRC_PORT_BASE
           sends COUNT messages to each of PORTS in turn (one port after the other), each from
           a new socket (a new source port: a client library that opens one per message), a
           counter of 12 to 35 bytes as statsd's, INTERVAL_SECONDS apart; prints how many it sent.
           Message i goes from port SRC_PORT_BASE+i: a port the kernel picked could repeat, and
           two messages from one port to one service would be one conversation.
"""
import select, socket, sys, time

mode, addr, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3].split(",")]
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if mode == "sink":
    socks = []
    for p in ports:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.bind((addr, p))
        socks.append(s)
    deadline = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < deadline:
        ready, _, _ = select.select(socks, [], [], 0.2)
        for s in ready:
            s.recvfrom(65535)
else:
    count, interval, base = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    sent = 0
    for p in ports:
        for i in range(count):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", base + sent))
            s.sendto(b"app.req:%d|c" % (i * 37 % 1000) + b"|#r:x" * (i % 5), (addr, p))
            s.close()
            sent += 1
            time.sleep(interval)
    print(sent)
