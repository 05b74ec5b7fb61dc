#!/usr/bin/env bash
# Install the servers the test suite starts by itself: redis-server, memcached,
# PostgreSQL and nginx (Debian packages; nginx-light: the gateway tests). Idempotent: exits at once when all are there;
# otherwise runs `apt-get update` once and installs only what is missing.
# The packages' own services are not started (the suite runs private ones on
# free loopback ports).
set -euo pipefail

log() { echo "[install-services] $*" >&2; }

have_redis() { command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]]; }
have_memcached() { command -v memcached >/dev/null 2>&1 || [[ -x /usr/bin/memcached ]]; }
have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1; }
have_nginx() { command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]; }

missing=()
have_redis || missing+=(redis-server)
have_memcached || missing+=(memcached)
have_postgres || missing+=(postgresql)
have_nginx || missing+=(nginx-light)
if ((${#missing[@]} == 0)); then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  log "missing: ${missing[*]}; no apt-get here, install them with your package manager"
  exit 1
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { log "missing: ${missing[*]}; run as root: apt-get install ${missing[*]}"; exit 1; }
  SUDO=(sudo)
fi

# Keep the packages' init scripts from starting system-wide servers.
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e "$POLICY" ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

log "installing ${missing[*]} (apt-get)"
t0=$SECONDS
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq >&2
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
have_redis || { log "redis-server still missing after apt-get install"; exit 1; }
have_memcached || { log "memcached still missing after apt-get install"; exit 1; }
have_postgres || { log "PostgreSQL (initdb) still missing after apt-get install"; exit 1; }
have_nginx || { log "nginx still missing after apt-get install"; exit 1; }
log "installed ${missing[*]} in $((SECONDS - t0))s"
