//! The supervisor <-> worker protocol on a worker's control socket
//! (AF_UNIX SOCK_SEQPACKET; ISSUE10-DESIGN.md "Process model").
//!
//! The framing is the proxy protocol's (`smbdirect_rdma_proxy::frame`), with
//! kinds of its own: every datagram starts with `kind u8, flags u8 (bit 0
//! MORE), reserved u16 (zero), len u32`, little endian, then `len` body bytes.
//! A status reply and the passes (`PassConn`, `Passed`, `PassChannel`) may
//! span datagrams (MORE on all but the last); the receiver bounds the
//! reassembled size. `Handoff` carries the connection's socket by
//! SCM_RIGHTS on its (single) datagram, a pass on its first one.
//!
//! Supervisor -> worker: `Setup` (first, once), `Handoff`, `StatusRequest`,
//! `Passed`.
//! Worker -> supervisor: `ConnClosed`, `StatusReply`, `PassConn`,
//! `PassChannel`.
//!
//! `PassConn` / `Passed` move a TCP connection (its socket by SCM_RIGHTS)
//! to the worker that owns the session its binding SESSION_SETUP names,
//! with what rebuilds it there (connpass.rs). `PassChannel` does the same
//! for an SMB Direct channel (its channel socket to the proxy); the
//! supervisor hands it to the owner on that worker's proxy-frame socket as
//! the proxy protocol's `ChannelPassed`, whose `state` is [`encode_pass`].
//!
//! The proxy's frames (Hello, ChannelOffer) travel on a second socket per
//! worker, unchanged, so that `rdma::serve_control` reads them as it reads a
//! proxy's.

use crate::connpass::ConnPass;
use crate::credits::CreditSnapshot;
use smbdirect_rdma_proxy::fdpass::{recv_datagram, send_datagram, FdPassError};
use smbdirect_rdma_proxy::frame::{self, FrameError, Kinds, MAX_DATAGRAM, MAX_FRAGMENT_BODY as MAX_BODY};
use smbdirect_rdma_proxy::proto::{kind as proxy_kind, ChannelOffer, Frame as ProxyFrame, MAX_FRAME_OVERHEAD};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
/// Largest first message a `Handoff` carries (it must fit one datagram).
pub const MAX_HANDOFF_MESSAGE: usize = MAX_BODY - 64;
/// Longest text field.
const MAX_TEXT: usize = 4096;
/// Most message ids a passed credit window may span (twice the largest
/// `smb2 max credits`).
const MAX_CREDIT_IDS: usize = 2 * 65535;
/// Bound on a reassembled status reply.
pub const MAX_STATUS_REPLY: usize = 64 << 20;
/// Bound on a pass's encoded state (the NEGOTIATE exchange, the credit
/// window and the messages read and not handled): a worker reads frames
/// from the supervisor up to this size.
pub const MAX_PASS: usize = 1 << 20;

pub mod kind {
    pub const SETUP: u8 = 1;
    pub const HANDOFF: u8 = 2;
    pub const STATUS_REQUEST: u8 = 3;
    pub const PASSED: u8 = 4;
    pub const CONN_CLOSED: u8 = 16;
    pub const STATUS_REPLY: u8 = 17;
    pub const PASS_CONN: u8 = 18;
    pub const PASS_CHANNEL: u8 = 19;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}: truncated")]
    Truncated(&'static str),
    #[error("{0}: trailing bytes")]
    Trailing(&'static str),
    #[error("bad value {1} in {0}")]
    BadValue(&'static str, u64),
    #[error("text is not UTF-8 or too long")]
    BadText,
    #[error("channel offer: {0}")]
    Proxy(String),
    #[error("frame kind {0}: fd missing or unexpected")]
    FdRule(u8),
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}")]
    Socket(#[from] FdPassError),
    #[error("{0}")]
    Wire(#[from] WireError),
}

/// A connection a worker serves, as the supervisor counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnRef {
    /// A TCP connection handed over by the front listener (its id).
    Tcp(u64),
    /// An SMB Direct channel offered by the proxy (its channel id).
    Rdma(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub worker_id: u32,
    /// The server's GUID: the same in every worker (clients compare it
    /// across channels).
    pub server_guid: [u8; 16],
    /// The state directory (store, wake-up sockets).
    pub state_dir: String,
    /// The user `serve` generated when none was configured (name, password):
    /// secret, so it goes here rather than on the worker's command line.
    pub generated_user: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Setup(Setup),
    /// A TCP connection (its fd rides along) and the bytes already read from
    /// it (the whole first message, framed), to be replayed.
    Handoff { conn_id: u64, client_guid: [u8; 16], first: Vec<u8> },
    StatusRequest { req_id: u64 },
    ConnClosed(ConnRef),
    /// The worker's part of `smbdirect status`, as JSON.
    StatusReply { req_id: u64, json: Vec<u8> },
    /// Worker -> supervisor: connection `conn_id` (its fd rides along) goes
    /// to the worker that owns `pass.session_id`.
    PassConn { conn_id: u64, client_guid: [u8; 16], pass: ConnPass },
    /// Supervisor -> worker: a connection passed to this worker (fd along).
    Passed { conn_id: u64, client_guid: [u8; 16], pass: ConnPass },
    /// Worker -> supervisor: SMB Direct channel `offer.channel_id` (its
    /// channel socket rides along; `offer.first_message` is empty) goes to
    /// the worker that owns `pass.session_id`.
    PassChannel { offer: ChannelOffer, pass: ConnPass },
}

/// The connection state of a passed SMB Direct channel, as the `state` of
/// the proxy protocol's `ChannelPassed` frame.
pub fn encode_pass(channel_id: u64, client_guid: &[u8; 16], p: &ConnPass) -> Result<Vec<u8>, WireError> {
    let mut o = Vec::new();
    put_pass(&mut o, channel_id, client_guid, p)?;
    Ok(o)
}

/// Reads [`encode_pass`]'s bytes back.
pub fn decode_pass(b: &[u8]) -> Result<ConnPass, WireError> {
    get_pass(&mut Rd { b, what: "ChannelPassed state" }).map(|(_, _, p)| p)
}

fn put_offer(o: &mut Vec<u8>, offer: &ChannelOffer) -> Result<(), WireError> {
    let mut body = Vec::new();
    ProxyFrame::ChannelOffer(offer.clone()).encode_body(&mut body).map_err(|e| WireError::Proxy(e.to_string()))?;
    put_blob(o, &body)
}

fn get_offer(r: &mut Rd<'_>) -> Result<ChannelOffer, WireError> {
    let body = r.blob()?;
    match ProxyFrame::decode_body(proxy_kind::CHANNEL_OFFER, &body) {
        Ok(ProxyFrame::ChannelOffer(o)) => Ok(o),
        Ok(_) => Err(WireError::Truncated("PassChannel offer")),
        Err(e) => Err(WireError::Proxy(e.to_string())),
    }
}

/// Whether a pass is within [`MAX_PASS`], with room for a channel offer
/// (else the binding is answered where it arrived).
pub fn pass_fits(p: &ConnPass) -> bool {
    Frame::PassConn { conn_id: 0, client_guid: [0; 16], pass: p.clone() }.encode_body().is_ok_and(|b| b.len() + MAX_FRAME_OVERHEAD <= MAX_PASS)
}

fn put_pass(o: &mut Vec<u8>, conn_id: u64, client_guid: &[u8; 16], p: &ConnPass) -> Result<(), WireError> {
    if p.credits.used.len() > MAX_CREDIT_IDS {
        return Err(FrameError::TooLarge { size: p.credits.used.len(), limit: MAX_CREDIT_IDS }.into());
    }
    if p.pending.len() > MAX_PASS {
        return Err(FrameError::TooLarge { size: p.pending.len(), limit: MAX_PASS }.into());
    }
    o.extend_from_slice(&conn_id.to_le_bytes());
    o.extend_from_slice(client_guid);
    o.extend_from_slice(&p.session_id.to_le_bytes());
    put_blob(o, &p.negotiate_req)?;
    put_blob(o, &p.negotiate_resp)?;
    o.extend_from_slice(&p.credits.low.to_le_bytes());
    o.extend_from_slice(&(p.credits.used.len() as u32).to_le_bytes());
    let mut bits = vec![0u8; p.credits.used.len().div_ceil(8)];
    for (i, u) in p.credits.used.iter().enumerate() {
        if *u {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    o.extend_from_slice(&bits);
    o.extend_from_slice(&p.pending);
    Ok(())
}

fn get_pass(r: &mut Rd<'_>) -> Result<(u64, [u8; 16], ConnPass), WireError> {
    let conn_id = r.u64()?;
    let client_guid = r.array()?;
    let session_id = r.u64()?;
    let negotiate_req = r.blob()?;
    let negotiate_resp = r.blob()?;
    let low = r.u64()?;
    let n = r.u32()? as usize;
    if n > MAX_CREDIT_IDS {
        return Err(WireError::BadValue("credit ids", n as u64));
    }
    let bits = r.take(n.div_ceil(8))?;
    let used = (0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect();
    let pending = r.b.to_vec();
    Ok((conn_id, client_guid, ConnPass { session_id, negotiate_req, negotiate_resp, credits: CreditSnapshot { low, used }, pending }))
}

fn put_blob(o: &mut Vec<u8>, b: &[u8]) -> Result<(), WireError> {
    let n = u32::try_from(b.len()).ok().filter(|n| (*n as usize) <= MAX_PASS).ok_or(FrameError::TooLarge { size: b.len(), limit: MAX_PASS })?;
    o.extend_from_slice(&n.to_le_bytes());
    o.extend_from_slice(b);
    Ok(())
}

impl Frame {
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Setup(_) => kind::SETUP,
            Frame::Handoff { .. } => kind::HANDOFF,
            Frame::StatusRequest { .. } => kind::STATUS_REQUEST,
            Frame::ConnClosed(_) => kind::CONN_CLOSED,
            Frame::StatusReply { .. } => kind::STATUS_REPLY,
            Frame::PassConn { .. } => kind::PASS_CONN,
            Frame::Passed { .. } => kind::PASSED,
            Frame::PassChannel { .. } => kind::PASS_CHANNEL,
        }
    }

    pub fn encode_body(&self) -> Result<Vec<u8>, WireError> {
        let mut o = Vec::new();
        match self {
            Frame::Setup(s) => {
                o.extend_from_slice(&s.worker_id.to_le_bytes());
                o.extend_from_slice(&s.server_guid);
                put_text(&mut o, &s.state_dir)?;
                match &s.generated_user {
                    None => o.push(0),
                    Some((u, p)) => {
                        o.push(1);
                        put_text(&mut o, u)?;
                        put_text(&mut o, p)?;
                    }
                }
            }
            Frame::Handoff { conn_id, client_guid, first } => {
                if first.len() > MAX_HANDOFF_MESSAGE {
                    return Err(FrameError::TooLarge { size: first.len(), limit: MAX_HANDOFF_MESSAGE }.into());
                }
                o.extend_from_slice(&conn_id.to_le_bytes());
                o.extend_from_slice(client_guid);
                o.extend_from_slice(first);
            }
            Frame::StatusRequest { req_id } => o.extend_from_slice(&req_id.to_le_bytes()),
            Frame::ConnClosed(c) => {
                let (t, id) = match c {
                    ConnRef::Tcp(id) => (0u8, id),
                    ConnRef::Rdma(id) => (1u8, id),
                };
                o.push(t);
                o.extend_from_slice(&id.to_le_bytes());
            }
            Frame::StatusReply { req_id, json } => {
                o.extend_from_slice(&req_id.to_le_bytes());
                o.extend_from_slice(json);
            }
            Frame::PassConn { conn_id, client_guid, pass } | Frame::Passed { conn_id, client_guid, pass } => put_pass(&mut o, *conn_id, client_guid, pass)?,
            Frame::PassChannel { offer, pass } => {
                put_offer(&mut o, offer)?;
                put_pass(&mut o, offer.channel_id, &offer.client_guid, pass)?;
            }
        }
        Ok(o)
    }

    pub fn decode_body(k: u8, body: &[u8]) -> Result<Frame, WireError> {
        let f = match k {
            kind::SETUP => {
                let mut r = Rd { b: body, what: "Setup" };
                let worker_id = r.u32()?;
                let server_guid = r.array()?;
                let state_dir = r.text()?;
                let generated_user = match r.u8()? {
                    0 => None,
                    1 => Some((r.text()?, r.text()?)),
                    v => return Err(WireError::BadValue("Setup user flag", v.into())),
                };
                r.end()?;
                Frame::Setup(Setup { worker_id, server_guid, state_dir, generated_user })
            }
            kind::HANDOFF => {
                let mut r = Rd { b: body, what: "Handoff" };
                let conn_id = r.u64()?;
                let client_guid = r.array()?;
                Frame::Handoff { conn_id, client_guid, first: r.b.to_vec() }
            }
            kind::STATUS_REQUEST => {
                let mut r = Rd { b: body, what: "StatusRequest" };
                let req_id = r.u64()?;
                r.end()?;
                Frame::StatusRequest { req_id }
            }
            kind::CONN_CLOSED => {
                let mut r = Rd { b: body, what: "ConnClosed" };
                let t = r.u8()?;
                let id = r.u64()?;
                r.end()?;
                Frame::ConnClosed(match t {
                    0 => ConnRef::Tcp(id),
                    1 => ConnRef::Rdma(id),
                    v => return Err(WireError::BadValue("ConnClosed transport", v.into())),
                })
            }
            kind::STATUS_REPLY => {
                let mut r = Rd { b: body, what: "StatusReply" };
                let req_id = r.u64()?;
                Frame::StatusReply { req_id, json: r.b.to_vec() }
            }
            kind::PASS_CONN => {
                let (conn_id, client_guid, pass) = get_pass(&mut Rd { b: body, what: "PassConn" })?;
                Frame::PassConn { conn_id, client_guid, pass }
            }
            kind::PASSED => {
                let (conn_id, client_guid, pass) = get_pass(&mut Rd { b: body, what: "Passed" })?;
                Frame::Passed { conn_id, client_guid, pass }
            }
            kind::PASS_CHANNEL => {
                let mut r = Rd { b: body, what: "PassChannel" };
                let offer = get_offer(&mut r)?;
                let (_, _, pass) = get_pass(&mut r)?;
                Frame::PassChannel { offer, pass }
            }
            k => return Err(FrameError::UnknownKind(k).into()),
        };
        Ok(f)
    }

    /// The frame as datagrams (header included); only a status reply and a
    /// pass are split.
    pub fn to_datagrams(&self) -> Result<Vec<Vec<u8>>, WireError> {
        Ok(frame::split_body(self.kind(), &self.encode_body()?, KINDS)?)
    }
}

/// The kinds as the framing sees them.
const KINDS: Kinds = Kinds {
    known: |k| matches!(k, kind::SETUP | kind::HANDOFF | kind::STATUS_REQUEST | kind::PASSED | kind::CONN_CLOSED | kind::STATUS_REPLY | kind::PASS_CONN | kind::PASS_CHANNEL),
    splittable: |k| matches!(k, kind::STATUS_REPLY | kind::PASS_CONN | kind::PASSED | kind::PASS_CHANNEL),
};

fn carries_fd(k: u8) -> bool {
    matches!(k, kind::HANDOFF | kind::PASS_CONN | kind::PASSED | kind::PASS_CHANNEL)
}

/// Reassembles datagrams into frames (bounded).
#[derive(Debug)]
pub struct Reassembler(frame::Reassembler);

impl Reassembler {
    pub fn new(limit: usize) -> Self {
        Reassembler(frame::Reassembler::new(limit, KINDS))
    }

    pub fn in_progress(&self) -> bool {
        self.0.in_progress()
    }

    /// Feeds one datagram; a frame when one is complete.
    pub fn push(&mut self, d: &[u8]) -> Result<Option<Frame>, WireError> {
        match self.0.push(d)? {
            None => Ok(None),
            Some((k, body)) => Frame::decode_body(k, &body).map(Some),
        }
    }
}

/// Sends a frame; `fd` (a `Handoff`'s connection, a pass's socket) rides on
/// its first datagram.
/// Callers sharing a socket between threads hold a lock around this (a split
/// status reply must not interleave with other frames).
pub fn send(sock: BorrowedFd<'_>, f: &Frame, fd: Option<BorrowedFd<'_>>) -> Result<(), ChannelError> {
    if carries_fd(f.kind()) != fd.is_some() {
        return Err(WireError::FdRule(f.kind()).into());
    }
    let mut fd = fd;
    for d in f.to_datagrams()? {
        send_datagram(sock, &d, fd.take())?;
    }
    Ok(())
}

/// Reads frames from one socket.
pub struct Reader {
    reasm: Reassembler,
    buf: Vec<u8>,
}

impl Reader {
    pub fn new(limit: usize) -> Self {
        Reader { reasm: Reassembler::new(limit), buf: vec![0; MAX_DATAGRAM] }
    }

    /// The next frame and its fd; `None` at end of stream. Any error means
    /// the socket must be dropped.
    pub fn recv(&mut self, sock: impl AsFd) -> Result<Option<(Frame, Option<OwnedFd>)>, ChannelError> {
        let sock = sock.as_fd();
        let mut got_fd = None;
        loop {
            let Some((n, fd)) = recv_datagram(sock, &mut self.buf)? else {
                if self.reasm.in_progress() {
                    return Err(WireError::Truncated("end of stream inside a frame").into());
                }
                return Ok(None);
            };
            // The fd rides on the first datagram of a frame that carries one.
            let k = self.buf.first().copied().unwrap_or(0);
            if fd.is_some() != (carries_fd(k) && !self.reasm.in_progress()) {
                return Err(WireError::FdRule(k).into());
            }
            if fd.is_some() {
                got_fd = fd;
            }
            if let Some(f) = self.reasm.push(&self.buf[..n])? {
                return Ok(Some((f, got_fd)));
            }
        }
    }
}

fn put_text(o: &mut Vec<u8>, s: &str) -> Result<(), WireError> {
    if s.len() > MAX_TEXT {
        return Err(WireError::BadText);
    }
    o.extend_from_slice(&(s.len() as u16).to_le_bytes());
    o.extend_from_slice(s.as_bytes());
    Ok(())
}

struct Rd<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.b.len() {
            return Err(WireError::Truncated(self.what));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn blob(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn text(&mut self) -> Result<String, WireError> {
        let n = u16::from_le_bytes(self.array()?) as usize;
        if n > MAX_TEXT {
            return Err(WireError::BadText);
        }
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| WireError::BadText)
    }
    fn end(&self) -> Result<(), WireError> {
        if self.b.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.what))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smbdirect_rdma_proxy::fdpass::seqpacket_pair;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Setup(Setup { worker_id: 3, server_guid: [7; 16], state_dir: "/run/smbdirect".into(), generated_user: None }),
            Frame::Setup(Setup {
                worker_id: 0,
                server_guid: [0; 16],
                state_dir: String::new(),
                generated_user: Some(("smbuser".into(), "pässword".into())),
            }),
            Frame::Handoff { conn_id: 42, client_guid: [0xAB; 16], first: b"\0\0\0\x04\xfeSMB".to_vec() },
            Frame::Handoff { conn_id: 0, client_guid: [0; 16], first: Vec::new() },
            Frame::StatusRequest { req_id: u64::MAX },
            Frame::ConnClosed(ConnRef::Tcp(9)),
            Frame::ConnClosed(ConnRef::Rdma(u64::MAX)),
            Frame::StatusReply { req_id: 1, json: b"{}".to_vec() },
            Frame::StatusReply { req_id: 2, json: vec![b'x'; 200_000] },
            Frame::PassConn { conn_id: 7, client_guid: [3; 16], pass: sample_pass() },
            Frame::Passed { conn_id: u64::MAX, client_guid: [0; 16], pass: ConnPass { pending: Vec::new(), ..sample_pass() } },
            Frame::PassChannel { offer: sample_offer(), pass: sample_pass() },
        ]
    }

    fn sample_offer() -> ChannelOffer {
        ChannelOffer {
            channel_id: 12,
            client_guid: [4; 16],
            peer: Some("10.9.0.2:40000".parse().unwrap()),
            local: Some("10.9.0.1:445".parse().unwrap()),
            negotiated: smbdirect_rdma_proxy::proto::Negotiated { max_read_write_size: 1 << 20, max_send_size: 1364, max_fragmented_send: 1 << 20, max_fragmented_recv: 1 << 20 },
            first_message: Vec::new(),
        }
    }

    fn sample_pass() -> ConnPass {
        ConnPass {
            session_id: 0x0002_0000_0000_0011,
            negotiate_req: vec![0xFE, b'S', b'M', b'B', 1, 2, 3],
            negotiate_resp: vec![9; 300],
            credits: CreditSnapshot { low: 2, used: vec![false, true, false, false, true, false, false, false, false, true] },
            pending: crate::connpass::framed(b"session setup"),
        }
    }

    fn decode_all(dgs: &[Vec<u8>]) -> Frame {
        let mut r = Reassembler::new(MAX_STATUS_REPLY);
        for (i, d) in dgs.iter().enumerate() {
            match r.push(d).unwrap() {
                Some(f) => {
                    assert_eq!(i, dgs.len() - 1);
                    return f;
                }
                None => assert!(i < dgs.len() - 1),
            }
        }
        panic!("no frame");
    }

    #[test]
    fn every_frame_round_trips() {
        for f in samples() {
            let dgs = f.to_datagrams().unwrap();
            assert!(dgs.iter().all(|d| d.len() <= MAX_DATAGRAM));
            assert_eq!(decode_all(&dgs), f);
        }
        // A passed channel's state, as the owner reads it from ChannelPassed.
        let b = encode_pass(12, &[4; 16], &sample_pass()).unwrap();
        assert_eq!(decode_pass(&b).unwrap(), sample_pass());
        assert!(decode_pass(&b[..40]).is_err());
        // A channel pass fits one datagram like a connection pass.
        let f = Frame::PassChannel { offer: sample_offer(), pass: sample_pass() };
        assert_eq!(f.to_datagrams().unwrap().len(), 1);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut r = Reassembler::new(1 << 20);
        assert!(r.push(&[]).is_err());
        assert!(r.push(&[kind::SETUP, 0, 0, 0, 9, 0, 0, 0]).is_err(), "length mismatch");
        assert!(r.push(&[99, 0, 0, 0, 0, 0, 0, 0]).is_err(), "unknown kind");
        assert!(r.push(&[kind::CONN_CLOSED, 1, 0, 0, 0, 0, 0, 0]).is_err(), "split ConnClosed");
        assert!(r.push(&[kind::CONN_CLOSED, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(), "bad transport");
        // Every truncation of every sample fails cleanly.
        for f in samples() {
            let body = f.encode_body().unwrap();
            for n in 0..body.len().min(64) {
                let _ = Frame::decode_body(f.kind(), &body[..n]);
            }
        }
        // A reply over the bound.
        let mut small = Reassembler::new(100);
        let dgs = Frame::StatusReply { req_id: 1, json: vec![0; 200_000] }.to_datagrams().unwrap();
        assert!(small.push(&dgs[0]).is_err());
        // A pass whose credit window claims more ids than it carries.
        let mut body = Frame::PassConn { conn_id: 1, client_guid: [0; 16], pass: sample_pass() }.encode_body().unwrap();
        let at = 8 + 16 + 8 + 4 + 7 + 4 + 300 + 8;
        body[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes());
        body.truncate(at + 4 + 2);
        assert!(Frame::decode_body(kind::PASS_CONN, &body).is_err());
        assert!(pass_fits(&sample_pass()));
        assert!(!pass_fits(&ConnPass { pending: vec![0; MAX_PASS], ..sample_pass() }));
        // A handoff too big for one datagram is refused by the encoder.
        assert!(Frame::Handoff { conn_id: 1, client_guid: [0; 16], first: vec![0; MAX_DATAGRAM] }.to_datagrams().is_err());
    }

    #[test]
    fn handoff_brings_its_socket() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = seqpacket_pair().unwrap();
        let f = Frame::Handoff { conn_id: 5, client_guid: [1; 16], first: vec![1, 2, 3] };
        send(a.as_fd(), &f, Some(x.as_fd())).unwrap();
        assert!(send(a.as_fd(), &f, None).is_err(), "a handoff needs its fd");
        assert!(send(a.as_fd(), &Frame::StatusRequest { req_id: 1 }, Some(x.as_fd())).is_err());
        assert!(send(a.as_fd(), &Frame::PassConn { conn_id: 1, client_guid: [0; 16], pass: sample_pass() }, None).is_err(), "a pass needs its fd");
        let big = Frame::StatusReply { req_id: 3, json: vec![b'y'; 150_000] };
        std::thread::scope(|s| {
            let a = &a;
            let big2 = big.clone();
            let h = s.spawn(move || send(a.as_fd(), &big2, None).unwrap());
            let mut r = Reader::new(MAX_STATUS_REPLY);
            let (got, fd) = r.recv(&b).unwrap().unwrap();
            assert_eq!(got, f);
            assert!(fd.is_some());
            let (got, fd) = r.recv(&b).unwrap().unwrap();
            assert_eq!(got, big);
            assert!(fd.is_none());
            h.join().unwrap();
        });
        drop(a);
        assert!(Reader::new(1 << 20).recv(&b).unwrap().is_none());
    }

    /// A pass over one datagram (a client that pipelined past its binding)
    /// is split, its socket on the first datagram, and read back whole by a
    /// worker's reader; one over the bound is refused before anything is sent.
    #[test]
    fn a_large_pass_is_split_and_brings_its_socket() {
        let (a, b) = seqpacket_pair().unwrap();
        let (x, _y) = seqpacket_pair().unwrap();
        let mut pass = sample_pass();
        for _ in 0..5 {
            pass.pending.extend_from_slice(&crate::connpass::framed(&[0x5A; 60_000]));
        }
        assert!(pass_fits(&pass));
        let f = Frame::Passed { conn_id: 3, client_guid: [8; 16], pass: pass.clone() };
        assert!(f.to_datagrams().unwrap().len() > 4);
        let c = Frame::PassChannel { offer: sample_offer(), pass };
        std::thread::scope(|s| {
            let a = &a;
            let x = &x;
            let (f2, c2) = (f.clone(), c.clone());
            let h = s.spawn(move || {
                send(a.as_fd(), &f2, Some(x.as_fd())).unwrap();
                send(a.as_fd(), &c2, Some(x.as_fd())).unwrap();
            });
            let mut r = Reader::new(MAX_PASS + 4096);
            let (got, fd) = r.recv(&b).unwrap().unwrap();
            assert_eq!(got, f);
            assert!(fd.is_some());
            let (got, fd) = r.recv(&b).unwrap().unwrap();
            assert_eq!(got, c);
            assert!(fd.is_some());
            h.join().unwrap();
        });
        let huge = ConnPass { pending: vec![0; MAX_PASS + 1], ..sample_pass() };
        assert!(!pass_fits(&huge));
        assert!(Frame::Passed { conn_id: 1, client_guid: [0; 16], pass: huge }.to_datagrams().is_err());
        // An fd on a continuation datagram is refused.
        let dgs = f.to_datagrams().unwrap();
        let (p, q) = seqpacket_pair().unwrap();
        send_datagram(p.as_fd(), &dgs[0], Some(x.as_fd())).unwrap();
        send_datagram(p.as_fd(), &dgs[1], Some(x.as_fd())).unwrap();
        assert!(Reader::new(MAX_PASS + 4096).recv(&q).is_err());
    }
}
