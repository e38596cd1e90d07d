#!/usr/bin/env bash
# Builds the test control plane (tests/kube) once and prints the binary's path. Rebuilds only when a source
# file, go.mod or go.sum changed (a content hash, so a fresh checkout of the same sources reuses the binary).
# The first build on a fresh machine downloads ~700 MB of modules and compiles kube-apiserver and
# kube-controller-manager: see README.md for how long that takes; Go's own caches (GOMODCACHE, GOCACHE) make
# later builds a matter of seconds.
#   CSR_SIGNER_KUBE_BIN_DIR  where to put the binary (default: <repo>/target/kube)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if ! command -v go >/dev/null; then
  echo "tests/kube/build.sh: the real-apiserver tests need Go >= $(sed -n 's/^go //p' "$here/go.mod") (https://go.dev/doc/install, or Debian's golang-go if new enough); 'go' is not on PATH" >&2
  exit 1
fi
out_dir="${CSR_SIGNER_KUBE_BIN_DIR:-$root/target/kube}"
mkdir -p "$out_dir"
bin="$out_dir/controlplane"
kube="$(sed -n 's#^[[:space:]]*k8s.io/kubernetes \(v[^ ]*\)$#\1#p' "$here/go.mod" | head -1)"
want="$(cd "$here" && cat go.mod go.sum *.go build.sh | sha256sum | cut -d' ' -f1)-$(go env GOVERSION)"
if [ -x "$bin" ] && [ "$(cat "$bin.sha256" 2>/dev/null)" = "$want" ]; then
  echo "$bin"
  exit 0
fi
start=$(date +%s)
minor="${kube#v1.}"; minor="${minor%%.*}"
ver=k8s.io/component-base/version
(cd "$here" && go build -o "$bin.tmp" \
  -ldflags "-X $ver.gitVersion=$kube -X $ver.gitMajor=1 -X $ver.gitMinor=$minor -X $ver.gitTreeState=clean" .) >&2
mv "$bin.tmp" "$bin"
echo "$want" > "$bin.sha256"
echo "tests/kube/build.sh: built $bin ($kube) in $(( $(date +%s) - start ))s" >&2
echo "$bin"
