//! Drills in the store: the drill rows with their tally, the asked nodes' outcomes, the
//! receipts a drill reads (committed test receipts carrying its id), and the last
//! occurrence of each schedule. See [`crate::drills`].

use alarmnet_protocol::{CmdId, Name, NodeId, NodePath, RegionId, SiteId, TestResult};
use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension as _, Row, params, params_from_iter};

use super::StoreError;
use super::sqlite::{Db, NodeKey, Paged, TimeKey, i64_of, ms_sql, ts_of, u64_of};
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
    let id: String = r.get(0)?;
    let test: String = r.get(1)?;
    let selector: String = r.get(2)?;
    let status: String = r.get(6)?;
    let count = |i: usize| -> rusqlite::Result<u64> { Ok(u64_of(r.get(i)?)) };
    let meta = DrillMeta {
        id: CmdId::new(id.clone()).map_err(|_| corrupt("drill id", &id))?,
        test: Name::new(test.clone()).map_err(|_| corrupt("test", &test))?,
        selector: serde_json::from_str::<Selector>(&selector)?,
        started_at: ts_of(r.get(3)?),
        deadline: ts_of(r.get(4)?),
        started_by: r.get(5)?,
        status: Status::from_name(&status).ok_or_else(|| corrupt("drill status", &status))?,
        closed_at: r.get::<_, Option<i64>>(7)?.map(ts_of),
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

fn node_row(r: &Row<'_>) -> Result<NodeResult, StoreError> {
    let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
    let (region, site, node, kind) = (text(0)?, text(1)?, text(2)?, text(3)?);
    let outcome = text(4)?;
    Ok(NodeResult {
        path: NodePath::new(
            RegionId::new(region.clone()).map_err(|_| corrupt("region", &region))?,
            SiteId::new(site.clone()).map_err(|_| corrupt("site", &site))?,
            NodeId::new(node.clone()).map_err(|_| corrupt("node", &node))?,
        ),
        kind: Name::new(kind.clone()).map_err(|_| corrupt("kind", &kind))?,
        outcome: Outcome::from_name(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
        result: r
            .get::<_, Option<String>>(5)?
            .map(|s| result_of(&s))
            .transpose()?,
        received_at: r.get::<_, Option<i64>>(6)?.map(ts_of),
        duration_ms: r.get::<_, Option<i64>>(7)?.map(u64_of),
        message: r.get(8)?,
        metrics: r.get(9)?,
    })
}

impl Db {
    /// The registered nodes `s` selects, in (region, site, node) order.
    pub fn drill_targets(&self, s: &Selector) -> Result<Targets, StoreError> {
        let mut sql = String::from("SELECT region, site, node, kind FROM nodes WHERE 1");
        let mut values = Vec::new();
        for (column, v) in [
            ("region", s.region.as_ref().map(|x| x.as_str())),
            ("site", s.site.as_ref().map(|x| x.as_str())),
            ("kind", s.kind.as_ref().map(|x| x.as_str())),
        ] {
            if let Some(v) = v {
                sql.push_str(match column {
                    "region" => " AND region = ?",
                    "site" => " AND site = ?",
                    _ => " AND kind = ?",
                });
                values.push(SqlValue::Text(v.to_owned()));
            }
        }
        let listed: Option<std::collections::HashSet<&str>> = s
            .nodes
            .as_ref()
            .map(|n| n.iter().map(NodeId::as_str).collect());
        sql.push_str(" ORDER BY region, site, node");
        let mut stmt = self.sqlite().prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        let mut out = Targets::default();
        let mut seen = std::collections::HashSet::new();
        while let Some(r) = rows.next()? {
            let node: String = r.get(2)?;
            if let Some(listed) = &listed {
                if !listed.contains(node.as_str()) {
                    continue;
                }
                seen.insert(node.clone());
            }
            let (region, site, kind): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(3)?);
            out.found.push((
                NodePath::new(
                    RegionId::new(region.clone()).map_err(|_| corrupt("region", &region))?,
                    SiteId::new(site.clone()).map_err(|_| corrupt("site", &site))?,
                    NodeId::new(node.clone()).map_err(|_| corrupt("node", &node))?,
                ),
                Name::new(kind.clone()).map_err(|_| corrupt("kind", &kind))?,
            ));
        }
        if let Some(nodes) = &s.nodes {
            // A listed node outside the other fields' match is not selected either.
            let registered = |n: &NodeId| -> Result<bool, StoreError> {
                Ok(self
                    .sqlite()
                    .prepare_cached("SELECT 1 FROM nodes WHERE node = ?1")?
                    .exists([n.as_str()])?)
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
    pub fn insert_drill(&self, m: &DrillMeta, nodes: &[NodeResult]) -> Result<(), StoreError> {
        self.sqlite().execute(
            "INSERT INTO drills (id, test, selector, started_at, deadline, started_by, status,
                closed_at, cancelled_by, schedule, asked, waiting, passed, failed, errored,
                silent, late, receipt_cursor)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, ?8, 0, 0, 0, 0, 0, 0, 0,
                (SELECT coalesce(max(id), 0) FROM test_receipts))",
            params![
                m.id.as_str(),
                m.test.as_str(),
                serde_json::to_string(&m.selector)?,
                ms_sql(m.started_at),
                ms_sql(m.deadline),
                m.started_by,
                m.status.as_str(),
                m.schedule,
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
        self.sqlite()
            .prepare_cached(
                "UPDATE drills SET status = ?2, closed_at = ?3, cancelled_by = ?4, asked = ?5,
                    waiting = ?6, passed = ?7, failed = ?8, errored = ?9, silent = ?10,
                    late = ?11, receipt_cursor = coalesce(?12, receipt_cursor)
                 WHERE id = ?1",
            )?
            .execute(params![
                m.id.as_str(),
                m.status.as_str(),
                m.closed_at.map(ms_sql),
                m.cancelled_by,
                n(t.asked),
                n(t.waiting),
                n(t.passed),
                n(t.failed),
                n(t.errored),
                n(t.silent),
                n(t.late),
                cursor,
            ])?;
        let mut stmt = self.sqlite().prepare_cached(
            "INSERT INTO drill_nodes (drill, region, site, node, kind, outcome, result,
                received_at, duration_ms, message, metrics)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (drill, region, site, node) DO UPDATE SET outcome = excluded.outcome,
                result = excluded.result, received_at = excluded.received_at,
                duration_ms = excluded.duration_ms, message = excluded.message,
                metrics = excluded.metrics",
        )?;
        for r in changed {
            stmt.execute(params![
                m.id.as_str(),
                r.path.region.as_str(),
                r.path.site.as_str(),
                r.path.node.as_str(),
                r.kind.as_str(),
                r.outcome.as_str(),
                r.result.map(result_str),
                r.received_at.map(ms_sql),
                r.duration_ms.map(i64_of),
                r.message,
                r.metrics,
            ])?;
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
        let mut stmt = self.sqlite().prepare_cached(
            "SELECT id, node, result, received_at, duration_ms, message, metrics
             FROM test_receipts WHERE drill = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![drill.as_str(), after, limit])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let node: String = r.get(1)?;
            let result: String = r.get(2)?;
            let metrics: String = r.get(6)?;
            out.push((
                r.get(0)?,
                Receipt {
                    node: NodeId::new(node.clone()).map_err(|_| corrupt("node", &node))?,
                    result: result_of(&result)?,
                    received_at: ts_of(r.get(3)?),
                    duration_ms: r.get::<_, Option<i64>>(4)?.map(u64_of),
                    message: r.get(5)?,
                    metrics: (metrics != "{}").then_some(metrics),
                },
            ));
        }
        Ok(out)
    }

    /// Drills still open, and those closed at or after `closed_since` (they may still get
    /// late receipts), with every asked node's result.
    pub fn live_drills(
        &self,
        closed_since: UnixMillis,
    ) -> Result<Vec<(DrillRow, Vec<NodeResult>)>, StoreError> {
        let sql = format!(
            "SELECT {DRILL_COLUMNS} FROM drills WHERE status = 'open' OR closed_at >= ?1
             ORDER BY started_at"
        );
        let mut stmt = self.sqlite().prepare(&sql)?;
        let mut rows = stmt.query([ms_sql(closed_since)])?;
        let mut drills = Vec::new();
        while let Some(r) = rows.next()? {
            drills.push(drill_row(r)?.0);
        }
        let mut out = Vec::with_capacity(drills.len());
        for d in drills {
            let results = self.drill_results(&d.meta.id, &[], None, usize::MAX)?.items;
            out.push((d, results));
        }
        Ok(out)
    }

    /// One drill.
    pub fn drill(&self, id: &str) -> Result<Option<DrillRow>, StoreError> {
        let sql = format!("SELECT {DRILL_COLUMNS} FROM drills WHERE id = ?1");
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let mut rows = stmt.query([id])?;
        rows.next()?.map(|r| drill_row(r).map(|x| x.0)).transpose()
    }

    /// One page of drills, newest first (by start, then row), after `after`.
    pub fn drill_page(
        &self,
        status: Option<Status>,
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Paged<DrillMeta, TimeKey>, StoreError> {
        let status = status.map(Status::as_str);
        let total: i64 = self.sqlite().query_row(
            "SELECT count(*) FROM drills WHERE ?1 IS NULL OR status = ?1",
            [status],
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT {DRILL_COLUMNS} FROM drills WHERE (?1 IS NULL OR status = ?1)
               AND (?2 IS NULL OR (started_at, rowid) < (?2, ?3))
             ORDER BY started_at DESC, rowid DESC LIMIT ?4"
        );
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            status,
            after.map(|k| ms_sql(k.at)),
            after.map(|k| k.id),
            i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
        ])?;
        let mut items = Vec::new();
        while let Some(r) = rows.next()? {
            let (row, rowid) = drill_row(r)?;
            let key = TimeKey {
                at: row.meta.started_at,
                id: rowid,
            };
            items.push((key, row.meta));
        }
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
        let total: i64 = self
            .sqlite()
            .prepare_cached(
                "SELECT count(*) FROM drill_nodes WHERE drill = ?1
                   AND (?2 OR outcome IN (?3, ?4, ?5, ?6, ?7, ?8))",
            )?
            .query_row(
                params![
                    drill.as_str(),
                    any,
                    slots[0],
                    slots[1],
                    slots[2],
                    slots[3],
                    slots[4],
                    slots[5]
                ],
                |r| r.get(0),
            )?;
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM drill_nodes WHERE drill = ?1
               AND (?2 OR outcome IN (?3, ?4, ?5, ?6, ?7, ?8))
               AND (?9 IS NULL OR (region, site, node) > (?9, ?10, ?11))
             ORDER BY region, site, node LIMIT ?12"
        );
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let mut rows = stmt.query(params![
            drill.as_str(),
            any,
            slots[0],
            slots[1],
            slots[2],
            slots[3],
            slots[4],
            slots[5],
            after.map(|k| k.region.as_str()),
            after.map(|k| k.site.as_str()),
            after.map(|k| k.node.as_str()),
            i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
        ])?;
        let mut items = Vec::new();
        while let Some(r) = rows.next()? {
            let n = node_row(r)?;
            let key = NodeKey {
                region: n.path.region.clone(),
                site: n.path.site.clone(),
                node: n.path.node.clone(),
            };
            items.push((key, n));
        }
        Ok(Paged::from_rows(items, limit, u64_of(total)))
    }

    /// The last occurrence schedule `name` ran (or skipped), if any.
    pub fn schedule_last(&self, name: &str) -> Result<Option<UnixMillis>, StoreError> {
        Ok(self
            .sqlite()
            .query_row(
                "SELECT last_occurrence FROM drill_schedule WHERE name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(ts_of))
    }

    /// Records that schedule `name` ran (or skipped) its occurrence at `at`.
    pub fn set_schedule_last(&self, name: &str, at: UnixMillis) -> Result<(), StoreError> {
        self.sqlite().execute(
            "INSERT INTO drill_schedule (name, last_occurrence) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET last_occurrence = excluded.last_occurrence",
            params![name, ms_sql(at)],
        )?;
        Ok(())
    }
}
