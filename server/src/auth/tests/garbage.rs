//! Truncated, garbled and random tokens: every one must give a clean error (or, for the
//! untouched token, success), never a panic.

use std::sync::Arc;

use proptest::prelude::*;
use sspi::ntlm::NtlmConfig;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, DataRepresentation, Ntlm,
    SecurityBuffer, Sspi, SspiImpl, Username,
};

use super::super::spnego::{self, OID_NTLMSSP};
use super::super::{Acceptor, AcceptorConfig, Step, UserDb};

const USER: &str = "alice";
const PASSWORD: &str = "pw";

fn acceptor() -> Acceptor {
    let mut db = UserDb::new();
    db.add_password(USER, PASSWORD);
    Acceptor::new(
        Arc::new(db),
        AcceptorConfig {
            allow_anonymous: true,
            map_to_guest: true,
            ..AcceptorConfig::default()
        },
    )
}

fn ntlm_step(
    ntlm: &mut Ntlm,
    creds: &mut <Ntlm as SspiImpl>::CredentialsHandle,
    input: Option<&[u8]>,
) -> Vec<u8> {
    let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
    let mut input_bufs = input.map(|i| vec![SecurityBuffer::new(i.to_vec(), BufferType::Token)]);
    let mut builder = ntlm
        .initialize_security_context()
        .with_credentials_handle(creds)
        .with_context_requirements(
            ClientRequestFlags::INTEGRITY | ClientRequestFlags::ALLOCATE_MEMORY,
        )
        .with_target_data_representation(DataRepresentation::Native)
        .with_target_name("cifs/smbdirect")
        .with_output(&mut output);
    if let Some(bufs) = input_bufs.as_mut() {
        builder = builder.with_input(bufs);
    }
    ntlm.initialize_security_context_impl(&mut builder)
        .unwrap()
        .resolve_to_result()
        .unwrap();
    std::mem::take(&mut output[0].buffer)
}

/// A real exchange recorded up to the last message, with the acceptor waiting for it.
struct Recorded {
    /// Acceptor in the ExpectAuthenticate state.
    waiting: Acceptor,
    /// The last client message (raw AUTHENTICATE or NegTokenResp wrapping it).
    last: Vec<u8>,
    /// The first client message (raw NEGOTIATE or NegTokenInit).
    first: Vec<u8>,
}

fn record(spnego_wrap: bool) -> Recorded {
    let mut ntlm = Ntlm::with_config(NtlmConfig::new("CLIENTPC".into()));
    let mut creds = ntlm
        .acquire_credentials_handle()
        .with_credential_use(CredentialUse::Outbound)
        .with_auth_data(&AuthIdentity {
            username: Username::new(USER, Some("WORKGROUP")).unwrap(),
            password: PASSWORD.to_string().into(),
        })
        .execute(&mut ntlm)
        .unwrap()
        .credentials_handle;
    let mut acc = acceptor();
    let negotiate = ntlm_step(&mut ntlm, &mut creds, None);
    let first = if spnego_wrap {
        let oids = super::super::der::tlv(0x06, OID_NTLMSSP);
        let list = super::super::der::tlv(0x30, &oids);
        let mut seq = super::super::der::tlv(0xa0, &list);
        seq.extend(super::super::der::tlv(
            0xa2,
            &super::super::der::tlv(0x04, &negotiate),
        ));
        let mut app = super::super::der::tlv(0x06, spnego::OID_SPNEGO);
        app.extend(super::super::der::tlv(
            0xa0,
            &super::super::der::tlv(0x30, &seq),
        ));
        super::super::der::tlv(0x60, &app)
    } else {
        negotiate.clone()
    };
    let Step::Continue(out) = acc.step(&first).unwrap() else {
        panic!()
    };
    let challenge = if spnego_wrap {
        let Ok(spnego::Token::Resp(r)) = spnego::parse(&out) else {
            panic!()
        };
        r.response_token.unwrap().to_vec()
    } else {
        out
    };
    let auth = ntlm_step(&mut ntlm, &mut creds, Some(&challenge));
    let last = if spnego_wrap {
        // No mechListMIC from this raw client: the acceptor must then refuse, since the
        // NTLM MIC was present. Tests below use the raw AUTHENTICATE mostly.
        spnego::neg_token_resp(&spnego::NegTokenResp {
            response_token: Some(&auth),
            ..Default::default()
        })
    } else {
        auth
    };
    Recorded {
        waiting: acc,
        last,
        first,
    }
}

#[test]
fn every_prefix_of_every_message_is_refused_cleanly() {
    for wrap in [false, true] {
        let rec = record(wrap);
        for cut in 0..rec.last.len() {
            let mut acc = rec.waiting.fork();
            let r = acc.step(&rec.last[..cut]);
            assert!(r.is_err(), "prefix {cut} of {} accepted", rec.last.len());
        }
        for cut in 0..rec.first.len() {
            // Empty input is the one legal short first message (asks for the mech list).
            let r = acceptor().step(&rec.first[..cut]);
            if cut == 0 {
                assert!(matches!(r, Ok(Step::Continue(_))));
            } else if !wrap && cut >= 16 {
                // A NEGOTIATE cut after its flags is still usable (old clients send 16
                // bytes) as long as its domain and workstation fields, once present, fit.
                let m = &rec.first;
                let field_end = |at: usize| {
                    let len = usize::from(u16::from_le_bytes([m[at], m[at + 1]]));
                    let off = u32::from_le_bytes(m[at + 4..at + 8].try_into().unwrap()) as usize;
                    if len == 0 {
                        0
                    } else {
                        off + len
                    }
                };
                let need = field_end(16).max(field_end(24));
                if cut < 32 || cut >= need {
                    assert!(matches!(r, Ok(Step::Continue(_))), "prefix {cut}: {r:?}");
                } else {
                    assert!(
                        r.is_err(),
                        "prefix {cut} with a field past its end accepted"
                    );
                }
            } else {
                assert!(
                    r.is_err(),
                    "prefix {cut} of first message accepted (wrap {wrap})"
                );
            }
        }
    }
}

#[test]
fn every_byte_of_the_authenticate_is_protected() {
    let rec = record(false);
    let mut acc = rec.waiting.fork();
    assert!(
        matches!(acc.step(&rec.last), Ok(Step::Done { .. })),
        "untouched message must pass"
    );
    for pos in 0..rec.last.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = rec.last.clone();
            bad[pos] ^= flip;
            let mut acc = rec.waiting.fork();
            match acc.step(&bad) {
                Err(_) => {}
                // Mapping the changed name to guest is the one accepted outcome: the user
                // name is no longer a known account and map_to_guest is on.
                Ok(Step::Done {
                    identity,
                    session_key,
                    ..
                }) if identity.kind == super::super::IdentityKind::Guest => {
                    assert!(session_key.is_empty());
                }
                Ok(other) => panic!("byte {pos} ^ {flip:#x} accepted: {other:?}"),
            }
        }
    }
}

#[test]
fn spnego_last_leg_without_mech_list_mic_is_refused() {
    let rec = record(true);
    let mut acc = rec.waiting.fork();
    assert!(acc.step(&rec.last).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_first_tokens_do_not_panic(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = acceptor().step(&input);
        let mut spnego_like = vec![0x60u8];
        spnego_like.extend_from_slice(&input);
        let _ = acceptor().step(&spnego_like);
        let mut resp_like = vec![0xa1u8];
        resp_like.extend_from_slice(&input);
        let _ = acceptor().step(&resp_like);
        let mut ntlm_like = b"NTLMSSP\0".to_vec();
        ntlm_like.extend_from_slice(&input);
        let _ = acceptor().step(&ntlm_like);
        // In the ExpectNegotiate state (NTLMSSP offered without a mechToken).
        let mut acc = acceptor();
        let init = [
            0x60, 0x1c, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02, 0xa0, 0x12, 0x30, 0x10,
            0xa0, 0x0e, 0x30, 0x0c, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02,
            0x02, 0x0b,
        ];
        // (mech 1.3.6.1.4.1.311.2.2.11, not NTLMSSP: refused)
        prop_assert!(acc.step(&init).is_err());
        let mut acc = acceptor();
        let mut init_ntlm_no_token = init.to_vec();
        init_ntlm_no_token[29] = 0x0a;
        prop_assert!(matches!(acc.step(&init_ntlm_no_token), Ok(Step::Continue(_))));
        let _ = acc.step(&input);
        let _ = acc.fork().step(&resp_like);
    }

    #[test]
    fn random_edits_of_real_tokens_do_not_panic(
        wrap in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        which in 0u8..2,
    ) {
        let rec = record(wrap);
        let mut msg = if which == 0 { rec.last.clone() } else { rec.first.clone() };
        for (i, v) in &edits {
            let n = msg.len();
            msg[i.index(n)] = *v;
        }
        let keep = cut.index(msg.len() + 1);
        msg.truncate(keep.max(msg.len() / 2));
        if which == 0 {
            let mut acc = rec.waiting.fork();
            let _ = acc.step(&msg);
            let _ = acc.step(&msg);
        } else {
            let mut acc = acceptor();
            let _ = acc.step(&msg);
            let _ = acc.step(&rec.last);
        }
    }

    #[test]
    fn random_authenticate_fields_do_not_panic(
        header in proptest::collection::vec(any::<u8>(), 64..96),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
        fields in proptest::collection::vec((0u16..400, 0u32..500), 6),
    ) {
        // Structured AUTHENTICATE: valid signature and type, random field descriptors.
        let mut m = header;
        m[..8].copy_from_slice(b"NTLMSSP\0");
        m[8..12].copy_from_slice(&3u32.to_le_bytes());
        for (k, (len, off)) in fields.iter().enumerate() {
            let at = 12 + 8 * k;
            m[at..at + 2].copy_from_slice(&len.to_le_bytes());
            m[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
            m[at + 4..at + 8].copy_from_slice(&off.to_le_bytes());
        }
        m.extend_from_slice(&payload);
        let rec_acc = {
            let mut acc = acceptor();
            let neg = [&b"NTLMSSP\0\x01\0\0\0"[..], &0xe2088297u32.to_le_bytes()].concat();
            let _ = acc.step(&neg);
            acc
        };
        let mut acc = rec_acc.fork();
        let r = acc.step(&m);
        // Random bytes cannot carry a valid NTProofStr; only anonymous or guest can pass.
        if let Ok(Step::Done { identity, .. }) = r {
            prop_assert_ne!(identity.kind, super::super::IdentityKind::User);
        }
    }
}

/// NEGOTIATE_MESSAGE domain/workstation fields: one that points back into
/// the 32-byte fixed part is refused like one that runs past the end; an
/// empty one may carry any offset.
#[test]
fn negotiate_fields_must_follow_the_fixed_part() {
    let mut m = b"NTLMSSP\0".to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&0xE208_8297u32.to_le_bytes());
    // DomainNameFields: 4 bytes at 32; WorkstationFields: empty.
    m.extend_from_slice(&[4, 0, 4, 0, 32, 0, 0, 0]);
    m.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0, 0]);
    m.extend_from_slice(b"WORK");
    assert!(matches!(acceptor().step(&m), Ok(Step::Continue(_))));
    for (at, off) in [(20, 0u32), (20, 8), (20, 31), (20, 33), (28, 16)] {
        let mut bad = m.clone();
        bad[at..at + 4].copy_from_slice(&off.to_le_bytes());
        if at == 28 {
            bad[24..26].copy_from_slice(&2u16.to_le_bytes());
        }
        assert!(acceptor().step(&bad).is_err(), "field at {at} with offset {off}");
    }
}
