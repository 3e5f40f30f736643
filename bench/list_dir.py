#!/usr/bin/env python3
"""Directory listing cost against the size of the directory (issue 7: a
listing must be linear, and a case-insensitive lookup must not rescan a large
directory for every name).

    $(ci/venv.sh)/bin/python bench/list_dir.py [--sizes 1000,10000,100000] [--lookups 500] [ours] [samba]

For each size N the directory gets N empty files (lower-case names). Driven
by smbclient (SMB 3.1.1), and measured as the server's CPU time (utime +
stime of all its processes, from /proc) as well as wall time:
  list    `ls` of the N entries, repeated until about 100,000 entries were
          listed; minus an `ls` of an empty directory, per entry;
  lookup  `allinfo NAME` of --lookups entries in one smbclient session, per
          lookup (session setup included, spread over the lookups): once
          with the names as stored, once in upper case, where each is a
          case-insensitive miss the server must resolve.
Linear listing means a flat "per entry" column; lookups that do not rescan
the directory mean a flat "per lookup" column.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/peers"))

import smbpeer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def name(i: int) -> str:
    return f"file-{i:07d}.dat"


def cpu_s(server: smbpeer.SmbServer) -> float:
    """utime + stime of the server's processes (exited threads included)."""
    total = 0
    for pid in server.pids():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / TICK


def smbclient(server: smbpeer.SmbServer, commands: str) -> tuple[float, float, str]:
    """(server CPU s, wall s, output) of one smbclient session."""
    c0, t0 = cpu_s(server), time.perf_counter()
    r = subprocess.run(["smbclient", server.unc, "-p", str(server.port), "-U", server.creds, "-m", "SMB3_11",
                        "-c", commands], capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    time.sleep(0.05)
    out = r.stdout + r.stderr
    if r.returncode != 0 or "NT_STATUS_" in out:
        raise SystemExit(f"smbclient -c {commands[:200]!r} failed:\n{out[-2000:]}")
    return cpu_s(server) - c0, wall, out


def measure(target: str, sizes: list[int], lookups: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix=f"listdir-{target}-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        share = work / "share"
        share.mkdir()
        (share / "empty").mkdir()
        for n in sizes:
            d = share / f"d{n}"
            d.mkdir()
            for i in range(n):
                (d / name(i)).touch()
        for p in [share, *share.iterdir()]:
            p.chmod(0o777)
        time.sleep(1)  # let the directories settle
        server = smbpeer.start_server(target, work / "srv", share_path=share)
        try:
            for n in sizes:
                reps = max(1, 100_000 // n)
                base_cpu, base_wall, _ = smbclient(server, "; ".join(["cd empty; ls; cd .."] * reps))
                cpu, wall, out = smbclient(server, "; ".join([f"cd d{n}; ls; cd .."] * reps))
                listed = sum(1 for line in out.splitlines() if "file-" in line)
                if listed != n * reps:
                    raise SystemExit(f"{target}: listed {listed} entries of d{n} x{reps}, expected {n * reps}")
                picks = random.Random(n).sample(range(n), min(lookups, n))
                same_cpu, same_wall, _ = smbclient(server, f"cd d{n}; " + "; ".join(f"allinfo {name(i)}" for i in picks))
                up_cpu, up_wall, _ = smbclient(server, f"cd d{n}; " + "; ".join(f"allinfo {name(i).upper()}" for i in picks))
                rows.append({
                    "target": target, "n": n, "reps": reps,
                    "list_cpu_us": max(cpu - base_cpu, 0) / (n * reps) * 1e6,
                    "list_wall_us": max(wall - base_wall, 0) / (n * reps) * 1e6,
                    "lookups": len(picks),
                    "exact_cpu_us": same_cpu / len(picks) * 1e6,
                    "exact_wall_us": same_wall / len(picks) * 1e6,
                    "upper_cpu_us": up_cpu / len(picks) * 1e6,
                    "upper_wall_us": up_wall / len(picks) * 1e6,
                })
                print(f"{target}: {rows[-1]}", file=sys.stderr)
        finally:
            alive = server.alive()
            server.stop()
        if not alive:
            raise SystemExit(f"{target}: server died; log tail:\n{server.log_tail()}")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", metavar="ours|samba", default=[])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--lookups", type=int, default=500)
    args = ap.parse_args()
    targets = args.targets or ["ours"]
    for t in targets:
        if t not in smbpeer.TARGETS:
            ap.error(f"unknown target {t!r}: choose from {smbpeer.TARGETS}")
    sizes = [int(s) for s in args.sizes.split(",")]
    smbpeer.require_tool("smbclient")
    rows = []
    for t in targets:
        rows += measure(t, sizes, args.lookups)
    print()
    print("server CPU time (wall time in brackets)")
    print()
    print("| target | entries | listing, per entry | allinfo, stored case | allinfo, upper case |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['target']} | {r['n']} | {r['list_cpu_us']:.1f} µs ({r['list_wall_us']:.1f} µs) | "
              f"{r['exact_cpu_us']:.0f} µs ({r['exact_wall_us']:.0f} µs) | "
              f"{r['upper_cpu_us']:.0f} µs ({r['upper_wall_us']:.0f} µs) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
