//! Asynchronous operations (MS-SMB2 3.3.4.2, 3.3.5.16): a request that cannot
//! finish now (a blocking LOCK, a CHANGE_NOTIFY) gets an interim
//! STATUS_PENDING response carrying an AsyncId, and its final response is
//! sent later from another thread through the connection's sink, signed or
//! encrypted as the session requires. CANCEL, a CLOSE of the handle, or the
//! end of the connection ends a pending operation.

use crate::objects::{lock, Open, Session};
use crate::transport::{MessageSink, OutBuf};
use crate::wire::header::{Header, FLAG_ASYNC, HEADER_LEN};
use crate::wire::messages::error_body;
use crate::wire::status::NtStatus;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::debug;

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
}

struct Entry {
    message_id: u64,
    session_id: u64,
    stop: Arc<StopFlag>,
}

/// The connection's table of pending async operations.
#[derive(Default)]
pub struct AsyncTable {
    ops: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    /// The connection's id: a final response is signed with the key of the
    /// session's channel on this connection (multichannel).
    conn_id: AtomicU64,
}

impl AsyncTable {
    pub fn new() -> Arc<AsyncTable> {
        Arc::new(AsyncTable { ops: Mutex::new(HashMap::new()), next: AtomicU64::new(1), conn_id: AtomicU64::new(0) })
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

    fn register(&self, message_id: u64, session_id: u64) -> (u64, Arc<StopFlag>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(StopFlag::default());
        lock(&self.ops).insert(id, Entry { message_id, session_id, stop: stop.clone() });
        (id, stop)
    }

    fn remove(&self, id: u64) {
        lock(&self.ops).remove(&id);
    }

    /// CANCEL: by AsyncId when the request is async, else by MessageId.
    pub fn cancel(&self, hdr: &Header) -> bool {
        let ops = lock(&self.ops);
        let found = if hdr.is_async() {
            ops.get(&hdr.async_id).filter(|e| e.session_id == hdr.session_id)
        } else {
            ops.values().find(|e| e.message_id == hdr.message_id && e.session_id == hdr.session_id)
        };
        match found {
            Some(e) => {
                e.stop.cancelled.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Ends everything (the connection is going away).
    pub fn disconnect_all(&self) {
        for e in lock(&self.ops).values() {
            e.stop.disconnected.store(true, Ordering::Release);
        }
    }
}

/// Everything needed to send the final response of one async operation.
pub struct Pending {
    pub async_id: u64,
    pub stop: Arc<StopFlag>,
    table: Arc<AsyncTable>,
    sink: Arc<dyn MessageSink>,
    session: Arc<Session>,
    request: Header,
    encrypt: bool,
    sign: bool,
}

impl Pending {
    pub fn new(table: &Arc<AsyncTable>, sink: Arc<dyn MessageSink>, session: Arc<Session>, request: &Header, encrypted: bool) -> Pending {
        let (async_id, stop) = table.register(request.message_id, request.session_id);
        let encrypt = encrypted || *lock(&session.encrypt_data);
        let sign = !encrypt && (request.is_signed() || *lock(&session.signing_required));
        Pending { async_id, stop, table: table.clone(), sink, session, request: request.clone(), encrypt, sign }
    }

    /// Sends the final response (`body` is the command's response body, or
    /// an error body is written when `status` is an error) and unregisters.
    pub fn finish(self, status: NtStatus, body: Option<&[u8]>) {
        self.table.remove(self.async_id);
        if self.stop.get() == Some(Stop::Disconnected) {
            return;
        }
        let mut out = OutBuf::new(HEADER_LEN + body.map_or(9, |b| b.len()));
        let start = out.buf.len();
        let mut h = self.request.response(status);
        h.flags |= FLAG_ASYNC;
        h.async_id = self.async_id;
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
        if let Err(e) = self.sink.send(out) {
            debug!("async response not sent: {e}");
        }
    }
}

/// An operation that ends without `finish` (its thread could not be started)
/// still gives its place in the table back: the table's size is what
/// `max async requests per connection` counts.
impl Drop for Pending {
    fn drop(&mut self) {
        self.table.remove(self.async_id);
    }
}

/// Runs `wait` on a thread of its own; it returns the final status and body.
pub fn spawn<F>(p: Pending, open: Arc<Open>, wait: F)
where
    F: FnOnce(&Pending, &Open) -> (NtStatus, Option<Vec<u8>>) + Send + 'static,
{
    let r = std::thread::Builder::new().name("smb-async".into()).stack_size(256 * 1024).spawn(move || {
        let (st, body) = wait(&p, &open);
        p.finish(st, body.as_deref());
    });
    if let Err(e) = r {
        tracing::warn!("cannot start an async operation: {e}");
    }
}
