#!/usr/bin/env bash
# Fuzz smoke run for the SMB Direct decoders and state machine (transport/fuzz).
#
# With cargo-fuzz installed, each target runs for FUZZ_SECONDS (default 15) seconds,
# starting from the checked-in seeds; new inputs go to a temporary directory so the tree
# stays clean, and crashes are left in transport/fuzz/artifacts/. cargo-fuzz needs nightly
# compiler features (sanitizer flags): the stable compiler provides them with
# RUSTC_BOOTSTRAP=1.
# Without cargo-fuzz, the corpus is replayed as ordinary tests (tests/fuzz_corpus.rs),
# which also push 20,000 mutated inputs through every target.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-15}
targets=(negotiate_request negotiate_response data_transfer buffer_desc connection events)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz not installed; replaying the corpus as tests instead"
    exec cargo test -p smbdirect-transport --test fuzz_corpus
fi

# Checked 2026-11-21: cargo-fuzz 0.13.2 builds and runs with stable Rust 1.95 and
# RUSTC_BOOTSTRAP=1. FUZZ_TOOLCHAIN=nightly uses a nightly toolchain instead.
toolchain=()
envs=(RUSTC_BOOTSTRAP=1)
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
    envs=()
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd transport
for t in "${targets[@]}"; do
    mkdir -p "$tmp/$t"
    echo "fuzz.sh: $t for ${secs}s"
    set +e
    env "${envs[@]}" cargo "${toolchain[@]}" fuzz run "$t" "$tmp/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 >"$tmp/$t.log" 2>&1
    rc=$?
    set -e
    grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|SUMMARY)" "$tmp/$t.log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$tmp/$t.log" >&2
        echo "fuzz.sh: $t failed; see transport/fuzz/artifacts/$t" >&2
        exit 1
    fi
done
echo "fuzz.sh: all targets ran ${secs}s without a crash"
