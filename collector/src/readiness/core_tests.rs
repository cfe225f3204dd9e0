//! Readiness through the core: messages in, changes committed to the store, announced on
//! the event stream, rollups published on the board, and restored after a restart.

use crate::model::ms;
use std::sync::Arc;

use alarmnet_protocol::{NodeId, Prefix};

use super::{Board, Readiness, ReadinessConfig, Reason};
use crate::alerts::{Monitor, MonitorConfig};
use crate::api::{EventHub, EventKind, RecentMetrics};
use crate::ingest::IngestConfig;
use crate::ingest::{CoreEvent, Ingest};
use crate::metrics::Metrics;
use crate::model::UnixMillis;
use crate::outputs::Outputs;
use crate::pipeline::{Core, Links};
use crate::store::{Db, Store};

const T0: UnixMillis = UnixMillis::from_millis(1_764_330_000_000);

fn core(store: &Store, metrics: &Arc<Metrics>, board: &Board) -> (Core, EventHub) {
    let events = EventHub::new(T0, 100, 100, jiff::tz::TimeZone::UTC);
    let links = Links {
        events: events.clone(),
        recent: RecentMetrics::new(8),
        rebirth: None,
        tsdb: None,
    };
    let core = Core::new(
        store.clone(),
        Outputs::none(metrics.clone()),
        metrics.clone(),
        Monitor::new(MonitorConfig::default(), T0),
        links,
    )
    .with_readiness(&ReadinessConfig::default(), board.clone());
    (core, events)
}

fn event(ingest: &mut Ingest, node: &str, topic: &str, body: &str, at: UnixMillis) -> CoreEvent {
    ingest
        .handle(
            &format!("alarmnet/v1/lanzhou/cg/{node}/{topic}"),
            body.as_bytes(),
            at,
        )
        .expect("accepted")
}

fn birth(node: &str) -> String {
    format!(
        r#"{{"v":1,"boot":"b0000001","ts":{T0},"node":"{node}","site":"cg","region":"lanzhou",
            "kind":"siren","hb_interval_s":10}}"#
    )
}

fn test(seq: u64, result: &str) -> String {
    format!(
        r#"{{"v":1,"boot":"b0000001","seq":{seq},"ts":{T0},"test":"silent","result":"{result}"}}"#
    )
}

#[tokio::test]
async fn a_failed_test_is_stored_announced_published_and_restored() {
    let metrics = Arc::new(Metrics::new());
    let store = Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
    let board = Board::new();
    let (mut core, events) = core(&store, &metrics, &board);
    let mut ingest = Ingest::new(
        Prefix::default(),
        &IngestConfig::default(),
        None,
        [],
        metrics.clone(),
    );
    core.restore(T0).await.expect("restore");
    for n in ["s1", "s2"] {
        core.absorb(event(&mut ingest, n, "birth", &birth(n), T0 + ms(100)));
        core.absorb(event(
            &mut ingest,
            n,
            "test",
            &test(1, "pass"),
            T0 + ms(200),
        ));
    }
    core.commit_and_announce().await;
    let snap = board.snapshot();
    assert_eq!(snap.network.sirens.ready, 2);
    assert_eq!(snap.network.sirens.ready_pct(), Some(100.0));

    core.absorb(event(
        &mut ingest,
        "s2",
        "test",
        &test(2, "fail"),
        T0 + ms(300),
    ));
    core.commit_and_announce().await;
    let snap = board.snapshot();
    let region = snap.regions.values().next().expect("a region");
    assert_eq!((region.sirens.ready, region.sirens.not_ready), (1, 1));
    assert_eq!(region.sirens.ready_pct(), Some(50.0));

    let s2 = NodeId::new("s2").expect("id");
    let stored = store
        .read({
            let s2 = s2.clone();
            move |db| db.node_readiness(&s2)
        })
        .await
        .expect("read")
        .expect("derived");
    assert_eq!(stored.state, Readiness::NotReady);
    assert_eq!(
        stored.reasons,
        vec![Reason::TestFailed {
            test: "silent".into()
        }]
    );
    assert_eq!(stored.since, T0 + ms(300));
    let sub = events.subscribe(Some(&events.id_of(0)));
    let readiness: Vec<&str> = sub
        .replay
        .iter()
        .filter(|e| e.kind == EventKind::Readiness)
        .map(|e| e.data.as_str())
        .collect();
    assert!(
        readiness
            .iter()
            .any(|d| d.contains(r#""node":"s2""#) && d.contains(r#""to":"not_ready""#)),
        "{readiness:?}"
    );

    // A restarted collector derives the same from the store and announces nothing new.
    let board2 = Board::new();
    let (mut again, events2) = self::core(&store, &metrics, &board2);
    again.restore(T0 + ms(1_000)).await.expect("restore");
    assert_eq!(
        again
            .readiness()
            .node(again.monitor().tracker(), &s2)
            .map(|(s, _)| s),
        Some(Readiness::NotReady)
    );
    let sub = events2.subscribe(Some(&events2.id_of(0)));
    assert!(
        !sub.replay.iter().any(|e| e.kind == EventKind::Readiness),
        "no readiness change after a restart"
    );
    assert_eq!(board2.snapshot().network, board.snapshot().network);
}
