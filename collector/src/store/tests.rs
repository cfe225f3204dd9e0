use std::sync::Arc;

use alarmnet_protocol::{
    AlertStatus, Birth, Fault, Name, NodeId, NodePath, RegionId, Severity, SiteId, TestReceipt,
};

use super::*;
use crate::model::{UnixMillis, ms};
use crate::store::engines::{each_engine, postgres_store};

fn at(ms: u64) -> UnixMillis {
    UnixMillis::from_millis(ms)
}
use crate::model::{
    Ack, Alert, AlertId, Cause, Liveness, RuleKind, Silence, SilenceId, Subject, Transition,
};

fn path(region: &str, site: &str, node: &str) -> NodePath {
    NodePath::new(
        RegionId::new(region).expect("id"),
        SiteId::new(site).expect("id"),
        NodeId::new(node).expect("id"),
    )
}

fn birth(p: &NodePath, ts: u64) -> Birth {
    serde_json::from_value(serde_json::json!({
        "v": 1, "boot": "boot0001", "ts": ts, "node": p.node, "site": p.site,
        "region": p.region, "kind": "siren", "name": "城关区警报器", "hb_interval_s": 10
    }))
    .expect("valid birth")
}

fn nid(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn t(node: &str, from: Liveness, to: Liveness, at: u64, cause: Cause) -> Transition {
    Transition {
        node: nid(node),
        from,
        to,
        at: UnixMillis::from_millis(at),
        cause,
    }
}

fn aid(id: &str) -> AlertId {
    id.parse().expect("alert id")
}

fn alert(id: &str, started_at: u64) -> Alert {
    Alert {
        id: id.parse().expect("alert id"),
        rule: RuleKind::NodeOffline,
        severity: Severity::Critical,
        status: AlertStatus::Firing,
        subject: Subject::Node {
            region: RegionId::new("r").expect("id"),
            site: SiteId::new("s").expect("id"),
            node: nid("n1"),
        },
        kind: Some(Name::new("siren").expect("name")),
        started_at: UnixMillis::from_millis(started_at),
        ended_at: None,
        summary: "n1 is offline".into(),
        args: Default::default(),
        ack: None,
        notified: true,
    }
}

#[test]
fn migrating_an_empty_database_reaches_the_latest_and_rerunning_is_a_no_op() {
    let mut conn = rusqlite::Connection::open_in_memory().expect("open");
    assert_eq!(schema::version(&conn).expect("version"), 0);
    assert_eq!(
        schema::migrate(&mut conn).expect("migrate"),
        schema::MIGRATIONS.len()
    );
    assert_eq!(
        schema::version(&conn).expect("version"),
        schema::MIGRATIONS.len()
    );
    assert_eq!(schema::migrate(&mut conn).expect("again"), 0);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for table in [
        "acks",
        "alerts",
        "faults",
        "nodes",
        "notification_log",
        "silences",
        "test_receipts",
        "transitions",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "{table} missing: {tables:?}"
        );
    }
}

#[test]
fn clustering_transitions_keeps_every_row_its_id_and_the_order_of_equal_times() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("v4.db");
    let conn = rusqlite::Connection::open(&file).expect("open");
    for sql in &schema::MIGRATIONS[..4] {
        conn.execute_batch(sql).expect("old schema");
    }
    conn.pragma_update(None, "user_version", 4)
        .expect("version");
    // Arrival order differs from time order; two of b's share a time.
    let old = [
        ("b", "unknown", "online", 100, "birth"),
        ("a", "unknown", "online", 50, "birth"),
        ("b", "online", "offline", 300, "will"),
        ("b", "offline", "stopped", 300, "shutdown"),
        ("a", "online", "late", 200, "timeout"),
    ];
    for (node, from, to, at, cause) in old {
        conn.execute(
            "INSERT INTO transitions (node, from_state, to_state, at, cause)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![node, from, to, at, cause],
        )
        .expect("old row");
    }
    drop(conn);
    let db = Db::open(&file).expect("migrate");
    let rows: Vec<(i64, String, i64, String)> = db
        .conn()
        .as_sqlite()
        .expect("sqlite")
        .prepare("SELECT id, node, at, to_state FROM transitions ORDER BY node, at, id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let want = [
        (2, "a", 50, "online"),
        (5, "a", 200, "late"),
        (1, "b", 100, "online"),
        (3, "b", 300, "offline"),
        (4, "b", 300, "stopped"),
    ]
    .map(|(id, n, at, to)| (id, n.to_owned(), at, to.to_owned()));
    assert_eq!(rows, want);
    // New rows continue the ids.
    db.record_transitions(&[t(
        "a",
        Liveness::Late,
        Liveness::Online,
        250,
        Cause::Heartbeat,
    )])
    .expect("record");
    let max: i64 = db
        .conn()
        .as_sqlite()
        .expect("sqlite")
        .query_row(
            "SELECT max(id) FROM transitions WHERE node = 'a'",
            [],
            |r| r.get(0),
        )
        .expect("max");
    assert_eq!(max, 6);
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.db");
    {
        let conn = rusqlite::Connection::open(&file).expect("open");
        conn.pragma_update(None, "user_version", 99)
            .expect("set version");
    }
    let err = Db::open(&file).expect_err("too new");
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn the_database_is_in_wal_mode_with_full_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("a.db")).expect("open");
    let mode: String = db
        .conn()
        .as_sqlite()
        .expect("sqlite")
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("mode");
    let sync: i64 = db
        .conn()
        .as_sqlite()
        .expect("sqlite")
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .expect("sync");
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "FULL");
}

#[test]
fn nodes_round_trip_and_filter() {
    each_engine(|db| {
        let a = path("r1", "s1", "a");
        let b = path("r1", "s2", "b");
        let c = path("r2", "s3", "c");
        for (p, at) in [(&a, 10), (&b, 20), (&c, 30)] {
            db.upsert_birth(p, &birth(p, at), UnixMillis::from_millis(at))
                .expect("birth");
        }
        let rec = db.node(&a.node).expect("query").expect("exists");
        assert_eq!(rec.path, a);
        assert_eq!(rec.kind.as_str(), "siren");
        assert_eq!(rec.name.as_deref(), Some("城关区警报器"));
        assert_eq!(rec.hb_interval_ms, 10_000);
        assert_eq!(rec.state, Liveness::Unknown);
        assert_eq!(
            (rec.first_seen.as_millis(), rec.last_seen.as_millis()),
            (10, 10)
        );
        assert_eq!(rec.info["name"], "城关区警报器");

        db.touch(&[
            Heard::at(a.node.clone(), UnixMillis::from_millis(50)),
            Heard::at(b.node.clone(), UnixMillis::from_millis(5)),
        ])
        .expect("touch");
        assert_eq!(
            db.node(&a.node).expect("q").expect("a").last_seen,
            UnixMillis::from_millis(50)
        );
        assert_eq!(
            db.node(&b.node).expect("q").expect("b").last_seen,
            UnixMillis::from_millis(20),
            "never backwards"
        );

        // A rebirth under a new site moves the node but keeps first_seen.
        let moved = path("r1", "s9", "a");
        db.upsert_birth(&moved, &birth(&moved, 60), UnixMillis::from_millis(60))
            .expect("rebirth");
        let rec = db.node(&a.node).expect("q").expect("a");
        assert_eq!(
            (
                rec.path.site.as_str(),
                rec.first_seen.as_millis(),
                rec.birth_ts
            ),
            ("s9", 10, 60)
        );

        db.record_transitions(&[t(
            "b",
            Liveness::Unknown,
            Liveness::Online,
            70,
            Cause::Birth,
        )])
        .expect("transition");
        let r1 = db
            .nodes(&NodeFilter {
                region: Some(RegionId::new("r1").expect("id")),
                ..NodeFilter::default()
            })
            .expect("nodes");
        assert_eq!(r1.len(), 2);
        let online = db
            .nodes(&NodeFilter {
                state: Some(Liveness::Online),
                ..NodeFilter::default()
            })
            .expect("nodes");
        assert_eq!(online.len(), 1);
        assert_eq!(online[0].path, b);
        assert_eq!(online[0].state_since, UnixMillis::from_millis(70));
        let page = db
            .nodes(&NodeFilter {
                limit: Some(1),
                offset: 1,
                ..NodeFilter::default()
            })
            .expect("nodes");
        assert_eq!(page.len(), 1);
        assert_eq!(db.count_nodes().expect("count"), 3);
        let mut bindings = db.bindings().expect("bindings");
        bindings.sort();
        assert_eq!(bindings.len(), 3);
        assert!(bindings.contains(&(moved, 60)));
    });
}

#[test]
fn many_rows_in_one_call_span_several_statements_and_keep_their_order() {
    each_engine(|db| {
        // 300 nodes: statements of 256, 32, 8 and 4 rows.
        let nodes: Vec<NodePath> = (0..300)
            .map(|i| path("r1", "s1", &format!("n{i:03}")))
            .collect();
        for p in &nodes {
            db.upsert_birth(p, &birth(p, 1), at(1)).expect("birth");
        }
        let heard: Vec<Heard> = nodes
            .iter()
            .enumerate()
            .map(|(i, p)| Heard {
                node: p.node.clone(),
                at: at(100 + i as u64),
                seq: (i % 2 == 0).then(|| ("b1".to_owned(), i as u64)),
            })
            .collect();
        db.touch(&heard).expect("touch");
        for (i, p) in nodes.iter().enumerate() {
            let rec = db.node(&p.node).expect("q").expect("node");
            assert_eq!(rec.last_seen, at(100 + i as u64), "{}", p.node);
            let want = (i % 2 == 0).then(|| ("b1".to_owned(), i as u64));
            assert_eq!(rec.last_seq, want, "{}", p.node);
        }
        // Two transitions of one node in a call: its state is the later one's, and ids
        // follow the order given, across statements.
        let mut batch: Vec<Transition> = nodes
            .iter()
            .map(|p| {
                t(
                    p.node.as_str(),
                    Liveness::Unknown,
                    Liveness::Online,
                    200,
                    Cause::Heartbeat,
                )
            })
            .collect();
        batch.push(t(
            "n007",
            Liveness::Online,
            Liveness::Offline,
            300,
            Cause::Timeout,
        ));
        db.record_transitions(&batch).expect("transitions");
        let n7 = db.node(&nid("n007")).expect("q").expect("n007");
        assert_eq!((n7.state, n7.state_since), (Liveness::Offline, at(300)));
        let n8 = db.node(&nid("n008")).expect("q").expect("n008");
        assert_eq!(n8.state, Liveness::Online);
        let history = db
            .node_history(&nid("n007"), at(0), at(1_000))
            .expect("history");
        let to: Vec<Liveness> = history.iter().map(|t| t.to).collect();
        assert_eq!(to, [Liveness::Online, Liveness::Offline]);
        let more = [t(
            "n299",
            Liveness::Online,
            Liveness::Late,
            400,
            Cause::Timeout,
        )];
        db.record_transitions(&more).expect("one more");
        let ids: Vec<i64> = db
            .conn()
            .query("SELECT id FROM transitions ORDER BY id", &[], |r| r.get(0))
            .expect("ids");
        assert_eq!(
            ids,
            (1..=302).collect::<Vec<i64>>(),
            "dense, in the order given"
        );
    });
}

#[test]
fn pruning_notifications_takes_the_outbox_with_the_log() {
    each_engine(|db| {
        let a = alert("0000000000000f41", 100);
        let old = db.store_notice(&a, at(100)).expect("notice");
        let new = db.store_notice(&a, at(300)).expect("notice");
        db.record_notification(&NotificationAttempt {
            alert_id: a.id,
            alert_started_at: a.started_at,
            status: a.status,
            output: "webhook-0".into(),
            attempt: 1,
            at: at(100),
            ok: true,
            error: None,
            notice: Some(old),
            done: true,
        })
        .expect("log");
        let kind = crate::store::retention::Kind::Notifications;
        assert_eq!(db.prune(kind, at(200), 10).expect("prune"), 1);
        let left: Vec<i64> = db
            .unsent_notices("webhook-0", at(0))
            .expect("notices")
            .into_iter()
            .map(|n| n.id)
            .collect();
        assert_eq!(left, [new], "the old notice went, the new one stays");
        assert!(db.notifications(a.id).expect("log").is_empty());
        assert_eq!(db.prune(kind, at(200), 10).expect("prune"), 0);
    });
}

#[test]
fn transition_windows_carry_the_state_before_the_window() {
    each_engine(|db| {
        use Liveness::*;
        db.record_transitions(&[
            t("a", Unknown, Online, 100, Cause::Birth),
            t("a", Online, Late, 200, Cause::Timeout),
            t("a", Late, Offline, 300, Cause::Timeout),
            t("b", Unknown, Online, 150, Cause::Birth),
            t("a", Offline, Online, 400, Cause::Heartbeat),
            t("c", Unknown, Online, 500, Cause::Birth),
        ])
        .expect("record");
        let w = db
            .transition_window(None, at(250), at(450))
            .expect("window");
        assert_eq!(
            w.before,
            vec![
                t("a", Online, Late, 200, Cause::Timeout),
                t("b", Unknown, Online, 150, Cause::Birth)
            ]
        );
        assert_eq!(
            w.within,
            vec![
                t("a", Late, Offline, 300, Cause::Timeout),
                t("a", Offline, Online, 400, Cause::Heartbeat)
            ]
        );
        let only_b = db
            .transition_window(Some(&[nid("b")]), at(0), at(1000))
            .expect("window");
        assert!(only_b.before.is_empty());
        assert_eq!(only_b.within.len(), 1);
        // `to` is exclusive.
        let w = db
            .transition_window(Some(&[nid("c")]), at(0), at(500))
            .expect("w");
        assert!(w.within.is_empty());
        let h = db
            .node_history(&nid("a"), at(0), at(1000))
            .expect("history");
        assert_eq!(h.len(), 4);
        assert_eq!(h[3].cause, Cause::Heartbeat);
    });
}

#[test]
fn fault_history_opens_and_closes() {
    each_engine(|db| {
        let fault = |status: &str, ts: u64, replay: bool| -> Fault {
            serde_json::from_value(serde_json::json!({
                "v": 1, "boot": "boot0001", "seq": ts, "ts": ts, "check": "amplifier",
                "code": "AMP_NO_OUTPUT", "severity": "critical", "status": status,
                "message": "no output", "replay": replay
            }))
            .expect("fault")
        };
        let n = nid("a");
        db.record_fault(&n, &fault("raised", 10, true), UnixMillis::from_millis(99))
            .expect("raise");
        db.record_fault(&n, &fault("raised", 11, false), UnixMillis::from_millis(99))
            .expect("raise again: no-op");
        assert_eq!(db.faults(&n, true).expect("active").len(), 1);
        db.record_fault(
            &n,
            &fault("cleared", 20, false),
            UnixMillis::from_millis(99),
        )
        .expect("clear");
        assert!(db.faults(&n, true).expect("active").is_empty());
        db.record_fault(&n, &fault("raised", 30, false), UnixMillis::from_millis(99))
            .expect("raise");
        let all = db.faults(&n, false).expect("all");
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].raised_at, 10);
        assert_eq!(all[1].cleared_at, Some(20));
        assert!(all[1].replay);
        assert_eq!(all[0].key, "amplifier/AMP_NO_OUTPUT");
        assert_eq!(all[0].severity, Severity::Critical);
    });
}

#[test]
fn test_receipts_are_kept() {
    each_engine(|db| {
        let receipt: TestReceipt = serde_json::from_value(serde_json::json!({
            "v": 1, "boot": "boot0001", "seq": 3, "ts": 1000, "drill": "d-1", "test": "silent",
            "result": "pass", "duration_ms": 4200, "metrics": {"amp1_out_w": 395.0}
        }))
        .expect("receipt");
        db.record_test(&nid("a"), &receipt, UnixMillis::from_millis(1001))
            .expect("record");
        assert_eq!(db.count_tests(&nid("a")).expect("count"), 1);
        let result: String = db
            .conn()
            .query_one("SELECT result FROM test_receipts", &[], |r| r.get(0))
            .expect("row");
        assert_eq!(result, "pass");
    });
}

#[test]
fn alerts_acks_silences_and_notifications_round_trip() {
    each_engine(|db| {
        let mut a = alert("0000000000000f31", 100);
        db.upsert_alert(&a).expect("fire");
        assert_eq!(
            db.alerts(Some(AlertStatus::Firing), 10).expect("q"),
            vec![a.clone()]
        );
        let ack = Ack {
            by: "duty officer".into(),
            at: UnixMillis::from_millis(150),
            comment: Some("crew sent".into()),
        };
        let acked = db
            .ack_alert(aid("0000000000000f31"), &ack)
            .expect("ack")
            .expect("exists");
        assert_eq!(acked.ack, Some(ack.clone()));
        assert!(
            db.ack_alert(aid("00000000000000ee"), &ack)
                .expect("ack")
                .is_none()
        );
        a.ack = Some(ack);
        a.status = AlertStatus::Resolved;
        a.ended_at = Some(UnixMillis::from_millis(200));
        db.upsert_alert(&a).expect("resolve");
        // The same subject fires again: a new row under the same id.
        let again = alert("0000000000000f31", 300);
        db.upsert_alert(&again).expect("fire again");
        assert_eq!(
            db.alerts(None, 10).expect("all"),
            vec![again.clone(), a.clone()]
        );
        assert_eq!(
            db.alerts(Some(AlertStatus::Firing), 10).expect("q"),
            vec![again.clone()]
        );
        assert_eq!(
            db.latest_alert(aid("0000000000000f31")).expect("latest"),
            Some(again)
        );

        let s = Silence {
            id: SilenceId::new(1),
            region: Some(RegionId::new("r").expect("id")),
            site: None,
            node: None,
            kind: Some(Name::new("display").expect("name")),
            starts_at: UnixMillis::from_millis(10),
            ends_at: UnixMillis::from_millis(1000),
            created_by: "ops".into(),
            comment: None,
        };
        db.upsert_silence(&s).expect("silence");
        assert_eq!(
            db.silences(Some(UnixMillis::from_millis(500))).expect("q"),
            vec![s.clone()]
        );
        assert!(
            db.end_silence(SilenceId::new(1), UnixMillis::from_millis(600))
                .expect("end")
        );
        assert!(
            db.silences(Some(UnixMillis::from_millis(700)))
                .expect("q")
                .is_empty()
        );
        assert_eq!(
            db.silences(None).expect("q")[0].ends_at,
            UnixMillis::from_millis(600)
        );

        // The outbox: a stored notice is unsent for every output until an attempt ends it
        // (a success, or the last attempt).
        let mut notified = alert("0000000000000f31", 100);
        notified.notified = true;
        let t0 = UnixMillis::from_millis(100);
        let notice = db.store_notice(&notified, t0).expect("notice");
        let unsent = |output: &str| -> Vec<i64> {
            db.unsent_notices(output, t0)
                .expect("unsent")
                .into_iter()
                .map(|n| {
                    assert_eq!(n.alert, notified, "the alert as notified");
                    n.id
                })
                .collect()
        };
        assert_eq!(unsent("webhook-0"), [notice]);
        assert!(
            db.unsent_notices("webhook-0", t0 + ms(1))
                .expect("unsent")
                .is_empty(),
            "only notices decided since the given time"
        );
        for attempt in 1..=2 {
            db.record_notification(&NotificationAttempt {
                alert_id: aid("0000000000000f31"),
                alert_started_at: UnixMillis::from_millis(100),
                status: AlertStatus::Firing,
                output: "webhook-0".into(),
                attempt,
                at: UnixMillis::from_millis(100) + ms(u64::from(attempt)),
                ok: attempt == 2,
                error: (attempt == 1).then(|| "HTTP 500".into()),
                notice: Some(notice),
                done: attempt == 2,
            })
            .expect("log");
            let left = if attempt == 1 { vec![notice] } else { vec![] };
            assert_eq!(unsent("webhook-0"), left, "after attempt {attempt}");
        }
        assert_eq!(unsent("alertmanager"), [notice], "per output");
        let log = db.notifications(aid("0000000000000f31")).expect("log");
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].error.as_deref(), Some("HTTP 500"));
        assert!(log[1].ok);
        assert_eq!((log[1].notice, log[1].done), (Some(notice), true));
    });
}

#[tokio::test]
async fn committed_transitions_survive_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.db");
    let store = Store::open(&file, Arc::new(Metrics::new())).expect("open");
    let p = path("r", "s", "a");
    store
        .upsert_birth(
            p.clone(),
            Box::new(birth(&p, 1)),
            UnixMillis::from_millis(1),
        )
        .await
        .expect("birth");
    let transitions: Vec<_> = (0..100u64)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                (Liveness::Online, Liveness::Offline)
            } else {
                (Liveness::Offline, Liveness::Online)
            };
            t("a", from, to, 10 + i, Cause::Timeout)
        })
        .collect();
    store
        .record_transitions(transitions.clone())
        .await
        .expect("record");
    // No clean shutdown: the handle is simply forgotten, the thread keeps running; a second
    // connection (as after a crash and restart) must see everything that was acknowledged.
    std::mem::forget(store);
    let db = Db::open(&file).expect("reopen");
    assert_eq!(
        db.node_history(&p.node, at(0), at(u64::MAX / 2))
            .expect("h"),
        transitions
    );
    assert_eq!(
        db.node(&p.node).expect("q").expect("a").state,
        Liveness::Online
    );
}

#[tokio::test]
async fn a_failing_command_does_not_undo_its_batch() {
    let sqlite = Store::start(
        Db::open_in_memory().expect("open"),
        Arc::new(Metrics::new()),
    )
    .expect("start");
    for store in [sqlite, postgres_store(Arc::new(Metrics::new()))] {
        let p = path("r", "s", "a");
        let ok = store.upsert_birth(
            p.clone(),
            Box::new(birth(&p, 1)),
            UnixMillis::from_millis(1),
        );
        let bad = store.call(|db| {
            db.conn()
                .execute("INSERT INTO nodes (node) VALUES ('x')", &[])?;
            Ok(())
        });
        let (ok, bad) = tokio::join!(ok, bad);
        ok.expect("good command commits");
        assert!(
            matches!(bad, Err(StoreError::Sqlite(_) | StoreError::Postgres(_))),
            "{bad:?}"
        );
        assert_eq!(store.count_nodes().await.expect("count"), 1);
    }
}

#[tokio::test]
async fn many_concurrent_writes_are_batched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Arc::new(Metrics::new());
    let postgres = Arc::new(Metrics::new());
    let stores = [
        (
            Store::open(&dir.path().join("a.db"), sqlite.clone()).expect("open"),
            sqlite,
        ),
        (postgres_store(postgres.clone()), postgres),
    ];
    for (store, metrics) in stores {
        concurrent_writes_are_batched(store, metrics).await;
    }
}

async fn concurrent_writes_are_batched(store: Store, metrics: Arc<Metrics>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..2000u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let p = path("r", "s", &format!("n{i}"));
            store
                .upsert_birth(
                    p.clone(),
                    Box::new(birth(&p, i)),
                    UnixMillis::from_millis(i),
                )
                .await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("join").expect("write");
    }
    assert_eq!(store.count_nodes().await.expect("count"), 2000);
    let text = metrics.render();
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("alarmnet_store_latency_seconds_count "))
        .and_then(|v| v.parse().ok())
        .expect("count line");
    assert!(
        count < 2000,
        "2001 commands in {count} transactions: batching works"
    );
}

#[test]
fn postgres_migrates_once_and_refuses_a_newer_database() {
    use crate::store::engines::postgres_url;
    use crate::store::schema;
    use crate::store::sql::{Conn, pg_config};
    let config = pg_config(&postgres_url(), None).expect("url");
    let conn = Conn::postgres(&config).expect("connect");
    assert_eq!(
        schema::migrate_postgres(&conn).expect("migrate"),
        schema::POSTGRES.len()
    );
    assert_eq!(schema::migrate_postgres(&conn).expect("again"), 0);
    assert_eq!(
        schema::postgres_version(&conn).expect("version"),
        schema::POSTGRES.len()
    );
    conn.batch("UPDATE alarmnet_schema SET version = 99")
        .expect("set");
    let err = Db::connect(&config).expect_err("too new");
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn a_schedule_occurrence_is_claimed_once_and_drills_are_read_by_owner() {
    use crate::drills::{DrillMeta, LiveDrill, NodeResult, Selector, Status, Tally};
    each_engine(|db| {
        let at = UnixMillis::from_millis(1_000);
        assert!(db.claim_schedule("daily", at).expect("claim"), "the first");
        assert!(!db.claim_schedule("daily", at).expect("claim"), "not twice");
        assert!(
            !db.claim_schedule("daily", UnixMillis::from_millis(500))
                .expect("claim"),
            "nor an earlier one"
        );
        assert!(
            db.claim_schedule("daily", UnixMillis::from_millis(2_000))
                .expect("claim"),
            "the next"
        );
        assert_eq!(
            db.schedule_last("daily").expect("read"),
            Some(UnixMillis::from_millis(2_000))
        );

        let p = path("r1", "s1", "a");
        db.upsert_birth(&p, &birth(&p, 10), UnixMillis::from_millis(10))
            .expect("birth");
        for (id, owner) in [("d-east", "east"), ("d-west", "west")] {
            let meta = DrillMeta {
                id: alarmnet_protocol::CmdId::new(id).expect("id"),
                test: alarmnet_protocol::Name::new("silent").expect("test"),
                selector: Selector::default(),
                started_at: at,
                deadline: at + ms(600_000),
                started_by: "ops".into(),
                status: Status::Open,
                closed_at: None,
                cancelled_by: None,
                schedule: None,
                tally: Tally::default(),
            };
            let nodes = vec![NodeResult::waiting(
                p.clone(),
                alarmnet_protocol::Name::new("siren").expect("kind"),
            )];
            let meta = LiveDrill::new(meta, nodes.clone()).meta().clone();
            db.insert_drill(&meta, &nodes, owner).expect("insert");
        }
        let live = db.live_drills(UnixMillis::EPOCH, "west").expect("read");
        let ids: Vec<_> = live.iter().map(|(d, _)| d.meta.id.as_str()).collect();
        assert_eq!(ids, ["d-west"]);
        assert_eq!(
            db.drill_owner("d-east").expect("read").as_deref(),
            Some("east")
        );
    });
}
