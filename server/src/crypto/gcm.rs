//! AES-GCM (NIST SP 800-38D) with a 96-bit nonce and a 128-bit tag, in place, for the
//! TRANSFORM header of large READ/WRITE messages.
//!
//! Why not `aes_gcm::AesGcm` (still used for GMAC signing): on 8 MiB messages it makes two full
//! passes (CTR over the whole message, then GHASH over the whole message: RustCrypto/AEADs
//! issue 74) and moves every block through extra copies (the CTR keystream through `ctr`'s
//! buffers, each 4-block GHASH group cloned and byte-reversed by `ghash`). Here the message goes
//! through in 4 KiB pieces that stay in L1: a piece's keystream is made in one call of the AES
//! block cipher over 256 counter blocks, XORed in, and the piece is hashed while it is still in
//! the cache. Measured on the bench host (AES-128, 8 MiB buffers, median thread CPU time of 301
//! alternating seals in one process, on a loaded 2-core VM): 0.40 CPU s/GiB against 0.49-0.51
//! for `aes-gcm` 0.11 (README, "How it compares").
//!
//! The primitives are RustCrypto's: the `aes` block cipher (AES-NI/VAES by runtime detection)
//! and POLYVAL from `polyval` (CLMUL by runtime detection). GHASH is POLYVAL with the bytes of
//! every block reversed and the key multiplied by x (RFC 8452, appendix A): GHASH_H(X1..Xn) =
//! ByteReverse(POLYVAL_{mulX(ByteReverse(H))}(ByteReverse(X1), ..., ByteReverse(Xn))).
//! Only the mode (counter blocks, GHASH input layout, tag) is written here; it is checked
//! against `aes_gcm` itself in the tests (`crypto::tests::gcm`), and against the SMB 3.1.1
//! TRANSFORM vectors.

use aes::cipher::consts::U16;
use aes::cipher::{Block, BlockCipherEncrypt, BlockSizeUser};
use polyval::universal_hash::UniversalHash;
use polyval::Polyval;
use subtle::ConstantTimeEq;

/// Bytes handled per piece: 256 AES blocks.
const PIECE: usize = 4096;
const PIECE_BLOCKS: usize = PIECE / 16;

/// One AES-GCM key: the expanded AES key and the POLYVAL key derived from H = AES_K(0^128).
#[derive(Clone)]
pub(super) struct Gcm<A> {
    aes: A,
    polyval: Polyval,
}

/// A decryption in progress (see [`Gcm::begin_decrypt`]): the GHASH state and the next
/// counter block (no AES key: the [`Gcm`] that began it is given again with every part).
#[derive(Clone)]
pub(super) struct DecryptState {
    ph: Polyval,
    nonce: [u8; 12],
    mask: [u8; 16],
    ctr: u32,
    aad_len: usize,
    text_len: usize,
    /// A part not a multiple of 16 bytes was given: it must have been the last.
    ended: bool,
}

impl DecryptState {
    /// Whether exactly `len` bytes went through [`Gcm::decrypt_more`] (as parts it accepts).
    pub(super) fn decrypted(&self, len: usize) -> bool {
        self.text_len == len
    }
}

/// Galois-field doubling in POLYVAL's bit order (RFC 8452, appendix A, `mulX_POLYVAL`).
fn mulx_polyval(x: [u8; 16]) -> [u8; 16] {
    let v = u128::from_le_bytes(x);
    let hi = v >> 127;
    let v = (v << 1) ^ hi ^ (hi << 127) ^ (hi << 126) ^ (hi << 121);
    v.to_le_bytes()
}

/// A GHASH input block as POLYVAL takes it: the 16 bytes reversed.
fn rev(b: [u8; 16]) -> polyval::Block {
    u128::from_be_bytes(b).to_le_bytes().into()
}

/// The (byte-reversed) GHASH blocks of `data`, the last one zero-padded, fed to `ph`
/// (at most PIECE bytes at a time, through `tmp`).
fn ghash_piece(ph: &mut Polyval, data: &[u8], tmp: &mut [polyval::Block; PIECE_BLOCKS]) {
    for piece in data.chunks(PIECE) {
        let (full, rest) = piece.as_chunks::<16>();
        let mut n = 0;
        for (t, x) in tmp.iter_mut().zip(full) {
            *t = rev(*x);
            n += 1;
        }
        if !rest.is_empty() {
            let mut last = [0u8; 16];
            if let Some(dst) = last.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            if let Some(t) = tmp.get_mut(n) {
                *t = rev(last);
                n += 1;
            }
        }
        if let Some(blocks) = tmp.get(..n) {
            ph.update(blocks);
        }
    }
}

impl<A> Gcm<A>
where
    A: BlockCipherEncrypt + BlockSizeUser<BlockSize = U16>,
{
    /// Builds the key state from an expanded AES key (the key schedule is done once per key).
    pub(super) fn new(aes: A) -> Self {
        let mut h = Block::<A>::default();
        aes.encrypt_block(&mut h);
        let mut h: [u8; 16] = h.into();
        h.reverse();
        let polyval = Polyval::new(&mulx_polyval(h).into());
        Self { aes, polyval }
    }

    /// J0 (nonce || 1) encrypted: the mask of the tag.
    fn tag_mask(&self, nonce: &[u8; 12]) -> [u8; 16] {
        let mut j0 = [0u8; 16];
        j0[..12].copy_from_slice(nonce);
        j0[15] = 1;
        let mut b = Block::<A>::from(j0);
        self.aes.encrypt_block(&mut b);
        b.into()
    }

    /// XORs the keystream for `data` into it; `ctr` is the next 32-bit block counter (2 for the
    /// first byte of the message), advanced past `data`.
    fn apply_keystream(
        &self,
        nonce: &[u8; 12],
        ctr: &mut u32,
        data: &mut [u8],
        ks: &mut [Block<A>; PIECE_BLOCKS],
    ) {
        let mut prefix = [0u8; 16];
        prefix[..12].copy_from_slice(nonce);
        let base = u128::from_be_bytes(prefix);
        let n = data.len().div_ceil(16).min(PIECE_BLOCKS);
        let Some(ks) = ks.get_mut(..n) else { return };
        for b in ks.iter_mut() {
            *b = (base | u128::from(*ctr)).to_be_bytes().into();
            // inc32 of SP 800-38D: the low 32 bits wrap.
            *ctr = ctr.wrapping_add(1);
        }
        self.aes.encrypt_blocks(ks);
        let (full, rest) = data.as_chunks_mut::<16>();
        for (d, k) in full.iter_mut().zip(ks.iter()) {
            let k: [u8; 16] = (*k).into();
            *d = (u128::from_ne_bytes(*d) ^ u128::from_ne_bytes(k)).to_ne_bytes();
        }
        if let Some(k) = ks.get(full.len()) {
            for (x, y) in rest.iter_mut().zip(k.iter()) {
                *x ^= *y;
            }
        }
    }

    /// The tag from the POLYVAL state that has taken the AAD and the ciphertext.
    fn finish(&self, mut ph: Polyval, mask: [u8; 16], aad_len: usize, text_len: usize) -> [u8; 16] {
        let mut lens = [0u8; 16];
        lens[..8].copy_from_slice(&(aad_len as u64).wrapping_mul(8).to_be_bytes());
        lens[8..].copy_from_slice(&(text_len as u64).wrapping_mul(8).to_be_bytes());
        ph.update(&[rev(lens)]);
        let s: [u8; 16] = ph.finalize().into();
        let s = u128::from_be_bytes(s).to_le_bytes();
        (u128::from_ne_bytes(s) ^ u128::from_ne_bytes(mask)).to_ne_bytes()
    }

    /// Encrypts `buf` in place and returns the tag. The caller keeps messages below 4 GiB (the
    /// TRANSFORM header's OriginalMessageSize is 32 bits), well inside GCM's 2^36 - 32 bytes.
    pub(super) fn encrypt(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let mask = self.tag_mask(nonce);
        let mut ph = self.polyval.clone();
        let mut tmp = [polyval::Block::default(); PIECE_BLOCKS];
        let mut ks = [Block::<A>::default(); PIECE_BLOCKS];
        ghash_piece(&mut ph, aad, &mut tmp);
        let mut ctr = 2u32;
        for piece in buf.chunks_mut(PIECE) {
            self.apply_keystream(nonce, &mut ctr, piece, &mut ks);
            ghash_piece(&mut ph, piece, &mut tmp);
        }
        self.finish(ph, mask, aad.len(), buf.len())
    }

    /// Checks `tag` and decrypts `buf` in place. Each piece is hashed, then decrypted, so the
    /// tag is known only at the end: on `false` (a bad tag) `buf` holds the decryption of a
    /// forged message and must be discarded (the caller drops the connection).
    pub(super) fn decrypt(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; 16],
    ) -> bool {
        let mut st = self.begin_decrypt(nonce, aad);
        self.decrypt_more(&mut st, buf);
        self.end_decrypt(st, tag)
    }

    /// Starts decrypting a message that arrives in parts ([`Gcm::decrypt_more`]), so each part
    /// is decrypted while it is still in the cache from being received.
    pub(super) fn begin_decrypt(&self, nonce: &[u8; 12], aad: &[u8]) -> DecryptState {
        let mut ph = self.polyval.clone();
        let mut tmp = [polyval::Block::default(); PIECE_BLOCKS];
        ghash_piece(&mut ph, aad, &mut tmp);
        DecryptState {
            ph,
            nonce: *nonce,
            mask: self.tag_mask(nonce),
            ctr: 2,
            aad_len: aad.len(),
            text_len: 0,
            ended: false,
        }
    }

    /// Decrypts the next part of the message in place. Every part but the last must be a
    /// multiple of 16 bytes long; a part after one that was not (a programming error) poisons
    /// the state: [`Gcm::end_decrypt`] then fails.
    pub(super) fn decrypt_more(&self, st: &mut DecryptState, buf: &mut [u8]) {
        if st.ended {
            st.text_len = usize::MAX;
            return;
        }
        let mut tmp = [polyval::Block::default(); PIECE_BLOCKS];
        let mut ks = [Block::<A>::default(); PIECE_BLOCKS];
        for piece in buf.chunks_mut(PIECE) {
            ghash_piece(&mut st.ph, piece, &mut tmp);
            self.apply_keystream(&st.nonce, &mut st.ctr, piece, &mut ks);
        }
        st.text_len = st.text_len.saturating_add(buf.len());
        st.ended = buf.len() % 16 != 0;
    }

    /// Checks `tag` against everything [`Gcm::decrypt_more`] was given. On `false` the parts
    /// hold the decryption of a forged message and must be discarded.
    pub(super) fn end_decrypt(&self, st: DecryptState, tag: &[u8; 16]) -> bool {
        if st.text_len == usize::MAX {
            return false;
        }
        let expected = self.finish(st.ph, st.mask, st.aad_len, st.text_len);
        expected.ct_eq(tag).into()
    }
}
