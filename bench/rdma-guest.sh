#!/bin/bash
# Guest half of bench/rdma.sh (runs in the rxe lab guest; read bench/rdma.sh first).
# For each server in BENCH_SERVERS: start it, mount it with the kernel client over SMB Direct
# (vers=3.1.1, cache=none), dd a BENCH_MIB file (4 MiB blocks) to it (conv=fsync) and back
# (to /dev/null), unmount, stop it. Then ib_write_bw/ib_read_bw moving the same number of bytes
# at the RDMA sizes the mount used (its rsize/wsize) and at 4 MiB (the dd block size).
# Around each transfer: wall time and whole-guest busy CPU (user+nice+system+irq+softirq from
# /proc/stat), reported as MB/s and CPU seconds per GiB. Writes a Markdown table to
# $RXE_OUT/$RXE_TEST/table.md and to stdout.
#
# BENCH_MODE=sweep: instead, a sweep of our own client over SMB Direct (see "BENCH_MODE=sweep" below;
# bench/rdma-sweep.sh runs it).
# Adding a server NAME: define server_NAME_start (listen on RDMA CM port 445 at $RXE_ADDR with
# share [share] at $SMB_SHARE_DIR and user $SMB_USER/$SMB_PASS (lib.sh), then return) and
# server_NAME_stop (free port 445 again), and run `bench/rdma.sh ksmbd NAME`.
# rxe-timeout: 1200
. "$RXE_REPO/ci/rxe/guest/lib.sh"
MIB=${BENCH_MIB:-256}
SERVERS=${BENCH_SERVERS:-ours ksmbd}
INFLIGHT_KIB=${BENCH_PERF_INFLIGHT_KIB:-1024}
M=/mnt/bench
TABLE="$RXE_OUT/$RXE_TEST/table.md"
rows=()
sizes=(4194304)
PERF_PORT=18515

server_ksmbd_start() { ksmbd_start; }
server_ksmbd_stop() { ksmbd_stop; }
# ours: `smbdirect serve` with its defaults (RDMA auto-detected, rdma-proxy's default bytes in
# flight per QP); ours_start/ours_stop in lib.sh
server_ours_start() { ours_start; }
server_ours_stop() { ours_stop; }
# ours_conf: ours with one more smb.conf [global] line, BENCH_OURS_CONF (e.g. `smbdirect:rdma max
# in flight = 1M`): RXE_GUEST_ENV="BENCH_OURS_CONF='...'" bench/rdma.sh ours_conf
server_ours_conf_start() {
    need_bin "$OURS_BIN/smbdirect"
    need_bin "$OURS_BIN/rdma-proxy"
    local conf=/tmp/bench-ours.conf
    printf '[global]\n%s\n' "${BENCH_OURS_CONF:-}" > "$conf"
    log "ours_conf: $(tr '\n' ' ' < "$conf")"
    mkdir -p /srv/share
    mountpoint -q /srv/share || mount -t tmpfs -o size=700m tmpfs /srv/share
    SMB_SHARE_DIR=/srv/share SMB_USER=tuser SMB_PASS=tpass
    RUST_LOG=${OURS_RUST_LOG:-info} "$OURS_BIN/smbdirect" serve --config "$conf" --share "share=$SMB_SHARE_DIR" \
        --user "$SMB_USER:$SMB_PASS" >> "$OURS_LOG" 2>&1 &
    OURS_PID=$!
    wait_tcp 445 || true
    wait_cm 445
}
server_ours_conf_stop() { ours_stop; }

# measure LABEL DIRECTION BYTES NOTE CMD...: run CMD, add a table row
measure() {
    local label=$1 dir=$2 bytes=$3 note=$4; shift 4
    local c0 t0 c1 t1
    sync
    c0=$(cpu_busy_seconds); t0=$(now)
    "$@" || fail "$label $dir: $* failed"
    t1=$(now); c1=$(cpu_busy_seconds)
    local row
    row=$(awk -v b="$bytes" -v t="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        -v c="$(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }')" \
        -v l="$label" -v d="$dir" -v n="$note" \
        'BEGIN { printf "| %s | %s | %.1f | %.1f | %.1f | %s |", l, d, b / t / 1e6, t, c / (b / 1073741824), n }')
    echo "$row"
    rows+=("$row")
}

bench_server() {
    local s=$1
    declare -F "server_${s}_start" >/dev/null || fail "no server_${s}_start in $0"
    log "== $s"
    "server_${s}_start"
    timeout 120 mount -t cifs "//$RXE_ADDR/share" "$M" \
        -o "rdma,vers=3.1.1,cache=none,username=$SMB_USER,password=$SMB_PASS" || fail "mount $s"
    grep -q 'SMBDirect (in hex) protocol version: 100 ' /proc/fs/cifs/DebugData || fail "$s: not SMB Direct"
    local opts rs ws
    opts=$(grep " $M cifs " /proc/mounts | cut -d' ' -f4)
    rs=$(echo "$opts" | tr ',' '\n' | sed -n 's/^rsize=//p')
    ws=$(echo "$opts" | tr ',' '\n' | sed -n 's/^wsize=//p')
    sizes+=("$rs" "$ws")
    local bytes=$((MIB << 20))
    measure "$s" write "$bytes" "dd bs=4M conv=fsync, wsize $((ws >> 10)) KiB" \
        timeout 600 dd if=/tmp/src of="$M/bench" bs=4M count=$((MIB / 4)) conv=fsync status=none
    measure "$s" read "$bytes" "dd bs=4M, rsize $((rs >> 10)) KiB" \
        timeout 600 dd if="$M/bench" of=/dev/null bs=4M status=none
    cmp -s /tmp/src "$SMB_SHARE_DIR/bench" || fail "$s: the file on the server differs from the source"
    rm -f "$M/bench"
    cp /proc/fs/cifs/DebugData "$RXE_OUT/$RXE_TEST/debugdata-$s.txt"
    timeout 60 umount "$M" || fail "umount $s"
    "server_${s}_stop"
}

to_log() { local f=$1; shift; "$@" > "$f" 2>&1 || { cat "$f"; return 1; }; }

# perftest TOOL SIZE: the same byte count as one dd, at most INFLIGHT_KIB in flight
# (rxe drops packets and stalls in retry timeouts when much more is in flight on one QP)
perftest() {
    local tool=$1 size=$2 port=$PERF_PORT
    PERF_PORT=$((PERF_PORT + 1))
    local n=$(( (MIB << 20) / size )) depth=$(( (INFLIGHT_KIB << 10) / size ))
    [ "$depth" -ge 1 ] || depth=1
    [ "$depth" -le 128 ] || depth=128
    local extra=(-t "$depth")
    [ "$tool" = ib_read_bw ] && extra+=(-o "$depth")
    timeout 300 "$tool" -d rxe0 -x 1 -F -s "$size" -n "$n" "${extra[@]}" -p "$port" > /tmp/srv.log 2>&1 &
    local srv=$!
    wait_tcp "$port"
    local dir="write"; [ "$tool" = ib_read_bw ] && dir="read"
    measure "perftest $tool" "$dir" $((MIB << 20)) "$((size >> 10)) KiB x $n, $depth in flight (polling)" \
        to_log /tmp/cli.log timeout 300 "$tool" -d rxe0 -x 1 -F -s "$size" -n "$n" "${extra[@]}" \
        -p "$port" "$RXE_ADDR"
    wait "$srv" || { cat /tmp/srv.log; fail "$tool server"; }
    log "$tool $size: perftest's own figure $(awk -v s="$size" '$1 == s { print $4 }' /tmp/cli.log) MB/s"
}

# ---- BENCH_MODE=sweep (bench/rdma-sweep.sh): smbdirect-bench --sweep --transport rdma against each
# server (our own SMB Direct client: the same client for every server), then ib_read_bw and
# ib_write_bw at the same sizes and depths (-D seconds, -t/-o depth). CSV rows (smbdirect-bench's
# format; perftest rows have no latency and no CPU figures: it polls) in $RXE_OUT/$RXE_TEST/sweep.csv.
SWEEP_SIZES=${BENCH_SWEEP_SIZES:-16k,64k,256k,1m}
SWEEP_DEPTHS=${BENCH_SWEEP_DEPTHS:-1,4}
SWEEP_SECONDS=${BENCH_SWEEP_SECONDS:-2}
SWEEP_CSV="$RXE_OUT/$RXE_TEST/sweep.csv"
to_bytes() { local v=${1,,}; case $v in *k) echo $(( ${v%k} << 10 ));; *m) echo $(( ${v%m} << 20 ));; *) echo "$v";; esac; }

sweep_server() {
    local s=$1 bench=$RXE_REPO/target/release/smbdirect-bench
    need_bin "$bench"
    log "== sweep $s: sizes $SWEEP_SIZES depths $SWEEP_DEPTHS, ${SWEEP_SECONDS}s per point"
    "server_${s}_start"
    for op in read write; do
        timeout 600 "$bench" "//$RXE_ADDR/share" -U "$SMB_USER%$SMB_PASS" --transport rdma --sweep --op "$op" \
            --sizes "$SWEEP_SIZES" --depths "$SWEEP_DEPTHS" --duration "$SWEEP_SECONDS" --file-size 32m \
            --label "$s" --csv "$SWEEP_CSV" --timeout 30 > "$RXE_OUT/$RXE_TEST/sweep-$s-$op.out" 2>&1 \
            || { cat "$RXE_OUT/$RXE_TEST/sweep-$s-$op.out"; fail "sweep $s $op"; }
        grep -v '^label,' "$RXE_OUT/$RXE_TEST/sweep-$s-$op.out" | grep "^$s," || true
    done
    "server_${s}_stop"
}

# sweep_perftest TOOL SIZE DEPTH: one CSV row from perftest's "BW average[MiB/sec]" and "MsgRate[Mpps]"
sweep_perftest() {
    local tool=$1 size=$2 depth=$3 port=$PERF_PORT
    PERF_PORT=$((PERF_PORT + 1))
    local extra=(-t "$depth")
    [ "$tool" = ib_read_bw ] && extra+=(-o "$depth")
    timeout 120 "$tool" -d rxe0 -x 1 -F -s "$size" -D "$SWEEP_SECONDS" "${extra[@]}" -p "$port" > /tmp/srv.log 2>&1 &
    local srv=$!
    wait_tcp "$port"
    timeout 120 "$tool" -d rxe0 -x 1 -F -s "$size" -D "$SWEEP_SECONDS" "${extra[@]}" -p "$port" "$RXE_ADDR" > /tmp/cli.log 2>&1 \
        || { cat /tmp/cli.log; fail "$tool -s $size -t $depth"; }
    wait "$srv" || { cat /tmp/srv.log; fail "$tool server"; }
    local op=write; [ "$tool" = ib_read_bw ] && op=read
    local row
    row=$(awk -v s="$size" -v d="$depth" -v op="$op" '$1 == s && NF >= 5 {
        printf "perftest,rdma,%s,seq,%d,%d,1,%.1f,%.0f,0,0,0,0,\n", op, s, d, $4 * 1.048576, $5 * 1e6; exit }' /tmp/cli.log)
    [ -n "$row" ] || { cat /tmp/cli.log; fail "$tool -s $size: no result line"; }
    echo "$row" | tee -a "$SWEEP_CSV"
}

if [ "${BENCH_MODE:-}" = sweep ]; then
    rxe_up
    log "guest: $(nproc) CPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, kernel $(uname -r)"
    rm -f "$SWEEP_CSV"
    for s in $SERVERS; do sweep_server "$s"; done
    for d in ${SWEEP_DEPTHS//,/ }; do
        for sz in ${SWEEP_SIZES//,/ }; do
            sweep_perftest ib_read_bw "$(to_bytes "$sz")" "$d"
            sweep_perftest ib_write_bw "$(to_bytes "$sz")" "$d"
        done
    done
    log "sweep: $(grep -vc '^label,' "$SWEEP_CSV") rows in $SWEEP_CSV"
    exit 0
fi

rxe_up
modprobe cifs
mkdir -p "$M"
make_source "$MIB"
log "guest: $(nproc) CPUs, $(awk '/MemTotal/ { print int($2 / 1024) }' /proc/meminfo) MiB, kernel $(uname -r)"
for s in $SERVERS; do bench_server "$s"; done
for size in $(printf '%s\n' "${sizes[@]}" | sort -un); do
    perftest ib_write_bw "$size"
    perftest ib_read_bw "$size"
done

{
    echo "| what | direction | MB/s | seconds | CPU s/GiB | notes |"
    echo "| --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "$MIB MiB per transfer, one qemu TCG guest (2 vCPUs), cifs.ko client, rxe loopback; CPU s/GiB ="
    echo "whole-guest user+nice+system+irq+softirq seconds from /proc/stat per GiB moved."
} > "$TABLE"
echo
cat "$TABLE"
