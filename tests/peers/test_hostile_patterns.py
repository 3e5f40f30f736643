"""Directory patterns from a hostile client (issue 7), sent by a real
smbclient: a pattern that makes a backtracking matcher take exponential
time, and a 30000-character pattern that overflowed a recursive matcher's
stack and took the whole server down. Each must be answered promptly, and
the server must keep serving another client afterwards."""

from __future__ import annotations

import subprocess
import time

from conftest import TARGET
from smbpeer import SmbServer
from tap import Tap
from test_smbclient import ls_entries, ok

QUERY_DIRECTORY = 0x000E
STATUS_OBJECT_NAME_INVALID = 0xC0000033

LONG = "a" * 60
# Well under a second with a linear matcher; the backtracking one took minutes.
PROMPT = 20.0


def run(server: SmbServer, commands: str, timeout: float = 120) -> tuple[str, float]:
    cmd = ["smbclient", f"//{server.host}/{server.share}", "-p", str(server.port), "-U", server.creds,
           "-m", "SMB3_11", "-c", commands]
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return r.stdout + r.stderr, time.monotonic() - start


def still_serving(server: SmbServer, d: str) -> None:
    """A new connection lists the directory and finds the file."""
    out = ok(subprocess.run(
        ["smbclient", f"//{server.host}/{server.share}", "-p", str(server.port), "-U", server.creds,
         "-m", "SMB3_11", "-c", f"cd {d}; ls"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL))
    assert LONG in ls_entries(out), out
    assert server.alive(), server.log_tail()


def make_dir(server: SmbServer, d: str) -> None:
    (server.share_path / d).mkdir()
    (server.share_path / d / LONG).write_bytes(b"x")


def test_backtracking_pattern_is_answered_promptly(server, remote_dir):
    make_dir(server, remote_dir)
    out, took = run(server, f"cd {remote_dir}; ls *a*a*a*a*a*a*a*a*a*b")
    assert took < PROMPT, f"took {took:.1f} s:\n{out}"
    assert "NT_STATUS_NO_SUCH_FILE" in out, out
    # The same shape that does match still finds the file.
    out, took = run(server, f"cd {remote_dir}; ls *a*a*a*a*a*a*a*a*a*a")
    assert took < PROMPT, f"took {took:.1f} s:\n{out}"
    assert LONG in ls_entries(out), out
    still_serving(server, remote_dir)


def test_30000_star_pattern_is_refused_and_server_survives(server, remote_dir):
    make_dir(server, remote_dir)
    with Tap(server.host, server.port) as tap:
        via_tap = SmbServer(**{**server.__dict__, "port": tap.port})
        out, took = run(via_tap, f"cd {remote_dir}; ls {'*' * 30000}")
    assert took < PROMPT, f"took {took:.1f} s:\n{out[-2000:]}"
    assert server.alive(), f"server died:\n{server.log_tail()}"
    # smbclient reports any failed listing as NT_STATUS_NO_SUCH_FILE: look at
    # what the server answered on the wire.
    answers = [f.status for f in tap.frames if not f.to_server and f.command == QUERY_DIRECTORY]
    assert answers, f"no QUERY_DIRECTORY response seen:\n{out[-2000:]}"
    if TARGET == "ours":
        # A pattern longer than a name component (255 UTF-16 units) is not a
        # valid component: MS-FSA 2.1.5.6.3 says STATUS_OBJECT_NAME_INVALID.
        assert answers == [STATUS_OBJECT_NAME_INVALID], [hex(a) for a in answers]
    # The longest valid pattern of stars is matched, and finds the file.
    out, took = run(server, f"cd {remote_dir}; ls {'*' * 255}")
    assert took < PROMPT, f"took {took:.1f} s:\n{out[-2000:]}"
    assert LONG in ls_entries(out), out[-2000:]
    still_serving(server, remote_dir)
