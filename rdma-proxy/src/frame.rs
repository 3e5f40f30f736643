//! The datagram framing under both frame protocols on SOCK_SEQPACKET
//! sockets: the proxy's ([`crate::proto`]) and the SMB server's supervisor
//! <-> worker protocol (`smbdirect_server::workerproto`). Each protocol
//! defines its frame kinds and bodies; this layer only frames them. Pure
//! code: no sockets, no fds.
//!
//! Every datagram starts with an 8-byte header, little endian:
//! `kind u8, flags u8 (bit 0 MORE), reserved u16 (zero), len u32` followed by
//! `len` body bytes. A body that does not fit one datagram ([`MAX_DATAGRAM`])
//! is split, for the kinds the protocol lets span datagrams: each datagram
//! carries the same kind, all but the last have MORE set, and the bodies
//! concatenated give the frame's body. A receiver bounds the reassembled
//! body.

use std::borrow::Cow;

/// Largest datagram (header included).
pub const MAX_DATAGRAM: usize = 64 * 1024;
pub const HEADER_LEN: usize = 8;
/// Largest body of one datagram.
pub const MAX_FRAGMENT_BODY: usize = MAX_DATAGRAM - HEADER_LEN;
pub const FLAG_MORE: u8 = 0x01;

/// What a protocol tells the framing about its kinds.
#[derive(Debug, Clone, Copy)]
pub struct Kinds {
    /// Kinds the protocol knows (any other is an error).
    pub known: fn(u8) -> bool,
    /// Kinds whose frames may span datagrams.
    pub splittable: fn(u8) -> bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame header: truncated (need {need} bytes, have {have})")]
    Truncated { need: usize, have: usize },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("unknown flags {0:#04x}")]
    BadFlags(u8),
    #[error("reserved header field is {0:#06x}, not zero")]
    Reserved(u16),
    #[error("header length {len} does not match the datagram's body of {body} bytes")]
    LengthMismatch { len: u32, body: usize },
    #[error("frame of {size} bytes exceeds the bound of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("continuation of kind {got} inside a frame of kind {expected}")]
    Interleaved { expected: u8, got: u8 },
    #[error("frame kind {0} may not be split with MORE")]
    NotSplittable(u8),
}

/// A decoded datagram header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub more: bool,
    pub len: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.kind;
        b[1] = if self.more { FLAG_MORE } else { 0 };
        b[4..8].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes one datagram into its header and body, checking flags,
    /// reserved field, kind and length (in that order).
    pub fn decode(datagram: &[u8], kinds: Kinds) -> Result<(Header, &[u8]), FrameError> {
        let (h, body) = match datagram.split_at_checked(HEADER_LEN) {
            Some(x) => x,
            None => return Err(FrameError::Truncated { need: HEADER_LEN, have: datagram.len() }),
        };
        let (kind, flags) = (h[0], h[1]);
        let reserved = u16::from_le_bytes([h[2], h[3]]);
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if flags & !FLAG_MORE != 0 {
            return Err(FrameError::BadFlags(flags));
        }
        if reserved != 0 {
            return Err(FrameError::Reserved(reserved));
        }
        if !(kinds.known)(kind) {
            return Err(FrameError::UnknownKind(kind));
        }
        if len as usize != body.len() {
            return Err(FrameError::LengthMismatch { len, body: body.len() });
        }
        Ok((Header { kind, more: flags & FLAG_MORE != 0, len }, body))
    }
}

/// Splits a body of kind `k` into datagrams (header included). An empty
/// body still makes one.
pub fn split_body(k: u8, body: &[u8], kinds: Kinds) -> Result<Vec<Vec<u8>>, FrameError> {
    if body.len() > MAX_FRAGMENT_BODY && !(kinds.splittable)(k) {
        return Err(FrameError::NotSplittable(k));
    }
    if body.len() > u32::MAX as usize {
        return Err(FrameError::TooLarge { size: body.len(), limit: u32::MAX as usize });
    }
    let mut out = Vec::with_capacity(body.len() / MAX_FRAGMENT_BODY + 1);
    let mut chunks = body.chunks(MAX_FRAGMENT_BODY).peekable();
    if chunks.peek().is_none() {
        out.push(Header { kind: k, more: false, len: 0 }.encode().to_vec());
    }
    while let Some(c) = chunks.next() {
        let more = chunks.peek().is_some();
        let mut d = Vec::with_capacity(HEADER_LEN + c.len());
        d.extend_from_slice(&Header { kind: k, more, len: c.len() as u32 }.encode());
        d.extend_from_slice(c);
        out.push(d);
    }
    Ok(out)
}

/// A complete frame's kind and body (borrowed from the datagram when it was
/// not split).
pub type Body<'a> = (u8, Cow<'a, [u8]>);

/// Reassembles datagrams into frame bodies, bounding the body size.
#[derive(Debug)]
pub struct Reassembler {
    limit: usize,
    kinds: Kinds,
    pending: Option<(u8, Vec<u8>)>,
}

impl Reassembler {
    /// `limit` bounds a frame's whole body.
    pub fn new(limit: usize, kinds: Kinds) -> Self {
        Reassembler { limit, kinds, pending: None }
    }

    /// Whether a split frame is in progress (its first datagram was seen).
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// Feeds one datagram; returns the kind and body of a frame when one is
    /// complete (borrowed from the datagram when it was not split). After an
    /// error the state is reset and the socket should be dropped.
    pub fn push<'a>(&mut self, datagram: &'a [u8]) -> Result<Option<Body<'a>>, FrameError> {
        let r = self.push_inner(datagram);
        if r.is_err() {
            self.pending = None;
        }
        r
    }

    fn push_inner<'a>(&mut self, datagram: &'a [u8]) -> Result<Option<Body<'a>>, FrameError> {
        let (h, body) = Header::decode(datagram, self.kinds)?;
        match self.pending.take() {
            None => {
                if body.len() > self.limit {
                    return Err(FrameError::TooLarge { size: body.len(), limit: self.limit });
                }
                if !h.more {
                    return Ok(Some((h.kind, Cow::Borrowed(body))));
                }
                if !(self.kinds.splittable)(h.kind) {
                    return Err(FrameError::NotSplittable(h.kind));
                }
                self.pending = Some((h.kind, body.to_vec()));
                Ok(None)
            }
            Some((k, mut acc)) => {
                if h.kind != k {
                    return Err(FrameError::Interleaved { expected: k, got: h.kind });
                }
                let size = acc.len().saturating_add(body.len());
                if size > self.limit {
                    return Err(FrameError::TooLarge { size, limit: self.limit });
                }
                acc.extend_from_slice(body);
                if h.more {
                    self.pending = Some((k, acc));
                    return Ok(None);
                }
                Ok(Some((k, Cow::Owned(acc))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: Kinds = Kinds { known: |k| k == 1 || k == 2, splittable: |k| k == 2 };

    #[test]
    fn bodies_round_trip_split_or_not() {
        for (k, len) in [(1u8, 0usize), (1, 100), (2, 0), (2, MAX_FRAGMENT_BODY), (2, MAX_FRAGMENT_BODY + 1), (2, 3 * MAX_FRAGMENT_BODY + 7)] {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let dgs = split_body(k, &body, KINDS).unwrap();
            assert_eq!(dgs.len(), len.div_ceil(MAX_FRAGMENT_BODY).max(1));
            assert!(dgs.iter().all(|d| d.len() <= MAX_DATAGRAM));
            let mut r = Reassembler::new(1 << 20, KINDS);
            for (i, d) in dgs.iter().enumerate() {
                match r.push(d).unwrap() {
                    Some((got_k, got)) => {
                        assert_eq!(i, dgs.len() - 1);
                        assert_eq!((got_k, &*got), (k, &body[..]));
                    }
                    None => assert!(i < dgs.len() - 1 && r.in_progress()),
                }
            }
        }
        assert_eq!(split_body(1, &[0; MAX_FRAGMENT_BODY + 1], KINDS), Err(FrameError::NotSplittable(1)));
    }

    #[test]
    fn bad_datagrams_are_typed_errors() {
        let mut r = Reassembler::new(100, KINDS);
        assert_eq!(r.push(&[1, 0, 0]), Err(FrameError::Truncated { need: 8, have: 3 }));
        assert_eq!(r.push(&[9, 0, 0, 0, 0, 0, 0, 0]), Err(FrameError::UnknownKind(9)));
        assert_eq!(r.push(&[1, 2, 0, 0, 0, 0, 0, 0]), Err(FrameError::BadFlags(2)));
        assert_eq!(r.push(&[1, 0, 1, 0, 0, 0, 0, 0]), Err(FrameError::Reserved(1)));
        assert_eq!(r.push(&[1, 0, 0, 0, 5, 0, 0, 0, 1]), Err(FrameError::LengthMismatch { len: 5, body: 1 }));
        assert_eq!(r.push(&[1, 1, 0, 0, 0, 0, 0, 0]), Err(FrameError::NotSplittable(1)));
        assert_eq!(r.push(&[2, 1, 0, 0, 1, 0, 0, 0, 7]), Ok(None));
        assert_eq!(r.push(&[1, 0, 0, 0, 0, 0, 0, 0]), Err(FrameError::Interleaved { expected: 2, got: 1 }));
        assert!(!r.in_progress(), "an error resets the state");
        let big = split_body(2, &[0; 101], KINDS).unwrap();
        assert!(matches!(r.push(&big[0]), Err(FrameError::TooLarge { .. })));
    }
}
