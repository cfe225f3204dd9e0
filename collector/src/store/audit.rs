//! The audit log in the store: append an entry, list a page newest first with filters,
//! and prune entries older than the retention. See [`crate::audit`].

use super::StoreError;
use super::db::{Db, ms_sql, ts_of, u64_of};
use super::lists::{Paged, TimeKey};
use super::sql::{Row, args};
use crate::audit::{AuditEntry, Outcome};
use crate::model::UnixMillis;

/// Which entries a list covers. Empty fields match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// `[from, to)`.
    pub window: Option<(UnixMillis, UnixMillis)>,
    /// The token's name.
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
}

const COLUMNS: &str = "id, at, actor, role, peer, action, target, outcome, status, detail";

fn entry(r: &Row<'_>) -> Result<AuditEntry, StoreError> {
    let outcome = r.str(7)?;
    Ok(AuditEntry {
        id: r.get(0)?,
        at: ts_of(r.get(1)?),
        actor: r.get(2)?,
        role: r.get(3)?,
        peer: r.get(4)?,
        action: r.get(5)?,
        target: r.get(6)?,
        outcome: Outcome::from_name(outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("audit outcome {outcome:?}")))?,
        status: r.get::<Option<i64>>(8)?.and_then(|s| u16::try_from(s).ok()),
        detail: r.get(9)?,
    })
}

impl Db {
    /// Appends `e` (inside the caller's transaction); returns its row id.
    pub fn record_audit(&self, e: &AuditEntry) -> Result<i64, StoreError> {
        self.conn().query_one(
            "INSERT INTO audit (at, actor, role, peer, action, target, outcome, status, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             RETURNING id",
            args![
                ms_sql(e.at),
                e.actor.as_deref(),
                &e.role,
                e.peer.as_deref(),
                &e.action,
                e.target.as_deref(),
                e.outcome.as_str(),
                e.status.map(i64::from),
                e.detail.as_deref(),
            ],
            |r| r.get(0),
        )
    }

    /// One page of the audit log, newest first (by time, then row), after `after`.
    pub fn audit_page(
        &self,
        q: &AuditQuery,
        after: Option<&TimeKey>,
        limit: usize,
    ) -> Result<Paged<AuditEntry, TimeKey>, StoreError> {
        // The casts type the placeholders for PostgreSQL, which meets `IS NULL` first.
        const WHERE: &str = "(CAST(?1 AS BIGINT) IS NULL OR at >= ?1)
               AND (CAST(?2 AS BIGINT) IS NULL OR at < ?2)
               AND (CAST(?3 AS TEXT) IS NULL OR actor = ?3)
               AND (CAST(?4 AS TEXT) IS NULL OR action = ?4)
               AND (CAST(?5 AS TEXT) IS NULL OR outcome = ?5)";
        let (from, to) = match q.window {
            Some((f, t)) => (Some(ms_sql(f)), Some(ms_sql(t))),
            None => (None, None),
        };
        let outcome = q.outcome.map(Outcome::as_str);
        let total: i64 = self.conn().query_one(
            &format!("SELECT count(*) FROM audit WHERE {WHERE}"),
            args![from, to, q.actor.as_deref(), q.action.as_deref(), outcome],
            |r| r.get(0),
        )?;
        let sql = format!(
            "SELECT {COLUMNS} FROM audit WHERE {WHERE}
               AND (CAST(?6 AS BIGINT) IS NULL OR (at, id) < (?6, ?7))
             ORDER BY at DESC, id DESC LIMIT ?8"
        );
        let items = self.conn().query(
            &sql,
            args![
                from,
                to,
                q.actor.as_deref(),
                q.action.as_deref(),
                outcome,
                after.map(|k| ms_sql(k.at)),
                after.map(|k| k.id),
                i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX),
            ],
            |r| {
                let e = entry(r)?;
                Ok((TimeKey { at: e.at, id: e.id }, e))
            },
        )?;
        Ok(Paged::from_rows(items, limit, u64_of(total)))
    }

    /// Deletes the entries older than `before`; returns how many.
    pub fn prune_audit(&self, before: UnixMillis) -> Result<usize, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM audit WHERE at < ?1", args![ms_sql(before)])?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ms;
    use crate::store::engines::each_engine;

    fn entry_at(at: UnixMillis, actor: Option<&str>, action: &str, outcome: Outcome) -> AuditEntry {
        AuditEntry {
            id: 0,
            at,
            actor: actor.map(str::to_owned),
            role: if actor.is_some() {
                "operator"
            } else {
                "anonymous"
            }
            .into(),
            peer: Some("127.0.0.1".into()),
            action: action.into(),
            target: Some("a1".into()),
            outcome,
            status: Some(if outcome == Outcome::Success {
                200
            } else {
                401
            }),
            detail: Some(r#"{"request":{"comment":"on it"}}"#.into()),
        }
    }

    #[test]
    fn entries_are_listed_newest_first_filtered_paged_and_pruned() {
        each_engine(|db| {
            let mut ids = Vec::new();
            for (i, (actor, action, outcome)) in [
                (Some("desk"), "alert.ack", Outcome::Success),
                (None, "alert.ack", Outcome::Refused),
                (Some("desk"), "silence.add", Outcome::Success),
                (Some("night"), "silence.end", Outcome::Success),
                (Some("desk"), "config.reload", Outcome::Failed),
            ]
            .into_iter()
            .enumerate()
            {
                let e = entry_at(
                    UnixMillis::from_millis(1_000) + ms(i as u64 * 10),
                    actor,
                    action,
                    outcome,
                );
                ids.push(db.record_audit(&e).expect("insert"));
            }
            let all = db
                .audit_page(&AuditQuery::default(), None, 100)
                .expect("page");
            assert_eq!(all.total, 5);
            assert_eq!(
                all.items.iter().map(|e| e.id).collect::<Vec<_>>(),
                ids.iter().rev().copied().collect::<Vec<_>>()
            );
            let first = &all.items[4];
            assert_eq!(
                first,
                &AuditEntry {
                    id: ids[0],
                    ..entry_at(
                        UnixMillis::from_millis(1_000),
                        Some("desk"),
                        "alert.ack",
                        Outcome::Success
                    )
                }
            );

            let desk = AuditQuery {
                actor: Some("desk".into()),
                ..AuditQuery::default()
            };
            let p1 = db.audit_page(&desk, None, 2).expect("page 1");
            assert_eq!(p1.total, 3);
            assert_eq!(p1.items.len(), 2);
            let p2 = db.audit_page(&desk, p1.next.as_ref(), 2).expect("page 2");
            assert_eq!(p2.items.len(), 1);
            assert!(p2.next.is_none());
            assert_eq!(p2.items[0].id, ids[0]);

            let q = AuditQuery {
                action: Some("alert.ack".into()),
                outcome: Some(Outcome::Refused),
                ..AuditQuery::default()
            };
            let refused = db.audit_page(&q, None, 10).expect("refused");
            assert_eq!(refused.items.len(), 1);
            assert_eq!(refused.items[0].actor, None);
            let q = AuditQuery {
                window: Some((
                    UnixMillis::from_millis(1_010),
                    UnixMillis::from_millis(1_030),
                )),
                ..AuditQuery::default()
            };
            assert_eq!(db.audit_page(&q, None, 10).expect("window").total, 2);

            assert_eq!(
                db.prune_audit(UnixMillis::from_millis(1_020))
                    .expect("prune"),
                2
            );
            let left = db
                .audit_page(&AuditQuery::default(), None, 100)
                .expect("page");
            assert_eq!(left.total, 3);
            assert!(
                left.items
                    .iter()
                    .all(|e| e.at >= UnixMillis::from_millis(1_020))
            );
        });
    }
}
