//! MS-NLMP key computations (3.3.2, 3.4.4.2, 3.4.5) on RustCrypto primitives.

use hmac::{Hmac, KeyInit, Mac};
use md4::{Digest, Md4};
use md5::Md5;
use rc4::{Rc4, StreamCipher};
use zeroize::Zeroize;

use super::ntlm::flags;

type HmacMd5 = Hmac<Md5>;

/// NT hash: MD4(UTF-16LE(password)).
pub fn nt_hash(password: &str) -> [u8; 16] {
    let mut utf16: Vec<u8> = password.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let out: [u8; 16] = Md4::digest(&utf16).into();
    utf16.zeroize();
    out
}

/// HMAC-MD5 keyed with a 16-byte key over the concatenation of `parts`.
///
/// HMAC pads keys shorter than the block with zeros, so keying with the key zero-padded to
/// 64 bytes is the same function and cannot fail.
pub fn hmac_md5(key: &[u8; 16], parts: &[&[u8]]) -> [u8; 16] {
    let mut block = [0u8; 64];
    block[..16].copy_from_slice(key);
    let mut mac = <HmacMd5 as KeyInit>::new(&block.into());
    block.zeroize();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Windows-style upper-casing of one UTF-16 code unit: a BMP character whose upper case is a
/// single BMP character is mapped, everything else (surrogates, expansions) is kept.
fn upper_unit(u: u16) -> u16 {
    let Some(c) = char::from_u32(u32::from(u)) else {
        return u;
    };
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(x), None) => u16::try_from(u32::from(x)).unwrap_or(u),
        _ => u,
    }
}

/// NTOWFv2 = HMAC_MD5(NT hash, UTF-16LE(UPPER(user) + domain)), names as UTF-16 code units.
pub fn ntowfv2(nt_hash: &[u8; 16], user: &[u16], domain: &[u16]) -> [u8; 16] {
    let mut buf: Vec<u8> = user
        .iter()
        .map(|&u| upper_unit(u))
        .chain(domain.iter().copied())
        .flat_map(u16::to_le_bytes)
        .collect();
    let out = hmac_md5(nt_hash, &[&buf]);
    buf.zeroize();
    out
}

/// RC4 of 16 bytes under a 16-byte key (a fresh key stream), as used for the key exchange.
pub fn rc4_once(key: &[u8; 16], data: &[u8; 16]) -> [u8; 16] {
    let mut out = *data;
    // RC4 accepts keys of 1 to 256 bytes: a 16-byte key cannot be refused.
    let mut c = <Rc4 as rc4::KeyInit>::new_from_slice(key).expect("16-byte RC4 key");
    c.apply_keystream(&mut out);
    out
}

const C2S_SIGN: &[u8] = b"session key to client-to-server signing key magic constant\0";
const S2C_SIGN: &[u8] = b"session key to server-to-client signing key magic constant\0";
const C2S_SEAL: &[u8] = b"session key to client-to-server sealing key magic constant\0";
const S2C_SEAL: &[u8] = b"session key to server-to-client sealing key magic constant\0";

/// Which direction a key protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// SIGNKEY (MS-NLMP 3.4.5.2), extended session security.
pub fn sign_key(exported: &[u8; 16], dir: Direction) -> [u8; 16] {
    let magic = match dir {
        Direction::ClientToServer => C2S_SIGN,
        Direction::ServerToClient => S2C_SIGN,
    };
    md5(&[exported, magic])
}

/// SEALKEY (MS-NLMP 3.4.5.3), extended session security: 128, 56 or 40 bits of the exported
/// key, per the negotiated flags, hashed with the direction's magic constant.
pub fn seal_key(exported: &[u8; 16], negotiate_flags: u32, dir: Direction) -> [u8; 16] {
    let magic = match dir {
        Direction::ClientToServer => C2S_SEAL,
        Direction::ServerToClient => S2C_SEAL,
    };
    let len = if negotiate_flags & flags::NEGOTIATE_128 != 0 {
        16
    } else if negotiate_flags & flags::NEGOTIATE_56 != 0 {
        7
    } else {
        5
    };
    md5(&[&exported[..len], magic])
}

/// One direction's NTLM message-security state with extended session security
/// (MS-NLMP 3.4.3, 3.4.4.2): signing key, the RC4 handle kept across messages and the
/// sequence number.
pub struct NtlmSecurity {
    sign_key: [u8; 16],
    handle: Rc4,
    seq: u32,
    key_exch: bool,
}

impl std::fmt::Debug for NtlmSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtlmSecurity")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Drop for NtlmSecurity {
    fn drop(&mut self) {
        self.sign_key.zeroize();
    }
}

impl NtlmSecurity {
    /// State for one direction from the exported session key and the negotiated flags.
    pub fn new(exported: &[u8; 16], negotiate_flags: u32, dir: Direction) -> Self {
        let mut seal = seal_key(exported, negotiate_flags, dir);
        let state = Self::from_keys(
            sign_key(exported, dir),
            &seal,
            negotiate_flags & flags::KEY_EXCH != 0,
        );
        seal.zeroize();
        state
    }

    /// State from explicit keys (also used by the specification's examples).
    pub fn from_keys(sign_key: [u8; 16], seal_key: &[u8; 16], key_exch: bool) -> Self {
        // RC4 accepts keys of 1 to 256 bytes: a 16-byte key cannot be refused.
        let handle = <Rc4 as rc4::KeyInit>::new_from_slice(seal_key).expect("16-byte RC4 key");
        Self {
            sign_key,
            handle,
            seq: 0,
            key_exch,
        }
    }

    fn signature(&mut self, msg: &[u8]) -> [u8; 16] {
        let seq = self.seq.to_le_bytes();
        let mac = hmac_md5(&self.sign_key, &[&seq, msg]);
        let mut checksum = [0u8; 8];
        checksum.copy_from_slice(&mac[..8]);
        if self.key_exch {
            self.handle.apply_keystream(&mut checksum);
        }
        let mut sig = [0u8; 16];
        sig[..4].copy_from_slice(&1u32.to_le_bytes());
        sig[4..12].copy_from_slice(&checksum);
        sig[12..].copy_from_slice(&seq);
        self.seq = self.seq.wrapping_add(1);
        sig
    }

    /// GSS_GetMIC: the 16-byte NTLMSSP_MESSAGE_SIGNATURE over `msg`.
    pub fn sign(&mut self, msg: &[u8]) -> [u8; 16] {
        self.signature(msg)
    }

    /// GSS_WrapEx: encrypts `msg` in place and returns its signature.
    pub fn seal(&mut self, msg: &mut [u8]) -> [u8; 16] {
        let plain = msg.to_vec();
        self.handle.apply_keystream(msg);
        self.signature(&plain)
    }

    /// Checks a peer's GSS_GetMIC signature over `msg` in constant time.
    pub fn verify(&mut self, msg: &[u8], signature: &[u8]) -> bool {
        let expect = self.signature(msg);
        subtle::ConstantTimeEq::ct_eq(&expect[..], signature).into()
    }
}
