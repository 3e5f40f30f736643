//! An SMB Direct client over the verbs layer, driven by the transport's sans-I/O core in
//! the client role (`Connection::new(Role::Client, ..)`): credits, fragmentation,
//! reassembly and keepalive answers are the core's, exactly as in the proxy (server
//! role). On top of the connection the client registers a data buffer the server may
//! RDMA-read and RDMA-write (what buffer descriptors name), and a second one in another
//! protection domain (a "foreign" token: valid on this HCA, not for this queue pair).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use smbdirect_transport::smbd::{Action, Config, Connection, Event, Negotiated, Role, SendSlot};
use smbdirect_transport::verbs::{
    Access, CmEventKind, CmId, CompChannel, ConnParam, Cq, EventChannel, Pd, QpCaps, RegisteredBuffer, Wc,
};

const KIND_SHIFT: u32 = 62;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

/// Bytes of the buffer the server may read and write.
pub const DATA_SIZE: usize = 4 << 20;
const FOREIGN_SIZE: usize = 64 << 10;

pub const REMOTE: Access = Access { local_write: true, remote_read: true, remote_write: true };

pub fn wait_cm(ch: &EventChannel, what: &str) -> Result<CmEventKind, String> {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        match ch.get_event() {
            Ok(Some(ev)) => return Ok(ev.kind),
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
    Err(format!("{what}: timeout"))
}

/// An rdma_cm id with its address and route resolved to `addr`, and the
/// event channel that reports on it (both client modes start here).
pub fn resolve(addr: SocketAddr) -> Result<(EventChannel, CmId), String> {
    let ch = EventChannel::new().map_err(|e| e.to_string())?;
    let id = ch.create_id().map_err(|e| e.to_string())?;
    id.resolve_addr(addr, 2000).map_err(|e| format!("resolve_addr: {e}"))?;
    match wait_cm(&ch, "address")? {
        CmEventKind::AddrResolved => {}
        k => return Err(format!("address: {k:?}")),
    }
    id.resolve_route(2000).map_err(|e| format!("resolve_route: {e}"))?;
    match wait_cm(&ch, "route")? {
        CmEventKind::RouteResolved => {}
        k => return Err(format!("route: {k:?}")),
    }
    Ok((ch, id))
}

pub struct SmbdClient {
    // Drop order: the queue pair (in `id`) before the CQ and the buffers.
    id: CmId,
    cq: Cq,
    comp: CompChannel,
    ch: EventChannel,
    recv_buf: RegisteredBuffer,
    send_buf: RegisteredBuffer,
    recv_size: usize,
    send_size: usize,
    recv_free: Vec<u32>,
    /// Registered for remote read and write (the buffer descriptors' target).
    pub data: RegisteredBuffer,
    /// The same rights, but in another protection domain.
    pub foreign: RegisteredBuffer,
    _foreign_pd: Pd,
    core: Connection,
    timer: Option<Instant>,
    wcs: Vec<Wc>,
    scratch: Vec<u8>,
    pub negotiated: Option<Negotiated>,
    /// Whole SMB2 messages received, oldest first.
    pub messages: VecDeque<Vec<u8>>,
    /// When and why the connection ended.
    pub ended: Option<(Instant, String)>,
}

fn wr_id(kind: u64, index: u64) -> u64 {
    (kind << KIND_SHIFT) | (index & INDEX_MASK)
}

impl SmbdClient {
    /// Connects with rdma_cm and runs the SMB Direct negotiate (the core sends the
    /// request); returns once negotiated.
    pub fn connect(addr: SocketAddr, cfg: Config) -> Result<SmbdClient, String> {
        let (ch, mut id) = resolve(addr)?;
        let ctx = id.context().ok_or("no device")?;
        let pd = Pd::new(ctx).map_err(|e| e.to_string())?;
        let comp = CompChannel::new(ctx).map_err(|e| e.to_string())?;
        let recvs = u32::from(cfg.receive_credit_max) + 2;
        let sends = u32::from(cfg.send_slots.max(2));
        let cq = Cq::new(ctx, &comp, recvs + sends + 8).map_err(|e| e.to_string())?;
        let caps = QpCaps { max_send_wr: sends + 2, max_recv_wr: recvs, max_send_sge: 1, max_recv_sge: 1 };
        id.create_qp(&pd, &cq, caps).map_err(|e| format!("create_qp: {e}"))?;
        let recv_size = cfg.max_receive_size as usize;
        let send_size = cfg.max_send_size as usize;
        let recv_buf = RegisteredBuffer::new(&pd, recv_size * recvs as usize, Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
        let send_buf = RegisteredBuffer::new(&pd, send_size * sends as usize, Access::default()).map_err(|e| e.to_string())?;
        let data = RegisteredBuffer::new(&pd, DATA_SIZE, REMOTE).map_err(|e| e.to_string())?;
        let foreign_pd = Pd::new(ctx).map_err(|e| e.to_string())?;
        let foreign = RegisteredBuffer::new(&foreign_pd, FOREIGN_SIZE, REMOTE).map_err(|e| e.to_string())?;
        // The server RDMA-reads our buffers (SMB2 WRITE): offer responder resources.
        id.connect(ConnParam { responder_resources: 8, initiator_depth: 8 }, 7).map_err(|e| format!("connect: {e}"))?;
        match wait_cm(&ch, "connect")? {
            CmEventKind::Established { .. } => {}
            k => return Err(format!("connect: {k:?}")),
        }
        cq.req_notify().map_err(|e| e.to_string())?;
        // The core posts its receives, then the negotiate request.
        let core = Connection::new(Role::Client, cfg, Instant::now());
        let mut c = SmbdClient {
            id,
            cq,
            comp,
            ch,
            recv_buf,
            send_buf,
            recv_size,
            send_size,
            recv_free: (0..recvs).rev().collect(),
            data,
            foreign,
            _foreign_pd: foreign_pd,
            core,
            timer: None,
            wcs: Vec::with_capacity(64),
            scratch: Vec::new(),
            negotiated: None,
            messages: VecDeque::new(),
            ended: None,
        };
        c.drive();
        let end = Instant::now() + Duration::from_secs(10);
        while c.negotiated.is_none() {
            if let Some((_, why)) = &c.ended {
                return Err(format!("SMB Direct negotiate: connection ended: {why}"));
            }
            if Instant::now() > end {
                return Err("SMB Direct negotiate: no response in 10 s".into());
            }
            c.step(Duration::from_millis(100), false);
        }
        Ok(c)
    }

    /// Queues one SMB2 message.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        if let Some((_, why)) = &self.ended {
            return Err(format!("connection ended: {why}"));
        }
        self.core.send(Instant::now(), msg).map_err(|e| e.to_string())?;
        self.drive();
        Ok(())
    }

    /// Waits up to `wait` for completions, connection events or the core's timer and
    /// handles them. `mute`: touch nothing but the connection manager (the queue pair
    /// still acknowledges at the transport level, but no SMB Direct message is
    /// processed or answered: a peer that stopped answering keepalives).
    pub fn step(&mut self, wait: Duration, mute: bool) {
        let now = Instant::now();
        let wait = match self.timer {
            Some(t) if !mute => wait.min(t.saturating_duration_since(now)),
            _ => wait,
        };
        {
            let mut fds = vec![PollFd::from_borrowed_fd(self.ch.fd(), PollFlags::IN)];
            if !mute {
                fds.push(PollFd::from_borrowed_fd(self.comp.fd(), PollFlags::IN));
            }
            let ts = Timespec { tv_sec: wait.as_secs() as i64, tv_nsec: i64::from(wait.subsec_nanos()) };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
        while let Ok(Some(ev)) = self.ch.get_event() {
            match ev.kind {
                CmEventKind::Disconnected | CmEventKind::Error | CmEventKind::Rejected | CmEventKind::DeviceRemoval => {
                    if self.ended.is_none() {
                        self.ended = Some((Instant::now(), format!("the server disconnected ({:?})", ev.kind)));
                    }
                    if !mute {
                        self.core.handle_peer_disconnect(Instant::now());
                    }
                }
                _ => {}
            }
        }
        if mute {
            return;
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
                    self.ended.get_or_insert((Instant::now(), format!("ibv_poll_cq: {e}")));
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
                    self.ended.get_or_insert((Instant::now(), format!("posting failed: {e}")));
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
                        self.ended.get_or_insert((Instant::now(), format!("SMB Direct: {r}")));
                    }
                }
            }
            if !progressed {
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
            Action::PostRdma(_) => Err("the client issues no RDMA".into()),
            Action::SetTimer(t) => {
                self.timer = t;
                Ok(())
            }
            Action::Disconnect(reason) => {
                self.ended.get_or_insert((Instant::now(), format!("SMB Direct: {reason}")));
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
