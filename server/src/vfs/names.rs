//! Case-insensitive name lookup in large directories.
//!
//! Windows names are case-insensitive and Linux ones are not: a name that
//! does not exist with the client's spelling has to be looked for among all
//! the directory's names. Reading a directory of n entries for each such
//! lookup makes a listing followed by a lookup per entry cost n², so for a
//! directory of at least [`INDEX_MIN_ENTRIES`] entries the folded names are
//! read once into an index, kept per directory (device, inode) and trusted
//! while the directory's mtime and ctime stay what they were.
//!
//! File timestamps come from a coarse clock (a tick of a few ms), so a change
//! made in the same tick as the read could leave them as they were. An index
//! is therefore kept only for a directory whose ctime was at least
//! [`SETTLED`] older than the moment its stat was taken (git's "racy clean"
//! rule): any later change gets a ctime at or after that moment, which the
//! next lookup sees as different. The stat is taken before the names are
//! read, so a change during the read is seen too. A directory that is being
//! changed right now is read on every lookup, as before.

use super::{fold_case, list_names, short_name};
use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, StatxFlags};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Directories smaller than this are simply read on each lookup.
pub const INDEX_MIN_ENTRIES: usize = 256;
/// How many directory indexes are kept (the least recently built goes first).
const INDEX_MAX_DIRS: usize = 16;
/// How long a directory must have been left alone before its index is kept.
const SETTLED: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime: (i64, u32),
    ctime: (i64, u32),
}

struct Index {
    stamp: Stamp,
    built: u64,
    names: Vec<String>,
    /// Folded name → the stored name (the first in sorted order on a tie).
    by_fold: HashMap<String, String>,
    /// 8.3 short name → stored name, built on the first lookup of a name with '~'.
    by_short: OnceLock<HashMap<String, String>>,
}

fn keep_first(map: &mut HashMap<String, String>, key: String, name: &str) {
    match map.get_mut(&key) {
        Some(v) if v.as_str() <= name => {}
        Some(v) => *v = name.to_string(),
        None => {
            map.insert(key, name.to_string());
        }
    }
}

impl Index {
    fn new(stamp: Stamp, built: u64, names: Vec<String>) -> Index {
        let mut by_fold = HashMap::with_capacity(names.len());
        for n in &names {
            keep_first(&mut by_fold, fold_case(n), n);
        }
        Index { stamp, built, names, by_fold, by_short: OnceLock::new() }
    }

    /// The stored name equal to `name` ignoring case, or whose short name is
    /// `name`; the first in sorted order when several are.
    fn find(&self, name: &str) -> Option<String> {
        let mut best = self.by_fold.get(&fold_case(name)).cloned();
        if name.contains('~') {
            let shorts = self.by_short.get_or_init(|| {
                let mut m = HashMap::new();
                for n in &self.names {
                    keep_first(&mut m, short_name(n), n);
                }
                m
            });
            if let Some(s) = shorts.get(&name.to_ascii_uppercase()) {
                if best.as_ref().is_none_or(|b| s < b) {
                    best = Some(s.clone());
                }
            }
        }
        best
    }
}

static INDEXES: LazyLock<Mutex<HashMap<(u64, u64), Arc<Index>>>> = LazyLock::new(Default::default);
static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn settled(ctime: (i64, u32), now: SystemTime) -> bool {
    let Ok(now) = now.duration_since(UNIX_EPOCH) else { return false };
    let Ok(secs) = u64::try_from(ctime.0) else { return false };
    Duration::new(secs, ctime.1.min(999_999_999)) + SETTLED <= now
}

/// The stored name in the directory `dir` that equals `name` ignoring case
/// (or whose short name `name` is): one directory read, then an index lookup
/// while the directory stays unchanged (see the module comment).
pub fn find_ignoring_case(dir: BorrowedFd<'_>, name: &str) -> Option<String> {
    let now = SystemTime::now();
    let st = rustix::fs::statx(dir, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS).ok()?;
    let key = ((u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor), st.stx_ino);
    let stamp = Stamp { mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec), ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec) };
    let cached = INDEXES.lock().unwrap_or_else(PoisonError::into_inner).get(&key).filter(|ix| ix.stamp == stamp).cloned();
    if let Some(ix) = cached {
        return ix.find(name);
    }
    let names = list_names(dir).ok()?;
    let big = names.len() >= INDEX_MIN_ENTRIES;
    let ix = Index::new(stamp, BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed), names);
    let found = ix.find(name);
    if big && settled(stamp.ctime, now) && settled(stamp.mtime, now) {
        let mut all = INDEXES.lock().unwrap_or_else(PoisonError::into_inner);
        if all.len() >= INDEX_MAX_DIRS && !all.contains_key(&key) {
            if let Some(oldest) = all.iter().min_by_key(|(_, ix)| ix.built).map(|(k, _)| *k) {
                all.remove(&oldest);
            }
        }
        all.insert(key, Arc::new(ix));
    }
    found
}

/// How many directory indexes are held (for tests).
#[cfg(test)]
fn held(key: (u64, u64)) -> bool {
    INDEXES.lock().unwrap_or_else(PoisonError::into_inner).contains_key(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    fn key_of(p: &std::path::Path) -> (u64, u64) {
        let st = rustix::fs::statx(rustix::fs::CWD, p, AtFlags::empty(), StatxFlags::INO).unwrap();
        ((u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor), st.stx_ino)
    }

    #[test]
    fn index_is_used_while_the_directory_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("big");
        std::fs::create_dir(&d).unwrap();
        for i in 0..INDEX_MIN_ENTRIES + 10 {
            std::fs::write(d.join(format!("File-{i:04}.txt")), b"").unwrap();
        }
        std::fs::write(d.join("a long name.text"), b"").unwrap();
        let fd = rustix::fs::open(&d, rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY, rustix::fs::Mode::empty()).unwrap();
        // Just changed: answered, but not indexed.
        assert_eq!(find_ignoring_case(fd.as_fd(), "FILE-0007.TXT").as_deref(), Some("File-0007.txt"));
        assert!(!held(key_of(&d)));
        std::thread::sleep(SETTLED + Duration::from_millis(50));
        assert_eq!(find_ignoring_case(fd.as_fd(), "file-0008.TXT").as_deref(), Some("File-0008.txt"));
        assert!(held(key_of(&d)));
        assert_eq!(find_ignoring_case(fd.as_fd(), "nothing"), None);
        assert_eq!(find_ignoring_case(fd.as_fd(), &short_name("a long name.text").to_lowercase()).as_deref(), Some("a long name.text"));
        // A change to the directory is seen at once, however soon it comes.
        std::fs::write(d.join("NEW.txt"), b"").unwrap();
        assert_eq!(find_ignoring_case(fd.as_fd(), "new.TXT").as_deref(), Some("NEW.txt"));
        std::fs::remove_file(d.join("File-0009.txt")).unwrap();
        assert_eq!(find_ignoring_case(fd.as_fd(), "FILE-0009.TXT"), None);
        // Two names equal but for case: the first in sorted order.
        std::fs::write(d.join("file-0010.txt"), b"").unwrap();
        assert_eq!(find_ignoring_case(fd.as_fd(), "FILE-0010.TXT").as_deref(), Some("File-0010.txt"));
    }
}
