#!/usr/bin/env bash
# Starts a real Kubernetes control plane on this machine, for trying csr-signer without a cluster:
# etcd + kube-apiserver (+ kube-controller-manager with --kcm), built from Go modules by tests/kube/build.sh.
# Stops on Ctrl-C. State lives in ./kube-up (recreated on each start); the kubeconfig is ./kube-up/kubeconfig
# with contexts admin, developer, approver, node-1, team-a, team-b and signer.
#
#   scripts/kube-up.sh [--kcm] [controlplane flags] [-- kube-apiserver flags]
#
# Then, in another shell:
#   export KUBECONFIG=$PWD/kube-up/kubeconfig
#   scripts/kube-signer-rbac.sh | kubectl apply -f -     # the Helm chart's RBAC for the signer's ServiceAccount
#   csr-signer run --config my.yaml --kubeconfig kube-up/kubeconfig --context signer ...
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$("$root/tests/kube/build.sh")"
dir="${KUBE_UP_DIR:-$PWD/kube-up}"
rm -rf "$dir"
exec "$bin" --dir "$dir" "$@"
