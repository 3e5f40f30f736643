//! SPNEGO (RFC 4178, MS-SPNG) tokens: the server's NegTokenInit2, the client's NegTokenInit,
//! and NegTokenResp in both directions.

use super::der::{
    ctx, expect_only, expect_tlv, read_tlv, tlv, write_tlv, TAG_APPLICATION_0, TAG_ENUMERATED,
    TAG_GENERAL_STRING, TAG_OCTET_STRING, TAG_OID, TAG_SEQUENCE,
};
use super::AuthError;

/// DER content of OID 1.3.6.1.5.5.2 (SPNEGO).
pub const OID_SPNEGO: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
/// DER content of OID 1.3.6.1.4.1.311.2.2.10 (NTLMSSP).
pub const OID_NTLMSSP: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];

/// The hint name Windows and Samba put in negHints (MS-SPNG 2.2.1).
pub const NEG_HINT_NAME: &str = "not_defined_in_RFC4178@please_ignore";

/// negState values of NegTokenResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NegState {
    AcceptCompleted = 0,
    AcceptIncomplete = 1,
    Reject = 2,
    RequestMic = 3,
}

/// A client's NegTokenInit (the initial context token, GSS framing included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegTokenInit<'a> {
    /// Contents of each mechanism OID, in the client's order of preference.
    pub mech_types: Vec<&'a [u8]>,
    /// The MechTypeList SEQUENCE exactly as sent: the mechListMIC covers these bytes.
    pub mech_types_der: &'a [u8],
    pub mech_token: Option<&'a [u8]>,
}

/// A NegTokenResp from either side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NegTokenResp<'a> {
    pub neg_state: Option<u8>,
    pub supported_mech: Option<&'a [u8]>,
    pub response_token: Option<&'a [u8]>,
    pub mech_list_mic: Option<&'a [u8]>,
}

/// Either kind of SPNEGO token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    Init(NegTokenInit<'a>),
    Resp(NegTokenResp<'a>),
}

fn bad(what: &'static str) -> AuthError {
    AuthError::InvalidParameter(what)
}

/// Parses a SPNEGO token as received in a SESSION_SETUP security buffer.
pub fn parse(input: &[u8]) -> Result<Token<'_>, AuthError> {
    match input.first() {
        Some(&TAG_APPLICATION_0) => {
            let app = expect_only(input, TAG_APPLICATION_0)?;
            let (oid, rest) = expect_tlv(app.content, TAG_OID)?;
            if oid.content != OID_SPNEGO {
                return Err(bad("SPNEGO: not the SPNEGO mechanism"));
            }
            let choice = expect_only(rest, ctx(0))?;
            parse_init(choice.content).map(Token::Init)
        }
        Some(&t) if t == ctx(1) => {
            let choice = expect_only(input, ctx(1))?;
            parse_resp(choice.content).map(Token::Resp)
        }
        _ => Err(bad("SPNEGO: unknown token")),
    }
}

/// Walks the context-tagged fields of a SEQUENCE, checking the tags rise strictly.
fn fields(seq_content: &[u8]) -> Result<Vec<(u8, &[u8])>, AuthError> {
    let mut out = Vec::new();
    let mut rest = seq_content;
    let mut last: Option<u8> = None;
    while !rest.is_empty() {
        let (field, after) = read_tlv(rest)?;
        if field.tag & 0xe0 != 0xa0 {
            return Err(bad("SPNEGO: field is not context-tagged"));
        }
        let n = field.tag & 0x1f;
        if last.is_some_and(|l| n <= l) {
            return Err(bad("SPNEGO: fields out of order"));
        }
        last = Some(n);
        out.push((n, field.content));
        rest = after;
    }
    Ok(out)
}

fn parse_init(content: &[u8]) -> Result<NegTokenInit<'_>, AuthError> {
    let seq = expect_only(content, TAG_SEQUENCE)?;
    let mut mech_types = None;
    let mut mech_types_der: &[u8] = &[];
    let mut mech_token = None;
    for (n, value) in fields(seq.content)? {
        match n {
            0 => {
                let list = expect_only(value, TAG_SEQUENCE)?;
                mech_types_der = list.raw;
                let mut oids = Vec::new();
                let mut rest = list.content;
                while !rest.is_empty() {
                    let (oid, after) = expect_tlv(rest, TAG_OID)?;
                    oids.push(oid.content);
                    rest = after;
                }
                mech_types = Some(oids);
            }
            2 => mech_token = Some(expect_only(value, TAG_OCTET_STRING)?.content),
            // reqFlags [1], mechListMIC [3] (NegTokenInit) or negHints [3] / mechListMIC [4]
            // (NegTokenInit2): nothing a server acts on.
            _ => {}
        }
    }
    let mech_types = mech_types.ok_or(bad("SPNEGO: NegTokenInit without mechTypes"))?;
    Ok(NegTokenInit {
        mech_types,
        mech_types_der,
        mech_token,
    })
}

fn parse_resp(content: &[u8]) -> Result<NegTokenResp<'_>, AuthError> {
    let seq = expect_only(content, TAG_SEQUENCE)?;
    let mut resp = NegTokenResp::default();
    for (n, value) in fields(seq.content)? {
        match n {
            0 => {
                let e = expect_only(value, TAG_ENUMERATED)?;
                match e.content {
                    [v] => resp.neg_state = Some(*v),
                    _ => return Err(bad("SPNEGO: bad negState")),
                }
            }
            1 => resp.supported_mech = Some(expect_only(value, TAG_OID)?.content),
            2 => resp.response_token = Some(expect_only(value, TAG_OCTET_STRING)?.content),
            3 => resp.mech_list_mic = Some(expect_only(value, TAG_OCTET_STRING)?.content),
            _ => return Err(bad("SPNEGO: unknown NegTokenResp field")),
        }
    }
    Ok(resp)
}

/// The NegTokenInit2 a server sends in its NEGOTIATE response: mechTypes = [NTLMSSP],
/// negHints.hintName = [`NEG_HINT_NAME`].
pub fn neg_token_init2(mechs: &[&[u8]]) -> Vec<u8> {
    let mut oids = Vec::new();
    for m in mechs {
        write_tlv(&mut oids, TAG_OID, m);
    }
    let mut seq = tlv(ctx(0), &tlv(TAG_SEQUENCE, &oids));
    let hint = tlv(ctx(0), &tlv(TAG_GENERAL_STRING, NEG_HINT_NAME.as_bytes()));
    seq.extend_from_slice(&tlv(ctx(3), &tlv(TAG_SEQUENCE, &hint)));
    let choice = tlv(ctx(0), &tlv(TAG_SEQUENCE, &seq));
    let mut app = tlv(TAG_OID, OID_SPNEGO);
    app.extend_from_slice(&choice);
    tlv(TAG_APPLICATION_0, &app)
}

/// Encodes a NegTokenResp.
pub fn neg_token_resp(resp: &NegTokenResp<'_>) -> Vec<u8> {
    let mut seq = Vec::new();
    if let Some(state) = resp.neg_state {
        seq.extend_from_slice(&tlv(ctx(0), &tlv(TAG_ENUMERATED, &[state])));
    }
    if let Some(mech) = resp.supported_mech {
        seq.extend_from_slice(&tlv(ctx(1), &tlv(TAG_OID, mech)));
    }
    if let Some(token) = resp.response_token {
        seq.extend_from_slice(&tlv(ctx(2), &tlv(TAG_OCTET_STRING, token)));
    }
    if let Some(mic) = resp.mech_list_mic {
        seq.extend_from_slice(&tlv(ctx(3), &tlv(TAG_OCTET_STRING, mic)));
    }
    tlv(ctx(1), &tlv(TAG_SEQUENCE, &seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neg_token_init2_bytes() {
        // Layout per RFC 4178 / MS-SPNG 2.2.1, checked by hand: APPLICATION 0 { OID spnego,
        // [0] { SEQUENCE { [0] { SEQUENCE { OID ntlmssp } }, [3] { SEQUENCE { [0] { GeneralString }}}}}}
        let t = neg_token_init2(&[OID_NTLMSSP]);
        let mut expect = vec![0x60, 0x48, 0x06, 0x06, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
        expect.extend_from_slice(&[0xa0, 0x3e, 0x30, 0x3c, 0xa0, 0x0e, 0x30, 0x0c, 0x06, 0x0a]);
        expect.extend_from_slice(OID_NTLMSSP);
        expect.extend_from_slice(&[0xa3, 0x2a, 0x30, 0x28, 0xa0, 0x26, 0x1b, 0x24]);
        expect.extend_from_slice(NEG_HINT_NAME.as_bytes());
        assert_eq!(t, expect);
        // A server's NegTokenInit2 parses as a NegTokenInit with the same mech list.
        match parse(&t).unwrap() {
            Token::Init(init) => {
                assert_eq!(init.mech_types, vec![OID_NTLMSSP]);
                assert_eq!(init.mech_token, None);
                assert_eq!(init.mech_types_der, &expect[16..30]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resp_round_trip() {
        let r = NegTokenResp {
            neg_state: Some(NegState::AcceptIncomplete as u8),
            supported_mech: Some(OID_NTLMSSP),
            response_token: Some(&[1u8; 300]),
            mech_list_mic: Some(&[2u8; 16]),
        };
        let enc = neg_token_resp(&r);
        assert_eq!(parse(&enc).unwrap(), Token::Resp(r));
        // Samba's final answer shape: a1 07 30 05 a0 03 0a 01 00
        let done = neg_token_resp(&NegTokenResp {
            neg_state: Some(0),
            ..Default::default()
        });
        assert_eq!(done, [0xa1, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x0a, 0x01, 0x00]);
    }

    #[test]
    fn rejects_out_of_order_and_wrong_oid() {
        // [2] before [0]
        let seq = [
            tlv(ctx(2), &tlv(TAG_OCTET_STRING, b"x")),
            tlv(ctx(0), &tlv(TAG_SEQUENCE, &tlv(TAG_OID, OID_NTLMSSP))),
        ]
        .concat();
        let mut app = tlv(TAG_OID, OID_SPNEGO);
        app.extend(tlv(ctx(0), &tlv(TAG_SEQUENCE, &seq)));
        assert!(parse(&tlv(TAG_APPLICATION_0, &app)).is_err());
        let mut app = tlv(TAG_OID, OID_NTLMSSP);
        app.extend(tlv(ctx(0), &tlv(TAG_SEQUENCE, &[])));
        assert!(parse(&tlv(TAG_APPLICATION_0, &app)).is_err());
    }

    /// DER nested 100,000 levels deep, each header with a four-byte length:
    /// the lengths are computed from the inside out, then the headers written
    /// from the outside in (building it by wrapping would copy quadratically).
    pub(crate) fn deeply_nested(depth: usize, tags: &[u8]) -> Vec<u8> {
        let mut token = Vec::with_capacity(6 * depth);
        for i in (0..depth).rev() {
            token.push(tags[i % tags.len()]);
            token.push(0x84);
            token.extend_from_slice(&((6 * i) as u32).to_be_bytes());
        }
        token
    }

    /// The parser follows the fixed shape of a SPNEGO token and never recurses
    /// over what it reads: 100,000 levels of nesting are an error, found on a
    /// thread with a 64 KiB stack.
    #[test]
    fn deep_nesting_is_an_error_without_recursion() {
        let r = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                for tags in [&[TAG_APPLICATION_0][..], &[ctx(1)], &[ctx(1), TAG_SEQUENCE], &[TAG_APPLICATION_0, ctx(0), TAG_SEQUENCE]] {
                    let token = deeply_nested(100_000, tags);
                    assert_eq!(token.len(), 600_000);
                    assert!(parse(&token).is_err(), "{tags:?}");
                }
            })
            .unwrap()
            .join();
        assert!(r.is_ok());
    }
}
