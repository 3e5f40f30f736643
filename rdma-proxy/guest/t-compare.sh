# Ours (smbdirect serve + rdma-proxy) then ksmbd, same guest, same cifs: mount time,
# dd read/write MB/s of MB MiB with 4 MiB blocks, cache=none. A probe, not a bench.
. "$(dirname "$0")/common.sh"
export PATH=${D:-/tmp/rxevm}/kbin:$PATH
MB=${MB:-128}
dd if=/dev/urandom of=/srv/share/src bs=1M count=$MB status=none
run() { # $1 label
  t=$(up); timeout 120 mount -t cifs //10.9.0.1/share /mnt/x -o rdma,vers=3.1.1,username=tuser,password=tpass,cache=none || { echo "[$1] MOUNT FAILED"; return 1; }
  echo "[$1] mount $t -> $(up)"
  echo "[$1] read:  $(timeout 300 dd if=/mnt/x/src of=/dev/null bs=4M 2>&1 | grep copied)"
  echo "[$1] write: $(timeout 300 dd if=/srv/share/src of=/mnt/x/dst bs=4M conv=fsync 2>&1 | grep copied)"
  umount /mnt/x; rm -f /srv/share/dst
}
RUST_LOG=info $R/smbdirect serve --listen 0.0.0.0:445 --share share=/srv/share --user tuser:tpass > /tmp/srv.log 2>&1 &
SRV=$!
wait_for cm_listening || { echo "no SMB Direct listener"; cat /tmp/srv.log; exit 1; }
run ours
sleep 1; grep 'closed: rdma_read' /tmp/srv.log
kill $SRV; sleep 2
modprobe ksmbd
mkdir -p /etc/ksmbd
printf '[global]\n  server signing = disabled\n[share]\n  path = /srv/share\n  read only = no\n  force user = root\n' > /etc/ksmbd/ksmbd.conf
ksmbd.adduser -a tuser -p tpass >/dev/null && ksmbd.mountd && sleep 1
run ksmbd
cp /tmp/srv.log $OUT/srv-compare.log 2>/dev/null
