//! Leases (MS-SMB2 3.3.1.4 and 3.3.1.12 Lease, 3.3.5.9.8/3.3.5.9.11 grant,
//! 3.3.4.7 break, 3.3.5.22.2 acknowledgment; MS-FSA 2.1.5.1.2 and 2.1.4.12).
//!
//! A lease belongs to a client: it is named by (ClientGUID, LeaseKey)
//! ([`LeaseId`]) and covers every open that client makes of one file with
//! that key. Two records hold it, both global:
//! - the lease table, [`LeaseId`] -> [`FileKey`](super::FileKey), which
//!   refuses the same key on a second file and finds the file an
//!   acknowledgment (which names only the key) is about;
//! - per file, next to its oplocks in [`OplockRecord`], the lease's state
//!   (R, RH, RW, RWH), epoch, its opens and its break in progress, so that
//!   one atomic step of the store weighs oplocks and leases of a file
//!   against a new open together (a lease holder and an oplock holder on the
//!   same file: MS-FSA 2.1.5.17's rules as Windows applies them).
//!
//! A break follows the oplock's three steps (oplock.rs): the operation that
//! needs it sets `breaking_to`; a worker holding one of the lease's opens
//! takes the notice ([`OplockRecord::take_lease_notices`]) and sends
//! LEASE_BREAK; the acknowledgment or the break timeout ends it. A break
//! needed while one is in progress is kept in `pending_to` and started when
//! the first one ends.

use super::oplock::{is_stat_open, OplockRecord, LEVEL_NONE};
use super::records::{share_conflict, ShareRecord};
use super::{GlobalOpenId, ShareModeEntry, StoreError};

pub const READ: u8 = 0x1;
pub const HANDLE: u8 = 0x2;
pub const WRITE: u8 = 0x4;

/// A lease's name: the client's ClientGUID and its LeaseKey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId {
    pub client: [u8; 16],
    pub key: [u8; 16],
}

impl LeaseId {
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(&self.client);
        b[16..].copy_from_slice(&self.key);
        b
    }
}

/// One lease on a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub id: LeaseId,
    /// 1 or 2 (RqLs context of 32 or 52 bytes).
    pub version: u8,
    pub parent: Option<[u8; 16]>,
    /// READ | HANDLE | WRITE.
    pub state: u8,
    /// Lease.Epoch (version 2).
    pub epoch: u16,
    /// While breaking: the state the holder is being broken to.
    pub breaking_to: Option<u8>,
    /// A further break asked for during this one (started when it ends).
    pub pending_to: Option<u8>,
    /// The LEASE_BREAK notification of the current break has been sent.
    pub notified: bool,
    /// When the break began (ms since the Unix epoch).
    pub break_started: u64,
    /// The opens of the file made under this lease.
    pub opens: Vec<GlobalOpenId>,
}

impl LeaseHolder {
    /// The holder must acknowledge a break from `state` (MS-SMB2 3.3.4.7:
    /// all but a break of R alone).
    fn ack_required(state: u8) -> bool {
        state & (WRITE | HANDLE) != 0
    }

    /// Starts a break to `to`. A break that starts a round (not one that
    /// goes on from an acknowledged step) moves a version 2 lease's epoch.
    fn start_break(&mut self, to: u8, now: u64, fresh: bool, notify: &mut Vec<u32>) {
        if fresh && self.version >= 2 {
            self.epoch = self.epoch.wrapping_add(1);
        }
        self.breaking_to = Some(to);
        self.notified = false;
        self.break_started = now;
        for o in &self.opens {
            if !notify.contains(&o.worker) {
                notify.push(o.worker);
            }
        }
    }
}

impl LeaseHolder {
    /// A break step ended: the break asked for meanwhile goes on, one step
    /// at a time as Windows does (RH goes to R before none).
    fn continue_break(&mut self, now: u64, notify: &mut Vec<u32>) {
        let Some(p) = self.pending_to.take() else { return };
        let mut next = grantable(self.state & p);
        if next == 0 && self.state & HANDLE != 0 && self.state & READ != 0 {
            next = READ;
            self.pending_to = Some(p);
        }
        if next != self.state {
            self.start_break(next, now, false, notify);
        }
    }
}

/// What a CREATE asks for in its RqLs context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRequest {
    pub id: LeaseId,
    pub version: u8,
    pub parent: Option<[u8; 16]>,
    pub state: u8,
    pub epoch: u16,
}

/// What the CREATE response's lease context says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    /// The lease's version and parent key (an existing lease keeps its own).
    pub version: u8,
    pub parent: Option<[u8; 16]>,
    pub state: u8,
    pub epoch: u16,
    /// SMB2_LEASE_FLAG_BREAK_IN_PROGRESS.
    pub breaking: bool,
}

/// A LEASE_BREAK notification a worker must send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseNotice {
    /// One of this worker's opens under the lease (whose connection carries it).
    pub open: u64,
    pub id: LeaseId,
    pub version: u8,
    pub from: u8,
    pub to: u8,
    pub epoch: u16,
    pub ack_required: bool,
}

/// A lease break acknowledgment that does not fit (MS-SMB2 3.3.5.22.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAckError {
    /// No such lease (STATUS_OBJECT_NAME_NOT_FOUND).
    NotFound,
    /// The lease is not breaking (STATUS_UNSUCCESSFUL).
    NotBreaking,
    /// A state not within the one broken to (STATUS_REQUEST_NOT_ACCEPTED).
    BadState,
}

/// The states Windows grants: R, RH, RW, RWH (H, W and HW get none).
pub fn grantable(state: u8) -> u8 {
    let s = state & (READ | HANDLE | WRITE);
    if s & READ == 0 {
        0
    } else {
        s
    }
}

impl OplockRecord {
    /// The leases of the file against a new open (MS-FSA 2.1.5.1.2, as
    /// Windows and Samba break): a data open takes W from other leases, one
    /// the share modes refuse takes H instead (so that a client may close
    /// the handles it keeps cached); an overwrite takes R and H as well.
    /// The open waits (`until` lowered to when the break times out) only for
    /// a lease holding what it takes first (W, or H on a conflict); breaks
    /// from other states go out without holding it up.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_open_leases(
        &mut self,
        share: &ShareRecord,
        new: &ShareModeEntry,
        lease: Option<&LeaseId>,
        retry: bool,
        overwrite: bool,
        now: u64,
        timeout_ms: u64,
        notify: &mut Vec<u32>,
        until: &mut Option<u64>,
    ) {
        if is_stat_open(new.access) && !overwrite {
            return;
        }
        let conflict = share.entries.iter().any(|e| share_conflict((e.access, e.share_access), new.access, new.share_access));
        // A delete-on-close open (an unlink) also wants cached handles closed.
        let delay_mask = if conflict {
            HANDLE
        } else if new.delete_on_close {
            WRITE | HANDLE
        } else {
            WRITE
        };
        for l in &mut self.leases {
            if Some(&l.id) == lease {
                continue;
            }
            let current = l.breaking_to.map_or(l.state, |t| t & l.pending_to.unwrap_or(0xFF));
            let mut want = current & !delay_mask;
            if overwrite {
                want &= !(READ | HANDLE);
            }
            let want = grantable(want);
            let breaking = l.breaking_to.is_some();
            if want != current {
                if breaking {
                    l.pending_to = Some(want);
                } else {
                    l.start_break(want, now, true, notify);
                }
            } else if !breaking {
                continue;
            }
            let started = if breaking { l.break_started } else { now };
            // An open that waited goes on waiting while the round of
            // acknowledged breaks lasts (smbtorture's lease.breaking3).
            if l.state & delay_mask != 0 || (retry && breaking && LeaseHolder::ack_required(l.state)) {
                let t = started.saturating_add(timeout_ms);
                *until = Some(until.map_or(t, |u| u.min(t)));
            }
        }
    }

    /// Grants the lease of `req` to `open` (whose share-mode entry is in).
    /// The same key again joins the lease, which is upgraded only to a
    /// strict superset that the file's other opens allow; a new lease gets
    /// what it asks for less what others allow (W only with no open of the
    /// file outside the lease, H and W only without oplocks).
    pub fn grant_lease(&mut self, share: &ShareRecord, open: GlobalOpenId, req: &LeaseRequest) -> LeaseGrant {
        let asked = grantable(req.state);
        let mine: Vec<GlobalOpenId> = self.leases.iter().find(|l| l.id == req.id).map(|l| l.opens.clone()).unwrap_or_default();
        // A stat open does not count, unless it holds a lease of its own.
        let leased = |o: &GlobalOpenId| self.leases.iter().any(|l| l.opens.contains(o));
        let others_open = share.entries.iter().any(|e| e.open != open && !mine.contains(&e.open) && (!is_stat_open(e.access) || leased(&e.open)));
        let oplocks = self.holders.iter().any(|h| h.open != open && h.level != LEVEL_NONE);
        let mut allowed = READ | HANDLE | WRITE;
        if others_open {
            allowed &= !WRITE;
        }
        if oplocks {
            allowed &= !(HANDLE | WRITE);
        }
        if let Some(l) = self.leases.iter_mut().find(|l| l.id == req.id) {
            if !l.opens.contains(&open) {
                l.opens.push(open);
            }
            let superset = asked & l.state == l.state && asked != l.state;
            if l.breaking_to.is_none() && superset && asked & !allowed == 0 {
                l.state = asked;
                if l.version >= 2 {
                    l.epoch = l.epoch.wrapping_add(1);
                }
            }
            return LeaseGrant { version: l.version, parent: l.parent, state: l.state, epoch: l.epoch, breaking: l.breaking_to.is_some() };
        }
        let state = grantable(asked & allowed);
        let epoch = if req.version >= 2 { req.epoch.wrapping_add(1) } else { 0 };
        self.leases.push(LeaseHolder {
            id: req.id,
            version: req.version,
            parent: req.parent,
            state,
            epoch,
            breaking_to: None,
            pending_to: None,
            notified: false,
            break_started: 0,
            opens: vec![open],
        });
        LeaseGrant { version: req.version, parent: req.parent, state, epoch, breaking: false }
    }

    /// A write, a size change or a byte-range lock through `by`: every other
    /// lease that caches reads without W is broken to none (MS-FSA 2.1.4.12;
    /// the writer's own lease keeps its state).
    pub(super) fn break_leases_read(&mut self, by: GlobalOpenId, now: u64, notify: &mut Vec<u32>) {
        for l in &mut self.leases {
            if l.opens.contains(&by) || l.state & READ == 0 || l.state & WRITE != 0 {
                continue;
            }
            match l.breaking_to {
                None => l.start_break(LEVEL_NONE, now, true, notify),
                Some(t) if t != 0 => l.pending_to = Some(0),
                Some(_) => {}
            }
        }
    }

    /// A rename or delete through `by` (MS-FSA 2.1.5.14.11, as Windows):
    /// other leases lose H (their clients must close the handles they keep
    /// under the old name). Returns when the last of those breaks times
    /// out if any needs an acknowledgment (the caller may wait for it).
    pub fn break_leases_handle(&mut self, by: GlobalOpenId, now: u64, timeout_ms: u64, notify: &mut Vec<u32>) -> Option<u64> {
        let mut until: Option<u64> = None;
        for l in &mut self.leases {
            if l.opens.contains(&by) || l.state & HANDLE == 0 {
                continue;
            }
            let started = match l.breaking_to {
                None => {
                    l.start_break(l.state & !HANDLE, now, true, notify);
                    now
                }
                Some(t) => {
                    if t & HANDLE != 0 {
                        l.pending_to = Some(l.pending_to.unwrap_or(t) & !HANDLE);
                    }
                    l.break_started
                }
            };
            let t = started.saturating_add(timeout_ms);
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        until
    }

    /// A change inside this directory (a file made, removed, renamed in or
    /// out, its metadata set: MS-FSA 2.1.4.13, MS-SMB2 3.3.4.7) made under
    /// the lease `except` (the ParentLeaseKey the change's open gave): every
    /// other lease of the directory breaks to none. Nobody waits for these
    /// breaks (their acknowledgments only end them).
    pub fn break_leases_parent(&mut self, except: Option<&LeaseId>, now: u64, notify: &mut Vec<u32>) {
        for l in &mut self.leases {
            if Some(&l.id) == except || l.state == 0 {
                continue;
            }
            match l.breaking_to {
                None => l.start_break(0, now, true, notify),
                Some(t) if t != 0 => l.pending_to = Some(0),
                Some(_) => {}
            }
        }
    }

    /// Whether a lease other than `by`'s still holds H (or is being broken
    /// from it): a rename waiting for those breaks looks at this.
    pub fn others_hold_handle(&self, by: GlobalOpenId) -> bool {
        self.leases.iter().any(|l| !l.opens.contains(&by) && l.state & HANDLE != 0)
    }

    pub(super) fn has_read_leases(&self) -> bool {
        self.leases.iter().any(|l| l.state & READ != 0 && l.state & WRITE == 0)
    }

    /// The lease breaks `worker` must announce now. A break that needs no
    /// acknowledgment is done once announced.
    pub fn take_lease_notices(&mut self, worker: u32) -> Vec<LeaseNotice> {
        let mut v = Vec::new();
        for l in &mut self.leases {
            let Some(to) = l.breaking_to else { continue };
            if l.notified {
                continue;
            }
            let Some(open) = l.opens.iter().find(|o| o.worker == worker) else { continue };
            l.notified = true;
            let ack_required = LeaseHolder::ack_required(l.state);
            v.push(LeaseNotice { open: open.open, id: l.id, version: l.version, from: l.state, to, epoch: l.epoch, ack_required });
            if !ack_required {
                l.state = to;
                l.breaking_to = None;
                l.pending_to = None;
            }
        }
        v
    }

    /// A LEASE_BREAK acknowledgment: the lease takes `state` (within the
    /// state broken to); the waiters are handed back, and a break asked for
    /// meanwhile starts (its workers go to `wake` too).
    pub fn lease_ack(&mut self, id: &LeaseId, state: u8, now: u64, wake: &mut Vec<u32>) -> Result<(u8, u16), LeaseAckError> {
        let Some(l) = self.leases.iter_mut().find(|l| l.id == *id) else { return Err(LeaseAckError::NotFound) };
        let Some(to) = l.breaking_to else { return Err(LeaseAckError::NotBreaking) };
        if state & !to != 0 {
            return Err(LeaseAckError::BadState);
        }
        l.state = grantable(state);
        l.breaking_to = None;
        l.continue_break(now, wake);
        let r = (l.state, l.epoch);
        wake.append(&mut self.waiters);
        Ok(r)
    }

    /// Breaks past the timeout end with the lease lost (state none, as
    /// Windows and Samba: smbtorture's lease.timeout); whether any did.
    pub(super) fn expire_leases(&mut self, now: u64, timeout_ms: u64) -> bool {
        let mut any = false;
        for l in &mut self.leases {
            if l.breaking_to.is_some() && now >= l.break_started.saturating_add(timeout_ms) {
                l.state = 0;
                l.breaking_to = None;
                l.pending_to = None;
                any = true;
            }
        }
        any
    }

    /// `open` closed: it leaves its lease; leases left without opens go and
    /// are returned (their lease-table entries go too). Whether a lease
    /// changed (waiters then look again).
    pub(super) fn remove_lease_open(&mut self, open: GlobalOpenId, gone: &mut Vec<LeaseId>) -> bool {
        let mut changed = false;
        for l in &mut self.leases {
            let before = l.opens.len();
            l.opens.retain(|o| *o != open);
            changed |= before != l.opens.len();
        }
        self.leases.retain(|l| {
            if l.opens.is_empty() {
                gone.push(l.id);
                false
            } else {
                true
            }
        });
        changed
    }

    /// Drops the opens of a dead worker from the leases.
    pub(super) fn purge_leases(&mut self, worker: u32, gone: &mut Vec<LeaseId>) -> bool {
        let mut changed = false;
        for l in &mut self.leases {
            let before = l.opens.len();
            l.opens.retain(|o| o.worker != worker);
            changed |= before != l.opens.len();
        }
        self.leases.retain(|l| {
            if l.opens.is_empty() {
                gone.push(l.id);
                false
            } else {
                true
            }
        });
        changed
    }

    /// The lease of `id` on this file, if any.
    pub fn lease(&self, id: &LeaseId) -> Option<&LeaseHolder> {
        self.leases.iter().find(|l| l.id == *id)
    }
}

// Encoding of one lease (inside the oplock record, version 2).
const LEASE_FIXED: usize = 32 + 1 + 17 + 1 + 2 + 2 + 2 + 1 + 8 + 4;
const OPEN_LEN: usize = 12;
const MAX_OPENS: usize = 1 << 20;

pub(super) fn encode_leases(leases: &[LeaseHolder], o: &mut Vec<u8>) {
    o.extend_from_slice(&(leases.len() as u32).to_le_bytes());
    for l in leases {
        o.extend_from_slice(&l.id.encode());
        o.push(l.version);
        o.push(u8::from(l.parent.is_some()));
        o.extend_from_slice(&l.parent.unwrap_or([0; 16]));
        o.push(l.state);
        o.extend_from_slice(&l.epoch.to_le_bytes());
        o.push(u8::from(l.breaking_to.is_some()));
        o.push(l.breaking_to.unwrap_or(0));
        o.push(u8::from(l.pending_to.is_some()));
        o.push(l.pending_to.unwrap_or(0));
        o.push(u8::from(l.notified));
        o.extend_from_slice(&l.break_started.to_le_bytes());
        o.extend_from_slice(&(l.opens.len() as u32).to_le_bytes());
        for x in &l.opens {
            o.extend_from_slice(&x.worker.to_le_bytes());
            o.extend_from_slice(&x.open.to_le_bytes());
        }
    }
}

/// Decodes the leases at the start of `b`; how many bytes they took.
pub(super) fn decode_leases(b: &[u8]) -> Result<(Vec<LeaseHolder>, usize), StoreError> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let s = b.get(at..at.checked_add(n).ok_or(StoreError::Corrupt("lease record length"))?).ok_or(StoreError::Corrupt("lease record cut short"))?;
        at += n;
        Ok(s)
    };
    let u32_ = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    let u64_ = |s: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    };
    let n = u32_(take(4)?) as usize;
    if n > MAX_OPENS || n.saturating_mul(LEASE_FIXED) > b.len() {
        return Err(StoreError::Corrupt("lease count past the record's end"));
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let s = take(LEASE_FIXED)?;
        let mut client = [0u8; 16];
        let mut key = [0u8; 16];
        let mut parent = [0u8; 16];
        client.copy_from_slice(&s[0..16]);
        key.copy_from_slice(&s[16..32]);
        parent.copy_from_slice(&s[34..50]);
        let count = u32_(&s[LEASE_FIXED - 4..]) as usize;
        if count > MAX_OPENS || count.saturating_mul(OPEN_LEN) > b.len() {
            return Err(StoreError::Corrupt("lease open count past the record's end"));
        }
        let mut opens = Vec::with_capacity(count);
        for _ in 0..count {
            let o = take(OPEN_LEN)?;
            opens.push(GlobalOpenId { worker: u32_(&o[0..4]), open: u64_(&o[4..12]) });
        }
        v.push(LeaseHolder {
            id: LeaseId { client, key },
            version: s[32],
            parent: (s[33] != 0).then_some(parent),
            state: s[50],
            epoch: u16::from_le_bytes([s[51], s[52]]),
            breaking_to: (s[53] != 0).then_some(s[54]),
            pending_to: (s[55] != 0).then_some(s[56]),
            notified: s[57] != 0,
            break_started: u64_(&s[58..66]),
            opens,
        });
    }
    Ok((v, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::oplock::{LEVEL_BATCH, LEVEL_II};
    use crate::store::oplock::OpenCheck;

    fn id(w: u32, o: u64) -> GlobalOpenId {
        GlobalOpenId { worker: w, open: o }
    }
    fn e(open: GlobalOpenId, access: u32, share_access: u32) -> ShareModeEntry {
        ShareModeEntry { open, access, share_access, delete_on_close: false }
    }
    fn lid(k: u8) -> LeaseId {
        LeaseId { client: [1; 16], key: [k; 16] }
    }
    fn req(k: u8, state: u8) -> LeaseRequest {
        LeaseRequest { id: lid(k), version: 1, parent: None, state, epoch: 0 }
    }
    const RWH: u8 = READ | WRITE | HANDLE;
    const RH: u8 = READ | HANDLE;

    /// Lease 1 holds RWH; lease 2's open breaks it to RH and waits for the
    /// ack; lease 2 gets RH; the same key upgrades only to a superset.
    #[test]
    fn break_to_rh_and_upgrade_rules() {
        let (a, b) = (id(1, 1), id(1, 2));
        let mut share = ShareRecord::default();
        let mut r = OplockRecord::default();
        share.open(e(a, 3, 7)).unwrap();
        assert_eq!(r.grant_lease(&share, a, &req(1, RWH)).state, RWH);
        assert_eq!(grantable(HANDLE | WRITE), 0);
        let mut n = Vec::new();
        let c = r.check_open(&share, &e(b, 1, 7), Some(&lid(2)), false, false, true, 1000, 100, 1, &mut n);
        assert_eq!(c, OpenCheck::Wait { until: 1100 });
        let notices = r.take_lease_notices(1);
        assert_eq!(notices.len(), 1);
        assert_eq!((notices[0].from, notices[0].to, notices[0].ack_required), (RWH, RH, true));
        let mut wake = Vec::new();
        assert_eq!(r.lease_ack(&lid(1), READ | WRITE, 1000, &mut wake), Err(LeaseAckError::BadState));
        assert_eq!(r.lease_ack(&lid(1), RH, 1000, &mut wake), Ok((RH, 0)));
        assert_eq!(wake, vec![1]);
        assert_eq!(r.lease_ack(&lid(1), RH, 1000, &mut wake), Err(LeaseAckError::NotBreaking));
        assert_eq!(r.check_open(&share, &e(b, 1, 7), Some(&lid(2)), false, false, true, 1000, 100, 1, &mut n), OpenCheck::Proceed);
        share.open(e(b, 1, 7)).unwrap();
        assert_eq!(r.grant_lease(&share, b, &req(2, RWH)).state, RH, "no W beside another open");
        // An upgrade to RWH of lease 1 is refused whole (lease 2 is open).
        let c = id(1, 3);
        share.open(e(c, 1, 7)).unwrap();
        assert_eq!(r.grant_lease(&share, c, &req(1, RWH)).state, RH);
        // A write through lease 2 breaks lease 1 (RH, no W) to none, with an ack.
        let mut n = Vec::new();
        r.break_leases_read(b, 0, &mut n);
        assert_eq!(n, vec![1]);
        assert!(r.take_lease_notices(1)[0].ack_required);
        let mut gone = Vec::new();
        r.remove_lease_open(a, &mut gone);
        assert!(gone.is_empty(), "lease 1 keeps open c");
        r.remove_lease_open(c, &mut gone);
        assert_eq!(gone, vec![lid(1)]);
    }

    /// Oplocks and leases on one file; an R lease broken by a write needs no ack.
    #[test]
    fn oplocks_beside_leases() {
        let (a, b) = (id(1, 1), id(2, 1));
        let mut share = ShareRecord::default();
        let mut r = OplockRecord::default();
        share.open(e(a, 3, 7)).unwrap();
        assert_eq!(r.grant(&share, a, LEVEL_BATCH, true), LEVEL_BATCH);
        let mut n = Vec::new();
        assert!(matches!(r.check_open(&share, &e(b, 1, 7), Some(&lid(2)), false, false, true, 0, 100, 2, &mut n), OpenCheck::Wait { .. }));
        let mut w = Vec::new();
        r.ack(a, LEVEL_II, &mut w).unwrap();
        share.open(e(b, 1, 7)).unwrap();
        assert_eq!(r.grant_lease(&share, b, &req(2, RWH)).state, READ, "beside an oplock: R only");
        // An RH lease keeps a new open from any oplock.
        let mut r = OplockRecord::default();
        let share = ShareRecord { entries: vec![e(a, 3, 7), e(b, 3, 7)], ..Default::default() };
        r.grant_lease(&share, a, &req(1, RH));
        assert_eq!(r.grant(&share, b, LEVEL_II, true), LEVEL_NONE);
        // Leases without W break to none on a write, announced once, no ack.
        let mut r = OplockRecord::default();
        r.grant_lease(&share, a, &req(1, READ));
        let mut n = Vec::new();
        r.break_leases_read(b, 0, &mut n);
        assert_eq!(n, vec![1]);
        let v = r.take_lease_notices(1);
        assert_eq!((v[0].to, v[0].ack_required), (0, false));
        assert_eq!(r.leases[0].state, 0);
        assert!(r.take_lease_notices(1).is_empty());
    }

    /// smbtorture's lease.breaking3/breaking4 and timeout: an overwrite during
    /// a break waits and is broken in steps (RH, R, none); an overwrite of
    /// an RH lease breaks it to none without waiting; a timed-out break
    /// loses the lease.
    #[test]
    fn break_rounds_steps_and_timeout() {
        let (a, b, c) = (id(1, 1), id(1, 2), id(1, 3));
        let share = ShareRecord { entries: vec![e(a, 3, 7)], ..Default::default() };
        let mut r = OplockRecord::default();
        r.grant_lease(&share, a, &LeaseRequest { version: 2, ..req(1, RWH) });
        let mut n = Vec::new();
        assert!(matches!(r.check_open(&share, &e(b, 1, 7), None, false, false, true, 0, 100, 1, &mut n), OpenCheck::Wait { .. }));
        assert!(matches!(r.check_open(&share, &e(c, 1, 7), None, false, true, true, 0, 100, 1, &mut n), OpenCheck::Wait { .. }), "overwrite waits too");
        let v = r.take_lease_notices(1);
        assert_eq!((v.len(), v[0].to, v[0].epoch), (1, RH, 2));
        let mut w = Vec::new();
        assert_eq!(r.lease_ack(&lid(1), RH, 0, &mut w), Ok((RH, 2)));
        assert_eq!(r.leases[0].breaking_to, Some(READ), "RH goes to R first");
        assert!(matches!(r.check_open(&share, &e(b, 1, 7), None, true, false, true, 0, 100, 1, &mut n), OpenCheck::Wait { .. }), "a waiter waits on");
        assert_eq!(r.take_lease_notices(1)[0].epoch, 2, "same round, same epoch");
        r.lease_ack(&lid(1), READ, 0, &mut w).unwrap();
        let v = r.take_lease_notices(1);
        assert_eq!((v[0].from, v[0].to, v[0].ack_required), (READ, 0, false));
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, true, false, true, 0, 100, 1, &mut n), OpenCheck::Proceed);
        // RH and an overwrite: broken to none, nobody waits; a timeout loses it.
        let mut r = OplockRecord::default();
        r.grant_lease(&share, a, &req(1, RH));
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, false, true, true, 0, 100, 1, &mut n), OpenCheck::Proceed);
        assert_eq!(r.leases[0].breaking_to, Some(0));
        assert_eq!(r.check_open(&share, &e(b, 1, 7), None, false, false, true, 100, 100, 1, &mut n), OpenCheck::Proceed);
        assert_eq!((r.leases[0].state, r.leases[0].breaking_to), (0, None));
    }

    /// A directory's RH lease breaks to none (with an ack) on a change
    /// inside it, except for a change made under the lease itself (its key
    /// given as the parent key); a lease breaking to R goes on to none.
    #[test]
    fn parent_breaks() {
        let a = id(1, 1);
        let share = ShareRecord { entries: vec![e(a, 1, 7)], ..Default::default() };
        let mut r = OplockRecord::default();
        assert_eq!(r.grant_lease(&share, a, &LeaseRequest { version: 2, ..req(1, RH) }).epoch, 1);
        let mut n = Vec::new();
        r.break_leases_parent(Some(&lid(1)), 0, &mut n);
        assert!(n.is_empty(), "its own key breaks nothing");
        r.break_leases_parent(Some(&lid(2)), 0, &mut n);
        assert_eq!(n, vec![1]);
        let v = r.take_lease_notices(1);
        assert_eq!((v[0].from, v[0].to, v[0].epoch, v[0].ack_required), (RH, 0, 2, true));
        let mut w = Vec::new();
        assert_eq!(r.lease_ack(&lid(1), 0, 0, &mut w), Ok((0, 2)));
        let mut n = Vec::new();
        r.break_leases_parent(None, 0, &mut n);
        assert!(n.is_empty(), "a lease of none has nothing to break");
        // Already breaking to R: the break goes on to none after the ack.
        r.leases[0].state = RH;
        r.leases[0].breaking_to = Some(READ);
        r.break_leases_parent(None, 0, &mut n);
        assert_eq!(r.leases[0].pending_to, Some(0));
    }

    #[test]
    fn round_trip_with_leases() {
        let mut r = OplockRecord::default();
        let share = ShareRecord { entries: vec![e(id(1, 1), 3, 7)], ..Default::default() };
        r.grant_lease(&share, id(1, 1), &LeaseRequest { id: lid(3), version: 2, parent: Some([9; 16]), state: RWH, epoch: 7 });
        r.leases[0].opens.push(id(4, u64::MAX));
        r.leases[0].breaking_to = Some(RH);
        assert_eq!(r.leases[0].epoch, 8);
        let b = r.encode();
        assert_eq!(OplockRecord::decode(&b).unwrap(), r);
        for cut in 0..b.len() {
            assert!(OplockRecord::decode(&b[..cut]).is_err());
        }
    }
}
