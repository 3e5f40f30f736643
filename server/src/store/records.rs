//! The records the state store keeps per file and the rules that change
//! them. Both backends load a file's records, apply one of these pure
//! functions and write the result back inside one atomic step (a mutex in
//! memory, one write transaction in LMDB), so the rules live here once.
//!
//! Two records per file, as Samba keeps `locking.tdb` apart from
//! `brlock.tdb`: the share-mode record (opens and delete-pending) and the
//! byte-range-lock record (locks and the workers waiting for them).

use super::{ByteRangeLock, FileKey, GlobalOpenId, LockError, OpenError, ShareModeEntry, StoreError};

/// Who has the file open and whether its delete is pending (MS-FSA 2.1.5.1.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareRecord {
    pub delete_pending: bool,
    pub entries: Vec<ShareModeEntry>,
    /// The worker removing the file after its last close: the record (with
    /// delete pending, so new opens get DELETE_PENDING) stays until it says
    /// the file is gone, or until it is purged. [`PURGER`] when a purge
    /// left the delete to the supervisor.
    pub deleting: Option<u32>,
    /// Where the file is, (share name, path in the share), noted when an
    /// open with delete-on-close is made or the delete becomes pending: a
    /// purge that leaves such a file without opens has it deleted.
    pub path: Option<(String, String)>,
}

/// The `deleting` mark of a file whose last opens' worker died with its
/// delete pending: the supervisor deletes it (`StateStore::orphaned_deletes`).
pub const PURGER: u32 = u32::MAX - 1;
/// Longest share name or path a record keeps (longer ones are not noted).
pub const MAX_PATH_LEN: usize = 8192;

/// Byte-range locks on one file (MS-FSA 2.1.5.7) and the workers with a
/// blocked LOCK on it, to be woken when a lock goes away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockRecord {
    pub locks: Vec<ByteRangeLock>,
    pub waiters: Vec<u32>,
}

impl ShareRecord {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.delete_pending
    }

    /// Notes where the file is (see `path`) while it has opens.
    pub fn set_path(&mut self, share: &str, path: &str) {
        if !self.entries.is_empty() && share.len() <= MAX_PATH_LEN && path.len() <= MAX_PATH_LEN {
            self.path = Some((share.to_string(), path.to_string()));
        }
    }

    /// Adds `entry` unless the file's delete is pending or an existing open's
    /// share mode conflicts with it (MS-FSA 2.1.5.1.2.1).
    pub fn open(&mut self, entry: ShareModeEntry) -> Result<(), OpenError> {
        if self.delete_pending {
            return Err(OpenError::DeletePending);
        }
        if self.entries.iter().any(|e| share_conflict((e.access, e.share_access), entry.access, entry.share_access)) {
            return Err(OpenError::SharingViolation);
        }
        self.entries.push(entry);
        Ok(())
    }

    /// Removes `open`; returns `None` when it was not there, else whether the
    /// file must now be deleted (the last open of a file whose delete is
    /// pending, or set pending by this open's delete-on-close, is gone).
    pub fn close(&mut self, open: GlobalOpenId) -> Option<bool> {
        let pos = self.entries.iter().position(|e| e.open == open)?;
        let e = self.entries.remove(pos);
        if e.delete_on_close {
            self.delete_pending = true;
        }
        let delete = self.entries.is_empty() && self.delete_pending;
        if delete {
            self.deleting = Some(open.worker);
        }
        if self.entries.is_empty() && !delete {
            self.path = None;
        }
        Some(delete)
    }

    /// The file a close asked to delete is gone (or could not be removed):
    /// its record goes.
    pub fn deleted(&mut self) {
        if self.entries.is_empty() {
            self.delete_pending = false;
            self.path = None;
        }
        self.deleting = None;
    }

    /// Drops every open of `worker` as if closed (a delete-on-close among
    /// them makes the delete pending for the remaining opens); whether
    /// anything changed. With no open left and the delete pending, the
    /// file is deleted by the supervisor when its path was noted (the
    /// record stays, marked [`PURGER`], until `deleted`); else nobody is
    /// there to delete it, and the flag goes with the record.
    pub fn purge(&mut self, worker: u32) -> bool {
        let before = self.entries.len();
        if self.entries.iter().any(|e| e.open.worker == worker && e.delete_on_close) {
            self.delete_pending = true;
        }
        self.entries.retain(|e| e.open.worker != worker);
        let was_deleting = self.deleting == Some(worker);
        if was_deleting {
            self.deleting = None;
        }
        let changed = before != self.entries.len() || was_deleting;
        if changed && self.entries.is_empty() && self.deleting.is_none() && self.delete_pending && self.path.is_some() {
            self.deleting = Some(PURGER);
        }
        if self.entries.is_empty() && self.deleting.is_none() {
            self.delete_pending = false;
            self.path = None;
        }
        changed
    }

    /// The file a purge left to the supervisor to delete, if this is one.
    pub fn orphaned(&self) -> Option<&(String, String)> {
        self.path.as_ref().filter(|_| self.deleting == Some(PURGER) && self.entries.is_empty())
    }
}

impl LockRecord {
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.waiters.is_empty()
    }

    /// Takes all of `new` for `owner` at once or none of them. An open holds
    /// at most `max_per_open` locks (0 = no cap). When the request conflicts
    /// and `waiter` is given, that worker is recorded as waiting, in the same
    /// atomic step, so no unlock between the check and the wait is missed.
    pub fn lock(&mut self, owner: GlobalOpenId, new: &[ByteRangeLock], max_per_open: usize, waiter: Option<u32>) -> Result<(), LockError> {
        if max_per_open != 0 && self.locks.iter().filter(|l| l.owner == owner).count().saturating_add(new.len()) > max_per_open {
            return Err(LockError::TooMany);
        }
        let before = self.locks.len();
        for n in new {
            let n = ByteRangeLock { owner, ..*n };
            if self.locks.iter().any(|l| l.conflicts(&n)) {
                self.locks.truncate(before);
                if let Some(w) = waiter {
                    self.add_waiter(w);
                }
                return Err(LockError::NotGranted);
            }
            self.locks.push(n);
        }
        Ok(())
    }

    pub fn add_waiter(&mut self, worker: u32) {
        if !self.waiters.contains(&worker) {
            self.waiters.push(worker);
        }
    }

    /// Releases `ranges` of `owner` one by one, stopping at the first one not
    /// held (Windows keeps the ones before it released); returns how many
    /// were released. Any release hands back (and forgets) the waiters.
    pub fn unlock(&mut self, owner: GlobalOpenId, ranges: &[(u64, u64)], wake: &mut Vec<u32>) -> usize {
        let mut done = 0;
        for (offset, length) in ranges {
            match self.locks.iter().position(|l| l.owner == owner && l.offset == *offset && l.length == *length) {
                Some(p) => {
                    self.locks.remove(p);
                    done += 1;
                }
                None => break,
            }
        }
        if done > 0 {
            wake.append(&mut self.waiters);
        }
        done
    }

    /// Drops every lock of `owner` (its handle was closed); wakes the waiters
    /// if one went.
    pub fn remove_owner(&mut self, owner: GlobalOpenId, wake: &mut Vec<u32>) {
        let before = self.locks.len();
        self.locks.retain(|l| l.owner != owner);
        if before != self.locks.len() {
            wake.append(&mut self.waiters);
        }
    }

    /// Drops every lock and wait of `worker`; the other waiters are woken if
    /// one of its locks went.
    pub fn purge(&mut self, worker: u32, wake: &mut Vec<u32>) -> bool {
        let before = (self.locks.len(), self.waiters.len());
        self.locks.retain(|l| l.owner.worker != worker);
        self.waiters.retain(|w| *w != worker);
        if before.0 != self.locks.len() {
            wake.append(&mut self.waiters);
        }
        before != (self.locks.len(), self.waiters.len())
    }

    /// Whether READ/WRITE of `[offset, offset+len)` through `owner` runs into
    /// a lock (MS-FSA 2.1.4.10): reads are stopped by other opens' exclusive
    /// locks, writes by those and by any shared lock, one's own included.
    pub fn io_conflict(&self, owner: GlobalOpenId, offset: u64, len: u64, write: bool) -> bool {
        if len == 0 {
            return false;
        }
        let end = offset.saturating_add(len - 1);
        self.locks.iter().any(|b| {
            let overlap = b.length != 0 && b.offset <= end && offset <= b.offset.saturating_add(b.length - 1);
            overlap && ((b.exclusive && b.owner != owner) || (write && !b.exclusive))
        })
    }
}

impl ByteRangeLock {
    fn overlaps(&self, o: &ByteRangeLock) -> bool {
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
    pub fn conflicts(&self, new: &ByteRangeLock) -> bool {
        if !self.overlaps(new) {
            return false;
        }
        new.exclusive || (self.exclusive && self.owner != new.owner)
    }
}

const FILE_READ_DATA: u32 = 0x1;
const FILE_WRITE_DATA: u32 = 0x2;
const FILE_APPEND_DATA: u32 = 0x4;
const FILE_EXECUTE: u32 = 0x20;
const DELETE: u32 = 0x0001_0000;
const SHARE_READ: u32 = 1;
const SHARE_WRITE: u32 = 2;
const SHARE_DELETE: u32 = 4;

/// MS-FSA 2.1.5.1.2.1: does a new open (access, share) conflict with an
/// existing one? An open for attributes only (no data access) takes no part
/// in the check, on either side.
pub fn share_conflict(existing: (u32, u32), new_access: u32, new_share: u32) -> bool {
    let (ea, es) = existing;
    let data = |a: u32| a & (FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_EXECUTE | DELETE) != 0;
    if !data(ea) || !data(new_access) {
        return false;
    }
    let reads = |a: u32| a & (FILE_READ_DATA | FILE_EXECUTE) != 0;
    let writes = |a: u32| a & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
    let deletes = |a: u32| a & DELETE != 0;
    (reads(new_access) && es & SHARE_READ == 0)
        || (writes(new_access) && es & SHARE_WRITE == 0)
        || (deletes(new_access) && es & SHARE_DELETE == 0)
        || (reads(ea) && new_share & SHARE_READ == 0)
        || (writes(ea) && new_share & SHARE_WRITE == 0)
        || (deletes(ea) && new_share & SHARE_DELETE == 0)
}

// ---------------------------------------------------------------------------
// Encoding (LMDB values and keys). Every value starts with a version byte so
// a later layout can be told apart; all integers little-endian.

const RECORD_VERSION: u8 = 1;
/// The most entries one record may hold when decoded (a bound on what a
/// damaged record can make us allocate).
const MAX_ENTRIES: usize = 1 << 20;

/// Keys sort by device then inode (big-endian, so LMDB's byte order is numeric).
pub fn encode_key(k: FileKey) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&k.dev.to_be_bytes());
    b[8..].copy_from_slice(&k.ino.to_be_bytes());
    b
}

pub fn decode_key(b: &[u8]) -> Result<FileKey, StoreError> {
    let b: &[u8; 16] = b.try_into().map_err(|_| StoreError::Corrupt("file key of the wrong size"))?;
    let (d, i) = b.split_at(8);
    Ok(FileKey { dev: u64::from_be_bytes(d.try_into().unwrap_or_default()), ino: u64::from_be_bytes(i.try_into().unwrap_or_default()) })
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Corrupt("record cut short"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(super) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }
    pub(super) fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub(super) fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn text(&mut self) -> Result<String, StoreError> {
        let n = self.u32()? as usize;
        if n > MAX_PATH_LEN {
            return Err(StoreError::Corrupt("path length"));
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| StoreError::Corrupt("path text"))

    }

    pub(super) fn guid(&mut self) -> Result<[u8; 16], StoreError> {
        let mut b = [0u8; 16];
        b.copy_from_slice(self.take(16)?);
        Ok(b)
    }
    fn count(&mut self, each: usize) -> Result<usize, StoreError> {
        let n = self.u32()? as usize;
        if n > MAX_ENTRIES || n.saturating_mul(each) > self.0.len() {
            return Err(StoreError::Corrupt("entry count past the record's end"));
        }
        Ok(n)
    }
    fn version(&mut self) -> Result<(), StoreError> {
        match self.u8()? {
            RECORD_VERSION => Ok(()),
            _ => Err(StoreError::Corrupt("unknown record version")),
        }
    }
    pub(super) fn end(&self) -> Result<(), StoreError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt("bytes after the record"))
        }
    }
}

fn put_open(o: &mut Vec<u8>, id: GlobalOpenId) {
    o.extend_from_slice(&id.worker.to_le_bytes());
    o.extend_from_slice(&id.open.to_le_bytes());
}

const SHARE_ENTRY_LEN: usize = 4 + 8 + 4 + 4 + 1;
const LOCK_LEN: usize = 4 + 8 + 8 + 8 + 1;

impl ShareRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(10 + self.entries.len() * SHARE_ENTRY_LEN);
        o.push(RECORD_VERSION);
        o.push(u8::from(self.delete_pending));
        // The deleting worker, u32::MAX for none.
        o.extend_from_slice(&self.deleting.unwrap_or(u32::MAX).to_le_bytes());
        o.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            put_open(&mut o, e.open);
            o.extend_from_slice(&e.access.to_le_bytes());
            o.extend_from_slice(&e.share_access.to_le_bytes());
            o.push(u8::from(e.delete_on_close));
        }
        match &self.path {
            None => o.push(0),
            Some((share, path)) => {
                o.push(1);
                for t in [share, path] {
                    o.extend_from_slice(&(t.len() as u32).to_le_bytes());
                    o.extend_from_slice(t.as_bytes());
                }
            }
        }
        o
    }

    pub fn decode(b: &[u8]) -> Result<ShareRecord, StoreError> {
        let mut r = Reader(b);
        r.version()?;
        let delete_pending = r.u8()? != 0;
        let deleting = Some(r.u32()?).filter(|w| *w != u32::MAX);
        let n = r.count(SHARE_ENTRY_LEN)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let open = GlobalOpenId { worker: r.u32()?, open: r.u64()? };
            entries.push(ShareModeEntry { open, access: r.u32()?, share_access: r.u32()?, delete_on_close: r.u8()? != 0 });
        }
        let path = match r.u8()? {
            0 => None,
            1 => Some((r.text()?, r.text()?)),
            _ => return Err(StoreError::Corrupt("path flag")),
        };
        r.end()?;
        Ok(ShareRecord { delete_pending, entries, deleting, path })
    }
}

impl LockRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(9 + self.locks.len() * LOCK_LEN + self.waiters.len() * 4);
        o.push(RECORD_VERSION);
        o.extend_from_slice(&(self.locks.len() as u32).to_le_bytes());
        for l in &self.locks {
            put_open(&mut o, l.owner);
            o.extend_from_slice(&l.offset.to_le_bytes());
            o.extend_from_slice(&l.length.to_le_bytes());
            o.push(u8::from(l.exclusive));
        }
        o.extend_from_slice(&(self.waiters.len() as u32).to_le_bytes());
        for w in &self.waiters {
            o.extend_from_slice(&w.to_le_bytes());
        }
        o
    }

    pub fn decode(b: &[u8]) -> Result<LockRecord, StoreError> {
        let mut r = Reader(b);
        r.version()?;
        let n = r.count(LOCK_LEN)?;
        let mut locks = Vec::with_capacity(n);
        for _ in 0..n {
            let owner = GlobalOpenId { worker: r.u32()?, open: r.u64()? };
            locks.push(ByteRangeLock { owner, offset: r.u64()?, length: r.u64()?, exclusive: r.u8()? != 0 });
        }
        let n = r.count(4)?;
        let mut waiters = Vec::with_capacity(n);
        for _ in 0..n {
            waiters.push(r.u32()?);
        }
        r.end()?;
        Ok(LockRecord { locks, waiters })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(owner: u64, offset: u64, length: u64, exclusive: bool) -> ByteRangeLock {
        ByteRangeLock { owner: GlobalOpenId { worker: 0, open: owner }, offset, length, exclusive }
    }

    #[test]
    fn lock_conflict_rules() {
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
        // The same open number in another worker is another open.
        let other = ByteRangeLock { owner: GlobalOpenId { worker: 1, open: 1 }, ..l(1, 10, 10, false) };
        assert!(l(1, 10, 10, true).conflicts(&other));
    }

    #[test]
    fn records_round_trip() {
        let s = ShareRecord {
            delete_pending: true,
            deleting: Some(4),
            entries: vec![ShareModeEntry { open: GlobalOpenId { worker: 3, open: u64::MAX }, access: 0x12_0089, share_access: 7, delete_on_close: true }],
            path: Some(("share".into(), "dir/fïle.txt".into())),
        };
        assert_eq!(ShareRecord::decode(&ShareRecord { path: None, ..s.clone() }.encode()).unwrap(), ShareRecord { path: None, ..s.clone() });
        assert_eq!(ShareRecord::decode(&s.encode()).unwrap(), s);
        let r = LockRecord { locks: vec![l(5, 1, u64::MAX, true), l(6, 0, 0, false)], waiters: vec![1, 9] };
        assert_eq!(LockRecord::decode(&r.encode()).unwrap(), r);
        let k = FileKey { dev: 0x1234, ino: u64::MAX };
        assert_eq!(decode_key(&encode_key(k)).unwrap(), k);
        // Damaged records are errors, never panics or huge allocations.
        let mut b = r.encode();
        b[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(LockRecord::decode(&b).is_err());
        for cut in 0..s.encode().len() {
            assert!(ShareRecord::decode(&s.encode()[..cut]).is_err());
        }
        let mut b = s.encode();
        b[0] = 9;
        assert!(ShareRecord::decode(&b).is_err());
        b = s.encode();
        b.push(0);
        assert!(ShareRecord::decode(&b).is_err());
    }
}
