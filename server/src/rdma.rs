//! The server's side of the rdma-proxy's control socket: the pool arrives in
//! `Hello`, then each `ChannelOffer` becomes a connection served by the usual
//! pipeline over [`crate::transport_smbd`].

use crate::objects::Server;
use crate::transport_smbd::smbd_transport;
use smbdirect_rdma_proxy::fdpass::{FdPassError, FrameReader, Received};
use smbdirect_rdma_proxy::pool::{PoolError, PoolMap, SlotAllocator};
use smbdirect_rdma_proxy::proto::{listener_status, Frame, Hello, ListenerReport, MAX_FRAME_OVERHEAD, PROTO_VERSION};
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
fn log_listener(l: &ListenerReport) {
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

/// Serves one proxy's control socket until it closes: `Ok` at a clean end of
/// stream. Channels already handed over keep running after it returns (until
/// their own sockets close).
pub fn serve_control(server: Arc<Server>, control: OwnedFd) -> Result<(), ControlError> {
    let max_message = crate::conn::max_message_size(&server.cfg);
    let mut reader = FrameReader::new(max_message + MAX_FRAME_OVERHEAD);
    let Some(Received { frame, fd }) = reader.recv(&control)? else {
        return Err(ControlError::NoHello);
    };
    let (Frame::Hello(Hello { version, pool_size, slot_size }), Some(pool_fd)) = (&frame, fd) else {
        return Err(ControlError::NotHello(frame.kind()));
    };
    if *version != PROTO_VERSION {
        return Err(ControlError::Version(*version));
    }
    let pool = Arc::new(PoolMap::map(pool_fd, *pool_size)?);
    let alloc = SlotAllocator::new(pool, *slot_size)?;
    info!(pool_size, slot_size, slots = alloc.slot_count(), "rdma-proxy connected; shared pool mapped");
    loop {
        let Some(Received { frame, fd }) = reader.recv(&control)? else {
            info!("rdma-proxy control socket closed");
            return Ok(());
        };
        match (frame, fd) {
            (Frame::ChannelOffer(offer), Some(sock)) => {
                let server = server.clone();
                let alloc = alloc.clone();
                let id = offer.channel_id;
                let r = std::thread::Builder::new().name("smbd-conn".into()).stack_size(512 * 1024).spawn(move || {
                    match smbd_transport(offer, sock, alloc, max_message) {
                        Ok((src, sink)) => {
                            let peer = crate::transport::MessageSink::peer(&sink);
                            info!(%peer, "SMB Direct connection accepted");
                            LIVE_CHANNELS.fetch_add(1, Ordering::SeqCst);
                            crate::conn::serve(server, src, Arc::new(sink));
                            LIVE_CHANNELS.fetch_sub(1, Ordering::SeqCst);
                        }
                        Err(e) => warn!(channel = id, "cannot set up SMB Direct channel: {e}"),
                    }
                });
                if let Err(e) = r {
                    warn!(channel = id, "cannot spawn a connection thread: {e}");
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
