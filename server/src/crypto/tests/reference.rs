//! Cross-checks against the `smbprotocol` Python package where Microsoft published no vectors
//! (AES-256 keys, AES-256 and AES-128-CCM/GCM for 3.1.1 beyond the blog's one message, all three
//! signing algorithms, 3.0 application key).
//!
//! Produced by running `smbprotocol_reference.py` (next to this file) with smbprotocol 1.17.0 /
//! cryptography 50.0.2 in a throwaway venv: it calls smbprotocol's own KDF
//! (`Session._smb3kdf`, cryptography's KBKDFHMAC), signing (`Connection._generate_signature`)
//! and encryption (`Connection._encrypt`, with `os.urandom` pinned so the nonce is known) on the
//! fixed inputs below. The hex is pasted from its output.

use super::super::*;
use super::{hx, with_reserved_header};

const SESSION_KEY: &str = "0123456789abcdeffedcba9876543210";
const FULL_SESSION_KEY: &str = "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf";
/// SHA-512 of "smbdirect crypto reference preauth".
const PREAUTH: &str = "d4c1d707bd2242e2f0ad3d20389bb3b8408c3d8a5359bce40b22862ca75970c4\
                       772f05d6fe974bd3e68b2d9e6ec77247dd752b802e4545637a2fd2ddf31fa2bd";

fn preauth() -> [u8; 64] {
    hx(PREAUTH).try_into().expect("64 bytes")
}

#[test]
fn kdf_smb30_all_keys() {
    for dialect in [Dialect::SMB3_0, Dialect::SMB3_0_2] {
        let k = derive_session_keys(dialect, &hx(SESSION_KEY), None, Some(Cipher::Aes128Ccm))
            .expect("keys");
        assert_eq!(k.signing.as_bytes(), hx("4b92a3cb9715e42b90e118be9875cef4"));
        assert_eq!(
            k.application.as_bytes(),
            hx("da262ec8375a830ad6133616d25bfb6e")
        );
        assert_eq!(
            k.server_in.expect("in").as_bytes(),
            hx("d3fd37bfc4e49261697ce1a13b5e24f0")
        );
        assert_eq!(
            k.server_out.expect("out").as_bytes(),
            hx("d7c9e92f73540bdd567139ca009e85f5")
        );
    }
}

#[test]
fn kdf_smb311_aes128_keys() {
    for cipher in [None, Some(Cipher::Aes128Ccm), Some(Cipher::Aes128Gcm)] {
        let k = derive_session_keys(
            Dialect::SMB3_1_1,
            &hx(SESSION_KEY),
            Some(&preauth()),
            cipher,
        )
        .expect("keys");
        assert_eq!(k.signing.as_bytes(), hx("62d5e89146f3d79bfe86569f17bf2ce0"));
        assert_eq!(
            k.application.as_bytes(),
            hx("7b0546f86ed03fe57a92243171cbdc9d")
        );
        assert_eq!(
            k.server_in.expect("in").as_bytes(),
            hx("2e2dd17139a109f57cb567160162def7")
        );
        assert_eq!(
            k.server_out.expect("out").as_bytes(),
            hx("8e57c773af7ec3764df1bdeeac8e06bc")
        );
    }
}

#[test]
fn kdf_smb311_aes256_uses_full_session_key() {
    for cipher in [Cipher::Aes256Ccm, Cipher::Aes256Gcm] {
        let k = derive_session_keys(
            Dialect::SMB3_1_1,
            &hx(FULL_SESSION_KEY),
            Some(&preauth()),
            Some(cipher),
        )
        .expect("keys");
        // Signing stays 128-bit, from the first 16 bytes of the session key.
        assert_eq!(k.signing.as_bytes(), hx("60da57472cc323a9e73517f757058497"));
        assert_eq!(
            k.server_in.expect("in").as_bytes(),
            hx("c88af3f46342b13a605a6e16aa828adb45bca75f1226598ec5484609ef4d3aae")
        );
        assert_eq!(
            k.server_out.expect("out").as_bytes(),
            hx("b039a0860ca7098995825530536fbafcb65e198dce7379b338b15235263e8a55")
        );
    }
    // The 128-bit ciphers only ever see the truncated key.
    let k128 = derive_session_keys(
        Dialect::SMB3_1_1,
        &hx(FULL_SESSION_KEY),
        Some(&preauth()),
        Some(Cipher::Aes128Gcm),
    )
    .expect("keys");
    let k128_trunc = derive_session_keys(
        Dialect::SMB3_1_1,
        &hx(&FULL_SESSION_KEY[..32]),
        Some(&preauth()),
        Some(Cipher::Aes128Gcm),
    )
    .expect("keys");
    assert_eq!(
        k128.server_in.expect("in").as_bytes(),
        k128_trunc.server_in.expect("in").as_bytes()
    );
}

#[test]
fn smb2x_keys_are_the_session_key() {
    for dialect in [Dialect::SMB2_0_2, Dialect::SMB2_1] {
        let k = derive_session_keys(dialect, &hx(SESSION_KEY), None, None).expect("keys");
        assert_eq!(k.signing.as_bytes(), hx(SESSION_KEY));
        assert_eq!(k.application.as_bytes(), hx(SESSION_KEY));
        assert!(k.server_in.is_none() && k.server_out.is_none());
        // A short session key is right-padded with zeros to 16 bytes.
        let short = derive_signing_key(dialect, &[1, 2, 3], None).expect("key");
        assert_eq!(
            short.as_bytes(),
            [1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}

const SIGNING_KEY: &str = "00112233445566778899aabbccddeeff";

/// (name, message as smbprotocol was given it (garbage in the Signature field), per algorithm
/// the expected signature: hmac, cmac, gmac).
const SIGNING_CASES: [(&str, &str, [&str; 3]); 3] = [
    (
        "request",
        "fe534d424000000000000000080001000800000000000000887766554433221100000000070000002500000000100000a0a1a2a3a4a5a6a7a8a9aaabacadaeaf000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30",
        [
            "a2bc4df87f7429a99ed79cd05d55fb0f",
            "104187682c4fcf3714889f9a499b4024",
            "d2ce40f338109905a775f51a4a88c472",
        ],
    ),
    (
        "response",
        "fe534d424000000000000000080001000900000000000000887766554433221100000000070000002500000000100000a0a1a2a3a4a5a6a7a8a9aaabacadaeaf6465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3",
        [
            "85e4b894e5540c7ea9aa3d4cfd2aee0d",
            "17aeb7f2778be5f1c9f00f6d10f87f56",
            "4ce865780a840798a4ad88685bbfb4a6",
        ],
    ),
    (
        "cancel",
        "fe534d4240000000000000000c0001000800000000000000420000000000000000000000070000002500000000100000a0a1a2a3a4a5a6a7a8a9aaabacadaeaf04000000",
        [
            "451809d5c6728c6e350c6166d620673d",
            "e5432f54cece7991e709542f7e3a9ff3",
            "91412759b42969a993e6873e2fc21628",
        ],
    ),
];

#[test]
fn signing_all_algorithms() {
    let algs = [
        SigningAlgorithm::HmacSha256,
        SigningAlgorithm::AesCmac,
        SigningAlgorithm::AesGmac,
    ];
    for (name, msg_hex, sigs) in SIGNING_CASES {
        for (alg, sig_hex) in algs.iter().zip(sigs) {
            let signer = Signer::new(*alg, &hx(SIGNING_KEY)).expect("signer");
            let original = hx(msg_hex);
            let mut msg = original.clone();
            signer.sign(&mut msg).expect("sign");
            let sig = hx(sig_hex);
            assert_eq!(
                msg.get(SIGNATURE_OFFSET..SIGNATURE_OFFSET + SIGNATURE_LEN),
                Some(&sig[..]),
                "{alg:?} {name}"
            );
            // Only the Signature field changed (SMB2_FLAGS_SIGNED was already set).
            assert_eq!(
                msg.get(..SIGNATURE_OFFSET),
                original.get(..SIGNATURE_OFFSET)
            );
            assert_eq!(msg.get(SMB2_HEADER_LEN..), original.get(SMB2_HEADER_LEN..));
            let signed = msg.clone();
            assert!(signer.verify(&mut msg), "{alg:?} {name} verifies");
            assert_eq!(msg, signed, "verify leaves the message as it was");
            let mut garbage = original.clone();
            assert!(
                !signer.verify(&mut garbage),
                "{alg:?} {name} garbage signature"
            );
            assert_eq!(garbage, original);
        }
    }
}

#[test]
fn sign_sets_the_signed_flag() {
    let (_, msg_hex, sigs) = SIGNING_CASES[0];
    let mut msg = hx(msg_hex);
    // Clear SMB2_FLAGS_SIGNED; sign() must set it back, giving the reference signature.
    if let Some(b) = msg.get_mut(16) {
        *b &= !0x08;
    }
    let signer = Signer::new(SigningAlgorithm::AesCmac, &hx(SIGNING_KEY)).expect("signer");
    signer.sign(&mut msg).expect("sign");
    assert_eq!(msg.get(16), Some(&0x08));
    assert_eq!(msg.get(48..64), Some(&hx(sigs[1])[..]));
}

const ENC_PLAINTEXT: &str = "fe534d424000000000000000080001000100000000000000090000000000000000000000070000002500000000100000a0a1a2a3a4a5a6a7a8a9aaabacadaeaf00070e151c232a31383f464d545b626970777e858c939aa1a8afb6bdc4cbd2d9e0e7eef5fc030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0c7ced5dce3eaf1f8ff060d141b222930373e454c535a61686f767d848b9299a0a7aeb5bcc3cad1d8dfe6edf4fb020910171e252c333a41484f56";
const ENC_NONCE_SOURCE: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";
const ENC_SESSION_ID: u64 = 0x0000_1000_0000_0025;

const ENC_CASES: [(Cipher, &str); 4] = [
    (
        Cipher::Aes128Ccm,
        "fd534d4260ca113e1ed09c5b99d3e252837e64d5f0e1d2c3b4a5968778695a0000000000bb000000000001002500000000100000b4cb44e7f0dfb2d98e9728abc6b3f9e44365a3d800eb7665cbe9bd4fab53f00e21c4b6d0c52928608f4c38715641050b9e070be07d20060749a51c138d10e6ffbd129fee74c5ca5d1e32f9803e56ce070dbd10fbf93451c97774a437153738ff417eb30136b234303d3f7c0d6a58251464f0d843bbce4fed8945a598a1be32df6a2199cdfca109d99af0196f84647ed8802528fc14bb017ac618cc97b722c39ca29dd614c093d460f2900e09cdb2c5d28fc7901741a77ec155f322",
    ),
    (
        Cipher::Aes128Gcm,
        "fd534d422f2cd16f765d0ae89dea95fb9752abaaf0e1d2c3b4a5968778695a4b00000000bb000000000001002500000000100000f7e2d82a6156cff917eda9cb5290314360ed19e78e9216ff57990a57f05e5c922bb79efbb858c83a6fc771fd7818c0adc7e652fbed2ae3d99a029d98425a438c882159501afa649b3a312108f5eae0b014d2dae75edb1510fd5d940876a14dfb6a46e6594ff3394bc7fe4be5c4a969d6c6539344289942937562feef17585586177764e4c076d72db7f494ab17bbec836b84c3ef1581f5a96306b3d3b37313ad96b3d062f4771d7735304975d51c5d24c8cd9d91fb44aa9c88cd8b",
    ),
    (
        Cipher::Aes256Ccm,
        "fd534d42898f1f5d61b276162638b5235c391641f0e1d2c3b4a5968778695a0000000000bb0000000000010025000000001000003d6077caa4d40594cac542410583b0e53fba5a2fd73014b2c161390049f5ef481fcf57103226fc52fa3d03b5c104ee8546e23cae80d594897e6142acaf37c7fd20a99f26e28e6812dca38e2262463882d201fcfefa6e5f83a8c231593b350ac89643ec5026d45ecbee9e7160bc804af729b93cd09dde62882b3ba1e5f0f81558d2053844f1c168cad5b50a53b5ef5321857f6d4dd3fd56b290613bd01540f5cb5467b8e90dcc8b16ec14e469f0f68d82de2e03aaf76bd3eaeebcb0",
    ),
    (
        Cipher::Aes256Gcm,
        "fd534d42614550cba15af49780870178083be676f0e1d2c3b4a5968778695a4b00000000bb00000000000100250000000010000023b831a178f3f31116bf1050fead933b60bc1a7820e0c592607747b3359a09cdd9f91eb52be284357fac8cc30921dbd06abe4f5bae8361712399f65a4997bae19e163771f062c4402f47f23307e7ef66841155731e596fe9b90a2fc7ac47a5d9834929ab0138f1f199087d4a61df332e516a6576e41fa872ad68f5ea145efd423b178cbbe8be2a7d446c303bd10bb16170e2d23cc1684b848e8022bfa6008551e28b63000def4a7582ae4e08515ded3fcae5b5dea19e94a390a3a4",
    ),
];

#[test]
fn encryption_all_ciphers() {
    let plaintext = hx(ENC_PLAINTEXT);
    let source = hx(ENC_NONCE_SOURCE);
    for (cipher, expected_hex) in ENC_CASES {
        // Key bytes 0x40, 0x41, ... as in the script.
        let key: Vec<u8> = (0x40u8..).take(cipher.key_len()).collect();
        // smbprotocol writes the cipher's nonce followed by zeros.
        let mut nonce = [0u8; 16];
        for (d, s) in nonce.iter_mut().zip(&source).take(cipher.nonce_len()) {
            *d = *s;
        }
        let expected = hx(expected_hex);
        let sealer = Sealer::new(cipher, &key).expect("sealer");
        let mut buf = with_reserved_header(&plaintext);
        sealer
            .seal_with_nonce(&nonce, ENC_SESSION_ID, &mut buf)
            .expect("seal");
        assert_eq!(buf, expected, "{cipher:?} seal");

        let opener = Opener::new(cipher, &key).expect("opener");
        let mut received = expected.clone();
        let (sid, range) = opener.open(&mut received).expect("open");
        assert_eq!(sid, ENC_SESSION_ID);
        assert_eq!(received.get(range), Some(&plaintext[..]), "{cipher:?} open");
    }
}
