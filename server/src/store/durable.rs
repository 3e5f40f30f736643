//! Durable opens (MS-SMB2 3.3.1.10 Open.IsDurable, DurableOpenTimeout,
//! CreateGuid; Samba's `smbXsrv_open_global0`): the global record of an open
//! that may outlive its connection, keyed by its persistent file id. While
//! the open's connection lives the record only answers "which open has this
//! CreateGuid" (replay, 3.3.5.9.10); once the connection or session is gone
//! the open is *disconnected*: the record says until when it waits for its
//! client (`disconnected_until`), and a reconnect (DHnC/DH2C) claims it back.
//!
//! The share-mode entry, byte-range locks and oplock of the open stay in
//! their own records under the open's [`GlobalOpenId`] while it is
//! disconnected, so other opens still see them. The worker named in `open`
//! keeps the file descriptor (handlers/durable.rs): a record of a worker
//! that died goes with it ([`super::StateStore::purge_worker`]).

use super::records::Reader;
use super::{FileKey, GlobalOpenId, StoreError};

const RECORD_VERSION: u8 = 3;
/// The longest string kept in a record (user, share, path): a bound on what
/// a damaged record can make us allocate.
const MAX_STRING: usize = 64 * 1024;
/// The most workers a record keeps as waiting for it ([`DurableRecord::waiters`]);
/// one more is not recorded and finds out when its bounded wait ends.
pub const MAX_WAITERS: usize = 64;

/// One durable open, server-wide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableRecord {
    /// Open.DurableFileId: the persistent half of the FileId (the key).
    pub persistent_id: u64,
    /// The worker holding the open and its volatile id there.
    pub open: GlobalOpenId,
    pub file: FileKey,
    /// 1: DHnQ; 2: DH2Q.
    pub version: u8,
    /// Open.CreateGuid (zero for a v1 open).
    pub create_guid: [u8; 16],
    /// Open.ClientGuid: the ClientGuid of the connection that opened it.
    pub client_guid: [u8; 16],
    /// The owner, "DOMAIN\user" as authenticated (a reconnect must be made
    /// by the same user).
    pub owner: String,
    pub share: String,
    pub path: String,
    pub access: u32,
    pub share_access: u32,
    /// The oplock level granted at CREATE.
    pub oplock: u8,
    /// The lease key, for an open made with a lease.
    pub lease_key: Option<[u8; 16]>,
    /// Open.DurableOpenTimeout in milliseconds.
    pub timeout_ms: u64,
    /// `None` while the open is connected; else when (ms since the Unix
    /// epoch) the disconnected open is closed unless reclaimed.
    pub disconnected_until: Option<u64>,
    /// Open.AppInstanceId (MS-SMB2 2.2.13.2.13), for a DH2Q open made with one.
    pub app_instance_id: Option<[u8; 16]>,
    /// Another worker asked the holder to close this open (a new open with
    /// its AppInstanceId, 3.3.5.9.13); the holder does so when woken.
    pub close_requested: bool,
    /// Workers waiting for this record to change (a reconnect waiting for
    /// the open's old connection to end, a CREATE waiting for the open of
    /// its AppInstanceId to close: handlers/durable.rs). The worker that
    /// disconnects, moves or removes the record wakes them; they register
    /// with [`super::StateStore::durable_watch`].
    pub waiters: Vec<u32>,
}

impl DurableRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(128 + self.owner.len() + self.share.len() + self.path.len());
        o.push(RECORD_VERSION);
        o.extend_from_slice(&self.persistent_id.to_le_bytes());
        o.extend_from_slice(&self.open.worker.to_le_bytes());
        o.extend_from_slice(&self.open.open.to_le_bytes());
        o.extend_from_slice(&self.file.dev.to_le_bytes());
        o.extend_from_slice(&self.file.ino.to_le_bytes());
        o.push(self.version);
        o.extend_from_slice(&self.create_guid);
        o.extend_from_slice(&self.client_guid);
        for s in [&self.owner, &self.share, &self.path] {
            o.extend_from_slice(&(s.len() as u32).to_le_bytes());
            o.extend_from_slice(s.as_bytes());
        }
        o.extend_from_slice(&self.access.to_le_bytes());
        o.extend_from_slice(&self.share_access.to_le_bytes());
        o.push(self.oplock);
        match &self.lease_key {
            Some(k) => {
                o.push(1);
                o.extend_from_slice(k);
            }
            None => o.push(0),
        }
        o.extend_from_slice(&self.timeout_ms.to_le_bytes());
        match self.disconnected_until {
            Some(t) => {
                o.push(1);
                o.extend_from_slice(&t.to_le_bytes());
            }
            None => o.push(0),
        }
        match &self.app_instance_id {
            Some(k) => {
                o.push(1);
                o.extend_from_slice(k);
            }
            None => o.push(0),
        }
        o.push(self.close_requested as u8);
        let waiters = self.waiters.get(..MAX_WAITERS).unwrap_or(&self.waiters);
        o.push(waiters.len() as u8);
        for w in waiters {
            o.extend_from_slice(&w.to_le_bytes());
        }
        o
    }

    pub fn decode(b: &[u8]) -> Result<DurableRecord, StoreError> {
        let mut r = Reader(b);
        if r.u8()? != RECORD_VERSION {
            return Err(StoreError::Corrupt("unknown durable record version"));
        }
        let persistent_id = r.u64()?;
        let open = GlobalOpenId { worker: r.u32()?, open: r.u64()? };
        let file = FileKey { dev: r.u64()?, ino: r.u64()? };
        let version = r.u8()?;
        let create_guid = r.guid()?;
        let client_guid = r.guid()?;
        let string = |r: &mut Reader<'_>| -> Result<String, StoreError> {
            let n = r.u32()? as usize;
            if n > MAX_STRING {
                return Err(StoreError::Corrupt("string past its bound"));
            }
            String::from_utf8(r.take(n)?.to_vec()).map_err(|_| StoreError::Corrupt("string not UTF-8"))
        };
        let owner = string(&mut r)?;
        let share = string(&mut r)?;
        let path = string(&mut r)?;
        let access = r.u32()?;
        let share_access = r.u32()?;
        let oplock = r.u8()?;
        let lease_key = match r.u8()? {
            0 => None,
            _ => Some(r.guid()?),
        };
        let timeout_ms = r.u64()?;
        let disconnected_until = match r.u8()? {
            0 => None,
            _ => Some(r.u64()?),
        };
        let app_instance_id = match r.u8()? {
            0 => None,
            _ => Some(r.guid()?),
        };
        let close_requested = r.u8()? != 0;
        let n = r.u8()? as usize;
        if n > MAX_WAITERS {
            return Err(StoreError::Corrupt("too many waiters"));
        }
        let mut waiters = Vec::with_capacity(n);
        for _ in 0..n {
            waiters.push(r.u32()?);
        }
        r.end()?;
        Ok(DurableRecord {
            persistent_id,
            open,
            file,
            version,
            create_guid,
            client_guid,
            owner,
            share,
            path,
            access,
            share_access,
            oplock,
            lease_key,
            timeout_ms,
            disconnected_until,
            app_instance_id,
            close_requested,
            waiters,
        })
    }

    /// Whether a reconnect may claim this record at `now_ms`: disconnected
    /// and not yet expired.
    pub fn reclaimable(&self, now_ms: u64) -> bool {
        self.disconnected_until.is_some_and(|t| now_ms < t)
    }

    /// Records `worker` as waiting for this record to change (once; not
    /// past [`MAX_WAITERS`]).
    pub fn add_waiter(&mut self, worker: u32) {
        if !self.waiters.contains(&worker) && self.waiters.len() < MAX_WAITERS {
            self.waiters.push(worker);
        }
    }
}

/// Renames the open `from` to `to` in a file's share-mode entries.
pub(super) fn move_share(r: &mut super::ShareRecord, from: GlobalOpenId, to: GlobalOpenId) {
    for e in r.entries.iter_mut().filter(|e| e.open == from) {
        e.open = to;
    }
}

/// Renames the owner `from` to `to` in a file's byte-range locks.
pub(super) fn move_locks(r: &mut super::LockRecord, from: GlobalOpenId, to: GlobalOpenId) {
    for l in r.locks.iter_mut().filter(|l| l.owner == from) {
        l.owner = to;
    }
}

/// Renames the open `from` to `to` among a file's oplock holders and lease opens.
pub(super) fn move_oplocks(r: &mut super::OplockRecord, from: GlobalOpenId, to: GlobalOpenId) {
    for h in r.holders.iter_mut().filter(|h| h.open == from) {
        h.open = to;
    }
    for l in &mut r.leases {
        for o in l.opens.iter_mut().filter(|o| **o == from) {
            *o = to;
        }
    }
}

/// Keys sort by persistent id (big-endian).
pub fn encode_id(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected v2 record with every optional part empty.
    fn record() -> DurableRecord {
        DurableRecord {
            persistent_id: 7,
            open: GlobalOpenId { worker: 2, open: 99 },
            file: FileKey { dev: 1, ino: 5 },
            version: 2,
            create_guid: [3; 16],
            client_guid: [4; 16],
            owner: "DOM\\üser".into(),
            share: "share".into(),
            path: "a/b.txt".into(),
            access: 0x12019f,
            share_access: 7,
            oplock: 9,
            lease_key: None,
            timeout_ms: 60_000,
            disconnected_until: None,
            app_instance_id: None,
            close_requested: false,
            waiters: Vec::new(),
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let mut r = record();
        assert_eq!(DurableRecord::decode(&r.encode()).unwrap(), r);
        r.lease_key = Some([8; 16]);
        r.disconnected_until = Some(123);
        r.app_instance_id = Some([9; 16]);
        r.close_requested = true;
        r.add_waiter(3);
        r.add_waiter(1);
        r.add_waiter(3);
        assert_eq!(r.waiters, [3, 1]);
        let b = r.encode();
        assert_eq!(DurableRecord::decode(&b).unwrap(), r);
        for cut in 0..b.len() {
            assert!(DurableRecord::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(DurableRecord::decode(&long).is_err());
        assert!(r.reclaimable(122) && !r.reclaimable(123));
    }

    #[test]
    fn waiters_are_bounded() {
        let mut r = record();
        for w in 0..(MAX_WAITERS as u32 + 10) {
            r.add_waiter(w);
        }
        assert_eq!(r.waiters.len(), MAX_WAITERS);
        let mut b = r.encode();
        assert_eq!(DurableRecord::decode(&b).unwrap(), r);
        // A count past the bound is refused, not allocated.
        let at = b.len() - 1 - 4 * MAX_WAITERS;
        b[at] = MAX_WAITERS as u8 + 1;
        b.extend_from_slice(&7u32.to_le_bytes());
        assert!(DurableRecord::decode(&b).is_err());
    }
}
