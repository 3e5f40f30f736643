# Part 7 (process and client faults): a client killed mid-transfer leaves no QP or MR
# behind and the next mount works; a killed proxy is restarted by `smbdirect serve`
# while TCP service goes on. Also times a TCP mount of the same server.
. "$(dirname "$0")/common.sh"
MB=${MB:-32}
dd if=/dev/urandom of=/srv/share/src bs=1M count=$MB status=none
RUST_LOG=info $R/smbdirect serve --listen 0.0.0.0:445 --share share=/srv/share --user tuser:tpass > /tmp/srv.log 2>&1 &
SRV=$!
wait_for cm_listening || { echo "no SMB Direct listener"; cat /tmp/srv.log; exit 1; }
fail=0
res() { echo "qp=$(rdma res show qp | grep -c rdma-proxy) mr=$(rdma res show mr | grep -c rdma-proxy) cm_id=$(rdma res show cm_id | grep -c rdma-proxy)"; }
echo "resources idle: $(res)"
t=$(up); timeout 90 mount -t cifs //10.9.0.1/share /mnt/x -o vers=3.1.1,username=tuser,password=tpass,cache=none; echo "tcp mount rc=$? ($t -> $(up))"; umount /mnt/x
M="-o rdma,vers=3.1.1,username=tuser,password=tpass,cache=none"
timeout 120 mount -t cifs //10.9.0.1/share /mnt/x $M || { echo "MOUNT 1 FAILED"; exit 1; }
echo "resources mounted: $(res)"
# 1. the client goes away mid-transfer: the reader is killed, then the share is
# unmounted. (umount -f with the killed reader's I/O in flight crashed cifs 6.1
# itself: "Busy inodes after unmount", kernel BUG at fs/super.c:503.)
sh -c 'while :; do dd if=/mnt/x/src of=/dev/null bs=4M 2>/dev/null; done' & L=$!
sleep 3; kill -STOP $L; pkill -9 -x dd && echo "reader killed mid-transfer"; kill -9 $L; sleep 1
umount /mnt/x; echo "unmount after the killed reader rc=$?"
for i in $(seq 30); do [ "$(rdma res show qp | grep -c rdma-proxy)" = 0 ] && break; sleep 0.5; done
echo "resources after the client went away: $(res)"
[ "$(rdma res show qp | grep -c rdma-proxy)" = 0 ] || { echo "QP LEFT BEHIND"; fail=1; }
timeout 120 mount -t cifs //10.9.0.1/share /mnt/x $M && echo "mount after client fault ok" || { echo "MOUNT AFTER CLIENT FAULT FAILED"; fail=1; }
cmp /srv/share/src /mnt/x/src && echo "cmp ok" || fail=1
umount /mnt/x
# 2. the proxy dies: TCP goes on, the supervisor restarts it, RDMA mounts again
P=$(pgrep -x rdma-proxy); echo "killing rdma-proxy pid $P"; kill -9 $P
timeout 60 mount -t cifs //10.9.0.1/share /mnt/x -o vers=3.1.1,username=tuser,password=tpass,cache=none && ls /mnt/x >/dev/null && echo "tcp during proxy restart ok" || { echo "TCP SERVICE DOWN"; fail=1; }
umount /mnt/x
for i in $(seq 60); do P2=$(pgrep -x rdma-proxy) && [ "$P2" != "$P" ] && cm_listening && break; sleep 0.5; done
echo "proxy restarted: pid ${P2:-none}"
timeout 120 mount -t cifs //10.9.0.1/share /mnt/x $M && echo "mount after proxy restart ok" || { echo "MOUNT AFTER PROXY RESTART FAILED"; fail=1; }
cmp /srv/share/src /mnt/x/src && echo "cmp ok" || fail=1
umount /mnt/x
sleep 1; echo "resources at the end: $(res)"
kill $SRV; sleep 1
grep -E 'closed: rdma_read|restart|rdma-proxy (exited|was killed|failed)|SMB Direct connection ends' /tmp/srv.log | cut -c1-250
dmesg | grep -iE 'WARNING|BUG|Oops' | tail -4
cp /tmp/srv.log $OUT/srv-faults2.log 2>/dev/null
exit $fail
