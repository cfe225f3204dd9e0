//! Faults as nodes raise and clear them, and test receipts as they arrive.

use alarmnet_protocol::{Fault, FaultStatus, NodeId, Severity, TestReceipt};
use serde::Serialize;

use super::StoreError;
use super::db::{Db, i64_of, id, ms_sql, parse, u64_of};
use super::lists::{Conditions, Paged, TimeKey, limit_plus_one, text, ts_int};
use super::sql::{Row, Value, args};
use crate::model::UnixMillis;

/// One fault in history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultRecord {
    pub node: NodeId,
    pub key: String,
    pub severity: Severity,
    pub raised_at: u64,
    pub cleared_at: Option<u64>,
    pub message: Option<String>,
    pub replay: bool,
}

const FAULT_COLUMNS: &str = "node, fault_key, severity, raised_at, cleared_at, message, replay";

fn fault_record(r: &Row<'_>) -> Result<FaultRecord, StoreError> {
    Ok(FaultRecord {
        node: id("node", r.get(0)?, NodeId::new)?,
        key: r.get(1)?,
        severity: parse("severity", r.str(2)?)?,
        raised_at: u64_of(r.get(3)?),
        cleared_at: r.get::<Option<i64>>(4)?.map(u64_of),
        message: r.get(5)?,
        replay: r.get(6)?,
    })
}

impl Db {
    /// Records a fault message: a raise opens a row (unless the fault is already open: a
    /// no-op), a clear closes the open row. Times are the agent's `ts`, so replayed faults
    /// land at their own time.
    ///
    /// The casts type the values PostgreSQL cannot infer from a bare `SELECT` list.
    pub fn record_fault(
        &self,
        node: &NodeId,
        fault: &Fault,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let key = fault.key().to_string();
        match fault.status {
            FaultStatus::Raised => {
                self.conn().execute(
                    "INSERT INTO faults (node, fault_key, severity, raised_at, message, boot,
                        received_at, replay)
                     SELECT ?1, ?2, CAST(?3 AS TEXT), CAST(?4 AS BIGINT), CAST(?5 AS TEXT),
                        CAST(?6 AS TEXT), CAST(?7 AS BIGINT), CAST(?8 AS BIGINT)
                     WHERE NOT EXISTS (SELECT 1 FROM faults
                        WHERE node = ?1 AND fault_key = ?2 AND cleared_at IS NULL)",
                    args![
                        node.as_str(),
                        &key,
                        fault.severity.as_str(),
                        i64_of(fault.ts),
                        fault.message.as_ref().map(|m| m.as_str()),
                        fault.boot.as_str(),
                        ms_sql(received_at),
                        fault.replay,
                    ],
                )?;
            }
            FaultStatus::Cleared => {
                self.conn().execute(
                    "UPDATE faults SET cleared_at = greatest(raised_at, ?3)
                     WHERE node = ?1 AND fault_key = ?2 AND cleared_at IS NULL",
                    args![node.as_str(), &key, i64_of(fault.ts)],
                )?;
            }
        }
        Ok(())
    }

    /// A node's faults, newest first; only active ones with `active_only`.
    pub fn faults(&self, node: &NodeId, active_only: bool) -> Result<Vec<FaultRecord>, StoreError> {
        let sql = format!(
            "SELECT {FAULT_COLUMNS} FROM faults WHERE node = ?1 AND (NOT ?2 OR cleared_at IS NULL)
             ORDER BY raised_at DESC, id DESC"
        );
        self.conn()
            .query(&sql, args![node.as_str(), active_only], fault_record)
    }

    /// One page of a node's faults active at some instant of `[from, to)` (raised before
    /// `to`, not cleared before `from`), newest raise first.
    pub fn fault_page(
        &self,
        node: &NodeId,
        (from, to): (UnixMillis, UnixMillis),
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Paged<FaultRecord, TimeKey>, StoreError> {
        let mut c = Conditions::default();
        c.and(
            "node = ? AND raised_at < ? AND (cleared_at IS NULL OR cleared_at >= ?)",
            [text(node.as_str()), ts_int(to), ts_int(from)],
        );
        let total = self.count("faults", &c)?;
        let mut page = match after {
            Some(k) => c.with("(raised_at, id) < (?, ?)", [ts_int(k.at), Value::Int(k.id)]),
            None => c,
        };
        let sql = format!(
            "SELECT {FAULT_COLUMNS}, id FROM faults{} ORDER BY raised_at DESC, id DESC LIMIT ?",
            page.sql()
        );
        page.push(limit_plus_one(limit));
        let rows = self.conn().query(&sql, page.values(), |r| {
            let f = fault_record(r)?;
            let key = TimeKey {
                at: UnixMillis::from_millis(f.raised_at),
                id: r.get(7)?,
            };
            Ok((key, f))
        })?;
        Ok(Paged::from_rows(rows, limit, total))
    }

    /// Records a test receipt.
    pub fn record_test(
        &self,
        node: &NodeId,
        test: &TestReceipt,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let result = serde_json::to_value(test.result)?;
        self.conn().execute(
            "INSERT INTO test_receipts (node, boot, seq, ts, received_at, drill, test, result,
                duration_ms, metrics, message, replay)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            args![
                node.as_str(),
                test.boot.as_str(),
                i64_of(test.seq),
                i64_of(test.ts),
                ms_sql(received_at),
                test.drill.as_ref().map(|d| d.as_str()),
                test.test.as_str(),
                result.as_str().unwrap_or("error"),
                test.duration_ms.map(i64_of),
                serde_json::to_string(&test.metrics)?,
                test.message.as_ref().map(|m| m.as_str()),
                test.replay,
            ],
        )?;
        // A late receipt (a replayed spool) counts in a summarized day's tally.
        let ts = UnixMillis::from_millis(test.ts);
        if self.summaries_reach()?.is_some_and(|reach| ts < reach) {
            let next = ts + std::time::Duration::from_millis(1);
            self.invalidate_summaries(super::days::Whose::Node(node), ts, Some(next))?;
        }
        Ok(())
    }

    /// The number of test receipts of a node (tests and the API's summary).
    pub fn count_tests(&self, node: &NodeId) -> Result<u64, StoreError> {
        self.conn().query_one(
            "SELECT count(*) FROM test_receipts WHERE node = ?1",
            args![node.as_str()],
            |r| Ok(u64_of(r.get(0)?)),
        )
    }
}
