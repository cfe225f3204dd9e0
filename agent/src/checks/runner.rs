//! Runs the checks: one task per check on its own interval, hysteresis per check, and the
//! latest results kept where a heartbeat can take them at once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use alarmnet_protocol::{CheckCounts, FaultKey, FaultStatus, MetricName, Metrics, Name};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Check;
use super::hysteresis::{Hysteresis, Transition};
use crate::health::{BoxFuture, CheckOutcome, FaultEvent, Health, HealthSnapshot, Status};

/// The most characters of a fault message (the protocol's limit).
const MAX_MESSAGE: usize = 1024;

/// The running checks, as the session sees them.
#[derive(Debug)]
pub(super) struct Runner {
    checks: Vec<Check>,
    /// Per check: its hysteresis. Held for a whole run, so a periodic run and a `check`
    /// command never overlap for one check and its runs are counted in order.
    runs: Vec<tokio::sync::Mutex<Hysteresis>>,
    // Design: a std `Mutex`, never held across an `.await`: `snapshot` must answer at once
    // and the critical sections are a few assignments.
    shared: Mutex<Shared>,
    events: mpsc::Sender<FaultEvent>,
    overflow_logged: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    latest: Vec<Option<CheckOutcome>>,
    active: BTreeSet<FaultKey>,
}

impl Runner {
    pub(super) fn spawn(
        checks: Vec<Check>,
        events: mpsc::Sender<FaultEvent>,
        shutdown: CancellationToken,
    ) -> Arc<dyn Health> {
        let runner = Arc::new(Self::new(checks, events));
        for index in 0..runner.checks.len() {
            let span = tracing::info_span!("check", name = %runner.checks[index].name);
            let task = Arc::clone(&runner).run_periodically(index, shutdown.clone());
            tokio::spawn(task.instrument(span));
        }
        runner
    }

    fn new(checks: Vec<Check>, events: mpsc::Sender<FaultEvent>) -> Self {
        let runs = checks
            .iter()
            .map(|c| tokio::sync::Mutex::new(Hysteresis::new(c.raise_after, c.clear_after)))
            .collect();
        let shared = Shared {
            latest: vec![None; checks.len()],
            active: BTreeSet::new(),
        };
        Self {
            checks,
            runs,
            shared: Mutex::new(shared),
            events,
            overflow_logged: AtomicBool::new(false),
        }
    }

    async fn run_periodically(self: Arc<Self>, index: usize, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.checks[index].interval);
        // A run that overran (or a busy node) shifts the schedule instead of bursting.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.run_check(index) => {}
            }
        }
    }

    /// Runs one check, records the result and sends the fault event it caused, if any.
    async fn run_check(&self, index: usize) {
        let check = &self.checks[index];
        let mut hysteresis = self.runs[index].lock().await;
        let outcome = check.run().await;
        let failing = outcome.status >= check.raise_on;
        let transition = hysteresis.observe(failing);
        tracing::debug!(status = outcome.status.as_str(), message = %outcome.message, "check ran");
        let event = transition.map(|t| FaultEvent {
            ts_ms: now_ms(),
            check: check.name.clone(),
            code: check.code.clone(),
            severity: check.severity,
            status: match t {
                Transition::Raise => FaultStatus::Raised,
                Transition::Clear => FaultStatus::Cleared,
            },
            message: truncate(format!("{}: {}", outcome.status.as_str(), outcome.message)),
        });
        self.lock().latest[index] = Some(outcome);
        let Some(event) = event else { return };
        let key = event.key();
        tracing::info!(fault = %key, status = ?event.status, "fault changed");
        // The event goes out before the heartbeat lists the fault as active.
        if self.events.send(event).await.is_err() {
            tracing::debug!("fault event channel closed");
        }
        let mut shared = self.lock();
        match transition {
            Some(Transition::Raise) => shared.active.insert(key),
            _ => shared.active.remove(&key),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // The state stays consistent even if a holder panicked: each field is replaced whole.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Health for Runner {
    fn check_names(&self) -> Vec<Name> {
        self.checks.iter().map(|c| c.name.clone()).collect()
    }

    fn snapshot(&self) -> HealthSnapshot {
        let shared = self.lock();
        let mut metrics = Metrics::new();
        let mut counts = CheckCounts::default();
        let mut left_out = 0usize;
        for (check, outcome) in self.checks.iter().zip(&shared.latest) {
            let Some(outcome) = outcome else { continue };
            let count = match outcome.status {
                Status::Ok => &mut counts.ok,
                Status::Warning => &mut counts.warning,
                Status::Critical => &mut counts.critical,
                Status::Unknown => &mut counts.unknown,
            };
            *count += 1;
            for (name, value) in &outcome.metrics {
                let name = if check.metric_prefix.is_empty() {
                    Ok(name.clone())
                } else {
                    MetricName::new(format!("{}{name}", check.metric_prefix))
                };
                let inserted = name
                    .map_err(|e| e.to_string())
                    .and_then(|name| metrics.insert(name, *value));
                if inserted.is_err() {
                    left_out += 1;
                }
            }
        }
        if left_out > 0 && !self.overflow_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                left_out,
                max = Metrics::MAX,
                "heartbeat metrics over the limit or with names too long: some are left out"
            );
        }
        HealthSnapshot {
            metrics,
            counts,
            faults: shared.active.iter().cloned().collect(),
        }
    }

    fn run_all_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            futures_util::future::join_all((0..self.checks.len()).map(|i| self.run_check(i))).await;
        })
    }
}

fn truncate(mut s: String) -> String {
    if let Some((cut, _)) = s.char_indices().nth(MAX_MESSAGE) {
        s.truncate(cut);
    }
    s
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
