//! Signing: with `server signing = required`, unsigned or badly signed requests on a
//! session are refused with ACCESS_DENIED; signed ones work and their responses are
//! signed with the session's key.

use crate::harness::*;
use smbdirect_server::conn::Disconnect;

fn signed_server() -> TestServer {
    server_with(|c| required(c, true, false))
}

#[test]
fn negotiate_says_signing_required() {
    let ts = signed_server();
    let mut c = Client::new(&ts);
    c.negotiate();
    assert_eq!(c.server_security_mode & 3, 3, "SIGNING_ENABLED | SIGNING_REQUIRED");
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate();
    assert_eq!(c.server_security_mode & 3, 1, "only SIGNING_ENABLED");
}

#[test]
fn unsigned_request_is_denied() {
    let ts = signed_server();
    let mut c = Client::new(&ts);
    c.logon();
    assert!(c.sign, "client noticed signing is required");
    // An unsigned TREE_CONNECT (3.0.2: on 3.1.1 it ends the connection, below).
    let mut old = Client::new(&ts);
    old.negotiate_with(&NegOpts { dialects: vec![DIALECT_302], ..NegOpts::default() });
    old.session_setup();
    assert!(old.sign, "client noticed signing is required");
    old.sign = false;
    let r = old.tree_connect("share");
    assert_eq!(r.status, ACCESS_DENIED);
    assert_eq!(old.tree_id, 0);
    // Signed, it works.
    c.sign = true;
    let r = c.tree_connect("share");
    assert_eq!(r.status, SUCCESS);
    // Unsigned again, on the tree: still refused.
    c.sign = false;
    let r = c.create("x", GENERIC_ALL, FILE_OPEN_IF, 0);
    assert_eq!(r.status, ACCESS_DENIED);
    assert!(!ts.share_path().join("x").exists(), "the refused CREATE was carried out");
}

#[test]
fn corrupted_signature_is_denied() {
    let ts = signed_server();
    let mut c = Client::new(&ts);
    c.logon();
    // A flipped bit in the signature.
    for bit in [0usize, 7, 63, 127] {
        let mut msg = c.build(TREE_CONNECT, 1, &tree_body("share"));
        c.sign_msg(&mut msg);
        msg[48 + bit / 8] ^= 1 << (bit % 8);
        let v = c.raw(msg).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].status, ACCESS_DENIED, "signature bit {bit}");
    }
    // A flipped bit in the body after signing.
    let mut msg = c.build(TREE_CONNECT, 1, &tree_body("share"));
    c.sign_msg(&mut msg);
    let n = msg.len();
    msg[n - 1] ^= 0x20;
    assert_eq!(c.raw(msg).unwrap()[0].status, ACCESS_DENIED);
    // A header field changed after signing (the credit request).
    let mut msg = c.build(TREE_CONNECT, 1, &tree_body("share"));
    c.sign_msg(&mut msg);
    msg[14] ^= 1;
    assert_eq!(c.raw(msg).unwrap()[0].status, ACCESS_DENIED);
    // Signed with another session's key.
    let mut other = Client::new(&ts);
    other.logon();
    let mut msg = c.build(TREE_CONNECT, 1, &tree_body("share"));
    other.sign_msg(&mut msg);
    assert_eq!(c.raw(msg).unwrap()[0].status, ACCESS_DENIED);
    // SIGNED flag set with an all-zero signature.
    let mut msg = c.build(TREE_CONNECT, 1, &tree_body("share"));
    set_flags(&mut msg, F_SIGNED);
    assert_eq!(c.raw(msg).unwrap()[0].status, ACCESS_DENIED);
    // None of these connected a tree; a good one does.
    assert!(c.conn.sessions.len() == 1);
    c.sign = true;
    assert_eq!(c.tree_connect("share").status, SUCCESS);
}

#[test]
fn signed_session_works_and_every_response_verifies() {
    let ts = signed_server();
    let mut c = Client::new(&ts);
    c.logon();
    // call() checks that each response is signed and verifies.
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let fid = c.open_file("signed.bin");
    assert_eq!(c.write(&fid, 0, &[0xAB; 70_000]).status, SUCCESS);
    let r = c.read(&fid, 0, 70_000, 2);
    assert!(r.is_signed());
    assert_eq!(r.read_data(), &[0xAB; 70_000][..]);
    // Error responses are signed too.
    let r = c.read(&fid, 1_000_000, 10, 1);
    assert_eq!(r.status, 0xC000_0011);
    assert!(r.is_signed());
    assert_eq!(c.close(&fid).status, SUCCESS);
    assert_eq!(c.logoff().status, SUCCESS);
}

#[test]
fn client_may_sign_when_server_does_not_require_it() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.logon();
    assert!(!c.sign);
    // Unsigned works when neither side requires signing...
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    // ...and a signed request gets a signed response.
    c.sign = true;
    let fid = c.open_file("a");
    assert_eq!(c.close(&fid).status, SUCCESS);
    // A bad signature is refused even where signing is optional.
    let mut msg = c.build(CREATE, 1, &create_body("a", GENERIC_ALL, SHARE_ALL, FILE_OPEN, 0));
    c.sign_msg(&mut msg);
    msg[50] ^= 4;
    assert_eq!(c.raw(msg).unwrap()[0].status, ACCESS_DENIED);
}

#[test]
fn client_requiring_signing_gets_a_signing_session() {
    // The client sets SIGNING_REQUIRED in SESSION_SETUP: the server then refuses
    // unsigned requests on that session, even with signing only enabled.
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate();
    c.sign = true; // makes session_setup send SecurityMode = SIGNING_REQUIRED
    c.session_setup();
    c.sign = true;
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    c.sign = false;
    assert_eq!(c.create("x", GENERIC_ALL, FILE_OPEN_IF, 0).status, ACCESS_DENIED);
    c.sign = true;
    assert_eq!(c.create("x", GENERIC_ALL, FILE_OPEN_IF, 0).status, SUCCESS);
}

#[test]
fn gmac_and_hmac_signing() {
    // AES-GMAC (3.1.1 signing context) and HMAC-SHA256 (2.1).
    let ts = signed_server();
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { signing: vec![2], ..NegOpts::default() });
    assert_eq!(c.signing_alg, smbdirect_server::crypto::SigningAlgorithm::AesGmac);
    c.session_setup();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let msg = c.build(ECHO, 1, &[4, 0, 0, 0]);
    let v = c.send(msg).unwrap();
    c.check_resp(&v[0]);

    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { dialects: vec![DIALECT_210], ..NegOpts::default() });
    c.session_setup();
    assert!(c.sign);
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    c.sign = false;
    assert_eq!(c.create("y", GENERIC_ALL, FILE_OPEN_IF, 0).status, ACCESS_DENIED);
}

#[test]
fn final_session_setup_is_signed_at_every_dialect() {
    // MS-SMB2 3.3.5.5.3: the final SESSION_SETUP response of a session with a key
    // is signed even when neither side requires signing, 2.0.2 and 2.1 included
    // (session_setup_as checks the signature against the client's own key).
    let ts = server();
    for d in [DIALECT_202, DIALECT_210, DIALECT_300, DIALECT_302, DIALECT_311] {
        let mut c = Client::new(&ts);
        c.negotiate_with(&NegOpts { dialects: vec![d], ..NegOpts::default() });
        assert_eq!(c.server_security_mode & 3, 1, "signing enabled, not required");
        let r = c.session_setup();
        assert!(r.is_signed(), "dialect {d:#x}: final SESSION_SETUP response not signed");
        assert!(!c.sign, "dialect {d:#x}: signing became required");
        // The session does not require signing: unsigned requests still work.
        assert_eq!(c.tree_connect("share").status, SUCCESS, "dialect {d:#x}");
    }
}

#[test]
fn guest_final_session_setup_is_not_signed() {
    // A guest session has no key the client could check a signature with.
    let ts = server_with(|c| c.map_to_guest = true);
    for d in [DIALECT_210, DIALECT_311] {
        let mut c = Client::new(&ts);
        c.negotiate_with(&NegOpts { dialects: vec![d], ..NegOpts::default() });
        // NTLM rounds by hand: the guest's final token has no mechListMIC for
        // sspi to check, so session_setup_as cannot drive this logon.
        let mut gss = Gss::new("nosuchuser", "whatever");
        let mut input: Option<Vec<u8>> = None;
        let last = loop {
            let (_, token) = gss.step(input.as_deref());
            let msg = c.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
            let r = c.raw(msg).expect("SESSION_SETUP ended the connection").pop().expect("one response");
            c.session_id = r.session_id;
            if r.status != MORE_PROCESSING_REQUIRED {
                break r;
            }
            input = Some(sec_buffer(&r));
        };
        assert_eq!(last.status, SUCCESS, "dialect {d:#x}: guest logon");
        assert_eq!(le16(&last.raw, 66) & 3, 1, "dialect {d:#x}: IS_GUEST");
        assert!(!last.is_signed(), "dialect {d:#x}: guest SESSION_SETUP response signed");
    }
}

/// MS-SMB2 3.3.5.7: on 3.1.1 an authenticated user's TREE_CONNECT that is neither
/// signed nor encrypted ends the connection, even when signing is not required.
#[test]
fn unsigned_tree_connect_on_311_disconnects() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.logon();
    assert_eq!(c.dialect, DIALECT_311);
    let msg = c.build(TREE_CONNECT, 1, &tree_body("share"));
    match c.raw(msg) {
        Err(Disconnect::Protocol(why)) => assert!(why.contains("TREE_CONNECT"), "{why}"),
        other => panic!("unsigned 3.1.1 TREE_CONNECT was not a disconnect: {other:?}"),
    }
    // Signed, on a new connection, it works; 3.0.2 unsigned without required
    // signing is fine too.
    let mut c = Client::new(&ts);
    c.logon();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { dialects: vec![DIALECT_302], ..NegOpts::default() });
    c.session_setup();
    assert!(!c.sign);
    assert_eq!(c.tree_connect("share").status, SUCCESS);
}
