//! An in-process simulated client/server pair, in the style of quinn-proto's test
//! harness: the server's `Connection` is driven directly with whole SMB2 messages and
//! its responses are collected from a fake `MessageSink`. The SMB2 client here is
//! written from MS-SMB2 on its own (its encoders are not the server's), authenticates
//! with the independent `sspi` SPNEGO/NTLM client, and derives its keys with the
//! crate's crypto primitives, whose KDF and ciphers have their own known-answer tests.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use smbdirect_server::config::{ServerConfig, Setting, ShareConfig};
use smbdirect_server::conn::{Connection, Disconnect};
use smbdirect_server::crypto::{
    derive_session_keys, Cipher, Dialect, Opener, PreauthHash, Sealer, Signer, SigningAlgorithm,
    TRANSFORM_HEADER_LEN,
};
use smbdirect_server::objects::Server;
use smbdirect_server::transport::{MessageSink, OutBuf};

use sspi::negotiate::NegotiateConfig;
use sspi::ntlm::NtlmConfig;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials, DataRepresentation,
    Negotiate, SecurityBuffer, SecurityStatus, Sspi, SspiImpl, Username,
};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "Sim-pass-1";

// Commands (MS-SMB2 2.2.1.2).
pub const NEGOTIATE: u16 = 0;
pub const SESSION_SETUP: u16 = 1;
pub const LOGOFF: u16 = 2;
pub const TREE_CONNECT: u16 = 3;
pub const TREE_DISCONNECT: u16 = 4;
pub const CREATE: u16 = 5;
pub const CLOSE: u16 = 6;
pub const READ: u16 = 8;
pub const WRITE: u16 = 9;
pub const LOCK: u16 = 10;
pub const CANCEL: u16 = 12;
pub const ECHO: u16 = 13;
pub const CHANGE_NOTIFY: u16 = 15;

// Header flags.
pub const F_RESPONSE: u32 = 1;
pub const F_ASYNC: u32 = 2;
pub const F_RELATED: u32 = 4;
pub const F_SIGNED: u32 = 8;

// Status codes (MS-ERREF 2.3.1).
pub const SUCCESS: u32 = 0;
pub const PENDING: u32 = 0x0000_0103;
pub const MORE_PROCESSING_REQUIRED: u32 = 0xC000_0016;
pub const INVALID_PARAMETER: u32 = 0xC000_000D;
pub const ACCESS_DENIED: u32 = 0xC000_0022;
pub const CANCELLED: u32 = 0xC000_0120;
pub const FILE_CLOSED: u32 = 0xC000_0128;
pub const USER_SESSION_DELETED: u32 = 0xC000_0203;
pub const LOCK_NOT_GRANTED: u32 = 0xC000_0055;

pub const DIALECT_311: u16 = 0x0311;
pub const DIALECT_302: u16 = 0x0302;
pub const DIALECT_300: u16 = 0x0300;
pub const DIALECT_210: u16 = 0x0210;
pub const DIALECT_202: u16 = 0x0202;

// Access masks, share access, dispositions, options.
pub const GENERIC_ALL: u32 = 0x1000_0000;
pub const FILE_READ_DATA: u32 = 0x1;
pub const FILE_LIST_DIRECTORY: u32 = 0x1;
pub const SHARE_ALL: u32 = 7;
pub const FILE_OPEN: u32 = 1;
pub const FILE_CREATE: u32 = 2;
pub const FILE_OPEN_IF: u32 = 3;
pub const FILE_OVERWRITE_IF: u32 = 5;
pub const FILE_DIRECTORY_FILE: u32 = 1;
pub const FILE_NON_DIRECTORY_FILE: u32 = 0x40;

pub const LOCK_SHARED: u32 = 1;
pub const LOCK_EXCLUSIVE: u32 = 2;
pub const LOCK_UNLOCK: u32 = 4;
pub const LOCK_FAIL_IMMEDIATELY: u32 = 0x10;

/// A FileId of the related-compound form.
pub const RELATED_FID: [u8; 16] = [0xFF; 16];

// ---------------------------------------------------------------------------------------
// Little-endian builders.

pub trait Le {
    fn u8_(&mut self, v: u8) -> &mut Self;
    fn u16_(&mut self, v: u16) -> &mut Self;
    fn u32_(&mut self, v: u32) -> &mut Self;
    fn u64_(&mut self, v: u64) -> &mut Self;
    fn bytes(&mut self, v: &[u8]) -> &mut Self;
    fn pad8(&mut self) -> &mut Self;
}

impl Le for Vec<u8> {
    fn u8_(&mut self, v: u8) -> &mut Self {
        self.push(v);
        self
    }
    fn u16_(&mut self, v: u16) -> &mut Self {
        self.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32_(&mut self, v: u32) -> &mut Self {
        self.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64_(&mut self, v: u64) -> &mut Self {
        self.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.extend_from_slice(v);
        self
    }
    fn pad8(&mut self) -> &mut Self {
        while !self.len().is_multiple_of(8) {
            self.push(0);
        }
        self
    }
}

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|c| c.to_le_bytes()).collect()
}

// ---------------------------------------------------------------------------------------
// The fake transport.

/// Collects what the server sends. Async responses come from other threads, so
/// `wait` blocks on a condition variable with a timeout.
#[derive(Default)]
pub struct Sink {
    queue: Mutex<VecDeque<Vec<u8>>>,
    cv: Condvar,
    pub shut: Mutex<bool>,
}

impl MessageSink for Sink {
    fn send(&self, msg: OutBuf) -> io::Result<()> {
        // The headroom in front is the transport's; the message is buf[start..].
        assert!(msg.start <= msg.buf.len(), "OutBuf start past its end");
        let payload = msg.buf[msg.start..].to_vec();
        self.queue.lock().unwrap().push_back(payload);
        self.cv.notify_all();
        Ok(())
    }
    fn shutdown(&self) {
        *self.shut.lock().unwrap() = true;
    }
    fn peer(&self) -> String {
        "sim-peer".into()
    }
}

impl Sink {
    pub fn take_all(&self) -> Vec<Vec<u8>> {
        self.queue.lock().unwrap().drain(..).collect()
    }
    /// Waits up to `timeout` for one message.
    pub fn wait(&self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut q = self.queue.lock().unwrap();
        loop {
            if let Some(m) = q.pop_front() {
                return Some(m);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            q = self.cv.wait_timeout(q, deadline - now).unwrap().0;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server setup.

pub struct TestServer {
    pub server: Arc<Server>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn share_path(&self) -> PathBuf {
        self.dir.path().join("share")
    }
}

pub fn server_with(f: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig {
        netbios_name: "SIMSRV".into(),
        shares: vec![ShareConfig::new("share", dir.path().join("share"))],
        users: vec![(USER.into(), PASSWORD.into())],
        ..ServerConfig::default()
    };
    f(&mut cfg);
    let server = Server::new(cfg).unwrap();
    TestServer { server, dir }
}

pub fn server() -> TestServer {
    server_with(|_| {})
}

pub fn required(cfg: &mut ServerConfig, signing: bool, encrypt: bool) {
    if signing {
        cfg.signing = Setting::Required;
    }
    if encrypt {
        cfg.encrypt = Setting::Required;
    }
}

// ---------------------------------------------------------------------------------------
// Responses.

#[derive(Debug, Clone)]
pub struct Resp {
    /// This response's bytes as chained: from its header to the next one's, padding
    /// included (what its signature covers).
    pub raw: Vec<u8>,
    pub credit_charge: u16,
    pub status: u32,
    pub command: u16,
    pub credits: u16,
    pub flags: u32,
    pub next_command: u32,
    pub message_id: u64,
    pub async_id: u64,
    pub tree_id: u32,
    pub session_id: u64,
    /// Whether the whole chain arrived in a TRANSFORM message.
    pub encrypted: bool,
}

impl Resp {
    pub fn body(&self) -> &[u8] {
        &self.raw[64..]
    }
    pub fn is_signed(&self) -> bool {
        self.flags & F_SIGNED != 0
    }
    /// The FileId of a CREATE response (MS-SMB2 2.2.14).
    pub fn file_id(&self) -> [u8; 16] {
        assert_eq!(self.status, SUCCESS, "CREATE failed: {:#x}", self.status);
        assert_eq!(le16(&self.raw, 64), 89);
        self.raw[64 + 64..64 + 80].try_into().unwrap()
    }
    /// The data of a READ response (MS-SMB2 2.2.20).
    pub fn read_data(&self) -> &[u8] {
        assert_eq!(le16(&self.raw, 64), 17);
        let off = self.raw[66] as usize;
        let len = le32(&self.raw, 68) as usize;
        &self.raw[off..off + len]
    }
}

/// Splits a plaintext response chain, checking each NextCommand.
pub fn split_chain(chain: &[u8], encrypted: bool) -> Vec<Resp> {
    let mut v = Vec::new();
    let mut off = 0;
    loop {
        let m = &chain[off..];
        assert!(m.len() >= 64 + 2, "short response at {off}: {} bytes", m.len());
        assert_eq!(&m[0..4], b"\xFESMB", "response protocol id");
        assert_eq!(le16(m, 4), 64, "response StructureSize");
        let next = le32(m, 20) as usize;
        if next != 0 {
            assert_eq!(next % 8, 0, "NextCommand {next} is not 8-aligned");
            assert!(next >= 64 + 2 && next <= m.len(), "NextCommand {next} out of range");
        }
        let raw = if next == 0 { m.to_vec() } else { m[..next].to_vec() };
        let flags = le32(m, 16);
        v.push(Resp {
            credit_charge: le16(m, 6),
            status: le32(m, 8),
            command: le16(m, 12),
            credits: le16(m, 14),
            flags,
            next_command: next as u32,
            message_id: le64(m, 24),
            async_id: le64(m, 32),
            tree_id: le32(m, 36),
            session_id: le64(m, 40),
            raw,
            encrypted,
        });
        if next == 0 {
            break;
        }
        off += next;
    }
    v
}

// ---------------------------------------------------------------------------------------
// The SPNEGO/NTLM client (sspi).

pub struct Gss {
    neg: Negotiate,
    creds: <Negotiate as SspiImpl>::CredentialsHandle,
}

impl Gss {
    pub fn new(user: &str, password: &str) -> Gss {
        let cfg = NegotiateConfig::new(
            Box::new(NtlmConfig::new("SIMCLIENT".into())),
            Some("!kerberos,ntlm".into()),
            "SIMCLIENT".into(),
        );
        let mut neg = Negotiate::new_client(cfg).unwrap();
        let identity = AuthIdentity {
            username: Username::new(user, Some("WORKGROUP")).unwrap(),
            password: password.to_string().into(),
        };
        let creds = neg
            .acquire_credentials_handle()
            .with_credential_use(CredentialUse::Outbound)
            .with_auth_data(&Credentials::AuthIdentity(identity))
            .execute(&mut neg)
            .unwrap()
            .credentials_handle;
        Gss { neg, creds }
    }

    pub fn step(&mut self, input: Option<&[u8]>) -> (SecurityStatus, Vec<u8>) {
        let req = ClientRequestFlags::CONFIDENTIALITY
            | ClientRequestFlags::INTEGRITY
            | ClientRequestFlags::ALLOCATE_MEMORY;
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut input_bufs = input.map(|i| vec![SecurityBuffer::new(i.to_vec(), BufferType::Token)]);
        let mut builder = self
            .neg
            .initialize_security_context()
            .with_credentials_handle(&mut self.creds)
            .with_context_requirements(req)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name("cifs/simsrv")
            .with_output(&mut output);
        if let Some(bufs) = input_bufs.as_mut() {
            builder = builder.with_input(bufs);
        }
        let result = self
            .neg
            .initialize_security_context_impl(&mut builder)
            .unwrap()
            .resolve_to_result()
            .unwrap();
        (result.status, std::mem::take(&mut output[0].buffer))
    }

    pub fn session_key(&self) -> Vec<u8> {
        self.neg.query_context_session_key().unwrap().session_key.as_ref().clone()
    }
}

// ---------------------------------------------------------------------------------------
// The SMB2 client.

pub struct ClientKeys {
    pub signer: Signer,
    /// Encrypts requests: the server's `server_in` key.
    pub sealer: Option<Sealer>,
    /// Decrypts responses: the server's `server_out` key.
    pub opener: Option<Opener>,
}

/// A transport other than the in-process `Connection` (e.g. a fake rdma-proxy
/// over a real socket): sends one wire message and returns the messages the
/// server sent back for it.
pub trait Wire: Send {
    fn exchange(&mut self, msg: Vec<u8>) -> Result<Vec<Vec<u8>>, Disconnect>;
}

pub struct Client {
    /// When set, messages go through it instead of `conn`.
    pub wire: Option<Box<dyn Wire>>,
    pub conn: Connection,
    pub sink: Arc<Sink>,
    pub next_mid: u64,
    /// Credits granted and not yet used, as the client counts them.
    pub held: i64,
    pub dialect: u16,
    pub cipher: Option<Cipher>,
    pub signing_alg: SigningAlgorithm,
    pub preauth: Option<PreauthHash>,
    pub session_id: u64,
    pub tree_id: u32,
    pub keys: Option<ClientKeys>,
    /// Sign requests (with `keys`).
    pub sign: bool,
    /// Encrypt requests (with `keys.sealer`).
    pub encrypt: bool,
    pub session_flags: u16,
    pub server_security_mode: u16,
    pub max_read: u32,
    pub credit_request: u16,
    /// Responses that arrived with another request's (async final responses).
    pub stash: Vec<Resp>,
    /// The GSS session key and the session's preauth hash of the last logon.
    pub session_key: Vec<u8>,
    pub session_preauth: Option<[u8; 64]>,
    /// PreviousSessionId of the next SESSION_SETUP (a reconnecting client's old session).
    pub previous_session: u64,
}

/// One session's state on the client, to switch between sessions of a connection.
#[derive(Default)]
pub struct SessionCtx {
    pub session_id: u64,
    pub tree_id: u32,
    pub keys: Option<ClientKeys>,
    pub sign: bool,
    pub encrypt: bool,
    pub session_flags: u16,
}

/// Options of a NEGOTIATE 3.1.1.
#[derive(Clone)]
pub struct NegOpts {
    pub dialects: Vec<u16>,
    pub ciphers: Vec<u16>,
    pub signing: Vec<u16>,
    pub security_mode: u16,
    /// The client's Capabilities (0x7F: all of 3.x, encryption included).
    pub capabilities: u32,
    /// The ENCRYPTION_CAPABILITIES context's data as sent, instead of one built from `ciphers`.
    pub raw_cipher_ctx: Option<Vec<u8>>,
}

impl Default for NegOpts {
    fn default() -> Self {
        NegOpts {
            dialects: vec![DIALECT_202, DIALECT_210, DIALECT_300, DIALECT_302, DIALECT_311],
            ciphers: vec![2, 1],
            signing: vec![1, 0],
            security_mode: 1,
            capabilities: 0x7F,
            raw_cipher_ctx: None,
        }
    }
}

impl Client {
    pub fn new(ts: &TestServer) -> Client {
        let sink = Arc::new(Sink::default());
        let conn = Connection::new(ts.server.clone(), sink.clone(), "sim-peer".into());
        Client {
            wire: None,
            conn,
            sink,
            next_mid: 0,
            held: 1,
            dialect: 0,
            cipher: None,
            signing_alg: SigningAlgorithm::HmacSha256,
            preauth: None,
            session_id: 0,
            tree_id: 0,
            keys: None,
            sign: false,
            encrypt: false,
            session_flags: 0,
            server_security_mode: 0,
            max_read: 0,
            credit_request: 64,
            stash: Vec::new(),
            session_key: Vec::new(),
            session_preauth: None,
            previous_session: 0,
        }
    }

    /// A plaintext request with the next message id(s) and the client's ids.
    pub fn build(&mut self, cmd: u16, charge: u16, body: &[u8]) -> Vec<u8> {
        let mid = self.next_mid;
        self.next_mid += u64::from(charge.max(1));
        self.held -= i64::from(charge.max(1));
        build_header(cmd, charge, self.credit_request, 0, mid, self.tree_id, self.session_id, body)
    }

    /// Signs a plaintext request in place.
    pub fn sign_msg(&self, msg: &mut [u8]) {
        self.keys.as_ref().expect("no keys to sign with").signer.sign(msg).unwrap();
    }

    /// Wraps a plaintext request chain in a TRANSFORM header.
    pub fn seal(&self, msg: &[u8]) -> Vec<u8> {
        let sealer = self.keys.as_ref().and_then(|k| k.sealer.as_ref()).expect("no encryption key");
        let mut buf = vec![0u8; TRANSFORM_HEADER_LEN];
        buf.extend_from_slice(msg);
        sealer.seal(self.session_id, &mut buf).unwrap();
        buf
    }

    /// Sends one wire message as is and returns the messages the server sent back
    /// synchronously (decrypted and split).
    pub fn raw(&mut self, msg: Vec<u8>) -> Result<Vec<Resp>, Disconnect> {
        let msgs = match self.wire.as_mut() {
            Some(w) => w.exchange(msg)?,
            None => {
                self.conn.handle_message(msg)?;
                self.sink.take_all()
            }
        };
        let mut out = Vec::new();
        for m in msgs {
            out.extend(self.decode(m));
        }
        for r in &out {
            self.held += i64::from(r.credits);
        }
        Ok(out)
    }

    /// Decrypts (when it is a TRANSFORM) and splits one message from the server.
    pub fn decode(&self, mut m: Vec<u8>) -> Vec<Resp> {
        if m.starts_with(b"\xFDSMB") {
            let opener = self.keys.as_ref().and_then(|k| k.opener.as_ref()).expect("TRANSFORM without a decryption key");
            let (sid, range) = opener.open(&mut m).expect("server TRANSFORM does not open with the client's key");
            assert_eq!(sid, self.session_id, "TRANSFORM session id");
            split_chain(&m[range], true)
        } else {
            split_chain(&m, false)
        }
    }

    /// Signs and/or encrypts as configured, sends, and returns the responses.
    pub fn send(&mut self, mut msg: Vec<u8>) -> Result<Vec<Resp>, Disconnect> {
        if self.encrypt {
            let sealed = self.seal(&msg);
            return self.raw(sealed);
        }
        if self.sign {
            sign_chain(self.keys.as_ref().unwrap(), &mut msg);
        }
        self.raw(msg)
    }

    /// One request, exactly one response expected. Final responses of async
    /// operations that arrive meanwhile go to `stash`.
    pub fn call(&mut self, cmd: u16, charge: u16, body: &[u8]) -> Resp {
        let msg = self.build(cmd, charge, body);
        let mid = le64(&msg, 24);
        let v = self.send(msg).unwrap_or_else(|e| panic!("command {cmd} ended the connection: {e:?}"));
        let (mut mine, other): (Vec<Resp>, Vec<Resp>) = v.into_iter().partition(|r| r.message_id == mid && !(r.flags & F_ASYNC != 0 && r.status != PENDING));
        self.stash.extend(other);
        assert_eq!(mine.len(), 1, "command {cmd}: {} responses", mine.len());
        let r = mine.pop().unwrap();
        assert_eq!(r.command, cmd);
        self.check_resp(&r);
        r
    }

    /// The next message sent from another thread (a final async response).
    pub fn next_async(&mut self, timeout: Duration) -> Option<Resp> {
        if !self.stash.is_empty() {
            return Some(self.stash.remove(0));
        }
        let m = self.sink.wait(timeout)?;
        let mut v = self.decode(m);
        assert_eq!(v.len(), 1, "async responses are never chained");
        v.pop()
    }

    /// Checks a response's signature when the session signs, and its encryption when
    /// the session encrypts.
    pub fn check_resp(&self, r: &Resp) {
        if self.encrypt && r.status != PENDING {
            assert!(r.encrypted, "response to an encrypted request came back in the clear");
        }
        if !r.encrypted && (self.sign || r.is_signed()) && r.status != PENDING {
            if let Some(k) = &self.keys {
                assert!(r.is_signed(), "response {} ({:#x}) is not signed", r.command, r.status);
                let mut raw = r.raw.clone();
                assert!(k.signer.verify(&mut raw), "response {} ({:#x}) signature does not verify", r.command, r.status);
            }
        }
    }

    // ----- NEGOTIATE / SESSION_SETUP -----

    pub fn negotiate_body(opts: &NegOpts) -> Vec<u8> {
        let mut b = Vec::new();
        let mut guid = [0u8; 16];
        guid[0] = 0x5A;
        guid[15] = 0xA5;
        let with_ctx = opts.dialects.contains(&DIALECT_311);
        b.u16_(36).u16_(opts.dialects.len() as u16).u16_(opts.security_mode).u16_(0).u32_(opts.capabilities).bytes(&guid);
        let ctx_off_at = b.len();
        b.u32_(0).u16_(0).u16_(0);
        for d in &opts.dialects {
            b.u16_(*d);
        }
        if with_ctx {
            // Offsets count from the header: the body starts at 64 (8-aligned).
            b.pad8();
            let off = 64 + b.len();
            b[ctx_off_at..ctx_off_at + 4].copy_from_slice(&(off as u32).to_le_bytes());
            let mut ctxs: Vec<(u16, Vec<u8>)> = Vec::new();
            let mut pre = Vec::new();
            pre.u16_(1).u16_(32).u16_(1).bytes(&[0x11; 32]);
            ctxs.push((1, pre));
            if let Some(raw) = &opts.raw_cipher_ctx {
                ctxs.push((2, raw.clone()));
            } else if !opts.ciphers.is_empty() {
                let mut c = Vec::new();
                c.u16_(opts.ciphers.len() as u16);
                for x in &opts.ciphers {
                    c.u16_(*x);
                }
                ctxs.push((2, c));
            }
            if !opts.signing.is_empty() {
                let mut c = Vec::new();
                c.u16_(opts.signing.len() as u16);
                for x in &opts.signing {
                    c.u16_(*x);
                }
                ctxs.push((8, c));
            }
            let n = ctxs.len() as u16;
            b[ctx_off_at + 4..ctx_off_at + 6].copy_from_slice(&n.to_le_bytes());
            for (i, (ty, data)) in ctxs.iter().enumerate() {
                if i > 0 {
                    b.pad8();
                }
                b.u16_(*ty).u16_(data.len() as u16).u32_(0).bytes(data);
            }
        }
        b
    }

    pub fn negotiate(&mut self) -> Resp {
        self.negotiate_with(&NegOpts::default())
    }

    pub fn negotiate_with(&mut self, opts: &NegOpts) -> Resp {
        let body = Self::negotiate_body(opts);
        let msg = self.build(NEGOTIATE, 0, &body);
        let mut v = self.raw(msg.clone()).expect("NEGOTIATE ended the connection");
        assert_eq!(v.len(), 1);
        let r = v.pop().unwrap();
        assert_eq!(r.status, SUCCESS, "NEGOTIATE status {:#x}", r.status);
        self.parse_negotiate(&r);
        if self.dialect == DIALECT_311 {
            let mut h = PreauthHash::new();
            h.update(&msg);
            h.update(&r.raw);
            self.preauth = Some(h);
        }
        r
    }

    /// Reads the dialect and the negotiated contexts of a NEGOTIATE response.
    pub fn parse_negotiate(&mut self, r: &Resp) {
        let b = &r.raw;
        assert_eq!(le16(b, 64), 65, "NEGOTIATE response StructureSize");
        self.server_security_mode = le16(b, 66);
        self.dialect = le16(b, 68);
        self.max_read = le32(b, 64 + 32);
        let ctx_count = le16(b, 70) as usize;
        self.signing_alg = match self.dialect {
            DIALECT_202 | DIALECT_210 => SigningAlgorithm::HmacSha256,
            _ => SigningAlgorithm::AesCmac,
        };
        if self.dialect == DIALECT_300 || self.dialect == DIALECT_302 {
            let caps = le32(b, 64 + 24);
            self.cipher = (caps & 0x40 != 0).then_some(Cipher::Aes128Ccm);
        }
        if self.dialect != DIALECT_311 {
            return;
        }
        let mut off = le32(b, 64 + 60) as usize;
        for i in 0..ctx_count {
            if i > 0 {
                off = off.div_ceil(8) * 8;
            }
            let ty = le16(b, off);
            let len = le16(b, off + 2) as usize;
            let data = &b[off + 8..off + 8 + len];
            match ty {
                2 => {
                    assert_eq!(le16(data, 0), 1, "one cipher chosen");
                    self.cipher = Cipher::from_wire(le16(data, 2)).ok();
                }
                8 => {
                    assert_eq!(le16(data, 0), 1, "one signing algorithm chosen");
                    self.signing_alg = SigningAlgorithm::from_wire(le16(data, 2)).unwrap();
                }
                _ => {}
            }
            off += 8 + len;
        }
    }

    pub fn session_setup_body(token: &[u8], security_mode: u8) -> Vec<u8> {
        let mut b = Vec::new();
        b.u16_(25).u8_(0).u8_(security_mode).u32_(0).u32_(0).u16_(64 + 24).u16_(token.len() as u16).u64_(0).bytes(token);
        b
    }

    /// SESSION_SETUP rounds until success; derives the keys and checks the final
    /// response's signature. Returns the final response.
    pub fn session_setup(&mut self) -> Resp {
        self.session_setup_as(USER, PASSWORD).expect("logon failed")
    }

    /// As [`session_setup`], but returns the failing status instead of panicking.
    /// On an existing session (`session_id != 0`) this is a re-authentication.
    pub fn session_setup_as(&mut self, user: &str, password: &str) -> Result<Resp, u32> {
        let mut gss = Gss::new(user, password);
        let mut input: Option<Vec<u8>> = None;
        // The connection's hash after NEGOTIATE seeds the session's.
        let mut preauth = self.preauth.clone();
        let security_mode = if self.sign { 2 } else { 1 };
        for _round in 0..4 {
            let (_, token) = gss.step(input.as_deref());
            let mut body = Self::session_setup_body(&token, security_mode);
            body[16..24].copy_from_slice(&self.previous_session.to_le_bytes());
            let msg = self.build(SESSION_SETUP, 1, &body);
            if let Some(h) = preauth.as_mut() {
                h.update(&msg);
            }
            // A re-authentication goes as the session requires (signed or encrypted).
            let reauth = self.keys.is_some();
            let mut v = if reauth { self.send(msg) } else { self.raw(msg) }.expect("SESSION_SETUP ended the connection");
            assert_eq!(v.len(), 1);
            let r = v.pop().unwrap();
            assert_eq!(r.command, SESSION_SETUP);
            match r.status {
                MORE_PROCESSING_REQUIRED => {
                    if let Some(h) = preauth.as_mut() {
                        h.update(&r.raw);
                    }
                    self.session_id = r.session_id;
                    input = Some(sec_buffer(&r));
                }
                SUCCESS => {
                    assert_eq!(r.session_id, self.session_id, "final SESSION_SETUP session id");
                    let out = sec_buffer(&r);
                    if !out.is_empty() {
                        // The server's mechListMIC: sspi verifies it.
                        let (st, _) = gss.step(Some(&out));
                        assert_eq!(st, SecurityStatus::Ok);
                    }
                    self.session_flags = le16(&r.raw, 66);
                    if !reauth {
                        let key = gss.session_key();
                        let h = preauth.as_ref().map(|h| h.value());
                        self.session_key = key.clone();
                        self.session_preauth = h;
                        self.keys = Some(derive_client_keys(self.dialect, &key, h.as_ref(), self.cipher, self.signing_alg));
                    }
                    // MS-SMB2 3.3.5.5.3: the final response is signed at every
                    // dialect unless the session is a guest or anonymous one.
                    if self.session_flags & 3 == 0 && !r.encrypted {
                        assert!(r.is_signed(), "final SESSION_SETUP response is not signed");
                        let mut raw = r.raw.clone();
                        assert!(self.keys.as_ref().unwrap().signer.verify(&mut raw), "final SESSION_SETUP signature does not verify");
                    }
                    if self.session_flags & 4 != 0 {
                        self.encrypt = true;
                    }
                    if self.server_security_mode & 2 != 0 && self.session_flags & 4 == 0 {
                        self.sign = true;
                    }
                    return Ok(r);
                }
                st => return Err(st),
            }
        }
        panic!("SESSION_SETUP did not finish in 4 rounds");
    }

    /// Puts `s` in place as the current session and returns the one that was.
    pub fn switch_session(&mut self, s: SessionCtx) -> SessionCtx {
        let old = SessionCtx {
            session_id: self.session_id,
            tree_id: self.tree_id,
            keys: self.keys.take(),
            sign: self.sign,
            encrypt: self.encrypt,
            session_flags: self.session_flags,
        };
        self.session_id = s.session_id;
        self.tree_id = s.tree_id;
        self.keys = s.keys;
        self.sign = s.sign;
        self.encrypt = s.encrypt;
        self.session_flags = s.session_flags;
        old
    }

    /// A second (third...) session on this connection; it becomes the current one
    /// and the previous one is returned.
    pub fn new_session(&mut self) -> SessionCtx {
        let old = self.switch_session(SessionCtx::default());
        self.session_setup();
        old
    }

    pub fn logon(&mut self) -> Resp {
        self.negotiate();
        self.session_setup()
    }

    // ----- tree and file commands -----

    /// TREE_CONNECT, signed on 3.1.1 for an authenticated user as every
    /// client signs it (MS-SMB2 3.2.4.1.1): the server disconnects otherwise.
    pub fn tree_connect(&mut self, share: &str) -> Resp {
        let must_sign = self.dialect == DIALECT_311 && self.keys.is_some() && self.session_flags & 7 == 0 && !self.encrypt;
        let sign = self.sign;
        self.sign = sign || must_sign;
        let r = self.call(TREE_CONNECT, 1, &tree_body(share));
        self.sign = sign;
        if r.status == SUCCESS {
            self.tree_id = r.tree_id;
        }
        r
    }

    pub fn create(&mut self, name: &str, access: u32, disposition: u32, options: u32) -> Resp {
        let b = create_body(name, access, SHARE_ALL, disposition, options);
        self.call(CREATE, 1, &b)
    }

    pub fn open_file(&mut self, name: &str) -> [u8; 16] {
        self.create(name, GENERIC_ALL, FILE_OPEN_IF, FILE_NON_DIRECTORY_FILE).file_id()
    }

    pub fn write(&mut self, fid: &[u8; 16], offset: u64, data: &[u8]) -> Resp {
        let charge = (data.len() as u64).div_ceil(65536).max(1) as u16;
        self.call(WRITE, charge, &write_body(fid, offset, data))
    }

    pub fn read(&mut self, fid: &[u8; 16], offset: u64, len: u32, charge: u16) -> Resp {
        self.call(READ, charge, &read_body(fid, offset, len))
    }

    pub fn close(&mut self, fid: &[u8; 16]) -> Resp {
        self.call(CLOSE, 1, &close_body(fid))
    }

    pub fn logoff(&mut self) -> Resp {
        self.call(LOGOFF, 1, &[4, 0, 0, 0])
    }
}

/// Signs every message of a plaintext chain (each over its bytes up to the next).
pub fn sign_chain(keys: &ClientKeys, chain: &mut [u8]) {
    let mut off = 0;
    loop {
        let next = le32(chain, off + 20) as usize;
        let end = if next == 0 { chain.len() } else { off + next };
        keys.signer.sign(&mut chain[off..end]).unwrap();
        if next == 0 {
            break;
        }
        off = end;
    }
}

pub fn derive_client_keys(dialect: u16, session_key: &[u8], preauth: Option<&[u8; 64]>, cipher: Option<Cipher>, alg: SigningAlgorithm) -> ClientKeys {
    let k = derive_session_keys(Dialect(dialect), session_key, preauth, cipher).unwrap();
    let signer = Signer::new(alg, k.signing.as_bytes()).unwrap();
    let (sealer, opener) = match (cipher, &k.server_in, &k.server_out) {
        (Some(c), Some(i), Some(o)) => (Some(Sealer::new(c, i.as_bytes()).unwrap()), Some(Opener::new(c, o.as_bytes()).unwrap())),
        _ => (None, None),
    };
    ClientKeys { signer, sealer, opener }
}

pub fn sec_buffer(r: &Resp) -> Vec<u8> {
    let off = le16(&r.raw, 64 + 4) as usize;
    let len = le16(&r.raw, 64 + 6) as usize;
    if len == 0 {
        return Vec::new();
    }
    r.raw[off..off + len].to_vec()
}

#[allow(clippy::too_many_arguments)]
pub fn build_header(cmd: u16, charge: u16, credits: u16, flags: u32, mid: u64, tree_id: u32, session_id: u64, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + body.len());
    m.bytes(b"\xFESMB").u16_(64).u16_(charge).u32_(0).u16_(cmd).u16_(credits).u32_(flags).u32_(0).u64_(mid).u32_(0).u32_(tree_id).u64_(session_id).bytes(&[0; 16]);
    m.bytes(body);
    m
}

pub fn tree_body(share: &str) -> Vec<u8> {
    let path = utf16(&format!("\\\\SIMSRV\\{share}"));
    let mut b = Vec::new();
    b.u16_(9).u16_(0).u16_(64 + 8).u16_(path.len() as u16).bytes(&path);
    b
}

pub fn create_body(name: &str, access: u32, share: u32, disposition: u32, options: u32) -> Vec<u8> {
    let n = utf16(name);
    let mut full = vec![57, 0];
    full.u8_(0).u8_(0).u32_(2).u64_(0).u64_(0).u32_(access).u32_(0x80).u32_(share).u32_(disposition).u32_(options);
    full.u16_(64 + 56).u16_(n.len() as u16).u32_(0).u32_(0);
    if n.is_empty() {
        full.u8_(0);
    } else {
        full.bytes(&n);
    }
    full
}

pub fn write_body(fid: &[u8; 16], offset: u64, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(49).u16_(64 + 48).u32_(data.len() as u32).u64_(offset).bytes(fid).u32_(0).u32_(0).u16_(0).u16_(0).u32_(0).bytes(data);
    b
}

pub fn read_body(fid: &[u8; 16], offset: u64, len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(49).u8_(0x50).u8_(0).u32_(len).u64_(offset).bytes(fid).u32_(0).u32_(0).u32_(0).u16_(0).u16_(0).u8_(0);
    b
}

pub fn close_body(fid: &[u8; 16]) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(24).u16_(0).u32_(0).bytes(fid);
    b
}

pub fn lock_body(fid: &[u8; 16], offset: u64, length: u64, flags: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(48).u16_(1).u32_(0).bytes(fid).u64_(offset).u64_(length).u32_(flags).u32_(0);
    b
}

pub fn notify_body(fid: &[u8; 16], filter: u32, output_len: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.u16_(32).u16_(0).u32_(output_len).bytes(fid).u32_(filter).u32_(0);
    b
}

/// Joins plaintext requests into a compound chain: each NextCommand set, each
/// message but the last padded to 8 bytes.
pub fn chain(msgs: Vec<Vec<u8>>) -> Vec<u8> {
    let n = msgs.len();
    let mut out = Vec::new();
    for (i, mut m) in msgs.into_iter().enumerate() {
        if i + 1 < n {
            m.pad8();
            let len = m.len() as u32;
            m[20..24].copy_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&m);
    }
    out
}

pub fn set_flags(msg: &mut [u8], flags: u32) {
    let f = le32(msg, 16) | flags;
    msg[16..20].copy_from_slice(&f.to_le_bytes());
}

/// A logged-on client with the share connected.
/// Two worker processes' worth of servers (worker ids 1 and 2) on one LMDB
/// state directory, which wake each other through their wake-up sockets.
/// The first server returned owns that directory: keep it alive.
pub fn two_workers() -> (TestServer, TestServer, TestServer) {
    let base = server();
    let state = base.dir.path().join("state");
    let store = smbdirect_server::store::create(&state).unwrap();
    let cfg = base.server.cfg.clone();
    let w1 = smbdirect_server::objects::Server::with_store(cfg.clone(), store.clone(), 1, Some(state.clone())).unwrap();
    let w2 = smbdirect_server::objects::Server::with_store(cfg, store, 2, Some(state)).unwrap();
    (base, TestServer { server: w1, dir: tempfile::tempdir().unwrap() }, TestServer { server: w2, dir: tempfile::tempdir().unwrap() })
}

pub fn connected(ts: &TestServer) -> Client {
    let mut c = Client::new(ts);
    c.logon();
    let t = c.tree_connect("share");
    assert_eq!(t.status, SUCCESS, "TREE_CONNECT {:#x}", t.status);
    c
}
