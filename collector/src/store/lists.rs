//! What the API's lists share: WHERE clauses built from constant fragments, keyset pages,
//! and the values they bind.

use super::db::{i64_of, i64_of_usize, ms_sql};
use super::sql::Value;
use crate::model::UnixMillis;

/// A WHERE clause assembled from constant SQL fragments written in the store's files, with
/// the values they bind, in order. No value from a request ever becomes SQL text.
#[derive(Debug, Default, Clone)]
pub(super) struct Conditions {
    fragments: Vec<&'static str>,
    values: Vec<Value<'static>>,
}

impl Conditions {
    pub(super) fn and(
        &mut self,
        fragment: &'static str,
        values: impl IntoIterator<Item = Value<'static>>,
    ) {
        self.fragments.push(fragment);
        self.values.extend(values);
    }

    /// `fragment`, binding one text value, only when the value is given.
    pub(super) fn eq(&mut self, fragment: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.and(fragment, [text(v)]);
        }
    }

    /// One more value, for a placeholder after the WHERE clause (a page's `LIMIT ?`).
    pub(super) fn push(&mut self, value: Value<'static>) {
        self.values.push(value);
    }

    /// The values to bind, in order.
    pub(super) fn values(&self) -> &[Value<'static>] {
        &self.values
    }

    /// Whether there are none.
    pub(super) fn is_empty(&self) -> bool {
        self.fragments.is_empty()
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
    pub(super) fn with(
        &self,
        fragment: &'static str,
        values: impl IntoIterator<Item = Value<'static>>,
    ) -> Self {
        let mut more = self.clone();
        more.and(fragment, values);
        more
    }
}

pub(super) fn text(s: &str) -> Value<'static> {
    Value::from(s.to_owned())
}

pub(super) fn int(v: u64) -> Value<'static> {
    Value::Int(i64_of(v))
}

pub(super) fn ts_int(t: UnixMillis) -> Value<'static> {
    Value::Int(ms_sql(t))
}

/// `values` padded with NULLs to `N` slots, for a fixed `IN (?, ...)` of `N` placeholders
/// (`x IN ('a', NULL)` holds only for `'a'`).
pub(super) fn slots<const N: usize>(
    values: impl IntoIterator<Item = Value<'static>>,
) -> [Value<'static>; N] {
    let mut out: [Value<'static>; N] = std::array::from_fn(|_| Value::Null);
    for (slot, v) in out.iter_mut().zip(values) {
        *slot = v;
    }
    out
}

/// One row more than a page holds: whether it exists says whether a page follows.
pub(super) fn limit_plus_one(limit: usize) -> Value<'static> {
    Value::Int(i64_of_usize(limit.saturating_add(1)))
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

/// The position of a row in a newest-first list: its time, then its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeKey {
    pub at: UnixMillis,
    pub id: i64,
}
