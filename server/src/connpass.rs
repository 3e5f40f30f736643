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
//! handled, the SESSION_SETUP's message first. The supervisor forwards it to
//! the owner (`workerproto::Frame::PassConn` / `Passed`), which rebuilds the
//! connection ([`crate::conn::Connection::resume`]) and handles the
//! SESSION_SETUP as any binding: the owner answers, success or refusal. A
//! session whose worker died is gone with it: the restarted worker answers
//! USER_SESSION_DELETED.
//!
//! A binding that is the first request of a compound (SESSION_SETUP and
//! related requests after it) goes the same way, the whole message as it was
//! received: nothing of the chain runs where it arrived (the decision is
//! taken on its first request, before the chain is split), and the owner,
//! whose connection it is from then on, runs the entire chain through its
//! own compound path, as if it had received it (related requests inherit
//! the SessionId, the chain's responses go out together on the connection).
//! A compound whose first request is anything else is handled where it
//! arrives, as any message (a binding further down the chain finds no
//! session there).
//!
//! An SMB Direct channel is passed the same way: its transport state (queue
//! pair, memory registrations, SMB Direct credits) lives in the rdma-proxy,
//! which only sees the worker's end of the channel socket change process.
//! The worker halts the channel's reader between frames, sends the socket
//! with the channel's offer (`workerproto::Frame::PassChannel`), and the
//! supervisor gives both to the owner on its proxy-frame socket (the proxy
//! protocol's `ChannelPassed`), where `rdma::serve_control_with` serves the
//! channel from the owner's own pool slot range.
//!
//! A passed channel has no RDMA transfer outstanding, which the new owner
//! could not finish (the proxy's completion would name a request the new
//! owner never started, in the old owner's pool slots):
//! - RDMA transfers are only started by READ and WRITE (with SMB Direct
//!   buffer descriptors), and those need a session in this connection's
//!   table (or one it is setting up), then a tree and an open of it.
//! - Only a connection with no session and no session setup under way is
//!   passed (`Connection::pass_for`), and one on which a session was ever
//!   authenticated never is, even after its LOGOFF: `on_authenticated`
//!   drops the NEGOTIATE kept for a pass and marks the reader as never to
//!   be halted. So a passed connection has never had a session of its own.
//! - The decision is taken on the message's first request before any of
//!   it runs, so a READ or WRITE further down a passed compound runs only in
//!   the owner, on the owner's pool slots.
//! - Should anything be left all the same (a bug in the above), the
//!   transport checks at the halt: with anything in the channel's `pending`
//!   the channel is closed, not passed (transport_smbd.rs, "RDMA transfers
//!   outstanding").
//!
//! A pass (the state above) may span datagrams up to
//! `workerproto::MAX_PASS` (1 MiB: a client that pipelined past its
//! binding).
//!
//! Not passed, answered where they arrive with USER_SESSION_DELETED (the
//! session is not in that worker's table: MS-SMB2 3.3.5.5.2) and a log line
//! saying why (`Connection::pass_for`): a connection that already has a
//! session of its own in this worker or a session setup under way (its
//! sessions live here, and a connection is served by one worker), a
//! connection already passed once, one with no dialect negotiated or whose
//! reader cannot be halted, and state over `MAX_PASS` (a compound counts
//! whole, but one message of a connection without a session is held to
//! `max_unauthenticated_message`, 128 KiB, far under it; messages pipelined
//! behind the binding that take the pass over it close the connection, as
//! the frame to the supervisor cannot carry them). An encrypted binding
//! cannot be passed either: the TRANSFORM names a session that is not bound
//! to the connection, which MS-SMB2 3.3.5.2.1.1 answers by disconnecting
//! (also in the owner), with the log line "TRANSFORM for unknown session".

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
