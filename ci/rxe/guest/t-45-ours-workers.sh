#!/bin/bash
# SMB Direct through worker processes (issue 10 parts 1 and 5, issue 9 "if the SMB server process
# dies, the proxy drops that process's channels and keeps serving"): `smbdirect serve
# --max-workers 2`; the proxy's control socket ends in the supervisor, which passes the pool
# (Hello, each worker its own slot range) to every worker and routes each channel by ClientGUID.
#  1. two kernel mounts -o rdma (vers=3.1.1 at A and vers=3.0 at B: two cifs connections, two
#     ClientGUIDs) land on different workers (`smbdirect status`: two RDMA channels, two workers),
#     each writes a file and reads it back by checksum; status shows the proxy's per-channel byte
#     counters, with RDMA bytes on both channels;
#  2. A's worker is SIGKILLed: the proxy stays up (same pid) and closes exactly that channel (its
#     "channel N closed" line), B's mount goes on working (write + read back a new file), the
#     supervisor restarts the worker;
#  3. a new mount -o rdma works and lands on the restarted worker (which got the pool again).
# rxe-timeout: 420
. "$(dirname "$0")/lib.sh"
MIB=${WORKERS_MIB:-64}
rxe_up
modprobe cifs
make_source "$MIB"
want=$(source_sha "$MIB")
OURS_EXTRA_ARGS="--max-workers 2" ours_start
cleanup() {
    local rc=$?
    [ "$rc" = 0 ] || { echo "server log tail:"; tail -40 "$OURS_LOG" | cut -c1-240; }
    for m in /mnt/a /mnt/b /mnt/c; do
        mountpoint -q "$m" && { timeout 60 umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
    done
    ours_stop || true
}
trap cleanup EXIT
p0=$(pgrep -x rdma-proxy) || fail "no rdma-proxy"
log "serve with 2 workers up; proxy pid $p0"

status() { "$OURS_BIN/smbdirect" status "$@"; }
# "WORKER ID RDMA_READ RDMA_WRITE" of every RDMA channel, from the status tables
rdma_channels() { status | awk '/^Channels/ { s = 1; next } /^$/ { s = 0 } s && $2 == "RDMA" { print $1, $3, $8, $9 }'; }
# "ID PID" of every started worker
workers() { status | awk '/^Workers/ { s = 1; next } /^$/ { s = 0 } s && $1 ~ /^[0-9]+$/ { print $1, $2 }'; }
worker_pid() { workers | awk -v w="$1" '$1 == w { print $2 }'; }
opts() { echo "rdma,username=$SMB_USER,password=$SMB_PASS,cache=none,$1"; }
# write_check MOUNT NAME: dd the source to MOUNT/NAME, sha256 on the server and read back
write_check() {
    timeout 120 dd if=/tmp/src of="$1/$2" bs=4M count=$((MIB / 4)) conv=fsync 2> /tmp/dd.w \
        || { cat /tmp/dd.w; fail "write $1/$2"; }
    [ "$(sha256sum < "$SMB_SHARE_DIR/$2" | cut -d' ' -f1)" = "$want" ] || fail "$2 differs on the server"
    [ "$(timeout 120 cat "$1/$2" | sha256sum | cut -d' ' -f1)" = "$want" ] || fail "$2 read back through $1 differs"
}

mkdir -p /mnt/a /mnt/b /mnt/c
timeout 120 mount -t cifs "//$RXE_ADDR/share" /mnt/a -o "$(opts vers=3.1.1)" || fail "mount A (rc $?)"
timeout 120 mount -t cifs "//$RXE_ADDR/share" /mnt/b -o "$(opts vers=3.0)" || fail "mount B (rc $?)"
write_check /mnt/a a.bin
write_check /mnt/b b.bin
status | tee "$RXE_OUT/$RXE_TEST/status-before.txt" | sed 's/^/  | /'
chans=$(rdma_channels)
[ "$(echo "$chans" | grep -c .)" = 2 ] || fail "status shows $(echo "$chans" | grep -c .) RDMA channels, not 2: $chans"
wa=$(echo "$chans" | sed -n 1p | cut -d' ' -f1)
wb=$(echo "$chans" | sed -n 2p | cut -d' ' -f1)
[ "$wa" != "$wb" ] || fail "both mounts on worker $wa"
# the proxy's counters: each channel moved its file by RDMA (read = the client's writes)
echo "$chans" | while read -r w id rr rw; do
    [ "$rr" -ge $((MIB << 20)) ] && [ "$rw" -ge $((MIB << 20)) ] \
        || fail "channel $id on worker $w: RDMA read $rr / write $rw bytes, want >= $((MIB << 20)) each"
done || exit 1
log "two RDMA channels on workers $wa and $wb; proxy counters by channel: $(echo "$chans" | tr '\n' ';')"

# Which mount is on which worker: A's channel id is the lower (mounted first).
ida=$(echo "$chans" | sort -k2 -n | sed -n 1p | cut -d' ' -f2)
wa=$(echo "$chans" | awk -v i="$ida" '$2 == i { print $1 }')
wb=$(echo "$chans" | awk -v i="$ida" '$2 != i { print $1 }')
pa=$(worker_pid "$wa")
pb=$(worker_pid "$wb")
[ -n "$pa" ] && [ -n "$pb" ] || fail "worker pids not found: $(workers)"
closed0=$(ours_closed_lines)
t0=$(now)
kill -9 "$pa"
log "worker $wa (pid $pa, mount A, channel $ida) SIGKILLed"
wait_for 20 "the proxy to close the dead worker's channel" sh -c "[ \$(grep -c 'closed: rdma_read=' $OURS_LOG) -gt $closed0 ]"
grep 'closed: rdma_read=' "$OURS_LOG" | tail -n +$((closed0 + 1)) | grep -q "channel $ida closed" \
    || fail "the proxy closed another channel: $(grep 'closed: rdma_read=' "$OURS_LOG" | tail -n +$((closed0 + 1)))"
log "proxy closed channel $ida ($(elapsed "$t0") s after the kill): $(grep "channel $ida closed" "$OURS_LOG" | sed 's/.*channel/channel/')"
[ "$(pgrep -x rdma-proxy)" = "$p0" ] || fail "the proxy changed: $p0 -> $(pgrep -x rdma-proxy)"

# B's mount (the other worker) is untouched.
write_check /mnt/b b2.bin
[ "$(worker_pid "$wb")" = "$pb" ] || fail "worker $wb changed pid"
log "mount B on worker $wb (pid $pb) still works: $MIB MiB written and read back intact"

wait_for 30 "the supervisor to restart worker $wa" sh -c "p=\$($OURS_BIN/smbdirect status | awk '/^Workers/ { s = 1; next } /^\$/ { s = 0 } s && \$1 == $wa { print \$2 }'); [ -n \"\$p\" ] && [ \"\$p\" != - ] && [ \"\$p\" != $pa ]"
log "worker $wa restarted as pid $(worker_pid "$wa"); $(grep "worker ended" "$OURS_LOG" | tail -1 | sed 's/.*WARN[^:]*: //' | cut -c1-160)"
timeout 60 umount /mnt/a || umount -l /mnt/a || true
# cifs may have reconnected mount A to the restarted worker meanwhile: wait
# until that connection is gone, so the worker is free again for the next mount.
wait_for 30 "worker $wa to have no connection" sh -c "c=\$($OURS_BIN/smbdirect status | awk '/^Workers/ { s = 1; next } /^\$/ { s = 0 } s && \$1 == $wa { print \$5 }'); [ \"\$c\" = 0 ]"

# A new mount lands on the restarted worker (the only one without a client) over RDMA.
timeout 120 mount -t cifs "//$RXE_ADDR/share" /mnt/c -o "$(opts vers=3.1.1)" || fail "mount after the worker restart (rc $?)"
write_check /mnt/c c.bin
chans=$(rdma_channels)
echo "$chans" | awk -v w="$wa" '$1 == w' | grep -q . || fail "the new mount is not on the restarted worker $wa: $chans"
[ "$(pgrep -x rdma-proxy)" = "$p0" ] || fail "the proxy changed: $p0 -> $(pgrep -x rdma-proxy)"
status > "$RXE_OUT/$RXE_TEST/status-after.txt"
log "new mount on the restarted worker $wa: ok; channels now: $(echo "$chans" | tr '\n' ';')"
timeout 60 umount /mnt/c || fail "umount C"
timeout 60 umount /mnt/b || fail "umount B"
ours_no_panic
log "ok"
