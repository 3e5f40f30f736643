//! `rdma-proxy --control-fd N [options]`: the only process that opens verbs. Started
//! by the SMB server (`smbdirect serve`) with exec and the proxy's end of a
//! SOCK_SEQPACKET control socket inherited as fd N; see RDMA-DESIGN.md. The command
//! line is [`smbdirect_rdma_proxy::launch::ProxyArgs`], with its tuning options
//! `--max-rdma-in-flight BYTES` (RDMA READ/WRITE bytes in flight per queue pair;
//! soft-RoCE collapses above a few hundred KiB), `--rnr-retry N` (0..7) and
//! `--keepalive-interval SECS` / `--keepalive-timeout SECS` (SMB Direct keepalive:
//! 120 s idle, 5 s to answer by default).
//! Exit statuses: [`smbdirect_rdma_proxy::launch::exit`].

#![deny(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

use smbdirect_rdma_proxy::driver::{Options, Proxy};
use smbdirect_rdma_proxy::launch::{exit, ProxyArgs};

/// Takes ownership of the control socket inherited across exec.
#[allow(unsafe_code)]
fn inherited_fd(n: i32) -> Result<OwnedFd, String> {
    if n < 3 {
        return Err(format!("--control-fd {n}: not an inherited descriptor"));
    }
    if std::fs::symlink_metadata(format!("/proc/self/fd/{n}")).is_err() {
        return Err(format!("--control-fd {n}: not open"));
    }
    // SAFETY: the parent passed descriptor `n` to this process at exec for the proxy's
    // exclusive use; nothing else in this process owns or closes it (checked open
    // above, taken once here at startup), so OwnedFd may take it over.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}

fn main() -> ExitCode {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let args = match ProxyArgs::from_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rdma-proxy: {e}");
            return code(exit::USAGE);
        }
    };
    let control = match inherited_fd(args.control_fd) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("rdma-proxy: {e}");
            return code(exit::USAGE);
        }
    };
    // The driver listens on every (address, port) pair of its lists: the launch
    // contract's ADDR:PORT list maps onto them (the server gives one port per address
    // or the same ports for every address; empty = the wildcard on 445, +5445 iWARP).
    let mut listen = Vec::new();
    let mut ports = Vec::new();
    for a in &args.listen {
        if !listen.contains(&a.ip()) {
            listen.push(a.ip());
        }
        if !ports.contains(&a.port()) {
            ports.push(a.port());
        }
    }
    let mut opts = Options { listen, ports, pool_size: args.pool_size, slot_size: args.max_io_size, ..Options::default() };
    let c = &mut opts.config;
    c.max_read_write_size = args.max_io_size;
    match args.max_rdma_in_flight {
        Some(0) => {
            eprintln!("rdma-proxy: --max-rdma-in-flight needs a positive byte count");
            return code(exit::USAGE);
        }
        Some(b) => c.rdma.max_bytes_in_flight = b,
        None => {}
    }
    match args.rnr_retry {
        Some(r) if r > 7 => {
            eprintln!("rdma-proxy: --rnr-retry takes 0 to 7");
            return code(exit::USAGE);
        }
        Some(r) => opts.rnr_retry = r,
        None => {}
    }
    if let Some(s) = args.keepalive_interval {
        opts.config.keepalive_interval = std::time::Duration::from_secs(u64::from(s));
    }
    if let Some(s) = args.keepalive_timeout {
        opts.config.keepalive_timeout = std::time::Duration::from_secs(u64::from(s));
    }
    let mut proxy = match Proxy::new(opts, control) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("rdma-proxy cannot start: {e}");
            return code(e.exit_code());
        }
    };
    match proxy.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("rdma-proxy: {e}");
            ExitCode::from(1)
        }
    }
}
