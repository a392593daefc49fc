#!/usr/bin/env python3
"""Sends one raw Ethernet frame (hex on the command line) out of an interface (AF_PACKET).

usage: raw_frame.py IFACE HEX [COUNT]
"""
import socket, sys

iface, frame = sys.argv[1], bytes.fromhex(sys.argv[2])
count = int(sys.argv[3]) if len(sys.argv) > 3 else 1
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for _ in range(count):
    s.send(frame)
