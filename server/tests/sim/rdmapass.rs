//! An SMB Direct channel whose binding names a session of another worker
//! goes to that worker (connpass.rs, transport_smbd.rs, rdma.rs): the real
//! `smbdirect serve` with `max workers = 2` and the stand-in proxy
//! `smbd-tcp-front` (built next to `smbdirect`: it offers each Direct TCP
//! connection to the server as a channel, over the proxy protocol, so the
//! channel is served by `transport_smbd` exactly as an SMB Direct one).
//!
//! Client A logs on over TCP (worker 0). Channel B comes through the proxy
//! and starts with an SMB1 NEGOTIATE, which has no ClientGUID: the
//! supervisor routes the channel by its address, chosen to land on worker 1;
//! B's SMB2 NEGOTIATE then names A's ClientGUID. B's binding of A's session
//! halts B's reader on worker 1, the channel socket goes through the
//! supervisor to worker 0, which serves it from its own pool slots, answers
//! the binding and then B's requests on A's open.

use crate::bindroute::{address_routed_to, negotiate_after_smb1, serve_args, session_on_worker0, status, tcp_client, TcpWire};
use crate::harness::*;
use crate::multichannel::{bind, negotiate_as, session_signer, Sign};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The stand-in proxy: `SMBD_TCP_FRONT_BIN`, else next to `smbdirect`.
fn front_bin() -> PathBuf {
    let p = std::env::var_os("SMBD_TCP_FRONT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_BIN_EXE_smbdirect")).with_file_name("smbd-tcp-front"));
    assert!(p.is_file(), "{} is missing: cargo build -p smbdirect-rdma-proxy --bin smbd-tcp-front (same profile as this test)", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A connection to the proxy's port from `from` (any 127.x address).
fn channel_client(ts: &TestServer, port: u16, from: Ipv4Addr) -> Client {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock = loop {
        let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        bind(&fd, &SocketAddr::from((from, 0))).unwrap();
        match connect(&fd, &SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
            Ok(()) => break TcpStream::from(fd),
            Err(e) => {
                assert!(Instant::now() < deadline, "the stand-in proxy does not listen on {port}: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client::new(ts);
    c.wire = Some(Box::new(TcpWire(sock)));
    c
}

#[test]
fn smb_direct_binding_on_another_worker_moves_the_channel_to_the_session() {
    let front = front_bin();
    let dir = tempfile::tempdir().unwrap();
    let front_port = free_port();
    let conf = dir.path().join("smb.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\n smbdirect:rdma = yes\n smbdirect:rdma proxy = {}\n smbdirect:rdma listen = 127.0.0.1:{front_port}\n smbd max io size = 1M\n smbdirect:rdma pool size = 4M\n",
            front.display()
        ),
    )
    .unwrap();
    let srv = serve_args(dir, 2, &["--config".into(), conf.display().to_string()]);
    let ts = server();
    let (mut a, fid) = session_on_worker0(&ts, srv.port, b"written over TCP");

    // B: a channel through the proxy, routed by address to worker 1.
    let b_from = address_routed_to(1, 2);
    let mut b = channel_client(&ts, front_port, b_from);
    negotiate_after_smb1(&mut b);
    let st = status(&srv.state);
    let on1: Vec<_> = st["channels"].as_array().unwrap().iter().filter(|c| c["transport"] == "RDMA" && c["worker"] == 1).collect();
    assert_eq!(on1.len(), 1, "the channel starts on worker 1: {st}");
    let key = session_signer(&a);
    bind(&a, &mut b, USER, Sign::With(&key)).expect("binding over SMB Direct from worker 1 to worker 0's session");
    assert_eq!(b.read(&fid, 0, 16, 1).read_data(), b"written over TCP");
    assert_eq!(b.write(&fid, 0, b"WRITTEN").status, SUCCESS);
    assert_eq!(a.read(&fid, 0, 7, 1).read_data(), b"WRITTEN");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains("SMB Direct channel passed to the worker that owns its session"), "no pass in the log:\n{log}");
    assert!(log.contains("SMB Direct channel taken over from another worker"), "not taken over:\n{log}");
    // Both channels are worker 0's now, the SMB Direct one among them, and
    // the supervisor counts two connections.
    let st = status(&srv.state);
    let chans = st["channels"].as_array().unwrap();
    assert!(chans.iter().any(|c| c["transport"] == "RDMA" && c["worker"] == 0), "the SMB Direct channel on worker 0: {st}");
    assert!(!chans.iter().any(|c| c["worker"] == 1), "nothing left on worker 1: {st}");
    assert_eq!(st["supervisor"]["connections"], 2, "{st}");

    // A's TCP connection goes; the session lives on over the SMB Direct channel.
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.read(&fid, 0, 7, 1).read_data(), b"WRITTEN");
    assert_eq!(b.close(&fid).status, SUCCESS);
    // B goes: nothing is counted any more.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(&srv.state);
        if st["supervisor"]["connections"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "connections still counted: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bindings of another worker's session that are not passed are answered
/// where they arrive, USER_SESSION_DELETED (the session is not in that
/// worker's table, MS-SMB2 3.3.5.5.2), with a log line saying why: on a
/// connection that has a session of its own there (also as the first
/// request of a compound), that had one and logged it off, or that has a
/// session setup under way. A compound whose first request is not the
/// binding is handled where it arrives, as any message. (Plain TCP: the same
/// code decides for SMB Direct channels; a compound that can move is
/// bindroute.rs's.)
///
/// These are what keeps RDMA transfers from being passed (connpass.rs): a
/// connection that has, had or is setting up a session, the only kind that
/// can have started one, stays where it is.
#[test]
fn bindings_that_cannot_move_are_answered_where_they_arrive() {
    let srv = serve_args(tempfile::tempdir().unwrap(), 2, &[]);
    let ts = server();
    let mut a = tcp_client(&ts, srv.port, Ipv4Addr::LOCALHOST);
    negotiate_as(&mut a, vec![DIALECT_311], None);
    a.session_setup();
    assert_eq!(a.session_id >> 48, 0, "worker 0 allocated A's session");
    let key = session_signer(&a);
    let from1 = address_routed_to(1, 2);
    let binding = |c: &mut Client| {
        let mut body = Client::session_setup_body(&Gss::new(USER, PASSWORD).step(None).1, 1);
        body[2] = 1; // SMB2_SESSION_FLAG_BINDING
        let mut m = c.build(SESSION_SETUP, 1, &body);
        set_flags(&mut m, F_SIGNED);
        m
    };
    let passes = |srv: &crate::bindroute::Serve| std::fs::read_to_string(&srv.log).unwrap().matches("connection passed to the worker that owns its session").count();

    // A connection with a session of its own on worker 1.
    let mut c = tcp_client(&ts, srv.port, from1);
    negotiate_after_smb1(&mut c);
    c.session_setup();
    assert_eq!(c.session_id >> 48, 1, "the connection's own session is worker 1's");
    let own = c.session_id;
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), USER_SESSION_DELETED);
    // The same as the first request of a compound (with a related ECHO).
    c.session_id = a.session_id;
    let first = binding(&mut c);
    let echo = c.build(ECHO, 1, &[4, 0, 0, 0]);
    let mut msg = chain(vec![first, echo]);
    let at = le32(&msg, 20) as usize;
    set_flags(&mut msg[at..], F_SIGNED | F_RELATED);
    key.sign(&mut msg[..at]).unwrap();
    key.sign(&mut msg[at..]).unwrap();
    let r = c.raw(msg).expect("the compound ended the connection");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, USER_SESSION_DELETED, "binding compound on a connection with a session");
    c.session_id = own;
    assert_eq!(passes(&srv), 0, "a connection with a session was passed");

    // A connection with a session setup under way (its first leg answered).
    let mut e = tcp_client(&ts, srv.port, from1);
    negotiate_after_smb1(&mut e);
    let leg = Client::session_setup_body(&Gss::new(USER, PASSWORD).step(None).1, 1);
    let m = e.build(SESSION_SETUP, 1, &leg);
    let r = e.raw(m).unwrap().pop().unwrap();
    assert_eq!(r.status, MORE_PROCESSING_REQUIRED);
    e.session_id = a.session_id;
    let mut m = binding(&mut e);
    key.sign(&mut m).unwrap();
    assert_eq!(e.raw(m).unwrap().pop().unwrap().status, USER_SESSION_DELETED, "binding during a session setup");
    assert_eq!(passes(&srv), 0, "a connection with a setup under way was passed");

    // A compound whose first request is not the binding: an ECHO, then the
    // binding (not related). Handled on worker 1, which has no such session.
    let mut d = tcp_client(&ts, srv.port, from1);
    negotiate_after_smb1(&mut d);
    let echo = d.build(ECHO, 1, &[4, 0, 0, 0]);
    d.session_id = a.session_id;
    let second = binding(&mut d);
    let mut msg = chain(vec![echo, second]);
    let at = le32(&msg, 20) as usize;
    key.sign(&mut msg[at..]).unwrap();
    let r = d.raw(msg).expect("the compound ended the connection");
    assert_eq!((r[0].command, r[0].status), (ECHO, SUCCESS));
    assert_eq!((r[1].command, r[1].status), (SESSION_SETUP, USER_SESSION_DELETED), "binding after an ECHO");
    assert_eq!(passes(&srv), 0, "a compound starting with an ECHO was passed");

    // (A binding compound over the pass bound cannot arrive: a connection
    // that may be passed has no session, and such a connection's messages
    // are held to `max_unauthenticated_message`, 128 KiB, under the 1 MiB
    // bound: the frame ends the connection first. workerproto.rs's unit
    // tests check the bound itself.)

    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains("not passed: the connection already has a session in this worker"), "no log line for the session case:\n{log}");
    assert!(log.contains("not passed: a session setup is under way on the connection"), "no log line for the setup case:\n{log}");
    assert!(!log.contains("connection passed to the worker that owns its session"), "a connection was passed:\n{log}");
    // The connections go on where they are.
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    // Once its session is logged off, C has no session, and still stays.
    assert_eq!(c.logoff().status, SUCCESS);
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), USER_SESSION_DELETED, "binding after a LOGOFF");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains("not passed: the connection was passed here already, or its NEGOTIATE was not kept"), "no log line for the logged-off case:\n{log}");
    assert_eq!(passes(&srv), 0, "a logged-off connection was passed");
    d.session_id = 0;
    d.session_setup();
    assert_eq!(d.session_id >> 48, 1, "D stayed on worker 1");
}
