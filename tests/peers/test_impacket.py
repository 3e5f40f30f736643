"""impacket's SMBConnection against the server under test: listShares,
putFile/getFile round trip, listPath."""

from __future__ import annotations

import io
import os

import pytest
from impacket.smb3structs import SMB2_DIALECT_21, SMB2_DIALECT_30, SMB2_DIALECT_311
from impacket.smbconnection import SMBConnection, SessionError


def connect(server, dialect):
    conn = SMBConnection(server.host, server.host, sess_port=server.port, timeout=30,
                         preferredDialect=dialect)
    conn.login(server.user, server.password)
    return conn


@pytest.mark.parametrize("dialect", [SMB2_DIALECT_21, SMB2_DIALECT_30, SMB2_DIALECT_311],
                         ids=["SMB2_10", "SMB3_00", "SMB3_11"])
def test_shares_put_get_list(server, remote_dir, dialect):
    conn = connect(server, dialect)
    try:
        assert conn.getDialect() == dialect
        names = [s["shi1_netname"][:-1] for s in conn.listShares()]
        assert server.share in names, names

        conn.createDirectory(server.share, remote_dir)
        # impacket signs in pure Python (slow): keep the file small when signing
        size = 256 * 1024 + 13 if conn.isSigningRequired() else 4 * 1024 * 1024 + 13
        data = os.urandom(size)
        conn.putFile(server.share, f"{remote_dir}\\blob.bin", io.BytesIO(data).read)
        assert (server.share_path / remote_dir / "blob.bin").read_bytes() == data

        out = io.BytesIO()
        conn.getFile(server.share, f"{remote_dir}\\blob.bin", out.write)
        assert out.getvalue() == data

        listing = {f.get_longname(): f for f in conn.listPath(server.share, f"{remote_dir}\\*")}
        assert set(listing) == {".", "..", "blob.bin"}, set(listing)
        assert listing["blob.bin"].get_filesize() == size
        assert not listing["blob.bin"].is_directory()
        assert listing["."].is_directory()

        with pytest.raises(SessionError):
            conn.getFile(server.share, f"{remote_dir}\\missing.bin", io.BytesIO().write)

        conn.deleteFile(server.share, f"{remote_dir}\\blob.bin")
        conn.deleteDirectory(server.share, remote_dir)
        assert not (server.share_path / remote_dir).exists()
    finally:
        conn.close()


def test_wrong_password_is_logon_failure(server):
    conn = SMBConnection(server.host, server.host, sess_port=server.port, timeout=30,
                         preferredDialect=SMB2_DIALECT_311)
    try:
        with pytest.raises(SessionError) as e:
            conn.login(server.user, server.password + "x")
        assert e.value.getErrorCode() == 0xC000006D  # STATUS_LOGON_FAILURE
    finally:
        conn.close()
