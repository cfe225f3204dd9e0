//! Node checks: configuration, scheduling, hysteresis and the built-in check kinds.
//!
//! Interface placeholder: the signatures below are the contract the session and the CLI
//! build on; the implementation replaces the bodies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alarmnet_protocol::{Name, TestResult};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::health::{
    BoxFuture, CheckOutcome, FaultEvent, Health, HealthSnapshot, TestOutcome, TestRunner,
};

/// One `[[checks]]` table of the agent's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct CheckConfig {
    pub name: Name,
    pub kind: String,
    #[serde(flatten)]
    pub options: BTreeMap<String, serde_json::Value>,
}

/// One `[tests.<kind>]` table: the procedure the agent runs for `cmd test` of that kind.
#[derive(Debug, Clone, Deserialize)]
pub struct TestConfig {
    pub command: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Run this test on its own every so often (self-test), if set.
    #[serde(default, with = "humantime_serde")]
    pub schedule: Option<Duration>,
}

/// Every problem in the checks and tests configuration, all at once.
pub fn validate(checks: &[CheckConfig], tests: &BTreeMap<Name, TestConfig>) -> Vec<String> {
    let _ = (checks, tests);
    Vec::new()
}

/// The configured checks, ready to run.
#[derive(Debug)]
pub struct CheckSet {
    names: Vec<Name>,
}

impl CheckSet {
    pub fn new(checks: Vec<CheckConfig>) -> Result<Self, Vec<String>> {
        Ok(Self {
            names: checks.into_iter().map(|c| c.name).collect(),
        })
    }

    /// Starts one task per check on its own interval. Faults raised or cleared after
    /// hysteresis are sent on `events`.
    pub fn spawn(
        self,
        events: mpsc::Sender<FaultEvent>,
        shutdown: CancellationToken,
    ) -> Arc<dyn Health> {
        let _ = (events, shutdown);
        Arc::new(Placeholder { names: self.names })
    }

    /// Runs every check once, concurrently, each within its timeout.
    pub async fn run_once(&self) -> Vec<(Name, CheckOutcome)> {
        Vec::new()
    }
}

/// The table `alarmnet-agent check` prints: check, status, message, metrics.
pub fn render_table(results: &[(Name, CheckOutcome)]) -> String {
    let _ = results;
    String::new()
}

/// The configured test procedures.
#[derive(Debug, Clone)]
pub struct TestProcedures {
    tests: BTreeMap<Name, TestConfig>,
}

impl TestProcedures {
    pub fn new(tests: BTreeMap<Name, TestConfig>) -> Self {
        Self { tests }
    }

    /// The tests that run on their own schedule, with their period.
    pub fn schedules(&self) -> Vec<(Name, Duration)> {
        self.tests
            .iter()
            .filter_map(|(k, t)| t.schedule.map(|s| (k.clone(), s)))
            .collect()
    }
}

impl TestRunner for TestProcedures {
    fn run(&self, test: &Name) -> BoxFuture<'_, TestOutcome> {
        let _ = test;
        Box::pin(async {
            TestOutcome {
                result: TestResult::Error,
                duration_ms: 0,
                metrics: Default::default(),
                message: "not implemented".into(),
            }
        })
    }
}

#[derive(Debug)]
struct Placeholder {
    names: Vec<Name>,
}

impl Health for Placeholder {
    fn check_names(&self) -> Vec<Name> {
        self.names.clone()
    }
    fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot::default()
    }
    fn run_all_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
