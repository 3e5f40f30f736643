//! Named streams (`file:name:$DATA`, MS-FSCC 2.1.5.3) kept in extended
//! attributes, one per stream, under the names Samba's vfs_streams_xattr
//! uses (`user.DosStream.NAME:$DATA`), each holding the stream's bytes and
//! one NUL byte after them (Samba's layout: an xattr cannot be empty, and a
//! share moved between Samba and this server keeps its streams).
//!
//! A stream can only be as large as the file system lets one xattr value
//! be: Linux caps a value at 64 KiB ([`MAX_STREAM_SIZE`] is that less the
//! NUL), ext4 without `ea_inode` at about one block for all of a file's
//! xattrs together, XFS at 64 KiB, btrfs at about a tree node. As Samba
//! answers: a write or a size past 64 KiB fails with
//! STATUS_FILE_SYSTEM_LIMITATION, one past what the file system has room for
//! (ENOSPC) with STATUS_DISK_FULL; the stream stays as it was.
//!
//! Stream names match ignoring case (the stored spelling is the one the
//! stream was created with). Opens of a stream have share modes, locks and
//! delete-on-close of their own, under a key of their own ([`stream_key`]).

use super::{fold_case, get_xattr, list_xattr_names, proc_fd_path};
use crate::wire::status::NtStatus;
use rustix::fd::AsFd;
use std::sync::Mutex;

/// The prefix of a stream's xattr name.
pub const XATTR_PREFIX: &str = "user.DosStream.";
/// The suffix of a stream's xattr name (the stream type, as Samba stores it).
pub const XATTR_SUFFIX: &str = ":$DATA";
/// The largest stream: Linux's largest xattr value (XATTR_SIZE_MAX) less
/// the NUL kept after the data.
pub const MAX_STREAM_SIZE: u64 = 65535;
/// STATUS_FILE_SYSTEM_LIMITATION (MS-ERREF 2.3.1): what Samba answers for
/// a stream past the largest xattr value.
pub const FILE_SYSTEM_LIMITATION: NtStatus = NtStatus(0xC000_0427);
/// The longest stream name, in UTF-16 code units (NTFS's limit).
pub const MAX_NAME_UNITS: usize = 255;
/// Linux's longest xattr name (XATTR_NAME_MAX), in bytes.
const XATTR_NAME_MAX: usize = 255;

/// What the stream part of a CREATE name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSpec {
    /// No stream part: the file or directory itself.
    Default,
    /// `name::$DATA`: the unnamed data stream, named explicitly (a
    /// directory has none).
    MainData,
    /// `name::$INDEX_ALLOCATION` or `name:$I30:$INDEX_ALLOCATION`: the
    /// directory itself.
    Index,
    /// `name:stream` or `name:stream:$DATA`.
    Named(String),
}

/// Splits the stream part off an SMB path (MS-FSCC 2.1.5.3): only the last
/// component may carry one; the stream name may hold any character but
/// `\`, `/`, `:` and NUL, up to [`MAX_NAME_UNITS`]; the type is `$DATA` or
/// `$INDEX_ALLOCATION` (ignoring case). Returns the path without the stream
/// part and what the stream part asks for.
pub fn split_stream(name: &str) -> Result<(&str, StreamSpec), NtStatus> {
    let leaf_at = name.rfind('\\').map_or(0, |i| i + 1);
    if name[..leaf_at].contains(':') {
        return Err(NtStatus::OBJECT_NAME_INVALID);
    }
    let Some(colon) = name[leaf_at..].find(':').map(|i| leaf_at + i) else {
        return Ok((name, StreamSpec::Default));
    };
    let base = &name[..colon];
    let rest = &name[colon + 1..];
    let (sname, stype) = match rest.split_once(':') {
        Some((s, t)) => (s, Some(t)),
        None => (rest, None),
    };
    if colon == leaf_at {
        // ":stream" with no file name before it.
        return Err(NtStatus::OBJECT_NAME_INVALID);
    }
    if sname.contains(['/', '\0']) || sname.encode_utf16().count() > MAX_NAME_UNITS {
        return Err(NtStatus::OBJECT_NAME_INVALID);
    }
    let spec = match stype {
        // "file:" names the file itself.
        None if sname.is_empty() => StreamSpec::Default,
        None => StreamSpec::Named(sname.to_string()),
        Some(t) if t.eq_ignore_ascii_case("$DATA") => {
            if sname.is_empty() {
                StreamSpec::MainData
            } else {
                StreamSpec::Named(sname.to_string())
            }
        }
        Some(t) if t.eq_ignore_ascii_case("$INDEX_ALLOCATION") && (sname.is_empty() || sname.eq_ignore_ascii_case("$I30")) => StreamSpec::Index,
        // An empty type, another type, or a third colon.
        Some(_) => return Err(NtStatus::OBJECT_NAME_INVALID),
    };
    if let StreamSpec::Named(s) = &spec {
        if xattr_name(s).len() > XATTR_NAME_MAX {
            // Longer in UTF-8 than an xattr name can be.
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
    }
    Ok((base, spec))
}

/// The xattr that holds the stream `name`.
pub fn xattr_name(name: &str) -> String {
    format!("{XATTR_PREFIX}{name}{XATTR_SUFFIX}")
}

/// The stream name an xattr name holds, if it is a stream's.
pub fn stream_of_xattr(x: &str) -> Option<&str> {
    x.strip_prefix(XATTR_PREFIX)?.strip_suffix(XATTR_SUFFIX).filter(|s| !s.is_empty())
}

/// Whether the file system under `dir` keeps user xattrs (and so streams):
/// reading an xattr that is not there answers ENODATA where it does,
/// EOPNOTSUPP where it does not. Nothing is written.
pub fn supported<Fd: AsFd>(dir: &Fd) -> bool {
    let mut b = [0u8; 1];
    match get_xattr(dir, "user.smbdirect.probe", &mut b) {
        Ok(_) | Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::RANGE) => true,
        Err(e) => {
            tracing::info!("no user xattrs ({e}): named streams are off");
            false
        }
    }
}

/// The allocation size reported for a stream of `size` bytes (whole 4 KiB
/// clusters, as a file of that size would take).
pub fn alloc_size(size: u64) -> u64 {
    size.div_ceil(4096) * 4096
}

/// The size of the xattr `x` (fgetxattr with no buffer; through /proc for
/// an O_PATH descriptor).
fn query_len<Fd: AsFd>(fd: &Fd, x: &str) -> Result<usize, rustix::io::Errno> {
    match rustix::fs::fgetxattr_query(fd, x) {
        Err(rustix::io::Errno::BADF) => rustix::fs::getxattr_query(proc_fd_path(fd).as_str(), x),
        r => r,
    }
}

/// The size of a stored value less the NUL after the data.
fn value_len<Fd: AsFd>(fd: &Fd, x: &str) -> Result<u64, rustix::io::Errno> {
    query_len(fd, x).map(|n| (n as u64).saturating_sub(1))
}

/// The file's named streams: (name as stored, size), sorted by name.
pub fn list<Fd: AsFd>(fd: &Fd) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = list_xattr_names(fd)
        .iter()
        .filter_map(|x| {
            let s = stream_of_xattr(x)?;
            let size = value_len(fd, x).ok()?;
            Some((s.to_string(), size))
        })
        .collect();
    out.sort();
    out
}

/// The stored spelling of the stream `name` (matched ignoring case), if
/// the file has it.
pub fn find<Fd: AsFd>(fd: &Fd, name: &str) -> Option<String> {
    let x = xattr_name(name);
    if value_len(fd, &x).is_ok() {
        return Some(name.to_string());
    }
    let folded = fold_case(name);
    list_xattr_names(fd).iter().filter_map(|x| stream_of_xattr(x)).find(|s| fold_case(s) == folded).map(str::to_string)
}

/// The size of the stream `name` (as stored).
pub fn size<Fd: AsFd>(fd: &Fd, name: &str) -> Result<u64, NtStatus> {
    value_len(fd, &xattr_name(name)).map_err(not_found)
}

fn not_found(e: rustix::io::Errno) -> NtStatus {
    if e == rustix::io::Errno::NODATA {
        NtStatus::OBJECT_NAME_NOT_FOUND
    } else {
        NtStatus::from_errno(e)
    }
}

/// Errors of storing a value: past what one xattr value may be (E2BIG),
/// or past the room the file system has for the file's xattrs (ENOSPC).
fn store_error(e: rustix::io::Errno) -> NtStatus {
    match e {
        rustix::io::Errno::TOOBIG => FILE_SYSTEM_LIMITATION,
        rustix::io::Errno::NOSPC | rustix::io::Errno::DQUOT => NtStatus::DISK_FULL,
        rustix::io::Errno::EXIST => NtStatus::OBJECT_NAME_COLLISION,
        rustix::io::Errno::NOTSUP => NtStatus::NOT_SUPPORTED,
        e => NtStatus::from_errno(e),
    }
}

/// The data of the stream `name`.
pub fn read_all<Fd: AsFd>(fd: &Fd, name: &str) -> Result<Vec<u8>, NtStatus> {
    let x = xattr_name(name);
    // Sized first; a value that grew in between is read again.
    for _ in 0..4 {
        let len = query_len(fd, &x).map_err(not_found)?;
        let mut buf = vec![0u8; len.min(MAX_STREAM_SIZE as usize + 1)];
        match get_xattr(fd, &x, &mut buf) {
            Ok(n) => {
                buf.truncate(n.saturating_sub(1));
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(not_found(e)),
        }
    }
    Err(NtStatus::INTERNAL_ERROR)
}

/// Stores `data` as the stream `name`; `create` fails when it exists.
fn store<Fd: AsFd>(fd: &Fd, name: &str, data: &[u8], create: bool) -> Result<(), NtStatus> {
    if data.len() as u64 > MAX_STREAM_SIZE {
        return Err(FILE_SYSTEM_LIMITATION);
    }
    let mut v = Vec::with_capacity(data.len() + 1);
    v.extend_from_slice(data);
    v.push(0);
    let x = xattr_name(name);
    let flags = if create { rustix::fs::XattrFlags::CREATE } else { rustix::fs::XattrFlags::empty() };
    match rustix::fs::fsetxattr(fd, x.as_str(), &v, flags) {
        Err(rustix::io::Errno::BADF) => rustix::fs::setxattr(proc_fd_path(fd).as_str(), x.as_str(), &v, flags),
        r => r,
    }
    .map_err(store_error)
}

/// Serialises read-modify-write of stream values in this process (two
/// WRITEs to one stream would otherwise lose one another's bytes).
static RMW: Mutex<()> = Mutex::new(());

/// Creates the empty stream `name` (fails with OBJECT_NAME_COLLISION when
/// it exists).
pub fn create<Fd: AsFd>(fd: &Fd, name: &str) -> Result<(), NtStatus> {
    store(fd, name, &[], true)
}

/// Fills `buf` from `offset` of the stream; the bytes read (0 at or past the end).
pub fn read_at<Fd: AsFd>(fd: &Fd, name: &str, buf: &mut [u8], offset: u64) -> Result<usize, NtStatus> {
    let data = read_all(fd, name)?;
    let Some(from) = usize::try_from(offset).ok().filter(|o| *o < data.len()) else { return Ok(0) };
    let n = buf.len().min(data.len() - from);
    buf[..n].copy_from_slice(&data[from..from + n]);
    Ok(n)
}

/// Writes `data` at `offset` of the stream (a gap is filled with zeros).
pub fn write_at<Fd: AsFd>(fd: &Fd, name: &str, offset: u64, data: &[u8]) -> Result<(), NtStatus> {
    let end = offset.checked_add(data.len() as u64).ok_or(NtStatus::INVALID_PARAMETER)?;
    if end > MAX_STREAM_SIZE {
        return Err(FILE_SYSTEM_LIMITATION);
    }
    if data.is_empty() {
        return Ok(());
    }
    let _g = RMW.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut v = read_all(fd, name)?;
    let (offset, end) = (offset as usize, end as usize);
    if v.len() < end {
        v.resize(end, 0);
    }
    v[offset..end].copy_from_slice(data);
    store(fd, name, &v, false)
}

/// Sets the stream's size (cut, or extended with zeros).
pub fn set_size<Fd: AsFd>(fd: &Fd, name: &str, size: u64) -> Result<(), NtStatus> {
    if size > MAX_STREAM_SIZE {
        return Err(FILE_SYSTEM_LIMITATION);
    }
    let _g = RMW.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut v = read_all(fd, name)?;
    v.resize(size as usize, 0);
    store(fd, name, &v, false)
}

/// Removes the stream `name`.
pub fn remove<Fd: AsFd>(fd: &Fd, name: &str) -> Result<(), NtStatus> {
    let x = xattr_name(name);
    match rustix::fs::fremovexattr(fd, x.as_str()) {
        Err(rustix::io::Errno::BADF) => rustix::fs::removexattr(proc_fd_path(fd).as_str(), x.as_str()),
        r => r,
    }
    .map_err(not_found)
}

/// Removes every named stream of the file (an overwrite or supersede of
/// the file replaces all its streams, MS-FSA 2.1.5.1.2.2).
pub fn remove_all<Fd: AsFd>(fd: &Fd) -> Result<(), NtStatus> {
    for (s, _) in list(fd) {
        match remove(fd, &s) {
            Ok(()) | Err(NtStatus::OBJECT_NAME_NOT_FOUND) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Renames the stream `from` to `to` (both as given; `to` keeps the
/// client's spelling). An existing `to` is replaced only with `replace`.
pub fn rename<Fd: AsFd>(fd: &Fd, from: &str, to: &str, replace: bool) -> Result<(), NtStatus> {
    let _g = RMW.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let data = read_all(fd, from)?;
    let existing = find(fd, to);
    if let Some(old) = &existing {
        if !replace {
            return Err(NtStatus::OBJECT_NAME_COLLISION);
        }
        if old != to {
            remove(fd, old)?;
        }
    }
    store(fd, to, &data, !replace)?;
    remove(fd, from)
}

/// The key a stream's opens have in the state store (share modes, locks,
/// delete pending): the file's device with the top bit set (no real device
/// number reaches it) and a 64-bit FNV-1a hash of the file's inode and the
/// case-folded stream name, so each stream of each file has its own.
pub fn stream_key(file: (u64, u64), name: &str) -> (u64, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for b in file.1.to_le_bytes() {
        eat(b);
    }
    for u in fold_case(name).encode_utf16() {
        for b in u.to_le_bytes() {
            eat(b);
        }
    }
    (file.0 | 1 << 63, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(s: &str) -> StreamSpec {
        StreamSpec::Named(s.to_string())
    }

    #[test]
    fn stream_names_split() {
        assert_eq!(split_stream("a\\b.txt"), Ok(("a\\b.txt", StreamSpec::Default)));
        assert_eq!(split_stream("f:Zone.Identifier"), Ok(("f", named("Zone.Identifier"))));
        assert_eq!(split_stream("d\\f:Zone.Identifier:$DATA"), Ok(("d\\f", named("Zone.Identifier"))));
        assert_eq!(split_stream("f:s:$DaTa"), Ok(("f", named("s"))));
        assert_eq!(split_stream("f::$DATA"), Ok(("f", StreamSpec::MainData)));
        assert_eq!(split_stream("f:"), Ok(("f", StreamSpec::Default)));
        assert_eq!(split_stream("d::$INDEX_ALLOCATION"), Ok(("d", StreamSpec::Index)));
        assert_eq!(split_stream("d:$i30:$index_allocation"), Ok(("d", StreamSpec::Index)));
        // Control characters and wildcards are fine in a stream name.
        assert_eq!(split_stream("f:\u{5}Stream\n One"), Ok(("f", named("\u{5}Stream\n One"))));
        assert_eq!(split_stream("f:?Stream*:$DATA"), Ok(("f", named("?Stream*"))));
        let invalid = NtStatus::OBJECT_NAME_INVALID;
        for bad in [
            "f:s:",
            "f:s:$FOO",
            "f:s:?D*a",
            "f::",
            "f::$FOO",
            "f:a:b:$DATA",
            "f:x/y",
            "f:x\0y",
            "d:s\\f",
            "a:b\\c",
            ":s",
            "d\\:s",
            "d:other:$INDEX_ALLOCATION",
        ] {
            assert_eq!(split_stream(bad), Err(invalid), "{bad:?}");
        }
        // Length limits: 255 UTF-16 units, and what an xattr name holds in UTF-8.
        let ok = "x".repeat(MAX_NAME_UNITS - XATTR_PREFIX.len() - XATTR_SUFFIX.len());
        assert_eq!(split_stream(&format!("f:{ok}")), Ok(("f", named(&ok))));
        assert_eq!(split_stream(&format!("f:{ok}x")), Err(invalid));
        assert_eq!(split_stream(&format!("f:{}", "x".repeat(256))), Err(invalid));
        assert_eq!(split_stream(&format!("f:{}", "é".repeat(120))), Err(invalid));
    }

    #[test]
    fn xattr_names_round_trip() {
        for s in ["Zone.Identifier", "AFP_AfpInfo", "\u{5}odd\n", "a b", "Ünï"] {
            let x = xattr_name(s);
            assert!(x.starts_with("user.DosStream.") && x.ends_with(":$DATA"), "{x}");
            assert_eq!(stream_of_xattr(&x), Some(s));
        }
        assert_eq!(stream_of_xattr("user.DosStream.:$DATA"), None);
        assert_eq!(stream_of_xattr("user.smbdirect.dosattrib"), None);
        assert_eq!(stream_of_xattr("user.DosStream.x:$FOO"), None);
    }

    #[test]
    fn keys_differ_per_stream_not_per_case() {
        let f = (0x0000_0008_0000_0001, 1234);
        let a = stream_key(f, "Stream One");
        assert_eq!(a, stream_key(f, "STREAM ONE"));
        assert_ne!(a, stream_key(f, "Stream Two"));
        assert_ne!(a, stream_key((f.0, 1235), "Stream One"));
        assert_ne!(a.0, f.0, "never a real file's key");
        assert_eq!(a.0 & !(1 << 63), f.0);
    }

    #[test]
    fn stream_data_in_xattrs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"main").unwrap();
        let root = super::super::ShareRoot::open(tmp.path()).unwrap();
        if !supported(&root.fd()) {
            return;
        }
        let fd = root.open_beneath("f", rustix::fs::OFlags::RDONLY).unwrap();
        create(&fd, "Zone.Identifier").unwrap();
        assert_eq!(create(&fd, "Zone.Identifier"), Err(NtStatus::OBJECT_NAME_COLLISION));
        assert_eq!(list(&fd), vec![("Zone.Identifier".to_string(), 0)]);
        write_at(&fd, "Zone.Identifier", 0, b"[ZoneTransfer]").unwrap();
        write_at(&fd, "Zone.Identifier", 16, b"x").unwrap();
        assert_eq!(read_all(&fd, "Zone.Identifier").unwrap(), b"[ZoneTransfer]\0\0x");
        // On disk: Samba's name and layout (data, then one NUL).
        let mut raw = [0u8; 64];
        let n = rustix::fs::getxattr(&tmp.path().join("f"), "user.DosStream.Zone.Identifier:$DATA", &mut raw[..]).unwrap();
        assert_eq!(&raw[..n], b"[ZoneTransfer]\0\0x\0");
        assert_eq!(find(&fd, "zone.identifier").as_deref(), Some("Zone.Identifier"));
        assert_eq!(find(&fd, "other"), None);
        let mut buf = [0u8; 4];
        assert_eq!(read_at(&fd, "Zone.Identifier", &mut buf, 10).unwrap(), 4);
        assert_eq!(&buf, b"fer]");
        assert_eq!(read_at(&fd, "Zone.Identifier", &mut buf, 100).unwrap(), 0);
        set_size(&fd, "Zone.Identifier", 4).unwrap();
        assert_eq!(size(&fd, "Zone.Identifier").unwrap(), 4);
        rename(&fd, "Zone.Identifier", "Other", false).unwrap();
        assert_eq!(list(&fd), vec![("Other".to_string(), 4)]);
        create(&fd, "Third").unwrap();
        assert_eq!(rename(&fd, "Other", "THIRD", false), Err(NtStatus::OBJECT_NAME_COLLISION));
        rename(&fd, "Other", "THIRD", true).unwrap();
        assert_eq!(list(&fd), vec![("THIRD".to_string(), 4)]);
        // Past the largest value: refused, the stream stays as it was.
        assert_eq!(write_at(&fd, "THIRD", MAX_STREAM_SIZE, b"x"), Err(FILE_SYSTEM_LIMITATION));
        assert_eq!(set_size(&fd, "THIRD", MAX_STREAM_SIZE + 1), Err(FILE_SYSTEM_LIMITATION));
        assert_eq!(read_all(&fd, "THIRD").unwrap(), b"[Zon");
        remove_all(&fd).unwrap();
        assert!(list(&fd).is_empty());
        assert_eq!(remove(&fd, "THIRD"), Err(NtStatus::OBJECT_NAME_NOT_FOUND));
        assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"main");
    }
}
