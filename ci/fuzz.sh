#!/usr/bin/env bash
# Fuzz smoke run: the SMB Direct decoders and state machine (transport/fuzz) and the SMB2
# server's decoders and request pipeline (server/fuzz).
#
# With cargo-fuzz installed, each transport target runs for FUZZ_SECONDS (default 15)
# seconds and each server target for SERVER_FUZZ_SECONDS (default 2), starting from the
# checked-in corpus; new inputs go to a temporary directory so the tree stays clean, and
# crashes are left in <crate>/fuzz/artifacts/. cargo-fuzz needs nightly compiler features
# (sanitizer flags): the stable compiler provides them with RUSTC_BOOTSTRAP=1.
# The server targets are built for the smoke run without optimization and without
# AddressSanitizer (SERVER_FUZZ_BUILD, default "--dev --sanitizer=none"): the server crate
# and its dependencies take minutes to build optimized, and safe Rust needs no ASan to
# turn a bug into a crash (a panic is one). Its build goes to target/fuzz-server.
# Without cargo-fuzz, the corpora are replayed as ordinary tests (tests/fuzz_corpus.rs in
# each crate), which also push mutated inputs through every target.
#
# The longer off-CI campaign: see server/fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${FUZZ_SECONDS:-15}
server_secs=${SERVER_FUZZ_SECONDS:-2}
transport_targets=(negotiate_request negotiate_response data_transfer buffer_desc connection events)
server_targets=(header transform requests negotiate create_contexts ntlmssp spnego security_descriptor ea_list srvsvc pipeline)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz not installed; replaying the corpora as tests instead"
    cargo test -p smbdirect-transport --test fuzz_corpus
    exec cargo test -p smbdirect-server --test fuzz_corpus
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

# run_targets CRATE_DIR SECONDS MAX_LEN "BUILD FLAGS" TARGET...
run_targets() {
    local dir=$1 s=$2 max_len=$3 t rc
    local -a build
    read -r -a build <<<"$4"
    shift 4
    cd "$root/$dir"
    for t in "$@"; do
        mkdir -p "$tmp/$dir/$t"
        echo "fuzz.sh: $dir $t for ${s}s"
        set +e
        env "${envs[@]}" cargo "${toolchain[@]}" fuzz run "${build[@]}" "$t" "$tmp/$dir/$t" "fuzz/corpus/$t" -- \
            -max_total_time="$s" -rss_limit_mb=2048 -max_len="$max_len" -timeout=20 -print_final_stats=1 >"$tmp/$t.log" 2>&1
        rc=$?
        set -e
        grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|SUMMARY)" "$tmp/$t.log" || true
        if [ "$rc" -ne 0 ]; then
            tail -40 "$tmp/$t.log" >&2
            echo "fuzz.sh: $dir $t failed; see $dir/fuzz/artifacts/$t" >&2
            exit 1
        fi
    done
}

run_targets transport "$secs" 4096 "" "${transport_targets[@]}"
run_targets server "$server_secs" 65536 "${SERVER_FUZZ_BUILD:---dev --sanitizer=none} --target-dir $root/target/fuzz-server" "${server_targets[@]}"
echo "fuzz.sh: transport targets ran ${secs}s and server targets ${server_secs}s each without a crash"
