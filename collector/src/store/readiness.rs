//! Readiness in the store (schema migration 6): each node's current readiness in `nodes`,
//! every change in `readiness_transitions`, and what a restarted collector needs to derive
//! readiness again (active faults, the last test of each kind).

use std::collections::HashMap;

use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, Severity, SiteId, TestResult};

use super::StoreError;
use super::db::{Db, ms_sql, ts_of};
use super::nodes::NodeQuery;
use super::sql::args;
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
        if !changes.is_empty() {
            self.conn().lock_numbering("readiness_transitions")?;
        }
        for c in changes {
            let reasons = serde_json::to_string(&c.reasons)?;
            let maintenance = c.reasons.contains(&Reason::Maintenance);
            self.conn().execute(
                "INSERT INTO readiness_transitions (node, at, id, from_state, to_state,
                     maintenance, reasons)
                 VALUES (?1, ?2, (SELECT coalesce(max(id), 0) + 1 FROM readiness_transitions),
                         ?3, ?4, ?5, ?6)",
                args![
                    c.node.as_str(),
                    ms_sql(c.at),
                    c.from.map(Readiness::as_str),
                    c.to.as_str(),
                    maintenance,
                    &reasons,
                ],
            )?;
            self.conn().execute(
                "UPDATE nodes SET readiness = ?2, readiness_reasons = ?3,
                     readiness_since = CASE WHEN readiness IS NOT DISTINCT FROM ?2
                                            THEN readiness_since ELSE ?4 END
                 WHERE node = ?1",
                args![c.node.as_str(), c.to.as_str(), &reasons, ms_sql(c.at)],
            )?;
        }
        Ok(())
    }

    /// A node's current readiness (`None` before its first derivation).
    pub fn node_readiness(&self, node: &NodeId) -> Result<Option<NodeReadiness>, StoreError> {
        let row = self.conn().query_opt(
            "SELECT readiness, readiness_reasons, readiness_since FROM nodes WHERE node = ?1",
            args![node.as_str()],
            |r| {
                Ok((
                    r.get::<Option<String>>(0)?,
                    r.get::<Option<String>>(1)?,
                    r.get::<Option<i64>>(2)?,
                ))
            },
        )?;
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
        let conn = self.conn();
        let mut out: HashMap<NodeId, RestoredReadiness> = HashMap::new();
        conn.each(
            "SELECT node, readiness, readiness_reasons FROM nodes WHERE readiness IS NOT NULL",
            args![],
            |r| {
                let node = node_id(r.get(0)?)?;
                let state = readiness(r.str(1)?)?;
                let reasons: Vec<Reason> =
                    serde_json::from_str(&r.get::<Option<String>>(2)?.unwrap_or_default())
                        .unwrap_or_default();
                out.entry(node).or_default().previous = Some((state, reasons));
                Ok(())
            },
        )?;
        conn.each(
            "SELECT node, fault_key, severity FROM faults WHERE cleared_at IS NULL
             ORDER BY node, fault_key",
            args![],
            |r| {
                let node = node_id(r.get(0)?)?;
                let key = r.str(1)?;
                let sev = r.str(2)?;
                let severity = Severity::ALL
                    .into_iter()
                    .find(|s| s.as_str() == sev)
                    .ok_or_else(|| StoreError::Corrupt(format!("severity {sev:?}")))?;
                let faults = &mut out.entry(node).or_default().faults;
                if !faults.iter().any(|(k, _)| k == key) {
                    faults.push((key.to_owned(), severity));
                }
                Ok(())
            },
        )?;
        // The last run of each node's test: the latest run time; among runs at the same
        // time, the earliest agent `ts`, then result name, then row (the order SQLite's
        // earlier `max()` with bare columns picked from its (node, ts, result) index).
        conn.each(
            "SELECT node, test, result, at FROM (
                 SELECT node, test, result, least(ts, received_at) AS at,
                        row_number() OVER (PARTITION BY node, test
                                           ORDER BY least(ts, received_at) DESC,
                                                    ts, result, id) AS n
                 FROM test_receipts) AS latest
             WHERE n = 1
             ORDER BY node, test",
            args![],
            |r| {
                let node = node_id(r.get(0)?)?;
                let test = r.str(1)?;
                let result = match r.str(2)? {
                    "pass" => TestResult::Pass,
                    "fail" => TestResult::Fail,
                    "error" => TestResult::Error,
                    other => return Err(StoreError::Corrupt(format!("test result {other:?}"))),
                };
                let test =
                    Name::new(test).map_err(|_| StoreError::Corrupt(format!("test {test:?}")))?;
                out.entry(node).or_default().tests.push(LastTest {
                    test,
                    result,
                    at: ts_of(r.get(3)?),
                });
                Ok(())
            },
        )?;
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
        let conn = self.conn();
        let c = q.conditions();
        let sql = format!(
            "SELECT nodes.region, nodes.site, nodes.node, nodes.kind FROM nodes{}
             ORDER BY nodes.region, nodes.site, nodes.node",
            c.sql()
        );
        let mut steps = Vec::new();
        conn.each(&sql, c.values(), |r| {
            let (region, site, node, kind) = (r.str(0)?, r.str(1)?, r.str(2)?, r.str(3)?);
            let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("{what} {v:?}"));
            let path = NodePath::new(
                RegionId::new(region).map_err(|_| corrupt("region", region))?,
                SiteId::new(site).map_err(|_| corrupt("site", site))?,
                node_id(node.to_owned())?,
            );
            let kind = Name::new(kind).map_err(|_| corrupt("kind", kind))?;
            steps.clear();
            conn.each(
                "SELECT at, to_state, maintenance FROM readiness_transitions
                 WHERE node = ?1
                   AND at >= coalesce((SELECT max(p.at) FROM readiness_transitions p
                                       WHERE p.node = ?1 AND p.at < ?2), ?2)
                   AND at < ?3
                 ORDER BY at, id",
                args![path.node.as_str(), ms_sql(from), ms_sql(until)],
                |t| {
                    steps.push(ReadinessStep {
                        at: ts_of(t.get(0)?),
                        to: readiness(t.str(1)?)?,
                        maintenance: t.get(2)?,
                    });
                    Ok(())
                },
            )?;
            each(&path, &kind, &steps)
        })
    }
}
