//! Full exchanges against the `sspi` crate's NTLM and Negotiate (SPNEGO) clients: code
//! written independently of ours, so agreement means both sides follow MS-NLMP/MS-SPNG.

use std::sync::Arc;

use sspi::negotiate::NegotiateConfig;
use sspi::ntlm::NtlmConfig;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials, DataRepresentation,
    Negotiate, Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus, Sspi, SspiImpl, Username,
};

use super::super::der::{tlv, TAG_OID, TAG_SEQUENCE};
use super::super::spnego::{self, Token, OID_NTLMSSP};
use super::super::{
    negotiate_token, Acceptor, AcceptorConfig, AuthError, IdentityKind, Step, UserDb,
};

const USER: &str = "alice";
const PASSWORD: &str = "S3cret-pässword";

fn identity(user: &str, password: &str) -> AuthIdentity {
    AuthIdentity {
        username: Username::new(user, Some("WORKGROUP")).unwrap(),
        password: password.to_string().into(),
    }
}

fn db() -> Arc<UserDb> {
    let mut db = UserDb::new();
    db.add_password("Alice", PASSWORD);
    db.add_password("bob", "other");
    Arc::new(db)
}

fn acceptor(cfg: AcceptorConfig) -> Acceptor {
    Acceptor::new(db(), cfg)
}

/// One initialize_security_context call; returns the status and the output token.
fn init_step<S>(
    ctx: &mut S,
    creds: &mut <S as SspiImpl>::CredentialsHandle,
    input: Option<&[u8]>,
    req: ClientRequestFlags,
) -> sspi::Result<(SecurityStatus, Vec<u8>)>
where
    S: Sspi + SspiImpl,
{
    let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
    let mut input_bufs = input.map(|i| vec![SecurityBuffer::new(i.to_vec(), BufferType::Token)]);
    let mut builder = ctx
        .initialize_security_context()
        .with_credentials_handle(creds)
        .with_context_requirements(req)
        .with_target_data_representation(DataRepresentation::Native)
        .with_target_name("cifs/smbdirect")
        .with_output(&mut output);
    if let Some(bufs) = input_bufs.as_mut() {
        builder = builder.with_input(bufs);
    }
    let result = ctx
        .initialize_security_context_impl(&mut builder)?
        .resolve_to_result()?;
    Ok((result.status, std::mem::take(&mut output[0].buffer)))
}

const REQ: ClientRequestFlags = ClientRequestFlags::CONFIDENTIALITY
    .union(ClientRequestFlags::INTEGRITY)
    .union(ClientRequestFlags::ALLOCATE_MEMORY);

/// A raw NTLMSSP client (sspi::Ntlm).
struct RawClient {
    ntlm: Ntlm,
    creds: <Ntlm as SspiImpl>::CredentialsHandle,
}

impl RawClient {
    fn new(user: &str, password: &str) -> Self {
        let mut ntlm = Ntlm::with_config(NtlmConfig::new("CLIENTPC".into()));
        let creds = ntlm
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&identity(user, password))
            .execute(&mut ntlm)
            .unwrap()
            .credentials_handle;
        Self { ntlm, creds }
    }

    fn step(&mut self, input: Option<&[u8]>) -> Vec<u8> {
        init_step(&mut self.ntlm, &mut self.creds, input, REQ)
            .unwrap()
            .1
    }

    fn session_key(&self) -> Vec<u8> {
        let k = self.ntlm.query_context_session_key().unwrap();
        k.session_key.as_ref().clone()
    }
}

/// Runs NEGOTIATE and CHALLENGE; returns (client, acceptor, NEGOTIATE, AUTHENTICATE).
fn raw_until_authenticate(
    user: &str,
    password: &str,
    cfg: AcceptorConfig,
) -> (RawClient, Acceptor, Vec<u8>, Vec<u8>) {
    let mut client = RawClient::new(user, password);
    let mut acc = acceptor(cfg);
    let negotiate = client.step(None);
    assert!(negotiate.starts_with(b"NTLMSSP\0\x01\0\0\0"));
    let Step::Continue(challenge) = acc.step(&negotiate).unwrap() else {
        panic!("expected CHALLENGE")
    };
    let authenticate = client.step(Some(&challenge));
    assert!(authenticate.starts_with(b"NTLMSSP\0\x03\0\0\0"));
    (client, acc, negotiate, authenticate)
}

#[test]
fn raw_ntlmssp_with_sspi_client() {
    let (client, mut acc, _, authenticate) =
        raw_until_authenticate(USER, PASSWORD, AcceptorConfig::default());
    match acc.step(&authenticate).unwrap() {
        Step::Done {
            output,
            identity,
            session_key,
        } => {
            assert!(output.is_empty());
            assert_eq!(identity.user, "Alice");
            assert_eq!(identity.domain, "WORKGROUP");
            assert_eq!(identity.kind, IdentityKind::User);
            assert_eq!(session_key.len(), 16);
            assert_eq!(session_key, client.session_key());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn raw_user_name_case_does_not_matter() {
    let (client, mut acc, _, authenticate) =
        raw_until_authenticate("ALICE", PASSWORD, AcceptorConfig::default());
    let Step::Done {
        identity,
        session_key,
        ..
    } = acc.step(&authenticate).unwrap()
    else {
        panic!()
    };
    assert_eq!(identity.user, "Alice");
    assert_eq!(session_key, client.session_key());
}

#[test]
fn wrong_password_and_unknown_user_fail_alike() {
    let (_, mut acc, _, auth) = raw_until_authenticate(USER, "wrong", AcceptorConfig::default());
    let e1 = acc.step(&auth).unwrap_err();
    let (_, mut acc, _, auth) =
        raw_until_authenticate("mallory", PASSWORD, AcceptorConfig::default());
    let e2 = acc.step(&auth).unwrap_err();
    assert_eq!(e1, AuthError::LogonFailure);
    assert_eq!(e1, e2);
    assert_eq!(e1.nt_status(), 0xC000_006D);
    // bob's password for alice
    let (_, mut acc, _, auth) = raw_until_authenticate(USER, "other", AcceptorConfig::default());
    assert_eq!(acc.step(&auth).unwrap_err(), AuthError::LogonFailure);
}

#[test]
fn unknown_user_maps_to_guest_only_when_configured() {
    let cfg = AcceptorConfig {
        map_to_guest: true,
        ..AcceptorConfig::default()
    };
    let (_, mut acc, _, auth) = raw_until_authenticate("mallory", "x", cfg.clone());
    let Step::Done {
        identity,
        session_key,
        ..
    } = acc.step(&auth).unwrap()
    else {
        panic!()
    };
    assert_eq!(identity.kind, IdentityKind::Guest);
    assert_eq!(identity.user, "mallory");
    assert!(session_key.is_empty());
    // A known user with a wrong password still fails.
    let (_, mut acc, _, auth) = raw_until_authenticate(USER, "wrong", cfg);
    assert_eq!(acc.step(&auth).unwrap_err(), AuthError::LogonFailure);
}

#[test]
fn tampered_mic_and_covered_fields_fail() {
    let (_, _, _, auth) = raw_until_authenticate(USER, PASSWORD, AcceptorConfig::default());
    let parsed = super::super::ntlm::parse_authenticate(&auth).unwrap();
    // sspi always sends a MIC with NTLMv2 (MsvAvFlags bit 0x2 in the blob's AV pairs).
    let av_pairs = &parsed.nt_response[16 + 28..];
    assert_ne!(super::super::ntlm::av_flags(av_pairs).unwrap() & 2, 0);
    // Flip each byte of the MIC, and bytes of fields only the MIC protects: the flags, the
    // workstation name and the encrypted session key.
    let mut positions: Vec<usize> = (72..88).collect();
    positions.extend([60, 61, 62, 63]);
    let ws_len = usize::from(u16::from_le_bytes([auth[44], auth[45]]));
    let ws_off = u32::from_le_bytes(auth[48..52].try_into().unwrap()) as usize;
    positions.extend(ws_off..ws_off + ws_len);
    let key_off = u32::from_le_bytes(auth[56..60].try_into().unwrap()) as usize;
    positions.extend(key_off..key_off + 16);
    for pos in positions {
        // Replay the same NEGOTIATE/CHALLENGE pair: rebuild both sides each time.
        let (_, mut acc, _, auth) =
            raw_until_authenticate(USER, PASSWORD, AcceptorConfig::default());
        let mut bad = auth.clone();
        bad[pos] ^= 0x10;
        assert!(acc.step(&bad).is_err(), "tampered byte {pos} accepted");
    }
}

#[test]
fn mic_is_checked_over_the_negotiate_message() {
    // Same AUTHENTICATE, but the server saw a different NEGOTIATE: the MIC must fail.
    let mut client = RawClient::new(USER, PASSWORD);
    let mut acc = acceptor(AcceptorConfig::default());
    let negotiate = client.step(None);
    let mut other_neg = negotiate.clone();
    // Change the flags the server saw in a way that does not change its CHALLENGE.
    let f = u32::from_le_bytes(other_neg[12..16].try_into().unwrap()) | 0x0000_1000;
    other_neg[12..16].copy_from_slice(&f.to_le_bytes());
    let Step::Continue(challenge) = acc.step(&other_neg).unwrap() else {
        panic!()
    };
    let auth = client.step(Some(&challenge));
    assert_eq!(acc.step(&auth).unwrap_err(), AuthError::LogonFailure);
}

#[test]
fn replayed_authenticate_fails_against_a_new_challenge() {
    let (_, mut acc, negotiate, auth) =
        raw_until_authenticate(USER, PASSWORD, AcceptorConfig::default());
    assert!(matches!(acc.step(&auth), Ok(Step::Done { .. })));
    // A second exchange: the attacker replays the recorded NEGOTIATE and AUTHENTICATE.
    let mut acc2 = acceptor(AcceptorConfig::default());
    assert!(matches!(acc2.step(&negotiate), Ok(Step::Continue(_))));
    // Refused by the echoed-timestamp check if the clock moved, else by NTProofStr.
    let e = acc2.step(&auth).unwrap_err();
    assert!(
        matches!(e, AuthError::LogonFailure | AuthError::InvalidParameter(_)),
        "{e:?}"
    );
}

/// SPNEGO client (sspi::Negotiate restricted to NTLM).
struct SpnegoClient {
    neg: Negotiate,
    creds: <Negotiate as SspiImpl>::CredentialsHandle,
    req: ClientRequestFlags,
}

impl SpnegoClient {
    fn new(user: &str, password: &str, want_mic: bool) -> Self {
        let cfg = NegotiateConfig::new(
            Box::new(NtlmConfig::new("CLIENTPC".into())),
            Some("!kerberos,ntlm".into()),
            "CLIENTPC".into(),
        );
        let mut neg = Negotiate::new_client(cfg).unwrap();
        let creds = neg
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&Credentials::AuthIdentity(identity(user, password)))
            .execute(&mut neg)
            .unwrap()
            .credentials_handle;
        // sspi's Negotiate sends a mechListMIC when USE_SESSION_KEY is requested.
        let req = if want_mic {
            REQ | ClientRequestFlags::USE_SESSION_KEY
        } else {
            REQ
        };
        Self { neg, creds, req }
    }

    fn step(&mut self, input: Option<&[u8]>) -> sspi::Result<(SecurityStatus, Vec<u8>)> {
        init_step(&mut self.neg, &mut self.creds, input, self.req)
    }
}

/// `want_mic` asks sspi for USE_SESSION_KEY, which makes its Negotiate insist on MICs.
fn spnego_exchange(want_mic: bool) {
    let mut client = SpnegoClient::new(USER, PASSWORD, want_mic);
    let mut acc = acceptor(AcceptorConfig::default());
    // The server's NegTokenInit2 is what the client would have seen in NEGOTIATE.
    let hint = negotiate_token(&AcceptorConfig::default());
    assert!(matches!(spnego::parse(&hint), Ok(Token::Init(_))));

    let (_, init) = client.step(None).unwrap();
    let Ok(Token::Init(parsed)) = spnego::parse(&init) else {
        panic!("client did not send NegTokenInit")
    };
    assert_eq!(parsed.mech_types.first(), Some(&OID_NTLMSSP));
    assert!(parsed.mech_token.is_some());

    let Step::Continue(resp1) = acc.step(&init).unwrap() else {
        panic!()
    };
    let Ok(Token::Resp(r)) = spnego::parse(&resp1) else {
        panic!()
    };
    assert_eq!(r.neg_state, Some(1));
    assert_eq!(r.supported_mech, Some(OID_NTLMSSP));
    assert!(r
        .response_token
        .is_some_and(|t| t.starts_with(b"NTLMSSP\0\x02")));

    let (_, resp2) = client.step(Some(&resp1)).unwrap();
    let Ok(Token::Resp(r)) = spnego::parse(&resp2) else {
        panic!()
    };
    // sspi sends a mechListMIC whenever its NTLM AUTHENTICATE carries a MIC (always, for
    // NTLMv2), whatever the context requirements.
    let client_sent_mic = r.mech_list_mic.is_some();
    assert!(client_sent_mic);

    let Step::Done {
        output,
        identity,
        session_key,
    } = acc.step(&resp2).unwrap()
    else {
        panic!()
    };
    assert_eq!(identity.user, "Alice");
    assert_eq!(identity.kind, IdentityKind::User);
    let Ok(Token::Resp(fin)) = spnego::parse(&output) else {
        panic!()
    };
    assert_eq!(fin.neg_state, Some(0));
    assert_eq!(fin.mech_list_mic.is_some(), client_sent_mic);
    let client_key = client.neg.query_context_session_key().unwrap();
    assert_eq!(&session_key, client_key.session_key.as_ref());
    if client_sent_mic {
        // sspi is waiting for our mechListMIC and verifies it.
        let (status, _) = client.step(Some(&output)).unwrap();
        assert_eq!(status, SecurityStatus::Ok);

        // A corrupted server mechListMIC is refused by the client.
        let mut client = SpnegoClient::new(USER, PASSWORD, want_mic);
        let mut acc = acceptor(AcceptorConfig::default());
        let (_, init) = client.step(None).unwrap();
        let Step::Continue(resp1) = acc.step(&init).unwrap() else {
            panic!()
        };
        let (_, resp2) = client.step(Some(&resp1)).unwrap();
        let Step::Done { mut output, .. } = acc.step(&resp2).unwrap() else {
            panic!()
        };
        let n = output.len();
        output[n - 10] ^= 1;
        assert!(client.step(Some(&output)).is_err());
    }
}

#[test]
fn spnego_with_sspi_negotiate_client() {
    spnego_exchange(false);
}

#[test]
fn spnego_with_mech_list_mic() {
    spnego_exchange(true);
}

#[test]
fn spnego_bad_mech_list_mic_fails() {
    let mut client = SpnegoClient::new(USER, PASSWORD, true);
    let mut acc = acceptor(AcceptorConfig::default());
    let (_, init) = client.step(None).unwrap();
    let Step::Continue(resp1) = acc.step(&init).unwrap() else {
        panic!()
    };
    let (_, resp2) = client.step(Some(&resp1)).unwrap();
    let Ok(Token::Resp(r)) = spnego::parse(&resp2) else {
        panic!()
    };
    let mut mic = r.mech_list_mic.unwrap().to_vec();
    mic[5] ^= 0x80;
    let forged = spnego::neg_token_resp(&spnego::NegTokenResp {
        mech_list_mic: Some(&mic),
        ..r.clone()
    });
    assert_eq!(acc.step(&forged).unwrap_err(), AuthError::LogonFailure);

    // Stripping the mechListMIC is refused too: the NTLM MIC was present, so it is required.
    let mut client = SpnegoClient::new(USER, PASSWORD, true);
    let mut acc = acceptor(AcceptorConfig::default());
    let (_, init) = client.step(None).unwrap();
    let Step::Continue(resp1) = acc.step(&init).unwrap() else {
        panic!()
    };
    let (_, resp2) = client.step(Some(&resp1)).unwrap();
    let Ok(Token::Resp(r)) = spnego::parse(&resp2) else {
        panic!()
    };
    let stripped = spnego::neg_token_resp(&spnego::NegTokenResp {
        mech_list_mic: None,
        ..r.clone()
    });
    assert!(acc.step(&stripped).is_err());
}

#[test]
fn spnego_wrong_password_fails() {
    let mut client = SpnegoClient::new(USER, "nope", false);
    let mut acc = acceptor(AcceptorConfig::default());
    let (_, init) = client.step(None).unwrap();
    let Step::Continue(resp1) = acc.step(&init).unwrap() else {
        panic!()
    };
    let (_, resp2) = client.step(Some(&resp1)).unwrap();
    let e = acc.step(&resp2).unwrap_err();
    assert_eq!(e, AuthError::LogonFailure);
    // The acceptor is finished after a failure.
    assert!(acc.step(&resp2).is_err());
}

/// MS-KRB5 OID 1.2.840.48018.1.2.2 and Kerberos 1.2.840.113554.1.2.2.
const OID_MS_KRB5: &[u8] = &[0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02];
const OID_KRB5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];

fn init_token(mechs: &[&[u8]], mech_token: Option<&[u8]>) -> (Vec<u8>, Vec<u8>) {
    let oids: Vec<u8> = mechs.iter().flat_map(|m| tlv(TAG_OID, m)).collect();
    let mech_list = tlv(TAG_SEQUENCE, &oids);
    let mut seq = tlv(0xa0, &mech_list);
    if let Some(t) = mech_token {
        seq.extend(tlv(0xa2, &tlv(0x04, t)));
    }
    let mut app = tlv(TAG_OID, spnego::OID_SPNEGO);
    app.extend(tlv(0xa0, &tlv(TAG_SEQUENCE, &seq)));
    (tlv(0x60, &app), mech_list)
}

/// Kerberos first with an optimistic Kerberos token, NTLMSSP second: the acceptor selects
/// NTLMSSP without touching the token, asks for a MIC, and then requires the mechListMIC.
/// The NTLM side and the client's mechListMIC come from sspi's raw NTLM context
/// (make_signature with sequence number 0), our SPNEGO wrapping is done by hand.
#[test]
fn spnego_ntlm_not_first_choice() {
    for with_mic in [true, false] {
        let mut client = RawClient::new(USER, PASSWORD);
        let mut acc = acceptor(AcceptorConfig::default());
        let (init, mech_list) = init_token(
            &[OID_MS_KRB5, OID_KRB5, OID_NTLMSSP],
            Some(b"\x60\x03not-ntlm"),
        );
        let Step::Continue(r0) = acc.step(&init).unwrap() else {
            panic!()
        };
        let Ok(Token::Resp(r0)) = spnego::parse(&r0) else {
            panic!()
        };
        assert_eq!(r0.neg_state, Some(3), "request-mic");
        assert_eq!(r0.supported_mech, Some(OID_NTLMSSP));
        assert_eq!(r0.response_token, None);

        let negotiate = client.step(None);
        let wrapped = spnego::neg_token_resp(&spnego::NegTokenResp {
            response_token: Some(&negotiate),
            ..Default::default()
        });
        let Step::Continue(r1) = acc.step(&wrapped).unwrap() else {
            panic!()
        };
        let Ok(Token::Resp(r1)) = spnego::parse(&r1) else {
            panic!()
        };
        assert_eq!(
            r1.supported_mech, None,
            "supportedMech only in the first reply"
        );
        let auth = client.step(Some(r1.response_token.unwrap()));

        let mut data = mech_list.clone();
        let mut sig = vec![0u8; 16];
        let mic = if with_mic {
            let mut bufs = [
                SecurityBufferRef::data_buf(&mut data),
                SecurityBufferRef::token_buf(&mut sig),
            ];
            client.ntlm.make_signature(0, &mut bufs, 0).unwrap();
            Some(sig.clone())
        } else {
            None
        };
        let last = spnego::neg_token_resp(&spnego::NegTokenResp {
            response_token: Some(&auth),
            mech_list_mic: mic.as_deref(),
            ..Default::default()
        });
        let r = acc.step(&last);
        if !with_mic {
            assert!(
                r.is_err(),
                "mechListMIC is required when NTLMSSP was not first"
            );
            continue;
        }
        let Ok(Step::Done {
            output,
            session_key,
            ..
        }) = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(session_key, client.session_key());
        let Ok(Token::Resp(fin)) = spnego::parse(&output) else {
            panic!()
        };
        assert_eq!(fin.neg_state, Some(0));
        let mut server_mic = fin.mech_list_mic.unwrap().to_vec();
        let mut data = mech_list.clone();
        let mut bufs = [
            SecurityBufferRef::data_buf(&mut data),
            SecurityBufferRef::token_buf(&mut server_mic),
        ];
        client.ntlm.verify_signature(&mut bufs, 0).unwrap();
    }
}

#[test]
fn spnego_without_ntlmssp_is_refused() {
    let (init, _) = init_token(&[OID_MS_KRB5, OID_KRB5], Some(b"krb"));
    let mut acc = acceptor(AcceptorConfig::default());
    assert!(matches!(
        acc.step(&init),
        Err(AuthError::InvalidParameter(_))
    ));
}

#[test]
fn empty_first_buffer_gets_the_mech_list() {
    let mut acc = acceptor(AcceptorConfig::default());
    assert_eq!(
        acc.step(&[]).unwrap(),
        Step::Continue(negotiate_token(&AcceptorConfig::default()))
    );
    // and the exchange can still go on
    let mut client = RawClient::new(USER, PASSWORD);
    let Step::Continue(ch) = acc.step(&client.step(None)).unwrap() else {
        panic!()
    };
    let auth = client.step(Some(&ch));
    assert!(matches!(acc.step(&auth), Ok(Step::Done { .. })));
}

/// An anonymous AUTHENTICATE as smbclient -N sends it: empty user, domain and NT response,
/// a one-byte zero LM response, the ANONYMOUS flag.
fn anonymous_authenticate() -> Vec<u8> {
    let flags: u32 = 0x0000_0800 | 0x0000_0001 | 0x0000_0200 | 0x0008_0000 | 0x4000_0000;
    let mut m = b"NTLMSSP\0\x03\0\0\0".to_vec();
    let payload = 88u32;
    let field = |m: &mut Vec<u8>, len: u16, off: u32| {
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&off.to_le_bytes());
    };
    field(&mut m, 1, payload); // LM: one zero byte
    field(&mut m, 0, payload + 1); // NT
    field(&mut m, 0, payload + 1); // domain
    field(&mut m, 0, payload + 1); // user
    field(&mut m, 0, payload + 1); // workstation
    field(&mut m, 0, payload + 1); // encrypted session key
    m.extend_from_slice(&flags.to_le_bytes());
    m.extend_from_slice(&[0u8; 24]); // version + MIC area
    m.push(0);
    m
}

#[test]
fn anonymous_only_when_allowed() {
    let neg = [&b"NTLMSSP\0\x01\0\0\0"[..], &0x6208_0a05u32.to_le_bytes()].concat();
    let mut acc = acceptor(AcceptorConfig::default());
    acc.step(&neg).unwrap();
    let e = acc.step(&anonymous_authenticate()).unwrap_err();
    assert!(matches!(e, AuthError::AccessDenied(_)));
    assert_eq!(e.nt_status(), 0xC000_0022);

    let cfg = AcceptorConfig {
        allow_anonymous: true,
        ..AcceptorConfig::default()
    };
    let mut acc = acceptor(cfg.clone());
    acc.step(&neg).unwrap();
    let Step::Done {
        identity,
        session_key,
        ..
    } = acc.step(&anonymous_authenticate()).unwrap()
    else {
        panic!()
    };
    assert_eq!(identity.kind, IdentityKind::Anonymous);
    assert_eq!(identity.user, "");
    assert!(session_key.is_empty());

    // Inside SPNEGO, without mechListMIC (there is no key to make one with).
    let (init, _) = init_token(&[OID_NTLMSSP], Some(&neg));
    let mut acc = acceptor(cfg);
    acc.step(&init).unwrap();
    let last = spnego::neg_token_resp(&spnego::NegTokenResp {
        response_token: Some(&anonymous_authenticate()),
        ..Default::default()
    });
    let Step::Done {
        output, identity, ..
    } = acc.step(&last).unwrap()
    else {
        panic!()
    };
    assert_eq!(identity.kind, IdentityKind::Anonymous);
    let Ok(Token::Resp(fin)) = spnego::parse(&output) else {
        panic!()
    };
    assert_eq!((fin.neg_state, fin.mech_list_mic), (Some(0), None));

    // An empty user with a non-empty LM response is not anonymous, and not a user either.
    let mut not_anon = anonymous_authenticate();
    not_anon[12] = 2; // LM length 2 (the zero byte and the one after it)
    not_anon[14] = 2;
    not_anon.push(0);
    let mut acc = acceptor(AcceptorConfig {
        allow_anonymous: true,
        ..AcceptorConfig::default()
    });
    acc.step(&neg).unwrap();
    assert_eq!(acc.step(&not_anon).unwrap_err(), AuthError::LogonFailure);
}
