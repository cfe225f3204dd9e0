//! One SQL text for two engines: [`Conn`] runs the store's statements on SQLite (the
//! embedded default) or on PostgreSQL (the store several collectors share).
//!
//! Design: the store's statements are written once, in the SQL both engines speak
//! (`ON CONFLICT … DO UPDATE`, `RETURNING`, row values, `count(*) FILTER`, window
//! functions), with `?N` placeholders. [`Conn`] adapts the little that differs:
//! placeholders become `$N` for PostgreSQL, and the two-argument `greatest(a, b)` /
//! `least(a, b)` become SQLite's scalar `max` / `min` (the store only uses them on values
//! that are never NULL, where the two agree). Values cross as [`Value`] and come back as
//! [`Row`] cells read leniently (an `int4` or an integral `numeric` reads as an `i64`, an
//! integer as a `bool`), so a statement needs no cast to please the stricter engine's
//! client. One text per statement keeps the two engines from drifting apart: the store's
//! test suite runs on both. Only the schema (see `schema`) and a few engine facts (page
//! caps, file reserve) are per engine.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::BufMut;
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

use super::StoreError;
use super::pg::PgTarget;
use crate::model::{AlertId, SilenceId};

/// Which engine a [`Conn`] speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection to either engine. Not shared between threads: each store thread owns one.
pub struct Conn {
    inner: Inner,
}

enum Inner {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

struct Pg {
    client: postgres::Client,
    /// Prepared statements by their text as written (before translation).
    statements: HashMap<String, postgres::Statement>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

/// The connection settings of the PostgreSQL URL `url` (`postgres://user@host:port/db`,
/// its TLS options included), with `password` when given and no TLS files beside the URL
/// (see [`PgTarget::new`]).
pub fn pg_config(url: &str, password: Option<&str>) -> Result<PgTarget, StoreError> {
    PgTarget::new(url, password, &super::pg::PgTlsFiles::default())
}

/// How long connecting to PostgreSQL may take when the URL does not say
/// (`connect_timeout=`).
pub(super) const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Conn {
    pub fn sqlite(conn: rusqlite::Connection) -> Conn {
        Conn {
            inner: Inner::Sqlite(conn),
        }
    }

    /// Connects to the PostgreSQL database `config` describes (see [`pg_config`]).
    ///
    /// Must not run on an async worker: the client blocks (the store calls it from its own
    /// threads).
    pub fn postgres(target: &PgTarget) -> Result<Conn, StoreError> {
        let client = target.connect()?;
        Ok(Conn {
            inner: Inner::Postgres(Box::new(RefCell::new(Pg {
                client,
                statements: HashMap::new(),
            }))),
        })
    }

    /// Whether the connection is gone for good (a PostgreSQL server that restarted or
    /// dropped it); an SQLite connection never is.
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => false,
            Inner::Postgres(pg) => pg.borrow().client.is_closed(),
        }
    }

    /// Whether the connection still answers (an empty query on PostgreSQL, within 2 s): a
    /// connection the server dropped while it was idle is only found out by using it.
    pub fn answers(&self) -> bool {
        match &self.inner {
            Inner::Sqlite(_) => true,
            Inner::Postgres(pg) => pg
                .borrow_mut()
                .client
                .is_valid(std::time::Duration::from_secs(2))
                .is_ok(),
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::Sqlite(_) => Dialect::Sqlite,
            Inner::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Takes, until the transaction ends, the lock of the rows numbered `max(id) + 1` in
    /// `table`: on PostgreSQL the collectors of several region shards write at once, and
    /// two of them must not number two rows alike. SQLite has one writer: nothing to do.
    pub fn lock_numbering(&self, table: &str) -> Result<(), StoreError> {
        if self.dialect() == Dialect::Sqlite {
            return Ok(());
        }
        self.query_one(
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext(?1))) AS locked",
            &[Value::from(table)],
            |r| r.get::<i64>(0),
        )?;
        Ok(())
    }

    /// The SQLite connection, for what only SQLite has (pragmas, the page cap). `None` on
    /// PostgreSQL.
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.inner {
            Inner::Sqlite(c) => Some(c),
            Inner::Postgres(_) => None,
        }
    }

    /// Runs statements without parameters or results (transaction control, DDL).
    pub fn batch(&self, sql: &str) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Inner::Postgres(pg) => Ok(pg.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Opens a write transaction (the store thread's batch).
    pub fn begin_write(&self) -> Result<(), StoreError> {
        self.batch(match self.dialect() {
            // Takes the write lock now: a batch never fails half-way on a busy database.
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        })
    }

    /// Opens a read transaction: one consistent snapshot for everything it reads, where
    /// nothing can be written (SQLite's reader connections are read-only themselves).
    pub fn begin_read(&self) -> Result<(), StoreError> {
        self.batch(match self.dialect() {
            Dialect::Sqlite => "BEGIN",
            Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value<'_>]) -> Result<u64, StoreError> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let n = c
                    .prepare_cached(&sqlite_text(sql))?
                    .execute(rusqlite::params_from_iter(params))?;
                Ok(n as u64)
            }
            Inner::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let statement = pg.statement(sql)?;
                Ok(pg.client.execute(&statement, &pg_params(params))?)
            }
        }
    }

    /// Runs one query and maps every row with `f`, in order.
    ///
    /// On SQLite the rows stream from the engine; on PostgreSQL they are all read first, so
    /// `f` may itself query the same connection on both.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.each(sql, params, |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Runs one query and hands every row to `f`, in order (see [`Self::query`]).
    pub fn each(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Sqlite(c) => {
                let mut statement = c.prepare_cached(&sqlite_text(sql))?;
                let mut rows = statement.query(rusqlite::params_from_iter(params))?;
                while let Some(r) = rows.next()? {
                    f(&Row(RowInner::Sqlite(r)))?;
                }
                Ok(())
            }
            Inner::Postgres(pg) => {
                let rows = {
                    let mut pg = pg.borrow_mut();
                    let statement = pg.statement(sql)?;
                    pg.client.query(&statement, &pg_params(params))?
                };
                rows.iter().try_for_each(|r| f(&Row(RowInner::Postgres(r))))
            }
        }
    }

    /// [`Self::each`], with the rows streaming from the engine on both: for large results
    /// (hundreds of thousands of rows), which need not be held at once. `f` must not use
    /// this connection (on PostgreSQL the query is still running while it is called).
    pub fn each_streamed(
        &self,
        sql: &str,
        params: &[Value<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        use postgres::fallible_iterator::FallibleIterator;
        match &self.inner {
            Inner::Sqlite(_) => self.each(sql, params, f),
            Inner::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let statement = pg.statement(sql)?;
                let mut rows = pg.client.query_raw(&statement, pg_params(params))?;
                while let Some(r) = rows.next()? {
                    f(&Row(RowInner::Postgres(&r)))?;
                }
                Ok(())
            }
        }
    }

    /// The first row of a query mapped by `f`, or `None` without rows.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut f = Some(f);
        let mut out = None;
        self.each(sql, params, |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query mapped by `f`; no row is an error.
    pub fn query_one<T>(
        &self,
        sql: &str,
        params: &[Value<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from {}", first_line(sql))))
    }
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or_default()
}

impl Pg {
    /// The prepared statement for `sql`, prepared once per connection.
    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, StoreError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(&postgres_text(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

fn pg_params<'v>(params: &'v [Value<'_>]) -> Vec<&'v (dyn ToSql + Sync)> {
    params.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// The statement as SQLite reads it: `greatest(` / `least(` are its scalar `max(` / `min(`.
fn sqlite_text(sql: &str) -> Cow<'_, str> {
    if sql.contains("greatest(") || sql.contains("least(") {
        Cow::Owned(sql.replace("greatest(", "max(").replace("least(", "min("))
    } else {
        Cow::Borrowed(sql)
    }
}

/// The statement as PostgreSQL reads it: `?N` becomes `$N`, and bare `?` placeholders are
/// numbered in order. Text inside quotes is left alone.
pub(super) fn postgres_text(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    let mut bare = 0;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => {
                out.push('$');
                let mut numbered = false;
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                    numbered = true;
                }
                if !numbered {
                    bare += 1;
                    out.push_str(&bare.to_string());
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// A value bound to a statement's placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(Cow<'a, str>),
}

/// The values of a statement, in placeholder order: `args![node.as_str(), ms_sql(at)]`.
#[allow(unused_macros)]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$($crate::store::sql::Value::from($v)),*]
    };
}
#[allow(unused_imports)]
pub(crate) use args;

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value<'_> {
    fn from(v: u32) -> Self {
        Value::Int(i64::from(v))
    }
}
impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<f64> for Value<'_> {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}
impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::Text(Cow::Borrowed(v))
    }
}
impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Value::Text(Cow::Owned(v))
    }
}
/// Alert and silence ids are stored as the text they are on every wire.
impl From<AlertId> for Value<'_> {
    fn from(v: AlertId) -> Self {
        Value::Text(Cow::Owned(v.to_string()))
    }
}
impl From<SilenceId> for Value<'_> {
    fn from(v: SilenceId) -> Self {
        Value::Text(Cow::Owned(v.to_string()))
    }
}
impl<'a, T: Into<Value<'a>>> From<Option<T>> for Value<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Real(v) => ValueRef::Real(*v),
            Value::Bool(v) => ValueRef::Integer(i64::from(*v)),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

/// Encodes into whatever type PostgreSQL inferred for the placeholder, when the value fits
/// it: an integer into `int2`/`int4`/`int8`/`float8`/`bool`, a bool into `bool` or an
/// integer type.
impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        let int = |v: i64, out: &mut bytes::BytesMut| -> Result<(), BoxError> {
            match *ty {
                Type::INT8 => out.put_i64(v),
                Type::INT4 => out.put_i32(i32::try_from(v)?),
                Type::INT2 => out.put_i16(i16::try_from(v)?),
                Type::FLOAT8 => out.put_f64(v as f64),
                Type::BOOL => out.put_u8(u8::from(v != 0)),
                _ => return Err(format!("an integer cannot be bound as {ty}").into()),
            }
            Ok(())
        };
        match self {
            Value::Null => return Ok(IsNull::Yes),
            Value::Int(v) => int(*v, out)?,
            Value::Bool(v) => int(i64::from(*v), out)?,
            Value::Real(v) => match *ty {
                Type::FLOAT8 => out.put_f64(*v),
                Type::FLOAT4 => out.put_f32(*v as f32),
                _ => return Err(format!("a real cannot be bound as {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    out.put_slice(s.as_bytes())
                }
                _ => return Err(format!("text cannot be bound as {ty}").into()),
            },
        }
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        // Every type is tried; `to_sql` says which value cannot be written as which type.
        true
    }

    to_sql_checked!();
}

/// One column's value as read, borrowed from the row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(&'a str),
}

impl<'a> FromSql<'a> for Cell<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Cell::Int(i64::from_be_bytes(raw.try_into()?)),
            Type::INT4 => Cell::Int(i64::from(i32::from_be_bytes(raw.try_into()?))),
            Type::INT2 => Cell::Int(i64::from(i16::from_be_bytes(raw.try_into()?))),
            Type::FLOAT8 => Cell::Real(f64::from_be_bytes(raw.try_into()?)),
            Type::FLOAT4 => Cell::Real(f64::from(f32::from_be_bytes(raw.try_into()?))),
            Type::BOOL => Cell::Bool(raw.first().is_some_and(|b| *b != 0)),
            Type::NUMERIC => Cell::Int(numeric_integer(raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Cell::Text(std::str::from_utf8(raw)?)
            }
            _ => return Err(format!("cannot read a column of type {ty}").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// An integral `numeric` (what PostgreSQL's `sum` of `bigint`s is) as an `i64`.
///
/// The binary form: digit count, weight (of the first digit, in powers of 10 000), sign,
/// display scale, then the base-10 000 digits.
fn numeric_integer(raw: &[u8]) -> Result<i64, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        let b = raw.get(i * 2..i * 2 + 2).ok_or("a short numeric")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    };
    let digits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let mut value: i64 = 0;
    for i in 0..digits {
        let digit = i64::from(word(4 + i)?);
        let power = weight - i as i64;
        if power < 0 {
            if digit != 0 {
                return Err("a numeric with a fraction where an integer was expected".into());
            }
            continue;
        }
        let scale = 10_000i64
            .checked_pow(u32::try_from(power)?)
            .ok_or("a numeric too large for an i64")?;
        value = digit
            .checked_mul(scale)
            .and_then(|d| value.checked_add(d))
            .ok_or("a numeric too large for an i64")?;
    }
    match sign {
        0x0000 => Ok(value),
        0x4000 => Ok(-value),
        _ => Err("a numeric that is not a number".into()),
    }
}

/// One row of a result.
pub struct Row<'r>(RowInner<'r>);

impl std::fmt::Debug for Row<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Row").finish_non_exhaustive()
    }
}

enum RowInner<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `i`, borrowed.
    pub fn cell(&self, i: usize) -> Result<Cell<'_>, StoreError> {
        match &self.0 {
            RowInner::Sqlite(r) => Ok(match r.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(t) => Cell::Text(
                    std::str::from_utf8(t)
                        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))?,
                ),
                ValueRef::Blob(_) => {
                    return Err(StoreError::Corrupt(format!("column {i} is a blob")));
                }
            }),
            RowInner::Postgres(r) => Ok(r.try_get::<_, Cell<'_>>(i)?),
        }
    }

    /// Column `i` as a `T`.
    pub fn get<T: FromCell>(&self, i: usize) -> Result<T, StoreError> {
        let cell = self.cell(i)?;
        T::from_cell(cell).ok_or_else(|| StoreError::Corrupt(format!("column {i}: {cell:?}")))
    }

    /// Column `i` as borrowed text.
    pub fn str(&self, i: usize) -> Result<&str, StoreError> {
        match self.cell(i)? {
            Cell::Text(s) => Ok(s),
            other => Err(StoreError::Corrupt(format!("column {i}: {other:?}"))),
        }
    }
}

/// A Rust value read from a [`Cell`]; `None` when the cell cannot be one.
pub trait FromCell: Sized {
    fn from_cell(cell: Cell<'_>) -> Option<Self>;
}

impl FromCell for i64 {
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Int(v) => Some(v),
            Cell::Bool(v) => Some(i64::from(v)),
            _ => None,
        }
    }
}
impl FromCell for u32 {
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        i64::from_cell(cell).and_then(|v| u32::try_from(v).ok())
    }
}
impl FromCell for bool {
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Bool(v) => Some(v),
            Cell::Int(v) => Some(v != 0),
            _ => None,
        }
    }
}
impl FromCell for f64 {
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Real(v) => Some(v),
            Cell::Int(v) => Some(v as f64),
            _ => None,
        }
    }
}
impl FromCell for String {
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Text(s) => Some(s.to_owned()),
            _ => None,
        }
    }
}
impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Cell<'_>) -> Option<Self> {
        match cell {
            Cell::Null => Some(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// The type of a key column in a PostgreSQL `VALUES` list ([`value_rows`]): text in the
/// byte order of the schema's key columns (`COLLATE "C"`), so that a join on it can use
/// their indexes.
pub const KEY: &str = "KEY";

/// Rows per multi-row statement (a `VALUES` list).
pub const ROWS_PER_STATEMENT: usize = 256;

/// Splits `items` into chunks of [`ROWS_PER_STATEMENT`], the tail in halving sizes, so a
/// multi-row statement is prepared in at most a few sizes.
pub fn chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = ROWS_PER_STATEMENT;
        while n > rest.len() {
            n /= 2;
        }
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

/// `rows` rows of a PostgreSQL `VALUES` list, one placeholder per column, numbered in row
/// order and each cast to its column's type (PostgreSQL infers none inside a `VALUES`
/// list; [`KEY`] for a key). The list's columns are `column1`, `column2`, ...
pub fn value_rows(rows: usize, types: &[&str]) -> String {
    let mut out = String::new();
    let mut p = 0;
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for (c, ty) in types.iter().enumerate() {
            p += 1;
            if c > 0 {
                out.push_str(", ");
            }
            if *ty == KEY {
                out.push_str(&format!("CAST(?{p} AS TEXT) COLLATE \"C\""));
            } else {
                out.push_str(&format!("CAST(?{p} AS {ty})"));
            }
        }
        out.push(')');
    }
    out
}

/// `{join} {table} {alias} ON {on}` (`join`: `JOIN` or `LEFT JOIN`) for a join whose outer
/// side is every node and whose inner side is a few rows of each, found by an index: on
/// PostgreSQL as a subquery per outer row (`LATERAL`, kept one by `OFFSET 0`). Left to
/// itself, PostgreSQL hashed such joins over a scan of the whole inner table (10 000 nodes
/// and a partial day of transitions: 0.46 s against 0.13 s; the two halves of a block:
/// a scan of every summary row) and sorted the result on disk; SQLite loops over the outer
/// rows anyway, and has no `LATERAL`.
pub fn join_each(dialect: Dialect, join: &str, table: &str, alias: &str, on: &str) -> String {
    match dialect {
        Dialect::Sqlite => format!("{join} {table} {alias} ON {on}"),
        Dialect::Postgres => format!(
            "{join} LATERAL (SELECT * FROM {table} {alias} WHERE {on} OFFSET 0) {alias} ON true"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            postgres_text("SELECT ?1, '?', ?12 WHERE x = ?1"),
            "SELECT $1, '?', $12 WHERE x = $1"
        );
        assert_eq!(
            postgres_text("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
    }

    #[test]
    fn sqlite_reads_greatest_and_least_as_its_scalar_max_and_min() {
        assert_eq!(
            sqlite_text("SET a = greatest(a, ?2), b = least(b, greatest(c, ?3))"),
            "SET a = max(a, ?2), b = min(b, max(c, ?3))"
        );
        assert!(matches!(sqlite_text("SELECT max(id)"), Cow::Borrowed(_)));
    }

    /// `numeric` in PostgreSQL's binary form: digits of base 10 000.
    fn numeric(weight: i16, sign: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [digits.len() as u16, weight as u16, sign, 0] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn integral_numerics_read_as_integers() {
        assert_eq!(numeric_integer(&numeric(0, 0, &[])).ok(), Some(0));
        assert_eq!(numeric_integer(&numeric(0, 0, &[42])).ok(), Some(42));
        // 1 2345 6789 = 123 456 789 with trailing zero digits dropped: 1 0000 0000.
        assert_eq!(
            numeric_integer(&numeric(2, 0, &[1, 2345, 6789])).ok(),
            Some(123_456_789)
        );
        assert_eq!(
            numeric_integer(&numeric(2, 0, &[1])).ok(),
            Some(100_000_000)
        );
        assert_eq!(numeric_integer(&numeric(0, 0x4000, &[7])).ok(), Some(-7));
        assert!(numeric_integer(&numeric(0, 0, &[1, 5000])).is_err(), "1.5");
        assert!(numeric_integer(&numeric(0, 0xC000, &[])).is_err(), "NaN");
        assert!(numeric_integer(&numeric(5, 0, &[1])).is_err(), "10^20");
    }
}
