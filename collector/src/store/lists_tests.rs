//! The API's SQL reads (pages, counts, summaries, the uptime stream) checked against
//! brute-force answers computed in Rust over everything the store holds.

use std::collections::{BTreeMap, BTreeSet};

use alarmnet_protocol::{AlertStatus, Birth, Name, NodeId, NodePath, RegionId, Severity, SiteId};

use super::*;
use crate::model::{
    Ack, Alert, AlertId, Cause, Liveness, RuleKind, Silence, SilenceId, Subject, Transition,
};
use crate::model::{UnixMillis, ms};
use crate::store::engines::{each_engine, postgres_store};
use crate::uptime::{
    self, Filter, GroupBy, Inputs, NodeTests, PartialReport, Query, ReportBuilder, TestTally,
    Window,
};

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn pick<T: Copy>(&mut self, of: &[T]) -> T {
        of[self.below(of.len() as u64) as usize]
    }
}

fn path(region: &str, site: &str, node: &str) -> NodePath {
    NodePath::new(
        RegionId::new(region).expect("id"),
        SiteId::new(site).expect("id"),
        NodeId::new(node).expect("id"),
    )
}

fn birth(p: &NodePath, kind: &str, ts: u64, tags: serde_json::Value) -> Birth {
    serde_json::from_value(serde_json::json!({
        "v": 1, "boot": "boot0001", "ts": ts, "node": p.node, "site": p.site,
        "region": p.region, "kind": kind, "name": format!("{} name", p.node),
        "hb_interval_s": 10, "tags": tags
    }))
    .expect("valid birth")
}

/// A node named `n{i}` in one of 3 regions × 4 sites, a siren or a display, in a random
/// state; some births name their region or site.
fn add_node(db: &Db, rng: &mut Lcg, i: usize) -> NodePath {
    let region = format!("r{}", rng.below(3));
    let site = format!("{region}-s{}", rng.below(4));
    let p = path(&region, &site, &format!("n{i:04}"));
    let kind = rng.pick(&["siren", "display"]);
    let ts = 1_000 + rng.below(50);
    let mut tags = serde_json::Map::new();
    if rng.below(3) == 0 {
        tags.insert("site_name".into(), format!("site {site} @{ts}").into());
    }
    if rng.below(4) == 0 {
        tags.insert(
            "region_name".into(),
            format!("region {region} @{ts}").into(),
        );
    }
    db.upsert_birth(
        &p,
        &birth(&p, kind, ts, tags.into()),
        UnixMillis::from_millis(ts),
    )
    .expect("birth");
    let to = rng.pick(&Liveness::ALL);
    if to != Liveness::Unknown {
        let t = Transition {
            node: p.node.clone(),
            from: Liveness::Unknown,
            to,
            at: UnixMillis::from_millis(2_000) + ms(i as u64),
            cause: Cause::Heartbeat,
        };
        db.record_transitions(&[t]).expect("transition");
    }
    p
}

fn node_query_matches(q: &NodeQuery, n: &NodeRecord) -> bool {
    q.region.as_ref().is_none_or(|r| *r == n.path.region)
        && q.site.as_ref().is_none_or(|s| *s == n.path.site)
        && q.node.as_ref().is_none_or(|x| *x == n.path.node)
        && q.kind.as_ref().is_none_or(|k| *k == n.kind)
        && (q.states.is_empty() || q.states.contains(&n.state))
}

fn key_of(p: &NodePath) -> (String, String, String) {
    (
        p.region.as_str().to_owned(),
        p.site.as_str().to_owned(),
        p.node.as_str().to_owned(),
    )
}

/// Every page of nodes matching `q`, `limit` at a time, calling `between` after each page.
fn walk_nodes(
    db: &Db,
    q: &NodeQuery,
    limit: usize,
    mut between: impl FnMut(usize),
) -> Vec<NodeBrief> {
    let mut out = Vec::new();
    let mut after: Option<NodeKey> = None;
    for page_no in 0.. {
        let page = db.node_page(q, after.as_ref(), limit).expect("page");
        assert!(page.items.len() <= limit);
        out.extend(page.items);
        match page.next {
            Some(k) => after = Some(k),
            None => break,
        }
        between(page_no);
    }
    out
}

#[test]
fn node_pages_walk_every_node_once_while_nodes_are_added() {
    each_engine(|db| {
        let mut rng = Lcg(7);
        let before: BTreeSet<_> = (0..200)
            .map(|i| key_of(&add_node(&db, &mut rng, i)))
            .collect();
        let mut added = 200;
        let seen = walk_nodes(&db, &NodeQuery::default(), 9, |_| {
            for _ in 0..3 {
                add_node(&db, &mut rng, added);
                added += 1;
            }
        });
        let keys: Vec<_> = seen.iter().map(|n| key_of(&n.path)).collect();
        // Strictly increasing: no node twice, in list order.
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "order or repeats");
        let seen: BTreeSet<_> = keys.into_iter().collect();
        assert!(
            before.is_subset(&seen),
            "a node present all along was missed"
        );
        assert!(added > 230, "nodes were added between pages");
    });
}

#[test]
fn combined_node_filters_pages_and_counts_match_brute_force() {
    each_engine(|db| {
        let mut rng = Lcg(11);
        for i in 0..300 {
            add_node(&db, &mut rng, i);
        }
        let fault: alarmnet_protocol::Fault = serde_json::from_value(serde_json::json!({
            "v": 1, "boot": "boot0001", "seq": 1, "ts": 5, "check": "amplifier",
            "code": "no_load", "severity": "major", "status": "raised"
        }))
        .expect("fault");
        for i in (0..300).step_by(17) {
            let node = NodeId::new(format!("n{i:04}")).expect("id");
            db.record_fault(&node, &fault, UnixMillis::from_millis(5))
                .expect("fault");
        }
        let all = db.nodes(&NodeFilter::default()).expect("all nodes");
        let region = |s: &str| Some(RegionId::new(s).expect("id"));
        let queries = [
            NodeQuery::default(),
            NodeQuery {
                region: region("r1"),
                ..NodeQuery::default()
            },
            NodeQuery {
                region: region("r2"),
                kind: Some(Name::new("siren").expect("kind")),
                states: vec![Liveness::Offline, Liveness::Late],
                ..NodeQuery::default()
            },
            NodeQuery {
                site: Some(SiteId::new("r0-s3").expect("id")),
                states: vec![Liveness::Online],
                ..NodeQuery::default()
            },
            NodeQuery {
                kind: Some(Name::new("display").expect("kind")),
                states: Liveness::ALL.to_vec(),
                ..NodeQuery::default()
            },
            NodeQuery {
                node: Some(NodeId::new("n0017").expect("id")),
                ..NodeQuery::default()
            },
        ];
        for q in &queries {
            let want: Vec<_> = all
                .iter()
                .filter(|n| node_query_matches(q, n))
                .map(|n| {
                    let faults = db.faults(&n.path.node, true).expect("faults").len() as u64;
                    (key_of(&n.path), n.state, faults)
                })
                .collect();
            let got: Vec<_> = walk_nodes(&db, q, 7, |_| {})
                .iter()
                .map(|n| (key_of(&n.path), n.state, n.active_faults))
                .collect();
            assert_eq!(got, want, "{q:?}");
            let first = db.node_page(q, None, 7).expect("page");
            assert_eq!(first.total, want.len() as u64, "{q:?}");
            assert_eq!(first.next.is_some(), want.len() > 7, "{q:?}");
        }
    });
}

#[test]
fn summary_counts_and_names_match_brute_force() {
    each_engine(|db| {
        let mut rng = Lcg(3);
        let mut births: Vec<(NodePath, u64, Option<String>, Option<String>)> = Vec::new();
        for i in 0..250 {
            let p = add_node(&db, &mut rng, i);
            let stored = db.node(&p.node).expect("node").expect("stored");
            let tag = |k: &str| stored.info["tags"][k].as_str().map(str::to_owned);
            births.push((p, stored.birth_ts, tag("region_name"), tag("site_name")));
        }
        let all = db.nodes(&NodeFilter::default()).expect("all");
        for q in [
            NodeQuery::default(),
            NodeQuery {
                region: Some(RegionId::new("r0").expect("id")),
                kind: Some(Name::new("siren").expect("kind")),
                ..NodeQuery::default()
            },
        ] {
            let mut want: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
            for n in all.iter().filter(|n| node_query_matches(&q, n)) {
                let (r, s, _) = key_of(&n.path);
                *want.entry((r, s, n.state.as_str())).or_default() += 1;
            }
            let got: BTreeMap<(String, String, &str), u64> = db
                .place_counts(&q)
                .expect("counts")
                .into_iter()
                .map(|c| {
                    let key = (
                        c.region.as_str().to_owned(),
                        c.site.as_str().to_owned(),
                        c.state.as_str(),
                    );
                    (key, c.nodes)
                })
                .collect();
            assert_eq!(got, want, "{q:?}");
        }
        // Names: per place, the tag of the most recent birth carrying it (ties: the later).
        let mut want: BTreeMap<(String, String), (u64, String)> = BTreeMap::new();
        for (p, ts, region_name, site_name) in &births {
            let places = [
                ((p.region.as_str(), ""), region_name),
                ((p.region.as_str(), p.site.as_str()), site_name),
            ];
            for ((r, s), name) in places {
                if let Some(name) = name {
                    let e = want
                        .entry((r.to_owned(), s.to_owned()))
                        .or_insert((*ts, name.clone()));
                    if *ts >= e.0 {
                        *e = (*ts, name.clone());
                    }
                }
            }
        }
        let got: BTreeMap<(String, String), String> = db
            .place_names()
            .expect("names")
            .into_iter()
            .map(|n| {
                let site = n.site.map(|s| s.as_str().to_owned()).unwrap_or_default();
                ((n.region.as_str().to_owned(), site), n.name)
            })
            .collect();
        let want: BTreeMap<_, _> = want.into_iter().map(|(k, (_, n))| (k, n)).collect();
        assert!(!want.is_empty());
        assert_eq!(got, want);
    });
}

#[test]
fn migration_3_names_places_from_existing_births() {
    let mut conn = rusqlite::Connection::open_in_memory().expect("open");
    for sql in &schema::MIGRATIONS[..2] {
        conn.execute_batch(sql).expect("old schema");
    }
    conn.pragma_update(None, "user_version", 2)
        .expect("version");
    let rows = [
        (
            "a",
            "r1",
            "s1",
            10,
            r#"{"tags":{"site_name":"old","region_name":"R"}}"#,
        ),
        ("b", "r1", "s1", 20, r#"{"tags":{"site_name":"new"}}"#),
        ("c", "r1", "s2", 30, r#"{"tags":{}}"#),
    ];
    for (node, region, site, ts, info) in rows {
        conn.execute(
            "INSERT INTO nodes (node, region, site, kind, info, hb_interval_ms, birth_ts,
                first_seen, last_seen, state_since) VALUES (?1, ?2, ?3, 'siren', ?4, 10000, ?5,
                0, 0, 0)",
            rusqlite::params![node, region, site, info, ts],
        )
        .expect("row");
    }
    schema::migrate(&mut conn).expect("migrate");
    let names: Vec<(String, String, String)> = conn
        .prepare("SELECT region, site, name FROM place_names ORDER BY region, site")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let own = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(names, [own("r1", "", "R"), own("r1", "s1", "new")]);
}

fn alert(i: usize, rng: &mut Lcg) -> Alert {
    let region = format!("r{}", rng.below(3));
    let site = format!("{region}-s{}", rng.below(3));
    let started_at = 1_000 + rng.below(500);
    let resolved = rng.below(2) == 0;
    Alert {
        id: AlertId::new(i as u64),
        rule: [RuleKind::NodeOffline, RuleKind::Fault][rng.below(2) as usize].clone(),
        severity: rng.pick(&Severity::ALL),
        status: if resolved {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        },
        subject: Subject::Node {
            region: RegionId::new(region).expect("id"),
            site: SiteId::new(site).expect("id"),
            node: NodeId::new(format!("n{}", rng.below(20))).expect("id"),
        },
        kind: Some(Name::new(rng.pick(&["siren", "display"])).expect("kind")),
        started_at: UnixMillis::from_millis(started_at),
        ended_at: resolved.then(|| UnixMillis::from_millis(started_at + rng.below(300))),
        summary: String::new(),
        args: Default::default(),
        ack: (rng.below(3) == 0).then(|| Ack {
            by: "ops".into(),
            at: UnixMillis::from_millis(started_at) + ms(1),
            comment: None,
        }),
        notified: true,
    }
}

fn alert_matches(q: &AlertQuery, a: &Alert) -> bool {
    q.status.is_none_or(|s| s == a.status)
        && (q.severities.is_empty() || q.severities.contains(&a.severity))
        && q.rule.as_ref().is_none_or(|r| *r == a.rule)
        && q.region
            .as_ref()
            .is_none_or(|r| a.subject.region() == Some(r))
        && q.site.as_ref().is_none_or(|r| a.subject.site() == Some(r))
        && q.node.as_ref().is_none_or(|r| a.subject.node() == Some(r))
        && q.kind.as_ref().is_none_or(|r| a.kind.as_ref() == Some(r))
        && q.acked.is_none_or(|k| a.ack.is_some() == k)
        && q.window
            .is_none_or(|(from, to)| a.started_at < to && a.ended_at.is_none_or(|e| e >= from))
}

fn walk_alerts(db: &Db, q: &AlertQuery, limit: usize, mut between: impl FnMut()) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = db.alert_page(q, after.as_ref(), limit).expect("page");
        out.extend(page.items);
        match page.next {
            Some(k) => after = Some(k),
            None => return out,
        }
        between();
    }
}

#[test]
fn alert_pages_filter_count_and_walk_once_while_alerts_are_added() {
    each_engine(|db| {
        let mut rng = Lcg(5);
        for i in 0..300 {
            db.upsert_alert(&alert(i, &mut rng)).expect("alert");
        }
        let all = db.alerts(None, usize::MAX).expect("all");
        let queries = [
            AlertQuery::default(),
            AlertQuery {
                status: Some(AlertStatus::Firing),
                ..AlertQuery::default()
            },
            AlertQuery {
                status: Some(AlertStatus::Firing),
                severities: vec![Severity::Critical, Severity::Minor],
                region: Some(RegionId::new("r1").expect("id")),
                acked: Some(false),
                ..AlertQuery::default()
            },
            AlertQuery {
                rule: Some(RuleKind::Fault),
                site: Some(SiteId::new("r2-s1").expect("id")),
                kind: Some(Name::new("siren").expect("kind")),
                window: Some((
                    UnixMillis::from_millis(1_200),
                    UnixMillis::from_millis(1_300),
                )),
                acked: Some(true),
                ..AlertQuery::default()
            },
            AlertQuery {
                node: Some(NodeId::new("n3").expect("id")),
                window: Some((
                    UnixMillis::from_millis(1_400),
                    UnixMillis::from_millis(1_450),
                )),
                ..AlertQuery::default()
            },
        ];
        for q in &queries {
            // `alerts()` is newest first by start, then by row: the list's order.
            let want: Vec<&Alert> = all.iter().filter(|a| alert_matches(q, a)).collect();
            let got = walk_alerts(&db, q, 6, || {});
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "{q:?}");
            let first = db.alert_page(q, None, 6).expect("page");
            assert_eq!(first.total, want.len() as u64, "{q:?}");
        }
        let firing: Vec<&Alert> = all
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .collect();
        for c in db.firing_counts().expect("counts") {
            let of = firing.iter().filter(|a| a.severity == c.severity);
            assert_eq!(c.firing, of.clone().count() as u64, "{:?}", c.severity);
            assert_eq!(c.unacked, of.filter(|a| a.ack.is_none()).count() as u64);
        }
        let counted: u64 = db
            .firing_counts()
            .expect("counts")
            .iter()
            .map(|c| c.firing)
            .sum();
        assert_eq!(counted, firing.len() as u64);

        // New alerts between pages (newer ones land before the cursor, older after it): every
        // alert present all along is seen exactly once.
        let before: BTreeSet<(AlertId, UnixMillis)> =
            all.iter().map(|a| (a.id, a.started_at)).collect();
        let mut i = 300;
        let seen = walk_alerts(&db, &AlertQuery::default(), 11, || {
            for _ in 0..4 {
                db.upsert_alert(&alert(i, &mut rng)).expect("alert");
                i += 1;
            }
        });
        let keys: Vec<(AlertId, UnixMillis)> = seen.iter().map(|a| (a.id, a.started_at)).collect();
        let unique: BTreeSet<_> = keys.iter().cloned().collect();
        assert_eq!(unique.len(), keys.len(), "an alert came twice");
        assert!(
            before.is_subset(&unique),
            "an alert present all along was missed"
        );
        assert!(seen.windows(2).all(|w| w[0].started_at >= w[1].started_at));
    });
}

#[test]
fn silence_pages_follow_status_and_place() {
    each_engine(|db| {
        let mut rng = Lcg(9);
        let mut all = Vec::new();
        for i in 0..60 {
            let starts_at = rng.below(100);
            let s = Silence {
                id: SilenceId::new(i),
                region: Some(RegionId::new(format!("r{}", rng.below(2))).expect("id")),
                site: (rng.below(2) == 0).then(|| SiteId::new("x").expect("id")),
                node: None,
                kind: None,
                starts_at: UnixMillis::from_millis(starts_at),
                ends_at: UnixMillis::from_millis(starts_at) + ms(1) + ms(rng.below(100)),
                created_by: "ops".into(),
                comment: None,
            };
            db.upsert_silence(&s).expect("silence");
            all.push(s);
        }
        all.sort_by(|a, b| (b.starts_at, &b.id).cmp(&(a.starts_at, &a.id)));
        let now = 80;
        for status in [
            None,
            Some(SilenceStatus::Active),
            Some(SilenceStatus::Pending),
            Some(SilenceStatus::Expired),
        ] {
            let q = SilenceQuery {
                now: UnixMillis::from_millis(now),
                status,
                region: Some(RegionId::new("r1").expect("id")),
                site: None,
            };
            let want: Vec<&Silence> = all
                .iter()
                .filter(|s| s.region == q.region)
                .filter(|s| match status {
                    None => s.ends_at > UnixMillis::from_millis(now),
                    Some(SilenceStatus::Active) => {
                        s.starts_at <= UnixMillis::from_millis(now)
                            && s.ends_at > UnixMillis::from_millis(now)
                    }
                    Some(SilenceStatus::Pending) => s.starts_at > UnixMillis::from_millis(now),
                    Some(SilenceStatus::Expired) => s.ends_at <= UnixMillis::from_millis(now),
                })
                .collect();
            let mut got = Vec::new();
            let mut after = None;
            loop {
                let page = db.silence_page(&q, after.as_ref(), 4).expect("page");
                assert_eq!(page.total, want.len() as u64);
                got.extend(page.items);
                match page.next {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
            assert_eq!(got.iter().collect::<Vec<_>>(), want, "{status:?}");
        }
    });
}

#[test]
fn the_uptime_stream_gives_the_same_report_as_the_whole_window() {
    each_engine(|db| {
        let mut rng = Lcg(13);
        let mut nodes = Vec::new();
        let mut receipts: Vec<(NodeId, u64, &str)> = Vec::new();
        for i in 0..40 {
            let p = add_node(&db, &mut rng, i);
            // Random history, some of it before the window and some at equal times.
            let mut state = db.node(&p.node).expect("node").expect("stored").state;
            let mut at = 2_100;
            let mut t = Vec::new();
            for _ in 0..rng.below(30) {
                let to = rng.pick(&Liveness::ALL);
                at += 1 + rng.below(40);
                t.push(Transition {
                    node: p.node.clone(),
                    from: state,
                    to,
                    at: UnixMillis::from_millis(at),
                    cause: Cause::Timeout,
                });
                state = to;
            }
            db.record_transitions(&t).expect("transitions");
            // Test receipts at random times, some outside every window below.
            for seq in 0..rng.below(6) {
                let result = ["pass", "pass", "fail", "error"][rng.below(4) as usize];
                let receipt: alarmnet_protocol::TestReceipt =
                    serde_json::from_value(serde_json::json!({
                        "v": 1, "boot": "boot0001", "seq": seq, "ts": 1_900 + rng.below(1_200),
                        "test": "silent", "result": result
                    }))
                    .expect("receipt");
                db.record_test(&p.node, &receipt, UnixMillis::from_millis(receipt.ts))
                    .expect("test");
                receipts.push((p.node.clone(), receipt.ts, result));
            }
            nodes.push(p);
        }
        let silences = vec![Silence {
            id: SilenceId::new(0x4d),
            region: Some(RegionId::new("r1").expect("id")),
            site: None,
            node: None,
            kind: None,
            starts_at: UnixMillis::from_millis(2_300),
            ends_at: UnixMillis::from_millis(2_400),
            created_by: "ops".into(),
            comment: None,
        }];
        let tz = uptime::time_zone("Asia/Shanghai").expect("zone");
        for (from, to, by, filter) in [
            (2_200, 2_600, GroupBy::Node, Filter::default()),
            (2_000, 3_000, GroupBy::Region, Filter::default()),
            (
                2_250,
                2_900,
                GroupBy::Site,
                Filter {
                    region: Some(RegionId::new("r2").expect("id")),
                    kind: Some(Name::new("siren").expect("kind")),
                    ..Filter::default()
                },
            ),
        ] {
            let query = Query {
                window: Window::new(UnixMillis::from_millis(from), UnixMillis::from_millis(to))
                    .expect("window"),
                now: UnixMillis::from_millis(2_800),
                by,
                filter: filter.clone(),
                outage_list: by == GroupBy::Node,
                tz: tz.clone(),
            };
            let until = query.until();
            // The whole window at once, as the engine's `report` takes it.
            let infos: Vec<_> = db
                .nodes(&NodeFilter::default())
                .expect("nodes")
                .into_iter()
                .map(|n| crate::model::NodeInfo {
                    path: n.path,
                    kind: n.kind,
                    name: n.name,
                    boot: None,
                    hb_interval_ms: n.hb_interval_ms,
                })
                .collect();
            let w = db
                .transition_window(None, UnixMillis::from_millis(from), until)
                .expect("window");
            let mut transitions = w.before;
            transitions.extend(w.within);
            transitions.sort_by(|a, b| a.node.as_str().cmp(b.node.as_str()));
            let mut tallies: BTreeMap<NodeId, TestTally> = BTreeMap::new();
            for (node, ts, result) in &receipts {
                if (from..until.as_millis()).contains(ts) {
                    let t = tallies.entry(node.clone()).or_default();
                    t.run += 1;
                    t.passed += u64::from(*result == "pass");
                    t.failed += u64::from(*result == "fail");
                }
            }
            let tests: Vec<NodeTests> = tallies
                .into_iter()
                .map(|(node, tally)| NodeTests { node, tally })
                .collect();
            let inputs = Inputs {
                nodes: &infos,
                transitions: &transitions,
                silences: &silences,
                blind: &[],
                tests: &tests,
            };
            let want = uptime::report(&query, inputs).expect("report");
            assert!(want.rows.iter().any(|r| r.tests > 0), "no tests counted");
            // The stream.
            let mut builder = ReportBuilder::new(&query, &silences, &[]);
            let q = NodeQuery {
                region: filter.region.clone(),
                kind: filter.kind.clone(),
                ..NodeQuery::default()
            };
            db.each_node_history(
                &q,
                (UnixMillis::from_millis(from), until),
                Shard::ALL,
                |path, kind, steps, tests| {
                    builder.add_node_tests(path, kind, tests);
                    builder
                        .add_node_steps(path, kind, steps)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))
                },
            )
            .expect("stream");
            assert_eq!(builder.finish(), want, "{by:?} [{from}, {to})");
            // In three shards, as parallel readers take it.
            let mut merged = PartialReport::default();
            for index in 0..3 {
                let mut builder = ReportBuilder::new(&query, &silences, &[]);
                let shard = Shard { index, of: 3 };
                db.each_node_history(
                    &q,
                    (UnixMillis::from_millis(from), until),
                    shard,
                    |path, kind, steps, tests| {
                        builder.add_node_tests(path, kind, tests);
                        builder
                            .add_node_steps(path, kind, steps)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))
                    },
                )
                .expect("stream");
                merged.merge(builder.into_partial());
            }
            assert_eq!(
                merged.finish(&query),
                want,
                "3 shards, {by:?} [{from}, {to})"
            );
        }
        assert_eq!(nodes.len(), 40);
    });
}

#[tokio::test]
async fn reads_on_reader_threads_see_committed_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::open(
        &dir.path().join("a.db"),
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    )
    .expect("open");
    let postgres = postgres_store(std::sync::Arc::new(crate::metrics::Metrics::new()));
    for store in [sqlite, postgres] {
        readers_see_committed_writes(store).await;
    }
}

async fn readers_see_committed_writes(store: Store) {
    let p = path("r1", "s1", "n1");
    store
        .upsert_birth(
            p.clone(),
            Box::new(birth(&p, "siren", 5, serde_json::json!({}))),
            UnixMillis::from_millis(5),
        )
        .await
        .expect("birth");
    let page = store
        .read(|db| db.node_page(&NodeQuery::default(), None, 10))
        .await
        .expect("read");
    assert_eq!(page.total, 1);
    // Readers cannot write.
    let err = store
        .read(|db| {
            db.touch(&[Heard::at(
                NodeId::new("n1").expect("id"),
                UnixMillis::from_millis(9),
            )])
        })
        .await;
    assert!(err.is_err(), "a reader wrote");
}

#[test]
fn the_uptime_stream_keeps_equal_times_in_stored_order_and_starts_before_the_window() {
    each_engine(|db| {
        let p = path("r1", "s1", "n1");
        db.upsert_birth(
            &p,
            &birth(&p, "siren", 1, serde_json::json!({})),
            UnixMillis::from_millis(1),
        )
        .expect("birth");
        let lonely = path("r1", "s1", "n2");
        db.upsert_birth(
            &lonely,
            &birth(&lonely, "siren", 1, serde_json::json!({})),
            UnixMillis::from_millis(1),
        )
        .expect("birth");
        use Liveness::{Offline, Online, Stopped, Unknown};
        let steps = [
            (Unknown, Online, 5),
            (Online, Offline, 8),
            (Offline, Stopped, 8),
            (Stopped, Online, 30),
            (Online, Offline, 30),
            (Offline, Online, 60),
        ];
        let t: Vec<Transition> = steps
            .iter()
            .map(|&(from, to, at)| Transition {
                node: p.node.clone(),
                from,
                to,
                at: UnixMillis::from_millis(at),
                cause: Cause::Timeout,
            })
            .collect();
        db.record_transitions(&t).expect("transitions");
        type Seen = (String, Vec<(Liveness, Liveness, u64)>);
        let mut got: Vec<Seen> = Vec::new();
        db.each_node_history(
            &NodeQuery::default(),
            (UnixMillis::from_millis(10), UnixMillis::from_millis(60)),
            Shard::ALL,
            |path, _, steps, _| {
                let s = steps
                    .iter()
                    .map(|s| (s.from, s.to, s.at.as_millis()))
                    .collect();
                got.push((path.node.as_str().to_owned(), s));
                Ok(())
            },
        )
        .expect("stream");
        assert_eq!(
            got,
            [
                (
                    "n1".to_owned(),
                    vec![
                        (Online, Offline, 8),
                        (Offline, Stopped, 8),
                        (Stopped, Online, 30),
                        (Online, Offline, 30)
                    ]
                ),
                ("n2".to_owned(), vec![]),
            ]
        );
    });
}
