//! An in-memory RDMA fabric joining a client and a server [`Connection`]: sends land in
//! posted receives, RDMA READ/WRITE move bytes between registered regions checked by
//! token, offset and length, and faults are injected on request. Deterministic: a virtual
//! clock and a seeded generator, in the manner of quinn-proto's test `Pair`.
//!
//! The fabric can carry several connections between the same two hosts
//! ([`Fabric::connect_another`]): memory regions belong to the host and serve every
//! connection, and [`Fabric::set_reorder_across_qps`] interleaves the queue pairs'
//! completions at random, as a completion queue shared by several queue pairs would.
//!
//! Like a reliable-connected queue pair with RNR retry 0, a message that finds no receive
//! posted kills the connection; the fabric counts such sends (`credit_violations`) so tests
//! can assert that credits, not luck, prevented them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::smbd::{Action, CompletionError, Config, Connection, Event, RdmaDirection, RdmaWorkRequest, Role, SendSlot};

/// Index of an end in the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Client = 0,
    Server = 1,
}

impl Side {
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// Faults injected at one end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop this many of the next send completions of this end.
    pub lose_send_completions: u32,
    /// Drop this many of the next receive completions of this end (the data is consumed).
    pub lose_recv_completions: u32,
    /// Drop this many of the next RDMA completions of this end.
    pub lose_rdma_completions: u32,
    /// Receives posted by this end become usable only after this delay (a slow driver:
    /// with credits granted on time, the peer's message can arrive first = RNR).
    pub recv_post_delay: Duration,
    /// Deliver this end's ready completions in random order across its queues (send,
    /// receive, RDMA), each queue staying in order as on hardware.
    pub reorder_completions: bool,
    /// Extra random latency, up to this much, on messages sent by this end.
    pub jitter: Duration,
    /// This end stops answering: no events are handed to its connection and it takes no
    /// actions (its already posted receives still take messages, as hardware would).
    pub frozen: bool,
}

/// Fabric-wide knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricConfig {
    /// One-way latency of a send or RDMA work request.
    pub latency: Duration,
    /// RDMA bandwidth (bytes per microsecond) used to time RDMA completions; 0 = instant.
    pub rdma_bytes_per_us: u64,
    pub seed: u64,
}

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig { latency: Duration::from_micros(2), rdma_bytes_per_us: 0, seed: 0x5eed }
    }
}

/// Counters of what the fabric saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FabricStats {
    /// Sends posted while the peer had no receive left for them (credit accounting broken).
    pub credit_violations: u64,
    /// Messages that arrived with no receive ready (the connection died).
    pub rnr_events: u64,
    pub messages_delivered: u64,
    pub rdma_completed: u64,
    pub rdma_failed: u64,
    /// Largest RDMA bytes in flight seen on one end.
    pub max_rdma_bytes_in_flight: u64,
    pub completions_lost: u64,
    /// Largest RDMA work request and most local SGEs in one, as posted.
    pub max_rdma_wr_len: u32,
    pub max_rdma_wr_sges: usize,
    pub rdma_wrs_posted: u64,
    /// Completions of one queue pair handed over while a queue pair created before it on
    /// the same host had a completion ready (the in-order policy would have taken that
    /// one first): how often reordering between queue pairs actually happened.
    pub cross_qp_reordered: u64,
    /// Most RDMA READs, and most RDMA work requests of any kind, outstanding at once on
    /// one end (initiator depth and send queue room).
    pub max_rdma_reads_in_flight: u32,
    pub max_rdma_wrs_in_flight: u32,
}

#[derive(Debug)]
struct Packet {
    deliver_at: Instant,
    bytes: Vec<u8>,
    slot: SendSlot,
    invalidate: Option<u32>,
}

#[derive(Debug)]
enum Completion {
    Send(SendSlot, Result<(), CompletionError>),
    Recv(Result<Vec<u8>, CompletionError>),
    /// `counted`: the work request was counted as in flight (not flushed at posting).
    Rdma { wr_id: u64, len: u32, read: bool, counted: bool, result: Result<(), CompletionError> },
}

/// A registered memory region.
#[derive(Debug)]
pub struct Region {
    pub owner: Side,
    /// I/O virtual address of the first byte (what buffer descriptors' Offset names).
    pub base: u64,
    pub data: Vec<u8>,
    pub valid: bool,
    pub remote_read: bool,
    pub remote_write: bool,
}

/// One end: its connection and the queue pair state the fabric keeps for it.
#[derive(Debug)]
pub struct End {
    pub conn: Connection,
    pub faults: Faults,
    posted: VecDeque<(Instant, u32)>,
    inbound: VecDeque<Packet>,
    cq: VecDeque<(Instant, Completion)>,
    timer: Option<Instant>,
    disconnected: bool,
    rdma_in_flight: u64,
    rdma_wrs_in_flight: u32,
    rdma_reads_in_flight: u32,
    last_deliver: Option<Instant>,
}

impl End {
    fn new(conn: Connection) -> Self {
        End {
            conn,
            faults: Faults::default(),
            posted: VecDeque::with_capacity(512),
            inbound: VecDeque::with_capacity(512),
            cq: VecDeque::with_capacity(1024),
            timer: None,
            disconnected: false,
            rdma_in_flight: 0,
            rdma_wrs_in_flight: 0,
            rdma_reads_in_flight: 0,
            last_deliver: None,
        }
    }
    /// Receives posted and not yet consumed (ready or not).
    pub fn posted_receives(&self) -> usize {
        self.posted.len()
    }
    /// A one-line summary for test failures.
    pub fn describe(&self) -> String {
        format!(
            "state {:?} credits {:?} posted {:?} inbound {:?} cq {:?} timer {:?} queued {} outstanding {}",
            self.conn.state(),
            self.conn.credits(),
            self.posted,
            self.inbound.iter().map(|p| p.deliver_at).collect::<Vec<_>>(),
            self.cq.iter().map(|(_, c)| match c {
                Completion::Send(s, r) => format!("send{}:{:?}", s.0, r.is_ok()),
                Completion::Recv(r) => format!("recv:{:?}", r.is_ok()),
                Completion::Rdma { wr_id, .. } => format!("rdma{wr_id}"),
            }).collect::<Vec<_>>(),
            self.timer,
            self.conn.queued_bytes(),
            self.conn.sends_outstanding()
        )
    }

    pub fn is_disconnected(&self) -> bool {
        self.disconnected
    }
}

/// Names one connection (queue pair on each host) of a [`Fabric`]; the first is `QpId(0)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QpId(pub usize);

/// The client host, the server host, and the wire between them: one or more connections
/// (a queue pair on each host per connection, as with SMB multichannel) sharing the
/// hosts' registered memory and a virtual clock. The single-connection methods
/// ([`Fabric::end`], [`Fabric::conn`], [`Fabric::send`], ...) address `QpId(0)`; the
/// `_at` variants address any connection.
#[derive(Debug)]
pub struct Fabric {
    pub now: Instant,
    qps: Vec<[End; 2]>,
    regions: HashMap<u32, Region>,
    next_key: u32,
    cfg: FabricConfig,
    rng: u64,
    /// Per host (indexed by [`Side`]): hand out ready completions of all its queue pairs
    /// in random interleaving (a shared completion queue polled by one thread sees the
    /// queue pairs' completions in any order relative to each other).
    reorder_across_qps: [bool; 2],
    pub stats: FabricStats,
    pool: Vec<Vec<u8>>,
}

impl Fabric {
    /// Connects a client and a server with the given configurations (the server's
    /// receives are posted before the client's negotiate request goes out).
    pub fn new(client: Config, server: Config, cfg: FabricConfig) -> Self {
        let now = Instant::now();
        let mut f = Fabric {
            now,
            qps: Vec::with_capacity(2),
            regions: HashMap::new(),
            next_key: 0x1000,
            cfg,
            rng: cfg.seed | 1,
            reorder_across_qps: [false; 2],
            stats: FabricStats::default(),
            pool: Vec::new(),
        };
        f.connect_another(client, server);
        f
    }

    /// Opens one more connection between the same two hosts, at the current time (the
    /// server's receives are posted before the client's negotiate request goes out).
    pub fn connect_another(&mut self, client: Config, server: Config) -> QpId {
        let now = self.now;
        let s = Connection::new(Role::Server, server, now);
        let c = Connection::new(Role::Client, client, now);
        let q = self.qps.len();
        self.qps.push([End::new(c), End::new(s)]);
        self.take_actions(q, Side::Server);
        self.take_actions(q, Side::Client);
        QpId(q)
    }

    /// How many connections the fabric carries.
    pub fn qp_count(&self) -> usize {
        self.qps.len()
    }

    /// Interleave the completions of all queue pairs of `host` at random (each queue of
    /// each queue pair still completes in order).
    pub fn set_reorder_across_qps(&mut self, host: Side, on: bool) {
        self.reorder_across_qps[host.idx()] = on;
    }

    pub fn end(&self, side: Side) -> &End {
        self.end_at(QpId(0), side)
    }
    pub fn end_mut(&mut self, side: Side) -> &mut End {
        self.end_at_mut(QpId(0), side)
    }
    pub fn conn(&mut self, side: Side) -> &mut Connection {
        self.conn_at(QpId(0), side)
    }
    pub fn faults(&mut self, side: Side) -> &mut Faults {
        self.faults_at(QpId(0), side)
    }

    /// One end of connection `qp`. Panics if `qp` was not returned by this fabric (a test
    /// bug, not peer input).
    pub fn end_at(&self, qp: QpId, side: Side) -> &End {
        &self.qps[qp.0][side.idx()]
    }
    pub fn end_at_mut(&mut self, qp: QpId, side: Side) -> &mut End {
        &mut self.qps[qp.0][side.idx()]
    }
    pub fn conn_at(&mut self, qp: QpId, side: Side) -> &mut Connection {
        &mut self.qps[qp.0][side.idx()].conn
    }
    pub fn faults_at(&mut self, qp: QpId, side: Side) -> &mut Faults {
        &mut self.qps[qp.0][side.idx()].faults
    }

    /// Queues an upper-layer message at `side` (at the fabric's current time).
    pub fn send(&mut self, side: Side, data: &[u8]) -> Result<(), crate::smbd::SendError> {
        self.send_at(QpId(0), side, data)
    }
    pub fn send_at(&mut self, qp: QpId, side: Side, data: &[u8]) -> Result<(), crate::smbd::SendError> {
        let now = self.now;
        self.qps[qp.0][side.idx()].conn.send(now, data)
    }

    /// Next event for the upper layer at `side`.
    pub fn poll_event(&mut self, side: Side) -> Option<Event> {
        self.poll_event_at(QpId(0), side)
    }
    pub fn poll_event_at(&mut self, qp: QpId, side: Side) -> Option<Event> {
        self.qps[qp.0][side.idx()].conn.poll_event()
    }

    /// The credit invariant that keeps an RNR-retry-0 queue pair alive, checked from the
    /// outside: on every connection and in each direction, the send credits the sender
    /// holds plus the messages already on the wire to the peer never exceed the receives
    /// the peer has posted. Returns a description of the first violation.
    pub fn check_credit_invariant(&self) -> Result<(), String> {
        for (q, ends) in self.qps.iter().enumerate() {
            for side in [Side::Client, Side::Server] {
                let (me, peer) = (&ends[side.idx()], &ends[side.peer().idx()]);
                if me.disconnected || peer.disconnected {
                    continue;
                }
                let credits = usize::from(me.conn.credits().send);
                let on_wire = peer.inbound.len();
                if credits + on_wire > peer.posted.len() {
                    return Err(format!(
                        "qp {q} {side:?}: {credits} send credits + {on_wire} messages in flight > {} receives posted at the peer",
                        peer.posted.len()
                    ));
                }
            }
        }
        Ok(())
    }

    // ---- memory ----

    /// Registers `len` zeroed bytes at I/O address `base` for `owner`; returns the key
    /// (used as both lkey and rkey). Regions belong to the host: every connection of
    /// that host may use them.
    pub fn register(&mut self, owner: Side, base: u64, len: usize, remote_read: bool, remote_write: bool) -> u32 {
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(0x101);
        self.regions.insert(key, Region { owner, base, data: vec![0; len], valid: true, remote_read, remote_write });
        key
    }
    pub fn region(&self, key: u32) -> Option<&Region> {
        self.regions.get(&key)
    }
    pub fn region_mut(&mut self, key: u32) -> Option<&mut Region> {
        self.regions.get_mut(&key)
    }
    pub fn deregister(&mut self, key: u32) {
        self.regions.remove(&key);
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn buf(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }
    fn put(&mut self, mut v: Vec<u8>) {
        if self.pool.len() < 1024 {
            v.clear();
            self.pool.push(v);
        }
    }

    // ---- driving ----

    fn take_actions(&mut self, q: usize, side: Side) -> bool {
        let i = side.idx();
        if self.qps[q][i].faults.frozen {
            return false;
        }
        let mut any = false;
        while let Some(a) = self.qps[q][i].conn.poll_action() {
            any = true;
            match a {
                Action::PostReceive { len } => {
                    if self.qps[q][i].disconnected {
                        continue;
                    }
                    let at = self.now + self.qps[q][i].faults.recv_post_delay;
                    self.qps[q][i].posted.push_back((at, len));
                }
                Action::PostSend { slot, len: _, invalidate } => self.post_send(q, side, slot, invalidate),
                Action::PostRdma(wr) => self.post_rdma(q, side, wr),
                Action::SetTimer(t) => self.qps[q][i].timer = t,
                Action::Disconnect(_) => self.disconnect(q, side),
            }
        }
        any
    }

    fn post_send(&mut self, q: usize, side: Side, slot: SendSlot, invalidate: Option<u32>) {
        let (i, p) = (side.idx(), side.peer().idx());
        if self.qps[q][i].disconnected {
            self.qps[q][i].cq.push_back((self.now, Completion::Send(slot, Err(CompletionError::Flushed))));
            return;
        }
        let mut bytes = self.buf();
        bytes.extend_from_slice(self.qps[q][i].conn.send_bytes(slot));
        if self.qps[q][p].posted.len() <= self.qps[q][p].inbound.len() {
            self.stats.credit_violations += 1;
        }
        let jitter = self.qps[q][i].faults.jitter;
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rand() % (u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX - 1) + 1))
        };
        let mut at = self.now + self.cfg.latency + extra;
        // A queue pair delivers in order.
        if let Some(last) = self.qps[q][p].last_deliver {
            at = at.max(last);
        }
        self.qps[q][p].last_deliver = Some(at);
        self.qps[q][p].inbound.push_back(Packet { deliver_at: at, bytes, slot, invalidate });
    }

    fn check_remote(&self, side: Side, wr: &RdmaWorkRequest) -> Result<(), CompletionError> {
        let r = self.regions.get(&wr.remote_token).ok_or(CompletionError::RemoteAccess)?;
        let allowed = match wr.direction {
            RdmaDirection::Read => r.remote_read,
            RdmaDirection::Write => r.remote_write,
        };
        if r.owner != side.peer() || !r.valid || !allowed {
            return Err(CompletionError::RemoteAccess);
        }
        let start = wr.remote_addr.checked_sub(r.base).ok_or(CompletionError::RemoteAccess)?;
        let end = start.checked_add(u64::from(wr.len)).ok_or(CompletionError::RemoteAccess)?;
        if end > r.data.len() as u64 {
            return Err(CompletionError::RemoteAccess);
        }
        for s in wr.local() {
            let l = self.regions.get(&s.lkey).ok_or(CompletionError::LocalProtection)?;
            let ls = s.addr.checked_sub(l.base).ok_or(CompletionError::LocalProtection)?;
            let le = ls.checked_add(u64::from(s.len)).ok_or(CompletionError::LocalProtection)?;
            if l.owner != side || !l.valid || le > l.data.len() as u64 {
                return Err(CompletionError::LocalProtection);
            }
        }
        Ok(())
    }

    fn execute_rdma(&mut self, side: Side, wr: &RdmaWorkRequest) -> Result<(), CompletionError> {
        self.check_remote(side, wr)?;
        let mut roff = 0usize;
        let rbase = self.regions.get(&wr.remote_token).map_or(0, |r| r.base);
        let rstart = (wr.remote_addr - rbase) as usize;
        for s in wr.local() {
            let lbase = self.regions.get(&s.lkey).map_or(0, |r| r.base);
            let lstart = (s.addr - lbase) as usize;
            let n = s.len as usize;
            // Copy through a temporary: source and destination are different map entries.
            let mut tmp = self.buf();
            match wr.direction {
                RdmaDirection::Read => {
                    if let Some(src) = self.regions.get(&wr.remote_token).and_then(|r| r.data.get(rstart + roff..rstart + roff + n)) {
                        tmp.extend_from_slice(src);
                    }
                    if let Some(dst) = self.regions.get_mut(&s.lkey).and_then(|r| r.data.get_mut(lstart..lstart + n)) {
                        if dst.len() == tmp.len() {
                            dst.copy_from_slice(&tmp);
                        }
                    }
                }
                RdmaDirection::Write => {
                    if let Some(src) = self.regions.get(&s.lkey).and_then(|r| r.data.get(lstart..lstart + n)) {
                        tmp.extend_from_slice(src);
                    }
                    if let Some(dst) =
                        self.regions.get_mut(&wr.remote_token).and_then(|r| r.data.get_mut(rstart + roff..rstart + roff + n))
                    {
                        if dst.len() == tmp.len() {
                            dst.copy_from_slice(&tmp);
                        }
                    }
                }
            }
            self.put(tmp);
            roff += n;
        }
        Ok(())
    }

    fn post_rdma(&mut self, q: usize, side: Side, wr: RdmaWorkRequest) {
        let i = side.idx();
        if self.qps[q][i].disconnected {
            self.qps[q][i].cq.push_back((
                self.now,
                Completion::Rdma { wr_id: wr.wr_id, len: 0, read: false, counted: false, result: Err(CompletionError::Flushed) },
            ));
            return;
        }
        self.stats.max_rdma_wr_len = self.stats.max_rdma_wr_len.max(wr.len);
        self.stats.max_rdma_wr_sges = self.stats.max_rdma_wr_sges.max(wr.local().len());
        self.stats.rdma_wrs_posted += 1;
        let result = self.execute_rdma(side, &wr);
        let e = &mut self.qps[q][i];
        let read = wr.direction == RdmaDirection::Read;
        e.rdma_in_flight += u64::from(wr.len);
        e.rdma_wrs_in_flight += 1;
        e.rdma_reads_in_flight += u32::from(read);
        self.stats.max_rdma_bytes_in_flight = self.stats.max_rdma_bytes_in_flight.max(e.rdma_in_flight);
        self.stats.max_rdma_wrs_in_flight = self.stats.max_rdma_wrs_in_flight.max(e.rdma_wrs_in_flight);
        self.stats.max_rdma_reads_in_flight = self.stats.max_rdma_reads_in_flight.max(e.rdma_reads_in_flight);
        let xfer = u64::from(wr.len).checked_div(self.cfg.rdma_bytes_per_us).map_or(Duration::ZERO, Duration::from_micros);
        let at = self.now + self.cfg.latency * 2 + xfer;
        e.cq.push_back((at, Completion::Rdma { wr_id: wr.wr_id, len: wr.len, read, counted: true, result }));
    }

    fn disconnect(&mut self, q: usize, side: Side) {
        let (i, p) = (side.idx(), side.peer().idx());
        if self.qps[q][i].disconnected {
            return;
        }
        self.qps[q][i].disconnected = true;
        self.qps[q][i].posted.clear();
        self.qps[q][p].posted.clear();
        for e in [i, p] {
            while let Some(pk) = self.qps[q][e].inbound.pop_front() {
                self.put(pk.bytes);
            }
        }
        if !self.qps[q][p].disconnected {
            self.qps[q][p].disconnected = true;
            if !self.qps[q][p].faults.frozen {
                let now = self.now;
                self.qps[q][p].conn.handle_peer_disconnect(now);
            }
        }
    }

    fn deliver(&mut self, q: usize, to: Side) -> bool {
        let (i, s) = (to.idx(), to.peer().idx());
        let now = self.now;
        let mut any = false;
        while self.qps[q][i].inbound.front().is_some_and(|p| p.deliver_at <= now) {
            let Some(pk) = self.qps[q][i].inbound.pop_front() else { break };
            any = true;
            let ready = self.qps[q][i].posted.front().is_some_and(|&(t, _)| t <= now);
            if !ready {
                // RNR with retry count 0: the sender's QP breaks, the connection dies.
                self.stats.rnr_events += 1;
                self.qps[q][s].cq.push_back((now, Completion::Send(pk.slot, Err(CompletionError::RnrRetryExceeded))));
                self.put(pk.bytes);
                continue;
            }
            let Some((_, len)) = self.qps[q][i].posted.pop_front() else { break };
            if pk.bytes.len() > len as usize {
                self.qps[q][i].cq.push_back((now, Completion::Recv(Err(CompletionError::LocalLength))));
                self.qps[q][s].cq.push_back((now, Completion::Send(pk.slot, Err(CompletionError::RetryExceeded))));
                self.put(pk.bytes);
                continue;
            }
            if let Some(tok) = pk.invalidate {
                if let Some(r) = self.regions.get_mut(&tok) {
                    if r.owner == to {
                        r.valid = false;
                    }
                }
            }
            self.stats.messages_delivered += 1;
            self.qps[q][i].cq.push_back((now, Completion::Recv(Ok(pk.bytes))));
            self.qps[q][s].cq.push_back((now, Completion::Send(pk.slot, Ok(()))));
        }
        any
    }

    /// Which of end (q, side)'s ready completions to hand over next, by its own policy.
    fn pick(&mut self, q: usize, i: usize) -> Option<usize> {
        let now = self.now;
        let e = &self.qps[q][i];
        if e.faults.frozen {
            return None;
        }
        if !e.faults.reorder_completions {
            // Completions are in time order except RDMA ones: the front, or any ready.
            return match e.cq.front() {
                Some((t, _)) if *t <= now => Some(0),
                _ => e.cq.iter().position(|(t, _)| *t <= now),
            };
        }
        let ready = e.cq.iter().take_while(|(t, _)| *t <= now).count();
        if ready == 0 {
            return e.cq.iter().position(|(t, _)| *t <= now);
        }
        // Each queue (send, receive, RDMA) completes in order, as on a real queue pair;
        // only the interleaving between them is shuffled.
        let mut heads = [None; 3];
        for (k, (_, c)) in e.cq.iter().take(ready).enumerate() {
            let kind = match c {
                Completion::Send(..) => 0,
                Completion::Recv(_) => 1,
                Completion::Rdma { .. } => 2,
            };
            if heads[kind].is_none() {
                heads[kind] = Some(k);
            }
        }
        let n = heads.iter().flatten().count() as u64;
        let pick = (self.rand() % n.max(1)) as usize;
        Some(heads.iter().flatten().nth(pick).copied().unwrap_or(0))
    }

    /// Hands completion `idx` of end (q, side) to its connection and executes what follows.
    fn complete_one(&mut self, q: usize, side: Side, idx: usize) -> bool {
        let i = side.idx();
        let now = self.now;
        let Some((_, c)) = self.qps[q][i].cq.remove(idx) else { return false };
        let e = &mut self.qps[q][i];
        let f = &mut e.faults;
        match c {
            Completion::Send(slot, r) => {
                if f.lose_send_completions > 0 {
                    f.lose_send_completions -= 1;
                    self.stats.completions_lost += 1;
                    return true;
                }
                e.conn.handle_send_complete(now, slot, r);
            }
            Completion::Recv(r) => {
                if f.lose_recv_completions > 0 {
                    f.lose_recv_completions -= 1;
                    self.stats.completions_lost += 1;
                    if let Ok(b) = r {
                        self.put(b);
                    }
                    return true;
                }
                match r {
                    Ok(b) => {
                        e.conn.handle_recv(now, &b);
                        self.put(b);
                    }
                    Err(err) => e.conn.handle_recv_error(now, err),
                }
            }
            Completion::Rdma { wr_id, len, read, counted, result } => {
                if counted {
                    e.rdma_in_flight = e.rdma_in_flight.saturating_sub(u64::from(len));
                    e.rdma_wrs_in_flight = e.rdma_wrs_in_flight.saturating_sub(1);
                    e.rdma_reads_in_flight = e.rdma_reads_in_flight.saturating_sub(u32::from(read));
                }
                if f.lose_rdma_completions > 0 {
                    f.lose_rdma_completions -= 1;
                    self.stats.completions_lost += 1;
                    return true;
                }
                if result.is_ok() {
                    self.stats.rdma_completed += 1;
                } else {
                    self.stats.rdma_failed += 1;
                }
                e.conn.handle_rdma_complete(now, wr_id, result);
            }
        }
        // Let the connection act on each completion before the next one.
        self.take_actions(q, side);
        true
    }

    /// Hands over every ready completion of host `side`: queue pair by queue pair, or
    /// interleaved at random across queue pairs when so asked.
    fn complete(&mut self, side: Side) -> bool {
        let i = side.idx();
        let mut any = false;
        if self.reorder_across_qps[i] && self.qps.len() > 1 {
            let now = self.now;
            loop {
                let ready = |e: &End| !e.faults.frozen && e.cq.iter().any(|(t, _)| *t <= now);
                let n = self.qps.iter().filter(|ends| ready(&ends[i])).count();
                if n == 0 {
                    break;
                }
                let k = (self.rand() % n as u64) as usize;
                let Some(q) = (0..self.qps.len()).filter(|&q| ready(&self.qps[q][i])).nth(k) else { break };
                let Some(idx) = self.pick(q, i) else { break };
                if self.qps.iter().take(q).any(|ends| ready(&ends[i])) {
                    self.stats.cross_qp_reordered += 1;
                }
                any |= self.complete_one(q, side, idx);
            }
        } else {
            for q in 0..self.qps.len() {
                while let Some(idx) = self.pick(q, i) {
                    any |= self.complete_one(q, side, idx);
                }
            }
        }
        any
    }

    fn fire_timers(&mut self, q: usize, side: Side) -> bool {
        let e = &mut self.qps[q][side.idx()];
        if e.faults.frozen {
            return false;
        }
        match e.timer {
            Some(t) if t <= self.now => {
                e.timer = None;
                e.conn.handle_timeout(self.now);
                true
            }
            _ => false,
        }
    }

    /// One round at the current instant. Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let mut any = false;
        let n = self.qps.len();
        for q in 0..n {
            for side in [Side::Server, Side::Client] {
                any |= self.take_actions(q, side);
            }
        }
        for q in 0..n {
            for side in [Side::Server, Side::Client] {
                any |= self.deliver(q, side);
            }
        }
        for side in [Side::Server, Side::Client] {
            any |= self.complete(side);
            for q in 0..n {
                any |= self.fire_timers(q, side);
                any |= self.take_actions(q, side);
            }
        }
        any
    }

    /// Steps until nothing more happens at the current instant.
    pub fn settle(&mut self) {
        while self.step() {}
    }

    /// The next instant at which something is scheduled (delivery, completion, timer,
    /// a receive becoming ready).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for e in self.qps.iter().flatten() {
            if let Some(p) = e.inbound.front() {
                consider(p.deliver_at);
            }
            if let Some(&(t, _)) = e.posted.iter().find(|(t, _)| *t > self.now) {
                consider(t);
            }
            if !e.faults.frozen {
                for (t, _) in &e.cq {
                    consider(*t);
                }
                if let Some(t) = e.timer {
                    consider(t);
                }
            }
        }
        next
    }

    /// Settles, then jumps the clock to the next wakeup, once. Returns false when nothing
    /// is scheduled at all or the next wakeup is after `limit`.
    pub fn advance(&mut self, limit: Instant) -> bool {
        self.settle();
        match self.next_wakeup() {
            Some(t) if t <= limit => {
                if t > self.now {
                    self.now = t;
                }
                self.settle();
                true
            }
            _ => false,
        }
    }

    /// Runs until nothing is scheduled before `limit` (then the clock stays where it is).
    pub fn run_until(&mut self, limit: Instant) {
        while self.advance(limit) {}
    }

    /// Runs until the event loop is quiet apart from far timers (those further than
    /// `horizon` ahead, e.g. the 120 s keepalive).
    pub fn run_quiet(&mut self, horizon: Duration) {
        loop {
            self.settle();
            match self.next_wakeup() {
                Some(t) if t <= self.now + horizon => {
                    if t > self.now {
                        self.now = t;
                    }
                }
                _ => return,
            }
        }
    }
}
