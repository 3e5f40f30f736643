//! SP800-108 counter-mode KDF with HMAC-SHA256 and the SMB 3.x key derivations
//! (MS-SMB2 3.1.4.2, 3.2.5.3.1, 3.3.5.5.3).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use super::error::CryptoError;
use super::preauth::PREAUTH_HASH_LEN;
use super::transform::Cipher;

type HmacSha256 = Hmac<Sha256>;

/// An SMB dialect as its wire value (DialectRevision of the NEGOTIATE response).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dialect(pub u16);

impl Dialect {
    /// SMB 2.0.2.
    pub const SMB2_0_2: Dialect = Dialect(0x0202);
    /// SMB 2.1.
    pub const SMB2_1: Dialect = Dialect(0x0210);
    /// SMB 3.0.
    pub const SMB3_0: Dialect = Dialect(0x0300);
    /// SMB 3.0.2.
    pub const SMB3_0_2: Dialect = Dialect(0x0302);
    /// SMB 3.1.1.
    pub const SMB3_1_1: Dialect = Dialect(0x0311);

    /// True for 3.0, 3.0.2 and 3.1.1.
    #[must_use]
    pub fn is_smb3(self) -> bool {
        matches!(self, Self::SMB3_0 | Self::SMB3_0_2 | Self::SMB3_1_1)
    }
}

/// A 128- or 256-bit secret key. Zeroed on drop; `Debug` shows only its length.
#[derive(Clone)]
pub struct SecretKey {
    bytes: [u8; 32],
    len: usize,
}

impl SecretKey {
    /// Copies a 16- or 32-byte key.
    ///
    /// # Errors
    /// [`CryptoError::BadKeyLength`] for any other length.
    pub fn from_slice(key: &[u8]) -> Result<Self, CryptoError> {
        if key.len() != 16 && key.len() != 32 {
            return Err(CryptoError::BadKeyLength {
                expected: 16,
                got: key.len(),
            });
        }
        let mut bytes = [0u8; 32];
        bytes
            .get_mut(..key.len())
            .ok_or(CryptoError::BadKeyLength {
                expected: 32,
                got: key.len(),
            })?
            .copy_from_slice(key);
        Ok(Self {
            bytes,
            len: key.len(),
        })
    }

    /// The key bytes (16 or 32).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Key length in bytes (16 or 32).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a `SecretKey` holds 16 or 32 bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(<{} bytes>)", self.len)
    }
}

/// SP800-108 KDF in counter mode with HMAC-SHA256 as PRF, r = 32 (MS-SMB2 3.1.4.2):
/// `out = HMAC-SHA256(key, [1]_32be || label || 0x00 || context || [L]_32be)` truncated to
/// `out.len()` bytes, with `L = 8 * out.len()`. One PRF block suffices since SMB keys are at most
/// 256 bits. `label` and `context` are passed exactly as the spec lists them, NUL terminators
/// included (the 0x00 separator is added here).
///
/// # Errors
/// [`CryptoError::BadKdfLength`] unless `out` is 16 or 32 bytes.
pub fn kdf(key: &[u8], label: &[u8], context: &[u8], out: &mut [u8]) -> Result<(), CryptoError> {
    let l_bits: u32 = match out.len() {
        16 => 128,
        32 => 256,
        other => return Err(CryptoError::BadKdfLength(other)),
    };
    // HMAC accepts keys of any length; the error arm cannot happen but is mapped, not unwrapped.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| CryptoError::BadKeyLength {
            expected: 16,
            got: key.len(),
        })?;
    mac.update(&1u32.to_be_bytes());
    mac.update(label);
    mac.update(&[0u8]);
    mac.update(context);
    mac.update(&l_bits.to_be_bytes());
    let mut block = mac.finalize().into_bytes();
    let n = out.len();
    if let Some(src) = block.get(..n) {
        out.copy_from_slice(src);
    }
    block.as_mut_slice().zeroize();
    Ok(())
}

/// The keys of one session (MS-SMB2 3.3.1.8 Session.SigningKey, DecryptionKey, EncryptionKey,
/// ApplicationKey), named from the server's point of view.
#[derive(Debug, Clone)]
pub struct SessionKeys {
    /// Signing key (16 bytes). For 2.0.2/2.1 it is the session key itself.
    pub signing: SecretKey,
    /// Key of client-to-server encryption (the server decrypts with it; the client's
    /// EncryptionKey). `None` for 2.0.2/2.1.
    pub server_in: Option<SecretKey>,
    /// Key of server-to-client encryption (the server encrypts with it; the client's
    /// DecryptionKey). `None` for 2.0.2/2.1.
    pub server_out: Option<SecretKey>,
    /// Application key (16 bytes), for protocols layered on SMB (e.g. DCE/RPC session key).
    /// For 2.0.2/2.1, where MS-SMB2 derives none, it is the session key itself (as Samba and
    /// smbprotocol do).
    pub application: SecretKey,
}

/// Session.SessionKey of MS-SMB2 3.3.1.8: the first 16 bytes of the GSS session key,
/// right-padded with zeros if shorter.
fn truncated_session_key(session_key: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    for (d, s) in k.iter_mut().zip(session_key.iter()) {
        *d = *s;
    }
    k
}

fn derive16(key: &[u8], label: &[u8], context: &[u8]) -> Result<SecretKey, CryptoError> {
    let mut out = [0u8; 16];
    kdf(key, label, context, &mut out)?;
    let k = SecretKey::from_slice(&out);
    out.zeroize();
    k
}

fn derive32(key: &[u8], label: &[u8], context: &[u8]) -> Result<SecretKey, CryptoError> {
    let mut out = [0u8; 32];
    kdf(key, label, context, &mut out)?;
    let k = SecretKey::from_slice(&out);
    out.zeroize();
    k
}

// Labels and contexts of MS-SMB2 3.3.5.5.3, NUL terminators included.
const L30_SIGN: &[u8] = b"SMB2AESCMAC\0";
const C30_SIGN: &[u8] = b"SmbSign\0";
const L30_CIPHER: &[u8] = b"SMB2AESCCM\0";
const C30_SERVER_IN: &[u8] = b"ServerIn \0";
const C30_SERVER_OUT: &[u8] = b"ServerOut\0";
const L30_APP: &[u8] = b"SMB2APP\0";
const C30_APP: &[u8] = b"SmbRpc\0";
const L311_SIGN: &[u8] = b"SMBSigningKey\0";
const L311_C2S: &[u8] = b"SMBC2SCipherKey\0";
const L311_S2C: &[u8] = b"SMBS2CCipherKey\0";
const L311_APP: &[u8] = b"SMBAppKey\0";

/// Signing key of a session or of one channel (MS-SMB2 3.3.5.5.3; for a channel bound with
/// SESSION_SETUP and SMB2_SESSION_FLAG_BINDING, pass that channel's preauth hash).
///
/// `session_key` is the full GSS session key; only its first 16 bytes (zero-padded) are used.
/// 2.0.2/2.1 sign with that truncated session key itself; 3.0/3.0.2 derive with
/// "SMB2AESCMAC"/"SmbSign"; 3.1.1 with "SMBSigningKey" and the preauth hash. The signing key is
/// always 128 bits (L = 128), whatever the cipher.
///
/// # Errors
/// Unknown dialect, empty session key, or 3.1.1 without a preauth hash.
pub fn derive_signing_key(
    dialect: Dialect,
    session_key: &[u8],
    preauth: Option<&[u8; PREAUTH_HASH_LEN]>,
) -> Result<SecretKey, CryptoError> {
    if session_key.is_empty() {
        return Err(CryptoError::EmptySessionKey);
    }
    let mut sk = truncated_session_key(session_key);
    let r = match dialect {
        Dialect::SMB2_0_2 | Dialect::SMB2_1 => SecretKey::from_slice(&sk),
        Dialect::SMB3_0 | Dialect::SMB3_0_2 => derive16(&sk, L30_SIGN, C30_SIGN),
        Dialect::SMB3_1_1 => match preauth {
            Some(h) => derive16(&sk, L311_SIGN, h),
            None => Err(CryptoError::MissingPreauthHash),
        },
        Dialect(other) => Err(CryptoError::UnknownDialect(other)),
    };
    sk.zeroize();
    r
}

/// Derives all keys of a session once authentication has produced `session_key` (the full GSS
/// session key, e.g. 16 bytes for NTLM, up to 32 for Kerberos AES256).
///
/// - 2.0.2/2.1: signing = application = first 16 bytes of the session key; no cipher keys.
/// - 3.0/3.0.2: fixed labels and contexts, 128-bit keys; `cipher` must be `None` or
///   AES-128-CCM (the only cipher of those dialects).
/// - 3.1.1: labels "SMBSigningKey", "SMBC2SCipherKey", "SMBS2CCipherKey", "SMBAppKey", context =
///   the session's preauth hash (`preauth` is required). With AES-256-CCM/GCM the cipher keys are
///   256 bits (L = 256) and derived from the *full* session key (Session.FullSessionKey); signing
///   and application keys stay 128 bits from the truncated key. With no cipher negotiated the
///   cipher keys are derived as for AES-128.
///
/// # Errors
/// Unknown dialect, empty session key, missing preauth hash for 3.1.1, or a cipher the dialect
/// does not allow.
pub fn derive_session_keys(
    dialect: Dialect,
    session_key: &[u8],
    preauth: Option<&[u8; PREAUTH_HASH_LEN]>,
    cipher: Option<Cipher>,
) -> Result<SessionKeys, CryptoError> {
    if session_key.is_empty() {
        return Err(CryptoError::EmptySessionKey);
    }
    let mut sk = truncated_session_key(session_key);
    let r = derive_with(dialect, &sk, session_key, preauth, cipher);
    sk.zeroize();
    r
}

fn derive_with(
    dialect: Dialect,
    sk: &[u8; 16],
    full_key: &[u8],
    preauth: Option<&[u8; PREAUTH_HASH_LEN]>,
    cipher: Option<Cipher>,
) -> Result<SessionKeys, CryptoError> {
    match dialect {
        Dialect::SMB2_0_2 | Dialect::SMB2_1 => Ok(SessionKeys {
            signing: SecretKey::from_slice(sk)?,
            server_in: None,
            server_out: None,
            application: SecretKey::from_slice(sk)?,
        }),
        Dialect::SMB3_0 | Dialect::SMB3_0_2 => {
            if let Some(c) = cipher {
                if c != Cipher::Aes128Ccm {
                    return Err(CryptoError::CipherNotAllowed {
                        cipher: c.wire_id(),
                        dialect: dialect.0,
                    });
                }
            }
            Ok(SessionKeys {
                signing: derive16(sk, L30_SIGN, C30_SIGN)?,
                server_in: Some(derive16(sk, L30_CIPHER, C30_SERVER_IN)?),
                server_out: Some(derive16(sk, L30_CIPHER, C30_SERVER_OUT)?),
                application: derive16(sk, L30_APP, C30_APP)?,
            })
        }
        Dialect::SMB3_1_1 => {
            let h: &[u8] = preauth.ok_or(CryptoError::MissingPreauthHash)?;
            let wide = cipher.is_some_and(|c| c.key_len() == 32);
            let (server_in, server_out) = if wide {
                (
                    derive32(full_key, L311_C2S, h)?,
                    derive32(full_key, L311_S2C, h)?,
                )
            } else {
                (derive16(sk, L311_C2S, h)?, derive16(sk, L311_S2C, h)?)
            };
            Ok(SessionKeys {
                signing: derive16(sk, L311_SIGN, h)?,
                server_in: Some(server_in),
                server_out: Some(server_out),
                application: derive16(sk, L311_APP, h)?,
            })
        }
        Dialect(other) => Err(CryptoError::UnknownDialect(other)),
    }
}
