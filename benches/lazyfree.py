#!/usr/bin/env python3
"""Lazy freeing: what deleting a 10M-member set costs the core that owns it.

Fills one set of N members ("member:<i>", hashtable encoding) on a tallykv server, then
deletes it three ways — UNLINK, DEL with lazyfree-lazy-user-del yes (Valkey 8's default) and
DEL with lazyfree-lazy-user-del no (the value freed on the core) — while a probe client
sends GET of a key in the same slot (so the same core) as fast as it can. Reports the
delete's round trip, the probe's worst round trip from just before the delete until the
memory is back (INFO lazyfreed_objects / used_memory), and how long freeing took. With
--redis, the same against redis-server for reference.

    python3 benches/lazyfree.py [--bin target/release/tallykv-server] [--n 10000000]
                                [--member-bytes 24] [--redis redis-server]

Persistence is off (appendonly no): this measures freeing, not the disk. Figures go to
BENCHMARKS.md ("Lazy freeing"); nothing here asserts on time.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

KEY = b"{lf}big"
CASES = ("UNLINK", "DEL, lazyfree-lazy-user-del yes", "DEL, lazyfree-lazy-user-del no")
PROBE = b"{lf}probe"


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    """A minimal RESP client: enough for integer, status, bulk and error replies."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 20)
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data
        raise RuntimeError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.s.sendall(resp(*args))
        return self.reply()

    def info(self, field):
        text = self.call("INFO", "memory").decode()
        for line in text.splitlines():
            if line.startswith(field + ":"):
                return int(line.split(":", 1)[1])
        return 0


def member(i, size):
    """Member i: "member:<i>", padded with x to `size` bytes when that is longer."""
    m = b"member:%d" % i
    return m + b"x" * (size - len(m)) if size > len(m) else m


def fill(conn, n, size):
    batch = 10000
    pending = 0
    for start in range(0, n, batch):
        members = [member(i, size) for i in range(start, min(start + batch, n))]
        conn.s.sendall(resp(b"SADD", KEY, *members))
        pending += 1
        if pending == 16:
            for _ in range(pending):
                conn.reply()
            pending = 0
    for _ in range(pending):
        conn.reply()


class Probe(threading.Thread):
    """GETs the probe key back to back, recording (send time, round trip)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.conn = Conn(port)
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            t = time.perf_counter()
            self.conn.call(b"GET", PROBE)
            self.samples.append((t, time.perf_counter() - t))

    def worst_since(self, since):
        rtts = [rtt for t, rtt in self.samples if t + rtt >= since]
        return max(rtts) if rtts else 0.0, len(rtts)


def start_tallykv(binary, d):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
         "--appendonly", "no", "--threads", "2", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    return proc, port


def start_redis(binary, d):
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d],
        stdout=subprocess.DEVNULL,
    )
    return proc, port


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_up(port):
    for _ in range(300):
        try:
            Conn(port).call("PING")
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"server on {port} did not start")


def run_case(port, n, size, how):
    """Fills the set, deletes it as `how` says, and prints what the owning core went through."""
    c = Conn(port)
    c.call("SET", PROBE, "x")
    lazy = how == "UNLINK" or how.endswith("yes")
    if how.startswith("DEL"):
        c.call("CONFIG", "SET", "lazyfree-lazy-user-del", "yes" if lazy else "no")
    fill(c, n, size)
    assert int(c.call("SCARD", KEY)) == n
    full = c.info("used_memory")
    freed_before = c.info("lazyfreed_objects")
    probe = Probe(port)
    probe.start()
    time.sleep(0.5)
    t0 = time.perf_counter()
    assert c.call(b"UNLINK" if how == "UNLINK" else b"DEL", KEY) == b"1"
    reply = time.perf_counter() - t0
    # A lazy delete's memory is back when the background thread counts the set freed.
    while lazy and c.info("lazyfreed_objects") <= freed_before:
        if time.perf_counter() - t0 > 60:
            break
        # INFO costs the server some work: poll gently, so as not to load the core measured.
        time.sleep(0.01)
    back = time.perf_counter() - t0
    time.sleep(0.2)
    probe.stop.set()
    probe.join()
    worst, count = probe.worst_since(t0)
    after = c.info("used_memory")
    print(
        f"  {how:32} reply {reply * 1000:8.1f} ms | probe GET worst {worst * 1000:8.1f} ms "
        f"({count} GETs) | memory back after {back * 1000:8.1f} ms | used_memory "
        f"{full / 2**20:7.1f} -> {after / 2**20:7.1f} MiB",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/tallykv-server")
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--redis", default=None)
    ap.add_argument(
        "--member-bytes",
        type=int,
        default=0,
        help="pad members to this length (tallykv keeps members of up to 15 bytes inline; "
        "longer ones are an allocation each, which freeing must visit)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        proc, port = start_tallykv(args.bin, os.path.join(d, "tk"))
        try:
            wait_up(port)
            print(
                f"tallykv ({args.bin}), one set of {args.n} members "
                f"(member:<i>, padded to {args.member_bytes} bytes), --threads 2:"
            )
            for how in CASES:
                run_case(port, args.n, args.member_bytes, how)
        finally:
            proc.terminate()
            proc.wait()
        if args.redis:
            proc, port = start_redis(args.redis, d)
            try:
                wait_up(port)
                version = subprocess.run([args.redis, "--version"], capture_output=True, text=True).stdout.split()[2]
                print(f"{args.redis} {version}, the same set:")
                for how in CASES:
                    run_case(port, args.n, args.member_bytes, how)
            finally:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
