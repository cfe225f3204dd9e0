//! Alerts: the pure rule engine (rules, lifecycle, acknowledgements, silences, inhibition)
//! and [`Monitor`], which wires the liveness [`Tracker`](crate::liveness::Tracker) and the
//! engine together so the I/O shell feeds one object and gets one [`Output`] back.
//!
//! # Lifecycle
//! An alert is `firing` from its start until its condition ends (`resolved`). Its id is a
//! stable fingerprint of rule + subject (+ fault key or threshold name), see
//! [`fingerprint`]; a new firing of the same subject after resolution has the same id and is
//! a new row in history. Raising an alert that is already firing is a no-op.
//!
//! # Notification
//! Every change is returned as an [`AlertChange`] (store it: history), and `notify` says
//! whether a notification must go out for it (`$alerts`, webhooks, Alertmanager):
//! - a firing alert is notified unless it is silenced, inhibited, held (its rule's
//!   `group_wait`, see [`AlertsConfig::group_wait`]) or unconfirmed (a replayed fault not yet confirmed by a live heartbeat);
//!   when the last of these ends while it still fires, it is notified then
//!   ([`AlertEvent::Updated`] with `notify`);
//! - the group wait (`alerts.node_offline.group_wait`, 15 s by default) lets a site or
//!   region outage, whose members go offline within about one heartbeat interval of each
//!   other, inhibit its members before any of them is notified, and swallows blips; when an
//!   outage (or flapping) ends, the alerts it held back get a fresh group wait, so members
//!   coming back a few seconds after the outage resolved are not a storm;
//! - a firing site or region outage whose offline members change is notified again
//!   ([`AlertEvent::Updated`] with `notify`) after its group wait and at most once per
//!   `group_interval`, its summary naming the members that went down and came back;
//! - a resolution is notified exactly when the firing was ([`Alert::notified`]): a silence
//!   or inhibition never swallows the resolution of a notification already sent, and an
//!   alert notified before a maintenance window that still fires after it is not notified
//!   again.
//!
//! # Inhibition
//! `region_outage` inhibits its region's `site_outage`, `node_offline` and `flapping`;
//! `site_outage` inhibits its site's `node_offline` and `flapping`; `flapping` inhibits its
//! node's `node_offline`.

mod config;
mod engine;
mod monitor;

#[cfg(test)]
mod tests;

pub use config::{
    AlertsConfig, ClockSkewRule, CollectorBlindRule, FaultRule, FlappingRule, NodeOfflineRule, Op,
    OutageRule, ReadinessLowRule, TelemetryGapRule, ThresholdRule,
};
pub use engine::{AckError, BlindCause, Engine};
pub use monitor::{Monitor, MonitorConfig, Output};

use alarmnet_protocol::{AlertNotification, AlertTopic, Text, V1};
use serde::{Deserialize, Serialize};

use crate::model::{Alert, UnixMillis};

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// It started firing.
    Fired,
    /// It stopped firing.
    Resolved,
    /// An operator acknowledged it.
    Acked,
    /// It changed while firing: severity, or its firing notification goes out now (a
    /// silence, inhibition or hold ended).
    Updated,
}

/// One change of one alert: the full alert after the change, what happened, and whether a
/// notification must be sent for it ([`Alert::to_notification`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertChange {
    pub alert: Alert,
    pub event: AlertEvent,
    pub notify: bool,
}

/// FNV-1a 64 over the canonical string `rule US region US site US node US extra` (US =
/// 0x1f, an absent part is empty). Stable across versions: ids must not change when the
/// collector is upgraded, or restored alerts would be duplicated.
pub fn fingerprint(
    rule: &str,
    region: Option<&str>,
    site: Option<&str>,
    node: Option<&str>,
    extra: Option<&str>,
) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let parts = [Some(rule), region, site, node, extra];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(PRIME);
        }
        for b in part.unwrap_or("").bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

impl Alert {
    /// The notification for this alert in its current state.
    pub fn to_notification(&self) -> AlertNotification {
        AlertNotification {
            v: V1,
            id: Text::truncated(self.id.to_string()),
            rule: self.rule.to_name(),
            severity: self.severity,
            status: self.status,
            region: self.subject.region().cloned(),
            site: self.subject.site().cloned(),
            node: self.subject.node().cloned(),
            kind: self.kind.clone(),
            started_at: self.started_at.as_millis(),
            ended_at: self.ended_at.map(UnixMillis::as_millis),
            summary: Text::truncated(self.summary.clone()),
            args: self.args.clone(),
        }
    }

    /// The retained `$alerts` topic of this alert.
    pub fn topic(&self) -> AlertTopic {
        AlertTopic {
            region: self.subject.region().cloned(),
            site: self.subject.site().cloned(),
            node: self.subject.node().cloned(),
            rule: self.rule.to_name(),
        }
    }
}
