#!/usr/bin/env bash
# Memory per list element, tallykv against redis-server: for each kind of element ("xxx" as
# redis-benchmark pushes, the integers 0..N as text, 16-byte strings) RPUSHes N elements onto
# one key through a pipeline (1000 elements a command) and reports INFO memory used_memory
# grown by the fill and given back by FLUSHALL, per element. Persistence is off on both
# (appendonly no / save '') so only the values are measured.
#
# Usage: scripts/list-memory.sh [path/to/tallykv-server]   (default target/release, else debug)
# Environment: N  elements per list (default 1000000)
# Needs python3, redis-cli; redis-server is measured when installed.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
BIN=${1:-}
if [[ -z $BIN ]]; then
    BIN=target/release/tallykv-server
    [[ -x $BIN ]] || BIN=target/debug/tallykv-server
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
used() { redis-cli -p "$1" INFO memory | tr -d '\r' | sed -n 's/^used_memory://p'; }
fill() {
    python3 - "$1" "$2" "$N" <<'EOF'
import sys
kind, key, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
out = sys.stdout.buffer
for start in range(0, n, 1000):
    end = min(n, start + 1000)
    parts = [b"*%d\r\n$5\r\nRPUSH\r\n$%d\r\n%s\r\n" % (end - start + 2, len(key), key)]
    for i in range(start, end):
        e = b"xxx" if kind == "xxx" else str(i).encode() if kind == "int" else b"%016d" % i
        parts.append(b"$%d\r\n%s\r\n" % (len(e), e))
    out.write(b"".join(parts))
EOF
}
measure() {
    local name=$1 port=$2 kind before after flushed
    for kind in xxx int s16; do
        redis-cli -p "$port" FLUSHALL >/dev/null
        before=$(used "$port")
        fill "$kind" "l:$kind" | redis-cli -p "$port" --pipe >/dev/null
        after=$(used "$port")
        redis-cli -p "$port" FLUSHALL >/dev/null
        flushed=$(used "$port")
        python3 -c "print(f'$name  $kind: fill {($after-$before)/$N:.3f} B/element, freed by FLUSHALL {($after-$flushed)/$N:.3f}')"
    done
}

DIR=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"' EXIT
wait_up() { for _ in $(seq 100); do redis-cli -p "$1" PING >/dev/null 2>&1 && return; sleep 0.1; done; exit 1; }

TPORT=$(free_port)
"$BIN" --port "$TPORT" --bind 127.0.0.1 --dir "$DIR" --threads 1 --appendonly no \
    --loglevel warning &
PIDS+=($!)
wait_up "$TPORT"
measure tallykv "$TPORT"
if command -v redis-server >/dev/null; then
    RPORT=$(free_port)
    redis-server --port "$RPORT" --save '' --appendonly no --dir "$DIR" >/dev/null &
    PIDS+=($!)
    wait_up "$RPORT"
    measure redis-server "$RPORT"
fi
