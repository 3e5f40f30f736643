//! Direct TCP (MS-SMB2 2.1) over a blocking socket. A connection can be
//! started from an already-accepted socket plus bytes already read from it
//! (a front listener that hands connections over by fd replays what it read).

use crate::crypto::TRANSFORM_PROTOCOL_ID;
use crate::transport::{MessageSink, MessageSource, OutBuf, RecvControl, StreamDecrypt, FRAME_ROOM, TRANSFORM_ROOM};
use smbdirect_transport::tcp;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct TcpSource {
    stream: TcpStream,
    prefix: Vec<u8>,
    prefix_pos: usize,
    control: Option<Arc<RecvControl>>,
}

pub struct TcpSink {
    stream: Mutex<TcpStream>,
    /// The same socket, for shutdown without waiting for a writer.
    ctl: TcpStream,
    peer: String,
    /// Bytes of responses handed to `send` and not yet written.
    queued: AtomicUsize,
    max_queued: usize,
    io_timeout: Option<Duration>,
    /// Final responses of async operations waiting for this connection's
    /// sender thread (see [`MessageSink::send_detached`]).
    outbox: Mutex<Outbox>,
}

/// Responses queued by `send_detached`, in order, and whether a thread is
/// sending them. At most one such thread per connection, only while the
/// queue is not empty; the queue is bounded by the connection's pending
/// async operations (`max async requests per connection`).
#[derive(Default)]
struct Outbox {
    queue: std::collections::VecDeque<OutBuf>,
    sending: bool,
}

/// Splits an accepted socket into its two halves; `already_read` is replayed
/// before anything is read from the socket.
pub fn tcp_transport(stream: TcpStream, already_read: Vec<u8>) -> io::Result<(TcpSource, TcpSink)> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let w = stream.try_clone()?;
    let ctl = stream.try_clone()?;
    Ok((
        TcpSource { stream, prefix: already_read, prefix_pos: 0, control: None },
        TcpSink { stream: Mutex::new(w), ctl, peer, queued: AtomicUsize::new(0), max_queued: 0, io_timeout: None, outbox: Mutex::default() },
    ))
}

impl TcpSink {
    /// `io timeout` (a response must be taken by the client within it) and
    /// `max send queue` (bytes of responses waiting; 0 = no cap). Past either
    /// the connection is closed: a client that does not read cannot make the
    /// server hold its responses.
    pub fn set_limits(&mut self, io_timeout: Duration, max_queued: usize) {
        self.io_timeout = (!io_timeout.is_zero()).then_some(io_timeout);
        self.max_queued = max_queued;
    }

    /// Writes all of `buf` within the io timeout.
    fn write_bounded(&self, s: &mut TcpStream, mut buf: &[u8]) -> io::Result<()> {
        let Some(deadline) = self.io_timeout.and_then(|t| Instant::now().checked_add(t)) else { return s.write_all(buf) };
        while !buf.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "the client took no response within the io timeout"));
            }
            s.set_write_timeout(Some(left))?;
            match s.write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the client took no response within the io timeout"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
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

    /// Waits until the socket has something to read, or the connection's
    /// reader is halted (`RecvControl::wait_readable`).
    fn wait_readable(&self) -> io::Result<bool> {
        match &self.control {
            Some(c) => c.wait_readable(&self.stream),
            None => Ok(true),
        }
    }

    /// Reads the next message into `msg`; false at the end of the stream.
    /// With `dec`, a TRANSFORM message is decrypted as it arrives.
    fn recv_inner(&mut self, limit: usize, msg: &mut Vec<u8>, dec: Option<&mut dyn StreamDecrypt>) -> io::Result<bool> {
        // Waiting for a message has no deadline here (the connection's own
        // timers decide how long it may stay idle); from its first byte on,
        // the clock runs.
        let mut hdr = [0u8; tcp::HEADER_LEN];
        if self.prefix_pos == self.prefix.len() && !self.wait_readable()? {
            return Ok(false);
        }
        match self.read_exact(&mut hdr[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        if let Some(c) = &self.control {
            c.start();
        }
        self.read_exact(&mut hdr[1..]).map_err(inside_a_message)?;
        let limit = self.control.as_ref().map_or(limit, |c| c.limit().min(limit));
        let len = tcp::parse_header(hdr, limit).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Only large messages (WRITEs) gain from it: smaller ones stay in
        // the cache whole, and are decrypted on the connection's thread.
        let Some(dec) = dec.filter(|_| len >= crate::iopool::SPARE_MIN) else {
            self.read_body(len, &[], msg)?;
            return Ok(true);
        };
        let mut head = [0u8; TRANSFORM_ROOM];
        self.read_exact(&mut head).map_err(inside_a_message)?;
        if head[..4] != TRANSFORM_PROTOCOL_ID || !dec.begin(&head, len) {
            self.read_body(len, &head, msg)?;
            return Ok(true);
        }
        // A large message: read in parts of at most DECRYPT_PART bytes, each
        // decrypted right after it arrived, into a buffer of initialized
        // memory (a spare one keeps its bytes: no zeroing, see iopool.rs).
        crate::iopool::give_buffer(std::mem::replace(msg, crate::iopool::take_filled(len)));
        msg[..TRANSFORM_ROOM].copy_from_slice(&head);
        let (mut got, mut done) = (TRANSFORM_ROOM, TRANSFORM_ROOM);
        while got < len {
            let upto = len.min(got + DECRYPT_PART);
            got += self.read_some(&mut msg[got..upto])?;
            // Whole 16-byte blocks, at least DECRYPT_MIN of them at a time,
            // until the last part.
            let ready = if got == len { len } else { done + (got - done) / 16 * 16 };
            if ready - done >= DECRYPT_MIN || ready == len {
                dec.more(&mut msg[done..ready]);
                done = ready;
            }
        }
        dec.end(msg);
        Ok(true)
    }

    /// `msg` = `head` and the next `len - head.len()` bytes of the stream.
    fn read_body(&mut self, len: usize, head: &[u8], msg: &mut Vec<u8>) -> io::Result<()> {
        msg.clear();
        if len >= crate::iopool::SPARE_MIN && msg.capacity() < len {
            // A large message goes into a spare buffer of the process.
            let spare = crate::iopool::take_buffer(len);
            crate::iopool::give_buffer(std::mem::replace(msg, spare));
        }
        msg.reserve(len);
        msg.extend_from_slice(head);
        // Replayed bytes first, then the socket; read_to_end fills the
        // capacity without zeroing it first.
        let from_prefix = (self.prefix.len() - self.prefix_pos).min(len - msg.len());
        msg.extend_from_slice(&self.prefix[self.prefix_pos..self.prefix_pos + from_prefix]);
        self.prefix_pos += from_prefix;
        if self.prefix_pos == self.prefix.len() {
            self.prefix = Vec::new();
            self.prefix_pos = 0;
        }
        let rest = (len - msg.len()) as u64;
        let got = (&mut self.stream).take(rest).read_to_end(msg)?;
        if got as u64 != rest {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a message"));
        }
        Ok(())
    }

    /// Reads at least one byte into `buf` (replayed bytes first).
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.prefix.len() - self.prefix_pos;
        if avail > 0 {
            let n = avail.min(buf.len());
            self.read_exact(&mut buf[..n])?;
            return Ok(n);
        }
        loop {
            match self.stream.read(buf) {
                Ok(0) if !buf.is_empty() => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a message")),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The most read from the socket at once into a large TRANSFORM message
/// being decrypted as it arrives: the part read is decrypted while it is
/// still in the core's L2 cache (512 KiB on the lab's EPYC).
const DECRYPT_PART: usize = 128 << 10;
/// The least decrypted at once (but the end of a message).
const DECRYPT_MIN: usize = 16 << 10;

fn inside_a_message(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside a message")
    } else {
        e
    }
}

impl MessageSource for TcpSource {
    fn set_control(&mut self, control: Arc<RecvControl>) {
        // The halt eventfd exists before the first wait on the socket.
        let _ = control.halt_fd();
        self.control = Some(control);
    }

    fn recv(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>> {
        self.recv_into(limit, Vec::new())
    }

    fn recv_into(&mut self, limit: usize, msg: Vec<u8>) -> io::Result<Option<Vec<u8>>> {
        self.recv_with(limit, msg, None)
    }

    fn recv_decrypting(&mut self, limit: usize, msg: Vec<u8>, dec: &mut dyn StreamDecrypt) -> io::Result<Option<Vec<u8>>> {
        self.recv_with(limit, msg, Some(dec))
    }
}

impl TcpSource {
    fn recv_with(&mut self, limit: usize, mut msg: Vec<u8>, dec: Option<&mut dyn StreamDecrypt>) -> io::Result<Option<Vec<u8>>> {
        let r = self.recv_inner(limit, &mut msg, dec);
        if let Some(c) = &self.control {
            c.stop();
        }
        match r {
            Ok(true) => Ok(Some(msg)),
            // The buffer (a spare large one, often) outlives the connection.
            Ok(false) => {
                crate::iopool::give_buffer(msg);
                Ok(None)
            }
            Err(e) => {
                crate::iopool::give_buffer(msg);
                Err(e)
            }
        }
    }
}

impl TcpSink {
    /// The sender thread's loop: sends queued responses until none is left.
    fn drain_outbox(&self) {
        loop {
            let next = {
                let mut o = crate::objects::lock(&self.outbox);
                match o.queue.pop_front() {
                    Some(m) => m,
                    None => {
                        o.sending = false;
                        return;
                    }
                }
            };
            if let Err(e) = self.send(next) {
                tracing::debug!(peer = %self.peer, "async response not sent: {e}");
            }
        }
    }
}

impl MessageSink for TcpSink {
    /// Queues the response for a thread of this connection's own, so a client
    /// that does not read blocks only that thread (until the io timeout
    /// closes it), never the reactor or another client's request.
    fn send_detached(self: Arc<Self>, msg: OutBuf) {
        let start = {
            let mut o = crate::objects::lock(&self.outbox);
            o.queue.push_back(msg);
            !std::mem::replace(&mut o.sending, true)
        };
        if !start {
            return;
        }
        let me = self.clone();
        let spawned = std::thread::Builder::new().name("smb-async-send".into()).stack_size(128 * 1024).spawn(move || me.drain_outbox());
        if let Err(e) = spawned {
            tracing::warn!(peer = %self.peer, "cannot start a sender thread ({e}); sending on this thread");
            self.drain_outbox();
        }
    }

    fn send(&self, mut msg: OutBuf) -> io::Result<()> {
        let len = msg.buf.len() - msg.start;
        let hdr = tcp::encode_header(len).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if msg.start < FRAME_ROOM {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no headroom for the frame header"));
        }
        let at = msg.start - FRAME_ROOM;
        msg.buf[at..msg.start].copy_from_slice(&hdr);
        let n = msg.buf.len() - at;
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if self.max_queued != 0 && before.saturating_add(n) > self.max_queued {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            tracing::warn!(peer = %self.peer, "closing the connection: {} bytes of responses waiting, over the max send queue ({})", before.saturating_add(n), self.max_queued);
            self.shutdown();
            return Err(io::Error::other("max send queue reached"));
        }
        let r = {
            let mut s = crate::objects::lock(&self.stream);
            self.write_bounded(&mut s, &msg.buf[at..])
        };
        self.queued.fetch_sub(n, Ordering::AcqRel);
        // A large response (a READ's) is the next READ's buffer.
        crate::iopool::give_buffer(msg.buf);
        if let Err(e) = &r {
            // Part of a frame may be out: the stream cannot go on.
            if e.kind() == io::ErrorKind::TimedOut {
                tracing::warn!(peer = %self.peer, "closing the connection: {e}");
            }
            self.shutdown();
        }
        r
    }

    fn shutdown(&self) {
        // Not through the mutex: a writer blocked in it must be woken, not waited for.
        let _ = self.ctl.shutdown(Shutdown::Both);
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

    /// Final responses of async operations queued with `send_detached` go
    /// out in order from a thread of the connection's own: the caller (the
    /// notify reactor, another client's unlock) never waits for a client
    /// that does not read.
    #[test]
    fn detached_sends_do_not_wait_for_a_client_that_does_not_read() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = l.accept().expect("accept");
        let (_src, sink) = tcp_transport(accepted, Vec::new()).expect("transport");
        let sink = Arc::new(sink);
        const BIG: usize = 8 << 20;
        // The sends must all return while the client reads nothing (24 MiB is
        // far over the socket buffers): a send that waited for the client
        // would never return, so the bound below only guards against a hang
        // and is generous enough for any load.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sender = sink.clone();
        std::thread::spawn(move || {
            for i in 0..3u8 {
                let mut out = OutBuf::new(BIG);
                out.buf.resize(out.buf.len() + BIG, i);
                sender.clone().send_detached(out);
            }
            let _ = done_tx.send(());
        });
        assert!(done_rx.recv_timeout(Duration::from_secs(60)).is_ok(), "send_detached waited for a client that does not read");
        for i in 0..3u8 {
            let mut hdr = [0u8; 4];
            client.read_exact(&mut hdr).expect("read");
            assert_eq!(u32::from_be_bytes(hdr) as usize, BIG);
            let mut body = vec![0u8; BIG];
            client.read_exact(&mut body).expect("read");
            assert!(body.iter().all(|b| *b == i), "response {i} out of order or damaged");
        }
    }

    /// A client that takes no response within the io timeout is closed, and
    /// so is one whose responses waiting to be sent pass the send queue cap.
    #[test]
    fn slow_reader_and_send_queue_cap_close_the_connection() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = l.accept().expect("accept");
        let (_src, mut sink) = tcp_transport(accepted, Vec::new()).expect("transport");
        sink.set_limits(Duration::from_millis(300), 4 << 20);
        let msg = |n: usize| {
            let mut o = OutBuf::new(n);
            o.buf.resize(o.start + n, 7);
            o
        };
        // Over the cap on its own: refused and the connection closed.
        let e = sink.send(msg(5 << 20)).expect_err("over the send queue cap");
        assert!(e.to_string().contains("send queue"), "{e}");
        let mut b = [0u8; 1];
        assert_eq!(client.read(&mut b).expect("read"), 0, "closed without a byte sent");

        // A client that reads nothing: the kernel buffers fill, then the
        // write gives up after the io timeout.
        let mut client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = l.accept().expect("accept");
        let (_src, mut sink) = tcp_transport(accepted, Vec::new()).expect("transport");
        sink.set_limits(Duration::from_millis(300), 0);
        let mut sent = 0usize;
        let err = loop {
            match sink.send(msg(1 << 20)) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 256, "256 MiB went into a socket nobody reads");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        // The connection is shut down: what the client reads ends.
        client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut sink_all = Vec::new();
        assert!(client.read_to_end(&mut sink_all).is_ok(), "the stream ends");
    }

    /// Records what a transport gives a stream decryptor and "decrypts" by
    /// adding 1 to every byte, so the test sees which bytes went through it.
    #[derive(Default)]
    struct Recorder {
        accept: bool,
        begun: Vec<(Vec<u8>, usize)>,
        parts: Vec<usize>,
        ended: usize,
    }

    impl StreamDecrypt for Recorder {
        fn begin(&mut self, head: &[u8], total: usize) -> bool {
            self.begun.push((head.to_vec(), total));
            self.accept
        }
        fn more(&mut self, part: &mut [u8]) {
            self.parts.push(part.len());
            for b in part.iter_mut() {
                *b = b.wrapping_add(1);
            }
        }
        fn end(&mut self, msg: &mut [u8]) {
            self.ended = msg.len();
        }
    }

    /// A large TRANSFORM message is handed to the decryptor as it arrives:
    /// its first 52 bytes to `begin`, then every byte after them exactly
    /// once, in parts of whole 16-byte blocks but the last, then the whole
    /// message to `end`; bytes replayed by a front listener count as arrived.
    /// Other messages, small TRANSFORM messages and TRANSFORM messages the
    /// decryptor declines come whole and untouched.
    #[test]
    fn transform_messages_are_decrypted_as_they_arrive() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (mut accepted, _) = l.accept().expect("accept");
        let transform = |len: usize, seed: u8| -> Vec<u8> {
            let mut m: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            m[..4].copy_from_slice(&TRANSFORM_PROTOCOL_ID);
            m
        };
        // small, large (parts), not TRANSFORM, large declined, tiny TRANSFORM
        let msgs = [transform(1000, 1), transform(3 << 20 | 7, 2), vec![0xFE; 5000], transform(2 << 20, 3), transform(40, 4)];
        let writer = {
            let msgs = msgs.clone();
            let mut c = client.try_clone().expect("clone");
            std::thread::spawn(move || {
                for m in &msgs {
                    c.write_all(&tcp::encode_header(m.len()).expect("hdr")).expect("write");
                    // in uneven pieces, so reads end anywhere
                    for piece in m.chunks(77_777) {
                        c.write_all(piece).expect("write");
                    }
                }
            })
        };
        let mut first = [0u8; 30];
        accepted.read_exact(&mut first).expect("read");
        let (mut src, _sink) = tcp_transport(accepted, first.to_vec()).expect("transport");
        for (i, m) in msgs.iter().enumerate() {
            let mut dec = Recorder { accept: i != 3, ..Default::default() };
            let got = src.recv_decrypting(8 << 20, Vec::new(), &mut dec).expect("recv").expect("msg");
            assert_eq!(got.len(), m.len(), "message {i}");
            // (Only large ones: a small message is decrypted whole later.)
            let is_transform = m[..4] == TRANSFORM_PROTOCOL_ID && m.len() >= crate::iopool::SPARE_MIN;
            if !is_transform {
                assert!(dec.begun.is_empty(), "message {i}");
                assert_eq!(&got, m, "message {i} untouched");
                continue;
            }
            assert_eq!(dec.begun, vec![(m[..TRANSFORM_ROOM].to_vec(), m.len())], "message {i}");
            if i == 3 {
                assert!(dec.parts.is_empty() && dec.ended == 0, "declined message {i}");
                assert_eq!(&got, m, "declined message {i} untouched");
                continue;
            }
            assert_eq!(dec.ended, m.len(), "message {i}");
            assert_eq!(dec.parts.iter().sum::<usize>(), m.len() - TRANSFORM_ROOM, "message {i}");
            let (last, rest) = dec.parts.split_last().expect("parts");
            assert!(rest.iter().all(|n| n % 16 == 0 && *n > 0), "message {i}: parts {:?}", dec.parts);
            assert!(*last > 0);
            assert!(dec.parts.len() > 1, "a large message comes in parts");
            assert_eq!(got[..TRANSFORM_ROOM], m[..TRANSFORM_ROOM], "message {i} header");
            assert!(got[TRANSFORM_ROOM..].iter().zip(&m[TRANSFORM_ROOM..]).all(|(g, o)| *g == o.wrapping_add(1)), "message {i}: every byte once");
        }
        writer.join().expect("writer");
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
