# Sourced by ci/smbtorture.sh and bench/throughput.sh: start and stop the SMB
# server under test on a free loopback port.
#
#   target_start ours|samba WORKDIR USER PASS
#       sets TARGET_PORT, TARGET_SHARE_PATH (WORKDIR/share, share name "share"),
#       TARGET_MAIN_PID; returns once the server accepts connections
#   target_alive   (0 if the server started last is running)
#   target_stop    (stops it; safe to call twice)
#
# ours  = ${SMBDIRECT_BIN:-target/release/smbdirect} serve --listen 127.0.0.1:0
#         --share share=WORKDIR/share --user USER:PASS
#         --config WORKDIR/smbdirect.conf; stderr goes to WORKDIR/smbdirect.log.
#         The config file sets what ci/samba.sh sets for smbd where ours
#         differs by default, so both targets run with the same settings:
#         smb2 max credits = 8192 (Samba's default; ours is 512) and
#         smbd:FSCTL_SMBTORTURE = yes (smbtorture's test-only FSCTLs).
# samba = ci/samba.sh start WORKDIR PORT USER PASS

_targets_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_KIND=""
TARGET_WORKDIR=""
TARGET_PORT=""
TARGET_SHARE_PATH=""
TARGET_MAIN_PID=""

target_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

target_start() {
    local kind=$1 dir=$2 user=$3 pass=$4
    TARGET_KIND=$kind
    TARGET_WORKDIR=$dir
    mkdir -p "$dir"
    chmod 0755 "$dir"
    TARGET_SHARE_PATH=$dir/share
    case "$kind" in
    samba)
        local try
        for try in 1 2 3; do
            TARGET_PORT=$(target_free_port)
            if "$_targets_root/ci/samba.sh" start "$dir" "$TARGET_PORT" "$user" "$pass" >/dev/null; then
                TARGET_MAIN_PID=$(cat "$dir/smbd.pid.fg")
                return 0
            fi
        done
        echo "targets.sh: could not start Samba" >&2
        return 1
        ;;
    ours)
        local bin=${SMBDIRECT_BIN:-$_targets_root/target/release/smbdirect}
        if [ ! -x "$bin" ]; then
            echo "targets.sh: $bin missing: run cargo build --release" >&2
            return 1
        fi
        mkdir -p "$TARGET_SHARE_PATH"
        cat >"$dir/smbdirect.conf" <<'CONF'
[global]
    smb2 max credits = 8192
    smbd:FSCTL_SMBTORTURE = yes
CONF
        # SMBDIRECT_EXTRA_CONF: more [global] lines (one per line), e.g. to run the peer tests or
        # the benchmarks with a setting that is off by default.
        [ -z "${SMBDIRECT_EXTRA_CONF:-}" ] || printf '%s\n' "$SMBDIRECT_EXTRA_CONF" >>"$dir/smbdirect.conf"
        # made before the server starts: the loop below reads it at once (a race under load)
        : >"$dir/smbdirect.stdout"
        RUST_LOG=${RUST_LOG:-info} "$bin" serve --listen 127.0.0.1:0 --share "share=$TARGET_SHARE_PATH" \
            --user "$user:$pass" --config "$dir/smbdirect.conf" --state-dir "$dir/state" >"$dir/smbdirect.stdout" 2>"$dir/smbdirect.log" </dev/null &
        TARGET_MAIN_PID=$!
        TARGET_PORT=""
        local i
        for i in $(seq 1 300); do
            TARGET_PORT=$(sed -n 's/^smbdirect: listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' \
                "$dir/smbdirect.stdout" | head -1)
            [ -n "$TARGET_PORT" ] && return 0
            kill -0 "$TARGET_MAIN_PID" 2>/dev/null || break
            sleep 0.1
        done
        echo "targets.sh: smbdirect did not print its listening line; log tail:" >&2
        tail -20 "$dir/smbdirect.log" >&2 || true
        target_stop
        return 1
        ;;
    *)
        echo "targets.sh: unknown target $kind (ours|samba)" >&2
        return 2
        ;;
    esac
}

target_alive() {
    [ -n "$TARGET_MAIN_PID" ] && kill -0 "$TARGET_MAIN_PID" 2>/dev/null
}

target_stop() {
    case "$TARGET_KIND" in
    samba)
        [ -n "$TARGET_WORKDIR" ] && "$_targets_root/ci/samba.sh" stop "$TARGET_WORKDIR" || true
        ;;
    ours)
        if [ -n "$TARGET_MAIN_PID" ]; then
            kill -TERM "$TARGET_MAIN_PID" 2>/dev/null || true
            local i
            for i in $(seq 1 100); do kill -0 "$TARGET_MAIN_PID" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$TARGET_MAIN_PID" 2>/dev/null || true
            wait "$TARGET_MAIN_PID" 2>/dev/null || true
        fi
        ;;
    esac
    TARGET_KIND=""
    TARGET_MAIN_PID=""
}
