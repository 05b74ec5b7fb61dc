#!/usr/bin/env bash
# Start a real OpenStack Keystone for the test suite: pinned keystone +
# gunicorn in their own virtualenv, SQLite, fernet tokens, listening on
# 127.0.0.1 only. Idempotent: builds the venv and the state only when missing,
# re-runs db_sync/bootstrap only when the pins, the URL or the admin password
# changed, and when the server already runs from this state dir just prints
# its URL. Concurrent starts sharing one state dir are serialised by flock.
#
#   KS_URL=$(bash scripts/keystone/start.sh)   # stdout: http://127.0.0.1:PORT/v3
#   bash scripts/keystone/start.sh --install-only   # only build the venv
#
# Progress goes to stderr. Environment (all optional):
#   AUTHMW_KEYSTONE_HOME        base dir                         [<repo>/.cache/keystone]
#   AUTHMW_KEYSTONE_VENV        virtualenv (built once, reused)  [$HOME/venv]
#   AUTHMW_KEYSTONE_STATE_DIR   conf, db, keys, logs, pid        [$HOME/state]
#   AUTHMW_KEYSTONE_PORT        port on 127.0.0.1. Unset: the port this state dir
#                               used last, else 35357, else (if busy) a free one
#   AUTHMW_KEYSTONE_ADMIN_PASSWORD  password of 'admin'          [admin-secret]
#   AUTHMW_KEYSTONE_WORKERS     gunicorn worker processes        [2]
#   AUTHMW_KEYSTONE_TOKEN_EXPIRATION  token lifetime, seconds    [3600]
#   AUTHMW_KEYSTONE_CACHE       1 = Keystone's own in-memory cache (forces 1 worker) [0]
#   AUTHMW_KEYSTONE_START_TIMEOUT  seconds to wait for /v3       [90]
#   AUTHMW_KEYSTONE_PYTHON      interpreter for the venv, >= 3.11 [python3]
#   AUTHMW_KEYSTONE_CLONE_FROM  state dir of another (seeded) Keystone: a new state
#                               dir starts as a copy of its db and keys, so the same
#                               users exist and the same tokens are valid (bootstrap
#                               is skipped: catalog endpoints keep the source's URL)
#   AUTHMW_KEYSTONE_OWNER       tag written to <state>/keystone.owner when this call
#                               starts the server (the test suite writes "pytest")
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"

# Pinned versions; every other dependency is pinned by constraints.txt.
KEYSTONE_VERSION=30.0.0
GUNICORN_VERSION=27.0.1

abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }

KS_HOME="$(abspath "${AUTHMW_KEYSTONE_HOME:-$REPO/.cache/keystone}")"
VENV="$(abspath "${AUTHMW_KEYSTONE_VENV:-$KS_HOME/venv}")"
STATE="$(abspath "${AUTHMW_KEYSTONE_STATE_DIR:-$KS_HOME/state}")"
ADMIN_PASSWORD="${AUTHMW_KEYSTONE_ADMIN_PASSWORD:-admin-secret}"
WORKERS="${AUTHMW_KEYSTONE_WORKERS:-2}"
TOKEN_EXPIRATION="${AUTHMW_KEYSTONE_TOKEN_EXPIRATION:-3600}"
CACHE="${AUTHMW_KEYSTONE_CACHE:-0}"
START_TIMEOUT="${AUTHMW_KEYSTONE_START_TIMEOUT:-90}"
PYTHON="${AUTHMW_KEYSTONE_PYTHON:-python3}"
CLONE_FROM="${AUTHMW_KEYSTONE_CLONE_FROM:-}"
DEFAULT_PORT=35357

CONF="$STATE/keystone.conf"
PIDFILE="$STATE/keystone.pid"
LOG="$STATE/log"

log() { echo "[keystone/start] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- (a) virtualenv, built once -------------------------------------------------
PINS="keystone==$KEYSTONE_VERSION gunicorn==$GUNICORN_VERSION constraints=$(sha256sum "$SCRIPT_DIR/constraints.txt" | cut -c1-16)"
build_venv() {
  mkdir -p "$(dirname "$VENV")"
  exec 8>"$VENV.lock"  # concurrent builds of one venv wait for each other
  flock -w 600 8 || die "could not lock $VENV.lock"
  if [[ -x "$VENV/bin/gunicorn" && "$(cat "$VENV/.keystone-pins" 2>/dev/null)" == "$PINS" ]]; then
    exec 8>&-
    return 0
  fi
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "keystone $KEYSTONE_VERSION needs Python >= 3.11 (set AUTHMW_KEYSTONE_PYTHON)"
  log "installing keystone $KEYSTONE_VERSION + gunicorn $GUNICORN_VERSION into $VENV (about 40 s, once)"
  local t0=$SECONDS
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -qq --disable-pip-version-check \
    -c "$SCRIPT_DIR/constraints.txt" "keystone==$KEYSTONE_VERSION" "gunicorn==$GUNICORN_VERSION" >&2 ||
    die "pip could not install keystone into $VENV"
  echo "$PINS" >"$VENV/.keystone-pins"
  log "venv ready in $((SECONDS - t0))s"
  exec 8>&-
}
build_venv
if [[ "${1:-}" == "--install-only" ]]; then
  exit 0
fi

mkdir -p "$STATE" "$LOG"
exec 9>"$STATE/.lock"  # serialise starts and stops sharing this state dir
flock -w 300 9 || die "could not lock $STATE/.lock"

# Is the pid in $PIDFILE our gunicorn (guards against a recycled pid)?
running_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'gunicorn.*keystone_wsgi' || return 1
  echo "$pid"
}

http_get_ok() { # 0 if GET $1 answers 200
  "$VENV/bin/python" - "$1" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- already running? ----------------------------------------------------------
SETTINGS="workers=$WORKERS cache=$CACHE expiration=$TOKEN_EXPIRATION admin=$(sha256sum <<<"$ADMIN_PASSWORD" | cut -c1-12)"
if pid="$(running_pid)"; then
  url="$(cat "$STATE/keystone.url")"
  [[ "$(cat "$STATE/keystone.settings" 2>/dev/null)" == "$SETTINGS" ]] ||
    die "keystone already running (pid $pid) with other settings ($(cat "$STATE/keystone.settings" 2>/dev/null)); run scripts/keystone/stop.sh first"
  [[ -z "${AUTHMW_KEYSTONE_PORT:-}" || "$url" == "http://127.0.0.1:$AUTHMW_KEYSTONE_PORT/v3" ]] ||
    die "keystone already running (pid $pid) at $url, not on port $AUTHMW_KEYSTONE_PORT; run scripts/keystone/stop.sh first"
  http_get_ok "$url" || die "keystone pid $pid is running but $url does not answer; see $LOG/"
  log "already running (pid $pid)"
  echo "$url"
  exit 0
fi
rm -f "$PIDFILE" "$STATE/keystone.owner"

# --- port ------------------------------------------------------------------------
if [[ -n "${AUTHMW_KEYSTONE_PORT:-}" ]]; then
  PORT="$AUTHMW_KEYSTONE_PORT"
  ! port_busy "$PORT" || die "port $PORT on 127.0.0.1 is already in use by another process (set AUTHMW_KEYSTONE_PORT)"
else
  PORT="$(cat "$STATE/keystone.port" 2>/dev/null || echo "$DEFAULT_PORT")"
  if port_busy "$PORT"; then
    PORT="$(free_port)"
    log "port in use; taking free port $PORT"
  fi
fi
echo "$PORT" >"$STATE/keystone.port"
URL="http://127.0.0.1:$PORT/v3"

# --- (b) configuration, database, keys, bootstrap -------------------------------
if [[ -n "$CLONE_FROM" && ! -f "$STATE/keystone.db" ]]; then
  [[ -f "$CLONE_FROM/keystone.db" ]] || die "AUTHMW_KEYSTONE_CLONE_FROM=$CLONE_FROM has no keystone.db"
  log "copying db and keys from $CLONE_FROM"
  # sqlite's online backup: consistent even while the source server writes.
  "$VENV/bin/python" - "$CLONE_FROM/keystone.db" "$STATE/keystone.db" <<'EOF'
import sqlite3, sys
src = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=30)
dst = sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
src.close()
EOF
  rm -rf "$STATE/fernet-keys" "$STATE/credential-keys"
  cp -a "$CLONE_FROM/fernet-keys" "$CLONE_FROM/credential-keys" "$STATE/"
  [[ ! -f "$CLONE_FROM/seed.json" ]] || cp "$CLONE_FROM/seed.json" "$STATE/seed.json"
  CLONED=1
fi

mkdir -p "$STATE/fernet-keys" "$STATE/credential-keys"
chmod 700 "$STATE/fernet-keys" "$STATE/credential-keys"  # else a warning per request
# Keystone's default is [cache] enabled=true with the null backend (request-local
# caching). Never write enabled=false: validation then runs ~10x more SQL.
CACHE_CONF="# request-local caching only (Keystone's default)"
if [[ "$CACHE" == 1 ]]; then
  # dogpile's memory backend is per process: with 2+ workers a token revoked
  # through one worker would stay valid in the others.
  WORKERS=1
  CACHE_CONF="backend = dogpile.cache.memory"
fi
cat >"$CONF.new" <<EOF
# Generated by scripts/keystone/start.sh; edits are overwritten.
[DEFAULT]
log_file = $LOG/keystone.log
[database]
connection = sqlite:///$STATE/keystone.db
[token]
provider = fernet
expiration = $TOKEN_EXPIRATION
[fernet_tokens]
key_repository = $STATE/fernet-keys
[fernet_receipts]
key_repository = $STATE/fernet-keys
[credential]
key_repository = $STATE/credential-keys
[identity]
# Cheapest bcrypt cost: password auth ~10 ms instead of ~250 ms. Tests only.
password_hash_rounds = 4
[resource]
# Without an admin project every token reads as is_admin_project=True.
admin_project_name = admin
admin_project_domain_name = Default
[cache]
$CACHE_CONF
EOF
mv "$CONF.new" "$CONF"

export PYTHONWARNINGS="ignore::DeprecationWarning"  # eventlet/oslo noise
KM=("$VENV/bin/keystone-manage" --config-file "$CONF")
km() { # keystone-manage, quiet unless it fails
  "${KM[@]}" "$@" >>"$LOG/keystone-manage.log" 2>&1 ||
    { tail -n 30 "$LOG/keystone-manage.log" >&2; die "keystone-manage $1 failed"; }
}

STAMP="$(printf '%s\n' "$PINS" "$URL" "$ADMIN_PASSWORD" | sha256sum | cut -d' ' -f1)"
if [[ "${CLONED:-0}" == 1 ]]; then
  echo "$STAMP" >"$STATE/.bootstrapped"
elif [[ ! -f "$STATE/keystone.db" || "$(cat "$STATE/.bootstrapped" 2>/dev/null)" != "$STAMP" ]]; then
  log "db_sync + key setup + bootstrap in $STATE (about 10 s)"
  km db_sync
  [[ -f "$STATE/fernet-keys/0" ]] || km fernet_setup --keystone-user "$(id -u)" --keystone-group "$(id -g)"
  [[ -f "$STATE/credential-keys/0" ]] || km credential_setup --keystone-user "$(id -u)" --keystone-group "$(id -g)"
  # Idempotent: creates what is missing, resets admin's password and the
  # endpoint URLs if they changed.
  km bootstrap \
    --bootstrap-username admin --bootstrap-password "$ADMIN_PASSWORD" \
    --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-public-url "$URL" --bootstrap-internal-url "$URL" --bootstrap-admin-url "$URL"
  echo "$STAMP" >"$STATE/.bootstrapped"
  rm -f "$STATE/seed.json"  # the seed must run again on this database
fi

# --- (c) start on loopback only ---------------------------------------------------
for f in access.log keystone.log; do  # keep logs bounded across many runs
  if [[ -f "$LOG/$f" && "$(stat -c %s "$LOG/$f")" -gt 50000000 ]]; then mv "$LOG/$f" "$LOG/$f.1"; fi
done
log "starting gunicorn on 127.0.0.1:$PORT ($WORKERS workers), logs in $LOG/"
log_offset="$(stat -c %s "$LOG/gunicorn.log" 2>/dev/null || echo 0)"
cd "$STATE"
# setsid: own session (and process group), immune to the caller's Ctrl-C.
# --preload: Keystone is imported once, before the fork (start ~2x faster; no
# database connection is open at that point). 9>&-: no inherited lock.
OS_KEYSTONE_CONFIG_FILES="$CONF" PYTHONDONTWRITEBYTECODE=1 setsid "$VENV/bin/gunicorn" \
  --preload --bind "127.0.0.1:$PORT" --workers "$WORKERS" --graceful-timeout 5 \
  --no-control-socket --pythonpath "$SCRIPT_DIR" --chdir "$STATE" \
  --access-logfile "$LOG/access.log" --error-logfile "$LOG/gunicorn.log" \
  --access-logformat '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms pid=%(p)s' \
  keystone_wsgi:application </dev/null >>"$LOG/gunicorn.out" 2>&1 9>&- &
pid=$!
echo "$pid" >"$PIDFILE"
echo "$URL" >"$STATE/keystone.url"
echo "$SETTINGS" >"$STATE/keystone.settings"
echo "${AUTHMW_KEYSTONE_OWNER:-manual}" >"$STATE/keystone.owner"

# --- (d) wait until /v3 answers and the admin gets a token -------------------------
# Only trust answers once gunicorn logged that *it* listens: another server on
# the port (a lost race for it) must not pass for ours.
set +e
KS_PW="$ADMIN_PASSWORD" "$VENV/bin/python" - "$URL" "$pid" "$START_TIMEOUT" "$LOG/gunicorn.log" "$log_offset" <<'EOF'
import json, os, sys, time, urllib.request
url, pid, timeout, log, offset = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
listening = "Listening at: %s (%d)" % (url[: -len("/v3")], pid)
deadline = time.monotonic() + timeout

def alive():
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return bool(f.read())  # a zombie has none
    except OSError:
        return False

def log_text():
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""

while listening not in log_text():
    if not alive():
        sys.exit(5 if "Connection in use" in log_text() else 2)
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.1)
while True:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            if r.status == 200:
                break
    except OSError:
        pass
    if not alive():
        sys.exit(2)
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.1)
body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": os.environ["KS_PW"]}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
req = urllib.request.Request(url + "/auth/tokens", data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        sys.exit(0 if r.status == 201 and r.headers["X-Subject-Token"] else 4)
except OSError:
    sys.exit(4)
EOF
rc=$?
set -e
case $rc in
  0) ;;
  5)
    rm -f "$PIDFILE" "$STATE/keystone.owner"
    if [[ -z "${AUTHMW_KEYSTONE_PORT:-}" && "${AUTHMW_KEYSTONE_RETRY:-0}" -lt 3 ]]; then
      # Lost the port to another server between the check and the bind.
      free_port >"$STATE/keystone.port"
      log "port $PORT was taken meanwhile; again on port $(cat "$STATE/keystone.port")"
      exec 9>&-
      AUTHMW_KEYSTONE_RETRY=$((${AUTHMW_KEYSTONE_RETRY:-0} + 1)) exec bash "$SCRIPT_DIR/start.sh" "$@"
    fi
    die "port $PORT on 127.0.0.1 is in use by another process (set AUTHMW_KEYSTONE_PORT)" ;;
  2) rm -f "$PIDFILE"; tail -n 30 "$LOG/gunicorn.log" >&2; die "gunicorn exited during startup; see $LOG/" ;;
  3) tail -n 30 "$LOG/gunicorn.log" >&2; die "no answer from $URL after ${START_TIMEOUT}s (pid $pid left running; scripts/keystone/stop.sh stops it)" ;;
  *) die "admin could not get a token; see $LOG/keystone.log (pid $pid left running; scripts/keystone/stop.sh stops it)" ;;
esac

log "keystone is up (pid $pid) at $URL"
echo "$URL"
