//! `smbdirect serve`: the file server.

use clap::{Parser, Subcommand};
use smbdirect_server::config::{self, ServerConfig, ShareConfig};
use smbdirect_server::{listener, objects::Server};
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
    Serve {
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
    },
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
        // Plain text into files and pipes (logs are grepped by tests).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let Cmd::Serve { listen, share, user, config, rdma, rdma_proxy, smbd_max_io_size } = cli.cmd;
    let mut cfg = ServerConfig::default();
    if let Some(f) = &config {
        if let Err(e) = cfg.load_file(f) {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(m) = &rdma {
        match smbdirect_server::rdma::parse_mode(m) {
            Some(m) => cfg.rdma.mode = m,
            None => {
                eprintln!("smbdirect: bad --rdma {m:?} (want auto, on or off)");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(p) = rdma_proxy {
        cfg.rdma.proxy = Some(p);
    }
    if let Some(v) = &smbd_max_io_size {
        match smbdirect_server::rdma::parse_size(v).and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0) {
            Some(n) => cfg.rdma.args.max_io_size = n,
            None => {
                eprintln!("smbdirect: bad --smbd-max-io-size {v:?}");
                return ExitCode::from(2);
            }
        }
    }
    if u64::from(cfg.rdma.args.max_io_size) > cfg.rdma.args.pool_size {
        eprintln!("smbdirect: smbd max io size {} exceeds the RDMA pool size {}", cfg.rdma.args.max_io_size, cfg.rdma.args.pool_size);
        return ExitCode::from(2);
    }
    if !listen.is_empty() {
        cfg.listen.clear();
        for l in &listen {
            match l.parse() {
                Ok(a) => cfg.listen.push(a),
                Err(_) => {
                    eprintln!("smbdirect: bad --listen {l:?} (want ADDR:PORT)");
                    return ExitCode::from(2);
                }
            }
        }
    }
    for s in &share {
        match config::parse_share_flag(s) {
            Ok(sh) => {
                cfg.shares.retain(|x| !x.name.eq_ignore_ascii_case(&sh.name));
                cfg.shares.push(sh);
            }
            Err(e) => {
                eprintln!("smbdirect: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for u in &user {
        match config::parse_user_flag(u) {
            Ok(u) => cfg.users.push(u),
            Err(e) => {
                eprintln!("smbdirect: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if cfg.shares.is_empty() {
        cfg.shares.push(ShareConfig::new("share", "./share"));
    }
    let generated = cfg.users.is_empty();
    if generated {
        let name = std::env::var("USER").ok().filter(|u| !u.is_empty() && u != "root").unwrap_or_else(|| "smbuser".into());
        cfg.users.push((name, random_password()));
    }
    let server = match Server::new(cfg.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("smbdirect: {e}");
            return ExitCode::from(1);
        }
    };
    let mut handles = Vec::new();
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
        let s = server.clone();
        handles.push(std::thread::spawn(move || listener::run(s, l)));
    }
    for sh in &cfg.shares {
        println!("smbdirect: share [{}] at {}", sh.name, sh.path.display());
    }
    if generated {
        let (u, p) = &cfg.users[0];
        let port = if first_port == 445 { String::new() } else { format!(" -p {first_port}") };
        println!("smbdirect: user {u} with password {p}");
        println!("smbdirect: try: smbclient //127.0.0.1/{}{port} -U '{u}%{p}' -c ls", cfg.shares[0].name);
    }
    match smbdirect_server::rdma::start(server.clone()) {
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
    ExitCode::SUCCESS
}
