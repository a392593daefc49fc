#!/usr/bin/env python3
"""Address translation on a lab gateway, with libnftables (the library nft uses; a dependency
of dnsmasq-base, which the bootstrap installs), so that the test needs no nft command. Run in
the gateway's namespace; the rules go with it.

usage: nat.py masquerade IFACE                  masquerade everything that leaves IFACE
       nat.py forward IFACE PORT ADDR TO_PORT   forward TCP PORT entering IFACE to ADDR:TO_PORT
"""
import ctypes, sys

if len(sys.argv) == 3 and sys.argv[1] == "masquerade":
    iface = sys.argv[2]
    rules = f"""
table ip lab_nat {{
  chain post {{
    type nat hook postrouting priority 100; policy accept;
    oifname "{iface}" masquerade
  }}
}}
"""
elif len(sys.argv) == 6 and sys.argv[1] == "forward":
    iface, port, addr, to_port = sys.argv[2:]
    rules = f"""
table ip lab_forward {{
  chain pre {{
    type nat hook prerouting priority -100; policy accept;
    iifname "{iface}" tcp dport {int(port)} dnat to {addr}:{int(to_port)}
  }}
}}
"""
else:
    sys.exit(__doc__)
lib = ctypes.CDLL("libnftables.so.1")
lib.nft_ctx_new.restype = ctypes.c_void_p
lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
ctx = lib.nft_ctx_new(0)
if not ctx:
    sys.exit("nft_ctx_new failed")
rc = lib.nft_run_cmd_from_buffer(ctx, rules.encode())
lib.nft_ctx_free(ctx)
if rc != 0:
    sys.exit(f"nft rules failed ({rc})")
print("ok")
