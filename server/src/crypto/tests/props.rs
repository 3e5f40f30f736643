//! Property tests: round trips, bit flips, and no panic on arbitrary input.

use proptest::prelude::*;

use super::super::*;
use super::with_reserved_header;

fn cipher() -> impl Strategy<Value = Cipher> {
    prop_oneof![
        Just(Cipher::Aes128Ccm),
        Just(Cipher::Aes128Gcm),
        Just(Cipher::Aes256Ccm),
        Just(Cipher::Aes256Gcm),
    ]
}

fn signing_alg() -> impl Strategy<Value = SigningAlgorithm> {
    prop_oneof![
        Just(SigningAlgorithm::HmacSha256),
        Just(SigningAlgorithm::AesCmac),
        Just(SigningAlgorithm::AesGmac),
    ]
}

fn key_for(c: Cipher, seed: &[u8; 32]) -> Vec<u8> {
    seed.iter().copied().take(c.key_len()).collect()
}

proptest! {
    #[test]
    fn open_of_seal_is_identity(
        c in cipher(),
        seed in any::<[u8; 32]>(),
        session_id in any::<u64>(),
        msg in proptest::collection::vec(any::<u8>(), 1..2048),
    ) {
        let key = key_for(c, &seed);
        let sealer = Sealer::new(c, &key).expect("sealer");
        let opener = Opener::new(c, &key).expect("opener");
        let mut buf = with_reserved_header(&msg);
        sealer.seal(session_id, &mut buf).expect("seal");
        prop_assert_eq!(parse_transform_header(&buf).expect("header").session_id, session_id);
        if msg.len() >= 16 {
            // The payload really is encrypted.
            prop_assert_ne!(buf.get(52..), Some(&msg[..]));
        }
        let (sid, range) = opener.open(&mut buf).expect("open");
        prop_assert_eq!(sid, session_id);
        prop_assert_eq!(range.clone(), 52..buf.len());
        prop_assert_eq!(buf.get(range), Some(&msg[..]));
    }

    /// Opening a message in parts as it arrives (any split into parts of multiples of 16
    /// bytes but the last) gives what opening it whole gives; a flipped bit anywhere, or a
    /// part left out, fails it.
    #[test]
    fn open_in_parts_is_open(
        c in cipher(),
        seed in any::<[u8; 32]>(),
        session_id in any::<u64>(),
        msg in proptest::collection::vec(any::<u8>(), 1..20_000),
        cuts in proptest::collection::vec(0usize..1400, 0..12),
        flip in proptest::option::of(any::<prop::sample::Index>()),
        drop_part in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let key = key_for(c, &seed);
        let sealer = Sealer::new(c, &key).expect("sealer");
        let opener = Opener::new(c, &key).expect("opener");
        let mut buf = with_reserved_header(&msg);
        sealer.seal(session_id, &mut buf).expect("seal");
        if let Some(bit) = &flip {
            let bit = bit.index(buf.len() * 8);
            if let Some(b) = buf.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
        }
        let total = buf.len();
        let Ok(mut st) = opener.open_begin(&buf[..52], total) else {
            // Only a flip in the checked header fields makes the header itself bad.
            prop_assert!(flip.is_some());
            return Ok(());
        };
        prop_assert_eq!(st.session_id(), parse_transform_header(&buf).expect("header").session_id);
        // Part boundaries: multiples of 16 into the payload.
        let mut bounds: Vec<usize> = cuts.iter().map(|c| 52 + c * 16).filter(|b| *b < total).collect();
        bounds.push(52);
        bounds.push(total);
        bounds.sort_unstable();
        bounds.dedup();
        let parts = bounds.len() - 1;
        let skip = drop_part.map(|i| i.index(parts));
        for (i, w) in bounds.windows(2).enumerate() {
            if Some(i) != skip {
                opener.open_more(&mut st, &mut buf[w[0]..w[1]]);
            }
        }
        let r = opener.open_end(st, &mut buf);
        if flip.is_some() || (skip.is_some() && matches!(c, Cipher::Aes128Gcm | Cipher::Aes256Gcm)) {
            prop_assert!(r.is_err(), "a damaged message or a part left out was accepted");
        } else {
            let (sid, range) = r.expect("open in parts");
            prop_assert_eq!(sid, session_id);
            prop_assert_eq!(range.clone(), 52..total);
            prop_assert_eq!(buf.get(range), Some(&msg[..]));
        }
    }

    #[test]
    fn any_flipped_bit_fails_open(
        c in cipher(),
        seed in any::<[u8; 32]>(),
        msg in proptest::collection::vec(any::<u8>(), 1..512),
        bit in any::<prop::sample::Index>(),
    ) {
        let key = key_for(c, &seed);
        let sealer = Sealer::new(c, &key).expect("sealer");
        let opener = Opener::new(c, &key).expect("opener");
        let mut buf = with_reserved_header(&msg);
        sealer.seal(42, &mut buf).expect("seal");
        let bit = bit.index(buf.len() * 8);
        if let Some(b) = buf.get_mut(bit / 8) {
            *b ^= 1 << (bit % 8);
        }
        prop_assert!(opener.open(&mut buf).is_err(), "flip of bit {} accepted", bit);
    }

    #[test]
    fn sign_verify_and_any_flipped_bit_fails(
        alg in signing_alg(),
        key in any::<[u8; 16]>(),
        mut msg in proptest::collection::vec(any::<u8>(), 64..600),
        bit in any::<prop::sample::Index>(),
    ) {
        let signer = Signer::new(alg, &key).expect("signer");
        signer.sign(&mut msg).expect("sign");
        let signed = msg.clone();
        prop_assert!(signer.verify(&mut msg));
        prop_assert_eq!(&msg, &signed);
        let bit = bit.index(msg.len() * 8);
        if let Some(b) = msg.get_mut(bit / 8) {
            *b ^= 1 << (bit % 8);
        }
        let tampered = msg.clone();
        prop_assert!(!signer.verify(&mut msg), "flip of bit {} accepted", bit);
        prop_assert_eq!(&msg, &tampered, "verify restores the message");
    }

    #[test]
    fn no_panic_on_arbitrary_input(
        alg in signing_alg(),
        c in cipher(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let _ = parse_transform_header(&data);
        let opener = Opener::new(c, &vec![5u8; c.key_len()]).expect("opener");
        let _ = opener.open(&mut data.clone());
        let signer = Signer::new(alg, &[6u8; 16]).expect("signer");
        let mut m = data.clone();
        let before = m.clone();
        let _ = signer.verify(&mut m);
        prop_assert_eq!(&m, &before);
        let _ = signer.sign(&mut data.clone());
        let sealer = Sealer::new(c, &vec![5u8; c.key_len()]).expect("sealer");
        let _ = sealer.seal(1, &mut data.clone());
    }

    #[test]
    fn no_panic_on_well_formed_header_with_garbage(
        c in cipher(),
        mut data in proptest::collection::vec(any::<u8>(), 53..400),
        session_id in any::<u64>(),
    ) {
        // Make the header pass the structural checks so the AEAD path runs on garbage.
        let size = u32::try_from(data.len() - 52).expect("fits");
        data[0..4].copy_from_slice(&TRANSFORM_PROTOCOL_ID);
        data[36..40].copy_from_slice(&size.to_le_bytes());
        data[42..44].copy_from_slice(&1u16.to_le_bytes());
        data[44..52].copy_from_slice(&session_id.to_le_bytes());
        prop_assert_eq!(parse_transform_header(&data).map(|h| h.session_id), Ok(session_id));
        let opener = Opener::new(c, &vec![5u8; c.key_len()]).expect("opener");
        prop_assert_eq!(opener.open(&mut data), Err(CryptoError::AuthenticationFailed));
    }
}
