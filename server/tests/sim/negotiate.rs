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
