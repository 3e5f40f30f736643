//! Server-wide state and the objects a client builds up, each with an explicit
//! lifetime (as in Samba's smbXsrv): a `Session` lives from SESSION_SETUP to
//! LOGOFF (or the last channel's end), a `Tree` from TREE_CONNECT to
//! TREE_DISCONNECT, an `Open` from CREATE to CLOSE. Connections live in
//! `conn.rs`; they hold references to sessions, never the other way round.

use crate::config::{ServerConfig, Setting, ShareConfig};
use crate::crypto;
use crate::vfs::{FileStat, ShareRoot};
use crate::wire::status::NtStatus;
use rustix::fd::OwnedFd;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Locks a mutex, recovering from poisoning: a panic in one connection's
/// handler must not take the whole server with it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Share {
    pub cfg: ShareConfig,
    pub root: Option<ShareRoot>,
    /// Live tree connects to this share (for its `max connections`).
    pub connections: AtomicUsize,
}

impl Share {
    pub fn is_ipc(&self) -> bool {
        self.root.is_none()
    }

    /// Counts one more tree connect unless the share's `max connections`
    /// (0 = none) is reached; the `Tree` gives it back when dropped.
    pub fn claim_connection(&self) -> bool {
        let max = self.cfg.max_connections;
        self.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (max == 0 || n < max).then_some(n + 1)).is_ok()
    }
}

/// Who has a file open, for share-mode checks across all sessions (MS-FSA 2.1.5.1.2).
#[derive(Default)]
pub struct FileEntry {
    pub opens: Vec<(u64, u32, u32)>, // (open key, granted access, share access)
    pub delete_pending: bool,
}

pub struct Server {
    pub cfg: ServerConfig,
    pub users: Arc<crate::auth::UserDb>,
    pub server_guid: [u8; 16],
    pub start_time: u64,
    pub shares: Vec<Arc<Share>>,
    pub ipc: Arc<Share>,
    pub sessions: Mutex<HashMap<u64, Arc<Session>>>,
    pub files: Mutex<HashMap<(u64, u64), FileEntry>>,
    pub locks: Mutex<HashMap<(u64, u64), Vec<ByteLock>>>,
    /// Signalled whenever a byte-range lock goes away, for blocked LOCK requests.
    pub locks_changed: std::sync::Condvar,
    /// Keys the tags of server-side copy resume keys (see handlers/ioctl.rs).
    pub resume_secret: [u8; 32],
    /// Live connections, in all and per client address (listener.rs).
    pub conn_slots: Arc<crate::listener::ConnectionSlots>,
    /// Unfinished SESSION_SETUP exchanges on all connections.
    pub pending_setups: Arc<AtomicUsize>,
    next_id: AtomicU64,
}

impl Server {
    /// Whether READ/WRITE of `[offset, offset+len)` by `owner` runs into a
    /// byte-range lock (MS-FSA 2.1.4.10): reads are stopped by others'
    /// exclusive locks, writes by others' exclusive locks and any shared lock.
    pub fn io_lock_conflict(&self, key: (u64, u64), owner: u64, offset: u64, len: u64, write: bool) -> bool {
        if len == 0 {
            return false;
        }
        let locks = lock(&self.locks);
        let Some(l) = locks.get(&key) else { return false };
        let end = offset.saturating_add(len - 1);
        l.iter().any(|b| {
            let overlap = b.length != 0 && b.offset <= end && offset <= b.offset.saturating_add(b.length - 1);
            overlap && ((b.exclusive && b.owner != owner) || (write && !b.exclusive))
        })
    }

    pub fn new(cfg: ServerConfig) -> std::io::Result<Arc<Server>> {
        let mut users = crate::auth::UserDb::new();
        for (u, p) in &cfg.users {
            users.add_password(u, p);
        }
        let users = Arc::new(users);
        let mut shares = Vec::new();
        for s in &cfg.shares {
            std::fs::create_dir_all(&s.path)?;
            let root = ShareRoot::open(&s.path).map_err(|e| std::io::Error::new(e.kind(), format!("share [{}] at {}: {e}", s.name, s.path.display())))?;
            shares.push(Arc::new(Share { cfg: s.clone(), root: Some(root), connections: AtomicUsize::new(0) }));
        }
        let mut ipc_cfg = ShareConfig::new("IPC$", "");
        ipc_cfg.comment = "IPC Service".into();
        let mut guid = [0u8; 16];
        getrandom::fill(&mut guid).map_err(|e| std::io::Error::other(e.to_string()))?;
        // Every worker answers with the supervisor's GUID.
        if let Some(g) = cfg.procs.server_guid {
            guid = g;
        }
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut resume_secret = [0u8; 32];
        getrandom::fill(&mut resume_secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Arc::new(Server {
            cfg,
            users,
            server_guid: guid,
            start_time: crate::vfs::now_nt(),
            shares,
            ipc: Arc::new(Share { cfg: ipc_cfg, root: None, connections: AtomicUsize::new(0) }),
            sessions: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            locks_changed: std::sync::Condvar::new(),
            resume_secret,
            conn_slots: Default::default(),
            pending_setups: Default::default(),
            next_id: AtomicU64::new((u64::from_le_bytes(seed) & 0x0000_FFFF_0000_0000) | 1),
        }))
    }

    pub fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn share(&self, name: &str) -> Option<Arc<Share>> {
        if name.eq_ignore_ascii_case("IPC$") {
            return Some(self.ipc.clone());
        }
        self.shares.iter().find(|s| s.cfg.name.eq_ignore_ascii_case(name)).cloned()
    }

    pub fn session(&self, id: u64) -> Option<Arc<Session>> {
        lock(&self.sessions).get(&id).cloned()
    }

    pub fn encrypt_required(&self, share: &ShareConfig) -> bool {
        self.cfg.encrypt == Setting::Required || share.encrypt == Setting::Required
    }
}

/// A byte-range lock (MS-FSA 2.1.5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteLock {
    pub owner: u64,
    pub offset: u64,
    pub length: u64,
    pub exclusive: bool,
}

impl ByteLock {
    fn overlaps(&self, o: &ByteLock) -> bool {
        if self.length == 0 || o.length == 0 {
            // Zero-length locks conflict only when inside another range.
            let (z, r) = if self.length == 0 { (self, o) } else { (o, self) };
            return r.length != 0 && z.offset > r.offset && z.offset - r.offset < r.length;
        }
        let a_end = self.offset.saturating_add(self.length - 1);
        let b_end = o.offset.saturating_add(o.length - 1);
        self.offset <= b_end && o.offset <= a_end
    }

    /// Whether an existing lock (`self`) stops `new` (MS-FSA 2.1.5.7): an
    /// exclusive request conflicts with every overlapping lock, the
    /// requester's own included; a shared request only with another open's
    /// exclusive lock (so an open may stack shared locks over its own
    /// exclusive one).
    pub fn conflicts(&self, new: &ByteLock) -> bool {
        if !self.overlaps(new) {
            return false;
        }
        new.exclusive || (self.exclusive && self.owner != new.owner)
    }
}

#[cfg(test)]
mod lock_tests {
    use super::ByteLock;

    fn l(owner: u64, offset: u64, length: u64, exclusive: bool) -> ByteLock {
        ByteLock { owner, offset, length, exclusive }
    }

    #[test]
    fn conflicts() {
        // Stacking: shared over one's own exclusive is fine, exclusive over it is not.
        assert!(!l(1, 10, 10, true).conflicts(&l(1, 10, 10, false)));
        assert!(l(1, 10, 10, true).conflicts(&l(1, 10, 10, true)));
        assert!(l(1, 10, 10, true).conflicts(&l(2, 15, 1, false)));
        assert!(!l(1, 10, 10, false).conflicts(&l(2, 15, 1, false)));
        assert!(l(1, 10, 10, false).conflicts(&l(2, 15, 1, true)));
        // No overlap, and zero-length locks at an edge.
        assert!(!l(1, 10, 10, true).conflicts(&l(2, 20, 5, true)));
        assert!(!l(1, 0, 0, true).conflicts(&l(2, 0, 0, true)));
        assert!(!l(1, 10, 10, true).conflicts(&l(2, 10, 0, true)));
        assert!(l(1, 10, 10, true).conflicts(&l(2, 11, 0, true)));
        // Ranges reaching the end of the 64-bit space do not overflow.
        assert!(l(1, u64::MAX - 1, 2, true).conflicts(&l(2, u64::MAX, 1, true)));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    InProgress,
    Valid,
    Expired,
}

/// The keys a session uses once authenticated.
pub struct SessionKeys {
    pub signer: Option<crypto::Signer>,
    pub sealer: Option<crypto::Sealer>,
    pub opener: Option<crypto::Opener>,
    pub application_key: Vec<u8>,
    pub session_key: Vec<u8>,
}

pub struct Session {
    pub id: u64,
    pub dialect: u16,
    pub state: Mutex<SessionState>,
    pub identity: Mutex<Option<crate::auth::Identity>>,
    pub keys: Mutex<Option<Arc<SessionKeys>>>,
    pub signing_required: Mutex<bool>,
    pub encrypt_data: Mutex<bool>,
    pub trees: Mutex<HashMap<u32, Arc<Tree>>>,
    pub opens: Mutex<HashMap<u64, Arc<Open>>>,
    next_tree: AtomicU32,
}

impl Session {
    pub fn new(id: u64, dialect: u16) -> Session {
        Session {
            id,
            dialect,
            state: Mutex::new(SessionState::InProgress),
            identity: Mutex::new(None),
            keys: Mutex::new(None),
            signing_required: Mutex::new(false),
            encrypt_data: Mutex::new(false),
            trees: Mutex::new(HashMap::new()),
            opens: Mutex::new(HashMap::new()),
            next_tree: AtomicU32::new(1),
        }
    }

    pub fn keys(&self) -> Option<Arc<SessionKeys>> {
        lock(&self.keys).clone()
    }

    pub fn is_valid(&self) -> bool {
        *lock(&self.state) == SessionState::Valid
    }

    pub fn user_name(&self) -> String {
        lock(&self.identity).as_ref().map(|i| i.user.clone()).unwrap_or_default()
    }

    pub fn new_tree_id(&self) -> u32 {
        self.next_tree.fetch_add(1, Ordering::Relaxed)
    }

    pub fn tree(&self, id: u32) -> Option<Arc<Tree>> {
        lock(&self.trees).get(&id).cloned()
    }

    pub fn open(&self, volatile: u64) -> Option<Arc<Open>> {
        lock(&self.opens).get(&volatile).cloned()
    }

    /// Ends the session: closes every open (honouring delete-on-close) and tree.
    pub fn teardown(&self, server: &Server) {
        *lock(&self.state) = SessionState::Expired;
        let opens: Vec<Arc<Open>> = lock(&self.opens).drain().map(|(_, o)| o).collect();
        for o in opens {
            o.close(server);
        }
        lock(&self.trees).clear();
    }
}

/// A tree connect. Made only after [`Share::claim_connection`] succeeded:
/// dropping it gives the share's connection count back.
pub struct Tree {
    pub id: u32,
    pub share: Arc<Share>,
    pub read_only: bool,
    pub encrypt: bool,
    pub maximal_access: u32,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = self.share.connections.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

pub enum OpenKind {
    File,
    Dir(Mutex<DirCursor>),
    Pipe(Mutex<crate::ipc::Pipe>),
}

#[derive(Default)]
pub struct DirCursor {
    pub entries: Option<Vec<crate::vfs::DirEntry>>,
    pub pos: usize,
    pub pattern: Option<String>,
}

pub struct Open {
    pub volatile_id: u64,
    pub persistent_id: u64,
    pub tree_id: u32,
    pub share: Arc<Share>,
    pub fd: Option<OwnedFd>,
    pub path: Mutex<String>,
    pub kind: OpenKind,
    pub access: u32,
    pub share_access: u32,
    pub create_options: u32,
    pub file_key: Option<(u64, u64)>,
    pub delete_on_close: Mutex<bool>,
    pub position: Mutex<u64>,
    pub mode: u32,
    pub notify: Mutex<Option<Arc<crate::handlers::notify::Watch>>>,
    closed: Mutex<bool>,
}

impl Open {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        volatile_id: u64,
        tree_id: u32,
        share: Arc<Share>,
        fd: Option<OwnedFd>,
        path: String,
        kind: OpenKind,
        access: u32,
        share_access: u32,
        create_options: u32,
        file_key: Option<(u64, u64)>,
    ) -> Open {
        Open {
            volatile_id,
            persistent_id: volatile_id,
            tree_id,
            share,
            fd,
            path: Mutex::new(path),
            kind,
            access,
            share_access,
            create_options,
            file_key,
            delete_on_close: Mutex::new(false),
            position: Mutex::new(0),
            mode: create_options & (0x2 | 0x4 | 0x8 | 0x10 | 0x20),
            notify: Mutex::new(None),
            closed: Mutex::new(false),
        }
    }

    pub fn is_closed(&self) -> bool {
        *lock(&self.closed)
    }

    pub fn file_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.persistent_id.to_le_bytes());
        id[8..].copy_from_slice(&self.volatile_id.to_le_bytes());
        id
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, OpenKind::Dir(_))
    }

    pub fn stat(&self) -> Result<FileStat, NtStatus> {
        match &self.fd {
            Some(fd) => crate::vfs::stat_fd(fd),
            None => Err(NtStatus::INVALID_DEVICE_REQUEST),
        }
    }

    /// Removes this open from the file table; the last close of a file whose
    /// delete is pending removes it from disk.
    pub fn close(&self, server: &Server) {
        {
            let mut c = lock(&self.closed);
            if *c {
                return;
            }
            *c = true;
        }
        let Some(key) = self.file_key else { return };
        {
            let mut locks = lock(&server.locks);
            if let Some(l) = locks.get_mut(&key) {
                l.retain(|b| b.owner != self.volatile_id);
                if l.is_empty() {
                    locks.remove(&key);
                }
            }
        }
        server.locks_changed.notify_all();
        let mut delete = *lock(&self.delete_on_close);
        let last = {
            let mut files = lock(&server.files);
            let Some(entry) = files.get_mut(&key) else { return };
            entry.opens.retain(|(k, _, _)| *k != self.volatile_id);
            if delete {
                entry.delete_pending = true;
            }
            delete = entry.delete_pending;
            let last = entry.opens.is_empty();
            if last {
                files.remove(&key);
            }
            last
        };
        if last && delete {
            if let Some(root) = &self.share.root {
                let path = lock(&self.path).clone();
                // Only remove what is still the same file.
                if let Ok(Some(st)) = root.lookup(&path) {
                    if (st.dev, st.ino) == key {
                        if let Err(e) = root.remove(&path, st.is_dir) {
                            tracing::info!("delete-on-close of {path:?} failed: {e}");
                        }
                    }
                }
            }
        }
    }
}
