//! The seam between the SMB2 core and whatever carries its messages.
//!
//! A connection is served over any transport that delivers whole SMB2
//! messages (Direct TCP now; an SMB Direct channel later). Outgoing messages
//! are built in an [`OutBuf`] that reserves `HEADROOM` bytes in front, so the
//! transport framing and an encryption TRANSFORM header are written in place
//! and a READ's payload, read from the file straight into the buffer, is never
//! copied again on its way out.

use smbdirect_transport::wire::BufferDescriptorV1;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Room for a 4-byte transport header and the 52-byte TRANSFORM header.
pub const FRAME_ROOM: usize = 4;
pub const TRANSFORM_ROOM: usize = 52;
pub const HEADROOM: usize = FRAME_ROOM + TRANSFORM_ROOM;

/// An outgoing message: `buf[start..]` is what goes on the wire after the
/// transport's own header, which the transport writes into `buf[..start]`.
pub struct OutBuf {
    pub buf: Vec<u8>,
    pub start: usize,
}

impl OutBuf {
    pub fn new(capacity: usize) -> OutBuf {
        let mut buf = Vec::with_capacity(HEADROOM + capacity);
        buf.resize(HEADROOM, 0);
        OutBuf { buf, start: HEADROOM }
    }
    pub fn payload(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }
}

/// Shared between the thread that reads messages and the connection's
/// thread: when the message being received began (the connection's thread
/// closes a connection whose message takes longer than `io timeout` to
/// arrive, so a client sending one byte every few seconds cannot hold a
/// connection by that trickle), and the largest message accepted now (small
/// until a session is authenticated).
pub struct RecvControl {
    epoch: Instant,
    /// Milliseconds since `epoch` at the first byte of the message being
    /// received; `IDLE` between messages.
    started_ms: AtomicU64,
    limit: AtomicUsize,
    /// Set to stop the reader between messages (a connection passed to
    /// another worker: no byte meant for the new owner may be read here).
    halted: AtomicBool,
    /// Wakes a reader waiting for a message when `halted` is set (an
    /// eventfd, made by a transport that can wait on it).
    halt_fd: OnceLock<Option<OwnedFd>>,
    /// Whether the reader waits on `halt_fd` at all: only while the
    /// connection could still be passed (worker processes, before its first
    /// session), so other connections pay no extra system call per message.
    haltable: AtomicBool,
}

const IDLE: u64 = u64::MAX;

impl RecvControl {
    pub fn new(limit: usize) -> RecvControl {
        RecvControl { epoch: Instant::now(), started_ms: AtomicU64::new(IDLE), limit: AtomicUsize::new(limit), halted: AtomicBool::new(false), halt_fd: OnceLock::new(), haltable: AtomicBool::new(crate::connpass::enabled()) }
    }
    /// The eventfd a transport's reader waits on beside its socket (made on
    /// first use; `None` if it cannot be made: the reader cannot be halted).
    pub fn halt_fd(&self) -> Option<BorrowedFd<'_>> {
        if !self.haltable.load(Ordering::Acquire) {
            return None;
        }
        self.halt_fd.get_or_init(|| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK).ok()).as_ref().map(|f| f.as_fd())
    }
    /// Stops the reader before its next message; whether a reader waiting
    /// for one can be woken (a transport that made the eventfd).
    pub fn halt(&self) -> bool {
        self.halted.store(true, Ordering::Release);
        match self.halt_fd.get() {
            Some(Some(fd)) => rustix::io::write(fd, &1u64.to_ne_bytes()).is_ok(),
            _ => false,
        }
    }
    /// The reader no longer needs to be haltable (the connection has a session).
    pub fn never_halt(&self) {
        self.haltable.store(false, Ordering::Release);
    }
    /// Whether [`halt`](Self::halt) stops the reader before its next message:
    /// haltable, and the reader waits on the eventfd (it made it).
    pub fn can_halt(&self) -> bool {
        self.haltable.load(Ordering::Acquire) && matches!(self.halt_fd.get(), Some(Some(_)))
    }
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::Acquire)
    }
    /// Waits until `sock` has something to read, or the reader is halted
    /// (false: the connection or channel goes to another worker, see
    /// connpass.rs). Without a halt eventfd, returns at once.
    pub fn wait_readable(&self, sock: impl AsFd) -> io::Result<bool> {
        use rustix::event::{poll, PollFd, PollFlags};
        let Some(halt) = self.halt_fd() else { return Ok(true) };
        loop {
            if self.is_halted() {
                return Ok(false);
            }
            let mut fds = [PollFd::new(&sock, PollFlags::IN), PollFd::from_borrowed_fd(halt, PollFlags::IN)];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if self.is_halted() {
                return Ok(false);
            }
            if !fds[0].revents().is_empty() {
                return Ok(true);
            }
        }
    }
    /// The first byte of a message arrived.
    pub fn start(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(IDLE - 1);
        self.started_ms.store(ms, Ordering::Release);
    }
    /// The message is complete (or the transport gave up on it).
    pub fn stop(&self) {
        self.started_ms.store(IDLE, Ordering::Release);
    }
    /// When the message being received began, if one is.
    pub fn started(&self) -> Option<Instant> {
        match self.started_ms.load(Ordering::Acquire) {
            IDLE => None,
            ms => Some(self.epoch + Duration::from_millis(ms)),
        }
    }
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }
    pub fn set_limit(&self, n: usize) {
        self.limit.store(n, Ordering::Release);
    }
}

/// Receives whole SMB2 messages. `limit` bounds what will be allocated for one.
pub trait MessageSource: Send {
    /// Tells the transport where to note when each message begins and what
    /// its size limit is now (a transport that delivers whole messages at
    /// once may ignore the clock; the limit still applies, as `limit` does).
    fn set_control(&mut self, control: Arc<RecvControl>) {
        let _ = control;
    }

    fn recv(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>>;

    /// Like `recv`, filling `spare` (a buffer handed back after use) when the
    /// transport can, so memory is reused from message to message.
    fn recv_into(&mut self, limit: usize, spare: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        let _ = spare;
        self.recv(limit)
    }

    /// Whether a thread of the transport's own already queues whole messages
    /// (SMB Direct): the connection then takes them with [`Self::recv_wait`]
    /// on its own thread instead of starting a reader thread (one thread hop
    /// less per request).
    fn has_queue(&self) -> bool {
        false
    }

    /// [`Self::recv`] waiting at most `wait`; `None` when nothing came in
    /// time. Only for a source that [`Self::has_queue`].
    fn recv_wait(&mut self, limit: usize, wait: std::time::Duration) -> Option<io::Result<Option<Vec<u8>>>> {
        let _ = wait;
        Some(self.recv(limit))
    }

    /// Like `recv_into`, letting `dec` decrypt a TRANSFORM message while it
    /// arrives (each part while it is still in the cache from the socket).
    /// The default leaves every message to be decrypted after it is whole.
    fn recv_decrypting(&mut self, limit: usize, spare: Vec<u8>, dec: &mut dyn StreamDecrypt) -> io::Result<Option<Vec<u8>>> {
        let _ = dec;
        self.recv_into(limit, spare)
    }
}

/// Decrypts messages as a transport receives them (see
/// [`MessageSource::recv_decrypting`]). The transport calls `begin` with
/// the first bytes of each message that starts with a TRANSFORM header;
/// when it says yes, `more` with the rest of the message in order (parts of
/// a multiple of 16 bytes, but the last) and `end` with the whole message.
pub trait StreamDecrypt {
    /// `head` is at least the message's first 52 bytes; `total` its length.
    fn begin(&mut self, head: &[u8], total: usize) -> bool;
    fn more(&mut self, part: &mut [u8]);
    fn end(&mut self, msg: &mut [u8]);
}

/// Sends messages; shared by the connection's own loop and by work that
/// finishes later (async responses), so it takes `&self`.
pub trait MessageSink: Send + Sync {
    fn send(&self, msg: OutBuf) -> io::Result<()>;
    /// Sends the final response of an async operation from a thread that
    /// serves other connections too (the CHANGE_NOTIFY reactor, another
    /// connection's unlock): it must not wait for this peer to read. The
    /// default sends at once (a transport whose `send` never waits on the peer).
    fn send_detached(self: Arc<Self>, msg: OutBuf) {
        if let Err(e) = self.send(msg) {
            tracing::debug!("async response not sent: {e}");
        }
    }
    /// Closes the connection (both directions).
    fn shutdown(&self);
    /// Whether the transport moves bulk data by RDMA (SMB Direct).
    fn is_rdma(&self) -> bool {
        false
    }
    fn peer(&self) -> String;
    /// The payload operations of an SMB Direct channel (`None` elsewhere).
    fn rdma(&self) -> Option<&dyn RdmaOps> {
        None
    }
    /// Sends with SMB Direct send-with-invalidate of the peer's `token`
    /// (responses to RDMA_V1_INVALIDATE requests). Only RDMA transports can.
    fn send_invalidate(&self, msg: OutBuf, token: u32) -> io::Result<()> {
        let _ = (msg, token);
        Err(io::Error::new(io::ErrorKind::Unsupported, "send with invalidate needs an RDMA transport"))
    }
}

/// A buffer registered with the RDMA device, the only memory payloads move
/// through on an SMB Direct channel (a slot of the proxy's shared pool).
pub type RdmaBuffer = smbdirect_rdma_proxy::pool::Slot;

/// Work to run when an RDMA transfer ended: the buffer back, or the error.
pub type RdmaThen = Box<dyn FnOnce(io::Result<RdmaBuffer>) + Send>;

/// What an SMB Direct channel adds to a transport (ksmbd's transport ops
/// `rdma_read`/`rdma_write`): moving a READ's or WRITE's payload between a
/// registered buffer and the peer's buffer descriptors. The caller has checked
/// the descriptors against the request; `remote` covers exactly `buf.len()`
/// bytes, in order.
pub trait RdmaOps: Send + Sync {
    /// The most bytes one READ or WRITE may move (SMB Direct MaxReadWriteSize,
    /// bounded by the registered buffers).
    fn max_read_write_size(&self) -> u32;
    /// The largest SMB2 message the peer accepts inline, i.e. sent as SMB
    /// Direct data transfer messages (its MaxFragmentedSize, MS-SMBD
    /// 3.1.1.1 / 3.1.5.1): a response longer than this cannot be sent.
    fn max_inline_send(&self) -> u32;
    /// A registered buffer of `len` bytes (waits a little for one to free up).
    fn buffer(&self, len: usize) -> io::Result<RdmaBuffer>;
    /// RDMA-writes `buf` into the peer's buffers (SMB2 READ) and waits.
    fn write_to_peer(&self, buf: RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<()>;
    /// RDMA-reads the peer's buffers into `buf` (SMB2 WRITE), waits, and
    /// gives the filled buffer back.
    fn read_from_peer(&self, buf: RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<RdmaBuffer>;
    /// Starts an RDMA read of the peer's buffers into `buf` without waiting:
    /// `then` runs on the transport's own thread with the filled buffer once
    /// the transfer ended (or with its error), while the connection goes on
    /// with its next requests. If the channel ends first, `then` is dropped
    /// without being called, and the buffer is kept back from reuse until the
    /// proxy can no longer write into it. An error here means nothing was
    /// started (`then` is dropped).
    fn read_from_peer_then(&self, buf: RdmaBuffer, remote: Vec<BufferDescriptorV1>, then: RdmaThen) -> io::Result<()>;
    /// RDMA-writes `buf` into the peer's buffers and sends `reply` (with
    /// send-with-invalidate of `invalidate`) once the write is done, without
    /// waiting for it: the connection goes on with its next request meanwhile,
    /// so several READs of one channel are in flight at once. `buf` is held
    /// until the transfer ended. If the transfer fails the reply is not sent
    /// and the connection is dropped (an RDMA error leaves the peer's queue
    /// pair unusable anyway). An error here means nothing was started.
    fn write_to_peer_then_send(&self, buf: RdmaBuffer, remote: Vec<BufferDescriptorV1>, reply: OutBuf, invalidate: Option<u32>) -> io::Result<()>;
}
