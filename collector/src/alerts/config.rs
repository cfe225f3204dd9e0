//! Alert rule settings, with the defaults of the system description. Durations are human
//! strings in config (`"10m"`).

use std::collections::BTreeMap;
use std::time::Duration;

use alarmnet_protocol::{MetricName, Name, Severity};
use serde::{Deserialize, Serialize};

use crate::model::RuleKind;

/// Every alert rule's settings (`[alerts]` in the collector config).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    pub node_offline: NodeOfflineRule,
    pub fault: FaultRule,
    pub site_outage: OutageRule,
    pub region_outage: OutageRule,
    pub flapping: FlappingRule,
    pub telemetry_gap: TelemetryGapRule,
    pub clock_skew: ClockSkewRule,
    pub collector_blind: CollectorBlindRule,
    pub store_failed: StoreFailedRule,
    pub readiness_low: ReadinessLowRule,
    /// Metric threshold rules, e.g. `battery_v < 11.8 for 5m`.
    pub thresholds: Vec<ThresholdRule>,
}

/// `node_offline`: a node went offline (Will or timeout). Stopped nodes raise nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeOfflineRule {
    pub enabled: bool,
    /// Severity per node kind; sirens matter more than displays.
    pub severity: BTreeMap<String, Severity>,
    /// Severity for kinds not listed in `severity`.
    pub default_severity: Severity,
    /// How long an offline alert waits before it is notified. It is recorded at once; the
    /// wait lets a site or region outage (whose members go offline within one heartbeat
    /// interval of each other) inhibit it, and swallows blips shorter than the wait. `"0s"`
    /// notifies at once.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
}

impl Default for NodeOfflineRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: BTreeMap::from([
                ("siren".to_owned(), Severity::Critical),
                ("display".to_owned(), Severity::Major),
            ]),
            default_severity: Severity::Major,
            group_wait: Duration::from_secs(15),
        }
    }
}

/// `fault`: one alert per active fault key; severity from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRule {
    pub enabled: bool,
    /// Severity of a fault that is known only from a heartbeat's `faults` list (its `fault`
    /// message was missed, so the agent's severity is unknown).
    pub reconciled_severity: Severity,
    /// How long a new alert of this rule waits before it is notified; one that resolves
    /// within the wait is recorded, never notified. `"0s"` (the default for node rules)
    /// notifies at once.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// The most fault alerts one node may have active. Beyond it a node's new faults are
    /// counted, not alerted one by one: one summary alert (`fault` with the key
    /// `alarmnet/FAULT_CAP`) says the node is over its cap, and resolves once the node is
    /// below it again (its heartbeats' fault lists then bring the faults it still has).
    /// Protects operators and outputs from a node reporting hundreds of distinct faults.
    pub max_active_per_node: usize,
}

impl Default for FaultRule {
    fn default() -> Self {
        Self {
            enabled: true,
            reconciled_severity: Severity::Major,
            group_wait: Duration::ZERO,
            max_active_per_node: 64,
        }
    }
}

/// `site_outage` / `region_outage`: a large share of a site's (region's) nodes offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutageRule {
    pub enabled: bool,
    /// Share of the members (0..1] that must be offline.
    pub min_fraction: f64,
    /// Least number of offline members; keeps a one-node site from having "outages".
    pub min_nodes: u32,
    pub severity: Severity,
    /// How long a new outage waits before it is notified (5 s by default): members of a
    /// site or region cut go offline within moments of each other, so the alert is notified
    /// once with its members counted, and an outage that ends within the wait (a flicker) is
    /// recorded, never notified.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// While an outage fires, a change of its offline members is notified again at most this
    /// often, the summary naming the members that went down and came back since the last
    /// notification.
    #[serde(with = "humantime_serde")]
    pub group_interval: Duration,
}

impl Default for OutageRule {
    fn default() -> Self {
        Self {
            enabled: true,
            min_fraction: 0.5,
            min_nodes: 2,
            severity: Severity::Critical,
            group_wait: Duration::from_secs(5),
            group_interval: Duration::from_secs(300),
        }
    }
}

/// `readiness_low`: a region's ready share of sirens (the counted kinds of `[readiness]`,
/// maintenance excluded) fell below a floor. One alert per region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessLowRule {
    pub enabled: bool,
    /// Fires below this ready percentage (0-100].
    pub floor_pct: f64,
    /// Resolves only at `floor_pct + hysteresis_pct` or above, so one siren going back and
    /// forth at the floor does not fire and resolve again and again.
    pub hysteresis_pct: f64,
    /// Least number of judged sirens in the region; a region with fewer raises nothing.
    pub min_nodes: u32,
    pub severity: Severity,
}

impl Default for ReadinessLowRule {
    fn default() -> Self {
        Self {
            enabled: true,
            floor_pct: 90.0,
            hysteresis_pct: 2.0,
            min_nodes: 5,
            severity: Severity::Major,
        }
    }
}

/// `flapping`: many up/down transitions in a window; one alert instead of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlappingRule {
    pub enabled: bool,
    /// Transitions into or out of `offline` within `window` that make a node flapping.
    pub transitions: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A flapping alert resolves after this long without such a transition.
    #[serde(with = "humantime_serde")]
    pub quiet: Duration,
    pub severity: Severity,
    /// How long a new alert of this rule waits before it is notified; one that resolves
    /// within the wait is recorded, never notified. `"0s"` (the default for node rules)
    /// notifies at once.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
}

impl Default for FlappingRule {
    fn default() -> Self {
        Self {
            enabled: true,
            transitions: 4,
            window: Duration::from_secs(600),
            quiet: Duration::from_secs(600),
            severity: Severity::Major,
            group_wait: Duration::ZERO,
        }
    }
}

/// `telemetry_gap`: sequence numbers missing within one boot (lost telemetry).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryGapRule {
    pub enabled: bool,
    /// Fires when at least this many messages are missing within one `window`.
    pub min_missing: u64,
    /// Counting window; the alert resolves after a whole window without a gap.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub severity: Severity,
    /// How long a new alert of this rule waits before it is notified; one that resolves
    /// within the wait is recorded, never notified. `"0s"` (the default for node rules)
    /// notifies at once.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
}

impl Default for TelemetryGapRule {
    fn default() -> Self {
        Self {
            enabled: true,
            min_missing: 5,
            window: Duration::from_secs(600),
            severity: Severity::Warning,
            group_wait: Duration::ZERO,
        }
    }
}

/// `clock_skew`: the agent's clock is off from the collector's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSkewRule {
    pub enabled: bool,
    /// Largest tolerated |agent ts − receive time| on live messages.
    #[serde(with = "humantime_serde")]
    pub max_skew: Duration,
    pub severity: Severity,
    /// How long a new alert of this rule waits before it is notified; one that resolves
    /// within the wait is recorded, never notified. `"0s"` (the default for node rules)
    /// notifies at once.
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
}

impl Default for ClockSkewRule {
    fn default() -> Self {
        Self {
            enabled: true,
            max_skew: Duration::from_secs(60),
            severity: Severity::Warning,
            group_wait: Duration::ZERO,
        }
    }
}

/// `collector_blind`: the collector lost its broker connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorBlindRule {
    pub enabled: bool,
    pub severity: Severity,
    /// How long the collector's own blindness waits before it is notified (`"0s"` by
    /// default: operators learn at once that nobody is being judged).
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
}

impl Default for CollectorBlindRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Critical,
            group_wait: Duration::ZERO,
        }
    }
}

/// `store_failed`: the collector cannot commit to its store (disk full, I/O error,
/// read-only). Notified at once and without a commit: it is about the collector itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreFailedRule {
    pub enabled: bool,
    pub severity: Severity,
    /// How long a failing store waits before it is notified (`"0s"` by default).
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
}

impl Default for StoreFailedRule {
    fn default() -> Self {
        Self {
            enabled: true,
            severity: Severity::Critical,
            group_wait: Duration::ZERO,
        }
    }
}

/// A comparison of a threshold rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A metric threshold: fires when `metric op value` held on every live heartbeat for at
/// least `for`, resolves on the first live heartbeat where it is false.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    /// The rule name carried by the alert (e.g. `battery_low`); unique, and not one of the
    /// built-in rule names.
    pub name: Name,
    pub metric: MetricName,
    pub op: Op,
    pub value: f64,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for", with = "humantime_serde", default)]
    pub for_: Duration,
    pub severity: Severity,
    /// Only nodes of this kind.
    #[serde(default)]
    pub kind: Option<Name>,
    /// How long a new alert waits before it is notified (after `for`); `"0s"` by default.
    #[serde(with = "humantime_serde", default)]
    pub group_wait: Duration,
}

impl AlertsConfig {
    /// Every problem with these settings, empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (what, rule) in [
            ("site_outage", &self.site_outage),
            ("region_outage", &self.region_outage),
        ] {
            if !(rule.min_fraction > 0.0 && rule.min_fraction <= 1.0) {
                problems.push(format!(
                    "alerts.{what}.min_fraction must be in (0, 1], got {}",
                    rule.min_fraction
                ));
            }
            if rule.min_nodes == 0 {
                problems.push(format!("alerts.{what}.min_nodes must be at least 1"));
            }
        }
        if self.fault.max_active_per_node == 0 {
            problems.push("alerts.fault.max_active_per_node must be at least 1".to_owned());
        }
        let r = &self.readiness_low;
        if !(r.floor_pct > 0.0 && r.floor_pct <= 100.0) {
            problems.push(format!(
                "alerts.readiness_low.floor_pct must be in (0, 100], got {}",
                r.floor_pct
            ));
        }
        if !(r.hysteresis_pct >= 0.0 && r.hysteresis_pct < 100.0) {
            problems.push(format!(
                "alerts.readiness_low.hysteresis_pct must be in [0, 100), got {}",
                r.hysteresis_pct
            ));
        }
        if r.min_nodes == 0 {
            problems.push("alerts.readiness_low.min_nodes must be at least 1".to_owned());
        }
        if self.flapping.transitions < 2 {
            problems.push("alerts.flapping.transitions must be at least 2".to_owned());
        }
        if self.flapping.window.is_zero() {
            problems.push("alerts.flapping.window must be longer than 0s".to_owned());
        }
        if self.telemetry_gap.min_missing == 0 {
            problems.push("alerts.telemetry_gap.min_missing must be at least 1".to_owned());
        }
        if self.telemetry_gap.window.is_zero() {
            problems.push("alerts.telemetry_gap.window must be longer than 0s".to_owned());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.thresholds.iter().enumerate() {
            if RuleKind::builtin(t.name.as_str()).is_some() {
                problems.push(format!(
                    "alerts.thresholds[{i}].name {:?} is a built-in rule name",
                    t.name.as_str()
                ));
            }
            if !seen.insert(t.name.as_str()) {
                problems.push(format!(
                    "alerts.thresholds[{i}].name {:?} is used twice",
                    t.name.as_str()
                ));
            }
            if !t.value.is_finite() {
                problems.push(format!("alerts.thresholds[{i}].value must be finite"));
            }
        }
        if self.thresholds.len() > usize::from(u16::MAX) {
            problems.push("alerts.thresholds: at most 65535 rules".to_owned());
        }
        problems
    }

    /// How long a new alert of `rule` waits before its first notification. A threshold
    /// rule this config does not know (one restored from the store after it was removed)
    /// notifies at once, and so does `readiness_low`, which has no group wait.
    pub fn group_wait(&self, rule: &RuleKind) -> Duration {
        match rule {
            RuleKind::NodeOffline => self.node_offline.group_wait,
            RuleKind::Fault => self.fault.group_wait,
            RuleKind::SiteOutage => self.site_outage.group_wait,
            RuleKind::RegionOutage => self.region_outage.group_wait,
            RuleKind::Flapping => self.flapping.group_wait,
            RuleKind::TelemetryGap => self.telemetry_gap.group_wait,
            RuleKind::ClockSkew => self.clock_skew.group_wait,
            RuleKind::CollectorBlind => self.collector_blind.group_wait,
            RuleKind::StoreFailed => self.store_failed.group_wait,
            RuleKind::ReadinessLow | RuleKind::CollectorFailover => Duration::ZERO,
            RuleKind::Threshold(name) => self
                .thresholds
                .iter()
                .find(|t| &t.name == name)
                .map_or(Duration::ZERO, |t| t.group_wait),
        }
    }

    /// The `node_offline` severity for a node kind.
    pub fn offline_severity(&self, kind: &str) -> Severity {
        self.node_offline
            .severity
            .get(kind)
            .copied()
            .unwrap_or(self.node_offline.default_severity)
    }
}
