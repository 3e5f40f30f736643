//! One client connection: the request pipeline.
//!
//! decrypt → split compound → per request: credits, session, signature,
//! tree, dispatch → credits granted → sign → (encrypt) → send.
//! Everything here runs on the connection's own thread; a panic in a handler
//! unwinds that thread only and the connection's sessions are torn down.
//!
//! Many READs/WRITEs in flight (TCP, `io_offload`): a message holding a single
//! READ or WRITE of a file (plain, signed or sealed) goes through all of the
//! above here, in order, but its file I/O, the rest of its response, signing,
//! sealing and the send are handed to the process's I/O pool (crate::iopool)
//! while this thread reads the next request; responses go out as they
//! complete. The ordering rule is the simplest safe one: any other message
//! (a compound, CLOSE, FLUSH, SET_INFO, LOCK, ... or anything else) waits
//! until every READ/WRITE this connection has in flight is done; a READ, and a
//! WRITE to an append-only open, wait for the WRITEs in flight on their open.
//! In flight per connection: at most the credits granted (a client cannot
//! send more), at most `max in flight per connection` and half the `max send
//! queue` in payload bytes. A connection that ends waits for its in-flight
//! work before its sessions are torn down. Off by default (`max in flight
//! per connection` = 1): on a 2-core host shared with smbclient it made plain
//! gets slower and every case cost more CPU per GiB (figures in config.rs).

use crate::config::{Setting, DIALECT_202, DIALECT_210, DIALECT_300, DIALECT_311};
use crate::credits::CreditWindow;
use crate::handlers::rdma_io::Deferred;
use crate::crypto::{self, Cipher, SigningAlgorithm};
use crate::objects::{lock, Server, Session, SessionState, SigningKey, Tree};
use crate::transport::{MessageSink, MessageSource, OutBuf, TRANSFORM_ROOM};
use crate::wire::header::*;
use crate::wire::messages::{error_body, FileId};
use crate::wire::status::NtStatus;
use crate::wire::Put;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Why a connection ends.
#[derive(Debug)]
pub enum Disconnect {
    Closed,
    Protocol(String),
    Io(std::io::Error),
    /// A timer ran out (negotiate, session setup, deadtime, io timeout).
    Timeout(String),
    /// The connection goes to another worker, unanswered
    /// (`Connection::pass_out`; connpass.rs).
    Pass,
}

pub(crate) struct PendingAuth {
    pub acceptor: crate::auth::Acceptor,
    /// A session binding (SMB2_SESSION_FLAG_BINDING): this connection
    /// becomes a new channel of `session` when it succeeds.
    pub binding: bool,
    pub preauth: Option<crypto::PreauthHash>,
    pub session: Arc<Session>,
    /// When the exchange began: it is dropped `session setup timeout` later.
    pub started: Instant,
    pub _slot: SetupSlot,
}

/// One unfinished SESSION_SETUP exchange in the server-wide count (`max
/// session setups in progress`); given back when dropped.
pub(crate) struct SetupSlot(Arc<AtomicUsize>);

impl SetupSlot {
    pub fn acquire(count: &Arc<AtomicUsize>, max: usize) -> Option<SetupSlot> {
        count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (max == 0 || n < max).then_some(n + 1)).ok()?;
        Some(SetupSlot(count.clone()))
    }
}

impl Drop for SetupSlot {
    fn drop(&mut self) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

pub struct Connection {
    /// Identifies this connection among a session's channels.
    pub conn_id: u64,
    pub server: Arc<Server>,
    pub sink: Arc<dyn MessageSink>,
    pub peer: String,
    pub dialect: Option<u16>,
    pub client_guid: [u8; 16],
    pub client_caps: u32,
    pub client_security_mode: u16,
    pub server_caps: u32,
    pub cipher: Option<Cipher>,
    pub signing_alg: SigningAlgorithm,
    pub preauth: Option<crypto::PreauthHash>,
    pub(crate) pending: HashMap<u64, PendingAuth>,
    pub sessions: Vec<u64>,
    pub credits: CreditWindow,
    /// Credit charge of the requests received and not answered yet (but
    /// async ones: `asyncs` counts those).
    pub credits_in_use: Arc<crate::credits::InUse>,
    /// The hold of the READ/WRITE (or RDMA transfer) whose response is
    /// finished later: it goes with the work and is dropped when it is done.
    io_hold: Option<crate::credits::CreditHold>,
    pub rdma_transforms: Vec<u16>,
    pub asyncs: Arc<crate::asyncop::AsyncTable>,
    /// Bytes of padding between a READ response's fixed body and its data
    /// (set only by FSCTL_SMBTORTURE_GLOBAL_READ_RESPONSE_BODY_PADDING8).
    pub read_body_padding: u8,
    /// Set by FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT: shared with this
    /// connection's channels (objects.rs `Channel::unacked`).
    pub unacked: Arc<std::sync::atomic::AtomicBool>,
    /// Set by a READ or WRITE with Channel RDMA_V1_INVALIDATE: the response
    /// goes out with SMB Direct send-with-invalidate of this token.
    pub invalidate_token: Option<u32>,
    /// Set while a chain of one plaintext request is handled: an RDMA READ
    /// or WRITE may then leave its RDMA transfer to go with the response
    /// (`deferred`).
    pub(crate) may_defer_rdma: bool,
    /// An RDMA transfer started once the response is ready; the response is
    /// finished and sent by the transport's thread when it is done, while
    /// this thread goes on (handlers/rdma_io.rs).
    pub(crate) deferred: Option<crate::handlers::rdma_io::Deferred>,
    /// Work a handler leaves until the chain's responses are sent (a lease
    /// break a LEASE_BREAK acknowledgment starts goes out after the
    /// acknowledgment's response: handlers/lease.rs).
    pub(crate) after_send: Vec<Box<dyn FnOnce() + Send>>,
    /// Async operations started by the chain being handled: their final
    /// responses wait until the chain's interim responses are sent.
    pub(crate) interims: Vec<u64>,
    /// Hand single READs/WRITEs to the I/O pool (set by [`serve`] on TCP).
    pub io_offload: bool,
    /// Set while a message of one READ/WRITE is handled with `io_offload`: the
    /// handler leaves its I/O to `io_job`.
    pub(crate) io_here: bool,
    pub(crate) io_job: Option<crate::handlers::file::IoJob>,
    /// A handed-over READ/WRITE and its response, for the pool once this
    /// thread has done with the request buffer.
    ready: Option<(crate::handlers::file::IoJob, OutBuf)>,
    /// Where the plaintext being handled starts in the request buffer.
    plain_at: usize,
    /// The message being handled was decrypted by the connection's reader
    /// thread as it arrived ([`ReaderOpen`]); `handle_encrypted` checks it.
    pre_opened: Option<PreOpened>,
    /// READs/WRITEs this connection has in flight on the I/O pool.
    pub inflight: Arc<crate::iopool::InFlight>,
    /// The connection's sender thread, which sends what the I/O pool
    /// finished: a pool thread never waits for a client that does not read.
    outbox: Option<std::sync::mpsc::Sender<crate::handlers::file::Finished>>,
    /// RDMA WRITEs whose data is not in the file yet.
    pub(crate) pending_writes: Arc<crate::handlers::rdma_io::PendingWrites>,
    /// The SessionId of the TRANSFORM header of the chain being handled.
    transform_session: Option<u64>,
    /// Set by SESSION_SETUP for a binding request that carried a good
    /// signature of the session it names: its answer, if not the final
    /// success, is signed with that session's key (MS-SMB2 3.3.4.1.1).
    pub(crate) bind_reply_signed: bool,
    /// The reader's clock and size limit (raised once a session is authenticated).
    pub recv: Arc<crate::transport::RecvControl>,
    /// The SMB2 NEGOTIATE request and the response sent for it, kept while
    /// the connection may still be passed to another worker (connpass.rs).
    pub(crate) negotiated: Option<(Vec<u8>, Vec<u8>)>,
    /// Set with [`Disconnect::Pass`]: what the next owner needs.
    pub(crate) pass_out: Option<crate::connpass::ConnPass>,
    /// Timers (as data, driven by [`Connection::on_timer`]).
    created: Instant,
    last_request: Instant,
    /// Since when the connection has had no authenticated session.
    unauthenticated_since: Option<Instant>,
}

/// What one request in a compound sees.
pub struct Ctx<'a> {
    pub hdr: &'a Header,
    pub msg: &'a [u8],
    pub session: Option<Arc<Session>>,
    pub tree: Option<Arc<Tree>>,
    /// The FileId of the last CREATE in a related chain.
    pub compound_file: Option<FileId>,
    pub encrypted: bool,
    /// Set by a handler that answers asynchronously (interim STATUS_PENDING).
    pub async_id: Option<u64>,
    /// A success-class status other than SUCCESS (BUFFER_OVERFLOW,
    /// MORE_PROCESSING_REQUIRED) that goes with a full response body.
    pub warning: Option<NtStatus>,
    /// The FileId this request resolved with [`Ctx::open`]: a related request
    /// that follows operates on it (MS-SMB2 3.3.5.2.7.2).
    pub used_file: std::cell::Cell<Option<FileId>>,
}

impl Ctx<'_> {
    pub fn session(&self) -> Result<&Arc<Session>, NtStatus> {
        self.session.as_ref().ok_or(NtStatus::USER_SESSION_DELETED)
    }
    pub fn tree(&self) -> Result<&Arc<Tree>, NtStatus> {
        self.tree.as_ref().ok_or(NtStatus::NETWORK_NAME_DELETED)
    }
    /// Resolves a FileId from a request, honouring the related-compound form.
    pub fn open(&self, id: &FileId) -> Result<Arc<crate::objects::Open>, NtStatus> {
        let id = if *id == [0xFF; 16] {
            if !self.hdr.is_related() {
                return Err(NtStatus::FILE_CLOSED);
            }
            self.compound_file.ok_or(NtStatus::FILE_CLOSED)?
        } else {
            *id
        };
        let vol = u64::from_le_bytes(id[8..16].try_into().map_err(|_| NtStatus::FILE_CLOSED)?);
        let per = u64::from_le_bytes(id[0..8].try_into().map_err(|_| NtStatus::FILE_CLOSED)?);
        let open = self.session()?.open(vol).ok_or(NtStatus::FILE_CLOSED)?;
        if open.persistent_id != per {
            return Err(NtStatus::FILE_CLOSED);
        }
        if let Some(t) = &self.tree {
            if open.tree_id() != t.id {
                return Err(NtStatus::FILE_CLOSED);
            }
        }
        self.used_file.set(Some(id));
        // Used by a request: a replayed CREATE no longer gets it back.
        open.replay_eligible.store(false, std::sync::atomic::Ordering::Relaxed);
        Ok(open)
    }
}

/// Serves one connection until it ends. Runs on the caller's thread; a
/// second thread reads the next messages off the transport meanwhile, so
/// receiving a large WRITE overlaps with writing the previous one to disk.
pub fn serve(server: Arc<Server>, source: impl MessageSource + 'static, sink: Arc<dyn MessageSink>) -> Option<crate::connpass::ConnPass> {
    serve_from(server, source, sink, None)
}

/// [`serve`] for a connection another worker passed here (`resume`: its
/// state is rebuilt first; its pending messages are the source's replayed
/// bytes). Returns the connection's state when it is to be passed on: its
/// socket is then left open for the next owner.
pub fn serve_from(
    server: Arc<Server>,
    mut source: impl MessageSource + 'static,
    sink: Arc<dyn MessageSink>,
    resume: Option<&crate::connpass::ConnPass>,
) -> Option<crate::connpass::ConnPass> {
    let peer = sink.peer();
    let mut conn = Connection::new(server, sink.clone(), peer.clone());
    if let Some(p) = resume {
        if let Err(e) = conn.resume(p) {
            warn!(%peer, "cannot take over the connection passed here: {e}");
            sink.shutdown();
            return None;
        }
    }
    let limit = conn.max_message_size();
    source.set_control(conn.recv.clone());
    // Two messages in flight at most: bounded memory per connection. Spent
    // large buffers go to the process's spare buffers (crate::iopool), where
    // the TCP reader takes them again for large messages: a stream of 8 MiB
    // WRITEs, and the next connection, reuse the same memory instead of
    // faulting in fresh pages.
    let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Option<Incoming>>>(1);
    // SMB Direct moves bulk data by RDMA (pipelined in handlers/rdma_io.rs).
    conn.io_offload = !sink.is_rdma() && conn.server.cfg.limits.max_in_flight_per_connection > 1;
    if conn.io_offload {
        conn.outbox = start_sender(sink.clone());
        conn.io_offload = conn.outbox.is_some();
        crate::iopool::keep_spare_buffers(conn.server.cfg.limits.max_in_flight_per_connection.saturating_add(3).min(64));
    }
    // A source that queues whole messages itself (SMB Direct) is read here,
    // on the connection's thread: no reader thread in between.
    let (mut direct, reader) = if source.has_queue() {
        (Some(source), Ok(()))
    } else {
        let mut dec = ReaderOpen { server: conn.server.clone(), conn_id: conn.conn_id, open: None, done: None };
        (None, std::thread::Builder::new().name("smb-read".into()).stack_size(128 * 1024).spawn(move || loop {
            // (A TCP source takes a spare buffer once it knows the length.) An
            // encrypted message is decrypted here as it arrives, so decrypting
            // the next WRITE overlaps with writing this one to the file.
            dec.done = None;
            let r = source.recv_decrypting(limit, Vec::new(), &mut dec).map(|m| m.map(|buf| Incoming { buf, opened: dec.done.take() }));
            let more = matches!(r, Ok(Some(_)));
            if let Err(std::sync::mpsc::SendError(Ok(Some(m)))) = tx.send(r) {
                crate::iopool::give_buffer(m.buf);
                break;
            }
            if !more {
                break;
            }
        }).map(drop))
    };
    let mut next_msg = |wait: Duration| match direct.as_mut() {
        Some(s) => s.recv_wait(limit, wait).map(|r| r.map(|m| m.map(|buf| Incoming { buf, opened: None }))).ok_or(std::sync::mpsc::RecvTimeoutError::Timeout),
        None => rx.recv_timeout(wait),
    };
    let end = match reader {
        Err(e) => Disconnect::Io(e),
        Ok(_) => loop {
            // Wait for the next message or the next timer, whichever is first
            // (at least once a second: a message that began is watched).
            let now = Instant::now();
            let next = match conn.on_timer(now) {
                Ok(n) => n,
                Err(d) => break d,
            };
            let wait = next.map_or(TIMER_TICK, |t| t.saturating_duration_since(now).min(TIMER_TICK));
            let Incoming { buf: mut msg, opened } = match next_msg(wait) {
                Ok(Ok(Some(m))) => m,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Ok(Ok(None)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break Disconnect::Closed,
                Ok(Err(e)) => break Disconnect::Io(e),
            };
            conn.on_request(Instant::now());
            conn.pre_opened = opened;
            // A bug that panics ends this connection only, with a log line.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| conn.handle_owned(&mut msg))) {
                Ok(Ok(())) => {}
                Ok(Err(d)) => break d,
                Err(_) => break Disconnect::Protocol("internal error (panic) while handling a request".into()),
            }
            conn.on_request(Instant::now());
            crate::status::update_current(&conn);
            crate::iopool::give_buffer(msg);
        },
    };
    if let Disconnect::Pass = end {
        if let Some(p) = take_for_pass(&mut conn, &mut next_msg) {
            debug!(%peer, session = p.session_id, "binding names another worker's session: passing the connection there");
            drop(conn);
            return Some(p);
        }
        warn!(%peer, "cannot stop reading the connection to pass it; closing it");
    }
    match &end {
        Disconnect::Closed => debug!(%peer, "connection closed"),
        Disconnect::Pass => {}
        Disconnect::Protocol(why) => warn!(%peer, "disconnecting: {why}"),
        Disconnect::Timeout(why) => warn!(%peer, "disconnecting: {why}"),
        Disconnect::Io(e) => info!(%peer, "connection ended: {e}"),
    }
    // Shutting the socket down also ends the reader thread.
    sink.shutdown();
    drop(next_msg);
    drop(conn);
    None
}

/// A message as the connection's reader thread hands it over.
struct Incoming {
    buf: Vec<u8>,
    opened: Option<PreOpened>,
}

/// A TRANSFORM message the reader thread decrypted in place as it arrived:
/// with which session's keys, and the outcome (the plaintext's range in the
/// buffer, or why it could not be opened: the buffer is garbage then).
struct PreOpened {
    session_id: u64,
    keys: Arc<crate::objects::SessionKeys>,
    result: Result<std::ops::Range<usize>, crypto::CryptoError>,
}

/// Decrypts TRANSFORM messages on the connection's reader thread while they
/// arrive (each part while it is in the cache from the socket), when the
/// header names a session (3.0 or later) that has this connection among its
/// channels and a decryption key. Anything else is left as it came for
/// `handle_encrypted`, which also checks what was decrypted here against the
/// connection's state when the message's turn comes (the session may have
/// ended meanwhile), and ends the connection on a failure as it would have.
struct ReaderOpen {
    server: Arc<Server>,
    conn_id: u64,
    open: Option<(u64, Arc<crate::objects::SessionKeys>, crypto::OpenInProgress)>,
    /// The last message's outcome, taken by the reader loop.
    done: Option<PreOpened>,
}

impl crate::transport::StreamDecrypt for ReaderOpen {
    fn begin(&mut self, head: &[u8], total: usize) -> bool {
        self.open = None;
        let Some(id) = head.get(44..52).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes) else { return false };
        let Some(session) = self.server.session(id) else { return false };
        if session.dialect < DIALECT_300 || !lock(&session.channels).list.iter().any(|c| c.conn_id == self.conn_id) {
            return false;
        }
        let Some(keys) = session.keys() else { return false };
        // A bad header is left for handle_encrypted to report.
        let Some(Ok(st)) = keys.opener.as_ref().map(|o| o.open_begin(head, total)) else { return false };
        self.open = Some((id, keys, st));
        true
    }

    fn more(&mut self, part: &mut [u8]) {
        if let Some((_, keys, st)) = self.open.as_mut() {
            if let Some(o) = keys.opener.as_ref() {
                o.open_more(st, part);
            }
        }
    }

    fn end(&mut self, msg: &mut [u8]) {
        let Some((session_id, keys, st)) = self.open.take() else { return };
        let Some(o) = keys.opener.as_ref() else { return };
        let result = o.open_end(st, msg).map(|(_, range)| range);
        self.done = Some(PreOpened { session_id, keys, result });
    }
}

/// Stops the reader of a connection being passed and adds whatever it read
/// meanwhile (a client that pipelined past the binding) to the pending
/// messages. `None` if the reader cannot be stopped in time: the
/// connection is then closed.
fn take_for_pass(conn: &mut Connection, next: &mut dyn FnMut(Duration) -> Result<std::io::Result<Option<Incoming>>, std::sync::mpsc::RecvTimeoutError>) -> Option<crate::connpass::ConnPass> {
    let mut p = conn.pass_out.take()?;
    if !conn.recv.halt() {
        return None;
    }
    let wait = conn.server.cfg.limits.io_timeout.max(Duration::from_secs(1));
    loop {
        match next(wait) {
            // (A message the reader decrypted cannot be replayed as it came.)
            Ok(Ok(Some(m))) if m.opened.is_none() => p.pending.extend_from_slice(&crate::connpass::framed(&m.buf)),
            Ok(Ok(Some(_))) => return None,
            Ok(Ok(None)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Some(p),
            Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return None,
        }
    }
}

/// Starts the connection's sender thread for responses finished by the I/O
/// pool: it sends them as they come and then counts them out of the
/// connection's requests in flight. It ends when the connection and every
/// job of it have let go of the channel.
fn start_sender(sink: Arc<dyn MessageSink>) -> Option<std::sync::mpsc::Sender<crate::handlers::file::Finished>> {
    let (tx, rx) = std::sync::mpsc::channel::<crate::handlers::file::Finished>();
    let spawned = std::thread::Builder::new().name("smb-send".into()).stack_size(128 * 1024).spawn(move || {
        for (reply, guard) in rx {
            if let Some(r) = reply {
                crate::handlers::file::send_or_close(&*sink, r);
            }
            drop(guard);
        }
    });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            warn!("cannot start a sender thread ({e}); READs/WRITEs are handled one at a time");
            None
        }
    }
}

/// `from + t`, or `None` when the timer is off (0) or too far to matter.
fn after(from: Instant, t: Duration) -> Option<Instant> {
    if t.is_zero() {
        return None;
    }
    from.checked_add(t)
}

/// The longest the connection's thread waits before looking at its timers.
const TIMER_TICK: Duration = Duration::from_secs(1);

/// The largest message a connection accepts: the largest WRITE plus headers,
/// a TRANSFORM header and compound slack.
pub fn max_message_size(c: &crate::config::ServerConfig) -> usize {
    c.max_write_size.max(c.max_transact_size) as usize + 64 * 1024
}

impl Drop for Connection {
    fn drop(&mut self) {
        // In-flight READs/WRITEs finish (and answer) before the teardown
        // (one never handed over is dropped first: it counts too).
        self.io_job = None;
        self.ready = None;
        self.inflight.wait_idle();
        self.outbox = None;
        let (handed, peak) = self.inflight.stats();
        if handed > 0 {
            debug!(peer = %self.peer, "READs/WRITEs handed to the I/O pool: {handed}, at most {peak} in flight at once");
        }
        let (writes, peak) = self.pending_writes.stats();
        if writes > 0 {
            info!(peer = %self.peer, "pipelined RDMA WRITEs: {writes}, at most {peak} in flight at once");
        }
        self.asyncs.disconnect_all();
        // A session ends with its last channel (its durable opens stay,
        // disconnected, for a reconnect: handlers/durable.rs); while another
        // connection is bound to it, it lives on there.
        for id in std::mem::take(&mut self.sessions) {
            let Some(s) = self.server.session(id) else { continue };
            if s.drop_channel(self.conn_id) {
                if let Some(s) = lock(&self.server.sessions).remove(&id) {
                    s.disconnect(&self.server);
                }
            } else {
                info!(peer = %self.peer, session = id, "channel closed; the session goes on on its other channels");
            }
        }
        // Sessions still being set up here die with the connection; an
        // unfinished binding or re-authentication leaves its session alone.
        for (_, p) in self.pending.drain() {
            if !p.session.is_valid() {
                lock(&self.server.sessions).remove(&p.session.id);
            }
        }
    }
}

impl Connection {
    pub fn new(server: Arc<Server>, sink: Arc<dyn MessageSink>, peer: String) -> Connection {
        let max = server.cfg.max_credits;
        let now = Instant::now();
        let asyncs = crate::asyncop::AsyncTable::for_server(server.asyncs.clone());
        let c = Connection {
            conn_id: server.new_id(),
            server,
            sink,
            peer,
            dialect: None,
            client_guid: [0; 16],
            client_caps: 0,
            client_security_mode: 0,
            server_caps: 0,
            cipher: None,
            signing_alg: SigningAlgorithm::HmacSha256,
            preauth: None,
            pending: HashMap::new(),
            sessions: Vec::new(),
            credits: CreditWindow::new(max),
            credits_in_use: Default::default(),
            io_hold: None,
            rdma_transforms: Vec::new(),
            asyncs,
            transform_session: None,
            bind_reply_signed: false,
            read_body_padding: 0,
            unacked: Default::default(),
            invalidate_token: None,
            may_defer_rdma: false,
            deferred: None,
            after_send: Vec::new(),
            interims: Vec::new(),
            pending_writes: Default::default(),
            io_offload: false,
            io_here: false,
            io_job: None,
            ready: None,
            plain_at: 0,
            pre_opened: None,
            inflight: Default::default(),
            outbox: None,
            recv: Arc::new(crate::transport::RecvControl::new(0)),
            negotiated: None,
            pass_out: None,
            created: now,
            last_request: now,
            unauthenticated_since: Some(now),
        };
        c.recv.set_limit(c.server.cfg.limits.max_unauthenticated_message.min(c.max_message_size()));
        c.asyncs.set_conn_id(c.conn_id);
        c
    }

    /// A session was authenticated: messages up to the negotiated sizes are
    /// accepted from now on (set before the response goes out, so a client
    /// that writes right after it is not refused).
    pub(crate) fn on_authenticated(&mut self) {
        self.recv.set_limit(self.max_message_size());
        // With a session it is never passed to another worker.
        self.recv.never_halt();
        self.negotiated = None;
        self.unauthenticated_since = None;
    }

    /// Notes a request (for `deadtime`) and whether the connection still has
    /// an authenticated session (for `session setup timeout`).
    pub fn on_request(&mut self, now: Instant) {
        self.last_request = now;
        if self.sessions.is_empty() {
            self.unauthenticated_since.get_or_insert(now);
        } else {
            self.unauthenticated_since = None;
        }
    }

    /// Runs the connection's timers at `now`: drops unfinished SESSION_SETUP
    /// exchanges older than `session setup timeout` and ends the connection
    /// (an error to log) when it has gone `negotiate timeout` without a
    /// NEGOTIATE, `session setup timeout` without an authenticated session,
    /// or `deadtime` idle with nothing open. Returns when to run it next.
    pub fn on_timer(&mut self, now: Instant) -> Result<Option<Instant>, Disconnect> {
        let l = self.server.cfg.limits.clone();
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        // Sessions ended on another channel (LOGOFF there) are no longer this
        // connection's either.
        let server = self.server.clone();
        self.sessions.retain(|id| server.session(*id).is_some());
        let expired: Vec<u64> = self.pending.iter().filter(|(_, p)| after(p.started, l.session_setup_timeout).is_some_and(|e| now >= e)).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                if !p.session.is_valid() {
                    lock(&self.server.sessions).remove(&id);
                }
                info!(peer = %self.peer, session = id, "unfinished SESSION_SETUP dropped after {} s (session setup timeout)", l.session_setup_timeout.as_secs());
            }
        }
        for p in self.pending.values() {
            if let Some(e) = after(p.started, l.session_setup_timeout) {
                at(e);
            }
        }
        if self.dialect.is_none_or(|d| d == DIALECT_WILDCARD_INTERNAL) {
            if let Some(end) = after(self.created, l.negotiate_timeout) {
                if now >= end {
                    return Err(Disconnect::Timeout(format!("no NEGOTIATE within {} s (negotiate timeout)", l.negotiate_timeout.as_secs())));
                }
                at(end);
            }
        }
        if self.sessions.is_empty() {
            let since = *self.unauthenticated_since.get_or_insert(now);
            if let Some(end) = after(since, l.session_setup_timeout) {
                if now >= end {
                    return Err(Disconnect::Timeout(format!("no authenticated session for {} s (session setup timeout)", l.session_setup_timeout.as_secs())));
                }
                at(end);
            }
        } else if self.asyncs.is_empty() && !l.deadtime.is_zero() && !self.has_open_files() {
            if let Some(end) = after(self.last_request, l.deadtime) {
                if now >= end {
                    return Err(Disconnect::Timeout(format!("idle for {} min with no open files (deadtime)", l.deadtime.as_secs() / 60)));
                }
                at(end);
            }
        }
        // A message that has begun must be complete within the io timeout.
        if let Some(end) = self.recv.started().and_then(|s| after(s, l.io_timeout)) {
            if now >= end {
                return Err(Disconnect::Timeout(format!("a message took longer than {} s to arrive (io timeout)", l.io_timeout.as_secs())));
            }
            at(end);
        }
        Ok(next)
    }

    fn has_open_files(&self) -> bool {
        self.sessions.iter().filter_map(|id| self.server.session(*id)).any(|s| !lock(&s.opens).is_empty())
    }

    pub fn max_message_size(&self) -> usize {
        max_message_size(&self.server.cfg)
    }

    pub fn handle_message(&mut self, mut msg: Vec<u8>) -> Result<(), Disconnect> {
        self.handle_owned(&mut msg)
    }

    /// Handles one message; a READ/WRITE handed to the I/O pool takes the
    /// buffer along (a WRITE's data is in it), else the caller may reuse it.
    pub fn handle_owned(&mut self, msg: &mut Vec<u8>) -> Result<(), Disconnect> {
        let r = self.handle_inner(msg);
        if let Some((job, reply)) = self.ready.take() {
            // In use until the pool has answered it.
            let hold = self.io_hold.take();
            let req = std::mem::take(msg);
            let plain_at = self.plain_at;
            let (sink, outbox) = (self.sink.clone(), self.outbox.clone());
            let work = Box::new(move || {
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let plain = req.get(plain_at..).unwrap_or(&[]);
                    match &outbox {
                        Some(o) => {
                            // (Not taken only when the connection's sender is gone: closed.)
                            let _ = o.send(job.finish(reply, plain, &*sink));
                        }
                        None => job.run(reply, plain, &*sink),
                    }
                }));
                if done.is_err() {
                    warn!(peer = %sink.peer(), "internal error (panic) in a READ/WRITE; closing the connection");
                    sink.shutdown();
                }
                drop(hold);
                crate::iopool::give_buffer(req);
            });
            // No pool thread at all: done here.
            if let Err(work) = crate::iopool::submit(work) {
                work();
            }
        }
        r
    }

    /// Handles one message in a buffer the caller keeps (and may reuse for
    /// the next message; it may be changed in place, e.g. decrypted). A
    /// READ/WRITE is finished before this returns.
    pub fn handle_buffer(&mut self, msg: &mut [u8]) -> Result<(), Disconnect> {
        let r = self.handle_inner(msg);
        if let Some((job, reply)) = self.ready.take() {
            job.run(reply, msg.get(self.plain_at..).unwrap_or(&[]), &*self.sink);
        }
        self.io_hold = None;
        r
    }

    fn handle_inner(&mut self, msg: &mut [u8]) -> Result<(), Disconnect> {
        self.plain_at = 0;
        if msg.get(0..4) != Some(&TRANSFORM_PROTOCOL_ID[..]) {
            self.pre_opened = None;
        }
        self.io_job = None;
        let Some(pid) = msg.get(0..4) else {
            return Err(Disconnect::Protocol(format!("message of {} bytes is too short", msg.len())));
        };
        if pid == SMB1_PROTOCOL_ID {
            return self.smb1_negotiate(msg);
        }
        if pid == TRANSFORM_PROTOCOL_ID {
            return self.handle_encrypted(msg);
        }
        if pid != PROTOCOL_ID {
            return Err(Disconnect::Protocol(format!("unknown protocol id {pid:02x?}")));
        }
        self.deferred = None;
        if let Some(p) = self.pass_for(msg) {
            self.pass_out = Some(p);
            return Err(Disconnect::Pass);
        }
        self.io_hold = None;
        let out = self.process_chain(msg, false)?;
        if let Some(job) = self.take_io_job(&out) {
            self.ready = Some((job, out));
            return Ok(());
        }
        let r = self.send(out);
        self.io_hold = None;
        r
    }

    /// The READ/WRITE the chain just handled left for the I/O pool, if its
    /// response is a success so far (anything else goes out as it is).
    fn take_io_job(&mut self, out: &OutBuf) -> Option<crate::handlers::file::IoJob> {
        let job = self.io_job.take()?;
        let status = out.buf.get(out.start + 8..out.start + 12)?;
        (status == [0; 4] && out.buf.len() > out.start).then_some(job)
    }

    fn send(&mut self, out: OutBuf) -> Result<(), Disconnect> {
        let r = self.send_chain(out);
        // The interim responses of this chain are out (or never will be):
        // final responses held back for them may follow.
        let ids = std::mem::take(&mut self.interims);
        if !ids.is_empty() {
            self.asyncs.interims_sent(&ids);
        }
        for job in std::mem::take(&mut self.after_send) {
            job();
        }
        r
    }

    fn send_chain(&mut self, out: OutBuf) -> Result<(), Disconnect> {
        let invalidate = self.invalidate_token.take();
        let deferred = self.deferred.take();
        if out.buf.len() <= out.start {
            return Ok(());
        }
        // A READ or WRITE whose RDMA transfer was left for now: started here,
        // and the response goes out when it is done. Only a successful
        // response has its data moved (anything else drops the slot unused).
        let status = out.buf.get(out.start + 8..out.start + 12).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match (deferred, status) {
            (Some(Deferred::Read(buf, remote)), Some(0)) => {
                if let Some(r) = self.sink.rdma() {
                    return r.write_to_peer_then_send(buf, remote, out, invalidate).map_err(Disconnect::Io);
                }
            }
            (Some(Deferred::Write(w)), Some(0)) => {
                return crate::handlers::rdma_io::start_deferred_write(self, w, out, invalidate).map_err(Disconnect::Io);
            }
            _ => {}
        }
        match invalidate {
            Some(token) => self.sink.send_invalidate(out, token),
            None => self.sink.send(out),
        }
        .map_err(Disconnect::Io)
    }

    fn handle_encrypted(&mut self, msg: &mut [u8]) -> Result<(), Disconnect> {
        let pre = self.pre_opened.take();
        if self.dialect.is_none_or(|d| d < DIALECT_300) {
            return Err(Disconnect::Protocol("TRANSFORM header before an SMB3 dialect".into()));
        }
        let th = crypto::parse_transform_header(&msg).map_err(|e| Disconnect::Protocol(format!("bad TRANSFORM header: {e}")))?;
        let session = self
            .server
            .session(th.session_id)
            .filter(|s| self.sessions.contains(&s.id))
            .ok_or_else(|| Disconnect::Protocol(format!("TRANSFORM for unknown session {:#x}", th.session_id)))?;
        let keys = session.keys().ok_or_else(|| Disconnect::Protocol("TRANSFORM on a session without keys".into()))?;
        let opener = keys.opener.as_ref().ok_or_else(|| Disconnect::Protocol("TRANSFORM on a session without encryption".into()))?;
        let range = match pre {
            // Decrypted by the reader thread with the keys the session has now
            // (a session's keys are never replaced once set).
            Some(p) if p.session_id == session.id && Arc::ptr_eq(&p.keys, &keys) => p.result,
            Some(_) => return Err(Disconnect::Protocol("TRANSFORM decrypted with keys the session no longer has".into())),
            None => opener.open(msg).map(|(_, range)| range),
        }
        .map_err(|e| Disconnect::Protocol(format!("decryption failed: {e}")))?;
        self.plain_at = range.start;
        let plain = msg.get(range).ok_or_else(|| Disconnect::Protocol("decryption range".into()))?;
        if plain.get(0..4) != Some(&PROTOCOL_ID[..]) {
            return Err(Disconnect::Protocol("decrypted message is not SMB2".into()));
        }
        self.transform_session = Some(session.id);
        let r = self.process_chain(plain, true);
        self.transform_session = None;
        let mut out = r?;
        if let Some(mut job) = self.take_io_job(&out) {
            job.seal = Some((keys, session.id));
            self.ready = Some((job, out));
            return Ok(());
        }
        if out.buf.len() > out.start {
            seal_out(&keys, session.id, &mut out).map_err(|e| Disconnect::Protocol(format!("encryption failed: {e}")))?;
        }
        let r = self.send(out);
        self.io_hold = None;
        r
    }

    /// Processes a (possibly compound) chain of plaintext SMB2 messages and
    /// returns the response chain, signed where required.
    fn process_chain(&mut self, chain: &[u8], encrypted: bool) -> Result<OutBuf, Disconnect> {
        let mut out = OutBuf::new(256);
        let mut off = 0usize;
        let mut prev: Option<(u64, u32, Option<FileId>, NtStatus)> = None;
        let mut last_resp_start: Option<usize> = None;
        let mut sign_with: Vec<(usize, usize, Option<SigningKey>)> = Vec::new();
        // The whole chain is split and checked (every header, every
        // NextCommand inside the message) before any of it is acted on, as
        // Samba does: a malformed chain ends the connection without having
        // half run (a WRITE before a NextCommand that leads nowhere).
        let mut parts: Vec<(Header, &[u8])> = Vec::new();
        loop {
            if parts.len() == 64 {
                return Err(Disconnect::Protocol("compound chain longer than 64".into()));
            }
            let rest = chain.get(off..).unwrap_or(&[]);
            let hdr = Header::parse(rest).map_err(|e| Disconnect::Protocol(format!("bad SMB2 header at {off}: {e}")))?;
            let len = if hdr.next_command == 0 {
                rest.len()
            } else {
                let n = hdr.next_command as usize;
                if n < HEADER_LEN || n % 8 != 0 || n > rest.len() {
                    return Err(Disconnect::Protocol(format!("bad NextCommand {n}")));
                }
                n
            };
            let last = hdr.next_command == 0;
            parts.push((hdr, &rest[..len]));
            if last {
                break;
            }
            off += len;
        }
        // (An error below ends the connection: the flag is not reset then.)
        self.may_defer_rdma = parts.len() == 1 && !encrypted;
        // Only a message of one READ or WRITE runs beside the READs/WRITEs
        // in flight; anything else waits until they are done (iopool.rs).
        let single_io = parts.len() == 1 && matches!(Command::from_u16(parts[0].0.command), Some(Command::Read | Command::Write));
        if !single_io {
            self.inflight.wait_idle();
        }
        self.io_here = single_io && self.io_offload;
        for (hdr, msg) in parts {
            // Each response in a chain starts 8-aligned relative to the first.
            if let Some(start) = last_resp_start {
                let rel = out.buf.len() - out.start;
                let pad = (8 - rel % 8) % 8;
                out.buf.zeros(pad);
                let next = (out.buf.len() - start) as u32;
                out.buf.set_u32(start + 20, next);
            }
            let resp_start = out.buf.len();
            let keys = self.process_one(&hdr, msg, encrypted, &mut prev, &mut out.buf)?;
            if out.buf.len() > resp_start {
                if let Some(ls) = last_resp_start {
                    if let Some(last) = sign_with.last_mut() {
                        last.1 = resp_start - ls;
                    }
                }
                sign_with.push((resp_start, out.buf.len() - resp_start, keys));
                last_resp_start = Some(resp_start);
            }
        }
        self.may_defer_rdma = false;
        self.io_here = false;
        // A READ/WRITE handed to the I/O pool is signed there, when finished.
        if let Some(job) = self.io_job.as_mut() {
            job.keys = sign_with.pop().and_then(|(_, _, k)| k);
        }
        // A deferred WRITE's response is finished later: it is signed then.
        if let Some(Deferred::Write(w)) = self.deferred.as_mut() {
            w.keys = sign_with.pop().and_then(|(_, _, k)| k);
        }
        // Sign each response over its own bytes (padding included, as chained).
        for (start, len, keys) in &sign_with {
            if let (Some(k), Some(m)) = (keys, out.buf.get_mut(*start..*start + *len)) {
                sign_with_key(k, m);
            }
        }
        // SESSION_SETUP responses that are not the final success go into the
        // session's preauth hash as sent (signed, for a binding).
        for (start, len, _) in &sign_with {
            if let Some(m) = out.buf.get(*start..*start + *len) {
                self.session_setup_response_hash(m);
            }
        }
        Ok(out)
    }

    /// Handles one request; appends its response to `out` and says which
    /// session keys, if any, must sign it.
    fn process_one(
        &mut self,
        hdr: &Header,
        msg: &[u8],
        encrypted: bool,
        prev: &mut Option<(u64, u32, Option<FileId>, NtStatus)>,
        out: &mut Vec<u8>,
    ) -> Result<Option<SigningKey>, Disconnect> {
        let known = Command::from_u16(hdr.command);
        if hdr.flags & FLAG_SERVER_TO_REDIR != 0 {
            return Err(Disconnect::Protocol("a response sent to the server".into()));
        }
        // CANCEL consumes no credit and gets no response of its own; the
        // operation it names ends with STATUS_CANCELLED.
        if known == Some(Command::Cancel) {
            // A signed CANCEL must carry a good signature (MS-SMB2 3.3.5.2.4):
            // a forged one on a signing session cancels nothing.
            if hdr.is_signed() && !encrypted {
                let s = self.server.session(hdr.session_id).filter(|s| self.sessions.contains(&s.id));
                let ok = match s {
                    Some(s) => self.check_signature(&s, hdr, msg, false).is_ok(),
                    None => false,
                };
                if !ok {
                    warn!(peer = %self.peer, mid = hdr.message_id, "CANCEL with a bad signature ignored");
                    return Ok(None);
                }
            }
            if !self.asyncs.cancel(hdr) {
                debug!(peer = %self.peer, mid = hdr.message_id, "CANCEL of nothing pending");
            }
            return Ok(None);
        }
        let dialect = self.dialect;
        if known != Some(Command::Negotiate) && dialect.is_none_or(|d| d == DIALECT_WILDCARD_INTERNAL) {
            return Err(Disconnect::Protocol(format!("command {:#x} before NEGOTIATE", hdr.command)));
        }
        // Credits: the message id must be inside the window, each used once.
        let multi_credit = dialect.is_some_and(|d| d >= DIALECT_210);
        let charge = if multi_credit { hdr.credit_charge } else { 1 };
        if let Err(e) = self.credits.consume(hdr.message_id, charge) {
            return Err(Disconnect::Protocol(format!("message id {} (charge {charge}) outside the credit window: {e}", hdr.message_id)));
        }
        // In use until answered (dropped with this function for a response
        // that goes out with the chain).
        let hold = self.credits_in_use.hold(charge);

        // An unknown command costs its credits and is answered with
        // INVALID_PARAMETER; the rest of a compound goes on.
        let Some(cmd) = known else {
            debug!(peer = %self.peer, mid = hdr.message_id, "unknown command {:#x}", hdr.command);
            let mut rh = hdr.response(NtStatus::INVALID_PARAMETER);
            rh.credit_charge = hdr.credit_charge;
            rh.credits = self.credits.grant(hdr.credits.max(1));
            if hdr.is_related() {
                rh.flags |= FLAG_RELATED;
            }
            rh.write(out);
            error_body(out, &[]);
            *prev = Some((hdr.session_id, hdr.tree_id(), None, NtStatus::INVALID_PARAMETER));
            let keys = self.server.session(hdr.session_id).filter(|s| self.sessions.contains(&s.id) && s.is_valid()).and_then(|s| {
                if !encrypted && (hdr.is_signed() || *lock(&s.signing_required)) {
                    s.signer_on(self.conn_id)
                } else {
                    None
                }
            });
            return Ok(keys);
        };

        let mut hdr = hdr.clone();
        if hdr.is_related() {
            match prev {
                Some((sid, tid, _, _)) => {
                    hdr.session_id = *sid;
                    hdr.async_id = (hdr.async_id & 0xFFFF_FFFF) | (u64::from(*tid) << 32);
                }
                None => {
                    // The first message of a chain cannot be related.
                    let mut rh = hdr.response(NtStatus::INVALID_PARAMETER);
                    rh.credit_charge = hdr.credit_charge;
                    rh.credits = self.credits.grant(hdr.credits.max(1));
                    rh.flags |= FLAG_RELATED;
                    rh.write(out);
                    error_body(out, &[]);
                    return Ok(None);
                }
            }
        }
        let compound_file = if hdr.is_related() { prev.as_ref().and_then(|p| p.2) } else { None };
        let mut ctx = Ctx { hdr: &hdr, msg, session: None, tree: None, compound_file, encrypted, async_id: None, warning: None, used_file: Default::default() };
        let resp_start = out.len();
        out.zeros(HEADER_LEN);
        let mut session_failed = false;
        self.bind_reply_signed = false;
        let mut sequence: Option<(Arc<Session>, u64, u16)> = None;

        // MS-SMB2 3.3.5.7: set when an authenticated user's TREE_CONNECT on 3.1.1
        // is neither signed nor encrypted (checked after the session checks).
        let mut unsigned_tree_connect = false;

        let result: Result<(), NtStatus> = (|| {
            // A related request inherits the failure of the CREATE (or of the
            // session check) before it in the chain.
            if hdr.is_related() {
                if let Some((_, _, _, st)) = prev {
                    if *st != NtStatus::SUCCESS {
                        return Err(*st);
                    }
                }
            }
            // A request decrypted with one session's key speaks for that
            // session only (as Samba: another session's key is no proof).
            if let Some(tsid) = self.transform_session {
                if hdr.session_id != tsid && known != Some(Command::Negotiate) {
                    return Err(NtStatus::ACCESS_DENIED);
                }
            }
            // Samba's connection-level test FSCTLs need no session, tree or
            // open (smbtorture sends FORCE_UNACKED_TIMEOUT with none).
            if cmd == Command::Ioctl && hdr.session_id == 0 && self.server.cfg.smbtorture_fsctls {
                if let Some(r) = self.smbtorture_fsctl(msg, out) {
                    return r;
                }
            }
            // Session, signature and encryption checks.
            let needs_session = !matches!(cmd, Command::Negotiate | Command::SessionSetup | Command::Echo);
            if hdr.session_id != 0 || needs_session {
                let s = self.server.session(hdr.session_id).filter(|s| self.sessions.contains(&s.id) || self.pending.contains_key(&s.id));
                match s {
                    Some(s) => {
                        if cmd != Command::SessionSetup {
                            let st = *lock(&s.state);
                            if st != SessionState::Valid {
                                return Err(if st == SessionState::Expired { NtStatus::NETWORK_SESSION_EXPIRED } else { NtStatus::USER_SESSION_DELETED });
                            }
                            self.check_signature(&s, &hdr, msg, encrypted)?;
                            if *lock(&s.encrypt_data) && !encrypted && cmd != Command::Echo {
                                return Err(NtStatus::ACCESS_DENIED);
                            }
                        }
                        // MS-SMB2 3.3.5.7: every 3.1.1 client signs an authenticated
                        // user's TREE_CONNECT; an unsigned, unencrypted one (a man in the
                        // middle stripping signatures) ends the connection. (Samba
                        // answers ACCESS_DENIED; the spec asks for the disconnect.)
                        if cmd == Command::TreeConnect
                            && dialect == Some(0x0311)
                            && !encrypted
                            && !hdr.is_signed()
                            && lock(&s.identity).as_ref().is_some_and(|i| i.kind == crate::auth::IdentityKind::User)
                        {
                            unsigned_tree_connect = true;
                            return Err(NtStatus::ACCESS_DENIED);
                        }
                        ctx.session = Some(s);
                    }
                    None if needs_session => {
                        session_failed = true;
                        return Err(NtStatus::USER_SESSION_DELETED);
                    }
                    // SESSION_SETUP looks the session up itself (binding names a
                    // session of another connection).
                    None => {}
                }
            }
            let needs_tree = !matches!(
                cmd,
                Command::Negotiate | Command::SessionSetup | Command::Logoff | Command::TreeConnect | Command::Echo | Command::Cancel
            );
            if needs_tree {
                let s = ctx.session()?;
                let t = s.tree(hdr.tree_id()).ok_or(NtStatus::NETWORK_NAME_DELETED)?;
                if t.encrypt && !encrypted {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                ctx.tree = Some(t);
            }
            // Channel sequence of the open the request names (MS-SMB2 3.3.5.2.10).
            if self.is_smb3() {
                if let Some(off) = file_id_offset(cmd) {
                    if let (Some(s), Some(vol)) = (ctx.session.clone(), request_open(&ctx, off)) {
                        let seq = (hdr.status & 0xFFFF) as u16; // ChannelSequence (3.x requests)
                        let ok = {
                            let mut ch = lock(&s.channels);
                            ch.sequences.get_mut(&vol).is_none_or(|cs| cs.admit(seq, hdr.flags & FLAG_REPLAY != 0))
                        };
                        if ok {
                            sequence = Some((s, vol, seq));
                        } else if matches!(cmd, Command::Write | Command::SetInfo | Command::Ioctl) {
                            return Err(NtStatus::FILE_NOT_AVAILABLE);
                        }
                    }
                }
            }
            // Multi-credit: the charge must cover the payload (MS-SMB2 3.3.5.2.5).
            if multi_credit {
                let payload = crate::handlers::payload_size(cmd, msg);
                let needed = payload.div_ceil(65536).max(1);
                if u64::from(hdr.credit_charge.max(1)) < needed {
                    return Err(NtStatus::INVALID_PARAMETER);
                }
            }
            // A request other than READ/WRITE (which wait per open) sees the
            // data of the connection's RDMA WRITEs still in flight.
            if !matches!(cmd, Command::Read | Command::Write) && !self.pending_writes.is_empty() {
                crate::handlers::rdma_io::wait_writes(self, None)?;
            }
            self.dispatch(cmd, &mut ctx, out)
        })();
        if unsigned_tree_connect {
            return Err(Disconnect::Protocol(format!(
                "unsigned TREE_CONNECT on 3.1.1 for the authenticated session {:#x} (MS-SMB2 3.3.5.7)",
                hdr.session_id
            )));
        }
        if let Some((s, vol, seq)) = sequence {
            if let Some(cs) = lock(&s.channels).sequences.get_mut(&vol) {
                cs.done(seq);
            }
        }
        if self.is_smb3() {
            self.track_open_sequence(cmd, &hdr, &result, &ctx, &out[resp_start..]);
        }

        let status = match result {
            Ok(()) => NtStatus::SUCCESS,
            Err(st) if st == NtStatus::PENDING && ctx.async_id.is_some() => {
                // Interim response: the final one follows from the async operation.
                out.truncate(resp_start + HEADER_LEN);
                error_body(out, &[]);
                st
            }
            Err(st) => {
                debug!(peer = %self.peer, mid = hdr.message_id, "{cmd:?} -> {st}");
                out.truncate(resp_start + HEADER_LEN);
                error_body(out, &[]);
                st
            }
        };
        let status = if status == NtStatus::SUCCESS { ctx.warning.unwrap_or(status) } else { status };
        let mut rh = hdr.response(status);
        rh.credit_charge = hdr.credit_charge;
        rh.credits = self.credits.grant(hdr.credits.max(1));
        if let Some(aid) = ctx.async_id {
            rh.flags |= FLAG_ASYNC;
            rh.async_id = aid;
        }
        if hdr.is_related() {
            rh.flags |= FLAG_RELATED;
        }
        // A new session's id goes back in the SESSION_SETUP response.
        if cmd == Command::SessionSetup {
            if let Some(s) = &ctx.session {
                rh.session_id = s.id;
            }
        }
        if cmd == Command::TreeConnect {
            if let Some(t) = &ctx.tree {
                rh.async_id = (rh.async_id & 0xFFFF_FFFF) | (u64::from(t.id) << 32);
            }
        }
        let mut hb = Vec::with_capacity(HEADER_LEN);
        rh.write(&mut hb);
        out[resp_start..resp_start + HEADER_LEN].copy_from_slice(&hb);

        let (file, sticky) = chain_state(cmd, status, session_failed, hdr.is_related(), &out[resp_start..], &ctx, prev.as_ref().map(|p| p.3));
        *prev = Some((rh.session_id, rh.tree_id(), file, sticky));

        if cmd == Command::Negotiate && status == NtStatus::SUCCESS {
            if let Some(h) = self.preauth.as_mut() {
                h.update(&out[resp_start..]);
            }
            if self.recv.can_halt() {
                self.negotiated = Some((msg.to_vec(), out[resp_start..].to_vec()));
            }
        }
        // Sign when the session signs and the response is not encrypted.
        let keys = if encrypted || status == NtStatus::PENDING {
            None
        } else {
            match &ctx.session {
                // The final SESSION_SETUP response is signed at every dialect
                // unless the session is a guest or anonymous one (MS-SMB2
                // 3.3.5.5.3 step 12, as Windows and Samba do on 2.0.2/2.1 too):
                // the client proves with it that the server knew the password.
                Some(s) if cmd == Command::SessionSetup && status == NtStatus::SUCCESS && !guest_or_null_session_setup(&out[resp_start..]) => s.signer_on(self.conn_id),
                Some(s) if cmd != Command::SessionSetup && (hdr.is_signed() || *lock(&s.signing_required)) && s.is_valid() => s.signer_on(self.conn_id),
                Some(s) if cmd == Command::Logoff && status == NtStatus::SUCCESS && hdr.is_signed() => s.signer_on(self.conn_id),
                // The answers to a binding signed with the session's key, but
                // the final success, are signed with the session's key
                // (MS-SMB2 3.3.4.1.1): the new channel has none yet.
                Some(s) if cmd == Command::SessionSetup && self.bind_reply_signed => s.keys().map(SigningKey::Session),
                // A refused binding or a session setup naming another
                // connection's session, whose request carried that session's
                // signature (checked by session_setup), is answered signed.
                Some(s)
                    if cmd == Command::SessionSetup
                        && (status == NtStatus::REQUEST_NOT_ACCEPTED || status == NtStatus::USER_SESSION_DELETED)
                        && hdr.is_signed()
                        && s.is_valid() =>
                {
                    s.keys().map(SigningKey::Session)
                }
                _ => None,
            }
        };
        // A signed request naming a session this connection has no key for
        // (another connection's session, one not bound here): the
        // USER_SESSION_DELETED answer cannot be signed, but says SIGNED, as
        // Samba and ksmbd do. A client that requires signing skips the check
        // for this status but wants the flag before it believes the status.
        if keys.is_none() && status == NtStatus::USER_SESSION_DELETED && hdr.is_signed() && !encrypted {
            if let Some(f) = out.get_mut(resp_start + 16..resp_start + 20) {
                let flags = u32::from_le_bytes([f[0], f[1], f[2], f[3]]) | FLAG_SIGNED;
                f.copy_from_slice(&flags.to_le_bytes());
            }
        }
        // An async operation's credits are its table's now; a READ/WRITE
        // finished later keeps them until then.
        if status != NtStatus::PENDING && (self.io_job.is_some() || self.deferred.is_some()) {
            self.io_hold = Some(hold);
        } else {
            drop(hold);
        }
        // A session that requires encryption encrypts everything it sends.
        Ok(keys)
    }

    /// Keeps the channel sequence table of the session in step with its
    /// opens: a new open starts at its CREATE's ChannelSequence (MS-SMB2
    /// 3.3.5.9), a closed one is forgotten.
    fn track_open_sequence(&self, cmd: Command, hdr: &Header, result: &Result<(), NtStatus>, ctx: &Ctx<'_>, resp: &[u8]) {
        let Some(s) = &ctx.session else { return };
        // A warning-class status (STOPPED_ON_SYMLINK) opens nothing either.
        if result.is_err() || ctx.warning.is_some() {
            return;
        }
        let vol_at = |b: &[u8], at: usize| b.get(at..at + 8).and_then(|v| v.try_into().ok()).map(u64::from_le_bytes);
        match cmd {
            Command::Create => {
                // The new FileId is at 64 + 72 of the response (2.2.14).
                let Some(vol) = vol_at(resp, HEADER_LEN + 72) else { return };
                let mut ch = lock(&s.channels);
                let seq = (hdr.status & 0xFFFF) as u16;
                ch.sequences.insert(vol, crate::objects::ChannelSequence { sequence: seq, outstanding: 0, outstanding_pre: 0 });
                // Forget opens that went away by other paths (tree
                // disconnect, delete) once the table has grown.
                if ch.sequences.len() > 64 {
                    let opens = lock(&s.opens);
                    if ch.sequences.len() > 2 * opens.len() {
                        ch.sequences.retain(|v, _| opens.contains_key(v));
                    }
                }
            }
            Command::Close => {
                let raw = ctx.msg.get(HEADER_LEN + 8..HEADER_LEN + 24);
                let id = match raw {
                    Some(r) if r == [0xFF; 16] => ctx.compound_file.map(|f| f.to_vec()),
                    Some(r) => Some(r.to_vec()),
                    None => None,
                };
                if let Some(vol) = id.as_deref().and_then(|i| vol_at(i, 8)) {
                    lock(&s.channels).sequences.remove(&vol);
                }
            }
            _ => {}
        }
    }

    fn check_signature(&self, s: &Session, hdr: &Header, msg: &[u8], encrypted: bool) -> Result<(), NtStatus> {
        if encrypted {
            return Ok(());
        }
        let key = s.signer_on(self.conn_id);
        if hdr.is_signed() {
            let Some(signer) = key.as_ref().and_then(|k| k.signer()) else {
                return Ok(()); // guest/anonymous: nothing to verify against
            };
            // The signer zeroes the Signature field while it computes; the
            // request itself stays untouched for the handler.
            let mut copy = msg.to_vec();
            if !signer.verify(&mut copy) {
                warn!(peer = %self.peer, session = s.id, "bad signature on {:?}", Command::from_u16(hdr.command));
                return Err(NtStatus::ACCESS_DENIED);
            }
        } else if *lock(&s.signing_required) {
            return Err(NtStatus::ACCESS_DENIED);
        }
        Ok(())
    }

    fn dispatch(&mut self, cmd: Command, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
        use crate::handlers as h;
        // Every file-system operation of a request on a tree runs with the
        // tree's Unix identity (identity.rs), switched back when this returns.
        let creds = ctx.tree.as_ref().and_then(|t| t.creds.clone());
        let _identity = crate::identity::Guard::enter(creds.as_ref()).map_err(|e| {
            warn!(peer = %self.peer, "cannot take the identity of {:?}: {e}", creds.as_ref().map(|c| &c.name));
            NtStatus::ACCESS_DENIED
        })?;
        match cmd {
            Command::Negotiate => self.negotiate(ctx, out),
            Command::SessionSetup => self.session_setup(ctx, out),
            Command::Logoff => self.logoff(ctx, out),
            Command::TreeConnect => h::tree::tree_connect(self, ctx, out),
            Command::TreeDisconnect => h::tree::tree_disconnect(self, ctx, out),
            Command::Create => h::create::create(self, ctx, out),
            Command::Close => h::file::close(self, ctx, out),
            Command::Flush => h::file::flush(ctx, out),
            Command::Read => h::file::read(self, ctx, out),
            Command::Write => h::file::write(self, ctx, out),
            Command::Lock => h::lock::lock_cmd(self, ctx, out),
            Command::Ioctl => {
                if self.server.cfg.smbtorture_fsctls {
                    if let Some(r) = self.smbtorture_fsctl(ctx.msg, out) {
                        return r;
                    }
                }
                h::ioctl::ioctl(self, ctx, out)
            }
            Command::Echo => {
                crate::wire::messages::parse_small(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
                out.u16(4).u16(0);
                Ok(())
            }
            Command::QueryDirectory => h::dir::query_directory(ctx, out),
            Command::ChangeNotify => h::notify::change_notify(self, ctx, out),
            Command::QueryInfo => h::info::query_info(self, ctx, out),
            Command::SetInfo => h::info::set_info(self, ctx, out),
            Command::OplockBreak => h::oplock::oplock_break(self, ctx, out),
            Command::Cancel => Ok(()),
        }
    }

    /// Samba's test-only FSCTLs (enabled by `smbd:FSCTL_SMBTORTURE`); `None`
    /// when `msg` is not one of them.
    fn smbtorture_fsctl(&mut self, msg: &[u8], out: &mut Vec<u8>) -> Option<Result<(), NtStatus>> {
        let req = crate::wire::messages::IoctlReq::parse(msg).ok()?;
        if req.flags != crate::wire::messages::IOCTL_IS_FSCTL {
            return None;
        }
        match req.ctl_code {
            FSCTL_SMBTORTURE_GLOBAL_READ_RESPONSE_BODY_PADDING8 | FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT => {}
            _ => return None,
        }
        if !req.input.is_empty() {
            return Some(Err(NtStatus::INVALID_PARAMETER));
        }
        if req.ctl_code == FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT {
            info!(peer = %self.peer, "FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT: nothing sent on this connection counts as acknowledged now");
            self.unacked.store(true, Ordering::Relaxed);
        } else {
            self.read_body_padding = 8;
        }
        let off = (HEADER_LEN + 48) as u32;
        out.u16(49).u16(0).u32(req.ctl_code).put(&req.file_id);
        out.u32(off).u32(0).u32(off).u32(0).u32(0).u32(0);
        Some(Ok(()))
    }

    pub fn is_smb3(&self) -> bool {
        self.dialect.is_some_and(|d| d >= DIALECT_300 && d != DIALECT_WILDCARD_INTERNAL)
    }

    pub fn signing_required_by_server(&self) -> bool {
        self.server.cfg.signing == Setting::Required
    }

    pub fn dialect_or_202(&self) -> u16 {
        self.dialect.unwrap_or(DIALECT_202)
    }

    pub fn is_311(&self) -> bool {
        self.dialect == Some(DIALECT_311)
    }
}

/// What a related request after this one inherits (MS-SMB2 3.3.5.2.7.2):
/// the FileId (a CREATE's new one, else the one this request used, else the
/// related chain's) and the error it fails with: a failed CREATE's status, or
/// INVALID_PARAMETER after a failed session lookup. An unrelated request
/// starts the chain state afresh. `resp` is this response, header included.
fn chain_state(
    cmd: Command,
    status: NtStatus,
    session_failed: bool,
    related: bool,
    resp: &[u8],
    ctx: &Ctx<'_>,
    prev_sticky: Option<NtStatus>,
) -> (Option<FileId>, NtStatus) {
    if session_failed {
        return (None, NtStatus::INVALID_PARAMETER);
    }
    if cmd == Command::Create {
        // A warning-class failure (STOPPED_ON_SYMLINK, EA_LIST_INCONSISTENT)
        // opens nothing either.
        if status != NtStatus::SUCCESS {
            return (None, status);
        }
        let id = resp.get(HEADER_LEN + 64..HEADER_LEN + 80).and_then(|b| b.try_into().ok());
        return (id, NtStatus::SUCCESS);
    }
    let file = ctx.used_file.get().or(ctx.compound_file);
    let sticky = if related { prev_sticky.unwrap_or(NtStatus::SUCCESS) } else { NtStatus::SUCCESS };
    (file, sticky)
}

/// Samba's FSCTL_SMBTORTURE (0x83840000) | FSCTL_ACCESS_WRITE | 0x20 |
/// METHOD_NEITHER: pad every later READ response body on the connection by 8.
pub const FSCTL_SMBTORTURE_GLOBAL_READ_RESPONSE_BODY_PADDING8: u32 = 0x8384_8023;
/// Samba's FSCTL_SMBTORTURE | FSCTL_ACCESS_WRITE | 0x00 | METHOD_NEITHER:
/// from now on nothing sent on the connection counts as acknowledged (as
/// Samba's `ack.force_unacked_timeout`), so breaks avoid it: smbtorture's
/// stand-in for a channel whose network it blocks (torture/smb2/block.c).
/// Sent with no session, tree or open, as Samba takes it.
pub const FSCTL_SMBTORTURE_FORCE_UNACKED_TIMEOUT: u32 = 0x8384_8003;

/// Internal marker for "SMB1 upgraded, waiting for the SMB2 NEGOTIATE".
pub const DIALECT_WILDCARD_INTERNAL: u16 = crate::config::DIALECT_WILDCARD;

/// Whether a SESSION_SETUP response (header + body) says SMB2_SESSION_FLAG_IS_GUEST
/// or SMB2_SESSION_FLAG_IS_NULL; those sessions have no key to sign with.
fn guest_or_null_session_setup(resp: &[u8]) -> bool {
    let flags = resp.get(HEADER_LEN + 2..HEADER_LEN + 4).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    flags & 0x0003 != 0
}

/// Signs one response in place with a session's or a channel's key.
pub fn sign_with_key(key: &SigningKey, msg: &mut [u8]) {
    if let Some(signer) = key.signer() {
        if let Err(e) = signer.sign(msg) {
            warn!("cannot sign a response: {e}");
        }
    }
}

/// Where the FileId is in the body of requests that name an open (MS-SMB2 2.2).
fn file_id_offset(cmd: Command) -> Option<usize> {
    Some(match cmd {
        Command::Close | Command::Flush | Command::Lock | Command::Ioctl | Command::QueryDirectory | Command::ChangeNotify | Command::OplockBreak => 8,
        Command::Read | Command::Write | Command::SetInfo => 16,
        Command::QueryInfo => 24,
        _ => return None,
    })
}

/// The volatile id of the open a request names at body offset `off` (the
/// related-compound FileId resolved), if the session has it.
fn request_open(ctx: &Ctx<'_>, off: usize) -> Option<u64> {
    let raw: [u8; 16] = ctx.msg.get(HEADER_LEN + off..HEADER_LEN + off + 16)?.try_into().ok()?;
    let id = if raw == [0xFF; 16] && ctx.hdr.is_related() { ctx.compound_file? } else { raw };
    let vol = u64::from_le_bytes(id[8..16].try_into().ok()?);
    ctx.session.as_ref()?.open(vol).map(|o| o.volatile_id)
}

/// Encrypts a finished response chain in place: the TRANSFORM header goes
/// into the headroom just before the chain.
/// Signs one response in place; `Signer::sign` also sets SMB2_FLAGS_SIGNED.
pub fn sign_out(keys: &crate::objects::SessionKeys, msg: &mut [u8]) {
    if let Some(signer) = keys.signer.as_ref() {
        if let Err(e) = signer.sign(msg) {
            warn!("cannot sign a response: {e}");
        }
    }
}

pub fn seal_out(keys: &crate::objects::SessionKeys, session_id: u64, out: &mut OutBuf) -> Result<(), String> {
    let sealer = keys.sealer.as_ref().ok_or("session has no encryption key")?;
    let at = out.start.checked_sub(TRANSFORM_ROOM).ok_or("no headroom for the TRANSFORM header")?;
    sealer.seal(session_id, &mut out.buf[at..]).map_err(|e| e.to_string())?;
    out.start = at;
    Ok(())
}


/// Turns the current request into an async operation: the caller returns
/// `Err(NtStatus::PENDING)` and later calls `finish` on what this returns.
pub fn go_async(conn: &mut Connection, ctx: &mut Ctx<'_>) -> Result<crate::asyncop::Pending, NtStatus> {
    // Requests are handled one at a time; what can be outstanding are the
    // async ones, bounded per connection (`max async requests per
    // connection`). Windows answers too many outstanding requests with
    // INSUFFICIENT_RESOURCES too (clients retry on it).
    // The same for all connections together (`max async requests`).
    let l = &conn.server.cfg.limits;
    if let Err(cap) = conn.asyncs.admit(l.max_async_per_connection, l.max_async) {
        warn!(peer = %conn.peer, "request refused: {cap} reached");
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    // Only the last request of a compound may go async; Windows answers one
    // in the middle with INTERNAL_ERROR (MS-SMB2 <162>) and goes on with the rest.
    if ctx.hdr.next_command != 0 {
        return Err(NtStatus::INTERNAL_ERROR);
    }
    let session = ctx.session()?.clone();
    let p = crate::asyncop::Pending::new(&conn.asyncs, conn.sink.clone(), session, ctx.hdr, ctx.encrypted);
    ctx.async_id = Some(p.async_id);
    conn.interims.push(p.async_id);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(hdr: &'a Header, compound_file: Option<FileId>) -> Ctx<'a> {
        Ctx { hdr, msg: &[], session: None, tree: None, compound_file, encrypted: false, async_id: None, warning: None, used_file: Default::default() }
    }

    #[test]
    fn compound_chain_state() {
        let hdr = Header::default();
        let mut resp = vec![0u8; HEADER_LEN + 89];
        resp[HEADER_LEN + 64..HEADER_LEN + 80].copy_from_slice(&[7; 16]);
        let c = ctx(&hdr, None);
        // A CREATE hands its FileId on; a failed one hands on its error.
        assert_eq!(chain_state(Command::Create, NtStatus::SUCCESS, false, false, &resp, &c, None), (Some([7; 16]), NtStatus::SUCCESS));
        assert_eq!(chain_state(Command::Create, NtStatus::ACCESS_DENIED, false, false, &resp, &c, None), (None, NtStatus::ACCESS_DENIED));
        // So does one failed with a warning-class status (a bad ExtA list).
        assert_eq!(chain_state(Command::Create, NtStatus::EA_LIST_INCONSISTENT, false, false, &resp, &c, None), (None, NtStatus::EA_LIST_INCONSISTENT));
        // A failed related WRITE does not fail the READ after it; a failed CREATE does.
        let c = ctx(&hdr, Some([7; 16]));
        assert_eq!(chain_state(Command::Write, NtStatus::ACCESS_DENIED, false, true, &resp, &c, Some(NtStatus::SUCCESS)), (Some([7; 16]), NtStatus::SUCCESS));
        assert_eq!(chain_state(Command::Ioctl, NtStatus::ACCESS_DENIED, false, true, &resp, &c, Some(NtStatus::ACCESS_DENIED)).1, NtStatus::ACCESS_DENIED);
        // A failed session lookup makes the related request after it invalid.
        assert_eq!(chain_state(Command::Close, NtStatus::USER_SESSION_DELETED, true, false, &resp, &c, None), (None, NtStatus::INVALID_PARAMETER));
        // An unrelated request starts afresh, with the FileId it used.
        let c = ctx(&hdr, None);
        c.used_file.set(Some([9; 16]));
        assert_eq!(chain_state(Command::Read, NtStatus::SUCCESS, false, false, &resp, &c, Some(NtStatus::ACCESS_DENIED)), (Some([9; 16]), NtStatus::SUCCESS));
    }
}
