//! Compound requests (MS-SMB2 3.3.5.2.7): related CREATE+WRITE+CLOSE chains with
//! the 0xFF.. FileId, 8-aligned response chains, each response signed on its own.

use crate::harness::*;

/// CREATE + WRITE + READ + CLOSE, the last three related and naming the file by 0xFF...
fn related_chain(c: &mut Client, name: &str, data: &[u8]) -> Vec<u8> {
    let create = c.build(CREATE, 1, &create_body(name, GENERIC_ALL, SHARE_ALL, FILE_OVERWRITE_IF, FILE_NON_DIRECTORY_FILE));
    let mut write = c.build(WRITE, 1, &write_body(&RELATED_FID, 0, data));
    let mut read = c.build(READ, 1, &read_body(&RELATED_FID, 0, data.len() as u32));
    let mut close = c.build(CLOSE, 1, &close_body(&RELATED_FID));
    for m in [&mut write, &mut read, &mut close] {
        set_flags(m, F_RELATED);
    }
    chain(vec![create, write, read, close])
}

fn check_chain(c: &Client, v: &[Resp], cmds: &[u16]) {
    assert_eq!(v.len(), cmds.len(), "responses in the chain");
    for (i, (r, cmd)) in v.iter().zip(cmds).enumerate() {
        assert_eq!(r.command, *cmd, "response {i}");
        if i > 0 {
            assert_eq!(r.flags & F_RELATED, F_RELATED, "response {i} is flagged related");
        }
        if i + 1 < v.len() {
            assert_ne!(r.next_command, 0);
            assert_eq!(r.next_command % 8, 0, "NextCommand of response {i} is 8-aligned");
        } else {
            assert_eq!(r.next_command, 0, "the last response ends the chain");
        }
        c.check_resp(r);
    }
}

#[test]
fn related_create_write_read_close() {
    let ts = server();
    let mut c = connected(&ts);
    let data = b"compound data, 37 bytes long, odd...";
    let msg = related_chain(&mut c, "comp.txt", data);
    let v = c.send(msg).unwrap();
    check_chain(&c, &v, &[CREATE, WRITE, READ, CLOSE]);
    for r in &v {
        assert_eq!(r.status, SUCCESS, "command {} -> {:#x}", r.command, r.status);
    }
    assert_eq!(le32(&v[1].raw, 64 + 4), data.len() as u32);
    assert_eq!(v[2].read_data(), data);
    assert_eq!(std::fs::read(ts.share_path().join("comp.txt")).unwrap(), data);
    // The CLOSE really closed it: the FileId from the CREATE is gone.
    let fid = v[0].file_id();
    assert_eq!(c.read(&fid, 0, 1, 1).status, FILE_CLOSED);
}

#[test]
fn related_chain_signed_each_response_verifies() {
    let ts = server_with(|cfg| required(cfg, true, false));
    let mut c = connected(&ts);
    assert!(c.sign);
    for len in [1usize, 7, 8, 9, 100] {
        let data = vec![b'z'; len];
        let msg = related_chain(&mut c, "s.txt", &data);
        let v = c.send(msg).unwrap();
        check_chain(&c, &v, &[CREATE, WRITE, READ, CLOSE]);
        for r in &v {
            assert!(r.is_signed());
            assert_eq!(r.status, SUCCESS);
        }
        assert_eq!(v[2].read_data(), &data[..]);
    }
    // One message of the chain badly signed: that one is refused, and as the rest
    // is related to it, the error carries down the chain.
    let mut msg = related_chain(&mut c, "s.txt", b"abc");
    sign_chain(c.keys.as_ref().unwrap(), &mut msg);
    msg[50] ^= 1; // the CREATE's signature
    let v = c.raw(msg).unwrap();
    assert_eq!(v.len(), 4);
    assert_eq!(v[0].status, ACCESS_DENIED);
    for r in &v[1..] {
        assert_ne!(r.status, SUCCESS, "command {} after a refused CREATE", r.command);
    }
}

#[test]
fn related_chain_encrypted() {
    let ts = server_with(|cfg| required(cfg, false, true));
    let mut c = connected(&ts);
    assert!(c.encrypt);
    let msg = related_chain(&mut c, "e.txt", b"sealed");
    let v = c.send(msg).unwrap();
    check_chain(&c, &v, &[CREATE, WRITE, READ, CLOSE]);
    assert!(v.iter().all(|r| r.encrypted && r.status == SUCCESS));
    assert_eq!(v[2].read_data(), b"sealed");
}

#[test]
fn failed_create_fails_the_related_rest() {
    let ts = server();
    let mut c = connected(&ts);
    let create = c.build(CREATE, 1, &create_body("missing.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN, 0));
    let mut write = c.build(WRITE, 1, &write_body(&RELATED_FID, 0, b"x"));
    let mut close = c.build(CLOSE, 1, &close_body(&RELATED_FID));
    set_flags(&mut write, F_RELATED);
    set_flags(&mut close, F_RELATED);
    let v = c.send(chain(vec![create, write, close])).unwrap();
    check_chain(&c, &v, &[CREATE, WRITE, CLOSE]);
    assert_eq!(v[0].status, 0xC000_0034, "OBJECT_NAME_NOT_FOUND");
    assert_eq!(v[1].status, 0xC000_0034);
    assert_eq!(v[2].status, 0xC000_0034);
    assert!(!ts.share_path().join("missing.txt").exists());
}

#[test]
fn unrelated_compound_and_ff_fid_without_related() {
    let ts = server();
    let mut c = connected(&ts);
    let fid = c.open_file("u.txt");
    c.write(&fid, 0, b"0123456789");
    let r1 = c.build(READ, 1, &read_body(&fid, 0, 3));
    let r2 = c.build(READ, 1, &read_body(&fid, 5, 5));
    let e = c.build(ECHO, 1, &[4, 0, 0, 0]);
    // The 0xFF.. FileId in an unrelated request names nothing.
    let bad = c.build(READ, 1, &read_body(&RELATED_FID, 0, 1));
    let v = c.send(chain(vec![r1, r2, e, bad])).unwrap();
    assert_eq!(v.len(), 4);
    for (i, r) in v.iter().enumerate() {
        assert_eq!(r.flags & F_RELATED, 0, "response {i} flagged related");
        if i + 1 < v.len() {
            assert_eq!(r.next_command % 8, 0);
        }
    }
    assert_eq!(v[0].read_data(), b"012");
    assert_eq!(v[1].read_data(), b"56789");
    assert_eq!(v[2].status, SUCCESS);
    assert_eq!(v[3].status, FILE_CLOSED);
}

#[test]
fn first_message_related_is_invalid() {
    let ts = server();
    let mut c = connected(&ts);
    let mut r = c.build(READ, 1, &read_body(&RELATED_FID, 0, 1));
    set_flags(&mut r, F_RELATED);
    let e = c.build(ECHO, 1, &[4, 0, 0, 0]);
    let v = c.send(chain(vec![r, e])).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].status, INVALID_PARAMETER);
    assert_eq!(v[1].status, SUCCESS);
}

#[test]
fn bad_next_command_ends_the_connection() {
    let ts = server();
    for next in [1u32, 63, 65, 70, 4096, u32::MAX] {
        let mut c = connected(&ts);
        let mut e = c.build(ECHO, 1, &[4, 0, 0, 0]);
        e.extend_from_slice(&[0; 8]);
        e[20..24].copy_from_slice(&next.to_le_bytes());
        assert!(c.conn.handle_message(e).is_err(), "NextCommand {next} accepted");
    }
    // A chain longer than the server accepts.
    let mut c = connected(&ts);
    c.credit_request = 512;
    for _ in 0..3 {
        c.call(ECHO, 1, &[4, 0, 0, 0]);
    }
    let held = c.held as usize;
    let msgs: Vec<Vec<u8>> = (0..held.min(200)).map(|_| c.build(ECHO, 1, &[4, 0, 0, 0])).collect();
    assert!(msgs.len() > 64, "only {} credits", msgs.len());
    assert!(c.conn.handle_message(chain(msgs)).is_err(), "a chain of more than 64 accepted");
}
