//! Negotiation with each peer's parameter set, and its failures.

mod common;

use std::time::{Duration, Instant};

use common::*;
use smbdirect_transport::fabric::Side;
use smbdirect_transport::smbd::{Action, Config, Connection, DisconnectReason, Event, ProtocolError, Role, State};
use smbdirect_transport::wire::{
    status, DataTransferHeader, NegotiateRequest, NegotiateResponse, WireError, NEGOTIATE_RESPONSE_LEN,
};

#[test]
fn cifs_client_to_our_server() {
    let (f, c, s) = connect(Config::cifs(), Config::ksmbd());
    assert_eq!((c.max_send_size, c.max_receive_size), (1364, 1364));
    assert_eq!(c.peer_max_fragmented_size, 1 << 20);
    assert_eq!(s.peer_max_fragmented_size, 173_910);
    // The client read the server's grant and granted back with an empty message.
    let cc = f.end(Side::Client).conn.credits();
    let sc = f.end(Side::Server).conn.credits();
    assert_eq!(cc.send, 254, "255 granted by the response, one used for the client's grant");
    assert_eq!(sc.send, 255);
    assert_eq!(sc.peer_held, 254);
    assert_eq!(f.end(Side::Client).conn.stats().empty_sent, 1);
    assert_eq!(f.end(Side::Server).conn.stats().empty_sent, 0);
}

#[test]
fn windows_client_to_our_server_and_back() {
    let (_, c, s) = connect(Config::windows(), Config::ksmbd());
    // Windows receives 8192 but our server sends at most 1364.
    assert_eq!(s.max_send_size, 1364);
    assert_eq!(c.max_send_size, 1364);
    assert_eq!(c.max_read_write_size, 1 << 20);
    let (_, c, s) = connect(Config::cifs(), Config::windows());
    assert_eq!(s.max_receive_size, 1364, "the server lowers MaxReceiveSize to the client's PreferredSendSize");
    assert_eq!(c.max_send_size, 1364);
    assert_eq!(c.max_read_write_size, 1 << 20);
    let mut big = Config::windows();
    big.max_send_size = 8192;
    let (_, c, s) = connect(big, Config::windows());
    // The Windows-style server still sends at most its own 1364.
    assert_eq!((c.max_send_size, s.max_send_size, s.max_receive_size), (8192, 1364, 8192));
}

#[test]
fn small_credit_targets() {
    let mut cc = Config::cifs();
    cc.send_credit_target = 3;
    cc.receive_credit_max = 4;
    let mut sc = Config::ksmbd();
    sc.receive_credit_max = 2;
    let (mut f, _, _) = connect(cc, sc);
    // Granted 2 (= server receives posted), one used for the client's grant; a grant of
    // one credit back is not worth a message.
    assert_eq!(f.end(Side::Client).conn.credits().send, 1);
    assert_eq!(f.end(Side::Server).conn.credits().peer_held, 1);
    // Traffic still flows with a single spare credit each way.
    let msg = vec![7u8; 20_000];
    for _ in 0..5 {
        f.send(Side::Client, &msg).unwrap();
        f.send(Side::Server, &msg).unwrap();
    }
    f.run_quiet(Duration::from_millis(100));
    assert_eq!(f.stats.credit_violations, 0);
    let mut n = 0;
    while let Some(e) = f.poll_event(Side::Server) {
        if e == Event::Message(msg.clone()) {
            n += 1;
        }
    }
    while let Some(e) = f.poll_event(Side::Client) {
        if e == Event::Message(msg.clone()) {
            n += 1;
        }
    }
    assert_eq!(n, 10);
}

fn drain(c: &mut Connection) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

#[test]
fn server_answers_bad_version_with_not_supported() {
    let now = Instant::now();
    let mut s = Connection::new(Role::Server, Config::ksmbd(), now);
    drain(&mut s);
    let req = NegotiateRequest {
        min_version: 0x0200,
        max_version: 0x0200,
        credits_requested: 10,
        preferred_send_size: 1364,
        max_receive_size: 1364,
        max_fragmented_size: 1 << 20,
    };
    s.handle_recv(now, &req.to_bytes());
    let acts = drain(&mut s);
    let Some(Action::PostSend { slot, len, .. }) = acts.iter().find(|a| matches!(a, Action::PostSend { .. })).copied() else {
        panic!("no response: {acts:?}")
    };
    assert_eq!(len as usize, NEGOTIATE_RESPONSE_LEN);
    // The bytes live in the slot's stable buffer (registrable once by a verbs backend).
    let (_, whole) = s.send_slot_buffers().find(|(sl, _)| *sl == slot).unwrap();
    assert_eq!(whole.as_ptr(), s.send_bytes(slot).as_ptr());
    assert_eq!(whole.len(), 1364);
    let resp = NegotiateResponse::decode(s.send_bytes(slot)).unwrap();
    assert_eq!(resp, NegotiateResponse::failure(status::NOT_SUPPORTED));
    assert_eq!(s.state(), State::Closing);
    s.handle_send_complete(now, slot, Ok(()));
    assert!(drain(&mut s).contains(&Action::Disconnect(DisconnectReason::VersionNotSupported)));
    assert_eq!(s.state(), State::Disconnected);
}

#[test]
fn server_drops_invalid_requests() {
    let bad = [
        (|r: &mut NegotiateRequest| r.credits_requested = 0) as fn(&mut NegotiateRequest),
        |r| r.max_receive_size = 127,
        |r| r.max_fragmented_size = 131_071,
    ];
    for f in bad {
        let now = Instant::now();
        let mut s = Connection::new(Role::Server, Config::ksmbd(), now);
        drain(&mut s);
        let mut req = NegotiateRequest {
            min_version: 0x100,
            max_version: 0x100,
            credits_requested: 10,
            preferred_send_size: 1364,
            max_receive_size: 1364,
            max_fragmented_size: 1 << 20,
        };
        f(&mut req);
        s.handle_recv(now, &req.to_bytes());
        let acts = drain(&mut s);
        assert!(!acts.iter().any(|a| matches!(a, Action::PostSend { .. })), "no response to a bad request");
        assert!(matches!(acts.last(), Some(Action::Disconnect(DisconnectReason::Protocol(ProtocolError::Wire(_))))) || acts.iter().any(|a| matches!(a, Action::Disconnect(_))));
    }
    // A short request terminates too.
    let now = Instant::now();
    let mut s = Connection::new(Role::Server, Config::ksmbd(), now);
    s.handle_recv(now, &[0u8; 19]);
    assert!(matches!(
        s.poll_event(),
        Some(Event::Disconnected(DisconnectReason::Protocol(ProtocolError::Wire(WireError::Truncated { .. }))))
    ));
}

#[test]
fn client_rejects_bad_responses() {
    let good = NegotiateResponse {
        min_version: 0x100,
        max_version: 0x100,
        negotiated_version: 0x100,
        credits_requested: 255,
        credits_granted: 255,
        status: 0,
        max_read_write_size: 1 << 20,
        preferred_send_size: 1364,
        max_receive_size: 1364,
        max_fragmented_size: 1 << 20,
    };
    let cases: [fn(&mut NegotiateResponse); 5] = [
        |r| r.credits_granted = 0,
        |r| r.negotiated_version = 0x200,
        |r| r.status = status::NOT_SUPPORTED,
        |r| r.preferred_send_size = 1365, // more than the client's MaxReceiveSize
        |r| r.max_fragmented_size = 1000,
    ];
    for f in cases {
        let now = Instant::now();
        let mut c = Connection::new(Role::Client, Config::cifs(), now);
        drain(&mut c);
        let mut r = good;
        f(&mut r);
        c.handle_recv(now, &r.to_bytes());
        assert_eq!(c.state(), State::Disconnected, "{r:?}");
    }
    let now = Instant::now();
    let mut c = Connection::new(Role::Client, Config::cifs(), now);
    c.handle_recv(now, &good.to_bytes());
    assert_eq!(c.state(), State::Established);
}

#[test]
fn negotiate_timeouts() {
    // Server: nothing arrives within 5 s.
    let now = Instant::now();
    let mut s = Connection::new(Role::Server, Config::ksmbd(), now);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(5)));
    s.handle_timeout(now + Duration::from_secs(4));
    assert_eq!(s.state(), State::Negotiating);
    s.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(s.state(), State::Disconnected);
    assert!(drain(&mut s).contains(&Action::Disconnect(DisconnectReason::NegotiateTimeout)));

    // Client on the fabric: the server stops answering before it reads the request.
    let mut f = smbdirect_transport::fabric::Fabric::new(Config::cifs(), Config::ksmbd(), Default::default());
    f.faults(Side::Server).frozen = true;
    let start = f.now;
    f.run_until(start + Duration::from_secs(300));
    assert!(disconnected(&f, Side::Client));
    let t = f.now.duration_since(start);
    assert!(t >= Duration::from_secs(120) && t < Duration::from_secs(121), "{t:?}");
    let evs: Vec<_> = std::iter::from_fn(|| f.poll_event(Side::Client)).collect();
    assert_eq!(evs, vec![Event::Disconnected(DisconnectReason::NegotiateTimeout)]);
}

#[test]
fn data_before_negotiate_response_is_refused() {
    let now = Instant::now();
    let mut c = Connection::new(Role::Client, Config::cifs(), now);
    let mut b = [0u8; 64];
    let n = DataTransferHeader { credits_granted: 1, ..Default::default() }.encode_with_data(b"x", &mut b).unwrap();
    c.handle_recv(now, &b[..n]);
    assert_eq!(c.state(), State::Disconnected);
}
