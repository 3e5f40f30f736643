//! The state every worker process must see: share modes, delete-pending,
//! byte-range locks, oplocks and leases and who waits for them, keyed by the
//! file's `(dev, ino)`, plus the lease table keyed by (ClientGUID, LeaseKey)
//! (lease.rs). These are the *global* records (Samba's `locking.tdb`,
//! `brlock.tdb` and `leases.tdb`); the local `Open` objects of a worker point
//! at them by [`GlobalOpenId`].
//!
//! Each operation of [`StateStore`] is one atomic read-check-write. Two
//! backends hold the same records: [`MemStore`] for a single process (the
//! sim tests), and [`LmdbStore`], an LMDB environment in the state
//! directory shared by all worker processes (one write transaction per
//! operation; readers take no lock). A cluster backend could hold the same
//! records later.
//!
//! Wake-ups: a blocked LOCK records its worker as a waiter in the same step
//! that found the conflict; the operation that frees a range hands those
//! workers back, and the caller wakes each with [`Waker::wake`] (a direct
//! call within a process, a datagram to `worker-<id>.sock` in the state
//! directory across processes: see [`wake`]).

pub mod lease;
pub mod durable;
mod lmdb;
mod mem;
pub mod oplock;
pub mod records;
pub mod wake;

pub use durable::DurableRecord;
pub use lmdb::LmdbStore;
pub use mem::MemStore;
pub use lease::{LeaseAckError, LeaseGrant, LeaseId, LeaseNotice, LeaseRequest};
pub use oplock::{AckError, OpenCheck, OplockHolder, OplockRecord};
pub use records::{LockRecord, ShareRecord};
pub use wake::{SocketWaker, WakeListener, Waker, Why};

use std::path::Path;
use std::sync::Arc;

/// A file, as the file system names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl From<(u64, u64)> for FileKey {
    fn from((dev, ino): (u64, u64)) -> FileKey {
        FileKey { dev, ino }
    }
}

/// An open, server-wide: the worker that holds it and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GlobalOpenId {
    pub worker: u32,
    pub open: u64,
}

/// One open of a file as other opens see it (MS-FSA 2.1.5.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareModeEntry {
    pub open: GlobalOpenId,
    /// Granted access.
    pub access: u32,
    pub share_access: u32,
    /// The open was made with FILE_DELETE_ON_CLOSE: its close makes the
    /// file's delete pending.
    pub delete_on_close: bool,
}

/// A byte-range lock (MS-FSA 2.1.5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRangeLock {
    pub owner: GlobalOpenId,
    pub offset: u64,
    pub length: u64,
    pub exclusive: bool,
}

/// The store itself failed (its file, its map size): callers answer with an
/// NT status such as INSUFFICIENT_RESOURCES and log this.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Lmdb(#[from] heed::Error),
    #[error("state store: damaged record: {0}")]
    Corrupt(&'static str),
    #[error("state store: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("delete pending")]
    DeletePending,
    #[error("sharing violation")]
    SharingViolation,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock not granted")]
    NotGranted,
    #[error("too many locks on this open")]
    TooMany,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a CLOSE did to the file's records.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Closed {
    /// This was the last open and the file's delete is pending: remove it,
    /// then call [`StateStore::deleted`] (until then new opens of the file
    /// get DELETE_PENDING).
    pub delete: bool,
    /// Workers waiting for a lock the closed open held, or for its oplock's break.
    pub wake: Vec<u32>,
}

/// What an unlock did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unlocked {
    /// How many of the ranges were released (fewer than asked: the next one
    /// was not held).
    pub released: usize,
    pub wake: Vec<u32>,
}

/// The shared records. Every method is atomic with respect to every other,
/// in this process and in all processes sharing the backend.
pub trait StateStore: Send + Sync {
    /// Records a new open unless the file's delete is pending or a share
    /// mode conflicts.
    fn open_file(&self, key: FileKey, entry: ShareModeEntry) -> Result<(), OpenError>;
    /// Removes an open with its byte-range locks and oplock.
    fn close_file(&self, key: FileKey, open: GlobalOpenId) -> Result<Closed, StoreError>;
    /// The file a `close_file` answered `delete` for is gone (or its removal
    /// failed): its record, which kept new opens out meanwhile, goes.
    fn deleted(&self, key: FileKey) -> Result<(), StoreError>;
    /// Whether the file's delete is pending.
    fn delete_pending(&self, key: FileKey) -> Result<bool, StoreError>;
    /// FileDispositionInformation: sets (or clears) the file's delete-pending
    /// flag and the open's delete-on-close at once.
    fn set_delete_pending(&self, key: FileKey, open: GlobalOpenId, pending: bool) -> Result<(), StoreError>;
    /// Whether anyone has the file open.
    fn has_opens(&self, key: FileKey) -> Result<bool, StoreError>;
    /// Takes all of `locks` for `owner` or none (`max_per_open` 0 = no cap).
    /// On a conflict with `waiter` given, that worker is recorded as waiting
    /// for the file in the same step.
    fn lock(&self, key: FileKey, owner: GlobalOpenId, locks: &[ByteRangeLock], max_per_open: usize, waiter: Option<u32>) -> Result<(), LockError>;
    /// Releases `(offset, length)` ranges of `owner` in order, up to the first not held.
    fn unlock(&self, key: FileKey, owner: GlobalOpenId, ranges: &[(u64, u64)]) -> Result<Unlocked, StoreError>;
    /// `worker` no longer waits for this file.
    fn unwait(&self, key: FileKey, worker: u32) -> Result<(), StoreError>;
    /// Whether READ (or WRITE) of the range through `owner` hits a lock (MS-FSA 2.1.4.10).
    fn io_conflict(&self, key: FileKey, owner: GlobalOpenId, offset: u64, len: u64, write: bool) -> Result<bool, StoreError>;
    /// Removes every record of a dead worker (its durable opens too: it
    /// held their descriptors); returns the (worker, file) pairs to wake
    /// because one of its locks, oplocks or durable records went.
    fn purge_worker(&self, worker: u32) -> Result<Vec<(u32, FileKey)>, StoreError>;
    /// Oplocks (oplock.rs): a new open's check (breaks started, workers to
    /// wake for them, and whether to wait), made before its share-mode entry.
    #[allow(clippy::too_many_arguments)]
    /// `lease`: the new open's own lease (its leases break nothing of it);
    /// `retry`: the open waited for a break before (it goes on waiting
    /// while a lease's break round needing acknowledgments lasts).
    fn oplock_open(&self, key: FileKey, new: &ShareModeEntry, lease: Option<&LeaseId>, retry: bool, overwrite: bool, level2: bool, now_ms: u64, timeout_ms: u64, waiter: u32) -> Result<(OpenCheck, Vec<u32>), StoreError>;
    /// Grants `open` (whose share-mode entry is in) the oplock it may have.
    fn oplock_grant(&self, key: FileKey, open: GlobalOpenId, requested: u8, level2: bool) -> Result<u8, StoreError>;
    /// Breaks every level II oplock of the file (a write, a size change, a
    /// byte-range lock through `by`) and the read leases of others; workers to wake.
    fn oplock_break_level2(&self, key: FileKey, by: GlobalOpenId, now_ms: u64) -> Result<Vec<u32>, StoreError>;
    /// The breaks `worker` must announce now: (open, level broken to).
    fn oplock_notices(&self, key: FileKey, worker: u32) -> Result<Vec<(u64, u8)>, StoreError>;
    /// An OPLOCK_BREAK acknowledgment; the workers to wake.
    fn oplock_ack(&self, key: FileKey, open: GlobalOpenId, level: u8) -> Result<(Result<u8, AckError>, Vec<u32>), StoreError>;
    /// `worker` no longer waits for a break on this file.
    fn oplock_unwait(&self, key: FileKey, worker: u32) -> Result<(), StoreError>;
    /// The file's oplock record (status, tests).
    fn oplocks(&self, key: FileKey) -> Result<OplockRecord, StoreError>;
    // Leases (store/lease.rs): the lease table (ClientGUID, LeaseKey) -> file
    // and the per-file lease state beside the oplocks.
    /// Grants `req`'s lease to `open` (whose share-mode entry is in); `None`
    /// when the key already names a lease of another file.
    fn lease_grant(&self, key: FileKey, open: GlobalOpenId, req: &LeaseRequest) -> Result<Option<LeaseGrant>, StoreError>;
    /// The file the lease `id` is on.
    fn lease_file(&self, id: &LeaseId) -> Result<Option<FileKey>, StoreError>;
    /// A rename or delete through `by`: level II oplocks break to none and
    /// other leases lose H; workers to wake, and when the breaks that want
    /// an acknowledgment time out (`None`: none do).
    fn lease_break_handle(&self, key: FileKey, by: GlobalOpenId, now_ms: u64, timeout_ms: u64) -> Result<(Vec<u32>, Option<u64>), StoreError>;
    /// Whether a lease other than `by`'s still holds H on the file; if so
    /// `waiter` is recorded as waiting on the file's oplock record (an ack
    /// or close wakes it), in the same step.
    fn lease_handle_wait(&self, key: FileKey, by: GlobalOpenId, waiter: u32) -> Result<bool, StoreError>;
    /// The lease breaks `worker` must announce now.
    fn lease_notices(&self, key: FileKey, worker: u32) -> Result<Vec<LeaseNotice>, StoreError>;
    /// A LEASE_BREAK acknowledgment: (file, state, epoch) or why not; the workers to wake.
    fn lease_ack(&self, id: &LeaseId, state: u8, now_ms: u64) -> Result<LeaseAcked, StoreError>;
    // Directory leases (store/lease.rs, handlers/lease.rs `break_parent`).
    /// A change inside the directory `dir` under the lease `except`: the
    /// directory's other leases break to none (nobody waits); workers to wake.
    fn lease_break_parent(&self, dir: FileKey, except: Option<&LeaseId>, now_ms: u64) -> Result<Vec<u32>, StoreError>;
    // Kernel oplocks (kernel_oplock.rs).
    /// Another program opened the file: all its oplocks and leases break to
    /// none and, while any still caches, `waiter` waits for them (woken by
    /// the acks and closes). Workers to wake (to send the breaks), and
    /// whether anything still caches.
    fn kernel_break(&self, key: FileKey, now_ms: u64, waiter: u32) -> Result<(Vec<u32>, bool), StoreError>;
    /// All non-empty records (for `smbdirect status` and tests).
    fn snapshot(&self) -> Result<Vec<(FileKey, ShareRecord, LockRecord)>, StoreError>;

    // ---- Delete-on-close of a dead worker's opens (bindroute) ----
    /// Notes where the file is, `path` in share `share`, while it has opens:
    /// called when an open with delete-on-close is made, when a delete
    /// becomes pending and when the file is renamed, so that a purge can
    /// have the file deleted. (A file whose directory is renamed keeps its
    /// old path: the supervisor then finds another file or none there and
    /// leaves it.)
    fn set_delete_path(&self, key: FileKey, share: &str, path: &str) -> Result<(), StoreError>;
    /// The files a purge left without opens and with their delete pending:
    /// (file, share, path). New opens get DELETE_PENDING until the file is
    /// deleted and [`StateStore::deleted`] is called.
    fn orphaned_deletes(&self) -> Result<Vec<(FileKey, String, String)>, StoreError>;
    // --- Durable opens (durable.rs, handlers/durable.rs) -------------------
    /// Records (or replaces) the durable open `rec.persistent_id`.
    fn durable_put(&self, rec: &DurableRecord) -> Result<(), StoreError>;
    fn durable_get(&self, persistent_id: u64) -> Result<Option<DurableRecord>, StoreError>;
    /// The durable open that `client_guid` made with `create_guid`, if any
    /// (replay detection, MS-SMB2 3.3.5.9.10).
    fn durable_by_create_guid(&self, client_guid: &[u8; 16], create_guid: &[u8; 16]) -> Result<Option<DurableRecord>, StoreError>;
    /// The open lost its connection: it waits until `until_ms` for a
    /// reconnect. The workers that were waiting for the record (the caller
    /// wakes them; the list is cleared); `None` when there is no such record.
    fn durable_disconnect(&self, persistent_id: u64, until_ms: u64) -> Result<Option<Vec<u32>>, StoreError>;
    /// Records `worker` as waiting for the record to change (disconnected,
    /// moved or removed: whoever does it wakes the waiters it names) and
    /// returns the record as it is now, in one step, so no change between
    /// reading the record and waiting goes unnoticed.
    fn durable_watch(&self, persistent_id: u64, worker: u32) -> Result<Option<DurableRecord>, StoreError>;
    /// A reconnect claims the open back: true (and the record is connected
    /// again) only when it is disconnected and has not expired at `now_ms`;
    /// of two reconnects racing, one wins.
    fn durable_reclaim(&self, persistent_id: u64, now_ms: u64) -> Result<bool, StoreError>;
    /// Drops the record (the open closed, or expired); what it was (the
    /// caller wakes its waiters).
    fn durable_remove(&self, persistent_id: u64) -> Result<Option<DurableRecord>, StoreError>;
    /// The disconnected opens of `worker` whose time ran out at `now_ms`.
    fn durable_expired(&self, worker: u32, now_ms: u64) -> Result<Vec<DurableRecord>, StoreError>;
    /// The worker holding a disconnected durable open of `client_guid`, if
    /// any: where the supervisor routes that client when it comes back.
    fn durable_worker_of(&self, client_guid: &[u8; 16]) -> Result<Option<u32>, StoreError>;
    /// A reconnect reaching another worker than the one holding the
    /// disconnected open (handlers/durable.rs reopens the file there): in one
    /// step, when the open is disconnected and not expired at `now_ms`, its
    /// share-mode entry, byte-range locks, oplock and lease membership pass
    /// from its old [`GlobalOpenId`] to `to`, and the record names `to`,
    /// connected again, with no waiters. The record as it was before (the
    /// caller wakes its waiters); `None` when there is nothing to claim (of
    /// two reconnects racing, one wins).
    fn durable_move(&self, persistent_id: u64, to: GlobalOpenId, now_ms: u64) -> Result<Option<DurableRecord>, StoreError>;
    /// Asks the worker holding the durable open to close it (a new open
    /// with its AppInstanceId on another worker): marks the record; false
    /// when there is no such record.
    fn durable_request_close(&self, persistent_id: u64) -> Result<bool, StoreError>;
    /// The durable opens of `worker` whose close another worker asked for.
    fn durable_close_requests(&self, worker: u32) -> Result<Vec<DurableRecord>, StoreError>;
    /// The durable opens made with AppInstanceId `id`.
    fn durable_by_app_instance(&self, id: &[u8; 16]) -> Result<Vec<DurableRecord>, StoreError>;
}

/// What [`StateStore::lease_ack`] did: the file, the lease's state and
/// epoch (or why the ack was refused), and the workers to wake.
pub type LeaseAcked = (Result<(FileKey, u8, u16), LeaseAckError>, Vec<u32>);

/// A store for one process.
pub fn memory() -> Arc<dyn StateStore> {
    Arc::new(MemStore::default())
}

/// Opens (creating if need be) the LMDB store in the state directory `dir`,
/// keeping the records in it: what a worker process does. Within one
/// process, opening the same directory again returns the same environment.
pub fn open(dir: &Path) -> Result<Arc<dyn StateStore>, StoreError> {
    Ok(LmdbStore::open(dir)?)
}

/// Opens the LMDB store in `dir` and drops every record in it: what the
/// supervisor (or a single-process server) does at start, when no record
/// left by an earlier run can be live.
pub fn create(dir: &Path) -> Result<Arc<dyn StateStore>, StoreError> {
    let s = LmdbStore::open(dir)?;
    s.clear()?;
    Ok(s)
}

/// What the supervisor does when worker `dead` is gone: drop its records
/// and wake, through their sockets in the state directory `dir`, the
/// workers that waited for a lock it held. Returns how many were woken.
/// The files it left to delete are in [`StateStore::orphaned_deletes`].
pub fn purge_and_wake(store: &dyn StateStore, dir: &Path, dead: u32) -> Result<usize, StoreError> {
    let wake = store.purge_worker(dead)?;
    let waker = SocketWaker::new(dir, dead)?;
    for (worker, key) in &wake {
        waker.wake(*worker, *key, Why::Changed);
    }
    Ok(wake.len())
}

#[cfg(test)]
mod tests;
