//! Which Unix account a session's file operations run as, and the settings
//! that decide it (Samba's names): `[global]` `smb passwd file`,
//! `private dir`, `guest account`; per share `force user`, `force group`,
//! `create mask`, `directory mask`, `force create mode`, `force directory
//! mode`, `inherit permissions`, `read list`, `write list`.
//!
//! The switch itself (per-thread credentials) is in `crate::identity`.

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

use super::IdentityKind;
use crate::identity::Creds;

/// `[global]` account settings.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// `smb passwd file`: the user file (auth/userdb.rs).
    pub passdb: Option<PathBuf>,
    /// `private dir`: where the user file is by default.
    pub private_dir: Option<PathBuf>,
    /// `guest account`: the Unix account of guest and anonymous sessions.
    pub guest_account: String,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig { passdb: None, private_dir: None, guest_account: "nobody".into() }
    }
}

/// Where the user file is when neither `smb passwd file` nor `private dir`
/// says: /var/lib/smbdirect for root, else $XDG_DATA_HOME/smbdirect or
/// ~/.local/share/smbdirect.
pub fn default_private_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/smbdirect");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("smbdirect");
    }
    match std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/smbdirect"),
        None => PathBuf::from(format!("/tmp/smbdirect-{}", rustix::process::geteuid().as_raw())),
    }
}

impl AccountsConfig {
    /// Sets the `[global]` parameter `key` (normalised); `None` if it is not one of these.
    pub fn apply_conf_key(&mut self, key: &str, v: &str) -> Option<Result<(), String>> {
        match key {
            "smbpasswdfile" => self.passdb = Some(PathBuf::from(v)),
            "privatedir" => self.private_dir = Some(PathBuf::from(v)),
            "guestaccount" => {
                if v.trim().is_empty() {
                    return Some(Err("empty guest account".into()));
                }
                self.guest_account = v.trim().to_string();
            }
            _ => return None,
        }
        Some(Ok(()))
    }

    /// The user file.
    pub fn passdb_path(&self) -> PathBuf {
        match (&self.passdb, &self.private_dir) {
            (Some(p), _) => p.clone(),
            (None, Some(d)) => d.join("smbpasswd"),
            (None, None) => default_private_dir().join("smbpasswd"),
        }
    }
}

/// Per-share Unix settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareUnix {
    pub force_user: Option<String>,
    pub force_group: Option<String>,
    /// New files get (0666 & create_mask) | force_create_mode.
    pub create_mask: u32,
    pub force_create_mode: u32,
    /// New directories get (0777 & directory_mask) | force_directory_mode.
    pub directory_mask: u32,
    pub force_directory_mode: u32,
    /// New files and directories take their parent's permissions (files
    /// without the execute bits) instead of the masks.
    pub inherit_permissions: bool,
    /// Users (names, or @group) who may only read, and who may write even
    /// on a read-only share.
    pub read_list: Vec<String>,
    pub write_list: Vec<String>,
}

impl Default for ShareUnix {
    fn default() -> Self {
        // Samba's defaults.
        ShareUnix {
            force_user: None,
            force_group: None,
            create_mask: 0o744,
            force_create_mode: 0,
            directory_mask: 0o755,
            force_directory_mode: 0,
            inherit_permissions: false,
            read_list: Vec::new(),
            write_list: Vec::new(),
        }
    }
}

fn octal(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v.trim(), 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| format!("bad mode {v:?} (want octal, e.g. 0644)"))
}

fn name_list(v: &str) -> Vec<String> {
    v.split([' ', ',', '\t']).filter(|s| !s.is_empty()).map(String::from).collect()
}

impl ShareUnix {
    /// Sets the share parameter `key` (normalised); `None` if it is not one of these.
    pub fn apply_conf_key(&mut self, key: &str, v: &str) -> Option<Result<(), String>> {
        let r = (|| {
            match key {
                "forceuser" => self.force_user = Some(v.trim().to_string()).filter(|s| !s.is_empty()),
                // "+group" in Samba narrows the forcing to members; we force always.
                "forcegroup" | "group" => self.force_group = Some(v.trim().trim_start_matches('+').to_string()).filter(|s| !s.is_empty()),
                "createmask" | "createmode" => self.create_mask = octal(v)?,
                "forcecreatemode" => self.force_create_mode = octal(v)?,
                "directorymask" | "directorymode" => self.directory_mask = octal(v)?,
                "forcedirectorymode" => self.force_directory_mode = octal(v)?,
                "inheritpermissions" => self.inherit_permissions = crate::config::parse_bool(v).ok_or_else(|| format!("bad boolean {v:?}"))?,
                "readlist" => self.read_list = name_list(v),
                "writelist" => self.write_list = name_list(v),
                _ => return Ok(false),
            }
            Ok(true)
        })();
        match r {
            Ok(true) => Some(Ok(())),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// The mode of a new file (`dir` false) or directory whose parent has
    /// mode `parent_mode`.
    pub fn new_mode(&self, dir: bool, parent_mode: u32) -> u32 {
        if self.inherit_permissions {
            let m = parent_mode & 0o7777;
            return if dir { m } else { m & !0o7111 };
        }
        if dir {
            (0o777 & self.directory_mask) | self.force_directory_mode
        } else {
            (0o666 & self.create_mask) | self.force_create_mode
        }
    }

    /// Whether the tree of `user` (with `creds`) is read-only on a share
    /// that is (`share_read_only`) or is not: `read list` makes it so,
    /// `write list` undoes it (Samba checks them in that order).
    pub fn read_only_for(&self, share_read_only: bool, user: &str, creds: Option<&Creds>) -> bool {
        let member = |list: &[String]| list.iter().any(|e| in_list(e, user, creds));
        let mut ro = share_read_only;
        if member(&self.read_list) {
            ro = true;
        }
        if member(&self.write_list) {
            ro = false;
        }
        ro
    }
}

/// Whether a `read list`/`write list` entry (a name, or `@group`/`+group`)
/// names this user.
fn in_list(entry: &str, user: &str, creds: Option<&Creds>) -> bool {
    match entry.strip_prefix(['@', '+', '&']) {
        Some(g) => match (creds, Group::from_name(g)) {
            (Some(c), Ok(Some(grp))) => c.gid == grp.gid.as_raw() || c.groups.contains(&grp.gid.as_raw()),
            _ => false,
        },
        None => entry.eq_ignore_ascii_case(user),
    }
}

/// The credentials of a Unix account: its uid, primary gid and the groups it
/// is a member of.
fn account(u: &User) -> Creds {
    let groups = std::ffi::CString::new(u.name.as_bytes())
        .ok()
        .and_then(|n| nix::unistd::getgrouplist(&n, u.gid).ok())
        .map(|g| g.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|| vec![u.gid.as_raw()]);
    Creds { uid: u.uid.as_raw(), gid: u.gid.as_raw(), groups, name: u.name.clone() }
}

fn by_name(name: &str) -> Result<Creds, String> {
    match User::from_name(name) {
        Ok(Some(u)) => Ok(account(&u)),
        Ok(None) => Err(format!("no Unix account {name:?}")),
        Err(e) => Err(format!("looking up Unix account {name:?}: {e}")),
    }
}

/// The credentials of uid `uid`: its account's if it has one, else the uid
/// with the guest account's group (or 65534) and no other groups.
fn by_uid(uid: u32, guest_account: &str) -> Creds {
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => account(&u),
        _ => {
            let gid = User::from_name(guest_account).ok().flatten().map_or(65534, |g| g.gid.as_raw());
            Creds { uid, gid, groups: vec![gid], name: format!("uid {uid}") }
        }
    }
}

/// What a session's file operations on a share run as. `Ok(None)`: as the
/// server itself (it does not run as root, or a user given in clear text on
/// the command line has no Unix account). `Err`: the tree connect is refused
/// (a forced or guest account that does not exist).
pub fn resolve(kind: IdentityKind, user: &str, uid: Option<u32>, share: &ShareUnix, accounts: &AccountsConfig) -> Result<Option<Creds>, String> {
    if !crate::identity::can_switch() {
        return Ok(None);
    }
    let mut creds = match (kind, uid) {
        (IdentityKind::Guest | IdentityKind::Anonymous, _) => Some(by_name(&accounts.guest_account).map_err(|e| format!("guest account: {e}"))?),
        (IdentityKind::User, Some(uid)) => Some(by_uid(uid, &accounts.guest_account)),
        (IdentityKind::User, None) => match by_name(user) {
            Ok(c) => Some(c),
            Err(e) => {
                // Once per name and process: every tree connect would say it again.
                static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
                let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
                if !said.iter().any(|n| n == user) && said.len() < 1024 {
                    said.push(user.to_string());
                    tracing::warn!("user {user:?} (given in clear text, not in the user file): {e}; served as the server's own user");
                }
                None
            }
        },
    };
    if let Some(fu) = &share.force_user {
        creds = Some(by_name(fu).map_err(|e| format!("force user: {e}"))?);
    }
    if let Some(fg) = &share.force_group {
        let g = match Group::from_name(fg) {
            Ok(Some(g)) => g.gid.as_raw(),
            _ => return Err(format!("force group: no Unix group {fg:?}")),
        };
        let me = crate::identity::server_creds();
        let c = creds.get_or_insert_with(|| me.clone());
        c.gid = g;
        if !c.groups.contains(&g) {
            c.groups.push(g);
        }
    }
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_options() {
        let mut s = ShareUnix::default();
        assert_eq!((s.new_mode(false, 0), s.new_mode(true, 0)), (0o644, 0o755));
        for (k, v) in [("createmask", "0600"), ("directorymask", "0700"), ("forcecreatemode", "040"), ("forceuser", "alice"), ("forcegroup", "+staff"), ("writelist", "bob, @wheel")] {
            s.apply_conf_key(k, v).unwrap().unwrap();
        }
        assert_eq!((s.new_mode(false, 0), s.new_mode(true, 0)), (0o640, 0o700));
        assert_eq!((s.force_user.as_deref(), s.force_group.as_deref()), (Some("alice"), Some("staff")));
        assert!(s.apply_conf_key("createmask", "0999").unwrap().is_err());
        assert!(s.apply_conf_key("path", "/x").is_none());
        s.apply_conf_key("inheritpermissions", "yes").unwrap().unwrap();
        assert_eq!((s.new_mode(false, 0o42775), s.new_mode(true, 0o42775)), (0o664, 0o2775));
        // read list, then write list.
        s.read_list = vec!["Carol".into(), "bob".into()];
        assert!(!s.read_only_for(true, "BOB", None));
        assert!(s.read_only_for(false, "carol", None));
        assert!(!s.read_only_for(false, "dave", None) && s.read_only_for(true, "dave", None));
    }

    #[test]
    fn global_options() {
        let mut a = AccountsConfig::default();
        assert_eq!(a.guest_account, "nobody");
        a.apply_conf_key("privatedir", "/srv/p").unwrap().unwrap();
        assert_eq!(a.passdb_path(), PathBuf::from("/srv/p/smbpasswd"));
        a.apply_conf_key("smbpasswdfile", "/etc/x").unwrap().unwrap();
        assert_eq!(a.passdb_path(), PathBuf::from("/etc/x"));
        assert!(a.apply_conf_key("guestaccount", " ").unwrap().is_err());
    }

    #[test]
    fn new_files_get_the_share_modes_and_delete_follows_the_kernel() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let unix = ShareUnix { create_mask: 0o660, force_create_mode: 0o004, directory_mask: 0o750, ..ShareUnix::default() };
        let root = crate::vfs::ShareRoot::open(dir.path()).unwrap().with_unix(unix.clone());
        drop(root.create_file("f").unwrap());
        root.mkdir("d").unwrap();
        let mode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().mode() & 0o7777;
        // (0o666 & 0o660) | 0o004, whatever the process umask.
        assert_eq!((mode("f"), mode("d")), (0o664, 0o750));
        std::fs::set_permissions(dir.path().join("d"), std::fs::Permissions::from_mode(0o2771)).unwrap();
        let inherit = crate::vfs::ShareRoot::open(dir.path()).unwrap().with_unix(ShareUnix { inherit_permissions: true, ..unix });
        drop(inherit.create_file("d/f").unwrap());
        inherit.mkdir("d/e").unwrap();
        assert_eq!((mode("d/f"), mode("d/e")), (0o660, 0o2771));
        assert!(root.may_delete("f"));
        if !crate::identity::can_switch() {
            return;
        }
        // As another account: a sticky world-writable directory lets it
        // delete its own files only; a closed one nothing.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let other = std::sync::Arc::new(Creds { uid: 4711, gid: 4711, groups: vec![4711], name: "t".into() });
        let _g = crate::identity::Guard::enter(Some(&other)).unwrap();
        drop(root.create_file("mine").unwrap());
        assert_eq!(std::fs::metadata(dir.path().join("mine")).unwrap().uid(), 4711);
        assert!(root.may_delete("mine"));
        assert!(!root.may_delete("f"), "root's file in a sticky directory");
        assert!(!root.may_delete("d/f"), "no write permission on d for others");
        // Times of root's file: if the user may write it (as Windows and
        // Samba allow), whatever the handle; not if it may only read it.
        drop(_g);
        std::fs::set_permissions(dir.path().join("f"), std::fs::Permissions::from_mode(0o666)).unwrap();
        let _g = crate::identity::Guard::enter(Some(&other)).unwrap();
        let ro = root.open_beneath("f", rustix::fs::OFlags::RDONLY).unwrap();
        let t = crate::vfs::unix_to_nt(1_000_000_000, 0);
        crate::vfs::set_times(&ro, 0, 0, t).unwrap();
        drop(_g);
        std::fs::set_permissions(dir.path().join("f"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let _g = crate::identity::Guard::enter(Some(&other)).unwrap();
        assert!(crate::vfs::set_times(&ro, 0, 0, crate::vfs::unix_to_nt(2_000_000_000, 0)).is_err());
        assert_eq!(crate::identity::thread_fs_ids().0, 4711, "back to the user after setting the times");
        assert_eq!(std::fs::metadata(dir.path().join("f")).unwrap().mtime(), 1_000_000_000);
    }

    #[test]
    fn resolves_accounts() {
        let a = AccountsConfig::default();
        let s = ShareUnix::default();
        if !crate::identity::can_switch() {
            assert_eq!(resolve(IdentityKind::User, "root", None, &s, &a), Ok(None));
            return;
        }
        let root = resolve(IdentityKind::User, "root", None, &s, &a).unwrap().unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let guest = resolve(IdentityKind::Guest, "x", None, &s, &a).unwrap().unwrap();
        let nobody = User::from_name("nobody").unwrap().unwrap();
        assert_eq!(guest.uid, nobody.uid.as_raw());
        // A stored uid wins over the name.
        let c = resolve(IdentityKind::User, "root", Some(4242), &s, &a).unwrap().unwrap();
        assert_eq!(c.uid, 4242);
        assert_eq!(resolve(IdentityKind::User, "no-such-unix-user-x", None, &s, &a), Ok(None));
        let forced = ShareUnix { force_user: Some("nobody".into()), force_group: Some("root".into()), ..ShareUnix::default() };
        let c = resolve(IdentityKind::User, "root", Some(4242), &forced, &a).unwrap().unwrap();
        assert_eq!((c.uid, c.gid), (nobody.uid.as_raw(), 0));
        let bad = ShareUnix { force_user: Some("no-such-unix-user-x".into()), ..ShareUnix::default() };
        assert!(resolve(IdentityKind::User, "root", None, &bad, &a).is_err());
        let bad_guest = AccountsConfig { guest_account: "no-such-unix-user-x".into(), ..a };
        assert!(resolve(IdentityKind::Anonymous, "", None, &s, &bad_guest).is_err());
    }
}
