//! Domain types shared by the collector's pure logic (liveness, alerts, uptime) and its I/O
//! shell (store, API, outputs). Instants are the collector's own clock in [`UnixMillis`]; spans are
//! [`std::time::Duration`].

use alarmnet_protocol::{
    AlertStatus, BootId, Name, NodeId, NodePath, Reason, RegionId, Severity, SiteId,
};
use serde::{Deserialize, Serialize};

mod ids;
mod rule;
mod subject;
mod time;

pub use ids::{AlertId, SilenceId};
pub use rule::RuleKind;
pub use subject::{Subject, SubjectError, SubjectLabels};
pub use time::UnixMillis;
#[cfg(test)]
pub(crate) use time::ms;

/// The collector's wall clock as a [`UnixMillis`] (the epoch before it, saturating far after it).
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(UnixMillis::EPOCH, |d| UnixMillis::EPOCH + d)
}

/// Where a component reads "now": the system clock in service ([`system_clock`]), tokio's
/// clock from a fixed start in tests ([`tokio_clock`]), so paused time drives it.
pub type Clock = std::sync::Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The system clock: [`now_millis`].
pub fn system_clock() -> Clock {
    std::sync::Arc::new(now_millis)
}

/// A clock reading `base` now and advancing with tokio's clock: under paused time
/// (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) it moves only when
/// tokio's time does, so deadlines as [`UnixMillis`]s and tokio's timers agree.
pub fn tokio_clock(base: UnixMillis) -> Clock {
    let start = tokio::time::Instant::now();
    std::sync::Arc::new(move || base + start.elapsed())
}

/// A node's liveness as judged by the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Nobody has judged the node yet (never heard, or during the grace period).
    Unknown,
    Online,
    /// A heartbeat is overdue (1.5 × interval by default): not yet offline.
    Late,
    Offline,
    /// Stopped cleanly (`reason: shutdown`): planned, not a failure.
    Stopped,
    /// Covered by a silence (maintenance window).
    Maintenance,
}

impl Liveness {
    /// Every state, in declaration order.
    pub const ALL: [Liveness; 6] = [
        Liveness::Unknown,
        Liveness::Online,
        Liveness::Late,
        Liveness::Offline,
        Liveness::Stopped,
        Liveness::Maintenance,
    ];

    /// The state named `name` (as [`Self::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Liveness> {
        Self::ALL.into_iter().find(|l| l.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Unknown => "unknown",
            Liveness::Online => "online",
            Liveness::Late => "late",
            Liveness::Offline => "offline",
            Liveness::Stopped => "stopped",
            Liveness::Maintenance => "maintenance",
        }
    }

    /// Up for availability: `online` or `late`.
    pub fn is_up(self) -> bool {
        matches!(self, Liveness::Online | Liveness::Late)
    }

    /// Down for availability: `offline` or `stopped`.
    pub fn is_down(self) -> bool {
        matches!(self, Liveness::Offline | Liveness::Stopped)
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A birth (a new connection of the agent).
    Birth,
    /// A live message (heartbeat, fault, test or state online) arrived.
    Heartbeat,
    /// A heartbeat deadline passed.
    Timeout,
    /// The broker published the node's Last Will (connection lost).
    Will,
    /// The agent said it stopped cleanly.
    Shutdown,
    /// A silence began covering the node.
    MaintenanceStart,
    /// A silence covering the node ended.
    MaintenanceEnd,
    /// The collector started and restored the node from its store.
    Restored,
}

impl Cause {
    /// Every cause, in declaration order.
    pub const ALL: [Cause; 8] = [
        Cause::Birth,
        Cause::Heartbeat,
        Cause::Timeout,
        Cause::Will,
        Cause::Shutdown,
        Cause::MaintenanceStart,
        Cause::MaintenanceEnd,
        Cause::Restored,
    ];

    /// The cause named `name` (as [`Self::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<Cause> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Birth => "birth",
            Cause::Heartbeat => "heartbeat",
            Cause::Timeout => "timeout",
            Cause::Will => "will",
            Cause::Shutdown => "shutdown",
            Cause::MaintenanceStart => "maintenance_start",
            Cause::MaintenanceEnd => "maintenance_end",
            Cause::Restored => "restored",
        }
    }
}

/// A change of a node's liveness. Committed to the store before it is announced anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub node: NodeId,
    pub from: Liveness,
    pub to: Liveness,
    pub at: UnixMillis,
    pub cause: Cause,
}

/// What the collector knows of a node from its birth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub path: NodePath,
    pub kind: Name,
    pub name: Option<String>,
    pub boot: Option<BootId>,
    pub hb_interval_ms: u64,
}

/// An alert's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at: UnixMillis,
    pub comment: Option<String>,
}

/// One alert, firing or resolved. `id` is stable: a fingerprint of rule + subject (+ the
/// fault key for `fault` alerts, the metric for threshold alerts), and a new firing of the
/// same subject after resolution gets a new row in history under the same fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: AlertId,
    pub rule: RuleKind,
    pub severity: Severity,
    pub status: AlertStatus,
    pub subject: Subject,
    /// The node's kind, for node alerts.
    pub kind: Option<Name>,
    pub started_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub summary: String,
    /// The summary's facts by name (see `docs/api.md`, "Alert arguments"), so the console
    /// and receivers can word the alert in their own language.
    pub args: alarmnet_protocol::Tags,
    pub ack: Option<Ack>,
    /// Whether a `firing` notification was sent (not silenced or inhibited at the time).
    /// A resolution is notified exactly when this is true.
    pub notified: bool,
}

/// A silence (maintenance window): matching alerts are recorded, not notified, and matching
/// nodes' time in the window counts as maintenance, not downtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: SilenceId,
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
    pub node: Option<NodeId>,
    pub kind: Option<Name>,
    pub starts_at: UnixMillis,
    pub ends_at: UnixMillis,
    pub created_by: String,
    pub comment: Option<String>,
}

/// Why a message was not accepted: the protocol's [`Reason`]s plus the registry's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum RejectReason {
    BadTopic,
    TooLarge,
    BadJson,
    UnsupportedVersion,
    MissingField,
    InvalidField,
    IdMismatch,
    /// A birth of a new node while `max_nodes` nodes are registered.
    NodeCap,
    /// A birth of a node that is not on the allowlist.
    NotAllowed,
    /// A message other than a birth from a node never registered.
    UnknownNode,
    /// A message under a region/site other than the node's registered one.
    Moved,
    /// A message dated further ahead of the collector's clock than `max_future_skew`.
    FutureTs,
    /// A message beyond its node's rate limit (`node_rate`, `node_burst`).
    RateLimited,
}

impl RejectReason {
    pub const COUNT: usize = 13;
    pub const ALL: [RejectReason; Self::COUNT] = [
        RejectReason::BadTopic,
        RejectReason::TooLarge,
        RejectReason::BadJson,
        RejectReason::UnsupportedVersion,
        RejectReason::MissingField,
        RejectReason::InvalidField,
        RejectReason::IdMismatch,
        RejectReason::NodeCap,
        RejectReason::NotAllowed,
        RejectReason::UnknownNode,
        RejectReason::Moved,
        RejectReason::FutureTs,
        RejectReason::RateLimited,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadTopic => Reason::BadTopic.as_str(),
            RejectReason::TooLarge => Reason::TooLarge.as_str(),
            RejectReason::BadJson => Reason::BadJson.as_str(),
            RejectReason::UnsupportedVersion => Reason::UnsupportedVersion.as_str(),
            RejectReason::MissingField => Reason::MissingField.as_str(),
            RejectReason::InvalidField => Reason::InvalidField.as_str(),
            RejectReason::IdMismatch => Reason::IdMismatch.as_str(),
            RejectReason::NodeCap => "node_cap",
            RejectReason::NotAllowed => "not_allowed",
            RejectReason::UnknownNode => "unknown_node",
            RejectReason::Moved => "moved",
            RejectReason::FutureTs => "future_ts",
            RejectReason::RateLimited => "rate_limited",
        }
    }
}

impl From<Reason> for RejectReason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::BadTopic => RejectReason::BadTopic,
            Reason::TooLarge => RejectReason::TooLarge,
            Reason::BadJson => RejectReason::BadJson,
            Reason::UnsupportedVersion => RejectReason::UnsupportedVersion,
            Reason::MissingField => RejectReason::MissingField,
            Reason::InvalidField => RejectReason::InvalidField,
            Reason::IdMismatch => RejectReason::IdMismatch,
        }
    }
}
