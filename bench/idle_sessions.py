#!/usr/bin/env python3
"""Memory cost of idle sessions: open N authenticated SMB sessions, each on its
own TCP connection, against the server under test, and report the server's
resident memory (summed over all its processes) from /proc.

    $(ci/venv.sh)/bin/python bench/idle_sessions.py [--sessions 1000] [ours] [samba]

Default targets: both. Each session is an smbprotocol Connection (SMB 3.1.1,
signing required) plus an NTLM-authenticated Session; they stay idle while the
memory is read. A sample of sessions is then checked to still work (tree
connect to the share and disconnect). RSS counts shared pages once per process
(Samba forks one smbd per connection), so PSS (proportional set size, from
/proc/PID/smaps_rollup) is reported too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import logging
import random
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/peers"))

import smbpeer  # noqa: E402
from smbprotocol.connection import Connection, Dialects  # noqa: E402
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory(server: smbpeer.SmbServer) -> tuple[int, int, int]:
    """(processes, RSS KiB, PSS KiB) summed over the server's processes."""
    pids = server.pids()
    return len(pids), sum(smbpeer.rss_kib(p) for p in pids), sum(pss_kib(p) for p in pids)


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, need)
    if hard != resource.RLIM_INFINITY and want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))  # root may raise hard
            return
        except (ValueError, OSError):
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below the {need} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def open_session(server: smbpeer.SmbServer) -> tuple[Connection, Session]:
    conn = Connection(uuid.uuid4(), server.host, server.port, require_signing=True)
    conn.connect(Dialects.SMB_3_1_1, timeout=60)
    try:
        session = Session(conn, server.user, server.password, auth_protocol="ntlm")
        session.connect()
    except Exception:
        conn.disconnect(close=True)
        raise
    return conn, session


def measure(target: str, n: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"idle-{target}-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        server = smbpeer.start_server(target, work / "srv")
        sessions: list[tuple[Connection, Session]] = []
        try:
            time.sleep(1)
            before = memory(server)
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(open_session, server) for _ in range(n)]
                errors = []
                for fut in futures:
                    try:
                        sessions.append(fut.result())
                    except Exception as e:  # counted and reported, not hidden
                        errors.append(repr(e))
            setup_s = time.monotonic() - t0
            if errors:
                raise SystemExit(f"{target}: {len(errors)} of {n} sessions failed, first: {errors[0]}")
            time.sleep(2)  # let the server settle with every session idle
            after = memory(server)
            # the idle sessions must still be usable
            for conn, session in random.sample(sessions, min(10, len(sessions))):
                tree = TreeConnect(session, rf"\\{server.host}\{server.share}")
                tree.connect()
                tree.disconnect()
            alive = server.alive()
        finally:
            for conn, _session in sessions:
                try:
                    conn.disconnect(close=True)
                except Exception:
                    pass
            server.stop()
        if not alive:
            raise SystemExit(f"{target}: server died; log tail:\n{server.log_tail()}")
        return {
            "target": target, "sessions": n, "setup_s": setup_s,
            "procs_before": before[0], "rss_before": before[1], "pss_before": before[2],
            "procs_after": after[0], "rss_after": after[1], "pss_after": after[2],
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", metavar="ours|samba", default=[])
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=16, help="sessions set up in parallel")
    args = ap.parse_args()
    targets = args.targets or list(smbpeer.TARGETS)
    for t in targets:
        if t not in smbpeer.TARGETS:
            ap.error(f"unknown target {t!r}: choose from {smbpeer.TARGETS}")
    logging.basicConfig(level=logging.WARNING)
    raise_nofile(args.sessions * 2 + 256)

    rows = []
    for t in targets:
        r = measure(t, args.sessions, args.workers)
        rows.append(r)
        print(f"{t}: {r}", file=sys.stderr)

    print()
    print(f"{args.sessions} idle authenticated sessions (SMB 3.1.1, signed), one TCP connection each")
    print()
    print("| target | processes | RSS before | RSS after | RSS per session | PSS after | PSS per session | setup |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        n = r["sessions"]
        print(f"| {r['target']} | {r['procs_after']} | {r['rss_before'] / 1024:.1f} MiB | "
              f"{r['rss_after'] / 1024:.1f} MiB | {(r['rss_after'] - r['rss_before']) / n:.1f} KiB | "
              f"{r['pss_after'] / 1024:.1f} MiB | {(r['pss_after'] - r['pss_before']) / n:.1f} KiB | "
              f"{r['setup_s']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
