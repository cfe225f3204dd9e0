//! `/api/v1/drills` over real HTTP with the real drills task; receipts are written into
//! the store as the core would commit them.

use crate::model::ms;
use std::sync::Arc;
use std::time::Duration;

use alarmnet_protocol::{CmdId, Name, NodeId, NodePath, Prefix, RegionId, SiteId, TestReceipt};
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::EventHub;
use crate::api::tests::{OPERATOR, Server, SseReader, VIEWER, now};
use crate::commands::{Commander, Commands, Discard, Signer};
use crate::drills::{
    DrillControl, DrillMeta, DrillsSettings, DrillsTask, LiveDrill, NodeResult, Selector, Status,
    Tally,
};
use crate::store::Store;

/// An open drill on `lz-cg-s001` every test server has, started an hour before [`now`].
pub(crate) const SEEDED_DRILL: &str = "d-20261128T030000-c0de";

/// Starts a drills task (with a command sender that drops its commands) for the test server.
pub(crate) async fn start_drills(
    store: &Store,
    events: &EventHub,
    tz: &TimeZone,
    shutdown: &CancellationToken,
) -> DrillControl {
    let meta = DrillMeta {
        id: CmdId::new(SEEDED_DRILL).expect("id"),
        test: Name::new("silent").expect("test"),
        selector: Selector {
            nodes: Some(vec![NodeId::new("lz-cg-s001").expect("id")]),
            ..Selector::default()
        },
        started_at: now() - ms(3_600_000),
        deadline: now() + ms(3_600_000),
        started_by: "ops-desk-1".into(),
        status: Status::Open,
        closed_at: None,
        cancelled_by: None,
        schedule: None,
        tally: Tally::default(),
    };
    let nodes = vec![NodeResult::waiting(
        NodePath::new(
            RegionId::new("lanzhou").expect("id"),
            SiteId::new("lz-cg").expect("id"),
            NodeId::new("lz-cg-s001").expect("id"),
        ),
        Name::new("siren").expect("kind"),
    )];
    let drill = LiveDrill::new(meta, nodes.clone());
    let meta = drill.meta().clone();
    store
        .call(move |db| db.insert_drill(&meta, &nodes, ""))
        .await
        .expect("seeded drill");
    let (commands, queue) = Commands::channel();
    let commander = Commander::new(
        Discard,
        Prefix::default(),
        Signer::new(None, Duration::from_secs(300)),
        10_000,
    );
    tokio::spawn(commander.run(queue, shutdown.clone()));
    let (control, rx) = DrillControl::channel();
    let mut task = DrillsTask::new(
        store.clone(),
        events.clone(),
        commands,
        DrillsSettings::default(),
        tz.clone(),
        Arc::new(now),
    );
    task.restore().await.expect("drills restored");
    tokio::spawn(task.run(rx, shutdown.clone()));
    control
}

async fn post(s: &Server, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let (status, v, _) = s.send(reqwest::Method::POST, path, token, Some(body)).await;
    (status, v)
}

async fn post_empty(s: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, v, _) = s.send(reqwest::Method::POST, path, token, None).await;
    (status, v)
}

async fn receipt(s: &Server, node: &str, drill: &str, seq: u64, result: &str) {
    let r: TestReceipt = serde_json::from_value(json!({
        "v": 1, "boot": "boot0001", "seq": seq, "ts": now(), "drill": drill, "test": "silent",
        "result": result, "duration_ms": 4200, "message": format!("{node} {result}"),
        "metrics": {"amp1_out_w": 398.5}
    }))
    .expect("receipt");
    s.state
        .store
        .record_test(NodeId::new(node).expect("id"), r, now() + ms(1_000))
        .await
        .expect("stored");
}

/// Polls the drill until `pred` holds (the drills task reads receipts every 250 ms).
async fn until(s: &Server, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (status, v) = s.get(&format!("/api/v1/drills/{id}"), Some(VIEWER)).await;
        assert_eq!(status, 200, "{v}");
        if pred(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("drill {id} never reached the expected state");
}

#[tokio::test]
async fn operators_start_drills_on_a_selector_and_viewers_cannot() {
    let s = Server::start(false).await;
    let (status, v) = post(&s, "/api/v1/drills", Some(VIEWER), json!({})).await;
    assert_eq!(status, 403, "{v}");
    let (status, _) = post(&s, "/api/v1/drills", None, json!({})).await;
    assert_eq!(status, 401);

    let (status, v) = post(
        &s,
        "/api/v1/drills",
        Some(OPERATOR),
        json!({"selector": {"region": "lanzhou"}, "dry_run": true}),
    )
    .await;
    assert_eq!(
        (status, &v),
        (200, &json!({"dry_run": true, "selected": 3}))
    );
    let (status, v) = s.get("/api/v1/drills", Some(VIEWER)).await;
    assert_eq!(
        (status, v["total"].as_u64()),
        (200, Some(1)),
        "a dry run starts nothing (the one drill is the seeded one)"
    );

    for (body, field) in [
        (json!({"selector": {"region": "mars"}}), "selector"),
        (
            json!({"selector": {"nodes": ["lz-cg-s001", "nope-1"]}}),
            "selector.nodes",
        ),
        (json!({"selector": {"nodes": []}}), "selector.nodes"),
        (json!({"deadline": "2d"}), "deadline"),
        (json!({"deadline": "soon"}), "deadline"),
        (json!({"test": "no spaces"}), "test"),
        (json!({"selector": {"regoin": "x"}}), "selector.regoin"),
    ] {
        let (status, v) = post(&s, "/api/v1/drills", Some(OPERATOR), body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v.to_string().contains(field),
            "{body}: error should name {field}: {v}"
        );
    }

    let (status, v) = post(
        &s,
        "/api/v1/drills",
        Some(OPERATOR),
        json!({"selector": {"kind": "siren"}, "deadline": "5m"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["selected"], 3);
    assert_eq!(v["status"], "open");
    assert_eq!(v["test"], "silent");
    assert_eq!(v["started_by"], "ops-desk-1");
    assert_eq!(v["tally"]["asked"], 3);
    assert_eq!(v["tally"]["waiting"], 3);
    assert_eq!(v["selector"], json!({"kind": "siren"}));
    let id = v["id"].as_str().expect("id").to_owned();
    let (status, list) = s.get("/api/v1/drills?status=open", Some(VIEWER)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"][0]["id"], id.as_str());
    let (status, shown) = s.get(&format!("/api/v1/drills/{id}"), Some(VIEWER)).await;
    assert_eq!(status, 200);
    assert_eq!(shown["total"], 3);
    let nodes: Vec<&str> = shown["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["node"].as_str().expect("node"))
        .collect();
    assert_eq!(nodes, ["lz-cg-s001", "lz-ql-s001", "ts-a-s001"]);
    assert!(
        shown["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|r| r["outcome"] == "waiting")
    );
}

#[tokio::test]
async fn receipts_tally_live_on_the_stream_and_cancel_closes_the_drill() {
    let s = Server::start(false).await;
    let r = s
        .client
        .get(s.url("/api/v1/events?types=drill"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("stream");
    let mut events = SseReader::new(r);
    while s.state.events.subscribers() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, v) = post(&s, "/api/v1/drills", Some(OPERATOR), json!({})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(v["tally"]["asked"], 4);
    let first = events.next().await.expect("start event");
    assert_eq!(first.event.as_deref(), Some("drill"));

    receipt(&s, "lz-cg-s001", &id, 1, "pass").await;
    receipt(&s, "lz-ql-s001", &id, 1, "fail").await;
    receipt(&s, "lz-cg-d001", &id, 1, "error").await;
    // A receipt of another drill, and a second one from a node: neither counts.
    receipt(&s, "ts-a-s001", "d-other", 1, "pass").await;
    receipt(&s, "lz-cg-s001", &id, 2, "fail").await;
    let v = until(&s, &id, |v| v["drill"]["tally"]["answered"] == 3).await;
    let t = &v["drill"]["tally"];
    assert_eq!(
        (
            t["passed"].as_u64(),
            t["failed"].as_u64(),
            t["errored"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(t["waiting"], 1);
    assert_eq!(v["drill"]["sounding_rate_pct"], 25.0);
    let (_, failed) = s
        .get(
            &format!("/api/v1/drills/{id}?outcome=fail,error"),
            Some(VIEWER),
        )
        .await;
    assert_eq!(failed["total"], 2);
    assert_eq!(failed["items"][0]["message"], "lz-cg-d001 error");
    assert_eq!(failed["items"][1]["metrics"]["amp1_out_w"], 398.5);

    // The receipts arrive on the stream (a few events a second at most).
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = events.next().await.expect("progress");
        let d: Value = serde_json::from_str(&e.data).expect("json");
        assert_eq!(d["id"], id.as_str());
        for r in d["results"].as_array().expect("results") {
            seen.push(r["node"].as_str().expect("node").to_owned());
        }
    }
    seen.sort();
    assert_eq!(seen, ["lz-cg-d001", "lz-cg-s001", "lz-ql-s001"]);

    let path = format!("/api/v1/drills/{id}/cancel");
    let (status, _) = post_empty(&s, &path, Some(VIEWER)).await;
    assert_eq!(status, 403);
    let (status, v) = post_empty(&s, &path, Some(OPERATOR)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["cancelled_by"], "ops-desk-1");
    assert_eq!(v["tally"]["silent"], 1);
    let (status, v) = post_empty(&s, &path, Some(OPERATOR)).await;
    assert_eq!(status, 409, "{v}");
    // After the cancel the last node's receipt is late.
    receipt(&s, "ts-a-s001", &id, 2, "pass").await;
    let v = until(&s, &id, |v| v["drill"]["tally"]["late"] == 1).await;
    assert_eq!(
        v["drill"]["tally"]["passed"], 1,
        "a late pass is not a pass"
    );
    let (status, _) = post_empty(&s, "/api/v1/drills/d-none/cancel", Some(OPERATOR)).await;
    assert_eq!(status, 404);
    let (status, _) = s.get("/api/v1/drills/d-none", Some(VIEWER)).await;
    assert_eq!(status, 404);
}
