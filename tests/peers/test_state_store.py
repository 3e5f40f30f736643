"""The shared state store in the real binary: share modes and byte-range
locks go through LMDB in the state directory, each worker binds its wake-up
socket there, and a blocking LOCK of one client is granted as soon as
another client's unlock frees the range. The two clients (smbprotocol, two
ClientGUIDs) land on two worker processes, so the conflicts and the wake-up
cross processes."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from smbprotocol.connection import Connection
from smbprotocol.exceptions import SMBResponseException
from smbprotocol.open import (CreateDisposition, CreateOptions, FilePipePrinterAccessMask, ImpersonationLevel,
                              LockFlags, Open, ShareAccess, SMB2LockElement)
from smbprotocol.session import Session
from smbprotocol.tree import TreeConnect

import smbpeer

SHARING_VIOLATION = 0xC0000043
LOCK_NOT_GRANTED = 0xC0000055
RW = FilePipePrinterAccessMask.FILE_READ_DATA | FilePipePrinterAccessMask.FILE_WRITE_DATA


@pytest.fixture
def lmdb_server(tmp_path):
    srv = smbpeer.start_ours(tmp_path / "srv", "storeuser", smbpeer.random_password(),
                             extra_args=["--max-workers", "2"])
    state = tmp_path / "srv" / "state"
    yield srv, state
    alive = srv.alive()
    srv.stop()
    assert alive, f"server died; log tail:\n{srv.log_tail()}"


def tree(srv) -> TreeConnect:
    conn = Connection(uuid.uuid4(), "127.0.0.1", srv.port)
    conn.connect(timeout=30)
    sess = Session(conn, srv.user, srv.password, require_encryption=False)
    sess.connect()
    t = TreeConnect(sess, rf"\\127.0.0.1\{smbpeer.SHARE}")
    t.connect()
    return t


def create(t: TreeConnect, access: int, share: int) -> Open:
    o = Open(t, "locked.bin")
    o.create(ImpersonationLevel.Impersonation, access, 0x80, share, CreateDisposition.FILE_OPEN_IF,
             CreateOptions.FILE_NON_DIRECTORY_FILE)
    return o


def elem(offset: int, length: int, flags: int) -> SMB2LockElement:
    e = SMB2LockElement()
    e["offset"] = offset
    e["length"] = length
    e["flags"] = flags
    return e


def test_lmdb_share_modes_and_blocking_lock(lmdb_server):
    srv, state = lmdb_server
    ta, tb = tree(srv), tree(srv)
    assert (state / "locking.lmdb" / "data.mdb").is_file(), "no LMDB environment in the state directory"
    for w in (0, 1):
        assert (state / f"worker-{w}.sock").exists(), f"no wake-up socket of worker {w} in the state directory"
    a = create(ta, RW, ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE)
    a.write(b"x" * 200, 0)
    # a does not share delete: b asking for DELETE is refused.
    with pytest.raises(SMBResponseException) as e:
        create(tb, RW | FilePipePrinterAccessMask.DELETE, 7)
    assert e.value.status == SHARING_VIOLATION
    b = create(tb, RW, 7)
    ex = LockFlags.SMB2_LOCKFLAG_EXCLUSIVE_LOCK
    a.lock([elem(0, 100, ex | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])
    with pytest.raises(SMBResponseException) as e:
        b.lock([elem(50, 10, ex | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])
    assert e.value.status == LOCK_NOT_GRANTED
    # A blocking lock waits until a's unlock, then is granted promptly.
    done: dict[str, object] = {}

    def wait_lock():
        try:
            b.lock([elem(50, 10, ex)])
            done["at"] = time.perf_counter()
        except Exception as exc:  # reported below
            done["error"] = exc

    th = threading.Thread(target=wait_lock, daemon=True)
    th.start()
    time.sleep(0.5)
    assert not done, f"blocking lock ended while the range was held: {done}"
    t0 = time.perf_counter()
    a.lock([elem(0, 100, LockFlags.SMB2_LOCKFLAG_UNLOCK)])
    th.join(10)
    assert "error" not in done, done.get("error")
    assert "at" in done, "blocking lock not granted within 10 s of the unlock"
    print(f"blocking lock granted {(done['at'] - t0) * 1000:.2f} ms after the unlock was sent")
    assert done["at"] - t0 < 1.0
    # Now b holds it.
    with pytest.raises(SMBResponseException) as e:
        a.lock([elem(55, 1, LockFlags.SMB2_LOCKFLAG_SHARED_LOCK | LockFlags.SMB2_LOCKFLAG_FAIL_IMMEDIATELY)])
    assert e.value.status == LOCK_NOT_GRANTED
    b.close()
    a.close()
