//! The proxy's event loop: rdma_cm listeners, one [`Connection`] (server role) per
//! queue pair driven over the verbs layer, and the channel sockets to the worker
//! (RDMA-DESIGN.md). One thread, one `poll` over the rdma_cm fd, every connection's
//! completion-channel fd, the control socket and the channel sockets.
//!
//! Per connection, in order: a connect request gets a CQ (with its own completion
//! channel), an RC queue pair, registered receive and send buffers, a `Connection`
//! whose initial receives are posted, and only then `rdma_accept` (responder
//! resources and initiator depth bounded by the device). Completions are fed to the
//! core and its actions executed on the queue pair, exactly as the in-memory fabric
//! does. The first upper-layer message becomes a `ChannelOffer` to the worker with a
//! fresh SEQPACKET socket; later ones go as `Recv` frames. `Send`, `Rdma` and `Close`
//! frames from the worker are executed on the connection; RDMA requests are checked
//! (descriptor count, sum of lengths, MaxReadWriteSize, pool range) before anything is
//! posted. When the connection ends, one line logs its counters (RDMA and inline bytes,
//! SMB Direct keepalives sent and answered).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use smbdirect_transport::smbd::{Action, Config, Connection, Event, LocalSegment, RdmaError, RdmaOpId, Role, SendSlot};
use smbdirect_transport::verbs::{
    self, Access, CmEventKind, CmId, CmKey, CompChannel, ConnParam, Context, Cq, DeviceAttr, EventChannel, Mr, Pd,
    QpCaps, RdmaOp, RegisteredBuffer, Sge, Wc,
};
use tracing::{debug, error, info, warn};

use crate::fdpass::{self, FrameReader};
use crate::pool::PoolMap;
use crate::launch::exit;
use crate::proto::{
    close_reason, listener_status, rdma_status, ChannelOffer, ChannelStats, Frame, Hello, ListenerReport, Negotiated,
    RdmaDir, RdmaDone, RdmaRequest, MAX_FRAME_OVERHEAD,
};

/// SMB Direct ports: 445 (InfiniBand, RoCE), 5445 (iWARP).
pub const PORT: u16 = 445;
pub const IWARP_PORT: u16 = 5445;

/// Most buffer descriptors one RDMA request may name (cifs sends one per I/O; ksmbd
/// accepts a handful). Bounds the work the proxy does per request.
pub const MAX_DESCRIPTORS: usize = 64;

/// How long a closing connection may wait for the CM's DISCONNECTED event and for its
/// last frames to reach the worker before its resources are freed anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Options {
    /// Addresses to listen on; empty: the wildcard (every RDMA device).
    pub listen: Vec<std::net::IpAddr>,
    /// Ports; empty: 445, and 5445 too when an iWARP device exists.
    pub ports: Vec<u16>,
    pub pool_size: u64,
    pub slot_size: u32,
    /// SMB Direct parameters (server role).
    pub config: Config,
    /// Cap on RDMA READs we issue at once per queue pair (ksmbd: 8).
    pub max_initiator_depth: u8,
    /// RNR retry count given to the CM (7 = retry forever).
    pub rnr_retry: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: Vec::new(),
            ports: Vec::new(),
            pool_size: 64 << 20,
            slot_size: 8 << 20,
            // ksmbd's, but 10 s to negotiate (ksmbd: 5 s): an emulated guest under load
            // was seen taking longer between accept and the client's negotiate.
            config: Config { negotiate_timeout: Duration::from_secs(10), ..Config::ksmbd() },
            max_initiator_depth: 8,
            rnr_retry: 6,
        }
    }
}

/// Why the proxy could not start serving; [`StartError::exit_code`] is the status
/// the server's supervisor explains (see [`crate::launch::exit`]).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no RDMA device to listen on")]
    NoDevice,
    #[error("cannot pin memory for the pool: {0} (raise RLIMIT_MEMLOCK or grant CAP_IPC_LOCK)")]
    NoMemlock(io::Error),
    #[error("every SMB Direct port is in use")]
    PortInUse,
    #[error("{0}")]
    Other(io::Error),
}

impl StartError {
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::NoDevice => exit::NO_DEVICE,
            StartError::NoMemlock(_) => exit::NO_MEMLOCK,
            StartError::PortInUse => exit::PORT_IN_USE,
            StartError::Other(_) => 1,
        }
    }
}

fn is_memlock_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc_errno::ENOMEM) | Some(libc_errno::EPERM) | Some(libc_errno::EAGAIN))
}

mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const ENODEV: i32 = 19;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
}

// wr_id: kind in the top two bits, index below.
const KIND_SHIFT: u32 = 62;
const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_RDMA: u64 = 3;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

fn wr_id(kind: u64, index: u64) -> u64 {
    (kind << KIND_SHIFT) | (index & INDEX_MASK)
}

/// Checks a worker's RDMA request before anything is posted.
pub fn check_rdma_request(req: &RdmaRequest, pool_len: u64, max_read_write_size: u32) -> Result<(), String> {
    if req.len == 0 {
        return Err("zero length".into());
    }
    if req.descriptors.is_empty() || req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(format!("{} buffer descriptors (1 to {MAX_DESCRIPTORS})", req.descriptors.len()));
    }
    let mut sum = 0u64;
    for d in &req.descriptors {
        if d.length == 0 {
            return Err("empty buffer descriptor".into());
        }
        if d.offset.checked_add(u64::from(d.length)).is_none() {
            return Err("buffer descriptor range overflows".into());
        }
        sum += u64::from(d.length);
    }
    if sum != u64::from(req.len) {
        return Err(format!("descriptors cover {sum} bytes, request says {}", req.len));
    }
    if req.len > max_read_write_size {
        return Err(format!("{} bytes exceed MaxReadWriteSize {max_read_write_size}", req.len));
    }
    match req.pool_offset.checked_add(u64::from(req.len)) {
        Some(end) if end <= pool_len => Ok(()),
        _ => Err(format!("pool range {}+{} outside the pool of {pool_len}", req.pool_offset, req.len)),
    }
}

/// Per device: the PD every queue pair of the device uses and the pool's registration
/// in it.
struct Dev {
    // Field order = drop order: the registration goes before the PD it holds.
    pool_mr: Mr,
    pd: Pd,
    attr: DeviceAttr,
}

struct Conn {
    id: u64,
    // Drop order: the queue pair (in `cm`) before the CQ and the buffers.
    cm: CmId,
    cq: Cq,
    comp: CompChannel,
    recv_buf: RegisteredBuffer,
    recv_size: usize,
    recv_free: Vec<u32>,
    send_buf: RegisteredBuffer,
    send_size: usize,
    core: Connection,
    timer: Option<Instant>,
    pool: LocalSegment,
    sock: Option<OwnedFd>,
    reader: FrameReader,
    out: VecDeque<Vec<u8>>,
    offered: bool,
    rdma_ops: HashMap<RdmaOpId, (u64, RdmaDir)>,
    /// `RdmaSend` answers waiting for the last work request of their RDMA WRITE to be
    /// posted (then they are sent, right behind it).
    replies: HashMap<RdmaOpId, Reply>,
    stats: ChannelStats,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    established: bool,
    cm_gone: bool,
    core_done: bool,
    closing_since: Option<Instant>,
}

/// The SMB2 message of an `RdmaSend`, held until its RDMA WRITE is wholly posted.
struct Reply {
    /// Bytes of the WRITE not yet posted.
    unposted: u64,
    invalidate: Option<u32>,
    msg: Vec<u8>,
}

/// A connection's verbs objects and core, before its rdma_cm id joins them.
struct Parts {
    id: u64,
    cq: Cq,
    comp: CompChannel,
    recv_buf: RegisteredBuffer,
    recv_size: usize,
    recv_count: u32,
    send_buf: RegisteredBuffer,
    send_size: usize,
    core: Connection,
    pool: LocalSegment,
}

impl Parts {
    fn into_conn(self, cm: CmId) -> Conn {
        Conn {
            id: self.id,
            cm,
            cq: self.cq,
            comp: self.comp,
            recv_buf: self.recv_buf,
            recv_size: self.recv_size,
            recv_free: (0..self.recv_count).rev().collect(),
            send_buf: self.send_buf,
            send_size: self.send_size,
            core: self.core,
            timer: None,
            pool: self.pool,
            sock: None,
            reader: FrameReader::new(MAX_FRAME_OVERHEAD + (16 << 20)),
            out: VecDeque::new(),
            offered: false,
            rdma_ops: HashMap::new(),
            replies: HashMap::new(),
            stats: ChannelStats { channel_id: self.id, ..Default::default() },
            peer: None,
            local: None,
            established: false,
            cm_gone: false,
            core_done: false,
            closing_since: None,
        }
    }
}

/// Where a poll entry points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Cm,
    Control,
    Comp(u64),
    Sock(u64),
}

pub struct Proxy {
    // Drop order: connections (queue pairs) first, then listeners, devices (MRs, PDs),
    // the event channel, and last the pool mapping the MRs cover.
    conns: HashMap<u64, Conn>,
    listeners: Vec<CmId>,
    devs: HashMap<Context, Dev>,
    keys: HashMap<CmKey, u64>,
    cm: EventChannel,
    control: OwnedFd,
    control_reader: FrameReader,
    opts: Options,
    next_id: u64,
    scratch: Vec<u8>,
    wcs: Vec<Wc>,
    pool: Arc<PoolMap>,
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let fl = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

impl Proxy {
    /// Creates the pool, says Hello on `control`, registers the pool on every device
    /// and listens, reporting each device and port to the server (`Listener`).
    pub fn new(opts: Options, control: OwnedFd) -> Result<Proxy, StartError> {
        let pool = Arc::new(PoolMap::create(opts.pool_size).map_err(|e| StartError::Other(io::Error::other(e)))?);
        let hello = Frame::Hello(Hello::whole_pool(opts.pool_size, opts.slot_size));
        fdpass::send_frame(control.as_fd(), &hello, Some(pool.fd())).map_err(|e| StartError::Other(io::Error::other(e)))?;
        let cm = EventChannel::new().map_err(|e| {
            if e.raw_os_error() == Some(libc_errno::ENODEV) || e.kind() == io::ErrorKind::NotFound {
                StartError::NoDevice
            } else {
                StartError::Other(e)
            }
        })?;
        let mut p = Proxy {
            conns: HashMap::new(),
            listeners: Vec::new(),
            devs: HashMap::new(),
            keys: HashMap::new(),
            cm,
            control,
            control_reader: FrameReader::new(64 * 1024),
            opts,
            next_id: 1,
            scratch: Vec::new(),
            wcs: Vec::with_capacity(64),
            pool,
        };
        p.listen()?;
        Ok(p)
    }

    fn report(&self, device: &str, addr: Option<SocketAddr>, status: u32, message: String) {
        let l = ListenerReport { device: device.to_string(), port_num: 0, addr, status, message };
        if let Err(e) = fdpass::send_frame(self.control.as_fd(), &Frame::Listener(l), None) {
            warn!("control socket: {e}");
        }
    }

    fn listen(&mut self) -> Result<(), StartError> {
        let devs = verbs::devices().unwrap_or_default();
        if devs.is_empty() {
            warn!("no RDMA device found");
            self.report("", None, listener_status::NO_DEVICE, "no RDMA device".into());
            return Err(StartError::NoDevice);
        }
        let mut iwarp = false;
        let mut registered = 0;
        let mut memlock: Option<io::Error> = None;
        for d in &devs {
            let attr = d.query();
            iwarp |= d.is_iwarp();
            info!(device = %d.name(), iwarp = d.is_iwarp(), ?attr, "RDMA device");
            // Register the pool now: pinning it takes seconds on a slow machine, which a
            // first connection should not wait for.
            match self.device(*d) {
                Ok(_) => registered += 1,
                Err(e) => {
                    error!(device = %d.name(), "cannot register the pool: {e} (RLIMIT_MEMLOCK too low? needs CAP_IPC_LOCK or ulimit -l)");
                    let status = if is_memlock_error(&e) { listener_status::NO_MEMLOCK } else { listener_status::OTHER };
                    self.report(&d.name(), None, status, format!("cannot register the pool: {e}"));
                    if is_memlock_error(&e) {
                        memlock = Some(e);
                    }
                }
            }
        }
        if registered == 0 {
            return Err(match memlock {
                Some(e) => StartError::NoMemlock(e),
                None => StartError::NoDevice,
            });
        }
        let ports = if self.opts.ports.is_empty() {
            if iwarp {
                vec![PORT, IWARP_PORT]
            } else {
                vec![PORT]
            }
        } else {
            self.opts.ports.clone()
        };
        let ips = if self.opts.listen.is_empty() { vec![Ipv4Addr::UNSPECIFIED.into()] } else { self.opts.listen.clone() };
        let names: Vec<String> = devs.iter().map(|d| d.name()).collect();
        let device = names.join(",");
        let mut in_use = 0;
        for ip in ips {
            for &port in &ports {
                let a = SocketAddr::new(ip, port);
                match self.cm.listen(a, 64) {
                    Ok(id) => {
                        let dev = id.context().map(|c| c.name()).unwrap_or_else(|| device.clone());
                        info!(device = %dev, "listening for SMB Direct on {a}");
                        self.report(&dev, Some(a), listener_status::LISTENING, String::new());
                        self.listeners.push(id);
                    }
                    Err(e) => {
                        error!("cannot listen for SMB Direct on {a}: {e}");
                        let status = match e.raw_os_error() {
                            Some(libc_errno::EADDRINUSE) => {
                                in_use += 1;
                                listener_status::PORT_IN_USE
                            }
                            Some(libc_errno::ENODEV) | Some(libc_errno::EADDRNOTAVAIL) => listener_status::NO_DEVICE,
                            _ => listener_status::OTHER,
                        };
                        self.report(&device, Some(a), status, e.to_string());
                    }
                }
            }
        }
        if self.listeners.is_empty() {
            return Err(if in_use > 0 { StartError::PortInUse } else { StartError::NoDevice });
        }
        Ok(())
    }

    /// Runs until the control socket closes (the worker is gone).
    pub fn run(&mut self) -> io::Result<()> {
        loop {
            let now = Instant::now();
            let next = self.conns.values().filter_map(|c| c.timer).min();
            let wait = next.map(|t| t.saturating_duration_since(now)).unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(1));
            let ready = self.wait(wait)?;
            for t in ready {
                match t {
                    Target::Cm => self.on_cm_events(),
                    Target::Control => {
                        if !self.on_control() {
                            info!("control socket closed: the worker is gone; closing every channel");
                            self.shutdown();
                            return Ok(());
                        }
                    }
                    Target::Comp(id) => self.on_completions(id),
                    Target::Sock(id) => self.on_sock(id),
                }
            }
            let now = Instant::now();
            let due: Vec<u64> = self.conns.values().filter(|c| c.timer.is_some_and(|t| t <= now)).map(|c| c.id).collect();
            for id in due {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.timer = None;
                    c.core.handle_timeout(now);
                }
                self.pump(id);
                // The core reports a timer only when it changes: after a firing, ask it
                // which deadline is next rather than rely on a SetTimer action.
                if let Some(c) = self.conns.get_mut(&id) {
                    if c.timer.is_none() {
                        c.timer = c.core.poll_timeout();
                    }
                }
            }
            self.reap(Instant::now());
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<Vec<Target>> {
        let mut fds = Vec::with_capacity(2 + 2 * self.conns.len());
        let mut targets = Vec::with_capacity(fds.capacity());
        fds.push(PollFd::from_borrowed_fd(self.cm.fd(), PollFlags::IN));
        targets.push(Target::Cm);
        fds.push(PollFd::from_borrowed_fd(self.control.as_fd(), PollFlags::IN));
        targets.push(Target::Control);
        for c in self.conns.values() {
            fds.push(PollFd::from_borrowed_fd(c.comp.fd(), PollFlags::IN));
            targets.push(Target::Comp(c.id));
            if let Some(s) = &c.sock {
                let mut fl = PollFlags::IN;
                if !c.out.is_empty() {
                    fl |= PollFlags::OUT;
                }
                fds.push(PollFd::from_borrowed_fd(s.as_fd(), fl));
                targets.push(Target::Sock(c.id));
            }
        }
        let ts = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: i64::from(timeout.subsec_nanos()) };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        Ok(fds.iter().zip(targets).filter(|(f, _)| !f.revents().is_empty()).map(|(_, t)| t).collect())
    }

    // ---- rdma_cm ----

    fn on_cm_events(&mut self) {
        loop {
            let ev = match self.cm.get_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return,
                Err(e) => {
                    error!("rdma_get_cm_event: {e}");
                    return;
                }
            };
            let now = Instant::now();
            match ev.kind {
                CmEventKind::ConnectRequest { id, param } => self.on_connect_request(id, param),
                kind => {
                    let Some(&cid) = self.keys.get(&ev.key) else {
                        debug!(?kind, status = ev.status, "CM event for no connection");
                        continue;
                    };
                    match kind {
                        CmEventKind::Established { param } => {
                            if let Some(c) = self.conns.get_mut(&cid) {
                                c.established = true;
                                debug!(channel = cid, ?param, "established");
                                // Ended before the CM got here: rdma_disconnect may have
                                // been refused then; now it is not.
                                if c.core_done {
                                    let _ = c.cm.disconnect();
                                }
                            }
                        }
                        CmEventKind::TimewaitExit | CmEventKind::Other(_) => {}
                        kind => {
                            if let Some(c) = self.conns.get_mut(&cid) {
                                debug!(channel = cid, ?kind, status = ev.status, "connection ended by the CM");
                                c.cm_gone = true;
                                c.core.handle_peer_disconnect(now);
                            }
                            self.pump(cid);
                        }
                    }
                }
            }
        }
    }

    fn device(&mut self, ctx: Context) -> io::Result<&Dev> {
        if !self.devs.contains_key(&ctx) {
            let attr = ctx.query()?;
            let pd = Pd::new(ctx)?;
            let pool_mr = register_pool(&pd, &self.pool)?;
            info!(device = %ctx.name(), pool = self.pool.len(), lkey = pool_mr.lkey(), "pool registered");
            self.devs.insert(ctx, Dev { pool_mr, pd, attr });
        }
        self.devs.get(&ctx).ok_or_else(|| io::Error::other("device vanished"))
    }

    fn on_connect_request(&mut self, mut id: CmId, req: ConnParam) {
        let peer = id.peer_addr();
        let local = id.local_addr();
        let Some(ctx) = id.context() else {
            warn!(?peer, "connect request without a device; rejecting");
            let _ = id.reject();
            return;
        };
        let cid = self.next_id;
        match self.setup(&mut id, ctx, req, cid) {
            Ok((core_parts, param)) => {
                let mut conn = core_parts.into_conn(id);
                // Execute the core's first actions (the receives) before accepting.
                drive(&mut conn, self.control.as_fd(), Instant::now());
                if conn.core_done {
                    warn!(channel = cid, ?peer, "connection failed while posting receives; rejecting");
                    let _ = conn.cm.reject();
                    return;
                }
                if let Err(e) = conn.cm.accept(param, self.opts.rnr_retry) {
                    warn!(channel = cid, ?peer, "rdma_accept failed: {e}");
                    return;
                }
                conn.peer = peer;
                conn.local = local;
                info!(channel = cid, ?peer, ?local, device = %ctx.name(), ?req, accepted = ?param, "SMB Direct connection accepted");
                self.next_id += 1;
                self.keys.insert(conn.cm.key(), cid);
                self.conns.insert(cid, conn);
            }
            Err(e) => {
                warn!(?peer, "cannot set up a connection: {e}; rejecting");
                let _ = id.reject();
            }
        }
    }

    /// Creates the connection's verbs objects and core, with receives posted.
    fn setup(&mut self, id: &mut CmId, ctx: Context, req: ConnParam, cid: u64) -> io::Result<(Parts, ConnParam)> {
        let mut cfg = self.opts.config;
        let max_initiator_depth = self.opts.max_initiator_depth;
        let dev = self.device(ctx)?;
        let attr = dev.attr;
        let param = verbs::bounded_param(req, &attr, max_initiator_depth);
        let send_sge = attr.max_sge.clamp(1, cfg.rdma.max_sge as u32);
        cfg.rdma.max_sge = send_sge as usize;
        cfg.rdma.max_outstanding_reads = u16::from(param.initiator_depth.max(1));
        let recv_count = u32::from(cfg.receive_credit_max) + 2;
        let send_wr = u32::from(cfg.send_slots.max(2)) + u32::from(cfg.rdma.max_outstanding_wrs.max(1)) + 1;
        let caps = QpCaps {
            max_send_wr: send_wr.min(attr.max_qp_wr),
            max_recv_wr: recv_count.min(attr.max_qp_wr),
            max_send_sge: send_sge,
            max_recv_sge: 1,
        };
        let pool = LocalSegment { lkey: dev.pool_mr.lkey(), addr: dev.pool_mr.addr(), len: dev.pool_mr.len() as u32 };
        let pd = dev.pd.clone();
        let comp = CompChannel::new(ctx)?;
        let cq = Cq::new(ctx, &comp, (caps.max_send_wr + caps.max_recv_wr).min(attr.max_cqe.max(1)))?;
        id.create_qp(&pd, &cq, caps)?;
        let recv_size = cfg.max_receive_size as usize;
        let send_size = cfg.max_send_size as usize;
        let recv_buf = RegisteredBuffer::new(&pd, recv_size * recv_count as usize, Access::LOCAL_WRITE)?;
        let send_buf = RegisteredBuffer::new(&pd, send_size * usize::from(cfg.send_slots.max(2)), Access::default())?;
        // The clock starts now (registering the pool or buffers may have taken a while
        // under emulation): the negotiate timer runs from here.
        let core = Connection::new(Role::Server, cfg, Instant::now());
        cq.req_notify()?;
        let parts = Parts { id: cid, cq, comp, recv_buf, recv_size, recv_count, send_buf, send_size, core, pool };
        Ok((parts, param))
    }

    // ---- completions ----

    fn on_completions(&mut self, cid: u64) {
        let Some(c) = self.conns.get_mut(&cid) else { return };
        loop {
            match c.comp.get_event() {
                Ok(Some(_)) => c.cq.event_received(),
                Ok(None) => break,
                Err(e) => {
                    warn!(channel = cid, "ibv_get_cq_event: {e}");
                    break;
                }
            }
        }
        if let Err(e) = c.cq.req_notify() {
            warn!(channel = cid, "ibv_req_notify_cq: {e}");
        }
        loop {
            self.wcs.clear();
            let n = match c.cq.poll(&mut self.wcs, 64) {
                Ok(n) => n,
                Err(e) => {
                    warn!(channel = cid, "ibv_poll_cq: {e}");
                    c.core.close(Instant::now());
                    break;
                }
            };
            let now = Instant::now();
            for wc in self.wcs.drain(..) {
                let index = wc.wr_id & INDEX_MASK;
                match wc.wr_id >> KIND_SHIFT {
                    KIND_RECV => {
                        let Ok(i) = u32::try_from(index) else { continue };
                        c.recv_free.push(i);
                        match wc.status {
                            Ok(()) => {
                                let n = (wc.byte_len as usize).min(c.recv_size);
                                self.scratch.resize(n, 0);
                                if c.recv_buf.read(i as usize * c.recv_size, &mut self.scratch[..n]) {
                                    c.core.handle_recv(now, &self.scratch[..n]);
                                }
                            }
                            Err(e) => c.core.handle_recv_error(now, e),
                        }
                    }
                    KIND_SEND => c.core.handle_send_complete(now, SendSlot(index as u16), wc.status),
                    KIND_RDMA => c.core.handle_rdma_complete(now, index, wc.status),
                    _ => warn!(channel = cid, wr_id = wc.wr_id, "completion with an unknown wr_id"),
                }
                if let Err(e) = wc.status {
                    if !c.core_done {
                        debug!(channel = cid, raw = wc.raw_status, "work request failed: {e}");
                    }
                }
            }
            let control = self.control.as_fd();
            drive(c, control, now);
            if n < 64 {
                break;
            }
        }
    }

    /// Executes a connection's pending actions and events.
    fn pump(&mut self, cid: u64) {
        let control = self.control.as_fd();
        if let Some(c) = self.conns.get_mut(&cid) {
            drive(c, control, Instant::now());
        }
    }

    // ---- the worker's sockets ----

    fn on_sock(&mut self, cid: u64) {
        let Some(c) = self.conns.get_mut(&cid) else { return };
        flush(c);
        let now = Instant::now();
        let pool_len = self.pool.len() as u64;
        while let Some(sock) = c.sock.as_ref() {
            match c.reader.recv(sock) {
                Ok(Some(r)) => on_frame(c, r.frame, now, pool_len),
                Ok(None) => {
                    info!(channel = cid, "worker closed the channel socket");
                    c.sock = None;
                    c.core.close(now);
                }
                Err(e) if e.is_would_block() => break,
                Err(e) => {
                    warn!(channel = cid, "channel socket: {e}; closing the channel");
                    c.sock = None;
                    c.core.close(now);
                }
            }
        }
        let control = self.control.as_fd();
        drive(c, control, now);
    }

    /// Returns false when the control socket is closed.
    fn on_control(&mut self) -> bool {
        // The control socket is blocking: read one frame per readiness report.
        match self.control_reader.recv(self.control.as_fd()) {
            Ok(Some(r)) => {
                match r.frame {
                    Frame::Stats { req_id } => {
                        let channels = self.conns.values().map(|c| c.stats).collect();
                        let reply = Frame::StatsReply { req_id, channels };
                        if let Err(e) = fdpass::send_frame(self.control.as_fd(), &reply, None) {
                            warn!("control socket: {e}");
                        }
                    }
                    f => warn!(kind = f.kind(), "unexpected frame on the control socket; ignored"),
                }
                true
            }
            Ok(None) => false,
            Err(e) if e.is_would_block() => true,
            Err(e) => {
                error!("control socket: {e}");
                false
            }
        }
    }

    fn shutdown(&mut self) {
        let now = Instant::now();
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.get_mut(&id) {
                c.sock = None;
                c.core.close(now);
            }
            self.pump(id);
        }
        self.reap(now + CLOSE_GRACE);
    }

    /// Frees the connections that are done.
    fn reap(&mut self, now: Instant) {
        let done: Vec<u64> = self
            .conns
            .values()
            .filter(|c| {
                c.core_done
                    && (c.out.is_empty() || c.sock.is_none())
                    && (c.cm_gone || c.closing_since.is_some_and(|t| now >= t + CLOSE_GRACE))
            })
            .map(|c| c.id)
            .collect();
        for id in done {
            if let Some(c) = self.conns.remove(&id) {
                self.keys.remove(&c.cm.key());
                let s = c.stats;
                let k = c.core.stats();
                info!(
                    "channel {} closed: rdma_read={} rdma_write={} inline_sent={} inline_recv={} keepalives_sent={} keepalives_answered={}",
                    s.channel_id, s.rdma_read, s.rdma_write, s.inline_sent, s.inline_recv, k.keepalives_sent, k.keepalives_answered
                );
            }
        }
    }
}

fn register_pool(pd: &Pd, pool: &PoolMap) -> io::Result<Mr> {
    // The only memory registration of external memory: the pool, LOCAL_WRITE only (the
    // server never exposes memory to the peer).
    verbs_register(pd, pool)
}

#[allow(unsafe_code)]
fn verbs_register(pd: &Pd, pool: &PoolMap) -> io::Result<Mr> {
    // SAFETY: the pool stays mapped until the Proxy drops it, after every Dev (holding
    // this Mr) and every connection (queue pairs) are gone (Proxy's field order); the
    // proxy never forms references into the pool, only the worker process writes and
    // reads it, and it waits for RdmaDone before touching a slot under RDMA.
    unsafe { Mr::register(pd, pool.as_ptr(), pool.len(), Access::LOCAL_WRITE) }
}

/// Runs one connection's core: executes actions on the queue pair, forwards events to
/// the worker.
fn drive(c: &mut Conn, control: BorrowedFd<'_>, now: Instant) {
    loop {
        let mut progressed = false;
        while let Some(a) = c.core.poll_action() {
            progressed = true;
            if let Err(e) = execute(c, a, now) {
                warn!(channel = c.id, "posting failed: {e}; closing");
                c.core.close(now);
            }
        }
        while let Some(ev) = c.core.poll_event() {
            progressed = true;
            on_event(c, ev, control, now);
        }
        if !progressed {
            break;
        }
    }
    flush(c);
}

fn execute(c: &mut Conn, a: Action, now: Instant) -> io::Result<()> {
    match a {
        Action::PostReceive { len } => {
            if len as usize > c.recv_size {
                return Err(io::Error::other(format!("receive of {len} bytes asked, buffers are {}", c.recv_size)));
            }
            let i = c.recv_free.pop().ok_or_else(|| io::Error::other("no free receive buffer"))?;
            let sge = c.recv_buf.sge(i as usize * c.recv_size, c.recv_size as u32).ok_or_else(|| io::Error::other("receive buffer range"))?;
            c.cm.post_recv(wr_id(KIND_RECV, u64::from(i)), sge)
        }
        Action::PostSend { slot, len: _, invalidate } => {
            let off = usize::from(slot.0) * c.send_size;
            let bytes = c.core.send_bytes(slot);
            if bytes.len() > c.send_size || !c.send_buf.write(off, bytes) {
                return Err(io::Error::other("send larger than its slot"));
            }
            let sge = c.send_buf.sge(off, bytes.len() as u32).ok_or_else(|| io::Error::other("send buffer range"))?;
            c.cm.post_send(wr_id(KIND_SEND, u64::from(slot.0)), sge, invalidate)
        }
        Action::PostRdma(wr) => {
            let sges: Vec<Sge> = wr.local().iter().map(|s| Sge { addr: s.addr, len: s.len, lkey: s.lkey }).collect();
            let op = match wr.direction {
                smbdirect_transport::smbd::RdmaDirection::Read => RdmaOp::Read,
                smbdirect_transport::smbd::RdmaDirection::Write => RdmaOp::Write,
            };
            if wr.wr_id > INDEX_MASK {
                return Err(io::Error::other("RDMA wr_id out of range"));
            }
            c.cm.post_rdma(wr_id(KIND_RDMA, wr.wr_id), op, &sges, wr.remote_addr, wr.remote_token)?;
            // The answer of an RdmaSend goes out right behind the WRITE's last work
            // request: same queue pair, so it reaches the client after the data.
            let done = c.replies.get_mut(&wr.op).is_some_and(|r| {
                r.unposted = r.unposted.saturating_sub(u64::from(wr.len));
                r.unposted == 0
            });
            if done {
                if let Some(r) = c.replies.remove(&wr.op) {
                    send_message(c, r.invalidate, &r.msg, now);
                }
            }
            Ok(())
        }
        Action::SetTimer(t) => {
            c.timer = t;
            Ok(())
        }
        Action::Disconnect(reason) => {
            info!(channel = c.id, peer = ?c.peer, "SMB Direct connection ends: {reason}");
            c.core_done = true;
            c.closing_since = Some(now);
            // Also before the CM reported ESTABLISHED: the peer's first message can be
            // completed before that event is read, and an id destroyed without a
            // disconnect was seen to leave the peer connected.
            if !c.cm_gone {
                if let Err(e) = c.cm.disconnect() {
                    debug!(channel = c.id, "rdma_disconnect: {e}");
                }
            }
            let reason = match reason {
                smbdirect_transport::smbd::DisconnectReason::Local => close_reason::NORMAL,
                smbdirect_transport::smbd::DisconnectReason::Protocol(_) => close_reason::PROTOCOL,
                _ => close_reason::PEER_GONE,
            };
            if c.sock.is_some() {
                queue(c, &Frame::Close { reason });
            }
            Ok(())
        }
    }
}

fn on_event(c: &mut Conn, ev: Event, control: BorrowedFd<'_>, now: Instant) {
    match ev {
        Event::Connected(neg) => debug!(channel = c.id, ?neg, "SMB Direct negotiated"),
        Event::Message(m) => {
            debug!(channel = c.id, len = m.len(), credits = ?c.core.credits(), "message from the peer");
            c.stats.inline_recv += m.len() as u64;
            if c.offered {
                if c.sock.is_some() {
                    queue(c, &Frame::Recv(m));
                }
            } else {
                offer(c, control, m, now);
            }
        }
        Event::RdmaDone { op, result } => {
            // An answer still held: its WRITE ended before it was wholly posted
            // (failed or aborted); the answer is not sent.
            c.replies.remove(&op);
            let Some((req_id, dir)) = c.rdma_ops.remove(&op) else { return };
            let (status, bytes) = match result {
                Ok(n) => {
                    match dir {
                        RdmaDir::ReadFromClient => c.stats.rdma_read += n,
                        RdmaDir::WriteToClient => c.stats.rdma_write += n,
                    }
                    (rdma_status::OK, n)
                }
                Err(RdmaError::Aborted) | Err(RdmaError::NotConnected) => (rdma_status::CHANNEL_CLOSING, 0),
                Err(e) => {
                    warn!(channel = c.id, req_id, "RDMA failed: {e}");
                    (rdma_status::REMOTE_ERROR, 0)
                }
            };
            debug!(channel = c.id, req_id, status, bytes, "RDMA done");
            if c.sock.is_some() {
                queue(c, &Frame::RdmaDone(RdmaDone { req_id, status, bytes }));
            }
        }
        Event::Disconnected(_) => {}
    }
}

/// Hands the channel to the worker with its first message.
fn offer(c: &mut Conn, control: BorrowedFd<'_>, first: Vec<u8>, now: Instant) {
    c.offered = true;
    let neg = *c.core.negotiated();
    let offer = ChannelOffer {
        channel_id: c.id,
        client_guid: crate::smb2peek::client_guid(&first),
        peer: c.peer,
        local: c.local,
        negotiated: Negotiated {
            max_read_write_size: neg.max_read_write_size,
            max_send_size: neg.max_send_size,
            max_fragmented_send: neg.peer_max_fragmented_size,
            max_fragmented_recv: neg.max_fragmented_recv_size,
        },
        first_message: first,
    };
    let r = fdpass::seqpacket_pair().map_err(fdpass::FdPassError::from).and_then(|(ours, theirs)| {
        set_nonblocking(ours.as_fd())?;
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(&ours, 4 << 20);
        fdpass::send_frame(control, &Frame::ChannelOffer(offer), Some(theirs.as_fd()))?;
        Ok(ours)
    });
    match r {
        Ok(ours) => {
            c.reader = FrameReader::new(c.core.negotiated().peer_max_fragmented_size as usize + MAX_FRAME_OVERHEAD);
            c.sock = Some(ours);
            debug!(channel = c.id, "offered to the worker");
        }
        Err(e) => {
            warn!(channel = c.id, "cannot offer the channel to the worker: {e}");
            c.core.close(now);
        }
    }
}

/// Executes one frame from the worker.
fn on_frame(c: &mut Conn, f: Frame, now: Instant, pool_len: u64) {
    match f {
        Frame::Send { invalidate, msg } => send_message(c, invalidate, &msg, now),
        Frame::RdmaSend { req, invalidate, msg } => {
            if req.dir != RdmaDir::WriteToClient {
                warn!(channel = c.id, req_id = req.req_id, "RdmaSend for an RDMA READ; closing");
                c.sock = None;
                c.core.close(now);
                return;
            }
            let len = u64::from(req.len);
            // Started (not refused): the answer waits for the WRITE to be posted (the
            // core's work requests are executed after this frame, in drive()).
            if let Some(op) = start_rdma(c, &req, now, pool_len) {
                c.replies.insert(op, Reply { unposted: len, invalidate, msg });
            }
        }
        Frame::Rdma(req) => {
            start_rdma(c, &req, now, pool_len);
        }
        Frame::Close { reason } => {
            debug!(channel = c.id, reason, "worker closes the channel");
            c.sock = None;
            c.core.close(now);
        }
        other => {
            warn!(channel = c.id, kind = other.kind(), "unexpected frame from the worker; closing");
            c.sock = None;
            c.core.close(now);
        }
    }
}

/// Checks and starts one RDMA transfer of the worker's; a refused one is answered at
/// once with an error `RdmaDone`.
fn start_rdma(c: &mut Conn, req: &RdmaRequest, now: Instant, pool_len: u64) -> Option<RdmaOpId> {
    let max = c.core.negotiated().max_read_write_size;
    if let Err(why) = check_rdma_request(req, pool_len, max) {
        warn!(channel = c.id, req_id = req.req_id, "RDMA request refused: {why}");
        queue(c, &Frame::RdmaDone(RdmaDone { req_id: req.req_id, status: rdma_status::BAD_REQUEST, bytes: 0 }));
        return None;
    }
    let local = [LocalSegment { lkey: c.pool.lkey, addr: c.pool.addr + req.pool_offset, len: req.len }];
    let len = u64::from(req.len);
    let r = match req.dir {
        RdmaDir::ReadFromClient => c.core.rdma_read(now, &req.descriptors, &local, len),
        RdmaDir::WriteToClient => c.core.rdma_write(now, &req.descriptors, &local, len),
    };
    match r {
        Ok(op) => {
            debug!(channel = c.id, req_id = req.req_id, dir = ?req.dir, len = req.len, "RDMA started");
            c.rdma_ops.insert(op, (req.req_id, req.dir));
            Some(op)
        }
        Err(e) => {
            let status = if matches!(e, RdmaError::NotConnected) { rdma_status::CHANNEL_CLOSING } else { rdma_status::BAD_REQUEST };
            warn!(channel = c.id, req_id = req.req_id, "RDMA request refused: {e}");
            queue(c, &Frame::RdmaDone(RdmaDone { req_id: req.req_id, status, bytes: 0 }));
            None
        }
    }
}

/// Sends one SMB2 message of the worker's to the peer.
fn send_message(c: &mut Conn, invalidate: Option<u32>, msg: &[u8], now: Instant) {
    debug!(channel = c.id, len = msg.len(), ?invalidate, credits = ?c.core.credits(), "message to the peer");
    c.stats.inline_sent += msg.len() as u64;
    let r = match invalidate {
        Some(t) => c.core.send_with_invalidate(now, msg, t),
        None => c.core.send(now, msg),
    };
    match r {
        Ok(()) => {}
        // The connection already ended: the worker learns it from Close.
        Err(_) if c.core_done => {}
        Err(e) => {
            warn!(channel = c.id, "worker's message cannot be sent: {e}; closing");
            c.core.close(now);
        }
    }
}

fn queue(c: &mut Conn, f: &Frame) {
    match f.to_datagrams() {
        Ok(d) => c.out.extend(d),
        Err(e) => warn!(channel = c.id, "cannot encode a frame: {e}"),
    }
}

/// Writes queued datagrams until the socket is full.
fn flush(c: &mut Conn) {
    while let Some(d) = c.out.front() {
        let Some(s) = c.sock.as_ref() else {
            c.out.clear();
            return;
        };
        match fdpass::send_datagram(s.as_fd(), d, None) {
            Ok(()) => {
                c.out.pop_front();
            }
            Err(e) if e.is_would_block() => return,
            Err(e) => {
                info!(channel = c.id, "channel socket: {e}; the worker is gone");
                c.sock = None;
                c.out.clear();
                c.core.close(Instant::now());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smbdirect_transport::wire::BufferDescriptorV1;

    fn req(len: u32, off: u64, descs: &[u32]) -> RdmaRequest {
        RdmaRequest {
            req_id: 1,
            dir: RdmaDir::WriteToClient,
            pool_offset: off,
            len,
            descriptors: descs.iter().map(|&l| BufferDescriptorV1 { offset: 0x1000, token: 7, length: l }).collect(),
        }
    }

    #[test]
    fn rdma_requests_are_checked() {
        assert!(check_rdma_request(&req(8192, 0, &[4096, 4096]), 1 << 20, 1 << 20).is_ok());
        // Lengths do not add up.
        assert!(check_rdma_request(&req(8192, 0, &[4096]), 1 << 20, 1 << 20).is_err());
        // Past the pool.
        assert!(check_rdma_request(&req(4096, (1 << 20) - 4095, &[4096]), 1 << 20, 1 << 20).is_err());
        assert!(check_rdma_request(&req(4096, u64::MAX, &[4096]), 1 << 20, 1 << 20).is_err());
        // Larger than MaxReadWriteSize.
        assert!(check_rdma_request(&req(8192, 0, &[8192]), 1 << 20, 4096).is_err());
        // No descriptor, too many, an empty one, zero length.
        assert!(check_rdma_request(&req(4096, 0, &[]), 1 << 20, 1 << 20).is_err());
        assert!(check_rdma_request(&req(65, 0, &[1; 65]), 1 << 20, 1 << 20).is_err());
        assert!(check_rdma_request(&req(4096, 0, &[4096, 0]), 1 << 20, 1 << 20).is_err());
        assert!(check_rdma_request(&req(0, 0, &[0]), 1 << 20, 1 << 20).is_err());
        // A descriptor whose range overflows.
        let mut r = req(4096, 0, &[4096]);
        r.descriptors[0].offset = u64::MAX - 10;
        assert!(check_rdma_request(&r, 1 << 20, 1 << 20).is_err());
    }

    #[test]
    fn wr_ids_keep_kind_and_index() {
        let w = wr_id(KIND_RDMA, 12345);
        assert_eq!(w >> KIND_SHIFT, KIND_RDMA);
        assert_eq!(w & INDEX_MASK, 12345);
    }
}
