//! The collector's own run log: when it ran and when it was blind (broker connection
//! down). Outside those runs, and inside blind intervals, nobody watched the nodes: uptime
//! counts that time as `blind` (coverage), never as up or down.

use super::StoreError;
use super::days::Whose;
use super::db::{Db, ms_sql, ts_of};
use super::sql::args;
use crate::model::UnixMillis;

impl Db {
    /// Starts a run at `at`; returns its id. A previous run that crashed (no end) is closed
    /// at its last sign of life, with any blind interval it left open.
    pub fn start_run(&self, at: UnixMillis) -> Result<i64, StoreError> {
        let conn = self.conn();
        // Summaries were made while a run that crashed looked like the running one (watching
        // up to now), or before any run log (nothing unwatched): from its last sign of life
        // (from the start) nobody watched. `None`: runs before, none crashed.
        let (runs, crashed): (i64, Option<i64>) = conn.query_one(
            "SELECT count(*), min(alive_at) FILTER (WHERE ended_at IS NULL)
             FROM collector_runs",
            args![],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let unwatched_from = match (runs, crashed) {
            (0, _) => Some(UnixMillis::EPOCH),
            (_, crashed) => crashed.map(ts_of),
        };
        if let Some(from) = unwatched_from {
            self.invalidate_summaries(Whose::All, from, None)?;
        }
        conn.execute(
            "UPDATE blind_intervals SET end_at = (SELECT alive_at FROM collector_runs r
                 WHERE r.id = blind_intervals.run)
             WHERE end_at IS NULL",
            args![],
        )?;
        conn.execute(
            "UPDATE collector_runs SET ended_at = alive_at WHERE ended_at IS NULL",
            args![],
        )?;
        conn.query_one(
            "INSERT INTO collector_runs (started_at, alive_at) VALUES (?1, ?1) RETURNING id",
            args![ms_sql(at)],
            |r| r.get(0),
        )
    }

    /// Marks run `run` alive at `at`.
    /// The last sign of life of any run (the latest `alive_at`): a collector taking over
    /// knows the one before it was alive until then.
    pub fn last_alive(&self) -> Result<Option<UnixMillis>, StoreError> {
        let v =
            self.conn()
                .query_one("SELECT max(alive_at) FROM collector_runs", args![], |r| {
                    r.get::<Option<i64>>(0)
                })?;
        Ok(v.map(ts_of))
    }

    pub fn run_alive(&self, run: i64, at: UnixMillis) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE collector_runs SET alive_at = greatest(alive_at, ?2) WHERE id = ?1",
            args![run, ms_sql(at)],
        )?;
        Ok(())
    }

    /// Ends run `run` cleanly at `at`, closing an open blind interval.
    pub fn end_run(&self, run: i64, at: UnixMillis) -> Result<(), StoreError> {
        self.blind_edges(run, &[(false, at)])?;
        // Nobody watches after it (summaries took the running run as watching).
        self.invalidate_summaries(Whose::All, at, None)?;
        self.conn().execute(
            "UPDATE collector_runs SET alive_at = greatest(alive_at, ?2), ended_at = ?2
             WHERE id = ?1",
            args![run, ms_sql(at)],
        )?;
        Ok(())
    }

    /// Records blind mode starting (`true`) and ending (`false`) during run `run`.
    pub fn blind_edges(&self, run: i64, edges: &[(bool, UnixMillis)]) -> Result<(), StoreError> {
        for &(blind, at) in edges {
            // An edge held back by a failing store, written once it works again.
            self.invalidate_summaries(Whose::All, at, None)?;
            if blind {
                self.conn().execute(
                    "INSERT INTO blind_intervals (run, start_at) VALUES (?1, ?2)",
                    args![run, ms_sql(at)],
                )?;
            } else {
                self.conn().execute(
                    "UPDATE blind_intervals SET end_at = ?2 WHERE run = ?1 AND end_at IS NULL",
                    args![run, ms_sql(at)],
                )?;
            }
        }
        Ok(())
    }

    /// The intervals in `[from, to)` when nobody watched: before the first run, between
    /// runs, blind intervals, and after the last sign of life of a run that is not the
    /// running one. Sorted, merged; `(start, end)`.
    pub fn unwatched(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, UnixMillis)>, StoreError> {
        let conn = self.conn();
        let runs = conn.query(
            "SELECT started_at, alive_at, ended_at FROM collector_runs ORDER BY started_at",
            args![],
            |r| {
                let (start, alive, ended) =
                    (r.get::<i64>(0)?, r.get::<i64>(1)?, r.get::<Option<i64>>(2)?);
                // The running run (no end) watches up to now.
                let end = if ended.is_none() { to } else { ts_of(alive) };
                Ok((ts_of(start), end))
            },
        )?;
        let mut gaps = Vec::new();
        // No run log at all (a store written by other means): nothing is known to be
        // unwatched but the blind intervals.
        let mut cursor = if runs.is_empty() { to } else { from };
        for &(start, end) in &runs {
            if start > cursor {
                gaps.push((cursor, start.min(to)));
            }
            cursor = cursor.max(end);
        }
        if cursor < to {
            gaps.push((cursor, to));
        }
        conn.each(
            "SELECT start_at, end_at FROM blind_intervals
             WHERE start_at < ?2 AND (end_at IS NULL OR end_at > ?1)",
            args![ms_sql(from), ms_sql(to)],
            |r| {
                let (start, end) = (r.get::<i64>(0)?, r.get::<Option<i64>>(1)?);
                gaps.push((ts_of(start).max(from), end.map_or(to, ts_of).min(to)));
                Ok(())
            },
        )?;
        gaps.retain(|(s, e)| s < e);
        gaps.sort_unstable();
        let mut merged: Vec<(UnixMillis, UnixMillis)> = Vec::new();
        for (s, e) in gaps {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engines::each_engine;

    fn at(ms: u64) -> UnixMillis {
        UnixMillis::from_millis(ms)
    }

    #[test]
    fn gaps_between_runs_crashes_and_blind_intervals_are_unwatched() {
        each_engine(|db| {
            let r1 = db.start_run(UnixMillis::from_millis(1_000)).expect("run");
            db.run_alive(r1, UnixMillis::from_millis(1_500))
                .expect("alive");
            db.blind_edges(
                r1,
                &[
                    (true, UnixMillis::from_millis(1_200)),
                    (false, UnixMillis::from_millis(1_300)),
                ],
            )
            .expect("blind");
            db.run_alive(r1, UnixMillis::from_millis(2_000))
                .expect("alive");
            // Crash: no end; the next run closes it at its last sign of life (2000).
            let r2 = db.start_run(UnixMillis::from_millis(3_000)).expect("run");
            db.blind_edges(r2, &[(true, UnixMillis::from_millis(3_500))])
                .expect("blind");
            db.end_run(r2, UnixMillis::from_millis(4_000)).expect("end");
            let r3 = db.start_run(UnixMillis::from_millis(5_000)).expect("run");
            assert!(r3 > r2);
            assert_eq!(
                db.unwatched(at(0), at(6_000)).expect("q"),
                [(0, 1_000), (1_200, 1_300), (2_000, 3_000), (3_500, 5_000)]
                    .map(|(a, b)| (at(a), at(b)))
            );
            assert_eq!(
                db.unwatched(at(1_250), at(1_260)).expect("q"),
                vec![(at(1_250), at(1_260))]
            );
        });
    }

    #[test]
    fn without_a_run_log_nothing_is_unwatched() {
        each_engine(|db| {
            assert!(db.unwatched(at(0), at(6_000)).expect("q").is_empty());
        });
    }
}
