//! Negotiate request (MS-SMBD 2.2.1, 20 bytes) and response (2.2.2, 32 bytes).

use super::{status, Reader, WireError, Writer, MIN_FRAGMENTED_SIZE, MIN_RECEIVE_SIZE, SMBD_VERSION_1};

pub const NEGOTIATE_REQUEST_LEN: usize = 20;
pub const NEGOTIATE_RESPONSE_LEN: usize = 32;

/// The first message on a connection, sent by the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiateRequest {
    pub min_version: u16,
    pub max_version: u16,
    pub credits_requested: u16,
    pub preferred_send_size: u32,
    pub max_receive_size: u32,
    pub max_fragmented_size: u32,
}

impl NegotiateRequest {
    /// Parses the fixed fields only; [`NegotiateRequest::validate`] applies the spec's rules.
    /// Extra trailing bytes are ignored (the spec only requires "at least 20 bytes").
    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, NEGOTIATE_REQUEST_LEN, "negotiate request")?;
        let min_version = r.u16()?;
        let max_version = r.u16()?;
        let _reserved = r.u16()?;
        Ok(NegotiateRequest {
            min_version,
            max_version,
            credits_requested: r.u16()?,
            preferred_send_size: r.u32()?,
            max_receive_size: r.u32()?,
            max_fragmented_size: r.u32()?,
        })
    }

    /// Decodes and validates (MS-SMBD 3.1.5.6).
    pub fn decode_valid(buf: &[u8]) -> Result<Self, WireError> {
        let req = Self::decode(buf)?;
        req.validate()?;
        Ok(req)
    }

    /// The checks of MS-SMBD 3.1.5.6. [`WireError::UnsupportedVersion`] must be answered with a
    /// STATUS_NOT_SUPPORTED response; every other error terminates the connection.
    pub fn validate(&self) -> Result<(), WireError> {
        if !(self.min_version <= SMBD_VERSION_1 && SMBD_VERSION_1 <= self.max_version) {
            return Err(WireError::UnsupportedVersion { min: self.min_version, max: self.max_version });
        }
        if self.credits_requested == 0 {
            return Err(WireError::ZeroCreditsRequested);
        }
        if self.max_receive_size < MIN_RECEIVE_SIZE {
            return Err(WireError::MaxReceiveSizeTooSmall(self.max_receive_size));
        }
        if self.max_fragmented_size < MIN_FRAGMENTED_SIZE {
            return Err(WireError::MaxFragmentedSizeTooSmall(self.max_fragmented_size));
        }
        Ok(())
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf, NEGOTIATE_REQUEST_LEN, "negotiate request")?;
        w.u16(self.min_version);
        w.u16(self.max_version);
        w.u16(0);
        w.u16(self.credits_requested);
        w.u32(self.preferred_send_size);
        w.u32(self.max_receive_size);
        w.u32(self.max_fragmented_size);
        Ok(NEGOTIATE_REQUEST_LEN)
    }

    pub fn to_bytes(&self) -> [u8; NEGOTIATE_REQUEST_LEN] {
        let mut b = [0u8; NEGOTIATE_REQUEST_LEN];
        // Cannot fail: the array has exactly the needed length.
        let _ = self.encode(&mut b);
        b
    }
}

/// The responder's answer to a [`NegotiateRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiateResponse {
    pub min_version: u16,
    pub max_version: u16,
    pub negotiated_version: u16,
    pub credits_requested: u16,
    pub credits_granted: u16,
    pub status: u32,
    pub max_read_write_size: u32,
    pub preferred_send_size: u32,
    pub max_receive_size: u32,
    pub max_fragmented_size: u32,
}

impl NegotiateResponse {
    /// The failure response of MS-SMBD 3.1.5.3: versions set, everything else zero.
    pub fn failure(status: u32) -> Self {
        NegotiateResponse {
            min_version: SMBD_VERSION_1,
            max_version: SMBD_VERSION_1,
            negotiated_version: 0,
            credits_requested: 0,
            credits_granted: 0,
            status,
            max_read_write_size: 0,
            preferred_send_size: 0,
            max_receive_size: 0,
            max_fragmented_size: 0,
        }
    }

    pub fn decode(buf: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(buf, NEGOTIATE_RESPONSE_LEN, "negotiate response")?;
        let min_version = r.u16()?;
        let max_version = r.u16()?;
        let negotiated_version = r.u16()?;
        let _reserved = r.u16()?;
        Ok(NegotiateResponse {
            min_version,
            max_version,
            negotiated_version,
            credits_requested: r.u16()?,
            credits_granted: r.u16()?,
            status: r.u32()?,
            max_read_write_size: r.u32()?,
            preferred_send_size: r.u32()?,
            max_receive_size: r.u32()?,
            max_fragmented_size: r.u32()?,
        })
    }

    /// The checks of MS-SMBD 3.1.5.7 that do not depend on local state (the
    /// PreferredSendSize bound against our MaxReceiveSize is checked by the state machine).
    pub fn validate(&self) -> Result<(), WireError> {
        if self.status != status::SUCCESS {
            return Err(WireError::NegotiateFailed(self.status));
        }
        if self.negotiated_version != SMBD_VERSION_1 {
            return Err(WireError::BadNegotiatedVersion(self.negotiated_version));
        }
        if self.max_receive_size < MIN_RECEIVE_SIZE {
            return Err(WireError::MaxReceiveSizeTooSmall(self.max_receive_size));
        }
        if self.max_fragmented_size < MIN_FRAGMENTED_SIZE {
            return Err(WireError::MaxFragmentedSizeTooSmall(self.max_fragmented_size));
        }
        if self.credits_granted == 0 {
            return Err(WireError::ZeroCreditsGranted);
        }
        if self.credits_requested == 0 {
            return Err(WireError::ZeroCreditsRequested);
        }
        Ok(())
    }

    pub fn decode_valid(buf: &[u8]) -> Result<Self, WireError> {
        let r = Self::decode(buf)?;
        r.validate()?;
        Ok(r)
    }

    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let mut w = Writer::new(buf, NEGOTIATE_RESPONSE_LEN, "negotiate response")?;
        w.u16(self.min_version);
        w.u16(self.max_version);
        w.u16(self.negotiated_version);
        w.u16(0);
        w.u16(self.credits_requested);
        w.u16(self.credits_granted);
        w.u32(self.status);
        w.u32(self.max_read_write_size);
        w.u32(self.preferred_send_size);
        w.u32(self.max_receive_size);
        w.u32(self.max_fragmented_size);
        Ok(NEGOTIATE_RESPONSE_LEN)
    }

    pub fn to_bytes(&self) -> [u8; NEGOTIATE_RESPONSE_LEN] {
        let mut b = [0u8; NEGOTIATE_RESPONSE_LEN];
        let _ = self.encode(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cifs_request() -> NegotiateRequest {
        NegotiateRequest {
            min_version: 0x100,
            max_version: 0x100,
            credits_requested: 255,
            preferred_send_size: 1364,
            max_receive_size: 1364,
            max_fragmented_size: 173910,
        }
    }

    #[test]
    fn request_layout_is_exact() {
        let b = cifs_request().to_bytes();
        assert_eq!(
            b,
            [0x00, 0x01, 0x00, 0x01, 0, 0, 0xff, 0x00, 0x54, 0x05, 0, 0, 0x54, 0x05, 0, 0, 0x56, 0xa7, 0x02, 0x00]
        );
        assert_eq!(NegotiateRequest::decode_valid(&b), Ok(cifs_request()));
    }

    #[test]
    fn request_rules() {
        let mut r = cifs_request();
        r.min_version = 0x200;
        r.max_version = 0x300;
        assert_eq!(r.validate(), Err(WireError::UnsupportedVersion { min: 0x200, max: 0x300 }));
        // A range that includes 1.0 is fine.
        r.min_version = 0x0001;
        assert_eq!(r.validate(), Ok(()));
        let mut r = cifs_request();
        r.credits_requested = 0;
        assert_eq!(r.validate(), Err(WireError::ZeroCreditsRequested));
        let mut r = cifs_request();
        r.max_receive_size = 127;
        assert_eq!(r.validate(), Err(WireError::MaxReceiveSizeTooSmall(127)));
        r.max_receive_size = 128;
        assert_eq!(r.validate(), Ok(()));
        let mut r = cifs_request();
        r.max_fragmented_size = 131_071;
        assert_eq!(r.validate(), Err(WireError::MaxFragmentedSizeTooSmall(131_071)));
        r.max_fragmented_size = 131_072;
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn short_input_is_an_error() {
        let b = cifs_request().to_bytes();
        for n in 0..NEGOTIATE_REQUEST_LEN {
            assert!(matches!(NegotiateRequest::decode(&b[..n]), Err(WireError::Truncated { .. })));
        }
        assert!(NegotiateResponse::decode(&[0u8; 31]).is_err());
        assert!(NegotiateRequest::encode(&cifs_request(), &mut [0u8; 19]).is_err());
    }

    #[test]
    fn response_round_trip_and_rules() {
        let resp = NegotiateResponse {
            min_version: 0x100,
            max_version: 0x100,
            negotiated_version: 0x100,
            credits_requested: 255,
            credits_granted: 31,
            status: 0,
            max_read_write_size: 1 << 20,
            preferred_send_size: 1364,
            max_receive_size: 1364,
            max_fragmented_size: 1 << 20,
        };
        let b = resp.to_bytes();
        assert_eq!(&b[8..12], &[0xff, 0, 31, 0]);
        assert_eq!(NegotiateResponse::decode_valid(&b), Ok(resp));
        let fail = NegotiateResponse::failure(status::NOT_SUPPORTED);
        let fb = fail.to_bytes();
        assert_eq!(&fb[12..16], &[0xbb, 0, 0, 0xc0]);
        assert_eq!(NegotiateResponse::decode_valid(&fb), Err(WireError::NegotiateFailed(status::NOT_SUPPORTED)));
        let mut r = resp;
        r.credits_granted = 0;
        assert_eq!(r.validate(), Err(WireError::ZeroCreditsGranted));
        let mut r = resp;
        r.negotiated_version = 0x200;
        assert_eq!(r.validate(), Err(WireError::BadNegotiatedVersion(0x200)));
    }
}
