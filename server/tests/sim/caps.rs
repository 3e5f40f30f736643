//! Resource caps and connection timers (issue 7 part 4), each with a tiny cap
//! configured: reaching it answers with the status Windows (or Samba) gives,
//! or ends that one connection, and a second client is still served. Timers
//! are run with `Connection::on_timer` at a chosen instant: no test sleeps.

use crate::harness::*;
use smbdirect_server::conn::Disconnect;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const INSUFFICIENT_RESOURCES: u32 = 0xC000_009A;
const TOO_MANY_OPENED_FILES: u32 = 0xC000_011F;
const REQUEST_NOT_ACCEPTED: u32 = 0xC000_00D0;

/// The first leg of a new SESSION_SETUP exchange on `c` (SessionId 0).
fn first_leg(c: &mut Client) -> Resp {
    let (_, token) = Gss::new(USER, PASSWORD).step(None);
    let saved = c.session_id;
    c.session_id = 0;
    let msg = c.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
    c.session_id = saved;
    let mut v = c.raw(msg).expect("SESSION_SETUP ended the connection");
    assert_eq!(v.len(), 1);
    v.pop().unwrap()
}

fn is_timeout(r: Result<Option<Instant>, Disconnect>) -> bool {
    matches!(r, Err(Disconnect::Timeout(_)))
}

#[test]
fn open_files_per_session() {
    let ts = server_with(|c| c.limits.max_open_files = 2);
    let mut c = connected(&ts);
    let a = c.open_file("a");
    let _b = c.open_file("b");
    let r = c.create("c", GENERIC_ALL, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
    assert_eq!(r.status, TOO_MANY_OPENED_FILES);
    // Another client's session has its own count.
    let mut other = connected(&ts);
    other.open_file("c");
    // A CLOSE gives the place back.
    assert_eq!(c.close(&a).status, SUCCESS);
    c.open_file("c");
}

#[test]
fn sessions_per_connection() {
    let ts = server_with(|c| c.limits.max_sessions_per_connection = 2);
    let mut c = connected(&ts);
    let first = c.new_session();
    let second = c.switch_session(SessionCtx::default());
    assert_eq!(c.session_setup_as(USER, PASSWORD).err(), Some(INSUFFICIENT_RESOURCES));
    // The two sessions still work; after a LOGOFF a new one may be set up.
    c.switch_session(second);
    assert_eq!(c.logoff().status, SUCCESS);
    c.switch_session(SessionCtx::default());
    c.session_setup();
    c.switch_session(first);
    assert_eq!(c.tree_connect("share").status, SUCCESS);
}

#[test]
fn session_setups_in_progress_per_connection_and_in_all() {
    let ts = server_with(|c| {
        c.limits.max_pending_setups_per_connection = 2;
        c.limits.max_pending_setups = 3;
    });
    let mut x = Client::new(&ts);
    x.negotiate();
    assert_eq!(first_leg(&mut x).status, MORE_PROCESSING_REQUIRED);
    assert_eq!(first_leg(&mut x).status, MORE_PROCESSING_REQUIRED);
    assert_eq!(first_leg(&mut x).status, INSUFFICIENT_RESOURCES, "third exchange on one connection");
    let mut y = Client::new(&ts);
    y.negotiate();
    assert_eq!(first_leg(&mut y).status, MORE_PROCESSING_REQUIRED);
    assert_eq!(ts.server.pending_setups.load(Ordering::Relaxed), 3);
    // The server-wide cap: Windows's "no more connections" status.
    let mut z = Client::new(&ts);
    z.negotiate();
    assert_eq!(first_leg(&mut z).status, REQUEST_NOT_ACCEPTED);
    // The flooding connection goes away: its exchanges are given back and
    // the well-behaved client logs on.
    drop(x);
    assert_eq!(ts.server.pending_setups.load(Ordering::Relaxed), 1);
    z.session_setup();
    assert_eq!(z.tree_connect("share").status, SUCCESS);
    // A finished exchange holds no place.
    assert_eq!(ts.server.pending_setups.load(Ordering::Relaxed), 1);
}

#[test]
fn unfinished_session_setup_expires() {
    let ts = server_with(|c| c.limits.session_setup_timeout = Duration::from_secs(60));
    let mut c = connected(&ts);
    let r = first_leg(&mut c);
    assert_eq!(r.status, MORE_PROCESSING_REQUIRED);
    let sid = r.session_id;
    assert_eq!(ts.server.pending_setups.load(Ordering::Relaxed), 1);
    let now = Instant::now();
    // Not yet; the timer says when to look again.
    let next = c.conn.on_timer(now + Duration::from_secs(30)).expect("authenticated connection stays").expect("a deadline");
    assert!(next <= now + Duration::from_secs(61));
    c.conn.on_timer(now + Duration::from_secs(61)).expect("authenticated connection stays");
    assert_eq!(ts.server.pending_setups.load(Ordering::Relaxed), 0);
    assert!(ts.server.session(sid).is_none(), "the in-progress session is gone");
    // Continuing the dropped exchange finds no session.
    let (_, token) = Gss::new(USER, PASSWORD).step(None);
    let saved = c.session_id;
    c.session_id = sid;
    let msg = c.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
    c.session_id = saved;
    assert_eq!(c.raw(msg).unwrap()[0].status, USER_SESSION_DELETED);
    // The established session was not touched.
    assert_eq!(c.tree_connect("share").status, SUCCESS);
}

#[test]
fn negotiate_and_session_setup_timeouts() {
    let ts = server_with(|c| {
        c.limits.negotiate_timeout = Duration::from_secs(30);
        c.limits.session_setup_timeout = Duration::from_secs(60);
    });
    let t0 = Instant::now();
    // Never negotiates.
    let mut silent = Client::new(&ts);
    assert!(silent.conn.on_timer(t0 + Duration::from_secs(20)).is_ok());
    assert!(is_timeout(silent.conn.on_timer(t0 + Duration::from_secs(31))));
    // Negotiates, never authenticates (a SESSION_SETUP leg does not count).
    let mut unauth = Client::new(&ts);
    unauth.negotiate();
    first_leg(&mut unauth);
    assert!(unauth.conn.on_timer(t0 + Duration::from_secs(31)).is_ok());
    assert!(is_timeout(unauth.conn.on_timer(t0 + Duration::from_secs(61))));
    // Authenticated: neither applies (deadtime is off by default).
    let mut c = connected(&ts);
    assert_eq!(c.conn.on_timer(t0 + Duration::from_secs(3600)).unwrap(), None);
    // After its last LOGOFF the connection is unauthenticated again.
    assert_eq!(c.logoff().status, SUCCESS);
    c.conn.on_request(t0 + Duration::from_secs(10));
    assert!(c.conn.on_timer(t0 + Duration::from_secs(69)).is_ok());
    assert!(is_timeout(c.conn.on_timer(t0 + Duration::from_secs(71))));
}

#[test]
fn deadtime_only_without_open_files() {
    let ts = server_with(|c| c.limits.deadtime = Duration::from_secs(60));
    let mut c = connected(&ts);
    let t0 = Instant::now();
    let fid = c.open_file("held");
    // An open file keeps an idle connection (Samba's rule).
    assert!(c.conn.on_timer(t0 + Duration::from_secs(600)).is_ok());
    assert_eq!(c.close(&fid).status, SUCCESS);
    c.conn.on_request(t0);
    assert!(c.conn.on_timer(t0 + Duration::from_secs(59)).is_ok());
    assert!(is_timeout(c.conn.on_timer(t0 + Duration::from_secs(61))));
}

#[test]
fn locks_per_open() {
    let ts = server_with(|c| c.limits.max_locks_per_open = 2);
    let mut c = connected(&ts);
    let a = c.open_file("l.bin");
    let b = c.open_file("l.bin");
    let lk = |c: &mut Client, fid: &[u8; 16], off: u64, flags: u32| c.call(LOCK, 1, &lock_body(fid, off, 1, flags)).status;
    assert_eq!(lk(&mut c, &a, 0, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY), SUCCESS);
    assert_eq!(lk(&mut c, &a, 1, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY), SUCCESS);
    assert_eq!(lk(&mut c, &a, 2, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY), INSUFFICIENT_RESOURCES);
    // Nor may a lock that would wait get past the cap.
    assert_eq!(lk(&mut c, &a, 3, LOCK_EXCLUSIVE), INSUFFICIENT_RESOURCES);
    // Another open counts its own.
    assert_eq!(lk(&mut c, &b, 10, LOCK_SHARED | LOCK_FAIL_IMMEDIATELY), SUCCESS);
    // An unlock gives a place back.
    assert_eq!(lk(&mut c, &a, 0, LOCK_UNLOCK), SUCCESS);
    assert_eq!(lk(&mut c, &a, 2, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY), SUCCESS);
}

#[test]
fn async_requests_per_connection() {
    let ts = server_with(|c| c.limits.max_async_per_connection = 1);
    let mut c = connected(&ts);
    let a = c.open_file("w.bin");
    let b = c.open_file("w.bin");
    assert_eq!(c.call(LOCK, 1, &lock_body(&a, 0, 100, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY)).status, SUCCESS);
    let r = c.call(LOCK, 1, &lock_body(&b, 10, 1, LOCK_EXCLUSIVE));
    assert_eq!(r.status, PENDING);
    let r = c.call(LOCK, 1, &lock_body(&b, 20, 1, LOCK_EXCLUSIVE));
    assert_eq!(r.status, INSUFFICIENT_RESOURCES, "a second waiting request");
    // Another connection has its own count.
    let mut d = connected(&ts);
    let e = d.open_file("w.bin");
    assert_eq!(d.call(LOCK, 1, &lock_body(&e, 30, 1, LOCK_EXCLUSIVE)).status, PENDING);
    // The waiting lock is granted when the range frees; then the place is free again.
    assert_eq!(c.call(LOCK, 1, &lock_body(&a, 0, 100, LOCK_UNLOCK)).status, SUCCESS);
    let mut finals = Vec::new();
    while finals.len() < 2 {
        let f = if finals.is_empty() { c.next_async(Duration::from_secs(5)) } else { d.next_async(Duration::from_secs(5)) };
        finals.push(f.expect("final response").status);
    }
    assert_eq!(finals, vec![SUCCESS, SUCCESS]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !c.conn.asyncs.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // b holds 10 now: a's wait for it is the connection's one async request.
    assert_eq!(c.call(LOCK, 1, &lock_body(&a, 10, 1, LOCK_EXCLUSIVE)).status, PENDING);
}

#[test]
fn tree_connects_per_session_and_per_share() {
    let ts = server_with(|c| {
        c.limits.max_trees_per_session = 2;
        c.shares[0].max_connections = 2;
    });
    let mut c = connected(&ts);
    assert_eq!(c.tree_connect("IPC$").status, SUCCESS);
    assert_eq!(c.tree_connect("share").status, INSUFFICIENT_RESOURCES, "third tree of the session");
    // The share's `max connections` counts across the server.
    let mut d = connected(&ts);
    let held = d.tree_id;
    assert_eq!(d.tree_connect("share").status, INSUFFICIENT_RESOURCES, "third tree connect to the share");
    d.tree_id = held;
    assert_eq!(d.call(TREE_DISCONNECT, 1, &[4, 0, 0, 0]).status, SUCCESS);
    assert_eq!(d.tree_connect("share").status, SUCCESS);
    // A connection that ends gives its tree connects back (`connected`
    // checks its TREE_CONNECT to the share).
    drop(c);
    let _e = connected(&ts);
}

/// A directory handle of `c` with a CHANGE_NOTIFY sent on it; returns the handle
/// and the status of the CHANGE_NOTIFY.
fn watch_dir(c: &mut Client, name: &str) -> ([u8; 16], u32) {
    let dir = c.create(name, FILE_LIST_DIRECTORY, FILE_OPEN_IF, FILE_DIRECTORY_FILE).file_id();
    let r = c.call(CHANGE_NOTIFY, 1, &notify_body(&dir, 0x1, 4096));
    (dir, r.status)
}

#[test]
fn async_requests_in_all() {
    let ts = server_with(|c| {
        c.limits.max_async = 2;
        c.limits.max_async_per_connection = 0;
    });
    let mut c = connected(&ts);
    let mut d = connected(&ts);
    let (c1, st) = watch_dir(&mut c, "c1");
    assert_eq!(st, PENDING);
    assert_eq!(watch_dir(&mut d, "d1").1, PENDING);
    // A third, on either connection or a new one, is refused.
    assert_eq!(watch_dir(&mut c, "c2").1, INSUFFICIENT_RESOURCES);
    let mut e = connected(&ts);
    let (e1, st) = watch_dir(&mut e, "e1");
    assert_eq!(st, INSUFFICIENT_RESOURCES);
    // Closing c's handle ends its request and gives the place back.
    assert_eq!(c.close(&c1).status, SUCCESS);
    assert_eq!(ts.server.asyncs.pending(), 1);
    assert_eq!(e.call(CHANGE_NOTIFY, 1, &notify_body(&e1, 0x1, 4096)).status, PENDING);
    // A connection that ends gives its places back.
    drop(d);
    assert_eq!(ts.server.asyncs.pending(), 1);
    assert_eq!(watch_dir(&mut c, "c3").1, PENDING);
}

#[test]
fn change_notify_watches_per_session() {
    let ts = server_with(|c| c.limits.max_notify_watches_per_session = 2);
    let mut c = connected(&ts);
    let (a, st) = watch_dir(&mut c, "a");
    assert_eq!(st, PENDING);
    assert_eq!(watch_dir(&mut c, "b").1, PENDING);
    // A second request on a watched handle needs no new watch.
    assert_eq!(c.call(CHANGE_NOTIFY, 1, &notify_body(&a, 0x1, 4096)).status, PENDING);
    // A third handle is refused...
    let (x, st) = watch_dir(&mut c, "x");
    assert_eq!(st, INSUFFICIENT_RESOURCES);
    // ...while another session is served.
    let mut d = connected(&ts);
    assert_eq!(watch_dir(&mut d, "y").1, PENDING);
    // Closing a watched handle gives its watch back.
    assert_eq!(c.close(&a).status, SUCCESS);
    assert_eq!(c.call(CHANGE_NOTIFY, 1, &notify_body(&x, 0x1, 4096)).status, PENDING);
    assert_eq!(ts.server.asyncs.watches(c.session_id), 2);
}
