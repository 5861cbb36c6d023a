#!/usr/bin/env bash
# Runs every Coffer test on a fresh machine: installs what the tests need (SoftHSM2 from Debian for
# the PKCS#11 root of trust, PostgreSQL from Debian for the shared metadata engine, Vectorscan
# (libhyperscan-dev) for the scanner's prefilter, a Python
# virtualenv with boto3, the aws CLI and pytest), builds the
# workspace, runs the Rust unit and integration tests
# (the latter drive the real binary with aws-sdk-kms and aws-sdk-s3), then the Python suites
# (boto3, aws CLI, the Python AWS Encryption SDK and aws-encryption-cli).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "SoftHSM2 (a PKCS#11 token for the pkcs11 root of trust tests)"
if [ ! -e /usr/lib/softhsm/libsofthsm2.so ] || ! command -v softhsm2-util >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends softhsm2
fi

step "PostgreSQL (the metadata tests run on SQLite and on PostgreSQL; several nodes share one)"
pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/coffer-test-pg.XXXXXX")"
trap 'scripts/postgres.sh stop "$pg_dir"; rm -rf "$pg_dir"' EXIT
COFFER_TEST_POSTGRES="$(scripts/postgres.sh start "$pg_dir")"
# The fault tests stop and restart this server.
COFFER_TEST_POSTGRES_DIR="$pg_dir"
export COFFER_TEST_POSTGRES COFFER_TEST_POSTGRES_DIR
echo "PostgreSQL for the tests at $COFFER_TEST_POSTGRES"

step "Python test environment (.venv)"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
# The aws-encryption-cli declares aws-encryption-sdk~=3.1; it runs unchanged on 4.x (same legacy
# API), which the interop tests need, so it goes in without its declared dependencies.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "aws-encryption-sdk-cli==4.3.0"

step "Vectorscan (the scanner's literal prefilter; pure Rust where it cannot be had)"
features="$(scripts/vectorscan.sh)"
echo "cargo features: ${features:-none}"

# One build serves both suites: the test build compiles the coffer binary for the integration tests
# with the same features, and the Python suites use that binary. (A separate `cargo build` would
# compile every dependency a second time, without the dev-dependencies' features.)
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
fi

step "Rust tests (unit + aws-sdk-kms and aws-sdk-s3 against the real binary)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast $features
else
    cargo test --workspace --locked --no-fail-fast $features
fi

step "Python tests (boto3, aws CLI against the real binary)"
coffer_bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/coffer"
if [ ! -x "$coffer_bin" ]; then
    cargo build --workspace --bins --locked $features
fi
COFFER_BIN="$coffer_bin" PATH="$PWD/.venv/bin:$PATH" \
    .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
