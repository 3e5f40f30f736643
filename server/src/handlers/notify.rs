//! CHANGE_NOTIFY, driven by inotify (MS-SMB2 3.3.5.19, MS-FSCC 2.7.1).
//!
//! The process has ONE inotify instance (the [`Hub`]), registered with the
//! process's reactor (asyncop.rs). The kernel caps inotify instances per Unix
//! user (fs.inotify.max_user_instances, often 128): an instance per watched
//! handle let enough sessions together use them all up, and every other
//! client's CHANGE_NOTIFY then failed. Watch descriptors are a resource too
//! (fs.inotify.max_user_watches): when the kernel refuses one, that request
//! gets INSUFFICIENT_RESOURCES and nothing else is affected.
//!
//! The hub maps each watch descriptor to the handles that watch through it:
//! inotify gives one descriptor per inode, so several handles on one
//! directory (or a WATCH_TREE handle and a handle on one of its
//! subdirectories) share it, and it is removed when the last of them goes.
//! Each watched handle ([`Watch`], created by its first CHANGE_NOTIFY) has a
//! change buffer of the size of that first request, as Windows keeps: changes
//! between two requests are kept there and reported by the next one; when
//! they outgrow it the next request gets NOTIFY_ENUM_DIR.
//!
//! Whoever reads the inotify descriptor (the reactor when it becomes
//! readable, a CHANGE_NOTIFY request before it looks at its buffer) hands
//! every event to the buffers of the handles it concerns, and a request
//! waiting on such a handle is answered then: no thread waits per request.
//! CANCEL and the end of the connection end a waiting request on the thread
//! that asks, a CLOSE of the handle ends all of them (NOTIFY_CLEANUP), the
//! removal of the watched directory too (DELETE_PENDING).

use super::FILE_READ_DATA;
use crate::asyncop::{Pending, Ready, WatchSlot};
use crate::conn::{go_async, Connection, Ctx};
use crate::objects::{lock, Open};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{ChangeNotifyReq, WATCH_TREE};
use crate::wire::status::NtStatus;
use crate::wire::{utf16_len, Put};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use rustix::fd::AsFd;
use rustix::fs::OFlags;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

const NOTIFY_FILE_NAME: u32 = 0x001;
const NOTIFY_DIR_NAME: u32 = 0x002;
const NOTIFY_ATTRIBUTES: u32 = 0x004;
const NOTIFY_SIZE: u32 = 0x008;
const NOTIFY_LAST_WRITE: u32 = 0x010;
const NOTIFY_LAST_ACCESS: u32 = 0x020;
const NOTIFY_CREATION: u32 = 0x040;
const NOTIFY_EA: u32 = 0x080;
const NOTIFY_SECURITY: u32 = 0x100;

const ACTION_ADDED: u32 = 1;
const ACTION_REMOVED: u32 = 2;
const ACTION_MODIFIED: u32 = 3;
const ACTION_RENAMED_OLD: u32 = 4;
const ACTION_RENAMED_NEW: u32 = 5;

/// Directories watched at most for one WATCH_TREE handle.
const MAX_WATCHES: usize = 4096;

/// Reads of the inotify descriptor (each up to a page of events) per pump.
const MAX_READS: usize = 256;

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR
}

fn errno_status(e: Errno) -> NtStatus {
    NtStatus::from_errno(rustix::io::Errno::from_raw_os_error(e as i32))
}

// ---------------------------------------------------------------------------------------
// The process's inotify instance.

/// One handle watching through a watch descriptor.
struct User {
    watch: u64,
    target: Weak<Watch>,
    /// The directory relative to the handle's ("" for the handle's own).
    rel: String,
}

#[derive(Default)]
struct HubState {
    /// Watch descriptor -> the handles watching through it (its reference count).
    wds: HashMap<WatchDescriptor, Vec<User>>,
    /// Watch id -> the descriptors it uses.
    by_watch: HashMap<u64, Vec<WatchDescriptor>>,
}

/// The process's one inotify instance and who watches what through it.
pub struct Hub {
    inotify: Inotify,
    /// Its registration with the reactor (always armed: the kernel's queue
    /// is shared by every handle, so it is read whether or not anybody waits).
    token: u64,
    state: Mutex<HubState>,
    next: AtomicU64,
}

/// What a run of the hub leaves to do once its locks are released.
#[derive(Default)]
struct Later {
    /// Final responses.
    done: Vec<(Pending, NtStatus, Vec<u8>)>,
    /// Watches looked at: dropped after the hub's lock, since dropping the
    /// last one takes that lock.
    keep: Vec<Arc<Watch>>,
    /// Opens looked at, likewise (an open holds its watch).
    opens: Vec<Arc<Open>>,
}

impl Later {
    fn finish(self) {
        for (p, status, body) in self.done {
            p.finish(status, Some(&body));
        }
        drop(self.keep);
        drop(self.opens);
    }
}

/// The process's hub, made on first use.
pub fn hub() -> Result<&'static Arc<Hub>, NtStatus> {
    static H: OnceLock<Option<Arc<Hub>>> = OnceLock::new();
    H.get_or_init(|| match Hub::start() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("CHANGE_NOTIFY unavailable: cannot set up inotify: {e:?}");
            None
        }
    })
    .as_ref()
    .ok_or(NtStatus::INSUFFICIENT_RESOURCES)
}

/// The kernel's watch limit is logged the first time it is hit, not per request.
static ENOSPC_LOGGED: AtomicBool = AtomicBool::new(false);

impl Hub {
    fn start() -> Result<Arc<Hub>, NtStatus> {
        let reactor = crate::asyncop::reactor()?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(errno_status)?;
        let mut added = Ok(0);
        let hub = Arc::new_cyclic(|me: &Weak<Hub>| {
            let target: Weak<dyn Ready> = me.clone();
            added = reactor.add(inotify.as_fd(), target);
            let token = *added.as_ref().unwrap_or(&0);
            Hub { inotify, token, state: Mutex::new(HubState::default()), next: AtomicU64::new(1) }
        });
        added?;
        reactor.arm(hub.inotify.as_fd(), hub.token);
        Ok(hub)
    }

    /// Adds the directory `fd` to `watch`'s descriptors as `rel`. ENOSPC
    /// (fs.inotify.max_user_watches reached) is INSUFFICIENT_RESOURCES.
    fn add(&self, st: &mut HubState, watch: &Arc<Watch>, fd: rustix::fd::BorrowedFd<'_>, rel: String) -> Result<(), NtStatus> {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let wd = match self.inotify.add_watch(path.as_str(), mask()) {
            Ok(wd) => wd,
            Err(Errno::ENOSPC) => {
                if !ENOSPC_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!("CHANGE_NOTIFY refused: the kernel's inotify watch limit (fs.inotify.max_user_watches) is reached; raise it for more watched directories (logged once)");
                }
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
            Err(e) => return Err(errno_status(e)),
        };
        let users = st.wds.entry(wd).or_default();
        if users.iter().any(|u| u.watch == watch.id) {
            return Ok(());
        }
        users.push(User { watch: watch.id, target: Arc::downgrade(watch), rel });
        st.by_watch.entry(watch.id).or_default().push(wd);
        Ok(())
    }

    /// Adds descriptors for the directories below `rel` (relative to the
    /// handle), each opened beneath the share root. Iterative, with the
    /// pending directories on a list: how deep a tree goes is the client's
    /// to choose (renames can nest trees deeper than any path the client
    /// could name), so recursing over it could overflow the thread's stack.
    /// At most MAX_WATCHES directories per handle.
    ///
    /// With `report`, every entry found is reported as added: they are in a
    /// directory that came into the tree after the handle's first request,
    /// made there before its watch descriptor was (a client making a
    /// directory and a file in it at once), so no event told of them.
    fn add_subtree(&self, st: &mut HubState, watch: &Arc<Watch>, open: &Open, rel: String, mut report: Option<&mut Later>) {
        let Some(root) = open.share.root.as_ref() else { return };
        let base = lock(&open.path).clone();
        let abs = |rel: &str| if rel.is_empty() { base.clone() } else if base.is_empty() { rel.to_string() } else { format!("{base}/{rel}") };
        let mut todo = vec![rel];
        while let Some(rel) = todo.pop() {
            let dir_rel = abs(&rel);
            let Ok(fd) = root.open_beneath(&dir_rel, OFlags::RDONLY | OFlags::DIRECTORY) else { continue };
            let Ok(entries) = crate::vfs::list_dir(root, &dir_rel, fd.as_fd()) else { continue };
            for e in entries {
                let child = if rel.is_empty() { e.name.clone() } else { format!("{rel}/{}", e.name) };
                if let Some(later) = report.as_deref_mut() {
                    let bit = if e.stat.is_dir { NOTIFY_DIR_NAME } else { NOTIFY_FILE_NAME };
                    watch.push(ACTION_ADDED, child.replace('/', "\\"), bit, later);
                }
                if !e.stat.is_dir {
                    continue;
                }
                if st.by_watch.get(&watch.id).map_or(0, Vec::len) >= MAX_WATCHES {
                    return;
                }
                if let Ok(cfd) = root.open_beneath(&abs(&child), OFlags::RDONLY | OFlags::DIRECTORY) {
                    match self.add(st, watch, cfd.as_fd(), child.clone()) {
                        Ok(()) => todo.push(child),
                        // No more watches to be had: the rest of the tree is not watched.
                        Err(NtStatus::INSUFFICIENT_RESOURCES) => return,
                        Err(_) => {}
                    }
                }
            }
        }
    }

    /// A directory newly in a WATCH_TREE handle's tree (created or moved in).
    /// `created`: made there (its entries are reported as added), not moved in.
    fn add_new_dir(&self, st: &mut HubState, watch: &Arc<Watch>, rel: String, created: bool, later: &mut Later) {
        let Some(open) = watch.open.upgrade() else { return };
        later.opens.push(open.clone());
        let Some(root) = open.share.root.as_ref() else { return };
        if st.by_watch.get(&watch.id).map_or(0, Vec::len) >= MAX_WATCHES {
            return;
        }
        let base = lock(&open.path).clone();
        let abs = if base.is_empty() { rel.clone() } else { format!("{base}/{rel}") };
        if let Ok(cfd) = root.open_beneath(&abs, OFlags::RDONLY | OFlags::DIRECTORY) {
            if self.add(st, watch, cfd.as_fd(), rel.clone()).is_ok() {
                // It may hold entries already (moved in, or made at once).
                self.add_subtree(st, watch, &open, rel, created.then_some(later));
            }
        }
    }

    /// Gives back the descriptors of watch `id`; one no other handle uses
    /// is removed from the kernel.
    fn release(&self, id: u64) {
        let mut st = lock(&self.state);
        let Some(wds) = st.by_watch.remove(&id) else { return };
        for wd in wds {
            let Some(users) = st.wds.get_mut(&wd) else { continue };
            users.retain(|u| u.watch != id);
            if users.is_empty() {
                st.wds.remove(&wd);
                // EINVAL: the kernel removed it already (directory deleted).
                let _ = self.inotify.rm_watch(wd);
            }
        }
    }

    /// Reads everything the kernel has queued and hands it to the handles it
    /// concerns; answers the requests that can be answered now.
    fn pump(&self) {
        let mut later = Later::default();
        {
            let mut st = lock(&self.state);
            // Bounded, so a flood of changes cannot keep the lock (and a
            // request that pumps) forever: what is left makes the
            // descriptor readable again, and the reactor goes on.
            for _ in 0..MAX_READS {
                let events: Vec<InotifyEvent> = match self.inotify.read_events() {
                    Ok(ev) => ev,
                    Err(Errno::EAGAIN) => break,
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        tracing::warn!("CHANGE_NOTIFY: reading inotify failed: {e}");
                        break;
                    }
                };
                for ev in events {
                    self.event(&mut st, ev, &mut later);
                }
            }
        }
        later.finish();
    }

    fn event(&self, st: &mut HubState, ev: InotifyEvent, later: &mut Later) {
        if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            // The kernel dropped events: every handle may have missed some.
            let all: Vec<Weak<Watch>> = st.wds.values().flatten().map(|u| u.target.clone()).collect();
            for w in all.iter().filter_map(Weak::upgrade) {
                w.overflow(later);
                later.keep.push(w);
            }
            return;
        }
        if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
            // The kernel removed the descriptor: its directory is gone (or
            // we removed it, and then it is no longer in the map).
            let Some(users) = st.wds.remove(&ev.wd) else { return };
            for u in users {
                if let Some(v) = st.by_watch.get_mut(&u.watch) {
                    v.retain(|wd| *wd != ev.wd);
                }
                if u.rel.is_empty() {
                    if let Some(w) = u.target.upgrade() {
                        w.deleted(later);
                        later.keep.push(w);
                    }
                }
            }
            return;
        }
        let Some(name) = ev.name.as_ref().and_then(|n| n.to_str()) else { return };
        let Some(users) = st.wds.get(&ev.wd) else { return };
        let is_dir = ev.mask.contains(AddWatchFlags::IN_ISDIR);
        let name_bit = if is_dir { NOTIFY_DIR_NAME } else { NOTIFY_FILE_NAME };
        let attr_bits = NOTIFY_ATTRIBUTES | NOTIFY_LAST_WRITE | NOTIFY_LAST_ACCESS | NOTIFY_CREATION | NOTIFY_EA | NOTIFY_SECURITY;
        let (action, bits) = if ev.mask.contains(AddWatchFlags::IN_CREATE) {
            (ACTION_ADDED, name_bit)
        } else if ev.mask.contains(AddWatchFlags::IN_DELETE) {
            (ACTION_REMOVED, name_bit)
        } else if ev.mask.contains(AddWatchFlags::IN_MOVED_FROM) {
            (ACTION_RENAMED_OLD, name_bit)
        } else if ev.mask.contains(AddWatchFlags::IN_MOVED_TO) {
            (ACTION_RENAMED_NEW, name_bit)
        } else if ev.mask.contains(AddWatchFlags::IN_MODIFY) {
            (ACTION_MODIFIED, NOTIFY_SIZE | NOTIFY_LAST_WRITE)
        } else if ev.mask.contains(AddWatchFlags::IN_ATTRIB) {
            (ACTION_MODIFIED, attr_bits)
        } else {
            return;
        };
        let new_dir = is_dir && ev.mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
        let created = ev.mask.contains(AddWatchFlags::IN_CREATE);
        let mut grow = Vec::new();
        for u in users {
            let Some(w) = u.target.upgrade() else { continue };
            let rel = if u.rel.is_empty() { name.to_string() } else { format!("{}/{name}", u.rel) };
            if new_dir && w.tree {
                grow.push((w.clone(), rel.clone()));
            }
            w.push(action, rel.replace('/', "\\"), bits, later);
            later.keep.push(w);
        }
        for (w, rel) in grow {
            self.add_new_dir(st, &w, rel, created, later);
            later.keep.push(w);
        }
    }
}

/// The inotify descriptor is readable.
impl Ready for Hub {
    fn ready(&self) {
        self.pump();
        if let Ok(r) = crate::asyncop::reactor() {
            r.arm(self.inotify.as_fd(), self.token);
        }
    }
}

// ---------------------------------------------------------------------------------------
// One watched handle.

pub struct Watch {
    /// Its key in the hub.
    id: u64,
    /// The open (held weakly: the open holds the watch), for the paths of
    /// the directories a WATCH_TREE handle gains.
    open: Weak<Open>,
    tree: bool,
    /// The buffer size of the first request: like Windows, the open keeps a
    /// change buffer of that size, so later requests never get more.
    buffer: usize,
    state: Mutex<WatchState>,
    /// This watch in its session's count (`max change notify watches per session`).
    _slot: WatchSlot,
}

#[derive(Default)]
struct WatchState {
    /// Changes not yet reported: (action, name, the filter bits that report it).
    changes: Vec<(u32, String, u32)>,
    /// Their size as FILE_NOTIFY_INFORMATION entries.
    bytes: usize,
    /// More changes came than the buffer holds: the next request gets
    /// NOTIFY_ENUM_DIR.
    overflowed: bool,
    /// The filter bits of the requests so far: other changes are not kept.
    interest: u32,
    /// Requests waiting for a change, oldest first.
    queue: VecDeque<Waiter>,
    /// The handle was closed: no request waits any more.
    closed: bool,
    /// The watched directory was removed.
    deleted: bool,
}

/// One CHANGE_NOTIFY waiting.
struct Waiter {
    pending: Pending,
    filter: u32,
    limit: usize,
}

/// FILE_NOTIFY_INFORMATION size of one entry, padded to 4 bytes.
fn entry_len(name: &str) -> usize {
    (12 + utf16_len(name)).div_ceil(4) * 4
}

impl WatchState {
    /// The answer to a request with `filter` and `limit`, taking the changes
    /// it reports (changes it does not ask for are dropped, as before the
    /// hub: they were read and filtered per request); None when there is
    /// nothing to report.
    fn take(&mut self, filter: u32, limit: usize) -> Option<(NtStatus, Vec<u8>)> {
        if self.deleted {
            return Some((NtStatus::DELETE_PENDING, Vec::new()));
        }
        if std::mem::take(&mut self.overflowed) {
            self.changes.clear();
            self.bytes = 0;
            return Some((NtStatus::NOTIFY_ENUM_DIR, body(&[])));
        }
        if self.changes.is_empty() {
            return None;
        }
        let mut c: Vec<(u32, String)> = Vec::new();
        for (a, n, bits) in self.changes.drain(..) {
            if bits & filter != 0 {
                c.push((a, n));
            }
        }
        self.bytes = 0;
        if c.is_empty() {
            return None;
        }
        Some(match encode(&c, limit) {
            Some(data) => (NtStatus::SUCCESS, body(&data)),
            None => (NtStatus::NOTIFY_ENUM_DIR, body(&[])),
        })
    }

    /// Answers waiting requests while there is something for them.
    fn serve(&mut self, later: &mut Later) {
        while let Some(w) = self.queue.front() {
            let Some((status, b)) = self.take(w.filter, w.limit) else { break };
            if let Some(w) = self.queue.pop_front() {
                later.done.push((w.pending, status, b));
            }
        }
    }
}

impl Watch {
    fn new(hub: &Hub, open: &Arc<Open>, tree: bool, buffer: usize, slot: WatchSlot) -> Arc<Watch> {
        Arc::new(Watch { id: hub.next.fetch_add(1, Ordering::Relaxed), open: Arc::downgrade(open), tree, buffer, state: Mutex::new(WatchState::default()), _slot: slot })
    }

    /// A change for this handle.
    fn push(&self, action: u32, name: String, bits: u32, later: &mut Later) {
        let mut st = lock(&self.state);
        if st.closed || st.deleted || st.interest & bits == 0 {
            return;
        }
        if !st.overflowed {
            // Consecutive identical changes are reported once.
            if st.changes.last().is_some_and(|(a, n, _)| *a == action && *n == name) {
                return;
            }
            let len = entry_len(&name);
            if st.bytes + len > self.buffer {
                st.overflowed = true;
                st.changes.clear();
                st.bytes = 0;
            } else {
                st.bytes += len;
                st.changes.push((action, name, bits));
            }
        }
        st.serve(later);
    }

    fn overflow(&self, later: &mut Later) {
        let mut st = lock(&self.state);
        st.overflowed = true;
        st.changes.clear();
        st.bytes = 0;
        st.serve(later);
    }

    fn deleted(&self, later: &mut Later) {
        let mut st = lock(&self.state);
        st.deleted = true;
        st.serve(later);
    }

    /// Ends the waiting request `async_id` (cancelled, or its connection
    /// ended: `finish` sends nothing then).
    fn stop_one(&self, async_id: u64) {
        let w = {
            let mut st = lock(&self.state);
            let Some(i) = st.queue.iter().position(|w| w.pending.async_id == async_id) else { return };
            st.queue.remove(i)
        };
        if let Some(w) = w {
            w.pending.finish(NtStatus::CANCELLED, None);
        }
    }

    /// The handle is closed: every waiting request ends with NOTIFY_CLEANUP
    /// and the handle's watch descriptors are given back.
    pub fn cleanup(&self) {
        let queue = {
            let mut st = lock(&self.state);
            st.closed = true;
            st.changes.clear();
            std::mem::take(&mut st.queue)
        };
        if let Ok(h) = hub() {
            h.release(self.id);
        }
        for w in queue {
            w.pending.finish(NtStatus::NOTIFY_CLEANUP, Some(&body(&[])));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(h) = hub() {
            h.release(self.id);
        }
    }
}

/// FILE_NOTIFY_INFORMATION entries, or None when they do not fit in `limit`.
fn encode(changes: &[(u32, String)], limit: usize) -> Option<Vec<u8>> {
    let mut o: Vec<u8> = Vec::new();
    let mut last: Option<usize> = None;
    for (action, name) in changes {
        while o.len() % 4 != 0 {
            o.push(0);
        }
        if let Some(l) = last {
            let next = (o.len() - l) as u32;
            o.set_u32(l, next);
        }
        last = Some(o.len());
        o.u32(0).u32(*action).u32(utf16_len(name) as u32).utf16(name);
        if o.len() > limit {
            return None;
        }
    }
    (o.len() <= limit).then_some(o)
}

fn body(data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16(9).u16((HEADER_LEN + 8) as u16).u32(data.len() as u32);
    if data.is_empty() {
        b.u8(0);
    } else {
        b.put(data);
    }
    b
}

/// The handle's watch, made (with its descriptors) by its first CHANGE_NOTIFY.
fn watch_of(conn: &Connection, open: &Arc<Open>, session: u64, tree: bool, buffer: usize) -> Result<Arc<Watch>, NtStatus> {
    let mut slot = lock(&open.notify);
    if let Some(w) = slot.as_ref() {
        return Ok(w.clone());
    }
    let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
    let hub = hub()?;
    let max = conn.server.cfg.limits.max_notify_watches_per_session;
    let Some(taken) = conn.asyncs.shared().take_watch(session, max) else {
        tracing::warn!(peer = %conn.peer, "CHANGE_NOTIFY refused: max change notify watches per session ({max}) reached");
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    };
    let w = Watch::new(hub, open, tree, buffer, taken);
    {
        let mut st = lock(&hub.state);
        // On failure `w` is dropped, which gives back what was added.
        hub.add(&mut st, &w, fd.as_fd(), String::new())?;
        if tree {
            hub.add_subtree(&mut st, &w, open, String::new(), None);
        }
    }
    *slot = Some(w.clone());
    Ok(w)
}

pub fn change_notify(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = ChangeNotifyReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let open = ctx.open(&req.file_id)?;
    if !open.is_dir() {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    if open.access & FILE_READ_DATA == 0 {
        return Err(NtStatus::ACCESS_DENIED);
    }
    if req.output_len > conn.server.cfg.max_transact_size {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let tree = req.flags & WATCH_TREE != 0;
    let session = ctx.session()?.id;
    let watch = watch_of(conn, &open, session, tree, req.output_len as usize)?;
    {
        let mut st = lock(&watch.state);
        st.interest |= req.filter;
    }
    // What the kernel has queued so far goes to the buffers now, so a change
    // made before this request is reported by it.
    if let Ok(h) = hub() {
        h.pump();
    }
    let limit = (req.output_len as usize).min(watch.buffer);
    let mut st = lock(&watch.state);
    if st.closed {
        return Err(NtStatus::FILE_CLOSED);
    }
    // Requests are answered in order: with one already waiting, this one waits too.
    if st.queue.is_empty() {
        if let Some((status, b)) = st.take(req.filter, limit) {
            if status.is_error() {
                return Err(status);
            }
            if status != NtStatus::SUCCESS {
                ctx.warning = Some(status);
            }
            out.put(&b);
            return Ok(());
        }
    }
    let pending = go_async(conn, ctx)?;
    let id = pending.async_id;
    st.queue.push_back(Waiter { pending, filter: req.filter, limit });
    drop(st);
    let me = Arc::downgrade(&watch);
    conn.asyncs.on_stop(
        id,
        Arc::new(move |_| {
            if let Some(w) = me.upgrade() {
                w.stop_one(id);
            }
        }),
    );
    Err(NtStatus::PENDING)
}

