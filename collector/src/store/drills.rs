//! Drills in the store: the drill rows with their tally, the asked nodes' outcomes, the
//! receipts a drill reads (committed test receipts carrying its id), and the last
//! occurrence of each schedule. See [`crate::drills`].

use alarmnet_protocol::{CmdId, Name, NodeId, NodePath, TestResult};

use super::StoreError;
use super::db::{Db, i64_of, ms_sql, ts_of, u64_of};
use super::lists::{Paged, TimeKey, limit_plus_one};
use super::nodes::{NodeKey, path_at};
use super::sql::{Row, Value, args};
use crate::drills::{DrillMeta, NodeResult, Outcome, Receipt, Selector, Status, Tally};
use crate::model::UnixMillis;

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {v:?}"))
}

fn result_str(r: TestResult) -> &'static str {
    match r {
        TestResult::Pass => "pass",
        TestResult::Fail => "fail",
        TestResult::Error => "error",
    }
}

fn result_of(s: &str) -> Result<TestResult, StoreError> {
    match s {
        "pass" => Ok(TestResult::Pass),
        "fail" => Ok(TestResult::Fail),
        "error" => Ok(TestResult::Error),
        _ => Err(corrupt("test result", s)),
    }
}

/// The registered nodes a selector matches, and listed nodes that are not registered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    pub found: Vec<(NodePath, Name)>,
    pub unknown: Vec<NodeId>,
}

/// A stored drill with what the drills task needs to resume it.
#[derive(Debug, Clone)]
pub struct DrillRow {
    pub meta: DrillMeta,
    /// The id of the last test receipt the drill has read.
    pub cursor: i64,
}

const DRILL_COLUMNS: &str = "id, test, selector, started_at, deadline, started_by, status, closed_at,
    cancelled_by, schedule, asked, waiting, passed, failed, errored, silent, late, receipt_cursor, rowid";

const NODE_COLUMNS: &str =
    "region, site, node, kind, outcome, result, received_at, duration_ms, message, metrics";

fn drill_row(r: &Row<'_>) -> Result<(DrillRow, i64), StoreError> {
    let id = r.str(0)?;
    let test = r.str(1)?;
    let status = r.str(6)?;
    let count = |i: usize| -> Result<u64, StoreError> { Ok(u64_of(r.get(i)?)) };
    let meta = DrillMeta {
        id: CmdId::new(id).map_err(|_| corrupt("drill id", id))?,
        test: Name::new(test).map_err(|_| corrupt("test", test))?,
        selector: serde_json::from_str::<Selector>(r.str(2)?)?,
        started_at: ts_of(r.get(3)?),
        deadline: ts_of(r.get(4)?),
        started_by: r.get(5)?,
        status: Status::from_name(status).ok_or_else(|| corrupt("drill status", status))?,
        closed_at: r.get::<Option<i64>>(7)?.map(ts_of),
        cancelled_by: r.get(8)?,
        schedule: r.get(9)?,
        tally: Tally {
            asked: count(10)?,
            waiting: count(11)?,
            passed: count(12)?,
            failed: count(13)?,
            errored: count(14)?,
            silent: count(15)?,
            late: count(16)?,
        },
    };
    Ok((
        DrillRow {
            meta,
            cursor: r.get(17)?,
        },
        r.get(18)?,
    ))
}

/// A node's path from its region, site and node columns at `i`, `i + 1`, `i + 2`.
fn kind_at(r: &Row<'_>, i: usize) -> Result<Name, StoreError> {
    let kind = r.str(i)?;
    Name::new(kind).map_err(|_| corrupt("kind", kind))
}

fn node_row(r: &Row<'_>) -> Result<NodeResult, StoreError> {
    let outcome = r.str(4)?;
    Ok(NodeResult {
        path: path_at(r, 0, 1, 2)?,
        kind: kind_at(r, 3)?,
        outcome: Outcome::from_name(outcome).ok_or_else(|| corrupt("outcome", outcome))?,
        result: r
            .get::<Option<String>>(5)?
            .map(|s| result_of(&s))
            .transpose()?,
        received_at: r.get::<Option<i64>>(6)?.map(ts_of),
        duration_ms: r.get::<Option<i64>>(7)?.map(u64_of),
        message: r.get(8)?,
        metrics: r.get(9)?,
    })
}

/// One row more than a page holds: whether it exists says whether a page follows.
impl Db {
    /// The registered nodes `s` selects, in (region, site, node) order.
    pub fn drill_targets(&self, s: &Selector) -> Result<Targets, StoreError> {
        let mut sql = String::from("SELECT region, site, node, kind FROM nodes WHERE TRUE");
        let mut values: Vec<Value<'_>> = Vec::new();
        for (fragment, v) in [
            (" AND region = ?", s.region.as_ref().map(|x| x.as_str())),
            (" AND site = ?", s.site.as_ref().map(|x| x.as_str())),
            (" AND kind = ?", s.kind.as_ref().map(|x| x.as_str())),
        ] {
            if let Some(v) = v {
                sql.push_str(fragment);
                values.push(Value::from(v));
            }
        }
        let listed: Option<std::collections::HashSet<&str>> = s
            .nodes
            .as_ref()
            .map(|n| n.iter().map(NodeId::as_str).collect());
        sql.push_str(" ORDER BY region, site, node");
        let mut out = Targets::default();
        let mut seen = std::collections::HashSet::new();
        self.conn().each(&sql, &values, |r| {
            let node = r.str(2)?;
            if let Some(listed) = &listed {
                if !listed.contains(node) {
                    return Ok(());
                }
                seen.insert(node.to_owned());
            }
            out.found.push((path_at(r, 0, 1, 2)?, kind_at(r, 3)?));
            Ok(())
        })?;
        if let Some(nodes) = &s.nodes {
            // A listed node outside the other fields' match is not selected either.
            let registered = |n: &NodeId| -> Result<bool, StoreError> {
                Ok(self
                    .conn()
                    .query_opt(
                        "SELECT 1 FROM nodes WHERE node = ?1",
                        args![n.as_str()],
                        |_| Ok(()),
                    )?
                    .is_some())
            };
            for n in nodes {
                if !seen.contains(n.as_str()) && !registered(n)? {
                    out.unknown.push(n.clone());
                }
            }
        }
        Ok(out)
    }

    /// Stores a new drill and its asked nodes (all waiting).
    /// A new drill, run by the collectors of shard `owner` (`""` without shards).
    pub fn insert_drill(
        &self,
        m: &DrillMeta,
        nodes: &[NodeResult],
        owner: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO drills (id, test, selector, started_at, deadline, started_by, status,
                closed_at, cancelled_by, schedule, asked, waiting, passed, failed, errored,
                silent, late, receipt_cursor, owner)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, ?8, 0, 0, 0, 0, 0, 0, 0,
                (SELECT coalesce(max(id), 0) FROM test_receipts), ?9)",
            args![
                m.id.as_str(),
                m.test.as_str(),
                serde_json::to_string(&m.selector)?,
                ms_sql(m.started_at),
                ms_sql(m.deadline),
                &m.started_by,
                m.status.as_str(),
                m.schedule.as_deref(),
                owner,
            ],
        )?;
        self.save_drill(m, nodes, None)
    }

    /// Writes a drill's row (status, tally, and the receipt cursor when given) and the
    /// results of `changed` nodes.
    pub fn save_drill(
        &self,
        m: &DrillMeta,
        changed: &[NodeResult],
        cursor: Option<i64>,
    ) -> Result<(), StoreError> {
        let t = &m.tally;
        let n = |v: u64| i64_of(v);
        self.conn().execute(
            "UPDATE drills SET status = ?2, closed_at = ?3, cancelled_by = ?4, asked = ?5,
                waiting = ?6, passed = ?7, failed = ?8, errored = ?9, silent = ?10,
                late = ?11, receipt_cursor = coalesce(?12, receipt_cursor)
             WHERE id = ?1",
            args![
                m.id.as_str(),
                m.status.as_str(),
                m.closed_at.map(ms_sql),
                m.cancelled_by.as_deref(),
                n(t.asked),
                n(t.waiting),
                n(t.passed),
                n(t.failed),
                n(t.errored),
                n(t.silent),
                n(t.late),
                cursor,
            ],
        )?;
        for r in changed {
            self.conn().execute(
                "INSERT INTO drill_nodes (drill, region, site, node, kind, outcome, result,
                    received_at, duration_ms, message, metrics)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (drill, region, site, node) DO UPDATE SET
                    outcome = excluded.outcome, result = excluded.result,
                    received_at = excluded.received_at, duration_ms = excluded.duration_ms,
                    message = excluded.message, metrics = excluded.metrics",
                args![
                    m.id.as_str(),
                    r.path.region.as_str(),
                    r.path.site.as_str(),
                    r.path.node.as_str(),
                    r.kind.as_str(),
                    r.outcome.as_str(),
                    r.result.map(result_str),
                    r.received_at.map(ms_sql),
                    r.duration_ms.map(i64_of),
                    r.message.as_deref(),
                    r.metrics.as_deref(),
                ],
            )?;
        }
        Ok(())
    }

    /// Test receipts carrying drill id `drill` committed after receipt row `after`, oldest
    /// first, at most `limit`, with their row ids.
    pub fn drill_receipts(
        &self,
        drill: &CmdId,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Receipt)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn().query(
            "SELECT id, node, result, received_at, duration_ms, message, metrics
             FROM test_receipts WHERE drill = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            args![drill.as_str(), after, limit],
            |r| {
                let node = r.str(1)?;
                let metrics = r.str(6)?;
                Ok((
                    r.get(0)?,
                    Receipt {
                        node: NodeId::new(node).map_err(|_| corrupt("node", node))?,
                        result: result_of(r.str(2)?)?,
                        received_at: ts_of(r.get(3)?),
                        duration_ms: r.get::<Option<i64>>(4)?.map(u64_of),
                        message: r.get(5)?,
                        metrics: (metrics != "{}").then(|| metrics.to_owned()),
                    },
                ))
            },
        )
    }

    /// Drills still open, and those closed at or after `closed_since` (they may still get
    /// late receipts), with every asked node's result.
    pub fn live_drills(
        &self,
        closed_since: UnixMillis,
        owner: &str,
    ) -> Result<Vec<(DrillRow, Vec<NodeResult>)>, StoreError> {
        // Drills started at the same instant come in row order.
        let sql = format!(
            "SELECT {DRILL_COLUMNS} FROM drills
             WHERE (status = 'open' OR closed_at >= ?1) AND owner = ?2
             ORDER BY started_at, rowid"
        );
        let drills = self
            .conn()
            .query(&sql, args![ms_sql(closed_since), owner], |r| {
                Ok(drill_row(r)?.0)
            })?;
        let mut out = Vec::with_capacity(drills.len());
        for d in drills {
            let results = self.drill_results(&d.meta.id, &[], None, usize::MAX)?.items;
            out.push((d, results));
        }
        Ok(out)
    }

    /// Which shard's collectors run drill `id` (`""` without shards).
    pub fn drill_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_opt("SELECT owner FROM drills WHERE id = ?1", args![id], |r| {
                r.get::<String>(0)
            })
    }

    /// One drill.
    pub fn drill(&self, id: &str) -> Result<Option<DrillRow>, StoreError> {
        let sql = format!("SELECT {DRILL_COLUMNS} FROM drills WHERE id = ?1");
        self.conn()
            .query_opt(&sql, args![id], |r| Ok(drill_row(r)?.0))
    }

    /// One page of drills, newest first (by start, then row), after `after`.
    pub fn drill_page(
        &self,
        status: Option<Status>,
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Paged<DrillMeta, TimeKey>, StoreError> {
        let status = status.map(Status::as_str);
        // The casts type the placeholders for PostgreSQL where `IS NULL` comes first.
        let total: i64 = self.conn().query_one(
            "SELECT count(*) FROM drills WHERE CAST(?1 AS TEXT) IS NULL OR status = ?1",
            args![status],
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT {DRILL_COLUMNS} FROM drills
             WHERE (CAST(?1 AS TEXT) IS NULL OR status = ?1)
               AND (CAST(?2 AS BIGINT) IS NULL OR (started_at, rowid) < (?2, ?3))
             ORDER BY started_at DESC, rowid DESC LIMIT ?4"
        );
        let items = self.conn().query(
            &sql,
            args![
                status,
                after.map(|k| ms_sql(k.at)),
                after.map(|k| k.id),
                limit_plus_one(limit),
            ],
            |r| {
                let (row, rowid) = drill_row(r)?;
                let key = TimeKey {
                    at: row.meta.started_at,
                    id: rowid,
                };
                Ok((key, row.meta))
            },
        )?;
        Ok(Paged::from_rows(items, limit, u64_of(total)))
    }

    /// One page of a drill's node results in (region, site, node) order, with any of
    /// `outcomes` (all when empty), after `after`.
    pub fn drill_results(
        &self,
        drill: &CmdId,
        outcomes: &[Outcome],
        after: Option<&NodeKey>,
        limit: usize,
    ) -> Result<Paged<NodeResult, NodeKey>, StoreError> {
        let mut slots: [Option<&str>; 6] = [None; 6];
        for (slot, o) in slots.iter_mut().zip(outcomes) {
            *slot = Some(o.as_str());
        }
        let any = outcomes.is_empty();
        // The drill and its outcome filter: ?1 to ?8 of both statements.
        let filter: Vec<Value<'_>> = [Value::from(drill.as_str()), any.into()]
            .into_iter()
            .chain(slots.iter().map(|&s| Value::from(s)))
            .collect();
        let total: i64 = self.conn().query_one(
            "SELECT count(*) FROM drill_nodes WHERE drill = ?1
               AND (?2 OR outcome IN (?3, ?4, ?5, ?6, ?7, ?8))",
            &filter,
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM drill_nodes WHERE drill = ?1
               AND (?2 OR outcome IN (?3, ?4, ?5, ?6, ?7, ?8))
               AND (CAST(?9 AS TEXT) IS NULL OR (region, site, node) > (?9, ?10, ?11))
             ORDER BY region, site, node LIMIT ?12"
        );
        let mut page = filter;
        page.extend([
            Value::from(after.map(|k| k.region.as_str())),
            after.map(|k| k.site.as_str()).into(),
            after.map(|k| k.node.as_str()).into(),
            limit_plus_one(limit),
        ]);
        let items = self.conn().query(&sql, &page, |r| {
            let n = node_row(r)?;
            let key = NodeKey {
                region: n.path.region.clone(),
                site: n.path.site.clone(),
                node: n.path.node.clone(),
            };
            Ok((key, n))
        })?;
        Ok(Paged::from_rows(items, limit, u64_of(total)))
    }

    /// The last occurrence schedule `name` ran (or skipped), if any.
    pub fn schedule_last(&self, name: &str) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self
            .conn()
            .query_opt(
                "SELECT last_occurrence FROM drill_schedule WHERE name = ?1",
                args![name],
                |r| r.get::<i64>(0),
            )?
            .map(ts_of))
    }

    /// Claims schedule `name`'s occurrence at `at`: records it as run (or skipped) unless
    /// it (or a later one) already is, so the mark never goes back. Returns whether this
    /// caller claimed it; when several collectors (the active collectors of region shards)
    /// run the same schedule, one starts each drill.
    pub fn claim_schedule(&self, name: &str, at: UnixMillis) -> Result<bool, StoreError> {
        let claimed = self.conn().execute(
            "INSERT INTO drill_schedule (name, last_occurrence) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_occurrence = excluded.last_occurrence
             WHERE drill_schedule.last_occurrence < excluded.last_occurrence",
            args![name, ms_sql(at)],
        )?;
        Ok(claimed == 1)
    }
}
