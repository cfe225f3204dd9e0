//! Readiness: whether a node could do its job now (a siren sound, a display show), derived
//! from its liveness, its active faults and its last test of each kind. Pure: time comes in
//! as an argument.
//!
//! # States
//! - `ready`: online (`late` counts as online), no active critical or major fault, the last
//!   test of each required kind passed within `max_test_age`.
//! - `degraded`: online, but a minor or warning fault is active, or a required test is
//!   overdue (`test_overdue`) or was never run (`test_never`).
//! - `not_ready`: not online (`offline`, `stopped`, `unknown`, or `maintenance`), an active
//!   critical or major fault, or the last test of a kind failed (`test_failed`, any kind) or
//!   could not run (`test_error`, required kinds only: a display asked for a `silent` test
//!   it has no procedure for answers `error` and stays what it was).
//!
//! Every applicable reason is listed, the worst decides the state. `info` faults do not
//! count. A node under a silence (`maintenance`) is `not_ready` with reason `maintenance`
//! and sits in its own rollup bucket: like uptime, maintenance is excluded from the ready
//! percentage.
//!
//! # Layout
//! - [`derive`]: one node's state and reasons from its inputs and `now` (the rules above).
//! - [`tracker::ReadinessTracker`]: every node's inputs, the overdue deadlines (a heap),
//!   and the rollups per site, region and network kept current change by change.
//! - [`board::Board`]: the rollups as the API and `/metrics` read them.

pub mod board;
pub mod history;

pub mod tracker;

#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use alarmnet_protocol::{Name, Severity, TestResult};
use serde::{Deserialize, Serialize};

use crate::model::{Liveness, UnixMillis};

pub use board::{Board, BoardSnapshot};
pub use tracker::{ReadinessChange, ReadinessTracker};

/// A node's readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    // Declared worst first: `max` of reasons' implied states is the best one, so the
    // derivation takes the minimum.
    NotReady,
    Degraded,
    Ready,
}

impl Readiness {
    pub const ALL: [Readiness; 3] = [Readiness::Ready, Readiness::Degraded, Readiness::NotReady];

    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Ready => "ready",
            Readiness::Degraded => "degraded",
            Readiness::NotReady => "not_ready",
        }
    }

    pub fn from_name(name: &str) -> Option<Readiness> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The time-series code: 2 ready, 1 degraded, 0 not ready (higher is better).
    pub fn code(self) -> u8 {
        match self {
            Readiness::Ready => 2,
            Readiness::Degraded => 1,
            Readiness::NotReady => 0,
        }
    }
}

/// Why a node is not `ready`: a stable `code` with its parameters (JSON:
/// `{"code":"fault_critical","fault":"amplifier/AMP_NO_OUTPUT"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// Liveness `offline`.
    Offline,
    /// Liveness `stopped` (a clean shutdown).
    Stopped,
    /// Liveness `unknown` (never judged yet).
    Unknown,
    /// Under a silence (maintenance window).
    Maintenance,
    FaultCritical {
        fault: String,
    },
    FaultMajor {
        fault: String,
    },
    /// A `minor` or `warning` fault.
    FaultMinor {
        fault: String,
        severity: Severity,
    },
    /// The last test of this kind failed.
    TestFailed {
        test: String,
    },
    /// The last test of this required kind could not run.
    TestError {
        test: String,
    },
    /// The last pass of this required kind is older than the maximum age; `last` is when it
    /// ran (ms since the epoch).
    TestOverdue {
        test: String,
        last: UnixMillis,
    },
    /// No test of this required kind is known.
    TestNever {
        test: String,
    },
}

impl Reason {
    /// The stable code (`offline`, `fault_critical`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Offline => "offline",
            Reason::Stopped => "stopped",
            Reason::Unknown => "unknown",
            Reason::Maintenance => "maintenance",
            Reason::FaultCritical { .. } => "fault_critical",
            Reason::FaultMajor { .. } => "fault_major",
            Reason::FaultMinor { .. } => "fault_minor",
            Reason::TestFailed { .. } => "test_failed",
            Reason::TestError { .. } => "test_error",
            Reason::TestOverdue { .. } => "test_overdue",
            Reason::TestNever { .. } => "test_never",
        }
    }

    /// The best state a node with this reason can be in.
    pub fn caps(&self) -> Readiness {
        match self {
            Reason::FaultMinor { .. } | Reason::TestOverdue { .. } | Reason::TestNever { .. } => {
                Readiness::Degraded
            }
            _ => Readiness::NotReady,
        }
    }
}

/// The last test of one kind a node reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTest {
    pub test: Name,
    pub result: TestResult,
    /// When it ran: the agent's `ts`, but never later than its arrival.
    pub at: UnixMillis,
}

/// What one node's readiness is derived from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The effective liveness (`maintenance` under a silence).
    pub liveness: Liveness,
    /// Active faults: key (`check/code`) and severity.
    pub faults: &'a [(String, Severity)],
    /// The last test of each kind.
    pub tests: &'a [LastTest],
    /// The test kinds this node's kind must pass regularly.
    pub required: &'a [Name],
}

/// One node's derived readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub state: Readiness,
    pub reasons: Vec<Reason>,
    /// When the derivation changes with time alone (a passed test becoming overdue).
    pub next_change: Option<UnixMillis>,
}

/// Derives a node's readiness at `now`; a test passed at `at` is overdue from
/// `at + max_age` on.
pub fn derive(inp: Inputs<'_>, max_age: Duration, now: UnixMillis) -> Derived {
    let mut reasons = Vec::new();
    match inp.liveness {
        Liveness::Online | Liveness::Late => {}
        Liveness::Offline => reasons.push(Reason::Offline),
        Liveness::Stopped => reasons.push(Reason::Stopped),
        Liveness::Unknown => reasons.push(Reason::Unknown),
        Liveness::Maintenance => reasons.push(Reason::Maintenance),
    }
    for (key, severity) in inp.faults {
        let fault = key.clone();
        match severity {
            Severity::Critical => reasons.push(Reason::FaultCritical { fault }),
            Severity::Major => reasons.push(Reason::FaultMajor { fault }),
            Severity::Minor | Severity::Warning => reasons.push(Reason::FaultMinor {
                fault,
                severity: *severity,
            }),
            Severity::Info => {}
        }
    }
    let mut next_change: Option<UnixMillis> = None;
    for t in inp.tests {
        let required = inp.required.contains(&t.test);
        match t.result {
            TestResult::Fail => reasons.push(Reason::TestFailed {
                test: t.test.to_string(),
            }),
            TestResult::Error if required => reasons.push(Reason::TestError {
                test: t.test.to_string(),
            }),
            TestResult::Pass if required => {
                let due = t.at + max_age;
                if now >= due {
                    reasons.push(Reason::TestOverdue {
                        test: t.test.to_string(),
                        last: t.at,
                    });
                } else {
                    next_change = Some(next_change.map_or(due, |n| n.min(due)));
                }
            }
            TestResult::Error | TestResult::Pass => {}
        }
    }
    for kind in inp.required {
        if !inp.tests.iter().any(|t| &t.test == kind) {
            reasons.push(Reason::TestNever {
                test: kind.to_string(),
            });
        }
    }
    let state = reasons
        .iter()
        .map(Reason::caps)
        .min()
        .unwrap_or(Readiness::Ready);
    Derived {
        state,
        reasons,
        next_change,
    }
}

/// `[readiness]`: what a node must do to count as ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    /// How old the last pass of a required test may be before the node is `degraded`
    /// (`test_overdue`). Match it to how often nodes run their scheduled self-tests, with
    /// a margin for one missed run.
    #[serde(with = "humantime_serde")]
    pub max_test_age: Duration,
    /// Per node kind, the test kinds it must pass within `max_test_age`. Kinds not listed
    /// need none.
    pub required_tests: BTreeMap<String, Vec<Name>>,
    /// The node kinds the ready percentage counts (sirens: the network's purpose).
    pub counted_kinds: Vec<Name>,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        let silent = Name::new("silent").expect("a valid name");
        let siren = Name::new("siren").expect("a valid name");
        Self {
            max_test_age: Duration::from_secs(30 * 86_400),
            required_tests: BTreeMap::from([("siren".to_owned(), vec![silent])]),
            counted_kinds: vec![siren],
        }
    }
}

impl ReadinessConfig {
    /// Every problem with these settings, empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_test_age.is_zero() {
            p.push("readiness.max_test_age must be longer than 0s".to_owned());
        }
        for kind in self.required_tests.keys() {
            if Name::new(kind.as_str()).is_err() {
                p.push(format!(
                    "readiness.required_tests: {kind:?} is not a valid node kind"
                ));
            }
        }
        p
    }

    pub(crate) fn max_age(&self) -> Duration {
        self.max_test_age
    }
}
