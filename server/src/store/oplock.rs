//! Oplock records: per file, which opens hold an oplock (MS-FSA 2.1.4.12,
//! MS-SMB2 3.3.1.10 Open.OplockLevel/OplockState) and which workers wait
//! for a break to end. Like the other records, pure functions that both
//! backends apply inside one atomic step.
//!
//! A break is three steps that may run in three processes: the operation
//! that needs it marks the holder `breaking` (and, for a CREATE, records its
//! worker as a waiter); the holder's worker, woken for the file, takes the
//! notices that are its own ([`OplockRecord::take_notices`]) and sends
//! OPLOCK_BREAK; the acknowledgment (or the break timeout, enforced by the
//! next check after it passed) ends the break and wakes the waiters.

use super::lease::{decode_leases, encode_leases, LeaseHolder, LeaseId, HANDLE};
use super::records::{share_conflict, ShareRecord};
use super::{GlobalOpenId, ShareModeEntry, StoreError};

pub const LEVEL_NONE: u8 = 0x00;
pub const LEVEL_II: u8 = 0x01;
pub const LEVEL_EXCLUSIVE: u8 = 0x08;
pub const LEVEL_BATCH: u8 = 0x09;

/// One open's oplock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OplockHolder {
    pub open: GlobalOpenId,
    pub level: u8,
    /// While breaking: the level the holder is being broken to.
    pub breaking_to: Option<u8>,
    /// The holder's worker has sent the OPLOCK_BREAK notification.
    pub notified: bool,
    /// When the break began (ms since the Unix epoch), for the break timeout.
    pub break_started: u64,
}

/// The oplocks of one file and the workers waiting for one of its breaks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OplockRecord {
    pub holders: Vec<OplockHolder>,
    pub waiters: Vec<u32>,
    /// The file's leases (lease.rs).
    pub leases: Vec<LeaseHolder>,
}

/// What a new open must do about the file's oplocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenCheck {
    /// Go on (to the share-mode check).
    Proceed,
    /// Wait for a break: retry when woken or at `until` (ms since the Unix
    /// epoch), when the break times out.
    Wait { until: u64 },
}

/// An acknowledgment that does not fit the break (MS-SMB2 3.3.5.22.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The open is not breaking (STATUS_INVALID_DEVICE_STATE).
    NotBreaking,
    /// A level above the one broken to (STATUS_INVALID_OPLOCK_PROTOCOL); the
    /// oplock is gone.
    BadLevel,
}

/// What a "stat open" of oplocks may ask for: SYNCHRONIZE and the
/// attribute rights (MS-FSA 2.1.5.1.2).
const OPLOCK_STAT: u32 = 0x0010_0000 | 0x80 | 0x100;

/// A "stat open" as leases see it breaks no lease and does not count
/// against W: SYNCHRONIZE, the attribute rights and READ_CONTROL too (as
/// Windows and Samba; smbtorture's lease.statopen4).
pub fn is_stat_open(access: u32) -> bool {
    const STAT: u32 = 0x0010_0000 | 0x0002_0000 | 0x80 | 0x100;
    access & !STAT == 0
}

fn strong(level: u8) -> bool {
    matches!(level, LEVEL_EXCLUSIVE | LEVEL_BATCH)
}

impl OplockRecord {
    pub fn is_empty(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty() && self.leases.is_empty()
    }

    fn add_waiter(&mut self, w: u32) {
        if !self.waiters.contains(&w) {
            self.waiters.push(w);
        }
    }

    /// Breaks that ran past `timeout_ms` end as if acknowledged at the level
    /// broken to; whether any did.
    fn expire(&mut self, now: u64, timeout_ms: u64) -> bool {
        let mut any = self.expire_leases(now, timeout_ms);
        for h in &mut self.holders {
            if let Some(to) = h.breaking_to {
                if now >= h.break_started.saturating_add(timeout_ms) {
                    h.level = to;
                    h.breaking_to = None;
                    any = true;
                }
            }
        }
        self.holders.retain(|h| h.level != LEVEL_NONE || h.breaking_to.is_some());
        any
    }

    /// A new open of the file (MS-FSA 2.1.5.1.2 and 2.1.4.12): an exclusive
    /// or batch oplock of another open is broken, to level II when the new
    /// open keeps the data (to none when it overwrites, or level II is off),
    /// and the open waits for the break; an exclusive oplock is not broken
    /// for an open that the share modes refuse anyway (a batch oplock is:
    /// its client may close the handle it keeps cached). An overwriting open
    /// breaks level II oplocks to none without waiting. Opens for attributes
    /// only break nothing. Workers to wake (to send notices) go to `notify`.
    /// The file's leases other than the new open's own (`lease`) break too
    /// (lease.rs).
    #[allow(clippy::too_many_arguments)]
    pub fn check_open(
        &mut self,
        share: &ShareRecord,
        new: &ShareModeEntry,
        lease: Option<&LeaseId>,
        retry: bool,
        overwrite: bool,
        level2: bool,
        now: u64,
        timeout_ms: u64,
        waiter: u32,
        notify: &mut Vec<u32>,
    ) -> OpenCheck {
        if self.expire(now, timeout_ms) {
            notify.append(&mut self.waiters);
        }
        // READ_CONTROL breaks oplocks (smbtorture's oplock.statopen1) but
        // not leases (lease.statopen4: check_open_leases).
        if new.access & !OPLOCK_STAT == 0 && !overwrite {
            return OpenCheck::Proceed;
        }
        let mut until: Option<u64> = None;
        for h in &mut self.holders {
            if h.open == new.open {
                continue;
            }
            if let Some(to) = h.breaking_to {
                if strong(h.level) {
                    until = Some(until.map_or(h.break_started + timeout_ms, |u: u64| u.min(h.break_started + timeout_ms)));
                } else if overwrite && to != LEVEL_NONE {
                    h.breaking_to = Some(LEVEL_NONE);
                }
                continue;
            }
            if strong(h.level) {
                if h.level == LEVEL_EXCLUSIVE {
                    let theirs = share.entries.iter().find(|e| e.open == h.open);
                    if theirs.is_some_and(|e| share_conflict((e.access, e.share_access), new.access, new.share_access)) {
                        continue;
                    }
                }
                h.breaking_to = Some(if overwrite || !level2 { LEVEL_NONE } else { LEVEL_II });
                h.notified = false;
                h.break_started = now;
                until = Some(until.map_or(now + timeout_ms, |u: u64| u.min(now + timeout_ms)));
                notify.push(h.open.worker);
            } else if h.level == LEVEL_II && overwrite {
                h.breaking_to = Some(LEVEL_NONE);
                h.notified = false;
                h.break_started = now;
                notify.push(h.open.worker);
            }
        }
        self.check_open_leases(share, new, lease, retry, overwrite, now, timeout_ms, notify, &mut until);
        match until {
            Some(until) => {
                self.add_waiter(waiter);
                OpenCheck::Wait { until }
            }
            None => OpenCheck::Proceed,
        }
    }

    /// Grants an oplock to `open` (after its share-mode entry was added):
    /// batch and exclusive only to the file's one open, else level II when
    /// no other open keeps an exclusive or batch oplock (and level II
    /// oplocks are on). Returns the level granted.
    pub fn grant(&mut self, share: &ShareRecord, open: GlobalOpenId, requested: u8, level2: bool) -> u8 {
        self.holders.retain(|h| h.open != open);
        // A lease caching handles keeps other opens from any oplock (as Windows).
        let others_strong = self.holders.iter().any(|h| strong(h.level) || h.breaking_to.is_some_and(strong))
            || self.leases.iter().any(|l| !l.opens.contains(&open) && (l.state | l.breaking_to.unwrap_or(0)) & HANDLE != 0);
        let alone = share.entries.iter().all(|e| e.open == open) && self.holders.is_empty();
        let level = match requested {
            LEVEL_BATCH | LEVEL_EXCLUSIVE if alone => requested,
            LEVEL_BATCH | LEVEL_EXCLUSIVE | LEVEL_II if level2 && !others_strong => LEVEL_II,
            _ => LEVEL_NONE,
        };
        if level != LEVEL_NONE {
            self.holders.push(OplockHolder { open, level, breaking_to: None, notified: false, break_started: 0 });
        }
        level
    }

    /// A write, a size change or a byte-range lock (MS-FSA 2.1.4.12): every
    /// level II oplock of the file, the writer's own included, is
    /// broken to none (no acknowledgment: MS-SMB2 2.2.24.1), and so are the
    /// read leases of other clients (lease.rs). Workers to wake go to `notify`.
    pub fn break_level2(&mut self, by: GlobalOpenId, now: u64, notify: &mut Vec<u32>) {
        self.break_leases_read(by, now, notify);
        for h in &mut self.holders {
            if h.level == LEVEL_II && h.breaking_to.is_none() {
                h.breaking_to = Some(LEVEL_NONE);
                h.notified = false;
                h.break_started = now;
                notify.push(h.open.worker);
            }
        }
    }

    /// A rename or delete through `by`: level II oplocks break to none (as
    /// before leases came), and other leases lose H (lease.rs).
    pub fn break_for_rename(&mut self, by: GlobalOpenId, now: u64, timeout_ms: u64, notify: &mut Vec<u32>) -> Option<u64> {
        for h in &mut self.holders {
            if h.level == LEVEL_II && h.breaking_to.is_none() {
                h.breaking_to = Some(LEVEL_NONE);
                h.notified = false;
                h.break_started = now;
                notify.push(h.open.worker);
            }
        }
        self.break_leases_handle(by, now, timeout_ms, notify)
    }

    /// Another program opened or changed the file (kernel oplocks,
    /// kernel_oplock.rs): every oplock and lease of it breaks to none.
    pub fn break_all(&mut self, now: u64, notify: &mut Vec<u32>) {
        for h in &mut self.holders {
            if h.level != LEVEL_NONE && h.breaking_to != Some(LEVEL_NONE) {
                h.breaking_to = Some(LEVEL_NONE);
                h.notified = false;
                h.break_started = now;
                notify.push(h.open.worker);
            }
        }
        self.break_leases_parent(None, now, notify);
    }

    /// Another program opens the file (kernel oplocks): [`Self::break_all`],
    /// and while anything still caches, `waiter` waits for it (an ack or a
    /// close wakes it). Whether anything still caches. Called again by the
    /// waiter after each wake-up: breaks already under way are not
    /// announced twice.
    pub fn kernel_break(&mut self, now: u64, waiter: u32, notify: &mut Vec<u32>) -> bool {
        self.break_all(now, notify);
        let caching = self.any_caching();
        if caching {
            self.add_waiter(waiter);
        }
        caching
    }

    /// A rename through `by` waiting for other leases to lose H: whether
    /// one still holds it and, if so, `waiter` waits (the ack or close that
    /// ends a break wakes it; it looks again with this, so no wake-up is
    /// lost between two acks).
    pub fn handle_wait(&mut self, by: GlobalOpenId, waiter: u32) -> bool {
        let held = self.others_hold_handle(by);
        if held {
            self.add_waiter(waiter);
        }
        held
    }

    /// Whether an oplock or lease of the file still caches anything.
    pub fn any_caching(&self) -> bool {
        self.holders.iter().any(|h| h.level != LEVEL_NONE) || self.leases.iter().any(|l| l.state != 0)
    }

    /// Whether any open holds a level II oplock (a cheap test before
    /// [`Self::break_level2`]).
    pub fn has_level2(&self) -> bool {
        self.holders.iter().any(|h| h.level == LEVEL_II && h.breaking_to.is_none()) || self.has_read_leases()
    }

    /// The breaks `worker` must now announce: (open, level broken to). A
    /// break from level II to none needs no acknowledgment, so that oplock
    /// is gone once announced.
    pub fn take_notices(&mut self, worker: u32) -> Vec<(u64, u8)> {
        let mut v = Vec::new();
        for h in &mut self.holders {
            if h.open.worker == worker && !h.notified {
                if let Some(to) = h.breaking_to {
                    h.notified = true;
                    v.push((h.open.open, to));
                    if h.level == LEVEL_II {
                        h.level = LEVEL_NONE;
                        h.breaking_to = None;
                    }
                }
            }
        }
        self.holders.retain(|h| h.level != LEVEL_NONE || h.breaking_to.is_some());
        v
    }

    /// OPLOCK_BREAK acknowledgment of `open` with `level`: the oplock is now
    /// `level` (gone for none); the waiters are handed back in `wake`.
    pub fn ack(&mut self, open: GlobalOpenId, level: u8, wake: &mut Vec<u32>) -> Result<u8, AckError> {
        let Some(pos) = self.holders.iter().position(|h| h.open == open && h.breaking_to.is_some()) else {
            return Err(AckError::NotBreaking);
        };
        let h = &mut self.holders[pos];
        let to = h.breaking_to.unwrap_or(LEVEL_NONE);
        wake.append(&mut self.waiters);
        let ok = level == LEVEL_NONE || (level == LEVEL_II && to == LEVEL_II);
        if !ok {
            self.holders.remove(pos);
            return Err(AckError::BadLevel);
        }
        h.level = level;
        h.breaking_to = None;
        if level == LEVEL_NONE {
            self.holders.remove(pos);
        }
        Ok(level)
    }

    /// The open closed: its oplock goes (and its place in a lease; leases
    /// left without opens go to `gone`), and the waiters are handed back.
    pub fn remove(&mut self, open: GlobalOpenId, wake: &mut Vec<u32>, gone: &mut Vec<LeaseId>) {
        let before = self.holders.len();
        self.holders.retain(|h| h.open != open);
        let leases = self.remove_lease_open(open, gone);
        if before != self.holders.len() || leases {
            wake.append(&mut self.waiters);
        }
    }

    /// Drops every oplock and wait of `worker`; the other waiters are woken
    /// if one of its oplocks went.
    pub fn purge(&mut self, worker: u32, wake: &mut Vec<u32>, gone: &mut Vec<LeaseId>) -> bool {
        let before = (self.holders.len(), self.waiters.len());
        self.holders.retain(|h| h.open.worker != worker);
        self.waiters.retain(|w| *w != worker);
        let leases = self.purge_leases(worker, gone);
        if before.0 != self.holders.len() || leases {
            wake.append(&mut self.waiters);
        }
        leases || before != (self.holders.len(), self.waiters.len())
    }

    pub fn unwait(&mut self, worker: u32) {
        self.waiters.retain(|w| *w != worker);
    }
}

// Encoding: version byte, holder count, holders, waiter count, waiters,
// then (version 2) the leases (lease.rs).
const VERSION: u8 = 2;
const HOLDER_LEN: usize = 4 + 8 + 1 + 1 + 1 + 1 + 8;
const MAX_ENTRIES: usize = 1 << 20;

impl OplockRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(9 + self.holders.len() * HOLDER_LEN + 4 * self.waiters.len());
        o.push(VERSION);
        o.extend_from_slice(&(self.holders.len() as u32).to_le_bytes());
        for h in &self.holders {
            o.extend_from_slice(&h.open.worker.to_le_bytes());
            o.extend_from_slice(&h.open.open.to_le_bytes());
            o.push(h.level);
            o.push(u8::from(h.breaking_to.is_some()));
            o.push(h.breaking_to.unwrap_or(0));
            o.push(u8::from(h.notified));
            o.extend_from_slice(&h.break_started.to_le_bytes());
        }
        o.extend_from_slice(&(self.waiters.len() as u32).to_le_bytes());
        for w in &self.waiters {
            o.extend_from_slice(&w.to_le_bytes());
        }
        encode_leases(&self.leases, &mut o);
        o
    }

    pub fn decode(b: &[u8]) -> Result<OplockRecord, StoreError> {
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], StoreError> {
            let s = b.get(at..at + n).ok_or(StoreError::Corrupt("oplock record cut short"))?;
            at += n;
            Ok(s)
        };
        let u32_ = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let u64_ = |s: &[u8]| {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        };
        if take(1)?[0] != VERSION {
            return Err(StoreError::Corrupt("unknown oplock record version"));
        }
        let n = u32_(take(4)?) as usize;
        if n > MAX_ENTRIES || n.saturating_mul(HOLDER_LEN) > b.len() {
            return Err(StoreError::Corrupt("oplock count past the record's end"));
        }
        let mut holders = Vec::with_capacity(n);
        for _ in 0..n {
            let s = take(HOLDER_LEN)?;
            holders.push(OplockHolder {
                open: GlobalOpenId { worker: u32_(&s[0..4]), open: u64_(&s[4..12]) },
                level: s[12],
                breaking_to: (s[13] != 0).then_some(s[14]),
                notified: s[15] != 0,
                break_started: u64_(&s[16..24]),
            });
        }
        let n = u32_(take(4)?) as usize;
        if n > MAX_ENTRIES || n.saturating_mul(4) > b.len() {
            return Err(StoreError::Corrupt("waiter count past the record's end"));
        }
        let mut waiters = Vec::with_capacity(n);
        for _ in 0..n {
            waiters.push(u32_(take(4)?));
        }
        let (leases, used) = decode_leases(b.get(at..).unwrap_or_default())?;
        if at + used != b.len() {
            return Err(StoreError::Corrupt("bytes after the oplock record"));
        }
        Ok(OplockRecord { holders, waiters, leases })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(w: u32, o: u64) -> GlobalOpenId {
        GlobalOpenId { worker: w, open: o }
    }
    fn e(open: GlobalOpenId, access: u32, share_access: u32) -> ShareModeEntry {
        ShareModeEntry { open, access, share_access, delete_on_close: false }
    }

    #[test]
    fn batch_break_and_ack() {
        let (a, b) = (id(1, 1), id(2, 1));
        let mut share = ShareRecord::default();
        let mut r = OplockRecord::default();
        share.open(e(a, 3, 7)).unwrap();
        assert_eq!(r.grant(&share, a, LEVEL_BATCH, true), LEVEL_BATCH);
        let mut notify = Vec::new();
        // A stat open breaks nothing; a reader breaks the batch oplock to level II.
        assert_eq!(r.check_open(&share, &e(b, 0x80, 7), None, false, false, true, 1000, 35_000, 2, &mut notify), OpenCheck::Proceed);
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, false, false, true, 1000, 35_000, 2, &mut notify), OpenCheck::Wait { until: 36_000 });
        assert_eq!(notify, vec![1]);
        assert_eq!(r.take_notices(2), vec![]);
        assert_eq!(r.take_notices(1), vec![(1, LEVEL_II)]);
        assert_eq!(r.take_notices(1), vec![], "announced once");
        let mut wake = Vec::new();
        assert_eq!(r.ack(a, LEVEL_II, &mut wake), Ok(LEVEL_II));
        assert_eq!(wake, vec![2]);
        assert_eq!(r.ack(a, LEVEL_II, &mut wake), Err(AckError::NotBreaking));
        share.open(e(b, 1, 7)).unwrap();
        assert_eq!(r.grant(&share, b, LEVEL_BATCH, true), LEVEL_II, "not alone: level II");
        // A write through b breaks both level II oplocks to none, with no ack.
        let mut notify = Vec::new();
        r.break_level2(b, 2000, &mut notify);
        assert_eq!(notify, vec![1, 2]);
        assert_eq!(r.take_notices(1), vec![(1, LEVEL_NONE)]);
        assert_eq!(r.holders.len(), 1);
        assert_eq!(r.take_notices(2), vec![(1, LEVEL_NONE)]);
        r.remove(b, &mut wake, &mut Vec::new());
        assert!(r.is_empty());
    }

    #[test]
    fn timeout_exclusive_and_bad_ack() {
        let (a, b) = (id(1, 1), id(1, 2));
        let mut share = ShareRecord::default();
        let mut r = OplockRecord::default();
        share.open(e(a, 3, 0)).unwrap();
        assert_eq!(r.grant(&share, a, LEVEL_EXCLUSIVE, true), LEVEL_EXCLUSIVE);
        let mut n = Vec::new();
        // The share modes refuse b anyway: the exclusive oplock stays.
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, false, false, true, 0, 100, 1, &mut n), OpenCheck::Proceed);
        share.entries[0].share_access = 7;
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, false, true, true, 0, 100, 1, &mut n), OpenCheck::Wait { until: 100 });
        assert_eq!(r.holders[0].breaking_to, Some(LEVEL_NONE), "overwrite breaks to none");
        // No ack: the break times out at the next check.
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, false, true, true, 50, 100, 1, &mut n), OpenCheck::Wait { until: 100 });
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, false, true, true, 100, 100, 1, &mut n), OpenCheck::Proceed);
        assert!(r.holders.is_empty());
        // An ack above the level broken to ends the oplock.
        let mut r = OplockRecord::default();
        let share = ShareRecord { entries: vec![e(a, 3, 7)], ..Default::default() };
        r.grant(&share, a, LEVEL_BATCH, true);
        r.check_open(&share, &e(b, 1, 7), None, false, true, true, 0, 100, 1, &mut n);
        assert_eq!(r.ack(a, LEVEL_II, &mut n), Err(AckError::BadLevel));
        assert!(r.holders.is_empty());
    }

    #[test]
    fn round_trip() {
        let r = OplockRecord {
            holders: vec![OplockHolder { open: id(3, u64::MAX), level: LEVEL_BATCH, breaking_to: Some(LEVEL_II), notified: true, break_started: 77 }],
            waiters: vec![4, 5],
            leases: Vec::new(),
        };
        assert_eq!(OplockRecord::decode(&r.encode()).unwrap(), r);
        let b = r.encode();
        for cut in 0..b.len() {
            assert!(OplockRecord::decode(&b[..cut]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert!(OplockRecord::decode(&long).is_err());
    }
}
