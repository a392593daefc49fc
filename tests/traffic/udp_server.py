#!/usr/bin/env python3
"""UDP responder for the lab: answers every datagram with a reply of a fixed size.

usage: udp_server.py ADDR PORT REPLY_BYTES SECONDS   (exits after SECONDS)
"""
import socket, sys, time

addr, port, reply, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.bind((addr, port))
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    s.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    s.sendto(b"r" * reply, peer)
