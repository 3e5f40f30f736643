//! Oplocks: grants on CREATE, breaks sent to the holder (on its own
//! connection, in its own worker), acknowledgments, the blocked CREATE
//! answered when the break ends or times out, level II breaks on WRITE.

use crate::harness::*;
use std::time::{Duration, Instant};

const OPLOCK_BREAK: u16 = 18;
const LEVEL_NONE: u8 = 0;
const LEVEL_II: u8 = 1;
const LEVEL_BATCH: u8 = 9;
const INVALID_OPLOCK_PROTOCOL: u32 = 0xC000_00E3;
const GENERIC_READ: u32 = 0x8000_0000;

fn create_oplock(c: &mut Client, name: &str, access: u32, level: u8) -> Resp {
    let mut b = create_body(name, access, SHARE_ALL, FILE_OPEN_IF, 0x40);
    b[3] = level;
    c.call(CREATE, 1, &b)
}

fn granted(r: &Resp) -> u8 {
    r.body()[2]
}

/// The next OPLOCK_BREAK notification this client gets: (level, FileId).
fn next_break(c: &mut Client, timeout: Duration) -> Option<(u8, [u8; 16])> {
    let r = c.next_async(timeout)?;
    assert_eq!((r.command, r.message_id, r.tree_id), (OPLOCK_BREAK, u64::MAX, 0), "an unsolicited OPLOCK_BREAK");
    assert_eq!(le16(r.body(), 0), 24);
    let mut fid = [0u8; 16];
    fid.copy_from_slice(&r.body()[8..24]);
    Some((r.body()[2], fid))
}

fn ack(c: &mut Client, fid: &[u8; 16], level: u8) -> Resp {
    let mut b = Vec::new();
    b.u16_(24).u8_(level).u8_(0).u32_(0).bytes(fid);
    c.call(OPLOCK_BREAK, 1, &b)
}

/// A batch oplock breaks to level II for a second client's open, which
/// waits (interim PENDING) until the holder acknowledges.
#[test]
fn batch_break_waits_for_the_ack() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let ra = create_oplock(&mut a, "f.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!((ra.status, granted(&ra)), (SUCCESS, LEVEL_BATCH));
    let fa = ra.file_id();
    // An open for attributes only breaks nothing.
    let stat = create_oplock(&mut b, "f.txt", 0x80, 0);
    assert_eq!(stat.status, SUCCESS);
    assert!(a.next_async(Duration::from_millis(100)).is_none(), "no break for a stat open");
    b.close(&stat.file_id());

    let rb = create_oplock(&mut b, "f.txt", GENERIC_READ, LEVEL_BATCH);
    assert_eq!(rb.status, PENDING, "the CREATE waits for the break");
    let (level, fid) = next_break(&mut a, Duration::from_secs(5)).expect("break notification");
    assert_eq!((level, fid), (LEVEL_II, fa));
    assert!(b.next_async(Duration::from_millis(200)).is_none(), "still waiting before the ack");
    let r = ack(&mut a, &fa, LEVEL_II);
    assert_eq!((r.status, r.body()[2]), (SUCCESS, LEVEL_II));
    let done = b.next_async(Duration::from_secs(5)).expect("the CREATE finishes after the ack");
    assert_eq!((done.command, done.status, granted(&done)), (CREATE, SUCCESS, LEVEL_II));
    // A second ack has no break to answer.
    assert_eq!(ack(&mut a, &fa, LEVEL_II).status, INVALID_OPLOCK_PROTOCOL);

    // Both hold level II now: a WRITE breaks both (the writer's own too) to
    // none, no ack wanted.
    let w = b.call(WRITE, 1, &write_body(&done.file_id(), 0, b"x"));
    assert_eq!(w.status, ACCESS_DENIED, "b opened read-only");
    let w = a.write(&fa, 0, b"data");
    assert_eq!(w.status, SUCCESS);
    let (level, fid) = next_break(&mut b, Duration::from_secs(5)).expect("level II break");
    assert_eq!((level, fid), (LEVEL_NONE, done.file_id()));
    assert_eq!(next_break(&mut a, Duration::from_secs(5)), Some((LEVEL_NONE, fa)), "self break");
    assert!(a.write(&fa, 0, b"more").status == SUCCESS && a.next_async(Duration::from_millis(100)).is_none(), "broken once");
    assert_eq!(ack(&mut b, &fid, LEVEL_NONE).status, INVALID_OPLOCK_PROTOCOL);
    a.close(&fa);
    b.close(&done.file_id());
    assert!(ts.server.no_open_state());
}

/// A holder that never answers: the CREATE goes on after the break timeout.
#[test]
fn break_times_out() {
    let ts = server_with(|c| c.limits.oplock_break_timeout = Duration::from_secs(1));
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let ra = create_oplock(&mut a, "t.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(granted(&ra), LEVEL_BATCH);
    let t0 = Instant::now();
    let rb = create_oplock(&mut b, "t.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(rb.status, PENDING);
    assert_eq!(next_break(&mut a, Duration::from_secs(5)).map(|x| x.0), Some(LEVEL_II));
    let done = b.next_async(Duration::from_secs(10)).expect("answered after the timeout");
    assert!(t0.elapsed() >= Duration::from_millis(900), "not before the timeout");
    assert_eq!((done.status, granted(&done)), (SUCCESS, LEVEL_II));
}

/// The holder closing its handle ends the wait at once; an exclusive
/// oplock whose share modes refuse the new open is not broken.
#[test]
fn close_ends_the_break_and_share_conflicts_do_not_break() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let mut body = create_body("x.txt", GENERIC_ALL, 0, FILE_OPEN_IF, 0x40);
    body[3] = 8;
    let ra = a.call(CREATE, 1, &body);
    assert_eq!(granted(&ra), 8);
    let rb = create_oplock(&mut b, "x.txt", GENERIC_READ, 0);
    assert_eq!(rb.status, 0xC000_0043, "SHARING_VIOLATION without a break");
    assert!(a.next_async(Duration::from_millis(100)).is_none());
    a.close(&ra.file_id());

    let ra = create_oplock(&mut a, "x.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(granted(&ra), LEVEL_BATCH);
    let rb = create_oplock(&mut b, "x.txt", GENERIC_READ, LEVEL_BATCH);
    assert_eq!(rb.status, PENDING);
    assert!(next_break(&mut a, Duration::from_secs(5)).is_some());
    a.close(&ra.file_id());
    let done = b.next_async(Duration::from_secs(5)).expect("answered once the holder closed");
    assert_eq!((done.status, granted(&done)), (SUCCESS, LEVEL_BATCH), "alone again: batch");
}

/// Two worker processes' worth of servers on one LMDB state directory: the
/// break reaches the holder's worker through its wake-up socket, and the
/// acknowledgment there wakes the waiting CREATE in the other.
#[test]
fn break_across_workers() {
    let (_base, t1, t2) = two_workers();
    let mut a = connected(&t1);
    let mut b = connected(&t2);
    let ra = create_oplock(&mut a, "w.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(granted(&ra), LEVEL_BATCH);
    let rb = create_oplock(&mut b, "w.txt", GENERIC_READ, LEVEL_BATCH);
    assert_eq!(rb.status, PENDING);
    let (level, fid) = next_break(&mut a, Duration::from_secs(5)).expect("break through worker 1's socket");
    assert_eq!(level, LEVEL_II);
    assert_eq!(ack(&mut a, &fid, LEVEL_II).status, SUCCESS);
    let done = b.next_async(Duration::from_secs(5)).expect("worker 2's CREATE woken");
    assert_eq!((done.status, granted(&done)), (SUCCESS, LEVEL_II));
}

/// The holder and the blocked CREATE on one connection (smbtorture's usual
/// case): the break arrives there, the ack goes in while the CREATE waits.
#[test]
fn holder_on_the_same_connection() {
    let ts = server();
    let mut a = connected(&ts);
    let r1 = create_oplock(&mut a, "s.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(granted(&r1), LEVEL_BATCH);
    let r2 = create_oplock(&mut a, "s.txt", GENERIC_READ, LEVEL_BATCH);
    assert_eq!(r2.status, PENDING);
    let (level, fid) = next_break(&mut a, Duration::from_secs(5)).expect("break on the same connection");
    assert_eq!((level, fid), (LEVEL_II, r1.file_id()));
    assert_eq!(ack(&mut a, &fid, LEVEL_II).status, SUCCESS);
    let done = a.next_async(Duration::from_secs(5)).expect("CREATE answered");
    assert_eq!((done.command, done.message_id, done.status, granted(&done)), (CREATE, r2.message_id, SUCCESS, LEVEL_II));
}

/// CANCEL ends a CREATE waiting for a break; the holder keeps its oplock
/// until it answers.
#[test]
fn cancel_a_waiting_create() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let r1 = create_oplock(&mut a, "c.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(granted(&r1), LEVEL_BATCH);
    let interim = create_oplock(&mut b, "c.txt", GENERIC_READ, 0);
    assert_eq!(interim.status, PENDING);
    assert!(next_break(&mut a, Duration::from_secs(5)).is_some());
    let mut m = build_header(CANCEL, 0, 0, F_ASYNC, interim.message_id, 0, b.session_id, &[4, 0, 0, 0]);
    m[32..40].copy_from_slice(&interim.async_id.to_le_bytes());
    b.conn.handle_message(m).unwrap();
    let t0 = Instant::now();
    let f = b.next_async(Duration::from_secs(5)).expect("final response after CANCEL");
    assert_eq!((f.command, f.status), (CREATE, CANCELLED));
    assert!(t0.elapsed() < Duration::from_secs(3));
    // The break goes on: the holder's ack is still wanted and accepted.
    assert_eq!(ack(&mut a, &r1.file_id(), LEVEL_II).status, SUCCESS);
}

/// `oplocks = no` grants none; `level2 oplocks = no` grants no level II
/// and breaks a batch oplock to none.
#[test]
fn share_options() {
    let ts = server_with(|c| c.shares[0].oplocks = false);
    let mut a = connected(&ts);
    assert_eq!(granted(&create_oplock(&mut a, "o.txt", GENERIC_ALL, LEVEL_BATCH)), LEVEL_NONE);
    let ts = server_with(|c| c.shares[0].level2_oplocks = false);
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let r1 = create_oplock(&mut a, "o.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(granted(&r1), LEVEL_BATCH);
    assert_eq!(create_oplock(&mut b, "o.txt", GENERIC_READ, LEVEL_II).status, PENDING);
    assert_eq!(next_break(&mut a, Duration::from_secs(5)).map(|x| x.0), Some(LEVEL_NONE));
    assert_eq!(ack(&mut a, &r1.file_id(), LEVEL_NONE).status, SUCCESS);
    let done = b.next_async(Duration::from_secs(5)).expect("answered");
    assert_eq!((done.status, granted(&done)), (SUCCESS, LEVEL_NONE));
}

// ----- Leases (MS-SMB2 2.2.13.2.8/.10, 2.2.23.2, 2.2.24.2) -----

const LEASE_R: u32 = 1;
const LEASE_H: u32 = 2;
const LEASE_W: u32 = 4;
const RWH: u32 = LEASE_R | LEASE_W | LEASE_H;
const RH: u32 = LEASE_R | LEASE_H;
const LEVEL_LEASE: u8 = 0xFF;
const INVALID_PARAMETER: u32 = 0xC000_000D;
const UNSUCCESSFUL: u32 = 0xC000_0001;
const OBJECT_NAME_NOT_FOUND: u32 = 0xC000_0034;
const REQUEST_NOT_ACCEPTED: u32 = 0xC000_00D0;

/// A CREATE asking for a lease: version 1, or version 2 with `(epoch, parent)`.
fn create_lease(c: &mut Client, name: &str, access: u32, key: u8, state: u32, v2: Option<(u16, Option<u8>)>) -> Resp {
    create_lease_with(c, name, access, FILE_NON_DIRECTORY_FILE, key, state, v2)
}

/// [`create_lease`] with the CreateOptions `options` (a directory: FILE_DIRECTORY_FILE).
fn create_lease_with(c: &mut Client, name: &str, access: u32, options: u32, key: u8, state: u32, v2: Option<(u16, Option<u8>)>) -> Resp {
    let mut b = create_body(name, access, SHARE_ALL, FILE_OPEN_IF, options);
    b[3] = LEVEL_LEASE;
    let n = utf16(name).len();
    b.truncate(56 + n);
    while !(64 + b.len()).is_multiple_of(8) {
        b.push(0);
    }
    let at = (64 + b.len()) as u32;
    let mut data = Vec::new();
    data.bytes(&[key; 16]).u32_(state);
    match v2 {
        None => {
            data.u32_(0).u64_(0);
        }
        Some((epoch, parent)) => {
            data.u32_(if parent.is_some() { 4 } else { 0 }).u64_(0).bytes(&[parent.unwrap_or(0); 16]).u16_(epoch).u16_(0);
        }
    }
    let mut ctx = Vec::new();
    ctx.u32_(0).u16_(16).u16_(4).u16_(0).u16_(24).u32_(data.len() as u32).bytes(b"RqLs").bytes(&[0; 4]).bytes(&data);
    b[48..52].copy_from_slice(&at.to_le_bytes());
    b[52..56].copy_from_slice(&(ctx.len() as u32).to_le_bytes());
    b.bytes(&ctx);
    c.call(CREATE, 1, &b)
}

/// The lease response context of a CREATE response: (key, state, flags, epoch).
fn lease_of(r: &Resp) -> Option<([u8; 16], u32, u32, Option<u16>)> {
    let body = r.body();
    let off = le32(body, 80) as usize;
    let len = le32(body, 84) as usize;
    if len == 0 {
        return None;
    }
    let ctx = &r.raw[off..off + len];
    assert_eq!(&ctx[16..20], b"RqLs");
    let d = &ctx[le16(ctx, 10) as usize..][..le32(ctx, 12) as usize];
    let key: [u8; 16] = d[..16].try_into().unwrap();
    let epoch = (d.len() >= 52).then(|| le16(d, 48));
    Some((key, le32(d, 16), le32(d, 20), epoch))
}

/// The next LEASE_BREAK notification: (key, current, new, flags, epoch).
fn next_lease_break(c: &mut Client, timeout: Duration) -> Option<([u8; 16], u32, u32, u32, u16)> {
    let r = c.next_async(timeout)?;
    assert_eq!((r.command, r.message_id, r.tree_id, r.session_id), (OPLOCK_BREAK, u64::MAX, 0, 0), "an unsolicited LEASE_BREAK");
    let b = r.body();
    assert_eq!(le16(b, 0), 44);
    Some((b[8..24].try_into().unwrap(), le32(b, 24), le32(b, 28), le32(b, 4), le16(b, 2)))
}

fn lease_ack(c: &mut Client, key: u8, state: u32) -> Resp {
    let mut b = Vec::new();
    b.u16_(36).u16_(0).u32_(0).bytes(&[key; 16]).u32_(state).u64_(0);
    c.call(OPLOCK_BREAK, 1, &b)
}

/// RWH granted alone; a second lease's open breaks it to RH and waits for
/// the acknowledgment; the second lease gets RH; wrong acks are refused; a
/// write through the second lease breaks the first to none.
#[test]
fn lease_break_waits_for_the_ack() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let ra = create_lease(&mut a, "l.txt", GENERIC_ALL, 1, RWH, None);
    assert_eq!((ra.status, granted(&ra)), (SUCCESS, LEVEL_LEASE));
    assert_eq!(lease_of(&ra), Some(([1; 16], RWH, 0, None)));
    // The same key again on this file joins the lease; on another file it is refused.
    let again = create_lease(&mut a, "l.txt", GENERIC_READ, 1, LEASE_R, None);
    assert_eq!(lease_of(&again).map(|l| l.1), Some(RWH), "no downgrade");
    a.close(&again.file_id());
    assert_eq!(create_lease(&mut a, "other.txt", GENERIC_ALL, 1, RWH, None).status, INVALID_PARAMETER);
    // Requests Windows does not grant get a lease context with no state.
    let none = create_lease(&mut b, "l2.txt", GENERIC_ALL, 7, LEASE_H | LEASE_W, None);
    assert_eq!((granted(&none), lease_of(&none).map(|l| l.1)), (LEVEL_LEASE, Some(0)));
    b.close(&none.file_id());
    assert_eq!(lease_ack(&mut a, 1, RH).status, UNSUCCESSFUL, "not breaking");
    assert_eq!(lease_ack(&mut a, 9, RH).status, OBJECT_NAME_NOT_FOUND, "no such lease");

    let rb = create_lease(&mut b, "l.txt", GENERIC_ALL, 2, RWH, None);
    assert_eq!(rb.status, PENDING, "waits for the break of lease 1");
    let (key, from, to, flags, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("LEASE_BREAK");
    assert_eq!((key, from, to, flags), ([1; 16], RWH, RH, 1));
    assert!(b.next_async(Duration::from_millis(200)).is_none(), "still waiting before the ack");
    assert_eq!(lease_ack(&mut a, 1, RWH).status, REQUEST_NOT_ACCEPTED, "more than broken to");
    let ok = lease_ack(&mut a, 1, RH);
    assert_eq!((ok.status, le16(ok.body(), 0), le32(ok.body(), 24)), (SUCCESS, 36, RH));
    let done = b.next_async(Duration::from_secs(5)).expect("the CREATE finishes after the ack");
    assert_eq!((done.command, done.status), (CREATE, SUCCESS));
    assert_eq!(lease_of(&done), Some(([2; 16], RH, 0, None)));

    // A write through lease 2 breaks lease 1 (RH) to none, not lease 2.
    assert_eq!(b.write(&done.file_id(), 0, b"x").status, SUCCESS);
    let (key, from, to, flags, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("break to none");
    assert_eq!((key, from, to, flags), ([1; 16], RH, 0, 1));
    assert!(b.next_async(Duration::from_millis(200)).is_none(), "the writer's own lease stays");
    assert_eq!(lease_ack(&mut a, 1, 0).status, SUCCESS);
    a.close(&ra.file_id());
    b.close(&done.file_id());
    // Closed: the key is free for another file.
    let r = create_lease(&mut a, "other.txt", GENERIC_ALL, 1, RWH, None);
    assert_eq!(lease_of(&r).map(|l| l.1), Some(RWH));
}

/// Version 2: the epoch grows with the grant and with each break; a batch
/// oplock beside a lease breaks to level II and the lease gets R only.
#[test]
fn lease_v2_epochs_and_oplocks_beside() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let ra = create_lease(&mut a, "e.txt", GENERIC_ALL, 3, RWH, Some((4, Some(8))));
    assert_eq!(lease_of(&ra), Some(([3; 16], RWH, 4, Some(5))), "parent key set, epoch + 1");
    let rb = create_oplock(&mut b, "e.txt", GENERIC_READ, LEVEL_BATCH);
    assert_eq!(rb.status, PENDING);
    let (_, from, to, _, epoch) = next_lease_break(&mut a, Duration::from_secs(5)).expect("LEASE_BREAK");
    assert_eq!((from, to, epoch), (RWH, RH, 6));
    assert_eq!(lease_ack(&mut a, 3, RH).status, SUCCESS);
    let done = b.next_async(Duration::from_secs(5)).expect("CREATE answered");
    assert_eq!((done.status, granted(&done)), (SUCCESS, LEVEL_NONE), "no oplock beside an RH lease");
    b.close(&done.file_id());

    let rc = create_oplock(&mut b, "o.txt", GENERIC_ALL, LEVEL_BATCH);
    assert_eq!(granted(&rc), LEVEL_BATCH);
    let rl = create_lease(&mut a, "o.txt", GENERIC_READ, 4, RWH, None);
    assert_eq!(rl.status, PENDING);
    let (level, fid) = next_break(&mut b, Duration::from_secs(5)).expect("OPLOCK_BREAK");
    assert_eq!(level, LEVEL_II);
    assert_eq!(ack(&mut b, &fid, LEVEL_II).status, SUCCESS);
    let done = a.next_async(Duration::from_secs(5)).expect("CREATE answered");
    assert_eq!(lease_of(&done).map(|l| l.1), Some(LEASE_R), "beside an oplock: R only");
}

/// The lease holder in one worker, the breaking open in another: the break
/// goes through the holder's wake-up socket, the ack wakes the other worker.
#[test]
fn lease_break_across_workers() {
    let (_base, t1, t2) = two_workers();
    let mut a = connected(&t1);
    let mut b = connected(&t2);
    let ra = create_lease(&mut a, "x.txt", GENERIC_ALL, 5, RWH, None);
    assert_eq!(lease_of(&ra).map(|l| l.1), Some(RWH));
    // Overwriting breaks everything (to none, acknowledged).
    let mut body = create_body("x.txt", GENERIC_ALL, SHARE_ALL, 5, 0x40);
    body[3] = 0;
    let rb = b.call(CREATE, 1, &body);
    assert_eq!(rb.status, PENDING);
    let (_, from, to, flags, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("break through worker 1's socket");
    assert_eq!((from, to, flags), (RWH, 0, 1));
    assert_eq!(lease_ack(&mut a, 5, 0).status, SUCCESS);
    let done = b.next_async(Duration::from_secs(5)).expect("worker 2's CREATE woken");
    assert_eq!(done.status, SUCCESS);
}

/// A rename through one lease's handle breaks another lease's H and waits
/// (interim PENDING) for the acknowledgment before it renames.
#[test]
fn rename_waits_for_the_handle_break() {
    const SET_INFO: u16 = 0x11;
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let ra = create_lease(&mut a, "src.txt", GENERIC_READ, 1, RH, None);
    assert_eq!(lease_of(&ra).map(|l| l.1), Some(RH));
    let rb = create_lease(&mut b, "src.txt", GENERIC_ALL, 2, RH, None);
    assert_eq!(lease_of(&rb).map(|l| l.1), Some(RH));
    let name = utf16("dst.txt");
    let mut info = Vec::new();
    info.u8_(1).bytes(&[0; 7]).u64_(0).u32_(name.len() as u32).bytes(&name);
    let mut body = Vec::new();
    body.u16_(33).u8_(1).u8_(10).u32_(info.len() as u32).u16_(64 + 32).u16_(0).u32_(0).bytes(&rb.file_id()).bytes(&info);
    let r = b.call(SET_INFO, 1, &body);
    assert_eq!(r.status, PENDING, "the rename waits for lease 1's H");
    let (key, from, to, flags, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("LEASE_BREAK");
    assert_eq!((key, from, to, flags), ([1; 16], RH, LEASE_R, 1));
    assert!(ts.dir.path().join("share/src.txt").exists(), "not renamed before the ack");
    assert!(b.next_async(Duration::from_millis(200)).is_none());
    assert_eq!(lease_ack(&mut a, 1, LEASE_R).status, SUCCESS);
    let done = b.next_async(Duration::from_secs(5)).expect("the rename finishes after the ack");
    assert_eq!((done.command, done.status), (SET_INFO, SUCCESS));
    let again = create_lease(&mut a, "dst.txt", GENERIC_READ, 3, LEASE_R, None);
    assert_eq!(again.status, SUCCESS, "renamed");
}

/// The open's own connection is gone but its session has another channel:
/// the break goes there (MS-SMB2 3.3.4.1.6) and the ack on it ends the wait.
#[test]
fn break_falls_back_to_another_channel() {
    let ts = server();
    let mut a = connected(&ts);
    let ra = create_lease(&mut a, "mc.txt", GENERIC_ALL, 6, RWH, None);
    assert_eq!(lease_of(&ra).map(|l| l.1), Some(RWH));
    let mut a2 = Client::new(&ts);
    a2.negotiate_with(&NegOpts { dialects: vec![a.dialect], ..NegOpts::default() });
    crate::multichannel::bind_to(&a, &mut a2);
    drop(a);
    let mut c = connected(&ts);
    let rc = create_lease(&mut c, "mc.txt", GENERIC_ALL, 7, RWH, None);
    assert_eq!(rc.status, PENDING);
    let (key, from, to, _, _) = next_lease_break(&mut a2, Duration::from_secs(5)).expect("break on the remaining channel");
    assert_eq!((key, from, to), ([6; 16], RWH, RH));
    assert_eq!(lease_ack(&mut a2, 6, RH).status, SUCCESS);
    let done = c.next_async(Duration::from_secs(5)).expect("CREATE answered");
    assert_eq!(lease_of(&done).map(|l| l.1), Some(RH));
}

const SET_INFO: u16 = 0x11;
const ACCESS_DENIED: u32 = 0xC000_0022;
const DELETE: u32 = 0x0001_0000;
const CAP_LEASING: u32 = 0x2;
const CAP_DIRECTORY_LEASING: u32 = 0x20;

/// A SET_INFO FileRenameInformation of `fid` to `to`, replacing an existing file.
fn rename(c: &mut Client, fid: &[u8; 16], to: &str) -> Resp {
    let name = utf16(to);
    let mut info = Vec::new();
    info.u8_(1).bytes(&[0; 7]).u64_(0).u32_(name.len() as u32).bytes(&name);
    let mut body = Vec::new();
    body.u16_(33).u8_(1).u8_(10).u32_(info.len() as u32).u16_(64 + 32).u16_(0).u32_(0).bytes(fid).bytes(&info);
    c.call(SET_INFO, 1, &body)
}

/// Directory leases (3.x, version 2 only): RH at most; broken to none (with
/// an ack, the epoch moving) by a file made, written (at its close) or
/// removed inside the directory through an open that does not name the
/// directory's lease as its parent; not broken by changes under that key.
#[test]
fn directory_lease_breaks_on_changes_inside() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let dir = FILE_DIRECTORY_FILE;
    let rd = create_lease_with(&mut a, "d", GENERIC_READ, dir, 1, RWH, Some((0, None)));
    assert_eq!(rd.status, SUCCESS);
    assert_eq!(lease_of(&rd), Some(([1; 16], RH, 0, Some(1))), "a directory gets RH, not W");
    // A version 1 request gets no directory lease.
    let v1 = create_lease_with(&mut a, "d1", GENERIC_READ, dir, 9, RH, None);
    assert_eq!((v1.status, granted(&v1)), (SUCCESS, LEVEL_NONE));
    // A file made under the directory's own lease (its ParentLeaseKey) breaks nothing.
    let mine = create_lease(&mut a, "d\\mine.txt", GENERIC_ALL, 2, RWH, Some((0, Some(1))));
    assert_eq!(lease_of(&mine), Some(([2; 16], RWH, 4, Some(1))));
    assert!(a.next_async(Duration::from_millis(300)).is_none(), "no break for a change under the parent key");
    // Another client's new file breaks it to none.
    let theirs = b.call(CREATE, 1, &create_body("d\\theirs.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE));
    assert_eq!(theirs.status, SUCCESS);
    let (key, from, to, flags, epoch) = next_lease_break(&mut a, Duration::from_secs(5)).expect("directory lease break");
    assert_eq!((key, from, to, flags, epoch), ([1; 16], RH, 0, 1, 2));
    assert_eq!(lease_ack(&mut a, 1, 0).status, SUCCESS);
    // Taken again; a write does not break it, the writer's close does.
    let again = create_lease_with(&mut a, "d", GENERIC_READ, dir, 1, RWH, Some((0, None)));
    assert_eq!(lease_of(&again), Some(([1; 16], RH, 0, Some(3))));
    assert_eq!(b.write(&theirs.file_id(), 0, b"data").status, SUCCESS);
    assert!(a.next_async(Duration::from_millis(300)).is_none(), "a write alone breaks nothing");
    b.close(&theirs.file_id());
    let (_, from, to, _, epoch) = next_lease_break(&mut a, Duration::from_secs(5)).expect("break at the writer's close");
    assert_eq!((from, to, epoch), (RH, 0, 4));
    assert_eq!(lease_ack(&mut a, 1, 0).status, SUCCESS);
    // Removed inside (delete on close): broken at the close that removes it.
    let again = create_lease_with(&mut a, "d", GENERIC_READ, dir, 1, RH, Some((0, None)));
    assert_eq!(lease_of(&again).map(|l| l.1), Some(RH));
    a.close(&mine.file_id());
    let del = b.call(CREATE, 1, &create_body("d\\mine.txt", DELETE | GENERIC_READ, SHARE_ALL, FILE_OPEN, FILE_NON_DIRECTORY_FILE | 0x1000));
    assert_eq!(del.status, SUCCESS);
    assert!(a.next_async(Duration::from_millis(300)).is_none(), "opening an existing file breaks nothing");
    b.close(&del.file_id());
    let (_, from, to, _, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("break at the removal");
    assert_eq!((from, to), (RH, 0));
    assert_eq!(lease_ack(&mut a, 1, 0).status, SUCCESS);
    assert!(!ts.dir.path().join("share/d/mine.txt").exists());
}

/// A rename out of a leased directory breaks its lease; so does a rename into it.
#[test]
fn directory_lease_breaks_on_rename_in_and_out() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let d = b.call(CREATE, 1, &create_body("d", GENERIC_READ, SHARE_ALL, FILE_OPEN_IF, FILE_DIRECTORY_FILE));
    assert_eq!(d.status, SUCCESS);
    let f = b.call(CREATE, 1, &create_body("d\\f.txt", GENERIC_ALL | DELETE, SHARE_ALL, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE));
    assert_eq!(f.status, SUCCESS);
    let rd = create_lease_with(&mut a, "d", GENERIC_READ, FILE_DIRECTORY_FILE, 1, RH, Some((0, None)));
    assert_eq!(lease_of(&rd).map(|l| l.1), Some(RH));
    assert_eq!(rename(&mut b, &f.file_id(), "out.txt").status, SUCCESS);
    let (_, from, to, _, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("break on a rename out");
    assert_eq!((from, to), (RH, 0));
    assert_eq!(lease_ack(&mut a, 1, 0).status, SUCCESS);
    let rd = create_lease_with(&mut a, "d", GENERIC_READ, FILE_DIRECTORY_FILE, 1, RH, Some((0, None)));
    assert_eq!(lease_of(&rd).map(|l| l.1), Some(RH));
    assert_eq!(rename(&mut b, &f.file_id(), "d\\back.txt").status, SUCCESS);
    let (_, from, to, _, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("break on a rename in");
    assert_eq!((from, to), (RH, 0));
}

/// SMB 2.1: leases (version 1 only) but no directory leasing; 3.x gets both.
#[test]
fn leases_on_smb21() {
    let ts = server();
    let mut c = Client::new(&ts);
    let n = c.negotiate_with(&NegOpts { dialects: vec![DIALECT_210], ..NegOpts::default() });
    assert_eq!(le32(n.body(), 24) & (CAP_LEASING | CAP_DIRECTORY_LEASING), CAP_LEASING);
    c.session_setup();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let r = create_lease(&mut c, "v1.txt", GENERIC_ALL, 1, RWH, None);
    assert_eq!((granted(&r), lease_of(&r)), (LEVEL_LEASE, Some(([1; 16], RWH, 0, None))));
    // A version 2 context is answered as version 1 on 2.1.
    let r = create_lease(&mut c, "v2.txt", GENERIC_ALL, 2, RWH, Some((3, Some(1))));
    assert_eq!(lease_of(&r), Some(([2; 16], RWH, 0, None)));
    let mut d = Client::new(&ts);
    let n = d.negotiate_with(&NegOpts { dialects: vec![DIALECT_311], ..NegOpts::default() });
    assert_eq!(le32(n.body(), 24) & (CAP_LEASING | CAP_DIRECTORY_LEASING), CAP_LEASING | CAP_DIRECTORY_LEASING);
}

/// A rename replacing a file another client holds open under an RH lease:
/// the lease loses H first (the rename waits for the ack), then the rename
/// fails with ACCESS_DENIED as the target is still open; once closed, the
/// rename replaces it.
#[test]
fn rename_over_a_leased_target() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let t = create_lease(&mut a, "t.txt", GENERIC_READ, 1, RH, None);
    assert_eq!(lease_of(&t).map(|l| l.1), Some(RH));
    let s = b.call(CREATE, 1, &create_body("s.txt", GENERIC_ALL | DELETE, SHARE_ALL, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE));
    assert_eq!(s.status, SUCCESS);
    let r = rename(&mut b, &s.file_id(), "t.txt");
    assert_eq!(r.status, PENDING, "waits for the target's H break");
    let (key, from, to, flags, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("target lease break");
    assert_eq!((key, from, to, flags), ([1; 16], RH, LEASE_R, 1));
    assert_eq!(lease_ack(&mut a, 1, LEASE_R).status, SUCCESS);
    let done = b.next_async(Duration::from_secs(5)).expect("the rename answered after the ack");
    assert_eq!((done.command, done.status), (SET_INFO, ACCESS_DENIED));
    assert!(ts.dir.path().join("share/s.txt").exists());
    a.close(&t.file_id());
    assert_eq!(rename(&mut b, &s.file_id(), "t.txt").status, SUCCESS);
    assert!(!ts.dir.path().join("share/s.txt").exists());
}

/// `kernel oplocks = yes`: another program opening a leased file is held by
/// the kernel's file lease until the client's lease is broken to none and
/// acknowledged; while a program has a file open for writing, no caching is
/// granted on it.
#[test]
fn kernel_oplocks_break_for_local_opens() {
    let ts = server_with(|cfg| cfg.shares[0].kernel_oplocks = true);
    let mut a = connected(&ts);
    let r = create_lease(&mut a, "k.txt", GENERIC_ALL, 1, RWH, None);
    assert_eq!(lease_of(&r).map(|l| l.1), Some(RWH), "the only open: a write lease in the kernel too");
    let path = ts.dir.path().join("share/k.txt");
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.clone();
    std::thread::spawn(move || {
        let f = std::fs::OpenOptions::new().read(true).open(&p);
        let _ = tx.send(f.is_ok());
    });
    let (key, from, to, flags, _) = next_lease_break(&mut a, Duration::from_secs(10)).expect("a local open breaks the lease");
    assert_eq!((key, from, to, flags), ([1; 16], RWH, 0, 1));
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the local open waits for the acknowledgment");
    assert_eq!(lease_ack(&mut a, 1, 0).status, SUCCESS);
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true), "the local open goes on after the ack");
    a.close(&r.file_id());

    // A program writing the file: no caching for a client.
    let local = ts.dir.path().join("share/w.txt");
    let _w = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&local).unwrap();
    let r = create_lease(&mut a, "w.txt", GENERIC_READ, 2, RWH, None);
    assert_eq!((r.status, lease_of(&r).map(|l| l.1)), (SUCCESS, Some(0)));
    let o = create_oplock(&mut a, "w.txt", GENERIC_READ, LEVEL_BATCH);
    assert_eq!((o.status, granted(&o)), (SUCCESS, LEVEL_NONE));
}

/// An acknowledgment that lets a further break of the lease start (an
/// overwrite asked for during the break: RH goes on to R): the client gets
/// the acknowledgment's response first, then the next LEASE_BREAK.
#[test]
fn next_break_follows_the_ack_response() {
    let ts = server();
    let mut a = connected(&ts);
    let mut b = connected(&ts);
    let mut c = connected(&ts);
    let r = create_lease(&mut a, "o.txt", GENERIC_ALL, 1, RWH, Some((0, None)));
    assert_eq!(lease_of(&r).map(|l| l.1), Some(RWH));
    assert_eq!(b.call(CREATE, 1, &create_body("o.txt", GENERIC_READ, SHARE_ALL, FILE_OPEN, FILE_NON_DIRECTORY_FILE)).status, PENDING);
    let (_, from, to, _, _) = next_lease_break(&mut a, Duration::from_secs(5)).expect("first break");
    assert_eq!((from, to), (RWH, RH));
    assert_eq!(c.call(CREATE, 1, &create_body("o.txt", GENERIC_ALL, SHARE_ALL, FILE_OVERWRITE_IF, FILE_NON_DIRECTORY_FILE)).status, PENDING);
    let mut body = Vec::new();
    body.u16_(36).u16_(0).u32_(0).bytes(&[1; 16]).u32_(RH).u64_(0);
    let msg = a.build(OPLOCK_BREAK, 1, &body);
    let mid = le64(&msg, 24);
    let v = a.send(msg).expect("ack sent");
    assert!(v.len() >= 2, "the response and the next break: {} messages", v.len());
    assert_eq!((v[0].message_id, v[0].status), (mid, SUCCESS), "the ack's response comes first");
    assert_eq!((v[1].message_id, le32(v[1].body(), 24), le32(v[1].body(), 28)), (u64::MAX, RH, LEASE_R), "then the break to R");
}
