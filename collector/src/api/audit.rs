//! The audit log's API side: [`record_writes`] records every write request to `/api/v1`
//! (what was asked, by whom, from where, and the status answered), and `GET
//! /api/v1/audit` lists the log for operators.
//!
//! Design: one middleware around every write route rather than a line in each handler, so
//! a refusal anywhere (unknown token, viewer role, bad body, conflict, unavailable core)
//! is recorded as surely as a success, and a new write route is audited without anyone
//! remembering to. The entry is committed after the action's own commit and before the
//! answer leaves: a client that saw its action succeed can find it in the log.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Extension, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::handlers::{Page, caller, window};
use super::{ApiState, Params};
use crate::audit::{AuditEntry, Outcome, client_address};
use crate::http::Peer;
use crate::store::{AuditQuery, TimeKey};
use crate::uptime::Stamp;

/// The longest request body a write may have (axum's own default for `Bytes`).
const MAX_BODY: usize = 2 * 1024 * 1024;

/// How much of a request body the log keeps.
const KEPT_BODY: usize = 2048;

/// The action and target a write request asks for, from its method and path under
/// `/api/v1` (the target is the id in the path, when there is one).
pub(crate) fn action_of(method: &Method, path: &str) -> (&'static str, Option<String>) {
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let id = |s: &str| Some(s.chars().take(128).collect::<String>());
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["alerts", a, "ack"]) => ("alert.ack", id(a)),
        ("POST", ["silences"]) => ("silence.add", None),
        ("DELETE", ["silences", s]) => ("silence.end", id(s)),
        ("POST", ["drills"]) => ("drill.start", None),
        ("POST", ["drills", d, "cancel"]) => ("drill.cancel", id(d)),
        _ => ("write", id(path)),
    }
}

fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Who is asking, as the log names them: the token's name and role.
fn who(state: &ApiState, headers: &axum::http::HeaderMap) -> (Option<String>, &'static str) {
    match state.auth.identify(headers, None) {
        Ok(Caller::Token { name, role }) => (Some(name), role.as_str()),
        Ok(Caller::Anonymous) => (None, "anonymous"),
        Err(_) if headers.contains_key(header::AUTHORIZATION) => (None, "unknown_token"),
        Err(_) => (None, "anonymous"),
    }
}

/// The request body as the log keeps it: JSON as JSON, anything else as text, shortened.
fn kept_body(bytes: &Bytes) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    if bytes.len() <= KEPT_BODY
        && let Ok(v) = serde_json::from_slice::<Value>(bytes)
    {
        return v;
    }
    let text = String::from_utf8_lossy(bytes);
    let mut short: String = text.chars().take(KEPT_BODY).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    Value::String(short)
}

/// Records every write request of `/api/v1` (but the event-stream ticket, which reads)
/// in the audit log, with the status it was answered.
pub(super) async fn record_writes(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if !is_write(&method) || path.ends_with("/events/ticket") {
        return next.run(request).await;
    }
    let at = state.now();
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(addr))| *addr);
    let peer = client_address(peer, request.headers(), &state.trusted_proxies);
    let (actor, role) = who(&state, request.headers());
    let (parts, body) = request.into_parts();
    let (response, asked) = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let asked = kept_body(&bytes);
            let response = next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
            (response, asked)
        }
        Err(_) => (
            ApiError::bad_body("body", format!("the body is larger than {MAX_BODY} bytes"))
                .into_response(),
            Value::Null,
        ),
    };
    let status = response.status();
    let (action, mut target) = action_of(&method, &path);
    // A new silence or drill: its id is in the answer's Location.
    if let Some(location) = response.headers().get(header::LOCATION)
        && let Ok(location) = location.to_str()
    {
        target = location.rsplit('/').next().map(str::to_owned);
    }
    let (response, message) = if status.is_success() {
        (response, None)
    } else {
        refusal_message(response).await
    };
    let mut detail = serde_json::Map::new();
    if !asked.is_null() {
        detail.insert("request".into(), asked);
    }
    if let Some(m) = message {
        detail.insert("message".into(), Value::String(m));
    }
    let entry = AuditEntry {
        id: 0,
        at,
        actor,
        role: role.to_owned(),
        peer,
        action: action.to_owned(),
        target,
        outcome: Outcome::of_status(status.as_u16()),
        status: Some(status.as_u16()),
        detail: (!detail.is_empty()).then(|| Value::Object(detail).to_string()),
    };
    if let Err(e) = state.store.call(move |db| db.record_audit(&entry)).await {
        tracing::error!(error = %e, action, "cannot record an operator action in the audit log");
    }
    response
}

/// The error answer's message (error answers are small JSON bodies), and the answer
/// rebuilt unchanged.
async fn refusal_message(response: Response) -> (Response, Option<String>) {
    let (parts, body) = response.into_parts();
    match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(bytes) => {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
            (Response::from_parts(parts, Body::from(bytes)), message)
        }
        Err(_) => (
            (StatusCode::INTERNAL_SERVER_ERROR, "unreadable answer").into_response(),
            None,
        ),
    }
}

/// An entry as the API shows it.
pub(crate) fn entry_json(e: &AuditEntry, s: &ApiState) -> Value {
    json!({
        "id": e.id,
        "at": Stamp::new(e.at, &s.tz),
        "actor": e.actor,
        "role": e.role,
        "peer": e.peer,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome.as_str(),
        "status": e.status,
        "detail": e.detail.as_deref().and_then(|d| serde_json::from_str::<Value>(d).ok()),
    })
}

/// `GET /api/v1/audit` (operators): `since` or `from`/`to`, `actor`, `action`, `outcome`,
/// `limit`/`cursor`; newest first.
pub(super) async fn list(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    caller(&c).operator("reading the audit log")?;
    let p = Params::new(raw);
    let text = |name: &str| {
        p.parse(name, "expected 1 to 128 characters", |v| {
            (v.chars().count() <= 128).then(|| v.to_owned())
        })
    };
    let q = AuditQuery {
        window: window(&p, &s, None)?,
        actor: text("actor")?,
        action: text("action")?,
        outcome: p.parse(
            "outcome",
            "expected success, refused or failed",
            Outcome::from_name,
        )?,
    };
    let page = Page::<TimeKey>::from(&p, 'u')?;
    let (after, limit) = (page.after, page.limit);
    let rows = s
        .store
        .read(move |db| db.audit_page(&q, after.as_ref(), limit))
        .await?;
    Ok(page.answer(rows, |e| entry_json(e, &s), json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_targets_of_write_paths() {
        let post = Method::POST;
        assert_eq!(
            action_of(&post, "/api/v1/alerts/ab12/ack"),
            ("alert.ack", Some("ab12".into()))
        );
        assert_eq!(action_of(&post, "/api/v1/silences"), ("silence.add", None));
        assert_eq!(
            action_of(&Method::DELETE, "/api/v1/silences/s1"),
            ("silence.end", Some("s1".into()))
        );
        assert_eq!(action_of(&post, "/api/v1/drills"), ("drill.start", None));
        assert_eq!(
            action_of(&post, "/api/v1/drills/d1/cancel"),
            ("drill.cancel", Some("d1".into()))
        );
        assert_eq!(
            action_of(&Method::PUT, "/api/v1/nodes/x"),
            ("write", Some("/nodes/x".into()))
        );
    }
}
