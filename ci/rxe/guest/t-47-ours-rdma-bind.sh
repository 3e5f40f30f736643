#!/bin/bash
# An SMB Direct channel bound to a session negotiated over TCP (issue 10 part 4), by the
# project's own client (bench/src/client: session layer + rdma.rs, the transport's core in the
# client role over verbs, registering its own buffers), against our server over rxe (issue 12).
#
# Why not the kernel client: cifs 6.1 (fs/smb/client/sess.c, cifs_try_adding_channels and
# cifs_chan_update_iface) skips every server interface whose RDMA_CAPABLE differs from the
# primary connection's transport ("do not mix rdma and non-rdma interfaces"), so
# `-o multichannel` over TCP only adds TCP channels, and `-o rdma,multichannel` only RDMA ones.
#
# rdma_check (bench/examples/rdma_check.rs), two cases, each on fresh connections:
#   bind:   NEGOTIATE (3.1.1) + NTLMv2 SESSION_SETUP over TCP, TREE_CONNECT,
#           FSCTL_QUERY_NETWORK_INTERFACE_INFO, an SMB Direct channel to the RDMA_CAPABLE
#           interface bound to the session (signed binding SESSION_SETUP); then 8 MiB in 1 MiB
#           WRITEs the server RDMA-reads from the client's registered buffers and READs it
#           RDMA-writes into fresh zeroed registrations (Channel RDMA_V1) on the bound channel,
#           every byte compared;
#   bind-inv: the same, 4 MiB in 256 KiB with Channel RDMA_V1_INVALIDATE: the client's keys are
#           type 2 memory windows, which the server invalidates with Send-With-Invalidate;
#   kill-worker: the worker is killed (-9) mid-transfer on the bound channel: the client fails
#           with a clear error (exit code 1) and the supervisor restarts the worker;
#   direct: the same session set up over SMB Direct itself (like mount -o rdma), 2 MiB in 64 KiB,
#           served after the restart.
# While the session is up it runs `smbdirect status --json`. The test then checks:
#   - status shows the client's session on an RDMA channel whose proxy counters show at least
#     the file's size moved by RDMA read (the WRITEs) and by RDMA write (the READs), and (bind)
#     on a TCP channel too, both from the same ClientGUID;
#   - the file on the server's disk is exactly the client's pattern (cmp);
#   - the proxy's close line of that channel: rdma_read and rdma_write are exactly the file's
#     size (nothing else went by RDMA, nothing counted twice), inline bytes far fewer;
#   - the server released the channel with no pool slot in use, and logged no panic.
# rxe-timeout: 240
. "$(dirname "$0")/lib.sh"
CHECK=$RXE_REPO/target/release/examples/rdma_check
need_bin "$CHECK"
OURS_LOG=/tmp/t47-ours.log
: > "$OURS_LOG"
rxe_up
ours_start
trap 'ours_stop' EXIT
art=$RXE_OUT/$RXE_TEST
mkdir -p "$art"

# run_case LABEL SIZE IO [--bind]: one rdma_check run on its own connections
run_case() {
    local label=$1 size=$2 io=$3; shift 3
    local mode="$*" bind=; [[ $mode == *--bind* ]] && bind=--bind
    local r0 c0 t0
    r0=$(ours_released_lines)
    c0=$(ours_closed_lines)
    rm -f "$art/status-$label.json"
    t0=$(now)
    # shellcheck disable=SC2086  # $mode: nothing, --bind and/or --invalidate
    timeout 120 "$CHECK" "//$RXE_ADDR/share" -U "$SMB_USER%$SMB_PASS" $mode --size "$size" --io "$io" --pattern-out /tmp/t47-want.bin \
        --then "$OURS_BIN/smbdirect status --json > $art/status-$label.json && echo \$RDMA_CHECK_SESSION > /tmp/t47-session" \
        > "$art/rdma_check-$label.out" 2>&1 || {
        local rc=$?
        cat "$art/rdma_check-$label.out"
        fail "[$label] rdma_check failed (rc $rc)"
    }
    sed 's/^/  | /' "$art/rdma_check-$label.out"
    log "[$label] rdma_check passed in $(elapsed "$t0") s"
    local sid; sid=$(cat /tmp/t47-session)
    # status while the channel was up: an RDMA channel with this session and its RDMA bytes
    python3 - "$art/status-$label.json" "$sid" "$size" "$bind" <<'EOF' || fail "[$label] status does not show the session's channels with their RDMA bytes"
import json, sys
st = json.load(open(sys.argv[1])); sid = int(sys.argv[2]); size = int(sys.argv[3]); bind = sys.argv[4] == "--bind"
on = [c for c in st["channels"] if sid in c.get("sessions", [])]
print(f"  status: {len(st['channels'])} channel(s); session {sid:#x} on: " + "; ".join(
    f"{c['transport']} id {c['id']} worker {c.get('worker')} guid {c.get('client_guid')} {c.get('address')}"
    + (f" rdma_read={c.get('rdma_read')} rdma_write={c.get('rdma_write')} inline_sent={c.get('inline_sent')} inline_recv={c.get('inline_recv')}"
       if c["transport"] == "RDMA" else "") for c in on))
rdma = [c for c in on if c["transport"] == "RDMA"]
tcp = [c for c in on if c["transport"] == "TCP"]
assert len(rdma) == 1, f"session {sid:#x} is on {len(rdma)} RDMA channels: {st['channels']}"
assert len(tcp) == (1 if bind else 0), f"session {sid:#x} is on {len(tcp)} TCP channels: {st['channels']}"
if bind:
    assert tcp[0].get("client_guid") == rdma[0].get("client_guid"), "the two channels have different ClientGUIDs"
    assert tcp[0].get("worker") == rdma[0].get("worker"), "the two channels are in different workers"
c = rdma[0]
assert c.get("rdma_read", 0) >= size and c.get("rdma_write", 0) >= size, f"RDMA bytes below {size}: {c}"
assert any(s["id"] == sid for s in st["sessions"]), f"no session {sid:#x} in {st['sessions']}"
assert any(o["path"].endswith("rdma-check.bin") for o in st["open_files"]), f"file not open: {st['open_files']}"
EOF
    cmp /tmp/t47-want.bin /srv/share/rdma-check.bin || fail "[$label] the file on the server's disk differs from what the client wrote"
    wait_for 30 "the proxy's close line of the channel" sh -c "[ \$(grep -c 'closed: rdma_read=' $OURS_LOG) -gt $c0 ]"
    local line; line=$(grep 'closed: rdma_read=' "$OURS_LOG" | tail -n +$((c0 + 1)) | head -1 | sed 's/.*\(channel [0-9]* closed: .*\)/\1/')
    log "[$label] proxy: $line"
    local rr rw is ir
    rr=$(echo "$line" | sed -n 's/.*rdma_read=\([0-9]*\).*/\1/p')
    rw=$(echo "$line" | sed -n 's/.*rdma_write=\([0-9]*\).*/\1/p')
    is=$(echo "$line" | sed -n 's/.*inline_sent=\([0-9]*\).*/\1/p')
    ir=$(echo "$line" | sed -n 's/.*inline_recv=\([0-9]*\).*/\1/p')
    [ "$rr" = "$size" ] && [ "$rw" = "$size" ] || fail "[$label] RDMA read/write $rr/$rw bytes, not exactly $size each"
    [ $((is + ir)) -lt $((size / 10)) ] || fail "[$label] $((is + ir)) bytes inline: the payload did not go by RDMA"
    log "[$label] released: $(ours_slots_idle "$r0")"
    rm -f /srv/share/rdma-check.bin
}

# kill-worker: the worker serving a bound session is killed (-9) while the client writes by
# RDMA on the bound channel; the client must fail with a clear "connection is down" error within
# its 30 s wait (never hang, never report success), and the server must serve the next case.
kill_case() {
    local out=$art/rdma_check-kill-worker.out t0
    t0=$(now)
    timeout 120 "$CHECK" "//$RXE_ADDR/share" -U "$SMB_USER%$SMB_PASS" --bind --size $((256 << 20)) --io $((1 << 20)) \
        > "$out" 2>&1 &
    local pid=$!
    wait_for 30 "the client's SMB Direct channel to be bound" grep -q 'SMB Direct channel bound' "$out"
    wait_for 30 "RDMA reads of the client's buffers" sh -c "$OURS_BIN/smbdirect status --json | python3 -c '
import json, sys; st = json.load(sys.stdin)
sys.exit(0 if any(c.get(\"rdma_read\", 0) > 0 for c in st[\"channels\"]) else 1)'"
    # the id and pid of the worker that serves the RDMA channel
    local ids wid wpid
    ids=$("$OURS_BIN/smbdirect" status --json | python3 -c '
import json, sys; st = json.load(sys.stdin)
w = [c for c in st["channels"] if c["transport"] == "RDMA"][0]["worker"]
print(w, [x for x in st["workers"] if x["id"] == w][0]["pid"])')
    read -r wid wpid <<< "$ids"
    log "[kill-worker] kill -9 worker $wid (pid $wpid) during the transfer"
    kill -9 "$wpid"
    local rc=0
    wait "$pid" || rc=$?
    sed 's/^/  | /' "$out"
    [ "$rc" = 1 ] || fail "[kill-worker] rdma_check exit code $rc, not 1 (a clear failure)"
    grep -qE 'rdma_check: WRITE RDMA_V1 at [0-9]+: (the connection is down|transport)' "$out" \
        || fail "[kill-worker] no clear error from the client"
    log "[kill-worker] the client failed cleanly $(elapsed "$t0") s after it started"
    wait_for 30 "the supervisor to restart worker $wid" sh -c "$OURS_BIN/smbdirect status --json | python3 -c '
import json, sys; st = json.load(sys.stdin)
sys.exit(0 if any(w[\"id\"] == $wid and w.get(\"running\") and w.get(\"pid\") != $wpid for w in st[\"workers\"]) else 1)'"
    rm -f /srv/share/rdma-check.bin
}

run_case bind $((8 << 20)) $((1 << 20)) --bind
run_case bind-inv $((4 << 20)) $((256 << 10)) --bind --invalidate
kill_case
run_case direct $((2 << 20)) $((64 << 10))
ours_no_panic
log "ok"
