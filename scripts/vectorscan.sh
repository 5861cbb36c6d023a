#!/usr/bin/env bash
# Installs Vectorscan/Hyperscan for the scanner's literal prefilter when this machine can have it
# (Debian's libhyperscan-dev, x86-64 only; pkg-config finds it), and prints the cargo feature flag
# that builds it in: `--features coffer/vectorscan`. Prints nothing when it cannot be had; the
# pure-Rust engine is used then. Progress goes to stderr, so that
#   cargo build $(scripts/vectorscan.sh)
# works.
set -euo pipefail

have() { pkg-config --exists libhs 2>/dev/null; }

if ! have && [ "$(uname -m)" = "x86_64" ] && command -v apt-get >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "installing libhyperscan-dev and pkg-config (Vectorscan/Hyperscan for coffer-scan)" >&2
    { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive \
        $sudo apt-get install -y -q --no-install-recommends libhyperscan-dev pkg-config; } >&2 \
        || echo "could not install libhyperscan-dev; building the pure-Rust scanner only" >&2
fi

if have; then
    echo "--features coffer/vectorscan"
fi
