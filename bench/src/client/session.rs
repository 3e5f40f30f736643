//! Session establishment (NEGOTIATE, SESSION_SETUP), channel binding, trees and opens.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smbdirect_server::crypto::{
    derive_session_keys, Cipher, Dialect, Opener, PreauthHash, Sealer, Signer, SigningAlgorithm,
};

use super::channel::{BufferDescriptorV1, Channel, RdmaAccess, TcpChannel};
use super::conn::{CompletionQueue, Conn, Pending, Request, Response, Security};
use super::error::ClientError;
use super::msg::{self, cmd, CreateReq, FileId, NegotiateResp, StandardInfo, STATUS_MORE_PROCESSING_REQUIRED, STATUS_SUCCESS};
use super::ntlm;

/// Whether and how strongly the client protects messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protection {
    /// Sign only if the server requires it.
    #[default]
    Auto,
    Sign,
    Encrypt,
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub user: String,
    pub password: String,
    pub domain: String,
    /// Dialects offered, e.g. `[0x0300, 0x0302, 0x0311]`.
    pub dialects: Vec<u16>,
    pub protection: Protection,
    /// Cipher preference for 3.1.1.
    pub ciphers: Vec<Cipher>,
    /// Signing algorithm preference for 3.1.1.
    pub signing: Vec<SigningAlgorithm>,
    /// Bound on every wait.
    pub timeout: Duration,
    pub client_guid: [u8; 16],
}

impl ClientOptions {
    pub fn new(user: &str, password: &str) -> Result<Self, ClientError> {
        let (domain, user) = match user.split_once(['\\', '/']) {
            Some((d, u)) => (d.to_string(), u.to_string()),
            None => (String::new(), user.to_string()),
        };
        let mut client_guid = [0u8; 16];
        getrandom::fill(&mut client_guid).map_err(|_| ClientError::Auth("no random source".into()))?;
        Ok(ClientOptions {
            user,
            password: password.to_string(),
            domain,
            dialects: vec![0x0300, 0x0302, 0x0311],
            protection: Protection::Auto,
            ciphers: vec![Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::Aes128Ccm, Cipher::Aes256Ccm],
            signing: vec![SigningAlgorithm::AesGmac, SigningAlgorithm::AesCmac],
            timeout: Duration::from_secs(30),
            client_guid,
        })
    }
}

/// What NEGOTIATE settled on a connection.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub dialect: u16,
    pub server_guid: [u8; 16],
    pub capabilities: u32,
    pub signing_required: bool,
    pub max_read: u32,
    pub max_write: u32,
    pub max_transact: u32,
    pub cipher: Option<Cipher>,
    pub signing: SigningAlgorithm,
}

struct SessionState {
    id: u64,
    negotiated: Negotiated,
    session_key: [u8; 16],
    sealer: Option<Arc<Sealer>>,
    opener: Option<Arc<Opener>>,
    /// The session's (first channel's) signing key: binding requests are signed with it.
    signer: Arc<Signer>,
    sign: bool,
    encrypt_all: bool,
    guest: bool,
}

/// An authenticated session with one or more channels.
pub struct Session {
    opts: ClientOptions,
    state: SessionState,
    conns: Mutex<Vec<Arc<Conn>>>,
}

fn wait(p: Pending) -> Result<Response, ClientError> {
    p.wait()
}

/// NEGOTIATE on a fresh connection; returns the result and the preauth hash so far.
fn negotiate(conn: &Conn, opts: &ClientOptions) -> Result<(Negotiated, PreauthHash), ClientError> {
    let mut salt = [0u8; 32];
    getrandom::fill(&mut salt).map_err(|_| ClientError::Auth("no random source".into()))?;
    let security_mode = if opts.protection == Protection::Auto { msg::SECURITY_SIGNING_ENABLED } else { msg::SECURITY_SIGNING_REQUIRED };
    let offer = msg::NegotiateOffer {
        dialects: opts.dialects.clone(),
        security_mode,
        capabilities: msg::CAP_LARGE_MTU | msg::CAP_MULTI_CHANNEL | msg::CAP_ENCRYPTION,
        client_guid: opts.client_guid,
        salt,
        ciphers: opts.ciphers.iter().map(|c| c.wire_id()).collect(),
        signing: opts.signing.iter().map(|s| s.wire_id()).collect(),
    };
    let mut req = Request::new(cmd::NEGOTIATE, msg::negotiate_req(&offer));
    req.plain = true;
    req.keep_sent = true;
    req.credits_wanted = 1;
    let p = conn.submit(req)?;
    let sent = p.sent.clone().unwrap_or_default();
    let resp = wait(p)?.expect(&[STATUS_SUCCESS])?;
    let n: NegotiateResp = msg::parse_negotiate(&resp.msg)?;
    if !opts.dialects.contains(&n.dialect) {
        return Err(ClientError::proto(format!("server chose dialect {:#06x}, which we did not offer", n.dialect)));
    }
    let mut preauth = PreauthHash::new();
    if n.dialect == 0x0311 {
        preauth.update(&sent);
        preauth.update(&resp.msg);
    }
    let cipher = match (n.dialect, n.cipher) {
        (0x0311, Some(0)) | (0x0311, None) => None,
        (0x0311, Some(id)) => Some(Cipher::from_wire(id)?),
        (_, _) if n.capabilities & msg::CAP_ENCRYPTION != 0 => Some(Cipher::Aes128Ccm),
        _ => None,
    };
    let signing = SigningAlgorithm::for_dialect(Dialect(n.dialect), n.signing.map(SigningAlgorithm::from_wire).transpose()?)?;
    Ok((
        Negotiated {
            dialect: n.dialect,
            server_guid: n.server_guid,
            capabilities: n.capabilities,
            signing_required: n.security_mode & msg::SECURITY_SIGNING_REQUIRED != 0,
            max_read: n.max_read,
            max_write: n.max_write,
            max_transact: n.max_transact,
            cipher,
            signing,
        },
        preauth,
    ))
}

/// The NTLM exchange over SESSION_SETUP. `binding` = (session id, session signer).
/// Returns (session id, session flags, session key, preauth hash, final response).
fn authenticate(
    conn: &Conn,
    opts: &ClientOptions,
    neg: &Negotiated,
    mut preauth: PreauthHash,
    binding: Option<(u64, Arc<Signer>)>,
) -> Result<(u64, u16, ntlm::Authenticated, PreauthHash, Response), ClientError> {
    let is311 = neg.dialect == 0x0311;
    let mode = if opts.protection == Protection::Auto { 1u8 } else { 2u8 };
    let flags = if binding.is_some() { msg::SESSION_FLAG_BINDING } else { 0 };
    let leg = |body: Vec<u8>, sid: u64| {
        let mut r = Request::new(cmd::SESSION_SETUP, body);
        r.keep_sent = true;
        r.session_id = Some(sid);
        r.credits_wanted = 256;
        match &binding {
            Some((_, s)) => r.sign_with = Some(s.clone()),
            None => r.plain = true,
        }
        r
    };
    let neg_msg = ntlm::negotiate_message();
    let sid0 = binding.as_ref().map_or(0, |b| b.0);
    let p = conn.submit(leg(msg::session_setup_req(flags, mode, &ntlm::neg_token_init(&neg_msg)), sid0))?;
    if is311 {
        preauth.update(p.sent.as_deref().unwrap_or_default());
    }
    let r1 = wait(p)?;
    if r1.status() != STATUS_MORE_PROCESSING_REQUIRED {
        return Err(r1.expect(&[STATUS_MORE_PROCESSING_REQUIRED]).err().unwrap_or_else(|| ClientError::proto("SESSION_SETUP")));
    }
    if is311 {
        preauth.update(&r1.msg);
    }
    let sid = r1.hdr.session_id;
    if sid == 0 || binding.as_ref().is_some_and(|b| b.0 != sid) {
        return Err(ClientError::proto("SESSION_SETUP answer with a wrong session id"));
    }
    let challenge = ntlm::challenge_from_spnego(&msg::parse_session_setup(&r1.msg)?.token)?;
    let auth = ntlm::authenticate(&neg_msg, &challenge, &opts.user, &opts.domain, &opts.password, &ntlm::AuthRandom::generate()?)?;
    let p = conn.submit(leg(msg::session_setup_req(flags, mode, &ntlm::neg_token_auth(&auth)), sid))?;
    if is311 {
        preauth.update(p.sent.as_deref().unwrap_or_default());
    }
    let r2 = wait(p)?.expect(&[STATUS_SUCCESS])?;
    let ss = msg::parse_session_setup(&r2.msg)?;
    ntlm::check_final(&ss.token, &auth)?;
    Ok((sid, ss.session_flags, auth, preauth, r2))
}

impl Session {
    /// Connects over TCP to `addr` and logs on.
    pub fn connect_tcp(addr: SocketAddr, opts: &ClientOptions) -> Result<Session, ClientError> {
        let chan: Arc<dyn Channel> = Arc::new(TcpChannel::connect(addr, opts.timeout)?);
        Session::connect(chan, opts)
    }

    /// NEGOTIATE and SESSION_SETUP on `chan`.
    pub fn connect(chan: Arc<dyn Channel>, opts: &ClientOptions) -> Result<Session, ClientError> {
        let conn = Conn::new(chan, opts.timeout);
        let (neg, preauth) = negotiate(&conn, opts)?;
        let (sid, flags, auth, preauth, mut last) = authenticate(&conn, opts, &neg, preauth, None)?;
        let guest = flags & (msg::SESSION_FLAG_IS_GUEST | msg::SESSION_FLAG_IS_NULL) != 0;
        let d = Dialect(neg.dialect);
        let h = preauth.value();
        let keys = derive_session_keys(d, &auth.session_key, (neg.dialect == 0x0311).then_some(&h), neg.cipher)?;
        let signer = Arc::new(Signer::new(neg.signing, keys.signing.as_bytes())?);
        // The last SESSION_SETUP answer is signed for 3.1.1 (and when signing is on).
        if !guest && last.hdr.flags & smbdirect_server::wire::header::FLAG_SIGNED != 0 && !signer.verify(&mut last.msg) {
            return Err(ClientError::BadSignature("SESSION_SETUP"));
        }
        if !guest && neg.dialect == 0x0311 && last.hdr.flags & smbdirect_server::wire::header::FLAG_SIGNED == 0 {
            return Err(ClientError::proto("3.1.1 SESSION_SETUP success not signed"));
        }
        let (sealer, opener) = match (neg.cipher, keys.server_in.as_ref(), keys.server_out.as_ref()) {
            (Some(c), Some(i), Some(o)) => (Some(Arc::new(Sealer::new(c, i.as_bytes())?)), Some(Arc::new(Opener::new(c, o.as_bytes())?))),
            _ => (None, None),
        };
        let encrypt_all = flags & msg::SESSION_FLAG_ENCRYPT_DATA != 0 || opts.protection == Protection::Encrypt;
        if encrypt_all && sealer.is_none() {
            return Err(ClientError::Unsupported("encryption asked for but the server negotiated no cipher".into()));
        }
        let sign = !guest && (neg.signing_required || opts.protection != Protection::Auto);
        let st = SessionState { id: sid, negotiated: neg, session_key: auth.session_key, sealer, opener, signer: signer.clone(), sign, encrypt_all, guest };
        conn.set_security(Security { session_id: sid, signer: Some(signer), sign, sealer: st.sealer.clone(), opener: st.opener.clone(), encrypt_all });
        Ok(Session { opts: opts.clone(), state: st, conns: Mutex::new(vec![conn]) })
    }

    pub fn id(&self) -> u64 {
        self.state.id
    }
    pub fn negotiated(&self) -> &Negotiated {
        &self.state.negotiated
    }
    pub fn is_guest(&self) -> bool {
        self.state.guest
    }
    pub fn encrypts(&self) -> bool {
        self.state.encrypt_all
    }
    pub fn signs(&self) -> bool {
        self.state.sign
    }
    pub fn session_key(&self) -> &[u8; 16] {
        &self.state.session_key
    }
    pub fn channels(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    pub fn conn(&self, i: usize) -> Result<Arc<Conn>, ClientError> {
        let c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        c.get(i).cloned().ok_or_else(|| ClientError::Invalid(format!("no channel {i}")))
    }

    /// Binds a new channel to this session (MS-SMB2 3.2.4.2.3 / 3.2.5.3.1): NEGOTIATE with the
    /// same ClientGuid and dialect, then SESSION_SETUP with SMB2_SESSION_FLAG_BINDING signed
    /// with the session's key; the channel's own signing key comes from that authentication
    /// (and, for 3.1.1, the binding exchange's preauth hash). Returns the channel index.
    pub fn bind(&self, chan: Arc<dyn Channel>) -> Result<usize, ClientError> {
        let st = &self.state;
        if st.negotiated.dialect < 0x0300 {
            return Err(ClientError::Unsupported("multichannel needs SMB 3.x".into()));
        }
        if st.guest {
            return Err(ClientError::Unsupported("a guest session cannot bind channels".into()));
        }
        let mut opts = self.opts.clone();
        opts.dialects = vec![st.negotiated.dialect];
        let conn = Conn::new(chan, opts.timeout);
        let (neg, preauth) = negotiate(&conn, &opts)?;
        if neg.dialect != st.negotiated.dialect || neg.server_guid != st.negotiated.server_guid {
            return Err(ClientError::proto("the new channel negotiated another dialect or server"));
        }
        if neg.capabilities & msg::CAP_MULTI_CHANNEL == 0 {
            return Err(ClientError::Unsupported("server does not offer multichannel".into()));
        }
        let (_sid, _flags, auth, preauth, mut last) = authenticate(&conn, &opts, &neg, preauth, Some((st.id, st.signer.clone())))?;
        let h = preauth.value();
        let keys = derive_session_keys(Dialect(neg.dialect), &auth.session_key, (neg.dialect == 0x0311).then_some(&h), None)?;
        let signer = Arc::new(Signer::new(st.negotiated.signing, keys.signing.as_bytes())?);
        if !signer.verify(&mut last.msg) {
            return Err(ClientError::BadSignature("SESSION_SETUP (binding)"));
        }
        conn.set_security(Security {
            session_id: st.id,
            signer: Some(signer),
            // A bound channel always signs (MS-SMB2 3.2.5.3.1: signing is required for binding).
            sign: true,
            sealer: st.sealer.clone(),
            opener: st.opener.clone(),
            encrypt_all: st.encrypt_all,
        });
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        c.push(conn);
        Ok(c.len() - 1)
    }

    /// TREE_CONNECT to `\\host\share`.
    pub fn tree_connect(self: &Arc<Self>, unc: &str) -> Result<Tree, ClientError> {
        let conn = self.conn(0)?;
        let mut req = Request::new(cmd::TREE_CONNECT, msg::tree_connect_req(unc));
        // MS-SMB2 3.2.4.2.4 / 3.3.5.7: 3.1.1 TREE_CONNECT is signed even when signing is off.
        req.force_sign = self.state.negotiated.dialect == 0x0311 && !self.state.guest;
        let r = conn.submit(req)?.wait()?.expect(&[STATUS_SUCCESS])?;
        let t = msg::parse_tree_connect(&r.msg)?;
        let tree_id = r.hdr.tree_id();
        let encrypt = t.share_flags & msg::SHARE_FLAG_ENCRYPT_DATA != 0;
        if encrypt && self.state.sealer.is_none() {
            return Err(ClientError::Unsupported("the share requires encryption, no cipher negotiated".into()));
        }
        Ok(Tree { session: self.clone(), tree_id, encrypt, share_type: t.share_type })
    }

    /// Logs off (best effort) and closes every channel.
    pub fn close(&self) {
        if let Ok(c) = self.conn(0) {
            if let Ok(p) = c.submit(Request::new(cmd::LOGOFF, vec![4, 0, 0, 0])) {
                let _ = p.wait();
            }
        }
        for c in self.conns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            c.close();
        }
    }
}

/// A connected share.
pub struct Tree {
    pub session: Arc<Session>,
    pub tree_id: u32,
    pub encrypt: bool,
    pub share_type: u8,
}

/// How READ/WRITE data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataChannel {
    /// In the SMB2 message.
    Inline,
    /// RDMA with buffer descriptors (SMB2_CHANNEL_RDMA_V1).
    Rdma,
    /// RDMA, and the server invalidates the key (SMB2_CHANNEL_RDMA_V1_INVALIDATE).
    RdmaInvalidate,
}

impl Tree {
    fn request(&self, command: u16, body: Vec<u8>) -> Request {
        let mut r = Request::new(command, body);
        r.tree_id = self.tree_id;
        r.encrypt = self.encrypt;
        r
    }

    fn call(&self, chan: usize, r: Request) -> Result<Response, ClientError> {
        self.session.conn(chan)?.submit(r)?.wait()
    }

    /// CREATE.
    pub fn create(&self, name: &str, c: &CreateReq) -> Result<File, ClientError> {
        let r = self.call(0, self.request(cmd::CREATE, msg::create_req(name, c)))?.expect(&[STATUS_SUCCESS])?;
        let cr = msg::parse_create(&r.msg)?;
        Ok(File { id: cr.file_id, end_of_file: cr.end_of_file, create_action: cr.create_action })
    }

    /// Opens or creates `name` for reading and writing.
    pub fn open_rw(&self, name: &str, disposition: u32) -> Result<File, ClientError> {
        self.create(name, &CreateReq {
            desired_access: msg::FILE_READ_DATA | msg::FILE_WRITE_DATA | msg::FILE_READ_ATTRIBUTES | msg::SYNCHRONIZE | msg::DELETE,
            file_attributes: msg::FILE_ATTRIBUTE_NORMAL,
            share_access: msg::FILE_SHARE_ALL,
            disposition,
            options: msg::FILE_NON_DIRECTORY_FILE,
        })
    }

    pub fn close(&self, f: &File) -> Result<(), ClientError> {
        self.call(0, self.request(cmd::CLOSE, msg::close_req(&f.id)))?.expect(&[STATUS_SUCCESS])?;
        Ok(())
    }

    /// A READ request for `len` bytes at `offset` (Channel NONE), to submit on any channel.
    pub fn read_request(&self, f: &File, offset: u64, len: u32) -> Request {
        let mut r = self.request(cmd::READ, msg::read_req(&f.id, offset, len, msg::CHANNEL_NONE, &[]));
        r.payload = len as usize;
        r.credits_wanted = 256;
        r
    }

    /// A WRITE request carrying `data` inline.
    pub fn write_request(&self, f: &File, offset: u64, data: &[u8]) -> Request {
        let mut body = Vec::with_capacity(msg::WRITE_FIXED + data.len());
        msg::write_req_head(&f.id, offset, data.len() as u32, msg::CHANNEL_NONE, 0, &mut body);
        body.extend_from_slice(data);
        let mut r = self.request(cmd::WRITE, body);
        r.payload = data.len();
        r.credits_wanted = 256;
        r
    }

    /// A READ whose data the server RDMA-writes into the registered buffer `descriptors`.
    pub fn read_request_rdma(&self, f: &File, offset: u64, len: u32, descriptors: &[BufferDescriptorV1], dc: DataChannel) -> Request {
        let info: Vec<u8> = descriptors.iter().flat_map(|d| d.to_bytes()).collect();
        let mut r = self.request(cmd::READ, msg::read_req(&f.id, offset, len, rdma_channel(dc), &info));
        r.payload = len as usize;
        r.credits_wanted = 256;
        r
    }

    /// A WRITE whose data the server RDMA-reads from the registered buffer `descriptors`.
    pub fn write_request_rdma(&self, f: &File, offset: u64, len: u32, descriptors: &[BufferDescriptorV1], dc: DataChannel) -> Request {
        let info: Vec<u8> = descriptors.iter().flat_map(|d| d.to_bytes()).collect();
        let mut body = Vec::with_capacity(msg::WRITE_FIXED + info.len());
        msg::write_req_head(&f.id, offset, len, rdma_channel(dc), info.len(), &mut body);
        body.extend_from_slice(&info);
        let mut r = self.request(cmd::WRITE, body);
        r.payload = len as usize;
        r.credits_wanted = 256;
        r
    }

    /// Reads on channel `chan`, the data inline or through an RDMA registration.
    pub fn read(&self, chan: usize, f: &File, offset: u64, len: u32, dc: DataChannel) -> Result<Vec<u8>, ClientError> {
        let conn = self.session.conn(chan)?;
        if dc == DataChannel::Inline {
            let r = conn.submit(self.read_request(f, offset, len))?.wait()?.expect(&[STATUS_SUCCESS])?;
            let rr = msg::parse_read(&r.msg)?;
            return Ok(r.msg.get(rr.data).unwrap_or_default().to_vec());
        }
        let ch = conn.channel().clone();
        let reg = ch.register(vec![0u8; len as usize], RdmaAccess::PeerWrites)?;
        let res = conn.submit(self.read_request_rdma(f, offset, len, &reg.descriptors, dc)).and_then(Pending::wait);
        let buf = ch.deregister(reg.handle)?;
        let r = res?.expect(&[STATUS_SUCCESS])?;
        let n = rdma_read_len(&r)?.min(buf.len());
        Ok(buf[..n].to_vec())
    }

    /// Writes `data` on channel `chan`; returns the count the server wrote.
    pub fn write(&self, chan: usize, f: &File, offset: u64, data: &[u8], dc: DataChannel) -> Result<u32, ClientError> {
        let conn = self.session.conn(chan)?;
        if dc == DataChannel::Inline {
            let r = conn.submit(self.write_request(f, offset, data))?.wait()?.expect(&[STATUS_SUCCESS])?;
            return msg::parse_write(&r.msg);
        }
        let ch = conn.channel().clone();
        let reg = ch.register(data.to_vec(), RdmaAccess::PeerReads)?;
        let res = conn.submit(self.write_request_rdma(f, offset, data.len() as u32, &reg.descriptors, dc)).and_then(Pending::wait);
        ch.deregister(reg.handle)?;
        msg::parse_write(&res?.expect(&[STATUS_SUCCESS])?.msg)
    }

    /// Submits a request on channel `chan` with its completion going to `q`.
    pub fn submit_to(&self, chan: usize, r: Request, q: &CompletionQueue, tag: u64) -> Result<u64, ClientError> {
        self.session.conn(chan)?.submit_to(r, q, tag)
    }

    /// FileStandardInformation of an open.
    pub fn query_standard(&self, chan: usize, f: &File) -> Result<StandardInfo, ClientError> {
        let r = self.call(chan, self.request(cmd::QUERY_INFO, msg::query_info_req(&f.id, msg::INFO_FILE, msg::FILE_STANDARD_INFORMATION, 24)))?
            .expect(&[STATUS_SUCCESS])?;
        msg::parse_standard_info(msg::parse_query_info(&r.msg)?)
    }

    /// FSCTL_QUERY_NETWORK_INTERFACE_INFO.
    pub fn query_interfaces(&self) -> Result<Vec<msg::NetInterface>, ClientError> {
        let mut r = self.request(cmd::IOCTL, msg::ioctl_req(msg::FSCTL_QUERY_NETWORK_INTERFACE_INFO, &[0xFF; 16], &[], 65536));
        r.payload = 65536;
        let r = self.call(0, r)?.expect(&[STATUS_SUCCESS])?;
        msg::parse_interfaces(msg::parse_ioctl(&r.msg)?)
    }

    pub fn disconnect(&self) -> Result<(), ClientError> {
        self.call(0, self.request(cmd::TREE_DISCONNECT, vec![4, 0, 0, 0]))?.expect(&[STATUS_SUCCESS])?;
        Ok(())
    }
}

fn rdma_channel(dc: DataChannel) -> u32 {
    match dc {
        DataChannel::Inline => msg::CHANNEL_NONE,
        DataChannel::Rdma => msg::CHANNEL_RDMA_V1,
        DataChannel::RdmaInvalidate => msg::CHANNEL_RDMA_V1_INVALIDATE,
    }
}

/// Bytes a READ moved: the inline data, or for RDMA (DataLength 0) DataRemaining.
pub fn rdma_read_len(r: &Response) -> Result<usize, ClientError> {
    let rr = msg::parse_read(&r.msg)?;
    Ok(if rr.data.is_empty() { rr.remaining as usize } else { rr.data.len() })
}

/// An open file.
#[derive(Debug, Clone)]
pub struct File {
    pub id: FileId,
    pub end_of_file: u64,
    pub create_action: u32,
}
