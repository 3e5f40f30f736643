//! Encryption: with `smb encrypt = required` the session is marked ENCRYPT_DATA,
//! plaintext requests are refused, TRANSFORM requests work and every response comes
//! back in a TRANSFORM that opens with the client's decryption key; a tampered
//! TRANSFORM ends the connection.

use crate::harness::*;
use smbdirect_server::crypto::Cipher;

fn enc_server() -> TestServer {
    server_with(|c| required(c, false, true))
}

#[test]
fn plaintext_is_denied_encrypted_works() {
    for cipher in [1u16, 2, 3, 4] {
        let ts = enc_server();
        let mut c = Client::new(&ts);
        c.negotiate_with(&NegOpts { ciphers: vec![cipher], ..NegOpts::default() });
        assert_eq!(c.cipher.map(|c| c.wire_id()), Some(cipher));
        c.session_setup();
        assert_eq!(c.session_flags & 4, 4, "SESSION_FLAG_ENCRYPT_DATA");
        assert!(c.encrypt);

        // Plaintext TREE_CONNECT: refused.
        c.encrypt = false;
        let r = c.tree_connect("share");
        assert_eq!(r.status, ACCESS_DENIED, "cipher {cipher}");
        assert!(!r.encrypted);
        // Encrypted: works, and the response is a TRANSFORM (checked by call()).
        c.encrypt = true;
        let r = c.tree_connect("share");
        assert_eq!(r.status, SUCCESS);
        assert!(r.encrypted);
        let tree = c.tree_id;

        // Plaintext CREATE on the tree: refused, nothing created.
        c.encrypt = false;
        let r = c.create("secret.txt", GENERIC_ALL, FILE_OPEN_IF, 0);
        assert_eq!(r.status, ACCESS_DENIED);
        assert!(!ts.share_path().join("secret.txt").exists());
        // Plaintext but signed: still refused (signing is no substitute).
        let mut msg = c.build(CREATE, 1, &create_body("secret.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0));
        c.sign_msg(&mut msg);
        let v = c.raw(msg).unwrap();
        assert_eq!(v[0].status, ACCESS_DENIED);

        c.encrypt = true;
        assert_eq!(c.tree_id, tree);
        let fid = c.open_file("secret.txt");
        let data = vec![0x5Cu8; 200_000];
        assert_eq!(c.write(&fid, 0, &data).status, SUCCESS);
        let r = c.read(&fid, 0, 200_000, 4);
        assert!(r.encrypted);
        assert_eq!(r.read_data(), &data[..]);
        assert_eq!(c.close(&fid).status, SUCCESS);
        assert_eq!(std::fs::read(ts.share_path().join("secret.txt")).unwrap(), data);
        assert_eq!(c.logoff().status, SUCCESS);
    }
}

#[test]
fn responses_are_not_plaintext_on_the_wire() {
    let ts = enc_server();
    let mut c = connected(&ts);
    let fid = c.open_file("p");
    let marker = b"PLAINTEXT-MARKER-0123456789";
    c.write(&fid, 0, marker);
    let msg = c.build(READ, 1, &read_body(&fid, 0, marker.len() as u32));
    let sealed = c.seal(&msg);
    c.conn.handle_message(sealed).unwrap();
    let out = c.sink.take_all();
    assert_eq!(out.len(), 1);
    let wire = &out[0];
    assert_eq!(&wire[0..4], b"\xFDSMB");
    assert_eq!(le16(wire, 42), 1, "Flags = Encrypted");
    assert_eq!(le64(wire, 44), c.session_id);
    assert_eq!(le32(wire, 36) as usize, wire.len() - 52, "OriginalMessageSize");
    assert!(!wire.windows(marker.len()).any(|w| w == marker), "data travels in the clear");
    let v = c.decode(out[0].clone());
    assert_eq!(v[0].read_data(), marker);
}

#[test]
fn tampered_transform_ends_the_connection() {
    let ts = enc_server();
    let mut c = connected(&ts);
    // Each tampered byte position, on a fresh connection each time.
    for pos in [20usize, 40, 45, 52, 60, 100] {
        let mut c2 = Client::new(&ts);
        c2.logon();
        let msg = c2.build(TREE_CONNECT, 1, &tree_body("share"));
        let mut sealed = c2.seal(&msg);
        sealed[pos] ^= 0x01;
        let r = c2.conn.handle_message(sealed);
        assert!(r.is_err(), "tampered byte {pos} accepted");
        assert!(c2.sink.take_all().is_empty(), "a response to a tampered message");
    }
    // The tag itself.
    let msg = c.build(ECHO, 1, &[4, 0, 0, 0]);
    let mut sealed = c.seal(&msg);
    sealed[4] ^= 0x80;
    assert!(c.conn.handle_message(sealed).is_err());
}

#[test]
fn replayed_transform_ends_the_connection() {
    let ts = enc_server();
    let mut c = connected(&ts);
    let msg = c.build(ECHO, 1, &[4, 0, 0, 0]);
    let sealed = c.seal(&msg);
    c.raw(sealed.clone()).unwrap();
    // The same bytes again: the message id was used.
    assert!(c.conn.handle_message(sealed).is_err());
}

#[test]
fn transform_for_unknown_or_foreign_session_ends_the_connection() {
    let ts = enc_server();
    let mut c = connected(&ts);
    let msg = c.build(ECHO, 1, &[4, 0, 0, 0]);
    let mut sealed = c.seal(&msg);
    // Unknown session id (it is authenticated data, so also a tag failure).
    sealed[44..52].copy_from_slice(&0xDEAD_BEEFu64.to_le_bytes());
    assert!(c.conn.handle_message(sealed).is_err());

    // Another connection's session, with that session's own key: still refused on
    // this connection.
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let msg = b.build(ECHO, 1, &[4, 0, 0, 0]);
    let sealed = b.seal(&msg);
    assert!(a.conn.handle_message(sealed).is_err());
    let _ = &mut a;
}

#[test]
fn transform_before_smb3_ends_the_connection() {
    let ts = enc_server();
    let mut c = Client::new(&ts);
    let mut m = vec![0u8; 52 + 70];
    m[0..4].copy_from_slice(b"\xFDSMB");
    assert!(c.conn.handle_message(m).is_err(), "TRANSFORM before NEGOTIATE");
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { dialects: vec![DIALECT_210], ..NegOpts::default() });
    c.session_setup();
    let mut m = vec![0u8; 52 + 70];
    m[0..4].copy_from_slice(b"\xFDSMB");
    m[42] = 1;
    m[44..52].copy_from_slice(&c.session_id.to_le_bytes());
    assert!(c.conn.handle_message(m).is_err(), "TRANSFORM on 2.1");
}

#[test]
fn per_share_encryption() {
    // Global encryption only enabled; the share requires it.
    let ts = server_with(|cfg| cfg.shares[0].encrypt = smbdirect_server::config::Setting::Required);
    let mut c = Client::new(&ts);
    c.logon();
    assert_eq!(c.session_flags & 4, 0, "the session itself is not encrypted");
    let r = c.tree_connect("share");
    assert_eq!(r.status, SUCCESS);
    assert_eq!(le32(&r.raw, 64 + 4) & 0x8000, 0x8000, "SHAREFLAG_ENCRYPT_DATA");
    // Plaintext on the tree: refused.
    let r = c.create("f", GENERIC_ALL, FILE_OPEN_IF, 0);
    assert_eq!(r.status, ACCESS_DENIED);
    // Encrypted: works.
    c.encrypt = true;
    let fid = c.open_file("f");
    assert_eq!(c.close(&fid).status, SUCCESS);
}

#[test]
fn encryption_required_but_client_cannot_encrypt() {
    // A 2.1 client cannot encrypt: its logon is refused, as Samba does.
    let ts = enc_server();
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { dialects: vec![DIALECT_210], ..NegOpts::default() });
    assert_eq!(c.session_setup_as(USER, PASSWORD).unwrap_err(), ACCESS_DENIED);
    // A 3.1.1 client that offers no cipher likewise.
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { ciphers: vec![], ..NegOpts::default() });
    assert_eq!(c.cipher, None);
    assert_eq!(c.session_setup_as(USER, PASSWORD).unwrap_err(), ACCESS_DENIED);
    let _ = Cipher::Aes128Ccm;
}

#[test]
fn every_response_has_a_fresh_nonce() {
    let ts = enc_server();
    let mut c = connected(&ts);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..200 {
        let msg = c.build(ECHO, 1, &[4, 0, 0, 0]);
        let sealed = c.seal(&msg);
        c.conn.handle_message(sealed).unwrap();
        for m in c.sink.take_all() {
            let nonce: [u8; 16] = m[20..36].try_into().unwrap();
            assert!(seen.insert(nonce), "nonce reused by the server");
            let v = c.decode(m);
            assert_eq!(v[0].status, SUCCESS);
            c.held += i64::from(v[0].credits);
        }
    }
}

#[test]
fn smb30_and_302_encrypt_with_aes128_ccm() {
    for d in [DIALECT_300, DIALECT_302] {
        let ts = enc_server();
        let mut c = Client::new(&ts);
        c.negotiate_with(&NegOpts { dialects: vec![d], ..NegOpts::default() });
        assert_eq!(c.cipher, Some(Cipher::Aes128Ccm), "dialect {d:#x}: CAP_ENCRYPTION");
        c.session_setup();
        assert!(c.encrypt);
        assert_eq!(c.tree_connect("share").status, SUCCESS);
        let fid = c.open_file("ccm");
        assert_eq!(c.write(&fid, 0, b"ccm data").status, SUCCESS);
        assert_eq!(c.read(&fid, 0, 8, 1).read_data(), b"ccm data");
        c.encrypt = false;
        assert_eq!(c.read(&fid, 0, 8, 1).status, ACCESS_DENIED);
    }
}
