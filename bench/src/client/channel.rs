//! One channel (one transport connection) of an SMB2 client session.
//!
//! The client library never touches sockets or verbs itself: it hands each fully built
//! SMB2 message (already signed or sealed) to a [`Channel`] and gets whole SMB2 messages
//! back. A channel is shared between the thread that submits requests and the thread
//! that receives responses, so every method takes `&self` (a channel does its own
//! locking) and the trait requires `Send + Sync`.
//!
//! - [`TcpChannel`]: Direct TCP (MS-SMB2 2.1), each message behind a 4-byte header
//!   (`smbdirect_transport::tcp`).
//! - SMB Direct (MS-SMBD) over verbs lives in `rdma*.rs` behind the `verbs` feature.
//!
//! # RDMA buffers
//! For READ/WRITE with Channel `SMB2_CHANNEL_RDMA_V1[_INVALIDATE]` the client registers
//! its own buffer and sends the resulting [`BufferDescriptorV1`] list in the request.
//! [`Channel::register`] takes the buffer by value, so the memory the peer may read or
//! write stays owned by the channel (and cannot move or be freed) until
//! [`Channel::deregister`] hands it back. With `_INVALIDATE` the server may already have
//! invalidated the remote key by `SEND_WITH_INVALIDATE`; `deregister` must cope with that.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use smbdirect_transport::tcp::{self, FrameError};
pub use smbdirect_transport::wire::BufferDescriptorV1;
use thiserror::Error;

/// What went wrong on a channel. Every variant ends the usefulness of the channel
/// except [`ChannelError::Timeout`], after which the caller may wait again.
#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("timed out after {0:?} waiting for the server")]
    Timeout(Duration),
    #[error("the server closed the connection")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("bad framing from the server: {0}")]
    Frame(#[from] FrameError),
    #[error("message of {len} bytes is larger than this channel's limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("this channel has no RDMA (register/deregister need an SMB Direct channel)")]
    NotRdma,
    #[error("unknown registration handle {0}")]
    UnknownHandle(u64),
    #[error("SMB Direct: {0}")]
    Rdma(String),
}

/// A registered buffer as the client puts it into a READ or WRITE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The descriptors for the request's channel info (one per memory region).
    pub descriptors: Vec<BufferDescriptorV1>,
    /// The handle to give to [`Channel::deregister`].
    pub handle: u64,
}

/// Direction the peer moves data through a registered buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdmaAccess {
    /// SMB2 READ: the server RDMA-writes into our buffer.
    PeerWrites,
    /// SMB2 WRITE: the server RDMA-reads from our buffer.
    PeerReads,
}

/// Sizes a channel can carry; the client uses them to size requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Largest SMB2 message (request) the channel sends.
    pub max_send: usize,
    /// Largest SMB2 message the channel accepts from the server.
    pub max_recv: usize,
    /// Largest buffer one [`Channel::register`] accepts (0 when not RDMA).
    pub max_rdma: usize,
}

/// What an SMB Direct channel moved, as the client saw it: the SMB Direct messages it
/// sent and received (inline bytes: SMB2 headers, and payload that did not go by RDMA)
/// and how many of its registrations the server invalidated remotely.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RdmaStats {
    pub messages_sent: u64,
    pub messages_received: u64,
    /// SMB Direct payload bytes sent in SEND messages (all of it inline).
    pub inline_sent: u64,
    /// SMB Direct payload bytes received in SEND messages.
    pub inline_recv: u64,
    /// Registrations handed to the server (one per RDMA READ/WRITE request).
    pub registrations: u64,
    /// Of those, how many keys the server invalidated (Send-With-Invalidate).
    pub remote_invalidations: u64,
}

/// One transport connection carrying SMB2 messages.
pub trait Channel: Send + Sync {
    /// Sends one SMB2 message (or transform/compound as one unit), whole.
    fn send(&self, msg: &[u8], timeout: Duration) -> Result<(), ChannelError>;
    /// Receives one SMB2 message. [`ChannelError::Timeout`] if none arrived within
    /// `timeout` (the channel stays usable: a partial message is kept for the next call).
    fn recv(&self, timeout: Duration) -> Result<Vec<u8>, ChannelError>;
    /// True for SMB Direct channels (READ/WRITE may use RDMA_V1 descriptors).
    fn is_rdma(&self) -> bool;
    /// Size limits of this channel.
    fn limits(&self) -> ChannelLimits;
    /// Registers `buf` for the peer to read or write; the channel keeps it until
    /// [`Channel::deregister`].
    fn register(&self, buf: Vec<u8>, access: RdmaAccess) -> Result<Registration, ChannelError> {
        let _ = (buf, access);
        Err(ChannelError::NotRdma)
    }
    /// Ends a registration and returns the buffer (holding what the peer wrote).
    fn deregister(&self, handle: u64) -> Result<Vec<u8>, ChannelError> {
        let _ = handle;
        Err(ChannelError::NotRdma)
    }
    /// Registers `bufs` once for the life of a pool (replacing an earlier pool with no
    /// buffer lent): [`Channel::pool_register`] then lends entry `i` to one request
    /// without registering memory again. The bytes stay the channel's (the benchmark does
    /// not look at what the server wrote).
    fn pool_init(&self, bufs: Vec<Vec<u8>>) -> Result<(), ChannelError> {
        let _ = bufs;
        Err(ChannelError::NotRdma)
    }
    /// Lends pool entry `index` (its first `len` bytes) for the peer to read or write.
    fn pool_register(&self, index: usize, len: usize, access: RdmaAccess) -> Result<Registration, ChannelError> {
        let _ = (index, len, access);
        Err(ChannelError::NotRdma)
    }
    /// Ends the loan of pool entry `index` once its request completed: the key the
    /// request carried is no longer valid afterwards.
    fn pool_release(&self, index: usize) -> Result<(), ChannelError> {
        let _ = index;
        Err(ChannelError::NotRdma)
    }
    /// Whether the server may invalidate this channel's registrations remotely
    /// (Channel RDMA_V1_INVALIDATE); false means use RDMA_V1.
    fn supports_remote_invalidate(&self) -> bool {
        false
    }
    /// Counters of an SMB Direct channel (None for TCP).
    fn rdma_stats(&self) -> Option<RdmaStats> {
        None
    }
    /// Why messages accepted by [`Channel::send`] still wait to go out, if the peer is
    /// what holds them (SMB Direct: no send credit granted); None when nothing waits.
    fn stalled(&self) -> Option<String> {
        None
    }
    /// Closes the connection; a blocked [`Channel::recv`] returns [`ChannelError::Closed`]
    /// or an I/O error soon after.
    fn close(&self);
    /// Human-readable name of the peer (for logs and errors).
    fn peer(&self) -> String;
}

/// Direct TCP channel.
pub struct TcpChannel {
    peer: SocketAddr,
    writer: Mutex<TcpStream>,
    reader: Mutex<RecvState>,
    max_recv: usize,
}

struct RecvState {
    stream: TcpStream,
    hdr: [u8; tcp::HEADER_LEN],
    hdr_got: usize,
    body: Vec<u8>,
    body_got: usize,
    /// Length of the message being received, once its header is complete.
    len: Option<usize>,
}

/// Default: 8 MiB of payload plus headers, the largest READ/WRITE the bench issues.
pub const DEFAULT_MAX_RECV: usize = 8 * 1024 * 1024 + 64 * 1024;

impl TcpChannel {
    /// Connects to `addr` within `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ChannelError> {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ChannelError::Timeout(timeout),
            _ => ChannelError::Io(e),
        })?;
        Self::from_stream(stream, DEFAULT_MAX_RECV)
    }

    /// Wraps a connected stream; messages larger than `max_recv` are refused.
    pub fn from_stream(stream: TcpStream, max_recv: usize) -> Result<Self, ChannelError> {
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let rd = stream.try_clone()?;
        Ok(TcpChannel {
            peer,
            writer: Mutex::new(stream),
            reader: Mutex::new(RecvState {
                stream: rd,
                hdr: [0; tcp::HEADER_LEN],
                hdr_got: 0,
                body: Vec::new(),
                body_got: 0,
                len: None,
            }),
            max_recv: max_recv.min(tcp::MAX_FRAME_LEN),
        })
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl RecvState {
    /// One `read` into `dst`, waiting no later than `deadline`.
    fn read_some(&mut self, deadline: Instant, timeout: Duration, which: bool) -> Result<usize, ChannelError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ChannelError::Timeout(timeout));
        }
        self.stream.set_read_timeout(Some(left))?;
        let r = if which {
            let got = self.hdr_got;
            self.stream.read(&mut self.hdr[got..])
        } else {
            let got = self.body_got;
            self.stream.read(&mut self.body[got..])
        };
        match r {
            Ok(0) => Err(ChannelError::Closed),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) if timed_out(&e) => Err(ChannelError::Timeout(timeout)),
            Err(e) => Err(e.into()),
        }
    }
}

impl Channel for TcpChannel {
    fn send(&self, msg: &[u8], timeout: Duration) -> Result<(), ChannelError> {
        if msg.len() > tcp::MAX_FRAME_LEN {
            return Err(ChannelError::TooLarge { len: msg.len(), limit: tcp::MAX_FRAME_LEN });
        }
        let hdr = tcp::encode_header(msg.len())?;
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        w.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut bufs = [IoSlice::new(&hdr), IoSlice::new(msg)];
        let mut slices: &mut [IoSlice<'_>] = &mut bufs;
        while !slices.is_empty() {
            match w.write_vectored(slices) {
                Ok(0) => return Err(ChannelError::Closed),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A partial frame cannot be taken back: the stream is unusable now.
                Err(e) if timed_out(&e) => {
                    let _ = w.shutdown(Shutdown::Both);
                    return Err(ChannelError::Timeout(timeout));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn recv(&self, timeout: Duration) -> Result<Vec<u8>, ChannelError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match st.len {
                None => {
                    let n = st.read_some(deadline, timeout, true)?;
                    st.hdr_got += n;
                    if st.hdr_got == tcp::HEADER_LEN {
                        let len = tcp::parse_header(st.hdr, self.max_recv)?;
                        st.hdr_got = 0;
                        st.len = Some(len);
                        st.body = vec![0; len];
                        st.body_got = 0;
                    }
                }
                Some(len) => {
                    if st.body_got == len {
                        st.len = None;
                        return Ok(std::mem::take(&mut st.body));
                    }
                    let n = st.read_some(deadline, timeout, false)?;
                    st.body_got += n;
                }
            }
        }
    }

    fn is_rdma(&self) -> bool {
        false
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits { max_send: tcp::MAX_FRAME_LEN, max_recv: self.max_recv, max_rdma: 0 }
    }

    fn close(&self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.shutdown(Shutdown::Both);
    }

    fn peer(&self) -> String {
        format!("tcp://{}", self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpChannel, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpChannel::connect(l.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn frames_round_trip_and_partial_messages_survive_timeouts() {
        let (c, mut s) = pair();
        c.send(b"hello", Duration::from_secs(5)).unwrap();
        let mut got = [0u8; 9];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\0\0\0\x05hello");
        // Half a header and a few body bytes, then a timeout, then the rest.
        s.write_all(&[0, 0]).unwrap();
        assert!(matches!(c.recv(Duration::from_millis(50)), Err(ChannelError::Timeout(_))));
        s.write_all(&[0, 3, b'a']).unwrap();
        assert!(matches!(c.recv(Duration::from_millis(50)), Err(ChannelError::Timeout(_))));
        s.write_all(b"bc").unwrap();
        assert_eq!(c.recv(Duration::from_secs(5)).unwrap(), b"abc");
        assert!(matches!(c.register(vec![0; 4], RdmaAccess::PeerReads), Err(ChannelError::NotRdma)));
    }

    #[test]
    fn bad_frames_and_close_are_errors() {
        let (c, mut s) = pair();
        s.write_all(&[0xfe, 0, 0, 1]).unwrap();
        assert!(matches!(c.recv(Duration::from_secs(5)), Err(ChannelError::Frame(FrameError::BadZeroByte(0xfe)))));
        let (c, mut s) = pair();
        s.write_all(&[0, 0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(c.recv(Duration::from_secs(5)), Err(ChannelError::Frame(FrameError::TooLarge { .. }))));
        let (c, s) = pair();
        drop(s);
        assert!(matches!(c.recv(Duration::from_secs(5)), Err(ChannelError::Closed)));
    }
}
