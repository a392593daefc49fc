#!/usr/bin/env python3
"""A monitoring system's TCP port checks (Nagios' check_tcp and check_ssh, a load balancer's
health check): every INTERVAL seconds, for ROUNDS rounds, connect to each target (waiting
1.5 s for an answer, time for the stack to send its SYN again), read the BANNER bytes its
service says first (0: none), and close: with FIN where nothing was read, with RST after a
banner (as a checker that leaves at once does). Rounds start on a steady
schedule (round i at i * INTERVAL), as a scheduler runs them. Prints one line per target:
`PORT connected refused unanswered`.

usage: port_check.py ADDR ROUNDS INTERVAL PORT:BANNER [PORT:BANNER ...]
"""
import socket, struct, sys, time

addr, rounds, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
targets = [tuple(int(x) for x in t.split(":")) for t in sys.argv[4:]]
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
tally = {port: [0, 0, 0] for port, _ in targets}
start = time.monotonic()
for i in range(rounds):
    time.sleep(max(0.0, start + i * interval - time.monotonic()))
    for port, banner in targets:
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.settimeout(1.5)
        try:
            c.connect((addr, port))
            got = 0
            while got < banner:
                d = c.recv(banner - got)
                if not d:
                    break
                got += len(d)
            if banner:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            tally[port][0] += 1
        except ConnectionRefusedError:
            tally[port][1] += 1
        except TimeoutError:
            tally[port][2] += 1
        except OSError:
            pass
        c.close()
for port, (connected, refused, unanswered) in tally.items():
    print(port, connected, refused, unanswered)
