# Second milestone: `smbdirect serve` starts rdma-proxy itself; cifs mounts over SMB
# Direct; READ/WRITE payloads go by RDMA (the proxy's close line counts them).
# MB=size of each transfer (default 64).
. "$(dirname "$0")/common.sh"
MB=${MB:-64}
dd if=/dev/urandom of=/srv/share/src bs=1M count=$MB status=none
RUST_LOG=${SRV_LOG:-info} $R/smbdirect serve --listen 0.0.0.0:445 --share share=/srv/share --user tuser:tpass > /tmp/srv.log 2>&1 &
SRV=$!
wait_for cm_listening || { echo "no SMB Direct listener"; cat /tmp/srv.log; exit 1; }
wait_for cm_listening; sleep 0.5
rdma res show cm_id
t=$(up); timeout 120 mount -t cifs //10.9.0.1/share /mnt/x -o rdma,vers=${VERS:-3.1.1},username=tuser,password=tpass,cache=none${OPTS:+,$OPTS}
rc=$?; echo "mount rc=$rc ($t -> $(up))"
[ $rc = 0 ] || { tail -30 /tmp/srv.log; dmesg | tail; exit 1; }
ls -la /mnt/x
s0=$(sha256sum < /srv/share/src)
echo "read ${MB} MiB:";  t=$(up); timeout 300 dd if=/mnt/x/src of=/tmp/back bs=4M 2>&1 | grep copied; echo "($t -> $(up))"
s1=$(sha256sum < /tmp/back); rm -f /tmp/back
[ "$s0" = "$s1" ] && echo "read sha256 ok" || { echo "READ SHA256 MISMATCH"; fail=1; }
echo "write ${MB} MiB:"; t=$(up); timeout 300 dd if=/srv/share/src of=/mnt/x/dst bs=4M conv=fsync 2>&1 | grep copied; echo "($t -> $(up))"
s2=$(sha256sum < /srv/share/dst)
[ "$s0" = "$s2" ] && echo "write sha256 ok" || { echo "WRITE SHA256 MISMATCH"; fail=1; }
mv /mnt/x/dst /mnt/x/dst2 && rm /mnt/x/dst2 && echo "rename+delete ok"
grep -E 'mr_used_count|count_get_receive|rdma' /proc/fs/cifs/DebugData | head -5
umount /mnt/x; echo "umount rc=$?"
sleep 2
grep -E 'closed: rdma_read' /tmp/srv.log
line=$(grep -E 'closed: rdma_read' /tmp/srv.log | tail -1)
rr=$(echo "$line" | sed -n 's/.*rdma_read=\([0-9]*\).*/\1/p'); rw=$(echo "$line" | sed -n 's/.*rdma_write=\([0-9]*\).*/\1/p')
payload=$((2 * MB * 1048576))
echo "rdma bytes $((rr + rw)) of payload $payload"
[ $((100 * (rr + rw))) -ge $((99 * payload)) ] && echo "RDMA share >= 99%: ok" || { echo "RDMA SHARE TOO LOW"; fail=1; }
kill $SRV; sleep 1
echo "--- server log (no DEBUG)"; grep -vE 'DEBUG|TRACE' /tmp/srv.log | cut -c1-300 | tail -40
dmesg | grep -iE 'WARNING|BUG|Oops|RIP|smbd' | tail -8
cp /tmp/srv.log $OUT/srv-rdma.log 2>/dev/null
exit ${fail:-0}
