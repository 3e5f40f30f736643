//! SMB2 message signing (MS-SMB2 3.1.4.1 signing, 3.1.5.1 verifying).

use aes::Aes128;
use aes_gcm::aead::AeadInOut;
use aes_gcm::Aes128Gcm;
use cmac::Cmac;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::error::CryptoError;

/// Length of the SMB2 (sync or async) header.
pub const SMB2_HEADER_LEN: usize = 64;
/// Offset of the Signature field in the SMB2 header.
pub const SIGNATURE_OFFSET: usize = 48;
/// Length of the Signature field.
pub const SIGNATURE_LEN: usize = 16;

const FLAGS_OFFSET: usize = 16;
const COMMAND_OFFSET: usize = 12;
const MESSAGE_ID_OFFSET: usize = 24;
const SMB2_FLAGS_SERVER_TO_REDIR: u32 = 0x0000_0001;
const SMB2_FLAGS_SIGNED: u32 = 0x0000_0008;
const SMB2_CANCEL: u16 = 0x000C;

/// Signing algorithm, with the ids of SMB2_SIGNING_CAPABILITIES (MS-SMB2 2.2.3.1.7).
///
/// 2.0.2/2.1 always use HMAC-SHA256, 3.0/3.0.2 AES-CMAC, 3.1.1 the negotiated algorithm or
/// AES-CMAC when no SIGNING_CAPABILITIES context was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// HMAC-SHA256 truncated to 16 bytes (id 0).
    HmacSha256,
    /// AES-128-CMAC (id 1).
    AesCmac,
    /// AES-128-GMAC (id 2).
    AesGmac,
}

impl SigningAlgorithm {
    /// The SIGNING_CAPABILITIES wire id.
    #[must_use]
    pub fn wire_id(self) -> u16 {
        match self {
            Self::HmacSha256 => 0,
            Self::AesCmac => 1,
            Self::AesGmac => 2,
        }
    }

    /// The algorithm a connection signs with (MS-SMB2 3.1.4.1): HMAC-SHA256 for 2.0.2/2.1,
    /// AES-CMAC for 3.0/3.0.2, and for 3.1.1 the algorithm negotiated in
    /// SMB2_SIGNING_CAPABILITIES, or AES-CMAC when none was.
    ///
    /// # Errors
    /// [`CryptoError::UnknownDialect`] for any other dialect.
    pub fn for_dialect(
        dialect: super::kdf::Dialect,
        negotiated: Option<SigningAlgorithm>,
    ) -> Result<Self, CryptoError> {
        use super::kdf::Dialect;
        match dialect {
            Dialect::SMB2_0_2 | Dialect::SMB2_1 => Ok(Self::HmacSha256),
            Dialect::SMB3_0 | Dialect::SMB3_0_2 => Ok(Self::AesCmac),
            Dialect::SMB3_1_1 => Ok(negotiated.unwrap_or(Self::AesCmac)),
            Dialect(other) => Err(CryptoError::UnknownDialect(other)),
        }
    }

    /// Parses a SIGNING_CAPABILITIES id.
    ///
    /// # Errors
    /// [`CryptoError::UnknownSigningAlgorithm`] for an id other than 0, 1, 2.
    pub fn from_wire(id: u16) -> Result<Self, CryptoError> {
        match id {
            0 => Ok(Self::HmacSha256),
            1 => Ok(Self::AesCmac),
            2 => Ok(Self::AesGmac),
            other => Err(CryptoError::UnknownSigningAlgorithm(other)),
        }
    }
}

enum Mac16 {
    HmacSha256(Hmac<Sha256>),
    AesCmac(Cmac<Aes128>),
    AesGmac(Aes128Gcm),
}

/// Signs and verifies SMB2 messages with one key. The key schedule (HMAC pads, AES round keys,
/// GHASH key) is computed once in [`Signer::new`]; each message then clones the keyed state.
///
/// Every method takes exactly one SMB2 message: for a compound chain, the slice from this
/// message's header to the next one's (padding included), or to the end for the last.
pub struct Signer {
    alg: SigningAlgorithm,
    mac: Mac16,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn too_short(len: usize) -> CryptoError {
    CryptoError::TooShort {
        len,
        min: SMB2_HEADER_LEN,
    }
}

fn read_u32(msg: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = msg.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

fn read_u16(msg: &[u8], at: usize) -> Option<u16> {
    let b: [u8; 2] = msg.get(at..at + 2)?.try_into().ok()?;
    Some(u16::from_le_bytes(b))
}

/// The AES-GMAC nonce of MS-SMB2 3.1.4.1: MessageId (8 bytes as in the header, little endian),
/// then a 32-bit little-endian word with bit 0 set for a message sent by the server
/// (SMB2_FLAGS_SERVER_TO_REDIR) and bit 1 set for an SMB2 CANCEL request.
fn gmac_nonce(msg: &[u8]) -> Option<[u8; 12]> {
    let flags = read_u32(msg, FLAGS_OFFSET)?;
    let command = read_u16(msg, COMMAND_OFFSET)?;
    let is_response = flags & SMB2_FLAGS_SERVER_TO_REDIR != 0;
    let mut info: u32 = 0;
    if is_response {
        info |= 1;
    }
    if command == SMB2_CANCEL && !is_response {
        info |= 2;
    }
    let mut nonce = [0u8; 12];
    nonce
        .get_mut(..8)?
        .copy_from_slice(msg.get(MESSAGE_ID_OFFSET..MESSAGE_ID_OFFSET + 8)?);
    nonce.get_mut(8..)?.copy_from_slice(&info.to_le_bytes());
    Some(nonce)
}

impl Signer {
    /// Builds a signer. HMAC-SHA256 takes the 2.x signing key (the session key, any length);
    /// AES-CMAC and AES-GMAC take a 16-byte key.
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] for a CMAC/GMAC key that is not 16 bytes, or an empty key.
    pub fn new(alg: SigningAlgorithm, key: &[u8]) -> Result<Self, CryptoError> {
        let bad = |expected| CryptoError::BadKeyLength {
            expected,
            got: key.len(),
        };
        if key.is_empty() {
            return Err(bad(16));
        }
        let mac = match alg {
            SigningAlgorithm::HmacSha256 => Mac16::HmacSha256(
                <Hmac<Sha256> as KeyInit>::new_from_slice(key).map_err(|_| bad(16))?,
            ),
            SigningAlgorithm::AesCmac => {
                Mac16::AesCmac(<Cmac<Aes128> as KeyInit>::new_from_slice(key).map_err(|_| bad(16))?)
            }
            SigningAlgorithm::AesGmac => {
                Mac16::AesGmac(<Aes128Gcm as KeyInit>::new_from_slice(key).map_err(|_| bad(16))?)
            }
        };
        Ok(Self { alg, mac })
    }

    /// The algorithm this signer uses.
    #[must_use]
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// MAC over `msg`, whose Signature field the caller has already zeroed.
    fn compute(&self, msg: &[u8]) -> Option<[u8; SIGNATURE_LEN]> {
        let mut out = [0u8; SIGNATURE_LEN];
        match &self.mac {
            Mac16::HmacSha256(m) => {
                let mut m = m.clone();
                m.update(msg);
                let full = m.finalize().into_bytes();
                out.copy_from_slice(full.get(..SIGNATURE_LEN)?);
            }
            Mac16::AesCmac(m) => {
                let mut m = m.clone();
                m.update(msg);
                out.copy_from_slice(m.finalize().into_bytes().get(..SIGNATURE_LEN)?);
            }
            Mac16::AesGmac(gcm) => {
                // GMAC = GCM with an empty plaintext and the message as associated data.
                let nonce = gmac_nonce(msg)?;
                let nonce = aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::from(nonce);
                let empty: &mut [u8] = &mut [];
                let tag = gcm.encrypt_inout_detached(&nonce, msg, empty.into()).ok()?;
                out.copy_from_slice(tag.get(..SIGNATURE_LEN)?);
            }
        }
        Some(out)
    }

    /// Signs one SMB2 message in place: sets SMB2_FLAGS_SIGNED in the header Flags, zeroes the
    /// Signature field (header bytes 48..64), computes the MAC over the whole message and writes
    /// it there. The caller sets every other header field (MessageId, SessionId, the
    /// SERVER_TO_REDIR flag, NextCommand, ...) before signing.
    ///
    /// # Errors
    /// [`CryptoError::TooShort`] if `msg` is shorter than the 64-byte header; `msg` is then left
    /// untouched. [`CryptoError::TooLarge`] if GCM refuses the length (over 2^61 bytes).
    pub fn sign(&self, msg: &mut [u8]) -> Result<(), CryptoError> {
        let len = msg.len();
        if len < SMB2_HEADER_LEN {
            return Err(too_short(len));
        }
        let flags = read_u32(msg, FLAGS_OFFSET).ok_or_else(|| too_short(len))?;
        msg.get_mut(FLAGS_OFFSET..FLAGS_OFFSET + 4)
            .ok_or_else(|| too_short(len))?
            .copy_from_slice(&(flags | SMB2_FLAGS_SIGNED).to_le_bytes());
        let sig_field = SIGNATURE_OFFSET..SIGNATURE_OFFSET + SIGNATURE_LEN;
        msg.get_mut(sig_field.clone())
            .ok_or_else(|| too_short(len))?
            .fill(0);
        let sig = self.compute(msg).ok_or(CryptoError::TooLarge(len))?;
        msg.get_mut(sig_field)
            .ok_or_else(|| too_short(len))?
            .copy_from_slice(&sig);
        Ok(())
    }

    /// Verifies the signature of one SMB2 message in constant time.
    ///
    /// Takes `&mut` because GMAC needs the message contiguous with a zeroed Signature field:
    /// the field is zeroed for the computation and **restored before returning**, so on return
    /// `msg` holds exactly what it held on entry, whatever the outcome. Messages shorter than
    /// the 64-byte header give `false`.
    #[must_use]
    pub fn verify(&self, msg: &mut [u8]) -> bool {
        if msg.len() < SMB2_HEADER_LEN {
            return false;
        }
        let sig_field = SIGNATURE_OFFSET..SIGNATURE_OFFSET + SIGNATURE_LEN;
        let mut received = [0u8; SIGNATURE_LEN];
        match msg.get_mut(sig_field.clone()) {
            Some(field) => {
                received.copy_from_slice(field);
                field.fill(0);
            }
            None => return false,
        }
        let computed = self.compute(msg);
        if let Some(field) = msg.get_mut(sig_field) {
            field.copy_from_slice(&received);
        }
        match computed {
            Some(c) => bool::from(c.ct_eq(&received)),
            None => false,
        }
    }
}
