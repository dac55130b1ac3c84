#!/usr/bin/env python3
"""What encryption at rest costs writes: two servers of the same build, one with
`encryption-at-rest-key-file` and one without, both `appendonly yes` (the default) with
`appendfsync everysec`, driven alternately (ABBA by round) by the same redis-benchmark.

    python3 benches/at_rest.py [--bin target/release/tallykv-server] [--card target/release/tallykv-card]
                               [--rounds 6] [--requests 1000000]

Workloads: SET with 32-byte values at -P 16 and at -P 1 (50 clients, -r 100000 keys), and SET
with 1 KiB values at -P 16. Prints each workload's median rps and server CPU µs per request
(user + system, from /proc/PID/stat) per setting, the ratio on/off of the medians, and the
median [min-max] of the per-round ratios. The issue's target: on/off ≥ 0.90 of write
throughput.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from binaries_ab import measured, print_ab_table  # noqa: E402
from side_by_side import Server  # noqa: E402


def argv_for(binary, key_file):
    def argv(port, d):
        a = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--threads", "2",
             "--loglevel", "warning", "--appendonly", "yes", "--appendfsync", "everysec"]
        if key_file:
            a += ["--encryption-at-rest-key-file", key_file]
        return a
    return argv


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "tallykv-server"))
    ap.add_argument("--card", default=os.path.join(HERE, "..", "target", "release", "tallykv-card"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=1_000_000)
    args = ap.parse_args()
    keys = tempfile.mkdtemp(prefix="at-rest-keys-")
    key_file = os.path.join(keys, "node.keys")
    subprocess.run([args.card, "keygen", "--out", key_file], check=True, capture_output=True)
    binary = os.path.abspath(args.bin)
    workloads = {
        "SET 32 B -P16": (16, ["-t", "set", "-d", "32"]),
        "SET 32 B -P1": (1, ["-t", "set", "-d", "32"]),
        "SET 1 KiB -P16": (16, ["-t", "set", "-d", "1024"]),
    }
    servers = {"off": Server("off", argv_for(binary, None)),
               "on": Server("on", argv_for(binary, key_file))}
    runs = {"off": [], "on": []}
    try:
        assert "at_rest_encryption:1" in servers["on"].cli("INFO", "persistence")
        assert "at_rest_encryption:0" in servers["off"].cli("INFO", "persistence")
        for r in range(args.rounds):
            rows = {mode: {} for mode in runs}
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            for name, (pipeline, extra) in workloads.items():
                n = args.requests if pipeline == 16 else args.requests // 4
                for mode in order:
                    rps, cpu = measured(servers[mode], n, pipeline, extra)
                    rows[mode][f"{name} rps"] = rps
                    rows[mode][f"{name} CPU µs/request"] = cpu
            for mode in runs:
                runs[mode].append(rows[mode])
                print(f"round {r + 1}: at rest {mode} {rows[mode]}", file=sys.stderr)
        info = servers["on"].cli("INFO", "persistence")
        sealed = next(l for l in info.splitlines() if l.startswith("at_rest_values_sealed:"))
        print(f"encrypted server: {sealed.strip()}", file=sys.stderr)
    finally:
        for s in servers.values():
            s.stop()
        shutil.rmtree(keys, ignore_errors=True)
    print_ab_table(runs["off"], runs["on"], "at rest off", "at rest on", "on/off")

if __name__ == "__main__":
    main()
