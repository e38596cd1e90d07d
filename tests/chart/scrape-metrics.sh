#!/usr/bin/env bash
# Saves a real /metrics scrape of the csr-signer binary for the metric-name tests:
#   tests/chart/scrape-metrics.sh [BINARY] OUT_FILE
#   METRICS_SCRAPE_FILE=OUT_FILE tests/chart/run.sh
# Starts `csr-signer run` with the chart's config file shape, a throwaway CA (openssl) and a kubeconfig pointing
# at a closed loopback port: the API calls fail (that is counted in csr_signer_api_errors_total), but the binary
# registers and serves all its metrics. Only loopback is used.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ $# -eq 2 ]; then BIN="$1"; OUT="$2"; else OUT="${1:?usage: scrape-metrics.sh [BINARY] OUT_FILE}"; BIN=""; fi
if [ -z "$BIN" ]; then
  for candidate in "$ROOT/target/release/csr-signer" "$ROOT/target/debug/csr-signer"; do
    if [ -x "$candidate" ]; then BIN="$candidate"; break; fi
  done
fi
[ -x "$BIN" ] || { echo "no csr-signer binary (build it or pass its path)" >&2; exit 2; }

WORK="$(mktemp -d)"
PID=""
cleanup() { if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi; rm -rf "$WORK"; }
trap 'cleanup; rm -f "$OUT.tmp"' EXIT

mkdir -p "$WORK/ca/0"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=scrape test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$WORK/ca/0/tls.key" -out "$WORK/ca/0/tls.crt" 2>/dev/null
chmod 600 "$WORK/ca/0/tls.key"

PORTS="$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')"
read -r METRICS_PORT DEAD_PORT <<<"$PORTS"

cat > "$WORK/config.yaml" <<YAML
signers:
  - name: example.com/mtls
    ca: { certFile: $WORK/ca/0/tls.crt, keyFile: $WORK/ca/0/tls.key, chainFile: null, passphraseFile: null }
    autoApprove: { enabled: true, rules: [{ name: team-a, serviceAccountNamespaces: [team-a] }] }
controller:
  qps: 50
  burst: 100
  workers: 2
  leaderElection: { enabled: false, leaseName: csr-signer, namespace: null, leaseDurationSeconds: 15, renewDeadlineSeconds: 10, retryPeriodSeconds: 2 }
  events: true
server: { listen: "127.0.0.1:$METRICS_PORT" }
log: { format: json, level: info }
trustBundles: { enabled: true }
YAML
cat > "$WORK/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: closed, cluster: {server: "http://127.0.0.1:$DEAD_PORT"}}]
users: [{name: nobody, user: {}}]
contexts: [{name: closed, context: {cluster: closed, user: nobody}}]
current-context: closed
YAML

"$BIN" run --config "$WORK/config.yaml" --kubeconfig "$WORK/kubeconfig" --listen "127.0.0.1:$METRICS_PORT" \
  --log-format json > "$WORK/run.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  if python3 -c 'import sys, urllib.request
open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=2).read())' \
      "http://127.0.0.1:$METRICS_PORT/metrics" "$OUT.tmp" 2>/dev/null && grep -q '^csr_signer_' "$OUT.tmp"; then
    mv "$OUT.tmp" "$OUT"
    echo "wrote $OUT ($(grep -c '^csr_signer_' "$OUT") csr_signer_ samples)"
    exit 0
  fi
  kill -0 "$PID" 2>/dev/null || { echo "csr-signer exited:" >&2; cat "$WORK/run.log" >&2; exit 1; }
  sleep 0.2
done
echo "no /metrics after 20 s; log:" >&2
cat "$WORK/run.log" >&2
exit 1
