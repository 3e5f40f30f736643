//! `smbd-tcp-bridge --proxy PATH --backend ADDR:PORT [-- PROXY-ARGS...]`: a stand-in
//! worker for testing the proxy before (or without) the server's own proxy support.
//! It starts the proxy with exec and a control socket exactly as the server does, and
//! carries every channel's SMB2 messages to a TCP SMB server at ADDR (Direct TCP
//! framing), one thread pair per channel. RDMA requests are never made (the TCP server
//! sees no channel); a test tool, not part of the server.

#![deny(unsafe_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use smbdirect_rdma_proxy::fdpass::{self, FrameReader};
use smbdirect_rdma_proxy::proto::{rdma_status, ChannelOffer, Frame, RdmaDone};

fn usage() -> ExitCode {
    eprintln!("usage: smbd-tcp-bridge --proxy PATH --backend ADDR:PORT [-- PROXY-ARGS...]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut proxy, mut backend, mut rest) = (None, None, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--proxy" => proxy = args.next(),
            "--backend" => backend = args.next(),
            "--" => rest.extend(args.by_ref()),
            _ => return usage(),
        }
    }
    let (Some(proxy), Some(backend)) = (proxy, backend) else { return usage() };
    let (ours, theirs) = match fdpass::seqpacket_pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("smbd-tcp-bridge: socketpair: {e}");
            return ExitCode::from(1);
        }
    };
    // The proxy's end survives exec.
    if let Err(e) = rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty()) {
        eprintln!("smbd-tcp-bridge: fcntl: {e}");
        return ExitCode::from(1);
    }
    let mut child = match Command::new(&proxy).arg("--control-fd").arg(theirs.as_raw_fd().to_string()).args(&rest).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smbd-tcp-bridge: cannot start {proxy}: {e}");
            return ExitCode::from(1);
        }
    };
    drop(theirs);
    let mut reader = FrameReader::new(4 << 20);
    let mut pool_fd: Option<OwnedFd> = None;
    loop {
        match reader.recv(&ours) {
            Ok(Some(r)) => match r.frame {
                Frame::Hello(h) => {
                    eprintln!("smbd-tcp-bridge: proxy hello: {h:?}");
                    pool_fd = r.fd;
                }
                Frame::ChannelOffer(o) => match r.fd {
                    Some(fd) => {
                        let backend = backend.clone();
                        std::thread::spawn(move || bridge(o, fd, &backend));
                    }
                    None => eprintln!("smbd-tcp-bridge: offer without a socket"),
                },
                f => eprintln!("smbd-tcp-bridge: unexpected control frame kind {}", f.kind()),
            },
            Ok(None) => break,
            Err(e) => {
                eprintln!("smbd-tcp-bridge: control socket: {e}");
                break;
            }
        }
    }
    drop(pool_fd);
    match child.wait() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("smbd-tcp-bridge: proxy exited: {s}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("smbd-tcp-bridge: wait: {e}");
            ExitCode::from(1)
        }
    }
}

fn write_msg(tcp: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let n = msg.len();
    if n >= 1 << 24 {
        return Err(std::io::Error::other("message too large for Direct TCP"));
    }
    tcp.write_all(&[0, (n >> 16) as u8, (n >> 8) as u8, n as u8])?;
    tcp.write_all(msg)
}

fn bridge(offer: ChannelOffer, sock: OwnedFd, backend: &str) {
    let id = offer.channel_id;
    eprintln!("smbd-tcp-bridge: channel {id} from {:?}: {:?}", offer.peer, offer.negotiated);
    let mut tcp = match TcpStream::connect(backend) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("smbd-tcp-bridge: channel {id}: connect {backend}: {e}");
            return;
        }
    };
    if let Err(e) = write_msg(&mut tcp, &offer.first_message) {
        eprintln!("smbd-tcp-bridge: channel {id}: {e}");
        return;
    }
    let sock = Arc::new(sock);
    let (s2, mut t2) = match tcp.try_clone() {
        Ok(t) => (sock.clone(), t),
        Err(e) => {
            eprintln!("smbd-tcp-bridge: {e}");
            return;
        }
    };
    // Server -> client.
    std::thread::spawn(move || {
        let mut hdr = [0u8; 4];
        loop {
            if t2.read_exact(&mut hdr).is_err() {
                break;
            }
            let n = (usize::from(hdr[1]) << 16) | (usize::from(hdr[2]) << 8) | usize::from(hdr[3]);
            let mut msg = vec![0u8; n];
            if t2.read_exact(&mut msg).is_err() {
                break;
            }
            if let Err(e) = fdpass::send_frame(s2.as_fd(), &Frame::Send { invalidate: None, msg }, None) {
                eprintln!("smbd-tcp-bridge: channel {id}: {e}");
                break;
            }
        }
        let _ = fdpass::send_frame(s2.as_fd(), &Frame::Close { reason: 0 }, None);
    });
    // Client -> server.
    let mut reader = FrameReader::new(16 << 20);
    loop {
        match reader.recv(sock.as_fd()) {
            Ok(Some(r)) => match r.frame {
                Frame::Recv(m) => {
                    if write_msg(&mut tcp, &m).is_err() {
                        break;
                    }
                }
                Frame::Rdma(req) => {
                    let done = RdmaDone { req_id: req.req_id, status: rdma_status::BAD_REQUEST, bytes: 0 };
                    let _ = fdpass::send_frame(sock.as_fd(), &Frame::RdmaDone(done), None);
                }
                Frame::Close { reason } => {
                    eprintln!("smbd-tcp-bridge: channel {id}: closed by the proxy ({reason})");
                    break;
                }
                f => eprintln!("smbd-tcp-bridge: channel {id}: unexpected frame kind {}", f.kind()),
            },
            Ok(None) => break,
            Err(e) => {
                eprintln!("smbd-tcp-bridge: channel {id}: {e}");
                break;
            }
        }
    }
    let _ = tcp.shutdown(Shutdown::Both);
}
