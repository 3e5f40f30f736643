//! Credit accounting (MS-SMBD 3.1.1.1, 3.1.5.1, 3.1.5.8). With RNR retry 0 on both Linux
//! peers, a send without a posted receive kills the connection: these counters, not the
//! NIC, prevent that.

use super::error::ProtocolError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Credits {
    /// Send credits the peer granted us and we have not used yet.
    pub send: u16,
    /// Credits we granted the peer that it has not used yet. Never more than `posted`.
    pub peer_held: u16,
    /// Receives posted to the queue pair (each able to take one peer message).
    pub posted: u16,
    /// The peer's last CreditsRequested (its ReceiveCreditTarget for us).
    pub peer_target: u16,
    /// Below this many peer-held credits we send a grant even with no data to carry it.
    pub low_watermark: u16,
}

impl Credits {
    /// How many credits the next message may grant: never beyond posted receives, never
    /// beyond what the peer asked for.
    pub fn grantable(&self) -> u16 {
        let unpromised = self.posted.saturating_sub(self.peer_held);
        // A peer asking for fewer than 2 could never send data (its last credit is kept for
        // grants), so it gets at least 2.
        let wanted = self.peer_target.max(2).saturating_sub(self.peer_held);
        unpromised.min(wanted)
    }

    /// The last send credit is reserved for a message that grants credits, so that the
    /// peer can always answer and neither side can be left without credits.
    pub fn may_send(&self, grant: u16) -> bool {
        self.send >= 2 || (self.send == 1 && grant > 0)
    }

    /// Whether the peer is low enough on credits that a grant should go out even with
    /// no data to carry it. The grant must be worth more than the watermark: a grant of
    /// one credit costs the peer one receive, and two sides trading such grants would
    /// ping-pong empty messages forever. Small windows rely on RESPONSE_REQUESTED instead.
    pub fn peer_is_low(&self) -> bool {
        self.peer_held <= self.low_watermark && self.grantable() > self.low_watermark
    }

    /// Whether a message we send leaves us low enough on credits to ask the peer for a
    /// prompt answer (RESPONSE_REQUESTED), because more data is waiting.
    pub fn should_request_response(&self, more_queued: bool) -> bool {
        more_queued && self.send <= self.low_watermark
    }

    /// Accounts for one message sent carrying `grant` credits.
    pub fn on_send(&mut self, grant: u16) {
        self.send = self.send.saturating_sub(1);
        self.peer_held = self.peer_held.saturating_add(grant);
    }

    /// Accounts for one data transfer message received (one posted receive and one peer
    /// credit used, `granted` new send credits, a new target).
    pub fn on_receive(&mut self, granted: u16, requested: u16) -> Result<(), ProtocolError> {
        if self.peer_held == 0 {
            return Err(ProtocolError::CreditsOverrun);
        }
        self.peer_held -= 1;
        self.posted = self.posted.saturating_sub(1);
        self.send = self.send.checked_add(granted).ok_or(ProtocolError::CreditOverflow)?;
        self.peer_target = requested;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_credit_needs_a_grant() {
        let c = Credits { send: 1, ..Default::default() };
        assert!(!c.may_send(0));
        assert!(c.may_send(1));
        let c = Credits { send: 2, ..Default::default() };
        assert!(c.may_send(0));
        let c = Credits { send: 0, ..Default::default() };
        assert!(!c.may_send(5));
    }

    #[test]
    fn grants_bounded_by_posted_and_target() {
        let mut c = Credits { posted: 255, peer_target: 10, low_watermark: 1, ..Default::default() };
        assert!(c.peer_is_low());
        assert_eq!(c.grantable(), 10);
        c.peer_held = 10;
        assert_eq!(c.grantable(), 0);
        assert!(!c.peer_is_low());
        c.peer_target = 255;
        c.posted = 12;
        assert_eq!(c.grantable(), 2);
        c.send = 3;
        c.on_send(2);
        assert_eq!((c.send, c.peer_held), (2, 12));
        assert_eq!(c.grantable(), 0);
    }

    #[test]
    fn idle_grants_do_not_ping_pong() {
        // Two credits each way, watermark 1: a one-credit grant is not worth a message.
        let c = Credits { posted: 2, peer_held: 1, peer_target: 2, low_watermark: 1, send: 2 };
        assert_eq!(c.grantable(), 1);
        assert!(!c.peer_is_low());
        let c = Credits { peer_held: 0, ..c };
        assert!(c.peer_is_low());
        // A peer asking for one credit still gets two.
        let c = Credits { posted: 8, peer_held: 0, peer_target: 1, low_watermark: 1, send: 0 };
        assert_eq!(c.grantable(), 2);
    }

    #[test]
    fn receive_without_credit_is_overrun() {
        let mut c = Credits { posted: 4, peer_held: 1, peer_target: 4, ..Default::default() };
        assert_eq!(c.on_receive(3, 7), Ok(()));
        assert_eq!((c.peer_held, c.posted, c.send, c.peer_target), (0, 3, 3, 7));
        assert_eq!(c.on_receive(0, 7), Err(ProtocolError::CreditsOverrun));
        let mut c = Credits { peer_held: 1, posted: 1, send: u16::MAX, ..Default::default() };
        assert_eq!(c.on_receive(1, 1), Err(ProtocolError::CreditOverflow));
    }
}
