//! The client side of NTLMv2 (MS-NLMP) inside SPNEGO (RFC 4178, MS-SPNG): NEGOTIATE_MESSAGE,
//! AUTHENTICATE_MESSAGE with NTProofStr, key exchange and MIC, and the mechListMIC.
//!
//! Hash and cipher primitives come from the server crate's `auth::ntlm_crypto` (RustCrypto
//! underneath); the server's parsers are for the messages a server receives, so the client
//! builds and parses its own side here. The few DER writers are hand-written: four tags of
//! fixed shape do not justify an ASN.1 crate.

use smbdirect_server::auth::ntlm::flags;
use smbdirect_server::auth::ntlm_crypto::{hmac_md5, nt_hash, ntowfv2, rc4_once, Direction, NtlmSecurity};
use smbdirect_server::auth::spnego::{self, NegTokenResp, OID_NTLMSSP, OID_SPNEGO};

use super::error::ClientError;

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// Version we announce: 10.0 build 20348, NTLMSSP revision 15.
const VERSION: [u8; 8] = [10, 0, 0x4c, 0x4f, 0, 0, 0, 0x0f];
const AV_EOL: u16 = 0;
const AV_FLAGS: u16 = 6;
const AV_TIMESTAMP: u16 = 7;
const AV_FLAG_MIC: u32 = 0x2;
const MIC_OFFSET: usize = 72;
const AUTH_FIXED: usize = 88;

/// The flags the client asks for.
pub const CLIENT_FLAGS: u32 = flags::UNICODE
    | flags::REQUEST_TARGET
    | flags::SIGN
    | flags::SEAL
    | flags::NTLM
    | flags::ALWAYS_SIGN
    | flags::EXTENDED_SESSIONSECURITY
    | flags::TARGET_INFO
    | flags::VERSION
    | flags::NEGOTIATE_128
    | flags::KEY_EXCH
    | flags::NEGOTIATE_56;

fn auth_err(s: &str) -> ClientError {
    ClientError::Auth(s.to_string())
}

/// DER TLV with a definite length.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let be = (n as u32).to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The MechTypeList we send (SEQUENCE { OID NTLMSSP }): the mechListMIC covers these bytes.
pub fn mech_types_der() -> Vec<u8> {
    tlv(0x30, &tlv(0x06, OID_NTLMSSP))
}

/// SPNEGO NegTokenInit carrying the first NTLM message.
pub fn neg_token_init(mech_token: &[u8]) -> Vec<u8> {
    let mut seq = tlv(0xa0, &mech_types_der());
    seq.extend_from_slice(&tlv(0xa2, &tlv(0x04, mech_token)));
    let mut app = tlv(0x06, OID_SPNEGO);
    app.extend_from_slice(&tlv(0xa0, &tlv(0x30, &seq)));
    tlv(0x60, &app)
}

/// NEGOTIATE_MESSAGE with no domain or workstation.
pub fn negotiate_message() -> Vec<u8> {
    let mut m = Vec::with_capacity(40);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&CLIENT_FLAGS.to_le_bytes());
    m.extend_from_slice(&[0u8; 16]);
    m.extend_from_slice(&VERSION);
    m
}

/// The pieces of a CHALLENGE_MESSAGE the client needs.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    pub target_info: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, ClientError> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| auth_err("NTLM CHALLENGE truncated"))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, ClientError> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| auth_err("NTLM CHALLENGE truncated"))
}

/// Parses a CHALLENGE_MESSAGE, checking every field against the message bounds.
pub fn parse_challenge(msg: &[u8]) -> Result<Challenge, ClientError> {
    if msg.get(..8) != Some(&SIGNATURE[..]) || u32_at(msg, 8)? != 2 {
        return Err(auth_err("not an NTLM CHALLENGE message"));
    }
    let flags = u32_at(msg, 20)?;
    let mut server_challenge = [0u8; 8];
    server_challenge.copy_from_slice(msg.get(24..32).ok_or_else(|| auth_err("NTLM CHALLENGE truncated"))?);
    let len = usize::from(u16_at(msg, 40)?);
    let off = u32_at(msg, 44)? as usize;
    let target_info = if len == 0 {
        Vec::new()
    } else {
        msg.get(off..off.checked_add(len).ok_or_else(|| auth_err("bad TargetInfo"))?)
            .ok_or_else(|| auth_err("TargetInfo beyond the message"))?
            .to_vec()
    };
    Ok(Challenge { flags, server_challenge, target_info })
}

/// Splits AV pairs (iteratively, bounded by the input), stopping at MsvAvEOL.
fn av_pairs(info: &[u8]) -> Result<Vec<(u16, &[u8])>, ClientError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let id = u16_at(info, at)?;
        let len = usize::from(u16_at(info, at + 2)?);
        if id == AV_EOL {
            return Ok(out);
        }
        let v = info.get(at + 4..at + 4 + len).ok_or_else(|| auth_err("AV pair beyond TargetInfo"))?;
        out.push((id, v));
        at += 4 + len;
    }
}

/// What the AUTHENTICATE step produces.
pub struct Authenticated {
    pub message: Vec<u8>,
    /// ExportedSessionKey: the SMB session key.
    pub session_key: [u8; 16],
    pub flags: u32,
}

/// Inputs that tests fix and real runs draw at random.
pub struct AuthRandom {
    pub client_challenge: [u8; 8],
    pub exported_key: [u8; 16],
    /// FILETIME used when the server sent no MsvAvTimestamp.
    pub now: u64,
}

impl AuthRandom {
    pub fn generate() -> Result<Self, ClientError> {
        let mut b = [0u8; 24];
        getrandom::fill(&mut b).map_err(|_| ClientError::Auth("no random source".into()))?;
        let mut client_challenge = [0u8; 8];
        client_challenge.copy_from_slice(&b[..8]);
        let mut exported_key = [0u8; 16];
        exported_key.copy_from_slice(&b[8..]);
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let now = (unix.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(unix.subsec_nanos() / 100);
        Ok(AuthRandom { client_challenge, exported_key, now })
    }
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}
fn utf16_bytes(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Builds the AUTHENTICATE_MESSAGE for `challenge` (MS-NLMP 3.1.5.1.2, 3.3.2).
pub fn authenticate(
    negotiate_msg: &[u8],
    challenge_msg: &[u8],
    user: &str,
    domain: &str,
    password: &str,
    rnd: &AuthRandom,
) -> Result<Authenticated, ClientError> {
    let ch = parse_challenge(challenge_msg)?;
    let flags = ch.flags & CLIENT_FLAGS | flags::UNICODE;
    if flags & flags::EXTENDED_SESSIONSECURITY == 0 {
        return Err(auth_err("server refused extended session security"));
    }
    // Our TargetInfo: the server's pairs, with MsvAvFlags saying a MIC is present.
    let pairs = av_pairs(&ch.target_info)?;
    let mut timestamp = None;
    let mut info = Vec::new();
    let mut have_flags = false;
    for (id, v) in &pairs {
        let mut v = v.to_vec();
        if *id == AV_TIMESTAMP && v.len() == 8 {
            timestamp = Some(u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8])));
        }
        if *id == AV_FLAGS && v.len() == 4 {
            let f = u32::from_le_bytes(v[..4].try_into().unwrap_or([0; 4])) | AV_FLAG_MIC;
            v = f.to_le_bytes().to_vec();
            have_flags = true;
        }
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(v.len() as u16).to_le_bytes());
        info.extend_from_slice(&v);
    }
    if !have_flags {
        info.extend_from_slice(&AV_FLAGS.to_le_bytes());
        info.extend_from_slice(&4u16.to_le_bytes());
        info.extend_from_slice(&AV_FLAG_MIC.to_le_bytes());
    }
    info.extend_from_slice(&[0, 0, 0, 0]); // MsvAvEOL

    let ts = timestamp.unwrap_or(rnd.now);
    let mut temp = vec![1u8, 1, 0, 0, 0, 0, 0, 0];
    temp.extend_from_slice(&ts.to_le_bytes());
    temp.extend_from_slice(&rnd.client_challenge);
    temp.extend_from_slice(&[0; 4]);
    temp.extend_from_slice(&info);
    temp.extend_from_slice(&[0; 4]);

    let key = ntowfv2(&nt_hash(password), &utf16(user), &utf16(domain));
    let proof = hmac_md5(&key, &[&ch.server_challenge, &temp]);
    let mut nt_response = proof.to_vec();
    nt_response.extend_from_slice(&temp);
    let session_base_key = hmac_md5(&key, &[&proof]);
    // With a timestamp from the server the LM response is 24 zero bytes (MS-NLMP 3.1.5.1.2).
    let lm_response = if timestamp.is_some() {
        vec![0u8; 24]
    } else {
        let mut v = hmac_md5(&key, &[&ch.server_challenge, &rnd.client_challenge]).to_vec();
        v.extend_from_slice(&rnd.client_challenge);
        v
    };
    let (exported, enc_key) = if flags & flags::KEY_EXCH != 0 {
        (rnd.exported_key, rc4_once(&session_base_key, &rnd.exported_key).to_vec())
    } else {
        (session_base_key, Vec::new())
    };

    let domain_b = utf16_bytes(domain);
    let user_b = utf16_bytes(user);
    let ws_b = utf16_bytes("SMBDIRECT-BENCH");
    let mut m = vec![0u8; AUTH_FIXED];
    m[..8].copy_from_slice(SIGNATURE);
    m[8..12].copy_from_slice(&3u32.to_le_bytes());
    let field = |m: &mut Vec<u8>, at: usize, data: &[u8]| {
        let off = m.len() as u32;
        m[at..at + 2].copy_from_slice(&(data.len() as u16).to_le_bytes());
        m[at + 2..at + 4].copy_from_slice(&(data.len() as u16).to_le_bytes());
        m[at + 4..at + 8].copy_from_slice(&off.to_le_bytes());
        m.extend_from_slice(data);
    };
    field(&mut m, 12, &lm_response);
    field(&mut m, 20, &nt_response);
    field(&mut m, 28, &domain_b);
    field(&mut m, 36, &user_b);
    field(&mut m, 44, &ws_b);
    field(&mut m, 52, &enc_key);
    m[60..64].copy_from_slice(&flags.to_le_bytes());
    m[64..72].copy_from_slice(&VERSION);
    let mic = hmac_md5(&exported, &[negotiate_msg, challenge_msg, &m]);
    m[MIC_OFFSET..MIC_OFFSET + 16].copy_from_slice(&mic);
    Ok(Authenticated { message: m, session_key: exported, flags })
}

/// The final NegTokenResp: the AUTHENTICATE message and our mechListMIC.
pub fn neg_token_auth(auth: &Authenticated) -> Vec<u8> {
    let mic = NtlmSecurity::new(&auth.session_key, auth.flags, Direction::ClientToServer).sign(&mech_types_der());
    spnego::neg_token_resp(&NegTokenResp {
        neg_state: None,
        supported_mech: None,
        response_token: Some(&auth.message),
        mech_list_mic: Some(&mic),
    })
}

/// The NTLM token inside the server's first SESSION_SETUP answer.
pub fn challenge_from_spnego(token: &[u8]) -> Result<Vec<u8>, ClientError> {
    match spnego::parse(token).map_err(|e| ClientError::Auth(format!("SPNEGO: {e}")))? {
        spnego::Token::Resp(r) => {
            if r.neg_state == Some(2) {
                return Err(auth_err("server rejected NTLMSSP"));
            }
            r.response_token.map(<[u8]>::to_vec).ok_or_else(|| auth_err("SPNEGO answer without a token"))
        }
        spnego::Token::Init(_) => Err(auth_err("unexpected SPNEGO NegTokenInit from the server")),
    }
}

/// Checks the server's final NegTokenResp: accept-completed, and its mechListMIC if any.
pub fn check_final(token: &[u8], auth: &Authenticated) -> Result<(), ClientError> {
    if token.is_empty() {
        return Ok(());
    }
    match spnego::parse(token).map_err(|e| ClientError::Auth(format!("SPNEGO: {e}")))? {
        spnego::Token::Resp(r) => {
            if let Some(s) = r.neg_state {
                if s != 0 {
                    return Err(ClientError::Auth(format!("SPNEGO negState {s} at the end")));
                }
            }
            if let Some(mic) = r.mech_list_mic {
                let mut s = NtlmSecurity::new(&auth.session_key, auth.flags, Direction::ServerToClient);
                if !s.verify(&mech_types_der(), mic) {
                    return Err(auth_err("server's mechListMIC does not verify"));
                }
            }
            Ok(())
        }
        spnego::Token::Init(_) => Err(auth_err("unexpected SPNEGO NegTokenInit from the server")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smbdirect_server::auth::{AcceptorConfig, UserDb};

    #[test]
    fn der_lengths() {
        assert_eq!(tlv(4, &[1, 2]), vec![4, 2, 1, 2]);
        let long = tlv(4, &[0; 300]);
        assert_eq!(&long[..4], &[4, 0x82, 1, 44]);
    }

    #[test]
    fn challenge_parser_refuses_bad_input() {
        assert!(parse_challenge(b"").is_err());
        let mut m = SIGNATURE.to_vec();
        m.extend_from_slice(&2u32.to_le_bytes());
        m.resize(48, 0);
        m[40] = 10; // TargetInfo length 10 at offset 0xffffffff
        m[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_challenge(&m).is_err());
        assert!(av_pairs(&[1, 0, 200, 0]).is_err());
    }

    fn run(user: &str, password: &str) -> Result<(Authenticated, Vec<u8>, Vec<u8>), String> {
        let mut db = UserDb::new();
        db.add_password("alice", "s3cret");
        let mut acc = smbdirect_server::auth::Acceptor::new(std::sync::Arc::new(db), AcceptorConfig::default());
        let neg = negotiate_message();
        let step = acc.step(&neg_token_init(&neg)).map_err(|e| e.to_string())?;
        let smbdirect_server::auth::Step::Continue(tok) = step else { return Err("no challenge".into()) };
        let challenge = challenge_from_spnego(&tok).map_err(|e| e.to_string())?;
        let rnd = AuthRandom::generate().map_err(|e| e.to_string())?;
        let auth = authenticate(&neg, &challenge, user, "", password, &rnd).map_err(|e| e.to_string())?;
        match acc.step(&neg_token_auth(&auth)).map_err(|e| e.to_string())? {
            smbdirect_server::auth::Step::Done { output, session_key, .. } => Ok((auth, output, session_key.to_vec())),
            _ => Err("not done".into()),
        }
    }

    /// Our server's acceptor (the same NTLMv2 verifier SESSION_SETUP uses) accepts the
    /// client's AUTHENTICATE with its MIC and mechListMIC, both ends derive the same
    /// session key, and the server's mechListMIC verifies; a wrong password is refused.
    #[test]
    fn server_acceptor_accepts_our_ntlmv2() {
        let (auth, output, key) = run("alice", "s3cret").unwrap();
        assert_eq!(key, auth.session_key.to_vec());
        check_final(&output, &auth).unwrap();
        assert!(run("alice", "wrong").is_err());
    }
}
