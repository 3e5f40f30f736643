//! Timers are data: a small table of deadlines whose minimum is the next wakeup.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The negotiate request (server) or response (client) must arrive before this.
    Negotiate = 0,
    /// Checked lazily: when it fires and nothing was received for the keepalive interval,
    /// a keepalive is sent; otherwise it is re-armed from the last receive.
    Idle = 1,
    /// A keepalive was sent; something must arrive before this.
    KeepaliveResponse = 2,
    /// The oldest outstanding send or RDMA work request must complete before this.
    Completion = 3,
}

const COUNT: usize = 4;
pub(crate) const ALL: [Timer; COUNT] = [Timer::Negotiate, Timer::Idle, Timer::KeepaliveResponse, Timer::Completion];

#[derive(Debug, Default, Clone)]
pub(crate) struct TimerTable {
    data: [Option<Instant>; COUNT],
}

impl TimerTable {
    pub(crate) fn set(&mut self, t: Timer, at: Instant) {
        self.data[t as usize] = Some(at);
    }
    pub(crate) fn stop(&mut self, t: Timer) {
        self.data[t as usize] = None;
    }
    pub(crate) fn get(&self, t: Timer) -> Option<Instant> {
        self.data[t as usize]
    }
    pub(crate) fn is_expired(&self, t: Timer, now: Instant) -> bool {
        self.data[t as usize].is_some_and(|d| d <= now)
    }
    pub(crate) fn next(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }
    pub(crate) fn clear(&mut self) {
        self.data = [None; COUNT];
    }
}
