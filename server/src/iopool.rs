//! Many READs and WRITEs in flight per connection (TCP).
//!
//! The connection's thread does everything that needs the connection's state
//! (credits, session, signature, tree and open lookup, channel sequence, lock
//! conflicts) in order; a single plain, signed or sealed READ or WRITE then
//! hands its file I/O, the rest of its response, signing/sealing and the send
//! to a small pool of threads shared by the whole process, and the connection
//! reads its next request meanwhile. Responses go out as they complete (SMB2
//! lets them). [`InFlight`] counts what a connection has handed over, so that
//! requests that must see it finished can wait for it.
//!
//! Also the process's spare large message buffers ([`take_buffer`],
//! [`give_buffer`]), kept from one connection to the next.

use crate::objects::lock;
use std::collections::HashMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// The process's I/O threads: a fixed number, started on first use, taking
/// jobs from one queue (no thread per request, no polling). The queue itself
/// is bounded by the connections' in-flight caps.
struct Pool {
    tx: Mutex<Sender<Job>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        // Page-cache I/O is CPU work: a few threads per core, so one blocked
        // on a slow disk or a slow client does not stop the others.
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).saturating_mul(2).clamp(4, 32);
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("smb-io-{i}")).stack_size(512 * 1024).spawn(move || worker(&rx));
            if let Err(e) = spawned {
                tracing::warn!("cannot start I/O thread {i}: {e}");
            }
        }
        Pool { tx: Mutex::new(tx) }
    })
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    // Started lazily, perhaps within a user's request: run as the server.
    crate::identity::reset_thread();
    loop {
        let job = match lock(rx).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        // A job handles its own panics (it must answer or close its
        // connection); this keeps the thread alive whatever happens.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// Runs `job` on an I/O thread; gives it back when no thread can take it
/// (the caller runs it itself).
pub fn submit(job: Job) -> Result<(), Job> {
    lock(&pool().tx).send(job).map_err(|e| e.0)
}

/// Spare large message buffers of the process: request buffers and sent
/// responses. smbclient (and many clients) open a connection per transfer:
/// without this, every connection faulted in fresh memory for its few 8 MiB
/// WRITE buffers (about 6,150 page faults and 24 MiB of page zeroing per put
/// in a worker, whatever its age), since the allocator gives such blocks
/// back to the kernel when they are freed; and every READ response of 8 MiB
/// was zero-filled before the file's data overwrote it (12% of a worker's
/// CPU in plain gets). A kept buffer keeps its length: its bytes are those of
/// an earlier message (initialized memory, never sent again: whoever takes
/// it overwrites or truncates them). Kept: at most [`SPARE_BUFFERS`]
/// buffers of at least [`SPARE_MIN`] bytes (about 32 MiB with the default
/// 8 MiB max read/write; more with `max in flight per connection`),
/// resident while the process lives once it has seen large READs or WRITEs.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// How many spare buffers the process keeps at least: what one connection's
/// reader, its queue and its handler hold at once, plus one. More with
/// READs/WRITEs in flight ([`keep_spare_buffers`]).
pub const SPARE_BUFFERS: usize = 4;
static SPARE_CAP: AtomicUsize = AtomicUsize::new(SPARE_BUFFERS);

/// Keeps up to `n` spare buffers from now on (never fewer than before): a
/// connection with `n - 3` READs/WRITEs in flight cycles that many.
pub fn keep_spare_buffers(n: usize) {
    SPARE_CAP.fetch_max(n, Ordering::Relaxed);
}

/// Smaller buffers are left to the allocator, which keeps them anyway.
pub const SPARE_MIN: usize = 1 << 20;

/// A spare buffer of at least `capacity` bytes, emptied, or a new empty
/// one. Of the spare ones it takes the shortest (the longer ones are what
/// [`grow_for_overwrite`] looks for).
pub fn take_buffer(capacity: usize) -> Vec<u8> {
    let found = {
        let mut spare = lock(&SPARE);
        let best = spare.iter().enumerate().filter(|(_, b)| b.capacity() >= capacity).min_by_key(|(_, b)| b.len()).map(|(i, _)| i);
        best.map(|i| spare.swap_remove(i))
    };
    let mut b = found.unwrap_or_default();
    b.clear();
    b
}

/// A buffer of exactly `len` bytes of initialized memory whose contents are
/// unspecified (left from an earlier message of this process, or zeros), for
/// the caller to overwrite all of: the spare buffer that needs the least
/// zeroing (a stream of large messages of one size needs none), or a new one.
pub fn take_filled(len: usize) -> Vec<u8> {
    let found = {
        let mut spare = lock(&SPARE);
        let best = spare.iter().enumerate().filter(|(_, b)| b.capacity() >= len).max_by_key(|(_, b)| b.len().min(len)).map(|(i, _)| i);
        best.map(|i| spare.swap_remove(i))
    };
    let mut b = found.unwrap_or_default();
    if b.len() >= len {
        b.truncate(len);
    } else {
        b.resize(len, 0);
    }
    b
}

/// Keeps `buf` for [`take_buffer`] and [`grow_for_overwrite`] if it is
/// large and fewer than [`SPARE_BUFFERS`] (or what [`keep_spare_buffers`]
/// set) are kept; frees it otherwise.
pub fn give_buffer(buf: Vec<u8>) {
    if buf.capacity() < SPARE_MIN {
        return;
    }
    let mut spare = lock(&SPARE);
    if spare.len() < SPARE_CAP.load(Ordering::Relaxed) {
        spare.push(buf);
    }
}

/// Makes `buf` `new_len` bytes long for the caller to overwrite from its
/// current length on (a READ's data): its bytes up to now are kept; those
/// after are unspecified (left from an earlier message of this process)
/// unless no spare buffer is long enough, when they are zeros. The caller
/// must overwrite them, or truncate what it did not, before `buf` is sent.
pub fn grow_for_overwrite(buf: &mut Vec<u8>, new_len: usize) {
    if new_len <= buf.len() {
        buf.truncate(new_len);
        return;
    }
    if new_len >= SPARE_MIN {
        let found = {
            let mut spare = lock(&SPARE);
            spare.iter().position(|b| b.len() >= new_len).map(|i| spare.swap_remove(i))
        };
        if let Some(mut big) = found {
            big[..buf.len()].copy_from_slice(buf);
            big.truncate(new_len);
            let small = std::mem::replace(buf, big);
            give_buffer(small);
            return;
        }
    }
    buf.resize(new_len, 0);
}

/// What one connection has in flight on the pool: all of it, and WRITEs per
/// open (volatile id).
#[derive(Default)]
pub struct InFlight {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    total: usize,
    /// Payload bytes (READ lengths, WRITE data) of what is in flight.
    bytes: usize,
    writes: HashMap<u64, usize>,
    peak: usize,
    handed: u64,
}

/// One request in flight; counted out when dropped (after its response was
/// sent, or failed to be).
pub struct Guard {
    of: Arc<InFlight>,
    write_of: Option<u64>,
    bytes: usize,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut s = lock(&self.of.state);
        s.total = s.total.saturating_sub(1);
        s.bytes = s.bytes.saturating_sub(self.bytes);
        if let Some(o) = self.write_of {
            if let Some(n) = s.writes.get_mut(&o) {
                *n -= 1;
                if *n == 0 {
                    s.writes.remove(&o);
                }
            }
        }
        drop(s);
        self.of.cv.notify_all();
    }
}

impl InFlight {
    /// Counts a request of `bytes` payload bytes in, once fewer than `cap`
    /// are in flight and their bytes and these stay within `byte_cap` (0: no
    /// cap; one request alone always may): waits for others to finish
    /// otherwise, so memory per connection stays bounded.
    pub fn enter(self: &Arc<Self>, cap: usize, byte_cap: usize, bytes: usize, write_of: Option<u64>) -> Guard {
        let mut s = lock(&self.state);
        while s.total >= cap.max(1) || (s.total > 0 && byte_cap != 0 && s.bytes.saturating_add(bytes) > byte_cap) {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.total += 1;
        s.bytes += bytes;
        if let Some(o) = write_of {
            *s.writes.entry(o).or_insert(0) += 1;
        }
        s.peak = s.peak.max(s.total);
        s.handed += 1;
        Guard { of: self.clone(), write_of, bytes }
    }

    /// Waits until nothing is in flight.
    pub fn wait_idle(&self) {
        let mut s = lock(&self.state);
        while s.total > 0 {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Waits until no WRITE of `open` is in flight.
    pub fn wait_writes(&self, open: u64) {
        let mut s = lock(&self.state);
        while s.writes.contains_key(&open) {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn is_idle(&self) -> bool {
        lock(&self.state).total == 0
    }

    /// (Requests handed to the pool in all, the most in flight at once.)
    pub fn stats(&self) -> (u64, usize) {
        let s = lock(&self.state);
        (s.handed, s.peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cap_and_waits() {
        let f = Arc::new(InFlight::default());
        let a = f.enter(2, 0, 10, Some(7));
        let b = f.enter(2, 0, 10, None);
        let f2 = f.clone();
        // A third waits for a slot.
        let t = std::thread::spawn(move || drop(f2.enter(2, 0, 10, None)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "a third request entered past the cap of 2");
        drop(b);
        t.join().expect("join");
        let f3 = f.clone();
        let t = std::thread::spawn(move || f3.wait_writes(7));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "wait_writes returned with a WRITE of the open in flight");
        drop(a);
        t.join().expect("join");
        f.wait_idle();
        assert!(f.is_idle());
        assert_eq!(f.stats(), (3, 2));
        // The byte cap: a second request that would pass it waits; one alone may.
        let a = f.enter(8, 100, 150, None);
        let f2 = f.clone();
        let t = std::thread::spawn(move || drop(f2.enter(8, 100, 10, None)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "a request entered past the byte cap");
        drop(a);
        t.join().expect("join");
    }

    #[test]
    fn spare_buffers_are_kept_up_to_the_cap_and_reused() {
        // (The only test that touches SPARE: tests run in parallel.)
        let mut small = Vec::with_capacity(SPARE_MIN / 2);
        small.push(1u8);
        give_buffer(small);
        assert!(lock(&SPARE).iter().all(|b| b.capacity() >= SPARE_MIN), "a small buffer was kept");
        let cap = SPARE_CAP.load(Ordering::Relaxed);
        let bufs: Vec<Vec<u8>> = (0..cap + 2).map(|i| vec![i as u8; SPARE_MIN + i]).collect();
        let ptrs: Vec<*const u8> = bufs.iter().map(|b| b.as_ptr()).collect();
        for b in bufs {
            give_buffer(b);
        }
        assert_eq!(lock(&SPARE).len(), cap);

        // A READ response: its header is kept, the rest is a spare buffer's.
        let mut resp = b"header".to_vec();
        grow_for_overwrite(&mut resp, SPARE_MIN + 1);
        assert_eq!(resp.len(), SPARE_MIN + 1);
        assert_eq!(&resp[..6], b"header");
        assert!(ptrs.contains(&resp.as_ptr()), "not one of the spare buffers");
        assert_eq!(lock(&SPARE).len(), cap - 1);
        // Longer than any spare one: zeros.
        let mut resp2 = b"h".to_vec();
        grow_for_overwrite(&mut resp2, SPARE_MIN + 100);
        assert_eq!(resp2.len(), SPARE_MIN + 100);
        assert!(resp2[1..].iter().all(|b| *b == 0));
        // Shorter than now: truncated.
        grow_for_overwrite(&mut resp2, 3);
        assert_eq!(resp2.len(), 3);

        // Too large for any: a new one.
        assert_eq!(take_buffer(SPARE_MIN * 4).capacity(), 0);
        let mut got = Vec::new();
        while lock(&SPARE).len() > 0 {
            let b = take_buffer(SPARE_MIN);
            assert!(b.is_empty(), "a spare buffer comes back emptied");
            assert!(b.capacity() >= SPARE_MIN);
            assert!(ptrs.contains(&b.as_ptr()), "not one of the buffers given back");
            got.push(b);
        }
        let fresh = take_buffer(1);
        assert_eq!(fresh.capacity(), 0, "none left: a new empty buffer");
    }

    #[test]
    fn pool_runs_jobs_in_parallel() {
        let (tx, rx) = std::sync::mpsc::channel();
        let barrier = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..3 {
            let (tx, b) = (tx.clone(), barrier.clone());
            assert!(submit(Box::new(move || {
                b.wait();
                let _ = tx.send(());
            }))
            .is_ok());
        }
        for _ in 0..3 {
            rx.recv_timeout(Duration::from_secs(10)).expect("three jobs at once");
        }
    }
}
