#!/usr/bin/env bash
# Creates (or reuses) .venv-chart with the pinned chart test tools and prints its python's path. Installs
# Python's venv module with apt-get when missing. Used by tests/chart/run.sh and by the Rust tests that
# render the chart (tests/kube_support).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >&2
fi
VENV="$ROOT/.venv-chart"
REQS="$ROOT/tests/chart/requirements.txt"
STAMP="$VENV/.requirements.sha256"
# One writer at a time: cargo runs test binaries in sequence, but a person may run two at once.
exec 9>"$ROOT/.venv-chart.lock"
flock 9
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
fi
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -r "$REQS" >&2
  echo "$want" > "$STAMP"
fi
echo "$VENV/bin/python"
