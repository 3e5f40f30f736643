//! SMB2 request bodies the client sends and the response bodies it parses (MS-SMB2 2.2).
//!
//! Bodies here start right after the 64-byte header; offsets on the wire count from the
//! header's start, hence the `HDR +` below. Every parser checks lengths and offsets
//! against the message before slicing.

use smbdirect_server::wire::{Put, Reader};

use super::error::ClientError;

pub const HDR: usize = 64;

pub mod cmd {
    pub const NEGOTIATE: u16 = 0;
    pub const SESSION_SETUP: u16 = 1;
    pub const LOGOFF: u16 = 2;
    pub const TREE_CONNECT: u16 = 3;
    pub const TREE_DISCONNECT: u16 = 4;
    pub const CREATE: u16 = 5;
    pub const CLOSE: u16 = 6;
    pub const FLUSH: u16 = 7;
    pub const READ: u16 = 8;
    pub const WRITE: u16 = 9;
    pub const IOCTL: u16 = 11;
    pub const ECHO: u16 = 13;
    pub const QUERY_INFO: u16 = 16;

    pub fn name(c: u16) -> &'static str {
        match c {
            NEGOTIATE => "NEGOTIATE",
            SESSION_SETUP => "SESSION_SETUP",
            LOGOFF => "LOGOFF",
            TREE_CONNECT => "TREE_CONNECT",
            TREE_DISCONNECT => "TREE_DISCONNECT",
            CREATE => "CREATE",
            CLOSE => "CLOSE",
            FLUSH => "FLUSH",
            READ => "READ",
            WRITE => "WRITE",
            IOCTL => "IOCTL",
            ECHO => "ECHO",
            QUERY_INFO => "QUERY_INFO",
            _ => "SMB2 command",
        }
    }
}

pub const STATUS_SUCCESS: u32 = 0;
pub const STATUS_PENDING: u32 = 0x0000_0103;
pub const STATUS_MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
pub const STATUS_BUFFER_OVERFLOW: u32 = 0x8000_0005;
pub const STATUS_END_OF_FILE: u32 = 0xC000_0011;

pub const SECURITY_SIGNING_ENABLED: u16 = 1;
pub const SECURITY_SIGNING_REQUIRED: u16 = 2;
pub const CAP_DFS: u32 = 0x01;
pub const CAP_LARGE_MTU: u32 = 0x04;
pub const CAP_MULTI_CHANNEL: u32 = 0x08;
pub const CAP_ENCRYPTION: u32 = 0x40;
pub const SESSION_FLAG_BINDING: u8 = 0x01;
pub const SESSION_FLAG_IS_GUEST: u16 = 0x1;
pub const SESSION_FLAG_IS_NULL: u16 = 0x2;
pub const SESSION_FLAG_ENCRYPT_DATA: u16 = 0x4;
pub const SHARE_FLAG_ENCRYPT_DATA: u32 = 0x8000;

pub const CTX_PREAUTH: u16 = 1;
pub const CTX_ENCRYPTION: u16 = 2;
pub const CTX_SIGNING: u16 = 8;
pub const HASH_SHA512: u16 = 1;

pub const CHANNEL_NONE: u32 = 0;
pub const CHANNEL_RDMA_V1: u32 = 1;
pub const CHANNEL_RDMA_V1_INVALIDATE: u32 = 2;

pub const FSCTL_QUERY_NETWORK_INTERFACE_INFO: u32 = 0x0014_01FC;

fn short(what: &str) -> ClientError {
    ClientError::proto(format!("{what} response too short or malformed"))
}

fn body<'a>(msg: &'a [u8], what: &str, min: usize) -> Result<&'a [u8], ClientError> {
    match msg.get(HDR..) {
        Some(b) if b.len() >= min => Ok(b),
        _ => Err(short(what)),
    }
}

/// A variable field of a response, `off` counted from the header.
fn field<'a>(msg: &'a [u8], off: usize, len: usize, what: &str) -> Result<&'a [u8], ClientError> {
    if len == 0 {
        return Ok(&[]);
    }
    let end = off.checked_add(len).ok_or_else(|| short(what))?;
    if off < HDR {
        return Err(ClientError::proto(format!("{what}: buffer offset {off} inside the header")));
    }
    msg.get(off..end).ok_or_else(|| ClientError::proto(format!("{what}: buffer {off}+{len} beyond the message of {}", msg.len())))
}

// ---- NEGOTIATE ----

/// What the client offers in NEGOTIATE.
#[derive(Debug, Clone)]
pub struct NegotiateOffer {
    pub dialects: Vec<u16>,
    pub security_mode: u16,
    pub capabilities: u32,
    pub client_guid: [u8; 16],
    pub salt: [u8; 32],
    /// Cipher ids in order of preference (3.1.1 ENCRYPTION_CAPABILITIES).
    pub ciphers: Vec<u16>,
    /// Signing algorithm ids in order of preference (3.1.1 SIGNING_CAPABILITIES).
    pub signing: Vec<u16>,
}

fn put_context(b: &mut Vec<u8>, ty: u16, data: &[u8]) {
    b.align(8);
    b.u16(ty).u16(data.len() as u16).u32(0).put(data);
}

pub fn negotiate_req(o: &NegotiateOffer) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    let has311 = o.dialects.contains(&0x0311);
    b.u16(36).u16(o.dialects.len() as u16).u16(o.security_mode).u16(0).u32(o.capabilities).put(&o.client_guid);
    let ctx_off_at = b.len();
    b.u32(0).u16(0).u16(0);
    for d in &o.dialects {
        b.u16(*d);
    }
    if has311 {
        // Body offsets are header-relative: the header is 64 bytes, a multiple of 8.
        b.align(8);
        let off = HDR + b.len();
        b.set_u32(ctx_off_at, off as u32);
        let mut n = 0u16;
        let mut pre = Vec::new();
        pre.u16(1).u16(o.salt.len() as u16).u16(HASH_SHA512).put(&o.salt);
        put_context(&mut b, CTX_PREAUTH, &pre);
        n += 1;
        if !o.ciphers.is_empty() {
            let mut c = Vec::new();
            c.u16(o.ciphers.len() as u16);
            for id in &o.ciphers {
                c.u16(*id);
            }
            put_context(&mut b, CTX_ENCRYPTION, &c);
            n += 1;
        }
        if !o.signing.is_empty() {
            let mut s = Vec::new();
            s.u16(o.signing.len() as u16);
            for id in &o.signing {
                s.u16(*id);
            }
            put_context(&mut b, CTX_SIGNING, &s);
            n += 1;
        }
        b.set_u16(ctx_off_at + 4, n);
    }
    b
}

#[derive(Debug, Clone, Default)]
pub struct NegotiateResp {
    pub security_mode: u16,
    pub dialect: u16,
    pub server_guid: [u8; 16],
    pub capabilities: u32,
    pub max_transact: u32,
    pub max_read: u32,
    pub max_write: u32,
    pub security_buffer: Vec<u8>,
    pub preauth_hash: Option<u16>,
    pub cipher: Option<u16>,
    pub signing: Option<u16>,
}

pub fn parse_negotiate(msg: &[u8]) -> Result<NegotiateResp, ClientError> {
    let b = body(msg, "NEGOTIATE", 64)?;
    let mut r = Reader::new(b);
    if r.u16()? != 65 {
        return Err(short("NEGOTIATE"));
    }
    let security_mode = r.u16()?;
    let dialect = r.u16()?;
    let ctx_count = r.u16()?;
    let server_guid = r.guid()?;
    let capabilities = r.u32()?;
    let max_transact = r.u32()?;
    let max_read = r.u32()?;
    let max_write = r.u32()?;
    r.skip(16)?;
    let sb_off = usize::from(r.u16()?);
    let sb_len = usize::from(r.u16()?);
    let ctx_off = r.u32()? as usize;
    let security_buffer = field(msg, sb_off, sb_len, "NEGOTIATE security buffer")?.to_vec();
    let mut out = NegotiateResp { security_mode, dialect, server_guid, capabilities, max_transact, max_read, max_write, security_buffer, ..Default::default() };
    if dialect == 0x0311 {
        let mut at = ctx_off;
        for _ in 0..ctx_count {
            at = at.checked_add(7).ok_or_else(|| short("NEGOTIATE"))? & !7;
            let h = field(msg, at, 8, "negotiate context")?;
            let ty = u16::from_le_bytes([h[0], h[1]]);
            let len = usize::from(u16::from_le_bytes([h[2], h[3]]));
            let data = field(msg, at + 8, len, "negotiate context")?;
            let first_id = |d: &[u8]| -> Result<u16, ClientError> {
                // count u16, then ids (encryption/signing); preauth: count, salt len, ids
                let mut r = Reader::new(d);
                if r.u16()? != 1 {
                    return Err(ClientError::proto("server selected more than one algorithm in a context"));
                }
                Ok(r.u16()?)
            };
            match ty {
                CTX_PREAUTH => {
                    let mut r = Reader::new(data);
                    if r.u16()? != 1 {
                        return Err(ClientError::proto("preauth context with other than one hash"));
                    }
                    r.u16()?;
                    out.preauth_hash = Some(r.u16()?);
                }
                CTX_ENCRYPTION => out.cipher = Some(first_id(data)?),
                CTX_SIGNING => out.signing = Some(first_id(data)?),
                _ => {}
            }
            at += 8 + len;
        }
        if out.preauth_hash != Some(HASH_SHA512) {
            return Err(ClientError::proto("3.1.1 NEGOTIATE response without SHA-512 preauth integrity"));
        }
    }
    Ok(out)
}

// ---- SESSION_SETUP ----

pub fn session_setup_req(flags: u8, security_mode: u8, token: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(24 + token.len());
    b.u16(25).u8(flags).u8(security_mode).u32(0).u32(0).u16((HDR + 24) as u16).u16(token.len() as u16).u64(0).put(token);
    b
}

pub struct SessionSetupResp {
    pub session_flags: u16,
    pub token: Vec<u8>,
}

pub fn parse_session_setup(msg: &[u8]) -> Result<SessionSetupResp, ClientError> {
    let b = body(msg, "SESSION_SETUP", 8)?;
    let mut r = Reader::new(b);
    if r.u16()? != 9 {
        return Err(short("SESSION_SETUP"));
    }
    let session_flags = r.u16()?;
    let off = usize::from(r.u16()?);
    let len = usize::from(r.u16()?);
    Ok(SessionSetupResp { session_flags, token: field(msg, off, len, "SESSION_SETUP security buffer")?.to_vec() })
}

// ---- TREE_CONNECT ----

pub fn tree_connect_req(unc: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16(9).u16(0).u16((HDR + 8) as u16).u16((unc.encode_utf16().count() * 2) as u16).utf16(unc);
    b
}

pub struct TreeConnectResp {
    pub share_type: u8,
    pub share_flags: u32,
    pub capabilities: u32,
    pub maximal_access: u32,
}

pub fn parse_tree_connect(msg: &[u8]) -> Result<TreeConnectResp, ClientError> {
    let b = body(msg, "TREE_CONNECT", 16)?;
    let mut r = Reader::new(b);
    if r.u16()? != 16 {
        return Err(short("TREE_CONNECT"));
    }
    let share_type = r.u8()?;
    r.u8()?;
    Ok(TreeConnectResp { share_type, share_flags: r.u32()?, capabilities: r.u32()?, maximal_access: r.u32()? })
}

// ---- CREATE / CLOSE ----

pub type FileId = [u8; 16];

#[derive(Debug, Clone)]
pub struct CreateReq {
    pub desired_access: u32,
    pub file_attributes: u32,
    pub share_access: u32,
    pub disposition: u32,
    pub options: u32,
}

pub const FILE_READ_DATA: u32 = 0x1;
pub const FILE_WRITE_DATA: u32 = 0x2;
pub const FILE_READ_ATTRIBUTES: u32 = 0x80;
pub const DELETE: u32 = 0x10000;
pub const SYNCHRONIZE: u32 = 0x0010_0000;
pub const GENERIC_ALL: u32 = 0x1000_0000;
pub const FILE_SHARE_ALL: u32 = 7;
pub const FILE_OPEN: u32 = 1;
pub const FILE_CREATE: u32 = 2;
pub const FILE_OPEN_IF: u32 = 3;
pub const FILE_OVERWRITE_IF: u32 = 5;
pub const FILE_NON_DIRECTORY_FILE: u32 = 0x40;
pub const FILE_DELETE_ON_CLOSE: u32 = 0x1000;
pub const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;

pub fn create_req(name: &str, c: &CreateReq) -> Vec<u8> {
    let nlen = name.encode_utf16().count() * 2;
    let mut b = Vec::with_capacity(56 + nlen + 8);
    b.u16(57).u8(0).u8(0).u32(2).u64(0).u64(0).u32(c.desired_access).u32(c.file_attributes).u32(c.share_access)
        .u32(c.disposition).u32(c.options).u16((HDR + 56) as u16).u16(nlen as u16).u32(0).u32(0).utf16(name);
    if nlen == 0 {
        b.u8(0);
    }
    b
}

#[derive(Debug, Clone)]
pub struct CreateResp {
    pub create_action: u32,
    pub end_of_file: u64,
    pub file_attributes: u32,
    pub file_id: FileId,
}

pub fn parse_create(msg: &[u8]) -> Result<CreateResp, ClientError> {
    let b = body(msg, "CREATE", 88)?;
    let mut r = Reader::new(b);
    if r.u16()? != 89 {
        return Err(short("CREATE"));
    }
    r.skip(2)?;
    let create_action = r.u32()?;
    r.skip(40)?;
    let end_of_file = r.u64()?;
    let file_attributes = r.u32()?;
    r.skip(4)?;
    Ok(CreateResp { create_action, end_of_file, file_attributes, file_id: r.array()? })
}

pub fn close_req(fid: &FileId) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.u16(24).u16(0).u32(0).put(fid);
    b
}

// ---- READ / WRITE ----

/// READ; `channel_info` holds the buffer descriptors for RDMA channels.
pub fn read_req(fid: &FileId, offset: u64, len: u32, channel: u32, channel_info: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(48 + channel_info.len().max(1));
    let (ci_off, ci_len) = if channel_info.is_empty() { (0u16, 0u16) } else { ((HDR + 48) as u16, channel_info.len() as u16) };
    b.u16(49).u8(0).u8(0).u32(len).u64(offset).put(fid).u32(0).u32(channel).u32(if channel == CHANNEL_NONE { 0 } else { len })
        .u16(ci_off).u16(ci_len);
    if channel_info.is_empty() {
        b.u8(0);
    } else {
        b.put(channel_info);
    }
    b
}

/// The READ response: the data range inside the message (Channel NONE) and DataRemaining.
pub struct ReadResp {
    pub data: std::ops::Range<usize>,
    pub remaining: u32,
}

pub fn parse_read(msg: &[u8]) -> Result<ReadResp, ClientError> {
    let b = body(msg, "READ", 16)?;
    let mut r = Reader::new(b);
    if r.u16()? != 17 {
        return Err(short("READ"));
    }
    let off = usize::from(r.u8()?);
    r.u8()?;
    let len = r.u32()? as usize;
    let remaining = r.u32()?;
    if len > 0 {
        field(msg, off, len, "READ data")?;
    }
    Ok(ReadResp { data: if len == 0 { 0..0 } else { off..off + len }, remaining })
}

/// Fixed part of a WRITE request; the data follows at header offset 112.
pub const WRITE_FIXED: usize = 48;

/// WRITE: the fixed part only; the caller appends the data (Channel NONE) or the
/// descriptors (RDMA).
pub fn write_req_head(fid: &FileId, offset: u64, len: u32, channel: u32, channel_info_len: usize, out: &mut Vec<u8>) {
    let rdma = channel != CHANNEL_NONE;
    // RDMA (MS-SMB2 3.2.4.7): no data in the message: Length and DataOffset 0 (ksmbd refuses
    // anything else with STATUS_INVALID_PARAMETER), the byte count in RemainingBytes.
    out.u16(49).u16(if rdma { 0 } else { (HDR + 48) as u16 }).u32(if rdma { 0 } else { len }).u64(offset).put(fid).u32(channel)
        .u32(if rdma { len } else { 0 })
        .u16(if rdma { (HDR + 48) as u16 } else { 0 }).u16(if rdma { channel_info_len as u16 } else { 0 }).u32(0);
}

pub fn parse_write(msg: &[u8]) -> Result<u32, ClientError> {
    let b = body(msg, "WRITE", 16)?;
    let mut r = Reader::new(b);
    if r.u16()? != 17 {
        return Err(short("WRITE"));
    }
    r.u16()?;
    Ok(r.u32()?)
}

// ---- QUERY_INFO ----

pub const INFO_FILE: u8 = 1;
pub const FILE_STANDARD_INFORMATION: u8 = 5;

pub fn query_info_req(fid: &FileId, info_type: u8, class: u8, out_len: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(41);
    b.u16(41).u8(info_type).u8(class).u32(out_len).u16(0).u16(0).u32(0).u32(0).u32(0).put(fid).u8(0);
    b
}

pub fn parse_query_info(msg: &[u8]) -> Result<&[u8], ClientError> {
    let b = body(msg, "QUERY_INFO", 8)?;
    let mut r = Reader::new(b);
    if r.u16()? != 9 {
        return Err(short("QUERY_INFO"));
    }
    let off = usize::from(r.u16()?);
    let len = r.u32()? as usize;
    field(msg, off, len, "QUERY_INFO output")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInfo {
    pub allocation_size: u64,
    pub end_of_file: u64,
    pub links: u32,
    pub delete_pending: bool,
    pub directory: bool,
}

pub fn parse_standard_info(b: &[u8]) -> Result<StandardInfo, ClientError> {
    let mut r = Reader::new(b);
    Ok(StandardInfo {
        allocation_size: r.u64()?,
        end_of_file: r.u64()?,
        links: r.u32()?,
        delete_pending: r.u8()? != 0,
        directory: r.u8()? != 0,
    })
}

// ---- IOCTL ----

pub fn ioctl_req(ctl: u32, fid: &FileId, input: &[u8], max_out: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(56 + input.len().max(1));
    let in_off = if input.is_empty() { 0 } else { (HDR + 56) as u32 };
    b.u16(57).u16(0).u32(ctl).put(fid).u32(in_off).u32(input.len() as u32).u32(0).u32(0).u32(0).u32(max_out)
        .u32(1 /* SMB2_0_IOCTL_IS_FSCTL */).u32(0);
    if input.is_empty() {
        b.u8(0);
    } else {
        b.put(input);
    }
    b
}

pub fn parse_ioctl(msg: &[u8]) -> Result<&[u8], ClientError> {
    let b = body(msg, "IOCTL", 48)?;
    let mut r = Reader::new(b);
    if r.u16()? != 49 {
        return Err(short("IOCTL"));
    }
    r.skip(30)?;
    let off = r.u32()? as usize;
    let len = r.u32()? as usize;
    field(msg, off, len, "IOCTL output")
}

/// One NETWORK_INTERFACE_INFO entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetInterface {
    pub if_index: u32,
    pub rss: bool,
    pub rdma: bool,
    pub link_speed: u64,
    pub addr: Option<std::net::IpAddr>,
}

/// Walks the NETWORK_INTERFACE_INFO list by its Next offsets, iteratively; a Next that does
/// not move forward or leaves the buffer ends the list with an error.
pub fn parse_interfaces(b: &[u8]) -> Result<Vec<NetInterface>, ClientError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let e = b.get(at..at.checked_add(152).ok_or_else(|| short("interface list"))?).ok_or_else(|| short("NETWORK_INTERFACE_INFO"))?;
        let mut r = Reader::new(e);
        let next = r.u32()? as usize;
        let if_index = r.u32()?;
        let cap = r.u32()?;
        r.u32()?;
        let link_speed = r.u64()?;
        let family = r.u16()?;
        let addr = match family {
            0x02 => {
                r.u16()?;
                let a: [u8; 4] = r.array()?;
                Some(std::net::IpAddr::from(a))
            }
            0x17 => {
                r.u16()?;
                r.u32()?;
                let a: [u8; 16] = r.array()?;
                Some(std::net::IpAddr::from(a))
            }
            _ => None,
        };
        out.push(NetInterface { if_index, rss: cap & 1 != 0, rdma: cap & 2 != 0, link_speed, addr });
        if next == 0 {
            return Ok(out);
        }
        at = at.checked_add(next).ok_or_else(|| short("interface list"))?;
        if out.len() > 4096 {
            return Err(ClientError::proto("more than 4096 network interfaces"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smbdirect_server::wire::messages::{CreateReq as SCreate, NegotiateReq, ReadReq, TreeConnectReq};

    fn with_header(body: Vec<u8>) -> Vec<u8> {
        let mut m = vec![0u8; HDR];
        m.extend_from_slice(&body);
        m
    }

    /// Our requests parse with the server crate's own request parsers.
    #[test]
    fn requests_parse_with_the_server_codecs() {
        let offer = NegotiateOffer {
            dialects: vec![0x300, 0x302, 0x311],
            security_mode: 1,
            capabilities: CAP_LARGE_MTU,
            client_guid: [7; 16],
            salt: [1; 32],
            ciphers: vec![2, 1],
            signing: vec![2, 1],
        };
        let m = with_header(negotiate_req(&offer));
        let n = NegotiateReq::parse(&m).unwrap();
        let ctx = n.contexts().unwrap();
        assert_eq!(ctx.len(), 3);
        assert_eq!(ctx[1].0, CTX_ENCRYPTION);
        let m = with_header(tree_connect_req("\\\\h\\share"));
        assert!(TreeConnectReq::parse(&m).is_ok());
        let c = CreateReq { desired_access: 3, file_attributes: 0, share_access: 7, disposition: FILE_OPEN_IF, options: 0 };
        let m = with_header(create_req("a\\b.bin", &c));
        assert!(SCreate::parse(&m).is_ok());
        let m = with_header(read_req(&[1; 16], 4096, 65536, CHANNEL_NONE, &[]));
        let r = ReadReq::parse(&m).unwrap();
        assert_eq!((r.length, r.offset), (65536, 4096));
        let tm = with_header(tree_connect_req("\\\\h\\share"));
        let t = TreeConnectReq::parse(&tm).unwrap();
        assert_eq!(t.path.len(), 18);
    }

    #[test]
    fn parsers_refuse_bad_offsets() {
        let mut m = vec![0u8; HDR];
        m.extend_from_slice(&[17, 0, 200, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(parse_read(&m).is_err());
        assert!(parse_create(&m).is_err());
        assert!(parse_session_setup(&m).is_err());
        assert!(parse_interfaces(&[0; 10]).is_err());
        // A Next offset that loops forever is bounded.
        let mut e = vec![0u8; 152];
        e[..4].copy_from_slice(&152u32.to_le_bytes());
        let mut b = Vec::new();
        for _ in 0..5000 {
            b.extend_from_slice(&e);
        }
        assert!(parse_interfaces(&b).is_err());
    }

    proptest::proptest! {
        /// No response parser panics on any bytes after a header, nor on a whole random
        /// message; the NTLM CHALLENGE parser and AUTHENTICATE builder neither.
        #[test]
        fn parsers_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let m = with_header(body.clone());
            let _ = parse_negotiate(&m);
            let _ = parse_session_setup(&m);
            let _ = parse_tree_connect(&m);
            let _ = parse_create(&m);
            let _ = parse_read(&m);
            let _ = parse_write(&m);
            let _ = parse_query_info(&m);
            let _ = parse_ioctl(&m);
            let _ = parse_interfaces(&body);
            let _ = parse_standard_info(&body);
            let _ = parse_negotiate(&raw);
            let _ = crate::client::ntlm::parse_challenge(&raw);
            let mut ch = b"NTLMSSP\0\x02\0\0\0".to_vec();
            ch.extend_from_slice(&raw);
            let rnd = crate::client::ntlm::AuthRandom { client_challenge: [1; 8], exported_key: [2; 16], now: 3 };
            let _ = crate::client::ntlm::authenticate(b"", &ch, "u", "", "p", &rnd);
            let _ = crate::client::ntlm::challenge_from_spnego(&raw);
        }
    }
}
