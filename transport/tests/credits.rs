//! Credit rules on a raw server connection driven by hand-made client messages.

use std::time::Instant;

use smbdirect_transport::smbd::{Action, Config, Connection, DisconnectReason, Event, ProtocolError, Role, State};
use smbdirect_transport::wire::{DataTransferHeader, NegotiateRequest, FLAG_RESPONSE_REQUESTED};

struct Peer {
    s: Connection,
    now: Instant,
    sent: Vec<DataTransferHeader>,
    /// The Send-With-Invalidate token of each posted data transfer message.
    invalidates: Vec<Option<u32>>,
    timer_sets: usize,
}

impl Peer {
    /// A server that granted the client `credits` credits.
    fn new(credits: u16, receive_credit_max: u16) -> Self {
        let now = Instant::now();
        let mut cfg = Config::ksmbd();
        cfg.receive_credit_max = receive_credit_max;
        let mut s = Connection::new(Role::Server, cfg, now);
        let req = NegotiateRequest {
            min_version: 0x100,
            max_version: 0x100,
            credits_requested: credits,
            preferred_send_size: 1364,
            max_receive_size: 1364,
            max_fragmented_size: 1 << 20,
        };
        s.handle_recv(now, &req.to_bytes());
        let mut p = Peer { s, now, sent: Vec::new(), invalidates: Vec::new(), timer_sets: 0 };
        p.pump();
        p.sent.clear();
        p
    }

    /// Completes every posted send at once and records the data transfer headers.
    fn pump(&mut self) {
        while let Some(a) = self.s.poll_action() {
            if let Action::SetTimer(_) = a {
                self.timer_sets += 1;
            }
            if let Action::PostSend { slot, invalidate, .. } = a {
                if let Ok((h, _)) = DataTransferHeader::decode(self.s.send_bytes(slot)) {
                    self.sent.push(h);
                    self.invalidates.push(invalidate);
                }
                self.s.handle_send_complete(self.now, slot, Ok(()));
            }
        }
    }

    fn recv(&mut self, h: DataTransferHeader, data: &[u8]) {
        let mut b = vec![0u8; 24 + data.len()];
        let n = h.encode_with_data(data, &mut b).unwrap();
        self.s.handle_recv(self.now, &b[..n]);
        self.pump();
    }
}

fn hdr(requested: u16, granted: u16, flags: u16) -> DataTransferHeader {
    DataTransferHeader { credits_requested: requested, credits_granted: granted, flags, ..Default::default() }
}

#[test]
fn response_requested_is_answered_promptly() {
    let mut p = Peer::new(255, 255);
    p.recv(hdr(255, 10, 0), &[]);
    assert!(p.sent.is_empty(), "nothing to say yet: the client holds plenty of credits");
    p.recv(hdr(255, 0, FLAG_RESPONSE_REQUESTED), &[]);
    assert_eq!(p.sent.len(), 1);
    assert_eq!(p.sent[0].data_length, 0);
    assert!(!p.sent[0].response_requested());
    // The answer carries the credits freed by the two receives.
    assert_eq!(p.sent[0].credits_granted, 2);
}

#[test]
fn last_credit_is_kept_for_a_grant() {
    let mut p = Peer::new(255, 255);
    // The client granted one credit only: the server may not spend it on data alone.
    p.recv(hdr(255, 1, 0), &[]);
    p.s.send(p.now, b"response").unwrap();
    p.pump();
    // The receive freed one credit to grant, so the message goes out carrying it.
    assert_eq!(p.sent.len(), 1);
    assert_eq!(p.sent[0].credits_granted, 1);
    assert_eq!(p.s.credits().send, 0);
    p.sent.clear();
    // With no credit at all nothing is sent until a grant arrives.
    p.s.send(p.now, b"second").unwrap();
    p.pump();
    assert!(p.sent.is_empty());
    p.recv(hdr(255, 3, 0), &[]);
    assert_eq!(p.sent.len(), 1);
    assert_eq!(p.sent[0].data_length, 6);
}

#[test]
fn last_credit_without_grant_waits() {
    // The server posted 4 receives and granted all 4; the client holds them all, so the
    // server has nothing to grant and must not use its single credit for plain data.
    let mut p = Peer::new(4, 4);
    assert_eq!(p.s.credits().peer_held, 4);
    p.recv(hdr(4, 1, 0), &[]);
    // That receive freed one credit; with a target of 4 and 3 held, one is grantable.
    assert_eq!(p.s.credits().grantable(), 1);
    p.s.send(p.now, b"a").unwrap();
    p.pump();
    assert_eq!(p.sent.len(), 1, "sent with the grant");
    p.sent.clear();
    p.recv(hdr(4, 1, 0), &[]);
    p.recv(hdr(4, 0, 0), &[]);
    // Now: one send credit, and the client holds 2 of 4 posted: grantable 2 -> may send.
    p.s.send(p.now, b"b").unwrap();
    p.pump();
    assert_eq!(p.sent.len(), 1);
    assert_eq!(p.sent[0].credits_granted, 2);
}

#[test]
fn overrunning_credits_disconnects() {
    let mut p = Peer::new(3, 255);
    assert_eq!(p.s.credits().peer_held, 3);
    for _ in 0..3 {
        p.recv(hdr(3, 0, 0), b"x");
    }
    assert_eq!(p.s.state(), State::Established);
    // The server granted nothing more (3 held is the client's whole target, and the empty
    // grants it may have sent are counted): one message too many breaks the rule.
    let held = p.s.credits().peer_held;
    for _ in 0..held {
        p.recv(hdr(3, 0, 0), b"y");
    }
    assert_eq!(p.s.state(), State::Established);
    let held = p.s.credits().peer_held;
    if held == 0 {
        p.recv(hdr(3, 0, 0), b"z");
        assert_eq!(p.s.state(), State::Disconnected);
        let evs: Vec<_> = std::iter::from_fn(|| p.s.poll_event()).collect();
        assert!(evs.contains(&Event::Disconnected(DisconnectReason::Protocol(ProtocolError::CreditsOverrun))));
    } else {
        panic!("server kept granting with no send credits: held {held}");
    }
}

#[test]
fn zero_credits_requested_disconnects() {
    let mut p = Peer::new(255, 255);
    p.recv(hdr(0, 0, 0), b"x");
    assert_eq!(p.s.state(), State::Disconnected);
}

#[test]
fn message_larger_than_max_receive_size_disconnects() {
    let mut p = Peer::new(255, 255);
    p.recv(hdr(255, 0, 0), &[0u8; 1364 - 24]);
    assert_eq!(p.s.state(), State::Established);
    p.recv(hdr(255, 0, 0), &[0u8; 1364 - 23]);
    assert_eq!(p.s.state(), State::Disconnected);
}

#[test]
fn steady_traffic_does_not_rearm_the_timer_per_message() {
    let mut p = Peer::new(255, 255);
    p.recv(hdr(255, 255, 0), &[]);
    p.timer_sets = 0;
    for i in 0..1000u32 {
        p.now += std::time::Duration::from_micros(10);
        p.recv(hdr(255, 1, 0), &i.to_le_bytes());
        p.s.send(p.now, b"reply").unwrap();
        p.pump();
        while p.s.poll_event().is_some() {}
    }
    assert!(p.sent.len() >= 1000);
    assert!(p.timer_sets <= 2, "{} timer changes for 1000 messages", p.timer_sets);
}

#[test]
fn fragments_count_down_and_only_the_last_invalidates() {
    // Three send credits: two fragments go straight out of the caller's buffer, the rest
    // waits in the queue for a grant. Either way RemainingDataLength counts down to 0 and
    // only the very last fragment is a Send-With-Invalidate.
    let mut p = Peer::new(255, 255);
    p.recv(hdr(255, 3, 0), &[]);
    p.sent.clear();
    p.invalidates.clear();
    let msg: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    p.s.send_with_invalidate(p.now, &msg, 0xabcd).unwrap();
    p.pump();
    assert_eq!(p.sent.len(), 2, "the last credit waits for a grant");
    assert!(p.s.queued_bytes() > 0);
    p.recv(hdr(255, 20, 0), &[]);
    let data: Vec<&DataTransferHeader> = p.sent.iter().filter(|h| h.data_length > 0).collect();
    assert_eq!(data.len(), 10_000usize.div_ceil(1364 - 24));
    let mut left = 10_000u32;
    for h in &data {
        left -= h.data_length;
        assert_eq!(h.remaining_data_length, left);
    }
    assert_eq!(left, 0);
    let with_data: Vec<Option<u32>> =
        p.sent.iter().zip(&p.invalidates).filter(|(h, _)| h.data_length > 0).map(|(_, i)| *i).collect();
    assert_eq!(with_data.last(), Some(&Some(0xabcd)));
    assert!(with_data[..with_data.len() - 1].iter().all(Option::is_none));
    assert_eq!(p.s.queued_bytes(), 0);
    assert_eq!(p.s.stats().messages_sent, 1);
}

#[test]
fn receives_are_refilled_and_granted_when_the_peer_runs_low() {
    // The client holds all 255 credits and sends one-way traffic. Every receive is
    // re-posted at once; the server says nothing until the client is down to the
    // watermark (255 / 8 = 31 credits), then one empty message grants the client back up
    // to its target.
    let mut p = Peer::new(255, 255);
    assert_eq!(p.s.credits().peer_held, 255);
    for i in 0..224u32 {
        assert!(p.sent.is_empty(), "grant sent early, after {i} messages");
        p.recv(hdr(255, if i == 0 { 2 } else { 0 }, 0), &i.to_le_bytes());
        assert_eq!(p.s.credits().posted, 255, "receive not re-posted");
    }
    assert_eq!(p.sent.len(), 1);
    assert_eq!(p.sent[0].data_length, 0);
    assert_eq!(p.sent[0].credits_granted, 224);
    assert_eq!(p.s.credits().peer_held, 255);
    let delivered = std::iter::from_fn(|| p.s.poll_event()).filter(|e| matches!(e, Event::Message(_))).count();
    assert_eq!(delivered, 224);
}
