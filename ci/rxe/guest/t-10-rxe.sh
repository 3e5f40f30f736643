#!/bin/bash
# rxe comes up: rdma_rxe on a dummy netdev, rxe0 port ACTIVE, a RoCE v2 IPv4 GID for 10.9.0.1.
# rxe-timeout: 120
. "$(dirname "$0")/lib.sh"
t0=$(now)
rxe_up
log "rxe0 up in $(elapsed "$t0") s"
rdma link show rxe0/1
rdma link show rxe0/1 | grep -q 'state ACTIVE' || fail "rdma link: rxe0/1 not ACTIVE"
ibv_devinfo -d rxe0 -v > /tmp/devinfo.txt
grep -E 'hca_id|transport|state:|active_mtu|GID\[' /tmp/devinfo.txt
grep -q 'PORT_ACTIVE' /tmp/devinfo.txt || fail "ibv_devinfo: rxe0 port not PORT_ACTIVE"
grep -q 'GID\[ *1\]:.*10\.9\.0\.1, RoCE v2' /tmp/devinfo.txt || fail "no RoCE v2 IPv4 GID at index 1"
ibv_devices | grep -q rxe0 || fail "ibv_devices does not list rxe0"
log "ok"
