//! A binding that lands on a worker that does not own the session goes to the
//! worker that does (connpass.rs): the real `smbdirect serve` with `max
//! workers = 2`, reached over TCP by the harness's client.
//!
//! Client A (ClientGUID G) lands on worker 0 and opens a file. Client B
//! starts with an SMB1 NEGOTIATE, which has no ClientGUID: the front
//! listener routes it by its address, chosen here so that it lands on worker
//! 1; its SMB2 NEGOTIATE then names G. B's binding of A's session is passed
//! to worker 0, succeeds there, and B reads A's file through A's open. A
//! client with another ClientGUID (on worker 1) gets the owner's answers:
//! INVALID_PARAMETER for another dialect, USER_SESSION_DELETED for another
//! client (worker 1 alone could only say USER_SESSION_DELETED to both). Once
//! worker 0 is killed, a binding of its session is USER_SESSION_DELETED.

use crate::harness::*;
use crate::multichannel::{bind, negotiate_as, session_signer, Sign};
use crate::smb1::smb1_negotiate;
use smbdirect_server::conn::Disconnect;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REQUEST_NOT_ACCEPTED: u32 = 0xC000_00D0;
const SET_INFO: u16 = 0x11;

/// The harness's client over a real TCP connection.
pub(crate) struct TcpWire(pub(crate) TcpStream);

impl Wire for TcpWire {
    fn exchange(&mut self, msg: Vec<u8>) -> Result<Vec<Vec<u8>>, Disconnect> {
        let mut framed = (msg.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        self.0.write_all(&framed).map_err(Disconnect::Io)?;
        let mut hdr = [0u8; 4];
        match self.0.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Disconnect::Closed),
            Err(e) => return Err(Disconnect::Io(e)),
        }
        let n = (u32::from_be_bytes(hdr) & 0x00FF_FFFF) as usize;
        let mut m = vec![0u8; n];
        self.0.read_exact(&mut m).map_err(Disconnect::Io)?;
        Ok(vec![m])
    }
}

pub(crate) struct Serve {
    child: Child,
    pub(crate) port: u16,
    pub(crate) state: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: tempfile::TempDir) -> Serve {
    serve_with(dir, 2)
}

fn serve_with(dir: tempfile::TempDir, workers: u32) -> Serve {
    serve_args(dir, workers, &[])
}

/// `smbdirect serve` with `workers` workers and `extra` arguments.
pub(crate) fn serve_args(dir: tempfile::TempDir, workers: u32, extra: &[String]) -> Serve {
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_smbdirect"))
        .args(["serve", "--listen", "127.0.0.1:0", "--max-workers"])
        .arg(workers.to_string())
        .arg("--share")
        .arg(format!("share={}", share.display()))
        .arg("--user")
        .arg(format!("{USER}:{PASSWORD}"))
        .arg("--state-dir")
        .arg(&state)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start smbdirect serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("serve ended before it listened").unwrap();
        if let Some(a) = line.strip_prefix("smbdirect: listening on ") {
            break a.trim().parse::<SocketAddr>().unwrap().port();
        }
    };
    // The rest of stdout is read too (serve ends on a closed stdout).
    std::thread::spawn(move || lines.for_each(drop));
    Serve { child, port, state, log, _dir: dir }
}

/// The supervisor's routing hash (FNV-1a) of an address: which of `n`
/// workers a connection without a ClientGUID from it goes to.
pub(crate) fn route_of(ip: Ipv4Addr, n: u64) -> u64 {
    ip.octets().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3)) % n
}

/// A loopback address that the supervisor routes to `worker` of `n`.
pub(crate) fn address_routed_to(worker: u64, n: u64) -> Ipv4Addr {
    (2..=250u8).map(|x| Ipv4Addr::new(127, 0, 0, x)).find(|ip| route_of(*ip, n) == worker).unwrap()
}

/// Client A of the binding tests: from 127.0.0.1 (routed to worker 0), SMB
/// 3.1.1, a session (checked to be worker 0's), the share, and `shared.txt`
/// opened and written with `data`. The client and the file's id.
pub(crate) fn session_on_worker0(ts: &TestServer, port: u16, data: &[u8]) -> (Client, [u8; 16]) {
    let mut a = tcp_client(ts, port, Ipv4Addr::LOCALHOST);
    negotiate_as(&mut a, vec![DIALECT_311], None);
    a.session_setup();
    assert_eq!(a.tree_connect("share").status, SUCCESS);
    let fid = a.open_file("shared.txt");
    assert_eq!(a.write(&fid, 0, data).status, SUCCESS);
    assert_eq!(a.session_id >> 48, 0, "worker 0 allocated A's session: {:#x}", a.session_id);
    (a, fid)
}

pub(crate) fn tcp_client(ts: &TestServer, port: u16, from: Ipv4Addr) -> Client {
    let sock = socket2_connect(from, port);
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut c = Client::new(ts);
    c.wire = Some(Box::new(TcpWire(sock)));
    c
}

/// A TCP connection to 127.0.0.1:`port` from address `from` (any loopback
/// address is ours on Linux).
fn socket2_connect(from: Ipv4Addr, port: u16) -> TcpStream {
    use rustix::net::{bind, connect, socket, AddressFamily, SocketType};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &SocketAddr::from((from, 0))).unwrap();
    connect(&fd, &SocketAddr::from((Ipv4Addr::LOCALHOST, port))).unwrap();
    TcpStream::from(fd)
}

pub(crate) fn status(state: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_smbdirect"))
        .args(["status", "--json", "--state-dir"])
        .arg(state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Negotiates `c` 3.1.1 as ClientGUID `guid` after an SMB1 NEGOTIATE (the
/// front listener then routes the connection by address).
pub(crate) fn negotiate_after_smb1(c: &mut Client) {
    let r = c.raw(smb1_negotiate(&["NT LM 0.12", "SMB 2.002", "SMB 2.???"])).unwrap().pop().unwrap();
    assert_eq!(r.status, SUCCESS);
    c.next_mid = 1;
    c.held = i64::from(r.credits);
    negotiate_as(c, vec![DIALECT_311], None);
}

#[test]
fn binding_on_another_worker_moves_the_connection_to_the_session() {
    let srv = serve(tempfile::tempdir().unwrap());
    // Only for its config: every request goes over TCP.
    let ts = server();
    let a_from = Ipv4Addr::LOCALHOST;
    let (mut a, fid) = session_on_worker0(&ts, srv.port, b"written on channel one");

    // B: routed by address to worker 1, then names A's ClientGUID.
    let b_from = address_routed_to(1, 2);
    let mut b = tcp_client(&ts, srv.port, b_from);
    negotiate_after_smb1(&mut b);
    let key = session_signer(&a);
    bind(&a, &mut b, USER, Sign::With(&key)).expect("binding from worker 1 to worker 0's session");
    assert_eq!(b.read(&fid, 0, 22, 1).read_data(), b"written on channel one");
    assert_eq!(b.write(&fid, 0, b"WRITTEN").status, SUCCESS);
    assert_eq!(a.read(&fid, 0, 7, 1).read_data(), b"WRITTEN");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains("connection passed to the worker that owns its session"), "no pass in the log:\n{log}");
    // Both channels are worker 0's now.
    let st = status(&srv.state);
    let ch: Vec<_> = st["channels"].as_array().unwrap().iter().filter(|c| c["worker"] == 0).collect();
    assert!(ch.len() >= 2, "channels on worker 0: {st}");

    // Another client (another ClientGUID, on worker 1) gets the owner's answers.
    let mut c = tcp_client(&ts, srv.port, a_from);
    negotiate_as(&mut c, vec![DIALECT_302], Some([0x77; 16]));
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), INVALID_PARAMETER, "other dialect, answered by the owner");
    let mut c = tcp_client(&ts, srv.port, a_from);
    negotiate_as(&mut c, vec![DIALECT_311], Some([0x78; 16]));
    assert_eq!(bind(&a, &mut c, USER, Sign::With(&key)).unwrap_err(), USER_SESSION_DELETED, "other client");

    // A 2.1 connection cannot bind; the refusal is signed with the
    // session's key (a client that requires signing believes it), which
    // only the owner has.
    let mut c = tcp_client(&ts, srv.port, a_from);
    negotiate_as(&mut c, vec![DIALECT_210], Some([0x79; 16]));
    c.session_id = a.session_id;
    let mut body = Client::session_setup_body(&Gss::new(USER, PASSWORD).step(None).1, 1);
    body[2] = 1; // SMB2_SESSION_FLAG_BINDING
    let mut msg = c.build(SESSION_SETUP, 1, &body);
    key.sign(&mut msg).unwrap();
    let r = c.raw(msg).unwrap().pop().unwrap();
    assert_eq!(r.status, REQUEST_NOT_ACCEPTED, "2.1 binding");
    let mut raw = r.raw.clone();
    assert!(r.is_signed() && key.verify(&mut raw), "the refusal of a 2.1 binding is signed with the session's key");

    // The owner dies: its sessions with it.
    let pid = st["workers"].as_array().unwrap().iter().find(|w| w["id"] == 0).and_then(|w| w["pid"].as_u64()).expect("worker 0's pid");
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::KILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = status(&srv.state);
        let w0 = st["workers"].as_array().unwrap().iter().find(|w| w["id"] == 0).cloned().unwrap();
        if w0["pid"].as_u64().is_some_and(|p| p != pid) {
            break;
        }
        assert!(Instant::now() < deadline, "worker 0 not restarted: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut d = tcp_client(&ts, srv.port, b_from);
    negotiate_after_smb1(&mut d);
    assert_eq!(bind(&a, &mut d, USER, Sign::With(&key)).unwrap_err(), USER_SESSION_DELETED, "session of a dead worker");
}

/// Binds `b` to `a`'s session (NTLM, two legs) with each SESSION_SETUP the
/// first request of a compound: the first leg with a related ECHO, the last
/// with a related TREE_CONNECT of `share`, signed with the channel key the
/// binding gives `b` (the preauth hash of each SESSION_SETUP element, padding
/// included, as the server hashes it). Returns both legs' responses; on
/// success `b` holds the channel's keys and the chain's tree.
pub(crate) fn bind_in_compound(a: &Client, b: &mut Client, share: &str) -> [Vec<Resp>; 2] {
    let key = session_signer(a);
    let mut gss = Gss::new(USER, PASSWORD);
    let mut preauth = b.preauth.clone().expect("a 3.1.1 connection");
    b.session_id = a.session_id;
    b.tree_id = 0;
    let setup = |b: &mut Client, token: &[u8]| {
        let mut body = Client::session_setup_body(token, 1);
        body[2] = 1; // SMB2_SESSION_FLAG_BINDING
        b.build(SESSION_SETUP, 1, &body)
    };
    // Leg 1: NTLM NEGOTIATE + related ECHO, both signed with the session key.
    let first = setup(b, &gss.step(None).1);
    let echo = b.build(ECHO, 1, &[4, 0, 0, 0]);
    let mut msg = chain(vec![first, echo]);
    let at = le32(&msg, 20) as usize;
    set_flags(&mut msg[..at], F_SIGNED);
    set_flags(&mut msg[at..], F_SIGNED | F_RELATED);
    key.sign(&mut msg[..at]).unwrap();
    key.sign(&mut msg[at..]).unwrap();
    preauth.update(&msg[..at]);
    let leg1 = b.raw(msg).expect("the first leg ended the connection");
    assert_eq!(leg1.len(), 2, "one response per request of the chain");
    assert_eq!(leg1[0].command, SESSION_SETUP);
    if leg1[0].status != MORE_PROCESSING_REQUIRED {
        return [leg1, Vec::new()];
    }
    preauth.update(&leg1[0].raw);
    // Leg 2: NTLM AUTHENTICATE + related TREE_CONNECT.
    let (_, token) = gss.step(Some(&sec_buffer(&leg1[0])));
    let last = setup(b, &token);
    let tree = b.build(TREE_CONNECT, 1, &tree_body(share));
    let mut msg = chain(vec![last, tree]);
    let at = le32(&msg, 20) as usize;
    set_flags(&mut msg[..at], F_SIGNED);
    set_flags(&mut msg[at..], F_SIGNED | F_RELATED);
    key.sign(&mut msg[..at]).unwrap();
    preauth.update(&msg[..at]);
    let channel = derive_client_keys(b.dialect, &gss.session_key(), Some(&preauth.value()), None, b.signing_alg);
    channel.signer.sign(&mut msg[at..]).unwrap();
    let leg2 = b.raw(msg).expect("the last leg ended the connection");
    if leg2.first().is_some_and(|r| r.status == SUCCESS) {
        let session = derive_client_keys(a.dialect, &a.session_key, a.session_preauth.as_ref(), a.cipher, a.signing_alg);
        b.keys = Some(ClientKeys { signer: channel.signer, sealer: session.sealer, opener: session.opener });
        b.session_key = a.session_key.clone();
        b.session_preauth = a.session_preauth;
        b.sign = true;
        b.encrypt = a.encrypt;
        b.tree_id = leg2.get(1).map_or(0, |r| r.tree_id);
    }
    [leg1, leg2]
}

/// What of a chain's responses must be the same wherever it is answered.
fn shape(v: &[Resp]) -> Vec<(u16, u32, u32, bool)> {
    v.iter().map(|r| (r.command, r.status, r.flags & F_RELATED, r.tree_id != 0)).collect()
}

/// A binding that is the first request of a compound, on a connection that
/// landed on worker 1, goes to worker 0 (the session's owner) as a whole
/// message: worker 0 answers the entire chain, both NTLM legs, exactly as it
/// answers the same chains on a connection that reached it directly (the
/// reference connection R), and the connection is worker 0's from then on.
#[test]
fn binding_compound_on_another_worker_is_answered_whole_by_the_owner() {
    let srv = serve(tempfile::tempdir().unwrap());
    let ts = server();
    let (a, fid) = session_on_worker0(&ts, srv.port, b"written on channel one");

    // R: A's ClientGUID, routed to worker 0 directly; its chains are not passed.
    let mut r = tcp_client(&ts, srv.port, Ipv4Addr::LOCALHOST);
    negotiate_as(&mut r, vec![DIALECT_311], None);
    let on_owner = bind_in_compound(&a, &mut r, "share");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(!log.contains("connection passed to the worker that owns its session"), "R was passed:\n{log}");

    // B: routed by address to worker 1, then names A's ClientGUID.
    let b_from = address_routed_to(1, 2);
    let mut b = tcp_client(&ts, srv.port, b_from);
    negotiate_after_smb1(&mut b);
    let st = status(&srv.state);
    assert_eq!(st["channels"].as_array().unwrap().iter().filter(|c| c["worker"] == 1).count(), 1, "B starts on worker 1: {st}");
    let passed = bind_in_compound(&a, &mut b, "share");

    let [leg1, leg2] = &passed;
    // Leg 1: the interim SESSION_SETUP response, signed with the session's
    // key (only worker 0 has it), and the related ECHO's, in one message.
    assert_eq!(leg1[0].status, MORE_PROCESSING_REQUIRED, "{:#x}", leg1[0].status);
    let mut raw = leg1[0].raw.clone();
    assert!(leg1[0].is_signed() && session_signer(&a).verify(&mut raw), "interim response signed with the session key");
    assert_eq!((leg1[1].command, leg1[1].status, leg1[1].flags & F_RELATED), (ECHO, SUCCESS, F_RELATED));
    // Leg 2: the binding succeeded, and the related TREE_CONNECT ran with the
    // SessionId it inherited, both signed with the channel's new key.
    assert_eq!(leg2.len(), 2, "one response per request of the chain");
    assert_eq!((leg2[0].command, leg2[0].status), (SESSION_SETUP, SUCCESS), "{:#x}", leg2[0].status);
    assert_eq!((leg2[1].command, leg2[1].status, leg2[1].flags & F_RELATED), (TREE_CONNECT, SUCCESS, F_RELATED), "{:#x}", leg2[1].status);
    assert_eq!(leg2[1].session_id, a.session_id);
    assert_ne!(b.tree_id, 0);
    for resp in leg2 {
        let mut raw = resp.raw.clone();
        assert!(resp.is_signed() && b.keys.as_ref().unwrap().signer.verify(&mut raw), "{} response signed with the channel key", resp.command);
    }
    // Worker 0 answered both chains as it answers a connection of its own.
    assert_eq!(shape(&passed[0]), shape(&on_owner[0]), "first leg");
    assert_eq!(shape(&passed[1]), shape(&on_owner[1]), "last leg");

    // B is a channel of A's session on worker 0: the chain's tree reaches A's file.
    let f = b.open_file("shared.txt");
    assert_eq!(b.read(&f, 0, 22, 1).read_data(), b"written on channel one");
    b.tree_id = a.tree_id;
    assert_eq!(b.read(&fid, 0, 22, 1).read_data(), b"written on channel one", "A's open, through B");
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert_eq!(log.matches("connection passed to the worker that owns its session").count(), 1, "B passed once:\n{log}");
    assert!(!log.contains("not passed"), "{log}");
    let st = status(&srv.state);
    let chans = st["channels"].as_array().unwrap();
    assert!(!chans.iter().any(|c| c["worker"] == 1), "nothing left on worker 1: {st}");
    assert!(chans.iter().filter(|c| c["worker"] == 0).count() >= 3, "A, R and B on worker 0: {st}");

    // A first leg whose SESSION_SETUP is padded (through its NextCommand) to
    // 120 KiB, near what a connection without a session may send: the owner
    // checks the signature over all of it and answers the ECHO behind it, so
    // the whole message went.
    let mut p = tcp_client(&ts, srv.port, b_from);
    negotiate_after_smb1(&mut p);
    p.session_id = a.session_id;
    let mut body = Client::session_setup_body(&Gss::new(USER, PASSWORD).step(None).1, 1);
    body[2] = 1; // SMB2_SESSION_FLAG_BINDING
    let mut first = p.build(SESSION_SETUP, 1, &body);
    first.resize(120 << 10, 0);
    let echo = p.build(ECHO, 1, &[4, 0, 0, 0]);
    let mut msg = chain(vec![first, echo]);
    let at = le32(&msg, 20) as usize;
    assert_eq!(at, 120 << 10);
    set_flags(&mut msg[..at], F_SIGNED);
    set_flags(&mut msg[at..], F_SIGNED | F_RELATED);
    key_sign(&a, &mut msg[..at]);
    key_sign(&a, &mut msg[at..]);
    let r = p.raw(msg).expect("the padded compound ended the connection");
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, MORE_PROCESSING_REQUIRED, "padded binding: {:#x}", r[0].status);
    let mut raw = r[0].raw.clone();
    assert!(r[0].is_signed() && session_signer(&a).verify(&mut raw), "answered by the owner");
    assert_eq!((r[1].command, r[1].status, r[1].flags & F_RELATED), (ECHO, SUCCESS, F_RELATED));
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert_eq!(log.matches("connection passed to the worker that owns its session").count(), 2, "P passed:\n{log}");
}

fn key_sign(a: &Client, m: &mut [u8]) {
    session_signer(a).sign(m).unwrap();
}

fn kill_worker(state: &Path, id: u64) -> u64 {
    let st = status(state);
    let pid = st["workers"].as_array().unwrap().iter().find(|w| w["id"] == id).and_then(|w| w["pid"].as_u64()).expect("worker's pid");
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::KILL).unwrap();
    pid
}

/// A worker killed with files open with delete-on-close: the supervisor
/// deletes those it left without opens; one another worker still has open
/// is deleted by that open's close.
#[test]
fn a_dead_workers_delete_on_close_files_are_deleted() {
    const DELETE_ON_CLOSE: u32 = 0x1000;
    let srv = serve(tempfile::tempdir().unwrap());
    let share = srv._dir.path().join("share");
    let ts = server();
    let mut a = tcp_client(&ts, srv.port, Ipv4Addr::LOCALHOST);
    negotiate_as(&mut a, vec![DIALECT_311], Some([0x11; 16]));
    a.session_setup();
    assert_eq!(a.tree_connect("share").status, SUCCESS);
    let mut b = tcp_client(&ts, srv.port, Ipv4Addr::LOCALHOST);
    negotiate_as(&mut b, vec![DIALECT_311], Some([0x22; 16]));
    b.session_setup();
    assert_eq!(b.tree_connect("share").status, SUCCESS);
    assert_ne!(a.session_id >> 48, b.session_id >> 48, "the two clients are on two workers");
    let a_worker = a.session_id >> 48;
    std::fs::create_dir(share.join("dir")).unwrap();
    let r = a.create("dir\\doomed.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE | DELETE_ON_CLOSE);
    assert_eq!(r.status, SUCCESS);
    assert_eq!(a.write(&r.file_id(), 0, b"bye").status, SUCCESS);
    assert_eq!(a.create("kept.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE | DELETE_ON_CLOSE).status, SUCCESS);
    let kept = b.open_file("kept.txt");
    // Renamed after its delete-on-close was set: deleted under its new name.
    let moved = a.create("before.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE | DELETE_ON_CLOSE).file_id();
    assert_eq!(rename(&mut a, &moved, "dir\\after.txt").status, SUCCESS);
    assert!(share.join("dir/after.txt").exists());
    let plain = a.open_file("plain.txt");
    let _ = plain;
    assert!(share.join("dir/doomed.txt").exists());

    kill_worker(&srv.state, a_worker);
    let deadline = Instant::now() + Duration::from_secs(20);
    while share.join("dir/doomed.txt").exists() {
        assert!(Instant::now() < deadline, "the dead worker's delete-on-close file is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!share.join("dir/after.txt").exists(), "the renamed delete-on-close file");
    assert!(share.join("plain.txt").exists(), "a file without delete-on-close stays");
    assert!(share.join("kept.txt").exists(), "another worker's client still has it open");
    assert_eq!(b.close(&kept).status, SUCCESS);
    assert!(!share.join("kept.txt").exists(), "the last close deleted it");
    // The name is free again.
    let r = b.create("dir\\doomed.txt", GENERIC_ALL, FILE_CREATE, FILE_NON_DIRECTORY_FILE);
    assert_eq!(r.status, SUCCESS);
}

/// SET_INFO FileRenameInformation of `fid` to `to` (MS-SMB2 2.2.39, MS-FSCC 2.4.42.2).
fn rename(c: &mut Client, fid: &[u8; 16], to: &str) -> Resp {
    let name = utf16(to);
    let mut info = Vec::new();
    info.u8_(0).bytes(&[0; 7]).u64_(0).u32_(name.len() as u32).bytes(&name);
    let mut b = Vec::new();
    b.u16_(33).u8_(1).u8_(10).u32_(info.len() as u32).u16_(64 + 32).u16_(0).u32_(0).bytes(fid).bytes(&info);
    c.call(SET_INFO, 1, &b)
}

/// A binding that names a worker that never ran (a made-up SessionId) goes
/// back to the worker it came from, which answers USER_SESSION_DELETED on a
/// connection that goes on; the named worker is not started for it.
#[test]
fn binding_of_a_worker_that_never_ran_is_answered_where_it_came_from() {
    let srv = serve_with(tempfile::tempdir().unwrap(), 3);
    let ts = server();
    let mut c = tcp_client(&ts, srv.port, Ipv4Addr::LOCALHOST);
    negotiate_as(&mut c, vec![DIALECT_311], None);
    c.session_id = (2 << 48) | 5;
    let mut body = Client::session_setup_body(&Gss::new(USER, PASSWORD).step(None).1, 1);
    body[2] = 1; // SMB2_SESSION_FLAG_BINDING
    let mut msg = c.build(SESSION_SETUP, 1, &body);
    msg[16] |= 8; // SMB2_FLAGS_SIGNED (with no key anyone has)
    let r = c.raw(msg).unwrap().pop().unwrap();
    assert_eq!(r.status, USER_SESSION_DELETED);
    // The connection goes on where it was.
    c.session_id = 0;
    c.session_setup();
    assert_eq!(c.tree_connect("share").status, SUCCESS);
    let log = std::fs::read_to_string(&srv.log).unwrap();
    assert!(log.contains("connection sent back: its binding names a worker that never ran"), "not sent back:\n{log}");
    let st = status(&srv.state);
    let w2 = st["workers"].as_array().unwrap().iter().find(|w| w["id"] == 2).cloned().unwrap();
    assert_eq!(w2["started"], false, "{st}");
}
