//! SMB2 wire codecs: bounds-checked reading and little-endian writing, the
//! header, NT status values and the fixed parts of each command.
//!
//! Nothing in here panics on any input: every read goes through [`Reader`].

pub mod header;
pub mod messages;
pub mod status;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    #[error("message truncated: needed {needed} bytes at offset {at}, have {have}")]
    Truncated { at: usize, needed: usize, have: usize },
    #[error("bad structure size {got} (expected {expected})")]
    StructureSize { got: u16, expected: u16 },
    #[error("field {0} out of range")]
    Range(&'static str),
    #[error("field {0} points into the header or the fixed part of the request")]
    IntoFixedPart(&'static str),
    #[error("invalid UTF-16 name")]
    BadName,
}

/// A cursor over a borrowed buffer; every accessor checks bounds.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Range("length"))?;
        let s = self.buf.get(self.pos..end).ok_or(WireError::Truncated {
            at: self.pos,
            needed: n,
            have: self.remaining(),
        })?;
        self.pos = end;
        Ok(s)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.bytes(n).map(|_| ())
    }
    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn guid(&mut self) -> Result<[u8; 16], WireError> {
        self.array()
    }
}

/// `buf[off..off+len]` with both checked; a zero length yields an empty slice
/// whatever the offset.
pub fn slice_at(buf: &[u8], off: usize, len: usize) -> Result<&[u8], WireError> {
    if len == 0 {
        return Ok(&[]);
    }
    let end = off.checked_add(len).ok_or(WireError::Range("offset"))?;
    buf.get(off..end).ok_or(WireError::Truncated { at: off, needed: len, have: buf.len().saturating_sub(off) })
}

pub fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(buf.get(off..off.checked_add(2)?)?.try_into().ok()?))
}
pub fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(off..off.checked_add(4)?)?.try_into().ok()?))
}
pub fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

/// Little-endian writing onto a `Vec<u8>`.
pub trait Put {
    fn u8(&mut self, v: u8) -> &mut Self;
    fn u16(&mut self, v: u16) -> &mut Self;
    fn u32(&mut self, v: u32) -> &mut Self;
    fn u64(&mut self, v: u64) -> &mut Self;
    fn put(&mut self, b: &[u8]) -> &mut Self;
    fn zeros(&mut self, n: usize) -> &mut Self;
    /// Pads with zeros to a multiple of `a` (counted from the vector's start).
    fn align(&mut self, a: usize) -> &mut Self;
    fn utf16(&mut self, s: &str) -> &mut Self;
    fn set_u16(&mut self, at: usize, v: u16);
    fn set_u32(&mut self, at: usize, v: u32);
}

impl Put for Vec<u8> {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn put(&mut self, b: &[u8]) -> &mut Self {
        self.extend_from_slice(b);
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.resize(self.len() + n, 0);
        self
    }
    fn align(&mut self, a: usize) -> &mut Self {
        let pad = (a - self.len() % a) % a;
        self.zeros(pad)
    }
    fn utf16(&mut self, s: &str) -> &mut Self {
        for u in s.encode_utf16() {
            self.extend_from_slice(&u.to_le_bytes());
        }
        self
    }
    fn set_u16(&mut self, at: usize, v: u16) {
        if let Some(d) = self.get_mut(at..at + 2) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
    fn set_u32(&mut self, at: usize, v: u32) {
        if let Some(d) = self.get_mut(at..at + 4) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Decodes UTF-16LE bytes into a String; odd lengths and unpaired surrogates are errors.
pub fn utf16_to_string(b: &[u8]) -> Result<String, WireError> {
    if b.len() % 2 != 0 {
        return Err(WireError::BadName);
    }
    let units = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units).collect::<Result<String, _>>().map_err(|_| WireError::BadName)
}

pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count() * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_checks_bounds() {
        let b = [1u8, 2, 3];
        let mut r = Reader::new(&b);
        assert_eq!(r.u16().unwrap(), 0x0201);
        assert!(r.u16().is_err());
        assert_eq!(r.u8().unwrap(), 3);
        assert!(r.bytes(usize::MAX).is_err());
        assert!(slice_at(&b, usize::MAX, 2).is_err());
        assert_eq!(slice_at(&b, 1000, 0).unwrap(), &[] as &[u8]);
        assert!(slice_at(&b, 2, 2).is_err());
    }

    #[test]
    fn utf16_round_trip() {
        let mut v = Vec::new();
        v.utf16("dir\\Äb");
        assert_eq!(utf16_to_string(&v).unwrap(), "dir\\Äb");
        assert!(utf16_to_string(&[0]).is_err());
        assert!(utf16_to_string(&[0x00, 0xD8]).is_err());
    }
}
