//! Leases on the wire (MS-SMB2 2.2.13.2.8/2.2.13.2.10 the RqLs create
//! context, 2.2.14.2.10/2.2.14.2.11 its response, 2.2.23.2 LEASE_BREAK
//! notification, 2.2.24.2/2.2.25.2 acknowledgment and response; 3.3.4.7,
//! 3.3.5.22.2). The lease records and their rules live in the store
//! (store/lease.rs); CREATE asks for a grant there (create.rs).

use crate::conn::{seal_out, Connection, Ctx};
use crate::objects::{lock, store_status, Server, Session};
use crate::store::{FileKey, LeaseAckError, LeaseGrant, LeaseId, LeaseNotice, LeaseRequest};
use crate::transport::{MessageSink, OutBuf};
use crate::wire::header::{Command, Header, FLAG_SERVER_TO_REDIR, HEADER_LEN};
use crate::wire::status::NtStatus;
use crate::wire::Put;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// SMB2_LEASE_FLAG_BREAK_IN_PROGRESS (response LeaseFlags).
pub const FLAG_BREAK_IN_PROGRESS: u32 = 0x2;
/// SMB2_LEASE_FLAG_PARENT_LEASE_KEY_SET.
pub const FLAG_PARENT_LEASE_KEY_SET: u32 = 0x4;
/// SMB2_NOTIFY_BREAK_LEASE_FLAG_ACK_REQUIRED.
pub const NOTIFY_ACK_REQUIRED: u32 = 0x1;
/// SMB2_OPLOCK_LEVEL_LEASE.
pub const OPLOCK_LEVEL_LEASE: u8 = 0xFF;

const V1_LEN: usize = 32;
const V2_LEN: usize = 52;

fn key16(b: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k.copy_from_slice(&b[..16]);
    k
}

/// The RqLs context of a CREATE from the client `client` (ClientGUID): a
/// version 2 request when it is 52 bytes long or more, else version 1.
pub fn parse_request(data: &[u8], client: [u8; 16]) -> Result<LeaseRequest, NtStatus> {
    if data.len() < V1_LEN {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let state = u32::from_le_bytes([data[16], data[17], data[18], data[19]]);
    let flags = u32::from_le_bytes([data[20], data[21], data[22], data[23]]);
    let id = LeaseId { client, key: key16(data) };
    // Bits other than R, H and W are not lease states: such a request gets none.
    let state = if state & !7 != 0 { 0 } else { state as u8 };
    if data.len() >= V2_LEN {
        let parent = (flags & FLAG_PARENT_LEASE_KEY_SET != 0).then(|| key16(&data[32..48]));
        let epoch = u16::from_le_bytes([data[48], data[49]]);
        return Ok(LeaseRequest { id, version: 2, parent, state, epoch });
    }
    Ok(LeaseRequest { id, version: 1, parent: None, state, epoch: 0 })
}

/// The RqLs response context for a grant.
pub fn response(req: &LeaseRequest, g: &LeaseGrant) -> Vec<u8> {
    let mut d = Vec::with_capacity(V2_LEN);
    let mut flags = if g.breaking { FLAG_BREAK_IN_PROGRESS } else { 0 };
    if g.version >= 2 && g.parent.is_some() {
        flags |= FLAG_PARENT_LEASE_KEY_SET;
    }
    d.put(&req.id.key).u32(u32::from(g.state)).u32(flags).u64(0);
    if g.version >= 2 {
        d.put(&g.parent.unwrap_or([0; 16])).u16(g.epoch).u16(0);
    }
    d
}

/// Sends the LEASE_BREAK notifications the store holds for this worker's
/// leases of `key`, each on the connection of one of the lease's opens.
pub fn send_notices(server: &Server, key: FileKey) {
    let notices = match server.store.lease_notices(key, server.worker_id) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("lease notices of {key:?}: {e}");
            return;
        }
    };
    for n in notices {
        let target = lock(&server.oplock_opens).get(&n.open).cloned();
        let Some(t) = target else {
            // Nobody to tell: a disconnected durable open closes (MS-SMB2
            // 3.3.4.7; Samba closes it on any break), which ends the break.
            debug!(open = n.open, "lease break for an open with no connection");
            crate::handlers::durable::break_disconnected(server, n.open);
            continue;
        };
        let Some(s) = t.session.upgrade() else { continue };
        send_break(&*t.sink, &s, &n);
    }
}

/// A LEASE_BREAK notification (MS-SMB2 3.3.4.7): unsolicited, MessageId
/// 0xFFFFFFFFFFFFFFFF, SessionId and TreeId 0 and unsigned as Windows and
/// Samba send it; encrypted (under the session's id) when the session
/// encrypts.
pub fn send_break(sink: &dyn MessageSink, session: &Session, n: &LeaseNotice) {
    let mut out = OutBuf::new(HEADER_LEN + 44);
    let encrypt = *lock(&session.encrypt_data);
    let h = Header {
        command: Command::OplockBreak as u16,
        flags: FLAG_SERVER_TO_REDIR,
        message_id: u64::MAX,
        session_id: if encrypt { session.id } else { 0 },
        ..Default::default()
    };
    h.write(&mut out.buf);
    let epoch = if n.version >= 2 { n.epoch } else { 0 };
    let flags = if n.ack_required { NOTIFY_ACK_REQUIRED } else { 0 };
    out.buf.u16(44).u16(epoch).u32(flags).put(&n.id.key).u32(u32::from(n.from)).u32(u32::from(n.to)).u32(0).u32(0).u32(0);
    if encrypt {
        let Some(k) = session.keys() else { return };
        if let Err(e) = seal_out(&k, session.id, &mut out) {
            debug!("cannot encrypt a lease break: {e}");
            return;
        }
    }
    debug!(from = n.from, to = n.to, epoch, ack = n.ack_required, "LEASE_BREAK sent");
    super::oplock::send_on_session(sink, session, out);
}

/// LEASE_BREAK acknowledgment (MS-SMB2 3.3.5.22.2): StructureSize 36.
pub fn lease_break_ack(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let b = ctx.msg.get(HEADER_LEN..).ok_or(NtStatus::INVALID_PARAMETER)?;
    if b.len() < 36 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    // The ack names the lease by key; the session must be valid (dispatch checked it).
    let session = ctx.session()?.clone();
    let id = LeaseId { client: conn.client_guid, key: key16(&b[8..24]) };
    let state = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    if state & !7 != 0 {
        return Err(NtStatus::REQUEST_NOT_ACCEPTED);
    }
    let server = conn.server.clone();
    let (r, wake) = server.store.lease_ack(&id, state as u8, Server::now_ms()).map_err(store_status)?;
    let (key, state) = match r {
        Ok((key, state, _epoch)) => (key, state),
        Err(LeaseAckError::NotFound) => return Err(NtStatus::OBJECT_NAME_NOT_FOUND),
        Err(LeaseAckError::NotBreaking) => return Err(NtStatus::UNSUCCESSFUL),
        Err(LeaseAckError::BadState) => return Err(NtStatus::REQUEST_NOT_ACCEPTED),
    };
    // This client's opens under the lease see the new state.
    for o in lock(&session.opens).values() {
        let mut l = lock(&o.lease);
        if let Some((lid, st)) = l.as_mut() {
            if *lid == id {
                *st = state;
            }
        }
    }
    // Waiters, and a further break of the lease the ack lets start, are
    // woken once this response is sent: the client sees the ack's response
    // before the next LEASE_BREAK (as Windows sends them).
    let mut wake = wake;
    wake.sort_unstable();
    wake.dedup();
    if !wake.is_empty() {
        let s = server.clone();
        conn.after_send.push(Box::new(move || {
            for w in wake {
                s.wake(w, key);
            }
        }));
    }
    out.u16(36).u16(0).u32(0).put(&id.key).u32(u32::from(state)).u64(0);
    Ok(())
}

/// The lease a CREATE asks for: its RqLs context when the oplock level
/// asked is SMB2_OPLOCK_LEVEL_LEASE, leases are on (`smb2 leases`) and the
/// session's dialect is 2.1 or 3.x. SMB 2.1 knows only version 1 leases
/// (MS-SMB2 2.2.13.2.10: version 2 is for 3.x): a longer context there is
/// read as version 1.
pub fn requested(server: &Server, session: &Session, oplock_level: u8, contexts: &[(&[u8], &[u8])], client: [u8; 16]) -> Result<Option<LeaseRequest>, NtStatus> {
    if oplock_level != OPLOCK_LEVEL_LEASE || !server.cfg.smb2_leases || session.dialect < crate::config::DIALECT_210 || session.dialect == crate::config::DIALECT_WILDCARD {
        return Ok(None);
    }
    let Some((_, data)) = contexts.iter().find(|(n, _)| *n == b"RqLs") else { return Ok(None) };
    let r = parse_request(data, client)?;
    if session.dialect < crate::config::DIALECT_300 && r.version >= 2 {
        return Ok(Some(LeaseRequest { version: 1, parent: None, epoch: 0, ..r }));
    }
    Ok(Some(r))
}

/// Whether a directory open may get the lease `req` (MS-SMB2 3.3.5.9.11):
/// only a version 2 request (SMB 3.x) and with `smb3 directory leases` on.
pub fn directory_lease_allowed(server: &Server, req: &LeaseRequest) -> bool {
    server.cfg.smb3_directory_leases && req.version >= 2
}

/// The lease the directory `dir` of a change was opened under, as a
/// directory lease sees it: the ParentLeaseKey of the open that changes
/// something inside it (with the open's ClientGUID).
pub fn parent_of(req: &LeaseRequest) -> Option<LeaseId> {
    req.parent.map(|key| LeaseId { client: req.id.client, key })
}

/// Something inside the directory holding `rel` changed (a file made,
/// overwritten, removed, renamed in or out, its size, times, attributes
/// or EAs set: MS-FSA 2.1.4.13, MS-SMB2 3.3.4.7), through an open whose
/// parent lease is `except`: the directory's other leases break to none.
/// Nothing waits for these breaks.
pub fn break_parent(server: &Server, root: &crate::vfs::ShareRoot, rel: &str, except: Option<LeaseId>) {
    if !server.cfg.smb3_directory_leases || !server.cfg.smb2_leases {
        return;
    }
    let parent = crate::vfs::split_parent(rel).map_or("", |(d, _)| d);
    let key = match root.lookup(parent) {
        Ok(Some(st)) => FileKey::from((st.dev, st.ino)),
        _ => return,
    };
    match server.store.lease_break_parent(key, except.as_ref(), Server::now_ms()) {
        Ok(mut workers) => {
            workers.sort_unstable();
            workers.dedup();
            for w in workers {
                debug!(parent = %parent, "directory lease break");
                server.wake(w, key);
            }
        }
        Err(e) => tracing::warn!("directory lease break: {e}"),
    }
}

/// [`break_parent`] for a change through `open` (its own parent lease key
/// spares its parent's lease).
pub fn break_parent_of(server: &Server, open: &crate::objects::Open) {
    let Some(root) = &open.share.root else { return };
    let path = lock(&open.path).clone();
    if path.is_empty() {
        return;
    }
    break_parent(server, root, &path, *lock(&open.parent_lease));
}

/// A rename of `open` from `from` to `to`: both parents see a change.
pub fn break_parents_rename(server: &Server, open: &crate::objects::Open, from: &str, to: &str) {
    let Some(root) = &open.share.root else { return };
    let except = *lock(&open.parent_lease);
    break_parent(server, root, from, except);
    let dir = |p: &str| crate::vfs::split_parent(p).map_or(String::new(), |(d, _)| d.to_string());
    if dir(from) != dir(to) {
        break_parent(server, root, to, except);
    }
}

/// The last step of a close: a file written through `open`, or removed by
/// its close, changed its directory's listing (smbtorture's
/// lease.v2_request: the close, not the write, breaks the directory lease).
pub fn on_close(server: &Server, open: &crate::objects::Open, removed: bool) {
    crate::kernel_oplock::release(server, open);
    if removed || open.modified.load(std::sync::atomic::Ordering::Relaxed) {
        break_parent_of(server, open);
    }
}

/// A lease key names one file (MS-SMB2 3.3.5.9.8): the same key on a
/// different (or not yet existing) file is INVALID_PARAMETER, checked before
/// anything is created.
pub fn check_key_file(server: &Server, root: &crate::vfs::ShareRoot, rel: &str, req: &LeaseRequest) -> Result<(), NtStatus> {
    let Some(f) = server.store.lease_file(&req.id).map_err(store_status)? else { return Ok(()) };
    let here = root.lookup(rel)?.map(|st| FileKey::from((st.dev, st.ino)));
    if here != Some(f) {
        debug!(path = %rel, "lease key already names another file");
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(())
}

/// Grants the lease of `req` to the new open `id` of the file `key` and
/// returns the response context; `Ok(None)` when the store could not
/// answer (the open goes on without a lease), INVALID_PARAMETER when the
/// key meanwhile names a lease of another file.
pub fn grant(server: &Server, key: FileKey, id: u64, req: &LeaseRequest, open: &crate::objects::Open) -> Result<Option<Vec<u8>>, NtStatus> {
    // A directory caches no writes: R or RH at most (MS-SMB2 3.3.5.9.11).
    let dir_req;
    let req = if open.is_dir() {
        dir_req = LeaseRequest { state: req.state & !crate::store::lease::WRITE, ..*req };
        &dir_req
    } else {
        req
    };
    match server.store.lease_grant(key, server.open_id(id), req) {
        Ok(Some(g)) => {
            *lock(&open.lease) = Some((req.id, g.state));
            debug!(state = g.state, epoch = g.epoch, breaking = g.breaking, "lease granted");
            Ok(Some(response(req, &g)))
        }
        Ok(None) => Err(NtStatus::INVALID_PARAMETER),
        Err(e) => {
            tracing::warn!("lease not granted: {e}");
            Ok(None)
        }
    }
}

/// The rest of a rename (or delete) that runs once the handle-caching
/// breaks it started are over.
pub type AfterBreaks = Box<dyn FnOnce() -> Result<(), NtStatus> + Send>;

/// A rename or delete through `open` (MS-FSA 2.1.5.14.11): level II oplocks
/// break to none and other leases lose H, on the file and on `target`, an
/// open file the rename would replace (so that clients close the handles
/// they cache there; the rename then fails with ACCESS_DENIED if the target
/// is still open, as Windows does). When a holder must acknowledge, the
/// request goes async (interim STATUS_PENDING) and `job` runs once no other
/// lease holds H or the breaks time out; else `job` runs now. A request that
/// cannot go async (inside a compound) runs `job` at once.
pub fn after_handle_breaks(conn: &mut Connection, ctx: &mut Ctx<'_>, open: &Arc<crate::objects::Open>, target: Option<FileKey>, job: AfterBreaks) -> Result<(), NtStatus> {
    let server = conn.server.clone();
    let keys: Vec<FileKey> = open.file_key.map(FileKey::from).into_iter().chain(target).collect();
    if keys.is_empty() {
        return job();
    }
    let by = server.open_id(open.volatile_id);
    let timeout = server.cfg.limits.oplock_break_timeout.as_millis() as u64;
    let mut until: Option<u64> = None;
    for &key in &keys {
        let (mut workers, u) = match server.store.lease_break_handle(key, by, Server::now_ms(), timeout) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("rename breaks: {e}");
                continue;
            }
        };
        workers.sort_unstable();
        workers.dedup();
        for w in workers {
            server.wake(w, key);
        }
        until = match (until, u) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let Some(until) = until else { return job() };
    let Ok(pending) = crate::conn::go_async(conn, ctx) else { return job() };
    debug!(async_id = pending.async_id, "rename waits for lease breaks");
    // A CANCEL or the end of the connection wakes the wait below at once.
    let weak = Arc::downgrade(&server);
    pending.on_stop(Arc::new(move |_| {
        if let Some(s) = weak.upgrade() {
            s.file_events.bump();
        }
    }));
    let r = std::thread::Builder::new().name("smb-rename".into()).stack_size(256 * 1024).spawn(move || {
        let mut seen = server.file_events.generation();
        loop {
            if pending.stop.get().is_some() {
                return pending.finish(NtStatus::CANCELLED, None);
            }
            // Each look records this worker as waiting on the files' oplock
            // records: the ack or close that ends a break wakes it.
            let held = keys.iter().fold(false, |held, &k| server.store.lease_handle_wait(k, by, server.worker_id).unwrap_or(false) || held);
            if !held || Server::now_ms() >= until {
                break;
            }
            let step = Instant::now() + Duration::from_millis(until.saturating_sub(Server::now_ms()));
            seen = server.file_events.wait(seen, step);
        }
        match job() {
            Ok(()) => pending.finish(NtStatus::SUCCESS, Some(&[2, 0])),
            Err(e) => pending.finish(e, None),
        }
    });
    if let Err(e) = r {
        tracing::warn!("cannot start a waiting rename: {e}");
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    Err(NtStatus::PENDING)
}

/// A delete made pending through `open`: level II oplocks break to none and
/// other leases lose H, without waiting (the delete happens at the last close).
pub fn break_handle_caching(server: &Server, open: &crate::objects::Open) {
    let Some(key) = open.file_key.map(FileKey::from) else { return };
    let timeout = server.cfg.limits.oplock_break_timeout.as_millis() as u64;
    match server.store.lease_break_handle(key, server.open_id(open.volatile_id), Server::now_ms(), timeout) {
        Ok((mut workers, _)) => {
            workers.sort_unstable();
            workers.dedup();
            for w in workers {
                server.wake(w, key);
            }
        }
        Err(e) => tracing::warn!("delete breaks: {e}"),
    }
}

/// A rename opens the source's parent directory (MS-FSA 2.1.5.14.11): an
/// open of that directory with DELETE access (not shared with it) makes it
/// a sharing violation, without breaking anything (smbtorture's
/// oplock.exclusive6). Checked as a probe open in the share-mode records,
/// taken back at once.
pub fn rename_parent_check(server: &Server, root: &crate::vfs::ShareRoot, from: &str) -> Result<(), NtStatus> {
    const LIST_DIRECTORY: u32 = 0x1;
    let parent = crate::vfs::split_parent(from).map_or("", |(d, _)| d);
    let Some(st) = root.lookup(parent)? else { return Ok(()) };
    let key = FileKey::from((st.dev, st.ino));
    let probe = server.open_id(server.new_id());
    let entry = crate::store::ShareModeEntry { open: probe, access: LIST_DIRECTORY, share_access: 0x1 | 0x2, delete_on_close: false };
    match server.store.open_file(key, entry) {
        Ok(()) => {
            if let Err(e) = server.store.close_file(key, probe) {
                tracing::warn!("rename probe of the parent not taken back: {e}");
            }
            Ok(())
        }
        Err(crate::store::OpenError::SharingViolation) => Err(NtStatus::SHARING_VIOLATION),
        Err(crate::store::OpenError::DeletePending) => Err(NtStatus::DELETE_PENDING),
        Err(crate::store::OpenError::Store(e)) => Err(store_status(e)),
    }
}
