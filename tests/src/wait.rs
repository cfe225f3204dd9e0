//! Polling until a condition holds: the harness's answer to "is it ready yet?".

use std::future::Future;
use std::time::Duration;

/// How often [`wait_for`] and the readiness checks poll.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Calls `check` every 25 ms until it returns `Some(value)`, and returns that value.
///
/// Panics with `what` if `timeout` passes first. `what` should read as the expectation,
/// e.g. "the collector marks lz-cg-s001 offline".
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_the_first_some() {
        let calls = AtomicU32::new(0);
        let got = wait_for(Duration::from_secs(5), "three calls", || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for: never")]
    async fn panics_with_what_on_timeout() {
        wait_for(Duration::from_millis(60), "never", || async { None::<()> }).await;
    }
}
