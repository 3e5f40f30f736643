//! Entry points shared by the cargo-fuzz targets (`transport/fuzz`) and the corpus replay
//! test, so that both exercise exactly the same code. Each must return normally for every
//! input; a panic is a bug.

use std::time::{Duration, Instant};

use crate::smbd::{Action, CompletionError, Config, Connection, Event, LocalSegment, Role, SendSlot};
use crate::wire::{BufferDescriptorV1, DataTransferHeader, NegotiateRequest, NegotiateResponse};

/// Names of the targets, as used for `fuzz/fuzz_targets/<name>.rs` and corpus folders.
pub const TARGETS: [&str; 6] =
    ["negotiate_request", "negotiate_response", "data_transfer", "buffer_desc", "connection", "events"];

/// Runs target `name` on `data`. Returns false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "negotiate_request" => negotiate_request(data),
        "negotiate_response" => negotiate_response(data),
        "data_transfer" => data_transfer(data),
        "buffer_desc" => buffer_desc(data),
        "connection" => connection(data),
        "events" => events(data),
        _ => return false,
    }
    true
}

pub fn negotiate_request(data: &[u8]) {
    if let Ok(r) = NegotiateRequest::decode(data) {
        let _ = r.validate();
        let b = r.to_bytes();
        assert_eq!(NegotiateRequest::decode(&b), Ok(r));
    }
}

pub fn negotiate_response(data: &[u8]) {
    if let Ok(r) = NegotiateResponse::decode(data) {
        let _ = r.validate();
        assert_eq!(NegotiateResponse::decode(&r.to_bytes()), Ok(r));
    }
}

pub fn data_transfer(data: &[u8]) {
    if let Ok((h, payload)) = DataTransferHeader::decode(data) {
        assert_eq!(payload.len(), h.data_length as usize);
        let mut out = vec![0u8; 24 + payload.len()];
        if let Ok(n) = h.encode_with_data(payload, &mut out) {
            let (h2, p2) = DataTransferHeader::decode(out.get(..n).unwrap_or(&[])).expect("re-decode");
            assert_eq!(p2, payload);
            assert_eq!(h2.remaining_data_length, h.remaining_data_length);
        }
    }
}

pub fn buffer_desc(data: &[u8]) {
    let mut v = Vec::new();
    if BufferDescriptorV1::decode_list_into(data, &mut v).is_ok() {
        assert_eq!(v.len() * 16, data.len());
    }
    let _ = BufferDescriptorV1::decode(data);
}

/// The first byte picks the role; the rest is a series of messages, each prefixed by a
/// 2-byte little-endian length, fed to the connection as receive completions (with a
/// send completion for every posted send and a timer tick every few messages).
pub fn connection(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else { return };
    let role = if first & 1 == 0 { Role::Server } else { Role::Client };
    let mut now = Instant::now();
    let mut c = Connection::new(role, Config::ksmbd(), now);
    let mut i = 0u32;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        c.handle_recv(now, msg);
        while let Some(a) = c.poll_action() {
            if let Action::PostSend { slot, .. } = a {
                c.handle_send_complete(now, slot, Ok(()));
            }
        }
        while let Some(e) = c.poll_event() {
            if let Event::Message(m) = e {
                c.recycle(m);
            }
        }
        i += 1;
        if i & 3 == 0 {
            now += Duration::from_secs(61);
            c.handle_timeout(now);
        }
    }
}

/// Takes bytes off the front of the input; zeros when it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

const COMPLETION_ERRORS: [CompletionError; 6] = [
    CompletionError::RnrRetryExceeded,
    CompletionError::RemoteAccess,
    CompletionError::LocalLength,
    CompletionError::LocalProtection,
    CompletionError::Flushed,
    CompletionError::RetryExceeded,
];

/// Every driver event and upper-layer request in any order and with any arguments: well-
/// formed and malformed receives, send and RDMA completions (right, wrong, repeated,
/// failed), timers, upper-layer sends and RDMA operations with arbitrary descriptors,
/// receive errors, disconnects. The first byte picks the role, the parameter set and
/// whether negotiation is done properly first.
pub fn events(data: &[u8]) {
    let mut inp = Input(data);
    let first = inp.u8();
    let role = if first & 1 == 0 { Role::Server } else { Role::Client };
    let mut cfg = match (first >> 1) & 3 {
        0 => Config::ksmbd(),
        1 => Config::cifs(),
        2 => Config::windows(),
        _ => {
            let mut c = Config::ksmbd();
            c.receive_credit_max = 3;
            c.send_credit_target = 2;
            c.send_slots = 4;
            c
        }
    };
    cfg.max_read_write_size = 1 << 20;
    let mut now = Instant::now();
    let mut c = Connection::new(role, cfg, now);
    if first & 8 != 0 {
        match role {
            Role::Server => {
                let req = NegotiateRequest {
                    min_version: 0x100,
                    max_version: 0x100,
                    credits_requested: 255,
                    preferred_send_size: 1364,
                    max_receive_size: 1364,
                    max_fragmented_size: 1 << 20,
                };
                c.handle_recv(now, &req.to_bytes());
            }
            Role::Client => {
                let resp = NegotiateResponse {
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
                c.handle_recv(now, &resp.to_bytes());
            }
        }
    }
    let mut sends: Vec<SendSlot> = Vec::new();
    let mut wrs: Vec<u64> = Vec::new();
    let mut msg = vec![0u8; 2048];
    let payload = vec![0u8; 1 << 16];
    let mut ops = 0;
    while !inp.0.is_empty() && ops < 400 {
        ops += 1;
        match inp.u8() % 12 {
            0 => {
                let n = usize::from(inp.u16() % 1500);
                let raw = inp.bytes(n).to_vec();
                c.handle_recv(now, &raw);
            }
            1 | 2 => {
                let h = DataTransferHeader {
                    credits_requested: inp.u16() % 300,
                    credits_granted: inp.u16() % 300,
                    flags: u16::from(inp.u8() & 3),
                    remaining_data_length: if inp.u8() & 1 == 0 { 0 } else { inp.u32() % 300_000 },
                    ..Default::default()
                };
                let len = usize::from(inp.u16() % 1400);
                let data = payload.get(..len).unwrap_or(&[]);
                if let Ok(n) = h.encode_with_data(data, &mut msg) {
                    c.handle_recv(now, msg.get(..n).unwrap_or(&[]));
                }
            }
            3 | 4 => {
                // Complete a posted send (usually the oldest), now and then with an error.
                if !sends.is_empty() {
                    let i = usize::from(inp.u8()) % sends.len().min(3);
                    let slot = sends.remove(i);
                    let e = inp.u8();
                    let r = if e < 250 { Ok(()) } else { Err(COMPLETION_ERRORS[usize::from(e) % 6]) };
                    c.handle_send_complete(now, slot, r);
                }
            }
            5 => c.handle_send_complete(now, SendSlot(inp.u16()), Ok(())),
            6 => {
                let len = usize::from(inp.u16()) * (1 + usize::from(inp.u8() & 3));
                let _ = c.send(now, payload.get(..len.min(payload.len())).unwrap_or(&[]));
            }
            7 => {
                let nd = 1 + usize::from(inp.u8() % 4);
                let descs: Vec<BufferDescriptorV1> = (0..nd)
                    .map(|_| BufferDescriptorV1 {
                        offset: if inp.u8() & 1 == 0 { u64::from(inp.u32()) } else { u64::MAX - u64::from(inp.u16()) },
                        token: inp.u32(),
                        length: inp.u32() % 400_000,
                    })
                    .collect();
                let ns = 1 + usize::from(inp.u8() % 8);
                let segs: Vec<LocalSegment> =
                    (0..ns).map(|_| LocalSegment { lkey: 1, addr: u64::from(inp.u32()), len: inp.u32() % 300_000 }).collect();
                let len = u64::from(inp.u32() % 2_000_000);
                let _ = if inp.u8() & 1 == 0 {
                    c.rdma_read(now, &descs, &segs, len)
                } else {
                    c.rdma_write(now, &descs, &segs, len)
                };
            }
            8 => {
                // Complete an RDMA work request (posted or not), now and then with an error.
                let id = if wrs.is_empty() || inp.u8() == 0 {
                    u64::from(inp.u32())
                } else {
                    let i = usize::from(inp.u8()) % wrs.len();
                    wrs.remove(i)
                };
                let e = inp.u8();
                let r = if e < 250 { Ok(()) } else { Err(COMPLETION_ERRORS[usize::from(e) % 6]) };
                c.handle_rdma_complete(now, id, r);
            }
            9 | 10 => {
                now += Duration::from_millis(u64::from(inp.u16()) * 50);
                c.handle_timeout(now);
            }
            _ => match inp.u8() {
                0 => c.handle_recv_error(now, COMPLETION_ERRORS[usize::from(inp.u8()) % 6]),
                1 => c.handle_peer_disconnect(now),
                2 => c.close(now),
                _ => {}
            },
        }
        while let Some(a) = c.poll_action() {
            match a {
                Action::PostSend { slot, len, .. } => {
                    assert_eq!(c.send_bytes(slot).len(), len as usize);
                    sends.push(slot);
                }
                Action::PostRdma(wr) => {
                    assert_eq!(wr.local().iter().map(|s| u64::from(s.len)).sum::<u64>(), u64::from(wr.len));
                    assert!(wr.local().len() <= c.rdma_limits().max_sge);
                    assert!(wr.len <= c.rdma_limits().max_message_size);
                    wrs.push(wr.wr_id);
                }
                _ => {}
            }
        }
        assert!(c.rdma_bytes_in_flight() <= c.rdma_limits().max_bytes_in_flight.max(u64::from(c.rdma_limits().max_message_size)));
        while let Some(e) = c.poll_event() {
            if let Event::Message(m) = e {
                c.recycle(m);
            }
        }
    }
}
