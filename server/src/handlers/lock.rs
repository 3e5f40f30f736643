//! LOCK: byte-range locks (MS-SMB2 3.3.5.14, MS-FSA 2.1.5.7), kept in the
//! state store so every worker process sees them.
//!
//! A lock that conflicts and may wait (no FAIL_IMMEDIATELY) goes async: an
//! interim STATUS_PENDING now, and the request joins this process's
//! [`LockWaits`]. No thread waits for it and nothing polls: the store
//! records this worker as a waiter on the file in the same step that found
//! the conflict, and whatever frees a range of that file (an unlock, a
//! close, the purge of a dead worker, in any process) wakes the worker,
//! which retries its waiters on the file. CANCEL, the close of the handle
//! and the end of the connection finish the wait at once.

use crate::asyncop::Pending;
use crate::conn::{go_async, Connection, Ctx};
use crate::objects::{lock, store_status, Open, Server};
use crate::store::{ByteRangeLock, FileKey, GlobalOpenId, LockError};
use crate::wire::messages::{LockElement, LockReq, LOCKFLAG_EXCLUSIVE, LOCKFLAG_FAIL_IMMEDIATELY, LOCKFLAG_SHARED, LOCKFLAG_UNLOCK};
use crate::wire::status::NtStatus;
use crate::wire::Put;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The LOCK response body.
const LOCK_RESPONSE: [u8; 4] = [4, 0, 0, 0];

fn to_store(owner: GlobalOpenId, locks: &[LockElement]) -> Vec<ByteRangeLock> {
    locks.iter().map(|l| ByteRangeLock { owner, offset: l.offset, length: l.length, exclusive: l.flags & LOCKFLAG_EXCLUSIVE != 0 }).collect()
}

/// Tries to take all of `locks` at once (all or nothing); with `wait`, a
/// conflict records this worker as waiting for the file. An open holds at
/// most `max locks per open` (0 = no cap): past it the request fails with
/// INSUFFICIENT_RESOURCES, as a Windows server out of lock memory.
fn try_lock(server: &Server, key: FileKey, owner: GlobalOpenId, locks: &[ByteRangeLock], wait: bool) -> Result<(), NtStatus> {
    let max = server.cfg.limits.max_locks_per_open;
    match server.store.lock(key, owner, locks, max, wait.then_some(server.worker_id)) {
        Ok(()) => Ok(()),
        Err(LockError::NotGranted) => Err(NtStatus::LOCK_NOT_GRANTED),
        Err(LockError::TooMany) => {
            tracing::warn!(open = owner.open, "LOCK refused: max locks per open ({max}) reached");
            Err(NtStatus::INSUFFICIENT_RESOURCES)
        }
        Err(LockError::Store(e)) => Err(store_status(e)),
    }
}

/// Releases the ranges one by one, as Windows does: the first one not held
/// stops the request with RANGE_NOT_LOCKED (the ones before stay released),
/// and an element that is not a plain unlock is INVALID_PARAMETER when
/// reached. Workers waiting for the file are woken.
fn unlock(server: &Server, key: FileKey, owner: GlobalOpenId, locks: &[LockElement]) -> Result<(), NtStatus> {
    let plain = locks.iter().take_while(|l| l.flags == LOCKFLAG_UNLOCK).count();
    let ranges: Vec<(u64, u64)> = locks[..plain].iter().map(|l| (l.offset, l.length)).collect();
    let u = server.store.unlock(key, owner, &ranges).map_err(store_status)?;
    for w in u.wake {
        server.wake(w, key);
    }
    if u.released < plain {
        Err(NtStatus::RANGE_NOT_LOCKED)
    } else if plain < locks.len() {
        Err(NtStatus::INVALID_PARAMETER)
    } else {
        Ok(())
    }
}

pub fn lock_cmd(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    // A replayed LOCK of a durable open (MS-SMB2 3.3.5.14 lock sequences).
    let seq = match LockReq::parse(ctx.msg) {
        Ok(req) => super::durable::LockSequence::check(ctx.open(&req.file_id)?, ctx.msg, conn.is_smb3(), conn.server.cfg.multi_channel),
        Err(_) => None,
    };
    if let Some(s) = &seq {
        if s.replayed {
            out.u16(4).u16(0);
            return Ok(());
        }
    }
    let r = lock_request(conn, ctx, out);
    if let (Ok(()), Some(s)) = (&r, seq) {
        s.record();
    }
    r
}

fn lock_request(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = LockReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    let key: FileKey = open.file_key.ok_or(NtStatus::INVALID_DEVICE_REQUEST)?.into();
    if open.is_dir() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let is_unlock = req.locks[0].flags & LOCKFLAG_UNLOCK != 0;
    for l in &req.locks {
        let f = l.flags;
        let valid = if is_unlock {
            true // checked element by element as the unlocks are done
        } else {
            let kind = f & !LOCKFLAG_FAIL_IMMEDIATELY;
            // Only a single lock may wait; in a list every element must fail immediately.
            (kind == LOCKFLAG_SHARED || kind == LOCKFLAG_EXCLUSIVE) && (req.locks.len() == 1 || f & LOCKFLAG_FAIL_IMMEDIATELY != 0)
        };
        if !valid {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if l.length != 0 && l.offset.checked_add(l.length - 1).is_none() {
            return Err(NtStatus::INVALID_LOCK_RANGE);
        }
    }
    let server = conn.server.clone();
    let owner = server.open_id(open.volatile_id);
    if is_unlock {
        unlock(&server, key, owner, &req.locks)?;
        out.u16(4).u16(0);
        return Ok(());
    }
    super::oplock::break_level2(&server, &open);
    let locks = to_store(owner, &req.locks);
    let may_wait = req.locks.len() == 1 && req.locks[0].flags & LOCKFLAG_FAIL_IMMEDIATELY == 0;
    if !may_wait {
        try_lock(&server, key, owner, &locks, false)?;
        out.u16(4).u16(0);
        return Ok(());
    }
    // The first try and, on a conflict, joining the waiters happen under the
    // waiters' lock, so a wake-up cannot slip between them.
    let mut waits = lock(&server.lock_waits.files);
    match try_lock(&server, key, owner, &locks, true) {
        Ok(()) => {
            out.u16(4).u16(0);
            Ok(())
        }
        Err(NtStatus::LOCK_NOT_GRANTED) => {
            let pending = match go_async(conn, ctx) {
                Ok(p) => p,
                Err(e) => {
                    if !waits.contains_key(&key) {
                        let _ = server.store.unwait(key, server.worker_id);
                    }
                    return Err(e);
                }
            };
            let async_id = pending.async_id;
            tracing::debug!(open = owner.open, async_id, "LOCK waits");
            waits.entry(key).or_default().push(Waiter { pending, open, owner, locks, since: Instant::now() });
            drop(waits);
            // CANCEL or the connection's end stops the wait at once (the
            // hook runs now if that happened already).
            let weak = Arc::downgrade(&server);
            conn.asyncs.on_stop(
                async_id,
                Arc::new(move |_| {
                    if let Some(s) = weak.upgrade() {
                        s.lock_waits.stopped(&s);
                    }
                }),
            );
            Err(NtStatus::PENDING)
        }
        Err(e) => Err(e),
    }
}

/// A blocked LOCK request.
struct Waiter {
    pending: Pending,
    open: Arc<Open>,
    owner: GlobalOpenId,
    locks: Vec<ByteRangeLock>,
    since: Instant,
}

/// This process's blocked LOCK requests, by file.
#[derive(Default)]
pub struct LockWaits {
    files: Mutex<HashMap<FileKey, Vec<Waiter>>>,
}

/// A wait that ended, answered once the waiters' lock is released (sending
/// may block on a slow client).
type Done = (Pending, NtStatus, Option<&'static [u8]>);

fn finish(done: Vec<Done>) {
    for (p, status, body) in done {
        p.finish(status, body);
    }
}

impl LockWaits {
    /// The locks of `key` changed: retry this process's waiters on it, in
    /// the order they came. One that still conflicts is recorded as waiting
    /// again by the same store step.
    pub fn wake(&self, server: &Server, key: FileKey) {
        let mut done = Vec::new();
        {
            let mut files = lock(&self.files);
            let Some(list) = files.remove(&key) else { return };
            let mut still = Vec::new();
            for w in list {
                if w.pending.stop.get().is_some() {
                    done.push((w.pending, NtStatus::CANCELLED, None));
                } else if w.open.is_closed() {
                    done.push((w.pending, NtStatus::RANGE_NOT_LOCKED, None));
                } else {
                    match try_lock(server, key, w.owner, &w.locks, true) {
                        Ok(()) => {
                            tracing::debug!(open = w.owner.open, waited_us = w.since.elapsed().as_micros() as u64, "blocked LOCK granted");
                            done.push((w.pending, NtStatus::SUCCESS, Some(&LOCK_RESPONSE[..])));
                        }
                        Err(NtStatus::LOCK_NOT_GRANTED) => still.push(w),
                        Err(e) => done.push((w.pending, e, None)),
                    }
                }
            }
            if !still.is_empty() {
                files.insert(key, still);
            }
        }
        finish(done);
    }

    /// A CANCEL arrived or a connection ended: the waits whose operation
    /// was stopped end (CANCELLED; nothing is sent on a connection that is gone).
    pub fn stopped(&self, server: &Server) {
        let mut done = Vec::new();
        {
            let mut files = lock(&self.files);
            let mut emptied = Vec::new();
            for (key, list) in files.iter_mut() {
                let (stop, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(list).into_iter().partition(|w| w.pending.stop.get().is_some());
                *list = keep;
                done.extend(stop.into_iter().map(|w| (w.pending, NtStatus::CANCELLED, None)));
                if list.is_empty() {
                    emptied.push(*key);
                }
            }
            for key in emptied {
                files.remove(&key);
                Self::forget(server, key);
            }
        }
        finish(done);
    }

    /// The handle `open` is being closed: its waits end with RANGE_NOT_LOCKED.
    pub fn open_closed(&self, server: &Server, key: FileKey, open: u64) {
        let mut done = Vec::new();
        {
            let mut files = lock(&self.files);
            let Some(list) = files.get_mut(&key) else { return };
            let (gone, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(list).into_iter().partition(|w| w.open.volatile_id == open);
            *list = keep;
            done.extend(gone.into_iter().map(|w| (w.pending, NtStatus::RANGE_NOT_LOCKED, None)));
            if list.is_empty() {
                files.remove(&key);
                Self::forget(server, key);
            }
        }
        finish(done);
    }

    /// How many LOCK requests of this process wait.
    pub fn len(&self) -> usize {
        lock(&self.files).values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No waiter of this worker is left on `key`: take it off the file's waiters.
    fn forget(server: &Server, key: FileKey) {
        if let Err(e) = server.store.unwait(key, server.worker_id) {
            tracing::warn!("lock waiter not removed: {e}");
        }
    }
}
