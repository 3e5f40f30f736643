# Dialects 3.0 (RDMA_V1), 3.0.2 and 3.1.1 (RDMA_V1_INVALIDATE), rsize/wsize 64 KiB and
# 4 MiB: each mount reads and writes MB MiB by RDMA, checked by sha256 and by the
# proxy's per-channel counters.
. "$(dirname "$0")/common.sh"
MB=${MB:-16}
dd if=/dev/urandom of=/srv/share/src bs=1M count=$MB status=none
s0=$(sha256sum < /srv/share/src)
RUST_LOG=info $R/smbdirect serve --listen 0.0.0.0:445 --share share=/srv/share --user tuser:tpass > /tmp/srv.log 2>&1 &
SRV=$!
wait_for cm_listening || { echo "no SMB Direct listener"; cat /tmp/srv.log; exit 1; }
fail=0
for c in "3.0" "3.02" "3.1.1,rsize=65536,wsize=65536" "3.1.1,rsize=4194304,wsize=4194304"; do
  timeout 120 mount -t cifs //10.9.0.1/share /mnt/x -o rdma,username=tuser,password=tpass,cache=none,vers=$c || { echo "[$c] MOUNT FAILED"; fail=1; continue; }
  r=$(timeout 300 dd if=/mnt/x/src of=/tmp/back bs=4M 2>&1 | grep -o '[0-9.]* [MGk]B/s')
  w=$(timeout 300 dd if=/srv/share/src of=/mnt/x/dst bs=4M conv=fsync 2>&1 | grep -o '[0-9.]* [MGk]B/s')
  [ "$(sha256sum < /tmp/back)" = "$s0" ] && [ "$(sha256sum < /srv/share/dst)" = "$s0" ] && ok=ok || { ok=MISMATCH; fail=1; }
  umount /mnt/x; rm -f /srv/share/dst /tmp/back; sleep 1
  line=$(grep 'closed: rdma_read' /tmp/srv.log | tail -1 | sed 's/.*closed: //')
  echo "[$c] read $r write $w sha256 $ok | $line"
  rr=$(echo "$line" | sed -n 's/.*rdma_read=\([0-9]*\).*/\1/p'); rw=$(echo "$line" | sed -n 's/.*rdma_write=\([0-9]*\).*/\1/p')
  [ $((100 * (rr + rw))) -ge $((99 * 2 * MB * 1048576)) ] || { echo "[$c] RDMA SHARE TOO LOW"; fail=1; }
done
kill $SRV; sleep 1
grep -E 'WARN|ERROR' /tmp/srv.log | grep -v 'rdma-proxy was killed' | cut -c1-250 | tail -10
cp /tmp/srv.log $OUT/srv-matrix.log 2>/dev/null
exit $fail
