//! Reassembly of fragmented messages (MS-SMBD 3.1.5.8), bounded by MaxFragmentedSize.

use super::error::ProtocolError;
use crate::wire::DataTransferHeader;

/// Recycled byte buffers, so that steady-state traffic allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    keep: usize,
}

impl BufPool {
    pub(crate) fn new(keep: usize) -> Self {
        BufPool { free: Vec::with_capacity(keep), keep }
    }
    pub(crate) fn get(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }
    pub(crate) fn put(&mut self, mut v: Vec<u8>) {
        if self.free.len() < self.keep && v.capacity() > 0 {
            v.clear();
            self.free.push(v);
        }
    }
}

#[derive(Debug)]
pub(crate) struct Reassembly {
    current: Option<Vec<u8>>,
    /// RemainingDataLength of the last fragment taken.
    expected_remaining: u32,
    max: u32,
}

impl Reassembly {
    pub(crate) fn new(max: u32) -> Self {
        Reassembly { current: None, expected_remaining: 0, max }
    }

    #[cfg(test)]
    pub(crate) fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Takes one received message's data. Returns a whole message when the last fragment
    /// arrives. Empty messages (credits, keepalives) never touch reassembly state.
    pub(crate) fn push(
        &mut self,
        h: &DataTransferHeader,
        data: &[u8],
        pool: &mut BufPool,
    ) -> Result<Option<Vec<u8>>, ProtocolError> {
        if data.is_empty() {
            if h.remaining_data_length != 0 {
                return Err(ProtocolError::RemainingWithoutData { remaining: h.remaining_data_length });
            }
            return Ok(None);
        }
        // data.len() came from a u32 DataLength, so it fits.
        let len = data.len() as u64;
        match self.current.as_mut() {
            Some(buf) => {
                let got = u64::from(h.remaining_data_length) + len;
                if got != u64::from(self.expected_remaining) {
                    return Err(ProtocolError::InconsistentFragment {
                        expected: self.expected_remaining,
                        got: u32::try_from(got).unwrap_or(u32::MAX),
                    });
                }
                buf.extend_from_slice(data);
            }
            None => {
                let total = len + u64::from(h.remaining_data_length);
                if total > u64::from(self.max) {
                    return Err(ProtocolError::FragmentedTooLarge { size: total, max: self.max });
                }
                let mut buf = pool.get();
                // total <= max (a u32), so the cast is exact; the bound was checked above.
                buf.reserve(total as usize);
                buf.extend_from_slice(data);
                self.current = Some(buf);
            }
        }
        self.expected_remaining = h.remaining_data_length;
        if h.remaining_data_length == 0 {
            Ok(self.current.take())
        } else {
            Ok(None)
        }
    }

    pub(crate) fn reset(&mut self, pool: &mut BufPool) {
        if let Some(b) = self.current.take() {
            pool.put(b);
        }
        self.expected_remaining = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(len: u32, remaining: u32) -> DataTransferHeader {
        DataTransferHeader { data_length: len, remaining_data_length: remaining, ..Default::default() }
    }

    #[test]
    fn fragments_join() {
        let mut pool = BufPool::new(4);
        let mut r = Reassembly::new(200_000);
        assert_eq!(r.push(&h(3, 4), b"abc", &mut pool), Ok(None));
        assert!(r.in_progress());
        assert_eq!(r.push(&h(0, 0), b"", &mut pool), Ok(None), "empty message between fragments");
        assert_eq!(r.push(&h(2, 2), b"de", &mut pool), Ok(None));
        assert_eq!(r.push(&h(2, 0), b"fg", &mut pool), Ok(Some(b"abcdefg".to_vec())));
        assert!(!r.in_progress());
        assert_eq!(r.push(&h(1, 0), b"z", &mut pool), Ok(Some(b"z".to_vec())));
    }

    #[test]
    fn rejects_bad_sequences() {
        let mut pool = BufPool::new(4);
        let mut r = Reassembly::new(131_072);
        assert_eq!(
            r.push(&h(1, 131_072), b"a", &mut pool),
            Err(ProtocolError::FragmentedTooLarge { size: 131_073, max: 131_072 })
        );
        assert_eq!(r.push(&h(1, 131_071), b"a", &mut pool), Ok(None));
        assert_eq!(
            r.push(&h(1, 5), b"b", &mut pool),
            Err(ProtocolError::InconsistentFragment { expected: 131_071, got: 6 })
        );
        let mut r = Reassembly::new(131_072);
        assert_eq!(r.push(&h(0, 9), b"", &mut pool), Err(ProtocolError::RemainingWithoutData { remaining: 9 }));
        // u32::MAX remaining cannot overflow the arithmetic.
        assert!(r.push(&h(1, u32::MAX), b"a", &mut pool).is_err());
    }
}
