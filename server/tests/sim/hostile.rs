//! Hostile clients (issue 7): the request classes published SMB server CVEs
//! came from. Each gets an error status or a clean disconnect, never a panic,
//! never a byte taken from the wrong place, and other clients carry on.

use crate::harness::*;

const NETWORK_NAME_DELETED: u32 = 0xC000_00C9;
const LOGON_FAILURE: u32 = 0xC000_006D;
const NOT_FOUND: u32 = 0xC000_0034;
const FILE_DIRECTORY_INFORMATION: u8 = 1;
const FSCTL_SET_SPARSE: u32 = 0x0009_00C4;

fn patch16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn patch32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Builds and sends one request as is.
fn raw1(c: &mut Client, cmd: u16, body: &[u8]) -> Result<Vec<Resp>, smbdirect_server::conn::Disconnect> {
    let m = c.build(cmd, 1, body);
    c.raw(m)
}

fn write_with(fid: &[u8; 16], data_off: u16, len: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(49).u16_(data_off).u32_(len).u64_(0).bytes(fid).u32_(0).u32_(0).u16_(0).u16_(0).u32_(0).bytes(data);
    b
}

fn query_dir_body(fid: &[u8; 16], pattern: &str) -> Vec<u8> {
    let p = utf16(pattern);
    let mut b = Vec::new();
    b.u16_(33).u8_(FILE_DIRECTORY_INFORMATION).u8_(0).u32_(0).bytes(fid).u16_(64 + 32).u16_(p.len() as u16).u32_(65536).bytes(&p);
    if p.is_empty() {
        b.u8_(0);
    }
    b
}

fn query_info_body(fid: &[u8; 16], input: &[u8]) -> Vec<u8> {
    // FileFullEaInformation, which is the class that takes an input buffer.
    let mut b = Vec::new();
    b.u16_(41).u8_(1).u8_(15).u32_(4096).u16_(64 + 40).u16_(0).u32_(input.len() as u32).u32_(0).u32_(0).bytes(fid).bytes(input);
    b
}

fn set_info_body(fid: &[u8; 16], buf: &[u8]) -> Vec<u8> {
    // FileBasicInformation.
    let mut b = Vec::new();
    b.u16_(33).u8_(1).u8_(4).u32_(buf.len() as u32).u16_(64 + 32).u16_(0).u32_(0).bytes(fid).bytes(buf);
    b
}

fn ioctl_body(fid: &[u8; 16], ctl: u32, input: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(57).u16_(0).u32_(ctl).bytes(fid).u32_(64 + 56).u32_(input.len() as u32).u32_(0).u32_(0).u32_(0).u32_(0).u32_(1).u32_(0).bytes(input);
    b
}

/// WRITE whose DataOffset points back into the header or the fixed part is
/// refused like Samba does (INVALID_PARAMETER), and nothing is written; so is
/// one whose data runs past the message. The right offset still writes.
#[test]
fn write_data_offset_must_point_at_the_buffer() {
    let ts = server();
    let mut c = connected(&ts);
    let fid = c.open_file("w.txt");
    let data = [0xABu8; 16];
    for off in [0u16, 0x40, 0x48, 0x6F] {
        let r = c.call(WRITE, 1, &write_with(&fid, off, 16, &data));
        assert_eq!(r.status, INVALID_PARAMETER, "DataOffset {off:#x}");
    }
    for (off, len) in [(0x70u16, 17u32), (0x71, 16), (0xFFFF, 1), (0x70, 0x1_0000)] {
        let r = c.call(WRITE, 1, &write_with(&fid, off, len, &data));
        assert_eq!(r.status, INVALID_PARAMETER, "DataOffset {off:#x} Length {len}");
    }
    assert_eq!(std::fs::read(ts.share_path().join("w.txt")).unwrap(), b"");
    assert_eq!(c.call(WRITE, 1, &write_with(&fid, 0x70, 16, &data)).status, SUCCESS);
    assert_eq!(std::fs::read(ts.share_path().join("w.txt")).unwrap(), data);
}

/// Every offset field of every command: pointing into the header or the
/// fixed part, or running past the message, is INVALID_PARAMETER.
#[test]
fn every_offset_field_is_checked_against_the_fixed_part() {
    let ts = server();
    let mut c = connected(&ts);
    c.sign = true; // an unsigned 3.1.1 TREE_CONNECT would end the connection
    let fid = c.open_file("f.txt");
    let dir = c.create("", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    // (command, body, offset field position in the body, its width, offset
    // into the fixed part, offset past the end)
    struct Case {
        what: &'static str,
        cmd: u16,
        body: Vec<u8>,
        at: usize,
        wide: bool,
    }
    let ctx_body = {
        let mut b = create_body("g.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0);
        // One 24-byte context after the 10-byte name, 8-aligned.
        b.truncate(56 + 10);
        b.bytes(&[0; 6]);
        let at = 64 + b.len();
        b.u32_(0).u16_(16).u16_(4).u16_(0).u16_(0).u32_(0).bytes(b"MxAc").bytes(&[0; 4]);
        patch32(&mut b, 48, at as u32);
        patch32(&mut b, 52, 24);
        b
    };
    let mut read_ci = read_body(&fid, 0, 1);
    read_ci.pop();
    read_ci.extend_from_slice(&[0; 16]);
    patch16(&mut read_ci, 44, 64 + 48);
    patch16(&mut read_ci, 46, 16);
    let mut write_ci = write_body(&fid, 0, b"abcd");
    write_ci.extend_from_slice(&[0; 16]);
    patch16(&mut write_ci, 40, 64 + 48 + 4);
    patch16(&mut write_ci, 42, 16);
    let cases = vec![
        Case { what: "CREATE name", cmd: CREATE, body: create_body("g.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0), at: 44, wide: false },
        Case { what: "CREATE contexts", cmd: CREATE, body: ctx_body, at: 48, wide: true },
        Case { what: "TREE_CONNECT path", cmd: TREE_CONNECT, body: tree_body("share"), at: 4, wide: false },
        Case { what: "QUERY_DIRECTORY name", cmd: 14, body: query_dir_body(&dir, "*"), at: 24, wide: false },
        Case { what: "QUERY_INFO input", cmd: 16, body: query_info_body(&fid, &[0; 12]), at: 8, wide: false },
        Case { what: "SET_INFO buffer", cmd: 17, body: set_info_body(&fid, &[0; 40]), at: 8, wide: false },
        Case { what: "IOCTL input", cmd: 11, body: ioctl_body(&fid, FSCTL_SET_SPARSE, &[1]), at: 24, wide: true },
        Case { what: "READ channel info", cmd: READ, body: read_ci, at: 44, wide: false },
        Case { what: "WRITE data", cmd: WRITE, body: write_body(&fid, 0, b"abcd"), at: 2, wide: false },
        Case { what: "WRITE channel info", cmd: WRITE, body: write_ci, at: 40, wide: false },
    ];
    for case in cases {
        // The body as built is accepted (a sanity check of the case itself).
        let r = c.call(case.cmd, 1, &case.body);
        assert!(r.status != INVALID_PARAMETER, "{}: the well-formed request got INVALID_PARAMETER", case.what);
        let fixed_end = 64 + (le16(&case.body, 0) & !1) as u32;
        let past = 64 + case.body.len() as u32 + 1;
        for off in [0, 0x40, fixed_end - 1, past] {
            let mut b = case.body.clone();
            if case.wide {
                patch32(&mut b, case.at, off);
            } else {
                patch16(&mut b, case.at, off as u16);
            }
            let r = c.call(case.cmd, 1, &b);
            assert_eq!(r.status, INVALID_PARAMETER, "{} at offset {off:#x}", case.what);
        }
    }
    // IOCTL's OutputOffset/OutputCount in a request are checked too.
    let mut b = ioctl_body(&fid, FSCTL_SET_SPARSE, &[1]);
    patch32(&mut b, 36, 0x40);
    patch32(&mut b, 40, 8);
    assert_eq!(c.call(11, 1, &b).status, INVALID_PARAMETER, "IOCTL output into the header");
    // Nothing above created g.txt or wrote to f.txt.
    assert!(!ts.share_path().join("g.txt").exists() || std::fs::read(ts.share_path().join("g.txt")).unwrap().is_empty());
    assert_eq!(std::fs::read(ts.share_path().join("f.txt")).unwrap(), b"abcd");
}

/// SESSION_SETUP's security buffer and NEGOTIATE's context offset.
#[test]
fn session_setup_and_negotiate_offsets() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate();
    let (_, token) = Gss::new(USER, PASSWORD).step(None);
    for off in [0x40u16, 0x57] {
        let mut b = Client::session_setup_body(&token, 1);
        patch16(&mut b, 12, off);
        let v = raw1(&mut c, SESSION_SETUP, &b).unwrap();
        assert_eq!(v[0].status, INVALID_PARAMETER, "security buffer at {off:#x}");
    }
    c.session_setup();

    // NEGOTIATE 3.1.1 whose first context overlaps the dialect list, or runs
    // past the end of the message.
    let opts = NegOpts::default();
    let good = Client::negotiate_body(&opts);
    let ctx_off_at = 28;
    let dialects_end = 64 + 36 + 2 * opts.dialects.len() as u32;
    let len = 64 + good.len() as u32;
    for off in [0x40, 64 + 36, dialects_end - 2, len - 4, len + 8] {
        let mut b = good.clone();
        patch32(&mut b, ctx_off_at, off);
        let mut n = Client::new(&ts);
        let m = n.build(NEGOTIATE, 1, &b);
        match n.raw(m) {
            Ok(v) => assert_ne!(v[0].status, SUCCESS, "context offset {off:#x} accepted"),
            Err(_) => {}
        }
    }
    // The well-formed one still negotiates.
    let mut n = Client::new(&ts);
    let m = n.build(NEGOTIATE, 1, &good);
    assert_eq!(n.raw(m).unwrap()[0].status, SUCCESS);
}

/// Create contexts whose name or data run past their context, overlap each
/// other, or whose Next runs past the buffer.
#[test]
fn create_context_bounds() {
    let ts = server();
    let mut c = connected(&ts);
    // name "h.txt" (10 bytes) then the contexts at 64 + 56 + 16.
    let with_contexts = |ctxs: &[u8]| {
        let mut b = create_body("h.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0);
        b.truncate(56 + 10);
        b.bytes(&[0; 6]);
        let at = (64 + b.len()) as u32;
        patch32(&mut b, 48, at);
        patch32(&mut b, 52, ctxs.len() as u32);
        b.bytes(ctxs);
        b
    };
    let ctx = |next: u32, name_off: u16, name_len: u16, data_off: u16, data_len: u32, tail: &[u8]| {
        let mut v = Vec::new();
        v.u32_(next).u16_(name_off).u16_(name_len).u16_(0).u16_(data_off).u32_(data_len).bytes(tail);
        v
    };
    // MxAc with no data is fine.
    let ok = ctx(0, 16, 4, 0, 0, b"MxAc\0\0\0\0");
    let r = c.call(CREATE, 1, &with_contexts(&ok));
    assert_eq!(r.status, SUCCESS);
    c.close(&r.file_id());
    let mut two = ctx(24, 16, 4, 0, 0, b"MxAc\0\0\0\0");
    two.extend(ctx(0, 16, 4, 24, 8, b"AlSi\0\0\0\0\0\0\0\0\0\0\0\0"));
    let r = c.call(CREATE, 1, &with_contexts(&two));
    assert_eq!(r.status, SUCCESS, "two good contexts");
    c.close(&r.file_id());
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("name inside the context header", ctx(0, 8, 4, 0, 0, b"MxAc\0\0\0\0")),
        ("name past the end", ctx(0, 16, 12, 0, 0, b"MxAc\0\0\0\0")),
        ("data inside the header", ctx(0, 16, 4, 4, 8, b"AlSi\0\0\0\0\0\0\0\0")),
        ("data over the name", ctx(0, 16, 4, 16, 8, b"AlSi\0\0\0\0\0\0\0\0")),
        ("data past the end", ctx(0, 16, 4, 24, 64, b"AlSi\0\0\0\0\0\0\0\0")),
        ("Next past the end", ctx(64, 16, 4, 0, 0, b"MxAc\0\0\0\0")),
        ("Next into the header", ctx(8, 16, 4, 0, 0, b"MxAc\0\0\0\0")),
        ("name shorter than 4", ctx(0, 16, 3, 0, 0, b"MxA\0\0\0\0\0")),
        ("data into the next context", {
            let mut v = ctx(24, 16, 4, 24, 16, b"AlSi\0\0\0\0");
            v.extend(ctx(0, 16, 4, 0, 0, b"MxAc\0\0\0\0"));
            v
        }),
    ];
    for (what, ctxs) in bad {
        let r = c.call(CREATE, 1, &with_contexts(&ctxs));
        assert_eq!(r.status, INVALID_PARAMETER, "{what}");
    }
}

/// A compound whose NextCommand points past the message, or into the middle
/// of the next one, ends that connection before any of the chain is run,
/// and nothing else.
#[test]
fn next_command_past_the_message() {
    let ts = server();
    let mut other = connected(&ts);
    let ofid = other.open_file("o.txt");
    for extra in [8u32, 64, 4096] {
        let mut c = connected(&ts);
        let fid = c.open_file("n.txt");
        let mut w = c.build(WRITE, 1, &write_body(&fid, 0, b"never"));
        w.pad8();
        let next = w.len() as u32 + extra;
        patch32(&mut w, 20, next);
        let e = c.build(ECHO, 1, &[4, 0, 0, 0]);
        w.extend_from_slice(&e);
        assert!(c.conn.handle_message(w).is_err(), "NextCommand {next} accepted");
    }
    assert_eq!(std::fs::read(ts.share_path().join("n.txt")).unwrap(), b"");
    assert_eq!(other.write(&ofid, 0, b"still here").status, SUCCESS);
}

/// Related operations after TREE_DISCONNECT or LOGOFF in the same compound
/// find the tree or session gone.
#[test]
fn related_after_tree_disconnect_or_logoff() {
    let ts = server();
    let mut c = connected(&ts);
    let fid = c.open_file("r.txt");
    let td = c.build(TREE_DISCONNECT, 1, &[4, 0, 0, 0]);
    let mut cr = c.build(CREATE, 1, &create_body("r2.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0));
    let mut wr = c.build(WRITE, 1, &write_body(&fid, 0, b"after"));
    set_flags(&mut cr, F_RELATED);
    set_flags(&mut wr, F_RELATED);
    let v = c.send(chain(vec![td, cr, wr])).unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].status, SUCCESS);
    assert_eq!(v[1].status, NETWORK_NAME_DELETED, "CREATE after TREE_DISCONNECT");
    assert_ne!(v[2].status, SUCCESS, "WRITE after TREE_DISCONNECT");
    assert!(!ts.share_path().join("r2.txt").exists());
    assert_eq!(std::fs::read(ts.share_path().join("r.txt")).unwrap(), b"");

    let mut c = connected(&ts);
    let fid = c.open_file("l.txt");
    let lo = c.build(LOGOFF, 1, &[4, 0, 0, 0]);
    let mut tc = c.build(TREE_CONNECT, 1, &tree_body("share"));
    let mut wr = c.build(WRITE, 1, &write_body(&fid, 0, b"after"));
    let mut cl = c.build(CLOSE, 1, &close_body(&fid));
    for m in [&mut tc, &mut wr, &mut cl] {
        set_flags(m, F_RELATED);
    }
    let v = c.send(chain(vec![lo, tc, wr, cl])).unwrap();
    assert_eq!(v.len(), 4);
    assert_eq!(v[0].status, SUCCESS);
    assert_eq!(v[1].status, USER_SESSION_DELETED, "TREE_CONNECT after LOGOFF");
    // Related requests after a failed session lookup fail with
    // INVALID_PARAMETER (MS-SMB2 3.3.5.2.7.2, as Windows and Samba do).
    assert_eq!(v[2].status, INVALID_PARAMETER, "WRITE after LOGOFF");
    assert_eq!(v[3].status, INVALID_PARAMETER, "CLOSE after LOGOFF");
    assert_eq!(std::fs::read(ts.share_path().join("l.txt")).unwrap(), b"");
    // The same, unrelated (naming the old ids).
    let lo = c.build(LOGOFF, 1, &[4, 0, 0, 0]);
    let v = c.raw(lo).unwrap();
    assert_eq!(v[0].status, USER_SESSION_DELETED);
    // A new session on the same connection works.
    c.session_id = 0;
    c.keys = None;
    c.sign = false;
    c.session_setup();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
}

/// SESSION_SETUP inside a compound: first, related, or twice. The answers are
/// errors or the normal ones, never a panic, and a related request does not
/// ride on a half-made session.
#[test]
fn session_setup_in_a_compound() {
    let ts = server();
    // [ECHO, SESSION_SETUP]: an unrelated SESSION_SETUP later in a chain.
    let mut c = Client::new(&ts);
    c.negotiate();
    let (_, token) = Gss::new(USER, PASSWORD).step(None);
    let e = c.build(ECHO, 1, &[4, 0, 0, 0]);
    let s = c.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
    if let Ok(v) = c.raw(chain(vec![e, s])) {
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].status, SUCCESS);
        assert!(v[1].status == MORE_PROCESSING_REQUIRED || v[1].status >= 0xC000_0000, "{:#x}", v[1].status);
    }

    // [SESSION_SETUP leg 1, TREE_CONNECT related, CREATE related].
    let mut c = Client::new(&ts);
    c.negotiate();
    let (_, token) = Gss::new(USER, PASSWORD).step(None);
    let s = c.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
    let mut t = c.build(TREE_CONNECT, 1, &tree_body("share"));
    let mut cr = c.build(CREATE, 1, &create_body("ss.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0));
    set_flags(&mut t, F_RELATED);
    set_flags(&mut cr, F_RELATED);
    if let Ok(v) = c.raw(chain(vec![s, t, cr])) {
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].status, MORE_PROCESSING_REQUIRED);
        assert_ne!(v[1].status, SUCCESS, "TREE_CONNECT on a half-made session");
        assert_ne!(v[2].status, SUCCESS, "CREATE on a half-made session");
    }
    assert!(!ts.share_path().join("ss.txt").exists());

    // [SESSION_SETUP, SESSION_SETUP related]: the same first leg twice.
    let mut c = Client::new(&ts);
    c.negotiate();
    let (_, token) = Gss::new(USER, PASSWORD).step(None);
    let s1 = c.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
    let mut s2 = c.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
    set_flags(&mut s2, F_RELATED);
    if let Ok(v) = c.raw(chain(vec![s1, s2])) {
        assert_eq!(v.len(), 2);
        assert_ne!(v[1].status, SUCCESS);
    }
    // Whatever happened, a fresh logon on a fresh connection works.
    let mut d = connected(&ts);
    let f = d.open_file("fine.txt");
    assert_eq!(d.write(&f, 0, b"ok").status, SUCCESS);
}

/// A bare NTLMSSP NEGOTIATE (MS-NLMP 2.2.1.1) asking for Unicode and NTLMv2.
fn ntlm_negotiate() -> Vec<u8> {
    let mut m = b"NTLMSSP\0".to_vec();
    m.u32_(1).u32_(0xE208_8297).bytes(&[0; 16]);
    m
}

/// An AUTHENTICATE_MESSAGE with the given fields (each placed after the header).
fn ntlm_authenticate(ty: u32, nt: &[u8], user: &str, key: &[u8]) -> Vec<u8> {
    let user = utf16(user);
    let fields: [&[u8]; 6] = [&[], nt, &[], &user, &[], key];
    let mut m = b"NTLMSSP\0".to_vec();
    m.u32_(ty);
    let mut payload = Vec::new();
    for f in fields {
        m.u16_(f.len() as u16).u16_(f.len() as u16).u32_(64 + payload.len() as u32);
        payload.extend_from_slice(f);
    }
    m.u32_(0xE208_8215);
    assert_eq!(m.len(), 64);
    m.extend(payload);
    m
}

/// NTLMSSP fields with bad offsets and lengths, short NT responses and
/// unknown message types: an error status, and the connection can log on
/// afterwards.
#[test]
fn ntlmssp_fields_and_message_types() {
    let ts = server();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("short NtChallengeResponse: 8 bytes", ntlm_authenticate(3, &[1; 8], USER, &[0; 16])),
        ("short NtChallengeResponse: 15 bytes", ntlm_authenticate(3, &[1; 15], USER, &[0; 16])),
        ("short NtChallengeResponse: 16 bytes", ntlm_authenticate(3, &[1; 16], USER, &[0; 16])),
        ("short NtChallengeResponse: 16 + a short blob", ntlm_authenticate(3, &[1; 20], USER, &[0; 16])),
        ("unknown message type 7", ntlm_authenticate(7, &[1; 40], USER, &[0; 16])),
        ("a second NEGOTIATE", ntlm_negotiate()),
        ("a CHALLENGE", ntlm_authenticate(2, &[1; 40], USER, &[0; 16])),
        ("header only", ntlm_authenticate(3, &[], "", &[])[..64].to_vec()),
        ("truncated header", ntlm_authenticate(3, &[], "", &[])[..40].to_vec()),
    ];
    // Field offsets into the header, and lengths past the end.
    let mut into_header = ntlm_authenticate(3, &[1; 48], USER, &[0; 16]);
    patch32(&mut into_header, 24, 8);
    cases.push(("NtChallengeResponse offset into the header", into_header));
    let mut past = ntlm_authenticate(3, &[1; 48], USER, &[0; 16]);
    patch16(&mut past, 20, 4000);
    cases.push(("NtChallengeResponse past the end", past));
    let mut wrap = ntlm_authenticate(3, &[1; 48], USER, &[0; 16]);
    patch32(&mut wrap, 24, u32::MAX - 2);
    cases.push(("NtChallengeResponse offset wrapping", wrap));
    for (what, auth) in cases {
        let mut c = Client::new(&ts);
        c.negotiate();
        let v = raw1(&mut c, SESSION_SETUP, &Client::session_setup_body(&ntlm_negotiate(), 1)).unwrap();
        assert_eq!(v[0].status, MORE_PROCESSING_REQUIRED, "bare NTLMSSP NEGOTIATE");
        c.session_id = v[0].session_id;
        let v = raw1(&mut c, SESSION_SETUP, &Client::session_setup_body(&auth, 1)).unwrap();
        let st = v[0].status;
        assert!(st >= 0xC000_0000, "{what}: {st:#x}");
        if what.starts_with("short NtChallengeResponse") {
            // Too short for NTLMv2: refused like a wrong password.
            assert_eq!(st, LOGON_FAILURE, "{what}");
        } else if what != "header only" {
            assert_eq!(st, INVALID_PARAMETER, "{what}");
        }
        // The failed session is gone; a new one logs on.
        c.session_id = 0;
        c.session_setup();
        assert_eq!(c.tree_connect("share").status, SUCCESS, "{what}");
    }
    // An unknown message type as the very first token.
    let mut c = Client::new(&ts);
    c.negotiate();
    let mut first = ntlm_negotiate();
    patch32(&mut first, 8, 0x99);
    let v = raw1(&mut c, SESSION_SETUP, &Client::session_setup_body(&first, 1)).unwrap();
    assert!(v[0].status >= 0xC000_0000, "{:#x}", v[0].status);
}

/// DER nested far deeper than any SPNEGO token: refused, no stack overflow.
#[test]
fn deeply_nested_spnego_token() {
    let ts = server();
    // As many levels of [1] { ... } as fit in a SESSION_SETUP buffer.
    let depth = 15_000usize;
    let mut lens = vec![0usize; depth + 1];
    let hdr = |l: usize| if l < 0x80 { 2 } else if l < 0x100 { 3 } else { 4 };
    for i in 1..=depth {
        lens[i] = lens[i - 1] + hdr(lens[i - 1]);
    }
    let mut token = Vec::with_capacity(lens[depth]);
    for i in (0..depth).rev() {
        let l = lens[i];
        token.push(if i % 2 == 0 { 0xa1 } else { 0x30 });
        match hdr(l) {
            2 => token.push(l as u8),
            3 => token.extend_from_slice(&[0x81, l as u8]),
            _ => token.extend_from_slice(&[0x82, (l >> 8) as u8, l as u8]),
        }
    }
    assert_eq!(token.len(), lens[depth]);
    assert!(token.len() < 65536);
    let mut c = Client::new(&ts);
    c.negotiate();
    let v = raw1(&mut c, SESSION_SETUP, &Client::session_setup_body(&token, 1)).unwrap();
    assert!(v[0].status >= 0xC000_0000, "{:#x}", v[0].status);
    // As the second token of an exchange too.
    let mut c = Client::new(&ts);
    c.negotiate();
    let (_, t1) = Gss::new(USER, PASSWORD).step(None);
    let v = raw1(&mut c, SESSION_SETUP, &Client::session_setup_body(&t1, 1)).unwrap();
    c.session_id = v[0].session_id;
    let v = raw1(&mut c, SESSION_SETUP, &Client::session_setup_body(&token, 1)).unwrap();
    assert!(v[0].status >= 0xC000_0000, "{:#x}", v[0].status);
}

/// Connections that name another connection's session, from several
/// threads at once, while its owner works and then logs off: each gets
/// USER_SESSION_DELETED, nothing panics, the owner's work is intact.
#[test]
fn concurrent_setup_logoff_close_on_one_session() {
    let ts = server();
    let mut owner = connected(&ts);
    let fid = owner.open_file("mine.txt");
    let (sid, tid) = (owner.session_id, owner.tree_id);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        for kind in 0..3 {
            let ts = &ts;
            let stop = &stop;
            handles.push(s.spawn(move || {
                let mut c = Client::new(ts);
                c.negotiate();
                c.session_id = sid;
                c.tree_id = tid;
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 50 {
                    let msg = match kind {
                        0 => {
                            let (_, t) = Gss::new(USER, PASSWORD).step(None);
                            c.build(SESSION_SETUP, 1, &Client::session_setup_body(&t, 1))
                        }
                        1 => c.build(LOGOFF, 1, &[4, 0, 0, 0]),
                        _ => c.build(CLOSE, 1, &close_body(&fid)),
                    };
                    let v = c.raw(msg).expect("the connection ended");
                    assert_eq!(v.len(), 1);
                    assert_eq!(v[0].status, USER_SESSION_DELETED, "kind {kind}, round {n}");
                    n += 1;
                    if n > 5000 {
                        break;
                    }
                }
                n
            }));
        }
        for i in 0..200u64 {
            assert_eq!(owner.write(&fid, i * 4, b"data").status, SUCCESS);
        }
        assert_eq!(owner.read(&fid, 0, 8, 1).read_data(), b"datadata");
        assert_eq!(owner.close(&fid).status, SUCCESS);
        assert_eq!(owner.logoff().status, SUCCESS);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for h in handles {
            assert!(h.join().expect("a thread panicked") >= 50);
        }
    });
    assert_eq!(std::fs::metadata(ts.share_path().join("mine.txt")).unwrap().len(), 800);
    // The session is gone for its owner too now.
    assert_eq!(owner.call(CREATE, 1, &create_body("x", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0)).status, USER_SESSION_DELETED);
    let _ = NOT_FOUND;
}

/// CHANGE_NOTIFY with WATCH_TREE on a directory tree 2,000 levels deep (the
/// depth of a tree is the client's to choose), handled on a thread with the
/// stack size of a connection thread: the watches are added without
/// recursing over the tree.
#[test]
fn watch_tree_over_a_very_deep_tree() {
    use rustix::fs::{Mode, OFlags};
    let ts = server();
    let mut c = connected(&ts);
    // "deep/d/d/d/...": made with *at calls, one level at a time.
    let mut fd = rustix::fs::open(ts.share_path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    rustix::fs::mkdirat(&fd, "deep", Mode::from_raw_mode(0o755)).unwrap();
    fd = rustix::fs::openat(&fd, "deep", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..2000 {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    }
    drop(fd);
    let dir = c.create("deep", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let r = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let mut b = notify_body(&dir, 0x1, 4096);
            b[2] = 1; // SMB2_WATCH_TREE
            let msg = c.build(CHANGE_NOTIFY, 1, &b);
            let v = c.send(msg).expect("CHANGE_NOTIFY ended the connection");
            assert_eq!(v.len(), 1);
            assert!(v[0].status == PENDING || v[0].status >= 0xC000_0000, "{:#x}", v[0].status);
            c
        })
        .unwrap()
        .join();
    let mut c = r.expect("the CHANGE_NOTIFY thread failed");
    let f = c.open_file("after.txt");
    assert_eq!(c.write(&f, 0, b"ok").status, SUCCESS);
}

/// A QUERY_INFO FileFullEaInformation naming 32,768 EAs with a small output
/// buffer: the answer is computed in one pass over what was asked (it used to
/// re-encode ever shorter lists, square in the count: minutes of CPU).
#[test]
fn ea_query_with_a_long_get_list_is_linear() {
    let ts = server();
    let mut c = connected(&ts);
    let fid = c.open_file("ea.txt");
    let mut list = Vec::new();
    for _ in 0..32_768 {
        list.u32_(8).u8_(1).bytes(b"A").u16_(0);
    }
    let n = list.len();
    list[n - 8..n - 4].copy_from_slice(&0u32.to_le_bytes());
    let mut b = Vec::new();
    b.u16_(41).u8_(1).u8_(15).u32_(100).u16_(64 + 40).u16_(0).u32_(list.len() as u32).u32_(0).u32_(0).bytes(&fid).bytes(&list);
    let start = std::time::Instant::now();
    let r = c.call(16, 4, &b);
    assert!(start.elapsed() < std::time::Duration::from_secs(20), "took {:?}", start.elapsed());
    // 100 bytes hold 8 of the 12-byte entries (the last unpadded).
    assert_eq!(r.status, 0x8000_0005, "BUFFER_OVERFLOW");
    assert_eq!(le32(&r.raw, 64 + 4), 8 * 12 - 2);
}

const NO_MORE_FILES: u32 = 0x8000_0006;
const NO_SUCH_FILE: u32 = 0xC000_000F;
const QD_RESTART: u8 = 0x01;
const QD_SINGLE: u8 = 0x02;

/// QUERY_DIRECTORY in FILE_NAMES_INFORMATION: the status and the names returned.
fn query_names(c: &mut Client, fid: &[u8; 16], pattern: &str, flags: u8, out_len: u32) -> (u32, Vec<String>) {
    let p = utf16(pattern);
    let mut b = Vec::new();
    b.u16_(33).u8_(12).u8_(flags).u32_(0).bytes(fid).u16_(64 + 32).u16_(p.len() as u16).u32_(out_len).bytes(&p);
    if p.is_empty() {
        b.u8_(0);
    }
    let r = c.call(14, 1, &b);
    let mut names = Vec::new();
    if r.status == SUCCESS {
        let off = le16(&r.raw, 66) as usize;
        let len = le32(&r.raw, 68) as usize;
        let buf = &r.raw[off..off + len];
        let mut at = 0;
        loop {
            let next = le32(buf, at) as usize;
            let n = le32(buf, at + 8) as usize;
            let u: Vec<u16> = buf[at + 12..at + 12 + n].chunks(2).map(|x| u16::from_le_bytes([x[0], x[1]])).collect();
            names.push(String::from_utf16(&u).unwrap());
            if next == 0 {
                break;
            }
            at += next;
        }
    }
    (r.status, names)
}

/// A search read incrementally (issue 7: a query's work follows what it
/// returns): "." and ".." first, every name once across small buffers, a
/// name removed before it is reached is not returned, RESTART_SCANS starts
/// again, RETURN_SINGLE_ENTRY returns one, and a pattern matching nothing
/// answers NO_SUCH_FILE, then NO_MORE_FILES.
#[test]
fn query_directory_resumes_across_small_buffers() {
    let ts = server();
    let dir = ts.share_path().join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..300 {
        std::fs::write(dir.join(format!("f{i:03}")), b"").unwrap();
    }
    let mut c = connected(&ts);
    let fid = c.create("many", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let (st, first) = query_names(&mut c, &fid, "*", 0, 512);
    assert_eq!(st, SUCCESS);
    assert_eq!(&first[..2], &[".".to_string(), "..".to_string()]);
    assert!(first.len() < 40, "a 512-byte buffer holds {} names", first.len());
    // Remove the files not returned yet with an odd number; they must not come back.
    let mut removed = std::collections::HashSet::new();
    for i in (1..300).step_by(2) {
        let n = format!("f{i:03}");
        if !first.contains(&n) {
            std::fs::remove_file(dir.join(&n)).unwrap();
            removed.insert(n);
        }
    }
    let mut all = first.clone();
    loop {
        let (st, names) = query_names(&mut c, &fid, "*", 0, 512);
        if st == NO_MORE_FILES {
            break;
        }
        assert_eq!(st, SUCCESS);
        all.extend(names);
    }
    let mut want: Vec<String> = (0..300).map(|i| format!("f{i:03}")).filter(|n| !removed.contains(n)).collect();
    want.extend([".".to_string(), "..".to_string()]);
    want.sort();
    let mut got = all.clone();
    got.sort();
    assert_eq!(got, want, "every remaining name exactly once");
    // Restart: "." again, alone when one entry is asked.
    assert_eq!(query_names(&mut c, &fid, "*", QD_RESTART | QD_SINGLE, 4096), (SUCCESS, vec![".".to_string()]));
    assert_eq!(query_names(&mut c, &fid, "*", QD_SINGLE, 4096), (SUCCESS, vec!["..".to_string()]));
    // A restart with a new pattern.
    let (st, names) = query_names(&mut c, &fid, "f29?", QD_RESTART, 4096);
    assert_eq!(st, SUCCESS);
    let mut names = names;
    names.sort();
    assert_eq!(names, ["f290", "f292", "f294", "f296", "f298"].iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(query_names(&mut c, &fid, "nothing*", QD_RESTART, 4096).0, NO_SUCH_FILE);
    assert_eq!(query_names(&mut c, &fid, "nothing*", 0, 4096).0, NO_MORE_FILES);
}

/// RESTART_SCANS with RETURN_SINGLE_ENTRY on a directory of 10,000 entries,
/// 2,000 times: each query reads only as far as its one entry (the whole
/// directory was read for each before: 67 s here, now 0.6 s).
#[test]
fn restart_scans_reads_only_what_it_returns() {
    let ts = server();
    let dir = ts.share_path().join("big");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..10_000 {
        std::fs::File::create(dir.join(format!("entry-{i:05}"))).unwrap();
    }
    let mut c = connected(&ts);
    let fid = c.create("big", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let start = std::time::Instant::now();
    for _ in 0..2000 {
        let (st, names) = query_names(&mut c, &fid, "entry-*", QD_RESTART | QD_SINGLE, 4096);
        assert_eq!(st, SUCCESS);
        assert_eq!(names.len(), 1);
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(8), "took {:?}", start.elapsed());
}
