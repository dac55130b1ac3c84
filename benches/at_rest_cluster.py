#!/usr/bin/env python3
"""Encryption at rest on a cluster (issue 12): the payment mix on two 3-node tallykv clusters side
by side, one without and one with `--encryption-at-rest-key-file` (every node's values, Raft log
entries and snapshot files sealed), both `appendonly yes` with `--fsync` (default everysec).

Everything else is benches/bus_tls.py's method (its Bench class runs paymix, records the servers'
CPU and bus bytes per authorization; ABBA order over --repeats, --pause idle seconds between
runs): see that file for what is measured. Before measuring, INFO persistence must say
at_rest_encryption:1 on every node of the encrypted cluster and 0 on the other.

Run from the repository root after `cargo build --release --bin tallykv-server --example paymix`
and `cargo build --release -p tallykv-card`:

    python3 benches/at_rest_cluster.py [--bin target/release/tallykv-server] [--card target/release/tallykv-card]
                                       [--repeats 5] [--seconds 6] [--cards 200000] [--merchants 20000]
"""

import argparse
import os
import subprocess
import sys
import time

import bus_tls as B  # the Bench and table of the bus TLS comparison, with other labels
import cluster as C
import paymix as P

LABELS = ("off", "on")


def check_at_rest(clusters):
    for label, cl in clusters.items():
        want = "1" if label == "on" else "0"
        for n in cl.nodes:
            got = C.info_fields(C.call(n.port, "INFO", "persistence", timeout=5)).get("at_rest_encryption")
            if got != want:
                raise RuntimeError(f"{label} cluster node {n.port}: at_rest_encryption:{got}, expected {want}")
        print(f"  {label}: at_rest_encryption:{want} on every node", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=C.BIN)
    ap.add_argument("--card", default=os.path.join(os.path.dirname(C.BIN), "tallykv-card"))
    ap.add_argument("--loader", default=None)
    ap.add_argument("--fsync", default="everysec")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--pause", type=float, default=3)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--cards", type=int, default=200_000)
    ap.add_argument("--merchants", type=int, default=20_000)
    ap.add_argument("--zipf", type=float, default=1.0)
    args = ap.parse_args()
    args.loader = P.paymix_path(args.bin, args.loader)
    C.install_cleanup()
    log_dir = C.mkdtemp("at-rest-logs-")
    key_dir = C.mkdtemp("at-rest-keys-")
    key_file = os.path.join(key_dir, "node.keys")
    subprocess.run([args.card, "keygen", "--out", key_file], check=True, capture_output=True)
    bench = B.Bench(args, LABELS)
    commands = "?"
    t0 = time.monotonic()
    clusters = {}
    try:
        clusters["off"] = C.TallyCluster(args.bin, args.fsync, args.threads, log_dir)
        clusters["on"] = C.TallyCluster(args.bin, args.fsync, args.threads, log_dir,
                                        extra=["--encryption-at-rest-key-file", key_file])
        commands = clusters["on"].command.replace(key_dir, "KEYS") + "  (off: without it)"
        check_at_rest(clusters)
        for label, cl in clusters.items():
            bench.preload_cluster(cl, label)
        for rep in range(args.repeats):
            order = LABELS if rep % 2 == 0 else LABELS[::-1]
            print(f"repeat {rep + 1}/{args.repeats}: {' then '.join(order)}", flush=True)
            for label in order:
                time.sleep(args.pause)
                bench.run(clusters[label], label, rep)
        check_at_rest(clusters)
    except Exception as e:  # noqa: BLE001 - report what was measured so far
        bench.note(f"FAILED: {type(e).__name__}: {e}")
    finally:
        for cl in clusters.values():
            cl.stop()
        C.cleanup()
    print(f"\ntotal {time.monotonic() - t0:.0f}s")
    B.summarize(bench, commands, LABELS, {"off": "at rest off", "on": "encryption at rest"}, "cluster")


if __name__ == "__main__":
    sys.exit(main())
