//! The proxy <-> worker protocol (RDMA-DESIGN.md "Frames"): typed frames with
//! encode/decode pairs, MORE-flag splitting into datagrams and bounded
//! reassembly. Pure code: no sockets, no fds (see [`crate::fdpass`]).
//!
//! The datagram framing (8-byte header, MORE-flag splitting, bounded
//! reassembly) is [`crate::frame`], shared with the SMB server's supervisor
//! <-> worker protocol; this module defines the kinds and bodies. An fd
//! (Hello's pool memfd, ChannelOffer's channel socket) rides on the first
//! datagram only.

use smbdirect_transport::wire::{BufferDescriptorV1, BUFFER_DESCRIPTOR_V1_LEN};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Protocol version carried in [`Hello`]; a server refuses any other.
/// Version 2 added the slot range to `Hello`; version 3 the `RdmaSend` frame.
pub const PROTO_VERSION: u32 = 3;
pub use crate::frame::{FrameError, Header, FLAG_MORE, HEADER_LEN, MAX_DATAGRAM, MAX_FRAGMENT_BODY};
use crate::frame::Kinds;
/// Bytes a frame adds around its SMB2 message (ChannelOffer is the largest);
/// a receiver's reassembly bound is its message bound plus this.
pub const MAX_FRAME_OVERHEAD: usize = 256;
/// Most buffer descriptors one `Rdma` request may name. MS-SMB2 bounds the
/// channel info only by the message; cifs.ko sends one descriptor per MR.
pub const MAX_RDMA_DESCRIPTORS: usize = 256;
/// Most channels one `StatsReply` may carry.
pub const MAX_STATS_CHANNELS: usize = 4096;

/// Frame kinds. Control socket: 1..=6; channel socket: 16..=20.
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const CHANNEL_OFFER: u8 = 2;
    pub const STATS: u8 = 3;
    pub const STATS_REPLY: u8 = 4;
    pub const LISTENER: u8 = 5;
    pub const CHANNEL_PASSED: u8 = 6;
    pub const RECV: u8 = 16;
    pub const SEND: u8 = 17;
    pub const RDMA: u8 = 18;
    pub const RDMA_DONE: u8 = 19;
    pub const CLOSE: u8 = 20;
    pub const RDMA_SEND: u8 = 21;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The datagram framing (header, MORE splitting, reassembly bound).
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{what}: truncated (need {need} bytes, have {have})")]
    Truncated { what: &'static str, need: usize, have: usize },
    #[error("{what}: {extra} trailing bytes")]
    Trailing { what: &'static str, extra: usize },
    #[error("bad address family {0}")]
    BadAddressFamily(u8),
    #[error("bad boolean {0}")]
    BadBool(u8),
    #[error("bad RDMA direction {0}")]
    BadDirection(u8),
    #[error("{count} buffer descriptors (at most {MAX_RDMA_DESCRIPTORS})")]
    TooManyDescriptors { count: usize },
    #[error("{count} stats entries (at most {MAX_STATS_CHANNELS})")]
    TooManyStats { count: usize },
    #[error("text field of {len} bytes (at most {MAX_TEXT})")]
    TextTooLong { len: usize },
    #[error("text field is not UTF-8")]
    BadText,
}

/// Longest text field (device name, message) in a frame.
pub const MAX_TEXT: usize = 1024;

/// `Listener.status` values: why a device/port listens or not.
pub mod listener_status {
    pub const LISTENING: u32 = 0;
    /// No RDMA device, or the device has no usable port/address.
    pub const NO_DEVICE: u32 = 1;
    /// Registering memory failed: RLIMIT_MEMLOCK too low / no CAP_IPC_LOCK.
    pub const NO_MEMLOCK: u32 = 2;
    /// rdma_listen/bind said the port is in use.
    pub const PORT_IN_USE: u32 = 3;
    pub const OTHER: u32 = 4;
}

/// `Listener` (proxy -> server, any time): one device/port's listening
/// state, so that the server logs for every device and port that it
/// listens or why it cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerReport {
    /// Verbs device name (e.g. `rxe0`), empty when no device is concerned.
    pub device: String,
    /// The device's port number (1-based), 0 when not applicable.
    pub port_num: u8,
    /// The address and TCP-style port listened on (445, 5445).
    pub addr: Option<SocketAddr>,
    pub status: u32,
    /// Human-readable detail (the errno text, for example).
    pub message: String,
}

/// `Hello` (proxy -> server, with the pool memfd).
///
/// The proxy announces the whole pool (`slot_base` 0, `slot_count` every
/// slot); the supervisor forwards it to each worker with a range of its own,
/// and a worker allocates only slots `slot_base..slot_base + slot_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub pool_size: u64,
    pub slot_size: u32,
    /// First slot (index, in `slot_size` units) the receiver may allocate.
    pub slot_base: u32,
    /// Number of slots the receiver may allocate.
    pub slot_count: u32,
}

impl Hello {
    /// The proxy's Hello: this protocol version, every slot of the pool.
    pub fn whole_pool(pool_size: u64, slot_size: u32) -> Hello {
        let count = if slot_size == 0 { 0 } else { (pool_size / u64::from(slot_size)).min(u64::from(u32::MAX)) as u32 };
        Hello { version: PROTO_VERSION, pool_size, slot_size, slot_base: 0, slot_count: count }
    }

    /// The same pool narrowed to `count` slots from `base` (the supervisor's
    /// share for one worker).
    pub fn with_range(self, base: u32, count: u32) -> Hello {
        Hello { slot_base: base, slot_count: count, ..self }
    }
}

/// Limits negotiated by the SMB Direct layer for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    pub max_read_write_size: u32,
    /// The peer's max receive size: the largest SMB Direct send.
    pub max_send_size: u32,
    pub max_fragmented_send: u32,
    pub max_fragmented_recv: u32,
}

/// `ChannelOffer` (proxy -> server, with the channel socket fd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOffer {
    pub channel_id: u64,
    /// ClientGUID of the first NEGOTIATE (zero if none), for routing by client.
    pub client_guid: [u8; 16],
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    pub negotiated: Negotiated,
    /// The first SMB2 (or SMB1 upgrade) message: the worker replays it.
    pub first_message: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelStats {
    pub channel_id: u64,
    pub rdma_read: u64,
    pub rdma_write: u64,
    pub inline_sent: u64,
    pub inline_recv: u64,
}

/// Direction of an RDMA request, seen from the proxy's verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdmaDir {
    /// RDMA read from the client's buffers into the pool (SMB2 WRITE).
    ReadFromClient = 0,
    /// RDMA write from the pool to the client's buffers (SMB2 READ).
    WriteToClient = 1,
}

/// `Rdma` (worker -> proxy): move `len` bytes between the pool at
/// `pool_offset` and the client's buffer descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdmaRequest {
    pub req_id: u64,
    pub dir: RdmaDir,
    pub pool_offset: u64,
    pub len: u32,
    pub descriptors: Vec<BufferDescriptorV1>,
}

/// `RdmaDone.status` values.
pub mod rdma_status {
    pub const OK: u32 = 0;
    /// The request lied (sum of lengths != len, too many descriptors, out of
    /// the pool): nothing was posted.
    pub const BAD_REQUEST: u32 = 1;
    /// The RDMA operation failed on the wire (completion error, bad rkey).
    pub const REMOTE_ERROR: u32 = 2;
    /// The channel is going away; nothing was posted or the result is unknown.
    pub const CHANNEL_CLOSING: u32 = 3;
}

/// `Close.reason` values.
pub mod close_reason {
    pub const NORMAL: u32 = 0;
    /// The peer (SMB Direct client) disconnected.
    pub const PEER_GONE: u32 = 1;
    /// A protocol violation on this socket.
    pub const PROTOCOL: u32 = 2;
    /// The sender is shutting down.
    pub const SHUTDOWN: u32 = 3;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaDone {
    pub req_id: u64,
    pub status: u32,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    ChannelOffer(ChannelOffer),
    /// Server -> proxy: ask for the counters (`req_id` echoed in the reply).
    Stats { req_id: u64 },
    StatsReply { req_id: u64, channels: Vec<ChannelStats> },
    Listener(ListenerReport),
    /// Supervisor -> worker only (never the proxy), with the channel socket
    /// fd: a channel another worker took and passes on to this one (a
    /// binding of a session this worker owns). `offer` describes the channel
    /// as the proxy offered it (`first_message` empty); `state` is the SMB
    /// server's own record of the connection (its `connpass` state, opaque
    /// here). The proxy does not see the move: the channel socket's other end
    /// only changes process.
    ChannelPassed { offer: ChannelOffer, state: Vec<u8> },
    /// Proxy -> worker: one reassembled SMB2 message.
    Recv(Vec<u8>),
    /// Worker -> proxy: one SMB2 message, sent with invalidate of the token
    /// when given.
    Send { invalidate: Option<u32>, msg: Vec<u8> },
    Rdma(RdmaRequest),
    RdmaDone(RdmaDone),
    Close { reason: u32 },
    /// Worker -> proxy: an RDMA WRITE to the client (an SMB2 READ's data) and
    /// the SMB2 message that answers it, posted right behind the write on the
    /// same queue pair (reliable connection: the client sees the message only
    /// after the data landed), without waiting for the write to complete.
    /// Answered by `RdmaDone` for the slot. If the proxy refuses the request
    /// or the write fails, the message is not sent (or never arrives: a
    /// failed write breaks the queue pair) and `RdmaDone` says why.
    RdmaSend { req: RdmaRequest, invalidate: Option<u32>, msg: Vec<u8> },
}

/// The kinds as the framing sees them.
const KINDS: Kinds = Kinds { known: is_known_kind, splittable };

fn is_known_kind(k: u8) -> bool {
    matches!(k, kind::HELLO..=kind::CHANNEL_PASSED | kind::RECV..=kind::RDMA_SEND)
}

/// Whether frames of this kind may span datagrams (those carrying messages).
pub fn splittable(k: u8) -> bool {
    matches!(k, kind::CHANNEL_OFFER | kind::CHANNEL_PASSED | kind::STATS_REPLY | kind::RECV | kind::SEND | kind::RDMA_SEND)
}

impl Frame {
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::ChannelOffer(_) => kind::CHANNEL_OFFER,
            Frame::Stats { .. } => kind::STATS,
            Frame::StatsReply { .. } => kind::STATS_REPLY,
            Frame::Listener(_) => kind::LISTENER,
            Frame::ChannelPassed { .. } => kind::CHANNEL_PASSED,
            Frame::Recv(_) => kind::RECV,
            Frame::Send { .. } => kind::SEND,
            Frame::Rdma(_) => kind::RDMA,
            Frame::RdmaDone(_) => kind::RDMA_DONE,
            Frame::Close { .. } => kind::CLOSE,
            Frame::RdmaSend { .. } => kind::RDMA_SEND,
        }
    }

    /// Appends the body (no header) to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        match self {
            Frame::Hello(h) => {
                out.extend_from_slice(&h.version.to_le_bytes());
                out.extend_from_slice(&h.pool_size.to_le_bytes());
                out.extend_from_slice(&h.slot_size.to_le_bytes());
                out.extend_from_slice(&h.slot_base.to_le_bytes());
                out.extend_from_slice(&h.slot_count.to_le_bytes());
            }
            Frame::ChannelOffer(o) => put_offer(out, o),
            Frame::ChannelPassed { offer, state } => {
                let mut o = Vec::new();
                put_offer(&mut o, offer);
                let n = u32::try_from(o.len()).map_err(|_| FrameError::TooLarge { size: o.len(), limit: u32::MAX as usize })?;
                out.extend_from_slice(&n.to_le_bytes());
                out.extend_from_slice(&o);
                out.extend_from_slice(state);
            }
            Frame::Stats { req_id } => out.extend_from_slice(&req_id.to_le_bytes()),
            Frame::StatsReply { req_id, channels } => {
                if channels.len() > MAX_STATS_CHANNELS {
                    return Err(ProtoError::TooManyStats { count: channels.len() });
                }
                out.extend_from_slice(&req_id.to_le_bytes());
                out.extend_from_slice(&(channels.len() as u32).to_le_bytes());
                for c in channels {
                    for v in [c.channel_id, c.rdma_read, c.rdma_write, c.inline_sent, c.inline_recv] {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            Frame::Listener(l) => {
                put_text(out, &l.device)?;
                out.push(l.port_num);
                put_addr(out, l.addr);
                out.extend_from_slice(&l.status.to_le_bytes());
                put_text(out, &l.message)?;
            }
            Frame::Recv(msg) => out.extend_from_slice(msg),
            Frame::Send { invalidate, msg } => {
                out.extend_from_slice(&invalidate.unwrap_or(0).to_le_bytes());
                out.push(u8::from(invalidate.is_some()));
                out.extend_from_slice(msg);
            }
            Frame::Rdma(r) => put_rdma(out, r)?,
            Frame::RdmaSend { req, invalidate, msg } => {
                put_rdma(out, req)?;
                out.extend_from_slice(&invalidate.unwrap_or(0).to_le_bytes());
                out.push(u8::from(invalidate.is_some()));
                out.extend_from_slice(msg);
            }
            Frame::RdmaDone(d) => {
                out.extend_from_slice(&d.req_id.to_le_bytes());
                out.extend_from_slice(&d.status.to_le_bytes());
                out.extend_from_slice(&d.bytes.to_le_bytes());
            }
            Frame::Close { reason } => out.extend_from_slice(&reason.to_le_bytes()),
        }
        Ok(())
    }

    /// Decodes a whole (reassembled) body of the given kind.
    /// (See [`put_rdma`] for the RDMA request's layout.)
    pub fn decode_body(k: u8, body: &[u8]) -> Result<Frame, ProtoError> {
        let f = match k {
            kind::HELLO => {
                let mut r = Rd::new(body, "Hello");
                let f = Frame::Hello(Hello {
                    version: r.u32()?,
                    pool_size: r.u64()?,
                    slot_size: r.u32()?,
                    slot_base: r.u32()?,
                    slot_count: r.u32()?,
                });
                r.end()?;
                f
            }
            kind::CHANNEL_OFFER => Frame::ChannelOffer(get_offer(body)?),
            kind::CHANNEL_PASSED => {
                let mut r = Rd::new(body, "ChannelPassed");
                let n = r.u32()? as usize;
                let offer = get_offer(r.take(n)?)?;
                Frame::ChannelPassed { offer, state: r.rest().to_vec() }
            }
            kind::STATS => {
                let mut r = Rd::new(body, "Stats");
                let f = Frame::Stats { req_id: r.u64()? };
                r.end()?;
                f
            }
            kind::STATS_REPLY => {
                let mut r = Rd::new(body, "StatsReply");
                let req_id = r.u64()?;
                let count = r.u32()? as usize;
                if count > MAX_STATS_CHANNELS {
                    return Err(ProtoError::TooManyStats { count });
                }
                let mut channels = Vec::with_capacity(count);
                for _ in 0..count {
                    channels.push(ChannelStats {
                        channel_id: r.u64()?,
                        rdma_read: r.u64()?,
                        rdma_write: r.u64()?,
                        inline_sent: r.u64()?,
                        inline_recv: r.u64()?,
                    });
                }
                r.end()?;
                Frame::StatsReply { req_id, channels }
            }
            kind::LISTENER => {
                let mut r = Rd::new(body, "Listener");
                let device = get_text(&mut r)?;
                let port_num = r.u8()?;
                let addr = get_addr(&mut r)?;
                let status = r.u32()?;
                let message = get_text(&mut r)?;
                r.end()?;
                Frame::Listener(ListenerReport { device, port_num, addr, status, message })
            }
            kind::RECV => Frame::Recv(body.to_vec()),
            kind::SEND => {
                let mut r = Rd::new(body, "Send");
                let token = r.u32()?;
                let has = r.u8()?;
                let invalidate = match has {
                    0 => None,
                    1 => Some(token),
                    b => return Err(ProtoError::BadBool(b)),
                };
                Frame::Send { invalidate, msg: r.rest().to_vec() }
            }
            kind::RDMA => {
                let mut r = Rd::new(body, "Rdma");
                let req = get_rdma(&mut r)?;
                r.end()?;
                Frame::Rdma(req)
            }
            kind::RDMA_SEND => {
                let mut r = Rd::new(body, "RdmaSend");
                let req = get_rdma(&mut r)?;
                let token = r.u32()?;
                let invalidate = match r.u8()? {
                    0 => None,
                    1 => Some(token),
                    b => return Err(ProtoError::BadBool(b)),
                };
                Frame::RdmaSend { req, invalidate, msg: r.rest().to_vec() }
            }
            kind::RDMA_DONE => {
                let mut r = Rd::new(body, "RdmaDone");
                let f = Frame::RdmaDone(RdmaDone { req_id: r.u64()?, status: r.u32()?, bytes: r.u64()? });
                r.end()?;
                f
            }
            kind::CLOSE => {
                let mut r = Rd::new(body, "Close");
                let f = Frame::Close { reason: r.u32()? };
                r.end()?;
                f
            }
            other => return Err(FrameError::UnknownKind(other).into()),
        };
        Ok(f)
    }

    /// Encodes the frame as one or more datagrams (header included), splitting
    /// with MORE where the body exceeds one datagram.
    pub fn to_datagrams(&self) -> Result<Vec<Vec<u8>>, ProtoError> {
        let mut body = Vec::new();
        self.encode_body(&mut body)?;
        split_body(self.kind(), &body)
    }
}

/// Splits a body of kind `k` into datagrams. An empty body still makes one.
pub fn split_body(k: u8, body: &[u8]) -> Result<Vec<Vec<u8>>, ProtoError> {
    Ok(crate::frame::split_body(k, body, KINDS)?)
}

/// Reassembles datagrams into frames, bounding the body size.
#[derive(Debug)]
pub struct Reassembler(crate::frame::Reassembler);

impl Reassembler {
    /// `limit` bounds a frame's whole body (a message bound plus
    /// [`MAX_FRAME_OVERHEAD`]).
    pub fn new(limit: usize) -> Self {
        Reassembler(crate::frame::Reassembler::new(limit, KINDS))
    }

    /// Whether a split frame is in progress (its first datagram was seen).
    pub fn in_progress(&self) -> bool {
        self.0.in_progress()
    }

    /// Feeds one datagram; returns a frame when one is complete. After an
    /// error the channel must be dropped (the state is reset).
    pub fn push(&mut self, datagram: &[u8]) -> Result<Option<Frame>, ProtoError> {
        match self.0.push(datagram)? {
            None => Ok(None),
            Some((k, body)) => Frame::decode_body(k, &body).map(Some),
        }
    }
}

fn put_offer(out: &mut Vec<u8>, o: &ChannelOffer) {
    out.extend_from_slice(&o.channel_id.to_le_bytes());
    out.extend_from_slice(&o.client_guid);
    put_addr(out, o.peer);
    put_addr(out, o.local);
    let n = &o.negotiated;
    for v in [n.max_read_write_size, n.max_send_size, n.max_fragmented_send, n.max_fragmented_recv] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&o.first_message);
}

fn get_offer(body: &[u8]) -> Result<ChannelOffer, ProtoError> {
    let mut r = Rd::new(body, "ChannelOffer");
    let channel_id = r.u64()?;
    let client_guid: [u8; 16] = r.array()?;
    let peer = get_addr(&mut r)?;
    let local = get_addr(&mut r)?;
    let negotiated = Negotiated {
        max_read_write_size: r.u32()?,
        max_send_size: r.u32()?,
        max_fragmented_send: r.u32()?,
        max_fragmented_recv: r.u32()?,
    };
    Ok(ChannelOffer { channel_id, client_guid, peer, local, negotiated, first_message: r.rest().to_vec() })
}

fn put_addr(out: &mut Vec<u8>, a: Option<SocketAddr>) {
    // family u8 (0 none, 4, 6), port u16, address 16 bytes, scope id u32
    let mut b = [0u8; ADDR_LEN];
    match a {
        None => {}
        Some(SocketAddr::V4(v4)) => {
            b[0] = 4;
            b[1..3].copy_from_slice(&v4.port().to_le_bytes());
            b[3..7].copy_from_slice(&v4.ip().octets());
        }
        Some(SocketAddr::V6(v6)) => {
            b[0] = 6;
            b[1..3].copy_from_slice(&v6.port().to_le_bytes());
            b[3..19].copy_from_slice(&v6.ip().octets());
            b[19..23].copy_from_slice(&v6.scope_id().to_le_bytes());
        }
    }
    out.extend_from_slice(&b);
}

const ADDR_LEN: usize = 23;

fn put_text(out: &mut Vec<u8>, s: &str) -> Result<(), ProtoError> {
    if s.len() > MAX_TEXT {
        return Err(ProtoError::TextTooLong { len: s.len() });
    }
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn get_text(r: &mut Rd<'_>) -> Result<String, ProtoError> {
    let len = r.u16()? as usize;
    if len > MAX_TEXT {
        return Err(ProtoError::TextTooLong { len });
    }
    String::from_utf8(r.take(len)?.to_vec()).map_err(|_| ProtoError::BadText)
}

fn get_addr(r: &mut Rd<'_>) -> Result<Option<SocketAddr>, ProtoError> {
    let b: [u8; ADDR_LEN] = r.array()?;
    let port = u16::from_le_bytes([b[1], b[2]]);
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&b[3..19]);
    let scope = u32::from_le_bytes([b[19], b[20], b[21], b[22]]);
    match b[0] {
        0 => Ok(None),
        4 => Ok(Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]), port)))),
        6 => Ok(Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope)))),
        f => Err(ProtoError::BadAddressFamily(f)),
    }
}

/// A bounds-checked little-endian reader.
struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Rd<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Rd { buf, pos: 0, what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(ProtoError::Truncated { what: self.what, need: n, have });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    fn end(&self) -> Result<(), ProtoError> {
        if self.pos != self.buf.len() {
            return Err(ProtoError::Trailing { what: self.what, extra: self.buf.len() - self.pos });
        }
        Ok(())
    }
}

/// An RDMA request's body: req_id u64, dir u8, pool_offset u64, len u32, count u16,
/// then count BufferDescriptorV1 (the whole `Rdma` frame, the head of `RdmaSend`).
fn put_rdma(out: &mut Vec<u8>, r: &RdmaRequest) -> Result<(), ProtoError> {
    if r.descriptors.len() > MAX_RDMA_DESCRIPTORS {
        return Err(ProtoError::TooManyDescriptors { count: r.descriptors.len() });
    }
    out.extend_from_slice(&r.req_id.to_le_bytes());
    out.push(r.dir as u8);
    out.extend_from_slice(&r.pool_offset.to_le_bytes());
    out.extend_from_slice(&r.len.to_le_bytes());
    out.extend_from_slice(&(r.descriptors.len() as u16).to_le_bytes());
    for d in &r.descriptors {
        out.extend_from_slice(&d.to_bytes());
    }
    Ok(())
}

fn get_rdma(r: &mut Rd<'_>) -> Result<RdmaRequest, ProtoError> {
    let req_id = r.u64()?;
    let dir = match r.u8()? {
        0 => RdmaDir::ReadFromClient,
        1 => RdmaDir::WriteToClient,
        d => return Err(ProtoError::BadDirection(d)),
    };
    let pool_offset = r.u64()?;
    let len = r.u32()?;
    let count = r.u16()? as usize;
    if count > MAX_RDMA_DESCRIPTORS {
        return Err(ProtoError::TooManyDescriptors { count });
    }
    let list = r.take(count * BUFFER_DESCRIPTOR_V1_LEN)?;
    let descriptors = BufferDescriptorV1::iter_list(list)
        .map_err(|_| ProtoError::Truncated { what: "Rdma descriptors", need: 0, have: list.len() })?
        .collect();
    Ok(RdmaRequest { req_id, dir, pool_offset, len, descriptors })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello::whole_pool(64 << 20, 1 << 20)),
            Frame::Hello(Hello::whole_pool(64 << 20, 1 << 20).with_range(32, 16)),
            Frame::ChannelOffer(ChannelOffer {
                channel_id: 7,
                client_guid: [0xAB; 16],
                peer: Some("10.9.0.2:40000".parse().unwrap()),
                local: Some("[fe80::1%3]:445".parse().unwrap()),
                negotiated: Negotiated {
                    max_read_write_size: 1 << 20,
                    max_send_size: 1364,
                    max_fragmented_send: 1 << 20,
                    max_fragmented_recv: 1 << 20,
                },
                first_message: b"\xfeSMB negotiate".to_vec(),
            }),
            Frame::ChannelOffer(ChannelOffer {
                channel_id: 0,
                client_guid: [0; 16],
                peer: None,
                local: None,
                negotiated: Negotiated::default(),
                first_message: Vec::new(),
            }),
            Frame::ChannelPassed {
                offer: ChannelOffer {
                    channel_id: 9,
                    client_guid: [0x5A; 16],
                    peer: Some("10.9.0.2:40001".parse().unwrap()),
                    local: None,
                    negotiated: Negotiated { max_read_write_size: 1 << 20, max_send_size: 1364, max_fragmented_send: 1 << 20, max_fragmented_recv: 1 << 20 },
                    first_message: Vec::new(),
                },
                state: vec![3; 70_000],
            },
            Frame::Stats { req_id: 3 },
            Frame::StatsReply {
                req_id: 3,
                channels: vec![ChannelStats { channel_id: 1, rdma_read: 2, rdma_write: 3, inline_sent: 4, inline_recv: 5 }],
            },
            Frame::Listener(ListenerReport {
                device: "rxe0".into(),
                port_num: 1,
                addr: Some("10.9.0.1:445".parse().unwrap()),
                status: listener_status::LISTENING,
                message: String::new(),
            }),
            Frame::Listener(ListenerReport {
                device: String::new(),
                port_num: 0,
                addr: None,
                status: listener_status::NO_DEVICE,
                message: "no RDMA device".into(),
            }),
            Frame::Recv(vec![1, 2, 3]),
            Frame::Recv(vec![9; 200_000]),
            Frame::Send { invalidate: None, msg: vec![4; 10] },
            Frame::Send { invalidate: Some(0xdead_beef), msg: vec![5; 70_000] },
            Frame::Rdma(RdmaRequest {
                req_id: 11,
                dir: RdmaDir::WriteToClient,
                pool_offset: 4096,
                len: 12288,
                descriptors: vec![
                    BufferDescriptorV1 { offset: 0x1000, token: 0x42, length: 8192 },
                    BufferDescriptorV1 { offset: 0x9000, token: 0x43, length: 4096 },
                ],
            }),
            Frame::Rdma(RdmaRequest {
                req_id: 12,
                dir: RdmaDir::ReadFromClient,
                pool_offset: 0,
                len: 0,
                descriptors: vec![],
            }),
            Frame::RdmaDone(RdmaDone { req_id: 11, status: rdma_status::OK, bytes: 12288 }),
            Frame::Close { reason: close_reason::PEER_GONE },
            Frame::RdmaSend {
                req: RdmaRequest {
                    req_id: 13,
                    dir: RdmaDir::WriteToClient,
                    pool_offset: 8192,
                    len: 16384,
                    descriptors: vec![BufferDescriptorV1 { offset: 0x2000, token: 0x44, length: 16384 }],
                },
                invalidate: Some(0x44),
                msg: vec![6; 80],
            },
            Frame::RdmaSend {
                req: RdmaRequest { req_id: 14, dir: RdmaDir::WriteToClient, pool_offset: 0, len: 0, descriptors: vec![] },
                invalidate: None,
                msg: vec![7; 70_000],
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_through_datagrams() {
        for f in samples() {
            let dgs = f.to_datagrams().unwrap();
            assert!(dgs.iter().all(|d| d.len() <= MAX_DATAGRAM));
            let mut r = Reassembler::new(1 << 20);
            let mut got = None;
            for (i, d) in dgs.iter().enumerate() {
                let out = r.push(d).unwrap();
                if i + 1 < dgs.len() {
                    assert!(out.is_none());
                    assert!(r.in_progress());
                } else {
                    got = out;
                }
            }
            assert_eq!(got.as_ref(), Some(&f));
            assert!(!r.in_progress());
        }
    }

    #[test]
    fn big_message_is_split_with_more() {
        let f = Frame::Recv(vec![7; 3 * MAX_FRAGMENT_BODY + 1]);
        let dgs = f.to_datagrams().unwrap();
        assert_eq!(dgs.len(), 4);
        for d in &dgs[..3] {
            assert_eq!(d[1], FLAG_MORE);
            assert_eq!(d.len(), MAX_DATAGRAM);
        }
        assert_eq!(dgs[3][1], 0);
        assert_eq!(dgs[3].len(), HEADER_LEN + 1);
    }

    #[test]
    fn reassembly_is_bounded() {
        let f = Frame::Recv(vec![7; 100_000]);
        let dgs = f.to_datagrams().unwrap();
        let mut r = Reassembler::new(80_000);
        assert_eq!(r.push(&dgs[0]).unwrap(), None);
        assert_eq!(r.push(&dgs[1]), Err(ProtoError::Frame(FrameError::TooLarge { size: 100_000, limit: 80_000 })));
        // One datagram alone over the bound.
        let mut r = Reassembler::new(10);
        assert!(matches!(r.push(&Frame::Recv(vec![0; 11]).to_datagrams().unwrap()[0]), Err(ProtoError::Frame(FrameError::TooLarge { .. }))));
    }

    #[test]
    fn malformed_datagrams_are_typed_errors() {
        let mut r = Reassembler::new(1 << 20);
        assert!(matches!(r.push(&[16, 0, 0]), Err(ProtoError::Frame(FrameError::Truncated { .. }))));
        assert_eq!(r.push(&[99, 0, 0, 0, 0, 0, 0, 0]), Err(ProtoError::Frame(FrameError::UnknownKind(99))));
        assert_eq!(r.push(&[16, 2, 0, 0, 0, 0, 0, 0]), Err(ProtoError::Frame(FrameError::BadFlags(2))));
        assert_eq!(r.push(&[16, 0, 1, 0, 0, 0, 0, 0]), Err(ProtoError::Frame(FrameError::Reserved(1))));
        assert_eq!(r.push(&[16, 0, 0, 0, 5, 0, 0, 0, 1]), Err(ProtoError::Frame(FrameError::LengthMismatch { len: 5, body: 1 })));
        // Non-message frames may not be split.
        assert_eq!(r.push(&[kind::CLOSE, 1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]), Err(ProtoError::Frame(FrameError::NotSplittable(kind::CLOSE))));
        // A continuation of another kind.
        let mut d = Frame::Recv(vec![1; 70_000]).to_datagrams().unwrap();
        d[1][0] = kind::SEND;
        assert_eq!(r.push(&d[0]).unwrap(), None);
        assert_eq!(r.push(&d[1]), Err(ProtoError::Frame(FrameError::Interleaved { expected: kind::RECV, got: kind::SEND })));
        // Trailing bytes in a fixed frame.
        assert!(matches!(r.push(&[kind::CLOSE, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]), Err(ProtoError::Trailing { .. })));
        // Descriptor count past the bound, and past the body.
        let mut body = vec![0u8; 8 + 1 + 8 + 4];
        body.extend_from_slice(&(MAX_RDMA_DESCRIPTORS as u16 + 1).to_le_bytes());
        assert!(matches!(Frame::decode_body(kind::RDMA, &body), Err(ProtoError::TooManyDescriptors { .. })));
        let mut body = vec![0u8; 8 + 1 + 8 + 4];
        body.extend_from_slice(&2u16.to_le_bytes());
        body.extend_from_slice(&[0; 16]);
        assert!(matches!(Frame::decode_body(kind::RDMA, &body), Err(ProtoError::Truncated { .. })));
        assert_eq!(Frame::decode_body(kind::SEND, &[0, 0, 0, 0, 2]), Err(ProtoError::BadBool(2)));
        // Text fields: bounded and UTF-8.
        assert_eq!(Frame::decode_body(kind::LISTENER, &[0xFF, 0xFF]), Err(ProtoError::TextTooLong { len: 0xFFFF }));
        assert_eq!(Frame::decode_body(kind::LISTENER, &[1, 0, 0xFF]), Err(ProtoError::BadText));
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut r = Reassembler::new(4096);
            let _ = r.push(&data);
            for k in 0..=255u8 {
                let _ = Frame::decode_body(k, &data);
            }
        }

        #[test]
        fn datagram_stream_never_panics(dgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut r = Reassembler::new(256);
            for d in &dgs {
                let mut d = d.clone();
                // Make some of them well-formed headers so reassembly is exercised.
                if d.len() >= HEADER_LEN {
                    let len = (d.len() - HEADER_LEN) as u32;
                    d[4..8].copy_from_slice(&len.to_le_bytes());
                    d[2] = 0;
                    d[3] = 0;
                    d[1] &= FLAG_MORE;
                }
                let _ = r.push(&d);
            }
        }

        #[test]
        fn send_round_trips(tok in proptest::option::of(any::<u32>()), msg in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let f = Frame::Send { invalidate: tok, msg };
            let dgs = f.to_datagrams().unwrap();
            let mut r = Reassembler::new(1 << 20);
            let mut got = None;
            for d in &dgs { got = r.push(d).unwrap(); }
            prop_assert_eq!(got, Some(f));
        }
    }
}
