//! RDMA read/write planning: buffer descriptors from an SMB2 READ/WRITE plus a local
//! buffer become work requests within the device's limits, with the bytes in flight per
//! queue pair bounded (soft-RoCE collapses when too many bytes are in flight).

use std::collections::VecDeque;
use std::time::Instant;

use super::error::{CompletionError, RdmaError};
use crate::wire::BufferDescriptorV1;

/// Most local scatter/gather entries a work request can carry in this implementation.
pub const MAX_SGE: usize = 16;

/// Device and policy limits for RDMA read/write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaLimits {
    /// Local SGEs per work request (device max_send_sge; iWARP adapters may have 3).
    pub max_sge: usize,
    /// Largest transfer of one work request (device max_msg_sz or a policy cap).
    pub max_message_size: u32,
    /// RDMA READs outstanding at once (initiator depth, max_qp_rd_atom).
    pub max_outstanding_reads: u16,
    /// RDMA work requests outstanding at once (send queue room kept for them).
    pub max_outstanding_wrs: u16,
    /// Bytes of RDMA READ/WRITE in flight on this queue pair at once.
    pub max_bytes_in_flight: u64,
}

impl Default for RdmaLimits {
    fn default() -> Self {
        RdmaLimits {
            max_sge: 6,
            max_message_size: 1 << 20,
            max_outstanding_reads: 8,
            max_outstanding_wrs: 64,
            // Tuned on rxe: ~50 MB/s holds up to about 128-256 KiB in flight.
            max_bytes_in_flight: 256 * 1024,
        }
    }
}

impl RdmaLimits {
    fn sanitized(self) -> Self {
        RdmaLimits {
            max_sge: self.max_sge.clamp(1, MAX_SGE),
            max_message_size: self.max_message_size.max(1),
            max_outstanding_reads: self.max_outstanding_reads.max(1),
            max_outstanding_wrs: self.max_outstanding_wrs.max(1),
            max_bytes_in_flight: self.max_bytes_in_flight.max(1),
        }
    }
}

/// A piece of local registered memory (lkey, address, length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalSegment {
    pub lkey: u32,
    pub addr: u64,
    pub len: u32,
}

/// Read pulls the peer's memory into ours (SMB2 WRITE with a channel); Write pushes ours
/// into the peer's (SMB2 READ with a channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdmaDirection {
    Read,
    Write,
}

/// Names one RDMA read/write operation (an SMB2 READ or WRITE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RdmaOpId(pub u64);

/// One RDMA READ or WRITE work request to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaWorkRequest {
    pub wr_id: u64,
    pub op: RdmaOpId,
    pub direction: RdmaDirection,
    pub remote_token: u32,
    pub remote_addr: u64,
    pub len: u32,
    sges: [LocalSegment; MAX_SGE],
    sge_count: u8,
}

impl RdmaWorkRequest {
    /// The local scatter/gather list; its lengths add up to `len`.
    pub fn local(&self) -> &[LocalSegment] {
        self.sges.get(..usize::from(self.sge_count)).unwrap_or(&[])
    }
}

/// Cursor over one operation's remote descriptors and local segments.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    remote: Vec<BufferDescriptorV1>,
    local: Vec<LocalSegment>,
    ri: usize,
    roff: u32,
    li: usize,
    loff: u32,
    left: u64,
}

struct Cut {
    token: u32,
    addr: u64,
    len: u32,
    sges: [LocalSegment; MAX_SGE],
    sge_count: u8,
    ri: usize,
    roff: u32,
    li: usize,
    loff: u32,
}

impl Plan {
    /// Checks the descriptors and segments and sets up a plan for `len` bytes.
    pub(crate) fn fill(
        &mut self,
        remote: &[BufferDescriptorV1],
        local: &[LocalSegment],
        len: u64,
    ) -> Result<(), RdmaError> {
        if len == 0 {
            return Err(RdmaError::Empty);
        }
        let mut have = 0u64;
        for d in remote {
            d.offset.checked_add(u64::from(d.length)).ok_or(RdmaError::DescriptorOverflow)?;
            have += u64::from(d.length);
        }
        if have < len {
            return Err(RdmaError::RemoteTooShort { need: len, have });
        }
        let mut lhave = 0u64;
        for s in local {
            s.addr.checked_add(u64::from(s.len)).ok_or(RdmaError::DescriptorOverflow)?;
            lhave += u64::from(s.len);
        }
        if lhave < len {
            return Err(RdmaError::LocalTooShort { need: len, have: lhave });
        }
        self.remote.clear();
        self.remote.extend_from_slice(remote);
        self.local.clear();
        self.local.extend_from_slice(local);
        self.ri = 0;
        self.roff = 0;
        self.li = 0;
        self.loff = 0;
        self.left = len;
        Ok(())
    }

    pub(crate) fn left(&self) -> u64 {
        self.left
    }

    /// The next work request of at most `cap` bytes, without moving the cursor.
    fn peek(&self, limits: &RdmaLimits, cap: u32) -> Option<Cut> {
        if self.left == 0 {
            return None;
        }
        let (mut ri, mut roff) = (self.ri, self.roff);
        // Skip exhausted or empty descriptors.
        let d = loop {
            let d = self.remote.get(ri)?;
            if roff < d.length {
                break d;
            }
            ri += 1;
            roff = 0;
        };
        let want = u64::from(d.length - roff).min(self.left).min(u64::from(cap)) as u32;
        let mut sges = [LocalSegment::default(); MAX_SGE];
        let mut n = 0usize;
        let (mut li, mut loff) = (self.li, self.loff);
        let mut got = 0u32;
        while got < want && n < limits.max_sge {
            let Some(s) = self.local.get(li) else { break };
            if loff >= s.len {
                li += 1;
                loff = 0;
                continue;
            }
            let take = (s.len - loff).min(want - got);
            if let Some(slot) = sges.get_mut(n) {
                *slot = LocalSegment { lkey: s.lkey, addr: s.addr + u64::from(loff), len: take };
            }
            n += 1;
            got += take;
            loff += take;
            if loff == s.len {
                li += 1;
                loff = 0;
            }
        }
        if got == 0 {
            return None;
        }
        Some(Cut {
            token: d.token,
            addr: d.offset + u64::from(roff),
            len: got,
            sges,
            sge_count: n as u8,
            ri,
            roff: roff + got,
            li,
            loff,
        })
    }

    fn commit(&mut self, c: &Cut) {
        self.ri = c.ri;
        self.roff = c.roff;
        self.li = c.li;
        self.loff = c.loff;
        self.left -= u64::from(c.len);
    }
}

#[derive(Debug)]
struct Op {
    id: RdmaOpId,
    direction: RdmaDirection,
    plan: Plan,
    outstanding: u32,
    total: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    wr_id: u64,
    op: RdmaOpId,
    len: u32,
    direction: RdmaDirection,
    posted_at: Instant,
}

/// What a completion did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RdmaOutcome {
    /// Not one of ours (already failed or never posted): ignored.
    Unknown,
    Progress,
    Done(RdmaOpId, u64),
    Failed(RdmaOpId, CompletionError),
}

/// Schedules the work requests of all RDMA operations on one queue pair.
#[derive(Debug)]
pub(crate) struct RdmaEngine {
    limits: RdmaLimits,
    ops: VecDeque<Op>,
    inflight: VecDeque<InFlight>,
    plan_pool: Vec<Plan>,
    next_op: u64,
    next_wr: u64,
    reads_out: u16,
    bytes_out: u64,
}

impl RdmaEngine {
    pub(crate) fn new(limits: RdmaLimits) -> Self {
        let limits = limits.sanitized();
        RdmaEngine {
            limits,
            ops: VecDeque::with_capacity(16),
            inflight: VecDeque::with_capacity(usize::from(limits.max_outstanding_wrs)),
            plan_pool: Vec::new(),
            next_op: 1,
            next_wr: 1,
            reads_out: 0,
            bytes_out: 0,
        }
    }

    pub(crate) fn limits(&self) -> &RdmaLimits {
        &self.limits
    }

    pub(crate) fn bytes_in_flight(&self) -> u64 {
        self.bytes_out
    }

    pub(crate) fn start(
        &mut self,
        direction: RdmaDirection,
        remote: &[BufferDescriptorV1],
        local: &[LocalSegment],
        len: u64,
    ) -> Result<RdmaOpId, RdmaError> {
        let mut plan = self.plan_pool.pop().unwrap_or_default();
        if let Err(e) = plan.fill(remote, local, len) {
            self.plan_pool.push(plan);
            return Err(e);
        }
        let id = RdmaOpId(self.next_op);
        self.next_op += 1;
        self.ops.push_back(Op { id, direction, plan, outstanding: 0, total: len });
        Ok(id)
    }

    /// Produces as many work requests as the limits allow, in operation order.
    pub(crate) fn pump(&mut self, now: Instant, mut post: impl FnMut(RdmaWorkRequest)) {
        let l = self.limits;
        let cap = u64::from(l.max_message_size).min(l.max_bytes_in_flight) as u32;
        for op in self.ops.iter_mut() {
            loop {
                if self.inflight.len() >= usize::from(l.max_outstanding_wrs) {
                    return;
                }
                if op.direction == RdmaDirection::Read && self.reads_out >= l.max_outstanding_reads {
                    break;
                }
                let Some(cut) = op.plan.peek(&l, cap) else { break };
                if self.bytes_out > 0 && self.bytes_out + u64::from(cut.len) > l.max_bytes_in_flight {
                    return;
                }
                op.plan.commit(&cut);
                let wr_id = self.next_wr;
                self.next_wr += 1;
                op.outstanding += 1;
                self.bytes_out += u64::from(cut.len);
                if op.direction == RdmaDirection::Read {
                    self.reads_out += 1;
                }
                self.inflight.push_back(InFlight { wr_id, op: op.id, len: cut.len, direction: op.direction, posted_at: now });
                post(RdmaWorkRequest {
                    wr_id,
                    op: op.id,
                    direction: op.direction,
                    remote_token: cut.token,
                    remote_addr: cut.addr,
                    len: cut.len,
                    sges: cut.sges,
                    sge_count: cut.sge_count,
                });
            }
        }
    }

    /// The posting time of the oldest outstanding work request.
    pub(crate) fn oldest(&self) -> Option<Instant> {
        self.inflight.front().map(|f| f.posted_at)
    }

    pub(crate) fn complete(&mut self, wr_id: u64, result: Result<(), CompletionError>) -> RdmaOutcome {
        let Some(pos) = self.inflight.iter().position(|f| f.wr_id == wr_id) else {
            return RdmaOutcome::Unknown;
        };
        let Some(f) = self.inflight.remove(pos) else { return RdmaOutcome::Unknown };
        self.bytes_out -= u64::from(f.len);
        if f.direction == RdmaDirection::Read {
            self.reads_out -= 1;
        }
        let Some(idx) = self.ops.iter().position(|o| o.id == f.op) else {
            return RdmaOutcome::Unknown;
        };
        if let Err(e) = result {
            // Reported once, as failed; it must not be reported again as aborted.
            if let Some(op) = self.ops.remove(idx) {
                self.plan_pool.push(op.plan);
            }
            return RdmaOutcome::Failed(f.op, e);
        }
        let done = match self.ops.get_mut(idx) {
            Some(op) => {
                op.outstanding -= 1;
                op.outstanding == 0 && op.plan.left() == 0
            }
            None => false,
        };
        if done {
            if let Some(op) = self.ops.remove(idx) {
                let total = op.total;
                self.plan_pool.push(op.plan);
                return RdmaOutcome::Done(f.op, total);
            }
        }
        RdmaOutcome::Progress
    }

    /// Drops every operation (the queue pair is gone) and returns their ids.
    pub(crate) fn abort_all(&mut self, mut each: impl FnMut(RdmaOpId)) {
        self.inflight.clear();
        self.bytes_out = 0;
        self.reads_out = 0;
        while let Some(op) = self.ops.pop_front() {
            each(op.id);
            self.plan_pool.push(op.plan);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(offset: u64, token: u32, length: u32) -> BufferDescriptorV1 {
        BufferDescriptorV1 { offset, token, length }
    }

    fn drain(e: &mut RdmaEngine, now: Instant) -> Vec<RdmaWorkRequest> {
        let mut v = Vec::new();
        e.pump(now, |w| v.push(w));
        v
    }

    #[test]
    fn splits_by_message_size_descriptor_and_sge() {
        let now = Instant::now();
        let limits = RdmaLimits {
            max_sge: 2,
            max_message_size: 4096,
            max_outstanding_reads: 100,
            max_outstanding_wrs: 100,
            max_bytes_in_flight: 1 << 30,
        };
        let mut e = RdmaEngine::new(limits);
        let remote = [desc(0x1000, 7, 5000), desc(0x9000, 8, 3000)];
        // Local memory in 1 KiB pieces: at most 2 SGEs means at most 2 KiB per request.
        let local: Vec<LocalSegment> =
            (0..8).map(|i| LocalSegment { lkey: 1, addr: i * 1024, len: 1024 }).collect();
        let op = e.start(RdmaDirection::Write, &remote, &local, 8000).unwrap();
        let wrs = drain(&mut e, now);
        let total: u64 = wrs.iter().map(|w| u64::from(w.len)).sum();
        assert_eq!(total, 8000);
        for w in &wrs {
            assert!(w.local().len() <= 2);
            assert!(w.len <= 4096);
            assert_eq!(w.local().iter().map(|s| s.len).sum::<u32>(), w.len);
        }
        // Remote ranges stay inside their descriptor and are contiguous.
        assert_eq!((wrs[0].remote_token, wrs[0].remote_addr, wrs[0].len), (7, 0x1000, 2048));
        let last = wrs.last().unwrap();
        assert_eq!(last.remote_token, 8);
        assert_eq!(last.remote_addr + u64::from(last.len), 0x9000 + 3000);
        let n = wrs.len();
        for (i, w) in wrs.iter().enumerate() {
            let out = e.complete(w.wr_id, Ok(()));
            if i + 1 == n {
                assert_eq!(out, RdmaOutcome::Done(op, 8000));
            } else {
                assert_eq!(out, RdmaOutcome::Progress);
            }
        }
    }

    #[test]
    fn bounds_bytes_in_flight_and_reads() {
        let now = Instant::now();
        let limits = RdmaLimits {
            max_sge: 1,
            max_message_size: 1 << 20,
            max_outstanding_reads: 3,
            max_outstanding_wrs: 100,
            max_bytes_in_flight: 64 * 1024,
        };
        let mut e = RdmaEngine::new(limits);
        let local = [LocalSegment { lkey: 1, addr: 0, len: 1 << 20 }];
        let w = e.start(RdmaDirection::Write, &[desc(0, 1, 1 << 20)], &local, 1 << 20).unwrap();
        let wrs = drain(&mut e, now);
        // One request of 64 KiB fills the budget.
        assert_eq!(wrs.len(), 1);
        assert_eq!(wrs[0].len, 64 * 1024);
        assert_eq!(e.bytes_in_flight(), 64 * 1024);
        assert!(drain(&mut e, now).is_empty());
        let mut done = None;
        let mut pending = wrs;
        let mut rounds = 0;
        while let Some(wr) = pending.pop() {
            rounds += 1;
            if let RdmaOutcome::Done(id, n) = e.complete(wr.wr_id, Ok(())) {
                done = Some((id, n));
            }
            pending.extend(drain(&mut e, now));
            assert!(e.bytes_in_flight() <= 64 * 1024);
        }
        assert_eq!(rounds, 16);
        assert_eq!(done, Some((w, 1 << 20)));

        // Reads: initiator depth 3.
        let limits = RdmaLimits { max_bytes_in_flight: 1 << 30, max_message_size: 4096, ..limits };
        let mut e = RdmaEngine::new(limits);
        e.start(RdmaDirection::Read, &[desc(0, 1, 65536)], &local, 65536).unwrap();
        assert_eq!(drain(&mut e, now).len(), 3);
    }

    #[test]
    fn rejects_bad_plans() {
        let mut e = RdmaEngine::new(RdmaLimits::default());
        let local = [LocalSegment { lkey: 1, addr: 0, len: 100 }];
        assert_eq!(e.start(RdmaDirection::Read, &[desc(0, 1, 50)], &local, 100), Err(RdmaError::RemoteTooShort { need: 100, have: 50 }));
        assert_eq!(e.start(RdmaDirection::Read, &[desc(0, 1, 500)], &local, 200), Err(RdmaError::LocalTooShort { need: 200, have: 100 }));
        assert_eq!(e.start(RdmaDirection::Read, &[desc(u64::MAX, 1, 2)], &local, 1), Err(RdmaError::DescriptorOverflow));
        assert_eq!(e.start(RdmaDirection::Read, &[desc(0, 1, 2)], &local, 0), Err(RdmaError::Empty));
    }
}
