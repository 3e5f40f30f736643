#!/usr/bin/env bash
# bench/rdma-sweep.sh [SERVER...]: our own SMB client (smbdirect-bench --sweep --transport rdma)
# against each server over SMB Direct, then perftest's ib_read_bw/ib_write_bw at the same sizes
# and depths, all in ONE rxe lab guest (bench/rdma-guest.sh with BENCH_MODE=sweep). Rows go to
# bench/results/DATE-HOST-rdma.csv, charted into bench/results/DATE-HOST-rdma.svg (MB/s and p50
# latency against I/O size; perftest rows have no latency: it is not measured per operation).
# SERVER: ours and ksmbd (default: both). Env: SIZES (16k,64k,256k,1m), DEPTHS (1,4), DURATION
# seconds per point (2). A benchmark, not a test: it fails only when something breaks. Under TCG
# emulation every curve is bounded by the emulated rxe: compare the curves side by side only.
# Needs target/release/{smbdirect,rdma-proxy,smbdirect-bench} (smbdirect-bench built with
# --features verbs; see ci/rxe-test). About 3 minutes; uses both cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
servers=${*:-ours ksmbd}
bench=$repo/target/release/smbdirect-bench
for b in smbdirect rdma-proxy smbdirect-bench; do
    [ -x "$repo/target/release/$b" ] || { echo "rdma-sweep.sh: target/release/$b missing (see ci/rxe-test)" >&2; exit 2; }
done
dir=$(timeout --kill-after=30 1800 "$repo/ci/rxe/setup.sh")
out=${RXE_RESULTS:-$repo/target/bench-rdma/sweep-$(date +%Y%m%d-%H%M%S)}
env_lines="BENCH_MODE=sweep
BENCH_SERVERS='$servers'
BENCH_SWEEP_SIZES=${SIZES:-16k,64k,256k,1m}
BENCH_SWEEP_DEPTHS=${DEPTHS:-1,4}
BENCH_SWEEP_SECONDS=${DURATION:-2}"
set +e
RXE_DIR=$dir RXE_QUIET=${RXE_QUIET:-1} RXE_VM_TIMEOUT=${RXE_VM_TIMEOUT:-900} \
    RXE_GUEST_ENV="$env_lines${RXE_GUEST_ENV:+
$RXE_GUEST_ENV}" "$repo/ci/rxe/run-vm.sh" "$out" "$repo/bench/rdma-guest.sh"
rc=$?
set -e
if [ "$rc" != 0 ] || [ ! -s "$out/rdma-guest/sweep.csv" ]; then
    cat "$out/rdma-guest.log" 2>/dev/null || true
    echo "rdma-sweep.sh: the guest run failed (rc $rc); logs in $out" >&2
    exit 1
fi
stamp="$(date -u +%Y-%m-%d)-$(hostname -s)-rdma"
csv=$repo/bench/results/$stamp.csv
svg=$repo/bench/results/$stamp.svg
cp "$out/rdma-guest/sweep.csv" "$csv"
"$bench" --plot "$csv" --svg "$svg" \
    --title "smbdirect-bench over SMB Direct (rxe in a TCG guest, $(hostname -s), $(date -u +%Y-%m-%d)): $servers, perftest"
column -s, -t < "$csv"
echo "rows: $csv" >&2
echo "chart: $svg" >&2
echo "(logs: $out)" >&2
