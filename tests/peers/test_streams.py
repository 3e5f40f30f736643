"""Named streams with a real client (smbprotocol's smbclient API): a
Zone.Identifier stream as Windows writes one on every download, listed
(FileStreamInformation), read back, renamed, deleted, and the file
system's size limit reported as an error; on disk each stream is the xattr
user.DosStream.NAME:$DATA holding the data and one NUL (Samba's
vfs_streams_xattr layout), checked with os.getxattr. Runs against Samba
too (SMB_TARGET=samba: its share has streams_xattr)."""

from __future__ import annotations

import os

import pytest
import smbclient
from smbclient._io import SMBFileTransaction, SMBRawIO, set_info
from smbprotocol.exceptions import SMBOSError, SMBResponseException
from smbprotocol.file_info import FileRenameInformation
from smbprotocol.header import NtStatus
from smbprotocol.open import FilePipePrinterAccessMask

ZONE = b"[ZoneTransfer]\r\nZoneId=3\r\nReferrerUrl=https://example.org/\r\n"
DISK_FULL = 0xC000007F
FILE_SYSTEM_LIMITATION = 0xC0000427


@pytest.fixture
def smb(server):
    smbclient.register_session(server.host, username=server.user, password=server.password,
                               port=server.port, connection_timeout=30)
    yield rf"\\{server.host}\{server.share}"
    smbclient.reset_connection_cache()


def xattr(path, stream):
    return os.getxattr(path, f"user.DosStream.{stream}:$DATA")


def streams_of(path, port):
    return sorted((s.name, s.size) for s in smbclient.liststreams(path, port=port))


def rename_stream(path, new, port):
    """FileRenameInformation on an open of the stream `path` to `new` (":name")."""
    with SMBRawIO(path, mode="r", share_access="rwd", desired_access=FilePipePrinterAccessMask.DELETE,
                  port=port) as raw:
        with SMBFileTransaction(raw) as t:
            info = FileRenameInformation()
            info["replace_if_exists"] = False
            info["file_name"] = new
            set_info(t, info)


def test_zone_identifier_stream(server, smb, remote_dir):
    port = server.port
    smbclient.mkdir(rf"{smb}\{remote_dir}", port=port)
    f = rf"{smb}\{remote_dir}\setup.exe"
    with smbclient.open_file(f, "wb", port=port) as fh:
        fh.write(b"MZ" + b"\0" * 1000)
    with smbclient.open_file(f + ":Zone.Identifier", "wb", port=port) as fh:
        fh.write(ZONE)

    local = server.share_path / remote_dir / "setup.exe"
    assert xattr(local, "Zone.Identifier") == ZONE + b"\0"
    assert local.stat().st_size == 1002, "the file's own data is untouched"
    assert streams_of(f, port) == [("::$DATA", 1002), (":Zone.Identifier:$DATA", len(ZONE))]
    # Stream names match ignoring case; the type may be given.
    with smbclient.open_file(f + ":zone.identifier:$DATA", "rb", port=port) as fh:
        assert fh.read() == ZONE
    with smbclient.open_file(f, "rb", port=port) as fh:
        assert fh.read() == b"MZ" + b"\0" * 1000
    # A write in the middle and past the end of a stream.
    with smbclient.open_file(f + ":Zone.Identifier", "r+b", port=port) as fh:
        fh.seek(len(ZONE) + 4)
        fh.write(b"tail")
    assert xattr(local, "Zone.Identifier") == ZONE + b"\0\0\0\0tail\0"

    rename_stream(f + ":Zone.Identifier", ":Renamed:$DATA", port)
    assert streams_of(f, port) == [("::$DATA", 1002), (":Renamed:$DATA", len(ZONE) + 8)]
    with pytest.raises(OSError):
        xattr(local, "Zone.Identifier")
    assert xattr(local, "Renamed").startswith(ZONE)

    smbclient.remove(f + ":Renamed", port=port)
    assert streams_of(f, port) == [("::$DATA", 1002)]
    assert not [x for x in os.listxattr(local) if x.startswith("user.DosStream.")]
    assert local.stat().st_size == 1002, "deleting a stream leaves the file"
    with pytest.raises(SMBOSError) as e:
        smbclient.open_file(f + ":Renamed", "rb", port=port)
    assert e.value.ntstatus == NtStatus.STATUS_OBJECT_NAME_NOT_FOUND


def test_stream_on_a_new_file_and_directory(server, smb, remote_dir):
    port = server.port
    smbclient.mkdir(rf"{smb}\{remote_dir}", port=port)
    # Creating a stream of a file that does not exist makes the file.
    f = rf"{smb}\{remote_dir}\new.txt"
    with smbclient.open_file(f + ":AFP_AfpInfo", "wb", port=port) as fh:
        fh.write(b"AFP\0" + b"\0" * 56)
    local = server.share_path / remote_dir / "new.txt"
    assert local.is_file() and local.stat().st_size == 0
    assert len(xattr(local, "AFP_AfpInfo")) == 61
    # A directory has no unnamed data stream, but may have named ones.
    d = rf"{smb}\{remote_dir}"
    assert streams_of(d, port) == []
    with smbclient.open_file(d + ":tag", "wb", port=port) as fh:
        fh.write(b"dir stream")
    assert streams_of(d, port) == [(":tag:$DATA", 10)]
    assert xattr(server.share_path / remote_dir, "tag") == b"dir stream\0"


def test_invalid_stream_names(server, smb, remote_dir):
    port = server.port
    smbclient.mkdir(rf"{smb}\{remote_dir}", port=port)
    f = rf"{smb}\{remote_dir}\names.txt"
    with smbclient.open_file(f, "wb", port=port) as fh:
        fh.write(b"x")
    for bad in [":s:$FOO", ":s:", ":a:b:$DATA", ":" + "x" * 256]:
        with pytest.raises(SMBOSError) as e:
            smbclient.open_file(f + bad, "wb", port=port)
        # An unknown stream type: Windows 2000 and Samba answer INVALID_PARAMETER.
        ok = {NtStatus.STATUS_OBJECT_NAME_INVALID} | ({NtStatus.STATUS_INVALID_PARAMETER} if "$FOO" in bad else set())
        if len(bad) > 255 and os.environ.get("SMB_TARGET") == "samba":
            # Samba finds no such stream (its xattr name is too long); NTFS
            # refuses a name of more than 255 characters as invalid.
            ok = {NtStatus.STATUS_OBJECT_NAME_NOT_FOUND}
        assert e.value.ntstatus in ok, bad
    assert streams_of(f, port) == [("::$DATA", 1)]


def fs_holds(directory, size):
    """Whether the file system under `directory` takes an xattr value of `size` bytes."""
    probe = directory / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"x" * size)
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


def test_stream_size_limit(server, smb, remote_dir):
    """A stream the file system cannot hold is refused, as Samba refuses
    it, and keeps what it had: past the largest xattr value (64 KiB) with
    FILE_SYSTEM_LIMITATION, past the room the file system has for a
    file's xattrs (about 4 KiB on ext4 without ea_inode) with DISK_FULL."""
    port = server.port
    smbclient.mkdir(rf"{smb}\{remote_dir}", port=port)
    f = rf"{smb}\{remote_dir}\big.bin"
    local = server.share_path / remote_dir / "big.bin"
    with smbclient.open_file(f + ":s", "wb", port=port) as fh:
        fh.write(b"small")
    with pytest.raises(SMBResponseException) as e:
        with smbclient.open_file(f + ":s", "r+b", port=port, buffering=0) as fh:
            fh.write(os.urandom(70_000))
    assert e.value.status == FILE_SYSTEM_LIMITATION
    mid = os.urandom(8_000)
    if fs_holds(server.share_path / remote_dir, len(mid) + 1):
        with smbclient.open_file(f + ":s", "r+b", port=port, buffering=0) as fh:
            fh.write(mid)
        assert xattr(local, "s") == mid + b"\0"
    else:
        with pytest.raises(SMBResponseException) as e:
            with smbclient.open_file(f + ":s", "r+b", port=port, buffering=0) as fh:
                fh.write(mid)
        assert e.value.status == DISK_FULL
        with smbclient.open_file(f + ":s", "rb", port=port) as fh:
            assert fh.read() == b"small"
        assert xattr(local, "s") == b"small\0"


def test_stream_never_leaves_the_share(server, smb, remote_dir, tmp_path):
    """A stream through a symlink that leads out of the share is refused,
    and nothing is written to the file outside."""
    port = server.port
    smbclient.mkdir(rf"{smb}\{remote_dir}", port=port)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret")
    os.symlink(outside, server.share_path / remote_dir / "link")
    for disposition in ("wb", "rb"):
        with pytest.raises(SMBOSError):
            with smbclient.open_file(rf"{smb}\{remote_dir}\link:s", disposition, port=port) as fh:
                fh.write(b"x") if disposition == "wb" else fh.read()
    assert not [x for x in os.listxattr(outside) if x.startswith("user.DosStream.")]
    assert outside.read_bytes() == b"secret"
