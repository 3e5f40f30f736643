#![allow(dead_code)]
//! Helpers shared by the fabric tests.

use std::time::Duration;

use smbdirect_transport::fabric::{Fabric, FabricConfig, Side};
use smbdirect_transport::smbd::{Config, Event, Negotiated, State};


pub fn connect_with(client: Config, server: Config, fc: FabricConfig) -> (Fabric, Negotiated, Negotiated) {
    let mut f = Fabric::new(client, server, fc);
    f.run_quiet(Duration::from_millis(10));
    assert_eq!(f.stats.credit_violations, 0);
    let mut got = [None, None];
    for (i, side) in [Side::Client, Side::Server].into_iter().enumerate() {
        while let Some(e) = f.poll_event(side) {
            if let Event::Connected(n) = e {
                got[i] = Some(n);
            }
        }
    }
    let (Some(c), Some(s)) = (got[0], got[1]) else { panic!("not connected: {:?} {:?}", f.end(Side::Client).conn.state(), f.end(Side::Server).conn.state()) };
    assert_eq!(f.end(Side::Client).conn.state(), State::Established);
    assert_eq!(f.end(Side::Server).conn.state(), State::Established);
    (f, c, s)
}

pub fn connect(client: Config, server: Config) -> (Fabric, Negotiated, Negotiated) {
    connect_with(client, server, FabricConfig::default())
}

/// Deterministic content for message `idx` from `side`, length `len`: a fixed random
/// block, entered at an offset that depends on both (cheap enough for gigabytes in debug).
pub fn pattern(side: u8, idx: u64, len: usize, out: &mut Vec<u8>) {
    use std::sync::OnceLock;
    static BLOCK: OnceLock<Vec<u8>> = OnceLock::new();
    let block = BLOCK.get_or_init(|| {
        let mut r = Rng(0x1234_5678_9abc_def1);
        (0..8192 + 4099).map(|_| r.next_u64() as u8).collect()
    });
    out.clear();
    let start = ((idx.wrapping_mul(2_654_435_761) ^ (u64::from(side) << 7)) % 4099) as usize;
    let window = &block[start..start + 8192];
    while out.len() < len {
        let n = (len - out.len()).min(window.len());
        out.extend_from_slice(&window[..n]);
    }
}

pub struct Rng(pub u64);
impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

pub fn disconnected(f: &Fabric, side: Side) -> bool {
    f.end(side).conn.state() == State::Disconnected
}

/// How a run under faults ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every message arrived intact.
    Completed,
    /// The connection ended (cleanly, with a reason) on this side.
    Disconnected(smbdirect_transport::smbd::DisconnectReason),
    /// Neither: still connected, not everything delivered, nothing scheduled or out of time.
    Stalled,
}

/// Result of [`run_traffic`].
#[derive(Debug)]
pub struct Run {
    pub outcome: Outcome,
    pub delivered: [u64; 2],
    /// Messages that arrived with content other than expected (lost predecessor).
    pub mismatched: u64,
    pub elapsed: Duration,
}

/// Like the message exchange, but tolerant: stops at the first disconnect of `watch`
/// (or either side), or after `limit` of virtual time.
pub fn run_traffic(f: &mut Fabric, n: u64, seed: u64, window: usize, limit: Duration, watch: Side) -> Run {
    use smbdirect_transport::smbd::Event;
    let start = f.now;
    let deadline = start + limit;
    let mut rng = Rng(seed | 1);
    let max = [
        f.end(Side::Client).conn.negotiated().peer_max_fragmented_size as u64,
        f.end(Side::Server).conn.negotiated().peer_max_fragmented_size as u64,
    ];
    let mut sent = [0u64; 2];
    let mut recv = [0u64; 2];
    let mut mismatched = 0;
    let mut buf = Vec::new();
    let mut expect = Vec::new();
    let sides = [Side::Client, Side::Server];
    let mut reason = None;
    loop {
        for (i, &side) in sides.iter().enumerate() {
            while sent[i] < n && f.end(side).conn.state() == State::Established && f.end(side).conn.queued_bytes() < window {
                let len = rng.range(1, max[i].min(300_000)) as usize;
                pattern(i as u8, sent[i], len, &mut buf);
                f.send(side, &buf).unwrap();
                sent[i] += 1;
            }
        }
        let progressed = f.step();
        // Faults or not, credits never promise a receive that is not posted.
        if let Err(e) = f.check_credit_invariant() {
            panic!("{e}");
        }
        for (i, &side) in sides.iter().enumerate() {
            while let Some(e) = f.poll_event(side) {
                match e {
                    Event::Message(m) => {
                        let from = 1 - i;
                        pattern(from as u8, recv[from], m.len(), &mut expect);
                        if m != expect {
                            mismatched += 1;
                        }
                        recv[from] += 1;
                        f.conn(side).recycle(m);
                    }
                    Event::Disconnected(r) if side == watch || reason.is_none() => reason = Some(r),
                    _ => {}
                }
            }
        }
        if let Some(r) = reason {
            // Let the other side hear about it too.
            f.settle();
            return Run { outcome: Outcome::Disconnected(r), delivered: recv, mismatched, elapsed: f.now - start };
        }
        if recv[0] >= n && recv[1] >= n {
            return Run { outcome: Outcome::Completed, delivered: recv, mismatched, elapsed: f.now - start };
        }
        if !progressed && !f.advance(deadline) {
            return Run { outcome: Outcome::Stalled, delivered: recv, mismatched, elapsed: f.now - start };
        }
    }
}
