//! The availability arithmetic: one pass over each node's transitions, split by maintenance
//! and blind intervals, summed per node and rolled up per group.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, SiteId};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use super::days::{Segment, combine};
use super::unwatched::Unwatched;
use super::window::{ParamError, Stamp, Window};
use crate::model::{Cause, Liveness, NodeInfo, Silence, Transition, UnixMillis};

/// How rows are grouped (`by=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One row per node.
    #[default]
    Node,
    /// One row per (region, site).
    Site,
    Region,
    /// One row per node kind (`siren`, `display`, ...).
    Kind,
    /// One row for the whole network.
    Network,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Node => "node",
            GroupBy::Site => "site",
            GroupBy::Region => "region",
            GroupBy::Kind => "kind",
            GroupBy::Network => "network",
        }
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupBy {
    type Err = ParamError;

    /// Parses the `by` parameter; the error names `by`.
    fn from_str(s: &str) -> Result<Self, ParamError> {
        match s {
            "node" => Ok(GroupBy::Node),
            "site" => Ok(GroupBy::Site),
            "region" => Ok(GroupBy::Region),
            "kind" => Ok(GroupBy::Kind),
            "network" => Ok(GroupBy::Network),
            _ => Err(ParamError::new(
                "by",
                s,
                "expected one of node, site, region, kind, network",
            )),
        }
    }
}

/// Which nodes a report covers (`region=`, `site=`, `node=`, `kind=`); `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
    pub node: Option<NodeId>,
    pub kind: Option<Name>,
}

impl Filter {
    pub fn matches(&self, path: &NodePath, kind: &Name) -> bool {
        self.region.as_ref().is_none_or(|r| *r == path.region)
            && self.site.as_ref().is_none_or(|s| *s == path.site)
            && self.node.as_ref().is_none_or(|n| *n == path.node)
            && self.kind.as_ref().is_none_or(|k| k == kind)
    }
}

/// One uptime question.
#[derive(Debug, Clone)]
pub struct Query {
    /// The window asked about, `[from, to)`.
    pub window: Window,
    /// The collector's clock now: figures run to `min(to, now)` (never before `from`), so
    /// an ongoing state counts only up to now and the future counts as nothing at all.
    pub now: UnixMillis,
    pub by: GroupBy,
    pub filter: Filter,
    /// Whether node rows (`by=node` only) carry their `outage_list` (the API sets it for
    /// `node=` queries; lists for thousands of nodes would be large).
    pub outage_list: bool,
    /// The zone the report's instants are written in.
    pub tz: TimeZone,
}

impl Query {
    /// The end of the measured span: `min(to, now)`, but not before `from`.
    pub fn until(&self) -> UnixMillis {
        self.window.to().min(self.now).max(self.window.from())
    }
}

/// Input that breaks the ordering contract of [`ReportBuilder::add_node`] or [`report`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UptimeError {
    #[error("transitions of node {node} are not sorted by time (at {at} after {previous})")]
    UnsortedTimes {
        node: NodeId,
        previous: UnixMillis,
        at: UnixMillis,
    },
    #[error("transition of node {found} given while adding node {expected}")]
    WrongNode { expected: NodeId, found: NodeId },
    #[error("transitions are not grouped by node in ascending order ({node} after {previous})")]
    UnsortedNodes { previous: NodeId, node: NodeId },
}

/// The answer to a [`Query`]: `{"from","to","until","by","rows":[...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UptimeReport {
    /// The window asked about.
    pub from: Stamp,
    pub to: Stamp,
    /// Where the figures stop: `min(to, now)`, not before `from`.
    pub until: Stamp,
    pub by: GroupBy,
    /// Sorted by group: region, site, node, kind.
    pub rows: Vec<Row>,
}

/// The figures of one group. Durations are seconds with millisecond precision; the
/// identity fields present depend on `by`: node → `region`, `site`, `node`, `kind`;
/// site → `region`, `site`; region → `region`; kind → `kind`; network → none.
///
/// Every node's measured span `[from, until)` splits exactly into up (`online`, `late`),
/// down (`offline`, `stopped`), maintenance (state `maintenance` or covered by a matching
/// silence, whatever the state) and unknown (state `unknown`, before the node's first
/// transition, or inside a blind interval when nobody was watching). Maintenance wins over
/// blind, blind over the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Name>,
    /// How many nodes the row sums.
    pub nodes: u64,
    /// `up / (up + down) × 100`, over all members' time (time-weighted); null when nothing
    /// was watched.
    pub availability_pct: Option<f64>,
    /// `(up + down) / (span − maintenance) × 100` = watched over the time that was not
    /// maintenance, over all members; null when every member's span was maintenance (or
    /// empty).
    pub coverage_pct: Option<f64>,
    pub up_s: f64,
    pub downtime_s: f64,
    pub maintenance_s: f64,
    pub unknown_s: f64,
    /// Outages with down time inside the window (one that began before `from` counts).
    pub outages: u64,
    /// The most down time inside the window of any one outage; null with no outage.
    pub longest_outage_s: Option<f64>,
    /// Mean time to repair: `downtime_s / outages` (ongoing and clipped outages count with
    /// their down time inside the window); null with no outage.
    pub mttr_s: Option<f64>,
    /// Mean time between failures: `up_s / outages`; null with no outage.
    pub mtbf_s: Option<f64>,
    /// Test receipts (self-tests and drills) with `ts` in `[from, until)`.
    pub tests: u64,
    pub tests_passed: u64,
    /// Result `fail`; the rest of `tests` could not run (`error`).
    pub tests_failed: u64,
    /// `tests_passed / tests × 100`; null with no test.
    pub test_pass_pct: Option<f64>,
    /// The node's outages, oldest first (node rows, when the query asks for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outage_list: Option<Vec<Outage>>,
}

/// How a node's tests in a window went (see [`Row::tests`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestTally {
    pub run: u64,
    pub passed: u64,
    pub failed: u64,
}

impl TestTally {
    fn add(&mut self, other: TestTally) {
        self.run += other.run;
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// One node's [`TestTally`], for [`report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTests {
    pub node: NodeId,
    pub tally: TestTally,
}

/// One outage of a node: a run of down time that only up time ends. Maintenance and
/// unknown time inside it neither end it nor count toward its duration; `offline` and
/// `stopped` both count (a clean stop is still unavailability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// When the node went down: the `at` of the transition that began the outage, which
    /// may be before the window's `from` if the input reaches back that far; otherwise the
    /// earliest instant the input shows it down.
    pub start: Stamp,
    /// When the node came up again; null if it had not by `until` (still going on when
    /// `until` is `now`).
    pub end: Option<Stamp>,
    /// Down time inside `[from, until)` only.
    pub duration_s: f64,
    /// The cause of the transition that began it (`timeout`, `will`, `shutdown`, ...);
    /// null when the input starts with the node already down.
    pub cause: Option<Cause>,
}

/// One transition of a node, without the node: what the arithmetic reads. A store that
/// streams one node's history at a time hands these over without a node id per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from: Liveness,
    pub to: Liveness,
    pub at: UnixMillis,
    pub cause: Cause,
}

impl From<&Transition> for Step {
    fn from(t: &Transition) -> Self {
        Step {
            from: t.from,
            to: t.to,
            at: t.at,
            cause: t.cause,
        }
    }
}

/// Millisecond sums of one group.
#[derive(Debug, Clone, Default)]
struct Totals {
    nodes: u64,
    up: u64,
    down: u64,
    maintenance: u64,
    unknown: u64,
    outages: u64,
    longest: u64,
    tests: TestTally,
    outage_list: Option<Vec<Outage>>,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.nodes += other.nodes;
        self.up += other.up;
        self.down += other.down;
        self.maintenance += other.maintenance;
        self.unknown += other.unknown;
        self.outages += other.outages;
        self.longest = self.longest.max(other.longest);
        self.tests.add(other.tests);
        if let Some(list) = other.outage_list {
            self.outage_list.get_or_insert_with(Vec::new).extend(list);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    region: Option<RegionId>,
    site: Option<SiteId>,
    node: Option<NodeId>,
    kind: Option<Name>,
}

/// What an instant of a node's span counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Up,
    Down,
    Maintenance,
    Unknown,
}

impl Category {
    fn of(state: Liveness) -> Self {
        if state.is_up() {
            Category::Up
        } else if state.is_down() {
            Category::Down
        } else if state == Liveness::Maintenance {
            Category::Maintenance
        } else {
            Category::Unknown
        }
    }
}

/// An interval of the span whose category does not depend on the node's state.
#[derive(Debug, Clone, Copy)]
struct Overlay {
    start: UnixMillis,
    end: UnixMillis,
    category: Category,
}

#[derive(Debug)]
struct OpenOutage {
    start: UnixMillis,
    cause: Option<Cause>,
    /// Down time so far, in milliseconds.
    down: u64,
}

/// Builds a report node by node, so a store can stream transitions ordered by
/// `(node, at)` without holding them all.
#[derive(Debug)]
pub struct ReportBuilder<'q> {
    query: &'q Query,
    from: UnixMillis,
    until: UnixMillis,
    /// Silences that overlap the span.
    silences: Vec<&'q Silence>,
    /// Blind intervals clipped to the span, sorted and merged: for a region without its
    /// own (`blind_regions`).
    blind: Vec<(UnixMillis, UnixMillis)>,
    /// The same, of the regions with their own ([`Unwatched`]).
    blind_regions: HashMap<RegionId, Vec<(UnixMillis, UnixMillis)>>,
    groups: BTreeMap<GroupKey, Totals>,
    scratch_maintenance: Vec<(UnixMillis, UnixMillis)>,
    scratch_overlay: Vec<Overlay>,
}

impl<'q> ReportBuilder<'q> {
    /// `silences` are maintenance windows matched against each node by region, site, node
    /// and kind (every field a silence sets must match). `blind` are intervals when nobody
    /// was watching (the collector down or cut off from the broker): they count as unknown
    /// for every node, whatever its stored state says.
    pub fn new(query: &'q Query, silences: &'q [Silence], blind: &[Window]) -> Self {
        Self::with_unwatched(query, silences, &Unwatched::everywhere(blind.to_vec()))
    }

    /// [`Self::new`] with blind intervals by the node's region (region shards).
    pub fn with_unwatched(
        query: &'q Query,
        silences: &'q [Silence],
        unwatched: &Unwatched,
    ) -> Self {
        let from = query.window.from();
        let until = query.until();
        let silences = silences
            .iter()
            .filter(|s| s.starts_at < until && from < s.ends_at && s.starts_at < s.ends_at)
            .collect();
        let clip = |blind: &[Window]| {
            merged(
                blind
                    .iter()
                    .map(|w| (w.from().max(from), w.to().min(until)))
                    .filter(|(a, b)| a < b)
                    .collect(),
            )
        };
        let mut blind = Vec::new();
        let mut blind_regions = HashMap::new();
        for (region, list) in unwatched.lists() {
            match region {
                None => blind = clip(list),
                Some(region) => {
                    blind_regions.insert(region.clone(), clip(list));
                }
            }
        }
        Self {
            query,
            from,
            until,
            silences,
            blind,
            blind_regions,
            groups: BTreeMap::new(),
            scratch_maintenance: Vec::new(),
            scratch_overlay: Vec::new(),
        }
    }

    /// Adds one node (once per node; nodes in any order). `transitions` are that node's,
    /// sorted by `at` (equal times keep their stored order: the last one wins). The state
    /// before the first given transition is that transition's `from`; give the last
    /// transition at or before the window's `from` (or more history) so the state at `from`
    /// is known and an outage already going on gets its true start. Transitions at or after
    /// `until` are ignored. A node outside the query's filter is skipped.
    pub fn add_node<I, T>(
        &mut self,
        path: &NodePath,
        kind: &Name,
        transitions: I,
    ) -> Result<(), UptimeError>
    where
        I: IntoIterator<Item = T>,
        T: Borrow<Transition>,
    {
        if !self.query.filter.matches(path, kind) {
            return Ok(());
        }
        let mut wrong: Option<NodeId> = None;
        let steps = transitions.into_iter().map_while(|t| {
            let t = t.borrow();
            if t.node == path.node {
                Some(Step::from(t))
            } else {
                wrong = Some(t.node.clone());
                None
            }
        });
        self.build_overlay(path, kind);
        let list = self.query.outage_list && self.query.by == GroupBy::Node;
        let totals = self.node_totals(path, steps, list)?;
        if let Some(found) = wrong {
            return Err(UptimeError::WrongNode {
                expected: path.node.clone(),
                found,
            });
        }
        self.add_totals(path, kind, totals);
        Ok(())
    }

    /// [`Self::add_node`] for a node whose transitions are given as [`Step`]s (sorted by
    /// `at`, equal times in stored order).
    pub fn add_node_steps(
        &mut self,
        path: &NodePath,
        kind: &Name,
        steps: &[Step],
    ) -> Result<(), UptimeError> {
        if !self.query.filter.matches(path, kind) {
            return Ok(());
        }
        self.build_overlay(path, kind);
        let list = self.query.outage_list && self.query.by == GroupBy::Node;
        let totals = self.node_totals(path, steps.iter().copied(), list)?;
        self.add_totals(path, kind, totals);
        Ok(())
    }

    /// Adds a node's tests in the window (at most once per node, beside its transitions).
    /// A node outside the query's filter is skipped.
    pub fn add_node_tests(&mut self, path: &NodePath, kind: &Name, tests: TestTally) {
        if tests == TestTally::default() || !self.query.filter.matches(path, kind) {
            return;
        }
        let totals = Totals {
            tests,
            ..Totals::default()
        };
        self.add_totals(path, kind, totals);
    }

    fn add_totals(&mut self, path: &NodePath, kind: &Name, totals: Totals) {
        let key = match self.query.by {
            GroupBy::Node => GroupKey {
                region: Some(path.region.clone()),
                site: Some(path.site.clone()),
                node: Some(path.node.clone()),
                kind: Some(kind.clone()),
            },
            GroupBy::Site => GroupKey {
                region: Some(path.region.clone()),
                site: Some(path.site.clone()),
                ..GroupKey::default()
            },
            GroupBy::Region => GroupKey {
                region: Some(path.region.clone()),
                ..GroupKey::default()
            },
            GroupBy::Kind => GroupKey {
                kind: Some(kind.clone()),
                ..GroupKey::default()
            },
            GroupBy::Network => GroupKey::default(),
        };
        self.groups.entry(key).or_default().add(totals);
    }

    /// The report, rows sorted by group.
    pub fn finish(self) -> UptimeReport {
        let query = self.query;
        self.into_partial().finish(query)
    }

    /// The sums so far, to be merged with those of builders that took other nodes of the
    /// same query (a report read in parallel).
    pub fn into_partial(self) -> PartialReport {
        PartialReport {
            groups: self.groups,
        }
    }
}

/// The sums of a [`ReportBuilder`] over some of a query's nodes. Partials over disjoint
/// sets of nodes merge into the report over all of them.
#[derive(Debug, Default)]
pub struct PartialReport {
    groups: BTreeMap<GroupKey, Totals>,
}

impl PartialReport {
    /// Adds `other`'s sums (its nodes must not also be in `self`).
    pub fn merge(&mut self, other: PartialReport) {
        for (key, totals) in other.groups {
            self.groups.entry(key).or_default().add(totals);
        }
    }

    /// The report of `query`, rows sorted by group.
    pub fn finish(self, query: &Query) -> UptimeReport {
        let tz = &query.tz;
        let rows = self
            .groups
            .into_iter()
            .map(|(key, t)| {
                let watched = t.up + t.down;
                let observable = watched + t.unknown;
                let per_outage = |ms: u64| {
                    (t.outages > 0).then(|| round_ms(ms as f64 / t.outages as f64) / 1000.0)
                };
                Row {
                    region: key.region,
                    site: key.site,
                    node: key.node,
                    kind: key.kind,
                    nodes: t.nodes,
                    availability_pct: percent(t.up, watched),
                    coverage_pct: percent(watched, observable),
                    up_s: seconds(t.up),
                    downtime_s: seconds(t.down),
                    maintenance_s: seconds(t.maintenance),
                    unknown_s: seconds(t.unknown),
                    outages: t.outages,
                    longest_outage_s: (t.outages > 0).then(|| seconds(t.longest)),
                    mttr_s: per_outage(t.down),
                    mtbf_s: per_outage(t.up),
                    tests: t.tests.run,
                    tests_passed: t.tests.passed,
                    tests_failed: t.tests.failed,
                    test_pass_pct: percent(t.tests.passed, t.tests.run),
                    outage_list: t.outage_list,
                }
            })
            .collect();
        UptimeReport {
            from: Stamp::new(query.window.from(), tz),
            to: Stamp::new(query.window.to(), tz),
            until: Stamp::new(query.until(), tz),
            by: query.by,
            rows,
        }
    }
}

impl<'q> ReportBuilder<'q> {
    /// Fills `scratch_overlay` with this node's maintenance (matching silences) and blind
    /// intervals, disjoint and sorted; maintenance takes precedence.
    fn build_overlay(&mut self, path: &NodePath, kind: &Name) {
        let (from, until) = (self.from, self.until);
        let maintenance = &mut self.scratch_maintenance;
        maintenance.clear();
        maintenance.extend(
            self.silences
                .iter()
                .filter(|s| silence_matches(s, path, kind))
                .map(|s| (s.starts_at.max(from), s.ends_at.min(until))),
        );
        merge_in_place(maintenance);
        let overlay = &mut self.scratch_overlay;
        overlay.clear();
        overlay.extend(maintenance.iter().map(|&(start, end)| Overlay {
            start,
            end,
            category: Category::Maintenance,
        }));
        // Blind time not already maintenance.
        let blind = self.blind_regions.get(&path.region).unwrap_or(&self.blind);
        let mut m = 0;
        for &(mut start, end) in blind {
            while start < end {
                while m < maintenance.len() && maintenance[m].1 <= start {
                    m += 1;
                }
                match maintenance.get(m) {
                    Some(&(ms, me)) if ms <= start => start = me.min(end).max(start),
                    Some(&(ms, _)) if ms < end => {
                        overlay.push(Overlay {
                            start,
                            end: ms,
                            category: Category::Unknown,
                        });
                        start = ms;
                    }
                    _ => {
                        overlay.push(Overlay {
                            start,
                            end,
                            category: Category::Unknown,
                        });
                        start = end;
                    }
                }
            }
        }
        if !blind.is_empty() && !maintenance.is_empty() {
            overlay.sort_unstable_by_key(|o| o.start);
        }
    }

    /// The single pass over one node's transitions.
    fn node_totals(
        &self,
        path: &NodePath,
        steps: impl Iterator<Item = Step>,
        list: bool,
    ) -> Result<Totals, UptimeError> {
        let mut walk = Walk {
            from: self.from,
            until: self.until,
            overlay: &self.scratch_overlay,
            next_overlay: 0,
            totals: Totals {
                nodes: 1,
                outage_list: list.then(Vec::new),
                ..Totals::default()
            },
            outage: None,
            tz: &self.query.tz,
        };
        let mut state = Liveness::Unknown;
        let mut since = UnixMillis::EPOCH;
        let mut first = true;
        for t in steps {
            if first {
                first = false;
                state = t.from;
                if state.is_down() {
                    walk.outage = Some(OpenOutage {
                        start: t.at.min(self.from),
                        cause: None,
                        down: 0,
                    });
                }
            } else if t.at < since {
                return Err(UptimeError::UnsortedTimes {
                    node: path.node.clone(),
                    previous: since,
                    at: t.at,
                });
            }
            if t.at >= self.until {
                break;
            }
            walk.account(state, since, t.at);
            if t.to.is_down() && walk.outage.is_none() {
                walk.outage = Some(OpenOutage {
                    start: t.at,
                    cause: Some(t.cause),
                    down: 0,
                });
            } else if t.to.is_up() {
                walk.close_outage(Some(t.at));
            }
            state = t.to;
            since = t.at;
        }
        walk.account(state, since, self.until);
        walk.close_outage(None);
        Ok(walk.totals)
    }
}

/// The state of the pass over one node.
struct Walk<'a> {
    from: UnixMillis,
    until: UnixMillis,
    overlay: &'a [Overlay],
    next_overlay: usize,
    totals: Totals,
    outage: Option<OpenOutage>,
    tz: &'a TimeZone,
}

impl Walk<'_> {
    /// Counts `[start, end)` ∩ `[from, until)` spent in `state`, overlays applied.
    /// Successive calls must move forward in time.
    fn account(&mut self, state: Liveness, start: UnixMillis, end: UnixMillis) {
        let mut cur = start.max(self.from);
        let end = end.min(self.until);
        let own = Category::of(state);
        while cur < end {
            while self
                .overlay
                .get(self.next_overlay)
                .is_some_and(|o| o.end <= cur)
            {
                self.next_overlay += 1;
            }
            let (category, piece_end) = match self.overlay.get(self.next_overlay) {
                Some(o) if o.start <= cur => (o.category, o.end.min(end)),
                Some(o) => (own, o.start.min(end)),
                None => (own, end),
            };
            self.add(category, piece_end.millis_since(cur));
            cur = piece_end;
        }
    }

    fn add(&mut self, category: Category, ms: u64) {
        let t = &mut self.totals;
        match category {
            Category::Up => t.up += ms,
            Category::Down => {
                t.down += ms;
                if let Some(o) = &mut self.outage {
                    o.down += ms;
                }
            }
            Category::Maintenance => t.maintenance += ms,
            Category::Unknown => t.unknown += ms,
        }
    }

    /// Ends the open outage (at `end`, or still open at `until` when `None`); it is
    /// counted only if some of its down time fell inside the window.
    fn close_outage(&mut self, end: Option<UnixMillis>) {
        let Some(o) = self.outage.take() else {
            return;
        };
        if o.down == 0 {
            return;
        }
        let t = &mut self.totals;
        t.outages += 1;
        t.longest = t.longest.max(o.down);
        if let Some(list) = &mut t.outage_list {
            list.push(Outage {
                start: Stamp::new(o.start, self.tz),
                end: end.map(|e| Stamp::new(e, self.tz)),
                duration_s: seconds(o.down),
                cause: o.cause,
            });
        }
    }
}

impl ReportBuilder<'_> {
    /// One node's [`Segment`] over the query's span (`[from, until)`), for the daily
    /// summaries. `steps` as for [`Self::add_node_steps`]; the query's filter and grouping
    /// do not matter here.
    pub fn segment(
        &mut self,
        path: &NodePath,
        kind: &Name,
        steps: &[Step],
        tests: TestTally,
    ) -> Result<Segment, UptimeError> {
        self.build_overlay(path, kind);
        let mut t = self.node_totals(path, steps.iter().copied(), true)?;
        let list = t.outage_list.take().unwrap_or_default();
        let ms = |o: &Outage| (o.duration_s * 1000.0).round() as u64;
        Ok(Segment {
            from: self.from,
            to: self.until,
            up_ms: t.up,
            down_ms: t.down,
            maintenance_ms: t.maintenance,
            unknown_ms: t.unknown,
            outages: t.outages,
            // The first outage continues whatever outage was open at `from` unless the node
            // came up in between (only a transition to up ends an outage; one at the very
            // instant the outage began came before its down transition, or the outage would
            // have had no down time).
            first_carried: list.first().is_some_and(|o| {
                let start = o.start.millis();
                start < self.from
                    || !steps
                        .iter()
                        .any(|s| s.to.is_up() && s.at >= self.from && s.at <= start)
            }),
            first_ms: list.first().map_or(0, ms),
            last_open: list.last().is_some_and(|o| o.end.is_none()),
            last_ms: list.last().map_or(0, ms),
            longest_ms: t.longest,
            went_up: steps
                .iter()
                .any(|s| s.to.is_up() && s.at >= self.from && s.at < self.until),
            tests,
        })
    }

    /// Adds one node from consecutive [`Segment`]s covering the query's span (daily
    /// summaries, possibly followed by a segment computed from raw transitions). Every
    /// figure but the outage list (never given) is what [`Self::add_node_steps`] gives
    /// over the raw transitions; see [`combine`].
    pub fn add_node_segments(&mut self, path: &NodePath, kind: &Name, segments: &[Segment]) {
        if !self.query.filter.matches(path, kind) {
            return;
        }
        let c = combine(segments);
        let totals = Totals {
            nodes: 1,
            up: c.up_ms,
            down: c.down_ms,
            maintenance: c.maintenance_ms,
            unknown: c.unknown_ms,
            outages: c.outages,
            longest: c.longest_ms,
            tests: c.tests,
            outage_list: None,
        };
        self.add_totals(path, kind, totals);
    }
}

/// Everything a report needs from the store, for [`report`].
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Every node the report may cover (those without transitions count as unknown).
    pub nodes: &'a [NodeInfo],
    /// Sorted by `(node, at)` (node ids in ascending string order); per node, the last
    /// transition at or before the window's `from` (or more history) and all after it.
    /// Transitions of nodes not in `nodes` are ignored.
    pub transitions: &'a [Transition],
    pub silences: &'a [Silence],
    /// Intervals when nobody was watching; see [`ReportBuilder::new`].
    pub blind: &'a [Window],
    /// Tests in the window, per node, any order (nodes not in `nodes` are ignored).
    pub tests: &'a [NodeTests],
}

/// Answers `query` over stored data in one pass; see [`ReportBuilder`] for the rules.
pub fn report(query: &Query, inputs: Inputs<'_>) -> Result<UptimeReport, UptimeError> {
    let mut builder = ReportBuilder::new(query, inputs.silences, inputs.blind);
    let index: HashMap<&str, usize> = inputs
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.path.node.as_str(), i))
        .collect();
    let mut seen = vec![false; inputs.nodes.len()];
    let mut rest = inputs.transitions;
    let mut previous: Option<&NodeId> = None;
    while let Some(first) = rest.first() {
        let run = rest
            .iter()
            .position(|t| t.node != first.node)
            .unwrap_or(rest.len());
        let (node_transitions, tail) = rest.split_at(run);
        rest = tail;
        if let Some(previous) = previous
            && *previous >= first.node
        {
            return Err(UptimeError::UnsortedNodes {
                previous: previous.clone(),
                node: first.node.clone(),
            });
        }
        previous = Some(&first.node);
        if let Some(&i) = index.get(first.node.as_str()) {
            seen[i] = true;
            let info = &inputs.nodes[i];
            builder.add_node(&info.path, &info.kind, node_transitions)?;
        }
    }
    for (info, seen) in inputs.nodes.iter().zip(seen) {
        if !seen {
            builder.add_node(&info.path, &info.kind, std::iter::empty::<&Transition>())?;
        }
    }
    for t in inputs.tests {
        if let Some(&i) = index.get(t.node.as_str()) {
            let info = &inputs.nodes[i];
            builder.add_node_tests(&info.path, &info.kind, t.tally);
        }
    }
    Ok(builder.finish())
}

fn silence_matches(s: &Silence, path: &NodePath, kind: &Name) -> bool {
    s.region.as_ref().is_none_or(|r| *r == path.region)
        && s.site.as_ref().is_none_or(|x| *x == path.site)
        && s.node.as_ref().is_none_or(|n| *n == path.node)
        && s.kind.as_ref().is_none_or(|k| k == kind)
}

fn merged(mut intervals: Vec<(UnixMillis, UnixMillis)>) -> Vec<(UnixMillis, UnixMillis)> {
    merge_in_place(&mut intervals);
    intervals
}

/// Sorts non-empty intervals and joins those that overlap or touch.
fn merge_in_place(intervals: &mut Vec<(UnixMillis, UnixMillis)>) {
    intervals.retain(|(a, b)| a < b);
    if intervals.len() < 2 {
        return;
    }
    intervals.sort_unstable();
    let mut out = 0;
    for i in 1..intervals.len() {
        let (start, end) = intervals[i];
        if start <= intervals[out].1 {
            intervals[out].1 = intervals[out].1.max(end);
        } else {
            out += 1;
            intervals[out] = (start, end);
        }
    }
    intervals.truncate(out + 1);
}

fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn round_ms(ms: f64) -> f64 {
    ms.round()
}

fn percent(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 * 100.0 / whole as f64)
}
