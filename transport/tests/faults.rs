//! Keepalive, timeouts and injected faults: each ends in a clean disconnect or is
//! survived; never a hang, never a panic.

mod common;

use std::time::Duration;

use common::*;
use smbdirect_transport::fabric::{FabricConfig, Side};
use smbdirect_transport::smbd::{CompletionError, Config, DisconnectReason, Event, State};

fn ksmbd_small() -> Config {
    let mut c = Config::ksmbd();
    c.max_fragmented_recv_size = 131_072;
    c
}

#[test]
fn keepalive_is_sent_and_answered() {
    let (mut f, _, _) = connect(Config::cifs(), Config::ksmbd());
    let start = f.now;
    f.run_until(start + Duration::from_secs(600));
    assert_eq!(f.end(Side::Client).conn.state(), State::Established);
    assert_eq!(f.end(Side::Server).conn.state(), State::Established);
    let ck = f.end(Side::Client).conn.stats().keepalives_sent;
    let sk = f.end(Side::Server).conn.stats().keepalives_sent;
    // Both sides idle for 120 s at a time: about one keepalive every 120 s in total
    // (an answer resets the other side's idle timer).
    assert!(ck + sk >= 4, "client {ck} server {sk}");
    assert!(ck + sk <= 10, "client {ck} server {sk}");
    // Every keepalive was answered (the fabric delivers each one).
    assert_eq!(f.end(Side::Client).conn.stats().keepalives_answered, ck);
    assert_eq!(f.end(Side::Server).conn.stats().keepalives_answered, sk);
    assert_eq!(f.stats.credit_violations, 0);
}

#[test]
fn unanswered_keepalive_disconnects() {
    let (mut f, _, _) = connect(Config::cifs(), Config::ksmbd());
    let start = f.now;
    f.faults(Side::Client).frozen = true;
    f.run_until(start + Duration::from_secs(600));
    assert!(disconnected(&f, Side::Server));
    let evs: Vec<_> = std::iter::from_fn(|| f.poll_event(Side::Server)).collect();
    assert_eq!(evs, vec![Event::Disconnected(DisconnectReason::KeepaliveTimeout)]);
    assert_eq!(f.end(Side::Server).conn.stats().keepalives_sent, 1);
    assert_eq!(f.end(Side::Server).conn.stats().keepalives_answered, 0);
    // 120 s idle, then 5 s for the answer.
    let t = f.now - start;
    assert!(t >= Duration::from_secs(125) && t < Duration::from_secs(126), "{t:?}");
}

/// An interval shorter than the timeout (2 s / 5 s): the unanswered keepalive still ends
/// the connection after the timeout; later idle periods do not push its deadline back.
#[test]
fn unanswered_keepalive_disconnects_with_a_short_interval() {
    let mut server = Config::ksmbd();
    server.keepalive_interval = Duration::from_secs(2);
    server.keepalive_timeout = Duration::from_secs(5);
    let (mut f, _, _) = connect(Config::cifs(), server);
    let start = f.now;
    f.faults(Side::Client).frozen = true;
    f.run_until(start + Duration::from_secs(60));
    assert!(disconnected(&f, Side::Server));
    let evs: Vec<_> = std::iter::from_fn(|| f.poll_event(Side::Server)).collect();
    assert_eq!(evs, vec![Event::Disconnected(DisconnectReason::KeepaliveTimeout)]);
    assert_eq!(f.end(Side::Server).conn.stats().keepalives_sent, 1);
    // 2 s idle, then 5 s for the answer.
    let t = f.now - start;
    assert!(t >= Duration::from_secs(7) && t < Duration::from_secs(8), "{t:?}");
}

#[test]
fn busy_connection_sends_no_keepalive() {
    let (mut f, _, _) = connect(Config::cifs(), ksmbd_small());
    // One message every 60 s both ways for 10 minutes.
    for _ in 0..10 {
        f.send(Side::Client, b"ping").unwrap();
        f.send(Side::Server, b"pong").unwrap();
        let t = f.now + Duration::from_secs(60);
        f.run_until(t);
        f.now = t;
    }
    assert_eq!(f.end(Side::Client).conn.stats().keepalives_sent, 0);
    assert_eq!(f.end(Side::Server).conn.stats().keepalives_sent, 0);
}

#[test]
fn peer_stops_answering_mid_stream() {
    let (mut f, _, _) = connect(Config::cifs(), ksmbd_small());
    // Let some traffic flow, then freeze the server.
    let r = run_traffic(&mut f, 20, 3, 256 * 1024, Duration::from_secs(1), Side::Client);
    assert_eq!(r.outcome, Outcome::Completed);
    f.faults(Side::Server).frozen = true;
    let r = run_traffic(&mut f, 200, 4, 256 * 1024, Duration::from_secs(1000), Side::Client);
    assert_eq!(r.outcome, Outcome::Disconnected(DisconnectReason::KeepaliveTimeout), "{r:?}");
    assert_eq!(f.stats.credit_violations, 0);
    assert_eq!(f.stats.rnr_events, 0, "the client stopped on credits, never overran");
}

#[test]
fn lost_send_completion_ends_in_timeout() {
    let (mut f, _, _) = connect(Config::cifs(), ksmbd_small());
    f.faults(Side::Client).lose_send_completions = 1;
    let r = run_traffic(&mut f, 100, 5, 256 * 1024, Duration::from_secs(1000), Side::Client);
    // The messages were delivered; the client's slot never came back...
    assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
    assert_eq!(r.mismatched, 0);
    f.run_quiet(Duration::from_millis(10));
    assert_eq!(f.end(Side::Client).conn.sends_outstanding(), 1);
    // ...and 30 s later the client gives up on it.
    let start = f.now;
    f.run_until(start + Duration::from_secs(100));
    assert!(disconnected(&f, Side::Client));
    assert_eq!(f.poll_event(Side::Client), Some(Event::Disconnected(DisconnectReason::CompletionTimeout)));
    assert!(disconnected(&f, Side::Server));
}

#[test]
fn lost_receive_completion_is_caught_or_survived() {
    // MS-SMBD has no sequence numbers, so a receive completion lost by a driver can only
    // be caught when it breaks reassembly or credits. Whatever happens: no panic, no hang.
    for seed in 0..6u64 {
        let (mut f, _, _) = connect(Config::cifs(), ksmbd_small());
        f.faults(Side::Server).lose_recv_completions = 1 + seed as u32;
        let lost = 1 + seed;
        let r = run_traffic(&mut f, 100, seed + 10, 256 * 1024, Duration::from_secs(1000), Side::Server);
        if let Outcome::Disconnected(_) = r.outcome {
            // Caught: both ends are down, with a reason.
            f.run_quiet(Duration::from_secs(1));
            assert!(disconnected(&f, Side::Server) && disconnected(&f, Side::Client), "{r:?}");
        }
        if r.outcome == Outcome::Completed {
            assert!(r.mismatched <= lost, "{r:?}");
        }
        if r.outcome == Outcome::Stalled {
            // Survived with the lost messages missing: the connection still works.
            assert!(200 - r.delivered[0] - r.delivered[1] <= lost, "{r:?}");
            assert_eq!(f.end(Side::Server).conn.state(), State::Established);
            f.send(Side::Client, b"still alive").unwrap();
            f.run_quiet(Duration::from_millis(10));
            assert!(matches!(f.poll_event(Side::Server), Some(Event::Message(_))));
        }
    }
}

#[test]
fn receive_posted_late_is_rnr_and_kills_the_connection() {
    let (mut f, _, _) = connect(Config::cifs(), ksmbd_small());
    f.faults(Side::Server).recv_post_delay = Duration::from_millis(5);
    let r = run_traffic(&mut f, 100, 6, 256 * 1024, Duration::from_secs(10), Side::Client);
    assert_eq!(r.outcome, Outcome::Disconnected(DisconnectReason::Completion(CompletionError::RnrRetryExceeded)), "{r:?}");
    assert!(f.stats.rnr_events >= 1);
    assert!(disconnected(&f, Side::Server));
}

#[test]
fn reordered_completions_are_survived() {
    for seed in 0..4u64 {
        let fc = FabricConfig { seed: seed + 1, ..Default::default() };
        let (mut f, _, _) = connect_with(Config::cifs(), ksmbd_small(), fc);
        f.faults(Side::Client).reorder_completions = true;
        f.faults(Side::Server).reorder_completions = true;
        let r = run_traffic(&mut f, 300, seed, 512 * 1024, Duration::from_secs(100), Side::Client);
        assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
        assert_eq!(r.mismatched, 0);
        assert_eq!(f.stats.credit_violations, 0);
    }
}

#[test]
fn delays_and_jitter_are_survived() {
    let fc = FabricConfig { latency: Duration::from_millis(1), ..Default::default() };
    let (mut f, _, _) = connect_with(Config::cifs(), ksmbd_small(), fc);
    f.faults(Side::Client).jitter = Duration::from_millis(20);
    f.faults(Side::Server).jitter = Duration::from_millis(3);
    let r = run_traffic(&mut f, 300, 9, 512 * 1024, Duration::from_secs(1000), Side::Client);
    assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
    assert_eq!(r.mismatched, 0);
    assert_eq!(f.stats.credit_violations, 0);
}

#[test]
fn local_close_reaches_the_peer() {
    let (mut f, _, _) = connect(Config::cifs(), Config::ksmbd());
    let now = f.now;
    f.conn(Side::Client).close(now);
    f.settle();
    assert!(disconnected(&f, Side::Server));
    assert_eq!(f.poll_event(Side::Server), Some(Event::Disconnected(DisconnectReason::PeerDisconnected)));
    assert_eq!(f.poll_event(Side::Client), Some(Event::Disconnected(DisconnectReason::Local)));
    assert!(f.send(Side::Client, b"x").is_err());
}
