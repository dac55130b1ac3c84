#!/usr/bin/env python3
"""Mutual TLS on the cluster bus (issue 11): the payment mix on a 3-node tallykv cluster, plain bus vs `tls-cluster yes`.

Starts two 3-node tallykv clusters side by side, exactly as benches/cluster.py's TallyCluster does
(`--cluster-enabled yes --appendonly yes --appendfsync <--fsync> --threads <--threads>`, a shared
cluster-secret in a 0600 config file), the second with mutual TLS on every bus connection:

plain   the bus in clear (the cluster-secret challenge and proofs only);
tls     `--tls-cluster yes --tls-cert-file node.crt --tls-key-file node.key --tls-ca-cert-file ca.crt`:
        one P-256 node certificate (extendedKeyUsage serverAuth and clientAuth), signed by a
        throwaway CA made with the openssl CLI, shown by every node as server and as client.

Before measuring, each node's bus port (client port + 10000) is probed with a raw socket: its
first frame ([u32 len]["TKVBUS"][u16 version][u8 status]) must carry status 3 (tls-required) on
the tls cluster and 2 (challenge, in clear) on the plain one. Each cluster is preloaded with the
paymix client (examples/paymix.rs: `--preload --seconds 0`, --cards/--merchants, not timed), then
paymix runs --repeats times against each, in ABBA order (plain, tls, tls, plain, ...), so that the
machine's drift hits both alike, with --pause idle seconds before each run. See benches/paymix.py for what one authorization is (12 commands
on three slots, one pipeline per owning primary, 50 closed-loop clients on one client thread).

Besides paymix's own figures (authorizations/s that got no error reply, latency per authorization),
each run records the three servers' CPU time (utime + stime from /proc) and the bytes sent on bus
connections (`ss -ti` bytes_sent of the sockets to or from a bus port, both ends, TLS records
included), each divided by the authorizations counted. Both deltas span the whole paymix process
(setup, --warmup, the measured --seconds, idle heartbeats), so they are slight overestimates, alike
for both clusters.

Prints a markdown table: median [min-max] over repeats, and the ratio tls/plain per repeat pair
(the two runs adjacent in time). This machine is a shared 2-vCPU VM: the client runs on the same
cores as the 6 servers. Read the ratios, not the absolute numbers.

Run from the repository root after `cargo build --release --bin tallykv-server --example paymix`:

    python3 benches/bus_tls.py [--bin target/release/tallykv-server] [--loader target/release/examples/paymix]
                               [--repeats 5] [--seconds 6] [--cards 200000] [--merchants 20000]
"""

import argparse
import shutil
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time

import cluster as C  # benches/cluster.py: processes, clusters, cleanup, table helpers
import paymix as P  # benches/paymix.py: the paymix client wrapper

LABELS = ("plain", "tls")
TLS_REQUIRED, CHALLENGE = 3, 2


def make_node_certs(d):
    """A CA and one node certificate (P-256) with extendedKeyUsage serverAuth and clientAuth, in d."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench-bus-ca")
    with open(os.path.join(d, "node.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=bench-bus-node")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "node.crt", "-days", "2", "-extfile", "node.ext")
    return {name: os.path.join(d, name) for name in ("ca.crt", "node.crt", "node.key")}


def bus_status(port, timeout=5.0):
    """The status byte of the first frame the bus at port+10000 sends to a new connection."""
    with socket.create_connection(("127.0.0.1", port + 10000), timeout=timeout) as s:
        f = s.makefile("rb")
        head = f.read(4 + 6 + 2 + 1)
        if len(head) != 13:
            raise RuntimeError(f"bus {port + 10000}: closed after {len(head)} bytes")
        _length, magic, _version, status = struct.unpack(">I6sHB", head)
        if magic != b"TKVBUS":
            raise RuntimeError(f"bus {port + 10000}: magic {magic!r}")
        return status


def cpu_seconds(cluster):
    """utime + stime of the cluster's server processes, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for n in cluster.nodes:
        with open(f"/proc/{n.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    return total / tick


def bus_bytes(cluster):
    """Bytes sent so far on the open TCP connections to or from the cluster's bus ports (both ends)."""
    buses = {n.port + 10000 for n in cluster.nodes}
    out = subprocess.run(["ss", "-tinH", "state", "established"], capture_output=True, text=True,
                         check=True).stdout
    total, count, ports = 0, 0, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):  # a socket line: Recv-Q Send-Q Local Peer
            cols = line.split()
            ports = {int(a.rsplit(":", 1)[1]) for a in cols[2:4] if ":" in a}
            continue
        if ports and ports & buses:
            m = re.search(r"\bbytes_sent:(\d+)", line)
            if m:
                total += int(m.group(1))
                count += 1
            ports = None
    return total, count


def busy():
    """What else the shared machine is doing: 1-minute load and the compilers running."""
    r = subprocess.run(["pgrep", "-c", "-x", "rustc"], capture_output=True, text=True)
    rustc = int(r.stdout.strip() or 0)
    return os.getloadavg()[0], rustc


class Bench:
    def __init__(self, args, labels=LABELS):
        self.args = args
        self.rows = {label: [] for label in labels}  # label -> [dict or None] per repeat
        self.preload = {}
        self.notes = []
        self.load = []  # (load1, rustc processes) before each run

    def note(self, msg):
        print("  NOTE " + msg, flush=True)
        self.notes.append(msg)

    def preload_cluster(self, cluster, label):
        t0 = time.monotonic()
        res = P.paymix(self.args, cluster.live_ports()[0], ["--preload", "--seconds", "0"], timeout=1800)
        if res["preload_retries"] or res["preload_restarts"]:
            self.note(f"{label} preload: {res['preload_retries']} keys sent again after a refusal, "
                      f"{res['preload_restarts']} restarts on a new slot map; first: {res['preload_refusal']}")
        cluster.wait_ok(120)
        self.preload[label] = time.monotonic() - t0
        print(f"  preloaded {label} in {self.preload[label]:.1f}s", flush=True)

    def run(self, cluster, label, repeat):
        a = self.args
        self.load.append(busy())
        try:
            cpu0, (bytes0, _) = cpu_seconds(cluster), bus_bytes(cluster)
            res = P.paymix(a, cluster.live_ports()[0], ["--warmup", str(a.warmup), "--seconds", str(a.seconds)],
                           timeout=a.warmup + a.seconds + 90)
            cpu1, (bytes1, conns) = cpu_seconds(cluster), bus_bytes(cluster)
            if res["errors"] or res["failed_auths"]:
                self.note(f"{label} repeat {repeat}: {res['failed_auths']} failed authorizations (not counted), "
                          f"{res['errors']} errors, e.g. {res['error_samples']}")
            if res["conn_errors"]:
                self.note(f"{label} repeat {repeat}: {res['conn_errors']} connection errors {res['error_samples']}")
            if res["misses"]:
                self.note(f"{label} repeat {repeat}: {res['misses']} GET/HMGET found no preloaded value")
            if res["p50_ms"] is None or not res["auths"]:
                raise RuntimeError("no authorization completed")
            row = dict(auths=res["auths_per_s"], cmds=res["commands_per_s"], p50=res["p50_ms"], p99=res["p99_ms"],
                       p999=res["p999_ms"], cpu_us=(cpu1 - cpu0) * 1e6 / res["auths"],
                       bus_b=(bytes1 - bytes0) / res["auths"], conns=conns, failed=res["failed_auths"])
            print(f"  {label:5} auth/s {row['auths']:7.0f} cmd/s {row['cmds']:8.0f} p50 {row['p50']:7.3f} "
                  f"p99 {row['p99']:8.3f} p99.9 {row['p999']:8.3f} server CPU {row['cpu_us']:6.0f} us/auth "
                  f"bus {row['bus_b']:6.0f} B/auth ({conns} bus sockets) load {self.load[-1][0]:.1f} "
                  f"rustc {self.load[-1][1]}", flush=True)
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the others
            self.note(f"{label} repeat {repeat} FAILED: {type(e).__name__}: {e}")
            row = None
        self.rows[label].append(row)


def check_bus(clusters):
    """Each node's bus greets in TLS (status 3) on the tls cluster, in clear (2) on the plain one."""
    for label, cl in clusters.items():
        want = TLS_REQUIRED if label == "tls" else CHALLENGE
        got = [bus_status(n.port) for n in cl.nodes]
        if got != [want] * len(got):
            raise RuntimeError(f"{label} cluster: bus first-frame status {got}, expected {want} on every node")
        print(f"  {label}: bus first frame status {got} "
              f"({'tls-required' if want == TLS_REQUIRED else 'challenge in clear'})", flush=True)


def log_lines_after(node, offset):
    try:
        with open(node.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


def summarize(bench, commands, labels=LABELS, shown=None, kind="bus"):
    """The markdown table of `bench`'s runs: `labels` the (baseline, other) settings, `shown`
    their names in the table, `kind` the first column's header."""
    a = bench.args
    base, other = labels
    shown = shown or {"plain": "plain (tls-cluster no)", "tls": "mutual TLS (tls-cluster yes)"}
    name = f"{other}/{base}"

    def stat(label, key, f="{:.0f}"):
        xs = [r[key] for r in bench.rows[label] if r]
        return C.fmt_range(xs, f) if xs else "n/a"

    def ratios(key):
        return [t[key] / p[key] for p, t in zip(bench.rows[base], bench.rows[other]) if p and t and p[key]]

    lines = [f"paymix on 3 tallykv nodes, appendfsync {a.fsync}, --threads {a.threads}, {a.clients} clients, "
             f"{a.repeats} repeats of {a.seconds:g}s in ABBA order, {a.pause:g}s apart (median [min-max]; ratios per repeat pair):", "",
             f"| {kind} | auth/s | commands/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/auth | bus bytes/auth |",
             "|---|---|---|---|---|---|---|---|"]
    for label in labels:
        lines.append(f"| {shown[label]} | {stat(label, 'auths')} | {stat(label, 'cmds')} "
                     f"| {stat(label, 'p50', '{:.2f}')} | {stat(label, 'p99', '{:.2f}')} "
                     f"| {stat(label, 'p999', '{:.2f}')} | {stat(label, 'cpu_us')} | {stat(label, 'bus_b')} |")
    lines.append(f"| **{name}** | {C.ratio_range(ratios('auths'))} | {C.ratio_range(ratios('cmds'))} "
                 f"| {C.ratio_range(ratios('p50'))} | {C.ratio_range(ratios('p99'))} "
                 f"| {C.ratio_range(ratios('p999'))} | {C.ratio_range(ratios('cpu_us'))} "
                 f"| {C.ratio_range(ratios('bus_b'))} |")
    lines.append("")
    per = ", ".join(f"{r:.3f}" for r in ratios("auths"))
    lines.append(f"- {name} auth/s per repeat pair: {per}")
    pre = ", ".join(f"{k} {v:.0f}s" for k, v in bench.preload.items())
    if pre:
        lines.append(f"- preload ({a.cards} cards, {a.merchants} merchant profiles; not timed): {pre}")
    if bench.load:
        loads = [x[0] for x in bench.load]
        rustc = [x[1] for x in bench.load]
        lines.append(f"- machine: 1-min load before each run {min(loads):.1f}-{max(loads):.1f}; "
                     f"rustc processes running at the start of {sum(1 for r in rustc if r)} of {len(rustc)} runs "
                     f"(max {max(rustc)})")
    lines.append(f"- tallykv node: {commands}")
    lines.append(f"- client: {a.loader} --port P --clients {a.clients} --cards {a.cards} --merchants {a.merchants} "
                 f"--zipf {a.zipf} --warmup {a.warmup:g} --seconds {a.seconds:g}  "
                 f"(after one --preload --seconds 0 per cluster)")
    if bench.notes:
        lines.append("")
        lines.append("Notes (errors, misses, failed runs, server log lines):")
        lines.extend(f"- {n}" for n in bench.notes)
    print("\n" + "\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=C.BIN, help="tallykv-server binary (default target/release/tallykv-server)")
    ap.add_argument("--loader", default=None, help="paymix binary (default: examples/paymix next to --bin)")
    ap.add_argument("--fsync", default="everysec", help="appendfsync policy of both clusters (default everysec)")
    ap.add_argument("--threads", type=int, default=1, help="tallykv --threads per node (default 1)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each cluster (default 5)")
    ap.add_argument("--seconds", type=float, default=6, help="measured seconds of each run (default 6)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds not measured at the start of a run")
    ap.add_argument("--pause", type=float, default=3, help="idle seconds before each run (default 3)")
    ap.add_argument("--clients", type=int, default=50, help="authorizations in flight (default 50)")
    ap.add_argument("--cards", type=int, default=200_000, help="cards (default 200000)")
    ap.add_argument("--merchants", type=int, default=20_000, help="merchants (default 20000)")
    ap.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of cards and merchants (default 1.0)")
    args = ap.parse_args()
    for tool in ("openssl", "ss"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found (cargo build --release --bin tallykv-server, or --bin)")
    args.loader = P.paymix_path(args.bin, args.loader)
    if not os.access(args.loader, os.X_OK):
        sys.exit(f"{args.loader} not found: cargo build --release --example paymix (or --loader)")

    C.install_cleanup()
    log_dir = C.mkdtemp("bus-tls-logs-")
    cert_dir = C.mkdtemp("bus-tls-certs-")
    certs = make_node_certs(cert_dir)
    tls_args = ["--tls-cluster", "yes", "--tls-cert-file", certs["node.crt"], "--tls-key-file", certs["node.key"],
                "--tls-ca-cert-file", certs["ca.crt"]]
    bench = Bench(args)
    commands = "?"
    t0 = time.monotonic()
    clusters = {}
    try:
        print(f"starting clusters (appendfsync {args.fsync}, --threads {args.threads})", flush=True)
        clusters["plain"] = C.TallyCluster(args.bin, args.fsync, args.threads, log_dir)
        clusters["tls"] = C.TallyCluster(args.bin, args.fsync, args.threads, log_dir, extra=tls_args)
        commands = clusters["tls"].command.replace(cert_dir, "CERTS") + "  (plain: without the --tls-* arguments)"
        check_bus(clusters)
        # Server log lines from here on (the probes above may have logged their refusal) are reported.
        offsets = {id(n): os.path.getsize(n.log_path) for cl in clusters.values() for n in cl.nodes}
        for label, cl in clusters.items():
            bench.preload_cluster(cl, label)
        for rep in range(args.repeats):
            order = LABELS if rep % 2 == 0 else LABELS[::-1]
            print(f"repeat {rep + 1}/{args.repeats}: {' then '.join(order)}", flush=True)
            for label in order:
                time.sleep(args.pause)  # let the previous run's cluster settle (AOF fsync, Raft cleanup)
                bench.run(clusters[label], label, rep)
            for cl in clusters.values():
                for n in cl.nodes:
                    n.check()
        check_bus(clusters)
        for label, cl in clusters.items():
            if not all(cl.cluster_ok(p) for p in cl.live_ports()):
                bench.note(f"{label}: cluster_state not ok on every node after the runs")
            for n in cl.nodes:
                lines = log_lines_after(n, offsets[id(n)])
                if lines:
                    bench.note(f"{label} node {n.port}: {len(lines)} log lines during the runs, e.g. "
                               f"{' | '.join(lines[:3])[:400]}")
    except Exception as e:  # noqa: BLE001 - report what was measured so far
        bench.note(f"FAILED: {type(e).__name__}: {e}")
    finally:
        for cl in clusters.values():
            cl.stop()
        C.cleanup()
    print(f"\ntotal {time.monotonic() - t0:.0f}s")
    summarize(bench, commands)


if __name__ == "__main__":
    main()
