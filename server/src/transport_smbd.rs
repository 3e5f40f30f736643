//! An SMB Direct channel handed over by the rdma-proxy (RDMA-DESIGN.md): a
//! SOCK_SEQPACKET socket over which whole SMB2 messages travel (`Recv` in,
//! `Send` out) and over which the connection asks the proxy to move READ and
//! WRITE payloads by RDMA between a slot of the shared pool and the client's
//! buffer descriptors (`Rdma`, answered by `RdmaDone`).
//!
//! Shaped like [`crate::transport_tcp`]: [`smbd_transport`] is the
//! connection-pass hook, and the channel's first message (the NEGOTIATE the
//! proxy already received) is replayed before anything is read.
//!
//! One thread per channel reads the socket all the time: SMB2 messages go to
//! the connection's [`MessageSource`], `RdmaDone` answers wake the request
//! that waits for them (WRITE) or, for a READ, free its slot and send its
//! response, already built, while the connection handles its next requests:
//! the RDMA writes of pipelined READs are in flight together, bounded by the
//! pool's slots. (The connection's own reader may be blocked handing
//! over a message while its handler waits for an `RdmaDone`, so the two
//! cannot share one reader.) Queued messages are bounded in bytes; a client
//! that outruns its credits that far loses the channel.

use crate::transport::{MessageSink, MessageSource, OutBuf, RdmaBuffer, RdmaOps};
use smbdirect_rdma_proxy::fdpass::{self, FrameReader, Received};
use smbdirect_rdma_proxy::pool::{PoolError, SlotAllocator};
use smbdirect_rdma_proxy::proto::{kind, rdma_status, ChannelOffer, Frame, Negotiated, RdmaDir, RdmaDone, RdmaRequest, MAX_FRAME_OVERHEAD};
use smbdirect_transport::wire::BufferDescriptorV1;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long a READ/WRITE waits for a free pool slot before it fails.
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// Who waits for an `RdmaDone`: a request blocked in [`Channel::rdma`], or
/// work to run on the channel's reader thread when the answer comes
/// ([`RdmaOps::write_to_peer_then_send`]).
enum Waiter {
    Blocked(SyncSender<RdmaDone>),
    Then(Box<dyn FnOnce(RdmaDone) + Send>),
}

struct Channel {
    id: u64,
    sock: OwnedFd,
    send_lock: Mutex<()>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_req: AtomicU64,
    alloc: Arc<SlotAllocator>,
    negotiated: Negotiated,
    closed: AtomicBool,
    peer: String,
}

impl Channel {
    fn send(&self, frame: &Frame) -> io::Result<()> {
        let _g = crate::objects::lock(&self.send_lock);
        fdpass::send_frame(self.sock.as_fd(), frame, None).map_err(to_io)
    }

    fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Both);
    }

    /// Asks the proxy for one RDMA transfer and waits for its answer (or for
    /// the channel to end). The proxy touches the slot only until it answers
    /// or closes the channel.
    fn rdma(&self, dir: RdmaDir, buf: &RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        let len = self.start_rdma(dir, buf.offset(), buf.len(), remote, Waiter::Blocked(tx))?;
        let done = rx.recv().map_err(|_| io::Error::new(io::ErrorKind::ConnectionAborted, "channel ended during RDMA"))?;
        check_done(&done, len)
    }

    /// Registers `waiter` and sends the Rdma frame; returns the length asked.
    fn start_rdma(&self, dir: RdmaDir, pool_offset: u64, len: usize, remote: &[BufferDescriptorV1], waiter: Waiter) -> io::Result<u32> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "channel closed"));
        }
        let sum: u64 = remote.iter().map(|d| u64::from(d.length)).sum();
        let len = u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
        if sum != u64::from(len) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "descriptors do not cover the buffer"));
        }
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        crate::objects::lock(&self.pending).insert(req_id, waiter);
        let req = RdmaRequest { req_id, dir, pool_offset, len, descriptors: remote.to_vec() };
        if let Err(e) = self.send(&Frame::Rdma(req)) {
            let w = crate::objects::lock(&self.pending).remove(&req_id);
            drop(w);
            return Err(e);
        }
        Ok(len)
    }

    /// Sends an SMB2 message (`Send` frame), gathered from the OutBuf.
    fn send_message(&self, msg: &OutBuf, invalidate: Option<u32>) -> io::Result<()> {
        // Send's body: invalidate_token u32, has_invalidate u8, the message;
        // gathered from the OutBuf without a copy.
        let payload = msg.buf.get(msg.start..).unwrap_or(&[]);
        let mut prefix = [0u8; 5];
        prefix[..4].copy_from_slice(&invalidate.unwrap_or(0).to_le_bytes());
        prefix[4] = u8::from(invalidate.is_some());
        let _g = crate::objects::lock(&self.send_lock);
        fdpass::send_parts(self.sock.as_fd(), kind::SEND, &[&prefix, payload]).map_err(to_io)
    }
}

/// SMB Direct channels not yet released (see `Drop for Channel`).
static OPEN_CHANNELS: AtomicUsize = AtomicUsize::new(0);

impl Drop for Channel {
    /// The channel's last reference goes once its reader, its connection and
    /// every RDMA waiter are gone, so every pool slot it held is back: one line
    /// with the pool's slots still in use (all channels of this pool), which is
    /// 0 once the last channel is released (the guest tests check it).
    fn drop(&mut self) {
        let left = OPEN_CHANNELS.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        let (used, total) = (self.alloc.in_use(), self.alloc.slot_count());
        info!("channel {} released: slots_in_use={used} slots={total} channels_left={left}", self.id);
        if left == 0 && used != 0 {
            warn!("no SMB Direct channel left but {used} pool slot(s) still in use");
        }
    }
}

fn check_done(done: &RdmaDone, len: u32) -> io::Result<()> {
    match done.status {
        rdma_status::OK if done.bytes == u64::from(len) => Ok(()),
        rdma_status::OK => Err(io::Error::other(format!("RDMA moved {} of {len} bytes", done.bytes))),
        s => Err(io::Error::other(format!("RDMA failed with status {s}"))),
    }
}

fn to_io(e: fdpass::FdPassError) -> io::Error {
    match e {
        fdpass::FdPassError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

pub struct SmbdSource {
    first: Option<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

pub struct SmbdSink {
    ch: Arc<Channel>,
}

/// Makes a channel offered by the proxy into a connection's transport.
/// `max_message` bounds one SMB2 message (reassembly and queueing).
pub fn smbd_transport(offer: ChannelOffer, sock: OwnedFd, alloc: Arc<SlotAllocator>, max_message: usize) -> io::Result<(SmbdSource, SmbdSink)> {
    let peer = match offer.peer {
        Some(a) => format!("{a} (rdma channel {})", offer.channel_id),
        None => format!("rdma channel {}", offer.channel_id),
    };
    if offer.first_message.len() > max_message {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "first message over the limit"));
    }
    OPEN_CHANNELS.fetch_add(1, Ordering::SeqCst);
    let ch = Arc::new(Channel {
        id: offer.channel_id,
        sock,
        send_lock: Mutex::new(()),
        pending: Mutex::new(HashMap::new()),
        next_req: AtomicU64::new(1),
        alloc,
        negotiated: offer.negotiated,
        closed: AtomicBool::new(false),
        peer,
    });
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    // Room for a few large messages, never less than 64 MiB.
    let queue_limit = max_message.saturating_mul(4).max(64 << 20);
    let ch2 = ch.clone();
    let q2 = queued.clone();
    std::thread::Builder::new()
        .name("smbd-chan".into())
        .stack_size(128 * 1024)
        .spawn(move || channel_reader(ch2, tx, q2, max_message, queue_limit))?;
    Ok((SmbdSource { first: Some(offer.first_message), rx, queued }, SmbdSink { ch }))
}

fn channel_reader(ch: Arc<Channel>, tx: mpsc::Sender<Vec<u8>>, queued: Arc<AtomicUsize>, max_message: usize, queue_limit: usize) {
    let mut reader = FrameReader::new(max_message + MAX_FRAME_OVERHEAD);
    loop {
        let frame = match reader.recv(&ch.sock) {
            Ok(Some(Received { frame, .. })) => frame,
            Ok(None) => {
                debug!(peer = %ch.peer, "channel socket closed");
                break;
            }
            Err(e) => {
                if !ch.closed.load(Ordering::SeqCst) {
                    warn!(peer = %ch.peer, "channel socket: {e}");
                }
                break;
            }
        };
        match frame {
            Frame::Recv(msg) => {
                let n = msg.len();
                if queued.fetch_add(n, Ordering::SeqCst) + n > queue_limit {
                    warn!(peer = %ch.peer, "more than {queue_limit} bytes of requests queued; dropping the channel");
                    break;
                }
                if tx.send(msg).is_err() {
                    break;
                }
            }
            Frame::RdmaDone(done) => match {
                // (Taken out first: a waiter's work sends, without this lock.)
                let w = crate::objects::lock(&ch.pending).remove(&done.req_id);
                w
            } {
                Some(Waiter::Blocked(w)) => {
                    let _ = w.send(done);
                }
                Some(Waiter::Then(f)) => f(done),
                None => {
                    warn!(peer = %ch.peer, req_id = done.req_id, "RdmaDone for no request; dropping the channel");
                    break;
                }
            },
            Frame::Close { reason } => {
                info!(peer = %ch.peer, reason, "proxy closed the channel");
                break;
            }
            other => {
                warn!(peer = %ch.peer, kind = other.kind(), "unexpected frame on a channel socket; dropping the channel");
                break;
            }
        }
    }
    // Waiting RDMA requests fail (their senders drop); the source sees the end.
    ch.shutdown();
    crate::objects::lock(&ch.pending).clear();
    drop(tx);
}

impl MessageSource for SmbdSource {
    fn recv(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let msg = match self.first.take() {
            Some(m) => m,
            None => match self.rx.recv() {
                Ok(m) => {
                    self.queued.fetch_sub(m.len(), Ordering::SeqCst);
                    m
                }
                Err(_) => return Ok(None),
            },
        };
        if msg.len() > limit {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("message of {} bytes over the limit of {limit}", msg.len())));
        }
        Ok(Some(msg))
    }
}

impl SmbdSink {
    fn send_frame(&self, msg: OutBuf, invalidate: Option<u32>) -> io::Result<()> {
        self.ch.send_message(&msg, invalidate)
    }

    pub fn channel_id(&self) -> u64 {
        self.ch.id
    }
}

impl MessageSink for SmbdSink {
    fn send(&self, msg: OutBuf) -> io::Result<()> {
        self.send_frame(msg, None)
    }

    fn send_invalidate(&self, msg: OutBuf, token: u32) -> io::Result<()> {
        self.send_frame(msg, Some(token))
    }

    fn shutdown(&self) {
        self.ch.shutdown();
    }

    fn is_rdma(&self) -> bool {
        true
    }

    fn peer(&self) -> String {
        self.ch.peer.clone()
    }

    fn rdma(&self) -> Option<&dyn RdmaOps> {
        Some(self)
    }
}

impl RdmaOps for SmbdSink {
    fn max_read_write_size(&self) -> u32 {
        let slot = u32::try_from(self.ch.alloc.slot_size()).unwrap_or(u32::MAX);
        self.ch.negotiated.max_read_write_size.min(slot)
    }

    fn buffer(&self, len: usize) -> io::Result<RdmaBuffer> {
        self.ch.alloc.alloc_timeout(len, SLOT_WAIT).map_err(|e| match e {
            PoolError::Exhausted => io::Error::new(io::ErrorKind::TimedOut, "no free pool slot"),
            other => io::Error::other(other.to_string()),
        })
    }

    fn write_to_peer(&self, buf: &RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<()> {
        self.ch.rdma(RdmaDir::WriteToClient, buf, remote)
    }

    fn read_from_peer(&self, buf: &mut RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<()> {
        self.ch.rdma(RdmaDir::ReadFromClient, buf, remote)
    }

    fn write_to_peer_then_send(&self, buf: RdmaBuffer, remote: Vec<BufferDescriptorV1>, reply: OutBuf, invalidate: Option<u32>) -> io::Result<()> {
        let (offset, len) = (buf.offset(), buf.len());
        // Runs on the reader thread when the proxy answers. It owns the slot
        // (freed only once the proxy is done with it, or with the waiter when
        // the channel ends) and the channel (a cycle broken when the reader
        // clears `pending` at its end).
        let ch = self.ch.clone();
        let then = Waiter::Then(Box::new(move |done: RdmaDone| {
            drop(buf);
            let r = u32::try_from(len).map_err(io::Error::other).and_then(|n| check_done(&done, n)).and_then(|()| ch.send_message(&reply, invalidate));
            if let Err(e) = r {
                warn!(peer = %ch.peer, "RDMA write for a READ: {e}; dropping the channel");
                ch.shutdown();
            }
        }));
        self.ch.start_rdma(RdmaDir::WriteToClient, offset, len, &remote, then).map(|_| ())
    }
}
