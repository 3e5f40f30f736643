//! Entry points shared by the cargo-fuzz targets (`server/fuzz`) and the corpus replay
//! test (`tests/fuzz_corpus.rs`), so both exercise exactly the same code. Each must return
//! normally for every input: a panic (or a failed check) is a bug.
//!
//! The decoder targets feed the input to one family of SMB2 decoders. `pipeline` drives a
//! whole [`Connection`] in process: NEGOTIATE, SESSION_SETUP as a fixed test user (NTLMv2,
//! whose keys the driver derives too, so it can sign and seal), TREE_CONNECT, then request
//! chains taken from the input; see [`pipeline`] for the input format and what it checks.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::auth::{ntlm, spnego, Acceptor, AcceptorConfig};
use crate::config::{ServerConfig, ShareConfig};
use crate::conn::Connection;
use crate::crypto::{self, Cipher, Dialect, Opener, PreauthHash, Sealer, Signer, SigningAlgorithm, TRANSFORM_HEADER_LEN};
use crate::objects::{lock, Server};
use crate::transport::{MessageSink, OutBuf};
use crate::wire::header::{Header, HEADER_LEN};
use crate::wire::messages as m;
use crate::wire::u32_at;

/// Names of the targets, as used for `fuzz/fuzz_targets/<name>.rs` and corpus folders.
pub const TARGETS: [&str; 11] = [
    "header",
    "transform",
    "requests",
    "negotiate",
    "create_contexts",
    "ntlmssp",
    "spnego",
    "security_descriptor",
    "ea_list",
    "srvsvc",
    "pipeline",
];

/// Runs target `name` on `data`. Returns false for an unknown name.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "header" => header(data),
        "transform" => transform(data),
        "requests" => requests(data),
        "negotiate" => negotiate(data),
        "create_contexts" => create_contexts(data),
        "ntlmssp" => ntlmssp(data),
        "spnego" => spnego(data),
        "security_descriptor" => security_descriptor(data),
        "ea_list" => ea_list(data),
        "srvsvc" => srvsvc(data),
        "pipeline" => pipeline(data),
        _ => return false,
    }
    true
}

/// The SMB2 header: parse, and a parsed header writes back to the same 64 bytes.
pub fn header(data: &[u8]) {
    if let Ok(h) = Header::parse(data) {
        let mut b = Vec::new();
        h.write(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(&b[..], &data[..HEADER_LEN]);
        assert_eq!(Header::parse(&b), Ok(h));
    }
}

/// The TRANSFORM header, and opening a TRANSFORM message with a fixed key of each cipher
/// (which must fail cleanly: the fuzzer cannot forge a tag).
pub fn transform(data: &[u8]) {
    let _ = crypto::parse_transform_header(data);
    for c in [Cipher::Aes128Ccm, Cipher::Aes128Gcm, Cipher::Aes256Ccm, Cipher::Aes256Gcm] {
        let key = [0x42u8; 32];
        let n = if matches!(c, Cipher::Aes128Ccm | Cipher::Aes128Gcm) { 16 } else { 32 };
        let Ok(o) = Opener::new(c, &key[..n]) else { continue };
        let mut buf = data.to_vec();
        if let Ok((_, range)) = o.open(&mut buf) {
            assert!(range.end <= buf.len());
        }
    }
}

/// Every command's request decoder (MS-SMB2 2.2.x), each on the whole message (header
/// included: offsets count from it), and the create contexts of a CREATE.
///
/// Not checked (yet): that no buffer a decoder returns overlaps the header or the fixed
/// part of its request (issue 7's offset class); a helper fixing those decoders can add
/// the assertion here once they refuse such offsets.
pub fn requests(data: &[u8]) {
    if let Ok(r) = m::NegotiateReq::parse(data) {
        assert!(!r.dialects.is_empty());
        let _ = r.contexts();
    }
    let _ = m::SessionSetupReq::parse(data);
    let _ = m::TreeConnectReq::parse(data);
    if let Ok(r) = m::CreateReq::parse(data) {
        let _ = m::parse_create_contexts(r.contexts);
    }
    let _ = m::CloseReq::parse(data);
    let _ = m::parse_flush(data);
    let _ = m::ReadReq::parse(data);
    let _ = m::WriteReq::parse(data);
    let _ = m::QueryDirReq::parse(data);
    let _ = m::QueryInfoReq::parse(data);
    let _ = m::SetInfoReq::parse(data);
    let _ = m::IoctlReq::parse(data);
    if let Ok(r) = m::LockReq::parse(data) {
        assert!((1..=64).contains(&r.locks.len()));
    }
    let _ = m::ChangeNotifyReq::parse(data);
    let _ = m::parse_small(data);
}

fn test_server() -> &'static Arc<Server> {
    static S: OnceLock<Arc<Server>> = OnceLock::new();
    S.get_or_init(|| {
        if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
            for e in rd.flatten() {
                let name = e.file_name();
                let pid = name.to_str().and_then(|n| n.strip_prefix("smbdirect-fuzz-")).and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let base = scratch();
        let cfg = ServerConfig {
            netbios_name: "FUZZSRV".into(),
            shares: vec![ShareConfig::new("share", base.join("share"))],
            users: vec![(USER.into(), PASSWORD.into())],
            max_read_size: LIMIT,
            max_write_size: LIMIT,
            max_transact_size: LIMIT,
            max_credits: 512,
            ..ServerConfig::default()
        };
        Server::new(cfg).expect("fuzz server")
    })
}

/// The whole NEGOTIATE request handler on a fresh connection: `data` is the request body
/// (after a fixed 64-byte header), negotiate contexts included.
pub fn negotiate(data: &[u8]) {
    let server = test_server().clone();
    let sink = Arc::new(Sink::default());
    let mut conn = Connection::new(server, sink.clone(), "fuzz".into());
    let mut msg = request_header(0, 0, 0, 0, 0);
    msg.extend_from_slice(data);
    let _ = conn.handle_message(msg);
    for r in sink.take() {
        check_response(&r, None);
    }
}

/// Create contexts (MS-SMB2 2.2.13.2) on their own.
pub fn create_contexts(data: &[u8]) {
    if let Ok(v) = m::parse_create_contexts(data) {
        assert!(v.len() <= 64);
        for (name, _) in v {
            assert!(name.len() >= 4);
        }
    }
}

/// NTLMSSP messages: the NEGOTIATE and AUTHENTICATE parsers, and `data` as the
/// AUTHENTICATE of an exchange started with a fixed NEGOTIATE (bare and in SPNEGO).
pub fn ntlmssp(data: &[u8]) {
    let _ = ntlm::parse_negotiate(data);
    let _ = ntlm::parse_authenticate(data);
    let _ = ntlm::av_pairs(data);
    let mut a = acceptor();
    assert!(a.step(&ntlm_negotiate()).is_ok());
    if let Ok(crate::auth::Step::Done { session_key, .. }) = a.step(data) {
        // Only the anonymous form can pass without the password.
        assert!(session_key.is_empty());
    }
    // As the first token: a bare NTLMSSP NEGOTIATE.
    let _ = acceptor().step(data);
}

/// SPNEGO/DER: the token parser, and `data` as the first and as the second token of an
/// SPNEGO exchange.
pub fn spnego(data: &[u8]) {
    let _ = spnego::parse(data);
    let _ = acceptor().step(data);
    let mut a = acceptor();
    if a.step(&[]).is_ok() {
        let _ = a.step(data);
    }
}

/// Security descriptors (MS-DTYP 2.4.6): parse, write back, parse again to the same
/// parts, and evaluate the DACL against a token.
pub fn security_descriptor(data: &[u8]) {
    if let Ok(sd) = m::SecurityDescriptor::parse(data) {
        let all = m::SECINFO_OWNER | m::SECINFO_GROUP | m::SECINFO_DACL | m::SECINFO_SACL;
        let b = sd.to_bytes(all);
        let again = m::SecurityDescriptor::parse(&b).expect("our own descriptor parses");
        assert_eq!(again.owner, sd.owner);
        assert_eq!(again.group, sd.group);
        assert_eq!(again.dacl, sd.dacl);
        let token = crate::security::Token::new(crate::security::Logon::User, 1000, 1000, &[]);
        let _ = crate::security::max_allowed(&sd, &token);
        if let Some(d) = &sd.dacl {
            let _ = crate::security::inherited_dacl(&sd, true, &token.user, &token.group);
            let _ = crate::security::aces(d);
        }
        let _ = crate::security::canonical_set(&sd);
    }
}

/// FILE_FULL_EA_INFORMATION lists (SET_INFO, the ExtA create context): parse, encode,
/// parse again to the same EAs.
pub fn ea_list(data: &[u8]) {
    if let Ok(eas) = crate::vfs::parse_full_ea_list(data) {
        let b = crate::vfs::encode_full_ea_list(&eas);
        assert_eq!(crate::vfs::parse_full_ea_list(&b).expect("our own list parses"), eas);
    }
}

/// The srvsvc named pipe (DCE/RPC PDUs and the NDR of NetrShareEnum/GetInfo): `data`
/// written to a fresh pipe, and to a pipe already bound to srvsvc.
pub fn srvsvc(data: &[u8]) {
    let server = test_server();
    let mut p = crate::ipc::Pipe::open("srvsvc", server).expect("pipe");
    let _ = p.write(data);
    let _ = p.read(1 << 16);
    let mut p = crate::ipc::Pipe::open("srvsvc", server).expect("pipe");
    p.write(&srvsvc_bind()).expect("bind");
    let ack = p.read(1 << 16).expect("bind ack");
    assert_eq!(ack.get(2), Some(&12), "bind_ack");
    let _ = p.write(data);
    let _ = p.read(1 << 16);
}

fn srvsvc_bind() -> Vec<u8> {
    let mut b = vec![5, 0, 11, 3, 0x10, 0, 0, 0, 72, 0, 0, 0, 1, 0, 0, 0];
    b.extend_from_slice(&[0xb8, 0x10, 0xb8, 0x10, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0]);
    b.extend_from_slice(&[0xc8, 0x4f, 0x32, 0x4b, 0x70, 0x16, 0xd3, 0x01, 0x12, 0x78, 0x5a, 0x47, 0xbf, 0x6e, 0xe1, 0x88]);
    b.extend_from_slice(&[3, 0, 0, 0]);
    b.extend_from_slice(&[0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60]);
    b.extend_from_slice(&[2, 0, 0, 0]);
    b
}

fn acceptor() -> Acceptor {
    static DB: OnceLock<Arc<crate::auth::UserDb>> = OnceLock::new();
    let db = DB.get_or_init(|| {
        let mut db = crate::auth::UserDb::new();
        db.add_password(USER, PASSWORD);
        Arc::new(db)
    });
    Acceptor::new(db.clone(), AcceptorConfig { allow_anonymous: true, ..AcceptorConfig::default() })
}

// ---------------------------------------------------------------------------------------
// The whole pipeline.

/// The fixed test account the pipeline logs on with.
pub const USER: &str = "fuzzer";
pub const PASSWORD: &str = "Fuzz-pass-1";

/// MaxRead/MaxWrite/MaxTransact of the pipeline's server.
pub const LIMIT: u32 = 64 * 1024;

/// The largest single allocation the pipeline may make: the server's largest message
/// ([`Connection::max_message_size`]: LIMIT + 64 KiB) plus 64 KiB of slack. The targets
/// check it with a counting global allocator (`fuzz/fuzz_targets/capped_alloc.rs`).
pub const ALLOC_LIMIT: usize = LIMIT as usize + 2 * 64 * 1024;

/// Collects what the server sends (async responses come from other threads).
#[derive(Default)]
struct Sink {
    out: Mutex<Vec<Vec<u8>>>,
}

impl MessageSink for Sink {
    fn send(&self, msg: OutBuf) -> std::io::Result<()> {
        let p = msg.payload().to_vec();
        lock(&self.out).push(p);
        Ok(())
    }
    fn shutdown(&self) {}
    fn peer(&self) -> String {
        "fuzz".into()
    }
}

impl Sink {
    fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *lock(&self.out))
    }
}

fn request_header(cmd: u16, mid: u64, tree: u32, session: u64, credits: u16) -> Vec<u8> {
    let h = Header {
        credit_charge: 1,
        command: cmd,
        credits,
        message_id: mid,
        async_id: u64::from(tree) << 32,
        session_id: session,
        ..Header::default()
    };
    let mut b = Vec::with_capacity(HEADER_LEN);
    h.write(&mut b);
    b
}

/// Checks a plaintext response chain: SMB2, marked as a response, NextCommand 8-aligned
/// and inside. Returns the responses.
fn check_response(msg: &[u8], opener: Option<&Opener>) -> Vec<Vec<u8>> {
    let mut plain;
    let chain: &[u8] = if msg.starts_with(&crypto::TRANSFORM_PROTOCOL_ID) {
        let o = opener.expect("TRANSFORM response on a connection without keys");
        plain = msg.to_vec();
        let (_, range) = o.open(&mut plain).expect("the server's TRANSFORM opens with the client key");
        &plain[range]
    } else {
        msg
    };
    let mut out = Vec::new();
    let mut off = 0;
    loop {
        let rest = &chain[off..];
        let h = Header::parse(rest).expect("response header");
        assert!(h.flags & 1 != 0, "response without SERVER_TO_REDIR");
        assert!(rest.len() >= HEADER_LEN + 2, "response without a body");
        let n = h.next_command as usize;
        if n == 0 {
            out.push(rest.to_vec());
            return out;
        }
        assert!(n.is_multiple_of(8) && n >= HEADER_LEN + 2 && n <= rest.len(), "bad NextCommand {n} in a response");
        out.push(rest[..n].to_vec());
        off += n;
    }
}

struct Client {
    conn: Connection,
    sink: Arc<Sink>,
    mid: u64,
    session: u64,
    trees: Vec<u32>,
    files: Vec<[u8; 16]>,
    signer: Option<Signer>,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
}

impl Client {
    /// Sends one chain; returns its responses, or None when the server ended the connection.
    fn exchange(&mut self, msg: Vec<u8>) -> Option<Vec<Vec<u8>>> {
        let r = self.conn.handle_message(msg);
        let mut out = Vec::new();
        for m in self.sink.take() {
            out.extend(check_response(&m, self.opener.as_ref()));
        }
        for resp in &out {
            // Learn new trees and files so later requests can name them.
            let Ok(h) = Header::parse(resp) else { continue };
            if h.status != 0 {
                continue;
            }
            if h.command == 3 {
                self.trees.push((h.async_id >> 32) as u32);
            }
            if h.command == 5 {
                if let Some(id) = resp.get(HEADER_LEN + 64..HEADER_LEN + 80).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
                    self.files.push(id);
                }
            }
        }
        r.ok().map(|_| out)
    }

    fn simple(&mut self, cmd: u16, body: &[u8]) -> Option<Vec<u8>> {
        let tree = self.trees.first().copied().unwrap_or(0);
        let mut msg = request_header(cmd, self.mid, tree, self.session, 64);
        self.mid += 1;
        msg.extend_from_slice(body);
        let mut v = self.exchange(msg)?;
        (v.len() == 1).then(|| v.remove(0))
    }
}

fn ntlm_negotiate() -> Vec<u8> {
    let mut b = ntlm::SIGNATURE.to_vec();
    let flags = ntlm::flags::UNICODE | ntlm::flags::NTLM | ntlm::flags::EXTENDED_SESSIONSECURITY | ntlm::flags::NEGOTIATE_128;
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    b
}

/// NTLMv2 AUTHENTICATE for [`USER`] answering `challenge`; returns it and the exported
/// session key (no key exchange: the session base key).
fn ntlm_authenticate(challenge: &[u8]) -> Option<(Vec<u8>, [u8; 16])> {
    use crate::auth::ntlm_crypto::{hmac_md5, ntowfv2};
    let server_challenge = challenge.get(24..32)?;
    let utf16 = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
    let bytes = |u: &[u16]| u.iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<u8>>();
    let (user, domain) = (utf16(USER), utf16("WORKGROUP"));
    let key = ntowfv2(&crate::auth::nt_hash(PASSWORD), &user, &domain);
    let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
    blob.extend_from_slice(&0x01d9_0000_0000_0000u64.to_le_bytes());
    blob.extend_from_slice(&[7; 8]);
    blob.extend_from_slice(&[0; 8]); // Z(4), MsvAvEOL
    let proof = hmac_md5(&key, &[server_challenge, &blob]);
    let session_key = hmac_md5(&key, &[&proof]);
    let mut nt = proof.to_vec();
    nt.extend_from_slice(&blob);
    let (dom, usr) = (bytes(&domain), bytes(&user));
    let flags = ntlm::flags::UNICODE | ntlm::flags::NTLM | ntlm::flags::EXTENDED_SESSIONSECURITY | ntlm::flags::NEGOTIATE_128;
    let mut msg = ntlm::SIGNATURE.to_vec();
    msg.extend_from_slice(&3u32.to_le_bytes());
    let mut payload = Vec::new();
    let mut field = |msg: &mut Vec<u8>, data: &[u8]| {
        let off = 88 + payload.len();
        msg.extend_from_slice(&(data.len() as u16).to_le_bytes());
        msg.extend_from_slice(&(data.len() as u16).to_le_bytes());
        msg.extend_from_slice(&(off as u32).to_le_bytes());
        payload.extend_from_slice(data);
    };
    field(&mut msg, &[]); // LM
    field(&mut msg, &nt);
    field(&mut msg, &dom);
    field(&mut msg, &usr);
    field(&mut msg, &[]); // workstation
    field(&mut msg, &[]); // session key
    msg.extend_from_slice(&flags.to_le_bytes());
    msg.extend_from_slice(&[0; 24]); // version, MIC
    msg.extend_from_slice(&payload);
    Some((msg, session_key))
}

const DIALECTS: [u16; 4] = [0x0311, 0x0302, 0x0210, 0x0202];

/// Negotiates `dialect`, logs on as [`USER`] and connects to the share.
fn log_on(opts: u8) -> Option<Client> {
    let dialect = DIALECTS[usize::from(opts & 3)];
    let sink = Arc::new(Sink::default());
    let conn = Connection::new(test_server().clone(), sink.clone(), "fuzz".into());
    let mut c = Client { conn, sink, mid: 0, session: 0, trees: Vec::new(), files: Vec::new(), signer: None, sealer: None, opener: None };

    // NEGOTIATE, with AES-128-GCM offered in 3.1.1 (and the ENCRYPTION capability).
    let mut body = Vec::new();
    body.extend_from_slice(&36u16.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes());
    body.extend_from_slice(&1u16.to_le_bytes()); // signing enabled, not required
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&0x40u32.to_le_bytes());
    body.extend_from_slice(&[0x5a; 16]);
    let ctx_at = body.len();
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&dialect.to_le_bytes());
    if dialect == 0x0311 {
        while !body.len().is_multiple_of(8) {
            body.push(0);
        }
        let off = (HEADER_LEN + body.len()) as u32;
        body[ctx_at..ctx_at + 4].copy_from_slice(&off.to_le_bytes());
        body[ctx_at + 4..ctx_at + 6].copy_from_slice(&2u16.to_le_bytes());
        body.extend_from_slice(&[1, 0, 38, 0, 0, 0, 0, 0, 1, 0, 32, 0, 1, 0]);
        body.extend_from_slice(&[0x11; 32]);
        while !body.len().is_multiple_of(8) {
            body.push(0);
        }
        body.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 1, 0, 2, 0]);
    }
    let mut msg = request_header(0, 0, 0, 0, 1);
    msg.extend_from_slice(&body);
    let mut preauth = PreauthHash::new();
    preauth.update(&msg);
    c.mid = 1;
    let resp = c.exchange(msg)?.pop()?;
    assert_eq!(u32_at(&resp, 8), Some(0), "NEGOTIATE failed");
    preauth.update(&resp);
    let cipher = match dialect {
        0x0311 => Some(Cipher::Aes128Gcm),
        0x0302 => Some(Cipher::Aes128Ccm),
        _ => None,
    };

    // SESSION_SETUP: bare NTLMSSP, two rounds.
    let setup = |token: &[u8]| {
        let mut b = Vec::new();
        b.extend_from_slice(&[25, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&((HEADER_LEN + 24) as u16).to_le_bytes());
        b.extend_from_slice(&(token.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(token);
        b
    };
    let mut msg = request_header(1, c.mid, 0, 0, 64);
    c.mid += 1;
    msg.extend_from_slice(&setup(&ntlm_negotiate()));
    preauth.update(&msg);
    let resp = c.exchange(msg)?.pop()?;
    assert_eq!(u32_at(&resp, 8), Some(0xC000_0016), "SESSION_SETUP round 1");
    preauth.update(&resp);
    c.session = Header::parse(&resp).ok()?.session_id;
    let off = usize::from(crate::wire::u16_at(&resp, HEADER_LEN + 4)?);
    let len = usize::from(crate::wire::u16_at(&resp, HEADER_LEN + 6)?);
    let (auth, key) = ntlm_authenticate(resp.get(off..off + len)?)?;
    let mut msg = request_header(1, c.mid, 0, c.session, 64);
    c.mid += 1;
    msg.extend_from_slice(&setup(&auth));
    preauth.update(&msg);
    let resp = c.exchange(msg)?.pop()?;
    assert_eq!(u32_at(&resp, 8), Some(0), "SESSION_SETUP as the test user failed");
    let h = (dialect == 0x0311).then(|| preauth.value());
    let keys = crypto::derive_session_keys(Dialect(dialect), &key, h.as_ref(), cipher).ok()?;
    let alg = if dialect >= 0x0300 { SigningAlgorithm::AesCmac } else { SigningAlgorithm::HmacSha256 };
    c.signer = Signer::new(alg, keys.signing.as_bytes()).ok();
    if let (Some(ci), Some(i), Some(o)) = (cipher, &keys.server_in, &keys.server_out) {
        c.sealer = Sealer::new(ci, i.as_bytes()).ok();
        c.opener = Opener::new(ci, o.as_bytes()).ok();
    }

    if opts & 0x10 == 0 {
        let path: Vec<u8> = "\\\\FUZZSRV\\share".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let mut b = Vec::new();
        b.extend_from_slice(&[9, 0, 0, 0]);
        b.extend_from_slice(&((HEADER_LEN + 8) as u16).to_le_bytes());
        b.extend_from_slice(&(path.len() as u16).to_le_bytes());
        b.extend_from_slice(&path);
        let r = c.simple(3, &b)?;
        assert_eq!(u32_at(&r, 8), Some(0), "TREE_CONNECT failed");
    }
    Some(c)
}

/// Offset of the FileId in a request of `cmd` (MS-SMB2 2.2), from the header.
fn file_id_offset(cmd: u16) -> Option<usize> {
    Some(HEADER_LEN
        + match cmd {
            6 | 7 | 10 | 11 | 14 | 15 | 18 => 8,
            8 | 9 | 17 => 16,
            16 => 24,
            _ => return None,
        })
}

/// Makes a request from the input fit this connection: MessageId from the driver's
/// sequence; a SessionId that is neither 0 nor all ones becomes the session's; a TreeId
/// that is neither becomes `trees[(id - 1) % n]`; a FileId whose persistent half is all
/// 0xFE becomes `files[volatile % n]` (how the seed converter writes captured handles).
fn patch_one(c: &mut Client, m: &mut [u8]) {
    let Ok(h) = Header::parse(m) else { return };
    m[24..32].copy_from_slice(&c.mid.to_le_bytes());
    c.mid += u64::from(h.credit_charge.max(1));
    if h.session_id != 0 && h.session_id != u64::MAX {
        m[40..48].copy_from_slice(&c.session.to_le_bytes());
    }
    let tree = (h.async_id >> 32) as u32;
    if h.flags & 2 == 0 && tree != 0 && tree != u32::MAX && !c.trees.is_empty() {
        let t = c.trees[(tree as usize - 1) % c.trees.len()];
        m[36..40].copy_from_slice(&t.to_le_bytes());
    }
    if let Some(at) = file_id_offset(h.command) {
        if let Some(f) = m.get_mut(at..at + 16) {
            if f[..8] == [0xFE; 8] && !c.files.is_empty() {
                let i = u64::from_le_bytes(f[8..16].try_into().unwrap_or_default());
                f.copy_from_slice(&c.files[(i % c.files.len() as u64) as usize]);
            }
        }
    }
}

/// Calls `f` on each message of a compound chain (as far as NextCommand stays inside).
fn each_in_chain(chain: &mut [u8], mut f: impl FnMut(&mut [u8])) {
    let mut off = 0usize;
    while chain.len() - off >= HEADER_LEN {
        let next = u32_at(chain, off + 20).unwrap_or(0) as usize;
        let end = if next == 0 || next > chain.len() - off { chain.len() } else { off + next };
        f(&mut chain[off..end]);
        if end == chain.len() {
            break;
        }
        off = end;
    }
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// The scratch directory holding the pipeline's share: one per process, under the temp
/// directory. Those of processes that have ended are removed when the next one starts.
fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("smbdirect-fuzz-{}", std::process::id()))
}

fn share_dir() -> PathBuf {
    test_server().shares[0].cfg.path.clone()
}

/// The whole request pipeline in process. Input: one options byte (bits 0-1: dialect
/// 3.1.1/3.0.2/2.1/2.0.2; bit 2: sign every request; bit 3: encrypt (3.x); bit 4: no
/// TREE_CONNECT by the driver), then records of `[u16 LE length][flags][chain]`: a chain
/// of SMB2 requests (compound or not). Record flags: bit 0 sends the chain as is (no
/// patching, signing or sealing); bit 1 neither signs nor seals it. Each chain is patched
/// ([`patch_one`]), signed or sealed, handed to [`Connection::handle_message`] and its
/// responses are checked. When the connection ends (input exhausted or the server
/// disconnects), every session, open, file entry, byte-range lock and file descriptor
/// the connection held must be gone.
pub fn pipeline(data: &[u8]) {
    let Some((&opts, rest)) = data.split_first() else { return };
    // One run at a time: each checks the shared server's tables are empty at its end.
    static RUN: Mutex<()> = Mutex::new(());
    let _one = lock(&RUN);
    let server = test_server().clone();
    // A clean share for every input.
    if let Ok(rd) = std::fs::read_dir(share_dir()) {
        for e in rd.flatten() {
            let p = e.path();
            let _ = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
    // The process's async reactor holds an epoll descriptor for good, the
    // CHANGE_NOTIFY hub an inotify descriptor: start them first.
    let _ = crate::asyncop::reactor();
    let _ = crate::handlers::notify::hub();
    let fds = open_fds();
    // On a thread with the stack of the server's connection threads (listener.rs), so
    // input that recurses deep enough to overflow it in the server crashes here too.
    std::thread::scope(|scope| {
        let t = std::thread::Builder::new().name("smb-conn".into()).stack_size(CONN_STACK).spawn_scoped(scope, || drive(opts, rest));
        match t.map(|t| t.join()) {
            Ok(Ok(())) => {}
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(e) => panic!("cannot spawn the connection thread: {e}"),
        }
    });
    // The connection's teardown ends every async operation and releases what it held
    // before it returns: nothing may be left now, not even for a moment.
    assert!(lock(&server.sessions).is_empty(), "sessions left after the connection ended");
    assert!(server.no_open_state(), "open files or byte-range locks left after the connection ended");
    assert_eq!(server.asyncs.pending(), 0, "async operations left after the connection ended");
    assert_eq!(server.asyncs.watches_total(), 0, "change notify watches left after the connection ended");
    let now = open_fds();
    assert!(now <= fds, "{} file descriptors leaked ({fds} before, {now} after)", now - fds);
}

/// Stack size of the server's connection threads (`smb-conn` in listener.rs).
const CONN_STACK: usize = 512 * 1024;

/// Logs on and sends the records of `rest` (see [`pipeline`]).
fn drive(opts: u8, mut rest: &[u8]) {
    if let Some(mut c) = log_on(opts) {
        let sign = opts & 4 != 0;
        let seal = opts & 8 != 0 && c.sealer.is_some();
        while let Some((len, tail)) = rest.split_first_chunk::<2>() {
            let len = usize::from(u16::from_le_bytes(*len));
            let Some((&flags, tail)) = tail.split_first() else { break };
            let len = len.min(tail.len());
            let (chain, tail) = tail.split_at(len);
            rest = tail;
            let mut msg = chain.to_vec();
            if flags & 1 == 0 && msg.starts_with(b"\xFESMB") {
                each_in_chain(&mut msg, |m| patch_one(&mut c, m));
                if flags & 2 == 0 && seal {
                    let mut sealed = vec![0u8; TRANSFORM_HEADER_LEN];
                    sealed.extend_from_slice(&msg);
                    if c.sealer.as_ref().is_some_and(|s| s.seal(c.session, &mut sealed).is_ok()) {
                        msg = sealed;
                    }
                } else if flags & 2 == 0 && sign {
                    if let Some(s) = c.signer.as_ref() {
                        each_in_chain(&mut msg, |m| {
                            let _ = s.sign(m);
                        });
                    }
                }
            }
            if c.exchange(msg).is_none() {
                break;
            }
        }
        drop(c);
    }
}
