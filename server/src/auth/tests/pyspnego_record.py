#!/usr/bin/env python3
"""Records SPNEGO and raw NTLM exchanges between pyspnego's pure-Python client and our
acceptor (run with a fixed server challenge and timestamp, so the acceptor's answers are
reproducible), and prints the client's tokens for pasting into tests/pyspnego.rs.

Usage (from the workspace root, in a throwaway venv with `pip install pyspnego`):
    python server/src/auth/tests/pyspnego_record.py
The server side runs through the ignored test `record_helper`.
"""
import os
import re
import subprocess

import spnego

USER = "WORKGROUP\\alice"
PASSWORD = "S3cret-p\u00e4ssword"


def server(mode, first, last=None):
    env = dict(os.environ, AUTH_MODE=mode, AUTH_FIRST=first.hex())
    if last is not None:
        env["AUTH_LAST"] = last.hex()
    out = subprocess.run(
        ["cargo", "test", "-q", "-p", "smbdirect-server", "--lib", "record_helper",
         "--", "--ignored", "--nocapture"],
        env=env, capture_output=True, text=True, check=True).stdout
    return {k: bytes.fromhex(v) for k, v in re.findall(r"^(RESP1|FINAL)=([0-9a-f]*)$", out, re.M)}


for mode, protocol in (("spnego", "negotiate"), ("raw", "ntlm")):
    c = spnego.client(USER, PASSWORD, hostname="smbdirect", service="cifs", protocol=protocol,
                      options=spnego.NegotiateOptions.use_negotiate if protocol == "negotiate"
                      else spnego.NegotiateOptions.use_ntlm)
    first = c.step()
    resp1 = server(mode, first)["RESP1"]
    last = c.step(resp1)
    final = server(mode, first, last)["FINAL"]
    if final:
        c.step(final)  # pyspnego checks our mechListMIC here
    assert c.complete, "pyspnego did not complete"
    print(f"// {mode}: pyspnego {spnego.__version__ if hasattr(spnego, '__version__') else ''}")
    print(f"{mode}_first = {first.hex()}")
    print(f"{mode}_last = {last.hex()}")
    print(f"{mode}_final = {final.hex()}")
    print(f"{mode}_session_key = {c.session_key.hex()}")
