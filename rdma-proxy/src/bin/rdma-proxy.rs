//! `rdma-proxy --control-fd N [--listen ADDR:PORT]... [limits]`: the only process that
//! opens verbs. Started by the SMB server (`smbdirect serve`) with exec and the proxy's
//! end of a SOCK_SEQPACKET control socket inherited as fd N; see RDMA-DESIGN.md.

#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;

use clap::Parser;
use smbdirect_rdma_proxy::driver::{Options, Proxy};

#[derive(Parser)]
#[command(name = "rdma-proxy", about = "SMB Direct (RDMA) front end of the smbdirect server")]
struct Cli {
    /// The inherited control socket (SOCK_SEQPACKET) to the SMB server.
    #[arg(long = "control-fd", value_name = "N")]
    control_fd: i32,
    /// Listen here (repeatable). Default: every RDMA device on port 445, and 5445 too
    /// when an iWARP device exists.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Size of the shared-memory pool RDMA reads and writes go through.
    #[arg(long = "pool-size", default_value_t = 64 << 20)]
    pool_size: u64,
    /// Slot size suggested to the server (its largest single I/O).
    #[arg(long = "slot-size", default_value_t = 8 << 20)]
    slot_size: u32,
    /// MaxReadWriteSize offered in the SMB Direct negotiate (ksmbd: `smbd max io size`).
    #[arg(long = "max-io-size", default_value_t = 8 << 20)]
    max_io_size: u32,
    /// Bytes of RDMA READ/WRITE in flight per queue pair (soft-RoCE collapses above a
    /// few hundred KiB).
    #[arg(long = "max-rdma-in-flight")]
    max_rdma_in_flight: Option<u64>,
    /// RNR retry count given to the CM (0 to 7; 7 = forever).
    #[arg(long = "rnr-retry", default_value_t = 6)]
    rnr_retry: u8,
}

/// Takes ownership of the control socket inherited across exec.
#[allow(unsafe_code)]
fn inherited_fd(n: i32) -> Result<OwnedFd, String> {
    if n < 3 {
        return Err(format!("--control-fd {n}: not an inherited descriptor"));
    }
    // Is it open? fcntl(F_GETFD) through /proc avoids touching an unowned fd.
    if std::fs::symlink_metadata(format!("/proc/self/fd/{n}")).is_err() {
        return Err(format!("--control-fd {n}: not open"));
    }
    // SAFETY: the parent passed descriptor `n` to this process at exec for the proxy's
    // exclusive use; nothing else in this process owns or closes it (checked open
    // above), so OwnedFd may take it over.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn main() -> ExitCode {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    let cli = Cli::parse();
    let control = match inherited_fd(cli.control_fd) {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("rdma-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let mut opts = Options { listen: cli.listen, pool_size: cli.pool_size, slot_size: cli.slot_size, rnr_retry: cli.rnr_retry.min(7), ..Options::default() };
    opts.config.max_read_write_size = cli.max_io_size;
    if let Some(b) = cli.max_rdma_in_flight {
        opts.config.rdma.max_bytes_in_flight = b;
    }
    let mut proxy = match Proxy::new(opts, control) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("rdma-proxy cannot start: {e}");
            return ExitCode::from(1);
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
