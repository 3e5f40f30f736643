//! Just enough SMB2 for the fault scenarios, hand-encoded (MS-SMB2 2.2): NEGOTIATE at
//! dialect 3.0.2 (the first with RDMA_V1_INVALIDATE; no negotiate contexts),
//! SESSION_SETUP as an anonymous NTLMSSP logon (MS-NLMP 3.2.5.1.2: empty user, empty
//! responses; no key, so nothing is signed), TREE_CONNECT to a `guest ok` share,
//! CREATE, and READ/WRITE with any channel and any channel info, lying or not.
//! Requests are built by hand on purpose: the point is to send what a well-behaved
//! encoder would refuse to produce.

use std::time::{Duration, Instant};

use smbdirect_transport::wire::BufferDescriptorV1;

use crate::client::SmbdClient;

pub const NEGOTIATE: u16 = 0;
pub const SESSION_SETUP: u16 = 1;
pub const TREE_CONNECT: u16 = 3;
pub const CREATE: u16 = 5;
pub const READ: u16 = 8;
pub const WRITE: u16 = 9;

pub const STATUS_SUCCESS: u32 = 0;
pub const STATUS_PENDING: u32 = 0x0000_0103;
pub const STATUS_MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;

pub const CHANNEL_NONE: u32 = 0;
pub const CHANNEL_RDMA_V1: u32 = 1;
pub const CHANNEL_RDMA_V1_INVALIDATE: u32 = 2;

pub const HEADER_LEN: usize = 64;
/// READ and WRITE: header + 48-byte fixed body; Buffer starts here.
pub const RW_FIXED_END: usize = HEADER_LEN + 48;
const FLAGS_ASYNC: u32 = 0x2;
const FLAGS_RESPONSE: u32 = 0x1;

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// A response: its status and the whole message.
#[derive(Debug)]
pub struct Resp {
    pub status: u32,
    pub msg: Vec<u8>,
}

impl Resp {
    pub fn body(&self) -> &[u8] {
        self.msg.get(HEADER_LEN..).unwrap_or(&[])
    }
}

/// Both variable fields of a READ or WRITE, as sent (the lies live here).
#[derive(Debug, Clone)]
pub struct Rw {
    /// READ: Length; WRITE: RemainingBytes (Length is 0: the data goes by RDMA).
    pub length: u32,
    pub offset: u64,
    pub channel: u32,
    /// The channel info blob appended after the fixed part.
    pub info: Vec<u8>,
    /// ChannelInfoOffset / Length as sent (None: where `info` really is).
    pub info_offset: Option<u16>,
    pub info_len: Option<u16>,
    /// Inline data (WRITE with channel NONE).
    pub inline: Vec<u8>,
}

impl Rw {
    pub fn rdma(channel: u32, length: u32, offset: u64, descs: &[BufferDescriptorV1]) -> Rw {
        Rw {
            length,
            offset,
            channel,
            info: descs.iter().flat_map(|d| d.to_bytes()).collect(),
            info_offset: None,
            info_len: None,
            inline: Vec::new(),
        }
    }
}

pub struct Smb2 {
    pub c: SmbdClient,
    next_mid: u64,
    credits: u32,
    pub session_id: u64,
    pub tree_id: u32,
    pub file_id: [u8; 16],
    pub max_read_size: u32,
}

impl Smb2 {
    pub fn new(c: SmbdClient) -> Smb2 {
        Smb2 { c, next_mid: 0, credits: 1, session_id: 0, tree_id: 0, file_id: [0; 16], max_read_size: 0 }
    }

    fn header(&mut self, cmd: u16, charge: u16) -> (Vec<u8>, u64) {
        let mid = self.next_mid;
        self.next_mid += u64::from(charge.max(1));
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(b"\xfeSMB");
        h.extend_from_slice(&64u16.to_le_bytes());
        h.extend_from_slice(&charge.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // status
        h.extend_from_slice(&cmd.to_le_bytes());
        h.extend_from_slice(&256u16.to_le_bytes()); // credits requested
        h.extend_from_slice(&0u32.to_le_bytes()); // flags
        h.extend_from_slice(&0u32.to_le_bytes()); // next command
        h.extend_from_slice(&mid.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // reserved (process id)
        h.extend_from_slice(&self.tree_id.to_le_bytes());
        h.extend_from_slice(&self.session_id.to_le_bytes());
        h.extend_from_slice(&[0u8; 16]); // signature
        (h, mid)
    }

    /// Sends one request and waits for its final response (interim STATUS_PENDING
    /// responses are skipped). Err: the connection ended, or no answer in `limit`.
    pub fn call(&mut self, cmd: u16, charge: u16, body: &[u8], limit: Duration) -> Result<Resp, String> {
        let charge = charge.max(1);
        if self.credits < u32::from(charge) {
            return Err(format!("only {} SMB2 credits for a request charged {charge}", self.credits));
        }
        self.credits -= u32::from(charge);
        let (mut msg, mid) = self.header(cmd, charge);
        msg.extend_from_slice(body);
        self.c.send(&msg)?;
        let end = Instant::now() + limit;
        loop {
            while let Some(m) = self.c.messages.pop_front() {
                if m.len() < HEADER_LEN || u64_at(&m, 24) != mid || u32_at(&m, 16) & FLAGS_RESPONSE == 0 {
                    continue;
                }
                self.credits += u32::from(u16_at(&m, 14));
                let status = u32_at(&m, 8);
                if status == STATUS_PENDING && u32_at(&m, 16) & FLAGS_ASYNC != 0 {
                    continue;
                }
                return Ok(Resp { status, msg: m });
            }
            if let Some((_, why)) = &self.c.ended {
                return Err(format!("no response: {why}"));
            }
            if Instant::now() > end {
                return Err(format!("no response in {} s", limit.as_secs()));
            }
            self.c.step(Duration::from_millis(50), false);
        }
    }

    fn expect(&mut self, what: &str, cmd: u16, body: &[u8], ok: &[u32]) -> Result<Resp, String> {
        let r = self.call(cmd, 1, body, Duration::from_secs(20)).map_err(|e| format!("{what}: {e}"))?;
        if !ok.contains(&r.status) {
            return Err(format!("{what}: status {:#010x}", r.status));
        }
        Ok(r)
    }

    /// NEGOTIATE (3.0.2), anonymous SESSION_SETUP, TREE_CONNECT to `share`.
    pub fn logon(&mut self, server: &str, share: &str) -> Result<(), String> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes()); // dialect count
        b.extend_from_slice(&1u16.to_le_bytes()); // security mode: signing enabled
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0x4u32.to_le_bytes()); // capabilities: LARGE_MTU
        let guid: [u8; 16] = std::array::from_fn(|i| (std::process::id() as u8).wrapping_add(i as u8 * 7));
        b.extend_from_slice(&guid);
        b.extend_from_slice(&0u64.to_le_bytes()); // client start time
        b.extend_from_slice(&0x0302u16.to_le_bytes());
        let r = self.expect("NEGOTIATE", NEGOTIATE, &b, &[STATUS_SUCCESS])?;
        let dialect = u16_at(r.body(), 4);
        if dialect != 0x0302 {
            return Err(format!("NEGOTIATE: dialect {dialect:#06x}"));
        }
        self.max_read_size = u32_at(r.body(), 32);

        // NTLMSSP NEGOTIATE: UNICODE | NTLM | ANONYMOUS | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY.
        let flags: u32 = 0x1 | 0x4 | 0x200 | 0x800 | 0x8000 | 0x8_0000;
        let mut nego = b"NTLMSSP\0".to_vec();
        nego.extend_from_slice(&1u32.to_le_bytes());
        nego.extend_from_slice(&flags.to_le_bytes());
        nego.extend_from_slice(&[0u8; 16]); // domain, workstation: empty
        let r = self.expect("SESSION_SETUP 1", SESSION_SETUP, &session_setup_body(&nego), &[STATUS_MORE_PROCESSING_REQUIRED])?;
        self.session_id = u64_at(&r.msg, 40);
        // NTLMSSP AUTHENTICATE, anonymous: every field empty, pointing after the
        // 88-byte fixed part (which ends with Version and MIC, zero).
        let mut auth = b"NTLMSSP\0".to_vec();
        auth.extend_from_slice(&3u32.to_le_bytes());
        for _ in 0..6 {
            auth.extend_from_slice(&0u16.to_le_bytes());
            auth.extend_from_slice(&0u16.to_le_bytes());
            auth.extend_from_slice(&88u32.to_le_bytes());
        }
        auth.extend_from_slice(&flags.to_le_bytes());
        auth.resize(88, 0);
        self.expect("SESSION_SETUP 2 (anonymous)", SESSION_SETUP, &session_setup_body(&auth), &[STATUS_SUCCESS])?;

        let path = utf16(&format!("\\\\{server}\\{share}"));
        let mut b = Vec::new();
        b.extend_from_slice(&9u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&((HEADER_LEN + 8) as u16).to_le_bytes());
        b.extend_from_slice(&(path.len() as u16).to_le_bytes());
        b.extend_from_slice(&path);
        let r = self.expect("TREE_CONNECT", TREE_CONNECT, &b, &[STATUS_SUCCESS])?;
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
        let r = self.expect("CREATE", CREATE, &b, &[STATUS_SUCCESS])?;
        self.file_id.copy_from_slice(r.body().get(64..80).ok_or("CREATE: short response")?);
        Ok(())
    }

    fn charge(bytes: u32) -> u16 {
        (bytes.div_ceil(65536)).max(1) as u16
    }

    /// READ: returns (status, bytes the server says it moved: DataLength for inline,
    /// DataRemaining for RDMA; inline data).
    pub fn read(&mut self, r: &Rw) -> Result<(u32, u32, Vec<u8>), String> {
        let mut b = Vec::new();
        b.extend_from_slice(&49u16.to_le_bytes());
        b.push(0x50); // padding: data after the response's fixed part
        b.push(0); // flags
        b.extend_from_slice(&r.length.to_le_bytes());
        b.extend_from_slice(&r.offset.to_le_bytes());
        b.extend_from_slice(&self.file_id);
        b.extend_from_slice(&0u32.to_le_bytes()); // minimum count
        b.extend_from_slice(&r.channel.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // remaining bytes
        let (off, len) = info_fields(r);
        b.extend_from_slice(&off.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        push_buffer(&mut b, &r.info);
        let resp = self.call(READ, Self::charge(r.length), &b, Duration::from_secs(20))?;
        let body = resp.body();
        let data_off = body.get(2).copied().unwrap_or(0) as usize;
        let data_len = u32_at(body, 4);
        let remaining = u32_at(body, 8);
        let data = if data_len > 0 {
            resp.msg.get(data_off..data_off + data_len as usize).map(<[u8]>::to_vec).ok_or("READ: data outside the response")?
        } else {
            Vec::new()
        };
        Ok((resp.status, if r.channel == CHANNEL_NONE { data_len } else { remaining }, data))
    }

    /// WRITE: returns (status, Count).
    pub fn write(&mut self, r: &Rw) -> Result<(u32, u32), String> {
        let mut b = Vec::new();
        let rdma = r.channel != CHANNEL_NONE;
        b.extend_from_slice(&49u16.to_le_bytes());
        b.extend_from_slice(&(RW_FIXED_END as u16).to_le_bytes()); // data offset
        let length = if rdma { 0 } else { r.inline.len() as u32 };
        b.extend_from_slice(&length.to_le_bytes());
        b.extend_from_slice(&r.offset.to_le_bytes());
        b.extend_from_slice(&self.file_id);
        b.extend_from_slice(&r.channel.to_le_bytes());
        b.extend_from_slice(&(if rdma { r.length } else { 0 }).to_le_bytes());
        let (off, len) = if rdma { info_fields(r) } else { (0, 0) };
        b.extend_from_slice(&off.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // flags
        if rdma {
            push_buffer(&mut b, &r.info);
        } else {
            b.extend_from_slice(&r.inline);
        }
        let resp = self.call(WRITE, Self::charge(length.max(if rdma { r.length } else { 0 })), &b, Duration::from_secs(20))?;
        Ok((resp.status, u32_at(resp.body(), 4)))
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

fn info_fields(r: &Rw) -> (u16, u16) {
    (r.info_offset.unwrap_or(RW_FIXED_END as u16), r.info_len.unwrap_or(r.info.len() as u16))
}

/// The variable part: the channel info, or one byte when empty (StructureSize 49 counts
/// one byte of Buffer).
fn push_buffer(b: &mut Vec<u8>, info: &[u8]) {
    if info.is_empty() {
        b.push(0);
    } else {
        b.extend_from_slice(info);
    }
}
