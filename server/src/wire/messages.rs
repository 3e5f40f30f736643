//! Fixed parts of SMB2 requests (parsed) and responses (built), MS-SMB2 2.2.
//!
//! Request parsers take the whole message (header included), because every
//! offset on the wire counts from the start of the SMB2 header.

use super::header::HEADER_LEN;
use super::{slice_at, Put, Reader, WireError};

pub type FileId = [u8; 16];

/// The end of a request's fixed part: the header plus the body its
/// StructureSize defines, less the one byte of variable buffer an odd size counts.
pub const fn fixed_end(structure_size: u16) -> usize {
    HEADER_LEN + (structure_size & !1) as usize
}

/// A variable field a request names by offset (from the start of the SMB2
/// header) and length. A non-empty one must start at or after the end of the
/// fixed part, `fixed` (not point back into the header or the fixed fields),
/// and end inside the message; an empty one is empty whatever its offset.
pub fn var_field<'a>(msg: &'a [u8], fixed: usize, off: usize, len: usize, what: &'static str) -> Result<&'a [u8], WireError> {
    if len == 0 {
        return Ok(&[]);
    }
    if off < fixed {
        return Err(WireError::IntoFixedPart(what));
    }
    slice_at(msg, off, len)
}

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
        // The first context comes after the fixed part and the dialects.
        if self.context_count > 0 && off < fixed_end(36) + 2 * self.dialects.len() {
            return Err(WireError::IntoFixedPart("negotiate context offset"));
        }
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
        let token = var_field(msg, fixed_end(25), off, len, "security buffer")?;
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
        Ok(TreeConnectReq { flags, path: var_field(msg, fixed_end(9), off, len, "tree connect path")? })
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
            name: var_field(msg, fixed_end(57), name_off, name_len, "create name")?,
            contexts: var_field(msg, fixed_end(57), ctx_off, ctx_len, "create contexts")?,
        })
    }
}

/// Create contexts (MS-SMB2 2.2.13.2): `(name, data)` pairs. Each context
/// spans from its start to the next one (Next), the last one to the end of
/// the buffer; its name and data must lie inside that span, after its
/// 16-byte fixed part, and not overlap each other.
pub fn parse_create_contexts(buf: &[u8]) -> Result<Vec<(&[u8], &[u8])>, WireError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    if buf.is_empty() {
        return Ok(out);
    }
    loop {
        let rest = buf.get(off..).ok_or(WireError::Range("create context"))?;
        let mut r = Reader::new(slice_at(rest, 0, 16)?);
        let next = r.u32()? as usize;
        let name_off = r.u16()? as usize;
        let name_len = r.u16()? as usize;
        r.skip(2)?;
        let data_off = r.u16()? as usize;
        let data_len = r.u32()? as usize;
        if next != 0 && (next < 16 || next % 8 != 0 || next > rest.len()) {
            return Err(WireError::Range("create context next"));
        }
        let this = if next == 0 { rest } else { &rest[..next] };
        // Every defined tag is at least 4 bytes; Windows refuses shorter ones.
        if name_len < 4 {
            return Err(WireError::Range("create context name shorter than 4 bytes"));
        }
        let name = var_field(this, 16, name_off, name_len, "create context name")?;
        let data = var_field(this, 16, data_off, data_len, "create context data")?;
        if !data.is_empty() && data_off < name_off + name_len && name_off < data_off + data_len {
            return Err(WireError::Range("create context data overlaps its name"));
        }
        out.push((name, data));
        if out.len() > 64 {
            return Err(WireError::Range("too many create contexts"));
        }
        if next == 0 {
            break;
        }
        off += next;
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
        let channel_info = var_field(msg, fixed_end(49), ci_off, ci_len, "read channel info")?;
        Ok(ReadReq { flags, length, offset, file_id, minimum, channel, channel_info })
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
        let data = var_field(msg, fixed_end(49), data_off, length, "write data")?;
        let channel_info = var_field(msg, fixed_end(49), ci_off, ci_len, "write channel info")?;
        Ok(WriteReq { offset, file_id, channel, flags, data, channel_info })
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
        let pattern = var_field(msg, fixed_end(33), off, len, "query directory name")?;
        Ok(QueryDirReq { class, flags, file_index, file_id, pattern, output_len })
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
        let input = var_field(msg, fixed_end(41), in_off, in_len, "query info input")?;
        Ok(QueryInfoReq { info_type, class, output_len, input, additional, flags, file_id })
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
        let buffer = var_field(msg, fixed_end(33), off, len, "set info buffer")?;
        Ok(SetInfoReq { info_type, class, buffer, additional, file_id })
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
        let out_off = r.u32()? as usize;
        let out_len = r.u32()? as usize;
        let max_output = r.u32()?;
        let flags = r.u32()?;
        let input = var_field(msg, fixed_end(57), in_off, in_len, "ioctl input")?;
        // No FSCTL we serve takes data in a request's output buffer, but one
        // sent must still lie inside the request.
        var_field(msg, fixed_end(57), out_off, out_len, "ioctl output")?;
        Ok(IoctlReq { ctl_code, file_id, input, max_output, flags })
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
    use crate::wire::{u16_at, u32_at};

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
    /// One request of each kind with a variable field, as (what, message,
    /// position of the offset field in the message, offset field width,
    /// position of the length field, length field width, parser).
    type Parse = fn(&[u8]) -> Result<(), WireError>;

    fn offset_cases() -> Vec<(&'static str, Vec<u8>, usize, usize, Parse)> {
        let body = |b: &mut Vec<u8>| msg_with(b);
        let mut v: Vec<(&'static str, Vec<u8>, usize, usize, Parse)> = Vec::new();
        // SESSION_SETUP: SecurityBufferOffset u16 at body 12.
        let mut b = Vec::new();
        b.u16(25).u8(0).u8(1).u32(0).u32(0).u16(88).u16(8).u64(0).put(b"NTLMSSP\0");
        v.push(("session setup security buffer", body(&mut b), 64 + 12, 2, |m| SessionSetupReq::parse(m).map(|_| ())));
        // TREE_CONNECT: PathOffset u16 at body 4.
        let mut b = Vec::new();
        b.u16(9).u16(0).u16(72).u16(8).put(&[b'x', 0, b'y', 0, b'z', 0, b'w', 0]);
        v.push(("tree connect path", body(&mut b), 64 + 4, 2, |m| TreeConnectReq::parse(m).map(|_| ())));
        // CREATE: NameOffset u16 at body 44, CreateContextsOffset u32 at body 48.
        let mut b = Vec::new();
        b.u16(57).u8(0).u8(0).u32(2).zeros(16).u32(0).u32(0).u32(7).u32(1).u32(0).u16(120).u16(4).u32(128).u32(24).put(&[b'a', 0, b'b', 0]).zeros(4);
        put_create_context(&mut b, b"MxAc", &[]);
        b.zeros(4);
        v.push(("create name", body(&mut b), 64 + 44, 2, |m| CreateReq::parse(m).map(|_| ())));
        v.push(("create contexts", body(&mut b), 64 + 48, 4, |m| CreateReq::parse(m).map(|_| ())));
        // READ: ReadChannelInfoOffset u16 at body 44.
        let mut b = Vec::new();
        b.u16(49).u8(0).u8(0).u32(1).u64(0).zeros(16).u32(0).u32(0).u32(0).u16(112).u16(16).zeros(16);
        v.push(("read channel info", body(&mut b), 64 + 44, 2, |m| ReadReq::parse(m).map(|_| ())));
        // WRITE: DataOffset u16 at body 2, WriteChannelInfoOffset u16 at body 40.
        let mut b = Vec::new();
        b.u16(49).u16(112).u32(4).u64(0).zeros(16).u32(0).u32(0).u16(116).u16(16).u32(0).put(b"data").zeros(16);
        v.push(("write data", body(&mut b), 64 + 2, 2, |m| WriteReq::parse(m).map(|_| ())));
        v.push(("write channel info", body(&mut b), 64 + 40, 2, |m| WriteReq::parse(m).map(|_| ())));
        // QUERY_DIRECTORY: FileNameOffset u16 at body 24.
        let mut b = Vec::new();
        b.u16(33).u8(1).u8(0).u32(0).zeros(16).u16(96).u16(2).u32(4096).put(&[b'*', 0]);
        v.push(("query directory name", body(&mut b), 64 + 24, 2, |m| QueryDirReq::parse(m).map(|_| ())));
        // QUERY_INFO: InputBufferOffset u16 at body 8.
        let mut b = Vec::new();
        b.u16(41).u8(1).u8(15).u32(4096).u16(104).u16(0).u32(8).u32(0).u32(0).zeros(16).zeros(8);
        v.push(("query info input", body(&mut b), 64 + 8, 2, |m| QueryInfoReq::parse(m).map(|_| ())));
        // SET_INFO: BufferOffset u16 at body 8.
        let mut b = Vec::new();
        b.u16(33).u8(1).u8(4).u32(40).u16(96).u16(0).u32(0).zeros(16).zeros(40);
        v.push(("set info buffer", body(&mut b), 64 + 8, 2, |m| SetInfoReq::parse(m).map(|_| ())));
        // IOCTL: InputOffset u32 at body 24, OutputOffset u32 at body 36.
        let mut b = Vec::new();
        b.u16(57).u16(0).u32(0x0009_00C4).zeros(16).u32(120).u32(8).u32(0).u32(128).u32(4).u32(0).u32(1).u32(0).zeros(12);
        v.push(("ioctl input", body(&mut b), 64 + 24, 4, |m| IoctlReq::parse(m).map(|_| ())));
        v.push(("ioctl output", body(&mut b), 64 + 36, 4, |m| IoctlReq::parse(m).map(|_| ())));
        // NEGOTIATE: NegotiateContextOffset u32 at body 28; 2 dialects end at 104.
        let mut b = Vec::new();
        b.u16(36).u16(2).u16(1).u16(0).u32(0).zeros(16).u32(104).u16(1).u16(0).u16(0x0300).u16(0x0311);
        b.u16(1).u16(4).u32(0).put(&[1, 0, 0, 0]);
        v.push(("negotiate contexts", body(&mut b), 64 + 28, 4, |m| NegotiateReq::parse(m).and_then(|n| n.contexts()).map(|_| ())));
        v
    }

    fn set_off(m: &mut [u8], at: usize, width: usize, v: usize) {
        if width == 2 {
            m[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
        } else {
            m[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        }
    }

    /// Every offset field: the well-formed request parses; an offset into the
    /// header or the fixed part (the ksmbd CVE class), or one that puts the
    /// field past the end of the message, is refused.
    #[test]
    fn offsets_must_lie_after_the_fixed_part_and_inside_the_message() {
        for (what, m, at, width, parse) in offset_cases() {
            parse(&m).unwrap_or_else(|e| panic!("{what}: well-formed request refused: {e}"));
            let good = if width == 2 { u16_at(&m, at).unwrap() as usize } else { u32_at(&m, at).unwrap() as usize };
            // The first byte after the fixed part (after the dialects for NEGOTIATE).
            let first = if what.starts_with("negotiate") { 104 } else { fixed_end(u16_at(&m, HEADER_LEN).unwrap()) };
            for off in [0usize, 8, HEADER_LEN, first - 1, m.len() - 1, m.len(), 0xFFFF] {
                let mut bad = m.clone();
                set_off(&mut bad, at, width, off);
                assert!(parse(&bad).is_err(), "{what}: offset {off:#x} accepted (good one {good:#x}, message {} bytes)", m.len());
            }
        }
    }

    /// LockCount elements must all be in the message (the StructureSize of 48
    /// counts one), and there are 1 to 64 of them.
    #[test]
    fn lock_count_is_bounded_by_the_message() {
        let mut b = Vec::new();
        b.u16(48).u16(2).u32(0).zeros(16);
        for i in 0..2u64 {
            b.u64(i * 10).u64(5).u32(LOCKFLAG_EXCLUSIVE).u32(0);
        }
        assert_eq!(LockReq::parse(&msg_with(&b)).unwrap().locks.len(), 2);
        b[2] = 3;
        assert!(LockReq::parse(&msg_with(&b)).is_err());
        b[2] = 0;
        assert!(LockReq::parse(&msg_with(&b)).is_err());
        b[2] = 65;
        assert!(LockReq::parse(&msg_with(&b)).is_err());
    }

    /// SMB 3.1.1 TREE_CONNECT with SMB2_TREE_CONNECT_FLAG_EXTENSION_PRESENT
    /// (MS-SMB2 2.2.9.1): Buffer starts with the 16-byte extension header and
    /// PathOffset names PathName inside it (0x58), so the path is found
    /// through PathOffset as in the plain form, never in the extension header.
    #[test]
    fn tree_connect_with_extension_reads_the_path_after_the_extension_header() {
        let path: Vec<u8> = "\\\\srv\\share".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut b = Vec::new();
        b.put(&9u16.to_le_bytes());
        b.put(&0x0004u16.to_le_bytes()); // EXTENSION_PRESENT
        b.put(&0x58u16.to_le_bytes()); // PathOffset: PathName in the extension
        b.put(&(path.len() as u16).to_le_bytes());
        let ctx_off = 0x58 + path.len() as u32;
        b.put(&ctx_off.to_le_bytes()); // TreeConnectContextOffset
        b.put(&0u16.to_le_bytes()); // TreeConnectContextCount
        b.put(&[0u8; 10]); // Reserved
        b.put(&path);
        let m = msg_with(&b);
        let req = TreeConnectReq::parse(&m).unwrap();
        assert_eq!(req.flags, 0x0004);
        assert_eq!(req.path, &path[..]);
    }

    #[test]
    fn fixed_ends() {
        assert_eq!(fixed_end(49), 0x70);
        assert_eq!(fixed_end(57), 0x78);
        assert_eq!(fixed_end(33), 0x60);
        assert_eq!(fixed_end(41), 0x68);
        assert_eq!(fixed_end(25), 0x58);
        assert_eq!(fixed_end(9), 0x48);
        assert_eq!(fixed_end(36), 100);
        assert_eq!(var_field(&[0; 200], 0x70, 0x10, 0, "x"), Ok(&[][..]));
        assert_eq!(var_field(&[0; 200], 0x70, 0x6F, 1, "x"), Err(WireError::IntoFixedPart("x")));
        assert!(var_field(&[0; 200], 0x70, 0x70, 89, "x").is_err());
        assert_eq!(var_field(&[0; 200], 0x70, 0x70, 88, "x").map(<[u8]>::len), Ok(88));
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
