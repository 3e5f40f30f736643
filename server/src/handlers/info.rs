//! QUERY_INFO and SET_INFO: file, file-system and security information (MS-FSCC 2.4, 2.5).

use super::*;
use crate::conn::{Connection, Ctx};
use crate::objects::{lock, Open, OpenKind};
use crate::vfs::{self, FileStat};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{QueryInfoReq, SetInfoReq, INFO_FILE, INFO_FILESYSTEM, INFO_QUOTA, INFO_SECURITY};
use crate::wire::status::NtStatus;
use crate::wire::{utf16_len, utf16_to_string, Put, Reader};

// File information classes.
const BASIC: u8 = 4;
const STANDARD: u8 = 5;
const INTERNAL: u8 = 6;
const EA: u8 = 7;
const ACCESS: u8 = 8;
const NAME: u8 = 9;
const RENAME: u8 = 10;
const DISPOSITION: u8 = 13;
const POSITION: u8 = 14;
const FULL_EA: u8 = 15;
const MODE: u8 = 16;
const ALIGNMENT: u8 = 17;
const ALL: u8 = 18;
const ALLOCATION: u8 = 19;
const END_OF_FILE: u8 = 20;
const ALTERNATE_NAME: u8 = 21;
const STREAM: u8 = 22;
const COMPRESSION: u8 = 28;
const NETWORK_OPEN: u8 = 34;
const ATTRIBUTE_TAG: u8 = 35;
const NORMALIZED_NAME: u8 = 48;
const DISPOSITION_EX: u8 = 64;

// File-system information classes.
const FS_VOLUME: u8 = 1;
const FS_SIZE: u8 = 3;
const FS_DEVICE: u8 = 4;
const FS_ATTRIBUTE: u8 = 5;
const FS_CONTROL: u8 = 6;
const FS_FULL_SIZE: u8 = 7;
const FS_OBJECT_ID: u8 = 8;
const FS_SECTOR_SIZE: u8 = 11;

/// The smallest output buffer a class accepts: the size of its structure with
/// one character of any variable-length name, rounded up to 8 as Windows
/// does (MS-FSA 2.1.5.11 and 2.1.5.12; smaller buffers fail with
/// STATUS_INFO_LENGTH_MISMATCH). `None` for classes without such a floor.
fn min_output(info_type: u8, class: u8) -> Option<usize> {
    let n = match (info_type, class) {
        (INFO_FILE, BASIC) => 40,
        (INFO_FILE, STANDARD) => 24,
        (INFO_FILE, INTERNAL | POSITION) => 8,
        (INFO_FILE, EA | ACCESS | MODE | ALIGNMENT) => 4,
        (INFO_FILE, ALL) => 104,
        (INFO_FILE, NAME | ALTERNATE_NAME | NORMALIZED_NAME) => 8,
        (INFO_FILE, STREAM) => 32,
        (INFO_FILE, COMPRESSION) => 16,
        (INFO_FILE, NETWORK_OPEN) => 56,
        (INFO_FILE, ATTRIBUTE_TAG) => 8,
        (INFO_FILESYSTEM, FS_VOLUME | FS_SIZE) => 24,
        (INFO_FILESYSTEM, FS_DEVICE) => 8,
        (INFO_FILESYSTEM, FS_ATTRIBUTE) => 16,
        (INFO_FILESYSTEM, FS_CONTROL) => 48,
        (INFO_FILESYSTEM, FS_FULL_SIZE) => 32,
        (INFO_FILESYSTEM, FS_OBJECT_ID) => 64,
        (INFO_FILESYSTEM, FS_SECTOR_SIZE) => 28,
        _ => return None,
    };
    Some(n)
}

/// Where a class with a variable-length name keeps that name's byte length
/// (the name follows right after it); a truncated answer says how much of
/// the name it carries.
fn name_length_field(info_type: u8, class: u8) -> Option<usize> {
    match (info_type, class) {
        (INFO_FILE, NAME | ALTERNATE_NAME | NORMALIZED_NAME) => Some(0),
        (INFO_FILE, ALL) => Some(96),
        (INFO_FILESYSTEM, FS_VOLUME) => Some(12),
        (INFO_FILESYSTEM, FS_ATTRIBUTE) => Some(8),
        _ => None,
    }
}

/// Fits an answer into the client's OutputBufferLength (MS-SMB2 3.3.5.20.1):
/// below the class's minimum is STATUS_INFO_LENGTH_MISMATCH; a variable-length
/// answer that does not fit is cut and reported as STATUS_BUFFER_OVERFLOW
/// (`Ok(true)`).
fn fit_output(info_type: u8, class: u8, data: &mut Vec<u8>, limit: usize) -> Result<bool, NtStatus> {
    // Classes without a listed floor are fixed-size: the whole answer is the floor.
    let min = min_output(info_type, class).unwrap_or(data.len());
    if limit < min {
        return Err(NtStatus::INFO_LENGTH_MISMATCH);
    }
    if data.len() <= limit {
        return Ok(false);
    }
    data.truncate(limit);
    if let Some(at) = name_length_field(info_type, class) {
        let carried = limit.saturating_sub(at + 4) as u32;
        if let Some(len) = crate::wire::u32_at(data, at) {
            data.set_u32(at, len.min(carried));
        }
    }
    Ok(true)
}

fn put_basic(o: &mut Vec<u8>, s: &FileStat) {
    o.u64(s.btime).u64(s.atime).u64(s.mtime).u64(s.ctime).u32(s.attrs).u32(0);
}

fn put_standard(o: &mut Vec<u8>, s: &FileStat, delete_pending: bool) {
    // A link that is about to be deleted no longer counts (MS-FSA 2.1.5.11.27).
    let nlink = if delete_pending { s.nlink.saturating_sub(1) } else { s.nlink };
    o.u64(s.alloc).u64(s.size).u32(nlink).u8(u8::from(delete_pending)).u8(u8::from(s.is_dir)).u16(0);
}

fn smb_name(open: &Open) -> String {
    let mut n = format!("\\{}", lock(&open.path).replace('/', "\\"));
    if let Some(s) = &open.stream {
        n.push(':');
        n.push_str(&lock(&s.name));
    }
    n
}

fn delete_pending(conn: &Connection, open: &Open) -> bool {
    open.file_key.is_some_and(|k| conn.server.delete_pending(k)) || *lock(&open.delete_on_close)
}

fn file_info(conn: &Connection, open: &Open, class: u8, o: &mut Vec<u8>) -> Result<(), NtStatus> {
    if let OpenKind::Pipe(_) = open.kind {
        return match class {
            STANDARD => {
                o.u64(4096).u64(0).u32(1).u8(1).u8(0).u16(0);
                Ok(())
            }
            _ => Err(NtStatus::INVALID_PARAMETER),
        };
    }
    let s = open.stat()?;
    match class {
        BASIC => put_basic(o, &s),
        STANDARD => put_standard(o, &s, delete_pending(conn, open)),
        INTERNAL => {
            o.u64(s.ino);
        }
        EA => {
            o.u32(s.ea_size);
        }
        ACCESS => {
            o.u32(open.access);
        }
        POSITION => {
            o.u64(*lock(&open.position));
        }
        MODE => {
            o.u32(open.mode);
        }
        ALIGNMENT => {
            o.u32(0);
        }
        NAME | NORMALIZED_NAME => {
            // Only SMB 3.1.1 offers normalized names (MS-SMB2 3.3.5.20.1;
            // smbtorture getinfo.normalized).
            if class == NORMALIZED_NAME && conn.dialect_or_202() < 0x0311 {
                return Err(NtStatus::NOT_SUPPORTED);
            }
            let n = if class == NAME { smb_name(open) } else { smb_name(open)[1..].to_string() };
            o.u32(utf16_len(&n) as u32).utf16(&n);
        }
        ALL => {
            put_basic(o, &s);
            put_standard(o, &s, delete_pending(conn, open));
            o.u64(s.ino).u32(s.ea_size).u32(open.access).u64(*lock(&open.position)).u32(open.mode).u32(0);
            let n = smb_name(open);
            o.u32(utf16_len(&n) as u32).utf16(&n);
        }
        COMPRESSION => {
            o.u64(s.size).u16(0).u8(0).u8(0).u8(0).zeros(3);
        }
        NETWORK_OPEN => {
            o.u64(s.btime).u64(s.atime).u64(s.mtime).u64(s.ctime).u64(s.alloc).u64(s.size).u32(s.attrs).u32(0);
        }
        ATTRIBUTE_TAG => {
            o.u32(s.attrs).u32(0);
        }
        ALTERNATE_NAME => {
            // The 8.3 name of the last component; the share root has none.
            let path = lock(&open.path).clone();
            let leaf = path.rsplit('/').next().unwrap_or_default();
            if leaf.is_empty() {
                return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
            }
            let n = vfs::short_name(leaf);
            o.u32(utf16_len(&n) as u32).utf16(&n);
        }
        _ => return Err(NtStatus::INVALID_INFO_CLASS),
    }
    Ok(())
}

fn fs_info(conn: &Connection, open: &Open, class: u8, o: &mut Vec<u8>) -> Result<(), NtStatus> {
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_PARAMETER)?;
    let label = &open.share.cfg.name;
    match class {
        FS_VOLUME => {
            let serial = open.file_key.map(|k| (k.0 as u32) ^ ((k.0 >> 32) as u32)).unwrap_or(0);
            o.u64(conn.server.start_time).u32(serial).u32(utf16_len(label) as u32).u8(0).u8(0).utf16(label);
        }
        FS_SIZE | FS_FULL_SIZE => {
            let v = rustix::fs::fstatvfs(fd).map_err(NtStatus::from_errno)?;
            let bsize = v.f_frsize.max(512);
            let sectors_per_unit = (bsize / 512).max(1) as u32;
            o.u64(v.f_blocks);
            if class == FS_FULL_SIZE {
                o.u64(v.f_bavail).u64(v.f_bfree);
            } else {
                o.u64(v.f_bavail);
            }
            o.u32(sectors_per_unit).u32(512);
        }
        FS_DEVICE => {
            o.u32(0x07).u32(0x20); // FILE_DEVICE_DISK, FILE_DEVICE_IS_MOUNTED
        }
        FS_ATTRIBUTE => {
            // Case-preserving, Unicode names, persistent ACLs not claimed;
            // FILE_NAMED_STREAMS where the file system keeps user xattrs.
            let mut attrs = 0x0000_0001 | 0x0000_0002 | 0x0000_0004 | 0x0000_0040;
            if open.share.root.as_ref().is_some_and(|r| r.has_streams()) {
                attrs |= 0x0004_0000;
            }
            let n = "NTFS";
            o.u32(attrs).u32(255).u32(utf16_len(n) as u32).utf16(n);
        }
        FS_OBJECT_ID => {
            o.zeros(64);
        }
        FS_SECTOR_SIZE => {
            o.u32(512).u32(512).u32(4096).u32(512).u32(0x3).u32(0).u32(0);
        }
        FS_CONTROL => {
            // FILE_FS_CONTROL_INFORMATION: no content filtering and no quotas
            // (FILE_VC_QUOTA_NONE); default threshold and limit "none" (-1).
            o.u64(0).u64(0).u64(0).u64(u64::MAX).u64(u64::MAX).u32(0).u32(0);
        }
        _ => return Err(NtStatus::INVALID_INFO_CLASS),
    }
    Ok(())
}

pub fn query_info(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = QueryInfoReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    ctx.tree()?;
    let mut data = Vec::new();
    match req.info_type {
        INFO_FILE => {
            let needs = match req.class {
                BASIC | NETWORK_OPEN | ATTRIBUTE_TAG | ALL => FILE_READ_ATTRIBUTES,
                FULL_EA => FILE_READ_EA,
                _ => 0,
            };
            if open.access & needs != needs && !matches!(open.kind, OpenKind::Pipe(_)) {
                return Err(NtStatus::ACCESS_DENIED);
            }
            if req.class == FULL_EA {
                return query_eas(ctx, &open, &req, out);
            }
            if req.class == STREAM && !matches!(open.kind, OpenKind::Pipe(_)) {
                return query_streams(ctx, &open, &req, out);
            }
            file_info(conn, &open, req.class, &mut data)?
        }
        INFO_FILESYSTEM => fs_info(conn, &open, req.class, &mut data)?,
        INFO_SECURITY => {
            use crate::wire::messages::{SECINFO_DACL, SECINFO_GROUP, SECINFO_OWNER, SECINFO_SACL};
            // Owner, group and DACL need READ_CONTROL, the SACL
            // ACCESS_SYSTEM_SECURITY; asking for none of them gets an empty
            // descriptor whatever the handle's rights (as Windows; smbtorture
            // smb2.sdread).
            if req.additional & (SECINFO_OWNER | SECINFO_GROUP | SECINFO_DACL) != 0 && open.access & READ_CONTROL == 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
            if req.additional & SECINFO_SACL != 0 && open.access & ACCESS_SYSTEM_SECURITY == 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
            let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_PARAMETER)?;
            data = super::create::file_sd(fd)?.to_bytes(req.additional);
            if data.len() > req.output_len as usize {
                // MS-SMB2 3.3.5.20.3: BUFFER_TOO_SMALL with the size needed.
                let hdr_start = out.len() - HEADER_LEN;
                let _ = hdr_start;
                return Err(NtStatus::BUFFER_TOO_SMALL);
            }
        }
        INFO_QUOTA => return Err(NtStatus::NOT_SUPPORTED),
        _ => return Err(NtStatus::INVALID_PARAMETER),
    }
    if fit_output(req.info_type, req.class, &mut data, req.output_len as usize)? {
        ctx.warning = Some(NtStatus::BUFFER_OVERFLOW);
    }
    out.u16(9).u16((HEADER_LEN + 8) as u16).u32(data.len() as u32);
    if data.is_empty() {
        out.u8(0);
    } else {
        out.put(&data);
    }
    Ok(())
}

/// SET_INFO of a security descriptor (MS-SMB2 3.3.5.21.3): the parts named
/// by `additional` replace the file's, with the rights each part needs. A
/// new owner must be the user or one of its groups (any SID for root, as
/// SeRestorePrivilege allows on Windows); an owner or group that is a Unix
/// user or group SID (S-1-22-1-uid, S-1-22-2-gid) becomes the file's Unix
/// owner or group too, a group only if the user is in it (or is root), as
/// chown(2) allows a file's owner. Other SIDs (Everyone, a domain SID) are
/// kept in the descriptor only.
fn set_security(open: &Open, tree: &crate::objects::Tree, additional: u32, buf: &[u8], out: &mut Vec<u8>) -> Result<(), NtStatus> {
    use crate::wire::messages::{SecurityDescriptor, SECINFO_DACL, SECINFO_GROUP, SECINFO_OWNER, SECINFO_SACL};
    if matches!(open.kind, OpenKind::Pipe(_)) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if additional & SECINFO_SACL != 0 {
        return Err(NtStatus::PRIVILEGE_NOT_HELD);
    }
    if additional & (SECINFO_OWNER | SECINFO_GROUP) != 0 && open.access & WRITE_OWNER == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if additional & SECINFO_DACL != 0 && open.access & WRITE_DAC == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if tree.read_only {
        return Err(NtStatus::MEDIA_WRITE_PROTECTED);
    }
    let new = crate::security::canonical_set(&SecurityDescriptor::parse(buf).map_err(|_| NtStatus::INVALID_PARAMETER)?);
    let token = &tree.token;
    let new_owner = new.owner.as_ref().filter(|_| additional & SECINFO_OWNER != 0);
    let new_group = new.group.as_ref().filter(|_| additional & SECINFO_GROUP != 0);
    if let Some(o) = new_owner {
        if !crate::security::may_own(token, o) {
            return Err(INVALID_OWNER);
        }
    }
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    let mut sd = super::create::file_sd(fd)?;
    sd.merge(&new, additional & (SECINFO_OWNER | SECINFO_GROUP | SECINFO_DACL));
    super::create::store_sd(fd, &sd)?;
    // Unix ownership follows where the SIDs name Unix ids.
    let uid = new_owner.and_then(|o| crate::security::sid_to_uid(o));
    let gid = new_group.filter(|g| token.root || token.has(g)).and_then(|g| crate::security::sid_to_gid(g));
    if uid.is_some() || gid.is_some() {
        // chown to oneself needs CAP_CHOWN: done as the server, the
        // descriptor having allowed it.
        let _server = crate::identity::Guard::server();
        let r = rustix::fs::chownat(fd, "", uid.map(rustix::fs::Uid::from_raw), gid.map(rustix::fs::Gid::from_raw), rustix::fs::AtFlags::EMPTY_PATH);
        if let Err(e) = r {
            tracing::info!(path = %lock(&open.path), "Unix owner not changed with the security descriptor: {e}");
        }
    }
    out.u16(2);
    Ok(())
}

/// STATUS_INVALID_OWNER: the SID may not be made a file's owner.
const INVALID_OWNER: NtStatus = NtStatus(0xC000_005A);

/// FileFullEaInformation (MS-FSA 2.1.5.11.8): all EAs, or those named in a
/// FILE_GET_EA_INFORMATION list (a name the file lacks comes back with an
/// empty value). Whole entries only: what does not fit is BUFFER_OVERFLOW,
/// not even the first is BUFFER_TOO_SMALL.
fn query_eas(ctx: &mut Ctx<'_>, open: &Open, req: &QueryInfoReq<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    let all = vfs::list_eas(fd);
    let eas = if req.input.is_empty() {
        if all.is_empty() {
            return Err(NtStatus::NO_EAS_ON_FILE);
        }
        all
    } else {
        let mut wanted = Vec::new();
        let mut off = 0usize;
        loop {
            let e = req.input.get(off..).ok_or(NtStatus::EA_LIST_INCONSISTENT)?;
            let next = crate::wire::u32_at(e, 0).ok_or(NtStatus::EA_LIST_INCONSISTENT)? as usize;
            let len = usize::from(*e.get(4).ok_or(NtStatus::EA_LIST_INCONSISTENT)?);
            let name = e.get(5..5 + len).ok_or(NtStatus::EA_LIST_INCONSISTENT)?;
            if !vfs::valid_ea_name(name) {
                return Err(NtStatus::INVALID_EA_NAME);
            }
            let name = String::from_utf8_lossy(name).to_ascii_uppercase();
            let found = all.iter().find(|a| a.name == name).cloned();
            wanted.push(found.unwrap_or(vfs::Ea { name, flags: 0, value: Vec::new() }));
            if next == 0 {
                break;
            }
            off = off.checked_add(next).ok_or(NtStatus::EA_LIST_INCONSISTENT)?;
        }
        wanted
    };
    // As many as fit, counted once: re-encoding shorter and shorter lists
    // would cost the square of the number asked for.
    let fit = vfs::full_ea_list_fit(&eas, req.output_len as usize);
    let data = vfs::encode_full_ea_list(&eas[..fit]);
    if fit == 0 {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    if fit < eas.len() {
        ctx.warning = Some(NtStatus::BUFFER_OVERFLOW);
    }
    out.u16(9).u16((HEADER_LEN + 8) as u16).u32(data.len() as u32);
    out.put(&data);
    Ok(())
}

/// FileStreamInformation (handlers/streams.rs): whole entries, what does
/// not fit is BUFFER_OVERFLOW.
fn query_streams(ctx: &mut Ctx<'_>, open: &Open, req: &QueryInfoReq<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let limit = req.output_len as usize;
    if limit < min_output(INFO_FILE, STREAM).unwrap_or(0) {
        return Err(NtStatus::INFO_LENGTH_MISMATCH);
    }
    let (data, cut) = super::streams::stream_information(open, limit)?;
    if cut {
        ctx.warning = Some(NtStatus::BUFFER_OVERFLOW);
    }
    out.u16(9).u16((HEADER_LEN + 8) as u16).u32(data.len() as u32);
    if data.is_empty() {
        out.u8(0);
    } else {
        out.put(&data);
    }
    Ok(())
}

pub fn set_info(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = SetInfoReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    let tree = ctx.tree()?.clone();
    if req.info_type == INFO_SECURITY {
        return set_security(&open, &tree, req.additional, req.buffer, out);
    }
    if req.info_type != INFO_FILE {
        return Err(if req.info_type == INFO_FILESYSTEM { NtStatus::NOT_SUPPORTED } else { NtStatus::INVALID_PARAMETER });
    }
    if matches!(open.kind, OpenKind::Pipe(_)) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    let mut r = Reader::new(req.buffer);
    let short = |_| NtStatus::INFO_LENGTH_MISMATCH;
    match req.class {
        BASIC => {
            if open.access & FILE_WRITE_ATTRIBUTES == 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
            let btime = r.u64().map_err(short)?;
            let atime = r.u64().map_err(short)?;
            let mtime = r.u64().map_err(short)?;
            let ctime = r.u64().map_err(short)?;
            let attrs = r.u32().map_err(short)?;
            // A ChangeTime the client set stays while it only sets other
            // basic information (MS-FSA 2.1.5.14.2: UserSetChangeTime).
            let keep_ctime = if ctime == 0 { vfs::user_change_time(fd) } else { None };
            let st = open.stat()?;
            if attrs != 0 {
                if st.is_dir && attrs & vfs::ATTR_TEMPORARY != 0 {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                if !st.is_dir && attrs & vfs::ATTR_DIRECTORY != 0 {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
                vfs::set_dos_attrs(fd, attrs)?;
            }
            vfs::set_times(fd, btime, atime, mtime)?;
            // Last: any change after it would end the ChangeTime just set.
            if ctime != 0 && ctime < 0xFFFF_FFFF_FFFF_FFFE {
                vfs::set_change_time(fd, ctime)?;
            } else if let Some(t) = keep_ctime {
                vfs::set_change_time(fd, t)?;
            }
            super::lease::break_parent_of(&conn.server, &open);
        }
        DISPOSITION | DISPOSITION_EX => {
            if open.access & DELETE == 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
            let flags = if req.class == DISPOSITION { u32::from(r.u8().map_err(short)?) } else { r.u32().map_err(short)? };
            let del = flags & 1 != 0;
            let st = open.stat()?;
            if del {
                if st.attrs & vfs::ATTR_READONLY != 0 {
                    return Err(NtStatus::CANNOT_DELETE);
                }
                if st.is_dir {
                    if lock(&open.path).is_empty() {
                        return Err(NtStatus::CANNOT_DELETE);
                    }
                    if !vfs::dir_is_empty(rustix::fd::AsFd::as_fd(fd))? {
                        return Err(NtStatus::DIRECTORY_NOT_EMPTY);
                    }
                }
            }
            *lock(&open.delete_on_close) = del;
            if let Some(k) = open.file_key {
                conn.server.set_delete_pending(k, open.volatile_id, del)?;
                // (A stream's path is its file's: a supervisor must not delete that.)
                if del && open.stream.is_none() {
                    conn.server.note_delete_path(k, &open.share.cfg.name, &lock(&open.path));
                }
            }
            if del {
                super::lease::break_handle_caching(&conn.server, &open);
            }
        }
        RENAME => {
            if open.access & DELETE == 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
            let replace = r.u8().map_err(short)? != 0;
            r.skip(7).map_err(short)?;
            let _root_dir = r.u64().map_err(short)?;
            let len = r.u32().map_err(short)? as usize;
            let name = r.bytes(len).map_err(|_| NtStatus::INVALID_PARAMETER)?;
            let name = utf16_to_string(name).map_err(|_| NtStatus::OBJECT_NAME_INVALID)?;
            if tree.read_only {
                return Err(NtStatus::ACCESS_DENIED);
            }
            if let Some(s) = &open.stream {
                return super::streams::rename_stream(&conn.server, &open, s, &name, replace).map(|()| {
                    out.u16(2);
                });
            }
            if name.starts_with(':') {
                // The file's unnamed stream to a named one: not kept so.
                return Err(NtStatus::INVALID_PARAMETER);
            }
            let target = vfs::validate_name(name.trim_start_matches('\\'))?;
            let root = open.share.root.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
            // A file with open streams is not renamed (Windows, Samba).
            if let Some(k) = open.file_key {
                if super::streams::streams_open(&conn.server, fd, k) {
                    return Err(NtStatus::ACCESS_DENIED);
                }
            }
            let from = lock(&open.path).clone();
            if from.is_empty() || target.is_empty() {
                return Err(NtStatus::ACCESS_DENIED);
            }
            // Names match case-insensitively: the existing file the target
            // names (if any) is found whatever its case, while the new name
            // keeps the client's spelling of the last component.
            let existing = root.resolve_case(&target);
            let target = match (vfs::split_parent(&existing), vfs::split_parent(&target)) {
                (Some((dir, _)), Some((_, leaf))) if !dir.is_empty() => format!("{dir}/{leaf}"),
                _ => target,
            };
            let mut displaced = None;
            // An open file the rename replaces: its handle-caching leases
            // break first; still open then, the rename is ACCESS_DENIED.
            let mut open_target = None;
            if let Some(st) = root.lookup(&existing)? {
                let me = open.stat()?;
                if (st.dev, st.ino) != (me.dev, me.ino) {
                    if !replace {
                        return Err(NtStatus::OBJECT_NAME_COLLISION);
                    }
                    if st.is_dir {
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                    if conn.server.has_opens((st.dev, st.ino)) {
                        open_target = Some((st.dev, st.ino));
                    }
                    if existing != target {
                        displaced = Some(existing);
                    }
                }
            }
            super::lease::rename_parent_check(&conn.server, root, &from)?;
            // Other clients' cached handles go first (lease H breaks; the
            // rename waits for their acknowledgments: handlers/lease.rs).
            let o = open.clone();
            let server = conn.server.clone();
            let job: super::lease::AfterBreaks = Box::new(move || {
                let root = o.share.root.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
                if open_target.is_some_and(|k| server.has_opens(k)) {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if let Some(old_name) = displaced {
                    // Replacing "b" by a rename to "B": the old spelling goes away.
                    root.remove(&old_name, false)?;
                }
                root.rename(&from, &target, replace)?;
                super::lease::break_parents_rename(&server, &o, &from, &target);
                // Where a supervisor finds the file if it must delete it (store).
                if let Some(k) = o.file_key {
                    server.note_delete_path(k, &o.share.cfg.name, &target);
                }
                *lock(&o.path) = target;
                Ok(())
            });
            super::lease::after_handle_breaks(conn, ctx, &open, open_target.map(crate::store::FileKey::from), job)?;
        }
        POSITION => {
            let p = r.u64().map_err(short)?;
            *lock(&open.position) = p;
        }
        MODE => {
            let _m = r.u32().map_err(short)?;
            return Err(NtStatus::NOT_SUPPORTED);
        }
        END_OF_FILE | ALLOCATION => {
            if open.access & FILE_WRITE_DATA == 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
            let v = r.u64().map_err(short)?;
            if v > i64::MAX as u64 {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            let st = open.stat()?;
            if st.is_dir {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            super::oplock::break_level2(&conn.server, &open);
            if let Some(s) = &open.stream {
                // A stream's allocation is its size.
                if req.class == END_OF_FILE || v < st.size {
                    vfs::streams::set_size(fd, &lock(&s.name), v)?;
                }
            } else if req.class == END_OF_FILE {
                rustix::fs::ftruncate(fd, v).map_err(NtStatus::from_errno)?;
            } else if v < st.size {
                rustix::fs::ftruncate(fd, v).map_err(NtStatus::from_errno)?;
            } else if v > st.alloc {
                let _ = rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::KEEP_SIZE, 0, v);
            }
            super::lease::break_parent_of(&conn.server, &open);
        }
        FULL_EA => {
            if open.access & FILE_WRITE_EA == 0 {
                return Err(NtStatus::ACCESS_DENIED);
            }
            for ea in vfs::parse_full_ea_list(req.buffer)? {
                vfs::set_ea(fd, &ea)?;
            }
            super::lease::break_parent_of(&conn.server, &open);
        }
        _ => return Err(NtStatus::INVALID_INFO_CLASS),
    }
    out.u16(2);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_buffer_rules() {
        // Fixed-size class: anything below its size is a length mismatch.
        let mut basic = vec![0u8; 40];
        assert_eq!(fit_output(INFO_FILE, BASIC, &mut basic, 39), Err(NtStatus::INFO_LENGTH_MISMATCH));
        assert_eq!(fit_output(INFO_FILE, BASIC, &mut basic, 40), Ok(false));
        // Variable class: below the floor is a mismatch, between floor and
        // full size a truncated answer whose name length says what it carries.
        let mut name = Vec::new();
        name.u32(20).utf16("\\abcdefghi");
        assert_eq!(fit_output(INFO_FILE, NAME, &mut name.clone(), 7), Err(NtStatus::INFO_LENGTH_MISMATCH));
        assert_eq!(fit_output(INFO_FILE, NAME, &mut name, 10), Ok(true));
        assert_eq!(name.len(), 10);
        assert_eq!(crate::wire::u32_at(&name, 0), Some(6));
        // FS attribute: 12 fixed bytes, then the file system name.
        let mut attr = Vec::new();
        attr.u32(3).u32(255).u32(8).utf16("NTFS");
        assert_eq!(fit_output(INFO_FILESYSTEM, FS_ATTRIBUTE, &mut attr.clone(), 15), Err(NtStatus::INFO_LENGTH_MISMATCH));
        assert_eq!(fit_output(INFO_FILESYSTEM, FS_ATTRIBUTE, &mut attr.clone(), 20), Ok(false));
        assert_eq!(fit_output(INFO_FILESYSTEM, FS_ATTRIBUTE, &mut attr, 16), Ok(true));
        assert_eq!(crate::wire::u32_at(&attr, 8), Some(4));
    }
}
