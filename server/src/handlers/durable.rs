//! Durable handles (MS-SMB2 3.3.5.9.6/.7 v1 DHnQ/DHnC, 3.3.5.9.10/.12 v2
//! DH2Q/DH2C), and what makes a retried request safe: CREATE replay by
//! CreateGuid ([`replay`], 3.3.5.9.10), LOCK sequences ([`LockSequence`],
//! 3.3.5.14) and AppInstanceId ([`close_app_instance`], 3.3.5.9.13).
//! (Channel sequence numbers are checked in conn.rs, objects.rs
//! `ChannelSequence`, 3.3.5.2.10.)
//!
//! A durable open is an ordinary [`Open`] that also has a global record in
//! the state store (store/durable.rs) and a [`DurableInfo`]. When its
//! connection or session goes ([`keep`], called where a session drops its
//! opens), an open that still holds handle caching (a batch oplock; a lease
//! with H once leases exist) is not closed: it becomes *disconnected*. Its
//! share-mode entry, byte-range locks and oplock stay in the store under
//! the same [`crate::store::GlobalOpenId`], so other opens still see them;
//! its record says until when it waits.
//!
//! The worker keeps the open itself, file descriptor included, in
//! [`Disconnected`] (rather than closing the descriptor and opening the path
//! again on reconnect): the open then resumes exactly where it was (same
//! file even if it was renamed or its name reused, same position, no new
//! access check that could fail against a changed DACL), and nothing about
//! the file is released meanwhile. The price: a reconnect must reach the
//! same worker (the record names it; another worker answers
//! OBJECT_NAME_NOT_FOUND), and the disconnected opens of a worker that dies
//! go with it (the supervisor purges its records, which releases their share
//! modes and locks) - acceptable, as the client then sees what it sees
//! when a server restarts.
//!
//! A disconnected open ends when its timeout passes (a scavenger thread of
//! the worker, running only while it has disconnected opens) or when another
//! open needs its oplock broken (it cannot acknowledge: it is closed, as
//! Samba does, MS-SMB2 3.3.4.6 / 3.3.5.9), with everything a close does
//! (share mode, locks, delete-on-close).

use crate::objects::{lock, Open, OplockTarget, Server, Session, Tree};
use crate::store::oplock::LEVEL_BATCH;
use crate::store::DurableRecord;
use crate::transport::MessageSink;
use crate::wire::status::NtStatus;
use crate::wire::Put;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Open.DurableOpenTimeout of a v1 open (the spec leaves it to the server;
/// Windows uses 16 minutes for v1, Samba too; a minute is kinder to other
/// clients of the file and enough for a reconnect).
pub const V1_TIMEOUT_MS: u64 = 60_000;
/// A v2 request with Timeout 0 gets this (Windows 2012, Samba).
pub const V2_DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// The longest v2 timeout granted (Windows and Samba clamp to 5 minutes).
pub const V2_MAX_TIMEOUT_MS: u64 = 300_000;
/// SMB2_DHANDLE_FLAG_PERSISTENT: never granted (no share is continuously available).
pub const FLAG_PERSISTENT: u32 = 0x2;
/// STATUS_DUPLICATE_OBJECTID (MS-ERREF 2.3.1): a DH2Q CreateGuid already in use.
pub const DUPLICATE_OBJECTID: NtStatus = NtStatus(0xC000_022A);
/// How often the scavenger looks for expired disconnected opens.
const SCAVENGE_EVERY: Duration = Duration::from_millis(200);

/// What a CREATE asks about durability, from its create contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    None,
    /// DHnQ.
    V1,
    /// DH2Q (3.x only).
    V2 { timeout_ms: u32, flags: u32, create_guid: [u8; 16] },
    /// DHnC: the FileId of the open to take back.
    ReconnectV1 { file_id: [u8; 16] },
    /// DH2C.
    ReconnectV2 { file_id: [u8; 16], create_guid: [u8; 16], flags: u32 },
}

impl Request {
    pub fn is_reconnect(&self) -> bool {
        matches!(self, Request::ReconnectV1 { .. } | Request::ReconnectV2 { .. })
    }
}

fn guid(b: &[u8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[..16]);
    g
}

/// Reads the durable create contexts of a CREATE and checks how they
/// combine (MS-SMB2 3.3.5.9.6, .7, .10, .12, in Windows' and Samba's
/// order): a request and a reconnect of different versions, or a v2
/// request with a v1 one, are INVALID_PARAMETER; a context of the wrong
/// size too; a reconnect with any other context than a lease request (and,
/// for v1, a DHnQ, which is then ignored) is OBJECT_NAME_NOT_FOUND. The v2
/// contexts exist only in the 3.x dialects: ignored on 2.x.
pub fn parse(contexts: &[(&[u8], &[u8])], smb3: bool) -> Result<Request, NtStatus> {
    let find = |n: &[u8]| contexts.iter().find(|(name, _)| *name == n).map(|(_, d)| *d);
    let dhnq = find(b"DHnQ");
    let dhnc = find(b"DHnC");
    let (dh2q, dh2c) = if smb3 { (find(b"DH2Q"), find(b"DH2C")) } else { (None, None) };
    let rqls = find(b"RqLs").is_some();
    let (q1, c1, q2, c2) = (dhnq.is_some(), dhnc.is_some(), dh2q.is_some(), dh2c.is_some());
    if (c1 && (c2 || q2)) || (c2 && (q1 || q2)) {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if let Some(d) = dhnc {
        if d.len() != 16 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if contexts.len() != 1 + usize::from(q1) + usize::from(rqls) {
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        }
        return Ok(Request::ReconnectV1 { file_id: guid(d) });
    }
    if let Some(d) = dh2c {
        if d.len() != 36 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if contexts.len() != 1 + usize::from(rqls) {
            return Err(NtStatus::OBJECT_NAME_NOT_FOUND);
        }
        let flags = u32::from_le_bytes([d[32], d[33], d[34], d[35]]);
        return Ok(Request::ReconnectV2 { file_id: guid(d), create_guid: guid(&d[16..]), flags });
    }
    if let Some(d) = dhnq {
        if d.len() != 16 || q2 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        return Ok(Request::V1);
    }
    if let Some(d) = dh2q {
        if d.len() != 32 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let timeout_ms = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let flags = u32::from_le_bytes([d[4], d[5], d[6], d[7]]);
        return Ok(Request::V2 { timeout_ms, flags, create_guid: guid(&d[16..]) });
    }
    Ok(Request::None)
}

/// The timeout a v2 request gets: 0 means the server's default; more than
/// the maximum is clamped.
pub fn v2_timeout(requested: u32) -> u64 {
    match requested as u64 {
        0 => V2_DEFAULT_TIMEOUT_MS,
        t => t.min(V2_MAX_TIMEOUT_MS),
    }
}

/// The durable state of a local open (the global half is its store
/// record): set on an open made with DHnQ or DH2Q, durable or not (a DH2Q
/// open is replay-eligible either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableInfo {
    pub version: u8,
    pub create_guid: [u8; 16],
    pub client_guid: [u8; 16],
    pub timeout_ms: u64,
    /// The CreateAction of the CREATE that made it (a replayed CREATE answers with it).
    pub create_action: u32,
    /// Durability was granted (there is a store record).
    pub granted: bool,
    /// Open.AppInstanceId (SMB2_CREATE_APP_INSTANCE_ID, MS-SMB2 2.2.13.2.13).
    pub app_instance_id: Option<[u8; 16]>,
}

/// The create context tag of SMB2_CREATE_APP_INSTANCE_ID.
const APP_INSTANCE_ID: [u8; 16] = [0x45, 0xBC, 0xA6, 0x6A, 0xEF, 0xA7, 0xF7, 0x4A, 0x90, 0x08, 0xFA, 0x46, 0x2E, 0x14, 0x4D, 0x74];

/// The AppInstanceId of a CREATE's SMB2_CREATE_APP_INSTANCE_ID context
/// (StructureSize 20, Reserved, the id), if it has a well-formed one.
fn app_instance_id(contexts: &[(&[u8], &[u8])]) -> Option<[u8; 16]> {
    let d = contexts.iter().find(|(n, _)| *n == APP_INSTANCE_ID).map(|(_, d)| *d)?;
    (d.len() == 20 && d[..2] == 20u16.to_le_bytes()).then(|| guid(&d[4..]))
}

/// A DH2Q CREATE with an AppInstanceId (MS-SMB2 3.3.5.9.13; an application
/// failing over to another node or client): an open of the same file on
/// the same share by the same user with that AppInstanceId is closed first,
/// without an oplock break, so the new open takes its place.
pub fn close_app_instance(cs: &CreateSide<'_>, req: &Request, contexts: &[(&[u8], &[u8])], name: &str) {
    let Request::V2 { .. } = req else { return };
    let Some(id) = app_instance_id(contexts) else { return };
    let server = cs.server;
    let Some(me) = owner(cs.session) else { return };
    let path = name.replace('\\', "/");
    let same = |o: &Open| {
        lock(&o.durable).as_ref().is_some_and(|i| i.app_instance_id == Some(id))
            && o.share.cfg.name.eq_ignore_ascii_case(&cs.tree.share.cfg.name)
            && lock(&o.path).eq_ignore_ascii_case(&path)
    };
    let sessions: Vec<Arc<Session>> = lock(&server.sessions).values().cloned().collect();
    for s in sessions {
        if owner(&s).as_deref() != Some(me.as_str()) {
            continue;
        }
        let found: Vec<Arc<Open>> = lock(&s.opens).values().filter(|o| same(o)).cloned().collect();
        for o in found {
            lock(&s.opens).remove(&o.volatile_id);
            info!(open = o.volatile_id, path = %path, "open closed: a new open with its AppInstanceId");
            o.close(server);
        }
    }
    let disconnected = server.durable.take_matching(|o| same(o));
    for o in disconnected {
        info!(open = o.volatile_id, path = %path, "disconnected open closed: a new open with its AppInstanceId");
        o.close(server);
    }
    // Such opens on other workers (the two CREATEs came on connections with
    // different ClientGUIDs, which the supervisor may route apart): their
    // worker closes them when woken ([`close_requested`]); this CREATE waits,
    // a bounded time, for their records to go, so that it meets neither
    // their share mode nor their oplock.
    let remote: Vec<DurableRecord> = match server.store.durable_by_app_instance(&id) {
        Ok(v) => v
            .into_iter()
            .filter(|r| r.open.worker != server.worker_id && r.owner == me && r.share.eq_ignore_ascii_case(&cs.tree.share.cfg.name) && r.path.eq_ignore_ascii_case(&path))
            .collect(),
        Err(e) => {
            warn!("opens of an AppInstanceId on other workers not looked up: {e}");
            Vec::new()
        }
    };
    for r in remote {
        match server.store.durable_request_close(r.persistent_id) {
            Ok(true) => {
                info!(worker = r.open.worker, path = %path, "asking another worker to close the open of this AppInstanceId");
                server.ask_close_durable(r.open.worker, r.file);
                if wait_record(server, r.persistent_id, APP_INSTANCE_WAIT, |r| r.is_none()).is_none() {
                    warn!(worker = r.open.worker, path = %path, "the open of this AppInstanceId on another worker was not closed in time");
                }
            }
            Ok(false) => {}
            Err(e) => warn!("close of an AppInstanceId's open on another worker not asked: {e}"),
        }
    }
}

/// How long a CREATE with an AppInstanceId waits for another worker to close
/// the open it replaces.
const APP_INSTANCE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// This worker was woken for the file `key`: closes the durable opens of it
/// that another worker asked to be closed (a new open with their
/// AppInstanceId, [`close_app_instance`]), connected or disconnected, as a
/// CLOSE would (no oplock break). A record whose open is not here any more
/// is dropped.
pub fn close_requested(server: &Server, key: crate::store::FileKey) {
    let recs = match server.store.durable_close_requests(server.worker_id) {
        Ok(v) => v,
        Err(e) => {
            warn!("close requests of durable opens not read: {e}");
            return;
        }
    };
    for r in recs.into_iter().filter(|r| r.file == key) {
        let volatile = r.open.open;
        let open = server.durable.take_volatile(volatile).or_else(|| {
            let sessions: Vec<Arc<Session>> = lock(&server.sessions).values().cloned().collect();
            sessions.iter().find_map(|s| lock(&s.opens).remove(&volatile))
        });
        match open {
            Some(o) => {
                info!(open = volatile, path = %r.path, "open closed: a new open with its AppInstanceId on another worker");
                o.close(server);
            }
            None => {
                if let Ok(Some(gone)) = server.store.durable_remove(r.persistent_id) {
                    wake_waiters(server, &gone);
                }
            }
        }
    }
}

/// An open a CREATE is answered with without opening anything: (open,
/// CreateAction, oplock level, response contexts).
pub type EarlyOpen = (Arc<Open>, u32, u8, Vec<(&'static [u8], Vec<u8>)>);

/// What a CREATE works with here, besides the request.
pub struct CreateSide<'a> {
    pub server: &'a Arc<Server>,
    pub session: &'a Arc<Session>,
    pub tree: &'a Arc<Tree>,
    pub sink: &'a Arc<dyn MessageSink>,
    pub client_guid: [u8; 16],
}

/// "DOMAIN\user" of the session (the owner of its durable opens).
fn owner(session: &Session) -> Option<String> {
    lock(&session.identity).as_ref().map(|i| format!("{}\\{}", i.domain.to_lowercase(), i.user.to_lowercase()))
}

/// The lease key of a CREATE's lease request context, if any.
fn lease_key(contexts: &[(&[u8], &[u8])]) -> Option<[u8; 16]> {
    contexts.iter().find(|(n, _)| *n == b"RqLs").and_then(|(_, d)| d.get(..16)).map(guid)
}

/// Makes `open` durable after a successful CREATE that asked for it, if
/// it may be: the share allows durable handles, the open is a file holding
/// handle caching (a batch oplock; a lease with H), and the store took the
/// record. The response context to send (DHnQ or DH2Q), if granted.
pub fn grant(cs: &CreateSide<'_>, open: &Open, req: &Request, contexts: &[(&[u8], &[u8])], action: u32) -> Option<(&'static [u8], Vec<u8>)> {
    let (version, create_guid, timeout_ms) = match req {
        Request::V1 => (1, [0u8; 16], V1_TIMEOUT_MS),
        Request::V2 { timeout_ms, create_guid, flags } => {
            if flags & FLAG_PERSISTENT != 0 {
                debug!("persistent handle asked for, not granted: no share is continuously available");
            }
            (2, *create_guid, v2_timeout(*timeout_ms))
        }
        _ => return None,
    };
    let server = cs.server;
    let mut info = DurableInfo {
        version,
        create_guid,
        client_guid: cs.client_guid,
        timeout_ms,
        create_action: action,
        granted: false,
        app_instance_id: if version == 2 { app_instance_id(contexts) } else { None },
    };
    if version == 2 {
        // Replay-eligible, durable or not, until another request uses it.
        open.replay_eligible.store(true, Ordering::Relaxed);
        server.replay.add((cs.client_guid, create_guid), open.volatile_id);
    }
    let durable = cs.tree.share.cfg.durable_handles && !open.is_dir() && crate::handlers::oplock::holds_handle_caching(server, open);
    let granted = durable.then(|| grant_record(cs, open, version, create_guid, timeout_ms, contexts)).flatten();
    info.granted = granted.is_some();
    *lock(&open.durable) = Some(info);
    granted
}

/// Writes the store record of a durable open; its response context.
fn grant_record(cs: &CreateSide<'_>, open: &Open, version: u8, create_guid: [u8; 16], timeout_ms: u64, contexts: &[(&[u8], &[u8])]) -> Option<(&'static [u8], Vec<u8>)> {
    let server = cs.server;
    let key = open.file_key?;
    let rec = DurableRecord {
        persistent_id: open.persistent_id,
        open: server.open_id(open.volatile_id),
        file: key.into(),
        version,
        create_guid,
        client_guid: cs.client_guid,
        owner: owner(cs.session)?,
        share: cs.tree.share.cfg.name.clone(),
        path: lock(&open.path).clone(),
        access: open.access,
        share_access: open.share_access,
        oplock: *lock(&open.oplock_level),
        lease_key: lease_key(contexts),
        timeout_ms,
        disconnected_until: None,
        app_instance_id: if version == 2 { app_instance_id(contexts) } else { None },
        close_requested: false,
        waiters: Vec::new(),
    };
    if let Err(e) = server.store.durable_put(&rec) {
        warn!("durable handle not granted: {e}");
        return None;
    }
    debug!(open = open.volatile_id, version, timeout_ms, "durable handle granted");
    Some(response_context(version, timeout_ms))
}

fn response_context(version: u8, timeout_ms: u64) -> (&'static [u8], Vec<u8>) {
    let mut d = Vec::new();
    if version == 1 {
        d.zeros(8);
        (b"DHnQ", d)
    } else {
        // Flags 0: never persistent.
        d.u32(timeout_ms as u32).u32(0);
        (b"DH2Q", d)
    }
}

/// A DH2Q CREATE (MS-SMB2 3.3.5.9.10) whose CreateGuid this client has
/// used already. Replayed (SMB2_FLAGS_REPLAY_OPERATION): while the first
/// CREATE is still pending, FILE_NOT_AVAILABLE (Samba's answer; Windows
/// says ACCESS_DENIED); an open of this session it made that no other
/// request has used since answers again, nothing is opened: its FileId and
/// CreateAction, the oplock level asked for now (at most the one held) and
/// the durable context only when that level keeps the handle durable (as
/// Windows and Samba answer). Not replayed: DUPLICATE_OBJECTID while an
/// open with that CreateGuid exists. `Ok(None)`: a new open.
pub fn replay(cs: &CreateSide<'_>, create_guid: &[u8; 16], requested_oplock: u8, contexts: &[(&[u8], &[u8])], replayed: bool) -> Result<Option<EarlyOpen>, NtStatus> {
    let key = (cs.client_guid, *create_guid);
    let server = cs.server;
    if !replayed {
        let local = server.replay.opens(&key).into_iter().any(|v| server_has_open(cs, v));
        let global = server.store.durable_by_create_guid(&cs.client_guid, create_guid).map_err(crate::objects::store_status)?.is_some();
        return if local || global { Err(DUPLICATE_OBJECTID) } else { Ok(None) };
    }
    if server.replay.is_pending(&key) {
        return Err(NtStatus::FILE_NOT_AVAILABLE);
    }
    let Some(open) = server.replay.opens(&key).into_iter().filter_map(|v| cs.session.open(v)).find(|o| o.replay_eligible.load(Ordering::Relaxed)) else {
        return Ok(None);
    };
    let Some(info) = lock(&open.durable).clone() else { return Ok(None) };
    let asked_lease = if requested_oplock == crate::handlers::lease::OPLOCK_LEVEL_LEASE { lease_key(contexts) } else { None };
    let lease = *lock(&open.lease);
    if let Some((id, _)) = lease {
        // An open made with a lease: a replay asking for another lease is
        // refused (Windows and Samba: ACCESS_DENIED); one asking for an
        // oplock gets the lease as it is now, with the durable context while
        // the lease has H (smbtorture replay-dhv2-lease1..3, -lease-oplock).
        if asked_lease.is_some_and(|k| k != id.key) {
            return Err(NtStatus::ACCESS_DENIED);
        }
        let key = open.file_key.map(crate::store::FileKey::from).ok_or(NtStatus::INTERNAL_ERROR)?;
        let (state, mut ctx) = lease_response(cs.server, open.as_ref(), key, id, contexts);
        if info.granted && state & crate::store::lease::HANDLE != 0 {
            ctx.push(response_context(info.version, info.timeout_ms));
        }
        debug!(open = open.volatile_id, state, "replayed CREATE answered from its leased open");
        return Ok(Some((open, info.create_action, crate::handlers::lease::OPLOCK_LEVEL_LEASE, ctx)));
    }
    if asked_lease.is_some() {
        // An open made with an oplock, replayed with a lease.
        return Err(NtStatus::ACCESS_DENIED);
    }
    let held = *lock(&open.oplock_level);
    let level = if requested_oplock >= held { held } else { requested_oplock };
    let mut ctx = Vec::new();
    if info.granted && level == LEVEL_BATCH {
        ctx.push(response_context(info.version, info.timeout_ms));
    }
    debug!(open = open.volatile_id, level, "replayed CREATE answered from its open");
    Ok(Some((open, info.create_action, level, ctx)))
}

/// Whether the open `volatile` of this worker is still open in any session.
fn server_has_open(cs: &CreateSide<'_>, volatile: u64) -> bool {
    cs.session.open(volatile).is_some() || lock(&cs.server.sessions).values().any(|s| s.open(volatile).is_some())
}

/// This worker's DH2Q opens by (ClientGuid, CreateGuid), and the DH2Q
/// CREATEs still pending (waiting for a break): what replay detection looks
/// at (MS-SMB2 3.3.5.9.10; Samba's replay cache). Replays come on a
/// channel of the same session, which lives in this worker.
#[derive(Default)]
pub struct ReplayCache {
    inner: Mutex<ReplayTable>,
}

type ReplayKey = ([u8; 16], [u8; 16]);

#[derive(Default)]
struct ReplayTable {
    opens: HashMap<ReplayKey, Vec<u64>>,
    pending: HashMap<ReplayKey, usize>,
}

impl ReplayCache {
    fn add(&self, key: ReplayKey, volatile: u64) {
        lock(&self.inner).opens.entry(key).or_default().push(volatile);
    }

    fn remove(&self, key: &ReplayKey, volatile: u64) {
        let mut t = lock(&self.inner);
        if let Some(v) = t.opens.get_mut(key) {
            v.retain(|x| *x != volatile);
            if v.is_empty() {
                t.opens.remove(key);
            }
        }
    }

    fn opens(&self, key: &ReplayKey) -> Vec<u64> {
        lock(&self.inner).opens.get(key).cloned().unwrap_or_default()
    }

    fn is_pending(&self, key: &ReplayKey) -> bool {
        lock(&self.inner).pending.contains_key(key)
    }

    /// A DH2Q CREATE with `key` now waits (for an oplock break): replays of
    /// it are told FILE_NOT_AVAILABLE until the guard is dropped.
    pub fn pending(self: &Arc<Self>, key: ReplayKey) -> PendingCreate {
        *lock(&self.inner).pending.entry(key).or_default() += 1;
        PendingCreate { cache: self.clone(), key }
    }
}

/// A pending DH2Q CREATE (see [`ReplayCache::pending`]).
pub struct PendingCreate {
    cache: Arc<ReplayCache>,
    key: ReplayKey,
}

impl Drop for PendingCreate {
    fn drop(&mut self) {
        let mut t = lock(&self.cache.inner);
        if let Some(n) = t.pending.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                t.pending.remove(&self.key);
            }
        }
    }
}

/// The replay key of a DH2Q CREATE `msg` (3.x), if it has one.
pub fn replay_key(msg: &[u8], client_guid: [u8; 16], smb3: bool) -> Option<ReplayKey> {
    let req = crate::wire::messages::CreateReq::parse(msg).ok()?;
    let contexts = crate::wire::messages::parse_create_contexts(req.contexts).ok()?;
    match parse(&contexts, smb3) {
        Ok(Request::V2 { create_guid, .. }) => Some((client_guid, create_guid)),
        _ => None,
    }
}

/// DHnC / DH2C (MS-SMB2 3.3.5.9.7, 3.3.5.9.12): takes a disconnected
/// durable open back into this session and tree. Every refusal is
/// OBJECT_NAME_NOT_FOUND except another user's open (ACCESS_DENIED) and a
/// leased open named under another name (INVALID_PARAMETER). On success the
/// open (same FileId), its oplock level and the response contexts: for an
/// open with a lease, the lease context with the lease's state now (the
/// store kept the lease while the open was disconnected); never a durable
/// context (Windows and Samba send none on a reconnect).
pub fn reconnect(cs: &CreateSide<'_>, req: &Request, contexts: &[(&[u8], &[u8])], name: &str) -> Result<EarlyOpen, NtStatus> {
    const NOT_FOUND: NtStatus = NtStatus::OBJECT_NAME_NOT_FOUND;
    let (file_id, create_guid) = match req {
        Request::ReconnectV1 { file_id } => (file_id, None),
        Request::ReconnectV2 { file_id, create_guid, .. } => (file_id, Some(create_guid)),
        _ => return Err(NtStatus::INTERNAL_ERROR),
    };
    let server = cs.server;
    if cs.tree.share.is_ipc() {
        return Err(NOT_FOUND);
    }
    let persistent = u64::from_le_bytes(file_id[..8].try_into().map_err(|_| NOT_FOUND)?);
    let rec = server.store.durable_get(persistent).map_err(crate::objects::store_status)?.ok_or(NOT_FOUND)?;
    if create_guid.is_some_and(|g| *g != rec.create_guid) {
        return Err(NOT_FOUND);
    }
    check_lease(&rec, cs.client_guid, lease_key(contexts), name)?;
    if !rec.share.eq_ignore_ascii_case(&cs.tree.share.cfg.name) {
        return Err(NOT_FOUND);
    }
    if owner(cs.session).as_deref() != Some(rec.owner.as_str()) {
        return Err(NtStatus::ACCESS_DENIED);
    }
    let rec = if rec.disconnected_until.is_none() { wait_disconnected(server, persistent).ok_or(NOT_FOUND)? } else { rec };
    let open = if rec.open.worker != server.worker_id {
        reopen_here(cs, &rec)?
    } else {
        // Taking it out of the table is the local claim (the scavenger no
        // longer sees it); the store's reclaim is the global one.
        let Some(open) = server.durable.take(persistent) else { return Err(NOT_FOUND) };
        match server.store.durable_reclaim(persistent, Server::now_ms()) {
            Ok(true) => {}
            Ok(false) => {
                expire(server, &open);
                return Err(NOT_FOUND);
            }
            Err(e) => {
                server.durable.put_back(server, open);
                return Err(crate::objects::store_status(e));
            }
        }
        open
    };
    let ctx = lease_context(server, &open, &rec, contexts);
    open.tree_id.store(cs.tree.id, Ordering::Relaxed);
    let level = *lock(&open.oplock_level);
    if level != 0 {
        let target = OplockTarget { open: Arc::downgrade(&open), session: Arc::downgrade(cs.session), sink: cs.sink.clone() };
        lock(&server.oplock_opens).insert(open.volatile_id, target);
    }
    lock(&cs.session.opens).insert(open.volatile_id, open.clone());
    info!(session = cs.session.id, open = open.volatile_id, path = %lock(&open.path), "durable handle reconnected");
    Ok((open, ACTION_OPENED, level, ctx))
}

/// How long a reconnect waits for the connection that still holds the open
/// to be seen gone.
const RECONNECT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// A reconnect found the open still attached to a connection. A client
/// reconnects after it closed (or lost) that connection, but the server may
/// not have read the end of it yet: under load the old connection's thread
/// (on this worker or another) runs a few milliseconds after the client's
/// new connection has negotiated, set up a session and sent the CREATE (seen
/// with smbtorture's durable-open reopen2 and lock-oplock beside CPU-bound
/// jobs). So the reconnect waits, a bounded time, for the record to become
/// disconnected (or go), woken by whichever worker changes it
/// ([`wait_record`]). `None` when the open is still attached after
/// [`RECONNECT_GRACE`]: its connection is alive and the reconnect fails as
/// before.
fn wait_disconnected(server: &Server, persistent: u64) -> Option<DurableRecord> {
    let started = std::time::Instant::now();
    match wait_record(server, persistent, RECONNECT_GRACE, |r| r.map_or(true, |r| r.disconnected_until.is_some())) {
        Some(Some(r)) => {
            debug!(persistent, waited_ms = started.elapsed().as_millis() as u64, "durable reconnect: waited for the old connection to end");
            Some(r)
        }
        Some(None) => None,
        None => {
            debug!(persistent, "durable reconnect: the open is still attached to a live connection");
            None
        }
    }
}

/// Waits up to `grace` until the durable record `persistent` (`None`: gone)
/// satisfies `done`. Each look at the record also records this worker as
/// waiting for it ([`crate::store::StateStore::durable_watch`]), in the
/// same store step: the worker that then disconnects, moves or removes it
/// wakes this one (a datagram from another worker, an event here), so the
/// wait needs no timer but its deadline. The record then (`Some`); `None`
/// when time ran out or the store failed.
fn wait_record(server: &Server, persistent: u64, grace: std::time::Duration, done: impl Fn(Option<&DurableRecord>) -> bool) -> Option<Option<DurableRecord>> {
    let until = std::time::Instant::now() + grace;
    let mut seen = server.file_events.generation();
    loop {
        let rec = server.store.durable_watch(persistent, server.worker_id).ok()?;
        if done(rec.as_ref()) {
            return Some(rec);
        }
        if std::time::Instant::now() >= until {
            return None;
        }
        seen = server.file_events.wait(seen, until);
    }
}

/// Wakes the workers that waited for the durable record `rec` (it was just
/// disconnected, moved or removed).
fn wake_waiters(server: &Server, rec: &DurableRecord) {
    for w in &rec.waiters {
        server.wake(*w, rec.file);
    }
}

/// A reconnect that reached another worker than the one keeping the
/// disconnected open (a client coming back with a new ClientGUID and no
/// PreviousSessionId: the supervisor could not know where to route it).
/// Rather than moving the connection, with its session, to that worker,
/// this worker opens the file again by the record's path, as Samba's
/// processes do on a durable reconnect: the file must still be the same one
/// (device and inode), else nothing is found. The open's global state (share
/// mode, byte-range locks, oplock, lease, the durable record) passes to the
/// new open in one store step ([`crate::store::StateStore::durable_move`]),
/// which also settles a race with the other worker's timeout; the other
/// worker drops its copy (descriptor only, no state) when its scavenger sees
/// the record name another open ([`Disconnected::forget_moved`]), woken now.
/// What only lived in the old process is not carried: the file position,
/// the LOCK sequence numbers and the create options.
fn reopen_here(cs: &CreateSide<'_>, rec: &DurableRecord) -> Result<Arc<Open>, NtStatus> {
    use rustix::fs::OFlags;
    const NOT_FOUND: NtStatus = NtStatus::OBJECT_NAME_NOT_FOUND;
    const DATA_WRITE: u32 = 0x2 | 0x4;
    const DATA_READ: u32 = 0x1 | 0x20;
    let server = cs.server;
    let root = cs.tree.share.root.as_ref().ok_or(NOT_FOUND)?;
    let write = rec.access & DATA_WRITE != 0;
    let fd = match root.open_beneath(&rec.path, if write { OFlags::RDWR } else { OFlags::RDONLY }) {
        Ok(fd) => fd,
        Err(NtStatus::ACCESS_DENIED) if !write && rec.access & DATA_READ == 0 => root.open_beneath(&rec.path, OFlags::PATH).map_err(|_| NOT_FOUND)?,
        Err(e) => {
            info!(path = %rec.path, "durable reconnect on another worker: the file does not open again ({e})");
            return Err(NOT_FOUND);
        }
    };
    let st = crate::vfs::stat_fd(&fd).map_err(|_| NOT_FOUND)?;
    if crate::store::FileKey::from((st.dev, st.ino)) != rec.file || st.is_dir {
        info!(path = %rec.path, "durable reconnect on another worker: the name is another file now");
        return Err(NOT_FOUND);
    }
    let id = server.new_id();
    let mut open = Open::new(id, cs.tree.id, cs.tree.share.clone(), Some(fd), rec.path.clone(), crate::objects::OpenKind::File, rec.access, rec.share_access, 0, Some((st.dev, st.ino)));
    open.persistent_id = rec.persistent_id;
    match server.store.durable_move(rec.persistent_id, server.open_id(id), Server::now_ms()) {
        Ok(Some(before)) => wake_waiters(server, &before),
        Ok(None) => return Err(NOT_FOUND),
        Err(e) => return Err(crate::objects::store_status(e)),
    }
    *lock(&open.oplock_level) = rec.oplock;
    *lock(&open.durable) = Some(DurableInfo {
        version: rec.version,
        create_guid: rec.create_guid,
        client_guid: rec.client_guid,
        timeout_ms: rec.timeout_ms,
        create_action: ACTION_OPENED,
        granted: true,
        app_instance_id: None,
    });
    if rec.version == 2 {
        server.replay.add((rec.client_guid, rec.create_guid), id);
    }
    server.wake(rec.open.worker, rec.file);
    info!(persistent = rec.persistent_id, from = rec.open.worker, path = %rec.path, "durable open taken over from another worker");
    Ok(Arc::new(open))
}

/// CreateAction FILE_OPENED: what a reconnect answers.
const ACTION_OPENED: u32 = 1;

/// The lease checks of a reconnect (MS-SMB2 3.3.5.9.7 / 3.3.5.9.12, in the
/// order Windows and Samba make them): an open with a lease comes back only
/// to its own client (ClientGuid), with its lease key (both else
/// OBJECT_NAME_NOT_FOUND), under the name it was opened with (else
/// INVALID_PARAMETER); an open without a lease, only without a lease request.
fn check_lease(rec: &DurableRecord, client_guid: [u8; 16], key: Option<[u8; 16]>, name: &str) -> Result<(), NtStatus> {
    const NOT_FOUND: NtStatus = NtStatus::OBJECT_NAME_NOT_FOUND;
    match rec.lease_key {
        None if key.is_some() => Err(NOT_FOUND),
        None => Ok(()),
        Some(k) => {
            if rec.client_guid != client_guid || key != Some(k) {
                return Err(NOT_FOUND);
            }
            if !rec.path.eq_ignore_ascii_case(&name.replace('\\', "/")) {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            Ok(())
        }
    }
}

/// The lease response context of a reconnected open made with a lease:
/// the lease as the store holds it now (see [`lease_response`]). Sets
/// `open.lease` to it. None for an open without a lease, or a lease the
/// store no longer has.
fn lease_context(server: &Server, open: &Open, rec: &DurableRecord, contexts: &[(&[u8], &[u8])]) -> Vec<(&'static [u8], Vec<u8>)> {
    let Some(key) = rec.lease_key else { return Vec::new() };
    let id = crate::store::LeaseId { client: rec.client_guid, key };
    lease_response(server, open, rec.file, id, contexts).1
}

/// The lease `id` of the file `file` as the store holds it now (state,
/// epoch, break in progress; the lease's own version and parent key), as a
/// response context in the form of the request's RqLs (32 or 52 bytes; the
/// lease's own version without one), and its state. Sets `open.lease`; a
/// lease the store no longer has gives state 0 and no context.
fn lease_response(server: &Server, open: &Open, file: crate::store::FileKey, id: crate::store::LeaseId, contexts: &[(&[u8], &[u8])]) -> (u8, Vec<(&'static [u8], Vec<u8>)>) {
    let holder = match server.store.oplocks(file) {
        Ok(r) => r.leases.into_iter().find(|l| l.id == id),
        Err(e) => {
            warn!("lease of an open answered again: {e}");
            None
        }
    };
    let Some(l) = holder else {
        debug!(open = open.volatile_id, "the open's lease is gone");
        *lock(&open.lease) = None;
        return (0, Vec::new());
    };
    *lock(&open.lease) = Some((l.id, l.state));
    let grant = crate::store::LeaseGrant { version: l.version, parent: l.parent, state: l.state, epoch: l.epoch, breaking: l.breaking_to.is_some() };
    let asked = contexts.iter().find(|(n, _)| *n == b"RqLs").and_then(|(_, d)| crate::handlers::lease::parse_request(d, id.client).ok());
    let req = asked.unwrap_or(crate::store::LeaseRequest { id, version: l.version, parent: l.parent, state: l.state, epoch: l.epoch });
    // The response has the form of the request (a v1 request gets a v1 answer).
    let grant = if req.version < 2 { crate::store::LeaseGrant { version: 1, ..grant } } else { grant };
    (l.state, vec![(&b"RqLs"[..], crate::handlers::lease::response(&req, &grant))])
}

/// A session is ending without a LOGOFF (its connection is gone, or a
/// reconnecting client named it as its previous session): whether `open`
/// stays, disconnected, instead of being closed. It stays when it is
/// durable and still holds handle caching (a break since may have taken
/// it: then it closes, MS-SMB2 3.3.7.1).
pub fn keep(server: &Arc<Server>, open: &Arc<Open>) -> bool {
    let Some(info) = lock(&open.durable).clone().filter(|i| i.granted) else { return false };
    if open.is_closed() || !crate::handlers::oplock::holds_handle_caching(server, open) {
        return false;
    }
    let until = Server::now_ms().saturating_add(info.timeout_ms);
    let waiters = match server.store.durable_disconnect(open.persistent_id, until) {
        Ok(Some(w)) => w,
        Ok(None) => return false,
        Err(e) => {
            warn!("durable open not kept: {e}");
            return false;
        }
    };
    // Breaks can no longer be sent to it: one that is needed closes it
    // (see `break_disconnected`).
    lock(&server.oplock_opens).remove(&open.volatile_id);
    info!(open = open.volatile_id, path = %lock(&open.path), timeout_ms = info.timeout_ms, "durable handle disconnected, kept");
    server.durable.insert(server, open.clone(), until);
    // A reconnect, here or on another worker, may be waiting for this
    // (`wait_disconnected`).
    if let Some(key) = open.file_key {
        for w in waiters {
            server.wake(w, key.into());
        }
    }
    server.file_events.bump();
    // A break that started before (its notice went to the connection that
    // is gone, or came while the open was neither reachable nor in the
    // table) can never be acknowledged: the open closes now, as one that a
    // break finds disconnected, so the opener waiting for it goes on at once
    // instead of at the break timeout.
    if break_in_progress(server, open) {
        if let Some(o) = server.durable.take_volatile(open.volatile_id) {
            info!(open = o.volatile_id, path = %lock(&o.path), "disconnected durable handle closed: a break of its oplock or lease was in progress");
            expire(server, &o);
        }
    }
    true
}

/// Whether the store has a break in progress for `open`'s oplock or for
/// the lease it is under.
fn break_in_progress(server: &Server, open: &Open) -> bool {
    let Some(key) = open.file_key else { return false };
    let id = server.open_id(open.volatile_id);
    match server.store.oplocks(key.into()) {
        Ok(r) => r.holders.iter().any(|h| h.open == id && h.breaking_to.is_some()) || r.leases.iter().any(|l| l.opens.contains(&id) && l.breaking_to.is_some()),
        Err(e) => {
            warn!("oplock record of a disconnecting open: {e}");
            false
        }
    }
}

/// A break is due for this worker's open `volatile` and nobody can receive
/// it: if it is a disconnected durable open, it is closed (which ends the
/// break and wakes the opener waiting for it).
pub fn break_disconnected(server: &Server, volatile: u64) {
    if let Some(open) = server.durable.take_volatile(volatile) {
        info!(open = volatile, path = %lock(&open.path), "disconnected durable handle closed: another open needs its oplock broken");
        expire(server, &open);
    }
}

/// Closes a disconnected open for good.
fn expire(server: &Server, open: &Open) {
    open.close(server);
}

/// The close of an open: its durable record, if any, goes. The workers that
/// waited for the record, for the caller to wake once the rest of the open
/// is released.
pub fn on_close(server: &Server, open: &Open) -> Option<Vec<u32>> {
    let Some(info) = lock(&open.durable).take() else { return None };
    if info.version == 2 {
        server.replay.remove(&(info.client_guid, info.create_guid), open.volatile_id);
    }
    // The record goes, unless another worker took the open over (its record
    // names that worker's open now).
    let ours = |r: &DurableRecord| r.open == server.open_id(open.volatile_id);
    if info.granted && server.store.durable_get(open.persistent_id).ok().flatten().is_some_and(|r| ours(&r)) {
        match server.store.durable_remove(open.persistent_id) {
            Ok(Some(gone)) => return Some(gone.waiters),
            Ok(None) => {}
            Err(e) => warn!("durable record of a closed open kept: {e}"),
        }
    }
    None
}

/// A LOCK on a durable open of a 3.x connection, or on any open when the
/// server does multichannel (a LOCK may then be replayed on another
/// channel; Samba checks so too) (MS-SMB2 3.3.5.14): its
/// LockSequence (number: low 4 bits; index: the 28 above, 1 to 64 used).
/// A LOCK whose number is the one recorded at its index was done already
/// (the client replays it after a lost connection): it succeeds without
/// locking again. Otherwise the entry is invalidated now and set when the
/// LOCK succeeds.
pub struct LockSequence {
    open: Arc<Open>,
    index: usize,
    number: u8,
    pub replayed: bool,
}

impl LockSequence {
    pub fn check(open: Arc<Open>, msg: &[u8], smb3: bool, multichannel: bool) -> Option<LockSequence> {
        if !smb3 || !(multichannel || lock(&open.durable).as_ref().is_some_and(|i| i.granted)) {
            return None;
        }
        let b = msg.get(crate::wire::header::HEADER_LEN + 4..crate::wire::header::HEADER_LEN + 8)?;
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let (number, index) = ((v & 0xF) as u8, (v >> 4) as usize);
        if !(1..=64).contains(&index) {
            return None;
        }
        let replayed = {
            let mut seqs = lock(&open.lock_sequences);
            let replayed = seqs[index - 1] == number;
            if !replayed {
                seqs[index - 1] = 0xFF;
            }
            replayed
        };
        Some(LockSequence { open, index, number, replayed })
    }

    /// The LOCK succeeded.
    pub fn record(self) {
        lock(&self.open.lock_sequences)[self.index - 1] = self.number;
    }
}

/// This worker's disconnected durable opens, by persistent id, with when
/// each expires (ms since the Unix epoch), and whether the scavenger runs.
#[derive(Default)]
pub struct Disconnected {
    inner: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    opens: HashMap<u64, (Arc<Open>, u64)>,
    scavenger: bool,
}

impl Disconnected {
    pub fn len(&self) -> usize {
        lock(&self.inner).opens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The disconnected opens, for `smbdirect status`: (persistent id,
    /// share, path, until when it waits, ms since the Unix epoch), by id.
    pub fn list(&self) -> Vec<(u64, String, String, u64)> {
        let mut v: Vec<_> = lock(&self.inner).opens.iter().map(|(id, (o, until))| (*id, o.share.cfg.name.clone(), lock(&o.path).clone(), *until)).collect();
        v.sort_by_key(|e| e.0);
        v
    }

    fn insert(&self, server: &Arc<Server>, open: Arc<Open>, until: u64) {
        let mut t = lock(&self.inner);
        t.opens.insert(open.persistent_id, (open, until));
        if !t.scavenger {
            t.scavenger = true;
            let weak = Arc::downgrade(server);
            let r = std::thread::Builder::new().name("smb-durable".into()).stack_size(256 * 1024).spawn(move || scavenge(weak));
            if let Err(e) = r {
                warn!("durable scavenger not started: {e}");
                t.scavenger = false;
            }
        }
    }

    fn put_back(&self, server: &Arc<Server>, open: Arc<Open>) {
        let until = server.store.durable_get(open.persistent_id).ok().flatten().and_then(|r| r.disconnected_until).unwrap_or(0);
        self.insert(server, open, until);
    }

    fn take(&self, persistent: u64) -> Option<Arc<Open>> {
        lock(&self.inner).opens.remove(&persistent).map(|(o, _)| o)
    }

    fn take_matching(&self, f: impl Fn(&Open) -> bool) -> Vec<Arc<Open>> {
        let mut t = lock(&self.inner);
        let ids: Vec<u64> = t.opens.iter().filter(|(_, (o, _))| f(o)).map(|(id, _)| *id).collect();
        ids.into_iter().filter_map(|id| t.opens.remove(&id)).map(|(o, _)| o).collect()
    }

    fn take_volatile(&self, volatile: u64) -> Option<Arc<Open>> {
        let mut t = lock(&self.inner);
        let id = t.opens.iter().find(|(_, (o, _))| o.volatile_id == volatile).map(|(id, _)| *id)?;
        t.opens.remove(&id).map(|(o, _)| o)
    }

    /// Drops, without closing them (no state of theirs is left under their
    /// ids), the disconnected opens another worker took over: their store
    /// record names another open now, or is gone.
    fn forget_moved(&self, server: &Server) {
        let opens: Vec<(u64, u64)> = lock(&self.inner).opens.iter().map(|(id, (o, _))| (*id, o.volatile_id)).collect();
        for (pid, volatile) in opens {
            let moved = match server.store.durable_get(pid) {
                Ok(r) => r.is_none_or(|r| r.open != server.open_id(volatile)),
                Err(_) => false,
            };
            if moved && lock(&self.inner).opens.remove(&pid).is_some() {
                info!(open = volatile, "disconnected durable handle taken over by another worker: descriptor dropped");
            }
        }
    }

    /// Takes the opens expired at `now`; false (and the scavenger stops)
    /// when none is left waiting.
    fn expired(&self, now: u64, out: &mut Vec<Arc<Open>>) -> bool {
        let mut t = lock(&self.inner);
        let ids: Vec<u64> = t.opens.iter().filter(|(_, (_, until))| *until <= now).map(|(id, _)| *id).collect();
        for id in ids {
            if let Some((o, _)) = t.opens.remove(&id) {
                out.push(o);
            }
        }
        if t.opens.is_empty() {
            t.scavenger = false;
            return false;
        }
        true
    }
}

/// The scavenger: closes disconnected opens whose time ran out; ends when
/// none is left (or the server is gone).
fn scavenge(server: std::sync::Weak<Server>) {
    // Started within a user's CREATE: run as the server (identity.rs).
    crate::identity::reset_thread();
    loop {
        let Some(s) = server.upgrade() else { return };
        s.durable.forget_moved(&s);
        let mut due = Vec::new();
        let more = s.durable.expired(Server::now_ms(), &mut due);
        for o in due {
            info!(open = o.volatile_id, path = %lock(&o.path), "disconnected durable handle timed out: closed");
            expire(&s, &o);
        }
        drop(s);
        if !more {
            return;
        }
        std::thread::sleep(SCAVENGE_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(name: &'a [u8], data: &'a [u8]) -> (&'a [u8], &'a [u8]) {
        (name, data)
    }

    #[test]
    fn contexts_combine_as_the_spec_says() {
        let z16 = [0u8; 16];
        let mut q2 = [0u8; 32];
        q2[..4].copy_from_slice(&1234u32.to_le_bytes());
        q2[4] = 2;
        q2[16..].copy_from_slice(&[7; 16]);
        let mut c2 = [0u8; 36];
        c2[..16].copy_from_slice(&[1; 16]);
        c2[16..32].copy_from_slice(&[7; 16]);
        assert_eq!(parse(&[], true), Ok(Request::None));
        assert_eq!(parse(&[ctx(b"DHnQ", &z16)], true), Ok(Request::V1));
        assert_eq!(parse(&[ctx(b"DH2Q", &q2)], true), Ok(Request::V2 { timeout_ms: 1234, flags: 2, create_guid: [7; 16] }));
        assert_eq!(parse(&[ctx(b"DH2Q", &q2)], false), Ok(Request::None), "v2 is 3.x only");
        assert_eq!(parse(&[ctx(b"DHnQ", &z16), ctx(b"DH2Q", &q2)], true), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(parse(&[ctx(b"DHnC", &z16), ctx(b"DH2Q", &q2)], true), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(parse(&[ctx(b"DH2C", &c2), ctx(b"DHnQ", &z16)], true), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(parse(&[ctx(b"DHnQ", &z16[..8])], true), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(parse(&[ctx(b"DH2C", &c2[..32])], true), Err(NtStatus::INVALID_PARAMETER));
        // A reconnect takes a DHnQ (ignored) and a lease request, nothing else.
        assert_eq!(parse(&[ctx(b"DHnC", &[1; 16]), ctx(b"DHnQ", &z16)], true), Ok(Request::ReconnectV1 { file_id: [1; 16] }));
        assert_eq!(parse(&[ctx(b"DHnC", &[1; 16]), ctx(b"MxAc", &[])], true), Err(NtStatus::OBJECT_NAME_NOT_FOUND));
        assert_eq!(parse(&[ctx(b"DH2C", &c2)], true), Ok(Request::ReconnectV2 { file_id: [1; 16], create_guid: [7; 16], flags: 0 }));
        assert_eq!(parse(&[ctx(b"DH2C", &c2), ctx(b"QFid", &[])], true), Err(NtStatus::OBJECT_NAME_NOT_FOUND));
    }

    #[test]
    fn v2_timeouts() {
        assert_eq!(v2_timeout(0), V2_DEFAULT_TIMEOUT_MS);
        assert_eq!(v2_timeout(1000), 1000);
        assert_eq!(v2_timeout(u32::MAX), V2_MAX_TIMEOUT_MS);
    }
}
