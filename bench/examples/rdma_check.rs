//! `rdma_check ADDR:PORT SHARE [--size BYTES] [--io BYTES] [--then CMD] [--pattern-out PATH]`:
//! connects an SMB
//! Direct channel ([`SmbdChannel`]) to a server, logs on anonymously to the `guest ok`
//! SHARE, writes a file of `--size` bytes (default 4 MiB) by RDMA_V1 WRITEs of `--io`
//! bytes (default 1 MiB) from buffers it registered, reads it back by RDMA_V1 READs and
//! verifies every byte. With `--then CMD` it runs `sh -c CMD` while the session and the
//! channel are still up (the rxe test asks `smbdirect status --json` there), and fails
//! if CMD fails (CMD sees the session id in RDMA_CHECK_SESSION, decimal). `--pattern-out`
//! writes the bytes the file must hold to PATH (to compare with the server's copy). Prints one `rdma_check ok:` line with the figures; exit code 1 on any
//! failure (the reason on stderr).
//!
//! Needs the `verbs` feature: `cargo build --release -p smbdirect-bench --features verbs
//! --example rdma_check`.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::Duration;

use smbdirect_bench::client::channel::Channel;
use smbdirect_bench::client::rdma::{client_config, SmbdChannel};
use smbdirect_bench::client::rdma_check::{pattern, write_read_verify, Session};

fn run() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: rdma_check ADDR:PORT SHARE [--size BYTES] [--io BYTES] [--then CMD] [--pattern-out PATH]";
    let addr: SocketAddr = args.next().ok_or(usage)?.parse().map_err(|e| format!("address: {e}"))?;
    let share = args.next().ok_or(usage)?;
    let (mut size, mut io, mut then, mut pattern_out) = (4u64 << 20, 1usize << 20, None, None);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(usage)?;
        match a.as_str() {
            "--size" => size = v.parse().map_err(|e| format!("--size: {e}"))?,
            "--io" => io = v.parse().map_err(|e| format!("--io: {e}"))?,
            "--then" => then = Some(v),
            "--pattern-out" => pattern_out = Some(v),
            _ => return Err(usage.into()),
        }
    }
    let ch = SmbdChannel::connect(addr, client_config(), Duration::from_secs(20)).map_err(|e| format!("connect: {e}"))?;
    let n = ch.negotiated();
    println!(
        "SMB Direct negotiated with {}: max_send {} max_receive {} max_read_write {}",
        ch.peer(),
        n.max_send_size,
        n.max_receive_size,
        n.max_read_write_size
    );
    let mut s = Session::new(&ch);
    s.logon(&addr.ip().to_string(), &share)?;
    let r = write_read_verify(&mut s, "rdma-check.bin", size, io)?;
    println!("session {:#x}: {} bytes written and read back by RDMA_V1, verified", s.session_id(), r.file_len);
    if let Some(p) = pattern_out {
        let bytes: Vec<u8> = (0..size).map(pattern).collect();
        std::fs::write(&p, bytes).map_err(|e| format!("--pattern-out {p}: {e}"))?;
    }
    let st = ch.stats();
    if let Some(cmd) = then {
        let ok = Command::new("sh").arg("-c").arg(&cmd).env("RDMA_CHECK_SESSION", s.session_id().to_string()).status().map_err(|e| format!("--then: {e}"))?;
        if !ok.success() {
            return Err(format!("--then {cmd:?}: {ok}"));
        }
    }
    s.close()?;
    ch.close();
    let mbs = |b: u64, t: f64| b as f64 / t.max(1e-9) / 1e6;
    Ok(format!(
        "{} bytes in {} RDMA_V1 WRITEs ({:.1} MB/s) and {} RDMA_V1 READs ({:.1} MB/s) of {} bytes, verified; \
         rdma_written={} rdma_read={} client inline sent={} received={}",
        r.file_len,
        r.writes,
        mbs(r.rdma_written, r.write_secs),
        r.reads,
        mbs(r.rdma_read, r.read_secs),
        r.io_size,
        r.rdma_written,
        r.rdma_read,
        st.bytes_sent,
        st.bytes_received
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(line) => {
            println!("rdma_check ok: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rdma_check: {e}");
            ExitCode::FAILURE
        }
    }
}
