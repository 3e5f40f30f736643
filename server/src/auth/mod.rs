//! Session-setup authentication: an NTLMSSP acceptor (MS-NLMP) inside SPNEGO (RFC 4178,
//! MS-SPNG), or bare NTLMSSP. Sans-I/O: the caller feeds each security buffer from a
//! SESSION_SETUP request to [`Acceptor::step`] and sends back what it returns.

mod der;
pub mod ntlm;
pub mod ntlm_crypto;
pub mod spnego;
pub mod unix;
mod userdb;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroize;

pub use ntlm_crypto::nt_hash;
pub use userdb::{valid_user_name, UserDb, UserDbError, UserEntry, UserSource};

use ntlm::Challenge;
use ntlm_crypto::{Direction, NtlmSecurity};
use spnego::{NegState, NegTokenResp, Token, OID_NTLMSSP};

/// NT status codes the errors map to (MS-ERREF 2.3.1).
pub mod status {
    pub const STATUS_LOGON_FAILURE: u32 = 0xC000_006D;
    pub const STATUS_INVALID_PARAMETER: u32 = 0xC000_000D;
    pub const STATUS_ACCESS_DENIED: u32 = 0xC000_0022;
    pub const STATUS_INTERNAL_ERROR: u32 = 0xC000_00E5;
}

/// Why an exchange failed. Wrong password and unknown user are both `LogonFailure`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("logon failure")]
    LogonFailure,
    #[error("invalid token: {0}")]
    InvalidParameter(&'static str),
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl AuthError {
    /// The NT status to put in the SESSION_SETUP response.
    pub fn nt_status(&self) -> u32 {
        match self {
            AuthError::LogonFailure => status::STATUS_LOGON_FAILURE,
            AuthError::InvalidParameter(_) => status::STATUS_INVALID_PARAMETER,
            AuthError::AccessDenied(_) => status::STATUS_ACCESS_DENIED,
            AuthError::Internal(_) => status::STATUS_INTERNAL_ERROR,
        }
    }
}

/// Names the server announces and the logon policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptorConfig {
    /// NetBIOS computer name: CHALLENGE TargetName and MsvAvNbComputerName.
    pub nb_computer_name: String,
    /// MsvAvNbDomainName (the workgroup for a standalone server).
    pub nb_domain_name: String,
    pub dns_computer_name: String,
    pub dns_domain_name: String,
    /// Accept anonymous logons (empty user and empty NT response).
    pub allow_anonymous: bool,
    /// Map unknown users to guest (Samba's "map to guest = bad user"). Wrong passwords of
    /// known users still fail.
    pub map_to_guest: bool,
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        Self {
            nb_computer_name: "SMBDIRECT".into(),
            nb_domain_name: "WORKGROUP".into(),
            dns_computer_name: "smbdirect".into(),
            dns_domain_name: "smbdirect".into(),
            allow_anonymous: false,
            map_to_guest: false,
        }
    }
}

/// What kind of logon succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    User,
    Guest,
    Anonymous,
}

/// Who logged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account name as stored in the [`UserDb`] for users; the name sent by the client
    /// for guests; empty for anonymous.
    pub user: String,
    /// The domain name the client sent.
    pub domain: String,
    pub kind: IdentityKind,
}

/// The outcome of one [`Acceptor::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this token with STATUS_MORE_PROCESSING_REQUIRED and feed the next one back.
    Continue(Vec<u8>),
    /// Authentication finished: send `output` (may be empty) with STATUS_SUCCESS.
    Done {
        output: Vec<u8>,
        identity: Identity,
        /// The 16-byte exported session key for users; empty for guest and anonymous
        /// logons, which share no key with the server.
        session_key: Vec<u8>,
    },
}

/// The NegTokenInit2 for the security buffer of the NEGOTIATE response.
pub fn negotiate_token(_cfg: &AcceptorConfig) -> Vec<u8> {
    spnego::neg_token_init2(&[OID_NTLMSSP])
}

#[derive(Debug, Clone)]
struct Spnego {
    /// The client's MechTypeList as sent, covered by the mechListMIC.
    mech_types_der: Vec<u8>,
    /// NTLMSSP was the client's first choice.
    ntlm_preferred: bool,
    /// supportedMech has been sent already.
    mech_announced: bool,
}

#[derive(Debug, Clone)]
enum State {
    Start,
    ExpectNegotiate(Spnego),
    ExpectAuthenticate {
        spnego: Option<Spnego>,
        negotiate: Vec<u8>,
        challenge: Challenge,
    },
    Finished,
}

/// One SESSION_SETUP authentication exchange.
pub struct Acceptor {
    db: Arc<UserDb>,
    cfg: AcceptorConfig,
    state: State,
    fixed_challenge: Option<[u8; 8]>,
    fixed_time: Option<u64>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn filetime_now() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(since.subsec_nanos() / 100)
}

impl Acceptor {
    pub fn new(db: Arc<UserDb>, cfg: AcceptorConfig) -> Self {
        Self {
            db,
            cfg,
            state: State::Start,
            fixed_challenge: None,
            fixed_time: None,
        }
    }

    /// Tests only: use this server challenge instead of a random one.
    #[cfg(test)]
    pub(crate) fn with_fixed_challenge(mut self, c: [u8; 8]) -> Self {
        self.fixed_challenge = Some(c);
        self
    }

    /// Tests only: use this MsvAvTimestamp (FILETIME) instead of the clock.
    #[cfg(test)]
    pub(crate) fn with_fixed_time(mut self, t: u64) -> Self {
        self.fixed_time = Some(t);
        self
    }

    /// Tests only: a copy of this acceptor in the same state (same server challenge).
    #[cfg(test)]
    pub(crate) fn fork(&self) -> Self {
        Self {
            db: self.db.clone(),
            cfg: self.cfg.clone(),
            state: self.state.clone(),
            fixed_challenge: self.fixed_challenge,
            fixed_time: self.fixed_time,
        }
    }

    /// Feeds one security buffer from the client. After an error or `Done` the acceptor is
    /// finished and refuses further input.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, AuthError> {
        let state = std::mem::replace(&mut self.state, State::Finished);
        let r = self.advance(state, input);
        if let Err(e) = &r {
            tracing::debug!(error = %e, "authentication failed");
        }
        r
    }

    fn advance(&mut self, state: State, input: &[u8]) -> Result<Step, AuthError> {
        match state {
            State::Start => {
                if input.starts_with(ntlm::SIGNATURE) {
                    return self.on_negotiate(None, input);
                }
                if input.is_empty() {
                    // The client asks for the server's mechanism list first.
                    self.state = State::Start;
                    return Ok(Step::Continue(negotiate_token(&self.cfg)));
                }
                let Token::Init(init) = spnego::parse(input)? else {
                    return Err(AuthError::InvalidParameter("SPNEGO: expected NegTokenInit"));
                };
                if !init.mech_types.contains(&OID_NTLMSSP) {
                    return Err(AuthError::InvalidParameter(
                        "SPNEGO: client does not offer NTLMSSP",
                    ));
                }
                let ntlm_preferred = init.mech_types.first() == Some(&OID_NTLMSSP);
                let mut sp = Spnego {
                    mech_types_der: init.mech_types_der.to_vec(),
                    ntlm_preferred,
                    mech_announced: false,
                };
                match init.mech_token {
                    Some(token) if ntlm_preferred => self.on_negotiate(Some(sp), token),
                    _ => {
                        // Select NTLMSSP without consuming an optimistic token meant for
                        // another mechanism; RFC 4178 asks for request-mic when the
                        // initiator's first choice is not the one selected.
                        let neg_state = if ntlm_preferred {
                            NegState::AcceptIncomplete
                        } else {
                            NegState::RequestMic
                        };
                        let out = spnego::neg_token_resp(&NegTokenResp {
                            neg_state: Some(neg_state as u8),
                            supported_mech: Some(OID_NTLMSSP),
                            ..Default::default()
                        });
                        sp.mech_announced = true;
                        self.state = State::ExpectNegotiate(sp);
                        Ok(Step::Continue(out))
                    }
                }
            }
            State::ExpectNegotiate(sp) => {
                let Token::Resp(resp) = spnego::parse(input)? else {
                    return Err(AuthError::InvalidParameter("SPNEGO: expected NegTokenResp"));
                };
                let token = resp
                    .response_token
                    .ok_or(AuthError::InvalidParameter("SPNEGO: no NTLMSSP NEGOTIATE"))?;
                self.on_negotiate(Some(sp), token)
            }
            State::ExpectAuthenticate {
                spnego: None,
                negotiate,
                challenge,
            } => {
                let v = ntlm::verify(&self.db, &self.cfg, &negotiate, &challenge, input)?;
                Ok(done(&v, Vec::new()))
            }
            State::ExpectAuthenticate {
                spnego: Some(sp),
                negotiate,
                challenge,
            } => {
                let Token::Resp(resp) = spnego::parse(input)? else {
                    return Err(AuthError::InvalidParameter("SPNEGO: expected NegTokenResp"));
                };
                let token = resp.response_token.ok_or(AuthError::InvalidParameter(
                    "SPNEGO: no NTLMSSP AUTHENTICATE",
                ))?;
                let v = ntlm::verify(&self.db, &self.cfg, &negotiate, &challenge, token)?;
                let server_mic = self.mech_list_mic(&sp, &v, resp.mech_list_mic)?;
                let out = spnego::neg_token_resp(&NegTokenResp {
                    neg_state: Some(NegState::AcceptCompleted as u8),
                    mech_list_mic: server_mic.as_ref().map(|m| &m[..]),
                    ..Default::default()
                });
                Ok(done(&v, out))
            }
            State::Finished => Err(AuthError::InvalidParameter(
                "authentication already finished",
            )),
        }
    }

    /// Checks the client's mechListMIC (MS-SPNG 3.2.5.1) and returns ours, if any.
    fn mech_list_mic(
        &self,
        sp: &Spnego,
        v: &ntlm::Verified,
        client_mic: Option<&[u8]>,
    ) -> Result<Option<[u8; 16]>, AuthError> {
        let Some(key) = v.exported_key.as_ref() else {
            // Guest and anonymous logons share no key: nothing to sign or check.
            return Ok(None);
        };
        let required = !sp.ntlm_preferred || v.mic_present;
        let Some(client_mic) = client_mic else {
            if required {
                return Err(AuthError::InvalidParameter("SPNEGO: mechListMIC missing"));
            }
            return Ok(None);
        };
        if v.flags & ntlm::flags::EXTENDED_SESSIONSECURITY == 0 {
            return Err(AuthError::InvalidParameter(
                "SPNEGO: mechListMIC without extended session security",
            ));
        }
        let mut client = NtlmSecurity::new(key, v.flags, Direction::ClientToServer);
        if !client.verify(&sp.mech_types_der, client_mic) {
            tracing::debug!("mechListMIC mismatch");
            return Err(AuthError::LogonFailure);
        }
        let mut server = NtlmSecurity::new(key, v.flags, Direction::ServerToClient);
        Ok(Some(server.sign(&sp.mech_types_der)))
    }

    fn on_negotiate(&mut self, sp: Option<Spnego>, token: &[u8]) -> Result<Step, AuthError> {
        let neg = ntlm::parse_negotiate(token)?;
        let server_challenge = match self.fixed_challenge {
            Some(c) => c,
            None => {
                let mut c = [0u8; 8];
                getrandom::fill(&mut c).map_err(|_| AuthError::Internal("no random source"))?;
                c
            }
        };
        let challenge = ntlm::build_challenge(
            neg.flags,
            server_challenge,
            self.fixed_time.unwrap_or_else(filetime_now),
            &self.cfg,
        );
        let out = match &sp {
            None => challenge.message.clone(),
            Some(sp) => spnego::neg_token_resp(&NegTokenResp {
                neg_state: Some(NegState::AcceptIncomplete as u8),
                supported_mech: (!sp.mech_announced).then_some(OID_NTLMSSP),
                response_token: Some(&challenge.message),
                mech_list_mic: None,
            }),
        };
        self.state = State::ExpectAuthenticate {
            spnego: sp.map(|s| Spnego {
                mech_announced: true,
                ..s
            }),
            negotiate: token.to_vec(),
            challenge,
        };
        Ok(Step::Continue(out))
    }
}

fn done(v: &ntlm::Verified, output: Vec<u8>) -> Step {
    let mut key = v.exported_key.unwrap_or_default();
    let session_key = if v.exported_key.is_some() {
        key.to_vec()
    } else {
        Vec::new()
    };
    key.zeroize();
    tracing::debug!(user = %v.user, kind = ?v.kind, "authenticated");
    Step::Done {
        output,
        identity: Identity {
            user: v.user.clone(),
            domain: v.domain.clone(),
            kind: v.kind,
        },
        session_key,
    }
}
