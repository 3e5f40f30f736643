#!/usr/bin/env python3
"""Records raw NTLMSSP and SPNEGO exchanges between Samba's client code (ntlm_auth's
ntlmssp-client-1 and gss-spnego-client helper protocols, Samba 4.17) and our acceptor
(fixed server challenge and timestamp through the ignored test `record_helper`), and prints
the client's tokens for pasting into tests/samba.rs.

Usage (from the workspace root; needs ntlm_auth from Debian's winbind package):
    python3 server/src/auth/tests/samba_record.py
"""
import base64
import os
import re
import subprocess
import tempfile

PASSWORD = "S3cret-p\u00e4ssword"


def server(first, last=None):
    env = dict(os.environ, AUTH_FIRST=first.hex())
    if last is not None:
        env["AUTH_LAST"] = last.hex()
    out = subprocess.run(
        ["cargo", "test", "-q", "-p", "smbdirect-server", "--lib", "record_helper",
         "--", "--ignored", "--nocapture"],
        env=env, capture_output=True, text=True, check=True).stdout
    return {k: bytes.fromhex(v) for k, v in re.findall(r"^(RESP1|FINAL)=([0-9a-f]*)$", out, re.M)}


def unwrap(line):
    kind, _, b64 = line.strip().partition(" ")
    return kind, (base64.b64decode(b64) if b64 and b64 != "*" else b"")


with tempfile.TemporaryDirectory() as d:
    conf = os.path.join(d, "smb.conf")
    with open(conf, "w") as f:
        f.write("[global]\nworkgroup = WORKGROUP\nnetbios name = CLIENTPC\n")
        for k in ("private dir", "lock dir", "state directory", "cache directory", "pid directory"):
            f.write(f"{k} = {d}\n")
        f.write(f"log file = {d}/log\n")
    for mode, proto in (("raw", "ntlmssp-client-1"), ("spnego", "gss-spnego-client")):
        p = subprocess.Popen(
            ["ntlm_auth", f"--configfile={conf}", f"--helper-protocol={proto}",
             "--username=alice", f"--password={PASSWORD}", "--domain=WORKGROUP"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def ask(line):
            p.stdin.write(line + "\n")
            p.stdin.flush()
            return unwrap(p.stdout.readline())

        kind, first = ask("YR")
        assert kind == "YR", kind
        resp1 = server(first)["RESP1"]
        kind, last = ask("TT " + base64.b64encode(resp1).decode())
        assert kind in ("KK", "AF") and last, (kind, last)
        final = server(first, last)["FINAL"]
        if mode == "spnego":
            # Samba checks our accept-completed token and its mechListMIC here.
            kind, _ = ask("TT " + base64.b64encode(final).decode())
            assert kind == "AF", kind
        # Samba's view of the session key ("GK"), where the helper protocol offers it.
        kind, key = ask("GK")
        p.stdin.close()
        p.wait()
        if kind == "GK":
            print(f"{mode}_session_key = {key.hex()}")
        print(f"{mode}_first = {first.hex()}")
        print(f"{mode}_last = {last.hex()}")
        print(f"{mode}_final = {final.hex()}")
