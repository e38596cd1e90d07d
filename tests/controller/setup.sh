#!/bin/sh
# Test setup for the controller tests: installs Debian's Prometheus server (used by
# tests/controller_process.rs to scrape the signer and answer a PromQL query) when it is absent.
# Idempotent; needs root (or sudo) only when the package is missing.
set -eu

if command -v prometheus >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the node exporter and web assets out; the server binary is enough.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a system service on :9090 where an init system runs; the tests start their
# own server on a free loopback port and do not need it.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null 2>&1
