#!/bin/bash
# A lost connection with the kernel client holding a durable handle (issue 11): cifs mounts our
# server over TCP (vers=3.1.1, `smb2 leases = no` so that cifs asks for a batch oplock and a
# durable v1 handle, as it does with servers without leasing), a process keeps a file open and
# writes a line through its fd; the TCP connection is then killed from the server side (ss -K).
# Checked: the server keeps the open disconnected (share mode, oplock); the client reconnects and
# the next write through the SAME fd lands (the file on the server's disk has both lines); the
# kept open does not linger: the client's reopen of the file closes it ("closed: another open
# needs its oplock broken"), and no second open of the file stays behind after the holder exits.
# cifs 6.1 sends its DHnC together with a QFid context, which MS-SMB2 3.3.5.9.7 (and Windows and
# Samba) refuse with OBJECT_NAME_NOT_FOUND, so it falls back to a plain open by path: this test
# proves the reconnect path with the kernel client, not the DHnC itself (tests/peers/test_durable.py
# and the sim tests do that).
# rxe-timeout: 240
. "$(dirname "$0")/lib.sh"
need_bin "$OURS_BIN/smbdirect"
OURS_LOG=/tmp/t70-ours.log
: > "$OURS_LOG"
modprobe cifs
mkdir -p /srv/share "$SMB_MNT"
mountpoint -q /srv/share || mount -t tmpfs -o size=64m tmpfs /srv/share
conf=/tmp/t70-smb.conf
printf '[global]\n\tsmb2 leases = no\n' > "$conf"
RUST_LOG=info "$OURS_BIN/smbdirect" serve --config "$conf" --share share=/srv/share --user tuser:tpass >> "$OURS_LOG" 2>&1 &
OURS_PID=$!
holder=
cleanup() {
    [ -n "$holder" ] && kill "$holder" 2>/dev/null
    timeout 60 umount "$SMB_MNT" 2>/dev/null || true
    kill "$OURS_PID" 2>/dev/null || true
    mkdir -p "$RXE_OUT/$RXE_TEST"
    cp "$OURS_LOG" "$RXE_OUT/$RXE_TEST/server.log" 2>/dev/null || true
}
trap cleanup EXIT
wait_tcp 445
timeout 60 mount -t cifs //127.0.0.1/share "$SMB_MNT" -o username=tuser,password=tpass,vers=3.1.1,cache=none,echo_interval=1 \
    || fail "mount over TCP failed"
log "mounted: $(grep " $SMB_MNT cifs " /proc/mounts | cut -d' ' -f4)"

# The holder: writes "one" now, waits for a line on its stdin (a fifo), then writes "two"
# through the same descriptor.
mkfifo /tmp/t70-go
( exec 3>"$SMB_MNT/held.txt" || exit 1; echo one >&3; read -r _ < /tmp/t70-go; echo two >&3; exec 3>&-; echo done > /tmp/t70-done ) &
holder=$!
wait_for 20 "the first line on the server" sh -c 'grep -q one /srv/share/held.txt'

# Kill the client's TCP connection on the server side.
ss -K '( sport = :445 )' > /dev/null 2>&1 || fail "ss -K failed (kernel without CONFIG_INET_DIAG_DESTROY?)"
wait_for 20 "the server to keep the open disconnected" grep -q 'durable handle disconnected, kept' "$OURS_LOG"
log "connection killed; open kept: $(grep -c 'durable handle disconnected, kept' "$OURS_LOG")"

echo go > /tmp/t70-go
wait_for 60 "the write after the reconnect" test -e /tmp/t70-done
holder=
[ "$(cat /srv/share/held.txt)" = "$(printf 'one\ntwo')" ] || fail "the file on the server holds: $(cat /srv/share/held.txt)"
grep -qE 'durable handle (reconnected|closed: another open needs its oplock broken)' "$OURS_LOG" \
    || { grep -i durable "$OURS_LOG" | tail; fail "the kept open was neither reconnected nor released by the client's reopen"; }
log "the second write landed through the same fd; the kept open: $(grep -oE 'durable handle (reconnected|closed: another open needs its oplock broken)' "$OURS_LOG" | tail -1)"
timeout 60 umount "$SMB_MNT" || fail "umount"
# `smbdirect status` must answer, and list neither an open nor a disconnected open of the file.
exec 3>&2   # wait_for silences its command: a failing status is reported on fd 3
no_open() { local out; out=$("$OURS_BIN/smbdirect" status --state-dir /run/smbdirect 2>&1) || { echo "FAIL: smbdirect status: $out" >&3; exit 1; }; ! grep -q held.txt <<< "$out"; }
wait_for 20 "the server to hold no open of the file" no_open
! grep -qE 'panicked at|RUST_BACKTRACE' "$OURS_LOG" || fail "a panic in the server log"
log "ok"
