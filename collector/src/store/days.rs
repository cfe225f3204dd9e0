//! Per-node daily summaries (`node_days`, schema 9): each finished day in the uptime time
//! zone, per node, as an [`uptime::Segment`](crate::uptime::Segment) made by the uptime
//! engine itself from the raw transitions, silences and blind intervals. Retention deletes
//! transitions only before days already summarized; uptime over those days is answered by
//! adding the summaries up ([`crate::uptime::combine`]).
//!
//! Design: a day is summarized once it is an hour past its end (silences are rarely set
//! after the fact, and the report would see the same inputs); the day's rows are computed
//! on a reader thread and written in one store call, with the mark that says how far the
//! summaries reach, so a crash never leaves half a day behind the mark.

use std::time::Duration;

use alarmnet_protocol::{Name, NodeId, NodePath};
use tokio_util::sync::CancellationToken;

use super::db::{Db, i64_of, ms_sql, ts_of, u64_of};
use super::history::Shard;
use super::nodes::NodeQuery;
use super::sql::args;
use super::{Store, StoreError};
use crate::model::UnixMillis;
use crate::uptime::{
    Filter, GroupBy, Query, ReportBuilder, Segment, TestTally, UptimeError, Window,
};

/// A day is summarized this long after its end.
const SETTLE: Duration = Duration::from_secs(3_600);

/// How far back the first summarizing run reaches (the longest report window).
const FIRST_REACH: Duration = Duration::from_secs(400 * 86_400);

const SUMMARIZED_UNTIL: &str = "summarized_until";
const PRUNED_BEFORE: &str = "pruned_before";

impl Db {
    fn mark(&self, name: &str) -> Result<Option<UnixMillis>, StoreError> {
        let v = self.conn().query_opt(
            "SELECT value FROM store_marks WHERE name = ?1",
            args![name],
            |r| r.get::<i64>(0),
        )?;
        Ok(v.map(ts_of))
    }

    /// Moves mark `name` to `value`, never back. (The old value is qualified: PostgreSQL
    /// reads a bare column of an upsert's `SET` as ambiguous with `excluded`'s.)
    fn set_mark(&self, name: &str, value: UnixMillis) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO store_marks (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE
                SET value = greatest(store_marks.value, excluded.value)",
            args![name, ms_sql(value)],
        )?;
        Ok(())
    }

    /// Days before this instant are in the daily summaries.
    pub fn summarized_until(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.mark(SUMMARIZED_UNTIL)
    }

    /// Transitions before this instant were pruned (each node's last one excepted).
    pub fn pruned_before(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.mark(PRUNED_BEFORE)
    }

    pub fn set_pruned_before(&self, at: UnixMillis) -> Result<(), StoreError> {
        self.set_mark(PRUNED_BEFORE, at)
    }

    /// The earliest stored transition (a full scan: used once, by the first summary run).
    fn first_transition_at(&self) -> Result<Option<UnixMillis>, StoreError> {
        let v = self
            .conn()
            .query_one("SELECT min(at) FROM transitions", args![], |r| {
                r.get::<Option<i64>>(0)
            })?;
        Ok(v.map(ts_of))
    }

    /// Every node's segment over `day`, computed by the uptime engine from the raw
    /// transitions, silences and blind intervals (as a report over the day would).
    pub fn day_segments(
        &self,
        day: Window,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Vec<(NodeId, Segment)>, StoreError> {
        let query = Query {
            window: day,
            now: day.to(),
            by: GroupBy::Node,
            filter: Filter::default(),
            outage_list: false,
            tz: tz.clone(),
        };
        let silences = self.silences(None)?;
        let blind: Vec<Window> = self
            .unwatched(day.from(), day.to())?
            .into_iter()
            .filter_map(|(from, to)| Window::new(from, to).ok())
            .collect();
        let mut builder = ReportBuilder::new(&query, &silences, &blind);
        let mut out = Vec::new();
        self.each_node_history(
            &NodeQuery::default(),
            (day.from(), day.to()),
            Shard::ALL,
            |path, kind, steps, tests| {
                let seg = builder
                    .segment(path, kind, steps, tests)
                    .map_err(|e: UptimeError| StoreError::Corrupt(format!("summary: {e}")))?;
                out.push((path.node.clone(), seg));
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Stores one day's segments (replacing any already stored for the day) and moves the
    /// summaries' mark to the day's end.
    pub fn store_day(&self, day: Window, rows: &[(NodeId, Segment)]) -> Result<(), StoreError> {
        for (node, s) in rows {
            self.conn().execute(
                "INSERT INTO node_days (node, day, day_end, up_ms, down_ms,
                     maintenance_ms, unknown_ms, outages, first_carried, first_ms, last_open,
                     last_ms, longest_ms, went_up, tests, tests_passed, tests_failed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                         ?17)
                 ON CONFLICT (node, day) DO UPDATE SET day_end = excluded.day_end,
                     up_ms = excluded.up_ms, down_ms = excluded.down_ms,
                     maintenance_ms = excluded.maintenance_ms,
                     unknown_ms = excluded.unknown_ms, outages = excluded.outages,
                     first_carried = excluded.first_carried, first_ms = excluded.first_ms,
                     last_open = excluded.last_open, last_ms = excluded.last_ms,
                     longest_ms = excluded.longest_ms, went_up = excluded.went_up,
                     tests = excluded.tests, tests_passed = excluded.tests_passed,
                     tests_failed = excluded.tests_failed",
                args![
                    node.as_str(),
                    ms_sql(day.from()),
                    ms_sql(day.to()),
                    i64_of(s.up_ms),
                    i64_of(s.down_ms),
                    i64_of(s.maintenance_ms),
                    i64_of(s.unknown_ms),
                    i64_of(s.outages),
                    s.first_carried,
                    i64_of(s.first_ms),
                    s.last_open,
                    i64_of(s.last_ms),
                    i64_of(s.longest_ms),
                    s.went_up,
                    i64_of(s.tests.run),
                    i64_of(s.tests.passed),
                    i64_of(s.tests.failed),
                ],
            )?;
        }
        self.set_mark(SUMMARIZED_UNTIL, day.to())
    }

    /// For each node matching `q` in `shard` (sorted like [`Db::each_node_history`]), its
    /// summarized days in `[from, to)`, oldest first.
    pub fn each_node_days(
        &self,
        q: &NodeQuery,
        (from, to): (UnixMillis, UnixMillis),
        shard: Shard,
        mut each: impl FnMut(&NodePath, &Name, &[Segment]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut segments = Vec::new();
        let mut nodes = Vec::new();
        self.each_node_path(q, shard, |path, kind| {
            nodes.push((path.clone(), kind.clone()));
            Ok(())
        })?;
        for (path, kind) in nodes {
            segments.clear();
            self.conn().each(
                "SELECT day, day_end, up_ms, down_ms, maintenance_ms, unknown_ms, outages,
                        first_carried, first_ms, last_open, last_ms, longest_ms, went_up,
                        tests, tests_passed, tests_failed
                 FROM node_days WHERE node = ?1 AND day >= ?2 AND day < ?3 ORDER BY day",
                args![path.node.as_str(), ms_sql(from), ms_sql(to)],
                |r| {
                    let n = |i: usize| -> Result<u64, StoreError> { Ok(u64_of(r.get(i)?)) };
                    segments.push(Segment {
                        from: ts_of(r.get(0)?),
                        to: ts_of(r.get(1)?),
                        up_ms: n(2)?,
                        down_ms: n(3)?,
                        maintenance_ms: n(4)?,
                        unknown_ms: n(5)?,
                        outages: n(6)?,
                        first_carried: r.get(7)?,
                        first_ms: n(8)?,
                        last_open: r.get(9)?,
                        last_ms: n(10)?,
                        longest_ms: n(11)?,
                        went_up: r.get(12)?,
                        tests: TestTally {
                            run: n(13)?,
                            passed: n(14)?,
                            failed: n(15)?,
                        },
                    });
                    Ok(())
                },
            )?;
            each(&path, &kind, &segments)?;
        }
        Ok(())
    }

    /// The nodes matching `q` in `shard`, sorted by region, site, node.
    fn each_node_path(
        &self,
        q: &NodeQuery,
        shard: Shard,
        mut each: impl FnMut(&NodePath, &Name) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut found = Vec::new();
        self.each_node_history(
            q,
            (UnixMillis::EPOCH, UnixMillis::EPOCH),
            shard,
            |path, kind, _, _| {
                found.push((path.clone(), kind.clone()));
                Ok(())
            },
        )?;
        for (path, kind) in &found {
            each(path, kind)?;
        }
        Ok(())
    }
}

/// Folds every finished day not yet summarized into the summaries. Returns how many
/// node-days were written.
pub async fn summarize(
    store: &Store,
    tz: &jiff::tz::TimeZone,
    now: UnixMillis,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    let (until, first) = store
        .call(|db| Ok((db.summarized_until()?, db.first_transition_at()?)))
        .await?;
    let start = match (until, first) {
        (Some(until), _) => until,
        (None, Some(first)) => first.max(now - FIRST_REACH),
        // Nothing to summarize yet; start from today.
        (None, None) => now,
    };
    let bad = |e: crate::uptime::ParamError| StoreError::Corrupt(e.to_string());
    let mut day = Window::day_of(start, tz).map_err(bad)?;
    if until.is_some_and(|u| day.from() != u) {
        // The mark is a day's start; a changed time zone makes it one no more.
        day = Window::new(start, Window::day_of(start, tz).map_err(bad)?.to()).map_err(bad)?;
    }
    let mut written = 0;
    while day.to() + SETTLE <= now && !shutdown.is_cancelled() {
        let zone = tz.clone();
        let rows = store.read(move |db| db.day_segments(day, &zone)).await?;
        written += rows.len() as u64;
        store.call(move |db| db.store_day(day, &rows)).await?;
        day = Window::day_of(day.to(), tz).map_err(bad)?;
    }
    // With no transitions at all, mark today's start: there is nothing older to keep.
    if until.is_none() && first.is_none() {
        let from = day.from();
        store
            .call(move |db| db.set_mark(SUMMARIZED_UNTIL, from))
            .await?;
    }
    Ok(written)
}
