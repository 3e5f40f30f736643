"""Durable handles with a real client (smbprotocol's low-level API): a file
opened with a durable v2 request (DH2Q, batch oplock) survives a cut TCP
connection; a new connection (same ClientGUID) sets up a session naming the
old one as PreviousSessionId, reconnects the handle with DH2C and goes on
writing through the same FileId. The data is checked on disk."""

from __future__ import annotations

import os
import uuid

import pytest
import smbprotocol.session as smb_session
from smbprotocol.connection import Connection, Dialects
from smbprotocol.create_contexts import (
    CreateContextName,
    SMB2CreateContextRequest,
    SMB2CreateDurableHandleReconnectV2,
    SMB2CreateDurableHandleRequestV2,
)
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (
    CreateDisposition,
    CreateOptions,
    FilePipePrinterAccessMask,
    ImpersonationLevel,
    Open,
    RequestedOplockLevel,
    ShareAccess,
)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect


def context(structure) -> SMB2CreateContextRequest:
    c = SMB2CreateContextRequest()
    c["buffer_name"] = structure.NAME
    c["buffer_data"] = structure
    return c


def connect(server, guid, previous_session_id=0):
    """A connection with ClientGUID `guid`, a session (PreviousSessionId
    set when given) and the share connected."""
    conn = Connection(guid, server.host, server.port, require_signing=True)
    conn.connect(Dialects.SMB_3_1_1, timeout=30)
    original = smb_session.SMB2SessionSetupRequest

    class WithPrevious(original):
        def __init__(self):
            super().__init__()
            self["previous_session_id"] = previous_session_id

    # smbprotocol has no knob for PreviousSessionId: its session setup
    # request is built from this module-level name.
    smb_session.SMB2SessionSetupRequest = WithPrevious
    try:
        session = Session(conn, server.user, server.password)
        session.connect()
    finally:
        smb_session.SMB2SessionSetupRequest = original
    tree = TreeConnect(session, rf"\\{server.host}\{server.share}")
    tree.connect()
    return conn, session, tree


def create(tree, name, contexts, disposition=CreateDisposition.FILE_OPEN_IF):
    f = Open(tree, name)
    resp = f.create(
        ImpersonationLevel.Impersonation,
        FilePipePrinterAccessMask.GENERIC_READ | FilePipePrinterAccessMask.GENERIC_WRITE,
        0,
        ShareAccess.FILE_SHARE_READ,
        disposition,
        CreateOptions.FILE_NON_DIRECTORY_FILE,
        contexts,
        oplock_level=RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH,
    )
    return f, resp or []


def cut(conn):
    """Drops the TCP connection: no CLOSE, no LOGOFF (close=False), as a
    client that lost its network would."""
    conn.disconnect(close=False)


def test_durable_v2_survives_a_cut_connection(server, remote_dir):
    name = rf"{remote_dir}\durable.bin"
    guid = uuid.uuid4()
    create_guid = uuid.uuid4()

    conn, session, tree = connect(server, guid)
    d = Open(tree, remote_dir)
    d.create(ImpersonationLevel.Impersonation, FilePipePrinterAccessMask.GENERIC_ALL, 0,
             ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE, CreateDisposition.FILE_CREATE,
             CreateOptions.FILE_DIRECTORY_FILE)
    d.close()
    dh2q = SMB2CreateDurableHandleRequestV2()
    dh2q["timeout"] = 30000
    dh2q["create_guid"] = create_guid
    f, ctxs = create(tree, name, [context(dh2q)])
    assert f.oplock_level == RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH
    granted = [c for c in ctxs if getattr(c, "NAME", None) == CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2
               or (hasattr(c, "fields") and "timeout" in c.fields)]
    assert granted, f"no durable v2 response context in {ctxs!r}"
    assert granted[0]["timeout"].get_value() == 30000
    file_id = f.file_id
    first = os.urandom(200_000)
    f.write(first, 0)
    old_session = session.session_id
    cut(conn)

    # The handle is kept: another client cannot open the file for writing
    # (its share mode allows reading only) until the owner comes back.
    conn2, session2, tree2 = connect(server, guid, previous_session_id=old_session)
    dh2c = SMB2CreateDurableHandleReconnectV2()
    dh2c["file_id"] = file_id
    dh2c["create_guid"] = uuid.uuid4()
    with pytest.raises(SMBResponseException):
        create(tree2, name, [context(dh2c)], CreateDisposition.FILE_OPEN)
    dh2c["create_guid"] = create_guid
    g, _ = create(tree2, name, [context(dh2c)], CreateDisposition.FILE_OPEN)
    # The persistent half names the open; ours keeps the volatile half too
    # (Samba hands out a new one).
    assert g.file_id[:8] == file_id[:8], "reconnected with the same persistent FileId"
    if server.target == "ours":
        assert g.file_id == file_id
    assert g.oplock_level == RequestedOplockLevel.SMB2_OPLOCK_LEVEL_BATCH
    second = os.urandom(100_000)
    g.write(second, len(first))
    assert g.read(0, len(first) + len(second)) == first + second
    g.close()
    assert (server.share_path / remote_dir / "durable.bin").read_bytes() == first + second
    tree2.disconnect()
    session2.disconnect()
    conn2.disconnect()
