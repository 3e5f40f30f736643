//! Property tests over the codecs, the RDMA planner and the state machine.

mod common;

use std::time::{Duration, Instant};

use proptest::prelude::*;

use common::*;
use smbdirect_transport::fabric::{FabricConfig, Side};
use smbdirect_transport::smbd::{Action, Config, Connection, Event, LocalSegment, RdmaLimits, Role, State};
use smbdirect_transport::wire::{
    BufferDescriptorV1, DataTransferHeader, NegotiateRequest, NegotiateResponse, DATA_TRANSFER_HEADER_LEN,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = NegotiateRequest::decode_valid(&bytes);
        let _ = NegotiateResponse::decode_valid(&bytes);
        let _ = BufferDescriptorV1::decode(&bytes);
        let mut out = Vec::new();
        let _ = BufferDescriptorV1::decode_list_into(&bytes, &mut out);
        if let Ok((h, data)) = DataTransferHeader::decode(&bytes) {
            prop_assert_eq!(data.len(), h.data_length as usize);
            if h.data_length > 0 {
                prop_assert!(h.data_offset >= 24 && h.data_offset % 8 == 0);
                prop_assert!(h.data_offset as usize + data.len() <= bytes.len());
            }
        }
    }

    #[test]
    fn negotiate_round_trips(min in any::<u16>(), max in any::<u16>(), cr in any::<u16>(), ps in any::<u32>(), mr in any::<u32>(), mf in any::<u32>()) {
        let req = NegotiateRequest { min_version: min, max_version: max, credits_requested: cr, preferred_send_size: ps, max_receive_size: mr, max_fragmented_size: mf };
        prop_assert_eq!(NegotiateRequest::decode(&req.to_bytes()), Ok(req));
        let valid = req.validate().is_ok();
        prop_assert_eq!(valid, min <= 0x100 && 0x100 <= max && cr > 0 && mr >= 128 && mf >= 131_072);
        let resp = NegotiateResponse { min_version: min, max_version: max, negotiated_version: cr, credits_requested: cr, credits_granted: min, status: ps, max_read_write_size: mr, preferred_send_size: mf, max_receive_size: mr, max_fragmented_size: mf };
        prop_assert_eq!(NegotiateResponse::decode(&resp.to_bytes()), Ok(resp));
    }

    #[test]
    fn data_transfer_round_trips(cr in any::<u16>(), cg in any::<u16>(), flags in any::<u16>(), rem in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let h = DataTransferHeader { credits_requested: cr, credits_granted: cg, flags, remaining_data_length: rem, ..Default::default() };
        let mut buf = vec![0u8; DATA_TRANSFER_HEADER_LEN + data.len()];
        let n = h.encode_with_data(&data, &mut buf).unwrap();
        let (d, got) = DataTransferHeader::decode(&buf[..n]).unwrap();
        prop_assert_eq!(got, &data[..]);
        prop_assert_eq!((d.credits_requested, d.credits_granted, d.flags, d.remaining_data_length), (cr, cg, flags, rem));
        prop_assert_eq!(n, if data.is_empty() { 20 } else { 24 + data.len() });
    }

    #[test]
    fn descriptor_round_trips(offset in any::<u64>(), token in any::<u32>(), length in any::<u32>()) {
        let d = BufferDescriptorV1 { offset, token, length };
        prop_assert_eq!(BufferDescriptorV1::decode(&d.to_bytes()), Ok(d));
    }

    /// Arbitrary bytes thrown at either role, at any stage, end in a clean state.
    #[test]
    fn connection_survives_garbage(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1400), 1..12), server in any::<bool>(), valid_first in any::<bool>()) {
        let now = Instant::now();
        let role = if server { Role::Server } else { Role::Client };
        let mut c = Connection::new(role, Config::ksmbd(), now);
        if valid_first {
            if server {
                let req = NegotiateRequest { min_version: 0x100, max_version: 0x100, credits_requested: 255, preferred_send_size: 1364, max_receive_size: 1364, max_fragmented_size: 1 << 20 };
                c.handle_recv(now, &req.to_bytes());
            } else {
                let resp = NegotiateResponse { min_version: 0x100, max_version: 0x100, negotiated_version: 0x100, credits_requested: 255, credits_granted: 255, status: 0, max_read_write_size: 1 << 20, preferred_send_size: 1364, max_receive_size: 1364, max_fragmented_size: 1 << 20 };
                c.handle_recv(now, &resp.to_bytes());
            }
        }
        for m in &msgs {
            c.handle_recv(now, m);
            while let Some(a) = c.poll_action() {
                if let Action::PostSend { slot, len, .. } = a {
                    prop_assert_eq!(c.send_bytes(slot).len(), len as usize);
                }
            }
            while c.poll_event().is_some() {}
        }
        c.handle_timeout(now + Duration::from_secs(1000));
        prop_assert!(matches!(c.state(), State::Disconnected | State::Established));
    }

    /// Plans cover exactly the requested bytes, in order, inside every limit.
    #[test]
    fn rdma_plans_respect_limits(
        desc_lens in proptest::collection::vec(0u32..200_000, 1..20),
        seg_lens in proptest::collection::vec(0u32..70_000, 1..40),
        max_sge in 1usize..8, max_msg in 1u32..300_000, bif in 1u64..1_000_000, depth in 1u16..10,
    ) {
        let limits = RdmaLimits { max_sge, max_message_size: max_msg, max_outstanding_reads: depth, max_outstanding_wrs: depth * 2, max_bytes_in_flight: bif };
        let mut cfg = Config::ksmbd();
        cfg.max_read_write_size = u32::MAX;
        cfg.rdma = limits;
        let (mut f, _, _) = connect(Config::cifs(), cfg);
        let total_remote: u64 = desc_lens.iter().map(|&l| u64::from(l)).sum();
        let total_local: u64 = seg_lens.iter().map(|&l| u64::from(l)).sum();
        let len = total_remote.min(total_local);
        prop_assume!(len > 0);
        let rkey = f.register(Side::Client, 0x10_0000, total_remote as usize, true, true);
        let lkey = f.register(Side::Server, 0x20_0000, total_local as usize, true, true);
        let mut off = 0;
        let descs: Vec<_> = desc_lens.iter().map(|&l| { let d = BufferDescriptorV1 { offset: 0x10_0000 + off, token: rkey, length: l }; off += u64::from(l); d }).collect();
        let mut off = 0;
        let segs: Vec<_> = seg_lens.iter().map(|&l| { let s = LocalSegment { lkey, addr: 0x20_0000 + off, len: l }; off += u64::from(l); s }).collect();
        let mut pat = Vec::new();
        pattern(0, len, total_local as usize, &mut pat);
        f.region_mut(lkey).unwrap().data.copy_from_slice(&pat);
        let now = f.now;
        let op = f.conn(Side::Server).rdma_write(now, &descs, &segs, len).unwrap();
        f.run_quiet(Duration::from_secs(10));
        let done = std::iter::from_fn(|| f.poll_event(Side::Server)).find_map(|e| match e { Event::RdmaDone { op: o, result } if o == op => Some(result), _ => None });
        prop_assert_eq!(done, Some(Ok(len)));
        // Descriptors and segments are both laid out contiguously, so byte i lands at i.
        let remote = &f.region(rkey).unwrap().data;
        prop_assert!(remote[..len as usize] == pat[..len as usize]);
        prop_assert!(remote[len as usize..].iter().all(|&b| b == 0));
        prop_assert!(f.stats.max_rdma_wr_sges <= max_sge);
        prop_assert!(f.stats.max_rdma_wr_len <= max_msg);
        prop_assert!(f.stats.max_rdma_bytes_in_flight <= bif.max(1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random configurations and traffic: every message arrives intact and credits are
    /// never overrun.
    #[test]
    fn random_configs_exchange_cleanly(
        ccred in 2u16..300, scred in 2u16..300, ctarget in 1u16..300, starget in 1u16..300,
        csend in 128u32..9000, crecv in 128u32..9000, ssend in 128u32..9000, srecv in 128u32..9000,
        latency_us in 0u64..200, seed in any::<u64>(),
    ) {
        let mut c = Config::cifs();
        c.receive_credit_max = ccred; c.send_credit_target = ctarget; c.max_send_size = csend; c.max_receive_size = crecv;
        c.max_fragmented_recv_size = 131_072;
        let mut s = Config::ksmbd();
        s.receive_credit_max = scred; s.send_credit_target = starget; s.max_send_size = ssend; s.max_receive_size = srecv;
        s.max_fragmented_recv_size = 131_072;
        // Any sizes work: each side clamps what it sends to what the other receives.
        let fc = FabricConfig { latency: Duration::from_micros(latency_us), seed, ..Default::default() };
        let (mut f, _, _) = connect_with(c, s, fc);
        let r = run_traffic(&mut f, 30, seed, 200_000, Duration::from_secs(100), Side::Client);
        prop_assert_eq!(r.outcome, Outcome::Completed);
        prop_assert_eq!(r.mismatched, 0);
        prop_assert_eq!(f.stats.credit_violations, 0);
        prop_assert_eq!(f.stats.rnr_events, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Random mixes of faults at random moments: the run completes or ends in a clean
    /// disconnect with both sides down; never a stall, never a panic.
    #[test]
    fn random_faults_end_cleanly(
        seed in any::<u64>(),
        lose_send in 0u32..3, lose_recv in 0u32..3, late_recv_us in prop_oneof![Just(0u64), 1u64..50],
        reorder in any::<bool>(), jitter_us in 0u64..500, freeze_at in prop_oneof![Just(None), (0u64..40).prop_map(Some)],
        victim_server in any::<bool>(),
    ) {
        let fc = FabricConfig { latency: Duration::from_micros(5), seed, ..Default::default() };
        let mut s = Config::ksmbd();
        s.max_fragmented_recv_size = 131_072;
        let (mut f, _, _) = connect_with(Config::cifs(), s, fc);
        let victim = if victim_server { Side::Server } else { Side::Client };
        let other = victim.peer();
        // Warm up, then inject.
        let r = run_traffic(&mut f, freeze_at.unwrap_or(5), seed, 200_000, Duration::from_secs(10), other);
        prop_assert_eq!(r.outcome, Outcome::Completed);
        {
            let fl = f.faults(victim);
            fl.lose_send_completions = lose_send;
            fl.lose_recv_completions = lose_recv;
            fl.recv_post_delay = Duration::from_micros(late_recv_us);
            fl.reorder_completions = reorder;
            fl.jitter = Duration::from_micros(jitter_us);
            fl.frozen = freeze_at.is_some();
        }
        let r = run_traffic(&mut f, 60, seed ^ 1, 200_000, Duration::from_secs(2000), other);
        match r.outcome {
            Outcome::Completed => {
                prop_assert!(freeze_at.is_none());
                if lose_recv == 0 {
                    prop_assert_eq!(r.mismatched, 0);
                }
            }
            Outcome::Disconnected(_) => {
                f.run_quiet(Duration::from_secs(1));
                prop_assert_eq!(f.end(other).conn.state(), State::Disconnected);
            }
            // A receive completion lost by the driver loses that message silently (MS-SMBD
            // has no sequence numbers); the connection itself survives and keeps working.
            Outcome::Stalled => {
                let missing = 120 - r.delivered[0] - r.delivered[1];
                prop_assert!(lose_recv > 0 && missing <= u64::from(lose_recv), "stalled: {:?}", r);
                prop_assert_eq!(f.end(victim).conn.state(), State::Established);
                prop_assert_eq!(f.end(other).conn.state(), State::Established);
            }
        }
        if late_recv_us == 0 && lose_recv == 0 {
            prop_assert_eq!(f.stats.rnr_events, 0);
        }
    }
}

/// One step of a hand-played client against a real server connection.
#[derive(Debug, Clone)]
enum PeerOp {
    /// A single-fragment data transfer message (len 0 = empty) granting `grant` credits.
    Send { grant: u16, len: usize, response_requested: bool },
    /// The server's upper layer sends a message of this size.
    ServerSend(usize),
    /// Virtual time passes.
    Tick(u64),
}

fn peer_op() -> impl Strategy<Value = PeerOp> {
    prop_oneof![
        6 => (0u16..6, prop_oneof![Just(0usize), 1usize..=1340], any::<bool>())
            .prop_map(|(grant, len, response_requested)| PeerOp::Send { grant, len, response_requested }),
        3 => (1usize..6000).prop_map(PeerOp::ServerSend),
        1 => (0u64..70).prop_map(PeerOp::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The server state machine against a model of the credit rules, driven by a client
    /// played by hand (which may overrun its credits on purpose). After every step: the
    /// server never sends without a credit and keeps its last credit for a message that
    /// grants; it never grants more than it has receives posted; a client message sent
    /// without a credit ends the connection with CreditsOverrun and nothing else does
    /// (apart from an unanswered keepalive after 125 s of silence); RESPONSE_REQUESTED is
    /// answered at once when credits allow; every data byte arrives in order.
    #[test]
    fn server_obeys_the_credit_rules(target in 1u16..40, recv_max in 2u16..40, ops in proptest::collection::vec(peer_op(), 1..80)) {
        use smbdirect_transport::smbd::{DisconnectReason, ProtocolError};
        use smbdirect_transport::wire::FLAG_RESPONSE_REQUESTED;
        let start = Instant::now();
        let mut now = start;
        let mut cfg = Config::ksmbd();
        cfg.receive_credit_max = recv_max;
        let mut s = Connection::new(Role::Server, cfg, now);
        // Model state.
        let mut recv_posted: i64 = 0; // receives the server has posted and not consumed
        let mut client_credits: i64 = 0; // credits the server granted the client, unused
        let mut server_credits: i64 = 0; // credits the client granted the server, unused
        let mut sent_bytes: Vec<u8> = Vec::new();
        let mut got_bytes: Vec<u8> = Vec::new();
        let mut last_peer_send = now;
        let mut overrun = false;
        let mut counter = 0u8;

        // Executes the server's actions; returns how many data transfer messages it sent.
        let drain = |s: &mut Connection, recv_posted: &mut i64, client_credits: &mut i64, server_credits: &mut i64, negotiated: bool, now: Instant| -> Result<usize, TestCaseError> {
            let mut sends = 0;
            while let Some(a) = s.poll_action() {
                match a {
                    Action::PostReceive { .. } => *recv_posted += 1,
                    Action::PostSend { slot, .. } => {
                        let bytes = s.send_bytes(slot).to_vec();
                        if negotiated {
                            let (h, _) = DataTransferHeader::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                            prop_assert!(*server_credits >= 1, "server sent with no credit");
                            prop_assert!(*server_credits >= 2 || h.credits_granted > 0, "last credit spent without a grant");
                            *server_credits -= 1;
                            *client_credits += i64::from(h.credits_granted);
                            sends += 1;
                        } else {
                            let r = NegotiateResponse::decode_valid(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
                            *client_credits += i64::from(r.credits_granted);
                        }
                        s.handle_send_complete(now, slot, Ok(()));
                    }
                    _ => {}
                }
                prop_assert!(*client_credits <= *recv_posted, "granted {} with {} receives posted", client_credits, recv_posted);
            }
            Ok(sends)
        };

        drain(&mut s, &mut recv_posted, &mut client_credits, &mut server_credits, false, now)?;
        let req = NegotiateRequest { min_version: 0x100, max_version: 0x100, credits_requested: target, preferred_send_size: 1364, max_receive_size: 1364, max_fragmented_size: 1 << 20 };
        recv_posted -= 1;
        s.handle_recv(now, &req.to_bytes());
        drain(&mut s, &mut recv_posted, &mut client_credits, &mut server_credits, false, now)?;
        let negotiated = true;
        prop_assert_eq!(s.state(), State::Established);

        for op in ops {
            match op {
                PeerOp::Send { grant, len, response_requested } => {
                    let h = DataTransferHeader { credits_requested: target, credits_granted: grant, flags: if response_requested { FLAG_RESPONSE_REQUESTED } else { 0 }, ..Default::default() };
                    let data: Vec<u8> = (0..len).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                    let mut b = vec![0u8; 24 + len];
                    let n = h.encode_with_data(&data, &mut b).unwrap();
                    if client_credits == 0 {
                        overrun = true;
                    }
                    client_credits -= 1;
                    recv_posted -= 1;
                    server_credits += i64::from(grant);
                    sent_bytes.extend_from_slice(&data);
                    last_peer_send = now;
                    s.handle_recv(now, &b[..n]);
                    if overrun {
                        prop_assert_eq!(s.state(), State::Disconnected);
                        let evs: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
                        prop_assert!(evs.contains(&Event::Disconnected(DisconnectReason::Protocol(ProtocolError::CreditsOverrun))), "{:?}", evs);
                        return Ok(());
                    }
                    let answered = drain(&mut s, &mut recv_posted, &mut client_credits, &mut server_credits, negotiated, now)?;
                    if response_requested && s.state() == State::Established {
                        // Credits after the message: the answer must go out now if allowed.
                        let may = server_credits >= 2 || (server_credits + answered as i64 >= 1 && s.credits().grantable() > 0);
                        prop_assert!(answered > 0 || !may, "RESPONSE_REQUESTED not answered with {} credits", server_credits);
                    }
                }
                PeerOp::ServerSend(len) => {
                    if s.state() == State::Established {
                        let m = vec![7u8; len];
                        s.send(now, &m).unwrap();
                    }
                }
                PeerOp::Tick(secs) => {
                    now += Duration::from_secs(secs);
                    s.handle_timeout(now);
                }
            }
            drain(&mut s, &mut recv_posted, &mut client_credits, &mut server_credits, negotiated, now)?;
            while let Some(e) = s.poll_event() {
                match e {
                    Event::Message(m) => got_bytes.extend_from_slice(&m),
                    Event::Disconnected(r) => {
                        prop_assert_eq!(r, DisconnectReason::KeepaliveTimeout);
                        prop_assert!(now.duration_since(last_peer_send) >= Duration::from_secs(125));
                        return Ok(());
                    }
                    _ => {}
                }
            }
            prop_assert_eq!(s.state(), State::Established);
            prop_assert!(sent_bytes.starts_with(&got_bytes) && got_bytes.len() == sent_bytes.len(), "data lost or reordered");
        }
    }
}
