//! The in-flight window of one connection: which packet id carries which spool record, how
//! many records are unacknowledged, how far the spool has been handed over, and which
//! records are replays.
//!
//! Design: rumqttc reports one `Outgoing::Publish(pkid)` per publish request, in the order
//! the requests were made, so a FIFO of "requested, waiting for a packet id" entries maps
//! every packet id exactly to what it carries. A record leaves the spool only when the
//! PUBACK of its own packet id arrives.

use std::collections::{HashMap, VecDeque};

/// Spool records handed to rumqttc and not yet acknowledged, at most.
pub const WINDOW: usize = 32;

/// What a packet id handed to rumqttc stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    /// A spool record, by id: it leaves the spool on its PUBACK.
    Record(u64),
    /// Birth or state: nothing to remove on the PUBACK.
    Control,
    /// The `offline`/`shutdown` state of a clean stop, whose PUBACK the stop waits for.
    ShutdownState,
}

/// One connection's bookkeeping. A new connection starts with a new window.
#[derive(Debug, Default)]
pub struct Window {
    /// Publishes handed to rumqttc, waiting for their packet id, in order.
    awaiting_pkid: VecDeque<Tracked>,
    /// Packet id → what it carries, until the PUBACK.
    inflight: HashMap<u16, Tracked>,
    /// Spool records handed over and not yet acknowledged.
    records_out: usize,
    /// The newest spool record handed over in this connection.
    cursor: Option<u64>,
    /// The newest record spooled before this connection: it and older are replays.
    horizon: Option<u64>,
}

impl Window {
    /// The window of a connection that has just been acknowledged, with `horizon` the
    /// newest record already in the spool: that record and older ones go out as replays.
    pub fn opened(horizon: Option<u64>) -> Self {
        Self {
            horizon,
            ..Self::default()
        }
    }

    /// A publish was handed to rumqttc; for a record, the spool cursor moves past it.
    pub fn requested(&mut self, t: Tracked) {
        if let Tracked::Record(id) = t {
            self.cursor = Some(id);
            self.records_out += 1;
        }
        self.awaiting_pkid.push_back(t);
    }

    /// rumqttc assigned `pkid` to the oldest request still waiting for one.
    pub fn outgoing(&mut self, pkid: u16) {
        if let Some(t) = self.awaiting_pkid.pop_front() {
            self.inflight.insert(pkid, t);
        }
    }

    /// The broker acknowledged `pkid`: what it carried, if it was ours.
    pub fn acked(&mut self, pkid: u16) -> Option<Tracked> {
        let t = self.inflight.remove(&pkid)?;
        if let Tracked::Record(_) = t {
            self.records_out = self.records_out.saturating_sub(1);
        }
        Some(t)
    }

    /// Whether another spool record may be handed over.
    pub fn has_room(&self) -> bool {
        self.records_out < WINDOW
    }

    /// The newest record handed over in this connection (the spool is read after it).
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Whether record `id` was spooled before this connection (sent with `replay: true`).
    pub fn is_replay(&self, id: u64) -> bool {
        self.horizon.is_some_and(|h| id <= h)
    }

    /// Records handed over and not yet acknowledged.
    pub fn records_out(&self) -> usize {
        self.records_out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_map_to_requests_in_order_and_acks_free_the_window() {
        let mut w = Window::opened(Some(5));
        w.requested(Tracked::Control);
        w.requested(Tracked::Record(4));
        w.requested(Tracked::Record(6));
        assert_eq!(w.records_out(), 2);
        assert_eq!(w.cursor(), Some(6));
        assert!(w.is_replay(4) && w.is_replay(5) && !w.is_replay(6));
        w.outgoing(1);
        w.outgoing(2);
        w.outgoing(3);
        assert_eq!(w.acked(2), Some(Tracked::Record(4)));
        assert_eq!(
            w.acked(2),
            None,
            "a second PUBACK for the same id is not ours"
        );
        assert_eq!(w.acked(1), Some(Tracked::Control));
        assert_eq!(w.records_out(), 1);
        assert_eq!(w.acked(3), Some(Tracked::Record(6)));
        assert_eq!(w.records_out(), 0);
        assert_eq!(w.acked(99), None);
    }

    #[test]
    fn the_window_fills_at_its_size() {
        let mut w = Window::opened(None);
        for id in 0..WINDOW as u64 {
            assert!(w.has_room());
            w.requested(Tracked::Record(id));
        }
        assert!(!w.has_room());
        assert!(!w.is_replay(0), "nothing is a replay without a horizon");
        w.outgoing(7);
        assert_eq!(w.acked(7), Some(Tracked::Record(0)));
        assert!(w.has_room());
        // A packet id with no request waiting (not ours) changes nothing.
        let mut empty = Window::default();
        empty.outgoing(1);
        assert_eq!(empty.acked(1), None);
    }
}
