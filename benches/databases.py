#!/usr/bin/env python3
"""Numbered databases side by side: does working in database 9 cost anything database 0 does not?

    python3 benches/databases.py [--rounds 3] [--requests 200000] [--bin target/release/tallykv-server]

Starts Debian's redis-server and tallykv (`--threads 2`, `appendonly no` on both), and in
alternating rounds runs the same redis-benchmark workloads (SET, GET, INCR, LPUSH; 50
clients; -P 1 and -P 16) with `--dbnum 0` and with `--dbnum 9`, and then both at once (two
redis-benchmark processes, one per database, 25 clients each: connections of one core
switching between two databases). Prints the median rps of each and the tallykv/redis ratio;
the target is that database 9's ratios (and the mixed run's) are those of database 0 within
the run-to-run noise: numbered databases add no gap of their own.
"""

import argparse
import csv
import io
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from side_by_side import Server, redis_argv  # noqa: E402

TESTS = "set,get,incr,lpush"


def tallykv_argv(binary):
    def argv(port, d):
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--threads", "2",
                "--loglevel", "warning", "--appendonly", "no"]
    return argv


def benchmark(server, requests, pipeline, dbnum, clients=50):
    cmd = ["redis-benchmark", "-p", str(server.port), "-c", str(clients), "-n", str(requests),
           "-P", str(pipeline), "-r", "100000", "--dbnum", str(dbnum), "-t", TESTS, "--csv"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def results(proc):
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed: {out}")
    return {row["test"].lower().split()[0]: float(row["rps"]) for row in csv.DictReader(io.StringIO(out))}


def one_round(name, argv, requests):
    s = Server(name, argv)
    try:
        out = {}
        for p in (1, 16):
            n = requests * (4 if p == 16 else 1)
            for db in (0, 9):
                for test, rps in results(benchmark(s, n, p, db)).items():
                    out[f"{test} -P{p} db{db}"] = rps
            # Both databases at once: the sum of the two runs' rps.
            a, b = benchmark(s, n // 2, p, 0, 25), benchmark(s, n // 2, p, 9, 25)
            ra, rb = results(a), results(b)
            for test in ra:
                out[f"{test} -P{p} db0+db9"] = ra[test] + rb[test]
            s.cli("flushall")
        return out
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--bin", default="target/release/tallykv-server")
    args = ap.parse_args()
    servers = [("redis", redis_argv), ("tallykv", tallykv_argv(args.bin))]
    runs = {name: [] for name, _ in servers}
    for r in range(args.rounds):
        for name, argv in servers:
            runs[name].append(one_round(name, argv, args.requests))
            print(f"round {r + 1}: {name} {runs[name][-1]}", file=sys.stderr, flush=True)
    print("| workload | redis-server rps | tallykv rps | tallykv/redis |")
    print("|---|---|---|---|")
    for w in runs["redis"][0]:
        a = statistics.median(x[w] for x in runs["redis"])
        b = statistics.median(x[w] for x in runs["tallykv"])
        print(f"| {w} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
