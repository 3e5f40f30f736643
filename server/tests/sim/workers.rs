//! Two workers, one shared state: two `Server`s with different worker ids
//! on one LMDB store in one state directory, each with its own wake-up
//! socket there (the multi-process path: wake-ups between them go as
//! datagrams, not direct calls). Clients of one see the other's share
//! modes, byte-range locks and delete-pending, and a blocking lock waiting
//! in one is granted when the other frees the range.

use crate::harness::*;
use smbdirect_server::objects::Server;
use smbdirect_server::store;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(5);
const SHARING_VIOLATION: u32 = 0xC000_0043;
const FILE_LOCK_CONFLICT: u32 = 0xC000_0054;
const DELETE_PENDING: u32 = 0xC000_0056;
const RANGE_NOT_LOCKED: u32 = 0xC000_007E;
const GENERIC_READ: u32 = 0x8000_0000;
const GENERIC_WRITE: u32 = 0x4000_0000;
const DELETE: u32 = 0x0001_0000;
const SHARE_READ: u32 = 1;
const DELETE_ON_CLOSE: u32 = 0x1000;

struct Pair {
    a: TestServer,
    b: TestServer,
    state: tempfile::TempDir,
    share: tempfile::TempDir,
}

/// Worker `id` on the share and state directory given.
fn worker(share: &Path, state: &Path, id: u32) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let cfg = smbdirect_server::config::ServerConfig {
        netbios_name: "SIMSRV".into(),
        shares: vec![smbdirect_server::config::ShareConfig::new("share", share)],
        users: vec![(USER.into(), PASSWORD.into())],
        ..Default::default()
    };
    let s = store::open(state).unwrap();
    let server = Server::with_store(cfg, s, id, Some(state.to_path_buf())).unwrap();
    TestServer { server, dir }
}

fn pair() -> Pair {
    let state = tempfile::tempdir().unwrap();
    // The supervisor's part: a fresh store.
    drop(store::create(state.path()).unwrap());
    let share = tempfile::tempdir().unwrap();
    let a = worker(share.path(), state.path(), 1);
    let b = worker(share.path(), state.path(), 2);
    Pair { a, b, state, share }
}

fn open(c: &mut Client, name: &str, access: u32, share: u32, options: u32) -> Resp {
    c.call(CREATE, 1, &create_body(name, access, share, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE | options))
}

#[test]
fn share_modes_across_workers() {
    let p = pair();
    let (mut ca, mut cb) = (connected(&p.a), connected(&p.b));
    let fa = open(&mut ca, "shared.txt", GENERIC_READ | GENERIC_WRITE, SHARE_READ, 0);
    assert_eq!(fa.status, SUCCESS);
    // A writer on the other worker is refused; a reader that shares writing is not.
    assert_eq!(open(&mut cb, "shared.txt", GENERIC_WRITE, SHARE_ALL, 0).status, SHARING_VIOLATION);
    assert_eq!(open(&mut cb, "shared.txt", GENERIC_READ, SHARE_READ, 0).status, SHARING_VIOLATION, "A writes: B must share writing");
    let fb = open(&mut cb, "shared.txt", GENERIC_READ, SHARE_ALL, 0);
    assert_eq!(fb.status, SUCCESS);
    assert_eq!(ca.close(&fa.file_id()).status, SUCCESS);
    assert_eq!(cb.close(&fb.file_id()).status, SUCCESS);
    assert_eq!(open(&mut cb, "shared.txt", GENERIC_WRITE, 0, 0).status, SUCCESS, "free once A closed");
}

#[test]
fn delete_on_close_across_workers() {
    let p = pair();
    let (mut ca, mut cb) = (connected(&p.a), connected(&p.b));
    let fa = open(&mut ca, "doomed.txt", GENERIC_READ | DELETE, SHARE_ALL, DELETE_ON_CLOSE);
    assert_eq!(fa.status, SUCCESS);
    let fb = open(&mut cb, "doomed.txt", GENERIC_READ, SHARE_ALL, 0);
    assert_eq!(fb.status, SUCCESS);
    // A's close makes the delete pending for everyone; B's, the last, deletes.
    assert_eq!(ca.close(&fa.file_id()).status, SUCCESS);
    assert_eq!(open(&mut ca, "doomed.txt", GENERIC_READ, SHARE_ALL, 0).status, DELETE_PENDING);
    assert!(p.share.path().join("doomed.txt").exists());
    assert_eq!(cb.close(&fb.file_id()).status, SUCCESS);
    assert!(!p.share.path().join("doomed.txt").exists(), "the last close on the other worker deleted it");
}

/// A holds 0..100 exclusively through worker 1; B's open on worker 2.
fn held_across(p: &Pair) -> (Client, Client, [u8; 16], [u8; 16]) {
    let (mut ca, mut cb) = (connected(&p.a), connected(&p.b));
    let fa = ca.open_file("locked.bin");
    let fb = cb.open_file("locked.bin");
    assert_eq!(ca.write(&fa, 0, &[7u8; 200]).status, SUCCESS);
    assert_eq!(ca.call(LOCK, 1, &lock_body(&fa, 0, 100, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY)).status, SUCCESS);
    (ca, cb, fa, fb)
}

#[test]
fn byte_range_locks_across_workers() {
    let p = pair();
    let (mut ca, mut cb, fa, fb) = held_across(&p);
    assert_eq!(cb.call(LOCK, 1, &lock_body(&fb, 50, 10, LOCK_SHARED | LOCK_FAIL_IMMEDIATELY)).status, LOCK_NOT_GRANTED);
    assert_eq!(cb.read(&fb, 10, 10, 1).status, FILE_LOCK_CONFLICT);
    assert_eq!(cb.write(&fb, 90, b"xx").status, FILE_LOCK_CONFLICT);
    // Outside the range both go on.
    assert_eq!(cb.read(&fb, 100, 10, 1).status, SUCCESS);
    assert_eq!(cb.call(LOCK, 1, &lock_body(&fb, 100, 10, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY)).status, SUCCESS);
    // B cannot unlock A's range; A can.
    assert_eq!(cb.call(LOCK, 1, &lock_body(&fb, 0, 100, LOCK_UNLOCK)).status, RANGE_NOT_LOCKED);
    assert_eq!(ca.call(LOCK, 1, &lock_body(&fa, 0, 100, LOCK_UNLOCK)).status, SUCCESS);
    assert_eq!(cb.read(&fb, 10, 10, 1).status, SUCCESS);
}

fn blocking(c: &mut Client, fid: &[u8; 16]) -> Resp {
    let r = c.call(LOCK, 1, &lock_body(fid, 50, 10, LOCK_EXCLUSIVE));
    assert_eq!(r.status, PENDING);
    r
}

#[test]
fn blocking_lock_released_by_unlock_on_another_worker() {
    let p = pair();
    let (mut ca, mut cb, fa, fb) = held_across(&p);
    let mut waits = Vec::new();
    for round in 0..20 {
        let interim = blocking(&mut cb, &fb);
        assert!(cb.sink.wait(Duration::from_millis(if round == 0 { 300 } else { 5 })).is_none(), "granted while held");
        let t = Instant::now();
        assert_eq!(ca.call(LOCK, 1, &lock_body(&fa, 0, 100, LOCK_UNLOCK)).status, SUCCESS);
        let f = cb.next_async(WAIT).expect("waiter on worker 2 not woken within 5 s");
        waits.push(t.elapsed());
        assert_eq!((f.status, f.async_id), (SUCCESS, interim.async_id));
        // Hand it back for the next round.
        assert_eq!(cb.call(LOCK, 1, &lock_body(&fb, 50, 10, LOCK_UNLOCK)).status, SUCCESS);
        assert_eq!(ca.call(LOCK, 1, &lock_body(&fa, 0, 100, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY)).status, SUCCESS);
    }
    waits.sort();
    eprintln!("cross-worker wake latency (unlock sent -> final LOCK response), 20 rounds: median {:?}, max {:?}", waits[10], waits[19]);
    assert!(waits[10] < Duration::from_millis(100), "median wake latency {:?}: not event-driven", waits[10]);
}

#[test]
fn blocking_lock_released_by_close_and_by_purge_of_a_dead_worker() {
    let p = pair();
    let (mut ca, mut cb, fa, fb) = held_across(&p);
    blocking(&mut cb, &fb);
    assert_eq!(ca.close(&fa).status, SUCCESS);
    assert_eq!(cb.next_async(WAIT).expect("not woken by the close").status, SUCCESS);
    assert_eq!(cb.call(LOCK, 1, &lock_body(&fb, 50, 10, LOCK_UNLOCK)).status, SUCCESS);
    // Worker 1 takes the range again and "dies": the supervisor purges it.
    let fa = ca.open_file("locked.bin");
    assert_eq!(ca.call(LOCK, 1, &lock_body(&fa, 0, 100, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY)).status, SUCCESS);
    blocking(&mut cb, &fb);
    let s = store::open(p.state.path()).unwrap();
    assert_eq!(store::purge_and_wake(&*s, p.state.path(), 1).unwrap(), 1);
    assert_eq!(cb.next_async(WAIT).expect("not woken by the purge").status, SUCCESS);
}

#[test]
fn cancel_and_close_end_a_cross_worker_wait() {
    let p = pair();
    let (_ca, mut cb, _fa, fb) = held_across(&p);
    let interim = blocking(&mut cb, &fb);
    let m = build_header(CANCEL, 0, 0, 0, interim.message_id, cb.tree_id, cb.session_id, &[4, 0, 0, 0]);
    cb.conn.handle_message(m).unwrap();
    assert_eq!(cb.next_async(WAIT).expect("cancel").status, CANCELLED);
    blocking(&mut cb, &fb);
    assert_eq!(cb.close(&fb).status, SUCCESS);
    assert_eq!(cb.next_async(WAIT).expect("close").status, RANGE_NOT_LOCKED);
    // Worker 2 no longer waits on the file.
    let s = store::open(p.state.path()).unwrap();
    let snap = s.snapshot().unwrap();
    assert!(snap.iter().all(|(_, _, l)| l.waiters.is_empty()), "{snap:?}");
}
