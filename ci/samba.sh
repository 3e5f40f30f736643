#!/usr/bin/env bash
# Samba's smbd as a throwaway reference SMB server on loopback.
#
#   ci/samba.sh start DIR PORT USER PASS ['key = value' ...]
#   ci/samba.sh stop  DIR
#
# DIR is a scratch folder that holds every piece of Samba state (config,
# passdb, locks, logs, pid). Two shares are exported:
#   [share]     path $SAMBA_SHARE_PATH (default DIR/share), read-write;
#               each extra 'key = value' argument is added to this section
#   [encshare]  path DIR/encshare, with 'smb encrypt = required'
# The SMB user USER is mapped (through nss_wrapper, /etc/passwd is not
# touched) to a non-root Unix uid so access checks are real:
#   - run as root:     smbd runs as root, USER is uid $SAMBA_UID (default 10000),
#                      which owns the share folders
#   - run as non-root: smbd runs under uid_wrapper (fake root, Samba's own
#                      selftest method), USER is the caller's uid
# The listening address is 127.0.0.1:PORT only. 'start' returns once the port
# accepts connections and prints 'samba: listening on 127.0.0.1:PORT'.
set -euo pipefail

die() { echo "samba.sh: $*" >&2; exit 1; }

NSS_WRAPPER_LIB=${NSS_WRAPPER_LIB:-/usr/lib/x86_64-linux-gnu/libnss_wrapper.so}
UID_WRAPPER_LIB=${UID_WRAPPER_LIB:-/usr/lib/x86_64-linux-gnu/libuid_wrapper.so}
SMBD=${SMBD:-/usr/sbin/smbd}
SMBPASSWD=${SMBPASSWD:-/usr/bin/smbpasswd}

usage() { die "usage: $0 start DIR PORT USER PASS ['key = value' ...] | stop DIR"; }

wrapper_env() {
    # Prints the env assignments needed for every Samba binary we start.
    local dir=$1
    local preload="$NSS_WRAPPER_LIB"
    if [ "$(id -u)" -ne 0 ]; then
        preload="$UID_WRAPPER_LIB:$preload"
        echo "UID_WRAPPER=1"
        echo "UID_WRAPPER_ROOT=1"
    fi
    echo "LD_PRELOAD=$preload"
    echo "NSS_WRAPPER_PASSWD=$dir/passwd"
    echo "NSS_WRAPPER_GROUP=$dir/group"
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    [ $# -ge 4 ] || usage
    local dir=$1 port=$2 user=$3 pass=$4
    shift 4
    local extra=("$@")
    for bin in "$SMBD" "$SMBPASSWD" "$NSS_WRAPPER_LIB"; do
        [ -e "$bin" ] || die "missing $bin (apt-get install samba smbclient libnss-wrapper)"
    done
    [ "$(id -u)" -eq 0 ] || [ -e "$UID_WRAPPER_LIB" ] ||
        die "non-root needs $UID_WRAPPER_LIB (apt-get install libuid-wrapper)"
    [ -d /usr/lib/x86_64-linux-gnu/samba/vfs ] && ls /usr/lib/x86_64-linux-gnu/samba/vfs/acl_xattr.so >/dev/null 2>&1 ||
        die "missing Samba VFS modules (apt-get install samba-vfs-modules)"
    if port_open "$port"; then die "port $port is already in use"; fi

    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -f "$dir/smbd.pid.fg" ] && die "$dir already has a running smbd (stop it first)"
    local share=${SAMBA_SHARE_PATH:-$dir/share}
    local uid gid
    if [ "$(id -u)" -eq 0 ]; then
        uid=${SAMBA_UID:-10000}; gid=$uid
    else
        uid=$(id -u); gid=$(id -g)
    fi
    mkdir -p "$dir"/{private,lock,state,cache,pid,ncalrpc,log} "$share" "$dir/encshare"
    chmod 0755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown "$uid:$gid" "$share" "$dir/encshare"
    fi
    chmod 0777 "$share" "$dir/encshare"

    # nss_wrapper answers every passwd/group lookup from these two files.
    local me; me=$(id -un)
    {
        echo "root:x:0:0:root:/root:/bin/false"
        echo "nobody:x:65534:65534:nobody:/nonexistent:/bin/false"
        if [ "$(id -u)" -ne 0 ] && [ "$me" != "$user" ]; then
            # keep the caller's own name resolvable too (uid shared with USER)
            echo "$me:x:$uid:$gid:$me:$dir:/bin/false"
        fi
        echo "$user:x:$uid:$gid:$user:$dir:/bin/false"
    } > "$dir/passwd"
    {
        echo "root:x:0:"
        echo "nogroup:x:65534:"
        echo "$user:x:$gid:"
    } > "$dir/group"

    {
        cat <<CONF
[global]
    server role = standalone server
    workgroup = SMBTEST
    netbios name = SMBTEST
    smb ports = $port
    interfaces = 127.0.0.1/8
    bind interfaces only = yes
    disable netbios = yes
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    private dir = $dir/private
    lock directory = $dir/lock
    state directory = $dir/state
    cache directory = $dir/cache
    pid directory = $dir/pid
    ncalrpc dir = $dir/ncalrpc
    log file = $dir/log/log.%m
    max log size = 0
    passdb backend = tdbsam:$dir/private/passdb.tdb
    map to guest = never
    server min protocol = SMB2_02
    kernel oplocks = no
    kernel change notify = no
    smbd:FSCTL_SMBTORTURE = yes
    panic action = /bin/true
    guest account = nobody

[share]
    path = $share
    read only = no
    store dos attributes = yes
    vfs objects = acl_xattr streams_xattr
    create mask = 0644
    directory mask = 0755
CONF
        for kv in "${extra[@]}"; do
            echo "    $kv"
        done
        cat <<CONF

[encshare]
    path = $dir/encshare
    read only = no
    store dos attributes = yes
    vfs objects = acl_xattr streams_xattr
    smb encrypt = required
CONF
    } > "$dir/smb.conf"

    local envs; mapfile -t envs < <(wrapper_env "$dir")
    printf '%s\n%s\n' "$pass" "$pass" |
        env "${envs[@]}" "$SMBPASSWD" -c "$dir/smb.conf" -a -s "$user" >"$dir/log/smbpasswd.out" 2>&1 ||
        { cat "$dir/log/smbpasswd.out" >&2; die "smbpasswd failed"; }

    # setsid: smbd outlives this script and gets its own process group, so
    # 'stop' can signal the whole family (smbd forks one child per client and
    # samba-dcerpcd helpers) at once.
    setsid env "${envs[@]}" "$SMBD" -F --no-process-group -s "$dir/smb.conf" \
        --debug-stdout -d "${SAMBA_DEBUG_LEVEL:-1}" </dev/null >"$dir/log/smbd.out" 2>&1 &
    local pid=$!
    echo "$pid" > "$dir/smbd.pid.fg"
    local i
    for i in $(seq 1 200); do
        if port_open "$port"; then
            echo "samba: listening on 127.0.0.1:$port"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$dir/log/smbd.out" >&2
            rm -f "$dir/smbd.pid.fg"
            die "smbd exited during start-up"
        fi
        sleep 0.05
    done
    cat "$dir/log/smbd.out" >&2
    stop "$dir"
    die "smbd did not listen on port $port within 10 s"
}

stop() {
    [ $# -ge 1 ] || usage
    local dir=$1 pid
    [ -f "$dir/smbd.pid.fg" ] || { echo "samba.sh: no smbd running in $dir" >&2; return 0; }
    pid=$(cat "$dir/smbd.pid.fg")
    # the process group led by smbd (setsid made pgid == pid)
    kill -TERM -- "-$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    # samba-dcerpcd and its rpcd_* helpers run in their own process group;
    # find them by our own config path (unique to DIR) and end them by pid.
    local p others=()
    for p in /proc/[0-9]*; do
        if { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "--configfile=$dir/smb.conf"; then
            others+=("${p#/proc/}")
        fi
    done
    if [ ${#others[@]} -gt 0 ]; then
        kill -TERM "${others[@]}" 2>/dev/null || true
        sleep 0.2
        kill -KILL "${others[@]}" 2>/dev/null || true
    fi
    rm -f "$dir/smbd.pid.fg"
}

[ $# -ge 1 ] || usage
cmd=$1; shift
case "$cmd" in
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) usage ;;
esac
