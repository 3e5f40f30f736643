"""Clients that Samba serves and we must serve too (issue 8): each case is one
place where a strict reading of MS-SMB2 would lock out a real client.

- The final SESSION_SETUP response is signed at every dialect for a session with
  a key (MS-SMB2 3.3.5.5.3): smbprotocol, capped at 2.0.2 or 2.1 with signing
  enabled but not required, verifies it and refuses the logon otherwise.
Every test runs against Samba too (SMB_TARGET=samba), which proves the
expectation is Samba's behaviour."""

from __future__ import annotations

import os
import uuid

import pytest
from smbprotocol.connection import Connection, Dialects, SecurityMode
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
