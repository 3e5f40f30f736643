//! The 64-byte SMB2 packet header (MS-SMB2 2.2.1).

use super::{Put, Reader, WireError};
use super::status::NtStatus;

pub const PROTOCOL_ID: [u8; 4] = [0xFE, b'S', b'M', b'B'];
pub const TRANSFORM_PROTOCOL_ID: [u8; 4] = [0xFD, b'S', b'M', b'B'];
pub const SMB1_PROTOCOL_ID: [u8; 4] = [0xFF, b'S', b'M', b'B'];
pub const HEADER_LEN: usize = 64;
pub const SIGNATURE_RANGE: std::ops::Range<usize> = 48..64;

pub const FLAG_SERVER_TO_REDIR: u32 = 0x0000_0001;
pub const FLAG_ASYNC: u32 = 0x0000_0002;
pub const FLAG_RELATED: u32 = 0x0000_0004;
pub const FLAG_SIGNED: u32 = 0x0000_0008;
pub const FLAG_PRIORITY_MASK: u32 = 0x0000_0070;
pub const FLAG_DFS: u32 = 0x1000_0000;
pub const FLAG_REPLAY: u32 = 0x2000_0000;

/// SMB2 commands (MS-SMB2 2.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Command {
    Negotiate = 0,
    SessionSetup = 1,
    Logoff = 2,
    TreeConnect = 3,
    TreeDisconnect = 4,
    Create = 5,
    Close = 6,
    Flush = 7,
    Read = 8,
    Write = 9,
    Lock = 10,
    Ioctl = 11,
    Cancel = 12,
    Echo = 13,
    QueryDirectory = 14,
    ChangeNotify = 15,
    QueryInfo = 16,
    SetInfo = 17,
    OplockBreak = 18,
}

impl Command {
    pub fn from_u16(v: u16) -> Option<Command> {
        use Command::*;
        Some(match v {
            0 => Negotiate,
            1 => SessionSetup,
            2 => Logoff,
            3 => TreeConnect,
            4 => TreeDisconnect,
            5 => Create,
            6 => Close,
            7 => Flush,
            8 => Read,
            9 => Write,
            10 => Lock,
            11 => Ioctl,
            12 => Cancel,
            13 => Echo,
            14 => QueryDirectory,
            15 => ChangeNotify,
            16 => QueryInfo,
            17 => SetInfo,
            18 => OplockBreak,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    pub credit_charge: u16,
    /// Status in responses; ChannelSequence (low 16 bits) in requests.
    pub status: u32,
    pub command: u16,
    pub credits: u16,
    pub flags: u32,
    pub next_command: u32,
    pub message_id: u64,
    /// AsyncId when FLAG_ASYNC is set, else ProcessId (low 32) | TreeId (high 32).
    pub async_id: u64,
    pub session_id: u64,
    pub signature: [u8; 16],
}

impl Header {
    pub fn parse(buf: &[u8]) -> Result<Header, WireError> {
        let mut r = Reader::new(buf);
        let pid = r.array::<4>()?;
        if pid != PROTOCOL_ID {
            return Err(WireError::Range("protocol id"));
        }
        let size = r.u16()?;
        if size != 64 {
            return Err(WireError::StructureSize { got: size, expected: 64 });
        }
        Ok(Header {
            credit_charge: r.u16()?,
            status: r.u32()?,
            command: r.u16()?,
            credits: r.u16()?,
            flags: r.u32()?,
            next_command: r.u32()?,
            message_id: r.u64()?,
            async_id: r.u64()?,
            session_id: r.u64()?,
            signature: r.array()?,
        })
    }

    pub fn tree_id(&self) -> u32 {
        (self.async_id >> 32) as u32
    }
    pub fn is_async(&self) -> bool {
        self.flags & FLAG_ASYNC != 0
    }
    pub fn is_related(&self) -> bool {
        self.flags & FLAG_RELATED != 0
    }
    pub fn is_signed(&self) -> bool {
        self.flags & FLAG_SIGNED != 0
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.put(&PROTOCOL_ID)
            .u16(64)
            .u16(self.credit_charge)
            .u32(self.status)
            .u16(self.command)
            .u16(self.credits)
            .u32(self.flags)
            .u32(self.next_command)
            .u64(self.message_id)
            .u64(self.async_id)
            .u64(self.session_id)
            .put(&self.signature);
    }

    /// The response header for this request, before credits and status are known.
    pub fn response(&self, status: NtStatus) -> Header {
        Header {
            credit_charge: self.credit_charge,
            status: status.0,
            command: self.command,
            credits: 0,
            flags: FLAG_SERVER_TO_REDIR | (self.flags & (FLAG_ASYNC | FLAG_PRIORITY_MASK)),
            next_command: 0,
            message_id: self.message_id,
            async_id: self.async_id,
            session_id: self.session_id,
            signature: [0; 16],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header { credit_charge: 3, command: 8, credits: 10, flags: FLAG_SIGNED, message_id: 77, async_id: 5 << 32, session_id: 99, signature: [7; 16], ..Default::default() };
        let mut v = Vec::new();
        h.write(&mut v);
        assert_eq!(v.len(), HEADER_LEN);
        let p = Header::parse(&v).unwrap();
        assert_eq!(p, h);
        assert_eq!(p.tree_id(), 5);
    }

    #[test]
    fn rejects_bad() {
        assert!(Header::parse(&[0xFE, b'S', b'M', b'B']).is_err());
        let mut v = Vec::new();
        Header::default().write(&mut v);
        v[0] = 0xFF;
        assert!(Header::parse(&v).is_err());
        v[0] = 0xFE;
        v[4] = 63;
        assert!(Header::parse(&v).is_err());
    }
}
