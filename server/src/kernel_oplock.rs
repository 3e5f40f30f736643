//! Kernel oplocks (`kernel oplocks = yes`, Samba's per-share option, off by
//! default): an open granted an oplock or lease that caches also holds a
//! Linux file lease (fcntl(2) F_SETLEASE) on its file, so that another
//! program on the host that opens the file is held by the kernel until the
//! client's oplocks and leases of the file are broken to none (acknowledged
//! or timed out, `oplock break timeout`); then the file lease is given up and
//! the program's open goes on (within the kernel's own limit,
//! /proc/sys/fs/lease-break-time, 45 s by default).
//!
//! - A grant that caches writes (batch or exclusive oplock, lease with W)
//!   takes F_WRLCK: the kernel allows it only while the open is the file's
//!   only one, and breaks it on any other open. Else F_RDLCK (level II, R,
//!   RH): allowed only while nobody has the file open for writing, broken by
//!   an open for writing or a truncate. A grant is capped to what the kernel
//!   lease covers (none when the kernel refuses both).
//! - The kernel tells a lease's owner with SIGIO. Every file lease here sends
//!   it to one thread (F_SETOWN_EX), which keeps SIGIO blocked and reads it
//!   from a signalfd (so no other thread ever sees it); on each signal it
//!   asks every file lease it holds (F_GETLEASE reports the type a lease is
//!   being broken to) and starts the break of those the kernel breaks.
//! - The server's own opens break a file lease too: before one, the process
//!   gives up its file leases of that file (the store's rules break the
//!   clients for our own opens), and a later grant takes one again if it can.
//!
//! The fcntl calls below are the only unsafe code of this module: libc has no
//! safe wrapper for F_SETLEASE, F_GETLEASE and F_SETOWN_EX, and neither nix
//! nor rustix offers them.

use crate::objects::{lock, Open, Server};
use crate::store::FileKey;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Instant;
use tracing::{debug, warn};

/// What the file lease taken for an open covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// No file lease: grant no caching.
    Nothing,
    /// F_RDLCK: read and handle caching, no write caching.
    Read,
    /// F_WRLCK: everything.
    Write,
}

/// <linux/fcntl.h>: F_SETOWN_EX and F_OWNER_TID, which libc does not define
/// for every Linux target.
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;

/// struct f_owner_ex of <linux/fcntl.h>.
#[repr(C)]
struct FOwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// One file lease this process holds for an open.
struct Held {
    /// A duplicate of the open's descriptor (the lease belongs to the open
    /// file description both share; ours is given up by F_UNLCK).
    fd: OwnedFd,
    key: FileKey,
    kind: libc::c_int,
    server: Weak<Server>,
    breaking: bool,
}

struct Registry {
    /// By (server, open's volatile id).
    held: Mutex<HashMap<(usize, u64), Held>>,
    /// The thread SIGIO goes to.
    tid: libc::pid_t,
}

static REGISTRY: OnceLock<Option<Registry>> = OnceLock::new();

fn registry() -> Option<&'static Registry> {
    REGISTRY
        .get_or_init(|| match start() {
            Ok(tid) => Some(Registry { held: Mutex::new(HashMap::new()), tid }),
            Err(e) => {
                warn!("kernel oplocks unavailable: {e}");
                None
            }
        })
        .as_ref()
}

fn server_id(server: &Server) -> usize {
    std::ptr::from_ref(server) as usize
}

/// fcntl(2) with an integer argument (F_SETLEASE, F_GETLEASE).
fn fcntl_int(fd: &impl AsFd, cmd: libc::c_int, arg: libc::c_int) -> std::io::Result<libc::c_int> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: `raw` is a descriptor borrowed for the whole call; F_SETLEASE
    // and F_GETLEASE take an int argument and touch no memory of ours.
    let r = unsafe { libc::fcntl(raw, cmd, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Sends the descriptor's SIGIO (lease breaks) to the thread `tid` only.
fn signal_thread(fd: &impl AsFd, tid: libc::pid_t) -> std::io::Result<()> {
    let owner = FOwnerEx { kind: F_OWNER_TID, pid: tid };
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: `raw` is a descriptor borrowed for the call; F_SETOWN_EX reads
    // one struct f_owner_ex (two ints, laid out as <linux/fcntl.h> says) from
    // the pointer, which points at `owner`, alive across the call.
    let r = unsafe { libc::fcntl(raw, F_SETOWN_EX, &owner as *const FOwnerEx) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Starts the thread that takes the kernel's SIGIO; its thread id.
fn start() -> Result<libc::pid_t, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kernel-oplocks".into())
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGIO);
            let sfd = match mask.thread_block().and_then(|()| SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx.send(Err(format!("signalfd: {e}")));
                    return;
                }
            };
            let _ = tx.send(Ok(nix::unistd::gettid().as_raw()));
            loop {
                match sfd.read_signal() {
                    Ok(_) => scan(),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        warn!("kernel oplocks: signalfd read: {e}; file leases are no longer watched");
                        return;
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|e| e.to_string())?
}

/// Takes a file lease for `open`, as strong as the kernel allows; what it
/// covers (the grant is capped to it).
pub fn take(server: &Arc<Server>, open: &Open) -> Cover {
    let (Some(fd), Some(key)) = (&open.fd, open.file_key) else { return Cover::Nothing };
    let Some(reg) = registry() else { return Cover::Nothing };
    let dup = match fd.try_clone() {
        Ok(d) => d,
        Err(e) => {
            debug!("kernel oplock: dup: {e}");
            return Cover::Nothing;
        }
    };
    if let Err(e) = signal_thread(&dup, reg.tid) {
        debug!("kernel oplock: F_SETOWN_EX: {e}");
        return Cover::Nothing;
    }
    let kind = if fcntl_int(&dup, libc::F_SETLEASE, libc::F_WRLCK).is_ok() {
        libc::F_WRLCK
    } else {
        match fcntl_int(&dup, libc::F_SETLEASE, libc::F_RDLCK) {
            Ok(_) => libc::F_RDLCK,
            Err(e) => {
                debug!("kernel oplock refused: {e}");
                return Cover::Nothing;
            }
        }
    };
    let held = Held { fd: dup, key: key.into(), kind, server: Arc::downgrade(server), breaking: false };
    lock(&reg.held).insert((server_id(server), open.volatile_id), held);
    debug!(open = open.volatile_id, write = kind == libc::F_WRLCK, "kernel oplock taken");
    if kind == libc::F_WRLCK {
        Cover::Write
    } else {
        Cover::Read
    }
}

/// After the grant: no caching granted gives the file lease up; one without
/// write caching downgrades it to F_RDLCK where the kernel allows (else the
/// stronger lease stays, which only breaks more often).
pub fn granted(server: &Server, open: &Open, any: bool, write: bool) {
    let Some(Some(reg)) = REGISTRY.get() else { return };
    let id = (server_id(server), open.volatile_id);
    if !any {
        return release(server, open);
    }
    if !write {
        if let Some(h) = lock(&reg.held).get_mut(&id) {
            if h.kind == libc::F_WRLCK && fcntl_int(&h.fd, libc::F_SETLEASE, libc::F_RDLCK).is_ok() {
                h.kind = libc::F_RDLCK;
            }
        }
    }
}

/// The open is closed (or its caching is over): its file lease goes.
pub fn release(server: &Server, open: &Open) {
    let Some(Some(reg)) = REGISTRY.get() else { return };
    let h = lock(&reg.held).remove(&(server_id(server), open.volatile_id));
    if let Some(h) = h {
        let _ = fcntl_int(&h.fd, libc::F_SETLEASE, libc::F_UNLCK);
    }
}

/// This process is about to open the file `key` itself: its file leases
/// of the file go first (or the kernel would hold our own open until they
/// were broken). Those being broken stay with their break.
pub fn before_own_open(key: FileKey) {
    let Some(Some(reg)) = REGISTRY.get() else { return };
    let mut held = lock(&reg.held);
    held.retain(|_, h| {
        if h.key != key || h.breaking {
            return true;
        }
        let _ = fcntl_int(&h.fd, libc::F_SETLEASE, libc::F_UNLCK);
        false
    });
}

/// Whether an open of `rel` with `flags` would wait for another holder's
/// file lease (another program's, or another worker's): a probe open with
/// O_NONBLOCK starts that lease's break and fails with EWOULDBLOCK instead
/// of blocking, as Samba opens with kernel oplocks.
pub fn open_would_block(root: &crate::vfs::ShareRoot, rel: &str, flags: rustix::fs::OFlags) -> bool {
    use rustix::fs::OFlags;
    let Ok((dir, name)) = root.parent(rel) else { return false };
    let probe = rustix::fs::openat(&dir, name, flags | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC, rustix::fs::Mode::empty());
    matches!(probe, Err(rustix::io::Errno::WOULDBLOCK))
}

/// A SIGIO came: the file leases the kernel is breaking start their breaks.
fn scan() {
    let Some(Some(reg)) = REGISTRY.get() else { return };
    let mut started = Vec::new();
    for (id, h) in lock(&reg.held).iter_mut() {
        if h.breaking {
            continue;
        }
        // While a break is in progress F_GETLEASE reports the type the
        // lease is being broken to.
        let now = fcntl_int(&h.fd, libc::F_GETLEASE, 0).unwrap_or(libc::F_UNLCK);
        if now != h.kind {
            h.breaking = true;
            started.push((*id, h.key, h.server.clone()));
        }
    }
    for (id, key, server) in started {
        let r = std::thread::Builder::new().name("kernel-break".into()).stack_size(128 * 1024).spawn(move || break_then_release(id, key, server));
        if let Err(e) = r {
            warn!("kernel oplock break not started: {e}");
            give_up(id);
        }
    }
}

/// Another program opens the file: the clients' oplocks and leases of it
/// break to none; once they are acknowledged (or time out) the file lease
/// is given up and the program's open goes on.
fn break_then_release(id: (usize, u64), key: FileKey, server: Weak<Server>) {
    if let Some(server) = server.upgrade() {
        debug!(?key, "another program opens a file with a kernel oplock: breaking its oplocks and leases");
        // Each look also records this worker as waiting on the file's
        // oplock record, in the same store step: the ack or close that ends
        // a break (on any worker) wakes it, so no timer but the deadline.
        let until = Instant::now() + server.cfg.limits.oplock_break_timeout;
        let mut seen = server.file_events.generation();
        loop {
            match server.store.kernel_break(key, Server::now_ms(), server.worker_id) {
                Ok((mut workers, caching)) => {
                    workers.sort_unstable();
                    workers.dedup();
                    for w in workers {
                        server.wake(w, key);
                    }
                    if !caching {
                        break;
                    }
                }
                Err(e) => {
                    warn!("kernel oplock break: {e}");
                    break;
                }
            }
            if Instant::now() >= until {
                break;
            }
            seen = server.file_events.wait(seen, until);
        }
    }
    give_up(id);
}

fn give_up(id: (usize, u64)) {
    let Some(Some(reg)) = REGISTRY.get() else { return };
    let h = lock(&reg.held).remove(&id);
    if let Some(h) = h {
        let _ = fcntl_int(&h.fd, libc::F_SETLEASE, libc::F_UNLCK);
    }
}
