//! [`Db`]: the store's synchronous operations over one connection, to SQLite or to
//! PostgreSQL. It runs on a store thread (see [`super::Store`]), never on an async worker;
//! tests may drive it directly. The operations live in one file per concern (nodes,
//! history, faults and tests, alerts, drills, readiness, audit, days, retention, runs).
//!
//! Design (SQLite): WAL with `synchronous = FULL`. The collector promises that a transition
//! is committed before it is announced and that history survives power loss; with NORMAL,
//! WAL commits acknowledged just before a power cut may vanish while their notifications
//! were already sent. FULL costs one fsync per commit, which the store thread amortizes by
//! committing many commands in one transaction. PostgreSQL commits durably by default
//! (`synchronous_commit = on`), which the collector leaves alone.

use std::path::Path;

use alarmnet_protocol::AlertStatus;
use rusqlite::Connection;

use super::StoreError;
use super::schema;
use super::sql::Conn;
use crate::model::{Cause, Liveness, UnixMillis};

/// The store's connection and its operations.
#[derive(Debug)]
pub struct Db {
    conn: Conn,
}

impl Db {
    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A read-only connection to the SQLite database at `path`, which the writer has
    /// already opened and migrated (for [`super::Store::read`]).
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

    /// An in-memory SQLite database (tests).
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

    /// Connects to the PostgreSQL database and migrates it (several collectors
    /// starting at once migrate it once: see [`schema::migrate_postgres`]).
    pub fn connect(config: &super::pg::PgTarget) -> Result<Db, StoreError> {
        let conn = Conn::postgres(config)?;
        schema::migrate_postgres(&conn)?;
        Ok(Db { conn })
    }

    /// Another connection to the PostgreSQL database, which must already have this
    /// collector's schema (for [`super::Store::read`]).
    pub fn connect_reader(config: &super::pg::PgTarget) -> Result<Db, StoreError> {
        let conn = Conn::postgres(config)?;
        let found = schema::postgres_version(&conn)?;
        if found != schema::POSTGRES.len() {
            return Err(StoreError::Corrupt(format!(
                "a reader found schema version {found}, expected {}",
                schema::POSTGRES.len()
            )));
        }
        Ok(Db { conn })
    }

    /// The connection: the store thread manages transactions with it, the concerns run
    /// their statements on it.
    pub(super) fn conn(&self) -> &Conn {
        &self.conn
    }
}

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A count or size as a statement's value (saturating).
pub(super) fn i64_of_usize(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// An instant as its store column: INTEGER milliseconds since the epoch.
pub(super) fn ms_sql(t: UnixMillis) -> i64 {
    i64_of(t.as_millis())
}

/// An instant from its store column (a negative value reads as the epoch).
pub(super) fn ts_of(v: i64) -> UnixMillis {
    UnixMillis::from_millis(u64_of(v))
}

pub(super) fn parse<T: std::str::FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what}: {s:?}")))
}

pub(super) fn liveness(s: &str) -> Result<Liveness, StoreError> {
    Liveness::from_name(s).ok_or_else(|| StoreError::Corrupt(format!("state {s:?}")))
}

pub(super) fn cause(s: &str) -> Result<Cause, StoreError> {
    Cause::from_name(s).ok_or_else(|| StoreError::Corrupt(format!("cause {s:?}")))
}

pub(super) fn status_str(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::Firing => "firing",
        AlertStatus::Resolved => "resolved",
    }
}

pub(super) fn status(s: &str) -> Result<AlertStatus, StoreError> {
    match s {
        "firing" => Ok(AlertStatus::Firing),
        "resolved" => Ok(AlertStatus::Resolved),
        _ => Err(StoreError::Corrupt(format!("alert status {s:?}"))),
    }
}

pub(super) fn id<T>(
    what: &str,
    s: String,
    new: impl FnOnce(String) -> Result<T, alarmnet_protocol::IdError>,
) -> Result<T, StoreError> {
    new(s.clone()).map_err(|_| StoreError::Corrupt(format!("{what} {s:?}")))
}

pub(super) fn opt_id<T>(
    what: &str,
    s: Option<String>,
    new: impl FnOnce(String) -> Result<T, alarmnet_protocol::IdError>,
) -> Result<Option<T>, StoreError> {
    s.map(|s| id(what, s, new)).transpose()
}
