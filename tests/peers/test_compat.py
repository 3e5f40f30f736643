"""Clients that Samba serves and we must serve too (issue 8): each case is one
place where a strict reading of MS-SMB2 would lock out a real client.

- The final SESSION_SETUP response is signed at every dialect for a session with
  a key (MS-SMB2 3.3.5.5.3): smbprotocol, capped at 2.0.2 or 2.1 with signing
  enabled but not required, verifies it and refuses the logon otherwise.
- A NEGOTIATE with an empty ENCRYPTION_CAPABILITIES list from a client without
  SMB2_GLOBAL_CAP_ENCRYPTION is accepted with no cipher; from a client that
  claims encryption, or with a count running past the context, it is refused.
- A TREE_CONNECT whose path is the bare share name (no "\\\\server\\") connects.
Every test runs against Samba too (SMB_TARGET=samba), which proves the
expectation is Samba's behaviour."""

from __future__ import annotations

import os
import socket
import struct
import uuid

import pytest
from smbprotocol.connection import Connection, Dialects, SecurityMode
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import CreateDisposition, CreateOptions, FilePipePrinterAccessMask, ImpersonationLevel, Open, ShareAccess
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

from tap import CMD_SESSION_SETUP, FLAG_SIGNED, PROTO_SMB2, Tap


def unc(server) -> str:
    return rf"\\{server.host}\{server.share}"


DIALECTS = [
    pytest.param(Dialects.SMB_2_0_2, id="2.0.2"),
    pytest.param(Dialects.SMB_2_1_0, id="2.1"),
    pytest.param(Dialects.SMB_3_0_0, id="3.0"),
    pytest.param(Dialects.SMB_3_0_2, id="3.0.2"),
    pytest.param(Dialects.SMB_3_1_1, id="3.1.1"),
]


@pytest.mark.parametrize("security_mode", ["enabled", "required"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_final_session_setup_signed_at_every_dialect(server, remote_dir, dialect, security_mode):
    """smbprotocol with require_signing checks the final SESSION_SETUP
    response's signature at every dialect; then a file round trip, signed.
    "enabled": the SESSION_SETUP request says SIGNING_ENABLED only (as the
    client of issue 8 does), so the server does not require signing on the
    session, yet the client still verifies the final response."""
    with Tap(server.host, server.port) as tap:
        conn = Connection(uuid.uuid4(), server.host, tap.port, require_signing=True)
        conn.connect(dialect=dialect, timeout=30)
        try:
            session = Session(conn, server.user, server.password, require_encryption=False)
            negotiated_mode = conn.client_security_mode
            if security_mode == "enabled":
                conn.client_security_mode = SecurityMode.SMB2_NEGOTIATE_SIGNING_ENABLED
            session.connect()  # raises when the final response is not signed
            # FSCTL_VALIDATE_NEGOTIATE_INFO (3.0, 3.0.2) repeats what NEGOTIATE said
            conn.client_security_mode = negotiated_mode
            assert conn.dialect == dialect
            assert session.signing_required and not session.encrypt_data
            tree = TreeConnect(session, unc(server))
            tree.connect()
            f = Open(tree, f"{remote_dir}.txt")
            f.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_READ
                     | FilePipePrinterAccessMask.GENERIC_WRITE | FilePipePrinterAccessMask.DELETE,
                     0, ShareAccess.FILE_SHARE_READ, CreateDisposition.FILE_OVERWRITE_IF,
                     CreateOptions.FILE_NON_DIRECTORY_FILE | CreateOptions.FILE_DELETE_ON_CLOSE)
            data = os.urandom(1000)
            f.write(data, 0)
            assert f.read(0, len(data)) == data
            f.close()
            tree.disconnect()
            session.disconnect()
        finally:
            conn.disconnect()
    finals = [f for f in tap.frames if not f.to_server and f.proto == PROTO_SMB2
              and f.command == CMD_SESSION_SETUP and f.status == 0]
    assert len(finals) == 1, f"{len(finals)} successful SESSION_SETUP responses"
    assert finals[0].flags & FLAG_SIGNED, "final SESSION_SETUP response not signed"
    assert not (server.share_path / f"{remote_dir}.txt").exists()


# ----- raw NEGOTIATE 3.1.1 -----

def negotiate_311(capabilities: int, cipher_ctx: bytes | None) -> bytes:
    """An SMB2 NEGOTIATE request for 3.1.1 (and 3.0.2, 2.1) with a preauth
    context and, if given, an ENCRYPTION_CAPABILITIES context with that data."""
    dialects = [0x0210, 0x0302, 0x0311]
    body = struct.pack("<HHHHI16sIHH", 36, len(dialects), 1, 0, capabilities, uuid.uuid4().bytes, 0, 0, 0)
    body += b"".join(struct.pack("<H", d) for d in dialects)
    while (64 + len(body)) % 8:
        body += b"\0"
    ctx_off = 64 + len(body)
    contexts = [(1, struct.pack("<HHH", 1, 32, 1) + os.urandom(32))]
    if cipher_ctx is not None:
        contexts.append((2, cipher_ctx))
    blob = b""
    for i, (ty, data) in enumerate(contexts):
        if i:
            blob += b"\0" * (-len(blob) % 8)
        blob += struct.pack("<HHI", ty, len(data), 0) + data
    body = body[:28] + struct.pack("<IH", ctx_off, len(contexts)) + body[34:] + blob
    hdr = struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, b"\0" * 16)
    msg = hdr + body
    return struct.pack(">I", len(msg)) + msg


def exchange(server, frame: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(frame)
        head = b""
        while len(head) < 4:
            chunk = s.recv(4 - len(head))
            assert chunk, "server closed the connection"
            head += chunk
        n = struct.unpack(">I", head)[0]
        msg = b""
        while len(msg) < n:
            chunk = s.recv(n - len(msg))
            assert chunk, "server closed the connection"
            msg += chunk
        return msg


def negotiated_cipher(resp: bytes) -> int | None:
    """The cipher of the response's ENCRYPTION_CAPABILITIES context, None without one."""
    count, off = struct.unpack_from("<H", resp, 64 + 6)[0], struct.unpack_from("<I", resp, 64 + 60)[0]
    for _ in range(count):
        ty, n = struct.unpack_from("<HH", resp, off)
        if ty == 2:
            assert struct.unpack_from("<H", resp, off + 8)[0] == 1, "one cipher in the response"
            return struct.unpack_from("<H", resp, off + 10)[0]
        off += 8 + n
        off += -off % 8
    return None


CAPS_NO_ENCRYPTION = 0x3F  # DFS, leasing, large MTU, multichannel, persistent handles, directory leasing
CAPS_ENCRYPTION = 0x7F


def test_empty_cipher_list_without_encryption_capability(server):
    resp = exchange(server, negotiate_311(CAPS_NO_ENCRYPTION, struct.pack("<H", 0)))
    status, = struct.unpack_from("<I", resp, 8)
    assert status == 0, f"NEGOTIATE status {status:#x}"
    assert struct.unpack_from("<H", resp, 64 + 4)[0] == 0x0311
    # no cipher: either no context (Samba) or cipher 0 (no common cipher, ours)
    assert negotiated_cipher(resp) in (None, 0)


@pytest.mark.parametrize("caps,ctx", [
    pytest.param(CAPS_ENCRYPTION, struct.pack("<H", 0), id="empty-list-claiming-encryption"),
    pytest.param(CAPS_ENCRYPTION, struct.pack("<HH", 2, 1), id="count-past-context"),
])
def test_bad_cipher_list_is_refused(server, caps, ctx):
    resp = exchange(server, negotiate_311(caps, ctx))
    status, = struct.unpack_from("<I", resp, 8)
    assert status == 0xC000000D, f"NEGOTIATE status {status:#x}, expected INVALID_PARAMETER"


def test_empty_cipher_list_client_can_work(server, remote_dir):
    """The whole client path with an empty cipher list: smbprotocol sends one
    only if told, so this drives NEGOTIATE by hand and then checks that a
    normal client still connects to the same server afterwards."""
    resp = exchange(server, negotiate_311(CAPS_NO_ENCRYPTION, struct.pack("<H", 0)))
    assert struct.unpack_from("<I", resp, 8)[0] == 0
    conn = Connection(uuid.uuid4(), server.host, server.port, require_signing=True)
    conn.connect(dialect=Dialects.SMB_3_1_1, timeout=30)
    try:
        session = Session(conn, server.user, server.password, require_encryption=False)
        session.connect()
        tree = TreeConnect(session, unc(server))
        tree.connect()
        tree.disconnect()
    finally:
        conn.disconnect()


# ----- TREE_CONNECT path forms -----

@pytest.mark.parametrize("form", ["unc", "bare"])
def test_tree_connect_bare_share_name(server, form):
    """MS-SMB2 2.2.9 asks for "\\\\server\\share"; Samba also takes the bare
    share name, and so do we."""
    conn = Connection(uuid.uuid4(), server.host, server.port, require_signing=True)
    conn.connect(dialect=Dialects.SMB_3_1_1, timeout=30)
    try:
        session = Session(conn, server.user, server.password, require_encryption=False)
        session.connect()
        path = unc(server) if form == "unc" else server.share
        tree = TreeConnect(session, path)
        tree.connect()
        assert tree.tree_connect_id
        f = Open(tree, "")
        f.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES, 0,
                 ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE, CreateDisposition.FILE_OPEN,
                 CreateOptions.FILE_DIRECTORY_FILE)
        f.close()
        tree.disconnect()
        # a server part without a share is still no share
        with pytest.raises(SMBResponseException) as e:
            TreeConnect(session, rf"\\{server.host}").connect()
        assert e.value.status == 0xC00000CC, f"status {e.value.status:#x}, expected BAD_NETWORK_NAME"
    finally:
        conn.disconnect()
