#!/bin/bash
# An SMB Direct channel whose binding reaches a worker that does not own the session is passed
# to the worker that does (issue 10; server/src/connpass.rs, transport_smbd.rs, rdma.rs), and
# RDMA READ/WRITE then work on it from that worker's own pool slots.
#
# The supervisor routes a connection by the ClientGUID of its first NEGOTIATE, and one without
# (zero, or an SMB1 NEGOTIATE) by a hash of its peer address. rdma_check (the project's client,
# bench/examples/rdma_check.rs) runs --bind with ClientGUID zero:
#   - its TCP connection comes from 127.0.0.2 (an address of lo here, so connecting to it
#     uses it as the source), which hashes to worker 0: the session is worker 0's;
#   - its SMB Direct channel comes from 10.9.0.1 (rxe0's address), which hashes to worker 1;
#     the binding SESSION_SETUP arrives there, the channel reader halts, and the channel socket
#     goes through the supervisor to worker 0, which answers the binding;
#   - then 8 MiB in 1 MiB WRITEs the server RDMA-reads and READs it RDMA-writes on that channel,
#     every byte compared.
# The test checks the pass in the server log (passed by worker 1, taken over by worker 0),
# `smbdirect status` (the session on a TCP and an RDMA channel, both in worker 0, with the RDMA
# bytes), the file on disk, the proxy's close line (exactly the file's size by RDMA read and by
# RDMA write) and that every pool slot came back, and no panic.
# rxe-timeout: 180
. "$(dirname "$0")/lib.sh"
CHECK=$RXE_REPO/target/release/examples/rdma_check
need_bin "$CHECK"
OURS_LOG=/tmp/t48-ours.log
: > "$OURS_LOG"
rxe_up
ip addr replace 127.0.0.2/32 dev lo
src=$(ip -o route get 127.0.0.2 | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[ "$src" = 127.0.0.2 ] || fail "a connection to 127.0.0.2 would come from $src"
ours_start --max-workers 2
trap 'ours_stop' EXIT
art=$RXE_OUT/$RXE_TEST
mkdir -p "$art"
size=$((8 << 20))
r0=$(ours_released_lines)
c0=$(ours_closed_lines)
t0=$(now)
timeout 120 "$CHECK" //127.0.0.2/share -U "$SMB_USER%$SMB_PASS" --bind --client-guid 00000000000000000000000000000000 \
    --size "$size" --io $((1 << 20)) --pattern-out /tmp/t48-want.bin \
    --then "$OURS_BIN/smbdirect status --json > $art/status.json && echo \$RDMA_CHECK_SESSION > /tmp/t48-session" \
    > "$art/rdma_check.out" 2>&1 || {
    rc=$?
    cat "$art/rdma_check.out"
    grep -E 'binding|passed|taken over|pass the' "$OURS_LOG" | tail -20
    fail "rdma_check failed (rc $rc)"
}
sed 's/^/  | /' "$art/rdma_check.out"
log "rdma_check passed in $(elapsed "$t0") s"
grep -q 'SMB Direct channel passed to the worker that owns its session' "$OURS_LOG" \
    || fail "the supervisor did not pass the SMB Direct channel (both channels landed on one worker?)"
grep 'SMB Direct channel passed to the worker that owns its session' "$OURS_LOG" | sed 's/^/  server: /'
grep -q 'SMB Direct channel taken over from another worker' "$OURS_LOG" || fail "no worker took the channel over"
sid=$(cat /tmp/t48-session)
[ $((sid >> 48)) = 0 ] || fail "session $sid is not worker 0's"
python3 - "$art/status.json" "$sid" "$size" <<'EOF' || fail "status does not show the session's two channels in worker 0 with their RDMA bytes"
import json, sys
st = json.load(open(sys.argv[1])); sid = int(sys.argv[2]); size = int(sys.argv[3])
on = [c for c in st["channels"] if sid in c.get("sessions", [])]
print(f"  status: session {sid:#x} on: " + "; ".join(
    f"{c['transport']} id {c['id']} worker {c.get('worker')} {c.get('address')}"
    + (f" rdma_read={c.get('rdma_read')} rdma_write={c.get('rdma_write')}" if c["transport"] == "RDMA" else "") for c in on))
rdma = [c for c in on if c["transport"] == "RDMA"]
tcp = [c for c in on if c["transport"] == "TCP"]
assert len(rdma) == 1 and len(tcp) == 1, f"session {sid:#x}: {len(rdma)} RDMA, {len(tcp)} TCP channels: {st['channels']}"
assert rdma[0].get("worker") == 0 and tcp[0].get("worker") == 0, "the channels are not both in worker 0"
c = rdma[0]
assert c.get("rdma_read", 0) >= size and c.get("rdma_write", 0) >= size, f"RDMA bytes below {size}: {c}"
EOF
cmp /tmp/t48-want.bin /srv/share/rdma-check.bin || fail "the file on the server's disk differs from what the client wrote"
wait_for 30 "the proxy's close line of the channel" sh -c "[ \$(grep -c 'closed: rdma_read=' $OURS_LOG) -gt $c0 ]"
line=$(grep 'closed: rdma_read=' "$OURS_LOG" | tail -n +$((c0 + 1)) | head -1 | sed 's/.*\(channel [0-9]* closed: .*\)/\1/')
log "proxy: $line"
rr=$(echo "$line" | sed -n 's/.*rdma_read=\([0-9]*\).*/\1/p')
rw=$(echo "$line" | sed -n 's/.*rdma_write=\([0-9]*\).*/\1/p')
[ "$rr" = "$size" ] && [ "$rw" = "$size" ] || fail "RDMA read/write $rr/$rw bytes, not exactly $size each"
# one release line from worker 1 (at the pass) and one from worker 0 (at the end)
wait_for 30 "both workers to release the channel" sh -c "[ \$(grep -c 'released: slots_in_use=' $OURS_LOG) -ge $((r0 + 2)) ]"
log "released: $(ours_slots_idle "$r0")"
ours_no_panic
log "ok"
