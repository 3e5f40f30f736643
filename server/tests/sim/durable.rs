//! Durable handles v1/v2 and CREATE replay: an open kept across a lost
//! connection (with its share mode and oplock), taken back by DHnC/DH2C
//! after a SESSION_SETUP naming the previous session, released when its
//! timeout passes or when another open needs its oplock broken; a replayed
//! DH2Q CREATE answered from the open it made.

use crate::harness::*;
use std::time::Duration;

const LEVEL_NONE: u8 = 0;
const LEVEL_BATCH: u8 = 9;
const OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
const SHARING_VIOLATION: u32 = 0xC000_0043;
const F_REPLAY: u32 = 0x2000_0000;
const DUPLICATE_OBJECTID: u32 = 0xC000_022A;
const FILE_NOT_AVAILABLE: u32 = 0xC000_0467;

/// A CREATE body with create contexts appended (MS-SMB2 2.2.13.2).
fn with_contexts(mut b: Vec<u8>, ctxs: &[(&[u8; 4], Vec<u8>)]) -> Vec<u8> {
    while (64 + b.len()) % 8 != 0 {
        b.push(0);
    }
    let start = 64 + b.len();
    let mut blob: Vec<u8> = Vec::new();
    let mut prev: Option<usize> = None;
    for (name, data) in ctxs {
        while blob.len() % 8 != 0 {
            blob.push(0);
        }
        if let Some(p) = prev {
            let next = (blob.len() - p) as u32;
            blob[p..p + 4].copy_from_slice(&next.to_le_bytes());
        }
        prev = Some(blob.len());
        let data_off: u16 = if data.is_empty() { 0 } else { 24 };
        blob.u32_(0).u16_(16).u16_(4).u16_(0).u16_(data_off).u32_(data.len() as u32).bytes(&name[..]).bytes(&[0; 4]).bytes(data);
    }
    b[48..52].copy_from_slice(&(start as u32).to_le_bytes());
    b[52..56].copy_from_slice(&(blob.len() as u32).to_le_bytes());
    b.extend_from_slice(&blob);
    b
}

fn dh2q(timeout_ms: u32, guid: [u8; 16]) -> (&'static [u8; 4], Vec<u8>) {
    let mut d = Vec::new();
    d.u32_(timeout_ms).u32_(0).bytes(&[0; 8]).bytes(&guid);
    (b"DH2Q", d)
}

fn dh2c(fid: &[u8; 16], guid: [u8; 16]) -> (&'static [u8; 4], Vec<u8>) {
    let mut d = Vec::new();
    d.bytes(fid).bytes(&guid).u32_(0);
    (b"DH2C", d)
}

fn create_with(c: &mut Client, name: &str, level: u8, ctxs: &[(&[u8; 4], Vec<u8>)]) -> Resp {
    let mut b = create_body(name, GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
    b[3] = level;
    c.call(CREATE, 1, &with_contexts(b, ctxs))
}

/// The create contexts of a CREATE response: (name, data).
fn response_contexts(r: &Resp) -> Vec<([u8; 4], Vec<u8>)> {
    let off = le32(&r.raw, 64 + 80) as usize;
    let len = le32(&r.raw, 64 + 84) as usize;
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let mut at = off;
    loop {
        let next = le32(&r.raw, at) as usize;
        let name_off = le16(&r.raw, at + 4) as usize;
        let data_off = le16(&r.raw, at + 10) as usize;
        let data_len = le32(&r.raw, at + 12) as usize;
        let name: [u8; 4] = r.raw[at + name_off..at + name_off + 4].try_into().unwrap();
        out.push((name, r.raw[at + data_off..at + data_off + data_len].to_vec()));
        if next == 0 {
            return out;
        }
        at += next;
    }
}

/// A new connection of the same user naming `previous` as its previous session.
fn reconnect_client(ts: &TestServer, previous: u64) -> Client {
    let mut c = Client::new(ts);
    c.previous_session = previous;
    c.logon();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    c
}

/// The brief's scenario in the simulator: a durable v2 open with a batch
/// oplock, the connection dropped, a new connection with PreviousSessionId
/// and DH2C, and writing goes on through the same FileId.
#[test]
fn v2_open_survives_a_lost_connection() {
    let ts = server();
    let guid = [0x5A; 16];
    let mut a = connected(&ts);
    let r = create_with(&mut a, "d.txt", LEVEL_BATCH, &[dh2q(0, guid)]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    let ctx = response_contexts(&r);
    assert_eq!(ctx.len(), 1);
    assert_eq!(&ctx[0].0, b"DH2Q");
    assert_eq!(le32(&ctx[0].1, 0), 60_000, "timeout 0 gets the default");
    assert_eq!(le32(&ctx[0].1, 4), 0, "never persistent");
    let fid = r.file_id();
    assert_eq!(a.write(&fid, 0, b"first,").status, SUCCESS);
    let old_session = a.session_id;
    drop(a);
    assert_eq!(ts.server.durable.len(), 1, "kept, disconnected");
    // `smbdirect status` lists it.
    let st = smbdirect_server::status::worker_json(&ts.server);
    let listed = st["disconnected_opens"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["path"].as_str(), listed[0]["persistent_id"].as_u64()), (Some("d.txt"), Some(u64::from_le_bytes(fid[..8].try_into().unwrap()))));
    assert!(listed[0]["expires_in_s"].as_u64().is_some_and(|s| (55..=60).contains(&s)));

    // The file is still open with its share mode (none): others are kept out
    // while the open waits, and an attributes-only open breaks nothing.
    let mut b = reconnect_client(&ts, old_session);
    let r = b.call(CREATE, 1, &create_body("d.txt", 0x80, SHARE_ALL, FILE_OPEN, 0));
    assert_eq!(r.status, SUCCESS);
    b.close(&r.file_id());

    // A reconnect with the wrong CreateGuid is refused; the right one gets the same FileId.
    let r = create_with(&mut b, "d.txt", LEVEL_BATCH, &[dh2c(&fid, [0x11; 16])]);
    assert_eq!(r.status, OBJECT_NAME_NOT_FOUND);
    let r = create_with(&mut b, "d.txt", LEVEL_BATCH, &[dh2c(&fid, guid)]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    assert_eq!(r.file_id(), fid);
    assert!(ts.server.durable.is_empty());
    assert_eq!(b.write(&fid, 6, b"second").status, SUCCESS);
    let rd = b.read(&fid, 0, 64, 1);
    assert_eq!(rd.read_data(), b"first,second");
    // Reconnected once: a second reconnect finds nothing disconnected.
    assert_eq!(create_with(&mut b, "d.txt", LEVEL_BATCH, &[dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND);
    assert_eq!(b.close(&fid).status, SUCCESS);
    assert!(ts.server.no_open_state());
    assert!(ts.server.store.durable_get(u64::from_le_bytes(fid[..8].try_into().unwrap())).unwrap().is_none(), "record gone with the close");
}

/// A client reconnects as soon as it has dropped its connection, before
/// the server has read the end of it (smbtorture's durable-open reopen2 did
/// so and failed now and then on a loaded host): the DH2C waits for the old
/// connection to end instead of failing; while that connection is alive, the
/// reconnect still fails (after a bounded wait).
#[test]
fn reconnect_waits_for_the_old_connection_to_end() {
    let ts = server();
    let guid = [0x5C; 16];
    let mut a = connected(&ts);
    let r = create_with(&mut a, "w.txt", LEVEL_BATCH, &[dh2q(0, guid)]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    let fid = r.file_id();
    let mut b = connected(&ts);
    let started = std::time::Instant::now();
    assert_eq!(create_with(&mut b, "w.txt", LEVEL_BATCH, &[dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND, "its connection is alive");
    assert!(started.elapsed() >= Duration::from_millis(400), "the refusal came after the wait");
    let waiter = std::thread::spawn(move || {
        let r = create_with(&mut b, "w.txt", LEVEL_BATCH, &[dh2c(&fid, guid)]);
        (r.status, r.file_id(), b)
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(a);
    let (status, got, mut b) = waiter.join().unwrap();
    assert_eq!(status, SUCCESS, "reconnected once the old connection ended");
    assert_eq!(got, fid);
    assert_eq!(b.close(&fid).status, SUCCESS);
}

/// The same across workers (two servers on one LMDB state directory): the
/// reconnect on worker 2 waits for worker 1 to see the old connection end,
/// woken by worker 1's wake-up datagram when it marks the record
/// disconnected, since no timer looks at the store; then it takes the open
/// over.
#[test]
fn reconnect_on_another_worker_is_woken_when_the_old_connection_ends() {
    let (_base, t1, t2) = two_workers();
    let mut a = connected(&t1);
    let r = create_with(&mut a, "x.txt", LEVEL_BATCH, &[(b"DHnQ", vec![0; 16])]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    let fid = r.file_id();
    let mut b = connected(&t2);
    let waiter = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let r = create_with(&mut b, "x.txt", 0, &[(b"DHnC", fid.to_vec())]);
        (r.status, started.elapsed(), b)
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(a);
    let (status, waited, _b) = waiter.join().unwrap();
    assert_eq!(status, SUCCESS, "taken over once the old connection ended (waited {waited:?})");
    // Dropped after 100 ms; the wait's bound is 500 ms, and at the bound it
    // looks once more (so a missed wake-up would still succeed, late).
    assert!(waited >= Duration::from_millis(50) && waited < Duration::from_millis(400), "woken, not timed out: {waited:?}");
}

/// v1: DHnQ is granted with a batch oplock only; DHnC takes the open back
/// on a new connection whose session was set up with PreviousSessionId.
#[test]
fn v1_needs_a_batch_oplock_and_reconnects() {
    let ts = server();
    let mut a = connected(&ts);
    let r = create_with(&mut a, "none.txt", LEVEL_NONE, &[(b"DHnQ", vec![0; 16])]);
    assert_eq!(r.status, SUCCESS);
    assert!(response_contexts(&r).is_empty(), "no oplock, no durable handle");
    let r = create_with(&mut a, "v1.txt", LEVEL_BATCH, &[(b"DHnQ", vec![0; 16])]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    let ctx = response_contexts(&r);
    assert_eq!((&ctx[0].0, ctx[0].1.len()), (b"DHnQ", 8));
    let fid = r.file_id();
    // While connected, a reconnect finds nothing to take back.
    assert_eq!(create_with(&mut a, "v1.txt", 0, &[(b"DHnC", fid.to_vec())]).status, OBJECT_NAME_NOT_FOUND);
    let old = a.session_id;
    drop(a);
    let mut b = reconnect_client(&ts, old);
    // Extra contexts with a reconnect: refused.
    let r = create_with(&mut b, "v1.txt", 0, &[(b"DHnC", fid.to_vec()), (b"MxAc", vec![])]);
    assert_eq!(r.status, OBJECT_NAME_NOT_FOUND);
    let r = create_with(&mut b, "v1.txt", 0, &[(b"DHnC", fid.to_vec())]);
    assert_eq!((r.status, r.file_id()), (SUCCESS, fid));
    assert_eq!(b.close(&fid).status, SUCCESS);
    assert!(ts.server.no_open_state(), "the non-durable open closed with its connection");
}

/// Another client's open that needs the batch oplock of a disconnected
/// durable open broken closes that open (it cannot acknowledge), and goes on.
#[test]
fn conflicting_open_purges_a_disconnected_open() {
    let ts = server();
    let guid = [0x77; 16];
    let mut a = connected(&ts);
    let r = create_with(&mut a, "c.txt", LEVEL_BATCH, &[dh2q(0, guid)]);
    let fid = r.file_id();
    drop(a);
    assert_eq!(ts.server.durable.len(), 1);
    let mut c = connected(&ts);
    let r = create_with(&mut c, "c.txt", LEVEL_BATCH, &[]);
    let r = if r.status == PENDING { c.next_async(Duration::from_secs(5)).expect("the CREATE finishes") } else { r };
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH), "the disconnected open is gone, its oplock with it");
    assert!(ts.server.durable.is_empty());
    assert_eq!(create_with(&mut c, "c.txt", 0, &[dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND);
}

/// A disconnected open whose timeout passes is closed, with its share mode
/// and its delete-on-close.
#[test]
fn timeout_releases_the_open() {
    let ts = server();
    let guid = [0x33; 16];
    let mut a = connected(&ts);
    let mut b = create_body("t.txt", GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE | 0x1000);
    b[3] = LEVEL_BATCH;
    let r = a.call(CREATE, 1, &with_contexts(b, &[dh2q(300, guid)]));
    assert_eq!(r.status, SUCCESS);
    assert_eq!(le32(&response_contexts(&r)[0].1, 0), 300);
    let fid = r.file_id();
    drop(a);
    assert!(ts.share_path().join("t.txt").exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !(ts.server.durable.is_empty() && ts.server.no_open_state()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ts.server.durable.is_empty(), "expired");
    assert!(ts.server.no_open_state());
    assert!(!ts.share_path().join("t.txt").exists(), "delete-on-close done at expiry");
    let mut c = connected(&ts);
    assert_eq!(create_with(&mut c, "t.txt", 0, &[dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND);
}

/// A durable open outlives a LOGOFF (taken back on a new session of the
/// same connection); a session keeps its durable opens only while they
/// hold the batch oplock, and a TREE_DISCONNECT closes them.
#[test]
fn logoff_keeps_and_a_broken_oplock_ends_durability() {
    let ts = server();
    let mut a = connected(&ts);
    let fid = create_with(&mut a, "l.txt", LEVEL_BATCH, &[(b"DHnQ", vec![0; 16])]).file_id();
    assert_eq!(a.call(LOGOFF, 1, &[4, 0, 0, 0]).status, SUCCESS);
    assert_eq!(ts.server.durable.len(), 1);
    a.switch_session(SessionCtx::default());
    a.session_setup();
    assert_eq!(a.tree_connect("share").status, SUCCESS);
    let r = create_with(&mut a, "l.txt", 0, &[(b"DHnC", fid.to_vec())]);
    assert_eq!((r.status, r.file_id()), (SUCCESS, fid));
    assert_eq!(a.call(TREE_DISCONNECT, 1, &[4, 0, 0, 0]).status, SUCCESS);
    drop(a);
    assert!(ts.server.durable.is_empty() && ts.server.no_open_state());

    // The batch oplock is broken to level II by a second open: no longer durable.
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let mut body = create_body("l.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0);
    body[3] = LEVEL_BATCH;
    let fa = a.call(CREATE, 1, &with_contexts(body, &[dh2q(0, [2; 16])])).file_id();
    let rb = b.call(CREATE, 1, &create_body("l.txt", FILE_READ_DATA, SHARE_ALL, FILE_OPEN, 0));
    assert_eq!(rb.status, PENDING);
    let brk = a.next_async(Duration::from_secs(5)).expect("break");
    assert_eq!(brk.body()[2], 1);
    let mut ack = Vec::new();
    ack.u16_(24).u8_(1).u8_(0).u32_(0).bytes(&fa);
    assert_eq!(a.call(18, 1, &ack).status, SUCCESS);
    assert_eq!(b.next_async(Duration::from_secs(5)).expect("b opens").status, SUCCESS);
    drop(a);
    assert!(ts.server.durable.is_empty(), "level II holds no handle caching: closed");
}

/// A CREATE replayed with the CreateGuid of an open of this session
/// answers with that open (MS-SMB2 3.3.5.9.10); without the replay flag,
/// or for a plain CREATE, it is a new open (which the share mode refuses).
#[test]
fn replayed_create_returns_the_open() {
    let ts = server();
    let guid = [0x42; 16];
    let mut a = connected(&ts);
    let first = create_with(&mut a, "r.txt", LEVEL_BATCH, &[dh2q(u32::MAX, guid)]);
    assert_eq!(le32(&response_contexts(&first).clone()[0].1, 0), 300_000, "clamped to 5 minutes");
    let fid = first.file_id();
    let mut body = create_body("r.txt", GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
    body[3] = LEVEL_BATCH;
    let body = with_contexts(body, &[dh2q(u32::MAX, guid)]);
    let mut msg = a.build(CREATE, 1, &body);
    set_flags(&mut msg, F_REPLAY);
    let r = a.send(msg).unwrap().pop().unwrap();
    assert_eq!((r.status, r.file_id(), r.body()[2]), (SUCCESS, fid, LEVEL_BATCH));
    assert_eq!(le32(r.body(), 4), 2, "CreateAction of the first CREATE (created)");
    assert_eq!(response_contexts(&r).len(), 1);
    // Replayed asking for no oplock: no oplock, no durable context (the open keeps its own).
    let mut body = create_body("r.txt", GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
    body[3] = LEVEL_NONE;
    let mut msg = a.build(CREATE, 1, &with_contexts(body, &[dh2q(0, guid)]));
    set_flags(&mut msg, F_REPLAY);
    let r = a.send(msg).unwrap().pop().unwrap();
    assert_eq!((r.status, r.file_id(), r.body()[2]), (SUCCESS, fid, LEVEL_NONE));
    assert!(response_contexts(&r).is_empty());
    // Not a replay: the CreateGuid is in use.
    assert_eq!(create_with(&mut a, "r.txt", LEVEL_BATCH, &[dh2q(0, guid)]).status, DUPLICATE_OBJECTID);
    // Another request on the open ends its replay eligibility: a replay is
    // then a new open (refused here by the first one's share mode, after
    // its batch oplock broke).
    assert_eq!(a.write(&fid, 0, b"x").status, SUCCESS);
    let mut body = create_body("r.txt", GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
    body[3] = LEVEL_NONE;
    let mut msg = a.build(CREATE, 1, &with_contexts(body, &[dh2q(0, guid)]));
    set_flags(&mut msg, F_REPLAY);
    let mut v = a.send(msg).unwrap();
    let r = v.pop().unwrap();
    assert_eq!(r.status, PENDING);
    let brk = v.pop().or_else(|| a.next_async(Duration::from_secs(5))).expect("break of the first open's oplock");
    assert_eq!((brk.command, brk.body()[2]), (18, 1));
    // While that CREATE waits, a replay of it is told to come back later.
    let mut body = create_body("r.txt", GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
    body[3] = LEVEL_NONE;
    let mut msg = a.build(CREATE, 1, &with_contexts(body, &[dh2q(0, guid)]));
    set_flags(&mut msg, F_REPLAY);
    assert_eq!(a.send(msg).unwrap().pop().unwrap().status, FILE_NOT_AVAILABLE);
    let mut ack = Vec::new();
    ack.u16_(24).u8_(1).u8_(0).u32_(0).bytes(&fid);
    assert_eq!(a.call(18, 1, &ack).status, SUCCESS);
    let r = a.next_async(Duration::from_secs(5)).expect("answer");
    assert_eq!(r.status, SHARING_VIOLATION);
}

/// LOCK sequences of a durable open (MS-SMB2 3.3.5.14): a LOCK replayed
/// with the LockSequence of one already done succeeds without locking again;
/// another number at that index is a new LOCK.
#[test]
fn lock_sequence_replay_of_a_durable_open() {
    let ts = server();
    let mut a = connected(&ts);
    let fid = create_with(&mut a, "k.txt", LEVEL_BATCH, &[dh2q(0, [9; 16])]).file_id();
    let lock_seq = |seq: u32| {
        let mut b = lock_body(&fid, 0, 10, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY);
        b[4..8].copy_from_slice(&seq.to_le_bytes());
        b
    };
    let seq = (1 << 4) | 3; // index 1, number 3
    assert_eq!(a.call(LOCK, 1, &lock_seq(seq)).status, SUCCESS);
    assert_eq!(a.call(LOCK, 1, &lock_seq(seq)).status, SUCCESS, "replayed: already done");
    assert_eq!(a.call(LOCK, 1, &lock_seq((1 << 4) | 4)).status, LOCK_NOT_GRANTED, "a new LOCK of the held range");
    assert_eq!(a.call(LOCK, 1, &lock_seq(0)).status, LOCK_NOT_GRANTED, "index 0: no sequence kept");
    // With multichannel on (the default) any open keeps them (a LOCK may be
    // replayed on another channel); without, only durable opens do.
    let plain = create_with(&mut a, "p.txt", LEVEL_NONE, &[]).file_id();
    let mut b = lock_body(&plain, 0, 10, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY);
    b[4..8].copy_from_slice(&seq.to_le_bytes());
    assert_eq!(a.call(LOCK, 1, &b).status, SUCCESS);
    assert_eq!(a.call(LOCK, 1, &b).status, SUCCESS);
    let ts = server_with(|c| c.multi_channel = false);
    let mut a = connected(&ts);
    let plain = create_with(&mut a, "p.txt", LEVEL_NONE, &[]).file_id();
    let mut b = lock_body(&plain, 0, 10, LOCK_EXCLUSIVE | LOCK_FAIL_IMMEDIATELY);
    b[4..8].copy_from_slice(&seq.to_le_bytes());
    assert_eq!(a.call(LOCK, 1, &b).status, SUCCESS);
    assert_eq!(a.call(LOCK, 1, &b).status, LOCK_NOT_GRANTED);
}

/// A DH2Q CREATE waiting for a break whose connection goes while its
/// session lives on another channel goes on without it: a replay on the
/// other channel gets FILE_NOT_AVAILABLE while it waits, then the open it
/// made (smbtorture replay.dhv2-pending2*-sane).
#[test]
fn waiting_create_outlives_its_channel_for_a_replay() {
    let ts = server();
    let mut holder = connected(&ts);
    let mut hb = create_body("w.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0);
    hb[3] = LEVEL_BATCH;
    let hfid = holder.call(CREATE, 1, &hb).file_id();
    let mut a = connected(&ts);
    let mut b = Client::new(&ts);
    b.negotiate();
    crate::multichannel::bind_to(&a, &mut b);
    b.tree_id = a.tree_id;
    let guid = [0x66; 16];
    let body = || {
        let mut x = create_body("w.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0);
        x[3] = LEVEL_NONE;
        with_contexts(x, &[dh2q(0, guid)])
    };
    assert_eq!(a.call(CREATE, 1, &body()).status, PENDING, "waits for the holder's break");
    let brk = holder.next_async(Duration::from_secs(5)).expect("break");
    assert_eq!(brk.command, 18);
    drop(a);
    let mut msg = b.build(CREATE, 1, &body());
    set_flags(&mut msg, F_REPLAY);
    assert_eq!(b.send(msg).unwrap().pop().unwrap().status, FILE_NOT_AVAILABLE);
    // The holder closes without acknowledging: the CREATE finishes for the session.
    assert_eq!(holder.close(&hfid).status, SUCCESS);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let r = loop {
        let mut msg = b.build(CREATE, 1, &body());
        set_flags(&mut msg, F_REPLAY);
        let r = b.send(msg).unwrap().pop().unwrap();
        if r.status != FILE_NOT_AVAILABLE || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r.status, SUCCESS);
    assert_eq!(le32(r.body(), 4), 1, "the CREATE's own action (opened), answered again");
    assert_eq!(b.close(&r.file_id()).status, SUCCESS);
    drop(b);
    assert!(ts.server.no_open_state(), "no open left behind");
}

/// `durable handles = no`: a DH2Q batch open gets no durable context and
/// closes with its connection.
#[test]
fn durable_handles_off() {
    let ts = server_with(|c| c.shares[0].durable_handles = false);
    let mut a = connected(&ts);
    let r = create_with(&mut a, "off.txt", LEVEL_BATCH, &[dh2q(0, [5; 16])]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    assert!(response_contexts(&r).is_empty());
    drop(a);
    assert!(ts.server.durable.is_empty() && ts.server.no_open_state());
}

/// A DH2Q open with the AppInstanceId of another open of the same file by
/// the same user closes that one first, without a break (MS-SMB2 3.3.5.9.13).
/// A DH2Q CREATE of app.txt (batch, sharing nothing) with CreateGuid
/// `[guid; 16]` and the AppInstanceId `[id; 16]`.
fn create_app(c: &mut Client, guid: u8, id: u8) -> Resp {
    let app = |id: u8| {
        let mut d = Vec::new();
        d.u16_(20).u16_(0).bytes(&[id; 16]);
        d
    };
    const TAG: [u8; 16] = [0x45, 0xBC, 0xA6, 0x6A, 0xEF, 0xA7, 0xF7, 0x4A, 0x90, 0x08, 0xFA, 0x46, 0x2E, 0x14, 0x4D, 0x74];
    let mut b = create_body("app.txt", GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
    b[3] = LEVEL_BATCH;
    // The 16-byte context name goes in by hand: with_contexts takes 4-byte names.
    let mut b = with_contexts(b, &[dh2q(0, [guid; 16]), (b"XXXX", app(id))]);
    let at = b.windows(4).rposition(|w| w == b"XXXX").unwrap();
    // Name length 16 and the data moved by 12 bytes: rebuild this context's header.
    let hdr = at - 16;
    let data = app(id);
    b.truncate(hdr);
    b.u32_(0).u16_(16).u16_(16).u16_(0).u16_(32).u32_(data.len() as u32).bytes(&TAG).bytes(&data);
    let total = b.len() - le32(&b, 48) as usize + 64;
    b[52..56].copy_from_slice(&(total as u32).to_le_bytes());
    c.call(CREATE, 1, &b)
}

#[test]
fn app_instance_id_takes_over() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let ra = create_app(&mut a, 1, 0xA1);
    assert_eq!((ra.status, ra.body()[2]), (SUCCESS, LEVEL_BATCH));
    // Another AppInstanceId: an ordinary conflicting open (sharing nothing, after a break).
    let rb = create_app(&mut b, 2, 0xB2);
    assert_eq!(rb.status, PENDING);
    let brk = a.next_async(Duration::from_secs(5)).expect("break");
    assert_eq!(brk.command, 18);
    let mut ack = Vec::new();
    ack.u16_(24).u8_(1).u8_(0).u32_(0).bytes(&ra.file_id());
    assert_eq!(a.call(18, 1, &ack).status, SUCCESS);
    assert_eq!(b.next_async(Duration::from_secs(5)).expect("answer").status, SHARING_VIOLATION);
    // The same AppInstanceId: the first open is closed, no break, the new one gets batch.
    let rb = create_app(&mut b, 3, 0xA1);
    assert_eq!((rb.status, rb.body()[2]), (SUCCESS, LEVEL_BATCH));
    assert!(a.next_async(Duration::from_millis(200)).is_none(), "no break");
    assert_eq!(a.close(&ra.file_id()).status, FILE_CLOSED);
    assert_eq!(b.close(&rb.file_id()).status, SUCCESS);
    assert!(ts.server.no_open_state());
}

/// The two opens of one AppInstanceId on two workers (connections with two
/// ClientGUIDs: smbtorture's durable-v2-open.app-instance): the new open's
/// worker asks the other, through the store and its wake-up socket, to close
/// the first one, and waits for that; no break reaches the first client.
#[test]
fn app_instance_id_takes_over_across_workers() {
    let (_base, t1, t2) = two_workers();
    let mut a = connected(&t1);
    let mut b = connected(&t2);
    let ra = create_app(&mut a, 1, 0xA1);
    assert_eq!((ra.status, ra.body()[2]), (SUCCESS, LEVEL_BATCH));
    let started = std::time::Instant::now();
    let rb = create_app(&mut b, 2, 0xA1);
    assert_eq!((rb.status, rb.body()[2]), (SUCCESS, LEVEL_BATCH), "the first open was closed on worker 1, no sharing violation");
    // Worker 1's close of the record wakes worker 2 (no timer): the CREATE
    // does not sit out its 2 s bound.
    assert!(started.elapsed() < Duration::from_millis(1500), "woken, not timed out: {:?}", started.elapsed());
    assert!(a.next_async(Duration::from_millis(200)).is_none(), "no break");
    assert_eq!(a.close(&ra.file_id()).status, FILE_CLOSED);
    assert_eq!(b.close(&rb.file_id()).status, SUCCESS);
    assert!(t1.server.no_open_state() && t2.server.no_open_state());
}

const LEVEL_LEASE: u8 = 0xFF;
const RWH: u32 = 7;

/// A version 2 RqLs context asking for `state` under the key `[key; 16]`.
fn rqls(key: u8, state: u32) -> (&'static [u8; 4], Vec<u8>) {
    let mut d = Vec::new();
    d.bytes(&[key; 16]).u32_(state).u32_(0).u64_(0).bytes(&[0; 16]).u16_(0).u16_(0);
    (b"RqLs", d)
}

/// The lease state of a CREATE response's RqLs context, if it has one.
fn lease_state(r: &Resp) -> Option<u32> {
    response_contexts(r).into_iter().find(|(n, _)| n == b"RqLs").map(|(_, d)| le32(&d, 16))
}

/// A durable open made with an RWH lease survives a lost connection with its
/// lease kept in the store: a reconnect without the lease, or with another
/// key, finds nothing; under another name it is INVALID_PARAMETER; the right
/// one gets the same FileId and the lease context (RWH), no durable context.
#[test]
fn leased_durable_open_reconnects_with_its_lease() {
    let ts = server();
    let guid = [0x31; 16];
    let mut a = connected(&ts);
    let r = create_with(&mut a, "l.txt", LEVEL_LEASE, &[rqls(5, RWH), dh2q(0, guid)]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_LEASE));
    assert_eq!(lease_state(&r), Some(RWH));
    assert!(response_contexts(&r).iter().any(|(n, _)| n == b"DH2Q"), "durable with RWH");
    let fid = r.file_id();
    assert_eq!(a.write(&fid, 0, b"leased,").status, SUCCESS);
    let old = a.session_id;
    drop(a);
    assert_eq!(ts.server.durable.len(), 1, "kept, disconnected");

    let mut b = reconnect_client(&ts, old);
    assert_eq!(create_with(&mut b, "l.txt", 0, &[dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND, "no lease asked");
    assert_eq!(create_with(&mut b, "l.txt", LEVEL_LEASE, &[rqls(6, RWH), dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND, "another key");
    assert_eq!(create_with(&mut b, "other.txt", LEVEL_LEASE, &[rqls(5, RWH), dh2c(&fid, guid)]).status, INVALID_PARAMETER, "another name");
    let r = create_with(&mut b, "l.txt", LEVEL_LEASE, &[rqls(5, 0), dh2c(&fid, guid)]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_LEASE));
    assert_eq!(r.file_id(), fid);
    assert_eq!(lease_state(&r), Some(RWH), "the lease as kept, whatever the reconnect asks");
    assert!(!response_contexts(&r).iter().any(|(n, _)| n == b"DH2Q"), "no durable context on a reconnect");
    assert!(ts.server.durable.is_empty());
    assert_eq!(b.write(&fid, 7, b"again").status, SUCCESS);
    assert_eq!(b.read(&fid, 0, 64, 1).read_data(), b"leased,again");
    assert_eq!(b.close(&fid).status, SUCCESS);
    assert!(ts.server.no_open_state());
}

/// Another client's open that needs the lease of a disconnected durable open
/// broken (here RWH -> RH) closes that open at once instead of waiting for an
/// acknowledgment nobody can send, and gets the whole lease it asked for.
#[test]
fn lease_break_purges_a_disconnected_leased_open() {
    let ts = server();
    let guid = [0x32; 16];
    let mut a = connected(&ts);
    let r = create_with(&mut a, "b.txt", LEVEL_LEASE, &[rqls(8, RWH), dh2q(0, guid)]);
    assert_eq!(lease_state(&r), Some(RWH));
    let fid = r.file_id();
    drop(a);
    assert_eq!(ts.server.durable.len(), 1);
    let mut c = connected(&ts);
    let t0 = std::time::Instant::now();
    let r = create_with(&mut c, "b.txt", LEVEL_LEASE, &[rqls(9, RWH)]);
    let r = if r.status == PENDING { c.next_async(Duration::from_secs(5)).expect("the CREATE finishes") } else { r };
    assert_eq!(r.status, SUCCESS);
    assert!(t0.elapsed() < Duration::from_secs(2), "no wait for a break timeout");
    assert_eq!(lease_state(&r), Some(RWH), "the disconnected open is gone, its lease with it");
    assert!(ts.server.durable.is_empty());
    assert_eq!(create_with(&mut c, "b.txt", LEVEL_LEASE, &[rqls(8, RWH), dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND);
}

/// The connection of a leased durable open goes while a break of its lease
/// is in progress (the LEASE_BREAK went out on it, nobody will acknowledge):
/// the open is not kept but closed, and the opener waiting for the break
/// goes on at once with the lease it asked for.
#[test]
fn disconnect_during_a_lease_break_closes_the_open() {
    let ts = server();
    let guid = [0x34; 16];
    let mut a = connected(&ts);
    let r = create_with(&mut a, "k.txt", LEVEL_LEASE, &[rqls(10, RWH), dh2q(0, guid)]);
    assert_eq!(lease_state(&r), Some(RWH));
    let fid = r.file_id();
    let mut c = connected(&ts);
    let r = create_with(&mut c, "k.txt", LEVEL_LEASE, &[rqls(11, RWH)]);
    assert_eq!(r.status, PENDING, "waits for the break of the first lease");
    assert!(a.next_async(Duration::from_secs(2)).is_some(), "LEASE_BREAK sent");
    let t0 = std::time::Instant::now();
    drop(a);
    let r = c.next_async(Duration::from_secs(5)).expect("the CREATE finishes");
    assert_eq!(r.status, SUCCESS);
    assert!(t0.elapsed() < Duration::from_secs(2), "no wait for the break timeout");
    assert_eq!(lease_state(&r), Some(RWH));
    assert!(ts.server.durable.is_empty());
    assert_eq!(create_with(&mut c, "k.txt", LEVEL_LEASE, &[rqls(10, RWH), dh2c(&fid, guid)]).status, OBJECT_NAME_NOT_FOUND);
}

/// A DHnC from a new client with no PreviousSessionId that reaches another
/// worker (two servers on one store, as two worker processes) takes the open
/// over: the file is opened again there with the open's share mode, lock and
/// oplock, the same persistent FileId, and writing goes on; the first worker
/// drops its copy without releasing anything.
#[test]
fn reconnect_on_another_worker_takes_the_open_over() {
    let a_srv = server();
    let store = a_srv.server.store.clone();
    let cfg = a_srv.server.cfg.clone();
    let b_srv = TestServer { server: smbdirect_server::objects::Server::with_store(cfg, store, 1, None).unwrap(), dir: tempfile::tempdir().unwrap() };
    let mut a = connected(&a_srv);
    let r = create_with(&mut a, "w.txt", LEVEL_BATCH, &[(b"DHnQ", vec![0; 16])]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    let fid = r.file_id();
    assert_eq!(a.write(&fid, 0, b"one,").status, SUCCESS);
    let mut lock = Vec::new();
    lock.u16_(48).u16_(1).u32_(0).bytes(&fid).u64_(100).u64_(10).u32_(0x2).u32_(0);
    assert_eq!(a.call(LOCK, 1, &lock).status, SUCCESS);
    drop(a);
    assert_eq!(a_srv.server.durable.len(), 1);

    let mut b = connected(&b_srv);
    let r = create_with(&mut b, "w.txt", 0, &[(b"DHnC", fid.to_vec())]);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_BATCH));
    let fid2 = r.file_id();
    assert_eq!(fid2[..8], fid[..8], "the same persistent id");
    assert_eq!(b.write(&fid2, 4, b"two").status, SUCCESS);
    assert_eq!(b.read(&fid2, 0, 64, 1).read_data(), b"one,two");
    // The share mode (none) and the lock went with it.
    let snap = a_srv.server.store.snapshot().unwrap();
    assert_eq!(snap.len(), 1);
    let (_, share, locks) = &snap[0];
    assert!(share.entries.len() == 1 && share.entries[0].open.worker == 1 && share.entries[0].share_access == 0);
    assert!(locks.locks.len() == 1 && locks.locks[0].owner.worker == 1);
    let t0 = std::time::Instant::now();
    while !a_srv.server.durable.is_empty() && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a_srv.server.durable.is_empty(), "the first worker dropped its copy");
    let mut unlock = lock.clone();
    unlock[40..44].copy_from_slice(&0x4u32.to_le_bytes());
    unlock[8..24].copy_from_slice(&fid2);
    assert_eq!(b.call(LOCK, 1, &unlock).status, SUCCESS, "the lock is the new open's");
    assert_eq!(b.close(&fid2).status, SUCCESS);
    assert!(a_srv.server.no_open_state(), "nothing left in the shared store");
    assert!(a_srv.server.store.durable_get(u64::from_le_bytes(fid[..8].try_into().unwrap())).unwrap().is_none());
}

/// A replayed DH2Q CREATE of an open made with a lease: with another lease
/// key ACCESS_DENIED; with the same key (any state asked) or with an oplock,
/// the open's FileId, the lease as it is now and the durable context.
#[test]
fn replayed_create_of_a_leased_open() {
    let ts = server();
    let guid = [0x43; 16];
    let mut a = connected(&ts);
    let first = create_with(&mut a, "rl.txt", LEVEL_LEASE, &[rqls(12, 3), dh2q(0, guid)]);
    assert_eq!((first.status, lease_state(&first)), (SUCCESS, Some(3)));
    let fid = first.file_id();
    let replay = |c: &mut Client, level: u8, ctxs: &[(&[u8; 4], Vec<u8>)]| {
        let mut body = create_body("rl.txt", GENERIC_ALL, 0, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE);
        body[3] = level;
        let mut msg = c.build(CREATE, 1, &with_contexts(body, ctxs));
        set_flags(&mut msg, F_REPLAY);
        c.send(msg).unwrap().pop().unwrap()
    };
    assert_eq!(replay(&mut a, LEVEL_LEASE, &[rqls(13, 3), dh2q(0, guid)]).status, 0xC000_0022, "another lease key");
    for (level, ctxs) in [(LEVEL_LEASE, vec![rqls(12, 1), dh2q(0, guid)]), (LEVEL_BATCH, vec![dh2q(0, guid)])] {
        let r = replay(&mut a, level, &ctxs);
        assert_eq!((r.status, r.file_id(), r.body()[2]), (SUCCESS, fid, LEVEL_LEASE));
        assert_eq!(lease_state(&r), Some(3), "RH, the lease as it is");
        assert!(response_contexts(&r).iter().any(|(n, _)| n == b"DH2Q"));
    }
    assert_eq!(a.close(&fid).status, SUCCESS);
}
