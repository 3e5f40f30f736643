//! Many messages of random sizes in both directions, credits checked on every step.

mod common;

use std::time::Duration;

use common::*;
use smbdirect_transport::fabric::{Fabric, FabricConfig, Side};
use smbdirect_transport::smbd::{Config, DisconnectReason, Event, ProtocolError, SendError};

/// Sends `n` messages each way with sizes uniform in 1..=peer's MaxFragmentedSize, keeping
/// at most `window` bytes queued per side, and checks every byte on arrival. Returns the
/// number of fabric steps.
pub fn exchange(f: &mut Fabric, n: u64, seed: u64, window: usize) -> u64 {
    let mut rng = Rng(seed | 1);
    let max = [
        f.end(Side::Client).conn.negotiated().peer_max_fragmented_size as u64,
        f.end(Side::Server).conn.negotiated().peer_max_fragmented_size as u64,
    ];
    let mut sent = [0u64; 2];
    let mut recv = [0u64; 2];
    let mut buf = Vec::new();
    let mut expect = Vec::new();
    let mut steps = 0u64;
    let mut idle_rounds = 0;
    let mut last_delivered = 0;
    let sides = [Side::Client, Side::Server];
    while recv[0] < n || recv[1] < n {
        for (i, &side) in sides.iter().enumerate() {
            while sent[i] < n && f.end(side).conn.queued_bytes() < window {
                let len = rng.range(1, max[i]) as usize;
                pattern(i as u8, sent[i], len, &mut buf);
                f.send(side, &buf).unwrap();
                sent[i] += 1;
            }
        }
        let progressed = f.step();
        steps += 1;
        assert_eq!(f.stats.credit_violations, 0, "a send was posted with no receive at the peer (step {steps})");
        assert_eq!(f.stats.rnr_events, 0);
        // In both directions: the sender's credits plus its messages still on the wire
        // never exceed the receives the peer has posted.
        if let Err(e) = f.check_credit_invariant() {
            panic!("step {steps}: {e}");
        }
        for (i, &side) in sides.iter().enumerate() {
            while let Some(e) = f.poll_event(side) {
                match e {
                    Event::Message(m) => {
                        let from = 1 - i;
                        pattern(from as u8, recv[from], m.len(), &mut expect);
                        assert_eq!(m.len(), expect.len());
                        assert!(m == expect, "message {} from {:?} corrupted", recv[from], sides[from]);
                        recv[from] += 1;
                        f.conn(side).recycle(m);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        let delivered = f.stats.messages_delivered;
        if progressed || delivered != last_delivered {
            last_delivered = delivered;
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
            let limit = f.now + Duration::from_secs(1);
            assert!(f.advance(limit), "hang: nothing scheduled, sent {sent:?} received {recv:?}");
            assert!(
                idle_rounds < 1000,
                "no progress at {:?}: sent {sent:?} received {recv:?}\nclient {}\nserver {}",
                f.now,
                f.end(Side::Client).describe(),
                f.end(Side::Server).describe(),
            );
        }
    }
    steps
}

fn count() -> u64 {
    std::env::var("SMBD_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

#[test]
fn ten_thousand_messages_each_way_cifs_ksmbd_parameters() {
    // cifs's sizes (1364 bytes per send) make for the most fragments and credit traffic.
    // Both sides' real MaxFragmentedSize: up to 1 MiB client -> server, up to 173,910 bytes
    // server -> client.
    let (mut f, c, s) = connect(Config::cifs(), Config::ksmbd());
    assert_eq!((c.peer_max_fragmented_size, s.peer_max_fragmented_size), (1 << 20, 173_910));
    exchange(&mut f, count(), 42, 256 * 1024);
    let c = f.end(Side::Client).conn.stats();
    let s = f.end(Side::Server).conn.stats();
    assert_eq!(c.messages_sent, count());
    assert_eq!(s.messages_received, count());
    assert_eq!(s.messages_sent, count());
    assert_eq!(c.messages_received, count());
    assert_eq!(f.stats.credit_violations, 0);
}

#[test]
fn many_messages_windows_sizes_with_latency() {
    let mut client = Config::windows();
    client.max_send_size = 8192;
    client.max_fragmented_recv_size = 131_072;
    let mut server = Config::windows();
    server.max_send_size = 8192;
    server.max_fragmented_recv_size = 131_072;
    let fc = FabricConfig { latency: Duration::from_micros(50), ..Default::default() };
    let (mut f, _, _) = connect_with(client, server, fc);
    exchange(&mut f, count() / 4, 7, 1 << 20);
}

#[test]
fn tiny_credit_windows_still_flow() {
    for (cred, seed) in [(2u16, 1u64), (3, 2), (5, 3), (16, 4)] {
        let mut client = Config::cifs();
        client.receive_credit_max = cred;
        client.send_credit_target = cred;
        let mut server = Config::ksmbd();
        server.receive_credit_max = cred;
        server.send_credit_target = cred;
        server.max_fragmented_recv_size = 131_072;
        let (mut f, _, _) = connect(client, server);
        exchange(&mut f, 50, seed, 64 * 1024);
    }
}

#[test]
fn message_limits() {
    let (mut f, _, _) = connect(Config::cifs(), Config::ksmbd());
    assert_eq!(f.send(Side::Client, &[]), Err(SendError::Empty));
    let big = vec![0u8; 173_911];
    assert_eq!(f.send(Side::Server, &big), Err(SendError::TooLarge { len: 173_911, max: 173_910 }));
    assert_eq!(f.send(Side::Server, &big[..173_910]), Ok(()));
    f.run_quiet(Duration::from_millis(10));
    assert!(matches!(f.poll_event(Side::Client), Some(Event::Message(m)) if m.len() == 173_910));
}

#[test]
fn peer_exceeding_max_fragmented_size_is_disconnected_cleanly() {
    // A client that ignores the server's MaxFragmentedSize: make it believe the limit is
    // larger than what the server accepts by giving the server a smaller limit than it
    // announces is not possible, so announce the truth and lie at the client instead.
    let mut server = Config::ksmbd();
    server.max_fragmented_recv_size = 131_072;
    let (mut f, _, _) = connect(Config::cifs(), server);
    // The client refuses to send more than the server accepts...
    assert!(f.send(Side::Client, &vec![1u8; 131_073]).is_err());
    // ...so forge the fragments by hand on a raw server connection.
    use smbdirect_transport::smbd::{Connection, Role, State};
    use smbdirect_transport::wire::{DataTransferHeader, NegotiateRequest};
    let now = f.now;
    let mut s = Connection::new(Role::Server, server, now);
    let req = NegotiateRequest {
        min_version: 0x100,
        max_version: 0x100,
        credits_requested: 255,
        preferred_send_size: 1364,
        max_receive_size: 1364,
        max_fragmented_size: 1 << 20,
    };
    s.handle_recv(now, &req.to_bytes());
    assert_eq!(s.state(), State::Established);
    let mut b = [0u8; 1364];
    let h = DataTransferHeader { credits_requested: 255, remaining_data_length: 131_072, ..Default::default() };
    let n = h.encode_with_data(&[9u8; 100], &mut b).unwrap();
    s.handle_recv(now, &b[..n]);
    assert_eq!(s.state(), State::Disconnected);
    let evs: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert!(evs.contains(&Event::Disconnected(DisconnectReason::Protocol(ProtocolError::FragmentedTooLarge {
        size: 131_172,
        max: 131_072
    }))));
}
