//! Named streams over SMB2 (vfs/streams.rs keeps them in xattrs): CREATE of
//! `file:stream[:$DATA]`, FileStreamInformation, rename and delete of a
//! stream, and the rules that tie a file to its streams' opens, as Windows
//! (and smbtorture's smb2.streams) has them:
//! - each stream has share modes, locks and delete-on-close of its own;
//! - an open of the file for DELETE, or one that overwrites it, must pass
//!   the share mode of every open of its streams (MS-FSA 2.1.5.1.2; Samba's
//!   open_streams_for_delete does the same probe);
//! - a file whose delete is pending stays, with its name answering
//!   DELETE_PENDING, until the last open of its streams is closed;
//! - a file with open streams cannot be renamed (ACCESS_DENIED);
//! - an overwrite or supersede of the file removes all its streams.
//!
//! Oplocks and leases are per stream too (the stream's key in the store);
//! a stream open gets no durable handle (it is answered without one); a
//! rename of an open stream keeps the share-mode entry, oplock and lease of
//! that open under the old name's key.

use super::create::{release, stored_sd, write_response, ACTION_CREATED, ACTION_OPENED, ACTION_OVERWRITTEN, ACTION_SUPERSEDED};
use super::create::{FILE_CREATE, FILE_OPEN, FILE_OPEN_IF, FILE_OVERWRITE, FILE_SUPERSEDE, OPT_DELETE_ON_CLOSE, OPT_DIRECTORY_FILE, SHARE_DELETE, SHARE_READ, SHARE_WRITE};
use super::*;
use crate::objects::{lock, store_status, Open, OpenKind, OplockTarget, Server, Session, StreamOpen, Tree};
use crate::store::oplock::{LEVEL_BATCH, LEVEL_EXCLUSIVE, LEVEL_II};
use crate::store::{OpenError, ShareModeEntry};
use crate::vfs::streams::{self, stream_key};
use crate::vfs::{self, FileStat};
use crate::wire::messages::CreateReq;
use crate::wire::status::NtStatus;
use crate::wire::{utf16_len, Put};
use rustix::fd::OwnedFd;
use rustix::fs::OFlags;
use std::sync::{Arc, Mutex};
use tracing::debug;

/// What a CREATE of a named stream works with (handlers/create.rs has made
/// the checks every CREATE makes).
pub(super) struct StreamCreate<'a> {
    pub server: &'a Arc<Server>,
    pub session: &'a Arc<Session>,
    pub tree: &'a Arc<Tree>,
    pub req: &'a CreateReq<'a>,
    pub contexts: &'a [(&'a [u8], &'a [u8])],
    /// The file's path in the share (resolved ignoring case).
    pub rel: &'a str,
    pub stream: &'a str,
    /// The access asked for, generic rights mapped, MAXIMUM_ALLOWED taken
    /// as the share's maximal access.
    pub desired: u32,
    pub max_allowed: bool,
    /// The lease asked for (RqLs), if any.
    pub lease_req: Option<&'a crate::store::LeaseRequest>,
    /// Where OPLOCK_BREAK notifications of the open go.
    pub sink: &'a Arc<dyn crate::transport::MessageSink>,
    /// A try after waiting for a break.
    pub retry: bool,
}

/// CREATE of a named stream: the file is opened (or created, when the
/// disposition creates), then the stream after the disposition.
/// When another open's oplock on the stream must break first, `blocked`
/// says for which key and until when, and the result is PENDING (as for
/// any CREATE: handlers/create.rs waits and tries again).
pub(super) fn create_stream(c: &StreamCreate<'_>, out: &mut Vec<u8>, blocked: &mut Option<(crate::store::FileKey, u64)>) -> Result<(), NtStatus> {
    let req = c.req;
    let root = c.tree.share.root.as_ref().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
    if !root.has_streams() {
        // As a file system without streams (FAT) answers.
        return Err(NtStatus::OBJECT_NAME_INVALID);
    }
    // A stream is never a directory (MS-FSA 2.1.5.1).
    if req.options & OPT_DIRECTORY_FILE != 0 {
        return Err(NtStatus::NOT_A_DIRECTORY);
    }
    let creates = !matches!(req.disposition, FILE_OPEN | FILE_OVERWRITE);
    let mut attempts = 0;
    let (fd, base, made_file) = loop {
        attempts += 1;
        match root.lookup(c.rel)? {
            Some(st) => {
                if c.server.delete_pending((st.dev, st.ino)) {
                    return Err(NtStatus::DELETE_PENDING);
                }
                // Streams live in xattrs, which need no data access to the
                // file; a file the server may not read is opened as a path.
                let flags = if st.is_dir { OFlags::RDONLY | OFlags::DIRECTORY } else { OFlags::RDONLY };
                let fd = match root.open_beneath(c.rel, flags) {
                    Ok(fd) => fd,
                    Err(NtStatus::ACCESS_DENIED) => root.open_beneath(c.rel, OFlags::PATH)?,
                    Err(e) => return Err(e),
                };
                let st = vfs::stat_fd(&fd)?;
                break (fd, st, false);
            }
            None if !creates => return Err(NtStatus::OBJECT_NAME_NOT_FOUND),
            None => {
                if c.tree.read_only {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                let fd = match root.create_file(c.rel) {
                    Err(NtStatus::OBJECT_NAME_COLLISION) if attempts < 3 => continue,
                    r => r?,
                };
                let attrs = req.file_attributes & vfs::SETTABLE_ATTRS;
                if attrs != 0 {
                    let _ = vfs::set_dos_attrs(&fd, attrs | vfs::ATTR_ARCHIVE);
                }
                let st = vfs::stat_fd(&fd)?;
                break (fd, st, true);
            }
        }
    };
    let r = open_stream(c, fd, &base, made_file, out, blocked);
    if r.is_err() && made_file {
        // The file was made for this stream only.
        let _ = root.remove(c.rel, false);
    }
    r
}

fn open_stream(c: &StreamCreate<'_>, fd: OwnedFd, base: &FileStat, made_file: bool, out: &mut Vec<u8>, blocked: &mut Option<(crate::store::FileKey, u64)>) -> Result<(), NtStatus> {
    let (req, server) = (c.req, c.server);
    let base_key = (base.dev, base.ino);
    let mut desired = c.desired;
    // The file's security descriptor, if a client set one, covers its streams.
    if let Some(sd) = stored_sd(&fd)? {
        let granted = crate::security::max_allowed(&sd, &c.tree.token) & c.tree.maximal_access;
        if c.max_allowed {
            desired = (map_generic(req.desired_access) & !MAXIMUM_ALLOWED) | (desired & granted);
        }
        if desired & !granted != 0 || desired == 0 {
            debug!(path = %c.rel, "stream open denied by the file's DACL");
            return Err(NtStatus::ACCESS_DENIED);
        }
    }
    let found = streams::find(&fd, c.stream);
    // A lease key names one stream of one file (MS-SMB2 3.3.5.9.8).
    if let Some(lr) = c.lease_req {
        let here = stream_key(base_key, found.as_deref().unwrap_or(c.stream));
        if server.store.lease_file(&lr.id).map_err(store_status)?.is_some_and(|f| f != here.into()) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
    }
    let (name, action) = match (found, req.disposition) {
        (Some(_), FILE_CREATE) => return Err(NtStatus::OBJECT_NAME_COLLISION),
        (None, FILE_OPEN | FILE_OVERWRITE) => return Err(NtStatus::OBJECT_NAME_NOT_FOUND),
        (Some(n), FILE_OPEN | FILE_OPEN_IF) => (n, ACTION_OPENED),
        (Some(n), d) => {
            if c.tree.read_only {
                return Err(NtStatus::ACCESS_DENIED);
            }
            (n, if d == FILE_SUPERSEDE { ACTION_SUPERSEDED } else { ACTION_OVERWRITTEN })
        }
        (None, _) => {
            if c.tree.read_only {
                return Err(NtStatus::ACCESS_DENIED);
            }
            match streams::create(&fd, c.stream) {
                // Made by someone else meanwhile: opened (and cut) as it is.
                Ok(()) | Err(NtStatus::OBJECT_NAME_COLLISION) => {}
                Err(e) => return Err(e),
            }
            (c.stream.to_string(), ACTION_CREATED)
        }
    };
    let action = if made_file { ACTION_CREATED } else { action };
    if req.options & OPT_DELETE_ON_CLOSE != 0 && base.attrs & vfs::ATTR_READONLY != 0 {
        return Err(NtStatus::CANNOT_DELETE);
    }
    let key = stream_key(base_key, &name);
    let id = server.new_id();
    let entry = ShareModeEntry { open: server.open_id(id), access: desired, share_access: req.share_access, delete_on_close: req.options & OPT_DELETE_ON_CLOSE != 0 };
    // Oplocks other opens hold on the stream break first (MS-FSA 2.1.5.1.2).
    let level2 = c.tree.share.cfg.level2_oplocks;
    super::create::admit(server, key, entry, c.lease_req.map(|l| &l.id), c.retry, action, level2, blocked)?;
    if matches!(action, ACTION_OVERWRITTEN | ACTION_SUPERSEDED) {
        if let Err(e) = streams::set_size(&fd, &name, 0) {
            release(server, key, id);
            return Err(e);
        }
    }
    let mut open = Open::new(id, c.tree.id, c.tree.share.clone(), Some(fd), c.rel.to_string(), OpenKind::File, desired, req.share_access, req.options, Some(key));
    open.stream = Some(StreamOpen { name: Mutex::new(name), base_key });
    let open = Arc::new(open);
    if entry.delete_on_close {
        *lock(&open.delete_on_close) = true;
    }
    let st = open.stat().inspect_err(|_| release(server, key, id))?;
    // The oplock or lease asked for, as far as the stream's other opens allow.
    let mut lease_ctx = None;
    let granted = if let Some(lr) = c.lease_req {
        match super::lease::grant(server, key.into(), id, lr, &open) {
            Ok(Some(ctx)) => {
                lease_ctx = Some(ctx);
                super::lease::OPLOCK_LEVEL_LEASE
            }
            Ok(None) => 0,
            Err(e) => {
                release(server, key, id);
                return Err(e);
            }
        }
    } else if c.tree.share.cfg.oplocks && matches!(req.oplock_level, LEVEL_II | LEVEL_EXCLUSIVE | LEVEL_BATCH) {
        server.store.oplock_grant(key.into(), server.open_id(id), req.oplock_level, level2).unwrap_or_else(|e| {
            tracing::warn!("oplock not granted: {e}");
            0
        })
    } else {
        0
    };
    if granted != 0 {
        *lock(&open.oplock_level) = granted;
        let target = OplockTarget { open: Arc::downgrade(&open), session: Arc::downgrade(c.session), sink: c.sink.clone() };
        lock(&server.oplock_opens).insert(id, target);
    }
    lock(&c.session.opens).insert(id, open.clone());
    debug!(session = c.session.id, path = %c.rel, action, "create of a stream");
    let mut ctx_out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    if let Some(d) = lease_ctx {
        ctx_out.push((b"RqLs", d));
    }
    for (cname, _) in c.contexts {
        match *cname {
            b"MxAc" => {
                let mut d = Vec::new();
                d.u32(0).u32(c.tree.maximal_access);
                ctx_out.push((b"MxAc", d));
            }
            b"QFid" => {
                let mut d = Vec::new();
                d.u64(st.ino).u64(st.dev).zeros(16);
                ctx_out.push((b"QFid", d));
            }
            _ => {}
        }
    }
    write_response(out, &open, &st, action, granted, &ctx_out);
    Ok(())
}

/// Whether any stream of the file `key` (open as `fd`) is open.
pub fn streams_open(server: &Server, fd: &OwnedFd, key: (u64, u64)) -> bool {
    streams::list(fd).iter().any(|(n, _)| server.has_opens(stream_key(key, n)))
}

/// An open of the file for DELETE, or one that overwrites it, must be
/// allowed by the share modes of its streams' opens: each open stream is
/// probed with an open for DELETE sharing everything, taken back at once.
pub fn check_streams_allow_delete(server: &Server, fd: &OwnedFd, key: (u64, u64)) -> Result<(), NtStatus> {
    for (n, _) in streams::list(fd) {
        let skey = stream_key(key, &n);
        if !server.has_opens(skey) {
            continue;
        }
        let probe = ShareModeEntry { open: server.open_id(server.new_id()), access: DELETE, share_access: SHARE_READ | SHARE_WRITE | SHARE_DELETE, delete_on_close: false };
        match server.store.open_file(skey.into(), probe) {
            Ok(()) => {
                if let Err(e) = server.store.close_file(skey.into(), probe.open) {
                    tracing::warn!("stream share-mode probe not removed: {e}");
                }
            }
            Err(OpenError::SharingViolation) => return Err(NtStatus::SHARING_VIOLATION),
            // That stream goes anyway.
            Err(OpenError::DeletePending) => {}
            Err(OpenError::Store(e)) => return Err(store_status(e)),
        }
    }
    Ok(())
}

/// The last close of the file `key` whose delete is pending: with streams
/// still open the file stays (its record keeps the delete pending) and the
/// last of them removes it ([`finish_deferred_delete`]).
pub fn deferred_delete(server: &Server, open: &Open, key: (u64, u64)) -> bool {
    let deferred = open.fd.as_ref().is_some_and(|fd| streams_open(server, fd, key));
    if deferred {
        debug!(path = %lock(&open.path), "delete waits for the file's open streams");
    }
    deferred
}

/// A stream's delete-on-close: its xattr goes.
pub fn delete_stream(open: &Open, s: &StreamOpen) {
    let Some(fd) = &open.fd else { return };
    let name = lock(&s.name).clone();
    if let Err(e) = streams::remove(fd, &name) {
        tracing::info!("delete of stream {name:?} of {:?} failed: {e}", lock(&open.path));
    }
}

/// After a stream's close: the file it belongs to is removed when its
/// delete is pending and nothing of it is open any more.
pub fn finish_deferred_delete(server: &Server, open: &Open, base_key: (u64, u64)) {
    if !server.delete_pending(base_key) || server.has_opens(base_key) {
        return;
    }
    let (Some(fd), Some(root)) = (&open.fd, &open.share.root) else { return };
    if streams_open(server, fd, base_key) {
        return;
    }
    let path = lock(&open.path).clone();
    if let Ok(Some(st)) = root.lookup(&path) {
        if (st.dev, st.ino) == base_key {
            if let Err(e) = root.remove(&path, st.is_dir) {
                tracing::info!("delete-on-close of {path:?} failed: {e}");
            }
        }
    }
    if let Err(e) = server.store.deleted(base_key.into()) {
        tracing::warn!("record of a deleted file kept: {e}");
    }
}

/// FileStreamInformation (MS-FSCC 2.4.49): the unnamed data stream of a
/// file (a directory has none), then each named stream, as whole entries
/// that fit `limit` bytes; `true` when some did not.
pub fn stream_information(open: &Open, limit: usize) -> Result<(Vec<u8>, bool), NtStatus> {
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    let st = vfs::stat_fd(fd)?;
    let mut entries: Vec<(String, u64, u64)> = Vec::new();
    if !st.is_dir {
        entries.push(("::$DATA".to_string(), st.size, st.alloc));
    }
    if open.share.root.as_ref().is_some_and(|r| r.has_streams()) {
        for (n, size) in streams::list(fd) {
            entries.push((format!(":{n}:$DATA"), size, streams::alloc_size(size)));
        }
    }
    Ok(encode_stream_information(&entries, limit))
}

/// Encodes FILE_STREAM_INFORMATION entries (8-byte aligned), as many whole
/// ones as fit `limit`; `true` when some did not.
pub fn encode_stream_information(entries: &[(String, u64, u64)], limit: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut last: Option<usize> = None;
    for (i, (name, size, alloc)) in entries.iter().enumerate() {
        let start = out.len().next_multiple_of(8);
        if start + 24 + utf16_len(name) > limit {
            return (out, i < entries.len());
        }
        out.resize(start, 0);
        if let Some(l) = last {
            out.set_u32(l, (start - l) as u32);
        }
        last = Some(start);
        out.u32(0).u32(utf16_len(name) as u32).u64(*size).u64(*alloc).utf16(name);
    }
    (out, false)
}

/// FileRenameInformation on a stream's open: the new name is `:stream`
/// (or `::$DATA`, the file's unnamed stream, which must then be empty
/// unless replaced). Windows answers a path (`file:stream`) with
/// SHARING_VIOLATION (smbtorture smb2.streams.rename2).
pub fn rename_stream(server: &Server, open: &Open, s: &StreamOpen, target: &str, replace: bool) -> Result<(), NtStatus> {
    if !target.starts_with(':') {
        return Err(NtStatus::SHARING_VIOLATION);
    }
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    let old = lock(&s.name).clone();
    match streams::split_stream(&format!("x{target}"))?.1 {
        streams::StreamSpec::Named(new) => {
            if vfs::fold_case(&new) == vfs::fold_case(&old) {
                return Ok(());
            }
            if let Some(existing) = streams::find(fd, &new) {
                if !replace {
                    return Err(NtStatus::OBJECT_NAME_COLLISION);
                }
                if server.has_opens(stream_key(s.base_key, &existing)) {
                    return Err(NtStatus::SHARING_VIOLATION);
                }
                // MS-FSA 2.1.5.14.11.1: only an empty stream is replaced.
                if streams::size(fd, &existing)? != 0 {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
            }
            streams::rename(fd, &old, &new, replace)?;
            *lock(&s.name) = new;
            Ok(())
        }
        streams::StreamSpec::MainData => {
            let base = vfs::stat_fd(fd)?;
            if base.is_dir {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            if base.size != 0 && !replace {
                return Err(NtStatus::OBJECT_NAME_COLLISION);
            }
            if server.has_opens(s.base_key) {
                return Err(NtStatus::SHARING_VIOLATION);
            }
            let data = streams::read_all(fd, &old)?;
            let root = open.share.root.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
            let w = root.open_beneath(&lock(&open.path), OFlags::WRONLY)?;
            if (vfs::stat_fd(&w)?.dev, vfs::stat_fd(&w)?.ino) != s.base_key {
                return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
            }
            rustix::fs::ftruncate(&w, 0).map_err(NtStatus::from_errno)?;
            let mut done = 0;
            while done < data.len() {
                match rustix::io::pwrite(&w, &data[done..], done as u64) {
                    Ok(0) => return Err(NtStatus::DISK_FULL),
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(NtStatus::from_errno(e)),
                }
            }
            streams::remove(fd, &old)
        }
        _ => Err(NtStatus::INVALID_PARAMETER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_information_layout() {
        let e = vec![("::$DATA".to_string(), 10, 4096), (":Zone.Identifier:$DATA".to_string(), 26, 4096)];
        let (all, cut) = encode_stream_information(&e, 4096);
        assert!(!cut);
        // First entry: 24 fixed bytes + 14 of name, padded to 40.
        assert_eq!(crate::wire::u32_at(&all, 0), Some(40));
        assert_eq!(crate::wire::u32_at(&all, 4), Some(14));
        assert_eq!(crate::wire::u32_at(&all, 40), Some(0), "the last entry ends the list");
        assert_eq!(crate::wire::u32_at(&all, 44), Some(44));
        assert_eq!(all.len(), 40 + 24 + 44);
        // Whole entries only.
        let (first, cut) = encode_stream_information(&e, 100);
        assert!(cut);
        assert_eq!(first.len(), 38);
        assert_eq!(crate::wire::u32_at(&first, 0), Some(0));
        let (none, cut) = encode_stream_information(&e, 20);
        assert!(cut && none.is_empty());
        assert_eq!(encode_stream_information(&[], 100), (Vec::new(), false));
    }
}
