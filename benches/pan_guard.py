#!/usr/bin/env python3
"""What `card-pan-guard` costs writes: the same server with the guard off and on (`refuse`).

    python3 benches/pan_guard.py [--bin target/release/tallykv-server] [--rounds 6] [--requests 2000000]

One server (`appendonly no`, `--threads 2`); redis-benchmark SET with 32-byte values (-d 32),
50 clients, -P 16, keys `key:<12 digits>` (-r 100000: the guard scans the key name too, and
its twelve digits are one short of the shortest card number, the worst case of the pre-scan
for a value without digits), then the same with values that hold digits
(`amount=12500;at=<13-digit ms timestamp>`, a payment service's typical value, which the
guard hands to the brand-range check). Between runs CONFIG SET switches the guard, so both
settings run in one process, alternately (ABBA by round: the machine's drift falls on both
alike). Prints each workload's median rps and server CPU µs per request (user + system, from
/proc/PID/stat, which moves less with the machine's load than rps) per setting, the ratio
on/off of the medians, and the median of the per-round ratios (each round's two runs are
adjacent in time, so the machine's drift cancels best there). The issue's target: the guard on costs at most 5% of SET throughput.
"""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from binaries_ab import measured, print_ab_table  # noqa: E402
from side_by_side import Server  # noqa: E402


def argv_for(binary):
    def argv(port, d):
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--threads", "2",
                "--loglevel", "warning", "--appendonly", "no"]
    return argv


def bench(s, requests, value):
    """One redis-benchmark SET run at -P 16: rps and the server's CPU µs per request. `value`:
    None for redis-benchmark's own 32-byte payload, else a SET of that value."""
    test = ["-t", "set", "-d", "32"] if value is None else ["SET", "key:__rand_int__", value]
    return measured(s, requests, 16, test)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "tallykv-server"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=2_000_000)
    args = ap.parse_args()
    now_ms = int(time.time() * 1000)
    workloads = {
        "SET 32-byte values -P16": None,
        "SET amount+timestamp -P16": f"amount=12500;at={now_ms}",
    }
    s = Server("tallykv", argv_for(os.path.abspath(args.bin)))
    runs = {"off": [], "on": []}
    try:
        for r in range(args.rounds):
            rows = {mode: {} for mode in runs}
            order = ["off", "on"] if r % 2 == 0 else ["on", "off"]
            for name, value in workloads.items():
                for mode in order:
                    reply = s.cli("CONFIG", "SET", "card-pan-guard",
                                  "refuse" if mode == "on" else "no").strip()
                    assert reply == "OK", reply
                    rps, cpu = bench(s, args.requests, value)
                    rows[mode][f"{name} rps"] = rps
                    rows[mode][f"{name} CPU µs/request"] = cpu
            for mode in runs:
                runs[mode].append(rows[mode])
                print(f"round {r + 1}: guard {mode} {rows[mode]}", file=sys.stderr)
        info = s.cli("INFO", "stats")
        assert "card_pan_guard_refusals:0" in info, "a benchmark write tripped the guard"
    finally:
        s.stop()
    print_ab_table(runs["off"], runs["on"], "guard off", "guard on (refuse)", "on/off")

if __name__ == "__main__":
    main()
