//! Asynchronous operations (MS-SMB2 3.3.4.2, 3.3.5.16): a request that cannot
//! finish now (a blocking LOCK, a CHANGE_NOTIFY) gets an interim
//! STATUS_PENDING response carrying an AsyncId, and its final response is
//! sent later through the connection's sink, signed or encrypted as the
//! session requires. CANCEL, a CLOSE of the handle, or the end of the
//! connection ends a pending operation.
//!
//! No operation holds a thread while it waits. What it waits on tells it when
//! to go on: CHANGE_NOTIFY's one inotify descriptor (for all watched handles,
//! handlers/notify.rs) is registered with the process's one [`Reactor`]
//! thread (epoll), which hands each change to the handles it concerns and
//! answers their waiting requests. An operation may register a stop hook ([`Pending::on_stop`]): a
//! CANCEL or the end of the connection calls it on the thread that asks, so
//! the operation ends at once, and [`AsyncTable::disconnect_all`] returns only
//! once every operation of the connection has finished and released what it
//! held.

use crate::objects::{lock, Session};
use crate::transport::{MessageSink, OutBuf};
use crate::wire::header::{Header, FLAG_ASYNC, HEADER_LEN};
use crate::wire::messages::error_body;
use crate::wire::status::NtStatus;
use rustix::event::epoll;
use rustix::fd::{BorrowedFd, OwnedFd};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Duration;
use tracing::{debug, warn};

/// Why a pending operation must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Cancelled,
    Disconnected,
}

#[derive(Default)]
pub struct StopFlag {
    cancelled: AtomicBool,
    disconnected: AtomicBool,
}

impl StopFlag {
    pub fn get(&self) -> Option<Stop> {
        if self.disconnected.load(Ordering::Acquire) {
            Some(Stop::Disconnected)
        } else if self.cancelled.load(Ordering::Acquire) {
            Some(Stop::Cancelled)
        } else {
            None
        }
    }

    fn set(&self, why: Stop) {
        match why {
            Stop::Cancelled => self.cancelled.store(true, Ordering::Release),
            Stop::Disconnected => self.disconnected.store(true, Ordering::Release),
        }
    }
}

/// What an operation does when it must stop (called without any table lock held).
pub type StopHook = Arc<dyn Fn(Stop) + Send + Sync>;

struct Entry {
    message_id: u64,
    /// The request's CreditCharge (credits in use until the final response).
    charge: u16,
    session_id: u64,
    stop: Arc<StopFlag>,
    hook: Option<StopHook>,
}

/// State shared by every connection of a server: the server-wide count of
/// pending operations (`max async requests`) and the CHANGE_NOTIFY watches
/// (watched handles, each with its change buffer and inotify watch
/// descriptors) each session holds (`max change notify watches per session`).
#[derive(Default)]
pub struct Shared {
    pending: AtomicUsize,
    watches: Mutex<HashMap<u64, usize>>,
}

impl Shared {
    /// Pending async operations on all connections.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes one of session `session`'s watches if it has fewer than `max`
    /// (0 = no cap); the slot gives it back when dropped.
    pub fn take_watch(self: &Arc<Self>, session: u64, max: usize) -> Option<WatchSlot> {
        let mut w = lock(&self.watches);
        let n = w.entry(session).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(WatchSlot { shared: self.clone(), session })
    }

    /// Watches of all sessions.
    pub fn watches_total(&self) -> usize {
        lock(&self.watches).values().sum()
    }

    /// Watches session `session` holds.
    pub fn watches(&self, session: u64) -> usize {
        lock(&self.watches).get(&session).copied().unwrap_or(0)
    }
}

/// One CHANGE_NOTIFY watch in its session's count.
pub struct WatchSlot {
    shared: Arc<Shared>,
    session: u64,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = lock(&self.shared.watches);
        if let Some(n) = w.get_mut(&self.session) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                w.remove(&self.session);
            }
        }
    }
}

/// The connection's table of pending async operations.
pub struct AsyncTable {
    ops: Mutex<HashMap<u64, Entry>>,
    /// Signalled whenever an operation leaves the table.
    gone: Condvar,
    next: AtomicU64,
    /// The connection's id: a final response is signed with the key of the
    /// session's channel on this connection (multichannel).
    conn_id: AtomicU64,
    shared: Arc<Shared>,
    /// Threads of operations started with [`spawn`], joined at disconnect.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Operations whose interim STATUS_PENDING has not gone out yet, with
    /// the final response when it is ready before that: it is held back
    /// until [`AsyncTable::interims_sent`], so a client never sees the final
    /// response of a request before its interim one.
    interims: Mutex<HashMap<u64, Option<(OutBuf, Arc<dyn MessageSink>)>>>,
}

impl AsyncTable {
    /// A table counted on its own (tests, tools).
    pub fn new() -> Arc<AsyncTable> {
        AsyncTable::for_server(Arc::new(Shared::default()))
    }

    /// A connection's table, counted in its server's `shared` state.
    pub fn for_server(shared: Arc<Shared>) -> Arc<AsyncTable> {
        Arc::new(AsyncTable { ops: Mutex::new(HashMap::new()), gone: Condvar::new(), next: AtomicU64::new(1), conn_id: AtomicU64::new(0), shared, threads: Mutex::new(Vec::new()), interims: Mutex::new(HashMap::new()) })
    }

    /// Names the connection this table belongs to (see `conn_id`).
    pub fn set_conn_id(&self, id: u64) {
        self.conn_id.store(id, Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        lock(&self.ops).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The credit charge of the pending operations (0 counts as 1): credits
    /// in use until their final responses.
    pub fn credit_charge(&self) -> u64 {
        lock(&self.ops).values().map(|e| u64::from(e.charge.max(1))).sum()
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether one more operation may go async: under `max_per_connection`
    /// on this connection and under `max_all` on the server (0 = no cap).
    /// Over either, the name of the cap (Windows answers INSUFFICIENT_RESOURCES).
    pub fn admit(&self, max_per_connection: usize, max_all: usize) -> Result<(), &'static str> {
        if max_per_connection != 0 && self.len() >= max_per_connection {
            return Err("max async requests per connection");
        }
        // Checked here and counted when the operation registers, on the same
        // thread right after: connections racing past the check can overshoot
        // by at most one operation each.
        if max_all != 0 && self.shared.pending() >= max_all {
            return Err("max async requests");
        }
        Ok(())
    }

    fn register(&self, message_id: u64, session_id: u64, charge: u16) -> (u64, Arc<StopFlag>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(StopFlag::default());
        lock(&self.ops).insert(id, Entry { message_id, charge, session_id, stop: stop.clone(), hook: None });
        lock(&self.interims).insert(id, None);
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        (id, stop)
    }

    /// The connection has handed the responses of its last chain, with the
    /// interim responses of `ids`, to its transport: final responses held
    /// back for them go out now.
    pub fn interims_sent(&self, ids: &[u64]) {
        let ready: Vec<_> = {
            let mut m = lock(&self.interims);
            ids.iter().filter_map(|id| m.remove(id).flatten()).collect()
        };
        for (out, sink) in ready {
            sink.send_detached(out);
        }
    }

    /// Sends a final response, or holds it back while its interim one has
    /// not gone out.
    fn send_final(&self, id: u64, out: OutBuf, sink: &Arc<dyn MessageSink>) {
        {
            let mut m = lock(&self.interims);
            if let Some(slot) = m.get_mut(&id) {
                *slot = Some((out, sink.clone()));
                return;
            }
        }
        sink.clone().send_detached(out);
    }

    fn remove(&self, id: u64) {
        let removed = lock(&self.ops).remove(&id);
        if removed.is_some() {
            let _ = self.shared.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            self.gone.notify_all();
        }
    }

    /// [`Pending::on_stop`] for operation `id` (when its `Pending` has been
    /// handed on already). Nothing happens when `id` has ended.
    pub fn on_stop(&self, id: u64, hook: StopHook) {
        let stopped = {
            let mut ops = lock(&self.ops);
            let Some(e) = ops.get_mut(&id) else { return };
            e.hook = Some(hook.clone());
            e.stop.get()
        };
        if let Some(why) = stopped {
            hook(why);
        }
    }

    /// CANCEL: by AsyncId when the request is async, else by MessageId. The
    /// operation's stop hook runs now, on this thread.
    pub fn cancel(&self, hdr: &Header) -> bool {
        let hook = {
            let ops = lock(&self.ops);
            let found = if hdr.is_async() {
                ops.get(&hdr.async_id).filter(|e| e.session_id == hdr.session_id)
            } else {
                ops.values().find(|e| e.message_id == hdr.message_id && e.session_id == hdr.session_id)
            };
            let Some(e) = found else { return false };
            e.stop.set(Stop::Cancelled);
            e.hook.clone()
        };
        if let Some(h) = hook {
            h(Stop::Cancelled);
        }
        true
    }

    /// Ends everything (the connection is going away) and returns once every
    /// operation has finished and released what it held: stop hooks run on
    /// this thread, threads of [`spawn`] are joined.
    pub fn disconnect_all(&self) {
        let hooks: Vec<StopHook> = {
            let ops = lock(&self.ops);
            ops.values()
                .filter_map(|e| {
                    e.stop.set(Stop::Disconnected);
                    e.hook.clone()
                })
                .collect()
        };
        for h in hooks {
            h(Stop::Disconnected);
        }
        for t in std::mem::take(&mut *lock(&self.threads)) {
            if t.join().is_err() {
                warn!("an async operation's thread panicked");
            }
        }
        // An operation another thread is finishing right now (the reactor
        // sending a CHANGE_NOTIFY response) leaves the table when done. One
        // with no hook and no thread is ended only by whatever it waits on:
        // wait for it a bounded time, then leave it to end on its own.
        let mut ops = lock(&self.ops);
        let deadline = std::time::Instant::now() + DISCONNECT_WAIT;
        while !ops.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                warn!("{} async operations still pending after the connection ended", ops.len());
                break;
            }
            ops = self.gone.wait_timeout(ops, left).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// How long [`AsyncTable::disconnect_all`] waits for operations that have no
/// stop hook and no thread.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);

struct PendingInner {
    table: Arc<AsyncTable>,
    sink: Arc<dyn MessageSink>,
    session: Arc<Session>,
    request: Header,
    encrypt: bool,
    sign: bool,
}

/// Everything needed to send the final response of one async operation.
/// Dropped without [`Pending::finish`], it still leaves the table (nothing is sent).
pub struct Pending {
    pub async_id: u64,
    pub stop: Arc<StopFlag>,
    inner: Option<PendingInner>,
}

impl Pending {
    pub fn new(table: &Arc<AsyncTable>, sink: Arc<dyn MessageSink>, session: Arc<Session>, request: &Header, encrypted: bool) -> Pending {
        let (async_id, stop) = table.register(request.message_id, request.session_id, request.credit_charge);
        let encrypt = encrypted || *lock(&session.encrypt_data);
        let sign = !encrypt && (request.is_signed() || *lock(&session.signing_required));
        Pending { async_id, stop, inner: Some(PendingInner { table: table.clone(), sink, session, request: request.clone(), encrypt, sign }) }
    }

    /// Registers what ends this operation when it is cancelled or its
    /// connection ends; `hook` must find the operation and `finish` it (a
    /// cancelled one with STATUS_CANCELLED). When the operation was stopped
    /// already, `hook` is called now: call this with no lock held that
    /// `hook` takes.
    pub fn on_stop(&self, hook: StopHook) {
        if let Some(i) = &self.inner {
            i.table.on_stop(self.async_id, hook);
        }
    }

    /// Sends the final response (`body` is the command's response body, or
    /// an error body is written when `status` is an error) and unregisters.
    /// Nothing is sent once the connection has ended.
    pub fn finish(mut self, status: NtStatus, body: Option<&[u8]>) {
        let Some(i) = self.inner.take() else { return };
        if self.stop.get() != Some(Stop::Disconnected) {
            i.send(self.async_id, status, body);
        }
        let PendingInner { table, sink, session, .. } = i;
        drop((sink, session));
        table.remove(self.async_id);
    }
}

impl PendingInner {
    fn send(&self, async_id: u64, status: NtStatus, body: Option<&[u8]>) {
        let mut out = OutBuf::new(HEADER_LEN + body.map_or(9, |b| b.len()));
        let start = out.buf.len();
        let mut h = self.request.response(status);
        h.flags |= FLAG_ASYNC;
        h.async_id = async_id;
        h.credits = 0;
        h.write(&mut out.buf);
        match body {
            Some(b) if !status.is_error() => out.buf.extend_from_slice(b),
            _ => error_body(&mut out.buf, &[]),
        }
        let keys = self.session.keys();
        if let Some(k) = &keys {
            if self.encrypt {
                if let Err(e) = crate::conn::seal_out(k, self.session.id, &mut out) {
                    debug!("cannot encrypt an async response: {e}");
                    return;
                }
            } else if self.sign {
                let key = self.session.signer_on(self.table.conn_id.load(Ordering::Relaxed));
                if let (Some(key), Some(m)) = (key, out.buf.get_mut(start..)) {
                    crate::conn::sign_with_key(&key, m);
                }
            }
        }
        self.table.send_final(async_id, out, &self.sink);
    }
}

/// An operation that ends without `finish` still gives its place in the
/// table back (what `max async requests per connection` counts), after
/// releasing the rest of what it held.
impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(PendingInner { table, sink, session, .. }) = self.inner.take() {
            drop((sink, session));
            table.remove(self.async_id);
        }
    }
}

/// Runs `wait` on a thread of its own; it returns the final status and body.
/// The connection joins the thread when it ends (`wait` must watch
/// `p.stop`). Kept for blocking LOCKs until they wait on an event.
pub fn spawn<F>(p: Pending, open: Arc<crate::objects::Open>, wait: F)
where
    F: FnOnce(&Pending, &crate::objects::Open) -> (NtStatus, Option<Vec<u8>>) + Send + 'static,
{
    let Some(table) = p.inner.as_ref().map(|i| i.table.clone()) else { return };
    let r = std::thread::Builder::new().name("smb-async".into()).stack_size(256 * 1024).spawn(move || {
        let (st, body) = wait(&p, &open);
        drop(open);
        p.finish(st, body.as_deref());
    });
    match r {
        Ok(t) => {
            let mut threads = lock(&table.threads);
            threads.retain(|t| !t.is_finished());
            threads.push(t);
        }
        Err(e) => warn!("cannot start an async operation: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// The reactor.

/// Something the reactor runs when its descriptor becomes readable.
pub trait Ready: Send + Sync {
    /// Called on the reactor thread once per arming (registrations are
    /// one-shot: re-arm with [`Reactor::arm`] to hear of the next event).
    fn ready(&self);
}

struct Registration {
    target: Weak<dyn Ready>,
    /// Held by the reactor while it runs `target`; [`Reactor::forget`] takes
    /// it (and sets it) to wait until the reactor is done with the target.
    forgotten: Mutex<bool>,
}

/// One thread per process waiting, with epoll, on the descriptors of every
/// pending operation that waits on one (the process's one inotify
/// descriptor for CHANGE_NOTIFY). Registrations are one-shot (EPOLLONESHOT):
/// an event runs its target once, and the target re-arms when it wants the
/// next one (the inotify hub always does: its queue is shared by every
/// watched handle, so it is read whether or not a request waits).
///
/// Cancel, close and disconnect need no wake-up of this thread: they end the
/// operation themselves, on the thread that asks, and [`Reactor::forget`]
/// waits out a run of the target in progress, so once it returns the
/// reactor holds nothing of it.
pub struct Reactor {
    epoll: OwnedFd,
    regs: Mutex<HashMap<u64, Arc<Registration>>>,
    next: AtomicU64,
}

/// The process's reactor, started on first use.
pub fn reactor() -> Result<&'static Reactor, NtStatus> {
    static R: OnceLock<Option<&'static Reactor>> = OnceLock::new();
    let r = R.get_or_init(|| match Reactor::start() {
        Ok(r) => Some(r),
        Err(e) => {
            warn!("cannot start the async reactor: {e}");
            None
        }
    });
    r.ok_or(NtStatus::INSUFFICIENT_RESOURCES)
}

impl Reactor {
    fn start() -> std::io::Result<&'static Reactor> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let r: &'static Reactor = Box::leak(Box::new(Reactor { epoll, regs: Mutex::new(HashMap::new()), next: AtomicU64::new(1) }));
        std::thread::Builder::new().name("smb-reactor".into()).stack_size(512 * 1024).spawn(move || r.run())?;
        Ok(r)
    }

    fn run(&self) {
        // Started lazily, perhaps within a user's request: run as the server.
        crate::identity::reset_thread();
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        loop {
            events.clear();
            match epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    // Only a bad epoll descriptor fails here; do not spin.
                    warn!("async reactor: epoll_wait failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            }
            for ev in events.iter() {
                let token = ev.data.u64();
                let Some(reg) = lock(&self.regs).get(&token).cloned() else { continue };
                let busy = lock(&reg.forgotten);
                if *busy {
                    // Forgotten while this event was on its way.
                    continue;
                }
                if let Some(t) = reg.target.upgrade() {
                    t.ready();
                    // Dropped while `forgotten` is held, so `forget` also waits for this.
                    drop(t);
                }
                drop(busy);
            }
        }
    }

    /// Adds `fd` (not armed yet) for `target`; returns its token.
    pub fn add(&self, fd: BorrowedFd<'_>, target: Weak<dyn Ready>) -> Result<u64, NtStatus> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.regs).insert(token, Arc::new(Registration { target, forgotten: Mutex::new(false) }));
        if let Err(e) = epoll::add(&self.epoll, fd, epoll::EventData::new_u64(token), epoll::EventFlags::ONESHOT) {
            lock(&self.regs).remove(&token);
            return Err(NtStatus::from_errno(e));
        }
        Ok(token)
    }

    /// Arms `fd` (registered as `token`) for one readable event.
    pub fn arm(&self, fd: BorrowedFd<'_>, token: u64) {
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ONESHOT;
        if let Err(e) = epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(token), flags) {
            warn!("async reactor: cannot arm a descriptor: {e}");
        }
    }

    /// Removes `token` and waits until the reactor is not running its target;
    /// it will not run it again. Not to be called from the target's `ready`.
    pub fn forget(&self, fd: Option<BorrowedFd<'_>>, token: u64) {
        let reg = lock(&self.regs).remove(&token);
        if let Some(fd) = fd {
            let _ = epoll::delete(&self.epoll, fd);
        }
        if let Some(reg) = reg {
            *lock(&reg.forgotten) = true;
        }
    }

    /// Removes `token` without waiting (for a target being dropped, possibly
    /// by the reactor itself; closing its descriptor takes it out of epoll).
    pub fn remove(&self, token: u64) {
        lock(&self.regs).remove(&token);
    }

    /// Registrations (for tests).
    pub fn registrations(&self) -> usize {
        lock(&self.regs).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::status::NtStatus;

    /// Records what is sent (the message's status field).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<u32>>);

    impl MessageSink for Recorder {
        fn send(&self, msg: OutBuf) -> std::io::Result<()> {
            let st = msg.buf.get(msg.start + 8..msg.start + 12).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            lock(&self.0).push(st);
            Ok(())
        }
        fn shutdown(&self) {}
        fn peer(&self) -> String {
            "test".into()
        }
    }

    /// A final response ready before its interim STATUS_PENDING has been
    /// sent is held back until the connection says the interim is out.
    #[test]
    fn final_response_waits_for_its_interim() {
        let table = AsyncTable::new();
        let rec = Arc::new(Recorder::default());
        let sink: Arc<dyn MessageSink> = rec.clone();
        let session = Arc::new(Session::new(7, 0x0311));
        let hdr = Header::default();
        let p = Pending::new(&table, sink, session, &hdr, false);
        let id = p.async_id;
        p.finish(NtStatus::SUCCESS, Some(&[0u8; 8]));
        assert!(lock(&rec.0).is_empty(), "the final response went out before its interim");
        table.interims_sent(&[id]);
        assert_eq!(*lock(&rec.0), vec![0], "the held-back final response was not sent");
        // An operation finished after its interim went out is sent at once.
        let p = Pending::new(&table, rec.clone(), Arc::new(Session::new(8, 0x0311)), &hdr, false);
        table.interims_sent(&[p.async_id]);
        p.finish(NtStatus::CANCELLED, None);
        assert_eq!(lock(&rec.0).len(), 2);
    }
}
