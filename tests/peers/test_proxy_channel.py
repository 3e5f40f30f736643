"""The server's side of the rdma-proxy protocol, end to end without verbs:
`smbdirect serve --rdma on` execs `smbd-tcp-front` (a stand-in proxy that
offers Direct TCP connections as channels over the same control socket,
sealed pool and SEQPACKET channel sockets as the real proxy), and smbclient
talks to the server through it. Then the proxy is killed: TCP service goes
on and the proxy is restarted. Our server only."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from smbpeer import REPO, free_port, processes_with_arg, start_server, wait_port

FRONT = Path(os.environ.get("SMBD_TCP_FRONT_BIN", REPO / "target/release/smbd-tcp-front"))


def smbclient(port: int, creds: str, commands: str) -> subprocess.CompletedProcess:
    cmd = ["smbclient", "//127.0.0.1/share", "-p", str(port), "-U", creds, "-c", commands]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


def front_pids(server_pid: int) -> list[int]:
    """The server's proxy processes (its workers take --control-fd too)."""
    return [p for p in processes_with_arg("--control-fd") if _parent(p) == server_pid and not _is_worker(p)]


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[1:2] == [b"worker"]
    except OSError:
        return False


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    assert FRONT.is_file(), f"{FRONT} is missing: cargo build --release -p smbdirect-rdma-proxy --bin smbd-tcp-front"
    work = tmp_path_factory.mktemp("proxied")
    front_port = free_port()
    conf = work / "smb.conf"
    conf.write_text(
        "[global]\n"
        "  smbdirect:rdma = yes\n"
        f"  smbdirect:rdma proxy = {FRONT}\n"
        f"  smbdirect:rdma listen = 127.0.0.1:{front_port}\n"
        "  smbd max io size = 1M\n"
        "  smbdirect:rdma pool size = 4M\n"
    )
    srv = start_server("ours", work / "srv", user="tester", password="pw-tester-1",
                       extra_args=["--config", str(conf)])
    wait_port(front_port, timeout=15)
    yield srv, front_port
    srv.stop()


def test_smbclient_through_a_proxy_channel(proxied, tmp_path):
    srv, front_port = proxied
    data = os.urandom(3 * 1024 * 1024 + 12345)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    got = tmp_path / "got.bin"
    r = smbclient(front_port, srv.creds, f"put {src} via-proxy.bin; ls; get via-proxy.bin {got}")
    assert r.returncode == 0, out(r)
    assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest(), out(r)
    assert (srv.share_path / "via-proxy.bin").read_bytes() == data
    log = srv.log_path.read_text(errors="replace")
    assert "rdma-proxy connected; shared pool mapped" in log, srv.log_tail()
    assert "SMB Direct connection accepted" in log, srv.log_tail()
    assert "SMB Direct: listening" in log, srv.log_tail()


def test_proxy_death_keeps_tcp_and_restarts_the_proxy(proxied, tmp_path):
    srv, front_port = proxied
    pids = front_pids(srv.main_pid)
    assert len(pids) == 1, f"proxy processes {pids}; log:\n{srv.log_tail()}"
    os.kill(pids[0], signal.SIGKILL)
    # TCP service goes on.
    r = smbclient(srv.port, srv.creds, "ls")
    assert r.returncode == 0, out(r)
    assert srv.alive()
    # The proxy comes back (backoff starts at 1 s) and serves channels again.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        new = front_pids(srv.main_pid)
        if new and new != pids:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the proxy was not restarted; log:\n{srv.log_tail()}")
    wait_port(front_port, timeout=10)
    src = tmp_path / "again.txt"
    src.write_text("again\n")
    r = smbclient(front_port, srv.creds, f"put {src} again.txt")
    assert r.returncode == 0, out(r)
    assert (srv.share_path / "again.txt").read_text() == "again\n"
    log = srv.log_path.read_text(errors="replace")
    assert "was killed by a signal" in log and "restarting in" in log, srv.log_tail()
