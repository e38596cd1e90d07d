#!/usr/bin/env bash
# The full test suite, runnable on a fresh Debian machine with the Rust toolchain: it installs what
# the tests need (Debian packages with apt-get, Python tools in venvs) and then runs everything.
# Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
# SoftHSM2 (a PKCS#11 token in files) and OpenSC's pkcs11-tool for the HSM tests (tests/pkcs11.rs).
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null || need_apt+=(opensc)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# Services and tools the integration tests drive (a real Prometheus server for the scrape test).
if [ -f tests/controller/setup.sh ]; then
  echo "== tests/controller/setup.sh"
  sh tests/controller/setup.sh
fi

# The real Kubernetes control plane (tests/kube: etcd + kube-apiserver + kube-controller-manager from Go
# modules) that the real-apiserver tests run against. Go is required: without it the suite stops here rather
# than skipping those tests.
if ! command -v go >/dev/null; then
  echo "scripts/test.sh: Go >= $(sed -n 's/^go //p' tests/kube/go.mod) is required to build the real Kubernetes control plane for the tests." >&2
  echo "  Install it (https://go.dev/doc/install, or Debian's golang-go where it is new enough) and put 'go' on PATH." >&2
  exit 1
fi
echo "== tests/kube: go vet, gofmt, build the control plane"
(cd tests/kube && test -z "$(gofmt -l .)" || { gofmt -l . >&2; echo "gofmt: files above need formatting" >&2; exit 1; })
(cd tests/kube && go vet .)
(cd tests/gopem && test -z "$(gofmt -l .)" && go vet .) || { echo "tests/gopem: gofmt or go vet failed" >&2; exit 1; }
start=$(date +%s)
tests/kube/build.sh >/dev/null
echo "control plane ready to run ($(( $(date +%s) - start ))s)"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo clippy for the container image's build (no dev feature: no local API)"
cargo clippy --locked --no-default-features --lib --bins -- -D warnings
echo "== cargo test --workspace"
cargo test --workspace --all-targets

# Chart, alerts and dashboard, checked against a real scrape of the binary just built.
if [ -x tests/chart/run.sh ]; then
  scrape="$(mktemp)"
  echo "== tests/chart/scrape-metrics.sh"
  bin="$(realpath "${CARGO_TARGET_DIR:-target}/debug/csr-signer")"
  tests/chart/scrape-metrics.sh "$bin" "$scrape"
  echo "== tests/chart/run.sh"
  CSR_SIGNER_BIN="$bin" METRICS_SCRAPE_FILE="$scrape" tests/chart/run.sh
fi
echo "== all tests passed"
