//! The Will gate: a Last Will is judged only once the collector knows its own link to the
//! broker was sound when the Will was delivered.
//!
//! A broker that stops gracefully (SIGTERM) publishes the Will of every client to the
//! subscribers still connected, in the moment before it closes their connections too; a
//! broker restarted with persistence delivers the Wills it queued for the collector's session
//! while the collector was away. Judged one by one, each such wave is a storm of node, site
//! and region outages (and, counted as up/down transitions, of flapping) caused by the
//! infrastructure, not by the nodes.
//!
//! # Rules
//! - A Will (`state: offline`, not `reason: shutdown`) is **held**, not judged.
//! - The I/O shell tests the link whenever a Will is held: a round trip of a marker through
//!   the broker on the collector's own `$collector` topic. The broker delivers in order on
//!   one connection, and a broker that is shutting down no longer routes publishes, so the
//!   marker's echo arriving **after** a Will proves the broker was running normally when it
//!   sent that Will: [`WillGate::confirmed`] releases every held Will to be judged at the
//!   time it arrived.
//! - If the connection is lost first ([`WillGate::lost`]), the held Wills are discarded: they
//!   fall inside the blind period, which starts at the first of them, so the nodes are
//!   neither charged downtime nor counted as transitions; they are re-judged from what arrives
//!   after reconnection (a full timeout each, as for every node).
//! - Wills delivered after a (re)connection and before the first echo on that connection are
//!   the backlog of the blind period (queued for the collector's session, or retained) and
//!   are discarded the same way. So are Wills that arrive within the node's grace period
//!   (a full timeout) after a reconnection that ends a broker outage: a broker that was
//!   frozen or cut off
//!   publishes the Wills of the connections that dropped meanwhile only once it runs again;
//!   they describe the blind period, and the node's own timeout judges it instead (a node
//!   that really died then is reported at the end of its grace, never missed).
//! - Live evidence from the node (a live birth, `online`, a live heartbeat, fault or test
//!   receipt) after its Will supersedes the held Will: the node reconnected.
//!
//! Pure: times are the collector's clock, passed in.

use std::collections::HashMap;

use alarmnet_protocol::{NodeId, NodePath, State};

use crate::model::UnixMillis;

/// A Will waiting for the link to be confirmed.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldWill {
    pub path: NodePath,
    pub state: State,
    pub retained: bool,
    /// When it arrived (the collector's clock): the time it is judged at.
    pub at: UnixMillis,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct WillGate {
    held: HashMap<NodeId, HeldWill>,
    /// Between a (re)connection and the first echo on it: Wills are the blind period's backlog.
    backlog: bool,
    /// Wills discarded since start (broker outages and backlogs), for the metrics.
    discarded: u64,
}

impl WillGate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds a Will. Returns `false` when it is discarded at once: the backlog after a
    /// reconnection, or `in_grace` (it arrived within its node's grace period).
    pub fn hold(&mut self, will: HeldWill, in_grace: bool) -> bool {
        if self.backlog || in_grace {
            self.held.remove(&will.path.node);
            self.discarded += 1;
            return false;
        }
        // A second Will of the same node (a newer connection's) replaces the first; the
        // earlier arrival time is kept, it is when the node was first reported lost.
        let at = self
            .held
            .get(&will.path.node)
            .map_or(will.at, |h| h.at.min(will.at));
        self.held
            .insert(will.path.node.clone(), HeldWill { at, ..will });
        true
    }

    /// Live evidence from `node`: its held Will, if any, is dropped.
    pub fn supersede(&mut self, node: &NodeId) {
        if !self.held.is_empty() {
            self.held.remove(node);
        }
    }

    /// Whether Wills wait for a link check.
    pub fn is_waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// The number of Wills waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Wills discarded since start.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// The marker's echo arrived: the link was sound. Every held Will is released, oldest
    /// first, to be judged at its own arrival time; the backlog window (if any) ends.
    pub fn confirmed(&mut self) -> Vec<HeldWill> {
        self.backlog = false;
        let mut out: Vec<HeldWill> = self.held.drain().map(|(_, w)| w).collect();
        out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.path.node.cmp(&b.path.node)));
        out
    }

    /// The connection was lost at `at`: every held Will is discarded. Returns when the blind
    /// period began: the first discarded Will's arrival, or `at`.
    pub fn lost(&mut self, at: UnixMillis) -> UnixMillis {
        let first = self.held.values().map(|w| w.at).min().unwrap_or(at);
        self.discarded += self.held.len() as u64;
        self.held.clear();
        self.backlog = false;
        first.min(at)
    }

    /// A (re)connection: until the first echo on it, Wills are the backlog of the blind
    /// period.
    pub fn connected(&mut self) {
        self.discarded += self.held.len() as u64;
        self.held.clear();
        self.backlog = true;
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ms;
    use alarmnet_protocol::{BootId, NodeState, OfflineReason, V1};

    use super::*;

    const T0: UnixMillis = UnixMillis::from_millis(1_764_330_000_000);

    fn will(node: &str, at: UnixMillis) -> HeldWill {
        HeldWill {
            path: NodePath::new(
                "r".parse().expect("region"),
                "s".parse().expect("site"),
                node.parse().expect("node"),
            ),
            state: State {
                v: V1,
                state: NodeState::Offline,
                boot: BootId::new("b0000001").expect("boot"),
                ts: None,
                reason: Some(OfflineReason::Lost),
            },
            retained: false,
            at,
        }
    }

    fn nodes(wills: &[HeldWill]) -> Vec<(&str, UnixMillis)> {
        wills.iter().map(|w| (w.path.node.as_str(), w.at)).collect()
    }

    #[test]
    fn an_echo_releases_held_wills_at_their_own_times_oldest_first() {
        let mut g = WillGate::new();
        g.connected();
        assert!(g.confirmed().is_empty(), "the connection's first echo");
        assert!(g.hold(will("b", T0 + ms(20)), false));
        assert!(g.hold(will("a", T0 + ms(10)), false));
        assert!(g.is_waiting());
        assert_eq!(
            nodes(&g.confirmed()),
            [("a", T0 + ms(10)), ("b", T0 + ms(20))]
        );
        assert!(!g.is_waiting());
        assert_eq!(g.discarded(), 0);
    }

    #[test]
    fn a_wave_before_the_connection_is_lost_is_discarded_and_starts_the_blind_period() {
        let mut g = WillGate::new();
        g.connected();
        g.confirmed();
        for (i, n) in ["a", "b", "c"].into_iter().enumerate() {
            assert!(g.hold(will(n, T0 + ms(5) + ms(i as u64)), false));
        }
        assert_eq!(
            g.lost(T0 + ms(40)),
            T0 + ms(5),
            "blind from the first Will of the wave"
        );
        assert_eq!(g.discarded(), 3);
        assert!(g.confirmed().is_empty(), "nothing left to judge");
        assert_eq!(
            g.lost(T0 + ms(90)),
            T0 + ms(90),
            "no wave: blind from the loss"
        );
    }

    #[test]
    fn wills_in_the_backlog_after_a_reconnection_are_discarded_until_the_first_echo() {
        let mut g = WillGate::new();
        g.connected();
        assert!(
            !g.hold(will("queued", T0 + ms(1)), false),
            "queued while the collector was away"
        );
        assert!(g.confirmed().is_empty());
        assert!(
            g.hold(will("fresh", T0 + ms(500)), false),
            "after the echo: a real Will"
        );
        assert!(
            !g.hold(will("early", T0 + ms(501)), true),
            "within its node's grace period"
        );
        assert_eq!(nodes(&g.confirmed()), [("fresh", T0 + ms(500))]);
        assert_eq!(g.discarded(), 2);
    }

    #[test]
    fn live_evidence_supersedes_a_held_will_and_a_second_will_keeps_the_first_time() {
        let mut g = WillGate::new();
        g.connected();
        g.confirmed();
        g.hold(will("a", T0 + ms(10)), false);
        g.hold(will("b", T0 + ms(11)), false);
        g.hold(will("b", T0 + ms(30)), false);
        g.supersede(&"a".parse().expect("node"));
        assert_eq!(g.len(), 1);
        assert_eq!(nodes(&g.confirmed()), [("b", T0 + ms(11))]);
    }

    #[test]
    fn wills_held_across_a_reconnection_are_discarded() {
        let mut g = WillGate::new();
        g.connected();
        g.confirmed();
        g.hold(will("a", T0), false);
        g.connected();
        assert!(g.confirmed().is_empty());
        assert_eq!(g.discarded(), 1);
    }
}
