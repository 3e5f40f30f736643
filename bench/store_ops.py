#!/usr/bin/env python3
"""Cost of the shared state store per CREATE/CLOSE, LOCK/UNLOCK and READ
(issue 10: share modes, delete-on-close and byte-range locks go through a
store that all worker processes see; LMDB adds a write transaction per
CREATE, CLOSE, LOCK and UNLOCK and a read transaction per READ/WRITE).

    $(ci/venv.sh)/bin/python bench/store_ops.py [--ops 3000] [--rounds 3] [memory] [lmdb]

`memory` runs the server with no `state directory` (the in-process store),
`lmdb` with one (the LMDB store in it). One smbprotocol connection (SMB
3.1.1) per case, in rounds interleaved between the cases; per operation it
reports wall time and the server's CPU time (utime + stime of all its
processes, from /proc). The client is in Python, so wall time mostly
measures the client; the server CPU column is the figure to compare.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/peers"))

import smbpeer  # noqa: E402
from smbprotocol.connection import Connection  # noqa: E402
from smbprotocol.open import (CreateDisposition, CreateOptions, FilePipePrinterAccessMask, ImpersonationLevel,  # noqa: E402
                              Open, ShareAccess, SMB2LockElement, LockFlags)
from smbprotocol.session import Session  # noqa: E402
from smbprotocol.tree import TreeConnect  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(server: smbpeer.SmbServer) -> float:
    total = 0
    for pid in server.pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def start(kind: str, work: Path) -> smbpeer.SmbServer:
    args: list[str] = []
    if kind == "lmdb":
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "store.conf"
        conf.write_text(f"[global]\n state directory = {work / 'state'}\n")
        args = ["--config", str(conf)]
    return smbpeer.start_ours(work, "bench", "Bench-pass-1", extra_args=args)


def opener(tree: TreeConnect, name: str, access: int, share: int) -> Open:
    o = Open(tree, name)
    o.create(ImpersonationLevel.Impersonation, access, 0x80, share, CreateDisposition.FILE_OPEN_IF,
             CreateOptions.FILE_NON_DIRECTORY_FILE)
    return o


def lock_elem(offset: int, length: int, flags: int) -> SMB2LockElement:
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = flags
    return e


def measure(server: smbpeer.SmbServer, tree: TreeConnect, ops: int) -> dict[str, tuple[float, float]]:
    out = {}
    rw = FilePipePrinterAccessMask.FILE_READ_DATA | FilePipePrinterAccessMask.FILE_WRITE_DATA
    share = ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
    # CREATE + CLOSE of one file (a share-mode record added and removed).
    c0, t0 = cpu_s(server), time.perf_counter()
    for _ in range(ops):
        opener(tree, "bench.dat", rw, share).close()
    out["create+close"] = (time.perf_counter() - t0, cpu_s(server) - c0)
    # LOCK + UNLOCK on an open handle.
    o = opener(tree, "bench.dat", rw, share)
    o.write(b"x" * 4096, 0)
    ex = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY
    c0, t0 = cpu_s(server), time.perf_counter()
    for _ in range(ops):
        o.lock([lock_elem(0, 100, ex)])
        o.lock([lock_elem(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    out["lock+unlock"] = (time.perf_counter() - t0, cpu_s(server) - c0)
    # READ of 4 KiB while another open holds a lock elsewhere in the file
    # (the lock check reads the file's lock record).
    o2 = opener(tree, "bench.dat", rw, share)
    o2.lock([lock_elem(1 << 20, 10, ex)])
    c0, t0 = cpu_s(server), time.perf_counter()
    for _ in range(ops):
        o.read(0, 4096)
    out["read 4k"] = (time.perf_counter() - t0, cpu_s(server) - c0)
    o2.close()
    o.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("kinds", nargs="*", default=["memory", "lmdb"])
    a = ap.parse_args()
    totals: dict[tuple[str, str], list[float]] = {}
    # On tmpfs, as the default state directories (/run, $XDG_RUNTIME_DIR) are.
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        servers = {k: start(k, Path(tmp) / k) for k in a.kinds}
        trees = {}
        try:
            for k, s in servers.items():
                conn = Connection(uuid.uuid4(), "127.0.0.1", s.port)
                conn.connect()
                sess = Session(conn, s.user, s.password, require_encryption=False)
                sess.connect()
                tree = TreeConnect(sess, rf"\\127.0.0.1\{smbpeer.SHARE}")
                tree.connect()
                trees[k] = tree
            for _ in range(a.rounds):
                for k in a.kinds:
                    for op, (wall, cpu) in measure(servers[k], trees[k], a.ops).items():
                        t = totals.setdefault((k, op), [0.0, 0.0])
                        t[0] += wall
                        t[1] += cpu
        finally:
            for s in servers.values():
                s.stop()
    n = a.ops * a.rounds
    print(f"{'store':8} {'operation':14} {'ops/s (wall)':>13} {'server CPU us/op':>17}")
    for (k, op), (wall, cpu) in totals.items():
        print(f"{k:8} {op:14} {n / wall:13.0f} {cpu / n * 1e6:17.1f}")


if __name__ == "__main__":
    main()
