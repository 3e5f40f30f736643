//! SMB2 TRANSFORM_HEADER encryption and decryption (MS-SMB2 2.2.41, 3.1.4.3, 3.3.5.2.1.1).
//!
//! Layout of the 52-byte transform header (little endian):
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 4    | ProtocolId 0xFD 'S' 'M' 'B'             |
//! | 4      | 16   | Signature = AEAD tag                    |
//! | 20     | 16   | Nonce (CCM: first 11 bytes, GCM: 12)    |
//! | 36     | 4    | OriginalMessageSize                     |
//! | 40     | 2    | Reserved                                |
//! | 42     | 2    | Flags/EncryptionAlgorithm = 0x0001      |
//! | 44     | 8    | SessionId                               |
//!
//! The AEAD's associated data is bytes 20..52 (Nonce to the end of the header); the plaintext is
//! the SMB2 message (or compound chain) that follows.
//!
//! # Nonces
//! A nonce must never repeat under one key. [`Sealer`] builds each nonce from a per-key 64-bit
//! counter (little endian, in the first 8 bytes; an atomic, so one `Sealer` can be shared by all
//! channels of a session through an `Arc`) followed by random bytes chosen once when the
//! `Sealer` is built: 4 for GCM (12-byte nonce), 3 for CCM (11-byte nonce); the rest of the
//! 16-byte Nonce field is zero as MS-SMB2 2.2.41 requires. The counter alone guarantees
//! uniqueness within one `Sealer`; it is never allowed to wrap ([`CryptoError::NonceExhausted`]
//! after 2^64 - 1 messages). The random part separates two `Sealer`s mistakenly built for the
//! same key (a programming error: build one per key and share it), which would otherwise reuse
//! nonces from the first message on.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use aes::{Aes128Enc, Aes256Enc};
use aes_gcm::aead::array::typenum::Unsigned;
use aes_gcm::aead::consts::{U11, U16};
use aes_gcm::aead::{AeadCore, AeadInOut, KeyInit};
use ccm::Ccm;

use super::error::CryptoError;
use super::gcm::{DecryptState, Gcm};

/// Size of the SMB2 TRANSFORM_HEADER.
pub const TRANSFORM_HEADER_LEN: usize = 52;
/// ProtocolId of the transform header: 0xFD 'S' 'M' 'B' (0x424D53FD little endian).
pub const TRANSFORM_PROTOCOL_ID: [u8; 4] = [0xFD, b'S', b'M', b'B'];
/// The only valid Flags/EncryptionAlgorithm value: Encrypted (3.1.1) / AES-128-CCM (3.0.x).
pub const TRANSFORM_FLAG_ENCRYPTED: u16 = 0x0001;

const SIGNATURE: Range<usize> = 4..20;
const NONCE: Range<usize> = 20..36;
const ORIGINAL_SIZE: Range<usize> = 36..40;
const RESERVED: Range<usize> = 40..42;
const FLAGS: Range<usize> = 42..44;
const SESSION_ID: Range<usize> = 44..52;
const AAD: Range<usize> = 20..52;

type Ccm128 = Ccm<Aes128Enc, U16, U11>;
type Ccm256 = Ccm<Aes256Enc, U16, U11>;
type Gcm128 = Gcm<Aes128Enc>;
type Gcm256 = Gcm<Aes256Enc>;

/// Encryption cipher with the ids of SMB2_ENCRYPTION_CAPABILITIES (MS-SMB2 2.2.3.1.2).
/// 3.0/3.0.2 always use AES-128-CCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Cipher {
    /// AES-128-CCM, 11-byte nonce.
    Aes128Ccm = 1,
    /// AES-128-GCM, 12-byte nonce.
    Aes128Gcm = 2,
    /// AES-256-CCM, 11-byte nonce.
    Aes256Ccm = 3,
    /// AES-256-GCM, 12-byte nonce.
    Aes256Gcm = 4,
}

impl Cipher {
    /// The wire id.
    #[must_use]
    pub fn wire_id(self) -> u16 {
        self as u16
    }

    /// Parses a wire id.
    ///
    /// # Errors
    /// [`CryptoError::UnknownCipher`] for ids other than 1..=4.
    pub fn from_wire(id: u16) -> Result<Self, CryptoError> {
        match id {
            1 => Ok(Self::Aes128Ccm),
            2 => Ok(Self::Aes128Gcm),
            3 => Ok(Self::Aes256Ccm),
            4 => Ok(Self::Aes256Gcm),
            other => Err(CryptoError::UnknownCipher(other)),
        }
    }

    /// Key length in bytes (16 or 32).
    #[must_use]
    pub fn key_len(self) -> usize {
        match self {
            Self::Aes128Ccm | Self::Aes128Gcm => 16,
            Self::Aes256Ccm | Self::Aes256Gcm => 32,
        }
    }

    /// Bytes of the 16-byte Nonce field the AEAD uses (11 for CCM, 12 for GCM).
    #[must_use]
    pub fn nonce_len(self) -> usize {
        match self {
            Self::Aes128Ccm | Self::Aes256Ccm => 11,
            Self::Aes128Gcm | Self::Aes256Gcm => 12,
        }
    }
}

/// A parsed transform header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformHeader {
    /// The AEAD tag.
    pub signature: [u8; 16],
    /// The whole 16-byte Nonce field.
    pub nonce: [u8; 16],
    /// Size of the encrypted SMB2 message that follows.
    pub original_message_size: u32,
    /// Flags/EncryptionAlgorithm (always 0x0001 once parsed).
    pub flags: u16,
    /// Session whose key decrypts the message.
    pub session_id: u64,
}

fn field<const N: usize>(buf: &[u8], r: Range<usize>) -> Result<[u8; N], CryptoError> {
    buf.get(r)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(CryptoError::TooShort {
            len: buf.len(),
            min: TRANSFORM_HEADER_LEN,
        })
}

/// Parses and checks the transform header of one received message, so the caller can find the
/// session (and its [`Opener`]) by `session_id` before decrypting.
///
/// `buf` is the whole message as received (transform header and ciphertext, no transport
/// framing). Checks, per MS-SMB2 3.3.5.2.1.1: the message is longer than the header, the
/// ProtocolId, Flags/EncryptionAlgorithm == 0x0001, and OriginalMessageSize equal to the number
/// of bytes after the header.
///
/// # Errors
/// [`CryptoError::TooShort`], [`CryptoError::BadProtocolId`],
/// [`CryptoError::BadTransformFlags`], [`CryptoError::SizeMismatch`].
pub fn parse_transform_header(buf: &[u8]) -> Result<TransformHeader, CryptoError> {
    parse_header_of(buf, buf.len())
}

/// [`parse_transform_header`] of a message of `total` bytes (framing excluded) of which
/// `buf` holds at least the first [`TRANSFORM_HEADER_LEN`].
fn parse_header_of(buf: &[u8], total: usize) -> Result<TransformHeader, CryptoError> {
    if total <= TRANSFORM_HEADER_LEN {
        return Err(CryptoError::TooShort {
            len: total,
            min: TRANSFORM_HEADER_LEN + 1,
        });
    }
    let protocol: [u8; 4] = field(buf, 0..4)?;
    if protocol != TRANSFORM_PROTOCOL_ID {
        return Err(CryptoError::BadProtocolId(protocol));
    }
    let flags = u16::from_le_bytes(field(buf, FLAGS)?);
    if flags != TRANSFORM_FLAG_ENCRYPTED {
        return Err(CryptoError::BadTransformFlags(flags));
    }
    let original_message_size = u32::from_le_bytes(field(buf, ORIGINAL_SIZE)?);
    let actual = total - TRANSFORM_HEADER_LEN;
    if usize::try_from(original_message_size).ok() != Some(actual) {
        return Err(CryptoError::SizeMismatch {
            declared: original_message_size,
            actual,
        });
    }
    Ok(TransformHeader {
        signature: field(buf, SIGNATURE)?,
        nonce: field(buf, NONCE)?,
        original_message_size,
        flags,
        session_id: u64::from_le_bytes(field(buf, SESSION_ID)?),
    })
}

/// One expanded AEAD key. GCM goes through [`Gcm`] (one pass in L1-sized pieces; see
/// `gcm.rs` for why not `aes_gcm`), CCM through the `ccm` crate.
enum AeadKey {
    Ccm128(Ccm128),
    Gcm128(Gcm128),
    Ccm256(Ccm256),
    Gcm256(Gcm256),
}

fn new_aead<A: KeyInit>(key: &[u8], cipher: Cipher) -> Result<A, CryptoError> {
    A::new_from_slice(key).map_err(|_| CryptoError::BadKeyLength {
        expected: cipher.key_len(),
        got: key.len(),
    })
}

fn new_aes<A: aes::cipher::KeyInit>(key: &[u8], cipher: Cipher) -> Result<A, CryptoError> {
    A::new_from_slice(key).map_err(|_| CryptoError::BadKeyLength {
        expected: cipher.key_len(),
        got: key.len(),
    })
}

/// The 12 bytes of the 16-byte Nonce field that GCM uses.
fn gcm_nonce(nonce16: &[u8; 16]) -> &[u8; 12] {
    let (n, _) = nonce16.split_first_chunk::<12>().unwrap_or((&[0; 12], &[]));
    n
}

fn gcm_verdict(ok: bool) -> Result<(), CryptoError> {
    if ok {
        Ok(())
    } else {
        Err(CryptoError::AuthenticationFailed)
    }
}

fn aead_nonce<A: AeadCore>(nonce16: &[u8; 16]) -> Result<aes_gcm::aead::Nonce<A>, CryptoError> {
    let n = A::NonceSize::USIZE;
    nonce16
        .get(..n)
        .and_then(|s| aes_gcm::aead::Nonce::<A>::try_from(s).ok())
        .ok_or(CryptoError::TooShort { len: 16, min: n })
}

fn encrypt_with<A: AeadInOut>(
    a: &A,
    nonce16: &[u8; 16],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; 16], CryptoError> {
    let nonce = aead_nonce::<A>(nonce16)?;
    let len = buf.len();
    let tag = a
        .encrypt_inout_detached(&nonce, aad, buf.into())
        .map_err(|_| CryptoError::TooLarge(len))?;
    <[u8; 16]>::try_from(tag.as_slice()).map_err(|_| CryptoError::AuthenticationFailed)
}

fn decrypt_with<A: AeadInOut>(
    a: &A,
    nonce16: &[u8; 16],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; 16],
) -> Result<(), CryptoError> {
    let nonce = aead_nonce::<A>(nonce16)?;
    let tag = aes_gcm::aead::Tag::<A>::try_from(&tag[..])
        .map_err(|_| CryptoError::AuthenticationFailed)?;
    a.decrypt_inout_detached(&nonce, aad, buf.into(), &tag)
        .map_err(|_| CryptoError::AuthenticationFailed)
}

impl AeadKey {
    fn new(cipher: Cipher, key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != cipher.key_len() {
            return Err(CryptoError::BadKeyLength {
                expected: cipher.key_len(),
                got: key.len(),
            });
        }
        Ok(match cipher {
            Cipher::Aes128Ccm => Self::Ccm128(new_aead(key, cipher)?),
            Cipher::Aes128Gcm => Self::Gcm128(Gcm::new(new_aes(key, cipher)?)),
            Cipher::Aes256Ccm => Self::Ccm256(new_aead(key, cipher)?),
            Cipher::Aes256Gcm => Self::Gcm256(Gcm::new(new_aes(key, cipher)?)),
        })
    }

    fn encrypt(
        &self,
        nonce16: &[u8; 16],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; 16], CryptoError> {
        match self {
            Self::Ccm128(a) => encrypt_with(a, nonce16, aad, buf),
            Self::Gcm128(g) => Ok(g.encrypt(gcm_nonce(nonce16), aad, buf)),
            Self::Ccm256(a) => encrypt_with(a, nonce16, aad, buf),
            Self::Gcm256(g) => Ok(g.encrypt(gcm_nonce(nonce16), aad, buf)),
        }
    }

    fn decrypt(
        &self,
        nonce16: &[u8; 16],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> Result<(), CryptoError> {
        match self {
            Self::Ccm128(a) => decrypt_with(a, nonce16, aad, buf, tag),
            Self::Gcm128(g) => gcm_verdict(g.decrypt(gcm_nonce(nonce16), aad, buf, tag)),
            Self::Ccm256(a) => decrypt_with(a, nonce16, aad, buf, tag),
            Self::Gcm256(g) => gcm_verdict(g.decrypt(gcm_nonce(nonce16), aad, buf, tag)),
        }
    }
}

/// Encrypts messages with one key (the session's server-to-client key, `server_out`).
/// Built once per key; `Send + Sync`, share it with an `Arc`. See the module documentation for
/// how nonces are made.
pub struct Sealer {
    cipher: Cipher,
    key: AeadKey,
    salt: [u8; 4],
    counter: AtomicU64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("cipher", &self.cipher)
            .field("sealed", &self.counter.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// Expands `key` (16 bytes for AES-128, 32 for AES-256) and draws the random nonce part.
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`], or [`CryptoError::Rng`] if the OS has no randomness.
    pub fn new(cipher: Cipher, key: &[u8]) -> Result<Self, CryptoError> {
        let key = AeadKey::new(cipher, key)?;
        let mut salt = [0u8; 4];
        getrandom::fill(&mut salt).map_err(|_| CryptoError::Rng)?;
        Ok(Self {
            cipher,
            key,
            salt,
            counter: AtomicU64::new(0),
        })
    }

    /// The cipher of this key.
    #[must_use]
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    fn next_nonce(&self) -> Result<[u8; 16], CryptoError> {
        let n = self
            .counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_add(1))
            .map_err(|_| CryptoError::NonceExhausted)?;
        let mut nonce = [0u8; 16];
        let (ctr, rest) = nonce.split_at_mut(8);
        ctr.copy_from_slice(&n.to_le_bytes());
        let random_len = self.cipher.nonce_len() - 8;
        for (d, s) in rest.iter_mut().zip(self.salt.iter()).take(random_len) {
            *d = *s;
        }
        Ok(nonce)
    }

    /// Encrypts in place. `buf` holds 52 bytes reserved for the transform header followed by
    /// the SMB2 message (or compound chain) to encrypt; the caller reserves them when building
    /// the response so that nothing is moved. The header is filled in (ProtocolId, Nonce,
    /// OriginalMessageSize, Reserved = 0, Flags = Encrypted, SessionId), the message is
    /// encrypted where it lies, and the tag is written to the Signature field.
    ///
    /// # Errors
    /// [`CryptoError::TooShort`] if no message follows the 52 bytes,
    /// [`CryptoError::TooLarge`] above 4 GiB - 1, [`CryptoError::NonceExhausted`].
    /// On error `buf` is unchanged except in the `TooLarge` case from the AEAD itself.
    pub fn seal(&self, session_id: u64, buf: &mut [u8]) -> Result<(), CryptoError> {
        check_seal_len(buf)?;
        let nonce = self.next_nonce()?;
        self.seal_with_nonce(&nonce, session_id, buf)
    }

    /// [`Sealer::seal`] with a given 16-byte Nonce field. Only for known-answer tests: reusing a
    /// nonce under one key destroys confidentiality and (for GCM) integrity.
    pub(crate) fn seal_with_nonce(
        &self,
        nonce: &[u8; 16],
        session_id: u64,
        buf: &mut [u8],
    ) -> Result<(), CryptoError> {
        let size = check_seal_len(buf)?;
        let (hdr, payload) = buf.split_at_mut(TRANSFORM_HEADER_LEN);
        put(hdr, 0..4, &TRANSFORM_PROTOCOL_ID)?;
        put(hdr, NONCE, nonce)?;
        put(hdr, ORIGINAL_SIZE, &size.to_le_bytes())?;
        put(hdr, RESERVED, &[0, 0])?;
        put(hdr, FLAGS, &TRANSFORM_FLAG_ENCRYPTED.to_le_bytes())?;
        put(hdr, SESSION_ID, &session_id.to_le_bytes())?;
        let aad = hdr.get(AAD).ok_or(CryptoError::TooShort {
            len: hdr.len(),
            min: TRANSFORM_HEADER_LEN,
        })?;
        let tag = self.key.encrypt(nonce, aad, payload)?;
        put(hdr, SIGNATURE, &tag)
    }
}

fn check_seal_len(buf: &[u8]) -> Result<u32, CryptoError> {
    if buf.len() <= TRANSFORM_HEADER_LEN {
        return Err(CryptoError::TooShort {
            len: buf.len(),
            min: TRANSFORM_HEADER_LEN + 1,
        });
    }
    u32::try_from(buf.len() - TRANSFORM_HEADER_LEN).map_err(|_| CryptoError::TooLarge(buf.len()))
}

fn put(hdr: &mut [u8], r: Range<usize>, v: &[u8]) -> Result<(), CryptoError> {
    let len = hdr.len();
    match hdr.get_mut(r) {
        Some(dst) if dst.len() == v.len() => {
            dst.copy_from_slice(v);
            Ok(())
        }
        _ => Err(CryptoError::TooShort {
            len,
            min: TRANSFORM_HEADER_LEN,
        }),
    }
}

/// A message being opened as it arrives ([`Opener::open_begin`]).
pub struct OpenInProgress {
    header: TransformHeader,
    /// The authenticated part of the header (Nonce to SessionId).
    aad: [u8; 32],
    /// GCM's running state; `None` for CCM (decrypted at the end).
    gcm: Option<DecryptState>,
}

impl std::fmt::Debug for OpenInProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenInProgress")
            .field("session_id", &self.header.session_id)
            .field("size", &self.header.original_message_size)
            .finish_non_exhaustive()
    }
}

impl OpenInProgress {
    /// The SessionId of the message's transform header.
    #[must_use]
    pub fn session_id(&self) -> u64 {
        self.header.session_id
    }
}

/// Decrypts messages with one key (the session's client-to-server key, `server_in`).
/// Built once per key; `Send + Sync`.
pub struct Opener {
    cipher: Cipher,
    key: AeadKey,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl Opener {
    /// Expands `key` (16 bytes for AES-128, 32 for AES-256).
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`].
    pub fn new(cipher: Cipher, key: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self {
            cipher,
            key: AeadKey::new(cipher, key)?,
        })
    }

    /// The cipher of this key.
    #[must_use]
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Starts opening a message of `total` bytes (transform header and ciphertext, no transport
    /// framing) while it is still arriving, so that each part is decrypted while it is in the
    /// cache from being received: `header` holds its first [`TRANSFORM_HEADER_LEN`] bytes (or
    /// more). Give the payload (the bytes after the header) in order to [`Opener::open_more`],
    /// then the whole message to [`Opener::open_end`]. GCM decrypts each part at once; CCM
    /// (whose tag covers the plaintext, and whose crate has no incremental interface) decrypts
    /// it all in `open_end`.
    ///
    /// # Errors
    /// The header errors of [`parse_transform_header`].
    pub fn open_begin(&self, header: &[u8], total: usize) -> Result<OpenInProgress, CryptoError> {
        let th = parse_header_of(header, total)?;
        let aad = header.get(AAD).ok_or(CryptoError::TooShort {
            len: header.len(),
            min: TRANSFORM_HEADER_LEN,
        })?;
        let gcm = match &self.key {
            AeadKey::Gcm128(g) => Some(g.begin_decrypt(gcm_nonce(&th.nonce), aad)),
            AeadKey::Gcm256(g) => Some(g.begin_decrypt(gcm_nonce(&th.nonce), aad)),
            AeadKey::Ccm128(_) | AeadKey::Ccm256(_) => None,
        };
        Ok(OpenInProgress {
            header: th,
            aad: field(header, AAD)?,
            gcm,
        })
    }

    /// Decrypts the next part of the payload of the message begun with [`Opener::open_begin`]
    /// in place (GCM; nothing for CCM). Every part but the last must be a multiple of 16 bytes
    /// long (else [`Opener::open_end`] fails). The bytes are not authentic before `open_end`
    /// says so: nothing may act on them before.
    pub fn open_more(&self, st: &mut OpenInProgress, part: &mut [u8]) {
        let Some(g) = st.gcm.as_mut() else { return };
        match &self.key {
            AeadKey::Gcm128(k) => k.decrypt_more(g, part),
            AeadKey::Gcm256(k) => k.decrypt_more(g, part),
            // (open_begin made no GCM state for a CCM key.)
            AeadKey::Ccm128(_) | AeadKey::Ccm256(_) => {}
        }
    }

    /// Ends the opening begun with [`Opener::open_begin`]: `buf` is the whole message, whose
    /// payload went through [`Opener::open_more`] exactly once, in order. Returns what
    /// [`Opener::open`] returns.
    ///
    /// # Errors
    /// [`CryptoError::SizeMismatch`] if `buf` is not the message begun, and
    /// [`CryptoError::AuthenticationFailed`] for a bad tag or payload parts that were not all of
    /// it (the payload is then garbage, as after a failed [`Opener::open`]).
    pub fn open_end(
        &self,
        st: OpenInProgress,
        buf: &mut [u8],
    ) -> Result<(u64, Range<usize>), CryptoError> {
        let total = buf.len();
        let declared = st.header.original_message_size;
        if total
            .checked_sub(TRANSFORM_HEADER_LEN)
            .and_then(|n| u32::try_from(n).ok())
            != Some(declared)
        {
            return Err(CryptoError::SizeMismatch {
                declared,
                actual: total.saturating_sub(TRANSFORM_HEADER_LEN),
            });
        }
        let Some(g) = st.gcm else {
            // CCM: the header in `buf` must be the one begun with.
            if buf.get(AAD) != Some(&st.aad[..]) {
                return Err(CryptoError::AuthenticationFailed);
            }
            return self.open(buf);
        };
        if !g.decrypted(total - TRANSFORM_HEADER_LEN) {
            return Err(CryptoError::AuthenticationFailed);
        }
        let ok = match &self.key {
            AeadKey::Gcm128(k) => k.end_decrypt(g, &st.header.signature),
            AeadKey::Gcm256(k) => k.end_decrypt(g, &st.header.signature),
            AeadKey::Ccm128(_) | AeadKey::Ccm256(_) => false,
        };
        gcm_verdict(ok)?;
        Ok((st.header.session_id, TRANSFORM_HEADER_LEN..total))
    }

    /// Checks the transform header (as [`parse_transform_header`]) and decrypts the message in
    /// place. Returns the SessionId and the range of `buf` holding the plaintext SMB2 message
    /// (always `52..buf.len()`). The whole 16-byte Nonce field is authenticated, but only its
    /// first 11 (CCM) or 12 (GCM) bytes feed the cipher; the remaining bytes are not required
    /// to be zero (the published SMB 3.0 test vectors carry non-zero bytes there).
    ///
    /// # Errors
    /// The header errors of [`parse_transform_header`], and
    /// [`CryptoError::AuthenticationFailed`] for a bad tag; after a failed tag check the payload
    /// bytes of `buf` are unspecified (CCM zeroes them, GCM leaves them decrypted: it hashes and
    /// decrypts in one pass) and must be discarded.
    pub fn open(&self, buf: &mut [u8]) -> Result<(u64, Range<usize>), CryptoError> {
        let header = parse_transform_header(buf)?;
        let total = buf.len();
        let (hdr, payload) = buf.split_at_mut(TRANSFORM_HEADER_LEN);
        let aad = hdr.get(AAD).ok_or(CryptoError::TooShort {
            len: total,
            min: TRANSFORM_HEADER_LEN,
        })?;
        self.key
            .decrypt(&header.nonce, aad, payload, &header.signature)?;
        Ok((header.session_id, TRANSFORM_HEADER_LEN..total))
    }
}
