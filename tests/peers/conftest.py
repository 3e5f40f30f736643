"""Fixtures for the peer tests: a real SMB server on an ephemeral loopback
port with a temporary share and user, driven by real clients.

SMB_TARGET=ours (default) runs target/release/smbdirect (or $SMBDIRECT_BIN);
SMB_TARGET=samba runs Samba's smbd through ci/samba.sh.

A test that cannot run because a tool is missing fails; a skipped test turns
the whole run into a failure (set SMB_ALLOW_SKIP=1 to allow skips locally).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest

import smbpeer
from smbpeer import PeerError, SmbServer

TARGET = os.environ.get("SMB_TARGET", "ours")

# Our --config options have their Samba equivalents in smb.conf; these tests
# start servers of their own and only make sense for our server.
collect_ignore = [] if TARGET == "ours" else ["test_config.py", "test_caps.py", "test_proxy_channel.py", "test_state_store.py", "test_users.py"]
BIG_SIZE = 64 * 1024 * 1024


def pytest_report_header(config):
    return f"SMB_TARGET={TARGET}"


def pytest_sessionstart(session):
    if TARGET not in smbpeer.TARGETS:
        raise pytest.UsageError(f"SMB_TARGET must be one of {smbpeer.TARGETS}, not {TARGET!r}")


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.environ.get("SMB_ALLOW_SKIP") == "1":
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and session.exitstatus == 0:
        reporter.write_line(f"{len(skipped)} test(s) skipped: a skip is a failure here "
                            f"(SMB_ALLOW_SKIP=1 to allow)", red=True)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def smb_server(tmp_path_factory) -> SmbServer:
    smbpeer.require_tool("smbclient")
    workdir = tmp_path_factory.mktemp(f"{TARGET}-server")
    # smbd changes to the test user's uid: let it reach the share
    os.chmod(workdir, 0o755)
    for parent in workdir.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o055)
    error = None
    try:
        server = smbpeer.start_server(TARGET, workdir)
    except PeerError as e:
        error = str(e)
    if error is not None:
        pytest.fail(error, pytrace=False)
    yield server
    alive = server.alive()
    server.stop()
    if not alive:
        pytest.fail(f"the {TARGET} server died during the tests; log tail:\n{server.log_tail()}",
                    pytrace=False)


@pytest.fixture
def server(smb_server: SmbServer) -> SmbServer:
    """The session server, checked to be alive before and after each test."""
    assert smb_server.alive(), f"server is not running; log tail:\n{smb_server.log_tail()}"
    yield smb_server
    assert smb_server.alive(), f"server died during the test; log tail:\n{smb_server.log_tail()}"


@pytest.fixture
def remote_dir(server: SmbServer):
    """A fresh, unique directory name for one test (not created)."""
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    path = server.share_path / name
    if path.exists() or path.is_symlink():
        subprocess.run(["rm", "-rf", "--", str(path)], check=False)


@pytest.fixture(scope="session")
def big_file(tmp_path_factory) -> tuple[Path, str]:
    """A 64 MiB file of random bytes and its sha256."""
    path = tmp_path_factory.mktemp("data") / "big.bin"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(BIG_SIZE // (1 << 20)):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    return path, h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
