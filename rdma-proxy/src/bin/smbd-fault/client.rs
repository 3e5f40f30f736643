//! An SMB Direct client over the verbs layer: the transport's client driver
//! (`smbdirect_transport::verbs::client::ClientDriver`, the sans-I/O core in the client
//! role, shared with the project's SMB client in `bench/`): credits, fragmentation,
//! reassembly and keepalive answers are the core's, exactly as in the proxy (server
//! role). On top of the connection this client registers a data buffer the server may
//! RDMA-read and RDMA-write (what buffer descriptors name), and a second one in another
//! protection domain (a "foreign" token: valid on this HCA, not for this queue pair),
//! and it can play a peer that stopped answering ([`SmbdClient::step`] with `mute`).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smbdirect_transport::smbd::{Config, Negotiated};
use smbdirect_transport::verbs::client::{self as drv, poll_fds, ClientDriver};
use smbdirect_transport::verbs::{Access, CmEventKind, CmId, EventChannel, Pd, RegisteredBuffer};

/// Bytes of the buffer the server may read and write.
pub const DATA_SIZE: usize = 4 << 20;
const FOREIGN_SIZE: usize = 64 << 10;

pub const REMOTE: Access = Access { local_write: true, remote_read: true, remote_write: true };

/// How long the connection manager steps may take.
const CM_TIMEOUT: Duration = Duration::from_secs(10);

pub fn wait_cm(ch: &EventChannel, what: &str) -> Result<CmEventKind, String> {
    drv::wait_cm(ch, what, CM_TIMEOUT)
}

/// An rdma_cm id with its address and route resolved to `addr`, and the
/// event channel that reports on it (both client modes start here).
pub fn resolve(addr: SocketAddr) -> Result<(EventChannel, CmId), String> {
    drv::resolve(addr, Duration::from_secs(2))
}

pub struct SmbdClient {
    // Drop order: the driver (its queue pair first) before the buffers it may name.
    drv: ClientDriver,
    /// Registered for remote read and write (the buffer descriptors' target).
    pub data: RegisteredBuffer,
    /// The same rights, but in another protection domain.
    pub foreign: RegisteredBuffer,
    _foreign_pd: Pd,
    pub negotiated: Option<Negotiated>,
    /// Whole SMB2 messages received, oldest first.
    pub messages: VecDeque<Vec<u8>>,
    /// When and why the connection ended.
    pub ended: Option<(Instant, String)>,
}

impl SmbdClient {
    /// Connects with rdma_cm and runs the SMB Direct negotiate (the core sends the
    /// request); returns once negotiated.
    pub fn connect(addr: SocketAddr, cfg: Config) -> Result<SmbdClient, String> {
        let d = ClientDriver::connect(addr, cfg, CM_TIMEOUT, 0)?;
        let ctx = d.id.context().ok_or("no device")?;
        let data = RegisteredBuffer::new(&d.pd, DATA_SIZE, REMOTE).map_err(|e| e.to_string())?;
        let foreign_pd = Pd::new(ctx).map_err(|e| e.to_string())?;
        let foreign = RegisteredBuffer::new(&foreign_pd, FOREIGN_SIZE, REMOTE).map_err(|e| e.to_string())?;
        let mut c = SmbdClient { drv: d, data, foreign, _foreign_pd: foreign_pd, negotiated: None, messages: VecDeque::new(), ended: None };
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

    /// The driver's state, copied into the public fields the scenarios read.
    fn sync(&mut self) {
        self.negotiated = self.drv.negotiated;
        self.messages.extend(self.drv.messages.drain(..));
        if self.ended.is_none() {
            self.ended.clone_from(&self.drv.ended);
        }
    }

    /// Queues one SMB2 message.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), String> {
        let r = self.drv.send(msg);
        self.sync();
        r
    }

    /// Waits up to `wait` for completions, connection events or the core's timer and
    /// handles them. `mute`: touch nothing but the connection manager (the queue pair
    /// still acknowledges at the transport level, but no SMB Direct message is
    /// processed or answered: a peer that stopped answering keepalives).
    pub fn step(&mut self, wait: Duration, mute: bool) {
        if mute {
            poll_fds(&self.drv.ch, None, wait);
            self.drv.cm_events(false);
        } else {
            let comp = self.drv.comp.clone();
            poll_fds(&self.drv.ch, Some(&comp), self.drv.wait_time(wait).min(wait));
            self.drv.step(&mut |_| None);
        }
        self.sync();
    }

    /// Ends the connection from our side.
    pub fn disconnect(&mut self) {
        self.drv.disconnect();
    }
}
