//! MS-SMBD packet codecs (MS-SMBD 2.2). Pure functions over byte slices: every
//! decoder checks lengths before reading and returns a typed error, never panics.

pub mod buffer_desc;
pub mod data_transfer;
pub mod negotiate;

use thiserror::Error;

pub use buffer_desc::{BufferDescriptorV1, BUFFER_DESCRIPTOR_V1_LEN};
pub use data_transfer::{DataTransferHeader, DATA_TRANSFER_EMPTY_LEN, DATA_TRANSFER_HEADER_LEN, DATA_OFFSET, FLAG_RESPONSE_REQUESTED};
pub use negotiate::{NegotiateRequest, NegotiateResponse, NEGOTIATE_REQUEST_LEN, NEGOTIATE_RESPONSE_LEN};

/// The only protocol version MS-SMBD defines (1.0).
pub const SMBD_VERSION_1: u16 = 0x0100;
/// Smallest MaxReceiveSize a peer may announce.
pub const MIN_RECEIVE_SIZE: u32 = 128;
/// Smallest MaxFragmentedSize a peer may announce.
pub const MIN_FRAGMENTED_SIZE: u32 = 131_072;

/// NTSTATUS values that appear in the negotiate response.
pub mod status {
    pub const SUCCESS: u32 = 0x0000_0000;
    pub const NOT_SUPPORTED: u32 = 0xC000_00BB;
}

/// Why a packet could not be decoded or was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    #[error("{what}: {got} bytes, at least {need} needed")]
    Truncated { what: &'static str, need: usize, got: usize },
    #[error("buffer of {got} bytes too small to encode {what} of {need} bytes")]
    BufferTooSmall { what: &'static str, need: usize, got: usize },
    #[error("version range {min:#06x}..={max:#06x} does not include 0x0100 (STATUS_NOT_SUPPORTED)")]
    UnsupportedVersion { min: u16, max: u16 },
    #[error("negotiated version {0:#06x} is not 0x0100")]
    BadNegotiatedVersion(u16),
    #[error("CreditsRequested is 0")]
    ZeroCreditsRequested,
    #[error("CreditsGranted is 0 in the negotiate response")]
    ZeroCreditsGranted,
    #[error("MaxReceiveSize {0} is below the minimum of 128")]
    MaxReceiveSizeTooSmall(u32),
    #[error("MaxFragmentedSize {0} is below the minimum of 131072")]
    MaxFragmentedSizeTooSmall(u32),
    #[error("negotiate response carries failure status {0:#010x}")]
    NegotiateFailed(u32),
    #[error("data offset {offset} is not valid (must be >= 24 and 8-byte aligned)")]
    BadDataOffset { offset: u32 },
    #[error("data at offset {offset} length {length} exceeds the {packet_len}-byte message")]
    DataOutOfBounds { offset: u32, length: u32, packet_len: usize },
    #[error("buffer descriptor list of {0} bytes is not a multiple of 16")]
    BadDescriptorListLength(usize),
}

/// A little-endian cursor over a borrowed slice that fails instead of panicking.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
    need: usize,
}

impl<'a> Reader<'a> {
    /// Checks up front that `need` bytes are there, so the reads below cannot fail.
    pub(crate) fn new(buf: &'a [u8], need: usize, what: &'static str) -> Result<Self, WireError> {
        if buf.len() < need {
            return Err(WireError::Truncated { what, need, got: buf.len() });
        }
        Ok(Reader { buf, what, need })
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        match self.buf.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.buf = rest;
                Ok(*head)
            }
            None => Err(WireError::Truncated { what: self.what, need: self.need, got: self.buf.len() }),
        }
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        self.take::<2>().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.take::<4>().map(u32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        self.take::<8>().map(u64::from_le_bytes)
    }
}

/// A little-endian writer into a caller-owned slice.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8], need: usize, what: &'static str) -> Result<Self, WireError> {
        if buf.len() < need {
            return Err(WireError::BufferTooSmall { what, need, got: buf.len() });
        }
        Ok(Writer { buf, pos: 0 })
    }
    fn put(&mut self, bytes: &[u8]) {
        // Length checked in `new`; `get_mut` keeps this panic-free even if a caller lies.
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes())
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes())
    }
}
