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

# (id, smbclient arguments, dialect smbclient must report, signing algorithm id
#  smbclient must report: 0 HMAC-SHA256, 1 AES-128-CMAC, 2 AES-128-GMAC, None = not checked)
PROFILES = [
    ("SMB2_02-sign", ["-m", "SMB2_02", "--client-protection=sign"], "SMB2_02", 0),
    ("SMB3_00-sign", ["-m", "SMB3_00", "--client-protection=sign"], "SMB3_00", 1),
    ("SMB3_11-sign", ["-m", "SMB3_11", "--client-protection=sign"], "SMB3_11", None),
    ("SMB3_00-encrypt", ["-m", "SMB3_00", "--client-protection=encrypt"], "SMB3_00", None),
    ("SMB3_11-encrypt", ["-m", "SMB3_11", "--client-protection=encrypt"], "SMB3_11", None),
    # neither signing nor encryption asked for by the client
    ("SMB3_11-plain", ["-m", "SMB3_11", "--client-protection=off"], "SMB3_11", None),
]
PROFILES += [
    (f"cipher-{alg}", ["-m", "SMB3_11", "--client-protection=encrypt",
                       f"--option=client smb3 encryption algorithms={alg}"], "SMB3_11", None)
    for alg in ("AES-128-CCM", "AES-128-GCM", "AES-256-CCM", "AES-256-GCM")
]
PROFILES += [
    ("signing-AES-128-CMAC", ["-m", "SMB3_11", "--client-protection=sign",
                              "--option=client smb3 signing algorithms=AES-128-CMAC"], "SMB3_11", 1),
    ("signing-AES-128-GMAC", ["-m", "SMB3_11", "--client-protection=sign",
                              "--option=client smb3 signing algorithms=AES-128-GMAC"], "SMB3_11", 2),
    ("signing-HMAC-SHA256", ["-m", "SMB2_10", "--client-protection=sign",
                             "--option=client smb3 signing algorithms=HMAC-SHA256"], "SMB2_10", 0),
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


@pytest.mark.parametrize("args,dialect,sign_algo", [p[1:] for p in PROFILES], ids=[p[0] for p in PROFILES])
def test_file_round_trip(server, remote_dir, big_file, tmp_path, args, dialect, sign_algo):
    src, digest = big_file
    d = remote_dir

    # 1. mkdir + ls, with enough debug output to see the dialect and signing
    out = ok(smbclient(server, [*args, "-d", "5"], f"mkdir {d}; ls"))
    assert f"negotiated dialect[{dialect}]" in out, f"dialect {dialect} not negotiated:\n{out[-3000:]}"
    if sign_algo is not None:
        algos = set(re.findall(r"signed SMB2 message \(sign_algo_id=(\d+)\)", out))
        assert algos == {str(sign_algo)}, f"signing algorithm ids seen: {algos}, expected {sign_algo}"
    assert ls_entries(out).get(d, ("", 0))[0].startswith("D"), f"{d} not listed as a directory"
    assert (server.share_path / d).is_dir()

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
