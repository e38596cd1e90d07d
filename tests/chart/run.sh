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
PYTHON="$("$ROOT/tests/chart/venv.sh")"

echo "promtool: $(promtool --version 2>&1 | head -1)"
exec "$PYTHON" -m pytest -p no:cacheprovider -q -rs "$ROOT/tests/chart" "$@"
