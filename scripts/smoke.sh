#!/usr/bin/env bash
# Starts tallykv-server on a free port and drives it with redis-cli and redis-benchmark.
# Usage: scripts/smoke.sh [path/to/tallykv-server]
set -euo pipefail
bin=${1:-target/release/tallykv-server}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
"$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --loglevel warning &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

cli() { redis-cli -p "$port" "$@"; }
expect() { local want=$1; shift; local got; got=$(cli "$@"); [ "$got" = "$want" ] || { echo "FAIL: $* -> '$got' (want '$want')"; exit 1; }; }

expect PONG ping
expect OK set smoke:key hello
expect hello get smoke:key
expect 11 incrby smoke:counter 11
expect 1 hset smoke:hash f v
expect v hget smoke:hash f
expect "ERR unknown command 'nosuch', with args beginning with: " nosuch
bench=$(redis-benchmark -p "$port" -q -n 20000 -c 20 -t set,get,incr,hset -P 16 2>&1)
echo "$bench" | tr '\r' '\n' | grep "requests per second"
[ "$(echo "$bench" | tr '\r' '\n' | grep -c "requests per second")" -eq 4 ] || { echo "FAIL: redis-benchmark"; exit 1; }
echo "1 passed, 0 failed: smoke (redis-cli + redis-benchmark)"
