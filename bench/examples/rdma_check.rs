//! `rdma_check //HOST/SHARE -U USER%PASS [--bind] [--invalidate] [--size BYTES] [--io BYTES] [--then CMD]
//! [--pattern-out PATH] [--client-guid HEX32]`: the project's client over an SMB Direct channel ([`SmbdChannel`]),
//! checked end to end against a server.
//!
//! - default: the session is negotiated and authenticated (NTLMv2) over SMB Direct itself
//!   (like `mount -o rdma`);
//! - `--bind`: as Windows does, NEGOTIATE and NTLMv2 SESSION_SETUP over TCP, TREE_CONNECT,
//!   FSCTL_QUERY_NETWORK_INTERFACE_INFO, then an SMB Direct channel to the first
//!   RDMA_CAPABLE interface's address, bound to the same session (SESSION_SETUP with
//!   SMB2_SESSION_FLAG_BINDING, signed); all I/O then goes on that channel.
//!
//! On the RDMA channel it writes a file of `--size` bytes (default 8 MiB) in WRITEs of
//! `--io` bytes (default 1 MiB) whose data the server RDMA-reads from buffers this client
//! registered, reads it back in READs the server RDMA-writes into fresh zeroed
//! registrations (Channel RDMA_V1; with `--invalidate` RDMA_V1_INVALIDATE: the server
//! invalidates each buffer's key with its response), and compares every byte. With `--then CMD` it runs
//! `sh -c CMD` while the session and its channels are still up (CMD sees the session id
//! in RDMA_CHECK_SESSION, decimal) and fails if CMD fails. `--pattern-out` writes the
//! bytes the file must hold to PATH. `--client-guid` sets the ClientGUID of every connection (32 hex
//! digits; all zeros makes the server route each connection by its address, which
//! ci/rxe/guest/t-48 uses to land the two channels on two workers). Prints one `rdma_check ok:` line with the figures;
//! exit code 1 on any failure (the reason on stderr).
//!
//! Needs the `verbs` feature: `cargo build --release -p smbdirect-bench --features verbs
//! --example rdma_check`.

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smbdirect_bench::client::channel::Channel;
use smbdirect_bench::client::msg::FILE_OVERWRITE_IF;
use smbdirect_bench::client::rdma::{client_config, SmbdChannel};
use smbdirect_bench::client::{ClientOptions, DataChannel, Session};

/// The test data: byte `off` of the file (not periodic at any I/O size used here).
fn pattern(off: u64) -> u8 {
    (((off * 31) >> 3) as u8 ^ 0x5a).wrapping_add((off >> 16) as u8)
}

const USAGE: &str =
    "usage: rdma_check //HOST/SHARE -U USER%PASS [--bind] [--invalidate] [--size BYTES] [--io BYTES] [--then CMD] [--pattern-out PATH] [--client-guid HEX32]";

fn run() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    let unc = args.next().ok_or(USAGE)?.replace('/', "\\");
    let mut parts = unc.trim_start_matches('\\').split('\\');
    let host: IpAddr = parts.next().unwrap_or_default().parse().map_err(|e| format!("HOST must be an address: {e}"))?;
    let mut dc = DataChannel::Rdma;
    let (mut user, mut bind, mut size, mut io, mut then, mut pattern_out) = (None, false, 8u64 << 20, 1usize << 20, None, None);
    let mut client_guid: Option<[u8; 16]> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bind" => bind = true,
            "--invalidate" => dc = DataChannel::RdmaInvalidate,
            _ => {
                let v = args.next().ok_or(USAGE)?;
                match a.as_str() {
                    "-U" => user = Some(v),
                    "--size" => size = v.parse().map_err(|e| format!("--size: {e}"))?,
                    "--io" => io = v.parse().map_err(|e| format!("--io: {e}"))?,
                    "--then" => then = Some(v),
                    "--pattern-out" => pattern_out = Some(v),
                    "--client-guid" => {
                        let n = u128::from_str_radix(&v, 16).ok().filter(|_| v.len() == 32).ok_or("--client-guid: 32 hex digits")?;
                        client_guid = Some(n.to_be_bytes());
                    }
                    _ => return Err(USAGE.into()),
                }
            }
        }
    }
    let user = user.ok_or(USAGE)?;
    let (u, p) = user.split_once('%').ok_or("-U USER%PASS")?;
    let mut opts = ClientOptions::new(u, p).map_err(|e| e.to_string())?;
    if let Some(g) = client_guid {
        opts.client_guid = g;
    }
    let smb = SocketAddr::new(host, 445);
    let rdma_connect = |addr: SocketAddr| -> Result<Arc<SmbdChannel>, String> {
        let ch = SmbdChannel::connect(addr, client_config(), Duration::from_secs(20))
            .map_err(|e| format!("SMB Direct to {addr}: {e}"))?;
        let n = ch.negotiated();
        println!(
            "SMB Direct negotiated with {}: max_send {} max_receive {} max_read_write {}",
            ch.peer(),
            n.max_send_size,
            n.max_receive_size,
            n.max_read_write_size
        );
        Ok(Arc::new(ch))
    };

    let (session, tree, chan, rdma) = if bind {
        let s = Arc::new(Session::connect_tcp(smb, &opts).map_err(|e| format!("TCP session: {e}"))?);
        println!("session {:#x} over TCP to {smb}: dialect {:#06x}, signed {}", s.id(), s.negotiated().dialect, s.signs());
        let tree = s.tree_connect(&unc).map_err(|e| format!("TREE_CONNECT {unc}: {e}"))?;
        let ifs = tree.query_interfaces().map_err(|e| format!("FSCTL_QUERY_NETWORK_INTERFACE_INFO: {e}"))?;
        for i in &ifs {
            println!("  interface {}: {:?} rdma {} rss {} speed {}", i.if_index, i.addr, i.rdma, i.rss, i.link_speed);
        }
        let ip = ifs.iter().find(|i| i.rdma).and_then(|i| i.addr).ok_or("the server lists no RDMA_CAPABLE interface")?;
        let rdma = rdma_connect(SocketAddr::new(ip, 445))?;
        let idx = s.bind(rdma.clone()).map_err(|e| format!("binding the SMB Direct channel: {e}"))?;
        println!("SMB Direct channel bound to session {:#x} as channel {idx}", s.id());
        (s, tree, idx, rdma)
    } else {
        let rdma = rdma_connect(smb)?;
        let s = Arc::new(Session::connect(rdma.clone(), &opts).map_err(|e| format!("session over SMB Direct: {e}"))?);
        println!("session {:#x} over SMB Direct: dialect {:#06x}, signed {}", s.id(), s.negotiated().dialect, s.signs());
        let tree = s.tree_connect(&unc).map_err(|e| format!("TREE_CONNECT {unc}: {e}"))?;
        (s, tree, 0, rdma)
    };
    let io = io.min(rdma.limits().max_rdma).max(1);
    if dc == DataChannel::RdmaInvalidate && !rdma.supports_remote_invalidate() {
        return Err("--invalidate: this device has no type 2 memory windows (RDMA_V1 only)".into());
    }
    let chname = if dc == DataChannel::Rdma { "RDMA_V1" } else { "RDMA_V1_INVALIDATE" };
    let f = tree.open_rw("rdma-check.bin", FILE_OVERWRITE_IF).map_err(|e| format!("CREATE: {e}"))?;

    let t = Instant::now();
    let mut off = 0u64;
    let mut writes = 0u32;
    while off < size {
        let n = (size - off).min(io as u64) as usize;
        let data: Vec<u8> = (0..n as u64).map(|i| pattern(off + i)).collect();
        let w = tree.write(chan, &f, off, &data, dc).map_err(|e| format!("WRITE {chname} at {off}: {e}"))?;
        if w as usize != n {
            return Err(format!("WRITE at {off}: the server wrote {w} bytes of {n}"));
        }
        writes += 1;
        off += n as u64;
    }
    let wsecs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut off = 0u64;
    let mut reads = 0u32;
    while off < size {
        let n = (size - off).min(io as u64) as usize;
        let data = tree.read(chan, &f, off, n as u32, dc).map_err(|e| format!("READ {chname} at {off}: {e}"))?;
        if data.len() != n {
            return Err(format!("READ at {off}: {} bytes of {n}", data.len()));
        }
        if let Some(i) = (0..n).find(|&i| data[i] != pattern(off + i as u64)) {
            return Err(format!("READ at {off}: byte {} differs from what was written", off + i as u64));
        }
        reads += 1;
        off += n as u64;
    }
    let rsecs = t.elapsed().as_secs_f64();
    println!("session {:#x}: {size} bytes written and read back by {chname} on channel {chan}, verified", session.id());
    if let Some(p) = pattern_out {
        let bytes: Vec<u8> = (0..size).map(pattern).collect();
        std::fs::write(&p, bytes).map_err(|e| format!("--pattern-out {p}: {e}"))?;
    }
    if let Some(cmd) = then {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("RDMA_CHECK_SESSION", session.id().to_string())
            .status()
            .map_err(|e| format!("--then: {e}"))?;
        if !ok.success() {
            return Err(format!("--then {cmd:?}: {ok}"));
        }
    }
    let st = rdma.stats();
    // The keys the server invalidated: one per request with RDMA_V1_INVALIDATE, none with RDMA_V1.
    let inv = rdma.remote_invalidations();
    let want = if dc == DataChannel::RdmaInvalidate { u64::from(writes + reads) } else { 0 };
    if inv != want {
        return Err(format!("the server invalidated {inv} of our keys, {want} expected"));
    }
    tree.close(&f).map_err(|e| format!("CLOSE: {e}"))?;
    session.close();
    let mbs = |t: f64| size as f64 / t.max(1e-9) / 1e6;
    Ok(format!(
        "{} {size} bytes in {writes} {chname} WRITEs ({:.1} MB/s) and {reads} {chname} READs ({:.1} MB/s) of {io} bytes, \
         verified; {inv} keys invalidated by the server; SMB Direct inline bytes sent {} received {}",
        if bind { "bound channel:" } else { "session over SMB Direct:" },
        mbs(wsecs),
        mbs(rsecs),
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
