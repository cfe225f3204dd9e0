//! The uptime report from the daily summaries equals the report from the transitions, on
//! random histories (transitions, test receipts, silences, blind intervals, crashed
//! runs), after random late writes into summarized days, over random windows, groupings
//! and filters, on both engines.

use std::sync::Arc;

use alarmnet_protocol::{Birth, Name, NodeId, NodePath, RegionId, SiteId, TestReceipt};
use tokio_util::sync::CancellationToken;

use super::Abandoned;
use super::uptime::shard_report;
use crate::metrics::Metrics;
use crate::model::{Cause, Liveness, Silence, SilenceId, Transition, UnixMillis};
use crate::store::engines::postgres_db;
use crate::store::{Db, NodeQuery, Shard, ShardScope, Store, days};
use crate::uptime::{Filter, GroupBy, PartialReport, Query, UptimeReport, Window, time_zone};

const DAY: u64 = 86_400_000;
const HOUR: u64 = 3_600_000;
/// 2026-10-01T00:00:00+08:00.
const T0: u64 = 1_790_784_000_000;
const NODES: usize = 5;

/// A small deterministic generator (64-bit LCG): every run replays the same cases.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

fn at(ms: u64) -> UnixMillis {
    UnixMillis::from_millis(ms)
}

fn place(rng: &mut Lcg, node: usize) -> (NodePath, &'static str) {
    let region = rng.pick(&["r1", "r2"]);
    let site = rng.pick(&["s1", "s2"]);
    let path = NodePath::new(
        RegionId::new(region).expect("id"),
        SiteId::new(format!("{region}-{site}")).expect("id"),
        NodeId::new(format!("n{node}")).expect("id"),
    );
    (path, rng.pick(&["siren", "display"]))
}

fn birth(p: &NodePath, kind: &str) -> Birth {
    serde_json::from_value(serde_json::json!({
        "v": 1, "boot": "boot0001", "ts": 1, "node": p.node, "site": p.site,
        "region": p.region, "kind": kind, "hb_interval_s": 10
    }))
    .expect("valid birth")
}

fn receipt(rng: &mut Lcg, ts: u64) -> TestReceipt {
    serde_json::from_value(serde_json::json!({
        "v": 1, "boot": "boot0001", "seq": rng.below(1_000_000), "ts": ts, "test": "silent",
        "result": rng.pick(&["pass", "pass", "fail", "error"]), "duration_ms": 100
    }))
    .expect("valid receipt")
}

fn node_id(i: usize) -> NodeId {
    NodeId::new(format!("n{i}")).expect("id")
}

fn transition(rng: &mut Lcg, node: usize, at_ms: u64) -> Transition {
    let states = [
        Liveness::Online,
        Liveness::Late,
        Liveness::Offline,
        Liveness::Stopped,
        Liveness::Maintenance,
        Liveness::Unknown,
    ];
    // A node's history starts from `unknown` (the state of a node never judged); the
    // engine reads only the first transition's `from`.
    Transition {
        node: node_id(node),
        from: Liveness::Unknown,
        to: rng.pick(&states),
        at: at(at_ms),
        cause: rng.pick(&[
            Cause::Heartbeat,
            Cause::Will,
            Cause::Timeout,
            Cause::Shutdown,
        ]),
    }
}

fn silence(rng: &mut Lcg, id: u64, from: u64, span: u64) -> Silence {
    let starts_at = from + rng.below(span);
    Silence {
        id: SilenceId::new(id),
        region: rng
            .chance(40)
            .then(|| RegionId::new(rng.pick(&["r1", "r2"])).expect("id")),
        site: None,
        node: rng
            .chance(30)
            .then(|| node_id(rng.below(NODES as u64) as usize)),
        kind: rng
            .chance(30)
            .then(|| Name::new(rng.pick(&["siren", "display"])).expect("kind")),
        starts_at: at(starts_at),
        ends_at: at(starts_at + 1 + rng.below(DAY + DAY / 2)),
        created_by: "test".to_owned(),
        comment: None,
    }
}

/// Region shard `name` of `region`.
fn shard_of(name: &str, region: &str) -> ShardScope {
    ShardScope {
        name: name.to_owned(),
        regions: [RegionId::new(region).expect("id")].into(),
    }
}

/// The run log [`history`] wrote.
struct Runs {
    /// The run that watched from the start.
    run: i64,
    /// Its shard (`None`: the whole network).
    scope: Option<ShardScope>,
    /// When sharded: the other shard's run that was killed (and maybe followed by another).
    killed: Option<i64>,
}

/// A random history of [`NODES`] nodes from a day before `T0` to five days after it; its
/// run log is one collector's of the whole network, or (half the cases) two region
/// shards', `r1`'s and `r2`'s, where `r2`'s was killed (and maybe started again).
fn history(db: &Db, rng: &mut Lcg) -> Runs {
    let scope = rng.chance(50).then(|| shard_of("east", "r1"));
    let run = db.start_run(at(T0 - 2 * DAY), scope.as_ref()).expect("run");
    let mut killed = None;
    if scope.is_some() {
        let west = shard_of("west", "r2");
        let w1 = db
            .start_run(at(T0 - DAY + rng.below(2 * DAY)), Some(&west))
            .expect("run");
        db.run_alive(w1, at(T0 + DAY + rng.below(DAY)))
            .expect("alive");
        killed = Some(w1);
        if rng.chance(50) {
            let w2 = db
                .start_run(at(T0 + 2 * DAY + rng.below(2 * DAY)), Some(&west))
                .expect("run");
            let from = T0 + 2 * DAY + rng.below(3 * DAY);
            db.blind_edges(w2, &[(true, at(from)), (false, at(from + rng.below(DAY)))])
                .expect("blind");
            db.run_alive(w2, at(T0 + 5 * DAY + 2 * HOUR))
                .expect("alive");
        }
    }
    for i in 0..NODES {
        let (path, kind) = place(rng, i);
        db.upsert_birth(&path, &birth(&path, kind), at(T0 - DAY))
            .expect("birth");
        let mut t = T0 - DAY + rng.below(DAY);
        let mut steps = Vec::new();
        for _ in 0..rng.below(25) {
            steps.push(transition(rng, i, t));
            // Equal times now and then.
            t += rng.pick(&[0, 1, HOUR, 7 * HOUR, DAY / 2, DAY + 5]);
            if t >= T0 + 5 * DAY {
                break;
            }
        }
        db.record_transitions(&steps).expect("transitions");
        for _ in 0..rng.below(8) {
            let ts = T0 - DAY + rng.below(6 * DAY);
            db.record_test(&path.node, &receipt(rng, ts), at(ts))
                .expect("test");
        }
    }
    for id in 0..rng.below(4) {
        db.upsert_silence(&silence(rng, id, T0 - DAY, 6 * DAY))
            .expect("silence");
    }
    for _ in 0..rng.below(3) {
        let from = T0 - DAY + rng.below(6 * DAY);
        db.blind_edges(run, &[(true, at(from)), (false, at(from + rng.below(DAY)))])
            .expect("blind");
    }
    db.run_alive(run, at(T0 + 5 * DAY + 2 * HOUR))
        .expect("alive");
    Runs { run, scope, killed }
}

/// Writes into days already summarized: what must invalidate their summaries.
fn late_writes(db: &Db, rng: &mut Lcg, runs: &Runs) {
    let (run, scope) = (runs.run, runs.scope.as_ref());
    for _ in 0..rng.below(4) {
        let past = T0 - DAY + rng.below(6 * DAY);
        match rng.below(10) {
            0 => {
                let node = rng.below(NODES as u64) as usize;
                db.record_transitions(&[transition(rng, node, past)])
                    .expect("late transition");
            }
            1 => {
                let node = node_id(rng.below(NODES as u64) as usize);
                db.record_test(&node, &receipt(rng, past), at(T0 + 5 * DAY))
                    .expect("late test");
            }
            2 => {
                let id = 10 + rng.below(5);
                let s = silence(rng, id, T0 - DAY, 6 * DAY);
                db.upsert_silence(&s).expect("silence");
            }
            3 => {
                let id = SilenceId::new(rng.below(4));
                db.end_silence(id, at(past)).expect("end silence");
            }
            4 => {
                // A move (or a new kind): silences match otherwise.
                let node = rng.below(NODES as u64) as usize;
                let (path, kind) = place(rng, node);
                db.upsert_birth(&path, &birth(&path, kind), at(T0 + 5 * DAY))
                    .expect("move");
            }
            5 => {
                // A node registered after the days were summarized.
                let node = NODES + rng.below(3) as usize;
                let (path, kind) = place(rng, node);
                db.upsert_birth(&path, &birth(&path, kind), at(T0 + 5 * DAY))
                    .expect("new node");
            }
            6 => {
                db.blind_edges(run, &[(true, at(past)), (false, at(past + HOUR))])
                    .expect("late blind interval");
            }
            7 => {
                // A move into the other region (the other shard's, when sharded): its
                // past counts by the runs that watched its new region.
                let node = rng.below(NODES as u64) as usize;
                let was = db.regions_of(&[node_id(node)]).expect("region");
                let (mut path, kind) = place(rng, node);
                if was.first().is_some_and(|(_, r)| *r == path.region) {
                    let other = if path.region.as_str() == "r1" {
                        "r2"
                    } else {
                        "r1"
                    };
                    path = NodePath::new(
                        RegionId::new(other).expect("id"),
                        SiteId::new(format!("{other}-s1")).expect("id"),
                        path.node.clone(),
                    );
                }
                db.upsert_birth(&path, &birth(&path, kind), at(T0 + 5 * DAY))
                    .expect("move");
            }
            8 if runs.killed.is_some() => {
                // The killed run was only stalled: alive again, it watched all along.
                let killed = runs.killed.expect("checked");
                db.run_alive(killed, at(T0 + 5 * DAY + 3 * HOUR))
                    .expect("alive again");
            }
            _ => {
                // The run crashed long ago, as the next one of its shard finds.
                db.run_alive(run, at(past)).ok();
                db.start_run(at(T0 + 5 * DAY + 3 * HOUR), scope)
                    .expect("run");
            }
        }
    }
}

fn report(db: &Db, query: &Query, plan: Option<(UnixMillis, UnixMillis)>) -> UptimeReport {
    let nodes = NodeQuery {
        region: query.filter.region.clone(),
        site: query.filter.site.clone(),
        node: query.filter.node.clone(),
        kind: query.filter.kind.clone(),
        states: Vec::new(),
        readiness: None,
    };
    let mut all = PartialReport::default();
    for index in 0..2 {
        let shard = Shard { index, of: 2 };
        let part =
            shard_report(db, query, &nodes, plan, shard, &Abandoned::default()).expect("report");
        all.merge(part);
    }
    all.finish(query)
}

/// Runs `cases` random cases on databases `open` makes; returns how many windows the
/// summaries answered (in part), and how many of them read blocks of several days.
fn cases(open: impl Fn() -> Db, seed: u64, cases: usize) -> (usize, usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tz = time_zone("Asia/Shanghai").expect("zone");
    let (mut summarized, mut with_blocks) = (0, 0);
    for case in 0..cases {
        let mut rng = Lcg(seed ^ (case as u64).wrapping_mul(0x9e37_79b9));
        let store = Store::start(open(), Arc::new(Metrics::new())).expect("store");
        let run = runtime.block_on(async {
            let seed = rng.0;
            let run = store
                .call(move |db| Ok(history(db, &mut Lcg(seed))))
                .await
                .expect("history");
            let token = CancellationToken::new();
            days::summarize(&store, &tz, at(T0 + 5 * DAY + 2 * HOUR), &token)
                .await
                .expect("summarize");
            run
        });
        rng.below(1);
        let late_seed = rng.0;
        let resummarize = rng.chance(50);
        runtime.block_on(async {
            store
                .call(move |db| {
                    late_writes(db, &mut Lcg(late_seed), &run);
                    Ok(())
                })
                .await
                .expect("late writes");
            if resummarize {
                let token = CancellationToken::new();
                days::summarize(&store, &tz, at(T0 + 5 * DAY + 4 * HOUR), &token)
                    .await
                    .expect("summarize again");
            }
        });
        for _ in 0..12 {
            let mut from = T0 - 2 * DAY + rng.below(8 * DAY);
            if rng.chance(30) {
                from = Window::day_of(at(from), &tz)
                    .expect("day")
                    .from()
                    .as_millis();
            }
            let to = from + 1 + rng.below(7 * DAY);
            let inside = from + rng.below(8 * DAY);
            let now = rng.pick(&[T0 + 5 * DAY + 5 * HOUR, inside]);
            let query = Query {
                window: Window::new(at(from), at(to)).expect("window"),
                now: at(now),
                by: rng.pick(&[
                    GroupBy::Node,
                    GroupBy::Site,
                    GroupBy::Region,
                    GroupBy::Kind,
                    GroupBy::Network,
                ]),
                filter: Filter {
                    region: rng.chance(20).then(|| RegionId::new("r1").expect("id")),
                    site: None,
                    node: rng
                        .chance(10)
                        .then(|| node_id(rng.below(NODES as u64) as usize)),
                    kind: rng.chance(20).then(|| Name::new("siren").expect("kind")),
                },
                outage_list: false,
                tz: tz.clone(),
            };
            let (raw, from_days, plan, blocks) = runtime.block_on(async {
                let query = query.clone();
                store
                    .read(move |db| {
                        let plan = db.summarized_within(query.window.from(), query.until())?;
                        let blocks = match plan {
                            Some((a, b)) => db
                                .summary_cover(a, b)?
                                .iter()
                                .any(|w| w.to().millis_since(w.from()) > 25 * HOUR),
                            None => false,
                        };
                        Ok((
                            report(db, &query, None),
                            report(db, &query, plan),
                            plan,
                            blocks,
                        ))
                    })
                    .await
                    .expect("reports")
            });
            summarized += usize::from(plan.is_some());
            with_blocks += usize::from(blocks);
            assert_eq!(
                from_days, raw,
                "case {case}: {query:?} with the summaries over {plan:?}"
            );
        }
    }
    (summarized, with_blocks)
}

#[test]
fn reports_from_the_summaries_equal_reports_from_the_transitions_on_sqlite() {
    let (summarized, blocks) = cases(|| Db::open_in_memory().expect("sqlite"), 0x5eed_0001, 60);
    assert!(
        summarized > 200 && blocks > 150,
        "only {summarized} windows used the summaries, {blocks} blocks of them"
    );
}

#[test]
fn reports_from_the_summaries_equal_reports_from_the_transitions_on_postgres() {
    let (summarized, blocks) = cases(postgres_db, 0x5eed_0002, 12);
    assert!(
        summarized > 30 && blocks > 30,
        "only {summarized} windows used the summaries, {blocks} blocks of them"
    );
}
