#!/usr/bin/env bash
# Runs every fuzz target for a while (default 60 s each): ./scripts/fuzz.sh [seconds] [target…]
# Installs cargo-fuzz on first use. The stable toolchain builds the sanitizer flags with
# RUSTC_BOOTSTRAP=1, so no nightly toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
features=()
if pkg-config --exists libhs 2>/dev/null; then features=(--features vectorscan); fi
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
for t in "${targets[@]}"; do
    echo "==> fuzzing $t for ${secs}s"
    # Seeds (committed, in fuzz/seeds/<target>) start the search from valid requests.
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    mkdir -p "corpus/$t"
    RUSTC_BOOTSTRAP=1 cargo fuzz run "${features[@]}" "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" -rss_limit_mb=2048
done
