#!/usr/bin/env bash
# bench/rdma.sh [SERVER...]: SMB Direct throughput and CPU cost per server, side by side in ONE
# rxe lab guest (same kernel client, same rxe, only the server differs), plus perftest's
# ib_write_bw/ib_read_bw at the same sizes. A benchmark, not a test: it fails only when
# something breaks, never on a figure. Prints a Markdown table.
# SERVER: ours and ksmbd (default: both, ours first); a server is a pair of functions in bench/rdma-guest.sh.
# Env: BENCH_MIB (256, at most 256) MiB per transfer; BENCH_PERF_INFLIGHT_KIB (1024) perftest's bytes in
# flight; RXE_* of ci/rxe/run-vm.sh. Results: target/bench-rdma/<date>/. Runs as root; the lab
# is set up (and cached) by ci/rxe/setup.sh. Takes about 2 to 4 minutes; uses both cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
servers=${*:-ours ksmbd}
for s in $servers; do
    grep -q "^server_${s}_start()" "$repo/bench/rdma-guest.sh" \
        || { echo "bench/rdma.sh: unknown server '$s' (no server_${s}_start in bench/rdma-guest.sh)" >&2; exit 2; }
done
dir=$(timeout --kill-after=30 1800 "$repo/ci/rxe/setup.sh")
out=${RXE_RESULTS:-$repo/target/bench-rdma/$(date +%Y%m%d-%H%M%S)}
env_lines="BENCH_SERVERS='$servers'
BENCH_MIB=${BENCH_MIB:-256}
BENCH_PERF_INFLIGHT_KIB=${BENCH_PERF_INFLIGHT_KIB:-1024}"
set +e
RXE_DIR=$dir RXE_QUIET=${RXE_QUIET:-1} RXE_VM_TIMEOUT=${RXE_VM_TIMEOUT:-1500} \
    RXE_GUEST_ENV="$env_lines${RXE_GUEST_ENV:+
$RXE_GUEST_ENV}" "$repo/ci/rxe/run-vm.sh" "$out" "$repo/bench/rdma-guest.sh"
rc=$?
set -e
if [ "$rc" != 0 ] || [ ! -f "$out/rdma-guest/table.md" ]; then
    cat "$out/rdma-guest.log" 2>/dev/null || true
    echo "bench/rdma.sh: the guest run failed (rc $rc); logs in $out" >&2
    exit 1
fi
grep '^\[' "$out/rdma-guest.log" || true
echo
cat "$out/rdma-guest/table.md"
echo
echo "(logs: $out)"
