//! Credits and message ids (MS-SMB2 3.3.5.2.3, 3.3.5.2.5).

use crate::harness::*;

#[test]
fn message_id_reuse_ends_the_connection() {
    let ts = server();
    let mut c = connected(&ts);
    let used = c.next_mid - 1;
    let mut msg = build_header(ECHO, 1, 1, 0, used, 0, c.session_id, &[4, 0, 0, 0]);
    assert!(c.conn.handle_message(msg.clone()).is_err(), "reused message id {used}");
    // Also on a fresh connection with id 0 (the NEGOTIATE's) reused.
    let mut c = connected(&ts);
    msg[24..32].copy_from_slice(&0u64.to_le_bytes());
    assert!(c.conn.handle_message(msg).is_err());
}

#[test]
fn message_id_beyond_the_window_ends_the_connection() {
    let ts = server();
    let mut c = connected(&ts);
    assert!(c.held > 0);
    let top = c.next_mid + c.held as u64; // first id not granted
    let msg = build_header(ECHO, 1, 1, 0, top, 0, c.session_id, &[4, 0, 0, 0]);
    assert!(c.conn.handle_message(msg).is_err(), "id {top} past the window accepted");

    // The last granted id is fine, even out of order.
    let mut c = connected(&ts);
    let last = c.next_mid + c.held as u64 - 1;
    let msg = build_header(ECHO, 1, 1, 0, last, 0, c.session_id, &[4, 0, 0, 0]);
    let v = c.raw(msg).unwrap();
    assert_eq!(v[0].status, SUCCESS);
    // A multi-credit request whose range runs past the window.
    let mut c = connected(&ts);
    let start = c.next_mid + c.held as u64 - 2;
    let msg = build_header(ECHO, 3, 1, 0, start, 0, c.session_id, &[4, 0, 0, 0]);
    assert!(c.conn.handle_message(msg).is_err());
    // u64::MAX never wraps into the window.
    let mut c = connected(&ts);
    let msg = build_header(ECHO, 2, 1, 0, u64::MAX, 0, c.session_id, &[4, 0, 0, 0]);
    assert!(c.conn.handle_message(msg).is_err());
}

#[test]
fn first_message_must_use_id_zero() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.next_mid = 1;
    let body = Client::negotiate_body(&NegOpts::default());
    let msg = c.build(NEGOTIATE, 0, &body);
    assert!(c.conn.handle_message(msg).is_err());
}

#[test]
fn multi_credit_read_of_one_mib() {
    let ts = server();
    let mut c = connected(&ts);
    // Make sure the client holds enough credits.
    while c.held < 40 {
        c.credit_request = 64;
        assert_eq!(c.call(ECHO, 1, &[4, 0, 0, 0]).status, SUCCESS);
    }
    let fid = c.open_file("big");
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 253) as u8).collect();
    let w = c.call(WRITE, 16, &write_body(&fid, 0, &data));
    assert_eq!(w.status, SUCCESS);
    assert_eq!(w.credit_charge, 16, "response echoes the CreditCharge");
    let mid_before = c.next_mid;
    let r = c.read(&fid, 0, 1 << 20, 16);
    assert_eq!(r.status, SUCCESS);
    assert_eq!(r.message_id, mid_before);
    assert_eq!(r.read_data().len(), 1 << 20);
    assert_eq!(r.read_data(), &data[..]);
    // The ids the READ covered are used: reusing one in the middle ends the connection
    // (checked below on the same connection after the INVALID_PARAMETER case).

    // Too small a charge: INVALID_PARAMETER, the connection lives on.
    let r = c.read(&fid, 0, 1 << 20, 1);
    assert_eq!(r.status, INVALID_PARAMETER);
    let r = c.read(&fid, 0, 1 << 20, 15);
    assert_eq!(r.status, INVALID_PARAMETER);
    let w = c.call(WRITE, 15, &write_body(&fid, 0, &data));
    assert_eq!(w.status, INVALID_PARAMETER);
    // Charge 0 counts as 1: fine for 64 KiB, not for more.
    assert_eq!(c.read(&fid, 0, 65536, 0).status, SUCCESS);
    assert_eq!(c.read(&fid, 0, 65537, 0).status, INVALID_PARAMETER);
    assert_eq!(c.read(&fid, 0, 65537, 2).status, SUCCESS);

    let inside = mid_before + 7;
    let msg = build_header(ECHO, 1, 1, 0, inside, 0, c.session_id, &[4, 0, 0, 0]);
    assert!(c.conn.handle_message(msg).is_err(), "id inside a used multi-credit range");
}

#[test]
fn multi_credit_read_on_202_is_refused_size() {
    // 2.0.2 has no multi-credit: reads are bounded to 64 KiB by the negotiated size.
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate_with(&NegOpts { dialects: vec![DIALECT_202], ..NegOpts::default() });
    assert_eq!(c.max_read, 65536);
}

#[test]
fn client_never_holds_more_than_max_credits() {
    let ts = server_with(|cfg| cfg.max_credits = 40);
    let mut c = Client::new(&ts);
    c.credit_request = 1000;
    c.logon();
    assert!(c.held <= 40, "after logon the client holds {}", c.held);
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let mut reached_max = false;
    for i in 0..200 {
        c.credit_request = if i % 3 == 0 { 0 } else { 5000 };
        let r = c.call(ECHO, 1, &[4, 0, 0, 0]);
        assert_eq!(r.status, SUCCESS);
        assert!(c.held <= 40, "step {i}: the client holds {} credits", c.held);
        assert!(c.held >= 1, "step {i}: the client was left without credits");
        reached_max |= c.held == 40;
    }
    assert!(reached_max, "the server never granted up to max_credits");
    // Spending big charges and asking for many keeps the bound.
    let fid = c.open_file("x");
    for _ in 0..20 {
        c.credit_request = 1000;
        let r = c.read(&fid, 0, 8 * 65536, 8);
        assert!(r.status == 0xC000_0011 || r.status == SUCCESS);
        assert!(c.held <= 40 && c.held >= 1, "holds {}", c.held);
    }
}

#[test]
fn zero_credit_request_still_leaves_one() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.credit_request = 0;
    c.logon();
    for _ in 0..10 {
        c.credit_request = 0;
        let r = c.call(ECHO, 1, &[4, 0, 0, 0]);
        assert_eq!(r.status, SUCCESS);
        assert!(c.held >= 1, "no credit left");
    }
}

#[test]
fn compound_grants_keep_the_bound() {
    let ts = server_with(|cfg| cfg.max_credits = 24);
    let mut c = Client::new(&ts);
    c.credit_request = 100;
    c.logon();
    assert!(c.held <= 24);
    for round in 0..10 {
        // A chain as long as the credits held allow, each asking for 100 more.
        let n = c.held.clamp(1, 8) as usize;
        let msgs: Vec<Vec<u8>> = (0..n).map(|_| c.build(ECHO, 1, &[4, 0, 0, 0])).collect();
        let v = c.send(chain(msgs)).unwrap();
        assert_eq!(v.len(), n);
        assert!(c.held <= 24, "round {round}: the client holds {} credits", c.held);
        assert!(c.held >= 1);
    }
}

#[test]
fn cancel_consumes_no_credit() {
    let ts = server();
    let mut c = connected(&ts);
    // A CANCEL naming nothing, with the next message id: no response, id not used.
    let m = build_header(CANCEL, 0, 0, 0, c.next_mid, 0, c.session_id, &[4, 0, 0, 0]);
    let v = c.raw(m).unwrap();
    assert!(v.is_empty(), "CANCEL got a response");
    assert_eq!(c.call(ECHO, 1, &[4, 0, 0, 0]).status, SUCCESS, "the id after a CANCEL is still free");
}

#[test]
fn error_for_related_first_request_leaves_a_credit() {
    let ts = server_with(|cfg| cfg.max_credits = 1);
    let mut c = Client::new(&ts);
    c.credit_request = 1;
    c.logon();
    assert_eq!(c.held, 1);
    let mut m = c.build(ECHO, 1, &[4, 0, 0, 0]);
    set_flags(&mut m, F_RELATED);
    let v = c.raw(m).unwrap();
    assert_eq!(v[0].status, INVALID_PARAMETER);
    assert!(c.held >= 1, "the client was left without credits");
    assert_eq!(c.call(ECHO, 1, &[4, 0, 0, 0]).status, SUCCESS);
}
