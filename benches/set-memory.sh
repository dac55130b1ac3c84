#!/usr/bin/env bash
# Memory per member of a million-member set (hashtable encoding), tallykv against
# redis-server: INFO memory used_memory before and after a pipelined fill of 1,000,000
# members, once with short strings ("member:N", 8-14 bytes) and once with integers.
# Persistence off on both: this measures the value in memory, not the disk.
#
#   bash benches/set-memory.sh [target/release/tallykv-server] [redis-server]
set -euo pipefail
BIN=${1:-target/release/tallykv-server}
REDIS=${2:-redis-server}
N=1000000
DIR=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# SADD commands of 1000 members each, in RESP, for redis-cli --pipe.
python3 - "$DIR" "$N" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
def cmd(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
for name, fmt in (("str", b"member:%d"), ("int", b"%d")):
    with open(f"{d}/{name}.resp", "wb") as f:
        for b in range(0, n, 1000):
            f.write(cmd([b"SADD", name.encode()] + [fmt % i for i in range(b, b + 1000)]))
PY
used() { redis-cli -p "$1" info memory | tr -d '\r' | awk -F: '$1=="used_memory"{print $2}'; }
measure() { # name port
  for kind in str int; do
    local before after
    before=$(used "$2")
    redis-cli -p "$2" --pipe < "$DIR/$kind.resp" > /dev/null
    after=$(used "$2")
    printf '%-14s %-3s %s members, %s\n' "$1" "$kind" "$(redis-cli -p "$2" scard "$kind")" \
      "$(awk -v b="$before" -v a="$after" -v n="$N" 'BEGIN{printf "%.1f bytes/member", (a-b)/n}')"
  done
}
ulimit -l unlimited 2>/dev/null || true
TP=$(free_port)
"$BIN" --port "$TP" --bind 127.0.0.1 --dir "$DIR/tk" --appendonly no --threads 1 --loglevel warning 2>/dev/null &
TPID=$!
RP=$(free_port)
"$REDIS" --port "$RP" --save '' --appendonly no --dir "$DIR" >/dev/null &
RPID=$!
trap 'kill $TPID $RPID 2>/dev/null; wait $TPID $RPID 2>/dev/null; rm -rf "$DIR"' EXIT
until redis-cli -p "$TP" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
until redis-cli -p "$RP" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
measure tallykv "$TP"
measure "$("$REDIS" --version | awk '{print $1"-"$3}')" "$RP"
