#!/usr/bin/env python3
"""Cluster write benchmark (issue 4): a 3-node tallykv cluster vs a redis-server 3+3 cluster, same machine.

For each appendfsync policy (--fsync, default everysec,always) it starts, side by side:

tallykv   3 nodes on loopback (`--cluster-enabled yes --cluster-peers ... --appendonly yes
          --appendfsync <mode> --threads N`); a write is acknowledged after its slot group's Raft
          commit on a majority (2 of 3 voters), so an acknowledged write is on two nodes.
redis     Debian's redis-server, 3 primaries + 3 replicas (`--cluster-enabled yes --appendonly yes
          --appendfsync <mode> --save ''`, built with `redis-cli --cluster create --cluster-replicas 1`);
          waits for cluster_state:ok on all six and every replica online with its primary's offset.

and measures, repeating each measurement --repeats times with the runs of both clusters interleaved
(the order flips every repeat) so that the machine's drift hits both alike:

rb   `redis-benchmark --cluster -c 50 -n N -r 100000 -P <p> -t <incr|set> --csv` against each cluster,
     N sized from the previous run (or a short calibration run) so that each run lasts --seconds.
py   INCR through waitload (examples/waitload.rs, below), against tallykv (plain INCR) and against
     redis twice: with `WAIT 1 0` ("redis+WAIT") and without (the client's own ceiling on redis).
     `--workload slidewin` sends a sliding-window-log check in MULTI instead of each INCR, and
     `--workload evalsha` the `limits` library's moving-window script (see waitload.rs).

The waitload client (`cargo build --release --example waitload`; found next to --bin as
`<dir of --bin>/examples/waitload`, or given with --loader): one thread with one event loop, like
redis-benchmark, so the two clients cost the servers' shared cores alike. --clients connections
(default 50), each bound to one primary (round robin) and writing only keys that primary owns (keys
`wk:<i>`, i < 100000, routed by CRC16 with the cluster's CLUSTER SLOTS), so no request is redirected.
Each connection loops: send one batch, read all its replies, repeat. A batch is <p> pipelined
`INCR wk:<i>` (random i), and for redis+WAIT one `WAIT 1 0` after them. `WAIT 1 0` returns once at
least one replica has acknowledged the replication offset of the connection's last write (no
timeout), so a redis+WAIT batch completes when all its INCRs are applied on the primary and received
and applied by >= 1 replica (in memory: Redis 7.0's WAIT does not wait for the replica's AOF fsync;
with appendfsync always the primary has fsynced before replying). At -P 1 that is exactly "WAIT after
each write"; at -P 16 one WAIT covers the 16 INCRs before it. Latency is per batch (send of the batch
to its last reply); rps counts the INCRs of batches that started after a --warmup and completed
before the end of the run.

Prints markdown tables with the median over repeats, the spread (min-max) and the ratios
tallykv/redis, computed per repeat (runs adjacent in time) and summarised as median [min-max].
This machine is a shared 2-vCPU VM: the client runs on the same cores as 6 (redis) or 3 (tallykv)
servers. Read the ratios, not the absolute numbers.

Run from the repository root after `cargo build --release`:

    python3 benches/cluster.py [--bin target/release/tallykv-server] [--repeats 3] [--seconds 6]
"""

import argparse
import atexit
import csv
import ctypes
import io
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN = "target/release/tallykv-server"
POLL_S = 0.05
KEYS = 100_000  # same key range as redis-benchmark -r 100000

# Everything we start or create, so that any exit path (exception, Ctrl-C, SIGTERM) cleans up.
_procs = []
_dirs = []


def cleanup():
    for p in list(_procs):
        kill_proc(p)
    for d in list(_dirs):
        shutil.rmtree(d, ignore_errors=True)
    _dirs.clear()


def kill_proc(proc):
    """SIGKILLs a server we started (its own process group, so Redis's fork children too), then reaps it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    if proc in _procs:
        _procs.remove(proc)


def _on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)


def install_cleanup():
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(cleanup)


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup():
    # If this script is SIGKILLed, the kernel kills the servers too.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def mkdtemp(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.append(d)
    return d


def rmdir(d):
    shutil.rmtree(d, ignore_errors=True)
    if d in _dirs:
        _dirs.remove(d)


def _bindable(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


_taken = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def cluster_port():
    """A free port P whose bus port P+10000 is free too (both tallykv and Redis use P+10000).

    Both stay below the kernel's ephemeral range: a client that keeps reconnecting to a killed
    node could otherwise be handed that node's port as its own source port and connect to
    itself (TCP simultaneous open), which then holds the port and the node cannot restart."""
    rng = random.Random()
    high = min(_ephemeral_low(), 65536) - 10000
    if high <= 11000:
        raise RuntimeError("the ephemeral port range leaves no room for P and P+10000 below it")
    for _ in range(1000):
        p = rng.randrange(max(1024, high - 12000), high)
        if p not in _taken and p + 10000 not in _taken and _bindable(p) and _bindable(p + 10000):
            _taken.update((p, p + 10000))
            return p
    raise RuntimeError("no free port pair P, P+10000")


# ---------------------------------------------------------------------------- RESP

class RespError(Exception):
    pass


class Conn:
    """A minimal blocking RESP2 client on a raw socket."""

    def __init__(self, port, timeout=5.0):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass

    def send(self, *cmds):
        self.sock.sendall(b"".join(encode(c) for c in cmds))

    def read(self):
        """One reply; an error reply is returned as a RespError, not raised."""
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed")
        t, body = line[:1], line[1:-2]
        if t == b"+":
            return body.decode()
        if t == b"-":
            return RespError(body.decode())
        if t == b":":
            return int(body)
        if t in (b"$", b"="):
            n = int(body)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed")
            return data[:-2]
        if t in (b"*", b"%"):
            n = int(body)
            if n < 0:
                return None
            return [self.read() for _ in range(n * (2 if t == b"%" else 1))]
        raise ConnectionError(f"bad reply line {line!r}")

    def call(self, *args):
        self.send(args)
        r = self.read()
        if isinstance(r, RespError):
            raise r
        return r


def encode(cmd):
    out = [b"*%d\r\n" % len(cmd)]
    for a in cmd:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def call(port, *args, timeout=5.0):
    c = Conn(port, timeout=timeout)
    try:
        return c.call(*args)
    finally:
        c.close()


def info_fields(text):
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


# ---------------------------------------------------------------------------- slots

def _crc16_table():
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key):
    """Redis Cluster's slot: CRC16-XMODEM of the key (or of its non-empty {hash tag}) mod 16384."""
    s = key.find(b"{")
    if s >= 0:
        e = key.find(b"}", s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    crc = 0
    for b in key:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ b) & 0xFF]
    return crc & 0x3FFF


def cluster_slots(port):
    """CLUSTER SLOTS as [(first, last, primary_port, [replica ports])]."""
    out = []
    for r in call(port, "CLUSTER", "SLOTS"):
        out.append((r[0], r[1], r[2][1], [n[1] for n in r[3:]]))
    return out


# ---------------------------------------------------------------------------- clusters

class Node:
    """One server process logging to a file outside its data dir."""

    def __init__(self, name, port, data_dir, argv, log_dir):
        self.name, self.port, self.dir, self.argv = name, port, data_dir, argv
        self.log_path = os.path.join(log_dir, f"{name}-{port}.log")
        self.proc = None
        self.started = 0.0

    def start(self):
        log = open(self.log_path, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=_child_setup)
        log.close()
        _procs.append(self.proc)

    def kill(self):
        """SIGKILL (kill -9), then reap. Returns the monotonic times just before the signal and
        once the process is gone (after that, nothing it held can answer)."""
        t = time.monotonic()
        if self.proc is not None:
            kill_proc(self.proc)
        return t, time.monotonic()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=5):
        try:
            with open(self.log_path, "rb") as f:
                return " | ".join(f.read().decode(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def check(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} on {self.port} exited with {self.proc.returncode}: {self.log_tail()}")


class Cluster:
    label = ""

    def __init__(self, nodes):
        self.nodes = nodes

    def live_ports(self):
        return [n.port for n in self.nodes if n.alive()]

    def stop(self):
        for n in self.nodes:
            n.kill()
        for n in self.nodes:
            rmdir(n.dir)

    def cluster_ok(self, port):
        try:
            return info_fields(call(port, "CLUSTER", "INFO", timeout=2)).get("cluster_state") == "ok"
        except (OSError, ConnectionError, RespError):
            return False

    def wait_ok(self, timeout, extra=lambda: True):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in self.nodes:
                n.check()
            if all(self.cluster_ok(p) for p in self.live_ports()):
                try:
                    if extra():
                        return
                except (OSError, ConnectionError, RespError):
                    pass  # e.g. a node still loading: ask again
            time.sleep(POLL_S)
        states = {p: self.cluster_ok(p) for p in self.live_ports()}
        raise RuntimeError(f"{self.label}: not ok after {timeout}s (ok per port: {states})")

    def slots(self):
        last = None
        for p in self.live_ports():
            try:
                return cluster_slots(p)
            except (OSError, ConnectionError, RespError) as e:
                last = e
        raise RuntimeError(f"{self.label}: CLUSTER SLOTS failed: {last}")


def secret_conf():
    """A config file holding a fresh cluster-secret, shared by one cluster's nodes (a file, not the
    command line: `ps` shows arguments)."""
    path = os.path.join(mkdtemp("cluster-secret-"), "cluster.conf")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"cluster-secret {secrets.token_hex(32)}\n")
    return path


class TallyCluster(Cluster):
    def __init__(self, bin_path, fsync, threads, log_dir, node_timeout=None, n=3, ready_timeout=60, extra=()):
        """`extra`: more server arguments, appended to every node's argv (e.g. `--tls-cluster yes ...`)."""
        ports = [cluster_port() for _ in range(n)]
        peers = ",".join(f"127.0.0.1:{p}" for p in ports)
        conf = secret_conf()
        nodes = []
        for p in ports:
            d = mkdtemp("cluster-tallykv-")
            argv = [bin_path, conf, "--port", str(p), "--bind", "127.0.0.1", "--dir", d, "--loglevel", "warning",
                    "--threads", str(threads), "--appendonly", "yes", "--appendfsync", fsync,
                    "--cluster-enabled", "yes", "--cluster-peers", peers]
            if node_timeout:
                argv += ["--cluster-node-timeout", str(node_timeout)]
            argv += list(extra)
            nodes.append(Node("tallykv", p, d, argv, log_dir))
        super().__init__(nodes)
        self.label = f"tallykv {n} nodes"
        self.command = " ".join(nodes[0].argv).replace(nodes[0].dir, "D").replace(conf, "CONF")
        for node in nodes:
            node.start()
        self.wait_ok(ready_timeout)

    def group_lines(self, port):
        """INFO cluster's `groupN:slots=a-b,role=...,leader=<name>` lines as {N: {field: value}}."""
        out = {}
        for k, v in info_fields(call(port, "INFO", "cluster", timeout=2)).items():
            if k.startswith("group") and k[5:].isdigit():
                out[int(k[5:])] = dict(kv.split("=", 1) for kv in v.split(",") if "=" in kv)
        return out


class RedisCluster(Cluster):
    def __init__(self, fsync, log_dir, node_timeout=None, primaries=3, ready_timeout=120):
        nodes = []
        for _ in range(2 * primaries):
            p = cluster_port()
            d = mkdtemp("cluster-redis-")
            argv = ["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--protected-mode", "no",
                    "--dir", d, "--save", "", "--appendonly", "yes", "--appendfsync", fsync,
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--logfile", ""]
            if node_timeout:
                argv += ["--cluster-node-timeout", str(node_timeout)]
            nodes.append(Node("redis", p, d, argv, log_dir))
        super().__init__(nodes)
        self.label = f"redis {redis_version()} {primaries}+{primaries}"
        self.command = " ".join(nodes[0].argv).replace(nodes[0].dir, "D").replace("--save  ", "--save '' ")
        for node in nodes:
            node.start()
        for node in nodes:
            wait_ping(node, 30)
        create = ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
                  "--cluster-replicas", "1", "--cluster-yes"]
        r = subprocess.run(create, capture_output=True, text=True, timeout=120)
        if r.returncode != 0 or "[OK] All 16384 slots covered" not in r.stdout:
            raise RuntimeError(f"redis-cli --cluster create failed: {r.stdout[-400:]} {r.stderr[-400:]}")
        self.wait_ok(ready_timeout, self.replicas_synced)

    def replicas_synced(self):
        """Every primary has an online replica at its own replication offset."""
        primaries = 0
        for p in self.live_ports():
            f = info_fields(call(p, "INFO", "replication", timeout=2))
            if f.get("role") != "master":
                continue
            if f.get("connected_slaves", "0") == "0":
                # A primary without replicas only counts if it owns no slots (after a failover, the
                # killed node rejoins as a replica; a slot-less primary would be our leftover).
                return False
            primaries += 1
            off = f.get("master_repl_offset")
            slave = dict(kv.split("=", 1) for kv in f.get("slave0", "").split(",") if "=" in kv)
            if slave.get("state") != "online" or slave.get("offset") != off:
                return False
        return primaries > 0


def wait_ping(node, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node.check()
        try:
            if call(node.port, "PING", timeout=1) == "PONG":
                return
        except (OSError, ConnectionError, RespError):
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"{node.name} on {node.port} did not answer PING in {timeout}s: {node.log_tail()}")


def redis_version():
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split()[2].removeprefix("v=")


# ---------------------------------------------------------------------------- redis-benchmark

def redis_benchmark(port, test, pipeline, clients, requests, timeout):
    """One `redis-benchmark --cluster` run of one test. Returns (rps, p50_ms, p99_ms, seconds, notes)."""
    cmd = ["redis-benchmark", "--cluster", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
           "-n", str(requests), "-r", str(KEYS), "-P", str(pipeline), "-t", test, "--csv"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    secs = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited {r.returncode}: {r.stdout[-300:]} {r.stderr.strip()[-300:]}")
    rows = [row for row in csv.DictReader(io.StringIO(r.stdout[r.stdout.find('"test"'):]))]
    if not rows:
        raise RuntimeError(f"redis-benchmark gave no CSV: {r.stdout[-300:]} {r.stderr[-300:]}")
    row = rows[0]
    # Anything beyond the cluster banner (e.g. "Error from server", "Cluster slots configuration
    # changed") means a run saw errors or redirections: keep it as a note.
    notes = [line for line in (r.stdout + r.stderr).splitlines()
             if line and not line.startswith(('"', "Cluster has", "Master ")) and "WARNING" not in line]
    return float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]), secs, notes


# ---------------------------------------------------------------------------- waitload client

def loader_path(bin_path, override=None):
    """The waitload binary: --loader, else next to --bin (`X/tallykv-server` -> `X/examples/waitload`),
    else target/release/examples/waitload."""
    if override:
        return override
    beside = os.path.join(os.path.dirname(bin_path) or ".", "examples", "waitload")
    return beside if os.path.exists(beside) else "target/release/examples/waitload"


def limits_script_path():
    """The `limits` library's moving-window script (pip install limits)."""
    import limits
    return os.path.join(os.path.dirname(limits.__file__), "resources", "redis", "lua_scripts",
                        "acquire_moving_window.lua")


def py_bench(loader, port, clients, pipeline, wait, warmup, duration, workload="incr"):
    """One waitload run (examples/waitload.rs) against the cluster seeded at `port`.
    Returns (rps, p50_ms, p99_ms, notes)."""
    cmd = [loader, "--port", str(port), "--clients", str(clients), "--pipeline", str(pipeline),
           "--warmup", str(warmup), "--seconds", str(duration), "--keys", str(KEYS),
           "--workload", workload]
    if workload == "evalsha":
        cmd += ["--script", limits_script_path()]
    if wait:
        cmd.append("--wait")
    # waitload gives up on a connection 30 s after the end; the margin covers its setup.
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=warmup + duration + 90)
    if r.returncode != 0:
        raise RuntimeError(f"waitload exited {r.returncode}: {r.stderr.strip()[-300:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    notes = []
    if res["errors"]:
        notes.append(f"{res['errors']} error replies, e.g. {res['error_samples']}")
    if res["conn_errors"]:
        notes.append(f"{res['conn_errors']} connection errors {res['error_samples']}")
    if res["wait_short"]:
        notes.append(f"{res['wait_short']} WAIT replies of 0 replicas")
    if res["p50_ms"] is None:
        raise RuntimeError("waitload completed no batch; " + "; ".join(notes))
    return res["rps"], res["p50_ms"], res["p99_ms"], notes


# ---------------------------------------------------------------------------- driver

def fmt_range(xs, f="{:.0f}"):
    if len(xs) == 1:
        return f.format(xs[0])
    return f"{f.format(statistics.median(xs))} [{f.format(min(xs))}-{f.format(max(xs))}]"


def ratio_range(xs):
    return fmt_range(xs, "{:.2f}") if xs else "n/a"


class Runner:
    def __init__(self, args):
        self.args = args
        self.est = {}  # (system, fsync, p, test) -> last rps, to size the next run
        self.rows = {}  # (kind, system, fsync, p, test) -> [(rps, p50, p99)] per repeat, None if failed
        self.notes = []

    def note(self, msg):
        print("  NOTE " + msg, flush=True)
        self.notes.append(msg)

    def rb(self, cluster, sysname, fsync, p, test, repeat):
        a = self.args
        key = (sysname, fsync, p, test)
        port = cluster.live_ports()[0]
        try:
            if key not in self.est:
                # Sizing runs, not recorded: grow until one lasts >= 1 s (a very short run
                # underestimates the rate: connection setup and slot discovery dominate it).
                n = a.calibrate * p
                while True:
                    _, _, _, secs, _ = redis_benchmark(port, test, p, a.clients, n, a.bench_timeout)
                    if secs >= 1.0:
                        break
                    n = int(n * min(10.0, 1.5 / max(secs, 0.01)))
                self.est[key] = n / secs
            for _attempt in range(2):
                n = max(a.clients * p * 20, int(self.est[key] * a.seconds))
                rps, p50, p99, secs, notes = redis_benchmark(port, test, p, a.clients, n, a.bench_timeout)
                self.est[key] = n / secs
                if secs >= a.seconds * 0.8:
                    break
                print(f"  rb {sysname} {fsync} -P {p} {test}: {secs:.1f}s is too short, again", flush=True)
            for line in notes[:3]:
                self.note(f"rb {sysname} {fsync} -P {p} {test} repeat {repeat}: {line}")
            if secs < a.seconds * 0.8:
                self.note(f"rb {sysname} {fsync} -P {p} {test} repeat {repeat}: ran only {secs:.1f}s")
            result = (rps, p50, p99)
            print(f"  rb {sysname:8} {fsync:8} -P {p:2} {test.upper():5} n={n:8} {secs:5.1f}s "
                  f"rps {rps:9.0f} p50 {p50:7.3f} p99 {p99:7.3f}", flush=True)
        except Exception as e:  # noqa: BLE001 - one failed run must not stop the others
            self.note(f"rb {sysname} {fsync} -P {p} {test} repeat {repeat} FAILED: {type(e).__name__}: {e}")
            result = None
        self.rows.setdefault(("rb", sysname, fsync, p, test), []).append(result)

    def py(self, cluster, sysname, fsync, p, wait, repeat):
        a = self.args
        label = sysname + ("+WAIT" if wait else "")
        try:
            rps, p50, p99, notes = py_bench(a.loader, cluster.live_ports()[0], a.clients, p, wait, a.warmup,
                                            a.seconds, a.workload)
            for line in notes:
                self.note(f"py {label} {fsync} -P {p} repeat {repeat}: {line}")
            result = (rps, p50, p99)
            print(f"  py {label:13} {fsync:8} -P {p:2} {a.workload}  rps {rps:9.0f} p50 {p50:7.3f} p99 {p99:7.3f}",
                  flush=True)
        except Exception as e:  # noqa: BLE001
            self.note(f"py {label} {fsync} -P {p} repeat {repeat} FAILED: {type(e).__name__}: {e}")
            result = None
        self.rows.setdefault(("py", label, fsync, p, "incr"), []).append(result)


def run_fsync(runner, fsync, log_dir):
    a = runner.args
    tk = rc = None
    try:
        print(f"appendfsync {fsync}: starting clusters", flush=True)
        tk = TallyCluster(a.bin, fsync, a.threads, log_dir)
        rc = RedisCluster(fsync, log_dir)
        runner.commands = (tk.command, rc.command)
        systems = [("tallykv", tk), ("redis", rc)]
        for rep in range(a.repeats):
            order = systems if rep % 2 == 0 else systems[::-1]
            print(f"appendfsync {fsync}, repeat {rep + 1}/{a.repeats}", flush=True)
            for p in a.pipelines:
                if "rb" in a.parts:
                    for test in a.tests:
                        for name, c in order:
                            runner.rb(c, name, fsync, p, test, rep)
                if "py" in a.parts:
                    py_runs = [("tallykv", tk, False), ("redis", rc, True)]
                    if a.py_redis_nowait:
                        py_runs.append(("redis", rc, False))
                    for name, c, wait in (py_runs if rep % 2 == 0 else py_runs[::-1]):
                        runner.py(c, name, fsync, p, wait, rep)
            for c in (tk, rc):
                for n in c.nodes:
                    n.check()
    finally:
        for c in (tk, rc):
            if c:
                c.stop()


def summarize(runner, redis_label):
    a = runner.args
    rows = runner.rows

    def series(kind, sysname, fsync, p, test):
        return rows.get((kind, sysname, fsync, p, test), [])

    def stat(rs, i, f="{:.0f}"):
        xs = [r[i] for r in rs if r]
        return fmt_range(xs, f) if xs else "n/a"

    def ratios(num, den, i):
        return [x[i] / y[i] for x, y in zip(num, den) if x and y and y[i]]

    lines = []
    if "rb" in a.parts:
        lines.append("redis-benchmark --cluster (median [min-max] over repeats; ratios per repeat, tallykv/redis):")
        lines.append("")
        lines.append(f"| appendfsync | test | -P | tallykv rps | {redis_label} rps | rps ratio | tallykv p50 ms "
                     f"| redis p50 ms | tallykv p99 ms | redis p99 ms | p99 ratio |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for fsync in a.fsync:
            for test in a.tests:
                for p in a.pipelines:
                    t, r = series("rb", "tallykv", fsync, p, test), series("rb", "redis", fsync, p, test)
                    lines.append(f"| {fsync} | {test.upper()} | {p} | {stat(t, 0)} | {stat(r, 0)} "
                                 f"| {ratio_range(ratios(t, r, 0))} | {stat(t, 1, '{:.3f}')} | {stat(r, 1, '{:.3f}')} "
                                 f"| {stat(t, 2, '{:.3f}')} | {stat(r, 2, '{:.3f}')} | {ratio_range(ratios(t, r, 2))} |")
        lines.append("")
    if "py" in a.parts:
        lines.append(f"waitload client, {a.workload} (median [min-max]; ratios per repeat):")
        lines.append("")
        lines.append("| appendfsync | -P | client | rps | p50 ms | p99 ms | tallykv/this rps | tallykv/this p99 |")
        lines.append("|---|---|---|---|---|---|---|---|")
        labels = ["tallykv", "redis+WAIT"] + (["redis"] if a.py_redis_nowait else [])
        for fsync in a.fsync:
            for p in a.pipelines:
                t = series("py", "tallykv", fsync, p, "incr")
                for label in labels:
                    s = series("py", label, fsync, p, "incr")
                    rr = "" if label == "tallykv" else ratio_range(ratios(t, s, 0))
                    pr = "" if label == "tallykv" else ratio_range(ratios(t, s, 2))
                    w = a.workload
                    shown = {"tallykv": f"tallykv ({w})", "redis+WAIT": f"{redis_label} ({w}; WAIT 1 0)",
                             "redis": f"{redis_label} ({w}, no WAIT)"}[label]
                    lines.append(f"| {fsync} | {p} | {shown} | {stat(s, 0)} | {stat(s, 1, '{:.3f}')} "
                                 f"| {stat(s, 2, '{:.3f}')} | {rr} | {pr} |")
        lines.append("")
    # Targets of issue 4.
    for fsync in a.fsync:
        for p in a.pipelines:
            t = series("py", "tallykv", fsync, p, "incr")
            w = series("py", "redis+WAIT", fsync, p, "incr")
            rs = ratios(t, w, 0)
            if rs:
                met = "met" if statistics.median(rs) >= 1 else "MISSED"
                lines.append(f"- target tallykv >= redis+WAIT throughput, {fsync}, -P {p}: {met} "
                             f"(median ratio {statistics.median(rs):.2f}, range {min(rs):.2f}-{max(rs):.2f})")
        if fsync == "everysec":
            for kind, test in [("rb", t_) for t_ in a.tests] + [("py", "incr")]:
                for p in a.pipelines:
                    t = series(kind, "tallykv", fsync, p, test)
                    p99s = [r[2] for r in t if r]
                    if p99s:
                        met = "met" if statistics.median(p99s) < 1.0 else "MISSED"
                        lines.append(f"- target p99 < 1 ms, everysec, {kind} {test.upper()} -P {p}: {met} "
                                     f"(tallykv p99 median {statistics.median(p99s):.3f} ms, "
                                     f"range {min(p99s):.3f}-{max(p99s):.3f})")
    if runner.notes:
        lines.append("")
        lines.append("Notes (errors, redirections, short runs):")
        lines.extend(f"- {n}" for n in runner.notes)
    print("\n" + "\n".join(lines))


def int_list(s):
    return [int(x) for x in s.split(",") if x]


def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=BIN, help="tallykv-server binary (default target/release/tallykv-server)")
    ap.add_argument("--fsync", default="everysec,always", help="appendfsync policies (comma list)")
    ap.add_argument("--pipelines", type=int_list, default=[1, 16], help="-P values (default 1,16)")
    ap.add_argument("--tests", default="incr,set", help="redis-benchmark tests (default incr,set)")
    ap.add_argument("--parts", default="rb,py", help="rb (redis-benchmark), py (waitload client, WAIT); default both")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (default 3)")
    ap.add_argument("--seconds", type=float, default=6, help="target length of each run (default 6)")
    ap.add_argument("--warmup", type=float, default=0.5, help="py part: seconds not measured at the start")
    ap.add_argument("--calibrate", type=int, default=5000,
                    help="requests x -P of the sizing run before a system's first measurement (default 5000)")
    ap.add_argument("--clients", type=int, default=50, help="connections (-c), default 50")
    ap.add_argument("--loader", default=None,
                    help="waitload binary for the py part (default: examples/waitload next to --bin)")
    ap.add_argument("--no-py-redis-nowait", dest="py_redis_nowait", action="store_false",
                    help="skip the py part's redis run without WAIT")
    ap.add_argument("--workload", default="incr", choices=["incr", "slidewin", "evalsha"],
                    help="py part: waitload's op: INCR, a MULTI sliding-window log (ZADD, ZREMRANGEBYSCORE, "
                         "ZCARD, PEXPIRE) or EVALSHA of limits' moving-window script (default incr)")
    ap.add_argument("--threads", type=int, default=1, help="tallykv --threads per node (default 1)")
    ap.add_argument("--bench-timeout", type=float, default=300, help="max seconds for one redis-benchmark run")
    args = ap.parse_args()
    args.fsync = [m for m in args.fsync.split(",") if m]
    args.tests = [t for t in args.tests.split(",") if t]
    args.parts = [p for p in args.parts.split(",") if p]
    BIN = args.bin
    for tool in ("redis-server", "redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install -y redis-server redis-tools")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} not found (cargo build --release, or --bin)")
    args.loader = loader_path(args.bin, args.loader)
    if "py" in args.parts and not os.access(args.loader, os.X_OK):
        sys.exit(f"{args.loader} not found: cargo build --release --example waitload (or --loader)")

    install_cleanup()
    log_dir = mkdtemp("cluster-logs-")
    runner = Runner(args)
    redis_label = f"redis {redis_version()} 3+3"
    t0 = time.monotonic()
    try:
        for fsync in args.fsync:
            try:
                run_fsync(runner, fsync, log_dir)
            except Exception as e:  # noqa: BLE001 - report and go on with the next policy
                runner.note(f"appendfsync {fsync}: FAILED: {type(e).__name__}: {e}")
    finally:
        cleanup()
    print(f"\ntotal {time.monotonic() - t0:.0f}s; tallykv node: {getattr(runner, 'commands', ('?', '?'))[0]}")
    print(f"redis node: {getattr(runner, 'commands', ('?', '?'))[1]}")
    summarize(runner, redis_label)


if __name__ == "__main__":
    main()
