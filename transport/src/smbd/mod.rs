//! The SMB Direct connection as a sans-I/O state machine (no sockets, no verbs, no clock).
//!
//! The driver (the in-memory [`crate::fabric`], or a verbs backend) feeds it events —
//! [`Connection::handle_recv`], [`Connection::handle_send_complete`],
//! [`Connection::handle_rdma_complete`], [`Connection::handle_timeout`] — and upper-layer
//! requests — [`Connection::send`], [`Connection::rdma_read`], [`Connection::rdma_write`].
//! After each call it drains [`Connection::poll_action`] and executes the actions **in
//! order** (a receive is always posted before the send that grants credit for it), and
//! drains [`Connection::poll_event`] for the upper layer. [`Action::SetTimer`] (also
//! readable as [`Connection::poll_timeout`]) says when to call `handle_timeout`.
//!
//! Send buffers belong to the connection (one per send slot, allocated once); a
//! [`Action::PostSend`] names a slot whose bytes are read with [`Connection::send_bytes`]
//! and stay untouched until its completion is reported. Delivered messages are pooled
//! `Vec`s: hand them back with [`Connection::recycle`] and the steady state allocates
//! nothing.

pub mod credits;
pub mod error;
pub mod rdma_rw;
mod reassembly;
pub mod timer;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{debug, trace, warn};

pub use credits::Credits;
pub use error::{CompletionError, DisconnectReason, ProtocolError, RdmaError, SendError};
pub use rdma_rw::{LocalSegment, RdmaDirection, RdmaLimits, RdmaOpId, RdmaWorkRequest, MAX_SGE};
pub use timer::Timer;

use rdma_rw::{RdmaEngine, RdmaOutcome};
use reassembly::{BufPool, Reassembly};

use crate::wire::{
    status, BufferDescriptorV1, DataTransferHeader, NegotiateRequest, NegotiateResponse, WireError,
    DATA_TRANSFER_HEADER_LEN, FLAG_RESPONSE_REQUESTED, MIN_RECEIVE_SIZE, SMBD_VERSION_1,
};

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Initiator: sends the negotiate request (the SMB2 client).
    Client,
    /// Responder: answers it (the SMB2 server).
    Server,
}

/// Local parameters (MS-SMBD 3.1.1.1 Connection.*) and policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Receives kept posted; also the most credits we ever grant.
    pub receive_credit_max: u16,
    /// Credits we ask the peer for.
    pub send_credit_target: u16,
    /// Largest message we send (before the peer's MaxReceiveSize lowers it).
    pub max_send_size: u32,
    /// Largest message we receive (posted receive buffer size).
    pub max_receive_size: u32,
    /// Largest reassembled message we accept.
    pub max_fragmented_recv_size: u32,
    /// Largest RDMA transfer of one SMB2 READ/WRITE.
    pub max_read_write_size: u32,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub negotiate_timeout: Duration,
    /// A send or RDMA work request not completed in this time ends the connection.
    pub completion_timeout: Duration,
    /// Send buffers (sends outstanding at once).
    pub send_slots: u16,
    /// Peer-held credits at or below which a grant goes out on its own (0 = max/8).
    pub refill_watermark: u16,
    pub rdma: RdmaLimits,
}

impl Config {
    /// What ksmbd (the Linux server) uses.
    pub fn ksmbd() -> Self {
        Config {
            receive_credit_max: 255,
            send_credit_target: 255,
            max_send_size: 1364,
            max_receive_size: 1364,
            max_fragmented_recv_size: 1 << 20,
            max_read_write_size: 8 << 20,
            keepalive_interval: Duration::from_secs(120),
            keepalive_timeout: Duration::from_secs(5),
            negotiate_timeout: Duration::from_secs(5),
            completion_timeout: Duration::from_secs(30),
            send_slots: 256,
            refill_watermark: 0,
            rdma: RdmaLimits { max_sge: 6, max_outstanding_reads: 8, ..RdmaLimits::default() },
        }
    }

    /// What cifs (the Linux client) uses.
    pub fn cifs() -> Self {
        Config {
            max_fragmented_recv_size: 173_910,
            negotiate_timeout: Duration::from_secs(120),
            rdma: RdmaLimits { max_sge: 6, max_outstanding_reads: 32, ..RdmaLimits::default() },
            ..Self::ksmbd()
        }
    }

    /// Windows defaults (MS-SMBD 3.1.1.1 and product behaviour notes).
    pub fn windows() -> Self {
        Config {
            max_send_size: 1364,
            max_receive_size: 8192,
            max_fragmented_recv_size: 1 << 20,
            max_read_write_size: 1 << 20,
            negotiate_timeout: Duration::from_secs(120),
            ..Self::ksmbd()
        }
    }

    fn sanitized(mut self) -> Self {
        let min = MIN_RECEIVE_SIZE;
        self.max_send_size = self.max_send_size.max(min);
        self.max_receive_size = self.max_receive_size.max(min);
        self.max_fragmented_recv_size = self.max_fragmented_recv_size.max(crate::wire::MIN_FRAGMENTED_SIZE);
        self.receive_credit_max = self.receive_credit_max.max(2);
        self.send_credit_target = self.send_credit_target.max(1);
        self.send_slots = self.send_slots.max(2);
        if self.refill_watermark == 0 {
            self.refill_watermark = (self.receive_credit_max / 8).max(1);
        }
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::ksmbd()
    }
}

/// What negotiation settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Largest message we send (header included).
    pub max_send_size: u32,
    /// Largest message we accept (header included).
    pub max_receive_size: u32,
    /// Largest whole message we may send (the peer's MaxFragmentedSize).
    pub peer_max_fragmented_size: u32,
    /// Largest reassembled message we accept.
    pub max_fragmented_recv_size: u32,
    pub max_read_write_size: u32,
}

/// A send buffer owned by the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SendSlot(pub u16);

/// What the driver must do, in the order given.
// PostRdma is large (its SGE list is inline), kept so to avoid an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Post one receive of at least `len` bytes.
    PostReceive { len: u32 },
    /// Post a send of [`Connection::send_bytes`]`(slot)`; with `invalidate`, as
    /// Send-With-Invalidate of that remote token.
    PostSend { slot: SendSlot, len: u32, invalidate: Option<u32> },
    /// Post an RDMA READ or WRITE.
    PostRdma(RdmaWorkRequest),
    /// Call [`Connection::handle_timeout`] at this instant (None: no timer).
    SetTimer(Option<Instant>),
    /// Tear the queue pair down; nothing more will be asked.
    Disconnect(DisconnectReason),
}

/// What the upper layer learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected(Negotiated),
    /// A whole (reassembled) upper-layer message. Give the Vec back with `recycle`.
    Message(Vec<u8>),
    /// An RDMA operation finished: all its work requests completed (Ok: bytes moved).
    RdmaDone { op: RdmaOpId, result: Result<u64, RdmaError> },
    Disconnected(DisconnectReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Negotiating,
    Established,
    /// A failure negotiate response is on its way; then disconnect.
    Closing,
    Disconnected,
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub sends_posted: u64,
    pub receives_completed: u64,
    pub empty_sent: u64,
    pub keepalives_sent: u64,
    /// Keepalives sent whose answer (anything received) came before the timeout.
    pub keepalives_answered: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub rdma_bytes: u64,
    pub rdma_wrs: u64,
}

#[derive(Debug)]
struct OutMsg {
    data: Vec<u8>,
    sent: usize,
    invalidate: Option<u32>,
}

/// One SMB Direct connection, client or server role.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    credits: Credits,
    neg: Negotiated,
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    send_bufs: Vec<Box<[u8]>>,
    send_lens: Vec<u32>,
    free_slots: Vec<u16>,
    outstanding: VecDeque<(u16, Instant)>,
    out_queue: VecDeque<OutMsg>,
    queued_bytes: usize,
    pool: BufPool,
    reassembly: Reassembly,
    rdma: RdmaEngine,
    timers: timer::TimerTable,
    reported_timer: Option<Instant>,
    last_recv: Instant,
    need_response: bool,
    keepalive_due: bool,
    close_after_send: Option<DisconnectReason>,
    stats: Stats,
}

impl Connection {
    /// A new connection (the queue pair is connected): posts receives and, as a client,
    /// sends the negotiate request.
    pub fn new(role: Role, config: Config, now: Instant) -> Self {
        let config = config.sanitized();
        let slots = usize::from(config.send_slots);
        let neg = Negotiated {
            max_send_size: config.max_send_size,
            max_receive_size: config.max_receive_size,
            peer_max_fragmented_size: 0,
            max_fragmented_recv_size: config.max_fragmented_recv_size,
            max_read_write_size: config.max_read_write_size,
        };
        let mut c = Connection {
            role,
            config,
            state: State::Negotiating,
            credits: Credits { low_watermark: config.refill_watermark, ..Credits::default() },
            neg,
            actions: VecDeque::with_capacity(usize::from(config.receive_credit_max) + slots + 8),
            events: VecDeque::with_capacity(64),
            send_bufs: (0..slots).map(|_| vec![0u8; config.max_send_size as usize].into_boxed_slice()).collect(),
            send_lens: vec![0; slots],
            free_slots: (0..config.send_slots).rev().collect(),
            outstanding: VecDeque::with_capacity(slots),
            out_queue: VecDeque::with_capacity(64),
            queued_bytes: 0,
            pool: BufPool::new(64),
            reassembly: Reassembly::new(config.max_fragmented_recv_size),
            rdma: RdmaEngine::new(config.rdma),
            timers: timer::TimerTable::default(),
            reported_timer: None,
            last_recv: now,
            need_response: false,
            keepalive_due: false,
            close_after_send: None,
            stats: Stats::default(),
        };
        for _ in 0..config.receive_credit_max {
            c.post_receive();
        }
        c.timers.set(Timer::Negotiate, now + config.negotiate_timeout);
        if role == Role::Client {
            let req = NegotiateRequest {
                min_version: SMBD_VERSION_1,
                max_version: SMBD_VERSION_1,
                credits_requested: config.send_credit_target,
                preferred_send_size: config.max_send_size,
                max_receive_size: config.max_receive_size,
                max_fragmented_size: config.max_fragmented_recv_size,
            };
            c.post_control(now, &req.to_bytes());
        }
        c.finish(now);
        c
    }

    // ---- accessors ----

    pub fn role(&self) -> Role {
        self.role
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Negotiated sizes (meaningful once [`Event::Connected`] was reported).
    pub fn negotiated(&self) -> &Negotiated {
        &self.neg
    }
    pub fn credits(&self) -> &Credits {
        &self.credits
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Bytes accepted by `send` and not yet posted.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }
    /// Sends posted and not yet completed.
    pub fn sends_outstanding(&self) -> usize {
        self.outstanding.len()
    }
    pub fn rdma_bytes_in_flight(&self) -> u64 {
        self.rdma.bytes_in_flight()
    }
    pub fn rdma_limits(&self) -> &RdmaLimits {
        self.rdma.limits()
    }

    /// The bytes of a posted send (valid until its completion is handled).
    pub fn send_bytes(&self, slot: SendSlot) -> &[u8] {
        let i = usize::from(slot.0);
        let len = self.send_lens.get(i).copied().unwrap_or(0) as usize;
        self.send_bufs.get(i).and_then(|b| b.get(..len)).unwrap_or(&[])
    }

    /// Every send slot's whole buffer, in slot order. The buffers never move or change
    /// size, so a verbs backend can register them once (ibv_reg_mr) and post sends from
    /// them without a copy.
    pub fn send_slot_buffers(&self) -> impl Iterator<Item = (SendSlot, &[u8])> {
        self.send_bufs.iter().enumerate().map(|(i, b)| (SendSlot(i as u16), &b[..]))
    }

    // ---- outputs ----

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
    /// The next instant at which [`Connection::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }
    /// Returns a delivered message buffer for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.put(buf);
    }

    // ---- upper-layer requests ----

    /// Queues one upper-layer message (fragmented as needed).
    pub fn send(&mut self, now: Instant, data: &[u8]) -> Result<(), SendError> {
        self.queue_message(now, data, None)
    }

    /// Queues a message whose last fragment goes as Send-With-Invalidate of `token`
    /// (SMB2 responses to READ/WRITE with channel RDMA_V1_INVALIDATE).
    pub fn send_with_invalidate(&mut self, now: Instant, data: &[u8], token: u32) -> Result<(), SendError> {
        self.queue_message(now, data, Some(token))
    }

    fn queue_message(&mut self, now: Instant, data: &[u8], invalidate: Option<u32>) -> Result<(), SendError> {
        if self.state != State::Established {
            return Err(SendError::NotConnected);
        }
        if data.is_empty() {
            return Err(SendError::Empty);
        }
        let max = self.neg.peer_max_fragmented_size;
        if data.len() > max as usize {
            return Err(SendError::TooLarge { len: data.len(), max });
        }
        // With nothing queued ahead, fragments go straight from the caller's buffer into
        // send slots while credits allow; only what is left is copied into the queue.
        let mut off = 0;
        if self.out_queue.is_empty() {
            while let Some(rest) = data.get(off..).filter(|r| !r.is_empty()) {
                match self.post_fragment(now, rest, invalidate) {
                    Some(n) => off += n,
                    None => break,
                }
            }
        }
        match data.get(off..).filter(|r| !r.is_empty()) {
            None => self.stats.messages_sent += 1,
            Some(rest) => {
                let mut buf = self.pool.get();
                buf.extend_from_slice(rest);
                self.queued_bytes += rest.len();
                self.out_queue.push_back(OutMsg { data: buf, sent: 0, invalidate });
            }
        }
        self.finish(now);
        Ok(())
    }

    /// Pulls `len` bytes from the peer's buffers (`remote`, from an SMB2 WRITE's channel
    /// info) into local memory. Reported by [`Event::RdmaDone`].
    pub fn rdma_read(
        &mut self,
        now: Instant,
        remote: &[BufferDescriptorV1],
        local: &[LocalSegment],
        len: u64,
    ) -> Result<RdmaOpId, RdmaError> {
        self.start_rdma(now, RdmaDirection::Read, remote, local, len)
    }

    /// Pushes `len` bytes of local memory into the peer's buffers (SMB2 READ).
    pub fn rdma_write(
        &mut self,
        now: Instant,
        remote: &[BufferDescriptorV1],
        local: &[LocalSegment],
        len: u64,
    ) -> Result<RdmaOpId, RdmaError> {
        self.start_rdma(now, RdmaDirection::Write, remote, local, len)
    }

    fn start_rdma(
        &mut self,
        now: Instant,
        dir: RdmaDirection,
        remote: &[BufferDescriptorV1],
        local: &[LocalSegment],
        len: u64,
    ) -> Result<RdmaOpId, RdmaError> {
        if self.state != State::Established {
            return Err(RdmaError::NotConnected);
        }
        if len > u64::from(self.neg.max_read_write_size) {
            return Err(RdmaError::TooLarge { len, max: self.neg.max_read_write_size });
        }
        let id = self.rdma.start(dir, remote, local, len)?;
        self.finish(now);
        Ok(id)
    }

    /// Ends the connection from our side.
    pub fn close(&mut self, now: Instant) {
        self.fail(DisconnectReason::Local);
        self.finish(now);
    }

    // ---- driver events ----

    /// A receive completed successfully with `data` (the whole received message).
    pub fn handle_recv(&mut self, now: Instant, data: &[u8]) {
        if matches!(self.state, State::Disconnected) {
            return;
        }
        if self.credits.posted == 0 {
            self.fail(DisconnectReason::DriverError);
            self.finish(now);
            return;
        }
        self.stats.receives_completed += 1;
        self.last_recv = now;
        // A keepalive that went out is answered by anything the peer sends.
        if self.timers.get(Timer::KeepaliveResponse).is_some() && !self.keepalive_due {
            self.stats.keepalives_answered += 1;
        }
        self.timers.stop(Timer::KeepaliveResponse);
        let r = match self.state {
            State::Negotiating => match self.role {
                Role::Server => self.on_negotiate_request(now, data),
                Role::Client => self.on_negotiate_response(now, data),
            },
            State::Established => self.on_data(data),
            // Closing: the peer may still send; just count the receive.
            State::Closing | State::Disconnected => {
                self.credits.posted -= 1;
                Ok(())
            }
        };
        if let Err(reason) = r {
            warn!(?reason, role = ?self.role, "smbd: disconnecting");
            self.fail(reason);
        }
        self.finish(now);
    }

    /// A receive completed with an error (flush after disconnect, length error, ...).
    pub fn handle_recv_error(&mut self, now: Instant, err: CompletionError) {
        self.fail(DisconnectReason::Completion(err));
        self.finish(now);
    }

    pub fn handle_send_complete(&mut self, now: Instant, slot: SendSlot, result: Result<(), CompletionError>) {
        let s = slot.0;
        if let Some(pos) = self.outstanding.iter().position(|&(o, _)| o == s) {
            self.outstanding.remove(pos);
            self.free_slots.push(s);
        } else {
            trace!(slot = s, "smbd: completion for a slot not outstanding");
        }
        if let Err(e) = result {
            self.fail(DisconnectReason::Completion(e));
        } else if self.state == State::Closing && self.outstanding.is_empty() {
            if let Some(r) = self.close_after_send.take() {
                self.fail(r);
            }
        }
        self.finish(now);
    }

    pub fn handle_rdma_complete(&mut self, now: Instant, wr_id: u64, result: Result<(), CompletionError>) {
        if self.state == State::Disconnected {
            return;
        }
        match self.rdma.complete(wr_id, result) {
            RdmaOutcome::Unknown | RdmaOutcome::Progress => {}
            RdmaOutcome::Done(op, n) => {
                self.stats.rdma_bytes += n;
                self.events.push_back(Event::RdmaDone { op, result: Ok(n) });
            }
            RdmaOutcome::Failed(op, e) => {
                // An RC queue pair goes to the error state on any failed work request.
                self.events.push_back(Event::RdmaDone { op, result: Err(RdmaError::Completion(e)) });
                self.fail(DisconnectReason::Completion(e));
            }
        }
        self.finish(now);
    }

    /// The peer (or the connection manager) ended the connection.
    pub fn handle_peer_disconnect(&mut self, now: Instant) {
        self.fail(DisconnectReason::PeerDisconnected);
        self.finish(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in timer::ALL {
            if !self.timers.is_expired(t, now) {
                continue;
            }
            self.timers.stop(t);
            match t {
                Timer::Negotiate => {
                    if matches!(self.state, State::Negotiating | State::Closing) {
                        self.fail(DisconnectReason::NegotiateTimeout);
                    }
                }
                Timer::Idle => {
                    if self.state == State::Established {
                        let due = self.last_recv + self.config.keepalive_interval;
                        if self.timers.get(Timer::KeepaliveResponse).is_some() {
                            // One keepalive at a time: its answer or its timeout decides.
                            // (Re-arming the response timer here would push the deadline
                            // back forever when the interval is shorter than the timeout.)
                            self.timers.set(Timer::Idle, now + self.config.keepalive_interval);
                        } else if now >= due {
                            debug!(role = ?self.role, "smbd: idle, sending keepalive");
                            self.keepalive_due = true;
                            self.timers.set(Timer::KeepaliveResponse, now + self.config.keepalive_timeout);
                            self.timers.set(Timer::Idle, now + self.config.keepalive_interval);
                        } else {
                            self.timers.set(Timer::Idle, due);
                        }
                    }
                }
                Timer::KeepaliveResponse => self.fail(DisconnectReason::KeepaliveTimeout),
                Timer::Completion => match self.oldest_outstanding() {
                    Some(t) if t + self.config.completion_timeout <= now => {
                        self.fail(DisconnectReason::CompletionTimeout)
                    }
                    Some(t) => self.timers.set(Timer::Completion, t + self.config.completion_timeout),
                    None => {}
                },
            }
        }
        self.finish(now);
    }

    // ---- internals ----

    fn post_receive(&mut self) {
        self.credits.posted += 1;
        self.actions.push_back(Action::PostReceive { len: self.config.max_receive_size });
    }

    /// Sends a negotiate message: no credits involved (the peer posted receives first).
    fn post_control(&mut self, now: Instant, bytes: &[u8]) {
        let Some(slot) = self.free_slots.pop() else { return };
        let i = usize::from(slot);
        if let Some(dst) = self.send_bufs.get_mut(i).and_then(|b| b.get_mut(..bytes.len())) {
            dst.copy_from_slice(bytes);
        }
        if let Some(l) = self.send_lens.get_mut(i) {
            *l = bytes.len() as u32;
        }
        self.outstanding.push_back((slot, now));
        self.stats.sends_posted += 1;
        self.actions.push_back(Action::PostSend { slot: SendSlot(slot), len: bytes.len() as u32, invalidate: None });
    }

    fn on_negotiate_request(&mut self, now: Instant, data: &[u8]) -> Result<(), DisconnectReason> {
        self.credits.posted -= 1;
        let req = NegotiateRequest::decode(data).map_err(ProtocolError::from)?;
        match req.validate() {
            Ok(()) => {}
            Err(WireError::UnsupportedVersion { .. }) => {
                self.post_control(now, &NegotiateResponse::failure(status::NOT_SUPPORTED).to_bytes());
                self.state = State::Closing;
                self.close_after_send = Some(DisconnectReason::VersionNotSupported);
                return Ok(());
            }
            Err(e) => return Err(ProtocolError::Wire(e).into()),
        }
        self.neg.max_receive_size = self.config.max_receive_size.min(req.preferred_send_size).max(MIN_RECEIVE_SIZE);
        self.neg.max_send_size = self.config.max_send_size.min(req.max_receive_size);
        self.neg.peer_max_fragmented_size = req.max_fragmented_size;
        self.post_receive();
        self.credits.peer_target = req.credits_requested;
        let grant = self.credits.grantable();
        self.credits.peer_held = grant;
        let resp = NegotiateResponse {
            min_version: SMBD_VERSION_1,
            max_version: SMBD_VERSION_1,
            negotiated_version: SMBD_VERSION_1,
            credits_requested: self.config.send_credit_target,
            credits_granted: grant,
            status: status::SUCCESS,
            max_read_write_size: self.neg.max_read_write_size,
            preferred_send_size: self.neg.max_send_size,
            max_receive_size: self.neg.max_receive_size,
            max_fragmented_size: self.neg.max_fragmented_recv_size,
        };
        self.post_control(now, &resp.to_bytes());
        self.established(now);
        Ok(())
    }

    fn on_negotiate_response(&mut self, now: Instant, data: &[u8]) -> Result<(), DisconnectReason> {
        self.credits.posted -= 1;
        let resp = NegotiateResponse::decode_valid(data).map_err(ProtocolError::from)?;
        if resp.preferred_send_size > self.config.max_receive_size {
            return Err(ProtocolError::PreferredSendSizeTooLarge {
                preferred: resp.preferred_send_size,
                max: self.config.max_receive_size,
            }
            .into());
        }
        self.neg.max_receive_size = self.config.max_receive_size.min(resp.preferred_send_size).max(MIN_RECEIVE_SIZE);
        self.neg.max_send_size = self.config.max_send_size.min(resp.max_receive_size);
        self.neg.peer_max_fragmented_size = resp.max_fragmented_size;
        self.neg.max_read_write_size = self.config.max_read_write_size.min(resp.max_read_write_size);
        self.credits.send = resp.credits_granted;
        self.credits.peer_target = resp.credits_requested;
        self.post_receive();
        self.established(now);
        Ok(())
    }

    fn established(&mut self, now: Instant) {
        self.state = State::Established;
        self.timers.stop(Timer::Negotiate);
        self.timers.set(Timer::Idle, now + self.config.keepalive_interval);
        debug!(role = ?self.role, neg = ?self.neg, "smbd: established");
        self.events.push_back(Event::Connected(self.neg));
    }

    fn on_data(&mut self, data: &[u8]) -> Result<(), DisconnectReason> {
        if data.len() > self.neg.max_receive_size as usize {
            return Err(ProtocolError::MessageTooLarge { len: data.len(), max: self.neg.max_receive_size }.into());
        }
        let (h, payload) = DataTransferHeader::decode(data).map_err(ProtocolError::from)?;
        if h.credits_requested == 0 {
            return Err(ProtocolError::Wire(WireError::ZeroCreditsRequested).into());
        }
        self.credits.on_receive(h.credits_granted, h.credits_requested)?;
        if h.response_requested() {
            self.need_response = true;
        }
        let msg = self.reassembly.push(&h, payload, &mut self.pool)?;
        // The data is copied out: the receive buffer goes straight back.
        self.post_receive();
        self.stats.bytes_received += payload.len() as u64;
        if let Some(m) = msg {
            self.stats.messages_received += 1;
            self.events.push_back(Event::Message(m));
        }
        Ok(())
    }

    fn oldest_outstanding(&self) -> Option<Instant> {
        // Both lists are in posting order and the clock only moves forward, so the front
        // is the oldest (no scan per message).
        let s = self.outstanding.front().map(|&(_, t)| t);
        match (s, self.rdma.oldest()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn fail(&mut self, reason: DisconnectReason) {
        if self.state == State::Disconnected {
            return;
        }
        self.state = State::Disconnected;
        self.actions.push_back(Action::Disconnect(reason));
        let events = &mut self.events;
        self.rdma.abort_all(|op| events.push_back(Event::RdmaDone { op, result: Err(RdmaError::Aborted) }));
        self.events.push_back(Event::Disconnected(reason));
        while let Some(m) = self.out_queue.pop_front() {
            self.pool.put(m.data);
        }
        self.queued_bytes = 0;
        self.reassembly.reset(&mut self.pool);
        self.timers.clear();
    }

    /// Posts what credits and slots allow, then reports the timer.
    fn finish(&mut self, now: Instant) {
        if self.state == State::Established {
            self.pump_sends(now);
            let actions = &mut self.actions;
            let stats = &mut self.stats;
            self.rdma.pump(now, |wr| {
                stats.rdma_wrs += 1;
                actions.push_back(Action::PostRdma(wr));
            });
        }
        // Armed lazily, like the idle timer: set when work is outstanding and no deadline
        // is armed, checked (and re-armed) when it fires. The deadline thus does not move
        // with every completion, and the driver is not asked to re-arm per message.
        if self.state != State::Disconnected && self.timers.get(Timer::Completion).is_none() {
            if let Some(t) = self.oldest_outstanding() {
                self.timers.set(Timer::Completion, t + self.config.completion_timeout);
            }
        }
        let next = self.timers.next();
        if next != self.reported_timer {
            self.reported_timer = next;
            self.actions.push_back(Action::SetTimer(next));
        }
    }

    /// Posts queued messages (and empty ones for grants, keepalives and answers to
    /// RESPONSE_REQUESTED) while a send slot is free and credits allow.
    fn pump_sends(&mut self, now: Instant) {
        loop {
            // The message being sent is taken off the queue while a fragment is posted and
            // put back at the front if more remains (no allocation, order kept).
            let Some(mut m) = self.out_queue.pop_front() else {
                if self.post_fragment(now, &[], None).is_none() {
                    return;
                }
                continue;
            };
            let rest = m.data.get(m.sent..).unwrap_or(&[]);
            let Some(n) = self.post_fragment(now, rest, m.invalidate) else {
                self.out_queue.push_front(m);
                return;
            };
            m.sent += n;
            self.queued_bytes -= n;
            if m.sent >= m.data.len() {
                self.pool.put(m.data);
                self.stats.messages_sent += 1;
            } else {
                self.out_queue.push_front(m);
            }
        }
    }

    /// Posts one data transfer message carrying the first bytes of `rest` (the unsent
    /// part of a message; the last fragment goes with `invalidate`), or an empty message
    /// when `rest` is empty and there is a reason to send one. Returns the payload bytes
    /// taken, or None when nothing could be posted (no free slot, no credit, no reason).
    fn post_fragment(&mut self, now: Instant, rest: &[u8], invalidate: Option<u32>) -> Option<usize> {
        let &slot = self.free_slots.last()?;
        let grant = self.credits.grantable();
        if !self.credits.may_send(grant) {
            return None;
        }
        let keepalive = self.keepalive_due;
        if rest.is_empty() && !keepalive && !self.need_response && !self.credits.peer_is_low() {
            return None;
        }
        let max_payload = (self.neg.max_send_size as usize).saturating_sub(DATA_TRANSFER_HEADER_LEN).max(1);
        let n = rest.len().min(max_payload);
        let frag = rest.get(..n).unwrap_or(&[]);
        let last = n == rest.len();
        let mut h = DataTransferHeader {
            credits_requested: self.config.send_credit_target,
            credits_granted: grant,
            flags: if keepalive { FLAG_RESPONSE_REQUESTED } else { 0 },
            // rest.len() <= the peer's MaxFragmentedSize, a u32.
            remaining_data_length: (rest.len() - n) as u32,
            ..Default::default()
        };
        // Low on credits with more to send: ask the peer to answer (and grant) promptly.
        let after = Credits { send: self.credits.send.saturating_sub(1), ..self.credits };
        if !rest.is_empty() && after.should_request_response(!last || !self.out_queue.is_empty()) {
            h.flags |= FLAG_RESPONSE_REQUESTED;
        }
        let i = usize::from(slot);
        let buf = self.send_bufs.get_mut(i)?;
        let len = h.encode_with_data(frag, buf).ok()?;
        if rest.is_empty() {
            self.stats.empty_sent += 1;
        }
        self.stats.bytes_sent += n as u64;
        if keepalive {
            self.keepalive_due = false;
            self.stats.keepalives_sent += 1;
        }
        self.need_response = false;
        self.free_slots.pop();
        self.credits.on_send(grant);
        if let Some(l) = self.send_lens.get_mut(i) {
            *l = len as u32;
        }
        self.outstanding.push_back((slot, now));
        self.stats.sends_posted += 1;
        let invalidate = if last && !rest.is_empty() { invalidate } else { None };
        self.actions.push_back(Action::PostSend { slot: SendSlot(slot), len: len as u32, invalidate });
        Some(n)
    }
}
