#!/usr/bin/env python3
"""Payment-mix benchmark (issue 9): card authorizations on a 3-node tallykv cluster vs a redis-server 3+3 cluster.

For each appendfsync policy (--fsync, default everysec,always) it starts both clusters exactly as
benches/cluster.py does (its TallyCluster and RedisCluster), preloads each (the card blobs and the
merchant profiles, not timed; redis then waits for its replicas to catch up), and runs the paymix
client (examples/paymix.rs) --repeats times against each, the order flipped every repeat:

tallykv      plain pipelines: a tallykv write is acknowledged after its slot group's Raft commit on
             2 of 3 nodes, so nothing is added;
redis+WAIT   each node's pipeline ends with `WAIT 1 0` (its writes are on >= 1 replica, in memory:
             Redis 7.0's WAIT does not wait for the replica's fsync);
redis        no WAIT: the client's ceiling on redis (--no-redis-nowait skips it).

One authorization is 12 commands on three slots (idempotency id, card, merchant): SET NX PX,
GET of the cached card, INCR + PEXPIRE NX on two card velocity windows, INCRBY + PEXPIRE NX of the
card's daily spend, HMGET of the merchant profile, two HINCRBY + PEXPIRE NX of the merchant's daily
stats (the exact list is in examples/paymix.rs). Cards (1M) and merchants (100k) are Zipf(s=1.0).
The commands are grouped by the primary owning their slot, one pipeline per node, all sent at once;
an authorization completes when every node has answered. 50 clients (--clients), one
authorization in flight each, each with its own connection to every primary, on one client thread.
Authorizations/s counts those that started after --warmup, completed within --seconds and got no
error reply (nor a WAIT of 0 replicas: such failed authorizations are reported in the notes);
latency is per authorization (first write to last reply).

Prints a markdown table with the median [min-max] over repeats and the ratios tallykv/that row,
computed per repeat (runs adjacent in time). This machine is a shared 2-vCPU VM: the client runs
on the same cores as 6 (redis) or 3 (tallykv) servers. Read the ratios, not the absolute numbers.

Run from the repository root after
`cargo build --release --bin tallykv-server --example paymix`:

    python3 benches/paymix.py [--bin target/release/tallykv-server] [--repeats 3] [--seconds 6]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import cluster as C  # benches/cluster.py: process, cluster and table helpers

# (label, system, --wait) in the order of an even repeat.
RUNS = [("tallykv", "tallykv", False), ("redis+WAIT", "redis", True), ("redis", "redis", False)]


def paymix_path(bin_path, override=None):
    """The paymix binary: --loader, else next to --bin (`X/tallykv-server` -> `X/examples/paymix`),
    else target/release/examples/paymix."""
    if override:
        return override
    beside = os.path.join(os.path.dirname(bin_path) or ".", "examples", "paymix")
    return beside if os.path.exists(beside) else "target/release/examples/paymix"


def paymix(args, port, extra, timeout):
    """One paymix run against the cluster seeded at `port`; its JSON line as a dict."""
    cmd = [args.loader, "--port", str(port), "--clients", str(args.clients), "--cards", str(args.cards),
           "--merchants", str(args.merchants), "--zipf", str(args.zipf), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"paymix exited {r.returncode}: {r.stderr.strip()[-300:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


class Runner:
    def __init__(self, args):
        self.args = args
        self.rows = {}  # (label, fsync) -> [(auths/s, commands/s, p50, p99, p999)] per repeat, None if failed
        self.preload = {}  # (system, fsync) -> seconds
        self.notes = []

    def note(self, msg):
        print("  NOTE " + msg, flush=True)
        self.notes.append(msg)

    def preload_cluster(self, cluster, system, fsync):
        t0 = time.monotonic()
        # Generous: tallykv takes pipelined SETs at a few 10k/s on this VM.
        res = paymix(self.args, cluster.live_ports()[0], ["--preload", "--seconds", "0"], timeout=1800)
        if res["preload_retries"] or res["preload_restarts"]:
            self.note(f"{system} {fsync} preload: {res['preload_retries']} keys sent again after a refusal, "
                      f"{res['preload_restarts']} restarts on a new slot map; first: {res['preload_refusal']}")
        # A deep-pipelined preload can cost tallykv a leader (see the notes): start measuring once
        # cluster_state is ok everywhere again, and redis once its replicas have caught up.
        cluster.wait_ok(120, cluster.replicas_synced if system == "redis" else lambda: True)
        self.preload[(system, fsync)] = time.monotonic() - t0
        print(f"  preloaded {system} in {self.preload[(system, fsync)]:.1f}s", flush=True)

    def run(self, cluster, label, fsync, wait, repeat):
        a = self.args
        extra = ["--warmup", str(a.warmup), "--seconds", str(a.seconds)] + (["--wait"] if wait else [])
        try:
            # paymix gives up on a client 30 s after the end; the margin covers its setup.
            res = paymix(a, cluster.live_ports()[0], extra, timeout=a.warmup + a.seconds + 90)
            if res["errors"]:
                self.note(f"{label} {fsync} repeat {repeat}: {res['failed_auths']} failed authorizations "
                          f"(not counted), {res['errors']} errors ({res['wait_short']} WAIT of 0 replicas), "
                          f"e.g. {res['error_samples']}")
            if res["conn_errors"]:
                self.note(f"{label} {fsync} repeat {repeat}: {res['conn_errors']} connection errors "
                          f"{res['error_samples']}")
            if res["misses"]:
                self.note(f"{label} {fsync} repeat {repeat}: {res['misses']} GET/HMGET found no preloaded value")
            if res["p50_ms"] is None:
                raise RuntimeError("no authorization completed")
            result = (res["auths_per_s"], res["commands_per_s"], res["p50_ms"], res["p99_ms"], res["p999_ms"])
            print(f"  {label:11} {fsync:8} auth/s {result[0]:8.0f} cmd/s {result[1]:9.0f} "
                  f"p50 {result[2]:7.3f} p99 {result[3]:8.3f} p99.9 {result[4]:8.3f} "
                  f"pipelines/auth {res['pipelines_per_auth']:.2f}", flush=True)
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the others
            self.note(f"{label} {fsync} repeat {repeat} FAILED: {type(e).__name__}: {e}")
            result = None
        self.rows.setdefault((label, fsync), []).append(result)


def run_fsync(runner, fsync, log_dir):
    a = runner.args
    tk = rc = None
    try:
        print(f"appendfsync {fsync}: starting clusters", flush=True)
        tk = C.TallyCluster(a.bin, fsync, a.threads, log_dir)
        rc = C.RedisCluster(fsync, log_dir)
        runner.commands = (tk.command, rc.command)
        clusters = {"tallykv": tk, "redis": rc}
        for system, c in clusters.items():
            runner.preload_cluster(c, system, fsync)
        runs = [r for r in RUNS if a.redis_nowait or r[0] != "redis"]
        for rep in range(a.repeats):
            print(f"appendfsync {fsync}, repeat {rep + 1}/{a.repeats}", flush=True)
            for label, system, wait in (runs if rep % 2 == 0 else runs[::-1]):
                runner.run(clusters[system], label, fsync, wait, rep)
            for c in (tk, rc):
                for n in c.nodes:
                    n.check()
    finally:
        for c in (tk, rc):
            if c:
                c.stop()


def summarize(runner, redis_label):
    a = runner.args

    def stat(rs, i, f="{:.0f}"):
        xs = [r[i] for r in rs if r]
        return C.fmt_range(xs, f) if xs else "n/a"

    def ratios(num, den, i):
        return [x[i] / y[i] for x, y in zip(num, den) if x and y and y[i]]

    shown = {"tallykv": "tallykv", "redis+WAIT": f"{redis_label} + WAIT 1 0 per node pipeline",
             "redis": f"{redis_label}, no WAIT (client ceiling)"}
    lines = ["paymix, authorizations of 12 commands (median [min-max] over repeats; ratios per repeat):", "",
             "| appendfsync | cluster | auth/s | commands/s | p50 ms | p99 ms | p99.9 ms "
             "| tallykv/this auth/s | tallykv/this p99 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fsync in a.fsync:
        t = runner.rows.get(("tallykv", fsync), [])
        for label, _, _ in RUNS:
            if (label, fsync) not in runner.rows:
                continue
            s = runner.rows[(label, fsync)]
            rr = "" if label == "tallykv" else C.ratio_range(ratios(t, s, 0))
            pr = "" if label == "tallykv" else C.ratio_range(ratios(t, s, 3))
            lines.append(f"| {fsync} | {shown[label]} | {stat(s, 0)} | {stat(s, 1)} | {stat(s, 2, '{:.2f}')} "
                         f"| {stat(s, 3, '{:.2f}')} | {stat(s, 4, '{:.2f}')} | {rr} | {pr} |")
    lines.append("")
    for fsync in a.fsync:
        rs = ratios(runner.rows.get(("tallykv", fsync), []), runner.rows.get(("redis+WAIT", fsync), []), 0)
        if rs:
            met = "met" if statistics.median(rs) >= 1 else "MISSED"
            lines.append(f"- target tallykv >= 1.0x redis+WAIT authorizations/s, {fsync}: {met} "
                         f"(median ratio {statistics.median(rs):.2f}, range {min(rs):.2f}-{max(rs):.2f})")
    pre = ", ".join(f"{s} {f} {t:.0f}s" for (s, f), t in runner.preload.items())
    if pre:
        lines.append(f"- preload ({a.cards} cards, {a.merchants} merchant profiles; not timed): {pre}")
    if runner.notes:
        lines.append("")
        lines.append("Notes (errors, misses, failed runs):")
        lines.extend(f"- {n}" for n in runner.notes)
    print("\n" + "\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=C.BIN, help="tallykv-server binary (default target/release/tallykv-server)")
    ap.add_argument("--fsync", default="everysec,always", help="appendfsync policies (comma list)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every run (default 3)")
    ap.add_argument("--seconds", type=float, default=6, help="measured seconds of each run (default 6)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds not measured at the start of a run")
    ap.add_argument("--clients", type=int, default=50, help="authorizations in flight (default 50)")
    ap.add_argument("--cards", type=int, default=1_000_000, help="cards (default 1000000)")
    ap.add_argument("--merchants", type=int, default=100_000, help="merchants (default 100000)")
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of cards and merchants (default 1.0)")
    ap.add_argument("--loader", default=None, help="paymix binary (default: examples/paymix next to --bin)")
    ap.add_argument("--no-redis-nowait", dest="redis_nowait", action="store_false",
                    help="skip the redis run without WAIT")
    ap.add_argument("--threads", type=int, default=1, help="tallykv --threads per node (default 1)")
    args = ap.parse_args()
    args.fsync = [m for m in args.fsync.split(",") if m]
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install -y redis-server redis-tools")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found (cargo build --release --bin tallykv-server, or --bin)")
    args.loader = paymix_path(args.bin, args.loader)
    if not os.access(args.loader, os.X_OK):
        sys.exit(f"{args.loader} not found: cargo build --release --example paymix (or --loader)")

    C.install_cleanup()
    log_dir = C.mkdtemp("paymix-logs-")
    runner = Runner(args)
    redis_label = f"redis {C.redis_version()} 3+3"
    t0 = time.monotonic()
    try:
        for fsync in args.fsync:
            try:
                run_fsync(runner, fsync, log_dir)
            except Exception as e:  # noqa: BLE001 - report and go on with the next policy
                runner.note(f"appendfsync {fsync}: FAILED: {type(e).__name__}: {e}")
    finally:
        C.cleanup()
    print(f"\ntotal {time.monotonic() - t0:.0f}s; tallykv node: {getattr(runner, 'commands', ('?', '?'))[0]}")
    print(f"redis node: {getattr(runner, 'commands', ('?', '?'))[1]}")
    print(f"client: {args.loader} --port P --clients {args.clients} --cards {args.cards} "
          f"--merchants {args.merchants} --zipf {args.zipf} --warmup {args.warmup} --seconds {args.seconds} "
          f"[--wait]  (after one --preload --seconds 0 per cluster)")
    summarize(runner, redis_label)


if __name__ == "__main__":
    main()
