//! CLOSE, FLUSH, READ, WRITE and LOCK.
//!
//! READ reads from the file straight into the response buffer that the
//! transport handed us; WRITE writes from the request buffer as received.

use super::*;
use crate::conn::{Connection, Ctx};
use crate::objects::{lock, Open, OpenKind};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{parse_flush, CloseReq, ReadReq, WriteReq, CLOSE_FLAG_POSTQUERY_ATTRIB};
use crate::wire::status::NtStatus;
use crate::wire::Put;
use std::os::fd::OwnedFd;

const CHANNEL_NONE: u32 = 0;

/// The largest file size a write may produce (MS-FSA 2.1.5.3: MAXFILESIZE,
/// 0xFFFFFFF0000 as Windows' NTFS uses).
pub const MAX_FILE_SIZE: u64 = 0xFFF_FFFF_0000;

/// MS-FSA 2.1.5.2: a READ of `len` bytes at `offset` is valid when the offset is
/// not negative as a signed 64-bit value and the range does not pass i64::MAX.
pub fn read_range_valid(offset: u64, len: u32) -> bool {
    offset <= i64::MAX as u64 && offset + u64::from(len) <= i64::MAX as u64
}

/// MS-FSA 2.1.5.3: a WRITE at a negative offset is invalid, and so is one
/// that would extend the file past MAXFILESIZE (an empty write never does).
pub fn write_range_valid(offset: u64, len: usize) -> bool {
    offset <= i64::MAX as u64 && (len == 0 || offset.checked_add(len as u64).is_some_and(|end| end <= MAX_FILE_SIZE))
}

pub fn close(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = CloseReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    let session = ctx.session()?.clone();
    let st = if req.flags & CLOSE_FLAG_POSTQUERY_ATTRIB != 0 { open.stat().ok() } else { None };
    lock(&session.opens).remove(&open.volatile_id);
    open.close(&conn.server);
    out.u16(60).u16(if st.is_some() { CLOSE_FLAG_POSTQUERY_ATTRIB } else { 0 }).u32(0);
    match st {
        Some(s) => out.u64(s.btime).u64(s.atime).u64(s.mtime).u64(s.ctime).u64(s.alloc).u64(s.size).u32(s.attrs),
        None => out.zeros(52),
    };
    Ok(())
}

pub fn flush(ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let id = parse_flush(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&id)?;
    if open.access & (FILE_WRITE_DATA | FILE_APPEND_DATA) == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    // (A stream's xattr has no data of its own to flush.)
    if let (Some(fd), None) = (&open.fd, &open.stream) {
        rustix::fs::fsync(fd).map_err(NtStatus::from_errno)?;
    }
    out.u16(4).u16(0);
    Ok(())
}

pub fn read(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = ReadReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    if req.length > conn.server.cfg.max_read_size {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.channel != CHANNEL_NONE {
        return super::rdma_io::read(conn, ctx, &req, open, out);
    }
    super::rdma_io::check_inline_read(conn, req.length, conn.read_body_padding)?;
    // Padding between the fixed body and the data: 0 unless a test asked for
    // it with FSCTL_SMBTORTURE_GLOBAL_READ_RESPONSE_BODY_PADDING8.
    let pad = usize::from(conn.read_body_padding);
    out.u16(17).u8((HEADER_LEN + 16 + pad) as u8).u8(0);
    let len_at = out.len();
    out.u32(0).u32(0).u32(0).zeros(pad);
    let data_start = out.len();
    if let OpenKind::Pipe(p) = &open.kind {
        let data = lock(p).read(req.length as usize)?;
        out.put(&data);
        out.set_u32(len_at, data.len() as u32);
        return Ok(());
    }
    if open.is_dir() {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    let fd = read_source(conn, &open, req.offset, req.length)?;
    super::rdma_io::wait_writes(conn, Some(open.volatile_id))?;
    // A READ sees the data of the WRITEs of its open handed to the I/O pool.
    conn.inflight.wait_writes(open.volatile_id);
    if conn.io_here {
        let guard = enter_in_flight(conn, req.length as usize, None);
        let (offset, length, minimum) = (req.offset, req.length, req.minimum);
        conn.io_job = Some(IoJob { kind: IoKind::Read { open, offset, length, minimum, len_at, data_start }, keys: None, seal: None, _guard: guard });
        return Ok(());
    }
    let len = req.length as usize;
    // Not zero-filled first: read_at overwrites it and what it does not
    // fill is cut off below (an error response is cut to its header).
    crate::iopool::grow_for_overwrite(out, data_start + len);
    let got = read_at(&open, fd, &mut out[data_start..], req.offset, req.minimum)?;
    out.truncate(data_start + got);
    out.set_u32(len_at, got as u32);
    // Samba (the reference smbtorture targets) keeps FilePositionInformation
    // at the end of the last READ or WRITE; Windows leaves it unless the open
    // is synchronous (MS-FSA 2.1.5.2).
    *lock(&open.position) = req.offset + got as u64;
    Ok(())
}

pub fn write(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = WriteReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    if req.channel != CHANNEL_NONE {
        return super::rdma_io::write(conn, ctx, &req, open, out);
    }
    if let OpenKind::Pipe(p) = &open.kind {
        lock(p).write(req.data)?;
        out.u16(17).u16(0).u32(req.data.len() as u32).u32(0).u16(0).u16(0);
        return Ok(());
    }
    if open.is_dir() {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    // (First: an append-only open's offset is the end of file after them.)
    super::rdma_io::wait_writes(conn, Some(open.volatile_id))?;
    let append_only = open.access & FILE_WRITE_DATA == 0;
    if append_only {
        conn.inflight.wait_writes(open.volatile_id);
    }
    let offset = write_target(conn, &open, req.offset, req.data.len())?;
    // Handed to the I/O pool, but for an append-only open (its offset, the
    // end of file, is only known once the WRITEs before it are done).
    if conn.io_here && !append_only {
        // Where the data is in the request (`ctx.msg` lies in the request buffer).
        let at = (req.data.as_ptr() as usize).wrapping_sub(ctx.msg.as_ptr() as usize);
        if at <= ctx.msg.len() && req.data.len() <= ctx.msg.len() - at {
            let guard = enter_in_flight(conn, req.data.len(), Some(open.volatile_id));
            let data = at..at + req.data.len();
            conn.io_job = Some(IoJob { kind: IoKind::Write { open, offset, flags: req.flags, data }, keys: None, seal: None, _guard: guard });
            return Ok(());
        }
    }
    write_at(&open, offset, req.data, req.flags, out)
}

/// Counts a READ/WRITE handed to the I/O pool in (waits while the
/// connection has `max in flight per connection` in flight, or while their
/// bytes would pass half the `max send queue`: READ responses waiting for the
/// socket must stay under it, which closes the connection when passed).
fn enter_in_flight(conn: &Connection, bytes: usize, write_of: Option<u64>) -> crate::iopool::Guard {
    let l = &conn.server.cfg.limits;
    conn.inflight.enter(l.max_in_flight_per_connection, l.max_send_queue / 2, bytes, write_of)
}

/// A READ's or WRITE's file I/O and the rest of its response, left for the
/// I/O pool (crate::iopool) by the connection's thread, which has done every
/// check and built the response header (credits granted as always).
pub(crate) struct IoJob {
    kind: IoKind,
    /// The key that signs the response (filled in when the chain is done).
    pub keys: Option<crate::objects::SigningKey>,
    /// The session keys and id that seal the response, for an encrypted request.
    pub seal: Option<(std::sync::Arc<crate::objects::SessionKeys>, u64)>,
    _guard: crate::iopool::Guard,
}

/// A finished response and its place among the connection's requests in
/// flight (given back once it is sent).
pub(crate) type Finished = (Option<crate::transport::OutBuf>, crate::iopool::Guard);

enum IoKind {
    /// `len_at` and `data_start` index the response buffer.
    Read { open: std::sync::Arc<Open>, offset: u64, length: u32, minimum: u32, len_at: usize, data_start: usize },
    /// `data` indexes the request (its plaintext, for an encrypted one).
    Write { open: std::sync::Arc<Open>, offset: u64, flags: u32, data: std::ops::Range<usize> },
}

impl IoJob {
    /// Does the I/O and finishes `reply` (its body, or an error body and
    /// status), signed or sealed, to be sent; `None` when it cannot be
    /// (`sink` is closed then). `req` is the request's plaintext. The guard
    /// counts the request in flight until it is dropped (after the send).
    pub(crate) fn finish(self, mut reply: crate::transport::OutBuf, req: &[u8], sink: &dyn crate::transport::MessageSink) -> Finished {
        let hdr_end = reply.start + HEADER_LEN;
        let result = match self.kind {
            IoKind::Read { open, offset, length, minimum, len_at, data_start } => match open.fd.as_ref() {
                None => Err(NtStatus::INVALID_HANDLE),
                Some(fd) => {
                    // (Overwritten or cut off below, or on error.)
                    crate::iopool::grow_for_overwrite(&mut reply.buf, data_start + length as usize);
                    read_at(&open, fd, &mut reply.buf[data_start..], offset, minimum).map(|got| {
                        reply.buf.truncate(data_start + got);
                        reply.buf.set_u32(len_at, got as u32);
                        *lock(&open.position) = offset + got as u64;
                    })
                }
            },
            IoKind::Write { open, offset, flags, data } => {
                reply.buf.truncate(hdr_end);
                match req.get(data) {
                    Some(d) => write_at(&open, offset, d, flags, &mut reply.buf),
                    None => Err(NtStatus::INTERNAL_ERROR),
                }
            }
        };
        if let Err(st) = result {
            reply.buf.truncate(hdr_end);
            if let Some(s) = reply.buf.get_mut(reply.start + 8..reply.start + 12) {
                s.copy_from_slice(&st.0.to_le_bytes());
            }
            crate::wire::messages::error_body(&mut reply.buf, &[]);
        }
        if let Some(k) = &self.keys {
            if let Some(m) = reply.buf.get_mut(reply.start..) {
                crate::conn::sign_with_key(k, m);
            }
        }
        if let Some((keys, session_id)) = &self.seal {
            if let Err(e) = crate::conn::seal_out(keys, *session_id, &mut reply) {
                tracing::warn!(peer = %sink.peer(), "encryption failed: {e}; closing the connection");
                sink.shutdown();
                return (None, self._guard);
            }
        }
        (Some(reply), self._guard)
    }

    /// [`IoJob::finish`] and send, on this thread.
    pub(crate) fn run(self, reply: crate::transport::OutBuf, req: &[u8], sink: &dyn crate::transport::MessageSink) {
        if let (Some(reply), _guard) = self.finish(reply, req, sink) {
            send_or_close(sink, reply);
        }
    }
}

/// The checks every READ makes before any data is read (into the response,
/// or into a pool slot for RDMA): read or execute access, a valid range and
/// byte-range lock conflicts. Returns the file to read.
pub(super) fn read_source<'a>(conn: &Connection, open: &'a Open, offset: u64, length: u32) -> Result<&'a OwnedFd, NtStatus> {
    if open.access & (FILE_READ_DATA | FILE_EXECUTE) == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if !read_range_valid(offset, length) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    if let Some(k) = open.file_key {
        if conn.server.io_lock_conflict(k, open.volatile_id, offset, u64::from(length), false) {
            return Err(NtStatus::FILE_LOCK_CONFLICT);
        }
    }
    Ok(fd)
}

/// Fills `buf` from `offset` until it is full or the file ends; returns the
/// bytes read. Fewer than `minimum`, or none of a non-empty read, is
/// END_OF_FILE.
pub(super) fn read_at(open: &Open, fd: &OwnedFd, buf: &mut [u8], offset: u64, minimum: u32) -> Result<usize, NtStatus> {
    let mut got = 0usize;
    if let Some(s) = &open.stream {
        got = crate::vfs::streams::read_at(fd, &lock(&s.name), buf, offset)?;
    }
    while got < buf.len() && open.stream.is_none() {
        let off = offset.checked_add(got as u64).ok_or(NtStatus::INVALID_PARAMETER)?;
        match rustix::io::pread(fd, &mut buf[got..], off) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(NtStatus::from_errno(e)),
        }
    }
    if (got == 0 && !buf.is_empty()) || got < minimum as usize {
        return Err(NtStatus::END_OF_FILE);
    }
    Ok(got)
}

/// The checks every WRITE of `len` bytes makes before any data is touched
/// (inline, or pulled by RDMA): write or append access, a valid range, the
/// end of file for an append-only open, and byte-range lock conflicts.
/// Returns the offset to write at.
pub(super) fn write_target(conn: &Connection, open: &Open, req_offset: u64, len: usize) -> Result<u64, NtStatus> {
    let append_only = open.access & FILE_WRITE_DATA == 0;
    if open.access & (FILE_WRITE_DATA | FILE_APPEND_DATA) == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    if !write_range_valid(req_offset, len) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mut offset = req_offset;
    if append_only {
        offset = if open.stream.is_some() { open.stat()?.size } else { crate::vfs::stat_fd(fd)?.size };
        if !write_range_valid(offset, len) {
            return Err(NtStatus::DISK_FULL);
        }
    }
    if let Some(k) = open.file_key {
        if conn.server.io_lock_conflict(k, open.volatile_id, offset, len as u64, true) {
            return Err(NtStatus::FILE_LOCK_CONFLICT);
        }
    }
    super::oplock::break_level2(&conn.server, open);
    open.modified.store(true, std::sync::atomic::Ordering::Relaxed);
    Ok(offset)
}

/// The most written to a file by one pwrite. An 8 MiB WRITE written by one
/// 8 MiB pwrite sent about a third of smbclient puts on the lab's 2-vCPU VM
/// (ext4, kernel 6.x, memory shared with the host) into a slow mode where
/// the kernel's copy into the page cache (copy_folio_from_iter_atomic) alone
/// cost 2 to 3 CPU s/GiB, at half the speed; Samba, which also writes 8 MiB
/// at once, falls into it as often. Written in 1 MiB pieces, no put did
/// (bench/throughput.sh, 256 MiB, 5 interleaved runs, 2026-11-28: plain put
/// 0.60-0.80 CPU s/GiB against 0.84-4.16 in one pwrite, encrypted put
/// 1.28-1.64 against 1.32-4.12). The WRITE is still one request and answers
/// once, for all of its bytes.
const WRITE_PIECE: usize = 1 << 20;

/// Writes `data` at `offset` (checked by [`write_target`]), flushes it for a
/// write-through open or request, moves the file position and builds the
/// WRITE response body.
pub(super) fn write_at(open: &Open, offset: u64, data: &[u8], flags: u32, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    if let Some(s) = &open.stream {
        // Kept in an xattr: written whole, nothing to flush for write-through.
        crate::vfs::streams::write_at(fd, &lock(&s.name), offset, data)?;
        *lock(&open.position) = offset + data.len() as u64;
        out.u16(17).u16(0).u32(data.len() as u32).u32(0).u16(0).u16(0);
        return Ok(());
    }
    let mut done = 0usize;
    while done < data.len() {
        // At most WRITE_PIECE bytes per pwrite (see there).
        let end = data.len().min(done.saturating_add(WRITE_PIECE));
        match rustix::io::pwrite(fd, &data[done..end], offset + done as u64) {
            Ok(0) => return Err(NtStatus::DISK_FULL),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(NtStatus::from_errno(e)),
        }
    }
    if open.create_options & 0x2 != 0 || flags & 0x1 != 0 {
        rustix::fs::fdatasync(fd).map_err(NtStatus::from_errno)?;
    }
    *lock(&open.position) = offset + done as u64;
    out.u16(17).u16(0).u32(done as u32).u32(0).u16(0).u16(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ranges() {
        let max = i64::MAX as u64;
        assert!(read_range_valid(0, 10));
        assert!(read_range_valid(max - 1, 1));
        assert!(read_range_valid(max, 0));
        assert!(!read_range_valid(max, 1));
        assert!(!read_range_valid(max + 1, 0));
        assert!(!read_range_valid(u64::MAX, 0));
        assert!(!read_range_valid(u64::MAX - 2, 0));
    }

    #[test]
    fn write_ranges() {
        let max = i64::MAX as u64;
        assert!(write_range_valid(0, 65536));
        assert!(!write_range_valid(u64::MAX, 65536), "-1 is not 'append' in SMB2");
        assert!(!write_range_valid(1u64 << 63, 0));
        assert!(write_range_valid(max, 0));
        assert!(!write_range_valid(max, 1));
        assert!(!write_range_valid(MAX_FILE_SIZE, 1));
        assert!(write_range_valid(MAX_FILE_SIZE - 1, 1));
        assert!(write_range_valid(MAX_FILE_SIZE, 0));
    }
}

/// Sends a response; a failed send closes the connection.
pub(crate) fn send_or_close(sink: &dyn crate::transport::MessageSink, reply: crate::transport::OutBuf) {
    if let Err(e) = sink.send(reply) {
        tracing::debug!(peer = %sink.peer(), "response not sent: {e}");
        sink.shutdown();
    }
}
