#!/usr/bin/env bash
# Creates a root CA and a signing intermediate with the openssl CLI only.
#   ca/openssl-ca.sh OUTDIR [ec|rsa]
# Writes OUTDIR/root.crt (trust anchor), OUTDIR/root.key, OUTDIR/ca.crt + OUTDIR/ca.key (the signing
# intermediate, for csr-signer's certFile/keyFile). Refuses to overwrite existing files.
set -euo pipefail
out=${1:?usage: $0 OUTDIR [ec|rsa]}
kind=${2:-ec}
here=$(cd "$(dirname "$0")" && pwd)
cnf="$here/openssl-ca.cnf"
mkdir -p "$out"
for f in root.crt root.key ca.crt ca.key; do
  [ -e "$out/$f" ] && { echo "$out/$f exists; refusing to overwrite" >&2; exit 1; }
done
umask 077
genkey() {
  if [ "$kind" = rsa ]; then openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$1"
  else openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; fi
}
genkey "$out/root.key"
openssl req -x509 -new -key "$out/root.key" -config "$cnf" -extensions v3_root \
  -subj "/O=csr-signer/CN=csr-signer root CA" -days 3650 -sha256 -out "$out/root.crt"
genkey "$out/ca.key"
openssl req -new -key "$out/ca.key" -config "$cnf" \
  -subj "/O=csr-signer/CN=csr-signer signing CA" -out "$out/ca.csr"
openssl x509 -req -in "$out/ca.csr" -CA "$out/root.crt" -CAkey "$out/root.key" -CAcreateserial \
  -extfile "$cnf" -extensions v3_intermediate -days 1825 -sha256 -out "$out/ca.crt"
rm -f "$out/ca.csr" "$out/root.srl"
chmod 644 "$out/root.crt" "$out/ca.crt"
chmod 600 "$out/root.key" "$out/ca.key"
echo "signing CA: $out/ca.crt $out/ca.key; trust anchor: $out/root.crt"
