//! The one delivery loop every output uses: an attempt, its entry in the notification log
//! and the metrics, then a wait from [`alarmnet_runtime::Backoff`] (doubling from the
//! output's `retry_delay`, at most [`MAX_RETRY_DELAY`]) until success or the last attempt.
//! Shutdown ends the wait; an output's task itself only says how to make one attempt.

use std::future::Future;
use std::time::Duration;

use alarmnet_runtime::Backoff;

use super::{Outgoing, OutputContext};
use crate::metrics::OutputEvent;
use crate::model::UnixMillis;

/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// How an output retries one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one.
    pub first_delay: Duration,
}

impl Retry {
    pub fn new(max_attempts: u32, first_delay: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            first_delay,
        }
    }

    /// One attempt, no retry (an output whose failures are not transient).
    pub fn once() -> Self {
        Self::new(1, Duration::ZERO)
    }

    /// The waits between attempts: exact (an operator reads them in the log), no jitter.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.first_delay.min(MAX_RETRY_DELAY), MAX_RETRY_DELAY)
    }
}

// Settings every HTTP output shares: their defaults, and the checks made at load with
// the key path of each problem.

pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
pub(crate) fn default_attempts() -> u32 {
    6
}
pub(crate) fn default_retry_delay() -> Duration {
    Duration::from_secs(1)
}
pub(crate) fn default_queue() -> usize {
    10_000
}

/// An `http://` or `https://` URL with a host, parsed once.
pub(crate) fn http_url(key: &str, url: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err(format!("{key}: {url:?} must be an http:// or https:// URL")),
        Err(e) => Err(format!("{key}: {url:?} is not a URL ({e})")),
    }
}

/// Every problem with an output's attempts, queue and timeout, under `at`.
pub(crate) fn check_delivery(
    at: &str,
    max_attempts: u32,
    queue: usize,
    timeout: Duration,
    errors: &mut Vec<String>,
) {
    if !(1..=100).contains(&max_attempts) {
        errors.push(format!("{at}.max_attempts: must be 1 to 100"));
    }
    if queue == 0 {
        errors.push(format!("{at}.queue: must be at least 1"));
    }
    if timeout.is_zero() {
        errors.push(format!("{at}.timeout: must be more than 0s"));
    }
}

/// Delivers one notification through `output`: calls `attempt` with the attempt's time
/// until it succeeds or `retry.max_attempts` have failed; logs and records every attempt.
/// Returns whether it was delivered (false also when shutdown interrupted a wait).
pub(crate) async fn deliver<F, Fut>(
    output: &str,
    alert: &Outgoing,
    retry: Retry,
    ctx: &OutputContext,
    mut attempt: F,
) -> bool
where
    F: FnMut(UnixMillis) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut backoff = retry.backoff();
    for n in 1..=retry.max_attempts {
        let at = (ctx.clock)();
        let result = attempt(at).await;
        let last = n == retry.max_attempts;
        ctx.record(output, alert, (n, last), at, result.clone())
            .await;
        match result {
            Ok(()) => {
                tracing::info!(
                    output, alert = %alert.id, status = ?alert.status, attempt = n,
                    "notification delivered"
                );
                ctx.outcome(output, OutputEvent::Sent);
                return true;
            }
            Err(error) if n < retry.max_attempts => {
                let wait = backoff.next_delay();
                tracing::warn!(
                    output, alert = %alert.id, attempt = n, %error,
                    retry_in = %humantime::format_duration(wait),
                    "notification attempt failed"
                );
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Err(error) => {
                tracing::error!(
                    output, alert = %alert.id, attempt = n, %error,
                    "notification given up after the last attempt"
                );
            }
        }
    }
    ctx.outcome(output, OutputEvent::Failed);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_and_cap() {
        let mut b = Retry::new(10, Duration::from_secs(1)).backoff();
        let d: Vec<u64> = (1..=10).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        let mut long = Retry::new(3, Duration::from_secs(600)).backoff();
        assert_eq!(long.next_delay(), MAX_RETRY_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_until_success_each_recorded() {
        let dir = tempfile::tempdir().expect("dir");
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        let store =
            crate::store::Store::open(&dir.path().join("s.db"), metrics.clone()).expect("store");
        let ctx = OutputContext {
            store: store.clone(),
            metrics,
            shutdown: tokio_util::sync::CancellationToken::new(),
            clock: crate::model::tokio_clock(UnixMillis::from_millis(1_764_330_000_000)),
        };
        let alert: Outgoing = super::super::tests_support::alert(
            "00000000000000a1",
            alarmnet_protocol::AlertStatus::Firing,
        )
        .into();
        let mut calls = 0;
        let mut times = Vec::new();
        let delivered = deliver(
            "hook",
            &alert,
            Retry::new(5, Duration::from_secs(1)),
            &ctx,
            |at| {
                calls += 1;
                times.push(at);
                let ok = calls == 3;
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err("HTTP 503".to_owned())
                    }
                }
            },
        )
        .await;
        assert!(delivered);
        assert_eq!(calls, 3);
        // Attempts are dated by the context's clock, which follows paused time.
        let t0 = UnixMillis::from_millis(1_764_330_000_000);
        let s = Duration::from_secs(1);
        assert_eq!(times, vec![t0, t0 + s, t0 + 3 * s]);
        let given_up = deliver("hook", &alert, Retry::once(), &ctx, |_| async {
            Err("closed".to_owned())
        })
        .await;
        assert!(!given_up);
    }
}
