//! TREE_CONNECT and TREE_DISCONNECT.

use super::{FILE_ALL_ACCESS, READ_ONLY_ACCESS};
use crate::conn::{Connection, Ctx};
use crate::config::Limits;
use crate::objects::{lock, Tree};
use crate::wire::messages::{parse_small, TreeConnectReq};
use crate::wire::status::NtStatus;
use crate::wire::{utf16_to_string, Put};
use std::sync::Arc;
use tracing::{info, warn};

const SHARE_TYPE_DISK: u8 = 1;
const SHARE_TYPE_PIPE: u8 = 2;
const SHAREFLAG_ENCRYPT_DATA: u32 = 0x8000;
const SHAREFLAG_NO_CACHING: u32 = 0x0030;

pub fn tree_connect(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    let req = TreeConnectReq::parse(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let path = utf16_to_string(req.path).map_err(|_| NtStatus::BAD_NETWORK_NAME)?;
    // "\\server\share": the share is what follows the server. A path without
    // a server part is the share name itself, as Samba takes it (MS-SMB2
    // 2.2.9 asks for "\\server\share", but refusing a bare name would lock
    // out a client that Samba serves).
    let trimmed = path.trim_start_matches('\\');
    let name = trimmed.split_once('\\').map_or(trimmed, |(_, s)| s);
    if name.is_empty() || name.contains('\\') {
        return Err(NtStatus::BAD_NETWORK_NAME);
    }
    let share = conn.server.share(name).ok_or(NtStatus::BAD_NETWORK_NAME)?;
    let session = ctx.session()?.clone();
    let identity = lock(&session.identity).clone().ok_or(NtStatus::ACCESS_DENIED)?;
    let guest = identity.kind != crate::auth::IdentityKind::User;
    if !share.is_ipc() {
        if guest && !share.cfg.guest_ok {
            return Err(NtStatus::ACCESS_DENIED);
        }
        if !guest && !share.cfg.user_allowed(&identity.user) {
            return Err(NtStatus::ACCESS_DENIED);
        }
    }
    let encrypt = !share.is_ipc() && conn.server.encrypt_required(&share.cfg);
    if encrypt && session.keys().is_none_or(|k| k.sealer.is_none()) {
        return Err(NtStatus::ACCESS_DENIED);
    }
    // The Unix account this tree's file operations run as.
    let creds = if share.is_ipc() {
        None
    } else {
        let uid = conn.server.users.current().lookup(&identity.user).and_then(|e| e.uid());
        match crate::auth::unix::resolve(identity.kind, &identity.user, uid, &share.cfg.unix, &conn.server.cfg.accounts) {
            Ok(c) => c.map(Arc::new),
            Err(e) => {
                warn!(session = session.id, share = %share.cfg.name, user = %identity.user, "TREE_CONNECT refused: {e}");
                return Err(NtStatus::ACCESS_DENIED);
            }
        }
    };
    let read_only = !share.is_ipc() && share.cfg.unix.read_only_for(share.cfg.read_only, &identity.user, creds.as_deref());
    let maximal = if read_only { READ_ONLY_ACCESS } else { FILE_ALL_ACCESS };
    let limits = &conn.server.cfg.limits;
    let t = {
        let mut trees = lock(&session.trees);
        if !Limits::under(trees.len(), limits.max_trees_per_session) {
            warn!(session = session.id, "TREE_CONNECT refused: max tree connects per session ({}) reached", limits.max_trees_per_session);
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        // Samba's per-share `max connections`, answered as Samba does.
        if !share.claim_connection() {
            warn!(session = session.id, share = %share.cfg.name, "TREE_CONNECT refused: max connections ({}) of the share reached", share.cfg.max_connections);
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let id = session.new_tree_id();
        let token = Arc::new(session_token(identity.kind, creds.as_deref()));
        let t = Arc::new(Tree { id, share: share.clone(), read_only, encrypt, maximal_access: maximal, creds, token });
        trees.insert(id, t.clone());
        t
    };
    let id = t.id;
    match &t.creds {
        Some(c) => info!(session = session.id, tree = id, share = %share.cfg.name, unix = %c.name, uid = c.uid, gid = c.gid, "tree connect"),
        None => info!(session = session.id, tree = id, share = %share.cfg.name, "tree connect"),
    }
    let mut flags = 0u32;
    if encrypt {
        flags |= SHAREFLAG_ENCRYPT_DATA;
    }
    if share.is_ipc() {
        flags |= SHAREFLAG_NO_CACHING;
    }
    out.u16(16).u8(if share.is_ipc() { SHARE_TYPE_PIPE } else { SHARE_TYPE_DISK }).u8(0).u32(flags).u32(0).u32(maximal);
    ctx.tree = Some(t);
    Ok(())
}

/// The token security descriptors are checked against: the Unix account
/// the tree runs as, or (no account: the server serves as itself) the
/// server's own user, whose files it then is working on.
pub fn session_token(kind: crate::auth::IdentityKind, creds: Option<&crate::identity::Creds>) -> crate::security::Token {
    use crate::security::{Logon, Token};
    let logon = match kind {
        crate::auth::IdentityKind::User => Logon::User,
        crate::auth::IdentityKind::Guest => Logon::Guest,
        _ => Logon::Anonymous,
    };
    let c = creds.unwrap_or_else(|| crate::identity::server_creds());
    Token::new(logon, c.uid, c.gid, &c.groups)
}

pub fn tree_disconnect(conn: &mut Connection, ctx: &mut Ctx<'_>, out: &mut Vec<u8>) -> Result<(), NtStatus> {
    parse_small(ctx.msg).map_err(|_| NtStatus::INVALID_PARAMETER)?;
    let session = ctx.session()?.clone();
    let tree = ctx.tree()?.clone();
    lock(&session.trees).remove(&tree.id);
    let opens: Vec<_> = {
        let mut o = lock(&session.opens);
        let ids: Vec<u64> = o.iter().filter(|(_, v)| v.tree_id() == tree.id).map(|(k, _)| *k).collect();
        ids.into_iter().filter_map(|k| o.remove(&k)).collect()
    };
    for o in opens {
        o.close(&conn.server);
    }
    out.u16(4).u16(0);
    Ok(())
}
