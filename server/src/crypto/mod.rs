//! SMB2/3 cryptography on RustCrypto: the 3.1.1 preauth integrity hash, the SP800-108 key
//! derivation, message signing (HMAC-SHA256, AES-128-CMAC, AES-128-GMAC) and message encryption
//! with the SMB2 TRANSFORM_HEADER (AES-128/256-CCM, AES-128/256-GCM).
//!
//! Every key schedule is done once, when a [`Signer`], [`Sealer`] or [`Opener`] is built (once per
//! session or channel key); signing, sealing and opening then work in place on the caller's buffer
//! and never copy the payload (READ/WRITE messages carry up to 8 MiB).
//!
//! Nothing here panics on input that came off the wire: short, oversized or malformed messages
//! give a [`CryptoError`] (or `false` from [`Signer::verify`]).

mod error;
mod gcm;
mod kdf;
mod preauth;
mod signing;
mod transform;

pub use error::CryptoError;
pub use kdf::{derive_session_keys, derive_signing_key, kdf, Dialect, SecretKey, SessionKeys};
pub use preauth::PreauthHash;
pub use signing::{Signer, SigningAlgorithm, SIGNATURE_LEN, SIGNATURE_OFFSET, SMB2_HEADER_LEN};
pub use transform::{
    parse_transform_header, Cipher, OpenInProgress, Opener, Sealer, TransformHeader, TRANSFORM_FLAG_ENCRYPTED,
    TRANSFORM_HEADER_LEN, TRANSFORM_PROTOCOL_ID,
};

#[cfg(test)]
mod tests;
