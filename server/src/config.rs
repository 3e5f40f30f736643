//! Server configuration: command-line flags and an smb.conf-style file
//! (`[global]` plus one section per share, Samba's parameter names).
//!
//! Written by hand: no INI crate knows smb.conf's rules (case- and
//! space-insensitive keys, synonyms, yes/no booleans, `\` continuations).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const DIALECT_202: u16 = 0x0202;
pub const DIALECT_210: u16 = 0x0210;
pub const DIALECT_300: u16 = 0x0300;
pub const DIALECT_302: u16 = 0x0302;
pub const DIALECT_311: u16 = 0x0311;
pub const DIALECT_WILDCARD: u16 = 0x02FF;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{file}:{line}: {msg}")]
    Syntax { file: String, line: usize, msg: String },
    #[error("cannot read {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A three-way setting as in Samba: off, allowed/if the client wants, required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Disabled,
    Enabled,
    Required,
}

#[derive(Debug, Clone)]
pub struct ShareConfig {
    pub name: String,
    pub path: PathBuf,
    pub read_only: bool,
    pub guest_ok: bool,
    pub valid_users: Vec<String>,
    pub encrypt: Setting,
    pub comment: String,
    /// Samba's per-share `max connections`: tree connects to this share
    /// across the server; 0 = no limit.
    pub max_connections: usize,
    /// `oplocks`: grant oplocks on this share.
    pub oplocks: bool,
    /// `level2 oplocks`: grant (and break to) level II oplocks.
    pub level2_oplocks: bool,
    /// Unix identity settings: `force user`, `create mask`... (auth/unix.rs).
    pub unix: crate::auth::unix::ShareUnix,
    /// `durable handles`: grant durable handles (v1/v2, MS-SMB2 3.3.5.9.6,
    /// 3.3.5.9.10): an open that keeps its batch oplock survives a lost
    /// connection for its timeout (handlers/durable.rs).
    pub durable_handles: bool,
    /// `kernel oplocks` (Samba's, default no): back the oplocks and leases
    /// granted on this share with Linux file leases, so that another
    /// program opening or changing the file breaks them (kernel_oplock.rs).
    pub kernel_oplocks: bool,
}

impl ShareConfig {
    pub fn new(name: &str, path: impl Into<PathBuf>) -> Self {
        ShareConfig {
            name: name.to_string(),
            path: path.into(),
            read_only: false,
            guest_ok: false,
            valid_users: Vec::new(),
            encrypt: Setting::Enabled,
            comment: String::new(),
            max_connections: 0,
            oplocks: true,
            level2_oplocks: true,
            durable_handles: true,
            kernel_oplocks: false,
            unix: Default::default(),
        }
    }

    pub fn user_allowed(&self, user: &str) -> bool {
        self.valid_users.is_empty() || self.valid_users.iter().any(|u| u.eq_ignore_ascii_case(user))
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub netbios_name: String,
    pub workgroup: String,
    pub shares: Vec<ShareConfig>,
    /// (name, password) pairs; hashed into the user database at start.
    pub users: Vec<(String, String)>,
    pub signing: Setting,
    pub encrypt: Setting,
    pub min_protocol: u16,
    pub max_protocol: u16,
    pub max_credits: u16,
    pub guest_ok_anonymous: bool,
    pub map_to_guest: bool,
    pub max_read_size: u32,
    pub max_write_size: u32,
    pub max_transact_size: u32,
    pub limits: Limits,
    /// Samba's `smbd:FSCTL_SMBTORTURE`: answer the test-only FSCTLs smbtorture
    /// uses to change server behaviour (off by default).
    pub smbtorture_fsctls: bool,
    /// SMB Direct: whether and how `serve` starts the rdma-proxy.
    pub rdma: crate::rdma::RdmaConfig,
    /// Multichannel. `server multi channel support` (default yes): session
    /// binding and FSCTL_QUERY_NETWORK_INTERFACE_INFO.
    pub multi_channel: bool,
    /// `interfaces`: the network interfaces (names, shell-style patterns
    /// with `*`, or addresses with an optional /prefix) that
    /// FSCTL_QUERY_NETWORK_INTERFACE_INFO lists; empty = all.
    pub interfaces: Vec<String>,

    /// Worker processes and the state directory (`supervisor.rs`).
    pub procs: crate::supervisor::ProcessConfig,

    /// `smb2 leases` (default yes): grant SMB2 leases (SMB 2.1: version 1;
    /// SMB 3.x: versions 1 and 2).
    pub smb2_leases: bool,
    /// `smb3 directory leases` (Samba's, default yes as in a non-clustered
    /// Samba): advertise SMB2_GLOBAL_CAP_DIRECTORY_LEASING to 3.x clients and
    /// grant R/RH leases (version 2) on directories (handlers/lease.rs).
    pub smb3_directory_leases: bool,

    /// The user file and the guest account (auth/unix.rs).
    pub accounts: crate::auth::unix::AccountsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["0.0.0.0:445".parse().expect("static address")],
            netbios_name: default_hostname(),
            workgroup: "WORKGROUP".to_string(),
            shares: Vec::new(),
            users: Vec::new(),
            signing: Setting::Enabled,
            encrypt: Setting::Enabled,
            min_protocol: DIALECT_202,
            max_protocol: DIALECT_311,
            max_credits: 512,
            guest_ok_anonymous: false,
            map_to_guest: false,
            max_read_size: 8 * 1024 * 1024,
            max_write_size: 8 * 1024 * 1024,
            max_transact_size: 8 * 1024 * 1024,
            limits: Limits::default(),
            smbtorture_fsctls: false,
            rdma: crate::rdma::RdmaConfig::default(),
            multi_channel: true,
            interfaces: Vec::new(),

            procs: crate::supervisor::ProcessConfig::default(),

            smb2_leases: true,
            smb3_directory_leases: true,

            accounts: Default::default(),
        }
    }
}

/// Resource caps and timeouts: what one client (or a flood of them) may hold.
/// A count of 0 means no limit, a timeout of 0 means none (as in Samba).
/// The README's options section lists each with its smb.conf name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `max smbd processes`: TCP connections in all (Samba forks one smbd per
    /// connection, so its process cap is our connection cap).
    pub max_connections: usize,
    /// `max connections per client address`: TCP connections from one IP address.
    pub max_connections_per_address: usize,
    /// `negotiate timeout` (seconds): a connection must have its NEGOTIATE
    /// answered this long after it was accepted.
    pub negotiate_timeout: std::time::Duration,
    /// `session setup timeout` (seconds): a connection without an
    /// authenticated session (from its start, or since its last session
    /// ended) is closed after this long, and an unfinished SESSION_SETUP
    /// exchange is dropped this long after it began.
    pub session_setup_timeout: std::time::Duration,
    /// `deadtime` (minutes in smb.conf): an authenticated connection with no
    /// open files and no pending request that sends nothing for this long is closed.
    pub deadtime: std::time::Duration,
    /// `io timeout` (seconds): once the first byte of a message has arrived
    /// the whole message must arrive within this, and one response must be
    /// taken by the client within this (a slow reader or writer is closed).
    pub io_timeout: std::time::Duration,
    /// `max sessions per connection`, authenticated and in progress.
    pub max_sessions_per_connection: usize,
    /// `max session setups in progress per connection`.
    pub max_pending_setups_per_connection: usize,
    /// `max session setups in progress`: unfinished exchanges in all.
    pub max_pending_setups: usize,
    /// `max tree connects per session`.
    pub max_trees_per_session: usize,
    /// `max open files`: opens per session (Windows counts per session too,
    /// SERVER_INFO_1501 sv1501_sessopens; Samba per smbd process).
    pub max_open_files: usize,
    /// `max locks per open`: byte-range locks one open holds.
    pub max_locks_per_open: usize,
    /// `max async requests per connection`: blocking locks and change
    /// notifications waiting at once.
    pub max_async_per_connection: usize,
    /// `max in flight per connection` (ours): plain READs/WRITEs of one TCP
    /// connection handed to the I/O pool at once (also bounded by the
    /// credits granted). 1 (the default) handles them one at a time on the
    /// connection's thread: on a 2-core host shared with smbclient, 4 in
    /// flight (2026-11-27, 256 MiB, medians of 3 interleaved) made plain gets
    /// slower (977 vs 1463 MiB/s) and cost more CPU per GiB in all four cases
    /// (plain put 0.68 vs 0.52, get 0.44 vs 0.28, encrypted put 1.00 vs 0.96,
    /// get 0.84 vs 0.68), though encrypted transfers ran faster (put 478 vs
    /// 343, get 795 vs 597 MiB/s): each READ/WRITE crosses three threads.
    /// Re-measured 2026-11-27 23:06 and 23:09 (README, "How it compares"): 4 in
    /// flight still cost more CPU per GiB in plain and encrypted gets in both
    /// runs, and in encrypted put in one of the two.
    pub max_in_flight_per_connection: usize,
    /// `max send queue` (bytes): responses of one connection waiting to be sent.
    pub max_send_queue: usize,
    /// Largest message accepted before the connection has an authenticated
    /// session (NEGOTIATE and SESSION_SETUP only: a security blob is at most 64 KiB).
    pub max_unauthenticated_message: usize,
    /// `max async requests`: blocking locks and change notifications waiting
    /// at once on all connections (over it: INSUFFICIENT_RESOURCES).
    pub max_async: usize,
    /// `max change notify watches per session`: handles of one session
    /// watched by CHANGE_NOTIFY (each holds inotify watches, of which the
    /// kernel allows each user a limited number, fs.inotify.max_user_watches;
    /// the process has one inotify instance for all of them).
    pub max_notify_watches_per_session: usize,

    /// `oplock break timeout` (seconds): how long a CREATE waits for the
    /// holder to acknowledge an oplock break before the break is taken as
    /// done (35 s in Windows).
    pub oplock_break_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        use std::time::Duration;
        Limits {
            max_connections: 1024,
            max_connections_per_address: 64,
            negotiate_timeout: Duration::from_secs(30),
            session_setup_timeout: Duration::from_secs(60),
            deadtime: Duration::ZERO,
            io_timeout: Duration::from_secs(120),
            max_sessions_per_connection: 64,
            max_pending_setups_per_connection: 16,
            max_pending_setups: 4096,
            max_trees_per_session: 1024,
            max_open_files: 16384,
            max_locks_per_open: 1024,
            max_async_per_connection: 256,
            max_in_flight_per_connection: 1,
            max_send_queue: 64 << 20,
            max_unauthenticated_message: 128 << 10,
            max_async: 8192,
            max_notify_watches_per_session: 16,

            oplock_break_timeout: Duration::from_secs(35),
        }
    }
}

impl Limits {
    /// `n` is within the cap `max` (0 = no cap)?
    pub fn under(n: usize, max: usize) -> bool {
        max == 0 || n < max
    }
}

fn default_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_uppercase())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "SMBDIRECT".to_string())
}

/// Samba normalises parameter names: lower case, no spaces or underscores.
fn norm_key(k: &str) -> String {
    k.chars().filter(|c| !c.is_whitespace() && *c != '_').flat_map(|c| c.to_lowercase()).collect()
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Some(true),
        "no" | "false" | "0" | "off" => Some(false),
        _ => None,
    }
}

fn parse_setting(v: &str) -> Option<Setting> {
    match v.trim().to_ascii_lowercase().as_str() {
        "required" | "mandatory" | "force" => Some(Setting::Required),
        "auto" | "default" | "if_required" | "desired" | "enabled" | "yes" | "true" | "on" => Some(Setting::Enabled),
        "disabled" | "off" | "no" | "false" => Some(Setting::Disabled),
        _ => None,
    }
}

pub fn parse_protocol(v: &str) -> Option<u16> {
    match v.trim().to_ascii_uppercase().as_str() {
        "SMB2" | "SMB2_02" | "NT1" | "CORE" | "LANMAN1" | "LANMAN2" | "COREPLUS" => Some(DIALECT_202),
        "SMB2_10" => Some(DIALECT_210),
        "SMB3_00" => Some(DIALECT_300),
        "SMB3_02" => Some(DIALECT_302),
        "SMB3" | "SMB3_11" | "DEFAULT" => Some(DIALECT_311),
        _ => None,
    }
}

/// Parsed smb.conf: section name -> ordered (normalised key, value).
pub fn parse_ini(text: &str, file: &str) -> Result<Vec<(String, Vec<(String, String, usize)>)>, ConfigError> {
    let mut sections: Vec<(String, Vec<(String, String, usize)>)> = Vec::new();
    let mut pending = String::new();
    let mut pending_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = raw.trim_end();
        if pending.is_empty() {
            pending_line = lineno;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let full = std::mem::take(&mut pending);
        let t = full.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| ConfigError::Syntax {
                file: file.into(),
                line: pending_line,
                msg: "section header without ']'".into(),
            })?;
            sections.push((name.trim().to_string(), Vec::new()));
            continue;
        }
        let (k, v) = t.split_once('=').ok_or_else(|| ConfigError::Syntax {
            file: file.into(),
            line: pending_line,
            msg: format!("expected 'name = value', got {t:?}"),
        })?;
        let Some(sec) = sections.last_mut() else {
            return Err(ConfigError::Syntax { file: file.into(), line: pending_line, msg: "parameter outside a section".into() });
        };
        sec.1.push((norm_key(k), v.trim().to_string(), pending_line));
    }
    Ok(sections)
}

impl ServerConfig {
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io(path.display().to_string(), e))?;
        self.apply_conf(&text, &path.display().to_string())
    }

    pub fn apply_conf(&mut self, text: &str, file: &str) -> Result<(), ConfigError> {
        let bad = |line: usize, msg: String| ConfigError::Syntax { file: file.into(), line, msg };
        for (section, params) in parse_ini(text, file)? {
            if section.eq_ignore_ascii_case("global") {
                for (k, v, line) in params {
                    match k.as_str() {
                        "serversigning" => self.signing = parse_setting(&v).ok_or_else(|| bad(line, format!("bad value {v:?} for server signing")))?,
                        "smbencrypt" | "serversmbencrypt" | "encryptdata" => {
                            self.encrypt = parse_setting(&v).ok_or_else(|| bad(line, format!("bad value {v:?} for {k}")))?
                        }
                        "serverminprotocol" | "minprotocol" => self.min_protocol = parse_protocol(&v).ok_or_else(|| bad(line, format!("unknown protocol {v:?}")))?,
                        "servermaxprotocol" | "maxprotocol" | "protocol" => {
                            self.max_protocol = parse_protocol(&v).ok_or_else(|| bad(line, format!("unknown protocol {v:?}")))?
                        }
                        "netbiosname" => self.netbios_name = v.to_uppercase(),
                        "workgroup" => self.workgroup = v.to_uppercase(),
                        "maptoguest" => self.map_to_guest = v.eq_ignore_ascii_case("bad user"),
                        "servermultichannelsupport" => self.multi_channel = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "smb2leases" => self.smb2_leases = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "smb3directoryleases" => self.smb3_directory_leases = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "interfaces" => self.interfaces = v.split([' ', ',', '\t']).filter(|s| !s.is_empty()).map(String::from).collect(),
                        "smbd:fsctlsmbtorture" => self.smbtorture_fsctls = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "smb2maxcredits" => self.max_credits = v.parse().map_err(|_| bad(line, format!("bad number {v:?}")))?,
                        "smb2maxread" => self.max_read_size = v.parse().map_err(|_| bad(line, format!("bad number {v:?}")))?,
                        "smb2maxwrite" => self.max_write_size = v.parse().map_err(|_| bad(line, format!("bad number {v:?}")))?,
                        "smb2maxtrans" => self.max_transact_size = v.parse().map_err(|_| bad(line, format!("bad number {v:?}")))?,
                        k if self.limits.set(k, &v).map_err(|m| bad(line, m))? => {}
                        "smbports" | "listen" => {
                            let mut l = Vec::new();
                            for part in v.split([' ', ',']).filter(|s| !s.is_empty()) {
                                let addr = if let Ok(port) = part.parse::<u16>() {
                                    SocketAddr::from(([0, 0, 0, 0], port))
                                } else {
                                    part.parse().map_err(|_| bad(line, format!("bad listen address {part:?}")))?
                                };
                                l.push(addr);
                            }
                            self.listen = l;
                        }
                        other => match self.rdma.apply_conf_key(other, &v).or_else(|| self.procs.apply_conf_key(other, &v)).or_else(|| self.accounts.apply_conf_key(other, &v)) {
                            Some(r) => r.map_err(|m| bad(line, m))?,
                            None => tracing::warn!("{file}:{line}: unknown global parameter {other:?} ignored"),
                        },
                    }
                }
            } else {
                let mut share = ShareConfig::new(&section, "");
                for (k, v, line) in params {
                    match k.as_str() {
                        "path" => share.path = PathBuf::from(v),
                        "readonly" => share.read_only = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "writeable" | "writable" | "write ok" => {
                            share.read_only = !parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?
                        }
                        "guestok" | "public" => share.guest_ok = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "validusers" => share.valid_users = v.split([' ', ',']).filter(|s| !s.is_empty()).map(String::from).collect(),
                        "smbencrypt" | "encryptdata" | "serversmbencrypt" => {
                            share.encrypt = parse_setting(&v).ok_or_else(|| bad(line, format!("bad value {v:?}")))?
                        }
                        "comment" => share.comment = v,
                        "maxconnections" => share.max_connections = parse_count(&v).map_err(|m| bad(line, m))?,
                        "oplocks" => share.oplocks = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "level2oplocks" => share.level2_oplocks = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "durablehandles" => share.durable_handles = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        "kerneloplocks" => share.kernel_oplocks = parse_bool(&v).ok_or_else(|| bad(line, format!("bad boolean {v:?}")))?,
                        other => match share.unix.apply_conf_key(other, &v) {
                            Some(r) => r.map_err(|m| bad(line, m))?,
                            None => tracing::warn!("{file}:{line}: unknown share parameter {other:?} ignored"),
                        },
                    }
                }
                if share.path.as_os_str().is_empty() {
                    return Err(ConfigError::Invalid(format!("share [{section}] has no path")));
                }
                self.shares.retain(|s| !s.name.eq_ignore_ascii_case(&section));
                self.shares.push(share);
            }
        }
        if self.min_protocol > self.max_protocol {
            return Err(ConfigError::Invalid("server min protocol is above server max protocol".into()));
        }
        Ok(())
    }

    pub fn share(&self, name: &str) -> Option<&ShareConfig> {
        self.shares.iter().find(|s| s.name.eq_ignore_ascii_case(name))
    }

    pub fn dialect_allowed(&self, d: u16) -> bool {
        d >= self.min_protocol && d <= self.max_protocol
    }
}

fn parse_count(v: &str) -> Result<usize, String> {
    v.trim().parse().map_err(|_| format!("bad number {v:?}"))
}

fn parse_secs(v: &str, unit: u64) -> Result<std::time::Duration, String> {
    let n: u64 = v.trim().parse().map_err(|_| format!("bad number {v:?}"))?;
    Ok(std::time::Duration::from_secs(n.saturating_mul(unit)))
}

impl Limits {
    /// Sets the `[global]` parameter `key` (normalised) if it is one of the
    /// limits; `Ok(false)` when it is not.
    fn set(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "maxsmbdprocesses" => self.max_connections = parse_count(v)?,
            "maxconnectionsperclientaddress" => self.max_connections_per_address = parse_count(v)?,
            "negotiatetimeout" => self.negotiate_timeout = parse_secs(v, 1)?,
            "sessionsetuptimeout" => self.session_setup_timeout = parse_secs(v, 1)?,
            "deadtime" => self.deadtime = parse_secs(v, 60)?,
            "iotimeout" => self.io_timeout = parse_secs(v, 1)?,
            "maxsessionsperconnection" => self.max_sessions_per_connection = parse_count(v)?,
            "maxsessionsetupsinprogressperconnection" => self.max_pending_setups_per_connection = parse_count(v)?,
            "maxsessionsetupsinprogress" => self.max_pending_setups = parse_count(v)?,
            "maxtreeconnectspersession" => self.max_trees_per_session = parse_count(v)?,
            "maxopenfiles" => self.max_open_files = parse_count(v)?,
            "maxlocksperopen" => self.max_locks_per_open = parse_count(v)?,
            "maxasyncrequestsperconnection" => self.max_async_per_connection = parse_count(v)?,
            "maxinflightperconnection" => self.max_in_flight_per_connection = parse_count(v)?,
            "maxsendqueue" => self.max_send_queue = parse_count(v)?,
            "maxasyncrequests" => self.max_async = parse_count(v)?,
            "maxchangenotifywatchespersession" => self.max_notify_watches_per_session = parse_count(v)?,

            "oplockbreaktimeout" => self.oplock_break_timeout = parse_secs(v, 1)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `NAME=PATH` from the command line.
pub fn parse_share_flag(s: &str) -> Result<ShareConfig, ConfigError> {
    let (n, p) = s.split_once('=').ok_or_else(|| ConfigError::Invalid(format!("--share wants NAME=PATH, got {s:?}")))?;
    if n.is_empty() || n.eq_ignore_ascii_case("IPC$") || n.contains(['\\', '/']) {
        return Err(ConfigError::Invalid(format!("bad share name {n:?}")));
    }
    Ok(ShareConfig::new(n, p))
}

pub fn parse_user_flag(s: &str) -> Result<(String, String), ConfigError> {
    let (n, p) = s.split_once(':').ok_or_else(|| ConfigError::Invalid(format!("--user wants NAME:PASSWORD, got {s:?}")))?;
    if n.is_empty() {
        return Err(ConfigError::Invalid("empty user name".into()));
    }
    Ok((n.to_string(), p.to_string()))
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samba_style() {
        let mut c = ServerConfig::default();
        c.apply_conf(
            "[global]\n  server signing = mandatory\n smb2 max credits = 8192\n smbd:FSCTL_SMBTORTURE = yes\n server_min_protocol = SMB3_00\n smb encrypt = required\n\n[data]\n path = /srv/d\n read only = yes\n valid users = a, b\n\n[Pub]\npath=/tmp\\\n/x\nguest ok = yes\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.signing, Setting::Required);
        assert_eq!(c.encrypt, Setting::Required);
        assert_eq!(c.min_protocol, DIALECT_300);
        assert_eq!(c.max_credits, 8192);
        assert!(c.smbtorture_fsctls && !ServerConfig::default().smbtorture_fsctls);
        let d = c.share("DATA").unwrap();
        assert!(d.read_only);
        assert!(d.user_allowed("A") && !d.user_allowed("c"));
        assert_eq!(c.share("pub").unwrap().path, PathBuf::from("/tmp /x"));
    }

    #[test]
    fn parses_durable_handles() {
        let mut c = ServerConfig::default();
        c.apply_conf("[a]\n path = /a\n[b]\n path = /b\n durable handles = no\n", "t").unwrap();
        assert!(c.share("a").unwrap().durable_handles);
        assert!(!c.share("b").unwrap().durable_handles);
        assert!(c.apply_conf("[c]\n path = /c\n durable handles = perhaps\n", "t").is_err());
    }

    #[test]
    fn parses_limits() {
        let mut c = ServerConfig::default();
        c.apply_conf(
            "[global]\n max smbd processes = 10\n max connections per client address = 2\n negotiate timeout = 3\n session setup timeout = 4\n deadtime = 15\n io timeout = 5\n max sessions per connection = 6\n max session setups in progress per connection = 7\n max session setups in progress = 8\n max tree connects per session = 9\n max open files = 11\n max locks per open = 12\n max async requests per connection = 13\n max send queue = 14\n max async requests = 15\n max change notify watches per session = 16\n[s]\n path = /x\n max connections = 3\n",
            "t",
        )
        .unwrap();
        let l = &c.limits;
        let s = std::time::Duration::from_secs;
        assert_eq!((l.max_connections, l.max_connections_per_address), (10, 2));
        assert_eq!((l.negotiate_timeout, l.session_setup_timeout, l.deadtime, l.io_timeout), (s(3), s(4), s(15 * 60), s(5)));
        assert_eq!((l.max_sessions_per_connection, l.max_pending_setups_per_connection, l.max_pending_setups), (6, 7, 8));
        assert_eq!((l.max_trees_per_session, l.max_open_files, l.max_locks_per_open), (9, 11, 12));
        assert_eq!((l.max_async_per_connection, l.max_send_queue), (13, 14));
        assert_eq!((l.max_async, l.max_notify_watches_per_session), (15, 16));
        assert_eq!(c.share("s").unwrap().max_connections, 3);
        let e = c.apply_conf("[global]\nmax open files = many\n", "f").unwrap_err();
        assert!(e.to_string().contains("f:2"), "{e}");
        assert!(Limits::under(5, 0) && Limits::under(1, 2) && !Limits::under(2, 2));
    }

    #[test]
    fn parses_multichannel_settings() {
        let mut c = ServerConfig::default();
        assert!(c.multi_channel && c.interfaces.is_empty());
        c.apply_conf("[global]\n server multi channel support = no\n interfaces = eth0, 10.0.0.0/8 lo\n", "t").unwrap();
        assert!(!c.multi_channel);
        assert_eq!(c.interfaces, vec!["eth0", "10.0.0.0/8", "lo"]);
        assert!(c.apply_conf("[global]\nserver multi channel support = perhaps\n", "t").is_err());
    }

    #[test]
    fn reports_errors_with_lines() {
        let mut c = ServerConfig::default();
        let e = c.apply_conf("[global]\nserver signing = sometimes\n", "f").unwrap_err();
        assert!(e.to_string().contains("f:2"), "{e}");
        assert!(c.apply_conf("x = 1\n", "f").is_err());
        assert!(c.apply_conf("[s]\nread only = yes\n", "f").is_err());
    }
}
