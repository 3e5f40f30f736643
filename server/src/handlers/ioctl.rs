//! IOCTL: the FSCTLs a file server answers (MS-SMB2 3.3.5.15, MS-FSCC 2.3,
//! MS-FSA 2.1.5.9): server-side copy, sparse files and allocated ranges,
//! zeroing, compression state, snapshots, negotiate validation, interfaces.

use super::{FILE_APPEND_DATA, FILE_EXECUTE, FILE_READ_DATA, FILE_WRITE_ATTRIBUTES, FILE_WRITE_DATA};
use crate::conn::{Connection, Ctx};
use crate::objects::{lock, Open, OpenKind};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{IoctlReq, IOCTL_IS_FSCTL};
use crate::wire::status::NtStatus;
use crate::wire::{Put, Reader};
use rustix::fs::{FallocateFlags, SeekFrom};
use std::sync::Arc;

pub const FSCTL_DFS_GET_REFERRALS: u32 = 0x0006_0194;
pub const FSCTL_DFS_GET_REFERRALS_EX: u32 = 0x0006_01B0;
pub const FSCTL_PIPE_TRANSCEIVE: u32 = 0x0011_C017;
pub const FSCTL_PIPE_WAIT: u32 = 0x0011_0018;
pub const FSCTL_QUERY_NETWORK_INTERFACE_INFO: u32 = 0x0014_01FC;
pub const FSCTL_VALIDATE_NEGOTIATE_INFO: u32 = 0x0014_0204;
pub const FSCTL_SRV_ENUMERATE_SNAPSHOTS: u32 = 0x0014_4064;
pub const FSCTL_SRV_REQUEST_RESUME_KEY: u32 = 0x0014_0078;
pub const FSCTL_SRV_COPYCHUNK: u32 = 0x0014_40F2;
pub const FSCTL_SRV_COPYCHUNK_WRITE: u32 = 0x0014_80F2;
pub const FSCTL_GET_COMPRESSION: u32 = 0x0009_003C;
pub const FSCTL_SET_COMPRESSION: u32 = 0x0009_C040;
pub const FSCTL_SET_SPARSE: u32 = 0x0009_00C4;
pub const FSCTL_SET_ZERO_DATA: u32 = 0x0009_80C8;
pub const FSCTL_QUERY_ALLOCATED_RANGES: u32 = 0x0009_40CF;
pub const FSCTL_GET_REPARSE_POINT: u32 = 0x0009_00A8;
pub const FSCTL_CREATE_OR_GET_OBJECT_ID: u32 = 0x0009_00C0;

/// Server-side copy limits (the values Windows Server uses, MS-SMB2 3.3.3).
pub const COPYCHUNK_MAX_CHUNKS: u32 = 256;
pub const COPYCHUNK_MAX_CHUNK_SIZE: u32 = 1024 * 1024;
pub const COPYCHUNK_MAX_DATA_SIZE: u32 = 16 * 1024 * 1024;
const COPYCHUNK_RESPONSE_LEN: usize = 12;

const COMPRESSION_FORMAT_NONE: u16 = 0;
const COMPRESSION_FORMAT_DEFAULT: u16 = 1;
const COMPRESSION_FORMAT_LZNT1: u16 = 2;

const MAX_FILE_OFFSET: u64 = i64::MAX as u64;

/// What an FSCTL handler produced: the output buffer, and the status when it
/// is not SUCCESS but still goes with a full IOCTL response (copychunk
/// progress, BUFFER_OVERFLOW).
struct Output {
    data: Vec<u8>,
    status: Option<NtStatus>,
}

impl From<Vec<u8>> for Output {
    fn from(data: Vec<u8>) -> Output {
        Output { data, status: None }
    }
}

pub fn ioctl(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = IoctlReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    tracing::debug!(ctl = format_args!("{:#x}", req.ctl_code), input = req.input.len(), max_out = req.max_output, "IOCTL");
    if req.flags != IOCTL_IS_FSCTL {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    // FSCTLs not directed at a file carry the all-ones FileId (MS-SMB2 3.3.5.15).
    if matches!(req.ctl_code, FSCTL_DFS_GET_REFERRALS | FSCTL_DFS_GET_REFERRALS_EX | FSCTL_QUERY_NETWORK_INTERFACE_INFO | FSCTL_VALIDATE_NEGOTIATE_INFO | FSCTL_PIPE_WAIT)
        && req.file_id != [0xFF; 16]
    {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let max_out = (req.max_output as usize).min(conn.server.cfg.max_transact_size as usize);
    let output: Output = match req.ctl_code {
        FSCTL_VALIDATE_NEGOTIATE_INFO => validate_negotiate(conn, req.input)?.into(),
        FSCTL_QUERY_NETWORK_INTERFACE_INFO => network_interfaces(conn)?.into(),
        FSCTL_PIPE_TRANSCEIVE => {
            let open = ctx.open(&req.file_id)?;
            let OpenKind::Pipe(p) = &open.kind else { return Err(NtStatus::INVALID_DEVICE_REQUEST) };
            let mut p = lock(p);
            p.write(req.input)?;
            p.read(max_out)?.into()
        }
        FSCTL_DFS_GET_REFERRALS | FSCTL_DFS_GET_REFERRALS_EX => return Err(NtStatus::FS_DRIVER_REQUIRED),
        FSCTL_PIPE_WAIT => pipe_wait(conn, ctx, req.input)?.into(),
        FSCTL_SRV_ENUMERATE_SNAPSHOTS => enumerate_snapshots(&*file_open(ctx, &req)?, max_out)?.into(),
        FSCTL_SRV_REQUEST_RESUME_KEY => request_resume_key(conn, ctx, &req, max_out)?.into(),
        FSCTL_SRV_COPYCHUNK | FSCTL_SRV_COPYCHUNK_WRITE => copychunk(conn, ctx, &req, max_out)?,
        FSCTL_GET_COMPRESSION => get_compression(&*file_open(ctx, &req)?, max_out)?.into(),
        FSCTL_CREATE_OR_GET_OBJECT_ID => object_id(&*file_open(ctx, &req)?)?.into(),
        FSCTL_SET_COMPRESSION => set_compression(&*file_open(ctx, &req)?, req.input)?.into(),
        FSCTL_SET_SPARSE => set_sparse(&*file_open(ctx, &req)?, req.input)?.into(),
        FSCTL_SET_ZERO_DATA => set_zero_data(conn, &*file_open(ctx, &req)?, req.input)?.into(),
        FSCTL_QUERY_ALLOCATED_RANGES => query_allocated_ranges(&*file_open(ctx, &req)?, req.input, max_out)?,
        FSCTL_GET_REPARSE_POINT => {
            let _ = file_open(ctx, &req)?;
            return Err(NtStatus::NOT_A_REPARSE_POINT);
        }
        _ => {
            // Windows answers FSCTLs it does not implement on a file with INVALID_DEVICE_REQUEST.
            let _ = ctx.open(&req.file_id)?;
            return Err(NtStatus::INVALID_DEVICE_REQUEST);
        }
    };
    if output.data.len() > max_out {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    if let Some(st) = output.status {
        ctx.warning = Some(st);
    }
    out.u16(49).u16(0).u32(req.ctl_code).put(&req.file_id);
    let data_off = (HEADER_LEN + 48) as u32;
    out.u32(data_off).u32(0).u32(data_off).u32(output.data.len() as u32).u32(0).u32(0);
    out.put(&output.data);
    Ok(())
}

/// FSCTL_PIPE_WAIT (MS-SMB2 3.3.5.15.10, MS-FSCC 2.3.49): our pipes have
/// no instance limit, so a pipe that exists is available at once.
fn pipe_wait(conn: &Connection, ctx: &Ctx<'_>, input: &[u8]) -> Result<Vec<u8>, NtStatus> {
    if !ctx.tree()?.share.is_ipc() {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    let mut r = Reader::new(input);
    let parse = (|| {
        r.skip(8)?; // Timeout
        let len = r.u32()? as usize;
        r.skip(2)?; // TimeoutSpecified, Padding
        r.bytes(len)
    })();
    let name = parse.map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let name = crate::wire::utf16_to_string(name).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    crate::ipc::Pipe::open(&name, &conn.server)?;
    Ok(Vec::new())
}

/// The open an FSCTL is directed at; pipes have no file system behind them.
fn file_open(ctx: &Ctx<'_>, req: &IoctlReq<'_>) -> Result<Arc<Open>, NtStatus> {
    let open = ctx.open(&req.file_id)?;
    if matches!(open.kind, OpenKind::Pipe(_)) || open.fd.is_none() {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    Ok(open)
}

fn fd_of(open: &Open) -> Result<&rustix::fd::OwnedFd, NtStatus> {
    open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)
}

/// FSCTL_SRV_ENUMERATE_SNAPSHOTS (MS-SMB2 3.3.5.15.1): we keep no previous
/// versions, so the array is empty.
fn enumerate_snapshots(_open: &Open, max_out: usize) -> Result<Vec<u8>, NtStatus> {
    if max_out < 16 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mut o = Vec::new();
    // NumberOfSnapShots, NumberOfSnapShotsReturned, SnapShotArraySize, and the
    // array's terminating empty string.
    o.u32(0).u32(0).u32(2).u16(0);
    Ok(o)
}

/// The 24-byte resume key of an open: session id, volatile id and a tag that
/// only the server can compute, so a key cannot be forged for someone else's open.
fn resume_key(secret: &[u8; 32], session_id: u64, volatile_id: u64) -> [u8; 24] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(secret);
    h.update(session_id.to_le_bytes());
    h.update(volatile_id.to_le_bytes());
    let tag = h.finalize();
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&session_id.to_le_bytes());
    k[8..16].copy_from_slice(&volatile_id.to_le_bytes());
    k[16..].copy_from_slice(&tag[..8]);
    k
}

/// FSCTL_SRV_REQUEST_RESUME_KEY (MS-SMB2 3.3.5.15.5).
fn request_resume_key(conn: &Connection, ctx: &Ctx<'_>, req: &IoctlReq<'_>, max_out: usize) -> Result<Vec<u8>, NtStatus> {
    let open = file_open(ctx, req)?;
    if max_out < 32 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let session = ctx.session()?;
    let key = resume_key(&conn.server.resume_secret, session.id, open.volatile_id);
    let mut o = Vec::with_capacity(32);
    o.put(&key).u32(0).u32(0);
    Ok(o)
}

/// Finds the open a resume key names, if the key is genuine and the open
/// still exists.
fn open_by_resume_key(conn: &Connection, key: &[u8]) -> Option<(Arc<crate::objects::Session>, Arc<Open>)> {
    let mut r = Reader::new(key);
    let sid = r.u64().ok()?;
    let vol = r.u64().ok()?;
    let expect = resume_key(&conn.server.resume_secret, sid, vol);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(&expect[..], key)) {
        return None;
    }
    let session = conn.server.session(sid)?;
    let open = session.open(vol)?;
    Some((session, open))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    source: u64,
    target: u64,
    length: u32,
}

/// SRV_COPYCHUNK_COPY (MS-SMB2 2.2.31.1): the key and the chunks that fit.
fn parse_copychunk(input: &[u8]) -> Option<([u8; 24], u32, Vec<Chunk>)> {
    let mut r = Reader::new(input);
    let key: [u8; 24] = r.bytes(24).ok()?.try_into().ok()?;
    let count = r.u32().ok()?;
    r.skip(4).ok()?;
    let mut chunks = Vec::new();
    for _ in 0..count.min(COPYCHUNK_MAX_CHUNKS) {
        let Ok(source) = r.u64() else { break };
        let Ok(target) = r.u64() else { break };
        let Ok(length) = r.u32() else { break };
        if r.skip(4).is_err() {
            break;
        }
        chunks.push(Chunk { source, target, length });
    }
    Some((key, count, chunks))
}

fn copychunk_response(chunks: u32, chunk_bytes: u32, total: u32) -> Vec<u8> {
    let mut o = Vec::with_capacity(COPYCHUNK_RESPONSE_LEN);
    o.u32(chunks).u32(chunk_bytes).u32(total);
    o
}

/// Whether a byte-range lock held through another open (or a shared lock
/// through this one, for writes) covers part of the range (MS-FSA 2.1.4.10).
fn lock_conflict(conn: &Connection, open: &Open, offset: u64, length: u64, write: bool) -> bool {
    open.file_key.is_some_and(|key| conn.server.io_lock_conflict(key, open.volatile_id, offset, length, write))
}

/// FSCTL_SRV_COPYCHUNK and FSCTL_SRV_COPYCHUNK_WRITE (MS-SMB2 3.3.5.15.6).
fn copychunk(conn: &Connection, ctx: &Ctx<'_>, req: &IoctlReq<'_>, max_out: usize) -> Result<Output, NtStatus> {
    let dest = file_open(ctx, req)?;
    let limits = || Output {
        data: copychunk_response(COPYCHUNK_MAX_CHUNKS, COPYCHUNK_MAX_CHUNK_SIZE, COPYCHUNK_MAX_DATA_SIZE),
        status: Some(NtStatus::INVALID_PARAMETER),
    };
    let Some((key, count, chunks)) = parse_copychunk(req.input) else {
        return if max_out < COPYCHUNK_RESPONSE_LEN { Err(NtStatus::INVALID_PARAMETER) } else { Ok(limits()) };
    };
    let (src_session, src) = open_by_resume_key(conn, &key).ok_or(NtStatus::OBJECT_NAME_NOT_FOUND)?;
    if max_out < COPYCHUNK_RESPONSE_LEN {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let total: u64 = chunks.iter().map(|c| u64::from(c.length)).sum();
    if count > COPYCHUNK_MAX_CHUNKS
        || chunks.len() != count as usize
        || chunks.iter().any(|c| c.length == 0 || c.length > COPYCHUNK_MAX_CHUNK_SIZE)
        || total > u64::from(COPYCHUNK_MAX_DATA_SIZE)
    {
        return Ok(limits());
    }
    // The source must belong to the same user as the destination.
    let me = ctx.session()?;
    if src_session.id != me.id {
        let same = match (lock(&src_session.identity).as_ref(), lock(&me.identity).as_ref()) {
            (Some(a), Some(b)) => a.user.eq_ignore_ascii_case(&b.user) && a.domain.eq_ignore_ascii_case(&b.domain) && a.kind == b.kind,
            _ => false,
        };
        if !same {
            return Err(NtStatus::ACCESS_DENIED);
        }
    }
    // The source is read as by SMB2 READ, which FILE_EXECUTE allows too.
    if src.access & (FILE_READ_DATA | FILE_EXECUTE) == 0 || dest.access & FILE_WRITE_DATA == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    // FSCTL_SRV_COPYCHUNK also needs FILE_READ_DATA on the target (MS-SMB2 3.3.5.15.6).
    if req.ctl_code == FSCTL_SRV_COPYCHUNK && dest.access & FILE_READ_DATA == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if src.is_dir() || dest.is_dir() || src.fd.is_none() {
        return Err(NtStatus::INVALID_DEVICE_REQUEST);
    }
    let src_fd = fd_of(&src)?;
    let dst_fd = fd_of(&dest)?;
    let mut written_chunks = 0u32;
    let mut written_total = 0u32;
    let mut buf = Vec::new();
    for c in &chunks {
        let partial = |st: NtStatus| Ok(Output { data: copychunk_response(written_chunks, 0, written_total), status: Some(st) });
        let src_size = src.stat()?.size;
        let len = u64::from(c.length);
        if c.source.checked_add(len).is_none_or(|end| end > src_size) {
            return partial(NtStatus::INVALID_VIEW_SIZE);
        }
        if c.target.checked_add(len).is_none_or(|end| end > MAX_FILE_OFFSET) {
            return partial(NtStatus::INVALID_PARAMETER);
        }
        if lock_conflict(conn, &src, c.source, len, false) || lock_conflict(conn, &dest, c.target, len, true) {
            return partial(NtStatus::FILE_LOCK_CONFLICT);
        }
        // Read the whole chunk before writing it, so overlapping ranges in
        // one file copy what was there before.
        buf.clear();
        buf.resize(c.length as usize, 0);
        let mut got = 0usize;
        if let Some(s) = &src.stream {
            // A named stream (vfs/streams.rs).
            got = crate::vfs::streams::read_at(src_fd, &lock(&s.name), &mut buf, c.source)?;
            if got < buf.len() {
                return partial(NtStatus::INVALID_VIEW_SIZE);
            }
        }
        while got < buf.len() {
            match rustix::io::pread(src_fd, &mut buf[got..], c.source + got as u64) {
                Ok(0) => return partial(NtStatus::INVALID_VIEW_SIZE),
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return partial(NtStatus::from_errno(e)),
            }
        }
        let mut put = 0usize;
        if let Some(s) = &dest.stream {
            if let Err(e) = crate::vfs::streams::write_at(dst_fd, &lock(&s.name), c.target, &buf) {
                return partial(e);
            }
            put = buf.len();
        }
        while put < buf.len() {
            match rustix::io::pwrite(dst_fd, &buf[put..], c.target + put as u64) {
                Ok(0) => return partial(NtStatus::DISK_FULL),
                Ok(n) => put += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return partial(NtStatus::from_errno(e)),
            }
        }
        written_chunks += 1;
        written_total += c.length;
    }
    Ok(copychunk_response(written_chunks, 0, written_total).into())
}

/// FSCTL_CREATE_OR_GET_OBJECT_ID (MS-FSCC 2.3.7, 2.1.3): a FILE_OBJECTID_BUFFER.
/// Linux file systems keep no object ids, so the id is the file's own
/// identity, its device and inode (as Samba does), stable for the file's life;
/// the birth ids repeat it (the volume's is the device), no domain id.
fn object_id(open: &Open) -> Result<Vec<u8>, NtStatus> {
    let (dev, ino) = match open.file_key {
        Some(k) => k,
        None => {
            let st = open.stat()?;
            (st.dev, st.ino)
        }
    };
    let mut o = Vec::with_capacity(64);
    o.u64(dev).u64(ino); // ObjectId
    o.u64(dev).u64(0); // BirthVolumeId
    o.u64(dev).u64(ino); // BirthObjectId
    o.zeros(16); // DomainId
    Ok(o)
}

/// FSCTL_GET_COMPRESSION (MS-FSA 2.1.5.9.7): the file system compresses nothing.
fn get_compression(_open: &Open, max_out: usize) -> Result<Vec<u8>, NtStatus> {
    if max_out < 2 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mut o = Vec::new();
    o.u16(COMPRESSION_FORMAT_NONE);
    Ok(o)
}

/// FSCTL_SET_COMPRESSION (MS-FSA 2.1.5.9.35): only "no compression" can be set.
fn set_compression(open: &Open, input: &[u8]) -> Result<Vec<u8>, NtStatus> {
    let mut r = Reader::new(input);
    let format = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
    if !matches!(format, COMPRESSION_FORMAT_NONE | COMPRESSION_FORMAT_DEFAULT | COMPRESSION_FORMAT_LZNT1) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    // Windows needs write access to the data (smbtorture compress_perms).
    if open.access & FILE_WRITE_DATA == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if format != COMPRESSION_FORMAT_NONE {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    Ok(Vec::new())
}

/// FSCTL_SET_SPARSE (MS-FSA 2.1.5.9.36). Clearing the flag allocates the
/// holes again, as NTFS does.
fn set_sparse(open: &Open, input: &[u8]) -> Result<Vec<u8>, NtStatus> {
    if open.is_dir() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if open.access & (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_WRITE_ATTRIBUTES) == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    // No FILE_SET_SPARSE_BUFFER means "set".
    let sparse = input.first().is_none_or(|b| *b != 0);
    let fd = fd_of(open)?;
    let was = crate::vfs::stat_fd(fd)?;
    if !sparse && was.attrs & crate::vfs::ATTR_SPARSE != 0 && was.size > 0 {
        match rustix::fs::fallocate(fd, FallocateFlags::KEEP_SIZE, 0, was.size) {
            Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(NtStatus::from_errno(e)),
        }
    }
    crate::vfs::set_sparse(fd, sparse)?;
    Ok(Vec::new())
}

/// FILE_ZERO_DATA_INFORMATION or FILE_ALLOCATED_RANGE_BUFFER: two LONGLONGs.
fn two_offsets(input: &[u8]) -> Result<(u64, u64), NtStatus> {
    let mut r = Reader::new(input);
    let a = r.u64().map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let b = r.u64().map_err(|_| NtStatus::INVALID_PARAMETER)?;
    Ok((a, b))
}

/// FSCTL_SET_ZERO_DATA (MS-FSA 2.1.5.9.38): zeroes [FileOffset,
/// BeyondFinalZero) inside the file; a sparse file gets a hole.
fn set_zero_data(conn: &Connection, open: &Open, input: &[u8]) -> Result<Vec<u8>, NtStatus> {
    let (offset, beyond) = two_offsets(input)?;
    if open.is_dir() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if offset > MAX_FILE_OFFSET || beyond > MAX_FILE_OFFSET || offset > beyond {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if open.access & FILE_WRITE_DATA == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    let fd = fd_of(open)?;
    let st = crate::vfs::stat_fd(fd)?;
    let end = beyond.min(st.size);
    if offset >= end {
        return Ok(Vec::new());
    }
    let len = end - offset;
    if lock_conflict(conn, open, offset, len, true) {
        return Err(NtStatus::FILE_LOCK_CONFLICT);
    }
    let sparse = st.attrs & crate::vfs::ATTR_SPARSE != 0;
    let mode = if sparse { FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE } else { FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE };
    match rustix::fs::fallocate(fd, mode, offset, len) {
        Ok(()) => Ok(Vec::new()),
        Err(rustix::io::Errno::OPNOTSUPP) => {
            write_zeros(fd, offset, len)?;
            Ok(Vec::new())
        }
        Err(e) => Err(NtStatus::from_errno(e)),
    }
}

fn write_zeros(fd: &rustix::fd::OwnedFd, offset: u64, len: u64) -> Result<(), NtStatus> {
    let zeros = vec![0u8; 64 * 1024];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        match rustix::io::pwrite(fd, &zeros[..n], offset + done) {
            Ok(0) => return Err(NtStatus::DISK_FULL),
            Ok(w) => done += w as u64,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(NtStatus::from_errno(e)),
        }
    }
    Ok(())
}

/// The data ranges of a file inside [start, end), from SEEK_DATA/SEEK_HOLE;
/// at most `limit` of them.
fn data_ranges(fd: &rustix::fd::OwnedFd, start: u64, end: u64, limit: usize) -> Result<Vec<(u64, u64)>, NtStatus> {
    let mut ranges = Vec::new();
    let mut pos = start;
    while pos < end && ranges.len() < limit {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(NtStatus::from_errno(e)),
        };
        if data >= end {
            break;
        }
        let hole = match rustix::fs::seek(fd, SeekFrom::Hole(data)) {
            Ok(h) => h.min(end),
            Err(rustix::io::Errno::NXIO) => end,
            Err(e) => return Err(NtStatus::from_errno(e)),
        };
        if hole <= data {
            break;
        }
        ranges.push((data, hole - data));
        pos = hole;
    }
    Ok(ranges)
}

/// FSCTL_QUERY_ALLOCATED_RANGES (MS-FSA 2.1.5.9.22).
fn query_allocated_ranges(open: &Open, input: &[u8], max_out: usize) -> Result<Output, NtStatus> {
    let (offset, length) = two_offsets(input)?;
    if offset > MAX_FILE_OFFSET || length > MAX_FILE_OFFSET || offset.checked_add(length).is_none_or(|e| e > MAX_FILE_OFFSET) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if open.is_dir() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if open.access & FILE_READ_DATA == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    let fd = fd_of(open)?;
    let st = crate::vfs::stat_fd(fd)?;
    let end = (offset + length).min(st.size);
    let fit = max_out / 16;
    // One range more than fits tells whether the answer overflows.
    let ranges = if offset >= end {
        Vec::new()
    } else if st.attrs & crate::vfs::ATTR_SPARSE == 0 {
        vec![(offset, end - offset)]
    } else {
        data_ranges(fd, offset, end, fit.saturating_add(1))?
    };
    if !ranges.is_empty() && fit == 0 {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    let mut o = Vec::new();
    for (off, len) in ranges.iter().take(fit) {
        o.u64(*off).u64(*len);
    }
    let status = (ranges.len() > fit).then_some(NtStatus::BUFFER_OVERFLOW);
    Ok(Output { data: o, status })
}
/// FSCTL_VALIDATE_NEGOTIATE_INFO (MS-SMB2 3.3.5.15.12): a mismatch means a
/// downgrade attack; the connection is dropped.
fn validate_negotiate(conn: &mut Connection, input: &[u8]) -> Result<Vec<u8>, NtStatus> {
    let mut r = Reader::new(input);
    let parse = (|| {
        let caps = r.u32()?;
        let guid = r.guid()?;
        let mode = r.u16()?;
        let n = r.u16()?;
        let mut d = Vec::new();
        for _ in 0..n {
            d.push(r.u16()?);
        }
        Ok::<_, crate::wire::WireError>((caps, guid, mode, d))
    })();
    let (caps, guid, mode, dialects) = parse.map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let cfg = &conn.server.cfg;
    let expect = [0x0311u16, 0x0302, 0x0300, 0x0210, 0x0202].into_iter().find(|d| dialects.contains(d) && cfg.dialect_allowed(*d));
    if caps != conn.client_caps || guid != conn.client_guid || mode != conn.client_security_mode || expect != conn.dialect {
        tracing::warn!(peer = %conn.peer, "VALIDATE_NEGOTIATE_INFO mismatch: dropping the connection");
        conn.sink.shutdown();
        return Err(NtStatus::ACCESS_DENIED);
    }
    let mut o = Vec::new();
    let mut sec = crate::negotiate::SEC_SIGNING_ENABLED;
    if conn.signing_required_by_server() {
        sec |= crate::negotiate::SEC_SIGNING_REQUIRED;
    }
    o.u32(conn.server_caps).put(&conn.server.server_guid).u16(sec).u16(conn.dialect.unwrap_or(0));
    Ok(o)
}

/// FSCTL_QUERY_NETWORK_INTERFACE_INFO (MS-SMB2 3.3.5.15.11): the host's
/// interfaces that smb.conf `interfaces` selects, one NETWORK_INTERFACE_INFO
/// entry (2.2.32.5) per address, IPv4 and IPv6, with the link speed and
/// RSS_CAPABLE / RDMA_CAPABLE. Without multichannel (`server multi channel
/// support = no`, or a 2.x connection) there is nothing to list: NOT_SUPPORTED.
fn network_interfaces(conn: &Connection) -> Result<Vec<u8>, NtStatus> {
    if !conn.server.cfg.multi_channel || !conn.is_smb3() {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    let mut list = crate::netif::interfaces(&conn.server.cfg.interfaces);
    // Loopback only when nothing else is there (a client on another host
    // cannot reach it).
    if list.iter().any(|i| !i.loopback) {
        list.retain(|i| !i.loopback);
    }
    // RDMA_CAPABLE on exactly the interfaces with an RDMA device bound, and
    // only while SMB Direct is served (the rdma-proxy is up): otherwise a
    // client would try RDMA where nothing listens.
    let rdma_up = crate::rdma::SERVICE_UP.load(std::sync::atomic::Ordering::SeqCst) || conn.sink.is_rdma();
    let mut o = Vec::new();
    let n = list.len();
    for (i, ifa) in list.iter().enumerate() {
        let next = if i + 1 < n { 152 } else { 0 };
        let mut caps = 0u32;
        if ifa.rss_capable {
            caps |= 0x1;
        }
        if rdma_up && ifa.rdma_capable {
            caps |= 0x2;
        }
        o.u32(next).u32(ifa.index).u32(caps).u32(0).u64(ifa.speed_bps);
        let mut sa = Vec::with_capacity(128);
        match ifa.addr {
            std::net::IpAddr::V4(a) => {
                sa.u16(0x0002).u16(0).put(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                sa.u16(0x0017).u16(0).u32(0).put(&a.octets()).u32(ifa.scope_id);
            }
        }
        sa.resize(128, 0);
        o.put(&sa);
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_request(key: &[u8; 24], count: u32, chunks: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut v = Vec::new();
        v.put(key).u32(count).u32(0);
        for (s, t, l) in chunks {
            v.u64(*s).u64(*t).u32(*l).u32(0);
        }
        v
    }

    #[test]
    fn copychunk_request_parses() {
        let key = [7u8; 24];
        let req = copy_request(&key, 2, &[(0, 4096, 100), (100, 0, 50)]);
        let (k, count, chunks) = parse_copychunk(&req).expect("parses");
        assert_eq!(k, key);
        assert_eq!(count, 2);
        assert_eq!(chunks, vec![Chunk { source: 0, target: 4096, length: 100 }, Chunk { source: 100, target: 0, length: 50 }]);
    }

    #[test]
    fn copychunk_request_short_or_lying() {
        assert!(parse_copychunk(&[0u8; 31]).is_none());
        // ChunkCount says 3 but only one chunk follows: the caller sees the mismatch.
        let req = copy_request(&[1; 24], 3, &[(0, 0, 1)]);
        let (_, count, chunks) = parse_copychunk(&req).expect("header parses");
        assert_eq!(count, 3);
        assert_eq!(chunks.len(), 1);
        // A huge ChunkCount does not make the parser allocate or loop for it.
        let req = copy_request(&[1; 24], u32::MAX, &[]);
        let (_, count, chunks) = parse_copychunk(&req).expect("header parses");
        assert_eq!(count, u32::MAX);
        assert!(chunks.is_empty());
    }

    #[test]
    fn resume_keys_are_bound_to_secret_and_open() {
        let a = resume_key(&[1; 32], 5, 9);
        assert_eq!(a, resume_key(&[1; 32], 5, 9));
        assert_eq!(&a[..8], &5u64.to_le_bytes());
        assert_eq!(&a[8..16], &9u64.to_le_bytes());
        assert_ne!(a, resume_key(&[2; 32], 5, 9));
        assert_ne!(a[16..], resume_key(&[1; 32], 5, 10)[16..]);
    }

    #[test]
    fn offsets_pair_needs_sixteen_bytes() {
        assert_eq!(two_offsets(&[0u8; 15]), Err(NtStatus::INVALID_PARAMETER));
        let mut v = Vec::new();
        v.u64(4096).u64(8192).u64(1);
        assert_eq!(two_offsets(&v), Ok((4096, 8192)));
    }

    #[test]
    fn data_ranges_follow_holes() {
        let dir = std::env::temp_dir().join(format!("smbdirect-qar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("sparse");
        let f = std::fs::File::create(&path).expect("file");
        let fd: rustix::fd::OwnedFd = f.into();
        let mib = 1024 * 1024u64;
        rustix::io::pwrite(&fd, &[1u8; 4096], mib).expect("write");
        rustix::io::pwrite(&fd, &[2u8; 4096], 3 * mib).expect("write");
        let all = data_ranges(&fd, 0, 3 * mib + 4096, 10).expect("ranges");
        // File systems without hole tracking report everything as data.
        if all.len() != 1 {
            assert_eq!(all.len(), 2, "{all:?}");
            assert!(all[0].0 <= mib && all[0].0 + all[0].1 >= mib + 4096, "{all:?}");
            assert!(all[1].0 <= 3 * mib && all[1].0 + all[1].1 == 3 * mib + 4096, "{all:?}");
            assert_eq!(data_ranges(&fd, 0, 3 * mib + 4096, 1).expect("ranges").len(), 1);
            assert!(data_ranges(&fd, 0, mib / 2, 10).expect("ranges").is_empty());
        }
        drop(fd);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn copychunk_response_layout() {
        assert_eq!(copychunk_response(1, 2, 3), [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    }
}
