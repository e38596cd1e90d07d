#!/usr/bin/env bash
# Runs the chart, alert and dashboard tests (tests/chart/) on a fresh Debian machine: installs what they need
# (promtool from Debian's prometheus package, openssl, a Python venv at .venv-chart with the pinned tools), then
# pytest. Extra arguments go to pytest. Exits non-zero when anything fails.
#   METRICS_SCRAPE_FILE=FILE  also check the dashboard/alert metric names against a real /metrics scrape
#   CSR_SIGNER_BIN=FILE       binary for the --help / check-config checks (default: target/{release,debug})
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v promtool >/dev/null || apt_install prometheus
command -v openssl >/dev/null || apt_install openssl
command -v python3 >/dev/null || apt_install python3
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv

VENV="$ROOT/.venv-chart"
REQS="$ROOT/tests/chart/requirements.txt"
STAMP="$VENV/.requirements.sha256"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$REQS"
  echo "$want" > "$STAMP"
fi

echo "promtool: $(promtool --version 2>&1 | head -1)"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs "$ROOT/tests/chart" "$@"
