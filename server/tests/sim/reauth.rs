//! Re-authentication (MS-SMB2 3.3.5.5, 3.2.4.2.3.1): a SESSION_SETUP on an
//! established SessionId keeps the session, its trees and its opens; the session's
//! keys do not change (the client derives none on re-authentication, 3.2.5.3.2).

use crate::harness::*;

fn reauth_keeps(ts: &TestServer) {
    let mut c = connected(ts);
    let sid = c.session_id;
    let tree = c.tree_id;
    let fid = c.open_file("kept.txt");
    assert_eq!(c.write(&fid, 0, b"before").status, SUCCESS);

    let r = c.session_setup_as(USER, PASSWORD).expect("re-authentication failed");
    assert_eq!(r.session_id, sid);
    assert_eq!(c.session_id, sid);
    assert_eq!(c.conn.sessions, vec![sid], "one session on the connection");

    // The old keys still sign/seal, the tree and the open are still there.
    assert_eq!(c.tree_id, tree);
    assert_eq!(c.write(&fid, 6, b"+after").status, SUCCESS);
    assert_eq!(c.read(&fid, 0, 12, 1).read_data(), b"before+after");
    assert_eq!(c.close(&fid).status, SUCCESS);
    assert_eq!(c.logoff().status, SUCCESS);
}

#[test]
fn reauth_keeps_session_and_opens() {
    reauth_keeps(&server());
}

#[test]
fn reauth_keeps_session_and_opens_signed() {
    reauth_keeps(&server_with(|cfg| required(cfg, true, false)));
}

#[test]
fn reauth_keeps_session_and_opens_encrypted() {
    reauth_keeps(&server_with(|cfg| required(cfg, false, true)));
}

#[test]
fn failed_reauth_with_wrong_password() {
    // MS-SMB2 3.3.5.5.3: a failed authentication removes the session. The request on
    // the old session afterwards must not succeed.
    let ts = server();
    let mut c = connected(&ts);
    let fid = c.open_file("gone.txt");
    assert_eq!(c.write(&fid, 0, b"x").status, SUCCESS);
    let st = c.session_setup_as(USER, "wrong").unwrap_err();
    assert_eq!(st, 0xC000_006D);
    let r = c.read(&fid, 0, 1, 1);
    assert_eq!(r.status, USER_SESSION_DELETED, "the session survived a failed re-authentication");
}

/// What works today whatever the keys: the session id, the tree and the open survive
/// a re-authentication on an unsigned, unencrypted session.
#[test]
fn reauth_keeps_opens_on_unsigned_session() {
    let ts = server();
    let mut c = connected(&ts);
    let sid = c.session_id;
    let fid = c.open_file("kept.txt");
    assert_eq!(c.write(&fid, 0, b"before").status, SUCCESS);
    let r = c.session_setup_as(USER, PASSWORD).expect("re-authentication failed");
    assert_eq!(r.session_id, sid);
    assert_eq!(c.conn.sessions, vec![sid]);
    assert_eq!(ts.server.sessions.lock().unwrap().len(), 1);
    assert_eq!(c.write(&fid, 6, b"+after").status, SUCCESS);
    assert_eq!(c.read(&fid, 0, 12, 1).read_data(), b"before+after");
    assert_eq!(c.close(&fid).status, SUCCESS);
}

#[test]
fn reauth_on_unknown_session_is_refused() {
    let ts = server();
    let mut c = Client::new(&ts);
    c.negotiate();
    c.session_id = 0x1234_5678;
    assert_eq!(c.session_setup_as(USER, PASSWORD).unwrap_err(), USER_SESSION_DELETED);
    // Another connection's session cannot be re-authenticated from here either.
    let other = connected(&ts);
    let mut c = Client::new(&ts);
    c.negotiate();
    c.session_id = other.session_id;
    assert_eq!(c.session_setup_as(USER, PASSWORD).unwrap_err(), USER_SESSION_DELETED);
}
