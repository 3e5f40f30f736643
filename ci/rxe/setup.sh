#!/usr/bin/env bash
# ci/rxe/setup.sh: prepare the rxe lab once and print its cache directory on stdout.
#
# The lab boots Debian's own kernel under qemu (TCG), with the host's / shared read-only over
# virtio-9p as the guest's root (under a tmpfs overlay), so host-installed tools (rdma-core,
# perftest, cifs-utils, our binaries) run in the guest unchanged. See ci/rxe/README.md.
#
# What it does (as root, on Debian 12):
#  1. apt-get installs the host packages the lab uses (only the missing ones);
#  2. resolves the current kernel ABI from linux-image-amd64 (security updates bump it and the
#     old packages leave the archive, so it is never hard-coded);
#  3. unless ${SMBDIRECT_CACHE:-~/.cache/smbdirect}/rxe/<abi>_<version>/.complete holds the
#     hash of this recipe, builds into a temporary directory and renames it into place:
#     the kernel's modules and its uncompressed vmlinux, cifs.ko and ksmbd.ko rebuilt with SMB
#     Direct (ksmbd with ksmbd-6.1-fixes.patch), ksmbd-tools unpacked privately (Debian's
#     samba conflicts with the ksmbd-tools package), and the initramfs.
# A second run only checks packages and the stamp (a few seconds). Logs go to stderr.
#
# Env: SMBDIRECT_CACHE (cache root), RXE_APT_UPDATE=1 (force apt-get update),
#      RXE_KEEP_OLD=1 (keep caches of other kernel versions; by default they are removed).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache_root=${SMBDIRECT_CACHE:-$HOME/.cache/smbdirect}/rxe
export DEBIAN_FRONTEND=noninteractive
t_start=$(date +%s)

log() { echo "rxe-setup: $*" >&2; }
die() { echo "rxe-setup: ERROR: $*" >&2; exit 1; }
# every external step is bounded; an apt lock held by another apt run is waited for
run() { local limit=$1; shift; timeout --kill-after=10 "$limit" "$@"; }
apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -q)

[ "$(id -u)" = 0 ] || die "run as root (apt-get, and qemu needs to read the cache through 9p)"

# ---------------------------------------------------------------- 1. host packages
# qemu + busybox-static (initramfs) + kmod/cpio (depmod, modprobe --show-depends, cpio);
# verbs user space, perftest, cifs-utils and iproute2 run in the guest from the host root;
# gcc-12/make/patch/xz build the two modules; the libraries are ksmbd-tools' Depends, which
# the private unpack below does not pull in. Installing qemu-system-x86 may replace a
# backported qemu-utils with bookworm's.
pkgs=(qemu-system-x86 busybox-static kmod cpio python3 xz-utils rdma-core ibverbs-providers
      ibverbs-utils rdmacm-utils perftest cifs-utils iproute2 procps coreutils
      gcc-12 make patch binutils libc6-dev libglib2.0-0 libnl-3-200 libnl-genl-3-200)
updated=0
apt_update() {
    [ "$updated" = 1 ] && return 0
    log "apt-get update"
    run 600 apt-get "${apt_opts[@]}" update </dev/null >&2
    updated=1
}
[ "${RXE_APT_UPDATE:-0}" = 1 ] && apt_update
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt_update
    log "apt-get install ${missing[*]}"
    run 1200 apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null >&2
fi

# ---------------------------------------------------------------- 2. kernel ABI
# linux-image-amd64 (the metapackage) depends on linux-image-<abi>-amd64. Not the
# -cloud-amd64 flavour: it has neither rdma_rxe nor 9p.
resolve() {
    meta=$(apt-cache policy linux-image-amd64 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$meta" ] && [ "$meta" != "(none)" ] || return 1
    abi=$(apt-cache show "linux-image-amd64=$meta" 2>/dev/null \
        | sed -n 's/^Depends:.*linux-image-\([0-9][^ ,]*-amd64\).*/\1/p' | head -1)
    [ -n "$abi" ] || return 1
    pv=$(apt-cache policy "linux-image-$abi" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [ -n "$pv" ] && [ "$pv" != "(none)" ]
}
resolve || { apt_update; resolve; } || die "cannot resolve linux-image-amd64 from the apt sources"
key="${abi}_${pv}"
dir="$cache_root/$key"

# Test data for the guest: 256 MiB of random bytes and the sha256 of its 64/128/256 MiB
# prefixes, made on the host (urandom and sha256 are 10-50 times slower in the TCG guest).
# Kept next to the kernel caches, not in them: it does not depend on the kernel.
data="$cache_root/data"
if [ ! -f "$data/.complete" ]; then
    log "making the random test data"
    mkdir -p "$cache_root"
    tmp=$(mktemp -d "$cache_root/data.XXXXXX")
    head -c $((256 << 20)) /dev/urandom > "$tmp/random-256m.bin"
    for n in 64 128 256; do
        echo "$n $(head -c $((n << 20)) "$tmp/random-256m.bin" | sha256sum | cut -d' ' -f1)"
    done > "$tmp/random-256m.sha256"
    touch "$tmp/.complete"
    rm -rf "$data"
    mv -T "$tmp" "$data" 2>/dev/null || rm -rf "$tmp"   # another setup may have won the race
fi

# The stamp holds a hash of the recipe: RECIPE (bump it when a build step below changes), the
# patch and the initramfs' init. A stamp with another hash, or none (an interrupted build), means
# rebuild.
RECIPE=1
recipe=$( (echo "$RECIPE"; cat "$here/ksmbd-6.1-fixes.patch" "$here/initramfs-init") | sha256sum | cut -c1-16)
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$recipe" ]; then
    log "cache ready: $dir (kernel $abi $pv), checked in $(( $(date +%s) - t_start )) s"
    echo "$dir"
    exit 0
fi

# One build at a time (two CI jobs or helpers on one machine): the second waits and then
# finds the stamp.
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock -w 1800 9 || die "another setup holds $cache_root/.lock"
if [ -f "$dir/.complete" ] && [ "$(cat "$dir/.complete")" = "$recipe" ]; then
    log "cache built by another run: $dir"
    echo "$dir"
    exit 0
fi

log "building the lab for kernel $abi ($pv) into $dir (recipe $recipe)"
kb=${abi%-amd64}           # 6.1.0-56        (linux-headers-<kb>-common)
sv=$(echo "$pv" | cut -d. -f1-2)   # 6.1   (linux-kbuild-<sv>, linux-source-<sv>)
b="$dir.building"
debs="$cache_root/debs-$key"   # kept until the build succeeds, so a retry does not re-download
rm -rf "$b" "$dir"
mkdir -p "$b" "$debs"

# ---------------------------------------------------------------- 3a. downloads
want=("linux-image-$abi=$pv" "linux-headers-$abi=$pv" "linux-headers-$kb-common=$pv"
      "linux-kbuild-$sv=$pv" "linux-source-$sv=$pv" ksmbd-tools)
fetch() {
    # as root: _apt cannot write into root's cache (apt would warn and do it unsandboxed anyway)
    (cd "$debs" && run 900 apt-get "${apt_opts[@]}" -o APT::Sandbox::User=root download "${want[@]}" </dev/null >&2)
}
have_debs() {
    for p in "linux-image-$abi" "linux-headers-$abi" "linux-headers-$kb-common" "linux-kbuild-$sv" "linux-source-$sv"; do
        ls "$debs/${p}_"*.deb >/dev/null 2>&1 || return 1
    done
    ls "$debs"/ksmbd-tools_*.deb >/dev/null 2>&1
}
if ! have_debs; then
    log "apt-get download ${want[*]}"
    fetch || { apt_update; fetch; } || die "download failed"
fi
deb() { ls "$debs/$1_"*.deb | head -1; }

# ---------------------------------------------------------------- 3b. kernel
log "unpacking linux-image-$abi"
dpkg-deb -x "$(deb "linux-image-$abi")" "$b/image"
mkdir -p "$b/lib/modules"
mv "$b/image/lib/modules/$abi" "$b/lib/modules/$abi"
# The uncompressed kernel (its PVH entry) boots about 2.5 s faster under TCG than vmlinuz,
# which decompresses itself: take the xz payload from its magic.
python3 - "$b/image/boot/vmlinuz-$abi" "$b/vmlinux" <<'EOF'
import lzma, sys
data = open(sys.argv[1], "rb").read()
at = data.find(b"\xfd7zXZ\x00")
if at < 0:
    sys.exit("no xz payload in " + sys.argv[1])
open(sys.argv[2], "wb").write(lzma.LZMADecompressor().decompress(data[at:]))
EOF
rm -rf "$b/image"

# ---------------------------------------------------------------- 3c. cifs.ko, ksmbd.ko
# Debian builds neither CONFIG_CIFS_SMB_DIRECT nor CONFIG_SMB_SERVER_SMBDIRECT: rebuild both out
# of tree from linux-source against the headers of the very same version.
log "rebuilding cifs.ko and ksmbd.ko with SMB Direct"
kbuild="$b/kbuild"
mkdir -p "$kbuild" "$b/src"
for p in "linux-headers-$abi" "linux-headers-$kb-common" "linux-kbuild-$sv"; do
    dpkg-deb -x "$(deb "$p")" "$kbuild"
done
kdir="$kbuild/usr/src/linux-headers-$abi"
sed -i "s#include /usr/src#include $kbuild/usr/src#" "$kdir/Makefile"
src=linux-source-$sv
dpkg-deb --fsys-tarfile "$(deb "linux-source-$sv")" | tar -xO "./usr/src/$src.tar.xz" \
    | tar -xJ -C "$b/src" "$src/fs/smb" "$src/fs/internal.h" "$src/scripts/asn1_compiler.c" \
        "$src/include/linux/asn1_ber_bytecode.h" "$src/include/linux/asn1.h"
s="$b/src/$src"
# linux-kbuild lacks scripts/asn1_compiler (cifs and ksmbd compile their SPNEGO ASN.1)
gcc -O2 -I "$s/include" -o "$kbuild/usr/lib/linux-kbuild-$sv/scripts/asn1_compiler" "$s/scripts/asn1_compiler.c"
mkdir -p "$b/build/fs"
cp -a "$s/fs/smb" "$b/build/fs/"
cp "$s/fs/internal.h" "$b/build/fs/"   # ksmbd's vfs.c includes ../../internal.h
# apply each hunk unless it is already there (a newer kernel may carry the fix)
out=$(patch -d "$b/build/fs/smb/server" -p1 --forward --no-backup-if-mismatch -r - \
    < "$here/ksmbd-6.1-fixes.patch" 2>&1) || {
    echo "$out" >&2
    echo "$out" | grep -q 'FAILED' && die "ksmbd-6.1-fixes.patch does not apply to $src"
}
echo "$out" | sed 's/^/  patch: /' >&2
jobs=$(nproc)
run 900 make -s -j"$jobs" -C "$kdir" M="$b/build/fs/smb/client" CONFIG_CIFS=m CONFIG_CIFS_SMB_DIRECT=y \
    KCFLAGS=-DCONFIG_CIFS_SMB_DIRECT=1 modules >&2
run 900 make -s -j"$jobs" -C "$kdir" M="$b/build/fs/smb/server" CONFIG_SMB_SERVER=m \
    CONFIG_SMB_SERVER_SMBDIRECT=y KCFLAGS=-DCONFIG_SMB_SERVER_SMBDIRECT=1 modules >&2
# depmod prefers updates/ over the stock kernel/ modules
upd="$b/lib/modules/$abi/updates"
mkdir -p "$upd"
strip --strip-debug -o "$upd/cifs.ko" "$b/build/fs/smb/client/cifs.ko"
strip --strip-debug -o "$upd/ksmbd.ko" "$b/build/fs/smb/server/ksmbd.ko"
depmod -b "$b" "$abi"
# sanity: the rebuilt modules are the ones modprobe will pick, and they carry SMB Direct
for m in cifs ksmbd; do
    path=$(modinfo -b "$b" -k "$abi" -F filename "$m")
    [ "$path" = "$upd/$m.ko" ] || die "modprobe would load $path, not the rebuilt $m.ko"
done
grep -q smbd_ "$upd/cifs.ko" || die "cifs.ko has no SMB Direct symbols"
grep -q smb_direct "$upd/ksmbd.ko" || die "ksmbd.ko has no SMB Direct symbols"
rm -rf "$kbuild" "$b/src" "$b/build"

# ---------------------------------------------------------------- 3d. ksmbd-tools, privately
log "unpacking ksmbd-tools"
dpkg-deb -x "$(deb ksmbd-tools)" "$b/ksmbd-tools"
tool="$b/ksmbd-tools/usr/libexec/ksmbd.tools"
[ -x "$tool" ] || tool=$(find "$b/ksmbd-tools" -type f -name 'ksmbd.tools' | head -1)
[ -x "$tool" ] || die "ksmbd-tools: no ksmbd.tools binary in the package"
if ldd "$tool" | grep -q 'not found'; then
    ldd "$tool" >&2
    die "ksmbd-tools: missing shared libraries (install them in the package list above)"
fi
mkdir -p "$b/bin"
# the one binary dispatches on its own name; link targets are relative so the rename below holds
rel=${tool#"$b/"}
for n in adduser addshare control mountd; do ln -s "../$rel" "$b/bin/ksmbd.$n"; done

# ---------------------------------------------------------------- 3e. initramfs
log "building the initramfs"
ir="$b/initramfs"
mkdir -p "$ir"/{bin,mods,dev,proc,sys,host,ovl,newroot}
cp /bin/busybox "$ir/bin/busybox"
"$ir/bin/busybox" --help >/dev/null 2>&1 || die "/bin/busybox is not a static busybox"
# modules for virtio-pci, 9p and overlay, with their dependencies in load order
: > "$ir/mods/order"
for m in virtio_pci 9pnet_virtio 9p overlay; do
    modprobe -d "$b" -S "$abi" --show-depends "$m" || die "modprobe --show-depends $m failed"
done | awk '$1 == "insmod" {print $2}' | while read -r ko; do
    name=$(basename "$ko")
    grep -qx "${name%%.ko*}.ko" "$ir/mods/order" && continue
    case $ko in
        *.ko.xz) xz -dc "$ko" > "$ir/mods/${name%.xz}" ;;
        *.ko.zst) zstd -dcq "$ko" > "$ir/mods/${name%.zst}" ;;
        *.ko.gz) gzip -dc "$ko" > "$ir/mods/${name%.gz}" ;;
        *) cp "$ko" "$ir/mods/" ;;
    esac
    echo "${name%%.ko*}.ko" >> "$ir/mods/order"
done
grep -q '^9p.ko$' "$ir/mods/order" || die "9p.ko not found in the kernel's modules"
install -m 0755 "$here/initramfs-init" "$ir/init"
(cd "$ir" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1 > "$b/initramfs.cpio.gz")
rm -rf "$ir"

# ---------------------------------------------------------------- 4. stamp
cat > "$b/info" <<EOF
abi=$abi
version=$pv
ksmbd_tools=$(basename "$(deb ksmbd-tools)")
built=$(date -u +%Y-%m-%dT%H:%M:%SZ) in $(( $(date +%s) - t_start )) s
EOF
echo "$recipe" > "$b/.complete"
mv "$b" "$dir"
rm -rf "$debs"
if [ "${RXE_KEEP_OLD:-0}" != 1 ]; then
    for old in "$cache_root"/*/; do
        old=${old%/}
        case $old in "$dir" | "$data" | "$cache_root"/data.*) continue ;; esac
        { log "removing old cache $old"; rm -rf "$old"; }
    done
fi
log "cache ready: $dir ($(du -sh "$dir" | cut -f1)), built in $(( $(date +%s) - t_start )) s"
echo "$dir"
