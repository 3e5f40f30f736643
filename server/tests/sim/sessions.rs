//! Several sessions on one connection: each is kept apart (keys, trees, opens).

use crate::harness::*;

#[test]
fn two_sessions_with_their_own_keys() {
    let ts = server_with(|cfg| required(cfg, true, false));
    let mut c = connected(&ts);
    let a_fid = c.open_file("a.txt");
    assert_eq!(c.write(&a_fid, 0, b"from a").status, SUCCESS);
    let a = c.new_session();
    assert_ne!(c.session_id, a.session_id);
    assert_eq!(c.conn.sessions.len(), 2);
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let b_fid = c.open_file("b.txt");

    // Session A's FileId is not valid on session B.
    assert_eq!(c.read(&a_fid, 0, 6, 1).status, FILE_CLOSED);
    // Session A's tree id on session B.
    let b_tree = c.tree_id;
    c.tree_id = a.tree_id;
    if a.tree_id != b_tree {
        let r = c.read(&b_fid, 0, 1, 1);
        assert_eq!(r.status, 0xC000_00C9, "NETWORK_NAME_DELETED");
    }
    c.tree_id = b_tree;

    // A request for session B signed with A's key.
    let mut msg = c.build(READ, 1, &read_body(&b_fid, 0, 1));
    a.keys.as_ref().unwrap().signer.sign(&mut msg).unwrap();
    assert_eq!(c.raw(msg).unwrap()[0].status, ACCESS_DENIED);

    // Back to A: its open still works.
    let b = c.switch_session(a);
    assert_eq!(c.read(&a_fid, 0, 6, 1).read_data(), b"from a");
    // LOGOFF of A leaves B alone.
    assert_eq!(c.logoff().status, SUCCESS);
    c.switch_session(b);
    assert_eq!(c.conn.sessions, vec![c.session_id]);
    assert_eq!(c.write(&b_fid, 0, b"b lives").status, SUCCESS);
    assert_eq!(c.close(&b_fid).status, SUCCESS);
}

#[test]
fn transform_of_one_session_cannot_carry_another_sessions_request() {
    // Session A wraps, in a TRANSFORM with A's id and key, a request naming session B.
    // Samba refuses that with ACCESS_DENIED (smbd_smb2_request_dispatch); MS-SMB2 is
    // silent and Windows is said to accept it. Here B's encryption requirement must at
    // least not be satisfied by A's key when B has its own.
    let ts = server_with(|cfg| required(cfg, false, true));
    let mut c = connected(&ts);
    let a = c.new_session();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let b_session = c.session_id;
    let b_tree = c.tree_id;
    let b = c.switch_session(a);
    let msg = build_header(CREATE, 1, 1, 0, c.next_mid, b_tree, b_session, &create_body("x.txt", GENERIC_ALL, SHARE_ALL, FILE_OPEN_IF, 0));
    c.next_mid += 1;
    let sealed = c.seal(&msg);
    match c.raw(sealed) {
        Err(_) => {}
        Ok(v) => {
            assert_eq!(v.len(), 1);
            assert_eq!(v[0].status, ACCESS_DENIED, "session A's TRANSFORM carried a request of session B");
        }
    }
    let _ = b;
}

#[test]
fn in_progress_session_cannot_be_used_or_taken_over() {
    let ts = server();
    let mut x = Client::new(&ts);
    x.negotiate();
    // First leg only: the session exists, in progress.
    let mut gss = Gss::new(USER, PASSWORD);
    let (_, token) = gss.step(None);
    let msg = x.build(SESSION_SETUP, 1, &Client::session_setup_body(&token, 1));
    let v = x.raw(msg).unwrap();
    assert_eq!(v[0].status, MORE_PROCESSING_REQUIRED);
    let sid = v[0].session_id;
    assert_ne!(sid, 0);
    x.session_id = sid;
    // Using it before it is established.
    let r = x.tree_connect("share");
    assert_ne!(r.status, SUCCESS, "TREE_CONNECT on an in-progress session");
    // Another connection cannot continue it, nor use it.
    let mut y = Client::new(&ts);
    y.negotiate();
    y.session_id = sid;
    let (_, t2) = Gss::new(USER, PASSWORD).step(None);
    let msg = y.build(SESSION_SETUP, 1, &Client::session_setup_body(&t2, 1));
    assert_eq!(y.raw(msg).unwrap()[0].status, USER_SESSION_DELETED);
    assert_eq!(y.tree_connect("share").status, USER_SESSION_DELETED);
}

#[test]
fn session_of_another_connection_is_not_usable() {
    let ts = server();
    let a = connected(&ts);
    let mut b = Client::new(&ts);
    b.negotiate();
    b.session_id = a.session_id;
    b.tree_id = a.tree_id;
    assert_eq!(b.tree_connect("share").status, USER_SESSION_DELETED);
    let r = b.create("x", GENERIC_ALL, FILE_OPEN_IF, 0);
    assert_eq!(r.status, USER_SESSION_DELETED);
}
