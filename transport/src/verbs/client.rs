//! The SMB Direct client role over verbs: the sans-I/O core
//! ([`crate::smbd::Connection`] in [`Role::Client`]) driving one RC queue pair made with
//! rdma_cm (credits, fragmentation, reassembly and keepalives are the core's, exactly as
//! `rdma-proxy` drives it in the server role). Shared by the project's SMB client
//! (`bench/src/client/rdma.rs`, which adds registrations and memory windows) and the
//! fault injector `smbd-fault` (which adds raw buffers and a "mute" peer).
//!
//! The driver owns no thread and never waits on its own except in [`ClientDriver::connect`]
//! (address, route, connection): the caller polls [`ClientDriver::fds`] (or sleeps) and
//! calls [`ClientDriver::step`]. Work request ids: kind in the top two bits
//! ([`wr_id`]); kinds [`KIND_RECV`] and [`KIND_SEND`] are the driver's, the caller may
//! post its own work requests with kinds 0 and 3 and sees their completions through the
//! [`Seen::Other`] hook.

#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::smbd::{Action, Config, Connection, Event, Negotiated, Role, SendSlot};
use crate::verbs::{
    Access, CmEventKind, CmId, CompChannel, ConnParam, Cq, EventChannel, Pd, QpCaps, RegisteredBuffer, Wc,
};

/// Bits of a work request id below the kind.
pub const KIND_SHIFT: u32 = 62;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;
/// The driver's receives.
pub const KIND_RECV: u64 = 1;
/// The driver's sends.
pub const KIND_SEND: u64 = 2;

/// A work request id of `kind` (0..=3) and `index`.
pub fn wr_id(kind: u64, index: u64) -> u64 {
    (kind << KIND_SHIFT) | (index & INDEX_MASK)
}

/// The index part of a work request id.
pub fn wr_index(id: u64) -> u64 {
    id & INDEX_MASK
}

/// What the driver shows the caller while it handles completions.
#[derive(Debug)]
pub enum Seen<'a> {
    /// A receive invalidated this key of ours (Send-With-Invalidate), before the message
    /// it carried is handed to the core.
    Invalidated(u32),
    /// A completion of one of the caller's own work requests (kinds 0 and 3).
    Other(&'a Wc),
}

/// Longest single wait: bounds how late a timer or a closed flag is seen.
pub const MAX_WAIT: Duration = Duration::from_millis(200);

/// Waits up to `wait` for the event channel's or the completion channel's fd (None:
/// the connection manager only). EINTR or a spurious wake-up only means one more look.
pub fn poll_fds(ch: &EventChannel, comp: Option<&CompChannel>, wait: Duration) {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let mut fds = vec![PollFd::from_borrowed_fd(ch.fd(), PollFlags::IN)];
    if let Some(c) = comp {
        fds.push(PollFd::from_borrowed_fd(c.fd(), PollFlags::IN));
    }
    let ts = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
    let _ = rustix::event::poll(&mut fds, Some(&ts));
}

/// The next connection manager event within `timeout`.
pub fn wait_cm(ch: &EventChannel, what: &str, timeout: Duration) -> Result<CmEventKind, String> {
    let end = Instant::now() + timeout;
    loop {
        match ch.get_event() {
            Ok(Some(ev)) => return Ok(ev.kind),
            Ok(None) => {}
            Err(e) => return Err(format!("{what}: {e}")),
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{what}: no answer within {timeout:?}"));
        }
        poll_fds(ch, None, left.min(MAX_WAIT));
    }
}

/// An rdma_cm id with its address and route resolved to `addr`, and the event channel
/// that reports on it.
pub fn resolve(addr: SocketAddr, timeout: Duration) -> Result<(EventChannel, CmId), String> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let ch = EventChannel::new().map_err(|e| format!("rdma_create_event_channel: {e}"))?;
    let id = ch.create_id().map_err(|e| format!("rdma_create_id: {e}"))?;
    id.resolve_addr(addr, ms).map_err(|e| format!("rdma_resolve_addr: {e}"))?;
    match wait_cm(&ch, "resolving the address", timeout)? {
        CmEventKind::AddrResolved => {}
        k => return Err(format!("resolving the address: {k:?} (no RDMA device reaches {addr}?)")),
    }
    id.resolve_route(ms).map_err(|e| format!("rdma_resolve_route: {e}"))?;
    match wait_cm(&ch, "resolving the route", timeout)? {
        CmEventKind::RouteResolved => {}
        k => return Err(format!("resolving the route: {k:?}")),
    }
    Ok((ch, id))
}

/// One SMB Direct connection in the client role.
pub struct ClientDriver {
    // Drop order: the queue pair (in `id`) before the CQ and the buffers.
    pub id: CmId,
    pub cq: Cq,
    pub pd: Pd,
    pub ch: EventChannel,
    pub comp: CompChannel,
    recv_buf: RegisteredBuffer,
    send_buf: RegisteredBuffer,
    recv_size: usize,
    send_size: usize,
    recv_free: Vec<u32>,
    pub core: Connection,
    timer: Option<Instant>,
    wcs: Vec<Wc>,
    scratch: Vec<u8>,
    /// What the SMB Direct negotiate settled on, once it did.
    pub negotiated: Option<Negotiated>,
    /// Whole SMB2 messages received, oldest first.
    pub messages: VecDeque<Vec<u8>>,
    /// When and why the connection ended.
    pub ended: Option<(Instant, String)>,
}

impl ClientDriver {
    /// Resolves `addr`, makes a queue pair with room for `extra_send_wr` work requests of
    /// the caller's besides the core's sends (and as many more completion queue entries),
    /// connects, and lets the core post its receives and the negotiate request. Returns
    /// before the negotiate answer: [`ClientDriver::step`] until `negotiated` or `ended`.
    pub fn connect(addr: SocketAddr, cfg: Config, timeout: Duration, extra_send_wr: u32) -> Result<ClientDriver, String> {
        let (ch, mut id) = resolve(addr, timeout)?;
        let ctx = id.context().ok_or("rdma_cm: no device bound after route resolution")?;
        let pd = Pd::new(ctx).map_err(|e| format!("ibv_alloc_pd: {e}"))?;
        let comp = CompChannel::new(ctx).map_err(|e| format!("ibv_create_comp_channel: {e}"))?;
        let recvs = u32::from(cfg.receive_credit_max) + 2;
        let sends = u32::from(cfg.send_slots.max(2));
        let cq = Cq::new(ctx, &comp, recvs + sends + extra_send_wr + 8).map_err(|e| format!("ibv_create_cq: {e}"))?;
        let caps = QpCaps { max_send_wr: sends + extra_send_wr + 2, max_recv_wr: recvs, max_send_sge: 1, max_recv_sge: 1 };
        id.create_qp(&pd, &cq, caps).map_err(|e| format!("rdma_create_qp: {e}"))?;
        let recv_size = cfg.max_receive_size as usize;
        let send_size = cfg.max_send_size as usize;
        let recv_buf =
            RegisteredBuffer::new(&pd, recv_size * recvs as usize, Access::LOCAL_WRITE).map_err(|e| format!("ibv_reg_mr: {e}"))?;
        let send_buf =
            RegisteredBuffer::new(&pd, send_size * sends as usize, Access::default()).map_err(|e| format!("ibv_reg_mr: {e}"))?;
        // The server RDMA-reads our buffers (SMB2 WRITE): offer responder resources.
        id.connect(ConnParam { responder_resources: 8, initiator_depth: 8 }, 7).map_err(|e| format!("rdma_connect: {e}"))?;
        match wait_cm(&ch, "connecting", timeout)? {
            CmEventKind::Established { .. } => {}
            k => return Err(format!("connecting: {k:?} (nothing listens on {addr}?)")),
        }
        cq.req_notify().map_err(|e| format!("ibv_req_notify_cq: {e}"))?;
        let core = Connection::new(Role::Client, cfg, Instant::now());
        let mut d = ClientDriver {
            id,
            cq,
            pd,
            ch,
            comp,
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
        d.drive();
        Ok(d)
    }

    /// How long to wait for the fds: no later than the core's timer, at most `left`
    /// and [`MAX_WAIT`].
    pub fn wait_time(&self, left: Duration) -> Duration {
        let mut w = left.min(MAX_WAIT);
        if let Some(t) = self.timer {
            w = w.min(t.saturating_duration_since(Instant::now()));
        }
        w
    }

    /// Records why the connection ended (the first reason stays).
    pub fn end(&mut self, why: impl Into<String>) {
        if self.ended.is_none() {
            self.ended = Some((Instant::now(), why.into()));
        }
    }

    /// Handles the connection manager's events without waiting. `tell_core`: let the core
    /// see a disconnect (false for a peer playing dead, which processes nothing).
    pub fn cm_events(&mut self, tell_core: bool) {
        while let Ok(Some(ev)) = self.ch.get_event() {
            match ev.kind {
                CmEventKind::Disconnected | CmEventKind::Error | CmEventKind::Rejected | CmEventKind::DeviceRemoval => {
                    self.end(format!("the server disconnected ({:?})", ev.kind));
                    if tell_core {
                        self.core.handle_peer_disconnect(Instant::now());
                        self.drive();
                    }
                }
                _ => {}
            }
        }
    }

    /// Handles whatever is ready (connection events, completions, the core's timer)
    /// without waiting; `hook` sees invalidated keys and the caller's own completions,
    /// and may end the connection by returning a reason.
    pub fn step(&mut self, hook: &mut dyn FnMut(Seen<'_>) -> Option<String>) {
        self.cm_events(true);
        self.completions(hook);
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

    fn completions(&mut self, hook: &mut dyn FnMut(Seen<'_>) -> Option<String>) {
        while let Ok(Some(_)) = self.comp.get_event() {
            self.cq.event_received();
        }
        let _ = self.cq.req_notify();
        loop {
            self.wcs.clear();
            let n = match self.cq.poll(&mut self.wcs, 64) {
                Ok(n) => n,
                Err(e) => {
                    self.end(format!("ibv_poll_cq: {e}"));
                    return;
                }
            };
            let now = Instant::now();
            let wcs = std::mem::take(&mut self.wcs);
            for wc in &wcs {
                let index = wr_index(wc.wr_id);
                let verdict = match wc.wr_id >> KIND_SHIFT {
                    KIND_RECV => {
                        self.recv_free.push(index as u32);
                        match wc.status {
                            Ok(()) => {
                                let v = wc.invalidated_rkey.and_then(|k| hook(Seen::Invalidated(k)));
                                let n = (wc.byte_len as usize).min(self.recv_size);
                                self.scratch.resize(n, 0);
                                if self.recv_buf.read(index as usize * self.recv_size, &mut self.scratch[..n]) {
                                    self.core.handle_recv(now, &self.scratch[..n]);
                                }
                                v
                            }
                            Err(e) => {
                                self.core.handle_recv_error(now, e);
                                None
                            }
                        }
                    }
                    KIND_SEND => {
                        self.core.handle_send_complete(now, SendSlot(index as u16), wc.status);
                        None
                    }
                    _ => hook(Seen::Other(wc)),
                };
                if let Some(why) = verdict {
                    self.end(why);
                    self.core.close(now);
                }
                self.drive();
            }
            self.wcs = wcs;
            if n < 64 {
                break;
            }
        }
    }

    /// Queues one SMB2 message (the core sends what its credits allow now, the rest as
    /// credits arrive).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        if let Some((_, why)) = &self.ended {
            return Err(format!("connection ended: {why}"));
        }
        self.core.send(Instant::now(), msg).map_err(|e| e.to_string())?;
        self.drive();
        Ok(())
    }

    /// Executes the core's actions and collects its events.
    pub fn drive(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(a) = self.core.poll_action() {
                progressed = true;
                if let Err(e) = self.execute(a) {
                    self.end(format!("posting failed: {e}"));
                    self.core.close(Instant::now());
                }
            }
            while let Some(ev) = self.core.poll_event() {
                progressed = true;
                match ev {
                    Event::Connected(n) => self.negotiated = Some(n),
                    Event::Message(m) => self.messages.push_back(m),
                    Event::RdmaDone { .. } => {}
                    Event::Disconnected(r) => self.end(format!("SMB Direct: {r}")),
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
                self.end(format!("SMB Direct: {reason}"));
                let _ = self.id.disconnect();
                Ok(())
            }
        }
    }

    /// Ends the connection from our side.
    pub fn disconnect(&mut self) {
        let _ = self.id.disconnect();
    }
}
