//! The seam between the node's checks and the MQTT session: what checks report, and what
//! the session asks of them. The real agent implements [`Health`] and [`TestRunner`] with
//! its configured checks and test procedures; `alarmnet-sim` with simulated ones.

use std::future::Future;
use std::pin::Pin;

use alarmnet_protocol::{
    CheckCounts, FaultKey, FaultStatus, MetricName, Metrics, Name, Severity, TestResult,
};

/// A boxed future, so the traits below stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A check's status, in the Nagios plugin convention (the exit code of an `exec` check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Status {
    /// The status for a Nagios plugin exit code; anything outside 0..=3 is `Unknown`.
    pub fn from_exit_code(code: i32) -> Status {
        match code {
            0 => Status::Ok,
            1 => Status::Warning,
            2 => Status::Critical,
            _ => Status::Unknown,
        }
    }

    /// The process exit code for this status (`alarmnet-agent check` exits with the worst).
    pub fn exit_code(self) -> i32 {
        self as i32
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Critical => "critical",
            Status::Unknown => "unknown",
        }
    }
}

/// The result of one run of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    pub status: Status,
    /// One line for a person.
    pub message: String,
    pub metrics: Vec<(MetricName, f64)>,
}

/// A fault raised or cleared by a check after hysteresis, to be sent as a `fault` message.
/// The session gives it its `boot` and `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultEvent {
    /// Milliseconds since the Unix epoch, from the node's clock, when it was decided.
    pub ts_ms: u64,
    pub check: Name,
    pub code: Name,
    pub severity: Severity,
    pub status: FaultStatus,
    pub message: String,
}

impl FaultEvent {
    pub fn key(&self) -> FaultKey {
        FaultKey::new(self.check.clone(), self.code.clone())
    }
}

/// What a heartbeat carries about the node's health, taken when it is sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthSnapshot {
    pub metrics: Metrics,
    pub counts: CheckCounts,
    /// Every fault active now.
    pub faults: Vec<FaultKey>,
}

/// The node's health as the session sees it. Implementations must answer `snapshot` at once
/// (no check runs inside it): a hung check never delays a heartbeat.
pub trait Health: Send + Sync + 'static {
    /// The names of the configured checks, for `birth`.
    fn check_names(&self) -> Vec<Name>;
    /// The latest results of every check.
    fn snapshot(&self) -> HealthSnapshot;
    /// Runs every check now (the `check` command); resolves when all have finished or timed
    /// out. Faults it raises or clears arrive on the fault event channel as usual.
    fn run_all_now(&self) -> BoxFuture<'_, ()>;
}

/// What one test procedure produced, to be sent as a `test` receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    pub result: TestResult,
    pub duration_ms: u64,
    pub metrics: Metrics,
    pub message: String,
}

/// Runs the node's configured test procedures. An unknown kind yields `TestResult::Error`:
/// the agent only runs what its own configuration names.
pub trait TestRunner: Send + Sync + 'static {
    fn run(&self, test: &Name) -> BoxFuture<'_, TestOutcome>;
}
