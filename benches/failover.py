#!/usr/bin/env python3
"""Failover time (issue 4): kill -9 (or pause) the leader of one slot group under write load, time until writes succeed.

Per configuration (--systems; tallykv with each --tallykv-timeouts value of `--cluster-node-timeout`,
optionally redis with --redis-timeout) it starts one cluster on loopback, the same way as
benches/cluster.py (tallykv: 3 nodes, `--appendonly yes --appendfsync everysec --threads N`; redis:
3 primaries + 3 replicas, `--appendonly yes --appendfsync everysec --save ''`), and runs --trials
trials of:

1. wait for cluster_state:ok on every node (redis: and every replica online at its primary's offset;
   tallykv: and the node restarted by the previous trial up for 2 x node timeout, the time it
   abstains from voting after a restart);
2. a writer thread hammers `INCR fo:<n>` on one key of the cluster's first slot range (tallykv: the
   first slot group; redis: the first primary's slots), one request at a time on one connection;
   it follows MOVED, and on TRYAGAIN / CLUSTERDOWN / any other error reply or a connection error it
   moves on to the next node of the cluster after 1 ms;
3. after >= 1 s of successful writes, SIGKILL the node that leads that slot range (the primary of the
   key's slot in CLUSTER SLOTS, confirmed on tallykv by its `INFO cluster` line `groupN:...role=leader`);
   with --fault stop, SIGSTOP it instead: its sockets stay open and nothing answers, as for a leader
   cut off by a partition or a stalled VM, so the writer learns of it only by its 2 s reply timeout;
4. failover time = reply time of the first acknowledged INCR sent (last attempt) after the killed
   process was reaped (or the pause), minus the kill time (monotonic clock, taken just before the
   signal; counting only requests sent after the reap excludes one the dying process could still
   answer). The writer also checks that every acknowledged
   INCR returned more than the one before it: a value that does not is an acknowledged write lost in
   the failover (reported, not expected from tallykv's majority commit; Redis replicates
   asynchronously, so it can lose some);
5. restart the killed node on its dir, or SIGCONT the paused one (it rejoins: tallykv as a follower,
   redis as a replica).

The integration tests (tests/cluster.rs, tests/partition.rs) check what happens in these faults,
never how fast: the times belong here.

Reports min / p50 / p90 / max over the trials and the count of lost acknowledged increments.

Run from the repository root after `cargo build --release`:

    python3 benches/failover.py [--trials 20] [--tallykv-timeouts 1000,500] [--systems tallykv,redis]
                                [--fault kill|stop]
"""

import argparse
import os
import shutil
import signal
import statistics
import sys
import threading
import time

import cluster as cl  # benches/cluster.py: process and cluster helpers

RETRY_S = 0.001


class Writer(threading.Thread):
    """INCR one key, one request at a time, following the cluster until stopped."""

    def __init__(self, ports, key, first_port):
        super().__init__(daemon=True)
        self.ports = list(ports)
        self.key = key
        self.port = first_port
        self.cmd = cl.encode([b"INCR", key])
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.acks = []  # (send time, reply time, value) of acknowledged INCRs
        self.errors = {}  # error kind -> count
        self.regressions = []  # (previous value, value) where an acknowledged value did not grow

    def _err(self, kind):
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def _next_port(self):
        i = self.ports.index(self.port) if self.port in self.ports else -1
        self.port = self.ports[(i + 1) % len(self.ports)]

    def run(self):
        conn = None
        last = None
        while not self.stop_flag.is_set():
            try:
                if conn is None:
                    conn = cl.Conn(self.port, timeout=2)
                t_send = time.monotonic()
                conn.send([b"INCR", self.key])
                r = conn.read()
                t_ack = time.monotonic()
            except (OSError, ConnectionError) as e:
                self._err("connection: " + type(e).__name__)
                if conn:
                    conn.close()
                conn = None
                self._next_port()
                time.sleep(RETRY_S)
                continue
            if isinstance(r, int):
                with self.lock:
                    if last is not None and r <= last:
                        self.regressions.append((last, r))
                    last = r
                    self.acks.append((t_send, t_ack, r))
                continue
            msg = str(r) if isinstance(r, cl.RespError) else ""
            kind = msg.split()[0] if msg else f"unexpected reply {r!r:.40}"
            self._err(kind)
            conn.close()
            conn = None
            if kind == "MOVED":
                host_port = msg.split()[2]
                self.port = int(host_port.rsplit(":", 1)[1])
            else:
                self._next_port()
            time.sleep(RETRY_S)
        if conn:
            conn.close()

    def count(self):
        with self.lock:
            return len(self.acks)

    def first_ack_after(self, t):
        with self.lock:
            for t_send, t_ack, _ in self.acks:
                if t_send >= t:
                    return t_ack
        return None


def leader_node(c, key_slot):
    """(node leading key_slot per CLUSTER SLOTS and, on tallykv, its own INFO cluster; "first-last"
    of its slot range), or None while the map is changing."""
    for first, last, primary, _ in c.slots():
        if first <= key_slot <= last:
            node = next(n for n in c.nodes if n.port == primary)
            rng = f"{first}-{last}"
            if isinstance(c, cl.TallyCluster) and group_role(c, primary, rng) != "leader":
                return None
            return node, rng
    return None


def group_role(c, port, rng):
    """tallykv: the role of `port` in the slot group covering `rng` (INFO cluster groupN lines)."""
    try:
        for g in c.group_lines(port).values():
            if g.get("slots") == rng:
                return g.get("role")
    except (OSError, ConnectionError, cl.RespError):
        pass
    return None


def pick_key(c):
    first, last, _, _ = sorted(c.slots())[0]
    for i in range(1_000_000):
        k = b"fo:%d" % i
        s = cl.key_slot(k)
        if first <= s <= last:
            return k, s
    raise RuntimeError("no key in the first slot range")


def settle(c, node_timeout, restarted, timeout=120):
    """cluster ok (+ replicas synced for redis) and, on tallykv, the restarted node past its abstention."""
    if isinstance(c, cl.RedisCluster):
        c.wait_ok(timeout, c.replicas_synced)
    else:
        c.wait_ok(timeout)
        if restarted is not None:
            hold = 2 * node_timeout / 1000 + 0.5
            wait = restarted.started + hold - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            c.wait_ok(timeout)


def run_config(args, label, make, node_timeout):
    print(f"{label}: starting", flush=True)
    c = make()
    times, elected, lost, notes = [], [], 0, []
    tallykv = isinstance(c, cl.TallyCluster)
    restarted = None
    try:
        key, slot = pick_key(c)
        for trial in range(args.trials):
            settle(c, node_timeout, restarted)
            found = None
            deadline = time.monotonic() + 30
            while found is None and time.monotonic() < deadline:
                found = leader_node(c, slot)
                if found is None:
                    time.sleep(cl.POLL_S)
            if found is None:
                raise RuntimeError(f"no leader for slot {slot}")
            leader, rng = found
            survivors = [n.port for n in c.nodes if n is not leader]
            w = Writer([n.port for n in c.nodes], key, leader.port)
            w.start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0 or w.count() < 50:
                if time.monotonic() - t0 > 30:
                    w.stop_flag.set()
                    raise RuntimeError(f"writer got {w.count()} acks in 30 s before the kill; errors {w.errors}")
                time.sleep(0.05)
            before = w.count()
            if args.fault == "stop":
                t_kill = time.monotonic()
                os.killpg(leader.proc.pid, signal.SIGSTOP)
                t_dead = t_kill  # nothing sent from now on can be answered by it
            else:
                t_kill, t_dead = leader.kill()
            t_ack = t_elected = None
            deadline = t_kill + args.max_failover
            while t_ack is None and time.monotonic() < deadline:
                if t_elected is None and tallykv:
                    # When a survivor first calls itself leader of the group (polled ~every 20 ms).
                    if any(group_role(c, p, rng) == "leader" for p in survivors):
                        t_elected = time.monotonic()
                time.sleep(0.02 if tallykv else 0.005)
                t_ack = w.first_ack_after(t_dead)
            time.sleep(0.2)  # a few more writes, to check that the values keep growing
            w.stop_flag.set()
            w.join(timeout=10)
            lost += len(w.regressions)
            if w.regressions:
                notes.append(f"trial {trial}: acknowledged values went back {w.regressions[:3]}")
            errs = ", ".join(f"{k} {v}" for k, v in sorted(w.errors.items()))
            verb = "paused" if args.fault == "stop" else "killed"
            if t_ack is None:
                notes.append(f"trial {trial}: no acknowledged write within {args.max_failover}s ({errs})")
                print(f"  trial {trial + 1:2}: {verb} {leader.port}, NO write in {args.max_failover}s; {errs}",
                      flush=True)
            else:
                times.append(t_ack - t_kill)
                seen = ""
                if t_elected is not None:
                    elected.append(t_elected - t_kill)
                    seen = f" (new leader in INFO by {1000 * (t_elected - t_kill):.0f} ms)"
                print(f"  trial {trial + 1:2}: {verb} {leader.port} after {before} acks: "
                      f"{1000 * (t_ack - t_kill):7.1f} ms{seen}; errors: {errs or 'none'}", flush=True)
            if args.fault == "stop":
                os.killpg(leader.proc.pid, signal.SIGCONT)
                leader.started = time.monotonic()  # it holds its elections a while, as after a restart
            else:
                leader.start()
            restarted = leader
    except Exception as e:  # noqa: BLE001 - report what was measured so far
        notes.append(f"stopped: {type(e).__name__}: {e}")
        print(f"{label}: stopped: {type(e).__name__}: {e}", flush=True)
    finally:
        c.stop()
    return {"label": label, "times": times, "elected": elected, "lost": lost, "notes": notes, "trials": args.trials,
            "command": c.command}


def pct(xs, p):
    xs = sorted(xs)
    # nearest-rank percentile
    return xs[max(0, min(len(xs) - 1, int(-(-p * len(xs) // 100)) - 1))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=cl.BIN, help="tallykv-server binary (default target/release/tallykv-server)")
    ap.add_argument("--systems", default="tallykv", help="tallykv and/or redis (comma list; default tallykv)")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--tallykv-timeouts", type=cl.int_list, default=[1000],
                    help="tallykv --cluster-node-timeout values in ms (default 1000)")
    ap.add_argument("--redis-timeout", type=int, default=1000, help="redis cluster-node-timeout ms (default 1000)")
    ap.add_argument("--threads", type=int, default=1, help="tallykv --threads per node (default 1)")
    ap.add_argument("--fsync", default="everysec", help="appendfsync of both (default everysec)")
    ap.add_argument("--max-failover", type=float, default=60, help="seconds to wait for a write after the kill")
    ap.add_argument("--fault", choices=["kill", "stop"], default="kill",
                    help="kill: SIGKILL the leader and restart it; stop: SIGSTOP it and SIGCONT it after (default kill)")
    args = ap.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    if "tallykv" in systems and not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found (cargo build --release, or --bin)")
    if "redis" in systems and not shutil.which("redis-server"):
        sys.exit("redis-server not found: apt-get install -y redis-server")

    cl.install_cleanup()
    log_dir = cl.mkdtemp("failover-logs-")
    configs = []
    if "tallykv" in systems:
        for t in args.tallykv_timeouts:
            configs.append((f"tallykv 3 nodes, cluster-node-timeout {t}, {args.fault}", t,
                            lambda t=t: cl.TallyCluster(args.bin, args.fsync, args.threads, log_dir, node_timeout=t)))
    if "redis" in systems:
        t = args.redis_timeout
        configs.append((f"redis {cl.redis_version()} 3+3, cluster-node-timeout {t}, {args.fault}", t,
                        lambda: cl.RedisCluster(args.fsync, log_dir, node_timeout=t)))
    t_start = time.monotonic()
    results = []
    try:
        for label, t, make in configs:
            results.append(run_config(args, label, make, t))
    finally:
        cl.cleanup()
    print(f"\ntotal {time.monotonic() - t_start:.0f}s")
    for r in results:
        print(f"{r['label']}: {r['command']}")
    print()
    print("| cluster | trials with a write | min ms | p50 ms | p90 ms | max ms | mean ms | lost acknowledged INCRs |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ts = [1000 * x for x in r["times"]]
        if ts:
            print(f"| {r['label']} | {len(ts)}/{r['trials']} | {min(ts):.0f} | {pct(ts, 50):.0f} | {pct(ts, 90):.0f} "
                  f"| {max(ts):.0f} | {statistics.mean(ts):.0f} | {r['lost']} |")
        else:
            print(f"| {r['label']} | 0/{r['trials']} | n/a | n/a | n/a | n/a | n/a | {r['lost']} |")
    for r in results:
        if r["elected"]:
            es = [1000 * x for x in r["elected"]]
            print(f"- {r['label']}: a survivor reported role=leader in INFO cluster after (ms) min {min(es):.0f}, "
                  f"p50 {pct(es, 50):.0f}, p90 {pct(es, 90):.0f}, max {max(es):.0f} (polled every ~20 ms, "
                  f"{len(es)} trials; an upper bound on the election, before the first write)")
    for r in results:
        for n in r["notes"]:
            print(f"- {r['label']}: {n}")


if __name__ == "__main__":
    main()
