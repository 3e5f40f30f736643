# Helpers for the guest test scripts (sourced: `. "$(dirname "$0")/lib.sh"`). Bash.
# Env from stage2.sh: RXE_DIR (the lab cache), RXE_REPO (the repo as seen in the guest),
# RXE_OUT (results dir, shared with the host; a test may leave files in $RXE_OUT/$RXE_TEST/).
set -euo pipefail
export PATH="$RXE_DIR/bin:$PATH"     # ksmbd.* (ksmbd-tools unpacked privately)
RXE_ADDR=10.9.0.1                    # the dummy netdev's address; rxe0 is bound to it
RXE_DATA=$(dirname "$RXE_DIR")/data  # random-256m.bin and its prefix sha256s (ci/rxe/setup.sh)

now() { cut -d' ' -f1 /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "[$(now)] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# poll CMD every 0.1 s until it succeeds or LIMIT seconds pass
wait_for() {
    local limit=$1 what=$2; shift 2
    local end; end=$(awk -v n="$(now)" -v l="$limit" 'BEGIN { print n + l }')
    until "$@" >/dev/null 2>&1; do
        awk -v n="$(now)" -v e="$end" 'BEGIN { exit !(n > e) }' && fail "timed out after ${limit}s waiting for $what"
        sleep 0.1
    done
}
tcp_listening() { ss -Hltn "sport = :$1" | grep -q .; }
# an RDMA CM listener on PORT (`rdma res show cm_id`: ... state LISTEN ... src-addr ADDR:PORT)
cm_listening() { rdma res show cm_id 2>/dev/null | grep LISTEN | grep -qE "src-addr [^ ]+:$1( |\$)"; }
wait_tcp() { wait_for "${2:-20}" "TCP port $1" tcp_listening "$1"; }
wait_cm() { wait_for "${2:-20}" "an RDMA CM listener on port $1" cm_listening "$1"; }

# rxe0 on a dummy netdev (rxe needs a netdev other than lo); traffic to its own address loops
# back inside rxe. Idempotent: every test may call it.
rxe_up() {
    if rdma link show rxe0/1 >/dev/null 2>&1; then return 0; fi
    modprobe rdma_rxe
    modprobe rdma_ucm
    ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy
    ip addr replace "$RXE_ADDR/24" dev dummy0
    ip link set dummy0 up
    rdma link add rxe0 type rxe netdev dummy0
    wait_for 10 "rxe0 port ACTIVE" sh -c 'ibv_devinfo -d rxe0 | grep -q PORT_ACTIVE'
}

# a host-built program the test needs (e.g. "$RXE_REPO/target/release/smbdirect"): CI builds
# it before ci/rxe-test; a missing one is a failure, never a skip
need_bin() { [ -x "$1" ] || fail "$1 is missing: build it on the host first (cargo build --release)"; }

# one rxe hardware counter (sent_pkts, rdma_sends, duplicate_request, ...)
rxe_counter() {
    rdma statistic show link rxe0/1 | tr ' ' '\n' | awk -v k="$1" 'p { print; exit } $0 == k { p = 1 }'
}

# whole-guest busy CPU in jiffies-free seconds: user+nice+system+irq+softirq from /proc/stat
cpu_busy_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.2f", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat
}

# ksmbd with SMB Direct (the rebuilt module), share [share] on a tmpfs at /srv/share,
# user tuser/tpass. ksmbd_stop undoes it so another server can take port 445 afterwards.
KSMBD_USER=tuser KSMBD_PASS=tpass
ksmbd_start() {
    mkdir -p /srv/share /etc/ksmbd
    mountpoint -q /srv/share || mount -t tmpfs -o size=700m tmpfs /srv/share
    printf '[global]\n\tserver signing = disabled\n[share]\n\tpath = /srv/share\n\tread only = no\n\tforce user = root\n' \
        > /etc/ksmbd/ksmbd.conf
    modprobe ksmbd
    # a second ksmbd_start in one guest run (t-30, then t-80) finds the user already there:
    # `ksmbd.adduser -a` refuses an existing user, so start from an empty user database
    rm -f /etc/ksmbd/ksmbdpwd.db
    ksmbd.adduser -a "$KSMBD_USER" -p "$KSMBD_PASS" >/dev/null || fail "ksmbd.adduser"
    ksmbd.mountd || fail "ksmbd.mountd"
    wait_tcp 445
    wait_cm 445
}
ksmbd_stop() {
    ksmbd.control -s >/dev/null 2>&1 || true
    wait_for 20 "ksmbd to stop listening" sh -c '! ss -Hltn "sport = :445" | grep -q .'
    modprobe -r ksmbd 2>/dev/null || true
}

# /tmp/src: the first MIB MiB (64, 128 or 256) of the host-made random file, copied into the
# guest's RAM (the guest's own urandom and sha256 are 10-50 times slower than the host's)
make_source() {
    head -c $(($1 << 20)) "$RXE_DATA/random-256m.bin" > /tmp/src
    [ "$(stat -c %s /tmp/src)" = $(($1 << 20)) ] || fail "could not copy $1 MiB of test data"
}
# the sha256 of the first MIB MiB of that file (made on the host)
source_sha() {
    local sha; sha=$(awk -v n="$1" '$1 == n { print $2 }' "$RXE_DATA/random-256m.sha256")
    [ -n "$sha" ] || fail "no sha256 for a $1 MiB prefix (sizes: 64, 128, 256)"
    echo "$sha"
}

# ---- the kernel SMB client over SMB Direct (shared by the tests of every server)
SMB_MNT=/mnt/smb
SMB_USER=$KSMBD_USER SMB_PASS=$KSMBD_PASS SMB_SHARE_DIR=/srv/share   # a test may change these
# dd's rate in MB/s from its last line ("... copied, 9.9 s, 27.1 MB/s")
dd_rate() { awk '/copied/ { print $(NF-1), $NF }' "$1"; }
hexval() { sed -n "s/.*$1: *\([0-9a-f]*\).*/\1/p" "$2" | head -1; }

# cifs_rdma_case LABEL MOUNT-OPTIONS MIB MIN-SHARE-PERCENT: one mount of //$RXE_ADDR/share with
# -o rdma,cache=none,MOUNT-OPTIONS as SMB_USER/SMB_PASS, whose server keeps the share at
# SMB_SHARE_DIR (in this guest): mkdir, create, list, write MIB MiB of /tmp/src (make_source),
# sha256 on the server's disk and read back (against source_sha), rename, delete, unmount.
# Fails unless DebugData shows the SMBDirect transport and the rxe SEND counter bounds the
# inline part so that the RDMA share of the payload is at least MIN-SHARE-PERCENT:
#   every SMB Direct message is one SEND (rdma_sends counts both peers, both in this guest) of at
#   most max(max_send_size, max_receive_size) bytes (from DebugData), so
#   RDMA share >= 1 - rdma_sends * max_size / payload.
# Leaves DebugData in $RXE_OUT/$RXE_TEST/debugdata-LABEL.txt and sets CASE_WRITE/CASE_READ (dd rates).
cifs_rdma_case() {
    local label=$1 opts=$2 mib=$3 min=$4
    local v0; v0=$(now)
    local want; want=$(source_sha "$mib")
    local art="$RXE_OUT/$RXE_TEST"
    mkdir -p "$art" "$SMB_MNT"
    local sends0; sends0=$(rxe_counter rdma_sends)
    timeout 120 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" \
        -o "rdma,username=$SMB_USER,password=$SMB_PASS,cache=none,$opts" \
        || fail "[$label] mount -o rdma,$opts failed (rc $?)"
    log "[$label] mounted in $(elapsed "$v0") s: $(grep " $SMB_MNT cifs " /proc/mounts | cut -d' ' -f4 | tr ',' '\n' | grep -E '^(vers|rdma|rsize|wsize)' | tr '\n' ' ')"
    grep " $SMB_MNT cifs " /proc/mounts | grep -q ',rdma' || fail "[$label] /proc/mounts does not show rdma"
    grep -q 'SMBDirect (in hex) protocol version: 100 ' /proc/fs/cifs/DebugData \
        || { cat /proc/fs/cifs/DebugData; fail "[$label] DebugData shows no SMBDirect transport"; }

    mkdir "$SMB_MNT/dir" || fail "[$label] mkdir"
    echo "hello over rdma" > "$SMB_MNT/dir/small" || fail "[$label] create"
    [ "$(ls "$SMB_MNT/dir" | tr '\n' ' ')" = "small " ] || fail "[$label] listing shows: $(ls -la "$SMB_MNT/dir")"
    [ "$(cat "$SMB_SHARE_DIR/dir/small")" = "hello over rdma" ] || fail "[$label] small file differs on the server"

    timeout 300 dd if=/tmp/src of="$SMB_MNT/dir/big" bs=4M count=$((mib / 4)) conv=fsync 2> /tmp/dd.w \
        || { cat /tmp/dd.w; fail "[$label] write failed"; }
    local wrate; wrate=$(dd_rate /tmp/dd.w)
    [ "$(stat -c %s "$SMB_MNT/dir/big")" = $((mib << 20)) ] || fail "[$label] wrong size after write"
    [ "$(sha256sum < "$SMB_SHARE_DIR/dir/big" | cut -d' ' -f1)" = "$want" ] \
        || fail "[$label] sha256 on the server's disk differs from the source"
    local got; got=$(timeout 300 dd if="$SMB_MNT/dir/big" bs=4M 2> /tmp/dd.r | sha256sum | cut -d' ' -f1) || got=failed
    local rrate; rrate=$(dd_rate /tmp/dd.r)
    [ "$got" = "$want" ] || { cat /tmp/dd.r; fail "[$label] sha256 read back differs"; }
    # shellcheck disable=SC2034  # for the caller
    CASE_WRITE=$wrate CASE_READ=$rrate
    log "[$label] $mib MiB write $wrate, read back $rrate, sha256 equal (source, server, read back)"

    mv "$SMB_MNT/dir/big" "$SMB_MNT/dir/renamed" || fail "[$label] rename"
    [ ! -e "$SMB_MNT/dir/big" ] && [ -f "$SMB_MNT/dir/renamed" ] && [ -f "$SMB_SHARE_DIR/dir/renamed" ] \
        || fail "[$label] rename not visible"
    rm "$SMB_MNT/dir/renamed" "$SMB_MNT/dir/small" && rmdir "$SMB_MNT/dir" || fail "[$label] delete"
    [ -z "$(ls -A "$SMB_MNT")" ] && [ -z "$(ls -A "$SMB_SHARE_DIR")" ] || fail "[$label] share not empty after delete"

    cp /proc/fs/cifs/DebugData "$art/debugdata-$label.txt"
    local sends; sends=$(( $(rxe_counter rdma_sends) - sends0 ))
    local ms mr msz recv
    ms=$((16#$(hexval max_send_size "$art/debugdata-$label.txt")))
    mr=$((16#$(hexval max_receive_size "$art/debugdata-$label.txt")))
    recv=$((16#$(hexval count_enqueue_reassembly_queue "$art/debugdata-$label.txt")))
    msz=$(( ms > mr ? ms : mr ))
    local payload=$(( 2 * (mib << 20) ))
    local share; share=$(awk -v s="$sends" -v m="$msz" -v p="$payload" \
        'BEGIN { x = 100 * (1 - s * m / p); if (x < 0) x = 0; printf "%.2f", x }')
    log "[$label] SENDs (both peers) $sends of <= $msz bytes, client received $recv messages: RDMA share of $((payload >> 20)) MiB >= $share%"
    awk -v s="$share" -v m="$min" 'BEGIN { exit !(s >= m) }' \
        || fail "[$label] RDMA share bound $share% below $min%: the payload went inline"
    timeout 60 umount "$SMB_MNT" || fail "[$label] umount"
    log "[$label] ok in $(elapsed "$v0") s"
}


# ---- our server: `smbdirect serve` as a user starts it (RDMA auto-detected: it starts the
# rdma-proxy next to it, which listens with RDMA CM on port 445 of rxe0), share [share] at
# SMB_SHARE_DIR (a tmpfs at /srv/share, as for ksmbd), user tuser/tpass. The host builds the
# binaries before ci/rxe-test (.ci/run): cargo build --release, and
# cargo build --release -p smbdirect-rdma-proxy --features verbs.
OURS_BIN=$RXE_REPO/target/release
OURS_LOG=/tmp/ours.log
OURS_PID=
# ours_start [SERVE-ARGS...]: extra arguments go to `smbdirect serve` (e.g. --config FILE)
ours_start() {
    need_bin "$OURS_BIN/smbdirect"
    need_bin "$OURS_BIN/rdma-proxy"
    mkdir -p /srv/share
    mountpoint -q /srv/share || mount -t tmpfs -o size=700m tmpfs /srv/share
    SMB_SHARE_DIR=/srv/share SMB_USER=tuser SMB_PASS=tpass
    RUST_LOG=${OURS_RUST_LOG:-info} "$OURS_BIN/smbdirect" serve --share "share=$SMB_SHARE_DIR" \
        --user "$SMB_USER:$SMB_PASS" ${OURS_EXTRA_ARGS:-} "$@" >> "$OURS_LOG" 2>&1 &
    OURS_PID=$!
    wait_tcp 445 || true
    wait_cm 445
}
# stops the server (SIGTERM), waits for it and its proxy to exit; copies the log to the artifacts
ours_stop() {
    if [ -n "$OURS_PID" ]; then
        kill "$OURS_PID" 2>/dev/null || true
        wait_for 20 "smbdirect serve to exit" sh -c "! kill -0 $OURS_PID"
        OURS_PID=
    fi
    wait_for 20 "rdma-proxy to exit" sh -c '! pgrep -x rdma-proxy'
    mkdir -p "$RXE_OUT/$RXE_TEST"
    cp "$OURS_LOG" "$RXE_OUT/$RXE_TEST/server.log" 2>/dev/null || true
}
ours_closed_lines() { grep -c 'closed: rdma_read=' "$OURS_LOG" || true; }
# The server logs "channel N released: slots_in_use=U slots=S channels_left=L" when a channel's
# last reference goes (its pool slots are back). ours_slots_idle N0: waits until a release line
# after the first N0 says no channel is left, and fails unless it also says no slot is in use.
ours_released_lines() { grep -c 'released: slots_in_use=' "$OURS_LOG" || true; }
ours_slots_idle() {
    wait_for 30 "the server to release its last SMB Direct channel" sh -c \
        "grep 'released: slots_in_use=' $OURS_LOG | tail -n +$(($1 + 1)) | tail -1 | grep -q 'channels_left=0\$'"
    local l; l=$(grep 'released: slots_in_use=' "$OURS_LOG" | tail -1 | sed 's/.*released: //')
    [[ $l == "slots_in_use=0 "* ]] || fail "pool slots still in use with no channel left: $l"
    echo "$l"
}
# proxy's log has a panic? (never allowed)
ours_no_panic() { ! grep -qE 'panicked at|RUST_BACKTRACE' "$OURS_LOG" || fail "a panic in the server or proxy log"; }

# ours_rdma_case LABEL MOUNT-OPTIONS MIB MIN-SHARE-PERCENT [SEND-BOUND-MIN]: cifs_rdma_case
# against our server (with SEND-BOUND-MIN, default MIN-SHARE-PERCENT, for its crude rxe SEND
# counter bound: 90 fits 64 KiB I/O, where that bound counts every SEND at its maximum size),
# then the proxy's own count: each channel logs at close
#   channel N closed: rdma_read=B rdma_write=B inline_sent=B inline_recv=B
# Over the channels this mount opened, RDMA must have moved at least 99% of the payload
# (MIB MiB written + MIB MiB read: rdma_read + rdma_write >= 0.99 * payload, and no more than the
# payload plus 1 MiB) and RDMA bytes / (RDMA + inline bytes) must reach MIN-SHARE-PERCENT.
ours_rdma_case() {
    local label=$1 opts=$2 mib=$3 min=$4 send_min=${5:-$4}
    local n0; n0=$(ours_closed_lines)
    cifs_rdma_case "$label" "$opts" "$mib" "$send_min"
    wait_for 20 "the proxy's channel close line" sh -c "[ \$(grep -c 'closed: rdma_read=' $OURS_LOG) -gt $n0 ]"
    local sums
    sums=$(grep 'closed: rdma_read=' "$OURS_LOG" | tail -n +$((n0 + 1)) | sed 's/.*closed: //' | awk '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); s[kv[1]] += kv[2] } n++ }
        END { printf "%d %d %d %d %d", n, s["rdma_read"], s["rdma_write"], s["inline_sent"], s["inline_recv"] }')
    local n rr rw is ir; read -r n rr rw is ir <<< "$sums"
    local payload=$(( 2 * (mib << 20) ))
    local of_payload share
    of_payload=$(awk -v r=$((rr + rw)) -v p="$payload" 'BEGIN { printf "%.2f", 100 * r / p }')
    share=$(awk -v r=$((rr + rw)) -v i=$((is + ir)) 'BEGIN { printf "%.3f", 100 * r / (r + i) }')
    log "[$label] proxy, $n channel(s): rdma_read=$rr rdma_write=$rw inline_sent=$is inline_recv=$ir: RDMA moved $of_payload% of the $((payload >> 20)) MiB payload; RDMA share of all bytes $share%"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$rr" "$rw" "$is" "$ir" "$of_payload" "$share" >> "$RXE_OUT/$RXE_TEST/rdma-share.tsv"
    [ "$n" -ge 1 ] || fail "[$label] no channel close line"
    [ $((100 * (rr + rw))) -ge $((99 * payload)) ] || fail "[$label] RDMA moved only $of_payload% of the payload"
    [ $((rr + rw)) -le $((payload + (1 << 20))) ] || fail "[$label] RDMA moved more than the payload: $((rr + rw))"
    awk -v s="$share" -v m="$min" 'BEGIN { exit !(s >= m) }' || fail "[$label] RDMA share $share% below $min%"
}
