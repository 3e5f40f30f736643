#!/usr/bin/env python3
"""Seeds for the server fuzz targets (server/fuzz), taken from real traffic.

Starts our server (SMBDIRECT_BIN, default target/release/smbdirect) on loopback behind
the recording tap of the peer tests (tests/peers/tap.py), runs smbclient, smbprotocol
(from the peer-test venv: ci/venv.sh) and a few smbtorture suites through it, and splits
the recorded client messages into per-target seed files under OUT (default
server/fuzz/seeds/, not checked in):

  header, requests     every SMB2 request (one message of a chain per file)
  negotiate            NEGOTIATE request bodies (after the 64-byte header)
  create_contexts      CREATE context lists
  ntlmssp, spnego      SESSION_SETUP security buffers (bare NTLMSSP / SPNEGO)
  security_descriptor  SET_INFO security buffers, QUERY_INFO security answers, SecD contexts
  ea_list              SET_INFO FULL_EA buffers, QUERY_INFO FULL_EA answers, ExtA contexts
  srvsvc               DCE/RPC PDUs written to (or transceived on) named pipes
  transform            TRANSFORM messages (first 512 bytes)
  pipeline             the requests of each connection after its logon, in the pipeline
                       target's input format (see smbdirect_server::fuzz::pipeline):
                       captured TreeIds and FileIds rewritten as the driver's indexes

Then minimize into the checked-in corpus with `cargo fuzz cmin` (see server/fuzz/README.md).

    python3 server/fuzz/capture_seeds.py [OUT]
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "peers"))
import tap as tapmod  # noqa: E402

tapmod.KEEP = 1 << 24  # keep whole frames

USER, PASSWORD = "seeder", "Seed-pass-1"
SMBTORTURE_SUITES = [
    "smb2.connect", "smb2.compound", "smb2.getinfo", "smb2.setinfo", "smb2.lock",
    "smb2.acls", "smb2.dir", "smb2.ioctl", "smb2.read", "smb2.create", "smb2.notify",
]
SMBPROTOCOL_SCRIPT = r"""
import sys, smbclient
from smbprotocol.connection import Dialects
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
for d, enc in ((Dialects.SMB_3_1_1, False), (Dialects.SMB_3_0_2, False), (Dialects.SMB_2_1_0, False), (Dialects.SMB_3_1_1, True)):
    smbclient.reset_connection_cache()
    smbclient.register_session(host, port=port, username=user, password=pw, encrypt=enc, require_signing=False)
    root = rf"\\{host}@{port}\share" if False else rf"\\{host}\share"
    kw = dict(port=port, username=user, password=pw)
    d_ = root + r"\pd" + str(int(d))
    smbclient.makedirs(d_, exist_ok=True, **kw)
    with smbclient.open_file(d_ + r"\f.txt", mode="w", **kw) as f:
        f.write("hello " * 100)
    with smbclient.open_file(d_ + r"\f.txt", mode="r", **kw) as f:
        f.read()
    smbclient.listdir(d_, **kw)
    smbclient.listdir(d_, search_pattern="f*", **kw)
    smbclient.stat(d_ + r"\f.txt", **kw)
    try:
        smbclient.setxattr(d_ + r"\f.txt", b"user.seed", b"value", **kw)
        smbclient.listxattr(d_ + r"\f.txt", **kw)
        smbclient.getxattr(d_ + r"\f.txt", b"user.seed", **kw)
        smbclient.removexattr(d_ + r"\f.txt", b"user.seed", **kw)
    except Exception as e:
        print("xattr:", e)
    smbclient.rename(d_ + r"\f.txt", d_ + r"\g.txt", **kw)
    smbclient.truncate(d_ + r"\g.txt", 10, **kw)
    smbclient.remove(d_ + r"\g.txt", **kw)
    smbclient.rmdir(d_, **kw)
smbclient.reset_connection_cache()
"""


def smbdirect_bin() -> str:
    b = os.environ.get("SMBDIRECT_BIN") or str(REPO / "target" / "release" / "smbdirect")
    if not os.access(b, os.X_OK):
        sys.exit(f"capture_seeds: {b} missing (cargo build --release -p smbdirect-server --bin smbdirect)")
    return b


def start_server(work: Path) -> tuple[subprocess.Popen, int]:
    share = work / "share"
    share.mkdir(parents=True)
    conf = work / "smbdirect.conf"
    conf.write_text("[global]\n    smb2 max credits = 8192\n    smbd:FSCTL_SMBTORTURE = yes\n")
    out = open(work / "stdout", "wb")
    p = subprocess.Popen([smbdirect_bin(), "serve", "--listen", "127.0.0.1:0", "--share", f"share={share}",
                          "--user", f"{USER}:{PASSWORD}", "--config", str(conf)],
                         stdout=out, stderr=open(work / "log", "wb"), stdin=subprocess.DEVNULL)
    for _ in range(300):
        t = (work / "stdout").read_bytes()
        for line in t.splitlines():
            if line.startswith(b"smbdirect: listening on 127.0.0.1:"):
                return p, int(line.rsplit(b":", 1)[1])
        time.sleep(0.1)
    p.kill()
    sys.exit("capture_seeds: server did not start")


def run(cmd: list[str], timeout: int = 180) -> None:
    print("capture_seeds:", " ".join(cmd[:6]), "...", flush=True)
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        print("capture_seeds: timed out (kept what was captured)", flush=True)


def capture(work: Path) -> list[tapmod.Frame]:
    server, port = start_server(work)
    try:
        with tapmod.Tap("127.0.0.1", port) as tap:
            tp = str(tap.port)
            cred = f"{USER}%{PASSWORD}"
            for proto in ("SMB3", "SMB2_10", "SMB2_02"):
                run(["smbclient", "//127.0.0.1/share", "-p", tp, "-U", cred, "-m", proto, "-c",
                     "mkdir d; cd d; put /etc/hosts h.txt; ls; ls h*; get h.txt /dev/null; allinfo h.txt; "
                     "setmode h.txt +r; setmode h.txt -r; rename h.txt h2.txt; del h2.txt; cd ..; rmdir d"], 60)
            run(["smbclient", "-L", "//127.0.0.1", "-p", tp, "-U", cred], 60)
            run(["smbclient", "//127.0.0.1/share", "-p", tp, "-U", cred, "-e", "-c", "ls"], 60)
            venv = subprocess.run([str(REPO / "ci" / "venv.sh")], capture_output=True, text=True).stdout.strip()
            if venv:
                run([f"{venv}/bin/python", "-c", SMBPROTOCOL_SCRIPT, "127.0.0.1", tp, USER, PASSWORD], 120)
            for s in SMBTORTURE_SUITES:
                run(["smbtorture", "//127.0.0.1/share", "-p", tp, "-U", cred, "--target=samba3",
                     "--option=torture:sharedelay=10000", s], int(os.environ.get("SEED_SUITE_TIMEOUT", "60")))
            time.sleep(0.5)
            return list(tap.frames)
    finally:
        server.terminate()
        server.wait(10)


def u16(b: bytes, o: int) -> int:
    return struct.unpack_from("<H", b, o)[0] if o + 2 <= len(b) else 0


def u32(b: bytes, o: int) -> int:
    return struct.unpack_from("<I", b, o)[0] if o + 4 <= len(b) else 0


def u64(b: bytes, o: int) -> int:
    return struct.unpack_from("<Q", b, o)[0] if o + 8 <= len(b) else 0


def chain(msg: bytes) -> list[bytes]:
    out, off = [], 0
    while len(msg) - off >= 64 and msg[off:off + 4] == b"\xfeSMB":
        n = u32(msg, off + 20)
        end = len(msg) if n == 0 or off + n > len(msg) else off + n
        out.append(msg[off:end])
        if end == len(msg):
            break
        off = end
    return out


def create_contexts(m: bytes) -> list[tuple[bytes, bytes]]:
    out, off = [], 0
    while off + 16 <= len(m):
        nxt, noff, nlen, doff, dlen = u32(m, off), u16(m, off + 4), u16(m, off + 6), u16(m, off + 10), u32(m, off + 12)
        out.append((m[off + noff:off + noff + nlen], m[off + doff:off + doff + dlen] if dlen else b""))
        if nxt == 0:
            break
        off += nxt
    return out


class Seeds:
    def __init__(self, out: Path):
        self.out = out
        self.n: dict[str, int] = {}

    def add(self, target: str, data: bytes) -> None:
        if not data:
            return
        d = self.out / target
        d.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha1(data).hexdigest()
        p = d / name
        if not p.exists():
            p.write_bytes(data)
            self.n[target] = self.n.get(target, 0) + 1


def split(frames: list[tapmod.Frame], seeds: Seeds) -> None:
    conns = sorted({f.conn for f in frames})
    for c in conns:
        fr = [f for f in frames if f.conn == c]
        dialect, logged_on, signed = 0x0311, False, False
        trees: dict[int, int] = {}
        files: dict[bytes, int] = {}
        records: list[bytes] = []
        for f in fr:
            b = f.head
            if b[:4] == b"\xfdSMB":
                seeds.add("transform", b[:512])
                continue
            if b[:4] != b"\xfeSMB":
                continue
            if not f.to_server:
                for r in chain(b):
                    cmd, status = u16(r, 12), u32(r, 8)
                    if cmd == 0 and status == 0:
                        dialect = u16(r, 64 + 4)
                    if cmd == 1 and status == 0:
                        logged_on = True
                    if cmd == 3 and status == 0:
                        trees.setdefault(u32(r, 36), len(trees) + 2)
                    if cmd == 5 and status == 0 and len(r) >= 144:
                        files.setdefault(r[128:144], len(files))
                    if cmd == 16 and status in (0, 0x80000005) and len(r) >= 72:
                        data = r[u16(r, 66):u16(r, 66) + u32(r, 68)]
                        if data[:1] == b"\x01" and len(data) >= 20:
                            seeds.add("security_descriptor", data)
                    if cmd in (8, 11) and status == 0 and len(r) >= 72:
                        # READ/IOCTL answers on pipes: DCE/RPC PDUs (server side, still seeds).
                        pass
                continue
            for m in chain(b):
                cmd = u16(m, 12)
                seeds.add("header", m[:64])
                seeds.add("requests", m)
                if cmd == 0:
                    seeds.add("negotiate", m[64:])
                elif cmd == 1:
                    tok = m[u16(m, 64 + 12):u16(m, 64 + 12) + u16(m, 64 + 14)]
                    if tok.startswith(b"NTLMSSP\0"):
                        seeds.add("ntlmssp", tok)
                    elif tok:
                        seeds.add("spnego", tok)
                        i = tok.find(b"NTLMSSP\0")
                        if i >= 0:
                            seeds.add("ntlmssp", tok[i:])
                elif cmd == 5:
                    co, cl = u32(m, 64 + 48), u32(m, 64 + 52)
                    ctx = m[co:co + cl] if cl else b""
                    seeds.add("create_contexts", ctx)
                    for name, data in create_contexts(ctx):
                        if name == b"SecD":
                            seeds.add("security_descriptor", data)
                        elif name == b"ExtA":
                            seeds.add("ea_list", data)
                elif cmd == 17:
                    ty, cls, ln, off = m[66], m[67], u32(m, 68), u16(m, 72)
                    buf = m[off:off + ln]
                    if ty == 3:
                        seeds.add("security_descriptor", buf)
                    elif ty == 1 and cls == 15:
                        seeds.add("ea_list", buf)
                elif cmd == 9:
                    data = m[u16(m, 66):u16(m, 66) + u32(m, 68)]
                    if data[:1] == b"\x05" and data[2:3] in (b"\x00", b"\x0b"):
                        seeds.add("srvsvc", data)
                elif cmd == 11:
                    data = m[u32(m, 64 + 24):u32(m, 64 + 24) + u32(m, 64 + 28)]
                    if data[:1] == b"\x05" and data[2:3] in (b"\x00", b"\x0b"):
                        seeds.add("srvsvc", data)
            if logged_on and u16(b, 12) not in (0, 1):
                signed = signed or bool(u32(b, 16) & 8)
                records.append(pipeline_record(b, trees, files))
        opts = {0x0311: 0, 0x0302: 1, 0x0300: 1, 0x0210: 2, 0x0202: 3}.get(dialect, 0) | (4 if signed else 0)
        recs = [r for r in records if r is not None]
        for i in range(0, len(recs), 24):
            seeds.add("pipeline", bytes([opts]) + b"".join(recs[i:i + 24]))


FILE_ID_AT = {6: 8, 7: 8, 10: 8, 11: 8, 14: 8, 15: 8, 18: 8, 8: 16, 9: 16, 17: 16, 16: 24}


def pipeline_record(b: bytes, trees: dict[int, int], files: dict[bytes, int]) -> bytes | None:
    if len(b) > 0xFFFF:
        return None
    out = bytearray(b)
    off = 0
    for m in chain(b):
        if not u32(m, 16) & 2:
            t = u32(m, 36)
            if t in trees:
                struct.pack_into("<I", out, off + 36, trees[t])
        at = FILE_ID_AT.get(u16(m, 12))
        if at is not None and off + 64 + at + 16 <= len(out):
            fid = bytes(out[off + 64 + at:off + 64 + at + 16])
            if fid in files:
                out[off + 64 + at:off + 64 + at + 16] = b"\xfe" * 8 + struct.pack("<Q", files[fid])
        off += len(m)
    return struct.pack("<HB", len(out), 0) + bytes(out)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "seeds"
    shutil.rmtree(out, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="smbdirect-seeds-"))
    try:
        frames = capture(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seeds = Seeds(out)
    split(frames, seeds)
    print(f"capture_seeds: {len(frames)} frames on {len({f.conn for f in frames})} connections")
    for t, n in sorted(seeds.n.items()):
        print(f"  {t}: {n} seeds")


if __name__ == "__main__":
    main()
