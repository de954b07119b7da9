#!/usr/bin/env bash
# Runs a Keycloak server for the tests and ties its life to the caller:
#
#   test/keycloak/run.sh <keycloak-home> <kc.sh arguments…>   (stdin: a pipe from the caller)
#
# Keycloak runs until the caller closes stdin — or dies, which closes it too —
# then gets SIGTERM, and SIGKILL (the whole process group) if it is not gone
# within 30 s. So a test binary killed by a timeout leaves no Keycloak behind.
# The caller should start this script in its own process group.
set -u
home="$1"
shift

exec 3<&0 # keep the caller's pipe: background jobs get /dev/null as stdin
"$home/bin/kc.sh" "$@" </dev/null 3<&- &
kc=$!

watch() {
  # Returns at EOF: the caller closed the pipe or exited. Its output goes
  # nowhere: it must not hold the caller's output pipe open (below).
  cat >/dev/null 2>&1
  kill -TERM "$kc" 2>/dev/null || exit 0
  for _ in $(seq 1 300); do
    kill -0 "$kc" 2>/dev/null || exit 0
    sleep 0.1
  done
  echo "keycloak/run: no exit 30 s after SIGTERM; killing process group $$" >&2
  kill -KILL -- "-$$" 2>/dev/null
}
watch <&3 &
watcher=$!
exec 3<&-

wait "$kc"
status=$?
# Keycloak is gone (it exited by itself, or the watcher stopped it): the
# watcher goes too, so that nothing of ours holds the caller's output open
# and the caller sees the exit, and every line before it, at once.
kill "$watcher" 2>/dev/null
exit "$status"
