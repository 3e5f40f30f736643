#!/usr/bin/env bash
# Side-by-side smbclient throughput over loopback: a 1 GiB random file put and
# got back, plain and with --client-protection=encrypt, against our server and
# Samba's smbd in the same run.
#
#   bench/throughput.sh [ours] [samba]        (default: both)
#
# Environment: SIZE_MIB (default 1024), REPS (default 3; the median is
# reported), DIALECT (default SMB3_11), CIPHER (for the encrypted runs, default
# smbclient's choice), SMBDIRECT_BIN. Rates are smbclient's own printed figure
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

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ours samba)
SIZE_MIB=${SIZE_MIB:-1024}
REPS=${REPS:-3}
DIALECT=${DIALECT:-SMB3_11}
command -v smbclient >/dev/null || { echo "throughput.sh: smbclient missing (apt-get install smbclient)" >&2; exit 1; }

scratch=$(mktemp -d /tmp/bench-throughput-XXXXXX)
chmod 0755 "$scratch"
cleanup() { target_stop; rm -rf "$scratch"; }
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

declare -A RATE CPU
for t in "${targets[@]}"; do
    target_start "$t" "$scratch/$t" "$user" "$pass"
    for mode in plain encrypt; do
        args=(-m "$DIALECT")
        if [ "$mode" = encrypt ]; then
            args+=(--client-protection=encrypt)
            [ -n "${CIPHER:-}" ] && args+=("--option=client smb3 encryption algorithms=$CIPHER")
        else
            args+=(--client-protection=off)
        fi
        puts=()
        gets=()
        putcpu=()
        getcpu=()
        for rep in $(seq 1 "$REPS"); do
            t0=$(tree_ticks "$TARGET_MAIN_PID")
            out=$(smbclient "//127.0.0.1/share" -p "$TARGET_PORT" -U "$user%$pass" "${args[@]}" \
                -c "put $scratch/big.bin big.bin" 2>&1 </dev/null) || { echo "$out" >&2; exit 1; }
            putcpu+=("$(cpu_per_gib "$t0" "$(tree_ticks "$TARGET_MAIN_PID")")")
            if echo "$out" | grep -q NT_STATUS_; then echo "$out" >&2; exit 1; fi
            size=$(stat -c %s "$TARGET_SHARE_PATH/big.bin")
            [ "$size" -eq "$((SIZE_MIB * 1024 * 1024))" ] || { echo "put stored $size bytes" >&2; exit 1; }
            puts+=("$(echo "$out" | parse_rate)")
            t0=$(tree_ticks "$TARGET_MAIN_PID")
            out=$(smbclient "//127.0.0.1/share" -p "$TARGET_PORT" -U "$user%$pass" "${args[@]}" \
                -c "get big.bin /dev/null" 2>&1 </dev/null) || { echo "$out" >&2; exit 1; }
            getcpu+=("$(cpu_per_gib "$t0" "$(tree_ticks "$TARGET_MAIN_PID")")")
            if echo "$out" | grep -q NT_STATUS_; then echo "$out" >&2; exit 1; fi
            gets+=("$(echo "$out" | parse_rate)")
            rm -f "$TARGET_SHARE_PATH/big.bin"
            echo "$t $mode rep $rep: put ${puts[-1]} MiB/s ${putcpu[-1]} cpu-s/GiB, get ${gets[-1]} MiB/s ${getcpu[-1]} cpu-s/GiB" >&2
        done
        RATE[$t:$mode:put]=$(printf '%s\n' "${puts[@]}" | median)
        RATE[$t:$mode:get]=$(printf '%s\n' "${gets[@]}" | median)
        CPU[$t:$mode:put]=$(printf '%s\n' "${putcpu[@]}" | median)
        CPU[$t:$mode:get]=$(printf '%s\n' "${getcpu[@]}" | median)
    done
    target_stop
done

echo
echo "smbclient $DIALECT, ${SIZE_MIB} MiB file, median of $REPS: MiB/s and server CPU seconds per GiB"
echo
header="| mode | op |"; sep="| --- | --- |"
for t in "${targets[@]}"; do header+=" $t MiB/s | $t cpu-s/GiB |"; sep+=" ---: | ---: |"; done
echo "$header"
echo "$sep"
for mode in plain encrypt; do
    for op in put get; do
        row="| $mode | $op |"
        for t in "${targets[@]}"; do row+=" ${RATE[$t:$mode:$op]} | ${CPU[$t:$mode:$op]} |"; done
        echo "$row"
    done
done
