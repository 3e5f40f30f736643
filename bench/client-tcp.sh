#!/usr/bin/env bash
# Our SMB client (smbdirect-bench) against our server and Samba's smbd over
# TCP on loopback, in the same run: a sweep over I/O sizes and queue depths per
# server, rows kept in bench/results/DATE-HOST-tcp.csv and charted into
# bench/results/DATE-HOST-tcp.svg (MB/s and p50 latency against I/O size).
#
#   bench/client-tcp.sh [ours] [samba]        (default: both)
#
# Environment: SIZES (default 4k,64k,1m,4m), DEPTHS (default 1,16), OPS
# (default read,write), DURATION seconds per point (default 2), CHANNELS
# (default 1), FILE_SIZE (default 256m), EXTRA (more smbdirect-bench flags,
# e.g. --encrypt), SMBDIRECT_BIN, SMBDIRECT_BENCH_BIN.
# Server CPU per GiB: the server's main process, its children and its reaped
# children, from /proc (--server-pid).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/targets.sh
. "$root/ci/targets.sh"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ours samba)
SIZES=${SIZES:-4k,64k,1m,4m}
DEPTHS=${DEPTHS:-1,16}
OPS=${OPS:-read,write}
DURATION=${DURATION:-2}
CHANNELS=${CHANNELS:-1}
FILE_SIZE=${FILE_SIZE:-256m}
EXTRA=${EXTRA:-}
bench=${SMBDIRECT_BENCH_BIN:-$root/target/release/smbdirect-bench}
[ -x "$bench" ] || { echo "client-tcp.sh: $bench missing: cargo build --release -p smbdirect-bench" >&2; exit 1; }

out_dir=$root/bench/results
mkdir -p "$out_dir"
stamp="$(date -u +%Y-%m-%d)-$(hostname -s)-tcp"
csv=$out_dir/$stamp.csv
svg=$out_dir/$stamp.svg
rm -f "$csv"

scratch=$(mktemp -d /tmp/bench-client-XXXXXX)
chmod 0755 "$scratch"
cleanup() { target_stop; rm -rf "$scratch"; }
trap cleanup EXIT
user=tester
pass="Pw$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n')"

for t in "${targets[@]}"; do
    target_start "$t" "$scratch/$t" "$user" "$pass"
    for op in ${OPS//,/ }; do
        echo "== $t $op sizes $SIZES depths $DEPTHS, ${DURATION}s per point" >&2
        # shellcheck disable=SC2086
        "$bench" //127.0.0.1/share -U "$user%$pass" --port "$TARGET_PORT" --sweep --op "$op" \
            --sizes "$SIZES" --depths "$DEPTHS" --duration "$DURATION" --channels "$CHANNELS" \
            --file-size "$FILE_SIZE" --label "$t" --csv "$csv" --server-pid "$TARGET_MAIN_PID" $EXTRA >/dev/null
    done
    target_stop
done

"$bench" --plot "$csv" --svg "$svg" --title "smbdirect-bench over TCP (loopback, $(hostname -s), $(date -u +%Y-%m-%d)): ${targets[*]}"
column -s, -t <"$csv"
echo "rows: $csv" >&2
echo "chart: $svg" >&2
