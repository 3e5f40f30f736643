//! QUERY_DIRECTORY: directory enumeration in the FSCC information classes.

use super::FILE_READ_DATA;
use crate::conn::Ctx;
use crate::objects::{lock, DirCursor, OpenKind};
use crate::vfs::wildcard::Pattern;
use crate::vfs::{self, FileStat};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{QueryDirReq, QD_REOPEN, QD_RESTART_SCANS, QD_RETURN_SINGLE_ENTRY};
use crate::wire::status::NtStatus;
use crate::wire::{utf16_len, utf16_to_string, Put};

pub const FILE_DIRECTORY_INFORMATION: u8 = 1;
pub const FILE_FULL_DIRECTORY_INFORMATION: u8 = 2;
pub const FILE_BOTH_DIRECTORY_INFORMATION: u8 = 3;
pub const FILE_NAMES_INFORMATION: u8 = 12;
pub const FILE_ID_BOTH_DIRECTORY_INFORMATION: u8 = 37;
pub const FILE_ID_FULL_DIRECTORY_INFORMATION: u8 = 38;

/// Encodes one entry (NextEntryOffset left 0) in the given class.
pub fn encode_entry(class: u8, name: &str, st: &FileStat, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let nlen = utf16_len(name) as u32;
    if class == FILE_NAMES_INFORMATION {
        out.u32(0).u32(0).u32(nlen).utf16(name);
        return Ok(());
    }
    if !matches!(
        class,
        FILE_DIRECTORY_INFORMATION | FILE_FULL_DIRECTORY_INFORMATION | FILE_BOTH_DIRECTORY_INFORMATION | FILE_ID_BOTH_DIRECTORY_INFORMATION | FILE_ID_FULL_DIRECTORY_INFORMATION
    ) {
        return Err(NtStatus::INVALID_INFO_CLASS);
    }
    out.u32(0).u32(0).u64(st.btime).u64(st.atime).u64(st.mtime).u64(st.ctime).u64(st.size).u64(st.alloc).u32(st.attrs).u32(nlen);
    match class {
        FILE_DIRECTORY_INFORMATION => {}
        FILE_FULL_DIRECTORY_INFORMATION => {
            out.u32(st.ea_size);
        }
        FILE_ID_FULL_DIRECTORY_INFORMATION => {
            out.u32(st.ea_size).u32(0).u64(st.ino);
        }
        FILE_BOTH_DIRECTORY_INFORMATION => {
            out.u32(st.ea_size);
            put_short_name(out, name);
        }
        _ => {
            out.u32(st.ea_size);
            put_short_name(out, name);
            out.u16(0).u64(st.ino);
        }
    }
    out.utf16(name);
    Ok(())
}

/// ShortNameLength, Reserved and the 24-byte ShortName field: the 8.3 name
/// the entry answers to (none for "." and "..").
fn put_short_name(out: &mut Vec<u8>, name: &str) {
    let short = if name == "." || name == ".." || name.is_empty() { String::new() } else { vfs::short_name(name) };
    let len = utf16_len(&short).min(24);
    out.u8(len as u8).u8(0);
    let start = out.len();
    out.utf16(&short);
    out.truncate(start + len);
    out.zeros(24 - len);
}

/// Bytes of directory entries read from the kernel at a time.
const GETDENTS_BUF: usize = 16 * 1024;

/// One QUERY_DIRECTORY (MS-SMB2 3.3.5.18). The search reads the directory
/// incrementally: the handle's cursor keeps the seek cookie of the next entry,
/// each query reads from there only as far as its buffer fills, and only the
/// entries it returns are statted. RESTART_SCANS (or REOPEN) starts again from
/// ".", "..", then the first entry. A search continues where it stands even
/// when an entry has been removed since (the cookie is the file system's own
/// position, as telldir/seekdir use).
pub fn query_directory(ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = QueryDirReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    let OpenKind::Dir(cursor) = &open.kind else { return Err(NtStatus::INVALID_PARAMETER) };
    if open.access & FILE_READ_DATA == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    // Validate the class before touching the cursor.
    encode_entry(req.class, "", &FileStat::default(), &mut Vec::new())?;
    let pattern = utf16_to_string(req.pattern).map_err(|_| NtStatus::OBJECT_NAME_INVALID)?;
    let pattern = if pattern.is_empty() { "*".to_string() } else { pattern };
    // Checked (length, separators) before it is stored or used.
    Pattern::new(&pattern)?;
    let root = open.share.root.as_ref().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    let mut cur = lock(cursor);
    let restart = req.flags & (QD_RESTART_SCANS | QD_REOPEN) != 0;
    // SMB2_INDEX_SPECIFIED asks to resume at a FileIndex; like NTFS we give
    // every entry FileIndex 0 (MS-FSCC 2.4), so the index carries no position
    // and the search simply continues where it stands.
    if restart || !cur.started {
        *cur = DirCursor { started: true, dots: 0, cookie: 0, moved: false, pattern: Some(pattern.clone()) };
    }
    let first_call = !cur.moved;
    let dir_path = lock(&open.path).clone();
    let pat = cur.pattern.clone().unwrap_or(pattern);
    let matcher = Pattern::new(&pat)?;
    // Windows matches a pattern against the 8.3 name too; only a pattern
    // with a '~' can match a generated short name that is not the name itself.
    let try_short = pat.contains('~');
    let mut folded = Vec::new();
    out.u16(9).u16((HEADER_LEN + 8) as u16).u32(0);
    let buf_start = out.len();
    let limit = req.output_len as usize;
    let single = req.flags & QD_RETURN_SINGLE_ENTRY != 0;
    let mut last_entry: Option<usize> = None;
    let mut count = 0usize;
    // Adds one entry if it fits; Ok(false) when the buffer is full.
    let mut put = |name: &str, stat: &FileStat, out: &mut Vec<u8>| -> Result<bool, NtStatus> {
        let mut one = Vec::new();
        encode_entry(req.class, name, stat, &mut one)?;
        let aligned = out.len() + (8 - (out.len() - buf_start) % 8) % 8;
        if aligned - buf_start + one.len() > limit {
            return if count == 0 { Err(NtStatus::INFO_LENGTH_MISMATCH) } else { Ok(false) };
        }
        out.resize(aligned, 0);
        if let Some(l) = last_entry {
            let next = (aligned - l) as u32;
            out.set_u32(l, next);
        }
        last_entry = Some(out.len());
        out.put(&one);
        count += 1;
        Ok(true)
    };
    let result = (|| -> Result<(), NtStatus> {
        // "." and "..": no short name, matched by the name only.
        while cur.dots < 2 {
            let name = if cur.dots == 0 { "." } else { ".." };
            if matcher.matches_with(name, &mut folded) {
                let me = vfs::stat_fd(fd)?;
                let stat = if cur.dots == 0 {
                    me
                } else {
                    match vfs::split_parent(&dir_path) {
                        Some((p, _)) => root.lookup(p).ok().flatten().unwrap_or(me),
                        None => me,
                    }
                };
                if !put(name, &stat, out)? {
                    return Ok(());
                }
                cur.dots += 1;
                cur.moved = true;
                if single {
                    return Ok(());
                }
            } else {
                cur.dots += 1;
                cur.moved = true;
            }
        }
        rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(cur.cookie)).map_err(NtStatus::from_errno)?;
        // About as many entries as the answer can hold are read at a time.
        let mut buf = Vec::with_capacity(if single { 1024 } else { limit.clamp(1024, GETDENTS_BUF) });
        let mut dir = rustix::fs::RawDir::new(fd, buf.spare_capacity_mut());
        while let Some(ent) = dir.next() {
            let ent = ent.map_err(NtStatus::from_errno)?;
            let next = ent.next_entry_cookie();
            let name = match ent.file_name().to_str() {
                Ok(n) if n != "." && n != ".." && !n.contains('\\') && !n.contains(':') => n,
                _ => {
                    cur.cookie = next;
                    continue;
                }
            };
            if !matcher.matches_with(name, &mut folded) && !(try_short && matcher.matches_with(&vfs::short_name(name), &mut folded)) {
                cur.cookie = next;
                cur.moved = true;
                continue;
            }
            // The attributes are read now; a name deleted since the kernel
            // listed it is skipped (as NTFS would not return it).
            let Some(stat) = vfs::stat_child(root, &dir_path, rustix::fd::AsFd::as_fd(fd), name) else {
                cur.cookie = next;
                continue;
            };
            if !put(name, &stat, out)? {
                return Ok(());
            }
            cur.cookie = next;
            cur.moved = true;
            if single {
                return Ok(());
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        out.truncate(buf_start - 8);
        return Err(e);
    }
    if count == 0 {
        out.truncate(buf_start - 8);
        return Err(if first_call { NtStatus::NO_SUCH_FILE } else { NtStatus::NO_MORE_FILES });
    }
    let len = (out.len() - buf_start) as u32;
    out.set_u32(buf_start - 4, len);
    Ok(())
}
