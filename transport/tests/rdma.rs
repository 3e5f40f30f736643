//! RDMA read and write through the state machine on the fabric: 1 byte to 16 MiB across
//! many descriptors, limits respected, send-with-invalidate, and bad tokens or ranges.

mod common;

use std::time::Duration;

use common::*;
use smbdirect_transport::fabric::{Fabric, FabricConfig, Side};
use smbdirect_transport::smbd::{
    CompletionError, Config, DisconnectReason, Event, LocalSegment, RdmaError, RdmaLimits, RdmaOpId,
};
use smbdirect_transport::wire::BufferDescriptorV1;

const MIB: u64 = 1 << 20;

fn server_config(limits: RdmaLimits) -> Config {
    let mut c = Config::ksmbd();
    c.max_read_write_size = 16 << 20;
    c.rdma = limits;
    c
}

/// Client memory for `len` bytes in several registrations, described by descriptors of
/// random sizes (as an SMB2 client's channel info would).
fn client_buffers(f: &mut Fabric, len: u64, rng: &mut Rng) -> (Vec<u32>, Vec<BufferDescriptorV1>) {
    let regions = (len / (3 * MIB) + 1).min(8);
    let per = len.div_ceil(regions);
    let mut keys = Vec::new();
    let mut descs = Vec::new();
    let mut left = len;
    for r in 0..regions {
        let n = per.min(left);
        if n == 0 {
            break;
        }
        let base = 0x7f00_0000_0000 + r * 0x1_0000_0000;
        let key = f.register(Side::Client, base, n as usize, true, true);
        keys.push(key);
        let mut off = 0;
        while off < n {
            let piece = rng.range(1, 300_000).min(n - off);
            descs.push(BufferDescriptorV1 { offset: base + off, token: key, length: piece as u32 });
            off += piece;
        }
        left -= n;
    }
    (keys, descs)
}

/// Server memory for `len` bytes as page-ish segments of random sizes.
fn server_buffer(f: &mut Fabric, len: u64, rng: &mut Rng) -> (u32, Vec<LocalSegment>) {
    let base = 0x5500_0000;
    let key = f.register(Side::Server, base, len as usize, false, false);
    let mut segs = Vec::new();
    let mut off = 0;
    while off < len {
        let piece = rng.range(1, 65536).min(len - off);
        segs.push(LocalSegment { lkey: key, addr: base + off, len: piece as u32 });
        off += piece;
    }
    (key, segs)
}

fn wait_done(f: &mut Fabric, op: RdmaOpId) -> Result<u64, RdmaError> {
    let limit = f.now + Duration::from_secs(60);
    loop {
        while let Some(e) = f.poll_event(Side::Server) {
            if let Event::RdmaDone { op: o, result } = e {
                assert_eq!(o, op);
                if result.is_ok() {
                    // Done only once every work request of the operation has completed.
                    assert_eq!(f.stats.rdma_completed, f.stats.rdma_wrs_posted, "reported done early");
                    assert_eq!(f.end(Side::Server).conn.rdma_bytes_in_flight(), 0);
                }
                return result;
            }
        }
        assert!(f.advance(limit), "RDMA operation never finished");
    }
}

fn client_bytes(f: &Fabric, keys: &[u32]) -> Vec<u8> {
    keys.iter().flat_map(|k| f.region(*k).unwrap().data.iter().copied()).collect()
}

fn roundtrip(len: u64, limits: RdmaLimits, seed: u64) {
    let fc = FabricConfig { rdma_bytes_per_us: 1000, ..Default::default() };
    let (mut f, _, _) = connect_with(Config::cifs(), server_config(limits), fc);
    let mut rng = Rng(seed | 1);
    let (keys, descs) = client_buffers(&mut f, len, &mut rng);
    let (skey, segs) = server_buffer(&mut f, len, &mut rng);

    // SMB2 READ: the server writes its data into the client's buffers.
    let mut data = Vec::new();
    pattern(1, seed, len as usize, &mut data);
    f.region_mut(skey).unwrap().data.copy_from_slice(&data);
    let now = f.now;
    let op = f.conn(Side::Server).rdma_write(now, &descs, &segs, len).unwrap();
    assert_eq!(wait_done(&mut f, op), Ok(len));
    assert!(client_bytes(&f, &keys) == data, "RDMA write of {len} bytes corrupted");

    // SMB2 WRITE: the server reads the client's buffers.
    pattern(2, seed, len as usize, &mut data);
    let mut off = 0;
    for k in &keys {
        let r = f.region_mut(*k).unwrap();
        let n = r.data.len();
        r.data.copy_from_slice(&data[off..off + n]);
        off += n;
    }
    f.region_mut(skey).unwrap().data.fill(0);
    let now = f.now;
    let op = f.conn(Side::Server).rdma_read(now, &descs, &segs, len).unwrap();
    assert_eq!(wait_done(&mut f, op), Ok(len));
    assert!(f.region(skey).unwrap().data == data, "RDMA read of {len} bytes corrupted");

    // The SMB2 response goes as Send-With-Invalidate of the client's (first) token: that
    // registration is revoked when the message lands, the others stay usable.
    let now = f.now;
    let response = vec![0x42u8; 3000];
    f.conn(Side::Server).send_with_invalidate(now, &response, keys[0]).unwrap();
    f.run_quiet(Duration::from_millis(10));
    assert_eq!(f.poll_event(Side::Client), Some(Event::Message(response)));
    assert!(!f.region(keys[0]).unwrap().valid);
    assert!(keys[1..].iter().all(|k| f.region(*k).unwrap().valid));

    let l = f.end(Side::Server).conn.rdma_limits();
    assert!(f.stats.max_rdma_bytes_in_flight <= l.max_bytes_in_flight.max(u64::from(l.max_message_size).min(l.max_bytes_in_flight)));
    assert!(f.stats.max_rdma_wr_len <= l.max_message_size);
    assert!(f.stats.max_rdma_wr_sges <= l.max_sge);
    assert!(f.stats.max_rdma_wrs_in_flight <= u32::from(l.max_outstanding_wrs));
    assert!(f.stats.max_rdma_reads_in_flight <= u32::from(l.max_outstanding_reads));
    assert!(f.stats.max_rdma_reads_in_flight >= 1);
    assert_eq!(f.stats.rdma_failed, 0);
    assert_eq!(f.stats.credit_violations, 0);
}

#[test]
fn sizes_from_one_byte_to_16_mib() {
    let limits = RdmaLimits::default();
    for (i, len) in [1u64, 2, 4095, 4096, 65_537, MIB, 3 * MIB + 17, 16 * MIB].into_iter().enumerate() {
        roundtrip(len, limits, i as u64 + 1);
    }
}

#[test]
fn tight_device_limits() {
    // An iWARP-like device: 3 SGEs, 64 KiB per request, depth 2, 128 KiB in flight.
    let limits = RdmaLimits {
        max_sge: 3,
        max_message_size: 64 * 1024,
        max_outstanding_reads: 2,
        max_outstanding_wrs: 4,
        max_bytes_in_flight: 128 * 1024,
    };
    roundtrip(5 * MIB + 3, limits, 99);
}

#[test]
fn initiator_depth_is_used_and_respected() {
    // Small requests, a large byte budget: only the initiator depth limits RDMA READs.
    for depth in [1u16, 3, 8] {
        let limits = RdmaLimits {
            max_sge: 6,
            max_message_size: 16 * 1024,
            max_outstanding_reads: depth,
            max_outstanding_wrs: 64,
            max_bytes_in_flight: 1 << 30,
        };
        let fc = FabricConfig { rdma_bytes_per_us: 100, ..Default::default() };
        let (mut f, _, _) = connect_with(Config::cifs(), server_config(limits), fc);
        let mut rng = Rng(u64::from(depth));
        let (_, descs) = client_buffers(&mut f, MIB, &mut rng);
        let (_, segs) = server_buffer(&mut f, MIB, &mut rng);
        let now = f.now;
        let op = f.conn(Side::Server).rdma_read(now, &descs, &segs, MIB).unwrap();
        assert_eq!(wait_done(&mut f, op), Ok(MIB));
        assert_eq!(f.stats.max_rdma_reads_in_flight, u32::from(depth), "depth {depth}");
    }
}

#[test]
fn bytes_in_flight_are_bounded() {
    for bif in [4096u64, 64 * 1024, 1 << 20] {
        let limits = RdmaLimits { max_bytes_in_flight: bif, max_outstanding_wrs: 1000, max_outstanding_reads: 1000, ..RdmaLimits::default() };
        let fc = FabricConfig { rdma_bytes_per_us: 100, ..Default::default() };
        let (mut f, _, _) = connect_with(Config::cifs(), server_config(limits), fc);
        let mut rng = Rng(bif);
        let (_, descs) = client_buffers(&mut f, 4 * MIB, &mut rng);
        let (_, segs) = server_buffer(&mut f, 4 * MIB, &mut rng);
        let now = f.now;
        let op = f.conn(Side::Server).rdma_write(now, &descs, &segs, 4 * MIB).unwrap();
        assert_eq!(wait_done(&mut f, op), Ok(4 * MIB));
        assert!(f.stats.max_rdma_bytes_in_flight <= bif, "{} > {bif}", f.stats.max_rdma_bytes_in_flight);
        // The budget was actually used: more than one request at a time when it allows.
        if bif >= 1 << 20 {
            assert!(f.stats.max_rdma_bytes_in_flight > 256 * 1024);
        }
    }
}

#[test]
fn concurrent_operations_complete_separately() {
    let (mut f, _, _) = connect(Config::cifs(), server_config(RdmaLimits::default()));
    let mut rng = Rng(5);
    let mut ops = Vec::new();
    for len in [100u64, MIB, 7, 300_000] {
        let (_, descs) = client_buffers(&mut f, len, &mut rng);
        let (_, segs) = server_buffer(&mut f, len, &mut rng);
        let now = f.now;
        ops.push((f.conn(Side::Server).rdma_read(now, &descs, &segs, len).unwrap(), len));
    }
    f.run_quiet(Duration::from_secs(1));
    let mut done: Vec<(RdmaOpId, u64)> = std::iter::from_fn(|| f.poll_event(Side::Server))
        .filter_map(|e| match e {
            Event::RdmaDone { op, result } => Some((op, result.unwrap())),
            _ => None,
        })
        .collect();
    done.sort();
    assert_eq!(done, ops);
}

#[test]
fn send_with_invalidate_revokes_the_token() {
    let (mut f, _, _) = connect(Config::cifs(), server_config(RdmaLimits::default()));
    let mut rng = Rng(8);
    let (keys, descs) = client_buffers(&mut f, 8192, &mut rng);
    let (_, segs) = server_buffer(&mut f, 8192, &mut rng);
    let now = f.now;
    let op = f.conn(Side::Server).rdma_write(now, &descs, &segs, 8192).unwrap();
    assert_eq!(wait_done(&mut f, op), Ok(8192));
    // The SMB2 READ response goes out with Send-With-Invalidate of the client's token.
    let now = f.now;
    f.conn(Side::Server).send_with_invalidate(now, b"smb2 read response", keys[0]).unwrap();
    f.run_quiet(Duration::from_millis(10));
    assert_eq!(f.poll_event(Side::Client), Some(Event::Message(b"smb2 read response".to_vec())));
    assert!(!f.region(keys[0]).unwrap().valid);
    // Using the token afterwards fails like a NIC would, and ends the connection cleanly.
    let now = f.now;
    let op = f.conn(Side::Server).rdma_write(now, &descs, &segs, 8192).unwrap();
    assert_eq!(wait_done(&mut f, op), Err(RdmaError::Completion(CompletionError::RemoteAccess)));
    f.run_quiet(Duration::from_millis(10));
    assert!(disconnected(&f, Side::Server) && disconnected(&f, Side::Client));
}

#[test]
fn bad_token_range_or_local_key_fail_cleanly() {
    type Corrupt = fn(&mut Vec<BufferDescriptorV1>, &mut Vec<LocalSegment>);
    let cases: [(Corrupt, CompletionError); 5] = [
        (|d, _| d[0].token ^= 0x5a5a, CompletionError::RemoteAccess),
        (|d, _| d[0].offset -= 1, CompletionError::RemoteAccess),
        (|d, _| { let last = d.len() - 1; d[last].offset += 1 }, CompletionError::RemoteAccess),
        (|_, s| s[0].lkey ^= 0x77, CompletionError::LocalProtection),
        (|_, s| { let last = s.len() - 1; s[last].addr += 1 }, CompletionError::LocalProtection),
    ];
    for (corrupt, want) in cases {
        for read in [true, false] {
            let (mut f, _, _) = connect(Config::cifs(), server_config(RdmaLimits::default()));
            let mut rng = Rng(3);
            let (_, mut descs) = client_buffers(&mut f, 100_000, &mut rng);
            let (_, mut segs) = server_buffer(&mut f, 100_000, &mut rng);
            corrupt(&mut descs, &mut segs);
            let now = f.now;
            let c = f.conn(Side::Server);
            let op = if read { c.rdma_read(now, &descs, &segs, 100_000) } else { c.rdma_write(now, &descs, &segs, 100_000) }.unwrap();
            assert_eq!(wait_done(&mut f, op), Err(RdmaError::Completion(want)));
            f.run_quiet(Duration::from_millis(10));
            assert!(disconnected(&f, Side::Server) && disconnected(&f, Side::Client));
            assert_eq!(f.poll_event(Side::Server), Some(Event::Disconnected(DisconnectReason::Completion(want))));
        }
    }
}

#[test]
fn plan_errors_are_reported_up_front() {
    let (mut f, _, _) = connect(Config::cifs(), server_config(RdmaLimits::default()));
    let now = f.now;
    let d = [BufferDescriptorV1 { offset: 0, token: 1, length: 10 }];
    let s = [LocalSegment { lkey: 1, addr: 0, len: 10 }];
    let c = f.conn(Side::Server);
    assert_eq!(c.rdma_read(now, &d, &s, 11), Err(RdmaError::RemoteTooShort { need: 11, have: 10 }));
    assert_eq!(c.rdma_read(now, &d, &s, (16 << 20) + 1), Err(RdmaError::TooLarge { len: (16 << 20) + 1, max: 16 << 20 }));
    assert_eq!(c.rdma_read(now, &d, &s, 0), Err(RdmaError::Empty));
}

#[test]
fn lost_rdma_completion_aborts_after_timeout() {
    let (mut f, _, _) = connect(Config::cifs(), server_config(RdmaLimits::default()));
    let mut rng = Rng(4);
    let (_, descs) = client_buffers(&mut f, MIB, &mut rng);
    let (_, segs) = server_buffer(&mut f, MIB, &mut rng);
    f.faults(Side::Server).lose_rdma_completions = 1;
    let now = f.now;
    let op = f.conn(Side::Server).rdma_read(now, &descs, &segs, MIB).unwrap();
    assert_eq!(wait_done(&mut f, op), Err(RdmaError::Aborted));
    assert_eq!(f.poll_event(Side::Server), Some(Event::Disconnected(DisconnectReason::CompletionTimeout)));
}
