//! Error paths and invariants that the vectors do not reach.

use super::super::*;
use super::with_reserved_header;

const ALL_CIPHERS: [Cipher; 4] = [
    Cipher::Aes128Ccm,
    Cipher::Aes128Gcm,
    Cipher::Aes256Ccm,
    Cipher::Aes256Gcm,
];

fn key(cipher: Cipher) -> Vec<u8> {
    (1u8..).take(cipher.key_len()).collect()
}

#[test]
fn wire_ids_round_trip() {
    for c in ALL_CIPHERS {
        assert_eq!(Cipher::from_wire(c.wire_id()), Ok(c));
    }
    assert_eq!(Cipher::from_wire(0), Err(CryptoError::UnknownCipher(0)));
    assert_eq!(Cipher::from_wire(5), Err(CryptoError::UnknownCipher(5)));
    for (id, alg) in [
        (0, SigningAlgorithm::HmacSha256),
        (1, SigningAlgorithm::AesCmac),
        (2, SigningAlgorithm::AesGmac),
    ] {
        assert_eq!(SigningAlgorithm::from_wire(id), Ok(alg));
        assert_eq!(alg.wire_id(), id);
    }
    assert_eq!(
        SigningAlgorithm::from_wire(3),
        Err(CryptoError::UnknownSigningAlgorithm(3))
    );
}

#[test]
fn signing_algorithm_per_dialect() {
    use SigningAlgorithm as S;
    assert_eq!(S::for_dialect(Dialect::SMB2_0_2, None), Ok(S::HmacSha256));
    assert_eq!(
        S::for_dialect(Dialect::SMB2_1, Some(S::AesGmac)),
        Ok(S::HmacSha256)
    );
    assert_eq!(S::for_dialect(Dialect::SMB3_0, None), Ok(S::AesCmac));
    assert_eq!(
        S::for_dialect(Dialect::SMB3_0_2, Some(S::AesGmac)),
        Ok(S::AesCmac)
    );
    assert_eq!(S::for_dialect(Dialect::SMB3_1_1, None), Ok(S::AesCmac));
    assert_eq!(
        S::for_dialect(Dialect::SMB3_1_1, Some(S::AesGmac)),
        Ok(S::AesGmac)
    );
    assert_eq!(
        S::for_dialect(Dialect(0x0301), None),
        Err(CryptoError::UnknownDialect(0x0301))
    );
}

#[test]
fn kdf_rejects_other_lengths() {
    let mut out = [0u8; 20];
    assert_eq!(
        kdf(b"k", b"l", b"c", &mut out),
        Err(CryptoError::BadKdfLength(20))
    );
    let mut empty = [0u8; 0];
    assert_eq!(
        kdf(b"k", b"l", b"c", &mut empty),
        Err(CryptoError::BadKdfLength(0))
    );
}

#[test]
fn kdf_256_is_not_an_extension_of_128() {
    // L is part of the PRF input, so the 256-bit key does not start with the 128-bit key.
    let mut k16 = [0u8; 16];
    let mut k32 = [0u8; 32];
    kdf(b"key", b"label\0", b"ctx\0", &mut k16).expect("16");
    kdf(b"key", b"label\0", b"ctx\0", &mut k32).expect("32");
    assert_ne!(k32.get(..16), Some(&k16[..]));
}

#[test]
fn derive_errors() {
    let h = [7u8; 64];
    assert_eq!(
        derive_session_keys(Dialect(0x02FF), &[1; 16], None, None).map(|_| ()),
        Err(CryptoError::UnknownDialect(0x02FF))
    );
    assert_eq!(
        derive_session_keys(Dialect::SMB3_1_1, &[1; 16], None, None).map(|_| ()),
        Err(CryptoError::MissingPreauthHash)
    );
    assert_eq!(
        derive_signing_key(Dialect::SMB3_1_1, &[1; 16], None).map(|_| ()),
        Err(CryptoError::MissingPreauthHash)
    );
    assert_eq!(
        derive_session_keys(Dialect::SMB3_1_1, &[], Some(&h), None).map(|_| ()),
        Err(CryptoError::EmptySessionKey)
    );
    assert_eq!(
        derive_signing_key(Dialect::SMB2_1, &[], None).map(|_| ()),
        Err(CryptoError::EmptySessionKey)
    );
    assert_eq!(
        derive_session_keys(Dialect::SMB3_0, &[1; 16], None, Some(Cipher::Aes128Gcm)).map(|_| ()),
        Err(CryptoError::CipherNotAllowed {
            cipher: 2,
            dialect: 0x0300
        })
    );
    // The preauth hash is ignored before 3.1.1.
    let a = derive_session_keys(Dialect::SMB3_0, &[1; 16], Some(&h), None).expect("a");
    let b = derive_session_keys(Dialect::SMB3_0, &[1; 16], None, None).expect("b");
    assert_eq!(a.signing.as_bytes(), b.signing.as_bytes());
    // Changing the preauth hash changes every 3.1.1 key.
    let c = derive_session_keys(Dialect::SMB3_1_1, &[1; 16], Some(&h), None).expect("c");
    let d = derive_session_keys(Dialect::SMB3_1_1, &[1; 16], Some(&[8; 64]), None).expect("d");
    assert_ne!(c.signing.as_bytes(), d.signing.as_bytes());
    assert_ne!(c.application.as_bytes(), d.application.as_bytes());
}

#[test]
fn secret_key_debug_hides_bytes() {
    let k = SecretKey::from_slice(&[0xAB; 16]).expect("key");
    let s = format!("{k:?}");
    assert!(!s.to_lowercase().contains("ab"), "{s}");
    assert_eq!(k.len(), 16);
    assert!(SecretKey::from_slice(&[0; 15]).is_err());
    assert!(SecretKey::from_slice(&[0; 33]).is_err());
}

#[test]
fn signer_key_checks_and_short_messages() {
    assert!(Signer::new(SigningAlgorithm::AesCmac, &[0; 15]).is_err());
    assert!(Signer::new(SigningAlgorithm::AesGmac, &[0; 32]).is_err());
    assert!(Signer::new(SigningAlgorithm::HmacSha256, &[]).is_err());
    for alg in [
        SigningAlgorithm::HmacSha256,
        SigningAlgorithm::AesCmac,
        SigningAlgorithm::AesGmac,
    ] {
        let s = Signer::new(alg, &[9; 16]).expect("signer");
        assert_eq!(s.algorithm(), alg);
        for len in [0usize, 1, 48, 63] {
            let mut m = vec![0x5A; len];
            assert_eq!(s.sign(&mut m), Err(CryptoError::TooShort { len, min: 64 }));
            assert!(m.iter().all(|&b| b == 0x5A), "short message left untouched");
            assert!(!s.verify(&mut m));
        }
        // A bare 64-byte header signs and verifies.
        let mut m = vec![0u8; 64];
        s.sign(&mut m).expect("sign");
        assert!(s.verify(&mut m));
    }
}

#[test]
fn gmac_nonce_depends_on_direction_cancel_and_message_id() {
    let s = Signer::new(SigningAlgorithm::AesGmac, &[3; 16]).expect("signer");
    let sig_of = |command: u16, flags: u32, mid: u64| {
        let mut m = vec![0u8; 80];
        m[12..14].copy_from_slice(&command.to_le_bytes());
        m[16..20].copy_from_slice(&flags.to_le_bytes());
        m[24..32].copy_from_slice(&mid.to_le_bytes());
        s.sign(&mut m).expect("sign");
        m[48..64].to_vec()
    };
    let base = sig_of(8, 0, 5);
    assert_ne!(base, sig_of(8, 1, 5), "server-to-client bit");
    assert_ne!(base, sig_of(8, 0, 6), "message id");
    // The CANCEL bit (nonce bit 1) is pinned by the smbprotocol reference vector
    // `reference::signing_all_algorithms` ("cancel").
}

#[test]
fn parse_rejects_bad_headers() {
    let sealer = Sealer::new(Cipher::Aes128Gcm, &key(Cipher::Aes128Gcm)).expect("sealer");
    let mut good = with_reserved_header(&[1, 2, 3, 4, 5]);
    sealer.seal(77, &mut good).expect("seal");
    let h = parse_transform_header(&good).expect("good header");
    assert_eq!(h.session_id, 77);
    assert_eq!(h.original_message_size, 5);
    assert_eq!(h.flags, 1);

    for len in [0usize, 4, 51, 52] {
        assert_eq!(
            parse_transform_header(good.get(..len).expect("prefix")),
            Err(CryptoError::TooShort { len, min: 53 })
        );
    }
    let mut bad = good.clone();
    bad[0] = 0xFE;
    assert_eq!(
        parse_transform_header(&bad),
        Err(CryptoError::BadProtocolId([0xFE, b'S', b'M', b'B']))
    );
    let mut bad = good.clone();
    bad[42] = 2;
    assert_eq!(
        parse_transform_header(&bad),
        Err(CryptoError::BadTransformFlags(2))
    );
    let mut bad = good.clone();
    bad[36] = 6;
    assert_eq!(
        parse_transform_header(&bad),
        Err(CryptoError::SizeMismatch {
            declared: 6,
            actual: 5
        })
    );
    // Trailing bytes after the declared message are a size mismatch too.
    let mut longer = good.clone();
    longer.push(0);
    assert_eq!(
        parse_transform_header(&longer),
        Err(CryptoError::SizeMismatch {
            declared: 5,
            actual: 6
        })
    );
    let opener = Opener::new(Cipher::Aes128Gcm, &key(Cipher::Aes128Gcm)).expect("opener");
    assert!(matches!(
        opener.open(&mut longer),
        Err(CryptoError::SizeMismatch { .. })
    ));
}

#[test]
fn seal_rejects_empty_message_and_bad_keys() {
    for c in ALL_CIPHERS {
        let sealer = Sealer::new(c, &key(c)).expect("sealer");
        assert_eq!(sealer.cipher(), c);
        let mut buf = vec![0u8; 52];
        assert_eq!(
            sealer.seal(1, &mut buf),
            Err(CryptoError::TooShort { len: 52, min: 53 })
        );
        let mut tiny = vec![0u8; 3];
        assert!(sealer.seal(1, &mut tiny).is_err());
        let wrong = vec![0u8; if c.key_len() == 16 { 32 } else { 16 }];
        assert_eq!(
            Sealer::new(c, &wrong).map(|_| ()),
            Err(CryptoError::BadKeyLength {
                expected: c.key_len(),
                got: wrong.len()
            })
        );
        assert!(Opener::new(c, &wrong).is_err());
    }
}

#[test]
fn wrong_key_or_cipher_fails_authentication() {
    let sealer = Sealer::new(Cipher::Aes128Ccm, &key(Cipher::Aes128Ccm)).expect("sealer");
    let mut buf = with_reserved_header(b"some SMB2 message");
    sealer.seal(5, &mut buf).expect("seal");
    let other_key = Opener::new(Cipher::Aes128Ccm, &[0xEE; 16]).expect("opener");
    assert_eq!(
        other_key.open(&mut buf.clone()),
        Err(CryptoError::AuthenticationFailed)
    );
    let other_cipher = Opener::new(Cipher::Aes128Gcm, &key(Cipher::Aes128Gcm)).expect("opener");
    assert_eq!(
        other_cipher.open(&mut buf.clone()),
        Err(CryptoError::AuthenticationFailed)
    );
}

#[test]
fn nonces_are_unique_counter_plus_fixed_random_part() {
    for c in ALL_CIPHERS {
        let sealer = Sealer::new(c, &key(c)).expect("sealer");
        let mut seen = std::collections::HashSet::new();
        let mut random_part = None;
        for i in 0u64..1000 {
            let mut buf = with_reserved_header(b"x");
            sealer.seal(1, &mut buf).expect("seal");
            let h = parse_transform_header(&buf).expect("header");
            assert!(seen.insert(h.nonce), "{c:?}: nonce repeated");
            assert_eq!(h.nonce[..8], i.to_le_bytes(), "{c:?}: counter");
            let rnd = h.nonce[8..c.nonce_len()].to_vec();
            assert_eq!(*random_part.get_or_insert_with(|| rnd.clone()), rnd);
            assert!(
                h.nonce[c.nonce_len()..].iter().all(|&b| b == 0),
                "{c:?}: unused nonce bytes must be zero"
            );
        }
    }
}

#[test]
fn sealer_and_opener_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Sealer>();
    assert_send_sync::<Opener>();
    assert_send_sync::<Signer>();
    // Concurrent sealing from several threads never repeats a nonce.
    let sealer = std::sync::Arc::new(Sealer::new(Cipher::Aes128Gcm, &[4; 16]).expect("sealer"));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let s = sealer.clone();
            std::thread::spawn(move || {
                (0..250)
                    .map(|_| {
                        let mut buf = with_reserved_header(b"y");
                        s.seal(1, &mut buf).expect("seal");
                        parse_transform_header(&buf).expect("header").nonce
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = std::collections::HashSet::new();
    for h in handles {
        for n in h.join().expect("thread") {
            assert!(all.insert(n));
        }
    }
    assert_eq!(all.len(), 1000);
}

#[test]
fn preauth_hash_is_a_chain() {
    let mut a = PreauthHash::new();
    a.update(b"one");
    let fork = a.clone();
    a.update(b"two");
    let mut b = fork.clone();
    b.update(b"two");
    assert_eq!(a, b);
    assert_ne!(a.value(), fork.value());
    // Not the hash of the concatenation.
    let mut c = PreauthHash::new();
    c.update(b"onetwo");
    assert_ne!(a.value(), c.value());
}

/// Opening in parts refuses misuse: a part that is not a multiple of 16 bytes before the last
/// one, a message of another length at the end than at the beginning, and (CCM, decrypted at the
/// end) another header at the end.
#[test]
fn open_in_parts_refuses_misuse() {
    for c in [
        Cipher::Aes128Gcm,
        Cipher::Aes256Gcm,
        Cipher::Aes128Ccm,
        Cipher::Aes256Ccm,
    ] {
        let k = key(c);
        let sealer = Sealer::new(c, &k).expect("sealer");
        let opener = Opener::new(c, &k).expect("opener");
        let msg = vec![0x5au8; 100];
        let mut sealed = super::with_reserved_header(&msg);
        sealer.seal(7, &mut sealed).expect("seal");
        let total = sealed.len();
        let gcm = matches!(c, Cipher::Aes128Gcm | Cipher::Aes256Gcm);

        // Parts of 20 then 80 bytes: the first is not a multiple of 16.
        let mut buf = sealed.clone();
        let mut st = opener.open_begin(&buf[..52], total).expect("begin");
        opener.open_more(&mut st, &mut buf[52..72]);
        opener.open_more(&mut st, &mut buf[72..]);
        assert_eq!(
            opener.open_end(st, &mut buf).is_err(),
            gcm,
            "{c:?}: part of 20 bytes first"
        );

        // The message at the end is longer than the one begun.
        let mut buf = sealed.clone();
        let mut st = opener.open_begin(&buf[..52], total).expect("begin");
        opener.open_more(&mut st, &mut buf[52..]);
        buf.push(0);
        assert!(
            matches!(
                opener.open_end(st, &mut buf),
                Err(CryptoError::SizeMismatch { .. })
            ),
            "{c:?}"
        );

        // Another header at the end than at the beginning (another SessionId).
        let mut buf = sealed.clone();
        let mut st = opener.open_begin(&buf[..52], total).expect("begin");
        opener.open_more(&mut st, &mut buf[52..]);
        buf[44] ^= 1;
        let r = opener.open_end(st, &mut buf);
        if gcm {
            // (GCM authenticated the header it began with: the message is the one sealed.)
            assert_eq!(r.expect("open").0, 7, "{c:?}");
        } else {
            assert!(r.is_err(), "{c:?}: header changed between begin and end");
        }

        // A header announcing another length than the message has.
        assert!(
            opener.open_begin(&sealed[..52], total + 16).is_err(),
            "{c:?}"
        );
        assert!(
            opener.open_begin(&sealed[..40], total).is_err(),
            "{c:?}: short header"
        );
    }
}
