//! Windows access control over Unix files: the session's token, the
//! security descriptor a file has when none is stored (from its mode and
//! owner), the access check of MS-DTYP 2.5.3.2, ACE inheritance on create
//! (MS-DTYP 2.5.3.4) and the canonical form a set descriptor is kept in.
//!
//! Pure functions over wire-form SIDs and ACLs (the bytes the
//! `SecurityDescriptor` of wire/messages.rs keeps); where descriptors are
//! stored is handlers/create.rs (`stored_sd`/`store_sd`). Every walk over an
//! ACL is a bounded loop that checks each offset before it slices.
//!
//! Users and groups are Samba's "Unix user/group" SIDs: S-1-22-1-uid and
//! S-1-22-2-gid. A token holds the user's SID, its groups' SIDs, Everyone
//! and the logon kind's well-known group.

use crate::handlers::{map_generic, DELETE, FILE_ALL_ACCESS, FILE_DELETE_CHILD, FILE_GENERIC_EXECUTE, FILE_GENERIC_READ, FILE_GENERIC_WRITE, FILE_READ_ATTRIBUTES, READ_CONTROL, WRITE_DAC, WRITE_OWNER};
use crate::wire::messages::{SecurityDescriptor, SE_DACL_PRESENT};

pub const ACE_ACCESS_ALLOWED: u8 = 0;
pub const ACE_ACCESS_DENIED: u8 = 1;
pub const OBJECT_INHERIT: u8 = 0x01;
pub const CONTAINER_INHERIT: u8 = 0x02;
pub const NO_PROPAGATE_INHERIT: u8 = 0x04;
pub const INHERIT_ONLY: u8 = 0x08;
pub const INHERITED_ACE: u8 = 0x10;

pub const SE_SELF_RELATIVE: u16 = 0x8000;
pub const SE_DACL_AUTO_INHERIT_REQ: u16 = 0x0100;
pub const SE_DACL_AUTO_INHERITED: u16 = 0x0400;
pub const SE_DACL_PROTECTED: u16 = 0x1000;

/// A SID in wire form: revision 1, sub-authority count, 48-bit authority.
pub fn sid(auth: u8, subs: &[u32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + 4 * subs.len());
    v.extend_from_slice(&[1, subs.len() as u8, 0, 0, 0, 0, 0, auth]);
    for s in subs {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

pub fn unix_user_sid(uid: u32) -> Vec<u8> {
    sid(22, &[1, uid])
}

pub fn unix_group_sid(gid: u32) -> Vec<u8> {
    sid(22, &[2, gid])
}

pub fn everyone() -> Vec<u8> {
    sid(1, &[0])
}
pub fn creator_owner() -> Vec<u8> {
    sid(3, &[0])
}
pub fn creator_group() -> Vec<u8> {
    sid(3, &[1])
}
/// OWNER RIGHTS (S-1-3-4): ACEs for it replace the owner's implicit rights.
pub fn owner_rights() -> Vec<u8> {
    sid(3, &[4])
}

/// The uid a Unix user SID names.
pub fn sid_to_uid(s: &[u8]) -> Option<u32> {
    unix_id(s, 1)
}

/// The gid a Unix group SID names.
pub fn sid_to_gid(s: &[u8]) -> Option<u32> {
    unix_id(s, 2)
}

fn unix_id(s: &[u8], kind: u32) -> Option<u32> {
    if s.len() != 16 || s[..8] != [1, 2, 0, 0, 0, 0, 0, 22] {
        return None;
    }
    let k = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
    (k == kind).then(|| u32::from_le_bytes([s[12], s[13], s[14], s[15]]))
}

/// Who a session is when a security descriptor is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub user: Vec<u8>,
    /// The primary group (new files' group SID).
    pub group: Vec<u8>,
    /// Every SID the token holds: the user, its groups, well-known groups.
    pub sids: Vec<Vec<u8>>,
    /// uid 0: may set any owner (as with SeRestorePrivilege on Windows).
    pub root: bool,
}

/// The logon kind a token is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logon {
    User,
    Guest,
    Anonymous,
}

impl Token {
    /// The token of a session acting as Unix `uid`/`gid`/`groups`.
    pub fn new(logon: Logon, uid: u32, gid: u32, groups: &[u32]) -> Token {
        let user = unix_user_sid(uid);
        let group = unix_group_sid(gid);
        let mut sids = vec![user.clone(), group.clone()];
        for g in groups.iter().take(1024) {
            let s = unix_group_sid(*g);
            if !sids.contains(&s) {
                sids.push(s);
            }
        }
        sids.push(everyone());
        match logon {
            Logon::User => sids.push(sid(5, &[11])),
            Logon::Guest => sids.push(sid(5, &[32, 546])),
            Logon::Anonymous => sids.push(sid(5, &[7])),
        }
        Token { user, group, sids, root: uid == 0 }
    }

    pub fn has(&self, s: &[u8]) -> bool {
        self.sids.iter().any(|t| t.as_slice() == s)
    }
}

/// One ACE of an ACL, as read from its wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ace<'a> {
    pub kind: u8,
    pub flags: u8,
    pub mask: u32,
    /// The SID of an allow/deny ACE (empty for other kinds).
    pub sid: &'a [u8],
    /// The whole ACE.
    pub raw: &'a [u8],
}

/// The ACEs of a wire ACL, in order. A malformed tail ends the list.
pub fn aces(acl: &[u8]) -> Vec<Ace<'_>> {
    let count = acl.get(4..6).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let mut out = Vec::with_capacity(count.min(1024));
    let mut off = 8usize;
    for _ in 0..count {
        let Some(h) = off.checked_add(8).and_then(|end| acl.get(off..end)) else { break };
        let size = u16::from_le_bytes([h[2], h[3]]) as usize;
        if size < 8 {
            break;
        }
        let Some(raw) = off.checked_add(size).and_then(|end| acl.get(off..end)) else { break };
        off += size;
        let (kind, flags) = (h[0], h[1]);
        let mask = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let sid = if matches!(kind, ACE_ACCESS_ALLOWED | ACE_ACCESS_DENIED) {
            raw.get(9).and_then(|n| raw.get(8..8 + 8 + 4 * *n as usize)).unwrap_or(&[])
        } else {
            &[]
        };
        out.push(Ace { kind, flags, mask, sid, raw });
    }
    out
}

/// A wire ACL (revision 2) of allow/deny ACEs.
pub fn build_acl(list: &[(u8, u8, u32, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, flags, mask, s) in list {
        body.push(*kind);
        body.push(*flags);
        body.extend_from_slice(&((8 + s.len()) as u16).to_le_bytes());
        body.extend_from_slice(&mask.to_le_bytes());
        body.extend_from_slice(s);
    }
    let mut a = vec![2, 0];
    a.extend_from_slice(&((8 + body.len()) as u16).to_le_bytes());
    a.extend_from_slice(&(list.len() as u16).to_le_bytes());
    a.extend_from_slice(&[0, 0]);
    a.extend_from_slice(&body);
    a
}

/// An ACL built from whole ACEs (kept as they are). An ACL is at most
/// 64 KiB: ACEs past that are left off the end, which never grants more
/// (ACEs are taken in order, and a right no earlier ACE allowed stays
/// ungranted without the later ones).
fn acl_of_raw(list: &[Vec<u8>]) -> Vec<u8> {
    let mut len = 8usize;
    let kept = list.iter().take_while(|r| {
        len += r.len();
        len <= u16::MAX as usize
    });
    let kept: Vec<&Vec<u8>> = kept.collect();
    let len: usize = 8 + kept.iter().map(|r| r.len()).sum::<usize>();
    let mut a = vec![2, 0];
    a.extend_from_slice(&(len as u16).to_le_bytes());
    a.extend_from_slice(&(kept.len() as u16).to_le_bytes());
    a.extend_from_slice(&[0, 0]);
    for r in kept {
        a.extend_from_slice(r);
    }
    a
}

fn ace_bytes(kind: u8, flags: u8, mask: u32, s: &[u8]) -> Vec<u8> {
    let mut v = vec![kind, flags];
    v.extend_from_slice(&((8 + s.len()) as u16).to_le_bytes());
    v.extend_from_slice(&mask.to_le_bytes());
    v.extend_from_slice(s);
    v
}

/// Everything a security descriptor can grant.
pub const ALL_RIGHTS: u32 = FILE_ALL_ACCESS | crate::handlers::ACCESS_SYSTEM_SECURITY;

/// The most `token` may be granted by `sd` (MS-DTYP 2.5.3.2 with
/// MAXIMUM_ALLOWED): no DACL (or a NULL one) grants everything; the owner
/// has READ_CONTROL and WRITE_DAC unless the DACL has ACEs for OWNER RIGHTS,
/// which then stand for the owner; ACEs are taken in order and a right once
/// granted or denied stays so; inherit-only ACEs do not apply to the object.
pub fn max_allowed(sd: &SecurityDescriptor, token: &Token) -> u32 {
    let Some(dacl) = sd.dacl.as_ref().filter(|_| sd.control & SE_DACL_PRESENT != 0) else { return ALL_RIGHTS };
    let list = aces(dacl);
    let is_owner = sd.owner.as_ref().is_some_and(|o| token.has(o));
    let orights = owner_rights();
    let owner_rights_aces = list.iter().any(|a| a.flags & INHERIT_ONLY == 0 && a.sid == orights.as_slice());
    let (mut granted, mut denied) = (0u32, 0u32);
    if is_owner && !owner_rights_aces {
        granted |= READ_CONTROL | WRITE_DAC;
    }
    for a in &list {
        if a.flags & INHERIT_ONLY != 0 || !matches!(a.kind, ACE_ACCESS_ALLOWED | ACE_ACCESS_DENIED) {
            continue;
        }
        let applies = token.has(a.sid) || (is_owner && a.sid == orights.as_slice());
        if !applies {
            continue;
        }
        let mask = map_generic(a.mask);
        if a.kind == ACE_ACCESS_ALLOWED {
            granted |= mask & !denied;
        } else {
            denied |= mask & !granted;
        }
    }
    granted
}

/// Rights a directory's descriptor gives over its entries: FILE_DELETE_CHILD
/// lets an entry be deleted, FILE_LIST_DIRECTORY lets its attributes be read
/// (as NTFS and Samba grant them).
pub fn rights_from_parent(parent_granted: u32) -> u32 {
    let mut r = 0;
    if parent_granted & FILE_DELETE_CHILD != 0 {
        r |= DELETE;
    }
    if parent_granted & crate::handlers::FILE_READ_DATA != 0 {
        r |= FILE_READ_ATTRIBUTES;
    }
    r
}

/// Rights one set of rwx mode bits stands for.
fn mode_rights(bits: u32, dir: bool) -> u32 {
    if bits & 7 == 7 {
        return FILE_ALL_ACCESS;
    }
    let mut m = 0;
    if bits & 4 != 0 {
        m |= FILE_GENERIC_READ;
    }
    if bits & 2 != 0 {
        m |= FILE_GENERIC_WRITE | if dir { FILE_DELETE_CHILD } else { 0 };
    }
    if bits & 1 != 0 {
        m |= FILE_GENERIC_EXECUTE;
    }
    m
}

/// The descriptor of a file none was stored for: owner and group from its
/// Unix owner, a DACL that says what its mode says (owner, group, Everyone
/// for the other bits). The owner may also change the descriptor and
/// attributes and delete, as a Unix owner may chmod, utime and (with a
/// writable directory) unlink; the kernel still decides the unlink.
pub fn derived_sd(uid: u32, gid: u32, mode: u32, dir: bool) -> SecurityDescriptor {
    let (owner, group) = (unix_user_sid(uid), unix_group_sid(gid));
    // The owner can chmod: a right its mode withholds but the owner could
    // give itself protects nothing, so an owner who may write has all
    // rights (a new file is 0644, and a client expects full control of
    // what it made), one who may only read has read and execute.
    let user = match (mode >> 6) & 7 {
        0 => 0,
        u if u & 2 != 0 => FILE_ALL_ACCESS,
        _ => FILE_GENERIC_READ | FILE_GENERIC_EXECUTE | READ_CONTROL | WRITE_DAC | WRITE_OWNER | DELETE | crate::handlers::FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES,
    };
    let ev = everyone();
    let mut list: Vec<(u8, u8, u32, &[u8])> = Vec::new();
    let g = mode_rights(mode >> 3, dir);
    let o = mode_rights(mode, dir);
    if user != 0 {
        list.push((ACE_ACCESS_ALLOWED, 0, user, &owner));
    }
    if g != 0 {
        list.push((ACE_ACCESS_ALLOWED, 0, g, &group));
    }
    if o != 0 {
        list.push((ACE_ACCESS_ALLOWED, 0, o, &ev));
    }
    let dacl = build_acl(&list);
    SecurityDescriptor { control: SE_SELF_RELATIVE | SE_DACL_PRESENT, owner: Some(owner), group: Some(group), sacl: None, dacl: Some(dacl) }
}

/// The DACL part of a descriptor a client sets, in the form it is kept:
/// generic rights of ACEs that apply to the object are mapped (inherit-only
/// ACEs keep theirs, for the children); DACL_AUTO_INHERIT_REQ is not kept,
/// and DACL_AUTO_INHERITED only when asked for with it (what Windows and
/// Samba answer to smbtorture's acls.INHERITFLAGS).
pub fn canonical_set(new: &SecurityDescriptor) -> SecurityDescriptor {
    let mut sd = new.clone();
    if sd.control & (SE_DACL_AUTO_INHERITED | SE_DACL_AUTO_INHERIT_REQ) != (SE_DACL_AUTO_INHERITED | SE_DACL_AUTO_INHERIT_REQ) {
        sd.control &= !SE_DACL_AUTO_INHERITED;
    }
    sd.control &= !SE_DACL_AUTO_INHERIT_REQ;
    if let Some(dacl) = &new.dacl {
        let list = aces(dacl);
        let raw: Vec<Vec<u8>> = list
            .iter()
            .map(|a| {
                let mut r = a.raw.to_vec();
                if a.flags & INHERIT_ONLY == 0 && matches!(a.kind, ACE_ACCESS_ALLOWED | ACE_ACCESS_DENIED) {
                    r[4..8].copy_from_slice(&map_generic(a.mask).to_le_bytes());
                }
                r
            })
            .collect();
        sd.dacl = Some(acl_of_raw(&raw));
    }
    sd
}

/// The DACL a new file or directory inherits from its parent's descriptor
/// (MS-DTYP 2.5.3.4.2), with CREATOR OWNER / CREATOR GROUP replaced by the
/// creator's SIDs; `None` when nothing is inheritable (the new file then
/// gets the default: no stored descriptor, its mode speaks). ACEs are
/// marked INHERITED, and the DACL AUTO_INHERITED, when the parent's DACL is
/// auto-inherited (as Windows does; smbtorture acls.INHERITFLAGS).
pub fn inherited_dacl(parent: &SecurityDescriptor, dir: bool, owner: &[u8], group: &[u8]) -> Option<(Vec<u8>, u16)> {
    let dacl = parent.dacl.as_ref().filter(|_| parent.control & SE_DACL_PRESENT != 0)?;
    let auto = parent.control & SE_DACL_AUTO_INHERITED != 0;
    let mark = if auto { INHERITED_ACE } else { 0 };
    let (co, cg) = (creator_owner(), creator_group());
    let mut out: Vec<Vec<u8>> = Vec::new();
    for a in aces(dacl) {
        if !matches!(a.kind, ACE_ACCESS_ALLOWED | ACE_ACCESS_DENIED) {
            continue;
        }
        let oi = a.flags & OBJECT_INHERIT != 0;
        let ci = a.flags & CONTAINER_INHERIT != 0;
        let np = a.flags & NO_PROPAGATE_INHERIT != 0;
        let creator = a.sid == co.as_slice() || a.sid == cg.as_slice();
        let mapped_sid: &[u8] = if a.sid == co.as_slice() {
            owner
        } else if a.sid == cg.as_slice() {
            group
        } else {
            a.sid
        };
        let generic = a.mask & 0xF000_0000 != 0;
        if !dir {
            if oi {
                out.push(ace_bytes(a.kind, mark, map_generic(a.mask), mapped_sid));
            }
            continue;
        }
        if ci {
            if np {
                out.push(ace_bytes(a.kind, mark, map_generic(a.mask), mapped_sid));
            } else if creator || generic {
                // Split: what applies to the directory, and an inherit-only
                // copy that its children inherit.
                out.push(ace_bytes(a.kind, mark, map_generic(a.mask), mapped_sid));
                out.push(ace_bytes(a.kind, (a.flags & (OBJECT_INHERIT | CONTAINER_INHERIT)) | INHERIT_ONLY | mark, a.mask, a.sid));
            } else {
                out.push(ace_bytes(a.kind, (a.flags & (OBJECT_INHERIT | CONTAINER_INHERIT)) | mark, a.mask, a.sid));
            }
        } else if oi && !np {
            out.push(ace_bytes(a.kind, OBJECT_INHERIT | INHERIT_ONLY | mark, a.mask, a.sid));
        }
    }
    if out.is_empty() {
        return None;
    }
    Some((acl_of_raw(&out), if auto { SE_DACL_AUTO_INHERITED } else { 0 }))
}

/// The descriptor of a new file: the DACL the creator gave (SecD), else the
/// one it inherits, else the default (`derived`, from its mode); owner and
/// group the creator's unless given. `None`: nothing was given or inherited
/// (nothing is stored; the mode speaks).
pub fn new_file_sd(parent: Option<&SecurityDescriptor>, given: Option<&SecurityDescriptor>, dir: bool, token: &Token, derived: SecurityDescriptor) -> Option<SecurityDescriptor> {
    let inherited = parent.and_then(|p| inherited_dacl(p, dir, &token.user, &token.group));
    if inherited.is_none() && given.is_none() {
        return None;
    }
    let mut sd = derived;
    sd.owner = Some(token.user.clone());
    sd.group = Some(token.group.clone());
    if let Some(g) = given.filter(|g| g.control & SE_DACL_PRESENT != 0) {
        let c = canonical_set(g);
        sd.dacl = c.dacl;
        sd.control = SE_SELF_RELATIVE | SE_DACL_PRESENT | (c.control & (SE_DACL_PROTECTED | SE_DACL_AUTO_INHERITED));
    } else if let Some((dacl, ctl)) = inherited {
        sd.dacl = Some(dacl);
        sd.control = SE_SELF_RELATIVE | SE_DACL_PRESENT | ctl;
    }
    if let Some(g) = given {
        if let Some(o) = &g.owner {
            sd.owner = Some(o.clone());
        }
        if let Some(gr) = &g.group {
            sd.group = Some(gr.clone());
        }
    }
    Some(sd)
}

/// Whether `token` may make `owner` the owner of a file (MS-DTYP: a SID of
/// the token; root may name anyone, as SeRestorePrivilege allows).
pub fn may_own(token: &Token, owner: &[u8]) -> bool {
    token.root || token.user.as_slice() == owner || token.has(owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handlers::{FILE_EXECUTE, FILE_READ_DATA, FILE_WRITE_DATA, GENERIC_READ};

    fn sd_with(owner: &[u8], dacl: Option<Vec<u8>>, control: u16) -> SecurityDescriptor {
        SecurityDescriptor { control: SE_SELF_RELATIVE | control, owner: Some(owner.to_vec()), group: None, sacl: None, dacl }
    }

    #[test]
    fn unix_sids() {
        assert_eq!(sid_to_uid(&unix_user_sid(1001)), Some(1001));
        assert_eq!(sid_to_gid(&unix_user_sid(1001)), None);
        assert_eq!(sid_to_gid(&unix_group_sid(7)), Some(7));
        assert_eq!(sid_to_uid(&everyone()), None);
        let t = Token::new(Logon::User, 1001, 100, &[100, 27]);
        assert!(t.has(&unix_group_sid(27)) && t.has(&everyone()) && t.has(&sid(5, &[11])));
        assert!(!t.root && !t.has(&unix_user_sid(0)));
    }

    #[test]
    fn dacl_walk() {
        let t = Token::new(Logon::User, 1001, 100, &[]);
        let me = t.user.clone();
        let other = unix_user_sid(2002);
        let ev = everyone();
        // No DACL / NULL DACL: everything.
        assert_eq!(max_allowed(&sd_with(&me, None, 0), &t), ALL_RIGHTS);
        assert_eq!(max_allowed(&sd_with(&me, None, SE_DACL_PRESENT), &t), ALL_RIGHTS);
        // Empty DACL: the owner's implicit rights only, nothing for others.
        let empty = Some(build_acl(&[]));
        assert_eq!(max_allowed(&sd_with(&me, empty.clone(), SE_DACL_PRESENT), &t), READ_CONTROL | WRITE_DAC);
        assert_eq!(max_allowed(&sd_with(&other, empty, SE_DACL_PRESENT), &t), 0);
        // Generic bits mapped; deny before allow wins; allow before deny stays.
        let d = build_acl(&[(ACE_ACCESS_DENIED, 0, FILE_WRITE_DATA, &ev), (ACE_ACCESS_ALLOWED, 0, FILE_ALL_ACCESS, &me)]);
        let g = max_allowed(&sd_with(&other, Some(d), SE_DACL_PRESENT), &t);
        assert_eq!(g, FILE_ALL_ACCESS & !FILE_WRITE_DATA);
        let d = build_acl(&[(ACE_ACCESS_ALLOWED, 0, GENERIC_READ, &me), (ACE_ACCESS_DENIED, 0, FILE_READ_DATA, &me)]);
        assert_eq!(max_allowed(&sd_with(&other, Some(d), SE_DACL_PRESENT), &t), FILE_GENERIC_READ);
        // Inherit-only and CREATOR OWNER ACEs do not apply to the object.
        let d = build_acl(&[(ACE_ACCESS_ALLOWED, INHERIT_ONLY | OBJECT_INHERIT, FILE_ALL_ACCESS, &me), (ACE_ACCESS_ALLOWED, 0, FILE_ALL_ACCESS, &creator_owner())]);
        assert_eq!(max_allowed(&sd_with(&other, Some(d), SE_DACL_PRESENT), &t), 0);
        // OWNER RIGHTS replaces the implicit READ_CONTROL|WRITE_DAC.
        let or = owner_rights();
        let d = build_acl(&[(ACE_ACCESS_ALLOWED, 0, FILE_GENERIC_READ, &me), (ACE_ACCESS_ALLOWED, 0, FILE_WRITE_DATA, &or)]);
        assert_eq!(max_allowed(&sd_with(&me, Some(d.clone()), SE_DACL_PRESENT), &t), FILE_GENERIC_READ | FILE_WRITE_DATA);
        assert_eq!(max_allowed(&sd_with(&other, Some(d), SE_DACL_PRESENT), &t), FILE_GENERIC_READ);
        let d = build_acl(&[(ACE_ACCESS_DENIED, 0, FILE_READ_DATA, &or), (ACE_ACCESS_ALLOWED, 0, FILE_GENERIC_READ, &me)]);
        assert_eq!(max_allowed(&sd_with(&me, Some(d), SE_DACL_PRESENT), &t), FILE_GENERIC_READ & !FILE_READ_DATA);
        // A truncated ACL ends the walk inside its bounds.
        let mut cut = build_acl(&[(ACE_ACCESS_ALLOWED, 0, FILE_READ_DATA, &ev)]);
        cut.truncate(12);
        assert_eq!(max_allowed(&sd_with(&other, Some(cut), SE_DACL_PRESENT), &t), 0);
        let mut huge = build_acl(&[(ACE_ACCESS_ALLOWED, 0, FILE_READ_DATA, &ev)]);
        huge[4] = 0xFF;
        huge[5] = 0xFF;
        assert_eq!(max_allowed(&sd_with(&other, Some(huge), SE_DACL_PRESENT), &t), FILE_READ_DATA);
    }

    #[test]
    fn mode_derived() {
        let t = Token::new(Logon::User, 1001, 100, &[]);
        let other = Token::new(Logon::User, 2002, 200, &[]);
        let member = Token::new(Logon::User, 3003, 300, &[100]);
        let sd = derived_sd(1001, 100, 0o640, false);
        assert_eq!(max_allowed(&sd, &t) & (FILE_READ_DATA | FILE_WRITE_DATA | WRITE_DAC), FILE_READ_DATA | FILE_WRITE_DATA | WRITE_DAC);
        assert_eq!(max_allowed(&sd, &t), FILE_ALL_ACCESS, "the owner who may write has it all");
        assert_eq!(max_allowed(&derived_sd(1001, 100, 0o444, false), &t) & (FILE_WRITE_DATA | FILE_EXECUTE | WRITE_DAC), FILE_EXECUTE | WRITE_DAC);
        assert_eq!(max_allowed(&sd, &member), FILE_GENERIC_READ);
        assert_eq!(max_allowed(&sd, &other), 0, "a private file is closed to others");
        assert_eq!(max_allowed(&derived_sd(1001, 100, 0o755, true), &other), FILE_GENERIC_READ | FILE_GENERIC_EXECUTE);
        assert_eq!(max_allowed(&derived_sd(1001, 100, 0o777, true), &other), FILE_ALL_ACCESS);
    }

    #[test]
    fn set_is_canonical() {
        let me = unix_user_sid(1);
        let d = build_acl(&[(ACE_ACCESS_ALLOWED, 0, GENERIC_READ, &me), (ACE_ACCESS_ALLOWED, INHERIT_ONLY | OBJECT_INHERIT, GENERIC_READ, &me)]);
        let c = canonical_set(&sd_with(&me, Some(d), SE_DACL_PRESENT | SE_DACL_AUTO_INHERITED));
        let list = aces(c.dacl.as_ref().unwrap());
        assert_eq!((list[0].mask, list[1].mask), (FILE_GENERIC_READ, GENERIC_READ));
        assert_eq!(c.control & SE_DACL_AUTO_INHERITED, 0);
        let c = canonical_set(&sd_with(&me, None, SE_DACL_PRESENT | SE_DACL_AUTO_INHERITED | SE_DACL_AUTO_INHERIT_REQ));
        assert_eq!(c.control & (SE_DACL_AUTO_INHERITED | SE_DACL_AUTO_INHERIT_REQ), SE_DACL_AUTO_INHERITED);
    }

    #[test]
    fn inherited_acl_stays_within_64k() {
        // 2000 CREATOR OWNER ACEs with CI|OI split into 4000 on a directory.
        let co = creator_owner();
        let list: Vec<(u8, u8, u32, &[u8])> = (0..2000).map(|_| (ACE_ACCESS_ALLOWED, CONTAINER_INHERIT | OBJECT_INHERIT, FILE_WRITE_DATA, &co[..])).collect();
        let parent = sd_with(&everyone(), Some(build_acl(&list)), SE_DACL_PRESENT);
        let me = unix_user_sid(1);
        let (d, _) = inherited_dacl(&parent, true, &me, &unix_group_sid(1)).unwrap();
        let size = u16::from_le_bytes([d[2], d[3]]) as usize;
        assert_eq!(size, d.len());
        assert!(d.len() <= u16::MAX as usize);
        assert_eq!(aces(&d).len(), u16::from_le_bytes([d[4], d[5]]) as usize);
    }

    #[test]
    fn inheritance() {
        let t = Token::new(Logon::User, 1001, 100, &[]);
        let co = creator_owner();
        let ev = everyone();
        let parent = |flags: u8, control: u16| sd_with(&t.user, Some(build_acl(&[(ACE_ACCESS_ALLOWED, flags, FILE_WRITE_DATA, &co), (ACE_ACCESS_ALLOWED, 0, FILE_ALL_ACCESS, &ev)])), SE_DACL_PRESENT | control);
        // Nothing inheritable.
        assert!(inherited_dacl(&parent(0, 0), false, &t.user, &t.group).is_none());
        assert!(inherited_dacl(&parent(OBJECT_INHERIT | NO_PROPAGATE_INHERIT, 0), true, &t.user, &t.group).is_none());
        // A file: CREATOR OWNER becomes the creator, inherit flags go.
        let (d, c) = inherited_dacl(&parent(OBJECT_INHERIT, 0), false, &t.user, &t.group).unwrap();
        let l = aces(&d);
        assert_eq!((l.len(), l[0].sid, l[0].flags, l[0].mask, c), (1, t.user.as_slice(), 0, FILE_WRITE_DATA, 0));
        // A directory: OI only -> an inherit-only copy for its files.
        let (d, _) = inherited_dacl(&parent(OBJECT_INHERIT, 0), true, &t.user, &t.group).unwrap();
        let l = aces(&d);
        assert_eq!((l.len(), l[0].sid, l[0].flags), (1, co.as_slice(), OBJECT_INHERIT | INHERIT_ONLY));
        // CI with a creator SID splits; CI|NP keeps only the effective ACE.
        let (d, _) = inherited_dacl(&parent(CONTAINER_INHERIT | OBJECT_INHERIT, 0), true, &t.user, &t.group).unwrap();
        let l = aces(&d);
        assert_eq!((l.len(), l[0].sid, l[0].flags, l[1].sid, l[1].flags), (2, t.user.as_slice(), 0, co.as_slice(), CONTAINER_INHERIT | OBJECT_INHERIT | INHERIT_ONLY));
        let (d, _) = inherited_dacl(&parent(CONTAINER_INHERIT | NO_PROPAGATE_INHERIT, 0), true, &t.user, &t.group).unwrap();
        assert_eq!(aces(&d).len(), 1);
        // An auto-inherited parent marks what it passes on.
        let (d, c) = inherited_dacl(&parent(OBJECT_INHERIT, SE_DACL_AUTO_INHERITED), false, &t.user, &t.group).unwrap();
        assert_eq!((aces(&d)[0].flags, c), (INHERITED_ACE, SE_DACL_AUTO_INHERITED));
        // A new file's descriptor: inherited, or the given DACL, owned by the creator.
        let def = || derived_sd(1001, 100, 0o644, false);
        let sd = new_file_sd(Some(&parent(OBJECT_INHERIT, 0)), None, false, &t, def()).unwrap();
        assert_eq!((sd.owner.as_deref(), max_allowed(&sd, &t)), (Some(t.user.as_slice()), FILE_WRITE_DATA | READ_CONTROL | WRITE_DAC));
        assert!(new_file_sd(Some(&parent(0, 0)), None, false, &t, def()).is_none());
        // Only an owner given: the mode's DACL stays.
        let given = SecurityDescriptor { control: SE_SELF_RELATIVE, owner: Some(everyone()), ..Default::default() };
        let sd = new_file_sd(None, Some(&given), false, &t, def()).unwrap();
        assert_eq!((sd.owner, sd.dacl), (Some(everyone()), def().dacl));
    }
}
