"""Worker processes (issue 10 parts 1 and 5), our server only: with
`max workers = 2`, two clients with different ClientGUIDs land on different
worker processes (seen in `smbdirect status --json` and in the processes);
both copy a large file; one worker is killed with SIGKILL in the middle of
both copies: the other client's copy completes and verifies by checksum, the
first client's connection is gone and it can reconnect and work, the
supervisor restarted the dead worker, and the connection counts stay right.
`smbdirect status` (tables and JSON) shows connected clients, their
sessions, tree connects and open files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from smbprotocol.connection import Connection
from smbprotocol.open import (CreateDisposition, CreateOptions, FileAttributes, FilePipePrinterAccessMask,
                              ImpersonationLevel, Open, ShareAccess)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from smbpeer import REPO, start_server

BIN = Path(os.environ.get("SMBDIRECT_BIN", REPO / "target/release/smbdirect"))
SIZE = 96 * 1024 * 1024
CHUNK = 1024 * 1024


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    work = tmp_path_factory.mktemp("workers")
    srv = start_server("ours", work / "srv", user="tester", password="pw-workers-1",
                       extra_args=["--max-workers", "2"])
    yield srv
    srv.stop()


def status(srv, json_out=True):
    cmd = [str(BIN), "status", "--state-dir", str(srv.workdir / "state")]
    if json_out:
        cmd.append("--json")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout) if json_out else r.stdout


class Client:
    """One SMB client (smbprotocol) with a ClientGUID of its own."""

    def __init__(self, srv, guid: uuid.UUID):
        self.guid = guid
        # smbprotocol puts uuid.bytes on the wire; status prints GUIDs as
        # Windows does (the first three fields little endian).
        self.shown = str(uuid.UUID(bytes_le=guid.bytes))
        self.conn = Connection(guid, srv.host, srv.port)
        self.conn.connect(timeout=30)
        self.session = Session(self.conn, srv.user, srv.password, require_encryption=False)
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\{srv.host}\{srv.share}")
        self.tree.connect()

    def open(self, name: str, create: bool = True) -> Open:
        f = Open(self.tree, name)
        f.create(ImpersonationLevel.Impersonation,
                 FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
                 FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 ShareAccess.FILE_SHARE_READ,
                 CreateDisposition.FILE_OVERWRITE_IF if create else CreateDisposition.FILE_OPEN,
                 CreateOptions.FILE_NON_DIRECTORY_FILE)
        return f

    def close(self):
        try:
            self.conn.disconnect(True)
        except Exception:
            pass


def read_back(f: Open, size: int) -> str:
    h = hashlib.sha256()
    off = 0
    while off < size:
        n = min(CHUNK, size - off)
        data = f.read(off, n)
        assert len(data) == n
        h.update(data)
        off += n
    return h.hexdigest()


def worker_of(st, c: Client) -> int:
    ws = {x["worker"] for x in st["channels"] if x["client_guid"] == c.shown}
    assert len(ws) == 1, f"client {c.shown} on workers {ws}: {json.dumps(st['channels'], indent=1)}"
    return ws.pop()


def worker_pid(st, w: int) -> int:
    return next(x["pid"] for x in st["workers"] if x["id"] == w)


def test_status_shows_a_connected_client(two_workers):
    srv = two_workers
    c = Client(srv, uuid.uuid4())
    try:
        f = c.open("status-probe.txt")
        f.write(b"probe", 0)
        st = status(srv)
        mine = [x for x in st["clients"] if x["client_guid"] == c.shown]
        assert mine and mine[0]["users"] == ["tester"] and mine[0]["address"] == "127.0.0.1", st["clients"]
        ch = [x for x in st["channels"] if x["client_guid"] == c.shown]
        assert ch and ch[0]["transport"] == "TCP" and ch[0]["dialect"] == "3.1.1", ch
        assert ch[0]["credits_granted"] > 0
        sessions = [s for s in st["sessions"] if s["id"] in ch[0]["sessions"]]
        assert sessions and sessions[0]["user"] == "tester" and sessions[0]["state"] == "valid", st["sessions"]
        assert any(t["share"] == srv.share for t in st["tree_connects"])
        opened = [o for o in st["open_files"] if o["path"] == "status-probe.txt"]
        assert opened and opened[0]["share_access"] == 1, st["open_files"]
        table = status(srv, json_out=False)
        for want in ("Workers", c.shown, "tester", "status-probe.txt", "R--"):
            assert want in table, table
        f.close()
    finally:
        c.close()
    # The connection is gone from the status once closed.
    deadline = time.monotonic() + 10
    while any(x["client_guid"] == c.shown for x in status(srv)["clients"]):
        assert time.monotonic() < deadline, "the closed client is still listed"
        time.sleep(0.1)


def test_worker_killed_mid_copy(two_workers):
    srv = two_workers
    data_a = os.urandom(SIZE)
    data_b = os.urandom(SIZE)
    a = Client(srv, uuid.uuid4())
    b = Client(srv, uuid.uuid4())
    st = status(srv)
    wa, wb = worker_of(st, a), worker_of(st, b)
    assert wa != wb, f"both clients on worker {wa}"
    pid_a, pid_b = worker_pid(st, wa), worker_pid(st, wb)
    assert pid_a != pid_b and pid_a and pid_b
    # The pids are real worker processes of this server.
    for pid in (pid_a, pid_b):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1] == b"worker", cmdline
    restarts_before = next(x["restarts"] for x in st["workers"] if x["id"] == wa)

    half = threading.Event()
    killed = threading.Event()
    result = {}

    def copy(name, c, data, key):
        try:
            f = c.open(f"{name}.bin")
            t0 = time.monotonic()
            for off in range(0, SIZE, CHUNK):
                if off == SIZE // 2:
                    result[key + "_half"] = True
                    half.set() if key == "b" else None
                    # Both copies are half done and their connections open
                    # when the worker dies.
                    killed.wait(timeout=60)
                f.write(data[off:off + CHUNK], off)
            result[key + "_secs"] = time.monotonic() - t0
            result[key + "_sum"] = read_back(f, SIZE)
            f.close()
            result[key] = "ok"
        except Exception as e:  # the killed worker's client fails here
            result[key] = f"error: {type(e).__name__}: {e}"

    ta = threading.Thread(target=copy, args=("copy-a", a, data_a, "a"))
    tb = threading.Thread(target=copy, args=("copy-b", b, data_b, "b"))
    ta.start()
    tb.start()
    assert half.wait(timeout=120), result
    deadline = time.monotonic() + 60
    while not result.get("a_half"):
        assert time.monotonic() < deadline and ta.is_alive(), result
        time.sleep(0.01)
    t_kill = time.monotonic()
    os.kill(pid_a, signal.SIGKILL)
    killed.set()
    tb.join(timeout=300)
    ta.join(timeout=120)
    assert result.get("b") == "ok", result
    assert result["b_sum"] == hashlib.sha256(data_b).hexdigest(), "client B's file read back differs"
    assert hashlib.sha256((srv.share_path / "copy-b.bin").read_bytes()).hexdigest() == hashlib.sha256(data_b).hexdigest()
    assert result.get("a", "").startswith("error"), f"client A's copy survived its worker: {result}"
    a.close()

    # The supervisor restarted the dead worker (new pid); B's worker is the same process.
    deadline = time.monotonic() + 20
    while True:
        st = status(srv)
        w = next(x for x in st["workers"] if x["id"] == wa)
        if w["pid"] and w["pid"] != pid_a:
            break
        assert time.monotonic() < deadline, f"worker {wa} not restarted: {st['workers']}"
        time.sleep(0.05)
    t_seen = time.monotonic() - t_kill
    # The restart delay as the supervisor logged it: worker ended -> started.
    ended = started = None
    for line in srv.log_path.read_text(errors="replace").splitlines():
        if f"worker={wa}" not in line:
            continue
        if "worker ended" in line and f"pid={pid_a}" in line:
            ended = line.split()[0]
        elif ended and "worker started" in line:
            started = line.split()[0]
            break
    assert ended and started, srv.log_tail()
    stamp = lambda t: datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    t_restart = stamp(started) - stamp(ended)
    assert t_restart < 5, f"restart took {t_restart:.1f} s"
    assert w["restarts"] == restarts_before + 1, st["workers"]
    assert worker_pid(st, wb) == pid_b
    assert srv.alive()

    # The first client reconnects (with its ClientGUID, as Windows does) and works.
    t0 = time.monotonic()
    a2 = Client(srv, a.guid)
    f = a2.open("copy-a.bin")
    for off in range(0, SIZE, CHUNK):
        f.write(data_a[off:off + CHUNK], off)
    assert read_back(f, SIZE) == hashlib.sha256(data_a).hexdigest()
    f.close()
    t_again = time.monotonic() - t0

    # The counts are right: exactly B's and A's new connection are counted.
    st = status(srv)
    ours = {a.shown, b.shown}
    listed = [c for c in st["clients"] if c["client_guid"] in ours]
    assert sorted(c["client_guid"] for c in listed) == sorted(ours), st["clients"]
    assert st["supervisor"]["connections"] == len(st["channels"]) == 2, st
    a2.close()
    b.close()
    print(f"\nworker-kill figures: {SIZE >> 20} MiB per client; client B's copy took {result['b_secs']:.2f} s "
          f"(including the pause at half for the kill) and verified; worker {wa} (pid {pid_a}) restarted as pid "
          f"{w['pid']} {t_restart * 1000:.0f} ms after its death was seen (supervisor log; status showed it {t_seen:.2f} s "
          f"after the kill, polled once B was done); client A reconnected and "
          f"copied+verified {SIZE >> 20} MiB in {t_again:.2f} s; client A's error: {result['a']}")


FRONT = Path(os.environ.get("SMBD_TCP_FRONT_BIN", REPO / "target/release/smbd-tcp-front"))


def test_proxy_channels_follow_their_workers(tmp_path_factory):
    """The proxy's side (with the stand-in proxy smbd-tcp-front, which offers
    Direct TCP connections as channels over the same control protocol): the
    supervisor passes the pool to both workers and routes each channel by
    ClientGUID; a worker's death closes only its channels, the proxy keeps
    running (same pid) and a new channel lands on the restarted worker, which
    got the pool again."""
    from smbpeer import free_port, wait_port
    from test_proxy_channel import front_pids
    assert FRONT.is_file(), f"{FRONT} is missing: cargo build --release -p smbdirect-rdma-proxy --bin smbd-tcp-front"
    work = tmp_path_factory.mktemp("workers-proxy")
    front_port = free_port()
    conf = work / "smb.conf"
    conf.write_text("[global]\n  smbdirect:rdma = yes\n"
                    f"  smbdirect:rdma proxy = {FRONT}\n"
                    f"  smbdirect:rdma listen = 127.0.0.1:{front_port}\n"
                    "  smbd max io size = 1M\n  smbdirect:rdma pool size = 4M\n  max workers = 2\n")
    srv = start_server("ours", work / "srv", user="tester", password="pw-workers-2",
                       extra_args=["--config", str(conf)])
    try:
        wait_port(front_port, timeout=15)
        proxies = front_pids(srv.main_pid)
        assert len(proxies) == 1, proxies
        via = type("Via", (), {"host": srv.host, "port": front_port, "user": srv.user,
                               "password": srv.password, "share": srv.share})
        a = Client(via, uuid.uuid4())
        b = Client(via, uuid.uuid4())
        st = status(srv)
        assert {c["transport"] for c in st["channels"]} == {"RDMA"}, st["channels"]
        wa, wb = worker_of(st, a), worker_of(st, b)
        assert wa != wb, f"both channels on worker {wa}"
        pid_a, pid_b = worker_pid(st, wa), worker_pid(st, wb)
        data = os.urandom(8 * CHUNK)
        fb = b.open("via-b.bin")
        for off in range(0, 4 * CHUNK, CHUNK):
            fb.write(data[off:off + CHUNK], off)
        os.kill(pid_a, signal.SIGKILL)
        for off in range(4 * CHUNK, len(data), CHUNK):
            fb.write(data[off:off + CHUNK], off)
        assert read_back(fb, len(data)) == hashlib.sha256(data).hexdigest()
        fb.close()
        with pytest.raises(Exception):
            a.open("via-a.bin").write(b"x", 0)
        a.close()
        assert front_pids(srv.main_pid) == proxies, "the proxy was replaced"
        deadline = time.monotonic() + 20
        while worker_pid(status(srv), wa) in (None, pid_a):
            assert time.monotonic() < deadline, status(srv)["workers"]
            time.sleep(0.05)
        c = Client(via, uuid.uuid4())
        st = status(srv)
        assert worker_of(st, c) == wa, "the new channel is not on the restarted worker"
        f = c.open("via-c.bin")
        for off in range(0, len(data), CHUNK):
            f.write(data[off:off + CHUNK], off)
        assert read_back(f, len(data)) == hashlib.sha256(data).hexdigest()
        f.close()
        assert worker_pid(st, wb) == pid_b
        assert st["supervisor"]["connections"] == 2, st["supervisor"]
        c.close()
        b.close()
        log = srv.log_path.read_text(errors="replace")
        assert log.count("rdma-proxy connected; shared pool mapped") >= 3, "each worker (and the restarted one) maps the pool"
        assert "slot_base=4" in log or "slot_base=2" in log, "the second worker has a slot range of its own"
    finally:
        srv.stop()
