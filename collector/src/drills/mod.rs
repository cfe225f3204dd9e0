//! Drills: an operator (or a schedule) asks every node matching a selector to run one test
//! kind; the collector tallies the receipts live and keeps the result.
//!
//! - [`tally`]: the pure state of one drill (outcomes per node, the tally, closing), with an
//!   injected `now`.
//! - [`schedule`]: calendar rules of scheduled drills, pure next-occurrence arithmetic.
//! - [`task`]: the drills task: the single owner of live drills; starts, cancels, polls the
//!   store for receipts, hands commands to the [`crate::commands::Commander`], announces.
//!
//! ```text
//!  API / schedules ──[control 64]──► drills task ──DrillJob──► commander (signed, paced) ──► cmd
//!                                      │   ▲ every 250 ms: test receipts committed by the core
//!                                      │   │ (test_receipts, by drill id, after a cursor)
//!                                      ├───┴► store: drills, drill_nodes (one transaction per poll)
//!                                      └──► EventHub `drill` events (≤ 4 per second per drill)
//! ```
//!
//! Design: receipts reach drills through the store, not through the core. The core already
//! commits every test receipt (with its `drill` id and receive time) before anything else
//! sees it; the drills task reads what was committed after its cursor. So the core gains no
//! drill state, a receipt counts only once it is durable, and after a restart the tally
//! resumes exactly from the stored cursor.
//!
//! One command id per drill: the drill id. Every node has its own `cmd` topic and the
//! signature covers the topic, so a node sees the id once and a command cannot be replayed
//! to another node; the receipt's `drill` names the drill directly. After a collector
//! restart the commands of an open drill are sent again to every node still waiting:
//! agents remember command ids, so a node that already had it refuses the copy, and a node
//! the first run never reached runs it.

pub mod schedule;
pub mod tally;
pub mod task;

use std::time::Duration;

use alarmnet_protocol::{CmdId, Name, NodeId, RegionId, SiteId};
use serde::{Deserialize, Serialize};

pub use schedule::{Rule, Schedule, ScheduleConfig};
pub use tally::{LiveDrill, NodeResult, Outcome, Receipt, Status, Tally};
pub use task::{DrillControl, DrillError, DrillRequest, DrillsTask, Started};

use crate::model::UnixMillis;

/// `[drills]`: defaults and limits of drills, and the scheduled ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillsConfig {
    /// How long a drill waits for receipts when the operator gives no deadline.
    #[serde(default = "default_deadline", with = "humantime_serde")]
    pub default_deadline: Duration,
    /// The longest deadline an operator may give.
    #[serde(default = "default_max_deadline", with = "humantime_serde")]
    pub max_deadline: Duration,
    /// `[[drills.schedule]]`: drills that run without an operator.
    #[serde(default)]
    pub schedule: Vec<ScheduleConfig>,
}

impl Default for DrillsConfig {
    fn default() -> Self {
        Self {
            default_deadline: default_deadline(),
            max_deadline: default_max_deadline(),
            schedule: Vec::new(),
        }
    }
}

fn default_deadline() -> Duration {
    Duration::from_secs(600)
}
fn default_max_deadline() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// `[drills]` checked at load: the limits, and every schedule parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillsSettings {
    pub default_deadline: Duration,
    pub max_deadline: Duration,
    pub schedule: Vec<Schedule>,
}

impl Default for DrillsSettings {
    fn default() -> Self {
        Self {
            default_deadline: default_deadline(),
            max_deadline: default_max_deadline(),
            schedule: Vec::new(),
        }
    }
}

impl DrillsConfig {
    /// The parsed settings, or every problem, each prefixed with its key.
    pub fn build(&self) -> Result<DrillsSettings, Vec<String>> {
        let mut errors = Vec::new();
        if self.default_deadline < Duration::from_secs(1) {
            errors.push("drills.default_deadline: must be at least 1s".into());
        }
        if self.max_deadline < self.default_deadline {
            errors.push("drills.max_deadline: shorter than drills.default_deadline".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut schedule = Vec::new();
        for (i, s) in self.schedule.iter().enumerate() {
            let at = format!("drills.schedule[{i}]");
            if !names.insert(s.name.as_str()) {
                errors.push(format!("{at}.name: {:?} is used twice", s.name));
            }
            match s.build(&at, self.max_deadline) {
                Ok(s) => schedule.push(s),
                Err(problems) => errors.extend(problems),
            }
        }
        if errors.is_empty() {
            Ok(DrillsSettings {
                default_deadline: self.default_deadline,
                max_deadline: self.max_deadline,
                schedule,
            })
        } else {
            Err(errors)
        }
    }
}

/// Which nodes a drill asks. Every given field must match; none given: the whole network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Name>,
    /// An explicit list; each listed node must be registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeId>>,
}

/// Most nodes an explicit list may name.
pub const MAX_LISTED_NODES: usize = 100_000;

/// What an operator or a schedule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillSpec {
    pub selector: Selector,
    pub test: Name,
    pub deadline: Duration,
}

/// A drill as stored and listed: what was asked, by whom, and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillMeta {
    pub id: CmdId,
    pub test: Name,
    pub selector: Selector,
    pub started_at: UnixMillis,
    pub deadline: UnixMillis,
    /// The token name of the operator, or `schedule:<name>`.
    pub started_by: String,
    pub status: Status,
    pub closed_at: Option<UnixMillis>,
    pub cancelled_by: Option<String>,
    /// The schedule entry that started it, if any.
    pub schedule: Option<String>,
    pub tally: Tally,
}

/// A new drill id: `d-` + the start time (UTC, to the second) + 4 random hex digits.
pub fn new_id(now: UnixMillis) -> CmdId {
    let stamp =
        jiff::Timestamp::from_millisecond(i64::try_from(now.as_millis()).unwrap_or(i64::MAX))
            .map(|t| t.strftime("%Y%m%dT%H%M%S").to_string())
            .unwrap_or_else(|_| now.to_string());
    let suffix: u16 = rand::random();
    let text = format!("d-{stamp}-{suffix:04x}");
    CmdId::new(text).unwrap_or_else(|_| unreachable!("a drill id is letters, digits and -"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_command_ids_and_carry_the_start() {
        let id = new_id(UnixMillis::from_millis(1_790_000_000_000));
        assert!(id.as_str().starts_with("d-20260921T141320-"), "{id}");
        assert_eq!(id.as_str().len(), "d-20260922T000000-abcd".len());
    }

    #[test]
    fn selectors_read_from_json_and_refuse_unknown_fields() {
        let s: Selector =
            serde_json::from_str(r#"{"region":"lanzhou","kind":"siren"}"#).expect("selector");
        assert_eq!(s.region.as_ref().map(|r| r.as_str()), Some("lanzhou"));
        assert!(serde_json::from_str::<Selector>(r#"{"regoin":"x"}"#).is_err());
        assert!(serde_json::from_str::<Selector>(r#"{"site":"a b"}"#).is_err());
    }
}
