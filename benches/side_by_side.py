#!/usr/bin/env python3
"""Side-by-side load benchmark: tallykv vs Debian's redis-server, same machine, same client.

Starts each server on a free port, runs the same redis-benchmark commands against each
(SET, GET, INCR, HSET; -P 1 and -P 16; 50 clients), then loads 1M keys (16-byte keys,
32-byte values) and reports memory per key from INFO used_memory and from RSS. Prints a
markdown table with the ratios tallykv/redis. Run from the repository root after
`cargo build --release`:

    python3 benches/side_by_side.py [--requests 1000000] [--threads 1,2] [--skip-memory]
"""

import argparse
import csv
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TESTS = ["set", "get", "incr", "hset"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if r.stdout.strip() == "PONG":
            # tallykv answers PING while loading its data dir; wait for loading:0 too.
            info = subprocess.run(["redis-cli", "-p", str(port), "info", "persistence"],
                                  capture_output=True, text=True).stdout
            if "loading:1" not in info:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on {port} did not answer PING")


class Server:
    def __init__(self, name, argv_fn):
        self.name = name
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-")
        self.proc = subprocess.Popen(argv_fn(self.port, self.dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.port, self.proc)

    def cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True)
        return r.stdout

    def info_field(self, field):
        for line in self.cli("info", "memory").splitlines():
            if line.startswith(field + ":"):
                return int(line.split(":", 1)[1])
        raise KeyError(field)

    def rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_argv(port, d):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", d, "--protected-mode", "no"]


BIN = "target/release/tallykv-server"


def tallykv_argv(threads):
    def argv(port, d):
        return [BIN, "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                "--threads", str(threads), "--loglevel", "warning"]
    return argv


def bench(server, requests, pipeline):
    """Runs redis-benchmark; returns {test: (rps, p50_ms, p99_ms)}."""
    cmd = ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(requests), "-P", str(pipeline),
           "-r", "100000", "-t", ",".join(TESTS), "--csv"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = {}
    for row in csv.DictReader(io.StringIO(out)):
        name = row["test"].lower().split()[0]
        res[name] = (float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]))
    return res


def load_keys(server, n):
    """Writes n keys (16-byte names, 32-byte values) through redis-cli --pipe."""
    value = b"v" * 32
    buf = io.BytesIO()
    for i in range(n):
        key = b"key:%012d" % i
        buf.write(b"*3\r\n$3\r\nSET\r\n$16\r\n" + key + b"\r\n$32\r\n" + value + b"\r\n")
    r = subprocess.run(["redis-cli", "-p", str(server.port), "--pipe"], input=buf.getvalue(), capture_output=True, check=True)
    if b"errors: 0" not in r.stdout:
        raise RuntimeError(r.stdout.decode())


def memory_per_key(server, n):
    server.cli("flushall")
    time.sleep(0.5)
    used0, rss0 = server.info_field("used_memory"), server.rss()
    load_keys(server, n)
    time.sleep(0.5)
    dbsize = int(server.cli("dbsize").strip())
    used1, rss1 = server.info_field("used_memory"), server.rss()
    return dbsize, (used1 - used0) / n, (rss1 - rss0) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--bin", default=BIN, help="tallykv-server binary to measure")
    args = ap.parse_args()
    globals()["BIN"] = args.bin
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")

    servers = [("redis-server " + subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2], redis_argv)]
    for t in args.threads.split(","):
        servers.append((f"tallykv --threads {t}", tallykv_argv(int(t))))

    results = {}
    memory = {}
    for name, argv in servers:
        s = Server(name, argv)
        try:
            for p in (1, 16):
                results[(name, p)] = bench(s, args.requests, p)
                print(f"{name} -P {p}: " + ", ".join(f"{t} {v[0]:.0f} rps p99 {v[2]:.3f}" for t, v in results[(name, p)].items()), flush=True)
            if not args.skip_memory:
                memory[name] = memory_per_key(s, args.keys)
                print(f"{name} memory: keys={memory[name][0]} used/key={memory[name][1]:.1f} rss/key={memory[name][2]:.1f}", flush=True)
        finally:
            s.stop()

    base = servers[0][0]
    print()
    print(f"| server | test | -P | rps | p50 ms | p99 ms | rps ratio vs {base} | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, _ in servers:
        for p in (1, 16):
            for t in TESTS:
                rps, p50, p99 = results[(name, p)][t]
                brps, _, bp99 = results[(base, p)][t]
                print(f"| {name} | {t.upper()} | {p} | {rps:.0f} | {p50:.3f} | {p99:.3f} | {rps / brps:.2f} | {p99 / bp99 if bp99 else 0:.2f} |")
    if memory:
        print()
        print(f"| server | keys | used_memory bytes/key | RSS bytes/key | used ratio vs {base} |")
        print("|---|---|---|---|---|")
        for name, _ in servers:
            if name in memory:
                k, used, rss = memory[name]
                print(f"| {name} | {k} | {used:.1f} | {rss:.1f} | {used / memory[base][1]:.2f} |")


if __name__ == "__main__":
    main()
