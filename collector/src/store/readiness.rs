//! Readiness in the store (schema migration 6): each node's current readiness in `nodes`,
//! every change in `readiness_transitions`, and what a restarted collector needs to derive
//! readiness again (active faults, the last test of each kind).

use std::collections::HashMap;

use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, Severity, SiteId, TestResult};
use rusqlite::{OptionalExtension, params, params_from_iter};

use super::StoreError;
use super::sqlite::{Db, NodeQuery, ms_sql, ts_of};
use crate::model::UnixMillis;
use crate::readiness::tracker::RestoredReadiness;
use crate::readiness::{LastTest, Readiness, ReadinessChange, Reason};

fn readiness(s: &str) -> Result<Readiness, StoreError> {
    Readiness::from_name(s).ok_or_else(|| StoreError::Corrupt(format!("readiness {s:?}")))
}

fn node_id(s: String) -> Result<NodeId, StoreError> {
    NodeId::new(s.clone()).map_err(|_| StoreError::Corrupt(format!("node {s:?}")))
}

/// A node's current readiness as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReadiness {
    pub state: Readiness,
    pub reasons: Vec<Reason>,
    pub since: UnixMillis,
}

/// One stored change of a node's readiness, for history arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessStep {
    pub at: UnixMillis,
    pub to: Readiness,
    /// Under a silence from `at` on.
    pub maintenance: bool,
}

impl Db {
    /// Appends readiness changes and updates each node's current readiness.
    pub fn record_readiness(&self, changes: &[ReadinessChange]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let conn = self.sqlite();
        let mut insert = conn.prepare_cached(
            "INSERT INTO readiness_transitions (node, at, id, from_state, to_state, maintenance,
                 reasons)
             VALUES (?1, ?2, (SELECT coalesce(max(id), 0) + 1 FROM readiness_transitions),
                     ?3, ?4, ?5, ?6)",
        )?;
        let mut update = conn.prepare_cached(
            "UPDATE nodes SET readiness = ?2, readiness_reasons = ?3,
                 readiness_since = CASE WHEN readiness IS ?2 THEN readiness_since ELSE ?4 END
             WHERE node = ?1",
        )?;
        for c in changes {
            let reasons = serde_json::to_string(&c.reasons)?;
            let maintenance = c.reasons.contains(&Reason::Maintenance);
            insert.execute(params![
                c.node.as_str(),
                ms_sql(c.at),
                c.from.map(Readiness::as_str),
                c.to.as_str(),
                maintenance,
                reasons,
            ])?;
            update.execute(params![
                c.node.as_str(),
                c.to.as_str(),
                reasons,
                ms_sql(c.at)
            ])?;
        }
        Ok(())
    }

    /// A node's current readiness (`None` before its first derivation).
    pub fn node_readiness(&self, node: &NodeId) -> Result<Option<NodeReadiness>, StoreError> {
        let row: Option<(Option<String>, Option<String>, Option<i64>)> = self
            .sqlite()
            .prepare_cached(
                "SELECT readiness, readiness_reasons, readiness_since FROM nodes WHERE node = ?1",
            )?
            .query_row([node.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        match row {
            Some((Some(state), reasons, since)) => Ok(Some(NodeReadiness {
                state: readiness(&state)?,
                reasons: serde_json::from_str(reasons.as_deref().unwrap_or("[]"))?,
                since: ts_of(since.unwrap_or(0)),
            })),
            _ => Ok(None),
        }
    }

    /// The current readiness of each of `nodes` that has one.
    pub fn readiness_of(
        &self,
        nodes: &[NodeId],
    ) -> Result<HashMap<NodeId, NodeReadiness>, StoreError> {
        let mut out = HashMap::with_capacity(nodes.len());
        for node in nodes {
            if let Some(r) = self.node_readiness(node)? {
                out.insert(node.clone(), r);
            }
        }
        Ok(out)
    }

    /// What readiness is derived from, per node, for a restarted collector: the stored
    /// state and reasons, active faults, and the last test of each kind (run time: the
    /// agent's `ts`, never later than its arrival).
    pub fn readiness_inputs(&self) -> Result<HashMap<NodeId, RestoredReadiness>, StoreError> {
        let conn = self.sqlite();
        let mut out: HashMap<NodeId, RestoredReadiness> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT node, readiness, readiness_reasons FROM nodes WHERE readiness IS NOT NULL",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let node = node_id(r.get(0)?)?;
            let state = readiness(&r.get::<_, String>(1)?)?;
            let reasons: Vec<Reason> =
                serde_json::from_str(&r.get::<_, Option<String>>(2)?.unwrap_or_default())
                    .unwrap_or_default();
            out.entry(node).or_default().previous = Some((state, reasons));
        }
        let mut stmt = conn.prepare(
            "SELECT node, fault_key, severity FROM faults WHERE cleared_at IS NULL
             ORDER BY node, fault_key",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let node = node_id(r.get(0)?)?;
            let key: String = r.get(1)?;
            let sev: String = r.get(2)?;
            let severity = Severity::ALL
                .into_iter()
                .find(|s| s.as_str() == sev)
                .ok_or_else(|| StoreError::Corrupt(format!("severity {sev:?}")))?;
            let faults = &mut out.entry(node).or_default().faults;
            if !faults.iter().any(|(k, _)| *k == key) {
                faults.push((key, severity));
            }
        }
        // SQLite: with max(), the bare columns come from the row holding the maximum.
        let mut stmt = conn.prepare(
            "SELECT node, test, result, max(min(ts, received_at)) FROM test_receipts
             GROUP BY node, test",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let node = node_id(r.get(0)?)?;
            let test: String = r.get(1)?;
            let result: String = r.get(2)?;
            let result = match result.as_str() {
                "pass" => TestResult::Pass,
                "fail" => TestResult::Fail,
                "error" => TestResult::Error,
                other => return Err(StoreError::Corrupt(format!("test result {other:?}"))),
            };
            let test = Name::new(test.clone())
                .map_err(|_| StoreError::Corrupt(format!("test {test:?}")))?;
            out.entry(node).or_default().tests.push(LastTest {
                test,
                result,
                at: ts_of(r.get(3)?),
            });
        }
        Ok(out)
    }

    /// Streams the nodes matching `q` (region, site, node order), each with its readiness
    /// changes from the last one before `from` up to `until` (exclusive), oldest first.
    pub fn each_node_readiness(
        &self,
        q: &NodeQuery,
        (from, until): (UnixMillis, UnixMillis),
        mut each: impl FnMut(&NodePath, &Name, &[ReadinessStep]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let conn = self.sqlite();
        let c = q.conditions();
        let sql = format!(
            "SELECT nodes.region, nodes.site, nodes.node, nodes.kind FROM nodes{}
             ORDER BY nodes.region, nodes.site, nodes.node",
            c.sql()
        );
        let mut nodes = conn.prepare_cached(&sql)?;
        let mut history = conn.prepare_cached(
            "SELECT at, to_state, maintenance FROM readiness_transitions
             WHERE node = ?1
               AND at >= coalesce((SELECT max(p.at) FROM readiness_transitions p
                                   WHERE p.node = ?1 AND p.at < ?2), ?2)
               AND at < ?3
             ORDER BY at, id",
        )?;
        let mut steps = Vec::new();
        let mut rows = nodes.query(params_from_iter(c.values()))?;
        while let Some(r) = rows.next()? {
            let region: String = r.get(0)?;
            let site: String = r.get(1)?;
            let node: String = r.get(2)?;
            let kind: String = r.get(3)?;
            let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("{what} {v:?}"));
            let path = NodePath::new(
                RegionId::new(region.clone()).map_err(|_| corrupt("region", &region))?,
                SiteId::new(site.clone()).map_err(|_| corrupt("site", &site))?,
                node_id(node)?,
            );
            let kind = Name::new(kind.clone()).map_err(|_| corrupt("kind", &kind))?;
            steps.clear();
            let mut t = history.query(params![path.node.as_str(), ms_sql(from), ms_sql(until)])?;
            while let Some(r) = t.next()? {
                steps.push(ReadinessStep {
                    at: ts_of(r.get(0)?),
                    to: readiness(&r.get::<_, String>(1)?)?,
                    maintenance: r.get(2)?,
                });
            }
            each(&path, &kind, &steps)?;
        }
        Ok(())
    }
}
