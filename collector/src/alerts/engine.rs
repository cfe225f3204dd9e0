//! The alert engine: rules evaluated on liveness changes and messages, the alert lifecycle,
//! acknowledgements, silences and inhibition. Pure: time comes in as `now`.
//!
//! Topology (which node is in which site and region, its kind and name) and the per-site
//! offline counts come from the [`Tracker`], which keeps them up to date in O(1) per
//! transition; the engine keeps only sparse state (active alerts, and per-node rule state
//! for the few nodes that have any).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use alarmnet_protocol::payload::Text;
use alarmnet_protocol::{
    AlertStatus, Fault, FaultKey, FaultStatus, Heartbeat, MetricName, Name, NodeId, Severity, Tags,
};

use super::config::AlertsConfig;
use super::{AlertChange, AlertEvent, fingerprint};
use crate::liveness::{Change, NodeIdx, NodeView, SeqInfo, Tracker};
use crate::model::{
    Ack, Alert, AlertId, Liveness, RuleKind, Silence, SilenceId, Subject, UnixMillis,
};

/// The fingerprint key of a node's summary `fault` alert while it is over
/// `alerts.fault.max_active_per_node` (not a key an agent can send: `alarmnet` is no check
/// of theirs, and the alert is recognized by its `capped_at` argument).
const FAULT_CAP_KEY: &str = "alarmnet/fault_cap";

mod readiness_low;

/// Why the collector stopped judging nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlindCause {
    /// The broker connection is down: nothing arrives.
    Broker,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no firing alert with id {0:?}")]
    NotFound(AlertId),
}

#[derive(Debug)]
struct Active {
    alert: Alert,
    node: Option<NodeIdx>,
    /// Site and region indexes in the tracker, where the alert belongs to one.
    site: Option<u32>,
    region: Option<u32>,
    /// Not notified before this time (the `node_offline` group wait).
    hold_until: UnixMillis,
    /// False for a fault known only from replayed data, until a live heartbeat confirms it.
    confirmed: bool,
    /// The offline members of a site or region outage.
    members: Option<Box<Members>>,
}

/// The offline members of a firing site or region outage, for its re-notifications.
#[derive(Debug, Default)]
struct Members {
    /// Offline now.
    current: BTreeSet<NodeId>,
    /// Offline as of the last notification.
    notified: BTreeSet<NodeId>,
    /// When the last notification went out.
    last_sent: UnixMillis,
    /// A re-notification is scheduled.
    due: bool,
}

/// The offline nodes of a site or region alert's subject, read from the tracker's members
/// of that site or region: a region-wide power cut fires hundreds of site outages at once,
/// and each must not cost a scan of the whole network.
fn offline_members(t: &Tracker, alert: &Alert) -> BTreeSet<NodeId> {
    let Some(region) = alert.subject.region() else {
        return BTreeSet::new();
    };
    t.members(region, alert.subject.site())
        .filter(|v| v.own_state() == Liveness::Offline)
        .map(|v| v.id().clone())
        .collect()
}

/// `a, b, c` (at most 10 names, then `and N more`).
fn list(ids: &[&NodeId]) -> String {
    const MAX: usize = 10;
    let mut out: Vec<String> = ids.iter().take(MAX).map(|n| n.to_string()).collect();
    if ids.len() > MAX {
        out.push(format!("and {} more", ids.len() - MAX));
    }
    out.join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Hold(u64),
    /// A group outage's members changed: notify the change (rate-limited).
    Regroup(u64),
    Flap(u32),
    Gap(u32),
}

#[derive(Debug, Default)]
struct Flap {
    times: VecDeque<UnixMillis>,
    last: UnixMillis,
}

#[derive(Debug, Default)]
struct Gap {
    window_start: UnixMillis,
    missing: u64,
    last_gap: UnixMillis,
}

#[derive(Debug)]
struct SilenceEntry {
    silence: Silence,
    /// Applied: its maintenance is in force and it suppresses notifications.
    active: bool,
}

/// The alert engine. Normally used through [`super::Monitor`].
#[derive(Debug)]
pub struct Engine {
    cfg: AlertsConfig,
    active: HashMap<u64, Active>,
    timers: BinaryHeap<Reverse<(UnixMillis, Timer)>>,
    node_faults: HashMap<u32, Vec<u64>>,
    /// Nodes over `max_active_per_node` (their summary alert fires): fault raises not
    /// alerted since.
    capped: HashMap<u32, u64>,
    /// Fault raises not alerted because their node was at its cap, since the start.
    faults_capped: u64,
    flaps: HashMap<u32, Flap>,
    gaps: HashMap<u32, Gap>,
    skewed: HashSet<u32>,
    /// (node, threshold rule) → since when the condition holds.
    pending: HashMap<(u32, u16), UnixMillis>,
    silences: Vec<SilenceEntry>,
    /// The alerts an ending outage may release, without scanning every alert: node
    /// `node_offline`/`flapping` alerts by site; those and `site_outage` alerts by region.
    by_site: HashMap<u32, HashSet<u64>>,
    by_region: HashMap<u32, HashSet<u64>>,
    /// The region shard this engine serves, if any: part of the ids of the collector's
    /// own alerts, so that the shards' never mix.
    scope: Option<String>,
}

/// Labels of a node alert.
struct NodeLabels<'a> {
    view: NodeView<'a>,
}

impl NodeLabels<'_> {
    fn fp(&self, rule: &RuleKind, extra: Option<&str>) -> u64 {
        fingerprint(
            rule.as_str(),
            Some(self.view.region().as_str()),
            Some(self.view.site().as_str()),
            Some(self.view.id().as_str()),
            extra,
        )
    }

    fn subject(&self) -> Subject {
        Subject::Node {
            region: self.view.region().clone(),
            site: self.view.site().clone(),
            node: self.view.id().clone(),
        }
    }

    /// `name (id)`, or the id alone when the node has no name.
    fn label(&self) -> String {
        match self.view.name() {
            Some(name) => format!("{} {name} ({})", self.view.kind(), self.view.id()),
            None => format!("{} {}", self.view.kind(), self.view.id()),
        }
    }

    fn place(&self) -> String {
        format!("{}/{}", self.view.region(), self.view.site())
    }

    /// A confirmed alert about this node, notified at once, summarised as
    /// `"{label} at {place}{detail}"`.
    fn alert(
        &self,
        idx: NodeIdx,
        fp: u64,
        rule: RuleKind,
        severity: Severity,
        detail: std::fmt::Arguments<'_>,
        args: Tags,
    ) -> NewAlert {
        NewAlert {
            fp,
            rule,
            severity,
            subject: self.subject(),
            kind: Some(self.view.kind().clone()),
            node: Some(idx),
            site: None,
            region: None,
            summary: format!("{} at {}{detail}", self.label(), self.place()),
            args,
            hold_until: UnixMillis::EPOCH,
            confirmed: true,
        }
    }
}

/// What a new alert looks like; built only when the alert is not already firing.
struct NewAlert {
    fp: u64,
    rule: RuleKind,
    severity: Severity,
    subject: Subject,
    kind: Option<Name>,
    node: Option<NodeIdx>,
    /// Site and region of a site or region alert (node alerts take their node's).
    site: Option<u32>,
    region: Option<u32>,
    summary: String,
    /// The summary's facts by name ([`args`]).
    args: Tags,
    hold_until: UnixMillis,
    confirmed: bool,
}

fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Engine {
    /// An engine with these rules (check [`AlertsConfig::problems`] first).
    pub fn new(cfg: AlertsConfig) -> Self {
        Self {
            cfg,
            active: HashMap::new(),
            timers: BinaryHeap::new(),
            node_faults: HashMap::new(),
            capped: HashMap::new(),
            faults_capped: 0,
            flaps: HashMap::new(),
            gaps: HashMap::new(),
            skewed: HashSet::new(),
            pending: HashMap::new(),
            silences: Vec::new(),
            by_site: HashMap::new(),
            by_region: HashMap::new(),
            scope: None,
        }
    }

    /// The same engine for the collectors of one region shard (`name`): the alerts about
    /// the collector itself (`collector_blind`, `store_failed`) are the shard's own.
    pub fn with_scope(mut self, name: Option<String>) -> Self {
        self.scope = name;
        self
    }

    /// The id of this engine's alert of network-level `rule` (the collector's own alerts).
    pub fn network_alert_id(&self, rule: &RuleKind) -> AlertId {
        AlertId::new(self.network_fp(rule))
    }

    fn network_fp(&self, rule: &RuleKind) -> u64 {
        fingerprint(rule.as_str(), None, None, None, self.scope.as_deref())
    }

    fn index(&mut self, fp: u64, a: &Active) {
        // The alerts an ending outage may release (see `resolve`).
        let (by_site, by_region) = match a.alert.rule {
            RuleKind::NodeOffline | RuleKind::Flapping => (true, true),
            RuleKind::SiteOutage => (false, true),
            RuleKind::RegionOutage
            | RuleKind::Fault
            | RuleKind::TelemetryGap
            | RuleKind::ClockSkew
            | RuleKind::CollectorBlind
            | RuleKind::StoreFailed
            | RuleKind::CollectorFailover
            | RuleKind::ReadinessLow
            | RuleKind::Threshold(_) => (false, false),
        };
        if let (true, Some(site)) = (by_site, a.site) {
            self.by_site.entry(site).or_default().insert(fp);
        }
        if let (true, Some(region)) = (by_region, a.region) {
            self.by_region.entry(region).or_default().insert(fp);
        }
    }

    fn unindex(&mut self, fp: u64, a: &Active) {
        for (map, key) in [(&mut self.by_site, a.site), (&mut self.by_region, a.region)] {
            if let Some(key) = key {
                if let Some(set) = map.get_mut(&key) {
                    set.remove(&fp);
                    if set.is_empty() {
                        map.remove(&key);
                    }
                }
            }
        }
    }

    pub fn config(&self) -> &AlertsConfig {
        &self.cfg
    }

    /// Every firing alert (in no particular order).
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.active.values().map(|a| &a.alert)
    }

    /// A firing alert by id.
    pub fn alert(&self, id: AlertId) -> Option<&Alert> {
        self.active.get(&id.get()).map(|a| &a.alert)
    }

    /// Every known silence that has not ended yet.
    pub fn silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.iter().map(|s| &s.silence)
    }

    /// The earliest time at which [`Engine::tick`] may have work (may be early).
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let silence = self
            .silences
            .iter()
            .map(|s| {
                if s.active {
                    s.silence.ends_at
                } else {
                    s.silence.starts_at
                }
            })
            .min();
        match (timer, silence) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- lifecycle -----

    fn is_active(&self, fp: u64) -> bool {
        self.active.contains_key(&fp)
    }

    fn fire(&mut self, t: &Tracker, new: NewAlert, now: UnixMillis, out: &mut Vec<AlertChange>) {
        if self.active.contains_key(&new.fp) {
            return;
        }
        let hold_until = new.hold_until.max(self.hold_from(&new.rule, now));
        let alert = Alert {
            id: AlertId::new(new.fp),
            rule: new.rule,
            severity: new.severity,
            status: AlertStatus::Firing,
            subject: new.subject,
            kind: new.kind,
            started_at: now,
            ended_at: None,
            summary: new.summary,
            args: new.args,
            ack: None,
            notified: false,
        };
        let (site, region) = match new.node {
            Some(idx) => {
                let (s, r) = t.site_of(idx);
                (Some(s), Some(r))
            }
            None => (new.site, new.region),
        };
        let mut active = Active {
            alert,
            node: new.node,
            site,
            region,
            hold_until,
            confirmed: new.confirmed,
            members: None,
        };
        let notify = active.confirmed && active.hold_until <= now && !self.suppressed(t, &active);
        active.alert.notified = notify;
        if active.alert.rule.is_outage() {
            let members = offline_members(t, &active.alert);
            active.members = Some(Box::new(Members {
                notified: if notify {
                    members.clone()
                } else {
                    Default::default()
                },
                current: members,
                last_sent: now,
                due: false,
            }));
        }
        if active.hold_until > now {
            self.timers
                .push(Reverse((active.hold_until, Timer::Hold(new.fp))));
        }
        out.push(AlertChange {
            alert: active.alert.clone(),
            event: AlertEvent::Fired,
            notify,
        });
        self.index(new.fp, &active);
        self.active.insert(new.fp, active);
    }

    fn resolve(&mut self, t: &Tracker, fp: u64, now: UnixMillis, out: &mut Vec<AlertChange>) {
        let Some(mut active) = self.active.remove(&fp) else {
            return;
        };
        self.unindex(fp, &active);
        active.alert.status = AlertStatus::Resolved;
        active.alert.ended_at = Some(now);
        let notify = active.alert.notified;
        out.push(AlertChange {
            alert: active.alert.clone(),
            event: AlertEvent::Resolved,
            notify,
        });
        // An inhibitor ended: what it held back may be notified now.
        let targets: Vec<u64> = match &active.alert.rule {
            RuleKind::RegionOutage => active
                .region
                .and_then(|r| self.by_region.get(&r))
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default(),
            RuleKind::SiteOutage => active
                .site
                .and_then(|s| self.by_site.get(&s))
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default(),
            RuleKind::Flapping => {
                let subject = &active.alert.subject;
                let fp = fingerprint(
                    RuleKind::NodeOffline.as_str(),
                    subject.region().map(|r| r.as_str()),
                    subject.site().map(|s| s.as_str()),
                    subject.node().map(|n| n.as_str()),
                    None,
                );
                vec![fp]
            }
            RuleKind::NodeOffline
            | RuleKind::Fault
            | RuleKind::TelemetryGap
            | RuleKind::ClockSkew
            | RuleKind::CollectorBlind
            | RuleKind::StoreFailed
            | RuleKind::CollectorFailover
            | RuleKind::ReadinessLow
            | RuleKind::Threshold(_) => Vec::new(),
        };
        // They get a fresh group wait: when an outage ends its members come back within
        // about one heartbeat interval, and those still down a moment later must not
        // become a storm of notifications.
        let hold_until = now + self.cfg.node_offline.group_wait;
        for fp in targets {
            if let Some(a) = self.active.get_mut(&fp) {
                if !a.alert.notified && a.hold_until < hold_until {
                    a.hold_until = hold_until;
                    if hold_until > now {
                        self.timers.push(Reverse((hold_until, Timer::Hold(fp))));
                    }
                }
            }
            self.maybe_notify(t, fp, now, out);
        }
    }

    /// The end of the group wait of a new alert of `rule` firing at `now` (the epoch: none).
    fn hold_from(&self, rule: &RuleKind, now: UnixMillis) -> UnixMillis {
        match self.cfg.group_wait(rule) {
            wait if wait.is_zero() => UnixMillis::EPOCH,
            wait => now + wait,
        }
    }

    /// Notifies a firing alert that was held back, if nothing holds it back any more.
    fn maybe_notify(&mut self, t: &Tracker, fp: u64, now: UnixMillis, out: &mut Vec<AlertChange>) {
        let Some(a) = self.active.get(&fp) else {
            return;
        };
        if a.alert.notified || !a.confirmed || a.hold_until > now || self.suppressed(t, a) {
            return;
        }
        let Some(a) = self.active.get_mut(&fp) else {
            return;
        };
        a.alert.notified = true;
        if let Some(m) = &mut a.members {
            // Notified now: the summary counts the members as they are now.
            let (summary, total) = outage_summary(t, &a.alert, m.current.len());
            a.alert.summary = summary;
            a.alert.args = outage_args(m.current.len(), total, None);
            m.notified = m.current.clone();
            m.last_sent = now;
        }
        out.push(AlertChange {
            alert: a.alert.clone(),
            event: AlertEvent::Updated,
            notify: true,
        });
    }

    fn suppressed(&self, _t: &Tracker, a: &Active) -> bool {
        self.silenced(&a.alert) || self.inhibited(&a.alert)
    }

    fn silenced(&self, alert: &Alert) -> bool {
        self.silences
            .iter()
            .any(|s| s.active && silence_matches_alert(&s.silence, alert))
    }

    fn inhibited(&self, alert: &Alert) -> bool {
        let region = alert.subject.region().map(|r| r.as_str());
        let site = alert.subject.site().map(|s| s.as_str());
        let node = alert.subject.node().map(|n| n.as_str());
        let region_out = || {
            self.is_active(fingerprint(
                RuleKind::RegionOutage.as_str(),
                region,
                None,
                None,
                None,
            ))
        };
        let site_out = || {
            self.is_active(fingerprint(
                RuleKind::SiteOutage.as_str(),
                region,
                site,
                None,
                None,
            ))
        };
        match alert.rule {
            RuleKind::NodeOffline => {
                region_out()
                    || site_out()
                    || self.is_active(fingerprint(
                        RuleKind::Flapping.as_str(),
                        region,
                        site,
                        node,
                        None,
                    ))
            }
            RuleKind::Flapping => region_out() || site_out(),
            RuleKind::SiteOutage => region_out(),
            RuleKind::RegionOutage
            | RuleKind::Fault
            | RuleKind::TelemetryGap
            | RuleKind::ClockSkew
            | RuleKind::CollectorBlind
            | RuleKind::StoreFailed
            | RuleKind::CollectorFailover
            | RuleKind::ReadinessLow
            | RuleKind::Threshold(_) => false,
        }
    }

    /// Acknowledges a firing alert.
    pub fn ack(
        &mut self,
        id: AlertId,
        by: &str,
        comment: Option<&str>,
        now: UnixMillis,
    ) -> Result<AlertChange, AckError> {
        let a = self
            .active
            .get_mut(&id.get())
            .ok_or(AckError::NotFound(id))?;
        a.alert.ack = Some(Ack {
            by: by.to_owned(),
            at: now,
            comment: comment.map(str::to_owned),
        });
        Ok(AlertChange {
            alert: a.alert.clone(),
            event: AlertEvent::Acked,
            notify: false,
        })
    }

    // ----- liveness -----

    /// Liveness changes (own states) from the tracker.
    pub(crate) fn on_changes(
        &mut self,
        t: &Tracker,
        changes: &[Change],
        out: &mut Vec<AlertChange>,
    ) {
        for c in changes {
            if c.own_from == c.own_to {
                continue; // maintenance only
            }
            let entering = c.own_to == Liveness::Offline;
            let leaving = c.own_from == Liveness::Offline;
            if !entering && !leaving {
                continue;
            }
            let labels = NodeLabels {
                view: t.view(c.idx),
            };
            if leaving {
                let fp = labels.fp(&RuleKind::NodeOffline, None);
                self.resolve(t, fp, c.at, out);
            }
            // Flapping counts up/down changes between a watched up state and offline.
            if c.own_from != Liveness::Unknown && c.own_to != Liveness::Unknown {
                self.flap(t, c.idx, c.at, out);
            }
            self.outages(t, c.idx, entering, c.at, out);
            if entering && self.cfg.node_offline.enabled {
                let fp = labels.fp(&RuleKind::NodeOffline, None);
                if !self.is_active(fp) {
                    let new = NewAlert {
                        hold_until: c.at + self.cfg.node_offline.group_wait,
                        ..labels.alert(
                            c.idx,
                            fp,
                            RuleKind::NodeOffline,
                            self.cfg.offline_severity(labels.view.kind().as_str()),
                            format_args!(" is offline ({})", c.cause.as_str()),
                            args([("cause", c.cause.as_str().to_owned())]),
                        )
                    };
                    self.fire(t, new, c.at, out);
                }
            }
        }
    }

    fn flap(&mut self, t: &Tracker, idx: NodeIdx, at: UnixMillis, out: &mut Vec<AlertChange>) {
        let rule = &self.cfg.flapping;
        if !rule.enabled {
            return;
        }
        let window = rule.window;
        let need = rule.transitions as usize;
        let quiet = rule.quiet;
        let f = self.flaps.entry(idx.0).or_default();
        f.times.push_back(at);
        f.last = at;
        while f.times.len() > need || f.times.front().is_some_and(|&t0| t0 + window < at) {
            f.times.pop_front();
        }
        let count = f.times.len();
        self.timers.push(Reverse((at + quiet, Timer::Flap(idx.0))));
        if count >= need {
            let labels = NodeLabels { view: t.view(idx) };
            let fp = labels.fp(&RuleKind::Flapping, None);
            if !self.is_active(fp) {
                let new = labels.alert(
                    idx,
                    fp,
                    RuleKind::Flapping,
                    self.cfg.flapping.severity,
                    format_args!(
                        " is flapping: {count} up/down transitions within {}",
                        fmt_duration(self.cfg.flapping.window)
                    ),
                    args([
                        ("count", count.to_string()),
                        ("window_s", self.cfg.flapping.window.as_secs().to_string()),
                    ]),
                );
                self.fire(t, new, at, out);
            }
        }
    }

    /// Re-evaluates the node's site and region. Outer before inner when a node goes down
    /// (a new site alert is then already inhibited by a new region alert), inner before
    /// outer when it comes back (a site alert that ends with the region's is not notified
    /// in between).
    fn outages(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        entering: bool,
        at: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let (site, region) = t.site_of(idx);
        if entering {
            self.eval_region(t, region, at, out);
            self.eval_site(t, site, at, out);
        } else {
            self.eval_site(t, site, at, out);
            self.eval_region(t, region, at, out);
        }
        let view = t.view(idx);
        let (r, s, n) = (view.region().as_str(), view.site().as_str(), view.id());
        let site_fp = fingerprint(RuleKind::SiteOutage.as_str(), Some(r), Some(s), None, None);
        let region_fp = fingerprint(RuleKind::RegionOutage.as_str(), Some(r), None, None, None);
        let site_every = self.cfg.site_outage.group_interval;
        let region_every = self.cfg.region_outage.group_interval;
        let site_wait = self.cfg.site_outage.group_wait;
        let region_wait = self.cfg.region_outage.group_wait;
        self.member_changed(site_fp, n, entering, at, site_wait, site_every);
        self.member_changed(region_fp, n, entering, at, region_wait, region_every);
    }

    /// A node of a firing outage's subject went offline (`down`) or came back: its members
    /// change, and the change is notified after the rule's group wait (so a recovery that
    /// completes within it is only the resolution) and at most once per `group_interval`.
    fn member_changed(
        &mut self,
        fp: u64,
        node: &NodeId,
        down: bool,
        at: UnixMillis,
        wait: Duration,
        interval: Duration,
    ) {
        let Some(a) = self.active.get_mut(&fp) else {
            return;
        };
        let Some(m) = &mut a.members else {
            return;
        };
        if down {
            m.current.insert(node.clone());
        } else {
            m.current.remove(node);
        }
        if a.alert.notified && !m.due && m.current != m.notified {
            m.due = true;
            let when = (at + wait).max(m.last_sent + interval);
            self.timers.push(Reverse((when, Timer::Regroup(fp))));
        }
    }

    /// Re-notifies a firing outage whose members changed since its last notification.
    fn regroup(&mut self, t: &Tracker, fp: u64, now: UnixMillis, out: &mut Vec<AlertChange>) {
        let suppressed = match self.active.get(&fp) {
            Some(a) => self.suppressed(t, a),
            None => return,
        };
        let Some(a) = self.active.get_mut(&fp) else {
            return;
        };
        let Some(m) = &mut a.members else {
            return;
        };
        m.due = false;
        if !a.alert.notified || suppressed || m.current == m.notified {
            return;
        }
        let down: Vec<&NodeId> = m.current.difference(&m.notified).collect();
        let back: Vec<&NodeId> = m.notified.difference(&m.current).collect();
        let mut change = Vec::new();
        if !down.is_empty() {
            change.push(format!("offline since the last notice: {}", list(&down)));
        }
        if !back.is_empty() {
            change.push(format!("back: {}", list(&back)));
        }
        let (base, total) = outage_summary(t, &a.alert, m.current.len());
        a.alert.summary = format!("{base} ({})", change.join("; "));
        let ids = |v: &[&NodeId]| v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(",");
        a.alert.args = outage_args(m.current.len(), total, Some((&ids(&down), &ids(&back))));
        m.notified = m.current.clone();
        m.last_sent = now;
        out.push(AlertChange {
            alert: a.alert.clone(),
            event: AlertEvent::Updated,
            notify: true,
        });
    }

    fn eval_site(&mut self, t: &Tracker, site: u32, at: UnixMillis, out: &mut Vec<AlertChange>) {
        let rule = &self.cfg.site_outage;
        let s = t.site_entry(site);
        let region = &t.region_entry(s.region).id;
        let fp = fingerprint(
            RuleKind::SiteOutage.as_str(),
            Some(region.as_str()),
            Some(s.id.as_str()),
            None,
            None,
        );
        let cond = rule.enabled && outage(s.offline, s.total, rule.min_nodes, rule.min_fraction);
        let severity = rule.severity;
        self.toggle(t, fp, cond, at, out, || NewAlert {
            fp,
            rule: RuleKind::SiteOutage,
            severity,
            subject: Subject::Site {
                region: region.clone(),
                site: s.id.clone(),
            },
            kind: None,
            node: None,
            site: Some(site),
            region: Some(s.region),
            summary: format!(
                "site outage at {region}/{}: {} of {} nodes offline",
                s.id, s.offline, s.total
            ),
            args: outage_args(s.offline, s.total, None),
            hold_until: UnixMillis::EPOCH,
            confirmed: true,
        });
    }

    fn eval_region(
        &mut self,
        t: &Tracker,
        region: u32,
        at: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let rule = &self.cfg.region_outage;
        let r = t.region_entry(region);
        let fp = fingerprint(
            RuleKind::RegionOutage.as_str(),
            Some(r.id.as_str()),
            None,
            None,
            None,
        );
        let cond = rule.enabled && outage(r.offline, r.total, rule.min_nodes, rule.min_fraction);
        let severity = rule.severity;
        self.toggle(t, fp, cond, at, out, || {
            region_alert(
                fp,
                RuleKind::RegionOutage,
                severity,
                (region, &r.id),
                format!(
                    "region outage in {}: {} of {} nodes offline",
                    r.id, r.offline, r.total
                ),
                outage_args(r.offline, r.total, None),
            )
        });
    }

    /// Fires the alert `new` builds when `cond` holds and `fp` is not active; resolves `fp` when
    /// `cond` no longer holds and it is.
    fn toggle(
        &mut self,
        t: &Tracker,
        fp: u64,
        cond: bool,
        at: UnixMillis,
        out: &mut Vec<AlertChange>,
        new: impl FnOnce() -> NewAlert,
    ) {
        match (cond, self.is_active(fp)) {
            (true, false) => self.fire(t, new(), at, out),
            (false, true) => self.resolve(t, fp, at, out),
            _ => {}
        }
    }

    // ----- messages -----

    /// Checks the agent clock of a live message.
    pub(crate) fn clock(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        agent_ts: u64,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let rule = &self.cfg.clock_skew;
        if !rule.enabled || t.is_blind() {
            return;
        }
        // Right after start or reconnect the broker may deliver a backlog of queued
        // messages whose age is delivery delay, not skew: judge clocks after the grace.
        if now < t.grace_end(idx) {
            return;
        }
        let skew = i128::from(agent_ts) - i128::from(now.as_millis());
        let bad = skew.unsigned_abs() > rule.max_skew.as_millis();
        let firing = self.skewed.contains(&idx.0);
        let labels = NodeLabels { view: t.view(idx) };
        if bad && !firing {
            self.skewed.insert(idx.0);
            let new = labels.alert(
                idx,
                labels.fp(&RuleKind::ClockSkew, None),
                RuleKind::ClockSkew,
                rule.severity,
                format_args!(": agent clock is off by {:+} s", skew / 1000),
                args([("skew_s", format!("{:+}", skew / 1000))]),
            );
            self.fire(t, new, now, out);
        } else if !bad && firing {
            self.skewed.remove(&idx.0);
            let fp = labels.fp(&RuleKind::ClockSkew, None);
            self.resolve(t, fp, now, out);
        }
    }

    /// Counts missing sequence numbers (`telemetry_gap`).
    pub(crate) fn sequence(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        seq: SeqInfo,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let rule = &self.cfg.telemetry_gap;
        if !rule.enabled || seq.missing == 0 {
            return;
        }
        if seq.explained {
            // Lost while the collector could not watch (a broker outage, a blind period):
            // recorded in history as an alert that fired and resolved at once, never
            // notified, and not counted toward the rule's window.
            let labels = NodeLabels { view: t.view(idx) };
            let fp = labels.fp(&RuleKind::TelemetryGap, None);
            if !self.is_active(fp) {
                let new = NewAlert {
                    confirmed: false,
                    ..labels.alert(
                        idx,
                        fp,
                        RuleKind::TelemetryGap,
                        rule.severity,
                        format_args!(
                            ": {} telemetry messages missing while the collector could not \
                             watch (explained by the outage, not notified)",
                            seq.missing
                        ),
                        args([
                            ("missing", seq.missing.to_string()),
                            ("explained", "true".to_owned()),
                        ]),
                    )
                };
                self.fire(t, new, now, out);
                self.resolve(t, fp, now, out);
            }
            return;
        }
        let window = rule.window;
        let g = self.gaps.entry(idx.0).or_default();
        if g.missing == 0 || now >= g.window_start + window {
            g.window_start = now;
            g.missing = 0;
        }
        g.missing = g.missing.saturating_add(seq.missing);
        g.last_gap = now;
        let missing = g.missing;
        self.timers.push(Reverse((now + window, Timer::Gap(idx.0))));
        if missing >= rule.min_missing {
            let labels = NodeLabels { view: t.view(idx) };
            let fp = labels.fp(&RuleKind::TelemetryGap, None);
            if !self.is_active(fp) {
                let new = labels.alert(
                    idx,
                    fp,
                    RuleKind::TelemetryGap,
                    rule.severity,
                    format_args!(
                        ": {missing} telemetry messages missing within {}",
                        fmt_duration(rule.window)
                    ),
                    args([
                        ("missing", missing.to_string()),
                        ("window_s", rule.window.as_secs().to_string()),
                    ]),
                );
                self.fire(t, new, now, out);
            }
        }
    }

    /// A heartbeat (live or replayed): thresholds and fault reconciliation on live ones.
    pub(crate) fn heartbeat(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        hb: &Heartbeat,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        if hb.replay {
            return;
        }
        self.thresholds(t, idx, hb, now, out);
        if let Some(list) = &hb.faults {
            self.reconcile_faults(t, idx, list, now, out);
        }
    }

    fn thresholds(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        hb: &Heartbeat,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        if self.cfg.thresholds.is_empty() {
            return;
        }
        let view = t.view(idx);
        for r in 0..self.cfg.thresholds.len() {
            let rule = &self.cfg.thresholds[r];
            if rule.kind.as_ref().is_some_and(|k| k != view.kind()) {
                continue;
            }
            let Some(v) = hb.metrics.get(rule.metric.as_str()) else {
                continue;
            };
            let key = (idx.0, r as u16);
            if rule.op.holds(v, rule.value) {
                let since = *self.pending.entry(key).or_insert(now);
                if now - since >= rule.for_ {
                    let labels = NodeLabels { view };
                    let rule_kind = RuleKind::Threshold(rule.name.clone());
                    let fp = labels.fp(&rule_kind, None);
                    if !self.is_active(fp) {
                        let new = labels.alert(
                            idx,
                            fp,
                            rule_kind,
                            rule.severity,
                            format_args!(
                                ": {} = {v} {} {} for {}",
                                rule.metric,
                                rule.op.as_str(),
                                rule.value,
                                fmt_duration(rule.for_)
                            ),
                            args([
                                ("metric", rule.metric.to_string()),
                                ("value", v.to_string()),
                                ("op", rule.op.as_str().to_owned()),
                                ("threshold", rule.value.to_string()),
                                ("for_s", rule.for_.as_secs().to_string()),
                            ]),
                        );
                        self.fire(t, new, now, out);
                    }
                }
            } else if self.pending.remove(&key).is_some() {
                let fp = NodeLabels { view }.fp(&RuleKind::Threshold(rule.name.clone()), None);
                self.resolve(t, fp, now, out);
            }
        }
    }

    /// A live heartbeat's list of active faults against the node's fault alerts: listed and
    /// unknown fire (up to the node's cap), known and unlisted resolve. Linear in the list
    /// and the node's alerts (the list is bounded by the protocol's payload size).
    fn reconcile_faults(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        list: &[alarmnet_protocol::FaultKey],
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        if !self.cfg.fault.enabled {
            return;
        }
        if list.is_empty() && !self.node_faults.contains_key(&idx.0) {
            return;
        }
        let labels = NodeLabels { view: t.view(idx) };
        let mut listed: HashSet<u64> = HashSet::with_capacity(list.len());
        for key in list {
            let key_s = key.to_string();
            let fp = labels.fp(&RuleKind::Fault, Some(&key_s));
            if !listed.insert(fp) {
                continue;
            }
            let at_cap = self.at_fault_cap(idx);
            match self.active.get_mut(&fp) {
                Some(a) => {
                    if !a.confirmed {
                        a.confirmed = true;
                        self.maybe_notify(t, fp, now, out);
                    }
                }
                None if at_cap => {
                    // Counted when its fault message came; a listing is not a new raise.
                    self.cap_faults(t, idx, &key_s, false, now, out);
                }
                None => {
                    let new = labels.alert(
                        idx,
                        fp,
                        RuleKind::Fault,
                        self.cfg.fault.reconciled_severity,
                        format_args!(": fault {key_s} (reported active by heartbeat)"),
                        fault_args(key, None, None),
                    );
                    self.fire(t, new, now, out);
                    self.node_faults.entry(idx.0).or_default().push(fp);
                }
            }
        }
        let mut stale = Vec::new();
        if let Some(fps) = self.node_faults.get_mut(&idx.0) {
            fps.retain(|fp| {
                let keep = listed.contains(fp);
                if !keep {
                    stale.push(*fp);
                }
                keep
            });
            if fps.is_empty() {
                self.node_faults.remove(&idx.0);
            }
        }
        for fp in stale {
            self.resolve(t, fp, now, out);
        }
        self.uncap_if_room(t, idx, now, out);
    }

    fn forget_fault(&mut self, idx: NodeIdx, fp: u64) {
        if let Some(fps) = self.node_faults.get_mut(&idx.0) {
            fps.retain(|&f| f != fp);
            if fps.is_empty() {
                self.node_faults.remove(&idx.0);
            }
        }
    }

    /// Whether the node has `max_active_per_node` fault alerts.
    fn at_fault_cap(&self, idx: NodeIdx) -> bool {
        self.node_faults.get(&idx.0).map_or(0, Vec::len) >= self.cfg.fault.max_active_per_node
    }

    /// A new fault of a node at its cap: not alerted; counted (`count`, for raises) and the
    /// node's one summary alert fired if it is not yet.
    fn cap_faults(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        key: &str,
        count: bool,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        if count {
            self.faults_capped += 1;
        }
        let first = !self.capped.contains_key(&idx.0);
        let n = self.capped.entry(idx.0).or_insert(0);
        if count {
            *n += 1;
        }
        if !first {
            return;
        }
        let cap = self.cfg.fault.max_active_per_node;
        let labels = NodeLabels { view: t.view(idx) };
        let fp = labels.fp(&RuleKind::Fault, Some(FAULT_CAP_KEY));
        tracing::warn!(
            node = %labels.view.id(),
            cap,
            first = key,
            "node over its fault cap: further faults are counted, not alerted one by one \
             (alerts.fault.max_active_per_node)"
        );
        let new = labels.alert(
            idx,
            fp,
            RuleKind::Fault,
            self.cfg.fault.reconciled_severity,
            format_args!(
                ": more than {cap} faults active (first not alerted: {key}); further faults \
                 are counted, not alerted one by one"
            ),
            args([("capped_at", cap.to_string()), ("first", key.to_owned())]),
        );
        self.fire(t, new, now, out);
    }

    /// Resolves the node's summary alert once it is below its cap again.
    fn uncap_if_room(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        if !self.capped.contains_key(&idx.0) || self.at_fault_cap(idx) {
            return;
        }
        self.capped.remove(&idx.0);
        let fp = NodeLabels { view: t.view(idx) }.fp(&RuleKind::Fault, Some(FAULT_CAP_KEY));
        self.resolve(t, fp, now, out);
    }

    /// Fault raises not alerted because their node was at its cap, since the start.
    pub fn faults_capped(&self) -> u64 {
        self.faults_capped
    }

    /// A fault message. Replayed raises are recorded unconfirmed (not notified until a live
    /// heartbeat lists the fault); clears resolve whether live or replayed.
    pub(crate) fn fault(
        &mut self,
        t: &Tracker,
        idx: NodeIdx,
        fault: &Fault,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        if !self.cfg.fault.enabled {
            return;
        }
        let labels = NodeLabels { view: t.view(idx) };
        let key = fault.key().to_string();
        let fp = labels.fp(&RuleKind::Fault, Some(&key));
        match fault.status {
            FaultStatus::Raised => {
                if let Some(a) = self.active.get_mut(&fp) {
                    let mut changed = false;
                    if a.alert.severity != fault.severity {
                        a.alert.severity = fault.severity;
                        changed = true;
                    }
                    if changed {
                        out.push(AlertChange {
                            alert: a.alert.clone(),
                            event: AlertEvent::Updated,
                            notify: false,
                        });
                    }
                    if !fault.replay && !a.confirmed {
                        a.confirmed = true;
                        self.maybe_notify(t, fp, now, out);
                    }
                    return;
                }
                if self.at_fault_cap(idx) {
                    self.cap_faults(t, idx, &key, true, now, out);
                    return;
                }
                let message = fault
                    .message
                    .as_ref()
                    .map(|m| format!(": {}", one_line(m.as_str())))
                    .unwrap_or_default();
                let new = NewAlert {
                    confirmed: !fault.replay,
                    ..labels.alert(
                        idx,
                        fp,
                        RuleKind::Fault,
                        fault.severity,
                        format_args!(": fault {key} ({}){message}", fault.severity),
                        fault_args(
                            &fault.key(),
                            Some(fault.severity),
                            fault.message.as_ref().map(|m| m.as_str()),
                        ),
                    )
                };
                self.fire(t, new, now, out);
                self.node_faults.entry(idx.0).or_default().push(fp);
            }
            FaultStatus::Cleared => {
                self.forget_fault(idx, fp);
                self.resolve(t, fp, now, out);
                self.uncap_if_room(t, idx, now, out);
            }
        }
    }

    // ----- the collector's own connection -----

    pub(crate) fn blind(
        &mut self,
        t: &Tracker,
        cause: BlindCause,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let rule = &self.cfg.collector_blind;
        if !rule.enabled {
            return;
        }
        let new = NewAlert {
            fp: self.network_fp(&RuleKind::CollectorBlind),
            rule: RuleKind::CollectorBlind,
            severity: rule.severity,
            subject: Subject::Network,
            kind: None,
            node: None,
            site: None,
            region: None,
            summary: match cause {
                BlindCause::Broker => {
                    "collector lost its broker connection: no node is being judged"
                }
            }
            .to_owned(),
            args: args([(
                "cause",
                match cause {
                    BlindCause::Broker => "broker",
                }
                .to_owned(),
            )]),
            hold_until: UnixMillis::EPOCH,
            confirmed: true,
        };
        self.fire(t, new, now, out);
    }

    pub(crate) fn connected(&mut self, t: &Tracker, now: UnixMillis, out: &mut Vec<AlertChange>) {
        let fp = self.network_fp(&RuleKind::CollectorBlind);
        self.resolve(t, fp, now, out);
    }

    // ----- the collector's own store -----

    /// `store_failed` fires: the store cannot commit (`error` is the first failure's
    /// cause). The collector goes on judging; see `pipeline.rs` for what is announced.
    pub(crate) fn store_failed(
        &mut self,
        t: &Tracker,
        error: &str,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let rule = &self.cfg.store_failed;
        if !rule.enabled {
            return;
        }
        let new = NewAlert {
            fp: self.network_fp(&RuleKind::StoreFailed),
            rule: RuleKind::StoreFailed,
            severity: rule.severity,
            subject: Subject::Network,
            kind: None,
            node: None,
            site: None,
            region: None,
            summary: format!(
                "collector cannot write its store ({}): nodes are still judged and notified, history is held in memory",
                one_line(error)
            ),
            args: args([("error", one_line(error))]),
            hold_until: UnixMillis::EPOCH,
            confirmed: true,
        };
        self.fire(t, new, now, out);
    }

    /// `collector_failover`: this collector took over from `from` (lease `epoch`). An event,
    /// not a condition: one notified firing, and its resolution at once, not notified.
    /// It never enters the active alerts.
    pub(crate) fn failover(
        &self,
        from: &str,
        to: &str,
        epoch: i64,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let rule = RuleKind::CollectorFailover;
        let epoch = epoch.to_string();
        let fired = Alert {
            id: AlertId::new(fingerprint(
                rule.as_str(),
                None,
                None,
                None,
                Some(&format!("{}{epoch}", self.scope.as_deref().unwrap_or(""))),
            )),
            severity: Severity::Warning,
            status: AlertStatus::Firing,
            subject: Subject::Network,
            kind: None,
            started_at: now,
            ended_at: None,
            summary: format!(
                "collector {} took over from {} (the active collector stopped or stalled)",
                one_line(to),
                one_line(from)
            ),
            args: args([
                ("from", one_line(from)),
                ("to", one_line(to)),
                ("epoch", epoch.clone()),
            ]),
            ack: None,
            notified: true,
            rule,
        };
        let mut resolved = fired.clone();
        resolved.status = AlertStatus::Resolved;
        resolved.ended_at = Some(now);
        out.push(AlertChange {
            alert: fired,
            event: AlertEvent::Fired,
            notify: true,
        });
        out.push(AlertChange {
            alert: resolved,
            event: AlertEvent::Resolved,
            notify: false,
        });
    }

    /// `store_failed` resolves: a commit succeeded again.
    pub(crate) fn store_recovered(
        &mut self,
        t: &Tracker,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let fp = self.network_fp(&RuleKind::StoreFailed);
        self.resolve(t, fp, now, out);
    }

    // ----- time -----

    /// Timers and silence edges due at `now`. Returns maintenance requests in `maint`.
    pub(crate) fn tick(
        &mut self,
        t: &Tracker,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
        maint: &mut Vec<(NodeIdx, bool)>,
    ) {
        self.sync_silences(t, now, out, maint);
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Hold(fp) => self.maybe_notify(t, fp, now, out),
                Timer::Regroup(fp) => self.regroup(t, fp, now, out),
                Timer::Flap(node) => {
                    let quiet = self.cfg.flapping.quiet;
                    let window = self.cfg.flapping.window;
                    let Some(f) = self.flaps.get(&node) else {
                        continue;
                    };
                    if now < f.last + quiet {
                        continue; // a later timer covers the newer transition
                    }
                    let forget_at = f.last + window;
                    if now >= forget_at {
                        self.flaps.remove(&node);
                    } else {
                        self.timers.push(Reverse((forget_at, Timer::Flap(node))));
                    }
                    let fp = NodeLabels {
                        view: t.view(NodeIdx(node)),
                    }
                    .fp(&RuleKind::Flapping, None);
                    self.resolve(t, fp, now, out);
                }
                Timer::Gap(node) => {
                    let window = self.cfg.telemetry_gap.window;
                    let Some(g) = self.gaps.get(&node) else {
                        continue;
                    };
                    if now < g.last_gap + window {
                        continue;
                    }
                    self.gaps.remove(&node);
                    let fp = NodeLabels {
                        view: t.view(NodeIdx(node)),
                    }
                    .fp(&RuleKind::TelemetryGap, None);
                    self.resolve(t, fp, now, out);
                }
            }
        }
    }

    // ----- silences -----

    /// Adds (or replaces, by id) a silence and applies it if its window is open.
    pub(crate) fn add_silence(
        &mut self,
        t: &Tracker,
        silence: Silence,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
        maint: &mut Vec<(NodeIdx, bool)>,
    ) {
        if let Some(pos) = self
            .silences
            .iter()
            .position(|s| s.silence.id == silence.id)
        {
            // Replacing: end the old one first, then apply the new one.
            self.silences[pos].silence.ends_at = now;
            self.sync_silences(t, now, out, maint);
        }
        self.silences.push(SilenceEntry {
            silence,
            active: false,
        });
        self.sync_silences(t, now, out, maint);
    }

    /// Ends a silence now. Returns false if no such silence is known.
    pub(crate) fn expire_silence(
        &mut self,
        t: &Tracker,
        id: SilenceId,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
        maint: &mut Vec<(NodeIdx, bool)>,
    ) -> bool {
        let Some(s) = self.silences.iter_mut().find(|s| s.silence.id == id) else {
            return false;
        };
        s.silence.ends_at = s.silence.ends_at.min(now);
        self.sync_silences(t, now, out, maint);
        true
    }

    /// Whether some applied silence covers this node (for new or re-born nodes).
    pub(crate) fn covers(&self, view: NodeView<'_>) -> bool {
        self.silences
            .iter()
            .any(|s| s.active && silence_matches_node(&s.silence, view))
    }

    /// Opens and closes silence windows at `now`.
    fn sync_silences(
        &mut self,
        t: &Tracker,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
        maint: &mut Vec<(NodeIdx, bool)>,
    ) {
        let mut i = 0;
        while i < self.silences.len() {
            let s = &self.silences[i];
            let open = s.silence.starts_at <= now && now < s.silence.ends_at;
            if open && !s.active {
                self.silences[i].active = true;
                let silence = &self.silences[i].silence;
                for view in t.nodes() {
                    if !view.in_maintenance() && silence_matches_node(silence, view) {
                        if let Some(idx) = t.idx(view.id()) {
                            maint.push((idx, true));
                        }
                    }
                }
            }
            let s = &self.silences[i];
            if now >= s.silence.ends_at {
                let ended = self.silences.remove(i);
                if ended.active {
                    for view in t.nodes() {
                        if silence_matches_node(&ended.silence, view) && !self.covers(view) {
                            if let Some(idx) = t.idx(view.id()) {
                                maint.push((idx, false));
                            }
                        }
                    }
                    let held: Vec<u64> = self
                        .active
                        .iter()
                        .filter(|(_, a)| {
                            !a.alert.notified && silence_matches_alert(&ended.silence, &a.alert)
                        })
                        .map(|(fp, _)| *fp)
                        .collect();
                    for fp in held {
                        self.maybe_notify(t, fp, now, out);
                    }
                }
                continue;
            }
            i += 1;
        }
    }

    // ----- restore -----

    /// Restores a firing alert from the store (before [`Engine::finish_restore`]).
    pub(crate) fn restore_alert(&mut self, t: &Tracker, alert: Alert) {
        if alert.status != AlertStatus::Firing {
            return;
        }
        let fp = alert.id.get();
        let node = alert.subject.node().and_then(|n| t.idx(n));
        let region = alert.subject.region().and_then(|r| t.region_by_id(r));
        let site = match (alert.subject.region(), alert.subject.site()) {
            (Some(r), Some(s)) => t.site_by_id(r, s),
            _ => None,
        };
        let (site, region) = match node {
            Some(idx) => {
                let (s, r) = t.site_of(idx);
                (Some(s), Some(r))
            }
            None => (site, region),
        };
        let hold_until = self.hold_from(&alert.rule, alert.started_at);
        if let Some(idx) = node {
            match &alert.rule {
                RuleKind::Fault if alert.args.get("capped_at").is_some() => {
                    self.capped.insert(idx.0, 0);
                }
                RuleKind::Fault => self.node_faults.entry(idx.0).or_default().push(fp),
                RuleKind::ClockSkew => {
                    self.skewed.insert(idx.0);
                }
                RuleKind::Threshold(name) => {
                    if let Some(r) = self.cfg.thresholds.iter().position(|x| &x.name == name) {
                        self.pending.insert((idx.0, r as u16), alert.started_at);
                    }
                }
                RuleKind::NodeOffline
                | RuleKind::SiteOutage
                | RuleKind::RegionOutage
                | RuleKind::Flapping
                | RuleKind::TelemetryGap
                | RuleKind::CollectorBlind
                | RuleKind::StoreFailed
                | RuleKind::CollectorFailover
                | RuleKind::ReadinessLow => {}
            }
        }
        if hold_until > UnixMillis::EPOCH && !alert.notified {
            self.timers.push(Reverse((hold_until, Timer::Hold(fp))));
        }
        let active = Active {
            alert,
            node,
            site,
            region,
            hold_until,
            confirmed: true,
            members: None,
        };
        let mut active = active;
        if active.alert.rule.is_outage() {
            let members = offline_members(t, &active.alert);
            active.members = Some(Box::new(Members {
                notified: if active.alert.notified {
                    members.clone()
                } else {
                    BTreeSet::new()
                },
                current: members,
                last_sent: active.alert.started_at,
                due: false,
            }));
        }
        self.index(fp, &active);
        self.active.insert(fp, active);
    }

    /// After every node and alert is restored: resolves restored alerts whose condition no
    /// longer holds, raises the ones that are missing (a crash between a transition and its
    /// alert), starts the quiet timers of restored flapping/gap alerts, and notifies what was
    /// held and is no longer.
    pub(crate) fn finish_restore(
        &mut self,
        t: &Tracker,
        now: UnixMillis,
        out: &mut Vec<AlertChange>,
        maint: &mut Vec<(NodeIdx, bool)>,
    ) {
        self.sync_silences(t, now, out, maint);
        let restored: Vec<(u64, RuleKind, Option<NodeIdx>, bool)> = self
            .active
            .iter()
            .map(|(fp, a)| {
                let orphan = a.alert.subject.node().is_some() && a.node.is_none();
                (*fp, a.alert.rule.clone(), a.node, orphan)
            })
            .collect();
        for (fp, rule, node, orphan) in restored {
            if orphan {
                self.resolve(t, fp, now, out);
                continue;
            }
            match (rule, node) {
                (RuleKind::NodeOffline, Some(idx))
                    if t.view(idx).own_state() != Liveness::Offline =>
                {
                    self.resolve(t, fp, now, out);
                }
                (RuleKind::Flapping, Some(idx)) => {
                    let f = self.flaps.entry(idx.0).or_default();
                    f.last = now;
                    let quiet = self.cfg.flapping.quiet;
                    self.timers.push(Reverse((now + quiet, Timer::Flap(idx.0))));
                }
                (RuleKind::TelemetryGap, Some(idx)) => {
                    let g = self.gaps.entry(idx.0).or_default();
                    g.last_gap = now;
                    g.window_start = now;
                    let window = self.cfg.telemetry_gap.window;
                    self.timers.push(Reverse((now + window, Timer::Gap(idx.0))));
                }
                _ => {}
            }
        }
        // Outages from the restored counts.
        for region in 0..t.region_count() {
            self.eval_region(t, region as u32, now, out);
        }
        for site in 0..t.site_count() {
            self.eval_site(t, site as u32, now, out);
        }
        if self.cfg.node_offline.enabled {
            let offline: Vec<NodeIdx> = t
                .nodes()
                .filter(|v| v.own_state() == Liveness::Offline)
                .filter_map(|v| t.idx(v.id()))
                .collect();
            for idx in offline {
                let labels = NodeLabels { view: t.view(idx) };
                let fp = labels.fp(&RuleKind::NodeOffline, None);
                if self.is_active(fp) {
                    continue;
                }
                let new = NewAlert {
                    hold_until: now + self.cfg.node_offline.group_wait,
                    ..labels.alert(
                        idx,
                        fp,
                        RuleKind::NodeOffline,
                        self.cfg.offline_severity(labels.view.kind().as_str()),
                        format_args!(" is offline"),
                        Tags::new(),
                    )
                };
                self.fire(t, new, now, out);
            }
        }
        let held: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, a)| !a.alert.notified)
            .map(|(fp, _)| *fp)
            .collect();
        for fp in held {
            self.maybe_notify(t, fp, now, out);
        }
    }
}

/// `site outage at r/s: k of n nodes offline` / `region outage in r: ...`, with `offline`
/// members and the subject's total from the tracker.
fn outage_summary(t: &Tracker, alert: &Alert, offline: usize) -> (String, usize) {
    match (alert.subject.region(), alert.subject.site()) {
        (Some(r), Some(s)) => {
            let total = t.site_counts(r, s).map_or(0, |(_, total)| total);
            let text = format!("site outage at {r}/{s}: {offline} of {total} nodes offline");
            (text, total as usize)
        }
        (Some(r), None) => {
            let total = t.region_counts(r).map_or(0, |(_, total)| total);
            let text = format!("region outage in {r}: {offline} of {total} nodes offline");
            (text, total as usize)
        }
        _ => (alert.summary.clone(), 0),
    }
}

/// A confirmed alert about a whole region (`region` is its index and id).
fn region_alert(
    fp: u64,
    rule: RuleKind,
    severity: Severity,
    region: (u32, &alarmnet_protocol::RegionId),
    summary: String,
    args: Tags,
) -> NewAlert {
    NewAlert {
        fp,
        rule,
        severity,
        subject: Subject::Region {
            region: region.1.clone(),
        },
        kind: None,
        node: None,
        site: None,
        region: Some(region.0),
        summary,
        args,
        hold_until: UnixMillis::EPOCH,
        confirmed: true,
    }
}

/// An alert's facts by name: keys are metric-like names, values at most 256 characters.
pub(crate) fn args<const N: usize>(pairs: [(&str, String); N]) -> Tags {
    let mut tags = Tags::new();
    for (key, value) in pairs {
        if let Ok(key) = MetricName::new(key) {
            let _ = tags.insert(key, Text::truncated(value));
        }
    }
    tags
}

/// `check`, `code`, and when known the fault's `fault_severity` and `message`.
fn fault_args(key: &FaultKey, severity: Option<Severity>, message: Option<&str>) -> Tags {
    let mut a = args([
        ("check", key.check.to_string()),
        ("code", key.code.to_string()),
    ]);
    for (k, v) in [
        ("fault_severity", severity.map(|s| s.as_str().to_owned())),
        ("message", message.map(one_line)),
    ] {
        if let (Ok(k), Some(v)) = (MetricName::new(k), v) {
            let _ = a.insert(k, Text::truncated(v));
        }
    }
    a
}

/// `offline` of `total` members, and after a change of members who `went_down` and
/// `came_back` (comma-separated ids).
fn outage_args(offline: impl ToString, total: impl ToString, change: Option<(&str, &str)>) -> Tags {
    let mut a = args([
        ("offline", offline.to_string()),
        ("total", total.to_string()),
    ]);
    if let Some((down, back)) = change {
        for (k, v) in [("went_down", down), ("came_back", back)] {
            if let (Ok(k), false) = (MetricName::new(k), v.is_empty()) {
                let _ = a.insert(k, Text::truncated(v));
            }
        }
    }
    a
}

fn outage(offline: u32, total: u32, min_nodes: u32, min_fraction: f64) -> bool {
    offline >= min_nodes && f64::from(offline) >= min_fraction * f64::from(total)
}

fn silence_matches_node(s: &Silence, view: NodeView<'_>) -> bool {
    s.region.as_ref().is_none_or(|r| r == view.region())
        && s.site.as_ref().is_none_or(|x| x == view.site())
        && s.node.as_ref().is_none_or(|n| n == view.id())
        && s.kind.as_ref().is_none_or(|k| k == view.kind())
}

fn silence_matches_alert(s: &Silence, a: &Alert) -> bool {
    fn covers<T: PartialEq>(filter: &Option<T>, label: Option<&T>) -> bool {
        match filter {
            None => true,
            Some(f) => label == Some(f),
        }
    }
    covers(&s.region, a.subject.region())
        && covers(&s.site, a.subject.site())
        && covers(&s.node, a.subject.node())
        && covers(&s.kind, a.kind.as_ref())
}
