//! CHANGE_NOTIFY, driven by inotify (MS-SMB2 3.3.5.19, MS-FSCC 2.7.1).
//!
//! The inotify instance lives on the open, created by its first
//! CHANGE_NOTIFY, so changes between two requests queue in the kernel and are
//! reported by the next one. A request with nothing to report goes async and
//! waits in the open's queue; the process's reactor (asyncop.rs) runs the
//! queue when the inotify descriptor becomes readable, so no thread waits per
//! request. CANCEL and the end of the connection end a waiting request on the
//! thread that asks, a CLOSE of the handle ends all of them (NOTIFY_CLEANUP).

use super::FILE_READ_DATA;
use crate::conn::{go_async, Connection, Ctx};
use crate::objects::{lock, Open};
use crate::wire::header::HEADER_LEN;
use crate::wire::messages::{ChangeNotifyReq, WATCH_TREE};
use crate::wire::status::NtStatus;
use crate::wire::{utf16_len, Put};
use crate::asyncop::{Pending, Ready, WatchSlot};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use rustix::fd::AsFd;
use rustix::fs::OFlags;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

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

/// Directories watched at most for one WATCH_TREE request.
const MAX_WATCHES: usize = 4096;

pub struct Watch {
    inotify: Inotify,
    /// Watch descriptor -> directory relative to the watched one ("" for itself).
    dirs: Mutex<HashMap<WatchDescriptor, String>>,
    tree: bool,
    /// Changes read but not yet delivered (a request's buffer was too small).
    backlog: Mutex<Vec<(u32, String)>>,
    /// The buffer size of the first request: like Windows, the open keeps a
    /// change buffer of that size, so later requests never get more.
    buffer: usize,
    /// Requests waiting for a change, oldest first.
    waiting: Mutex<Waiting>,
    /// The inotify descriptor's registration with the reactor.
    token: u64,
    /// This watch in its session's count (`max change notify watches per session`).
    _slot: WatchSlot,
}

#[derive(Default)]
struct Waiting {
    queue: VecDeque<Waiter>,
    /// The handle was closed: no request waits any more.
    closed: bool,
}

/// One CHANGE_NOTIFY waiting. The open is held weakly: the open holds the
/// watch, and the watch must not keep the open alive.
struct Waiter {
    pending: Pending,
    open: Weak<Open>,
    filter: u32,
    limit: usize,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_ONLYDIR
}

impl Watch {
    fn new(open: &Open, tree: bool, buffer: usize, slot: WatchSlot) -> Result<Arc<Watch>, NtStatus> {
        let fd = open.fd.as_ref().ok_or(NtStatus::INVALID_HANDLE)?;
        let reactor = crate::asyncop::reactor()?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(|e| NtStatus::from_errno(rustix::io::Errno::from_raw_os_error(e as i32)))?;
        let mut added = Ok(0);
        let w = Arc::new_cyclic(|me: &Weak<Watch>| {
            let target: Weak<dyn Ready> = me.clone();
            added = reactor.add(inotify.as_fd(), target);
            let token = *added.as_ref().unwrap_or(&0);
            Watch { inotify, dirs: Mutex::new(HashMap::new()), tree, backlog: Mutex::new(Vec::new()), buffer, waiting: Mutex::new(Waiting::default()), token, _slot: slot }
        });
        added?;
        w.add(fd.as_fd(), String::new())?;
        if tree {
            let base = lock(&open.path).clone();
            w.add_subtree(open, &base, String::new());
        }
        Ok(w)
    }

    fn add(&self, fd: rustix::fd::BorrowedFd<'_>, rel: String) -> Result<(), NtStatus> {
        use std::os::fd::AsRawFd;
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let wd = self.inotify.add_watch(path.as_str(), mask()).map_err(|e| NtStatus::from_errno(rustix::io::Errno::from_raw_os_error(e as i32)))?;
        lock(&self.dirs).insert(wd, rel);
        Ok(())
    }

    /// Adds watches below `base` (share-relative), each directory opened
    /// beneath the share root. Iterative, with the pending directories on a
    /// list: how deep a tree goes is the client's to choose (renames can nest
    /// trees deeper than any path the client could name), so recursing over
    /// it could overflow the thread's stack. At most MAX_WATCHES directories.
    fn add_subtree(&self, open: &Open, base: &str, rel: String) {
        let Some(root) = open.share.root.as_ref() else { return };
        let mut todo = vec![rel];
        while let Some(rel) = todo.pop() {
            let dir_rel = if rel.is_empty() { base.to_string() } else if base.is_empty() { rel.clone() } else { format!("{base}/{rel}") };
            let Ok(fd) = root.open_beneath(&dir_rel, OFlags::RDONLY | OFlags::DIRECTORY) else { continue };
            let Ok(entries) = crate::vfs::list_dir(root, &dir_rel, fd.as_fd()) else { continue };
            for e in entries.into_iter().filter(|e| e.stat.is_dir) {
                if lock(&self.dirs).len() >= MAX_WATCHES {
                    return;
                }
                let child = if rel.is_empty() { e.name.clone() } else { format!("{rel}/{}", e.name) };
                let child_abs = if base.is_empty() { child.clone() } else { format!("{base}/{child}") };
                if let Ok(cfd) = root.open_beneath(&child_abs, OFlags::RDONLY | OFlags::DIRECTORY) {
                    if self.add(cfd.as_fd(), child.clone()).is_ok() {
                        todo.push(child);
                    }
                }
            }
        }
    }

    /// Reads what inotify has queued, as (action, name) pairs that pass `filter`.
    fn drain(&self, open: &Open, filter: u32) -> Result<Vec<(u32, String)>, NtStatus> {
        let mut out = std::mem::take(&mut *lock(&self.backlog));
        loop {
            let events: Vec<InotifyEvent> = match self.inotify.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(NtStatus::from_errno(rustix::io::Errno::from_raw_os_error(e as i32))),
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    return Err(NtStatus::NOTIFY_ENUM_DIR);
                }
                let Some(name) = ev.name.as_ref().and_then(|n| n.to_str()) else { continue };
                let Some(dir) = lock(&self.dirs).get(&ev.wd).cloned() else { continue };
                let rel = if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
                let is_dir = ev.mask.contains(AddWatchFlags::IN_ISDIR);
                let name_bit = if is_dir { NOTIFY_DIR_NAME } else { NOTIFY_FILE_NAME };
                let action = if ev.mask.contains(AddWatchFlags::IN_CREATE) {
                    if is_dir && self.tree {
                        let base = lock(&open.path).clone();
                        if let Some(root) = open.share.root.as_ref() {
                            let abs = if base.is_empty() { rel.clone() } else { format!("{base}/{rel}") };
                            if let Ok(cfd) = root.open_beneath(&abs, OFlags::RDONLY | OFlags::DIRECTORY) {
                                let _ = self.add(cfd.as_fd(), rel.clone());
                            }
                        }
                    }
                    (filter & name_bit != 0).then_some(ACTION_ADDED)
                } else if ev.mask.contains(AddWatchFlags::IN_DELETE) {
                    (filter & name_bit != 0).then_some(ACTION_REMOVED)
                } else if ev.mask.contains(AddWatchFlags::IN_MOVED_FROM) {
                    (filter & name_bit != 0).then_some(ACTION_RENAMED_OLD)
                } else if ev.mask.contains(AddWatchFlags::IN_MOVED_TO) {
                    (filter & name_bit != 0).then_some(ACTION_RENAMED_NEW)
                } else if ev.mask.contains(AddWatchFlags::IN_MODIFY) {
                    (filter & (NOTIFY_SIZE | NOTIFY_LAST_WRITE) != 0).then_some(ACTION_MODIFIED)
                } else if ev.mask.contains(AddWatchFlags::IN_ATTRIB) {
                    let bits = NOTIFY_ATTRIBUTES | NOTIFY_LAST_WRITE | NOTIFY_LAST_ACCESS | NOTIFY_CREATION | NOTIFY_EA | NOTIFY_SECURITY;
                    (filter & bits != 0).then_some(ACTION_MODIFIED)
                } else {
                    None
                };
                if let Some(a) = action {
                    // Consecutive identical changes are reported once.
                    if out.last() != Some(&(a, rel.replace('/', "\\"))) {
                        out.push((a, rel.replace('/', "\\")));
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Watch {
    /// Ends the waiting request `async_id` (cancelled, or its connection
    /// ended: `finish` sends nothing then).
    fn stop_one(&self, async_id: u64) {
        let w = {
            let mut st = lock(&self.waiting);
            let Some(i) = st.queue.iter().position(|w| w.pending.async_id == async_id) else { return };
            st.queue.remove(i)
        };
        if let Some(w) = w {
            w.pending.finish(NtStatus::CANCELLED, None);
        }
    }

    /// The handle is closed: every waiting request ends with NOTIFY_CLEANUP,
    /// and the reactor lets go of the watch (waiting out a run in progress).
    pub fn cleanup(&self) {
        let queue = {
            let mut st = lock(&self.waiting);
            st.closed = true;
            std::mem::take(&mut st.queue)
        };
        if let Ok(r) = crate::asyncop::reactor() {
            r.forget(Some(self.inotify.as_fd()), self.token);
        }
        for w in queue {
            w.pending.finish(NtStatus::NOTIFY_CLEANUP, Some(&body(&[])));
        }
    }

    fn arm(&self) {
        if let Ok(r) = crate::asyncop::reactor() {
            r.arm(self.inotify.as_fd(), self.token);
        }
    }
}

/// A change arrived: the oldest waiting request gets what there is to
/// report (or goes on waiting when its filter leaves nothing).
impl Ready for Watch {
    fn ready(&self) {
        let mut st = lock(&self.waiting);
        let Some(first) = st.queue.front() else { return };
        let Some(open) = first.open.upgrade() else {
            // The open is gone without a close: nothing will report to it.
            let queue = std::mem::take(&mut st.queue);
            drop(st);
            for w in queue {
                w.pending.finish(NtStatus::NOTIFY_CLEANUP, Some(&body(&[])));
            }
            return;
        };
        let Some((status, b)) = respond(self.drain(&open, first.filter), first.limit) else {
            self.arm();
            return;
        };
        let w = st.queue.pop_front();
        if !st.queue.is_empty() {
            self.arm();
        }
        drop(st);
        drop(open);
        if let Some(w) = w {
            w.pending.finish(status, Some(&b));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(r) = crate::asyncop::reactor() {
            r.remove(self.token);
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

fn respond(changes: Result<Vec<(u32, String)>, NtStatus>, limit: usize) -> Option<(NtStatus, Vec<u8>)> {
    match changes {
        Ok(c) if c.is_empty() => None,
        Ok(c) => Some(match encode(&c, limit) {
            Some(data) => (NtStatus::SUCCESS, body(&data)),
            None => (NtStatus::NOTIFY_ENUM_DIR, body(&[])),
        }),
        Err(NtStatus::NOTIFY_ENUM_DIR) => Some((NtStatus::NOTIFY_ENUM_DIR, body(&[]))),
        Err(e) => Some((e, Vec::new())),
    }
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
    let session = ctx.session()?.clone();
    let watch = {
        let mut slot = lock(&open.notify);
        match slot.as_ref() {
            Some(w) => w.clone(),
            None => {
                let max = conn.server.cfg.limits.max_notify_watches_per_session;
                let Some(taken) = conn.asyncs.shared().take_watch(session.id, max) else {
                    tracing::warn!(peer = %conn.peer, "CHANGE_NOTIFY refused: max change notify watches per session ({max}) reached");
                    return Err(NtStatus::INSUFFICIENT_RESOURCES);
                };
                let w = Watch::new(&open, tree, req.output_len as usize, taken)?;
                *slot = Some(w.clone());
                w
            }
        }
    };
    let limit = (req.output_len as usize).min(watch.buffer);
    let mut st = lock(&watch.waiting);
    if st.closed {
        return Err(NtStatus::FILE_CLOSED);
    }
    // Requests are answered in order: with one already waiting, this one waits too.
    if st.queue.is_empty() {
        if let Some((status, b)) = respond(watch.drain(&open, req.filter), limit) {
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
    st.queue.push_back(Waiter { pending, open: Arc::downgrade(&open), filter: req.filter, limit });
    watch.arm();
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
