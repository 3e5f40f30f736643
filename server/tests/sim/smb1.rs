//! The SMB1 multi-protocol NEGOTIATE upgrade (MS-SMB2 3.3.5.3.1).

use crate::harness::*;

/// An SMB_COM_NEGOTIATE offering `dialects` (MS-CIFS 2.2.4.52.1).
pub fn smb1_negotiate(dialects: &[&str]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for d in dialects {
        bytes.push(0x02);
        bytes.extend_from_slice(d.as_bytes());
        bytes.push(0);
    }
    let mut m = Vec::new();
    m.bytes(b"\xFFSMB").u8_(0x72).u32_(0).u8_(0x18).u16_(0xC853).u16_(0).bytes(&[0; 8]).u16_(0).u16_(0xFFFF).u16_(0xFEFF).u16_(0).u16_(0);
    assert_eq!(m.len(), 32);
    m.u8_(0).u16_(bytes.len() as u16).bytes(&bytes);
    m
}

#[test]
fn smb1_wildcard_then_smb2_negotiate() {
    let ts = server();
    let mut c = Client::new(&ts);
    let v = c.raw(smb1_negotiate(&["NT LM 0.12", "SMB 2.002", "SMB 2.???"])).unwrap();
    assert_eq!(v.len(), 1);
    let r = &v[0];
    assert_eq!(r.command, NEGOTIATE);
    assert_eq!(r.status, SUCCESS);
    assert_eq!(r.message_id, 0);
    assert_eq!(r.flags & F_RESPONSE, F_RESPONSE);
    assert_eq!(le16(&r.raw, 64), 65);
    assert_eq!(le16(&r.raw, 68), 0x02FF, "wildcard dialect");
    assert!(r.credits >= 1);
    // The SMB1 request used message id 0; the SMB2 NEGOTIATE comes with id 1.
    c.next_mid = 1;
    c.held = i64::from(r.credits);
    c.negotiate();
    assert_eq!(c.dialect, DIALECT_311);
    // And the connection goes on as usual (preauth starts at the SMB2 NEGOTIATE).
    c.session_setup();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
}

#[test]
fn smb1_with_only_2002_gets_2002() {
    let ts = server();
    let mut c = Client::new(&ts);
    let v = c.raw(smb1_negotiate(&["NT LM 0.12", "SMB 2.002"])).unwrap();
    assert_eq!(le16(&v[0].raw, 68), DIALECT_202);
    // Negotiated: the client goes straight to SESSION_SETUP.
    c.next_mid = 1;
    c.parse_negotiate(&v[0]);
    assert_eq!(c.dialect, DIALECT_202);
    c.session_setup();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
}

#[test]
fn smb1_without_smb2_dialects_ends_the_connection() {
    let ts = server();
    let mut c = Client::new(&ts);
    assert!(c.conn.handle_message(smb1_negotiate(&["NT LM 0.12", "LANMAN2.1"])).is_err());
    assert!(c.sink.take_all().is_empty());
}

#[test]
fn smb1_after_negotiation_ends_the_connection() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate();
    assert!(c.conn.handle_message(smb1_negotiate(&["SMB 2.???"])).is_err());
    // Twice SMB1 likewise.
    let mut c = Client::new(&ts);
    c.raw(smb1_negotiate(&["SMB 2.???"])).unwrap();
    assert!(c.conn.handle_message(smb1_negotiate(&["SMB 2.???"])).is_err());
}

#[test]
fn smb1_other_commands_and_truncation() {
    let ts = server();
    let mut c = Client::new(&ts);
    let mut m = smb1_negotiate(&["SMB 2.???"]);
    m[4] = 0x73; // SESSION_SETUP_ANDX
    assert!(c.conn.handle_message(m).is_err());
    let full = smb1_negotiate(&["NT LM 0.12", "SMB 2.???"]);
    for n in 4..full.len() - 1 {
        let mut c = Client::new(&ts);
        // Must not panic; a cut dialect string may still parse.
        let _ = c.conn.handle_message(full[..n].to_vec());
    }
}

#[test]
fn smb2_after_wildcard_must_be_negotiate() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.raw(smb1_negotiate(&["SMB 2.???"])).unwrap();
    c.next_mid = 1;
    let body = Client::session_setup_body(&[], 1);
    let msg = c.build(SESSION_SETUP, 1, &body);
    assert!(c.conn.handle_message(msg).is_err(), "SESSION_SETUP before the SMB2 NEGOTIATE");
}
