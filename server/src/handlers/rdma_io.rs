//! READ and WRITE with Channel SMB2_CHANNEL_RDMA_V1 / RDMA_V1_INVALIDATE
//! (MS-SMB2 3.3.5.12, 3.3.5.13): the payload moves by RDMA between a
//! registered buffer (a pool slot) and the client's buffer descriptors.
//! READ reads the file straight into the slot and has the channel RDMA-write
//! it; WRITE has the channel RDMA-read into the slot and writes the file from
//! it. The descriptors are checked against the request before any RDMA is
//! asked for; a lying request gets STATUS_INVALID_PARAMETER.
//!
//! Both are pipelined when a message holds one plaintext request: a READ's
//! RDMA write starts once its response is ready and the response goes out
//! when it is done ([`Deferred::Read`]); a WRITE's RDMA read starts once its
//! response header is ready, and when it is done the slot is written to the
//! file and the response, finished then, goes out ([`Deferred::Write`]).
//! Meanwhile the connection handles its next requests. A request that must
//! see a pending WRITE's data waits for it ([`PendingWrites`]): a READ or
//! inline WRITE of the same open, and any other command (CLOSE, FLUSH,
//! QUERY_INFO, LOCK, ...) for all of the connection's pending WRITEs.

use crate::config::DIALECT_302;
use crate::conn::{Connection, Ctx};
use crate::objects::{lock, Open, OpenKind};
use crate::transport::{MessageSink, OutBuf, RdmaBuffer, RdmaOps, RdmaThen};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{error_body, ReadReq, WriteReq};
use crate::wire::status::NtStatus;
use crate::wire::{u16_at, u32_at, Put};
use smbdirect_transport::wire::{BufferDescriptorV1, BUFFER_DESCRIPTOR_V1_LEN};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

pub const CHANNEL_RDMA_V1: u32 = 1;
pub const CHANNEL_RDMA_V1_INVALIDATE: u32 = 2;

/// Most buffer descriptors one READ or WRITE may name: the rdma-proxy's bound
/// (cifs.ko sends one per I/O, Windows a few); within the protocol's frame
/// bound (`proto::MAX_RDMA_DESCRIPTORS`).
pub const MAX_DESCRIPTORS: usize = 64;

/// WRITEs of one connection whose data is still on its way by RDMA, counted
/// per open (volatile id).
#[derive(Default)]
pub struct PendingWrites {
    count: Mutex<HashMap<u64, usize>>,
    cv: Condvar,
    /// The most WRITEs pending at once, and how many were deferred (for the
    /// connection's closing log line).
    peak: std::sync::atomic::AtomicUsize,
    total: std::sync::atomic::AtomicU64,
}

/// One pending WRITE in [`PendingWrites`]; counted out when dropped (its data
/// is in the file and its response sent, or it failed, or the channel ended).
pub struct WriteGuard {
    writes: Arc<PendingWrites>,
    open: u64,
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        let mut c = lock(&self.writes.count);
        if let Some(n) = c.get_mut(&self.open) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.open);
            }
        }
        drop(c);
        self.writes.cv.notify_all();
    }
}

impl PendingWrites {
    fn add(self: &Arc<Self>, open: u64) -> WriteGuard {
        let mut c = lock(&self.count);
        *c.entry(open).or_insert(0) += 1;
        let n: usize = c.values().sum();
        drop(c);
        self.peak.fetch_max(n, std::sync::atomic::Ordering::Relaxed);
        self.total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        WriteGuard { writes: self.clone(), open }
    }

    /// (WRITEs deferred in all, the most pending at once.)
    pub fn stats(&self) -> (u64, usize) {
        (self.total.load(std::sync::atomic::Ordering::Relaxed), self.peak.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Waits until no WRITE of `open` (all opens: `None`) is pending; false
    /// if some still are after `timeout`.
    pub fn wait(&self, open: Option<u64>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut c = lock(&self.count);
        loop {
            let busy = match open {
                Some(o) => c.contains_key(&o),
                None => !c.is_empty(),
            };
            if !busy {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = self.cv.wait_timeout(c, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.count).is_empty()
    }
}

/// Waits for the connection's pending RDMA WRITEs of `open` (of every open:
/// `None`), at most the io timeout: a request after them sees their data.
pub fn wait_writes(conn: &Connection, open: Option<u64>) -> Result<(), NtStatus> {
    let t = conn.server.cfg.limits.io_timeout;
    let t = if t.is_zero() { Duration::from_secs(120) } else { t };
    if conn.pending_writes.wait(open, t) {
        return Ok(());
    }
    warn!(peer = %conn.peer, "RDMA WRITEs still pending after {} s; request refused", t.as_secs());
    Err(NtStatus::UNEXPECTED_NETWORK_ERROR)
}

/// An RDMA transfer left for after the response is built.
pub(crate) enum Deferred {
    /// A READ's filled slot and the client's descriptors: the RDMA write
    /// starts when the response is ready; the response goes when it is done.
    Read(RdmaBuffer, Vec<BufferDescriptorV1>),
    /// A WRITE whose RDMA read starts when the response header is ready.
    Write(DeferredWrite),
}

pub(crate) struct DeferredWrite {
    slot: RdmaBuffer,
    descs: Vec<BufferDescriptorV1>,
    open: Arc<Open>,
    /// Where to write (checked by `write_target`) and the request's flags.
    offset: u64,
    flags: u32,
    guard: WriteGuard,
    /// The keys that sign the response (filled in when the chain is done).
    pub keys: Option<crate::objects::SigningKey>,
}

/// Starts a deferred WRITE's RDMA read; when it is done the slot is written
/// to the file on the channel's thread and `reply` (header ready, body a
/// placeholder) gets the WRITE's body or its error, is signed and is sent.
pub(crate) fn start_deferred_write(conn: &Connection, w: DeferredWrite, reply: OutBuf, invalidate: Option<u32>) -> std::io::Result<()> {
    let sink = conn.sink.clone();
    let rdma = sink.rdma().ok_or_else(|| std::io::Error::other("RDMA WRITE without an RDMA transport"))?;
    let DeferredWrite { slot, descs, open, offset, flags, guard, keys } = w;
    let (to, peer) = (conn.sink.clone(), conn.peer.clone());
    let then: RdmaThen = Box::new(move |r: std::io::Result<RdmaBuffer>| {
        let result = match r {
            Ok(slot) => {
                let mut body = Vec::with_capacity(16);
                super::file::write_at(&open, offset, slot.as_slice(), flags, &mut body).map(|()| body)
            }
            Err(e) => {
                warn!(%peer, "RDMA read for a WRITE failed: {e}");
                Err(NtStatus::UNEXPECTED_NETWORK_ERROR)
            }
        };
        let mut reply = reply;
        finish_reply(&mut reply, result);
        if let Some(k) = &keys {
            if let Some(m) = reply.buf.get_mut(reply.start..) {
                crate::conn::sign_with_key(k, m);
            }
        }
        let sent = match invalidate {
            Some(token) => to.send_invalidate(reply, token),
            None => to.send(reply),
        };
        if let Err(e) = sent {
            warn!(%peer, "cannot send a WRITE response: {e}; dropping the channel");
            to.shutdown();
        }
        // Counted out only now: a request waiting for this WRITE is answered after it.
        drop(guard);
    });
    rdma.read_from_peer_then(slot, descs, then)
}

/// Puts the WRITE's real body (or its error) after the response header.
fn finish_reply(reply: &mut OutBuf, result: Result<Vec<u8>, NtStatus>) {
    let hdr_end = reply.start + HEADER_LEN;
    reply.buf.truncate(hdr_end);
    match result {
        Ok(body) => reply.buf.extend_from_slice(&body),
        Err(st) => {
            if let Some(s) = reply.buf.get_mut(reply.start + 8..reply.start + 12) {
                s.copy_from_slice(&st.0.to_le_bytes());
            }
            error_body(&mut reply.buf, &[]);
        }
    }
}

/// Both READ and WRITE requests have a 48-byte fixed body before Buffer.
const FIXED_END: usize = HEADER_LEN + 48;
/// Body offsets of RemainingBytes and the channel info offset.
const READ_CHANNEL_OFFSET_AT: usize = HEADER_LEN + 44;
const WRITE_REMAINING_AT: usize = HEADER_LEN + 36;
const WRITE_CHANNEL_OFFSET_AT: usize = HEADER_LEN + 40;

/// Which RDMA channel a request asks for; whether the response must
/// invalidate the client's token.
fn channel_kind(conn: &Connection, ctx: &Ctx<'_>, channel: u32) -> Result<bool, NtStatus> {
    let invalidate = match channel {
        CHANNEL_RDMA_V1 => false,
        // MS-SMB2 2.2.19: RDMA_V1_INVALIDATE exists from dialect 3.0.2 on.
        CHANNEL_RDMA_V1_INVALIDATE if conn.dialect.is_some_and(|d| d >= DIALECT_302) => true,
        _ => return Err(NtStatus::INVALID_PARAMETER),
    };
    // The payload would bypass the session's encryption: no RDMA transform
    // is implemented, so an encrypted request may not use an RDMA channel.
    if ctx.encrypted {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(invalidate)
}

/// Checks a channel info blob against the request and returns the
/// descriptors that cover exactly `need` bytes (the last one trimmed).
///
/// Refused: channel info overlapping the fixed part of the request (its
/// bounds inside the message were checked by the parser), a length that is
/// not a whole number of descriptors, no descriptor or more than the proxy
/// accepts, a zero-length descriptor, `need` above `max`, or descriptors
/// that add up to less than `need`.
pub fn check_descriptors(channel_offset: usize, info: &[u8], need: u64, max: u64) -> Result<Vec<BufferDescriptorV1>, NtStatus> {
    if channel_offset < FIXED_END || info.is_empty() || info.len() % BUFFER_DESCRIPTOR_V1_LEN != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let count = info.len() / BUFFER_DESCRIPTOR_V1_LEN;
    if count > MAX_DESCRIPTORS || need > max {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mut out = Vec::with_capacity(count);
    let mut left = need;
    let mut total = 0u64;
    for d in BufferDescriptorV1::iter_list(info).map_err(|_| NtStatus::INVALID_PARAMETER)? {
        if d.length == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        total += u64::from(d.length);
        if left > 0 {
            let take = left.min(u64::from(d.length));
            out.push(BufferDescriptorV1 { length: take as u32, ..d });
            left -= take;
        }
    }
    if total < need {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(out)
}

/// The first `n` bytes' worth of already checked descriptors.
fn first_bytes(descs: &[BufferDescriptorV1], n: u64) -> Vec<BufferDescriptorV1> {
    let mut left = n;
    let mut out = Vec::new();
    for d in descs {
        if left == 0 {
            break;
        }
        let take = left.min(u64::from(d.length));
        out.push(BufferDescriptorV1 { length: take as u32, ..*d });
        left -= take;
    }
    out
}

fn rdma_ops(sink: &Arc<dyn MessageSink>) -> Result<&dyn RdmaOps, NtStatus> {
    // RDMA channels need an SMB Direct transport (MS-SMB2 3.3.5.12).
    sink.rdma().ok_or(NtStatus::INVALID_PARAMETER)
}

/// An inline READ (Channel NONE) on an SMB Direct channel: its response
/// goes as SMB Direct data transfer messages, whose reassembled size the
/// peer bounds by its MaxFragmentedSize (MS-SMBD 3.1.5.1). A READ whose
/// response could exceed it is refused with STATUS_INVALID_PARAMETER, as for
/// a Length past Connection.MaxReadSize (MS-SMB2 3.3.5.12): a client reads
/// that much by RDMA instead. The bound reserves the SMB2 header, the READ
/// response's fixed body and padding, and a TRANSFORM_HEADER (an encrypted
/// response is that much longer). On TCP this checks nothing.
pub fn check_inline_read(conn: &Connection, length: u32, pad: u8) -> Result<(), NtStatus> {
    const TRANSFORM_HEADER_LEN: u64 = 52;
    let Some(rdma) = conn.sink.rdma() else { return Ok(()) };
    let overhead = (HEADER_LEN + 16) as u64 + u64::from(pad) + TRANSFORM_HEADER_LEN;
    if u64::from(length) + overhead > u64::from(rdma.max_inline_send()) {
        tracing::debug!(peer = %conn.peer, length, max = rdma.max_inline_send(), "inline READ longer than the peer's SMB Direct MaxFragmentedSize allows");
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(())
}

fn rdma_error(conn: &Connection, what: &str, e: std::io::Error) -> NtStatus {
    warn!(peer = %conn.peer, "RDMA {what} failed: {e}");
    NtStatus::UNEXPECTED_NETWORK_ERROR
}

/// SMB2 READ with an RDMA channel; `req.length` was checked against the
/// server's MaxReadSize by the caller.
pub fn read(conn: &mut Connection, ctx: &mut Ctx<'_>, req: &ReadReq<'_>, open: Arc<Open>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let invalidate = channel_kind(conn, ctx, req.channel)?;
    let sink = conn.sink.clone();
    let rdma = rdma_ops(&sink)?;
    let max = u64::from(rdma.max_read_write_size().min(conn.server.cfg.max_read_size));
    let ci_off = u16_at(ctx.msg, READ_CHANNEL_OFFSET_AT).ok_or(NtStatus::INVALID_PARAMETER)? as usize;
    let descs = check_descriptors(ci_off, req.channel_info, u64::from(req.length), max)?;
    if invalidate {
        conn.invalidate_token = descs.first().map(|d| d.token);
    }
    if matches!(open.kind, OpenKind::Pipe(_)) || open.is_dir() {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    let fd = super::file::read_source(conn, &open, req.offset, req.length)?;
    wait_writes(conn, Some(open.volatile_id))?;
    let len = req.length as usize;
    let mut slot = rdma.buffer(len).map_err(|e| rdma_error(conn, "buffer", e))?;
    let got = super::file::read_at(&open, fd, slot.as_mut_slice(), req.offset, req.minimum)?;
    slot.truncate(got);
    if got > 0 {
        let remote = first_bytes(&descs, got as u64);
        if conn.may_defer_rdma && conn.deferred.is_none() {
            // The RDMA write starts when the response is ready and the
            // response goes out when it is done: meanwhile this connection
            // handles its next request (cifs.ko keeps many READs in flight).
            conn.deferred = Some(Deferred::Read(slot, remote));
        } else {
            rdma.write_to_peer(slot, &remote).map_err(|e| rdma_error(conn, "write", e))?;
        }
    }
    // MS-SMB2 3.3.5.12: the data went by RDMA: DataLength 0, DataRemaining
    // the bytes written to the client's buffers.
    out.u16(17).u8((HEADER_LEN + 16) as u8).u8(0).u32(0).u32(got as u32).u32(0);
    *lock(&open.position) = req.offset + got as u64;
    Ok(())
}

/// SMB2 WRITE with an RDMA channel: Length is 0 and RemainingBytes says how
/// much the client's buffers hold.
pub fn write(conn: &mut Connection, ctx: &mut Ctx<'_>, req: &WriteReq<'_>, open: Arc<Open>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let invalidate = channel_kind(conn, ctx, req.channel)?;
    let sink = conn.sink.clone();
    let rdma = rdma_ops(&sink)?;
    if !req.data.is_empty() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let remaining = u32_at(ctx.msg, WRITE_REMAINING_AT).ok_or(NtStatus::INVALID_PARAMETER)?;
    let max = u64::from(rdma.max_read_write_size().min(conn.server.cfg.max_write_size));
    let ci_off = u16_at(ctx.msg, WRITE_CHANNEL_OFFSET_AT).ok_or(NtStatus::INVALID_PARAMETER)? as usize;
    let descs = check_descriptors(ci_off, req.channel_info, u64::from(remaining), max)?;
    if invalidate {
        conn.invalidate_token = descs.first().map(|d| d.token);
    }
    if matches!(open.kind, OpenKind::Pipe(_)) || open.is_dir() {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    let len = remaining as usize;
    // An append-only open writes at the end of file, which pending WRITEs
    // move: it waits for them and is not deferred itself.
    let append_only = open.access & super::FILE_WRITE_DATA == 0;
    if append_only {
        wait_writes(conn, Some(open.volatile_id))?;
    }
    let offset = super::file::write_target(conn, &open, req.offset, len)?;
    let slot = rdma.buffer(len).map_err(|e| rdma_error(conn, "buffer", e))?;
    if len > 0 && !append_only && conn.may_defer_rdma && conn.deferred.is_none() {
        // The RDMA read starts when the response header is ready; the data
        // is written and the response sent when it is done, while this
        // connection handles its next requests (cifs.ko keeps many WRITEs in
        // flight). The body here is a placeholder: `write_at` makes the real one.
        let guard = conn.pending_writes.add(open.volatile_id);
        conn.deferred = Some(Deferred::Write(DeferredWrite { slot, descs, open, offset, flags: req.flags, guard, keys: None }));
        out.u16(17).u16(0).u32(0).u32(0).u16(0).u16(0);
        return Ok(());
    }
    let slot = if len > 0 { rdma.read_from_peer(slot, &descs).map_err(|e| rdma_error(conn, "read", e))? } else { slot };
    wait_writes(conn, Some(open.volatile_id))?;
    // The slot goes back to the pool when this returns.
    super::file::write_at(&open, offset, slot.as_slice(), req.flags, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(descs: &[(u64, u32, u32)]) -> Vec<u8> {
        descs.iter().flat_map(|&(offset, token, length)| BufferDescriptorV1 { offset, token, length }.to_bytes()).collect()
    }

    #[test]
    fn descriptors_cover_the_request_and_are_trimmed() {
        let b = blob(&[(0x1000, 7, 4096), (0x9000, 8, 4096)]);
        let d = check_descriptors(FIXED_END, &b, 6000, 1 << 20).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].length, 4096);
        assert_eq!(d[1].length, 6000 - 4096);
        assert_eq!(d[1].token, 8);
        // Only as many descriptors as the bytes need.
        let d = check_descriptors(FIXED_END, &b, 100, 1 << 20).unwrap();
        assert_eq!(d, vec![BufferDescriptorV1 { offset: 0x1000, token: 7, length: 100 }]);
        assert_eq!(first_bytes(&check_descriptors(FIXED_END, &b, 8192, 1 << 20).unwrap(), 5000).iter().map(|d| d.length).sum::<u32>(), 5000);
    }

    #[test]
    fn lying_descriptors_are_refused() {
        let ok = blob(&[(0x1000, 7, 4096)]);
        let bad = NtStatus::INVALID_PARAMETER;
        // Less room than the request says.
        assert_eq!(check_descriptors(FIXED_END, &ok, 4097, 1 << 20), Err(bad));
        // Above the channel's maximum.
        assert_eq!(check_descriptors(FIXED_END, &ok, 4096, 4095), Err(bad));
        // Not a whole number of descriptors, or none.
        assert_eq!(check_descriptors(FIXED_END, &ok[..15], 10, 1 << 20), Err(bad));
        assert_eq!(check_descriptors(FIXED_END, &[], 0, 1 << 20), Err(bad));
        // Inside the fixed part of the request.
        assert_eq!(check_descriptors(FIXED_END - 8, &ok, 10, 1 << 20), Err(bad));
        // A zero-length descriptor.
        assert_eq!(check_descriptors(FIXED_END, &blob(&[(0, 1, 0), (0, 2, 10)]), 10, 1 << 20), Err(bad));
        // Too many descriptors; the most allowed still pass.
        let many: Vec<(u64, u32, u32)> = (0..=MAX_DESCRIPTORS as u64).map(|i| (i * 16, 1, 1)).collect();
        assert_eq!(check_descriptors(FIXED_END, &blob(&many), 10, 1 << 20), Err(bad));
        assert_eq!(check_descriptors(FIXED_END, &blob(&many[..MAX_DESCRIPTORS]), 10, 1 << 20).map(|d| d.len()), Ok(10));
        assert!(MAX_DESCRIPTORS <= smbdirect_rdma_proxy::proto::MAX_RDMA_DESCRIPTORS);
        // Lengths that would overflow a u32 sum still add up correctly.
        let huge = blob(&[(0, 1, u32::MAX), (0, 2, u32::MAX)]);
        assert!(check_descriptors(FIXED_END, &huge, 1 << 20, 1 << 20).is_ok());
    }
}
