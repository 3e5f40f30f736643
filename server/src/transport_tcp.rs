//! Direct TCP (MS-SMB2 2.1) over a blocking socket. A connection can be
//! started from an already-accepted socket plus bytes already read from it
//! (a front listener that hands connections over by fd replays what it read).

use crate::transport::{MessageSink, MessageSource, OutBuf, FRAME_ROOM};
use smbdirect_transport::tcp;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;

pub struct TcpSource {
    stream: TcpStream,
    prefix: Vec<u8>,
    prefix_pos: usize,
}

pub struct TcpSink {
    stream: Mutex<TcpStream>,
    peer: String,
}

/// Splits an accepted socket into its two halves; `already_read` is replayed
/// before anything is read from the socket.
pub fn tcp_transport(stream: TcpStream, already_read: Vec<u8>) -> io::Result<(TcpSource, TcpSink)> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let w = stream.try_clone()?;
    Ok((TcpSource { stream, prefix: already_read, prefix_pos: 0 }, TcpSink { stream: Mutex::new(w), peer }))
}

impl TcpSource {
    fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        let avail = self.prefix.len() - self.prefix_pos;
        if avail > 0 {
            let n = avail.min(buf.len());
            buf[..n].copy_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + n]);
            self.prefix_pos += n;
            buf = &mut buf[n..];
            if self.prefix_pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.prefix_pos = 0;
            }
        }
        self.stream.read_exact(buf)
    }
}

impl MessageSource for TcpSource {
    fn recv(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>> {
        self.recv_into(limit, Vec::new())
    }

    fn recv_into(&mut self, limit: usize, mut msg: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        let mut hdr = [0u8; tcp::HEADER_LEN];
        match self.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = tcp::parse_header(hdr, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        msg.clear();
        msg.reserve(len);
        // Replayed bytes first, then the socket; read_to_end fills the
        // capacity without zeroing it first.
        let from_prefix = (self.prefix.len() - self.prefix_pos).min(len);
        msg.extend_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + from_prefix]);
        self.prefix_pos += from_prefix;
        if self.prefix_pos == self.prefix.len() {
            self.prefix = Vec::new();
            self.prefix_pos = 0;
        }
        let rest = (len - from_prefix) as u64;
        let got = (&mut self.stream).take(rest).read_to_end(&mut msg)?;
        if got as u64 != rest {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a message"));
        }
        Ok(Some(msg))
    }
}

impl MessageSink for TcpSink {
    fn send(&self, mut msg: OutBuf) -> io::Result<()> {
        let len = msg.buf.len() - msg.start;
        let hdr = tcp::encode_header(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if msg.start < FRAME_ROOM {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no headroom for the frame header"));
        }
        let at = msg.start - FRAME_ROOM;
        msg.buf[at..msg.start].copy_from_slice(&hdr);
        let mut s = crate::objects::lock(&self.stream);
        s.write_all(&msg.buf[at..])
    }

    fn shutdown(&self) {
        let _ = crate::objects::lock(&self.stream).shutdown(Shutdown::Both);
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A front listener that already read part of the first message hands the
    /// socket over with those bytes; the transport replays them first.
    #[test]
    fn handover_with_bytes_already_read() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut accepted, _) = l.accept().expect("accept");
        let msg1: Vec<u8> = (0..100u8).collect();
        let msg2 = vec![7u8; 70_000];
        for m in [&msg1, &msg2] {
            client.write_all(&tcp::encode_header(m.len()).expect("hdr")).expect("write");
            client.write_all(m).expect("write");
        }
        let mut first = [0u8; 10];
        accepted.read_exact(&mut first).expect("read");
        let (mut src, sink) = tcp_transport(accepted, first.to_vec()).expect("transport");
        assert_eq!(src.recv(1 << 20).expect("recv").expect("msg"), msg1);
        assert_eq!(src.recv(1 << 20).expect("recv").expect("msg"), msg2);
        // Responses go out framed, from the buffer's headroom.
        let mut out = OutBuf::new(4);
        out.buf.extend_from_slice(b"resp");
        sink.send(out).expect("send");
        let mut got = [0u8; 8];
        client.read_exact(&mut got).expect("read");
        assert_eq!(&got, &[0, 0, 0, 4, b'r', b'e', b's', b'p']);
        // A frame over the limit is refused before anything is allocated.
        client.write_all(&[0, 0xFF, 0xFF, 0xFF]).expect("write");
        assert!(src.recv(8 << 20).is_err());
        drop(client);
    }

    #[test]
    fn closed_inside_a_message_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = l.accept().expect("accept");
        client.write_all(&[0, 0, 0, 50, 1, 2, 3]).expect("write");
        drop(client);
        let (mut src, _sink) = tcp_transport(accepted, Vec::new()).expect("transport");
        assert!(src.recv(1 << 20).is_err());
    }
}
