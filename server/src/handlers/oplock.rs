//! Oplocks (MS-SMB2 3.3.4.6, 3.3.5.22.1; MS-FSA 2.1.4.12): the
//! OPLOCK_BREAK notification a holder gets, its acknowledgment, and the
//! level II breaks that writes, size changes and byte-range locks cause.
//! The records live in the state store (store/oplock.rs); CREATE grants and
//! waits for breaks (create.rs).

use crate::conn::{seal_out, Connection, Ctx};
use crate::objects::{lock, store_status, Open, Server, Session};
use crate::store::{AckError, FileKey};
use crate::transport::{MessageSink, OutBuf};
use crate::wire::header::{Command, Header, FLAG_SERVER_TO_REDIR, HEADER_LEN};
use crate::wire::status::NtStatus;
use crate::wire::Put;
use std::sync::Arc;
use tracing::debug;

/// STATUS_INVALID_OPLOCK_PROTOCOL (MS-ERREF 2.3.1).
pub const INVALID_OPLOCK_PROTOCOL: NtStatus = NtStatus(0xC000_00E3);
/// STATUS_INVALID_DEVICE_STATE.
pub const INVALID_DEVICE_STATE: NtStatus = NtStatus(0xC000_0184);

/// The 24-byte body shared by the notification, the acknowledgment and the
/// response (MS-SMB2 2.2.23.1, 2.2.24.1, 2.2.25.1).
fn body(out: &mut Vec<u8>, level: u8, file_id: &[u8; 16]) {
    out.u16(24).u8(level).u8(0).u32(0).put(file_id);
}

/// Sends an OPLOCK_BREAK notification for `open` (MS-SMB2 3.3.4.6):
/// unsolicited, MessageId 0xFFFFFFFFFFFFFFFF, TreeId 0, the open's
/// SessionId; encrypted when the session encrypts, else unsigned (as
/// Windows sends it).
pub fn send_break(sink: &dyn MessageSink, session: &Session, open: &Open, level: u8) {
    let mut out = OutBuf::new(HEADER_LEN + 24);
    let h = Header { command: Command::OplockBreak as u16, flags: FLAG_SERVER_TO_REDIR, message_id: u64::MAX, session_id: session.id, ..Default::default() };
    h.write(&mut out.buf);
    body(&mut out.buf, level, &open.file_id());
    if *lock(&session.encrypt_data) {
        let Some(k) = session.keys() else { return };
        if let Err(e) = seal_out(&k, session.id, &mut out) {
            debug!("cannot encrypt an oplock break: {e}");
            return;
        }
    }
    debug!(open = open.volatile_id, level, "OPLOCK_BREAK sent");
    send_on_session(sink, session, out);
}

/// Sends a break notification on `first` (the open's connection) while
/// that connection is still a channel of the session, else (or when it
/// fails) on another channel of the session (MS-SMB2 3.3.4.1.6). A channel
/// smbtorture marked as never acknowledging (`Channel::unacked`) is one
/// whose network went away: the open's own gets the break and is then
/// closed, the break going on to another channel; no other break is sent
/// on such a channel.
pub fn send_on_session(first: &dyn MessageSink, session: &Session, out: OutBuf) {
    let copy = |o: &OutBuf| OutBuf { buf: o.buf.clone(), start: o.start };
    let same = |s: &Arc<dyn MessageSink>| std::ptr::addr_eq(Arc::as_ptr(s), first as *const dyn MessageSink);
    let (channels, first_unacked): (Vec<Arc<dyn MessageSink>>, bool) = {
        let ch = lock(&session.channels);
        let live = |c: &&crate::objects::Channel| !c.unacked.load(std::sync::atomic::Ordering::Relaxed);
        let first_unacked = ch.list.iter().any(|c| !live(&c) && c.sink.upgrade().is_some_and(|s| same(&s)));
        (ch.list.iter().filter(live).filter_map(|c| c.sink.upgrade()).collect(), first_unacked)
    };
    if first_unacked {
        // Sent there, but nothing there is ever acknowledged: the server
        // gives the channel up, as Samba does when its ack timeout passes
        // (here at once), and the break goes on to another channel.
        if let Err(e) = first.send(copy(&out)) {
            debug!("break not sent on the open's channel: {e}");
        }
        debug!(session = session.id, "channel marked unacknowledged: closed after the break");
        first.shutdown();
    } else if channels.is_empty() || channels.iter().any(same) {
        match first.send(copy(&out)) {
            Ok(()) => return,
            Err(e) => debug!("break not sent on the open's channel: {e}"),
        }
    }
    for s in channels.iter().filter(|s| !same(s)) {
        if s.send(copy(&out)).is_ok() {
            debug!(session = session.id, "break sent on another channel of the session");
            return;
        }
    }
    debug!(session = session.id, "break not sent: no channel of the session takes it");
}

/// OPLOCK_BREAK acknowledgment (MS-SMB2 3.3.5.22.1).
pub fn oplock_break(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let b = ctx.msg.get(HEADER_LEN..).ok_or(NtStatus::INVALID_PARAMETER)?;
    let size = b.get(..2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
    if size == 36 {
        return super::lease::lease_break_ack(conn, ctx, out);
    }
    if size != 24 || b.len() < 24 {
        return Err(NtStatus::INVALID_PARAMETER);
    }
    let level = b[2];
    let mut file_id = [0u8; 16];
    file_id.copy_from_slice(&b[8..24]);
    let open = ctx.open(&file_id)?;
    let Some(key) = open.file_key else { return Err(INVALID_DEVICE_STATE) };
    let key: FileKey = key.into();
    let server = conn.server.clone();
    let (r, wake) = server.store.oplock_ack(key, server.open_id(open.volatile_id), level).map_err(store_status)?;
    for w in wake {
        server.wake(w, key);
    }
    match r {
        Ok(level) => {
            *lock(&open.oplock_level) = level;
            if level == 0 {
                lock(&server.oplock_opens).remove(&open.volatile_id);
            }
            body(out, level, &open.file_id());
            Ok(())
        }
        // MS-SMB2 3.3.5.22.1 says INVALID_DEVICE_STATE; Windows (and
        // smbtorture's levelii500, which acks a level II break to none that
        // wants no ack) answer INVALID_OPLOCK_PROTOCOL.
        Err(AckError::NotBreaking) => Err(INVALID_OPLOCK_PROTOCOL),
        Err(AckError::BadLevel) => {
            *lock(&open.oplock_level) = 0;
            lock(&server.oplock_opens).remove(&open.volatile_id);
            Err(INVALID_OPLOCK_PROTOCOL)
        }
    }
}

/// A write, size change or byte-range lock through `open`: the level II
/// oplocks of the file, `open`'s own included, are broken to none (MS-FSA
/// 2.1.4.12).
pub fn break_level2(server: &Server, open: &Open) {
    let Some(key) = open.file_key else { return };
    let key: FileKey = key.into();
    match server.store.oplock_break_level2(key, server.open_id(open.volatile_id), Server::now_ms()) {
        Ok(workers) => {
            let mut workers = workers;
            workers.sort_unstable();
            workers.dedup();
            for w in workers {
                server.wake(w, key);
            }
        }
        Err(e) => tracing::warn!("level II oplock break: {e}"),
    }
}

/// Whether `open` holds handle caching: a batch oplock (MS-SMB2 3.3.5.9.6:
/// a durable v1 open needs one) or a lease with H (3.3.5.9.10). Both halves
/// read the state the store holds for the open now (a break to level II or
/// none in progress or done, or a lease break that takes H or that timed
/// out, means no handle caching), falling back to what was granted or
/// acknowledged through this worker when the store cannot answer.
pub fn holds_handle_caching(server: &Server, open: &Open) -> bool {
    use crate::store::lease::HANDLE;
    use crate::store::oplock::LEVEL_BATCH;
    let local_lease = *lock(&open.lease);
    let Some(key) = open.file_key else { return false };
    let id = server.open_id(open.volatile_id);
    match server.store.oplocks(key.into()) {
        Ok(rec) => {
            if let Some((lid, _)) = local_lease {
                if let Some(l) = rec.lease(&lid) {
                    return l.state & HANDLE != 0 && l.breaking_to.is_none_or(|to| to & HANDLE != 0);
                }
            }
            rec.holders.iter().any(|h| h.open == id && h.level == LEVEL_BATCH && h.breaking_to.is_none_or(|to| to == LEVEL_BATCH))
        }
        Err(e) => {
            tracing::warn!("oplock record of {key:?}: {e}");
            local_lease.is_some_and(|(_, state)| state & HANDLE != 0) || *lock(&open.oplock_level) == LEVEL_BATCH
        }
    }
}
