//! The benchmark engine behind `smbdirect bench`: keeps `depth` READ/WRITE requests in flight
//! on each channel, measures per-request latency from submit to the receiver thread's arrival
//! time, and reports throughput, IOPS, latency percentiles and CPU per GiB.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::conn::CompletionQueue;
use crate::client::msg;
use crate::client::channel::RdmaAccess;
use crate::client::session::rdma_read_len;
use crate::client::{ClientError, DataChannel, File, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Read,
    Write,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Seq,
    Rand,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub size: u32,
    pub depth: usize,
    pub op: Op,
    pub pattern: Pattern,
    /// Stop after this long ...
    pub duration: Option<Duration>,
    /// ... or after this many bytes (whichever is given).
    pub bytes: Option<u64>,
    pub file_size: u64,
    /// How READ/WRITE data moves on RDMA channels (TCP channels always carry it inline).
    pub rdma: DataChannel,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub bytes: u64,
    pub ops: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    pub iops: f64,
    pub lat_us_p50: f64,
    pub lat_us_p99: f64,
    pub lat_us_p999: f64,
    pub lat_us_max: f64,
    pub client_cpu_s: f64,
    pub client_cpu_s_per_gib: f64,
    pub server_cpu_s_per_gib: Option<f64>,
}

/// Shared progress counters (for the progress bar).
#[derive(Default)]
pub struct Progress {
    pub bytes: AtomicU64,
    pub stop: AtomicBool,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: offsets only need to be spread, not unpredictable.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Client CPU time (user + system) of this process so far.
pub fn cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// CPU seconds of `pid` and its child processes (the server's workers), from /proc.
pub fn process_tree_cpu(pid: u32) -> Option<f64> {
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    // (ppid, own user+system, reaped children's user+system)
    let stat = |p: u32| -> Option<(u32, f64, f64)> {
        let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        let rest = s.get(s.rfind(')')? + 2..)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let n = |i: usize| -> Option<f64> { f.get(i)?.parse().ok() };
        Some((ppid, (n(11)? + n(12)?) / ticks, (n(13)? + n(14)?) / ticks))
    };
    // The main process, its live children (our workers, Samba's per-connection smbd) and
    // the children it has already reaped.
    let (_, own, reaped) = stat(pid)?;
    let mut total = own + reaped;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
            if let Some((ppid, cpu, _)) = stat(p) {
                if ppid == pid {
                    total += cpu;
                }
            }
        }
    }
    Some(total)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Writes the whole test file (so READs find data), `depth` 1 MiB writes in flight.
pub fn fill(tree: &Tree, f: &File, size: u64, depth: usize, progress: &Progress) -> Result<(), ClientError> {
    let conn = tree.session.conn(0)?;
    // Inline WRITEs: at most 1 MiB, and over SMB Direct within the largest message the
    // server accepts (its max fragmented receive size), in whole 64 KiB units.
    let room = conn.channel().limits().max_send.saturating_sub(4096) as u64;
    let chunk = (1u64 << 20).min(room / 65536 * 65536).max(4096);
    let data: Vec<u8> = (0..chunk).map(|i| (i * 7 % 251) as u8).collect();
    let q = CompletionQueue::new();
    let timeout = conn.timeout();
    let mut off = 0u64;
    let mut inflight = 0usize;
    while off < size || inflight > 0 {
        while off < size && inflight < depth.max(1) {
            let n = chunk.min(size - off) as usize;
            tree.submit_to(0, tree.write_request(f, off, &data[..n]), &q, 0)?;
            off += n as u64;
            inflight += 1;
        }
        let (_, r) = q.next(timeout).map_err(|_| conn.timed_out("WRITE (filling the file)", timeout))?;
        r?.expect(&[msg::STATUS_SUCCESS])?;
        inflight -= 1;
        progress.bytes.fetch_add(chunk, Ordering::Relaxed);
    }
    Ok(())
}

/// Runs the plan on every channel of the tree's session at once.
pub fn run(tree: &Arc<Tree>, f: &File, plan: &Plan, progress: &Arc<Progress>, server_pid: Option<u32>) -> Result<Outcome, ClientError> {
    // With RDMA channels bound (tcp+rdma), only they carry I/O, as Windows does.
    let mut io_channels = Vec::new();
    for ch in 0..tree.session.channels() {
        if tree.session.conn(ch)?.channel().is_rdma() {
            io_channels.push(ch);
        }
    }
    if io_channels.is_empty() {
        io_channels = (0..tree.session.channels()).collect();
    }
    let channels = io_channels.len();
    let cpu0 = cpu_seconds();
    let srv0 = server_pid.and_then(process_tree_cpu);
    let start = Instant::now();
    let budget = plan.bytes.map(|b| b / channels as u64);
    let mut handles = Vec::new();
    for (n, &ch) in io_channels.iter().enumerate() {
        let tree = tree.clone();
        let f = f.clone();
        let plan = plan.clone();
        let progress = progress.clone();
        handles.push(std::thread::spawn(move || worker(&tree, &f, ch, n, channels, &plan, budget, &progress, start)));
    }
    let mut lat = Vec::new();
    let (mut bytes, mut ops) = (0u64, 0u64);
    let mut err = None;
    for h in handles {
        match h.join() {
            Ok(Ok((b, o, l))) => {
                bytes += b;
                ops += o;
                lat.extend(l);
            }
            Ok(Err(e)) => {
                progress.stop.store(true, Ordering::SeqCst);
                err.get_or_insert(e);
            }
            Err(_) => {
                err.get_or_insert(ClientError::Invalid("a bench thread panicked".into()));
            }
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let cpu = cpu_seconds() - cpu0;
    let gib = bytes as f64 / (1u64 << 30) as f64;
    let srv = match (server_pid.and_then(process_tree_cpu), srv0) {
        (Some(b), Some(a)) if gib > 0.0 => Some((b - a) / gib),
        _ => None,
    };
    lat.sort_unstable();
    Ok(Outcome {
        bytes,
        ops,
        seconds: secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        iops: ops as f64 / secs,
        lat_us_p50: percentile(&lat, 0.50),
        lat_us_p99: percentile(&lat, 0.99),
        lat_us_p999: percentile(&lat, 0.999),
        lat_us_max: lat.last().map_or(0.0, |v| *v as f64 / 1000.0),
        client_cpu_s: cpu,
        client_cpu_s_per_gib: if gib > 0.0 { cpu / gib } else { 0.0 },
        server_cpu_s_per_gib: srv,
    })
}

type WorkerResult = Result<(u64, u64, Vec<u64>), ClientError>;

#[allow(clippy::too_many_arguments)]
fn worker(tree: &Tree, f: &File, ch: usize, nth: usize, of: usize, plan: &Plan, budget: Option<u64>, progress: &Progress, start: Instant) -> WorkerResult {
    let conn = tree.session.conn(ch)?;
    let timeout = conn.timeout();
    let chan = conn.channel().clone();
    let rdma = chan.is_rdma() && plan.rdma != DataChannel::Inline;
    let q = CompletionQueue::new();
    let size = u64::from(plan.size);
    let blocks = (plan.file_size / size).max(1);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (nth as u64 + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
    let mut cursor = (nth as u64 * blocks / (of as u64).max(1)) % blocks;
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    let mut sent_at = vec![Instant::now(); plan.depth];
    let mut is_write = vec![false; plan.depth];
    // RDMA: one buffer per slot, registered once for the whole point (the channel's pool);
    // each request borrows its slot's buffer under a fresh key, revoked on completion.
    if rdma {
        chan.pool_init((0..plan.depth).map(|_| data.clone()).collect())?;
    }
    let mut lent = vec![false; plan.depth];
    let mut free: Vec<usize> = (0..plan.depth).collect();
    let mut lat = Vec::with_capacity(1 << 16);
    let (mut issued, mut done_bytes, mut ops) = (0u64, 0u64, 0u64);
    let more = |issued: u64| -> bool {
        if progress.stop.load(Ordering::Relaxed) {
            return false;
        }
        match (budget, plan.duration) {
            (Some(b), _) => issued < b,
            (None, Some(d)) => start.elapsed() < d,
            (None, None) => false,
        }
    };
    let r = (|| -> WorkerResult {
        loop {
            while let Some(slot) = free.last().copied() {
                if !more(issued) {
                    break;
                }
                free.pop();
                let block = match plan.pattern {
                    Pattern::Seq => {
                        let b = cursor;
                        cursor = (cursor + 1) % blocks;
                        b
                    }
                    Pattern::Rand => rng.next() % blocks,
                };
                let write = match plan.op {
                    Op::Read => false,
                    Op::Write => true,
                    Op::Mixed => rng.next() & 1 == 1,
                };
                let off = block * size;
                let req = if rdma {
                    let reg = chan.pool_register(slot, size as usize, if write { RdmaAccess::PeerReads } else { RdmaAccess::PeerWrites })?;
                    lent[slot] = true;
                    if write {
                        tree.write_request_rdma(f, off, plan.size, &reg.descriptors, plan.rdma)
                    } else {
                        tree.read_request_rdma(f, off, plan.size, &reg.descriptors, plan.rdma)
                    }
                } else if write {
                    tree.write_request(f, off, &data)
                } else {
                    tree.read_request(f, off, plan.size)
                };
                sent_at[slot] = Instant::now();
                is_write[slot] = write;
                tree.submit_to(ch, req, &q, slot as u64)?;
                issued += size;
            }
            if free.len() == plan.depth {
                return Ok((done_bytes, ops, std::mem::take(&mut lat)));
            }
            let (tag, r) = q.next(timeout).map_err(|_| crate::client::conn::timed_out(&*chan, match plan.op { Op::Write => "WRITE", Op::Read => "READ", Op::Mixed => "READ/WRITE" }, timeout))?;
            let slot = usize::try_from(tag).ok().filter(|s| *s < plan.depth).ok_or_else(|| ClientError::Invalid("bad completion tag".into()))?;
            if rdma {
                lent[slot] = false;
                chan.pool_release(slot)?;
            }
            let r = r?.expect(&[msg::STATUS_SUCCESS])?;
            let n = if is_write[slot] { u64::from(msg::parse_write(&r.msg)?) } else { rdma_read_len(&r)? as u64 };
            if n != size {
                return Err(ClientError::proto(format!("short {}: {n} of {size} bytes", if is_write[slot] { "write" } else { "read" })));
            }
            lat.push(r.received.saturating_duration_since(sent_at[slot]).as_nanos() as u64);
            done_bytes += n;
            ops += 1;
            progress.bytes.fetch_add(n, Ordering::Relaxed);
            free.push(slot);
        }
    })();
    if r.is_err() && rdma {
        // Revoke the keys still lent before the error leaves.
        for (slot, l) in lent.iter().enumerate() {
            if *l {
                let _ = chan.pool_release(slot);
            }
        }
    }
    r
}

/// The local process listening on TCP `port` (the top one if its children share the
/// socket, as forked smbd processes and our workers may), found through /proc/net/tcp{,6}
/// and /proc/*/fd. None when the server is not on this machine or /proc is not readable.
pub fn local_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; st 0A = LISTEN; inode is field 9.
            let (Some(local), Some(st), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let p = local.rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok());
            if p == Some(port) && *st == "0A" {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let mut holders = Vec::new();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        if fds.flatten().any(|fd| std::fs::read_link(fd.path()).ok().and_then(|l| l.to_str().map(|s| inodes.contains(s))).unwrap_or(false)) {
            holders.push(pid);
        }
    }
    let ppid = |pid: u32| -> Option<u32> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        s.get(s.rfind(')')? + 2..)?.split_whitespace().nth(1)?.parse().ok()
    };
    holders.iter().copied().find(|p| ppid(*p).is_none_or(|pp| !holders.contains(&pp)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener_and_percentiles() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(local_listener_pid(port), Some(std::process::id()));
        drop(l);
        assert_eq!(local_listener_pid(port), None);
        let v: Vec<u64> = (1..=1000).map(|x| x * 1000).collect();
        assert_eq!(percentile(&v, 0.5), 501.0);
        assert_eq!(percentile(&v, 0.999), 999.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert!(process_tree_cpu(std::process::id()).is_some());
    }
}
