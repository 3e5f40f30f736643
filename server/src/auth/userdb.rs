//! Local accounts: names with NT hashes (never clear text), looked up
//! case-insensitively, and the file they are kept in.
//!
//! The file is in Samba's smbpasswd format, one account a line:
//!
//! ```text
//! name:uid:LMHASH:NTHASH:[U          ]:LCT-5F5E0F00:
//! ```
//!
//! so that a Samba user moves over one to one: `pdbedit -L -w` prints this
//! format, and an smbpasswd file can be read as it is. We never store an LM
//! hash (32 `X`s). The `uid` is the Unix account the user's file operations
//! run as (identity.rs). Account flags: `U` a user, `D` disabled (refused at
//! logon); other flags are kept as they were read.
//!
//! Updates are atomic (a temporary file in the same directory, fsynced, then
//! renamed over the old one) and serialised by an exclusive lock on
//! `<file>.lock`; the file is mode 0600. A running server re-reads it when its
//! inode, size or mtime changes ([`UserSource::current`], checked at every
//! logon), so `smbdirect user add` takes effect without a restart.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use zeroize::Zeroize;

use super::ntlm_crypto::nt_hash;

/// One account.
#[derive(Clone)]
pub struct UserEntry {
    name: String,
    nt_hash: [u8; 16],
    /// The Unix uid the account's file operations run as; `None` for users
    /// given in clear text on the command line or in smb.conf (mapped by
    /// name to a Unix account, see identity.rs).
    uid: Option<u32>,
    /// The account flags between the brackets (smbpasswd), e.g. "U".
    flags: String,
    /// Last change time (Unix seconds).
    lct: u64,
}

impl UserEntry {
    /// The name as it was added.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// MD4(UTF-16LE(password)).
    pub fn nt_hash(&self) -> &[u8; 16] {
        &self.nt_hash
    }

    pub fn uid(&self) -> Option<u32> {
        self.uid
    }

    /// The account is disabled (flag `D`): it cannot log on.
    pub fn disabled(&self) -> bool {
        self.flags.contains('D')
    }

    /// Last password change (Unix seconds).
    pub fn last_change(&self) -> u64 {
        self.lct
    }
}

impl std::fmt::Debug for UserEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserEntry")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl Drop for UserEntry {
    fn drop(&mut self) {
        self.nt_hash.zeroize();
    }
}

/// Why the user file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{path}:{line}: {msg}")]
    Syntax { path: String, line: usize, msg: String },
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path, err: std::io::Error) -> UserDbError {
    UserDbError::Io { path: path.display().to_string(), err }
}

/// The accounts a server accepts.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: HashMap<String, UserEntry>,
}

fn key(name: &str) -> String {
    name.to_lowercase()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A name the file can hold: not empty, no `:` (the field separator), no
/// control characters, no leading `#` (a comment), and no characters Windows
/// forbids in account names.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['#', '+', '-'])
        && !name.chars().any(|c| c.is_control() || "\":/\\[]|<>+=;,?*@".contains(c))
}

fn hex_hash(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 || !s.is_ascii() {
        return None;
    }
    let mut h = [0u8; 16];
    for (i, b) in h.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(h)
}

impl UserDb {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an account from its password.
    pub fn add_password(&mut self, name: &str, password: &str) {
        self.add_nt_hash(name, nt_hash(password));
    }

    /// Adds (or replaces) an account from its NT hash.
    pub fn add_nt_hash(&mut self, name: &str, hash: [u8; 16]) {
        self.insert(UserEntry { name: name.to_owned(), nt_hash: hash, uid: None, flags: "U".into(), lct: now_secs() });
    }

    /// Adds (or replaces) an account with its Unix uid.
    pub fn add_user(&mut self, name: &str, hash: [u8; 16], uid: u32) {
        self.insert(UserEntry { name: name.to_owned(), nt_hash: hash, uid: Some(uid), flags: "U".into(), lct: now_secs() });
    }

    /// Adds (or replaces) an account as it is (import).
    pub fn add_entry(&mut self, e: UserEntry) {
        self.insert(e);
    }

    fn insert(&mut self, e: UserEntry) {
        self.users.insert(key(&e.name), e);
    }

    /// Sets an account's password hash; false if there is no such account.
    pub fn set_nt_hash(&mut self, name: &str, hash: [u8; 16]) -> bool {
        match self.users.get_mut(&key(name)) {
            Some(e) => {
                e.nt_hash = hash;
                e.lct = now_secs();
                true
            }
            None => false,
        }
    }

    /// Removes an account; false if there was none.
    pub fn remove(&mut self, name: &str) -> bool {
        self.users.remove(&key(name)).is_some()
    }

    /// Finds an account, ignoring case.
    pub fn lookup(&self, name: &str) -> Option<&UserEntry> {
        self.users.get(&key(name))
    }

    /// The accounts, sorted by name.
    pub fn entries(&self) -> Vec<&UserEntry> {
        let mut v: Vec<&UserEntry> = self.users.values().collect();
        v.sort_by(|a, b| key(&a.name).cmp(&key(&b.name)));
        v
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Parses smbpasswd text (`pdbedit -L -w` output, Samba's smbpasswd
    /// file, or ours). Blank lines and `#` comments are skipped.
    pub fn parse(text: &str, path: &str) -> Result<UserDb, UserDbError> {
        let mut db = UserDb::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |msg: &str| UserDbError::Syntax { path: path.into(), line: i + 1, msg: msg.into() };
            let t = line.trim_end_matches('\r');
            if t.trim().is_empty() || t.starts_with('#') {
                continue;
            }
            let f: Vec<&str> = t.split(':').collect();
            if f.len() < 5 {
                return Err(bad("expected name:uid:LMHASH:NTHASH:[flags]:LCT-...:"));
            }
            let name = f[0];
            if !valid_user_name(name) {
                return Err(bad("bad user name"));
            }
            let uid: u32 = f[1].parse().map_err(|_| bad("bad uid"))?;
            let flags = f[4].trim().strip_prefix('[').and_then(|s| s.strip_suffix(']')).ok_or_else(|| bad("bad account flags"))?;
            let flags: String = flags.chars().filter(|c| c.is_ascii_alphabetic()).collect();
            if flags.contains('N') {
                // "No password required": we have no hash to check.
                tracing::warn!("{path}:{}: account {name:?} has no password (flag N): skipped", i + 1);
                continue;
            }
            let hash = hex_hash(f[3]).ok_or_else(|| bad("bad NT hash (want 32 hex digits)"))?;
            let lct = f.get(5).and_then(|s| s.strip_prefix("LCT-")).and_then(|h| u64::from_str_radix(h, 16).ok()).unwrap_or(0);
            if db.lookup(name).is_some() {
                return Err(bad("user listed twice"));
            }
            db.insert(UserEntry { name: name.to_owned(), nt_hash: hash, uid: Some(uid), flags, lct });
        }
        Ok(db)
    }

    /// The smbpasswd text of the accounts that have a uid (sorted by name).
    pub fn to_text(&self) -> String {
        let mut s = String::from("# smbdirect users (Samba smbpasswd format: name:uid:LM:NT:[flags]:LCT-time:); edit with `smbdirect user`\n");
        for e in self.entries() {
            let Some(uid) = e.uid else { continue };
            let hex: String = e.nt_hash.iter().map(|b| format!("{b:02X}")).collect();
            s.push_str(&format!("{}:{}:{}:{}:[{:<11}]:LCT-{:08X}:\n", e.name, uid, "X".repeat(32), hex, e.flags, e.lct));
        }
        s
    }

    /// Reads the user file; a missing file is an empty database.
    pub fn load(path: &Path) -> Result<UserDb, UserDbError> {
        match std::fs::read_to_string(path) {
            Ok(t) => UserDb::parse(&t, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserDb::new()),
            Err(e) => Err(io_err(path, e)),
        }
    }

    /// Writes the user file atomically (temporary file, fsync, rename), mode
    /// 0600, creating its directory (0700) if missing.
    pub fn save(&self, path: &Path) -> Result<(), UserDbError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_err(dir, e))?;
        let name = path.file_name().ok_or_else(|| UserDbError::Invalid(format!("{} is not a file name", path.display())))?;
        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let _ = std::fs::remove_file(&tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(self.to_text().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename itself reaches the disk with the directory.
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(path, e)
        })
    }

    /// Reads, changes and writes the user file under its lock, so two
    /// `smbdirect user` commands at once do not lose an update.
    pub fn update<T>(path: &Path, f: impl FnOnce(&mut UserDb) -> Result<T, UserDbError>) -> Result<T, UserDbError> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| io_err(dir, e))?;
        let mut lock_name = path.as_os_str().to_os_string();
        lock_name.push(".lock");
        let lock_path = PathBuf::from(lock_name);
        let lock = std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(&lock_path).map_err(|e| io_err(&lock_path, e))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| io_err(&lock_path, e.into()))?;
        let mut db = UserDb::load(path)?;
        let r = f(&mut db)?;
        db.save(path)?;
        Ok(r)
    }
}

/// Identifies one version of the user file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// The accounts a running server accepts: those in its user file (re-read
/// when the file changes) plus those given in clear text in its flags or
/// smb.conf, which win over the file's.
#[derive(Debug)]
pub struct UserSource {
    path: Option<PathBuf>,
    fixed: UserDb,
    cached: Mutex<(Option<FileVersion>, Arc<UserDb>)>,
}

impl UserSource {
    /// Accounts from `path` (if any) and the fixed `fixed`.
    pub fn new(path: Option<PathBuf>, fixed: UserDb) -> UserSource {
        let s = UserSource { path, cached: Mutex::new((None, Arc::new(fixed.clone()))), fixed };
        let _ = s.current();
        s
    }

    /// Only the given accounts (tests, tools).
    pub fn fixed(db: UserDb) -> UserSource {
        UserSource::new(None, db)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The accounts now: re-reads the file if it changed since the last
    /// call. A file that cannot be read keeps the accounts last read (and
    /// says so in the log).
    pub fn current(&self) -> Arc<UserDb> {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.path else { return c.1.clone() };
        let version = match std::fs::metadata(path) {
            Ok(m) => Some(FileVersion { dev: m.dev(), ino: m.ino(), size: m.size(), mtime: m.mtime(), mtime_nsec: m.mtime_nsec() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!("user file {}: {e}; keeping the accounts last read", path.display());
                return c.1.clone();
            }
        };
        // (The cache starts as the fixed accounts and no file.)
        if version == c.0 {
            return c.1.clone();
        }
        let mut db = match version {
            Some(_) => match UserDb::load(path) {
                Ok(db) => db,
                Err(e) => {
                    tracing::warn!("user file: {e}; keeping the accounts last read");
                    return c.1.clone();
                }
            },
            None => UserDb::new(),
        };
        if version.is_some() {
            tracing::info!("user file {}: {} account(s)", path.display(), db.len());
        }
        for e in self.fixed.users.values() {
            db.insert(e.clone());
        }
        *c = (version, Arc::new(db));
        c.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case() {
        let mut db = UserDb::new();
        db.add_password("Alice", "pw");
        db.add_nt_hash("ÉRIC", [7; 16]);
        assert_eq!(db.lookup("aLiCe").map(UserEntry::name), Some("Alice"));
        assert_eq!(db.lookup("éric").map(|e| *e.nt_hash()), Some([7; 16]));
        assert!(db.lookup("bob").is_none());
        assert_eq!(
            db.lookup("ALICE").map(|e| *e.nt_hash()),
            Some(nt_hash("pw"))
        );
        assert_eq!(db.len(), 2);
    }

    // A line as `pdbedit -L -w` prints it (Samba 4.x), for password "secret".
    const PDBEDIT: &str = "bob:1001:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:878D8014606CDA29677A44EFA1353FC7:[U          ]:LCT-65A1B2C3:\n";

    #[test]
    fn reads_samba_smbpasswd_lines() {
        let text = format!("# comment\n\n{PDBEDIT}carol:1002:XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX:0CB6948805F797BF2A82807973B89537:[DU         ]:LCT-00000001:\n");
        let db = UserDb::parse(&text, "t").unwrap();
        let bob = db.lookup("BOB").unwrap();
        assert_eq!(bob.uid(), Some(1001));
        assert_eq!(*bob.nt_hash(), nt_hash("secret"));
        assert!(!bob.disabled());
        assert_eq!(bob.last_change(), 0x65A1_B2C3);
        assert!(db.lookup("carol").unwrap().disabled());
        // What we write reads back the same, and keeps Samba's layout.
        let again = UserDb::parse(&db.to_text(), "t").unwrap();
        assert_eq!(again.lookup("bob").map(|e| (e.uid(), *e.nt_hash())), Some((Some(1001), nt_hash("secret"))));
        assert!(db.to_text().contains(PDBEDIT.trim_end()), "{}", db.to_text());
    }

    #[test]
    fn refuses_bad_lines_with_their_number() {
        for bad in [
            "bob:x:XX:878D8014606CDA29677A44EFA1353FC7:[U]:\n",
            "bob:1:XX:878D8014606CDA29677A44EFA1353FC:[U]:\n",
            "bob:1:XX:878D8014606CDA29677A44EFA1353FC7:U:\n",
            "bob:1\n",
            ":1:XX:878D8014606CDA29677A44EFA1353FC7:[U]:\n",
        ] {
            let e = UserDb::parse(&format!("# x\n{bad}"), "f").unwrap_err();
            assert!(e.to_string().starts_with("f:2:"), "{bad}: {e}");
        }
        let twice = format!("{PDBEDIT}{}", PDBEDIT.replace("bob", "BOB"));
        assert!(UserDb::parse(&twice, "f").is_err());
        // No password (flag N): skipped, not an account without a password.
        let n = "dave:5:XX:NO PASSWORDXXXXXXXXXXXXXXXXXXXXX:[NU         ]:LCT-0:\n";
        assert!(UserDb::parse(n, "f").unwrap().is_empty());
    }

    #[test]
    fn names() {
        assert!(valid_user_name("alice") && valid_user_name("Émile.x_y-1"));
        for n in ["", "a:b", "#x", "a\nb", "a/b", "a\\b", "a@b"] {
            assert!(!valid_user_name(n), "{n:?}");
        }
    }

    #[test]
    fn saves_atomically_private_and_reloads_on_change() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/smbpasswd");
        let mut fixed = UserDb::new();
        fixed.add_password("flag", "pw");
        let src = UserSource::new(Some(path.clone()), fixed);
        assert_eq!(src.current().len(), 1);
        UserDb::update(&path, |db| {
            db.add_user("alice", nt_hash("a"), 1000);
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let now = src.current();
        assert_eq!(now.lookup("alice").and_then(UserEntry::uid), Some(1000));
        assert!(now.lookup("flag").is_some(), "clear-text users stay");
        // Same file: same accounts, not re-read.
        assert!(Arc::ptr_eq(&now, &src.current()));
        UserDb::update(&path, |db| {
            assert!(db.set_nt_hash("ALICE", nt_hash("b")));
            db.add_user("bob", nt_hash("c"), 1001);
            Ok(())
        })
        .unwrap();
        let now = src.current();
        assert_eq!(now.lookup("alice").map(|e| *e.nt_hash()), Some(nt_hash("b")));
        assert!(now.lookup("bob").is_some());
        UserDb::update(&path, |db| Ok(assert!(db.remove("bob")))).unwrap();
        assert!(src.current().lookup("bob").is_none());
        // No temporary file is left behind; the clear text is nowhere.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!std::fs::read_to_string(&path).unwrap().contains(":a:"));
        // A broken file keeps what was read.
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(src.current().lookup("alice").is_some());
        // A file that goes away takes its accounts with it.
        std::fs::remove_file(&path).unwrap();
        let now = src.current();
        assert!(now.lookup("alice").is_none() && now.lookup("flag").is_some());
    }
}
