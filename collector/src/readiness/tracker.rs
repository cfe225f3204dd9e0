//! [`ReadinessTracker`]: every node's readiness inputs and derived state, the deadlines at
//! which a passed test becomes overdue, and the rollups per site, region and network.
//!
//! Fed by the core beside the liveness tracker (whose node, site and region indexes it
//! shares): effective liveness changes, fault messages, the fault lists of live heartbeats,
//! test receipts, and [`ReadinessTracker::tick`] at [`ReadinessTracker::next_deadline`].
//! Each call re-derives only the node it concerns and moves that node between the rollups'
//! buckets, so a message costs O(1) in the node count.
//!
// Design: the overdue deadlines sit in a binary heap with lazy deletion (an entry counts
// only while it equals the node's `scheduled` time), like liveness deadlines: a tick pops
// only what is due and never scans the nodes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use alarmnet_protocol::{FaultKey, Name, NodeId, Severity, TestResult};
use serde::Serialize;

use super::{Inputs, LastTest, Readiness, ReadinessConfig, Reason, derive};
use crate::liveness::{NodeIdx, Tracker};
use crate::model::{Liveness, UnixMillis};

/// Nodes per rollup bucket. The buckets partition the nodes: a node under maintenance is
/// counted in `maintenance` only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub ready: u32,
    pub degraded: u32,
    pub not_ready: u32,
    pub maintenance: u32,
}

impl Counts {
    fn bucket(&mut self, b: Bucket) -> &mut u32 {
        match b {
            Bucket::Ready => &mut self.ready,
            Bucket::Degraded => &mut self.degraded,
            Bucket::NotReady => &mut self.not_ready,
            Bucket::Maintenance => &mut self.maintenance,
        }
    }

    pub(crate) fn add(&mut self, b: Bucket) {
        *self.bucket(b) += 1;
    }

    pub(crate) fn remove(&mut self, b: Bucket) {
        let n = self.bucket(b);
        *n = n.saturating_sub(1);
    }

    pub fn total(&self) -> u32 {
        self.ready + self.degraded + self.not_ready + self.maintenance
    }

    /// The members that count for the percentage: all but those under maintenance.
    pub fn judged(&self) -> u32 {
        self.ready + self.degraded + self.not_ready
    }

    /// Ready share of the judged members, 0-100; `None` with none judged.
    pub fn ready_pct(&self) -> Option<f64> {
        let judged = self.judged();
        (judged > 0).then(|| 100.0 * f64::from(self.ready) / f64::from(judged))
    }
}

/// One rollup: all nodes, and the nodes of the counted kinds (sirens by default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rollup {
    pub nodes: Counts,
    pub sirens: Counts,
}

impl Rollup {
    fn add(&mut self, b: Bucket, counted: bool) {
        self.nodes.add(b);
        if counted {
            self.sirens.add(b);
        }
    }

    fn remove(&mut self, b: Bucket, counted: bool) {
        self.nodes.remove(b);
        if counted {
            self.sirens.remove(b);
        }
    }
}

/// The rollup bucket of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Bucket {
    Ready,
    Degraded,
    NotReady,
    Maintenance,
}

impl Bucket {
    pub(crate) fn of(state: Readiness, liveness: Liveness) -> Bucket {
        if liveness == Liveness::Maintenance {
            return Bucket::Maintenance;
        }
        match state {
            Readiness::Ready => Bucket::Ready,
            Readiness::Degraded => Bucket::Degraded,
            Readiness::NotReady => Bucket::NotReady,
        }
    }
}

/// A change of a node's readiness (state or reasons). Committed before it is announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessChange {
    pub node: NodeId,
    /// `None` for a node's first derivation.
    pub from: Option<Readiness>,
    pub to: Readiness,
    pub reasons: Vec<Reason>,
    pub at: UnixMillis,
}

/// What a restarted collector knew of a node's readiness inputs.
#[derive(Debug, Clone, Default)]
pub struct RestoredReadiness {
    /// The last stored state and reasons.
    pub previous: Option<(Readiness, Vec<Reason>)>,
    /// Active faults: key and severity.
    pub faults: Vec<(String, Severity)>,
    pub tests: Vec<LastTest>,
}

#[derive(Debug)]
struct NodeState {
    liveness: Liveness,
    faults: Vec<(String, Severity)>,
    tests: Vec<LastTest>,
    /// Derived (`None` until the first derivation).
    state: Option<Readiness>,
    reasons: Vec<Reason>,
    /// Where the node is counted, once derived.
    counted_as: Option<(Bucket, u32, u32, bool)>,
    /// The time of this node's valid heap entry (0 = none).
    scheduled: UnixMillis,
}

impl NodeState {
    fn new(liveness: Liveness) -> Self {
        Self {
            liveness,
            faults: Vec::new(),
            tests: Vec::new(),
            state: None,
            reasons: Vec::new(),
            counted_as: None,
            scheduled: UnixMillis::EPOCH,
        }
    }
}

/// Readiness of every node, with rollups. See the module documentation.
#[derive(Debug)]
pub struct ReadinessTracker {
    max_age: Duration,
    required: HashMap<String, Vec<Name>>,
    counted: HashSet<String>,
    nodes: Vec<Option<NodeState>>,
    heap: BinaryHeap<Reverse<(UnixMillis, u32)>>,
    sites: Vec<Rollup>,
    regions: Vec<Rollup>,
    network: Rollup,
    changes: Vec<ReadinessChange>,
    dirty_sites: BTreeSet<u32>,
    dirty_regions: BTreeSet<u32>,
    /// Regions whose rollup changed since the alert rules last saw them, with the time of
    /// the latest change.
    alert_regions: BTreeMap<u32, UnixMillis>,
}

impl ReadinessTracker {
    pub fn new(config: &ReadinessConfig) -> Self {
        Self {
            max_age: config.max_age(),
            required: config
                .required_tests
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            counted: config
                .counted_kinds
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            nodes: Vec::new(),
            heap: BinaryHeap::new(),
            sites: Vec::new(),
            regions: Vec::new(),
            network: Rollup::default(),
            changes: Vec::new(),
            dirty_sites: BTreeSet::new(),
            dirty_regions: BTreeSet::new(),
            alert_regions: BTreeMap::new(),
        }
    }

    /// The earliest time [`ReadinessTracker::tick`] may have work (may be early, never late).
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The network's rollup.
    pub fn network(&self) -> Rollup {
        self.network
    }

    /// A region's rollup by the liveness tracker's region index.
    pub(crate) fn region(&self, region: u32) -> Rollup {
        self.regions
            .get(region as usize)
            .copied()
            .unwrap_or_default()
    }

    /// A site's rollup by the liveness tracker's site index.
    pub(crate) fn site(&self, site: u32) -> Rollup {
        self.sites.get(site as usize).copied().unwrap_or_default()
    }

    /// A node's derived state and reasons.
    pub fn node(&self, t: &Tracker, node: &NodeId) -> Option<(Readiness, &[Reason])> {
        let idx = t.idx(node)?;
        let n = self.nodes.get(idx.0 as usize)?.as_ref()?;
        Some((n.state?, &n.reasons))
    }

    /// The changes since the last call, oldest first.
    pub fn take_changes(&mut self) -> Vec<ReadinessChange> {
        std::mem::take(&mut self.changes)
    }

    /// The sites and regions (tracker indexes) whose rollup changed since the last call.
    pub(crate) fn take_dirty(&mut self) -> (BTreeSet<u32>, BTreeSet<u32>) {
        (
            std::mem::take(&mut self.dirty_sites),
            std::mem::take(&mut self.dirty_regions),
        )
    }

    /// The regions (tracker indexes) whose rollup changed since the last call, each with the
    /// time of its latest change: what `readiness_low` must look at again.
    pub(crate) fn take_alert_regions(&mut self) -> BTreeMap<u32, UnixMillis> {
        std::mem::take(&mut self.alert_regions)
    }

    // ----- inputs -----

    /// Restores a node's inputs at start (no change is emitted until
    /// [`ReadinessTracker::finish_restore`]).
    pub fn restore(&mut self, t: &Tracker, node: &NodeId, restored: RestoredReadiness) {
        let Some(idx) = t.idx(node) else {
            return;
        };
        let n = self.slot(t, idx);
        n.faults = restored.faults;
        n.tests = restored.tests;
        if let Some((state, reasons)) = restored.previous {
            n.state = Some(state);
            n.reasons = reasons;
        }
    }

    /// Derives every node at `now`: changes are emitted only where the derivation differs
    /// from what was stored.
    pub fn finish_restore(&mut self, t: &Tracker, now: UnixMillis) {
        let all: Vec<NodeIdx> = t.nodes().filter_map(|v| t.idx(v.id())).collect();
        for idx in all {
            self.slot(t, idx);
            self.update(t, idx, now);
        }
    }

    /// A node's effective liveness changed (or the node was registered).
    pub fn liveness(&mut self, t: &Tracker, node: &NodeId, to: Liveness, at: UnixMillis) {
        let Some(idx) = t.idx(node) else {
            return;
        };
        self.slot(t, idx).liveness = to;
        self.update(t, idx, at);
    }

    /// A node the liveness tracker is about to forget ([`Tracker::forget`]): it leaves
    /// every rollup, and no change is emitted for it (its new collector tells).
    pub fn forget(&mut self, t: &Tracker, node: &NodeId, at: UnixMillis) {
        let Some(idx) = t.idx(node) else {
            return;
        };
        let Some(n) = self.nodes.get_mut(idx.0 as usize).and_then(Option::take) else {
            return;
        };
        if let Some(place) = n.counted_as {
            self.uncount(place, at);
        }
    }

    /// A birth: the node may be new, or have moved to another site or changed kind (which
    /// no liveness transition reports).
    pub fn birth(&mut self, t: &Tracker, node: &NodeId, at: UnixMillis) {
        let Some(idx) = t.idx(node) else {
            return;
        };
        self.slot(t, idx);
        self.update(t, idx, at);
    }

    /// A fault was raised (`severity`) or cleared (`None`).
    pub fn fault(
        &mut self,
        t: &Tracker,
        node: &NodeId,
        key: &FaultKey,
        severity: Option<Severity>,
        at: UnixMillis,
    ) {
        let Some(idx) = t.idx(node) else {
            return;
        };
        let key = key.to_string();
        let n = self.slot(t, idx);
        n.faults.retain(|(k, _)| *k != key);
        if let Some(s) = severity {
            n.faults.push((key, s));
            n.faults.sort();
        }
        self.update(t, idx, at);
    }

    /// A live heartbeat's list of active faults: listed keys not known are added with
    /// `unknown_severity` (their `fault` message was missed), known keys not listed cleared.
    pub fn fault_list(
        &mut self,
        t: &Tracker,
        node: &NodeId,
        keys: &[FaultKey],
        unknown_severity: Severity,
        at: UnixMillis,
    ) {
        let Some(idx) = t.idx(node) else {
            return;
        };
        let n = self.slot(t, idx);
        if keys.is_empty() && n.faults.is_empty() {
            return;
        }
        let listed: Vec<String> = keys.iter().map(ToString::to_string).collect();
        let before = n.faults.len();
        n.faults.retain(|(k, _)| listed.contains(k));
        let mut changed = n.faults.len() != before;
        for key in listed {
            if !n.faults.iter().any(|(k, _)| *k == key) {
                n.faults.push((key, unknown_severity));
                changed = true;
            }
        }
        if changed {
            n.faults.sort();
            self.update(t, idx, at);
        }
    }

    /// A test receipt; `ran_at` is when it ran. An older receipt than the one known for its
    /// kind (a late replay) changes nothing.
    pub fn test(
        &mut self,
        t: &Tracker,
        node: &NodeId,
        test: &Name,
        result: TestResult,
        ran_at: UnixMillis,
        at: UnixMillis,
    ) {
        let Some(idx) = t.idx(node) else {
            return;
        };
        let n = self.slot(t, idx);
        match n.tests.iter_mut().find(|l| &l.test == test) {
            Some(l) if l.at > ran_at => return,
            Some(l) => {
                l.result = result;
                l.at = ran_at;
            }
            None => n.tests.push(LastTest {
                test: test.clone(),
                result,
                at: ran_at,
            }),
        }
        self.update(t, idx, at);
    }

    /// Re-derives the nodes whose passed tests became overdue by `now`.
    pub fn tick(&mut self, t: &Tracker, now: UnixMillis) {
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            let valid = self
                .nodes
                .get(i as usize)
                .and_then(Option::as_ref)
                .is_some_and(|n| n.scheduled == at);
            if valid {
                if let Some(Some(n)) = self.nodes.get_mut(i as usize) {
                    n.scheduled = UnixMillis::EPOCH;
                }
                self.update(t, NodeIdx(i), now);
            }
        }
    }

    // ----- internals -----

    fn slot(&mut self, t: &Tracker, idx: NodeIdx) -> &mut NodeState {
        let i = idx.0 as usize;
        if self.nodes.len() <= i {
            self.nodes.resize_with(i + 1, || None);
        }
        self.nodes[i].get_or_insert_with(|| NodeState::new(t.view(idx).state()))
    }

    /// Re-derives one node at `at`: moves it between buckets, records a change when its
    /// state or reasons differ, and schedules its next overdue deadline.
    fn update(&mut self, t: &Tracker, idx: NodeIdx, at: UnixMillis) {
        let view = t.view(idx);
        let (site, region) = t.site_of(idx);
        let counted = self.counted.contains(view.kind().as_str());
        let required: &[Name] = self
            .required
            .get(view.kind().as_str())
            .map_or(&[], Vec::as_slice);
        let i = idx.0 as usize;
        let Some(Some(n)) = self.nodes.get_mut(i) else {
            return;
        };
        let d = derive(
            Inputs {
                liveness: n.liveness,
                faults: &n.faults,
                tests: &n.tests,
                required,
            },
            self.max_age,
            at,
        );
        let bucket = Bucket::of(d.state, n.liveness);
        let place = (bucket, site, region, counted);
        let old_place = n.counted_as.replace(place);
        if n.state != Some(d.state) || n.reasons != d.reasons {
            self.changes.push(ReadinessChange {
                node: view.id().clone(),
                from: n.state,
                to: d.state,
                reasons: d.reasons.clone(),
                at,
            });
            n.state = Some(d.state);
            n.reasons = d.reasons;
        }
        if let Some(due) = d.next_change
            && n.scheduled != due
        {
            n.scheduled = due;
            self.heap.push(Reverse((due, idx.0)));
        } else if d.next_change.is_none() {
            n.scheduled = UnixMillis::EPOCH;
        }
        if old_place != Some(place) {
            if let Some(old) = old_place {
                self.uncount(old, at);
            }
            self.network.add(bucket, counted);
            self.site_mut(site).add(bucket, counted);
            self.region_mut(region).add(bucket, counted);
            self.dirty_sites.insert(site);
            self.dirty_regions.insert(region);
            self.alert_regions.insert(region, at);
        }
    }

    /// Takes a node counted as `(bucket, site, region, counted)` out of the rollups it was
    /// in (it moved, or is forgotten): they are to be published again, and `readiness_low`
    /// judges its region again.
    fn uncount(&mut self, (b, s, r, c): (Bucket, u32, u32, bool), at: UnixMillis) {
        self.network.remove(b, c);
        self.site_mut(s).remove(b, c);
        self.region_mut(r).remove(b, c);
        self.dirty_sites.insert(s);
        self.dirty_regions.insert(r);
        self.alert_regions.insert(r, at);
    }

    fn site_mut(&mut self, s: u32) -> &mut Rollup {
        let i = s as usize;
        if self.sites.len() <= i {
            self.sites.resize_with(i + 1, Rollup::default);
        }
        &mut self.sites[i]
    }

    fn region_mut(&mut self, r: u32) -> &mut Rollup {
        let i = r as usize;
        if self.regions.len() <= i {
            self.regions.resize_with(i + 1, Rollup::default);
        }
        &mut self.regions[i]
    }

    /// The rollups recomputed from every node's current derivation (tests compare it with
    /// the incremental ones).
    #[cfg(test)]
    pub(crate) fn recount(&self, t: &Tracker) -> (Rollup, Vec<Rollup>, Vec<Rollup>) {
        let mut network = Rollup::default();
        let mut sites = vec![Rollup::default(); t.site_count()];
        let mut regions = vec![Rollup::default(); t.region_count()];
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            let Some(state) = n.state else { continue };
            let idx = NodeIdx(i as u32);
            let view = t.view(idx);
            let (s, r) = t.site_of(idx);
            let b = Bucket::of(state, n.liveness);
            let c = self.counted.contains(view.kind().as_str());
            network.add(b, c);
            sites[s as usize].add(b, c);
            regions[r as usize].add(b, c);
        }
        (network, sites, regions)
    }

    #[cfg(test)]
    pub(crate) fn rollups(&self) -> (Rollup, Vec<Rollup>, Vec<Rollup>) {
        (self.network, self.sites.clone(), self.regions.clone())
    }
}
