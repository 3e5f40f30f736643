//! NTLMSSP server side (MS-NLMP): NEGOTIATE parsing, CHALLENGE building, AUTHENTICATE
//! parsing and NTLMv2 verification.

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::ntlm_crypto::{hmac_md5, ntowfv2, rc4_once};
use super::userdb::UserDb;
use super::{AcceptorConfig, AuthError, IdentityKind};

/// "NTLMSSP\0"
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// NegotiateFlags bits (MS-NLMP 2.2.2.5).
pub mod flags {
    pub const UNICODE: u32 = 0x0000_0001;
    pub const OEM: u32 = 0x0000_0002;
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    pub const SIGN: u32 = 0x0000_0010;
    pub const SEAL: u32 = 0x0000_0020;
    pub const LM_KEY: u32 = 0x0000_0080;
    pub const NTLM: u32 = 0x0000_0200;
    pub const ANONYMOUS: u32 = 0x0000_0800;
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
    pub const TARGET_TYPE_SERVER: u32 = 0x0002_0000;
    pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
    pub const TARGET_INFO: u32 = 0x0080_0000;
    pub const VERSION: u32 = 0x0200_0000;
    pub const NEGOTIATE_128: u32 = 0x2000_0000;
    pub const KEY_EXCH: u32 = 0x4000_0000;
    pub const NEGOTIATE_56: u32 = 0x8000_0000;
}

/// AV pair ids (MS-NLMP 2.2.2.1).
pub mod av {
    pub const EOL: u16 = 0;
    pub const NB_COMPUTER_NAME: u16 = 1;
    pub const NB_DOMAIN_NAME: u16 = 2;
    pub const DNS_COMPUTER_NAME: u16 = 3;
    pub const DNS_DOMAIN_NAME: u16 = 4;
    pub const FLAGS: u16 = 6;
    pub const TIMESTAMP: u16 = 7;
    /// MsvAvFlags bit: the AUTHENTICATE message carries a MIC.
    pub const FLAG_MIC_PRESENT: u32 = 0x0000_0002;
}

const MSG_NEGOTIATE: u32 = 1;
const MSG_CHALLENGE: u32 = 2;
const MSG_AUTHENTICATE: u32 = 3;

/// Where the MIC sits in an AUTHENTICATE message (after the 8-byte Version field).
const MIC_OFFSET: usize = 72;
const MIC_END: usize = MIC_OFFSET + 16;
/// Fixed part of AUTHENTICATE up to and including NegotiateFlags.
const AUTH_HEADER: usize = 64;
/// Fixed part of NEGOTIATE up to and including the WorkstationFields.
const NEGOTIATE_HEADER: usize = 32;

/// The Version structure we send: Windows 10.0 build 20348, NTLMSSP_REVISION_W2K3.
const OUR_VERSION: [u8; 8] = [10, 0, 0x4c, 0x4f, 0, 0, 0, 0x0f];

fn bad(what: &'static str) -> AuthError {
    AuthError::InvalidParameter(what)
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, AuthError> {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(bad("NTLMSSP: truncated message"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, AuthError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(bad("NTLMSSP: truncated message"))
}

/// A payload field (Len, MaxLen, Offset) resolved against the message.
#[derive(Debug, Clone, Copy)]
struct Field {
    offset: usize,
    len: usize,
}

fn field_at(b: &[u8], at: usize) -> Result<Field, AuthError> {
    let len = usize::from(u16_at(b, at)?);
    let offset = usize::try_from(u32_at(b, at + 4)?).map_err(|_| bad("NTLMSSP: bad offset"))?;
    if len > 0 {
        let end = offset
            .checked_add(len)
            .ok_or(bad("NTLMSSP: field offset overflows"))?;
        if end > b.len() {
            return Err(bad("NTLMSSP: field beyond end of message"));
        }
    }
    Ok(Field { offset, len })
}

fn field_bytes(b: &[u8], f: Field) -> &[u8] {
    if f.len == 0 {
        return &[];
    }
    b.get(f.offset..f.offset + f.len).unwrap_or(&[])
}

fn check_header(msg: &[u8], ty: u32) -> Result<(), AuthError> {
    if msg.get(..8) != Some(&SIGNATURE[..]) {
        return Err(bad("NTLMSSP: bad signature"));
    }
    if u32_at(msg, 8)? != ty {
        return Err(bad("NTLMSSP: unexpected message type"));
    }
    Ok(())
}

/// Parsed NEGOTIATE_MESSAGE: only the flags matter to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiate {
    pub flags: u32,
}

/// Parses a NEGOTIATE_MESSAGE.
pub fn parse_negotiate(msg: &[u8]) -> Result<Negotiate, AuthError> {
    check_header(msg, MSG_NEGOTIATE)?;
    let flags = u32_at(msg, 12)?;
    // Domain and workstation fields are optional (older clients send 16 bytes); when present
    // they must still point inside the message.
    if msg.len() >= 32 {
        for at in [16, 24] {
            let f = field_at(msg, at)?;
            // A payload field starts after the fixed part it is named in.
            if f.len > 0 && f.offset < NEGOTIATE_HEADER {
                return Err(bad("NTLMSSP: NEGOTIATE field overlaps the header"));
            }
        }
    }
    Ok(Negotiate { flags })
}

/// What the server keeps from its CHALLENGE for the AUTHENTICATE step.
#[derive(Clone)]
pub struct Challenge {
    pub flags: u32,
    pub server_challenge: [u8; 8],
    pub message: Vec<u8>,
}

impl std::fmt::Debug for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenge")
            .field("flags", &format_args!("{:#010x}", self.flags))
            .finish_non_exhaustive()
    }
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn push_av(out: &mut Vec<u8>, id: u16, value: &[u8]) {
    out.extend_from_slice(&id.to_le_bytes());
    // Names come from our configuration; clamp rather than wrap if absurdly long.
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(value.get(..usize::from(len)).unwrap_or(value));
}

/// The flags the server answers with, chosen from the client's.
pub fn challenge_flags(client: u32) -> u32 {
    let mut f = flags::NTLM | flags::TARGET_INFO | flags::TARGET_TYPE_SERVER;
    if client & flags::UNICODE != 0 {
        f |= flags::UNICODE;
    } else if client & flags::OEM != 0 {
        f |= flags::OEM;
    } else {
        f |= flags::UNICODE;
    }
    for bit in [
        flags::REQUEST_TARGET,
        flags::SIGN,
        flags::SEAL,
        flags::ALWAYS_SIGN,
        flags::EXTENDED_SESSIONSECURITY,
        flags::VERSION,
        flags::NEGOTIATE_128,
        flags::NEGOTIATE_56,
        flags::KEY_EXCH,
    ] {
        f |= client & bit;
    }
    f
}

/// Builds a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) for the client's NEGOTIATE flags.
/// `timestamp` is a FILETIME (100 ns units since 1601).
pub fn build_challenge(
    client_flags: u32,
    server_challenge: [u8; 8],
    timestamp: u64,
    cfg: &AcceptorConfig,
) -> Challenge {
    let f = challenge_flags(client_flags);
    let unicode = f & flags::UNICODE != 0;
    let target_name = if unicode {
        utf16le(&cfg.nb_computer_name)
    } else {
        cfg.nb_computer_name.bytes().filter(u8::is_ascii).collect()
    };
    let mut info = Vec::new();
    push_av(&mut info, av::NB_DOMAIN_NAME, &utf16le(&cfg.nb_domain_name));
    push_av(
        &mut info,
        av::NB_COMPUTER_NAME,
        &utf16le(&cfg.nb_computer_name),
    );
    push_av(
        &mut info,
        av::DNS_DOMAIN_NAME,
        &utf16le(&cfg.dns_domain_name),
    );
    push_av(
        &mut info,
        av::DNS_COMPUTER_NAME,
        &utf16le(&cfg.dns_computer_name),
    );
    push_av(&mut info, av::TIMESTAMP, &timestamp.to_le_bytes());
    push_av(&mut info, av::EOL, &[]);

    const PAYLOAD: usize = 56;
    let name_len = target_name.len().min(usize::from(u16::MAX) / 2);
    let target_name = target_name.get(..name_len).unwrap_or(&[]);
    let info_len = info.len().min(usize::from(u16::MAX));
    let info = info.get(..info_len).unwrap_or(&[]);

    let mut m = Vec::with_capacity(PAYLOAD + name_len + info_len);
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&MSG_CHALLENGE.to_le_bytes());
    push_field(&mut m, name_len, PAYLOAD);
    m.extend_from_slice(&f.to_le_bytes());
    m.extend_from_slice(&server_challenge);
    m.extend_from_slice(&[0u8; 8]);
    push_field(&mut m, info_len, PAYLOAD + name_len);
    if f & flags::VERSION != 0 {
        m.extend_from_slice(&OUR_VERSION);
    } else {
        m.extend_from_slice(&[0u8; 8]);
    }
    m.extend_from_slice(target_name);
    m.extend_from_slice(info);
    Challenge {
        flags: f,
        server_challenge,
        message: m,
    }
}

fn push_field(m: &mut Vec<u8>, len: usize, offset: usize) {
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes());
}

/// A parsed AUTHENTICATE_MESSAGE, borrowing the message.
#[derive(Debug)]
pub struct Authenticate<'a> {
    pub flags: u32,
    pub lm_response: &'a [u8],
    pub nt_response: &'a [u8],
    pub domain: Vec<u16>,
    pub user: Vec<u16>,
    pub workstation: Vec<u16>,
    pub encrypted_session_key: &'a [u8],
    /// Lowest offset of any non-empty payload field (or the message length).
    payload_start: usize,
}

fn decode_string(b: &[u8], unicode: bool) -> Result<Vec<u16>, AuthError> {
    if unicode {
        if !b.len().is_multiple_of(2) {
            return Err(bad("NTLMSSP: odd-length Unicode string"));
        }
        Ok(b.chunks_exact(2)
            .filter_map(|c| <[u8; 2]>::try_from(c).ok())
            .map(u16::from_le_bytes)
            .collect())
    } else {
        // OEM strings: treated as Latin-1.
        Ok(b.iter().map(|&c| u16::from(c)).collect())
    }
}

/// Parses an AUTHENTICATE_MESSAGE, checking every field against the message length.
pub fn parse_authenticate(msg: &[u8]) -> Result<Authenticate<'_>, AuthError> {
    check_header(msg, MSG_AUTHENTICATE)?;
    if msg.len() < AUTH_HEADER {
        return Err(bad("NTLMSSP: AUTHENTICATE too short"));
    }
    let lm = field_at(msg, 12)?;
    let nt = field_at(msg, 20)?;
    let dom = field_at(msg, 28)?;
    let user = field_at(msg, 36)?;
    let ws = field_at(msg, 44)?;
    let key = field_at(msg, 52)?;
    let flags = u32_at(msg, 60)?;
    let unicode = flags & flags::UNICODE != 0;
    let payload_start = [lm, nt, dom, user, ws, key]
        .iter()
        .filter(|f| f.len > 0)
        .map(|f| f.offset)
        .min()
        .unwrap_or(msg.len());
    if payload_start < AUTH_HEADER {
        return Err(bad("NTLMSSP: payload overlaps the header"));
    }
    Ok(Authenticate {
        flags,
        lm_response: field_bytes(msg, lm),
        nt_response: field_bytes(msg, nt),
        domain: decode_string(field_bytes(msg, dom), unicode)?,
        user: decode_string(field_bytes(msg, user), unicode)?,
        workstation: decode_string(field_bytes(msg, ws), unicode)?,
        encrypted_session_key: field_bytes(msg, key),
        payload_start,
    })
}

/// Splits an AV pair list up to MsvAvEOL; fails if it is truncated or has no EOL.
pub(crate) fn av_pairs(mut pairs: &[u8]) -> Result<Vec<(u16, &[u8])>, AuthError> {
    let mut out = Vec::new();
    loop {
        let id = u16_at(pairs, 0).map_err(|_| bad("NTLMSSP: truncated AV pair"))?;
        let len = usize::from(u16_at(pairs, 2).map_err(|_| bad("NTLMSSP: truncated AV pair"))?);
        let value = pairs
            .get(4..4 + len)
            .ok_or(bad("NTLMSSP: AV pair beyond end"))?;
        if id == av::EOL {
            return Ok(out);
        }
        out.push((id, value));
        pairs = pairs.get(4 + len..).unwrap_or(&[]);
    }
}

/// MsvAvFlags of an AV pair list (0 when absent).
#[cfg(test)]
pub(crate) fn av_flags(pairs: &[u8]) -> Result<u32, AuthError> {
    flags_in(&av_pairs(pairs)?)
}

fn flags_in(pairs: &[(u16, &[u8])]) -> Result<u32, AuthError> {
    let mut found = 0;
    for (id, value) in pairs {
        if *id == av::FLAGS {
            found = u32_at(value, 0).map_err(|_| bad("NTLMSSP: short MsvAvFlags"))?;
        }
    }
    Ok(found)
}

/// The TargetInfo of one of our CHALLENGE messages.
fn challenge_target_info(challenge: &Challenge) -> &[u8] {
    field_at(&challenge.message, 40)
        .map(|f| field_bytes(&challenge.message, f))
        .unwrap_or(&[])
}

/// The names and timestamp the client echoes in its NTLMv2 blob must be the ones this
/// server sent: a client that answered someone else's CHALLENGE is refused (as Samba does).
fn check_echoed_pairs(client: &[(u16, &[u8])], ours: &[u8]) -> Result<(), AuthError> {
    let ours = av_pairs(ours).unwrap_or_default();
    for (id, value) in client {
        if !matches!(
            *id,
            av::NB_COMPUTER_NAME
                | av::NB_DOMAIN_NAME
                | av::DNS_COMPUTER_NAME
                | av::DNS_DOMAIN_NAME
                | av::TIMESTAMP
        ) {
            continue;
        }
        if let Some((_, sent)) = ours.iter().find(|(i, _)| i == id) {
            if sent != value {
                tracing::debug!(av_id = id, "echoed AV pair differs from our CHALLENGE");
                return Err(bad("NTLMSSP: AV pair differs from the CHALLENGE"));
            }
        }
    }
    Ok(())
}

/// The result of a successful AUTHENTICATE check.
pub struct Verified {
    pub kind: IdentityKind,
    /// The account's name as stored (users), or as sent (guest), or empty (anonymous).
    pub user: String,
    pub domain: String,
    /// Exported session key; None when no key is shared (guest, anonymous).
    pub exported_key: Option<[u8; 16]>,
    /// The negotiated flags (AUTHENTICATE's).
    pub flags: u32,
    /// The client put a MIC in AUTHENTICATE (MsvAvFlags bit 0x2) and it verified.
    pub mic_present: bool,
}

impl Drop for Verified {
    fn drop(&mut self) {
        if let Some(k) = self.exported_key.as_mut() {
            k.zeroize();
        }
    }
}

fn lossy(units: &[u16]) -> String {
    char::decode_utf16(units.iter().copied())
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Verifies an AUTHENTICATE message against the NEGOTIATE and CHALLENGE this server saw.
pub fn verify(
    db: &UserDb,
    cfg: &AcceptorConfig,
    negotiate_msg: &[u8],
    challenge: &Challenge,
    auth_msg: &[u8],
) -> Result<Verified, AuthError> {
    let a = parse_authenticate(auth_msg)?;
    let domain = lossy(&a.domain);

    // Anonymous: empty user, empty NT response, LM response empty or one zero byte.
    if a.user.is_empty() && a.nt_response.is_empty() {
        if !(a.lm_response.is_empty() || a.lm_response == [0]) {
            return Err(AuthError::LogonFailure);
        }
        if !cfg.allow_anonymous {
            tracing::debug!("anonymous logon refused by configuration");
            return Err(AuthError::AccessDenied("anonymous logon not allowed"));
        }
        return Ok(Verified {
            kind: IdentityKind::Anonymous,
            user: String::new(),
            domain,
            exported_key: None,
            flags: a.flags,
            mic_present: false,
        });
    }

    // NTLMv2 only: NTProofStr (16) + blob header (28) at the least. 24-byte responses are
    // NTLMv1 or LM and are refused like a wrong password.
    const BLOB_HEADER: usize = 28;
    let (proof, blob) = match a.nt_response.split_at_checked(16) {
        Some((p, b)) if b.len() >= BLOB_HEADER => (p, b),
        _ => {
            tracing::debug!(len = a.nt_response.len(), "non-NTLMv2 response refused");
            return Err(AuthError::LogonFailure);
        }
    };
    if blob.first() != Some(&1) || blob.get(1) != Some(&1) {
        return Err(AuthError::LogonFailure);
    }
    let client_pairs = av_pairs(blob.get(BLOB_HEADER..).unwrap_or(&[]))?;
    check_echoed_pairs(&client_pairs, challenge_target_info(challenge))?;
    let mic_flag = flags_in(&client_pairs)? & av::FLAG_MIC_PRESENT != 0;

    let user_name = String::from_utf16(&a.user).ok();
    let entry = user_name.as_deref().and_then(|n| db.lookup(n));
    let Some(entry) = entry else {
        // Same work as a real check, so timing does not tell unknown users apart.
        let dummy = ntowfv2(&[0u8; 16], &a.user, &a.domain);
        let _ = hmac_md5(&dummy, &[&challenge.server_challenge, blob]);
        if cfg.map_to_guest {
            tracing::debug!("unknown user mapped to guest");
            return Ok(Verified {
                kind: IdentityKind::Guest,
                user: lossy(&a.user),
                domain,
                exported_key: None,
                flags: a.flags,
                mic_present: false,
            });
        }
        return Err(AuthError::LogonFailure);
    };

    let mut key_v2 = ntowfv2(entry.nt_hash(), &a.user, &a.domain);
    let expect = hmac_md5(&key_v2, &[&challenge.server_challenge, blob]);
    if !bool::from(expect[..].ct_eq(proof)) {
        key_v2.zeroize();
        tracing::debug!("NTProofStr mismatch");
        return Err(AuthError::LogonFailure);
    }
    if entry.disabled() {
        key_v2.zeroize();
        tracing::info!(user = entry.name(), "logon refused: the account is disabled");
        return Err(AuthError::LogonFailure);
    }
    let mut session_base_key = hmac_md5(&key_v2, &[proof]);
    key_v2.zeroize();
    // NTLMv2: KeyExchangeKey = SessionBaseKey.
    let exported = if a.flags & flags::KEY_EXCH != 0 {
        let enc: &[u8; 16] = a
            .encrypted_session_key
            .try_into()
            .map_err(|_| bad("NTLMSSP: EncryptedRandomSessionKey must be 16 bytes"))?;
        rc4_once(&session_base_key, enc)
    } else {
        session_base_key
    };
    session_base_key.zeroize();

    if mic_flag {
        let mic = auth_msg
            .get(MIC_OFFSET..MIC_END)
            .ok_or(bad("NTLMSSP: MIC flagged but message too short"))?;
        if a.payload_start < MIC_END {
            return Err(bad("NTLMSSP: MIC flagged but payload overlaps it"));
        }
        let mut zeroed = auth_msg.to_vec();
        if let Some(m) = zeroed.get_mut(MIC_OFFSET..MIC_END) {
            m.fill(0);
        }
        let expect = hmac_md5(&exported, &[negotiate_msg, &challenge.message, &zeroed]);
        if !bool::from(expect[..].ct_eq(mic)) {
            tracing::debug!("AUTHENTICATE MIC mismatch");
            return Err(AuthError::LogonFailure);
        }
    }

    Ok(Verified {
        kind: IdentityKind::User,
        user: entry.name().to_owned(),
        domain,
        exported_key: Some(exported),
        flags: a.flags,
        mic_present: mic_flag,
    })
}
