//! Errors of the crypto module.

/// Everything that can go wrong while deriving keys, signing, sealing or opening.
///
/// Variants that describe the peer's input (`TooShort`, `BadProtocolId`, `BadTransformFlags`,
/// `SizeMismatch`, `AuthenticationFailed`) are grounds to disconnect per MS-SMB2 3.3.5.2.1.1;
/// the others are caller mistakes or local failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The buffer is shorter than the structure it must hold.
    #[error("buffer of {len} bytes is too short: at least {min} bytes are needed")]
    TooShort {
        /// Bytes present.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// The transform header does not start with 0xFD 'S' 'M' 'B'.
    #[error("transform header ProtocolId is {0:02x?}, expected fd 53 4d 42")]
    BadProtocolId([u8; 4]),
    /// Flags/EncryptionAlgorithm is not 0x0001 (Encrypted / AES-128-CCM in 3.0.x terms).
    #[error("transform header Flags/EncryptionAlgorithm is {0:#06x}, expected 0x0001")]
    BadTransformFlags(u16),
    /// OriginalMessageSize disagrees with the number of bytes after the transform header.
    #[error("OriginalMessageSize is {declared} but {actual} bytes follow the transform header")]
    SizeMismatch {
        /// OriginalMessageSize from the header.
        declared: u32,
        /// Bytes actually present after the 52-byte header.
        actual: usize,
    },
    /// The message is too large to be described by a transform header (over 4 GiB - 1).
    #[error("message of {0} bytes is too large to encrypt")]
    TooLarge(usize),
    /// Tag or signature mismatch: the message was altered or the key is wrong.
    #[error("authentication failed (bad tag or wrong key)")]
    AuthenticationFailed,
    /// The dialect is not one of 0x0202, 0x0210, 0x0300, 0x0302, 0x0311.
    #[error("unknown or unsupported dialect {0:#06x}")]
    UnknownDialect(u16),
    /// Not a cipher id of MS-SMB2 2.2.3.1.2.
    #[error("unknown cipher id {0:#06x}")]
    UnknownCipher(u16),
    /// The cipher cannot be used with the dialect (3.0/3.0.2 know only AES-128-CCM).
    #[error("cipher {cipher:#06x} is not valid with dialect {dialect:#06x}")]
    CipherNotAllowed {
        /// Cipher wire id.
        cipher: u16,
        /// Dialect wire value.
        dialect: u16,
    },
    /// Not a signing algorithm id of MS-SMB2 2.2.3.1.7.
    #[error("unknown signing algorithm id {0:#06x}")]
    UnknownSigningAlgorithm(u16),
    /// A key of the wrong size was handed to a constructor.
    #[error("key of {got} bytes where {expected} are needed")]
    BadKeyLength {
        /// Needed length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// KDF output length other than 16 or 32 bytes.
    #[error("KDF output of {0} bytes requested; only 16 and 32 are defined")]
    BadKdfLength(usize),
    /// Dialect 3.1.1 derives keys from the preauth integrity hash, which was not given.
    #[error("dialect 3.1.1 key derivation needs the session's preauth integrity hash")]
    MissingPreauthHash,
    /// The session key is empty (anonymous or guest sessions have none to derive from).
    #[error("empty session key")]
    EmptySessionKey,
    /// The per-key nonce counter reached its end: the key must not be used any more.
    #[error("nonce counter exhausted: this key must be replaced")]
    NonceExhausted,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
}
