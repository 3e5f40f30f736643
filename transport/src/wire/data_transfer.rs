//! Data transfer message (MS-SMBD 2.2.3): a 20-byte header, 4 bytes of padding when data
//! follows, and the data at an 8-byte aligned DataOffset (24 for what we send).

use super::{Reader, WireError, Writer};

/// Length of an empty message (credits and keepalives only).
pub const DATA_TRANSFER_EMPTY_LEN: usize = 20;
/// Header length including the padding before the data.
pub const DATA_TRANSFER_HEADER_LEN: usize = 24;
/// The DataOffset we always use.
pub const DATA_OFFSET: u32 = 24;
/// The peer must answer promptly (keepalive).
pub const FLAG_RESPONSE_REQUESTED: u16 = 0x0001;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataTransferHeader {
    pub credits_requested: u16,
    pub credits_granted: u16,
    /// Raw flags; bits other than RESPONSE_REQUESTED are ignored (MS-SMBD 2.2.3).
    pub flags: u16,
    pub remaining_data_length: u32,
    pub data_offset: u32,
    pub data_length: u32,
}

impl DataTransferHeader {
    pub fn response_requested(&self) -> bool {
        self.flags & FLAG_RESPONSE_REQUESTED != 0
    }

    /// Decodes a whole received message and returns the header and its data.
    /// Checks DataOffset (>= 24, 8-byte aligned) and that the data lies inside `buf`.
    pub fn decode(buf: &[u8]) -> Result<(Self, &[u8]), WireError> {
        let mut r = Reader::new(buf, DATA_TRANSFER_EMPTY_LEN, "data transfer message")?;
        let credits_requested = r.u16()?;
        let credits_granted = r.u16()?;
        let flags = r.u16()?;
        let _reserved = r.u16()?;
        let remaining_data_length = r.u32()?;
        let data_offset = r.u32()?;
        let data_length = r.u32()?;
        let h = DataTransferHeader {
            credits_requested,
            credits_granted,
            flags,
            remaining_data_length,
            data_offset,
            data_length,
        };
        if data_length == 0 {
            return Ok((h, &[]));
        }
        if data_offset < DATA_OFFSET || data_offset % 8 != 0 {
            return Err(WireError::BadDataOffset { offset: data_offset });
        }
        let start = data_offset as usize;
        let data = start
            .checked_add(data_length as usize)
            .and_then(|end| buf.get(start..end))
            .ok_or(WireError::DataOutOfBounds { offset: data_offset, length: data_length, packet_len: buf.len() })?;
        Ok((h, data))
    }

    /// Encodes the header into `buf`: 20 bytes for an empty message, otherwise 24 bytes
    /// (DataOffset is forced to 24 and the padding zeroed). Returns the header length; the
    /// caller puts `data_length` bytes of data right after it.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = if self.data_length == 0 { DATA_TRANSFER_EMPTY_LEN } else { DATA_TRANSFER_HEADER_LEN };
        let mut w = Writer::new(buf, len, "data transfer header")?;
        w.u16(self.credits_requested);
        w.u16(self.credits_granted);
        w.u16(self.flags);
        w.u16(0);
        w.u32(self.remaining_data_length);
        if self.data_length == 0 {
            w.u32(0);
            w.u32(0);
        } else {
            w.u32(DATA_OFFSET);
            w.u32(self.data_length);
            w.u32(0);
        }
        Ok(len)
    }

    /// Encodes a full message (header + data) into `buf`, returning its length.
    pub fn encode_with_data(&self, data: &[u8], buf: &mut [u8]) -> Result<usize, WireError> {
        let mut h = *self;
        h.data_length = u32::try_from(data.len()).map_err(|_| WireError::BufferTooSmall {
            what: "data transfer message",
            need: data.len(),
            got: buf.len(),
        })?;
        let need = if data.is_empty() { DATA_TRANSFER_EMPTY_LEN } else { DATA_TRANSFER_HEADER_LEN + data.len() };
        let got = buf.len();
        let dst = buf.get_mut(..need).ok_or(WireError::BufferTooSmall { what: "data transfer message", need, got })?;
        let hl = h.encode(dst)?;
        if let Some(d) = dst.get_mut(hl..) {
            d.copy_from_slice(data);
        }
        Ok(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_message_is_20_bytes() {
        let h = DataTransferHeader { credits_requested: 255, credits_granted: 255, ..Default::default() };
        let mut b = [0xaau8; 64];
        let n = h.encode_with_data(&[], &mut b).unwrap();
        assert_eq!(n, 20);
        assert_eq!(&b[..20], &[255, 0, 255, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let (d, data) = DataTransferHeader::decode(&b[..20]).unwrap();
        assert_eq!(d, h);
        assert!(data.is_empty());
    }

    #[test]
    fn data_at_offset_24() {
        let h = DataTransferHeader {
            credits_requested: 10,
            credits_granted: 3,
            flags: FLAG_RESPONSE_REQUESTED,
            remaining_data_length: 1000,
            ..Default::default()
        };
        let mut b = [0u8; 64];
        let n = h.encode_with_data(b"hello", &mut b).unwrap();
        assert_eq!(n, 29);
        assert_eq!(&b[16..24], &[5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[12..16], &[24, 0, 0, 0]);
        let (d, data) = DataTransferHeader::decode(&b[..n]).unwrap();
        assert_eq!(data, b"hello");
        assert!(d.response_requested());
        assert_eq!(d.remaining_data_length, 1000);
        assert_eq!(d.data_length, 5);
    }

    #[test]
    fn bad_offsets_and_lengths() {
        let mut b = [0u8; 48];
        b[16] = 8; // DataLength 8
        b[12] = 16; // offset 16 < 24
        assert_eq!(DataTransferHeader::decode(&b), Err(WireError::BadDataOffset { offset: 16 }));
        b[12] = 28; // not aligned
        assert_eq!(DataTransferHeader::decode(&b), Err(WireError::BadDataOffset { offset: 28 }));
        b[12] = 40; // 40 + 8 = 48 fits exactly
        assert!(DataTransferHeader::decode(&b).is_ok());
        b[16] = 9;
        assert!(matches!(DataTransferHeader::decode(&b), Err(WireError::DataOutOfBounds { .. })));
        // Offset near u32::MAX must not overflow.
        b[12..16].copy_from_slice(&0xffff_fff8u32.to_le_bytes());
        b[16..20].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        assert!(matches!(DataTransferHeader::decode(&b), Err(WireError::DataOutOfBounds { .. })));
        assert!(matches!(DataTransferHeader::decode(&b[..19]), Err(WireError::Truncated { .. })));
        // A larger aligned offset is accepted on receive.
        let mut c = [0u8; 40];
        c[12] = 32;
        c[16] = 8;
        c[32..40].copy_from_slice(b"abcdefgh");
        assert_eq!(DataTransferHeader::decode(&c).unwrap().1, b"abcdefgh");
    }

    #[test]
    fn encode_needs_room() {
        let h = DataTransferHeader::default();
        assert!(h.encode_with_data(b"abc", &mut [0u8; 26]).is_err());
        assert!(h.encode_with_data(&[], &mut [0u8; 19]).is_err());
    }
}
