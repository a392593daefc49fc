#!/usr/bin/env python3
"""TCP server for the lab. Each connection: read REQ_BYTES, answer RESP_BYTES, then close
normally (FIN) or abort (RST, with MODE=abort). Exits after SECONDS.

usage: tcp_server.py ADDR PORT REQ_BYTES RESP_BYTES MODE SECONDS   (MODE: close | abort)
"""
import socket, struct, sys, time

addr, port, req, resp, mode, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
srv = socket.socket(fam, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((addr, port))
srv.listen(4096)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    srv.settimeout(max(0.05, deadline - time.monotonic()))
    try:
        c, _ = srv.accept()
    except socket.timeout:
        continue
    c.settimeout(2.0)
    got = 0
    try:
        while got < req:
            d = c.recv(65536)
            if not d:
                break
            got += len(d)
        if resp:
            c.sendall(b"s" * resp)
        if mode == "abort":
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            c.shutdown(socket.SHUT_WR)
            c.recv(1)  # wait for the client's FIN
    except OSError:
        pass
    c.close()
