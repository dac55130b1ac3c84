#!/usr/bin/env python3
"""TLS side by side: tallykv vs Debian's redis-server, both serving TLS only, same client.

Makes a CA, a server certificate for 127.0.0.1 and a client certificate with the openssl
CLI, starts each server with `port 0` and a `tls-port` (mutual TLS: `tls-auth-clients yes`,
as a PCI deployment runs it; `--no-client-certs` for `tls-auth-clients no`), persistence off
on both, then runs redis-benchmark --tls:

  * SET and GET, -P 1 and -P 16, 50 clients, 100k random keys;
  * handshakes: `-t ping -k 0`, so every request is a new TLS connection + PING + close.

Prints a markdown table with the ratios tallykv/redis. Run from the repository root after
`cargo build --release --bin tallykv-server`:

    python3 benches/tls.py [--requests 500000] [--handshakes 20000] [--threads 2] [--rounds 1]
"""

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from side_by_side import free_port  # noqa: E402

BIN = "target/release/tallykv-server"


def make_certs(d):
    """CA, server (127.0.0.1) and client certificates, P-256 keys, in directory d."""
    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench-ca")
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    with open(os.path.join(d, "client.ext"), "w") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=bench-{name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


class Server:
    def __init__(self, name, argv, certs, client_certs):
        self.name = name
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-tls-")
        self.certs = certs
        self.client_certs = client_certs
        self.proc = subprocess.Popen(argv(self.port, self.dir), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.proc.returncode}")
            r = subprocess.run(["redis-cli", *self.tls_args(), "-p", str(self.port), "ping"],
                               capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer PING over TLS")

    def tls_args(self):
        args = ["--tls", "--cacert", os.path.join(self.certs, "ca.crt")]
        if self.client_certs:
            args += ["--cert", os.path.join(self.certs, "client.crt"),
                     "--key", os.path.join(self.certs, "client.key")]
        return args

    def bench(self, *args):
        cmd = ["redis-benchmark", *self.tls_args(), "-p", str(self.port), "-c", "50", "--csv", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return {row["test"]: float(row["rps"]) for row in csv.DictReader(io.StringIO(out))}

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def tls_directives(port, certs, auth):
    return ["--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", os.path.join(certs, "server.crt"),
            "--tls-key-file", os.path.join(certs, "server.key"),
            "--tls-ca-cert-file", os.path.join(certs, "ca.crt"),
            "--tls-auth-clients", auth]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500_000)
    ap.add_argument("--handshakes", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--no-client-certs", action="store_true")
    ap.add_argument("--bin", default=BIN)
    args = ap.parse_args()
    if not os.path.exists(args.bin):
        sys.exit("build first: cargo build --release --bin tallykv-server")
    certs = tempfile.mkdtemp(prefix="bench-certs-")
    make_certs(certs)
    auth = "no" if args.no_client_certs else "yes"
    client_certs = not args.no_client_certs
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    servers = [
        (f"redis-server {version}", lambda p, d: ["redis-server", *tls_directives(p, certs, auth),
                                                   "--save", "", "--appendonly", "no", "--dir", d,
                                                   "--protected-mode", "no"]),
        (f"tallykv --threads {args.threads}", lambda p, d: [args.bin, *tls_directives(p, certs, auth),
                                                            "--appendonly", "no", "--dir", d,
                                                            "--threads", str(args.threads),
                                                            "--loglevel", "warning"]),
    ]
    lines = [(f"SET -P {p}", ["-n", str(args.requests), "-r", "100000", "-P", str(p), "-t", "set"], "SET")
             for p in (1, 16)]
    lines += [(f"GET -P {p}", ["-n", str(args.requests), "-r", "100000", "-P", str(p), "-t", "get"], "GET")
              for p in (1, 16)]
    lines.append(("handshake + PING + close", ["-n", str(args.handshakes), "-k", "0", "-t", "ping"],
                  "PING_MBULK"))
    results = {}  # (server, line) -> [rps per round]
    for r in range(args.rounds):
        for name, argv in servers:
            s = Server(name, argv, certs, client_certs)
            try:
                for label, bench_args, test in lines:
                    rps = s.bench(*bench_args)[test]
                    results.setdefault((name, label), []).append(rps)
                    print(f"round {r + 1} {name} {label}: {rps:.0f} rps", flush=True)
            finally:
                s.stop()
    shutil.rmtree(certs, ignore_errors=True)

    base, mine = servers[0][0], servers[1][0]
    print()
    print(f"| test (tls-auth-clients {auth}) | {base} rps | {mine} rps | ratio |")
    print("|---|---|---|---|")
    for label, _, _ in lines:
        b = sorted(results[(base, label)])[len(results[(base, label)]) // 2]
        m = sorted(results[(mine, label)])[len(results[(mine, label)]) // 2]
        print(f"| {label} | {b:.0f} | {m:.0f} | {m / b:.2f} |")


if __name__ == "__main__":
    main()
