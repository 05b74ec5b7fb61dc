#!/usr/bin/env bash
# Install the test suite's OpenID Connect provider (oidc-provider, pinned by
# scripts/oidc/package-lock.json) into a git-ignored folder with `npm ci`.
# Idempotent: exits at once when the installed tree matches the lock file and
# this Node.js. scripts/test runs it in its set-up phase; tests/_services.py
# runs it too before starting the provider.
#
# Environment (optional):
#   AUTHMW_OIDC_HOME   where node_modules goes   [<repo>/.cache/oidc]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
HOME_DIR="${AUTHMW_OIDC_HOME:-$REPO/.cache/oidc}"

log() { echo "[oidc/install] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v node >/dev/null 2>&1 || die "node not found: install Node.js >= 20.19 (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || die "npm not found: install npm (Debian: apt-get install npm)"
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' ||
  die "oidc-provider needs Node.js >= 20.19, found $(node --version)"

stamp="$(cat "$SCRIPT_DIR/package.json" "$SCRIPT_DIR/package-lock.json" | sha256sum | cut -c1-16) node-$(node --version)"
mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR.lock"
flock -w 600 9 || die "could not lock $HOME_DIR.lock"
if [[ -f "$HOME_DIR/node_modules/oidc-provider/lib/index.js" && "$(cat "$HOME_DIR/.installed" 2>/dev/null)" == "$stamp" ]]; then
  exit 0
fi
log "npm ci oidc-provider into $HOME_DIR (a few seconds, once)"
t0=$SECONDS
cp "$SCRIPT_DIR/package.json" "$SCRIPT_DIR/package-lock.json" "$HOME_DIR/"
(cd "$HOME_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2) ||
  die "npm ci failed in $HOME_DIR"
echo "$stamp" >"$HOME_DIR/.installed"
log "installed in $((SECONDS - t0))s"
