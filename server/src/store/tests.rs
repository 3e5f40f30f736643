//! One suite, run against both backends; then LMDB across two processes.

use super::*;

const READ: u32 = 0x1;
const WRITE: u32 = 0x2;
const DELETE: u32 = 0x0001_0000;
const ATTRS: u32 = 0x80;
const SHARE_ALL: u32 = 7;

fn id(worker: u32, open: u64) -> GlobalOpenId {
    GlobalOpenId { worker, open }
}

fn entry(open: GlobalOpenId, access: u32, share_access: u32) -> ShareModeEntry {
    ShareModeEntry { open, access, share_access, delete_on_close: false }
}

fn brl(offset: u64, length: u64, exclusive: bool) -> ByteRangeLock {
    // The owner is filled in by `lock`.
    ByteRangeLock { owner: id(0, 0), offset, length, exclusive }
}

const F: FileKey = FileKey { dev: 1, ino: 100 };
const G: FileKey = FileKey { dev: 1, ino: 200 };

fn share_modes(s: &dyn StateStore) {
    let (a, b, c) = (id(1, 10), id(2, 10), id(2, 11));
    s.open_file(F, entry(a, READ, 1)).unwrap();
    // A writer cannot join a reader that shares only reading, from any worker.
    assert!(matches!(s.open_file(F, entry(b, WRITE, SHARE_ALL)), Err(OpenError::SharingViolation)));
    s.open_file(F, entry(b, READ, SHARE_ALL)).unwrap();
    // An open for attributes only asks for no data access.
    s.open_file(F, entry(c, ATTRS, SHARE_ALL)).unwrap();
    assert!(s.has_opens(F).unwrap());
    assert!(!s.has_opens(G).unwrap());
    // A refused open left nothing behind.
    let snap = s.snapshot().unwrap();
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].1.entries.len(), 3);
    for o in [a, b, c] {
        assert_eq!(s.close_file(F, o).unwrap(), Closed::default());
    }
    assert!(!s.has_opens(F).unwrap());
    // Now the writer may come in; closing an unknown open changes nothing.
    s.open_file(F, entry(b, WRITE, 0)).unwrap();
    assert_eq!(s.close_file(F, id(9, 9)).unwrap(), Closed::default());
    s.close_file(F, b).unwrap();
    assert!(s.snapshot().unwrap().is_empty(), "all records gone");
}

fn delete_pending(s: &dyn StateStore) {
    let (a, b) = (id(1, 1), id(2, 1));
    // Delete-on-close: pending once that open closes, the file goes with the last.
    s.open_file(F, ShareModeEntry { delete_on_close: true, ..entry(a, DELETE, SHARE_ALL) }).unwrap();
    s.open_file(F, entry(b, READ, SHARE_ALL)).unwrap();
    assert!(!s.delete_pending(F).unwrap());
    assert!(!s.close_file(F, a).unwrap().delete);
    assert!(s.delete_pending(F).unwrap());
    assert!(matches!(s.open_file(F, entry(id(3, 1), READ, SHARE_ALL)), Err(OpenError::DeletePending)));
    assert!(s.close_file(F, b).unwrap().delete);
    // While the closing worker removes the file, new opens are kept out.
    assert!(s.delete_pending(F).unwrap());
    assert!(matches!(s.open_file(F, entry(id(3, 1), READ, SHARE_ALL)), Err(OpenError::DeletePending)));
    s.deleted(F).unwrap();
    assert!(!s.delete_pending(F).unwrap());
    assert!(s.snapshot().unwrap().is_empty());
    // Disposition set and cleared again through another open.
    s.open_file(F, entry(a, DELETE, SHARE_ALL)).unwrap();
    s.open_file(F, entry(b, READ, SHARE_ALL)).unwrap();
    s.set_delete_pending(F, a, true).unwrap();
    assert!(s.delete_pending(F).unwrap());
    s.set_delete_pending(F, a, false).unwrap();
    assert!(!s.delete_pending(F).unwrap());
    assert!(!s.close_file(F, a).unwrap().delete);
    s.set_delete_pending(F, b, true).unwrap();
    assert!(s.close_file(F, b).unwrap().delete);
    s.deleted(F).unwrap();
    // Setting it on a file nobody has open leaves no record.
    s.set_delete_pending(G, a, true).unwrap();
    assert!(s.snapshot().unwrap().is_empty());
}

fn lock_conflicts(s: &dyn StateStore) {
    let (a, b) = (id(1, 5), id(2, 5));
    s.lock(F, a, &[brl(0, 100, true)], 0, None).unwrap();
    // The same open number in another worker is another open.
    assert!(matches!(s.lock(F, b, &[brl(50, 10, false)], 0, None), Err(LockError::NotGranted)));
    // Shared over one's own exclusive stacks; exclusive over it does not.
    s.lock(F, a, &[brl(10, 10, false)], 0, None).unwrap();
    assert!(matches!(s.lock(F, a, &[brl(10, 10, true)], 0, None), Err(LockError::NotGranted)));
    // All or nothing: the first element would fit, the second does not.
    assert!(matches!(s.lock(F, b, &[brl(200, 10, true), brl(90, 20, true)], 0, None), Err(LockError::NotGranted)));
    assert!(!s.io_conflict(F, b, 200, 10, true).unwrap(), "the refused request left no lock");
    // Zero-length locks at the edge of a range do not conflict.
    s.lock(F, b, &[brl(100, 0, true)], 0, None).unwrap();
    // I/O: reads stop at others' exclusive locks, writes also at any shared lock.
    assert!(s.io_conflict(F, b, 99, 1, false).unwrap());
    assert!(!s.io_conflict(F, a, 0, 100, false).unwrap());
    assert!(s.io_conflict(F, a, 15, 1, true).unwrap(), "own shared lock stops own write");
    assert!(!s.io_conflict(F, a, 0, 10, true).unwrap());
    assert!(!s.io_conflict(F, b, 100, 50, true).unwrap());
    assert!(!s.io_conflict(F, b, 0, 0, true).unwrap());
    // The per-open cap.
    assert!(matches!(s.lock(F, b, &[brl(300, 1, false), brl(301, 1, false)], 2, None), Err(LockError::TooMany)));
    s.lock(F, b, &[brl(300, 1, false)], 2, None).unwrap();
    // Unlocks: in order, up to the first range not held.
    let u = s.unlock(F, a, &[(10, 10), (0, 100), (0, 100)]).unwrap();
    assert_eq!(u.released, 2);
    assert!(u.wake.is_empty());
    assert_eq!(s.unlock(F, b, &[(5, 5)]).unwrap().released, 0);
    assert_eq!(s.unlock(F, b, &[(100, 0), (300, 1)]).unwrap().released, 2);
    assert!(s.snapshot().unwrap().is_empty());
    // Ranges at the end of the 64-bit space.
    s.lock(F, a, &[brl(u64::MAX - 1, 2, true)], 0, None).unwrap();
    assert!(matches!(s.lock(F, b, &[brl(u64::MAX, 1, false)], 0, None), Err(LockError::NotGranted)));
    assert!(s.io_conflict(F, b, u64::MAX, 1, false).unwrap());
    s.close_file(F, a).unwrap();
    assert!(s.snapshot().unwrap().is_empty(), "close dropped the open's locks");
}

fn waiters_are_woken(s: &dyn StateStore) {
    let (a, b, c) = (id(1, 1), id(2, 1), id(3, 1));
    s.lock(F, a, &[brl(0, 10, true)], 0, None).unwrap();
    assert!(matches!(s.lock(F, b, &[brl(0, 10, true)], 0, Some(2)), Err(LockError::NotGranted)));
    assert!(matches!(s.lock(F, c, &[brl(5, 1, false)], 0, Some(3)), Err(LockError::NotGranted)));
    assert!(matches!(s.lock(F, c, &[brl(5, 2, false)], 0, Some(3)), Err(LockError::NotGranted)));
    assert_eq!(s.snapshot().unwrap()[0].2.waiters, vec![2, 3], "each worker waits once");
    // An unlock that releases nothing wakes nobody.
    assert!(s.unlock(F, a, &[(1, 1)]).unwrap().wake.is_empty());
    let mut u = s.unlock(F, a, &[(0, 10)]).unwrap();
    u.wake.sort();
    assert_eq!(u.wake, vec![2, 3]);
    // Woken workers retry; the loser waits again.
    s.lock(F, b, &[brl(0, 10, true)], 0, Some(2)).unwrap();
    assert!(matches!(s.lock(F, c, &[brl(5, 1, false)], 0, Some(3)), Err(LockError::NotGranted)));
    // A close that drops a lock wakes too.
    assert_eq!(s.close_file(F, b).unwrap().wake, vec![3]);
    s.lock(F, c, &[brl(5, 1, false)], 0, Some(3)).unwrap();
    // A waiter that gives up is forgotten.
    assert!(matches!(s.lock(F, a, &[brl(0, 10, true)], 0, Some(1)), Err(LockError::NotGranted)));
    s.unwait(F, 1).unwrap();
    assert!(s.unlock(F, c, &[(5, 1)]).unwrap().wake.is_empty());
    assert!(s.snapshot().unwrap().is_empty());
}

fn purge(s: &dyn StateStore) {
    let (dead, live) = (id(7, 1), id(8, 1));
    s.open_file(F, entry(dead, WRITE, 0)).unwrap();
    s.lock(F, dead, &[brl(0, 10, true)], 0, None).unwrap();
    s.open_file(G, entry(dead, READ, SHARE_ALL)).unwrap();
    s.open_file(G, entry(live, READ, SHARE_ALL)).unwrap();
    s.lock(G, dead, &[brl(0, 1, false)], 0, Some(7)).unwrap();
    assert!(matches!(s.lock(F, live, &[brl(0, 10, true)], 0, Some(8)), Err(LockError::NotGranted)));
    assert!(matches!(s.lock(G, live, &[brl(0, 1, true)], 0, Some(8)), Err(LockError::NotGranted)));
    s.set_delete_pending(G, dead, true).unwrap();
    let mut w = s.purge_worker(7).unwrap();
    w.sort();
    assert_eq!(w, vec![(8, F), (8, G)]);
    // The dead worker's opens and locks are gone; the delete it set stays
    // pending, and the last open left deletes the file.
    s.open_file(F, entry(live, WRITE, 0)).unwrap();
    assert!(s.delete_pending(G).unwrap());
    s.lock(F, live, &[brl(0, 10, true)], 0, None).unwrap();
    s.close_file(F, live).unwrap();
    assert!(s.close_file(G, live).unwrap().delete);
    // A worker that dies while deleting leaves no record behind once purged.
    s.purge_worker(8).unwrap();
    assert!(s.snapshot().unwrap().is_empty());
    assert!(s.purge_worker(7).unwrap().is_empty());
}

fn oplocks(s: &dyn StateStore) {
    use oplock::{LEVEL_BATCH, LEVEL_II, LEVEL_NONE};
    let (a, b, c) = (id(1, 1), id(2, 1), id(2, 2));
    s.open_file(F, entry(a, READ | WRITE, SHARE_ALL)).unwrap();
    assert_eq!(s.oplock_grant(F, a, LEVEL_BATCH, true).unwrap(), LEVEL_BATCH);
    // Worker 2 opens to read: the batch oplock breaks to level II, worker 2 waits.
    let (chk, notify) = s.oplock_open(F, &entry(b, READ, SHARE_ALL), None, false, false, true, 1_000, 35_000, 2).unwrap();
    assert_eq!(chk, OpenCheck::Wait { until: 36_000 });
    assert_eq!(notify, vec![1]);
    assert!(s.oplock_notices(F, 2).unwrap().is_empty());
    assert_eq!(s.oplock_notices(F, 1).unwrap(), vec![(1, LEVEL_II)]);
    let (acked, wake) = s.oplock_ack(F, a, LEVEL_II).unwrap();
    assert_eq!((acked, wake), (Ok(LEVEL_II), vec![2]));
    assert_eq!(s.oplock_open(F, &entry(b, READ, SHARE_ALL), None, false, false, true, 2_000, 35_000, 2).unwrap(), (OpenCheck::Proceed, vec![]));
    s.open_file(F, entry(b, READ, SHARE_ALL)).unwrap();
    assert_eq!(s.oplock_grant(F, b, LEVEL_BATCH, true).unwrap(), LEVEL_II);
    // A write breaks every level II oplock, the writer's too (no ack).
    assert_eq!(s.oplock_break_level2(F, b, 3_000).unwrap(), vec![1, 2]);
    assert_eq!(s.oplock_notices(F, 1).unwrap(), vec![(1, LEVEL_NONE)]);
    assert_eq!(s.oplock_ack(F, a, LEVEL_NONE).unwrap().0, Err(AckError::NotBreaking));
    assert_eq!(s.oplocks(F).unwrap().holders.len(), 1);
    assert_eq!(s.oplock_notices(F, 2).unwrap(), vec![(1, LEVEL_NONE)]);
    assert!(s.oplocks(F).unwrap().holders.is_empty());
    assert_eq!(s.oplock_break_level2(F, b, 3_000).unwrap(), Vec::<u32>::new());
    // A waiter on a break is woken by the holder's close; a dead worker's oplocks go.
    s.open_file(G, entry(c, READ | WRITE, SHARE_ALL)).unwrap();
    assert_eq!(s.oplock_grant(G, c, LEVEL_BATCH, true).unwrap(), LEVEL_BATCH);
    let (chk, _) = s.oplock_open(G, &entry(a, READ, SHARE_ALL), None, false, false, true, 0, 35_000, 1).unwrap();
    assert!(matches!(chk, OpenCheck::Wait { .. }));
    assert_eq!(s.close_file(G, c).unwrap().wake, vec![1]);
    s.oplock_unwait(G, 1).unwrap();
    assert!(s.oplocks(G).unwrap().is_empty());
    s.purge_worker(2).unwrap();
    assert!(s.oplocks(F).unwrap().is_empty());
    s.close_file(F, a).unwrap();
    assert!(s.snapshot().unwrap().is_empty());
}

/// A dead worker's delete-on-close: with no open left the file is left to
/// the supervisor to delete (new opens get DELETE_PENDING meanwhile); with
/// another worker's open left, that open's close deletes it; without a
/// noted path nothing is deleted and the record goes.
fn purge_deletes(s: &dyn StateStore) {
    let (dead, live) = (id(7, 1), id(8, 1));
    let h = FileKey { dev: 1, ino: 3 };
    let doc = |o| ShareModeEntry { delete_on_close: true, ..entry(o, READ | WRITE, SHARE_ALL) };
    // F: only the dead worker's delete-on-close open.
    s.open_file(F, doc(dead)).unwrap();
    s.set_delete_path(F, "share", "dir/doomed.txt").unwrap();
    // G: the dead worker set the delete pending; a live open remains.
    s.open_file(G, entry(dead, READ | WRITE, SHARE_ALL)).unwrap();
    s.open_file(G, entry(live, READ, SHARE_ALL)).unwrap();
    s.set_delete_pending(G, dead, true).unwrap();
    s.set_delete_path(G, "share", "kept-open.txt").unwrap();
    // H: delete-on-close but no path noted (a record of an older kind).
    s.open_file(h, doc(dead)).unwrap();
    // A path is noted only for a file with opens.
    s.set_delete_path(FileKey { dev: 9, ino: 9 }, "share", "x").unwrap();
    s.purge_worker(7).unwrap();
    assert_eq!(s.orphaned_deletes().unwrap(), vec![(F, "share".to_string(), "dir/doomed.txt".to_string())]);
    assert!(matches!(s.open_file(F, entry(live, READ, SHARE_ALL)), Err(OpenError::DeletePending)), "until it is deleted");
    s.deleted(F).unwrap();
    assert!(s.orphaned_deletes().unwrap().is_empty());
    s.open_file(F, entry(live, READ, SHARE_ALL)).unwrap();
    s.close_file(F, live).unwrap();
    // G's last open deletes it as usual; H's record went with the purge.
    assert!(s.close_file(G, live).unwrap().delete);
    s.deleted(G).unwrap();
    assert!(!s.delete_pending(h).unwrap());
    assert!(s.snapshot().unwrap().is_empty(), "{:?}", s.snapshot().unwrap());
    // A live worker's purge of nothing leaves nothing to delete.
    s.purge_worker(8).unwrap();
    assert!(s.orphaned_deletes().unwrap().is_empty());
}

fn leases(s: &dyn StateStore) {
    use lease::{HANDLE, READ as R, WRITE as W};
    let (a, b, c) = (id(1, 1), id(2, 1), id(1, 2));
    let l1 = LeaseId { client: [1; 16], key: [1; 16] };
    let l2 = LeaseId { client: [2; 16], key: [1; 16] };
    let req = |id: LeaseId, state: u8| LeaseRequest { id, version: 2, parent: None, state, epoch: 4 };
    s.open_file(F, entry(a, READ | WRITE, SHARE_ALL)).unwrap();
    let g = s.lease_grant(F, a, &req(l1, R | W | HANDLE)).unwrap().unwrap();
    assert_eq!((g.state, g.epoch, g.breaking), (R | W | HANDLE, 5, false));
    assert_eq!(s.lease_file(&l1).unwrap(), Some(F));
    // The same key on another file is refused; another client's same key is another lease.
    s.open_file(G, entry(c, READ, SHARE_ALL)).unwrap();
    assert_eq!(s.lease_grant(G, c, &req(l1, R)).unwrap(), None);
    // Worker 2's open under lease 2 breaks lease 1 to RH and waits.
    let (chk, notify) = s.oplock_open(F, &entry(b, READ, SHARE_ALL), Some(&l2), false, false, true, 1_000, 35_000, 2).unwrap();
    assert_eq!((chk, notify), (OpenCheck::Wait { until: 36_000 }, vec![1]));
    assert!(s.lease_notices(F, 2).unwrap().is_empty());
    let n = s.lease_notices(F, 1).unwrap();
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].open, n[0].from, n[0].to, n[0].epoch, n[0].ack_required), (1, R | W | HANDLE, R | HANDLE, 6, true));
    assert_eq!(s.lease_ack(&l2, R, 0).unwrap().0, Err(LeaseAckError::NotFound));
    let (r, wake) = s.lease_ack(&l1, R | HANDLE, 0).unwrap();
    assert_eq!((r, wake), (Ok((F, R | HANDLE, 6)), vec![2]));
    s.open_file(F, entry(b, READ, SHARE_ALL)).unwrap();
    assert_eq!(s.lease_grant(F, b, &req(l2, R | W | HANDLE)).unwrap().unwrap().state, R | HANDLE);
    // A write through b breaks lease 1 (not its own); closing the last open
    // ends a lease and its table entry.
    assert_eq!(s.oplock_break_level2(F, b, 0).unwrap(), vec![1]);
    s.close_file(F, a).unwrap();
    assert_eq!(s.lease_file(&l1).unwrap(), None);
    s.purge_worker(2).unwrap();
    assert_eq!(s.lease_file(&l2).unwrap(), None);
    s.close_file(G, c).unwrap();
    assert!(s.oplocks(F).unwrap().is_empty());
    // A change inside a leased directory breaks its lease to none, but not
    // one made under the lease's own key (the ParentLeaseKey).
    s.open_file(G, entry(c, READ, SHARE_ALL)).unwrap();
    assert_eq!(s.lease_grant(G, c, &req(l1, R | HANDLE)).unwrap().unwrap().state, R | HANDLE);
    assert!(s.lease_break_parent(G, Some(&l1), 0).unwrap().is_empty());
    assert!(s.lease_notices(G, 1).unwrap().is_empty());
    assert_eq!(s.lease_break_parent(G, Some(&l2), 0).unwrap(), vec![1]);
    let n = s.lease_notices(G, 1).unwrap();
    assert_eq!((n[0].from, n[0].to, n[0].ack_required), (R | HANDLE, 0, true));
    s.close_file(G, c).unwrap();
    // Another program opens a file (kernel oplocks): its batch oplock breaks to none.
    s.open_file(G, entry(c, READ, SHARE_ALL)).unwrap();
    assert_eq!(s.oplock_grant(G, c, oplock::LEVEL_BATCH, true).unwrap(), oplock::LEVEL_BATCH);
    assert_eq!(s.kernel_break(F, 0, 5).unwrap(), (vec![], false));
    assert_eq!(s.kernel_break(G, 0, 5).unwrap(), (vec![1], true));
    assert_eq!(s.kernel_break(G, 1, 5).unwrap(), (vec![], true), "a break under way is not announced twice");
    assert_eq!(s.oplock_notices(G, 1).unwrap(), vec![(c.open, oplock::LEVEL_NONE)]);
    assert!(s.oplocks(G).unwrap().any_caching(), "until acknowledged");
    assert_eq!(s.oplocks(G).unwrap().waiters, vec![5], "the kernel break waits, once");
    let (acked, wake) = s.oplock_ack(G, c, oplock::LEVEL_NONE).unwrap();
    assert_eq!(acked, Ok(oplock::LEVEL_NONE));
    assert!(wake.contains(&5), "the ack wakes the kernel break");
    assert!(!s.oplocks(G).unwrap().any_caching());
    assert_eq!(s.kernel_break(G, 2, 5).unwrap(), (vec![], false));
    s.close_file(G, c).unwrap();
    assert!(s.snapshot().unwrap().is_empty());
}

fn suite(make: impl Fn() -> Arc<dyn StateStore>) {
    purge_deletes(&*make());
    leases(&*make());
    oplocks(&*make());
    share_modes(&*make());
    delete_pending(&*make());
    lock_conflicts(&*make());
    waiters_are_woken(&*make());
    purge(&*make());
    durable(&*make());
    durable_move(&*make());
}

/// A reconnect on another worker takes the disconnected open's share mode,
/// locks, oplock and lease under its new id, once, and only while it waits.
fn durable_move(s: &dyn StateStore) {
    use oplock::LEVEL_BATCH;
    let (old, new, other) = (id(1, 10), id(2, 77), id(3, 1));
    let mut rec = durable_rec(10, 1, 0xA);
    rec.open = old;
    s.durable_put(&rec).unwrap();
    s.open_file(F, entry(old, READ | WRITE, 0)).unwrap();
    s.lock(F, old, &[brl(0, 10, true)], 64, None).unwrap();
    assert_eq!(s.oplock_grant(F, old, LEVEL_BATCH, true).unwrap(), LEVEL_BATCH);
    assert_eq!(s.durable_move(10, new, 100).unwrap(), None, "connected: nothing to claim");
    s.durable_disconnect(10, 5000).unwrap();
    assert_eq!(s.durable_move(10, new, 5000).unwrap(), None, "expired");
    s.durable_watch(10, 6).unwrap();
    assert_eq!(s.durable_move(10, new, 100).unwrap().map(|r| (r.open, r.waiters)), Some((old, vec![6])), "the waiters to wake");
    assert!(s.durable_get(10).unwrap().unwrap().waiters.is_empty());
    assert_eq!(s.durable_move(10, id(3, 3), 100).unwrap(), None, "claimed once");
    let r = s.durable_get(10).unwrap().unwrap();
    assert_eq!((r.open, r.disconnected_until), (new, None));
    assert!(matches!(s.open_file(F, entry(other, READ, SHARE_ALL)), Err(OpenError::SharingViolation)), "the share mode moved with it");
    assert!(s.io_conflict(F, other, 0, 1, false).unwrap(), "the lock moved too");
    assert!(!s.io_conflict(F, new, 0, 1, true).unwrap(), "and is the new open's");
    assert!(s.oplocks(F).unwrap().holders.iter().any(|h| h.open == new && h.level == LEVEL_BATCH));
    let closed = s.close_file(F, new).unwrap();
    assert!(!closed.delete);
    assert!(!s.has_opens(F).unwrap(), "nothing left under the old id");
}

fn durable_rec(pid: u64, worker: u32, guid: u8) -> DurableRecord {
    DurableRecord {
        persistent_id: pid,
        open: id(worker, pid),
        file: F,
        version: 2,
        create_guid: [guid; 16],
        client_guid: [0xC1; 16],
        owner: "D\\u".into(),
        share: "s".into(),
        path: "f".into(),
        access: READ,
        share_access: SHARE_ALL,
        oplock: 9,
        lease_key: None,
        timeout_ms: 1000,
        disconnected_until: None,
        app_instance_id: None,
        close_requested: false,
        waiters: Vec::new(),
    }
}

fn durable(s: &dyn StateStore) {
    let a = durable_rec(10, 1, 0xA);
    let mut b = durable_rec(11, 2, 0xB);
    b.version = 1;
    s.durable_put(&a).unwrap();
    s.durable_put(&b).unwrap();
    assert_eq!(s.durable_get(10).unwrap(), Some(a.clone()));
    assert_eq!(s.durable_get(12).unwrap(), None);
    // Replay lookup: v2 opens by (ClientGuid, CreateGuid) only.
    assert_eq!(s.durable_by_create_guid(&[0xC1; 16], &[0xA; 16]).unwrap(), Some(a.clone()));
    assert_eq!(s.durable_by_create_guid(&[0xC2; 16], &[0xA; 16]).unwrap(), None, "another client");
    assert_eq!(s.durable_by_create_guid(&[0xC1; 16], &[0xB; 16]).unwrap(), None, "a v1 open has no CreateGuid");
    // A connected open cannot be reclaimed; a disconnected one once, before it expires.
    assert!(!s.durable_reclaim(10, 0).unwrap());
    assert_eq!(s.durable_worker_of(&[0xC1; 16]).unwrap(), None, "connected: no routing");
    // Workers waiting for the record are handed back by the disconnect, once.
    assert_eq!(s.durable_watch(10, 3).unwrap().map(|r| r.waiters), Some(vec![3]));
    assert_eq!(s.durable_watch(10, 4).unwrap().map(|r| r.waiters), Some(vec![3, 4]));
    assert_eq!(s.durable_watch(10, 3).unwrap().map(|r| r.waiters), Some(vec![3, 4]), "once each");
    assert_eq!(s.durable_watch(99, 3).unwrap(), None);
    assert_eq!(s.durable_disconnect(10, 5000).unwrap(), Some(vec![3, 4]));
    assert_eq!(s.durable_get(10).unwrap().unwrap().waiters, Vec::<u32>::new(), "woken once");
    assert_eq!(s.durable_worker_of(&[0xC1; 16]).unwrap(), Some(1));
    assert_eq!(s.durable_worker_of(&[0xC2; 16]).unwrap(), None);
    assert_eq!(s.durable_disconnect(99, 5000).unwrap(), None);
    assert_eq!(s.durable_get(10).unwrap().unwrap().disconnected_until, Some(5000));
    assert!(s.durable_expired(1, 4999).unwrap().is_empty());
    assert_eq!(s.durable_expired(1, 5000).unwrap().len(), 1);
    assert!(s.durable_expired(2, 9000).unwrap().is_empty(), "connected, and another worker's");
    assert!(!s.durable_reclaim(10, 5000).unwrap(), "expired");
    assert!(s.durable_reclaim(10, 4000).unwrap());
    assert!(!s.durable_reclaim(10, 4000).unwrap(), "claimed once");
    assert_eq!(s.durable_get(10).unwrap().unwrap().disconnected_until, None);
    // Remove (the waiters come back with the record); a dead worker's
    // durable opens go with it.
    s.durable_watch(10, 5).unwrap();
    assert_eq!(s.durable_remove(10).unwrap(), Some(DurableRecord { waiters: vec![5], ..a }));
    assert_eq!(s.durable_remove(10).unwrap(), None);
    s.durable_disconnect(11, 100).unwrap();
    s.durable_watch(11, 7).unwrap();
    assert!(s.purge_worker(2).unwrap().contains(&(7, F)), "a waiter for a dead worker's record is woken");
    assert_eq!(s.durable_get(11).unwrap(), None);
}

#[test]
fn memory_store() {
    suite(memory);
}

#[test]
fn lmdb_store() {
    let dir = tempfile::tempdir().unwrap();
    // Each case starts from a cleared store in the same directory.
    suite(|| create(dir.path()).unwrap());
}

#[test]
fn lmdb_is_opened_once_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).unwrap();
    let b = open(dir.path()).unwrap();
    a.open_file(F, entry(id(1, 1), READ, 0)).unwrap();
    assert!(b.has_opens(F).unwrap());
    // Records survive a reopen (a worker restarting) but not `create` (a new supervisor).
    drop((a, b));
    assert!(open(dir.path()).unwrap().has_opens(F).unwrap());
    assert!(!create(dir.path()).unwrap().has_opens(F).unwrap());
}

/// The child side of `lmdb_across_processes`: run by re-executing this test
/// binary with SMBDIRECT_STORE_CHILD set to the state directory.
#[test]
fn lmdb_child() {
    let Some(dir) = std::env::var_os("SMBDIRECT_STORE_CHILD") else { return };
    let s = open(std::path::Path::new(&dir)).unwrap();
    let me = id(2, 1);
    // The parent's open and lock are visible here.
    let shared = matches!(s.open_file(F, entry(me, WRITE, SHARE_ALL)), Err(OpenError::SharingViolation));
    let locked = matches!(s.lock(F, me, &[brl(0, 10, true)], 0, Some(2)), Err(LockError::NotGranted));
    // Records of its own that the parent must see.
    s.open_file(G, entry(me, READ, 0)).unwrap();
    s.lock(G, me, &[brl(5, 5, true)], 0, None).unwrap();
    println!("CHILD-RESULT shared={shared} locked={locked}");
}

#[test]
fn lmdb_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let s = create(dir.path()).unwrap();
    let me = id(1, 1);
    s.open_file(F, entry(me, READ, 1)).unwrap();
    s.lock(F, me, &[brl(0, 10, true)], 0, None).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::tests::lmdb_child", "--nocapture", "--test-threads=1"])
        .env("SMBDIRECT_STORE_CHILD", dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("CHILD-RESULT shared=true locked=true"), "child did not see our records: {text}");
    // The child's records, and its wait, are visible here after it exited.
    assert!(matches!(s.open_file(G, entry(me, WRITE, SHARE_ALL)), Err(OpenError::SharingViolation)));
    assert!(s.io_conflict(G, me, 5, 1, false).unwrap());
    assert_eq!(s.unlock(F, me, &[(0, 10)]).unwrap().wake, vec![2]);
    // The supervisor's clean-up of the dead child.
    s.purge_worker(2).unwrap();
    s.close_file(F, me).unwrap();
    assert!(s.snapshot().unwrap().is_empty());
}

/// Cost of each operation per backend (not a check: run with
/// `cargo test --release -p smbdirect-server --lib store_op_cost -- --ignored --nocapture`).
#[test]
#[ignore = "measurement"]
fn store_op_cost() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20_000u64;
    for (name, s) in [("memory", memory()), ("lmdb", create(dir.path()).unwrap())] {
        // Other files' records, so lookups are not in an empty table.
        for i in 0..1000 {
            s.open_file(FileKey { dev: 2, ino: i }, entry(id(1, i), READ, SHARE_ALL)).unwrap();
        }
        let t = std::time::Instant::now();
        for i in 0..n {
            s.open_file(F, entry(id(1, i), READ, SHARE_ALL)).unwrap();
            s.close_file(F, id(1, i)).unwrap();
        }
        let oc = t.elapsed().as_nanos() as u64 / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            s.lock(F, id(1, 1), &[brl(0, 10, true)], 0, None).unwrap();
            s.unlock(F, id(1, 1), &[(0, 10)]).unwrap();
        }
        let lu = t.elapsed().as_nanos() as u64 / n;
        s.lock(F, id(1, 1), &[brl(1 << 20, 10, true)], 0, None).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..n {
            assert!(!s.io_conflict(F, id(1, 2), 0, 4096, false).unwrap());
        }
        let io = t.elapsed().as_nanos() as u64 / n;
        println!("{name:7} open+close {oc:6} ns  lock+unlock {lu:6} ns  io_conflict {io:6} ns");
    }
}
