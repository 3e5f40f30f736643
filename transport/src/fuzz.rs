//! Entry points shared by the cargo-fuzz targets (`transport/fuzz`) and the corpus replay
//! test, so that both exercise exactly the same code. Each must return normally for every
//! input; a panic is a bug.

use std::time::{Duration, Instant};

use crate::smbd::{Action, Config, Connection, Role};
use crate::wire::{BufferDescriptorV1, DataTransferHeader, NegotiateRequest, NegotiateResponse};

/// Names of the targets, as used for `fuzz/fuzz_targets/<name>.rs` and corpus folders.
pub const TARGETS: [&str; 5] = ["negotiate_request", "negotiate_response", "data_transfer", "buffer_desc", "connection"];

/// Runs target `name` on `data`. Returns false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "negotiate_request" => negotiate_request(data),
        "negotiate_response" => negotiate_response(data),
        "data_transfer" => data_transfer(data),
        "buffer_desc" => buffer_desc(data),
        "connection" => connection(data),
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
            if let crate::smbd::Event::Message(m) = e {
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
