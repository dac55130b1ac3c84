#!/usr/bin/env python3
"""Side-by-side durability benchmark: tallykv vs Debian's redis-server, same machine, same client.

Three parts, each selectable with --parts (default: all three):

throughput  For appendfsync always and everysec, starts redis-server
            (`--appendonly yes --appendfsync <mode> --save ''`) and `tallykv-server --appendonly yes
            --appendfsync <mode> --threads N`, each on a free port and an empty temp dir, and runs the
            same `redis-benchmark -t set,incr -n <requests> -c 50 -P <p> -r 100000 --csv` against
            each for -P 1 and 16. Reports rps, p50, p99 and the ratios tallykv/redis.
restart     Loads K keys (16-byte names `key:%012d`, 32-byte values of random hex so that RDB's LZF
            compression cannot shrink them; every odd key gets `PX 3600000`) through
            `redis-cli --pipe` from a RESP file written once per K and reused for every server.
            redis AOF: appendonly yes, everysec, then BGREWRITEAOF until aof_rewrite_in_progress:0
            (Redis 7 default aof-use-rdb-preamble yes, so the rewritten base is RDB-encoded; see
            --redis-aof-preamble). redis RDB: appendonly no, SAVE. tallykv: appendonly yes,
            everysec, SAVE. Each is then stopped with SHUTDOWN (SIGTERM, then SIGKILL, after
            --grace seconds) and restarted on the same dir; the time from process start until
            `INFO persistence` shows loading:0 AND DBSIZE == K (polled every 10 ms on a raw
            socket) is the restart time. A few keys are then checked (value, TTL kept / absent).
            The files are in the page cache: this is a warm restart.
disk        After load + save + shutdown, the bytes under each server's dir (allocated, like du,
            and apparent) divided by K, for redis AOF, redis RDB and tallykv.

restart and disk share one load per server and K. Tables are markdown with ratios tallykv/redis;
a short summary of the ratios follows. This machine is a shared 2-vCPU VM and the client runs on
the same cores as the server: read the ratios, not the absolute numbers.

Run from the repository root after `cargo build --release`. Default (a few minutes):

    python3 benches/durability.py

Full run:

    python3 benches/durability.py --requests 1000000 --keys 1000000,10000000 --threads 1,2

Only the redis half (e.g. while tallykv lacks a feature): `--only redis`. Without
target/release/tallykv-server (or --bin) the tallykv half is skipped with a message; a tallykv
step that fails (unknown flag, SAVE not supported, no `loading:` in INFO) is reported as n/a
with the reason and the run goes on.
"""

import argparse
import atexit
import csv
import ctypes
import io
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = "target/release/tallykv-server"
TESTS = ["set", "incr"]
TTL_MS = 3_600_000
POLL_S = 0.010

# Everything we start or create, so that any exit path (exception, Ctrl-C, SIGTERM) cleans up.
_procs = []
_dirs = []


def _cleanup():
    for p in list(_procs):
        _kill(p)
    for d in list(_dirs):
        shutil.rmtree(d, ignore_errors=True)
    _dirs.clear()


def _kill(proc):
    """SIGKILLs a server we started and its process group (Redis's fork children), then reaps it.
    Only while the leader is unreaped: after that its pid (= the group id) may belong to someone else."""
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


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup():
    # If this script is SIGKILLed, the kernel kills the server too.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def mkdtemp(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.append(d)
    return d


def rmdir(d):
    shutil.rmtree(d, ignore_errors=True)
    if d in _dirs:
        _dirs.remove(d)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RespError(Exception):
    pass


class Conn:
    """A minimal RESP2 client on a raw socket (no redis-cli process per poll)."""

    def __init__(self, port, timeout=5.0):
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
        out = bytearray()
        for cmd in cmds:
            out += b"*%d\r\n" % len(cmd)
            for a in cmd:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

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
        if t == b"$":
            n = int(body)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed")
            return data[:-2]
        if t == b"*":
            n = int(body)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"bad reply line {line!r}")

    def call(self, *args):
        self.send(args)
        r = self.read()
        if isinstance(r, RespError):
            raise r
        return r


def info_fields(text):
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v.strip()
    return out


class Server:
    """One server process on a free port, logging to a file outside its data dir."""

    def __init__(self, name, argv, data_dir, log_dir, ready_timeout=30):
        self.name = name
        self.port = free_port()
        self.dir = data_dir
        self.log_path = os.path.join(log_dir, f"{name.replace(' ', '_')}-{self.port}.log")
        self.log = open(self.log_path, "wb")
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen(argv(self.port, data_dir), stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_child_setup)
        _procs.append(self.proc)
        if ready_timeout:
            try:
                self.wait_ping(ready_timeout)
            except BaseException:
                self.kill()
                raise

    def log_tail(self, n=5):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
            return " | ".join(lines[-n:])
        except OSError:
            return ""

    def exited(self):
        if self.proc.poll() is not None:
            return f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}"
        return None

    def wait_ping(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if msg := self.exited():
                raise RuntimeError(msg)
            try:
                c = Conn(self.port, timeout=1)
                try:
                    # tallykv answers PING while loading; wait for the data too.
                    if c.call("PING") == "PONG" and b"loading:1" not in c.call("INFO", "persistence"):
                        return
                finally:
                    c.close()
            except (OSError, ConnectionError, RespError):
                pass
            time.sleep(POLL_S)
        raise RuntimeError(f"{self.name} did not answer PING in {timeout}s: {self.log_tail()}")

    def call(self, *args, timeout=600):
        c = Conn(self.port, timeout=timeout)
        try:
            return c.call(*args)
        finally:
            c.close()

    def info(self, section):
        return info_fields(self.call("INFO", section))

    def shutdown(self, grace):
        """SHUTDOWN; SIGTERM if it refuses or does not exit in `grace` s; SIGKILL after another grace.
        Returns how it ended ("SHUTDOWN", "SIGTERM", "SIGKILL") and, if not cleanly, why."""
        note = ""
        try:
            c = Conn(self.port, timeout=grace)
            try:
                c.send(["SHUTDOWN"])
                note = f"SHUTDOWN replied {c.read()}"  # a clean shutdown closes without a reply
            finally:
                c.close()
        except (OSError, ConnectionError):
            pass
        steps = [("SIGTERM", signal.SIGTERM), ("SIGKILL", signal.SIGKILL)]
        if not note:
            steps.insert(0, ("SHUTDOWN", None))
        for how, sig in steps:
            if sig is not None and self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                note = note or f"no exit within {grace}s after {how}"
        _kill(self.proc)
        self.log.close()
        return how, note

    def kill(self):
        _kill(self.proc)
        self.log.close()


# ---------------------------------------------------------------------------- server command lines

def redis_version():
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    return out.split()[2].removeprefix("v=")


def redis_argv(appendonly, fsync="everysec", preamble="yes"):
    def argv(port, d):
        return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no",
                "--dir", d, "--save", "", "--appendonly", appendonly, "--appendfsync", fsync,
                "--aof-use-rdb-preamble", preamble, "--logfile", ""]
    return argv


def tallykv_argv(threads, fsync="everysec"):
    def argv(port, d):
        return [BIN, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--threads", str(threads),
                "--loglevel", "warning", "--appendonly", "yes", "--appendfsync", fsync]
    return argv


# ---------------------------------------------------------------------------- part 1: throughput

def bench(server, requests, pipeline, timeout):
    """Runs redis-benchmark; returns {test: (rps, p50_ms, p99_ms)}."""
    cmd = ["redis-benchmark", "-p", str(server.port), "-c", "50", "-n", str(requests), "-P", str(pipeline),
           "-r", "100000", "-t", ",".join(TESTS), "--csv"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark exited {r.returncode}: {r.stderr.strip()[-300:]}")
    res = {}
    for row in csv.DictReader(io.StringIO(r.stdout)):
        name = row["test"].lower().split()[0]
        res[name] = (float(row["rps"]), float(row["p50_latency_ms"]), float(row["p99_latency_ms"]))
    missing = [t for t in TESTS if t not in res]
    if missing:
        raise RuntimeError(f"redis-benchmark gave no result for {missing}: {r.stdout.strip()[-300:]} "
                           f"{r.stderr.strip()[-300:]}")
    return res


def part_throughput(args, servers, log_dir):
    """servers: [(label, argv_fn(fsync))]. Returns {(label, fsync, p): {test: (rps, p50, p99)} or str}."""
    results = {}
    for fsync in args.fsync:
        for label, argv_for in servers:
            d = mkdtemp("durability-tp-")
            s = None
            try:
                s = Server(label, argv_for(fsync), d, log_dir)
                for p in args.pipelines:
                    r = bench(s, args.requests, p, args.bench_timeout)
                    results[(label, fsync, p)] = r
                    print(f"{label} appendfsync {fsync} -P {p}: "
                          + ", ".join(f"{t} {v[0]:.0f} rps p50 {v[1]:.3f} p99 {v[2]:.3f}" for t, v in r.items()),
                          flush=True)
            except Exception as e:  # noqa: BLE001 - one server failing must not stop the others
                msg = (s and s.exited()) or f"{type(e).__name__}: {e}"
                print(f"{label} appendfsync {fsync}: FAILED: {msg}", flush=True)
                for p in args.pipelines:
                    results.setdefault((label, fsync, p), msg)
            finally:
                if s:
                    s.kill()
                rmdir(d)
    return results


# ---------------------------------------------------------------------------- parts 2 and 3: load, restart, disk

def key(i):
    return b"key:%012d" % i


def write_resp(path, n, chunk=100_000):
    """Writes n SETs (every odd key with PX) as RESP; returns {key: value} for a few keys to check."""
    sample = {}
    px = b"$2\r\nPX\r\n$7\r\n%d\r\n" % TTL_MS
    with open(path, "wb") as f:
        for base in range(0, n, chunk):
            m = min(chunk, n - base)
            hexes = os.urandom(16 * m).hex().encode()
            parts = []
            for j in range(m):
                i = base + j
                v = hexes[32 * j:32 * j + 32]
                if i & 1:
                    parts.append(b"*5\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n%s" % (key(i), v, px))
                else:
                    parts.append(b"*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$32\r\n%s\r\n" % (key(i), v))
                if i < 2 or i >= n - 2:
                    sample[key(i)] = v
            f.write(b"".join(parts))
    return sample


def pipe_load(server, resp_path, n, timeout):
    t0 = time.perf_counter()
    with open(resp_path, "rb") as f:
        r = subprocess.run(["redis-cli", "-p", str(server.port), "--pipe"], stdin=f, capture_output=True,
                           timeout=timeout)
    secs = time.perf_counter() - t0
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0 or "errors: 0" not in out or f"replies: {n}" not in out:
        raise RuntimeError(f"redis-cli --pipe: {out.strip()[-300:]} {r.stderr.decode(errors='replace')[-300:]}")
    return secs


def wait_info(server, section, done, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        fields = server.info(section)
        if done(fields):
            return fields
        time.sleep(0.05)
    raise RuntimeError(f"{server.name}: {what} not done in {timeout}s")


def dir_bytes(d):
    """(allocated bytes like du, apparent bytes) of every file under d."""
    alloc = apparent = 0
    for root, _dirs_, files in os.walk(d):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


def wait_loaded(server, n, timeout, stall=5.0):
    """Polls INFO persistence + DBSIZE (pipelined, one raw connection) every 10 ms until loading:0 and
    DBSIZE == n. Returns seconds since the process was started."""
    conn = None
    deadline = time.time() + timeout
    last = "no answer"
    settled_at, settled_size = None, None
    try:
        while time.time() < deadline:
            if msg := server.exited():
                raise RuntimeError(msg)
            if conn is None:
                try:
                    conn = Conn(server.port, timeout=5)
                except OSError:
                    time.sleep(POLL_S)
                    continue
            try:
                conn.send(["INFO", "persistence"], ["DBSIZE"])
                info, size = conn.read(), conn.read()
            except (OSError, ConnectionError):
                conn.close()
                conn = None
                time.sleep(POLL_S)
                continue
            now = time.perf_counter()
            if not isinstance(info, RespError):
                fields = info_fields(info)
                if "loading" not in fields:
                    raise RuntimeError(f"{server.name}: INFO persistence has no loading: field")
                last = f"loading:{fields['loading']} DBSIZE {size}"
                if fields["loading"] == "0" and size == n:
                    return now - server.t_start
                if fields["loading"] == "0" and isinstance(size, int):
                    if size != settled_size:
                        settled_at, settled_size = now, size
                    elif now - settled_at > stall:
                        raise RuntimeError(f"{server.name}: loading:0 but DBSIZE stays {size}, expected {n}")
            else:
                last = f"INFO: {info}"
            time.sleep(POLL_S)
        raise RuntimeError(f"{server.name}: not loaded after {timeout}s (last: {last})")
    finally:
        if conn:
            conn.close()


def check_keys(server, sample):
    """Values and TTLs survived the restart? Returns a list of problems (empty if fine)."""
    problems = []
    for k, v in sample.items():
        got = server.call("GET", k)
        if got != v:
            problems.append(f"GET {k.decode()} = {got!r}, expected {v!r}")
        pttl = server.call("PTTL", k)
        i = int(k[4:])
        if i & 1 and not 0 < pttl <= TTL_MS:
            problems.append(f"PTTL {k.decode()} = {pttl}, expected a TTL")
        if not i & 1 and pttl != -1:
            problems.append(f"PTTL {k.decode()} = {pttl}, expected -1")
    return problems


def persist_run(args, label, kind, argv, n, resp_path, sample, log_dir, restart):
    """Load n keys, make them durable, stop, measure the dir, optionally restart and time it.
    kind: "aof" (redis BGREWRITEAOF), "rdb" (redis SAVE), "tallykv" (SAVE)."""
    d = mkdtemp("durability-data-")
    res = {"label": label, "keys": n}
    s = None
    try:
        s = Server(label, argv, d, log_dir)
        res["load_s"] = pipe_load(s, resp_path, n, args.restart_timeout)
        if kind == "aof":
            # The load itself may have started an automatic rewrite (auto-aof-rewrite-min-size 64mb):
            # let it finish, then rewrite the whole data set once more so the AOF is compact.
            idle = lambda f: f.get("aof_rewrite_in_progress") == "0" and f.get("aof_rewrite_scheduled") == "0"  # noqa: E731
            wait_info(s, "persistence", idle, args.restart_timeout, "automatic AOF rewrite")
            s.call("BGREWRITEAOF")
            f = wait_info(s, "persistence", idle, args.restart_timeout, "BGREWRITEAOF")
            if f.get("aof_last_bgrewrite_status") != "ok":
                raise RuntimeError(f"BGREWRITEAOF status {f.get('aof_last_bgrewrite_status')}")
        else:
            try:
                r = s.call("SAVE")
                if r != "OK":
                    raise RespError(f"SAVE replied {r!r}")
            except RespError as e:
                if kind == "rdb":
                    raise
                res["note"] = f"SAVE failed: {e}"
                print(f"{label}: SAVE failed ({e}); going on with what appendonly wrote", flush=True)
        how, note = s.shutdown(args.grace)
        s = None
        if how != "SHUTDOWN":
            res["note"] = (res.get("note", "") + f" stopped by {how} ({note})").strip()
            print(f"{label}: SHUTDOWN did not stop it ({note}); used {how}", flush=True)
        res["alloc"], res["apparent"] = dir_bytes(d)
        # tallykv's dir holds the live tables, fjall's journal (preallocated, until its data
        # is flushed) and the SAVE snapshot (a full copy): report them apart.
        parts = {}
        if os.path.isdir(os.path.join(d, "tallykv.db")):
            db = os.path.join(d, "tallykv.db")
            parts["tables"] = dir_bytes(os.path.join(db, "keyspaces"))[0]
            parts["journal"] = sum(os.stat(os.path.join(db, f)).st_blocks * 512
                                   for f in os.listdir(db) if f.endswith(".jnl"))
            parts["snapshot"] = dir_bytes(os.path.join(d, "snapshot"))[0] if os.path.isdir(os.path.join(d, "snapshot")) else 0
        res["parts"] = parts
        msg = f"{label} {n} keys: load {res['load_s']:.2f}s, dir {res['alloc'] / n:.1f} B/key (du)"
        if restart:
            s = Server(label, argv, d, log_dir, ready_timeout=0)
            res["restart_s"] = wait_loaded(s, n, args.restart_timeout)
            problems = check_keys(s, sample)
            if problems:
                res["note"] = (res.get("note", "") + " after restart: " + "; ".join(problems)).strip()
            msg += f", restart {res['restart_s']:.3f}s ({n / res['restart_s']:.0f} keys/s)"
            msg += "" if not problems else " CHECK FAILED: " + "; ".join(problems)
        print(msg, flush=True)
    except Exception as e:  # noqa: BLE001 - report and go on with the other servers
        msg = (s and s.exited()) or f"{type(e).__name__}: {e}"
        res["error"] = msg
        print(f"{label} {n} keys: FAILED: {msg}", flush=True)
    finally:
        if s:
            s.kill()
        rmdir(d)
    return res


def part_persist(args, redis_label, tallykv_threads, log_dir):
    restart = "restart" in args.parts
    out = []
    resp_dir = mkdtemp("durability-resp-")
    for n in args.keys:
        resp_path = os.path.join(resp_dir, f"load-{n}.resp")
        t0 = time.perf_counter()
        sample = write_resp(resp_path, n)
        print(f"wrote {os.path.getsize(resp_path) / 1e6:.0f} MB of RESP for {n} keys in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        runs = []
        if args.only != "tallykv":
            runs.append((f"{redis_label} AOF", "aof", redis_argv("yes", "everysec", args.redis_aof_preamble)))
            runs.append((f"{redis_label} RDB", "rdb", redis_argv("no")))
        for t in tallykv_threads:
            runs.append((f"tallykv --threads {t}", "tallykv", tallykv_argv(t, "everysec")))
        for label, kind, argv in runs:
            out.append(persist_run(args, label, kind, argv, n, resp_path, sample, log_dir, restart))
        os.remove(resp_path)
    rmdir(resp_dir)
    return out


# ---------------------------------------------------------------------------- tables

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def print_throughput(args, results, labels, base):
    print()
    print(f"| server | appendfsync | test | -P | rps | p50 ms | p99 ms | rps ratio vs {base} | p99 ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fsync in args.fsync:
        for label in labels:
            for p in args.pipelines:
                r = results.get((label, fsync, p))
                b = results.get((base, fsync, p))
                for t in TESTS:
                    if not isinstance(r, dict):
                        print(f"| {label} | {fsync} | {t.upper()} | {p} | n/a | n/a | n/a | n/a | n/a |")
                        continue
                    rps, p50, p99 = r[t]
                    brps, bp99 = (b[t][0], b[t][2]) if isinstance(b, dict) else (None, None)
                    print(f"| {label} | {fsync} | {t.upper()} | {p} | {rps:.0f} | {p50:.3f} | {p99:.3f} "
                          f"| {ratio(rps, brps)} | {ratio(p99, bp99)} |")
    errors = {k[0] + " " + k[1]: v for k, v in results.items() if isinstance(v, str)}
    for k, v in errors.items():
        print(f"\n{k}: {v}")


def print_persist(args, runs, redis_label):
    aof = {r["keys"]: r for r in runs if r["label"] == f"{redis_label} AOF"}
    rdb = {r["keys"]: r for r in runs if r["label"] == f"{redis_label} RDB"}
    if "restart" in args.parts:
        print()
        print("| server | keys | load s | restart s | restart keys/s | time ratio vs redis AOF | vs redis RDB |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            n, rs = r["keys"], r.get("restart_s")
            ra, rr = aof.get(n, {}).get("restart_s"), rdb.get(n, {}).get("restart_s")
            load = f"{r['load_s']:.2f}" if "load_s" in r else "n/a"
            print(f"| {r['label']} | {n} | {load} | {f'{rs:.3f}' if rs else 'n/a'} "
                  f"| {f'{n / rs:.0f}' if rs else 'n/a'} | {ratio(rs, ra)} | {ratio(rs, rr)} |")
    if "disk" in args.parts:
        print()
        print("| server | keys | dir bytes (du) | du bytes/key | apparent bytes/key | du ratio vs redis AOF "
              "| vs redis RDB |")
        print("|---|---|---|---|---|---|---|")
        for r in runs:
            n, al = r["keys"], r.get("alloc")
            ra, rr = aof.get(n, {}).get("alloc"), rdb.get(n, {}).get("alloc")
            if al is None:
                print(f"| {r['label']} | {n} | n/a | n/a | n/a | n/a | n/a |")
                continue
            print(f"| {r['label']} | {n} | {al} | {al / n:.1f} | {r['apparent'] / n:.1f} "
                  f"| {ratio(al, ra)} | {ratio(al, rr)} |")
        for r in runs:
            if r.get("parts"):
                n = r["keys"]
                detail = ", ".join(f"{k} {v / n:.1f} B/key" for k, v in r["parts"].items())
                print(f"\n{r['label']}, {n} keys, du by part: {detail}")
    notes = [(r["label"], r["keys"], r.get("error") or r.get("note")) for r in runs if r.get("error") or r.get("note")]
    if notes:
        print()
        for label, n, note in notes:
            print(f"- {label}, {n} keys: {note}")


def print_summary(args, tp, labels, base, runs, redis_label):
    lines = []
    for label in labels[1:]:
        for fsync in args.fsync:
            rps, p99 = [], []
            for p in args.pipelines:
                r, b = tp.get((label, fsync, p)), tp.get((base, fsync, p))
                if isinstance(r, dict) and isinstance(b, dict):
                    rps += [r[t][0] / b[t][0] for t in TESTS]
                    p99 += [r[t][2] / b[t][2] for t in TESTS if b[t][2]]
            g, h = geomean(rps), geomean(p99)
            if g:
                lines.append(f"- throughput, appendfsync {fsync}: {label} rps {g:.2f}x redis, p99 {h or 0:.2f}x "
                             f"(geomean over {', '.join(t.upper() for t in TESTS)}, -P {','.join(map(str, args.pipelines))})")
    by = {(r["label"], r["keys"]): r for r in runs}
    for r in runs:
        if not r["label"].startswith("tallykv"):
            continue
        n = r["keys"]
        a, d = by.get((f"{redis_label} AOF", n), {}), by.get((f"{redis_label} RDB", n), {})
        if r.get("restart_s") and "restart" in args.parts:
            lines.append(f"- restart, {n} keys: {r['label']} {r['restart_s']:.2f}s = "
                         f"{ratio(r['restart_s'], a.get('restart_s'))}x redis AOF, "
                         f"{ratio(r['restart_s'], d.get('restart_s'))}x redis RDB")
        if r.get("alloc") and "disk" in args.parts:
            lines.append(f"- disk, {n} keys: {r['label']} {r['alloc'] / n:.1f} B/key = "
                         f"{ratio(r['alloc'], a.get('alloc'))}x redis AOF, {ratio(r['alloc'], d.get('alloc'))}x redis RDB")
    if lines:
        print("\nSummary (tallykv/redis; < 1 is faster or smaller for time and bytes, > 1 is better for rps):")
        print("\n".join(lines))


# ---------------------------------------------------------------------------- main

def int_list(s):
    return [int(x.replace("_", "")) for x in s.split(",") if x]


def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="throughput,restart,disk",
                    help="comma list of throughput, restart, disk (default: all)")
    ap.add_argument("--only", choices=["both", "redis", "tallykv"], default="both",
                    help="measure only one side (ratios need both)")
    ap.add_argument("--requests", type=int, default=200_000, help="redis-benchmark -n (default 200000)")
    ap.add_argument("--pipelines", type=int_list, default=[1, 16], help="redis-benchmark -P values (default 1,16)")
    ap.add_argument("--fsync", default="always,everysec", help="appendfsync modes for throughput")
    ap.add_argument("--keys", type=int_list, default=[1_000_000], help="K for restart/disk, comma list")
    ap.add_argument("--threads", type=int_list, default=[1], help="tallykv --threads, comma list (default 1)")
    ap.add_argument("--bin", default=BIN, help="tallykv-server binary to measure")
    ap.add_argument("--redis-aof-preamble", choices=["yes", "no"], default="yes",
                    help="redis aof-use-rdb-preamble for the AOF restart (Redis default yes)")
    ap.add_argument("--grace", type=float, default=60, help="seconds to wait after SHUTDOWN, then after SIGTERM")
    ap.add_argument("--restart-timeout", type=float, default=600, help="max seconds for a load or a restart")
    ap.add_argument("--bench-timeout", type=float, default=900, help="max seconds for one redis-benchmark run")
    args = ap.parse_args()
    args.parts = [p for p in args.parts.split(",") if p]
    args.fsync = [m for m in args.fsync.split(",") if m]
    bad = set(args.parts) - {"throughput", "restart", "disk"}
    if bad:
        ap.error(f"unknown part(s) {sorted(bad)}")
    BIN = args.bin

    for tool in ("redis-server", "redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install -y redis-server redis-tools")

    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(_cleanup)

    redis_label = "redis " + redis_version()
    threads = [] if args.only == "redis" else args.threads
    if threads and not os.path.exists(BIN):
        print(f"{BIN} not found (cargo build --release): skipping the tallykv half", flush=True)
        threads = []
    if args.only == "tallykv" and not threads:
        sys.exit("nothing to measure")

    labels = ([] if args.only == "tallykv" else [redis_label]) + [f"tallykv --threads {t}" for t in threads]
    base = labels[0]
    log_dir = mkdtemp("durability-logs-")
    tp, runs = {}, []
    try:
        if "throughput" in args.parts:
            servers = []
            if args.only != "tallykv":
                servers.append((redis_label, lambda m: redis_argv("yes", m)))
            for t in threads:
                servers.append((f"tallykv --threads {t}", lambda m, t=t: tallykv_argv(t, m)))
            tp = part_throughput(args, servers, log_dir)
        if "restart" in args.parts or "disk" in args.parts:
            runs = part_persist(args, redis_label, threads, log_dir)
    finally:
        _cleanup()

    if tp:
        print_throughput(args, tp, labels, base)
    if runs:
        print_persist(args, runs, redis_label)
    print_summary(args, tp, labels, base, runs, redis_label)


if __name__ == "__main__":
    main()
