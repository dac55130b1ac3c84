#!/usr/bin/env python3
"""Lists, sets, sorted sets and scripts, side by side with Debian's redis-server (issue 10).

Same machine, same client (redis-benchmark, 50 connections, -P 1 and -P 16), one run:
  * SET (the base ratio every other ratio is compared with), and redis-benchmark's own
    lpush, lpop, sadd, spop, zadd, zpopmin and lrange_100 tests;
  * SET of one key (`SET hotkey v`): the base of the one-key tests (all of redis-benchmark's
    collection tests but zadd hammer one key);
  * EVALSHA of the `limits` library's moving-window script (acquire_moving_window.lua: LINDEX,
    LPUSH, LTRIM, EXPIRE per call) on 100k keys;
  * a sliding-window-log check in MULTI (ZADD + ZREMRANGEBYSCORE + ZCARD + PEXPIRE, EXEC) on
    100k keys, sent by examples/waitload.rs --workload slidewin (redis-benchmark cannot send a
    transaction): 50 connections, 1 or 16 transactions in flight each; rps = transactions/s;
with `appendonly no` on both sides, then again with `appendonly yes` + `appendfsync everysec`.
Then memory per member of one 1M-member list, set and sorted set (INFO used_memory).

Prints markdown tables (rps and tallykv/redis ratios). Run from the repository root after
`cargo build --release --bin tallykv-server --example waitload`:

    python3 benches/collections.py [--requests 200000] [--p16-factor 8] [--threads 2] [--skip-memory]

-P 16 runs send --p16-factor times --requests: at 16 in flight the servers run 10-20 times
faster, and a run of a fraction of a second measures the machine's noise more than them.
"""

import argparse
import csv
import io
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from side_by_side import BIN, Server  # noqa: E402

TESTS = ["set", "lpush", "lpop", "sadd", "spop", "zadd", "zpopmin", "lrange_100"]


def limits_script():
    import limits

    path = os.path.join(os.path.dirname(limits.__file__), "resources", "redis", "lua_scripts",
                        "acquire_moving_window.lua")
    with open(path) as f:
        return f.read()


def redis_argv(fsync):
    def argv(port, d):
        a = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", d,
             "--protected-mode", "no"]
        return a + (["--appendonly", "yes", "--appendfsync", "everysec"] if fsync else ["--appendonly", "no"])
    return argv


def tallykv_argv(threads, fsync):
    def argv(port, d):
        a = [BIN, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--threads", str(threads),
             "--loglevel", "warning"]
        return a + (["--appendonly", "yes", "--appendfsync", "everysec"] if fsync else ["--appendonly", "no"])
    return argv


def redis_benchmark(server, requests, pipeline, extra):
    cmd = ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(requests), "-P", str(pipeline),
           "-r", "100000", "--csv", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = {}
    for row in csv.DictReader(io.StringIO(out)):
        name = row["test"].lower().split()[0]
        res[name] = float(row["rps"])
    return res


def run_all(server, requests, pipeline, sha):
    res = redis_benchmark(server, requests, pipeline, ["-t", ",".join(TESTS)])
    # One custom command per run: redis-benchmark names it after the command.
    ev = redis_benchmark(server, requests, pipeline,
                         ["EVALSHA", sha, "1", "mw:__rand_int__", "1700000000", "100", "60", "1"])
    res["evalsha_moving_window"] = next(iter(ev.values()))
    # SET of one key: the fair base for redis-benchmark's one-key tests (lpush, lpop, sadd,
    # spop, zpopmin and lrange_100 all hammer one key, so one core serves every request and
    # half the connections hop to it from the other core; SET above spreads 100k keys).
    hot = redis_benchmark(server, requests, pipeline, ["SET", "hotkey", "v"])
    res["set_one_key"] = next(iter(hot.values()))
    res["multi_sliding_window"] = waitload(server, requests, pipeline)
    return res


WAITLOAD = os.path.join(os.path.dirname(BIN), "examples", "waitload")


def waitload(server, requests, pipeline):
    # About as long as redis-benchmark's runs of `requests` at a few 10k/s (at most 4 s).
    seconds = min(4.0, max(2.0, requests / 50000))
    out = subprocess.run([WAITLOAD, "--port", str(server.port), "--standalone", "--workload", "slidewin",
                          "--clients", "50", "--pipeline", str(pipeline), "--seconds", str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    import json
    r = json.loads(out)
    if r["errors"] or r["conn_errors"]:
        raise RuntimeError(f"waitload on {server.name}: {out}")
    return r["rps"]


def memory_per_member(server, n):
    server.cli("flushall")
    used0 = settled_memory(server)
    out = {}
    for kind, cmd in [("list", "RPUSH"), ("set", "SADD"), ("zset", "ZADD")]:
        buf = io.BytesIO()
        batch = 1000
        for start in range(0, n, batch):
            args = [cmd.encode(), kind.encode()]
            for i in range(start, start + batch):
                if kind == "zset":
                    args.append(str(i).encode())
                args.append(b"member:%d" % i)
            buf.write(b"*%d\r\n" % len(args))
            for a in args:
                buf.write(b"$%d\r\n%s\r\n" % (len(a), a))
        r = subprocess.run(["redis-cli", "-p", str(server.port), "--pipe"], input=buf.getvalue(),
                           capture_output=True, check=True)
        if b"errors: 0" not in r.stdout:
            raise RuntimeError(r.stdout.decode())
        # Settled: right after the load, memory still holds what serving it took (the
        # loading connection's buffers, freed once the server sees it close).
        used1 = settled_memory(server)
        out[kind] = (used1 - used0) / n
        server.cli("del", kind)
        used0 = settled_memory(server)
    return out


def settled_memory(server):
    """used_memory once it stops moving: after a DEL, until the background thread freed the
    value (lazyfree-lazy-user-del) and nothing is pending; after a load, until the loading
    connection's buffers are freed."""
    import time
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        pending = server.info_field("lazyfree_pending_objects")
        used = server.info_field("used_memory")
        if pending == 0 and used == last:
            return used
        last = used
        time.sleep(0.2)
    raise RuntimeError(f"{server.name}: used_memory did not settle")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--p16-factor", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true")
    args = ap.parse_args()
    body = limits_script()
    import hashlib
    sha = hashlib.sha1(body.encode()).hexdigest()
    for fsync in (() if args.memory_only else (False, True)):
        mode = "appendonly yes, everysec" if fsync else "appendonly no"
        results = {}
        for name, argv in [("redis", redis_argv(fsync)), ("tallykv", tallykv_argv(args.threads, fsync))]:
            s = Server(name, argv)
            try:
                s.cli("script", "load", body)
                results[name] = {
                    p: run_all(s, args.requests * (args.p16_factor if p > 1 else 1), p, sha)
                    for p in (1, 16)
                }
            finally:
                s.stop()
        print(f"\n### {mode} (tallykv --threads {args.threads}; 50 clients; rps; ratio tallykv/redis)\n")
        print("| test | redis -P1 | tallykv -P1 | ratio -P1 | redis -P16 | tallykv -P16 | ratio -P16 |")
        print("|---|---|---|---|---|---|---|")
        for test in TESTS + ["set_one_key", "evalsha_moving_window", "multi_sliding_window"]:
            row = [test]
            for p in (1, 16):
                r, t = results["redis"][p].get(test, 0), results["tallykv"][p].get(test, 0)
                row += [f"{r:,.0f}", f"{t:,.0f}", f"{t / r:.2f}" if r else "-"]
            print("| " + " | ".join(row) + " |")
    if not args.skip_memory:
        n = 1_000_000
        mem = {}
        for name, argv in [("redis", redis_argv(False)), ("tallykv", tallykv_argv(args.threads, False))]:
            s = Server(name, argv)
            try:
                mem[name] = memory_per_member(s, n)
            finally:
                s.stop()
        print(f"\n### Memory per member, one {n:,}-member collection (used_memory delta / n)\n")
        print("| type | redis | tallykv | ratio |")
        print("|---|---|---|---|")
        for kind in ("list", "set", "zset"):
            r, t = mem["redis"][kind], mem["tallykv"][kind]
            print(f"| {kind} | {r:.2f} B | {t:.2f} B | {t / r:.3f} |")


if __name__ == "__main__":
    main()
