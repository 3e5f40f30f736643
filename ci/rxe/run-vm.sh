#!/usr/bin/env bash
# ci/rxe/run-vm.sh OUTDIR [GUEST-SCRIPT...]: boot the rxe lab guest once and run the given guest
# scripts in it (ci/rxe/guest/run-tests.sh runs them one by one; see there). With no script and
# a terminal on stdin, gives an interactive root shell in the guest instead (exit powers off).
#
# OUTDIR (created; must be empty or new) is shared read-write with the guest: guest.env (written
# here), console.log, results.tsv, <test>.log, dmesg.log, guest.rc. Exit code: the guest's
# (0 = every script passed), 124 if the whole run exceeded RXE_VM_TIMEOUT, 125 if the guest
# ended without reporting.
#
# Env: RXE_DIR (the lab cache; default: the one ci/rxe/setup.sh prints, building it if needed),
#      RXE_VM_TIMEOUT (1200 s), RXE_TEST_TIMEOUT (per script without an `# rxe-timeout:` line,
#      300 s), RXE_MEM (2G), RXE_SMP (2), RXE_QUIET=1 (console only to OUTDIR/console.log),
#      RXE_GUEST_ENV (extra lines for guest.env, e.g. "KSMBD_MIB=64").
# No KVM: the host's KVM cannot run this guest (ci/rxe/README.md), so qemu runs TCG.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [GUEST-SCRIPT...]" >&2; exit 2; }
out=$1; shift
mkdir -p "$out"
out=$(cd "$out" && pwd)
[ -z "$(ls -A "$out")" ] || { echo "run-vm: $out is not empty" >&2; exit 2; }
dir=${RXE_DIR:-$("$here/setup.sh")}
[ -f "$dir/.complete" ] || { echo "run-vm: $dir is not a complete lab cache (run ci/rxe/setup.sh)" >&2; exit 2; }

tests=()
for t in "$@"; do
    [ -f "$t" ] || { echo "run-vm: no such guest script: $t" >&2; exit 2; }
    tests+=("$(cd "$(dirname "$t")" && pwd)/$(basename "$t")")
done
shell=0
if [ ${#tests[@]} -eq 0 ]; then
    [ -t 0 ] || { echo "run-vm: no guest script given and stdin is not a terminal" >&2; exit 2; }
    shell=1
fi
# paths go through the kernel command line and guest.env: keep them simple
for p in "$out" "$dir" "$repo" "${tests[@]}"; do
    case $p in *[[:space:]\'\"\$\`\\]*) echo "run-vm: path with spaces or quotes not supported: $p" >&2; exit 2 ;; esac
done
{
    echo "RXE_DIR=$dir"
    echo "RXE_REPO=$repo"
    echo "RXE_TESTS='${tests[*]}'"
    echo "RXE_TEST_TIMEOUT=${RXE_TEST_TIMEOUT:-300}"
    [ -n "${RXE_GUEST_ENV:-}" ] && printf '%s\n' "$RXE_GUEST_ENV"
} > "$out/guest.env"

append="console=ttyS0 panic=-1 quiet loglevel=4 tsc=reliable mitigations=off"
append+=" rxe.stage2=$repo/ci/rxe/guest/stage2.sh rxe.out=$out"
[ "$shell" = 1 ] && append+=" rxe.shell=1"
qemu=(qemu-system-x86_64 -accel tcg -cpu max -m "${RXE_MEM:-2G}" -smp "${RXE_SMP:-2}"
      -nographic -no-reboot -nic none
      -kernel "$dir/vmlinux" -initrd "$dir/initramfs.cpio.gz" -append "$append"
      -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
      -virtfs "local,path=$out,mount_tag=results,security_model=none,multidevs=remap")
if [ "$shell" = 1 ]; then
    exec "${qemu[@]}"
fi
t0=$(date +%s.%N)
set +e
if [ "${RXE_QUIET:-0}" = 1 ]; then
    timeout --kill-after=10 "${RXE_VM_TIMEOUT:-1200}" "${qemu[@]}" </dev/null > "$out/console.log" 2>&1
else
    timeout --kill-after=10 "${RXE_VM_TIMEOUT:-1200}" "${qemu[@]}" </dev/null 2>&1 | tee "$out/console.log"
fi
qrc=${PIPESTATUS[0]}
set -e
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
    echo "run-vm: the guest ran longer than ${RXE_VM_TIMEOUT:-1200} s and was killed" >&2
    exit 124
fi
if [ ! -f "$out/guest.rc" ]; then
    echo "run-vm: the guest ended (qemu rc $qrc, after $secs s) without reporting a result" >&2
    exit 125
fi
echo "run-vm: guest finished in $secs s, rc $(cat "$out/guest.rc")" >&2
exit "$(cat "$out/guest.rc")"
