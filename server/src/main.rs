//! `smbdirect serve` (the file server: a supervisor and its worker
//! processes), `smbdirect worker` (one worker, started by serve),
//! `smbdirect status` and `smbdirect user` (the user file).

use clap::{Parser, Subcommand};
use smbdirect_server::config::{self, ServerConfig, ShareConfig};
use smbdirect_server::{listener, objects::Server, supervisor};
use std::sync::Arc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "smbdirect", version, about = "SMB 3.1.1 file server built for SMB Direct")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve shares. With no flags: share `share` at ./share, one generated user, port 445.
    Serve(ServeArgs),
    /// One worker process (started by `serve`, not by hand).
    #[command(hide = true)]
    Worker {
        #[arg(long = "worker-id")]
        worker_id: u32,
        #[arg(long = "control-fd")]
        control_fd: i32,
        #[arg(long = "rdma-fd")]
        rdma_fd: i32,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// What a running server is doing: workers, clients, channels, sessions,
    /// tree connects, open files and locks (asks `serve` on its status socket).
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// The server's state directory (default as `serve`'s).
        #[arg(long = "state-dir", value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The server's smb.conf, to find its `state directory`.
        #[arg(long = "config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Manage the users in the user file (NT hashes in Samba's smbpasswd format,
    /// by default /var/lib/smbdirect/smbpasswd; smb.conf: smb passwd file, private dir).
    /// A running server picks up changes at the next logon.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        /// The user file (default: from --config, else the default path).
        #[arg(long = "file", value_name = "FILE", global = true)]
        file: Option<PathBuf>,
        /// The server's smb.conf, to find its user file.
        #[arg(long = "config", value_name = "FILE", global = true)]
        config: Option<PathBuf>,
    },
    /// Benchmark an SMB server with smbdirect's own client: runs `smbdirect-bench` from
    /// this executable's directory with the arguments (see `smbdirect bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add a user (or set the password and uid of an existing one), like
    /// `smbpasswd -a NAME`. Its files are accessed as the Unix account NAME,
    /// or as uid N with --uid.
    Add {
        name: String,
        /// The Unix uid the user's file operations run as (default: the
        /// uid of the Unix account of the same name).
        #[arg(long)]
        uid: Option<u32>,
        /// Read the password from one line of standard input (scripts).
        #[arg(long = "password-stdin")]
        password_stdin: bool,
    },
    /// Remove a user (`smbpasswd -x NAME`).
    Del { name: String },
    /// List the users: name, uid, Unix account, flags.
    List,
    /// Change a user's password (`smbpasswd NAME`).
    Passwd {
        name: String,
        /// Read the password from one line of standard input (scripts).
        #[arg(long = "password-stdin")]
        password_stdin: bool,
    },
    /// Add the users of an smbpasswd file or of `pdbedit -L -w` output
    /// (FILE, or - for standard input); users already here are replaced.
    Import { from: PathBuf },
}

#[derive(clap::Args, Clone)]
struct ServeArgs {
    /// Address to listen on (repeatable), e.g. 0.0.0.0:445 or 127.0.0.1:0 for an ephemeral port.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// A share (repeatable).
    #[arg(long = "share", value_name = "NAME=PATH")]
    share: Vec<String>,
    /// A user (repeatable).
    #[arg(long = "user", value_name = "NAME:PASSWORD")]
    user: Vec<String>,
    /// smb.conf-style configuration file.
    #[arg(long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// SMB Direct: auto (start the RDMA proxy when an RDMA device exists), on, or off
    /// (smb.conf: smbdirect:rdma).
    #[arg(long = "rdma", value_name = "auto|on|off")]
    rdma: Option<String>,
    /// The rdma-proxy binary (default: next to smbdirect; smb.conf: smbdirect:rdma proxy).
    #[arg(long = "rdma-proxy", value_name = "PATH")]
    rdma_proxy: Option<PathBuf>,
    /// SMB Direct MaxReadWriteSize, e.g. 1M or 8M (smb.conf: smbd max io size).
    #[arg(long = "smbd-max-io-size", value_name = "SIZE")]
    smbd_max_io_size: Option<String>,
    /// Worker processes (smb.conf: max workers).
    #[arg(long = "max-workers", value_name = "N")]
    max_workers: Option<String>,
    /// State directory: status socket, shared state (smb.conf: state directory).
    #[arg(long = "state-dir", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

fn random_password() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    const A: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    b.iter().map(|x| A[*x as usize % A.len()] as char).collect()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Worker { worker_id, control_fd, rdma_fd, serve } => match build_config(&serve) {
            Ok(cfg) => smbdirect_server::worker::run(cfg, smbdirect_server::worker::WorkerArgs { worker_id, control_fd, rdma_fd }),
            Err(code) => code,
        },
        Cmd::Status { json, state_dir, config } => status(json, state_dir, config),
        Cmd::Bench { args } => bench(args),
        Cmd::User { cmd, file, config } => user(cmd, file, config),
    }
}

/// A new password: one line of standard input with `--password-stdin` or
/// when standard input is not a terminal, else asked twice without echo.
fn read_password(from_stdin: bool) -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let pw = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read the password: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        let a = rpassword::prompt_password("New SMB password: ").map_err(|e| format!("cannot read the password: {e}"))?;
        let b = rpassword::prompt_password("Retype new SMB password: ").map_err(|e| format!("cannot read the password: {e}"))?;
        if a != b {
            return Err("the passwords do not match".into());
        }
        a
    };
    if pw.is_empty() {
        return Err("empty password refused".into());
    }
    Ok(pw)
}

fn unix_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map_or_else(|| "-".into(), |u| u.name)
}

/// `smbdirect user ...`: edits the user file under its lock.
fn user(cmd: UserCmd, file: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    use smbdirect_server::auth::{nt_hash, valid_user_name, UserDb, UserDbError};
    let mut cfg = ServerConfig::default();
    if let Some(f) = &config {
        if let Err(e) = cfg.load_file(f) {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(2);
        }
    }
    let path = file.unwrap_or_else(|| cfg.accounts.passdb_path());
    let fail = |msg: String| {
        eprintln!("smbdirect user: {msg}");
        ExitCode::from(1)
    };
    let r = match cmd {
        UserCmd::Add { name, uid, password_stdin } => {
            if !valid_user_name(&name) {
                return fail(format!("bad user name {name:?}"));
            }
            let uid = match uid {
                Some(u) => u,
                None => match nix::unistd::User::from_name(&name) {
                    Ok(Some(u)) => u.uid.as_raw(),
                    _ => return fail(format!("no Unix account {name:?}: create one (useradd) or give --uid N")),
                },
            };
            let pw = match read_password(password_stdin) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            UserDb::update(&path, |db| {
                let existed = db.lookup(&name).is_some();
                db.add_user(&name, nt_hash(&pw), uid);
                Ok(existed)
            })
            .map(|existed| println!("{} user {name} (uid {uid}) in {}", if existed { "updated" } else { "added" }, path.display()))
        }
        UserCmd::Del { name } => UserDb::update(&path, |db| {
            if db.remove(&name) {
                Ok(())
            } else {
                Err(UserDbError::Invalid(format!("no user {name:?} in {}", path.display())))
            }
        })
        .map(|()| println!("deleted user {name} from {}", path.display())),
        UserCmd::Passwd { name, password_stdin } => {
            match UserDb::load(&path) {
                Ok(db) if db.lookup(&name).is_none() => return fail(format!("no user {name:?} in {} (add it with `smbdirect user add`)", path.display())),
                Err(e) => return fail(e.to_string()),
                Ok(_) => {}
            }
            let pw = match read_password(password_stdin) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            UserDb::update(&path, |db| {
                if db.set_nt_hash(&name, nt_hash(&pw)) {
                    Ok(())
                } else {
                    Err(UserDbError::Invalid(format!("no user {name:?} in {}", path.display())))
                }
            })
            .map(|()| println!("password of {name} changed"))
        }
        UserCmd::List => UserDb::load(&path).map(|db| {
            println!("{:<20} {:>8}  {:<16} {}", "NAME", "UID", "UNIX ACCOUNT", "FLAGS");
            for e in db.entries() {
                let uid = e.uid().unwrap_or(0);
                println!("{:<20} {:>8}  {:<16} {}", e.name(), uid, unix_name(uid), if e.disabled() { "disabled" } else { "" });
            }
        }),
        UserCmd::Import { from } => {
            let text = if from.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
            } else {
                std::fs::read_to_string(&from)
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => return fail(format!("{}: {e}", from.display())),
            };
            let incoming = match UserDb::parse(&text, &from.display().to_string()) {
                Ok(db) => db,
                Err(e) => return fail(e.to_string()),
            };
            UserDb::update(&path, |db| {
                for e in incoming.entries() {
                    db.add_entry(e.clone());
                }
                Ok(incoming.len())
            })
            .map(|n| println!("imported {n} user(s) into {}", path.display()))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.to_string()),
    }
}

/// Replaces this process with `smbdirect-bench` (a separate crate and binary: the client
/// depends on the server's codecs, so the server cannot depend on it).
fn bench(args: Vec<std::ffi::OsString>) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join("smbdirect-bench")));
    let Some(exe) = exe.filter(|p| p.exists()) else {
        eprintln!("smbdirect: smbdirect-bench is not next to this executable (cargo build -p smbdirect-bench)");
        return ExitCode::FAILURE;
    };
    let err = std::process::Command::new(&exe).args(args).exec();
    eprintln!("smbdirect: cannot run {}: {err}", exe.display());
    ExitCode::FAILURE
}

fn status(json: bool, state_dir: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    let mut cfg = ServerConfig::default();
    if let Some(f) = &config {
        if let Err(e) = cfg.load_file(f) {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(2);
        }
    }
    let dir = state_dir.or(cfg.procs.state_dir).unwrap_or_else(supervisor::default_state_dir);
    match smbdirect_server::status::query(&dir) {
        Ok(v) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", smbdirect_server::status::render(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smbdirect status: {e}");
            ExitCode::from(1)
        }
    }
}

/// The configuration from `serve`'s flags and smb.conf (users as given: a
/// generated one is added by `serve`).
fn build_config(a: &ServeArgs) -> Result<ServerConfig, ExitCode> {
    let fail = |msg: String| {
        eprintln!("smbdirect: {msg}");
        ExitCode::from(2)
    };
    let mut cfg = ServerConfig::default();
    if let Some(f) = &a.config {
        cfg.load_file(f).map_err(|e| fail(e.to_string()))?;
    }
    if let Some(m) = &a.rdma {
        cfg.rdma.mode = smbdirect_server::rdma::parse_mode(m).ok_or_else(|| fail(format!("bad --rdma {m:?} (want auto, on or off)")))?;
    }
    if let Some(p) = &a.rdma_proxy {
        cfg.rdma.proxy = Some(p.clone());
    }
    if let Some(v) = &a.smbd_max_io_size {
        cfg.rdma.args.max_io_size = smbdirect_server::rdma::parse_size(v)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| fail(format!("bad --smbd-max-io-size {v:?}")))?;
    }
    if u64::from(cfg.rdma.args.max_io_size) > cfg.rdma.args.pool_size {
        return Err(fail(format!("smbd max io size {} exceeds the RDMA pool size {}", cfg.rdma.args.max_io_size, cfg.rdma.args.pool_size)));
    }
    if let Some(v) = &a.max_workers {
        cfg.procs.max_workers = supervisor::parse_workers(v).map_err(fail)?;
    }
    if let Some(d) = &a.state_dir {
        cfg.procs.state_dir = Some(d.clone());
    }
    if !a.listen.is_empty() {
        cfg.listen.clear();
        for l in &a.listen {
            cfg.listen.push(l.parse().map_err(|_| fail(format!("bad --listen {l:?} (want ADDR:PORT)")))?);
        }
    }
    for s in &a.share {
        let sh = config::parse_share_flag(s).map_err(|e| fail(e.to_string()))?;
        cfg.shares.retain(|x| !x.name.eq_ignore_ascii_case(&sh.name));
        cfg.shares.push(sh);
    }
    for u in &a.user {
        cfg.users.push(config::parse_user_flag(u).map_err(|e| fail(e.to_string()))?);
    }
    if cfg.shares.is_empty() {
        cfg.shares.push(ShareConfig::new("share", "./share"));
    }
    Ok(cfg)
}

/// `smbdirect serve`: the supervisor (supervisor.rs).
fn serve(a: ServeArgs) -> ExitCode {
    let mut cfg = match build_config(&a) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The user file; with no users anywhere, one generated user is added to
    // it (zero setup), whose files are this process's user's.
    let passdb = cfg.accounts.passdb_path();
    let stored = match smbdirect_server::auth::UserDb::load(&passdb) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(1);
        }
    };
    let mut generated = (cfg.users.is_empty() && stored.is_empty()).then(|| {
        let name = std::env::var("USER").ok().filter(|u| !u.is_empty() && u != "root").unwrap_or_else(|| "smbuser".into());
        (name, random_password())
    });
    let mut shown = generated.clone();
    if let Some((name, pw)) = &generated {
        let uid = rustix::process::geteuid().as_raw();
        match smbdirect_server::auth::UserDb::update(&passdb, |db| Ok(db.add_user(name, smbdirect_server::auth::nt_hash(pw), uid))) {
            // Workers read it from the file like any other user.
            Ok(()) => generated = None,
            Err(e) => eprintln!("smbdirect: cannot store the generated user: {e}; it lasts until the server stops"),
        }
    } else if !stored.is_empty() {
        println!("smbdirect: {} user(s) in {} (smbdirect user list)", stored.len(), passdb.display());
    }
    // The shares are checked (and created) here, before anything listens;
    // the workers serve them.
    {
        let mut check = cfg.clone();
        check.users.extend(generated.clone());
        // (on its own memory store: the supervisor creates the shared one)
        check.procs.state_dir = None;
        if let Err(e) = Server::new(check) {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(1);
        }
    }
    let dir = cfg.procs.state_dir.clone().unwrap_or_else(supervisor::default_state_dir);
    let state = match supervisor::StateDir::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(1);
        }
    };
    cfg.procs.state_dir = Some(state.path.clone());
    let mut listeners = Vec::new();
    let mut first_port = 445;
    for (i, addr) in cfg.listen.iter().enumerate() {
        let l = match listener::bind(*addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("smbdirect: cannot listen on {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        if i == 0 {
            first_port = l.addr.port();
        }
        println!("smbdirect: listening on {}", l.addr);
        listeners.push(l);
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("smbdirect: cannot find this executable to start workers: {e}");
            return ExitCode::from(1);
        }
    };
    let launch = supervisor::WorkerLaunch {
        exe,
        // Workers get serve's own arguments and rebuild the same configuration.
        serve_args: std::env::args().skip(2).collect(),
        backoff_start: std::time::Duration::from_millis(100),
        backoff_max: std::time::Duration::from_secs(10),
    };
    let sup = match supervisor::Supervisor::new(cfg.clone(), launch, state.path.clone(), generated.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(1);
        }
    };
    sup.start();
    let mut handles = Vec::new();
    for l in listeners {
        let s = sup.clone();
        handles.push(std::thread::spawn(move || s.front(l)));
    }
    match sup.status_server(&state.status_socket()) {
        Ok(h) => handles.push(h),
        Err(e) => eprintln!("smbdirect: no status socket at {}: {e}", state.status_socket().display()),
    }
    if smbdirect_server::identity::can_switch() {
        println!("smbdirect: file operations run as each session's Unix account (guest account {})", cfg.accounts.guest_account);
    } else {
        let me = rustix::process::geteuid().as_raw();
        tracing::info!(uid = me, "not running as root: every session's file operations run as this process's user");
        println!("smbdirect: not running as root: every session's files are accessed as uid {me} ({})", unix_name(me));
    }
    println!("smbdirect: {} worker process(es) at most (max workers); state directory {}", sup.max_workers(), state.path.display());
    for sh in &cfg.shares {
        println!("smbdirect: share [{}] at {}", sh.name, sh.path.display());
    }
    if let Some((u, p)) = shown.take() {
        if generated.is_none() {
            println!("smbdirect: user {u} stored in {} (change its password: smbdirect user passwd {u})", passdb.display());
        }
        let port = if first_port == 445 { String::new() } else { format!(" -p {first_port}") };
        println!("smbdirect: user {u} with password {p}");
        println!("smbdirect: try: smbclient //127.0.0.1/{}{port} -U '{u}%{p}' -c ls", cfg.shares[0].name);
    }
    let s = sup.clone();
    let handler: smbdirect_server::rdma::ControlHandler = Arc::new(move |fd| s.proxy_control(fd));
    match smbdirect_server::rdma::start(&cfg.rdma, handler) {
        Some(h) => {
            println!("smbdirect: SMB Direct: rdma-proxy started (see the log for each device and port)");
            handles.push(h);
        }
        None => println!("smbdirect: SMB Direct: not started (see the log); serving SMB2/3 over TCP"),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    for h in handles {
        let _ = h.join();
    }
    drop(state);
    ExitCode::SUCCESS
}
