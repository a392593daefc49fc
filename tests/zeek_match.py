#!/usr/bin/env python3
"""How many of Zeek's TCP, UDP and ICMP connections `sensor replay` finds, by 5-tuple.

Usage: tests/zeek_match.py SENSOR_BINARY [ZEEK_DATA_DIR] [--model FILE]

For every pair of `pairs.tsv` in the Zeek data directory (default `../shared/data/zeek` from the
repository root), replays the trace and counts Zeek's conn.log rows whose connection is among
the sensor's records: same protocol, same two endpoints (either orientation: Zeek flips some),
counted as multisets (two Zeek rows on one 5-tuple need two records). ICMP is compared the way
Zeek keys it: type as the originator "port", and as the responder's the counterpart type of a
request/reply pair, else the code. Prints one line per pair and the totals by category.

A quick measuring tool until the parity test suite exists, not a test.
"""

import collections
import json
import os
import subprocess
import sys

# Zeek's ICMP request/reply counterparts (v4 and v6).
ICMP_COUNTERPART = {
    4: {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17, 10: 9, 9: 10},
    6: {128: 129, 129: 128, 133: 134, 134: 133, 135: 136, 136: 135, 130: 131, 131: 130},
}
KINDS = ("tcp", "udp", "icmp")


def zeek_rows(path):
    fields, rows = None, []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#fields"):
                fields = line.split("\t")[1:]
            elif line.startswith("#") or not line:
                continue
            else:
                rows.append(dict(zip(fields, line.split("\t"))))
    return rows


def key(proto, a, ap, b, bp):
    ends = sorted([(a, int(ap)), (b, int(bp))])
    return (proto, ends[0], ends[1])


def sensor_keys(binary, trace, model):
    args = [binary, "replay", "--format", "jsonl"]
    if model:
        args += ["--model", model]
    r = subprocess.run(args + [trace], capture_output=True, text=True)
    summary = next((l for l in r.stderr.splitlines() if l.startswith("summary:")), None)
    error = json.loads(summary[len("summary:"):])["replay"]["error"] if summary else r.stderr.strip()[-200:]
    if r.returncode != 0 and not error:
        error = r.stderr.strip()[-200:]
    keys = collections.Counter()
    for line in r.stdout.splitlines():
        d = json.loads(line)
        t = d["transport"]
        if t not in KINDS:
            continue
        op, rp = d["orig_port"], d["resp_port"]
        if t == "icmp":
            it, ic = d.get("icmp_type") or 0, d.get("icmp_code") or 0
            op = it
            rp = ICMP_COUNTERPART[d["ip_version"]].get(it, ic)
        keys[key(t, d["orig_addr"], op, d["resp_addr"], rp)] += 1
    return keys, error


def main():
    args = sys.argv[1:]
    model = None
    if "--model" in args:
        i = args.index("--model")
        model = args[i + 1]
        del args[i : i + 2]
    binary = args[0]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = args[1] if len(args) > 1 else os.path.join(root, "..", "shared", "data", "zeek")
    totals = collections.defaultdict(lambda: [0, 0])
    refused = 0
    with open(os.path.join(data, "pairs.tsv")) as f:
        pairs = [l.rstrip("\n").split("\t") for l in f if not l.startswith("#")]
    for pid, category, trace, baseline, *_ in pairs:
        zeek = collections.Counter(
            key(r["proto"], r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"])
            for r in zeek_rows(os.path.join(data, baseline))
            if r["proto"] in KINDS
        )
        ours, error = sensor_keys(binary, os.path.join(data, trace), model)
        refused += bool(error)
        matched = sum(min(n, ours[k]) for k, n in zeek.items())
        total = sum(zeek.values())
        totals[category][0] += matched
        totals[category][1] += total
        mark = f"  ERROR {error}" if error else ""
        print(f"{pid} {category:12} {matched:4}/{total:<4} {trace}{mark}")
    print()
    m = t = 0
    for c, (mm, tt) in sorted(totals.items()):
        print(f"{c:12} {mm:5}/{tt:<5} {100 * mm / max(tt, 1):5.1f}%")
        m, t = m + mm, t + tt
    print(f"{'all':12} {m:5}/{t:<5} {100 * m / max(t, 1):5.1f}%   traces refused: {refused}")


if __name__ == "__main__":
    main()
