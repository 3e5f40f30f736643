//! Fixed parts of SMB2 requests (parsed) and responses (built), MS-SMB2 2.2.
//!
//! Request parsers take the whole message (header included), because every
//! offset on the wire counts from the start of the SMB2 header.

use super::header::HEADER_LEN;
use super::{slice_at, Put, Reader, WireError};

pub type FileId = [u8; 16];

fn body(msg: &[u8], expected: u16) -> Result<Reader<'_>, WireError> {
    let mut r = Reader::new(msg);
    r.skip(HEADER_LEN)?;
    let size = r.u16()?;
    if size != expected {
        return Err(WireError::StructureSize { got: size, expected });
    }
    Ok(r)
}

#[derive(Debug, Clone)]
pub struct NegotiateReq<'a> {
    pub security_mode: u16,
    pub capabilities: u32,
    pub client_guid: [u8; 16],
    pub dialects: Vec<u16>,
    pub context_offset: u32,
    pub context_count: u16,
    pub msg: &'a [u8],
}

impl<'a> NegotiateReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 36)?;
        let count = r.u16()? as usize;
        let security_mode = r.u16()?;
        r.skip(2)?;
        let capabilities = r.u32()?;
        let client_guid = r.guid()?;
        let context_offset = r.u32()?;
        let context_count = r.u16()?;
        r.skip(2)?;
        if count == 0 {
            return Err(WireError::Range("dialect count"));
        }
        let mut dialects = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            dialects.push(r.u16()?);
        }
        Ok(NegotiateReq { security_mode, capabilities, client_guid, dialects, context_offset, context_count, msg })
    }

    /// The negotiate contexts (only meaningful when 3.1.1 is offered):
    /// `(type, data)` pairs, each checked against the message.
    pub fn contexts(&self) -> Result<Vec<(u16, &'a [u8])>, WireError> {
        let mut out = Vec::new();
        let mut off = self.context_offset as usize;
        for i in 0..self.context_count {
            if i > 0 {
                off = off.checked_add(7).ok_or(WireError::Range("context offset"))? & !7;
            }
            let h = slice_at(self.msg, off, 8)?;
            let mut r = Reader::new(h);
            let ty = r.u16()?;
            let len = r.u16()? as usize;
            let data = slice_at(self.msg, off + 8, len)?;
            out.push((ty, data));
            off = off + 8 + len;
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub struct SessionSetupReq<'a> {
    pub flags: u8,
    pub security_mode: u8,
    pub capabilities: u32,
    pub previous_session_id: u64,
    pub token: &'a [u8],
}

pub const SESSION_FLAG_BINDING: u8 = 0x01;

impl<'a> SessionSetupReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 25)?;
        let flags = r.u8()?;
        let security_mode = r.u8()?;
        let capabilities = r.u32()?;
        let _channel = r.u32()?;
        let off = r.u16()? as usize;
        let len = r.u16()? as usize;
        let previous_session_id = r.u64()?;
        let token = slice_at(msg, off, len)?;
        Ok(SessionSetupReq { flags, security_mode, capabilities, previous_session_id, token })
    }
}

#[derive(Debug, Clone)]
pub struct TreeConnectReq<'a> {
    pub flags: u16,
    pub path: &'a [u8],
}

impl<'a> TreeConnectReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 9)?;
        let flags = r.u16()?;
        let off = r.u16()? as usize;
        let len = r.u16()? as usize;
        Ok(TreeConnectReq { flags, path: slice_at(msg, off, len)? })
    }
}

#[derive(Debug, Clone)]
pub struct CreateReq<'a> {
    pub oplock_level: u8,
    pub impersonation: u32,
    pub desired_access: u32,
    pub file_attributes: u32,
    pub share_access: u32,
    pub disposition: u32,
    pub options: u32,
    pub name: &'a [u8],
    pub contexts: &'a [u8],
}

impl<'a> CreateReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 57)?;
        let _security_flags = r.u8()?;
        let oplock_level = r.u8()?;
        let impersonation = r.u32()?;
        r.skip(16)?;
        let desired_access = r.u32()?;
        let file_attributes = r.u32()?;
        let share_access = r.u32()?;
        let disposition = r.u32()?;
        let options = r.u32()?;
        let name_off = r.u16()? as usize;
        let name_len = r.u16()? as usize;
        let ctx_off = r.u32()? as usize;
        let ctx_len = r.u32()? as usize;
        Ok(CreateReq {
            oplock_level,
            impersonation,
            desired_access,
            file_attributes,
            share_access,
            disposition,
            options,
            name: slice_at(msg, name_off, name_len)?,
            contexts: slice_at(msg, ctx_off, ctx_len)?,
        })
    }
}

/// Create contexts (MS-SMB2 2.2.13.2): `(name, data)` pairs.
pub fn parse_create_contexts(buf: &[u8]) -> Result<Vec<(&[u8], &[u8])>, WireError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    if buf.is_empty() {
        return Ok(out);
    }
    loop {
        let mut r = Reader::new(slice_at(buf, off, 16)?);
        let next = r.u32()? as usize;
        let name_off = r.u16()? as usize;
        let name_len = r.u16()? as usize;
        r.skip(2)?;
        let data_off = r.u16()? as usize;
        let data_len = r.u32()? as usize;
        // Every defined tag is at least 4 bytes; Windows refuses shorter ones.
        if name_len < 4 {
            return Err(WireError::Range("create context name shorter than 4 bytes"));
        }
        let name = slice_at(buf, off.checked_add(name_off).ok_or(WireError::Range("ctx"))?, name_len)?;
        let data = slice_at(buf, off.checked_add(data_off).ok_or(WireError::Range("ctx"))?, data_len)?;
        out.push((name, data));
        if out.len() > 64 {
            return Err(WireError::Range("too many create contexts"));
        }
        if next == 0 {
            break;
        }
        if next < 16 || next % 8 != 0 {
            return Err(WireError::Range("create context next"));
        }
        off = off.checked_add(next).ok_or(WireError::Range("ctx"))?;
    }
    Ok(out)
}

/// Appends one create context to `out` (which must start 8-aligned relative to
/// the first context); returns the offset of its Next field for chaining.
pub fn put_create_context(out: &mut Vec<u8>, name: &[u8], data: &[u8]) -> usize {
    let start = out.len();
    out.u32(0).u16(16).u16(name.len() as u16).u16(0);
    let data_off = if data.is_empty() { 0 } else { (16 + name.len() + 7) & !7 };
    out.u16(data_off as u16).u32(data.len() as u32).put(name);
    if !data.is_empty() {
        while out.len() - start < data_off {
            out.push(0);
        }
        out.put(data);
    }
    start
}

fn file_id(r: &mut Reader<'_>) -> Result<FileId, WireError> {
    r.array()
}

#[derive(Debug, Clone)]
pub struct CloseReq {
    pub flags: u16,
    pub file_id: FileId,
}
pub const CLOSE_FLAG_POSTQUERY_ATTRIB: u16 = 1;

impl CloseReq {
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 24)?;
        let flags = r.u16()?;
        r.skip(4)?;
        Ok(CloseReq { flags, file_id: file_id(&mut r)? })
    }
}

pub fn parse_flush(msg: &[u8]) -> Result<FileId, WireError> {
    let mut r = body(msg, 24)?;
    r.skip(6)?;
    file_id(&mut r)
}

#[derive(Debug, Clone)]
pub struct ReadReq<'a> {
    pub flags: u8,
    pub length: u32,
    pub offset: u64,
    pub file_id: FileId,
    pub minimum: u32,
    pub channel: u32,
    pub channel_info: &'a [u8],
}

impl<'a> ReadReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 49)?;
        let _padding = r.u8()?;
        let flags = r.u8()?;
        let length = r.u32()?;
        let offset = r.u64()?;
        let file_id = file_id(&mut r)?;
        let minimum = r.u32()?;
        let channel = r.u32()?;
        let _remaining = r.u32()?;
        let ci_off = r.u16()? as usize;
        let ci_len = r.u16()? as usize;
        Ok(ReadReq { flags, length, offset, file_id, minimum, channel, channel_info: slice_at(msg, ci_off, ci_len)? })
    }
}

#[derive(Debug, Clone)]
pub struct WriteReq<'a> {
    pub offset: u64,
    pub file_id: FileId,
    pub channel: u32,
    pub flags: u32,
    pub data: &'a [u8],
    pub channel_info: &'a [u8],
}

impl<'a> WriteReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 49)?;
        let data_off = r.u16()? as usize;
        let length = r.u32()? as usize;
        let offset = r.u64()?;
        let file_id = file_id(&mut r)?;
        let channel = r.u32()?;
        let _remaining = r.u32()?;
        let ci_off = r.u16()? as usize;
        let ci_len = r.u16()? as usize;
        let flags = r.u32()?;
        // With an RDMA channel the data comes by RDMA read and Length is 0 here.
        let data = slice_at(msg, data_off, length)?;
        Ok(WriteReq { offset, file_id, channel, flags, data, channel_info: slice_at(msg, ci_off, ci_len)? })
    }
}

#[derive(Debug, Clone)]
pub struct QueryDirReq<'a> {
    pub class: u8,
    pub flags: u8,
    pub file_index: u32,
    pub file_id: FileId,
    pub pattern: &'a [u8],
    pub output_len: u32,
}
pub const QD_RESTART_SCANS: u8 = 0x01;
pub const QD_RETURN_SINGLE_ENTRY: u8 = 0x02;
pub const QD_INDEX_SPECIFIED: u8 = 0x04;
pub const QD_REOPEN: u8 = 0x10;

impl<'a> QueryDirReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 33)?;
        let class = r.u8()?;
        let flags = r.u8()?;
        let file_index = r.u32()?;
        let file_id = file_id(&mut r)?;
        let off = r.u16()? as usize;
        let len = r.u16()? as usize;
        let output_len = r.u32()?;
        Ok(QueryDirReq { class, flags, file_index, file_id, pattern: slice_at(msg, off, len)?, output_len })
    }
}

#[derive(Debug, Clone)]
pub struct QueryInfoReq<'a> {
    pub info_type: u8,
    pub class: u8,
    pub output_len: u32,
    pub input: &'a [u8],
    pub additional: u32,
    pub flags: u32,
    pub file_id: FileId,
}
pub const INFO_FILE: u8 = 1;
pub const INFO_FILESYSTEM: u8 = 2;
pub const INFO_SECURITY: u8 = 3;
pub const INFO_QUOTA: u8 = 4;

impl<'a> QueryInfoReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 41)?;
        let info_type = r.u8()?;
        let class = r.u8()?;
        let output_len = r.u32()?;
        let in_off = r.u16()? as usize;
        r.skip(2)?;
        let in_len = r.u32()? as usize;
        let additional = r.u32()?;
        let flags = r.u32()?;
        let file_id = file_id(&mut r)?;
        Ok(QueryInfoReq { info_type, class, output_len, input: slice_at(msg, in_off, in_len)?, additional, flags, file_id })
    }
}

#[derive(Debug, Clone)]
pub struct SetInfoReq<'a> {
    pub info_type: u8,
    pub class: u8,
    pub buffer: &'a [u8],
    pub additional: u32,
    pub file_id: FileId,
}

impl<'a> SetInfoReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 33)?;
        let info_type = r.u8()?;
        let class = r.u8()?;
        let len = r.u32()? as usize;
        let off = r.u16()? as usize;
        r.skip(2)?;
        let additional = r.u32()?;
        let file_id = file_id(&mut r)?;
        Ok(SetInfoReq { info_type, class, buffer: slice_at(msg, off, len)?, additional, file_id })
    }
}

#[derive(Debug, Clone)]
pub struct IoctlReq<'a> {
    pub ctl_code: u32,
    pub file_id: FileId,
    pub input: &'a [u8],
    pub max_output: u32,
    pub flags: u32,
}
pub const IOCTL_IS_FSCTL: u32 = 1;

impl<'a> IoctlReq<'a> {
    pub fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 57)?;
        r.skip(2)?;
        let ctl_code = r.u32()?;
        let file_id = file_id(&mut r)?;
        let in_off = r.u32()? as usize;
        let in_len = r.u32()? as usize;
        let _max_in = r.u32()?;
        let _out_off = r.u32()?;
        let _out_len = r.u32()?;
        let max_output = r.u32()?;
        let flags = r.u32()?;
        Ok(IoctlReq { ctl_code, file_id, input: slice_at(msg, in_off, in_len)?, max_output, flags })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LockElement {
    pub offset: u64,
    pub length: u64,
    pub flags: u32,
}
pub const LOCKFLAG_SHARED: u32 = 1;
pub const LOCKFLAG_EXCLUSIVE: u32 = 2;
pub const LOCKFLAG_UNLOCK: u32 = 4;
pub const LOCKFLAG_FAIL_IMMEDIATELY: u32 = 0x10;

#[derive(Debug, Clone)]
pub struct LockReq {
    pub file_id: FileId,
    pub locks: Vec<LockElement>,
}

impl LockReq {
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 48)?;
        let count = r.u16()? as usize;
        let _seq = r.u32()?;
        let file_id = file_id(&mut r)?;
        if count == 0 || count > 64 {
            return Err(WireError::Range("lock count"));
        }
        let mut locks = Vec::with_capacity(count);
        for _ in 0..count {
            let offset = r.u64()?;
            let length = r.u64()?;
            let flags = r.u32()?;
            r.skip(4)?;
            locks.push(LockElement { offset, length, flags });
        }
        Ok(LockReq { file_id, locks })
    }
}

#[derive(Debug, Clone)]
pub struct ChangeNotifyReq {
    pub flags: u16,
    pub output_len: u32,
    pub file_id: FileId,
    pub filter: u32,
}
pub const WATCH_TREE: u16 = 1;

impl ChangeNotifyReq {
    pub fn parse(msg: &[u8]) -> Result<Self, WireError> {
        let mut r = body(msg, 32)?;
        let flags = r.u16()?;
        let output_len = r.u32()?;
        let file_id = file_id(&mut r)?;
        let filter = r.u32()?;
        Ok(ChangeNotifyReq { flags, output_len, file_id, filter })
    }
}

/// Checks a 4-byte body (ECHO, LOGOFF, TREE_DISCONNECT, CANCEL).
pub fn parse_small(msg: &[u8]) -> Result<(), WireError> {
    body(msg, 4).map(|_| ())
}

/// SMB2 ERROR response body (MS-SMB2 2.2.2).
pub fn error_body(out: &mut Vec<u8>, data: &[u8]) {
    out.u16(9).u8(0).u8(0).u32(data.len() as u32);
    if data.is_empty() {
        out.u8(0);
    } else {
        out.put(data);
    }
}

/// SECURITY_INFORMATION bits (MS-DTYP 2.4.7) naming the parts of a
/// security descriptor a query asks for or a set replaces.
pub const SECINFO_OWNER: u32 = 0x1;
pub const SECINFO_GROUP: u32 = 0x2;
pub const SECINFO_DACL: u32 = 0x4;
pub const SECINFO_SACL: u32 = 0x8;

const SE_OWNER_DEFAULTED: u16 = 0x0001;
const SE_GROUP_DEFAULTED: u16 = 0x0002;
const SE_DACL_PART: u16 = 0x0004 | 0x0008 | 0x0100 | 0x0400 | 0x1000;
const SE_SACL_PART: u16 = 0x0010 | 0x0020 | 0x0200 | 0x0800 | 0x2000;
pub const SE_DACL_PRESENT: u16 = 0x0004;
const SE_SELF_RELATIVE: u16 = 0x8000;

/// A security descriptor (MS-DTYP 2.4.6) split into its parts, each kept as
/// its wire bytes (checked to be well formed). A DACL that is present but
/// has no ACL (`dacl_present` with `dacl == None`) is a NULL DACL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityDescriptor {
    pub control: u16,
    pub owner: Option<Vec<u8>>,
    pub group: Option<Vec<u8>>,
    pub sacl: Option<Vec<u8>>,
    pub dacl: Option<Vec<u8>>,
}

/// Length of the SID at the start of `b` (MS-DTYP 2.4.2.2).
fn sid_len(b: &[u8]) -> Result<usize, WireError> {
    let rev = *b.first().ok_or(WireError::Range("sid"))?;
    let n = *b.get(1).ok_or(WireError::Range("sid"))? as usize;
    if rev != 1 || n > 15 {
        return Err(WireError::Range("sid"));
    }
    let len = 8 + 4 * n;
    if b.len() < len {
        return Err(WireError::Range("sid"));
    }
    Ok(len)
}

/// Length of the ACL at the start of `b`, its ACEs checked (MS-DTYP 2.4.5).
fn acl_len(b: &[u8]) -> Result<usize, WireError> {
    let mut r = Reader::new(b);
    let rev = r.u8()?;
    r.skip(1)?;
    let size = r.u16()? as usize;
    let count = r.u16()? as usize;
    if !matches!(rev, 2 | 4) || size < 8 || size > b.len() {
        return Err(WireError::Range("acl"));
    }
    let mut off = 8usize;
    for _ in 0..count {
        let ace = slice_at(b, off, 4)?;
        let ace_size = u16::from_le_bytes([ace[2], ace[3]]) as usize;
        if ace_size < 4 || ace_size % 4 != 0 || off + ace_size > size {
            return Err(WireError::Range("ace"));
        }
        off += ace_size;
    }
    Ok(size)
}

impl SecurityDescriptor {
    /// Parses a self-relative security descriptor.
    pub fn parse(b: &[u8]) -> Result<SecurityDescriptor, WireError> {
        let mut r = Reader::new(b);
        let rev = r.u8()?;
        r.skip(1)?;
        let control = r.u16()?;
        let offs = [r.u32()? as usize, r.u32()? as usize, r.u32()? as usize, r.u32()? as usize];
        if rev != 1 || control & SE_SELF_RELATIVE == 0 {
            return Err(WireError::Range("security descriptor"));
        }
        let part = |off: usize, len: fn(&[u8]) -> Result<usize, WireError>| -> Result<Option<Vec<u8>>, WireError> {
            if off == 0 {
                return Ok(None);
            }
            if off < 20 {
                return Err(WireError::Range("security descriptor offset"));
            }
            let rest = b.get(off..).ok_or(WireError::Range("security descriptor offset"))?;
            let n = len(rest)?;
            Ok(Some(rest[..n].to_vec()))
        };
        let sd = SecurityDescriptor {
            control,
            owner: part(offs[0], sid_len)?,
            group: part(offs[1], sid_len)?,
            sacl: if control & 0x0010 != 0 { part(offs[2], acl_len)? } else { None },
            dacl: if control & SE_DACL_PRESENT != 0 { part(offs[3], acl_len)? } else { None },
        };
        Ok(sd)
    }

    /// The self-relative form with only the parts `info` (SECINFO_*) names.
    pub fn to_bytes(&self, info: u32) -> Vec<u8> {
        let mut control = self.control | SE_SELF_RELATIVE;
        if info & SECINFO_OWNER == 0 {
            control &= !SE_OWNER_DEFAULTED;
        }
        if info & SECINFO_GROUP == 0 {
            control &= !SE_GROUP_DEFAULTED;
        }
        if info & SECINFO_DACL == 0 {
            control &= !SE_DACL_PART;
        }
        if info & SECINFO_SACL == 0 {
            control &= !SE_SACL_PART;
        }
        let mut o = Vec::new();
        o.u8(1).u8(0).u16(control).u32(0).u32(0).u32(0).u32(0);
        let parts = [(SECINFO_OWNER, &self.owner, 4), (SECINFO_GROUP, &self.group, 8), (SECINFO_SACL, &self.sacl, 12), (SECINFO_DACL, &self.dacl, 16)];
        for (bit, part, field) in parts {
            if let Some(p) = part.as_ref().filter(|_| info & bit != 0) {
                let at = o.len() as u32;
                o.set_u32(field, at);
                o.put(p);
            }
        }
        o
    }

    /// Replaces the parts `info` names with those of `new` (SET_INFO).
    pub fn merge(&mut self, new: &SecurityDescriptor, info: u32) {
        if info & SECINFO_OWNER != 0 {
            self.owner = new.owner.clone();
            self.control = (self.control & !SE_OWNER_DEFAULTED) | (new.control & SE_OWNER_DEFAULTED);
        }
        if info & SECINFO_GROUP != 0 {
            self.group = new.group.clone();
            self.control = (self.control & !SE_GROUP_DEFAULTED) | (new.control & SE_GROUP_DEFAULTED);
        }
        if info & SECINFO_DACL != 0 {
            // Setting a descriptor without a DACL sets a NULL DACL.
            self.dacl = if new.control & SE_DACL_PRESENT != 0 { new.dacl.clone() } else { None };
            self.control = (self.control & !SE_DACL_PART) | (new.control & SE_DACL_PART) | SE_DACL_PRESENT;
        }
        if info & SECINFO_SACL != 0 {
            self.sacl = new.sacl.clone();
            self.control = (self.control & !SE_SACL_PART) | (new.control & SE_SACL_PART);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::header::Header;

    fn msg_with(body_bytes: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        Header::default().write(&mut v);
        v.put(body_bytes);
        v
    }

    #[test]
    fn read_req_rejects_lengths_past_buffer() {
        let mut b = Vec::new();
        b.u16(49).u8(0).u8(0).u32(65536).u64(0).zeros(16).u32(0).u32(0).u32(0).u16(200).u16(10).u8(0);
        assert!(ReadReq::parse(&msg_with(&b)).is_err());
        let mut b2 = Vec::new();
        b2.u16(49).u8(0).u8(0).u32(65536).u64(0).zeros(16).u32(0).u32(0).u32(0).u16(0).u16(0).u8(0);
        assert_eq!(ReadReq::parse(&msg_with(&b2)).unwrap().length, 65536);
    }

    #[test]
    fn write_req_data_bounds() {
        let mut b = Vec::new();
        b.u16(49).u16(112).u32(5).u64(0).zeros(16).u32(0).u32(0).u16(0).u16(0).u32(0).put(b"abcd");
        assert!(WriteReq::parse(&msg_with(&b)).is_err());
        b.put(b"e");
        assert_eq!(WriteReq::parse(&msg_with(&b)).unwrap().data, b"abcde");
    }

    #[test]
    fn create_contexts_chain() {
        let mut v = Vec::new();
        let first = put_create_context(&mut v, b"MxAc", &[]);
        v.align(8);
        let n = v.len();
        v.set_u32(first, n as u32);
        put_create_context(&mut v, b"QFid", &[1, 2, 3]);
        let parsed = parse_create_contexts(&v).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].0, b"MxAc");
        assert_eq!(parsed[1], (&b"QFid"[..], &[1u8, 2, 3][..]));
        // A Next that points back to itself is rejected, not looped on.
        let mut bad = v.clone();
        bad.set_u32(0, 0);
        bad.set_u32(0, 8);
        assert!(parse_create_contexts(&bad).is_err());
        // Tags shorter than 4 bytes are invalid; longer ones are fine.
        for (tag, ok) in [(&b"xxx"[..], false), (&b"x"[..], false), (&b"xxxxx"[..], true), (&[b'x'; 34][..], true)] {
            let mut c = Vec::new();
            put_create_context(&mut c, tag, &[]);
            assert_eq!(parse_create_contexts(&c).is_ok(), ok, "{}", tag.len());
        }
    }


    #[test]
    fn security_descriptor_round_trip() {
        // Owner S-1-1-0, DACL with one ACCESS_ALLOWED ACE for S-1-5-11.
        let sid = |auth: u8, subs: &[u32]| {
            let mut v = vec![1u8, subs.len() as u8, 0, 0, 0, 0, 0, auth];
            for s in subs {
                v.extend_from_slice(&s.to_le_bytes());
            }
            v
        };
        let owner = sid(1, &[0]);
        let trustee = sid(5, &[11]);
        let mut acl = Vec::new();
        acl.u8(2).u8(0).u16((8 + 8 + trustee.len()) as u16).u16(1).u16(0);
        acl.u8(0).u8(0).u16((8 + trustee.len()) as u16).u32(0x001F_0000).put(&trustee);
        let sd = SecurityDescriptor { control: 0x8004, owner: Some(owner.clone()), group: None, sacl: None, dacl: Some(acl.clone()) };
        let bytes = sd.to_bytes(SECINFO_OWNER | SECINFO_GROUP | SECINFO_DACL);
        assert_eq!(SecurityDescriptor::parse(&bytes).unwrap(), sd);
        // Asking for the owner only drops the DACL and its control bits.
        let only = SecurityDescriptor::parse(&sd.to_bytes(SECINFO_OWNER)).unwrap();
        assert_eq!((only.control, only.dacl.clone(), only.owner.clone()), (0x8000, None, Some(owner)));
        // A set of the DACL alone keeps the owner.
        let mut cur = only.clone();
        cur.merge(&sd, SECINFO_DACL);
        assert_eq!(cur, sd);
        // Bad input is refused, never sliced blindly.
        let mut bad = bytes.clone();
        bad[4] = 0xF0;
        assert!(SecurityDescriptor::parse(&bad).is_err());
        assert!(SecurityDescriptor::parse(&bytes[..10]).is_err());
        let mut bad_ace = bytes.clone();
        let dacl_at = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
        bad_ace[dacl_at + 10] = 0xFF; // ACE size beyond the ACL
        assert!(SecurityDescriptor::parse(&bad_ace).is_err());
    }
    proptest::proptest! {
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let m = msg_with(&data);
            let _ = NegotiateReq::parse(&m).map(|n| n.contexts());
            let _ = SessionSetupReq::parse(&m);
            let _ = TreeConnectReq::parse(&m);
            let _ = CreateReq::parse(&m).map(|c| parse_create_contexts(c.contexts));
            let _ = CloseReq::parse(&m);
            let _ = ReadReq::parse(&m);
            let _ = WriteReq::parse(&m);
            let _ = QueryDirReq::parse(&m);
            let _ = QueryInfoReq::parse(&m);
            let _ = SetInfoReq::parse(&m);
            let _ = IoctlReq::parse(&m);
            let _ = LockReq::parse(&m);
            let _ = ChangeNotifyReq::parse(&m);
            let _ = parse_create_contexts(&data);
            let _ = SecurityDescriptor::parse(&data).map(|sd| sd.to_bytes(0xF));
        }
    }
}
