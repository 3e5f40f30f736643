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
        (0..8192 + 4099).map(|_| r.next() as u8).collect()
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
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

pub fn disconnected(f: &Fabric, side: Side) -> bool {
    f.end(side).conn.state() == State::Disconnected
}
