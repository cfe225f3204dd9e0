//! The API over real HTTP: a real [`Store`] on a temporary SQLite file filled through the
//! store's own write API, the router served on 127.0.0.1:0, requests with reqwest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use alarmnet_protocol::{
    AlertNotification, AlertStatus, Birth, Fault, Name, NodeId, NodePath, RegionId, Severity,
    SiteId, TestReceipt,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::metrics::Metrics;
use crate::model::{Alert, Cause, Liveness, Silence, Subject, Transition};

pub(crate) const VIEWER: &str = "viewer-token-0123456789";
pub(crate) const OPERATOR: &str = "operator-token-0123456789";

/// Milliseconds of an RFC 3339 time.
pub(crate) fn ms(text: &str) -> UnixMillis {
    let ts: jiff::Timestamp = text.parse().expect("RFC 3339");
    UnixMillis::from_millis(u64::try_from(ts.as_millisecond()).expect("after 1970"))
}

/// "Now" for every test: 2026-11-28 12:00 in Asia/Shanghai.
pub(crate) fn now() -> UnixMillis {
    ms("2026-11-28T12:00:00+08:00")
}

fn path(region: &str, site: &str, node: &str) -> NodePath {
    NodePath::new(
        RegionId::new(region).expect("id"),
        SiteId::new(site).expect("id"),
        NodeId::new(node).expect("id"),
    )
}

fn birth(p: &NodePath, kind: &str, name: &str, site_name: &str) -> Birth {
    serde_json::from_value(json!({
        "v": 1, "boot": "boot0001", "ts": ms("2026-09-01T00:00:00+08:00"), "node": p.node,
        "site": p.site, "region": p.region, "kind": kind, "name": name, "hb_interval_s": 10,
        "lat": 36.06, "lon": 103.83, "model": "WS-600", "checks": ["system", "amplifier"],
        "tags": {"region_name": format!("{} region", p.region), "site_name": site_name}
    }))
    .expect("valid birth")
}

fn tr(node: &str, from: Liveness, to: Liveness, at: &str, cause: Cause) -> Transition {
    Transition {
        node: NodeId::new(node).expect("id"),
        from,
        to,
        at: ms(at),
        cause,
    }
}

fn alert(id: &str, rule: &str, sev: Severity, p: &NodePath, started: &str) -> Alert {
    Alert {
        id: id.parse().expect("alert id"),
        rule: rule.parse().expect("rule"),
        severity: sev,
        status: AlertStatus::Firing,
        subject: Subject::Node {
            region: p.region.clone(),
            site: p.site.clone(),
            node: p.node.clone(),
        },
        kind: Some(Name::new("siren").expect("kind")),
        started_at: ms(started),
        ended_at: None,
        summary: format!("{} {rule}", p.node),
        args: Default::default(),
        ack: None,
        notified: true,
    }
}

/// A collector API with a known network:
/// - lanzhou/lz-cg: `lz-cg-s001` (siren, offline 6 h on 10 October), `lz-cg-d001` (display);
/// - lanzhou/lz-ql: `lz-ql-s001` (siren, an active amplifier fault, silenced now);
/// - tianshui/ts-a: `ts-a-s001` (siren, offline since 11:00 today).
///
/// Every node came online on 1 September.
pub(crate) struct Server {
    pub addr: SocketAddr,
    pub state: ApiState,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Server {
    pub(crate) async fn start(anonymous_read: bool) -> Server {
        Self::start_with_hub(anonymous_read, 4096, 1024).await
    }

    pub(crate) async fn start_with_hub(anonymous_read: bool, buffer: usize, lag: usize) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Store::open(&dir.path().join("store.db"), Arc::new(Metrics::new())).expect("store");
        seed(&store).await;
        let tz = crate::uptime::time_zone("Asia/Shanghai").expect("zone");
        let events = EventHub::new(now(), buffer, lag, tz.clone());
        let (control, rx) = Control::channel(8);
        // Stands in for the core, which will own the receiver once it owns alert state.
        tokio::spawn(serve_with_store(rx, store.clone(), events.clone()));
        let auth = Auth::new(&AuthConfig {
            anonymous_read,
            tokens: vec![
                TokenConfig::clear("wall", VIEWER, Role::Viewer),
                TokenConfig::clear("ops-desk-1", OPERATOR, Role::Operator),
            ],
        });
        let recent = RecentMetrics::new(4);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let drills = super::drills::tests::start_drills(&store, &events, &tz, &shutdown).await;
        let state = ApiState::new(store, events, control, auth, recent, tz)
            .with_clock(Arc::new(now))
            .with_drills(drills, crate::drills::DrillsSettings::default());
        let metrics = Arc::new(Metrics::new());
        super::readiness_tests::seed(&state).await;
        let app = router(state.clone()).merge(crate::http::router(crate::http::HttpState {
            metrics,
            tsdb: None,
            readiness: Some(state.readiness.clone()),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(crate::http::serve(listener, app, shutdown.clone()));
        Server {
            addr,
            state,
            client: reqwest::Client::new(),
            _dir: dir,
            shutdown,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET with an optional token: status and JSON body.
    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }
}

async fn seed(store: &Store) {
    let nodes = [
        (
            path("lanzhou", "lz-cg", "lz-cg-s001"),
            "siren",
            "城关区警报器",
            "城关区",
        ),
        (
            path("lanzhou", "lz-cg", "lz-cg-d001"),
            "display",
            "城关区显示屏",
            "城关区",
        ),
        (
            path("lanzhou", "lz-ql", "lz-ql-s001"),
            "siren",
            "七里河警报器",
            "七里河区",
        ),
        (
            path("tianshui", "ts-a", "ts-a-s001"),
            "siren",
            "天水警报器",
            "秦州区",
        ),
    ];
    let joined = ms("2026-09-01T00:00:00+08:00");
    for (p, kind, name, site_name) in &nodes {
        store
            .upsert_birth(p.clone(), Box::new(birth(p, kind, name, site_name)), joined)
            .await
            .expect("birth");
    }
    use Liveness::{Offline, Online, Unknown};
    let mut t: Vec<Transition> = nodes
        .iter()
        .map(|(p, ..)| {
            tr(
                p.node.as_str(),
                Unknown,
                Online,
                "2026-09-01T00:00:00+08:00",
                Cause::Birth,
            )
        })
        .collect();
    t.push(tr(
        "lz-cg-s001",
        Online,
        Offline,
        "2026-10-10T00:00:00+08:00",
        Cause::Will,
    ));
    t.push(tr(
        "lz-cg-s001",
        Offline,
        Online,
        "2026-10-10T06:00:00+08:00",
        Cause::Birth,
    ));
    t.push(tr(
        "ts-a-s001",
        Online,
        Offline,
        "2026-11-28T11:00:00+08:00",
        Cause::Will,
    ));
    store.record_transitions(t).await.expect("transitions");
    let fault: Fault = serde_json::from_value(json!({
        "v": 1, "boot": "boot0001", "seq": 7, "ts": ms("2026-11-27T09:00:00+08:00"),
        "check": "amplifier", "code": "no_load", "severity": "major", "status": "raised",
        "message": "amplifier output 0.2 A"
    }))
    .expect("fault");
    store
        .record_fault(NodeId::new("lz-ql-s001").expect("id"), fault, now())
        .await
        .expect("fault");
    // Silent tests of one siren: two passes and a fail in October, a pass in September.
    for (seq, ts, result) in [
        (1, "2026-09-30T23:59:59+08:00", "pass"),
        (2, "2026-10-01T00:00:00+08:00", "pass"),
        (3, "2026-10-15T10:00:00+08:00", "fail"),
        (4, "2026-10-31T23:59:59+08:00", "pass"),
    ] {
        let receipt: TestReceipt = serde_json::from_value(json!({
            "v": 1, "boot": "boot0001", "seq": seq, "ts": ms(ts),
            "test": "silent", "result": result
        }))
        .expect("receipt");
        store
            .record_test(NodeId::new("lz-cg-s001").expect("id"), receipt, now())
            .await
            .expect("test");
    }
    let mut resolved = alert(
        "000000000000a001",
        "node_offline",
        Severity::Critical,
        &nodes[0].0,
        "2026-10-10T00:00:00+08:00",
    );
    resolved.status = AlertStatus::Resolved;
    resolved.ended_at = Some(ms("2026-10-10T06:00:00+08:00"));
    let alerts = vec![
        resolved,
        alert(
            "000000000000a004",
            "fault",
            Severity::Major,
            &nodes[2].0,
            "2026-11-27T09:00:00+08:00",
        ),
        alert(
            "000000000000a005",
            "node_offline",
            Severity::Critical,
            &nodes[3].0,
            "2026-11-28T11:00:00+08:00",
        ),
    ];
    store.upsert_alerts(alerts).await.expect("alerts");
    for (id, site, starts, ends) in [
        (
            "0000000000005a01",
            "lz-ql",
            "2026-11-28T10:00:00+08:00",
            "2026-11-28T14:00:00+08:00",
        ),
        (
            "0000000000005a03",
            "lz-cg",
            "2026-11-01T10:00:00+08:00",
            "2026-11-01T11:00:00+08:00",
        ),
        (
            "0000000000005a02",
            "lz-cg",
            "2026-11-30T09:00:00+08:00",
            "2026-11-30T12:00:00+08:00",
        ),
    ] {
        store
            .upsert_silence(Silence {
                id: id.parse().expect("silence id"),
                region: Some(RegionId::new("lanzhou").expect("id")),
                site: Some(SiteId::new(site).expect("id")),
                node: None,
                kind: None,
                starts_at: ms(starts),
                ends_at: ms(ends),
                created_by: "ops-desk-1".into(),
                comment: Some("mast repainting".into()),
            })
            .await
            .expect("silence");
    }
}

fn items(v: &Value) -> Vec<&str> {
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_str().or(i["node"].as_str()).unwrap_or("?"))
        .collect()
}

#[tokio::test]
async fn reads_need_a_known_token_unless_anonymous_read() {
    let s = Server::start(false).await;
    let (code, body) = s.get("/api/v1/nodes", None).await;
    assert_eq!(code, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(s.get("/api/v1/nodes", Some("wrong-token")).await.0, 401);
    assert_eq!(s.get("/api/v1/nodes", Some(VIEWER)).await.0, 200);
    let (code, who) = s.get("/api/v1/whoami", Some(OPERATOR)).await;
    assert_eq!(
        (code, who),
        (200, json!({"name": "ops-desk-1", "role": "operator"}))
    );
    // Health and the console never need a token.
    assert_eq!(s.get("/healthz", None).await.0, 200);
    let (code, page) = s.get("/", None).await;
    assert_eq!(code, 200);
    assert!(page.as_str().is_some_and(|p| p.contains("<html")), "{page}");

    let open = Server::start(true).await;
    assert_eq!(open.get("/api/v1/nodes", None).await.0, 200);
    assert_eq!(
        open.get("/api/v1/whoami", None).await.1,
        json!({"name": null, "role": "anonymous"})
    );
    assert_eq!(open.get("/api/v1/nodes", Some("wrong-token")).await.0, 401);
}

#[tokio::test]
async fn writes_need_an_operator_token() {
    use reqwest::Method;
    let open = Server::start(true).await;
    let silence = json!({"site": "lz-cg", "duration": "1h"});
    for (method, path, body) in [
        (Method::POST, "/api/v1/alerts/000000000000a005/ack", None),
        (Method::POST, "/api/v1/silences", Some(silence.clone())),
        (Method::DELETE, "/api/v1/silences/0000000000005a01", None),
    ] {
        let (code, err, headers) = open.send(method.clone(), path, None, body.clone()).await;
        assert_eq!(code, 401, "{method} {path}: {err}");
        assert_eq!(
            headers.get("www-authenticate").map(|h| h.as_bytes()),
            Some(&b"Bearer"[..])
        );
        let (code, err, _) = open.send(method.clone(), path, Some(VIEWER), body).await;
        assert_eq!(code, 403, "{method} {path}: {err}");
        assert_eq!(err["error"]["code"], "forbidden");
    }
    // Nothing was changed by the refused writes.
    let (_, alerts) = open.get("/api/v1/alerts?acked=true", None).await;
    assert_eq!(alerts["total"], 0);
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let s = Server::start(true).await;
    for (path, param) in [
        ("/api/v1/nodes?limit=0", "limit"),
        ("/api/v1/nodes?limit=1001", "limit"),
        ("/api/v1/nodes?state=online,dead", "state"),
        ("/api/v1/nodes?cursor=zzz", "cursor"),
        // An offset (the old form), and another list's cursor: neither is this list's key.
        ("/api/v1/nodes?cursor=o100", "cursor"),
        ("/api/v1/alerts?cursor=n6c7a", "cursor"),
        ("/api/v1/silences?cursor=s31", "cursor"),
        ("/api/v1/nodes/lz-cg-s001/history?cursor=a310a32", "cursor"),
        ("/api/v1/nodes?region=bad%20id", "region"),
        ("/api/v1/alerts?severity=loud", "severity"),
        ("/api/v1/alerts?status=burning", "status"),
        ("/api/v1/alerts?acked=maybe", "acked"),
        ("/api/v1/alerts?since=3x", "since"),
        ("/api/v1/alerts?since=1d&from=2026-10-01", "from"),
        ("/api/v1/uptime?month=2026-13", "month"),
        ("/api/v1/uptime?month=2026-10&year=2026", "year"),
        ("/api/v1/uptime?by=planet", "by"),
        ("/api/v1/uptime?from=yesterday", "from"),
        ("/api/v1/uptime?from=2026-10-05&to=2026-10-01", "to"),
        ("/api/v1/nodes/lz-cg-s001/history?type=logs", "type"),
        ("/api/v1/events?types=state,gossip", "types"),
        ("/api/v1/silences?status=forever", "status"),
    ] {
        let (code, body) = s.get(path, None).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_parameter", "{path}");
        assert_eq!(body["error"]["param"], param, "{path}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(param), "{path}: {message}");
    }
    let (code, body, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/silences",
            Some(OPERATOR),
            Some(json!({"site": "lz-cg", "duration": "1h", "colour": "red"})),
        )
        .await;
    assert_eq!(
        (code, &body["error"]["param"]),
        (400, &json!("colour")),
        "{body}"
    );
    let (code, body, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/silences",
            Some(OPERATOR),
            Some(json!({"duration": "1h"})),
        )
        .await;
    assert_eq!(
        (code, &body["error"]["param"]),
        (400, &json!("region")),
        "{body}"
    );
}

#[tokio::test]
async fn unknown_things_are_404() {
    let s = Server::start(true).await;
    let (code, body) = s.get("/api/v1/nodes/lz-cg-s999", None).await;
    assert_eq!(code, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(body["error"]["param"], "node");
    assert_eq!(s.get("/api/v1/nodes/lz-cg-s999/history", None).await.0, 404);
    assert_eq!(s.get("/api/v1/nodes/lz-cg-s999/metrics", None).await.0, 404);
    assert_eq!(
        s.get("/api/v1/no-such-thing", None).await.1["error"]["code"],
        "not_found"
    );
    let (code, _, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/alerts/nope/ack",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(code, 404);
    let (code, _, _) = s
        .send(
            reqwest::Method::DELETE,
            "/api/v1/silences/nope",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn node_lists_page_and_filter() {
    let s = Server::start(true).await;
    let (_, all) = s.get("/api/v1/nodes", None).await;
    assert_eq!(
        items(&all),
        ["lz-cg-d001", "lz-cg-s001", "lz-ql-s001", "ts-a-s001"]
    );
    assert_eq!(all["total"], 4);
    assert_eq!(all["next_cursor"], Value::Null);
    // Two pages of two, then the end.
    let (_, p1) = s.get("/api/v1/nodes?limit=3", None).await;
    assert_eq!(items(&p1), ["lz-cg-d001", "lz-cg-s001", "lz-ql-s001"]);
    let cursor = p1["next_cursor"].as_str().expect("a next page");
    let (_, p2) = s
        .get(&format!("/api/v1/nodes?limit=3&cursor={cursor}"), None)
        .await;
    assert_eq!(items(&p2), ["ts-a-s001"]);
    assert_eq!(
        (p2["next_cursor"].clone(), p2["total"].clone()),
        (Value::Null, json!(4))
    );
    let (_, off) = s.get("/api/v1/nodes?state=offline,late", None).await;
    assert_eq!(items(&off), ["ts-a-s001"]);
    assert_eq!(off["items"][0]["since"], "2026-11-28T11:00:00+08:00");
    let (_, sirens) = s.get("/api/v1/nodes?region=lanzhou&kind=siren", None).await;
    assert_eq!(items(&sirens), ["lz-cg-s001", "lz-ql-s001"]);
    assert_eq!(sirens["items"][1]["faults"], 1);
    let (_, site) = s.get("/api/v1/nodes?site=lz-cg", None).await;
    assert_eq!(site["total"], 2);

    let (_, summary) = s.get("/api/v1/summary", None).await;
    assert_eq!(summary["nodes"], 4);
    assert_eq!(summary["states"]["online"], 3);
    assert_eq!(summary["states"]["offline"], 1);
    assert_eq!(summary["alerts"]["firing"], 2);
    assert_eq!(summary["alerts"]["by_severity"]["critical"], 1);
    assert_eq!(summary["regions"][0]["region"], "lanzhou");
    assert_eq!(summary["regions"][0]["sites"][1]["name"], "七里河区");
}

#[tokio::test]
async fn node_detail_history_and_metrics() {
    let s = Server::start(true).await;
    let node = NodeId::new("lz-ql-s001").expect("id");
    let hb: alarmnet_protocol::Heartbeat = serde_json::from_value(json!({
        "v": 1, "boot": "boot0001", "seq": 41, "ts": now().as_millis() - 5000, "uptime_s": 100,
        "metrics": {"battery_v": 12.7, "cpu_pct": 7.5}
    }))
    .expect("heartbeat");
    s.state
        .recent
        .record(&node, now() - std::time::Duration::from_millis(4000), hb);
    let (code, n) = s.get("/api/v1/nodes/lz-ql-s001", None).await;
    assert_eq!(code, 200, "{n}");
    assert_eq!(n["faults_active"][0]["key"], "amplifier/no_load");
    assert_eq!(
        n["faults_active"][0]["raised_at"],
        "2026-11-27T09:00:00+08:00"
    );
    assert_eq!(n["last_heartbeat"]["seq"], 41);
    assert_eq!(n["hb_interval_s"], 10.0);
    assert_eq!(n["tags"]["site_name"], "七里河区");
    let (_, m) = s
        .get("/api/v1/nodes/lz-ql-s001/metrics?names=battery_v", None)
        .await;
    assert_eq!(m["capacity"], 4);
    assert_eq!(m["samples"][0]["metrics"], json!({"battery_v": 12.7}));

    let (_, h) = s
        .get(
            "/api/v1/nodes/lz-cg-s001/history?from=2026-10-01&to=2026-10-31",
            None,
        )
        .await;
    let at: Vec<&str> = h["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["at"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        at,
        ["2026-10-10T06:00:00+08:00", "2026-10-10T00:00:00+08:00"]
    );
    assert_eq!(h["from"], "2026-10-01T00:00:00+08:00");
    assert_eq!(h["to"], "2026-11-01T00:00:00+08:00");
    // The last 7 days by default: nothing happened to this node.
    assert_eq!(
        s.get("/api/v1/nodes/lz-cg-s001/history", None).await.1["total"],
        0
    );
    let (_, f) = s
        .get(
            "/api/v1/nodes/lz-ql-s001/history?type=faults&since=2d",
            None,
        )
        .await;
    assert_eq!(f["total"], 1);
    let (_, f) = s
        .get(
            "/api/v1/nodes/lz-ql-s001/history?type=faults&from=2026-10-01&to=2026-10-31",
            None,
        )
        .await;
    assert_eq!(f["total"], 0);
}

#[tokio::test]
async fn alerts_filter_and_acknowledge_once() {
    let s = Server::start(true).await;
    let (_, all) = s.get("/api/v1/alerts", None).await;
    assert_eq!(
        items(&all),
        ["000000000000a005", "000000000000a004", "000000000000a001"]
    );
    let (_, firing) = s
        .get("/api/v1/alerts?status=firing&severity=critical,minor", None)
        .await;
    assert_eq!(items(&firing), ["000000000000a005"]);
    let (_, october) = s
        .get("/api/v1/alerts?from=2026-10-01&to=2026-10-31", None)
        .await;
    assert_eq!(items(&october), ["000000000000a001"]);
    assert_eq!(october["items"][0]["ended_at"], "2026-10-10T06:00:00+08:00");
    let (_, rule) = s
        .get("/api/v1/alerts?rule=fault&region=lanzhou", None)
        .await;
    assert_eq!(items(&rule), ["000000000000a004"]);

    let (code, acked, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/alerts/000000000000a005/ack",
            Some(OPERATOR),
            Some(json!({"comment": "technician on the way"})),
        )
        .await;
    assert_eq!(code, 200, "{acked}");
    assert_eq!(acked["ack"]["by"], "ops-desk-1");
    assert_eq!(acked["ack"]["at"], "2026-11-28T12:00:00+08:00");
    assert_eq!(acked["ack"]["comment"], "technician on the way");
    let (code, again, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/alerts/000000000000a005/ack",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (code, again["error"]["code"].clone()),
        (409, json!("already_acknowledged"))
    );
    let (_, unacked) = s
        .get("/api/v1/alerts?status=firing&acked=false", None)
        .await;
    assert_eq!(items(&unacked), ["000000000000a004"]);
}

#[tokio::test]
async fn silences_are_created_listed_and_ended() {
    use reqwest::Method;
    let s = Server::start(true).await;
    let (_, list) = s.get("/api/v1/silences", None).await;
    assert_eq!(items(&list), ["0000000000005a02", "0000000000005a01"]);
    assert_eq!(list["items"][1]["status"], "active");
    let (_, old) = s.get("/api/v1/silences?status=expired", None).await;
    assert_eq!(items(&old), ["0000000000005a03"]);

    let (code, created, headers) = s
        .send(
            Method::POST,
            "/api/v1/silences",
            Some(OPERATOR),
            Some(
                json!({"region": "tianshui", "starts_at": "2026-11-28T13:00", "duration": "3h",
                        "comment": "mast repainting"}),
            ),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        headers.get("location").and_then(|l| l.to_str().ok()),
        Some(format!("/api/v1/silences/{id}").as_str())
    );
    assert_eq!(created["starts_at"], "2026-11-28T13:00:00+08:00");
    assert_eq!(created["ends_at"], "2026-11-28T16:00:00+08:00");
    assert_eq!(
        (created["status"].as_str(), created["created_by"].as_str()),
        (Some("pending"), Some("ops-desk-1"))
    );

    let (code, ended, _) = s
        .send(
            Method::DELETE,
            "/api/v1/silences/0000000000005a01",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(code, 200, "{ended}");
    assert_eq!(ended["ends_at"], "2026-11-28T12:00:00+08:00");
    assert_eq!(ended["status"], "expired");
    let (code, again, _) = s
        .send(
            Method::DELETE,
            "/api/v1/silences/0000000000005a01",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(
        (code, again["error"]["code"].clone()),
        (409, json!("already_expired"))
    );
    let (_, list) = s.get("/api/v1/silences", None).await;
    assert_eq!(items(&list), ["0000000000005a02", id]);
}

#[tokio::test]
async fn uptime_of_a_calendar_month_in_the_zone() {
    let s = Server::start(true).await;
    let (code, r) = s
        .get("/api/v1/uptime?month=2026-10&node=lz-cg-s001", None)
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["from"], "2026-10-01T00:00:00+08:00");
    assert_eq!(r["to"], "2026-11-01T00:00:00+08:00");
    let row = &r["rows"][0];
    // October: 744 h, 6 h of it down.
    assert_eq!(row["downtime_s"], 6.0 * 3600.0);
    assert_eq!(row["up_s"], 738.0 * 3600.0);
    assert_eq!(row["availability_pct"], 738.0 * 100.0 / 744.0);
    assert_eq!(row["outages"], 1);
    assert_eq!(
        (&row["tests"], &row["tests_passed"], &row["tests_failed"]),
        (&json!(3), &json!(2), &json!(1))
    );
    assert_eq!(row["test_pass_pct"], 2.0 * 100.0 / 3.0);
    assert_eq!(
        row["outage_list"],
        json!([{"start": "2026-10-10T00:00:00+08:00", "end": "2026-10-10T06:00:00+08:00",
                "duration_s": 21600.0, "cause": "will"}])
    );
    let (_, sites) = s
        .get("/api/v1/uptime?month=2026-10&by=site&region=lanzhou", None)
        .await;
    let rows = sites["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{sites}");
    assert_eq!(
        (rows[0]["site"].as_str(), rows[0]["nodes"].as_u64()),
        (Some("lz-cg"), Some(2))
    );
    assert_eq!(rows[0]["availability_pct"], 1482.0 * 100.0 / 1488.0);
    assert_eq!(rows[1]["availability_pct"], 100.0);
    // The ongoing outage today, counted up to now (12:00), with no end.
    let (_, today) = s
        .get("/api/v1/uptime?day=2026-11-28&node=ts-a-s001", None)
        .await;
    assert_eq!(today["until"], "2026-11-28T12:00:00+08:00");
    assert_eq!(today["rows"][0]["downtime_s"], 3600.0);
    assert_eq!(today["rows"][0]["outage_list"][0]["end"], Value::Null);
}

// ---- the event stream ----

/// One SSE event as read.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Sse {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Reads server-sent events from a response.
pub(crate) struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event with an `event:` field (skips `retry`-only blocks and comments).
    pub(crate) async fn next(&mut self) -> Option<Sse> {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut e = Sse::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        e.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        e.event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        e.data.push_str(v);
                    }
                }
                if e.event.is_some() {
                    return Some(e);
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("stream read")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn stream(s: &Server, query: &str, last: Option<&str>) -> SseReader {
    let mut req = s.client.get(s.url(&format!("/api/v1/events{query}")));
    if let Some(last) = last {
        req = req.header("Last-Event-ID", last);
    }
    let r = req.send().await.expect("stream");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/event-stream")
    );
    SseReader::new(r)
}

async fn wait_subscribers(hub: &EventHub, n: usize) {
    for _ in 0..500 {
        if hub.subscribers() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no subscriber after 5 s");
}

fn notification(id: &str) -> AlertNotification {
    serde_json::from_value(json!({
        "v": 1, "id": id, "rule": "node_offline", "severity": "critical", "status": "firing",
        "region": "tianshui", "site": "ts-a", "node": "ts-a-s001", "kind": "siren",
        "started_at": ms("2026-11-28T11:00:00+08:00"), "summary": "ts-a-s001 is offline"
    }))
    .expect("notification")
}

#[tokio::test]
async fn the_stream_delivers_states_alerts_and_acks_and_resumes() {
    let s = Server::start(false).await;
    let hub = s.state.events.clone();
    // EventSource's way: the token in the query.
    let mut live = stream(&s, &format!("?access_token={VIEWER}"), None).await;
    wait_subscribers(&hub, 1).await;
    let p = path("tianshui", "ts-a", "ts-a-s001");
    let t = tr(
        "ts-a-s001",
        Liveness::Online,
        Liveness::Offline,
        "2026-11-28T11:00:00+08:00",
        Cause::Will,
    );
    hub.publish_state(
        &t,
        &p,
        &Name::new("siren").expect("kind"),
        Some("天水警报器"),
    );
    hub.publish_alert(&notification("000000000000a005"));
    let state = live.next().await.expect("state event");
    assert_eq!(state.event.as_deref(), Some("state"));
    let data: Value = serde_json::from_str(&state.data).expect("json");
    assert_eq!(
        data,
        json!({"node": "ts-a-s001", "region": "tianshui", "site": "ts-a", "kind": "siren",
               "name": "天水警报器", "from": "online", "to": "offline",
               "at": "2026-11-28T11:00:00+08:00", "cause": "will"})
    );
    let first_id = state.id.clone().expect("id");
    let alert = live.next().await.expect("alert event");
    assert_eq!(alert.event.as_deref(), Some("alert"));
    assert_eq!(
        serde_json::from_str::<Value>(&alert.data).expect("json")["started_at"],
        ms("2026-11-28T11:00:00+08:00").as_millis()
    );
    // An ack through the API is announced.
    let (code, _, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/alerts/000000000000a005/ack",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(code, 200);
    let ack = live.next().await.expect("ack event");
    assert_eq!(ack.event.as_deref(), Some("ack"));
    let ack_data: Value = serde_json::from_str(&ack.data).expect("json");
    assert_eq!(ack_data["id"], "000000000000a005");
    assert_eq!(ack_data["ack"]["by"], "ops-desk-1");

    // Reconnecting after the first event gets the two after it, then live ones.
    let mut resumed = s
        .client
        .get(s.url("/api/v1/events"))
        .bearer_auth(VIEWER)
        .header("Last-Event-ID", &first_id)
        .send()
        .await
        .map(SseReader::new)
        .expect("resume");
    let again = resumed.next().await.expect("replayed alert");
    assert_eq!(
        (again.event.as_deref(), again.id),
        (Some("alert"), alert.id.clone())
    );
    assert_eq!(resumed.next().await.expect("replayed ack").id, ack.id);
    hub.publish_alert(&notification("000000000000a003"));
    let next = resumed.next().await.expect("live after replay");
    assert!(next.data.contains("000000000000a003"), "{next:?}");

    // An id from an earlier run: resync first, then live events only.
    let mut stale = stream(
        &s,
        &format!("?access_token={VIEWER}&types=alert"),
        Some("1-5"),
    )
    .await;
    let resync = stale.next().await.expect("resync");
    assert_eq!(resync.event.as_deref(), Some("resync"));
    assert_eq!(resync.data, r#"{"reason":"unknown_id"}"#);
    hub.publish_state(&t, &p, &Name::new("siren").expect("kind"), None);
    hub.publish_alert(&notification("000000000000a002"));
    // The state event is filtered out by `types=alert`.
    assert!(
        stale
            .next()
            .await
            .expect("alert")
            .data
            .contains("000000000000a002")
    );

    // Without a token: refused.
    let r = s
        .client
        .get(s.url("/api/v1/events"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped_and_never_blocks_publishing() {
    let s = Server::start_with_hub(true, 64, 16).await;
    let hub = s.state.events.clone();
    let mut socket = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    socket
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    wait_subscribers(&hub, 1).await;
    // 20 000 events of ~2 KB: far more than socket buffers hold while nobody reads.
    let padding = "x".repeat(2000);
    let started = std::time::Instant::now();
    let mut last = 0;
    for i in 0..20_000 {
        last = hub.publish(
            EventKind::Alert,
            format!("{{\"n\":{i},\"pad\":\"{padding}\"}}"),
        );
    }
    let publishing = started.elapsed();
    assert!(
        publishing < Duration::from_secs(5),
        "publishing took {publishing:?}"
    );
    // Now read: the server ends the stream (lagged) instead of delivering everything.
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut received))
        .await
        .expect("the server closes the stream")
        .expect("read");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(200)]
    );
    let last_id = hub.id_of(last);
    assert!(
        !text.contains(&format!("id: {last_id}\n")),
        "the slow client got everything"
    );
    assert_eq!(hub.subscribers(), 0);
}

/// Every page of `path` (which has a query string), following `next_cursor`; `between`
/// runs after each page.
async fn walk(s: &Server, path: &str, mut between: impl AsyncFnMut()) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (code, page) = s.get(&url, None).await;
        assert_eq!(code, 200, "{url}: {page}");
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
        between().await;
    }
}

#[tokio::test]
async fn cursors_walk_each_node_and_alert_once_while_rows_are_added() {
    let s = Server::start(true).await;
    let store = s.state.store.clone();
    let mut added = 0;
    let nodes = walk(&s, "/api/v1/nodes?limit=1", async || {
        // One node sorting before every listed one, one after: neither shifts the pages.
        for region in ["aa", "zz"] {
            let p = path(
                region,
                &format!("{region}-s"),
                &format!("{region}-n{added}"),
            );
            let b = birth(&p, "siren", "x", "y");
            store
                .upsert_birth(p, Box::new(b), now())
                .await
                .expect("birth");
        }
        added += 1;
    })
    .await;
    let ids: Vec<&str> = nodes.iter().filter_map(|n| n["node"].as_str()).collect();
    let seeded = ["lz-cg-d001", "lz-cg-s001", "lz-ql-s001", "ts-a-s001"];
    assert_eq!(
        ids.iter()
            .filter(|n| seeded.contains(n))
            .copied()
            .collect::<Vec<_>>(),
        seeded,
        "{ids:?}"
    );
    let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a node came twice: {ids:?}");
    assert!(
        added >= 3 && ids.iter().any(|n| n.starts_with("zz-")),
        "{ids:?}"
    );

    let node = &path("lanzhou", "lz-cg", "lz-cg-s001");
    let mut n = 0;
    let alerts = walk(&s, "/api/v1/alerts?limit=1", async || {
        // A newer alert lands before the cursor, an older one after it.
        // Ids 0xe000 and up: even for the newer, odd for the older.
        for (older, started) in [
            (0, "2026-11-28T11:30:00+08:00"),
            (1, "2026-09-15T00:00:00+08:00"),
        ] {
            let a = alert(
                &format!("{:016x}", 0xe000 + 2 * n + older),
                "fault",
                Severity::Minor,
                node,
                started,
            );
            store.upsert_alerts(vec![a]).await.expect("alert");
        }
        n += 1;
    })
    .await;
    let ids: Vec<&str> = alerts.iter().filter_map(|a| a["id"].as_str()).collect();
    for id in ["000000000000a005", "000000000000a004", "000000000000a001"] {
        assert_eq!(ids.iter().filter(|x| **x == id).count(), 1, "{id}: {ids:?}");
    }
    let added = |older: u64| {
        ids.iter()
            .filter_map(|x| u64::from_str_radix(x, 16).ok())
            .any(|v| v >= 0xe000 && v % 2 == older)
    };
    assert!(added(1), "older ones follow: {ids:?}");
    assert!(!added(0), "newer ones precede: {ids:?}");
}

#[tokio::test]
async fn filtered_pages_keep_their_filters_and_total() {
    let s = Server::start(true).await;
    let sirens = walk(
        &s,
        "/api/v1/nodes?kind=siren&state=online,offline&limit=1",
        async || {},
    )
    .await;
    let ids: Vec<&str> = sirens.iter().filter_map(|n| n["node"].as_str()).collect();
    assert_eq!(ids, ["lz-cg-s001", "lz-ql-s001", "ts-a-s001"]);
    let (_, first) = s
        .get("/api/v1/nodes?kind=siren&state=online&limit=1", None)
        .await;
    assert_eq!(first["total"], 2);
    let (_, faults) = s
        .get(
            "/api/v1/nodes/lz-cg-s001/history?from=2026-09-01&limit=1",
            None,
        )
        .await;
    assert_eq!(faults["total"], 3);
    let history = walk(
        &s,
        "/api/v1/nodes/lz-cg-s001/history?from=2026-09-01&limit=1",
        async || {},
    )
    .await;
    let at: Vec<&str> = history.iter().filter_map(|t| t["at"].as_str()).collect();
    assert_eq!(
        at,
        [
            "2026-10-10T06:00:00+08:00",
            "2026-10-10T00:00:00+08:00",
            "2026-09-01T00:00:00+08:00"
        ]
    );
    let silences = walk(
        &s,
        "/api/v1/silences?status=expired&region=lanzhou&limit=1",
        async || {},
    )
    .await;
    assert_eq!(silences.len(), 1);
}

/// After retention pruned October's transitions, October's uptime is answered from the
/// daily summaries with the same figures (the outage list aside); a window starting inside
/// pruned history off a day's edge is refused.
#[tokio::test]
async fn uptime_over_pruned_history_comes_from_the_daily_summaries() {
    let s = Server::start(true).await;
    let store = s.state.store.clone();
    let queries = [
        "/api/v1/uptime?month=2026-10&node=lz-cg-s001",
        "/api/v1/uptime?month=2026-10&by=site&region=lanzhou",
        "/api/v1/uptime?from=2026-10-05&to=2026-11-28&by=network",
    ];
    let mut before = Vec::new();
    for q in queries {
        let (code, r) = s.get(q, None).await;
        assert_eq!(code, 200, "{r}");
        before.push(r);
    }
    let tz = crate::uptime::time_zone("Asia/Shanghai").expect("zone");
    let token = tokio_util::sync::CancellationToken::new();
    let days = crate::store::days::summarize(&store, &tz, now(), &token)
        .await
        .expect("summarize");
    assert!(days > 0);
    let cut = ms("2026-11-01T00:00:00+08:00");
    let pruned = store
        .call(move |db| {
            let n = db.prune(crate::store::retention::Kind::Transitions, cut, 1_000_000)?;
            db.set_pruned_before(cut)?;
            Ok(n)
        })
        .await
        .expect("prune");
    assert!(pruned > 0, "some transitions before November were pruned");
    for (q, mut was) in queries.into_iter().zip(before) {
        let (code, mut r) = s.get(q, None).await;
        assert_eq!(code, 200, "{r}");
        for row in r["rows"].as_array_mut().into_iter().flatten() {
            row.as_object_mut().map(|o| o.remove("outage_list"));
        }
        for row in was["rows"].as_array_mut().into_iter().flatten() {
            row.as_object_mut().map(|o| o.remove("outage_list"));
        }
        assert_eq!(r, was, "{q}");
    }
    let (code, r) = s
        .get(
            "/api/v1/uptime?from=2026-10-05T06:00:00%2B08:00&to=2026-11-28",
            None,
        )
        .await;
    assert_eq!(code, 400, "{r}");
    assert!(r.to_string().contains("pruned"), "{r}");
}
