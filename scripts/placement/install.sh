#!/usr/bin/env bash
# Build the virtualenv of OpenStack Placement for the test suite, once:
# openstack-placement 16.0.0 (the release of Keystone 30.0.0's series) under
# gunicorn, with keystonemiddleware 13.0.1 (Placement's own dependency),
# python-memcached (keystonemiddleware's memcached client), and what authmw
# needs at run time (httpx, cachetools, pymemcache; authmw itself comes from
# the checkout through PYTHONPATH). Every version is pinned by constraints.txt.
# Idempotent: does nothing when the venv matches the pins. Concurrent builds wait
# for each other (flock).
#
#   bash scripts/placement/install.sh        # prints the venv's path
#
# Environment: AUTHMW_PLACEMENT_HOME [<repo>/.cache/placement],
# AUTHMW_PLACEMENT_VENV [$HOME/venv], AUTHMW_PLACEMENT_PYTHON [python3].
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
PLACEMENT_VERSION=16.0.0
GUNICORN_VERSION=27.0.1

abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
HOME_DIR="$(abspath "${AUTHMW_PLACEMENT_HOME:-$REPO/.cache/placement}")"
VENV="$(abspath "${AUTHMW_PLACEMENT_VENV:-$HOME_DIR/venv}")"
PYTHON="${AUTHMW_PLACEMENT_PYTHON:-python3}"

log() { echo "[placement/install] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PINS="placement==$PLACEMENT_VERSION gunicorn==$GUNICORN_VERSION constraints=$(sha256sum "$SCRIPT_DIR/constraints.txt" | cut -c1-16)"
mkdir -p "$(dirname "$VENV")"
exec 8>"$VENV.lock"
flock -w 600 8 || die "could not lock $VENV.lock"
if [[ -x "$VENV/bin/gunicorn" && "$(cat "$VENV/.placement-pins" 2>/dev/null)" == "$PINS" ]]; then
  echo "$VENV"
  exit 0
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "placement $PLACEMENT_VERSION needs Python >= 3.10 (set AUTHMW_PLACEMENT_PYTHON)"
log "installing openstack-placement $PLACEMENT_VERSION into $VENV (about 20 s, once)"
t0=$SECONDS
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -qq --disable-pip-version-check -c "$SCRIPT_DIR/constraints.txt" \
  "openstack-placement==$PLACEMENT_VERSION" "gunicorn==$GUNICORN_VERSION" \
  python-memcached pymemcache cryptography httpx cachetools >&2 ||
  die "pip could not install placement into $VENV"
echo "$PINS" >"$VENV/.placement-pins"
log "venv ready in $((SECONDS - t0))s"
echo "$VENV"
