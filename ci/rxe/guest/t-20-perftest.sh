#!/bin/bash
# perftest over rxe0: ib_write_bw and ib_read_bw (500 x 64 KiB, GID index 1), and ib_write_bw
# through RDMA CM (-R), each server/client pair on loopback inside rxe. Each must complete and
# report a bandwidth above zero. Prints MB/s (not a benchmark: see bench/rdma.sh).
# A fixed iteration count (not -D seconds) and 16 operations in flight (-t/-o): with perftest's
# default of 128 x 64 KiB in flight rxe drops packets and recovers only by retry timeouts, and on
# a loaded host a 2 s run could then finish 0 iterations.
# rxe-timeout: 200
. "$(dirname "$0")/lib.sh"
rxe_up
port=18515
# bw TOOL EXTRA...: run server + client, print and check the 64 KiB average MB/s
bw() {
    local tool=$1; shift
    local t0; t0=$(now)
    timeout 60 "$tool" -d rxe0 -x 1 -F -n 500 -t 16 -s 65536 -p "$port" "$@" > /tmp/srv.log 2>&1 &
    local srv=$!
    if [[ " $* " == *" -R "* ]]; then wait_cm "$port"; else wait_tcp "$port"; fi
    timeout 60 "$tool" -d rxe0 -x 1 -F -n 500 -t 16 -s 65536 -p "$port" "$@" "$RXE_ADDR" > /tmp/cli.log 2>&1 \
        || { cat /tmp/cli.log /tmp/srv.log; fail "$tool $* client failed"; }
    wait "$srv" || { cat /tmp/srv.log; fail "$tool $* server failed"; }
    local mbs; mbs=$(awk '$1 == 65536 { print $4 }' /tmp/cli.log)
    log "$tool $* 64 KiB: ${mbs:-?} MB/s ($(elapsed "$t0") s)"
    awk -v m="${mbs:-0}" 'BEGIN { exit !(m > 0) }' || { cat /tmp/cli.log; fail "$tool $*: no bandwidth figure"; }
    port=$((port + 1))
}
bw ib_write_bw
bw ib_read_bw -o 16
bw ib_write_bw -R
log "ok"
