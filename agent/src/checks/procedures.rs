//! Test procedures: `cmd test` of a kind runs the command the config names for it, in the
//! plugin convention: exit 0 pass, 1 or 2 fail, anything else (or a timeout) error; the
//! first line is the message, perfdata become the receipt's metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use alarmnet_protocol::{Metrics, Name, TestResult};

use super::config::{DEFAULT_TEST_TIMEOUT, TestConfig};
use super::exec::{Exit, parse_output, run_command};
use crate::health::{BoxFuture, TestOutcome, TestRunner};

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

    /// The kinds whose procedure forbids remote starts (`remote = false`): commands are
    /// refused for them (`remote_forbidden`); only their local schedule starts them.
    pub fn local_only(&self) -> BTreeSet<Name> {
        self.tests
            .iter()
            .filter(|(k, t)| !t.remote_allowed(k))
            .map(|(k, _)| k.clone())
            .collect()
    }

    async fn run_test(&self, test: Name) -> TestOutcome {
        let started = Instant::now();
        let Some(config) = self.tests.get(&test) else {
            return TestOutcome {
                result: TestResult::Error,
                duration_ms: 0,
                metrics: Metrics::new(),
                message: format!("no test procedure configured for kind `{test}`"),
            };
        };
        let timeout = config.timeout.unwrap_or(DEFAULT_TEST_TIMEOUT);
        let run = tokio::time::timeout(timeout, run_command(&config.command)).await;
        let (result, message, metrics) = match run {
            Err(_) => (
                TestResult::Error,
                format!("timed out after {}", humantime::format_duration(timeout)),
                Metrics::new(),
            ),
            Ok(Err(e)) => (TestResult::Error, e, Metrics::new()),
            Ok(Ok(run)) => {
                let output = parse_output(&run.stdout, &run.stderr);
                let mut metrics = Metrics::new();
                for (name, value) in output.metrics {
                    // Past 64 entries the rest are left out.
                    let _ = metrics.insert(name, value);
                }
                let (result, message) = match run.exit {
                    Exit::Code(0) => (TestResult::Pass, output.message),
                    Exit::Code(1 | 2) => (TestResult::Fail, output.message),
                    Exit::Code(code) => (
                        TestResult::Error,
                        format!("exit code {code}: {}", output.message),
                    ),
                    Exit::Signal(sig) => (
                        TestResult::Error,
                        format!("killed by signal {sig}: {}", output.message),
                    ),
                };
                (result, message, metrics)
            }
        };
        TestOutcome {
            result,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            metrics,
            message,
        }
    }
}

impl TestRunner for TestProcedures {
    fn run(&self, test: &Name) -> BoxFuture<'_, TestOutcome> {
        Box::pin(self.run_test(test.clone()))
    }
}
