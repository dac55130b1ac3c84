#!/bin/sh
# The client side of scripts/compose-check.sh, run inside the compose network (the "client"
# service) because cluster redirects name peers as tallykv1:6379 ..., which only Docker's
# embedded DNS resolves. Plain POSIX sh: the image has dash, redis-cli, timeout and sleep.
#
#   cluster-client.sh write [N]   N iterations (default 100000) of "SET k:<i> <i>" and
#                                 "INCR c:<i mod 8>", one line per write:
#                                   "set k:<i> <i>" / "incr c:<j> <reply>" when acknowledged,
#                                   "nack <command> <key> <what happened>" otherwise
#   cluster-client.sh read        for each key name on stdin prints "<key> <value>" (an empty
#                                 value for a missing key), or "<key> ERROR <what happened>"
#
# Every command goes through `redis-cli -c`, which follows MOVED redirects, starting at seed
# node tallykv1, 2 or 3 in turn, so a stopped node only fails the commands sent to it first.
# Each command gets at most CMD_TIMEOUT seconds (default 5): a connection to a container
# that was killed gets no reset and would otherwise wait forever.
set -u
set -f # no globbing: error messages are word-split onto one line below

cmd_timeout=${CMD_TIMEOUT:-5}

# cli N ARGS...: runs one command through seed tallykv<N mod 3 + 1> and prints the reply's
# last line (redis-cli may print a redirect note before it). Fails on no reply or an error
# reply, printing what happened on one line.
cli() {
  host=tallykv$(($1 % 3 + 1))
  shift
  if out=$(timeout "$cmd_timeout" redis-cli -c -e -h "$host" -p 6379 "$@" 2>&1); then
    printf '%s\n' "${out##*
}"
  else
    rc=$?
    [ "$rc" -eq 124 ] && out="no reply within ${cmd_timeout}s"
    # shellcheck disable=SC2086 # split on purpose: "$*" joins the message's lines
    set -- $out
    printf 'via %s: %s\n' "$host" "$*"
    return 1
  fi
}

case "${1:-}" in
  write)
    max=${2:-100000}
    i=1
    while [ "$i" -le "$max" ]; do
      # One attempt per write: a retried INCR whose first attempt was applied but not
      # acknowledged would count twice. Only a reply is an acknowledgement.
      if reply=$(cli "$i" SET "k:$i" "$i") && [ "$reply" = OK ]; then
        echo "set k:$i $i"
      else
        echo "nack set k:$i $reply"
      fi
      j=$((i % 8))
      if reply=$(cli "$i" INCR "c:$j"); then
        case "$reply" in
          '' | *[!0-9]*) echo "nack incr c:$j unexpected reply $reply" ;;
          *) echo "incr c:$j $reply" ;;
        esac
      else
        echo "nack incr c:$j $reply"
      fi
      i=$((i + 1))
    done
    ;;
  read)
    # A read may meet an election or a stopped seed: try each seed, then pause and retry.
    while read -r key; do
      tries=0
      until value=$(cli "$tries" GET "$key"); do
        tries=$((tries + 1))
        [ "$tries" -ge 9 ] && break
        [ $((tries % 3)) -eq 0 ] && sleep 1
      done
      if [ "$tries" -ge 9 ]; then
        echo "$key ERROR $value"
      else
        echo "$key $value"
      fi
    done
    ;;
  *)
    echo "usage: $0 write [N] | read" >&2
    exit 2
    ;;
esac
