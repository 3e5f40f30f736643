#!/usr/bin/env bash
# Samba's smbtorture SMB2 suites against a server on loopback.
#
#   ci/smbtorture.sh [--compare] [ours|samba] [SUITE ...]
#   ci/smbtorture.sh --check [ours|samba] [SUITE ...]
#
# TARGET ours  = target/release/smbdirect (or $SMBDIRECT_BIN), samba = Samba's
# smbd through ci/samba.sh. --compare runs both targets and prints both
# columns (then TARGET may be left out). SUITE is a name under smb2.
# (connect, read, ...) or a full name (smb2.read.eof); default: the list below.
# Each suite runs as
#   smbtorture //127.0.0.1/share -p PORT -U USER%PASS --target=samba3 --format=subunit ... smb2.SUITE
# with the share emptied between suites. Results are counted per suite from
# the subunit lines (success/failure/error/skip/xfail/uxsuccess) and printed as
# a Markdown table. Logs: $SMBTORTURE_LOGS (default target/smbtorture/).
# Exit code 0 when every suite ran (test failures are reported, not fatal),
# 1 when a server did not start (its column says so), and with --strict 1 on
# any failure or error too.
#
# --check (what ci/test.sh runs; TARGET defaults to ours) compares every
# subtest's result with the known-failure list $SMBTORTURE_KNOWNFAIL (default
# ci/smbtorture-knownfail.txt: one full subtest name per line, then "#" and
# why; blank lines and lines starting with "#" are comments), as Samba's
# selftest does with its knownfail list. It fails (exit 1) when a subtest not
# on the list fails or errors, when a listed subtest passes or is no longer
# run (take it off the list in the same change), when an entry has no reason,
# and when a suite times out, kills the server or reports nothing.
# Entries of suites that are not run this time are left alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Ours runs with its default number of worker processes (SMBTORTURE_WORKERS
# sets `max workers`). The session and multichannel suites bind channels
# from connections with another ClientGUID, which the supervisor may route
# to another worker than the session's: that worker passes the connection to
# the session's (server/src/connpass.rs), which answers as one process would.
if [ -n "${SMBTORTURE_WORKERS:-}" ]; then
    SMBDIRECT_EXTRA_CONF="max workers = ${SMBTORTURE_WORKERS}${SMBDIRECT_EXTRA_CONF:+
$SMBDIRECT_EXTRA_CONF}"
    export SMBDIRECT_EXTRA_CONF
fi

DEFAULT_SUITES=(connect read rw create dir getinfo setinfo lock compound credits session ioctl multichannel durable-open durable-v2-open replay.channel-sequence replay.replay-commands streams acls sdread maximum_allowed)
compare=0
strict=0
check=0
targets=()
suites=()
for a in "$@"; do
    case "$a" in
        --compare) compare=1 ;;
        --strict) strict=1 ;;
        --check) check=1 ;;
        ours|samba) targets+=("$a") ;;
        -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
        -*) echo "smbtorture.sh: unknown option $a" >&2; exit 2 ;;
        *) suites+=("$a") ;;
    esac
done
if [ "$compare" = 1 ]; then targets=(ours samba); fi
if [ "$check" = 1 ]; then
    [ "$compare" = 0 ] || { echo "smbtorture.sh: --check and --compare exclude each other" >&2; exit 2; }
    [ ${#targets[@]} -ge 1 ] || targets=(ours)
    [ ${#targets[@]} -eq 1 ] || { echo "smbtorture.sh: --check takes one target" >&2; exit 2; }
fi
knownfail=${SMBTORTURE_KNOWNFAIL:-$root/ci/smbtorture-knownfail.txt}
[ ${#targets[@]} -ge 1 ] || { echo "usage: $0 [--compare] [--strict] ours|samba [SUITE ...]" >&2; exit 2; }
[ ${#suites[@]} -ge 1 ] || suites=("${DEFAULT_SUITES[@]}")
command -v smbtorture >/dev/null || { echo "smbtorture.sh: smbtorture missing (apt-get install samba-testsuite)" >&2; exit 1; }

logs=${SMBTORTURE_LOGS:-$root/target/smbtorture}
mkdir -p "$logs"
user=tester
pass="Pw$(head -c 10 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# --check runs in CI, where the whole step must stay under 5 minutes (the
# default suites take about 70 s against ours): a hung suite fails it soon.
if [ "$check" = 1 ]; then SUITE_TIMEOUT=${SUITE_TIMEOUT:-120}; else SUITE_TIMEOUT=${SUITE_TIMEOUT:-900}; fi

# shellcheck source=ci/targets.sh
. "$root/ci/targets.sh"
work=""
cleanup() {
    target_stop
    if [ -n "$work" ]; then rm -rf "$work"; work=""; fi
}
trap cleanup EXIT

# sets: port, share_path
start_target() {
    work=$(mktemp -d /tmp/smbtorture-XXXXXX)
    target_start "$1" "$work" "$user" "$pass" || return 1
    port=$TARGET_PORT
    share_path=$TARGET_SHARE_PATH
}

server_alive() { target_alive; }

declare -A RESULT   # RESULT[target:suite] = "passed/total (detail)"
declare -A SECONDS_USED
any_bad=0
not_started=0

run_target() {
    local target=$1 t0 suite name log s f e k x u total
    if ! start_target "$target"; then
        echo "smbtorture.sh: the $target server did not start" >&2
        for suite in "${suites[@]}"; do RESULT[$target:$suite]="not run (server did not start)"; done
        SECONDS_USED[$target:all]=0
        any_bad=1
        not_started=1
        cleanup
        return 0
    fi
    t0=$(date +%s)
    for suite in "${suites[@]}"; do
        case "$suite" in smb2.*) name=$suite ;; *) name=smb2.$suite ;; esac
        find "$share_path" -mindepth 1 -delete 2>/dev/null || rm -rf "${share_path:?}"/* "${share_path:?}"/.[!.]* 2>/dev/null || true
        log="$logs/$target-$name.subunit"
        local st=$(date +%s)
        set +e
        timeout --kill-after=10 "$SUITE_TIMEOUT" smbtorture "//127.0.0.1/share" -p "$port" -U "$user%$pass" \
            --target=samba3 --format=subunit --basedir="$work" \
            --option=torture:progress=no --option=torture:sharedelay=100000 \
            --option=torture:writetimeupdatedelay=500000 --maximum-runtime=840 \
            "$name" >"$log" 2>&1 </dev/null
        local rc=$?
        set -e
        s=$(grep -c '^success: ' "$log" || true)
        f=$(grep -c '^failure: ' "$log" || true)
        e=$(grep -c '^error: ' "$log" || true)
        k=$(grep -c '^skip: ' "$log" || true)
        x=$(grep -c '^xfail: ' "$log" || true)
        u=$(grep -c '^uxsuccess: ' "$log" || true)
        total=$((s + f + e + k + x + u))
        local detail=""
        [ "$f" -gt 0 ] && detail+=" ${f} fail"
        [ "$e" -gt 0 ] && detail+=" ${e} error"
        [ "$k" -gt 0 ] && detail+=" ${k} skip"
        [ "$x" -gt 0 ] && detail+=" ${x} xfail"
        [ "$rc" -eq 124 ] && detail+=" TIMEOUT"
        if ! server_alive; then detail+=" SERVER DIED"; fi
        [ "$total" -eq 0 ] && detail+=" no result (exit $rc)"
        RESULT[$target:$suite]="$s/$total${detail:+ (${detail# })}"
        SECONDS_USED[$target:$suite]=$(( $(date +%s) - st ))
        if [ "$f" -gt 0 ] || [ "$e" -gt 0 ] || [ "$total" -eq 0 ] || [ "$rc" -eq 124 ]; then any_bad=1; fi
        echo "$target $name: ${RESULT[$target:$suite]} in ${SECONDS_USED[$target:$suite]} s" >&2
        if ! server_alive; then
            echo "smbtorture.sh: the $target server died during $name" >&2
            [ "$target" = ours ] && cp "$work/smbdirect.log" "$logs/ours-server-died-in-$name.log" 2>/dev/null
            cleanup
            if ! start_target "$target"; then
                echo "smbtorture.sh: the $target server did not restart" >&2
                not_started=1
                any_bad=1
                break
            fi
        fi
    done
    SECONDS_USED[$target:all]=$(( $(date +%s) - t0 ))
    [ "$target" = ours ] && cp "$work/smbdirect.log" "$logs/ours-server.log" 2>/dev/null
    cleanup
}

for t in "${targets[@]}"; do run_target "$t"; done

header="| suite |"; sep="| --- |"
for t in "${targets[@]}"; do header+=" $t |"; sep+=" --- |"; done
echo
echo "$header"
echo "$sep"
for suite in "${suites[@]}"; do
    row="| ${suite#smb2.} |"
    for t in "${targets[@]}"; do row+=" ${RESULT[$t:$suite]:-not run} |"; done
    echo "$row"
done
row="| time |"
for t in "${targets[@]}"; do row+=" ${SECONDS_USED[$t:all]:-0} s |"; done
echo "$row"
echo
echo "logs: $logs"
if [ "$not_started" = 1 ]; then exit 1; fi
if [ "$check" = 1 ]; then
    t=${targets[0]}
    args=()
    for suite in "${suites[@]}"; do
        case "$suite" in smb2.*) name=$suite ;; *) name=smb2.$suite ;; esac
        args+=("$name=$logs/$t-$name.subunit=${RESULT[$t:$suite]}")
    done
    python3 "$root/ci/smbtorture_check.py" "$knownfail" "${args[@]}"
    exit $?
fi
if [ "$strict" = 1 ] && [ "$any_bad" = 1 ]; then exit 1; fi
exit 0
