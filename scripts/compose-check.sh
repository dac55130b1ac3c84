#!/usr/bin/env bash
# Acknowledged writes survive losing a node, on the three-node cluster of docker-compose.yml:
# builds tallykv:local, starts the cluster, runs a writer inside the compose network that logs
# every acknowledged SET and INCR, kills tallykv2 (SIGKILL) halfway through, keeps writing,
# then checks that every acknowledged write is there; then restarts tallykv2 and checks again.
# Always ends with `compose down -v`.
#
# Usage: scripts/compose-check.sh
# Environment: CHECK_TIMEOUT  seconds allowed from `up` to the end (default 300, generous: a
#                             run took 110 s on a busy 2-core machine; the image build, which
#                             may compile the release binary, is not counted)
#              CHECK_WRITES   acknowledged writes wanted before the kill, and again after it
#                             (default 200)
#              CHECK_PROJECT  compose project name (default tallykv-check)
#              TALLYKV_IMAGE  image tag to build and run (default tallykv:local)
# Exits 0 without doing anything when no Docker engine answers (CI runs it only where one is).
# On a failure it prints what it knows: each node's state, restarts, health checks and the
# last lines of its log (all of it in a file it names).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "compose-check: no Docker engine, skipped"
  exit 0
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "compose-check: FAIL: a Docker engine but neither 'docker compose' nor docker-compose" >&2
  exit 1
fi

timeout_s=${CHECK_TIMEOUT:-300}
want=${CHECK_WRITES:-200}
project=${CHECK_PROJECT:-tallykv-check}
export TALLYKV_IMAGE=${TALLYKV_IMAGE:-tallykv:local}
dc() { "${compose[@]}" -p "$project" -f docker-compose.yml "$@"; }
work=$(mktemp -d)
# The nodes' cluster-secret, fresh for this run: readable by the nodes' uids (10001-10003)
# through the mount, and by nobody else on the host, the work dir being private.
printf 'cluster-secret %s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
  >"$work/cluster-secret.conf"
chmod 644 "$work/cluster-secret.conf"
export TALLYKV_CLUSTER_SECRET_FILE=$work/cluster-secret.conf
writer=$project-writer
writer_pid=

# diagnose: what a failed run leaves to go on, on stderr: the containers (compose ps), each
# node's state, exit code, restarts and last health checks, and the last lines of each
# node's log; the full logs go to a file that outlives the run (they go with `down`).
diagnose() {
  {
    echo "compose-check: the containers:"
    dc ps 2>&1 || true
    local n id
    for n in 1 2 3; do
      id=$(dc ps -q "tallykv$n" 2>/dev/null) || id=
      if [ -z "$id" ]; then
        echo "tallykv$n: no container"
        continue
      fi
      docker inspect -f "tallykv$n: {{.State.Status}}, exit code {{.State.ExitCode}}, \
{{.RestartCount}} restarts, started {{.State.StartedAt}}{{if .State.Health}}, health \
{{.State.Health.Status}}, failing streak {{.State.Health.FailingStreak}}{{range .State.Health.Log}}
  health check at {{.Start}}: exit {{.ExitCode}} {{printf \"%q\" .Output}}{{end}}{{end}}" "$id" \
        2>&1 || true
    done
  } >&2
  local logs
  logs=$(mktemp "${TMPDIR:-/tmp}/tallykv-compose-check.XXXXXX.log")
  dc logs --no-color --timestamps >"$logs" 2>&1 || true
  echo "compose-check: the nodes' logs are in $logs; the last lines of each:" >&2
  for n in 1 2 3; do
    grep "^tallykv${n}[-_]" "$logs" | tail -n 15 >&2
  done
}

# stop_writer: ends the background writer. Its container may not exist yet (compose run
# takes seconds to create it, and a run that fails right after starting the writer gets
# here first): removing it once and waiting let such a writer run its 100000 iterations
# with the check waiting for it. So it is removed until the job ends, and the job's own
# processes are stopped if that takes too long.
stop_writer() {
  local tries=0
  while kill -0 "$writer_pid" 2>/dev/null && [ "$tries" -lt 30 ]; do
    docker rm -fv "$writer" >/dev/null 2>&1 || true
    sleep 1
    tries=$((tries + 1))
  done
  if kill -0 "$writer_pid" 2>/dev/null; then
    pkill -P "$writer_pid" 2>/dev/null || true
    kill "$writer_pid" 2>/dev/null || true
  fi
  wait "$writer_pid" 2>/dev/null || true
  docker rm -fv "$writer" >/dev/null 2>&1 || true
  writer_pid=
}

cleanup() {
  local rc=$?
  if [ -n "$writer_pid" ]; then
    stop_writer
  fi
  if [ "$rc" -ne 0 ]; then
    diagnose
  fi
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
  echo "compose-check: FAIL: $*" >&2
  exit 1
}

docker/build-image.sh

# Unlimited locked memory where the engine can grant it, else the most it can (see the
# ulimits in docker-compose.yml); an explicit TALLYKV_MEMLOCK wins.
if [ -z "${TALLYKV_MEMLOCK:-}" ] &&
  ! docker run --rm --ulimit memlock=-1:-1 --entrypoint /bin/sh "$TALLYKV_IMAGE" -c : \
    >/dev/null 2>&1; then
  kib=$(docker run --rm --entrypoint /bin/sh "$TALLYKV_IMAGE" -c 'ulimit -H -l')
  if ! [[ $kib =~ ^[0-9]+$ ]] || [ "$kib" -lt 512 ]; then
    fail "the engine grants neither unlimited nor 512 KiB of locked memory (got '$kib')"
  fi
  export TALLYKV_MEMLOCK=$((kib * 1024))
  echo "compose-check: the engine cannot lift the memlock limit; using ${kib} KiB"
fi
# Free host ports: the published client ports are not used here, and fixed ones may be taken.
export TALLYKV1_PORT='' TALLYKV2_PORT='' TALLYKV3_PORT=''

start=$SECONDS
deadline=$((SECONDS + timeout_s))
left() { echo $((deadline - SECONDS > 0 ? deadline - SECONDS : 1)); }
past_deadline() { [ "$SECONDS" -ge "$deadline" ]; }

# A leftover project from an interrupted run would keep its volumes: start clean.
dc down -v --remove-orphans >/dev/null 2>&1 || true
timeout "$(left)" "${compose[@]}" -p "$project" -f docker-compose.yml up -d \
  tallykv1 tallykv2 tallykv3 >"$work/up.log" 2>&1 || fail "compose up: $(tail -5 "$work/up.log")"

# health NODE: the node container's health status ("healthy", "starting", ...).
health() {
  local id
  id=$(dc ps -q "$1")
  [ -n "$id" ] && docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id"
}
wait_healthy() {
  local node
  for node in "$@"; do
    until [ "$(health "$node")" = healthy ]; do
      past_deadline && fail "$node not healthy after ${timeout_s}s (health: $(health "$node"))"
      sleep 1
    done
  done
}
# restarts: each node's restart count (a start stuck long enough is restarted: see
# docker-compose.yml), for the record.
restarts() {
  local n id out=
  for n in 1 2 3; do
    id=$(dc ps -q "tallykv$n")
    out="$out tallykv$n $(docker inspect -f '{{.RestartCount}}' "$id" 2>/dev/null || echo '?'),"
  done
  echo "restarts:${out%,}"
}
wait_healthy tallykv1 tallykv2 tallykv3
echo "compose-check: 3 nodes healthy after $((SECONDS - start))s ($(restarts))"

# The writer logs one line per write to acks.log on this side: "set k:<i> <i>" and
# "incr c:<j> <reply>" for acknowledged writes, "nack ..." for the others. Only whole,
# well-formed lines count (a line cut short by the writer's end is ignored).
dc run --rm -T --name "$writer" client /check/cluster-client.sh write \
  </dev/null >"$work/acks.log" 2>"$work/writer.err" &
writer_pid=$!

ack_lines='^(set k:[0-9]+|incr c:[0-9]+) [0-9]+$'
acks() { grep -Ec "$ack_lines" "$work/acks.log" || true; }
nacks() { grep -c '^nack ' "$work/acks.log" || true; }
wait_acks() {
  until [ "$(acks)" -ge "$1" ]; do
    past_deadline && fail "only $(acks) acknowledged writes, wanted $1 ($2); $(nacks) failed,
the last ones: $(grep '^nack ' "$work/acks.log" | tail -5)"
    kill -0 "$writer_pid" 2>/dev/null || fail "the writer stopped: $(tail -5 "$work/writer.err")"
    sleep 0.5
  done
}
wait_acks "$want" "with 3 nodes"
dc kill -s SIGKILL tallykv2 >/dev/null 2>&1 || fail "kill tallykv2"
before=$(acks)
echo "compose-check: killed tallykv2 after $before acknowledged writes"
wait_acks $((before + want)) "after killing tallykv2"
stop_writer
echo "compose-check: $(acks) acknowledged writes, $(($(acks) - before)) of them with tallykv2 down;" \
  "$(nacks) failed"

# expected: from the acknowledged writes, the keys to read and the least value each must
# have. A SET k:<i> <i> must read back exactly; an INCR counter must be at least its number
# of acknowledged increments and its highest acknowledged reply, and two acknowledgements
# with the same reply mean an increment was lost.
grep -E "$ack_lines" "$work/acks.log" | awk '
  $1 == "set" { exact[$2] = $3 }
  $1 == "incr" {
    n[$2]++
    if (seen[$2, $3]++) { print "DUP " $2 " " $3; next }
    if ($3 + 0 > max[$2]) max[$2] = $3 + 0
  }
  END {
    for (k in exact) print "EQ " k " " exact[k]
    for (k in n) print "GE " k " " (n[k] > max[k] ? n[k] : max[k])
  }' | sort >"$work/expected"
if grep '^DUP ' "$work/expected" >&2; then
  fail "the same INCR reply was acknowledged twice: an acknowledged increment was lost"
fi

# verify WHEN: reads every key (through the client service, inside the network) and checks
# it against expected; prints what is wrong. Returns 2 when some read got no answer (worth
# retrying: an election may be in progress), 1 when a read answered a wrong value.
verify() {
  awk '{ print $2 }' "$work/expected" |
    timeout "$(left)" "${compose[@]}" -p "$project" -f docker-compose.yml run --rm -T client \
      /check/cluster-client.sh read >"$work/values" 2>"$work/read.err" || {
    echo "reading back ($1) failed: $(tail -5 "$work/read.err")"
    return 2
  }
  local unanswered bad
  unanswered=$(awk '$2 == "ERROR"' "$work/values" | wc -l)
  if [ "$unanswered" -gt 0 ]; then
    echo "$unanswered reads ($1) got no answer, e.g. $(awk '$2 == "ERROR"' "$work/values" | head -1)"
    return 2
  fi
  bad=$(awk '
    NR == FNR { got[$1] = $2; seen[$1] = 1; next }
    !($2 in seen) { print $2 ": no reply"; next }
    $1 == "EQ" && got[$2] != $3 { print $2 ": got \"" got[$2] "\", acknowledged " $3 }
    $1 == "GE" && got[$2] + 0 < $3 + 0 { print $2 ": got \"" got[$2] "\", at least " $3 " acknowledged" }
  ' "$work/values" "$work/expected")
  if [ -n "$bad" ]; then
    echo "acknowledged writes missing ($1):"
    echo "$bad" | head -20
    return 1
  fi
  echo "compose-check: all $(wc -l <"$work/expected") keys hold every acknowledged write ($1)"
}

# verify_until WHEN: verify, retried until the deadline while reads go unanswered (right
# after a node stops or comes back an election may be in progress); a wrong value fails.
verify_until() {
  local rc
  while true; do
    rc=0
    verify "$1" >"$work/verify.out" || rc=$?
    [ "$rc" -eq 0 ] && break
    if [ "$rc" -ne 2 ] || past_deadline; then
      fail "$(cat "$work/verify.out")"
    fi
    sleep 2
  done
  cat "$work/verify.out"
}

verify_until "tallykv2 down"
dc start tallykv2 >/dev/null 2>&1 || fail "restart tallykv2"
wait_healthy tallykv2
verify_until "tallykv2 restarted"
echo "compose-check: OK in $((SECONDS - start))s ($(restarts))"
