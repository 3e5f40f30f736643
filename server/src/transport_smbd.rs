//! An SMB Direct channel handed over by the rdma-proxy (RDMA-DESIGN.md): a
//! SOCK_SEQPACKET socket over which whole SMB2 messages travel (`Recv` in,
//! `Send` out) and over which the connection asks the proxy to move READ and
//! WRITE payloads by RDMA between a slot of the shared pool and the client's
//! buffer descriptors (`Rdma`, answered by `RdmaDone`).
//!
//! Shaped like [`crate::transport_tcp`]: [`smbd_transport`] is the
//! connection-pass hook, and the channel's first message (the NEGOTIATE the
//! proxy already received) is replayed before anything is read. A channel
//! passed from another worker (connpass.rs) replays the messages that worker
//! read and did not handle ([`smbd_transport_resumed`]). While the
//! connection may still be passed, the reader waits on the socket and the
//! connection's halt eventfd together and stops between frames when halted,
//! leaving the socket open for the next owner.
//!
//! One thread per channel reads the socket all the time: SMB2 messages go to
//! the connection's [`MessageSource`], and each `RdmaDone` runs the work left
//! for it: wake a request that waits, or finish a READ (free its slot, send
//! its response, already built) or a WRITE (write the slot to the file, send
//! its response) while the connection handles its next requests: the RDMA
//! transfers of pipelined READs and WRITEs are in flight together, bounded
//! by the pool's slots and the client's credits. (The connection's own
//! reader may be blocked handing over a message while its handler waits for
//! an `RdmaDone`, so the two cannot share one reader.) Queued messages are
//! bounded in bytes; a client that outruns its credits that far loses the
//! channel. A slot the proxy was asked to fill or send and has not answered
//! for is never reused before the proxy is done with it, also when the
//! channel ends ([`SLOT_QUARANTINE_MS`]).

use crate::transport::{MessageSink, MessageSource, OutBuf, RdmaBuffer, RdmaOps, RdmaThen, RecvControl};
use smbdirect_rdma_proxy::fdpass::{self, recv_datagram};
use smbdirect_rdma_proxy::pool::{PoolError, SlotAllocator};
use smbdirect_rdma_proxy::proto::{kind, rdma_status, ChannelOffer, Frame, Negotiated, RdmaDir, RdmaDone, RdmaRequest, Reassembler, MAX_DATAGRAM, MAX_FRAME_OVERHEAD};
use smbdirect_transport::wire::BufferDescriptorV1;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long a READ/WRITE waits for a free pool slot before it fails.
const SLOT_WAIT: Duration = Duration::from_secs(30);

/// How long the pool slots of RDMA transfers still outstanding when a
/// channel ends are kept out of use, in milliseconds. The proxy may still be
/// moving data into (or out of) them: when it sees the channel socket close
/// it disconnects the queue pair, which flushes outstanding work requests,
/// and destroys it at the latest 3 s later (`CLOSE_GRACE` in its driver);
/// this is that bound with a wide margin. (Tests shorten it.)
pub static SLOT_QUARANTINE_MS: AtomicU64 = AtomicU64::new(10_000);

/// An RDMA transfer the proxy has been asked for and has not answered: the
/// slot it moves data through (the proxy may touch it until it answers) and
/// what to do with the answer.
struct PendingRdma {
    slot: RdmaBuffer,
    len: u32,
    then: RdmaThen,
}

struct Channel {
    id: u64,
    sock: OwnedFd,
    send_lock: Mutex<()>,
    pending: Mutex<HashMap<u64, PendingRdma>>,
    next_req: AtomicU64,
    alloc: Arc<SlotAllocator>,
    negotiated: Negotiated,
    closed: AtomicBool,
    peer: String,
    /// The connection's receive clock and size limit (`set_control`).
    control: OnceLock<Arc<RecvControl>>,
    /// Set by the reader when it stopped for a halt with nothing
    /// outstanding, leaving the socket as it was (the channel can be passed).
    halted_clean: AtomicBool,
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
    /// the channel to end); gives the slot back when the transfer is done.
    fn rdma_wait(&self, dir: RdmaDir, buf: RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<RdmaBuffer> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.start_rdma(dir, buf, remote, Box::new(move |r| {
            let _ = tx.send(r);
        }), None)?;
        rx.recv().map_err(|_| io::Error::new(io::ErrorKind::ConnectionAborted, "channel ended during RDMA"))?
    }

    /// Sends the Rdma frame for `buf` (an RdmaSend frame with `reply`, which
    /// the proxy sends right behind the transfer); the slot and `then` wait in
    /// `pending` for the answer. On error nothing was posted (and the slot is
    /// free).
    fn start_rdma(&self, dir: RdmaDir, buf: RdmaBuffer, remote: &[BufferDescriptorV1], then: RdmaThen, reply: Option<(&OutBuf, Option<u32>)>) -> io::Result<()> {
        let sum: u64 = remote.iter().map(|d| u64::from(d.length)).sum();
        let len = u32::try_from(buf.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer too large"))?;
        if sum != u64::from(len) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "descriptors do not cover the buffer"));
        }
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let req = RdmaRequest { req_id, dir, pool_offset: buf.offset(), len, descriptors: remote.to_vec() };
        {
            // `closed` is looked at under the lock the reader's final drain
            // takes: nothing is added to `pending` after that drain.
            let mut p = crate::objects::lock(&self.pending);
            if self.closed.load(Ordering::SeqCst) {
                return Err(io::Error::new(io::ErrorKind::NotConnected, "channel closed"));
            }
            p.insert(req_id, PendingRdma { slot: buf, len, then });
        }
        let frame = match reply {
            Some((msg, invalidate)) => Frame::RdmaSend { req, invalidate, msg: msg.buf.get(msg.start..).unwrap_or(&[]).to_vec() },
            None => Frame::Rdma(req),
        };
        if let Err(e) = self.send(&frame) {
            // (A SEQPACKET datagram is sent whole or not at all.)
            let p = crate::objects::lock(&self.pending).remove(&req_id);
            drop(p);
            return Err(e);
        }
        Ok(())
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

    /// The largest SMB2 message accepted now (small before authentication).
    fn limit(&self, max_message: usize) -> usize {
        self.control.get().map_or(max_message, |c| c.limit().min(max_message))
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
    /// Messages replayed before the socket is read: the offer's first
    /// message, or those of a passed channel.
    first: std::collections::VecDeque<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    ch: Arc<Channel>,
}

pub struct SmbdSink {
    ch: Arc<Channel>,
}

/// Makes a channel offered by the proxy into a connection's transport.
/// `max_message` bounds one SMB2 message (reassembly and queueing); once the
/// connection has set its [`RecvControl`], that control's limit (small until
/// a session is authenticated) bounds it too.
pub fn smbd_transport(mut offer: ChannelOffer, sock: OwnedFd, alloc: Arc<SlotAllocator>, max_message: usize) -> io::Result<(SmbdSource, SmbdSink)> {
    let first = std::mem::take(&mut offer.first_message);
    smbd_transport_resumed(offer, sock, alloc, max_message, vec![first])
}

/// [`smbd_transport`] for a channel passed from another worker: `replay`
/// are the messages that worker read and did not handle (the binding
/// SESSION_SETUP first); `offer.first_message` is not used.
pub fn smbd_transport_resumed(offer: ChannelOffer, sock: OwnedFd, alloc: Arc<SlotAllocator>, max_message: usize, replay: Vec<Vec<u8>>) -> io::Result<(SmbdSource, SmbdSink)> {
    let peer = match offer.peer {
        Some(a) => format!("{a} (rdma channel {})", offer.channel_id),
        None => format!("rdma channel {}", offer.channel_id),
    };
    if replay.iter().any(|m| m.len() > max_message) {
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
        control: OnceLock::new(),
        halted_clean: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let ch2 = ch.clone();
    let q2 = queued.clone();
    std::thread::Builder::new()
        .name("smbd-chan".into())
        .stack_size(128 * 1024)
        .spawn(move || channel_reader(ch2, tx, q2, max_message))?;
    Ok((SmbdSource { first: replay.into(), rx, queued, ch: ch.clone() }, SmbdSink { ch }))
}

/// Bytes of requests that may wait for the connection: room for a few
/// messages of the size accepted now; before authentication (a limit below
/// `max_message`) at least 1 MiB, after it at least 64 MiB.
fn queue_limit(limit: usize, max_message: usize) -> usize {
    let floor = if limit < max_message { 1 << 20 } else { 64 << 20 };
    limit.saturating_mul(4).max(floor)
}

fn channel_reader(ch: Arc<Channel>, tx: mpsc::Sender<Vec<u8>>, queued: Arc<AtomicUsize>, max_message: usize) {
    // Frames are reassembled here (not with fdpass::FrameReader) so that the
    // size limit in force when a message begins bounds its reassembly, and
    // the connection's clock sees a message that arrives in several datagrams.
    let mut limit = max_message;
    let mut reasm = Reassembler::new(limit + MAX_FRAME_OVERHEAD);
    let mut dg = vec![0u8; MAX_DATAGRAM];
    // Slots the proxy may still be moving data through.
    let mut held: Vec<RdmaBuffer> = Vec::new();
    let mut halted = false;
    loop {
        // Between frames, a connection being passed stops the reader here.
        if !reasm.in_progress() {
            match wait_readable(&ch) {
                Ok(true) => {}
                Ok(false) => {
                    halted = true;
                    break;
                }
                Err(e) => {
                    warn!(peer = %ch.peer, "channel socket: {e}");
                    break;
                }
            }
        }
        let n = match recv_datagram(ch.sock.as_fd(), &mut dg) {
            Ok(Some((n, None))) => n,
            Ok(Some((_, Some(_)))) => {
                warn!(peer = %ch.peer, "a file descriptor on a channel socket; dropping the channel");
                break;
            }
            Ok(None) if reasm.in_progress() => {
                warn!(peer = %ch.peer, "channel socket closed inside a split frame");
                break;
            }
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
        let first = !reasm.in_progress();
        if first {
            // The limit in force when a message's first datagram arrives (it
            // is raised once a session is authenticated, maybe while this
            // thread waited).
            let now = ch.limit(max_message);
            if now != limit {
                limit = now;
                reasm = Reassembler::new(limit + MAX_FRAME_OVERHEAD);
            }
        }
        let frame = match reasm.push(&dg[..n]) {
            Ok(Some(f)) => f,
            Ok(None) => {
                // A message split over several datagrams began: the
                // connection's io timeout runs until its last one.
                if first {
                    if let Some(c) = ch.control.get() {
                        c.start();
                    }
                }
                continue;
            }
            Err(e) => {
                warn!(peer = %ch.peer, "channel socket: {e} (at most {limit} bytes accepted now); dropping the channel");
                break;
            }
        };
        if !first {
            if let Some(c) = ch.control.get() {
                c.stop();
            }
        }
        match frame {
            Frame::Recv(msg) => {
                let n = msg.len();
                if n > limit {
                    warn!(peer = %ch.peer, "message of {n} bytes over the limit of {limit}; dropping the channel");
                    break;
                }
                let ql = queue_limit(limit, max_message);
                if queued.fetch_add(n, Ordering::SeqCst) + n > ql {
                    warn!(peer = %ch.peer, "more than {ql} bytes of requests queued; dropping the channel");
                    break;
                }
                if tx.send(msg).is_err() {
                    break;
                }
            }
            Frame::RdmaDone(done) => {
                // (Taken out first: the waiter's work sends, without this lock.)
                let p = crate::objects::lock(&ch.pending).remove(&done.req_id);
                match p {
                    // "Result unknown": the slot may still be in use.
                    Some(p) if done.status == rdma_status::CHANNEL_CLOSING => {
                        held.push(p.slot);
                        (p.then)(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the proxy is closing the channel")));
                    }
                    // The proxy answered: it is done with the slot.
                    Some(p) => (p.then)(check_done(&done, p.len).map(|()| p.slot)),
                    None => {
                        warn!(peer = %ch.peer, req_id = done.req_id, "RdmaDone for no request; dropping the channel");
                        break;
                    }
                }
            }
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
    if let Some(c) = ch.control.get() {
        c.stop();
    }
    if halted {
        // Nothing can be outstanding before a session; if something is,
        // the channel is not passed but closed (below).
        if crate::objects::lock(&ch.pending).is_empty() {
            debug!(peer = %ch.peer, "channel reader halted: the channel goes to another worker");
            ch.halted_clean.store(true, Ordering::SeqCst);
            return;
        }
        warn!(peer = %ch.peer, "RDMA transfers outstanding: the channel cannot be passed; closing it");
    }
    // Work waiting for an answer is dropped unrun (a blocked request sees
    // the channel end); the source sees the end of the stream.
    ch.shutdown();
    let left: Vec<PendingRdma> = crate::objects::lock(&ch.pending).drain().map(|(_, p)| p).collect();
    for p in left {
        drop(p.then);
        held.push(p.slot);
    }
    drop(tx);
    // Slots of unanswered transfers are not reused while the proxy may still
    // be moving data through them.
    if !held.is_empty() {
        let q = Duration::from_millis(SLOT_QUARANTINE_MS.load(Ordering::Relaxed));
        info!(peer = %ch.peer, "channel ended with {} RDMA transfers unanswered; their pool slots stay out of use for {} ms", held.len(), q.as_millis());
        std::thread::sleep(q);
    }
    drop(held);
}

/// Waits until the channel socket has something to read, or the
/// connection's reader is halted (`RecvControl::wait_readable`).
fn wait_readable(ch: &Channel) -> io::Result<bool> {
    match ch.control.get() {
        Some(c) => c.wait_readable(&ch.sock),
        None => Ok(true),
    }
}

impl MessageSource for SmbdSource {
    fn set_control(&mut self, control: Arc<RecvControl>) {
        // The halt eventfd exists before the reader's next wait.
        let _ = control.halt_fd();
        let _ = self.ch.control.set(control);
    }

    fn recv(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let got = match self.first.pop_front() {
            Some(m) => Ok(m),
            None => self.rx.recv().map(|m| self.dequeued(m)).map_err(|_| ()),
        };
        self.take(got, limit)
    }

    fn has_queue(&self) -> bool {
        true
    }

    fn recv_wait(&mut self, limit: usize, wait: Duration) -> Option<io::Result<Option<Vec<u8>>>> {
        let got = match self.first.pop_front() {
            Some(m) => Ok(m),
            None => match self.rx.recv_timeout(wait) {
                Ok(m) => Ok(self.dequeued(m)),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
            },
        };
        Some(self.take(got, limit))
    }
}

impl SmbdSource {
    /// A message the reader queued, no longer counted as queued.
    fn dequeued(&self, m: Vec<u8>) -> Vec<u8> {
        self.queued.fetch_sub(m.len(), Ordering::SeqCst);
        m
    }

    /// A message (`Err`: the reader is gone), checked against the limit.
    fn take(&mut self, got: Result<Vec<u8>, ()>, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let msg = match got {
            Ok(m) => m,
            // A halt that could not stop the reader cleanly is an error
            // (the connection is then closed, not passed).
            Err(()) if self.ch.control.get().is_some_and(|c| c.is_halted()) && !self.ch.halted_clean.load(Ordering::SeqCst) => {
                return Err(io::Error::other("the channel reader could not be halted"));
            }
            Err(()) => return Ok(None),
        };
        let limit = self.ch.limit(limit);
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

    /// A second handle on the channel socket: what goes to another worker
    /// when the channel is passed (connpass.rs).
    pub fn socket_clone(&self) -> io::Result<OwnedFd> {
        self.ch.sock.try_clone()
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
    fn max_inline_send(&self) -> u32 {
        self.ch.negotiated.max_fragmented_send
    }

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

    fn write_to_peer(&self, buf: RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<()> {
        self.ch.rdma_wait(RdmaDir::WriteToClient, buf, remote).map(drop)
    }

    fn read_from_peer(&self, buf: RdmaBuffer, remote: &[BufferDescriptorV1]) -> io::Result<RdmaBuffer> {
        self.ch.rdma_wait(RdmaDir::ReadFromClient, buf, remote)
    }

    fn read_from_peer_then(&self, buf: RdmaBuffer, remote: Vec<BufferDescriptorV1>, then: RdmaThen) -> io::Result<()> {
        self.ch.start_rdma(RdmaDir::ReadFromClient, buf, &remote, then, None)
    }

    fn write_to_peer_then_send(&self, buf: RdmaBuffer, remote: Vec<BufferDescriptorV1>, reply: OutBuf, invalidate: Option<u32>) -> io::Result<()> {
        // One RdmaSend frame: the proxy posts the reply right behind the RDMA
        // WRITE (the client sees it only after the data), without a round
        // trip through this process. `then` runs on the reader thread when
        // the proxy answers: it frees the slot; a failed WRITE means the reply
        // was not sent (or was flushed with the broken queue pair), so the
        // channel goes. It holds the channel: a cycle broken when the reader
        // empties `pending` at its end.
        let ch = self.ch.clone();
        let then: RdmaThen = Box::new(move |r: io::Result<RdmaBuffer>| {
            if let Err(e) = r {
                warn!(peer = %ch.peer, "RDMA write for a READ: {e}; dropping the channel");
                ch.shutdown();
            }
        });
        self.ch.start_rdma(RdmaDir::WriteToClient, buf, &remote, then, Some((&reply, invalidate)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smbdirect_rdma_proxy::fdpass::{seqpacket_pair, send_datagram, send_frame, FrameReader};
    use smbdirect_rdma_proxy::pool::PoolMap;
    use std::time::Instant;

    const SLOT: u32 = 64 << 10;

    /// A channel over a socketpair whose other end the test plays as the proxy.
    fn channel(slots: u64) -> (SmbdSource, SmbdSink, OwnedFd, Arc<SlotAllocator>) {
        let pool = Arc::new(PoolMap::create(slots * u64::from(SLOT)).unwrap());
        let alloc = SlotAllocator::new(pool, SLOT).unwrap();
        let (proxy, server) = seqpacket_pair().unwrap();
        let offer = ChannelOffer {
            channel_id: 9,
            client_guid: [0; 16],
            peer: None,
            local: None,
            negotiated: Negotiated { max_read_write_size: SLOT, max_send_size: 1364, max_fragmented_send: 1 << 20, max_fragmented_recv: 1 << 20 },
            first_message: vec![0xFE; 64],
        };
        let (src, sink) = smbd_transport(offer, server, alloc.clone(), 8 << 20).unwrap();
        (src, sink, proxy, alloc)
    }

    fn next_rdma(reader: &mut FrameReader, proxy: &OwnedFd) -> RdmaRequest {
        match reader.recv(proxy).unwrap().map(|r| r.frame) {
            Some(Frame::Rdma(r)) => r,
            other => panic!("expected an Rdma frame, got {other:?}"),
        }
    }

    fn desc(len: u32) -> Vec<BufferDescriptorV1> {
        vec![BufferDescriptorV1 { offset: 0x1000, token: 7, length: len }]
    }

    /// The slot of an RDMA read goes back to the pool when the proxy has
    /// answered (with the data, or with an error), and is kept out of use
    /// while a transfer is unanswered when the channel ends, until the
    /// quarantine is over; the work left for the answer is then dropped
    /// without running, and a request blocked on a transfer sees an error.
    #[test]
    fn slots_come_back_only_when_the_proxy_is_done() {
        SLOT_QUARANTINE_MS.store(300, Ordering::Relaxed);
        let (mut src, sink, proxy, alloc) = channel(4);
        assert_eq!(src.recv(1 << 20).unwrap().map(|m| m.len()), Some(64), "first message replayed");
        let mut reader = FrameReader::new(1 << 20);
        let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>();

        // Answered OK: the work runs with the filled slot.
        let t = tx.clone();
        sink.read_from_peer_then(sink.buffer(1000).unwrap(), desc(1000), Box::new(move |r| {
            let _ = t.send(r.map(|s| s.as_slice().to_vec()));
        }))
        .unwrap();
        assert_eq!(alloc.in_use(), 1);
        let r = next_rdma(&mut reader, &proxy);
        assert_eq!((r.dir, r.len), (RdmaDir::ReadFromClient, 1000));
        alloc.pool().write_at(r.pool_offset, &[0xAB; 1000]).unwrap();
        send_frame(proxy.as_fd(), &Frame::RdmaDone(RdmaDone { req_id: r.req_id, status: rdma_status::OK, bytes: 1000 }), None).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap(), vec![0xAB; 1000]);
        assert_eq!(alloc.in_use(), 0, "slot back once the work is done");

        // Answered with an error: the work sees it, the slot is free.
        let t = tx.clone();
        sink.read_from_peer_then(sink.buffer(10).unwrap(), desc(10), Box::new(move |r| {
            let _ = t.send(r.map(|s| s.as_slice().to_vec()));
        }))
        .unwrap();
        let r = next_rdma(&mut reader, &proxy);
        send_frame(proxy.as_fd(), &Frame::RdmaDone(RdmaDone { req_id: r.req_id, status: rdma_status::REMOTE_ERROR, bytes: 0 }), None).unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(5)).unwrap().is_err());
        let t0 = Instant::now();
        while alloc.in_use() != 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(alloc.in_use(), 0, "slot back after a failed transfer");

        // Unanswered when the channel ends: one deferred, one blocked.
        struct Dropped(mpsc::Sender<&'static str>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                let _ = self.0.send("dropped");
            }
        }
        let (dtx, drx) = mpsc::channel();
        let d = Dropped(dtx);
        let t = tx.clone();
        sink.read_from_peer_then(sink.buffer(100).unwrap(), desc(100), Box::new(move |r| {
            let _d = d;
            let _ = t.send(r.map(|s| s.as_slice().to_vec()));
        }))
        .unwrap();
        let _ = next_rdma(&mut reader, &proxy);
        let sink = Arc::new(sink);
        let s2 = sink.clone();
        let blocked = std::thread::spawn(move || s2.read_from_peer(s2.buffer(100).unwrap(), &desc(100)).map(drop));
        let _ = next_rdma(&mut reader, &proxy);
        assert_eq!(alloc.in_use(), 2);
        send_frame(proxy.as_fd(), &Frame::Close { reason: 0 }, None).unwrap();
        assert!(src.recv(1 << 20).unwrap().is_none(), "the source sees the end");
        assert_eq!(drx.recv_timeout(Duration::from_secs(5)).unwrap(), "dropped");
        assert!(rx.try_recv().is_err(), "the work did not run");
        assert!(blocked.join().unwrap().is_err(), "the blocked transfer failed");
        assert_eq!(alloc.in_use(), 2, "slots kept while the proxy may still use them");
        let t0 = Instant::now();
        while alloc.in_use() != 0 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(alloc.in_use(), 0, "slots back after the quarantine");
        assert!(t0.elapsed() >= Duration::from_millis(100), "not freed at once");
        // Nothing more starts on an ended channel.
        assert!(sink.read_from_peer_then(sink.buffer(1).unwrap(), desc(1), Box::new(|_| ())).is_err());
        assert_eq!(alloc.in_use(), 0);
    }

    /// Before authentication the connection's small limit bounds a message
    /// as it is reassembled (the channel is dropped past it), a message in
    /// several datagrams runs the connection's io clock from its first one
    /// to its last, and a raised limit applies to the next message.
    #[test]
    fn receive_limit_and_clock_apply() {
        let (mut src, _sink, proxy, _alloc) = channel(1);
        let control = Arc::new(RecvControl::new(128 << 10));
        src.set_control(control.clone());
        assert!(src.recv(1 << 20).unwrap().is_some());
        // Under the limit, in two datagrams: the clock runs in between.
        let dgs = Frame::Recv(vec![1; 100 << 10]).to_datagrams().unwrap();
        assert_eq!(dgs.len(), 2);
        send_datagram(proxy.as_fd(), &dgs[0], None).unwrap();
        let t0 = Instant::now();
        while control.started().is_none() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(control.started().is_some(), "a message has begun");
        send_datagram(proxy.as_fd(), &dgs[1], None).unwrap();
        assert_eq!(src.recv(1 << 20).unwrap().map(|m| m.len()), Some(100 << 10));
        assert!(control.started().is_none(), "the clock stops at its end");
        // The limit raised (a session authenticated): 200 KiB passes.
        control.set_limit(1 << 20);
        send_frame(proxy.as_fd(), &Frame::Recv(vec![2; 200 << 10]), None).unwrap();
        assert_eq!(src.recv(1 << 20).unwrap().map(|m| m.len()), Some(200 << 10));
        // Lowered again: 200 KiB ends the channel.
        control.set_limit(128 << 10);
        std::thread::spawn({
            let p = proxy.try_clone().unwrap();
            move || {
                let _ = send_frame(p.as_fd(), &Frame::Recv(vec![3; 200 << 10]), None);
            }
        });
        assert!(src.recv(1 << 20).unwrap().is_none(), "channel dropped over the limit");
    }
}
