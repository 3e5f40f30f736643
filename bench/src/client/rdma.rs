//! The SMB Direct channel (MS-SMBD) over verbs: the transport's client driver
//! (`smbdirect_transport::verbs::client::ClientDriver`: the sans-I/O core in the client
//! role on one RC queue pair made with rdma_cm, shared with `smbd-fault`; credits,
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
//!
//! The pool ([`Channel::pool_init`], for the benchmark): registering per I/O costs four
//! system calls (reg_mr, alloc_mw, dealloc_mw, dereg_mr) and pins pages each time. A pool
//! entry is a buffer registered once, for the life of the pool, with one window: lending
//! it to a request only posts a window bind (no system call of its own). When the server
//! invalidated the key (RDMA_V1_INVALIDATE) the window is free again for the next bind;
//! when it did not (RDMA_V1, or an error answer) the window is replaced (dealloc + alloc,
//! which revokes the key), so a key never outlives its request either way. Without
//! windows the pool's regions carry the remote rights themselves and their keys stay
//! valid for the life of the pool (said in a log line): a benchmark's trade-off, never
//! the default of [`Channel::register`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Mutex;

use smbdirect_transport::smbd::{Config, Negotiated};
use smbdirect_transport::verbs::client::{poll_fds, wr_id, ClientDriver, Seen, KIND_SHIFT};
use smbdirect_transport::verbs::{Access, BufferMr, CompChannel, EventChannel, Mw};

use super::channel::{BufferDescriptorV1, Channel, ChannelError, ChannelLimits, RdmaAccess, RdmaStats, Registration};

/// Memory window binds of pool entries (unsignalled: they complete only on error). Kinds 1
/// and 2 are the driver's receives and sends.
const KIND_POOL_BIND: u64 = 0;
/// Memory window binds of [`Channel::register`] registrations.
const KIND_BIND: u64 = 3;
/// Registrations alive at once (each holds a send queue entry until a later signalled
/// send completes): above any request depth the client uses.
const MAX_REGISTRATIONS: usize = 128;

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

/// One long-lived registration of the pool.
struct PoolEntry {
    mw: Option<Mw>,
    mr: BufferMr,
    /// Lent to a request (between pool_register and pool_release).
    lent: bool,
    /// The window's current key may still be used by the server (bound, not invalidated).
    bound: bool,
}

struct Inner {
    // Drop order: the driver (its queue pair first) before the registrations.
    drv: ClientDriver,
    regs: HashMap<u64, Registered>,
    pool: Vec<PoolEntry>,
    /// Registrations handed out (register and pool_register).
    registrations: u64,
    /// The device binds type 2 memory windows (probed at connect).
    windows: bool,
    /// Receives that invalidated one of our live windows' keys (Send-With-Invalidate).
    remote_invalidations: u64,
    next_handle: u64,
}

impl SmbdChannel {
    /// Connects to `addr` (an RDMA-capable address of the server, port 445 or 5445) with
    /// rdma_cm and runs the SMB Direct negotiate; returns once negotiated, or fails
    /// within about `timeout`.
    pub fn connect(addr: SocketAddr, cfg: Config, timeout: Duration) -> Result<SmbdChannel, ChannelError> {
        let t = timeout.max(Duration::from_millis(100));
        let drv = ClientDriver::connect(addr, cfg, t, MAX_REGISTRATIONS as u32).map_err(ChannelError::Rdma)?;
        // Type 2 memory windows: the only remotely invalidatable keys user space can make.
        let windows = match Mw::new(&drv.pd) {
            Ok(_) => true,
            Err(e) => {
                tracing::info!(%addr, error = %e, "no type 2 memory windows: RDMA_V1 only (no remote invalidation)");
                false
            }
        };
        let (ch, comp) = (drv.ch.clone(), drv.comp.clone());
        let mut inner = Inner { drv, regs: HashMap::new(), pool: Vec::new(), registrations: 0, windows, remote_invalidations: 0, next_handle: 1 };
        let end = Instant::now() + t;
        let negotiated = loop {
            inner.step();
            if let Some(n) = inner.drv.negotiated {
                break n;
            }
            if let Some((_, why)) = &inner.drv.ended {
                return Err(err("SMB Direct negotiate", format!("connection ended: {why}")));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                inner.drv.disconnect();
                return Err(ChannelError::Timeout(timeout));
            }
            poll_fds(&ch, Some(&comp), inner.drv.wait_time(left));
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
        *self.lock().drv.core.stats()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Handles whatever is ready without waiting: the driver's work, plus the keys the
    /// server invalidated and our window binds that failed.
    fn step(&mut self) {
        let Inner { drv, regs, pool, remote_invalidations, .. } = self;
        drv.step(&mut |seen| match seen {
            Seen::Invalidated(k) => {
                if let Some(p) = pool.iter_mut().find(|p| p.bound && p.mw.as_ref().is_some_and(|m| m.rkey() == k)) {
                    p.bound = false;
                    *remote_invalidations += 1;
                } else if regs.values().any(|r| r.mw.as_ref().is_some_and(|m| m.rkey() == k)) {
                    *remote_invalidations += 1;
                } else {
                    tracing::warn!(key = k, "the server invalidated a key that is none of our registrations");
                }
                None
            }
            Seen::Other(wc) => match (wc.wr_id >> KIND_SHIFT, wc.status) {
                // The queue pair is in error now: every later request fails too.
                (KIND_BIND | KIND_POOL_BIND, Err(e)) => Some(format!("memory window bind {} failed: {e:?}", wc.wr_id & ((1 << KIND_SHIFT) - 1))),
                _ => None,
            },
        });
    }
}

impl Channel for SmbdChannel {
    fn send(&self, msg: &[u8], _timeout: Duration) -> Result<(), ChannelError> {
        let mut g = self.lock();
        if g.drv.ended.is_some() {
            return Err(ChannelError::Closed);
        }
        let max = self.negotiated.peer_max_fragmented_size as usize;
        if msg.len() > max {
            return Err(ChannelError::TooLarge { len: msg.len(), limit: max });
        }
        // The core queues what the send credits do not cover yet; credits arrive with
        // the server's messages, which recv() processes.
        g.drv.send(msg).map_err(|e| err("send", e))?;
        match &g.drv.ended {
            Some(_) => Err(ChannelError::Closed),
            None => Ok(()),
        }
    }

    fn recv(&self, timeout: Duration) -> Result<Vec<u8>, ChannelError> {
        let end = Instant::now() + timeout;
        loop {
            let wait = {
                let mut g = self.lock();
                if let Some(m) = g.drv.messages.pop_front() {
                    return Ok(m);
                }
                g.step();
                if let Some(m) = g.drv.messages.pop_front() {
                    return Ok(m);
                }
                if let Some((_, why)) = &g.drv.ended {
                    tracing::debug!(peer = %self.peer, why, "SMB Direct channel ended");
                    return Err(ChannelError::Rdma(format!("the connection ended: {why}")));
                }
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ChannelError::Timeout(timeout));
                }
                g.drv.wait_time(left)
            };
            poll_fds(&self.ev, Some(&self.comp), wait);
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
        if g.drv.ended.is_some() {
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
            let mr = BufferMr::new_bindable(&g.drv.pd, buf, local).map_err(|(e, _)| err("ibv_reg_mr", e))?;
            let mut mw = Mw::new(&g.drv.pd).map_err(|e| err("ibv_alloc_mw", e))?;
            g.drv.id.post_bind_mw(wr_id(KIND_BIND, handle), &mut mw, &mr, rights).map_err(|e| err("binding a memory window", e))?;
            Registered { mw: Some(mw), mr }
        } else {
            let mr = BufferMr::new(&g.drv.pd, buf, rights).map_err(|(e, _)| err("ibv_reg_mr", e))?;
            Registered { mw: None, mr }
        };
        let token = reg.mw.as_ref().map_or_else(|| reg.mr.rkey(), Mw::rkey);
        let descriptors = vec![BufferDescriptorV1 { offset: reg.mr.addr(), token, length: len }];
        g.next_handle += 1;
        g.registrations += 1;
        g.regs.insert(handle, reg);
        Ok(Registration { descriptors, handle })
    }

    fn deregister(&self, handle: u64) -> Result<Vec<u8>, ChannelError> {
        let Registered { mw, mr } = self.lock().regs.remove(&handle).ok_or(ChannelError::UnknownHandle(handle))?;
        // The window first (revokes its key whether or not the server invalidated it).
        drop(mw);
        Ok(mr.into_inner())
    }

    fn supports_remote_invalidate(&self) -> bool {
        self.lock().windows
    }

    fn rdma_stats(&self) -> Option<RdmaStats> {
        let g = self.lock();
        let st = g.drv.core.stats();
        Some(RdmaStats {
            messages_sent: st.messages_sent,
            messages_received: st.messages_received,
            inline_sent: st.bytes_sent,
            inline_recv: st.bytes_received,
            registrations: g.registrations,
            remote_invalidations: g.remote_invalidations,
        })
    }

    fn pool_init(&self, bufs: Vec<Vec<u8>>) -> Result<(), ChannelError> {
        let limit = self.negotiated.max_read_write_size as usize;
        let mut g = self.lock();
        if g.drv.ended.is_some() {
            return Err(ChannelError::Closed);
        }
        if g.pool.iter().any(|p| p.lent) {
            return Err(err("pool_init", "the old pool still has buffers lent to requests"));
        }
        if bufs.len() + g.regs.len() > MAX_REGISTRATIONS {
            return Err(err("pool_init", format!("{} buffers: at most {MAX_REGISTRATIONS} registrations", bufs.len())));
        }
        g.pool.clear();
        if !g.windows {
            tracing::info!(peer = %self.peer, "no memory windows: the pool's keys stay valid for the life of the pool");
        }
        for buf in bufs {
            if buf.len() > limit {
                return Err(ChannelError::TooLarge { len: buf.len(), limit });
            }
            let e = if g.windows {
                let local = Access { local_write: true, remote_read: false, remote_write: false };
                let mr = BufferMr::new_bindable(&g.drv.pd, buf, local).map_err(|(e, _)| err("ibv_reg_mr", e))?;
                let mw = Mw::new(&g.drv.pd).map_err(|e| err("ibv_alloc_mw", e))?;
                PoolEntry { mw: Some(mw), mr, lent: false, bound: false }
            } else {
                let all = Access { local_write: true, remote_read: true, remote_write: true };
                let mr = BufferMr::new(&g.drv.pd, buf, all).map_err(|(e, _)| err("ibv_reg_mr", e))?;
                PoolEntry { mw: None, mr, lent: false, bound: false }
            };
            g.pool.push(e);
        }
        Ok(())
    }

    fn pool_register(&self, index: usize, len: usize, access: RdmaAccess) -> Result<Registration, ChannelError> {
        let rights = match access {
            RdmaAccess::PeerWrites => Access { local_write: true, remote_read: false, remote_write: true },
            RdmaAccess::PeerReads => Access { local_write: false, remote_read: true, remote_write: false },
        };
        let mut g = self.lock();
        if g.drv.ended.is_some() {
            return Err(ChannelError::Closed);
        }
        let Inner { pool, drv, .. } = &mut *g;
        let id = &drv.id;
        let e = pool.get_mut(index).ok_or(ChannelError::UnknownHandle(index as u64))?;
        if e.lent {
            return Err(err("pool_register", format!("pool buffer {index} is lent already")));
        }
        if len == 0 || len > e.mr.len() {
            return Err(ChannelError::TooLarge { len, limit: e.mr.len() });
        }
        let token = match e.mw.as_mut() {
            Some(mw) => {
                // A free window (fresh, or invalidated by the server, or replaced at release).
                let k = id.post_bind_mw(wr_id(KIND_POOL_BIND, index as u64), mw, &e.mr, rights).map_err(|x| err("binding a memory window", x))?;
                e.bound = true;
                k
            }
            None => e.mr.rkey(),
        };
        e.lent = true;
        let descriptors = vec![BufferDescriptorV1 { offset: e.mr.addr(), token, length: len as u32 }];
        g.registrations += 1;
        Ok(Registration { descriptors, handle: index as u64 })
    }

    fn pool_release(&self, index: usize) -> Result<(), ChannelError> {
        let mut g = self.lock();
        let pd = g.drv.pd.clone();
        let e = g.pool.get_mut(index).ok_or(ChannelError::UnknownHandle(index as u64))?;
        if !e.lent {
            return Err(err("pool_release", format!("pool buffer {index} is not lent")));
        }
        e.lent = false;
        if e.bound {
            // The server did not invalidate the key: revoke it by replacing the window.
            e.mw = None;
            e.bound = false;
            e.mw = Some(Mw::new(&pd).map_err(|x| err("ibv_alloc_mw", x))?);
        }
        Ok(())
    }

    fn stalled(&self) -> Option<String> {
        let mut g = self.lock();
        g.step();
        let core = &g.drv.core;
        let (queued, c) = (core.queued_bytes(), *core.credits());
        // The last credit is kept for a message that grants credits (MS-SMBD 3.1.5.1).
        let blocked = c.send == 0 || (c.send == 1 && c.grantable() == 0);
        (queued > 0 && blocked).then(|| {
            format!(
                "SMB Direct send credits exhausted: {queued} bytes wait to be sent and the server granted no credit \
                 (send credits {}, {} messages received in all)",
                c.send,
                core.stats().messages_received
            )
        })
    }

    fn close(&self) {
        let mut g = self.lock();
        g.drv.end("closed by the client");
        g.drv.disconnect();
    }

    fn peer(&self) -> String {
        format!("rdma://{}", self.peer)
    }
}

impl Drop for SmbdChannel {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        g.drv.disconnect();
    }
}
