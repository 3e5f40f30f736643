//! LOCK: byte-range locks (MS-SMB2 3.3.5.14, MS-FSA 2.1.5.7). A lock that
//! conflicts and may wait (no FAIL_IMMEDIATELY) goes async: an interim
//! STATUS_PENDING now, the final answer when the range frees up, the request
//! is cancelled, or the handle is closed.

use crate::conn::{go_async, Connection, Ctx};
use crate::objects::{lock, ByteLock, Server};
use crate::wire::messages::{LockElement, LockReq, LOCKFLAG_EXCLUSIVE, LOCKFLAG_FAIL_IMMEDIATELY, LOCKFLAG_SHARED, LOCKFLAG_UNLOCK};
use crate::wire::status::NtStatus;
use crate::wire::Put;
use std::sync::Arc;
use std::time::Duration;

/// Tries to take all of `locks` for `owner` at once (all or nothing). An
/// open holds at most `max locks per open` (0 = no cap): past it the request
/// fails with INSUFFICIENT_RESOURCES, as a Windows server out of lock memory.
fn try_lock(server: &Server, key: (u64, u64), owner: u64, locks: &[LockElement]) -> Result<(), NtStatus> {
    let max = server.cfg.limits.max_locks_per_open;
    let mut table = lock(&server.locks);
    let held = table.entry(key).or_default();
    if max != 0 && held.iter().filter(|x| x.owner == owner).count().saturating_add(locks.len()) > max {
        if held.is_empty() {
            table.remove(&key);
        }
        tracing::warn!(owner, "LOCK refused: max locks per open ({max}) reached");
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    let mut added: Vec<ByteLock> = Vec::new();
    for l in locks {
        let new = ByteLock { owner, offset: l.offset, length: l.length, exclusive: l.flags & LOCKFLAG_EXCLUSIVE != 0 };
        if held.iter().chain(added.iter()).any(|x| x.conflicts(&new)) {
            if held.is_empty() {
                table.remove(&key);
            }
            return Err(NtStatus::LOCK_NOT_GRANTED);
        }
        added.push(new);
    }
    held.extend(added);
    Ok(())
}

/// Releases the ranges one by one, as Windows does: the first one not held
/// stops the request with RANGE_NOT_LOCKED (the ones before stay released),
/// and an element that is not a plain unlock is INVALID_PARAMETER when reached.
fn unlock(server: &Server, key: (u64, u64), owner: u64, locks: &[LockElement]) -> Result<(), NtStatus> {
    let mut result = Ok(());
    {
        let mut table = lock(&server.locks);
        for l in locks {
            if l.flags != LOCKFLAG_UNLOCK {
                result = Err(NtStatus::INVALID_PARAMETER);
                break;
            }
            let held = table.get_mut(&key);
            let pos = held.as_ref().and_then(|h| h.iter().position(|x| x.owner == owner && x.offset == l.offset && x.length == l.length));
            match (held, pos) {
                (Some(h), Some(p)) => {
                    h.remove(p);
                }
                _ => {
                    result = Err(NtStatus::RANGE_NOT_LOCKED);
                    break;
                }
            }
        }
        if table.get(&key).is_some_and(|h| h.is_empty()) {
            table.remove(&key);
        }
    }
    server.locks_changed.notify_all();
    result
}

pub fn lock_cmd(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = LockReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    let key = open.file_key.ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
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
    let owner = open.volatile_id;
    if is_unlock {
        unlock(&conn.server, key, owner, &req.locks)?;
        out.u16(4).u16(0);
        return Ok(());
    }
    match try_lock(&conn.server, key, owner, &req.locks) {
        Ok(()) => {
            out.u16(4).u16(0);
            Ok(())
        }
        Err(NtStatus::LOCK_NOT_GRANTED) if req.locks.len() == 1 && req.locks[0].flags & LOCKFLAG_FAIL_IMMEDIATELY == 0 => {
            let pending = go_async(conn, ctx)?;
            let server = conn.server.clone();
            let locks = req.locks.clone();
            crate::asyncop::spawn(pending, open, move |p, open| wait_for_lock(&server, p, open, key, owner, &locks));
            Err(NtStatus::PENDING)
        }
        Err(e) => Err(e),
    }
}

fn wait_for_lock(server: &Arc<Server>, p: &crate::asyncop::Pending, open: &crate::objects::Open, key: (u64, u64), owner: u64, locks: &[LockElement]) -> (NtStatus, Option<Vec<u8>>) {
    loop {
        if p.stop.get().is_some() {
            return (NtStatus::CANCELLED, None);
        }
        if open.is_closed() {
            return (NtStatus::RANGE_NOT_LOCKED, None);
        }
        match try_lock(server, key, owner, locks) {
            Ok(()) => {
                if open.is_closed() {
                    // Closed while we took it: give it back.
                    let _ = unlock(server, key, owner, locks);
                    return (NtStatus::RANGE_NOT_LOCKED, None);
                }
                return (NtStatus::SUCCESS, Some(vec![4, 0, 0, 0]));
            }
            Err(NtStatus::LOCK_NOT_GRANTED) => {}
            Err(e) => return (e, None),
        }
        let g = lock(&server.locks);
        let _ = server.locks_changed.wait_timeout(g, Duration::from_millis(100));
    }
}
