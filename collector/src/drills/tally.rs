//! One drill's live state: each asked node's outcome and the tally, closed at the deadline,
//! when every node has answered, or by a cancel. Pure: time comes in as arguments.
//!
//! Outcomes are exclusive, so `passed + failed + errored + silent + late + waiting = asked`:
//! - `waiting`: asked, no receipt yet, the drill still open;
//! - `pass` / `fail` / `error`: the receipt's result, received by the deadline;
//! - `silent`: no receipt by the time the drill closed (offline nodes end here);
//! - `late`: a receipt that arrived after the drill closed (its result is kept, but it is
//!   never a pass).
//!
//! The sounding rate is `passed / asked`.

use std::collections::{HashMap, HashSet};

use alarmnet_protocol::{Name, NodeId, NodePath, TestResult};
use serde::Serialize;

use super::DrillMeta;
use crate::model::UnixMillis;

/// Where a drill stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Open,
    /// Every asked node answered before the deadline.
    Completed,
    /// The deadline passed.
    Expired,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Open,
        Status::Completed,
        Status::Expired,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Completed => "completed",
            Status::Expired => "expired",
            Status::Cancelled => "cancelled",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One node's outcome in a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Waiting,
    Pass,
    Fail,
    Error,
    Silent,
    Late,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Waiting,
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Error,
        Outcome::Silent,
        Outcome::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Waiting => "waiting",
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Silent => "silent",
            Outcome::Late => "late",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    fn of(result: TestResult) -> Self {
        match result {
            TestResult::Pass => Outcome::Pass,
            TestResult::Fail => Outcome::Fail,
            TestResult::Error => Outcome::Error,
        }
    }
}

/// Counts of a drill's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub asked: u64,
    pub waiting: u64,
    pub passed: u64,
    pub failed: u64,
    pub errored: u64,
    pub silent: u64,
    pub late: u64,
}

impl Tally {
    /// Receipts that arrived in time.
    pub fn answered(&self) -> u64 {
        self.passed + self.failed + self.errored
    }

    /// `passed / asked`, 0 to 1 (0 for an empty drill).
    pub fn sounding_rate(&self) -> f64 {
        if self.asked == 0 {
            0.0
        } else {
            self.passed as f64 / self.asked as f64
        }
    }

    fn count(&mut self, o: Outcome) -> &mut u64 {
        match o {
            Outcome::Waiting => &mut self.waiting,
            Outcome::Pass => &mut self.passed,
            Outcome::Fail => &mut self.failed,
            Outcome::Error => &mut self.errored,
            Outcome::Silent => &mut self.silent,
            Outcome::Late => &mut self.late,
        }
    }

    fn moved(&mut self, from: Outcome, to: Outcome) {
        let f = self.count(from);
        *f = f.saturating_sub(1);
        *self.count(to) += 1;
    }
}

/// A test receipt for a drill, as the core stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub node: NodeId,
    pub result: TestResult,
    /// The collector's receive time (agents' clocks never decide).
    pub received_at: UnixMillis,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    /// The receipt's metrics as JSON text.
    pub metrics: Option<String>,
}

/// One asked node and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResult {
    pub path: NodePath,
    pub kind: Name,
    pub outcome: Outcome,
    /// The receipt's result (also for a late one).
    pub result: Option<TestResult>,
    pub received_at: Option<UnixMillis>,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    pub metrics: Option<String>,
}

impl NodeResult {
    pub fn waiting(path: NodePath, kind: Name) -> Self {
        Self {
            path,
            kind,
            outcome: Outcome::Waiting,
            result: None,
            received_at: None,
            duration_ms: None,
            message: None,
            metrics: None,
        }
    }
}

/// Why a drill cannot be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the drill is already {}", .0.as_str())]
pub struct NotOpen(pub Status);

/// One drill in memory. See the module documentation.
#[derive(Debug, Clone)]
pub struct LiveDrill {
    meta: DrillMeta,
    nodes: HashMap<NodeId, NodeResult>,
    /// Nodes whose result changed since [`LiveDrill::take_changes`].
    dirty: HashSet<NodeId>,
    /// The drill row changed (tally, status) since [`LiveDrill::take_changes`].
    meta_dirty: bool,
}

impl LiveDrill {
    /// A drill over `nodes` (results as stored: all `waiting` for a new drill). The tally
    /// is recounted from the results.
    pub fn new(mut meta: DrillMeta, nodes: Vec<NodeResult>) -> Self {
        let mut tally = Tally {
            asked: nodes.len() as u64,
            ..Tally::default()
        };
        for n in &nodes {
            *tally.count(n.outcome) += 1;
        }
        meta.tally = tally;
        Self {
            meta,
            nodes: nodes
                .into_iter()
                .map(|n| (n.path.node.clone(), n))
                .collect(),
            dirty: HashSet::new(),
            meta_dirty: false,
        }
    }

    pub fn meta(&self) -> &DrillMeta {
        &self.meta
    }

    pub fn tally(&self) -> Tally {
        self.meta.tally
    }

    pub fn is_open(&self) -> bool {
        self.meta.status == Status::Open
    }

    pub fn result(&self, node: &NodeId) -> Option<&NodeResult> {
        self.nodes.get(node)
    }

    /// The nodes still waiting (asked again after a restart).
    pub fn waiting(&self) -> impl Iterator<Item = &NodeResult> {
        self.nodes
            .values()
            .filter(|n| n.outcome == Outcome::Waiting)
    }

    /// Closes the drill as expired once `now` reaches the deadline: waiting nodes are
    /// silent. `true` if it closed now.
    pub fn tick(&mut self, now: UnixMillis) -> bool {
        if !self.is_open() || now < self.meta.deadline {
            return false;
        }
        self.close(Status::Expired, self.meta.deadline);
        true
    }

    /// Applies a receipt. Returns whether it changed anything: a receipt from a node the
    /// drill did not ask, or a second one from a node that already answered, changes
    /// nothing (it stays a plain test receipt in the store).
    pub fn receipt(&mut self, r: &Receipt) -> bool {
        // A receipt after the deadline first lets the deadline close the drill.
        self.tick(r.received_at);
        let open = self.is_open();
        let Some(node) = self.nodes.get_mut(&r.node) else {
            return false;
        };
        let to = match (node.outcome, open) {
            (Outcome::Waiting, true) => Outcome::of(r.result),
            (Outcome::Waiting | Outcome::Silent, false) => Outcome::Late,
            _ => return false,
        };
        let from = node.outcome;
        node.outcome = to;
        node.result = Some(r.result);
        node.received_at = Some(r.received_at);
        node.duration_ms = r.duration_ms;
        node.message = r.message.clone();
        node.metrics = r.metrics.clone();
        self.meta.tally.moved(from, to);
        self.dirty.insert(r.node.clone());
        self.meta_dirty = true;
        if open && self.meta.tally.waiting == 0 {
            self.close(Status::Completed, r.received_at);
        }
        true
    }

    /// Cancels an open drill at `now`: nodes still waiting are silent, later receipts late.
    pub fn cancel(&mut self, by: &str, now: UnixMillis) -> Result<(), NotOpen> {
        if !self.is_open() {
            return Err(NotOpen(self.meta.status));
        }
        self.meta.cancelled_by = Some(by.to_owned());
        self.close(Status::Cancelled, now);
        Ok(())
    }

    fn close(&mut self, status: Status, at: UnixMillis) {
        self.meta.status = status;
        self.meta.closed_at = Some(at);
        for (id, n) in &mut self.nodes {
            if n.outcome == Outcome::Waiting {
                n.outcome = Outcome::Silent;
                self.dirty.insert(id.clone());
            }
        }
        let t = &mut self.meta.tally;
        t.silent += t.waiting;
        t.waiting = 0;
        self.meta_dirty = true;
    }

    /// The results changed since the last call, and whether the drill row changed.
    pub fn take_changes(&mut self) -> (Vec<NodeResult>, bool) {
        let rows = self
            .dirty
            .drain()
            .filter_map(|id| self.nodes.get(&id).cloned())
            .collect();
        (rows, std::mem::take(&mut self.meta_dirty))
    }

    /// Every node's result.
    pub fn results(&self) -> impl Iterator<Item = &NodeResult> {
        self.nodes.values()
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ms;
    use alarmnet_protocol::{CmdId, RegionId, SiteId};

    use super::*;
    use crate::drills::Selector;

    const T0: UnixMillis = UnixMillis::from_millis(1_790_000_000_000);
    const DEADLINE: UnixMillis = UnixMillis::from_millis(T0.as_millis() + 600_000);

    fn drill(n: usize) -> LiveDrill {
        let meta = DrillMeta {
            id: CmdId::new("d-1").expect("id"),
            test: Name::new("silent").expect("test"),
            selector: Selector::default(),
            started_at: T0,
            deadline: DEADLINE,
            started_by: "ops".into(),
            status: Status::Open,
            closed_at: None,
            cancelled_by: None,
            schedule: None,
            tally: Tally::default(),
        };
        let nodes = (0..n)
            .map(|i| {
                let path = NodePath::new(
                    RegionId::new("r").expect("id"),
                    SiteId::new("s").expect("id"),
                    NodeId::new(format!("n{i}")).expect("id"),
                );
                NodeResult::waiting(path, Name::new("siren").expect("kind"))
            })
            .collect();
        LiveDrill::new(meta, nodes)
    }

    fn receipt(node: usize, result: TestResult, at: UnixMillis) -> Receipt {
        Receipt {
            node: NodeId::new(format!("n{node}")).expect("id"),
            result,
            received_at: at,
            duration_ms: Some(4200),
            message: Some("ok".into()),
            metrics: None,
        }
    }

    fn sums_to_asked(t: &Tally) -> bool {
        t.waiting + t.passed + t.failed + t.errored + t.silent + t.late == t.asked
    }

    #[test]
    fn receipts_count_once_and_the_deadline_makes_the_rest_silent_then_late() {
        let mut d = drill(10);
        assert!(d.receipt(&receipt(0, TestResult::Pass, T0 + ms(1_000))));
        assert!(d.receipt(&receipt(1, TestResult::Pass, T0 + ms(2_000))));
        assert!(d.receipt(&receipt(2, TestResult::Fail, T0 + ms(3_000))));
        assert!(d.receipt(&receipt(3, TestResult::Error, T0 + ms(4_000))));
        assert!(
            !d.receipt(&receipt(0, TestResult::Fail, T0 + ms(5_000))),
            "second receipt"
        );
        assert!(!d.receipt(&receipt(99, TestResult::Pass, T0)), "not asked");
        let t = d.tally();
        assert_eq!((t.passed, t.failed, t.errored, t.waiting), (2, 1, 1, 6));
        assert!((t.sounding_rate() - 0.2).abs() < 1e-9);
        assert!(!d.tick(DEADLINE - ms(1)));
        assert!(d.is_open());
        assert!(d.tick(DEADLINE));
        assert_eq!(d.meta().status, Status::Expired);
        assert_eq!(d.meta().closed_at, Some(DEADLINE));
        assert_eq!(d.tally().silent, 6);
        // After the deadline: late, never a pass; the rate does not move.
        assert!(d.receipt(&receipt(4, TestResult::Pass, DEADLINE + ms(10))));
        let t = d.tally();
        assert_eq!((t.silent, t.late, t.passed), (5, 1, 2));
        assert!((t.sounding_rate() - 0.2).abs() < 1e-9);
        let late = d.result(&NodeId::new("n4").expect("id")).expect("asked");
        assert_eq!(late.outcome, Outcome::Late);
        assert_eq!(late.result, Some(TestResult::Pass));
        assert!(
            !d.receipt(&receipt(4, TestResult::Pass, DEADLINE + ms(20))),
            "once"
        );
        assert!(sums_to_asked(&d.tally()));
    }

    #[test]
    fn a_receipt_after_the_deadline_is_late_even_before_any_tick() {
        let mut d = drill(2);
        assert!(d.receipt(&receipt(0, TestResult::Pass, DEADLINE + ms(1))));
        assert_eq!(d.meta().status, Status::Expired);
        let t = d.tally();
        assert_eq!((t.passed, t.late, t.silent), (0, 1, 1));
    }

    #[test]
    fn the_drill_completes_when_every_node_answered() {
        let mut d = drill(3);
        d.receipt(&receipt(0, TestResult::Pass, T0 + ms(1)));
        d.receipt(&receipt(1, TestResult::Fail, T0 + ms(2)));
        assert!(d.is_open());
        d.receipt(&receipt(2, TestResult::Pass, T0 + ms(3)));
        assert_eq!(d.meta().status, Status::Completed);
        assert_eq!(d.meta().closed_at, Some(T0 + ms(3)));
        assert!(!d.tick(DEADLINE + ms(1)), "already closed");
        let t = d.tally();
        assert_eq!((t.passed, t.failed, t.silent, t.waiting), (2, 1, 0, 0));
        assert!((t.sounding_rate() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn cancel_closes_once_and_later_receipts_are_late() {
        let mut d = drill(4);
        d.receipt(&receipt(0, TestResult::Pass, T0 + ms(1)));
        d.take_changes();
        d.cancel("ops", T0 + ms(100)).expect("open");
        assert_eq!(d.meta().status, Status::Cancelled);
        assert_eq!(d.meta().cancelled_by.as_deref(), Some("ops"));
        assert_eq!(
            d.cancel("ops", T0 + ms(200)),
            Err(NotOpen(Status::Cancelled))
        );
        let (rows, meta) = d.take_changes();
        assert!(meta);
        assert_eq!(rows.len(), 3, "the waiting nodes turned silent");
        assert!(rows.iter().all(|r| r.outcome == Outcome::Silent));
        d.receipt(&receipt(1, TestResult::Pass, T0 + ms(150)));
        let t = d.tally();
        assert_eq!((t.passed, t.silent, t.late), (1, 2, 1));
        assert!(sums_to_asked(&t));
    }

    #[test]
    fn a_drill_rebuilt_from_stored_results_recounts_its_tally() {
        let mut d = drill(5);
        d.receipt(&receipt(0, TestResult::Pass, T0 + ms(1)));
        d.receipt(&receipt(1, TestResult::Error, T0 + ms(2)));
        let stored: Vec<NodeResult> = d.results().cloned().collect();
        let again = LiveDrill::new(d.meta().clone(), stored);
        assert_eq!(again.tally(), d.tally());
        assert_eq!(again.waiting().count(), 3);
    }
}
