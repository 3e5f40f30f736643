//! NEGOTIATE validation (MS-SMB2 3.3.5.3, 3.3.5.4, 3.3.5.2.4).

use crate::harness::*;

fn negotiate_status(ts: &TestServer, body: &[u8], flags: u32) -> Result<u32, ()> {
    let mut c = Client::new(ts);
    let msg = build_header(NEGOTIATE, 0, 1, flags, 0, 0, 0, body);
    match c.raw(msg) {
        Ok(v) => {
            assert_eq!(v.len(), 1);
            Ok(v[0].status)
        }
        Err(_) => Err(()),
    }
}

#[test]
fn negotiate_without_common_dialect() {
    let ts = server();
    let body = Client::negotiate_body(&NegOpts { dialects: vec![0x0201, 0x0400], ..NegOpts::default() });
    assert_eq!(negotiate_status(&ts, &body, 0), Ok(0xC000_00BB), "NOT_SUPPORTED");
    // Server limits: max protocol 2.1 refuses a 3.x-only client.
    let ts = server_with(|cfg| cfg.max_protocol = DIALECT_210);
    let body = Client::negotiate_body(&NegOpts { dialects: vec![DIALECT_300, DIALECT_311], ..NegOpts::default() });
    assert_eq!(negotiate_status(&ts, &body, 0), Ok(0xC000_00BB));
    let mut c = Client::new(&ts);
    c.negotiate();
    assert_eq!(c.dialect, DIALECT_210);
}

#[test]
fn negotiate_311_without_preauth_context_is_invalid() {
    let ts = server();
    // 3.1.1 offered, no contexts at all (offset and count zero).
    let mut body = Vec::new();
    body.u16_(36).u16_(1).u16_(1).u16_(0).u32_(0).bytes(&[1; 16]).u32_(0).u16_(0).u16_(0).u16_(DIALECT_311);
    assert_eq!(negotiate_status(&ts, &body, 0), Ok(INVALID_PARAMETER));
    // A preauth context without SHA-512.
    let mut body = Client::negotiate_body(&NegOpts::default());
    let at = body.windows(6).position(|w| w == [1, 0, 32, 0, 1, 0]).expect("preauth context data");
    body[at + 4] = 2; // hash algorithm 2 (unknown)
    assert_eq!(negotiate_status(&ts, &body, 0), Ok(0xC05D_0000), "NO_PREAUTH_INTEGRITY_HASH_OVERLAP");
}

#[test]
fn negotiate_with_zero_dialects_is_invalid() {
    // MS-SMB2 3.3.5.4: DialectCount 0 fails with STATUS_INVALID_PARAMETER.
    let ts = server();
    let mut body = Vec::new();
    body.u16_(36).u16_(0).u16_(1).u16_(0).u32_(0).bytes(&[1; 16]).u32_(0).u16_(0).u16_(0);
    assert_eq!(negotiate_status(&ts, &body, 0), Ok(INVALID_PARAMETER));
}

#[test]
fn signed_negotiate_is_invalid() {
    // MS-SMB2 3.3.5.2.4: a NEGOTIATE with SMB2_FLAGS_SIGNED fails with INVALID_PARAMETER.
    let ts = server();
    let body = Client::negotiate_body(&NegOpts::default());
    assert_eq!(negotiate_status(&ts, &body, F_SIGNED), Ok(INVALID_PARAMETER));
}

#[test]
fn second_negotiate_does_not_renegotiate() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate();
    c.session_setup();
    let body = Client::negotiate_body(&NegOpts { dialects: vec![DIALECT_202], ..NegOpts::default() });
    let msg = c.build(NEGOTIATE, 1, &body);
    // MS-SMB2 3.3.5.3.1 says disconnect; an error without a state change is as safe.
    if let Ok(v) = c.raw(msg) {
        assert_ne!(v[0].status, SUCCESS);
        // The session and its keys still work at 3.1.1.
        c.sign = true;
        assert_eq!(c.tree_connect("share").status, SUCCESS);
    }
}

#[test]
fn empty_cipher_list_without_encryption_capability_negotiates_no_cipher() {
    // MS-SMB2 2.2.3.1.2 wants CipherCount > 0; Samba accepts 0 from a client that
    // does not claim SMB2_GLOBAL_CAP_ENCRYPTION and negotiates no cipher.
    let ts = server();
    let no_enc = NegOpts { dialects: vec![DIALECT_311], capabilities: 0x3F, raw_cipher_ctx: Some(vec![0, 0]), ..NegOpts::default() };
    let mut c = Client::new(&ts);
    let r = c.negotiate_with(&no_enc);
    assert_eq!(c.dialect, DIALECT_311);
    assert_eq!(c.cipher, None, "no cipher negotiated");
    assert_eq!(le32(&r.raw, 64 + 24) & 0x40, 0, "server does not claim encryption for this connection");
    // The connection works: logon (final response signed), tree, file.
    c.session_setup();
    assert_eq!(c.session_flags & 4, 0, "session not encrypted");
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let fid = c.open_file("plain.txt");
    assert_eq!(c.write(&fid, 0, b"no cipher").status, SUCCESS);
    assert_eq!(c.close(&fid).status, SUCCESS);

    // A client that claims encryption and offers no cipher is refused.
    let body = Client::negotiate_body(&NegOpts { capabilities: 0x7F, ..no_enc.clone() });
    assert_eq!(negotiate_status(&ts, &body, 0), Ok(INVALID_PARAMETER));
    // A count that runs past the context is malformed whatever the capabilities.
    for caps in [0x3F, 0x7F] {
        for raw in [vec![2, 0, 1, 0], vec![1, 0], vec![0xFF, 0xFF, 1, 0, 2, 0]] {
            let body = Client::negotiate_body(&NegOpts { capabilities: caps, raw_cipher_ctx: Some(raw.clone()), ..no_enc.clone() });
            assert_eq!(negotiate_status(&ts, &body, 0), Ok(INVALID_PARAMETER), "caps {caps:#x} context {raw:?}");
        }
    }
}
