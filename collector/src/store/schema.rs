//! Versioned schema migrations, one list per engine: SQLite's tracked in
//! `PRAGMA user_version`, PostgreSQL's in the `alarmnet_schema` table.
//!
//! Migration `n` (1-based) takes the database from version `n - 1` to `n`. Never edit a
//! released migration: append a new one, to both lists (the statements in `store::sql` run
//! unchanged on both, so both schemas must have the same tables and columns).

use rusqlite::Connection;

use super::sql::Conn;

/// The SQLite migrations, in order. `MIGRATIONS.len()` is the latest version.
pub const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
CREATE TABLE nodes (
    node           TEXT PRIMARY KEY,
    region         TEXT NOT NULL,
    site           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    name           TEXT,
    info           TEXT NOT NULL,          -- the last birth, JSON
    boot           TEXT,
    hb_interval_ms INTEGER NOT NULL,
    birth_ts       INTEGER NOT NULL,       -- agent clock: decides moves between sites
    first_seen     INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    state          TEXT NOT NULL DEFAULT 'unknown',
    state_since    INTEGER NOT NULL
);
CREATE INDEX nodes_by_place ON nodes (region, site);

CREATE TABLE transitions (
    id         INTEGER PRIMARY KEY,
    node       TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    at         INTEGER NOT NULL,
    cause      TEXT NOT NULL
);
CREATE INDEX transitions_by_node ON transitions (node, at);
CREATE INDEX transitions_by_time ON transitions (at);

CREATE TABLE faults (
    id          INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    fault_key   TEXT NOT NULL,             -- check/code
    severity    TEXT NOT NULL,
    raised_at   INTEGER NOT NULL,          -- agent ts
    cleared_at  INTEGER,                   -- agent ts; NULL while active
    message     TEXT,
    boot        TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    replay      INTEGER NOT NULL
);
CREATE INDEX faults_by_node ON faults (node, fault_key, cleared_at);

CREATE TABLE test_receipts (
    id          INTEGER PRIMARY KEY,
    node        TEXT NOT NULL,
    boot        TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    ts          INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    drill       TEXT,
    test        TEXT NOT NULL,
    result      TEXT NOT NULL,
    duration_ms INTEGER,
    metrics     TEXT NOT NULL,
    message     TEXT,
    replay      INTEGER NOT NULL
);
CREATE INDEX tests_by_node ON test_receipts (node, ts);
CREATE INDEX tests_by_drill ON test_receipts (drill) WHERE drill IS NOT NULL;

CREATE TABLE alerts (
    row_id      INTEGER PRIMARY KEY,
    id          TEXT NOT NULL,             -- fingerprint of rule + subject
    rule        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    status      TEXT NOT NULL,
    region      TEXT,
    site        TEXT,
    node        TEXT,
    kind        TEXT,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    summary     TEXT NOT NULL,
    notified    INTEGER NOT NULL,
    ack_by      TEXT,
    ack_at      INTEGER,
    ack_comment TEXT,
    UNIQUE (id, started_at)
);
CREATE INDEX alerts_by_status ON alerts (status, started_at);

CREATE TABLE acks (
    id         INTEGER PRIMARY KEY,
    alert_id   TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    by         TEXT NOT NULL,
    at         INTEGER NOT NULL,
    comment    TEXT
);

CREATE TABLE silences (
    id         TEXT PRIMARY KEY,
    region     TEXT,
    site       TEXT,
    node       TEXT,
    kind       TEXT,
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment    TEXT
);
CREATE INDEX silences_by_end ON silences (ends_at);

CREATE TABLE notification_log (
    id               INTEGER PRIMARY KEY,
    alert_id         TEXT NOT NULL,
    alert_started_at INTEGER NOT NULL,
    status           TEXT NOT NULL,        -- the notification's: firing | resolved
    output           TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    at               INTEGER NOT NULL,
    ok               INTEGER NOT NULL,
    error            TEXT
);
CREATE INDEX notifications_by_alert ON notification_log (alert_id, at);
"#,
    // 2: the collector's own runs and blind intervals: time nobody watched, for uptime.
    r#"
CREATE TABLE collector_runs (
    id         INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL,
    alive_at   INTEGER NOT NULL,           -- last sign of life (about every second)
    ended_at   INTEGER                     -- NULL while running or after a crash
);
CREATE TABLE blind_intervals (
    id       INTEGER PRIMARY KEY,
    run      INTEGER NOT NULL,
    start_at INTEGER NOT NULL,
    end_at   INTEGER                       -- NULL while blind (or until the run ended)
);
CREATE INDEX blind_by_time ON blind_intervals (start_at);
"#,
    // 3: lists, counts and summaries answered in SQL. Keyset order of the node list is
    // (region, site, node); both node indexes also carry state and kind, so the summary's
    // GROUP BY and filtered counts never read the rows (whose `info` JSON is large). Display names of
    // regions and sites (birth tags `region_name`, `site_name`) are kept at upsert time in
    // `place_names`: the most recent birth carrying the tag wins.
    r#"
DROP INDEX nodes_by_place;
CREATE INDEX nodes_by_order ON nodes (region, site, node, state, kind);
CREATE INDEX nodes_by_state ON nodes (state, region, site, node, kind);
CREATE INDEX nodes_by_site ON nodes (site);

CREATE TABLE place_names (
    region   TEXT NOT NULL,
    site     TEXT NOT NULL,                -- '' for the region's own name
    name     TEXT NOT NULL,
    birth_ts INTEGER NOT NULL,             -- of the birth that named it
    PRIMARY KEY (region, site)
) WITHOUT ROWID;
INSERT INTO place_names (region, site, name, birth_ts)
    SELECT region, site, json_extract(info, '$.tags.site_name'), birth_ts FROM nodes
    WHERE json_type(info, '$.tags.site_name') = 'text'
    ORDER BY birth_ts, region, site, node
    ON CONFLICT (region, site) DO UPDATE SET name = excluded.name, birth_ts = excluded.birth_ts
    WHERE excluded.birth_ts >= place_names.birth_ts;
INSERT INTO place_names (region, site, name, birth_ts)
    SELECT region, '', json_extract(info, '$.tags.region_name'), birth_ts FROM nodes
    WHERE json_type(info, '$.tags.region_name') = 'text'
    ORDER BY birth_ts, region, site, node
    ON CONFLICT (region, site) DO UPDATE SET name = excluded.name, birth_ts = excluded.birth_ts
    WHERE excluded.birth_ts >= place_names.birth_ts;

CREATE INDEX alerts_by_start ON alerts (started_at);
CREATE INDEX silences_by_start ON silences (starts_at, id);
CREATE INDEX faults_by_raise ON faults (node, raised_at);
"#,
    // 4: the highest sequence number heard from each node and the boot it belongs to, so a
    // restarted collector still recognises second deliveries of what it already has.
    r#"
ALTER TABLE nodes ADD COLUMN seq_boot TEXT;
ALTER TABLE nodes ADD COLUMN last_seq INTEGER;
"#,
    // 5: transitions clustered by (node, at). Every read of transitions is one node's over a
    // time range; in a rowid table a node's rows lie scattered among everybody's (rowid
    // order is arrival order), so a 30-day uptime report over 10 000 nodes and 1 000 000
    // transitions read the index and then one table page per row. Clustered, a node's
    // history is a few adjacent pages and the (node, at) index is the table itself. The
    // `id` stays (unique, in arrival order): it orders transitions with equal `at` and
    // keys the history pages. Nothing reads transitions across nodes by time, so the
    // time index goes. The test receipts' node index also covers `result`.
    r#"
CREATE TABLE transitions_clustered (
    node       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    id         INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    cause      TEXT NOT NULL,
    PRIMARY KEY (node, at, id)
) WITHOUT ROWID;
INSERT INTO transitions_clustered (node, at, id, from_state, to_state, cause)
    SELECT node, at, id, from_state, to_state, cause FROM transitions;
DROP TABLE transitions;
ALTER TABLE transitions_clustered RENAME TO transitions;
CREATE UNIQUE INDEX transitions_by_id ON transitions (id);

-- Uptime reports count each node's test results in the window from the index alone.
DROP INDEX tests_by_node;
CREATE INDEX tests_by_node ON test_receipts (node, ts, result);
"#,
    // 6: readiness. Each node's current readiness (state, reason codes as JSON, since) for
    // lists and filters, and every change of it, clustered by (node, at) like transitions,
    // for history reports. `maintenance` marks intervals under a silence (excluded from the
    // ready share, like maintenance from availability).
    r#"
ALTER TABLE nodes ADD COLUMN readiness TEXT;
ALTER TABLE nodes ADD COLUMN readiness_reasons TEXT;
ALTER TABLE nodes ADD COLUMN readiness_since INTEGER;
CREATE INDEX nodes_by_readiness ON nodes (readiness, region, site, node);
CREATE TABLE readiness_transitions (
    node        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    id          INTEGER NOT NULL,
    from_state  TEXT,                       -- NULL for the node's first derivation
    to_state    TEXT NOT NULL,
    maintenance INTEGER NOT NULL,
    reasons     TEXT NOT NULL,              -- JSON array of {"code": ..., ...}
    PRIMARY KEY (node, at, id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX readiness_transitions_by_id ON readiness_transitions (id);
"#,
    // 7: drills. One row per drill with its tally (kept current, so lists need no
    // aggregation) and the id of the last test receipt it has read; one row per asked node
    // with its outcome, clustered by drill. The last occurrence each schedule ran, so a
    // restart never runs one twice. The receipts' drill index also carries the row id
    // order the drills task reads them in.
    r#"
CREATE TABLE drills (
    id             TEXT PRIMARY KEY,
    test           TEXT NOT NULL,
    selector       TEXT NOT NULL,          -- JSON
    started_at     INTEGER NOT NULL,
    deadline       INTEGER NOT NULL,
    started_by     TEXT NOT NULL,          -- token name, or schedule:<name>
    status         TEXT NOT NULL,          -- open | completed | expired | cancelled
    closed_at      INTEGER,
    cancelled_by   TEXT,
    schedule       TEXT,
    asked          INTEGER NOT NULL,
    waiting        INTEGER NOT NULL,
    passed         INTEGER NOT NULL,
    failed         INTEGER NOT NULL,
    errored        INTEGER NOT NULL,
    silent         INTEGER NOT NULL,
    late           INTEGER NOT NULL,
    receipt_cursor INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX drills_by_start ON drills (started_at);
CREATE INDEX drills_by_status ON drills (status, closed_at);

CREATE TABLE drill_nodes (
    drill       TEXT NOT NULL,
    region      TEXT NOT NULL,
    site        TEXT NOT NULL,
    node        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,             -- waiting | pass | fail | error | silent | late
    result      TEXT,                      -- the receipt's, also for a late one
    received_at INTEGER,
    duration_ms INTEGER,
    message     TEXT,
    metrics     TEXT,
    PRIMARY KEY (drill, region, site, node)
) WITHOUT ROWID;
CREATE UNIQUE INDEX drill_nodes_by_node ON drill_nodes (drill, node);

CREATE TABLE drill_schedule (
    name            TEXT PRIMARY KEY,
    last_occurrence INTEGER NOT NULL
);

DROP INDEX tests_by_drill;
CREATE INDEX tests_by_drill ON test_receipts (drill, id) WHERE drill IS NOT NULL;
"#,
    // 8: alert arguments: the facts of an alert's summary by name (JSON object), so the
    // console and receivers can word it in their own language. Older alerts have none.
    r#"
ALTER TABLE alerts ADD COLUMN args TEXT;
"#,
    // 9: the audit log of operator actions (crate::audit): who, when, from where, what,
    // and what came of it. Pruned by age (`[retention] audit`).
    r#"
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT,                          -- the token's name; NULL without a known token
    role    TEXT NOT NULL,                 -- operator | viewer | anonymous | unknown_token | system
    peer    TEXT,                          -- the client's address
    action  TEXT NOT NULL,                 -- alert.ack | silence.add | ... | config.reload
    target  TEXT,
    outcome TEXT NOT NULL,                 -- success | refused | failed
    status  INTEGER,                       -- the HTTP status answered
    detail  TEXT                           -- JSON
);
CREATE INDEX audit_by_time ON audit (at);
CREATE INDEX audit_by_actor ON audit (actor, at);
"#,
    // 10: per-node daily summaries, so uptime over days whose transitions retention has
    // deleted stays exact (and long reports need not read every transition). One row per
    // node and day (`day` is the day's first instant in the uptime time zone, `day_end` the
    // next day's): milliseconds per report category, the outage facts that let consecutive
    // days add up (uptime::days), and the day's test tally. `store_marks` keeps
    // `summarized_until` (days before it are summarized) and `pruned_before` (transitions
    // before it are gone, but each node's last one).
    r#"
CREATE TABLE node_days (
    node           TEXT NOT NULL,
    day            INTEGER NOT NULL,
    day_end        INTEGER NOT NULL,
    up_ms          INTEGER NOT NULL,
    down_ms        INTEGER NOT NULL,
    maintenance_ms INTEGER NOT NULL,
    unknown_ms     INTEGER NOT NULL,
    outages        INTEGER NOT NULL,
    first_carried  INTEGER NOT NULL,
    first_ms       INTEGER NOT NULL,
    last_open      INTEGER NOT NULL,
    last_ms        INTEGER NOT NULL,
    longest_ms     INTEGER NOT NULL,
    went_up        INTEGER NOT NULL,
    tests          INTEGER NOT NULL,
    tests_passed   INTEGER NOT NULL,
    tests_failed   INTEGER NOT NULL,
    PRIMARY KEY (node, day)
) WITHOUT ROWID;
CREATE TABLE store_marks (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"#,
    // 11: the notification outbox. Every notification the core decides is stored, with the
    // alert as notified (JSON), in the transaction that commits the alert change; each
    // output logs its attempts against the notice's id (`notification_log.notice`), the
    // attempt that ends a notice's delivery (delivered, or the last one failed) with
    // `done`. A collector that starts (after a crash, or taking over from another) sends
    // what no attempt ended: no notification is lost between commit and delivery.
    r#"
CREATE TABLE notices (
    id         INTEGER PRIMARY KEY,
    alert_id   TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    status     TEXT NOT NULL,
    at         INTEGER NOT NULL,
    alert      TEXT NOT NULL
);
CREATE INDEX notices_by_time ON notices (at);
ALTER TABLE notification_log ADD COLUMN notice INTEGER;
ALTER TABLE notification_log ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
CREATE INDEX notifications_by_notice ON notification_log (notice, output);
"#,
    // 12: the spans the daily summaries are made of (`summary_days`, one row per day
    // summarized, whatever the time zone was then): a report picks the whole ones inside
    // its window from here without scanning `node_days`. A node's row in `node_days` for
    // one of them may be missing (registered later, or invalidated by a late write): the
    // report reads that node's transitions instead (store::days). `summaries_reach`: writes
    // dated before it invalidate summaries.
    r#"
CREATE TABLE summary_days (
    day     INTEGER PRIMARY KEY,
    day_end INTEGER NOT NULL
);
INSERT INTO summary_days (day, day_end) SELECT DISTINCT day, day_end FROM node_days;
INSERT INTO store_marks (name, value)
    SELECT 'summaries_reach', value FROM store_marks WHERE name = 'summarized_until';
"#,
    // 13: which collectors run a drill (its region shard's; '' without shards): several
    // shards on one store each tally, close and resume only their own drills.
    r#"
ALTER TABLE drills ADD COLUMN owner TEXT NOT NULL DEFAULT '';
"#,
    // 14: blocks of summaries. `node_days` also holds a node's summary over 2, 4, 8 …
    // consecutive summarized days (one `uptime::Segment` stands for them exactly), keyed by
    // their span as a day is; `summary_blocks` lists the blocks built, as `summary_days`
    // lists the days. A 30-day report reads about six rows a node instead of thirty.
    r#"
CREATE TABLE node_days_new (
    node           TEXT NOT NULL,
    day            INTEGER NOT NULL,
    day_end        INTEGER NOT NULL,
    up_ms          INTEGER NOT NULL,
    down_ms        INTEGER NOT NULL,
    maintenance_ms INTEGER NOT NULL,
    unknown_ms     INTEGER NOT NULL,
    outages        INTEGER NOT NULL,
    first_carried  INTEGER NOT NULL,
    first_ms       INTEGER NOT NULL,
    last_open      INTEGER NOT NULL,
    last_ms        INTEGER NOT NULL,
    longest_ms     INTEGER NOT NULL,
    went_up        INTEGER NOT NULL,
    tests          INTEGER NOT NULL,
    tests_passed   INTEGER NOT NULL,
    tests_failed   INTEGER NOT NULL,
    PRIMARY KEY (node, day, day_end)
) WITHOUT ROWID;
INSERT INTO node_days_new SELECT * FROM node_days;
DROP TABLE node_days;
ALTER TABLE node_days_new RENAME TO node_days;
CREATE TABLE summary_blocks (
    day     INTEGER NOT NULL,
    day_end INTEGER NOT NULL,
    PRIMARY KEY (day, day_end)
) WITHOUT ROWID;
"#,
    // 15: whose a run is (its region shard's; '' without shards) and the regions it watched
    // (comma-separated; NULL: the whole network). A shard's start closes only its own
    // crashed runs, and a node's unwatched time comes from the runs that watched its
    // region. The older runs watched the whole network.
    r#"
ALTER TABLE collector_runs ADD COLUMN shard TEXT NOT NULL DEFAULT '';
ALTER TABLE collector_runs ADD COLUMN regions TEXT;
CREATE INDEX runs_by_shard ON collector_runs (shard, alive_at);
"#,
    // 16: test receipts by time. An uptime report counts the tests of its partial days
    // over every node at once: one range of this index, not a seek a node.
    r#"
CREATE INDEX tests_by_time ON test_receipts (ts, node, result);
"#,
];

/// The schema version of a database.
pub fn version(conn: &Connection) -> rusqlite::Result<usize> {
    let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok(usize::try_from(v).unwrap_or(0))
}

/// Applies every migration the database lacks, each in its own transaction. Returns the
/// number applied. A database newer than this program is an error, not a downgrade.
pub fn migrate(conn: &mut Connection) -> Result<usize, super::StoreError> {
    let current = version(conn)?;
    if current > MIGRATIONS.len() {
        return Err(super::StoreError::TooNew {
            found: current,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store schema migrated");
    }
    Ok(MIGRATIONS.len() - current)
}

/// The PostgreSQL migrations, in order. `POSTGRES.len()` is the latest version.
///
/// The first is SQLite's schema as of its migration 10, in PostgreSQL's types: `BIGINT`
/// for integers (the store binds and reads 64-bit values), `TEXT COLLATE "C"` for text, so
/// ids sort byte by byte on every database whatever its locale (the keyset pages, and the
/// code comparing keys, rely on one order), and identity columns where SQLite has an
/// `INTEGER PRIMARY KEY`. `nodes` and `drills` have an identity column named `rowid`,
/// which the statements use as SQLite's own (report shards, drill page keys).
pub const POSTGRES: &[&str] = &[
    // 1: the schema of SQLite's migrations 1 to 10.
    r#"
CREATE TABLE nodes (
    rowid             BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
    node              TEXT COLLATE "C" PRIMARY KEY,
    region            TEXT COLLATE "C" NOT NULL,
    site              TEXT COLLATE "C" NOT NULL,
    kind              TEXT COLLATE "C" NOT NULL,
    name              TEXT COLLATE "C",
    info              TEXT NOT NULL,
    boot              TEXT COLLATE "C",
    hb_interval_ms    BIGINT NOT NULL,
    birth_ts          BIGINT NOT NULL,
    first_seen        BIGINT NOT NULL,
    last_seen         BIGINT NOT NULL,
    state             TEXT COLLATE "C" NOT NULL DEFAULT 'unknown',
    state_since       BIGINT NOT NULL,
    seq_boot          TEXT COLLATE "C",
    last_seq          BIGINT,
    readiness         TEXT COLLATE "C",
    readiness_reasons TEXT,
    readiness_since   BIGINT
);
CREATE INDEX nodes_by_order ON nodes (region, site, node, state, kind);
CREATE INDEX nodes_by_state ON nodes (state, region, site, node, kind);
CREATE INDEX nodes_by_site ON nodes (site);
CREATE INDEX nodes_by_readiness ON nodes (readiness, region, site, node);

CREATE TABLE place_names (
    region   TEXT COLLATE "C" NOT NULL,
    site     TEXT COLLATE "C" NOT NULL,
    name     TEXT NOT NULL,
    birth_ts BIGINT NOT NULL,
    PRIMARY KEY (region, site)
);

CREATE TABLE transitions (
    node       TEXT COLLATE "C" NOT NULL,
    at         BIGINT NOT NULL,
    id         BIGINT NOT NULL,
    from_state TEXT COLLATE "C" NOT NULL,
    to_state   TEXT COLLATE "C" NOT NULL,
    cause      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (node, at, id)
);
CREATE UNIQUE INDEX transitions_by_id ON transitions (id);

CREATE TABLE faults (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    node        TEXT COLLATE "C" NOT NULL,
    fault_key   TEXT COLLATE "C" NOT NULL,
    severity    TEXT COLLATE "C" NOT NULL,
    raised_at   BIGINT NOT NULL,
    cleared_at  BIGINT,
    message     TEXT,
    boot        TEXT COLLATE "C" NOT NULL,
    received_at BIGINT NOT NULL,
    replay      BIGINT NOT NULL
);
CREATE INDEX faults_by_node ON faults (node, fault_key, cleared_at);
CREATE INDEX faults_by_raise ON faults (node, raised_at);

CREATE TABLE test_receipts (
    id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    node        TEXT COLLATE "C" NOT NULL,
    boot        TEXT COLLATE "C" NOT NULL,
    seq         BIGINT NOT NULL,
    ts          BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    drill       TEXT COLLATE "C",
    test        TEXT COLLATE "C" NOT NULL,
    result      TEXT COLLATE "C" NOT NULL,
    duration_ms BIGINT,
    metrics     TEXT NOT NULL,
    message     TEXT,
    replay      BIGINT NOT NULL
);
CREATE INDEX tests_by_node ON test_receipts (node, ts, result);
CREATE INDEX tests_by_drill ON test_receipts (drill, id) WHERE drill IS NOT NULL;

CREATE TABLE alerts (
    row_id      BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    id          TEXT COLLATE "C" NOT NULL,
    rule        TEXT COLLATE "C" NOT NULL,
    severity    TEXT COLLATE "C" NOT NULL,
    status      TEXT COLLATE "C" NOT NULL,
    region      TEXT COLLATE "C",
    site        TEXT COLLATE "C",
    node        TEXT COLLATE "C",
    kind        TEXT COLLATE "C",
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    summary     TEXT NOT NULL,
    notified    BIGINT NOT NULL,
    ack_by      TEXT,
    ack_at      BIGINT,
    ack_comment TEXT,
    args        TEXT,
    UNIQUE (id, started_at)
);
CREATE INDEX alerts_by_status ON alerts (status, started_at);
CREATE INDEX alerts_by_start ON alerts (started_at);

CREATE TABLE acks (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    alert_id   TEXT COLLATE "C" NOT NULL,
    started_at BIGINT NOT NULL,
    by         TEXT NOT NULL,
    at         BIGINT NOT NULL,
    comment    TEXT
);

CREATE TABLE silences (
    id         TEXT COLLATE "C" PRIMARY KEY,
    region     TEXT COLLATE "C",
    site       TEXT COLLATE "C",
    node       TEXT COLLATE "C",
    kind       TEXT COLLATE "C",
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    comment    TEXT
);
CREATE INDEX silences_by_end ON silences (ends_at);
CREATE INDEX silences_by_start ON silences (starts_at, id);

CREATE TABLE notification_log (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    alert_id         TEXT COLLATE "C" NOT NULL,
    alert_started_at BIGINT NOT NULL,
    status           TEXT COLLATE "C" NOT NULL,
    output           TEXT COLLATE "C" NOT NULL,
    attempt          BIGINT NOT NULL,
    at               BIGINT NOT NULL,
    ok               BIGINT NOT NULL,
    error            TEXT
);
CREATE INDEX notifications_by_alert ON notification_log (alert_id, at);

CREATE TABLE collector_runs (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    started_at BIGINT NOT NULL,
    alive_at   BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE TABLE blind_intervals (
    id       BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    run      BIGINT NOT NULL,
    start_at BIGINT NOT NULL,
    end_at   BIGINT
);
CREATE INDEX blind_by_time ON blind_intervals (start_at);

CREATE TABLE readiness_transitions (
    node        TEXT COLLATE "C" NOT NULL,
    at          BIGINT NOT NULL,
    id          BIGINT NOT NULL,
    from_state  TEXT COLLATE "C",
    to_state    TEXT COLLATE "C" NOT NULL,
    maintenance BIGINT NOT NULL,
    reasons     TEXT NOT NULL,
    PRIMARY KEY (node, at, id)
);
CREATE UNIQUE INDEX readiness_transitions_by_id ON readiness_transitions (id);

CREATE TABLE drills (
    rowid          BIGINT GENERATED BY DEFAULT AS IDENTITY UNIQUE,
    id             TEXT COLLATE "C" PRIMARY KEY,
    test           TEXT COLLATE "C" NOT NULL,
    selector       TEXT NOT NULL,
    started_at     BIGINT NOT NULL,
    deadline       BIGINT NOT NULL,
    started_by     TEXT NOT NULL,
    status         TEXT COLLATE "C" NOT NULL,
    closed_at      BIGINT,
    cancelled_by   TEXT,
    schedule       TEXT COLLATE "C",
    asked          BIGINT NOT NULL,
    waiting        BIGINT NOT NULL,
    passed         BIGINT NOT NULL,
    failed         BIGINT NOT NULL,
    errored        BIGINT NOT NULL,
    silent         BIGINT NOT NULL,
    late           BIGINT NOT NULL,
    receipt_cursor BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX drills_by_start ON drills (started_at);
CREATE INDEX drills_by_status ON drills (status, closed_at);

CREATE TABLE drill_nodes (
    drill       TEXT COLLATE "C" NOT NULL,
    region      TEXT COLLATE "C" NOT NULL,
    site        TEXT COLLATE "C" NOT NULL,
    node        TEXT COLLATE "C" NOT NULL,
    kind        TEXT COLLATE "C" NOT NULL,
    outcome     TEXT COLLATE "C" NOT NULL,
    result      TEXT COLLATE "C",
    received_at BIGINT,
    duration_ms BIGINT,
    message     TEXT,
    metrics     TEXT,
    PRIMARY KEY (drill, region, site, node)
);
CREATE UNIQUE INDEX drill_nodes_by_node ON drill_nodes (drill, node);

CREATE TABLE drill_schedule (
    name            TEXT COLLATE "C" PRIMARY KEY,
    last_occurrence BIGINT NOT NULL
);

CREATE TABLE audit (
    id      BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT COLLATE "C",
    role    TEXT COLLATE "C" NOT NULL,
    peer    TEXT,
    action  TEXT COLLATE "C" NOT NULL,
    target  TEXT,
    outcome TEXT COLLATE "C" NOT NULL,
    status  BIGINT,
    detail  TEXT
);
CREATE INDEX audit_by_time ON audit (at);
CREATE INDEX audit_by_actor ON audit (actor, at);

CREATE TABLE node_days (
    node           TEXT COLLATE "C" NOT NULL,
    day            BIGINT NOT NULL,
    day_end        BIGINT NOT NULL,
    up_ms          BIGINT NOT NULL,
    down_ms        BIGINT NOT NULL,
    maintenance_ms BIGINT NOT NULL,
    unknown_ms     BIGINT NOT NULL,
    outages        BIGINT NOT NULL,
    first_carried  BIGINT NOT NULL,
    first_ms       BIGINT NOT NULL,
    last_open      BIGINT NOT NULL,
    last_ms        BIGINT NOT NULL,
    longest_ms     BIGINT NOT NULL,
    went_up        BIGINT NOT NULL,
    tests          BIGINT NOT NULL,
    tests_passed   BIGINT NOT NULL,
    tests_failed   BIGINT NOT NULL,
    PRIMARY KEY (node, day)
);
CREATE TABLE store_marks (
    name  TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);
"#,
    // 2: SQLite's migration 11 (the notification outbox), and the active collector's
    // lease (PostgreSQL only: several collectors share one database; see crate::ha). One
    // row per lease name: who holds it, since which takeover (`epoch`, which fences the
    // writes of a holder that lost it), and until when (milliseconds on the database's
    // clock, so the collectors' clocks need not agree).
    r#"
CREATE TABLE notices (
    id         BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    alert_id   TEXT COLLATE "C" NOT NULL,
    started_at BIGINT NOT NULL,
    status     TEXT COLLATE "C" NOT NULL,
    at         BIGINT NOT NULL,
    alert      TEXT NOT NULL
);
CREATE INDEX notices_by_time ON notices (at);
ALTER TABLE notification_log ADD COLUMN notice BIGINT;
ALTER TABLE notification_log ADD COLUMN done BIGINT NOT NULL DEFAULT 0;
CREATE INDEX notifications_by_notice ON notification_log (notice, output);
CREATE TABLE collector_lease (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    renewed_at BIGINT NOT NULL
);
"#,
    // 3: SQLite's migration 12 (the summaries' spans).
    r#"
CREATE TABLE summary_days (
    day     BIGINT PRIMARY KEY,
    day_end BIGINT NOT NULL
);
INSERT INTO summary_days (day, day_end) SELECT DISTINCT day, day_end FROM node_days;
INSERT INTO store_marks (name, value)
    SELECT 'summaries_reach', value FROM store_marks WHERE name = 'summarized_until';
"#,
    // 4: the keys of `node_days` and `transitions` carry every column (PostgreSQL only:
    // SQLite's tables are `WITHOUT ROWID`, clustered on their keys already). A report
    // reads a node's days, and its transitions around the window, in key order; from the
    // heap, where rows lie in the order they were written (by day, by time), that is one
    // page per row (a 30-day report over 10 000 nodes: 300 000 page reads, most of its
    // time), from the index, a few pages per node. Index-only scans need the visibility
    // map: both tables are vacuumed after any 1 000 new rows, not once a fifth is new.
    r#"
ALTER TABLE node_days DROP CONSTRAINT node_days_pkey;
ALTER TABLE node_days ADD CONSTRAINT node_days_pkey PRIMARY KEY (node, day)
    INCLUDE (day_end, up_ms, down_ms, maintenance_ms, unknown_ms, outages, first_carried,
             first_ms, last_open, last_ms, longest_ms, went_up, tests, tests_passed,
             tests_failed);
ALTER TABLE node_days SET (autovacuum_vacuum_insert_scale_factor = 0);
ALTER TABLE transitions DROP CONSTRAINT transitions_pkey;
ALTER TABLE transitions ADD CONSTRAINT transitions_pkey PRIMARY KEY (node, at, id)
    INCLUDE (from_state, to_state, cause);
ALTER TABLE transitions SET (autovacuum_vacuum_insert_scale_factor = 0);
"#,
    // 5: SQLite's migration 13 (a drill's owner).
    r#"
ALTER TABLE drills ADD COLUMN owner TEXT COLLATE "C" NOT NULL DEFAULT '';
"#,
    // 6: SQLite's migration 14 (blocks of summaries, keyed by their span).
    r#"
ALTER TABLE node_days DROP CONSTRAINT node_days_pkey;
ALTER TABLE node_days ADD CONSTRAINT node_days_pkey PRIMARY KEY (node, day, day_end)
    INCLUDE (up_ms, down_ms, maintenance_ms, unknown_ms, outages, first_carried,
             first_ms, last_open, last_ms, longest_ms, went_up, tests, tests_passed,
             tests_failed);
CREATE TABLE summary_blocks (
    day     BIGINT NOT NULL,
    day_end BIGINT NOT NULL,
    PRIMARY KEY (day, day_end)
);
"#,
    // 7: SQLite's migration 15 (a run's shard and the regions it watched).
    r#"
ALTER TABLE collector_runs ADD COLUMN shard TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE collector_runs ADD COLUMN regions TEXT COLLATE "C";
CREATE INDEX runs_by_shard ON collector_runs (shard, alive_at);
"#,
    // 8: `node_days` keyed by span first (PostgreSQL only). A report reads each span of its
    // cover over every node: one index range a span, in place of a range a node, which
    // PostgreSQL read whole (every day and block of the window) rather than seek the
    // spans it needs. A late write deletes a node's rows by the node (`node_days_by_node`).
    r#"
ALTER TABLE node_days DROP CONSTRAINT node_days_pkey;
ALTER TABLE node_days ADD CONSTRAINT node_days_pkey PRIMARY KEY (day, day_end, node)
    INCLUDE (up_ms, down_ms, maintenance_ms, unknown_ms, outages, first_carried,
             first_ms, last_open, last_ms, longest_ms, went_up, tests, tests_passed,
             tests_failed);
CREATE INDEX node_days_by_node ON node_days (node, day);
"#,
    // 9: SQLite's migration 16 (test receipts by time).
    r#"
CREATE INDEX tests_by_time ON test_receipts (ts, node, result);
"#,
];

/// The key of the advisory lock the PostgreSQL migration holds ("alarmnet" in ASCII), so
/// that collectors starting at once on one database migrate it once, one after another.
const MIGRATION_LOCK: i64 = 0x616c_6172_6d6e_6574;

/// The schema version of a PostgreSQL database (0 for an empty one).
pub fn postgres_version(conn: &Conn) -> Result<usize, super::StoreError> {
    let exists: bool = conn.query_one(
        "SELECT to_regclass('alarmnet_schema') IS NOT NULL",
        &[],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> =
        conn.query_opt("SELECT version FROM alarmnet_schema", &[], |r| r.get(0))?;
    Ok(v.map_or(0, |v| usize::try_from(v).unwrap_or(0)))
}

/// Applies every PostgreSQL migration the database lacks, in one transaction under an
/// advisory lock. Returns the number applied. A database newer than this program is an
/// error, not a downgrade.
pub fn migrate_postgres(conn: &Conn) -> Result<usize, super::StoreError> {
    conn.batch("BEGIN")?;
    let applied = migrate_postgres_locked(conn);
    match &applied {
        Ok(_) => conn.batch("COMMIT")?,
        Err(_) => {
            let _ = conn.batch("ROLLBACK");
        }
    }
    applied
}

fn migrate_postgres_locked(conn: &Conn) -> Result<usize, super::StoreError> {
    conn.execute(
        "SELECT pg_advisory_xact_lock(?1)",
        super::sql::args![MIGRATION_LOCK],
    )?;
    conn.batch("CREATE TABLE IF NOT EXISTS alarmnet_schema (version BIGINT NOT NULL)")?;
    let current = postgres_version(conn)?;
    if current > POSTGRES.len() {
        return Err(super::StoreError::TooNew {
            found: current,
            known: POSTGRES.len(),
        });
    }
    if current == POSTGRES.len() {
        return Ok(0);
    }
    for (i, sql) in POSTGRES.iter().enumerate().skip(current) {
        conn.batch(sql)?;
        tracing::info!(version = i + 1, "store schema migrated (postgres)");
    }
    conn.execute("DELETE FROM alarmnet_schema", &[])?;
    conn.execute(
        "INSERT INTO alarmnet_schema (version) VALUES (?1)",
        super::sql::args![i64::try_from(POSTGRES.len()).unwrap_or(i64::MAX)],
    )?;
    Ok(POSTGRES.len() - current)
}
