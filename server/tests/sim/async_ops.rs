//! Async operations (MS-SMB2 3.3.4.2, 3.3.5.16): interim STATUS_PENDING with an
//! AsyncId, CANCEL, and final responses sent later from another thread.

use crate::harness::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// Two opens of one file; the first holds an exclusive lock on 0..100.
fn held_lock(c: &mut Client) -> ([u8; 16], [u8; 16]) {
    let a = c.open_file("locked.bin");
    let b = c.open_file("locked.bin");
    assert_ne!(a, b);
    let r = c.call(LOCK, 1, &lock_body(&a, 0, 100, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY));
    assert_eq!(r.status, SUCCESS);
    // A conflicting lock that may not wait fails at once.
    let r = c.call(LOCK, 1, &lock_body(&b, 50, 10, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY));
    assert_eq!(r.status, LOCK_NOT_GRANTED);
    (a, b)
}

/// Sends a blocking LOCK and checks the interim response; returns it.
fn blocking_lock(c: &mut Client, fid: &[u8; 16]) -> Resp {
    let r = c.call(LOCK, 1, &lock_body(fid, 50, 10, LOCK_EXCLUSIVE));
    assert_eq!(r.status, PENDING, "interim response");
    assert_eq!(r.flags & F_ASYNC, F_ASYNC, "interim response has the ASYNC flag");
    assert_ne!(r.async_id, 0, "interim response carries an AsyncId");
    assert!(r.credits >= 1, "the interim response grants the credits");
    r
}

/// The async-form CANCEL (it consumes no credit and no message id).
fn cancel_async(c: &mut Client, interim: &Resp) {
    let mut m = build_header(CANCEL, 0, 0, F_ASYNC, interim.message_id, 0, c.session_id, &[4, 0, 0, 0]);
    m[32..40].copy_from_slice(&interim.async_id.to_le_bytes());
    if c.encrypt {
        let sealed = c.seal(&m);
        c.conn.handle_message(sealed).unwrap();
    } else {
        if c.sign {
            c.sign_msg(&mut m);
        }
        c.conn.handle_message(m).unwrap();
    }
}

fn final_response(c: &mut Client) -> Resp {
    c.next_async(WAIT).expect("no final response within 5 s")
}

fn cancel_blocking_lock(ts: &TestServer) {
    let mut c = connected(ts);
    let (_a, b) = held_lock(&mut c);
    let interim = blocking_lock(&mut c, &b);
    // Nothing more arrives while the lock is held.
    assert!(c.sink.wait(Duration::from_millis(300)).is_none(), "final response before the lock was free");
    cancel_async(&mut c, &interim);
    let f = final_response(&mut c);
    assert_eq!(f.command, LOCK);
    assert_eq!(f.status, CANCELLED);
    assert_eq!(f.message_id, interim.message_id);
    assert_eq!(f.async_id, interim.async_id);
    assert_eq!(f.flags & F_ASYNC, F_ASYNC);
    c.check_resp(&f);
    // The connection goes on; the cancelled lock was not taken: open b can still not
    // lock, open a can unlock.
    let r = c.call(LOCK, 1, &lock_body(&_a, 0, 100, LOCK_UNLOCK));
    assert_eq!(r.status, SUCCESS);
    let r = c.call(LOCK, 1, &lock_body(&b, 50, 10, LOCK_UNLOCK));
    assert_eq!(r.status, 0xC000_007E, "RANGE_NOT_LOCKED: the cancelled lock was granted");
}

#[test]
fn cancel_a_blocking_lock() {
    cancel_blocking_lock(&server());
}

#[test]
fn cancel_a_blocking_lock_signed() {
    cancel_blocking_lock(&server_with(|cfg| required(cfg, true, false)));
}

#[test]
fn cancel_a_blocking_lock_encrypted() {
    cancel_blocking_lock(&server_with(|cfg| required(cfg, false, true)));
}

#[test]
fn blocking_lock_granted_when_the_range_frees() {
    let ts = server_with(|cfg| required(cfg, true, false));
    let mut c = connected(&ts);
    let (a, b) = held_lock(&mut c);
    let interim = blocking_lock(&mut c, &b);
    let r = c.call(LOCK, 1, &lock_body(&a, 0, 100, LOCK_UNLOCK));
    assert_eq!(r.status, SUCCESS);
    let f = final_response(&mut c);
    assert_eq!(f.status, SUCCESS);
    assert_eq!(f.async_id, interim.async_id);
    c.check_resp(&f);
    // Now b holds it: a cannot take it.
    let r = c.call(LOCK, 1, &lock_body(&a, 55, 1, LOCK_SHARED | LOCK_FAIL_IMMEDIATELY));
    assert_eq!(r.status, LOCK_NOT_GRANTED);
}

#[test]
fn sync_cancel_by_message_id() {
    let ts = server();
    let mut c = connected(&ts);
    let (_a, b) = held_lock(&mut c);
    let interim = blocking_lock(&mut c, &b);
    let m = build_header(CANCEL, 0, 0, 0, interim.message_id, c.tree_id, c.session_id, &[4, 0, 0, 0]);
    c.conn.handle_message(m).unwrap();
    let f = final_response(&mut c);
    assert_eq!(f.status, CANCELLED);
}

#[test]
fn cancel_from_another_session_does_nothing() {
    let ts = server();
    let mut c = connected(&ts);
    let (a, b) = held_lock(&mut c);
    let interim = blocking_lock(&mut c, &b);
    // A CANCEL naming the AsyncId with a different session id.
    let mut m = build_header(CANCEL, 0, 0, F_ASYNC, interim.message_id, 0, c.session_id + 1, &[4, 0, 0, 0]);
    m[32..40].copy_from_slice(&interim.async_id.to_le_bytes());
    c.conn.handle_message(m).unwrap();
    assert!(c.sink.wait(Duration::from_millis(300)).is_none(), "cancelled from another session");
    // Closing the waiting handle ends it.
    assert_eq!(c.close(&b).status, SUCCESS);
    let f = final_response(&mut c);
    assert_eq!(f.async_id, interim.async_id);
    assert_ne!(f.status, SUCCESS);
    let _ = a;
}

fn notify_result(r: &Resp) -> Vec<(u32, String)> {
    assert_eq!(le16(&r.raw, 64), 9);
    let off = le16(&r.raw, 66) as usize;
    let len = le32(&r.raw, 68) as usize;
    let buf = &r.raw[off..off + len];
    let mut v = Vec::new();
    let mut at = 0;
    loop {
        let next = le32(buf, at) as usize;
        let action = le32(buf, at + 4);
        let n = le32(buf, at + 8) as usize;
        let name: Vec<u16> = buf[at + 12..at + 12 + n].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        v.push((action, String::from_utf16(&name).unwrap()));
        if next == 0 {
            break;
        }
        at += next;
    }
    v
}

fn change_notify_on_create(ts: &TestServer) {
    let mut c = connected(ts);
    let dir = c.create("", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let r = c.call(CHANGE_NOTIFY, 1, &notify_body(&dir, 0x1, 4096));
    assert_eq!(r.status, PENDING);
    assert_ne!(r.async_id, 0);
    assert!(c.sink.wait(Duration::from_millis(200)).is_none(), "notified before any change");
    // Another open creates a file in the directory.
    let f = c.create("new-file.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE);
    assert_eq!(f.status, SUCCESS);
    let fin = final_response(&mut c);
    assert_eq!(fin.command, CHANGE_NOTIFY);
    assert_eq!(fin.status, SUCCESS);
    assert_eq!(fin.async_id, r.async_id);
    assert_eq!(fin.message_id, r.message_id);
    c.check_resp(&fin);
    let changes = notify_result(&fin);
    assert!(changes.contains(&(1, "new-file.txt".to_string())), "changes: {changes:?}");

    // A second request: CANCEL ends it.
    let r = c.call(CHANGE_NOTIFY, 1, &notify_body(&dir, 0x1, 4096));
    assert_eq!(r.status, PENDING);
    cancel_async(&mut c, &r);
    let fin = final_response(&mut c);
    assert_eq!(fin.status, CANCELLED);
    c.check_resp(&fin);
}

#[test]
fn change_notify_reports_a_created_file() {
    change_notify_on_create(&server());
}

#[test]
fn change_notify_reports_a_created_file_signed() {
    change_notify_on_create(&server_with(|cfg| required(cfg, true, false)));
}

#[test]
fn change_notify_reports_a_created_file_encrypted() {
    change_notify_on_create(&server_with(|cfg| required(cfg, false, true)));
}

#[test]
fn dropping_the_connection_ends_pending_operations() {
    let ts = server();
    let mut c = connected(&ts);
    let (_a, b) = held_lock(&mut c);
    blocking_lock(&mut c, &b);
    let sink = c.sink.clone();
    drop(c);
    // No final response is sent for a disconnected operation.
    assert!(sink.wait(Duration::from_millis(500)).is_none());
    // The session is gone from the server.
    assert!(ts.server.sessions.lock().unwrap().is_empty());
}

#[test]
fn change_notify_at_the_end_of_a_compound() {
    let ts = server();
    let mut c = connected(&ts);
    let create = c.build(CREATE, 1, &create_body("", FILE_LIST_DIRECTORY, SHARE_ALL, FILE_OPEN, FILE_DIRECTORY_FILE));
    let mut notify = c.build(CHANGE_NOTIFY, 1, &notify_body(&RELATED_FID, 0x1, 4096));
    set_flags(&mut notify, F_RELATED);
    let v = c.send(chain(vec![create, notify])).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].status, SUCCESS);
    assert_eq!(v[1].status, PENDING);
    assert_ne!(v[1].async_id, 0);
    assert_eq!(v[0].next_command % 8, 0);
    let f = c.create("later.txt", GENERIC_ALL, FILE_CREATE, 0);
    assert_eq!(f.status, SUCCESS);
    let fin = final_response(&mut c);
    assert_eq!(fin.status, SUCCESS);
    assert_eq!(fin.async_id, v[1].async_id);
    assert!(notify_result(&fin).contains(&(1, "later.txt".to_string())));
}

#[test]
fn badly_signed_cancel_does_not_cancel() {
    let ts = server_with(|cfg| required(cfg, true, false));
    let mut c = connected(&ts);
    let (_a, b) = held_lock(&mut c);
    let interim = blocking_lock(&mut c, &b);
    let mut m = build_header(CANCEL, 0, 0, F_ASYNC, interim.message_id, 0, c.session_id, &[4, 0, 0, 0]);
    m[32..40].copy_from_slice(&interim.async_id.to_le_bytes());
    c.sign_msg(&mut m);
    m[50] ^= 0x40;
    let _ = c.conn.handle_message(m);
    assert!(c.sink.wait(Duration::from_millis(500)).is_none(), "a forged CANCEL cancelled the lock");
}

/// A pending CHANGE_NOTIFY and what ends it: each ends it before the request
/// that ends it is answered (no poll interval), on the thread that asks.
fn pending_notify(c: &mut Client, dir: &[u8; 16]) -> Resp {
    let r = c.call(CHANGE_NOTIFY, 1, &notify_body(dir, 0x1, 4096));
    assert_eq!(r.status, PENDING);
    r
}

#[test]
fn close_ends_a_pending_change_notify_at_once() {
    let ts = server();
    let mut c = connected(&ts);
    let dir = c.create("", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let r = pending_notify(&mut c, &dir);
    assert_eq!(ts.server.asyncs.watches_total(), 1);
    // The CLOSE's own response comes after the NOTIFY_CLEANUP, in the same call.
    let msg = c.build(CLOSE, 1, &close_body(&dir));
    let v = c.send(msg).unwrap();
    assert_eq!(v.len(), 2, "NOTIFY_CLEANUP and the CLOSE response");
    let fin = &v[0];
    assert_eq!(fin.command, CHANGE_NOTIFY);
    assert_eq!((v[1].command, v[1].status), (CLOSE, SUCCESS));
    assert_eq!(fin.status, 0x0000_010B, "STATUS_NOTIFY_CLEANUP");
    assert_eq!(fin.async_id, r.async_id);
    assert!(c.conn.asyncs.is_empty());
    assert_eq!(ts.server.asyncs.watches_total(), 0, "the watch goes with the handle");
}

#[test]
fn cancel_ends_a_pending_change_notify_at_once() {
    let ts = server();
    let mut c = connected(&ts);
    let dir = c.create("", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let r = pending_notify(&mut c, &dir);
    cancel_async(&mut c, &r);
    let fin = c.next_async(Duration::ZERO).expect("CANCELLED sent before the CANCEL returned");
    assert_eq!(fin.status, CANCELLED);
    assert!(c.conn.asyncs.is_empty());
    // The watch stays with the handle: a change made now is reported by the next request.
    let f = c.create("while-idle.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE);
    assert_eq!(f.status, SUCCESS);
    let r = c.call(CHANGE_NOTIFY, 1, &notify_body(&dir, 0x1, 4096));
    assert_eq!(r.status, SUCCESS);
    assert!(notify_result(&r).contains(&(1, "while-idle.txt".to_string())));
}

/// The connection's teardown ends its pending operations and releases their
/// watches (inotify descriptors) before it returns.
#[test]
fn disconnect_releases_pending_change_notifies_before_it_returns() {
    let ts = server();
    let mut c = connected(&ts);
    for i in 0..4 {
        let name = format!("d{i}");
        let dir = c.create(&name, FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE).file_id();
        pending_notify(&mut c, &dir);
    }
    assert_eq!(ts.server.asyncs.pending(), 4);
    assert_eq!(ts.server.asyncs.watches_total(), 4);
    let sink = c.sink.clone();
    drop(c);
    assert_eq!(ts.server.asyncs.pending(), 0);
    assert_eq!(ts.server.asyncs.watches_total(), 0);
    assert!(sink.wait(Duration::from_millis(200)).is_none(), "nothing is sent after the end");
}

/// Pending CHANGE_NOTIFYs hold no thread each: 50 of them add no threads
/// to the process (the reactor is one thread for all).
#[test]
fn pending_change_notifies_hold_no_thread() {
    let ts = server_with(|c| c.limits.max_notify_watches_per_session = 0);
    let mut c = connected(&ts);
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let dir = c.create("", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    pending_notify(&mut c, &dir);
    let before = threads();
    let mut last = None;
    for i in 0..50 {
        let d = c.create(&format!("w{i}"), FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE).file_id();
        last = Some((d, pending_notify(&mut c, &d)));
    }
    // Other tests run in parallel threads of this process: allow for a few.
    let after = threads();
    assert!(after < before + 20, "{before} threads before, {after} with 50 more pending");
    // A change is reported at once to the one it concerns.
    let (d, r) = last.unwrap();
    let f = c.create("w49\\new.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE);
    assert_eq!(f.status, SUCCESS);
    let fin = final_response(&mut c);
    assert_eq!(fin.async_id, r.async_id);
    assert!(notify_result(&fin).contains(&(1, "new.txt".to_string())));
    let _ = d;
}

/// `smbdirect status`'s credits in use: nothing once every request is
/// answered; a pending CHANGE_NOTIFY's charge until its final response.
#[test]
fn credits_in_use_follow_unanswered_requests() {
    let ts = server();
    let mut c = connected(&ts);
    let in_use = |c: &Client| c.conn.credits_in_use.get() + c.conn.asyncs.credit_charge();
    let fid = c.open_file("f.bin");
    assert_eq!(c.write(&fid, 0, &[7u8; 200_000]).status, SUCCESS);
    assert_eq!(in_use(&c), 0, "every request answered");
    let dir = c.create("", FILE_LIST_DIRECTORY, FILE_OPEN, FILE_DIRECTORY_FILE).file_id();
    let mut msg = c.build(CHANGE_NOTIFY, 3, &notify_body(&dir, 0x1, 4096));
    if c.sign {
        sign_chain(c.keys.as_ref().unwrap(), &mut msg);
    }
    let r = c.raw(msg).unwrap().pop().unwrap();
    assert_eq!(r.status, PENDING);
    assert_eq!(in_use(&c), 3, "the pending CHANGE_NOTIFY's charge");
    cancel_async(&mut c, &r);
    let fin = final_response(&mut c);
    assert_eq!(fin.status, CANCELLED);
    // (The operation leaves its table right after its response is sent.)
    let deadline = std::time::Instant::now() + WAIT;
    while in_use(&c) != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(in_use(&c), 0, "answered");
}
