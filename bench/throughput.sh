#!/usr/bin/env bash
# Side-by-side smbclient throughput over loopback: a 1 GiB random file put and
# got back, plain and with --client-protection=encrypt, against our server and
# Samba's smbd in the same run, both running at once, repetitions interleaved.
#
#   bench/throughput.sh [ours] [samba] [LABEL=BIN[:CONF]]...   (default: ours samba)
#
# LABEL=BIN[:CONF] is one more build of our server under its own label (two
# builds compared in one run, e.g. old=/tmp/smbdirect-old new=target/release/
# smbdirect), with CONF as extra [global] lines separated by ";" (e.g.
# "pool=target/release/smbdirect:max in flight per connection = 4").
#
# Environment: SIZE_MIB (default 1024), REPS (default 3; the median is
# reported), MODES (default "plain encrypt"), DIALECT (default SMB3_11), CIPHER (for the encrypted runs, default
# smbclient's choice), SMBDIRECT_BIN, WARM (default 1: warm the page cache
# before each put, see warm_page_cache). Rates are smbclient's own printed figure
# (kb/s, 1 kb = 1024 bytes) converted to MiB/s. The received file is written
# to /dev/null; the sent file is checked by size on the server's disk.
# Server CPU seconds per GiB moved come from /proc: user+system time of the
# server's main process and every live descendant, plus the time of children
# it has already reaped (cutime/cstime), sampled around each transfer, so
# Samba's forked per-connection smbd and our workers are counted alike.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=ci/targets.sh
. "$root/ci/targets.sh"

declare -A RATE CPU PORT SHARE MAINPID WORKDIR
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(ours samba)
declare -A KIND BIN EXTRA
targets=()
for spec in "${specs[@]}"; do
    case "$spec" in
    ours | samba) t=$spec KIND[$t]=$spec BIN[$t]=${SMBDIRECT_BIN:-} EXTRA[$t]=${SMBDIRECT_EXTRA_CONF:-} ;;
    *=*)
        t=${spec%%=*} rest=${spec#*=}
        KIND[$t]=ours BIN[$t]=${rest%%:*} EXTRA[$t]=""
        [ "$rest" = "${BIN[$t]}" ] || EXTRA[$t]=$(tr ';' '\n' <<<"${rest#*:}")
        [ -x "${BIN[$t]}" ] || { echo "throughput.sh: ${BIN[$t]} is not an executable" >&2; exit 2; }
        ;;
    *) echo "throughput.sh: unknown target $spec (ours, samba or LABEL=BIN[:CONF])" >&2; exit 2 ;;
    esac
    [ -z "${MAINPID[$t]+x}" ] || { echo "throughput.sh: target $t given twice" >&2; exit 2; }
    MAINPID[$t]=""
    targets+=("$t")
done
SIZE_MIB=${SIZE_MIB:-1024}
REPS=${REPS:-3}
read -r -a modes <<<"${MODES:-plain encrypt}"
for mode in "${modes[@]}"; do
    case "$mode" in plain | encrypt) ;; *) echo "throughput.sh: unknown mode $mode (plain, encrypt)" >&2; exit 2 ;; esac
done
DIALECT=${DIALECT:-SMB3_11}
command -v smbclient >/dev/null || { echo "throughput.sh: smbclient missing (apt-get install smbclient)" >&2; exit 1; }

scratch=$(mktemp -d /tmp/bench-throughput-XXXXXX)
chmod 0755 "$scratch"
declare -A PUTS GETS PUTCPU GETCPU
stop_all() {
    local t
    for t in "${targets[@]}"; do
        [ -n "${MAINPID[$t]:-}" ] || continue
        # shellcheck disable=SC2034 # read by target_stop
        TARGET_KIND=${KIND[$t]} TARGET_WORKDIR=${WORKDIR[$t]} TARGET_MAIN_PID=${MAINPID[$t]}
        target_stop
        MAINPID[$t]=""
    done
}
cleanup() { target_stop; stop_all; rm -rf "$scratch"; }
trap cleanup EXIT

echo "generating ${SIZE_MIB} MiB of random data" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$scratch/big.bin"
user=tester
pass="Pw$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n')"

# rate in MiB/s from smbclient's "(N kb/s)" or "(N KiloBytes/sec)"
parse_rate() {
    sed -n 's/.*(\([0-9.][0-9.]*\) \(kb\/s\|KiloBytes\/sec\)).*/\1/p' | head -1 |
        awk '{ printf "%.1f", $1 / 1024 }'
}

# CPU ticks (user+system, own and reaped children) of a process tree.
tree_ticks() {
    local root=$1 total=0 pid
    local pids=("$root")
    local i=0
    while [ $i -lt ${#pids[@]} ]; do
        pid=${pids[$i]}
        i=$((i + 1))
        # Children of every thread (a worker forked by a thread other than
        # the main one is listed only under that thread's task).
        # shellcheck disable=SC2207
        pids+=($(cat "/proc/$pid/task/"*/children 2>/dev/null))
    done
    for pid in "${pids[@]}"; do
        # fields after the ")" of comm: 14-17 = utime stime cutime cstime
        local t
        t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 + $14 + $15 }') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)
# CPU seconds per GiB from two tick samples
cpu_per_gib() { awk -v a="$1" -v b="$2" -v hz="$HZ" -v mib="$SIZE_MIB" 'BEGIN { printf "%.2f", (b - a) / hz / (mib / 1024) }'; }

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "n/a"; else print a[int((NR + 1) / 2)] }'; }

# Both servers run at once and the repetitions are interleaved (ours then
# Samba, then Samba then ours, ...), so load from elsewhere on the host falls
# on both alike.
#
# Page-cache warm-up before every put (WARM=0 turns it off): on a VM whose
# balloon device has free page reporting (VIRTIO_BALLOON_F_REPORTING, as this
# lab's host), memory the guest freed more than about 2 s ago is handed back
# to the host, and the next write into it takes a host page fault inside the
# kernel's copy into the page cache, charged to whichever process writes.
# A put into a fresh file needs SIZE_MIB of new page cache, so the first put
# after a pause ran at a third of the speed for ANY writer (dd of 256 MiB to
# ext4: 424 MB/s, then 2.5 GB/s when repeated at once, 351 MB/s again after
# 15 s idle; Samba's first put after 6 s idle 410 MiB/s at 2.80 CPU s/GiB,
# its second 764 at 1.44). Writing and deleting SIZE_MIB of zeros next to the
# share right before each put gives every put the same, warm, start.
warm_page_cache() {
    [ "${WARM:-1}" = 1 ] || return 0
    dd if=/dev/zero of="$scratch/warm.bin" bs=1M count="$SIZE_MIB" status=none
    rm -f "$scratch/warm.bin"
}

for t in "${targets[@]}"; do
    SMBDIRECT_BIN=${BIN[$t]} SMBDIRECT_EXTRA_CONF=${EXTRA[$t]} target_start "${KIND[$t]}" "$scratch/$t" "$user" "$pass"
    PORT[$t]=$TARGET_PORT
    SHARE[$t]=$TARGET_SHARE_PATH
    MAINPID[$t]=$TARGET_MAIN_PID
    WORKDIR[$t]=$scratch/$t
    # targets.sh tracks one server: forget this one so starting the next does
    # not lose it (stopped by stop_all).
    # shellcheck disable=SC2034 # read by target_stop
    TARGET_KIND="" TARGET_MAIN_PID=""
done
# one put and one get of target $1 in mode $2; appends to PUTS/GETS/...
one_rep() {
    local t=$1 mode=$2 rep=$3 out t0 size
    local args=(-m "$DIALECT")
    if [ "$mode" = encrypt ]; then
        args+=(--client-protection=encrypt)
        [ -n "${CIPHER:-}" ] && args+=("--option=client smb3 encryption algorithms=$CIPHER")
    else
        args+=(--client-protection=off)
    fi
    warm_page_cache
    t0=$(tree_ticks "${MAINPID[$t]}")
    out=$(smbclient "//127.0.0.1/share" -p "${PORT[$t]}" -U "$user%$pass" "${args[@]}" \
        -c "put $scratch/big.bin big.bin" 2>&1 </dev/null) || { echo "$out" >&2; exit 1; }
    local putcpu getcpu put get
    putcpu=$(cpu_per_gib "$t0" "$(tree_ticks "${MAINPID[$t]}")")
    if echo "$out" | grep -q NT_STATUS_; then echo "$out" >&2; exit 1; fi
    size=$(stat -c %s "${SHARE[$t]}/big.bin")
    [ "$size" -eq "$((SIZE_MIB * 1024 * 1024))" ] || { echo "put stored $size bytes" >&2; exit 1; }
    put=$(echo "$out" | parse_rate)
    t0=$(tree_ticks "${MAINPID[$t]}")
    out=$(smbclient "//127.0.0.1/share" -p "${PORT[$t]}" -U "$user%$pass" "${args[@]}" \
        -c "get big.bin /dev/null" 2>&1 </dev/null) || { echo "$out" >&2; exit 1; }
    getcpu=$(cpu_per_gib "$t0" "$(tree_ticks "${MAINPID[$t]}")")
    if echo "$out" | grep -q NT_STATUS_; then echo "$out" >&2; exit 1; fi
    get=$(echo "$out" | parse_rate)
    rm -f "${SHARE[$t]}/big.bin"
    PUTS[$t:$mode]+="$put "
    GETS[$t:$mode]+="$get "
    PUTCPU[$t:$mode]+="$putcpu "
    GETCPU[$t:$mode]+="$getcpu "
    echo "$t $mode rep $rep: put $put MiB/s $putcpu cpu-s/GiB, get $get MiB/s $getcpu cpu-s/GiB" >&2
}

for mode in "${modes[@]}"; do
    for rep in $(seq 1 "$REPS"); do
        order=("${targets[@]}")
        if [ $((rep % 2)) -eq 0 ]; then
            order=()
            for ((i = ${#targets[@]} - 1; i >= 0; i--)); do order+=("${targets[$i]}"); done
        fi
        for t in "${order[@]}"; do one_rep "$t" "$mode" "$rep"; done
    done
    for t in "${targets[@]}"; do
        RATE[$t:$mode:put]=$(tr -s " " "\n" <<<"${PUTS[$t:$mode]}" | median)
        RATE[$t:$mode:get]=$(tr -s " " "\n" <<<"${GETS[$t:$mode]}" | median)
        CPU[$t:$mode:put]=$(tr -s " " "\n" <<<"${PUTCPU[$t:$mode]}" | median)
        CPU[$t:$mode:get]=$(tr -s " " "\n" <<<"${GETCPU[$t:$mode]}" | median)
    done
done
stop_all

echo
echo "smbclient $DIALECT, ${SIZE_MIB} MiB file, median of $REPS interleaved runs (page-cache warm-up: ${WARM:-1}): MiB/s and server CPU seconds per GiB"
echo
header="| mode | op |"; sep="| --- | --- |"
for t in "${targets[@]}"; do header+=" $t MiB/s | $t cpu-s/GiB |"; sep+=" ---: | ---: |"; done
echo "$header"
echo "$sep"
for mode in "${modes[@]}"; do
    for op in put get; do
        row="| $mode | $op |"
        for t in "${targets[@]}"; do row+=" ${RATE[$t:$mode:$op]} | ${CPU[$t:$mode:$op]} |"; done
        echo "$row"
    done
done
