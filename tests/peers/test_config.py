"""Share and server options from an smb.conf-style --config, against our
server only (Samba's equivalents are its own smb.conf): read only, valid
users, guest ok with map to guest, per-share encryption, server signing =
mandatory and server max protocol. Each test starts its own server."""

import subprocess
from pathlib import Path

import pytest

from smbpeer import start_server
from tap import PROTO_TRANSFORM, PROTO_SMB2, FLAG_SIGNED, Tap


def smbclient(port: int, share: str, creds: str, commands: str, *args: str) -> subprocess.CompletedProcess:
    cmd = ["smbclient", f"//127.0.0.1/{share}", "-p", str(port), "-U", creds, *args, "-c", commands]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def shares_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("config-shares")
    for d in ("ro", "private", "guest", "enc"):
        (work / d).mkdir()
    (work / "ro" / "present.txt").write_text("read me\n")
    conf = work / "smb.conf"
    conf.write_text(
        "[global]\n"
        "  map to guest = bad user\n"
        f"[ro]\n  path = {work / 'ro'}\n  read only = yes\n"
        f"[private]\n  path = {work / 'private'}\n  valid users = tester\n"
        f"[guest]\n  path = {work / 'guest'}\n  guest ok = yes\n"
        f"[enc]\n  path = {work / 'enc'}\n  smb encrypt = required\n"
    )
    srv = start_server("ours", work / "srv", user="tester", password="pw-tester-1",
                       extra_args=["--config", str(conf), "--user", "other:pw-other-2"])
    yield srv, work
    srv.stop()


def test_read_only_share(shares_server, tmp_path):
    srv, work = shares_server
    src = tmp_path / "x.txt"
    src.write_text("x")
    r = smbclient(srv.port, "ro", "tester%pw-tester-1", f"get present.txt {tmp_path / 'got.txt'}; put {src} new.txt")
    assert (tmp_path / "got.txt").read_text() == "read me\n", out(r)
    assert "NT_STATUS_ACCESS_DENIED" in out(r), out(r)
    assert not (work / "ro" / "new.txt").exists()


def test_valid_users(shares_server):
    srv, _ = shares_server
    ok = smbclient(srv.port, "private", "tester%pw-tester-1", "ls")
    assert ok.returncode == 0 and "NT_STATUS" not in out(ok), out(ok)
    denied = smbclient(srv.port, "private", "other%pw-other-2", "ls")
    assert "NT_STATUS_ACCESS_DENIED" in out(denied), out(denied)


def test_guest_mapping(shares_server):
    srv, work = shares_server
    (work / "guest" / "g.txt").write_text("g")
    guest = smbclient(srv.port, "guest", "nobody%whatever", "ls")
    assert guest.returncode == 0 and "g.txt" in out(guest), out(guest)
    # A guest is kept out of shares that are not guest ok ...
    no = smbclient(srv.port, "ro", "nobody%whatever", "ls")
    assert "NT_STATUS_ACCESS_DENIED" in out(no), out(no)
    # An anonymous logon (-N) is allowed because a share is guest ok, and it
    # reaches only that share.
    anon = subprocess.run(["smbclient", "//127.0.0.1/guest", "-p", str(srv.port), "-N", "-c", "ls"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert anon.returncode == 0 and "g.txt" in out(anon), out(anon)
    anon_ro = subprocess.run(["smbclient", "//127.0.0.1/ro", "-p", str(srv.port), "-N", "-c", "ls"],
                             capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "NT_STATUS_ACCESS_DENIED" in out(anon_ro), out(anon_ro)
    # ... and a known user with a wrong password is not turned into a guest.
    bad = smbclient(srv.port, "guest", "tester%wrong", "ls")
    assert "NT_STATUS_LOGON_FAILURE" in out(bad), out(bad)


def test_encrypted_share(shares_server, tmp_path):
    srv, work = shares_server
    # A client that cannot encrypt (SMB 2.1) is refused at TREE_CONNECT.
    old = smbclient(srv.port, "enc", "tester%pw-tester-1", "ls", "-m", "SMB2_10")
    assert "NT_STATUS_ACCESS_DENIED" in out(old), out(old)
    # SMB 3.1.1 without asking for encryption: the share flag makes the client
    # encrypt everything on that tree, which the wire must show.
    src = tmp_path / "e.bin"
    src.write_bytes(b"secret" * 1000)
    with Tap("127.0.0.1", srv.port) as tap:
        r = smbclient(tap.port, "enc", "tester%pw-tester-1", f"put {src} e.bin; ls", "-m", "SMB3_11")
    assert r.returncode == 0 and "NT_STATUS" not in out(r), out(r)
    assert (work / "enc" / "e.bin").read_bytes() == src.read_bytes()
    after = tap.after_session_setup()
    transformed = [f for f in after if f.proto == PROTO_TRANSFORM]
    assert len(transformed) >= 4, f"only {len(transformed)} encrypted frames after SESSION_SETUP"


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    work = tmp_path_factory.mktemp("config-strict")
    conf = work / "smb.conf"
    conf.write_text("[global]\n  server signing = mandatory\n  server max protocol = SMB3_00\n")
    srv = start_server("ours", work / "srv", user="tester", password="pw-strict-3",
                       extra_args=["--config", str(conf)])
    yield srv
    srv.stop()


def test_mandatory_signing_and_max_protocol(strict_server):
    srv = strict_server
    with Tap("127.0.0.1", srv.port) as tap:
        r = smbclient(tap.port, "share", "tester%pw-strict-3", "ls", "-m", "SMB3_11")
    assert r.returncode == 0 and "NT_STATUS" not in out(r), out(r)
    neg = tap.negotiated()
    assert neg["dialect"] == 0x0300, f"dialect 0x{neg['dialect']:04x} above server max protocol"
    after = tap.after_session_setup()
    assert after and all(f.proto == PROTO_SMB2 for f in after)
    unsigned = [f for f in after if not (f.flags or 0) & FLAG_SIGNED and not f.interim]
    # Both directions: the client signs because the server said SIGNING_REQUIRED,
    # and every response of ours is signed too.
    assert not unsigned, f"{len(unsigned)} unsigned messages although the server requires signing"
    assert any(not f.to_server for f in after)
    # No share is guest ok here: anonymous logons are refused.
    anon = subprocess.run(["smbclient", "//127.0.0.1/share", "-p", str(srv.port), "-N", "-c", "ls"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert anon.returncode != 0 and "NT_STATUS_ACCESS_DENIED" in out(anon), out(anon)
