//! `smbd-tcp-front --control-fd N --listen ADDR:PORT [...]`: a stand-in for
//! `rdma-proxy` without verbs, for tests of the server's side of the proxy
//! protocol on any host. It takes the same command line (launch::ProxyArgs),
//! creates and announces the sealed pool, and offers every Direct TCP
//! connection it accepts to the server as a channel, exactly as the proxy
//! offers an SMB Direct connection: ChannelOffer with the first message, then
//! Recv/Send frames. It moves no payload by RDMA: an `Rdma` request is
//! answered BAD_REQUEST (clients over TCP never ask for an RDMA channel).
//! It exits when the control socket closes.

#![deny(unsafe_code)]

use smbdirect_rdma_proxy::fdpass::{self, send_frame, send_parts, seqpacket_pair, FrameReader, Received};
use smbdirect_rdma_proxy::launch::{exit, ProxyArgs};
use smbdirect_rdma_proxy::pool::PoolMap;
use smbdirect_rdma_proxy::proto::{
    kind, listener_status, rdma_status, ChannelOffer, Frame, Hello, ListenerReport, Negotiated, RdmaDone,
    MAX_FRAME_OVERHEAD,
};
use smbdirect_transport::tcp;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Largest SMB2 message relayed (Direct TCP's 24-bit length); the server
/// bounds what it accepts on each channel itself.
const MAX_MESSAGE: usize = tcp::MAX_FRAME_LEN;
/// Largest first message offered with a channel: as the real proxy, whose
/// first message is bounded by SMB Direct's max fragmented receive size. A
/// larger one closes the connection instead of being offered (an oversized
/// offer is a protocol error on the control socket).
const MAX_FIRST_MESSAGE: usize = 1 << 20;

/// Takes ownership of the control socket inherited across exec.
#[allow(unsafe_code)]
fn inherited_fd(n: i32) -> Result<OwnedFd, String> {
    if n < 3 || std::fs::symlink_metadata(format!("/proc/self/fd/{n}")).is_err() {
        return Err(format!("--control-fd {n}: not an open inherited descriptor"));
    }
    // SAFETY: the parent passed descriptor `n` at exec for this process's
    // exclusive use as the control socket; nothing else here owns or closes
    // it (it is taken once, at start, after checking that it is open).
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn main() -> ExitCode {
    let args = match ProxyArgs::from_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("smbd-tcp-front: {e}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    let control = match inherited_fd(args.control_fd) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            eprintln!("smbd-tcp-front: {e}");
            return ExitCode::from(exit::USAGE as u8);
        }
    };
    let pool = match PoolMap::create(args.pool_size) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("smbd-tcp-front: {e}");
            return ExitCode::from(exit::FAILED as u8);
        }
    };
    let control_lock = Arc::new(Mutex::new(()));
    let say = |f: &Frame, fd: Option<std::os::fd::BorrowedFd<'_>>| {
        let _g = control_lock.lock().unwrap_or_else(|p| p.into_inner());
        send_frame(control.as_fd(), f, fd)
    };
    let hello = Frame::Hello(Hello::whole_pool(args.pool_size, args.max_io_size));
    if let Err(e) = say(&hello, Some(pool.fd())) {
        eprintln!("smbd-tcp-front: control socket: {e}");
        return ExitCode::from(exit::USAGE as u8);
    }
    if args.listen.is_empty() {
        let _ = say(&report(None, listener_status::NO_DEVICE, "no --listen address"), None);
        return ExitCode::from(exit::NO_DEVICE as u8);
    }
    let mut listeners = Vec::new();
    for a in &args.listen {
        match TcpListener::bind(a) {
            Ok(l) => {
                let _ = say(&report(Some(*a), listener_status::LISTENING, ""), None);
                listeners.push(l);
            }
            Err(e) => {
                let st = if e.kind() == std::io::ErrorKind::AddrInUse { listener_status::PORT_IN_USE } else { listener_status::OTHER };
                let _ = say(&report(Some(*a), st, &e.to_string()), None);
            }
        }
    }
    if listeners.is_empty() {
        return ExitCode::from(exit::PORT_IN_USE as u8);
    }
    let next_id = Arc::new(AtomicU64::new(1));
    for l in listeners {
        let control = control.clone();
        let control_lock = control_lock.clone();
        let next_id = next_id.clone();
        let max_io = args.max_io_size;
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let control = control.clone();
                let control_lock = control_lock.clone();
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                std::thread::spawn(move || {
                    if let Err(e) = relay(s, id, max_io, &control, &control_lock) {
                        eprintln!("smbd-tcp-front: channel {id}: {e}");
                    }
                });
            }
        });
    }
    // Serve the control socket until the server goes away.
    let mut reader = FrameReader::new(1 << 20);
    loop {
        match reader.recv(control.as_fd()) {
            Ok(Some(Received { frame: Frame::Stats { req_id }, .. })) => {
                let _ = say(&Frame::StatsReply { req_id, channels: Vec::new() }, None);
            }
            Ok(Some(_)) => {}
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("smbd-tcp-front: control socket: {e}");
                return ExitCode::from(exit::FAILED as u8);
            }
        }
    }
}

fn report(addr: Option<std::net::SocketAddr>, status: u32, message: &str) -> Frame {
    Frame::Listener(ListenerReport { device: "tcp".into(), port_num: 0, addr, status, message: message.into() })
}

fn read_message(s: &mut TcpStream, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut hdr = [0u8; tcp::HEADER_LEN];
    match s.read_exact(&mut hdr) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = tcp::parse_header(hdr, limit).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    let mut msg = vec![0u8; len];
    s.read_exact(&mut msg)?;
    Ok(Some(msg))
}

/// One TCP connection as one channel.
fn relay(mut tcp_in: TcpStream, id: u64, max_io: u32, control: &OwnedFd, control_lock: &Mutex<()>) -> Result<(), String> {
    let Some(first) = read_message(&mut tcp_in, MAX_FIRST_MESSAGE).map_err(|e| e.to_string())? else { return Ok(()) };
    let mut client_guid = [0u8; 16];
    // An SMB2 NEGOTIATE carries the ClientGUID at body offset 12.
    if first.get(0..4) == Some(&b"\xfeSMB"[..]) && first.get(12..14) == Some(&[0, 0][..]) {
        if let Some(g) = first.get(64 + 12..64 + 28) {
            client_guid.copy_from_slice(g);
        }
    }
    let (mine, theirs) = seqpacket_pair().map_err(|e| e.to_string())?;
    let offer = ChannelOffer {
        channel_id: id,
        client_guid,
        peer: tcp_in.peer_addr().ok(),
        local: tcp_in.local_addr().ok(),
        negotiated: Negotiated {
            max_read_write_size: max_io,
            max_send_size: 1364,
            // What this stand-in really carries per message (Direct TCP frames):
            // the worker refuses inline READs whose response would exceed it.
            max_fragmented_send: u32::try_from(MAX_MESSAGE).unwrap_or(u32::MAX),
            max_fragmented_recv: 1 << 20,
        },
        first_message: first,
    };
    {
        let _g = control_lock.lock().unwrap_or_else(|p| p.into_inner());
        send_frame(control.as_fd(), &Frame::ChannelOffer(offer), Some(theirs.as_fd())).map_err(|e| e.to_string())?;
    }
    drop(theirs);
    let chan = Arc::new(mine);
    let chan_lock = Arc::new(Mutex::new(()));
    let mut tcp_out = tcp_in.try_clone().map_err(|e| e.to_string())?;
    // TCP -> channel.
    let (c2, l2) = (chan.clone(), chan_lock.clone());
    let up = std::thread::spawn(move || {
        while let Ok(Some(m)) = read_message(&mut tcp_in, MAX_MESSAGE) {
            let _g = l2.lock().unwrap_or_else(|p| p.into_inner());
            if send_parts(c2.as_fd(), kind::RECV, &[&m]).is_err() {
                break;
            }
        }
        let _ = tcp_in.shutdown(Shutdown::Both);
        let _ = rustix::net::shutdown(&*c2, rustix::net::Shutdown::Both);
    });
    // Channel -> TCP.
    let mut reader = FrameReader::new(MAX_MESSAGE + MAX_FRAME_OVERHEAD);
    loop {
        match reader.recv(chan.as_fd()) {
            Ok(Some(Received { frame: Frame::Send { msg, .. }, .. })) => {
                let hdr = tcp::encode_header(msg.len()).map_err(|e| e.to_string())?;
                if tcp_out.write_all(&hdr).and_then(|_| tcp_out.write_all(&msg)).is_err() {
                    break;
                }
            }
            // (An RdmaSend's answer is not sent when its transfer is refused.)
            Ok(Some(Received { frame: Frame::Rdma(r) | Frame::RdmaSend { req: r, .. }, .. })) => {
                let done = Frame::RdmaDone(RdmaDone { req_id: r.req_id, status: rdma_status::BAD_REQUEST, bytes: 0 });
                let _g = chan_lock.lock().unwrap_or_else(|p| p.into_inner());
                if fdpass::send_frame(chan.as_fd(), &done, None).is_err() {
                    break;
                }
            }
            Ok(Some(Received { frame: Frame::Close { .. }, .. })) | Ok(None) => break,
            Ok(Some(Received { frame, .. })) => {
                eprintln!("smbd-tcp-front: channel {id}: unexpected frame kind {}", frame.kind());
                break;
            }
            Err(e) => {
                eprintln!("smbd-tcp-front: channel {id}: {e}");
                break;
            }
        }
    }
    let _ = tcp_out.shutdown(Shutdown::Both);
    let _ = rustix::net::shutdown(&*chan, rustix::net::Shutdown::Both);
    let _ = up.join();
    Ok(())
}
