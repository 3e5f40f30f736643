#!/bin/bash
# SMB Direct keepalives against our server over rxe (issue 9 part 7), with a short interval
# (smb.conf `smbdirect:rdma keepalive interval = 2`, `smbdirect:rdma keepalive timeout = 5`,
# passed to the proxy as --keepalive-interval/--keepalive-timeout):
# 1. an idle kernel mount -o rdma stays up across 6 intervals and still reads its file back;
#    its channel's close line shows >= 3 keepalives sent and all but at most the last one
#    answered (one may be in flight at the unmount);
# 2. our raw client (smbd-fault keepalive-idle: the transport core answers keepalives) idles
#    for 4 intervals and is still served; its close line shows keepalives sent and answered;
# 3. a raw client that stops processing anything (smbd-fault keepalive-mute) is dropped by
#    the proxy after the interval plus the timeout, with "SMB Direct connection ends:
#    keepalive unanswered", its close line shows 1 keepalive sent and 0 answered, and it
#    leaves nothing behind: the server releases the channel with no pool slot in use and the
#    proxy's QPs, MRs and CM ids are back to idle.
# rxe-timeout: 180
. "$(dirname "$0")/lib.sh"
need_bin "$OURS_BIN/smbd-fault"
# a log of this server only (channel numbers restart with each proxy)
OURS_LOG=/tmp/t62-ours.log
: > "$OURS_LOG"
INTERVAL=2 TIMEOUT=5
rxe_up
modprobe cifs
mkdir -p /srv/share
conf=/tmp/t62-smb.conf
printf '[global]\n\tsmbdirect:rdma keepalive interval = %s\n\tsmbdirect:rdma keepalive timeout = %s\n[guest]\n\tpath = /srv/share\n\tguest ok = yes\n\tread only = no\n' \
    "$INTERVAL" "$TIMEOUT" > "$conf"
ours_start --config "$conf"
trap 'timeout 60 umount "$SMB_MNT" 2>/dev/null || true; ours_stop' EXIT
res_count() { rdma res show "$1" 2>/dev/null | grep -c 'comm rdma-proxy' || true; }
res() { echo "qp=$(res_count qp) mr=$(res_count mr) cm_id=$(res_count cm_id)"; }
idle=$(res)
args=$(tr '\0' ' ' < "/proc/$(pgrep -x rdma-proxy)/cmdline")
[[ $args == *"--keepalive-interval $INTERVAL --keepalive-timeout $TIMEOUT"* ]] || fail "the proxy did not get the keepalive settings: $args"
log "proxy started with --keepalive-interval $INTERVAL --keepalive-timeout $TIMEOUT; resources idle: $idle"
# the close line that follows the first N0 ones: "rdma_read=... keepalives_sent=K keepalives_answered=A"
close_after() {
    wait_for 20 "a channel close line" sh -c "[ \$(grep -c 'closed: rdma_read=' $OURS_LOG) -gt $1 ]"
    grep 'closed: rdma_read=' "$OURS_LOG" | tail -n +$(($1 + 1)) | head -1 | sed 's/.*\(channel [0-9]* closed\)/\1/'
}
ka() { [[ $1 =~ keepalives_sent=([0-9]+)\ keepalives_answered=([0-9]+) ]] && echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"; }

# ---- 1. an idle mount
n0=$(ours_closed_lines); r0=$(ours_released_lines); e0=$(grep -c 'SMB Direct connection ends' "$OURS_LOG" || true)
mkdir -p "$SMB_MNT"
head -c $((1 << 20)) "$RXE_DATA/random-256m.bin" > "$SMB_SHARE_DIR/ka"
timeout 120 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" -o "rdma,vers=3.1.1,username=$SMB_USER,password=$SMB_PASS,cache=none" \
    || fail "mount -o rdma (rc $?)"
timeout 60 cmp "$SMB_SHARE_DIR/ka" "$SMB_MNT/ka" || fail "read back before idling"
sleep $((6 * INTERVAL))
[ "$(grep -c 'SMB Direct connection ends' "$OURS_LOG" || true)" = "$e0" ] || fail "a channel ended while the mount was idle: $(grep 'SMB Direct connection ends' "$OURS_LOG" | tail -1)"
timeout 60 cmp "$SMB_SHARE_DIR/ka" "$SMB_MNT/ka" || fail "read back after idling"
timeout 60 umount "$SMB_MNT" || fail "umount"
line=$(close_after "$n0")
read -r sent answered <<< "$(ka "$line")"
[ "${sent:-0}" -ge 3 ] || fail "idle mount: only ${sent:-0} keepalives sent in $((6 * INTERVAL)) s: $line"
[ "$answered" -ge $((sent - 1)) ] || fail "idle mount: $answered of $sent keepalives answered: $line"
slots=$(ours_slots_idle "$r0")
log "idle mount: up across $((6 * INTERVAL)) s, file read back; $line; $slots"

# ---- 2. the raw client idles, answering keepalives
n0=$(ours_closed_lines); r0=$(ours_released_lines)
timeout 60 "$OURS_BIN/smbd-fault" "$RXE_ADDR:445" keepalive-idle --share guest --wait $((4 * INTERVAL)) > /tmp/t62-idle.out 2>&1 \
    || { cat /tmp/t62-idle.out; fail "smbd-fault keepalive-idle (rc $?)"; }
line=$(close_after "$n0")
read -r sent answered <<< "$(ka "$line")"
[ "${sent:-0}" -ge 2 ] || fail "raw idle client: only ${sent:-0} keepalives sent: $line"
[ "$answered" -ge $((sent - 1)) ] || fail "raw idle client: $answered of $sent keepalives answered: $line"
slots=$(ours_slots_idle "$r0")
log "raw client idle: $(grep '^keepalive-idle: ' /tmp/t62-idle.out | head -1 | sed 's/^keepalive-idle: //'); $line; $slots"

# ---- 3. the raw client stops answering
n0=$(ours_closed_lines); r0=$(ours_released_lines); e0=$(grep -c 'SMB Direct connection ends' "$OURS_LOG" || true)
timeout 60 "$OURS_BIN/smbd-fault" "$RXE_ADDR:445" keepalive-mute --share guest --wait $((3 * (INTERVAL + TIMEOUT))) > /tmp/t62-mute.out 2>&1 \
    || { cat /tmp/t62-mute.out; fail "smbd-fault keepalive-mute: not dropped (rc $?)"; }
line=$(close_after "$n0")
why=$(grep 'SMB Direct connection ends' "$OURS_LOG" | tail -n +$((e0 + 1)) | head -1 | sed 's/.*connection ends: //')
[[ $why == "keepalive unanswered"* ]] || fail "the mute client was dropped for another reason: $why"
[ "$(ka "$line")" = "1 0" ] || fail "mute client: expected 1 keepalive sent, 0 answered: $line"
slots=$(ours_slots_idle "$r0")
wait_for 30 "the proxy's resources to go back to idle ($idle)" sh -c "[ \"\$(rdma res show qp | grep -c 'comm rdma-proxy')\" = 0 ]"
[ "$(res)" = "$idle" ] || fail "resources after the mute client: $(res), idle was $idle"
log "raw client mute: $(grep '^keepalive-mute: ' /tmp/t62-mute.out | head -1 | sed 's/^keepalive-mute: //'); ends: $why; $line; $slots; resources $(res)"
rm -f "$SMB_SHARE_DIR/ka"
ours_no_panic
log "ok"
