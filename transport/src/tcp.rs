//! Direct TCP transport framing (MS-SMB2 2.1): every SMB2 message is preceded by a
//! 4-byte header, a zero byte followed by the message length as 24-bit big-endian.
//!
//! Sans-I/O: the caller reads bytes and asks [`parse_header`] what they mean.

use thiserror::Error;

/// Size of the Direct TCP header.
pub const HEADER_LEN: usize = 4;
/// The largest length the 24-bit field can carry.
pub const MAX_FRAME_LEN: usize = 0x00FF_FFFF;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("direct TCP header starts with {0:#04x}, not zero")]
    BadZeroByte(u8),
    #[error("frame of {len} bytes is larger than the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("empty frame")]
    Empty,
}

/// Encodes the header for a message of `len` bytes.
pub fn encode_header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len, limit: MAX_FRAME_LEN });
    }
    let b = (len as u32).to_be_bytes();
    Ok([0, b[1], b[2], b[3]])
}

/// Parses a header and checks the length against `limit` (the largest message
/// this end accepts) before anything is allocated for it.
pub fn parse_header(hdr: [u8; HEADER_LEN], limit: usize) -> Result<usize, FrameError> {
    if hdr[0] != 0 {
        return Err(FrameError::BadZeroByte(hdr[0]));
    }
    let len = u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for len in [1usize, 64, 65536, MAX_FRAME_LEN] {
            let h = encode_header(len).unwrap();
            assert_eq!(parse_header(h, MAX_FRAME_LEN).unwrap(), len);
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(encode_header(MAX_FRAME_LEN + 1), Err(FrameError::TooLarge { len: MAX_FRAME_LEN + 1, limit: MAX_FRAME_LEN }));
        assert_eq!(parse_header([0xff, 0, 0, 1], 100), Err(FrameError::BadZeroByte(0xff)));
        assert_eq!(parse_header([0, 0, 0, 0], 100), Err(FrameError::Empty));
        assert_eq!(parse_header([0, 0, 0, 101], 100), Err(FrameError::TooLarge { len: 101, limit: 100 }));
        // A 16 MiB length prefix is refused before allocation.
        assert!(parse_header([0, 0xff, 0xff, 0xff], 8 * 1024 * 1024 + 1024).is_err());
    }
}
