//! The server's side of the rdma-proxy's control socket: the pool arrives in
//! `Hello`, then each `ChannelOffer` becomes a connection served by the usual
//! pipeline over [`crate::transport_smbd`]. Under `smbdirect serve` the proxy's
//! control socket ends in the supervisor (`supervisor.rs`), which relays
//! `Hello` (with this worker's slot range) and the channels routed to this
//! worker; `serve_control` reads them the same way.

use crate::objects::Server;
use crate::transport_smbd::{smbd_transport, smbd_transport_resumed};
use smbdirect_rdma_proxy::fdpass::{FdPassError, FrameReader, Received};
use smbdirect_rdma_proxy::pool::{PoolError, PoolMap, SlotAllocator};
use smbdirect_rdma_proxy::proto::{listener_status, ChannelOffer, Frame, Hello, ListenerReport, MAX_FRAME_OVERHEAD, PROTO_VERSION};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket: {0}")]
    Socket(#[from] FdPassError),
    #[error("control socket closed before Hello")]
    NoHello,
    #[error("expected Hello first, got frame kind {0}")]
    NotHello(u8),
    #[error("proxy speaks protocol version {0}, this server {PROTO_VERSION}")]
    Version(u32),
    #[error("shared pool: {0}")]
    Pool(#[from] PoolError),
    #[error("unexpected frame kind {0} on the control socket")]
    Unexpected(u8),
}

/// One line per device/port: listening, or why not.
pub fn log_listener(l: &ListenerReport) {
    let dev = if l.device.is_empty() { "-" } else { l.device.as_str() };
    let addr = l.addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
    let why = match l.status {
        listener_status::LISTENING => {
            info!(device = dev, port = l.port_num, %addr, "SMB Direct: listening");
            return;
        }
        listener_status::NO_DEVICE => "no usable RDMA device",
        listener_status::NO_MEMLOCK => "no permission to pin memory (RLIMIT_MEMLOCK / CAP_IPC_LOCK)",
        listener_status::PORT_IN_USE => "port in use",
        _ => "error",
    };
    warn!(device = dev, port = l.port_num, %addr, "SMB Direct: not listening: {why}: {}", l.message);
}

/// Live SMB Direct connections (all proxies together).
pub static LIVE_CHANNELS: AtomicUsize = AtomicUsize::new(0);

/// Who counts an SMB Direct channel against the connection caps.
#[derive(Clone)]
pub enum Admission {
    /// This process counts it in `Server::conn_slots` (one process serving
    /// everything; tests).
    Local,
    /// The supervisor counted it when it routed the channel (worker
    /// processes).
    Supervisor(WorkerLink),
}

/// A worker's calls to its supervisor about its SMB Direct channels.
#[derive(Clone)]
pub struct WorkerLink {
    /// Called with the channel id when a channel ends.
    pub ended: Arc<dyn Fn(u64) + Send + Sync>,
    /// Passes a channel (its offer, the connection's state and a handle on
    /// its socket) to the worker that owns the session its binding names
    /// (connpass.rs); `Err` if it could not be sent (the channel is then
    /// closed and counted as ended).
    pub pass: Arc<dyn Fn(ChannelOffer, crate::connpass::ConnPass, OwnedFd) -> Result<(), String> + Send + Sync>,
}

/// Serves one proxy's control socket until it closes: `Ok` at a clean end of
/// stream. Channels already handed over keep running after it returns (until
/// their own sockets close).
pub fn serve_control(server: Arc<Server>, control: OwnedFd) -> Result<(), ControlError> {
    serve_control_with(server, control, Admission::Local)
}

/// Maps the pool of a `Hello` and makes the allocator of its slot range.
fn take_hello(h: &Hello, pool_fd: OwnedFd) -> Result<Arc<SlotAllocator>, ControlError> {
    if h.version != PROTO_VERSION {
        return Err(ControlError::Version(h.version));
    }
    let pool = Arc::new(PoolMap::map(pool_fd, h.pool_size)?);
    let alloc = SlotAllocator::with_range(pool, h.slot_size, h.slot_base, h.slot_count)?;
    info!(pool_size = h.pool_size, slot_size = h.slot_size, slot_base = h.slot_base, slots = alloc.slot_count(), "rdma-proxy connected; shared pool mapped");
    Ok(alloc)
}

/// [`serve_control`] with the channels counted as `admission` says. A new
/// `Hello` (the proxy was restarted) replaces the pool for new channels;
/// channels of the old pool keep it until they end.
pub fn serve_control_with(server: Arc<Server>, control: OwnedFd, admission: Admission) -> Result<(), ControlError> {
    let max_message = crate::conn::max_message_size(&server.cfg);
    // (A passed channel's state is bounded by workerproto::MAX_PASS.)
    let mut reader = FrameReader::new(max_message.max(crate::workerproto::MAX_PASS + 4096) + MAX_FRAME_OVERHEAD);
    let Some(Received { frame, fd }) = reader.recv(&control)? else {
        return Err(ControlError::NoHello);
    };
    let (Frame::Hello(h), Some(pool_fd)) = (&frame, fd) else {
        return Err(ControlError::NotHello(frame.kind()));
    };
    let mut alloc = take_hello(h, pool_fd)?;
    SERVICE_UP.store(true, Ordering::SeqCst);
    loop {
        let Some(Received { frame, fd }) = reader.recv(&control)? else {
            info!("rdma-proxy control socket closed");
            return Ok(());
        };
        match (frame, fd) {
            (Frame::Hello(h), Some(pool_fd)) => alloc = take_hello(&h, pool_fd)?,
            (Frame::ChannelOffer(offer), Some(sock)) => {
                // An SMB Direct channel is a connection like a TCP one: it
                // counts against `max smbd processes` and `max connections
                // per client address`. Over a cap its socket is closed at once.
                let slot = match &admission {
                    Admission::Local => {
                        let ip = offer.peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                        let l = &server.cfg.limits;
                        match server.conn_slots.acquire(ip, l.max_connections, l.max_connections_per_address) {
                            Ok(s) => Some(s),
                            Err(why) => {
                                server.conn_slots.log_refusal(&ip, why);
                                drop(sock);
                                continue;
                            }
                        }
                    }
                    Admission::Supervisor(_) => None,
                };
                spawn_channel(&server, &admission, slot, &alloc, max_message, offer, sock, None);
            }
            (Frame::ChannelPassed { offer, state }, Some(sock)) => {
                // Another worker's channel whose binding names a session of
                // this one (connpass.rs): counted by the supervisor.
                if !matches!(admission, Admission::Supervisor(_)) {
                    warn!(channel = offer.channel_id, "a passed channel outside a worker process; closing it");
                    continue;
                }
                match crate::workerproto::decode_pass(&state) {
                    Ok(p) => spawn_channel(&server, &admission, None, &alloc, max_message, offer, sock, Some(p)),
                    Err(e) => {
                        warn!(channel = offer.channel_id, "a passed channel's state: {e}; closing it");
                        if let Admission::Supervisor(link) = &admission {
                            (link.ended)(offer.channel_id);
                        }
                    }
                }
            }
            (Frame::StatsReply { req_id, channels }, None) => {
                for c in channels {
                    debug!(
                        req_id,
                        channel = c.channel_id,
                        rdma_read = c.rdma_read,
                        rdma_write = c.rdma_write,
                        inline_sent = c.inline_sent,
                        inline_recv = c.inline_recv,
                        "rdma-proxy stats"
                    );
                }
            }
            (Frame::Listener(l), None) => log_listener(&l),
            (Frame::Close { reason }, None) => {
                info!(reason, "rdma-proxy closed the control socket");
                return Ok(());
            }
            (other, _) => return Err(ControlError::Unexpected(other.kind())),
        }
    }
}

/// Serves one SMB Direct channel on a thread of its own: offered by the
/// proxy, or passed here from another worker (`resume`, with the messages
/// that worker read and did not handle). A channel whose binding names
/// another worker's session goes to the supervisor for that worker
/// (connpass.rs): its socket stays open for the next owner.
#[allow(clippy::too_many_arguments)]
fn spawn_channel(
    server: &Arc<Server>,
    admission: &Admission,
    slot: Option<crate::listener::Slot>,
    alloc: &Arc<SlotAllocator>,
    max_message: usize,
    offer: ChannelOffer,
    sock: OwnedFd,
    resume: Option<crate::connpass::ConnPass>,
) {
    let link = match admission {
        Admission::Supervisor(l) => Some(l.clone()),
        Admission::Local => None,
    };
    let server = server.clone();
    let alloc = alloc.clone();
    let id = offer.channel_id;
    let guid = offer.client_guid;
    let r = std::thread::Builder::new().name("smbd-conn".into()).stack_size(512 * 1024).spawn(move || {
        let _slot = slot;
        let _c = tracing::info_span!("channel", id, client = %crate::status::guid_string(&guid)).entered();
        let peer_addr = offer.peer;
        let meta = ChannelOffer { first_message: Vec::new(), ..offer.clone() };
        let transport = match &resume {
            None => smbd_transport(offer, sock, alloc, max_message),
            Some(p) => match crate::connpass::unframe(&p.pending) {
                Some(replay) => smbd_transport_resumed(offer, sock, alloc, max_message, replay),
                None => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the passed channel's pending messages are malformed")),
            },
        };
        let mut passed = None;
        match transport {
            Ok((src, sink)) => {
                let peer = crate::transport::MessageSink::peer(&sink);
                if resume.is_some() {
                    info!(%peer, "SMB Direct channel taken over from another worker");
                } else {
                    info!(%peer, "SMB Direct connection accepted");
                }
                // Our own handle on the socket, to pass on if need be.
                let keep = if link.is_some() { sink.socket_clone().ok() } else { None };
                LIVE_CHANNELS.fetch_add(1, Ordering::SeqCst);
                let out = {
                    let _entry = crate::status::register(crate::status::Transport::Rdma, id, guid, peer_addr);
                    crate::conn::serve_from(server, src, Arc::new(sink), resume.as_ref())
                };
                LIVE_CHANNELS.fetch_sub(1, Ordering::SeqCst);
                passed = out.zip(keep);
            }
            Err(e) => warn!(channel = id, "cannot set up SMB Direct channel: {e}"),
        }
        if let Some(link) = link {
            if let Some((pass, sock)) = passed {
                match (link.pass)(meta, pass, sock) {
                    Ok(()) => return,
                    Err(e) => warn!(channel = id, "cannot pass the channel to the supervisor: {e}; closing it"),
                }
            }
            (link.ended)(id);
        }
    });
    if let Err(e) = r {
        warn!(channel = id, "cannot spawn a connection thread: {e}");
    }
}

// ---------------------------------------------------------------------------
// Starting and supervising the proxy.

/// Whether `serve` runs SMB Direct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdmaMode {
    /// Start the proxy when an RDMA device exists (the default).
    Auto,
    /// Start the proxy even if no device is seen yet (it reports why it
    /// cannot listen and is retried).
    On,
    Off,
}

/// SMB Direct settings: smb.conf `[global]` names (ksmbd's where one exists)
/// and `serve` flags.
///
/// | smb.conf | flag | meaning |
/// | --- | --- | --- |
/// | `smbdirect:rdma = auto/yes/no` | `--rdma auto/on/off` | start the proxy |
/// | `smbdirect:rdma proxy = PATH` | `--rdma-proxy PATH` | the proxy binary (default: next to `smbdirect`) |
/// | `smbd max io size = 8M` (ksmbd) | `--smbd-max-io-size SIZE` | SMB Direct MaxReadWriteSize and the pool's slot size |
/// | `smbdirect:rdma pool size = 64M` | | the shared pool (pinned memory) |
/// | `smbdirect:rdma listen = ADDR:PORT ...` | | rdma_cm listen addresses (default: every RDMA device, 445 and 5445 for iWARP) |
/// | `smbdirect:rdma max in flight = 256K` | | RDMA READ/WRITE bytes in flight per queue pair |
/// | `smbdirect:rdma rnr retry = 0..7` | | RNR retry count of the connections |
/// | `smbdirect:rdma keepalive interval = 120` | | seconds idle before an SMB Direct keepalive (MS-SMBD KeepaliveInterval) |
/// | `smbdirect:rdma keepalive timeout = 5` | | seconds the peer has to answer it before the connection is dropped |
#[derive(Debug, Clone)]
pub struct RdmaConfig {
    pub mode: RdmaMode,
    pub proxy: Option<std::path::PathBuf>,
    /// The limits passed to the proxy (`control_fd` is filled in at start).
    pub args: smbdirect_rdma_proxy::launch::ProxyArgs,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig { mode: RdmaMode::Auto, proxy: None, args: Default::default() }
    }
}

/// A size with an optional K/M/G suffix (binary, as ksmbd-tools' memparse),
/// optionally followed by B: `8M`, `8MB`, `65536`.
pub fn parse_size(v: &str) -> Option<u64> {
    let t = v.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (digits, shift) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 10),
        'M' => (&t[..t.len() - 1], 20),
        'G' => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(1u64 << shift)
}

pub fn parse_mode(v: &str) -> Option<RdmaMode> {
    match v.trim().to_ascii_lowercase().as_str() {
        "auto" | "default" => Some(RdmaMode::Auto),
        "on" | "yes" | "true" | "1" => Some(RdmaMode::On),
        "off" | "no" | "false" | "0" => Some(RdmaMode::Off),
        _ => None,
    }
}

impl RdmaConfig {
    /// Applies one normalised `[global]` key; `None` if the key is not ours.
    pub fn apply_conf_key(&mut self, key: &str, v: &str) -> Option<Result<(), String>> {
        let size32 = |v: &str| parse_size(v).and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0).ok_or_else(|| format!("bad size {v:?}"));
        let a = &mut self.args;
        let r = match key {
            "smbdirect:rdma" => parse_mode(v).map(|m| self.mode = m).ok_or_else(|| format!("bad value {v:?} (auto, yes or no)")),
            "smbdirect:rdmaproxy" => {
                self.proxy = Some(v.trim().into());
                Ok(())
            }
            "smbdmaxiosize" => size32(v).map(|n| a.max_io_size = n),
            "smbdirect:rdmapoolsize" => parse_size(v).filter(|n| *n > 0).map(|n| a.pool_size = n).ok_or_else(|| format!("bad size {v:?}")),
            "smbdirect:rdmalisten" => v
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(|p| p.parse().map_err(|_| format!("bad listen address {p:?} (want ADDR:PORT)")))
                .collect::<Result<Vec<_>, _>>()
                .map(|l| a.listen = l),
            "smbdirect:rdmamaxinflight" => parse_size(v).filter(|n| *n > 0).map(|n| a.max_rdma_in_flight = Some(n)).ok_or_else(|| format!("bad size {v:?}")),
            "smbdirect:rdmakeepaliveinterval" => v.trim().parse::<u32>().ok().filter(|n| *n > 0).map(|n| a.keepalive_interval = Some(n)).ok_or_else(|| format!("bad number of seconds {v:?}")),
            "smbdirect:rdmakeepalivetimeout" => v.trim().parse::<u32>().ok().filter(|n| *n > 0).map(|n| a.keepalive_timeout = Some(n)).ok_or_else(|| format!("bad number of seconds {v:?}")),
            "smbdirect:rdmarnrretry" => v.trim().parse::<u8>().ok().filter(|n| *n <= 7).map(|n| a.rnr_retry = Some(n)).ok_or_else(|| format!("bad RNR retry count {v:?} (0 to 7)")),
            _ => return None,
        };
        Some(r)
    }
}

/// Whether a proxy is connected and its pool mapped (RDMA service is up).
pub static SERVICE_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// RDMA devices (names under `<sys>/class/infiniband`).
pub fn rdma_devices(sys: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sys.join("class/infiniband"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The proxy binary: configured, or `rdma-proxy` next to this executable.
pub fn proxy_path(cfg: &RdmaConfig) -> Option<std::path::PathBuf> {
    cfg.proxy.clone().or_else(|| std::env::current_exe().ok().map(|p| p.with_file_name("rdma-proxy")))
}

/// How [`supervise`] restarts the proxy.
pub struct Supervision {
    pub path: std::path::PathBuf,
    pub args: smbdirect_rdma_proxy::launch::ProxyArgs,
    pub backoff_start: std::time::Duration,
    pub backoff_max: std::time::Duration,
    /// Stop after this many runs (tests); `None` = forever.
    pub max_runs: Option<usize>,
}

/// What serves a started proxy's control socket: `serve_control` in one
/// process, the supervisor's relay under `smbdirect serve`.
pub type ControlHandler = Arc<dyn Fn(OwnedFd) -> Result<(), ControlError> + Send + Sync>;

/// In-process handling of the control socket ([`serve_control`]).
pub fn local_handler(server: Arc<Server>) -> ControlHandler {
    Arc::new(move |fd| serve_control(server.clone(), fd))
}

/// Starts the proxy once and serves its control socket until it ends; returns
/// the proxy's exit status.
pub fn run_proxy_once(handler: &ControlHandler, path: &std::path::Path, args: &smbdirect_rdma_proxy::launch::ProxyArgs) -> std::io::Result<std::process::ExitStatus> {
    use std::os::fd::AsRawFd;
    let (ours, theirs) = smbdirect_rdma_proxy::fdpass::seqpacket_pair()?;
    let mut a = args.clone();
    a.control_fd = theirs.as_raw_fd();
    // The child's end loses close-on-exec for this spawn only, so no other
    // child (a worker started at the same time) inherits it.
    let mut cmd = std::process::Command::new(path);
    cmd.args(a.to_args()).stdin(std::process::Stdio::null());
    let mut child = crate::supervisor::spawn_inheriting(&mut cmd, &[&theirs])?;
    drop(theirs);
    info!(pid = child.id(), path = %path.display(), "rdma-proxy started");
    let r = handler(ours);
    SERVICE_UP.store(false, Ordering::SeqCst);
    if let Err(e) = &r {
        warn!("rdma-proxy control socket: {e}; stopping the proxy");
        let _ = child.kill();
    }
    child.wait()
}

/// Runs the proxy, restarting it with exponential backoff whenever it ends.
/// TCP service is independent of it.
pub fn supervise(handler: ControlHandler, s: Supervision) {
    let mut delay = s.backoff_start;
    let mut runs = 0usize;
    loop {
        let started = std::time::Instant::now();
        match run_proxy_once(&handler, &s.path, &s.args) {
            Ok(st) => warn!(
                "rdma-proxy {} ({st}); SMB Direct is down, TCP service goes on; restarting in {delay:?}",
                smbdirect_rdma_proxy::launch::describe_exit(st.code())
            ),
            Err(e) => warn!("cannot run rdma-proxy {}: {e}; retrying in {delay:?}", s.path.display()),
        }
        runs += 1;
        if s.max_runs.is_some_and(|m| runs >= m) {
            return;
        }
        if started.elapsed() > s.backoff_max {
            delay = s.backoff_start;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(s.backoff_max);
    }
}

/// What `serve` does about SMB Direct, per the configuration; logs the
/// decision. Returns the supervisor thread when the proxy is started; its
/// control socket goes to `handler`.
pub fn start(cfg: &RdmaConfig, handler: ControlHandler) -> Option<std::thread::JoinHandle<()>> {
    let cfg = cfg.clone();
    if cfg.mode == RdmaMode::Off {
        info!("SMB Direct: off (smbdirect:rdma = no / --rdma off); serving TCP only");
        return None;
    }
    let devices = rdma_devices(std::path::Path::new("/sys"));
    if devices.is_empty() {
        if cfg.mode == RdmaMode::Auto {
            info!("SMB Direct: no RDMA device (/sys/class/infiniband is empty); serving TCP only");
            return None;
        }
        warn!("SMB Direct: no RDMA device yet (/sys/class/infiniband is empty); starting the proxy anyway (--rdma on)");
    } else {
        info!(devices = %devices.join(","), "SMB Direct: RDMA devices found");
    }
    let Some(path) = proxy_path(&cfg).filter(|p| p.exists()) else {
        warn!("SMB Direct: an RDMA device exists but the rdma-proxy binary was not found next to smbdirect (build it with `cargo build --release -p smbdirect-rdma-proxy --features verbs`, or set --rdma-proxy); serving TCP only");
        return None;
    };
    let sup = Supervision {
        path,
        args: cfg.args,
        backoff_start: std::time::Duration::from_secs(1),
        backoff_max: std::time::Duration::from_secs(60),
        max_runs: None,
    };
    std::thread::Builder::new().name("rdma-proxy".into()).spawn(move || supervise(handler, sup)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(parse_size("8M"), Some(8 << 20));
        assert_eq!(parse_size("8mb"), Some(8 << 20));
        assert_eq!(parse_size(" 64k "), Some(65536));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("12345"), Some(12345));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
        let mut c = crate::config::ServerConfig::default();
        c.apply_conf(
            "[global]\nsmbd max io size = 1M\nsmbdirect:rdma = no\nsmbdirect:rdma pool size = 16M\nsmbdirect:rdma listen = 10.9.0.1:445, 10.9.0.1:5445\nsmbdirect:rdma max in flight = 256K\nsmbdirect:rdma rnr retry = 7\nsmbdirect:rdma keepalive interval = 3\nsmbdirect:rdma keepalive timeout = 2\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.rdma.mode, RdmaMode::Off);
        assert_eq!(c.rdma.args.max_io_size, 1 << 20);
        assert_eq!(c.rdma.args.pool_size, 16 << 20);
        assert_eq!(c.rdma.args.listen, vec!["10.9.0.1:445".parse().unwrap(), "10.9.0.1:5445".parse().unwrap()]);
        assert_eq!(c.rdma.args.max_rdma_in_flight, Some(256 << 10));
        assert_eq!(c.rdma.args.rnr_retry, Some(7));
        assert_eq!(c.rdma.args.keepalive_interval, Some(3));
        assert_eq!(c.rdma.args.keepalive_timeout, Some(2));
        assert!(c.apply_conf("[global]\nsmbdirect:rdma keepalive interval = 0\n", "t").is_err());
        assert!(c.apply_conf("[global]\nsmbdirect:rdma rnr retry = 8\n", "t").is_err());
        assert!(c.apply_conf("[global]\nsmbdirect:rdma listen = 10.9.0.1\n", "t").is_err());
        assert!(c.apply_conf("[global]\nsmbd max io size = lots\n", "t").is_err());
        assert!(c.apply_conf("[global]\nsmbdirect:rdma = maybe\n", "t").is_err());
    }

    #[test]
    fn devices_from_sysfs() {
        let d = tempfile_dir();
        assert!(rdma_devices(&d).is_empty());
        std::fs::create_dir_all(d.join("class/infiniband/rxe0")).unwrap();
        std::fs::create_dir_all(d.join("class/infiniband/mlx5_0")).unwrap();
        assert_eq!(rdma_devices(&d), vec!["mlx5_0".to_string(), "rxe0".to_string()]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The worker side under a supervisor: a Hello with a slot range (and a
    /// second Hello, as after a proxy restart) is taken, a channel routed
    /// here is served without a local cap slot, and its end is reported
    /// with its channel id.
    #[test]
    fn worker_mode_takes_repeated_hellos_and_reports_channel_ends() {
        use smbdirect_rdma_proxy::fdpass::{send_frame, seqpacket_pair};
        use smbdirect_rdma_proxy::proto::{ChannelOffer, Negotiated};
        use std::os::fd::AsFd;
        let d = tempfile_dir();
        let cfg = crate::config::ServerConfig { shares: vec![crate::config::ShareConfig::new("s", &d)], ..Default::default() };
        let server = Server::new(cfg).unwrap();
        let (sup, worker) = seqpacket_pair().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let ended: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |id| {
            let _ = crate::objects::lock(&tx).send(id);
        });
        let srv = server.clone();
        let link = WorkerLink { ended, pass: Arc::new(|_, _, _| Err("no passing in this test".into())) };
        let t = std::thread::spawn(move || serve_control_with(srv, worker, Admission::Supervisor(link)));
        let pool = PoolMap::create(4 << 20).unwrap();
        let hello = Hello::whole_pool(4 << 20, 1 << 20).with_range(2, 2);
        send_frame(sup.as_fd(), &Frame::Hello(hello), Some(pool.fd())).unwrap();
        send_frame(sup.as_fd(), &Frame::Hello(hello), Some(pool.fd())).unwrap();
        let (ours, theirs) = seqpacket_pair().unwrap();
        let offer = ChannelOffer {
            channel_id: 41,
            client_guid: [9; 16],
            peer: Some("10.0.0.9:5000".parse().unwrap()),
            local: None,
            negotiated: Negotiated { max_read_write_size: 1 << 20, max_send_size: 1364, max_fragmented_send: 1 << 20, max_fragmented_recv: 1 << 20 },
            first_message: Vec::new(),
        };
        send_frame(sup.as_fd(), &Frame::ChannelOffer(offer), Some(theirs.as_fd())).unwrap();
        drop(theirs);
        // Not counted here: the supervisor did.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(server.conn_slots.total(), 0);
        // The channel's peer (the proxy) goes away: the end is reported.
        drop(ours);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(10)), Ok(41));
        drop(sup);
        assert!(t.join().unwrap().is_ok());
        // A Hello whose range lies outside the pool is refused.
        let (sup, worker) = seqpacket_pair().unwrap();
        let srv = server.clone();
        let t = std::thread::spawn(move || serve_control(srv, worker));
        send_frame(sup.as_fd(), &Frame::Hello(hello.with_range(3, 2)), Some(pool.fd())).unwrap();
        assert!(matches!(t.join().unwrap(), Err(ControlError::Pool(_))));
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        tempfile::tempdir().unwrap().keep()
    }

    /// A proxy that dies is restarted with backoff; it gets the control
    /// socket as an inherited fd and the limits on its command line.
    #[test]
    fn dead_proxy_is_restarted() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile_dir();
        let log = d.join("runs");
        let script = d.join("fake-proxy");
        // Records its arguments and whether the control fd is open, then
        // exits as a proxy without permission to pin memory would.
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nfd=$2\nif [ -e /proc/$$/fd/$fd ]; then ok=fd-open; else ok=fd-closed; fi\necho \"$ok $*\" >> {}\nexit 11\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = crate::config::ServerConfig { shares: vec![crate::config::ShareConfig::new("s", &d)], ..Default::default() };
        let server = Server::new(cfg).unwrap();
        let args = smbdirect_rdma_proxy::launch::ProxyArgs { max_io_size: 1 << 20, ..Default::default() };
        let t0 = std::time::Instant::now();
        supervise(
            local_handler(server),
            Supervision {
                path: script,
                args,
                backoff_start: std::time::Duration::from_millis(20),
                backoff_max: std::time::Duration::from_millis(80),
                max_runs: Some(3),
            },
        );
        // Backoff: 20 + 40 ms at least between the three runs.
        assert!(t0.elapsed() >= std::time::Duration::from_millis(60));
        let runs = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = runs.lines().collect();
        assert_eq!(lines.len(), 3, "{runs}");
        for l in lines {
            assert!(l.starts_with("fd-open --control-fd "), "{l}");
            assert!(l.contains("--max-io-size 1048576"), "{l}");
        }
        assert!(!SERVICE_UP.load(Ordering::SeqCst));
        let _ = std::fs::remove_dir_all(&d);
    }
}
