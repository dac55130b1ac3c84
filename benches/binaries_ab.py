#!/usr/bin/env python3
"""Two tallykv binaries, A and B, side by side: what one change costs on a hot path.

    python3 benches/binaries_ab.py OLD_BINARY NEW_BINARY [--rounds 5] [--requests 200000]

Runs the same redis-benchmark workloads (SET, and EVALSHA of the `limits` library's
moving-window script) against each binary in alternating rounds (A, B, A, B, ...), `appendonly
no`, `--threads 2`, 50 clients, at -P 1 and -P 16, and prints each workload's median rps per
binary and the ratio B/A. The machine's run-to-run spread is larger than most costs worth
measuring; alternating rounds and medians are what make a few percent visible. Each run also
reads the server's CPU time (user + system, /proc/PID/stat) and reports CPU µs per request,
which moves less with the machine's load than rps (this VM has no hardware counters for
`perf stat -e instructions`).
"""

import argparse
import importlib.util
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from side_by_side import Server  # noqa: E402

# benches/collections.py shares its name with the standard library's module: load it by path.
_spec = importlib.util.spec_from_file_location("collections_bench", os.path.join(HERE, "collections.py"))
_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bench)
limits_script, redis_benchmark = _bench.limits_script, _bench.redis_benchmark


def argv_for(binary):
    def argv(port, d):
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--threads", "2",
                "--loglevel", "warning", "--appendonly", "no"]
    return argv


def cpu_seconds(pid):
    """The process's user + system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(s, requests, pipeline, extra):
    """One redis-benchmark run against server `s` (`redis_benchmark` of benches/collections.py,
    `extra` its options and test): the first test's rps, and the server's CPU µs per request."""
    before = cpu_seconds(s.proc.pid)
    res = redis_benchmark(s, requests, pipeline, extra)
    cpu = cpu_seconds(s.proc.pid) - before
    return next(iter(res.values())), cpu * 1e6 / requests


def print_ab_table(a_runs, b_runs, a_name, b_name, ratio="B/A"):
    """A markdown table of two settings' rounds (lists of {workload: figure}, round i of each
    adjacent in time): each workload's medians, their ratio, and the median [min-max] of the
    per-round ratios (where the machine's drift cancels best)."""
    print(f"| workload | {a_name} | {b_name} | {ratio} of the medians | {ratio} per round: median [min-max] |")
    print("|---|---|---|---|---|")
    for w in a_runs[0]:
        a = statistics.median(x[w] for x in a_runs)
        b = statistics.median(x[w] for x in b_runs)
        pairs = [y[w] / x[w] for x, y in zip(a_runs, b_runs)]
        print(f"| {w} | {a:,.2f} | {b:,.2f} | {b / a:.3f} | "
              f"{statistics.median(pairs):.3f} [{min(pairs):.3f}-{max(pairs):.3f}] |")


def one_round(binary, requests, script):
    s = Server(os.path.basename(binary), argv_for(binary))
    try:
        sha = s.cli("SCRIPT", "LOAD", script).strip()
        out = {}
        for p in (1, 16):
            n = requests * (4 if p == 16 else 1)
            workloads = {
                "set": ["-t", "set"],
                "evalsha_moving_window": ["EVALSHA", sha, "1", "mw:__rand_int__", "1700000000",
                                          "100", "60", "1"],
            }
            for name, extra in workloads.items():
                rps, cpu = measured(s, n, p, extra)
                out[f"{name} -P{p} rps"] = rps
                out[f"{name} -P{p} CPU µs/request"] = cpu
        return out
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200000)
    args = ap.parse_args()
    script = limits_script()
    runs = {args.a: [], args.b: []}
    for r in range(args.rounds):
        for binary in (args.a, args.b):
            runs[binary].append(one_round(binary, args.requests, script))
            print(f"round {r + 1}: {binary} {runs[binary][-1]}", file=sys.stderr)
    print_ab_table(runs[args.a], runs[args.b], "A median", "B median")


if __name__ == "__main__":
    main()
