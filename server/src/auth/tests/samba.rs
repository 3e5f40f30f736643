//! Exchanges recorded from Samba 4.17's own NTLMSSP/SPNEGO client code (`ntlm_auth
//! --helper-protocol=ntlmssp-client-1` and `gss-spnego-client`, user WORKGROUP\\alice),
//! replayed against an acceptor with the fixed challenge and timestamp of tests/pyspnego.rs.
//! Made with tests/samba_record.py on 2026-11-21; Samba accepted our final SPNEGO token
//! ("AF") and reported the session keys below ("GK"). Samba's client adds no MIC unless
//! signing or a session key is wanted, so these exercise the no-MIC path with key exchange.

use std::sync::Arc;

use super::super::{Acceptor, AcceptorConfig, AuthError, IdentityKind, Step, UserDb};
use super::pyspnego::{CHALLENGE, TIME};

const RAW_FIRST: &str =
    "4e544c4d53535000010000000582086200000000280000000000000028000000060100000000000f";
const RAW_LAST: &str = "4e544c4d53535000030000001800180058000000dc00dc0070000000120012004c0100000a000a005e0100000000000068010000100010006801000005820862060100000000000f12fc2285db51201af1df3519d9adae7b0000000000000000000000000000000000000000000000009d1c20d0410f6880ecedab427f3a1ab8010100000000000000c0d7e3ff5adc01e6a6ce31b63e4bff000000000200120057004f0052004b00470052004f00550050000100120053004d0042004400490052004500430054000400120073006d0062006400690072006500630074000300120073006d0062006400690072006500630074000700080000c0d7e3ff5adc010800300030000000000000000000000000000000eaa54efc1ed38d8bf6d21e0ddae66f51abaebeeb6cb7bc422bd43b962c58aff80a001000000000000000000000000000000000000000000057004f0052004b00470052004f005500500061006c006900630065008c80d634c02504d17533108c00478018";
const RAW_SESSION_KEY: &str = "35230904d53a33324bc2814bf18dce3e";
const SPNEGO_FIRST: &str = "604806062b0601050502a03e303ca00e300c060a2b06010401823702020aa22a04284e544c4d53535000010000000582086200000000280000000000000028000000060100000000000f";
const SPNEGO_LAST: &str = "a182018430820180a282017c048201784e544c4d53535000030000001800180058000000dc00dc0070000000120012004c0100000a000a005e0100000000000068010000100010006801000005820862060100000000000f93808cf9eaf26b3d0e8851dd3671ac1700000000000000000000000000000000000000000000000021b9c537478b2d9b953236bcc3e98b12010100000000000000c0d7e3ff5adc0197cfd25e4fa66298000000000200120057004f0052004b00470052004f00550050000100120053004d0042004400490052004500430054000400120073006d0062006400690072006500630074000300120073006d0062006400690072006500630074000700080000c0d7e3ff5adc0108003000300000000000000000000000000000002c163cd02ad7cd16515478e4409d9161cf67fc4e7c664c80765debf3e7db22880a001000000000000000000000000000000000000000000057004f0052004b00470052004f005500500061006c00690063006500f6503d33fcde657174debc7f5d75e1e6";
const SPNEGO_FINAL: &str = "a1073005a0030a0100";
const SPNEGO_SESSION_KEY: &str = "580cd138bdf6b607694543e337ea876b";

fn fixed_acceptor(password: &str) -> Acceptor {
    let mut db = UserDb::new();
    db.add_password("Alice", password);
    Acceptor::new(Arc::new(db), AcceptorConfig::default())
        .with_fixed_challenge(CHALLENGE)
        .with_fixed_time(TIME)
}

fn replay(password: &str, first: &str, last: &[u8]) -> Result<Step, AuthError> {
    let mut acc = fixed_acceptor(password);
    let Ok(Step::Continue(_)) = acc.step(&hex::decode(first).unwrap()) else {
        panic!("first token refused")
    };
    acc.step(last)
}

#[test]
fn samba_raw_ntlmssp() {
    let last = hex::decode(RAW_LAST).unwrap();
    let Ok(Step::Done {
        output,
        identity,
        session_key,
    }) = replay("S3cret-p\u{e4}ssword", RAW_FIRST, &last)
    else {
        panic!("Samba's AUTHENTICATE refused")
    };
    assert!(output.is_empty());
    assert_eq!(identity.user, "Alice");
    assert_eq!(identity.domain, "WORKGROUP");
    assert_eq!(identity.kind, IdentityKind::User);
    assert_eq!(hex::encode(session_key), RAW_SESSION_KEY);
    assert_eq!(
        replay("wrong", RAW_FIRST, &last).unwrap_err(),
        AuthError::LogonFailure
    );
}

#[test]
fn samba_spnego() {
    let last = hex::decode(SPNEGO_LAST).unwrap();
    let Ok(Step::Done {
        output,
        identity,
        session_key,
    }) = replay("S3cret-p\u{e4}ssword", SPNEGO_FIRST, &last)
    else {
        panic!("Samba's AUTHENTICATE refused")
    };
    assert_eq!(identity.user, "Alice");
    assert_eq!(hex::encode(session_key), SPNEGO_SESSION_KEY);
    assert_eq!(hex::encode(output), SPNEGO_FINAL);
}

#[test]
fn samba_tokens_replayed_against_a_fresh_challenge_fail() {
    let mut db = UserDb::new();
    db.add_password("Alice", "S3cret-p\u{e4}ssword");
    // Same timestamp (so the echoed AV pairs match), random server challenge.
    let mut acc = Acceptor::new(Arc::new(db), AcceptorConfig::default()).with_fixed_time(TIME);
    acc.step(&hex::decode(RAW_FIRST).unwrap()).unwrap();
    assert_eq!(
        acc.step(&hex::decode(RAW_LAST).unwrap()).unwrap_err(),
        AuthError::LogonFailure
    );
}
