//! The in-process backend: both record tables behind one lock.

use super::lease::{LeaseAckError, LeaseGrant, LeaseId, LeaseNotice, LeaseRequest};
use super::durable::DurableRecord;
use super::oplock::{AckError, OpenCheck, OplockRecord};
use super::records::{LockRecord, ShareRecord};
use super::{ByteRangeLock, Closed, LeaseAcked, FileKey, GlobalOpenId, LockError, OpenError, ShareModeEntry, StateStore, StoreError, Unlocked};
use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Default)]
struct Tables {
    share: HashMap<FileKey, ShareRecord>,
    brl: HashMap<FileKey, LockRecord>,
    oplock: HashMap<FileKey, OplockRecord>,
    /// The lease table.
    lease: HashMap<LeaseId, FileKey>,
    durable: HashMap<u64, DurableRecord>,
}

#[derive(Default)]
pub struct MemStore {
    t: RwLock<Tables>,
}

impl MemStore {
    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        self.t.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.t.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies `f` to a record, dropping the record once empty.
fn with<R, T: Default>(map: &mut HashMap<FileKey, T>, key: FileKey, empty: impl Fn(&T) -> bool, f: impl FnOnce(&mut T) -> R) -> R {
    let rec = map.entry(key).or_default();
    let r = f(rec);
    if empty(rec) {
        map.remove(&key);
    }
    r
}

impl StateStore for MemStore {
    fn open_file(&self, key: FileKey, entry: ShareModeEntry) -> Result<(), OpenError> {
        with(&mut self.write().share, key, ShareRecord::is_empty, |r| r.open(entry))
    }

    fn close_file(&self, key: FileKey, open: GlobalOpenId) -> Result<Closed, StoreError> {
        let mut t = self.write();
        let mut closed = Closed { delete: with(&mut t.share, key, ShareRecord::is_empty, |r| r.close(open)).unwrap_or(false), wake: Vec::new() };
        with(&mut t.brl, key, LockRecord::is_empty, |r| r.remove_owner(open, &mut closed.wake));
        let mut gone = Vec::new();
        with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.remove(open, &mut closed.wake, &mut gone));
        for g in gone {
            t.lease.remove(&g);
        }
        Ok(closed)
    }

    fn deleted(&self, key: FileKey) -> Result<(), StoreError> {
        let mut t = self.write();
        if let Some(r) = t.share.get_mut(&key) {
            r.deleted();
            if r.is_empty() {
                t.share.remove(&key);
            }
        }
        Ok(())
    }

    fn delete_pending(&self, key: FileKey) -> Result<bool, StoreError> {
        Ok(self.read().share.get(&key).is_some_and(|r| r.delete_pending))
    }

    fn set_delete_pending(&self, key: FileKey, open: GlobalOpenId, pending: bool) -> Result<(), StoreError> {
        let mut t = self.write();
        if let Some(r) = t.share.get_mut(&key) {
            r.delete_pending = pending;
            for e in r.entries.iter_mut().filter(|e| e.open == open) {
                e.delete_on_close = pending;
            }
        }
        Ok(())
    }

    fn has_opens(&self, key: FileKey) -> Result<bool, StoreError> {
        Ok(self.read().share.get(&key).is_some_and(|r| !r.entries.is_empty()))
    }

    fn lock(&self, key: FileKey, owner: GlobalOpenId, locks: &[ByteRangeLock], max_per_open: usize, waiter: Option<u32>) -> Result<(), LockError> {
        with(&mut self.write().brl, key, LockRecord::is_empty, |r| r.lock(owner, locks, max_per_open, waiter))
    }

    fn unlock(&self, key: FileKey, owner: GlobalOpenId, ranges: &[(u64, u64)]) -> Result<Unlocked, StoreError> {
        let mut wake = Vec::new();
        let released = with(&mut self.write().brl, key, LockRecord::is_empty, |r| r.unlock(owner, ranges, &mut wake));
        Ok(Unlocked { released, wake })
    }

    fn unwait(&self, key: FileKey, worker: u32) -> Result<(), StoreError> {
        let mut t = self.write();
        if let Some(r) = t.brl.get_mut(&key) {
            r.waiters.retain(|w| *w != worker);
            if r.is_empty() {
                t.brl.remove(&key);
            }
        }
        Ok(())
    }

    fn io_conflict(&self, key: FileKey, owner: GlobalOpenId, offset: u64, len: u64, write: bool) -> Result<bool, StoreError> {
        Ok(self.read().brl.get(&key).is_some_and(|r| r.io_conflict(owner, offset, len, write)))
    }

    fn purge_worker(&self, worker: u32) -> Result<Vec<(u32, FileKey)>, StoreError> {
        let mut t = self.write();
        t.share.retain(|_, r| {
            r.purge(worker);
            !r.is_empty()
        });
        let mut wake = Vec::new();
        t.brl.retain(|k, r| {
            let mut w = Vec::new();
            r.purge(worker, &mut w);
            wake.extend(w.into_iter().map(|w| (w, *k)));
            !r.is_empty()
        });
        let mut gone = Vec::new();
        t.oplock.retain(|k, r| {
            let mut w = Vec::new();
            r.purge(worker, &mut w, &mut gone);
            wake.extend(w.into_iter().map(|w| (w, *k)));
            !r.is_empty()
        });
        for g in gone {
            t.lease.remove(&g);
        }
        t.durable.retain(|_, r| {
            let keep = r.open.worker != worker;
            if !keep {
                wake.extend(r.waiters.iter().map(|w| (*w, r.file)));
            }
            keep
        });
        Ok(wake)
    }

    fn oplock_open(&self, key: FileKey, new: &ShareModeEntry, lease: Option<&LeaseId>, retry: bool, overwrite: bool, level2: bool, now_ms: u64, timeout_ms: u64, waiter: u32) -> Result<(OpenCheck, Vec<u32>), StoreError> {
        let mut t = self.write();
        let Tables { share, oplock, .. } = &mut *t;
        if !oplock.contains_key(&key) {
            return Ok((OpenCheck::Proceed, Vec::new()));
        }
        let empty = ShareRecord::default();
        let s = share.get(&key).unwrap_or(&empty);
        let mut notify = Vec::new();
        let c = with(oplock, key, OplockRecord::is_empty, |r| r.check_open(s, new, lease, retry, overwrite, level2, now_ms, timeout_ms, waiter, &mut notify));
        Ok((c, notify))
    }

    fn oplock_grant(&self, key: FileKey, open: GlobalOpenId, requested: u8, level2: bool) -> Result<u8, StoreError> {
        let mut t = self.write();
        let Tables { share, oplock, .. } = &mut *t;
        let empty = ShareRecord::default();
        let s = share.get(&key).unwrap_or(&empty);
        Ok(with(oplock, key, OplockRecord::is_empty, |r| r.grant(s, open, requested, level2)))
    }

    fn oplock_break_level2(&self, key: FileKey, by: GlobalOpenId, now_ms: u64) -> Result<Vec<u32>, StoreError> {
        if !self.read().oplock.get(&key).is_some_and(OplockRecord::has_level2) {
            return Ok(Vec::new());
        }
        let mut notify = Vec::new();
        with(&mut self.write().oplock, key, OplockRecord::is_empty, |r| r.break_level2(by, now_ms, &mut notify));
        Ok(notify)
    }

    fn oplock_notices(&self, key: FileKey, worker: u32) -> Result<Vec<(u64, u8)>, StoreError> {
        let mut t = self.write();
        if !t.oplock.contains_key(&key) {
            return Ok(Vec::new());
        }
        Ok(with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.take_notices(worker)))
    }

    fn oplock_ack(&self, key: FileKey, open: GlobalOpenId, level: u8) -> Result<(Result<u8, AckError>, Vec<u32>), StoreError> {
        let mut wake = Vec::new();
        let r = with(&mut self.write().oplock, key, OplockRecord::is_empty, |r| r.ack(open, level, &mut wake));
        Ok((r, wake))
    }

    fn oplock_unwait(&self, key: FileKey, worker: u32) -> Result<(), StoreError> {
        let mut t = self.write();
        if t.oplock.contains_key(&key) {
            with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.unwait(worker));
        }
        Ok(())
    }

    fn oplocks(&self, key: FileKey) -> Result<OplockRecord, StoreError> {
        Ok(self.read().oplock.get(&key).cloned().unwrap_or_default())
    }

    fn lease_grant(&self, key: FileKey, open: GlobalOpenId, req: &LeaseRequest) -> Result<Option<LeaseGrant>, StoreError> {
        let mut t = self.write();
        let Tables { share, oplock, lease, .. } = &mut *t;
        if lease.get(&req.id).is_some_and(|f| *f != key) {
            return Ok(None);
        }
        lease.insert(req.id, key);
        let empty = ShareRecord::default();
        let s = share.get(&key).unwrap_or(&empty);
        Ok(Some(with(oplock, key, OplockRecord::is_empty, |r| r.grant_lease(s, open, req))))
    }

    fn lease_handle_wait(&self, key: FileKey, by: GlobalOpenId, waiter: u32) -> Result<bool, StoreError> {
        let mut t = self.write();
        if !t.oplock.contains_key(&key) {
            return Ok(false);
        }
        Ok(with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.handle_wait(by, waiter)))
    }

    fn lease_break_handle(&self, key: FileKey, by: GlobalOpenId, now_ms: u64, timeout_ms: u64) -> Result<(Vec<u32>, Option<u64>), StoreError> {
        let mut t = self.write();
        if !t.oplock.contains_key(&key) {
            return Ok((Vec::new(), None));
        }
        let mut notify = Vec::new();
        let until = with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.break_for_rename(by, now_ms, timeout_ms, &mut notify));
        Ok((notify, until))
    }

    fn lease_break_parent(&self, dir: FileKey, except: Option<&LeaseId>, now_ms: u64) -> Result<Vec<u32>, StoreError> {
        let mut t = self.write();
        if t.oplock.get(&dir).is_none_or(|r| r.leases.is_empty()) {
            return Ok(Vec::new());
        }
        let mut notify = Vec::new();
        with(&mut t.oplock, dir, OplockRecord::is_empty, |r| r.break_leases_parent(except, now_ms, &mut notify));
        Ok(notify)
    }

    fn kernel_break(&self, key: FileKey, now_ms: u64, waiter: u32) -> Result<(Vec<u32>, bool), StoreError> {
        let mut t = self.write();
        if !t.oplock.contains_key(&key) {
            return Ok((Vec::new(), false));
        }
        let mut notify = Vec::new();
        let caching = with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.kernel_break(now_ms, waiter, &mut notify));
        Ok((notify, caching))
    }

    fn lease_file(&self, id: &LeaseId) -> Result<Option<FileKey>, StoreError> {
        Ok(self.read().lease.get(id).copied())
    }

    fn lease_notices(&self, key: FileKey, worker: u32) -> Result<Vec<LeaseNotice>, StoreError> {
        let mut t = self.write();
        if t.oplock.get(&key).is_none_or(|r| r.leases.is_empty()) {
            return Ok(Vec::new());
        }
        Ok(with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.take_lease_notices(worker)))
    }

    fn lease_ack(&self, id: &LeaseId, state: u8, now_ms: u64) -> Result<LeaseAcked, StoreError> {
        let mut t = self.write();
        let Some(key) = t.lease.get(id).copied() else { return Ok((Err(LeaseAckError::NotFound), Vec::new())) };
        let mut wake = Vec::new();
        let r = with(&mut t.oplock, key, OplockRecord::is_empty, |r| r.lease_ack(id, state, now_ms, &mut wake));
        Ok((r.map(|(s, e)| (key, s, e)), wake))
    }

    fn snapshot(&self) -> Result<Vec<(FileKey, ShareRecord, LockRecord)>, StoreError> {
        let t = self.read();
        let mut keys: Vec<FileKey> = t.share.keys().chain(t.brl.keys()).copied().collect();
        keys.sort();
        keys.dedup();
        Ok(keys.into_iter().map(|k| (k, t.share.get(&k).cloned().unwrap_or_default(), t.brl.get(&k).cloned().unwrap_or_default())).collect())
    }

    // ---- Delete-on-close of a dead worker's opens (bindroute) ----
    fn set_delete_path(&self, key: FileKey, share: &str, path: &str) -> Result<(), StoreError> {
        if let Some(r) = self.write().share.get_mut(&key) {
            r.set_path(share, path);
        }
        Ok(())
    }

    fn orphaned_deletes(&self) -> Result<Vec<(FileKey, String, String)>, StoreError> {
        Ok(self.read().share.iter().filter_map(|(k, r)| r.orphaned().map(|(s, p)| (*k, s.clone(), p.clone()))).collect())

    }

    fn durable_put(&self, rec: &DurableRecord) -> Result<(), StoreError> {
        self.write().durable.insert(rec.persistent_id, rec.clone());
        Ok(())
    }

    fn durable_get(&self, persistent_id: u64) -> Result<Option<DurableRecord>, StoreError> {
        Ok(self.read().durable.get(&persistent_id).cloned())
    }

    fn durable_by_create_guid(&self, client_guid: &[u8; 16], create_guid: &[u8; 16]) -> Result<Option<DurableRecord>, StoreError> {
        Ok(self.read().durable.values().find(|r| r.version == 2 && r.client_guid == *client_guid && r.create_guid == *create_guid).cloned())
    }

    fn durable_disconnect(&self, persistent_id: u64, until_ms: u64) -> Result<Option<Vec<u32>>, StoreError> {
        Ok(self.write().durable.get_mut(&persistent_id).map(|r| {
            r.disconnected_until = Some(until_ms);
            std::mem::take(&mut r.waiters)
        }))
    }

    fn durable_watch(&self, persistent_id: u64, worker: u32) -> Result<Option<DurableRecord>, StoreError> {
        Ok(self.write().durable.get_mut(&persistent_id).map(|r| {
            r.add_waiter(worker);
            r.clone()
        }))
    }

    fn durable_reclaim(&self, persistent_id: u64, now_ms: u64) -> Result<bool, StoreError> {
        let mut t = self.write();
        match t.durable.get_mut(&persistent_id) {
            Some(r) if r.reclaimable(now_ms) => {
                r.disconnected_until = None;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn durable_move(&self, persistent_id: u64, to: GlobalOpenId, now_ms: u64) -> Result<Option<DurableRecord>, StoreError> {
        let mut t = self.write();
        let Some(r) = t.durable.get_mut(&persistent_id) else { return Ok(None) };
        if !r.reclaimable(now_ms) {
            return Ok(None);
        }
        let before = r.clone();
        r.open = to;
        r.disconnected_until = None;
        r.waiters.clear();
        let (from, key) = (before.open, before.file);
        if let Some(s) = t.share.get_mut(&key) {
            super::durable::move_share(s, from, to);
        }
        if let Some(l) = t.brl.get_mut(&key) {
            super::durable::move_locks(l, from, to);
        }
        if let Some(o) = t.oplock.get_mut(&key) {
            super::durable::move_oplocks(o, from, to);
        }
        Ok(Some(before))
    }

    fn durable_remove(&self, persistent_id: u64) -> Result<Option<DurableRecord>, StoreError> {
        Ok(self.write().durable.remove(&persistent_id))
    }

    fn durable_worker_of(&self, client_guid: &[u8; 16]) -> Result<Option<u32>, StoreError> {
        Ok(self.read().durable.values().find(|r| r.client_guid == *client_guid && r.disconnected_until.is_some()).map(|r| r.open.worker))
    }

    fn durable_expired(&self, worker: u32, now_ms: u64) -> Result<Vec<DurableRecord>, StoreError> {
        Ok(self.read().durable.values().filter(|r| r.open.worker == worker && r.disconnected_until.is_some_and(|t| t <= now_ms)).cloned().collect())
    }

    fn durable_request_close(&self, persistent_id: u64) -> Result<bool, StoreError> {
        Ok(self.write().durable.get_mut(&persistent_id).map(|r| r.close_requested = true).is_some())
    }

    fn durable_close_requests(&self, worker: u32) -> Result<Vec<DurableRecord>, StoreError> {
        Ok(self.read().durable.values().filter(|r| r.open.worker == worker && r.close_requested).cloned().collect())
    }

    fn durable_by_app_instance(&self, id: &[u8; 16]) -> Result<Vec<DurableRecord>, StoreError> {
        Ok(self.read().durable.values().filter(|r| r.app_instance_id.as_ref() == Some(id)).cloned().collect())
    }
}
