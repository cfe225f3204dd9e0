//! docs/openapi.yaml against the running router: every documented path and method is
//! routed and answers a documented status, and JSON answers (and event data) carry what
//! their schemas require, with the documented types and enum values.

use serde_json::{Value, json};

use super::tests::{OPERATOR, Server, SseReader};
use crate::model::{Cause, Liveness, Transition};

pub(super) fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    serde_yaml_ng::from_str(&text).expect("openapi.yaml parses")
}

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let target = root
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(root, target)
        }
        None => schema,
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

/// A small JSON Schema check: $ref, allOf, oneOf, type, enum, const, required,
/// properties, additionalProperties (schemas), items, and `format: date-time`.
fn check(root: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(root, schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(root, s, v, at, errors);
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = one
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                check(root, s, v, at, &mut e);
                e.is_empty()
            })
            .count();
        if matching == 0 {
            errors.push(format!("{at}: {v} matches none of oneOf"));
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t, v)) {
        errors.push(format!("{at}: {v} is not of type {types:?}"));
        return;
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !v.is_null()
        && !e.contains(v)
    {
        errors.push(format!("{at}: {v} is not one of {e:?}"));
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        errors.push(format!("{at}: {v} is not {c}"));
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time")
        && let Some(s) = v.as_str()
        && s.parse::<jiff::Timestamp>().is_err()
    {
        errors.push(format!("{at}: {s:?} is not an RFC 3339 time"));
    }
    if let Some(obj) = v.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = r.as_str().unwrap_or_default();
            if !obj.contains_key(key) {
                errors.push(format!("{at}: required property `{key}` missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, value) in obj {
            if let Some(p) = props.and_then(|p| p.get(k)) {
                check(root, p, value, &format!("{at}.{k}"), errors);
            } else if let Some(extra) = schema.get("additionalProperties")
                && extra.is_object()
            {
                check(root, extra, value, &format!("{at}.{k}"), errors);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, value) in arr.iter().enumerate() {
            check(root, items, value, &format!("{at}[{i}]"), errors);
        }
    }
}

pub(super) fn validate(root: &Value, schema: &Value, v: &Value, what: &str) {
    let mut errors = Vec::new();
    check(root, schema, v, what, &mut errors);
    assert!(
        errors.is_empty(),
        "{what} breaks the contract:\n{}\n{v:#}",
        errors.join("\n")
    );
}

/// A concrete request for a documented path and method on the test data.
fn concrete(path: &str, method: &str) -> String {
    let p = path.replace("{node}", "lz-cg-s001");
    match (p.as_str(), method) {
        ("/api/v1/alerts/{id}/ack", _) => p.replace("{id}", "000000000000a005"),
        ("/api/v1/silences/{id}", _) => p.replace("{id}", "0000000000005a01"),
        ("/api/v1/drills/{id}" | "/api/v1/drills/{id}/cancel", _) => {
            p.replace("{id}", super::drills::tests::SEEDED_DRILL)
        }
        ("/api/v1/uptime", _) => format!("{p}?month=2026-10&node=lz-cg-s001"),
        ("/api/v1/readiness/history", _) => format!("{p}?month=2026-10"),
        _ => p,
    }
}

#[tokio::test]
async fn every_documented_operation_is_served_as_documented() {
    let root = spec();
    let s = Server::start(false).await;
    // Some items in every list.
    let hb: alarmnet_protocol::Heartbeat = serde_json::from_value(json!({
        "v": 1, "boot": "boot0001", "seq": 3, "ts": super::tests::now(),
        "metrics": {"battery_v": 12.5}, "checks": {"ok": 2, "warning": 0, "critical": 0, "unknown": 0}
    }))
    .expect("heartbeat");
    let node = alarmnet_protocol::NodeId::new("lz-cg-s001").expect("id");
    s.state.recent.record(&node, super::tests::now(), hb);
    let paths = root["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let url = s.url(&concrete(path, method));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let mut req = s.client.request(m, &url).bearer_auth(OPERATOR);
            if let Some(example) = op.pointer("/requestBody/content/application~1json/example") {
                req = req.json(example);
            }
            let r = req.send().await.expect("request");
            let status = r.status().as_u16();
            let documented = &op["responses"][status.to_string()];
            assert!(
                documented.is_object(),
                "{method} {path}: status {status} is not documented"
            );
            let content_type = r
                .headers()
                .get("content-type")
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let response = resolve(&root, documented);
            if path == "/api/v1/events" {
                assert!(
                    content_type.starts_with("text/event-stream"),
                    "{content_type}"
                );
                checked += 1;
                continue;
            }
            let body = r.text().await.expect("body");
            if let Some(schema) = response.pointer("/content/application~1json/schema") {
                assert!(
                    content_type.starts_with("application/json"),
                    "{method} {path}: {content_type}"
                );
                let v: Value = serde_json::from_str(&body).expect("JSON body");
                validate(&root, schema, &v, &format!("{method} {path} ({status})"));
            }
            // /readyz may answer its documented 503 here (no broker): the rest must succeed.
            if path != "/readyz" {
                assert!(
                    (200..300).contains(&status),
                    "{method} {path}: {status} {body}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} operations in the spec?");

    // Documented errors have the Error shape.
    let error = json!({"$ref": "#/components/schemas/Error"});
    for (url, token) in [
        ("/api/v1/uptime?month=2026-13", Some(OPERATOR)),
        ("/api/v1/nodes", None),
        ("/api/v1/nodes/nope", Some(OPERATOR)),
    ] {
        let mut req = s.client.get(s.url(url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let v: Value = req
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        validate(&root, &error, &v, url);
    }
}

#[tokio::test]
async fn event_data_follows_the_documented_schemas() {
    let root = spec();
    let s = Server::start(true).await;
    let hub = s.state.events.clone();
    let r = s
        .client
        .get(s.url("/api/v1/events"))
        .send()
        .await
        .expect("stream");
    let mut events = SseReader::new(r);
    while hub.subscribers() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let path = alarmnet_protocol::NodePath::new(
        alarmnet_protocol::RegionId::new("tianshui").expect("id"),
        alarmnet_protocol::SiteId::new("ts-a").expect("id"),
        alarmnet_protocol::NodeId::new("ts-a-s001").expect("id"),
    );
    let t = Transition {
        node: path.node.clone(),
        from: Liveness::Online,
        to: Liveness::Offline,
        at: super::tests::now(),
        cause: Cause::Timeout,
    };
    hub.publish_state(
        &t,
        &path,
        &alarmnet_protocol::Name::new("siren").expect("kind"),
        None,
    );
    let n: alarmnet_protocol::AlertNotification = serde_json::from_value(json!({
        "v": 1, "id": "a1", "rule": "node_offline", "severity": "critical", "status": "firing",
        "node": "ts-a-s001", "started_at": 1, "summary": "offline"
    }))
    .expect("notification");
    hub.publish_alert(&n);
    s.send(
        reqwest::Method::POST,
        "/api/v1/alerts/000000000000a005/ack",
        Some(OPERATOR),
        None,
    )
    .await;
    // A drill started over the API announces itself on the stream.
    let (status, _, _) = s
        .send(
            reqwest::Method::POST,
            "/api/v1/drills",
            Some(OPERATOR),
            Some(json!({"selector": {"region": "tianshui"}})),
        )
        .await;
    assert_eq!(status, 201);
    for schema in ["StateEvent", "AlertNotification", "AckEvent", "DrillEvent"] {
        let e = events.next().await.expect("event");
        let v: Value = serde_json::from_str(&e.data).expect("json");
        validate(
            &root,
            &json!({"$ref": format!("#/components/schemas/{schema}")}),
            &v,
            schema,
        );
    }
}
