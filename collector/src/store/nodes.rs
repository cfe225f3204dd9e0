//! The registry: nodes as their births register them, when they were last heard, their
//! place names, and the node list, counts and place summaries the API shows.

use alarmnet_protocol::{Birth, Name, NodeId, NodePath, RegionId, SiteId};
use serde::Serialize;

use super::StoreError;
use super::days::Whose;
use super::db::{Db, i64_of, i64_of_usize, id, liveness, ms_sql, ts_of, u64_of};
use super::lists::{Conditions, Paged, limit_plus_one, slots, text};
use super::sql::{Dialect, KEY, Row, Value, args, chunks, value_rows};
use crate::model::{Liveness, Silence, UnixMillis};

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

const NODE_COLUMNS: &str = "node, region, site, kind, name, info, boot, \
    hb_interval_ms, birth_ts, first_seen, last_seen, state, state_since, seq_boot, last_seq";

/// A node's place from three text columns: region, site, node.
pub(super) fn path_at(
    r: &Row<'_>,
    region: usize,
    site: usize,
    node: usize,
) -> Result<NodePath, StoreError> {
    Ok(NodePath::new(
        id("region", r.get(region)?, RegionId::new)?,
        id("site", r.get(site)?, SiteId::new)?,
        id("node", r.get(node)?, NodeId::new)?,
    ))
}

fn node_record(r: &Row<'_>) -> Result<NodeRecord, StoreError> {
    let seq_boot: Option<String> = r.get(13)?;
    let last_seq: Option<i64> = r.get(14)?;
    Ok(NodeRecord {
        path: path_at(r, 1, 2, 0)?,
        kind: id("kind", r.get(3)?, Name::new)?,
        name: r.get(4)?,
        info: serde_json::from_str(r.str(5)?)?,
        boot: r.get(6)?,
        hb_interval_ms: u64_of(r.get(7)?),
        birth_ts: u64_of(r.get(8)?),
        first_seen: ts_of(r.get(9)?),
        last_seen: ts_of(r.get(10)?),
        state: liveness(r.str(11)?)?,
        state_since: ts_of(r.get(12)?),
        last_seq: seq_boot.zip(last_seq.map(u64_of)),
    })
}

impl Db {
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
        let was: Option<(String, String, String)> = self.conn().query_opt(
            "SELECT region, site, kind FROM nodes WHERE node = ?1",
            args![path.node.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        self.conn().execute(
            "INSERT INTO nodes (node, region, site, kind, name, info, boot, hb_interval_ms,
                birth_ts, first_seen, last_seen, state, state_since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, 'unknown', ?10)
             ON CONFLICT (node) DO UPDATE SET region = ?2, site = ?3, kind = ?4, name = ?5,
                info = ?6, boot = ?7, hb_interval_ms = ?8,
                birth_ts = greatest(nodes.birth_ts, ?9),
                last_seen = greatest(nodes.last_seen, ?10)",
            args![
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
            ],
        )?;
        if let Some((region, site, kind)) = was
            && (region != path.region.as_str()
                || site != path.site.as_str()
                || kind != birth.kind.as_str())
        {
            self.moved(path, &birth.kind, (&region, &site, &kind))?;
        }
        self.name_places(path, birth)
    }

    /// The stored region of each of `nodes` that is registered.
    pub fn regions_of(&self, nodes: &[NodeId]) -> Result<Vec<(NodeId, RegionId)>, StoreError> {
        let mut out = Vec::with_capacity(nodes.len());
        for node in nodes {
            let region = self.conn().query_opt(
                "SELECT region FROM nodes WHERE node = ?1",
                args![node.as_str()],
                |r| r.get::<String>(0),
            )?;
            if let Some(region) = region {
                out.push((node.clone(), id("region", region, RegionId::new)?));
            }
        }
        Ok(out)
    }

    /// A node moved (or changed kind): its summarized days under silences that match its
    /// old place but not its new one, or the other way round, count otherwise now (a
    /// report matches a node's silences where it is now).
    fn moved(
        &self,
        path: &NodePath,
        kind: &Name,
        (region, site, old_kind): (&str, &str, &str),
    ) -> Result<(), StoreError> {
        if self.summaries_reach()?.is_none() {
            return Ok(());
        }
        let matches = |s: &Silence, region: &str, site: &str, kind: &str| {
            s.region.as_ref().is_none_or(|r| r.as_str() == region)
                && s.site.as_ref().is_none_or(|x| x.as_str() == site)
                && s.node.as_ref().is_none_or(|n| *n == path.node)
                && s.kind.as_ref().is_none_or(|k| k.as_str() == kind)
        };
        for s in self.silences(None)? {
            // One that matches both places, or neither, counts the same.
            if matches(&s, region, site, old_kind)
                != matches(&s, path.region.as_str(), path.site.as_str(), kind.as_str())
            {
                self.invalidate_summaries(Whose::Node(&path.node), s.starts_at, Some(s.ends_at))?;
            }
        }
        if region != path.region.as_str() {
            // Whose runs count as watching it changed (store::runs): since the first run of
            // a region shard, regions may differ in what was watched.
            let sharded = self.conn().query_one(
                "SELECT min(started_at) FROM collector_runs WHERE regions IS NOT NULL",
                args![],
                |r| r.get::<Option<i64>>(0),
            )?;
            if let Some(since) = sharded {
                self.invalidate_summaries(Whose::Node(&path.node), ts_of(since), None)?;
            }
        }
        Ok(())
    }

    /// Keeps the display names a birth gives its region and site (tags `region_name`,
    /// `site_name`): the most recent birth carrying a tag wins.
    fn name_places(&self, path: &NodePath, birth: &Birth) -> Result<(), StoreError> {
        let places = [
            ("", birth.tags.get("region_name")),
            (path.site.as_str(), birth.tags.get("site_name")),
        ];
        for (site, name) in places {
            if let Some(name) = name {
                self.conn().execute(
                    "INSERT INTO place_names (region, site, name, birth_ts) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (region, site) DO UPDATE SET name = ?3, birth_ts = ?4
                     WHERE ?4 >= place_names.birth_ts",
                    args![path.region.as_str(), site, name, i64_of(birth.ts)],
                )?;
            }
        }
        Ok(())
    }

    /// Records when nodes were last heard (coalesced by the caller; never moves backwards)
    /// and, where known, the highest sequence number heard and its boot.
    ///
    /// Design: on PostgreSQL each statement is a round trip, so nodes go [`chunks`] at a
    /// time in one `UPDATE … FROM (VALUES …)`; SQLite runs in the process, where one
    /// prepared statement per node is faster than any join.
    pub fn touch(&self, heard: &[Heard]) -> Result<(), StoreError> {
        if self.conn().dialect() == Dialect::Sqlite {
            for h in heard {
                let (boot, seq) = h.seq.as_ref().map(|(b, s)| (b.as_str(), *s)).unzip();
                self.conn().execute(
                    "UPDATE nodes SET last_seen = greatest(last_seen, ?2),
                         seq_boot = coalesce(?3, seq_boot), last_seq = coalesce(?4, last_seq)
                     WHERE node = ?1",
                    args![h.node.as_str(), ms_sql(h.at), boot, seq.map(i64_of)],
                )?;
            }
            return Ok(());
        }
        for chunk in chunks(heard) {
            let rows = value_rows(chunk.len(), &[KEY, "BIGINT", "TEXT", "BIGINT"]);
            let mut params: Vec<Value<'_>> = Vec::with_capacity(4 * chunk.len());
            for h in chunk {
                let (boot, seq) = h.seq.as_ref().map(|(b, s)| (b.as_str(), *s)).unzip();
                params.extend([
                    Value::from(h.node.as_str()),
                    ms_sql(h.at).into(),
                    boot.into(),
                    seq.map(i64_of).into(),
                ]);
            }
            self.conn().execute(
                &format!(
                    "UPDATE nodes SET last_seen = greatest(nodes.last_seen, v.column2),
                         seq_boot = coalesce(v.column3, nodes.seq_boot),
                         last_seq = coalesce(v.column4, nodes.last_seq)
                     FROM (VALUES {rows}) AS v WHERE nodes.node = v.column1"
                ),
                &params,
            )?;
        }
        Ok(())
    }

    /// Registered nodes matching `filter`, ordered by region, site, node.
    pub fn nodes(&self, filter: &NodeFilter) -> Result<Vec<NodeRecord>, StoreError> {
        let sql = format!(
            "SELECT {NODE_COLUMNS} FROM nodes
             WHERE (CAST(?1 AS TEXT) IS NULL OR region = ?1)
               AND (CAST(?2 AS TEXT) IS NULL OR site = ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR kind = ?3)
               AND (CAST(?4 AS TEXT) IS NULL OR state = ?4)
             ORDER BY region, site, node LIMIT ?5 OFFSET ?6"
        );
        self.conn().query(
            &sql,
            args![
                filter.region.as_ref().map(|r| r.as_str()),
                filter.site.as_ref().map(|s| s.as_str()),
                filter.kind.as_ref().map(|k| k.as_str()),
                filter.state.map(Liveness::as_str),
                filter.limit.map_or(i64::MAX, i64_of_usize),
                i64_of_usize(filter.offset),
            ],
            node_record,
        )
    }

    /// One node.
    pub fn node(&self, node: &NodeId) -> Result<Option<NodeRecord>, StoreError> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node = ?1");
        self.conn()
            .query_opt(&sql, args![node.as_str()], node_record)
    }

    /// The number of registered nodes.
    pub fn count_nodes(&self) -> Result<u64, StoreError> {
        self.conn()
            .query_one("SELECT count(*) FROM nodes", &[], |r| Ok(u64_of(r.get(0)?)))
    }

    /// Every node's binding (path and birth ts), to seed ingest's registry at start.
    pub fn bindings(&self) -> Result<Vec<(NodePath, u64)>, StoreError> {
        self.conn()
            .query("SELECT region, site, node, birth_ts FROM nodes", &[], |r| {
                Ok((path_at(r, 0, 1, 2)?, u64_of(r.get(3)?)))
            })
    }

    /// The number of rows in `table_sql` matching `c`.
    pub(super) fn count(&self, table_sql: &str, c: &Conditions) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM {table_sql}{}", c.sql());
        self.conn()
            .query_one(&sql, c.values(), |r| Ok(u64_of(r.get(0)?)))
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
        page.push(limit_plus_one(limit));
        let rows = self.conn().query(&sql, page.values(), |r| {
            let path = path_at(r, 1, 2, 0)?;
            let key = NodeKey {
                region: path.region.clone(),
                site: path.site.clone(),
                node: path.node.clone(),
            };
            let brief = NodeBrief {
                path,
                kind: id("kind", r.get(3)?, Name::new)?,
                name: r.get(4)?,
                state: liveness(r.str(5)?)?,
                state_since: ts_of(r.get(6)?),
                last_seen: ts_of(r.get(7)?),
                active_faults: u64_of(r.get(8)?),
            };
            Ok((key, brief))
        })?;
        Ok(Paged::from_rows(rows, limit, total))
    }

    /// Nodes per (region, site, state), ordered by region and site.
    pub fn place_counts(&self, q: &NodeQuery) -> Result<Vec<PlaceCount>, StoreError> {
        let c = q.conditions();
        let sql = format!(
            "SELECT region, site, state, count(*) FROM nodes{}
             GROUP BY region, site, state ORDER BY region, site, state",
            c.sql()
        );
        self.conn().query(&sql, c.values(), |r| {
            Ok(PlaceCount {
                region: id("region", r.get(0)?, RegionId::new)?,
                site: id("site", r.get(1)?, SiteId::new)?,
                state: liveness(r.str(2)?)?,
                nodes: u64_of(r.get(3)?),
            })
        })
    }

    /// The display names of regions and sites (from birth tags), ordered by region, site.
    pub fn place_names(&self) -> Result<Vec<PlaceName>, StoreError> {
        self.conn().query(
            "SELECT region, site, name FROM place_names ORDER BY region, site",
            &[],
            |r| {
                let site: String = r.get(1)?;
                Ok(PlaceName {
                    region: id("region", r.get(0)?, RegionId::new)?,
                    site: (!site.is_empty())
                        .then(|| id("site", site, SiteId::new))
                        .transpose()?,
                    name: r.get(2)?,
                })
            },
        )
    }
}
