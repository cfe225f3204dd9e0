//! Tests of the API's hardening: event-stream tickets, coordinates hidden from anonymous
//! readers, caps on report windows and metric names, the report limit and request timeouts.

use std::time::Duration;

use serde_json::Value;

use super::tests::{OPERATOR, Server, VIEWER};
use super::{DEFAULT_MAX_REPORTS, EventKind};

async fn post_ticket(s: &Server, token: Option<&str>) -> (u16, Value) {
    let (status, body, _) = s
        .send(reqwest::Method::POST, "/api/v1/events/ticket", token, None)
        .await;
    (status, body)
}

async fn open_stream(s: &Server, query: &str) -> reqwest::Response {
    s.client
        .get(s.url(&format!("/api/v1/events{query}")))
        .send()
        .await
        .expect("stream")
}

#[tokio::test]
async fn event_stream_tickets_are_single_use_and_keep_the_token_out_of_urls() {
    let s = Server::start(false).await;
    assert_eq!(post_ticket(&s, None).await.0, 401);
    assert_eq!(post_ticket(&s, Some("not-a-known-token-0000")).await.0, 401);
    let (status, body) = post_ticket(&s, Some(VIEWER)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["expires_in"], 30);
    let ticket = body["ticket"].as_str().expect("ticket").to_owned();
    assert!(!ticket.contains(VIEWER));

    let r = open_stream(&s, &format!("?ticket={ticket}&types=alert")).await;
    assert_eq!(r.status(), 200);
    let mut reader = super::tests::SseReader::new(r);
    for _ in 0..500 {
        if s.state.events.subscribers() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.state
        .events
        .publish(EventKind::Alert, "{\"id\":\"t1\"}".into());
    let e = reader.next().await.expect("an event");
    assert_eq!(e.event.as_deref(), Some("alert"));

    // Used once: a second connection with it is refused, as is a made-up one.
    assert_eq!(
        open_stream(&s, &format!("?ticket={ticket}")).await.status(),
        401
    );
    assert_eq!(open_stream(&s, "?ticket=nope").await.status(), 401);
    // A bad ticket is not rescued by a good token beside it.
    let r = open_stream(&s, &format!("?ticket=nope&access_token={OPERATOR}")).await;
    assert_eq!(r.status(), 401);
    // The token in the URL still works during its deprecation, and the answer says so.
    let r = open_stream(&s, &format!("?access_token={VIEWER}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["deprecation"], "true");
    assert_eq!(
        r.headers()["link"],
        "</api/v1/events/ticket>; rel=\"alternate\""
    );
    // A ticket's stream is not deprecated.
    let (_, body) = post_ticket(&s, Some(VIEWER)).await;
    let ticket = body["ticket"].as_str().expect("ticket");
    let r = open_stream(&s, &format!("?ticket={ticket}")).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("deprecation").is_none());
}

#[tokio::test]
async fn anonymous_readers_do_not_see_coordinates() {
    let s = Server::start(true).await;
    let (status, anon) = s.get("/api/v1/nodes/lz-cg-s001", None).await;
    assert_eq!(status, 200, "{anon}");
    assert!(
        anon.get("lat").is_none() && anon.get("lon").is_none(),
        "{anon}"
    );
    assert_eq!(anon["model"], "WS-600");
    let (status, known) = s.get("/api/v1/nodes/lz-cg-s001", Some(VIEWER)).await;
    assert_eq!(status, 200);
    assert_eq!(known["lat"], 36.06);
    assert_eq!(known["lon"], 103.83);
    // Anonymous callers may take a ticket too (the stream is open to them anyway).
    assert_eq!(post_ticket(&s, None).await.0, 201);
}

#[tokio::test]
async fn long_report_windows_and_long_name_lists_are_refused() {
    let s = Server::start(false).await;
    for (path, param) in [
        ("/api/v1/uptime?from=2024-01-01&to=2026-01-01", "from"),
        ("/api/v1/uptime?since=401d", "since"),
        ("/api/v1/readiness/history?since=500d", "since"),
    ] {
        let (status, body) = s.get(path, Some(VIEWER)).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["param"], param, "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("400 days")),
            "{body}"
        );
    }
    // A calendar year is fine.
    assert_eq!(s.get("/api/v1/uptime?year=2025", Some(VIEWER)).await.0, 200);
    assert_eq!(
        s.get("/api/v1/uptime?since=400d", Some(VIEWER)).await.0,
        200
    );

    let many: Vec<String> = (0..65).map(|i| format!("m{i}")).collect();
    let (status, body) = s
        .get(
            &format!("/api/v1/nodes/lz-cg-s001/metrics?names={}", many.join(",")),
            Some(VIEWER),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "names");
    let (status, _) = s
        .get(
            &format!(
                "/api/v1/nodes/lz-cg-s001/metrics?names={}",
                many[..64].join(",")
            ),
            Some(VIEWER),
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn reports_beyond_the_limit_are_busy_and_abandoned_work_stops() {
    let s = Server::start(false).await;
    let slots: Vec<_> = (0..DEFAULT_MAX_REPORTS)
        .map(|_| s.state.reports.start().expect("a slot"))
        .collect();
    for path in ["/api/v1/uptime", "/api/v1/readiness/history"] {
        let (status, body, headers) = s.send(reqwest::Method::GET, path, Some(VIEWER), None).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["error"]["code"], "busy");
        assert_eq!(headers["retry-after"], "5");
    }
    // Lists are not reports: they still answer.
    assert_eq!(s.get("/api/v1/nodes", Some(VIEWER)).await.0, 200);
    let abandoned = slots[0].abandoned();
    assert!(abandoned.check().is_ok());
    drop(slots);
    assert!(matches!(
        abandoned.check(),
        Err(crate::store::StoreError::Abandoned)
    ));
    assert_eq!(s.get("/api/v1/uptime", Some(VIEWER)).await.0, 200);
}

#[tokio::test]
async fn slow_requests_time_out_with_a_503() {
    let s = Server::start(false).await;
    let state = s
        .state
        .clone()
        .with_request_timeout(Duration::from_millis(100));
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::identify,
        ))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::http::serve(listener, app, stop.clone()));
    let started = std::time::Instant::now();
    let r = s
        .client
        .get(format!("http://{addr}/slow"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(10));
    stop.cancel();
}
