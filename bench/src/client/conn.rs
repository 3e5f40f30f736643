//! One connection (channel) of the client with many requests in flight.
//!
//! Submitting a request takes credits (waiting, with a deadline, until the server has granted
//! enough), allocates message ids, records where the response goes, then builds the header,
//! signs or seals the message and sends it. A receiver thread per connection reads responses,
//! opens or verifies them, adds the credits they grant and routes each one by MessageId to its
//! waiter: a [`Pending`] (one request) or a [`CompletionQueue`] shared by many (the bench).
//! Interim STATUS_PENDING answers only add credits. When the transport fails, every waiter
//! gets the error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smbdirect_server::crypto::{Opener, Sealer, Signer, TRANSFORM_HEADER_LEN};
use smbdirect_server::wire::header::{Header, FLAG_ASYNC, FLAG_SERVER_TO_REDIR, FLAG_SIGNED, HEADER_LEN};

use super::channel::Channel;
use super::error::{ClientError, NtStatusName};
use super::msg::{cmd, STATUS_PENDING};

/// Payload bytes covered by one credit (MS-SMB2 3.1.5.2).
pub const CREDIT_UNIT: usize = 65536;

/// Credit charge of a request moving `payload` bytes.
pub fn credit_charge(payload: usize) -> u16 {
    if payload == 0 {
        1
    } else {
        u16::try_from((payload - 1) / CREDIT_UNIT + 1).unwrap_or(u16::MAX)
    }
}

/// How this channel protects messages (set after SESSION_SETUP).
#[derive(Default, Clone)]
pub struct Security {
    pub session_id: u64,
    /// This channel's signing key.
    pub signer: Option<Arc<Signer>>,
    /// Sign every request of the session (signing required or chosen).
    pub sign: bool,
    pub sealer: Option<Arc<Sealer>>,
    pub opener: Option<Arc<Opener>>,
    /// Encrypt every request of the session (SESSION_FLAG_ENCRYPT_DATA or --encrypt).
    pub encrypt_all: bool,
}

/// One request to send.
pub struct Request {
    pub command: u16,
    /// The body after the 64-byte header.
    pub body: Vec<u8>,
    pub tree_id: u32,
    /// Payload bytes the request moves (WRITE data, READ length) for the credit charge.
    pub payload: usize,
    /// Seal even if the session does not encrypt everything (an encrypted share).
    pub encrypt: bool,
    /// Sign with this key instead of the channel's (session binding).
    pub sign_with: Option<Arc<Signer>>,
    /// Never sign or seal (NEGOTIATE, the first SESSION_SETUP legs).
    pub plain: bool,
    /// Sign even when the session does not sign everything (3.1.1 TREE_CONNECT).
    pub force_sign: bool,
    /// Keep a copy of the message as sent (the preauth hash needs it).
    pub keep_sent: bool,
    /// Ask for this many credits (at least the charge).
    pub credits_wanted: u16,
    /// Overrides the session id of the channel's security (SESSION_SETUP legs).
    pub session_id: Option<u64>,
}

impl Request {
    pub fn new(command: u16, body: Vec<u8>) -> Self {
        Request { command, body, tree_id: 0, payload: 0, encrypt: false, sign_with: None, plain: false, force_sign: false, keep_sent: false, credits_wanted: 64, session_id: None }
    }
}

/// A response as received (already decrypted), with its parsed header.
#[derive(Debug)]
pub struct Response {
    pub hdr: Header,
    pub msg: Vec<u8>,
    pub received: Instant,
    pub was_encrypted: bool,
}

impl Response {
    pub fn status(&self) -> u32 {
        self.hdr.status
    }
    /// Ok if the status is one of `ok`, else [`ClientError::Status`].
    pub fn expect(self, ok: &[u32]) -> Result<Response, ClientError> {
        if ok.contains(&self.hdr.status) {
            Ok(self)
        } else {
            Err(ClientError::Status { command: cmd::name(self.hdr.command), status: NtStatusName(self.hdr.status) })
        }
    }
}

type Outcome = Result<Response, ClientError>;

enum Sink {
    One(SyncSender<Outcome>),
    Queue(Sender<(u64, Outcome)>, u64),
}

impl Sink {
    fn deliver(self, o: Outcome) {
        match self {
            Sink::One(s) => {
                let _ = s.try_send(o);
            }
            Sink::Queue(s, tag) => {
                let _ = s.send((tag, o));
            }
        }
    }
}

/// The error for a request with no answer within `after`: the channel's own account when
/// it never got the request out (SMB Direct send credits the server does not grant), else
/// a plain timeout.
pub fn timed_out(chan: &dyn Channel, what: &'static str, after: Duration) -> ClientError {
    match chan.stalled() {
        Some(why) => ClientError::Starved(format!("{what} not sent within {after:?}: {why}")),
        None => ClientError::Timeout { what, after },
    }
}

/// Completions of many requests, in the order they arrive; each carries the caller's tag.
pub struct CompletionQueue {
    tx: Sender<(u64, Outcome)>,
    rx: Receiver<(u64, Outcome)>,
}

impl Default for CompletionQueue {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        CompletionQueue { tx, rx }
    }
}

impl CompletionQueue {
    pub fn new() -> Self {
        Self::default()
    }
    /// Waits up to `timeout` for the next completion.
    pub fn next(&self, timeout: Duration) -> Result<(u64, Outcome), ClientError> {
        self.rx.recv_timeout(timeout).map_err(|_| ClientError::Timeout { what: "a response", after: timeout })
    }
}

/// One submitted request waiting for its response.
pub struct Pending {
    pub message_id: u64,
    pub command: u16,
    /// The message as sent, if the request asked for it.
    pub sent: Option<Vec<u8>>,
    rx: Receiver<Outcome>,
    conn: Arc<Inner>,
    timeout: Duration,
}

impl Pending {
    /// Waits for the response (the connection's timeout at most).
    pub fn wait(self) -> Outcome {
        match self.rx.recv_timeout(self.timeout) {
            Ok(o) => o,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                lock(&self.conn.st).pending.remove(&self.message_id);
                Err(timed_out(&*self.conn.chan, cmd::name(self.command), self.timeout))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(ClientError::Disconnected("the receiver stopped".into())),
        }
    }
}

struct State {
    next_id: u64,
    credits: u32,
    granted_total: u64,
    pending: HashMap<u64, (u16, Sink)>,
    dead: Option<String>,
}

struct Inner {
    chan: Arc<dyn Channel>,
    st: Mutex<State>,
    cv: Condvar,
    sec: Mutex<Security>,
    stop: AtomicBool,
    timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection and its receiver thread.
pub struct Conn {
    inner: Arc<Inner>,
    rx_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Conn {
    /// Starts the receiver; `timeout` bounds every wait (credits, responses).
    pub fn new(chan: Arc<dyn Channel>, timeout: Duration) -> Arc<Conn> {
        let inner = Arc::new(Inner {
            chan,
            st: Mutex::new(State { next_id: 0, credits: 1, granted_total: 1, pending: HashMap::new(), dead: None }),
            cv: Condvar::new(),
            sec: Mutex::new(Security::default()),
            stop: AtomicBool::new(false),
            timeout,
        });
        let i2 = inner.clone();
        let h = std::thread::Builder::new().name("smb-client-rx".into()).spawn(move || receiver(i2)).ok();
        if h.is_none() {
            lock(&inner.st).dead = Some("could not start the receiver thread".into());
        }
        Arc::new(Conn { inner, rx_thread: Mutex::new(h) })
    }

    pub fn channel(&self) -> &Arc<dyn Channel> {
        &self.inner.chan
    }
    /// [`timed_out`] for this connection's channel.
    pub fn timed_out(&self, what: &'static str, after: Duration) -> ClientError {
        timed_out(&*self.inner.chan, what, after)
    }
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }
    pub fn set_security(&self, s: Security) {
        *lock(&self.inner.sec) = s;
    }
    pub fn security(&self) -> Security {
        lock(&self.inner.sec).clone()
    }
    /// Credits available now and granted in all.
    pub fn credits(&self) -> (u32, u64) {
        let s = lock(&self.inner.st);
        (s.credits, s.granted_total)
    }
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.st).pending.len()
    }

    /// Sends a request; its response arrives through the returned [`Pending`].
    pub fn submit(&self, req: Request) -> Result<Pending, ClientError> {
        let (tx, rx) = mpsc::sync_channel(1);
        let command = req.command;
        let (message_id, sent) = self.send(req, Sink::One(tx))?;
        Ok(Pending { message_id, command, sent, rx, conn: self.inner.clone(), timeout: self.inner.timeout })
    }

    /// Sends a request whose response goes to `q` with `tag`. Returns the message id.
    pub fn submit_to(&self, req: Request, q: &CompletionQueue, tag: u64) -> Result<u64, ClientError> {
        Ok(self.send(req, Sink::Queue(q.tx.clone(), tag))?.0)
    }

    fn send(&self, req: Request, sink: Sink) -> Result<(u64, Option<Vec<u8>>), ClientError> {
        let inner = &self.inner;
        let charge = credit_charge(req.payload);
        let deadline = Instant::now() + inner.timeout;
        let message_id = {
            let mut st = lock(&inner.st);
            loop {
                if let Some(d) = &st.dead {
                    return Err(ClientError::Disconnected(d.clone()));
                }
                if st.credits >= u32::from(charge) {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(ClientError::Starved(if st.credits == 0 {
                        format!("no SMB2 credit left and the server granted none within {:?}", inner.timeout)
                    } else {
                        format!(
                            "a {} needs {charge} SMB2 credits, the server granted only {} and no more within {:?}",
                            cmd::name(req.command),
                            st.credits,
                            inner.timeout
                        )
                    }));
                }
                st = inner.cv.wait_timeout(st, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
            }
            st.credits -= u32::from(charge);
            let id = st.next_id;
            st.next_id += u64::from(charge);
            st.pending.insert(id, (req.command, sink));
            id
        };
        let sec = lock(&inner.sec).clone();
        let r = self.build_and_send(&req, &sec, message_id, charge);
        if let Err(e) = &r {
            let mut st = lock(&inner.st);
            st.pending.remove(&message_id);
            st.dead.get_or_insert_with(|| e.to_string());
        }
        r.map(|sent| (message_id, sent))
    }

    fn build_and_send(&self, req: &Request, sec: &Security, message_id: u64, charge: u16) -> Result<Option<Vec<u8>>, ClientError> {
        let session_id = req.session_id.unwrap_or(sec.session_id);
        let seal = !req.plain && session_id != 0 && sec.sealer.is_some() && (sec.encrypt_all || req.encrypt)
            && req.command != cmd::NEGOTIATE && req.command != cmd::SESSION_SETUP;
        let off = if seal { TRANSFORM_HEADER_LEN } else { 0 };
        let mut buf = Vec::with_capacity(off + HEADER_LEN + req.body.len());
        buf.resize(off, 0);
        let hdr = Header {
            credit_charge: charge,
            status: 0,
            command: req.command,
            credits: req.credits_wanted.max(charge),
            flags: 0,
            next_command: 0,
            message_id,
            async_id: (u64::from(req.tree_id) << 32) | 0xFEFF,
            session_id,
            signature: [0; 16],
        };
        hdr.write(&mut buf);
        buf.extend_from_slice(&req.body);
        if seal {
            if let Some(s) = &sec.sealer {
                s.seal(session_id, &mut buf)?;
            }
        } else if !req.plain {
            let signer = req.sign_with.as_ref().or(if (sec.sign || req.force_sign) && session_id != 0 { sec.signer.as_ref() } else { None });
            if let Some(s) = signer {
                s.sign(&mut buf)?;
            }
        }
        self.inner.chan.send(&buf, self.inner.timeout)?;
        Ok(if req.keep_sent { Some(buf) } else { None })
    }

    /// Stops the receiver and closes the transport.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.chan.close();
        if let Some(h) = lock(&self.rx_thread).take() {
            let _ = h.join();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.close();
    }
}

fn fail_all(inner: &Inner, why: String) {
    let drained: Vec<_> = {
        let mut st = lock(&inner.st);
        st.dead.get_or_insert(why.clone());
        st.pending.drain().collect()
    };
    inner.cv.notify_all();
    for (_, (_, sink)) in drained {
        sink.deliver(Err(ClientError::Disconnected(why.clone())));
    }
}

fn receiver(inner: Arc<Inner>) {
    let poll = Duration::from_millis(200);
    loop {
        if inner.stop.load(Ordering::SeqCst) {
            fail_all(&inner, "connection closed by the client".into());
            return;
        }
        let msg = match inner.chan.recv(poll) {
            Ok(m) => m,
            Err(super::channel::ChannelError::Timeout(_)) => continue,
            Err(e) => {
                let why = if inner.stop.load(Ordering::SeqCst) { "connection closed by the client".to_string() } else { format!("{} ({})", e, inner.chan.peer()) };
                fail_all(&inner, why);
                return;
            }
        };
        let received = Instant::now();
        if let Err(e) = handle_message(&inner, msg, received) {
            tracing::warn!("dropping the connection: {e}");
            fail_all(&inner, e.to_string());
            inner.chan.close();
            return;
        }
    }
}

/// Opens (if sealed), splits a compound chain, verifies and routes each response.
fn handle_message(inner: &Inner, mut msg: Vec<u8>, received: Instant) -> Result<(), ClientError> {
    let sec = lock(&inner.sec).clone();
    let mut was_encrypted = false;
    if msg.get(..4) == Some(&[0xFD, b'S', b'M', b'B'][..]) {
        let opener = sec.opener.as_ref().ok_or_else(|| ClientError::proto("encrypted message before the session has keys"))?;
        let (_sid, range) = opener.open(&mut msg)?;
        let len = range.len();
        msg.copy_within(range, 0);
        msg.truncate(len);
        was_encrypted = true;
    }
    let mut rest = msg;
    // A chain has at most as many messages as 64-byte headers fit: the loop is bounded.
    loop {
        let hdr = Header::parse(&rest)?;
        if hdr.flags & FLAG_SERVER_TO_REDIR == 0 {
            return Err(ClientError::proto("a request from the server"));
        }
        let next = hdr.next_command as usize;
        let tail = if next != 0 {
            if next < HEADER_LEN || next % 8 != 0 || next >= rest.len() {
                return Err(ClientError::proto(format!("bad NextCommand {next}")));
            }
            Some(rest.split_off(next))
        } else {
            None
        };
        route(inner, &sec, hdr, rest, received, was_encrypted)?;
        match tail {
            Some(t) => rest = t,
            None => return Ok(()),
        }
    }
}

fn route(inner: &Inner, sec: &Security, hdr: Header, mut msg: Vec<u8>, received: Instant, was_encrypted: bool) -> Result<(), ClientError> {
    let interim = hdr.flags & FLAG_ASYNC != 0 && hdr.status == STATUS_PENDING;
    if !was_encrypted && hdr.session_id != 0 && !interim {
        if hdr.flags & FLAG_SIGNED != 0 {
            // The last SESSION_SETUP answer is signed with a key the session code derives
            // after it arrives: that code checks it.
            if let Some(s) = &sec.signer {
                if hdr.command != cmd::SESSION_SETUP && !s.verify(&mut msg) {
                    return Err(ClientError::BadSignature(cmd::name(hdr.command)));
                }
            }
        } else if sec.sign && sec.signer.is_some() && hdr.command != cmd::SESSION_SETUP && hdr.status == 0 {
            return Err(ClientError::proto(format!("unsigned {} response on a signed session", cmd::name(hdr.command))));
        }
    }
    let sink = {
        let mut st = lock(&inner.st);
        let grant = u32::from(hdr.credits);
        st.credits = st.credits.saturating_add(grant);
        st.granted_total += u64::from(grant);
        if interim { None } else { st.pending.remove(&hdr.message_id) }
    };
    inner.cv.notify_all();
    if interim {
        return Ok(());
    }
    match sink {
        Some((command, sink)) => {
            if command != hdr.command {
                sink.deliver(Err(ClientError::proto(format!("answer to {} is a {}", cmd::name(command), cmd::name(hdr.command)))));
            } else {
                sink.deliver(Ok(Response { hdr, msg, received, was_encrypted }));
            }
            Ok(())
        }
        None => {
            // A response to a request that timed out, or an OPLOCK_BREAK notification.
            tracing::debug!(message_id = hdr.message_id, command = hdr.command, "response with no waiter");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::channel::{ChannelError, ChannelLimits};
    use smbdirect_server::wire::header::FLAG_SERVER_TO_REDIR;

    /// An in-memory channel: what the client sends goes to `sent`, what the test pushes
    /// into `to_client` is received.
    struct Mock {
        sent: Mutex<Sender<Vec<u8>>>,
        to_client: Mutex<Receiver<Option<Vec<u8>>>>,
        /// What [`Channel::stalled`] says (an SMB Direct channel without send credits).
        stalled: Mutex<Option<String>>,
    }

    impl Channel for Mock {
        fn send(&self, msg: &[u8], _t: Duration) -> Result<(), ChannelError> {
            lock(&self.sent).send(msg.to_vec()).map_err(|_| ChannelError::Closed)
        }
        fn recv(&self, t: Duration) -> Result<Vec<u8>, ChannelError> {
            match lock(&self.to_client).recv_timeout(t) {
                Ok(Some(m)) => Ok(m),
                Ok(None) => Err(ChannelError::Closed),
                Err(mpsc::RecvTimeoutError::Timeout) => Err(ChannelError::Timeout(t)),
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(ChannelError::Closed),
            }
        }
        fn is_rdma(&self) -> bool {
            false
        }
        fn limits(&self) -> ChannelLimits {
            ChannelLimits { max_send: 1 << 24, max_recv: 1 << 24, max_rdma: 0 }
        }
        fn stalled(&self) -> Option<String> {
            lock(&self.stalled).clone()
        }
        fn close(&self) {}
        fn peer(&self) -> String {
            "mock".into()
        }
    }

    type MockEnds = (Arc<Conn>, Receiver<Vec<u8>>, Sender<Option<Vec<u8>>>);

    fn mock(timeout: Duration) -> MockEnds {
        let (conn, sent, to_client, _) = mock_stalling(timeout);
        (conn, sent, to_client)
    }

    fn mock_stalling(timeout: Duration) -> (Arc<Conn>, Receiver<Vec<u8>>, Sender<Option<Vec<u8>>>, Arc<Mock>) {
        let (stx, srx) = mpsc::channel();
        let (ctx, crx) = mpsc::channel();
        let m = Arc::new(Mock { sent: Mutex::new(stx), to_client: Mutex::new(crx), stalled: Mutex::new(None) });
        let ch: Arc<dyn Channel> = m.clone();
        (Conn::new(ch, timeout), srx, ctx, m)
    }

    /// Too few credits: a server that grants one credit at a time cannot carry a 1 MiB
    /// READ (16 credits): the request fails within the timeout saying how many it needs
    /// and how many it has, instead of waiting for ever; smaller requests still go.
    #[test]
    fn too_few_credits_are_reported() {
        let (conn, sent, to_client) = mock(Duration::from_millis(300));
        let first = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
        to_client.send(Some(answer(&sent.recv().unwrap(), 1, 0))).unwrap();
        first.wait().unwrap();
        let big = Request { payload: 1 << 20, ..Request::new(cmd::READ, vec![0; 49]) };
        let t0 = Instant::now();
        let e = conn.submit(big).err().unwrap();
        let text = e.to_string();
        assert!(matches!(e, ClientError::Starved(_)) && text.contains("a READ needs 16 SMB2 credits, the server granted only 1"), "{text}");
        assert!(t0.elapsed() >= Duration::from_millis(250) && t0.elapsed() < Duration::from_secs(5));
        assert!(conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).is_ok());
    }

    /// A request the channel could not send (an SMB Direct channel whose send credits the
    /// server never renews) times out as credit starvation with the channel's account,
    /// not as a missing answer; with the channel not stalled it is a plain timeout.
    #[test]
    fn a_stalled_channel_is_reported_as_starvation() {
        let (conn, sent, _to_client, m) = mock_stalling(Duration::from_millis(200));
        *lock(&m.stalled) = Some("SMB Direct send credits exhausted: 70 bytes wait".into());
        let p = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
        let _ = sent.recv().unwrap();
        let e = p.wait().err().unwrap();
        assert!(matches!(e, ClientError::Starved(_)), "{e}");
        assert_eq!(e.to_string(), "credit starvation: ECHO not sent within 200ms: SMB Direct send credits exhausted: 70 bytes wait");
        *lock(&m.stalled) = None;
        let (conn2, _s, _t, _m) = mock_stalling(Duration::from_millis(100));
        let p = conn2.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
        assert!(matches!(p.wait(), Err(ClientError::Timeout { .. })));
        let q = CompletionQueue::new();
        assert!(matches!(q.next(Duration::from_millis(10)).map_err(|_| conn.timed_out("READ", Duration::from_millis(10))), Err(ClientError::Timeout { .. })));
    }

    fn answer(req: &[u8], credits: u16, payload: u8) -> Vec<u8> {
        let h = Header::parse(req).unwrap();
        let mut m = Vec::new();
        Header { credits, flags: FLAG_SERVER_TO_REDIR, ..h }.write(&mut m);
        m.extend_from_slice(&[payload; 4]);
        m
    }

    /// Requests in flight are matched to their answers by MessageId whatever the order,
    /// credits granted by answers are tracked, a request beyond the credits waits and
    /// then fails with a clear error, and a dropped transport fails every waiter.
    #[test]
    fn routes_out_of_order_tracks_credits_and_fails_cleanly() {
        let (conn, sent, to_client) = mock(Duration::from_millis(300));
        let first = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
        to_client.send(Some(answer(&sent.recv().unwrap(), 3, 0))).unwrap();
        assert_eq!(first.wait().unwrap().msg[64], 0);
        assert_eq!(conn.credits(), (3, 4));
        let p: Vec<Pending> = (0..3).map(|_| conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap()).collect();
        let reqs: Vec<Vec<u8>> = (0..3).map(|_| sent.recv().unwrap()).collect();
        assert_eq!(conn.in_flight(), 3);
        // No credit left: the next submit waits, then reports starvation.
        let t0 = Instant::now();
        let e = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).err().unwrap();
        assert!(matches!(e, ClientError::Starved(_)) && e.to_string().contains("no SMB2 credit left and the server granted none"), "{e}");
        assert!(t0.elapsed() >= Duration::from_millis(250));
        // Answers in reverse order, each tagged with its request's index.
        for (i, r) in reqs.iter().enumerate().rev() {
            to_client.send(Some(answer(r, 1, i as u8 + 1))).unwrap();
        }
        for (i, p) in p.into_iter().enumerate() {
            let id = p.message_id;
            let r = p.wait().unwrap();
            assert_eq!((r.hdr.message_id, r.msg[64]), (id, i as u8 + 1));
        }
        assert_eq!(conn.credits(), (3, 7));
        // An answer with a wrong command is an error for that request only.
        let p = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
        let mut a = answer(&sent.recv().unwrap(), 1, 9);
        a[12] = cmd::READ as u8;
        to_client.send(Some(a)).unwrap();
        assert!(matches!(p.wait(), Err(ClientError::Protocol(_))));
        // A request with no answer times out; the transport dropping fails the rest.
        let p = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
        assert!(matches!(p.wait(), Err(ClientError::Timeout { .. })));
        let p = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
        to_client.send(None).unwrap();
        assert!(matches!(p.wait(), Err(ClientError::Disconnected(_))));
        assert!(matches!(conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])), Err(ClientError::Disconnected(_))));
    }

    /// Garbage from the server ends the connection with an error; nothing panics.
    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for junk in [vec![], vec![0xFE, b'S', b'M', b'B'], vec![0xFD, b'S', b'M', b'B', 1, 2], vec![0u8; 200]] {
            let (conn, sent, to_client) = mock(Duration::from_secs(2));
            let p = conn.submit(Request::new(cmd::ECHO, vec![4, 0, 0, 0])).unwrap();
            let _ = sent.recv().unwrap();
            to_client.send(Some(junk)).unwrap();
            assert!(matches!(p.wait(), Err(ClientError::Disconnected(_))));
        }
    }

    #[test]
    fn charges() {
        assert_eq!(credit_charge(0), 1);
        assert_eq!(credit_charge(65536), 1);
        assert_eq!(credit_charge(65537), 2);
        assert_eq!(credit_charge(8 << 20), 128);
    }
}
