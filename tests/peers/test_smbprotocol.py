"""smbprotocol's high-level API (the `smbclient` Python package) against the
server under test: an encrypted session and a signed one, each doing mkdir,
write/read, listdir, stat, remove and rmdir."""

from __future__ import annotations

import errno
import os
import uuid

import pytest
import smbclient
from smbprotocol.connection import Dialects

from tap import FLAG_SIGNED, PROTO_SMB2, PROTO_TRANSFORM, Tap



@pytest.fixture
def smbproto_session(server):
    def register(port=None, **kw):
        return smbclient.register_session(server.host, username=server.user, password=server.password,
                                          port=port or server.port, connection_timeout=30, **kw)
    yield register
    smbclient.reset_connection_cache()


@pytest.mark.parametrize("mode", ["encrypt", "sign"])
def test_file_operations(server, smbproto_session, remote_dir, mode):
    # everything goes through a frame-recording relay to check the wire too
    with Tap(server.host, server.port) as tap:
        try:
            file_operations(server, smbproto_session, remote_dir, mode, tap.port)
        finally:
            smbclient.reset_connection_cache()
    after = tap.after_session_setup()
    assert len(after) >= 20, f"only {len(after)} frames after SESSION_SETUP"
    if mode == "encrypt":
        plain = [f for f in after if f.proto != PROTO_TRANSFORM]
        assert not plain, f"{len(plain)} of {len(after)} messages after SESSION_SETUP not encrypted"
    else:
        unsigned = [f for f in after
                    if f.proto != PROTO_SMB2 or (not (f.flags or 0) & FLAG_SIGNED and not f.interim)]
        assert not unsigned, f"{len(unsigned)} of {len(after)} messages after SESSION_SETUP not signed"


def file_operations(server, smbproto_session, remote_dir, mode, port):
    if mode == "encrypt":
        session = smbproto_session(port=port, encrypt=True, require_signing=True)
        assert session.encrypt_data, "session is not encrypted"
    else:
        session = smbproto_session(port=port, encrypt=False, require_signing=True)
        assert session.signing_required, "session is not signed"
        assert not session.encrypt_data
    assert session.connection.dialect == Dialects.SMB_3_1_1

    kw = {"port": port}
    base = rf"\\{server.host}\{server.share}\{remote_dir}"
    smbclient.mkdir(base, **kw)
    assert (server.share_path / remote_dir).is_dir()

    data = os.urandom(3 * 1024 * 1024 + 517)  # several READ/WRITE requests, odd tail
    path = base + r"\data.bin"
    with smbclient.open_file(path, mode="wb", **kw) as f:
        f.write(data)
    with smbclient.open_file(path, mode="rb", **kw) as f:
        assert f.read() == data
    on_disk = server.share_path / remote_dir / "data.bin"
    assert on_disk.read_bytes() == data

    with smbclient.open_file(base + r"\small.txt", mode="w", **kw) as f:
        f.write("hello\n")
    smbclient.mkdir(base + r"\sub", **kw)
    assert sorted(smbclient.listdir(base, **kw)) == ["data.bin", "small.txt", "sub"]

    st = smbclient.stat(path, **kw)
    assert st.st_size == len(data)
    assert not (st.st_mode & 0o040000)
    assert smbclient.stat(base + r"\sub", **kw).st_mode & 0o040000

    smbclient.remove(path, **kw)
    smbclient.remove(base + r"\small.txt", **kw)
    smbclient.rmdir(base + r"\sub", **kw)
    assert smbclient.listdir(base, **kw) == []
    with pytest.raises(OSError) as e:
        smbclient.stat(path, **kw)
    assert e.value.errno == errno.ENOENT
    smbclient.rmdir(base, **kw)
    assert not (server.share_path / remote_dir).exists()


def test_missing_file_is_not_found(server, smbproto_session):
    smbproto_session(encrypt=True)
    with pytest.raises(OSError) as e:
        smbclient.open_file(rf"\\{server.host}\{server.share}\no-such-{uuid.uuid4().hex}", mode="rb",
                            port=server.port)
    assert e.value.errno == errno.ENOENT
