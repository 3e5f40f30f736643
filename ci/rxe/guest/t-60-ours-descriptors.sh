#!/bin/bash
# Lying RDMA buffer descriptors against our server over rxe (issue 9 part 7), from our raw
# client smbd-fault: the transport's core in the client role over verbs carries an SMB2
# session (3.0.2, anonymous logon on a `guest ok` share), CREATEs a file, then sends READs and
# WRITEs with Channel RDMA_V1 and RDMA_V1_INVALIDATE whose buffer descriptors lie. One
# connection per case:
#   rdma-ok         control: an RDMA WRITE and a 2-descriptor RDMA READ move the right bytes;
#                   the proxy counts exactly those bytes (so the zeros below mean something)
#   desc-count-0, desc-partial (1.5 descriptors), desc-too-many (65), desc-past-end (channel
#   info offset/length past the message), desc-in-header (info inside the header / fixed
#   part), desc-short (descriptors cover less than Length / RemainingBytes), desc-over-max
#   (Length over MaxReadWriteSize): every request (READ and WRITE, both channels) gets an
#   error status, the connection keeps serving (an inline READ returns the file unchanged),
#   and the proxy's close line for that channel shows rdma_read=0 rdma_write=0
#   desc-long       descriptors larger than asked: accepted, exactly Length moved (counted
#                   exactly), the rest of the client's buffer untouched
#   token-invalid-*, token-foreign-* (an rkey of another protection domain),
#   token-outside-* (past the client's registration), READ and WRITE: the RDMA fails on the
#   client's HCA; the server answers an error or closes the channel with a "SMB Direct
#   connection ends" line (and "RDMA failed" when its own completion comes first), within the
#   client's 20 s; never success or a hang
# Every channel is released by the server, the last one with no pool slot in use; the same
# proxy still runs, its QPs, MRs and CM ids are back to idle, and a kernel
# mount -o rdma (user share) writes and reads back a file, after which slots and verbs
# resources are idle again.
# rxe-timeout: 240
. "$(dirname "$0")/lib.sh"
need_bin "$OURS_BIN/smbd-fault"
# a log of this server only (channel numbers restart with each proxy)
OURS_LOG=/tmp/t60-ours.log
: > "$OURS_LOG"
rxe_up
modprobe cifs
mkdir -p /srv/share
conf=/tmp/t60-smb.conf
# SMB2 MaxReadSize/MaxWriteSize above the SMB Direct MaxReadWriteSize (8 MiB), so that
# desc-over-max reaches the descriptor check rather than the READ/WRITE size check (a smaller
# smbd max io size is no way out: cifs 6.1 then loops in smbd_register_mr on a buffer that is
# not page aligned); [guest] for the anonymous session of the raw client.
printf '[global]\n\tsmb2 max read = 16777216\n\tsmb2 max write = 16777216\n[guest]\n\tpath = /srv/share\n\tguest ok = yes\n\tread only = no\n' > "$conf"
ours_start --config "$conf"
trap 'timeout 60 umount "$SMB_MNT" 2>/dev/null || true; ours_stop' EXIT
proxy_pid() { pgrep -x rdma-proxy; }
res_count() { rdma res show "$1" 2>/dev/null | grep -c 'comm rdma-proxy' || true; }
res() { echo "qp=$(res_count qp) mr=$(res_count mr) cm_id=$(res_count cm_id)"; }
count() { grep -c "$1" "$OURS_LOG" || true; }
p0=$(proxy_pid)
idle=$(res)
log "proxy pid $p0, resources idle: $idle"

# case -> expected "rdma_read rdma_write" of its channel
declare -A want=(
    [rdma-ok]="32768 98304" [desc-long]="16384 16384"
    [desc-count-0]="0 0" [desc-partial]="0 0" [desc-too-many]="0 0" [desc-past-end]="0 0"
    [desc-in-header]="0 0" [desc-short]="0 0" [desc-over-max]="0 0"
    [token-invalid-read]="0 0" [token-invalid-write]="0 0" [token-foreign-read]="0 0"
    [token-foreign-write]="0 0" [token-outside-read]="0 0" [token-outside-write]="0 0"
)
cases=(rdma-ok desc-count-0 desc-partial desc-too-many desc-past-end desc-in-header desc-short
       desc-over-max desc-long token-invalid-read token-invalid-write token-foreign-read
       token-foreign-write token-outside-read token-outside-write)
mkdir -p "$RXE_OUT/$RXE_TEST"
out=$RXE_OUT/$RXE_TEST/smbd-fault.out
# one smbd-fault run, one connection per case in this order: the proxy numbers channels in
# accept order, so case k is channel base+k
base=$(grep -o 'channel [0-9]* closed' "$OURS_LOG" | awk '{ print $2 }' | sort -n | tail -1 || true)
base=${base:-0}
r0=$(ours_released_lines)
t0=$(now)
timeout 120 "$OURS_BIN/smbd-fault" "$RXE_ADDR:445" "$(IFS=,; echo "${cases[*]}")" --share guest > "$out" 2>&1 \
    || { cat "$out"; fail "smbd-fault: the server did not behave as expected in a case (rc $?)"; }
log "smbd-fault ran ${#cases[@]} cases in $(elapsed "$t0") s"
last=$((base + ${#cases[@]}))
wait_for 30 "the proxy's close line of channel $last" grep -q "channel $last closed: " "$OURS_LOG"
slots=$(ours_slots_idle "$r0")
# one pass over the log: per channel, its close line counters, whether the server released
# it, and why the proxy ended it
awk '
    / channel [0-9]+ closed: / { match($0, /channel [0-9]+ closed: .*/); l = substr($0, RSTART); split(l, w, " "); c[w[2]] = substr(l, index(l, "rdma_read=")) }
    / channel [0-9]+ released: / { match($0, /channel [0-9]+/); split(substr($0, RSTART, RLENGTH), w, " "); rel[w[2]] = 1 }
    /SMB Direct connection ends: / && / channel=[0-9]+/ {
        match($0, / channel=[0-9]+/); id = substr($0, RSTART + 9, RLENGTH - 9)
        r = $0; sub(/.*connection ends: /, "", r); sub(/ channel=.*/, "", r); if (!(id in why)) why[id] = r
    }
    / RDMA failed/ && / channel=[0-9]+/ { match($0, / channel=[0-9]+/); fl[substr($0, RSTART + 9, RLENGTH - 9)] = 1 }
    END { for (id in c) printf "%s\t%s\t%d\t%d\t%s\n", id, c[id], rel[id], fl[id], why[id] }
' "$OURS_LOG" > /tmp/t60-channels.tsv
declare -A cl reld failed ends
while IFS=$'\t' read -r id counters r f w; do cl[$id]=$counters; reld[$id]=$r; failed[$id]=$f; ends[$id]=$w; done < /tmp/t60-channels.tsv
k=0
for s in "${cases[@]}"; do
    k=$((k + 1)); id=$((base + k))
    line=${cl[$id]:-}
    [ -n "$line" ] || fail "[$s] no close line for channel $id"
    [[ $line =~ rdma_read=([0-9]+)\ rdma_write=([0-9]+) ]] || fail "[$s] close line: $line"
    rr=${BASH_REMATCH[1]} rw=${BASH_REMATCH[2]}
    [ "$rr $rw" = "${want[$s]}" ] || fail "[$s] proxy counted rdma_read=$rr rdma_write=$rw, expected ${want[$s]}: $line"
    [ "${reld[$id]:-0}" = 1 ] || fail "[$s] the server never released channel $id"
    why=
    if [[ $s == token-* ]]; then
        # the RDMA fails on the server's queue pair ("RDMA failed") or the client's queue pair
        # errors first and the client disconnects: either way a logged, clean end
        [ -n "${ends[$id]:-}" ] || fail "[$s] no 'SMB Direct connection ends' line for channel $id"
        why=" | ends: ${ends[$id]}"
        [ "${failed[$id]:-0}" = 1 ] && why+=", RDMA failed logged"
    fi
    sum=
    while IFS= read -r l; do [[ $l == "$s: "* && -z $sum ]] && sum=${l#"$s: "}; done < "$out"
    log "[$s] ${sum:0:200} | channel $id: $line$why"
done
log "after the cases: $slots"
[ "$(proxy_pid)" = "$p0" ] || fail "the proxy changed during the cases (pid $p0 -> $(proxy_pid))"
ours_no_panic
wait_for 30 "the proxy's resources to go back to idle ($idle)" sh -c "[ \"\$(rdma res show qp | grep -c 'comm rdma-proxy')\" = 0 ]"
[ "$(res)" = "$idle" ] || fail "resources after the cases: $(res), idle was $idle"
log "after the cases: resources $(res) (idle: $idle)"

# the kernel client still mounts and moves data by RDMA
r0=$(ours_released_lines); n0=$(ours_closed_lines)
mkdir -p "$SMB_MNT"
head -c $((8 << 20)) "$RXE_DATA/random-256m.bin" > /tmp/src16
timeout 120 mount -t cifs "//$RXE_ADDR/share" "$SMB_MNT" -o "rdma,vers=3.1.1,username=$SMB_USER,password=$SMB_PASS,cache=none" \
    || fail "mount -o rdma after the cases (rc $?)"
timeout 120 dd if=/tmp/src16 of="$SMB_MNT/after" bs=1M conv=fsync status=none || fail "write through the mount"
timeout 120 cmp /tmp/src16 "$SMB_MNT/after" || fail "read back through the mount differs"
cmp /tmp/src16 "$SMB_SHARE_DIR/after" || fail "the server's copy differs"
rm -f "$SMB_MNT/after"
timeout 60 umount "$SMB_MNT" || fail "umount"
wait_for 20 "the mount's close line" sh -c "[ \$(grep -c 'closed: rdma_read=' $OURS_LOG) -gt $n0 ]"
slots=$(ours_slots_idle "$r0")
wait_for 30 "the proxy's resources to go back to idle ($idle)" sh -c "[ \"\$(rdma res show qp | grep -c 'comm rdma-proxy')\" = 0 ]"
[ "$(res)" = "$idle" ] || fail "resources after the mount: $(res), idle was $idle"
log "mount -o rdma after the cases: 8 MiB written and read back; $(grep 'closed: rdma_read=' "$OURS_LOG" | tail -1 | sed 's/.*\(channel [0-9]* closed\)/\1/'); after unmount: $slots, resources $(res)"
ours_no_panic
log "ok"
