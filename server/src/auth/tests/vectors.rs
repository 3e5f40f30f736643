//! MS-NLMP section 4.2 examples. Values copied from the specification (4.2.1 common
//! values: user "User", domain "Domain", password "Password", ServerChallenge
//! 0123456789abcdef, ClientChallenge aa*8, Time 0, RandomSessionKey 55*16).

use std::sync::Arc;

use super::super::ntlm::{self, flags, Challenge};
use super::super::ntlm_crypto::{
    hmac_md5, nt_hash, ntowfv2, rc4_once, seal_key, sign_key, Direction, NtlmSecurity,
};
use super::super::{AcceptorConfig, AuthError, IdentityKind, UserDb};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace([' ', '\n'], "")).unwrap()
}

fn h16(s: &str) -> [u8; 16] {
    h(s).try_into().unwrap()
}

fn u16s(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

const SERVER_CHALLENGE: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
const RANDOM_SESSION_KEY: [u8; 16] = [0x55; 16];

/// 4.2.4.1.3 temp (the NTLMv2 client challenge blob).
const TEMP: &str = "01 01 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    aa aa aa aa aa aa aa aa 00 00 00 00 02 00 0c 00 44 00 6f 00 6d 00 61 00 69 00 6e 00
    01 00 0c 00 53 00 65 00 72 00 76 00 65 00 72 00 00 00 00 00 00 00 00 00";

/// 4.2.4.3 CHALLENGE_MESSAGE.
const V2_CHALLENGE: &str = "4e 54 4c 4d 53 53 50 00 02 00 00 00 03 00 0c 00
    38 00 00 00 33 82 8a e2 01 23 45 67 89 ab cd ef 00 00 00 00 00 00 00 00 24 00 24 00 44 00 00 00
    06 00 70 17 00 00 00 0f 53 00 65 00 72 00 76 00 65 00 72 00 02 00 0c 00 44 00 6f 00 6d 00 61 00
    69 00 6e 00 01 00 0c 00 53 00 65 00 72 00 76 00 65 00 72 00 00 00 00 00";

/// 4.2.4.3 AUTHENTICATE_MESSAGE.
const V2_AUTHENTICATE: &str = "4e 54 4c 4d 53 53 50 00 03 00 00 00 18 00 18 00
    6c 00 00 00 54 00 54 00 84 00 00 00 0c 00 0c 00 48 00 00 00 08 00 08 00 54 00 00 00
    10 00 10 00 5c 00 00 00 10 00 10 00 d8 00 00 00 35 82 88 e2 05 01 28 0a 00 00 00 0f
    44 00 6f 00 6d 00 61 00 69 00 6e 00 55 00 73 00 65 00 72 00 43 00 4f 00 4d 00 50 00
    55 00 54 00 45 00 52 00 86 c3 50 97 ac 9c ec 10 25 54 76 4a 57 cc cc 19 aa aa aa aa
    aa aa aa aa 68 cd 0a b8 51 e5 1c 96 aa bc 92 7b eb ef 6a 1c 01 01 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 aa aa aa aa aa aa aa aa 00 00 00 00 02 00 0c 00 44 00 6f 00
    6d 00 61 00 69 00 6e 00 01 00 0c 00 53 00 65 00 72 00 76 00 65 00 72 00 00 00 00 00
    00 00 00 00 c5 da d2 54 4f c9 79 90 94 ce 1c e9 0b c9 d0 3e";

/// 4.2.2.3 NTLMv1 AUTHENTICATE_MESSAGE.
const V1_AUTHENTICATE: &str = "4e 54 4c 4d 53 53 50 00 03 00 00 00 18 00 18 00
    6c 00 00 00 18 00 18 00 84 00 00 00 0c 00 0c 00 48 00 00 00 08 00 08 00 54 00 00 00
    10 00 10 00 5c 00 00 00 10 00 10 00 9c 00 00 00 35 82 80 e2 05 01 28 0a 00 00 00 0f
    44 00 6f 00 6d 00 61 00 69 00 6e 00 55 00 73 00 65 00 72 00 43 00 4f 00 4d 00 50 00
    55 00 54 00 45 00 52 00 98 de f7 b8 7f 88 aa 5d af e2 df 77 96 88 a1 72 de f1 1c 7d
    5c cd ef 13 67 c4 30 11 f3 02 98 a2 ad 35 ec e6 4f 16 33 1c 44 bd be d9 27 84 1f 94
    51 88 22 b1 b3 f3 50 c8 95 86 82 ec bb 3e 3c b7";

#[test]
fn nt_hash_4_2_2_1_2() {
    assert_eq!(
        nt_hash("Password"),
        h16("a4 f4 9c 40 65 10 bd ca b6 82 4e e7 c3 0f d8 52")
    );
}

#[test]
fn ntlmv2_calculations_4_2_4() {
    // 4.2.4.1.1 NTOWFv2
    let k = ntowfv2(&nt_hash("Password"), &u16s("User"), &u16s("Domain"));
    assert_eq!(k, h16("0c 86 8a 40 3b fd 7a 93 a3 00 1e f2 2e f0 2e 3f"));
    // The user name is upper-cased, the domain is not.
    assert_eq!(
        ntowfv2(&nt_hash("Password"), &u16s("uSeR"), &u16s("Domain")),
        k
    );
    assert_ne!(
        ntowfv2(&nt_hash("Password"), &u16s("User"), &u16s("DOMAIN")),
        k
    );
    // 4.2.4.2.2 NTLMv2 response: NTProofStr
    let proof = hmac_md5(&k, &[&SERVER_CHALLENGE, &h(TEMP)]);
    assert_eq!(
        proof,
        h16("68 cd 0a b8 51 e5 1c 96 aa bc 92 7b eb ef 6a 1c")
    );
    // 4.2.4.2.1 LMv2 response
    let lm = hmac_md5(&k, &[&SERVER_CHALLENGE, &[0xaa; 8]]);
    assert_eq!(lm, h16("86 c3 50 97 ac 9c ec 10 25 54 76 4a 57 cc cc 19"));
    // 4.2.4.1.2 Session base key
    let sbk = hmac_md5(&k, &[&proof]);
    assert_eq!(sbk, h16("8d e4 0c ca db c1 4a 82 f1 5c b0 ad 0d e9 5c a3"));
    // 4.2.4.2.3 Encrypted session key (KeyExchangeKey = SessionBaseKey for NTLMv2)
    let enc = rc4_once(&sbk, &RANDOM_SESSION_KEY);
    assert_eq!(enc, h16("c5 da d2 54 4f c9 79 90 94 ce 1c e9 0b c9 d0 3e"));
    assert_eq!(rc4_once(&sbk, &enc), RANDOM_SESSION_KEY);
}

#[test]
fn ntlmv2_sign_seal_4_2_4_4() {
    let negotiated = u32::from_le_bytes([0x33, 0x82, 0x8a, 0xe2]);
    let seal = seal_key(&RANDOM_SESSION_KEY, negotiated, Direction::ClientToServer);
    let sign = sign_key(&RANDOM_SESSION_KEY, Direction::ClientToServer);
    assert_eq!(seal, h16("59 f6 00 97 3c c4 96 0a 25 48 0a 7c 19 6e 4c 58"));
    assert_eq!(sign, h16("47 88 dc 86 1b 47 82 f3 5d 43 fd 98 fe 1a 2d 39"));
    // The server-to-client keys differ from the client-to-server ones.
    assert_ne!(
        sign_key(&RANDOM_SESSION_KEY, Direction::ServerToClient),
        sign
    );
    assert_ne!(
        seal_key(&RANDOM_SESSION_KEY, negotiated, Direction::ServerToClient),
        seal
    );

    // GSS_WrapEx of "Plaintext" (UTF-16LE), sequence number 0.
    let mut msg = u16s("Plaintext")
        .iter()
        .flat_map(|u| u.to_le_bytes())
        .collect::<Vec<u8>>();
    let plain = msg.clone();
    let mut st = NtlmSecurity::new(&RANDOM_SESSION_KEY, negotiated, Direction::ClientToServer);
    let sig = st.seal(&mut msg);
    assert_eq!(
        msg,
        h("54 e5 01 65 bf 19 36 dc 99 60 20 c1 81 1b 0f 06 fb 5f")
    );
    assert_eq!(sig, h16("01 00 00 00 7f b3 8e c5 c5 5d 49 76 00 00 00 00"));
    assert_ne!(msg, plain);

    // The GetMIC checksum is the same HMAC, RC4'd with a fresh handle: verify against a
    // signature made from the explicit keys (second message uses sequence number 1).
    let mut a = NtlmSecurity::from_keys(sign, &seal, true);
    let mut b = NtlmSecurity::from_keys(sign, &seal, true);
    let s0 = a.sign(b"first");
    let s1 = a.sign(b"second");
    assert_eq!(&s1[12..], &1u32.to_le_bytes());
    assert!(b.verify(b"first", &s0));
    assert!(b.verify(b"second", &s1));
    let mut c = NtlmSecurity::from_keys(sign, &seal, true);
    assert!(!c.verify(b"First", &s0));
}

fn vector_setup(password: &str) -> (UserDb, Challenge) {
    let mut db = UserDb::new();
    db.add_password("user", password);
    let chal = Challenge {
        flags: u32::from_le_bytes([0x33, 0x82, 0x8a, 0xe2]),
        server_challenge: SERVER_CHALLENGE,
        message: h(V2_CHALLENGE),
    };
    (db, chal)
}

#[test]
fn verifies_the_4_2_4_authenticate_message() {
    let (db, chal) = vector_setup("Password");
    let auth = h(V2_AUTHENTICATE);
    let parsed = ntlm::parse_authenticate(&auth).unwrap();
    assert_eq!(String::from_utf16(&parsed.user).unwrap(), "User");
    assert_eq!(String::from_utf16(&parsed.domain).unwrap(), "Domain");
    assert_eq!(String::from_utf16(&parsed.workstation).unwrap(), "COMPUTER");
    assert_eq!(parsed.nt_response.len(), 0x54);

    let v = ntlm::verify(&db, &AcceptorConfig::default(), &[], &chal, &auth).unwrap();
    assert_eq!(v.kind, IdentityKind::User);
    assert_eq!(v.user, "user");
    assert_eq!(v.domain, "Domain");
    assert_eq!(v.exported_key, Some(RANDOM_SESSION_KEY));
    assert!(!v.mic_present);
    assert_ne!(v.flags & flags::KEY_EXCH, 0);
}

#[test]
fn the_4_2_4_message_fails_with_wrong_password_or_other_challenge() {
    let cfg = AcceptorConfig::default();
    let auth = h(V2_AUTHENTICATE);
    let (db, chal) = vector_setup("password");
    assert_eq!(
        ntlm::verify(&db, &cfg, &[], &chal, &auth).err(),
        Some(AuthError::LogonFailure)
    );
    let (db, mut chal) = vector_setup("Password");
    chal.server_challenge[7] ^= 1;
    assert_eq!(
        ntlm::verify(&db, &cfg, &[], &chal, &auth).err(),
        Some(AuthError::LogonFailure)
    );
    // Unknown user: the same error.
    let mut other = UserDb::new();
    other.add_password("someone", "Password");
    let (_, chal) = vector_setup("Password");
    assert_eq!(
        ntlm::verify(&other, &cfg, &[], &chal, &auth).err(),
        Some(AuthError::LogonFailure)
    );
    // ... unless unknown users map to guest.
    let guest_cfg = AcceptorConfig {
        map_to_guest: true,
        ..AcceptorConfig::default()
    };
    let v = ntlm::verify(&other, &guest_cfg, &[], &chal, &auth).unwrap();
    assert_eq!(v.kind, IdentityKind::Guest);
    assert_eq!(v.exported_key, None);
    // A known user with a wrong password is not mapped to guest.
    let (db, chal) = vector_setup("wrong");
    assert_eq!(
        ntlm::verify(&db, &guest_cfg, &[], &chal, &auth).err(),
        Some(AuthError::LogonFailure)
    );
}

#[test]
fn tampered_4_2_4_message_fails() {
    let (db, chal) = vector_setup("Password");
    let cfg = AcceptorConfig::default();
    let good = h(V2_AUTHENTICATE);
    // Flip one bit in every byte of the NT response (0x84..0xd8): NTProofStr or blob.
    for i in 0x84..0xd8 {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert!(
            ntlm::verify(&db, &cfg, &[], &chal, &bad).is_err(),
            "byte {i:#x}"
        );
    }
    // A changed encrypted session key changes the exported key (no MIC here to catch it).
    let mut bad = good.clone();
    bad[0xd8] ^= 1;
    let v = ntlm::verify(&db, &cfg, &[], &chal, &bad).unwrap();
    assert_ne!(v.exported_key, Some(RANDOM_SESSION_KEY));
}

#[test]
fn ntlmv1_4_2_2_is_refused() {
    let (db, chal) = vector_setup("Password");
    let auth = h(V1_AUTHENTICATE);
    assert_eq!(
        ntlm::verify(&db, &AcceptorConfig::default(), &[], &chal, &auth).err(),
        Some(AuthError::LogonFailure)
    );
}

#[test]
fn challenge_message_layout() {
    let cfg = AcceptorConfig::default();
    let client = flags::UNICODE
        | flags::REQUEST_TARGET
        | flags::NTLM
        | flags::EXTENDED_SESSIONSECURITY
        | flags::NEGOTIATE_128
        | flags::KEY_EXCH
        | flags::SIGN
        | flags::VERSION
        | flags::LM_KEY
        | 0x0000_0040; // DATAGRAM: not granted
    let c = ntlm::build_challenge(client, [9; 8], 0x01d9_0000_1234_5678, &cfg);
    let m = &c.message;
    assert_eq!(&m[..12], b"NTLMSSP\0\x02\0\0\0");
    let f = u32::from_le_bytes(m[20..24].try_into().unwrap());
    assert_eq!(f, c.flags);
    assert_eq!(f & flags::LM_KEY, 0);
    assert_eq!(f & 0x40, 0);
    for bit in [
        flags::UNICODE,
        flags::NTLM,
        flags::TARGET_INFO,
        flags::EXTENDED_SESSIONSECURITY,
        flags::KEY_EXCH,
        flags::NEGOTIATE_128,
        flags::SIGN,
        flags::VERSION,
        flags::TARGET_TYPE_SERVER,
    ] {
        assert_ne!(f & bit, 0, "{bit:#x}");
    }
    assert_eq!(f & (flags::SEAL | flags::NEGOTIATE_56), 0);
    assert_eq!(&m[24..32], &[9; 8]);
    // Target name: "SMBDIRECT" in UTF-16LE at offset 56.
    let tn_len = usize::from(u16::from_le_bytes([m[12], m[13]]));
    let tn_off = u32::from_le_bytes(m[16..20].try_into().unwrap()) as usize;
    assert_eq!(tn_off, 56);
    assert_eq!(
        &m[tn_off..tn_off + tn_len],
        &"SMBDIRECT"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<_>>()[..]
    );
    // Target info: AV pairs 2, 1, 4, 3, 7, 0 with the timestamp.
    let ti_len = usize::from(u16::from_le_bytes([m[40], m[41]]));
    let ti_off = u32::from_le_bytes(m[44..48].try_into().unwrap()) as usize;
    assert_eq!(ti_off + ti_len, m.len());
    let mut ti = &m[ti_off..];
    let mut ids = Vec::new();
    loop {
        let id = u16::from_le_bytes([ti[0], ti[1]]);
        let len = usize::from(u16::from_le_bytes([ti[2], ti[3]]));
        if id == 7 {
            assert_eq!(&ti[4..12], &0x01d9_0000_1234_5678u64.to_le_bytes());
        }
        ids.push(id);
        ti = &ti[4 + len..];
        if id == 0 {
            break;
        }
    }
    assert_eq!(ids, [2, 1, 4, 3, 7, 0]);
    assert!(ti.is_empty());
    // Version present because the client asked for it.
    assert_eq!(m[55], 0x0f);
    // OEM-only client: OEM target name and no UNICODE.
    let c = ntlm::build_challenge(flags::OEM | flags::REQUEST_TARGET, [0; 8], 0, &cfg);
    let f = u32::from_le_bytes(c.message[20..24].try_into().unwrap());
    assert_eq!(f & (flags::UNICODE | flags::OEM), flags::OEM);
    assert_eq!(&c.message[56..65], b"SMBDIRECT");
}

#[test]
fn acceptor_accepts_the_4_2_4_exchange_raw() {
    // The spec's AUTHENTICATE has no MIC, so any NEGOTIATE works in front of it.
    let (db, _) = vector_setup("Password");
    // The client echoes MsvAvNbDomainName "Domain" and MsvAvNbComputerName "Server": our
    // CHALLENGE must have announced the same names.
    let cfg = AcceptorConfig {
        nb_computer_name: "Server".into(),
        nb_domain_name: "Domain".into(),
        ..AcceptorConfig::default()
    };
    let db = Arc::new(db);
    let neg = [&b"NTLMSSP\0\x01\0\0\0"[..], &0xe2088297u32.to_le_bytes()].concat();
    let mut other = super::super::Acceptor::new(db.clone(), AcceptorConfig::default())
        .with_fixed_challenge(SERVER_CHALLENGE);
    other.step(&neg).unwrap();
    assert!(
        matches!(
            other.step(&h(V2_AUTHENTICATE)),
            Err(AuthError::InvalidParameter(_))
        ),
        "an answer to a CHALLENGE naming another server must be refused"
    );

    let mut acc = super::super::Acceptor::new(db, cfg).with_fixed_challenge(SERVER_CHALLENGE);
    let super::super::Step::Continue(chal) = acc.step(&neg).unwrap() else {
        panic!("expected a challenge")
    };
    assert_eq!(&chal[24..32], &SERVER_CHALLENGE);
    match acc.step(&h(V2_AUTHENTICATE)).unwrap() {
        super::super::Step::Done {
            output,
            identity,
            session_key,
        } => {
            assert!(output.is_empty());
            assert_eq!(identity.user, "user");
            assert_eq!(identity.kind, IdentityKind::User);
            assert_eq!(session_key, RANDOM_SESSION_KEY);
        }
        other => panic!("{other:?}"),
    }
    // Finished: nothing more is accepted.
    assert!(acc.step(&h(V2_AUTHENTICATE)).is_err());
}

#[test]
fn lm_only_is_refused() {
    // The 4.2.2 NTLMv1 message with its NT response removed: only the LM response is left.
    let (db, chal) = vector_setup("Password");
    let mut auth = h(V1_AUTHENTICATE);
    auth[20..24].copy_from_slice(&[0, 0, 0, 0]);
    let parsed = ntlm::parse_authenticate(&auth).unwrap();
    assert!(parsed.nt_response.is_empty());
    assert_eq!(parsed.lm_response.len(), 24);
    assert_eq!(
        ntlm::verify(&db, &AcceptorConfig::default(), &[], &chal, &auth).err(),
        Some(AuthError::LogonFailure)
    );
}
