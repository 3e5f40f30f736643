//! The TCP listener: accepts connections and serves each on its own thread.

use crate::objects::Server;
use crate::transport_tcp::tcp_transport;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::{info, warn};

pub const MAX_CONNECTIONS: usize = 16384;

pub struct Listener {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

pub fn bind(addr: SocketAddr) -> std::io::Result<Listener> {
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    Ok(Listener { listener, addr })
}

/// Accepts forever. Each connection runs on a thread of its own; a panic in
/// it ends that connection only.
pub fn run(server: Arc<Server>, l: Listener) {
    let live = Arc::new(AtomicUsize::new(0));
    for stream in l.listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
        };
        if live.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            warn!("connection limit reached; refusing {:?}", stream.peer_addr());
            continue;
        }
        let server = server.clone();
        let live2 = live.clone();
        live.fetch_add(1, Ordering::Relaxed);
        let r = std::thread::Builder::new().name("smb-conn".into()).stack_size(512 * 1024).spawn(move || {
            struct Count(Arc<AtomicUsize>);
            impl Drop for Count {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Relaxed);
                }
            }
            let _c = Count(live2);
            match tcp_transport(stream, Vec::new()) {
                Ok((src, sink)) => {
                    let peer = crate::transport::MessageSink::peer(&sink);
                    let sink: Arc<dyn crate::transport::MessageSink> = Arc::new(sink);
                    info!(%peer, "connection accepted");
                    crate::conn::serve(server, src, sink);
                }
                Err(e) => warn!("cannot set up connection: {e}"),
            }
        });
        if let Err(e) = r {
            live.fetch_sub(1, Ordering::Relaxed);
            warn!("cannot spawn a connection thread: {e}");
        }
    }
}
