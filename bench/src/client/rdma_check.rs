//! A self-check of an RDMA channel against a real server (the rxe guest test
//! `t-47-ours-rdma-client.sh` runs it through `examples/rdma_check.rs`): over any
//! [`Channel`] that [`Channel::is_rdma`], NEGOTIATE (3.0.2), an anonymous session on a
//! `guest ok` share, CREATE, then WRITEs whose data the server RDMA-reads from buffers
//! this client registered and READs the server RDMA-writes into them (Channel
//! RDMA_V1, one BufferDescriptorV1 per request), and the data is verified both ways:
//! read back by RDMA and, for the first bytes, by an inline READ.
//!
//! The SMB2 messages are hand-built here (like `smbd-fault`'s) only until the client
//! library's session layer (NTLMv2, signing, binding) lands; then this check moves onto
//! it and binds the RDMA channel to a session negotiated over TCP.

use std::time::{Duration, Instant};

use super::channel::{Channel, RdmaAccess};

const NEGOTIATE: u16 = 0;
const SESSION_SETUP: u16 = 1;
const TREE_CONNECT: u16 = 3;
const CREATE: u16 = 5;
const CLOSE: u16 = 6;
const READ: u16 = 8;
const WRITE: u16 = 9;
const STATUS_SUCCESS: u32 = 0;
const STATUS_PENDING: u32 = 0x0000_0103;
const STATUS_MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
/// SMB2_CHANNEL_RDMA_V1 (MS-SMB2 2.2.19).
pub const CHANNEL_RDMA_V1: u32 = 1;
const CHANNEL_NONE: u32 = 0;
const HEADER_LEN: usize = 64;
const RW_FIXED_END: usize = HEADER_LEN + 48;
const FLAGS_RESPONSE: u32 = 0x1;
const FLAGS_ASYNC: u32 = 0x2;
const WAIT: Duration = Duration::from_secs(20);

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes)
}
fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The test data: byte `off` of the file.
pub fn pattern(off: u64) -> u8 {
    (((off * 31) >> 3) as u8 ^ 0x5a).wrapping_add((off >> 16) as u8)
}

/// What the check moved and how long it took.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub file_len: u64,
    pub io_size: usize,
    pub writes: u32,
    pub reads: u32,
    /// Bytes the server reported moving by RDMA (WRITE Count, READ DataRemaining).
    pub rdma_written: u64,
    pub rdma_read: u64,
    pub write_secs: f64,
    pub read_secs: f64,
}

/// A minimal anonymous SMB2 session over one channel.
pub struct Session<'a> {
    ch: &'a dyn Channel,
    next_mid: u64,
    credits: u32,
    session_id: u64,
    tree_id: u32,
    file_id: [u8; 16],
}

struct Resp {
    status: u32,
    msg: Vec<u8>,
}

impl Resp {
    fn body(&self) -> &[u8] {
        self.msg.get(HEADER_LEN..).unwrap_or(&[])
    }
}

impl<'a> Session<'a> {
    pub fn new(ch: &'a dyn Channel) -> Self {
        Session { ch, next_mid: 0, credits: 1, session_id: 0, tree_id: 0, file_id: [0; 16] }
    }

    /// The SessionId the server gave (0 before the logon).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    fn call(&mut self, cmd: u16, charge: u16, body: &[u8]) -> Result<Resp, String> {
        let charge = charge.max(1);
        if self.credits < u32::from(charge) {
            return Err(format!("only {} SMB2 credits for a request charged {charge}", self.credits));
        }
        self.credits -= u32::from(charge);
        let mid = self.next_mid;
        self.next_mid += u64::from(charge);
        let mut m = Vec::with_capacity(HEADER_LEN + body.len());
        m.extend_from_slice(b"\xfeSMB");
        m.extend_from_slice(&64u16.to_le_bytes());
        m.extend_from_slice(&charge.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes()); // status
        m.extend_from_slice(&cmd.to_le_bytes());
        m.extend_from_slice(&256u16.to_le_bytes()); // credits requested
        m.extend_from_slice(&0u32.to_le_bytes()); // flags
        m.extend_from_slice(&0u32.to_le_bytes()); // next command
        m.extend_from_slice(&mid.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes()); // reserved (process id)
        m.extend_from_slice(&self.tree_id.to_le_bytes());
        m.extend_from_slice(&self.session_id.to_le_bytes());
        m.extend_from_slice(&[0u8; 16]); // signature
        m.extend_from_slice(body);
        self.ch.send(&m, WAIT).map_err(|e| format!("send: {e}"))?;
        let end = Instant::now() + WAIT;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let r = self.ch.recv(left).map_err(|e| format!("no response: {e}"))?;
            if r.len() < HEADER_LEN || u64_at(&r, 24) != mid || u32_at(&r, 16) & FLAGS_RESPONSE == 0 {
                continue;
            }
            self.credits += u32::from(u16_at(&r, 14));
            let status = u32_at(&r, 8);
            if status == STATUS_PENDING && u32_at(&r, 16) & FLAGS_ASYNC != 0 {
                continue;
            }
            return Ok(Resp { status, msg: r });
        }
    }

    fn expect(&mut self, what: &str, cmd: u16, body: &[u8], ok: u32) -> Result<Resp, String> {
        let r = self.call(cmd, 1, body).map_err(|e| format!("{what}: {e}"))?;
        if r.status != ok {
            return Err(format!("{what}: status {:#010x}", r.status));
        }
        Ok(r)
    }

    /// NEGOTIATE (3.0.2), anonymous NTLMSSP SESSION_SETUP, TREE_CONNECT to `\\server\share`.
    pub fn logon(&mut self, server: &str, share: &str) -> Result<(), String> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes()); // dialect count
        b.extend_from_slice(&1u16.to_le_bytes()); // security mode: signing enabled
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0x4u32.to_le_bytes()); // capabilities: LARGE_MTU
        let pid = std::process::id();
        let guid: [u8; 16] = std::array::from_fn(|i| (pid as u8).wrapping_add(i as u8 * 13) ^ (pid >> 8) as u8);
        b.extend_from_slice(&guid);
        b.extend_from_slice(&0u64.to_le_bytes()); // client start time
        b.extend_from_slice(&0x0302u16.to_le_bytes());
        let r = self.expect("NEGOTIATE", NEGOTIATE, &b, STATUS_SUCCESS)?;
        let dialect = u16_at(r.body(), 4);
        if dialect != 0x0302 {
            return Err(format!("NEGOTIATE: dialect {dialect:#06x}"));
        }
        // NTLMSSP NEGOTIATE: UNICODE | NTLM | ANONYMOUS | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY.
        let flags: u32 = 0x1 | 0x4 | 0x200 | 0x800 | 0x8000 | 0x8_0000;
        let mut nego = b"NTLMSSP\0".to_vec();
        nego.extend_from_slice(&1u32.to_le_bytes());
        nego.extend_from_slice(&flags.to_le_bytes());
        nego.extend_from_slice(&[0u8; 16]);
        let r = self.expect("SESSION_SETUP 1", SESSION_SETUP, &session_setup_body(&nego), STATUS_MORE_PROCESSING_REQUIRED)?;
        self.session_id = u64_at(&r.msg, 40);
        // AUTHENTICATE, anonymous: every field empty, after the 88-byte fixed part.
        let mut auth = b"NTLMSSP\0".to_vec();
        auth.extend_from_slice(&3u32.to_le_bytes());
        for _ in 0..6 {
            auth.extend_from_slice(&0u32.to_le_bytes());
            auth.extend_from_slice(&88u32.to_le_bytes());
        }
        auth.extend_from_slice(&flags.to_le_bytes());
        auth.resize(88, 0);
        self.expect("SESSION_SETUP 2 (anonymous)", SESSION_SETUP, &session_setup_body(&auth), STATUS_SUCCESS)?;
        let path = utf16(&format!("\\\\{server}\\{share}"));
        let mut b = Vec::new();
        b.extend_from_slice(&9u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&((HEADER_LEN + 8) as u16).to_le_bytes());
        b.extend_from_slice(&(path.len() as u16).to_le_bytes());
        b.extend_from_slice(&path);
        let r = self.expect("TREE_CONNECT", TREE_CONNECT, &b, STATUS_SUCCESS)?;
        self.tree_id = u32_at(&r.msg, 36);
        Ok(())
    }

    /// CREATE (overwrite if it exists) of `name` for reading and writing.
    pub fn create(&mut self, name: &str) -> Result<(), String> {
        let n = utf16(name);
        let mut b = Vec::new();
        b.extend_from_slice(&57u16.to_le_bytes());
        b.push(0); // security flags
        b.push(0); // no oplock
        b.extend_from_slice(&2u32.to_le_bytes()); // impersonation
        b.extend_from_slice(&[0u8; 16]); // create flags, reserved
        b.extend_from_slice(&0x0012_019Fu32.to_le_bytes()); // read, write, attributes, EAs, sync
        b.extend_from_slice(&0x80u32.to_le_bytes()); // normal file
        b.extend_from_slice(&7u32.to_le_bytes()); // share all
        b.extend_from_slice(&5u32.to_le_bytes()); // FILE_OVERWRITE_IF
        b.extend_from_slice(&0x40u32.to_le_bytes()); // FILE_NON_DIRECTORY_FILE
        b.extend_from_slice(&((HEADER_LEN + 56) as u16).to_le_bytes());
        b.extend_from_slice(&(n.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0u8; 8]); // no create contexts
        b.extend_from_slice(&n);
        let r = self.expect("CREATE", CREATE, &b, STATUS_SUCCESS)?;
        self.file_id.copy_from_slice(r.body().get(64..80).ok_or("CREATE: short response")?);
        Ok(())
    }

    /// CLOSE of the file.
    pub fn close(&mut self) -> Result<(), String> {
        let mut b = Vec::new();
        b.extend_from_slice(&24u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&self.file_id);
        self.expect("CLOSE", CLOSE, &b, STATUS_SUCCESS).map(drop)
    }

    fn charge(bytes: usize) -> u16 {
        bytes.div_ceil(65536).clamp(1, 128) as u16
    }

    /// WRITE of `data` at `offset`, the server RDMA-reading it from our registration.
    /// Returns the Count the server reports.
    pub fn write_rdma(&mut self, offset: u64, data: Vec<u8>) -> Result<(u32, Vec<u8>), String> {
        let len = data.len();
        let reg = self.ch.register(data, RdmaAccess::PeerReads).map_err(|e| format!("register: {e}"))?;
        let info: Vec<u8> = reg.descriptors.iter().flat_map(|d| d.to_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&49u16.to_le_bytes());
        b.extend_from_slice(&(RW_FIXED_END as u16).to_le_bytes()); // data offset
        b.extend_from_slice(&0u32.to_le_bytes()); // Length: the data goes by RDMA
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&self.file_id);
        b.extend_from_slice(&CHANNEL_RDMA_V1.to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes()); // RemainingBytes
        b.extend_from_slice(&(RW_FIXED_END as u16).to_le_bytes());
        b.extend_from_slice(&(info.len() as u16).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // flags
        b.extend_from_slice(&info);
        let r = self.call(WRITE, Self::charge(len), &b);
        // The registration ends whatever the answer (the server has finished with it
        // once it answered; after an error the connection is gone anyway).
        let back = self.ch.deregister(reg.handle).map_err(|e| format!("deregister: {e}"))?;
        let r = r.map_err(|e| format!("WRITE: {e}"))?;
        if r.status != STATUS_SUCCESS {
            return Err(format!("WRITE RDMA_V1 of {len} bytes at {offset}: status {:#010x}", r.status));
        }
        Ok((u32_at(r.body(), 4), back))
    }

    /// READ of `buf.len()` bytes at `offset`, the server RDMA-writing them into `buf`
    /// (registered for it). Returns (DataRemaining as the server reports it, the buffer).
    pub fn read_rdma(&mut self, offset: u64, buf: Vec<u8>) -> Result<(u32, Vec<u8>), String> {
        let len = buf.len();
        let reg = self.ch.register(buf, RdmaAccess::PeerWrites).map_err(|e| format!("register: {e}"))?;
        let info: Vec<u8> = reg.descriptors.iter().flat_map(|d| d.to_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&49u16.to_le_bytes());
        b.push(0x50); // padding
        b.push(0); // flags
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&self.file_id);
        b.extend_from_slice(&0u32.to_le_bytes()); // minimum count
        b.extend_from_slice(&CHANNEL_RDMA_V1.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // remaining bytes
        b.extend_from_slice(&(RW_FIXED_END as u16).to_le_bytes());
        b.extend_from_slice(&(info.len() as u16).to_le_bytes());
        b.extend_from_slice(&info);
        let r = self.call(READ, Self::charge(len), &b);
        let back = self.ch.deregister(reg.handle).map_err(|e| format!("deregister: {e}"))?;
        let r = r.map_err(|e| format!("READ: {e}"))?;
        if r.status != STATUS_SUCCESS {
            return Err(format!("READ RDMA_V1 of {len} bytes at {offset}: status {:#010x}", r.status));
        }
        let inline = u32_at(r.body(), 4);
        if inline != 0 {
            return Err(format!("READ RDMA_V1: {inline} bytes came inline, not by RDMA"));
        }
        Ok((u32_at(r.body(), 8), back))
    }

    /// An inline READ (Channel NONE) of `len` bytes at `offset`.
    pub fn read_inline(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, String> {
        let mut b = Vec::new();
        b.extend_from_slice(&49u16.to_le_bytes());
        b.push(0x50);
        b.push(0);
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&self.file_id);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&CHANNEL_NONE.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.push(0);
        let r = self.call(READ, Self::charge(len as usize), &b).map_err(|e| format!("inline READ: {e}"))?;
        if r.status != STATUS_SUCCESS {
            return Err(format!("inline READ: status {:#010x}", r.status));
        }
        let body = r.body();
        let off = body.get(2).copied().map_or(0, usize::from); // DataOffset, from the header's start
        let n = u32_at(body, 4) as usize;
        r.msg.get(off..off + n).map(<[u8]>::to_vec).ok_or_else(|| "inline READ: data outside the response".into())
    }
}

fn session_setup_body(token: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&25u16.to_le_bytes());
    b.push(0); // flags
    b.push(1); // security mode: signing enabled
    b.extend_from_slice(&0u32.to_le_bytes()); // capabilities
    b.extend_from_slice(&0u32.to_le_bytes()); // channel
    b.extend_from_slice(&((HEADER_LEN + 24) as u16).to_le_bytes());
    b.extend_from_slice(&(token.len() as u16).to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // previous session
    b.extend_from_slice(token);
    b
}

/// Writes `file_len` bytes of [`pattern`] to `name` in RDMA_V1 WRITEs of `io_size`,
/// reads them back in RDMA_V1 READs into fresh (zeroed) registrations and compares,
/// and compares the first 4 KiB read inline too. The session stays open (the caller
/// may look at the server's status) until the returned session is dropped.
pub fn write_read_verify(s: &mut Session<'_>, name: &str, file_len: u64, io_size: usize) -> Result<Report, String> {
    let io_size = io_size.min(s.ch.limits().max_rdma).max(1);
    if !s.ch.is_rdma() {
        return Err(format!("{} is not an RDMA channel", s.ch.peer()));
    }
    s.create(name)?;
    let mut rep = Report { file_len, io_size, ..Report::default() };
    let t = Instant::now();
    let mut off = 0u64;
    let mut buf = Vec::new();
    while off < file_len {
        let n = (file_len - off).min(io_size as u64) as usize;
        buf.clear();
        buf.extend((0..n as u64).map(|i| pattern(off + i)));
        let (count, back) = s.write_rdma(off, std::mem::take(&mut buf))?;
        if count as usize != n {
            return Err(format!("WRITE at {off}: the server wrote {count} bytes of {n}"));
        }
        buf = back;
        rep.writes += 1;
        rep.rdma_written += u64::from(count);
        off += n as u64;
    }
    rep.write_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut off = 0u64;
    while off < file_len {
        let n = (file_len - off).min(io_size as u64) as usize;
        // Zeroed each time: what compares equal below was written by the server.
        let (remaining, data) = s.read_rdma(off, vec![0u8; n])?;
        if remaining as usize != n {
            return Err(format!("READ at {off}: the server moved {remaining} bytes of {n}"));
        }
        if let Some(i) = (0..n).find(|&i| data[i] != pattern(off + i as u64)) {
            return Err(format!("READ at {off}: byte {} is {:#04x}, {:#04x} was written", off + i as u64, data[i], pattern(off + i as u64)));
        }
        rep.reads += 1;
        rep.rdma_read += u64::from(remaining);
        off += n as u64;
    }
    rep.read_secs = t.elapsed().as_secs_f64();
    let head = s.read_inline(0, file_len.min(4096) as u32)?;
    if head.len() as u64 != file_len.min(4096) || head.iter().enumerate().any(|(i, &b)| b != pattern(i as u64)) {
        return Err("the inline READ of the first bytes differs from what was written".into());
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::channel::TcpChannel;

    #[test]
    fn a_tcp_channel_is_refused_before_anything_is_sent() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpChannel::connect(l.local_addr().unwrap(), Duration::from_secs(5)).unwrap();
        let mut s = Session::new(&c);
        let e = write_read_verify(&mut s, "f", 10, 10).unwrap_err();
        assert!(e.contains("not an RDMA channel"), "{e}");
    }

    #[test]
    fn the_pattern_is_not_periodic_at_64k() {
        assert!((0..4096).any(|i| pattern(i) != pattern(i + 65536)));
    }
}
