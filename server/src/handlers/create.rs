//! CREATE: open or create a file or directory (or a named pipe on IPC$),
//! with dispositions, share-mode checks and create contexts.

use super::*;
use crate::conn::{Connection, Ctx};
use crate::objects::{lock, DirCursor, FileEntry, Open, OpenKind};
use crate::vfs::{self, FileStat};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{parse_create_contexts, put_create_context, CreateReq};
use crate::wire::status::NtStatus;
use crate::wire::{utf16_to_string, Put};
use rustix::fs::OFlags;
use std::sync::{Arc, Mutex};
use tracing::debug;

pub const FILE_SUPERSEDE: u32 = 0;
pub const FILE_OPEN: u32 = 1;
pub const FILE_CREATE: u32 = 2;
pub const FILE_OPEN_IF: u32 = 3;
pub const FILE_OVERWRITE: u32 = 4;
pub const FILE_OVERWRITE_IF: u32 = 5;

pub const OPT_DIRECTORY_FILE: u32 = 0x1;
pub const OPT_NON_DIRECTORY_FILE: u32 = 0x40;
pub const OPT_DELETE_ON_CLOSE: u32 = 0x1000;
pub const OPT_OPEN_BY_FILE_ID: u32 = 0x2000;

const ACTION_SUPERSEDED: u32 = 0;
const ACTION_OPENED: u32 = 1;
const ACTION_CREATED: u32 = 2;
const ACTION_OVERWRITTEN: u32 = 3;

pub const SHARE_READ: u32 = 1;
pub const SHARE_WRITE: u32 = 2;
pub const SHARE_DELETE: u32 = 4;

/// MS-FSA 2.1.5.1.2.1: does a new open (access, share) conflict with an existing one?
pub fn share_conflict(existing: (u32, u32), new_access: u32, new_share: u32) -> bool {
    let (ea, es) = existing;
    let data = |a: u32| a & (FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_EXECUTE | DELETE) != 0;
    if !data(ea) && !data(new_access) {
        return false;
    }
    let reads = |a: u32| a & (FILE_READ_DATA | FILE_EXECUTE) != 0;
    let writes = |a: u32| a & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
    let deletes = |a: u32| a & DELETE != 0;
    (reads(new_access) && es & SHARE_READ == 0)
        || (writes(new_access) && es & SHARE_WRITE == 0)
        || (deletes(new_access) && es & SHARE_DELETE == 0)
        || (reads(ea) && new_share & SHARE_READ == 0)
        || (writes(ea) && new_share & SHARE_WRITE == 0)
        || (deletes(ea) && new_share & SHARE_DELETE == 0)
}

pub fn create(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = CreateReq::parse(ctx.msg).map_err(|e| {
        debug!("bad CREATE: {e}");
        NtStatus::INVALID_PARAMETER
    })?;
    let tree = ctx.tree()?.clone();
    let session = ctx.session()?.clone();
    let name = utf16_to_string(req.name).map_err(|_| NtStatus::OBJECT_NAME_INVALID)?;
    debug!(name = %name, disposition = req.disposition, options = format_args!("{:#x}", req.options), access = format_args!("{:#x}", req.desired_access), oplock = req.oplock_level, "CREATE");
    if req.disposition > FILE_OVERWRITE_IF || req.impersonation > 3 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.options & OPT_DIRECTORY_FILE != 0 && req.options & OPT_NON_DIRECTORY_FILE != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.oplock_level > 0x09 && req.oplock_level != 0xFF {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if lock(&session.opens).len() >= conn.server.cfg.max_opens_per_session {
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    let contexts = parse_create_contexts(req.contexts).map_err(|e| {
        debug!("bad create contexts: {e}");
        NtStatus::INVALID_PARAMETER
    })?;

    if tree.share.is_ipc() {
        let pipe = crate::ipc::Pipe::open(&name, &conn.server)?;
        let id = conn.server.new_id();
        let open = Arc::new(Open::new(id, tree.id, tree.share.clone(), None, name, OpenKind::Pipe(Mutex::new(pipe)), map_generic(req.desired_access), req.share_access, req.options, None));
        lock(&session.opens).insert(id, open.clone());
        write_response(out, &open, &FileStat { attrs: vfs::ATTR_NORMAL, ..Default::default() }, ACTION_OPENED, &[]);
        return Ok(());
    }
    let root = tree.share.root.as_ref().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
    if req.options & OPT_OPEN_BY_FILE_ID != 0 {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    let rel = root.resolve_case(&vfs::validate_name(&name)?);

    let mut desired = map_generic(req.desired_access);
    if desired & ACCESS_SYSTEM_SECURITY != 0 {
        return Err(NtStatus::PRIVILEGE_NOT_HELD);
    }
    let max_allowed = desired & MAXIMUM_ALLOWED != 0;
    desired &= !MAXIMUM_ALLOWED;
    if max_allowed {
        desired |= tree.maximal_access;
    }
    if req.options & OPT_DELETE_ON_CLOSE != 0 && desired & DELETE == 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let creates = req.disposition != FILE_OPEN;
    if tree.read_only {
        if max_allowed {
            desired &= READ_ONLY_ACCESS;
        }
        if desired & WRITE_ACCESS_BITS != 0 || req.options & OPT_DELETE_ON_CLOSE != 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
    }

    let existing = root.lookup(&rel)?;
    if let Some(st) = &existing {
        if lock(&conn.server.files).get(&(st.dev, st.ino)).is_some_and(|e| e.delete_pending) {
            return Err(NtStatus::DELETE_PENDING);
        }
        if st.is_dir && req.options & OPT_NON_DIRECTORY_FILE != 0 {
            return Err(NtStatus::FILE_IS_A_DIRECTORY);
        }
        if !st.is_dir && req.options & OPT_DIRECTORY_FILE != 0 {
            return Err(NtStatus::NOT_A_DIRECTORY);
        }
    }
    let (fd, action) = match (&existing, req.disposition) {
        (Some(_), FILE_CREATE) => return Err(NtStatus::OBJECT_NAME_COLLISION),
        (None, FILE_OPEN) | (None, FILE_OVERWRITE) => return Err(NtStatus::OBJECT_NAME_NOT_FOUND),
        (Some(st), d) if st.is_dir && matches!(d, FILE_SUPERSEDE | FILE_OVERWRITE | FILE_OVERWRITE_IF) => {
            return Err(NtStatus::INVALID_PARAMETER)
        }
        (Some(st), d) => {
            let overwrite = matches!(d, FILE_SUPERSEDE | FILE_OVERWRITE | FILE_OVERWRITE_IF);
            if overwrite && tree.read_only {
                return Err(NtStatus::ACCESS_DENIED);
            }
            let wants_write = overwrite || desired & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
            let flags = if st.is_dir {
                OFlags::RDONLY | OFlags::DIRECTORY
            } else if wants_write {
                OFlags::RDWR
            } else {
                OFlags::RDONLY
            };
            let fd = match root.open_beneath(&rel, flags) {
                Ok(fd) => fd,
                Err(NtStatus::ACCESS_DENIED) if !wants_write && desired & (FILE_READ_DATA | FILE_EXECUTE) == 0 => {
                    root.open_beneath(&rel, OFlags::PATH)?
                }
                Err(e) => return Err(e),
            };
            let action = match d {
                FILE_SUPERSEDE => ACTION_SUPERSEDED,
                FILE_OVERWRITE | FILE_OVERWRITE_IF => ACTION_OVERWRITTEN,
                _ => ACTION_OPENED,
            };
            (fd, action)
        }
        (None, _) => {
            if tree.read_only {
                return Err(NtStatus::ACCESS_DENIED);
            }
            if rel.is_empty() {
                return Err(NtStatus::OBJECT_NAME_COLLISION);
            }
            let fd = if req.options & OPT_DIRECTORY_FILE != 0 {
                root.mkdir(&rel)?;
                root.open_beneath(&rel, OFlags::RDONLY | OFlags::DIRECTORY)?
            } else {
                root.create_file(&rel)?
            };
            let attrs = req.file_attributes & vfs::SETTABLE_ATTRS;
            if attrs != 0 {
                let _ = vfs::set_dos_attrs(&fd, attrs | if req.options & OPT_DIRECTORY_FILE != 0 { 0 } else { vfs::ATTR_ARCHIVE });
            }
            (fd, ACTION_CREATED)
        }
    };
    let _ = creates;
    // EAs sent with a create that makes or replaces the file (ExtA, MS-SMB2 2.2.13.2.1).
    if action != ACTION_OPENED {
        if let Some((_, list)) = contexts.iter().find(|(n, _)| *n == b"ExtA") {
            for ea in vfs::parse_full_ea_list(list)? {
                vfs::set_ea(&fd, &ea)?;
            }
        }
    }
    let mut st = vfs::stat_fd(&fd)?;
    if req.options & OPT_DELETE_ON_CLOSE != 0 && st.attrs & vfs::ATTR_READONLY != 0 {
        return Err(NtStatus::CANNOT_DELETE);
    }
    let key = (st.dev, st.ino);
    let id = conn.server.new_id();
    {
        let mut files = lock(&conn.server.files);
        let entry = files.entry(key).or_insert_with(FileEntry::default);
        if entry.delete_pending {
            return Err(NtStatus::DELETE_PENDING);
        }
        if entry.opens.iter().any(|(_, a, s)| share_conflict((*a, *s), desired, req.share_access)) {
            if entry.opens.is_empty() {
                files.remove(&key);
            }
            return Err(NtStatus::SHARING_VIOLATION);
        }
        entry.opens.push((id, desired, req.share_access));
    }
    if matches!(action, ACTION_OVERWRITTEN | ACTION_SUPERSEDED) {
        let r = rustix::fs::ftruncate(&fd, 0).map_err(NtStatus::from_errno);
        if let Err(e) = r {
            release(conn, key, id);
            return Err(e);
        }
        let attrs = req.file_attributes & vfs::SETTABLE_ATTRS;
        let _ = vfs::set_dos_attrs(&fd, attrs | vfs::ATTR_ARCHIVE);
        st = vfs::stat_fd(&fd)?;
    }
    let kind = if st.is_dir { OpenKind::Dir(Mutex::new(DirCursor::default())) } else { OpenKind::File };
    let open = Arc::new(Open::new(id, tree.id, tree.share.clone(), Some(fd), rel.clone(), kind, desired, req.share_access, req.options, Some(key)));
    if req.options & OPT_DELETE_ON_CLOSE != 0 {
        *lock(&open.delete_on_close) = true;
    }
    lock(&session.opens).insert(id, open.clone());
    debug!(session = session.id, path = %rel, action, "create");

    // Create contexts we answer; unknown ones are ignored (MS-SMB2 3.3.5.9).
    let mut ctx_out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for (cname, _data) in &contexts {
        match *cname {
            b"MxAc" => {
                let mut d = Vec::new();
                d.u32(0).u32(tree.maximal_access);
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
    write_response(out, &open, &st, action, &ctx_out);
    Ok(())
}

fn release(conn: &Connection, key: (u64, u64), id: u64) {
    let mut files = lock(&conn.server.files);
    if let Some(e) = files.get_mut(&key) {
        e.opens.retain(|(k, _, _)| *k != id);
        if e.opens.is_empty() {
            files.remove(&key);
        }
    }
}

fn write_response(out: &mut Vec<u8>, open: &Open, st: &FileStat, action: u32, contexts: &[(&[u8], Vec<u8>)]) {
    let hdr_start = out.len() - HEADER_LEN;
    out.u16(89).u8(0).u8(0).u32(action);
    out.u64(st.btime).u64(st.atime).u64(st.mtime).u64(st.ctime).u64(st.alloc).u64(st.size).u32(st.attrs).u32(0);
    out.put(&open.file_id());
    let ctx_fields = out.len();
    out.u32(0).u32(0);
    if contexts.is_empty() {
        out.u8(0);
        return;
    }
    let rel = out.len() - hdr_start;
    out.zeros((8 - rel % 8) % 8);
    let first = out.len();
    let mut prev: Option<usize> = None;
    for (name, data) in contexts {
        if let Some(p) = prev {
            let rel = out.len() - first;
            out.zeros((8 - rel % 8) % 8);
            let next = (out.len() - p) as u32;
            out.set_u32(p, next);
        }
        prev = Some(put_create_context(out, first, name, data));
    }
    out.set_u32(ctx_fields, (first - hdr_start) as u32);
    out.set_u32(ctx_fields + 4, (out.len() - first) as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_modes() {
        // Reader sharing read blocks a writer, allows another reader.
        assert!(share_conflict((FILE_READ_DATA, SHARE_READ), FILE_WRITE_DATA, SHARE_READ | SHARE_WRITE));
        assert!(!share_conflict((FILE_READ_DATA, SHARE_READ), FILE_READ_DATA, SHARE_READ));
        // New open not sharing write conflicts with an existing writer.
        assert!(share_conflict((FILE_WRITE_DATA, 7), FILE_READ_DATA, SHARE_READ));
        // Attribute-only opens never conflict.
        assert!(!share_conflict((FILE_READ_ATTRIBUTES, 0), FILE_READ_ATTRIBUTES, 0));
        assert!(share_conflict((DELETE, SHARE_READ), FILE_READ_DATA, SHARE_READ));
    }
}
