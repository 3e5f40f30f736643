//! Our one-pass AES-GCM (`crypto::gcm`) against `aes_gcm` (RustCrypto's AEAD) on the same keys,
//! nonces, AAD and messages: same ciphertext and tag, and each opens the other's output. The
//! lengths cross the 4 KiB pieces and the 16-byte blocks (partial last block, exact multiples).

use aes::{Aes128Enc, Aes256Enc};
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::AesGcm;
use proptest::prelude::*;

use super::super::gcm::Gcm;

const LENGTHS: [usize; 16] = [
    0, 1, 15, 16, 17, 63, 64, 4095, 4096, 4097, 4111, 8192, 12_289, 65_536, 65_537, 1_048_591,
];

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Seals with both implementations and checks they agree, then opens each other's output.
fn check<A, R>(ours: &Gcm<A>, reference: &R, nonce: [u8; 12], aad: &[u8], msg: &[u8])
where
    A: aes::cipher::BlockCipherEncrypt
        + aes::cipher::BlockSizeUser<BlockSize = aes_gcm::aead::consts::U16>,
    R: AeadInOut<NonceSize = U12, TagSize = aes_gcm::aead::consts::U16>,
{
    let mut a = msg.to_vec();
    let tag_a = ours.encrypt(&nonce, aad, &mut a);
    let mut b = msg.to_vec();
    let tag_b = reference
        .encrypt_inout_detached(&nonce.into(), aad, b.as_mut_slice().into())
        .expect("reference seal");
    assert_eq!(a, b, "ciphertext, {} bytes", msg.len());
    assert_eq!(&tag_a[..], &tag_b[..], "tag, {} bytes", msg.len());
    // Ours opens the reference's output, and the reference ours.
    assert!(
        ours.decrypt(&nonce, aad, &mut b, &tag_b.into()),
        "ours opens, {} bytes",
        msg.len()
    );
    assert_eq!(b, msg);
    reference
        .decrypt_inout_detached(&nonce.into(), aad, a.as_mut_slice().into(), &tag_a.into())
        .expect("reference opens ours");
    assert_eq!(a, msg);
}

#[test]
fn gcm128_matches_aes_gcm() {
    let key = [0x42u8; 16];
    let ours = Gcm::new(Aes128Enc::new(&key.into()));
    let reference = AesGcm::<Aes128Enc, U12>::new(&key.into());
    for (i, len) in LENGTHS.into_iter().enumerate() {
        let nonce = [i as u8; 12];
        check(&ours, &reference, nonce, &data(32, 9), &data(len, i as u8));
    }
}

#[test]
fn gcm256_matches_aes_gcm() {
    let key: [u8; 32] = core::array::from_fn(|i| i as u8);
    let ours = Gcm::new(Aes256Enc::new(&key.into()));
    let reference = AesGcm::<Aes256Enc, U12>::new(&key.into());
    for (i, len) in LENGTHS.into_iter().enumerate() {
        let nonce = [0xA0 ^ i as u8; 12];
        // AAD lengths other than the TRANSFORM header's 32 as well.
        check(
            &ours,
            &reference,
            nonce,
            &data(i * 7, 3),
            &data(len, i as u8),
        );
    }
}

/// All-ones key, nonce and AAD over 73 pieces: a carry from the block counter into the nonce,
/// or a sign error in the length block, would show here.
#[test]
fn gcm_all_ones_nonce_many_pieces() {
    let key = [0xFFu8; 16];
    let ours = Gcm::new(Aes128Enc::new(&key.into()));
    let reference = AesGcm::<Aes128Enc, U12>::new(&key.into());
    check(
        &ours,
        &reference,
        [0xFF; 12],
        &[0xFF; 32],
        &data(300_000, 0xFF),
    );
}

/// A flipped bit anywhere (AAD, message, tag) fails the tag check.
#[test]
fn gcm_rejects_any_flipped_bit() {
    let key = [7u8; 16];
    let ours = Gcm::new(Aes128Enc::new(&key.into()));
    let nonce = [1u8; 12];
    let aad = data(32, 1);
    let msg = data(5000, 2);
    let mut ct = msg.clone();
    let tag = ours.encrypt(&nonce, &aad, &mut ct);
    for pos in [0, 15, 16, 4095, 4096, 4999] {
        let mut bad = ct.clone();
        bad[pos] ^= 0x01;
        assert!(
            !ours.decrypt(&nonce, &aad, &mut bad, &tag),
            "flip at message byte {pos}"
        );
    }
    for pos in [0, 31] {
        let mut bad_aad = aad.clone();
        bad_aad[pos] ^= 0x80;
        let mut c = ct.clone();
        assert!(
            !ours.decrypt(&nonce, &bad_aad, &mut c, &tag),
            "flip at aad byte {pos}"
        );
    }
    for pos in [0, 15] {
        let mut bad_tag = tag;
        bad_tag[pos] ^= 0x10;
        let mut c = ct.clone();
        assert!(
            !ours.decrypt(&nonce, &aad, &mut c, &bad_tag),
            "flip at tag byte {pos}"
        );
    }
    let mut c = ct.clone();
    assert!(!ours.decrypt(&[2u8; 12], &aad, &mut c, &tag), "other nonce");
    let mut c = ct;
    assert!(ours.decrypt(&nonce, &aad, &mut c, &tag));
    assert_eq!(c, msg);
}

proptest! {
    #[test]
    fn gcm_matches_aes_gcm_on_random_input(
        key in any::<[u8; 16]>(),
        nonce in any::<[u8; 12]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..80),
        msg in proptest::collection::vec(any::<u8>(), 0..9000),
    ) {
        let ours = Gcm::new(Aes128Enc::new(&key.into()));
        let reference = AesGcm::<Aes128Enc, U12>::new(&key.into());
        check(&ours, &reference, nonce, &aad, &msg);
    }
}
