"""Reference outputs for the crypto tests, computed by the `smbprotocol` package (PyPI,
tested with smbprotocol 1.17.0 on cryptography 50.0.2) from fixed inputs.

Run in a throwaway venv:
    python3 -m venv /tmp/v && /tmp/v/bin/pip install smbprotocol==1.17.0
    /tmp/v/bin/python server/src/crypto/tests/smbprotocol_reference.py

It calls smbprotocol's own key derivation (Session._smb3kdf), signing
(Connection._generate_signature) and encryption (Connection._encrypt, with os.urandom pinned so
the nonce is known) and prints hex that server/src/crypto/tests/reference.rs pastes verbatim.
"""
import hashlib
import types

import smbprotocol.connection as conn_mod
from smbprotocol.connection import Connection
from smbprotocol.session import Session

SESSION_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
# A 32-byte "full" session key as Kerberos AES256 would give; SessionKey = its first 16 bytes.
FULL_SESSION_KEY = bytes.fromhex(
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
PREAUTH = hashlib.sha512(b"smbdirect crypto reference preauth").digest()


def kdf(key, label, context, length=16):
    return Session._smb3kdf(None, key, label, context, length)


def h(b):
    return b.hex()


print("PREAUTH", h(PREAUTH))
print("KDF30 signing", h(kdf(SESSION_KEY, b"SMB2AESCMAC\x00", b"SmbSign\x00")))
print("KDF30 app", h(kdf(SESSION_KEY, b"SMB2APP\x00", b"SmbRpc\x00")))
print("KDF30 server_in", h(kdf(SESSION_KEY, b"SMB2AESCCM\x00", b"ServerIn \x00")))
print("KDF30 server_out", h(kdf(SESSION_KEY, b"SMB2AESCCM\x00", b"ServerOut\x00")))
print("KDF311 signing", h(kdf(SESSION_KEY, b"SMBSigningKey\x00", PREAUTH)))
print("KDF311 app", h(kdf(SESSION_KEY, b"SMBAppKey\x00", PREAUTH)))
print("KDF311 server_in 128", h(kdf(SESSION_KEY, b"SMBC2SCipherKey\x00", PREAUTH)))
print("KDF311 server_out 128", h(kdf(SESSION_KEY, b"SMBS2CCipherKey\x00", PREAUTH)))
sk_full16 = FULL_SESSION_KEY[:16]
print("KDF311full signing", h(kdf(sk_full16, b"SMBSigningKey\x00", PREAUTH)))
print("KDF311full server_in 256", h(kdf(FULL_SESSION_KEY, b"SMBC2SCipherKey\x00", PREAUTH, 32)))
print("KDF311full server_out 256", h(kdf(FULL_SESSION_KEY, b"SMBS2CCipherKey\x00", PREAUTH, 32)))


def smb2_message(command, flags, message_id, body):
    hdr = bytearray(64)
    hdr[0:4] = b"\xfeSMB"
    hdr[4:6] = (64).to_bytes(2, "little")
    hdr[12:14] = command.to_bytes(2, "little")
    hdr[14:16] = (1).to_bytes(2, "little")
    hdr[16:20] = flags.to_bytes(4, "little")
    hdr[24:32] = message_id.to_bytes(8, "little")
    hdr[36:40] = (7).to_bytes(4, "little")  # TreeId
    hdr[40:48] = (0x0000100000000025).to_bytes(8, "little")  # SessionId
    hdr[48:64] = bytes(range(0xA0, 0xB0))  # garbage signature: must be ignored
    return bytes(hdr) + body


SIGNED = 0x8
MESSAGES = {
    # READ request (client to server), 49-byte body
    "request": smb2_message(0x0008, SIGNED, 0x1122334455667788, bytes(range(49))),
    # READ response (server to client): SMB2_FLAGS_SERVER_TO_REDIR
    "response": smb2_message(0x0008, SIGNED | 0x1, 0x1122334455667788, bytes(range(100, 180))),
    # CANCEL request
    "cancel": smb2_message(0x000C, SIGNED, 0x42, b"\x04\x00\x00\x00"),
}
sign_key = bytes.fromhex("00112233445566778899aabbccddeeff")
for alg, dialect in (("hmac", 0x0210), ("cmac", 0x0300), ("gmac", 0x0311)):
    fake = types.SimpleNamespace(dialect=dialect, signing_algorithm_id=2 if alg == "gmac" else None)
    for name, msg in MESSAGES.items():
        response = bool(int.from_bytes(msg[16:20], "little") & 1)
        command = int.from_bytes(msg[12:14], "little")
        message_id = int.from_bytes(msg[24:32], "little")
        sig = Connection._generate_signature(fake, msg, sign_key, message_id, response, command)
        print("SIGN", alg, name, "msg", h(msg))
        print("SIGN", alg, name, "sig", h(sig))

PLAINTEXT = smb2_message(0x0008, 0x1, 9, bytes((i * 7) & 0xFF for i in range(123)))
NONCE_SOURCE = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
conn_mod.os.urandom = lambda n: NONCE_SOURCE[:n]
print("ENC plaintext", h(PLAINTEXT))
for cipher_id in (1, 2, 3, 4):
    key = bytes(range(0x40, 0x40 + (32 if cipher_id >= 3 else 16)))
    fake = types.SimpleNamespace(dialect=0x0311, cipher_id=cipher_id)
    sess = types.SimpleNamespace(session_id=0x0000100000000025, encryption_key=key)
    th = Connection._encrypt(fake, PLAINTEXT, sess)
    print("ENC", cipher_id, h(th.pack()))
