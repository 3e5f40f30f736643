# Sourced by the guest scripts: rxe on a dummy netdev at 10.9.0.1, cifs loaded.
# Run a script in the reference lab (/work/shared/lab, see its setup.sh) with
#   cargo build --release -p smbdirect-server --bin smbdirect
#   cargo build --release -p smbdirect-rdma-proxy --features verbs
#   D=/tmp/rxevm sh /tmp/rxevm/run-vm.sh $PWD/rdma-proxy/guest/t-serve-rdma.sh
# R = directory of the host-built release binaries (the guest sees the host's /):
# this checkout's target/release unless set.
R=${R:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
OUT=${D:-/tmp/rxevm}/share
up() { cut -d' ' -f1 /proc/uptime; }
modprobe rdma_rxe && modprobe rdma_ucm || exit 1
ip link add dummy0 type dummy && ip addr add 10.9.0.1/24 dev dummy0 && ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0 || exit 1
modprobe cifs || exit 1
ulimit -l unlimited
mkdir -p /srv/share /mnt/x && mount -t tmpfs -o size=1200m tmpfs /srv/share
# wait_for CMD...: up to 10 s for CMD to succeed
wait_for() { for i in $(seq 50); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
cm_listening() { rdma res show cm_id | grep -q LISTEN; }
