"""Several users on one server, with real clients (smbclient), against our
server only: the user file managed by `smbdirect user`, each session's file
operations running as its Unix account (owners checked on disk with
os.stat, permissions enforced by the kernel), read list, guest account,
force user, create mask, the file picked up without a restart, and
security descriptors set with impacket (each user denied the other's file
by its DACL; DACL grants still within the Unix permissions; owner changes).

Runs as root (CI does): it creates Unix accounts with useradd and removes
them afterwards."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import smbpeer
from smbpeer import start_server

# Unix accounts made for these tests (removed at the end).
ALICE, BOB, READER = "sdt_alice", "sdt_bob", "sdt_reader"
UNIX_USERS = (ALICE, BOB, READER)
PASSWORDS = {ALICE: "alice-Pw-1", BOB: "bob-Pw-2", READER: "reader-Pw-3"}
UID_ONLY, UID_ONLY_UID = "sdt_uidonly", 47011  # in the user file with --uid, no Unix account
BINARY = Path(os.environ.get("SMBDIRECT_BIN", smbpeer.REPO / "target/release/smbdirect"))


def smbclient(port: int, share: str, creds: str, commands: str) -> subprocess.CompletedProcess:
    cmd = ["smbclient", f"//127.0.0.1/{share}", "-p", str(port), "-U", creds, "-c", commands]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def out(r: subprocess.CompletedProcess) -> str:
    return r.stdout + r.stderr


def user_cmd(passdb: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), "user", *args, "--file", str(passdb)], input=stdin,
                          capture_output=True, text=True, timeout=60)


def uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def remove_unix_users() -> None:
    for u in UNIX_USERS:
        subprocess.run(["userdel", u], capture_output=True, check=False)
        subprocess.run(["groupdel", u], capture_output=True, check=False)


@pytest.fixture(scope="module")
def users_server(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("test_users needs root (to create Unix accounts and switch to them)", pytrace=False)
    smbpeer.require_tool("smbclient")
    smbpeer.require_tool("useradd")
    remove_unix_users()
    for u in UNIX_USERS:
        r = subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", u],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    work = tmp_path_factory.mktemp("users")
    # The accounts must reach the shares: pytest's temporary directories are 0700.
    for p in [work, *work.parents]:
        if p in (Path("/tmp"), Path("/")):
            break
        os.chmod(p, os.stat(p).st_mode | 0o055)
    shared, pub = work / "shared", work / "pub"
    shared.mkdir()
    pub.mkdir()
    # Like /tmp: everyone creates, each removes only their own.
    os.chmod(shared, 0o1777)
    os.chmod(pub, 0o1777)
    passdb = work / "private" / "smbpasswd"
    for u in (ALICE, BOB, READER):
        r = user_cmd(passdb, "add", u, "--password-stdin", stdin=PASSWORDS[u] + "\n")
        assert r.returncode == 0, out(r)
    r = user_cmd(passdb, "add", UID_ONLY, "--uid", str(UID_ONLY_UID), "--password-stdin", stdin="uid-Pw-4\n")
    assert r.returncode == 0, out(r)
    conf = work / "smb.conf"
    conf.write_text(
        "[global]\n"
        f"  smb passwd file = {passdb}\n"
        "  map to guest = bad user\n"
        f"[shared]\n  path = {shared}\n  read list = {READER}\n"
        f"[private]\n  path = {shared}\n  create mask = 0600\n"
        f"[forced]\n  path = {shared}\n  force user = {BOB}\n"
        f"[pub]\n  path = {pub}\n  guest ok = yes\n"
    )
    # (smbpeer also gives a clear-text --user: one with no Unix account.)
    srv = start_server("ours", work / "srv", user="sdt_cleartext", password="clear-Pw-5",
                       extra_args=["--config", str(conf)])
    try:
        yield srv, work, passdb
    finally:
        srv.stop()
        remove_unix_users()


def name() -> str:
    return "f" + uuid.uuid4().hex[:10]


def test_user_file_is_private_and_holds_no_clear_text(users_server):
    _, _, passdb = users_server
    assert os.stat(passdb).st_mode & 0o777 == 0o600
    text = passdb.read_text()
    for pw in PASSWORDS.values():
        assert pw not in text
    # Samba's smbpasswd layout: name:uid:LM:NT:[flags]:LCT-...:
    line = next(l for l in text.splitlines() if l.startswith(ALICE + ":"))
    fields = line.split(":")
    assert fields[1] == str(uid(ALICE)) and fields[2] == "X" * 32 and len(fields[3]) == 32, line
    listing = user_cmd(passdb, "list")
    assert listing.returncode == 0 and ALICE in listing.stdout and str(UID_ONLY_UID) in listing.stdout, out(listing)


def test_each_user_owns_the_files_it_creates(users_server, tmp_path):
    srv, work, _ = users_server
    src = tmp_path / "x.txt"
    src.write_text("x")
    for user in (ALICE, BOB):
        f, d = name(), name()
        r = smbclient(srv.port, "shared", f"{user}%{PASSWORDS[user]}", f"put {src} {f}; mkdir {d}")
        assert r.returncode == 0 and "NT_STATUS" not in out(r), out(r)
        for p in (work / "shared" / f, work / "shared" / d):
            st = os.stat(p)
            assert (st.st_uid, st.st_gid) == (uid(user), pwd.getpwnam(user).pw_gid), (p, st)
        # Samba's default masks: 0644 files, 0755 directories.
        assert os.stat(work / "shared" / f).st_mode & 0o777 == 0o644
        assert os.stat(work / "shared" / d).st_mode & 0o777 == 0o755
    # A user added with --uid and no Unix account: its uid.
    f = name()
    r = smbclient(srv.port, "shared", f"{UID_ONLY}%uid-Pw-4", f"put {src} {f}")
    assert r.returncode == 0, out(r)
    assert os.stat(work / "shared" / f).st_uid == UID_ONLY_UID


def test_users_are_denied_each_others_private_files(users_server, tmp_path):
    srv, work, _ = users_server
    src = tmp_path / "secret.txt"
    src.write_text("alice's secret\n")
    f = name()
    # create mask = 0600 on [private]: the file is Alice's alone.
    r = smbclient(srv.port, "private", f"{ALICE}%{PASSWORDS[ALICE]}", f"put {src} {f}")
    assert r.returncode == 0, out(r)
    st = os.stat(work / "shared" / f)
    assert st.st_uid == uid(ALICE) and st.st_mode & 0o777 == 0o600, st
    got = tmp_path / "got.txt"
    denied = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"get {f} {got}")
    assert "NT_STATUS_ACCESS_DENIED" in out(denied), out(denied)
    assert not got.exists()
    # ... nor may Bob overwrite or delete it (sticky directory).
    other = tmp_path / "other.txt"
    other.write_text("bob was here\n")
    denied = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"put {other} {f}")
    assert "NT_STATUS_ACCESS_DENIED" in out(denied), out(denied)
    denied = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"del {f}")
    assert "NT_STATUS_ACCESS_DENIED" in out(denied), out(denied)
    assert (work / "shared" / f).read_text() == "alice's secret\n"
    # Alice reads it.
    ok = smbclient(srv.port, "shared", f"{ALICE}%{PASSWORDS[ALICE]}", f"get {f} {got}")
    assert ok.returncode == 0 and got.read_text() == "alice's secret\n", out(ok)
    # A file of Alice's that others may read (0644) Bob reads but cannot change.
    g = name()
    r = smbclient(srv.port, "shared", f"{ALICE}%{PASSWORDS[ALICE]}", f"put {src} {g}")
    assert r.returncode == 0, out(r)
    ok = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"get {g} {tmp_path / 'g.txt'}")
    assert ok.returncode == 0 and (tmp_path / "g.txt").read_text() == "alice's secret\n", out(ok)
    denied = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"put {other} {g}")
    assert "NT_STATUS_ACCESS_DENIED" in out(denied), out(denied)
    assert (work / "shared" / g).read_text() == "alice's secret\n"


def test_read_list_user_cannot_write(users_server, tmp_path):
    srv, work, _ = users_server
    src = tmp_path / "r.txt"
    src.write_text("r")
    f = name()
    (work / "shared" / f).write_text("for everyone\n")
    os.chmod(work / "shared" / f, 0o666)
    got = tmp_path / "got.txt"
    ok = smbclient(srv.port, "shared", f"{READER}%{PASSWORDS[READER]}", f"get {f} {got}")
    assert ok.returncode == 0 and got.read_text() == "for everyone\n", out(ok)
    # Even a world-writable file and a world-writable directory stay unwritten.
    n = name()
    denied = smbclient(srv.port, "shared", f"{READER}%{PASSWORDS[READER]}", f"put {src} {n}; put {src} {f}; mkdir {name()}")
    assert out(denied).count("NT_STATUS_ACCESS_DENIED") >= 3, out(denied)
    assert not (work / "shared" / n).exists()
    assert (work / "shared" / f).read_text() == "for everyone\n"


def test_guest_maps_to_the_guest_account(users_server, tmp_path):
    srv, work, _ = users_server
    src = tmp_path / "g.txt"
    src.write_text("g")
    f = name()
    # An unknown user is a guest (map to guest = bad user) ...
    r = smbclient(srv.port, "pub", "nobody-we-know%whatever", f"put {src} {f}")
    assert r.returncode == 0, out(r)
    assert os.stat(work / "pub" / f).st_uid == uid("nobody")
    # ... and so is an anonymous logon.
    f2 = name()
    r = subprocess.run(["smbclient", "//127.0.0.1/pub", "-p", str(srv.port), "-N", "-c", f"put {src} {f2}"],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, out(r)
    assert os.stat(work / "pub" / f2).st_uid == uid("nobody")


def test_force_user_owns_the_files(users_server, tmp_path):
    srv, work, _ = users_server
    src = tmp_path / "f.txt"
    src.write_text("f")
    f = name()
    r = smbclient(srv.port, "forced", f"{ALICE}%{PASSWORDS[ALICE]}", f"put {src} {f}")
    assert r.returncode == 0, out(r)
    st = os.stat(work / "shared" / f)
    assert (st.st_uid, st.st_gid) == (uid(BOB), pwd.getpwnam(BOB).pw_gid), st


def test_clear_text_user_without_unix_account_is_served_as_the_server(users_server, tmp_path):
    srv, work, _ = users_server
    src = tmp_path / "c.txt"
    src.write_text("c")
    f = name()
    r = smbclient(srv.port, "shared", srv.creds, f"put {src} {f}")
    assert r.returncode == 0, out(r)
    assert os.stat(work / "shared" / f).st_uid == os.geteuid()


def test_user_file_changes_apply_without_restart(users_server):
    srv, _, passdb = users_server
    newbie = "sdt_newbie"
    try:
        bad = smbclient(srv.port, "shared", f"{newbie}%new-Pw-6", "ls")
        # (unknown users are guests here, and [shared] is not guest ok)
        assert "NT_STATUS_ACCESS_DENIED" in out(bad) or "NT_STATUS_LOGON_FAILURE" in out(bad), out(bad)
        r = user_cmd(passdb, "add", newbie, "--uid", "47012", stdin="new-Pw-6\n")
        assert r.returncode == 0, out(r)
        ok = smbclient(srv.port, "shared", f"{newbie}%new-Pw-6", "ls")
        assert ok.returncode == 0 and "NT_STATUS" not in out(ok), out(ok)
        r = user_cmd(passdb, "passwd", newbie, stdin="new-Pw-7\n")
        assert r.returncode == 0, out(r)
        old = smbclient(srv.port, "shared", f"{newbie}%new-Pw-6", "ls")
        assert "NT_STATUS_LOGON_FAILURE" in out(old), out(old)
        ok = smbclient(srv.port, "shared", f"{newbie}%new-Pw-7", "ls")
        assert ok.returncode == 0, out(ok)
    finally:
        user_cmd(passdb, "del", newbie)
    assert newbie not in passdb.read_text()


def test_import_of_samba_users(users_server):
    """`pdbedit -L -w` output (Samba's smbpasswd format) moves over as it is."""
    srv, work, passdb = users_server
    # NT hash of "secret"; uid 47013 has no Unix account.
    line = "sdt_samba:47013:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:878D8014606CDA29677A44EFA1353FC7:[U          ]:LCT-65A1B2C3:\n"
    dump = work / "pdbedit.txt"
    dump.write_text(line)
    try:
        r = user_cmd(passdb, "import", str(dump))
        assert r.returncode == 0 and "imported 1" in r.stdout, out(r)
        ok = smbclient(srv.port, "shared", "sdt_samba%secret", "ls")
        assert ok.returncode == 0 and "NT_STATUS" not in out(ok), out(ok)
    finally:
        user_cmd(passdb, "del", "sdt_samba")


def test_not_root_serves_as_itself(users_server, tmp_path):
    """A server that is not root says so at start and serves as itself."""
    _, _, _ = users_server
    home = tmp_path / "nonroot"
    home.mkdir()
    os.chmod(home, 0o777)
    for p in [tmp_path, *tmp_path.parents]:
        if p in (Path("/tmp"), Path("/")):
            break
        os.chmod(p, os.stat(p).st_mode | 0o055)
    cmd = ["setpriv", f"--reuid={uid(ALICE)}", f"--regid={pwd.getpwnam(ALICE).pw_gid}", "--clear-groups",
           str(BINARY), "serve", "--listen", "127.0.0.1:0", "--share", f"s={home / 'share'}",
           "--user", "x:y", "--state-dir", str(home / "state")]
    env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"))
    env.pop("XDG_RUNTIME_DIR", None)
    log = open(home / "log", "wb")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, env=env)
    log.close()
    try:
        seen = []
        assert p.stdout is not None
        for line in p.stdout:
            seen.append(line)
            if "not running as root" in line or "each session's Unix account" in line:
                break
        assert any(f"not running as root: every session's files are accessed as uid {uid(ALICE)}" in l
                   for l in seen), (seen, (home / "log").read_text(errors="replace")[-2000:])
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_writer_sets_times_of_a_file_it_does_not_own(users_server, tmp_path):
    """Unix lets only the owner set times; Windows (and Samba's `dos
    filetimes`) whoever may write the file."""
    srv, work, _ = users_server
    f = name()
    (work / "shared" / f).write_text("shared\n")
    os.chmod(work / "shared" / f, 0o666)
    r = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"utimes {f} -1 -1 2001:02:03-04:05:06 -1")
    assert r.returncode == 0 and "NT_STATUS" not in out(r), out(r)
    assert time.localtime(os.stat(work / "shared" / f).st_mtime)[:6] == (2001, 2, 3, 4, 5, 6)
    # A reader may not.
    (work / "shared" / f).chmod(0o644)
    r = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"utimes {f} -1 -1 2002:02:03-04:05:06 -1")
    assert "NT_STATUS_ACCESS_DENIED" in out(r), out(r)
    assert time.localtime(os.stat(work / "shared" / f).st_mtime)[0] == 2001


# --- Security descriptors (issue 13 parts 3 and 5): impacket sets them, smbclient reads as the other user.

READ_CONTROL, WRITE_DAC, WRITE_OWNER, FILE_ALL_ACCESS = 0x20000, 0x40000, 0x80000, 0x1F01FF
INFO_SECURITY, SECINFO_OWNER, SECINFO_GROUP, SECINFO_DACL = 3, 1, 2, 4


def unix_sid(kind: int, ident: int) -> bytes:
    """S-1-22-kind-id (Samba's Unix user/group SIDs, which we use too)."""
    return bytes([1, 2, 0, 0, 0, 0, 0, 22]) + kind.to_bytes(4, "little") + ident.to_bytes(4, "little")


EVERYONE = bytes([1, 1, 0, 0, 0, 0, 0, 1]) + (0).to_bytes(4, "little")


def sd_bytes(owner: bytes | None = None, group: bytes | None = None,
             allow: list[tuple[bytes, int]] | None = None) -> bytes:
    """A self-relative security descriptor with an allow-only DACL."""
    control = 0x8000 | (0x0004 | 0x1000 if allow is not None else 0)  # self-relative, DACL present + protected
    body, fields = b"", [0, 0, 0, 0]
    if owner:
        fields[0] = 20 + len(body)
        body += owner
    if group:
        fields[1] = 20 + len(body)
        body += group
    if allow is not None:
        aces = b"".join(bytes([0, 0]) + (8 + len(s)).to_bytes(2, "little") + m.to_bytes(4, "little") + s
                        for s, m in allow)
        fields[3] = 20 + len(body)
        body += bytes([2, 0]) + (8 + len(aces)).to_bytes(2, "little") + len(allow).to_bytes(2, "little") + b"\0\0" + aces
    return bytes([1, 0]) + control.to_bytes(2, "little") + b"".join(f.to_bytes(4, "little") for f in fields) + body


class SdClient:
    """One user's impacket session on a share, to read and set descriptors."""

    def __init__(self, port: int, share: str, user: str, password: str):
        from impacket.smbconnection import SMBConnection
        self.conn = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=port, timeout=30)
        self.conn.login(user, password)
        self.tid = self.conn.connectTree(share)

    def _open(self, path: str, access: int):
        return self.conn.openFile(self.tid, path, desiredAccess=access, shareMode=7, creationOption=0)

    def owner(self, path: str) -> bytes:
        fid = self._open(path, READ_CONTROL)
        try:
            sd = self.conn.getSMBServer().queryInfo(self.tid, fid, infoType=INFO_SECURITY, fileInfoClass=0,
                                                    additionalInformation=SECINFO_OWNER)
        finally:
            self.conn.closeFile(self.tid, fid)
        off = int.from_bytes(sd[4:8], "little")
        return bytes(sd[off:off + 8 + 4 * sd[off + 1]])

    def set(self, path: str, sd: bytes, info: int) -> None:
        fid = self._open(path, READ_CONTROL | WRITE_DAC | WRITE_OWNER)
        try:
            self.conn.getSMBServer().setInfo(self.tid, fid, inputBlob=sd, infoType=INFO_SECURITY, fileInfoClass=0,
                                             additionalInformation=info)
        finally:
            self.conn.closeFile(self.tid, fid)

    def close(self) -> None:
        self.conn.close()


def test_users_are_denied_each_others_files_by_acl(users_server, tmp_path):
    """A file whose mode lets everyone read it, with a DACL that allows only
    its owner: the other user is denied (the descriptor decides), and the
    owner still reads it. Each of Alice and Bob does it to the other."""
    smbpeer.require_tool("smbclient")
    srv, work, _ = users_server
    src = tmp_path / "acl.txt"
    src.write_text("mine alone\n")
    for owner, other in ((ALICE, BOB), (BOB, ALICE)):
        f = name()
        r = smbclient(srv.port, "shared", f"{owner}%{PASSWORDS[owner]}", f"put {src} {f}")
        assert r.returncode == 0, out(r)
        assert os.stat(work / "shared" / f).st_mode & 0o777 == 0o644
        got = tmp_path / f"{f}.got"
        ok = smbclient(srv.port, "shared", f"{other}%{PASSWORDS[other]}", f"get {f} {got}")
        assert ok.returncode == 0 and got.read_text() == "mine alone\n", out(ok)
        c = SdClient(srv.port, "shared", owner, PASSWORDS[owner])
        try:
            me = c.owner(f)
            assert me == unix_sid(1, uid(owner)), me.hex()
            c.set(f, sd_bytes(allow=[(me, FILE_ALL_ACCESS)]), SECINFO_DACL)
        finally:
            c.close()
        # The descriptor is kept where only root reaches it.
        assert os.getxattr(work / "shared" / f, "trusted.smbdirect.sd")
        got.unlink()
        denied = smbclient(srv.port, "shared", f"{other}%{PASSWORDS[other]}", f"get {f} {got}")
        assert "NT_STATUS_ACCESS_DENIED" in out(denied), out(denied)
        assert not got.exists()
        assert os.stat(work / "shared" / f).st_mode & 0o777 == 0o644, "the mode is left as it was"
        ok = smbclient(srv.port, "shared", f"{owner}%{PASSWORDS[owner]}", f"get {f} {got}")
        assert ok.returncode == 0 and got.read_text() == "mine alone\n", out(ok)


def test_acl_grants_stay_within_the_unix_permissions(users_server, tmp_path):
    """A DACL granting Everyone full control does not let another user write
    a 0644 file: the kernel checks the mode underneath (as Samba with
    acl_xattr). And a user may not give its file to someone else."""
    from impacket.smb3 import SessionError  # what the low-level setInfo raises
    srv, work, _ = users_server
    src = tmp_path / "w.txt"
    src.write_text("alice wrote\n")
    f = name()
    r = smbclient(srv.port, "shared", f"{ALICE}%{PASSWORDS[ALICE]}", f"put {src} {f}")
    assert r.returncode == 0, out(r)
    c = SdClient(srv.port, "shared", ALICE, PASSWORDS[ALICE])
    try:
        c.set(f, sd_bytes(allow=[(EVERYONE, FILE_ALL_ACCESS)]), SECINFO_DACL)
        with pytest.raises(SessionError) as e:
            c.set(f, sd_bytes(owner=unix_sid(1, uid(BOB))), SECINFO_OWNER)
        assert e.value.get_error_code() == 0xC000005A, hex(e.value.get_error_code())  # STATUS_INVALID_OWNER
        # Her own SIDs she may set; the Unix owner follows.
        c.set(f, sd_bytes(owner=unix_sid(1, uid(ALICE)), group=unix_sid(2, pwd.getpwnam(ALICE).pw_gid)),
              SECINFO_OWNER | SECINFO_GROUP)
    finally:
        c.close()
    st = os.stat(work / "shared" / f)
    assert (st.st_uid, st.st_gid) == (uid(ALICE), pwd.getpwnam(ALICE).pw_gid), st
    other = tmp_path / "b.txt"
    other.write_text("bob was here\n")
    denied = smbclient(srv.port, "shared", f"{BOB}%{PASSWORDS[BOB]}", f"put {other} {f}")
    assert "NT_STATUS_ACCESS_DENIED" in out(denied), out(denied)
    assert (work / "shared" / f).read_text() == "alice wrote\n"
