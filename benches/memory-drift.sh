#!/usr/bin/env bash
# What maxmemory is compared with (used_memory - mem_not_counted_for_evict) across rounds of
# writing and deleting the same 8000 keys of 1 KB: with nothing left stored, the figure should
# come back to where it started. Before the storage arena (BENCHMARKS.md, issue 4) fjall's
# memtable overhead stayed in it and it climbed by about 1 MB a round.
#
#   bash benches/memory-drift.sh [target/release/tallykv-server] [rounds]
set -euo pipefail
BIN=${1:-target/release/tallykv-server}
ROUNDS=${2:-5}
DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ulimit -l unlimited 2>/dev/null || true
"$BIN" --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --appendonly yes --loglevel warning &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
until redis-cli -p "$PORT" dbsize 2>/dev/null | grep -qx 0; do sleep 0.1; done
counted() {
  redis-cli -p "$PORT" info memory | tr -d '\r' | awk -F: '
    $1=="used_memory"{u=$2} $1=="mem_not_counted_for_evict"{n=$2}
    END{printf "counted %.2f MB (used %.2f MB, not counted %.2f MB)", (u-n)/1048576, u/1048576, n/1048576}'
}
echo "start: $(counted)"
for r in $(seq "$ROUNDS"); do
  redis-benchmark -p "$PORT" -q -n 8000 -r 8000 -d 1024 -t set -P 16 >/dev/null 2>&1
  redis-cli -p "$PORT" --scan --pattern 'key:*' | xargs -n 500 redis-cli -p "$PORT" del >/dev/null
  sleep 0.3
  echo "round $r: keys $(redis-cli -p "$PORT" dbsize), $(counted)"
done
