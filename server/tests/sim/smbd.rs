//! SMB Direct without verbs: a fake rdma-proxy plays the proxy's side of the
//! protocol (RDMA-DESIGN.md) over real SEQPACKET socketpairs with a real
//! sealed memfd pool. The server runs its real control-socket loop
//! (`rdma::serve_control`) and serves the offered channel with the usual
//! pipeline over `transport_smbd`. The fake proxy serves `Rdma` requests by
//! copying between the pool and a fake "client memory" keyed by token, and
//! records every `Rdma` request and every `Send`'s invalidate token.

use crate::harness::*;
use smbdirect_rdma_proxy::fdpass::{send_datagram, seqpacket_pair, send_frame, FrameReader, Received};
use smbdirect_rdma_proxy::pool::PoolMap;
use smbdirect_rdma_proxy::proto::{
    rdma_status, ChannelOffer, Frame, Hello, Negotiated, RdmaDir, RdmaDone, RdmaRequest, MAX_FRAME_OVERHEAD,
};
use smbdirect_server::conn::Disconnect;
use smbdirect_server::rdma::serve_control;
use smbdirect_transport::wire::BufferDescriptorV1;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

const POOL_SIZE: u64 = 8 << 20;
const SLOT_SIZE: u32 = 1 << 20;
const MAX_RW: u32 = 1 << 20;

/// Registered regions of the fake client: token -> (address of byte 0, bytes).
#[derive(Default)]
struct ClientMem {
    regions: HashMap<u32, (u64, Vec<u8>)>,
}

impl ClientMem {
    fn range(&mut self, d: &BufferDescriptorV1) -> Option<&mut [u8]> {
        let (base, bytes) = self.regions.get_mut(&d.token)?;
        let start = usize::try_from(d.offset.checked_sub(*base)?).ok()?;
        let end = start.checked_add(d.length as usize)?;
        bytes.get_mut(start..end)
    }
}

#[derive(Default)]
struct Log {
    rdma: Vec<RdmaRequest>,
    /// The invalidate token of every Send, in order.
    sends: Vec<Option<u32>>,
}

struct FakeProxy {
    control: OwnedFd,
    chan: Option<OwnedFd>,
    /// A second handle on the channel socket, for tests that drive it
    /// themselves (pipelined requests).
    chan_share: Arc<Mutex<Option<OwnedFd>>>,
    reader: FrameReader,
    pool: Arc<PoolMap>,
    mem: Arc<Mutex<ClientMem>>,
    log: Arc<Mutex<Log>>,
    /// The client's MaxFragmentedSize: the most the channel may send it.
    max_frag_send: u32,
}

/// Serves one Rdma request the way the real proxy must: check, then copy.
fn serve_rdma(pool: &PoolMap, mem: &Mutex<ClientMem>, r: &RdmaRequest) -> RdmaDone {
    let bad = RdmaDone { req_id: r.req_id, status: rdma_status::BAD_REQUEST, bytes: 0 };
    let sum: u64 = r.descriptors.iter().map(|d| u64::from(d.length)).sum();
    if sum != u64::from(r.len) || pool.check_range(r.pool_offset, r.len.into()).is_err() {
        return bad;
    }
    let mut mem = mem.lock().unwrap();
    let mut at = r.pool_offset;
    for d in &r.descriptors {
        let Some(client) = mem.range(d) else {
            return RdmaDone { req_id: r.req_id, status: rdma_status::REMOTE_ERROR, bytes: 0 };
        };
        match r.dir {
            RdmaDir::WriteToClient => pool.read_at(at, client).unwrap(),
            RdmaDir::ReadFromClient => pool.write_at(at, client).unwrap(),
        }
        at += u64::from(d.length);
    }
    RdmaDone { req_id: r.req_id, status: rdma_status::OK, bytes: sum }
}

impl Wire for FakeProxy {
    fn exchange(&mut self, msg: Vec<u8>) -> Result<Vec<Vec<u8>>, Disconnect> {
        match &self.chan {
            None => {
                // The first message reaches the server inside the ChannelOffer.
                let (mine, theirs) = seqpacket_pair().unwrap();
                let mut guid = [0u8; 16];
                guid.copy_from_slice(&msg[64 + 12..64 + 28]);
                let offer = ChannelOffer {
                    channel_id: 1,
                    client_guid: guid,
                    peer: Some("10.9.0.2:40001".parse().unwrap()),
                    local: Some("10.9.0.1:445".parse().unwrap()),
                    negotiated: Negotiated {
                        max_read_write_size: MAX_RW,
                        max_send_size: 1364,
                        max_fragmented_send: self.max_frag_send,
                        max_fragmented_recv: 1 << 20,
                    },
                    first_message: msg,
                };
                send_frame(self.control.as_fd(), &Frame::ChannelOffer(offer), Some(theirs.as_fd())).unwrap();
                // As the real proxy: a message from the worker longer than
                // the client's MaxFragmentedSize ends the channel.
                self.reader = FrameReader::new(self.max_frag_send as usize + MAX_FRAME_OVERHEAD);
                *self.chan_share.lock().unwrap() = Some(mine.try_clone().unwrap());
                self.chan = Some(mine);
            }
            Some(c) => send_frame(c.as_fd(), &Frame::Recv(msg), None).map_err(|e| Disconnect::Protocol(e.to_string()))?,
        }
        loop {
            let chan = self.chan.as_ref().unwrap();
            let got = self.reader.recv(chan).map_err(|e| Disconnect::Protocol(e.to_string()))?;
            let Some(Received { frame, fd }) = got else { return Err(Disconnect::Closed) };
            assert!(fd.is_none());
            match frame {
                Frame::Send { invalidate, msg } => {
                    self.log.lock().unwrap().sends.push(invalidate);
                    return Ok(vec![msg]);
                }
                Frame::Rdma(r) => {
                    let done = serve_rdma(&self.pool, &self.mem, &r);
                    self.log.lock().unwrap().rdma.push(r);
                    let chan = self.chan.as_ref().unwrap();
                    send_frame(chan.as_fd(), &Frame::RdmaDone(done), None).unwrap();
                }
                // As the real proxy: the RDMA WRITE, then its answer right behind
                // it; an answer whose WRITE failed is not delivered.
                Frame::RdmaSend { req, invalidate, msg } => {
                    let done = serve_rdma(&self.pool, &self.mem, &req);
                    let ok = done.status == rdma_status::OK;
                    self.log.lock().unwrap().rdma.push(req);
                    let chan = self.chan.as_ref().unwrap();
                    send_frame(chan.as_fd(), &Frame::RdmaDone(done), None).unwrap();
                    if ok {
                        self.log.lock().unwrap().sends.push(invalidate);
                        return Ok(vec![msg]);
                    }
                }
                other => panic!("unexpected frame from the server: {other:?}"),
            }
        }
    }
}

struct Rig {
    client: Client,
    chan: Arc<Mutex<Option<OwnedFd>>>,
    pool: Arc<PoolMap>,
    mem: Arc<Mutex<ClientMem>>,
    log: Arc<Mutex<Log>>,
    ts: TestServer,
    control_thread: std::thread::JoinHandle<Result<(), smbdirect_server::rdma::ControlError>>,
}

fn rig_with(opts: &NegOpts) -> Rig {
    rig_cfg(opts, |_| {})
}

/// A channel whose NEGOTIATE is done, nothing more.
fn rig_negotiated(opts: &NegOpts, f: impl FnOnce(&mut smbdirect_server::config::ServerConfig)) -> Rig {
    rig_negotiated_frag(opts, 1 << 20, f)
}

fn rig_negotiated_frag(opts: &NegOpts, max_frag_send: u32, f: impl FnOnce(&mut smbdirect_server::config::ServerConfig)) -> Rig {
    let ts = server_with(f);
    let (proxy_end, server_end) = seqpacket_pair().unwrap();
    let srv = ts.server.clone();
    let control_thread = std::thread::spawn(move || serve_control(srv, server_end));
    let pool = Arc::new(PoolMap::create(POOL_SIZE).unwrap());
    let hello = Frame::Hello(Hello::whole_pool(POOL_SIZE, SLOT_SIZE));
    send_frame(proxy_end.as_fd(), &hello, Some(pool.fd())).unwrap();
    let mem = Arc::new(Mutex::new(ClientMem::default()));
    let log = Arc::new(Mutex::new(Log::default()));
    let chan = Arc::new(Mutex::new(None));
    let fake = FakeProxy {
        control: proxy_end,
        chan: None,
        chan_share: chan.clone(),
        reader: FrameReader::new(16 << 20),
        pool: pool.clone(),
        mem: mem.clone(),
        log: log.clone(),
        max_frag_send,
    };
    let mut client = Client::new(&ts);
    client.wire = Some(Box::new(fake));
    client.negotiate_with(opts);
    Rig { client, chan, pool, mem, log, ts, control_thread }
}

fn rig_cfg(opts: &NegOpts, f: impl FnOnce(&mut smbdirect_server::config::ServerConfig)) -> Rig {
    let mut r = rig_negotiated(opts, f);
    r.client.session_setup();
    assert_eq!(r.client.tree_connect("share").status, SUCCESS);
    r
}

fn rig() -> Rig {
    rig_with(&NegOpts::default())
}

const CH_RDMA_V1: u32 = 1;
const CH_RDMA_V1_INVALIDATE: u32 = 2;

/// READ (MS-SMB2 2.2.19) with channel info after the fixed body.
fn rdma_read_body(fid: &[u8; 16], offset: u64, len: u32, channel: u32, info_off: u16, info: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(49).u8_(0x50).u8_(0).u32_(len).u64_(offset).bytes(fid).u32_(0).u32_(channel).u32_(0).u16_(info_off).u16_(info.len() as u16).bytes(info);
    if info.is_empty() {
        b.u8_(0);
    }
    b
}

/// WRITE (MS-SMB2 2.2.21) with Length 0 and the payload's size in
/// RemainingBytes; DataOffset 0 as cifs.ko sends it.
fn rdma_write_body(fid: &[u8; 16], offset: u64, remaining: u32, channel: u32, info_off: u16, info: &[u8]) -> Vec<u8> {
    rdma_write_body_at(0, fid, offset, remaining, channel, info_off, info)
}

fn rdma_write_body_at(data_off: u16, fid: &[u8; 16], offset: u64, remaining: u32, channel: u32, info_off: u16, info: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(49).u16_(data_off).u32_(0).u64_(offset).bytes(fid).u32_(channel).u32_(remaining).u16_(info_off).u16_(info.len() as u16).u32_(0).bytes(info);
    b
}

fn descs(list: &[(u64, u32, u32)]) -> Vec<u8> {
    list.iter().flat_map(|&(offset, token, length)| BufferDescriptorV1 { offset, token, length }.to_bytes()).collect()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8).collect()
}

fn charge(n: u32) -> u16 {
    (u64::from(n).div_ceil(65536).max(1)) as u16
}

impl Rig {
    fn region(&self, token: u32, base: u64, bytes: Vec<u8>) {
        self.mem.lock().unwrap().regions.insert(token, (base, bytes));
    }
    fn region_bytes(&self, token: u32) -> Vec<u8> {
        self.mem.lock().unwrap().regions[&token].1.clone()
    }
    fn rdma_count(&self) -> usize {
        self.log.lock().unwrap().rdma.len()
    }
    fn last_send_invalidate(&self) -> Option<u32> {
        *self.log.lock().unwrap().sends.last().unwrap()
    }
}

/// WRITE by RDMA read from two client buffers, then READ back by RDMA write
/// into another: the file and the client's memory hold the right bytes, the
/// requests named the right direction and sizes, and RDMA_V1_INVALIDATE's
/// response carried the client's token while RDMA_V1's carried none.
#[test]
fn smbd_rdma_write_then_read_moves_the_bytes() {
    let mut r = rig();
    let fid = r.client.open_file("rdma.bin");
    let n: u32 = 300_000;
    let data = pattern(n as usize, 7);
    // The client registered one buffer; it names it with two descriptors.
    r.region(0x1111, 0x7f00_0000, data.clone());
    let info = descs(&[(0x7f00_0000, 0x1111, 100_000), (0x7f00_0000 + 100_000, 0x1111, n - 100_000)]);
    let resp = r.client.call(WRITE, charge(n), &rdma_write_body(&fid, 4096, n, CH_RDMA_V1, 112, &info));
    assert_eq!(resp.status, SUCCESS, "WRITE status {:#x}", resp.status);
    assert_eq!(le32(resp.body(), 4), n, "WRITE Count");
    assert_eq!(r.last_send_invalidate(), None);
    {
        let log = r.log.lock().unwrap();
        assert_eq!(log.rdma.len(), 1);
        assert_eq!(log.rdma[0].dir, RdmaDir::ReadFromClient);
        assert_eq!(log.rdma[0].len, n);
        assert_eq!(log.rdma[0].descriptors.len(), 2);
    }
    let on_disk = std::fs::read(r.ts.share_path().join("rdma.bin")).unwrap();
    assert_eq!(on_disk.len(), 4096 + n as usize);
    assert!(on_disk[..4096].iter().all(|b| *b == 0));
    assert!(on_disk[4096..] == data[..], "file content differs from the client's buffer");

    // READ with invalidate into a fresh, larger buffer.
    r.region(0x2222, 0x1000, vec![0xEE; n as usize + 1000]);
    let info = descs(&[(0x1000, 0x2222, n + 1000)]);
    let resp = r.client.call(READ, charge(n), &rdma_read_body(&fid, 4096, n, CH_RDMA_V1_INVALIDATE, 112, &info));
    assert_eq!(resp.status, SUCCESS, "READ status {:#x}", resp.status);
    assert_eq!(le32(resp.body(), 4), 0, "DataLength: the data went by RDMA");
    assert_eq!(le32(resp.body(), 8), n, "DataRemaining");
    assert_eq!(r.last_send_invalidate(), Some(0x2222), "response sent with invalidate of the client's token");
    let got = r.region_bytes(0x2222);
    assert!(got[..n as usize] == data[..], "client memory differs from the file");
    assert!(got[n as usize..].iter().all(|b| *b == 0xEE), "bytes past the read were touched");
    {
        let log = r.log.lock().unwrap();
        assert_eq!(log.rdma.len(), 2);
        assert_eq!(log.rdma[1].dir, RdmaDir::WriteToClient);
        assert_eq!(log.rdma[1].len, n);
        // Trimmed to what was read.
        assert_eq!(log.rdma[1].descriptors, vec![BufferDescriptorV1 { offset: 0x1000, token: 0x2222, length: n }]);
    }

    // A READ past the end of data is short: only the bytes read move.
    r.region(0x3333, 0, vec![0; 8192]);
    let resp = r.client.call(READ, 1, &rdma_read_body(&fid, 4096 + u64::from(n) - 100, 8192, CH_RDMA_V1, 112, &descs(&[(0, 0x3333, 8192)])));
    assert_eq!(resp.status, SUCCESS);
    assert_eq!(le32(resp.body(), 8), 100);
    assert_eq!(r.last_send_invalidate(), None);
    assert_eq!(&r.region_bytes(0x3333)[..100], &data[n as usize - 100..]);

    // WRITE with invalidate.
    r.region(0x4444, 0x5000, pattern(5000, 99));
    // (DataOffset pointing at the channel info, as other clients may send it.)
    let resp = r.client.call(WRITE, 1, &rdma_write_body_at(112, &fid, 0, 5000, CH_RDMA_V1_INVALIDATE, 112, &descs(&[(0x5000, 0x4444, 5000)])));
    assert_eq!(resp.status, SUCCESS);
    assert_eq!(r.last_send_invalidate(), Some(0x4444));
    let on_disk = std::fs::read(r.ts.share_path().join("rdma.bin")).unwrap();
    assert_eq!(&on_disk[..5000], &pattern(5000, 99)[..]);

    // Channel NONE still works inline over the same channel, with messages
    // larger than one datagram split with MORE both ways.
    let resp = r.client.read(&fid, 0, 5000, 1);
    assert_eq!(resp.status, SUCCESS);
    assert_eq!(resp.read_data(), &pattern(5000, 99)[..]);
    let big = pattern(200_000, 3);
    let resp = r.client.write(&fid, 0, &big);
    assert_eq!(resp.status, SUCCESS);
    let resp = r.client.read(&fid, 0, 200_000, charge(200_000));
    assert_eq!(resp.status, SUCCESS);
    assert!(resp.read_data() == &big[..]);
    assert_eq!(r.rdma_count(), 4);
    drop(r.client);
    // The control loop ends cleanly when the proxy's end closes.
    assert!(r.control_thread.join().unwrap().is_ok());
}

/// An inline READ (Channel NONE) whose response would exceed the client's
/// SMB Direct MaxFragmentedSize (cifs.ko's 173910 bytes here) is refused with
/// STATUS_INVALID_PARAMETER instead of producing a message the proxy must
/// drop the channel for; one that fits is served, and the channel lives on.
#[test]
fn smbd_inline_read_beyond_max_fragmented_size_is_refused() {
    let mut r = rig_negotiated_frag(&NegOpts::default(), 173_910, |_| {});
    r.client.session_setup();
    assert_eq!(r.client.tree_connect("share").status, SUCCESS);
    let fid = r.client.open_file("inline.bin");
    let data = pattern(256 * 1024, 5);
    for at in (0..data.len()).step_by(65536) {
        assert_eq!(r.client.write(&fid, at as u64, &data[at..at + 65536]).status, SUCCESS);
    }
    let resp = r.client.read(&fid, 0, 256 * 1024, charge(256 * 1024));
    assert_eq!(resp.status, INVALID_PARAMETER, "256 KiB inline READ: STATUS_INVALID_PARAMETER, status {:#x}", resp.status);
    // Just past the bound (header, READ body and a TRANSFORM_HEADER reserved).
    let fits = 173_910 - 64 - 16 - 52;
    let resp = r.client.read(&fid, 0, fits + 1, charge(fits + 1));
    assert_eq!(resp.status, INVALID_PARAMETER, "status {:#x}", resp.status);
    let resp = r.client.read(&fid, 0, fits, charge(fits));
    assert_eq!(resp.status, SUCCESS, "status {:#x}", resp.status);
    assert!(resp.read_data() == &data[..fits as usize]);
    assert_eq!(r.rdma_count(), 0);
}

/// Descriptors that lie about the request are refused with
/// STATUS_INVALID_PARAMETER before any Rdma frame is sent.
#[test]
fn smbd_lying_descriptors_are_refused_without_rdma() {
    let mut r = rig();
    let fid = r.client.open_file("lies.bin");
    assert_eq!(r.client.write(&fid, 0, &[1u8; 65536]).status, SUCCESS);
    r.region(0x10, 0x1000, vec![0; 1 << 21]);
    let d4k = descs(&[(0x1000, 0x10, 4096)]);
    let cases: Vec<(&str, u16, Vec<u8>)> = vec![
        ("READ longer than its buffers", READ, rdma_read_body(&fid, 0, 8192, CH_RDMA_V1, 112, &d4k)),
        ("WRITE RemainingBytes past its buffers", WRITE, rdma_write_body(&fid, 0, 8192, CH_RDMA_V1, 112, &d4k)),
        ("READ without channel info", READ, rdma_read_body(&fid, 0, 4096, CH_RDMA_V1, 0, &[])),
        ("READ with a partial descriptor", READ, rdma_read_body(&fid, 0, 10, CH_RDMA_V1, 112, &d4k[..15])),
        ("READ with channel info inside the header", READ, {
            let mut b = rdma_read_body(&fid, 0, 16, CH_RDMA_V1, 112, &d4k);
            b[44..46].copy_from_slice(&48u16.to_le_bytes());
            b
        }),
        ("READ with a channel info offset past the message", READ, {
            let mut b = rdma_read_body(&fid, 0, 16, CH_RDMA_V1, 112, &d4k);
            b[44..46].copy_from_slice(&200u16.to_le_bytes());
            b
        }),
        ("READ above MaxReadWriteSize", READ, rdma_read_body(&fid, 0, MAX_RW + 4096, CH_RDMA_V1, 112, &descs(&[(0x1000, 0x10, MAX_RW + 4096)]))),
        ("WRITE above MaxReadWriteSize", WRITE, rdma_write_body(&fid, 0, MAX_RW + 4096, CH_RDMA_V1, 112, &descs(&[(0x1000, 0x10, MAX_RW + 4096)]))),
        ("WRITE with inline data and an RDMA channel", WRITE, {
            let mut b = rdma_write_body(&fid, 0, 16, CH_RDMA_V1, 112, &d4k);
            b[4..8].copy_from_slice(&16u32.to_le_bytes());
            b
        }),
        ("READ with a zero-length descriptor", READ, rdma_read_body(&fid, 0, 16, CH_RDMA_V1, 112, &descs(&[(0x1000, 0x10, 0), (0x1000, 0x10, 16)]))),
        ("READ with an unknown channel", READ, rdma_read_body(&fid, 0, 16, 3, 112, &d4k)),
    ];
    for (what, cmd, body) in cases {
        let resp = r.client.call(cmd, charge(MAX_RW + 4096), &body);
        assert_eq!(resp.status, INVALID_PARAMETER, "{what}: status {:#x}", resp.status);
        assert_eq!(r.rdma_count(), 0, "{what}: an Rdma frame was sent");
        assert_eq!(r.last_send_invalidate(), None, "{what}: invalidated a token");
    }
    // The channel still works after all that.
    let resp = r.client.call(READ, 1, &rdma_read_body(&fid, 0, 4096, CH_RDMA_V1, 112, &d4k));
    assert_eq!(resp.status, SUCCESS);
    assert_eq!(&r.region_bytes(0x10)[..4096], &[1u8; 4096][..]);
    assert_eq!(r.rdma_count(), 1);
}

/// A READ whose RDMA write fails (the fake proxy knows no such client
/// token): the response, which would say the data arrived, is never sent and
/// the channel is dropped (an RDMA error leaves the client's queue pair
/// unusable anyway).
#[test]
fn smbd_failed_rdma_write_drops_the_channel() {
    let mut r = rig();
    let fid = r.client.open_file("fail.bin");
    assert_eq!(r.client.write(&fid, 0, &[1u8; 4096]).status, SUCCESS);
    let sent = r.log.lock().unwrap().sends.len();
    let msg = r.client.build(READ, 1, &rdma_read_body(&fid, 0, 4096, CH_RDMA_V1, 112, &descs(&[(0, 0x99, 4096)])));
    let got = r.client.send(msg);
    assert!(matches!(got, Err(Disconnect::Closed)), "READ answered: {:?}", got.map(|v| v.iter().map(|r| r.status).collect::<Vec<_>>()));
    assert_eq!(r.rdma_count(), 1);
    assert_eq!(r.log.lock().unwrap().sends.len(), sent, "no response to the READ");
}

/// RDMA_V1_INVALIDATE exists from SMB 3.0.2 on: on a 3.0 connection it is
/// refused; RDMA_V1 works.
#[test]
fn smbd_invalidate_needs_dialect_302() {
    let mut r = rig_with(&NegOpts { dialects: vec![DIALECT_300], ..NegOpts::default() });
    assert_eq!(r.client.dialect, DIALECT_300);
    let fid = r.client.open_file("d300.bin");
    assert_eq!(r.client.write(&fid, 0, &[5u8; 1000]).status, SUCCESS);
    r.region(0x20, 0, vec![0; 1000]);
    let d = descs(&[(0, 0x20, 1000)]);
    let resp = r.client.call(READ, 1, &rdma_read_body(&fid, 0, 1000, CH_RDMA_V1_INVALIDATE, 112, &d));
    assert_eq!(resp.status, INVALID_PARAMETER);
    assert_eq!(r.rdma_count(), 0);
    let resp = r.client.call(READ, 1, &rdma_read_body(&fid, 0, 1000, CH_RDMA_V1, 112, &d));
    assert_eq!(resp.status, SUCCESS);
    assert_eq!(r.region_bytes(0x20), vec![5u8; 1000]);
}

/// Over plain TCP (no RDMA transport) an RDMA channel is an invalid parameter.
#[test]
fn smbd_rdma_channel_refused_without_rdma_transport() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.logon();
    c.tree_connect("share");
    let fid = c.open_file("tcp.bin");
    let d = descs(&[(0, 1, 100)]);
    assert_eq!(c.call(READ, 1, &rdma_read_body(&fid, 0, 100, CH_RDMA_V1, 112, &d)).status, INVALID_PARAMETER);
    assert_eq!(c.call(WRITE, 1, &rdma_write_body(&fid, 0, 100, CH_RDMA_V1, 112, &d)).status, INVALID_PARAMETER);
}

/// The payload of an RDMA channel would bypass encryption (no RDMA transform):
/// an encrypted request may not use one.
#[test]
fn smbd_rdma_channel_refused_on_encrypted_requests() {
    let mut r = rig_cfg(&NegOpts::default(), |c| required(c, false, true));
    assert!(r.client.encrypt, "the session encrypts");
    let fid = r.client.open_file("enc.bin");
    r.region(0x30, 0, vec![7; 100]);
    let d = descs(&[(0, 0x30, 100)]);
    let resp = r.client.call(WRITE, 1, &rdma_write_body(&fid, 0, 100, CH_RDMA_V1, 112, &d));
    assert_eq!(resp.status, INVALID_PARAMETER);
    let resp = r.client.call(READ, 1, &rdma_read_body(&fid, 0, 100, CH_RDMA_V1, 112, &d));
    assert_eq!(resp.status, INVALID_PARAMETER);
    assert_eq!(r.rdma_count(), 0);
    // Inline I/O works, encrypted.
    assert_eq!(r.client.write(&fid, 0, b"secret").status, SUCCESS);
}

/// An SMB Direct channel counts against the connection caps as a TCP
/// connection does: over `max connections per client address` the offered
/// channel's socket is closed at once; with the place free it is served.
#[test]
fn smbd_channels_count_against_the_connection_caps() {
    let ts = server_with(|c| c.limits.max_connections_per_address = 1);
    let (proxy_end, server_end) = seqpacket_pair().unwrap();
    let srv = ts.server.clone();
    let control_thread = std::thread::spawn(move || serve_control(srv, server_end));
    let pool = PoolMap::create(POOL_SIZE).unwrap();
    let hello = Frame::Hello(Hello::whole_pool(POOL_SIZE, SLOT_SIZE));
    send_frame(proxy_end.as_fd(), &hello, Some(pool.fd())).unwrap();
    let peer: std::net::SocketAddr = "10.9.0.7:40001".parse().unwrap();
    // Another connection from that address holds its one place.
    let held = ts.server.conn_slots.acquire(peer.ip(), 0, 1).unwrap();
    let offer = |id: u64| {
        let msg = build_header(NEGOTIATE, 0, 1, 0, 0, 0, 0, &Client::negotiate_body(&NegOpts::default()));
        let (mine, theirs) = seqpacket_pair().unwrap();
        let o = ChannelOffer {
            channel_id: id,
            client_guid: [0; 16],
            peer: Some(peer),
            local: Some("10.9.0.1:445".parse().unwrap()),
            negotiated: Negotiated { max_read_write_size: MAX_RW, max_send_size: 1364, max_fragmented_send: 1 << 20, max_fragmented_recv: 1 << 20 },
            first_message: msg,
        };
        send_frame(proxy_end.as_fd(), &Frame::ChannelOffer(o), Some(theirs.as_fd())).unwrap();
        drop(theirs);
        let got = FrameReader::new(16 << 20).recv(&mine).unwrap();
        (mine, got.map(|r| r.frame))
    };
    let (_closed, got) = offer(1);
    assert!(got.is_none(), "a channel over the per-address cap is closed without an answer");
    drop(held);
    let (_served, got) = offer(2);
    assert!(matches!(got, Some(Frame::Send { .. })), "with the place free the NEGOTIATE is answered: {got:?}");
    drop(proxy_end);
    let _ = control_thread.join();
}

/// What the fake proxy saw while serving READs it drove itself.
#[derive(Default)]
struct ReadTimes {
    /// When each Rdma frame arrived and when each response (Send) arrived,
    /// in order, measured from the moment the first request was sent.
    rdma: Vec<std::time::Duration>,
    /// When each RdmaDone was sent back.
    done: Vec<std::time::Duration>,
    sends: Vec<std::time::Duration>,
}

impl Rig {
    /// Sends `reqs` (already built) on the channel all at once, then plays
    /// the proxy until every one is answered: each Rdma frame is served
    /// `rdma_delay` after it arrived (an RDMA write on rxe takes
    /// milliseconds), by a second thread, so transfers the server starts
    /// together are in flight together, as on a queue pair.
    fn drive(&mut self, reqs: Vec<Vec<u8>>, rdma_delay: std::time::Duration) -> (ReadTimes, Vec<Resp>) {
        let chan = self.chan.lock().unwrap().as_ref().unwrap().try_clone().unwrap();
        let mut reader = FrameReader::new(16 << 20);
        let n = reqs.len();
        let t0 = std::time::Instant::now();
        for mut m in reqs {
            if self.client.sign {
                sign_chain(self.client.keys.as_ref().unwrap(), &mut m);
            }
            send_frame(chan.as_fd(), &Frame::Recv(m), None).unwrap();
        }
        let mut times = ReadTimes::default();
        let mut resps = Vec::new();
        let (pool, mem) = (self.pool.clone(), self.mem.clone());
        let done_times = std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel::<(std::time::Instant, RdmaRequest)>();
            let chan2 = chan.try_clone().unwrap();
            let completer = s.spawn(move || {
                let mut done_times = Vec::new();
                for (due, r) in rx {
                    std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
                    let done = serve_rdma(&pool, &mem, &r);
                    send_frame(chan2.as_fd(), &Frame::RdmaDone(done), None).unwrap();
                    done_times.push(t0.elapsed());
                }
                done_times
            });
            while times.sends.len() < n {
                let Some(Received { frame, .. }) = reader.recv(&chan).unwrap() else { panic!("channel closed") };
                match frame {
                    Frame::Rdma(r) => {
                        times.rdma.push(t0.elapsed());
                        tx.send((std::time::Instant::now() + rdma_delay, r)).unwrap();
                    }
                    Frame::Send { msg, .. } => {
                        times.sends.push(t0.elapsed());
                        for resp in self.client.decode(msg) {
                            self.client.held += i64::from(resp.credits);
                            resps.push(resp);
                        }
                    }
                    // The answer rides behind the WRITE: the client sees it when
                    // the data is there (after the fake delay).
                    Frame::RdmaSend { req, msg, .. } => {
                        let due = std::time::Instant::now() + rdma_delay;
                        times.rdma.push(t0.elapsed());
                        times.sends.push(due.saturating_duration_since(t0));
                        tx.send((due, req)).unwrap();
                        for resp in self.client.decode(msg) {
                            self.client.held += i64::from(resp.credits);
                            resps.push(resp);
                        }
                    }
                    other => panic!("unexpected frame from the server: {other:?}"),
                }
            }
            drop(tx);
            completer.join().unwrap()
        });
        times.done = done_times;
        (times, resps)
    }
}

/// A measurement, not a timed assertion (run with --nocapture to see it):
/// 32 READs of 64 KiB by RDMA_V1, first one at a time, then all sent at once
/// as cifs.ko keeps them outstanding at rsize 64 KiB. The fake proxy answers
/// each Rdma 2 ms after it came (SMBD_FAKE_RDMA_MS sets another delay;
/// transfers started together are in flight together). Printed: per-request
/// latency, from RdmaDone to the response, and for the pipelined run the gap
/// between the server's Rdma frames: with READs' RDMA writes in flight
/// together it is the request's own work, not the RDMA delay. Checked: every
/// READ is answered and the client's buffers hold the file's bytes.
#[test]
fn smbd_rdma_pipelined_reads_measurement() {
    const N: usize = 32;
    const LEN: u32 = 64 << 10;
    let delay_ms = std::env::var("SMBD_FAKE_RDMA_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let delay = std::time::Duration::from_millis(delay_ms);
    let mut r = rig();
    r.client.credit_request = 64;
    let fid = r.client.open_file("pipe.bin");
    let data = pattern(N * LEN as usize, 11);
    for (i, chunk) in data.chunks(LEN as usize).enumerate() {
        assert_eq!(r.client.write(&fid, (i * LEN as usize) as u64, chunk).status, SUCCESS);
    }
    assert!(r.client.held >= N as i64, "credits held: {}", r.client.held);
    let base = 0x10_0000_0000u64;
    let reads = |r: &mut Rig, token0: u32| -> Vec<Vec<u8>> {
        (0..N)
            .map(|i| {
                let token = token0 + i as u32;
                r.region(token, base, vec![0; LEN as usize]);
                let info = descs(&[(base, token, LEN)]);
                r.client.build(READ, 1, &rdma_read_body(&fid, (i * LEN as usize) as u64, LEN, CH_RDMA_V1, 112, &info))
            })
            .collect()
    };
    let check = |r: &Rig, resps: &[Resp], token0: u32| {
        assert_eq!(resps.len(), N);
        for resp in resps {
            assert_eq!(resp.status, SUCCESS, "READ status {:#x}", resp.status);
            assert_eq!(le32(resp.body(), 8), LEN, "DataRemaining");
        }
        for i in 0..N {
            let want = &data[i * LEN as usize..(i + 1) * LEN as usize];
            assert!(r.region_bytes(token0 + i as u32) == want, "READ {i}: client memory differs from the file");
        }
    };
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;

    // One at a time.
    let mut lat = Vec::new();
    let mut answer = Vec::new();
    let mut resps = Vec::new();
    let t0 = std::time::Instant::now();
    for m in reads(&mut r, 0x1000) {
        let (t, rs) = r.drive(vec![m], delay);
        lat.push(ms(t.sends[0]));
        answer.push(ms(t.sends[0].saturating_sub(t.done[0])));
        resps.extend(rs);
    }
    let seq_total = ms(t0.elapsed());
    check(&r, &resps, 0x1000);

    // All at once.
    let msgs = reads(&mut r, 0x2000);
    let (t, resps) = r.drive(msgs, delay);
    check(&r, &resps, 0x2000);
    let pipe_total = ms(*t.sends.last().unwrap());
    // Turn-around: from a response to the next Rdma frame.
    let gaps: Vec<f64> = t.rdma.windows(2).map(|w| ms(w[1].saturating_sub(w[0]))).collect();
    let pipe_answer: Vec<f64> = t.sends.iter().zip(&t.done).map(|(s, d)| ms(s.saturating_sub(*d))).collect();
    let mb = (N * LEN as usize) as f64 / 1e6;
    let stat = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        format!("min {:.2} median {:.2} max {:.2} ms", s[0], s[s.len() / 2], s[s.len() - 1])
    };
    eprintln!("fake RDMA delay {} ms, {N} READs of {} KiB", ms(delay), LEN >> 10);
    eprintln!("sequential: per request {}; total {seq_total:.1} ms ({:.1} MB/s)", stat(&lat), mb / seq_total * 1000.0);
    eprintln!("sequential: RdmaDone -> response {}", stat(&answer));
    eprintln!("pipelined: RdmaDone -> response {}", stat(&pipe_answer));
    eprintln!("pipelined: between Rdma frames {}; total {pipe_total:.1} ms ({:.1} MB/s)", stat(&gaps), mb / pipe_total * 1000.0);
    eprintln!("pipelined: Rdma frames at {:?} ms", t.rdma.iter().map(|d| (ms(*d) * 10.0).round() / 10.0).collect::<Vec<_>>());
}

const FLUSH: u16 = 7;
const UNEXPECTED_NETWORK_ERROR: u32 = 0xC000_00C4;

fn flush_body(fid: &[u8; 16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(24).u16_(0).u32_(0).bytes(fid);
    b
}

impl Rig {
    /// WRITEs by RDMA_V1 of `data` at 0 in `len`-byte pieces, each from a
    /// client buffer of its own (tokens from `token0`), built, not sent.
    fn rdma_writes(&mut self, fid: &[u8; 16], data: &[u8], len: usize, token0: u32) -> Vec<Vec<u8>> {
        let base = 0x20_0000_0000u64;
        let mut out = Vec::new();
        for (i, c) in data.chunks(len).enumerate() {
            let token = token0 + i as u32;
            self.region(token, base, c.to_vec());
            let info = descs(&[(base, token, c.len() as u32)]);
            out.push(self.client.build(WRITE, charge(c.len() as u32), &rdma_write_body(fid, (i * len) as u64, c.len() as u32, CH_RDMA_V1, 112, &info)));
        }
        out
    }

    /// Asks for credits (ECHOs) until the client holds at least `n`.
    fn credits(&mut self, n: i64) {
        self.client.credit_request = 128;
        while self.client.held < n {
            assert_eq!(self.client.call(ECHO, 1, &[4, 0, 0, 0]).status, SUCCESS);
        }
    }

    /// A second handle on the channel socket and a reader for it.
    fn raw_chan(&self) -> OwnedFd {
        self.chan.lock().unwrap().as_ref().unwrap().try_clone().unwrap()
    }
}

/// 16 WRITEs of 256 KiB by RDMA read, sent at once (as cifs.ko keeps WRITEs
/// outstanding), the fake proxy answering each Rdma 100 ms after it came: the
/// server asks for the next RDMA read before the first is answered (they are
/// in flight together), needs more transfers than the pool has slots (8),
/// answers every WRITE with its Count, signed when the session signs, and
/// the file holds every byte.
fn pipelined_writes(mut r: Rig) {
    const N: usize = 16;
    const LEN: usize = 256 << 10;
    let fid = r.client.open_file("wpipe.bin");
    r.credits((N * 4) as i64);
    let data = pattern(N * LEN, 21);
    let msgs = r.rdma_writes(&fid, &data, LEN, 0x100);
    let (t, resps) = r.drive(msgs, std::time::Duration::from_millis(100));
    assert_eq!(resps.len(), N);
    for resp in &resps {
        assert_eq!((resp.command, resp.status), (WRITE, SUCCESS), "WRITE status {:#x}", resp.status);
        assert_eq!(le32(resp.body(), 4), LEN as u32, "WRITE Count");
        r.client.check_resp(resp);
    }
    assert_eq!(t.rdma.len(), N);
    let in_flight = t.rdma.iter().filter(|at| **at < t.done[0]).count();
    assert!(in_flight >= 2, "only {in_flight} RDMA read(s) asked for before the first was answered: {:?} / {:?}", t.rdma, t.done);
    let on_disk = std::fs::read(r.ts.share_path().join("wpipe.bin")).unwrap();
    assert!(on_disk == data, "file content differs from the client's buffers");
    // Responses came in request order here (the proxy answers in order).
    assert!(resps.windows(2).all(|w| w[0].message_id < w[1].message_id));
    eprintln!("pipelined WRITEs: {in_flight} RDMA reads asked for before the first answer; all {N} answered in {:.0} ms", t.sends.last().unwrap().as_secs_f64() * 1000.0);
}

#[test]
fn smbd_rdma_pipelined_writes() {
    pipelined_writes(rig());
}

/// The same with signing required: each deferred WRITE response is signed
/// when it is finished, and the signature verifies.
#[test]
fn smbd_rdma_pipelined_writes_signed() {
    let r = rig_cfg(&NegOpts::default(), |c| required(c, true, false));
    assert!(r.client.sign, "the session signs");
    pipelined_writes(r);
}

/// A WRITE whose RDMA read fails (the fake proxy knows no such client
/// token) is answered UNEXPECTED_NETWORK_ERROR and writes nothing; the
/// channel goes on.
#[test]
fn smbd_failed_rdma_read_fails_the_write() {
    let mut r = rig_cfg(&NegOpts::default(), |c| required(c, true, false));
    let fid = r.client.open_file("wfail.bin");
    assert_eq!(r.client.write(&fid, 0, &[1u8; 4096]).status, SUCCESS);
    let resp = r.client.call(WRITE, 1, &rdma_write_body(&fid, 0, 4096, CH_RDMA_V1, 112, &descs(&[(0, 0x99, 4096)])));
    assert_eq!(resp.status, UNEXPECTED_NETWORK_ERROR, "status {:#x}", resp.status);
    assert_eq!(r.rdma_count(), 1);
    assert_eq!(std::fs::read(r.ts.share_path().join("wfail.bin")).unwrap(), vec![1u8; 4096], "nothing written");
    r.region(0x42, 0, vec![2; 4096]);
    let resp = r.client.call(WRITE, 1, &rdma_write_body(&fid, 0, 4096, CH_RDMA_V1_INVALIDATE, 112, &descs(&[(0, 0x42, 4096)])));
    assert_eq!(resp.status, SUCCESS);
    assert_eq!(r.last_send_invalidate(), Some(0x42));
    assert_eq!(std::fs::read(r.ts.share_path().join("wfail.bin")).unwrap(), vec![2u8; 4096]);
}

/// The proxy closes the channel while a WRITE's RDMA read is unanswered:
/// the WRITE is never answered, nothing is written, and the server ends the
/// channel (its socket reaches end of stream) instead of hanging or
/// panicking. (That its slot stays out of use meanwhile is a unit test of
/// transport_smbd.)
#[test]
fn smbd_channel_end_during_a_write() {
    let mut r = rig();
    let fid = r.client.open_file("wend.bin");
    assert_eq!(r.client.write(&fid, 0, &[1u8; 4096]).status, SUCCESS);
    r.region(0x51, 0, vec![9; 4096]);
    let m = r.client.build(WRITE, 1, &rdma_write_body(&fid, 0, 4096, CH_RDMA_V1, 112, &descs(&[(0, 0x51, 4096)])));
    let chan = r.raw_chan();
    send_frame(chan.as_fd(), &Frame::Recv(m), None).unwrap();
    let mut reader = FrameReader::new(16 << 20);
    let Some(Received { frame: Frame::Rdma(req), .. }) = reader.recv(&chan).unwrap() else { panic!("expected the WRITE's Rdma") };
    assert_eq!(req.dir, RdmaDir::ReadFromClient);
    send_frame(chan.as_fd(), &Frame::Close { reason: 0 }, None).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(reader.recv(&chan).map(|o| o.map(|r| r.frame)));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the server did not end the channel");
    assert!(!matches!(got, Ok(Some(_))), "a frame after the channel's end: {got:?}");
    assert_eq!(std::fs::read(r.ts.share_path().join("wend.bin")).unwrap(), vec![1u8; 4096], "nothing written");
}

/// WRITE by RDMA, then READ (inline), FLUSH, another RDMA WRITE, an RDMA
/// READ of what it wrote and CLOSE, all sent at once while the fake proxy
/// answers each Rdma 100 ms late: each request after a pending WRITE sees its
/// data (the READs return it, the file holds it at CLOSE) and is answered
/// after it (the server waits for the WRITE to be in the file: without that
/// the inline READ would be answered first, with other bytes).
#[test]
fn smbd_requests_after_pending_writes_see_their_data() {
    const LEN: u32 = 64 << 10;
    let mut r = rig();
    let fid = r.client.open_file("order.bin");
    r.credits(8);
    let (a, b) = (pattern(LEN as usize, 1), pattern(LEN as usize, 2));
    r.region(0x61, 0x1000, a.clone());
    r.region(0x62, 0x1000, b.clone());
    r.region(0x63, 0x1000, vec![0; LEN as usize]);
    let msgs = vec![
        r.client.build(WRITE, 1, &rdma_write_body(&fid, 0, LEN, CH_RDMA_V1, 112, &descs(&[(0x1000, 0x61, LEN)]))),
        r.client.build(READ, 1, &read_body(&fid, 0, LEN)),
        r.client.build(FLUSH, 1, &flush_body(&fid)),
        r.client.build(WRITE, 1, &rdma_write_body(&fid, u64::from(LEN), LEN, CH_RDMA_V1, 112, &descs(&[(0x1000, 0x62, LEN)]))),
        r.client.build(READ, 1, &rdma_read_body(&fid, u64::from(LEN), LEN, CH_RDMA_V1, 112, &descs(&[(0x1000, 0x63, LEN)]))),
        r.client.build(CLOSE, 1, &close_body(&fid)),
    ];
    let mids: Vec<u64> = msgs.iter().map(|m| le64(m, 24)).collect();
    let (_, resps) = r.drive(msgs, std::time::Duration::from_millis(100));
    // Where each request's response came, in request order.
    let at: Vec<usize> = mids.iter().map(|mid| resps.iter().position(|r| r.message_id == *mid).expect("a request was not answered")).collect();
    let cmds: Vec<u16> = mids.iter().zip(&at).map(|(_, i)| resps[*i].command).collect();
    assert_eq!(cmds, vec![WRITE, READ, FLUSH, WRITE, READ, CLOSE]);
    // (The RDMA READ's response may follow the CLOSE's: its data was read
    // before the CLOSE ran.)
    for (write, after) in [(0, 1), (0, 2), (0, 5), (3, 4), (3, 5)] {
        assert!(at[write] < at[after], "request {after} answered before the WRITE {write} it follows: {cmds:?} at {at:?}");
    }
    for resp in &resps {
        assert_eq!(resp.status, SUCCESS, "{} status {:#x}", resp.command, resp.status);
        r.client.check_resp(resp);
    }
    assert!(resps[1].read_data() == &a[..], "the READ did not see the pending WRITE's data");
    assert!(r.region_bytes(0x63) == b, "the RDMA READ did not see the pending WRITE's data");
    let on_disk = std::fs::read(r.ts.share_path().join("order.bin")).unwrap();
    assert!(on_disk.len() == 2 * LEN as usize && on_disk[..LEN as usize] == a[..] && on_disk[LEN as usize..] == b[..]);
}

/// Waits (at most 20 s) for the server to end the channel; true if it did.
fn channel_ends(chan: OwnedFd) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = FrameReader::new(16 << 20);
        loop {
            match reader.recv(&chan) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20)).is_ok()
}

/// Before a session is authenticated an SMB Direct channel accepts messages
/// of 128 KiB at most, as TCP does: a 200 KiB one ends the channel. (After
/// logon a 200 KiB WRITE passes: smbd_rdma_write_then_read_moves_the_bytes.)
#[test]
fn smbd_pre_auth_message_limit() {
    let r = rig_negotiated(&NegOpts::default(), |_| {});
    let chan = r.raw_chan();
    let mut m = build_header(ECHO, 0, 1, 0, 1, 0, 0, &[4, 0, 0, 0]);
    m.resize(200 << 10, 0);
    let c2 = chan.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = send_frame(c2.as_fd(), &Frame::Recv(m), None);
    });
    assert!(channel_ends(chan), "a 200 KiB message before authentication was not refused");
}

/// A message begun and not finished within `io timeout` ends the channel
/// (the first of its datagrams came, the rest never does).
#[test]
fn smbd_io_timeout_bounds_a_message() {
    let r = rig_negotiated(&NegOpts::default(), |c| c.limits.io_timeout = std::time::Duration::from_secs(1));
    let chan = r.raw_chan();
    let mut m = build_header(ECHO, 0, 1, 0, 1, 0, 0, &[4, 0, 0, 0]);
    m.resize(100 << 10, 0);
    let dgs = Frame::Recv(m).to_datagrams().unwrap();
    assert!(dgs.len() > 1);
    send_datagram(chan.as_fd(), &dgs[0], None).unwrap();
    let t0 = std::time::Instant::now();
    assert!(channel_ends(chan), "a message left unfinished did not end the channel");
    let took = t0.elapsed();
    assert!(took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(10), "ended after {took:?}");
}

/// Multichannel: an SMB Direct channel bound to a session set up over TCP
/// (MS-SMB2 3.3.5.5, how Windows reaches SMB Direct) reads, by RDMA, an open
/// made on the TCP channel; its responses carry its own channel signature.
#[test]
fn smbd_channel_bound_to_a_tcp_session_reads_its_open_by_rdma() {
    let mut r = rig();
    let mut tcp = connected(&r.ts);
    let fid = tcp.open_file("from-tcp.bin");
    let data = pattern(100_000, 5);
    assert_eq!(tcp.write(&fid, 0, &data).status, SUCCESS);
    // The SMB Direct connection (with a session of its own) binds to the TCP one's.
    crate::multichannel::bind_to(&tcp, &mut r.client);
    let channels: Vec<bool> = r.ts.server.session(tcp.session_id).unwrap().channels.lock().unwrap().list.iter().map(|c| c.rdma).collect();
    assert_eq!(channels, vec![false, true], "a TCP channel and an SMB Direct one");
    r.region(0x5555, 0x9000, vec![0; 100_000]);
    let resp = r.client.call(READ, charge(100_000), &rdma_read_body(&fid, 0, 100_000, CH_RDMA_V1, 112, &descs(&[(0x9000, 0x5555, 100_000)])));
    assert_eq!(resp.status, SUCCESS, "READ on the bound SMB Direct channel {:#x}", resp.status);
    assert_eq!(le32(resp.body(), 8), 100_000, "DataRemaining: the data went by RDMA");
    assert!(r.region_bytes(0x5555) == data, "client memory differs from what the TCP channel wrote");
    // The TCP channel goes away; the session lives on over SMB Direct.
    drop(tcp);
    let resp = r.client.read(&fid, 0, 10, 1);
    assert_eq!(resp.read_data(), &data[..10]);
}
