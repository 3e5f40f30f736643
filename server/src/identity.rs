//! Per-thread Unix credentials: a session's file operations run with its
//! user's uid, primary gid and supplementary groups, so that the kernel
//! checks permissions and new files belong to the user.
//!
//! Linux keeps credentials per thread at the syscall level; glibc's
//! `setgroups`/`setresuid` wrappers change every thread of the process (they
//! signal each thread), which would hand one session's identity to all
//! others. So this module calls the raw syscalls, which change only the
//! calling thread: `setfsuid`/`setfsgid` (the ids the kernel uses for file
//! system access checks and the owner of new files; the real, effective and
//! saved ids stay the server's, so the thread can switch back) and
//! `setgroups`. Changing the fsuid away from 0 drops the file-system
//! capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_CHOWN...) from the
//! thread's effective set, and changing it back to 0 restores them
//! (capabilities(7), "Effect of user ID changes on capabilities").
//!
//! [`Guard`] switches and switches back on drop (every path, panics
//! included). Only a server running as root switches ([`can_switch`]);
//! otherwise it serves as itself.
//!
//! This is the one module outside the store's LMDB opening with `unsafe`:
//! three syscalls, each with a SAFETY comment.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

/// A Unix identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary gid may be among them).
    pub groups: Vec<u32>,
    /// The account name (for logs).
    pub name: String,
}

/// Linux's NGROUPS_MAX.
const NGROUPS_MAX: usize = 65536;

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn set_groups(groups: &[u32]) -> std::io::Result<()> {
    let n = groups.len().min(NGROUPS_MAX);
    // SAFETY: SYS_setgroups reads `n` gid_t (u32 on Linux) from the pointer,
    // which points to at least `n` u32 of a live slice for the whole call;
    // the kernel copies them and keeps no reference.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, n as libc::size_t, groups.as_ptr()) };
    if r == 0 { Ok(()) } else { Err(errno()) }
}

/// Sets the thread's fsuid or fsgid (`which` is SYS_setfsuid or
/// SYS_setfsgid) and checks that it took: these syscalls return the
/// previous id whether or not they succeeded, and an invalid id (-1) changes
/// nothing and returns the current one.
fn set_fs_id(which: libc::c_long, id: u32) -> std::io::Result<()> {
    // SAFETY: setfsuid/setfsgid take one integer argument and touch no
    // memory of ours.
    unsafe { libc::syscall(which, id as libc::c_long) };
    // SAFETY: as above; -1 is never a valid id, so this only reads.
    let now = unsafe { libc::syscall(which, -1 as libc::c_long) };
    if now as u32 == id {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// The credentials the process started with (what a thread returns to).
pub fn server_creds() -> &'static Creds {
    static ME: OnceLock<Creds> = OnceLock::new();
    ME.get_or_init(|| {
        let groups = rustix::process::getgroups().map(|g| g.into_iter().map(|g| g.as_raw()).collect()).unwrap_or_default();
        let uid = rustix::process::geteuid().as_raw();
        Creds { uid, gid: rustix::process::getegid().as_raw(), groups, name: format!("uid {uid}") }
    })
}

/// Whether this process may switch credentials (it runs as root). A server
/// that does not serves every session as itself.
pub fn can_switch() -> bool {
    rustix::process::geteuid().is_root()
}

thread_local! {
    /// The credentials a guard of this thread switched to (`None`: no
    /// guard is active, see [`current`]).
    static CURRENT: RefCell<Option<Arc<Creds>>> = const { RefCell::new(None) };
}

/// What this thread runs as now (`None`: the server's credentials). A new
/// thread inherits its creator's credentials (clone(2)), so a thread
/// started in the middle of a user's request runs as that user although no
/// guard of its own is active: with no guard, ask the kernel.
fn current() -> Option<Arc<Creds>> {
    if let Some(c) = CURRENT.with(|cur| cur.borrow().clone()) {
        return Some(c);
    }
    if !can_switch() {
        return None;
    }
    let me = server_creds();
    let (uid, gid) = thread_fs_ids();
    if (uid, gid) == (me.uid, me.gid) {
        return None;
    }
    let groups = rustix::process::getgroups().map(|g| g.into_iter().map(|g| g.as_raw()).collect()).unwrap_or_default();
    Some(Arc::new(Creds { uid, gid, groups, name: format!("uid {uid}") }))
}

/// Makes this thread run as the server itself, whatever it inherited: for
/// the first line of a long-lived thread (a pool, a reactor, a scavenger)
/// that may be started lazily during a user's request.
pub fn reset_thread() {
    if can_switch() {
        CURRENT.with(|cur| *cur.borrow_mut() = None);
        restore(None);
    }
}

fn apply(c: &Creds) -> std::io::Result<()> {
    // Groups first: once the fsuid is not 0 the thread still has
    // CAP_SETGID (not a file-system capability), but keeping this order
    // makes the switch back (fsuid first) the exact reverse.
    set_groups(&c.groups)?;
    set_fs_id(libc::SYS_setfsgid, c.gid)?;
    set_fs_id(libc::SYS_setfsuid, c.uid)
}

fn switch_to(c: Option<&Creds>) -> std::io::Result<()> {
    match c {
        Some(c) => apply(c),
        None => {
            let me = server_creds();
            set_fs_id(libc::SYS_setfsuid, me.uid)?;
            set_fs_id(libc::SYS_setfsgid, me.gid)?;
            set_groups(&me.groups)
        }
    }
}

/// While alive, the thread's file-system credentials are the given ones;
/// dropping it restores what the thread had before.
#[must_use = "the credentials are switched back when the guard drops"]
pub struct Guard {
    prev: Option<Option<Arc<Creds>>>,
}

impl Guard {
    /// Runs this thread as `creds` (`None`: does nothing). On failure the
    /// thread is back as it was and the error says why.
    pub fn enter(creds: Option<&Arc<Creds>>) -> std::io::Result<Guard> {
        let Some(c) = creds else { return Ok(Guard { prev: None }) };
        let prev = current();
        if prev.as_deref() == Some(&**c) {
            return Ok(Guard { prev: None });
        }
        if let Err(e) = apply(c) {
            restore(prev.as_deref());
            return Err(e);
        }
        CURRENT.with(|cur| *cur.borrow_mut() = Some(c.clone()));
        Ok(Guard { prev: Some(prev) })
    }

    /// Runs this thread as the server itself until dropped (to reach the
    /// server's own files, e.g. the state directory, in the middle of a
    /// user's operation).
    pub fn server() -> Guard {
        let prev = current();
        if prev.is_none() {
            return Guard { prev: None };
        }
        restore(None);
        CURRENT.with(|cur| *cur.borrow_mut() = None);
        Guard { prev: Some(prev) }
    }
}

/// Puts the thread back to `c`; a failure here would leave a thread with the
/// wrong identity, so it ends the process rather than go on.
fn restore(c: Option<&Creds>) {
    if let Err(e) = switch_to(c) {
        tracing::error!("cannot restore thread credentials ({e}): stopping");
        std::process::abort();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            restore(prev.as_deref());
            CURRENT.with(|cur| *cur.borrow_mut() = prev);
        }
    }
}

/// The thread's file-system uid and gid as the kernel sees them (tests, logs).
pub fn thread_fs_ids() -> (u32, u32) {
    // SAFETY: as in set_fs_id: -1 changes nothing and returns the current id.
    let uid = unsafe { libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long) } as u32;
    // SAFETY: as above.
    let gid = unsafe { libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long) } as u32;
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn switches_only_this_thread_and_back() {
        if !can_switch() {
            // Not root: nothing switches, and a guard without creds is a no-op.
            let _g = Guard::enter(None).unwrap();
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let private = dir.path().join("private");
        std::fs::write(&private, b"x").unwrap();
        std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let user = Arc::new(Creds { uid: 4321, gid: 4322, groups: vec![4322, 4323], name: "t".into() });
        {
            let _g = Guard::enter(Some(&user)).unwrap();
            assert_eq!(thread_fs_ids(), (4321, 4322));
            assert_eq!(rustix::process::getgroups().unwrap().iter().map(|g| g.as_raw()).collect::<Vec<_>>(), vec![4322, 4323]);
            // The kernel checks as the user: root's 0600 file is closed to it.
            assert_eq!(std::fs::read(&private).unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
            std::fs::write(dir.path().join("mine"), b"y").unwrap();
            // Other threads are still the server; a thread started now
            // inherits the user (clone(2)), which a guard notices and
            // restores, and which reset_thread undoes.
            std::thread::spawn(|| {
                assert_eq!(thread_fs_ids(), (4321, 4322));
                {
                    let _s = Guard::server();
                    assert_eq!(thread_fs_ids(), (0, 0));
                }
                assert_eq!(thread_fs_ids(), (4321, 4322));
                reset_thread();
                assert_eq!(thread_fs_ids(), (0, 0));
                assert_eq!(rustix::process::getgroups().unwrap().iter().map(|g| g.as_raw()).collect::<Vec<_>>(), server_creds().groups);
            })
            .join()
            .unwrap();
            {
                let _s = Guard::server();
                assert_eq!(thread_fs_ids(), (0, 0));
                assert!(std::fs::read(&private).is_ok());
            }
            assert_eq!(thread_fs_ids(), (4321, 4322));
        }
        assert_eq!(thread_fs_ids(), (0, 0));
        assert_eq!(rustix::process::getgroups().unwrap().iter().map(|g| g.as_raw()).collect::<Vec<_>>(), server_creds().groups);
        let md = std::fs::metadata(dir.path().join("mine")).unwrap();
        assert_eq!((md.uid(), md.gid()), (4321, 4322));
        // Restored on a panic too.
        let u = user.clone();
        let r = std::panic::catch_unwind(move || {
            let _g = Guard::enter(Some(&u)).unwrap();
            panic!("boom");
        });
        assert!(r.is_err());
        assert_eq!(thread_fs_ids(), (0, 0));
    }
}
