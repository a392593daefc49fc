#!/usr/bin/env python3
"""Address translation on a lab gateway: masquerade of everything that leaves IFACE, with
libnftables (the library nft uses; a dependency of dnsmasq-base, which the bootstrap
installs), so that the test needs no nft command. Run in the gateway's namespace; the rules
go with it.

usage: nat.py masquerade IFACE
"""
import ctypes, sys

if len(sys.argv) != 3 or sys.argv[1] != "masquerade":
    sys.exit("usage: nat.py masquerade IFACE")
iface = sys.argv[2]
lib = ctypes.CDLL("libnftables.so.1")
lib.nft_ctx_new.restype = ctypes.c_void_p
lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
ctx = lib.nft_ctx_new(0)
if not ctx:
    sys.exit("nft_ctx_new failed")
rules = f"""
table ip lab_nat {{
  chain post {{
    type nat hook postrouting priority 100; policy accept;
    oifname "{iface}" masquerade
  }}
}}
"""
rc = lib.nft_run_cmd_from_buffer(ctx, rules.encode())
lib.nft_ctx_free(ctx)
if rc != 0:
    sys.exit(f"nft rules failed ({rc})")
print("ok")
