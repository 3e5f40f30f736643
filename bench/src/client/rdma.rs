//! The SMB Direct channel (MS-SMBD) over verbs: the transport's sans-I/O core
//! (`smbdirect_transport::smbd::Connection`) in the client role drives one RC queue pair
//! made with rdma_cm, exactly as `rdma-proxy` drives it in the server role (credits,
//! fragmentation, reassembly and keepalives are the core's). On top of it the channel
//! registers the caller's buffers in place ([`BufferMr`]: no copy) for the server to
//! RDMA-read (SMB2 WRITE) or RDMA-write (SMB2 READ) and hands out their
//! BufferDescriptorV1 lists.
//!
//! Threads: every method takes `&self`; one mutex guards the core and the queue pair,
//! and [`Channel::recv`] waits for the event and completion channels' fds *without*
//! it (the channels are cloned out), so a sender is never blocked by a waiting reader.
//!
//! RDMA_V1_INVALIDATE: a peer's Send-With-Invalidate cannot invalidate a plain memory
//! region (`ibv_reg_mr`; rxe, like real HCAs, answers it with a remote invalidate error
//! that breaks the queue pair), only memory windows or fast-registered regions. So each
//! registration is a region the peer never sees (local rights and window binding only)
//! with a type 2 memory window bound to it on this channel's queue pair: the descriptor
//! carries the window's key, which the server may invalidate (RDMA_V1_INVALIDATE) or
//! not (RDMA_V1); `deregister` deallocates the window (revoking the key either way),
//! then the region. Where the device has no type 2 windows the channel falls back to
//! plain regions ([`SmbdChannel::supports_remote_invalidate`] says false: use RDMA_V1).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use rustix::event::{PollFd, PollFlags, Timespec};
use smbdirect_transport::smbd::{Action, Config, Connection, Event, Negotiated, Role, SendSlot};
use smbdirect_transport::verbs::{
    Access, BufferMr, CmEventKind, CmId, CompChannel, ConnParam, Cq, EventChannel, Mw, Pd, QpCaps, RegisteredBuffer, Wc,
};

use super::channel::{BufferDescriptorV1, Channel, ChannelError, ChannelLimits, RdmaAccess, Registration};

const KIND_SHIFT: u32 = 62;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
/// Memory window binds (unsignalled: they complete only on error).
const KIND_BIND: u64 = 3;
/// Registrations alive at once (each holds a send queue entry until a later signalled
/// send completes): above any request depth the client uses.
const MAX_REGISTRATIONS: usize = 128;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;
/// Longest single wait on the fds: bounds how late a timer or a closed flag is seen.
const MAX_WAIT: Duration = Duration::from_millis(200);

fn wr_id(kind: u64, index: u64) -> u64 {
    (kind << KIND_SHIFT) | (index & INDEX_MASK)
}

fn err(what: &str, e: impl std::fmt::Display) -> ChannelError {
    ChannelError::Rdma(format!("{what}: {e}"))
}

/// SMB Direct parameters of the client side (what the kernel client uses, with the
/// deeper receive queue and the larger RDMA size a benchmark wants).
pub fn client_config() -> Config {
    Config {
        receive_credit_max: 64,
        send_credit_target: 64,
        send_slots: 32,
        max_read_write_size: 8 << 20,
        ..Config::cifs()
    }
}

fn poll_fds(ch: &EventChannel, comp: &CompChannel, wait: Duration) {
    let mut fds = [PollFd::from_borrowed_fd(ch.fd(), PollFlags::IN), PollFd::from_borrowed_fd(comp.fd(), PollFlags::IN)];
    let ts = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
    // EINTR or a spurious wake-up only means one more look at the queues.
    let _ = rustix::event::poll(&mut fds, Some(&ts));
}

fn wait_cm(ch: &EventChannel, what: &str, timeout: Duration) -> Result<CmEventKind, ChannelError> {
    let end = Instant::now() + timeout;
    loop {
        match ch.get_event() {
            Ok(Some(ev)) => return Ok(ev.kind),
            Ok(None) => {}
            Err(e) => return Err(err(what, e)),
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ChannelError::Timeout(timeout));
        }
        let mut fds = [PollFd::from_borrowed_fd(ch.fd(), PollFlags::IN)];
        let w = left.min(MAX_WAIT);
        let ts = Timespec { tv_sec: w.as_secs() as i64, tv_nsec: i64::from(w.subsec_nanos()) };
        let _ = rustix::event::poll(&mut fds, Some(&ts));
    }
}

/// An SMB Direct channel to `addr` with [`client_config`], ready for the session layer
/// (`Session::connect` or `Session::bind`).
pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<std::sync::Arc<dyn Channel>, ChannelError> {
    Ok(std::sync::Arc::new(SmbdChannel::connect(addr, client_config(), timeout)?))
}

/// One SMB Direct connection to a server, as a [`Channel`].
pub struct SmbdChannel {
    peer: SocketAddr,
    negotiated: Negotiated,
    // Clones of the fds' owners, waited on without the lock.
    ev: EventChannel,
    comp: CompChannel,
    inner: Mutex<Inner>,
}

/// One registration: the window (dropped first: a region with bound windows cannot be
/// deregistered) and the region.
struct Registered {
    mw: Option<Mw>,
    mr: BufferMr,
}

struct Inner {
    // Drop order: the queue pair (in `id`) first, then the registrations, CQ and buffers.
    id: CmId,
    regs: HashMap<u64, Registered>,
    /// The device binds type 2 memory windows (probed at connect).
    windows: bool,
    /// Receives that invalidated one of our live windows' keys (Send-With-Invalidate).
    remote_invalidations: u64,
    next_handle: u64,
    cq: Cq,
    pd: Pd,
    ch: EventChannel,
    comp: CompChannel,
    recv_buf: RegisteredBuffer,
    send_buf: RegisteredBuffer,
    recv_size: usize,
    send_size: usize,
    recv_free: Vec<u32>,
    core: Connection,
    timer: Option<Instant>,
    wcs: Vec<Wc>,
    scratch: Vec<u8>,
    negotiated: Option<Negotiated>,
    messages: VecDeque<Vec<u8>>,
    ended: Option<String>,
}

impl SmbdChannel {
    /// Connects to `addr` (an RDMA-capable address of the server, port 445 or 5445) with
    /// rdma_cm and runs the SMB Direct negotiate; returns once negotiated, or fails
    /// within about `timeout`.
    pub fn connect(addr: SocketAddr, cfg: Config, timeout: Duration) -> Result<SmbdChannel, ChannelError> {
        let t = timeout.max(Duration::from_millis(100));
        let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX);
        let ch = EventChannel::new().map_err(|e| err("rdma_create_event_channel", e))?;
        let mut id = ch.create_id().map_err(|e| err("rdma_create_id", e))?;
        id.resolve_addr(addr, ms).map_err(|e| err("rdma_resolve_addr", e))?;
        match wait_cm(&ch, "address", t)? {
            CmEventKind::AddrResolved => {}
            k => return Err(err("resolving the address", format!("{k:?} (no RDMA device reaches {addr}?)"))),
        }
        id.resolve_route(ms).map_err(|e| err("rdma_resolve_route", e))?;
        match wait_cm(&ch, "route", t)? {
            CmEventKind::RouteResolved => {}
            k => return Err(err("resolving the route", format!("{k:?}"))),
        }
        let ctx = id.context().ok_or_else(|| err("rdma_cm", "no device bound after route resolution"))?;
        let pd = Pd::new(ctx).map_err(|e| err("ibv_alloc_pd", e))?;
        let comp = CompChannel::new(ctx).map_err(|e| err("ibv_create_comp_channel", e))?;
        let recvs = u32::from(cfg.receive_credit_max) + 2;
        let sends = u32::from(cfg.send_slots.max(2));
        let binds = MAX_REGISTRATIONS as u32;
        let cq = Cq::new(ctx, &comp, recvs + sends + binds + 8).map_err(|e| err("ibv_create_cq", e))?;
        let caps = QpCaps { max_send_wr: sends + binds + 2, max_recv_wr: recvs, max_send_sge: 1, max_recv_sge: 1 };
        id.create_qp(&pd, &cq, caps).map_err(|e| err("rdma_create_qp", e))?;
        let recv_size = cfg.max_receive_size as usize;
        let send_size = cfg.max_send_size as usize;
        let recv_buf =
            RegisteredBuffer::new(&pd, recv_size * recvs as usize, Access::LOCAL_WRITE).map_err(|e| err("ibv_reg_mr", e))?;
        let send_buf =
            RegisteredBuffer::new(&pd, send_size * sends as usize, Access::default()).map_err(|e| err("ibv_reg_mr", e))?;
        // The server RDMA-reads our buffers (SMB2 WRITE): offer responder resources.
        id.connect(ConnParam { responder_resources: 8, initiator_depth: 8 }, 7).map_err(|e| err("rdma_connect", e))?;
        match wait_cm(&ch, "connect", t)? {
            CmEventKind::Established { .. } => {}
            k => return Err(err("connecting", format!("{k:?} (nothing listens on {addr}?)"))),
        }
        cq.req_notify().map_err(|e| err("ibv_req_notify_cq", e))?;
        // Type 2 memory windows: the only remotely invalidatable keys user space can make.
        let windows = match Mw::new(&pd) {
            Ok(_) => true,
            Err(e) => {
                tracing::info!(%addr, error = %e, "no type 2 memory windows: RDMA_V1 only (no remote invalidation)");
                false
            }
        };
        // The core posts its receives, then the negotiate request.
        let core = Connection::new(Role::Client, cfg, Instant::now());
        let mut inner = Inner {
            id,
            regs: HashMap::new(),
            windows,
            remote_invalidations: 0,
            next_handle: 1,
            cq,
            pd,
            ch: ch.clone(),
            comp: comp.clone(),
            recv_buf,
            send_buf,
            recv_size,
            send_size,
            recv_free: (0..recvs).rev().collect(),
            core,
            timer: None,
            wcs: Vec::with_capacity(64),
            scratch: Vec::new(),
            negotiated: None,
            messages: VecDeque::new(),
            ended: None,
        };
        inner.drive();
        let end = Instant::now() + t;
        let negotiated = loop {
            inner.step();
            if let Some(n) = inner.negotiated {
                break n;
            }
            if let Some(why) = &inner.ended {
                return Err(err("SMB Direct negotiate", format!("connection ended: {why}")));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = inner.id.disconnect();
                return Err(ChannelError::Timeout(timeout));
            }
            poll_fds(&ch, &comp, inner.wait(left));
        };
        tracing::debug!(%addr, ?negotiated, "SMB Direct channel negotiated");
        Ok(SmbdChannel { peer: addr, negotiated, ev: ch, comp, inner: Mutex::new(inner) })
    }

    /// What the SMB Direct negotiate settled on (MaxReadWriteSize bounds one RDMA
    /// registration and one READ/WRITE).
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Whether registrations are memory windows the server may invalidate
    /// (RDMA_V1_INVALIDATE); false: use RDMA_V1 only (see the module documentation).
    pub fn supports_remote_invalidate(&self) -> bool {
        self.lock().windows
    }

    /// How many of the server's messages invalidated the key of a live registration
    /// (Send-With-Invalidate, the answers to RDMA_V1_INVALIDATE requests).
    pub fn remote_invalidations(&self) -> u64 {
        self.lock().remote_invalidations
    }

    /// Counters of the SMB Direct core (messages, bytes, credits' effects).
    pub fn stats(&self) -> smbdirect_transport::smbd::Stats {
        *self.lock().core.stats()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// How long to wait for the fds: no later than the core's timer, at most `left`.
    fn wait(&self, left: Duration) -> Duration {
        let mut w = left.min(MAX_WAIT);
        if let Some(t) = self.timer {
            w = w.min(t.saturating_duration_since(Instant::now()));
        }
        w
    }

    /// Handles whatever is ready (connection events, completions, the core's timer)
    /// without waiting.
    fn step(&mut self) {
        while let Ok(Some(ev)) = self.ch.get_event() {
            match ev.kind {
                CmEventKind::Disconnected | CmEventKind::Error | CmEventKind::Rejected | CmEventKind::DeviceRemoval => {
                    self.ended.get_or_insert_with(|| format!("the server disconnected ({:?})", ev.kind));
                    self.core.handle_peer_disconnect(Instant::now());
                    self.drive();
                }
                _ => {}
            }
        }
        self.completions();
        let now = Instant::now();
        if self.timer.is_some_and(|t| t <= now) {
            self.timer = None;
            self.core.handle_timeout(now);
            self.drive();
            if self.timer.is_none() {
                self.timer = self.core.poll_timeout();
            }
        }
    }

    fn completions(&mut self) {
        while let Ok(Some(_)) = self.comp.get_event() {
            self.cq.event_received();
        }
        let _ = self.cq.req_notify();
        loop {
            self.wcs.clear();
            let n = match self.cq.poll(&mut self.wcs, 64) {
                Ok(n) => n,
                Err(e) => {
                    self.ended.get_or_insert_with(|| format!("ibv_poll_cq: {e}"));
                    return;
                }
            };
            let now = Instant::now();
            let wcs = std::mem::take(&mut self.wcs);
            for wc in &wcs {
                let index = wc.wr_id & INDEX_MASK;
                match wc.wr_id >> KIND_SHIFT {
                    KIND_RECV => {
                        self.recv_free.push(index as u32);
                        match wc.status {
                            Ok(()) => {
                                if let Some(k) = wc.invalidated_rkey {
                                    if self.regs.values().any(|r| r.mw.as_ref().is_some_and(|m| m.rkey() == k)) {
                                        self.remote_invalidations += 1;
                                    } else {
                                        tracing::warn!(key = k, "the server invalidated a key that is none of our registrations");
                                    }
                                }
                                let n = (wc.byte_len as usize).min(self.recv_size);
                                self.scratch.resize(n, 0);
                                if self.recv_buf.read(index as usize * self.recv_size, &mut self.scratch[..n]) {
                                    self.core.handle_recv(now, &self.scratch[..n]);
                                }
                            }
                            Err(e) => self.core.handle_recv_error(now, e),
                        }
                    }
                    KIND_SEND => self.core.handle_send_complete(now, SendSlot(index as u16), wc.status),
                    KIND_BIND => {
                        if let Err(e) = wc.status {
                            // The queue pair is in error now: every later request fails too.
                            self.ended.get_or_insert_with(|| format!("memory window bind of registration {index} failed: {e:?}"));
                            self.core.close(now);
                        }
                    }
                    _ => {}
                }
                self.drive();
            }
            self.wcs = wcs;
            if n < 64 {
                break;
            }
        }
    }

    /// Executes the core's actions and collects its events.
    fn drive(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.core.poll_action() {
                progressed = true;
                if let Err(e) = self.execute(a) {
                    self.ended.get_or_insert_with(|| format!("posting failed: {e}"));
                    self.core.close(Instant::now());
                }
            }
            while let Some(ev) = self.core.poll_event() {
                progressed = true;
                match ev {
                    Event::Connected(n) => self.negotiated = Some(n),
                    Event::Message(m) => self.messages.push_back(m),
                    Event::RdmaDone { .. } => {}
                    Event::Disconnected(r) => {
                        self.ended.get_or_insert_with(|| format!("SMB Direct: {r}"));
                    }
                }
            }
            if !progressed {
                if self.timer.is_none() {
                    self.timer = self.core.poll_timeout();
                }
                return;
            }
        }
    }

    fn execute(&mut self, a: Action) -> Result<(), String> {
        match a {
            Action::PostReceive { len } => {
                if len as usize > self.recv_size {
                    return Err(format!("receive of {len} bytes asked, buffers are {}", self.recv_size));
                }
                let i = self.recv_free.pop().ok_or("no free receive buffer")?;
                let sge = self.recv_buf.sge(i as usize * self.recv_size, self.recv_size as u32).ok_or("receive range")?;
                self.id.post_recv(wr_id(KIND_RECV, u64::from(i)), sge).map_err(|e| e.to_string())
            }
            Action::PostSend { slot, len: _, invalidate } => {
                let off = usize::from(slot.0) * self.send_size;
                let bytes = self.core.send_bytes(slot);
                if bytes.len() > self.send_size || !self.send_buf.write(off, bytes) {
                    return Err("send larger than its slot".into());
                }
                let sge = self.send_buf.sge(off, bytes.len() as u32).ok_or("send range")?;
                self.id.post_send(wr_id(KIND_SEND, u64::from(slot.0)), sge, invalidate).map_err(|e| e.to_string())
            }
            // The client side of SMB2 never initiates RDMA: the server reads and writes.
            Action::PostRdma(_) => Err("the client core asked for an RDMA operation".into()),
            Action::SetTimer(t) => {
                self.timer = t;
                Ok(())
            }
            Action::Disconnect(reason) => {
                self.ended.get_or_insert_with(|| format!("SMB Direct: {reason}"));
                let _ = self.id.disconnect();
                Ok(())
            }
        }
    }
}

impl Channel for SmbdChannel {
    fn send(&self, msg: &[u8], _timeout: Duration) -> Result<(), ChannelError> {
        let mut g = self.lock();
        if g.ended.is_some() {
            return Err(ChannelError::Closed);
        }
        let max = self.negotiated.peer_max_fragmented_size as usize;
        if msg.len() > max {
            return Err(ChannelError::TooLarge { len: msg.len(), limit: max });
        }
        // The core queues what the send credits do not cover yet; credits arrive with
        // the server's messages, which recv() processes.
        g.core.send(Instant::now(), msg).map_err(|e| err("send", e))?;
        g.drive();
        match &g.ended {
            Some(_) => Err(ChannelError::Closed),
            None => Ok(()),
        }
    }

    fn recv(&self, timeout: Duration) -> Result<Vec<u8>, ChannelError> {
        let end = Instant::now() + timeout;
        loop {
            let wait = {
                let mut g = self.lock();
                if let Some(m) = g.messages.pop_front() {
                    return Ok(m);
                }
                g.step();
                if let Some(m) = g.messages.pop_front() {
                    return Ok(m);
                }
                if let Some(why) = &g.ended {
                    tracing::debug!(peer = %self.peer, why, "SMB Direct channel ended");
                    return Err(ChannelError::Closed);
                }
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ChannelError::Timeout(timeout));
                }
                g.wait(left)
            };
            poll_fds(&self.ev, &self.comp, wait);
        }
    }

    fn is_rdma(&self) -> bool {
        true
    }

    fn limits(&self) -> ChannelLimits {
        ChannelLimits {
            max_send: self.negotiated.peer_max_fragmented_size as usize,
            max_recv: self.negotiated.max_fragmented_recv_size as usize,
            max_rdma: self.negotiated.max_read_write_size as usize,
        }
    }

    fn register(&self, buf: Vec<u8>, access: RdmaAccess) -> Result<Registration, ChannelError> {
        let limit = self.negotiated.max_read_write_size as usize;
        if buf.len() > limit {
            return Err(ChannelError::TooLarge { len: buf.len(), limit });
        }
        let rights = match access {
            // Remote write needs local write too (a verbs rule).
            RdmaAccess::PeerWrites => Access { local_write: true, remote_read: false, remote_write: true },
            RdmaAccess::PeerReads => Access { local_write: false, remote_read: true, remote_write: false },
        };
        let mut g = self.lock();
        if g.ended.is_some() {
            return Err(ChannelError::Closed);
        }
        if g.regs.len() >= MAX_REGISTRATIONS {
            return Err(err("register", format!("{MAX_REGISTRATIONS} registrations already alive")));
        }
        let len = buf.len() as u32;
        let handle = g.next_handle;
        let reg = if g.windows {
            // The region itself grants no remote access: only the window's key does.
            let local = Access { local_write: true, remote_read: false, remote_write: false };
            let mr = BufferMr::new_bindable(&g.pd, buf, local).map_err(|(e, _)| err("ibv_reg_mr", e))?;
            let mut mw = Mw::new(&g.pd).map_err(|e| err("ibv_alloc_mw", e))?;
            g.id.post_bind_mw(wr_id(KIND_BIND, handle), &mut mw, &mr, rights).map_err(|e| err("binding a memory window", e))?;
            Registered { mw: Some(mw), mr }
        } else {
            let mr = BufferMr::new(&g.pd, buf, rights).map_err(|(e, _)| err("ibv_reg_mr", e))?;
            Registered { mw: None, mr }
        };
        let token = reg.mw.as_ref().map_or_else(|| reg.mr.rkey(), Mw::rkey);
        let descriptors = vec![BufferDescriptorV1 { offset: reg.mr.addr(), token, length: len }];
        g.next_handle += 1;
        g.regs.insert(handle, reg);
        Ok(Registration { descriptors, handle })
    }

    fn deregister(&self, handle: u64) -> Result<Vec<u8>, ChannelError> {
        let Registered { mw, mr } = self.lock().regs.remove(&handle).ok_or(ChannelError::UnknownHandle(handle))?;
        // The window first (revokes its key whether or not the server invalidated it).
        drop(mw);
        Ok(mr.into_inner())
    }

    fn close(&self) {
        let mut g = self.lock();
        g.ended.get_or_insert_with(|| "closed by the client".into());
        let _ = g.id.disconnect();
    }

    fn peer(&self) -> String {
        format!("rdma://{}", self.peer)
    }
}

impl Drop for SmbdChannel {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = g.id.disconnect();
    }
}
