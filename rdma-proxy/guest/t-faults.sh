# Part 7: malformed SMB Direct input from a raw client (smbd-fault) ends that
# connection cleanly; the proxy keeps serving (a mount works afterwards).
. "$(dirname "$0")/common.sh"
# The proxy is the one `smbdirect serve` starts.
RUST_LOG=info $R/smbdirect serve --listen 0.0.0.0:445 --share share=/srv/share --user tuser:tpass > /tmp/proxy.log 2>&1 &
BR=$!
wait_for cm_listening || { echo "proxy did not listen"; cat /tmp/proxy.log; exit 1; }
fail=0
for s in ${SCENARIOS:-ok bad-version zero-credits small-receive small-fragmented short-negotiate data-offset-past remaining-lies fragmented-too-large zero-credits-data oversize}; do
  timeout 30 $R/smbd-fault 10.9.0.1:445 $s || fail=1
done
echo "--- proxy still serving?"
echo x > /srv/share/x.txt
timeout 90 mount -t cifs //10.9.0.1/share /mnt/x -o rdma,vers=3.1.1,username=tuser,password=tpass,cache=none; mrc=$?
echo "mount after faults rc=$mrc"; ls /mnt/x; umount /mnt/x
[ $mrc = 0 ] || fail=1
sleep 1; kill $BR; sleep 1
echo "--- proxy log"; grep -vE 'DEBUG|TRACE' /tmp/proxy.log | cut -c1-300 | tail -60
# The server is gone: its proxy sees the control socket close and exits.
for i in $(seq 50); do pgrep -x rdma-proxy >/dev/null || break; sleep 0.2; done
n=$(pgrep -x rdma-proxy | wc -l); echo "proxy processes left: $n"; [ $n = 0 ] || fail=1
dmesg | grep -iE 'WARNING|BUG|Oops|RIP' | tail -5
cp /tmp/proxy.log $OUT/proxy-faults.log 2>/dev/null
exit $fail
