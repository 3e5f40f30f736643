//! CREATE: open or create a file or directory (or a named pipe on IPC$),
//! with dispositions, share-mode checks and create contexts.

use super::*;
use crate::conn::{Connection, Ctx};
use crate::objects::{lock, DirCursor, FileEntry, Open, OpenKind};
use crate::vfs::{self, FileStat};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{parse_create_contexts, put_create_context, CreateReq, SecurityDescriptor};
use crate::wire::messages::{SECINFO_DACL, SECINFO_GROUP, SECINFO_OWNER, SECINFO_SACL, SE_DACL_PRESENT};
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
pub const OPT_CREATE_TREE_CONNECTION: u32 = 0x80;
pub const OPT_DELETE_ON_CLOSE: u32 = 0x1000;
pub const OPT_OPEN_BY_FILE_ID: u32 = 0x2000;
pub const OPT_RESERVE_OPFILTER: u32 = 0x0010_0000;
/// CreateOptions bits no NT file system defines.
pub const OPT_INVALID_MASK: u32 = 0xFF00_0000;

/// FileAttributes a CREATE may carry (MS-FSCC 2.6): everything defined but
/// DEVICE, VOLUME (the old label bit) and INTEGRITY_STREAM and higher.
pub const CREATE_VALID_ATTRS: u32 = 0x7FB7;

/// Access bits that name no right: reserved specific rights (bits 9-15),
/// reserved standard rights (bits 21-23) and bits 26-27.
pub const ACCESS_INVALID_MASK: u32 = 0x0CE0_FE00;

/// STATUS_BAD_IMPERSONATION_LEVEL (MS-ERREF 2.3.1).
pub const BAD_IMPERSONATION_LEVEL: NtStatus = NtStatus(0xC000_00A5);
/// SECURITY_DELEGATION, the highest ImpersonationLevel (MS-SMB2 2.2.13).
const IMPERSONATION_DELEGATE: u32 = 3;

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
    check_create_params(req.desired_access, req.options, req.file_attributes, req.impersonation)?;
    if req.disposition > FILE_OVERWRITE_IF {
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

    // Create contexts acted on before the open (MS-SMB2 3.3.5.9.x).
    let mut alloc_size: Option<u64> = None;
    let mut given_sd: Option<SecurityDescriptor> = None;
    for (cname, data) in &contexts {
        match *cname {
            b"SecD" => {
                let sd = SecurityDescriptor::parse(data).map_err(|_| NtStatus::INVALID_PARAMETER)?;
                // Setting a SACL needs SeSecurityPrivilege, which no user here holds.
                if sd_parts(&sd) & SECINFO_SACL != 0 {
                    return Err(NtStatus::PRIVILEGE_NOT_HELD);
                }
                given_sd = Some(sd);
            }
            // No previous versions (snapshots) exist to open.
            b"TWrp" => return Err(NtStatus::OBJECT_NAME_NOT_FOUND),
            b"AlSi" => {
                let b: [u8; 8] = (*data).try_into().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                alloc_size = Some(u64::from_le_bytes(b));
            }
            _ => {}
        }
    }

    if tree.share.is_ipc() {
        let pipe = crate::ipc::Pipe::open(&name, &conn.server)?;
        let id = conn.server.new_id();
        let open = Arc::new(Open::new(id, tree.id, tree.share.clone(), None, name, OpenKind::Pipe(Mutex::new(pipe)), map_generic(req.desired_access), req.share_access, req.options, None));
        lock(&session.opens).insert(id, open.clone());
        write_response(out, &open, &FileStat { attrs: vfs::ATTR_NORMAL, ..Default::default() }, ACTION_OPENED, &[]);
        return Ok(());
    }
    let root = tree.share.root.as_ref().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
    let rel = vfs::validate_name(&name)?;

    let mut desired = map_generic(req.desired_access);
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
    // This server cannot store encrypted (EFS) files; say so when asked to
    // make one, as a stand-alone Windows server does.
    let makes_new = match &existing {
        None => req.disposition != FILE_OPEN && req.disposition != FILE_OVERWRITE,
        Some(st) => !st.is_dir && matches!(req.disposition, FILE_SUPERSEDE | FILE_OVERWRITE | FILE_OVERWRITE_IF),
    };
    if makes_new && req.file_attributes & vfs::ATTR_ENCRYPTED != 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
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
            if req.options & OPT_DIRECTORY_FILE == 0 {
                reserve(&fd, alloc_size);
            }
            // A security descriptor given with the CREATE applies to the new
            // file; the parts it leaves out come from the default.
            if let Some(given) = &given_sd {
                let mut sd = derived_sd(&fd, tree.read_only)?;
                sd.merge(given, sd_parts(given));
                if let Err(e) = store_sd(&fd, &sd) {
                    let _ = root.remove(&rel, req.options & OPT_DIRECTORY_FILE != 0);
                    return Err(e);
                }
            }
            (fd, ACTION_CREATED)
        }
    };
    let _ = creates;
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
        reserve(&fd, alloc_size);
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

/// The checks MS-SMB2 3.3.5.9 and MS-FSA 2.1.5.1 make on a CREATE's fixed
/// fields before anything is looked up, in the order Windows makes them.
pub fn check_create_params(access: u32, options: u32, attrs: u32, impersonation: u32) -> Result<(), NtStatus> {
    if impersonation > IMPERSONATION_DELEGATE {
        return Err(BAD_IMPERSONATION_LEVEL);
    }
    // No access at all (SYNCHRONIZE alone grants nothing an SMB2 open can use).
    if access & ACCESS_INVALID_MASK != 0 || access & !SYNCHRONIZE == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if access & ACCESS_SYSTEM_SECURITY != 0 {
        return Err(NtStatus::PRIVILEGE_NOT_HELD);
    }
    if options & OPT_INVALID_MASK != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if options & OPT_DIRECTORY_FILE != 0 && options & OPT_NON_DIRECTORY_FILE != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if options & (OPT_CREATE_TREE_CONNECTION | OPT_RESERVE_OPFILTER | OPT_OPEN_BY_FILE_ID) != 0 {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    if attrs & !CREATE_VALID_ATTRS != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(())
}

/// Where a file's security descriptor is kept once a client has set one.
const XATTR_SD: &str = "user.smbdirect.sd";
/// The largest security descriptor kept (the Linux limit for one xattr value).
const MAX_SD: usize = 64 * 1024;

fn put_unix_sid(o: &mut Vec<u8>, kind: u32, id: u32) {
    // S-1-22-kind-id: Samba's "Unix user/group" SIDs (S-1-22-1 users, S-1-22-2 groups).
    o.u8(1).u8(2).put(&[0, 0, 0, 0, 0, 22]).u32(kind).u32(id);
}

/// The security descriptor a file has when no client has set one: owner and
/// group from its Unix owner, a DACL granting Everyone what the share allows.
pub fn derived_sd(fd: &rustix::fd::OwnedFd, read_only: bool) -> Result<SecurityDescriptor, NtStatus> {
    let st = rustix::fs::fstat(fd).map_err(NtStatus::from_errno)?;
    let (mut owner, mut group, mut dacl) = (Vec::new(), Vec::new(), Vec::new());
    put_unix_sid(&mut owner, 1, st.st_uid);
    put_unix_sid(&mut group, 2, st.st_gid);
    let mask = if read_only { READ_ONLY_ACCESS } else { FILE_ALL_ACCESS };
    // ACL header, then one ACCESS_ALLOWED ACE for Everyone (S-1-1-0).
    dacl.u8(2).u8(0).u16(8 + 20).u16(1).u16(0);
    dacl.u8(0).u8(0).u16(20).u32(mask).u8(1).u8(1).put(&[0, 0, 0, 0, 0, 1]).u32(0);
    Ok(SecurityDescriptor { control: 0x8000 | SE_DACL_PRESENT, owner: Some(owner), group: Some(group), sacl: None, dacl: Some(dacl) })
}

/// A file's security descriptor: the stored one, else the derived one.
pub fn file_sd(fd: &rustix::fd::OwnedFd, read_only: bool) -> Result<SecurityDescriptor, NtStatus> {
    let mut buf = vec![0u8; MAX_SD];
    match rustix::fs::fgetxattr(fd, XATTR_SD, &mut buf) {
        Ok(n) => match buf.get(..n).map(SecurityDescriptor::parse) {
            Some(Ok(sd)) => return Ok(sd),
            _ => debug!("stored security descriptor unreadable; using the derived one"),
        },
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::BADF) => {}
        Err(e) => return Err(NtStatus::from_errno(e)),
    }
    derived_sd(fd, read_only)
}

/// Keeps `sd` as the file's security descriptor.
pub fn store_sd(fd: &rustix::fd::OwnedFd, sd: &SecurityDescriptor) -> Result<(), NtStatus> {
    let bytes = sd.to_bytes(SECINFO_OWNER | SECINFO_GROUP | SECINFO_DACL | SECINFO_SACL);
    if bytes.len() > MAX_SD {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    match rustix::fs::fsetxattr(fd, XATTR_SD, &bytes, rustix::fs::XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTSUP) => Err(NtStatus::NOT_SUPPORTED),
        Err(e) => Err(NtStatus::from_errno(e)),
    }
}

/// The SECINFO_* parts a client's security descriptor carries.
pub fn sd_parts(sd: &SecurityDescriptor) -> u32 {
    let mut p = 0;
    if sd.owner.is_some() {
        p |= SECINFO_OWNER;
    }
    if sd.group.is_some() {
        p |= SECINFO_GROUP;
    }
    if sd.control & SE_DACL_PRESENT != 0 {
        p |= SECINFO_DACL;
    }
    if sd.control & 0x0010 != 0 {
        p |= SECINFO_SACL;
    }
    p
}

/// Applies an SMB2_CREATE_ALLOCATION_SIZE to a new or overwritten file:
/// blocks are reserved without changing the end of file. A file system that
/// cannot reserve simply keeps the smaller allocation (the size is a hint).
fn reserve(fd: &rustix::fd::OwnedFd, alloc_size: Option<u64>) {
    let Some(len) = alloc_size.filter(|l| *l > 0 && *l <= i64::MAX as u64) else { return };
    if let Err(e) = rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
        debug!("allocation size {len} not reserved: {e}");
    }
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

    #[test]
    fn create_params() {
        let ok = |a, o, f, i| check_create_params(a, o, f, i);
        assert_eq!(ok(MAXIMUM_ALLOWED, 0, vfs::ATTR_NORMAL, 2), Ok(()));
        assert_eq!(ok(MAXIMUM_ALLOWED, 0, 0, 0x1234_5678), Err(BAD_IMPERSONATION_LEVEL));
        assert_eq!(ok(0x0800_0000, 0, 0x8, 0), Err(NtStatus::ACCESS_DENIED), "access is checked before attributes");
        assert_eq!(ok(0, 0, 0, 0), Err(NtStatus::ACCESS_DENIED));
        assert_eq!(ok(SYNCHRONIZE, 0, 0, 0), Err(NtStatus::ACCESS_DENIED));
        assert_eq!(ok(SYNCHRONIZE | FILE_READ_ATTRIBUTES, 0, 0, 0), Ok(()));
        assert_eq!(ok(ACCESS_SYSTEM_SECURITY, 0, 0, 0), Err(NtStatus::PRIVILEGE_NOT_HELD));
        assert_eq!(ok(GENERIC_READ, 0xF000_0000, 0, 0), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(ok(GENERIC_READ, OPT_RESERVE_OPFILTER, 0, 0), Err(NtStatus::NOT_SUPPORTED));
        assert_eq!(ok(GENERIC_READ, 0x0020_0000 | 0x10 | 0x4, 0, 0), Ok(()));
        for bad in [0x8, 0x40, 0x8000, 0x10000, 0x8040] {
            assert_eq!(ok(GENERIC_READ, 0, bad, 0), Err(NtStatus::INVALID_PARAMETER), "{bad:#x}");
        }
        assert_eq!(ok(GENERIC_READ, 0, 0x3FB7, 0), Ok(()));
    }
}
