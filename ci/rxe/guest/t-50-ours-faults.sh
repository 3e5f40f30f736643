#!/bin/bash
# Faults against our server over rxe (issue 9 part 7):
# 1. malformed SMB Direct input: smbd-fault (a raw client of ours on the verbs layer) runs its 11
#    scenarios (ok, bad-version, zero-credits, small-receive, small-fragmented, short-negotiate,
#    data-offset-past, remaining-lies, fragmented-too-large, zero-credits-data, oversize); each
#    must see the behaviour it expects (malformed: a clean disconnect within 10 s), each must
#    add an "SMB Direct connection ends: <reason>" line to the proxy's log, nothing panics, the
#    same proxy keeps running and the next mount -o rdma works.
# 2. the client goes away mid-transfer: a reader on the mount is SIGKILLed with RDMA READs in
#    flight, then the share is unmounted (plain umount: -f with the killed reader's I/O in flight
#    BUGs cifs 6.1); the proxy's QPs, MRs and CM ids go back to the idle count (rdma res show)
#    and the next mount reads the file back intact.
#    Pool slots: after the mount that follows the malformed input and after the killed reader,
#    the server's last channel release line says no channel is left and no pool slot is in use.
# 3. the proxy is SIGKILLed: TCP service goes on (a TCP mount works meanwhile), `smbdirect serve`
#    restarts the proxy, and a mount -o rdma reads the file back intact.
# rxe-timeout: 420
. "$(dirname "$0")/lib.sh"
need_bin "$OURS_BIN/smbd-fault"
MB=${OURS_FAULT_MIB:-64}
rxe_up
modprobe cifs
ours_start
trap 'timeout 60 umount "$SMB_MNT" 2>/dev/null || true; ours_stop' EXIT
mkdir -p "$SMB_MNT"
RDMA_OPTS="rdma,vers=3.1.1,username=$SMB_USER,password=$SMB_PASS,cache=none"
TCP_OPTS="vers=3.1.1,username=$SMB_USER,password=$SMB_PASS,cache=none"
proxy_pid() { pgrep -x rdma-proxy; }
# the proxy's verbs resources: QPs, MRs and CM ids owned by rdma-proxy
res_count() { rdma res show "$1" 2>/dev/null | grep -c 'comm rdma-proxy' || true; }
res() { echo "qp=$(res_count qp) mr=$(res_count mr) cm_id=$(res_count cm_id)"; }
ends() { grep -c 'SMB Direct connection ends' "$OURS_LOG" || true; }

# ---- 1. malformed input
p0=$(proxy_pid)
idle=$(res)
log "proxy pid $p0, resources idle: $idle"
for s in ok bad-version zero-credits small-receive small-fragmented short-negotiate data-offset-past \
         remaining-lies fragmented-too-large zero-credits-data oversize; do
    e0=$(ends)
    timeout 30 "$OURS_BIN/smbd-fault" "$RXE_ADDR:445" "$s" || fail "smbd-fault $s: the server did not behave as expected (rc $?)"
    wait_for 15 "the proxy's log line for $s" sh -c "[ \$(grep -c 'SMB Direct connection ends' $OURS_LOG) -gt $e0 ]"
    log "[$s] $(grep 'SMB Direct connection ends' "$OURS_LOG" | tail -n +$((e0 + 1)) | head -1 | sed 's/.*connection ends: //' | cut -c1-160)"
done
[ "$(proxy_pid)" = "$p0" ] || fail "the proxy changed during the malformed-input scenarios (pid $p0 -> $(proxy_pid))"
ours_no_panic
wait_for 30 "the proxy's resources to go back to idle ($idle)" sh -c "[ \"\$(rdma res show qp | grep -c 'comm rdma-proxy')\" = 0 ]"
log "after the 11 scenarios: resources $(res)"

head -c $((MB << 20)) "$RXE_DATA/random-256m.bin" > "$SMB_SHARE_DIR/src"
r0=$(ours_released_lines)
timeout 120 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" -o "$RDMA_OPTS" || fail "mount -o rdma after the malformed input (rc $?)"
cmp "$SMB_SHARE_DIR/src" "$SMB_MNT/src" || fail "read back after the malformed input differs"
log "mount -o rdma after the malformed input: ok, $MB MiB read back intact; resources mounted: $(res)"
timeout 60 umount "$SMB_MNT" || fail "umount"
slots=$(ours_slots_idle "$r0")
log "after that mount: $slots"
timeout 120 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" -o "$RDMA_OPTS" || fail "mount -o rdma for the reader (rc $?)"

# ---- 2. the reader is killed mid-transfer
sh -c "while :; do dd if=$SMB_MNT/src of=/dev/null bs=4M 2>/dev/null; done" &
loop=$!
n0=$(ours_closed_lines); r0=$(ours_released_lines)
sleep 3
kill -STOP "$loop"
pkill -9 -x dd && log "reader (dd) SIGKILLed mid-transfer" || fail "no dd was running"
kill -9 "$loop"; wait "$loop" 2>/dev/null || true
timeout 60 umount "$SMB_MNT" || fail "umount after the killed reader (rc $?)"
wait_for 30 "the proxy's QPs to go back to 0" sh -c "[ \"\$(rdma res show qp | grep -c 'comm rdma-proxy')\" = 0 ]"
wait_for 20 "the channel close line" sh -c "[ \$(grep -c 'closed: rdma_read=' $OURS_LOG) -gt $n0 ]"
[ "$(res)" = "$idle" ] || fail "resources after the client went away: $(res), idle was $idle"
log "resources after the client went away: $(res) (idle: $idle); $(grep 'closed: rdma_read=' "$OURS_LOG" | tail -1 | sed 's/.*\(channel [0-9]* closed\)/\1/')"
slots=$(ours_slots_idle "$r0")
log "pool after the client went away: $slots"
timeout 120 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" -o "$RDMA_OPTS" || fail "mount -o rdma after the killed reader (rc $?)"
cmp "$SMB_SHARE_DIR/src" "$SMB_MNT/src" || fail "read back after the killed reader differs"
timeout 60 umount "$SMB_MNT" || fail "umount"
log "mount -o rdma after the killed reader: ok, read back intact"

# ---- 3. the proxy is killed
p1=$(proxy_pid)
kill -9 "$p1"
log "rdma-proxy pid $p1 SIGKILLed"
timeout 60 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" -o "$TCP_OPTS" || fail "TCP mount while the proxy is down (rc $?)"
cmp "$SMB_SHARE_DIR/src" "$SMB_MNT/src" || fail "TCP read back differs"
timeout 60 umount "$SMB_MNT" || fail "umount (TCP)"
log "TCP service went on: mount, read back, unmount ok"
wait_for 60 "serve to restart the proxy" sh -c "p=\$(pgrep -x rdma-proxy) && [ \"\$p\" != $p1 ]"
wait_cm 445 30
grep -q 'rdma-proxy .*restarting in' "$OURS_LOG" || fail "serve logged no restart of the proxy"
log "proxy restarted: pid $(proxy_pid); $(grep 'restarting in' "$OURS_LOG" | tail -1 | sed 's/.*WARN[^:]*: //' | cut -c1-160)"
timeout 120 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" -o "$RDMA_OPTS" || fail "mount -o rdma after the proxy restart (rc $?)"
grep -q 'SMBDirect (in hex) protocol version: 100 ' /proc/fs/cifs/DebugData || fail "not SMB Direct after the restart"
cmp "$SMB_SHARE_DIR/src" "$SMB_MNT/src" || fail "read back after the proxy restart differs"
timeout 60 umount "$SMB_MNT" || fail "umount"
rm -f "$SMB_SHARE_DIR/src"
ours_no_panic
log "mount -o rdma after the proxy restart: ok, read back intact; resources $(res)"
log "ok"
