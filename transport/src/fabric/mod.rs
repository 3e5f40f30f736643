//! An in-memory RDMA fabric joining a client and a server [`Connection`]: sends land in
//! posted receives, RDMA READ/WRITE move bytes between registered regions checked by
//! token, offset and length, and faults are injected on request. Deterministic: a virtual
//! clock and a seeded generator, in the manner of quinn-proto's test `Pair`.
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
    Rdma { wr_id: u64, len: u32, result: Result<(), CompletionError> },
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

/// The client, the server and the wire between them.
#[derive(Debug)]
pub struct Fabric {
    pub now: Instant,
    ends: [End; 2],
    regions: HashMap<u32, Region>,
    next_key: u32,
    cfg: FabricConfig,
    rng: u64,
    pub stats: FabricStats,
    pool: Vec<Vec<u8>>,
}

impl Fabric {
    /// Connects a client and a server with the given configurations (the server's
    /// receives are posted before the client's negotiate request goes out).
    pub fn new(client: Config, server: Config, cfg: FabricConfig) -> Self {
        let now = Instant::now();
        let s = Connection::new(Role::Server, server, now);
        let c = Connection::new(Role::Client, client, now);
        let mut f = Fabric {
            now,
            ends: [End::new(c), End::new(s)],
            regions: HashMap::new(),
            next_key: 0x1000,
            cfg,
            rng: cfg.seed | 1,
            stats: FabricStats::default(),
            pool: Vec::new(),
        };
        f.take_actions(Side::Server);
        f.take_actions(Side::Client);
        f
    }

    pub fn end(&self, side: Side) -> &End {
        &self.ends[side.idx()]
    }
    pub fn end_mut(&mut self, side: Side) -> &mut End {
        &mut self.ends[side.idx()]
    }
    pub fn conn(&mut self, side: Side) -> &mut Connection {
        &mut self.ends[side.idx()].conn
    }
    pub fn faults(&mut self, side: Side) -> &mut Faults {
        &mut self.ends[side.idx()].faults
    }

    /// Queues an upper-layer message at `side` (at the fabric's current time).
    pub fn send(&mut self, side: Side, data: &[u8]) -> Result<(), crate::smbd::SendError> {
        let now = self.now;
        self.ends[side.idx()].conn.send(now, data)
    }

    /// Next event for the upper layer at `side`.
    pub fn poll_event(&mut self, side: Side) -> Option<Event> {
        self.ends[side.idx()].conn.poll_event()
    }

    // ---- memory ----

    /// Registers `len` zeroed bytes at I/O address `base` for `owner`; returns the key
    /// (used as both lkey and rkey).
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

    fn take_actions(&mut self, side: Side) -> bool {
        let i = side.idx();
        if self.ends[i].faults.frozen {
            return false;
        }
        let mut any = false;
        while let Some(a) = self.ends[i].conn.poll_action() {
            any = true;
            match a {
                Action::PostReceive { len } => {
                    if self.ends[i].disconnected {
                        continue;
                    }
                    let at = self.now + self.ends[i].faults.recv_post_delay;
                    self.ends[i].posted.push_back((at, len));
                }
                Action::PostSend { slot, len: _, invalidate } => self.post_send(side, slot, invalidate),
                Action::PostRdma(wr) => self.post_rdma(side, wr),
                Action::SetTimer(t) => self.ends[i].timer = t,
                Action::Disconnect(_) => self.disconnect(side),
            }
        }
        any
    }

    fn post_send(&mut self, side: Side, slot: SendSlot, invalidate: Option<u32>) {
        let (i, p) = (side.idx(), side.peer().idx());
        if self.ends[i].disconnected {
            self.ends[i].cq.push_back((self.now, Completion::Send(slot, Err(CompletionError::Flushed))));
            return;
        }
        let mut bytes = self.buf();
        bytes.extend_from_slice(self.ends[i].conn.send_bytes(slot));
        if self.ends[p].posted.len() <= self.ends[p].inbound.len() {
            self.stats.credit_violations += 1;
        }
        let jitter = self.ends[i].faults.jitter;
        let extra = if jitter.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rand() % (jitter.as_nanos() as u64 + 1))
        };
        let mut at = self.now + self.cfg.latency + extra;
        // A queue pair delivers in order.
        if let Some(last) = self.ends[p].last_deliver {
            at = at.max(last);
        }
        self.ends[p].last_deliver = Some(at);
        self.ends[p].inbound.push_back(Packet { deliver_at: at, bytes, slot, invalidate });
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
            if l.owner != side || !l.valid || ls + u64::from(s.len) > l.data.len() as u64 {
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

    fn post_rdma(&mut self, side: Side, wr: RdmaWorkRequest) {
        let i = side.idx();
        if self.ends[i].disconnected {
            self.ends[i].cq.push_back((
                self.now,
                Completion::Rdma { wr_id: wr.wr_id, len: 0, result: Err(CompletionError::Flushed) },
            ));
            return;
        }
        self.stats.max_rdma_wr_len = self.stats.max_rdma_wr_len.max(wr.len);
        self.stats.max_rdma_wr_sges = self.stats.max_rdma_wr_sges.max(wr.local().len());
        self.stats.rdma_wrs_posted += 1;
        let result = self.execute_rdma(side, &wr);
        self.ends[i].rdma_in_flight += u64::from(wr.len);
        self.stats.max_rdma_bytes_in_flight = self.stats.max_rdma_bytes_in_flight.max(self.ends[i].rdma_in_flight);
        let xfer = u64::from(wr.len).checked_div(self.cfg.rdma_bytes_per_us).map_or(Duration::ZERO, Duration::from_micros);
        let at = self.now + self.cfg.latency * 2 + xfer;
        self.ends[i].cq.push_back((at, Completion::Rdma { wr_id: wr.wr_id, len: wr.len, result }));
    }

    fn disconnect(&mut self, side: Side) {
        let (i, p) = (side.idx(), side.peer().idx());
        if self.ends[i].disconnected {
            return;
        }
        self.ends[i].disconnected = true;
        self.ends[i].posted.clear();
        self.ends[p].posted.clear();
        for e in [i, p] {
            while let Some(pk) = self.ends[e].inbound.pop_front() {
                self.put(pk.bytes);
            }
        }
        if !self.ends[p].disconnected {
            self.ends[p].disconnected = true;
            if !self.ends[p].faults.frozen {
                let now = self.now;
                self.ends[p].conn.handle_peer_disconnect(now);
            }
        }
    }

    fn deliver(&mut self, to: Side) -> bool {
        let (i, s) = (to.idx(), to.peer().idx());
        let now = self.now;
        let mut any = false;
        while self.ends[i].inbound.front().is_some_and(|p| p.deliver_at <= now) {
            let Some(pk) = self.ends[i].inbound.pop_front() else { break };
            any = true;
            let ready = self.ends[i].posted.front().is_some_and(|&(t, _)| t <= now);
            if !ready {
                // RNR with retry count 0: the sender's QP breaks, the connection dies.
                self.stats.rnr_events += 1;
                self.ends[s].cq.push_back((now, Completion::Send(pk.slot, Err(CompletionError::RnrRetryExceeded))));
                self.put(pk.bytes);
                continue;
            }
            let Some((_, len)) = self.ends[i].posted.pop_front() else { break };
            if pk.bytes.len() > len as usize {
                self.ends[i].cq.push_back((now, Completion::Recv(Err(CompletionError::LocalLength))));
                self.ends[s].cq.push_back((now, Completion::Send(pk.slot, Err(CompletionError::RetryExceeded))));
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
            self.ends[i].cq.push_back((now, Completion::Recv(Ok(pk.bytes))));
            self.ends[s].cq.push_back((now, Completion::Send(pk.slot, Ok(()))));
        }
        any
    }

    fn complete(&mut self, side: Side) -> bool {
        let i = side.idx();
        if self.ends[i].faults.frozen {
            return false;
        }
        let now = self.now;
        let mut any = false;
        loop {
            let ready = self.ends[i].cq.iter().take_while(|(t, _)| *t <= now).count();
            let idx = if ready == 0 {
                // Completions are in time order except RDMA ones; look for any ready.
                match self.ends[i].cq.iter().position(|(t, _)| *t <= now) {
                    Some(x) => x,
                    None => break,
                }
            } else if self.ends[i].faults.reorder_completions {
                // Each queue (send, receive, RDMA) completes in order, as on a real
                // queue pair; only the interleaving between them is shuffled.
                let mut heads = [None; 3];
                for (k, (_, c)) in self.ends[i].cq.iter().take(ready).enumerate() {
                    let q = match c {
                        Completion::Send(..) => 0,
                        Completion::Recv(_) => 1,
                        Completion::Rdma { .. } => 2,
                    };
                    if heads[q].is_none() {
                        heads[q] = Some(k);
                    }
                }
                let n = heads.iter().flatten().count() as u64;
                let pick = (self.rand() % n.max(1)) as usize;
                heads.iter().flatten().nth(pick).copied().unwrap_or(0)
            } else {
                0
            };
            let Some((_, c)) = self.ends[i].cq.remove(idx) else { break };
            any = true;
            let f = &mut self.ends[i].faults;
            match c {
                Completion::Send(slot, r) => {
                    if f.lose_send_completions > 0 {
                        f.lose_send_completions -= 1;
                        self.stats.completions_lost += 1;
                        continue;
                    }
                    self.ends[i].conn.handle_send_complete(now, slot, r);
                }
                Completion::Recv(r) => {
                    if f.lose_recv_completions > 0 {
                        f.lose_recv_completions -= 1;
                        self.stats.completions_lost += 1;
                        if let Ok(b) = r {
                            self.put(b);
                        }
                        continue;
                    }
                    match r {
                        Ok(b) => {
                            self.ends[i].conn.handle_recv(now, &b);
                            self.put(b);
                        }
                        Err(e) => self.ends[i].conn.handle_recv_error(now, e),
                    }
                }
                Completion::Rdma { wr_id, len, result } => {
                    self.ends[i].rdma_in_flight -= u64::from(len);
                    if f.lose_rdma_completions > 0 {
                        f.lose_rdma_completions -= 1;
                        self.stats.completions_lost += 1;
                        continue;
                    }
                    if result.is_ok() {
                        self.stats.rdma_completed += 1;
                    } else {
                        self.stats.rdma_failed += 1;
                    }
                    self.ends[i].conn.handle_rdma_complete(now, wr_id, result);
                }
            }
            // Let the connection act on each completion before the next one.
            self.take_actions(side);
        }
        any
    }

    fn fire_timers(&mut self, side: Side) -> bool {
        let i = side.idx();
        if self.ends[i].faults.frozen {
            return false;
        }
        match self.ends[i].timer {
            Some(t) if t <= self.now => {
                self.ends[i].timer = None;
                let now = self.now;
                self.ends[i].conn.handle_timeout(now);
                true
            }
            _ => false,
        }
    }

    /// One round at the current instant. Returns whether anything happened.
    pub fn step(&mut self) -> bool {
        let mut any = false;
        for side in [Side::Server, Side::Client] {
            any |= self.take_actions(side);
        }
        for side in [Side::Server, Side::Client] {
            any |= self.deliver(side);
        }
        for side in [Side::Server, Side::Client] {
            any |= self.complete(side);
            any |= self.fire_timers(side);
            any |= self.take_actions(side);
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
        for e in &self.ends {
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
