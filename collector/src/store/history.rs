//! Liveness history: each node's transitions, the windows uptime reports read, and the
//! per-node stream of a long report.

use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, SiteId};

use super::StoreError;
use super::days::Whose;
use super::db::{Db, cause, i64_of_usize, id, liveness, ms_sql, ts_of, u64_of};
use super::lists::{Conditions, Paged, TimeKey, int, limit_plus_one, text, ts_int};
use super::nodes::NodeQuery;
use super::sql::{Dialect, KEY, Row, Value, args, chunks, join_each, value_rows};
use crate::model::{Transition, UnixMillis};
use crate::uptime::{Step, TestTally};

/// The transitions of some nodes in `[from, to)`, plus each node's last transition before
/// `from` (its state when the window opens): enough for exact availability arithmetic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransitionWindow {
    /// At most one per node: the last transition with `at < from`.
    pub before: Vec<Transition>,
    /// Ordered by time, then by insertion.
    pub within: Vec<Transition>,
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

    /// The conditions of `q`, and this shard's nodes only.
    pub(super) fn conditions(self, q: &NodeQuery) -> Conditions {
        let mut c = q.conditions();
        if self.of > 1 {
            c.and(
                "nodes.rowid % ? = ?",
                [int(u64::from(self.of)), int(u64::from(self.index))],
            );
        }
        c
    }
}

impl Db {
    /// Streams the rows of `sql` (ordered by node; columns 0 to 3 the node's region, site,
    /// id and kind, as the queries joining `nodes` to a node's rows give them) grouped by
    /// node: `row` reads a row's own part (`None`: the node has none, a `LEFT JOIN`'s
    /// empty side), and `each` gets every node with its parts, in the rows' order.
    pub(super) fn each_by_node<T>(
        &self,
        sql: &str,
        values: &[Value<'_>],
        mut row: impl FnMut(&Row<'_>) -> Result<Option<T>, StoreError>,
        mut each: impl FnMut(&NodePath, &Name, &mut Vec<T>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut current: Option<(NodePath, Name)> = None;
        let mut parts: Vec<T> = Vec::new();
        let mut flush = |node: Option<(NodePath, Name)>, parts: &mut Vec<T>| {
            let Some((path, kind)) = node else {
                return Ok(());
            };
            let done = each(&path, &kind, parts);
            parts.clear();
            done
        };
        self.conn().each_streamed(sql, values, |r| {
            let node: &str = r.str(2)?;
            if current
                .as_ref()
                .is_none_or(|(p, _)| p.node.as_str() != node)
            {
                let path = NodePath::new(
                    id("region", r.get(0)?, RegionId::new)?,
                    id("site", r.get(1)?, SiteId::new)?,
                    id("node", r.get(2)?, NodeId::new)?,
                );
                let kind = id("kind", r.get(3)?, Name::new)?;
                flush(current.replace((path, kind)), &mut parts)?;
            }
            if let Some(part) = row(r)? {
                parts.push(part);
            }
            Ok(())
        })?;
        flush(current.take(), &mut parts)
    }
}

const TRANSITION_COLUMNS: &str = "node, from_state, to_state, at, cause";

/// A transition from the five [`TRANSITION_COLUMNS`].
fn transition(r: &Row<'_>) -> Result<Transition, StoreError> {
    Ok(Transition {
        node: id("node", r.get(0)?, NodeId::new)?,
        from: liveness(r.str(1)?)?,
        to: liveness(r.str(2)?)?,
        at: ts_of(r.get(3)?),
        cause: cause(r.str(4)?)?,
    })
}

impl Db {
    /// Appends transitions and updates each node's current state (to its last
    /// transition's). Ids follow the order given.
    ///
    /// Design: on PostgreSQL each statement is a round trip (a region going dark is
    /// thousands of transitions in one commit), so they go [`chunks`] at a time, each an
    /// `INSERT … SELECT` from a `VALUES` list; SQLite runs in the process, where one
    /// prepared statement per row is faster than any join.
    pub fn record_transitions(&self, transitions: &[Transition]) -> Result<(), StoreError> {
        if transitions.is_empty() {
            return Ok(());
        }
        self.conn().lock_numbering("transitions")?;
        // Late: every summarized day of a node from its transition's `at` on is computed
        // again.
        let first = transitions
            .iter()
            .map(|t| t.at)
            .min()
            .unwrap_or(UnixMillis::EPOCH);
        if let Some(reach) = self.summaries_reach()?.filter(|&reach| first < reach) {
            for t in transitions.iter().filter(|t| t.at < reach) {
                self.invalidate_summaries(Whose::Node(&t.node), t.at, None)?;
            }
        }
        if self.conn().dialect() == Dialect::Sqlite {
            for t in transitions {
                self.conn().execute(
                    "INSERT INTO transitions (node, from_state, to_state, at, cause, id)
                     VALUES (?1, ?2, ?3, ?4, ?5,
                             (SELECT coalesce(max(id), 0) + 1 FROM transitions))",
                    args![
                        t.node.as_str(),
                        t.from.as_str(),
                        t.to.as_str(),
                        ms_sql(t.at),
                        t.cause.as_str()
                    ],
                )?;
                self.conn().execute(
                    "UPDATE nodes SET state = ?2, state_since = ?3 WHERE node = ?1",
                    args![t.node.as_str(), t.to.as_str(), ms_sql(t.at)],
                )?;
            }
            return Ok(());
        }
        for chunk in chunks(transitions) {
            let rows = value_rows(
                chunk.len(),
                &[KEY, "TEXT", "TEXT", "BIGINT", "TEXT", "BIGINT"],
            );
            let mut params: Vec<Value<'_>> = Vec::with_capacity(6 * chunk.len());
            for (i, t) in chunk.iter().enumerate() {
                params.extend([
                    Value::from(t.node.as_str()),
                    t.from.as_str().into(),
                    t.to.as_str().into(),
                    ms_sql(t.at).into(),
                    t.cause.as_str().into(),
                    i64_of_usize(i + 1).into(),
                ]);
            }
            self.conn().execute(
                &format!(
                    "INSERT INTO transitions (node, from_state, to_state, at, cause, id)
                     SELECT v.column1, v.column2, v.column3, v.column4, v.column5,
                            (SELECT coalesce(max(id), 0) FROM transitions) + v.column6
                     FROM (VALUES {rows}) AS v"
                ),
                &params,
            )?;
        }
        // Each node's state is its last transition's.
        let mut last: Vec<&Transition> = Vec::with_capacity(transitions.len());
        let mut seen = std::collections::HashSet::with_capacity(transitions.len());
        for t in transitions.iter().rev() {
            if seen.insert(&t.node) {
                last.push(t);
            }
        }
        for chunk in chunks(&last) {
            let rows = value_rows(chunk.len(), &[KEY, "TEXT", "BIGINT"]);
            let mut params: Vec<Value<'_>> = Vec::with_capacity(3 * chunk.len());
            for t in chunk {
                params.extend([
                    Value::from(t.node.as_str()),
                    t.to.as_str().into(),
                    ms_sql(t.at).into(),
                ]);
            }
            self.conn().execute(
                &format!(
                    "UPDATE nodes SET state = v.column2, state_since = v.column3
                     FROM (VALUES {rows}) AS v WHERE nodes.node = v.column1"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    /// One node's transitions in `[from, to)`, oldest first.
    pub fn node_history(
        &self,
        node: &NodeId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Transition>, StoreError> {
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions
             WHERE node = ?1 AND at >= ?2 AND at < ?3 ORDER BY at, id"
        );
        self.conn().query(
            &sql,
            args![node.as_str(), ms_sql(from), ms_sql(to)],
            transition,
        )
    }

    /// Transitions of `nodes` (all nodes when `None`) in `[from, to)`, plus each node's last
    /// transition before `from`.
    pub fn transition_window(
        &self,
        nodes: Option<&[NodeId]>,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TransitionWindow, StoreError> {
        // A temporary table of the wanted nodes keeps one query plan for any set size.
        self.conn()
            .batch("CREATE TEMP TABLE IF NOT EXISTS wanted (node TEXT PRIMARY KEY)")?;
        self.conn().execute("DELETE FROM wanted", &[])?;
        for n in nodes.unwrap_or_default() {
            self.conn().execute(
                "INSERT INTO wanted (node) VALUES (?1) ON CONFLICT DO NOTHING",
                args![n.as_str()],
            )?;
        }
        let all = nodes.is_none();
        let before = self.conn().query(
            "SELECT t.node, t.from_state, t.to_state, t.at, t.cause FROM transitions t
             WHERE (t.at, t.id) = (SELECT t2.at, t2.id FROM transitions t2
                                   WHERE t2.node = t.node AND t2.at < ?1
                                   ORDER BY t2.at DESC, t2.id DESC LIMIT 1)
               AND (?2 OR t.node IN (SELECT node FROM wanted))
             ORDER BY t.node",
            args![ms_sql(from), all],
            transition,
        )?;
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS} FROM transitions
             WHERE at >= ?1 AND at < ?2 AND (?3 OR node IN (SELECT node FROM wanted))
             ORDER BY at, id"
        );
        let within = self
            .conn()
            .query(&sql, args![ms_sql(from), ms_sql(to), all], transition)?;
        self.conn().execute("DELETE FROM wanted", &[])?;
        Ok(TransitionWindow { before, within })
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
            Some(k) => c.with("(at, id) < (?, ?)", [ts_int(k.at), Value::Int(k.id)]),
            None => c,
        };
        let sql = format!(
            "SELECT {TRANSITION_COLUMNS}, id FROM transitions{}
             ORDER BY at DESC, id DESC LIMIT ?",
            page.sql()
        );
        page.push(limit_plus_one(limit));
        let rows = self.conn().query(&sql, page.values(), |r| {
            let t = transition(r)?;
            Ok((
                TimeKey {
                    at: t.at,
                    id: r.get(5)?,
                },
                t,
            ))
        })?;
        Ok(Paged::from_rows(rows, limit, total))
    }

    /// [`Self::each_node_history`] in two queries whose rows stream, instead of two per
    /// node: the test tallies grouped by node, then every node joined with its transitions
    /// in the span. For a short span over many nodes (a day, the partial days at a
    /// report's edges), where a round trip per node would cost more than the rows: on
    /// PostgreSQL 10 000 nodes are 20 000 round trips.
    pub fn each_node_span(
        &self,
        q: &NodeQuery,
        (from, until): (UnixMillis, UnixMillis),
        shard: Shard,
        mut each: impl FnMut(&NodePath, &Name, &[Step], TestTally) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let c = shard.conditions(q);
        let mut tallies: std::collections::HashMap<String, TestTally> =
            std::collections::HashMap::new();
        // The span's tests by time (`tests_by_time`), one range for every node; only the
        // conditions of `q` go to the server, a shard's nodes are picked from the tallies.
        // Joined to the nodes of a shard, PostgreSQL sought each node's tests instead.
        let tests = q.conditions();
        let mut values = vec![ts_int(from), ts_int(until)];
        let scope = if tests.is_empty() {
            String::new()
        } else {
            values.extend(tests.values().iter().cloned());
            format!(
                " AND r.node IN (SELECT nodes.node FROM nodes{})",
                tests.sql()
            )
        };
        let sql = format!(
            "SELECT r.node, count(*), count(*) FILTER (WHERE r.result = 'pass'),
                    count(*) FILTER (WHERE r.result = 'fail')
             FROM test_receipts r WHERE r.ts >= ? AND r.ts < ?{scope}
             GROUP BY r.node"
        );
        self.conn().each_streamed(&sql, &values, |r| {
            let tally = TestTally {
                run: u64_of(r.get(1)?),
                passed: u64_of(r.get(2)?),
                failed: u64_of(r.get(3)?),
            };
            tallies.insert(r.get(0)?, tally);
            Ok(())
        })?;
        // The span's bounds sit in the join's ON clause (a node without transitions still
        // gives one row), before the WHERE clause's placeholders.
        let mut values = vec![ts_int(from), ts_int(from), ts_int(until)];
        values.extend(c.values().iter().cloned());
        let span = "t.node = nodes.node
                AND t.at >= coalesce((SELECT max(p.at) FROM transitions p
                                      WHERE p.node = nodes.node AND p.at < ?), ?)
                AND t.at < ?";
        let join = join_each(self.conn().dialect(), "LEFT JOIN", "transitions", "t", span);
        let sql = format!(
            "SELECT nodes.region, nodes.site, nodes.node, nodes.kind,
                    t.from_state, t.to_state, t.at, t.cause, t.id
             FROM nodes {join}{}
             ORDER BY nodes.region, nodes.site, nodes.node",
            c.sql()
        );
        // A node's transitions are put in order here (see `Db::each_node_days`).
        let mut steps: Vec<Step> = Vec::new();
        self.each_by_node(
            &sql,
            &values,
            |r| {
                let Some(at) = r.get::<Option<i64>>(6)? else {
                    return Ok(None);
                };
                let step = Step {
                    from: liveness(r.str(4)?)?,
                    to: liveness(r.str(5)?)?,
                    at: ts_of(at),
                    cause: cause(r.str(7)?)?,
                };
                Ok(Some((r.get::<i64>(8)?, step)))
            },
            |path, kind, keyed| {
                keyed.sort_unstable_by_key(|(id, s)| (s.at, *id));
                steps.clear();
                steps.extend(keyed.drain(..).map(|(_, s)| s));
                let tally = tallies.remove(path.node.as_str()).unwrap_or_default();
                each(path, kind, &steps, tally)
            },
        )
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
        let c = shard.conditions(q);
        let sql = format!(
            "SELECT nodes.region, nodes.site, nodes.node, nodes.kind FROM nodes{}
             ORDER BY nodes.region, nodes.site, nodes.node",
            c.sql()
        );
        let mut steps: Vec<Step> = Vec::new();
        self.conn().each(&sql, c.values(), |r| {
            let path = NodePath::new(
                id("region", r.get(0)?, RegionId::new)?,
                id("site", r.get(1)?, SiteId::new)?,
                id("node", r.get(2)?, NodeId::new)?,
            );
            let kind = id("kind", r.get(3)?, Name::new)?;
            let window = args![path.node.as_str(), ms_sql(from), ms_sql(until)];
            steps.clear();
            self.conn().each(
                "SELECT from_state, to_state, at, cause FROM transitions
                 WHERE node = ?1
                   AND at >= coalesce((SELECT max(p.at) FROM transitions p
                                       WHERE p.node = ?1 AND p.at < ?2), ?2)
                   AND at < ?3
                 ORDER BY at, id",
                window,
                |r| {
                    steps.push(Step {
                        from: liveness(r.str(0)?)?,
                        to: liveness(r.str(1)?)?,
                        at: ts_of(r.get(2)?),
                        cause: cause(r.str(3)?)?,
                    });
                    Ok(())
                },
            )?;
            let tally = self.conn().query_one(
                "SELECT count(*), count(*) FILTER (WHERE result = 'pass'),
                        count(*) FILTER (WHERE result = 'fail')
                 FROM test_receipts WHERE node = ?1 AND ts >= ?2 AND ts < ?3",
                window,
                |r| {
                    Ok(TestTally {
                        run: u64_of(r.get(0)?),
                        passed: u64_of(r.get(1)?),
                        failed: u64_of(r.get(2)?),
                    })
                },
            )?;
            each(&path, &kind, &steps, tally)
        })
    }
}
