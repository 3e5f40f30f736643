//! `smbdirect-bench` (also `smbdirect bench`): benchmark any SMB 3.x server with the
//! project's own client, over TCP (SMB Direct through the `verbs` feature).

#![forbid(unsafe_code)]

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use smbdirect_bench::bench::{self, Op, Pattern, Plan, Progress};
use smbdirect_bench::chart;
use smbdirect_bench::client::channel::{Channel, TcpChannel};
use smbdirect_bench::client::msg;
use smbdirect_bench::client::session::Negotiated;
use smbdirect_bench::client::{ClientError, ClientOptions, DataChannel, File, Protection, Session, Tree};
use smbdirect_server::crypto::{Cipher, SigningAlgorithm};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    Tcp,
    Rdma,
    #[value(name = "tcp+rdma")]
    TcpRdma,
}

#[derive(Parser, Debug)]
#[command(name = "smbdirect-bench", version, about = "Benchmark an SMB 3.x server with smbdirect's own client")]
struct Args {
    /// The share, //HOST/SHARE (or \\HOST\SHARE).
    #[arg(required_unless_present = "plot")]
    unc: Option<String>,
    /// USER%PASS, USER may be DOMAIN\USER.
    #[arg(short = 'U', long = "user", required_unless_present = "plot")]
    user: Option<String>,
    #[arg(long, default_value_t = 445)]
    port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// SMB Direct port (445 for InfiniBand and RoCE, 5445 for iWARP).
    #[arg(long = "rdma-port", default_value_t = 445)]
    rdma_port: u16,
    /// With tcp+rdma: the server's RDMA address (default: the first RDMA-capable
    /// address of FSCTL_QUERY_NETWORK_INTERFACE_INFO).
    #[arg(long = "rdma-addr")]
    rdma_addr: Option<std::net::IpAddr>,
    /// READ/WRITE over SMB Direct: Channel RDMA_V1_INVALIDATE (the server invalidates the
    /// key with its answer) where the client's keys are memory windows, else RDMA_V1 (auto);
    /// or force one.
    #[arg(long = "rdma-channel", value_enum, default_value = "auto")]
    rdma_channel: RdmaChannelArg,
    /// Channels of the session (tcp, rdma); with tcp+rdma, SMB Direct channels bound to
    /// the TCP session (I/O goes over them only).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// I/O size, 4k..8m.
    #[arg(long, default_value = "1m", value_parser = parse_size)]
    size: u64,
    /// Requests in flight per channel, 1..64.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    #[arg(long, value_enum, default_value = "seq")]
    pattern: PatternArg,
    #[arg(long, value_enum, default_value = "read")]
    op: OpArg,
    /// Seconds to run (default 10 unless --bytes).
    #[arg(long, conflicts_with = "bytes")]
    duration: Option<f64>,
    /// Bytes to move, e.g. 1g.
    #[arg(long, value_parser = parse_size)]
    bytes: Option<u64>,
    /// Size of the test file, e.g. 256m.
    #[arg(long = "file-size", default_value = "256m", value_parser = parse_size)]
    file_size: u64,
    /// Encrypt every message.
    #[arg(long, conflicts_with = "sign")]
    encrypt: bool,
    /// Sign every message.
    #[arg(long)]
    sign: bool,
    /// Dialects to offer: 3.0, 3.0.2, 3.1.1 (comma separated).
    #[arg(long, default_value = "3.0,3.0.2,3.1.1")]
    dialects: String,
    /// 3.1.1 cipher preference (aes-128-gcm, aes-256-gcm, aes-128-ccm, aes-256-ccm).
    #[arg(long)]
    cipher: Option<String>,
    /// 3.1.1 signing algorithm (gmac, cmac).
    #[arg(long = "signing-alg")]
    signing_alg: Option<String>,
    /// Seconds to wait for any answer before giving up.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// PID of a local server: report its CPU seconds per GiB (with its child processes).
    /// Default: the process listening on --port when HOST is an address of this machine.
    #[arg(long = "server-pid")]
    server_pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Functional check instead of a benchmark: log on, write and read back, query the file
    /// and the server's interfaces, bind --channels and read through each; prints JSON.
    #[arg(long)]
    check: bool,
    /// Sweep mode: run every --sizes x --depths point (--duration each, default 3 s) and
    /// print CSV rows (see --csv, --svg).
    #[arg(long)]
    sweep: bool,
    /// Sweep sizes, comma separated.
    #[arg(long, default_value = "4k,16k,64k,256k,1m,4m")]
    sizes: String,
    /// Sweep depths, comma separated.
    #[arg(long, default_value = "1,8,32")]
    depths: String,
    /// Label of this server/transport in CSV rows and chart legends.
    #[arg(long, default_value = "server")]
    label: String,
    /// Append the sweep's CSV rows to FILE (header written when the file is new).
    #[arg(long, value_name = "FILE")]
    csv: Option<std::path::PathBuf>,
    /// Write an SVG chart of the sweep (or of the --plot files) to FILE.
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
    /// Chart these CSV files (from earlier sweeps) into --svg, without running anything.
    #[arg(long, value_name = "CSV", num_args = 1..)]
    plot: Vec<std::path::PathBuf>,
    /// Title of the chart.
    #[arg(long, default_value = "smbdirect bench")]
    title: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RdmaChannelArg {
    Auto,
    V1,
    #[value(name = "v1-invalidate")]
    V1Invalidate,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PatternArg {
    Seq,
    Rand,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OpArg {
    Read,
    Write,
    Mixed,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok().and_then(|n| n.checked_mul(mul)).ok_or_else(|| format!("bad size {s:?} (e.g. 4k, 1m, 8m, 2g)"))
}

fn dialect_name(d: u16) -> &'static str {
    match d {
        0x0300 => "3.0",
        0x0302 => "3.0.2",
        0x0311 => "3.1.1",
        _ => "?",
    }
}

fn options(a: &Args) -> Result<ClientOptions, String> {
    let (user, pass) = a.user.as_deref().unwrap_or_default().split_once('%').ok_or("-U takes USER%PASS")?;
    let mut o = ClientOptions::new(user, pass).map_err(|e| e.to_string())?;
    o.timeout = Duration::from_secs_f64(a.timeout.max(0.1));
    o.protection = if a.encrypt { Protection::Encrypt } else if a.sign { Protection::Sign } else { Protection::Auto };
    o.dialects = a
        .dialects
        .split(',')
        .map(|d| match d.trim() {
            "3.0" => Ok(0x0300),
            "3.0.2" => Ok(0x0302),
            "3.1.1" => Ok(0x0311),
            x => Err(format!("unknown dialect {x}")),
        })
        .collect::<Result<_, _>>()?;
    if let Some(c) = &a.cipher {
        o.ciphers = vec![match c.as_str() {
            "aes-128-gcm" => Cipher::Aes128Gcm,
            "aes-256-gcm" => Cipher::Aes256Gcm,
            "aes-128-ccm" => Cipher::Aes128Ccm,
            "aes-256-ccm" => Cipher::Aes256Ccm,
            x => return Err(format!("unknown cipher {x}")),
        }];
    }
    if let Some(s) = &a.signing_alg {
        o.signing = vec![match s.as_str() {
            "gmac" => SigningAlgorithm::AesGmac,
            "cmac" => SigningAlgorithm::AesCmac,
            x => return Err(format!("unknown signing algorithm {x}")),
        }];
    }
    Ok(o)
}

fn open_channel(t: Transport, addr: SocketAddr, timeout: Duration) -> Result<Arc<dyn Channel>, ClientError> {
    match t {
        Transport::Tcp => Ok(Arc::new(TcpChannel::connect(addr, timeout)?)),
        #[cfg(feature = "verbs")]
        Transport::Rdma | Transport::TcpRdma => {
            use smbdirect_bench::client::rdma;
            Ok(Arc::new(rdma::SmbdChannel::connect(addr, rdma::client_config(), timeout)?))
        }
        #[cfg(not(feature = "verbs"))]
        Transport::Rdma | Transport::TcpRdma => Err(ClientError::Unsupported(
            "SMB Direct needs smbdirect-bench built with --features verbs".into(),
        )),
    }
}

struct Setup {
    session: Arc<Session>,
    tree: Arc<Tree>,
    data: DataChannel,
    /// The server's process when it runs on this machine (--server-pid, or the local
    /// listener of the TCP port), for its CPU per GiB.
    server_pid: Option<u32>,
}

fn setup(a: &Args, o: &ClientOptions) -> Result<Setup, ClientError> {
    let given = a.unc.clone().unwrap_or_default();
    let unc = given.replace('/', "\\");
    let host = unc.trim_start_matches('\\').split('\\').next().unwrap_or_default().to_string();
    if host.is_empty() || unc.trim_start_matches('\\').split('\\').nth(1).is_none_or(str::is_empty) {
        return Err(ClientError::Invalid(format!("{given} is not //HOST/SHARE")));
    }
    let resolve = |port: u16| -> Result<SocketAddr, ClientError> {
        (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| ClientError::Invalid(format!("{host}: {e}")))?
            .next()
            .ok_or_else(|| ClientError::Invalid(format!("{host}: no address")))
    };
    let n = a.channels.max(1);
    let (session, tree) = match a.transport {
        Transport::Tcp | Transport::Rdma => {
            let (t, port) = if a.transport == Transport::Tcp { (Transport::Tcp, a.port) } else { (Transport::Rdma, a.rdma_port) };
            let addr = resolve(port)?;
            let session = Arc::new(Session::connect(open_channel(t, addr, o.timeout)?, o)?);
            for _ in 1..n {
                session.bind(open_channel(t, addr, o.timeout)?)?;
            }
            let tree = Arc::new(session.tree_connect(&unc)?);
            (session, tree)
        }
        Transport::TcpRdma => {
            // As Windows does: log on over TCP, ask for the interfaces, and bind N SMB
            // Direct channels to an RDMA-capable address (--rdma-addr overrides).
            let session = Arc::new(Session::connect(open_channel(Transport::Tcp, resolve(a.port)?, o.timeout)?, o)?);
            let tree = Arc::new(session.tree_connect(&unc)?);
            let ip = match a.rdma_addr {
                Some(ip) => ip,
                None => tree
                    .query_interfaces()?
                    .iter()
                    .find(|i| i.rdma && i.addr.is_some())
                    .and_then(|i| i.addr)
                    .ok_or_else(|| ClientError::Unsupported("the server lists no RDMA-capable interface (give --rdma-addr)".into()))?,
            };
            for _ in 0..n {
                session.bind(open_channel(Transport::Rdma, SocketAddr::new(ip, a.rdma_port), o.timeout)?)?;
            }
            (session, tree)
        }
    };
    // RDMA_V1_INVALIDATE needs keys the server can invalidate (memory windows: see
    // client/rdma.rs); a device without them gets RDMA_V1.
    let invalidatable = (0..session.channels())
        .filter_map(|i| session.conn(i).ok())
        .filter(|c| c.channel().is_rdma())
        .all(|c| c.channel().supports_remote_invalidate());
    let data = match (a.transport, a.rdma_channel) {
        (Transport::Tcp, _) => DataChannel::Inline,
        (_, RdmaChannelArg::V1) => DataChannel::Rdma,
        (_, RdmaChannelArg::V1Invalidate) => DataChannel::RdmaInvalidate,
        (_, RdmaChannelArg::Auto) if invalidatable => DataChannel::RdmaInvalidate,
        (_, RdmaChannelArg::Auto) => DataChannel::Rdma,
    };
    // A local address binds; a remote one does not.
    let local = resolve(a.port).ok().filter(|ad| std::net::UdpSocket::bind(SocketAddr::new(ad.ip(), 0)).is_ok());
    let server_pid = a.server_pid.or_else(|| local.and_then(|_| bench::local_listener_pid(a.port)));
    Ok(Setup { session, tree, data, server_pid })
}

/// Per channel: its transport and, for SMB Direct, what it moved inline and how many
/// registrations it lent and the server invalidated (the proof that data went by RDMA).
fn channel_detail(s: &Session) -> serde_json::Value {
    let v: Vec<serde_json::Value> = (0..s.channels())
        .filter_map(|i| s.conn(i).ok())
        .map(|c| {
            let ch = c.channel();
            let mut o = serde_json::json!({ "peer": ch.peer(), "rdma": ch.is_rdma() });
            if let Some(st) = ch.rdma_stats() {
                o["smbd"] = serde_json::to_value(st).unwrap_or_default();
            }
            o
        })
        .collect();
    serde_json::json!(v)
}

fn describe(n: &Negotiated, s: &Session) -> serde_json::Value {
    serde_json::json!({
        "dialect": dialect_name(n.dialect),
        "cipher": n.cipher.map(|c| format!("{c:?}")),
        "signing_algorithm": format!("{:?}", n.signing),
        "signed": s.signs(),
        "encrypted": s.encrypts(),
        "guest": s.is_guest(),
        "max_read": n.max_read,
        "max_write": n.max_write,
    })
}

fn check(a: &Args, o: &ClientOptions) -> Result<serde_json::Value, ClientError> {
    let s = setup(a, o)?;
    let (tree, session) = (&s.tree, &s.session);
    let name = format!("smbdirect-check-{}.bin", std::process::id());
    let f = tree.open_rw(&name, msg::FILE_OVERWRITE_IF)?;
    let size = (a.size as usize).clamp(1, 8 << 20);
    let data: Vec<u8> = (0..size * 3).map(|i| (i * 31 % 255) as u8).collect();
    // Three writes in flight at once, then read back in one piece per write.
    let q = smbdirect_bench::client::CompletionQueue::new();
    for (i, part) in data.chunks(size).enumerate() {
        tree.submit_to(0, tree.write_request(&f, (i * size) as u64, part), &q, i as u64)?;
    }
    for _ in 0..3 {
        let (_, r) = q.next(o.timeout).map_err(|_| session.conn(0).map_or_else(|e| e, |c| c.timed_out("WRITE", o.timeout)))?;
        let n = msg::parse_write(&r?.expect(&[msg::STATUS_SUCCESS])?.msg)?;
        if n as usize != size {
            return Err(ClientError::proto(format!("short write: {n} of {size}")));
        }
    }
    let mut back = Vec::new();
    for i in 0..3 {
        back.extend(tree.read(0, &f, (i * size) as u64, size as u32, DataChannel::Inline)?);
    }
    let verified = back == data;
    let info = tree.query_standard(0, &f)?;
    let expected_size = data.len();
    let interfaces = match tree.query_interfaces() {
        Ok(v) => serde_json::json!(v.iter().map(|i| serde_json::json!({
            "if_index": i.if_index, "rdma": i.rdma, "rss": i.rss, "link_speed": i.link_speed,
            "addr": i.addr.map(|a| a.to_string()) })).collect::<Vec<_>>()),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    // Every bound channel reads the file opened on the first one.
    let mut per_channel = Vec::new();
    let mut rdma_writes = Vec::new();
    for ch in 0..session.channels() {
        let rdma = session.conn(ch)?.channel().is_rdma();
        let dc = if rdma { s.data } else { DataChannel::Inline };
        let got = tree.read(ch, &f, size as u64, size as u32, dc)?;
        per_channel.push(got == data[size..2 * size]);
        if rdma {
            // The server pulls a WRITE from our registered buffer; read back on channel 0.
            let mine: Vec<u8> = data[..size].iter().map(|b| b ^ (ch as u8 + 1)).collect();
            let at = (3 * size + ch * size) as u64;
            let n = tree.write(ch, &f, at, &mine, dc)?;
            rdma_writes.push(n as usize == size && tree.read(0, &f, at, size as u32, DataChannel::Inline)? == mine);
        }
    }
    let (credits_now, credits_granted) = session.conn(0)?.credits();
    tree.close(&f)?;
    // Remove the file: open it with DELETE_ON_CLOSE and close it.
    let d = tree.create(&name, &msg::CreateReq {
        desired_access: msg::DELETE,
        file_attributes: 0,
        share_access: msg::FILE_SHARE_ALL,
        disposition: msg::FILE_OPEN,
        options: msg::FILE_DELETE_ON_CLOSE | msg::FILE_NON_DIRECTORY_FILE,
    })?;
    tree.close(&d)?;
    tree.disconnect()?;
    let mut out = describe(session.negotiated(), session);
    out["write_read_verified"] = serde_json::json!(verified);
    out["end_of_file"] = serde_json::json!(info.end_of_file);
    out["expected_size"] = serde_json::json!(expected_size);
    out["rdma_writes_verified"] = serde_json::json!(rdma_writes);
    out["data_channel"] = serde_json::json!(format!("{:?}", s.data));
    out["interfaces"] = interfaces;
    out["channels"] = serde_json::json!(session.channels());
    out["channel_reads_verified"] = serde_json::json!(per_channel);
    out["credits_granted"] = serde_json::json!(credits_granted);
    out["credits_now"] = serde_json::json!(credits_now);
    out["channel_detail"] = channel_detail(session);
    session.close();
    Ok(out)
}

fn check_point(size: u64, depth: usize) -> Result<(), ClientError> {
    if !(4096..=8 << 20).contains(&size) {
        return Err(ClientError::Invalid(format!("size {size}: must be within 4k..8m")));
    }
    if !(1..=64).contains(&depth) {
        return Err(ClientError::Invalid(format!("depth {depth}: must be within 1..64")));
    }
    Ok(())
}

fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()).progress_chars("=> ")
}

fn new_bar(quiet: bool, len: u64) -> indicatif::ProgressBar {
    if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(len)
    }
}

/// Logs on, creates the test file (deleted on close) and fills it unless only writing.
fn prepare(a: &Args, o: &ClientOptions, max_size: u64) -> Result<(Setup, File), ClientError> {
    let s = setup(a, o)?;
    let n = s.session.negotiated();
    let limit = match a.op {
        OpArg::Read => n.max_read,
        OpArg::Write => n.max_write,
        OpArg::Mixed => n.max_read.min(n.max_write),
    };
    if max_size > u64::from(limit) {
        return Err(ClientError::Invalid(format!("size {max_size} is above the server's limit of {limit}")));
    }
    let file_size = a.file_size.max(max_size);
    let name = format!("smbdirect-bench-{}.dat", std::process::id());
    let f = s.tree.create(&name, &msg::CreateReq {
        desired_access: msg::FILE_READ_DATA | msg::FILE_WRITE_DATA | msg::FILE_READ_ATTRIBUTES | msg::DELETE,
        file_attributes: msg::FILE_ATTRIBUTE_NORMAL,
        share_access: msg::FILE_SHARE_ALL,
        disposition: msg::FILE_OVERWRITE_IF,
        options: msg::FILE_NON_DIRECTORY_FILE | msg::FILE_DELETE_ON_CLOSE,
    })?;
    if a.op != OpArg::Write {
        let progress = Progress::default();
        let pb = new_bar(a.json || a.sweep, file_size);
        pb.set_style(style("{msg:>8} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}"));
        pb.set_message("fill");
        std::thread::scope(|sc| -> Result<(), ClientError> {
            let h = sc.spawn(|| bench::fill(&s.tree, &f, file_size, 8, &progress));
            while !h.is_finished() {
                pb.set_position(progress.bytes.load(Ordering::Relaxed).min(file_size));
                std::thread::sleep(Duration::from_millis(100));
            }
            pb.finish_and_clear();
            h.join().map_err(|_| ClientError::Invalid("fill thread panicked".into()))?
        })?;
    }
    Ok((s, f))
}

/// One measured point, with a progress bar.
fn measure(a: &Args, s: &Setup, f: &File, size: u64, depth: usize, duration: Option<Duration>, what: &str) -> Result<bench::Outcome, ClientError> {
    let plan = Plan {
        size: size as u32,
        depth,
        op: match a.op {
            OpArg::Read => Op::Read,
            OpArg::Write => Op::Write,
            OpArg::Mixed => Op::Mixed,
        },
        pattern: match a.pattern {
            PatternArg::Seq => Pattern::Seq,
            PatternArg::Rand => Pattern::Rand,
        },
        duration: if a.bytes.is_some() { None } else { duration },
        bytes: a.bytes,
        file_size: a.file_size.max(size),
        rdma: s.data,
    };
    let progress = Arc::new(Progress::default());
    let (pb, by_time) = match (plan.bytes, plan.duration) {
        (Some(b), _) => {
            let pb = new_bar(a.json, b);
            pb.set_style(style("{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}"));
            (pb, false)
        }
        (None, Some(d)) => {
            let pb = new_bar(a.json, d.as_millis() as u64);
            pb.set_style(style("{prefix} {msg} [{bar:40}] {elapsed}"));
            (pb, true)
        }
        _ => (indicatif::ProgressBar::hidden(), false),
    };
    pb.set_prefix(what.to_string());
    let started = Instant::now();
    let outcome = std::thread::scope(|sc| {
        let h = sc.spawn(|| bench::run(&s.tree, f, &plan, &progress, s.server_pid));
        while !h.is_finished() {
            let b = progress.bytes.load(Ordering::Relaxed);
            let rate = format!("{:>9.1} MB/s", b as f64 / started.elapsed().as_secs_f64().max(1e-3) / 1e6);
            if by_time {
                pb.set_position(started.elapsed().as_millis() as u64);
            } else {
                pb.set_position(b);
            }
            pb.set_message(rate);
            std::thread::sleep(Duration::from_millis(100));
        }
        pb.finish_and_clear();
        h.join().unwrap_or_else(|_| Err(ClientError::Invalid("bench thread panicked".into())))
    })?;
    Ok(outcome)
}

/// CLOSE and LOGOFF after a good run; after a failed one only drop the connections (a
/// server that stopped answering would make each of those wait for the timeout).
fn finish(s: &Setup, f: &File, ok: bool) {
    if ok {
        let _ = s.tree.close(f);
        s.session.close();
    } else {
        s.session.abort();
    }
}

fn run_bench(a: &Args, o: &ClientOptions) -> Result<serde_json::Value, ClientError> {
    check_point(a.size, a.depth)?;
    let (s, f) = prepare(a, o, a.size)?;
    let d = Duration::from_secs_f64(a.duration.unwrap_or(10.0).max(0.1));
    let r = measure(a, &s, &f, a.size, a.depth, Some(d), "bench");
    let detail = channel_detail(&s.session);
    finish(&s, &f, r.is_ok());
    let outcome = r?;
    let mut out = describe(s.session.negotiated(), &s.session);
    out["data_channel"] = serde_json::json!(format!("{:?}", s.data));
    out["channel_detail"] = detail;
    out["server"] = serde_json::json!(a.unc.clone().unwrap_or_default());
    out["server_pid"] = serde_json::json!(s.server_pid);
    out["transport"] = serde_json::json!(transport_name(a.transport));
    out["channels"] = serde_json::json!(s.session.channels());
    out["size"] = serde_json::json!(a.size);
    out["depth"] = serde_json::json!(a.depth);
    out["op"] = serde_json::json!(format!("{:?}", a.op).to_lowercase());
    out["pattern"] = serde_json::json!(format!("{:?}", a.pattern).to_lowercase());
    out["result"] = serde_json::to_value(&outcome).unwrap_or_default();
    Ok(out)
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Tcp => "tcp",
        Transport::Rdma => "rdma",
        Transport::TcpRdma => "tcp+rdma",
    }
}

fn list<T>(s: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, ClientError> {
    s.split(',').filter(|x| !x.trim().is_empty()).map(|x| f(x.trim())).collect::<Result<_, _>>().map_err(ClientError::Invalid)
}

/// Sweep mode: every size x depth point on one session; CSV rows out, optional chart.
fn sweep(a: &Args, o: &ClientOptions) -> Result<Vec<chart::Row>, ClientError> {
    let sizes = list(&a.sizes, parse_size)?;
    let depths = list(&a.depths, |d| d.parse::<usize>().map_err(|_| format!("bad depth {d}")))?;
    for &sz in &sizes {
        for &d in &depths {
            check_point(sz, d)?;
        }
    }
    let max = sizes.iter().copied().max().ok_or_else(|| ClientError::Invalid("--sizes is empty".into()))?;
    let (s, f) = prepare(a, o, max)?;
    let d = Duration::from_secs_f64(a.duration.unwrap_or(3.0).max(0.1));
    let mut rows = Vec::new();
    let total = sizes.len() * depths.len();
    let mut r = Ok(());
    'outer: for &depth in &depths {
        for &size in &sizes {
            let what = format!("[{}/{}] {} d{}", rows.len() + 1, total, chart::fmt_size(size), depth);
            match measure(a, &s, &f, size, depth, Some(d), &what) {
                Ok(out) => {
                    let row = chart::Row {
                        label: a.label.clone(),
                        transport: transport_name(a.transport).into(),
                        op: format!("{:?}", a.op).to_lowercase(),
                        pattern: format!("{:?}", a.pattern).to_lowercase(),
                        size,
                        depth,
                        channels: s.session.channels(),
                        mb_per_s: out.mb_per_s,
                        iops: out.iops,
                        p50_us: out.lat_us_p50,
                        p99_us: out.lat_us_p99,
                        p999_us: out.lat_us_p999,
                        client_cpu_s_per_gib: out.client_cpu_s_per_gib,
                        server_cpu_s_per_gib: out.server_cpu_s_per_gib,
                    };
                    if !a.json {
                        eprintln!("{}", row.to_csv());
                    }
                    rows.push(row);
                }
                Err(e) => {
                    r = Err(e);
                    break 'outer;
                }
            }
        }
    }
    finish(&s, &f, r.is_ok());
    r.map(|()| rows)
}

fn write_csv(path: &std::path::Path, rows: &[chart::Row]) -> std::io::Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    if new {
        writeln!(f, "{}", chart::CSV_HEADER)?;
    }
    for r in rows {
        writeln!(f, "{}", r.to_csv())?;
    }
    Ok(())
}

fn table(v: &serde_json::Value) {
    let r = &v["result"];
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!("server     {}  dialect {}  {}  channels {}  transport {}", v["server"].as_str().unwrap_or(""), v["dialect"].as_str().unwrap_or(""),
        if v["encrypted"].as_bool() == Some(true) { "encrypted" } else if v["signed"].as_bool() == Some(true) { "signed" } else { "plain" },
        v["channels"], v["transport"].as_str().unwrap_or(""));
    println!("workload   {} {} size {} depth {}", v["op"].as_str().unwrap_or(""), v["pattern"].as_str().unwrap_or(""), v["size"], v["depth"]);
    println!("{:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}", "MB/s", "IOPS", "p50 us", "p99 us", "p99.9 us", "cli CPU s/GiB", "srv CPU s/GiB");
    println!(
        "{:>10.1} {:>10.0} {:>10.0} {:>10.0} {:>10.0} {:>12.2} {:>12}",
        f("mb_per_s"), f("iops"), f("lat_us_p50"), f("lat_us_p99"), f("lat_us_p999"), f("client_cpu_s_per_gib"),
        r["server_cpu_s_per_gib"].as_f64().map_or("-".to_string(), |x| format!("{x:.2}"))
    );
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if !a.plot.is_empty() {
        let Some(out) = &a.svg else {
            eprintln!("smbdirect-bench: --plot needs --svg FILE");
            return ExitCode::from(2);
        };
        let mut rows = Vec::new();
        for p in &a.plot {
            match chart::read_csv(p) {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    eprintln!("smbdirect-bench: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        return match chart::svg(&rows, &a.title, out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("smbdirect-bench: chart: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let o = match options(&a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("smbdirect-bench: {e}");
            return ExitCode::from(2);
        }
    };
    if a.sweep {
        return match sweep(&a, &o) {
            Ok(rows) => {
                let mut rc = ExitCode::SUCCESS;
                if let Some(p) = &a.csv {
                    if let Err(e) = write_csv(p, &rows) {
                        eprintln!("smbdirect-bench: {}: {e}", p.display());
                        rc = ExitCode::FAILURE;
                    }
                }
                if let Some(p) = &a.svg {
                    if let Err(e) = chart::svg(&rows, &a.title, p) {
                        eprintln!("smbdirect-bench: chart: {e}");
                        rc = ExitCode::FAILURE;
                    }
                }
                if a.json {
                    let v: Vec<String> = rows.iter().map(chart::Row::to_csv).collect();
                    println!("{}", serde_json::json!({ "header": chart::CSV_HEADER, "rows": v }));
                } else {
                    println!("{}", chart::CSV_HEADER);
                    for r in &rows {
                        println!("{}", r.to_csv());
                    }
                }
                rc
            }
            Err(e) => {
                eprintln!("smbdirect-bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let r = if a.check { check(&a, &o) } else { run_bench(&a, &o) };
    match r {
        Ok(v) => {
            if a.json || a.check {
                println!("{v}");
            } else {
                table(&v);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("smbdirect-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
