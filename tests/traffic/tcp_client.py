#!/usr/bin/env python3
"""Opens COUNT TCP connections one after the other: send REQ_BYTES, read RESP_BYTES, then close
normally (FIN) or abort (RST, with MODE=abort; MODE=abort-after-fin waits for the server's FIN
first, so that the RST follows it: the packets' order is then fixed). Prints how many completed.

usage: tcp_client.py ADDR PORT REQ_BYTES RESP_BYTES MODE COUNT MAX_SECONDS
"""
import socket, struct, sys, time

addr, port, req, resp, mode, count, max_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), float(sys.argv[7])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
deadline = time.monotonic() + max_s
done = 0
for _ in range(count):
    if time.monotonic() > deadline:
        break
    c = socket.socket(fam, socket.SOCK_STREAM)
    c.settimeout(2.0)
    try:
        c.connect((addr, port))
        if req:
            c.sendall(b"c" * req)
        got = 0
        while got < resp:
            d = c.recv(65536)
            if not d:
                break
            got += len(d)
        if got >= resp:
            done += 1  # the exchange completed; how the connection ends is the test's choice
        if mode == "abort-after-fin":
            while c.recv(65536):
                pass
        if mode.startswith("abort"):
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
    except OSError:
        pass
    c.close()
print(done)
