//! Retention: how long history is kept, and the pruning that enforces it.
//!
//! Design: pruning deletes in small batches (`[retention] batch` rows per transaction,
//! oldest first), each its own store call, so the store thread interleaves the core's
//! commits between them and a large first prune never holds the writer for long. Before
//! transitions are deleted, every whole day (in the uptime time zone) they cover is folded
//! into the per-node daily summaries (`node_days`, see [`super::days`]), so uptime over old
//! whole-day windows stays exact.

use std::time::Duration;

use serde::Deserialize;

use super::sql::args;
use super::{Db, StoreError};
use crate::model::UnixMillis;

/// `[retention]`: how long each kind of history is kept. `"0s"` keeps it for ever.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Resolved alerts (with their acknowledgements), by when they ended. Firing alerts are
    /// never pruned.
    #[serde(with = "humantime_serde")]
    pub alerts: Duration,
    /// Liveness transitions, by time. Older days live on in the per-node daily summaries:
    /// uptime over whole days stays exact, a window starting inside pruned history on a
    /// day's edge is answered from them, anything else there is refused with a clear error.
    #[serde(with = "humantime_serde")]
    pub transitions: Duration,
    /// Test receipts (self-tests and drill answers), by when they were received.
    #[serde(with = "humantime_serde")]
    pub test_receipts: Duration,
    /// The notification log (every delivery attempt of every output), by attempt time.
    #[serde(with = "humantime_serde")]
    pub notifications: Duration,
    /// The audit log of operator actions, by time. Long enough for an annual review; raise
    /// it where rules ask to keep operator actions longer.
    #[serde(with = "humantime_serde")]
    pub audit: Duration,
    /// How often the pruning task runs.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows deleted per store transaction; smaller keeps the writer freer for the core.
    pub batch: usize,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            alerts: DAY * 400,
            transitions: DAY * 400,
            test_receipts: DAY * 400,
            notifications: DAY * 90,
            audit: DAY * 400,
            interval: Duration::from_secs(3_600),
            batch: 2_000,
        }
    }
}

impl RetentionConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.interval < Duration::from_secs(1) {
            out.push("retention.interval: must be at least 1s".to_owned());
        }
        if !(1..=1_000_000).contains(&self.batch) {
            out.push("retention.batch: must be 1 to 1000000 rows".to_owned());
        }
        for (key, age) in [
            ("alerts", self.alerts),
            ("transitions", self.transitions),
            ("test_receipts", self.test_receipts),
            ("notifications", self.notifications),
            ("audit", self.audit),
        ] {
            if !age.is_zero() && age < DAY {
                out.push(format!(
                    "retention.{key}: keep at least 1d (or \"0s\" to keep for ever)"
                ));
            }
        }
        out
    }

    /// The cut-off of `age` at `now`: rows older than it go. `None`: kept for ever.
    pub fn cutoff(age: Duration, now: UnixMillis) -> Option<UnixMillis> {
        if age.is_zero() {
            return None;
        }
        Some(now - age)
    }
}

/// What one kind of history is, for pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Alerts,
    Transitions,
    TestReceipts,
    Notifications,
    Audit,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Alerts,
        Kind::Transitions,
        Kind::TestReceipts,
        Kind::Notifications,
        Kind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Alerts => "alerts",
            Kind::Transitions => "transitions",
            Kind::TestReceipts => "test_receipts",
            Kind::Notifications => "notifications",
            Kind::Audit => "audit",
        }
    }

    pub fn age(self, c: &RetentionConfig) -> Duration {
        match self {
            Kind::Alerts => c.alerts,
            Kind::Transitions => c.transitions,
            Kind::TestReceipts => c.test_receipts,
            Kind::Notifications => c.notifications,
            Kind::Audit => c.audit,
        }
    }
}

impl Db {
    /// Caps the database at its current size plus `extra` pages (`None`: no cap): every
    /// commit that needs more fails with `SQLITE_FULL`, as on a full disk. For tests.
    ///
    /// SQLite only: on PostgreSQL there is no page cap to set, and this fails with
    /// [`StoreError::Corrupt`] saying so (a test relying on it cannot run there).
    #[doc(hidden)]
    pub fn cap_pages_for_tests(&self, extra: Option<u64>) -> Result<(), StoreError> {
        let Some(conn) = self.conn().as_sqlite() else {
            return Err(StoreError::Corrupt(
                "capping the database's pages works only on SQLite".into(),
            ));
        };
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let cap = match extra {
            Some(extra) => pages + i64::try_from(extra).unwrap_or(0),
            None => 1_073_741_823,
        };
        conn.query_row(&format!("PRAGMA max_page_count = {cap}"), [], |_| Ok(()))?;
        Ok(())
    }

    /// Deletes at most `limit` rows of `kind` older than `before`, oldest first. Returns
    /// how many went (fewer than `limit`: nothing older is left).
    pub fn prune(&self, kind: Kind, before: UnixMillis, limit: usize) -> Result<usize, StoreError> {
        let before = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let conn = self.conn();
        let n = match kind {
            // Alerts that ended at the same instant go in row order, so both statements
            // pick the same alerts.
            Kind::Alerts => {
                conn.execute(
                    "DELETE FROM acks WHERE (alert_id, started_at) IN (
                        SELECT id, started_at FROM alerts
                        WHERE status = 'resolved' AND ended_at < ?1
                        ORDER BY ended_at, row_id LIMIT ?2)",
                    args![before, limit],
                )?;
                conn.execute(
                    "DELETE FROM alerts WHERE row_id IN (
                        SELECT row_id FROM alerts
                        WHERE status = 'resolved' AND ended_at < ?1
                        ORDER BY ended_at, row_id LIMIT ?2)",
                    args![before, limit],
                )?
            }
            // Each node's last transition before the cut-off stays: it is the node's state
            // at the cut-off, which every later window starts from.
            Kind::Transitions => conn.execute(
                "DELETE FROM transitions WHERE id IN (
                    SELECT t.id FROM transitions t WHERE t.at < ?1
                      AND EXISTS (SELECT 1 FROM transitions u
                                  WHERE u.node = t.node AND u.at < ?1
                                    AND (u.at, u.id) > (t.at, t.id))
                    ORDER BY t.id LIMIT ?2)",
                args![before, limit],
            )?,
            Kind::TestReceipts => conn.execute(
                "DELETE FROM test_receipts WHERE id IN (
                    SELECT id FROM test_receipts WHERE received_at < ?1 ORDER BY id LIMIT ?2)",
                args![before, limit],
            )?,
            // The outbox goes with the log of its attempts.
            Kind::Notifications => {
                let notices = conn.execute(
                    "DELETE FROM notices WHERE id IN (
                        SELECT id FROM notices WHERE at < ?1 ORDER BY id LIMIT ?2)",
                    args![before, limit],
                )?;
                let attempts = conn.execute(
                    "DELETE FROM notification_log WHERE id IN (
                        SELECT id FROM notification_log WHERE at < ?1 ORDER BY id LIMIT ?2)",
                    args![before, limit],
                )?;
                notices.max(attempts)
            }
            Kind::Audit => conn.execute(
                "DELETE FROM audit WHERE id IN (
                    SELECT id FROM audit WHERE at < ?1 ORDER BY id LIMIT ?2)",
                args![before, limit],
            )?,
        };
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// The pruning task: every `interval`, folds finished days (as of `clock`) into the daily
/// summaries, then deletes what is older than each kind's age, in batches. Runs until `shutdown`; store
/// errors are logged and tried again at the next round (a full disk must not stop it:
/// deleting is how it helps).
pub async fn run(
    store: super::Store,
    config: RetentionConfig,
    tz: jiff::tz::TimeZone,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    clock: crate::model::Clock,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use std::sync::atomic::Ordering::Relaxed;
    // The first round a minute after start: restoring state comes first.
    let mut next = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + config.interval;
        let now = clock();
        match super::days::summarize(&store, &tz, now, &shutdown).await {
            Ok(n) => {
                metrics.days_summarized.fetch_add(n, Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot fold finished days into the daily summaries");
                continue;
            }
        }
        for (i, kind) in Kind::ALL.iter().enumerate() {
            let Some(mut before) = RetentionConfig::cutoff(kind.age(&config), now) else {
                continue;
            };
            if *kind == Kind::Transitions {
                // Only whole days (in the uptime zone) already in the summaries.
                match crate::uptime::Window::day_of(before, &tz) {
                    Ok(day) => before = day.from(),
                    Err(_) => continue,
                }
                // Nor what invalidated summaries still need to be computed again from.
                let marks = store
                    .call(|db| Ok((db.summarized_until()?, db.summaries_redo_from()?)))
                    .await;
                match marks.map(|(until, redo)| until.map(|u| redo.map_or(u, |r| u.min(r)))) {
                    Ok(Some(until)) => before = before.min(until),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "retention: cannot read the summaries' mark");
                        continue;
                    }
                }
            }
            let mut total = 0;
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let (kind, limit) = (*kind, config.batch);
                match store.call(move |db| db.prune(kind, before, limit)).await {
                    Ok(n) => {
                        total += n;
                        metrics.retention_pruned[i].fetch_add(n as u64, Relaxed);
                        if n < limit {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(kind = kind.as_str(), error = %e, "retention: prune failed");
                        break;
                    }
                }
                // Let the core's commits through between batches.
                tokio::task::yield_now().await;
            }
            if *kind == Kind::Transitions && total > 0 {
                let _ = store.call(move |db| db.set_pruned_before(before)).await;
            }
            if total > 0 {
                tracing::info!(kind = kind.as_str(), rows = total, "retention: pruned");
            }
        }
    }
}
