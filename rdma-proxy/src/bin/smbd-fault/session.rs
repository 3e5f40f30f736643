//! Scenarios past the SMB Direct negotiate: an SMB2 session (anonymous, on a
//! `guest ok` share) over the core-driven client, then READs and WRITEs whose RDMA
//! buffer descriptors lie, descriptors the client's HCA refuses, and keepalive
//! behaviour. Each scenario is one connection (so the proxy's per-channel counters
//! belong to one case) and returns a one-line summary when the server behaved.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smbdirect_transport::smbd::Config;
use smbdirect_transport::wire::BufferDescriptorV1;

use crate::client::{SmbdClient, DATA_SIZE};
use crate::smb2::{
    Rw, Smb2, CHANNEL_NONE, CHANNEL_RDMA_V1, CHANNEL_RDMA_V1_INVALIDATE, HEADER_LEN, RW_FIXED_END, STATUS_SUCCESS,
};

pub const SCENARIOS: &[&str] = &[
    "rdma-ok",
    "desc-count-0",
    "desc-partial",
    "desc-too-many",
    "desc-past-end",
    "desc-in-header",
    "desc-short",
    "desc-over-max",
    "desc-long",
    "token-invalid-read",
    "token-invalid-write",
    "token-foreign-read",
    "token-foreign-write",
    "token-outside-read",
    "token-outside-write",
    "keepalive-idle",
    "keepalive-mute",
];

/// The file each scenario creates and the bytes it starts with.
const FILE: &str = "smbd-fault.bin";
const FILE_LEN: usize = 64 << 10;

fn pattern(off: usize) -> u8 {
    ((off * 31) >> 3) as u8 ^ 0x5a
}

fn client_config() -> Config {
    Config {
        receive_credit_max: 64,
        send_credit_target: 64,
        send_slots: 32,
        max_read_write_size: 16 << 20,
        ..Config::cifs()
    }
}

pub struct Opts {
    pub addr: SocketAddr,
    pub share: String,
    pub wait: Duration,
}

fn desc(c: &SmbdClient, off: usize, len: u32) -> BufferDescriptorV1 {
    BufferDescriptorV1 { offset: c.data.addr() + off as u64, token: c.data.rkey(), length: len }
}

fn is_error(status: u32) -> bool {
    status >> 30 == 3
}

/// Connects, logs on, creates the file and writes its first 64 KiB inline.
fn session(o: &Opts, with_file: bool) -> Result<Smb2, String> {
    let c = SmbdClient::connect(o.addr, client_config())?;
    let mut s = Smb2::new(c);
    s.logon(&o.addr.ip().to_string(), &o.share)?;
    if with_file {
        s.create(FILE)?;
        let data: Vec<u8> = (0..FILE_LEN).map(pattern).collect();
        let w = Rw { inline: data, ..Rw::rdma(CHANNEL_NONE, 0, 0, &[]) };
        match s.write(&w)? {
            (STATUS_SUCCESS, n) if n as usize == FILE_LEN => {}
            (st, n) => return Err(format!("inline WRITE of the file: status {st:#010x}, {n} bytes")),
        }
    }
    Ok(s)
}

/// An inline READ of the whole file: the connection is still served and the file is
/// exactly what was written (no lying WRITE changed or extended it).
fn check_file(s: &mut Smb2, extra: &[u8]) -> Result<(), String> {
    let r = Rw::rdma(CHANNEL_NONE, (FILE_LEN + extra.len() + 4096) as u32, 0, &[]);
    let (st, n, data) = s.read(&r).map_err(|e| format!("inline READ afterwards: {e}"))?;
    if st != STATUS_SUCCESS {
        return Err(format!("inline READ afterwards: status {st:#010x}"));
    }
    let want: Vec<u8> = (0..FILE_LEN).map(pattern).chain(extra.iter().copied()).collect();
    if n as usize != want.len() || data != want {
        return Err(format!("the file changed: {n} bytes read back, {} expected (or different bytes)", want.len()));
    }
    Ok(())
}

/// Sends each lying request as a READ and as a WRITE with both RDMA channels; each
/// must be refused with an error status while the connection stays up.
fn lies(o: &Opts, make: impl Fn(&SmbdClient, u32) -> Vec<Rw>) -> Result<String, String> {
    let mut s = session(o, true)?;
    let mrw = s.c.negotiated.map_or(0, |n| n.max_read_write_size);
    let mut lines = Vec::new();
    for channel in [CHANNEL_RDMA_V1, CHANNEL_RDMA_V1_INVALIDATE] {
        for rw in make(&s.c, mrw) {
            let rw = Rw { channel, ..rw };
            for op in ["READ", "WRITE"] {
                let st = if op == "READ" { s.read(&rw)?.0 } else { s.write(&rw)?.0 };
                let what = format!("{op} channel {channel} length {} info {}+{} ({} bytes sent)", rw.length,
                    rw.info_offset.map_or(RW_FIXED_END, usize::from), rw.info_len.map_or(rw.info.len(), usize::from), rw.info.len());
                if !is_error(st) {
                    return Err(format!("{what}: status {st:#010x}, not an error"));
                }
                println!("  {what}: refused with {st:#010x}");
                lines.push(st);
            }
        }
    }
    check_file(&mut s, &[])?;
    s.c.disconnect();
    Ok(format!("{} lying requests refused with an error status, the connection still served them, the file is unchanged", lines.len()))
}

/// A request the client's HCA will refuse once the server tries the RDMA: the server
/// must answer an error or close the channel, never report success or hang.
fn bad_token(o: &Opts, write: bool, make: impl Fn(&SmbdClient) -> BufferDescriptorV1) -> Result<String, String> {
    let mut s = session(o, true)?;
    let d = make(&s.c);
    let rw = Rw::rdma(CHANNEL_RDMA_V1, d.length, 0, &[d]);
    let t0 = Instant::now();
    let r = if write { s.write(&rw).map(|(st, _)| st) } else { s.read(&rw).map(|(st, _, _)| st) };
    let op = if write { "WRITE" } else { "READ" };
    let what = format!("{op} with descriptor offset {:#x} token {:#x}", d.offset, d.token);
    match r {
        Ok(st) if !is_error(st) => Err(format!("{what}: status {st:#010x}, not an error")),
        Ok(st) => {
            // An error answer: the channel may still be up (then it must serve) or be
            // closing (the queue pair went to the error state).
            match check_file(&mut s, &[]) {
                Ok(()) => Ok(format!("{what}: error status {st:#010x} after {} ms; the connection still serves", t0.elapsed().as_millis())),
                Err(_) if s.c.ended.is_some() => Ok(format!(
                    "{what}: error status {st:#010x}, then the server closed the channel ({})",
                    s.c.ended.as_ref().map_or("", |e| e.1.as_str())
                )),
                Err(e) => Err(format!("{what}: error status {st:#010x}, then {e}")),
            }
        }
        Err(e) if s.c.ended.is_some() => {
            Ok(format!("{what}: the server closed the channel after {} ms ({e})", t0.elapsed().as_millis()))
        }
        Err(e) => Err(format!("{what}: {e}")),
    }
}

pub fn run(scenario: &str, o: &Opts) -> Result<String, String> {
    match scenario {
        // The control case: RDMA really moves data both ways with these buffers.
        "rdma-ok" => {
            let mut s = session(o, true)?;
            let n = 32 << 10;
            let src: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(13) ^ 0xa5).collect();
            if !s.c.data.write(0, &src) {
                return Err("data buffer".into());
            }
            let w = Rw::rdma(CHANNEL_RDMA_V1, n as u32, FILE_LEN as u64, &[desc(&s.c, 0, n as u32)]);
            match s.write(&w)? {
                (STATUS_SUCCESS, c) if c as usize == n => {}
                (st, c) => return Err(format!("RDMA WRITE: status {st:#010x}, count {c}")),
            }
            // Read the whole file back by RDMA into two descriptors far apart.
            let total = FILE_LEN + n;
            let (a, b) = (1 << 20, 2 << 20);
            let half = (total / 2) as u32;
            let r = Rw::rdma(CHANNEL_RDMA_V1, total as u32, 0, &[desc(&s.c, a, half), desc(&s.c, b, total as u32 - half)]);
            match s.read(&r)? {
                (STATUS_SUCCESS, m, _) if m as usize == total => {}
                (st, m, _) => return Err(format!("RDMA READ: status {st:#010x}, {m} bytes")),
            }
            let mut got = vec![0u8; total];
            let (h, t) = got.split_at_mut(half as usize);
            if !s.c.data.read(a, h) || !s.c.data.read(b, t) {
                return Err("data buffer".into());
            }
            let want: Vec<u8> = (0..FILE_LEN).map(pattern).chain(src.iter().copied()).collect();
            if got != want {
                return Err("RDMA READ returned other bytes than were written".into());
            }
            check_file(&mut s, &src)?;
            s.c.disconnect();
            Ok(format!("RDMA WRITE of {n} bytes and RDMA READ of {total} bytes (2 descriptors) moved the right bytes"))
        }
        "desc-count-0" => lies(o, |_, _| vec![Rw::rdma(0, 4096, 0, &[])]),
        // Channel info that is not a whole number of descriptors (one and a half).
        "desc-partial" => lies(o, |c, _| {
            let mut r = Rw::rdma(0, 4096, 0, &[desc(c, 0, 4096)]);
            r.info.extend_from_slice(&[0u8; 8]);
            vec![r]
        }),
        // More descriptors than the server (and the proxy) accept: 65 of 64 bytes.
        "desc-too-many" => lies(o, |c, _| {
            let d: Vec<_> = (0..65).map(|i| desc(c, i * 64, 64)).collect();
            vec![Rw::rdma(0, 4096, 0, &d)]
        }),
        // ChannelInfoOffset/Length running past the end of the message: a length that
        // claims two descriptors where one is sent, and an offset 8 bytes too far.
        "desc-past-end" => lies(o, |c, _| {
            let one = Rw::rdma(0, 4096, 0, &[desc(c, 0, 4096)]);
            vec![
                Rw { info_len: Some(32), ..one.clone() },
                Rw { info_offset: Some((RW_FIXED_END + 8) as u16), ..one.clone() },
                Rw { info_offset: Some(u16::MAX - 8), ..one },
            ]
        }),
        // Channel info pointing into the header or the fixed part of the request.
        "desc-in-header" => lies(o, |c, _| {
            let one = Rw::rdma(0, 4096, 0, &[desc(c, 0, 4096)]);
            vec![Rw { info_offset: Some(0), ..one.clone() }, Rw { info_offset: Some((HEADER_LEN + 16) as u16), ..one }]
        }),
        // Descriptors covering less than Length / RemainingBytes.
        "desc-short" => lies(o, |c, _| {
            vec![
                Rw::rdma(0, 8192, 0, &[desc(c, 0, 4096)]),
                Rw::rdma(0, 8192, 0, &[desc(c, 0, 4096), desc(c, 8192, 4095)]),
            ]
        }),
        // A length over the negotiated MaxReadWriteSize (descriptors covering it).
        "desc-over-max" => lies(o, |c, mrw| {
            let len = mrw.saturating_add(4096);
            let first = (DATA_SIZE as u32).min(len - 4096);
            vec![Rw::rdma(0, len, 0, &[desc(c, 0, first), desc(c, 0, len - first)])]
        }),
        // Descriptors covering MORE than asked: accepted (as ksmbd does), and exactly
        // Length / RemainingBytes move; the rest of the client's buffer is untouched.
        "desc-long" => {
            let mut s = session(o, true)?;
            let n = 16 << 10;
            let canary = vec![0xeeu8; 64 << 10];
            if !s.c.data.write(0, &canary) {
                return Err("data buffer".into());
            }
            let r = Rw::rdma(CHANNEL_RDMA_V1, n as u32, 0, &[desc(&s.c, 0, 64 << 10)]);
            match s.read(&r)? {
                (STATUS_SUCCESS, m, _) if m as usize == n => {}
                (st, m, _) => return Err(format!("READ of {n} into a 64 KiB descriptor: status {st:#010x}, {m} bytes")),
            }
            let mut got = vec![0u8; 64 << 10];
            s.c.data.read(0, &mut got);
            let want: Vec<u8> = (0..n).map(pattern).chain(std::iter::repeat_n(0xee, (64 << 10) - n)).collect();
            if got != want {
                return Err("READ wrote outside the first Length bytes of the descriptor (or wrong bytes)".into());
            }
            let src: Vec<u8> = (0..64 << 10).map(|i: usize| (i as u8) ^ 0x3c).collect();
            s.c.data.write(1 << 20, &src);
            let w = Rw::rdma(CHANNEL_RDMA_V1, n as u32, FILE_LEN as u64, &[desc(&s.c, 1 << 20, 64 << 10)]);
            match s.write(&w)? {
                (STATUS_SUCCESS, c) if c as usize == n => {}
                (st, c) => return Err(format!("WRITE of {n} from a 64 KiB descriptor: status {st:#010x}, count {c}")),
            }
            check_file(&mut s, &src[..n])?;
            s.c.disconnect();
            Ok(format!("READ and WRITE of {n} bytes with a 64 KiB descriptor: accepted, exactly {n} bytes moved each way"))
        }
        "token-invalid-read" | "token-invalid-write" => bad_token(o, scenario.ends_with("write"), |c| BufferDescriptorV1 {
            offset: c.data.addr(),
            token: c.data.rkey() ^ 0x5a5a_5a00,
            length: 4096,
        }),
        "token-foreign-read" | "token-foreign-write" => bad_token(o, scenario.ends_with("write"), |c| BufferDescriptorV1 {
            offset: c.foreign.addr(),
            token: c.foreign.rkey(),
            length: 4096,
        }),
        "token-outside-read" | "token-outside-write" => {
            bad_token(o, scenario.ends_with("write"), |c| desc(c, DATA_SIZE, 4096))
        }
        // Answers keepalives (the core does) while idle: still served afterwards.
        "keepalive-idle" => {
            let mut s = session(o, true)?;
            let end = Instant::now() + o.wait;
            while Instant::now() < end {
                if let Some((_, why)) = &s.c.ended {
                    return Err(format!("dropped while idle: {why}"));
                }
                s.c.step(Duration::from_millis(200), false);
            }
            check_file(&mut s, &[])?;
            s.c.disconnect();
            Ok(format!("idle for {} s answering keepalives, then served", o.wait.as_secs()))
        }
        // Stops processing anything (keepalives included): must be dropped.
        "keepalive-mute" => {
            let mut s = session(o, false)?;
            let t0 = Instant::now();
            let end = t0 + o.wait;
            while s.c.ended.is_none() && Instant::now() < end {
                s.c.step(Duration::from_millis(200), true);
            }
            match &s.c.ended {
                Some((t, why)) => Ok(format!("muted, dropped by the server after {:.1} s ({why})", t.duration_since(t0).as_secs_f64())),
                None => Err(format!("muted for {} s and still connected", o.wait.as_secs())),
            }
        }
        s => Err(format!("unknown scenario {s}")),
    }
}
