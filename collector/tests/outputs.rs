//! Outputs against real receivers: a local HTTP server for webhooks, the real Prometheus
//! Alertmanager for the v2 API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use alarmnet_collector::metrics::Metrics;
use alarmnet_collector::model::{Alert, RuleKind, Subject, UnixMillis};
use alarmnet_collector::outputs::alertmanager::AlertmanagerConfig;
use alarmnet_collector::outputs::webhook::{Webhook, WebhookConfig, WebhookSettings};
use alarmnet_collector::outputs::{Notice, OutputContext, alertmanager};
use alarmnet_collector::store::{Db, Store};
use alarmnet_e2e::{Alertmanager, wait_for};
use alarmnet_protocol::{AlertStatus, Name, NodeId, RegionId, Severity, SiteId};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

fn alert(id: &str, status: AlertStatus) -> Alert {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    Alert {
        id: id.parse().expect("alert id"),
        rule: RuleKind::NodeOffline,
        severity: Severity::Critical,
        status,
        subject: Subject::Node {
            region: RegionId::new("lanzhou").expect("id"),
            site: SiteId::new("lz-cg").expect("id"),
            node: NodeId::new("lz-cg-s001").expect("id"),
        },
        kind: Some(Name::new("siren").expect("name")),
        started_at: UnixMillis::from_millis(now - 60_000),
        ended_at: (status == AlertStatus::Resolved).then_some(UnixMillis::from_millis(now - 1_000)),
        summary: "lz-cg-s001 (城关区) is offline".into(),
        args: Default::default(),
        ack: None,
        notified: true,
    }
}

fn context() -> (OutputContext, Store, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let store = Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
    let ctx = OutputContext {
        store: store.clone(),
        metrics: metrics.clone(),
        shutdown: CancellationToken::new(),
        clock: alarmnet_collector::model::system_clock(),
    };
    (ctx, store, metrics)
}

/// A receiver that fails the first `failures` requests with 500, then accepts; it records
/// every body and the `authorization` header.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<(serde_json::Value, String)>>>) {
    let seen: Arc<Mutex<Vec<(serde_json::Value, String)>>> = Arc::default();
    let app = {
        let seen = seen.clone();
        Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                    let mut seen = seen.lock().expect("lock");
                    seen.push((json, auth));
                    if seen.len() <= failures {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

fn webhook_config(url: String, max_attempts: u32) -> WebhookSettings {
    WebhookConfig {
        url,
        format: Default::default(),
        secret: None,
        headers: [("Authorization".to_owned(), "Bearer t0k3n".to_owned())].into(),
        timeout: Duration::from_secs(5),
        max_attempts,
        retry_delay: Duration::from_millis(20),
        queue: 10,
    }
    .build("webhooks[0]")
    .expect("valid")
}

#[tokio::test]
async fn webhook_retries_after_errors_and_logs_every_attempt() {
    let (url, seen) = receiver(2).await;
    let (ctx, store, metrics) = context();
    let hook = Webhook::new(
        "webhook-0".into(),
        &webhook_config(url, 5),
        jiff::tz::TimeZone::UTC,
    )
    .expect("client");
    let a = alert("0000000000000f01", AlertStatus::Firing);
    assert!(
        hook.deliver(&a.clone().into(), &ctx).await,
        "delivered on the third attempt"
    );

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 3);
    let (body, auth) = &seen[2];
    assert_eq!(auth, "Bearer t0k3n");
    assert_eq!(body["v"], 1);
    assert_eq!(body["id"], "0000000000000f01");
    assert_eq!(body["rule"], "node_offline");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["node"], "lz-cg-s001");
    assert_eq!(body["summary"], "lz-cg-s001 (城关区) is offline");
    assert!(body.get("ended_at").is_none());

    let log = store
        .notifications("0000000000000f01".parse().expect("alert id"))
        .await
        .expect("log");
    let attempts: Vec<_> = log
        .iter()
        .map(|n| (n.attempt, n.ok, n.error.clone()))
        .collect();
    assert_eq!(
        attempts,
        vec![
            (1, false, Some("HTTP 500 Internal Server Error".into())),
            (2, false, Some("HTTP 500 Internal Server Error".into())),
            (3, true, None),
        ]
    );
    assert!(log.iter().all(|n| n.output == "webhook-0"));
    let text = metrics.render();
    assert!(text.contains("alarmnet_notifications_sent_total{output=\"webhook-0\"} 1\n"));
}

#[tokio::test]
async fn webhook_gives_up_after_max_attempts_and_an_unreachable_receiver_is_logged() {
    let (url, seen) = receiver(usize::MAX).await;
    let (ctx, store, metrics) = context();
    let hook = Webhook::new(
        "webhook-1".into(),
        &webhook_config(url, 3),
        jiff::tz::TimeZone::UTC,
    )
    .expect("client");
    assert!(
        !hook
            .deliver(&alert("0000000000000f02", AlertStatus::Firing).into(), &ctx)
            .await
    );
    assert_eq!(seen.lock().expect("lock").len(), 3);
    assert_eq!(
        store
            .notifications("0000000000000f02".parse().expect("alert id"))
            .await
            .expect("log")
            .len(),
        3
    );
    assert!(
        metrics
            .render()
            .contains("alarmnet_notifications_failed_total{output=\"webhook-1\"} 1\n")
    );

    // Nobody listens on this port any more.
    let port = alarmnet_e2e::free_port();
    let hook = Webhook::new(
        "webhook-2".into(),
        &webhook_config(format!("http://127.0.0.1:{port}/x"), 2),
        jiff::tz::TimeZone::UTC,
    )
    .expect("client");
    assert!(
        !hook
            .deliver(&alert("0000000000000f03", AlertStatus::Firing).into(), &ctx)
            .await
    );
    let log = store
        .notifications("0000000000000f03".parse().expect("alert id"))
        .await
        .expect("log");
    assert_eq!(log.len(), 2);
    let error = log[0].error.clone().unwrap_or_default();
    assert!(error.starts_with("cannot connect"), "{error}");
}

#[tokio::test]
async fn webhook_task_delivers_in_order() {
    let (url, seen) = receiver(0).await;
    let (ctx, _store, _metrics) = context();
    let hook = Webhook::new(
        "webhook-0".into(),
        &webhook_config(url, 2),
        jiff::tz::TimeZone::UTC,
    )
    .expect("client");
    let (tx, rx) = alarmnet_collector::outputs::queue::channel(10);
    let task = tokio::spawn(hook.run(rx, ctx.clone()));
    for status in [AlertStatus::Firing, AlertStatus::Resolved] {
        assert!(matches!(
            tx.push(Notice::Alert(Arc::new(
                alert("0000000000000f04", status).into()
            ))),
            alarmnet_collector::outputs::Pushed::Queued
        ));
    }
    wait_for(
        Duration::from_secs(10),
        "two notifications received",
        || async { (seen.lock().expect("lock").len() == 2).then_some(()) },
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen[0].0["status"], "firing");
    assert_eq!(seen[1].0["status"], "resolved");
    assert!(seen[1].0["ended_at"].is_u64());
    ctx.shutdown.cancel();
    task.await.expect("task ends on shutdown");
}

#[tokio::test]
async fn alertmanager_receives_and_shows_the_alert_with_its_labels() {
    let am = Alertmanager::start().await;
    let (ctx, store, _metrics) = context();
    let config = AlertmanagerConfig {
        url: am.url(),
        resend_interval: Duration::from_secs(60),
        timeout: Duration::from_secs(5),
        max_attempts: 3,
        retry_delay: Duration::from_millis(50),
        generator_url: Some("http://127.0.0.1:8080/".into()),
        queue: 10,
    }
    .build()
    .expect("valid");
    let output = alertmanager::Alertmanager::new(&config).expect("client");
    let (tx, rx) = alarmnet_collector::outputs::queue::channel(10);
    let task = tokio::spawn(output.run(rx, ctx.clone()));
    let firing = alert("0000000000000f11", AlertStatus::Firing);
    assert!(matches!(
        tx.push(Notice::Alert(Arc::new(firing.clone().into()))),
        alarmnet_collector::outputs::Pushed::Queued
    ));

    let shown = wait_for(
        Duration::from_secs(15),
        "Alertmanager shows the alert",
        || async {
            let alerts = am.alerts().await;
            alerts.as_array().and_then(|a| {
                a.iter()
                    .find(|x| x["labels"]["alarmnet_id"] == "0000000000000f11")
                    .cloned()
            })
        },
    )
    .await;
    let labels = &shown["labels"];
    assert_eq!(labels["alertname"], "node_offline");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["region"], "lanzhou");
    assert_eq!(labels["site"], "lz-cg");
    assert_eq!(labels["node"], "lz-cg-s001");
    assert_eq!(labels["kind"], "siren");
    assert_eq!(
        shown["annotations"]["summary"],
        "lz-cg-s001 (城关区) is offline"
    );
    assert_eq!(shown["status"]["state"], "active");
    assert_eq!(shown["generatorURL"], "http://127.0.0.1:8080/");
    // Compare instants, not strings: Alertmanager drops trailing zeros of fractional seconds
    // (`.530` comes back as `.53`).
    let shown_start: jiff::Timestamp = shown["startsAt"]
        .as_str()
        .expect("startsAt")
        .parse()
        .expect("startsAt is RFC 3339");
    let sent_start: jiff::Timestamp = alertmanager::rfc3339(firing.started_at)
        .parse()
        .expect("we send RFC 3339");
    assert_eq!(shown_start, sent_start);

    // Resolving sets endsAt in the past: Alertmanager no longer shows it as active.
    assert!(matches!(
        tx.push(Notice::Alert(Arc::new(
            alert("0000000000000f11", AlertStatus::Resolved).into()
        ))),
        alarmnet_collector::outputs::Pushed::Queued
    ));
    wait_for(
        Duration::from_secs(15),
        "the alert is resolved in Alertmanager",
        || async {
            let alerts = am.alerts().await;
            let still_active = alerts.as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["labels"]["alarmnet_id"] == "0000000000000f11"
                        && x["status"]["state"] == "active"
                })
            });
            (!still_active).then_some(())
        },
    )
    .await;
    let log = store
        .notifications("0000000000000f11".parse().expect("alert id"))
        .await
        .expect("log");
    assert_eq!(log.len(), 2);
    assert!(log.iter().all(|n| n.ok && n.output == "alertmanager"));
    ctx.shutdown.cancel();
    task.await.expect("task ends on shutdown");
}

#[tokio::test]
async fn alertmanager_reposts_firing_alerts() {
    let am = Alertmanager::start().await;
    let (ctx, _store, _metrics) = context();
    let config = AlertmanagerConfig {
        url: am.url(),
        resend_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        max_attempts: 1,
        retry_delay: Duration::from_millis(50),
        generator_url: None,
        queue: 10,
    }
    .build()
    .expect("valid");
    let output = alertmanager::Alertmanager::new(&config).expect("client");
    let (tx, rx) = alarmnet_collector::outputs::queue::channel(10);
    let task = tokio::spawn(output.run(rx, ctx.clone()));
    // A resumed alert (notified before a restart) is not notified again, only re-posted.
    assert!(matches!(
        tx.push(Notice::Resume(Arc::new(alert(
            "0000000000000f12",
            AlertStatus::Firing,
        )))),
        alarmnet_collector::outputs::Pushed::Queued
    ));
    let first = wait_for(
        Duration::from_secs(15),
        "the resumed alert is re-posted",
        || async {
            let alerts = am.alerts().await;
            alerts.as_array().and_then(|a| {
                a.iter()
                    .find(|x| x["labels"]["alarmnet_id"] == "0000000000000f12")
                    .map(|x| x["updatedAt"].clone())
            })
        },
    )
    .await;
    wait_for(
        Duration::from_secs(15),
        "a later re-post updates it",
        || async {
            let alerts = am.alerts().await;
            alerts.as_array().and_then(|a| {
                a.iter()
                    .find(|x| {
                        x["labels"]["alarmnet_id"] == "0000000000000f12" && x["updatedAt"] != first
                    })
                    .map(|_| ())
            })
        },
    )
    .await;
    ctx.shutdown.cancel();
    task.await.expect("task ends on shutdown");
}

/// A DingTalk-style robot: checks the signature in the query (`timestamp`, `sign` =
/// base64(HmacSHA256(secret, "{timestamp}\n{secret}"))) and the markdown body the way the
/// real service does, answering HTTP 200 with `errcode` 0 or 310000 ("sign not match").
async fn dingtalk_robot(secret: &'static str) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    use axum::extract::Query;
    use base64::Engine as _;
    let seen: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = {
        let seen = seen.clone();
        Router::new().route(
            "/robot/send",
            post(
                move |Query(q): Query<std::collections::HashMap<String, String>>, body: String| {
                    let seen = seen.clone();
                    async move {
                        let ts: u64 = q.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .expect("clock")
                            .as_millis() as u64;
                        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
                        let want = base64::engine::general_purpose::STANDARD
                            .encode(ring::hmac::sign(&key, format!("{ts}\n{secret}").as_bytes()));
                        let json: serde_json::Value =
                            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                        let fresh = now.abs_diff(ts) < 3_600_000;
                        let token = q.get("access_token").map(String::as_str) == Some("T0KEN");
                        let signed = q.get("sign") == Some(&want);
                        let shaped = json["msgtype"] == "markdown"
                            && json["markdown"]["title"].is_string()
                            && json["markdown"]["text"].is_string();
                        if token && fresh && signed && shaped {
                            seen.lock().expect("lock").push(json);
                            axum::Json(serde_json::json!({"errcode": 0, "errmsg": "ok"}))
                        } else {
                            axum::Json(
                                serde_json::json!({"errcode": 310000, "errmsg": "sign not match"}),
                            )
                        }
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/robot/send?access_token=T0KEN"), seen)
}

#[tokio::test]
async fn dingtalk_robot_gets_signed_markdown_and_a_refusal_is_a_failed_attempt() {
    use alarmnet_collector::outputs::chat::WebhookFormat;
    let (url, seen) = dingtalk_robot("SECright").await;
    let (ctx, store, _metrics) = context();
    let shanghai = jiff::tz::TimeZone::get("Asia/Shanghai").expect("zone");

    let mut config = webhook_config(url.clone(), 1);
    config.format = WebhookFormat::Dingtalk;
    config.secret = Some("SECright".into());
    let hook = Webhook::new("robot-ok".into(), &config, shanghai.clone()).expect("client");
    assert!(
        hook.deliver(&alert("0000000000000f21", AlertStatus::Firing).into(), &ctx)
            .await
    );
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0]["markdown"]["title"], "【告警·紧急】节点离线");
        let text = seen[0]["markdown"]["text"].as_str().expect("text");
        assert!(text.contains("lanzhou / lz-cg / lz-cg-s001"), "{text}");
        assert!(text.contains("lz-cg-s001 (城关区) is offline"), "{text}");
    }

    // The wrong secret: HTTP 200 with an error code, which must count as a failure.
    config.secret = Some("SECwrong".into());
    let hook = Webhook::new("robot-bad".into(), &config, shanghai).expect("client");
    assert!(
        !hook
            .deliver(&alert("0000000000000f22", AlertStatus::Firing).into(), &ctx)
            .await
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);
    let log = store
        .notifications("0000000000000f22".parse().expect("alert id"))
        .await
        .expect("log");
    assert_eq!(log.len(), 1, "{log:?}");
    let error = format!("{:?}", log[0]);
    assert!(error.contains("robot refused: code 310000"), "{error}");
}

#[test]
fn webhook_debug_hides_the_secret_and_the_robot_token() {
    let mut config = webhook_config(
        "http://user:pw@127.0.0.1:9/robot/send?access_token=T0KEN".into(),
        1,
    );
    config.secret = Some("SECright".into());
    let debug = format!("{config:?}");
    for secret in ["SECright", "T0KEN", "pw", "t0k3n"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}
