//! Passing a TCP connection to the worker that owns a session it binds to
//! (issue 10: the process model as Samba's `smbXsrv_connection_pass`).
//!
//! The front listener routes a connection by the ClientGUID of its NEGOTIATE,
//! so a SESSION_SETUP with SMB2_SESSION_FLAG_BINDING may arrive at a worker
//! that does not hold the session it names (another ClientGUID, or an SMB1
//! negotiate routed by address). The worker that owns a session is part of
//! its SessionId ([`session_id`], [`session_owner`]). A worker that receives
//! such a binding on a connection that has no session yet hands the
//! connection over, unanswered, with what rebuilds its state elsewhere
//! ([`ConnPass`]): the NEGOTIATE request and the exact response that went
//! out (the binding's preauth hash covers both, so the new worker must not
//! answer anew), the credit window, and the messages read and not yet
//! handled, the SESSION_SETUP first. The supervisor forwards it to the owner
//! (`workerproto::Frame::PassConn` / `Passed`), which rebuilds the connection
//! ([`crate::conn::Connection::resume`]) and handles the SESSION_SETUP as any
//! binding: the owner answers, success or refusal. A session whose worker
//! died is gone with it: the restarted worker answers USER_SESSION_DELETED.
//!
//! An SMB Direct channel is passed the same way: its transport state (queue
//! pair, memory registrations, SMB Direct credits) lives in the rdma-proxy,
//! which only sees the worker's end of the channel socket change process.
//! The worker halts the channel's reader between frames (no RDMA transfer
//! can be outstanding before a session), sends the socket with the
//! channel's offer (`workerproto::Frame::PassChannel`), and the supervisor
//! gives both to the owner on its proxy-frame socket (the proxy protocol's
//! `ChannelPassed`), where `rdma::serve_control_with` serves the channel from
//! the owner's own pool slot range.
//!
//! A pass (the state above) may span datagrams up to
//! `workerproto::MAX_PASS` (1 MiB: a client that pipelined past its
//! binding).
//!
//! Not passed, answered where they arrive with USER_SESSION_DELETED (the
//! session is not in that worker's table: MS-SMB2 3.3.5.5.2) and a log line
//! saying why (`Connection::pass_for`): a connection that already has a
//! session of its own in this worker or a session setup under way (its
//! sessions live here, and a connection is served by one worker), a binding
//! in a compound (the owner would answer the rest of a chain on a connection
//! it never saw), a connection already passed once, and state over
//! `MAX_PASS`. An encrypted binding cannot be passed either: the TRANSFORM
//! names a session that is not bound to the connection, which MS-SMB2
//! 3.3.5.2.1.1 answers by disconnecting (also in the owner), with the log
//! line "TRANSFORM for unknown session".

use crate::credits::CreditSnapshot;
use std::sync::atomic::{AtomicU32, Ordering};

/// The SessionId bits that name the worker that allocated it.
const OWNER_SHIFT: u32 = 48;
const LOCAL_MASK: u64 = (1 << OWNER_SHIFT) - 1;

/// A new SessionId of worker `worker`: the worker id in the high 16 bits
/// (0 for a single process, whose ids stay as they were), `counter` below.
pub fn session_id(worker: u32, counter: u64) -> u64 {
    (u64::from(worker & 0xFFFF) << OWNER_SHIFT) | (counter & LOCAL_MASK)
}

/// The worker that allocated SessionId `id`.
pub fn session_owner(id: u64) -> u32 {
    (id >> OWNER_SHIFT) as u32
}

/// Workers this process may pass connections among (0: none; set by a
/// worker process at start, never in a single process or in tests).
static PASS_WORKERS: AtomicU32 = AtomicU32::new(0);

/// Enables passing in this (worker) process, among `workers` workers.
pub fn enable(workers: u32) {
    PASS_WORKERS.store(workers, Ordering::Relaxed);
}

/// Whether connections of this process may be passed.
pub fn enabled() -> bool {
    PASS_WORKERS.load(Ordering::Relaxed) > 1
}

/// Whether a binding of `session` seen by worker `me` goes to another
/// worker: passing is on and the id names another, existing worker.
pub fn foreign_owner(me: u32, session: u64) -> Option<u32> {
    let n = PASS_WORKERS.load(Ordering::Relaxed);
    let owner = session_owner(session);
    (n > 1 && owner != me && owner < n).then_some(owner)
}

/// A connection in transit to another worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPass {
    /// The session the binding names (its owner takes the connection).
    pub session_id: u64,
    /// The SMB2 NEGOTIATE request as received (no transport header).
    pub negotiate_req: Vec<u8>,
    /// The NEGOTIATE response exactly as it was sent (no transport header).
    pub negotiate_resp: Vec<u8>,
    pub credits: CreditSnapshot,
    /// Messages read and not handled yet, each with its Direct TCP header:
    /// replayed by the new owner before it reads the socket.
    pub pending: Vec<u8>,
}

/// `msg` with its Direct TCP header (MS-SMB2 2.1), as read off the socket.
pub fn framed(msg: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(msg.len() + 4);
    v.extend_from_slice(&(msg.len() as u32 & 0x00FF_FFFF).to_be_bytes());
    v.extend_from_slice(msg);
    v
}

/// The messages of [`ConnPass::pending`] (each with its Direct TCP header),
/// for a transport that takes whole messages (SMB Direct). `None` if the
/// bytes are not a sequence of such messages.
pub fn unframe(mut pending: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut v = Vec::new();
    while !pending.is_empty() {
        let (hdr, rest) = pending.split_at_checked(4)?;
        if hdr[0] != 0 {
            return None;
        }
        let n = u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]) as usize;
        let (msg, rest) = rest.split_at_checked(n)?;
        v.push(msg.to_vec());
        pending = rest;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_messages_unframe() {
        let mut p = framed(b"first");
        p.extend_from_slice(&framed(b""));
        p.extend_from_slice(&framed(&[7; 300]));
        assert_eq!(unframe(&p).unwrap(), vec![b"first".to_vec(), Vec::new(), vec![7; 300]]);
        assert_eq!(unframe(&[]).unwrap(), Vec::<Vec<u8>>::new());
        assert!(unframe(&p[..p.len() - 1]).is_none(), "cut short");
        assert!(unframe(&[0, 0]).is_none(), "half a header");
        assert!(unframe(&[1, 0, 0, 0]).is_none(), "not a Direct TCP header");
    }

    #[test]
    fn session_ids_name_their_worker() {
        assert_eq!(session_id(0, 5), 5, "a single process keeps its ids");
        let id = session_id(3, 0x1234);
        assert_eq!(session_owner(id), 3);
        assert_eq!(id & LOCAL_MASK, 0x1234);
        assert_eq!(session_owner(session_id(63, u64::MAX)), 63);
        assert_eq!(session_id(63, u64::MAX) & LOCAL_MASK, LOCAL_MASK);
    }

    #[test]
    fn framing_is_direct_tcp() {
        assert_eq!(framed(b"abc"), vec![0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
