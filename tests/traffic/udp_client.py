#!/usr/bin/env python3
"""Sends COUNT requests of REQ_BYTES from distinct source ports, each waiting for one reply.

usage: udp_client.py ADDR PORT REQ_BYTES COUNT [INTERVAL_SECONDS [SRC_PORT_BASE]]
Prints how many replies arrived. With SRC_PORT_BASE, request i is sent from port SRC_PORT_BASE+i
(otherwise the kernel picks a random port, and two requests may share one: one flow).
"""
import socket, sys, time

addr, port, req, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
interval = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
base = int(sys.argv[6]) if len(sys.argv) > 6 else None
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
ok = 0
for i in range(count):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if base is not None:
        s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", base + i))
    s.settimeout(1.0)
    s.sendto(b"q" * req, (addr, port))
    try:
        s.recvfrom(65535)
        ok += 1
    except socket.timeout:
        pass
    s.close()
    if interval:
        time.sleep(interval)
print(ok)
