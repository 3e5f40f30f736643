//! Buffer descriptor V1 (MS-SMBD 2.2.3.1): 16 bytes naming a peer's registered memory.

use super::{Reader, WireError, Writer};

pub const BUFFER_DESCRIPTOR_V1_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct BufferDescriptorV1 {
    /// Remote address (the registration's I/O virtual address) of the first byte.
    pub offset: u64,
    /// The remote key (rkey) of the registration.
    pub token: u32,
    pub length: u32,
}

impl BufferDescriptorV1 {
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, BUFFER_DESCRIPTOR_V1_LEN, "buffer descriptor")?;
        Ok(BufferDescriptorV1 { offset: r.u64()?, token: r.u32()?, length: r.u32()? })
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf, BUFFER_DESCRIPTOR_V1_LEN, "buffer descriptor")?;
        w.u64(self.offset);
        w.u32(self.token);
        w.u32(self.length);
        Ok(BUFFER_DESCRIPTOR_V1_LEN)
    }

    pub fn to_bytes(&self) -> [u8; BUFFER_DESCRIPTOR_V1_LEN] {
        let mut b = [0u8; BUFFER_DESCRIPTOR_V1_LEN];
        let _ = self.encode(&mut b);
        b
    }

    /// Iterates over a channel-info blob (SMB2 READ/WRITE ReadChannelInfo/WriteChannelInfo).
    /// The blob must be a whole number of descriptors; no allocation.
    pub fn iter_list(buf: &[u8]) -> Result<impl Iterator<Item = BufferDescriptorV1> + '_, WireError> {
        if buf.len().checked_rem(BUFFER_DESCRIPTOR_V1_LEN) != Some(0) {
            return Err(WireError::BadDescriptorListLength(buf.len()));
        }
        Ok(buf.chunks_exact(BUFFER_DESCRIPTOR_V1_LEN).filter_map(|c| Self::decode(c).ok()))
    }

    /// Decodes a whole list into `out` (cleared first).
    pub fn decode_list_into(buf: &[u8], out: &mut Vec<BufferDescriptorV1>) -> Result<(), WireError> {
        out.clear();
        out.extend(Self::iter_list(buf)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_round_trip() {
        let d = BufferDescriptorV1 { offset: 0x1122_3344_5566_7788, token: 0xdead_beef, length: 4096 };
        let b = d.to_bytes();
        assert_eq!(b, [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xef, 0xbe, 0xad, 0xde, 0, 0x10, 0, 0]);
        assert_eq!(BufferDescriptorV1::decode(&b), Ok(d));
        assert!(BufferDescriptorV1::decode(&b[..15]).is_err());
    }

    #[test]
    fn lists() {
        let a = BufferDescriptorV1 { offset: 1, token: 2, length: 3 };
        let c = BufferDescriptorV1 { offset: 4, token: 5, length: 6 };
        let mut blob = Vec::new();
        blob.extend_from_slice(&a.to_bytes());
        blob.extend_from_slice(&c.to_bytes());
        let mut out = Vec::new();
        BufferDescriptorV1::decode_list_into(&blob, &mut out).unwrap();
        assert_eq!(out, vec![a, c]);
        assert_eq!(BufferDescriptorV1::decode_list_into(&blob[..17], &mut out), Err(WireError::BadDescriptorListLength(17)));
        BufferDescriptorV1::decode_list_into(&[], &mut out).unwrap();
        assert!(out.is_empty());
    }
}
