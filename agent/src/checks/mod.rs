//! Node checks: configuration, scheduling, hysteresis and the built-in check kinds.
//!
//! # Layout
//! - [`config`]: the `[[checks]]` and `[tests.<kind>]` tables and `validate`.
//! - `hysteresis`: when consecutive results raise or clear a fault (pure).
//! - `runner`: one task per check, the shared latest results, [`Health`] for the session.
//! - `procedures`: test procedures ([`TestProcedures`]).
//! - `table`: the table `alarmnet-agent check` prints.
//! - One file per kind: `system`, `power`, `process`, `tcp`, `http`, `file_age`, `exec`.
//!
//! # Semantics
//! - Each run yields a status, a message and metrics; thresholds on its metrics may worsen
//!   the status (never improve it). A run that exceeds its `timeout` or panics is `unknown`.
//! - A run is *failing* when its status is at least `raise_on` (`warning` by default);
//!   `unknown` always fails: a node whose check cannot tell is not known to be healthy.
//!   The fault `check/code` is raised after `raise_after` failing runs in a row and cleared
//!   after `clear_after` passing runs in a row, once each.
//! - Heartbeat metrics: every check's metrics under its `metric_prefix` (none for `system`
//!   and `power`, `<check>_` for the others); past 64 entries the rest are left out and a
//!   warning is logged once. Checks that have not run yet are in no count.

pub mod config;
mod exec;
mod file_age;
mod http;
mod hysteresis;
mod power;
mod procedures;
mod process;
mod runner;
mod system;
mod table;
mod tcp;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use alarmnet_protocol::{MetricName, Name, Severity};
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::config::Threshold;
pub use self::config::{CheckConfig, Kind, TestConfig, validate};
pub use self::exec::{PluginOutput, parse_output, parse_perfdata};
pub use self::hysteresis::{Hysteresis, Transition};
pub use self::procedures::TestProcedures;
pub use self::table::{render_table, worst_status};
use crate::health::{CheckOutcome, FaultEvent, Health, Status};

/// The configured checks, ready to run.
#[derive(Debug)]
pub struct CheckSet {
    checks: Vec<Check>,
}

impl CheckSet {
    /// Builds the checks; `Err` lists every problem in the configuration.
    pub fn new(checks: Vec<CheckConfig>) -> Result<Self, Vec<String>> {
        let problems = validate(&checks, &BTreeMap::new());
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut built = Vec::with_capacity(checks.len());
        let mut problems = Vec::new();
        for c in checks {
            match Check::build(c) {
                Ok(check) => built.push(check),
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(Self { checks: built })
        } else {
            Err(problems)
        }
    }

    /// The names of the checks, in configuration order.
    pub fn names(&self) -> Vec<Name> {
        self.checks.iter().map(|c| c.name.clone()).collect()
    }

    /// Starts one task per check on its own interval, the first run at once. Faults raised
    /// or cleared after hysteresis are sent on `events`. Must be called inside a runtime.
    pub fn spawn(
        self,
        events: mpsc::Sender<FaultEvent>,
        shutdown: CancellationToken,
    ) -> Arc<dyn Health> {
        runner::Runner::spawn(self.checks, events, shutdown)
    }

    /// Runs every check once, concurrently, each within its timeout; no hysteresis, no
    /// faults. For `alarmnet-agent check`.
    pub async fn run_once(&self) -> Vec<(Name, CheckOutcome)> {
        futures_util::future::join_all(
            self.checks
                .iter()
                .map(|c| async move { (c.name.clone(), c.run().await) }),
        )
        .await
    }
}

/// One check, built from its configuration.
#[derive(Debug)]
struct Check {
    name: Name,
    probe: Probe,
    interval: Duration,
    timeout: Duration,
    code: Name,
    severity: Severity,
    raise_on: Status,
    raise_after: u32,
    clear_after: u32,
    thresholds: Vec<(MetricName, Threshold)>,
    metric_prefix: String,
}

/// What a check measures, per kind.
#[derive(Debug)]
enum Probe {
    System(system::System),
    Power(power::Power),
    Process(process::Process),
    Tcp(tcp::Tcp),
    Http(http::Http),
    FileAge(file_age::FileAge),
    Exec(exec::Exec),
    /// A probe that panics, to test that a crashing check reports `unknown`.
    #[cfg(test)]
    Panic,
}

impl Check {
    /// Builds a validated config; `Err` only for what validation could not foresee.
    fn build(c: CheckConfig) -> Result<Self, String> {
        let missing = |key: &str| format!("check `{}`: `{key}` is required", c.name);
        let kind = Kind::parse(&c.kind)
            .ok_or_else(|| format!("check `{}`: unknown kind {:?}", c.name, c.kind))?;
        let probe = match kind {
            Kind::System => Probe::System(system::System::new(
                c.disk_path.clone().unwrap_or_else(|| "/".into()),
            )),
            Kind::Power => Probe::Power(power::Power::new(
                c.sysfs_root
                    .clone()
                    .unwrap_or_else(|| "/sys/class/power_supply".into()),
                c.mains_lost.map_or(Status::Warning, config::Level::status),
            )),
            Kind::Process => {
                let matcher = match (&c.process, &c.cmdline) {
                    (Some(p), _) => process::Matcher::Name(p.clone()),
                    (None, Some(s)) => process::Matcher::Cmdline(s.clone()),
                    (None, None) => return Err(missing("process")),
                };
                Probe::Process(process::Process::new(matcher, c.min_count.unwrap_or(1)))
            }
            Kind::Tcp => Probe::Tcp(tcp::Tcp::new(
                c.address.clone().ok_or_else(|| missing("address"))?,
            )),
            Kind::Http => {
                let url = c.url.as_deref().ok_or_else(|| missing("url"))?;
                let url = http::HttpUrl::parse(url)
                    .map_err(|e| format!("check `{}`: `url` {e}", c.name))?;
                Probe::Http(http::Http::new(url, c.expect_status.unwrap_or(200)))
            }
            Kind::FileAge => Probe::FileAge(file_age::FileAge::new(
                c.path.clone().ok_or_else(|| missing("path"))?,
                c.max_age.ok_or_else(|| missing("max_age"))?,
                c.warn_age,
            )),
            Kind::Exec => Probe::Exec(exec::Exec::new(
                c.command.clone().ok_or_else(|| missing("command"))?,
            )),
        };
        let code = match &c.code {
            Some(code) => code.clone(),
            None => Name::new(kind.default_code()).expect("default codes are valid names"),
        };
        Ok(Self {
            probe,
            interval: c.interval,
            timeout: c.effective_timeout(),
            code,
            severity: c.severity.unwrap_or_else(|| kind.default_severity()),
            raise_on: c.raise_on.map_or(Status::Warning, config::Level::status),
            raise_after: c.raise_after,
            clear_after: c.clear_after,
            thresholds: c.effective_thresholds(kind),
            metric_prefix: c.effective_metric_prefix(kind),
            name: c.name,
        })
    }

    /// One run: the probe within the timeout, then the thresholds.
    async fn run(&self) -> CheckOutcome {
        let probe = AssertUnwindSafe(self.probe.run()).catch_unwind();
        let outcome = match tokio::time::timeout(self.timeout, probe).await {
            Err(_) => unknown(format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            )),
            Ok(Err(_)) => unknown("the check panicked".into()),
            Ok(Ok(outcome)) => outcome,
        };
        apply_thresholds(outcome, &self.thresholds)
    }
}

impl Probe {
    async fn run(&self) -> CheckOutcome {
        match self {
            Probe::System(p) => blocking(p.clone(), |p| p.collect()).await,
            Probe::Power(p) => blocking(p.clone(), |p| p.collect()).await,
            Probe::Process(p) => blocking(p.clone(), |p| p.collect()).await,
            Probe::FileAge(p) => blocking(p.clone(), |p| p.collect()).await,
            Probe::Tcp(p) => p.run().await,
            Probe::Http(p) => p.run().await,
            Probe::Exec(p) => p.run().await,
            #[cfg(test)]
            Probe::Panic => panic!("a probe crashed"),
        }
    }
}

/// Runs a file-system probe on a blocking thread: `/sys` reads can hang on bad hardware, and
/// a hung read must cost a thread, not the runtime.
async fn blocking<P: Send + 'static>(probe: P, collect: fn(&P) -> CheckOutcome) -> CheckOutcome {
    match tokio::task::spawn_blocking(move || collect(&probe)).await {
        Ok(outcome) => outcome,
        Err(e) => unknown(format!("the check failed: {e}")),
    }
}

fn unknown(message: String) -> CheckOutcome {
    CheckOutcome {
        status: Status::Unknown,
        message,
        metrics: Vec::new(),
    }
}

/// Worsens the status for every metric beyond its limits and says which, first.
fn apply_thresholds(
    mut outcome: CheckOutcome,
    thresholds: &[(MetricName, Threshold)],
) -> CheckOutcome {
    let mut violations = Vec::new();
    for (name, threshold) in thresholds {
        let Some(value) = outcome
            .metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
        else {
            continue;
        };
        if let (status, Some(limit)) = threshold.judge(value) {
            let op = match threshold.direction {
                config::Direction::Above => ">",
                config::Direction::Below => "<",
            };
            violations.push(format!("{name} {value} {op} {limit} ({})", status.as_str()));
            outcome.status = outcome.status.max(status);
        }
    }
    if !violations.is_empty() {
        outcome.message = format!("{}; {}", violations.join(", "), outcome.message);
    }
    outcome
}

#[cfg(test)]
mod tests;
