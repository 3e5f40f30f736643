"""Bad input from a hostile client. For each case the server must answer with
an error status or drop that connection (never succeed, never go silent), and
afterwards a second, healthy client connection must keep working.

The raw cases speak SMB2 over Direct TCP with plain sockets; the cases that
need an authenticated session use smbprotocol or impacket, with the offending
field set by hand."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import time
import uuid

import pytest

STATUS_SUCCESS = 0
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_MORE_PROCESSING_REQUIRED = 0xC0000016

NEGOTIATE, SESSION_SETUP, READ = 0x0000, 0x0001, 0x0008
ANSWER_TIMEOUT = 10.0


# --- raw SMB2 over Direct TCP -------------------------------------------------

def frame(payload: bytes, length: int | None = None) -> bytes:
    """Direct TCP transport header (a zero byte, 24-bit big-endian length)."""
    n = len(payload) if length is None else length
    return b"\x00" + n.to_bytes(3, "big") + payload


def smb2_header(command: int, message_id: int = 0, *, credit_charge: int = 1, credit_request: int = 1,
                session_id: int = 0, tree_id: int = 0, protocol: bytes = b"\xfeSMB") -> bytes:
    return struct.pack("<4sHHIHHIIQIIQ16s", protocol, 64, credit_charge, 0, command, credit_request,
                       0, 0, message_id, 0, tree_id, session_id, b"\x00" * 16)


def negotiate_body(dialects=(0x0202, 0x0210, 0x0300), dialect_count: int | None = None) -> bytes:
    count = len(dialects) if dialect_count is None else dialect_count
    return struct.pack("<HHHHI16sQ", 36, count, 1, 0, 0x7F, uuid.uuid4().bytes, 0) + \
        b"".join(struct.pack("<H", d) for d in dialects)


def negotiate(dialects=(0x0202, 0x0210, 0x0300), **kw) -> bytes:
    return smb2_header(NEGOTIATE, 0, **kw) + negotiate_body(dialects)


def connect(server) -> socket.socket:
    s = socket.create_connection((server.host, server.port), timeout=ANSWER_TIMEOUT)
    s.settimeout(ANSWER_TIMEOUT)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_reply(s: socket.socket):
    """('closed', None) if the server dropped the connection, ('timeout', None)
    if it said nothing, else ('reply', (status, command, body))."""
    try:
        head = recv_exact(s, 4)
        if head is None:
            return "closed", None
        n = int.from_bytes(head[1:], "big")
        msg = recv_exact(s, n)
        if msg is None:
            return "closed", None
    except (ConnectionResetError, BrokenPipeError):
        return "closed", None
    except socket.timeout:
        return "timeout", None
    if len(msg) < 64 or msg[:4] != b"\xfeSMB":
        return "reply", (None, None, msg)
    status, command = struct.unpack_from("<IH", msg, 8)
    return "reply", (status, command, msg[64:])


def send(s: socket.socket, data: bytes) -> bool:
    """False if the server already closed the connection."""
    try:
        s.sendall(data)
        return True
    except (ConnectionResetError, BrokenPipeError):
        return False


def assert_rejected(s: socket.socket, what: str):
    kind, reply = read_reply(s)
    assert kind != "timeout", f"{what}: server neither answered nor dropped the connection in {ANSWER_TIMEOUT} s"
    if kind == "reply":
        status = reply[0]
        assert status not in (None, STATUS_SUCCESS), f"{what}: server answered success or garbage: {reply!r}"
    print(f"{what}: {'dropped the connection' if kind == 'closed' else f'status 0x{reply[0]:08x}'}")
    return kind, reply


def assert_healthy(server):
    """A new client connection logs on and lists the share."""
    r = subprocess.run(["smbclient", f"//{server.host}/{server.share}", "-p", str(server.port),
                        "-U", server.creds, "-m", "SMB3_11", "-c", "ls"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "blocks available" in out, f"healthy client failed:\n{out}"
    assert server.alive(), f"server died; log tail:\n{server.log_tail()}"


# --- malformed frames before any session --------------------------------------

def test_sane_negotiate_is_answered(server):
    """Control case: the raw helpers produce a request the server accepts."""
    with connect(server) as s:
        assert send(s, frame(negotiate()))
        kind, reply = read_reply(s)
        assert kind == "reply", kind
        status, command, body = reply
        assert (status, command) == (STATUS_SUCCESS, NEGOTIATE)
        dialect = struct.unpack_from("<H", body, 4)[0]
        assert dialect in (0x0202, 0x0210, 0x0300)


def test_truncated_header(server):
    with connect(server) as s:
        send(s, frame(negotiate()[:20]))
        assert_rejected(s, "20-byte SMB2 header")
        assert_healthy(server)


def test_wrong_protocol_id(server):
    with connect(server) as s:
        send(s, frame(negotiate(protocol=b"\xfeSMX")))
        assert_rejected(s, "protocol id FE 'SMX'")
        assert_healthy(server)


def test_dialect_count_past_the_buffer(server):
    with connect(server) as s:
        msg = smb2_header(NEGOTIATE) + negotiate_body((0x0202,), dialect_count=2000)
        send(s, frame(msg))
        assert_rejected(s, "DialectCount 2000 with one dialect present")
        assert_healthy(server)


def test_security_buffer_past_the_buffer(server):
    with connect(server) as s:
        assert send(s, frame(negotiate((0x0210,))))
        kind, reply = read_reply(s)
        assert kind == "reply" and reply[0] == STATUS_SUCCESS, (kind, reply)
        # SESSION_SETUP: offset 88 (right after the body), length 4096, 16 bytes present
        body = struct.pack("<HBBIIHHQ", 25, 0, 1, 0, 0, 88, 4096, 0) + b"NTLMSSP\x00" + b"\x01" * 8
        send(s, frame(smb2_header(SESSION_SETUP, 1) + body))
        assert_rejected(s, "SecurityBufferLength 4096 past the end of a 104-byte message")
        assert_healthy(server)


def test_16_mib_length_prefix(server):
    """A Direct TCP length of 16 MiB - 1 filled with junk: the server must
    reject it (early, by length, or after reading it), not crash or stall."""
    n = (1 << 24) - 1
    with connect(server) as s:
        if send(s, frame(b"", length=n)):
            # while the server holds that connection, others must be served
            assert_healthy(server)
            junk = b"\x00" * (1 << 20)
            sent = 0
            while sent < n and send(s, junk[: min(len(junk), n - sent)]):
                sent += min(len(junk), n - sent)
        assert_rejected(s, "16 MiB frame of zero bytes")
    assert_healthy(server)


# --- bad requests inside an authenticated session ------------------------------

def test_credit_charge_zero_on_large_read(server, remote_dir):
    """MS-SMB2 3.3.5.2.5: with multi-credit, CreditCharge 0 and a READ of more
    than 64 KiB must fail with STATUS_INVALID_PARAMETER."""
    from impacket import smb3structs as s3
    from impacket.nmb import NetBIOSError, NetBIOSTimeout
    from impacket.smbconnection import SMBConnection

    size = 1 << 20
    data = os.urandom(size)
    conn = SMBConnection(server.host, server.host, sess_port=server.port, timeout=30,
                         preferredDialect=s3.SMB2_DIALECT_311)
    try:
        conn.login(server.user, server.password)
        conn.createDirectory(server.share, remote_dir)
        conn.putFile(server.share, f"{remote_dir}\\r.bin", _reader(data))
        smb3 = conn.getSMBServer()
        assert smb3._Connection["SupportsMultiCredit"], "server did not grant multi-credit (LARGE_MTU)"
        assert smb3._Connection["MaxReadSize"] >= size
        tid = conn.connectTree(server.share)
        fid = conn.openFile(tid, f"{remote_dir}\\r.bin", desiredAccess=s3.FILE_READ_DATA)

        def raw_read(charge):
            packet = smb3.SMB_PACKET()
            packet["Command"] = s3.SMB2_READ
            packet["TreeID"] = tid
            packet["CreditCharge"] = charge
            req = s3.SMB2Read()
            req["Padding"] = 0x50
            req["FileID"] = fid
            req["Length"] = size
            req["Offset"] = 0
            packet["Data"] = req
            return smb3.recvSMB(smb3.sendSMB(packet))

        # control: the right charge (16) reads the whole MiB
        ans = raw_read(size // 65536)
        assert ans["Status"] == STATUS_SUCCESS
        assert s3.SMB2Read_Response(ans["Data"])["Buffer"] == data

        try:
            ans = raw_read(0)
        except NetBIOSTimeout:
            pytest.fail("READ with CreditCharge 0: no answer and no disconnect within 30 s")
        except (NetBIOSError, ConnectionError, OSError):
            print("CreditCharge 0 READ of 1 MiB: dropped the connection")  # allowed
        else:
            assert ans["Status"] == STATUS_INVALID_PARAMETER, hex(ans["Status"])
            print(f"CreditCharge 0 READ of 1 MiB: status 0x{ans['Status']:08x}")
    finally:
        try:
            conn.close()
        except Exception:
            pass
    assert_healthy(server)


def _reader(data: bytes):
    pos = 0

    def read(n):
        nonlocal pos
        chunk = data[pos:pos + n]
        pos += len(chunk)
        return chunk
    return read


@pytest.fixture
def smbproto(server):
    import smbclient
    smbclient.register_session(server.host, username=server.user, password=server.password,
                               port=server.port, connection_timeout=30)
    yield smbclient
    smbclient.reset_connection_cache()


# new names, relative to the share root, that climb above it
@pytest.mark.parametrize("target", [r"..\{name}", r"{dir}\sub\..\..\..\{name}", r"\..\{name}",
                                    r"{dir}\..\..\{name}"])
def test_rename_outside_the_share(server, smbproto, remote_dir, target):
    from smbclient._io import SMBFileTransaction, SMBRawIO, set_info
    from smbprotocol.file_info import FileRenameInformation
    from smbprotocol.open import CreateOptions, FilePipePrinterAccessMask

    name = "escaped-" + uuid.uuid4().hex[:8]
    base = rf"\\{server.host}\{server.share}\{remote_dir}"
    smbproto.mkdir(base, port=server.port)
    smbproto.mkdir(base + r"\sub", port=server.port)
    with smbproto.open_file(base + r"\victim.txt", mode="w", port=server.port) as f:
        f.write("data")
    new_name = target.format(name=name, dir=remote_dir)
    raw = SMBRawIO(base + r"\victim.txt", mode="r", share_access="rwd",
                   desired_access=FilePipePrinterAccessMask.DELETE,
                   create_options=CreateOptions.FILE_OPEN_REPARSE_POINT, port=server.port)
    with raw:  # opening the victim must work; only the rename must fail
        with pytest.raises(OSError) as e:
            with SMBFileTransaction(raw) as transaction:
                info = FileRenameInformation()
                info["replace_if_exists"] = False
                info["file_name"] = new_name
                set_info(transaction, info)
    print(f"rename to {new_name}: {e.value}")
    root = server.share_path
    for outside in (root.parent / name, root.parent.parent / name):
        assert not outside.exists(), f"rename escaped the share: {outside} exists"
    assert (root / remote_dir / "victim.txt").is_file()
    assert_healthy(server)


def test_symlink_to_outside_is_not_followed(server, smbproto, remote_dir):
    d = server.share_path / remote_dir
    d.mkdir()
    os.chmod(d, 0o777)
    os.symlink("/etc", d / "etc_link")
    os.symlink("/etc/passwd", d / "passwd_link")
    (d / "plain.txt").write_text("inside\n")
    os.chmod(d / "plain.txt", 0o644)
    base = rf"\\{server.host}\{server.share}\{remote_dir}"
    # control: the folder and a regular file in it are reachable
    assert "plain.txt" in smbproto.listdir(base, port=server.port)
    with smbproto.open_file(base + r"\plain.txt", mode="r", port=server.port) as f:
        assert f.read() == "inside\n"
    with pytest.raises(OSError) as e:
        smbproto.listdir(base + r"\etc_link", port=server.port)
    print(f"listdir of a symlink to /etc: {e.value}")
    with pytest.raises(OSError) as e:
        with smbproto.open_file(base + r"\etc_link\passwd", mode="rb", port=server.port) as f:
            f.read()
    print(f"open through a symlink to /etc: {e.value}")
    with pytest.raises(OSError) as e:
        with smbproto.open_file(base + r"\passwd_link", mode="rb", port=server.port) as f:
            f.read()
    print(f"open of a symlink to /etc/passwd: {e.value}")
    assert_healthy(server)


def test_many_bad_connections_then_healthy(server):
    """A burst of garbage connections must not wear the server down."""
    deadline = time.monotonic() + 60
    for i in range(50):
        assert time.monotonic() < deadline
        with connect(server) as s:
            send(s, frame(os.urandom(64 + i)))
            assert_rejected(s, f"random 64+{i} bytes")
    assert_healthy(server)
