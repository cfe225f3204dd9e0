//! Alerts and their acknowledgements, silences, and the notification log.

use alarmnet_protocol::{AlertStatus, Name, NodeId, RegionId, Severity, SiteId};
use serde::Serialize;

use super::StoreError;
use super::days::Whose;
use super::db::{Db, i64_of_usize, id, ms_sql, opt_id, parse, status, status_str, ts_of, u64_of};
use super::lists::{Conditions, Paged, TimeKey, limit_plus_one, slots, text, ts_int};
use super::sql::{Row, Value, args};
use crate::model::{Ack, Alert, AlertId, RuleKind, Silence, SilenceId, Subject, UnixMillis};

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
    /// The notice (outbox entry) this attempt delivers, when it has one.
    pub notice: Option<i64>,
    /// This attempt ends the notice's delivery through this output: it succeeded, or it
    /// was the last one.
    pub done: bool,
}

/// A notification stored before it is sent (the outbox), to be sent by whichever
/// collector is active if no output attempt ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotice {
    pub id: i64,
    /// The alert as notified.
    pub alert: Alert,
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

const ALERT_COLUMNS: &str = "id, rule, severity, status, region, site, node, kind, \
    started_at, ended_at, summary, notified, ack_by, ack_at, ack_comment, args";

/// An alert from the sixteen [`ALERT_COLUMNS`].
fn alert(r: &Row<'_>) -> Result<Alert, StoreError> {
    let alert_id: String = r.get(0)?;
    let ack = match (r.get::<Option<String>>(12)?, r.get::<Option<i64>>(13)?) {
        (Some(by), Some(at)) => Some(Ack {
            by,
            at: ts_of(at),
            comment: r.get(14)?,
        }),
        _ => None,
    };
    let subject = Subject::from_labels(
        opt_id("region", r.get(4)?, RegionId::new)?,
        opt_id("site", r.get(5)?, SiteId::new)?,
        opt_id("node", r.get(6)?, NodeId::new)?,
    )
    .ok_or_else(|| StoreError::Corrupt(format!("subject of alert {alert_id}")))?;
    Ok(Alert {
        id: id("alert id", alert_id, AlertId::try_from)?,
        rule: id("rule", r.get(1)?, |s| s.parse::<RuleKind>())?,
        severity: parse("severity", r.str(2)?)?,
        status: status(r.str(3)?)?,
        subject,
        kind: opt_id("kind", r.get(7)?, Name::new)?,
        started_at: ts_of(r.get(8)?),
        ended_at: r.get::<Option<i64>>(9)?.map(ts_of),
        summary: r.get(10)?,
        // Written by this code from a `Tags`; an unreadable value only loses the wording.
        args: r
            .get::<Option<String>>(15)?
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default(),
        ack,
        notified: r.get(11)?,
    })
}

const SILENCE_COLUMNS: &str =
    "id, region, site, node, kind, starts_at, ends_at, created_by, comment";

/// A silence from the nine [`SILENCE_COLUMNS`].
fn silence(r: &Row<'_>) -> Result<Silence, StoreError> {
    Ok(Silence {
        id: id("silence id", r.get(0)?, SilenceId::try_from)?,
        region: opt_id("region", r.get(1)?, RegionId::new)?,
        site: opt_id("site", r.get(2)?, SiteId::new)?,
        node: opt_id("node", r.get(3)?, NodeId::new)?,
        kind: opt_id("kind", r.get(4)?, Name::new)?,
        starts_at: ts_of(r.get(5)?),
        ends_at: ts_of(r.get(6)?),
        created_by: r.get(7)?,
        comment: r.get(8)?,
    })
}

impl Db {
    /// Inserts or updates one firing of an alert (keyed by `id` and `started_at`).
    pub fn upsert_alert(&self, a: &Alert) -> Result<(), StoreError> {
        let args_json =
            (!a.args.is_empty()).then(|| serde_json::to_string(&a.args).unwrap_or_default());
        self.conn().execute(
            "INSERT INTO alerts (id, rule, severity, status, region, site, node, kind,
                started_at, ended_at, summary, notified, ack_by, ack_at, ack_comment, args)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (id, started_at) DO UPDATE SET severity = ?3, status = ?4,
                ended_at = ?10, summary = ?11, notified = ?12, ack_by = ?13, ack_at = ?14,
                ack_comment = ?15, args = ?16",
            args![
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
                &a.summary,
                a.notified,
                a.ack.as_ref().map(|k| k.by.as_str()),
                a.ack.as_ref().map(|k| ms_sql(k.at)),
                a.ack.as_ref().and_then(|k| k.comment.as_deref()),
                args_json,
            ],
        )?;
        Ok(())
    }

    /// Acknowledges the latest firing of alert `id`; keeps the ack in the acks history.
    /// Returns the updated alert, or `None` if there is no such alert.
    pub fn ack_alert(&self, alert_id: AlertId, ack: &Ack) -> Result<Option<Alert>, StoreError> {
        let Some(mut alert) = self.latest_alert(alert_id)? else {
            return Ok(None);
        };
        self.conn().execute(
            "INSERT INTO acks (alert_id, started_at, by, at, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
            args![
                alert_id,
                ms_sql(alert.started_at),
                &ack.by,
                ms_sql(ack.at),
                ack.comment.as_ref()
            ],
        )?;
        alert.ack = Some(ack.clone());
        self.upsert_alert(&alert)?;
        Ok(Some(alert))
    }

    /// The latest firing (by start) of alert `id`.
    pub fn latest_alert(&self, alert_id: AlertId) -> Result<Option<Alert>, StoreError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1 ORDER BY started_at DESC LIMIT 1"
        );
        self.conn().query_opt(&sql, args![alert_id], alert)
    }

    /// Alerts with `status` (all when `None`), newest first, at most `limit`.
    pub fn alerts(
        &self,
        status: Option<AlertStatus>,
        limit: usize,
    ) -> Result<Vec<Alert>, StoreError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE (CAST(?1 AS TEXT) IS NULL OR status = ?1)
             ORDER BY started_at DESC, row_id DESC LIMIT ?2"
        );
        self.conn().query(
            &sql,
            args![status.map(status_str), i64_of_usize(limit)],
            alert,
        )
    }

    /// Inserts or replaces a silence.
    pub fn upsert_silence(&self, s: &Silence) -> Result<(), StoreError> {
        let old = self.silence_by_id(s.id)?;
        self.conn().execute(
            "INSERT INTO silences (id, region, site, node, kind, starts_at, ends_at, created_by,
                comment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET region = excluded.region, site = excluded.site,
                node = excluded.node, kind = excluded.kind, starts_at = excluded.starts_at,
                ends_at = excluded.ends_at, created_by = excluded.created_by,
                comment = excluded.comment",
            args![
                s.id,
                s.region.as_ref().map(|x| x.as_str()),
                s.site.as_ref().map(|x| x.as_str()),
                s.node.as_ref().map(|x| x.as_str()),
                s.kind.as_ref().map(|x| x.as_str()),
                ms_sql(s.starts_at),
                ms_sql(s.ends_at),
                &s.created_by,
                s.comment.as_ref(),
            ],
        )?;
        // Summarized days it covered, or covers now, count maintenance otherwise.
        for covered in old.iter().chain([s]) {
            self.invalidate_summaries(
                Whose::Matching(covered),
                covered.starts_at,
                Some(covered.ends_at),
            )?;
        }
        Ok(())
    }

    fn silence_by_id(&self, silence_id: SilenceId) -> Result<Option<Silence>, StoreError> {
        let sql = format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1");
        self.conn().query_opt(&sql, args![silence_id], silence)
    }

    /// Silences not yet ended at `now` (all when `None`), by start.
    pub fn silences(&self, now: Option<UnixMillis>) -> Result<Vec<Silence>, StoreError> {
        let sql = format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE (CAST(?1 AS BIGINT) IS NULL OR ends_at > ?1)
             ORDER BY starts_at, id"
        );
        self.conn().query(&sql, args![now.map(ms_sql)], silence)
    }

    /// Ends a silence at `at` (kept in history). Returns whether it existed.
    pub fn end_silence(&self, silence_id: SilenceId, at: UnixMillis) -> Result<bool, StoreError> {
        let Some(old) = self.silence_by_id(silence_id)? else {
            return Ok(false);
        };
        let n = self.conn().execute(
            "UPDATE silences SET ends_at = least(ends_at, greatest(starts_at, ?2)) WHERE id = ?1",
            args![silence_id, ms_sql(at)],
        )?;
        // What it no longer covers (an end in the past reaches into summarized days).
        let end = old.ends_at.min(at.max(old.starts_at));
        self.invalidate_summaries(Whose::Matching(&old), end, Some(old.ends_at))?;
        Ok(n > 0)
    }

    /// Appends one delivery attempt to the notification log.
    pub fn record_notification(&self, n: &NotificationAttempt) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO notification_log (alert_id, alert_started_at, status, output,
                attempt, at, ok, error, notice, done)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            args![
                n.alert_id,
                ms_sql(n.alert_started_at),
                status_str(n.status),
                &n.output,
                n.attempt,
                ms_sql(n.at),
                n.ok,
                n.error.as_ref(),
                n.notice,
                n.done,
            ],
        )?;
        Ok(())
    }

    /// Stores the notification of `alert` in the outbox; returns its id.
    pub fn store_notice(&self, alert: &Alert, at: UnixMillis) -> Result<i64, StoreError> {
        self.conn().query_one(
            "INSERT INTO notices (alert_id, started_at, status, at, alert)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
            args![
                alert.id,
                ms_sql(alert.started_at),
                status_str(alert.status),
                ms_sql(at),
                serde_json::to_string(alert)?,
            ],
            |r| r.get::<i64>(0),
        )
    }

    /// The notices stored since `since` whose delivery through `output` no attempt has
    /// ended (never tried, or still being retried when its collector stopped), oldest
    /// first.
    pub fn unsent_notices(
        &self,
        output: &str,
        since: UnixMillis,
    ) -> Result<Vec<StoredNotice>, StoreError> {
        self.conn().query(
            "SELECT n.id, n.alert FROM notices n
             WHERE n.at >= ?1 AND NOT EXISTS (
                 SELECT 1 FROM notification_log l
                 WHERE l.notice = n.id AND l.output = ?2 AND l.done <> 0)
             ORDER BY n.id",
            args![ms_sql(since), output],
            |r| {
                Ok(StoredNotice {
                    id: r.get(0)?,
                    alert: serde_json::from_str(r.str(1)?)?,
                })
            },
        )
    }

    /// The delivery attempts for alert `id`, oldest first.
    pub fn notifications(&self, alert_id: AlertId) -> Result<Vec<NotificationAttempt>, StoreError> {
        self.conn().query(
            "SELECT alert_id, alert_started_at, status, output, attempt, at, ok, error,
                    notice, done
             FROM notification_log WHERE alert_id = ?1 ORDER BY at, id",
            args![alert_id],
            |r| {
                Ok(NotificationAttempt {
                    alert_id: id("alert id", r.get(0)?, AlertId::try_from)?,
                    alert_started_at: ts_of(r.get(1)?),
                    status: status(r.str(2)?)?,
                    output: r.get(3)?,
                    attempt: r.get(4)?,
                    at: ts_of(r.get(5)?),
                    ok: r.get(6)?,
                    error: r.get(7)?,
                    notice: r.get(8)?,
                    done: r.get(9)?,
                })
            },
        )
    }

    /// Firing alerts per severity (only severities with some).
    pub fn firing_counts(&self) -> Result<Vec<FiringCount>, StoreError> {
        self.conn().query(
            "SELECT severity, count(*), sum(CASE WHEN ack_by IS NULL THEN 1 ELSE 0 END)
             FROM alerts WHERE status = 'firing' GROUP BY severity",
            &[],
            |r| {
                Ok(FiringCount {
                    severity: parse("severity", r.str(0)?)?,
                    firing: u64_of(r.get(1)?),
                    unacked: u64_of(r.get(2)?),
                })
            },
        )
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
                [ts_int(k.at), Value::Int(k.id)],
            ),
            None => c,
        };
        let sql = format!(
            "SELECT {ALERT_COLUMNS}, row_id FROM alerts{} ORDER BY started_at DESC, row_id DESC
             LIMIT ?",
            page.sql()
        );
        page.push(limit_plus_one(limit));
        let rows = self.conn().query(&sql, page.values(), |r| {
            let alert = alert(r)?;
            let key = TimeKey {
                at: alert.started_at,
                id: r.get(16)?,
            };
            Ok((key, alert))
        })?;
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
            "SELECT {SILENCE_COLUMNS} FROM silences{} ORDER BY starts_at DESC, id DESC LIMIT ?",
            page.sql()
        );
        page.push(limit_plus_one(limit));
        let rows = self.conn().query(&sql, page.values(), |r| {
            let s = silence(r)?;
            let key = SilenceKey {
                starts_at: s.starts_at,
                id: s.id,
            };
            Ok((key, s))
        })?;
        Ok(Paged::from_rows(rows, limit, total))
    }
}
