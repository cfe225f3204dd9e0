//! Readiness in the API: the seeded readiness of the test network (see
//! [`super::tests::Server`]), the node list and detail, the rollups, the history report
//! against hand-computed figures, and the `/metrics` gauges.

use alarmnet_protocol::{NodeId, RegionId, SiteId};
use serde_json::json;

use super::ApiState;
use super::tests::{OPERATOR, Server, ms};
use crate::readiness::tracker::{Counts, Rollup};
use crate::readiness::{BoardSnapshot, Readiness, ReadinessChange, Reason};

fn change(
    node: &str,
    from: Option<Readiness>,
    to: Readiness,
    reasons: Vec<Reason>,
    at: &str,
) -> ReadinessChange {
    ReadinessChange {
        node: NodeId::new(node).expect("id"),
        from,
        to,
        reasons,
        at: ms(at),
    }
}

fn counts(ready: u32, degraded: u32, not_ready: u32) -> Counts {
    Counts {
        ready,
        degraded,
        not_ready,
        maintenance: 0,
    }
}

/// Readiness of the test network (times in Asia/Shanghai):
/// - `lz-cg-s001`: ready from 1 September, not ready (offline) 10 October 00:00-06:00;
/// - `lz-cg-d001`: ready from 1 September;
/// - `lz-ql-s001`: ready from 1 September, not ready (critical amplifier fault) from
///   20 October 00:00;
/// - `ts-a-s001`: ready from 1 September, degraded (silent test overdue) from 1 October,
///   not ready (offline) from 28 November 11:00.
///
/// The board holds the matching rollups now.
pub(crate) async fn seed(state: &ApiState) {
    use Readiness::{Degraded, NotReady, Ready};
    let sep = "2026-09-01T00:00:00+08:00";
    let amp = Reason::FaultCritical {
        fault: "amplifier/AMP_NO_OUTPUT".into(),
    };
    let overdue = Reason::TestOverdue {
        test: "silent".into(),
        last: ms(sep),
    };
    let changes = vec![
        change("lz-cg-s001", None, Ready, vec![], sep),
        change("lz-cg-d001", None, Ready, vec![], sep),
        change("lz-ql-s001", None, Ready, vec![], sep),
        change("ts-a-s001", None, Ready, vec![], sep),
        change(
            "ts-a-s001",
            Some(Ready),
            Degraded,
            vec![overdue.clone()],
            "2026-10-01T00:00:00+08:00",
        ),
        change(
            "lz-cg-s001",
            Some(Ready),
            NotReady,
            vec![Reason::Offline],
            "2026-10-10T00:00:00+08:00",
        ),
        change(
            "lz-cg-s001",
            Some(NotReady),
            Ready,
            vec![],
            "2026-10-10T06:00:00+08:00",
        ),
        change(
            "lz-ql-s001",
            Some(Ready),
            NotReady,
            vec![amp],
            "2026-10-20T00:00:00+08:00",
        ),
        change(
            "ts-a-s001",
            Some(Degraded),
            NotReady,
            vec![Reason::Offline, overdue],
            "2026-11-28T11:00:00+08:00",
        ),
    ];
    state
        .store
        .call(move |db| db.record_readiness(&changes))
        .await
        .expect("readiness");
    let lanzhou = Rollup {
        nodes: counts(2, 0, 1),
        sirens: counts(1, 0, 1),
    };
    let tianshui = Rollup {
        nodes: counts(0, 0, 1),
        sirens: counts(0, 0, 1),
    };
    let id = |s: &str| -> RegionId { s.parse().expect("id") };
    let site = |s: &str| -> SiteId { s.parse().expect("id") };
    state.readiness.replace(BoardSnapshot {
        network: Rollup {
            nodes: counts(2, 0, 2),
            sirens: counts(1, 0, 2),
        },
        regions: [(id("lanzhou"), lanzhou), (id("tianshui"), tianshui)].into(),
        sites: [
            (
                (id("lanzhou"), site("lz-cg")),
                Rollup {
                    nodes: counts(2, 0, 0),
                    sirens: counts(1, 0, 0),
                },
            ),
            (
                (id("lanzhou"), site("lz-ql")),
                Rollup {
                    nodes: counts(0, 0, 1),
                    sirens: counts(0, 0, 1),
                },
            ),
            ((id("tianshui"), site("ts-a")), tianshui),
        ]
        .into(),
    });
}

#[tokio::test]
async fn nodes_carry_readiness_and_filter_by_it() {
    let s = Server::start(false).await;
    let (code, body) = s
        .get("/api/v1/nodes?readiness=not_ready", Some(OPERATOR))
        .await;
    assert_eq!(code, 200, "{body}");
    let ids: Vec<&str> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["node"].as_str().expect("node"))
        .collect();
    assert_eq!(ids, ["lz-ql-s001", "ts-a-s001"]);
    assert_eq!(body["total"], 2);
    assert_eq!(body["items"][1]["readiness"]["state"], "not_ready");
    assert_eq!(
        body["items"][1]["readiness"]["reasons"],
        json!([
            {"code": "offline"},
            {"code": "test_overdue", "test": "silent", "last": "2026-09-01T00:00:00+08:00"}
        ])
    );
    assert_eq!(
        body["items"][1]["readiness"]["since"],
        "2026-11-28T11:00:00+08:00"
    );

    let (code, body) = s.get("/api/v1/nodes/lz-ql-s001", Some(OPERATOR)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["readiness"],
        json!({
            "state": "not_ready",
            "reasons": [{"code": "fault_critical", "fault": "amplifier/AMP_NO_OUTPUT"}],
            "since": "2026-10-20T00:00:00+08:00"
        })
    );

    let (code, body) = s
        .get("/api/v1/nodes?readiness=broken", Some(OPERATOR))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.to_string().contains("readiness"), "{body}");
}

#[tokio::test]
async fn rollups_by_region_and_by_site() {
    let s = Server::start(false).await;
    let (code, body) = s.get("/api/v1/readiness", Some(OPERATOR)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["network"]["sirens"]["total"], 3);
    let regions = body["regions"].as_array().expect("regions");
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[0]["region"], "lanzhou");
    assert_eq!(regions[0]["ready_pct"], 50.0);
    assert_eq!(regions[0]["nodes"]["ready"], 2);
    assert_eq!(regions[1]["ready_pct"], 0.0);
    assert!(body.get("sites").is_none());

    let (code, body) = s
        .get("/api/v1/readiness?region=lanzhou", Some(OPERATOR))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["regions"].as_array().map(Vec::len), Some(1));
    let sites = body["sites"].as_array().expect("sites");
    let names: Vec<&str> = sites
        .iter()
        .map(|x| x["site"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["lz-cg", "lz-ql"]);
    assert_eq!(sites[0]["ready_pct"], 100.0);

    let (code, _) = s
        .get("/api/v1/readiness?region=nowhere", Some(OPERATOR))
        .await;
    assert_eq!(code, 404);
    let (code, _) = s
        .get("/api/v1/readiness?region=bad/id", Some(OPERATOR))
        .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn history_report_of_a_month_matches_the_hand_computed_shares() {
    let s = Server::start(false).await;
    // October 2026 in Asia/Shanghai: 744 h.
    let (code, body) = s
        .get(
            "/api/v1/readiness/history?month=2026-10&by=node",
            Some(OPERATOR),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["from"], "2026-10-01T00:00:00+08:00");
    assert_eq!(body["to"], "2026-11-01T00:00:00+08:00");
    let row = |node: &str| {
        body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["node"] == node)
            .cloned()
            .expect("row")
    };
    let h = 3600.0;
    let cg = row("lz-cg-s001");
    assert_eq!(cg["not_ready_s"], 6.0 * h);
    assert_eq!(cg["ready_s"], 738.0 * h);
    let pct = cg["ready_pct"].as_f64().expect("pct");
    assert!((pct - 100.0 * 738.0 / 744.0).abs() < 1e-9, "{pct}");
    let ql = row("lz-ql-s001");
    assert_eq!(
        (ql["ready_s"].as_f64(), ql["not_ready_s"].as_f64()),
        (Some(456.0 * h), Some(288.0 * h))
    );
    let ts = row("ts-a-s001");
    assert_eq!(ts["degraded_pct"], 100.0);

    // The region, time-weighted over its three nodes: 1938 h ready of 2232 h.
    let (code, body) = s
        .get(
            "/api/v1/readiness/history?month=2026-10&by=region&region=lanzhou",
            Some(OPERATOR),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let r = &body["rows"][0];
    assert_eq!(r["region"], "lanzhou");
    assert_eq!(r["nodes"], 3);
    let pct = r["ready_pct"].as_f64().expect("pct");
    assert!((pct - 100.0 * 1938.0 / 2232.0).abs() < 1e-9, "{pct}");
    assert_eq!(r["unknown_s"], 0.0);

    let (code, _) = s
        .get("/api/v1/readiness/history?month=2026-13", Some(OPERATOR))
        .await;
    assert_eq!(code, 400);
    let (code, _) = s
        .get(
            "/api/v1/readiness/history?month=2026-10&by=planet",
            Some(OPERATOR),
        )
        .await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn metrics_carry_readiness_per_region() {
    let s = Server::start(false).await;
    let text = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    for line in [
        "alarmnet_readiness_ready_ratio{region=\"lanzhou\"} 0.5",
        "alarmnet_readiness_ready_ratio{region=\"tianshui\"} 0",
        "alarmnet_readiness_nodes{region=\"lanzhou\",state=\"ready\"} 2",
        "alarmnet_readiness_sirens{region=\"tianshui\",state=\"not_ready\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }
    assert!(!text.contains("node=\""), "no node label");
}

#[tokio::test]
async fn readiness_events_follow_the_documented_schema() {
    let root = super::conformance::spec();
    let s = Server::start(true).await;
    let hub = s.state.events.clone();
    let r = s
        .client
        .get(s.url("/api/v1/events?types=readiness"))
        .send()
        .await
        .expect("stream");
    let mut events = super::tests::SseReader::new(r);
    while hub.subscribers() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let path = alarmnet_protocol::NodePath::new(
        "tianshui".parse().expect("id"),
        "ts-a".parse().expect("id"),
        "ts-a-s001".parse().expect("id"),
    );
    let kind = alarmnet_protocol::Name::new("siren").expect("kind");
    for (from, reasons) in [
        (None, vec![]),
        (
            Some(Readiness::Ready),
            vec![
                Reason::Offline,
                Reason::TestOverdue {
                    test: "silent".into(),
                    last: ms("2026-09-01T00:00:00+08:00"),
                },
            ],
        ),
    ] {
        let to = if reasons.is_empty() {
            Readiness::Ready
        } else {
            Readiness::NotReady
        };
        let c = change("ts-a-s001", from, to, reasons, "2026-11-28T11:00:00+08:00");
        hub.publish_readiness(&c, &path, &kind);
        let e = events.next().await.expect("event");
        assert_eq!(e.event.as_deref(), Some("readiness"));
        let v: serde_json::Value = serde_json::from_str(&e.data).expect("json");
        super::conformance::validate(
            &root,
            &json!({"$ref": "#/components/schemas/ReadinessEvent"}),
            &v,
            "readiness event",
        );
        assert_eq!(v["to"], to.as_str());
    }
}
