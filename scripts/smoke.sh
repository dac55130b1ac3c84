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
# PING answers while the data dir opens; wait until loading is over.
for _ in $(seq 100); do redis-cli -p "$port" info persistence 2>/dev/null | grep -q "^loading:0" && break; sleep 0.1; done

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

# Durability through the CLI: BGSAVE, SHUTDOWN, restart on the same dir, the data is back.
expect OK set smoke:ttl v px 600000
expect "Background saving started" bgsave
for _ in $(seq 100); do cli info persistence | grep -q "rdb_bgsave_in_progress:0" && break; sleep 0.1; done
cli shutdown >/dev/null 2>&1 || true
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null && { echo "FAIL: SHUTDOWN did not stop the server"; exit 1; }
[ -d "$dir/snapshot/tallykv.db" ] || { echo "FAIL: BGSAVE wrote no snapshot"; exit 1; }
"$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --loglevel warning &
pid=$!
for _ in $(seq 100); do cli info persistence 2>/dev/null | grep -q "^loading:0" && break; sleep 0.1; done
expect hello get smoke:key
expect 11 get smoke:counter
expect v hget smoke:hash f
ttl=$(cli pttl smoke:ttl)
[ "$ttl" -gt 0 ] && [ "$ttl" -le 600000 ] || { echo "FAIL: TTL after restart: $ttl"; exit 1; }
echo "1 passed, 0 failed: smoke (redis-cli + redis-benchmark + restart)"
