//! The TCP listener: accepts connections within the connection caps and reads
//! each one's first message (negotiate timeout, io timeout, pre-authentication
//! size limit) before it is served: in this process (`run`, one process
//! serving everything) or handed to a worker by the supervisor
//! (`supervisor.rs`, which uses `accept_loop` and `read_first_message`).
//!
//! Connections are counted in all and per client address (`max smbd
//! processes`, `max connections per client address`): one over either cap is
//! closed at once, with a log line, before anything is read from it; the
//! connections already served are not touched.

use crate::objects::{lock, Server};
use crate::transport_tcp::tcp_transport;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub struct Listener {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    Ok(Listener { listener, addr })
}

/// The server's count of live connections, in all and per client address.
#[derive(Default)]
pub struct ConnectionSlots {
    inner: Mutex<SlotCounts>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_addr: HashMap<IpAddr, usize>,
    /// Refusals not yet logged (a flood is logged once a second, with a count).
    refused_unlogged: u64,
    last_refusal_log: Option<Instant>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total(usize),
    PerAddress(usize),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Total(n) => write!(f, "{n} connections in all (max smbd processes)"),
            Refused::PerAddress(n) => write!(f, "{n} connections from this address (max connections per client address)"),
        }
    }
}

/// A live connection's place in the counts; released when dropped.
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    addr: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = lock(&self.slots.inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_addr.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_addr.remove(&self.addr);
            }
        }
    }
}

impl ConnectionSlots {
    /// Takes a slot for a connection from `addr`, unless a cap (0 = none) is reached.
    pub fn acquire(self: &Arc<Self>, addr: IpAddr, max_total: usize, max_per_addr: usize) -> Result<Slot, Refused> {
        let mut c = lock(&self.inner);
        if max_total != 0 && c.total >= max_total {
            return Err(Refused::Total(c.total));
        }
        let mine = c.per_addr.get(&addr).copied().unwrap_or(0);
        if max_per_addr != 0 && mine >= max_per_addr {
            return Err(Refused::PerAddress(mine));
        }
        c.total += 1;
        *c.per_addr.entry(addr).or_insert(0) += 1;
        Ok(Slot { slots: self.clone(), addr })
    }

    pub fn total(&self) -> usize {
        lock(&self.inner).total
    }

    /// Logs a refusal; during a flood at most one line a second, with the
    /// number of refusals it stands for.
    pub fn log_refusal(&self, peer: &dyn std::fmt::Display, why: Refused) {
        let mut c = lock(&self.inner);
        c.refused_unlogged += 1;
        let now = Instant::now();
        if c.last_refusal_log.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        let n = std::mem::take(&mut c.refused_unlogged);
        c.last_refusal_log = Some(now);
        drop(c);
        warn!(peer = %peer, refused_since_last_line = n, "connection refused and closed: already {why}");
    }
}

/// Why a connection was closed before its first message was read.
#[derive(Debug, thiserror::Error)]
pub enum FirstMessageError {
    #[error("no message within {0} s (negotiate timeout)")]
    Silent(u64),
    #[error("closed before its first message")]
    Closed,
    #[error("first message not complete within the io timeout")]
    Trickle,
    #[error("first message: {0}")]
    Frame(#[from] smbdirect_transport::tcp::FrameError),
    #[error("{0}")]
    Io(std::io::Error),
}

/// Reads a new connection's first message (framed: the 4-byte Direct TCP
/// header and the message) as the front listener does before it picks the
/// process that serves the connection. The first byte must come within the
/// negotiate timeout, the rest within the io timeout after it (and the
/// negotiate timeout still); the message may not exceed `limit` (the
/// pre-authentication size limit). The socket's read timeout is cleared on
/// success.
pub fn read_first_message(stream: &TcpStream, limits: &crate::config::Limits, limit: usize) -> Result<Vec<u8>, FirstMessageError> {
    use smbdirect_transport::tcp;
    use std::io::Read;
    let start = Instant::now();
    let nego = (!limits.negotiate_timeout.is_zero()).then(|| start + limits.negotiate_timeout);
    let mut s = stream;
    // `deadline` bounds every read; `silent` says which limit a timeout hit.
    let read_to = |s: &mut &TcpStream, buf: &mut [u8], deadline: Option<Instant>, first: bool| -> Result<(), FirstMessageError> {
        let mut got = 0;
        while got < buf.len() {
            let left = match deadline {
                Some(d) => {
                    let l = d.saturating_duration_since(Instant::now());
                    if l.is_zero() {
                        return Err(if first { FirstMessageError::Silent(limits.negotiate_timeout.as_secs()) } else { FirstMessageError::Trickle });
                    }
                    Some(l)
                }
                None => None,
            };
            s.set_read_timeout(left).map_err(FirstMessageError::Io)?;
            match s.read(&mut buf[got..]) {
                Ok(0) => return Err(FirstMessageError::Closed),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(FirstMessageError::Io(e)),
            }
        }
        Ok(())
    };
    let mut hdr = [0u8; tcp::HEADER_LEN];
    read_to(&mut s, &mut hdr[..1], nego, true)?;
    let io = (!limits.io_timeout.is_zero()).then(|| Instant::now() + limits.io_timeout);
    let rest = match (nego, io) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let trickle = |e| match e {
        FirstMessageError::Silent(_) => FirstMessageError::Trickle,
        e => e,
    };
    read_to(&mut s, &mut hdr[1..], rest, false).map_err(trickle)?;
    let len = tcp::parse_header(hdr, limit)?;
    let mut msg = vec![0u8; tcp::HEADER_LEN + len];
    msg[..tcp::HEADER_LEN].copy_from_slice(&hdr);
    read_to(&mut s, &mut msg[tcp::HEADER_LEN..], rest, false).map_err(trickle)?;
    stream.set_read_timeout(None).map_err(FirstMessageError::Io)?;
    Ok(msg)
}

/// The pre-authentication bound on a first message.
pub fn first_message_limit(cfg: &crate::config::ServerConfig) -> usize {
    cfg.limits.max_unauthenticated_message.min(crate::conn::max_message_size(cfg))
}

/// Accepts forever; each connection within the caps goes to `on_conn` with
/// its place in the counts (one over a cap is closed at once, unread).
pub fn accept_loop(l: Listener, slots: Arc<ConnectionSlots>, limits: crate::config::Limits, mut on_conn: impl FnMut(TcpStream, SocketAddr, Slot)) {
    for stream in l.listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(e) => {
                warn!("accepted a connection without a peer address: {e}");
                continue;
            }
        };
        match slots.acquire(peer.ip(), limits.max_connections, limits.max_connections_per_address) {
            Ok(slot) => on_conn(stream, peer, slot),
            // Dropping the stream closes it: nothing is read or sent.
            Err(why) => slots.log_refusal(&peer, why),
        }
    }
}

/// Serves one accepted TCP connection in this process, `first` (the bytes
/// already read from it) replayed first.
pub fn serve_tcp(server: Arc<Server>, stream: TcpStream, first: Vec<u8>) -> Option<crate::connpass::ConnPass> {
    serve_tcp_from(server, stream, first, None)
}

/// [`serve_tcp`] for a connection passed from another worker (connpass.rs):
/// `first` is its pending messages. Returns the connection's state when it
/// is to be passed on (its socket left open).
pub fn serve_tcp_from(server: Arc<Server>, stream: TcpStream, first: Vec<u8>, resume: Option<&crate::connpass::ConnPass>) -> Option<crate::connpass::ConnPass> {
    let limits = &server.cfg.limits;
    match tcp_transport(stream, first) {
        Ok((src, mut sink)) => {
            sink.set_limits(limits.io_timeout, limits.max_send_queue);
            let peer = crate::transport::MessageSink::peer(&sink);
            let sink: Arc<dyn crate::transport::MessageSink> = Arc::new(sink);
            info!(%peer, passed = resume.is_some(), "connection accepted");
            crate::conn::serve_from(server, src, sink, resume)
        }
        Err(e) => {
            warn!("cannot set up connection: {e}");
            None
        }
    }
}

/// Accepts forever and serves every connection in this process (one process
/// serving everything; `smbdirect serve` hands connections to workers
/// instead, see `supervisor.rs`). Each connection runs on a thread of its
/// own; a panic in it ends that connection only.
pub fn run(server: Arc<Server>, l: Listener) {
    let limits = server.cfg.limits.clone();
    let limit = first_message_limit(&server.cfg);
    let slots = server.conn_slots.clone();
    accept_loop(l, slots, limits.clone(), |stream, peer, slot| {
        let server = server.clone();
        let limits = limits.clone();
        let r = std::thread::Builder::new().name("smb-conn".into()).stack_size(512 * 1024).spawn(move || {
            let _slot = slot;
            match read_first_message(&stream, &limits, limit) {
                Ok(first) => {
                    serve_tcp(server, stream, first);
                }
                Err(e) => warn!(%peer, "closing the connection: {e}"),
            }
        });
        if let Err(e) = r {
            warn!("cannot spawn a connection thread: {e}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use std::io::{Read, Write};

    /// A server on an ephemeral loopback port, accepting on a thread of its own.
    fn start(f: impl FnOnce(&mut ServerConfig)) -> (Arc<Server>, SocketAddr) {
        let mut cfg = ServerConfig { shares: Vec::new(), ..ServerConfig::default() };
        f(&mut cfg);
        let server = Server::new(cfg).expect("server");
        let l = bind("127.0.0.1:0".parse().unwrap()).expect("bind");
        let addr = l.addr;
        let s = server.clone();
        std::thread::spawn(move || run(s, l));
        (server, addr)
    }

    /// Connects from `src` (any 127/8 address is loopback on Linux).
    fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
        let sock = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).expect("socket");
        let from: SocketAddr = format!("{src}:0").parse().unwrap();
        rustix::net::bind(&sock, &from).expect("bind source");
        rustix::net::connect(&sock, &to).expect("connect");
        let s = TcpStream::from(sock);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// An SMB2 NEGOTIATE for 2.0.2, framed.
    fn negotiate_request(mid: u64) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(b"\xFESMB");
        m.extend_from_slice(&64u16.to_le_bytes());
        m.extend_from_slice(&[0; 8]); // credit charge, status, command 0 (NEGOTIATE)
        m.extend_from_slice(&1u16.to_le_bytes()); // credits
        m.extend_from_slice(&[0; 8]); // flags, next command
        m.extend_from_slice(&mid.to_le_bytes());
        m.extend_from_slice(&[0; 32]); // reserved, tree, session, signature
        m.extend_from_slice(&36u16.to_le_bytes());
        m.extend_from_slice(&1u16.to_le_bytes()); // one dialect
        m.extend_from_slice(&1u16.to_le_bytes()); // signing enabled
        m.extend_from_slice(&[0; 2 + 4 + 16 + 8]);
        m.extend_from_slice(&0x0202u16.to_le_bytes());
        let mut f = (m.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&m);
        f
    }

    /// The client is served: its NEGOTIATE gets a successful response.
    fn served(s: &mut TcpStream) -> bool {
        if s.write_all(&negotiate_request(0)).is_err() {
            return false;
        }
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            return false;
        }
        let mut resp = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut resp).is_ok() && resp.get(8..12) == Some(&[0, 0, 0, 0][..]) && resp.get(12..14) == Some(&[0, 0][..])
    }

    /// The server closed the connection (within the 10 s read timeout).
    fn closed(s: &mut TcpStream) -> bool {
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    fn wait_for(mut f: impl FnMut() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn connection_caps_close_only_the_new_connection() {
        let (server, addr) = start(|c| {
            c.limits.max_connections = 3;
            c.limits.max_connections_per_address = 2;
        });
        let mut a1 = connect_from("127.0.0.1", addr);
        let mut a2 = connect_from("127.0.0.1", addr);
        assert!(served(&mut a1) && served(&mut a2));
        // A third from the same address is closed at once.
        let mut a3 = connect_from("127.0.0.1", addr);
        assert!(closed(&mut a3), "third connection from one address");
        // Another address is served, up to the cap in all.
        let mut b1 = connect_from("127.0.0.2", addr);
        assert!(served(&mut b1));
        let mut b2 = connect_from("127.0.0.2", addr);
        assert!(closed(&mut b2), "fourth connection in all");
        // The connections already served are untouched.
        a1.write_all(&negotiate_request(1)).unwrap();
        let mut len = [0u8; 4];
        a1.read_exact(&mut len).expect("a1 still served");
        // One goes away: its place is free again.
        drop(a2);
        assert!(wait_for(|| server.conn_slots.total() == 2));
        let mut a4 = connect_from("127.0.0.1", addr);
        assert!(served(&mut a4));
    }

    #[test]
    fn trickling_client_is_closed_others_served() {
        // Only the io timeout is short: it alone must end the trickle.
        let (_server, addr) = start(|c| {
            c.limits.negotiate_timeout = Duration::from_secs(60);
            c.limits.session_setup_timeout = Duration::from_secs(60);
            c.limits.io_timeout = Duration::from_secs(1);
        });
        // Trickles a NEGOTIATE one byte every 200 ms (it would take 24 s).
        let trickler = connect_from("127.0.0.1", addr);
        let msg = negotiate_request(0);
        let mut t = trickler.try_clone().unwrap();
        let trickle = std::thread::spawn(move || {
            for b in &msg {
                if t.write_all(&[*b]).is_err() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            false
        });
        // A well-behaved client is served meanwhile, and stays connected.
        let mut good = connect_from("127.0.0.2", addr);
        assert!(served(&mut good));
        let mut tr = trickler;
        assert!(closed(&mut tr), "the trickling client is closed (io timeout)");
        assert!(trickle.join().unwrap(), "the trickle was cut before its message was complete");
        good.write_all(&negotiate_request(1)).unwrap();
        let mut len = [0u8; 4];
        good.read_exact(&mut len).expect("the good client is still served");
    }

    #[test]
    fn silent_and_unauthenticated_clients_are_closed() {
        let (_server, addr) = start(|c| {
            c.limits.negotiate_timeout = Duration::from_secs(1);
            c.limits.session_setup_timeout = Duration::from_secs(2);
        });
        // Never sends a byte.
        let mut silent = connect_from("127.0.0.1", addr);
        // Negotiates, never authenticates.
        let mut unauth = connect_from("127.0.0.1", addr);
        assert!(served(&mut unauth));
        assert!(closed(&mut silent), "silent client closed (negotiate timeout)");
        assert!(closed(&mut unauth), "unauthenticated client closed (session setup timeout)");
    }

    #[test]
    fn large_message_before_authentication_closes_only_that_connection() {
        let (_server, addr) = start(|c| c.limits.max_unauthenticated_message = 64 << 10);
        let mut good = connect_from("127.0.0.2", addr);
        assert!(served(&mut good));
        // A NEGOTIATE announced as 1 MiB: over the unauthenticated limit (the
        // negotiated WRITE size would allow it after a logon).
        let mut big = connect_from("127.0.0.1", addr);
        big.write_all(&[0, 0x10, 0, 0]).unwrap();
        let _ = big.write_all(&[0u8; 4096]);
        assert!(closed(&mut big), "1 MiB message before authentication");
        good.write_all(&negotiate_request(1)).unwrap();
        let mut len = [0u8; 4];
        good.read_exact(&mut len).expect("the good client is still served");
    }

    #[test]
    fn slots_count_in_all_and_per_address() {
        let s = Arc::new(ConnectionSlots::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = s.acquire(a, 3, 2).unwrap();
        let a2 = s.acquire(a, 3, 2).unwrap();
        assert_eq!(s.acquire(a, 3, 2).err(), Some(Refused::PerAddress(2)));
        let b1 = s.acquire(b, 3, 2).unwrap();
        assert_eq!(s.acquire(b, 3, 2).err(), Some(Refused::Total(3)));
        drop(a1);
        assert_eq!(s.total(), 2);
        let _a3 = s.acquire(a, 3, 2).unwrap();
        drop((a2, b1));
        // 0 means no cap.
        let many: Vec<Slot> = (0..10).map(|_| s.acquire(b, 0, 0).unwrap()).collect();
        assert_eq!(s.total(), 11);
        drop(many);
        assert_eq!(s.total(), 1);
    }
}
