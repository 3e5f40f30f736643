//! SMB 3.1.1 preauthentication integrity hash (MS-SMB2 3.3.5.4, 3.3.5.5).

use sha2::{Digest, Sha512};

/// Length of the SHA-512 preauth integrity hash value.
pub const PREAUTH_HASH_LEN: usize = 64;

/// Running SHA-512 chain: starts at 64 zero bytes and on each message becomes
/// `H = SHA-512(H || message)`.
///
/// The connection keeps one (NEGOTIATE request and response); each session in setup clones the
/// connection's value and keeps hashing its SESSION_SETUP requests and responses (all but the
/// final, successful response). Hash whole SMB2 messages exactly as on the wire (without any
/// transport framing and without a transform header).
#[derive(Clone, PartialEq, Eq)]
pub struct PreauthHash {
    value: [u8; PREAUTH_HASH_LEN],
}

impl PreauthHash {
    /// The initial value: 64 zero bytes.
    #[must_use]
    pub fn new() -> Self {
        Self {
            value: [0; PREAUTH_HASH_LEN],
        }
    }

    /// `H = SHA-512(H || msg)`.
    pub fn update(&mut self, msg: &[u8]) {
        let mut hasher = Sha512::new();
        hasher.update(self.value);
        hasher.update(msg);
        self.value.copy_from_slice(&hasher.finalize());
    }

    /// The current hash value (the KDF context for 3.1.1 keys).
    #[must_use]
    pub fn value(&self) -> [u8; PREAUTH_HASH_LEN] {
        self.value
    }
}

impl Default for PreauthHash {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PreauthHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreauthHash(")?;
        for b in self.value.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}
