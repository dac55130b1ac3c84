#!/usr/bin/env python3
"""CPU per acknowledged write of a 3-node cluster (tallykv, or redis-server 3+3 for scale).

On a shared 2-vCPU machine, throughput moves with whatever else runs; the CPU time the servers
themselves spend per write moves much less, so this is the figure to compare builds and
settings with, one change at a time (BENCHMARKS.md, "session 6"). For each -P it runs

    redis-benchmark --cluster -c 50 -n N -r 100000 -P <p> -t <test> --csv

against the cluster and prints rps, p50/p99, the servers' user+system CPU time over the run
(from /proc/<pid>/stat) divided by the writes, and for tallykv how many log entries the
groups' leaders appended (INFO cluster's last_log), i.e. how many writes went per entry; and the context switches of all
the nodes' threads (/proc/<pid>/task/*/status) and their futex calls (`perf stat`, when perf is
installed) per write.

    python3 benches/cluster_cpu.py --bin target/release/tallykv-server [--n 80000] [--pipelines 1,16]
    python3 benches/cluster_cpu.py --redis
    python3 benches/cluster_cpu.py --bin ... --pin 0,1,0       # node i pinned to vCPU pin[i]
    python3 benches/cluster_cpu.py --bin ... --extra "--cluster-slot-groups 3"

--pin runs each node's whole process (all its threads) on one vCPU (taskset), so its thread
hand-offs are same-CPU switches instead of cross-vCPU wake-ups: an experiment, not a setting.
"""

import argparse
import os
import subprocess

import cluster as C


def cpu_seconds(nodes):
    """User + system CPU seconds of the nodes' processes so far."""
    total = 0
    for node in nodes:
        with open(f"/proc/{node.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def context_switches(nodes):
    """Voluntary and involuntary context switches of every thread of the nodes so far."""
    vol = invol = 0
    for node in nodes:
        task_dir = f"/proc/{node.proc.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            vol += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            invol += int(line.split()[1])
            except FileNotFoundError:
                pass  # a thread that ended meanwhile
    return vol, invol


def futex_counter(nodes):
    """`perf stat` counting futex calls of the nodes' processes (None when perf cannot)."""
    pids = ",".join(str(node.proc.pid) for node in nodes)
    try:
        proc = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "syscalls:sys_enter_futex", "-p", pids],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        return None
    return proc


def futex_count(proc):
    if proc is None:
        return None
    proc.send_signal(2)
    _, err = proc.communicate()
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and "sys_enter_futex" in fields[2]:
            try:
                return int(fields[0])
            except ValueError:
                return None
    return None


def leader_entries(cluster):
    """Sum of last_log over the groups each node leads (tallykv only)."""
    total = 0
    for node in cluster.nodes:
        for fields in cluster.group_lines(node.port).values():
            if fields.get("role") == "leader":
                total += int(fields.get("last_log", 0))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=C.BIN, help="tallykv-server binary")
    ap.add_argument("--redis", action="store_true", help="measure a redis-server 3+3 cluster instead")
    ap.add_argument("--n", type=int, default=80000, help="requests at -P 1 (N/4 x P at higher -P)")
    ap.add_argument("--pipelines", default="1,16", help="-P values (default 1,16)")
    ap.add_argument("--test", default="incr", help="redis-benchmark test (default incr)")
    ap.add_argument("--fsync", default="everysec", help="appendfsync (default everysec)")
    ap.add_argument("--pin", default="", help="comma list of vCPUs: node i runs on pin[i %% len]")
    ap.add_argument("--extra", default="", help="extra tallykv-server arguments")
    ap.add_argument("--threads", type=int, default=1, help="tallykv --threads per node (default 1)")
    args = ap.parse_args()

    C.install_cleanup()
    log_dir = C.mkdtemp("cluster-cpu-logs-")
    try:
        if args.redis:
            cluster = C.RedisCluster(args.fsync, log_dir)
        else:
            if args.extra:
                plain = C.Node.__init__

                def with_extra(self, name, port, data_dir, argv, log_dir, _plain=plain):
                    _plain(self, name, port, data_dir, argv + args.extra.split(), log_dir)

                C.Node.__init__ = with_extra
            cluster = C.TallyCluster(args.bin, args.fsync, args.threads, log_dir)
        if args.pin:
            cpus = args.pin.split(",")
            for i, node in enumerate(cluster.nodes):
                subprocess.run(["taskset", "-a", "-p", "-c", cpus[i % len(cpus)], str(node.proc.pid)],
                               stdout=subprocess.DEVNULL, check=True)
        port = cluster.nodes[0].port
        for p in [int(x) for x in args.pipelines.split(",")]:
            n = args.n if p == 1 else args.n * p // 4
            entries0 = None if args.redis else leader_entries(cluster)
            cpu0 = cpu_seconds(cluster.nodes)
            vol0, invol0 = context_switches(cluster.nodes)
            perf = futex_counter(cluster.nodes)
            rps, p50, p99, _, notes = C.redis_benchmark(port, args.test, p, 50, n, 300)
            cpu = cpu_seconds(cluster.nodes) - cpu0
            vol1, invol1 = context_switches(cluster.nodes)
            futexes = futex_count(perf)
            line = (f"-P {p:2d} {args.test.upper()}: rps {rps:9.0f}  p50 {p50:7.3f} ms  p99 {p99:8.3f} ms  "
                    f"CPU {cpu / n * 1e6:6.1f} us/write")
            if entries0 is not None:
                entries = leader_entries(cluster) - entries0
                line += f"  {n / max(entries, 1):5.1f} writes/entry"
            line += f"  ctx sw/write {(vol1 - vol0) / n:.3f} vol + {(invol1 - invol0) / n:.3f} invol"
            if futexes is not None:
                line += f"  futex calls/write {futexes / n:.3f}"
            print(line + (f"  notes: {notes}" if notes else ""), flush=True)
    finally:
        C.cleanup()


if __name__ == "__main__":
    main()
