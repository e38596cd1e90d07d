#!/usr/bin/env bash
# Prints (as a JSON v1 List for `kubectl apply -f -`) the ServiceAccount and RBAC that the Helm chart creates
# for the signer, rendered by the real Helm library, for the control plane of scripts/kube-up.sh: release and
# namespace "csr-signer", so the ServiceAccount is the kubeconfig's `signer` context.
#   scripts/kube-signer-rbac.sh [signerName ...]     (default: example.com/mtls)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$("$root/tests/chart/venv.sh")"
args=()
for s in "${@:-example.com/mtls}"; do args+=(--signer "$s"); done
cd "$root/tests/chart"
exec "$python" render.py --release csr-signer --namespace csr-signer --lease-name csr-signer "${args[@]}"
