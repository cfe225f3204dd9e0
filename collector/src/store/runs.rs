//! The collector's own run log: when it ran and when it was blind (broker connection
//! down). Outside those runs, and inside blind intervals, nobody watched the nodes: uptime
//! counts that time as `blind` (coverage), never as up or down.
//!
//! A run belongs to a region shard (`[store] shard`; `''` for a collector of the whole
//! network) and records the regions it watched (`NULL`: all of them). The active and
//! standby collectors of one shard share its run log: a start closes that shard's crashed
//! runs only, and a takeover reads that shard's last sign of life. A node's unwatched time
//! comes from the runs that watched its region ([`Unwatched`]).
//!
//! Design: a run stores the regions it watched rather than only its shard's name, so a
//! shard whose regions change between runs (config edit, restart) is judged by what each
//! run really watched, with no separate history of the shards' regions. A node is judged
//! by its current region: the store keeps no history of a node's regions; a move changes
//! its past unwatched time, and so invalidates its daily summaries (see `nodes.rs`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use alarmnet_protocol::RegionId;

use super::StoreError;
use super::config::ShardScope;
use super::days::Whose;
use super::db::{Db, id, ms_sql, ts_of};
use super::sql::args;
use crate::model::UnixMillis;
use crate::uptime::{Unwatched, Window};

/// A run without an end whose last sign of life (written about every second) is older
/// than this is not running: it crashed, or its collector is stalled or cut off from the
/// store, and it watched until that sign of life. Well under the hour after which a day
/// is summarized (`days::SETTLE`), so a summary never depends on whether a run that fell
/// silent before the day's end is still running (it cannot be, by then).
pub const RUN_STALE: Duration = Duration::from_secs(10);

/// A run's shard in the run log (`''`: the whole network).
fn shard_key(scope: Option<&ShardScope>) -> &str {
    scope.map_or("", |s| s.name.as_str())
}

/// One run as [`Db::unwatched`] reads it.
struct RunSpan {
    id: i64,
    start: UnixMillis,
    /// Until when it watched.
    end: UnixMillis,
    /// The regions it watched (`None`: every region).
    regions: Option<BTreeSet<RegionId>>,
}

impl RunSpan {
    fn watches(&self, region: Option<&RegionId>) -> bool {
        match (&self.regions, region) {
            (None, _) => true,
            (Some(regions), Some(region)) => regions.contains(region),
            (Some(_), None) => false,
        }
    }
}

impl Db {
    /// Starts a run of `scope` (a region shard, or `None`: the whole network) at `at`;
    /// returns its id. A previous run of the same shard that crashed (no end) is closed at
    /// its last sign of life, with any blind interval it left open; other shards' runs are
    /// theirs.
    pub fn start_run(&self, at: UnixMillis, scope: Option<&ShardScope>) -> Result<i64, StoreError> {
        let conn = self.conn();
        let shard = shard_key(scope);
        // Summaries were made while a run that crashed looked like the running one (watching
        // up to now), or before any run log (nothing unwatched): from its last sign of life
        // (from the start) nobody watched. From `at` on, this run watches (a takeover's is
        // dated back to when the standby's link came up). Every node's summaries go: a
        // shard's regions are a handful of the network's, and a start is rare.
        let (runs, crashed): (i64, Option<i64>) = conn.query_one(
            "SELECT count(*), min(alive_at) FILTER (WHERE ended_at IS NULL AND shard = ?1)
             FROM collector_runs",
            args![shard],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let unwatched_from = match (runs, crashed) {
            (0, _) => UnixMillis::EPOCH,
            (_, crashed) => crashed.map_or(at, |c| ts_of(c).min(at)),
        };
        self.invalidate_summaries(Whose::All, unwatched_from, None)?;
        conn.execute(
            "UPDATE blind_intervals SET end_at = (SELECT alive_at FROM collector_runs r
                 WHERE r.id = blind_intervals.run)
             WHERE end_at IS NULL
               AND run IN (SELECT id FROM collector_runs
                           WHERE ended_at IS NULL AND shard = ?1)",
            args![shard],
        )?;
        conn.execute(
            "UPDATE collector_runs SET ended_at = alive_at
             WHERE ended_at IS NULL AND shard = ?1",
            args![shard],
        )?;
        let regions = scope.map(|s| {
            s.regions
                .iter()
                .map(RegionId::as_str)
                .collect::<Vec<_>>()
                .join(",")
        });
        conn.query_one(
            "INSERT INTO collector_runs (started_at, alive_at, shard, regions)
             VALUES (?1, ?1, ?2, ?3) RETURNING id",
            args![ms_sql(at), shard, regions],
            |r| r.get(0),
        )
    }

    /// The last sign of life of any run of `scope`'s shard (the latest `alive_at`): a
    /// collector taking over knows the one before it was alive until then.
    pub fn last_alive(&self, scope: Option<&ShardScope>) -> Result<Option<UnixMillis>, StoreError> {
        let v = self.conn().query_one(
            "SELECT max(alive_at) FROM collector_runs WHERE shard = ?1",
            args![shard_key(scope)],
            |r| r.get::<Option<i64>>(0),
        )?;
        Ok(v.map(ts_of))
    }

    /// Marks run `run` alive at `at`. A run silent for longer than [`RUN_STALE`] counted as
    /// not running since its last sign of life; alive again, it watched that time after
    /// all, so summaries made meanwhile no longer hold.
    pub fn run_alive(&self, run: i64, at: UnixMillis) -> Result<(), StoreError> {
        let alive = self.conn().query_opt(
            "SELECT alive_at FROM collector_runs WHERE id = ?1",
            args![run],
            |r| r.get::<i64>(0),
        )?;
        if let Some(alive) = alive.map(ts_of)
            && at > alive + RUN_STALE
        {
            self.invalidate_summaries(Whose::All, alive, None)?;
        }
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

    /// The intervals in `[from, to)` when nobody watched, per region: for each region,
    /// before the first run that watched it, between such runs, their blind intervals, and
    /// after the last sign of life of such a run that is not running at `now` (see
    /// [`RUN_STALE`]). A region no run named is watched by the runs of the whole network
    /// only. Sorted, merged.
    pub fn unwatched(
        &self,
        from: UnixMillis,
        to: UnixMillis,
        now: UnixMillis,
    ) -> Result<Unwatched, StoreError> {
        let conn = self.conn();
        let runs = conn.query(
            "SELECT id, started_at, alive_at, ended_at, regions FROM collector_runs
             ORDER BY started_at",
            args![],
            |r| {
                let (alive, ended) = (ts_of(r.get::<i64>(2)?), r.get::<Option<i64>>(3)?);
                // The running run (no end, alive lately) watches up to now.
                let end = if ended.is_none() && now <= alive + RUN_STALE {
                    to
                } else {
                    alive
                };
                let regions = r
                    .get::<Option<String>>(4)?
                    .map(|list| {
                        list.split(',')
                            .filter(|r| !r.is_empty())
                            .map(|r| id("run region", r.to_owned(), RegionId::new))
                            .collect::<Result<BTreeSet<_>, _>>()
                    })
                    .transpose()?;
                Ok(RunSpan {
                    id: r.get(0)?,
                    start: ts_of(r.get(1)?),
                    end,
                    regions,
                })
            },
        )?;
        // No run log at all (a store written by other means): nothing is known to be
        // unwatched but the blind intervals.
        if runs.is_empty() {
            return Ok(Unwatched::default());
        }
        let mut blind: HashMap<i64, Vec<(UnixMillis, UnixMillis)>> = HashMap::new();
        conn.each(
            "SELECT run, start_at, end_at FROM blind_intervals
             WHERE start_at < ?2 AND (end_at IS NULL OR end_at > ?1)",
            args![ms_sql(from), ms_sql(to)],
            |r| {
                let (run, start, end) = (r.get(0)?, r.get::<i64>(1)?, r.get::<Option<i64>>(2)?);
                blind
                    .entry(run)
                    .or_default()
                    .push((ts_of(start).max(from), end.map_or(to, ts_of).min(to)));
                Ok(())
            },
        )?;
        let gaps = |region: Option<&RegionId>| {
            let mut gaps = Vec::new();
            let mut cursor = from;
            for run in runs.iter().filter(|run| run.watches(region)) {
                if run.start > cursor {
                    gaps.push((cursor, run.start.min(to)));
                }
                cursor = cursor.max(run.end);
                gaps.extend(blind.get(&run.id).into_iter().flatten().copied());
            }
            if cursor < to {
                gaps.push((cursor, to));
            }
            merged(gaps)
        };
        let named: BTreeSet<&RegionId> = runs
            .iter()
            .flat_map(|r| r.regions.iter().flatten())
            .collect();
        let mut unwatched = Unwatched::everywhere(gaps(None));
        for region in named {
            unwatched = unwatched.with_region(region.clone(), gaps(Some(region)));
        }
        Ok(unwatched)
    }
}

/// Sorted, merged windows of the non-empty `gaps`.
fn merged(mut gaps: Vec<(UnixMillis, UnixMillis)>) -> Vec<Window> {
    gaps.retain(|(s, e)| s < e);
    gaps.sort_unstable();
    let mut merged: Vec<(UnixMillis, UnixMillis)> = Vec::new();
    for (s, e) in gaps {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
        .into_iter()
        .filter_map(|(s, e)| Window::new(s, e).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engines::each_engine;

    fn at(ms: u64) -> UnixMillis {
        UnixMillis::from_millis(ms)
    }

    fn secs(s: u64) -> UnixMillis {
        UnixMillis::from_millis(s * 1_000)
    }

    fn region(name: &str) -> RegionId {
        RegionId::new(name).expect("region")
    }

    fn shard(name: &str, regions: &[&str]) -> ShardScope {
        ShardScope {
            name: name.into(),
            regions: regions.iter().map(|r| region(r)).collect(),
        }
    }

    /// `region`'s unwatched intervals, in seconds.
    fn gaps(u: &Unwatched, name: &str) -> Vec<(u64, u64)> {
        u.of(&region(name))
            .iter()
            .map(|w| (w.from().as_millis() / 1_000, w.to().as_millis() / 1_000))
            .collect()
    }

    #[test]
    fn gaps_between_runs_crashes_and_blind_intervals_are_unwatched() {
        each_engine(|db| {
            let r1 = db.start_run(at(1_000), None).expect("run");
            db.run_alive(r1, at(1_500)).expect("alive");
            db.blind_edges(r1, &[(true, at(1_200)), (false, at(1_300))])
                .expect("blind");
            db.run_alive(r1, at(2_000)).expect("alive");
            // Crash: no end; the next run closes it at its last sign of life (2000).
            let r2 = db.start_run(at(3_000), None).expect("run");
            db.blind_edges(r2, &[(true, at(3_500))]).expect("blind");
            db.end_run(r2, at(4_000)).expect("end");
            let r3 = db.start_run(at(5_000), None).expect("run");
            assert!(r3 > r2);
            let windows = |pairs: &[(u64, u64)]| -> Vec<Window> {
                pairs
                    .iter()
                    .map(|&(a, b)| Window::new(at(a), at(b)).expect("window"))
                    .collect()
            };
            let all = db.unwatched(at(0), at(6_000), at(6_000)).expect("q");
            assert_eq!(
                all,
                Unwatched::everywhere(windows(&[
                    (0, 1_000),
                    (1_200, 1_300),
                    (2_000, 3_000),
                    (3_500, 5_000)
                ]))
            );
            assert_eq!(
                db.unwatched(at(1_250), at(1_260), at(6_000)).expect("q"),
                Unwatched::everywhere(windows(&[(1_250, 1_260)]))
            );
        });
    }

    #[test]
    fn without_a_run_log_nothing_is_unwatched() {
        each_engine(|db| {
            let u = db.unwatched(at(0), at(6_000), at(6_000)).expect("q");
            assert_eq!(u, Unwatched::default());
            assert!(gaps(&u, "lanzhou").is_empty());
        });
    }

    /// Two region shards on one store: each start closes only its own shard's crashed
    /// runs, each shard's downtime and blindness is its own regions' unwatched time only,
    /// and a run silent for longer than `RUN_STALE` watched until its last sign of life.
    #[test]
    fn each_shard_watches_its_own_regions() {
        each_engine(|db| {
            let (east, west) = (shard("east", &["lanzhou"]), shard("west", &["jiuquan"]));
            let e1 = db.start_run(secs(0), Some(&east)).expect("run");
            let w1 = db.start_run(secs(0), Some(&west)).expect("run");
            db.run_alive(e1, secs(100)).expect("alive");
            db.run_alive(w1, secs(240)).expect("alive");
            // East is killed after 100 s; while it is down, only its region is unwatched.
            let u = db.unwatched(secs(0), secs(240), secs(240)).expect("q");
            assert_eq!(gaps(&u, "lanzhou"), [(100, 240)]);
            assert_eq!(gaps(&u, "jiuquan"), []);
            // No collector ever watched a region no shard names.
            assert_eq!(gaps(&u, "wuwei"), [(0, 240)]);
            assert_eq!(db.last_alive(Some(&east)).expect("q"), Some(secs(100)));
            assert_eq!(db.last_alive(Some(&west)).expect("q"), Some(secs(240)));
            assert_eq!(db.last_alive(None).expect("q"), None);

            // East starts again: its crashed run ends at its last sign of life; west's
            // running run goes on watching up to now.
            let e2 = db.start_run(secs(250), Some(&east)).expect("run");
            db.run_alive(w1, secs(255)).expect("alive");
            db.run_alive(e2, secs(255)).expect("alive");
            let u = db.unwatched(secs(0), secs(260), secs(260)).expect("q");
            assert_eq!(gaps(&u, "lanzhou"), [(100, 250)]);
            assert_eq!(gaps(&u, "jiuquan"), []);

            // West goes blind: its region only.
            db.blind_edges(w1, &[(true, secs(256)), (false, secs(258))])
                .expect("blind");
            let u = db.unwatched(secs(0), secs(260), secs(260)).expect("q");
            assert_eq!(gaps(&u, "lanzhou"), [(100, 250)]);
            assert_eq!(gaps(&u, "jiuquan"), [(256, 258)]);

            // A collector of the whole network starting closes no shard's run, and watches
            // every region from its start.
            let n = db.start_run(secs(259), None).expect("run");
            db.run_alive(n, secs(300)).expect("alive");
            db.run_alive(w1, secs(300)).expect("alive");
            db.run_alive(e2, secs(300)).expect("alive");
            let u = db.unwatched(secs(0), secs(300), secs(300)).expect("q");
            assert_eq!(gaps(&u, "lanzhou"), [(100, 250)]);
            assert_eq!(gaps(&u, "jiuquan"), [(256, 258)]);
            assert_eq!(gaps(&u, "wuwei"), [(0, 259)]);
        });
    }
}
