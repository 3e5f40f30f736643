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
use smbdirect_bench::client::channel::{Channel, TcpChannel};
use smbdirect_bench::client::msg;
use smbdirect_bench::client::session::Negotiated;
use smbdirect_bench::client::{ClientError, ClientOptions, DataChannel, Protection, Session, Tree};
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
    unc: String,
    /// USER%PASS, USER may be DOMAIN\USER.
    #[arg(short = 'U', long = "user")]
    user: String,
    #[arg(long, default_value_t = 445)]
    port: u16,
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// Channels bound to the session (1 = the first connection only).
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
    #[arg(long = "server-pid")]
    server_pid: Option<u32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Functional check instead of a benchmark: log on, write and read back, query the file
    /// and the server's interfaces, bind --channels and read through each; prints JSON.
    #[arg(long)]
    check: bool,
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
    let (user, pass) = a.user.split_once('%').ok_or("-U takes USER%PASS")?;
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
        Transport::Rdma | Transport::TcpRdma => Err(ClientError::Unsupported(
            "SMB Direct channels come with the `verbs` feature (bench/src/client/rdma*.rs)".into(),
        )),
    }
}

struct Setup {
    session: Arc<Session>,
    tree: Arc<Tree>,
    data: DataChannel,
}

fn setup(a: &Args, o: &ClientOptions) -> Result<Setup, ClientError> {
    let unc = a.unc.replace('/', "\\");
    let host = unc.trim_start_matches('\\').split('\\').next().unwrap_or_default().to_string();
    if host.is_empty() || unc.trim_start_matches('\\').split('\\').nth(1).is_none_or(str::is_empty) {
        return Err(ClientError::Invalid(format!("{} is not //HOST/SHARE", a.unc)));
    }
    let addr = (host.as_str(), a.port)
        .to_socket_addrs()
        .map_err(|e| ClientError::Invalid(format!("{host}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Invalid(format!("{host}: no address")))?;
    let first = if a.transport == Transport::Rdma { Transport::Rdma } else { Transport::Tcp };
    let session = Arc::new(Session::connect(open_channel(first, addr, o.timeout)?, o)?);
    let more = if a.transport == Transport::TcpRdma { Transport::Rdma } else { first };
    for _ in 1..a.channels.max(1) {
        session.bind(open_channel(more, addr, o.timeout)?)?;
    }
    let tree = Arc::new(session.tree_connect(&unc)?);
    let data = if a.transport == Transport::Tcp { DataChannel::Inline } else { DataChannel::RdmaInvalidate };
    Ok(Setup { session, tree, data })
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
        let (_, r) = q.next(o.timeout)?;
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
    let interfaces = match tree.query_interfaces() {
        Ok(v) => serde_json::json!(v.iter().map(|i| serde_json::json!({
            "if_index": i.if_index, "rdma": i.rdma, "rss": i.rss, "link_speed": i.link_speed,
            "addr": i.addr.map(|a| a.to_string()) })).collect::<Vec<_>>()),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    // Every bound channel reads the file opened on the first one.
    let mut per_channel = Vec::new();
    for ch in 0..session.channels() {
        let got = tree.read(ch, &f, size as u64, size as u32, s.data)?;
        per_channel.push(got == data[size..2 * size]);
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
    out["expected_size"] = serde_json::json!(data.len());
    out["interfaces"] = interfaces;
    out["channels"] = serde_json::json!(session.channels());
    out["channel_reads_verified"] = serde_json::json!(per_channel);
    out["credits_granted"] = serde_json::json!(credits_granted);
    out["credits_now"] = serde_json::json!(credits_now);
    session.close();
    Ok(out)
}

fn run_bench(a: &Args, o: &ClientOptions) -> Result<serde_json::Value, ClientError> {
    if !(4096..=8 << 20).contains(&a.size) {
        return Err(ClientError::Invalid("--size must be within 4k..8m".into()));
    }
    if !(1..=64).contains(&a.depth) {
        return Err(ClientError::Invalid("--depth must be within 1..64".into()));
    }
    let s = setup(a, o)?;
    let n = s.session.negotiated().clone();
    let limit = match a.op {
        OpArg::Read => n.max_read,
        OpArg::Write => n.max_write,
        OpArg::Mixed => n.max_read.min(n.max_write),
    };
    if a.size > u64::from(limit) {
        return Err(ClientError::Invalid(format!("--size {} is above the server's limit of {limit}", a.size)));
    }
    let file_size = a.file_size.max(a.size);
    let name = format!("smbdirect-bench-{}.dat", std::process::id());
    let f = s.tree.create(&name, &msg::CreateReq {
        desired_access: msg::FILE_READ_DATA | msg::FILE_WRITE_DATA | msg::FILE_READ_ATTRIBUTES | msg::DELETE,
        file_attributes: msg::FILE_ATTRIBUTE_NORMAL,
        share_access: msg::FILE_SHARE_ALL,
        disposition: msg::FILE_OVERWRITE_IF,
        options: msg::FILE_NON_DIRECTORY_FILE | msg::FILE_DELETE_ON_CLOSE,
    })?;
    let quiet = a.json;
    let bar = |len: u64, msg: &str| {
        let pb = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(len) };
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg:>8} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        pb.set_message(msg.to_string());
        pb
    };
    if a.op != OpArg::Write {
        let progress = Progress::default();
        let pb = bar(file_size, "fill");
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
    let plan = Plan {
        size: a.size as u32,
        depth: a.depth,
        op: match a.op {
            OpArg::Read => Op::Read,
            OpArg::Write => Op::Write,
            OpArg::Mixed => Op::Mixed,
        },
        pattern: match a.pattern {
            PatternArg::Seq => Pattern::Seq,
            PatternArg::Rand => Pattern::Rand,
        },
        duration: if a.bytes.is_some() { None } else { Some(Duration::from_secs_f64(a.duration.unwrap_or(10.0).max(0.1))) },
        bytes: a.bytes,
        file_size,
    };
    let progress = Arc::new(Progress::default());
    let (pb, by_time) = match (plan.bytes, plan.duration) {
        (Some(b), _) => (bar(b, "bench"), false),
        (None, Some(d)) => {
            let pb = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(d.as_millis() as u64) };
            pb.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {elapsed}/{duration}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            (pb, true)
        }
        _ => (indicatif::ProgressBar::hidden(), false),
    };
    let started = Instant::now();
    let outcome = std::thread::scope(|sc| {
        let h = sc.spawn(|| bench::run(&s.tree, &f, &plan, &progress, a.server_pid));
        while !h.is_finished() {
            let b = progress.bytes.load(Ordering::Relaxed);
            if by_time {
                pb.set_position(started.elapsed().as_millis() as u64);
                pb.set_message(format!("{:>9.1} MB/s", b as f64 / started.elapsed().as_secs_f64().max(1e-3) / 1e6));
            } else {
                pb.set_position(b);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pb.finish_and_clear();
        h.join().unwrap_or_else(|_| Err(ClientError::Invalid("bench thread panicked".into())))
    })?;
    let _ = s.tree.close(&f);
    s.session.close();
    let mut out = describe(&n, &s.session);
    out["server"] = serde_json::json!(a.unc);
    out["transport"] = serde_json::json!(format!("{:?}", a.transport).to_lowercase());
    out["channels"] = serde_json::json!(s.session.channels());
    out["size"] = serde_json::json!(a.size);
    out["depth"] = serde_json::json!(a.depth);
    out["op"] = serde_json::json!(plan.op);
    out["pattern"] = serde_json::json!(plan.pattern);
    out["result"] = serde_json::to_value(&outcome).unwrap_or_default();
    Ok(out)
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
    let o = match options(&a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("smbdirect-bench: {e}");
            return ExitCode::from(2);
        }
    };
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
