#!/usr/bin/env bash
# Stop the Keystone that start.sh started from this state dir. Signals only
# the pid in its pid file, after checking that the pid is still our gunicorn.
# Idempotent. Reads the same AUTHMW_KEYSTONE_HOME / AUTHMW_KEYSTONE_STATE_DIR
# as start.sh. AUTHMW_KEYSTONE_PURGE=1 also deletes the state (db, keys, logs),
# not the venv. AUTHMW_KEYSTONE_FAST_STOP=1 kills the server at once (SIGKILL to
# its process group: a crash, as outage tests want it) instead of a graceful
# stop (about 3 s).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
KS_HOME="$(abspath "${AUTHMW_KEYSTONE_HOME:-$REPO/.cache/keystone}")"
STATE="$(abspath "${AUTHMW_KEYSTONE_STATE_DIR:-$KS_HOME/state}")"
PIDFILE="$STATE/keystone.pid"

log() { echo "[keystone/stop] $*" >&2; }

[[ -d "$STATE" ]] || { log "no state dir $STATE"; exit 0; }
exec 9>"$STATE/.lock"
flock -w 300 9 || { log "ERROR: could not lock $STATE/.lock"; exit 1; }

is_ours() { # $1 = pid; a zombie has an empty cmdline, so it does not count
  kill -0 "$1" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'gunicorn.*keystone_wsgi'
}

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [[ "$pid" =~ ^[0-9]+$ ]] && is_ours "$pid"; then
  workers="$(ps -o pid= --ppid "$pid" || true)"
  if [[ "${AUTHMW_KEYSTONE_FAST_STOP:-0}" == 1 ]]; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" $workers 2>/dev/null || true
  else
    kill -TERM "$pid"  # gunicorn master: graceful stop, takes its workers down
  fi
  for _ in $(seq 1 100); do is_ours "$pid" || break; sleep 0.1; done
  if is_ours "$pid"; then
    log "pid $pid ignored SIGTERM for 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Return only once the workers are gone too (port free, db closed).
  for w in $workers; do
    for _ in $(seq 1 50); do is_ours "$w" || break; sleep 0.1; done
    ! is_ours "$w" || kill -KILL "$w" 2>/dev/null || true
  done
  # A dying process loses its cmdline before its sockets: wait for the port too.
  port="$(cat "$STATE/keystone.port" 2>/dev/null || true)"
  if [[ "$port" =~ ^[0-9]+$ ]]; then
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break; sleep 0.05; done
  fi
  log "stopped keystone (pid $pid)"
else
  log "keystone not running (no live pid in $PIDFILE)"
fi
rm -f "$PIDFILE" "$STATE/keystone.owner"

if [[ "${AUTHMW_KEYSTONE_PURGE:-0}" == 1 ]]; then
  exec 9>&-
  rm -rf "$STATE"
  log "removed $STATE"
fi
