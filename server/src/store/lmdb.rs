//! The multi-process backend: an LMDB environment (`heed`) in the state
//! directory. Two databases, `share` and `brl`, each keyed by the file's
//! (dev, ino); each operation is one write transaction (LMDB lets one
//! writer in at a time across all processes, with a robust mutex that a
//! dead process does not leave held) or one read transaction (no lock).
//!
//! The environment holds nothing that must outlive the server: it is cleared
//! at every start ([`super::create`]), so it is opened without syncing to
//! disk (NO_SYNC / NO_META_SYNC, WRITE_MAP with MAP_ASYNC); changes are still seen at once by every
//! process through the shared page cache. Read transactions are not tied to
//! threads (NO_TLS), so connection threads do not each pin a reader slot.
//!
//! This is the one module of the store with `unsafe`: opening the memory
//! map (see the SAFETY comment).

use super::lease::{LeaseAckError, LeaseGrant, LeaseId, LeaseNotice, LeaseRequest};
use super::durable::{encode_id, DurableRecord};
use super::oplock::{AckError, OpenCheck, OplockRecord};
use super::records::{decode_key, encode_key, LockRecord, ShareRecord};
use super::{ByteRangeLock, Closed, LeaseAcked, FileKey, GlobalOpenId, LockError, OpenError, ShareModeEntry, StateStore, StoreError, Unlocked};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions, RwTxn, WithoutTls};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

/// Size of the memory map: an upper bound on the records, not memory used
/// (the file grows as records are written). A record of a file with one
/// open is 27 bytes, so this holds millions of opens.
const MAP_SIZE: usize = 256 << 20;
/// Concurrent read transactions over all processes.
const MAX_READERS: u32 = 4096;
/// The environment's subdirectory in the state directory.
const SUBDIR: &str = "locking.lmdb";

type Db = Database<'static, Bytes, Bytes>;

pub struct LmdbStore {
    env: Env<WithoutTls>,
    share: Db,
    brl: Db,
    oplock: Db,
    /// The lease table: ClientGUID + LeaseKey -> the file's key.
    lease: Db,
    /// Durable opens by persistent id (durable.rs).
    durable: Db,
    path: PathBuf,
}

/// LMDB must not open one environment twice in a process (closing one
/// would drop the other's file locks): each path is opened once and shared.
static OPENED: Mutex<Vec<(PathBuf, Weak<LmdbStore>)>> = Mutex::new(Vec::new());

trait Record: Default {
    fn encode(&self) -> Vec<u8>;
    fn decode(b: &[u8]) -> Result<Self, StoreError>;
    fn is_empty(&self) -> bool;
}

impl Record for ShareRecord {
    fn encode(&self) -> Vec<u8> {
        ShareRecord::encode(self)
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        ShareRecord::decode(b)
    }
    fn is_empty(&self) -> bool {
        ShareRecord::is_empty(self)
    }
}

impl Record for LockRecord {
    fn encode(&self) -> Vec<u8> {
        LockRecord::encode(self)
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        LockRecord::decode(b)
    }
    fn is_empty(&self) -> bool {
        LockRecord::is_empty(self)
    }
}

impl Record for OplockRecord {
    fn encode(&self) -> Vec<u8> {
        OplockRecord::encode(self)
    }
    fn decode(b: &[u8]) -> Result<Self, StoreError> {
        OplockRecord::decode(b)
    }
    fn is_empty(&self) -> bool {
        OplockRecord::is_empty(self)
    }
}

/// Loads a record, applies `f`, writes it back if it changed (an empty
/// record is deleted).
fn modify<T: Record, R>(db: Db, txn: &mut RwTxn<'_>, key: FileKey, f: impl FnOnce(&mut T) -> R) -> Result<R, StoreError> {
    let k = encode_key(key);
    let old = db.get(txn, &k)?.map(<[u8]>::to_vec);
    let mut rec = match &old {
        Some(b) => T::decode(b)?,
        None => T::default(),
    };
    let r = f(&mut rec);
    if rec.is_empty() {
        if old.is_some() {
            db.delete(txn, &k)?;
        }
    } else {
        let new = rec.encode();
        if old.as_deref() != Some(&new[..]) {
            db.put(txn, &k, &new)?;
        }
    }
    Ok(r)
}

impl LmdbStore {
    /// Opens (creates) the environment under `dir`, or returns the one this
    /// process already has open there.
    pub fn open(dir: &Path) -> Result<Arc<LmdbStore>, StoreError> {
        let path = dir.join(SUBDIR);
        std::fs::create_dir_all(&path)?;
        let path = path.canonicalize()?;
        let mut opened = OPENED.lock().unwrap_or_else(|p| p.into_inner());
        opened.retain(|(_, w)| w.strong_count() > 0);
        if let Some(s) = opened.iter().find(|(p, _)| *p == path).and_then(|(_, w)| w.upgrade()) {
            return Ok(s);
        }
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.map_size(MAP_SIZE).max_readers(MAX_READERS).max_dbs(8);
        // SAFETY: `flags`: NO_SYNC, NO_META_SYNC and MAP_ASYNC only give up
        // durability after a system crash, and the store is cleared at every
        // start. WRITE_MAP (commits write into the map instead of pwrite:
        // about 10x faster per transaction here) lets a stray write through
        // the map corrupt it; heed hands out no mutable view of the map, and
        // this crate writes only through `put`/`delete`.
        // `open`: the map's file is only ever changed through LMDB (by this
        // and other smbdirect processes, each opening it once per process,
        // which OPENED ensures here), it lives on a local file system (the
        // state directory), and LMDB's lock file coordinates all of them.
        let env = unsafe {
            opts.flags(EnvFlags::NO_SYNC | EnvFlags::NO_META_SYNC | EnvFlags::WRITE_MAP | EnvFlags::MAP_ASYNC);
            opts.open(&path)?
        };
        // Reader slots of processes that died are free again.
        let _ = env.clear_stale_readers();
        let wtxn = env.write_txn()?;
        let (share, brl, oplock, lease, durable) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, heed::Error> {
                let share: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("share"))?;
                let brl: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("brl"))?;
                let oplock: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("oplock"))?;
                let lease: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("lease"))?;
                let durable: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("durable"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((share, brl, oplock, lease, durable)))
            })?
            .unwrap_commit();
        let s = Arc::new(LmdbStore { env, share, brl, oplock, lease, durable, path: path.clone() });
        opened.push((path, Arc::downgrade(&s)));
        Ok(s)
    }

    /// Where the environment lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops every record.
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut txn = self.env.write_txn()?;
        self.share.clear(&mut txn)?;
        self.brl.clear(&mut txn)?;
        self.oplock.clear(&mut txn)?;
        self.lease.clear(&mut txn)?;
        self.durable.clear(&mut txn)?;
        txn.commit()?;
        Ok(())
    }

    fn write<R, E: From<StoreError>>(&self, f: impl FnOnce(&mut RwTxn<'_>) -> Result<R, E>) -> Result<R, E> {
        let mut txn = self.env.write_txn().map_err(StoreError::from)?;
        let r = f(&mut txn)?;
        txn.commit().map_err(StoreError::from)?;
        Ok(r)
    }

    fn read<T: Record>(&self, db: Db, key: FileKey) -> Result<Option<T>, StoreError> {
        let txn = self.env.read_txn()?;
        let v = db.get(&txn, &encode_key(key))?;
        v.map(T::decode).transpose()
    }

    fn durables(&self, txn: &heed::RoTxn<'_>) -> Result<Vec<(u64, DurableRecord)>, StoreError> {
        let mut v = Vec::new();
        for item in self.durable.iter(txn)? {
            let (_, b) = item?;
            let r = DurableRecord::decode(b)?;
            v.push((r.persistent_id, r));
        }
        Ok(v)
    }

    fn durable_read(&self, id: u64) -> Result<Option<DurableRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        let v = self.durable.get(&txn, &encode_id(id))?;
        v.map(DurableRecord::decode).transpose()
    }

    fn all<T: Record>(&self, db: Db, txn: &heed::RoTxn<'_>) -> Result<Vec<(FileKey, T)>, StoreError> {
        let mut v = Vec::new();
        for item in db.iter(txn)? {
            let (k, b) = item?;
            v.push((decode_key(k)?, T::decode(b)?));
        }
        Ok(v)
    }
}

impl StateStore for LmdbStore {
    fn open_file(&self, key: FileKey, entry: ShareModeEntry) -> Result<(), OpenError> {
        // A refused open changes nothing, so its transaction may commit too.
        self.write(|t| modify(self.share, t, key, |r: &mut ShareRecord| r.open(entry)))?
    }

    fn close_file(&self, key: FileKey, open: GlobalOpenId) -> Result<Closed, StoreError> {
        self.write(|t| {
            let mut c = Closed { delete: modify(self.share, t, key, |r: &mut ShareRecord| r.close(open))?.unwrap_or(false), wake: Vec::new() };
            modify(self.brl, t, key, |r: &mut LockRecord| r.remove_owner(open, &mut c.wake))?;
            let mut gone = Vec::new();
            modify(self.oplock, t, key, |r: &mut OplockRecord| r.remove(open, &mut c.wake, &mut gone))?;
            for g in gone {
                self.lease.delete(t, &g.encode())?;
            }
            Ok(c)
        })
    }

    fn deleted(&self, key: FileKey) -> Result<(), StoreError> {
        self.write(|t| modify(self.share, t, key, |r: &mut ShareRecord| r.deleted()))
    }

    fn delete_pending(&self, key: FileKey) -> Result<bool, StoreError> {
        Ok(self.read::<ShareRecord>(self.share, key)?.is_some_and(|r| r.delete_pending))
    }

    fn set_delete_pending(&self, key: FileKey, open: GlobalOpenId, pending: bool) -> Result<(), StoreError> {
        self.write(|t| {
            modify(self.share, t, key, |r: &mut ShareRecord| {
                if r.entries.is_empty() {
                    return;
                }
                r.delete_pending = pending;
                for e in r.entries.iter_mut().filter(|e| e.open == open) {
                    e.delete_on_close = pending;
                }
            })
        })
    }

    fn has_opens(&self, key: FileKey) -> Result<bool, StoreError> {
        Ok(self.read::<ShareRecord>(self.share, key)?.is_some_and(|r| !r.entries.is_empty()))
    }

    fn lock(&self, key: FileKey, owner: GlobalOpenId, locks: &[ByteRangeLock], max_per_open: usize, waiter: Option<u32>) -> Result<(), LockError> {
        // A refusal may have recorded a waiter: commit either way.
        self.write(|t| modify(self.brl, t, key, |r: &mut LockRecord| r.lock(owner, locks, max_per_open, waiter)))?
    }

    fn unlock(&self, key: FileKey, owner: GlobalOpenId, ranges: &[(u64, u64)]) -> Result<Unlocked, StoreError> {
        self.write(|t| {
            let mut wake = Vec::new();
            let released = modify(self.brl, t, key, |r: &mut LockRecord| r.unlock(owner, ranges, &mut wake))?;
            Ok(Unlocked { released, wake })
        })
    }

    fn unwait(&self, key: FileKey, worker: u32) -> Result<(), StoreError> {
        self.write(|t| modify(self.brl, t, key, |r: &mut LockRecord| r.waiters.retain(|w| *w != worker)))
    }

    fn io_conflict(&self, key: FileKey, owner: GlobalOpenId, offset: u64, len: u64, write: bool) -> Result<bool, StoreError> {
        if len == 0 {
            return Ok(false);
        }
        Ok(self.read::<LockRecord>(self.brl, key)?.is_some_and(|r| r.io_conflict(owner, offset, len, write)))
    }

    fn purge_worker(&self, worker: u32) -> Result<Vec<(u32, FileKey)>, StoreError> {
        let _ = self.env.clear_stale_readers();
        self.write(|t| {
            let mut wake = Vec::new();
            for (k, mut r) in self.all::<ShareRecord>(self.share, t)? {
                if r.purge(worker) {
                    modify(self.share, t, k, |x: &mut ShareRecord| *x = std::mem::take(&mut r))?;
                }
            }
            for (k, mut r) in self.all::<LockRecord>(self.brl, t)? {
                let mut w = Vec::new();
                if r.purge(worker, &mut w) {
                    modify(self.brl, t, k, |x: &mut LockRecord| *x = std::mem::take(&mut r))?;
                }
                wake.extend(w.into_iter().map(|w| (w, k)));
            }
            let mut gone = Vec::new();
            for (k, mut r) in self.all::<OplockRecord>(self.oplock, t)? {
                let mut w = Vec::new();
                if r.purge(worker, &mut w, &mut gone) {
                    modify(self.oplock, t, k, |x: &mut OplockRecord| *x = std::mem::take(&mut r))?;
                }
                wake.extend(w.into_iter().map(|w| (w, k)));
            }
            for g in gone {
                self.lease.delete(t, &g.encode())?;
            }
            for (id, r) in self.durables(t)? {
                if r.open.worker == worker {
                    self.durable.delete(t, &encode_id(id))?;
                    wake.extend(r.waiters.iter().map(|w| (*w, r.file)));
                }
            }
            Ok(wake)
        })
    }

    fn oplock_open(&self, key: FileKey, new: &ShareModeEntry, lease: Option<&LeaseId>, retry: bool, overwrite: bool, level2: bool, now_ms: u64, timeout_ms: u64, waiter: u32) -> Result<(OpenCheck, Vec<u32>), StoreError> {
        // Most files have no oplock record: look before taking the writer's lock.
        if self.read::<OplockRecord>(self.oplock, key)?.is_none() {
            return Ok((OpenCheck::Proceed, Vec::new()));
        }
        self.write(|t| {
            let share: ShareRecord = self.share.get(t, &encode_key(key))?.map(ShareRecord::decode).transpose()?.unwrap_or_default();
            let mut notify = Vec::new();
            let c = modify(self.oplock, t, key, |r: &mut OplockRecord| r.check_open(&share, new, lease, retry, overwrite, level2, now_ms, timeout_ms, waiter, &mut notify))?;
            Ok((c, notify))
        })
    }

    fn oplock_grant(&self, key: FileKey, open: GlobalOpenId, requested: u8, level2: bool) -> Result<u8, StoreError> {
        self.write(|t| {
            let share: ShareRecord = self.share.get(t, &encode_key(key))?.map(ShareRecord::decode).transpose()?.unwrap_or_default();
            modify(self.oplock, t, key, |r: &mut OplockRecord| r.grant(&share, open, requested, level2))
        })
    }

    fn oplock_break_level2(&self, key: FileKey, by: GlobalOpenId, now_ms: u64) -> Result<Vec<u32>, StoreError> {
        if !self.read::<OplockRecord>(self.oplock, key)?.is_some_and(|r| r.has_level2()) {
            return Ok(Vec::new());
        }
        self.write(|t| {
            let mut notify = Vec::new();
            modify(self.oplock, t, key, |r: &mut OplockRecord| r.break_level2(by, now_ms, &mut notify))?;
            Ok(notify)
        })
    }

    fn oplock_notices(&self, key: FileKey, worker: u32) -> Result<Vec<(u64, u8)>, StoreError> {
        if self.read::<OplockRecord>(self.oplock, key)?.is_none() {
            return Ok(Vec::new());
        }
        self.write(|t| modify(self.oplock, t, key, |r: &mut OplockRecord| r.take_notices(worker)))
    }

    fn oplock_ack(&self, key: FileKey, open: GlobalOpenId, level: u8) -> Result<(Result<u8, AckError>, Vec<u32>), StoreError> {
        self.write(|t| {
            let mut wake = Vec::new();
            let r = modify(self.oplock, t, key, |r: &mut OplockRecord| r.ack(open, level, &mut wake))?;
            Ok((r, wake))
        })
    }

    fn oplock_unwait(&self, key: FileKey, worker: u32) -> Result<(), StoreError> {
        self.write(|t| modify(self.oplock, t, key, |r: &mut OplockRecord| r.unwait(worker)))
    }

    fn oplocks(&self, key: FileKey) -> Result<OplockRecord, StoreError> {
        Ok(self.read::<OplockRecord>(self.oplock, key)?.unwrap_or_default())
    }

    fn lease_grant(&self, key: FileKey, open: GlobalOpenId, req: &LeaseRequest) -> Result<Option<LeaseGrant>, StoreError> {
        self.write(|t| {
            let k = encode_key(key);
            let id = req.id.encode();
            if let Some(f) = self.lease.get(t, &id)? {
                if decode_key(f)? != key {
                    return Ok(None);
                }
            } else {
                self.lease.put(t, &id, &k)?;
            }
            let share: ShareRecord = self.share.get(t, &k)?.map(ShareRecord::decode).transpose()?.unwrap_or_default();
            Ok(Some(modify(self.oplock, t, key, |r: &mut OplockRecord| r.grant_lease(&share, open, req))?))
        })
    }

    fn lease_handle_wait(&self, key: FileKey, by: GlobalOpenId, waiter: u32) -> Result<bool, StoreError> {
        if self.read::<OplockRecord>(self.oplock, key)?.as_ref().is_none_or(|r| !r.others_hold_handle(by)) {
            return Ok(false);
        }
        self.write(|t| modify(self.oplock, t, key, |r: &mut OplockRecord| r.handle_wait(by, waiter)))
    }

    fn lease_break_handle(&self, key: FileKey, by: GlobalOpenId, now_ms: u64, timeout_ms: u64) -> Result<(Vec<u32>, Option<u64>), StoreError> {
        if self.read::<OplockRecord>(self.oplock, key)?.is_none() {
            return Ok((Vec::new(), None));
        }
        self.write(|t| {
            let mut notify = Vec::new();
            let until = modify(self.oplock, t, key, |r: &mut OplockRecord| r.break_for_rename(by, now_ms, timeout_ms, &mut notify))?;
            Ok((notify, until))
        })
    }

    fn lease_break_parent(&self, dir: FileKey, except: Option<&LeaseId>, now_ms: u64) -> Result<Vec<u32>, StoreError> {
        // Most directories hold no lease: look before taking the writer's lock.
        if self.read::<OplockRecord>(self.oplock, dir)?.is_none_or(|r| r.leases.iter().all(|l| l.state == 0 || Some(&l.id) == except)) {
            return Ok(Vec::new());
        }
        self.write(|t| {
            let mut notify = Vec::new();
            modify(self.oplock, t, dir, |r: &mut OplockRecord| r.break_leases_parent(except, now_ms, &mut notify))?;
            Ok(notify)
        })
    }

    fn kernel_break(&self, key: FileKey, now_ms: u64, waiter: u32) -> Result<(Vec<u32>, bool), StoreError> {
        if self.read::<OplockRecord>(self.oplock, key)?.is_none() {
            return Ok((Vec::new(), false));
        }
        self.write(|t| {
            let mut notify = Vec::new();
            let caching = modify(self.oplock, t, key, |r: &mut OplockRecord| r.kernel_break(now_ms, waiter, &mut notify))?;
            Ok((notify, caching))
        })
    }

    fn lease_file(&self, id: &LeaseId) -> Result<Option<FileKey>, StoreError> {
        let txn = self.env.read_txn()?;
        self.lease.get(&txn, &id.encode())?.map(decode_key).transpose()
    }

    fn lease_notices(&self, key: FileKey, worker: u32) -> Result<Vec<LeaseNotice>, StoreError> {
        if self.read::<OplockRecord>(self.oplock, key)?.is_none_or(|r| r.leases.is_empty()) {
            return Ok(Vec::new());
        }
        self.write(|t| modify(self.oplock, t, key, |r: &mut OplockRecord| r.take_lease_notices(worker)))
    }

    fn lease_ack(&self, id: &LeaseId, state: u8, now_ms: u64) -> Result<LeaseAcked, StoreError> {
        self.write(|t| {
            let Some(f) = self.lease.get(t, &id.encode())? else { return Ok((Err(LeaseAckError::NotFound), Vec::new())) };
            let key = decode_key(f)?;
            let mut wake = Vec::new();
            let r = modify(self.oplock, t, key, |r: &mut OplockRecord| r.lease_ack(id, state, now_ms, &mut wake))?;
            Ok((r.map(|(s, e)| (key, s, e)), wake))
        })
    }

    fn snapshot(&self) -> Result<Vec<(FileKey, ShareRecord, LockRecord)>, StoreError> {
        let txn = self.env.read_txn()?;
        let mut m: HashMap<FileKey, (ShareRecord, LockRecord)> = HashMap::new();
        for (k, r) in self.all::<ShareRecord>(self.share, &txn)? {
            m.entry(k).or_default().0 = r;
        }
        for (k, r) in self.all::<LockRecord>(self.brl, &txn)? {
            m.entry(k).or_default().1 = r;
        }
        let mut v: Vec<_> = m.into_iter().map(|(k, (s, l))| (k, s, l)).collect();
        v.sort_by_key(|x| x.0);
        Ok(v)
    }

    // ---- Delete-on-close of a dead worker's opens (bindroute) ----
    fn set_delete_path(&self, key: FileKey, share: &str, path: &str) -> Result<(), StoreError> {
        self.write(|t| modify(self.share, t, key, |r: &mut ShareRecord| r.set_path(share, path)))
    }

    fn orphaned_deletes(&self) -> Result<Vec<(FileKey, String, String)>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.all::<ShareRecord>(self.share, &txn)?.into_iter().filter_map(|(k, r)| r.orphaned().map(|(s, p)| (k, s.clone(), p.clone()))).collect())

    }

    fn durable_put(&self, rec: &DurableRecord) -> Result<(), StoreError> {
        self.write(|t| Ok::<_, StoreError>(self.durable.put(t, &encode_id(rec.persistent_id), &rec.encode())?))
    }

    fn durable_get(&self, persistent_id: u64) -> Result<Option<DurableRecord>, StoreError> {
        self.durable_read(persistent_id)
    }

    fn durable_by_create_guid(&self, client_guid: &[u8; 16], create_guid: &[u8; 16]) -> Result<Option<DurableRecord>, StoreError> {
        // Durable opens are few: a scan, no second index.
        let txn = self.env.read_txn()?;
        Ok(self.durables(&txn)?.into_iter().map(|(_, r)| r).find(|r| r.version == 2 && r.client_guid == *client_guid && r.create_guid == *create_guid))
    }

    fn durable_disconnect(&self, persistent_id: u64, until_ms: u64) -> Result<Option<Vec<u32>>, StoreError> {
        self.write(|t| {
            let k = encode_id(persistent_id);
            let Some(mut r) = self.durable.get(t, &k)?.map(DurableRecord::decode).transpose()? else { return Ok(None) };
            r.disconnected_until = Some(until_ms);
            let waiters = std::mem::take(&mut r.waiters);
            self.durable.put(t, &k, &r.encode())?;
            Ok(Some(waiters))
        })
    }

    fn durable_watch(&self, persistent_id: u64, worker: u32) -> Result<Option<DurableRecord>, StoreError> {
        self.write(|t| {
            let k = encode_id(persistent_id);
            let Some(mut r) = self.durable.get(t, &k)?.map(DurableRecord::decode).transpose()? else { return Ok(None) };
            if !r.waiters.contains(&worker) {
                r.add_waiter(worker);
                self.durable.put(t, &k, &r.encode())?;
            }
            Ok(Some(r))
        })
    }

    fn durable_reclaim(&self, persistent_id: u64, now_ms: u64) -> Result<bool, StoreError> {
        self.write(|t| {
            let k = encode_id(persistent_id);
            let Some(mut r) = self.durable.get(t, &k)?.map(DurableRecord::decode).transpose()? else { return Ok(false) };
            if !r.reclaimable(now_ms) {
                return Ok(false);
            }
            r.disconnected_until = None;
            self.durable.put(t, &k, &r.encode())?;
            Ok(true)
        })
    }

    fn durable_move(&self, persistent_id: u64, to: GlobalOpenId, now_ms: u64) -> Result<Option<DurableRecord>, StoreError> {
        self.write(|t| {
            let k = encode_id(persistent_id);
            let Some(before) = self.durable.get(t, &k)?.map(DurableRecord::decode).transpose()? else { return Ok(None) };
            if !before.reclaimable(now_ms) {
                return Ok(None);
            }
            let (from, key) = (before.open, before.file);
            let mut r = before.clone();
            r.open = to;
            r.disconnected_until = None;
            r.waiters.clear();
            self.durable.put(t, &k, &r.encode())?;
            modify(self.share, t, key, |s: &mut ShareRecord| super::durable::move_share(s, from, to))?;
            modify(self.brl, t, key, |l: &mut LockRecord| super::durable::move_locks(l, from, to))?;
            modify(self.oplock, t, key, |o: &mut OplockRecord| super::durable::move_oplocks(o, from, to))?;
            Ok(Some(before))
        })
    }

    fn durable_remove(&self, persistent_id: u64) -> Result<Option<DurableRecord>, StoreError> {
        self.write(|t| {
            let k = encode_id(persistent_id);
            let r = self.durable.get(t, &k)?.map(DurableRecord::decode).transpose()?;
            if r.is_some() {
                self.durable.delete(t, &k)?;
            }
            Ok(r)
        })
    }

    fn durable_worker_of(&self, client_guid: &[u8; 16]) -> Result<Option<u32>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.durables(&txn)?.into_iter().map(|(_, r)| r).find(|r| r.client_guid == *client_guid && r.disconnected_until.is_some()).map(|r| r.open.worker))
    }

    fn durable_expired(&self, worker: u32, now_ms: u64) -> Result<Vec<DurableRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.durables(&txn)?.into_iter().map(|(_, r)| r).filter(|r| r.open.worker == worker && r.disconnected_until.is_some_and(|t| t <= now_ms)).collect())
    }

    fn durable_request_close(&self, persistent_id: u64) -> Result<bool, StoreError> {
        self.write(|t| {
            let k = encode_id(persistent_id);
            let Some(mut r) = self.durable.get(t, &k)?.map(DurableRecord::decode).transpose()? else { return Ok(false) };
            r.close_requested = true;
            self.durable.put(t, &k, &r.encode())?;
            Ok(true)
        })
    }

    fn durable_close_requests(&self, worker: u32) -> Result<Vec<DurableRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.durables(&txn)?.into_iter().map(|(_, r)| r).filter(|r| r.open.worker == worker && r.close_requested).collect())
    }

    fn durable_by_app_instance(&self, id: &[u8; 16]) -> Result<Vec<DurableRecord>, StoreError> {
        let txn = self.env.read_txn()?;
        Ok(self.durables(&txn)?.into_iter().map(|(_, r)| r).filter(|r| r.app_instance_id.as_ref() == Some(id)).collect())
    }
}
