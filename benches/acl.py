#!/usr/bin/env python3
"""What ACL checks cost: 100 users with key patterns against the unrestricted default user.

    python3 benches/acl.py [--bin target/release/tallykv-server] [--rounds 5] [--requests 200000]

One server (`appendonly no`, `--threads 2`) holds 100 ACL users, each with its own key
patterns, read-only and write-only patterns and a few command rules, as a payment service's
per-team users would have. redis-benchmark (50 clients, SET and GET, -P 1 and -P 16) runs
each workload twice in a row (who goes first alternates by round), as the `default` user
(unrestricted: no check beyond one flag test) and as the last user created (its keys match its last pattern, so every pattern is tried), and the
script prints each workload's median rps per user and the ratio restricted/default, with the
server's CPU µs per request (user + system, /proc/PID/stat), which moves less with the
machine's load than rps. The issue's target: the ratio ≥ 0.95.
"""

import argparse
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from binaries_ab import measured  # noqa: E402
from side_by_side import Server  # noqa: E402

USERS = 100
PASSWORD = "bench-password"


def user_rules(i):
    """Rules of user i: its own patterns first, then one `key:*` pattern redis-benchmark's
    keys match (the last of five), categories and commands."""
    return [
        "on", f">{PASSWORD}",
        f"~team{i}:*", f"~idem:{i}:*", f"%R~card:{i}:*", f"%W~vel:{{{i}}}:*", "~key:*",
        "+@read", "+@write", "+@connection", "-@dangerous", "-flushdb",
    ]


def argv_for(binary):
    def argv(port, d):
        return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--threads", "2",
                "--loglevel", "warning", "--appendonly", "no"]
    return argv


def bench(s, user, requests, pipeline, test):
    auth = [] if user == "default" else ["--user", user, "-a", PASSWORD]
    return measured(s, requests, pipeline, [*auth, "-t", test])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "tallykv-server"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200000)
    args = ap.parse_args()
    s = Server("tallykv", argv_for(os.path.abspath(args.bin)))
    try:
        for i in range(USERS):
            reply = s.cli("ACL", "SETUSER", f"team{i}", *user_rules(i)).strip()
            assert reply == "OK", reply
        restricted = f"team{USERS - 1}"
        runs = {"default": [], restricted: []}
        for r in range(args.rounds):
            rows = {user: {} for user in runs}
            # Each workload runs as one user right after the other, so the machine's drift
            # (other work on it) falls on both alike; who goes first alternates by round.
            order = list(runs) if r % 2 == 0 else list(runs)[::-1]
            for p in (1, 16):
                n = args.requests * (4 if p == 16 else 1)
                for test in ("set", "get"):
                    for user in order:
                        rps, cpu = bench(s, user, n, p, test)
                        rows[user][f"{test} -P{p} rps"] = rps
                        rows[user][f"{test} -P{p} CPU µs/request"] = cpu
            for user in runs:
                runs[user].append(rows[user])
                print(f"round {r + 1}: {user} {rows[user]}", file=sys.stderr)
    finally:
        s.stop()
    print(f"| workload | default | {restricted} (100 users) | ratio |")
    print("|---|---|---|---|")
    for w in runs["default"][0]:
        a = statistics.median(x[w] for x in runs["default"])
        b = statistics.median(x[w] for x in runs[restricted])
        print(f"| {w} | {a:,.2f} | {b:,.2f} | {b / a:.3f} |")


if __name__ == "__main__":
    main()
