# First light: cifs mounts over SMB Direct through rdma-proxy; a stand-in worker
# (smbd-tcp-bridge) carries the SMB2 messages to our server over loopback TCP.
. "$(dirname "$0")/common.sh"
echo hello-over-rdma > /srv/share/hello.txt
$R/smbdirect serve --rdma off --listen 127.0.0.1:10445 --share share=/srv/share --user tuser:tpass > /tmp/srv.log 2>&1 &
wait_for sh -c 'ss -Hltn | grep -q 10445' || { echo "server did not listen"; cat /tmp/srv.log; exit 1; }
RUST_LOG=${PROXY_LOG:-info} $R/smbd-tcp-bridge --proxy $R/rdma-proxy --backend 127.0.0.1:10445 > /tmp/proxy.log 2>&1 &
BR=$!
wait_for cm_listening || { echo "proxy did not listen"; cat /tmp/proxy.log; exit 1; }
rdma res show cm_id
t=$(up); timeout 90 mount -t cifs //10.9.0.1/share /mnt/x -o rdma,vers=3.1.1,username=tuser,password=tpass,cache=none
rc=$?; echo "mount rc=$rc ($t -> $(up))"
grep cifs /proc/mounts
ls -la /mnt/x && cat /mnt/x/hello.txt
echo from-guest > /mnt/x/new.txt && cat /srv/share/new.txt
grep -iE 'rdma|smbd' /proc/fs/cifs/DebugData | head -5
umount /mnt/x; echo "umount rc=$?"
sleep 1; kill $BR; sleep 1
echo "--- proxy log"; cat /tmp/proxy.log | tail -40
echo "--- server log"; tail -15 /tmp/srv.log
dmesg | grep -iE 'cifs|smbd|BUG|Oops' | tail -15
cp /tmp/proxy.log /tmp/srv.log $OUT/ 2>/dev/null
[ $rc = 0 ]
