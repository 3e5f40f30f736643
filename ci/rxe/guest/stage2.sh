#!/bin/sh
# Stage 2 of the rxe lab guest: PID 1 after the initramfs switch_roots into overlay(host /, tmpfs).
# It is read from the host through 9p, so it needs no rebuild of the cached initramfs.
# Kernel command line: rxe.out=<host dir> (shared read-write with tag "results"; ci/rxe/run-vm.sh
# writes guest.env there). Runs ci/rxe/guest/run-tests.sh (or a shell with rxe.shell=1), writes
# its exit code to <out>/guest.rc and powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t configfs none /sys/kernel/config 2>/dev/null
# /tmp stays the overlay's view of the host's /tmp (guest writes land in the overlay's tmpfs):
# a checkout under /tmp (CI clones anywhere) must stay visible, binaries and results share alike.
out='' shell=0
for a in $(cat /proc/cmdline); do
    case $a in
        rxe.out=*) out=${a#rxe.out=} ;;
        rxe.shell=1) shell=1 ;;
    esac
done
stop() { sync; echo "rxe-guest: powering off"; poweroff -f; sleep 5; echo o > /proc/sysrq-trigger; }
if [ -z "$out" ] || ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 results "$out"; then
    echo "rxe-guest: cannot mount the results share at '$out'"
    stop
fi
set -a     # everything in guest.env reaches the tests
. "$out/guest.env"
set +a
export RXE_OUT="$out"
# the guest kernel's modules (with the rebuilt cifs.ko/ksmbd.ko in updates/) for the host's kmod
mkdir -p /usr/lib/modules
mount --bind "$RXE_DIR/lib/modules" /usr/lib/modules
hostname rxe-guest
ip link set lo up
echo "rxe-guest: stage 2 up at $(cut -d' ' -f1 /proc/uptime) s after boot"
if [ "$shell" = 1 ]; then
    setsid sh -c 'exec bash -i </dev/ttyS0 >/dev/ttyS0 2>&1'
    rc=0
else
    bash "$RXE_REPO/ci/rxe/guest/run-tests.sh"
    rc=$?
fi
echo "$rc" > "$out/guest.rc"
stop
