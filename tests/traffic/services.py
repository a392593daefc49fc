#!/usr/bin/env python3
"""An application's services on many ports of one host, and the client that calls them.

serve ADDR FIRST COUNT SECONDS: HTTP-like services on ports FIRST..FIRST+COUNT-1; each
connection reads a request (up to a blank line), answers 520 bytes and closes. Exits after
SECONDS.

call ADDR FIRST COUNT CALLS RATE: CALLS calls, RATE a second, each a new connection to port
FIRST + (i * 7 % COUNT) (every port in turn, in a fixed order): a request, the answer read to
its end. A port with no service refuses. Prints "<served> <refused>".
"""
import selectors, socket, sys, time

mode, addr, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 460\r\n\r\n" + b"x" * 460
ANSWER = ANSWER[:520]

if mode == "serve":
    seconds = float(sys.argv[5])
    sel = selectors.DefaultSelector()
    for port in range(first, first + count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(256)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, None)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            if key.data is None:
                try:
                    c, _ = key.fileobj.accept()
                except OSError:
                    continue
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ, bytearray())
                continue
            c, buf = key.fileobj, key.data
            try:
                d = c.recv(65536)
            except OSError:
                d = b""
            buf += d
            if not d or b"\r\n\r\n" in buf:
                sel.unregister(c)
                try:
                    if d:
                        c.setblocking(True)
                        c.settimeout(2.0)
                        c.sendall(ANSWER)
                        c.shutdown(socket.SHUT_WR)
                        c.recv(1)  # the client's FIN
                except OSError:
                    pass
                c.close()
elif mode == "call":
    calls, rate = int(sys.argv[5]), float(sys.argv[6])
    served = refused = 0
    t0 = time.monotonic()
    for i in range(calls):
        port = first + (i * 7 % count)
        try:
            c = socket.create_connection((addr, port), timeout=2.0)
            c.sendall(b"GET /api/v1/items HTTP/1.0\r\nHost: svc\r\n\r\n")
            while c.recv(65536):
                pass
            c.close()
            served += 1
        except ConnectionRefusedError:
            refused += 1
        except OSError:
            pass
        time.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    print(served, refused)
else:
    sys.exit("mode: serve | call")
