//! `smbdirect worker`: one worker process, started by the supervisor with
//! exec (`supervisor.rs`). It serves the connections the supervisor hands it
//! on its control socket (`workerproto::Frame::Handoff`: the socket and the
//! first message, replayed) and the SMB Direct channels relayed to it on its
//! second socket (the proxy's `Hello` with this worker's slot range, then
//! `ChannelOffer`s; `rdma::serve_control_with`). It tells the supervisor
//! when each ends (`ConnClosed`) and answers `StatusRequest`. A connection
//! whose binding names another worker's session goes back to the
//! supervisor for that worker (`PassConn`, or `PassChannel` for an SMB
//! Direct channel); one passed here arrives as `Passed` (or, for a channel,
//! as `ChannelPassed` on the proxy-frame socket) (connpass.rs). When the
//! supervisor goes away (end of the control socket, or its death: the parent
//! death signal) the worker ends, and its connections with it.

use crate::config::ServerConfig;
use crate::objects::{lock, Server};
use crate::workerproto::{self as wp, ConnRef};
use std::os::fd::{AsFd, OwnedFd};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tracing::{error, info, warn};

/// The worker's own command-line arguments (the rest are `serve`'s).
#[derive(Debug, Clone, Copy)]
pub struct WorkerArgs {
    pub worker_id: u32,
    pub control_fd: i32,
    pub rdma_fd: i32,
}

/// The control socket's sending side, shared by the connection threads.
#[derive(Clone)]
struct Control {
    fd: Arc<OwnedFd>,
    lock: Arc<Mutex<()>>,
}

impl Control {
    fn send(&self, f: &wp::Frame) {
        let _g = lock(&self.lock);
        if let Err(e) = wp::send(self.fd.as_fd(), f, None) {
            warn!("control socket: {e}");
        }
    }
}

/// Runs the worker until the supervisor goes away.
pub fn run(mut cfg: ServerConfig, args: WorkerArgs) -> ExitCode {
    // Our parent is the supervisor: when it dies, so do we.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let take = |n: i32| smbdirect_rdma_proxy::launch::inherited_fd(n);
    let (control, rdma) = match (take(args.control_fd), take(args.rdma_fd)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("smbdirect worker: {e}");
            return ExitCode::from(2);
        }
    };
    let span = tracing::info_span!("worker", id = args.worker_id);
    let _enter = span.enter();
    // Frames from the supervisor: single datagrams, or a pass (bounded).
    let mut reader = wp::Reader::new(wp::MAX_PASS + smbdirect_rdma_proxy::proto::MAX_DATAGRAM);
    let setup = match reader.recv(&control) {
        Ok(Some((wp::Frame::Setup(s), None))) => s,
        Ok(other) => {
            error!("expected Setup from the supervisor, got {:?}", other.map(|(f, _)| f.kind()));
            return ExitCode::from(2);
        }
        Err(e) => {
            error!("control socket: {e}");
            return ExitCode::from(2);
        }
    };
    if setup.worker_id != args.worker_id {
        error!(setup = setup.worker_id, "Setup for another worker id");
        return ExitCode::from(2);
    }
    cfg.procs.worker_id = args.worker_id;
    // A binding for another worker's session moves its connection there.
    crate::connpass::enable(cfg.procs.max_workers.min(crate::supervisor::MAX_WORKERS_LIMIT) as u32);
    cfg.procs.server_guid = Some(setup.server_guid);
    cfg.procs.state_dir = Some(setup.state_dir.clone().into());
    if let Some(u) = setup.generated_user {
        cfg.users.push(u);
    }
    // The worker opens the shared store in the state directory (the
    // supervisor created it) as worker `worker_id`.
    let server = match Server::new(cfg) {
        Ok(s) => s,
        Err(e) => {
            error!("cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    let control = Control { fd: Arc::new(control), lock: Arc::new(Mutex::new(())) };
    {
        let server = server.clone();
        let c = control.clone();
        let span = span.clone();
        let c2 = control.clone();
        let link = crate::rdma::WorkerLink {
            ended: Arc::new(move |id| c.send(&wp::Frame::ConnClosed(ConnRef::Rdma(id)))),
            // A channel whose binding names another worker's session goes
            // back to the supervisor for that worker (connpass.rs).
            pass: Arc::new(move |offer, pass, sock| {
                let _g = lock(&c2.lock);
                wp::send(c2.fd.as_fd(), &wp::Frame::PassChannel { offer, pass }, Some(sock.as_fd())).map_err(|e| e.to_string())
            }),
        };
        let r = std::thread::Builder::new().name("rdma-control".into()).spawn(move || {
            let _e = span.enter();
            match crate::rdma::serve_control_with(server, rdma, crate::rdma::Admission::Supervisor(link)) {
                Ok(()) | Err(crate::rdma::ControlError::NoHello) => {}
                Err(e) => error!("SMB Direct relay: {e}; no new SMB Direct channels in this worker"),
            }
        });
        if let Err(e) = r {
            error!("cannot start the SMB Direct relay thread: {e}");
        }
    }
    info!(pid = std::process::id(), "worker ready");
    loop {
        match reader.recv(control.fd.as_fd()) {
            Ok(Some((wp::Frame::Handoff { conn_id, client_guid, first }, Some(fd)))) => {
                spawn_conn(&server, &control, &span, conn_id, client_guid, fd, first, None);
            }
            Ok(Some((wp::Frame::Passed { conn_id, client_guid, pass }, Some(fd)))) => {
                let pending = pass.pending.clone();
                spawn_conn(&server, &control, &span, conn_id, client_guid, fd, pending, Some(pass));
            }
            Ok(Some((wp::Frame::StatusRequest { req_id }, None))) => {
                let json = crate::status::worker_json(&server).to_string().into_bytes();
                control.send(&wp::Frame::StatusReply { req_id, json });
            }
            Ok(Some((f, _))) => {
                error!(kind = f.kind(), "unexpected frame from the supervisor");
                return ExitCode::from(2);
            }
            Ok(None) => {
                info!("the supervisor went away; ending");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                error!("control socket: {e}; ending");
                return ExitCode::from(1);
            }
        }
    }
}

/// Serves one TCP connection on a thread of its own: handed over by the
/// front listener (`first`: its first message), or passed from another
/// worker (`resume`; `first` its pending messages). When it ends the
/// supervisor is told; when it is to go to another worker (a binding of a
/// session there, connpass.rs) its socket goes to the supervisor instead.
#[allow(clippy::too_many_arguments)]
fn spawn_conn(
    server: &Arc<Server>,
    control: &Control,
    span: &tracing::Span,
    conn_id: u64,
    client_guid: [u8; 16],
    fd: OwnedFd,
    first: Vec<u8>,
    resume: Option<crate::connpass::ConnPass>,
) {
    let server = server.clone();
    let c = control.clone();
    let span = span.clone();
    let r = std::thread::Builder::new().name("smb-conn".into()).stack_size(512 * 1024).spawn(move || {
        let _e = span.enter();
        let _c = tracing::info_span!("conn", id = conn_id, client = %crate::status::guid_string(&client_guid)).entered();
        let stream = std::net::TcpStream::from(fd);
        let peer = stream.peer_addr().ok();
        // Our own copy of the socket, to pass on if need be.
        let keep = stream.try_clone().ok();
        let passed = {
            let _entry = crate::status::register(crate::status::Transport::Tcp, conn_id, client_guid, peer);
            crate::listener::serve_tcp_from(server, stream, first, resume.as_ref())
        };
        if let (Some(pass), Some(sock)) = (passed, keep) {
            let f = wp::Frame::PassConn { conn_id, client_guid, pass };
            let _g = lock(&c.lock);
            match wp::send(c.fd.as_fd(), &f, Some(sock.as_fd())) {
                Ok(()) => return,
                Err(e) => warn!("cannot pass the connection to the supervisor: {e}; closing it"),
            }
        }
        c.send(&wp::Frame::ConnClosed(ConnRef::Tcp(conn_id)));
    });
    if let Err(e) = r {
        warn!("cannot spawn a connection thread: {e}");
        control.send(&wp::Frame::ConnClosed(ConnRef::Tcp(conn_id)));
    }
}
