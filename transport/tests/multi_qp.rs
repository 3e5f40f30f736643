//! Several connections (queue pairs) between the same two hosts, as with SMB multichannel:
//! completions reordered between the queue pairs, RDMA on every queue pair against the
//! hosts' shared registered memory, and a fault on one queue pair that must not disturb
//! the others.

mod common;

use std::time::Duration;

use common::*;
use smbdirect_transport::fabric::{Fabric, FabricConfig, QpId, Side};
use smbdirect_transport::smbd::{
    CompletionError, Config, DisconnectReason, Event, LocalSegment, RdmaError, RdmaLimits, RdmaOpId, State,
};
use smbdirect_transport::wire::BufferDescriptorV1;

fn server_config() -> Config {
    let mut c = Config::ksmbd();
    c.max_fragmented_recv_size = 131_072;
    c.max_read_write_size = 4 << 20;
    c.rdma = RdmaLimits { max_bytes_in_flight: 128 * 1024, max_message_size: 64 * 1024, ..RdmaLimits::default() };
    c
}

/// One RDMA operation in progress on a queue pair's server end.
struct RdmaJob {
    qp: QpId,
    op: RdmaOpId,
    write: bool,
    client_key: u32,
    server_key: u32,
    expect: Vec<u8>,
}

/// Starts an RDMA READ or WRITE of `len` bytes on `qp` between a fresh client region
/// (described by several descriptors) and a fresh server region (several segments).
fn start_rdma(f: &mut Fabric, qp: QpId, len: usize, write: bool, seed: u64, rng: &mut Rng) -> RdmaJob {
    let cbase = 0x7f00_0000_0000 + seed * 0x1_0000_0000;
    let sbase = 0x5500_0000 + seed * 0x1000_0000;
    let ckey = f.register(Side::Client, cbase, len, true, true);
    let skey = f.register(Side::Server, sbase, len, false, false);
    let mut descs = Vec::new();
    let mut off = 0u64;
    while off < len as u64 {
        let piece = rng.range(1, 100_000).min(len as u64 - off);
        descs.push(BufferDescriptorV1 { offset: cbase + off, token: ckey, length: piece as u32 });
        off += piece;
    }
    let mut segs = Vec::new();
    let mut off = 0u64;
    while off < len as u64 {
        let piece = rng.range(1, 9000).min(len as u64 - off);
        segs.push(LocalSegment { lkey: skey, addr: sbase + off, len: piece as u32 });
        off += piece;
    }
    let mut data = Vec::new();
    pattern(9, seed, len, &mut data);
    let src = if write { skey } else { ckey };
    f.region_mut(src).unwrap().data.copy_from_slice(&data);
    let now = f.now;
    let c = f.conn_at(qp, Side::Server);
    let op = if write { c.rdma_write(now, &descs, &segs, len as u64) } else { c.rdma_read(now, &descs, &segs, len as u64) }
        .expect("plan");
    RdmaJob { qp, op, write, client_key: ckey, server_key: skey, expect: data }
}

/// How a multi-connection run ended, per queue pair.
#[derive(Debug, Default, Clone)]
struct QpResult {
    delivered: [u64; 2],
    rdma_done: u64,
    disconnected: Option<DisconnectReason>,
}

/// Drives `n` messages each way on every queue pair plus `rdma_per_qp` RDMA operations on
/// each, checking after every fabric step: the credit invariant on every queue pair in both
/// directions, no send without a posted receive, messages intact and in order per queue
/// pair, RDMA data intact. Stops when everything finished, or when every connection still
/// up is done and the others ended; panics on a stall (nothing scheduled, or virtual time
/// limit reached).
fn drive(f: &mut Fabric, n: u64, rdma_per_qp: u64, seed: u64) -> Vec<QpResult> {
    let qps: Vec<QpId> = (0..f.qp_count()).map(QpId).collect();
    let mut rng = Rng(seed | 1);
    let mut sent = vec![[0u64; 2]; qps.len()];
    let mut res = vec![QpResult::default(); qps.len()];
    let mut rdma_started = vec![0u64; qps.len()];
    let mut jobs: Vec<RdmaJob> = Vec::new();
    let mut buf = Vec::new();
    let mut expect = Vec::new();
    let sides = [Side::Client, Side::Server];
    let deadline = f.now + Duration::from_secs(600);
    let mut steps = 0u64;
    loop {
        for &qp in &qps {
            let q = qp.0;
            if f.end_at(qp, Side::Server).conn.state() != State::Established {
                continue;
            }
            for (i, &side) in sides.iter().enumerate() {
                let max = u64::from(f.end_at(qp, side).conn.negotiated().peer_max_fragmented_size);
                while sent[q][i] < n && f.end_at(qp, side).conn.queued_bytes() < 200_000 {
                    let len = rng.range(1, max) as usize;
                    pattern((q * 2 + i) as u8, sent[q][i], len, &mut buf);
                    f.send_at(qp, side, &buf).unwrap();
                    sent[q][i] += 1;
                }
            }
            // Keep at most two RDMA operations going per queue pair.
            while rdma_started[q] < rdma_per_qp && jobs.iter().filter(|j| j.qp == qp).count() < 2 {
                let len = rng.range(1, 600_000) as usize;
                let tag = q as u64 * 1000 + rdma_started[q] + 1;
                jobs.push(start_rdma(f, qp, len, rdma_started[q].is_multiple_of(2), tag, &mut rng));
                rdma_started[q] += 1;
            }
        }
        let progressed = f.step();
        steps += 1;
        assert_eq!(f.stats.credit_violations, 0, "a send found no receive posted (step {steps})");
        if let Err(e) = f.check_credit_invariant() {
            panic!("step {steps}: {e}");
        }
        for &qp in &qps {
            let q = qp.0;
            for (i, &side) in sides.iter().enumerate() {
                while let Some(e) = f.poll_event_at(qp, side) {
                    match e {
                        Event::Message(m) => {
                            let from = 1 - i;
                            pattern((q * 2 + from) as u8, res[q].delivered[from], m.len(), &mut expect);
                            assert!(m == expect, "qp {q}: message {} from {:?} corrupted or out of order", res[q].delivered[from], sides[from]);
                            res[q].delivered[from] += 1;
                            f.conn_at(qp, side).recycle(m);
                        }
                        Event::RdmaDone { op, result } => {
                            assert_eq!(side, Side::Server);
                            let k = jobs.iter().position(|j| j.qp == qp && j.op == op).expect("unknown op");
                            let job = jobs.remove(k);
                            match result {
                                Ok(len) => {
                                    assert_eq!(len, job.expect.len() as u64);
                                    let dst = if job.write { job.client_key } else { job.server_key };
                                    assert!(f.region(dst).unwrap().data == job.expect, "qp {q}: RDMA data corrupted");
                                    res[q].rdma_done += 1;
                                }
                                Err(RdmaError::Aborted | RdmaError::Completion(_)) if res[q].disconnected.is_some() || f.end_at(qp, side).conn.state() == State::Disconnected => {}
                                Err(e) => panic!("qp {q}: RDMA failed: {e:?}"),
                            }
                            f.deregister(job.client_key);
                            f.deregister(job.server_key);
                        }
                        Event::Disconnected(r) => {
                            res[q].disconnected.get_or_insert(r);
                        }
                        Event::Connected(_) => {}
                    }
                }
            }
        }
        let finished = qps.iter().all(|qp| {
            let r = &res[qp.0];
            r.disconnected.is_some() || (r.delivered == [n, n] && r.rdma_done == rdma_per_qp)
        });
        if finished {
            f.run_quiet(Duration::from_millis(10));
            return res;
        }
        if !progressed {
            assert!(f.advance(deadline), "stall at {:?} after {steps} steps: {res:?}", f.now);
        }
    }
}

#[test]
fn completions_reordered_between_queue_pairs() {
    for seed in 1..=3u64 {
        let fc = FabricConfig { latency: Duration::from_micros(3), rdma_bytes_per_us: 2000, seed };
        let mut f = Fabric::new(Config::cifs(), server_config(), fc);
        let mut win = Config::windows();
        win.max_fragmented_recv_size = 131_072;
        let q1 = f.connect_another(win, server_config());
        let q2 = f.connect_another(Config::cifs(), server_config());
        f.run_quiet(Duration::from_millis(10));
        for q in [QpId(0), q1, q2] {
            for side in [Side::Client, Side::Server] {
                assert_eq!(f.end_at(q, side).conn.state(), State::Established);
                assert!(matches!(f.poll_event_at(q, side), Some(Event::Connected(_))));
                // Each queue pair's own queues are shuffled too.
                f.faults_at(q, side).reorder_completions = true;
            }
        }
        f.set_reorder_across_qps(Side::Client, true);
        f.set_reorder_across_qps(Side::Server, true);
        let res = drive(&mut f, 300, 6, seed);
        for (q, r) in res.iter().enumerate() {
            assert_eq!(r.disconnected, None, "qp {q}");
            assert_eq!(r.delivered, [300, 300], "qp {q}");
            assert_eq!(r.rdma_done, 6, "qp {q}");
        }
        // The interleaving really differed from queue pair by queue pair.
        assert!(f.stats.cross_qp_reordered > 1000, "only {} cross-QP reorderings", f.stats.cross_qp_reordered);
        assert_eq!(f.stats.rnr_events, 0);
        assert!(f.stats.max_rdma_bytes_in_flight <= 128 * 1024);
    }
}

#[test]
fn in_order_policy_reorders_nothing() {
    // The counter the test above relies on stays at zero without the fault, so it can fail.
    let mut f = Fabric::new(Config::cifs(), server_config(), FabricConfig::default());
    f.connect_another(Config::cifs(), server_config());
    f.run_quiet(Duration::from_millis(10));
    let res = drive(&mut f, 50, 2, 11);
    assert!(res.iter().all(|r| r.delivered == [50, 50] && r.rdma_done == 2));
    assert_eq!(f.stats.cross_qp_reordered, 0);
}

#[test]
fn rnr_on_one_queue_pair_leaves_the_others_running() {
    let fc = FabricConfig { latency: Duration::from_micros(3), seed: 77, ..Default::default() };
    let mut f = Fabric::new(Config::cifs(), server_config(), fc);
    let q1 = f.connect_another(Config::cifs(), server_config());
    f.run_quiet(Duration::from_millis(10));
    f.set_reorder_across_qps(Side::Client, true);
    f.set_reorder_across_qps(Side::Server, true);
    // The server's driver on q1 posts receives late: the client's next send there is RNR.
    f.faults_at(q1, Side::Server).recv_post_delay = Duration::from_millis(5);
    let res = drive(&mut f, 200, 3, 5);
    assert_eq!(res[0].disconnected, None);
    assert_eq!(res[0].delivered, [200, 200]);
    assert_eq!(res[0].rdma_done, 3);
    assert_eq!(res[1].disconnected, Some(DisconnectReason::Completion(CompletionError::RnrRetryExceeded)));
    assert!(f.end_at(q1, Side::Server).conn.state() == State::Disconnected);
    assert!(f.stats.rnr_events >= 1);
}

#[test]
fn invalidation_on_one_queue_pair_revokes_the_token_for_all() {
    // Memory belongs to the host: a token invalidated by a Send-With-Invalidate on one
    // queue pair can no longer be used on another, as on a real NIC.
    let mut f = Fabric::new(Config::cifs(), server_config(), FabricConfig::default());
    let q1 = f.connect_another(Config::cifs(), server_config());
    f.run_quiet(Duration::from_millis(10));
    let mut rng = Rng(3);
    let job = start_rdma(&mut f, QpId(0), 5000, true, 1, &mut rng);
    f.run_quiet(Duration::from_millis(10));
    assert!(std::iter::from_fn(|| f.poll_event(Side::Server)).any(|e| matches!(e, Event::RdmaDone { op, result: Ok(5000) } if op == job.op)));
    let now = f.now;
    f.conn(Side::Server).send_with_invalidate(now, b"read response", job.client_key).unwrap();
    f.run_quiet(Duration::from_millis(10));
    assert!(!f.region(job.client_key).unwrap().valid);
    let descs = [BufferDescriptorV1 { offset: 0x7f01_0000_0000, token: job.client_key, length: 5000 }];
    let segs = [LocalSegment { lkey: job.server_key, addr: 0x6500_0000, len: 5000 }];
    let now = f.now;
    let op = f.conn_at(q1, Side::Server).rdma_read(now, &descs, &segs, 5000).unwrap();
    f.run_quiet(Duration::from_millis(10));
    let evs: Vec<_> = std::iter::from_fn(|| f.poll_event_at(q1, Side::Server)).collect();
    assert!(evs.contains(&Event::RdmaDone { op, result: Err(RdmaError::Completion(CompletionError::RemoteAccess)) }), "{evs:?}");
    // q1 went down; q0 still carries messages.
    assert_eq!(f.end_at(q1, Side::Server).conn.state(), State::Disconnected);
    f.send(Side::Client, b"still here").unwrap();
    f.run_quiet(Duration::from_millis(10));
    assert_eq!(f.poll_event(Side::Server), Some(Event::Message(b"still here".to_vec())));
}
