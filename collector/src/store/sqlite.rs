//! [`Db`]: the embedded SQLite store's synchronous operations. It runs on the store thread
//! (see [`super::Store`]), never on an async worker; tests may drive it directly.
//!
//! Design: WAL with `synchronous = FULL`. The collector promises that a transition is
//! committed before it is announced and that history survives power loss; with NORMAL, WAL
//! commits acknowledged just before a power cut may vanish while their notifications were
//! already sent. FULL costs one fsync per commit, which the store thread amortizes by
//! committing many commands in one transaction.

use std::path::Path;

use alarmnet_protocol::{
    AlertStatus, Birth, Fault, FaultStatus, Name, NodeId, NodePath, RegionId, Severity, SiteId,
    TestReceipt,
};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde::Serialize;

use super::StoreError;
use super::sql::Conn;
use super::schema;
use crate::model::{
    Ack, Alert, AlertId, Cause, Liveness, RuleKind, Silence, SilenceId, Subject, Transition,
    UnixMillis,
};
use crate::uptime::{Step, TestTally};

/// A registered node as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRecord {
    pub path: NodePath,
    pub kind: Name,
    pub name: Option<String>,
    /// The last birth, as received.
    pub info: serde_json::Value,
    pub boot: Option<String>,
    pub hb_interval_ms: u64,
    pub birth_ts: u64,
    pub first_seen: UnixMillis,
    pub last_seen: UnixMillis,
    pub state: Liveness,
    pub state_since: UnixMillis,
    /// The highest sequence number stored for the node, and its boot.
    pub last_seq: Option<(String, u64)>,
}

/// When a node was last heard, and the highest sequence number heard with its boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub node: NodeId,
    pub at: UnixMillis,
    pub seq: Option<(String, u64)>,
}

impl Heard {
    /// Only the time (tests, and nodes whose sequence is unknown).
    pub fn at(node: NodeId, at: UnixMillis) -> Self {
        Self {
            node,
            at,
            seq: None,
        }
    }
}

/// Which nodes to list. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct NodeFilter {
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
    pub kind: Option<Name>,
    pub state: Option<Liveness>,
    pub limit: Option<usize>,
    pub offset: usize,
}

/// The transitions of some nodes in `[from, to)`, plus each node's last transition before
/// `from` (its state when the window opens): enough for exact availability arithmetic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransitionWindow {
    /// At most one per node: the last transition with `at < from`.
    pub before: Vec<Transition>,
    /// Ordered by time, then by insertion.
    pub within: Vec<Transition>,
}

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

/// One delivery attempt of one notification to one output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationAttempt {
    pub alert_id: AlertId,
    pub alert_started_at: UnixMillis,
    pub status: AlertStatus,
    /// The output's name: `mqtt`, `webhook-0`, `alertmanager`, ...
    pub output: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub at: UnixMillis,
    pub ok: bool,
    pub error: Option<String>,
}

/// The store's connection and its operations.
#[derive(Debug)]
pub struct Db {
    conn: Conn,
}

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// An instant as its store column: INTEGER milliseconds since the epoch.
pub(super) fn ms_sql(t: UnixMillis) -> i64 {
    i64_of(t.as_millis())
}

/// An instant from its store column (a negative value reads as the epoch).
pub(super) fn ts_of(v: i64) -> UnixMillis {
    UnixMillis::from_millis(u64_of(v))
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what}: {s:?}")))
}

fn liveness(s: &str) -> Result<Liveness, StoreError> {
    Liveness::from_name(s).ok_or_else(|| StoreError::Corrupt(format!("state {s:?}")))
}

fn cause(s: &str) -> Result<Cause, StoreError> {
    Cause::from_name(s).ok_or_else(|| StoreError::Corrupt(format!("cause {s:?}")))
}

fn status_str(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

fn status(s: &str) -> Result<AlertStatus, StoreError> {
    match s {
        "firing" => Ok(AlertStatus::Firing),
        "resolved" => Ok(AlertStatus::Resolved),
        _ => Err(StoreError::Corrupt(format!("alert status {s:?}"))),
    }
}

/// Alert and silence ids are stored as the text they are on every wire.
impl rusqlite::ToSql for AlertId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.to_string().into())
    }
}

impl rusqlite::ToSql for SilenceId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.to_string().into())
    }
}

fn id<T>(
    what: &str,
    s: String,
    new: impl FnOnce(String) -> Result<T, alarmnet_protocol::IdError>,
) -> Result<T, StoreError> {
    new(s.clone()).map_err(|_| StoreError::Corrupt(format!("{what} {s:?}")))
}

fn opt_id<T>(
    what: &str,
    s: Option<String>,
    new: impl FnOnce(String) -> Result<T, alarmnet_protocol::IdError>,
) -> Result<Option<T>, StoreError> {
    s.map(|s| id(what, s, new)).transpose()
}

impl Db {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A read-only connection to the database at `path`, which the writer has already
    /// opened and migrated (for [`super::Store::read`]).
    pub fn open_reader(path: &Path) -> Result<Db, StoreError> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let found = schema::version(&conn)?;
        if found != schema::MIGRATIONS.len() {
            return Err(StoreError::Corrupt(format!(
                "a reader found schema version {found}, expected {}",
                schema::MIGRATIONS.len()
            )));
        }
        Ok(Db {
            conn: Conn::sqlite(conn),
        })
    }

    /// An in-memory database (tests).
    pub fn open_in_memory() -> Result<Db, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Db, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if mode != "wal" && mode != "memory" {
            return Err(StoreError::Corrupt(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // 64 MiB of page cache: the nodes table of a large network stays in memory, so
        // flushing "last heard" times does not re-read pages from the OS every second.
        conn.pragma_update(None, "cache_size", -65_536)?;
        schema::migrate(&mut conn)?;
        Ok(Db {
            conn: Conn::sqlite(conn),
        })
    }

    /// The underlying connection (the store thread manages transactions with it).
    pub(super) fn conn(&self) -> &Conn {
        &self.conn
    }

    pub(super) fn sqlite(&self) -> &Connection {
        self.conn.as_sqlite().expect("sqlite")
    }

    // ---- nodes ----

    /// Registers a node from its birth, or updates it (path, kind, boot...) on a rebirth.
    /// Its liveness state is left alone: the liveness tracker records transitions.
    pub fn upsert_birth(
        &self,
        path: &NodePath,
        birth: &Birth,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let info = serde_json::to_string(birth)?;
        let hb_ms = (birth.hb_interval_s * 1000.0).round() as u64;
        self.sqlite()
            .prepare_cached(
                "INSERT INTO nodes (node, region, site, kind, name, info, boot, hb_interval_ms,
                    birth_ts, first_seen, last_seen, state, state_since)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, 'unknown', ?10)
                 ON CONFLICT (node) DO UPDATE SET region = ?2, site = ?3, kind = ?4, name = ?5,
                    info = ?6, boot = ?7, hb_interval_ms = ?8, birth_ts = max(birth_ts, ?9),
                    last_seen = max(last_seen, ?10)",
            )?
            .execute(params![
                path.node.as_str(),
                path.region.as_str(),
                path.site.as_str(),
                birth.kind.as_str(),
                birth.name.as_ref().map(|n| n.as_str()),
                info,
                birth.boot.as_str(),
                i64_of(hb_ms),
                i64_of(birth.ts),
                ms_sql(received_at),
            ])?;
        self.name_places(path, birth)
    }

    /// Keeps the display names a birth gives its region and site (tags `region_name`,
    /// `site_name`): the most recent birth carrying a tag wins.
    fn name_places(&self, path: &NodePath, birth: &Birth) -> Result<(), StoreError> {
        let mut upsert = self.sqlite().prepare_cached(
            "INSERT INTO place_names (region, site, name, birth_ts) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (region, site) DO UPDATE SET name = ?3, birth_ts = ?4
             WHERE ?4 >= place_names.birth_ts",
        )?;
        let places = [
            ("", birth.tags.get("region_name")),
            (path.site.as_str(), birth.tags.get("site_name")),
        ];
        for (site, name) in places {
            if let Some(name) = name {
                upsert.execute(params![path.region.as_str(), site, name, i64_of(birth.ts)])?;
            }
        }
        Ok(())
    }

    /// Records when nodes were last heard (coalesced by the caller; never moves backwards)
    /// and, where known, the highest sequence number heard and its boot: one statement per
    /// node.
    pub fn touch(&self, heard: &[Heard]) -> Result<(), StoreError> {
        let mut stmt = self.sqlite().prepare_cached(
            "UPDATE nodes SET last_seen = max(last_seen, ?2),
                 seq_boot = coalesce(?3, seq_boot), last_seq = coalesce(?4, last_seq)
             WHERE node = ?1",
        )?;
        for h in heard {
            let (boot, seq) = h.seq.as_ref().map(|(b, s)| (b.as_str(), *s)).unzip();
            stmt.execute(params![
                h.node.as_str(),
                ms_sql(h.at),
                boot,
                seq.map(i64_of)
            ])?;
        }
        Ok(())
    }

    fn node_row(row: &Row<'_>) -> rusqlite::Result<RawNode> {
        Ok(RawNode {
            node: row.get(0)?,
            region: row.get(1)?,
            site: row.get(2)?,
            kind: row.get(3)?,
            name: row.get(4)?,
            info: row.get(5)?,
            boot: row.get(6)?,
            hb_interval_ms: row.get(7)?,
            birth_ts: row.get(8)?,
            first_seen: row.get(9)?,
            last_seen: row.get(10)?,
            state: row.get(11)?,
            state_since: row.get(12)?,
            seq_boot: row.get(13)?,
            last_seq: row.get(14)?,
        })
    }

    const NODE_COLUMNS: &'static str = "node, region, site, kind, name, info, boot, \
        hb_interval_ms, birth_ts, first_seen, last_seen, state, state_since, seq_boot, last_seq";

    /// Registered nodes matching `filter`, ordered by region, site, node.
    pub fn nodes(&self, filter: &NodeFilter) -> Result<Vec<NodeRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM nodes
             WHERE (?1 IS NULL OR region = ?1) AND (?2 IS NULL OR site = ?2)
               AND (?3 IS NULL OR kind = ?3) AND (?4 IS NULL OR state = ?4)
             ORDER BY region, site, node LIMIT ?5 OFFSET ?6",
            Self::NODE_COLUMNS
        );
        let limit = filter
            .limit
            .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                filter.region.as_ref().map(|r| r.as_str()),
                filter.site.as_ref().map(|s| s.as_str()),
                filter.kind.as_ref().map(|k| k.as_str()),
                filter.state.map(Liveness::as_str),
                limit,
                i64::try_from(filter.offset).unwrap_or(i64::MAX),
            ],
            Self::node_row,
        )?;
        rows.map(|r| r?.into_record()).collect()
    }

    /// One node.
    pub fn node(&self, node: &NodeId) -> Result<Option<NodeRecord>, StoreError> {
        let sql = format!("SELECT {} FROM nodes WHERE node = ?1", Self::NODE_COLUMNS);
        self.sqlite()
            .prepare_cached(&sql)?
            .query_row([node.as_str()], Self::node_row)
            .optional()?
            .map(RawNode::into_record)
            .transpose()
    }

    /// The number of registered nodes.
    pub fn count_nodes(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .sqlite()
            .query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))?;
        Ok(u64_of(n))
    }

    /// Every node's binding (path and birth ts), to seed ingest's registry at start.
    pub fn bindings(&self) -> Result<Vec<(NodePath, u64)>, StoreError> {
        let mut stmt = self
            .sqlite()
            .prepare_cached("SELECT region, site, node, birth_ts FROM nodes")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        rows.map(|r| {
            let (region, site, node, ts) = r?;
            Ok((
                NodePath::new(
                    id("region", region, RegionId::new)?,
                    id("site", site, SiteId::new)?,
                    id("node", node, NodeId::new)?,
                ),
                u64_of(ts),
            ))
        })
        .collect()
    }

    // ---- transitions ----

    /// Appends transitions and updates each node's current state.
    pub fn record_transitions(&self, transitions: &[Transition]) -> Result<(), StoreError> {
        let mut insert = self.sqlite().prepare_cached(
            "INSERT INTO transitions (node, from_state, to_state, at, cause, id)
             VALUES (?1, ?2, ?3, ?4, ?5,
                     (SELECT coalesce(max(id), 0) + 1 FROM transitions))",
        )?;
        let mut update = self
            .sqlite()
            .prepare_cached("UPDATE nodes SET state = ?2, state_since = ?3 WHERE node = ?1")?;
        for t in transitions {
            insert.execute(params![
                t.node.as_str(),
                t.from.as_str(),
                t.to.as_str(),
                ms_sql(t.at),
                t.cause.as_str()
            ])?;
            update.execute(params![t.node.as_str(), t.to.as_str(), ms_sql(t.at)])?;
        }
        Ok(())
    }

    fn transition_row(r: &Row<'_>) -> rusqlite::Result<(String, String, String, i64, String)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    }

    fn to_transition(
        (node, from, to, at, c): (String, String, String, i64, String),
    ) -> Result<Transition, StoreError> {
        Ok(Transition {
            node: id("node", node, NodeId::new)?,
            from: liveness(&from)?,
            to: liveness(&to)?,
            at: ts_of(at),
            cause: cause(&c)?,
        })
    }

    /// One node's transitions in `[from, to)`, oldest first.
    pub fn node_history(
        &self,
        node: &NodeId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Transition>, StoreError> {
        let mut stmt = self.sqlite().prepare_cached(
            "SELECT node, from_state, to_state, at, cause FROM transitions
             WHERE node = ?1 AND at >= ?2 AND at < ?3 ORDER BY at, id",
        )?;
        let rows = stmt.query_map(
            params![node.as_str(), ms_sql(from), ms_sql(to)],
            Self::transition_row,
        )?;
        rows.map(|r| Self::to_transition(r?)).collect()
    }

    /// Transitions of `nodes` (all nodes when `None`) in `[from, to)`, plus each node's last
    /// transition before `from`.
    pub fn transition_window(
        &self,
        nodes: Option<&[NodeId]>,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TransitionWindow, StoreError> {
        let mut window = TransitionWindow::default();
        // A temporary table of the wanted nodes keeps one query plan for any set size.
        self.sqlite()
            .execute_batch("CREATE TEMP TABLE IF NOT EXISTS wanted (node TEXT PRIMARY KEY)")?;
        self.sqlite().execute("DELETE FROM temp.wanted", [])?;
        if let Some(nodes) = nodes {
            let mut insert = self
                .sqlite()
                .prepare_cached("INSERT OR IGNORE INTO temp.wanted (node) VALUES (?1)")?;
            for n in nodes {
                insert.execute([n.as_str()])?;
            }
        }
        let all = nodes.is_none();
        let mut before = self.sqlite().prepare_cached(
            "SELECT t.node, t.from_state, t.to_state, t.at, t.cause FROM transitions t
             WHERE (t.at, t.id) = (SELECT t2.at, t2.id FROM transitions t2
                                   WHERE t2.node = t.node AND t2.at < ?1
                                   ORDER BY t2.at DESC, t2.id DESC LIMIT 1)
               AND (?2 OR t.node IN (SELECT node FROM temp.wanted))
             ORDER BY t.node",
        )?;
        for r in before.query_map(params![ms_sql(from), all], Self::transition_row)? {
            window.before.push(Self::to_transition(r?)?);
        }
        let mut within = self.sqlite().prepare_cached(
            "SELECT node, from_state, to_state, at, cause FROM transitions
             WHERE at >= ?1 AND at < ?2 AND (?3 OR node IN (SELECT node FROM temp.wanted))
             ORDER BY at, id",
        )?;
        for r in within.query_map(params![ms_sql(from), ms_sql(to), all], Self::transition_row)? {
            window.within.push(Self::to_transition(r?)?);
        }
        self.sqlite().execute("DELETE FROM temp.wanted", [])?;
        Ok(window)
    }

    // ---- faults and tests ----

    /// Records a fault message: a raise opens a row (unless the fault is already open: a
    /// no-op), a clear closes the open row. Times are the agent's `ts`, so replayed faults
    /// land at their own time.
    pub fn record_fault(
        &self,
        node: &NodeId,
        fault: &Fault,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let key = fault.key().to_string();
        match fault.status {
            FaultStatus::Raised => {
                self.sqlite()
                    .prepare_cached(
                        "INSERT INTO faults (node, fault_key, severity, raised_at, message, boot,
                            received_at, replay)
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
                         WHERE NOT EXISTS (SELECT 1 FROM faults
                            WHERE node = ?1 AND fault_key = ?2 AND cleared_at IS NULL)",
                    )?
                    .execute(params![
                        node.as_str(),
                        key,
                        fault.severity.as_str(),
                        i64_of(fault.ts),
                        fault.message.as_ref().map(|m| m.as_str()),
                        fault.boot.as_str(),
                        ms_sql(received_at),
                        fault.replay,
                    ])?;
            }
            FaultStatus::Cleared => {
                self.sqlite()
                    .prepare_cached(
                        "UPDATE faults SET cleared_at = max(raised_at, ?3)
                         WHERE node = ?1 AND fault_key = ?2 AND cleared_at IS NULL",
                    )?
                    .execute(params![node.as_str(), key, i64_of(fault.ts)])?;
            }
        }
        Ok(())
    }

    const FAULT_COLUMNS: &'static str =
        "node, fault_key, severity, raised_at, cleared_at, message, replay";

    fn fault_row(r: &Row<'_>) -> rusqlite::Result<RawFault> {
        Ok(RawFault {
            node: r.get(0)?,
            key: r.get(1)?,
            severity: r.get(2)?,
            raised_at: r.get(3)?,
            cleared_at: r.get(4)?,
            message: r.get(5)?,
            replay: r.get(6)?,
        })
    }

    /// A node's faults, newest first; only active ones with `active_only`.
    pub fn faults(&self, node: &NodeId, active_only: bool) -> Result<Vec<FaultRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM faults WHERE node = ?1 AND (NOT ?2 OR cleared_at IS NULL)
             ORDER BY raised_at DESC, id DESC",
            Self::FAULT_COLUMNS
        );
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map(params![node.as_str(), active_only], Self::fault_row)?;
        rows.map(|r| r?.into_record()).collect()
    }

    /// Records a test receipt.
    pub fn record_test(
        &self,
        node: &NodeId,
        test: &TestReceipt,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        let result = serde_json::to_value(test.result)?;
        self.sqlite()
            .prepare_cached(
                "INSERT INTO test_receipts (node, boot, seq, ts, received_at, drill, test, result,
                    duration_ms, metrics, message, replay)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
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
            ])?;
        Ok(())
    }

    /// The number of test receipts of a node (tests and the API's summary).
    pub fn count_tests(&self, node: &NodeId) -> Result<u64, StoreError> {
        let n: i64 = self.sqlite().query_row(
            "SELECT count(*) FROM test_receipts WHERE node = ?1",
            [node.as_str()],
            |r| r.get(0),
        )?;
        Ok(u64_of(n))
    }

    // ---- alerts, acks, silences, notifications ----

    /// Inserts or updates one firing of an alert (keyed by `id` and `started_at`).
    pub fn upsert_alert(&self, a: &Alert) -> Result<(), StoreError> {
        self.sqlite()
            .prepare_cached(
                "INSERT INTO alerts (id, rule, severity, status, region, site, node, kind,
                    started_at, ended_at, summary, notified, ack_by, ack_at, ack_comment, args)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (id, started_at) DO UPDATE SET severity = ?3, status = ?4,
                    ended_at = ?10, summary = ?11, notified = ?12, ack_by = ?13, ack_at = ?14,
                    ack_comment = ?15, args = ?16",
            )?
            .execute(params![
                a.id,
                a.rule.as_str(),
                a.severity.as_str(),
                status_str(a.status),
                a.subject.region().map(|x| x.as_str()),
                a.subject.site().map(|x| x.as_str()),
                a.subject.node().map(|x| x.as_str()),
                a.kind.as_ref().map(|x| x.as_str()),
                ms_sql(a.started_at),
                a.ended_at.map(ms_sql),
                a.summary,
                a.notified,
                a.ack.as_ref().map(|k| k.by.as_str()),
                a.ack.as_ref().map(|k| ms_sql(k.at)),
                a.ack.as_ref().and_then(|k| k.comment.as_deref()),
                (!a.args.is_empty()).then(|| serde_json::to_string(&a.args).unwrap_or_default()),
            ])?;
        Ok(())
    }

    /// Acknowledges the latest firing of alert `id`; keeps the ack in the acks history.
    /// Returns the updated alert, or `None` if there is no such alert.
    pub fn ack_alert(&self, alert_id: AlertId, ack: &Ack) -> Result<Option<Alert>, StoreError> {
        let Some(mut alert) = self.latest_alert(alert_id)? else {
            return Ok(None);
        };
        self.sqlite()
            .prepare_cached(
                "INSERT INTO acks (alert_id, started_at, by, at, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                alert_id,
                ms_sql(alert.started_at),
                ack.by,
                ms_sql(ack.at),
                ack.comment
            ])?;
        alert.ack = Some(ack.clone());
        self.upsert_alert(&alert)?;
        Ok(Some(alert))
    }

    const ALERT_COLUMNS: &'static str = "id, rule, severity, status, region, site, node, kind, \
        started_at, ended_at, summary, notified, ack_by, ack_at, ack_comment, args";

    fn alert_row(r: &Row<'_>) -> rusqlite::Result<RawAlert> {
        Ok(RawAlert {
            id: r.get(0)?,
            rule: r.get(1)?,
            severity: r.get(2)?,
            status: r.get(3)?,
            region: r.get(4)?,
            site: r.get(5)?,
            node: r.get(6)?,
            kind: r.get(7)?,
            started_at: r.get(8)?,
            ended_at: r.get(9)?,
            summary: r.get(10)?,
            notified: r.get(11)?,
            ack_by: r.get(12)?,
            ack_at: r.get(13)?,
            ack_comment: r.get(14)?,
            args: r.get(15)?,
        })
    }

    /// The latest firing (by start) of alert `id`.
    pub fn latest_alert(&self, alert_id: AlertId) -> Result<Option<Alert>, StoreError> {
        let sql = format!(
            "SELECT {} FROM alerts WHERE id = ?1 ORDER BY started_at DESC LIMIT 1",
            Self::ALERT_COLUMNS
        );
        self.sqlite()
            .prepare_cached(&sql)?
            .query_row([alert_id], Self::alert_row)
            .optional()?
            .map(RawAlert::into_alert)
            .transpose()
    }

    /// Alerts with `status` (all when `None`), newest first, at most `limit`.
    pub fn alerts(
        &self,
        status: Option<AlertStatus>,
        limit: usize,
    ) -> Result<Vec<Alert>, StoreError> {
        let sql = format!(
            "SELECT {} FROM alerts WHERE (?1 IS NULL OR status = ?1)
             ORDER BY started_at DESC, row_id DESC LIMIT ?2",
            Self::ALERT_COLUMNS
        );
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map(
            params![
                status.map(status_str),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            Self::alert_row,
        )?;
        rows.map(|r| r?.into_alert()).collect()
    }

    /// Inserts or replaces a silence.
    pub fn upsert_silence(&self, s: &Silence) -> Result<(), StoreError> {
        self.sqlite()
            .prepare_cached(
                "INSERT OR REPLACE INTO silences (id, region, site, node, kind, starts_at,
                    ends_at, created_by, comment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                s.id,
                s.region.as_ref().map(|x| x.as_str()),
                s.site.as_ref().map(|x| x.as_str()),
                s.node.as_ref().map(|x| x.as_str()),
                s.kind.as_ref().map(|x| x.as_str()),
                ms_sql(s.starts_at),
                ms_sql(s.ends_at),
                s.created_by,
                s.comment,
            ])?;
        Ok(())
    }

    const SILENCE_COLUMNS: &'static str =
        "id, region, site, node, kind, starts_at, ends_at, created_by, comment";

    fn silence_row(r: &Row<'_>) -> rusqlite::Result<RawSilence> {
        Ok(RawSilence {
            id: r.get(0)?,
            region: r.get(1)?,
            site: r.get(2)?,
            node: r.get(3)?,
            kind: r.get(4)?,
            starts_at: r.get(5)?,
            ends_at: r.get(6)?,
            created_by: r.get(7)?,
            comment: r.get(8)?,
        })
    }

    /// Silences not yet ended at `now` (all when `None`), by start.
    pub fn silences(&self, now: Option<UnixMillis>) -> Result<Vec<Silence>, StoreError> {
        let sql = format!(
            "SELECT {} FROM silences WHERE (?1 IS NULL OR ends_at > ?1) ORDER BY starts_at, id",
            Self::SILENCE_COLUMNS
        );
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map([now.map(ms_sql)], Self::silence_row)?;
        rows.map(|r| r?.into_silence()).collect()
    }

    /// Ends a silence at `at` (kept in history). Returns whether it existed.
    pub fn end_silence(&self, silence_id: SilenceId, at: UnixMillis) -> Result<bool, StoreError> {
        let n = self.sqlite().execute(
            "UPDATE silences SET ends_at = min(ends_at, max(starts_at, ?2)) WHERE id = ?1",
            params![silence_id, ms_sql(at)],
        )?;
        Ok(n > 0)
    }

    /// Appends one delivery attempt to the notification log.
    pub fn record_notification(&self, n: &NotificationAttempt) -> Result<(), StoreError> {
        self.sqlite()
            .prepare_cached(
                "INSERT INTO notification_log (alert_id, alert_started_at, status, output,
                    attempt, at, ok, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                n.alert_id,
                ms_sql(n.alert_started_at),
                status_str(n.status),
                n.output,
                n.attempt,
                ms_sql(n.at),
                n.ok,
                n.error,
            ])?;
        Ok(())
    }

    /// The delivery attempts for alert `id`, oldest first.
    pub fn notifications(&self, alert_id: AlertId) -> Result<Vec<NotificationAttempt>, StoreError> {
        let mut stmt = self.sqlite().prepare_cached(
            "SELECT alert_id, alert_started_at, status, output, attempt, at, ok, error
             FROM notification_log WHERE alert_id = ?1 ORDER BY at, id",
        )?;
        let rows = stmt.query_map([alert_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, bool>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        rows.map(|r| {
            let (alert_id, started, st, output, attempt, at, ok, error) = r?;
            Ok(NotificationAttempt {
                alert_id: id("alert id", alert_id, AlertId::try_from)?,
                alert_started_at: ts_of(started),
                status: status(&st)?,
                output,
                attempt,
                at: ts_of(at),
                ok,
                error,
            })
        })
        .collect()
    }
}

// ---- lists, counts and summaries: the API's reads, answered in SQL ----

/// A WHERE clause assembled from constant SQL fragments written in this file, with the
/// values they bind, in order. No value from a request ever becomes SQL text.
#[derive(Debug, Default, Clone)]
pub(super) struct Conditions {
    fragments: Vec<&'static str>,
    values: Vec<SqlValue>,
}

impl Conditions {
    fn and(&mut self, fragment: &'static str, values: impl IntoIterator<Item = SqlValue>) {
        self.fragments.push(fragment);
        self.values.extend(values);
    }

    /// `fragment`, binding one text value, only when the value is given.
    fn eq(&mut self, fragment: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.and(fragment, [text(v)]);
        }
    }

    /// The values to bind, in order.
    pub(super) fn values(&self) -> &[SqlValue] {
        &self.values
    }

    /// ` WHERE a AND b ...`, or nothing.
    pub(super) fn sql(&self) -> String {
        if self.fragments.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.fragments.join(" AND "))
        }
    }

    /// These conditions and one more (a page's "after the cursor").
    fn with(&self, fragment: &'static str, values: impl IntoIterator<Item = SqlValue>) -> Self {
        let mut more = self.clone();
        more.and(fragment, values);
        more
    }
}

fn text(s: &str) -> SqlValue {
    SqlValue::Text(s.to_owned())
}

fn int(v: u64) -> SqlValue {
    SqlValue::Integer(i64_of(v))
}

fn ts_int(t: UnixMillis) -> SqlValue {
    SqlValue::Integer(ms_sql(t))
}

/// `values` padded with NULLs to `N` slots, for a fixed `IN (?, ...)` of `N` placeholders
/// (`x IN ('a', NULL)` holds only for `'a'`).
fn slots<const N: usize>(values: impl IntoIterator<Item = SqlValue>) -> [SqlValue; N] {
    let mut out: [SqlValue; N] = std::array::from_fn(|_| SqlValue::Null);
    for (slot, v) in out.iter_mut().zip(values) {
        *slot = v;
    }
    out
}

/// A borrowed text column (no allocation).
fn text_at<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r str, StoreError> {
    row.get_ref(i)?
        .as_str()
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

/// One row more than a page holds: whether it exists says whether a page follows.
fn limit_plus_one(limit: usize) -> SqlValue {
    SqlValue::Integer(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
}

/// One page of a list in key order, and how many items match in all pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Paged<T, K> {
    pub items: Vec<T>,
    /// The key of the page's last item, when more items follow it: where the next page
    /// starts (exclusive).
    pub next: Option<K>,
    pub total: u64,
}

impl<T, K: Clone> Paged<T, K> {
    /// `rows` holds up to `limit + 1` keyed items; the extra one only says a page follows.
    pub(super) fn from_rows(mut rows: Vec<(K, T)>, limit: usize, total: u64) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next = if more {
            rows.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        Self {
            items: rows.into_iter().map(|(_, t)| t).collect(),
            next,
            total,
        }
    }
}

/// Which nodes a list, count, summary or uptime report covers. Empty fields match all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeQuery {
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
    pub node: Option<NodeId>,
    pub kind: Option<Name>,
    /// Any of these states (all states when empty).
    pub states: Vec<Liveness>,
    /// Only nodes in this readiness state.
    pub readiness: Option<crate::readiness::Readiness>,
}

impl NodeQuery {
    pub(super) fn conditions(&self) -> Conditions {
        let mut c = Conditions::default();
        // Qualified: the uptime query joins `transitions`, which has a `node` too.
        c.eq("nodes.region = ?", self.region.as_ref().map(|x| x.as_str()));
        c.eq("nodes.site = ?", self.site.as_ref().map(|x| x.as_str()));
        c.eq("nodes.node = ?", self.node.as_ref().map(|x| x.as_str()));
        c.eq("nodes.kind = ?", self.kind.as_ref().map(|x| x.as_str()));
        if !self.states.is_empty() {
            let states = self.states.iter().map(|s| text(s.as_str()));
            c.and("nodes.state IN (?, ?, ?, ?, ?, ?)", slots::<6>(states));
        }
        c.eq("nodes.readiness = ?", self.readiness.map(|r| r.as_str()));
        c
    }
}

/// The position of a node in the node list's order (region, site, node).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeKey {
    pub region: RegionId,
    pub site: SiteId,
    pub node: NodeId,
}

/// A node as lists show it: its columns, without the birth JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBrief {
    pub path: NodePath,
    pub kind: Name,
    pub name: Option<String>,
    pub state: Liveness,
    pub state_since: UnixMillis,
    pub last_seen: UnixMillis,
    /// Faults raised and not cleared.
    pub active_faults: u64,
}

/// Nodes of one (region, site) in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceCount {
    pub region: RegionId,
    pub site: SiteId,
    pub state: Liveness,
    pub nodes: u64,
}

/// A display name of a region (`site` is `None`) or of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceName {
    pub region: RegionId,
    pub site: Option<SiteId>,
    pub name: String,
}

/// Firing alerts of one severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiringCount {
    pub severity: Severity,
    pub firing: u64,
    /// Firing and not acknowledged.
    pub unacked: u64,
}

/// Which alerts a list covers. Empty fields match all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    pub status: Option<AlertStatus>,
    /// Any of these severities (all when empty).
    pub severities: Vec<Severity>,
    pub rule: Option<RuleKind>,
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
    pub node: Option<NodeId>,
    pub kind: Option<Name>,
    /// Acknowledged (`true`) or not (`false`).
    pub acked: Option<bool>,
    /// Active at some instant of `[from, to)`: started before `to`, not ended before `from`.
    pub window: Option<(UnixMillis, UnixMillis)>,
}

impl AlertQuery {
    fn conditions(&self) -> Conditions {
        let mut c = Conditions::default();
        c.eq("status = ?", self.status.map(status_str));
        if !self.severities.is_empty() {
            let sev = self.severities.iter().map(|s| text(s.as_str()));
            c.and("severity IN (?, ?, ?, ?, ?)", slots::<5>(sev));
        }
        c.eq("rule = ?", self.rule.as_ref().map(|x| x.as_str()));
        c.eq("region = ?", self.region.as_ref().map(|x| x.as_str()));
        c.eq("site = ?", self.site.as_ref().map(|x| x.as_str()));
        c.eq("node = ?", self.node.as_ref().map(|x| x.as_str()));
        c.eq("kind = ?", self.kind.as_ref().map(|x| x.as_str()));
        match self.acked {
            Some(true) => c.and("ack_by IS NOT NULL", []),
            Some(false) => c.and("ack_by IS NULL", []),
            None => {}
        }
        if let Some((from, to)) = self.window {
            c.and(
                "started_at < ? AND (ended_at IS NULL OR ended_at >= ?)",
                [ts_int(to), ts_int(from)],
            );
        }
        c
    }
}

/// The position of a row in a newest-first list: its time, then its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeKey {
    pub at: UnixMillis,
    pub id: i64,
}

/// A silence's status at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceStatus {
    /// Started and not ended.
    Active,
    /// Not started yet.
    Pending,
    /// Ended.
    Expired,
}

/// Which silences a list covers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SilenceQuery {
    /// The instant statuses are judged at.
    pub now: UnixMillis,
    /// `None`: active and pending (not expired).
    pub status: Option<SilenceStatus>,
    pub region: Option<RegionId>,
    pub site: Option<SiteId>,
}

impl SilenceQuery {
    fn conditions(&self) -> Conditions {
        let mut c = Conditions::default();
        let now = ts_int(self.now);
        match self.status {
            None => c.and("ends_at > ?", [now]),
            Some(SilenceStatus::Active) => {
                c.and("starts_at <= ? AND ends_at > ?", [now.clone(), now])
            }
            Some(SilenceStatus::Pending) => {
                c.and("starts_at > ? AND ends_at > ?", [now.clone(), now])
            }
            Some(SilenceStatus::Expired) => c.and("ends_at <= ?", [now]),
        }
        c.eq("region = ?", self.region.as_ref().map(|x| x.as_str()));
        c.eq("site = ?", self.site.as_ref().map(|x| x.as_str()));
        c
    }
}

/// The position of a silence in the newest-first list: its start, then its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SilenceKey {
    pub starts_at: UnixMillis,
    pub id: SilenceId,
}

impl Db {
    fn count(&self, table_sql: &str, c: &Conditions) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM {table_sql}{}", c.sql());
        let n: i64 = self
            .sqlite()
            .prepare_cached(&sql)?
            .query_row(params_from_iter(&c.values), |r| r.get(0))?;
        Ok(u64_of(n))
    }

    /// One page of the node list (region, site, node order) after `after`.
    pub fn node_page(
        &self,
        q: &NodeQuery,
        after: Option<&NodeKey>,
        limit: usize,
    ) -> Result<Paged<NodeBrief, NodeKey>, StoreError> {
        let c = q.conditions();
        let total = self.count("nodes", &c)?;
        let mut page = match after {
            Some(k) => c.with(
                "(region, site, node) > (?, ?, ?)",
                [
                    text(k.region.as_str()),
                    text(k.site.as_str()),
                    text(k.node.as_str()),
                ],
            ),
            None => c,
        };
        let sql = format!(
            "SELECT node, region, site, kind, name, state, state_since, last_seen,
                (SELECT count(*) FROM faults f WHERE f.node = nodes.node AND f.cleared_at IS NULL)
             FROM nodes{} ORDER BY region, site, node LIMIT ?",
            page.sql()
        );
        page.values.push(limit_plus_one(limit));
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(&page.values))?;
        let mut out = Vec::with_capacity(limit.min(1024) + 1);
        while let Some(r) = rows.next()? {
            let path = NodePath::new(
                id("region", r.get(1)?, RegionId::new)?,
                id("site", r.get(2)?, SiteId::new)?,
                id("node", r.get(0)?, NodeId::new)?,
            );
            let key = NodeKey {
                region: path.region.clone(),
                site: path.site.clone(),
                node: path.node.clone(),
            };
            let brief = NodeBrief {
                path,
                kind: id("kind", r.get(3)?, Name::new)?,
                name: r.get(4)?,
                state: liveness(text_at(r, 5)?)?,
                state_since: ts_of(r.get(6)?),
                last_seen: ts_of(r.get(7)?),
                active_faults: u64_of(r.get(8)?),
            };
            out.push((key, brief));
        }
        Ok(Paged::from_rows(out, limit, total))
    }

    /// Nodes per (region, site, state), ordered by region and site.
    pub fn place_counts(&self, q: &NodeQuery) -> Result<Vec<PlaceCount>, StoreError> {
        let c = q.conditions();
        let sql = format!(
            "SELECT region, site, state, count(*) FROM nodes{}
             GROUP BY region, site, state ORDER BY region, site, state",
            c.sql()
        );
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(&c.values))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(PlaceCount {
                region: id("region", r.get(0)?, RegionId::new)?,
                site: id("site", r.get(1)?, SiteId::new)?,
                state: liveness(text_at(r, 2)?)?,
                nodes: u64_of(r.get(3)?),
            });
        }
        Ok(out)
    }

    /// The display names of regions and sites (from birth tags), ordered by region, site.
    pub fn place_names(&self) -> Result<Vec<PlaceName>, StoreError> {
        let mut stmt = self
            .sqlite()
            .prepare_cached("SELECT region, site, name FROM place_names ORDER BY region, site")?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let site: String = r.get(1)?;
            out.push(PlaceName {
                region: id("region", r.get(0)?, RegionId::new)?,
                site: (!site.is_empty())
                    .then(|| id("site", site, SiteId::new))
                    .transpose()?,
                name: r.get(2)?,
            });
        }
        Ok(out)
    }

    /// Firing alerts per severity (only severities with some).
    pub fn firing_counts(&self) -> Result<Vec<FiringCount>, StoreError> {
        let mut stmt = self.sqlite().prepare_cached(
            "SELECT severity, count(*), sum(ack_by IS NULL) FROM alerts
             WHERE status = 'firing' GROUP BY severity",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(FiringCount {
                severity: parse("severity", text_at(r, 0)?)?,
                firing: u64_of(r.get(1)?),
                unacked: u64_of(r.get(2)?),
            });
        }
        Ok(out)
    }

    /// One page of alerts, newest first (by start, then row), after `after`.
    pub fn alert_page(
        &self,
        q: &AlertQuery,
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Paged<Alert, TimeKey>, StoreError> {
        let c = q.conditions();
        let total = self.count("alerts", &c)?;
        let mut page = match after {
            Some(k) => c.with(
                "(started_at, row_id) < (?, ?)",
                [ts_int(k.at), SqlValue::Integer(k.id)],
            ),
            None => c,
        };
        let sql = format!(
            "SELECT {}, row_id FROM alerts{} ORDER BY started_at DESC, row_id DESC LIMIT ?",
            Self::ALERT_COLUMNS,
            page.sql()
        );
        page.values.push(limit_plus_one(limit));
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(&page.values), |r| {
            Ok((Self::alert_row(r)?, r.get::<_, i64>(16)?))
        })?;
        let rows = rows
            .map(|r| {
                let (raw, row_id) = r?;
                let alert = raw.into_alert()?;
                let key = TimeKey {
                    at: alert.started_at,
                    id: row_id,
                };
                Ok((key, alert))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Paged::from_rows(rows, limit, total))
    }

    /// One page of silences, newest first (by start, then id), after `after`.
    pub fn silence_page(
        &self,
        q: &SilenceQuery,
        after: Option<&SilenceKey>,
        limit: usize,
    ) -> Result<Paged<Silence, SilenceKey>, StoreError> {
        let c = q.conditions();
        let total = self.count("silences", &c)?;
        let mut page = match after {
            Some(k) => c.with(
                "(starts_at, id) < (?, ?)",
                [ts_int(k.starts_at), text(&k.id.to_string())],
            ),
            None => c,
        };
        let sql = format!(
            "SELECT {} FROM silences{} ORDER BY starts_at DESC, id DESC LIMIT ?",
            Self::SILENCE_COLUMNS,
            page.sql()
        );
        page.values.push(limit_plus_one(limit));
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(&page.values), Self::silence_row)?;
        let rows = rows
            .map(|r| {
                let s = r?.into_silence()?;
                let key = SilenceKey {
                    starts_at: s.starts_at,
                    id: s.id,
                };
                Ok((key, s))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Paged::from_rows(rows, limit, total))
    }

    /// One page of a node's transitions with `at` in `[from, to)`, newest first.
    pub fn transition_page(
        &self,
        node: &NodeId,
        (from, to): (UnixMillis, UnixMillis),
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Paged<Transition, TimeKey>, StoreError> {
        let mut c = Conditions::default();
        c.and(
            "node = ? AND at >= ? AND at < ?",
            [text(node.as_str()), ts_int(from), ts_int(to)],
        );
        let total = self.count("transitions", &c)?;
        let mut page = match after {
            Some(k) => c.with("(at, id) < (?, ?)", [ts_int(k.at), SqlValue::Integer(k.id)]),
            None => c,
        };
        let sql = format!(
            "SELECT node, from_state, to_state, at, cause, id FROM transitions{}
             ORDER BY at DESC, id DESC LIMIT ?",
            page.sql()
        );
        page.values.push(limit_plus_one(limit));
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(&page.values), |r| {
            Ok((Self::transition_row(r)?, r.get::<_, i64>(5)?))
        })?;
        let rows = rows
            .map(|r| {
                let (raw, row_id) = r?;
                let t = Self::to_transition(raw)?;
                Ok((
                    TimeKey {
                        at: t.at,
                        id: row_id,
                    },
                    t,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Paged::from_rows(rows, limit, total))
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
            Some(k) => c.with(
                "(raised_at, id) < (?, ?)",
                [ts_int(k.at), SqlValue::Integer(k.id)],
            ),
            None => c,
        };
        let sql = format!(
            "SELECT {}, id FROM faults{} ORDER BY raised_at DESC, id DESC LIMIT ?",
            Self::FAULT_COLUMNS,
            page.sql()
        );
        page.values.push(limit_plus_one(limit));
        let mut stmt = self.sqlite().prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(&page.values), |r| {
            Ok((Self::fault_row(r)?, r.get::<_, i64>(7)?))
        })?;
        let rows = rows
            .map(|r| {
                let (raw, row_id) = r?;
                let f = raw.into_record()?;
                Ok((
                    TimeKey {
                        at: UnixMillis::from_millis(f.raised_at),
                        id: row_id,
                    },
                    f,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Paged::from_rows(rows, limit, total))
    }

    /// Streams the nodes matching `q` in `shard` (in region, site, node order), each with
    /// its transitions from the last one before `from` up to `until` (exclusive), oldest
    /// first (equal times in stored order), and how its tests with `ts` in `[from, until)`
    /// went: what the uptime engine needs, without holding every transition. Nodes
    /// without transitions are given with none.
    ///
    /// Design: one small indexed query per node rather than one join over all of them. The
    /// join carried the node's four columns on each of a million rows and measured 0.6 to
    /// 0.9 s for 10 000 nodes; per node, each row is four columns read in order from the
    /// clustered table (schema migration 5). Shards let two reader threads share a report.
    pub fn each_node_history(
        &self,
        q: &NodeQuery,
        (from, until): (UnixMillis, UnixMillis),
        shard: Shard,
        mut each: impl FnMut(&NodePath, &Name, &[Step], TestTally) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut c = q.conditions();
        if shard.of > 1 {
            c.and(
                "nodes.rowid % ? = ?",
                [int(u64::from(shard.of)), int(u64::from(shard.index))],
            );
        }
        let sql = format!(
            "SELECT nodes.region, nodes.site, nodes.node, nodes.kind FROM nodes{}
             ORDER BY nodes.region, nodes.site, nodes.node",
            c.sql()
        );
        let mut nodes = self.sqlite().prepare_cached(&sql)?;
        let mut history = self.sqlite().prepare_cached(
            "SELECT from_state, to_state, at, cause FROM transitions
             WHERE node = ?1
               AND at >= coalesce((SELECT max(p.at) FROM transitions p
                                   WHERE p.node = ?1 AND p.at < ?2), ?2)
               AND at < ?3
             ORDER BY at, id",
        )?;
        let mut tests = self.sqlite().prepare_cached(
            "SELECT count(*), count(*) FILTER (WHERE result = 'pass'),
                    count(*) FILTER (WHERE result = 'fail')
             FROM test_receipts WHERE node = ?1 AND ts >= ?2 AND ts < ?3",
        )?;
        let mut steps: Vec<Step> = Vec::new();
        let mut rows = nodes.query(params_from_iter(&c.values))?;
        while let Some(r) = rows.next()? {
            let path = NodePath::new(
                id("region", r.get(0)?, RegionId::new)?,
                id("site", r.get(1)?, SiteId::new)?,
                id("node", r.get(2)?, NodeId::new)?,
            );
            let kind = id("kind", r.get(3)?, Name::new)?;
            steps.clear();
            let mut t = history.query(params![path.node.as_str(), ms_sql(from), ms_sql(until)])?;
            while let Some(r) = t.next()? {
                steps.push(Step {
                    from: liveness(text_at(r, 0)?)?,
                    to: liveness(text_at(r, 1)?)?,
                    at: ts_of(r.get(2)?),
                    cause: cause(text_at(r, 3)?)?,
                });
            }
            let tally = tests.query_row(
                params![path.node.as_str(), ms_sql(from), ms_sql(until)],
                |r| {
                    Ok(TestTally {
                        run: u64_of(r.get(0)?),
                        passed: u64_of(r.get(1)?),
                        failed: u64_of(r.get(2)?),
                    })
                },
            )?;
            each(&path, &kind, &steps, tally)?;
        }
        Ok(())
    }
}

/// One of `of` disjoint parts of the nodes, so that several readers can share a report:
/// `index` in `0..of`. [`Shard::ALL`] is every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub of: u32,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, of: 1 };
}

struct RawNode {
    node: String,
    region: String,
    site: String,
    kind: String,
    name: Option<String>,
    info: String,
    boot: Option<String>,
    hb_interval_ms: i64,
    birth_ts: i64,
    first_seen: i64,
    last_seen: i64,
    state: String,
    state_since: i64,
    seq_boot: Option<String>,
    last_seq: Option<i64>,
}

impl RawNode {
    fn into_record(self) -> Result<NodeRecord, StoreError> {
        Ok(NodeRecord {
            path: NodePath::new(
                id("region", self.region, RegionId::new)?,
                id("site", self.site, SiteId::new)?,
                id("node", self.node, NodeId::new)?,
            ),
            kind: id("kind", self.kind, Name::new)?,
            name: self.name,
            info: serde_json::from_str(&self.info)?,
            boot: self.boot,
            hb_interval_ms: u64_of(self.hb_interval_ms),
            birth_ts: u64_of(self.birth_ts),
            first_seen: ts_of(self.first_seen),
            last_seen: ts_of(self.last_seen),
            state: liveness(&self.state)?,
            state_since: ts_of(self.state_since),
            last_seq: self.seq_boot.zip(self.last_seq.map(u64_of)),
        })
    }
}

struct RawAlert {
    id: String,
    rule: String,
    severity: String,
    status: String,
    region: Option<String>,
    site: Option<String>,
    node: Option<String>,
    kind: Option<String>,
    started_at: i64,
    ended_at: Option<i64>,
    summary: String,
    notified: bool,
    ack_by: Option<String>,
    ack_at: Option<i64>,
    ack_comment: Option<String>,
    args: Option<String>,
}

impl RawAlert {
    fn into_alert(self) -> Result<Alert, StoreError> {
        let ack = match (self.ack_by, self.ack_at) {
            (Some(by), Some(at)) => Some(Ack {
                by,
                at: ts_of(at),
                comment: self.ack_comment,
            }),
            _ => None,
        };
        let subject = Subject::from_labels(
            opt_id("region", self.region, RegionId::new)?,
            opt_id("site", self.site, SiteId::new)?,
            opt_id("node", self.node, NodeId::new)?,
        )
        .ok_or_else(|| StoreError::Corrupt(format!("subject of alert {}", self.id)))?;
        Ok(Alert {
            id: id("alert id", self.id, AlertId::try_from)?,
            rule: id("rule", self.rule, |s| s.parse::<RuleKind>())?,
            severity: parse("severity", &self.severity)?,
            status: status(&self.status)?,
            subject,
            kind: opt_id("kind", self.kind, Name::new)?,
            started_at: ts_of(self.started_at),
            ended_at: self.ended_at.map(ts_of),
            summary: self.summary,
            // Written by this code from a `Tags`; an unreadable value only loses the wording.
            args: self
                .args
                .and_then(|a| serde_json::from_str(&a).ok())
                .unwrap_or_default(),
            ack,
            notified: self.notified,
        })
    }
}

struct RawFault {
    node: String,
    key: String,
    severity: String,
    raised_at: i64,
    cleared_at: Option<i64>,
    message: Option<String>,
    replay: bool,
}

impl RawFault {
    fn into_record(self) -> Result<FaultRecord, StoreError> {
        Ok(FaultRecord {
            node: id("node", self.node, NodeId::new)?,
            key: self.key,
            severity: parse("severity", &self.severity)?,
            raised_at: u64_of(self.raised_at),
            cleared_at: self.cleared_at.map(u64_of),
            message: self.message,
            replay: self.replay,
        })
    }
}

struct RawSilence {
    id: String,
    region: Option<String>,
    site: Option<String>,
    node: Option<String>,
    kind: Option<String>,
    starts_at: i64,
    ends_at: i64,
    created_by: String,
    comment: Option<String>,
}

impl RawSilence {
    fn into_silence(self) -> Result<Silence, StoreError> {
        Ok(Silence {
            id: id("silence id", self.id, SilenceId::try_from)?,
            region: opt_id("region", self.region, RegionId::new)?,
            site: opt_id("site", self.site, SiteId::new)?,
            node: opt_id("node", self.node, NodeId::new)?,
            kind: opt_id("kind", self.kind, Name::new)?,
            starts_at: ts_of(self.starts_at),
            ends_at: ts_of(self.ends_at),
            created_by: self.created_by,
            comment: self.comment,
        })
    }
}
