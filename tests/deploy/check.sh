#!/usr/bin/env bash
# Static checks of deploy/ (Dockerfile, docker-compose.yml, k8s/, Prometheus rules, Grafana
# dashboard, systemd unit) against a whipgate binary; no container engine or cluster needed.
#
#   tests/deploy/check.sh WHIPGATE_BIN        # e.g. target/release/whipgate
#
# Prints `ok - ...` / `not ok - ...` per check and ends with `N passed, M failed` (exit 1 when
# anything failed). The checks themselves are in check_deploy.py, run with Debian's python3
# (3.11+, tomllib) and python3-yaml; promtool (for the PromQL, the Prometheus config and
# alerts.test.yml) is taken from PATH, or extracted from Debian's prometheus package into
# ${WHIPGATE_TEST_DEPS:-/var/cache/whipgate-test-deps}/promtool (without installing the package,
# which would start a Prometheus server). Installs what is missing when it can (apt, root).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3

log() { echo "# check.sh: $*"; }
[ $# -eq 1 ] || { echo "usage: $0 WHIPGATE_BIN" >&2; exit 2; }
BIN=$1
[ -x "$BIN" ] || { echo "$0: $BIN is not an executable" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive

SUDO=()
[ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
APT_UPDATED=0
apt_update_once() {
  [ "$APT_UPDATED" = 1 ] || "${SUDO[@]}" apt-get update -q >/dev/null 2>&1
  APT_UPDATED=1
}

# ---------------------------------------------------------------- python3 + yaml
if ! "$PY" -c 'import yaml, tomllib' >/dev/null 2>&1; then
  log "installing python3-yaml"
  apt_update_once
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends python3 python3-yaml >/dev/null 2>&1 ||
    log "could not install python3-yaml (needs root)"
  if ! "$PY" -c 'import yaml, tomllib' >/dev/null 2>&1; then
    echo "not ok - $PY with yaml and tomllib (Python 3.11+, python3-yaml)"
    echo "0 passed, 1 failed"
    exit 1
  fi
fi

# ---------------------------------------------------------------- promtool
DEPS=${WHIPGATE_TEST_DEPS:-/var/cache/whipgate-test-deps}
PROMTOOL=$(command -v promtool || true)
if [ -z "$PROMTOOL" ] && [ -x "$DEPS/promtool/usr/bin/promtool" ]; then
  PROMTOOL=$DEPS/promtool/usr/bin/promtool
fi
if [ -z "$PROMTOOL" ]; then
  "${SUDO[@]}" mkdir -p "$DEPS" 2>/dev/null && { [ -w "$DEPS" ] || "${SUDO[@]}" chown "$(id -u):$(id -g)" "$DEPS" 2>/dev/null; }
  [ -w "$DEPS" ] || DEPS=${XDG_CACHE_HOME:-$HOME/.cache}/whipgate-test-deps
  mkdir -p "$DEPS"
  tmp=$(mktemp -d)
  # apt-get download as root warns that _apt cannot reach the folder; harmless.
  if ! (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1); then
    apt_update_once
    (cd "$tmp" && apt-get download -q prometheus >/dev/null 2>&1)
  fi
  if ls "$tmp"/prometheus_*.deb >/dev/null 2>&1; then
    rm -rf "$DEPS/promtool" && mkdir -p "$DEPS/promtool" &&
      dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$DEPS/promtool" ./usr/bin/promtool &&
      PROMTOOL=$DEPS/promtool/usr/bin/promtool && log "extracted promtool into $DEPS/promtool"
  else
    log "could not download Debian's prometheus package for promtool"
  fi
  rm -rf "$tmp"
fi

exec "$PY" "$HERE/check_deploy.py" "$BIN" ${PROMTOOL:+"$PROMTOOL"}
