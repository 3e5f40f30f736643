//! NEGOTIATE (including the SMB1 multi-protocol upgrade), SESSION_SETUP and
//! LOGOFF: everything that establishes a connection's dialect and a session's keys.

use crate::config::*;
use crate::conn::{Connection, Ctx, Disconnect, PendingAuth, SetupSlot, DIALECT_WILDCARD_INTERNAL};
use crate::crypto::{self, Cipher, SigningAlgorithm};
use crate::objects::{lock, Channel, Session, SessionKeys, SessionState};
use crate::transport::OutBuf;
use crate::wire::header::*;
use crate::wire::messages::{NegotiateReq, SessionSetupReq, SESSION_FLAG_BINDING};
use crate::wire::status::NtStatus;
use crate::wire::{Put, Reader};
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, info, warn};

pub const CAP_DFS: u32 = 0x01;
pub const CAP_LEASING: u32 = 0x02;
pub const CAP_DIRECTORY_LEASING: u32 = 0x20;
pub const CAP_LARGE_MTU: u32 = 0x04;
pub const CAP_MULTI_CHANNEL: u32 = 0x08;
pub const CAP_ENCRYPTION: u32 = 0x40;

pub const SEC_SIGNING_ENABLED: u16 = 0x01;
pub const SEC_SIGNING_REQUIRED: u16 = 0x02;

pub const CTX_PREAUTH: u16 = 1;
pub const CTX_ENCRYPTION: u16 = 2;
pub const CTX_COMPRESSION: u16 = 3;
pub const CTX_NETNAME: u16 = 5;
pub const CTX_TRANSPORT: u16 = 6;
pub const CTX_RDMA_TRANSFORM: u16 = 7;
pub const CTX_SIGNING: u16 = 8;
pub const HASH_SHA512: u16 = 1;
pub const RDMA_TRANSFORM_NONE: u16 = 0;

/// Channels one session may have: Windows Server's limit (2012 R2 on),
/// which smbtorture's smb2.multichannel.generic.num_channels expects.
pub const MAX_CHANNELS_PER_SESSION: usize = 32;

const SESSION_FLAG_IS_GUEST: u16 = 1;
const SESSION_FLAG_IS_NULL: u16 = 2;
const SESSION_FLAG_ENCRYPT_DATA: u16 = 4;

impl Connection {
    /// An SMB1 NEGOTIATE (what smbclient sends first): answer with an SMB2
    /// NEGOTIATE response, either 2.0.2 directly or the 0x02FF wildcard that
    /// asks for an SMB2 NEGOTIATE.
    pub fn smb1_negotiate(&mut self, msg: &[u8]) -> Result<(), Disconnect> {
        if self.dialect.is_some() {
            return Err(Disconnect::Protocol("SMB1 message after negotiation".into()));
        }
        let mut r = Reader::new(msg);
        let parse = (|| {
            r.skip(4)?;
            let cmd = r.u8()?;
            r.skip(27)?;
            let wc = r.u8()?;
            r.skip(wc as usize * 2)?;
            let bc = r.u16()? as usize;
            let bytes = r.bytes(bc)?;
            Ok::<_, crate::wire::WireError>((cmd, bytes))
        })();
        let (cmd, bytes) = parse.map_err(|e| Disconnect::Protocol(format!("bad SMB1 negotiate: {e}")))?;
        if cmd != 0x72 {
            return Err(Disconnect::Protocol(format!("SMB1 command {cmd:#x} is not supported")));
        }
        let dialects: Vec<&[u8]> = bytes.split(|b| *b == 0).filter(|d| d.first() == Some(&0x02)).map(|d| &d[1..]).collect();
        let chosen = if dialects.contains(&&b"SMB 2.???"[..]) && self.server.cfg.max_protocol > DIALECT_202 {
            DIALECT_WILDCARD
        } else if dialects.contains(&&b"SMB 2.002"[..]) && self.server.cfg.dialect_allowed(DIALECT_202) {
            DIALECT_202
        } else {
            return Err(Disconnect::Protocol("SMB1 client offers no SMB2 dialect".into()));
        };
        let _ = self.credits.consume(0, 1);
        let hdr = Header { command: Command::Negotiate as u16, ..Default::default() };
        let mut out = OutBuf::new(256);
        let start = out.buf.len();
        out.buf.zeros(HEADER_LEN);
        self.negotiate_response_body(chosen, &[], &mut out.buf);
        let mut rh = hdr.response(NtStatus::SUCCESS);
        rh.credits = self.credits.grant(1);
        let mut hb = Vec::new();
        rh.write(&mut hb);
        out.buf[start..start + HEADER_LEN].copy_from_slice(&hb);
        self.dialect = Some(if chosen == DIALECT_WILDCARD { DIALECT_WILDCARD_INTERNAL } else { chosen });
        self.sink.send(out).map_err(Disconnect::Io)
    }

    pub fn negotiate(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
        if self.dialect.is_some_and(|d| d != DIALECT_WILDCARD_INTERNAL) {
            // A second NEGOTIATE on a connection: MS-SMB2 3.3.5.3 says disconnect;
            // answering with an error and leaving the state alone is as safe.
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // MS-SMB2 3.3.5.2.4: nothing is there to sign a NEGOTIATE with.
        if ctx.hdr.is_signed() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let req = NegotiateReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let cfg = &self.server.cfg;
        let dialect = [DIALECT_311, DIALECT_302, DIALECT_300, DIALECT_210, DIALECT_202]
            .into_iter()
            .find(|d| req.dialects.contains(d) && cfg.dialect_allowed(*d))
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        self.client_guid = req.client_guid;
        self.client_caps = req.capabilities;
        self.client_security_mode = req.security_mode;
        let mut ctx_out: Vec<(u16, Vec<u8>)> = Vec::new();
        if dialect == DIALECT_311 {
            let contexts = req.contexts().map_err(|_| NtStatus::INVALID_PARAMETER)?;
            let mut saw_preauth = false;
            for (ty, data) in contexts {
                let mut r = Reader::new(data);
                match ty {
                    CTX_PREAUTH => {
                        if saw_preauth {
                            return Err(NtStatus::INVALID_PARAMETER);
                        }
                        saw_preauth = true;
                        let n = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                        let _salt_len = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                        let mut algs = Vec::new();
                        for _ in 0..n {
                            algs.push(r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?);
                        }
                        if !algs.contains(&HASH_SHA512) {
                            return Err(NtStatus::SMB_NO_PREAUTH_INTEGRITY_HASH_OVERLAP);
                        }
                        let mut salt = [0u8; 32];
                        getrandom::fill(&mut salt).map_err(|_| NtStatus::INSUFFICIENT_RESOURCES)?;
                        let mut d = Vec::new();
                        d.u16(1).u16(32).u16(HASH_SHA512).put(&salt);
                        ctx_out.push((CTX_PREAUTH, d));
                    }
                    CTX_ENCRYPTION => {
                        let n = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                        // MS-SMB2 2.2.3.1.2 says CipherCount MUST be > 0, but a
                        // client without SMB2_GLOBAL_CAP_ENCRYPTION that sends an
                        // empty list just wants no encryption: Samba accepts that
                        // and negotiates no cipher, and so do we. A client that
                        // claims encryption and offers no cipher is refused. A
                        // count that runs past the context fails in the loop below.
                        if n == 0 && req.capabilities & CAP_ENCRYPTION != 0 {
                            return Err(NtStatus::INVALID_PARAMETER);
                        }
                        let mut chosen = None;
                        for _ in 0..n {
                            let c = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                            if chosen.is_none() {
                                chosen = Cipher::from_wire(c).ok();
                            }
                        }
                        if cfg.encrypt == Setting::Disabled {
                            chosen = None;
                        }
                        self.cipher = chosen;
                        let mut d = Vec::new();
                        d.u16(1).u16(chosen.map(|c| c.wire_id()).unwrap_or(0));
                        ctx_out.push((CTX_ENCRYPTION, d));
                    }
                    CTX_SIGNING => {
                        let n = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                        if n == 0 {
                            return Err(NtStatus::INVALID_PARAMETER);
                        }
                        let mut chosen = None;
                        for _ in 0..n {
                            let a = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                            if chosen.is_none() {
                                chosen = SigningAlgorithm::from_wire(a).ok();
                            }
                        }
                        let alg = chosen.unwrap_or(SigningAlgorithm::AesCmac);
                        self.signing_alg = alg;
                        let mut d = Vec::new();
                        d.u16(1).u16(alg.wire_id());
                        ctx_out.push((CTX_SIGNING, d));
                    }
                    CTX_RDMA_TRANSFORM => {
                        let n = r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?;
                        r.skip(6).map_err(|_| NtStatus::INVALID_PARAMETER)?;
                        for _ in 0..n {
                            self.rdma_transforms.push(r.u16().map_err(|_| NtStatus::INVALID_PARAMETER)?);
                        }
                        // We apply no RDMA transform (no RDMA-level encryption or
                        // signing): say so rather than echo what was offered.
                        let mut d = Vec::new();
                        d.u16(1).u16(0).u32(0).u16(RDMA_TRANSFORM_NONE);
                        ctx_out.push((CTX_RDMA_TRANSFORM, d));
                    }
                    CTX_COMPRESSION | CTX_NETNAME | CTX_TRANSPORT => {}
                    other => debug!("ignoring negotiate context {other}"),
                }
            }
            if !saw_preauth {
                return Err(NtStatus::INVALID_PARAMETER);
            }
            if !ctx_out.iter().any(|(t, _)| *t == CTX_SIGNING) {
                self.signing_alg = SigningAlgorithm::AesCmac;
            }
        } else if dialect >= DIALECT_300 {
            self.signing_alg = SigningAlgorithm::AesCmac;
            if req.capabilities & CAP_ENCRYPTION != 0 && cfg.encrypt != Setting::Disabled {
                self.cipher = Some(Cipher::Aes128Ccm);
            }
        } else {
            self.signing_alg = SigningAlgorithm::HmacSha256;
        }
        self.dialect = Some(dialect);
        if dialect == DIALECT_311 {
            let mut h = crypto::PreauthHash::new();
            h.update(ctx.msg);
            self.preauth = Some(h);
        }
        self.negotiate_response_body(dialect, &ctx_out, out);
        info!(peer = %self.peer, "negotiated dialect {dialect:#06x}, cipher {:?}, signing {:?}", self.cipher, self.signing_alg);
        Ok(())
    }

    fn negotiate_response_body(&mut self, dialect: u16, contexts: &[(u16, Vec<u8>)], out: &mut Vec<u8>) {
        let cfg = &self.server.cfg;
        let hdr_start = out.len() - HEADER_LEN;
        let mut caps = 0;
        if dialect >= DIALECT_210 && dialect != DIALECT_WILDCARD {
            caps |= CAP_LARGE_MTU;
        }
        if (dialect == DIALECT_300 || dialect == DIALECT_302) && self.cipher.is_some() {
            caps |= CAP_ENCRYPTION;
        }
        // Multichannel for a 3.x client that asks for it (as Samba does).
        if dialect >= DIALECT_300 && dialect != DIALECT_WILDCARD && cfg.multi_channel && self.client_caps & CAP_MULTI_CHANNEL != 0 {
            caps |= CAP_MULTI_CHANNEL;
        }
        // Leases (v1 on 2.1, v1 and v2 on 3.x), `smb2 leases`; directory
        // leases for 3.x, `smb3 directory leases` (handlers/lease.rs), only
        // to a client that announces them: impacket 0.13 (which does not)
        // fails every CREATE in a share's root once the server advertises
        // them, and a client that does not announce them asks for none.
        if dialect >= DIALECT_210 && dialect != DIALECT_WILDCARD && cfg.smb2_leases {
            caps |= CAP_LEASING;
            if dialect >= DIALECT_300 && cfg.smb3_directory_leases && self.client_caps & CAP_DIRECTORY_LEASING != 0 {
                caps |= CAP_DIRECTORY_LEASING;
            }
        }
        self.server_caps = caps;
        let big = dialect >= DIALECT_210;
        let (mt, mr, mw) = if big { (cfg.max_transact_size, cfg.max_read_size, cfg.max_write_size) } else { (65536, 65536, 65536) };
        let token = crate::auth::negotiate_token(&self.acceptor_config());
        let mut sec = SEC_SIGNING_ENABLED;
        if self.signing_required_by_server() {
            sec |= SEC_SIGNING_REQUIRED;
        }
        out.u16(65).u16(sec).u16(dialect).u16(contexts.len() as u16).put(&self.server.server_guid);
        out.u32(caps).u32(mt).u32(mr).u32(mw).u64(crate::vfs::now_nt()).u64(0);
        let sec_off = HEADER_LEN + 64;
        out.u16(sec_off as u16).u16(token.len() as u16);
        let ctx_off_at = out.len();
        out.u32(0);
        out.put(&token);
        if !contexts.is_empty() {
            let rel = out.len() - hdr_start;
            out.zeros((8 - rel % 8) % 8);
            let ctx_off = out.len() - hdr_start;
            out.set_u32(ctx_off_at, ctx_off as u32);
            for (i, (ty, data)) in contexts.iter().enumerate() {
                if i > 0 {
                    let rel = out.len() - hdr_start;
                    out.zeros((8 - rel % 8) % 8);
                }
                out.u16(*ty).u16(data.len() as u16).u32(0).put(data);
            }
        }
    }

    pub fn acceptor_config(&self) -> crate::auth::AcceptorConfig {
        let cfg = &self.server.cfg;
        crate::auth::AcceptorConfig {
            nb_computer_name: cfg.netbios_name.clone(),
            nb_domain_name: cfg.workgroup.clone(),
            dns_computer_name: cfg.netbios_name.to_lowercase(),
            dns_domain_name: cfg.workgroup.to_lowercase(),
            allow_anonymous: cfg.guest_ok_anonymous || cfg.shares.iter().any(|s| s.guest_ok),
            map_to_guest: cfg.map_to_guest,
        }
    }

    pub fn session_setup(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
        let req = SessionSetupReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let sid = ctx.hdr.session_id;
        if req.flags & SESSION_FLAG_BINDING != 0 && !self.pending.get(&sid).is_some_and(|p| p.binding) {
            self.begin_binding(ctx)?;
        }
        let dialect = self.dialect_or_202();
        let id = if sid == 0 {
            let max = self.server.cfg.limits.max_sessions_per_connection;
            if !Limits::under(self.sessions.len() + self.pending.len(), max) {
                warn!(peer = %self.peer, "SESSION_SETUP refused: max sessions per connection ({max}) reached");
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
            let slot = self.setup_slot()?;
            // The worker id rides in the SessionId: a binding that lands on
            // another worker finds its way here (connpass.rs).
            let id = crate::connpass::session_id(self.server.worker_id, self.server.new_id());
            let session = Arc::new(Session::new(id, dialect));
            lock(&self.server.sessions).insert(id, session.clone());
            let acceptor = crate::auth::Acceptor::new(self.server.users.current(), self.acceptor_config());
            self.pending.insert(id, PendingAuth { acceptor, binding: false, preauth: self.preauth.clone(), session, started: Instant::now(), _slot: slot });
            id
        } else {
            if !self.pending.contains_key(&sid) {
                // Re-authentication of an established session: the request is
                // checked like any other on the session (MS-SMB2 3.3.5.2.4).
                let Some(s) = self.server.session(sid).filter(|s| self.sessions.contains(&s.id)) else {
                    // Another connection's session (or none): deleted, as far
                    // as this connection is concerned.
                    ctx.session = self.session_signed_for(ctx);
                    return Err(NtStatus::USER_SESSION_DELETED);
                };
                if !s.is_valid() {
                    return Err(NtStatus::USER_SESSION_DELETED);
                }
                verify_reauth_signature(&s, self.conn_id, ctx).map_err(|st| self.refusal_signed(ctx, st))?;
                let slot = self.setup_slot()?;
                // An authenticated session may re-authenticate as anonymous
                // (as with Windows and Samba: smbtorture's reauth2/3) even
                // where new anonymous sessions are refused: it gives up
                // rights, its trees then serve it as `guest account`.
                let mut cfg = self.acceptor_config();
                cfg.allow_anonymous = true;
                let acceptor = crate::auth::Acceptor::new(self.server.users.current(), cfg);
                self.pending.insert(sid, PendingAuth { acceptor, binding: false, preauth: self.preauth.clone(), session: s, started: Instant::now(), _slot: slot });
            } else if let Some(p) = self.pending.get(&sid) {
                if p.binding {
                    // The next leg of a binding: signed with the session's key.
                    let s = p.session.clone();
                    if !ctx.hdr.is_signed() {
                        return Err(NtStatus::INVALID_PARAMETER);
                    }
                    verify_binding_signature(&s, self.conn_id, ctx)?;
                    self.bind_reply_signed = true;
                } else if p.session.is_valid() {
                    verify_reauth_signature(&p.session, self.conn_id, ctx)?;
                }
            }
            sid
        };
        let pending = self.pending.get_mut(&id).ok_or(NtStatus::USER_SESSION_DELETED)?;
        ctx.session = Some(pending.session.clone());
        if let Some(h) = pending.preauth.as_mut() {
            h.update(ctx.msg);
        }
        let binding = pending.binding;
        let step = pending.acceptor.step(req.token);
        if binding {
            return self.finish_binding_step(id, step, ctx, out);
        }
        match step {
            Ok(crate::auth::Step::Continue(token)) => {
                ctx.warning = Some(NtStatus::MORE_PROCESSING_REQUIRED);
                out.u16(9).u16(0).u16((HEADER_LEN + 8) as u16).u16(token.len() as u16).put(&token);
                Ok(())
            }
            Ok(crate::auth::Step::Done { output, identity, session_key }) => {
                let Some(p) = self.pending.remove(&id) else { return Err(NtStatus::USER_SESSION_DELETED) };
                let session = p.session;
                let anonymous = identity.kind == crate::auth::IdentityKind::Anonymous;
                let guest = identity.kind == crate::auth::IdentityKind::Guest;
                let mut flags = 0u16;
                if anonymous {
                    flags |= SESSION_FLAG_IS_NULL;
                } else if guest {
                    flags |= SESSION_FLAG_IS_GUEST;
                }
                let reauth = session.is_valid();
                let keys = if anonymous || guest || session_key.is_empty() || (reauth && session.keys().is_some()) {
                    // A re-authentication keeps the session's keys (MS-SMB2
                    // 3.3.5.5.3: they are derived once, at the first authentication).
                    None
                } else {
                    let preauth = p.preauth.as_ref().map(|h| h.value());
                    let dk = crypto::derive_session_keys(crypto::Dialect(dialect), &session_key, preauth.as_ref(), self.cipher)
                        .map_err(|e| internal("key derivation", e))?;
                    let signer = crypto::Signer::new(self.signing_alg, dk.signing.as_bytes()).map_err(|e| internal("signing key", e))?;
                    let (sealer, opener) = match (self.cipher, &dk.server_out, &dk.server_in) {
                        (Some(c), Some(out_key), Some(in_key)) if dialect >= DIALECT_300 => (
                            Some(crypto::Sealer::new(c, out_key.as_bytes()).map_err(|e| internal("encryption key", e))?),
                            Some(crypto::Opener::new(c, in_key.as_bytes()).map_err(|e| internal("decryption key", e))?),
                        ),
                        _ => (None, None),
                    };
                    Some(Arc::new(SessionKeys { signer: Some(signer), sealer, opener, application_key: dk.application.as_bytes().to_vec(), session_key }))
                };
                let client_requires = u16::from(req.security_mode) & SEC_SIGNING_REQUIRED != 0;
                // Someone else now: the trees serve the new user.
                if reauth {
                    let changed = lock(&session.identity).as_ref().is_none_or(|o| {
                        o.kind != identity.kind || !o.user.eq_ignore_ascii_case(&identity.user) || !o.domain.eq_ignore_ascii_case(&identity.domain)
                    });
                    if changed {
                        self.serve_trees_as(&session, &identity)?;
                    }
                }
                if reauth && session.keys().is_some() {
                    // Same keys, same signing and encryption as before.
                    if *lock(&session.encrypt_data) {
                        flags |= SESSION_FLAG_ENCRYPT_DATA;
                    }
                } else {
                    let encrypt = keys.as_ref().is_some_and(|k| k.sealer.is_some()) && self.server.cfg.encrypt == Setting::Required;
                    if self.server.cfg.encrypt == Setting::Required && !encrypt && !(anonymous || guest) {
                        // Encryption required but the client cannot encrypt.
                        if !reauth {
                            lock(&self.server.sessions).remove(&id);
                        }
                        return Err(NtStatus::ACCESS_DENIED);
                    }
                    if encrypt {
                        flags |= SESSION_FLAG_ENCRYPT_DATA;
                    }
                    if keys.is_some() {
                        *lock(&session.keys) = keys;
                    }
                    *lock(&session.signing_required) = !(anonymous || guest) && !encrypt && (self.signing_required_by_server() || client_requires);
                    *lock(&session.encrypt_data) = encrypt;
                }
                *lock(&session.identity) = Some(identity.clone());
                *lock(&session.state) = SessionState::Valid;
                if !reauth {
                    // The first channel signs with the session's own key.
                    lock(&session.channels).list.push(Channel { conn_id: self.conn_id, client_guid: self.client_guid, signer: None, rdma: self.sink.is_rdma(), sink: Arc::downgrade(&self.sink), unacked: self.unacked.clone() });
                    self.sessions.push(id);
                    self.on_authenticated();
                    if req.previous_session_id != 0 && req.previous_session_id != id {
                        self.end_previous_session(req.previous_session_id, &identity);
                    }
                }
                info!(peer = %self.peer, session = id, user = %identity.user, domain = %identity.domain, kind = ?identity.kind, reauth, "session established");
                out.u16(9).u16(flags).u16((HEADER_LEN + 8) as u16).u16(output.len() as u16).put(&output);
                Ok(())
            }
            Err(e) => {
                let st = NtStatus(e.nt_status());
                info!(peer = %self.peer, "authentication failed: {e}");
                // A failed authentication ends the session, a re-authenticated
                // one included, with its trees and opens (MS-SMB2 3.3.5.5.3).
                if let Some(p) = self.pending.remove(&id) {
                    lock(&self.server.sessions).remove(&id);
                    self.sessions.retain(|s| *s != id);
                    if p.session.is_valid() {
                        p.session.teardown(&self.server);
                    }
                    ctx.session = None;
                }
                Err(st)
            }
        }
    }

    /// A place for one more unfinished SESSION_SETUP exchange: at most `max
    /// session setups in progress per connection` here (INSUFFICIENT_RESOURCES
    /// past it) and `max session setups in progress` in all. Past the
    /// server-wide cap the answer is REQUEST_NOT_ACCEPTED, Windows's status
    /// (error 71) for a server that accepts no more sessions.
    fn setup_slot(&self) -> Result<SetupSlot, NtStatus> {
        let l = &self.server.cfg.limits;
        if !Limits::under(self.pending.len(), l.max_pending_setups_per_connection) {
            warn!(peer = %self.peer, "SESSION_SETUP refused: max session setups in progress per connection ({}) reached", l.max_pending_setups_per_connection);
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        SetupSlot::acquire(&self.server.pending_setups, l.max_pending_setups).ok_or_else(|| {
            warn!(peer = %self.peer, "SESSION_SETUP refused: max session setups in progress ({}) reached", l.max_pending_setups);
            NtStatus::REQUEST_NOT_ACCEPTED
        })
    }

    /// After a re-authentication as another user (MS-SMB2 3.3.5.5.3: the
    /// session's security context is the new one; Samba checks every later
    /// request against it), each tree of the session serves the new user:
    /// its Unix identity (`guest account` for a guest or anonymous one), its
    /// read-only state and maximal access are the new user's. Open handles
    /// keep the access they were granted. A tree whose share would not take
    /// the new user (`valid users`, or no Unix account to serve it as)
    /// refuses the re-authentication (ACCESS_DENIED); the session then
    /// stays as it was.
    fn serve_trees_as(&self, session: &Session, identity: &crate::auth::Identity) -> Result<(), NtStatus> {
        use crate::auth::IdentityKind;
        let mut trees = lock(&session.trees);
        let mut new = Vec::with_capacity(trees.len());
        for (id, t) in trees.iter() {
            let share = &t.share;
            if share.is_ipc() {
                continue;
            }
            let allowed = match identity.kind {
                IdentityKind::User => share.cfg.user_allowed(&identity.user),
                _ => share.cfg.guest_ok || share.cfg.valid_users.is_empty(),
            };
            if !allowed {
                info!(session = session.id, share = %share.cfg.name, user = %identity.user, "re-authentication refused: the share does not take the new user");
                return Err(NtStatus::ACCESS_DENIED);
            }
            let uid = self.server.users.current().lookup(&identity.user).and_then(|e| e.uid());
            let creds = crate::auth::unix::resolve(identity.kind, &identity.user, uid, &share.cfg.unix, &self.server.cfg.accounts).map_err(|e| {
                warn!(session = session.id, share = %share.cfg.name, user = %identity.user, "re-authentication refused: {e}");
                NtStatus::ACCESS_DENIED
            })?;
            let read_only = share.cfg.unix.read_only_for(share.cfg.read_only, &identity.user, creds.as_ref());
            let maximal_access = if read_only { crate::handlers::READ_ONLY_ACCESS } else { crate::handlers::FILE_ALL_ACCESS };
            // One tree for another: the share's connection count stays
            // (the old one gives its count back when dropped).
            share.connections.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            let token = Arc::new(crate::handlers::tree::session_token(identity.kind, creds.as_ref()));
            new.push((*id, Arc::new(crate::objects::Tree { id: t.id, share: share.clone(), read_only, encrypt: t.encrypt, maximal_access, creds: creds.map(Arc::new), token })));
        }
        for (id, t) in new {
            trees.insert(id, t);
        }
        Ok(())
    }

    /// `st`, answered signed with Session.SigningKey when the request carried
    /// a good signature under it: a request on a bound channel signed with
    /// the session's key rather than the channel's is refused, but the
    /// client, which signed it so, believes only a signed refusal (it drops
    /// the connection otherwise, where Samba's answer lets it go on).
    fn refusal_signed(&mut self, ctx: &mut Ctx<'_>, st: NtStatus) -> NtStatus {
        if let Some(s) = self.session_signed_for(ctx) {
            ctx.session = Some(s);
            self.bind_reply_signed = true;
        }
        st
    }

    /// The valid session a SESSION_SETUP names, if the request is signed with
    /// that session's key: an error answer to it can then be signed, which
    /// clients that require signing insist on.
    fn session_signed_for(&self, ctx: &Ctx<'_>) -> Option<Arc<Session>> {
        if !ctx.hdr.is_signed() || ctx.encrypted {
            return None;
        }
        let s = self.server.session(ctx.hdr.session_id).filter(|s| s.is_valid())?;
        let keys = s.keys();
        let signer = keys.as_ref().and_then(|k| k.signer.as_ref())?;
        let mut copy = ctx.msg.to_vec();
        signer.verify(&mut copy).then_some(s)
    }

    /// A client that reconnects names its previous session (MS-SMB2 3.3.5.5.3):
    /// if the same user owns it, it ends, with its trees and opens, so the
    /// files it held are free again, except its durable opens, which wait
    /// disconnected for the client's DHnC/DH2C (handlers/durable.rs).
    /// Someone else's session is left alone.
    fn end_previous_session(&mut self, previous: u64, identity: &crate::auth::Identity) {
        if identity.kind != crate::auth::IdentityKind::User {
            return;
        }
        let Some(old) = self.server.session(previous) else { return };
        let same_user = lock(&old.identity).as_ref().is_some_and(|o| {
            o.kind == identity.kind && o.user.eq_ignore_ascii_case(&identity.user) && o.domain.eq_ignore_ascii_case(&identity.domain)
        });
        if !same_user || !old.is_valid() {
            return;
        }
        lock(&self.server.sessions).remove(&previous);
        self.sessions.retain(|id| *id != previous);
        old.disconnect(&self.server);
        info!(peer = %self.peer, previous, "previous session of a reconnecting client ended");
    }

    /// SESSION_SETUP responses that are not the final success go into the
    /// session's preauth hash (MS-SMB2 3.3.5.5.3). `resp` is one response as
    /// sent (header included, signed if it is); others are ignored.
    pub fn session_setup_response_hash(&mut self, resp: &[u8]) {
        let u32_at = |at: usize| resp.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let is_setup = resp.get(12..14) == Some(&(Command::SessionSetup as u16).to_le_bytes()[..]);
        if !is_setup || u32_at(8) != Some(NtStatus::MORE_PROCESSING_REQUIRED.0) {
            return;
        }
        let Some(sid) = resp.get(40..48).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes) else { return };
        if let Some(h) = self.pending.get_mut(&sid).and_then(|p| p.preauth.as_mut()) {
            h.update(resp);
        }
    }

    /// The checks of a SESSION_SETUP with SMB2_SESSION_FLAG_BINDING before
    /// its authentication begins (MS-SMB2 3.3.5.5, 3.3.5.2.4): on success the
    /// binding is pending on this connection under the session's id, with a
    /// preauth hash that starts from this connection's NEGOTIATE.
    fn begin_binding(&mut self, ctx: &mut Ctx<'_>) -> Result<(), NtStatus> {
        let sid = ctx.hdr.session_id;
        // AES-GMAC on either side must be on both, checked as soon as the
        // session is found, before the dialect and 2.x checks (what Windows
        // and Samba answer and smbtorture's bind_negative_smb3signGtoC /
        // CtoG / GtoC30 / C30toG / GtoH2X / H2XtoG expect): a GMAC session
        // over another algorithm is REQUEST_OUT_OF_SEQUENCE, another
        // session over a GMAC connection NOT_SUPPORTED. Any other pair is
        // fine: the new channel signs with this connection's algorithm.
        if let Some(s) = self.server.session(sid).filter(|_| sid != 0) {
            if let Some(sess_alg) = s.keys().and_then(|k| k.signer.as_ref().map(|x| x.algorithm())) {
                let refusal = if sess_alg == self.signing_alg {
                    None
                } else if sess_alg == SigningAlgorithm::AesGmac {
                    Some(NtStatus::REQUEST_OUT_OF_SEQUENCE)
                } else if self.signing_alg == SigningAlgorithm::AesGmac {
                    Some(NtStatus::NOT_SUPPORTED)
                } else {
                    None
                };
                if let Some(st) = refusal {
                    // Signed with the session's key when the request was.
                    ctx.session = self.session_signed_for(ctx);
                    self.bind_reply_signed = ctx.session.is_some();
                    return Err(st);
                }
            }
        }
        // A 2.x connection, or a server without multichannel: refused as
        // Samba does. A refusal signed with the named session's key is signed
        // too, so a client that requires signing believes it.
        if !self.is_smb3() || !self.server.cfg.multi_channel {
            ctx.session = self.session_signed_for(ctx);
            return Err(NtStatus::REQUEST_NOT_ACCEPTED);
        }
        if sid == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let Some(s) = self.server.session(sid) else {
            return Err(NtStatus::USER_SESSION_DELETED);
        };
        // A binding is checked against the session's own key (3.3.5.2.4),
        // under this connection's signing algorithm; a bad signature is
        // ACCESS_DENIED before anything else.
        if ctx.hdr.is_signed() && !ctx.encrypted {
            verify_binding_signature(&s, self.conn_id, ctx).map_err(|st| self.refusal_signed(ctx, st))?;
            self.bind_reply_signed = true;
            ctx.session = Some(s.clone());
        }
        // Only over the dialect the session was set up with (a 2.x session
        // from a 3.x connection too), and for an encrypting session only
        // with its cipher: INVALID_PARAMETER, what smbtorture's
        // bind_negative_smb2to3 / smb3to3 / smb3encGtoC expect.
        if Some(s.dialect) != self.dialect {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if let Some(sealer_cipher) = s.keys().and_then(|k| k.sealer.as_ref().map(|x| x.cipher())) {
            if self.cipher != Some(sealer_cipher) {
                return Err(NtStatus::INVALID_PARAMETER);
            }
        }
        if !ctx.hdr.is_signed() {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        // Another client's session is none of this client's business.
        let (same_client, bound_here) = {
            let ch = lock(&s.channels);
            (ch.list.first().is_some_and(|c| c.client_guid == self.client_guid), ch.list.iter().any(|c| c.conn_id == self.conn_id))
        };
        if !same_client {
            ctx.session = None;
            return Err(NtStatus::USER_SESSION_DELETED);
        }
        match *lock(&s.state) {
            SessionState::InProgress => return Err(NtStatus::REQUEST_NOT_ACCEPTED),
            SessionState::Expired => return Err(NtStatus::NETWORK_SESSION_EXPIRED),
            SessionState::Valid => {}
        }
        let kind = lock(&s.identity).as_ref().map(|i| i.kind);
        if kind != Some(crate::auth::IdentityKind::User) || s.keys().is_none_or(|k| k.signer.is_none()) {
            return Err(NtStatus::NOT_SUPPORTED);
        }
        if bound_here || self.sessions.contains(&sid) {
            return Err(NtStatus::REQUEST_NOT_ACCEPTED);
        }
        if lock(&s.channels).list.len() >= MAX_CHANNELS_PER_SESSION {
            warn!(peer = %self.peer, session = sid, "binding refused: the session has {MAX_CHANNELS_PER_SESSION} channels");
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let max = self.server.cfg.limits.max_sessions_per_connection;
        if !Limits::under(self.sessions.len() + self.pending.len(), max) {
            warn!(peer = %self.peer, "binding refused: max sessions per connection ({max}) reached");
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let slot = self.setup_slot()?;
        let acceptor = crate::auth::Acceptor::new(self.server.users.current(), self.acceptor_config());
        self.pending.insert(sid, PendingAuth { acceptor, binding: true, preauth: self.preauth.clone(), session: s, started: Instant::now(), _slot: slot });
        Ok(())
    }

    /// The connection's state to pass to another worker when `msg` is a
    /// binding SESSION_SETUP for a session another worker allocated, or a
    /// new session's first SESSION_SETUP whose PreviousSessionId another
    /// worker allocated (connpass.rs). `msg` is the whole plaintext message
    /// as received: a compound whose first request is that SESSION_SETUP
    /// goes as a whole, and the owner answers the entire chain. Only a
    /// connection with no session and no session setup under way, that kept
    /// its NEGOTIATE and whose reader can be stopped, and only within
    /// `workerproto::MAX_PASS`: anything else is answered here
    /// (USER_SESSION_DELETED: the session is not in this worker's table,
    /// MS-SMB2 3.3.5.5.2), with a log line saying why it was not passed.
    pub(crate) fn pass_for(&self, msg: &[u8]) -> Option<crate::connpass::ConnPass> {
        if !crate::connpass::enabled() {
            return None;
        }
        let hdr = Header::parse(msg).ok()?;
        if hdr.command != Command::SessionSetup as u16 || hdr.is_related() {
            return None;
        }
        // The SESSION_SETUP is the chain's first request, up to its
        // NextCommand (a bad one is process_chain's to refuse, here).
        let first = match hdr.next_command as usize {
            0 => msg,
            n if n >= HEADER_LEN && n % 8 == 0 => msg.get(..n)?,
            _ => return None,
        };
        let req = SessionSetupReq::parse(first).ok()?;
        // A binding goes to the worker of the session it binds to; a new
        // session naming a PreviousSessionId of another worker (a client
        // reconnecting after a lost connection) to the worker of that
        // session, which ends it and keeps its durable opens (durable.rs).
        let target = if req.flags & SESSION_FLAG_BINDING != 0 { hdr.session_id } else if hdr.session_id == 0 { req.previous_session_id } else { 0 };
        if target == 0 || self.server.session(target).is_some() {
            return None;
        }
        let owner = crate::connpass::foreign_owner(self.server.worker_id, target)?;
        // Any dialect: the owner's refusal of a 2.x binding (or one with
        // multichannel off) is signed with the session's key, which only
        // the owner has.
        let why = if !self.sessions.is_empty() {
            // Its sessions live here; a connection serves one worker.
            "the connection already has a session in this worker"
        } else if !self.pending.is_empty() {
            "a session setup is under way on the connection"
        } else {
            match self.negotiated.as_ref() {
                None => "the connection was passed here already, or its NEGOTIATE was not kept",
                Some(_) if self.dialect.is_none_or(|d| d == DIALECT_WILDCARD_INTERNAL) => "no dialect negotiated",
                Some(_) if !self.recv.can_halt() => "its reader cannot be stopped",
                Some((negotiate_req, negotiate_resp)) => {
                    // The whole message, the rest of a compound with it:
                    // the owner replays it through its compound path.
                    let p = crate::connpass::ConnPass {
                        session_id: target,
                        negotiate_req: negotiate_req.clone(),
                        negotiate_resp: negotiate_resp.clone(),
                        credits: self.credits.snapshot(),
                        pending: crate::connpass::framed(msg),
                    };
                    if crate::workerproto::pass_fits(&p) {
                        return Some(p);
                    }
                    "its state is over the pass bound"
                }
            }
        };
        info!(peer = %self.peer, session = target, owner, "SESSION_SETUP naming another worker's session answered here, not passed: {why}");
        None
    }

    /// Rebuilds the state of a connection passed here from another worker:
    /// its NEGOTIATE is handled again for its effects (dialect, algorithms,
    /// ClientGUID) but the response that counts, in the preauth hash, is the
    /// one the client got; the credit window is the client's.
    pub fn resume(&mut self, p: &crate::connpass::ConnPass) -> Result<(), String> {
        let hdr = Header::parse(&p.negotiate_req).map_err(|e| format!("NEGOTIATE header: {e}"))?;
        if hdr.command != Command::Negotiate as u16 || hdr.next_command != 0 {
            return Err("not a NEGOTIATE".into());
        }
        let sent = Header::parse(&p.negotiate_resp).map_err(|e| format!("NEGOTIATE response header: {e}"))?;
        let sent_dialect = p.negotiate_resp.get(HEADER_LEN + 4..HEADER_LEN + 6).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let mut ctx = Ctx {
            hdr: &hdr,
            msg: &p.negotiate_req,
            session: None,
            tree: None,
            compound_file: None,
            encrypted: false,
            async_id: None,
            warning: None,
            used_file: Default::default(),
        };
        let mut scratch = vec![0u8; HEADER_LEN];
        self.negotiate(&mut ctx, &mut scratch).map_err(|st| format!("NEGOTIATE refused here: {st}"))?;
        if sent.status != 0 || sent_dialect != self.dialect {
            return Err(format!("the NEGOTIATE answered there ({sent_dialect:?}) is not the one here ({:?})", self.dialect));
        }
        if let Some(h) = self.preauth.as_mut() {
            h.update(&p.negotiate_resp);
        }
        self.credits = crate::credits::CreditWindow::restore(self.server.cfg.max_credits, &p.credits).ok_or("bad credit window")?;
        Ok(())
    }

    /// One authentication leg of a binding. On success this connection
    /// becomes a channel of the session, with its own signing key for 3.x:
    /// derived from this authentication's session key and, for 3.1.1, this
    /// connection's preauth hash (MS-SMB2 3.3.5.5.3). A failure ends the
    /// binding, never the session.
    fn finish_binding_step(
        &mut self,
        id: u64,
        step: Result<crate::auth::Step, crate::auth::AuthError>,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), NtStatus> {
        let Some(session) = self.pending.get(&id).map(|p| p.session.clone()) else { return Err(NtStatus::USER_SESSION_DELETED) };
        ctx.session = Some(session.clone());
        match step {
            Ok(crate::auth::Step::Continue(token)) => {
                ctx.warning = Some(NtStatus::MORE_PROCESSING_REQUIRED);
                out.u16(9).u16(0).u16((HEADER_LEN + 8) as u16).u16(token.len() as u16).put(&token);
                Ok(())
            }
            Ok(crate::auth::Step::Done { output, identity, session_key }) => {
                let Some(p) = self.pending.remove(&id) else { return Err(NtStatus::USER_SESSION_DELETED) };
                // The same user as the session's (another user, a guest or
                // anonymous logon: ACCESS_DENIED, what smbtorture's
                // bind_different_user / bind_invalid_auth expect), with a key.
                let same_user = lock(&session.identity).as_ref().is_some_and(|o| {
                    identity.kind == crate::auth::IdentityKind::User
                        && o.kind == identity.kind
                        && o.user.eq_ignore_ascii_case(&identity.user)
                        && o.domain.eq_ignore_ascii_case(&identity.domain)
                });
                if !same_user {
                    info!(peer = %self.peer, session = id, user = %identity.user, "binding refused: not the session's user");
                    return Err(NtStatus::ACCESS_DENIED);
                }
                if session_key.is_empty() {
                    return Err(NtStatus::NOT_SUPPORTED);
                }
                if !session.is_valid() {
                    return Err(NtStatus::USER_SESSION_DELETED);
                }
                // The channel signs with this connection's algorithm.
                let alg = self.signing_alg;
                if session.keys().is_none_or(|k| k.signer.is_none()) {
                    return Err(NtStatus::NOT_SUPPORTED);
                }
                let preauth = p.preauth.as_ref().map(|h| h.value());
                let dk = crypto::derive_session_keys(crypto::Dialect(session.dialect), &session_key, preauth.as_ref(), None)
                    .map_err(|e| internal("channel key derivation", e))?;
                let signer = crypto::Signer::new(alg, dk.signing.as_bytes()).map_err(|e| internal("channel signing key", e))?;
                lock(&session.channels).list.push(Channel { conn_id: self.conn_id, client_guid: self.client_guid, signer: Some(Arc::new(signer)), rdma: self.sink.is_rdma(), sink: Arc::downgrade(&self.sink), unacked: self.unacked.clone() });
                self.sessions.push(id);
                self.on_authenticated();
                let n = lock(&session.channels).list.len();
                info!(peer = %self.peer, session = id, user = %identity.user, channels = n, rdma = self.sink.is_rdma(), "channel bound to session");
                out.u16(9).u16(0).u16((HEADER_LEN + 8) as u16).u16(output.len() as u16).put(&output);
                Ok(())
            }
            Err(e) => {
                self.pending.remove(&id);
                info!(peer = %self.peer, session = id, "binding authentication failed: {e}");
                Err(NtStatus(e.nt_status()))
            }
        }
    }

    pub fn logoff(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
        crate::wire::messages::parse_small(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
        let s = ctx.session()?.clone();
        self.sessions.retain(|id| *id != s.id);
        lock(&self.server.sessions).remove(&s.id);
        // Durable opens outlive a LOGOFF too, disconnected, for a DHnC on a
        // new session (as Samba and Windows: smbtorture durable-open.reopen4).
        s.disconnect(&self.server);
        out.u16(4).u16(0);
        Ok(())
    }
}

/// A SESSION_SETUP that re-authenticates a valid session must carry a good
/// signature when it is signed, and must be signed when the session requires
/// signing (unless it came encrypted). On a bound channel with its own key
/// (MS-SMB2 3.3.5.2.4: Channel.SigningKey) the signature is checked with
/// that key, not the session's (as Samba answers smbtorture's
/// bind_negative_smb3signCtoH / HtoC: ACCESS_DENIED).
fn verify_reauth_signature(s: &Session, conn_id: u64, ctx: &Ctx<'_>) -> Result<(), NtStatus> {
    if ctx.encrypted {
        return Ok(());
    }
    if ctx.hdr.is_signed() {
        if let Some(key) = s.signer_on(conn_id) {
            if let Some(signer) = key.signer() {
                let mut copy = ctx.msg.to_vec();
                if !signer.verify(&mut copy) {
                    tracing::warn!(session = s.id, "bad signature on a re-authentication");
                    return Err(NtStatus::ACCESS_DENIED);
                }
            }
        }
    } else if *lock(&s.signing_required) {
        return Err(NtStatus::ACCESS_DENIED);
    }
    Ok(())
}

/// A binding request is signed with the key of the session it names
/// (Session.SigningKey, MS-SMB2 3.3.5.2.4) under the session's signing
/// algorithm, whatever the connection's (as smbtorture's client signs it);
/// a bad signature is ACCESS_DENIED. On a connection already bound to the
/// session with its own key that key is the one (3.3.5.2.4 looks up the
/// channel first), so a second binding there is ACCESS_DENIED, as Samba
/// answers it.
fn verify_binding_signature(s: &Session, conn_id: u64, ctx: &Ctx<'_>) -> Result<(), NtStatus> {
    let key = s.signer_on(conn_id).ok_or(NtStatus::NOT_SUPPORTED)?;
    let signer = key.signer().ok_or(NtStatus::NOT_SUPPORTED)?;
    let mut copy = ctx.msg.to_vec();
    if !signer.verify(&mut copy) {
        tracing::warn!(session = s.id, "bad signature on a session binding");
        return Err(NtStatus::ACCESS_DENIED);
    }
    Ok(())
}

fn internal(what: &str, e: crypto::CryptoError) -> NtStatus {
    tracing::error!("{what}: {e}");
    NtStatus::UNSUCCESSFUL
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session_with_key(key: &[u8; 16], signing_required: bool) -> Session {
        let s = Session::new(42, crate::config::DIALECT_311);
        let signer = crypto::Signer::new(SigningAlgorithm::AesCmac, key).expect("signer");
        *lock(&s.keys) = Some(Arc::new(SessionKeys { signer: Some(signer), sealer: None, opener: None, application_key: Vec::new(), session_key: Vec::new() }));
        *lock(&s.signing_required) = signing_required;
        *lock(&s.state) = SessionState::Valid;
        s
    }

    /// A SESSION_SETUP request for session 42, signed with `key` when given.
    fn request(key: Option<&[u8; 16]>) -> (Header, Vec<u8>) {
        let hdr = Header { command: Command::SessionSetup as u16, session_id: 42, flags: if key.is_some() { FLAG_SIGNED } else { 0 }, ..Default::default() };
        let mut msg = Vec::new();
        hdr.write(&mut msg);
        msg.u16(25).u8(0).u8(1).u32(0).u32(0).u16(0).u16(0).u64(0);
        if let Some(k) = key {
            crypto::Signer::new(SigningAlgorithm::AesCmac, k).expect("signer").sign(&mut msg).expect("sign");
        }
        let hdr = Header::parse(&msg).expect("header");
        (hdr, msg)
    }

    fn ctx<'a>(hdr: &'a Header, msg: &'a [u8], encrypted: bool) -> Ctx<'a> {
        Ctx { hdr, msg, session: None, tree: None, compound_file: None, encrypted, async_id: None, warning: None, used_file: std::cell::Cell::new(None) }
    }

    #[test]
    fn reauth_signature_checked() {
        let key = [3u8; 16];
        let s = session_with_key(&key, true);
        let (h, m) = request(Some(&key));
        assert_eq!(verify_reauth_signature(&s, 7, &ctx(&h, &m, false)), Ok(()));
        let (h, m) = request(Some(&[4u8; 16]));
        assert_eq!(verify_reauth_signature(&s, 7, &ctx(&h, &m, false)), Err(NtStatus::ACCESS_DENIED));
        let (h, m) = request(None);
        assert_eq!(verify_reauth_signature(&s, 7, &ctx(&h, &m, false)), Err(NtStatus::ACCESS_DENIED));
        // Encrypted requests are authenticated by the TRANSFORM header.
        assert_eq!(verify_reauth_signature(&s, 7, &ctx(&h, &m, true)), Ok(()));
        // Without required signing an unsigned re-authentication is fine.
        let s = session_with_key(&key, false);
        assert_eq!(verify_reauth_signature(&s, 7, &ctx(&h, &m, false)), Ok(()));
    }
}
