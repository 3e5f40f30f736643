//! Wake-ups between worker processes: each worker binds a Unix datagram
//! socket `worker-<id>.sock` in the state directory; whoever frees a range
//! another worker waits for sends it one datagram naming the file. The
//! receiving thread blocks in `recv` (no timer) and hands each file to a
//! callback, which retries that worker's blocked LOCKs on it. A datagram
//! says why ([`Why`]): most say "something changed on this file"; one asks
//! the worker to close its durable opens of the file that another worker's
//! CREATE asked to close (AppInstanceId), so that only such a request makes
//! the worker look for them.

use super::FileKey;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Tells a worker that something changed on a file, or what to do about it.
pub trait Waker: Send + Sync {
    fn wake(&self, worker: u32, key: FileKey, why: Why);
}

/// Why a worker is woken for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Its locks, share modes, oplocks, leases or durable records changed.
    Changed,
    /// Close this worker's durable opens of the file whose records another
    /// worker marked `close_requested`.
    CloseDurable,
}

const MAGIC: [u8; 4] = *b"SWK1";
const MAGIC_CLOSE: [u8; 4] = *b"SWK2";
/// A wake-up datagram: magic, sender worker id, file dev and inode.
pub const MSG_LEN: usize = 4 + 4 + 8 + 8;

/// What one datagram says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    Wake { from: u32, key: FileKey, why: Why },
    /// The listener's own owner is going away: its thread ends.
    Stop,
}

const STOP: [u8; 4] = *b"SWK0";

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(MSG_LEN);
        match self {
            Message::Wake { from, key, why } => {
                o.extend_from_slice(match why {
                    Why::Changed => &MAGIC,
                    Why::CloseDurable => &MAGIC_CLOSE,
                });
                o.extend_from_slice(&from.to_le_bytes());
                o.extend_from_slice(&key.dev.to_le_bytes());
                o.extend_from_slice(&key.ino.to_le_bytes());
            }
            Message::Stop => o.extend_from_slice(&STOP),
        }
        o
    }

    pub fn decode(b: &[u8]) -> Option<Message> {
        if b == STOP {
            return Some(Message::Stop);
        }
        if b.len() != MSG_LEN {
            return None;
        }
        let why = match b.get(..4) {
            Some(m) if m == MAGIC => Why::Changed,
            Some(m) if m == MAGIC_CLOSE => Why::CloseDurable,
            _ => return None,
        };
        let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes);
        let u64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes);
        Some(Message::Wake { from: u32_at(4)?, key: FileKey { dev: u64_at(8)?, ino: u64_at(16)? }, why })
    }
}

/// The socket path of worker `id` in the state directory.
pub fn socket_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("worker-{id}.sock"))
}

/// Sends wake-ups to other workers' sockets.
pub struct SocketWaker {
    dir: PathBuf,
    from: u32,
    sock: UnixDatagram,
}

impl SocketWaker {
    pub fn new(dir: &Path, from: u32) -> io::Result<SocketWaker> {
        Ok(SocketWaker { dir: dir.to_path_buf(), from, sock: UnixDatagram::unbound()? })
    }
}

impl Waker for SocketWaker {
    fn wake(&self, worker: u32, key: FileKey, why: Why) {
        let path = socket_path(&self.dir, worker);
        // The state directory is the server's (0700): reach it as the
        // server even in the middle of a user's request (identity.rs).
        let _server = crate::identity::Guard::server();
        // A worker that is gone has nothing to wake; its records are purged.
        if let Err(e) = self.sock.send_to(&Message::Wake { from: self.from, key, why }.encode(), &path) {
            tracing::debug!(worker, "wake-up not delivered to {}: {e}", path.display());
        }
    }
}

/// A worker's bound wake-up socket and the thread reading it. Dropping it
/// stops the thread and removes the socket file.
pub struct WakeListener {
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WakeListener {
    /// Binds `worker-<id>.sock` in `dir` (replacing a stale one of a dead
    /// worker with the same id) and calls `on_wake` for every file named.
    pub fn start(dir: &Path, id: u32, on_wake: impl Fn(FileKey, Why) + Send + 'static) -> io::Result<WakeListener> {
        std::fs::create_dir_all(dir)?;
        let path = socket_path(dir, id);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let sock = UnixDatagram::bind(&path)?;
        let sock = Arc::new(sock);
        let thread = std::thread::Builder::new().name(format!("smb-wake-{id}")).stack_size(128 * 1024).spawn(move || {
            let mut buf = [0u8; 64];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => match buf.get(..n).and_then(Message::decode) {
                        Some(Message::Wake { key, why, .. }) => on_wake(key, why),
                        Some(Message::Stop) => return,
                        None => tracing::debug!("unknown datagram of {n} bytes on the wake-up socket"),
                    },
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!("wake-up socket: {e}");
                        return;
                    }
                }
            }
        })?;
        Ok(WakeListener { path, thread: Some(thread) })
    }
}

impl Drop for WakeListener {
    fn drop(&mut self) {
        if let Ok(s) = UnixDatagram::unbound() {
            let _ = s.send_to(&Message::Stop.encode(), &self.path);
        }
        if let Some(t) = self.thread.take() {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Message::Wake { from: 7, key: FileKey { dev: 1 << 40, ino: u64::MAX }, why: Why::Changed };
        assert_eq!(Message::decode(&m.encode()), Some(m));
        let c = Message::Wake { from: 7, key: FileKey { dev: 1 << 40, ino: u64::MAX }, why: Why::CloseDurable };
        assert_eq!(Message::decode(&c.encode()), Some(c));
        assert_eq!(Message::decode(&Message::Stop.encode()), Some(Message::Stop));
        assert_eq!(Message::decode(&m.encode()[..MSG_LEN - 1]), None);
        assert_eq!(Message::decode(b"XXXX0000000000000000000000"), None);
    }

    #[test]
    fn wake_reaches_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let l = WakeListener::start(dir.path(), 3, move |k, why| tx.send((k, why)).unwrap()).unwrap();
        let w = SocketWaker::new(dir.path(), 1).unwrap();
        let k = FileKey { dev: 5, ino: 6 };
        w.wake(3, k, Why::Changed);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), (k, Why::Changed));
        w.wake(3, k, Why::CloseDurable);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), (k, Why::CloseDurable));
        // A worker without a socket is skipped quietly.
        w.wake(4, k, Why::Changed);
        drop(l);
        assert!(!socket_path(dir.path(), 3).exists());
    }
}
