//! `smbdirect serve`: the supervisor (ISSUE10-DESIGN.md "Process model").
//!
//! It binds the TCP listeners, starts worker processes with exec
//! (`smbdirect worker --worker-id K --control-fd N --rdma-fd M` plus the
//! serve arguments), and runs the front listener: each accepted connection,
//! within the connection caps, has its first message read (negotiate timeout,
//! io timeout, pre-authentication size limit; `listener.rs`), is routed by the
//! ClientGUID of its SMB2 NEGOTIATE (an SMB1 negotiate has none: by a hash of
//! the peer address) to the worker that owns that client, a new worker while
//! fewer than `max workers` run, else by hash, and is handed over with the
//! bytes already read (`workerproto::Frame::Handoff`, SCM_RIGHTS). The worker
//! tells the supervisor when the connection ends (`ConnClosed`), so the caps
//! stay counted here, across workers.
//!
//! SMB Direct: the rdma-proxy's control socket ends here. Its `Hello` (pool
//! memfd) goes to every worker with a slot range of its own; each
//! `ChannelOffer` goes to the worker that owns its ClientGUID (the same
//! table as TCP), with the channel socket, which the supervisor does not keep.
//!
//! A worker that dies is restarted (same id, same slot range, backoff); its
//! connections and channels close with it (the proxy sees their sockets end
//! and drops only those), its routes and counted connections are released,
//! and the shared state of that worker is purged (`purge_worker_state`).
//! Other workers' clients are untouched.

use crate::config::ServerConfig;
use crate::listener::{ConnectionSlots, Slot};
use crate::objects::lock;
use crate::workerproto::{self as wp, ConnRef};
use smbdirect_rdma_proxy::fdpass::{self, FrameReader, Received};
use smbdirect_rdma_proxy::proto::{Frame as ProxyFrame, Hello, MAX_FRAME_OVERHEAD, PROTO_VERSION};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tracing::{error, info, warn};

/// `max workers` when smb.conf does not say: one per CPU, at least 2 (so
/// one crashed worker never takes every client) and at most 16.
pub fn default_max_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16)
}

/// Process settings (smb.conf `[global]`, ours):
///
/// | smb.conf | flag | meaning |
/// | --- | --- | --- |
/// | `max workers = N` | `--max-workers N` | worker processes (1..=64) |
/// | `state directory = PATH` | `--state-dir PATH` | state store, status socket |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    pub max_workers: usize,
    pub state_dir: Option<PathBuf>,
    /// Set in a worker from the supervisor's `Setup`: the server GUID all
    /// workers answer with.
    pub server_guid: Option<[u8; 16]>,
    /// This process's worker id (0 in a single process).
    pub worker_id: u32,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig { max_workers: default_max_workers(), state_dir: None, server_guid: None, worker_id: 0 }
    }
}

pub const MAX_WORKERS_LIMIT: usize = 64;

impl ProcessConfig {
    /// Applies one normalised `[global]` key; `None` if the key is not ours.
    pub fn apply_conf_key(&mut self, key: &str, v: &str) -> Option<Result<(), String>> {
        Some(match key {
            "maxworkers" => parse_workers(v).map(|n| self.max_workers = n),
            "statedirectory" => {
                self.state_dir = Some(PathBuf::from(v.trim()));
                Ok(())
            }
            _ => return None,
        })
    }
}

pub fn parse_workers(v: &str) -> Result<usize, String> {
    v.trim().parse::<usize>().ok().filter(|n| (1..=MAX_WORKERS_LIMIT).contains(n)).ok_or_else(|| format!("bad max workers {v:?} (1 to {MAX_WORKERS_LIMIT})"))
}

/// The state directory when none is configured: `$XDG_RUNTIME_DIR/smbdirect`,
/// `/run/smbdirect` as root, else a private directory under /tmp.
pub fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("smbdirect");
    }
    let uid = rustix::process::getuid();
    if uid.is_root() {
        PathBuf::from("/run/smbdirect")
    } else {
        PathBuf::from(format!("/tmp/smbdirect-{}", uid.as_raw()))
    }
}

/// The state directory, held for this server: created private (0700) if
/// missing, refused if another user owns it or another live server holds it
/// (an exclusive lock on `lock` in it, released when the process ends).
pub struct StateDir {
    pub path: PathBuf,
    _lock: std::fs::File,
}

impl StateDir {
    pub fn open(path: &Path) -> Result<StateDir, String> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path);
        let md = std::fs::metadata(path).map_err(|e| format!("state directory {}: {e}", path.display()))?;
        if !md.is_dir() {
            return Err(format!("state directory {} is not a directory", path.display()));
        }
        if md.uid() != rustix::process::geteuid().as_raw() {
            return Err(format!("state directory {} belongs to another user", path.display()));
        }
        if md.permissions().mode() & 0o077 != 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        }
        let lock_path = path.join("lock");
        let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(|_| {
            format!("state directory {} is in use by another smbdirect server (set `state directory` or --state-dir)", path.display())
        })?;
        Ok(StateDir { path: path.to_path_buf(), _lock: f })
    }

    pub fn status_socket(&self) -> PathBuf {
        self.path.join("status.sock")
    }
}

/// Serialises the windows in which a child's inherited descriptors have
/// close-on-exec cleared: another thread's spawn in that window would leak
/// them into its child.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Spawns `cmd` with `fds` inherited (close-on-exec cleared only for the
/// spawn, under [`SPAWN_LOCK`]).
pub fn spawn_inheriting(cmd: &mut std::process::Command, fds: &[&OwnedFd]) -> std::io::Result<std::process::Child> {
    let _g = lock(&SPAWN_LOCK);
    for fd in fds {
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
    }
    let r = cmd.spawn();
    for fd in fds {
        let _ = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC);
    }
    r
}

/// What the supervisor keeps of a connection a worker serves.
pub struct ConnEntry {
    /// Its place in the connection caps (released when dropped).
    _slot: Slot,
    pub guid: [u8; 16],
    pub peer: Option<SocketAddr>,
    pub since: SystemTime,
    /// Counted in `routes` under `guid` (not a connection passed here from
    /// another worker: its ClientGUID is routed elsewhere).
    pub routed: bool,
}

#[derive(Default)]
struct WorkerState {
    /// Our end of the control socket of the current incarnation (present
    /// from before the process starts: handoffs queue in it meanwhile).
    control: Option<Arc<OwnedFd>>,
    /// Our end of the socket the proxy's frames are relayed on.
    rdma: Option<Arc<OwnedFd>>,
    /// Serialises sends on `rdma` (a ChannelOffer may span datagrams).
    rdma_send: Arc<Mutex<()>>,
    launched: bool,
    pid: Option<u32>,
    since: Option<Instant>,
    restarts: u32,
    conns: HashMap<ConnRef, Vec<ConnEntry>>,
}

struct WorkerSlot {
    id: u32,
    st: Mutex<WorkerState>,
    /// Serialises sends on the worker's control socket (a pass may span
    /// datagrams, which must not interleave with other frames).
    ctl_send: Mutex<()>,
}

/// How a worker is started and supervised.
pub struct WorkerLaunch {
    pub exe: PathBuf,
    /// `serve`'s arguments, passed on to every worker.
    pub serve_args: Vec<String>,
    pub backoff_start: Duration,
    pub backoff_max: Duration,
}

pub struct Supervisor {
    cfg: ServerConfig,
    launch: WorkerLaunch,
    state_dir: PathBuf,
    /// The shared state (LMDB in `state_dir`), created and cleared here at
    /// start; a dead worker's records are purged from it.
    store: Arc<dyn crate::store::StateStore>,
    server_guid: [u8; 16],
    generated_user: Option<(String, String)>,
    slots: Arc<ConnectionSlots>,
    workers: Vec<WorkerSlot>,
    /// ClientGUID -> (worker, live connections of that client).
    routes: Mutex<HashMap<[u8; 16], (usize, usize)>>,
    next_conn: AtomicU64,
    /// The proxy's current Hello and pool memfd, for workers (re)started later.
    hello: Mutex<Option<(Hello, Arc<OwnedFd>)>>,
    status_waiters: Mutex<HashMap<u64, std::sync::mpsc::Sender<(u32, Vec<u8>)>>>,
    next_req: AtomicU64,
    pub started: Instant,
    /// The proxy's control socket (for Stats), while one is connected.
    proxy_control: Mutex<Option<Arc<OwnedFd>>>,
    proxy_stats: Mutex<HashMap<u64, std::sync::mpsc::Sender<Vec<smbdirect_rdma_proxy::proto::ChannelStats>>>>,
}

impl Supervisor {
    pub fn new(cfg: ServerConfig, launch: WorkerLaunch, state_dir: PathBuf, generated_user: Option<(String, String)>) -> std::io::Result<Arc<Supervisor>> {
        let mut server_guid = [0u8; 16];
        getrandom::fill(&mut server_guid).map_err(|e| std::io::Error::other(e.to_string()))?;
        let n = cfg.procs.max_workers.clamp(1, MAX_WORKERS_LIMIT);
        let workers = (0..n as u32).map(|id| WorkerSlot { id, st: Mutex::new(WorkerState::default()), ctl_send: Mutex::new(()) }).collect();
        let store = crate::store::create(&state_dir).map_err(|e| std::io::Error::other(format!("state directory {}: {e}", state_dir.display())))?;
        Ok(Arc::new(Supervisor {
            cfg,
            launch,
            state_dir,
            store,
            server_guid,
            generated_user,
            slots: Arc::new(ConnectionSlots::default()),
            workers,
            routes: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            hello: Mutex::new(None),
            status_waiters: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            started: Instant::now(),
            proxy_control: Mutex::new(None),
            proxy_stats: Mutex::new(HashMap::new()),
        }))
    }

    pub fn max_workers(&self) -> usize {
        self.workers.len()
    }

    /// Connections counted against the caps (TCP and SMB Direct).
    pub fn connection_count(&self) -> usize {
        self.slots.total()
    }

    /// Starts worker 0 at once, so that a broken configuration shows at start.
    pub fn start(self: &Arc<Self>) {
        self.ensure_started(0);
    }

    fn ensure_started(self: &Arc<Self>, w: usize) {
        let mut st = lock(&self.workers[w].st);
        if st.launched {
            return;
        }
        st.launched = true;
        // The sockets exist before the process: what is routed to it meanwhile queues.
        let first = match self.new_incarnation(w, &mut st) {
            Ok(f) => Some(f),
            Err(e) => {
                error!(worker = w, "cannot create the worker's sockets: {e}");
                None
            }
        };
        drop(st);
        let me = self.clone();
        let r = std::thread::Builder::new().name(format!("worker-{w}")).spawn(move || me.monitor(w, first));
        if let Err(e) = r {
            error!(worker = w, "cannot start the worker's monitor thread: {e}");
        }
    }

    /// Creates the next incarnation's sockets, queues `Setup` (and `Hello`
    /// when a proxy is up) in them and starts reading the control socket.
    /// Returns the worker's ends.
    fn new_incarnation(self: &Arc<Self>, w: usize, st: &mut WorkerState) -> std::io::Result<(OwnedFd, OwnedFd)> {
        let (ctl, ctl_child) = fdpass::seqpacket_pair()?;
        let (rd, rd_child) = fdpass::seqpacket_pair()?;
        // A worker that stops reading must not stall the front listener.
        for fd in [&ctl, &rd] {
            rustix::net::sockopt::set_socket_timeout(fd, rustix::net::sockopt::Timeout::Send, Some(Duration::from_secs(5)))?;
        }
        let setup = wp::Frame::Setup(wp::Setup {
            worker_id: w as u32,
            server_guid: self.server_guid,
            state_dir: self.state_dir.display().to_string(),
            generated_user: self.generated_user.clone(),
        });
        wp::send(ctl.as_fd(), &setup, None).map_err(std::io::Error::other)?;
        let ctl = Arc::new(ctl);
        let rd = Arc::new(rd);
        st.control = Some(ctl.clone());
        st.rdma = Some(rd.clone());
        st.rdma_send = Arc::new(Mutex::new(()));
        if let Some((h, fd)) = lock(&self.hello).clone() {
            self.send_hello(w, &rd, &st.rdma_send, h, &fd);
        }
        let me = self.clone();
        std::thread::Builder::new().name(format!("worker-{w}-ctl")).spawn(move || me.read_worker(w, ctl))?;
        Ok((ctl_child, rd_child))
    }

    /// Runs worker `w` forever: start, wait, clean up, restart with backoff.
    /// `fds` are the worker's ends of its sockets (made ahead of the process).
    fn monitor(self: Arc<Self>, w: usize, mut fds: Option<(OwnedFd, OwnedFd)>) {
        let mut delay = self.launch.backoff_start;
        loop {
            let started = Instant::now();
            if let Some((ctl, rd)) = fds.take() {
                match self.spawn_worker(w, &ctl, &rd) {
                    Ok(mut child) => {
                        drop((ctl, rd));
                        let pid = child.id();
                        {
                            let mut st = lock(&self.workers[w].st);
                            st.pid = Some(pid);
                            st.since = Some(Instant::now());
                        }
                        info!(worker = w, pid, "worker started");
                        let how = match child.wait() {
                            Ok(s) => s.to_string(),
                            Err(e) => format!("cannot wait for it: {e}"),
                        };
                        let n = self.worker_died(w);
                        warn!(worker = w, pid, "worker ended ({how}); its {n} connections were closed with it; restarting it");
                    }
                    Err(e) => {
                        drop((ctl, rd));
                        self.worker_died(w);
                        error!(worker = w, "cannot start worker ({}): {e}", self.launch.exe.display());
                    }
                }
            }
            if started.elapsed() > self.launch.backoff_max * 3 {
                // It ran long enough: the next failure starts the backoff over.
                delay = self.launch.backoff_start;
            }
            // New sockets at once: connections routed to this worker during
            // the backoff wait in them for the new process.
            {
                let mut st = lock(&self.workers[w].st);
                st.restarts += 1;
                fds = match self.new_incarnation(w, &mut st) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        error!(worker = w, "cannot create the worker's sockets: {e}");
                        None
                    }
                };
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(self.launch.backoff_max);
        }
    }

    fn spawn_worker(&self, w: usize, ctl: &OwnedFd, rd: &OwnedFd) -> std::io::Result<std::process::Child> {
        let mut cmd = std::process::Command::new(&self.launch.exe);
        cmd.arg("worker")
            .arg("--worker-id")
            .arg(w.to_string())
            .arg("--control-fd")
            .arg(ctl.as_raw_fd().to_string())
            .arg("--rdma-fd")
            .arg(rd.as_raw_fd().to_string())
            .args(&self.launch.serve_args)
            .stdin(std::process::Stdio::null());
        spawn_inheriting(&mut cmd, &[ctl, rd])
    }

    /// Releases what a dead worker held: its counted connections, its
    /// routes and its shared state. Returns how many connections it served.
    fn worker_died(&self, w: usize) -> usize {
        let conns = {
            let mut st = lock(&self.workers[w].st);
            st.pid = None;
            st.since = None;
            st.control = None;
            st.rdma = None;
            std::mem::take(&mut st.conns)
        };
        let n = conns.values().map(Vec::len).sum();
        lock(&self.routes).retain(|_, (owner, _)| *owner != w);
        drop(conns);
        self.purge_worker_state(w as u32);
        n
    }

    /// A dead worker's share modes, byte-range locks and lock waits are
    /// removed from the shared state, and the workers that waited for one
    /// of its locks are woken.
    fn purge_worker_state(&self, worker: u32) {
        match crate::store::purge_and_wake(&*self.store, &self.state_dir, worker) {
            Ok(woken) => info!(worker, woken, "dead worker's shared state released"),
            Err(e) => error!(worker, "cannot release a dead worker's shared state: {e}"),
        }
        self.delete_orphans();
    }

    /// Deletes the files whose delete was pending when the last worker that
    /// had them open died (their close would have deleted them), as that
    /// close does: through the share's root, only if the path still names
    /// the same file.
    fn delete_orphans(&self) {
        let list = match self.store.orphaned_deletes() {
            Ok(l) => l,
            Err(e) => return error!("cannot list the files a dead worker left to delete: {e}"),
        };
        for (key, share, path) in list {
            let root = self.cfg.shares.iter().find(|s| s.name.eq_ignore_ascii_case(&share)).map(|s| crate::vfs::ShareRoot::open(&s.path));
            match root {
                Some(Ok(root)) => match root.lookup(&path) {
                    Ok(Some(st)) if (st.dev, st.ino) == (key.dev, key.ino) => match root.remove(&path, st.is_dir) {
                        Ok(()) => info!(share, path, "deleted the file a dead worker had open with delete-on-close"),
                        Err(e) => warn!(share, path, "delete-on-close of a dead worker's file failed: {e}"),
                    },
                    Ok(_) => info!(share, path, "a dead worker's delete-on-close file is no longer at its path; left alone"),
                    Err(e) => warn!(share, path, "delete-on-close of a dead worker's file: {e}"),
                },
                Some(Err(e)) => warn!(share, "share root: {e}"),
                None => warn!(share, "a dead worker's delete-on-close file is in no share"),
            }
            if let Err(e) = self.store.deleted(key) {
                warn!("record of a dead worker's deleted file kept: {e}");
            }
        }
    }

    /// Reads one incarnation's control socket until it ends.
    fn read_worker(self: Arc<Self>, w: usize, ctl: Arc<OwnedFd>) {
        let mut r = wp::Reader::new(wp::MAX_STATUS_REPLY);
        loop {
            match r.recv(ctl.as_fd()) {
                Ok(Some((wp::Frame::ConnClosed(c), None))) => self.conn_ended(w, c),
                Ok(Some((wp::Frame::PassConn { conn_id, client_guid, pass }, Some(fd)))) => self.pass_conn(w, conn_id, client_guid, pass, fd),
                Ok(Some((wp::Frame::PassChannel { offer, pass }, Some(fd)))) => self.pass_channel(w, offer, pass, fd),
                Ok(Some((wp::Frame::StatusReply { req_id, json }, None))) => {
                    if let Some(tx) = lock(&self.status_waiters).get(&req_id) {
                        let _ = tx.send((w as u32, json));
                    }
                }
                Ok(Some((f, _))) => {
                    warn!(worker = w, kind = f.kind(), "unexpected frame from a worker; dropping its control socket");
                    return;
                }
                Ok(None) => return,
                Err(e) => {
                    warn!(worker = w, "worker control socket: {e}");
                    return;
                }
            }
        }
    }

    fn conn_ended(&self, w: usize, c: ConnRef) {
        if let Some(e) = self.take_conn(w, c).filter(|e| e.routed) {
            self.unroute(w, &e.guid);
        }
    }

    /// Takes connection `c` out of worker `w`'s count (its routes left alone).
    fn take_conn(&self, w: usize, c: ConnRef) -> Option<ConnEntry> {
        let mut st = lock(&self.workers[w].st);
        let v = st.conns.get_mut(&c)?;
        let e = v.pop();
        if v.is_empty() {
            st.conns.remove(&c);
        }
        e
    }

    /// Worker `from` passes TCP connection `conn_id` (socket `fd`) to the
    /// worker that owns the session its binding names (connpass.rs): the
    /// connection is counted there from now on. A dead owner's restarted
    /// process answers USER_SESSION_DELETED.
    fn pass_conn(self: &Arc<Self>, from: usize, conn_id: u64, client_guid: [u8; 16], pass: crate::connpass::ConnPass, fd: OwnedFd) {
        let to = crate::connpass::session_owner(pass.session_id) as usize;
        let c = ConnRef::Tcp(conn_id);
        let Some(mut e) = self.take_conn(from, c) else {
            warn!(worker = from, conn_id, "pass of a connection not counted there; closing it");
            return;
        };
        if e.routed {
            self.unroute(from, &e.guid);
            e.routed = false;
        }
        // A session of a worker that never ran cannot exist: the connection
        // goes back to its worker, which answers the binding itself (a
        // connection passed once is never passed again).
        let to = if to < self.workers.len() && lock(&self.workers[to].st).launched { to } else { from };
        let pass_session = pass.session_id;
        self.register(to, c, e);
        let ctl = lock(&self.workers[to].st).control.clone();
        let r = match ctl {
            Some(ctl) => {
                let _g = lock(&self.workers[to].ctl_send);
                wp::send(ctl.as_fd(), &wp::Frame::Passed { conn_id, client_guid, pass }, Some(fd.as_fd())).map_err(|e| e.to_string())
            }
            None => Err("the worker is restarting".into()),
        };
        match r {
            Ok(()) if to == from => info!(worker = from, conn_id, session = pass_session, "connection sent back: its binding names a worker that never ran"),
            Ok(()) => info!(from, to, conn_id, "connection passed to the worker that owns its session"),
            Err(e) => {
                warn!(from, to, conn_id, "cannot pass the connection: {e}; closing it");
                self.conn_ended(to, c);
            }
        }
    }

    /// Worker `from` passes SMB Direct channel `offer.channel_id` (its
    /// channel socket `fd`) to the worker that owns the session its binding
    /// names (connpass.rs), on that worker's proxy-frame socket (the proxy
    /// protocol's `ChannelPassed`): the owner serves it from its own pool
    /// slots, and counts it from now on. The proxy keeps the other end of
    /// the socket and sees nothing of the move.
    fn pass_channel(self: &Arc<Self>, from: usize, offer: smbdirect_rdma_proxy::proto::ChannelOffer, pass: crate::connpass::ConnPass, fd: OwnedFd) {
        let id = offer.channel_id;
        let c = ConnRef::Rdma(id);
        let Some(mut e) = self.take_conn(from, c) else {
            warn!(worker = from, channel = id, "pass of a channel not counted there; closing it");
            return;
        };
        if e.routed {
            self.unroute(from, &e.guid);
            e.routed = false;
        }
        let to = crate::connpass::session_owner(pass.session_id) as usize;
        // As for TCP: a worker that never ran has no session; the channel
        // goes back where it came from, which answers the binding itself.
        let to = if to < self.workers.len() && lock(&self.workers[to].st).launched { to } else { from };
        let state = match wp::encode_pass(id, &offer.client_guid, &pass) {
            Ok(s) => s,
            Err(e) => {
                warn!(from, channel = id, "cannot encode a channel pass: {e}; closing it");
                return;
            }
        };
        self.register(to, c, e);
        let (rd, sl) = {
            let st = lock(&self.workers[to].st);
            (st.rdma.clone(), st.rdma_send.clone())
        };
        let r = match rd {
            Some(rd) => {
                let _g = lock(&sl);
                fdpass::send_frame(rd.as_fd(), &ProxyFrame::ChannelPassed { offer, state }, Some(fd.as_fd())).map_err(|e| e.to_string())
            }
            None => Err("the worker is restarting".into()),
        };
        match r {
            Ok(()) if to == from => info!(worker = from, channel = id, session = pass.session_id, "channel sent back: its binding names a worker that never ran"),
            Ok(()) => info!(from, to, channel = id, "SMB Direct channel passed to the worker that owns its session"),
            Err(e) => {
                warn!(from, to, channel = id, "cannot pass the SMB Direct channel: {e}; closing it");
                self.conn_ended(to, c);
            }
        }
    }

    fn unroute(&self, w: usize, guid: &[u8; 16]) {
        if *guid == [0; 16] {
            return;
        }
        let mut routes = lock(&self.routes);
        if let Some((owner, n)) = routes.get_mut(guid) {
            if *owner == w {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    routes.remove(guid);
                }
            }
        }
    }

    /// Picks the worker for a new connection and counts it there.
    fn route(self: &Arc<Self>, guid: [u8; 16], peer: Option<IpAddr>) -> usize {
        let n = self.workers.len();
        if guid == [0; 16] {
            // No ClientGUID (SMB1 negotiate, or no negotiate at all): by the
            // peer address, so one client's connections still meet.
            let w = (fnv(&ip_bytes(peer)) % n as u64) as usize;
            self.ensure_started(w);
            return w;
        }
        let mut routes = lock(&self.routes);
        if let Some((w, count)) = routes.get_mut(&guid) {
            *count += 1;
            return *w;
        }
        // A client coming back to the durable opens it left goes to the
        // worker that keeps them (handlers/durable.rs: the fds live there).
        match self.store.durable_worker_of(&guid) {
            Ok(Some(w)) if (w as usize) < n => {
                let w = w as usize;
                routes.insert(guid, (w, 1));
                drop(routes);
                self.ensure_started(w);
                return w;
            }
            Ok(_) => {}
            Err(e) => warn!("durable routing lookup: {e}"),
        }
        // A new client: a running worker that has no client yet, else a new
        // worker while fewer than `max workers` run, else by hash (so a
        // client that comes back with its GUID finds the same worker).
        let mut owned = vec![false; n];
        for (w, _) in routes.values() {
            owned[*w] = true;
        }
        let launched: Vec<bool> = self.workers.iter().map(|s| lock(&s.st).launched).collect();
        let idle = (0..n).find(|w| launched[*w] && !owned[*w]);
        let fresh = (0..n).find(|w| !launched[*w]);
        let w = idle.or(fresh).unwrap_or_else(|| (fnv(&guid) % n as u64) as usize);
        routes.insert(guid, (w, 1));
        drop(routes);
        self.ensure_started(w);
        w
    }

    fn register(&self, w: usize, c: ConnRef, e: ConnEntry) {
        lock(&self.workers[w].st).conns.entry(c).or_default().push(e);
    }

    /// Hands an accepted TCP connection (its first message read) to a worker.
    fn hand_over(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, slot: Slot, first: Vec<u8>) {
        let guid = first.get(4..).map(smbdirect_rdma_proxy::smb2peek::client_guid).unwrap_or([0; 16]);
        let w = self.route(guid, Some(peer.ip()));
        let conn_id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let c = ConnRef::Tcp(conn_id);
        self.register(w, c, ConnEntry { _slot: slot, guid, peer: Some(peer), since: SystemTime::now(), routed: true });
        let ctl = lock(&self.workers[w].st).control.clone();
        let r = match ctl {
            Some(ctl) => {
                let _g = lock(&self.workers[w].ctl_send);
                wp::send(ctl.as_fd(), &wp::Frame::Handoff { conn_id, client_guid: guid, first }, Some(stream.as_fd())).map_err(|e| e.to_string())
            }
            None => Err("the worker is restarting".into()),
        };
        match r {
            Ok(()) => tracing::debug!(%peer, worker = w, conn_id, "connection handed over"),
            Err(e) => {
                warn!(%peer, worker = w, "cannot hand the connection over: {e}; closing it");
                self.conn_ended(w, c);
            }
        }
        // Our copy of the socket closes here; the worker has its own.
    }

    /// The front listener on one address: accepts forever.
    pub fn front(self: &Arc<Self>, l: crate::listener::Listener) {
        let limits = self.cfg.limits.clone();
        let limit = crate::listener::first_message_limit(&self.cfg).min(wp::MAX_HANDOFF_MESSAGE);
        let me = self.clone();
        crate::listener::accept_loop(l, self.slots.clone(), limits.clone(), move |stream, peer, slot| {
            let me = me.clone();
            let limits = limits.clone();
            let r = std::thread::Builder::new().name("front".into()).stack_size(128 * 1024).spawn(move || {
                match crate::listener::read_first_message(&stream, &limits, limit) {
                    Ok(first) => me.hand_over(stream, peer, slot, first),
                    Err(e) => warn!(%peer, "closing the connection: {e}"),
                }
            });
            if let Err(e) = r {
                warn!("cannot spawn a thread for a new connection: {e}");
            }
        });
    }

    fn send_hello(&self, w: usize, rd: &OwnedFd, send_lock: &Mutex<()>, h: Hello, pool: &OwnedFd) {
        let (base, count) = slot_range(h.slot_base, h.slot_count, w, self.workers.len());
        if count == 0 {
            warn!(worker = w, slots = h.slot_count, workers = self.workers.len(), "the RDMA pool has no slot for this worker: its SMB Direct READ/WRITE will fail (raise smbdirect:rdma pool size)");
        }
        let f = ProxyFrame::Hello(h.with_range(base, count));
        let _g = lock(send_lock);
        if let Err(e) = fdpass::send_frame(rd.as_fd(), &f, Some(pool.as_fd())) {
            warn!(worker = w, "cannot pass the RDMA pool to the worker: {e}");
        }
    }

    /// Serves the rdma-proxy's control socket until it ends (the supervisor's
    /// side of RDMA-DESIGN.md's control protocol).
    pub fn proxy_control(self: &Arc<Self>, control: OwnedFd) -> Result<(), crate::rdma::ControlError> {
        use crate::rdma::ControlError;
        let control = Arc::new(control);
        let max_message = crate::conn::max_message_size(&self.cfg);
        let mut reader = FrameReader::new(max_message + MAX_FRAME_OVERHEAD);
        let r = (|| loop {
            let Some(Received { frame, fd }) = reader.recv(control.as_fd())? else {
                info!("rdma-proxy control socket closed");
                return Ok(());
            };
            match (frame, fd) {
                (ProxyFrame::Hello(h), Some(pool)) => {
                    if h.version != PROTO_VERSION {
                        return Err(ControlError::Version(h.version));
                    }
                    info!(pool_size = h.pool_size, slot_size = h.slot_size, slots = h.slot_count, workers = self.workers.len(), "rdma-proxy connected; passing its pool to the workers");
                    let pool = Arc::new(pool);
                    *lock(&self.hello) = Some((h, pool.clone()));
                    *lock(&self.proxy_control) = Some(control.clone());
                    crate::rdma::SERVICE_UP.store(true, Ordering::SeqCst);
                    for (w, s) in self.workers.iter().enumerate() {
                        let (rd, sl) = {
                            let st = lock(&s.st);
                            (st.rdma.clone(), st.rdma_send.clone())
                        };
                        if let Some(rd) = rd {
                            self.send_hello(w, &rd, &sl, h, &pool);
                        }
                    }
                }
                (ProxyFrame::ChannelOffer(offer), Some(sock)) => self.offer_channel(offer, sock),
                (ProxyFrame::Listener(l), None) => crate::rdma::log_listener(&l),
                (ProxyFrame::StatsReply { req_id, channels }, None) => {
                    if let Some(tx) = lock(&self.proxy_stats).remove(&req_id) {
                        let _ = tx.send(channels);
                    }
                }
                (ProxyFrame::Close { reason }, None) => {
                    info!(reason, "rdma-proxy closed the control socket");
                    return Ok(());
                }
                (other, _) => return Err(ControlError::Unexpected(other.kind())),
            }
        })();
        // Workers keep serving the channels of this pool until they end; a
        // worker started from now on waits for the next proxy's Hello.
        *lock(&self.hello) = None;
        *lock(&self.proxy_control) = None;
        crate::rdma::SERVICE_UP.store(false, Ordering::SeqCst);
        r
    }

    fn offer_channel(self: &Arc<Self>, offer: smbdirect_rdma_proxy::proto::ChannelOffer, sock: OwnedFd) {
        // An SMB Direct channel counts against the connection caps like a
        // TCP connection; over a cap its socket is closed at once.
        let ip = offer.peer.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let l = &self.cfg.limits;
        let slot = match self.slots.acquire(ip, l.max_connections, l.max_connections_per_address) {
            Ok(s) => s,
            Err(why) => {
                self.slots.log_refusal(&ip, why);
                return;
            }
        };
        let w = self.route(offer.client_guid, offer.peer.map(|a| a.ip()));
        let c = ConnRef::Rdma(offer.channel_id);
        let id = offer.channel_id;
        self.register(w, c, ConnEntry { _slot: slot, guid: offer.client_guid, peer: offer.peer, since: SystemTime::now(), routed: true });
        let (rd, sl) = {
            let st = lock(&self.workers[w].st);
            (st.rdma.clone(), st.rdma_send.clone())
        };
        let r = match rd {
            Some(rd) => {
                let _g = lock(&sl);
                fdpass::send_frame(rd.as_fd(), &ProxyFrame::ChannelOffer(offer), Some(sock.as_fd())).map_err(|e| e.to_string())
            }
            None => Err("the worker is restarting".into()),
        };
        match r {
            Ok(()) => info!(channel = id, worker = w, "SMB Direct channel passed to its worker"),
            Err(e) => {
                warn!(channel = id, worker = w, "cannot pass the SMB Direct channel: {e}; closing it");
                self.conn_ended(w, c);
            }
        }
    }

    /// The proxy's per-channel counters (empty without a proxy or reply).
    pub fn proxy_stats(&self, timeout: Duration) -> Option<Vec<smbdirect_rdma_proxy::proto::ChannelStats>> {
        let control = lock(&self.proxy_control).clone()?;
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        lock(&self.proxy_stats).insert(req_id, tx);
        let sent = fdpass::send_frame(control.as_fd(), &ProxyFrame::Stats { req_id }, None).is_ok();
        let r = if sent { rx.recv_timeout(timeout).ok() } else { None };
        lock(&self.proxy_stats).remove(&req_id);
        r
    }

    /// Asks every running worker for its status; the JSON answers by worker.
    pub fn worker_statuses(&self, timeout: Duration) -> Vec<(u32, Vec<u8>)> {
        let req_id = self.next_req.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        lock(&self.status_waiters).insert(req_id, tx);
        let mut asked = 0;
        for s in &self.workers {
            let ctl = {
                let st = lock(&s.st);
                st.pid.and(st.control.clone())
            };
            if let Some(ctl) = ctl {
                let sent = {
                    let _g = lock(&s.ctl_send);
                    wp::send(ctl.as_fd(), &wp::Frame::StatusRequest { req_id }, None).is_ok()
                };
                if sent {
                    asked += 1;
                }
            }
        }
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < asked {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        lock(&self.status_waiters).remove(&req_id);
        out
    }

    /// The supervisor's own view: workers and the connections it counts.
    pub fn snapshot(&self) -> SupervisorView {
        let mut workers = Vec::new();
        let mut conns = Vec::new();
        for s in &self.workers {
            let st = lock(&s.st);
            workers.push(WorkerView {
                id: s.id,
                pid: st.pid,
                uptime: st.since.map(|t| t.elapsed()),
                restarts: st.restarts,
                launched: st.launched,
                connections: st.conns.values().map(Vec::len).sum(),
            });
            for (c, v) in &st.conns {
                for e in v {
                    conns.push(ConnView { worker: s.id, conn: *c, guid: e.guid, peer: e.peer, since: e.since });
                }
            }
        }
        conns.sort_by_key(|c| (c.worker, c.conn));
        SupervisorView { pid: std::process::id(), uptime: self.started.elapsed(), state_dir: self.state_dir.clone(), workers, conns }
    }

    /// Serves `smbdirect status` on the status socket forever.
    pub fn status_server(self: &Arc<Self>, path: &Path) -> std::io::Result<std::thread::JoinHandle<()>> {
        let _ = std::fs::remove_file(path);
        let l = std::os::unix::net::UnixListener::bind(path)?;
        let me = self.clone();
        std::thread::Builder::new().name("status".into()).spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                let me = me.clone();
                let _ = std::thread::Builder::new().name("status-req".into()).spawn(move || crate::status::answer(&me, s));
            }
        })
    }
}

pub struct WorkerView {
    pub id: u32,
    pub pid: Option<u32>,
    pub uptime: Option<Duration>,
    pub restarts: u32,
    pub launched: bool,
    pub connections: usize,
}

pub struct ConnView {
    pub worker: u32,
    pub conn: ConnRef,
    pub guid: [u8; 16],
    pub peer: Option<SocketAddr>,
    pub since: SystemTime,
}

pub struct SupervisorView {
    pub pid: u32,
    pub uptime: Duration,
    pub state_dir: PathBuf,
    pub workers: Vec<WorkerView>,
    pub conns: Vec<ConnView>,
}

/// Worker `w`'s share of `count` slots from `base`, split evenly among `n`.
pub fn slot_range(base: u32, count: u32, w: usize, n: usize) -> (u32, u32) {
    let (c, n, w) = (u64::from(count), n.max(1) as u64, w as u64);
    let lo = c * w / n;
    let hi = c * (w + 1) / n;
    (base + lo as u32, (hi - lo) as u32)
}


fn ip_bytes(ip: Option<IpAddr>) -> Vec<u8> {
    match ip {
        Some(IpAddr::V4(a)) => a.octets().to_vec(),
        Some(IpAddr::V6(a)) => a.octets().to_vec(),
        None => Vec::new(),
    }
}

/// FNV-1a: a stable hash for routing (the same key picks the same worker
/// in every run, unlike std's randomly keyed hasher).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_split_the_pool() {
        assert_eq!(slot_range(0, 8, 0, 2), (0, 4));
        assert_eq!(slot_range(0, 8, 1, 2), (4, 4));
        assert_eq!(slot_range(0, 8, 0, 1), (0, 8));
        // Uneven: every slot given once, none twice.
        let parts: Vec<_> = (0..3).map(|w| slot_range(10, 8, w, 3)).collect();
        assert_eq!(parts, vec![(10, 2), (12, 3), (15, 3)]);
        assert_eq!(slot_range(0, 1, 0, 2), (0, 0));
        assert_eq!(slot_range(0, 1, 1, 2), (0, 1));
    }

    #[test]
    fn settings() {
        let mut p = ProcessConfig::default();
        assert_eq!(p.apply_conf_key("maxworkers", "4"), Some(Ok(())));
        assert_eq!(p.max_workers, 4);
        assert!(matches!(p.apply_conf_key("maxworkers", "0"), Some(Err(_))));
        assert!(matches!(p.apply_conf_key("maxworkers", "lots"), Some(Err(_))));
        assert_eq!(p.apply_conf_key("statedirectory", "/x"), Some(Ok(())));
        assert_eq!(p.state_dir, Some(PathBuf::from("/x")));
        assert_eq!(p.apply_conf_key("other", "1"), None);
        assert!((2..=16).contains(&default_max_workers()));
    }

    #[test]
    fn state_dir_is_private_and_exclusive() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state");
        let a = StateDir::open(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(StateDir::open(&p).is_err(), "held by another server");
        drop(a);
        assert!(StateDir::open(&p).is_ok());
    }

    #[test]
    fn routing_hash_is_stable() {
        assert_eq!(fnv(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
