#!/bin/bash
# smbdirect-bench (the project's own SMB client, issue 12) against a server that starves it of
# SMB Direct send credits: `smbd-fault serve` (a hand-driven SMB Direct server on port 5445).
#   grant-zero: the negotiate response grants 0 credits (MS-SMBD forbids it): the client
#     refuses the connection at once with "CreditsGranted is 0 in the negotiate response";
#   grant-none-after: 1 credit granted and none ever after: the client's SMB Direct core spends
#     it on its first message (it grants us receive credits first), so its SMB2 NEGOTIATE
#     cannot be sent; the client must fail within its --timeout (3 s) with "credit
#     starvation: NEGOTIATE not sent within 3s: SMB Direct send credits exhausted", not "no
#     answer", and never hang.
# In both the fake server checks that the client sent nothing beyond the credits it held (it
# posts receives for more: a violation would arrive, not be lost) and exits 0.
# rxe-timeout: 120
. "$(dirname "$0")/lib.sh"
BENCH=$RXE_REPO/target/release/smbdirect-bench
FAULT=$RXE_REPO/target/release/smbd-fault
need_bin "$BENCH"
need_bin "$FAULT"
art=$RXE_OUT/$RXE_TEST
mkdir -p "$art"
rxe_up
PORT=5445

# starve SCENARIO EXPECTED-TEXT
starve() {
    local sc=$1 want=$2
    timeout 60 "$FAULT" serve "$RXE_ADDR:$PORT" "$sc" --hold 12 > "$art/$sc.server" 2>&1 &
    local spid=$!
    wait_cm "$PORT"
    local t0; t0=$(now)
    local rc=0
    timeout 60 "$BENCH" "//$RXE_ADDR/share" -U "u%p" --transport rdma --rdma-port "$PORT" --check --timeout 3 \
        > "$art/$sc.out" 2>&1 || rc=$?
    local took; took=$(elapsed "$t0")
    sed 's/^/  client | /' "$art/$sc.out"
    local src=0
    wait "$spid" || src=$?
    sed 's/^/  server | /' "$art/$sc.server"
    [ "$rc" = 1 ] || fail "[$sc] client exit code $rc, not 1"
    grep -qF "$want" "$art/$sc.out" || fail "[$sc] the client did not say: $want"
    awk -v t="$took" 'BEGIN { exit !(t < 15) }' || fail "[$sc] the client took $took s to give up (timeout 3 s)"
    [ "$src" = 0 ] || fail "[$sc] the fake server saw a violation (exit $src)"
    log "[$sc] the client failed after $took s: $(grep -F "$want" "$art/$sc.out" | head -1)"
}

starve grant-zero "CreditsGranted is 0 in the negotiate response"
starve grant-none-after "credit starvation: NEGOTIATE not sent within 3s: SMB Direct send credits exhausted"
log "ok"
