"""Samba's smbclient against the server under test: share listing and a full
file round trip (mkdir, put/get of 64 MiB random data checked by sha256,
rename, rm, rmdir) over each dialect, signing and encryption setting."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import BIG_SIZE, sha256_file
from smbpeer import SmbServer
from tap import FLAG_SIGNED, PROTO_SMB2, PROTO_TRANSFORM, Tap

DIALECT_CODES = {"SMB2_02": 0x0202, "SMB2_10": 0x0210, "SMB3_00": 0x0300, "SMB3_11": 0x0311}
SIGN_ALGO_IDS = {"HMAC-SHA256": 0, "AES-128-CMAC": 1, "AES-128-GMAC": 2}


def profile(pid, dialect, protection, cipher=None, signing=None):
    """One smbclient setup: what it asks for and what the wire must show.
    protection: sign (every message after SESSION_SETUP signed), encrypt
    (every message after SESSION_SETUP in a transform header) or off (not
    encrypted). cipher/signing: the algorithm the server must pick in its
    NEGOTIATE response (3.1.1) and, for signing, the one smbclient reports."""
    args = ["-m", dialect, f"--client-protection={protection}"]
    if cipher:
        args.append(f"--option=client smb3 encryption algorithms={cipher}")
    if signing:
        args.append(f"--option=client smb3 signing algorithms={signing}")
    if signing is None and protection == "sign" and dialect in ("SMB2_02", "SMB2_10"):
        signing = "HMAC-SHA256"
    if signing is None and protection == "sign" and dialect in ("SMB3_00", "SMB3_02"):
        signing = "AES-128-CMAC"
    return pytest.param(dict(args=args, dialect=dialect, protection=protection, cipher=cipher,
                             signing=signing), id=pid)


PROFILES = [
    profile("SMB2_02-sign", "SMB2_02", "sign"),
    profile("SMB3_00-sign", "SMB3_00", "sign"),
    profile("SMB3_11-sign", "SMB3_11", "sign"),
    profile("SMB3_00-encrypt", "SMB3_00", "encrypt"),
    profile("SMB3_11-encrypt", "SMB3_11", "encrypt"),
    # neither signing nor encryption asked for by the client
    profile("SMB3_11-plain", "SMB3_11", "off"),
]
PROFILES += [profile(f"cipher-{c}", "SMB3_11", "encrypt", cipher=c)
             for c in ("AES-128-CCM", "AES-128-GCM", "AES-256-CCM", "AES-256-GCM")]
PROFILES += [
    profile("signing-AES-128-CMAC", "SMB3_11", "sign", signing="AES-128-CMAC"),
    profile("signing-AES-128-GMAC", "SMB3_11", "sign", signing="AES-128-GMAC"),
    profile("signing-HMAC-SHA256", "SMB2_10", "sign", signing="HMAC-SHA256"),
]

LS_RE = re.compile(r"^\s+(\S+)\s+([ADHSRN]*)\s+(\d+)\s+\w{3} \w{3}\s+\d+ \d\d:\d\d:\d\d \d{4}$")


def smbclient(server: SmbServer, args: list[str], commands: str, *, share: str | None = None,
              timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = ["smbclient", f"//{server.host}/{share or server.share}", "-p", str(server.port),
           "-U", server.creds, *args, "-c", commands]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# debug output (-d 5) that is no error: no Kerberos set up on loopback
BENIGN = ("Failed to start GENSEC client mech gse_krb5",)


def ok(r: subprocess.CompletedProcess) -> str:
    """smbclient exits 0 even when a -c command fails: also look for NT_STATUS
    and for options it ignored."""
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"smbclient exit code {r.returncode}:\n{out}"
    bad = [line for line in out.splitlines()
           if ("NT_STATUS_" in line or "Ignoring invalid value" in line)
           and not any(b in line for b in BENIGN)]
    assert not bad, "smbclient reported errors:\n" + "\n".join(bad) + "\n---\n" + out
    return out


def check_wire(tap: Tap, p: dict) -> None:
    """What the server did, as seen on the wire (first connection)."""
    neg = tap.negotiated()
    assert neg, "no NEGOTIATE response seen"
    assert neg["dialect"] == DIALECT_CODES[p["dialect"]], f"server picked dialect 0x{neg['dialect']:04x}"
    if p["dialect"] == "SMB3_11":
        if p["cipher"]:
            assert neg["cipher"] == p["cipher"], f"server picked cipher {neg['cipher']}"
        if p["signing"]:
            assert neg["signing"] == p["signing"], f"server picked signing algorithm {neg['signing']}"
    after = tap.after_session_setup()
    assert len(after) >= 4, f"only {len(after)} frames after SESSION_SETUP"
    if p["protection"] == "encrypt":
        plain = [f for f in after if f.proto != PROTO_TRANSFORM]
        assert not plain, f"{len(plain)} of {len(after)} messages after SESSION_SETUP not encrypted"
    else:
        assert all(f.proto == PROTO_SMB2 for f in after), "unexpected transform or unknown headers"
    if p["protection"] == "sign":
        unsigned = [f for f in after if not (f.flags or 0) & FLAG_SIGNED and not f.interim]
        assert not unsigned, (f"{len(unsigned)} of {len(after)} messages after SESSION_SETUP unsigned, "
                              f"first: command {unsigned[0].command} to_server={unsigned[0].to_server}")


def ls_entries(out: str) -> dict[str, tuple[str, int]]:
    entries = {}
    for line in out.splitlines():
        m = LS_RE.match(line)
        if m:
            entries[m.group(1)] = (m.group(2), int(m.group(3)))
    return entries


@pytest.mark.parametrize("dialect", ["SMB2_02", "SMB2_10", "SMB3_00", "SMB3_11"])
def test_list_shares(server, dialect):
    r = subprocess.run(["smbclient", "-L", f"//{server.host}", "-p", str(server.port), "-U", server.creds,
                        "-m", dialect], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    shares = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^\s+(\S+)\s+(Disk|IPC|Printer)\b", line)
        if m:
            shares[m.group(1)] = m.group(2)
    assert shares.get(server.share) == "Disk", f"share {server.share!r} not listed as Disk:\n{out}"


@pytest.mark.parametrize("p", PROFILES)
def test_file_round_trip(server, remote_dir, big_file, tmp_path, p):
    src, digest = big_file
    d = remote_dir
    args, dialect = p["args"], p["dialect"]

    # 1. mkdir + ls through a frame-recording relay, with enough debug output
    #    to see what smbclient believes was negotiated
    with Tap(server.host, server.port) as tap:
        via_tap = SmbServer(**{**server.__dict__, "port": tap.port})
        out = ok(smbclient(via_tap, [*args, "-d", "5"], f"mkdir {d}; ls"))
    assert f"negotiated dialect[{dialect}]" in out, f"dialect {dialect} not negotiated:\n{out[-3000:]}"
    if p["signing"] is not None:
        algos = set(re.findall(r"signed SMB2 message \(sign_algo_id=(\d+)\)", out))
        assert algos == {str(SIGN_ALGO_IDS[p["signing"]])}, f"smbclient signed with {algos}, expected {p['signing']}"
    assert ls_entries(out).get(d, ("", 0))[0].startswith("D"), f"{d} not listed as a directory"
    assert (server.share_path / d).is_dir()
    check_wire(tap, p)

    # 2. put 64 MiB; the bytes on the server's disk must be ours
    out = ok(smbclient(server, args, f'cd {d}; put "{src}" big.bin; ls'))
    assert ls_entries(out).get("big.bin", ("", -1))[1] == BIG_SIZE, out
    assert sha256_file(server.share_path / d / "big.bin") == digest

    # 3. get it back
    back = tmp_path / "back.bin"
    ok(smbclient(server, args, f'cd {d}; get big.bin "{back}"'))
    assert back.stat().st_size == BIG_SIZE
    assert sha256_file(back) == digest

    # 4. rename
    out = ok(smbclient(server, args, f"cd {d}; rename big.bin renamed.bin; ls"))
    entries = ls_entries(out)
    assert "renamed.bin" in entries and "big.bin" not in entries, out
    assert (server.share_path / d / "renamed.bin").is_file()
    assert not (server.share_path / d / "big.bin").exists()

    # 5. rm + rmdir
    out = ok(smbclient(server, args, f"cd {d}; rm renamed.bin; cd ..; rmdir {d}; ls"))
    assert d not in ls_entries(out), out
    assert not (server.share_path / d).exists()


def test_wrong_password_is_logon_failure(server):
    cmd = ["smbclient", f"//{server.host}/{server.share}", "-p", str(server.port),
           "-U", f"{server.user}%not-{server.password}", "-m", "SMB3_11", "-c", "ls"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr


def test_unknown_user_is_logon_failure(server):
    cmd = ["smbclient", f"//{server.host}/{server.share}", "-p", str(server.port),
           "-U", f"nosuchuser%{server.password}", "-m", "SMB3_11", "-c", "ls"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "NT_STATUS_LOGON_FAILURE" in r.stdout + r.stderr
