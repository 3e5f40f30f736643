//! One frame at a time over AF_UNIX SOCK_SEQPACKET, with at most one fd
//! attached by SCM_RIGHTS to a frame's first datagram. Received fds are
//! close-on-exec (MSG_CMSG_CLOEXEC) so a later exec never leaks them.
//!
//! Built on rustix's safe sendmsg/recvmsg: this module needs no `unsafe`.
//! Blocking and non-blocking sockets both work: on a non-blocking socket
//! `recv` returns `WouldBlock` as an I/O error and keeps its reassembly
//! state for the next call; a sender that must not block queues the
//! datagrams of [`Frame::to_datagrams`] itself and sends them with
//! [`send_datagram`].

use crate::proto::{kind, splittable, Frame, FrameError, Header, ProtoError, Reassembler, MAX_DATAGRAM, MAX_FRAGMENT_BODY};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum FdPassError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    #[error("datagram truncated (larger than {MAX_DATAGRAM} bytes)")]
    Truncated,
    #[error("ancillary data truncated or more than one fd attached")]
    TooManyFds,
    #[error("frame kind {0} arrived without its fd")]
    MissingFd(u8),
    #[error("frame kind {0} carries an fd it may not")]
    UnexpectedFd(u8),
    #[error("short send: {sent} of {len} bytes")]
    ShortSend { sent: usize, len: usize },
}

impl FdPassError {
    /// A non-blocking socket had nothing to read (or no room to write).
    pub fn is_would_block(&self) -> bool {
        matches!(self, FdPassError::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Whether frames of this kind carry exactly one fd (on their first datagram).
pub fn carries_fd(k: u8) -> bool {
    matches!(k, kind::HELLO | kind::CHANNEL_OFFER | kind::CHANNEL_PASSED)
}

/// A connected SOCK_SEQPACKET pair, both ends close-on-exec (the supervisor
/// clears CLOEXEC on the child's end itself before exec).
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?)
}

/// Sends one datagram, with `fd` attached if given. Never raises SIGPIPE.
pub fn send_datagram(sock: BorrowedFd<'_>, data: &[u8], fd: Option<BorrowedFd<'_>>) -> Result<(), FdPassError> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(FdPassError::TooManyFds);
        }
    }
    loop {
        match rustix::net::sendmsg(sock, &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(n) => return Err(FdPassError::ShortSend { sent: n, len: data.len() }),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io::Error::from(e).into()),
        }
    }
}

/// Receives one datagram into `buf` (at least [`MAX_DATAGRAM`] long).
/// Returns `None` at end of stream. An fd that arrives is close-on-exec.
pub fn recv_datagram(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Option<(usize, Option<OwnedFd>)>, FdPassError> {
    // Room for two fds so that a peer attaching extras is detected (and the
    // extras closed when the buffer drops) instead of silently truncated.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match rustix::net::recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(m) => break m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io::Error::from(e).into()),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if msg.flags.contains(ReturnFlags::TRUNC) {
        return Err(FdPassError::Truncated);
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > 1 {
        return Err(FdPassError::TooManyFds);
    }
    if msg.bytes == 0 && fds.is_empty() {
        // Every frame has an 8-byte header: zero bytes is end of stream.
        return Ok(None);
    }
    Ok(Some((msg.bytes, fds.pop())))
}

/// Sends a whole frame (split with MORE as needed); `fd` goes with the first
/// datagram. Checks the frame kind's fd rule.
pub fn send_frame(sock: BorrowedFd<'_>, frame: &Frame, fd: Option<BorrowedFd<'_>>) -> Result<(), FdPassError> {
    let k = frame.kind();
    match (carries_fd(k), fd.is_some()) {
        (true, false) => return Err(FdPassError::MissingFd(k)),
        (false, true) => return Err(FdPassError::UnexpectedFd(k)),
        _ => {}
    }
    let mut fd = fd;
    for d in frame.to_datagrams()? {
        send_datagram(sock, &d, fd.take())?;
    }
    Ok(())
}

/// Sends a frame of kind `k` whose body is the concatenation of `parts`,
/// split with MORE like [`Frame::to_datagrams`], but gathering the parts with
/// iovecs instead of copying them (the hot path: `Send`/`Recv` of a message
/// behind its small prefix). Kinds that carry an fd cannot go this way.
pub fn send_parts(sock: BorrowedFd<'_>, k: u8, parts: &[&[u8]]) -> Result<(), FdPassError> {
    if carries_fd(k) {
        return Err(FdPassError::MissingFd(k));
    }
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total > MAX_FRAGMENT_BODY && !splittable(k) {
        return Err(ProtoError::from(FrameError::NotSplittable(k)).into());
    }
    if total > u32::MAX as usize {
        return Err(ProtoError::from(FrameError::TooLarge { size: total, limit: u32::MAX as usize }).into());
    }
    // (part index, offset inside it) of the next body byte to send.
    let (mut pi, mut po) = (0usize, 0usize);
    let mut left = total;
    loop {
        let n = left.min(MAX_FRAGMENT_BODY);
        left -= n;
        let hdr = Header { kind: k, more: left > 0, len: n as u32 }.encode();
        let mut iov = Vec::with_capacity(parts.len() + 1);
        iov.push(IoSlice::new(&hdr));
        let mut need = n;
        while need > 0 {
            let Some(p) = parts.get(pi) else { break };
            let take = (p.len() - po).min(need);
            if take > 0 {
                iov.push(IoSlice::new(&p[po..po + take]));
            }
            need -= take;
            po += take;
            if po == p.len() {
                pi += 1;
                po = 0;
            }
        }
        let len = hdr.len() + n;
        let mut control = SendAncillaryBuffer::default();
        loop {
            match rustix::net::sendmsg(sock, &iov, &mut control, SendFlags::NOSIGNAL) {
                Ok(sent) if sent == len => break,
                Ok(sent) => return Err(FdPassError::ShortSend { sent, len }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(io::Error::from(e).into()),
            }
        }
        if left == 0 {
            return Ok(());
        }
    }
}

/// A received frame and the fd that came with it (Hello, ChannelOffer).
#[derive(Debug)]
pub struct Received {
    pub frame: Frame,
    pub fd: Option<OwnedFd>,
}

/// Reads frames from one socket, reassembling split frames up to a bound.
pub struct FrameReader {
    reasm: Reassembler,
    buf: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl FrameReader {
    /// `limit` bounds a frame's body (see [`Reassembler::new`]).
    pub fn new(limit: usize) -> Self {
        FrameReader { reasm: Reassembler::new(limit), buf: vec![0; MAX_DATAGRAM], fd: None }
    }

    /// Receives the next whole frame; `None` at end of stream between
    /// frames (end of stream inside a split frame is an error). Any error
    /// but `WouldBlock` means the socket must be dropped.
    pub fn recv(&mut self, sock: impl AsFd) -> Result<Option<Received>, FdPassError> {
        let sock = sock.as_fd();
        loop {
            let Some((n, fd)) = recv_datagram(sock, &mut self.buf)? else {
                if self.reasm.in_progress() {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "end of stream inside a split frame").into());
                }
                return Ok(None);
            };
            let first = !self.reasm.in_progress();
            let dg = &self.buf[..n];
            let k = dg.first().copied().unwrap_or(0);
            if let Some(fd) = fd {
                if !first || !carries_fd(k) {
                    return Err(FdPassError::UnexpectedFd(k));
                }
                self.fd = Some(fd);
            } else if first && carries_fd(k) {
                return Err(FdPassError::MissingFd(k));
            }
            match self.reasm.push(dg) {
                Ok(Some(frame)) => return Ok(Some(Received { frame, fd: self.fd.take() })),
                Ok(None) => continue,
                Err(e) => {
                    self.fd = None;
                    return Err(e.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tests::samples;
    use std::io::{Read, Seek, SeekFrom, Write};

    fn tmpfile_with(content: &[u8]) -> std::fs::File {
        let fd = rustix::fs::memfd_create("fdpass-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(content).unwrap();
        f
    }

    /// Every frame crosses a real socketpair; Hello and ChannelOffer bring an
    /// fd whose file is the one sent, and it arrives close-on-exec.
    #[test]
    fn socketpair_round_trip_of_every_frame_with_fd() {
        let (a, b) = seqpacket_pair().unwrap();
        let mut reader = FrameReader::new(1 << 20);
        for (i, f) in samples().into_iter().enumerate() {
            let file = tmpfile_with(format!("file {i}").as_bytes());
            let fd = carries_fd(f.kind()).then(|| file.as_fd());
            // Send from a thread: big frames exceed the socket buffer.
            let got = std::thread::scope(|s| {
                let a = &a;
                let f2 = f.clone();
                let h = s.spawn(move || send_frame(a.as_fd(), &f2, fd));
                let got = reader.recv(&b).unwrap().unwrap();
                h.join().unwrap().unwrap();
                got
            });
            assert_eq!(got.frame, f);
            match got.fd {
                Some(fd) => {
                    assert!(carries_fd(f.kind()));
                    let flags = rustix::io::fcntl_getfd(&fd).unwrap();
                    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
                    let mut rf = std::fs::File::from(fd);
                    rf.seek(SeekFrom::Start(0)).unwrap();
                    let mut s = String::new();
                    rf.read_to_string(&mut s).unwrap();
                    assert_eq!(s, format!("file {i}"));
                }
                None => assert!(!carries_fd(f.kind())),
            }
        }
        drop(a);
        assert!(reader.recv(&b).unwrap().is_none());
    }

    #[test]
    fn fd_rules_are_enforced_both_ways() {
        let (a, b) = seqpacket_pair().unwrap();
        let file = tmpfile_with(b"x");
        // The sender refuses a Hello without fd and a Close with one.
        let hello = samples().remove(0);
        assert!(matches!(send_frame(a.as_fd(), &hello, None), Err(FdPassError::MissingFd(kind::HELLO))));
        let close = Frame::Close { reason: 0 };
        assert!(matches!(send_frame(a.as_fd(), &close, Some(file.as_fd())), Err(FdPassError::UnexpectedFd(kind::CLOSE))));
        // A lying peer: datagrams sent raw.
        let mut reader = FrameReader::new(1 << 20);
        send_datagram(a.as_fd(), &close.to_datagrams().unwrap()[0], Some(file.as_fd())).unwrap();
        assert!(matches!(reader.recv(&b), Err(FdPassError::UnexpectedFd(kind::CLOSE))));
        send_datagram(a.as_fd(), &hello.to_datagrams().unwrap()[0], None).unwrap();
        assert!(matches!(reader.recv(&b), Err(FdPassError::MissingFd(kind::HELLO))));
        // Garbage is a protocol error, not a panic.
        send_datagram(a.as_fd(), &[99, 2, 3], None).unwrap();
        assert!(matches!(reader.recv(&b), Err(FdPassError::Proto(_))));
        // End of stream in the middle of a split frame.
        let mut reader = FrameReader::new(1 << 20);
        let dgs = Frame::Recv(vec![1; 100_000]).to_datagrams().unwrap();
        send_datagram(a.as_fd(), &dgs[0], None).unwrap();
        drop(a);
        assert!(matches!(reader.recv(&b), Err(FdPassError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof));
    }

    /// Gathered sends produce exactly the datagrams of the copying encoder.
    #[test]
    fn send_parts_matches_to_datagrams() {
        let (a, b) = seqpacket_pair().unwrap();
        let msg: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for (inv, m) in [(Some(0x1234_5678u32), &msg[..]), (None, &msg[..10]), (None, &[][..])] {
            let f = Frame::Send { invalidate: inv, msg: m.to_vec() };
            let mut prefix = inv.unwrap_or(0).to_le_bytes().to_vec();
            prefix.push(u8::from(inv.is_some()));
            let want = f.to_datagrams().unwrap();
            std::thread::scope(|s| {
                let a = &a;
                s.spawn(move || send_parts(a.as_fd(), kind::SEND, &[&prefix, m]).unwrap());
                let mut buf = vec![0u8; MAX_DATAGRAM];
                for w in &want {
                    let (n, fd) = recv_datagram(b.as_fd(), &mut buf).unwrap().unwrap();
                    assert!(fd.is_none());
                    assert!(buf[..n] == w[..]);
                }
            });
        }
        // Recv with the body split across three parts at odd places.
        let f = Frame::Recv(msg.clone());
        std::thread::scope(|s| {
            let a = &a;
            let m = &msg;
            s.spawn(move || send_parts(a.as_fd(), kind::RECV, &[&m[..7], &m[7..70_000], &m[70_000..]]).unwrap());
            assert_eq!(FrameReader::new(1 << 20).recv(&b).unwrap().unwrap().frame, f);
        });
        assert!(matches!(send_parts(a.as_fd(), kind::HELLO, &[]), Err(FdPassError::MissingFd(_))));
        assert!(matches!(send_parts(a.as_fd(), kind::CLOSE, &[&[0; 70_000]]), Err(FdPassError::Proto(ProtoError::Frame(FrameError::NotSplittable(_))))));
    }

    #[test]
    fn nonblocking_recv_keeps_state() {
        let (a, b) = seqpacket_pair().unwrap();
        rustix::io::ioctl_fionbio(&b, true).unwrap();
        let mut reader = FrameReader::new(1 << 20);
        assert!(reader.recv(&b).unwrap_err().is_would_block());
        let f = Frame::Recv(vec![3; 100_000]);
        let dgs = f.to_datagrams().unwrap();
        send_datagram(a.as_fd(), &dgs[0], None).unwrap();
        assert!(reader.recv(&b).unwrap_err().is_would_block());
        send_datagram(a.as_fd(), &dgs[1], None).unwrap();
        assert_eq!(reader.recv(&b).unwrap().unwrap().frame, f);
    }
}
