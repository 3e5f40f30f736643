//! Many READs/WRITEs in flight on one connection (`io_offload`, as `serve`
//! sets it on TCP): N requests go in before any response is read, all N come
//! back (in any order) with the right data, status and credits, signed or
//! sealed as the session wants; a CLOSE after them sees all the data written
//! and is answered after them; a connection dropped with WRITEs in flight
//! leaves their data in the file.

use crate::harness::*;
use std::collections::HashMap;
use std::time::Duration;

const END_OF_FILE: u32 = 0xC000_0011;
const N: usize = 16;
const CHUNK: usize = 65536;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Plain,
    Signed,
    Sealed,
}

fn client(mode: Mode) -> (TestServer, Client) {
    let cap = |c: &mut smbdirect_server::config::ServerConfig| c.limits.max_in_flight_per_connection = 64;
    let ts = match mode {
        Mode::Plain => server_with(cap),
        Mode::Signed => server_with(|c| {
            cap(c);
            required(c, true, false)
        }),
        Mode::Sealed => server_with(|c| {
            cap(c);
            required(c, false, true)
        }),
    };
    let mut c = connected(&ts);
    match mode {
        Mode::Plain => assert!(!c.sign && !c.encrypt),
        Mode::Signed => assert!(c.sign && !c.encrypt),
        Mode::Sealed => assert!(c.encrypt),
    }
    c.conn.io_offload = true;
    (ts, c)
}

/// Signs or seals as the session wants and hands the message over; the
/// server's responses are not read here.
fn put(c: &mut Client, mut msg: Vec<u8>) -> u64 {
    let mid = le64(&msg, 24);
    let wire = if c.encrypt {
        c.seal(&msg)
    } else {
        if c.sign {
            sign_chain(c.keys.as_ref().expect("keys"), &mut msg);
        }
        msg
    };
    c.conn.handle_message(wire).expect("request handled");
    mid
}

/// Takes `n` responses as they come, checked (signature, encryption) and in
/// arrival order.
fn take(c: &mut Client, n: usize) -> Vec<Resp> {
    let mut v = Vec::new();
    while v.len() < n {
        let m = c.sink.wait(Duration::from_secs(20)).unwrap_or_else(|| panic!("only {} of {n} responses arrived", v.len()));
        for r in c.decode(m) {
            c.check_resp(&r);
            assert!(r.credits >= 1, "response {} grants no credit", r.message_id);
            c.held += i64::from(r.credits);
            v.push(r);
        }
    }
    assert!(c.sink.take_all().is_empty(), "more responses than requests");
    v
}

fn chunk(i: usize) -> Vec<u8> {
    (0..CHUNK).map(|j| (i * 31 + j * 7 % 251) as u8).collect()
}

fn run(mode: Mode) {
    let (ts, mut c) = client(mode);
    let fid = c.open_file("inflight.bin");

    // N WRITEs, then a CLOSE, before any response is read.
    let mut writes = HashMap::new();
    for i in 0..N {
        let m = c.build(WRITE, 1, &write_body(&fid, (i * CHUNK) as u64, &chunk(i)));
        writes.insert(put(&mut c, m), i);
    }
    let m = c.build(CLOSE, 1, &close_body(&fid));
    let close_mid = put(&mut c, m);
    let got = take(&mut c, N + 1);
    let (last, rest) = got.split_last().expect("responses");
    assert_eq!((last.message_id, last.command, last.status), (close_mid, CLOSE, SUCCESS), "the CLOSE is answered after the WRITEs in flight");
    for r in rest {
        assert!(writes.remove(&r.message_id).is_some(), "unexpected response {}", r.message_id);
        assert_eq!((r.command, r.status, r.credit_charge), (WRITE, SUCCESS, 1));
        assert_eq!(le32(&r.raw, 64 + 4) as usize, CHUNK, "Count of WRITE {}", r.message_id);
    }
    assert!(writes.is_empty(), "WRITEs not answered: {writes:?}");
    let on_disk = std::fs::read(ts.share_path().join("inflight.bin")).expect("file");
    let want: Vec<u8> = (0..N).flat_map(chunk).collect();
    assert!(on_disk == want, "{mode:?}: the file after the CLOSE is not what the WRITEs wrote");

    // N READs (and one past the end of file) before any response is read.
    let fid = c.open_file("inflight.bin");
    let mut reads = HashMap::new();
    for i in (0..N).rev() {
        let m = c.build(READ, 1, &read_body(&fid, (i * CHUNK) as u64, CHUNK as u32));
        reads.insert(put(&mut c, m), Some(i));
    }
    let m = c.build(READ, 1, &read_body(&fid, (N * CHUNK) as u64, CHUNK as u32));
    reads.insert(put(&mut c, m), None);
    for r in take(&mut c, N + 1) {
        let i = reads.remove(&r.message_id).unwrap_or_else(|| panic!("unexpected response {}", r.message_id));
        assert_eq!(r.command, READ);
        match i {
            Some(i) => {
                assert_eq!(r.status, SUCCESS, "READ {i}");
                assert!(r.read_data() == chunk(i), "{mode:?}: READ {i} returned other data");
            }
            None => assert_eq!(r.status, END_OF_FILE, "READ past the end"),
        }
    }
    assert!(reads.is_empty());
    let (handed, peak) = c.conn.inflight.stats();
    assert_eq!(handed as usize, 2 * N + 1, "every READ/WRITE went through the I/O pool");
    assert!(peak >= 1);
    assert_eq!(c.close(&fid).status, SUCCESS);
}

#[test]
fn pipelined_reads_and_writes_plain() {
    run(Mode::Plain);
}

#[test]
fn pipelined_reads_and_writes_signed() {
    run(Mode::Signed);
}

#[test]
fn pipelined_reads_and_writes_sealed() {
    run(Mode::Sealed);
}

/// A connection that ends with WRITEs in flight waits for them before its
/// sessions (and opens) are torn down: their data is in the file.
#[test]
fn disconnect_waits_for_writes_in_flight() {
    let (ts, mut c) = client(Mode::Plain);
    let fid = c.open_file("gone.bin");
    for i in 0..N {
        let m = c.build(WRITE, 1, &write_body(&fid, (i * CHUNK) as u64, &chunk(i)));
        put(&mut c, m);
    }
    drop(c);
    let on_disk = std::fs::read(ts.share_path().join("gone.bin")).expect("file");
    assert_eq!(on_disk.len(), N * CHUNK);
    assert!(on_disk == (0..N).flat_map(chunk).collect::<Vec<u8>>());
}

/// `max in flight per connection` bounds what one connection has in flight.
#[test]
fn in_flight_cap_holds() {
    let ts = server_with(|c| c.limits.max_in_flight_per_connection = 2);
    let mut c = connected(&ts);
    c.conn.io_offload = true;
    let fid = c.open_file("capped.bin");
    for i in 0..N {
        let m = c.build(WRITE, 1, &write_body(&fid, (i * CHUNK) as u64, &chunk(i)));
        put(&mut c, m);
    }
    let got = take(&mut c, N);
    assert!(got.iter().all(|r| r.status == SUCCESS));
    let (handed, peak) = c.conn.inflight.stats();
    assert_eq!(handed as usize, N);
    assert!(peak <= 2, "{peak} in flight with a cap of 2");
}
