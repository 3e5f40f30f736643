"""Resource caps against hostile clients, over real sockets, against our server
only (each test starts a server with small timeouts and caps from --config):
many connections that send one byte at a time, and a flood of unauthenticated
SESSION_SETUPs. While the caps bite, a well-behaved smbclient keeps being
served. No test here measures speed: the time bounds only say that a cap bit."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time

import pytest

from smbpeer import start_server

STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016
STATUS_REQUEST_NOT_ACCEPTED = 0xC00000D0
STATUS_INSUFFICIENT_RESOURCES = 0xC000009A
NEGOTIATE, SESSION_SETUP = 0, 1

# Closing a capped connection must happen within this (the configured
# timeouts are 2 to 4 s; the server looks at its timers every second).
CLOSE_BOUND = 15.0


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("caps")
    conf = work / "smb.conf"
    conf.write_text(
        "[global]\n"
        "  io timeout = 2\n"
        "  negotiate timeout = 3\n"
        "  session setup timeout = 4\n"
        "  max connections per client address = 100\n"
        "  max session setups in progress = 10\n"
        "  max session setups in progress per connection = 2\n"
        "  max change notify watches per session = 3\n"
    )
    srv = start_server("ours", work / "srv", user="tester", password="pw-tester-1",
                       extra_args=["--config", str(conf)])
    yield srv
    alive = srv.alive()
    srv.stop()
    assert alive, f"server died; log tail:\n{srv.log_tail()}"


def frame(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(3, "big") + payload


def header(command: int, mid: int, session_id: int = 0) -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 1, 0, command, 1, 0, 0, mid, 0, 0,
                       session_id, b"\x00" * 16)


def negotiate_msg() -> bytes:
    dialects = (0x0202, 0x0210)
    body = struct.pack("<HHHHI16sQ", 36, len(dialects), 1, 0, 0, b"\x11" * 16, 0)
    body += b"".join(struct.pack("<H", d) for d in dialects)
    return frame(header(NEGOTIATE, 0) + body)


def session_setup_first_leg(mid: int) -> bytes:
    # A bare NTLMSSP NEGOTIATE (MS-NLMP 2.2.1.1): the server answers with a
    # challenge and keeps the exchange's state.
    token = b"NTLMSSP\x00" + struct.pack("<II", 1, 0x62088215) + b"\x00" * 16
    body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 64 + 24, len(token), 0) + token
    return frame(header(SESSION_SETUP, mid) + body)


def recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except (ConnectionResetError, socket.timeout):
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def reply_status(s: socket.socket) -> int | None:
    hdr = recv_exact(s, 4)
    if hdr is None:
        return None
    msg = recv_exact(s, int.from_bytes(hdr[1:], "big"))
    return None if msg is None else struct.unpack_from("<I", msg, 8)[0]


def closed_by_server(s: socket.socket, within: float) -> bool:
    """True once the server closes `s` (EOF or reset) before `within` seconds."""
    s.settimeout(within)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def smbclient_roundtrip(srv, tmp_path, name: str) -> None:
    src = tmp_path / f"{name}.txt"
    src.write_text(f"payload of {name}\n")
    got = tmp_path / f"{name}.back"
    r = subprocess.run(["smbclient", f"//127.0.0.1/{srv.share}", "-p", str(srv.port), "-U", srv.creds,
                        "-c", f"put {src} {name}.txt; get {name}.txt {got}; ls"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert got.read_text() == f"payload of {name}\n", r.stdout + r.stderr


def test_one_byte_every_20_seconds_does_not_keep_a_slot(capped_server, tmp_path):
    srv = capped_server
    # 30 connections each send the first byte of a message, as a client
    # sending one byte every 20 s would, and then nothing for 20 s.
    trick = []
    for _ in range(30):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(negotiate_msg()[:1])
        trick.append(s)
    start = time.monotonic()
    # Meanwhile a well-behaved client logs on, writes and reads a file.
    smbclient_roundtrip(srv, tmp_path, "during_trickle")
    # Every trickling connection is closed before its second byte was due.
    for s in trick:
        left = max(0.1, CLOSE_BOUND - (time.monotonic() - start))
        assert closed_by_server(s, left), "a connection that sent one byte still holds its slot"
        s.close()
    assert time.monotonic() - start < 20
    assert "io timeout" in srv.log_path.read_text(errors="replace")
    smbclient_roundtrip(srv, tmp_path, "after_trickle")


def open_exchanges(srv, connections: int, legs: int) -> tuple[list[socket.socket], list[int | None]]:
    """`connections` new connections, each starting `legs` SESSION_SETUP exchanges."""
    socks, statuses = [], []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(negotiate_msg())
        assert reply_status(s) == 0
        for mid in range(1, legs + 1):
            s.sendall(session_setup_first_leg(mid))
            statuses.append(reply_status(s))
        socks.append(s)
    return socks, statuses


def test_flood_of_unauthenticated_session_setups(capped_server, tmp_path):
    srv = capped_server
    # Three exchanges on each of 4 connections: the third is over the
    # per-connection cap, and that refusal touches no one else.
    socks, statuses = open_exchanges(srv, 4, 3)
    per_connection = [STATUS_MORE_PROCESSING_REQUIRED] * 2 + [STATUS_INSUFFICIENT_RESOURCES]
    assert statuses == per_connection * 4, [hex(x or 0) for x in statuses]
    smbclient_roundtrip(srv, tmp_path, "during_flood")
    # 8 held; 2 more fill the server-wide cap of 10, and the next is refused
    # with Windows's "no more connections" status.
    more, statuses = open_exchanges(srv, 1, 2)
    assert statuses == [STATUS_MORE_PROCESSING_REQUIRED] * 2
    last, statuses = open_exchanges(srv, 1, 1)
    assert statuses == [STATUS_REQUEST_NOT_ACCEPTED]
    # The unfinished exchanges go with their connections (session setup
    # timeout); then a well-behaved client logs on again.
    start = time.monotonic()
    for s in socks + more + last:
        left = max(0.1, CLOSE_BOUND - (time.monotonic() - start))
        assert closed_by_server(s, left), "an unauthenticated connection outlived the session setup timeout"
        s.close()
    assert "session setup timeout" in srv.log_path.read_text(errors="replace")
    smbclient_roundtrip(srv, tmp_path, "after_flood")


def test_silent_connections_are_closed(capped_server, tmp_path):
    srv = capped_server
    silent = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(10)]
    smbclient_roundtrip(srv, tmp_path, "beside_silent")
    start = time.monotonic()
    for s in silent:
        left = max(0.1, CLOSE_BOUND - (time.monotonic() - start))
        assert closed_by_server(s, left), "a connection that never negotiated was kept"
        s.close()
    assert "negotiate timeout" in srv.log_path.read_text(errors="replace")


def test_change_notify_watches_per_session(capped_server):
    """One session watches 3 directories (its cap); a 4th CHANGE_NOTIFY is
    refused with INSUFFICIENT_RESOURCES while the 3 keep waiting, hold no
    thread of the server each, and one reports a change at once; closing a
    watched handle gives its watch back."""
    import uuid
    from smbprotocol.change_notify import CompletionFilter, FileSystemWatcher
    from smbprotocol.connection import Connection
    from smbprotocol.exceptions import SMBResponseException
    from smbprotocol.open import (CreateDisposition, CreateOptions, DirectoryAccessMask, FileAttributes,
                                  ImpersonationLevel, Open, ShareAccess)
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    srv = capped_server
    def threads() -> int:
        return len(os.listdir(f"/proc/{srv.main_pid}/task"))

    conn = Connection(uuid.uuid4(), srv.host, srv.port)
    conn.connect(timeout=10)
    try:
        session = Session(conn, srv.user, srv.password)
        session.connect()
        tree = TreeConnect(session, rf"\\{srv.host}\{srv.share}")
        tree.connect()
        opens = []
        for i in range(4):
            (srv.share_path / f"watched{i}").mkdir(exist_ok=True)
            o = Open(tree, f"watched{i}")
            o.create(ImpersonationLevel.Impersonation, DirectoryAccessMask.FILE_LIST_DIRECTORY,
                     FileAttributes.FILE_ATTRIBUTE_DIRECTORY, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
                     CreateDisposition.FILE_OPEN, CreateOptions.FILE_DIRECTORY_FILE)
            opens.append(o)
        watchers = []
        for o in opens[:3]:
            w = FileSystemWatcher(o)
            w.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
            watchers.append(w)
            time.sleep(0.2)
            if len(watchers) == 1:
                # The first starts the server's reactor thread (one for all).
                before = threads()
        time.sleep(0.3)
        assert not any(w.response_event.is_set() for w in watchers), "a CHANGE_NOTIFY ended with nothing to report"
        assert threads() <= before, f"{threads() - before} more server threads for 2 more waiting requests"
        refused = FileSystemWatcher(opens[3])
        refused.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
        with pytest.raises(SMBResponseException) as e:
            refused.wait()
        assert e.value.status == STATUS_INSUFFICIENT_RESOURCES
        # A change in the first directory is reported (no poll interval to wait out).
        (srv.share_path / "watched0" / "new.txt").write_text("x")
        got = watchers[0].wait()
        assert [r["file_name"].get_value() for r in got] == ["new.txt"]
        # Closing a watched handle gives its watch back to the session.
        opens[1].close()
        again = FileSystemWatcher(opens[3])
        again.start(CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME)
        time.sleep(0.5)
        assert not again.response_event.is_set(), "the CHANGE_NOTIFY after a CLOSE was refused"
        assert "max change notify watches per session" in srv.log_path.read_text(errors="replace")
    finally:
        conn.disconnect(True)
