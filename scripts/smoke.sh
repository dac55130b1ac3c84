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
# The restart takes a fresh free port: while the server was down, another process on this
# shared machine may have been given the old one as the local port of an outgoing connection
# (CI once failed so, "Address already in use"). What must survive is the data dir.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --port "$port" --bind 127.0.0.1 --dir "$dir" --loglevel warning &
pid=$!
for _ in $(seq 100); do cli info persistence 2>/dev/null | grep -q "^loading:0" && break; sleep 0.1; done
expect hello get smoke:key
expect 11 get smoke:counter
expect v hget smoke:hash f
ttl=$(cli pttl smoke:ttl)
[ "$ttl" -gt 0 ] && [ "$ttl" -le 600000 ] || { echo "FAIL: TTL after restart: $ttl"; exit 1; }
kill $pid 2>/dev/null || true
for _ in $(seq 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done

# Cluster: three nodes on loopback, driven by redis-cli -c (redirects) and CLUSTER commands.
free_port() {
  python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p < 55000:
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", p + 10000)); b.close(); print(p); break
        except OSError: pass'
}
ports=()
for _ in 1 2 3; do ports+=("$(free_port)"); done
peers="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
# The bus authenticates the nodes on a shared secret, kept in a config file (not on the
# command line, where ps shows it).
(umask 077; printf 'cluster-secret %s\n' "$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
  >"$dir/cluster.conf")
cpids=()
for p in "${ports[@]}"; do
  mkdir -p "$dir/c$p"
  "$bin" "$dir/cluster.conf" --port "$p" --bind 127.0.0.1 --dir "$dir/c$p" --loglevel warning \
    --cluster-enabled yes --cluster-peers "$peers" &
  cpids+=($!)
done
# Stop the servers and wait for them before removing their dirs.
trap 'kill $pid "${cpids[@]}" 2>/dev/null || true; wait 2>/dev/null; rm -rf "$dir"' EXIT
for p in "${ports[@]}"; do
  for _ in $(seq 300); do
    redis-cli -p "$p" cluster info 2>/dev/null | grep -q "cluster_state:ok" && break
    sleep 0.1
  done
  redis-cli -p "$p" cluster info | grep -q "cluster_state:ok" || { echo "FAIL: node $p not ok"; exit 1; }
done
c() { redis-cli -c -p "${ports[0]}" "$@"; }
for i in $(seq 20); do
  [ "$(c set "smoke:$i" "v$i")" = OK ] || { echo "FAIL: cluster SET smoke:$i"; exit 1; }
done
for i in $(seq 20); do
  [ "$(redis-cli -c -p "${ports[2]}" get "smoke:$i")" = "v$i" ] || { echo "FAIL: cluster GET smoke:$i"; exit 1; }
done
[ "$(c incrby "{smoke}:n" 5)" = 5 ] || { echo "FAIL: cluster INCRBY"; exit 1; }
moved=$(redis-cli -p "${ports[0]}" get smoke:1; redis-cli -p "${ports[1]}" get smoke:1; redis-cli -p "${ports[2]}" get smoke:1)
echo "$moved" | grep -q "^MOVED " || { echo "FAIL: no MOVED from a non-leader: $moved"; exit 1; }
[ "$(redis-cli -p "${ports[0]}" cluster slots | grep -c "^127.0.0.1$")" -ge 6 ] || { echo "FAIL: CLUSTER SLOTS"; exit 1; }
check=$(redis-cli --cluster check "127.0.0.1:${ports[0]}" 2>&1)
echo "$check" | grep -q "All nodes agree about slots configuration" \
  && echo "$check" | grep -q "All 16384 slots covered" \
  || { echo "FAIL: redis-cli --cluster check:"; echo "$check"; exit 1; }
# FLUSHALL on every node (each flushes the groups it leads, replicas included) empties it.
redis-cli --cluster call "127.0.0.1:${ports[0]}" flushall >/dev/null 2>&1 \
  || { echo "FAIL: redis-cli --cluster call FLUSHALL"; exit 1; }
for p in "${ports[@]}"; do
  for _ in $(seq 50); do [ "$(redis-cli -p "$p" dbsize)" = 0 ] && break; sleep 0.1; done
  [ "$(redis-cli -p "$p" dbsize)" = 0 ] || { echo "FAIL: node $p holds keys after FLUSHALL"; exit 1; }
done
[ -z "$(c get smoke:1)" ] || { echo "FAIL: cluster GET after FLUSHALL"; exit 1; }
echo "1 passed, 0 failed: smoke (redis-cli + redis-benchmark + restart + cluster via redis-cli -c, --cluster check and --cluster call FLUSHALL)"
