//! Server-wide state and the objects a client builds up, each with an explicit
//! lifetime (as in Samba's smbXsrv): a `Session` lives from SESSION_SETUP to
//! LOGOFF (or the last channel's end), a `Tree` from TREE_CONNECT to
//! TREE_DISCONNECT, an `Open` from CREATE to CLOSE. Connections live in
//! `conn.rs`; they hold references to sessions, never the other way round.

use crate::config::{ServerConfig, Setting, ShareConfig};
use crate::store::{FileKey, GlobalOpenId, SocketWaker, StateStore, WakeListener, Waker, Why};
use crate::crypto;
use crate::vfs::{FileStat, ShareRoot};
use crate::wire::status::NtStatus;
use rustix::fd::OwnedFd;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

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

pub struct Server {
    pub cfg: ServerConfig,
    /// The accounts: the user file (re-read when it changes) and the users
    /// given in clear text.
    pub users: Arc<crate::auth::UserSource>,
    pub server_guid: [u8; 16],
    pub start_time: u64,
    pub shares: Vec<Arc<Share>>,
    pub ipc: Arc<Share>,
    pub sessions: Mutex<HashMap<u64, Arc<Session>>>,
    /// Share modes, delete-pending and byte-range locks, as every worker
    /// process sees them (store/mod.rs).
    pub store: Arc<dyn StateStore>,
    /// This process's worker id in the store's records (0 for a single process).
    pub worker_id: u32,
    /// The state directory when the store is shared between processes (its
    /// workers' wake-up sockets live there).
    pub state_dir: Option<PathBuf>,
    /// Blocked LOCK requests of this process, retried when woken.
    pub lock_waits: crate::handlers::lock::LockWaits,
    /// Bumped at every event on a file (a break acknowledged or timed out,
    /// an oplock holder closed): blocked CREATEs wait on it.
    pub file_events: FileEvents,
    /// This process's opens holding an oplock, by volatile id: where their
    /// OPLOCK_BREAK notifications go.
    pub oplock_opens: Mutex<HashMap<u64, OplockTarget>>,
    /// This worker's disconnected durable opens (handlers/durable.rs).
    pub durable: crate::handlers::durable::Disconnected,
    /// This worker's DH2Q opens and pending DH2Q CREATEs by CreateGuid (replay).
    pub replay: Arc<crate::handlers::durable::ReplayCache>,
    /// Sends wake-ups to other workers (with a state directory).
    remote_waker: Option<SocketWaker>,
    /// This worker's wake-up socket and its thread.
    wake_listener: Mutex<Option<WakeListener>>,
    /// Keys the tags of server-side copy resume keys (see handlers/ioctl.rs).
    pub resume_secret: [u8; 32],
    /// Live connections, in all and per client address (listener.rs).
    pub conn_slots: Arc<crate::listener::ConnectionSlots>,
    /// Unfinished SESSION_SETUP exchanges on all connections.
    pub pending_setups: Arc<AtomicUsize>,
    /// Pending async operations and CHANGE_NOTIFY watches of all connections.
    pub asyncs: Arc<crate::asyncop::Shared>,
    next_id: AtomicU64,
}

impl Server {
    /// This process's open `open` as the store names it.
    pub fn open_id(&self, open: u64) -> GlobalOpenId {
        GlobalOpenId { worker: self.worker_id, open }
    }

    /// Whether READ/WRITE of `[offset, offset+len)` by `owner` runs into a
    /// byte-range lock (MS-FSA 2.1.4.10): reads are stopped by others'
    /// exclusive locks, writes by others' exclusive locks and any shared
    /// lock. A store that cannot answer counts as a conflict.
    pub fn io_lock_conflict(&self, key: (u64, u64), owner: u64, offset: u64, len: u64, write: bool) -> bool {
        self.store.io_conflict(key.into(), self.open_id(owner), offset, len, write).unwrap_or_else(|e| {
            tracing::warn!("lock check failed: {e}");
            true
        })
    }

    /// Whether the delete of the file `key` is pending.
    pub fn delete_pending(&self, key: (u64, u64)) -> bool {
        self.store.delete_pending(key.into()).unwrap_or_else(|e| {
            tracing::warn!("delete-pending check failed: {e}");
            false
        })
    }

    /// FileDispositionInformation: the file's delete becomes pending (or not).
    pub fn set_delete_pending(&self, key: (u64, u64), open: u64, pending: bool) -> Result<(), NtStatus> {
        self.store.set_delete_pending(key.into(), self.open_id(open), pending).map_err(store_status)
    }

    /// Notes in the store where the file `key` whose delete is (or will be)
    /// pending is, so that the supervisor deletes it if its opens' worker
    /// dies (store: `set_delete_path`).
    pub fn note_delete_path(&self, key: (u64, u64), share: &str, path: &str) {
        if let Err(e) = self.store.set_delete_path(key.into(), share, path) {
            tracing::warn!("delete-on-close of {path:?} not noted in the store: {e}");
        }
    }

    /// Whether anyone (in any worker) has the file `key` open.
    pub fn has_opens(&self, key: (u64, u64)) -> bool {
        self.store.has_opens(key.into()).unwrap_or_else(|e| {
            tracing::warn!("open-file check failed: {e}");
            true
        })
    }

    /// Whether no open and no byte-range lock is recorded (tests, fuzzing).
    pub fn no_open_state(&self) -> bool {
        self.store.snapshot().is_ok_and(|v| v.is_empty())
    }

    /// Tells `worker` that the locks of `key` changed: this process's
    /// waiters directly, another worker's through its wake-up socket.
    pub fn wake(&self, worker: u32, key: FileKey) {
        self.wake_for(worker, key, Why::Changed);
    }

    /// Asks `worker` to close its durable opens of `key` whose records this
    /// worker marked `close_requested` (handlers/durable.rs).
    pub fn ask_close_durable(&self, worker: u32, key: FileKey) {
        self.wake_for(worker, key, Why::CloseDurable);
    }

    fn wake_for(&self, worker: u32, key: FileKey, why: Why) {
        if worker == self.worker_id {
            self.on_wake(key, why);
        } else if let Some(w) = &self.remote_waker {
            w.wake(worker, key, why);
        } else {
            tracing::warn!(worker, "no way to wake worker {worker}: no state directory");
        }
    }

    /// Something changed on the file `key` (this worker was woken for it):
    /// blocked LOCKs retry, oplock breaks of this worker's opens are sent,
    /// blocked CREATEs look again.
    pub fn on_file_event(&self, key: FileKey) {
        self.lock_waits.wake(self, key);
        self.send_oplock_notices(key);
        crate::handlers::lease::send_notices(self, key);
        self.file_events.bump();
    }

    /// This worker was woken for `key`, for `why`.
    fn on_wake(&self, key: FileKey, why: Why) {
        match why {
            Why::Changed => self.on_file_event(key),
            Why::CloseDurable => crate::handlers::durable::close_requested(self, key),
        }
    }

    /// Sends the OPLOCK_BREAK notifications the store holds for this
    /// worker's opens of `key`.
    pub fn send_oplock_notices(&self, key: FileKey) {
        let notices = match self.store.oplock_notices(key, self.worker_id) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("oplock notices of {key:?}: {e}");
                return;
            }
        };
        for (open, level) in notices {
            let target = lock(&self.oplock_opens).get(&open).cloned();
            let Some(t) = target else {
                // Nobody to tell: a disconnected durable open closes.
                crate::handlers::durable::break_disconnected(self, open);
                continue;
            };
            let (Some(o), Some(s)) = (t.open.upgrade(), t.session.upgrade()) else { continue };
            crate::handlers::oplock::send_break(&*t.sink, &s, &o, level);
        }
    }

    /// Milliseconds since the Unix epoch (the store's clock for break timeouts).
    pub fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    /// A server on the store of `state directory` (`cfg.procs.state_dir`:
    /// the LMDB environment there, which the supervisor created and cleared
    /// at start; this process is worker `cfg.procs.worker_id`), else on the
    /// in-process store (one process: tests, tools).
    pub fn new(cfg: ServerConfig) -> std::io::Result<Arc<Server>> {
        match cfg.procs.state_dir.clone() {
            Some(dir) => {
                let store = crate::store::open(&dir).map_err(|e| std::io::Error::other(format!("state directory {}: {e}", dir.display())))?;
                let id = cfg.procs.worker_id;
                Server::with_store(cfg, store, id, Some(dir))
            }
            None => Server::with_store(cfg, crate::store::memory(), 0, None),
        }
    }

    /// A server (one worker process) on a given store. With `state_dir`, it
    /// binds its wake-up socket `worker-<worker_id>.sock` there and wakes
    /// other workers through theirs.
    pub fn with_store(cfg: ServerConfig, store: Arc<dyn StateStore>, worker_id: u32, state_dir: Option<PathBuf>) -> std::io::Result<Arc<Server>> {
        let mut users = crate::auth::UserDb::new();
        for (u, p) in &cfg.users {
            users.add_password(u, p);
        }
        let users = Arc::new(crate::auth::UserSource::new(Some(cfg.accounts.passdb_path()), users));
        let mut shares = Vec::new();
        for s in &cfg.shares {
            std::fs::create_dir_all(&s.path)?;
            let root = ShareRoot::open(&s.path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("share [{}] at {}: {e}", s.name, s.path.display())))?
                .with_unix(s.unix.clone());
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
        let remote_waker = match &state_dir {
            Some(d) => Some(SocketWaker::new(d, worker_id)?),
            None => None,
        };
        let server = Arc::new(Server {
            cfg,
            users,
            server_guid: guid,
            start_time: crate::vfs::now_nt(),
            shares,
            ipc: Arc::new(Share { cfg: ipc_cfg, root: None, connections: AtomicUsize::new(0) }),
            sessions: Mutex::new(HashMap::new()),
            store,
            worker_id,
            state_dir: state_dir.clone(),
            lock_waits: Default::default(),
            file_events: Default::default(),
            oplock_opens: Mutex::new(HashMap::new()),
            durable: Default::default(),
            replay: Default::default(),
            remote_waker,
            wake_listener: Mutex::new(None),
            resume_secret,
            conn_slots: Default::default(),
            pending_setups: Default::default(),
            asyncs: Default::default(),
            next_id: AtomicU64::new((u64::from_le_bytes(seed) & 0x0000_FFFF_0000_0000) | 1),
        });
        if let Some(dir) = &state_dir {
            let weak = Arc::downgrade(&server);
            let l = WakeListener::start(dir, worker_id, move |key, why| {
                if let Some(s) = weak.upgrade() {
                    s.on_wake(key, why);
                }
            })?;
            *lock(&server.wake_listener) = Some(l);
        }
        Ok(server)
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

/// Where an open's OPLOCK_BREAK notifications go: the connection it was
/// opened on, for its session.
#[derive(Clone)]
pub struct OplockTarget {
    pub open: Weak<Open>,
    pub session: Weak<Session>,
    pub sink: Arc<dyn crate::transport::MessageSink>,
}

/// A generation count with a condition variable: waiters note the count,
/// make their check, and sleep until it moves (so no event between the
/// check and the sleep is missed).
#[derive(Default)]
pub struct FileEvents {
    generation: Mutex<u64>,
    cv: Condvar,
}

impl FileEvents {
    pub fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    pub fn bump(&self) {
        *lock(&self.generation) += 1;
        self.cv.notify_all();
    }

    /// Sleeps until the count is past `seen` or `until`; the count then.
    pub fn wait(&self, seen: u64, until: Instant) -> u64 {
        let mut g = lock(&self.generation);
        while *g == seen {
            let now = Instant::now();
            if now >= until {
                break;
            }
            g = match self.cv.wait_timeout(g, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *g
    }
}

/// The NT status for a store that failed (logged here).
pub fn store_status(e: crate::store::StoreError) -> NtStatus {
    tracing::warn!("{e}");
    NtStatus::INSUFFICIENT_RESOURCES
}

#[cfg(test)]
mod channel_sequence_tests {
    use super::ChannelSequence;

    #[test]
    fn outstanding_requests_of_an_older_sequence_hold_back_replays() {
        let mut cs = ChannelSequence::default();
        // Two requests in flight on sequence 0; the client moves to 1.
        assert!(cs.admit(0, false) && cs.admit(0, false));
        assert!(cs.admit(1, false));
        assert_eq!((cs.sequence, cs.outstanding, cs.outstanding_pre), (1, 1, 2));
        // A replay (even of the current sequence) waits until the old ones are answered.
        assert!(!cs.admit(1, true));
        // A request of the old sequence is stale now.
        assert!(!cs.admit(0, false));
        cs.done(0);
        cs.done(0);
        assert_eq!(cs.outstanding_pre, 0);
        assert!(cs.admit(1, true));
        assert_eq!(cs.outstanding, 2);
        cs.done(1);
        cs.done(1);
        assert_eq!((cs.outstanding, cs.outstanding_pre), (0, 0));
        // 16-bit arithmetic: 0x7FFF ahead is newer, 0x8000 ahead is older.
        let mut cs = ChannelSequence::default();
        assert!(!cs.admit(0x8000, false));
        assert!(cs.admit(0x7FFF, false));
        assert!(cs.admit(0xFFFE, false), "0x7FFF after 0x7FFF");
        assert!(cs.admit(3, false), "wraps past 0xFFFF");
        assert!(!cs.admit(0xFFFE, false));
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
    /// The connections bound to this session (MS-SMB2 Session.ChannelList)
    /// and the channel sequence of its opens (see [`Channels`]).
    pub channels: Mutex<Channels>,
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
            channels: Mutex::new(Channels::default()),
            next_tree: AtomicU32::new(1),
        }
    }

    /// The key that signs and verifies messages of this session on the
    /// connection `conn_id` (MS-SMB2 3.3.5.2.4, 3.3.4.1.1): a bound channel's
    /// own key, else the session's.
    pub fn signer_on(&self, conn_id: u64) -> Option<SigningKey> {
        if let Some(s) = lock(&self.channels).list.iter().find(|c| c.conn_id == conn_id).and_then(|c| c.signer.clone()) {
            return Some(SigningKey::Channel(s));
        }
        self.keys().filter(|k| k.signer.is_some()).map(SigningKey::Session)
    }

    /// Removes the channel of connection `conn_id`; true when it was the
    /// session's last one (the session then ends).
    pub fn drop_channel(&self, conn_id: u64) -> bool {
        let mut c = lock(&self.channels);
        c.list.retain(|ch| ch.conn_id != conn_id);
        c.list.is_empty()
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

    /// The session ends without a LOGOFF (its last connection is gone, or a
    /// reconnecting client named it as its previous session): like
    /// [`Session::teardown`], but durable opens that may stay become
    /// disconnected opens, waiting for their client (handlers/durable.rs).
    pub fn disconnect(&self, server: &Arc<Server>) {
        *lock(&self.state) = SessionState::Expired;
        let opens: Vec<Arc<Open>> = lock(&self.opens).drain().map(|(_, o)| o).collect();
        for o in opens {
            if !crate::handlers::durable::keep(server, &o) {
                o.close(server);
            }
        }
        lock(&self.trees).clear();
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

/// One connection bound to a session (MS-SMB2 3.3.1.14 Channel).
pub struct Channel {
    /// [`crate::conn::Connection::conn_id`] of the connection.
    pub conn_id: u64,
    /// The ClientGuid that connection negotiated (every channel of a session
    /// has the same, MS-SMB2 3.3.5.5).
    pub client_guid: [u8; 16],
    /// Channel.SigningKey when it differs from the session's: a bound channel
    /// of a 3.x session signs with a key derived from its own authentication
    /// (MS-SMB2 3.3.5.5.3). `None` for the channel that set the session up.
    pub signer: Option<Arc<crypto::Signer>>,
    /// An SMB Direct channel (for status and logs).
    pub rdma: bool,
    /// Where the connection sends: oplock and lease breaks fall back to
    /// another channel of the session when the open's own is gone (MS-SMB2
    /// 3.3.4.1.6; handlers/oplock.rs `send_on_session`).
    pub sink: Weak<dyn crate::transport::MessageSink>,
    /// Set on the connection by smbtorture's FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT
    /// (with `smbd:FSCTL_SMBTORTURE`, as Samba's `ack.force_unacked_timeout`):
    /// what is sent there counts as never acknowledged, as on a channel
    /// whose network went away, so a break goes to another channel of the
    /// session, or is lost (handlers/oplock.rs `send_on_session`).
    pub unacked: Arc<std::sync::atomic::AtomicBool>,
}

/// The channel state of a session: its channels, and the channel sequence
/// of each open (MS-SMB2 3.3.1.10 Open.ChannelSequence,
/// OutstandingRequestCount, OutstandingPreRequestCount), kept here by the
/// open's volatile id so that replays after a channel failure are told
/// from stale requests (3.3.5.2.10).
#[derive(Default)]
pub struct Channels {
    pub list: Vec<Channel>,
    pub sequences: HashMap<u64, ChannelSequence>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChannelSequence {
    pub sequence: u16,
    pub outstanding: u32,
    pub outstanding_pre: u32,
}

impl ChannelSequence {
    /// Checks and counts a request with `seq` on this open (MS-SMB2
    /// 3.3.5.2.10): a sequence equal to the open's is counted; a newer one
    /// (16-bit difference at most 0x7FFF) becomes the open's, the requests
    /// still outstanding under the old one turning into "pre" requests. A
    /// replayed request (SMB2_FLAGS_REPLAY_OPERATION) is admitted only when no
    /// request of an older sequence is outstanding. `false`: the request is
    /// stale (or an unsafe replay); a modifying one (WRITE, SET_INFO, IOCTL)
    /// fails with FILE_NOT_AVAILABLE, others go on uncounted.
    pub fn admit(&mut self, seq: u16, replay: bool) -> bool {
        let newer = seq != self.sequence && seq.wrapping_sub(self.sequence) <= 0x7FFF;
        if replay && self.outstanding_pre != 0 {
            return false;
        }
        if seq == self.sequence {
            self.outstanding = self.outstanding.saturating_add(1);
            true
        } else if newer {
            self.outstanding_pre = self.outstanding_pre.saturating_add(self.outstanding);
            self.outstanding = 1;
            self.sequence = seq;
            true
        } else {
            false
        }
    }

    /// A request admitted with `seq` has been answered.
    pub fn done(&mut self, seq: u16) {
        if seq == self.sequence && self.outstanding > 0 {
            self.outstanding -= 1;
        } else {
            self.outstanding_pre = self.outstanding_pre.saturating_sub(1);
        }
    }
}

/// The key one message is signed with: the session's (Session.SigningKey)
/// or a bound channel's own (Channel.SigningKey).
#[derive(Clone)]
pub enum SigningKey {
    Session(Arc<SessionKeys>),
    Channel(Arc<crypto::Signer>),
}

impl SigningKey {
    pub fn signer(&self) -> Option<&crypto::Signer> {
        match self {
            SigningKey::Session(k) => k.signer.as_ref(),
            SigningKey::Channel(s) => Some(s),
        }
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
    /// The Unix identity file operations through this tree run as
    /// (auth/unix.rs, identity.rs); `None`: the server's own.
    pub creds: Option<Arc<crate::identity::Creds>>,
    /// Who this tree's session is when security descriptors are checked
    /// (security/mod.rs): the SIDs of `creds`, or of the server's own user.
    pub token: Arc<crate::security::Token>,
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

/// Where a QUERY_DIRECTORY search on a directory handle stands (handlers/dir.rs):
/// "." and ".." come first, then the directory stream from a seek cookie, so
/// each query reads only as far as it answers.
#[derive(Default)]
pub struct DirCursor {
    /// A search has begun (the first query, or the last RESTART_SCANS/REOPEN).
    pub started: bool,
    /// How many of "." and ".." have been passed.
    pub dots: u8,
    /// Seek cookie of the next entry of the directory stream (0: its start).
    pub cookie: u64,
    /// Something has been passed (returned or skipped) since the search began.
    pub moved: bool,
    pub pattern: Option<String>,
}

pub struct Open {
    pub volatile_id: u64,
    pub persistent_id: u64,
    /// The tree it was opened (or durably reconnected) through.
    pub tree_id: AtomicU32,
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
    /// The oplock level granted at CREATE (the store keeps the live state).
    pub oplock_level: Mutex<u8>,
    /// The lease the open was made under and its state as last granted or
    /// acknowledged here (handlers/lease.rs; the store keeps the live state).
    pub lease: Mutex<Option<(crate::store::LeaseId, u8)>>,
    /// The ParentLeaseKey (with this client's ClientGUID) the open was made
    /// with: changes through it do not break that directory lease.
    pub parent_lease: Mutex<Option<crate::store::LeaseId>>,
    /// Data was written through the open: its close breaks the parent
    /// directory's leases (handlers/lease.rs).
    pub modified: std::sync::atomic::AtomicBool,
    /// Set when the open is durable (handlers/durable.rs).
    pub durable: Mutex<Option<crate::handlers::durable::DurableInfo>>,
    /// A replayed DH2Q CREATE may still be answered with this open: no
    /// other request has used it since (MS-SMB2 Open.IsReplayEligible).
    pub replay_eligible: std::sync::atomic::AtomicBool,
    /// Open.LockSequenceArray (MS-SMB2 3.3.5.14) of a durable open: the
    /// last LockSequenceNumber done per index 1..=64, 0xFF when none.
    pub lock_sequences: Mutex<[u8; 64]>,
    /// Set for an open of a named stream (handlers/streams.rs).
    pub stream: Option<StreamOpen>,
    closed: Mutex<bool>,
}

/// What an open of a named stream adds (vfs/streams.rs): `Open::fd` holds
/// the file (or directory) the stream belongs to and `Open::path` its
/// path, while `Open::file_key` is the stream's own key (share modes, locks
/// and delete-on-close are per stream).
pub struct StreamOpen {
    /// The stream's name as stored (a rename changes it).
    pub name: Mutex<String>,
    /// The key of the file the stream belongs to.
    pub base_key: (u64, u64),
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
            tree_id: AtomicU32::new(tree_id),
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
            oplock_level: Mutex::new(0),
            lease: Mutex::new(None),
            parent_lease: Mutex::new(None),
            modified: Default::default(),
            durable: Mutex::new(None),
            replay_eligible: Default::default(),
            lock_sequences: Mutex::new([0xFF; 64]),
            stream: None,
            closed: Mutex::new(false),
        }
    }

    pub fn tree_id(&self) -> u32 {
        self.tree_id.load(Ordering::Relaxed)
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
        let fd = self.fd.as_ref().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
        let mut st = crate::vfs::stat_fd(fd)?;
        if let Some(s) = &self.stream {
            // A stream has the file's times and attributes, its own size.
            // (Gone from under a live open, it reads as empty.)
            st.size = crate::vfs::streams::size(fd, &lock(&s.name)).unwrap_or(0);
            st.alloc = crate::vfs::streams::alloc_size(st.size);
            st.is_dir = false;
        }
        Ok(st)
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
        let durable_waiters = crate::handlers::durable::on_close(server, self);
        self.release(server);
        // Workers waiting for its durable record to go (a CREATE with its
        // AppInstanceId) look again only now that its share mode, oplock
        // and lease are gone too.
        if let (Some(rec), Some(key)) = (durable_waiters, self.file_key) {
            for w in rec {
                server.wake(w, key.into());
            }
        }
    }

    /// What a close releases besides the durable record.
    fn release(&self, server: &Server) {
        // Pending CHANGE_NOTIFYs on the handle end (NOTIFY_CLEANUP) and its watch goes.
        let watch = lock(&self.notify).take();
        if let Some(w) = watch {
            w.cleanup();
        }
        let Some(key) = self.file_key else { return };
        if *lock(&self.oplock_level) != 0 {
            lock(&server.oplock_opens).remove(&self.volatile_id);
        }
        // A LOCK of this handle still waiting ends now.
        server.lock_waits.open_closed(server, key.into(), self.volatile_id);
        let closed = match server.store.close_file(key.into(), server.open_id(self.volatile_id)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("close of {:?}: {e}", lock(&self.path));
                return;
            }
        };
        let mut removed = false;
        if closed.delete && self.stream.is_none() && crate::handlers::streams::deferred_delete(server, self, key) {
            // Its streams' opens remove it when the last one closes.
        } else if closed.delete {
            // New opens of the file get DELETE_PENDING until `deleted`.
            if let Some(s) = &self.stream {
                crate::handlers::streams::delete_stream(self, s);
            } else if let Some(root) = &self.share.root {
                let path = lock(&self.path).clone();
                // Only remove what is still the same file.
                if let Ok(Some(st)) = root.lookup(&path) {
                    if (st.dev, st.ino) == key {
                        match root.remove(&path, st.is_dir) {
                            Ok(()) => removed = true,
                            Err(e) => tracing::info!("delete-on-close of {path:?} failed: {e}"),
                        }
                    }
                }
            }
            if let Err(e) = server.store.deleted(key.into()) {
                tracing::warn!("record of a deleted file kept: {e}");
            }
        }
        // Opens waiting for this one (share mode, oplock break) go on only
        // now that a delete-on-close is done: woken before, one on another
        // worker could look again while the file is still there, delete
        // pending, and fail with DELETE_PENDING where it must create anew.
        for w in closed.wake {
            server.wake(w, key.into());
        }
        crate::handlers::lease::on_close(server, self, removed);
        if let Some(s) = &self.stream {
            crate::handlers::streams::finish_deferred_delete(server, self, s.base_key);
        }
    }
}
