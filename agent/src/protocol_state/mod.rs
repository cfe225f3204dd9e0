//! The agent's protocol state, apart from all I/O: the connection phase, the in-flight
//! window of the current connection, command admission, and the spool disk's fault. The session
//! ([`crate::session`]) owns the rumqttc client and event loop, the spool, the seen-ids file
//! and the test tasks; it feeds this type events with an injected `now` and carries out
//! what it decides (rumqtt keeps its `MqttState` apart from its event loop the same way).
//!
//! # Layout
//! - [`window`]: packet id → spool record, the window of unacknowledged records, replays.
//! - [`admission`]: whether a received command may run, the refusal reasons and counters.
//! - [`seen`]: the command ids already seen, bounded, in a form that survives restarts.
//! - [`disk`]: the `spool/SPOOL_WRITE_FAILED` fault and the pace of disk retries.

pub mod admission;
pub mod disk;
pub mod seen;
pub mod window;

use std::time::Duration;

use alarmnet_protocol::Command;
use tokio::time::Instant;

pub use admission::{Admission, CommandSettings, Decision, Refusal, Refused, Verdict};
pub use disk::{DiskFault, DiskWatch};
pub use seen::SeenIds;
pub use window::{Tracked, WINDOW, Window};

/// Where the session is in the connection cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between connections (backing off, or killed by the simulator).
    Offline,
    /// A client exists and the CONNACK has not arrived yet.
    Connecting,
    /// The broker acknowledged the connection at `since`.
    Connected { since: Instant },
}

/// The protocol state of one node's session; see the module documentation.
#[derive(Debug)]
pub struct ProtocolState {
    phase: Phase,
    window: Window,
    admission: Admission,
    disk: DiskWatch,
}

impl ProtocolState {
    pub fn new(admission: Admission) -> Self {
        Self {
            phase: Phase::Offline,
            window: Window::default(),
            admission,
            disk: DiskWatch::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// A new connection attempt: nothing of the previous connection's window survives
    /// (each connection has a fresh clean-session client, so nothing is in flight).
    pub fn connecting(&mut self) {
        self.phase = Phase::Connecting;
        self.window = Window::default();
    }

    /// The CONNACK arrived at `now`; `horizon` is the newest record already spooled, so it
    /// and everything older are sent as replays.
    pub fn connected(&mut self, now: Instant, horizon: Option<u64>) {
        self.phase = Phase::Connected { since: now };
        self.window = Window::opened(horizon);
    }

    /// The connection ended at `now`; how long it had been up, if it came up at all.
    pub fn connection_ended(&mut self, now: Instant) -> Option<Duration> {
        let up = self.connected_for(now);
        self.phase = Phase::Offline;
        up
    }

    pub fn is_connected(&self) -> bool {
        matches!(self.phase, Phase::Connected { .. })
    }

    /// How long the current connection has been up at `now`.
    pub fn connected_for(&self, now: Instant) -> Option<Duration> {
        match self.phase {
            Phase::Connected { since } => Some(now.saturating_duration_since(since)),
            _ => None,
        }
    }

    /// Whether another spool record may be handed to the client now.
    pub fn may_send_record(&self) -> bool {
        self.is_connected() && self.window.has_room()
    }

    pub fn window(&self) -> &Window {
        &self.window
    }

    /// A publish was handed to the client.
    pub fn requested(&mut self, t: Tracked) {
        self.window.requested(t);
    }

    /// The client assigned `pkid` to the oldest request waiting for one.
    pub fn outgoing(&mut self, pkid: u16) {
        self.window.outgoing(pkid);
    }

    /// The broker acknowledged `pkid`: what it carried, if it was this connection's.
    pub fn acked(&mut self, pkid: u16) -> Option<Tracked> {
        self.window.acked(pkid)
    }

    /// Decides on a received command; see [`Admission::admit`].
    pub fn on_command(
        &mut self,
        topic: &str,
        command: &Command,
        retained: bool,
        now_ms: u64,
    ) -> Verdict {
        self.admission.admit(topic, command, retained, now_ms)
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn admission_mut(&mut self) -> &mut Admission {
        &mut self.admission
    }

    pub fn disk(&self) -> &DiskWatch {
        &self.disk
    }

    pub fn disk_mut(&mut self) -> &mut DiskWatch {
        &mut self.disk
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn state() -> ProtocolState {
        ProtocolState::new(Admission::new(
            CommandSettings::default(),
            BTreeSet::new(),
            SeenIds::default(),
        ))
    }

    #[test]
    fn the_phase_follows_the_connection_and_each_connection_has_a_fresh_window() {
        let mut s = state();
        let t0 = Instant::now();
        assert_eq!(s.phase(), Phase::Offline);
        assert!(!s.may_send_record(), "nothing is sent while offline");
        s.connecting();
        assert_eq!(s.phase(), Phase::Connecting);
        assert!(!s.may_send_record(), "nor before the CONNACK");
        assert_eq!(s.connection_ended(t0), None, "never came up");

        s.connecting();
        s.connected(t0, Some(3));
        assert!(s.may_send_record());
        s.requested(Tracked::Record(4));
        s.outgoing(9);
        assert_eq!(s.window().records_out(), 1);
        assert!(s.window().is_replay(3) && !s.window().is_replay(4));
        let later = t0 + Duration::from_secs(12);
        assert_eq!(s.connected_for(later), Some(Duration::from_secs(12)));
        assert_eq!(s.connection_ended(later), Some(Duration::from_secs(12)));
        assert!(!s.is_connected());

        // The next connection knows nothing of packet 9: its PUBACK cannot remove a record
        // the new connection has not sent.
        s.connecting();
        s.connected(later, Some(4));
        assert_eq!(s.acked(9), None);
        assert_eq!(s.window().records_out(), 0);
        assert_eq!(
            s.window().cursor(),
            None,
            "the spool is read from its start again"
        );
    }

    #[test]
    fn the_window_stops_the_sender_when_full() {
        let mut s = state();
        s.connecting();
        s.connected(Instant::now(), None);
        for id in 0..WINDOW as u64 {
            assert!(s.may_send_record());
            s.requested(Tracked::Record(id));
            s.outgoing(id as u16 + 1);
        }
        assert!(!s.may_send_record());
        assert_eq!(s.acked(1), Some(Tracked::Record(0)));
        assert!(s.may_send_record());
    }
}
