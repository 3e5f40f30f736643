//! The credit window (MS-SMB2 3.3.1.1, 3.3.5.2.3): which message ids the client
//! may use, each at most once, and how many credits to grant.

use crate::wire::status::NtStatus;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct CreditWindow {
    /// Lowest message id not yet used.
    low: u64,
    /// `used[i]` is whether id `low + i` has been used; `low + used.len()` is the top of the window.
    used: VecDeque<bool>,
    max: u16,
}

impl CreditWindow {
    pub fn new(max: u16) -> CreditWindow {
        // Message id 0 may be used for the first NEGOTIATE.
        CreditWindow { low: 0, used: VecDeque::from([false]), max: max.max(1) }
    }

    /// Credits the client still holds (granted, not yet used).
    pub fn held(&self) -> usize {
        self.used.iter().filter(|u| !**u).count()
    }

    /// Credits granted since the connection began (message ids opened to the client).
    pub fn granted_total(&self) -> u64 {
        self.low + self.used.len() as u64
    }

    /// Consumes ids `mid .. mid + charge` (a charge of 0 counts as 1).
    pub fn consume(&mut self, mid: u64, charge: u16) -> Result<(), NtStatus> {
        let n = u64::from(charge.max(1));
        let top = self.low + self.used.len() as u64;
        let end = mid.checked_add(n).ok_or(NtStatus::INVALID_PARAMETER)?;
        if mid < self.low || end > top {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let first = (mid - self.low) as usize;
        if self.used.range(first..first + n as usize).any(|u| *u) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        for u in self.used.range_mut(first..first + n as usize) {
            *u = true;
        }
        while self.used.front() == Some(&true) {
            self.used.pop_front();
            self.low += 1;
        }
        Ok(())
    }

    /// Grants up to `requested` credits (at least one if the client would
    /// otherwise hold none), never letting the client hold more than `max`.
    pub fn grant(&mut self, requested: u16) -> u16 {
        let held = self.held();
        let room = (self.max as usize).saturating_sub(held);
        let mut g = (requested as usize).min(room);
        if g == 0 && held == 0 {
            g = 1;
        }
        for _ in 0..g {
            self.used.push_back(false);
        }
        g as u16
    }

    /// The window as it stands, to rebuild it in another process (a
    /// connection passed to the worker that owns a session it binds to):
    /// the lowest unused id and, from it on, which ids are used.
    pub fn snapshot(&self) -> CreditSnapshot {
        CreditSnapshot { low: self.low, used: self.used.iter().copied().collect() }
    }

    /// A window from a [`snapshot`](Self::snapshot); `None` when it is not
    /// one this window could have been (empty, or more ids than `max`
    /// allows a client to hold plus the used ones: over twice `max`).
    pub fn restore(max: u16, s: &CreditSnapshot) -> Option<CreditWindow> {
        let max = max.max(1);
        if s.used.is_empty() || s.used.len() > 2 * max as usize || s.low.checked_add(s.used.len() as u64).is_none() {
            return None;
        }
        let mut w = CreditWindow { low: s.low, used: s.used.iter().copied().collect(), max };
        while w.used.front() == Some(&true) {
            w.used.pop_front();
            w.low += 1;
        }
        if w.used.is_empty() {
            return None;
        }
        Some(w)
    }
}

/// Credits in use on a connection: the credit charge of the requests it
/// received and has not answered yet, counted by [`CreditHold`]s (an
/// async operation's charge is counted by its `AsyncTable` once its interim
/// response is out).
#[derive(Debug, Default)]
pub struct InUse(AtomicU64);

impl InUse {
    /// Counts a request of `charge` (0 counts as 1) until the hold is dropped.
    pub fn hold(self: &Arc<Self>, charge: u16) -> CreditHold {
        let n = u64::from(charge.max(1));
        self.0.fetch_add(n, Ordering::Relaxed);
        CreditHold(self.clone(), n)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One request's credits in use, given back when dropped (its response is
/// sent or handed on).
#[derive(Debug)]
pub struct CreditHold(Arc<InUse>, u64);

impl Drop for CreditHold {
    fn drop(&mut self) {
        let _ = self.0 .0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(self.1)));
    }
}

/// A credit window in transit (see [`CreditWindow::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditSnapshot {
    pub low: u64,
    pub used: Vec<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let mut w = CreditWindow::new(512);
        assert!(w.consume(1, 1).is_err());
        w.consume(0, 0).unwrap();
        assert!(w.consume(0, 0).is_err(), "reuse");
        assert_eq!(w.grant(10), 10);
        w.consume(5, 1).unwrap();
        w.consume(1, 4).unwrap();
        assert!(w.consume(9, 3).is_err(), "past the window");
        w.consume(6, 5).unwrap();
        assert_eq!(w.held(), 0);
        assert_eq!(w.grant(0), 1, "never leave the client without credits");
        assert_eq!(w.grant(10_000), 511);
        assert_eq!(w.grant(10), 0);
        assert!(w.consume(u64::MAX, 2).is_err());
    }

    #[test]
    fn holds_count_credits_in_use() {
        let u = Arc::new(InUse::default());
        let a = u.hold(4);
        let b = u.hold(0);
        assert_eq!(u.get(), 5);
        drop(a);
        assert_eq!(u.get(), 1);
        drop(b);
        assert_eq!(u.get(), 0);
    }

    #[test]
    fn snapshot_restores_the_same_window() {
        let mut w = CreditWindow::new(64);
        w.consume(0, 1).unwrap();
        w.grant(10);
        w.consume(3, 2).unwrap();
        let s = w.snapshot();
        let mut r = CreditWindow::restore(64, &s).unwrap();
        assert_eq!(r.snapshot(), s);
        assert_eq!(r.held(), w.held());
        assert_eq!(r.granted_total(), w.granted_total());
        // Same ids accepted and refused on both.
        for (mid, ok) in [(3, false), (4, false), (1, true), (2, true), (5, true), (11, false)] {
            assert_eq!(r.consume(mid, 1).is_ok(), ok, "restored, id {mid}");
            assert_eq!(w.consume(mid, 1).is_ok(), ok, "original, id {mid}");
        }
        assert!(CreditWindow::restore(64, &CreditSnapshot { low: 0, used: vec![] }).is_none());
        assert!(CreditWindow::restore(64, &CreditSnapshot { low: 0, used: vec![true; 3] }).is_none(), "no id left open");
        assert!(CreditWindow::restore(4, &CreditSnapshot { low: 0, used: vec![false; 9] }).is_none(), "more than a client may hold");
        assert!(CreditWindow::restore(64, &CreditSnapshot { low: u64::MAX, used: vec![false; 2] }).is_none());
    }
}
