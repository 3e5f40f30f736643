//! The file system under a share: every path is resolved beneath the share
//! root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so neither
//! `..` nor a symlink (absolute or relative) can lead outside it.
//!
//! Names arrive as SMB paths (backslash separated); [`validate_name`] turns
//! them into relative Unix paths and refuses anything that could mean
//! something else on Unix.

pub mod names;
pub mod streams;
pub mod wildcard;

use crate::wire::status::NtStatus;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};
use std::path::Path;

pub const ATTR_READONLY: u32 = 0x01;
pub const ATTR_HIDDEN: u32 = 0x02;
pub const ATTR_SYSTEM: u32 = 0x04;
pub const ATTR_DIRECTORY: u32 = 0x10;
pub const ATTR_ARCHIVE: u32 = 0x20;
pub const ATTR_NORMAL: u32 = 0x80;
pub const ATTR_TEMPORARY: u32 = 0x100;
pub const ATTR_SPARSE: u32 = 0x200;
pub const ATTR_REPARSE: u32 = 0x400;
pub const ATTR_COMPRESSED: u32 = 0x800;
pub const ATTR_OFFLINE: u32 = 0x1000;
pub const ATTR_NOT_CONTENT_INDEXED: u32 = 0x2000;
pub const ATTR_ENCRYPTED: u32 = 0x4000;
/// Attributes a client may set and read back; the rest are derived.
pub const SETTABLE_ATTRS: u32 = ATTR_READONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_ARCHIVE | ATTR_TEMPORARY | ATTR_OFFLINE | ATTR_NOT_CONTENT_INDEXED;

const XATTR_DOSATTRIB: &str = "user.smbdirect.dosattrib";
const XATTR_BTIME: &str = "user.smbdirect.btime";

const NT_EPOCH_OFFSET: i64 = 11_644_473_600;

pub fn unix_to_nt(secs: i64, nsec: u32) -> u64 {
    let t = (secs as i128 + NT_EPOCH_OFFSET as i128) * 10_000_000 + (nsec / 100) as i128;
    t.clamp(0, i64::MAX as i128) as u64
}

pub fn nt_to_unix(t: u64) -> (i64, u32) {
    let t = t.min(i64::MAX as u64) as i64;
    let secs = t / 10_000_000 - NT_EPOCH_OFFSET;
    let nsec = ((t % 10_000_000) * 100) as u32;
    (secs, nsec)
}

pub fn now_nt() -> u64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    unix_to_nt(d.as_secs() as i64, d.subsec_nanos())
}

/// What SMB needs to know of a file, in NT units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub alloc: u64,
    pub nlink: u32,
    pub is_dir: bool,
    pub btime: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub attrs: u32,
    pub writable: bool,
    /// Size of the extended attributes (see [`ea_size`]).
    pub ea_size: u32,
}

/// Turns an SMB path into a relative Unix path ("" for the share root).
pub fn validate_name(name: &str) -> Result<String, NtStatus> {
    if name.starts_with('\\') {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mut out = String::with_capacity(name.len());
    let parts: Vec<&str> = name.split('\\').collect();
    let last = parts.len().saturating_sub(1);
    for (i, comp) in parts.into_iter().enumerate() {
        if comp.is_empty() {
            // "a\\b" or a trailing backslash: empty components are tolerated only at the end.
            if i == last {
                continue;
            }
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        let comp = match comp.split_once(':') {
            None => comp,
            // The default data stream is the file itself.
            Some((base, s)) if i == last && (s.eq_ignore_ascii_case(":$DATA") || s.is_empty()) && !base.is_empty() => base,
            // A named stream is split off first (streams::split_stream).
            Some(_) => return Err(NtStatus::OBJECT_NAME_INVALID),
        };
        if comp == "." || comp == ".." {
            return Err(NtStatus::OBJECT_PATH_SYNTAX_BAD);
        }
        if comp.len() > 255 {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        if comp.chars().any(|c| (c as u32) < 0x20 || matches!(c, '/' | '<' | '>' | '"' | '|' | '?' | '*')) {
            return Err(NtStatus::OBJECT_NAME_INVALID);
        }
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(comp);
    }
    if out.len() > 4096 {
        return Err(NtStatus::NAME_TOO_LONG);
    }
    Ok(out)
}

/// Splits "a/b/c" into ("a/b", "c"); the root has no parent.
pub fn split_parent(rel: &str) -> Option<(&str, &str)> {
    if rel.is_empty() {
        return None;
    }
    Some(match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    })
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

#[derive(Debug)]
pub struct ShareRoot {
    fd: OwnedFd,
    /// The share's `create mask`, `directory mask`... for new files.
    unix: crate::auth::unix::ShareUnix,
    /// The file system keeps user xattrs, so named streams (streams.rs).
    streams: bool,
}

/// The process's umask, read once (from /proc: umask(2) can only read it by
/// changing it for every thread); 0o022 if /proc does not say.
fn process_umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
            .unwrap_or(0o022)
    })
}

impl ShareRoot {
    pub fn open(path: &Path) -> std::io::Result<ShareRoot> {
        let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        let streams = streams::supported(&fd);
        Ok(ShareRoot { fd, unix: Default::default(), streams })
    }

    /// Whether named streams can be kept under this root (probed at open).
    pub fn has_streams(&self) -> bool {
        self.streams
    }

    /// The same root with the share's Unix settings for new files.
    pub fn with_unix(mut self, unix: crate::auth::unix::ShareUnix) -> ShareRoot {
        self.unix = unix;
        self
    }

    /// The mode a new file or directory in `dir` gets, and whether the
    /// process umask would take bits away from it (then it is set again).
    fn new_mode(&self, dir: &OwnedFd, is_dir: bool) -> (u32, bool) {
        let parent = if self.unix.inherit_permissions || is_dir { rustix::fs::fstat(dir).map_or(0, |s| s.st_mode) } else { 0 };
        let mut mode = self.unix.new_mode(is_dir, parent);
        // A directory in a setgid directory stays setgid (its group is inherited).
        if is_dir {
            mode |= parent & 0o2000;
        }
        (mode, mode & process_umask() != 0 || mode & 0o7000 != 0)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens `rel` beneath the root.
    pub fn open_beneath(&self, rel: &str, flags: OFlags) -> Result<OwnedFd, NtStatus> {
        let path = if rel.is_empty() { "." } else { rel };
        rustix::fs::openat2(&self.fd, path, flags | OFlags::CLOEXEC, Mode::empty(), RESOLVE)
            .map_err(NtStatus::from_errno)
    }

    /// The directory that holds `rel`, and the last component.
    pub fn parent<'a>(&self, rel: &'a str) -> Result<(OwnedFd, &'a str), NtStatus> {
        let (p, name) = split_parent(rel).ok_or(NtStatus::ACCESS_DENIED)?;
        let dir = self.open_beneath(p, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| {
            if e == NtStatus::OBJECT_NAME_NOT_FOUND {
                NtStatus::OBJECT_PATH_NOT_FOUND
            } else {
                e
            }
        })?;
        Ok((dir, name))
    }

    /// Stats `rel` without opening it for data; `None` when it does not exist.
    pub fn lookup(&self, rel: &str) -> Result<Option<FileStat>, NtStatus> {
        match self.open_beneath(rel, OFlags::PATH) {
            Ok(fd) => Ok(Some(stat_fd(&fd)?)),
            Err(NtStatus::OBJECT_NAME_NOT_FOUND) => {
                // Distinguish a missing parent (PATH_NOT_FOUND) from a missing leaf.
                if let Some((p, _)) = split_parent(rel) {
                    if !p.is_empty() {
                        match self.open_beneath(p, OFlags::PATH | OFlags::DIRECTORY) {
                            Ok(_) => {}
                            Err(NtStatus::OBJECT_NAME_NOT_FOUND) | Err(NtStatus::OBJECT_PATH_NOT_FOUND) => {
                                return Err(NtStatus::OBJECT_PATH_NOT_FOUND)
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates a new regular file (fails if it exists).
    pub fn create_file(&self, rel: &str) -> Result<OwnedFd, NtStatus> {
        let (dir, name) = self.parent(rel)?;
        let (mode, again) = self.new_mode(&dir, false);
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(NtStatus::from_errno)?;
        if again {
            let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
        }
        Ok(fd)
    }

    pub fn mkdir(&self, rel: &str) -> Result<(), NtStatus> {
        let (dir, name) = self.parent(rel)?;
        let (mode, again) = self.new_mode(&dir, true);
        rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode)).map_err(NtStatus::from_errno)?;
        if again {
            if let Ok(d) = rustix::fs::openat(&dir, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
                let _ = rustix::fs::fchmod(&d, Mode::from_raw_mode(mode));
            }
        }
        Ok(())
    }

    /// Whether this thread's file-system identity may unlink `rel` (write
    /// and search on its directory; in a sticky directory, only the owner of
    /// the file or of the directory), as the kernel will decide at the
    /// unlink: DELETE access is asked at CREATE (as Samba does), so that a
    /// delete-on-close does not fail after the fact.
    pub fn may_delete(&self, rel: &str) -> bool {
        let Ok((dir, name)) = self.parent(rel) else { return false };
        let search_write = rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK;
        // AT_EACCESS: checked with the thread's fsuid/fsgid, not the real ids.
        if rustix::fs::accessat(&dir, ".", search_write, AtFlags::EACCESS).is_err() {
            return false;
        }
        let (Ok(d), Ok(f)) = (rustix::fs::fstat(&dir), rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)) else { return false };
        let (fsuid, _) = crate::identity::thread_fs_ids();
        d.st_mode & 0o1000 == 0 || fsuid == 0 || f.st_uid == fsuid || d.st_uid == fsuid
    }

    pub fn remove(&self, rel: &str, is_dir: bool) -> Result<(), NtStatus> {
        let (dir, name) = self.parent(rel)?;
        let flags = if is_dir { AtFlags::REMOVEDIR } else { AtFlags::empty() };
        rustix::fs::unlinkat(&dir, name, flags).map_err(NtStatus::from_errno)
    }

    pub fn rename(&self, from: &str, to: &str, replace: bool) -> Result<(), NtStatus> {
        let (fdir, fname) = self.parent(from)?;
        let (tdir, tname) = self.parent(to)?;
        let flags = if replace { rustix::fs::RenameFlags::empty() } else { rustix::fs::RenameFlags::NOREPLACE };
        rustix::fs::renameat_with(&fdir, fname, &tdir, tname, flags).map_err(NtStatus::from_errno)
    }
}

impl ShareRoot {
    /// Resolves `rel` the way Windows matches names, case-insensitively: a
    /// component that does not exist with the given spelling is looked up in
    /// its directory ignoring case (or as the 8.3 short name of an entry), and
    /// the result carries the names as stored. From the first component that
    /// matches nothing on, the rest stays as given (a name about to be created
    /// keeps the client's spelling). An exact hit costs a single open.
    ///
    /// On a miss the directory resolved so far is held open and each
    /// component is looked up relative to it, so a path of n components costs
    /// n lookups (walking each prefix from the share root again cost n²: a
    /// second of CPU for one CREATE of a 2,000-level path). Only a symlink is
    /// resolved from the root again, beneath it, like every other open.
    pub fn resolve_case(&self, rel: &str) -> String {
        if rel.is_empty() || self.exists(rel) {
            return rel.to_string();
        }
        let mut out = String::with_capacity(rel.len());
        let comps: Vec<&str> = rel.split('/').collect();
        let mut dir = self.open_beneath("", OFlags::RDONLY | OFlags::DIRECTORY).ok();
        for (i, comp) in comps.iter().enumerate() {
            // "." and ".." never name an entry (validate_name refuses them
            // anyway); looked up relative to a directory they would lead out.
            let named = !matches!(*comp, "" | "." | "..");
            let found = dir.as_ref().filter(|_| named).and_then(|d| {
                let exact = rustix::fs::statx(d, *comp, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE).is_ok();
                if exact {
                    Some(comp.to_string())
                } else {
                    names::find_ignoring_case(d.as_fd(), comp)
                }
            });
            let Some(name) = found else {
                // Nothing matches: this component and the rest as given.
                for (j, rest) in comps[i..].iter().enumerate() {
                    if j > 0 || !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(rest);
                }
                break;
            };
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(&name);
            if i + 1 < comps.len() {
                dir = dir.as_ref().and_then(|d| self.child_dir(d, &out, &name));
            }
        }
        out
    }

    /// The directory `name` in `parent` (whose share-relative path is
    /// `rel`), opened for reading; a symlink is followed beneath the root.
    fn child_dir(&self, parent: &OwnedFd, rel: &str, name: &str) -> Option<OwnedFd> {
        match rustix::fs::openat(parent, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Some(fd),
            // A symlink (ELOOP, or ENOTDIR as O_DIRECTORY sees it first).
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => self.open_beneath(rel, OFlags::RDONLY | OFlags::DIRECTORY).ok(),
            Err(_) => None,
        }
    }

    fn exists(&self, rel: &str) -> bool {
        self.open_beneath(rel, OFlags::PATH | OFlags::NOFOLLOW).is_ok()
    }
}

/// Case folding for name comparison: Windows compares names upper-cased with
/// a one-to-one table, so a character whose upper case is several characters
/// (ß) stays as it is.
pub fn fold_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

const SHORT_NAME_SPECIALS: &str = "!#$%&'()-@^_`{}~";

fn short_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || SHORT_NAME_SPECIALS.contains(c)
}

/// Whether `name` already is a valid 8.3 name (ignoring case).
pub fn is_8dot3(name: &str) -> bool {
    let (base, ext) = match name.split_once('.') {
        Some((b, e)) => (b, Some(e)),
        None => (name, None),
    };
    let ok = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.chars().all(short_char_ok);
    ok(base, 8) && ext.is_none_or(|e| ok(e, 3))
}

/// The 8.3 short name of a long name (MS-FSCC 2.1.5.2.1): a name that is
/// already 8.3 is its own short name (upper-cased); any other becomes up to
/// two leading characters, four hex digits of a hash of the whole name, "~1"
/// and up to three characters of the extension ("TO1A2B~1.TXT"). The hash
/// makes the name stable without per-directory state; two long names in one
/// directory can collide (1 in 65536 for equal prefix and extension).
pub fn short_name(name: &str) -> String {
    if is_8dot3(name) {
        return name.to_ascii_uppercase();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() => (s, e),
        _ => (name, ""),
    };
    let clean = |s: &str, n: usize| -> String { s.chars().filter(|c| short_char_ok(*c) && *c != '~').map(|c| c.to_ascii_uppercase()).take(n).collect() };
    let mut prefix = clean(stem, 2);
    if prefix.is_empty() {
        prefix.push('_');
    }
    // FNV-1a over the case-folded UTF-16 code units.
    let mut h: u32 = 0x811c_9dc5;
    for u in fold_case(name).encode_utf16() {
        for b in u.to_le_bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    let h = (h ^ (h >> 16)) & 0xffff;
    let ext = clean(ext, 3);
    let mut out = format!("{prefix}{h:04X}~1");
    if !ext.is_empty() {
        out.push('.');
        out.push_str(&ext);
    }
    out
}

/// The path of one of our own descriptors in /proc: xattr calls on an
/// O_PATH descriptor fail with EBADF, but work through this path (it names
/// exactly the file the descriptor holds, no lookup by name is involved).
fn proc_fd_path<Fd: AsFd>(fd: &Fd) -> String {
    use rustix::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

/// fgetxattr that also works on O_PATH descriptors.
fn get_xattr<Fd: AsFd>(fd: &Fd, name: &str, buf: &mut [u8]) -> rustix::io::Result<usize> {
    match rustix::fs::fgetxattr(fd, name, &mut *buf) {
        Err(rustix::io::Errno::BADF) => rustix::fs::getxattr(proc_fd_path(fd).as_str(), name, buf),
        r => r,
    }
}

/// fsetxattr that also works on O_PATH descriptors.
fn set_xattr<Fd: AsFd>(fd: &Fd, name: &str, value: &[u8]) -> rustix::io::Result<()> {
    match rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty()) {
        Err(rustix::io::Errno::BADF) => rustix::fs::setxattr(proc_fd_path(fd).as_str(), name, value, rustix::fs::XattrFlags::empty()),
        r => r,
    }
}

pub fn stat_fd<Fd: AsFd>(fd: Fd) -> Result<FileStat, NtStatus> {
    let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS | StatxFlags::BTIME)
        .map_err(NtStatus::from_errno)?;
    let ts = |t: rustix::fs::StatxTimestamp| unix_to_nt(t.tv_sec, t.tv_nsec);
    let is_dir = (st.stx_mode as u32 & 0o170000) == 0o040000;
    let mtime = ts(st.stx_mtime);
    let ctime = ts(st.stx_ctime);
    let mut btime = if st.stx_mask & StatxFlags::BTIME.bits() != 0 { ts(st.stx_btime) } else { mtime.min(ctime) };
    let mut buf = [0u8; 8];
    if let Ok(8) = get_xattr(&fd, XATTR_BTIME, &mut buf) {
        btime = u64::from_le_bytes(buf);
    }
    let dev = (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor);
    let ctime = change_time_override(dev, st.stx_ino, ctime);
    let stored = read_dos_attrs(&fd);
    let mut attrs = stored.unwrap_or(if is_dir { 0 } else { ATTR_ARCHIVE }) & (SETTABLE_ATTRS | ATTR_SPARSE);
    if is_dir {
        attrs |= ATTR_DIRECTORY;
        attrs &= !ATTR_ARCHIVE | (stored.unwrap_or(0) & ATTR_ARCHIVE);
    }
    if attrs == 0 {
        attrs = ATTR_NORMAL;
    }
    Ok(FileStat {
        dev: (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor),
        ino: st.stx_ino,
        size: if is_dir { 0 } else { st.stx_size },
        alloc: if is_dir { 0 } else { st.stx_blocks.saturating_mul(512) },
        nlink: st.stx_nlink,
        is_dir,
        btime,
        atime: ts(st.stx_atime),
        mtime,
        ctime,
        attrs,
        writable: st.stx_mode & 0o222 != 0,
        ea_size: ea_size(&fd),
    })
}

fn read_dos_attrs<Fd: AsFd>(fd: Fd) -> Option<u32> {
    let mut buf = [0u8; 4];
    match get_xattr(&fd, XATTR_DOSATTRIB, &mut buf) {
        Ok(4) => Some(u32::from_le_bytes(buf)),
        _ => None,
    }
}

/// Stores the client-settable DOS attributes. File systems without user
/// xattrs (tmpfs without them, some FUSE) just do not keep them.
pub fn set_dos_attrs<Fd: AsFd>(fd: Fd, attrs: u32) -> Result<(), NtStatus> {
    // The sparse flag is not client-settable here; FSCTL_SET_SPARSE owns it.
    let sparse = read_dos_attrs(&fd).unwrap_or(0) & ATTR_SPARSE;
    write_dos_attrs(fd, (attrs & SETTABLE_ATTRS) | sparse)
}

/// Sets or clears FILE_ATTRIBUTE_SPARSE_FILE (FSCTL_SET_SPARSE), keeping the
/// other stored attributes (a file without stored ones is ARCHIVE).
pub fn set_sparse<Fd: AsFd>(fd: Fd, sparse: bool) -> Result<(), NtStatus> {
    let old = read_dos_attrs(&fd).unwrap_or(ATTR_ARCHIVE);
    let new = if sparse { old | ATTR_SPARSE } else { old & !ATTR_SPARSE };
    write_dos_attrs(fd, new & (SETTABLE_ATTRS | ATTR_SPARSE))
}

fn write_dos_attrs<Fd: AsFd>(fd: Fd, attrs: u32) -> Result<(), NtStatus> {
    let v = attrs.to_le_bytes();
    match set_xattr(&fd, XATTR_DOSATTRIB, &v) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTSUP) => Ok(()),
        Err(e) => Err(NtStatus::from_errno(e)),
    }
}

/// Sets times given in NT units; 0 leaves a time alone (and -1/-2 are treated
/// the same: the caller handles the "stop updating" semantics).
pub fn set_times<Fd: AsFd>(fd: Fd, btime: u64, atime: u64, mtime: u64) -> Result<(), NtStatus> {
    use rustix::fs::{Timespec, Timestamps};
    let ts = |t: u64| {
        if t == 0 || t >= 0xFFFF_FFFF_FFFF_FFFE {
            Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT }
        } else {
            let (s, n) = nt_to_unix(t);
            Timespec { tv_sec: s, tv_nsec: n as _ }
        }
    };
    if atime != 0 || mtime != 0 {
        let times = Timestamps { last_access: ts(atime), last_modification: ts(mtime) };
        match rustix::fs::futimens(&fd, &times) {
            // Only the owner may set times in Unix; Windows lets whoever may
            // write the file (Samba's `dos filetimes = yes`): if the kernel
            // says this thread's identity may write it (AT_EACCESS: its
            // fsuid), the times are set as the server.
            Err(rustix::io::Errno::PERM)
                if rustix::fs::fcntl_getfl(&fd).is_ok_and(|f| f.intersects(OFlags::WRONLY | OFlags::RDWR))
                    || rustix::fs::accessat(rustix::fs::CWD, proc_fd_path(&fd).as_str(), rustix::fs::Access::WRITE_OK, AtFlags::EACCESS).is_ok() =>
            {
                let _server = crate::identity::Guard::server();
                rustix::fs::futimens(&fd, &times).map_err(NtStatus::from_errno)?;
            }
            r => r.map_err(NtStatus::from_errno)?,
        }
    }
    if btime != 0 && btime < 0xFFFF_FFFF_FFFF_FFFE {
        match set_xattr(&fd, XATTR_BTIME, &btime.to_le_bytes()) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
            Err(e) => return Err(NtStatus::from_errno(e)),
        }
    }
    Ok(())
}

/// Extended attributes (MS-FSCC 2.4.15) live in xattrs under this prefix,
/// one per EA: the name upper-cased (EA names are case-insensitive and NTFS
/// keeps them upper-cased), the value as the flags byte followed by the data.
const EA_PREFIX: &str = "user.smbdirect.ea.";

/// One extended attribute: name, flags (FILE_NEED_EA 0x80) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ea {
    pub name: String,
    pub flags: u8,
    pub value: Vec<u8>,
}

fn list_xattr_names<Fd: AsFd>(fd: &Fd) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    loop {
        let r = match rustix::fs::flistxattr(fd, &mut buf[..]) {
            Err(rustix::io::Errno::BADF) => rustix::fs::listxattr(proc_fd_path(fd).as_str(), &mut buf[..]),
            r => r,
        };
        match r {
            Ok(n) => {
                return buf[..n.min(buf.len())]
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .filter_map(|n| std::str::from_utf8(n).ok().map(str::to_string))
                    .collect()
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(_) => return Vec::new(),
        }
    }
}

/// The file's extended attributes, sorted by name.
pub fn list_eas<Fd: AsFd>(fd: &Fd) -> Vec<Ea> {
    let mut out = Vec::new();
    for x in list_xattr_names(fd) {
        let Some(name) = x.strip_prefix(EA_PREFIX) else { continue };
        let mut buf = vec![0u8; 65536 + 1];
        let Ok(n) = get_xattr(fd, &x, &mut buf) else { continue };
        let Some((&flags, value)) = buf[..n.min(buf.len())].split_first() else { continue };
        out.push(Ea { name: name.to_string(), flags, value: value.to_vec() });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Sets one EA; an empty value removes it (MS-FSA 2.1.5.14.4).
pub fn set_ea<Fd: AsFd>(fd: &Fd, ea: &Ea) -> Result<(), NtStatus> {
    let key = format!("{EA_PREFIX}{}", ea.name.to_ascii_uppercase());
    let r = if ea.value.is_empty() {
        match rustix::fs::fremovexattr(fd, key.as_str()) {
            Err(rustix::io::Errno::BADF) => rustix::fs::removexattr(proc_fd_path(fd).as_str(), key.as_str()),
            r => r,
        }
        .or_else(|e| if e == rustix::io::Errno::NODATA { Ok(()) } else { Err(e) })
    } else {
        let mut v = Vec::with_capacity(ea.value.len() + 1);
        v.push(ea.flags);
        v.extend_from_slice(&ea.value);
        set_xattr(fd, &key, &v)
    };
    r.map_err(|e| match e {
        rustix::io::Errno::NOTSUP => NtStatus::EAS_NOT_SUPPORTED,
        // The value is larger than the file system takes for one xattr.
        rustix::io::Errno::TOOBIG => NtStatus::EA_TOO_LARGE,
        e => NtStatus::from_errno(e),
    })
}

/// Whether a name may be an EA name (MS-FSCC 2.4.15: ASCII, no control
/// characters, none of the characters reserved in file names).
pub fn valid_ea_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&c| (0x20..0x7f).contains(&c) && !b"\\/:*?\"<>|,+=;[]".contains(&c))
}

/// Parses a FILE_FULL_EA_INFORMATION list (MS-FSCC 2.4.15) as sent in
/// SET_INFO or the ExtA create context. Entries must lie inside the buffer
/// and be 4-byte aligned; a bad list is STATUS_EA_LIST_INCONSISTENT.
pub fn parse_full_ea_list(buf: &[u8]) -> Result<Vec<Ea>, NtStatus> {
    let bad = NtStatus::EA_LIST_INCONSISTENT;
    let mut out = Vec::new();
    let mut off = 0usize;
    loop {
        let e = buf.get(off..).ok_or(bad)?;
        let next = crate::wire::u32_at(e, 0).ok_or(bad)? as usize;
        let flags = *e.get(4).ok_or(bad)?;
        let name_len = usize::from(*e.get(5).ok_or(bad)?);
        let value_len = usize::from(crate::wire::u16_at(e, 6).ok_or(bad)?);
        let name = e.get(8..8 + name_len).ok_or(bad)?;
        if e.get(8 + name_len) != Some(&0) {
            return Err(bad);
        }
        let value = e.get(9 + name_len..9 + name_len + value_len).ok_or(bad)?;
        if !valid_ea_name(name) || flags & !0x80 != 0 {
            return Err(NtStatus::INVALID_EA_NAME);
        }
        let name = String::from_utf8_lossy(name).to_ascii_uppercase();
        out.push(Ea { name, flags, value: value.to_vec() });
        if next == 0 {
            return Ok(out);
        }
        if next % 4 != 0 || next < 9 + name_len + value_len {
            return Err(bad);
        }
        off = off.checked_add(next).ok_or(bad)?;
    }
}

/// Encodes EAs as a FILE_FULL_EA_INFORMATION list.
pub fn encode_full_ea_list(eas: &[Ea]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut last: Option<usize> = None;
    for ea in eas {
        if let Some(l) = last {
            while out.len() % 4 != 0 {
                out.push(0);
            }
            let next = (out.len() - l) as u32;
            out[l..l + 4].copy_from_slice(&next.to_le_bytes());
        }
        last = Some(out.len());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(ea.flags);
        out.push(ea.name.len().min(255) as u8);
        out.extend_from_slice(&(ea.value.len().min(65535) as u16).to_le_bytes());
        out.extend_from_slice(&ea.name.as_bytes()[..ea.name.len().min(255)]);
        out.push(0);
        out.extend_from_slice(&ea.value[..ea.value.len().min(65535)]);
    }
    out
}

/// How many of `eas`, from the first, fit in `limit` bytes encoded as a
/// FILE_FULL_EA_INFORMATION list (the size [`encode_full_ea_list`] gives
/// them), counted in one pass.
pub fn full_ea_list_fit(eas: &[Ea], limit: usize) -> usize {
    let mut size = 0usize;
    for (i, ea) in eas.iter().enumerate() {
        let start = if i == 0 { 0 } else { size.next_multiple_of(4) };
        size = start + 8 + ea.name.len().min(255) + 1 + ea.value.len().min(65535);
        if size > limit {
            return i;
        }
    }
    eas.len()
}

/// EaSize as FileEaInformation and directory listings report it: the size
/// of the file's EA list in FILE_FULL_EA_INFORMATION form (0 without EAs).
pub fn ea_size<Fd: AsFd>(fd: &Fd) -> u32 {
    let eas = list_eas(fd);
    if eas.is_empty() {
        0
    } else {
        encode_full_ea_list(&eas).len() as u32
    }
}

/// ChangeTimes clients set, by (device, inode): the time, and the file's
/// real ctime when it was set. Linux cannot set a ctime, and storing the value
/// in an xattr would itself move the ctime (to a fine-grained time the server
/// cannot know beforehand), so it lives here: it holds while the real ctime
/// stays where it was, and any later change to the file ends it, just as
/// Windows moves ChangeTime on every change. A server restart forgets it.
static CHANGE_TIMES: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<(u64, u64), (u64, u64)>>> =
    std::sync::LazyLock::new(Default::default);
const CHANGE_TIMES_MAX: usize = 65536;

fn change_time_override(dev: u64, ino: u64, real: u64) -> u64 {
    let mut map = CHANGE_TIMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match map.get(&(dev, ino)) {
        Some(&(set, marker)) if marker == real => set,
        Some(_) => {
            map.remove(&(dev, ino));
            real
        }
        None => real,
    }
}

/// The ChangeTime a client set on this file, while it still holds.
pub fn user_change_time<Fd: AsFd>(fd: Fd) -> Option<u64> {
    let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::CTIME | StatxFlags::INO).ok()?;
    let dev = (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor);
    let real = unix_to_nt(st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec);
    let map = CHANGE_TIMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.get(&(dev, st.stx_ino)).and_then(|&(set, marker)| (marker == real).then_some(set))
}

/// Sets the ChangeTime reported for a file (NT units); see [`CHANGE_TIMES`].
/// Call it after every other change the same request makes.
pub fn set_change_time<Fd: AsFd>(fd: Fd, t: u64) -> Result<(), NtStatus> {
    let st = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::CTIME | StatxFlags::INO).map_err(NtStatus::from_errno)?;
    let dev = (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor);
    let real = unix_to_nt(st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec);
    let mut map = CHANGE_TIMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if map.len() >= CHANGE_TIMES_MAX {
        map.clear();
    }
    map.insert((dev, st.stx_ino), (t, real));
    Ok(())
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub stat: FileStat,
}

/// Stats one directory entry by name. A symlink is followed only through a
/// beneath-resolved open, so one that leads outside the share (or a name
/// that has gone away since the listing) gives `None`.
pub fn stat_child(root: &ShareRoot, dir_rel: &str, dirfd: BorrowedFd<'_>, name: &str) -> Option<FileStat> {
    let st = match rustix::fs::statx(dirfd, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::TYPE) {
        Ok(s) if (s.stx_mode as u32 & 0o170000) == 0o120000 => {
            let rel = if dir_rel.is_empty() { name.to_string() } else { format!("{dir_rel}/{name}") };
            let fd = root.open_beneath(&rel, OFlags::PATH).ok()?;
            stat_fd(&fd)
        }
        Ok(_) => {
            let fd = rustix::fs::openat(dirfd, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()).ok()?;
            stat_fd(&fd)
        }
        Err(_) => return None,
    };
    st.ok()
}

/// Whether a directory holds nothing but "." and "..", counting names SMB
/// cannot show too (the directory could not be removed with them in it).
pub fn dir_is_empty(dirfd: BorrowedFd<'_>) -> Result<bool, NtStatus> {
    let mut d = rustix::fs::Dir::read_from(dirfd).map_err(NtStatus::from_errno)?;
    while let Some(ent) = d.next() {
        let ent = ent.map_err(NtStatus::from_errno)?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The names in a directory (without "." and ".."), as the file system
/// stores them; names SMB cannot carry are left out.
pub fn list_names(dirfd: BorrowedFd<'_>) -> Result<Vec<String>, NtStatus> {
    let mut d = rustix::fs::Dir::read_from(dirfd).map_err(NtStatus::from_errno)?;
    let mut out = Vec::new();
    while let Some(ent) = d.next() {
        let ent = ent.map_err(NtStatus::from_errno)?;
        let Ok(name) = ent.file_name().to_str() else { continue };
        if name == "." || name == ".." || name.contains('\\') || name.contains(':') {
            continue;
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Lists a directory (without "." and ".."), statting each entry through a
/// beneath-resolved open so a symlink that leads outside the share is left out.
pub fn list_dir(root: &ShareRoot, dir_rel: &str, dirfd: BorrowedFd<'_>) -> Result<Vec<DirEntry>, NtStatus> {
    Ok(list_names(dirfd)?
        .into_iter()
        .filter_map(|name| stat_child(root, dir_rel, dirfd, &name).map(|stat| DirEntry { name, stat }))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_name("").unwrap(), "");
        assert_eq!(validate_name("a\\b\\c.txt").unwrap(), "a/b/c.txt");
        assert_eq!(validate_name("dir\\").unwrap(), "dir");
        assert_eq!(validate_name("f.txt::$DATA").unwrap(), "f.txt");
        assert!(validate_name("..\\x").is_err());
        assert!(validate_name("a\\..\\..\\x").is_err());
        assert!(validate_name("\\etc\\passwd").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("a\\\\b").is_err());
        assert!(validate_name("f.txt:stream").is_err());
        assert!(validate_name("x\u{1}").is_err());
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name("abc.txt"), "ABC.TXT");
        assert_eq!(short_name("README"), "README");
        let s = short_name("torture_search.txt");
        assert!(s.starts_with("TO") && s.ends_with("~1.TXT") && s.len() == 12, "{s}");
        assert!(is_8dot3(&s));
        assert_eq!(short_name("torture_search.txt"), short_name("TORTURE_SEARCH.TXT"));
        assert_ne!(short_name("t000-0.txt.long"), short_name("t001-1.txt.long"));
        assert!(is_8dot3(&short_name("..hidden")) && is_8dot3(&short_name("a b c d e f g h")));
        assert!(!is_8dot3("a.b.c") && !is_8dot3("toolongname.txt") && !is_8dot3("x.long"));
    }

    #[test]
    fn case_insensitive_resolution() {
        let tmp = std::env::temp_dir().join(format!("smbd-vfs-case-{}", std::process::id()));
        let share = tmp.join("share");
        std::fs::create_dir_all(share.join("DirOne/Sub")).unwrap();
        std::fs::write(share.join("DirOne/Sub/File.TXT"), b"x").unwrap();
        std::fs::write(tmp.join("Outside"), b"x").unwrap();
        let root = ShareRoot::open(&share).unwrap();
        assert_eq!(root.resolve_case("dirone/SUB/file.txt"), "DirOne/Sub/File.TXT");
        assert_eq!(root.resolve_case("DirOne/Sub/File.TXT"), "DirOne/Sub/File.TXT");
        assert_eq!(root.resolve_case("DIRONE/new/x"), "DirOne/new/x");
        assert_eq!(root.resolve_case("nothing/here"), "nothing/here");
        std::fs::write(share.join("Straße"), b"z").unwrap();
        assert_eq!(root.resolve_case("STRAßE"), "Straße");
        assert_eq!(root.resolve_case("STRASSE"), "STRASSE");
        std::fs::write(share.join("Éte"), b"z").unwrap();
        assert_eq!(root.resolve_case("éTE"), "Éte");
        let short = short_name("File.TXT");
        assert_eq!(root.resolve_case(&format!("dirone/sub/{}", short.to_lowercase())), "DirOne/Sub/File.TXT");
        let mangled = short_name("DirOne");
        assert_eq!(mangled, "DIRONE");
        std::fs::write(share.join("a long name.text"), b"y").unwrap();
        assert_eq!(root.resolve_case(&short_name("a long name.text")), "a long name.text");
        // Never leads outside the share.
        assert_eq!(root.resolve_case("../outside"), "../outside");
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn case_resolution_through_symlinks_and_deep_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        std::fs::create_dir_all(share.join("Real/Sub")).unwrap();
        std::fs::write(share.join("Real/Sub/Target.txt"), b"x").unwrap();
        std::fs::write(tmp.path().join("Secret"), b"x").unwrap();
        std::os::unix::fs::symlink("Real", share.join("Link")).unwrap();
        std::os::unix::fs::symlink("..", share.join("Up")).unwrap();
        std::os::unix::fs::symlink("Real/Sub/Target.txt", share.join("FileLink")).unwrap();
        let root = ShareRoot::open(&share).unwrap();
        assert_eq!(root.resolve_case("link/SUB/target.TXT"), "Link/Sub/Target.txt");
        assert_eq!(root.resolve_case("LINK/sub"), "Link/Sub");
        assert_eq!(root.resolve_case("filelink"), "FileLink");
        // A symlink out of the share is named, never looked into.
        assert_eq!(root.resolve_case("UP/secret"), "Up/secret");
        // A file in the middle of a path ends the resolution.
        assert_eq!(root.resolve_case("real/sub/target.txt/MORE"), "Real/Sub/Target.txt/MORE");
        assert_eq!(root.resolve_case("real/NEW/deeper"), "Real/NEW/deeper");
        // A 1,500-level path in the wrong case, one lookup per level.
        let mut fd = rustix::fs::open(&share, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..1500 {
            rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
            fd = rustix::fs::openat(&fd, "d", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        let upper = vec!["D"; 1500].join("/");
        assert_eq!(root.resolve_case(&upper), vec!["d"; 1500].join("/"));
        assert_eq!(root.resolve_case(&format!("{upper}/new")), format!("{}/new", vec!["d"; 1500].join("/")));
    }

    #[test]
    fn attributes_through_path_descriptors() {
        let tmp = std::env::temp_dir().join(format!("smbd-vfs-xattr-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("f"), b"x").unwrap();
        let root = ShareRoot::open(&tmp).unwrap();
        let rd = root.open_beneath("f", OFlags::RDONLY).unwrap();
        let fd = root.open_beneath("f", OFlags::PATH).unwrap();
        // Only where the file system keeps user xattrs at all.
        if set_dos_attrs(&rd, ATTR_HIDDEN | ATTR_ARCHIVE).is_ok() && read_dos_attrs(&rd).is_some() {
            assert_eq!(stat_fd(&fd).unwrap().attrs, ATTR_HIDDEN | ATTR_ARCHIVE);
            let listed = list_dir(&root, "", root.fd()).unwrap();
            assert_eq!(listed[0].stat.attrs, ATTR_HIDDEN | ATTR_ARCHIVE);
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn change_time_is_kept_until_the_file_changes() {
        let tmp = std::env::temp_dir().join(format!("smbd-vfs-ctime-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("f"), b"x").unwrap();
        let root = ShareRoot::open(&tmp).unwrap();
        let fd = root.open_beneath("f", OFlags::RDWR).unwrap();
        let want = unix_to_nt(1_600_000_000, 0);
        set_change_time(&fd, want).unwrap();
        assert_eq!(stat_fd(&fd).unwrap().ctime, want);
        // Seen through another descriptor too, then a change ends it.
        let p = root.open_beneath("f", OFlags::PATH).unwrap();
        assert_eq!(stat_fd(&p).unwrap().ctime, want);
        std::thread::sleep(std::time::Duration::from_millis(20));
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).unwrap();
        assert!(stat_fd(&fd).unwrap().ctime > want);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn ea_lists() {
        let eas = vec![
            Ea { name: "EAONE".into(), flags: 0, value: b"VALUE1".to_vec() },
            Ea { name: "SECONDEA".into(), flags: 0x80, value: b"ValueTwo".to_vec() },
        ];
        let wire = encode_full_ea_list(&eas);
        assert_eq!(crate::wire::u32_at(&wire, 0), Some(20));
        assert_eq!(parse_full_ea_list(&wire).unwrap(), eas);
        // Lower-case names come back upper-cased.
        let mut lower = wire.clone();
        lower[8] = b'e';
        assert_eq!(parse_full_ea_list(&lower).unwrap()[0].name, "EAONE");
        // Offsets past the end, missing terminators, bad names are refused.
        let mut past = wire.clone();
        past[0] = 200;
        assert!(parse_full_ea_list(&past).is_err());
        assert!(parse_full_ea_list(&wire[..wire.len() - 1]).is_err());
        let mut unterminated = wire.clone();
        unterminated[13] = b'x';
        assert!(parse_full_ea_list(&unterminated).is_err());
        let mut badname = wire.clone();
        badname[9] = b'*';
        assert!(parse_full_ea_list(&badname).is_err());
        assert!(parse_full_ea_list(&[]).is_err());

        let tmp = std::env::temp_dir().join(format!("smbd-vfs-ea-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("f"), b"x").unwrap();
        let root = ShareRoot::open(&tmp).unwrap();
        let fd = root.open_beneath("f", OFlags::PATH).unwrap();
        if set_ea(&fd, &eas[0]).is_ok() {
            set_ea(&fd, &eas[1]).unwrap();
            assert_eq!(list_eas(&fd), eas);
            assert_eq!(stat_fd(&fd).unwrap().ea_size, wire.len() as u32);
            set_ea(&fd, &Ea { name: "eaone".into(), flags: 0, value: vec![] }).unwrap();
            assert_eq!(list_eas(&fd), eas[1..]);
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn ea_list_fit_is_the_encoded_size() {
        let eas: Vec<Ea> = (0..40).map(|i| Ea { name: "N".repeat(1 + i % 7), flags: 0, value: vec![0; i * 3 % 11] }).collect();
        for limit in 0..400 {
            let fit = full_ea_list_fit(&eas, limit);
            assert!(encode_full_ea_list(&eas[..fit]).len() <= limit || fit == 0, "{limit}");
            if fit < eas.len() {
                assert!(encode_full_ea_list(&eas[..fit + 1]).len() > limit, "{limit}");
            }
        }
        assert_eq!(full_ea_list_fit(&eas, usize::MAX), eas.len());
    }

    #[test]
    fn time_conversion() {
        assert_eq!(unix_to_nt(0, 0), 116_444_736_000_000_000);
        assert_eq!(nt_to_unix(unix_to_nt(1_700_000_000, 123_456_700)), (1_700_000_000, 123_456_700));
    }

    #[test]
    fn beneath_refuses_escapes() {
        let tmp = std::env::temp_dir().join(format!("smbd-vfs-{}", std::process::id()));
        let share = tmp.join("share");
        std::fs::create_dir_all(&share).unwrap();
        std::os::unix::fs::symlink("/etc", share.join("etc")).unwrap();
        std::os::unix::fs::symlink("../", share.join("up")).unwrap();
        std::fs::write(tmp.join("secret"), b"x").unwrap();
        let root = ShareRoot::open(&share).unwrap();
        assert!(root.open_beneath("etc/passwd", OFlags::RDONLY).is_err());
        assert!(root.open_beneath("up/secret", OFlags::RDONLY).is_err());
        assert!(root.lookup("etc/hostname").is_err() || root.lookup("etc/hostname").unwrap().is_none());
        let listed = list_dir(&root, "", root.fd()).unwrap();
        assert!(listed.iter().all(|e| e.name != "etc" && e.name != "up"));
        root.mkdir("d").unwrap();
        assert!(dir_is_empty(root.open_beneath("d", OFlags::RDONLY | OFlags::DIRECTORY).unwrap().as_fd()).unwrap());
        let f = root.create_file("d/f").unwrap();
        assert!(!dir_is_empty(root.open_beneath("d", OFlags::RDONLY | OFlags::DIRECTORY).unwrap().as_fd()).unwrap());
        drop(f);
        assert!(root.rename("d/f", "etc/x", false).is_err());
        root.rename("d/f", "d/g", false).unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
