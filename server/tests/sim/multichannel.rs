//! Multichannel (MS-SMB2 3.3.5.5 binding, 3.3.5.2.4 / 3.3.4.1.1 channel
//! signing keys, 3.3.5.2.10 channel sequence): a second connection of the
//! same client binds to a session, signs with its own channel key, reaches the
//! same opens; channels come and go; bindings that must be refused are.

use crate::harness::*;
use smbdirect_server::crypto::{PreauthHash, Signer, SigningAlgorithm};

const SESSION_FLAG_BINDING: u8 = 0x01;
const NOT_SUPPORTED: u32 = 0xC000_00BB;
const REQUEST_NOT_ACCEPTED: u32 = 0xC000_00D0;
const FILE_NOT_AVAILABLE: u32 = 0xC000_0467;
const CAP_MULTI_CHANNEL: u32 = 0x08;

/// NEGOTIATE with `dialects` and the given ClientGuid (the harness's clients
/// all share one GUID: they are one client).
pub(crate) fn negotiate_as(c: &mut Client, dialects: Vec<u16>, guid: Option<[u8; 16]>) -> Resp {
    let opts = NegOpts { dialects, ..NegOpts::default() };
    let mut body = Client::negotiate_body(&opts);
    if let Some(g) = guid {
        body[12..28].copy_from_slice(&g);
    }
    let msg = c.build(NEGOTIATE, 0, &body);
    let r = c.raw(msg.clone()).expect("NEGOTIATE ended the connection").pop().unwrap();
    assert_eq!(r.status, SUCCESS);
    c.parse_negotiate(&r);
    if c.dialect == DIALECT_311 {
        let mut h = PreauthHash::new();
        h.update(&msg);
        h.update(&r.raw);
        c.preauth = Some(h);
    }
    r
}

/// How a binding request is signed.
pub(crate) enum Sign<'a> {
    With(&'a Signer),
    No,
}

/// Binds `b` (negotiated) to `a`'s session: SESSION_SETUP rounds with
/// SMB2_SESSION_FLAG_BINDING, each request signed as `sign` says. On success
/// `b` holds the session id, the channel's signing key (derived from this
/// authentication's key and `b`'s preauth hash) and the session's encryption
/// keys, and the final response has been checked with the channel key.
/// Returns the failing status otherwise.
pub(crate) fn bind(a: &Client, b: &mut Client, user: &str, sign: Sign<'_>) -> Result<Resp, u32> {
    bind_as(a, b, user, PASSWORD, sign)
}

fn bind_with_password(a: &Client, b: &mut Client, user: &str, password: &str) -> Result<Resp, u32> {
    let s = session_signer(a);
    bind_as(a, b, user, password, Sign::With(&s))
}

fn bind_as(a: &Client, b: &mut Client, user: &str, password: &str, sign: Sign<'_>) -> Result<Resp, u32> {
    let mut gss = Gss::new(user, password);
    let mut input: Option<Vec<u8>> = None;
    let mut preauth = b.preauth.clone();
    b.session_id = a.session_id;
    for _ in 0..4 {
        let (_, token) = gss.step(input.as_deref());
        let mut body = Client::session_setup_body(&token, 1);
        body[2] = SESSION_FLAG_BINDING;
        let mut msg = b.build(SESSION_SETUP, 1, &body);
        if let Sign::With(s) = &sign {
            s.sign(&mut msg).unwrap();
        }
        if let Some(h) = preauth.as_mut() {
            h.update(&msg);
        }
        let r = b.raw(msg).expect("binding ended the connection").pop().unwrap();
        assert_eq!(r.command, SESSION_SETUP);
        match r.status {
            MORE_PROCESSING_REQUIRED => {
                // Interim answers carry the session's signature (3.3.4.1.1).
                assert!(r.is_signed(), "interim binding response not signed");
                let mut raw = r.raw.clone();
                assert!(a.keys.as_ref().unwrap().signer.verify(&mut raw), "interim binding response not signed with the session key");
                if let Some(h) = preauth.as_mut() {
                    h.update(&r.raw);
                }
                input = Some(sec_buffer(&r));
            }
            SUCCESS => {
                let out = sec_buffer(&r);
                if !out.is_empty() {
                    gss.step(Some(&out));
                }
                let h = preauth.as_ref().map(|h| h.value());
                // The channel signs with its connection's algorithm.
                let channel = derive_client_keys(b.dialect, &gss.session_key(), h.as_ref(), None, b.signing_alg);
                let session = derive_client_keys(a.dialect, &a.session_key, a.session_preauth.as_ref(), a.cipher, a.signing_alg);
                assert!(r.is_signed(), "final binding response not signed");
                let mut raw = r.raw.clone();
                assert!(channel.signer.verify(&mut raw), "final binding response not signed with the channel key");
                b.keys = Some(ClientKeys { signer: channel.signer, sealer: session.sealer, opener: session.opener });
                b.session_key = a.session_key.clone();
                b.session_preauth = a.session_preauth;
                b.sign = true;
                b.encrypt = a.encrypt;
                b.tree_id = a.tree_id;
                return Ok(r);
            }
            st => {
                // A refusal of a request signed with the session key is signed
                // with it (USER_SESSION_DELETED only says SIGNED: 3.2.5.1.3).
                if matches!(sign, Sign::With(_)) && r.is_signed() && st != USER_SESSION_DELETED {
                    let mut raw = r.raw.clone();
                    assert!(a.keys.as_ref().unwrap().signer.verify(&mut raw), "binding refusal signed with a wrong key");
                }
                return Err(st);
            }
        }
    }
    panic!("binding did not finish in 4 rounds");
}

pub(crate) fn session_signer(a: &Client) -> Signer {
    let k = derive_client_keys(a.dialect, &a.session_key, a.session_preauth.as_ref(), None, a.signing_alg);
    k.signer
}

/// Binds the negotiated connection of `b` (TCP or SMB Direct) to `a`'s
/// session, signed with the session's key; panics if refused.
pub(crate) fn bind_to(a: &Client, b: &mut Client) {
    let s = session_signer(a);
    bind(a, b, USER, Sign::With(&s)).expect("binding failed");
}

/// A second channel of `a`'s session.
fn bound(ts: &TestServer, a: &Client) -> Client {
    let mut b = Client::new(ts);
    negotiate_as(&mut b, vec![a.dialect], None);
    let s = session_signer(a);
    bind(a, &mut b, USER, Sign::With(&s)).expect("binding failed");
    b
}

#[test]
fn second_channel_signs_with_its_own_key_and_reaches_the_same_opens() {
    for dialect in [DIALECT_311, DIALECT_300] {
        let ts = server_with(|cfg| required(cfg, true, false));
        let mut a = Client::new(&ts);
        let r = negotiate_as(&mut a, vec![dialect], None);
        assert_ne!(le32(&r.raw, 64 + 24) & CAP_MULTI_CHANNEL, 0, "{dialect:#x}: SMB2_GLOBAL_CAP_MULTI_CHANNEL");
        a.session_setup();
        assert_eq!(a.tree_connect("share").status, SUCCESS);
        let fid = a.open_file("both.txt");
        assert_eq!(a.write(&fid, 0, b"from channel one").status, SUCCESS);

        let mut b = bound(&ts, &a);
        assert_eq!(b.session_id, a.session_id);
        // Channel two reads what channel one wrote, through the same open and
        // tree, signed with its own key (call checks every response's signature).
        assert_eq!(b.read(&fid, 0, 16, 1).read_data(), b"from channel one", "{dialect:#x}");
        assert_eq!(b.write(&fid, 0, b"FROM CHANNEL TWO").status, SUCCESS);
        assert_eq!(a.read(&fid, 0, 16, 1).read_data(), b"FROM CHANNEL TWO");
        // A tree connected on channel two is the session's too.
        let t2 = b.tree_connect("share");
        assert_eq!(t2.status, SUCCESS);
        let t1 = a.tree_id;
        a.tree_id = t2.tree_id;
        let fid2 = a.open_file("second.txt");
        a.tree_id = t1;
        assert_eq!(b.close(&fid2).status, SUCCESS);

        // The channel key is not the session key: a request on channel two
        // signed with the session's key is refused, and so is one on channel
        // one signed with channel two's key.
        let ch_key = b.keys.take().unwrap();
        let sess_key = session_signer(&a);
        assert!(!same_key(&sess_key, &ch_key.signer), "{dialect:#x}: channel key equals session key");
        let mut msg = b.build(READ, 1, &read_body(&fid, 0, 4));
        sess_key.sign(&mut msg).unwrap();
        assert_eq!(b.raw(msg).unwrap()[0].status, ACCESS_DENIED, "{dialect:#x}: session key accepted on channel two");
        let mut msg = a.build(READ, 1, &read_body(&fid, 0, 4));
        ch_key.signer.sign(&mut msg).unwrap();
        assert_eq!(a.raw(msg).unwrap()[0].status, ACCESS_DENIED, "{dialect:#x}: channel two's key accepted on channel one");
        b.keys = Some(ch_key);
        assert_eq!(a.close(&fid).status, SUCCESS);
    }
}

/// Whether two signers have the same key (they sign a message alike).
fn same_key(x: &Signer, y: &Signer) -> bool {
    let mut m1 = build_header(ECHO, 1, 1, 0, 7, 0, 1, &[4, 0, 0, 0]);
    let mut m2 = m1.clone();
    x.sign(&mut m1).unwrap();
    y.sign(&mut m2).unwrap();
    m1 == m2
}

#[test]
fn encrypted_session_is_used_encrypted_on_a_bound_channel() {
    let ts = server_with(|cfg| required(cfg, false, true));
    let mut a = connected(&ts);
    assert!(a.encrypt);
    let fid = a.open_file("sealed.txt");
    assert_eq!(a.write(&fid, 0, b"secret").status, SUCCESS);
    let mut b = bound(&ts, &a);
    assert!(b.encrypt);
    let r = b.read(&fid, 0, 6, 1);
    assert!(r.encrypted);
    assert_eq!(r.read_data(), b"secret");
}

#[test]
fn an_encrypting_session_binds_only_with_its_cipher_but_any_signing_algorithm() {
    let ts = server_with(|cfg| required(cfg, false, true));
    let mut a = Client::new(&ts);
    a.negotiate_with(&NegOpts { ciphers: vec![2], signing: vec![1], ..NegOpts::default() }); // AES-128-GCM, AES-CMAC
    a.session_setup();
    let key = session_signer(&a);
    // Same dialect, AES-128-CCM: refused.
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { ciphers: vec![1], signing: vec![1], ..NegOpts::default() });
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), INVALID_PARAMETER, "other cipher");
    // Same cipher, HMAC-SHA256 signing negotiated: bound, and the channel
    // signs with its connection's algorithm (HMAC-SHA256, checked in
    // bind()), as smbtorture's bind_negative_smb3signCtoH expects.
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { ciphers: vec![2], signing: vec![0], ..NegOpts::default() });
    bind(&a, &mut c, USER, Sign::With(&key)).expect("binding with another signing algorithm");
}

#[test]
fn gmac_signing_must_be_on_both_sides_of_a_binding() {
    let ts = server();
    for (sess, conn, want) in [(2u16, 1u16, 0xC000_042Au32), (1, 2, NOT_SUPPORTED)] {
        let mut a = Client::new(&ts);
        a.negotiate_with(&NegOpts { signing: vec![sess], ..NegOpts::default() });
        a.session_setup();
        let mut c = Client::new(&ts);
        c.negotiate_with(&NegOpts { signing: vec![conn], ..NegOpts::default() });
        assert_eq!(bind(&a, &mut c, USER, Sign::With(&session_signer(&a))).unwrap_err(), want, "session {sess}, connection {conn}");
    }
    // The GMAC checks come before the dialect and 2.x ones (Windows and
    // Samba; smbtorture's bind_negative_smb3signGtoH2X / GtoC30 / C30toG).
    let mut g = Client::new(&ts);
    g.negotiate_with(&NegOpts { signing: vec![2], ..NegOpts::default() });
    g.session_setup();
    for (dialect, want) in [(DIALECT_210, 0xC000_042Au32), (DIALECT_300, 0xC000_042A)] {
        let mut c = Client::new(&ts);
        negotiate_as(&mut c, vec![dialect], None);
        assert_eq!(bind(&g, &mut c, USER, Sign::With(&session_signer(&g))).unwrap_err(), want, "GMAC session over {dialect:#x}");
    }
    let mut a30 = Client::new(&ts);
    negotiate_as(&mut a30, vec![DIALECT_300], None);
    a30.session_setup();
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { signing: vec![2], ..NegOpts::default() });
    assert_eq!(bind(&a30, &mut c, USER, Sign::With(&session_signer(&a30))).unwrap_err(), NOT_SUPPORTED, "3.0 session over GMAC");
    // GMAC on both: bound.
    let mut a = Client::new(&ts);
    a.negotiate_with(&NegOpts { signing: vec![2], ..NegOpts::default() });
    a.session_setup();
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { signing: vec![2], ..NegOpts::default() });
    bind(&a, &mut c, USER, Sign::With(&session_signer(&a))).expect("GMAC to GMAC");
}

#[test]
fn a_channel_that_drops_leaves_the_session_to_the_others() {
    let ts = server();
    let mut a = connected(&ts);
    let sid = a.session_id;
    let fid = a.open_file("stays.txt");
    assert_eq!(a.write(&fid, 0, b"still here").status, SUCCESS);
    let mut b = bound(&ts, &a);
    // Channel one goes away (its connection ends).
    drop(a);
    assert!(ts.server.session(sid).is_some(), "session ended with one of its two channels");
    assert_eq!(b.read(&fid, 0, 10, 1).read_data(), b"still here");
    // The last channel going away ends the session and closes its opens.
    drop(b);
    assert!(ts.server.session(sid).is_none(), "session outlived its last channel");
    assert!(ts.server.no_open_state(), "opens of the ended session still in the shared state");
}

#[test]
fn logoff_on_one_channel_ends_the_session_on_all() {
    let ts = server();
    let mut a = connected(&ts);
    let fid = a.open_file("x.txt");
    let mut b = bound(&ts, &a);
    assert_eq!(b.logoff().status, SUCCESS);
    let msg = a.build(READ, 1, &read_body(&fid, 0, 1));
    let r = a.send(msg).unwrap();
    assert_eq!(r[0].status, USER_SESSION_DELETED, "channel one still usable after LOGOFF on channel two");
}

#[test]
fn bindings_that_must_be_refused() {
    let ts = server();
    let a = connected(&ts);
    let key = session_signer(&a);

    // Another client (another ClientGuid) cannot bind to this client's session.
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_311], Some([0x77; 16]));
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), USER_SESSION_DELETED, "other ClientGuid");

    // Another dialect than the session's.
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_302], None);
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), INVALID_PARAMETER, "other dialect");

    // Unsigned, or signed with a wrong key.
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    assert_eq!(bind(&a, &mut c, USER, Sign::No).unwrap_err(), INVALID_PARAMETER, "unsigned");
    let wrong = Signer::new(SigningAlgorithm::AesCmac, &[9; 16]).unwrap();
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&wrong)).unwrap_err(), ACCESS_DENIED, "bad signature");

    // A 2.1 session cannot be bound to from a 3.x connection (another
    // dialect), and the refusal is signed with the session's HMAC key.
    let mut a21 = Client::new(&ts);
    negotiate_as(&mut a21, vec![DIALECT_210], None);
    a21.session_setup();
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    assert_eq!(bind(&a21, &mut c, USER, Sign::With(&session_signer(&a21))).unwrap_err(), INVALID_PARAMETER, "2.1 session");

    // 2.1: no binding at all.
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_210], None);
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), REQUEST_NOT_ACCEPTED, "2.1 connection");

    // A session that does not exist.
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    let mut ghost = Client::new(&ts);
    ghost.session_id = 0x1234_5678;
    ghost.keys = a.keys.as_ref().map(|_| derive_client_keys(a.dialect, &a.session_key, a.session_preauth.as_ref(), None, a.signing_alg));
    ghost.signing_alg = a.signing_alg;
    ghost.session_key = a.session_key.clone();
    assert_eq!(bind(&ghost, &mut c, USER, Sign::With(&key)).unwrap_err(), USER_SESSION_DELETED, "no such session");

    // A connection bound already: the request is checked with that
    // channel's key (MS-SMB2 3.3.5.2.4), which the session's signature does
    // not match: ACCESS_DENIED as Samba answers, signed with the session's
    // key the request carried (checked in bind()).
    let mut b = bound(&ts, &a);
    let mut again = Client::new(&ts);
    again.dialect = b.dialect;
    std::mem::swap(&mut again.conn, &mut b.conn);
    std::mem::swap(&mut again.sink, &mut b.sink);
    again.next_mid = b.next_mid;
    again.preauth = b.preauth.clone();
    assert_eq!(bind(&a, &mut again, USER, Sign::With(&key)).unwrap_err(), ACCESS_DENIED, "channel bound twice");

    // Another user's credentials on a good signature: refused at the end,
    // and the session goes on.
    let ts2 = server_with(|cfg| cfg.users.push(("bob".into(), PASSWORD.into())));
    let a2 = connected(&ts2);
    let mut c = Client::new(&ts2);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    assert_eq!(bind(&a2, &mut c, "bob", Sign::With(&session_signer(&a2))).unwrap_err(), ACCESS_DENIED, "other user");
    assert!(ts2.server.session(a2.session_id).is_some_and(|s| s.is_valid()), "a failed binding ended the session");
    // The right user then binds on the same connection.
    bind(&a2, &mut c, USER, Sign::With(&session_signer(&a2))).expect("binding after a refused one");
    // A wrong password: the authentication's own failure.
    let mut c = Client::new(&ts2);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    assert_eq!(bind_with_password(&a2, &mut c, USER, "wrong").unwrap_err(), 0xC000_006D, "bad password: LOGON_FAILURE");
    assert!(ts2.server.session(a2.session_id).is_some_and(|s| s.is_valid()), "a failed binding ended the session");

    // `server multi channel support = no`: not offered, and refused.
    let ts3 = server_with(|cfg| cfg.multi_channel = false);
    let mut a3 = Client::new(&ts3);
    let r = a3.negotiate();
    assert_eq!(le32(&r.raw, 64 + 24) & CAP_MULTI_CHANNEL, 0, "multichannel offered while off");
    a3.session_setup();
    let mut c = Client::new(&ts3);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    assert_eq!(bind(&a3, &mut c, USER, Sign::With(&session_signer(&a3))).unwrap_err(), REQUEST_NOT_ACCEPTED, "multichannel off");
}

#[test]
fn guest_session_cannot_be_bound() {
    let ts = server_with(|c| c.map_to_guest = true);
    let mut a = Client::new(&ts);
    a.negotiate();
    let mut gss = Gss::new("nosuchuser", "whatever");
    let mut input: Option<Vec<u8>> = None;
    loop {
        let (_, token) = gss.step(input.as_deref());
        let msg = a.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
        let r = a.raw(msg).unwrap().pop().unwrap();
        a.session_id = r.session_id;
        if r.status != MORE_PROCESSING_REQUIRED {
            assert_eq!(r.status, SUCCESS);
            assert_eq!(le16(&r.raw, 66) & 1, 1, "guest");
            break;
        }
        input = Some(sec_buffer(&r));
    }
    let mut c = Client::new(&ts);
    c.negotiate();
    // Whatever key the client signs with: a guest session has none.
    let any = Signer::new(SigningAlgorithm::AesCmac, &[1; 16]).unwrap();
    assert_eq!(bind(&a, &mut c, "nosuchuser", Sign::With(&any)).unwrap_err(), NOT_SUPPORTED);
}

/// Sets the ChannelSequence (the first two bytes of the Status field of a
/// 3.x request) and, if `replay`, SMB2_FLAGS_REPLAY_OPERATION.
fn with_sequence(mut msg: Vec<u8>, seq: u16, replay: bool) -> Vec<u8> {
    msg[8..10].copy_from_slice(&seq.to_le_bytes());
    if replay {
        set_flags(&mut msg, 0x2000_0000);
    }
    msg
}

#[test]
fn stale_channel_sequence_refuses_modifying_requests() {
    let ts = server();
    let mut a = connected(&ts);
    let fid = a.open_file("seq.txt");
    let mut b = bound(&ts, &a);
    // The client moved to channel two and bumped the sequence: a WRITE with it.
    let msg = with_sequence(b.build(WRITE, 1, &write_body(&fid, 0, b"new")), 1, false);
    assert_eq!(b.send(msg).unwrap()[0].status, SUCCESS);
    // A WRITE still carrying the old sequence is stale: refused. A READ is not
    // modifying and goes on.
    let msg = with_sequence(a.build(WRITE, 1, &write_body(&fid, 0, b"old")), 0, false);
    assert_eq!(a.send(msg).unwrap()[0].status, FILE_NOT_AVAILABLE);
    let msg = with_sequence(a.build(READ, 1, &read_body(&fid, 0, 3)), 0, false);
    let r = a.send(msg).unwrap();
    assert_eq!(r[0].status, SUCCESS);
    assert_eq!(r[0].read_data(), b"new");
    // A replay with the current sequence is fine (nothing older outstanding);
    // a newer sequence is adopted, wrapping around 16 bits.
    let msg = with_sequence(b.build(WRITE, 1, &write_body(&fid, 0, b"rep")), 1, true);
    assert_eq!(b.send(msg).unwrap()[0].status, SUCCESS);
    let msg = with_sequence(b.build(WRITE, 1, &write_body(&fid, 0, b"wr1")), 0x8000, false);
    assert_eq!(b.send(msg).unwrap()[0].status, SUCCESS);
    let msg = with_sequence(b.build(WRITE, 1, &write_body(&fid, 0, b"wr2")), 2, false);
    assert_eq!(b.send(msg).unwrap()[0].status, FILE_NOT_AVAILABLE, "0x0002 after 0x8000: 16-bit difference 0x8002 is past 0x7FFF, so older");
    let msg = with_sequence(b.build(WRITE, 1, &write_body(&fid, 0, b"wr3")), 0x8001, false);
    assert_eq!(b.send(msg).unwrap()[0].status, SUCCESS);
}

const IOCTL: u16 = 11;
const FSCTL_QUERY_NETWORK_INTERFACE_INFO: u32 = 0x0014_01FC;

fn query_interfaces(c: &mut Client) -> Resp {
    let mut b = Vec::new();
    b.u16_(57).u16_(0).u32_(FSCTL_QUERY_NETWORK_INTERFACE_INFO).bytes(&[0xFF; 16]);
    b.u32_(0).u32_(0).u32_(0).u32_(0).u32_(0).u32_(65536).u32_(1).u32_(0).u8_(0);
    c.call(IOCTL, 1, &b)
}

/// (ifindex, capability, link speed, address) of each NETWORK_INTERFACE_INFO.
fn parse_interfaces(r: &Resp) -> Vec<(u32, u32, u64, std::net::IpAddr)> {
    assert_eq!(r.status, SUCCESS, "FSCTL_QUERY_NETWORK_INTERFACE_INFO {:#x}", r.status);
    let off = le32(r.body(), 32) as usize;
    let len = le32(r.body(), 36) as usize;
    let out = &r.raw[off..off + len];
    let mut v = Vec::new();
    let mut at = 0;
    loop {
        let e = &out[at..];
        let addr: std::net::IpAddr = match le16(e, 24) {
            0x0002 => std::net::Ipv4Addr::new(e[28], e[29], e[30], e[31]).into(),
            0x0017 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&e[32..48]).unwrap()).into(),
            f => panic!("address family {f:#x}"),
        };
        v.push((le32(e, 4), le32(e, 8), le64(e, 16), addr));
        let next = le32(e, 0) as usize;
        if next == 0 {
            break;
        }
        at += next;
    }
    v
}

/// The host's (interface name, address) pairs of up interfaces, from `ip -o addr`.
fn host_addresses() -> Vec<(String, std::net::IpAddr)> {
    let out = std::process::Command::new("ip").args(["-o", "addr", "show", "up"]).output().expect("ip");
    let mut v = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let Some(pos) = f.iter().position(|x| *x == "inet" || *x == "inet6") {
            if let Some(a) = f.get(pos + 1).and_then(|s| s.split('/').next()).and_then(|s| s.parse().ok()) {
                v.push((f[1].trim_end_matches(':').to_string(), a));
            }
        }
    }
    v
}

fn sysfs(name: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{file}")).ok().map(|s| s.trim().to_string())
}

#[test]
fn interface_info_lists_ipv4_and_ipv6_with_speed_and_rss_as_sysfs_says() {
    let ts = server();
    let mut c = connected(&ts);
    let got = parse_interfaces(&query_interfaces(&mut c));
    let mut want: Vec<(String, std::net::IpAddr)> = host_addresses().into_iter().filter(|(n, _)| n != "lo").collect();
    if want.is_empty() {
        want = host_addresses();
    }
    let mut got_addrs: Vec<std::net::IpAddr> = got.iter().map(|e| e.3).collect();
    let mut want_addrs: Vec<std::net::IpAddr> = want.iter().map(|e| e.1).collect();
    got_addrs.sort();
    want_addrs.sort();
    assert_eq!(got_addrs, want_addrs, "addresses listed vs `ip addr`");
    for (name, addr) in &want {
        let e = got.iter().find(|e| e.3 == *addr).unwrap();
        let index: u32 = sysfs(name, "ifindex").unwrap().parse().unwrap();
        assert_eq!(e.0, index, "{name}: IfIndex");
        let speed = sysfs(name, "speed").and_then(|s| s.parse::<i64>().ok()).filter(|s| *s > 0).map_or(1_000_000_000, |s| s as u64 * 1_000_000);
        assert_eq!(e.2, speed, "{name}: LinkSpeed");
        let rx = std::fs::read_dir(format!("/sys/class/net/{name}/queues")).unwrap().flatten().filter(|d| d.file_name().to_string_lossy().starts_with("rx-")).count();
        assert_eq!(e.1 & 1 != 0, rx > 1, "{name}: RSS_CAPABLE with {rx} receive queues");
        assert_eq!(e.1 & 2, 0, "{name}: RDMA_CAPABLE without SMB Direct served");
    }
}

#[test]
fn interfaces_setting_restricts_the_list_and_multichannel_off_lists_nothing() {
    let ts = server_with(|cfg| cfg.interfaces = vec!["lo".into()]);
    let mut c = connected(&ts);
    let mut got: Vec<std::net::IpAddr> = parse_interfaces(&query_interfaces(&mut c)).into_iter().map(|e| e.3).collect();
    got.sort();
    let mut want: Vec<std::net::IpAddr> = host_addresses().into_iter().filter(|(n, _)| n == "lo").map(|e| e.1).collect();
    want.sort();
    assert_eq!(got, want, "interfaces = lo");

    let ts = server_with(|cfg| cfg.multi_channel = false);
    let mut c = connected(&ts);
    assert_eq!(query_interfaces(&mut c).status, NOT_SUPPORTED);
}

#[test]
fn a_session_has_at_most_32_channels() {
    let ts = server();
    let a = connected(&ts);
    let key = session_signer(&a);
    let mut channels = Vec::new();
    for _ in 1..32 {
        channels.push(bound(&ts, &a));
    }
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), 0xC000_009A, "33rd channel: INSUFFICIENT_RESOURCES");
    // One goes away: there is room again.
    channels.pop();
    bind(&a, &mut c, USER, Sign::With(&key)).expect("binding after a channel left");
}

#[test]
fn signed_request_for_a_session_not_bound_here_is_deleted_and_says_signed() {
    let ts = server();
    let a = connected(&ts);
    let mut c = Client::new(&ts);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    // The session exists (on another connection of this client) but this
    // connection is no channel of it.
    c.session_id = a.session_id;
    c.tree_id = a.tree_id;
    let mut msg = c.build(CREATE, 1, &create_body("x", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0));
    session_signer(&a).sign(&mut msg).unwrap();
    let r = c.raw(msg).unwrap().pop().unwrap();
    assert_eq!(r.status, USER_SESSION_DELETED);
    assert!(r.is_signed(), "SMB2_FLAGS_SIGNED missing: a client that requires signing would take ACCESS_DENIED");
    // Unsigned, the answer is unsigned.
    let msg = c.build(CREATE, 1, &create_body("x", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0));
    let r = c.raw(msg).unwrap().pop().unwrap();
    assert_eq!(r.status, USER_SESSION_DELETED);
    assert!(!r.is_signed());
}

#[test]
fn async_final_response_on_a_bound_channel_is_signed_with_its_key() {
    let ts = server_with(|cfg| required(cfg, true, false));
    let mut a = connected(&ts);
    let dir = a.create("", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let mut b = bound(&ts, &a);
    // CHANGE_NOTIFY on channel two; the change comes from channel one.
    let r = b.call(CHANGE_NOTIFY, 1, &notify_body(&dir, 0x1, 4096));
    assert_eq!(r.status, PENDING);
    assert_eq!(a.create("n.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE).status, SUCCESS);
    let fin = b.next_async(std::time::Duration::from_secs(5)).expect("no final CHANGE_NOTIFY response");
    assert_eq!((fin.command, fin.status), (CHANGE_NOTIFY, SUCCESS));
    assert!(fin.is_signed());
    // check_resp verifies with channel two's key (not the session's).
    b.check_resp(&fin);
}
