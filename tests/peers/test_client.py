"""Our own SMB client (issue 12, bench/src/client) against the target server
(ours in CI; Samba with SMB_TARGET=samba) and against Samba's smbd in every
run, through `smbdirect-bench --check` (log on, three pipelined WRITEs, read
back and compare, FileStandardInformation, FSCTL_QUERY_NETWORK_INTERFACE_INFO,
bind more channels and READ the file opened on the first channel through
each), a short benchmark, and the faults the client must report clearly:
a server that never answers, one that grants no credits, and a server that
dies mid-transfer. (Too few credits for a large request, and SMB Direct send
credits withheld: bench/src/client/conn.rs unit tests and the rxe guest's
t-82-bench-credits.)"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import smbpeer
from smbpeer import REPO, SmbServer

BENCH = Path(os.environ.get("SMBDIRECT_BENCH_BIN", REPO / "target/release/smbdirect-bench"))


def bench(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    assert BENCH.is_file(), f"{BENCH} missing: cargo build --release -p smbdirect-bench"
    return subprocess.run([str(BENCH), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def open_to_smbd(path: Path) -> None:
    """smbd changes to the test user's uid: let it reach a share under `path`."""
    os.chmod(path, 0o755)
    for parent in path.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o055)


def check(server: SmbServer, *extra: str) -> dict:
    r = bench([server.unc, "-U", server.creds, "--port", str(server.port), "--check",
               "--size", "64k", "--timeout", "20", *extra])
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return json.loads(r.stdout)


def assert_checked(d: dict, channels: int) -> None:
    assert d["write_read_verified"] is True
    assert d["end_of_file"] == d["expected_size"] == 3 * 65536
    assert d["channels"] == channels
    assert d["channel_reads_verified"] == [True] * channels
    assert d["guest"] is False
    assert d["credits_granted"] > 1
    assert isinstance(d["interfaces"], list) and d["interfaces"], d["interfaces"]


CASES = [
    # (extra args, dialect, signed, encrypted, cipher)
    ([], "3.1.1", None, False, None),
    (["--sign"], "3.1.1", True, False, None),
    (["--encrypt"], "3.1.1", True, True, "Aes128Gcm"),
    (["--encrypt", "--cipher", "aes-256-gcm"], "3.1.1", True, True, "Aes256Gcm"),
    (["--encrypt", "--cipher", "aes-256-ccm", "--signing-alg", "cmac"], "3.1.1", True, True, "Aes256Ccm"),
    (["--sign", "--signing-alg", "cmac"], "3.1.1", True, False, None),
    (["--dialects", "3.0", "--sign"], "3.0", True, False, None),
    (["--dialects", "3.0.2", "--encrypt"], "3.0.2", True, True, "Aes128Ccm"),
]


@pytest.mark.parametrize("extra,dialect,signed,encrypted,cipher", CASES,
                         ids=["plain", "sign", "encrypt", "aes256gcm", "aes256ccm-cmac", "sign-cmac", "smb30-sign", "smb302-encrypt"])
def test_client_against_target_two_channels(server: SmbServer, extra, dialect, signed, encrypted, cipher):
    """NTLMv2 logon, signing or encryption as asked, write + read back, and a
    second TCP channel bound to the session reads the file opened on the first."""
    d = check(server, "--channels", "2", *extra)
    assert_checked(d, 2)
    assert d["dialect"] == dialect
    if signed is not None:
        assert d["signed"] is signed
    assert d["encrypted"] is encrypted
    if cipher:
        assert d["cipher"] == cipher
    if "cmac" in extra or dialect != "3.1.1":
        assert d["signing_algorithm"] == "AesCmac"


def test_client_wrong_password_is_a_logon_failure(server: SmbServer):
    r = bench([server.unc, "-U", f"{server.user}%not-{server.password}", "--port", str(server.port),
               "--check", "--timeout", "20"])
    assert r.returncode == 1
    assert "STATUS_LOGON_FAILURE" in r.stderr, r.stderr


def test_client_against_samba(tmp_path: Path):
    """The same client against Samba's smbd (whatever SMB_TARGET is): plain,
    signed with two channels, encrypted with three."""
    open_to_smbd(tmp_path)
    samba = smbpeer.start_server("samba", tmp_path / "samba")
    try:
        assert_checked(check(samba), 1)
        d = check(samba, "--sign", "--channels", "2")
        assert_checked(d, 2)
        assert d["signed"] is True and d["dialect"] == "3.1.1"
        d = check(samba, "--encrypt", "--channels", "3")
        assert_checked(d, 3)
        assert d["encrypted"] is True
    finally:
        samba.stop()


@pytest.mark.parametrize("op", ["read", "write", "mixed"])
def test_bench_json(server: SmbServer, op: str):
    """A short benchmark: bytes moved, rates and latency percentiles are sane."""
    r = bench([server.unc, "-U", server.creds, "--port", str(server.port), "--op", op,
               "--size", "256k", "--depth", "4", "--duration", "1", "--file-size", "16m",
               "--pattern", "rand", "--channels", "2", "--json", "--timeout", "20"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    res = out["result"]
    # the server is local: found by its listening port, its CPU is reported
    assert out["server_pid"] == server.main_pid
    assert res["server_cpu_s_per_gib"] is not None and res["server_cpu_s_per_gib"] > 0
    assert res["ops"] > 0 and res["bytes"] == res["ops"] * 262144
    assert res["mb_per_s"] > 0 and res["iops"] > 0
    assert 0 < res["lat_us_p50"] <= res["lat_us_p99"] <= res["lat_us_p999"] <= res["lat_us_max"]
    assert res["client_cpu_s"] > 0


def _fake_server(handler) -> tuple[int, threading.Event]:
    """A TCP listener on loopback; `handler(conn)` runs for each connection."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    done = threading.Event()

    def loop():
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            threading.Thread(target=handler, args=(c, done), daemon=True).start()
        srv.close()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1], done


def _recv_frame(c: socket.socket) -> bytes:
    hdr = b""
    while len(hdr) < 4:
        b = c.recv(4 - len(hdr))
        if not b:
            return b""
        hdr += b
    n = int.from_bytes(hdr[1:], "big")
    data = b""
    while len(data) < n:
        b = c.recv(n - len(data))
        if not b:
            break
        data += b
    return data


def test_server_that_never_answers_times_out(tmp_path: Path):
    def silent(c, done):
        _recv_frame(c)
        done.wait(60)
        c.close()

    port, done = _fake_server(silent)
    try:
        t0 = time.monotonic()
        r = bench(["//127.0.0.1/share", "-U", "u%p", "--port", str(port), "--check", "--timeout", "2"], timeout=30)
        took = time.monotonic() - t0
    finally:
        done.set()
    assert r.returncode == 1
    assert "NEGOTIATE: no answer from the server within 2s" in r.stderr, r.stderr
    assert took < 15


def test_credit_starvation_is_reported(tmp_path: Path):
    """A server that answers NEGOTIATE but grants no credit: the next request
    cannot be sent, and the client says so instead of hanging."""
    def stingy(c, done):
        req = _recv_frame(c)
        if len(req) < 64:
            c.close()
            return
        msg_id = req[24:32]
        hdr = (b"\xfeSMB" + struct.pack("<HHIHHII", 64, 0, 0, 0, 0, 1, 0) + msg_id
               + b"\0" * 8 + b"\0" * 8 + b"\0" * 16)
        body = (struct.pack("<HHHH", 65, 1, 0x0302, 0) + b"\x11" * 16
                + struct.pack("<IIII", 0x0C, 1 << 20, 1 << 20, 1 << 20) + b"\0" * 16
                + struct.pack("<HHI", 0, 0, 0) + b"\0")
        m = hdr + body
        c.sendall(len(m).to_bytes(4, "big") + m)
        done.wait(60)
        c.close()

    port, done = _fake_server(stingy)
    try:
        r = bench(["//127.0.0.1/share", "-U", "u%p", "--port", str(port), "--check", "--timeout", "2"], timeout=30)
    finally:
        done.set()
    assert r.returncode == 1
    assert "credit starvation: no SMB2 credit left and the server granted none within 2s" in r.stderr, r.stderr


def test_server_disconnect_mid_transfer(tmp_path: Path):
    """The server dies during a benchmark: the client stops with a clear error
    within seconds, not at the end of --duration."""
    open_to_smbd(tmp_path)
    target = os.environ.get("SMB_TARGET", "ours")
    victim = smbpeer.start_server(target, tmp_path / "victim")
    try:
        p = subprocess.Popen([str(BENCH), victim.unc, "-U", victim.creds, "--port", str(victim.port),
                              "--op", "write", "--size", "64k", "--depth", "8", "--duration", "60",
                              "--json", "--timeout", "20"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        time.sleep(2)
        assert p.poll() is None, p.communicate()
        t0 = time.monotonic()
        victim.stop()
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        victim.stop()
    assert p.returncode == 1, (out, err)
    assert "smbdirect-bench: the connection is down" in err, err
    assert took < 15


def test_sweep_csv_and_chart(server: SmbServer, tmp_path: Path):
    """Sweep mode: one CSV row per size x depth point, appended to --csv, and an
    SVG chart with the label in its legend; --plot redraws it from the CSV."""
    csv, svg = tmp_path / "s.csv", tmp_path / "s.svg"
    r = bench([server.unc, "-U", server.creds, "--port", str(server.port), "--sweep", "--sizes", "64k,256k",
               "--depths", "1,4", "--duration", "0.3", "--file-size", "8m", "--label", "target",
               "--csv", str(csv), "--svg", str(svg), "--timeout", "20"])
    assert r.returncode == 0, r.stderr
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("label,transport,op,pattern,size,depth")
    rows = [l.split(",") for l in lines[1:]]
    assert sorted((int(x[4]), int(x[5])) for x in rows) == [(65536, 1), (65536, 4), (262144, 1), (262144, 4)]
    assert all(x[0] == "target" and float(x[7]) > 0 for x in rows)
    text = svg.read_text()
    assert text.startswith("<svg") and "target tcp read d1 x1" in text
    svg.unlink()
    r = bench(["--plot", str(csv), "--svg", str(svg), "--title", "again"])
    assert r.returncode == 0, r.stderr
    assert "again" in svg.read_text()


def test_smbdirect_bench_subcommand(server: SmbServer):
    """`smbdirect bench ...` runs smbdirect-bench from the server binary's directory."""
    smbdirect = Path(os.environ.get("SMBDIRECT_BIN", REPO / "target/release/smbdirect"))
    r = subprocess.run([str(smbdirect), "bench", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--transport" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([str(smbdirect), "bench", server.unc, "-U", server.creds, "--port", str(server.port),
                        "--check", "--size", "4k", "--timeout", "20"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["write_read_verified"] is True


def test_server_stops_answering_mid_transfer(tmp_path: Path):
    """The server freezes (SIGSTOP) during a benchmark: the client gives up after
    --timeout with a clear error and does not wait for LOGOFF answers."""
    import signal
    open_to_smbd(tmp_path)
    target = os.environ.get("SMB_TARGET", "ours")
    victim = smbpeer.start_server(target, tmp_path / "frozen")
    pids: list[int] = []
    try:
        p = subprocess.Popen([str(BENCH), victim.unc, "-U", victim.creds, "--port", str(victim.port),
                              "--op", "read", "--size", "64k", "--depth", "4", "--duration", "60",
                              "--file-size", "4m", "--json", "--timeout", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        time.sleep(2)
        assert p.poll() is None, p.communicate()
        pids = victim.pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        t0 = time.monotonic()
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        victim.stop()
    assert p.returncode == 1, (out, err)
    assert "no answer from the server within 3s" in err, err
    assert took < 10
