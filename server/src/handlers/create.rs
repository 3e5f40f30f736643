//! CREATE: open or create a file or directory (or a named pipe on IPC$),
//! with dispositions, share-mode checks and create contexts.

use super::*;
use crate::conn::{go_async, Connection, Ctx};
use crate::objects::{lock, store_status, DirCursor, Open, OpenKind, OplockTarget, Server, Session, Tree};
use crate::store::oplock::{LEVEL_BATCH, LEVEL_EXCLUSIVE, LEVEL_II};
use crate::store::{FileKey, OpenCheck, OpenError, ShareModeEntry};
use crate::transport::MessageSink;
use std::time::{Duration, Instant};
use crate::vfs::{self, streams::StreamSpec, FileStat};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{parse_create_contexts, put_create_context, CreateReq, SecurityDescriptor};
use crate::wire::messages::{SECINFO_DACL, SECINFO_GROUP, SECINFO_OWNER, SECINFO_SACL, SE_DACL_PRESENT};
use crate::wire::status::NtStatus;
use crate::wire::{utf16_to_string, Put};
use rustix::fs::OFlags;
use std::sync::{Arc, Mutex};
use tracing::debug;

pub const FILE_SUPERSEDE: u32 = 0;
pub const FILE_OPEN: u32 = 1;
pub const FILE_CREATE: u32 = 2;
pub const FILE_OPEN_IF: u32 = 3;
pub const FILE_OVERWRITE: u32 = 4;
pub const FILE_OVERWRITE_IF: u32 = 5;

pub const OPT_DIRECTORY_FILE: u32 = 0x1;
pub const OPT_NON_DIRECTORY_FILE: u32 = 0x40;
pub const OPT_CREATE_TREE_CONNECTION: u32 = 0x80;
pub const OPT_DELETE_ON_CLOSE: u32 = 0x1000;
pub const OPT_OPEN_BY_FILE_ID: u32 = 0x2000;
pub const OPT_RESERVE_OPFILTER: u32 = 0x0010_0000;
/// CreateOptions bits no NT file system defines.
pub const OPT_INVALID_MASK: u32 = 0xFF00_0000;

/// FileAttributes a CREATE may carry (MS-FSCC 2.6): everything defined but
/// DEVICE, VOLUME (the old label bit) and INTEGRITY_STREAM and higher.
pub const CREATE_VALID_ATTRS: u32 = 0x7FB7;

/// Access bits that name no right: reserved specific rights (bits 9-15),
/// reserved standard rights (bits 21-23) and bits 26-27.
pub const ACCESS_INVALID_MASK: u32 = 0x0CE0_FE00;

/// How often a CREATE held up by another program's file lease tries again (ms).
const KERNEL_RETRY_MS: u64 = 200;

/// STATUS_BAD_IMPERSONATION_LEVEL (MS-ERREF 2.3.1).
pub const BAD_IMPERSONATION_LEVEL: NtStatus = NtStatus(0xC000_00A5);
/// SECURITY_DELEGATION, the highest ImpersonationLevel (MS-SMB2 2.2.13).
const IMPERSONATION_DELEGATE: u32 = 3;

pub(super) const ACTION_SUPERSEDED: u32 = 0;
pub(super) const ACTION_OPENED: u32 = 1;
pub(super) const ACTION_CREATED: u32 = 2;
pub(super) const ACTION_OVERWRITTEN: u32 = 3;

pub const SHARE_READ: u32 = 1;
pub const SHARE_WRITE: u32 = 2;
pub const SHARE_DELETE: u32 = 4;

/// MS-FSA 2.1.5.1.2.1: does a new open (access, share) conflict with an
/// existing one? (The store applies this rule to every open of the file.)
pub fn share_conflict(existing: (u32, u32), new_access: u32, new_share: u32) -> bool {
    crate::store::records::share_conflict(existing, new_access, new_share)
}

/// What a CREATE works with, kept so that one blocked by an oplock break
/// can be run again on another thread.
#[derive(Clone)]
struct CreateCall {
    server: Arc<Server>,
    session: Arc<Session>,
    tree: Arc<Tree>,
    sink: Arc<dyn MessageSink>,
    /// The connection's ClientGuid and whether it speaks 3.x (durable v2, replay).
    client_guid: [u8; 16],
    smb3: bool,
    /// A try after waiting for a break: its replay handling was done by the first.
    retry: bool,
}

pub fn create(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    if let Err(e) = CreateReq::parse(ctx.msg) {
        debug!("bad CREATE: {e}");
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let mut call = CreateCall {
        server: conn.server.clone(),
        session: ctx.session()?.clone(),
        tree: ctx.tree()?.clone(),
        sink: conn.sink.clone(),
        client_guid: conn.client_guid,
        smb3: conn.is_smb3(),
        retry: false,
    };
    let mut seen = call.server.file_events.generation();
    let mut blocked = None;
    match create_in(&call, ctx.msg, out, &mut blocked) {
        Err(NtStatus::PENDING) if blocked.is_some() => call.retry = true,
        r => return r,
    }
    let Some((key, mut until)) = blocked else { return Err(NtStatus::INTERNAL_ERROR) };
    let server = call.server.clone();
    // A replay of this CREATE while it waits is told FILE_NOT_AVAILABLE.
    let replay_guard = durable::replay_key(ctx.msg, call.client_guid, call.smb3).map(|k| server.replay.pending(k));
    let pending = match go_async(conn, ctx) {
        Ok(p) => p,
        Err(_) => {
            // Not the last request of a compound: this one cannot go async,
            // so it waits here (a holder on this connection then answers
            // only after the break timeout).
            loop {
                seen = server.file_events.wait(seen, deadline(until));
                let at = out.len();
                let mut again = None;
                match create_in(&call, ctx.msg, out, &mut again) {
                    Err(NtStatus::PENDING) if again.is_some() => {
                        out.truncate(at);
                        until = again.map_or(until, |a| a.1);
                    }
                    r => {
                        forget_wait(&server, key);
                        return r;
                    }
                }
            }
        }
    };
    debug!(async_id = pending.async_id, "CREATE waits for an oplock break");
    // A CANCEL or the end of the connection wakes the wait below at once.
    let weak = Arc::downgrade(&server);
    pending.on_stop(Arc::new(move |_| {
        if let Some(s) = weak.upgrade() {
            s.file_events.bump();
        }
    }));
    let msg = ctx.msg.to_vec();
    let r = std::thread::Builder::new().name("smb-create".into()).stack_size(512 * 1024).spawn(move || {
        // The retried CREATE runs as the tree's user, as the first try did.
        let Ok(_identity) = crate::identity::Guard::enter(call.tree.creds.as_ref()) else {
            forget_wait(&server, key);
            return pending.finish(NtStatus::ACCESS_DENIED, None);
        };
        let detachable = replay_guard.is_some();
        let _replay_guard = replay_guard;
        // `None` once detached: a DH2Q CREATE whose connection went while
        // its session lives on (on another channel) goes on without it, so
        // that a replay on another channel gets FILE_NOT_AVAILABLE meanwhile
        // and then the open it made (MS-SMB2 3.3.5.9.10; Samba does so).
        let mut pending = Some(pending);
        let finish = |p: &mut Option<crate::asyncop::Pending>, st: NtStatus, body: Option<&[u8]>| {
            if let Some(p) = p.take() {
                p.finish(st, body);
            }
        };
        loop {
            // Woken by the file's events, by a CANCEL (the stop hook above) or
            // at the break's deadline.
            let now_seen = server.file_events.wait(seen, deadline(until));
            if let Some(why) = pending.as_ref().and_then(|p| p.stop.get()) {
                let detach = detachable && matches!(why, crate::asyncop::Stop::Disconnected) && call.session.is_valid();
                finish(&mut pending, NtStatus::CANCELLED, None);
                if !detach {
                    forget_wait(&server, key);
                    return;
                }
                debug!("a waiting DH2Q CREATE lost its connection; it goes on for its session");
            }
            if now_seen == seen && Server::now_ms() < until {
                continue;
            }
            seen = server.file_events.generation();
            let mut out = vec![0u8; HEADER_LEN];
            let mut again = None;
            match create_in(&call, &msg, &mut out, &mut again) {
                Err(NtStatus::PENDING) if again.is_some() => until = again.map_or(until, |a| a.1),
                Ok(()) => {
                    forget_wait(&server, key);
                    if pending.is_none() && !call.session.is_valid() {
                        // Detached and its session ended meanwhile: nobody can use the open.
                        let vol = out.get(HEADER_LEN + 72..HEADER_LEN + 80).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
                        if let Some(o) = vol.and_then(|v| lock(&call.session.opens).remove(&v)) {
                            o.close(&server);
                        }
                    }
                    return finish(&mut pending, NtStatus::SUCCESS, out.get(HEADER_LEN..));
                }
                Err(e) => {
                    forget_wait(&server, key);
                    return finish(&mut pending, e, None);
                }
            }
        }
    });
    if let Err(e) = r {
        tracing::warn!("cannot start a waiting CREATE: {e}");
        forget_wait(&conn.server, key);
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    Err(NtStatus::PENDING)
}

/// The instant a break that times out at `until` (ms since the Unix epoch) ends.
/// Admits a new open of the file (or stream) `key`: unless it was just
/// created, breaks the oplocks and leases it conflicts with (a break that
/// needs an acknowledgment makes the CREATE wait: PENDING with `blocked`
/// set), then the share-mode check and the new entry, in one step for all
/// workers.
#[allow(clippy::too_many_arguments)]
pub(super) fn admit(
    server: &Server,
    key: (u64, u64),
    entry: ShareModeEntry,
    lease: Option<&crate::store::lease::LeaseId>,
    retry: bool,
    action: u32,
    level2: bool,
    blocked: &mut Option<(FileKey, u64)>,
) -> Result<(), NtStatus> {
    if action != ACTION_CREATED {
        let overwrite = matches!(action, ACTION_OVERWRITTEN | ACTION_SUPERSEDED);
        let timeout = server.cfg.limits.oplock_break_timeout.as_millis() as u64;
        let (check, notify) = server.store.oplock_open(key.into(), &entry, lease, retry, overwrite, level2, Server::now_ms(), timeout, server.worker_id).map_err(store_status)?;
        for w in notify {
            server.wake(w, key.into());
        }
        if let OpenCheck::Wait { until } = check {
            *blocked = Some((key.into(), until));
            return Err(NtStatus::PENDING);
        }
    }
    match server.store.open_file(key.into(), entry) {
        Ok(()) => Ok(()),
        Err(OpenError::DeletePending) => Err(NtStatus::DELETE_PENDING),
        Err(OpenError::SharingViolation) => Err(NtStatus::SHARING_VIOLATION),
        Err(OpenError::Store(e)) => Err(store_status(e)),
    }
}

fn deadline(until: u64) -> Instant {
    Instant::now() + Duration::from_millis(until.saturating_sub(Server::now_ms()))
}

/// This worker no longer waits for a break of `key`.
fn forget_wait(server: &Server, key: FileKey) {
    if let Err(e) = server.store.oplock_unwait(key, server.worker_id) {
        tracing::warn!("oplock waiter not removed: {e}");
    }
}

/// One try at a CREATE. When an oplock must break first, the break is
/// started and `blocked` says for which file and until when (the break
/// timeout) the caller waits before trying again; the result is then
/// PENDING.
fn create_in(call: &CreateCall, msg: &[u8], out: &mut Vec<u8>, blocked: &mut Option<(FileKey, u64)>) -> Result<(), NtStatus> {
    let req = CreateReq::parse(msg).map_err(|e| {
        debug!("bad CREATE: {e}");
        NtStatus::INVALID_PARAMETER
    })?;
    let server = &call.server;
    let tree = call.tree.clone();
    let session = call.session.clone();
    let name = utf16_to_string(req.name).map_err(|_| NtStatus::OBJECT_NAME_INVALID)?;
    debug!(name = %name, disposition = req.disposition, options = format_args!("{:#x}", req.options), access = format_args!("{:#x}", req.desired_access), oplock = req.oplock_level, "CREATE");
    // Durable reconnect and replay come before the checks of a new open.
    let durable_side = durable::CreateSide { server, session: &session, tree: &tree, sink: &call.sink, client_guid: call.client_guid };
    let (durable_req, early) = durable_hooks(&durable_side, &req, msg, &name, call.smb3, call.retry)?;
    if let Some((open, action, level, ctx)) = early {
        write_response(out, &open, &open.stat()?, action, level, &ctx);
        return Ok(());
    }
    check_create_params(req.desired_access, req.options, req.file_attributes, req.impersonation)?;
    if req.disposition > FILE_OVERWRITE_IF {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if req.oplock_level > 0x09 && req.oplock_level != 0xFF {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    // `max open files`: Samba answers its own cap with TOO_MANY_OPENED_FILES.
    let max_open = server.cfg.limits.max_open_files;
    if !crate::config::Limits::under(lock(&session.opens).len(), max_open) {
        tracing::warn!(session = session.id, "CREATE refused: max open files ({max_open}) of the session reached");
        return Err(NtStatus::TOO_MANY_OPENED_FILES);
    }
    let contexts = parse_create_contexts(req.contexts).map_err(|e| {
        debug!("bad create contexts: {e}");
        NtStatus::INVALID_PARAMETER
    })?;

    // Create contexts acted on before the open (MS-SMB2 3.3.5.9.x).
    let mut alloc_size: Option<u64> = None;
    let mut given_sd: Option<SecurityDescriptor> = None;
    for (cname, data) in &contexts {
        match *cname {
            b"SecD" => {
                let sd = SecurityDescriptor::parse(data).map_err(|_| NtStatus::INVALID_PARAMETER)?;
                // Setting a SACL needs SeSecurityPrivilege, which no user here holds.
                if sd_parts(&sd) & SECINFO_SACL != 0 {
                    return Err(NtStatus::PRIVILEGE_NOT_HELD);
                }
                given_sd = Some(sd);
            }
            // No previous versions (snapshots) exist to open.
            b"TWrp" => return Err(NtStatus::OBJECT_NAME_NOT_FOUND),
            b"AlSi" => {
                let b: [u8; 8] = (*data).try_into().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                alloc_size = Some(u64::from_le_bytes(b));
            }
            _ => {}
        }
    }

    if tree.share.is_ipc() {
        let pipe = crate::ipc::Pipe::open(&name, server)?;
        let id = server.new_id();
        let open = Arc::new(Open::new(id, tree.id, tree.share.clone(), None, name, OpenKind::Pipe(Mutex::new(pipe)), map_generic(req.desired_access), req.share_access, req.options, None));
        lock(&session.opens).insert(id, open.clone());
        write_response(out, &open, &FileStat { attrs: vfs::ATTR_NORMAL, ..Default::default() }, ACTION_OPENED, 0, &[]);
        return Ok(());
    }
    let root = tree.share.root.as_ref().ok_or(NtStatus::INVALID_DEVICE_REQUEST)?;
    // The stream part, if any (handlers/streams.rs for a named stream).
    let (base_name, stream) = vfs::streams::split_stream(&name)?;
    let rel = root.resolve_case(&vfs::validate_name(base_name)?);
    let mut req = req;
    match stream {
        // The unnamed data stream: a directory has none.
        StreamSpec::MainData if req.options & OPT_DIRECTORY_FILE != 0 => return Err(NtStatus::NOT_A_DIRECTORY),
        // A directory's index: the directory itself.
        StreamSpec::Index if req.options & OPT_NON_DIRECTORY_FILE != 0 => return Err(NtStatus::FILE_IS_A_DIRECTORY),
        StreamSpec::Index => req.options |= OPT_DIRECTORY_FILE,
        _ => {}
    }
    let data_stream = stream == StreamSpec::MainData;
    // A lease asked for (RqLs); its key may name a lease of this file only.
    let oplocks = tree.share.cfg.oplocks;
    let lease_req = if oplocks { super::lease::requested(server, &session, req.oplock_level, &contexts, call.client_guid)? } else { None };
    // (A stream's lease key is checked against the stream: handlers/streams.rs.)
    if let (Some(lr), false) = (&lease_req, matches!(stream, StreamSpec::Named(_))) {
        super::lease::check_key_file(server, root, &rel, lr)?;
    }

    let mut desired = map_generic(req.desired_access);
    let max_allowed = desired & MAXIMUM_ALLOWED != 0;
    desired &= !MAXIMUM_ALLOWED;
    if max_allowed {
        desired |= tree.maximal_access;
    }
    if req.options & OPT_DELETE_ON_CLOSE != 0 && desired & DELETE == 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let creates = req.disposition != FILE_OPEN;
    if tree.read_only {
        if max_allowed {
            desired &= READ_ONLY_ACCESS;
        }
        if desired & WRITE_ACCESS_BITS != 0 || req.options & OPT_DELETE_ON_CLOSE != 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
    }

    if let StreamSpec::Named(sname) = &stream {
        let lease_req = lease_req.as_ref();
        let c = super::streams::StreamCreate { server, session: &session, tree: &tree, req: &req, contexts: &contexts, rel: &rel, stream: sname, desired, max_allowed, lease_req, sink: &call.sink, retry: call.retry };
        return super::streams::create_stream(&c, out, blocked);
    }

    // A name another client creates between our lookup and our create is
    // looked up again (OPEN_IF and the like then open it).
    let mut attempts = 0;
    let (fd, action) = loop {
        attempts += 1;
        let existing = root.lookup(&rel)?;
        // This server cannot store encrypted (EFS) files; say so when asked to
        // make one, as a stand-alone Windows server does.
        let makes_new = match &existing {
            None => req.disposition != FILE_OPEN && req.disposition != FILE_OVERWRITE,
            Some(st) => !st.is_dir && matches!(req.disposition, FILE_SUPERSEDE | FILE_OVERWRITE | FILE_OVERWRITE_IF),
        };
        if makes_new && req.file_attributes & vfs::ATTR_ENCRYPTED != 0 {
            return Err(NtStatus::ACCESS_DENIED);
        }
        if let Some(st) = &existing {
            if server.delete_pending((st.dev, st.ino)) {
                return Err(NtStatus::DELETE_PENDING);
            }
            if st.is_dir && (req.options & OPT_NON_DIRECTORY_FILE != 0 || data_stream) {
                return Err(NtStatus::FILE_IS_A_DIRECTORY);
            }
            if !st.is_dir && req.options & OPT_DIRECTORY_FILE != 0 {
                return Err(NtStatus::NOT_A_DIRECTORY);
            }
        }
        break match (&existing, req.disposition) {
            (Some(_), FILE_CREATE) => return Err(NtStatus::OBJECT_NAME_COLLISION),
            (None, FILE_OPEN) | (None, FILE_OVERWRITE) => return Err(NtStatus::OBJECT_NAME_NOT_FOUND),
            (Some(st), d) if st.is_dir && matches!(d, FILE_SUPERSEDE | FILE_OVERWRITE | FILE_OVERWRITE_IF) => {
                return Err(NtStatus::INVALID_PARAMETER)
            }
            (Some(st), d) => {
                let overwrite = matches!(d, FILE_SUPERSEDE | FILE_OVERWRITE | FILE_OVERWRITE_IF);
                if overwrite && tree.read_only {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                // The file's descriptor decides what may be granted (its
                // stored one, else the one its mode gives), read through an
                // O_PATH handle before the kernel is asked for more.
                let pfd = root.open_beneath(&rel, OFlags::PATH)?;
                let granted = granted_on(root, &rel, &pfd, &tree)?;
                drop(pfd);
                if max_allowed {
                    desired = (map_generic(req.desired_access) & !MAXIMUM_ALLOWED) | granted;
                }
                // Overwriting needs the right to write, superseding to write
                // and delete (MS-FSA 2.1.5.1.2.1).
                let needed = desired
                    | if overwrite { FILE_WRITE_DATA } else { 0 }
                    | if d == FILE_SUPERSEDE { DELETE } else { 0 };
                if needed & !granted != 0 || desired == 0 {
                    debug!(path = %rel, needed = format_args!("{needed:#x}"), granted = format_args!("{granted:#x}"), "denied by the file's security descriptor");
                    return Err(NtStatus::ACCESS_DENIED);
                }
                let asked_write = |a: u32| overwrite || a & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
                let wants_write = asked_write(desired);
                let flags = if st.is_dir {
                    OFlags::RDONLY | OFlags::DIRECTORY
                } else if wants_write {
                    OFlags::RDWR
                } else {
                    OFlags::RDONLY
                };
                // Our own open would wait for our own kernel oplocks of the
                // file; one another program holds makes this CREATE wait
                // (async, trying again) instead of the connection's thread.
                if tree.share.cfg.kernel_oplocks {
                    crate::kernel_oplock::before_own_open((st.dev, st.ino).into());
                    if !st.is_dir && crate::kernel_oplock::open_would_block(root, &rel, flags) {
                        debug!(path = %rel, "another program's file lease is breaking: the CREATE waits");
                        *blocked = Some(((st.dev, st.ino).into(), Server::now_ms() + KERNEL_RETRY_MS));
                        return Err(NtStatus::PENDING);
                    }
                }
                // The kernel checks the Unix permissions underneath. What
                // MAXIMUM_ALLOWED added and the kernel refuses is left out
                // rather than failing the open.
                let explicit = map_generic(req.desired_access) & !MAXIMUM_ALLOWED;
                let fd = match root.open_beneath(&rel, flags) {
                    Ok(fd) => fd,
                    Err(NtStatus::ACCESS_DENIED) if max_allowed && flags == OFlags::RDWR && !asked_write(explicit) => {
                        desired &= !(FILE_WRITE_DATA | FILE_APPEND_DATA);
                        match root.open_beneath(&rel, OFlags::RDONLY) {
                            Ok(fd) => fd,
                            Err(NtStatus::ACCESS_DENIED) if explicit & (FILE_READ_DATA | FILE_EXECUTE) == 0 => {
                                desired &= !(FILE_READ_DATA | FILE_EXECUTE);
                                root.open_beneath(&rel, OFlags::PATH)?
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Err(NtStatus::ACCESS_DENIED) if !wants_write && explicit & (FILE_READ_DATA | FILE_EXECUTE) == 0 => {
                        if max_allowed {
                            desired &= !(FILE_READ_DATA | FILE_EXECUTE);
                        }
                        root.open_beneath(&rel, OFlags::PATH)?
                    }
                    Err(e) => return Err(e),
                };
                if desired == 0 {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                // As a Unix account (identity.rs), DELETE is what the kernel
                // allows an unlink: asked now, so that a delete-on-close or
                // rename cannot run later with rights the user lacks.
                if tree.creds.is_some() && (desired & DELETE != 0 || d == FILE_SUPERSEDE) && !root.may_delete(&rel) {
                    if max_allowed && req.desired_access & DELETE == 0 && d != FILE_SUPERSEDE {
                        desired &= !DELETE;
                    } else {
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                }
                let action = match d {
                    FILE_SUPERSEDE => ACTION_SUPERSEDED,
                    FILE_OVERWRITE | FILE_OVERWRITE_IF => ACTION_OVERWRITTEN,
                    _ => ACTION_OPENED,
                };
                (fd, action)
            }
            (None, _) => {
                if tree.read_only {
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if rel.is_empty() {
                    return Err(NtStatus::OBJECT_NAME_COLLISION);
                }
                // The directory must let this token add the entry (the
                // kernel checks its Unix permissions as well).
                let is_dir = req.options & OPT_DIRECTORY_FILE != 0;
                let parent = parent_sd(root, &rel);
                let add = if is_dir { FILE_ADD_SUBDIRECTORY } else { FILE_ADD_FILE };
                if let Some((psd, stored)) = &parent {
                    if grant(psd, *stored, &tree) & add == 0 {
                        debug!(path = %rel, "the directory's security descriptor does not let this user add entries");
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                }
                let made = if req.options & OPT_DIRECTORY_FILE != 0 {
                    root.mkdir(&rel).and_then(|()| root.open_beneath(&rel, OFlags::RDONLY | OFlags::DIRECTORY))
                } else {
                    root.create_file(&rel)
                };
                let fd = match made {
                    Err(NtStatus::OBJECT_NAME_COLLISION) if req.disposition != FILE_CREATE && attempts < 3 => continue,
                    r => r?,
                };
                let attrs = req.file_attributes & vfs::SETTABLE_ATTRS;
                if attrs != 0 {
                    let _ = vfs::set_dos_attrs(&fd, attrs | if req.options & OPT_DIRECTORY_FILE != 0 { 0 } else { vfs::ATTR_ARCHIVE });
                }
                if req.options & OPT_DIRECTORY_FILE == 0 {
                    reserve(&fd, alloc_size);
                }
                // The new file's descriptor: the one given with the CREATE
                // (the parts it leaves out from the default), else what it
                // inherits from the directory; with neither nothing is
                // stored and its mode speaks.
                let derived = derived_sd(&fd)?;
                if let Some(sd) = crate::security::new_file_sd(parent.as_ref().map(|(sd, _)| sd), given_sd.as_ref(), is_dir, &tree.token, derived) {
                    if let Err(e) = store_sd(&fd, &sd) {
                        let _ = root.remove(&rel, is_dir);
                        return Err(e);
                    }
                }
                (fd, ACTION_CREATED)
            }
        };
    };
    let _ = creates;
    // EAs sent with a create that makes or replaces the file (ExtA, MS-SMB2 2.2.13.2.1).
    if action != ACTION_OPENED {
        if let Some((_, list)) = contexts.iter().find(|(n, _)| *n == b"ExtA") {
            for ea in vfs::parse_full_ea_list(list)? {
                vfs::set_ea(&fd, &ea)?;
            }
        }
    }
    let mut st = vfs::stat_fd(&fd)?;
    if req.options & OPT_DELETE_ON_CLOSE != 0 && st.attrs & vfs::ATTR_READONLY != 0 {
        return Err(NtStatus::CANNOT_DELETE);
    }
    let key = (st.dev, st.ino);
    // Deleting or overwriting the file must pass its open streams' share modes.
    if desired & DELETE != 0 || matches!(action, ACTION_OVERWRITTEN | ACTION_SUPERSEDED) {
        super::streams::check_streams_allow_delete(server, &fd, key)?;
    }
    let id = server.new_id();
    let entry = ShareModeEntry { open: server.open_id(id), access: desired, share_access: req.share_access, delete_on_close: req.options & OPT_DELETE_ON_CLOSE != 0 };
    // Oplocks other opens hold on the file break first (MS-FSA 2.1.5.1.2);
    // a break that needs an acknowledgment makes this CREATE wait.
    let level2 = tree.share.cfg.level2_oplocks;
    admit(server, key, entry, lease_req.as_ref().map(|l| &l.id), call.retry, action, level2, blocked)?;
    if entry.delete_on_close {
        server.note_delete_path(key, &tree.share.cfg.name, &rel);
    }
    if matches!(action, ACTION_OVERWRITTEN | ACTION_SUPERSEDED) {
        let r = rustix::fs::ftruncate(&fd, 0).map_err(NtStatus::from_errno);
        if let Err(e) = r {
            release(server, key, id);
            return Err(e);
        }
        // The file's named streams go with its data (MS-FSA 2.1.5.1.2.2).
        if let Err(e) = vfs::streams::remove_all(&fd) {
            tracing::info!(path = %rel, "streams of an overwritten file kept: {e}");
        }
        let attrs = req.file_attributes & vfs::SETTABLE_ATTRS;
        let _ = vfs::set_dos_attrs(&fd, attrs | vfs::ATTR_ARCHIVE);
        reserve(&fd, alloc_size);
        st = vfs::stat_fd(&fd).inspect_err(|_| release(server, key, id))?;
    }
    let kind = if st.is_dir { OpenKind::Dir(Mutex::new(DirCursor::default())) } else { OpenKind::File };
    let open = Arc::new(Open::new(id, tree.id, tree.share.clone(), Some(fd), rel.clone(), kind, desired, req.share_access, req.options, Some(key)));
    if req.options & OPT_DELETE_ON_CLOSE != 0 {
        *lock(&open.delete_on_close) = true;
    }
    // The oplock asked for, as far as the file's other opens allow.
    let requested = req.oplock_level;
    let mut lease_ctx = None;
    let lease_here = lease_req.as_ref().filter(|lr| !st.is_dir || super::lease::directory_lease_allowed(server, lr));
    // `kernel oplocks`: no more caching than the kernel's file lease covers.
    let wants_oplock = oplocks && !st.is_dir && matches!(requested, LEVEL_II | LEVEL_EXCLUSIVE | LEVEL_BATCH);
    let kernel = tree.share.cfg.kernel_oplocks && !st.is_dir && (wants_oplock || lease_here.is_some_and(|l| l.state != 0));
    let cover = if kernel { crate::kernel_oplock::take(server, &open) } else { crate::kernel_oplock::Cover::Write };
    let capped;
    let lease_here = match (lease_here, cover) {
        (Some(lr), crate::kernel_oplock::Cover::Read) => {
            capped = crate::store::LeaseRequest { state: lr.state & !crate::store::lease::WRITE, ..*lr };
            Some(&capped)
        }
        (Some(lr), crate::kernel_oplock::Cover::Nothing) => {
            capped = crate::store::LeaseRequest { state: 0, ..*lr };
            Some(&capped)
        }
        (l, _) => l,
    };
    let requested = match cover {
        crate::kernel_oplock::Cover::Write => requested,
        crate::kernel_oplock::Cover::Read if wants_oplock => LEVEL_II,
        _ => 0,
    };
    let granted = if let Some(lr) = lease_here {
        match super::lease::grant(server, key.into(), id, lr, &open) {
            Ok(Some(ctx)) => {
                lease_ctx = Some(ctx);
                super::lease::OPLOCK_LEVEL_LEASE
            }
            Ok(None) => 0,
            Err(e) => {
                release(server, key, id);
                return Err(e);
            }
        }
    } else if oplocks && !st.is_dir && matches!(requested, LEVEL_II | LEVEL_EXCLUSIVE | LEVEL_BATCH) {
        server.store.oplock_grant(key.into(), server.open_id(id), requested, level2).unwrap_or_else(|e| {
            tracing::warn!("oplock not granted: {e}");
            0
        })
    } else {
        0
    };
    if kernel {
        let lease_state = lock(&open.lease).map(|(_, st)| st);
        let any = match lease_state {
            Some(st) => st != 0,
            None => granted != 0,
        };
        let write = lease_state.map_or(matches!(granted, LEVEL_EXCLUSIVE | LEVEL_BATCH), |st| st & crate::store::lease::WRITE != 0);
        crate::kernel_oplock::granted(server, &open, any, write);
    }
    if granted != 0 {
        *lock(&open.oplock_level) = granted;
        let target = OplockTarget { open: Arc::downgrade(&open), session: Arc::downgrade(&session), sink: call.sink.clone() };
        lock(&server.oplock_opens).insert(id, target);
    }
    *lock(&open.parent_lease) = lease_req.as_ref().and_then(super::lease::parent_of);
    lock(&session.opens).insert(id, open.clone());
    debug!(session = session.id, path = %rel, action, oplock = granted, "create");
    // A new or replaced entry changes the directory's listing: its leases
    // (but one the open names as its parent) break.
    if action != ACTION_OPENED {
        super::lease::break_parent(server, root, &rel, *lock(&open.parent_lease));
    }
    let durable_ctx = durable::grant(&durable_side, &open, &durable_req, &contexts, action);

    // Create contexts we answer; unknown ones are ignored (MS-SMB2 3.3.5.9).
    let mut ctx_out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    if let Some(d) = lease_ctx {
        ctx_out.push((b"RqLs", d));
    }
    for (cname, _data) in &contexts {
        match *cname {
            b"MxAc" => {
                // The most this user may be granted on the file now (its
                // descriptor as it is after the create).
                let mut d = Vec::new();
                match open.fd.as_ref().map(|fd| granted_on(root, &rel, fd, &tree)) {
                    Some(Ok(g)) => d.u32(0).u32(g),
                    Some(Err(e)) => d.u32(e.0).u32(0),
                    None => d.u32(0).u32(tree.maximal_access),
                };
                ctx_out.push((b"MxAc", d));
            }
            b"QFid" => {
                let mut d = Vec::new();
                d.u64(st.ino).u64(st.dev).zeros(16);
                ctx_out.push((b"QFid", d));
            }
            _ => {}
        }
    }
    ctx_out.extend(durable_ctx);
    write_response(out, &open, &st, action, granted, &ctx_out);
    Ok(())
}

/// The durable-handle part of a CREATE (handlers/durable.rs): what it asks,
/// and the open it is answered with at once when it reconnects a durable
/// handle (DHnC/DH2C) or replays a durable v2 CREATE.
fn durable_hooks(cs: &durable::CreateSide<'_>, req: &CreateReq<'_>, msg: &[u8], name: &str, smb3: bool, retry: bool) -> Result<(durable::Request, Option<durable::EarlyOpen>), NtStatus> {
    // Malformed contexts are refused later, with the other context checks.
    let Ok(contexts) = parse_create_contexts(req.contexts) else { return Ok((durable::Request::None, None)) };
    let dreq = durable::parse(&contexts, smb3)?;
    if dreq.is_reconnect() {
        let early = durable::reconnect(cs, &dreq, &contexts, name)?;
        return Ok((dreq, Some(early)));
    }
    let replayed = msg.get(16..20).is_some_and(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]) & crate::wire::header::FLAG_REPLAY != 0);
    if let (durable::Request::V2 { create_guid, .. }, false) = (&dreq, retry) {
        if let Some(early) = durable::replay(cs, create_guid, req.oplock_level, &contexts, replayed)? {
            return Ok((dreq, Some(early)));
        }
    }
    durable::close_app_instance(cs, &dreq, &contexts, name);
    Ok((dreq, None))
}

/// The checks MS-SMB2 3.3.5.9 and MS-FSA 2.1.5.1 make on a CREATE's fixed
/// fields before anything is looked up, in the order Windows makes them.
pub fn check_create_params(access: u32, options: u32, attrs: u32, impersonation: u32) -> Result<(), NtStatus> {
    if impersonation > IMPERSONATION_DELEGATE {
        return Err(BAD_IMPERSONATION_LEVEL);
    }
    // No access at all; SYNCHRONIZE alone is a valid open (smbtorture's
    // getinfo_access opens so, as Windows and Samba allow).
    if access & ACCESS_INVALID_MASK != 0 || access == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if access & ACCESS_SYSTEM_SECURITY != 0 {
        return Err(NtStatus::PRIVILEGE_NOT_HELD);
    }
    if options & OPT_INVALID_MASK != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if options & OPT_DIRECTORY_FILE != 0 && options & OPT_NON_DIRECTORY_FILE != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if options & (OPT_CREATE_TREE_CONNECTION | OPT_RESERVE_OPFILTER | OPT_OPEN_BY_FILE_ID) != 0 {
        return Err(NtStatus::NOT_SUPPORTED);
    }
    if attrs & !CREATE_VALID_ATTRS != 0 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    Ok(())
}

/// Where a file's security descriptor is kept once one is set or
/// inherited. A server running as root keeps it in the `trusted.`
/// namespace, which only CAP_SYS_ADMIN reads or writes: no local user can
/// forge or strip it, and writing it needs no Unix write permission on the
/// file (WRITE_DAC is the descriptor's to grant, not the mode's). A server
/// that is not root can only use `user.` (writable by whoever may write the
/// file locally). Samba's `security.NTACL` is not used: its format is
/// Samba's own (NDR with a hash), and we must not make Samba misread ours.
fn xattr_sd() -> &'static str {
    if crate::identity::can_switch() {
        "trusted.smbdirect.sd"
    } else {
        "user.smbdirect.sd"
    }
}
/// FILE_ADD_FILE / FILE_ADD_SUBDIRECTORY: a directory's rights to add entries.
const FILE_ADD_FILE: u32 = 0x2;
const FILE_ADD_SUBDIRECTORY: u32 = 0x4;
/// The largest security descriptor kept (the Linux limit for one xattr value).
const MAX_SD: usize = 64 * 1024;

/// The path of an fd in /proc, for the xattr calls an O_PATH fd refuses
/// (an open with only attribute or security rights is an O_PATH open).
fn proc_path(fd: &rustix::fd::OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The security descriptor a file has when none is stored: from its mode
/// and owner (security::derived_sd).
pub fn derived_sd(fd: &rustix::fd::OwnedFd) -> Result<SecurityDescriptor, NtStatus> {
    let st = rustix::fs::fstat(fd).map_err(NtStatus::from_errno)?;
    let dir = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
    Ok(crate::security::derived_sd(st.st_uid, st.st_gid, st.st_mode & 0o7777, dir))
}

/// The security descriptor stored for the file, if any.
pub fn stored_sd(fd: &rustix::fd::OwnedFd) -> Result<Option<SecurityDescriptor>, NtStatus> {
    let get = |buf: &mut [u8]| match rustix::fs::fgetxattr(fd, xattr_sd(), &mut *buf) {
        Err(rustix::io::Errno::BADF) => rustix::fs::getxattr(proc_path(fd).as_str(), xattr_sd(), &mut *buf),
        r => r,
    };
    // Most descriptors are small: a large buffer only when one is not.
    let mut buf = vec![0u8; 1024];
    let mut r = get(&mut buf);
    if r == Err(rustix::io::Errno::RANGE) {
        buf = vec![0u8; MAX_SD];
        r = get(&mut buf);
    }
    match r {
        Ok(n) => match buf.get(..n).map(SecurityDescriptor::parse) {
            Some(Ok(sd)) => Ok(Some(sd)),
            _ => {
                tracing::warn!("stored security descriptor unreadable; using the one the mode gives");
                Ok(None)
            }
        },
        Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(NtStatus::from_errno(e)),
    }
}

/// A file's security descriptor: the stored one, else the derived one.
pub fn file_sd(fd: &rustix::fd::OwnedFd) -> Result<SecurityDescriptor, NtStatus> {
    match stored_sd(fd)? {
        Some(sd) => Ok(sd),
        None => derived_sd(fd),
    }
}

/// Keeps `sd` as the file's security descriptor (as the server: the
/// `trusted.` namespace needs CAP_SYS_ADMIN, which the thread keeps under a
/// user's fsuid, so no switch is needed).
pub fn store_sd(fd: &rustix::fd::OwnedFd, sd: &SecurityDescriptor) -> Result<(), NtStatus> {
    let bytes = sd.to_bytes(SECINFO_OWNER | SECINFO_GROUP | SECINFO_DACL | SECINFO_SACL);
    if bytes.len() > MAX_SD {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let flags = rustix::fs::XattrFlags::empty();
    let r = match rustix::fs::fsetxattr(fd, xattr_sd(), &bytes, flags) {
        Err(rustix::io::Errno::BADF) => rustix::fs::setxattr(proc_path(fd).as_str(), xattr_sd(), &bytes, flags),
        r => r,
    };
    match r {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTSUP) => Err(NtStatus::NOT_SUPPORTED),
        Err(e) => Err(NtStatus::from_errno(e)),
    }
}

/// The SECINFO_* parts a client's security descriptor carries.
pub fn sd_parts(sd: &SecurityDescriptor) -> u32 {
    let mut p = 0;
    if sd.owner.is_some() {
        p |= SECINFO_OWNER;
    }
    if sd.group.is_some() {
        p |= SECINFO_GROUP;
    }
    if sd.control & SE_DACL_PRESENT != 0 {
        p |= SECINFO_DACL;
    }
    if sd.control & 0x0010 != 0 {
        p |= SECINFO_SACL;
    }
    p
}

/// What `sd` grants this tree's token. Root is granted everything by a
/// descriptor derived from the mode (the kernel lets root do anything the
/// mode says, as Samba lets uid 0), but is held to one a client stored.
fn grant(sd: &SecurityDescriptor, stored: bool, tree: &Tree) -> u32 {
    if tree.token.root && !stored {
        return crate::security::ALL_RIGHTS & tree.maximal_access;
    }
    crate::security::max_allowed(sd, &tree.token) & tree.maximal_access
}

/// A file's descriptor and whether it is a stored one.
fn sd_of(fd: &rustix::fd::OwnedFd) -> Result<(SecurityDescriptor, bool), NtStatus> {
    match stored_sd(fd)? {
        Some(sd) => Ok((sd, true)),
        None => Ok((derived_sd(fd)?, false)),
    }
}

/// The descriptor of the directory holding `rel` and whether it is stored
/// (`None` for the share's root).
fn parent_sd(root: &vfs::ShareRoot, rel: &str) -> Option<(SecurityDescriptor, bool)> {
    if rel.is_empty() {
        return None;
    }
    let parent = vfs::split_parent(rel).map_or("", |(p, _)| p);
    let pfd = root.open_beneath(parent, OFlags::PATH | OFlags::DIRECTORY).ok()?;
    sd_of(&pfd).ok()
}

/// What this tree's token is granted on the directory holding `rel`.
fn parent_granted(root: &vfs::ShareRoot, rel: &str, tree: &Tree) -> u32 {
    parent_sd(root, rel).map_or(0, |(sd, stored)| grant(&sd, stored, tree))
}

/// The most this tree's token may be granted on the file `fd` at `rel`: its
/// descriptor's grant, what the parent's grants over its entries add
/// (DELETE, FILE_READ_ATTRIBUTES), all within what the share allows. The
/// kernel still checks the Unix permissions when the file is opened.
pub fn granted_on(root: &vfs::ShareRoot, rel: &str, fd: &rustix::fd::OwnedFd, tree: &Tree) -> Result<u32, NtStatus> {
    let (sd, stored) = sd_of(fd)?;
    let mut g = grant(&sd, stored, tree);
    if !rel.is_empty() {
        g |= crate::security::rights_from_parent(parent_granted(root, rel, tree));
    }
    Ok(g & tree.maximal_access)
}

/// Applies an SMB2_CREATE_ALLOCATION_SIZE to a new or overwritten file:
/// blocks are reserved without changing the end of file. A file system that
/// cannot reserve simply keeps the smaller allocation (the size is a hint).
fn reserve(fd: &rustix::fd::OwnedFd, alloc_size: Option<u64>) {
    let Some(len) = alloc_size.filter(|l| *l > 0 && *l <= i64::MAX as u64) else { return };
    if let Err(e) = rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::KEEP_SIZE, 0, len) {
        debug!("allocation size {len} not reserved: {e}");
    }
}

/// Takes back the share-mode entry of an open that failed after it was made.
pub(super) fn release(server: &Server, key: (u64, u64), id: u64) {
    if let Err(e) = server.store.close_file(key.into(), server.open_id(id)) {
        tracing::warn!("share-mode entry of a failed open not removed: {e}");
    }
}

pub(super) fn write_response(out: &mut Vec<u8>, open: &Open, st: &FileStat, action: u32, oplock: u8, contexts: &[(&[u8], Vec<u8>)]) {
    let hdr_start = out.len() - HEADER_LEN;
    out.u16(89).u8(oplock).u8(0).u32(action);
    out.u64(st.btime).u64(st.atime).u64(st.mtime).u64(st.ctime).u64(st.alloc).u64(st.size).u32(st.attrs).u32(0);
    out.put(&open.file_id());
    let ctx_fields = out.len();
    out.u32(0).u32(0);
    if contexts.is_empty() {
        out.u8(0);
        return;
    }
    let rel = out.len() - hdr_start;
    out.zeros((8 - rel % 8) % 8);
    let first = out.len();
    let mut prev: Option<usize> = None;
    for (name, data) in contexts {
        if let Some(p) = prev {
            let rel = out.len() - first;
            out.zeros((8 - rel % 8) % 8);
            let next = (out.len() - p) as u32;
            out.set_u32(p, next);
        }
        prev = Some(put_create_context(out, name, data));
    }
    out.set_u32(ctx_fields, (first - hdr_start) as u32);
    out.set_u32(ctx_fields + 4, (out.len() - first) as u32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_modes() {
        // Reader sharing read blocks a writer, allows another reader.
        assert!(share_conflict((FILE_READ_DATA, SHARE_READ), FILE_WRITE_DATA, SHARE_READ | SHARE_WRITE));
        assert!(!share_conflict((FILE_READ_DATA, SHARE_READ), FILE_READ_DATA, SHARE_READ));
        // New open not sharing write conflicts with an existing writer.
        assert!(share_conflict((FILE_WRITE_DATA, 7), FILE_READ_DATA, SHARE_READ));
        // Attribute-only opens never conflict.
        assert!(!share_conflict((FILE_READ_ATTRIBUTES, 0), FILE_READ_ATTRIBUTES, 0));
        // ...on either side: a stat open next to an open sharing nothing.
        assert!(!share_conflict((FILE_READ_ATTRIBUTES, 0), FILE_READ_DATA, 0));
        assert!(!share_conflict((FILE_READ_DATA | FILE_WRITE_DATA, 0), FILE_READ_ATTRIBUTES | SYNCHRONIZE, 0));
        assert!(share_conflict((DELETE, SHARE_READ), FILE_READ_DATA, SHARE_READ));
    }

    #[test]
    fn stored_descriptors_round_trip_small_and_large() {
        use crate::security::{build_acl, everyone, unix_user_sid};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let fd = rustix::fs::open(&path, OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        if store_sd(&fd, &derived_sd(&fd).unwrap()) == Err(NtStatus::NOT_SUPPORTED) {
            return; // a file system without xattrs: nothing is kept
        }
        let me = unix_user_sid(4242);
        let ev = everyone();
        // 2 ACEs, then 100 (past the first, 1 KiB read; ext4 keeps at most one 4 KiB block of xattrs).
        for n in [2usize, 100] {
            let list: Vec<(u8, u8, u32, &[u8])> = (0..n).map(|i| (0u8, 0u8, i as u32 + 1, if i % 2 == 0 { &me[..] } else { &ev[..] })).collect();
            let sd = SecurityDescriptor { control: 0x8004, owner: Some(me.clone()), group: Some(ev.clone()), sacl: None, dacl: Some(build_acl(&list)) };
            store_sd(&fd, &sd).unwrap();
            assert_eq!(stored_sd(&fd).unwrap().as_ref(), Some(&sd));
            // Through an O_PATH handle too (fgetxattr refuses those).
            let p = rustix::fs::open(&path, OFlags::PATH, rustix::fs::Mode::empty()).unwrap();
            assert_eq!(stored_sd(&p).unwrap(), Some(sd.clone()));
            assert_eq!(file_sd(&p).unwrap(), sd);
        }
        // A file with none: derived from the mode.
        std::fs::write(dir.path().join("g"), b"y").unwrap();
        let g = rustix::fs::open(&dir.path().join("g"), OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        assert_eq!(stored_sd(&g).unwrap(), None);
        assert_eq!(file_sd(&g).unwrap(), derived_sd(&g).unwrap());
    }

    #[test]
    fn create_params() {
        let ok = |a, o, f, i| check_create_params(a, o, f, i);
        assert_eq!(ok(MAXIMUM_ALLOWED, 0, vfs::ATTR_NORMAL, 2), Ok(()));
        assert_eq!(ok(MAXIMUM_ALLOWED, 0, 0, 0x1234_5678), Err(BAD_IMPERSONATION_LEVEL));
        assert_eq!(ok(0x0800_0000, 0, 0x8, 0), Err(NtStatus::ACCESS_DENIED), "access is checked before attributes");
        assert_eq!(ok(0, 0, 0, 0), Err(NtStatus::ACCESS_DENIED));
        assert_eq!(ok(SYNCHRONIZE, 0, 0, 0), Ok(()));
        assert_eq!(ok(SYNCHRONIZE | FILE_READ_ATTRIBUTES, 0, 0, 0), Ok(()));
        assert_eq!(ok(ACCESS_SYSTEM_SECURITY, 0, 0, 0), Err(NtStatus::PRIVILEGE_NOT_HELD));
        assert_eq!(ok(GENERIC_READ, 0xF000_0000, 0, 0), Err(NtStatus::INVALID_PARAMETER));
        assert_eq!(ok(GENERIC_READ, OPT_RESERVE_OPFILTER, 0, 0), Err(NtStatus::NOT_SUPPORTED));
        assert_eq!(ok(GENERIC_READ, 0x0020_0000 | 0x10 | 0x4, 0, 0), Ok(()));
        for bad in [0x8, 0x40, 0x8000, 0x10000, 0x8040] {
            assert_eq!(ok(GENERIC_READ, 0, bad, 0), Err(NtStatus::INVALID_PARAMETER), "{bad:#x}");
        }
        assert_eq!(ok(GENERIC_READ, 0, 0x3FB7, 0), Ok(()));
    }
}
