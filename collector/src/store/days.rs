//! Per-node daily summaries (`node_days`, schema 10): each finished day in the uptime time
//! zone, per node, as an [`uptime::Segment`](crate::uptime::Segment) made by the uptime
//! engine itself from the raw transitions, silences, blind intervals and test receipts.
//! The days summarized are listed in `summary_days` (schema 12). An uptime report adds up
//! the summaries of the whole days inside its window ([`crate::uptime::combine`]) and
//! reads transitions only for the partial days at its edges; retention deletes
//! transitions only before days already summarized.
//!
//! # Blocks
//! `node_days` also holds blocks: a node's summary over 2, 4, 8 … 512 consecutive
//! summarized days, merged from its two halves ([`Segment::then`], exact for any
//! grouping), listed in `summary_blocks` once built. A report reads the fewest rows that
//! make up its whole days ([`cover`]): about six a node for 30 days instead of thirty,
//! which is what the read costs (rows sent and decoded), on PostgreSQL most of all. A
//! block is keyed by its span like a day, so every invalidation below deletes the blocks
//! over the days it deletes; a block is built in one transaction from the rows there, and
//! built again after its days are recomputed.
//!
//! # Exactness
//! A summary must stay what the raw transitions say of its day, or a report would differ
//! from the transition-by-transition answer. What a node's day depends on, and what keeps
//! it true when that changes:
//! - its transitions and test receipts: one written with a time before the summaries'
//!   reach (late: a replayed spool, a judgement dated back) deletes the node's rows from
//!   that day on (a transition changes every later day's starting state; a test only its
//!   day);
//! - the silences matching it: creating, changing or ending one over summarized time
//!   deletes the rows of the nodes it matches (before and after) for the days it covered
//!   or covers;
//! - its region, site and kind, through the silences they match: a move deletes its rows
//!   for the days of the silences matching the old or the new place;
//! - the run log (the runs that watched its region, `runs.rs`): a run found crashed, a run
//!   alive again after it counted as stopped, a run dated back, or blind edges, dated
//!   before the reach delete every node's rows from then on; a node moved to another
//!   region, once region shards have run, deletes its rows from the first shard's run on
//!   (its region decides whose runs count);
//! - the time zone: nothing (a segment is a span, not a date); `summary_days` keeps the
//!   spans as they were cut, and a window uses the whole ones inside it.
//!
//! A report reads a node whose rows do not cover the summarized part of its window
//! exactly (deleted, or registered after those days were summarized) from its raw
//! transitions. The next summarizing round recomputes every node's rows from the earliest
//! deleted day (`summaries_redo_from`) on. Days before `pruned_before` are history: their
//! transitions are gone, so nothing deletes or recomputes their rows any more.
//!
//! Design: a day is summarized once it is an hour past its end, on a reader thread, and
//! written in one store call with its span and the mark that says how far the summaries
//! reach, so a crash never leaves half a day behind the mark. Before reading, the reach
//! moves to the day's end, so a late write into the day being read counts as an
//! invalidation; every invalidation bumps `summaries_epoch`, and rows computed from a
//! snapshot older than the last bump are dropped instead of written (the next round reads
//! again).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, SiteId};
use tokio_util::sync::CancellationToken;

use super::db::{Db, i64_of, id, ms_sql, ts_of, u64_of};
use super::history::Shard;
use super::lists::ts_int;
use super::nodes::NodeQuery;
use super::sql::{Dialect, Row, Value, args, join_each};
use super::{Store, StoreError};
use crate::model::{Silence, UnixMillis};
use crate::uptime::{
    Filter, GroupBy, Query, ReportBuilder, Segment, TestTally, UptimeError, Window,
};

/// A day is summarized this long after its end.
const SETTLE: Duration = Duration::from_secs(3_600);

/// How far back the first summarizing run reaches (the longest report window).
const FIRST_REACH: Duration = Duration::from_secs(400 * 86_400);

const SUMMARIZED_UNTIL: &str = "summarized_until";
const PRUNED_BEFORE: &str = "pruned_before";
/// Writes dated before this invalidate summaries: `summarized_until`, or the end of the
/// day being summarized.
const REACH: &str = "summaries_reach";
/// The earliest instant whose summaries were invalidated and not recomputed yet.
const REDO_FROM: &str = "summaries_redo_from";
/// Bumped by every invalidation.
const EPOCH: &str = "summaries_epoch";

/// Whose summaries a late write invalidates.
#[derive(Debug, Clone, Copy)]
pub(super) enum Whose<'a> {
    Node(&'a NodeId),
    /// The nodes a silence matches.
    Matching(&'a Silence),
    All,
}

/// Every node's [`Segment`] over one summarized span.
pub type DayRows = Vec<(NodeId, Segment)>;

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

    /// Moves mark `name` to `value`, never forward.
    fn lower_mark(&self, name: &str, value: UnixMillis) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO store_marks (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE
                SET value = least(store_marks.value, excluded.value)",
            args![name, ms_sql(value)],
        )?;
        Ok(())
    }

    fn epoch(&self) -> Result<i64, StoreError> {
        let v = self.conn().query_opt(
            "SELECT value FROM store_marks WHERE name = ?1",
            args![EPOCH],
            |r| r.get::<i64>(0),
        )?;
        Ok(v.unwrap_or(0))
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

    /// Summaries from this instant on were invalidated and are not recomputed yet:
    /// retention keeps the transitions after it.
    pub fn summaries_redo_from(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.mark(REDO_FROM)
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

    /// The summaries of `whose` over `[from, to)` no longer hold: deletes their rows, and
    /// marks the time for the next summarizing round to recompute. Nothing before
    /// `pruned_before` (that history is final) or after the summaries' reach.
    pub(super) fn invalidate_summaries(
        &self,
        whose: Whose<'_>,
        from: UnixMillis,
        to: Option<UnixMillis>,
    ) -> Result<(), StoreError> {
        let Some(reach) = self.mark(REACH)? else {
            return Ok(());
        };
        let from = from.max(self.pruned_before()?.unwrap_or(UnixMillis::EPOCH));
        let to = to.unwrap_or(reach).min(reach);
        if from >= to {
            return Ok(());
        }
        let span = [ts_int(from), ts_int(to)];
        match whose {
            Whose::Node(node) => {
                self.conn().execute(
                    "DELETE FROM node_days WHERE node = ?1 AND day_end > ?2 AND day < ?3",
                    args![node.as_str(), ms_sql(from), ms_sql(to)],
                )?;
            }
            Whose::Matching(s) => {
                // The node column leads node_days' key: one range per matching node.
                let text = |v: Option<&str>| Value::from(v.map(str::to_owned));
                let mut values = vec![
                    text(s.region.as_ref().map(|x| x.as_str())),
                    text(s.site.as_ref().map(|x| x.as_str())),
                    text(s.node.as_ref().map(|x| x.as_str())),
                    text(s.kind.as_ref().map(|x| x.as_str())),
                ];
                values.extend(span);
                self.conn().execute(
                    "DELETE FROM node_days WHERE node IN (
                        SELECT node FROM nodes
                        WHERE (CAST(?1 AS TEXT) IS NULL OR region = ?1)
                          AND (CAST(?2 AS TEXT) IS NULL OR site = ?2)
                          AND (CAST(?3 AS TEXT) IS NULL OR node = ?3)
                          AND (CAST(?4 AS TEXT) IS NULL OR kind = ?4))
                       AND day_end > ?5 AND day < ?6",
                    &values,
                )?;
            }
            Whose::All => {
                self.conn().execute(
                    "DELETE FROM node_days WHERE node IN (SELECT node FROM nodes)
                       AND day_end > ?1 AND day < ?2",
                    &span,
                )?;
            }
        }
        // From the start of the span it falls in: retention keeps what recomputing needs.
        let start = self.conn().query_one(
            "SELECT max(day) FROM summary_days WHERE day <= ?1",
            args![ms_sql(from)],
            |r| r.get::<Option<i64>>(0),
        )?;
        self.lower_mark(REDO_FROM, start.map_or(from, ts_of))?;
        self.conn().execute(
            "INSERT INTO store_marks (name, value) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET value = store_marks.value + 1",
            args![EPOCH],
        )?;
        Ok(())
    }

    /// Writes dated before this instant may change summaries (`None`: none exist).
    pub(super) fn summaries_reach(&self) -> Result<Option<UnixMillis>, StoreError> {
        self.mark(REACH)
    }

    /// Every node's segment over `span` (a day), computed by the uptime engine from the
    /// raw transitions, silences and blind intervals (as a report over it would), and the
    /// invalidation epoch of the snapshot it was read in.
    pub fn day_segments(&self, span: Window) -> Result<(DayRows, i64), StoreError> {
        let query = Query {
            window: span,
            now: span.to(),
            by: GroupBy::Node,
            filter: Filter::default(),
            outage_list: false,
            // Segments carry no instants to write: any zone does.
            tz: jiff::tz::TimeZone::UTC,
        };
        let epoch = self.epoch()?;
        let silences = self.silences(None)?;
        // Read at least `SETTLE` after the day (see `summarize`): a run silent since before
        // the day's end is not running by then, whatever the clock says now.
        let unwatched = self.unwatched(span.from(), span.to(), span.to() + SETTLE)?;
        let mut builder = ReportBuilder::with_unwatched(&query, &silences, &unwatched);
        let mut out = Vec::new();
        self.each_node_span(
            &NodeQuery::default(),
            (span.from(), span.to()),
            Shard::ALL,
            |path, kind, steps, tests| {
                let seg = builder
                    .segment(path, kind, steps, tests)
                    .map_err(|e: UptimeError| StoreError::Corrupt(format!("summary: {e}")))?;
                out.push((path.node.clone(), seg));
                Ok(())
            },
        )?;
        Ok((out, epoch))
    }

    /// Stores one day's segments (replacing any already stored for the day), lists its
    /// span and moves the summaries' mark to its end; unless a summary was invalidated
    /// since `epoch` (the rows may be stale): then writes nothing and returns `false`.
    pub fn store_day(
        &self,
        day: Window,
        rows: &[(NodeId, Segment)],
        epoch: i64,
    ) -> Result<bool, StoreError> {
        if self.epoch()? != epoch {
            return Ok(false);
        }
        self.store_rows(day, rows)?;
        self.conn().execute(
            "INSERT INTO summary_days (day, day_end) VALUES (?1, ?2)
             ON CONFLICT (day) DO UPDATE SET day_end = excluded.day_end",
            args![ms_sql(day.from()), ms_sql(day.to())],
        )?;
        self.set_mark(SUMMARIZED_UNTIL, day.to())?;
        self.set_mark(REACH, day.to())?;
        Ok(true)
    }

    fn store_rows(&self, day: Window, rows: &[(NodeId, Segment)]) -> Result<(), StoreError> {
        for (node, s) in rows {
            self.conn().execute(
                "INSERT INTO node_days (node, day, day_end, up_ms, down_ms,
                     maintenance_ms, unknown_ms, outages, first_carried, first_ms, last_open,
                     last_ms, longest_ms, went_up, tests, tests_passed, tests_failed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                         ?17)
                 ON CONFLICT (node, day, day_end) DO UPDATE SET up_ms = excluded.up_ms, down_ms = excluded.down_ms,
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
        Ok(())
    }

    /// Replaces the rows of a summarized span recomputed after an invalidation; `false`
    /// (nothing written) when another invalidation came since `epoch`.
    fn restore_day(
        &self,
        day: Window,
        rows: &[(NodeId, Segment)],
        epoch: i64,
    ) -> Result<bool, StoreError> {
        if self.epoch()? != epoch {
            return Ok(false);
        }
        self.store_rows(day, rows)?;
        Ok(true)
    }

    /// Ends a recomputation that saw no invalidation since `epoch`.
    fn redo_done(&self, epoch: i64) -> Result<bool, StoreError> {
        if self.epoch()? != epoch {
            return Ok(false);
        }
        self.conn()
            .execute("DELETE FROM store_marks WHERE name = ?1", args![REDO_FROM])?;
        Ok(true)
    }

    /// The summarized spans ending after `from`, oldest first.
    fn summary_days_after(&self, from: UnixMillis) -> Result<Vec<Window>, StoreError> {
        self.conn().query(
            "SELECT day, day_end FROM summary_days WHERE day_end > ?1 ORDER BY day",
            args![ms_sql(from)],
            |r| {
                Window::new(ts_of(r.get(0)?), ts_of(r.get(1)?))
                    .map_err(|e| StoreError::Corrupt(format!("summary_days: {e}")))
            },
        )
    }

    /// The fewest summary rows that make up `[from, to)` (whole summarized days): see
    /// [`cover`].
    pub fn summary_cover(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Window>, StoreError> {
        let days = self.summary_days_after(from)?;
        Ok(cover(&days, &self.summary_blocks()?, (from, to)))
    }

    /// The blocks of summaries built, by span.
    fn summary_blocks(&self) -> Result<HashSet<(UnixMillis, UnixMillis)>, StoreError> {
        let rows = self
            .conn()
            .query("SELECT day, day_end FROM summary_blocks", args![], |r| {
                Ok((ts_of(r.get(0)?), ts_of(r.get(1)?)))
            })?;
        Ok(rows.into_iter().collect())
    }

    /// Builds every node's summary over `block` from its rows over `halves` (which make it
    /// up; a node lacking one gets none), replacing any, and lists the block. Returns how
    /// many rows were written. Read and written in one transaction: a late write deletes
    /// the rows it makes stale, before or after, never between.
    fn build_block(&self, block: Window, [a, b]: [Window; 2]) -> Result<u64, StoreError> {
        let half = |t: &str, day: usize| {
            let on = format!(
                "{t}.node = n.node AND {t}.day = ?{day} AND {t}.day_end = ?{}",
                day + 1
            );
            join_each(self.conn().dialect(), "JOIN", "node_days", t, &on)
        };
        let sql = format!(
            "SELECT n.node, {}, {} FROM nodes n {} {}",
            segment_columns("a"),
            segment_columns("b"),
            half("a", 1),
            half("b", 3)
        );
        let rows = self.conn().query(
            &sql,
            args![
                ms_sql(a.from()),
                ms_sql(a.to()),
                ms_sql(b.from()),
                ms_sql(b.to())
            ],
            |r| {
                let node = id("node", r.get(0)?, NodeId::new)?;
                let second = 1 + SEGMENT_COLUMNS.len();
                Ok((node, segment(r, 1)?.then(&segment(r, second)?)))
            },
        )?;
        self.store_rows(block, &rows)?;
        self.conn().execute(
            "INSERT INTO summary_blocks (day, day_end) VALUES (?1, ?2)
             ON CONFLICT (day, day_end) DO NOTHING",
            args![ms_sql(block.from()), ms_sql(block.to())],
        )?;
        Ok(rows.len() as u64)
    }

    /// The part of `[from, until)` made of whole summarized spans, `[a, b)` with
    /// `from <= a < b <= until`, if any. (The spans follow one another without a gap:
    /// each round continues where the last ended.)
    pub fn summarized_within(
        &self,
        from: UnixMillis,
        until: UnixMillis,
    ) -> Result<Option<(UnixMillis, UnixMillis)>, StoreError> {
        let a = self.conn().query_one(
            "SELECT min(day) FROM summary_days WHERE day >= ?1",
            args![ms_sql(from)],
            |r| r.get::<Option<i64>>(0),
        )?;
        let b = self.conn().query_one(
            "SELECT max(day_end) FROM summary_days WHERE day_end <= ?1",
            args![ms_sql(until)],
            |r| r.get::<Option<i64>>(0),
        )?;
        Ok(match (a.map(ts_of), b.map(ts_of)) {
            (Some(a), Some(b)) if a < b => Some((a, b)),
            _ => None,
        })
    }

    /// For each node matching `q` in `shard`, its summaries that make up `[from, to)` (whole
    /// summarized days): consecutive segments, oldest first, read from the fewest rows
    /// ([`cover`]: blocks where they are built, days between), possibly merged already
    /// ([`Segment::then`]). A node lacking a row of them gives segments that do not reach
    /// from `from` to `to`, or none.
    ///
    /// Each engine reads the rows in the order its key keeps them. SQLite's key leads with
    /// the node: one query joins every node to its rows, streamed node by node. PostgreSQL's
    /// leads with the span (PostgreSQL migration 8): one index range a span, over every
    /// node, each node's rows merged as its spans arrive. Read by node, PostgreSQL read
    /// each node's whole index range in the window rather than seek the spans it needs
    /// (its estimate; eight seeks a node measured slower still), about 0.4 µs a row.
    pub fn each_node_days(
        &self,
        q: &NodeQuery,
        (from, to): (UnixMillis, UnixMillis),
        shard: Shard,
        each: impl FnMut(&NodePath, &Name, &[Segment]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let spans = self.summary_cover(from, to)?;
        match self.conn().dialect() {
            Dialect::Sqlite => self.each_node_days_by_node(q, &spans, shard, each),
            Dialect::Postgres => self.each_node_days_by_span(q, &spans, shard, each),
        }
    }

    /// [`Self::each_node_days`] in one query, streamed node by node (sorted like
    /// [`Db::each_node_history`]).
    fn each_node_days_by_node(
        &self,
        q: &NodeQuery,
        spans: &[Window],
        shard: Shard,
        mut each: impl FnMut(&NodePath, &Name, &[Segment]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let wanted: HashSet<(i64, i64)> = spans
            .iter()
            .map(|w| (ms_sql(w.from()), ms_sql(w.to())))
            .collect();
        let c = shard.conditions(q);
        // The rows are looked up by their starts, then picked by their ends: the unary `+`
        // keeps the ends out of the index lookup, where SQLite would seek every start with
        // every end. A start and an end of two different spans may make a third: the
        // exact spans are picked here. A node's rows are put in order here too: ordering
        // them in SQL made SQLite sort all of them in a temporary b-tree (twice the time of
        // the whole read), though its key gives them in order.
        let list = vec!["?"; spans.len().max(1)].join(", ");
        let mut spans_values: Vec<Value<'_>> = spans.iter().map(|w| ts_int(w.from())).collect();
        spans_values.extend(spans.iter().map(|w| ts_int(w.to())));
        if spans.is_empty() {
            spans_values.extend([Value::Null, Value::Null]);
        }
        // The nodes are put in order before the join, which then keeps it.
        let sql = format!(
            "SELECT n.region, n.site, n.node, n.kind, {}
             FROM (SELECT nodes.region, nodes.site, nodes.node, nodes.kind FROM nodes{}
                   ORDER BY nodes.region, nodes.site, nodes.node) AS n
                LEFT JOIN node_days d
                ON d.node = n.node AND d.day IN ({list}) AND +d.day_end IN ({list})
             ORDER BY n.region, n.site, n.node",
            segment_columns("d"),
            c.sql(),
        );
        let values = [c.values(), &spans_values].concat();
        self.each_by_node(
            &sql,
            &values,
            |r| match r.get::<Option<i64>>(4)? {
                Some(day) if wanted.contains(&(day, r.get(5)?)) => segment(r, 4).map(Some),
                _ => Ok(None),
            },
            |path, kind, segments| {
                segments.sort_unstable_by_key(|s| s.from);
                each(path, kind, segments)
            },
        )
    }

    /// [`Self::each_node_days`] one span at a time over every node (an index range each),
    /// each node's rows merged in span order: the nodes are read first, and one merged
    /// segment a node is held until the last span.
    fn each_node_days_by_span(
        &self,
        q: &NodeQuery,
        spans: &[Window],
        shard: Shard,
        mut each: impl FnMut(&NodePath, &Name, &[Segment]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let c = shard.conditions(q);
        let sql = format!(
            "SELECT nodes.region, nodes.site, nodes.node, nodes.kind FROM nodes{}
             ORDER BY nodes.region, nodes.site, nodes.node",
            c.sql()
        );
        let nodes = self.conn().query(&sql, c.values(), |r| {
            let path = NodePath::new(
                id("region", r.get(0)?, RegionId::new)?,
                id("site", r.get(1)?, SiteId::new)?,
                id("node", r.get(2)?, NodeId::new)?,
            );
            Ok((path, id("kind", r.get(3)?, Name::new)?))
        })?;
        let index: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, (path, _))| (path.node.as_str(), i))
            .collect();
        // The rows of nodes `q` does not pick are left on the server; a shard's nodes are
        // picked here, from every node's rows: PostgreSQL would seek each of its nodes'
        // rows instead of reading the range (a span over 10 000 nodes, two shards: 13 ms
        // each, against 3 ms for the range).
        let q_only = q.conditions();
        let (scope, scope_values) = if q_only.is_empty() {
            (String::new(), &[][..])
        } else {
            let nodes = format!(
                " AND d.node IN (SELECT nodes.node FROM nodes{})",
                q_only.sql()
            );
            (nodes, q_only.values())
        };
        let sql = format!(
            "SELECT d.node, {} FROM node_days d WHERE d.day = ? AND d.day_end = ?{scope}",
            segment_columns("d")
        );
        let mut merged: Vec<Option<Segment>> = vec![None; nodes.len()];
        for (k, span) in spans.iter().enumerate() {
            let values = [&[ts_int(span.from()), ts_int(span.to())], scope_values].concat();
            self.conn().each_streamed(&sql, &values, |r| {
                let Some(&i) = index.get(r.str(0)?) else {
                    return Ok(());
                };
                let row = segment(r, 1)?;
                // A node that lacked an earlier span stays short of the window.
                match &mut merged[i] {
                    sum @ None if k == 0 => *sum = Some(row),
                    Some(sum) if sum.to == row.from => *sum = sum.then(&row),
                    _ => {}
                }
                Ok(())
            })?;
        }
        for ((path, kind), sum) in nodes.iter().zip(&merged) {
            each(path, kind, sum.as_slice())?;
        }
        Ok(())
    }
}

/// The columns of a `node_days` row, from `day` on, in the order [`segment`] reads them.
const SEGMENT_COLUMNS: [&str; 16] = [
    "day",
    "day_end",
    "up_ms",
    "down_ms",
    "maintenance_ms",
    "unknown_ms",
    "outages",
    "first_carried",
    "first_ms",
    "last_open",
    "last_ms",
    "longest_ms",
    "went_up",
    "tests",
    "tests_passed",
    "tests_failed",
];

/// [`SEGMENT_COLUMNS`] of table alias `t`, for a `SELECT`.
fn segment_columns(t: &str) -> String {
    SEGMENT_COLUMNS.map(|c| format!("{t}.{c}")).join(", ")
}

/// A [`Segment`] from the `node_days` columns ([`SEGMENT_COLUMNS`]) at `at` onwards.
fn segment(r: &Row<'_>, at: usize) -> Result<Segment, StoreError> {
    let n = |i: usize| -> Result<u64, StoreError> { Ok(u64_of(r.get(at + i)?)) };
    Ok(Segment {
        from: ts_of(r.get(at)?),
        to: ts_of(r.get(at + 1)?),
        up_ms: n(2)?,
        down_ms: n(3)?,
        maintenance_ms: n(4)?,
        unknown_ms: n(5)?,
        outages: n(6)?,
        first_carried: r.get(at + 7)?,
        first_ms: n(8)?,
        last_open: r.get(at + 9)?,
        last_ms: n(10)?,
        longest_ms: n(11)?,
        went_up: r.get(at + 12)?,
        tests: TestTally {
            run: n(13)?,
            passed: n(14)?,
            failed: n(15)?,
        },
    })
}

/// The longest block of summaries, in days (a power of two): blocks of 2, 4, … 512 days.
const LONGEST_BLOCK: usize = 512;

/// The blocks of summaries over `days` (every summarized span, oldest first), each with
/// its two halves (blocks half as long, or days): for each length 2, 4, … the runs of that
/// many days from the first on, the shorter ones first (a block after its halves).
fn blocks_of(days: &[Window]) -> Vec<(Window, [Window; 2])> {
    let span = |run: &[Window]| Window::new(run[0].from(), run[run.len() - 1].to());
    let mut out = Vec::new();
    let mut len = 2;
    while len <= LONGEST_BLOCK.min(days.len()) {
        for run in days.chunks_exact(len) {
            let (a, b) = run.split_at(len / 2);
            if let (Ok(block), Ok(a), Ok(b)) = (span(run), span(a), span(b)) {
                out.push((block, [a, b]));
            }
        }
        len *= 2;
    }
    out
}

/// The fewest summary rows that make up `[from, to)`: from `from`, the longest built block
/// (in `blocks`) that starts there and ends by `to`, else the day; then on from its end.
/// `days` are the summarized spans, oldest first; `[from, to)` is made of whole ones.
pub fn cover(
    days: &[Window],
    blocks: &HashSet<(UnixMillis, UnixMillis)>,
    (from, to): (UnixMillis, UnixMillis),
) -> Vec<Window> {
    let days: Vec<Window> = days
        .iter()
        .copied()
        .filter(|d| d.from() >= from && d.to() <= to)
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < days.len() {
        let mut len = LONGEST_BLOCK.min(days.len() - i);
        let next = loop {
            if len <= 1 {
                break days[i];
            }
            let end = days[i + len - 1].to();
            if blocks.contains(&(days[i].from(), end))
                && let Ok(block) = Window::new(days[i].from(), end)
            {
                break block;
            }
            len -= 1;
        };
        out.push(next);
        i += len.max(1);
    }
    out
}

/// Folds every finished day not yet summarized into the summaries, after recomputing
/// those invalidated since the last round, then builds the blocks of several days they
/// complete. Returns how many rows (node-days and blocks) were written.
pub async fn summarize(
    store: &Store,
    tz: &jiff::tz::TimeZone,
    now: UnixMillis,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    // An interrupted recomputation does not hold up the new days: it resumes next round.
    let mut written = redo(store, shutdown).await?.unwrap_or(0);
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
    while day.to() + SETTLE <= now && !shutdown.is_cancelled() {
        // From here on, a write into the day counts as late (see the module's Design).
        let end = day.to();
        store.call(move |db| db.set_mark(REACH, end)).await?;
        let (rows, epoch) = store.read(move |db| db.day_segments(day)).await?;
        let n = rows.len() as u64;
        if !store
            .call(move |db| db.store_day(day, &rows, epoch))
            .await?
        {
            // A late write into a summarized day since the read: the next round.
            return Ok(written);
        }
        written += n;
        day = Window::day_of(day.to(), tz).map_err(bad)?;
    }
    written += build_blocks(store, None, shutdown).await?;
    // With no transitions at all, mark today's start: there is nothing older to keep.
    if until.is_none() && first.is_none() {
        let from = day.from();
        store
            .call(move |db| {
                db.set_mark(SUMMARIZED_UNTIL, from)?;
                db.set_mark(REACH, from)
            })
            .await?;
    }
    Ok(written)
}

/// Recomputes every node's rows of the spans from `summaries_redo_from` on. Returns how
/// many node-days were written, or `None` when an invalidation came meanwhile (the next
/// round starts again).
async fn redo(store: &Store, shutdown: &CancellationToken) -> Result<Option<u64>, StoreError> {
    let (spans, epoch) = store
        .read(|db| {
            let spans = match db.summaries_redo_from()? {
                Some(from) => (from, db.summary_days_after(from)?),
                None => return Ok((None, 0)),
            };
            Ok((Some(spans), db.epoch()?))
        })
        .await?;
    let Some((from, spans)) = spans else {
        return Ok(Some(0));
    };
    let mut written = 0;
    for span in spans {
        if shutdown.is_cancelled() {
            return Ok(None);
        }
        let (rows, read_in) = store.read(move |db| db.day_segments(span)).await?;
        let n = rows.len() as u64;
        if read_in != epoch
            || !store
                .call(move |db| db.restore_day(span, &rows, epoch))
                .await?
        {
            return Ok(None);
        }
        written += n;
    }
    // The blocks over the recomputed days, some of whose rows the invalidation deleted.
    written += build_blocks(store, Some(from), shutdown).await?;
    if !store.call(move |db| db.redo_done(epoch)).await? {
        return Ok(None);
    }
    Ok(Some(written))
}

/// Builds the blocks of summaries not built yet (the days a block needs were just
/// summarized, or the store predates blocks), and again those ending after `redo_from`
/// (their days were recomputed). Returns how many rows were written. One store call a
/// block, so the writer's other work goes on between them.
async fn build_blocks(
    store: &Store,
    redo_from: Option<UnixMillis>,
    shutdown: &CancellationToken,
) -> Result<u64, StoreError> {
    let (days, built) = store
        .read(|db| {
            Ok((
                db.summary_days_after(UnixMillis::EPOCH)?,
                db.summary_blocks()?,
            ))
        })
        .await?;
    let mut written = 0;
    for (block, halves) in blocks_of(&days) {
        let stale = redo_from.is_some_and(|from| block.to() > from);
        if built.contains(&(block.from(), block.to())) && !stale {
            continue;
        }
        if shutdown.is_cancelled() {
            break;
        }
        written += store.call(move |db| db.build_block(block, halves)).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::model::{Cause, Liveness, Transition};
    use crate::store::engines::each_engine;

    const DAY: u64 = 86_400_000;
    /// 2026-10-01T00:00:00Z.
    const T0: u64 = 1_790_812_800_000;

    fn at(ms: u64) -> UnixMillis {
        UnixMillis::from_millis(ms)
    }

    /// A late transition deletes its node's blocks over the days it touches (and only its
    /// node's); the next summarizing round builds them again.
    #[test]
    fn a_late_write_deletes_its_nodes_blocks_and_the_next_round_builds_them_again() {
        each_engine(|db| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let run = db.start_run(at(T0), None).expect("run");
            for n in ["n1", "n2"] {
                let path = NodePath::new(
                    alarmnet_protocol::RegionId::new("r1").expect("id"),
                    alarmnet_protocol::SiteId::new("s1").expect("id"),
                    NodeId::new(n).expect("id"),
                );
                let birth: alarmnet_protocol::Birth = serde_json::from_value(serde_json::json!({
                    "v": 1, "boot": "boot0001", "ts": 1, "node": n, "site": "s1",
                    "region": "r1", "kind": "siren", "hb_interval_s": 10
                }))
                .expect("birth");
                db.upsert_birth(&path, &birth, at(T0)).expect("birth");
                db.record_transitions(&[Transition {
                    node: path.node.clone(),
                    from: Liveness::Unknown,
                    to: Liveness::Online,
                    at: at(T0),
                    cause: Cause::Birth,
                }])
                .expect("online");
            }
            let store = Store::start(db, Arc::new(Metrics::new())).expect("store");
            let blocks = |node: &'static str| {
                runtime
                    .block_on(store.read(move |db| {
                        db.conn().query(
                            "SELECT day, day_end FROM node_days WHERE node = ?1
                                 AND day_end - day > ?2 ORDER BY day, day_end",
                            args![node, i64_of(DAY + DAY / 2)],
                            |r| {
                                Ok(((r.get::<i64>(0)? - ms_sql(at(T0))) / DAY as i64, {
                                    (r.get::<i64>(1)? - ms_sql(at(T0))) / DAY as i64
                                }))
                            },
                        )
                    }))
                    .expect("blocks")
            };
            let summarize_at = |now: u64| {
                // The collector watching up to now.
                runtime
                    .block_on(store.call(move |db| db.run_alive(run, at(now))))
                    .expect("alive");
                let token = CancellationToken::new();
                runtime
                    .block_on(summarize(&store, &jiff::tz::TimeZone::UTC, at(now), &token))
                    .expect("summarize")
            };
            // Four days: blocks of days 0-2, 2-4 and 0-4.
            summarize_at(T0 + 4 * DAY + 2 * 3_600_000);
            let built = vec![(0, 2), (0, 4), (2, 4)];
            assert_eq!((blocks("n1"), blocks("n2")), (built.clone(), built.clone()));

            // n1 went offline on day 3 (a replayed spool): its rows from day 3 on go, and
            // with them every block over day 3.
            runtime
                .block_on(store.call(|db| {
                    db.record_transitions(&[Transition {
                        node: NodeId::new("n1").expect("id"),
                        from: Liveness::Online,
                        to: Liveness::Offline,
                        at: at(T0 + 3 * DAY + 3_600_000),
                        cause: Cause::Timeout,
                    }])
                }))
                .expect("late transition");
            assert_eq!((blocks("n1"), blocks("n2")), (vec![(0, 2)], built.clone()));

            // The next round recomputes the days and builds the blocks again, the new ones
            // with the outage in them.
            summarize_at(T0 + 4 * DAY + 3 * 3_600_000);
            assert_eq!((blocks("n1"), blocks("n2")), (built.clone(), built));
            let whole = runtime
                .block_on(store.read(|db| {
                    let mut down = Vec::new();
                    db.each_node_days(
                        &NodeQuery::default(),
                        (at(T0), at(T0 + 4 * DAY)),
                        Shard::ALL,
                        |path, _, segments| {
                            down.push((path.node.to_string(), segments.len(), {
                                segments.iter().map(|s| s.down_ms).sum::<u64>()
                            }));
                            Ok(())
                        },
                    )?;
                    Ok(down)
                }))
                .expect("read");
            let offline_ms = DAY - 3_600_000;
            assert_eq!(
                whole,
                [("n1".to_owned(), 1, offline_ms), ("n2".to_owned(), 1, 0)]
            );

            // A fifth day; days 1 to 5 are then read as day 1, the block of days 2-4 and
            // day 4. A late test on day 2 deletes n2's day 2 and its blocks over it: its
            // rows now miss the middle of the window, and must not read as covering it.
            summarize_at(T0 + 5 * DAY + 2 * 3_600_000);
            let test: alarmnet_protocol::TestReceipt = serde_json::from_value(serde_json::json!({
                "v": 1, "boot": "boot0001", "seq": 1, "ts": T0 + 2 * DAY + 3_600_000,
                "test": "silent", "result": "pass", "duration_ms": 100
            }))
            .expect("receipt");
            runtime
                .block_on(store.call(move |db| {
                    db.record_test(&NodeId::new("n2").expect("id"), &test, at(T0 + 5 * DAY))
                }))
                .expect("late test");
            let covering = runtime
                .block_on(store.read(|db| {
                    let (from, to) = (at(T0 + DAY), at(T0 + 5 * DAY));
                    let spans: Vec<_> = db
                        .summary_cover(from, to)?
                        .iter()
                        .map(|w| (w.from(), w.to()))
                        .collect();
                    assert_eq!(
                        spans,
                        [(1, 2), (2, 4), (4, 5)].map(|(a, b)| (at(T0 + a * DAY), at(T0 + b * DAY)))
                    );
                    let mut covering = Vec::new();
                    db.each_node_days(
                        &NodeQuery::default(),
                        (from, to),
                        Shard::ALL,
                        |path, _, s| {
                            let whole = s.first().is_some_and(|d| d.from == from)
                                && s.last().is_some_and(|d| d.to == to)
                                && s.windows(2).all(|w| w[0].to == w[1].from);
                            covering.push((path.node.to_string(), whole));
                            Ok(())
                        },
                    )?;
                    Ok(covering)
                }))
                .expect("read");
            assert_eq!(
                covering,
                [("n1".to_owned(), true), ("n2".to_owned(), false)]
            );
        });
    }

    fn days(n: u64) -> Vec<Window> {
        let day = |i: u64| UnixMillis::from_millis(i * 86_400_000);
        (0..n)
            .map(|i| Window::new(day(i), day(i + 1)).expect("a day"))
            .collect()
    }

    #[test]
    fn blocks_come_after_their_halves_and_a_cover_takes_the_longest_built() {
        let days = days(40);
        let blocks = blocks_of(&days);
        // 20 of 2 days, 10 of 4, 5 of 8, 2 of 16, 1 of 32.
        assert_eq!(blocks.len(), 38);
        let mut built = HashSet::new();
        for (block, [a, b]) in &blocks {
            assert_eq!(
                (block.from(), a.to(), b.to()),
                (a.from(), b.from(), block.to())
            );
            for half in [a, b] {
                let is_day = days.contains(half);
                assert!(is_day || built.contains(&(half.from(), half.to())));
            }
            built.insert((block.from(), block.to()));
        }
        // Days 3 to 35: day 3, the blocks from 4 to 34, day 34 (its block, 34 to 36, ends
        // after the window).
        let at = |i: u64| UnixMillis::from_millis(i * 86_400_000);
        let spans: Vec<(u64, u64)> = cover(&days, &built, (at(3), at(35)))
            .iter()
            .map(|w| {
                (
                    w.from().as_millis() / 86_400_000,
                    w.to().as_millis() / 86_400_000,
                )
            })
            .collect();
        assert_eq!(
            spans,
            [(3, 4), (4, 8), (8, 16), (16, 32), (32, 34), (34, 35)]
        );
        // Blocks not built: the days themselves.
        assert_eq!(cover(&days, &HashSet::new(), (at(3), at(6))).len(), 3);
    }
}
