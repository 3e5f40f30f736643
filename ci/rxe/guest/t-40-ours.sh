#!/bin/bash
# The kernel client (cifs.ko with SMB Direct) against OUR server over rxe, as t-30-ksmbd does for
# ksmbd: `smbdirect serve --share share=/srv/share --user tuser:tpass` (RDMA auto-detected: it
# starts rdma-proxy, which listens with RDMA CM on port 445), then mount -o rdma with
# vers=3.1.1, 3.0 and 3.02, and 3.1.1 with rsize/wsize 64 KiB and 4 MiB. Each mount: mkdir,
# create, list, write a random file (dd, 4 MiB blocks, cache=none, conv=fsync), sha256 on the
# server's disk and read back through the mount, rename, delete, unmount (cifs_rdma_case).
# Proof that RDMA carried the payload, from the proxy's own per-channel counters (close line
# "channel N closed: rdma_read=B rdma_write=B inline_sent=B inline_recv=B", ours_rdma_case):
# RDMA moved >= 99% of the bytes written and read, and >= 99% of all bytes of the channel
# (RDMA + inline) on every mount; the rxe SEND-counter bound of cifs_rdma_case holds as for ksmbd
# (99%, 90% with 64 KiB I/O where it counts each of the ~2000 SENDs at its maximum size).
# Figures per mount: $RXE_OUT/t-40-ours/rdma-share.tsv.
# Env: OURS_MIB (256) file size of the first mount, OURS_EXTRA_MIB (64) of the others.
# rxe-timeout: 840
. "$(dirname "$0")/lib.sh"
MIB=${OURS_MIB:-256}
EXTRA_MIB=${OURS_EXTRA_MIB:-64}
rxe_up
modprobe cifs
max_mib=$(( MIB > EXTRA_MIB ? MIB : EXTRA_MIB ))
t0=$(now)
make_source "$max_mib"
log "random source of $max_mib MiB copied from the host ($(elapsed "$t0") s)"

t0=$(now)
ours_start
log "smbdirect serve listening on TCP and RDMA CM port 445 ($(elapsed "$t0") s)"
# never umount -f: cifs 6.1 BUGs on a forced unmount with I/O in flight
trap 'timeout 60 umount "$SMB_MNT" 2>/dev/null || true; ours_stop' EXIT
grep -E 'listening for SMB Direct|RDMA device' "$OURS_LOG" | cut -c1-200

ours_rdma_case v3.1.1 vers=3.1.1 "$MIB" 99
ours_rdma_case v3.0 vers=3.0 "$EXTRA_MIB" 99
ours_rdma_case v3.02 vers=3.02 "$EXTRA_MIB" 99
ours_rdma_case io64k vers=3.1.1,rsize=65536,wsize=65536 "$EXTRA_MIB" 99 90
ours_rdma_case io4m vers=3.1.1,rsize=4194304,wsize=4194304 "$EXTRA_MIB" 99
ours_no_panic
log "ok"
