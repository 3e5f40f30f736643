//! `smbd-fault ADDR:PORT SCENARIO[,SCENARIO...] [--share NAME] [--wait SECS]`: a raw SMB Direct
//! client over the verbs layer for fault tests (issue 9 part 7). Exit 0 when the server
//! behaved as the scenario expects; each scenario prints what happened.
//!
//! Hand-driven scenarios (SMB Direct messages built byte by byte, valid or malformed;
//! pass: malformed input gets a clean disconnect within 10 s, `ok` a successful
//! negotiate and no disconnect): ok, bad-version, zero-credits, small-receive,
//! small-fragmented, short-negotiate, data-offset-past, remaining-lies,
//! fragmented-too-large, zero-credits-data, oversize.
//!
//! Session scenarios ([`session::SCENARIOS`]): the transport's core in the client role
//! over verbs carries an anonymous SMB2 session on the `guest ok` share `--share`
//! (default `guest`), then READs and WRITEs with RDMA channels whose buffer
//! descriptors lie (`desc-*`: each must get an error status while the connection
//! keeps serving; `desc-long`, descriptors larger than asked, is accepted and moves
//! exactly what was asked), descriptors the client's HCA refuses (`token-*`: an error
//! status or a clean close, never success or a hang), the control case `rdma-ok`,
//! and keepalives: `keepalive-idle` idles `--wait` seconds answering them and is still
//! served, `keepalive-mute` stops processing anything and must be dropped within
//! `--wait` seconds.
//!
//! `smbd-fault serve ADDR:PORT SCENARIO [--hold SECS]` plays a server instead: one that
//! starves its SMB Direct client of send credits ([`serve::SCENARIOS`]).

#![deny(unsafe_code)]

mod client;
mod serve;
mod session;
mod smb2;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use smbdirect_transport::verbs::{
    Access, CmEventKind, CmId, CompChannel, ConnParam, Cq, EventChannel, Pd, QpCaps, RegisteredBuffer, Wc,
};
use smbdirect_transport::wire::{NegotiateRequest, NegotiateResponse, SMBD_VERSION_1};

const RECV_SIZE: usize = 1364;
const RECVS: usize = 16;
const SEND_SIZE: usize = 8192;
const SENDS: usize = 8;

struct Client {
    id: CmId,
    cq: Cq,
    _comp: CompChannel,
    recv: RegisteredBuffer,
    send: RegisteredBuffer,
    next_send: usize,
    ch: EventChannel,
    disconnected: Option<Instant>,
    received: Vec<Vec<u8>>,
}

fn connect(addr: SocketAddr) -> Result<Client, String> {
    let (ch, mut id) = client::resolve(addr)?;
    let ctx = id.context().ok_or("no device")?;
    let pd = Pd::new(ctx).map_err(|e| e.to_string())?;
    let comp = CompChannel::new(ctx).map_err(|e| e.to_string())?;
    let cq = Cq::new(ctx, &comp, 64).map_err(|e| e.to_string())?;
    let caps = QpCaps { max_send_wr: 16, max_recv_wr: RECVS as u32 + 1, max_send_sge: 1, max_recv_sge: 1 };
    id.create_qp(&pd, &cq, caps).map_err(|e| format!("create_qp: {e}"))?;
    let recv = RegisteredBuffer::new(&pd, RECV_SIZE * RECVS, Access::LOCAL_WRITE).map_err(|e| e.to_string())?;
    let send = RegisteredBuffer::new(&pd, SEND_SIZE * SENDS, Access::default()).map_err(|e| e.to_string())?;
    for i in 0..RECVS {
        let sge = recv.sge(i * RECV_SIZE, RECV_SIZE as u32).ok_or("sge")?;
        id.post_recv(i as u64, sge).map_err(|e| format!("post_recv: {e}"))?;
    }
    id.connect(ConnParam { responder_resources: 8, initiator_depth: 0 }, 7).map_err(|e| format!("connect: {e}"))?;
    match client::wait_cm(&ch, "connect")? {
        CmEventKind::Established { .. } => {}
        k => return Err(format!("connect: {k:?}")),
    }
    Ok(Client { id, cq, _comp: comp, recv, send, next_send: 0, ch, disconnected: None, received: Vec::new() })
}

impl Client {
    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        let i = self.next_send % SENDS;
        self.next_send += 1;
        let off = i * SEND_SIZE;
        if !self.send.write(off, bytes) {
            return Err("message larger than a send buffer".into());
        }
        let sge = self.send.sge(off, bytes.len() as u32).ok_or("sge")?;
        self.id.post_send(1000 + i as u64, sge, None).map_err(|e| format!("post_send: {e}"))
    }

    /// Collects receives and CM events for `d`, or until disconnected.
    fn pump(&mut self, d: Duration) {
        let end = Instant::now() + d;
        let mut wcs: Vec<Wc> = Vec::new();
        while Instant::now() < end && self.disconnected.is_none() {
            wcs.clear();
            let _ = self.cq.poll(&mut wcs, 16);
            for wc in &wcs {
                if wc.wr_id < RECVS as u64 {
                    if wc.status.is_ok() {
                        let mut b = vec![0u8; (wc.byte_len as usize).min(RECV_SIZE)];
                        self.recv.read(wc.wr_id as usize * RECV_SIZE, &mut b);
                        self.received.push(b);
                        if let Some(sge) = self.recv.sge(wc.wr_id as usize * RECV_SIZE, RECV_SIZE as u32) {
                            let _ = self.id.post_recv(wc.wr_id, sge);
                        }
                    }
                } else if let Err(e) = wc.status {
                    println!("send completion: {e}");
                }
            }
            while let Ok(Some(ev)) = self.ch.get_event() {
                if matches!(ev.kind, CmEventKind::Disconnected | CmEventKind::Error) {
                    self.disconnected = Some(Instant::now());
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn negotiate(credits: u16, max_recv: u32, max_frag: u32, min_v: u16, max_v: u16) -> Vec<u8> {
    NegotiateRequest {
        min_version: min_v,
        max_version: max_v,
        credits_requested: credits,
        preferred_send_size: RECV_SIZE as u32,
        max_receive_size: max_recv,
        max_fragmented_size: max_frag,
    }
    .to_bytes()
    .to_vec()
}

fn good_negotiate() -> Vec<u8> {
    negotiate(255, RECV_SIZE as u32, 1 << 20, SMBD_VERSION_1, SMBD_VERSION_1)
}

/// A data transfer message with explicit fields (no checks: may lie).
fn data(credits_req: u16, remaining: u32, offset: u32, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&credits_req.to_le_bytes());
    m.extend_from_slice(&1u16.to_le_bytes()); // credits granted
    m.extend_from_slice(&0u16.to_le_bytes()); // flags
    m.extend_from_slice(&0u16.to_le_bytes());
    m.extend_from_slice(&remaining.to_le_bytes());
    m.extend_from_slice(&offset.to_le_bytes());
    m.extend_from_slice(&len.to_le_bytes());
    m.extend_from_slice(&0u32.to_le_bytes()); // padding
    m.extend_from_slice(payload);
    m
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        return serve_main(&args[1..]);
    }
    let (Some(addr), Some(scenario)) = (args.first(), args.get(1)) else {
        eprintln!("usage: smbd-fault ADDR:PORT SCENARIO [--share NAME] [--wait SECS]");
        return ExitCode::from(2);
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("smbd-fault: bad address {addr}");
        return ExitCode::from(2);
    };
    let list: Vec<&str> = scenario.split(',').collect();
    if list.iter().all(|s| session::SCENARIOS.contains(s)) {
        let mut o = session::Opts { addr, share: "guest".into(), wait: Duration::from_secs(20) };
        let mut rest = args[2..].iter();
        while let Some(k) = rest.next() {
            match (k.as_str(), rest.next()) {
                ("--share", Some(v)) => o.share = v.clone(),
                ("--wait", Some(v)) if v.parse::<u64>().is_ok() => o.wait = Duration::from_secs(v.parse().unwrap_or(20)),
                _ => {
                    eprintln!("smbd-fault: bad option {k}");
                    return ExitCode::from(2);
                }
            }
        }
        // Several scenarios (comma-separated) run one after another, one connection each.
        let mut failed = false;
        for scenario in list {
            let t0 = Instant::now();
            match session::run(scenario, &o) {
                Ok(summary) => {
                    println!("{scenario}: {summary} ({} ms)", t0.elapsed().as_millis());
                    println!("{scenario}: PASS");
                }
                Err(e) => {
                    println!("{scenario}: {e} ({} ms)", t0.elapsed().as_millis());
                    println!("{scenario}: FAIL");
                    failed = true;
                }
            }
        }
        return if failed { ExitCode::from(1) } else { ExitCode::SUCCESS };
    }
    let mut c = match connect(addr) {
        Ok(c) => c,
        Err(e) => {
            println!("{scenario}: cannot connect: {e}");
            return ExitCode::from(1);
        }
    };
    let t0 = Instant::now();
    let mut negotiated = false;
    let mut first: Vec<Vec<u8>> = Vec::new();
    let (pre, post): (Vec<u8>, Vec<Vec<u8>>) = match scenario.as_str() {
        "ok" => (good_negotiate(), vec![]),
        "bad-version" => (negotiate(255, RECV_SIZE as u32, 1 << 20, 0x0200, 0x0200), vec![]),
        "zero-credits" => (negotiate(0, RECV_SIZE as u32, 1 << 20, SMBD_VERSION_1, SMBD_VERSION_1), vec![]),
        "small-receive" => (negotiate(255, 64, 1 << 20, SMBD_VERSION_1, SMBD_VERSION_1), vec![]),
        "small-fragmented" => (negotiate(255, RECV_SIZE as u32, 1000, SMBD_VERSION_1, SMBD_VERSION_1), vec![]),
        "short-negotiate" => (good_negotiate()[..10].to_vec(), vec![]),
        "data-offset-past" => (good_negotiate(), vec![data(255, 0, 24, 5000, &[0u8; 76])]),
        "remaining-lies" => {
            (good_negotiate(), vec![data(255, 100, 24, 50, &[1u8; 50]), data(255, 500, 24, 50, &[2u8; 50])])
        }
        "fragmented-too-large" => (good_negotiate(), vec![data(255, 0x7fff_0000, 24, 64, &[3u8; 64])]),
        "zero-credits-data" => (good_negotiate(), vec![data(0, 0, 24, 64, &[4u8; 64])]),
        "oversize" => (good_negotiate(), vec![data(255, 0, 24, 4000, &[5u8; 4000])]),
        s => {
            eprintln!("smbd-fault: unknown scenario {s}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = c.send(&pre) {
        println!("{scenario}: {e}");
        return ExitCode::from(1);
    }
    c.pump(Duration::from_millis(1500));
    first.append(&mut c.received);
    if let Some(r) = first.first() {
        match NegotiateResponse::decode(r) {
            Ok(resp) => {
                println!("{scenario}: negotiate response status {:#010x} granted {} max_rw {}", resp.status, resp.credits_granted, resp.max_read_write_size);
                negotiated = resp.status == 0;
            }
            Err(e) => println!("{scenario}: undecodable negotiate response ({} bytes): {e}", r.len()),
        }
    } else {
        println!("{scenario}: no negotiate response");
    }
    for m in &post {
        if c.disconnected.is_some() {
            break;
        }
        if let Err(e) = c.send(m) {
            println!("{scenario}: {e}");
        }
        c.pump(Duration::from_millis(200));
    }
    c.pump(Duration::from_secs(if scenario == "ok" { 2 } else { 10 }));
    let outcome = match c.disconnected {
        Some(t) => format!("server disconnected after {} ms", t.duration_since(t0).as_millis()),
        None => "still connected".to_string(),
    };
    println!("{scenario}: {outcome}");
    let pass = if scenario == "ok" { negotiated && c.disconnected.is_none() } else { c.disconnected.is_some() };
    let _ = c.id.disconnect();
    println!("{scenario}: {}", if pass { "PASS" } else { "FAIL" });
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn serve_main(args: &[String]) -> ExitCode {
    let (Some(addr), Some(scenario)) = (args.first().and_then(|a| a.parse::<SocketAddr>().ok()), args.get(1)) else {
        eprintln!("usage: smbd-fault serve ADDR:PORT {} [--hold SECS]", serve::SCENARIOS.join("|"));
        return ExitCode::from(2);
    };
    if !serve::SCENARIOS.contains(&scenario.as_str()) {
        eprintln!("smbd-fault: unknown server scenario {scenario}");
        return ExitCode::from(2);
    }
    let mut hold = Duration::from_secs(20);
    let mut rest = args[2..].iter();
    while let Some(k) = rest.next() {
        match (k.as_str(), rest.next().and_then(|v| v.parse::<u64>().ok())) {
            ("--hold", Some(v)) => hold = Duration::from_secs(v),
            _ => {
                eprintln!("smbd-fault: bad option {k}");
                return ExitCode::from(2);
            }
        }
    }
    match serve::run(addr, scenario, hold) {
        Ok(summary) => {
            println!("{scenario}: {summary}");
            println!("{scenario}: PASS");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{scenario}: {e}");
            println!("{scenario}: FAIL");
            ExitCode::from(1)
        }
    }
}
