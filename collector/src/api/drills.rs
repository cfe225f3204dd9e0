//! `/api/v1/drills`: start (operator), list, show with per-node results, cancel (operator).
//! Starts and cancels go to the drills task ([`crate::drills::DrillControl`]), the single
//! owner of live drills; reads come from the store, which the task keeps current (at most
//! [`crate::drills::task::POLL`] behind).

use std::time::Duration;

use alarmnet_protocol::{CmdId, Name};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use super::handlers::{Page, body, caller};
use super::{ApiState, Params};
use crate::drills::{
    DrillControl, DrillError, DrillMeta, DrillSpec, MAX_LISTED_NODES, NodeResult, Outcome,
    Selector, Status,
};
use crate::store::{NodeKey, TimeKey};
use crate::uptime::{Stamp, parse_duration};

type Raw = Query<Vec<(String, String)>>;

/// A drill as the API and the event stream show it.
pub(crate) fn drill_json(m: &DrillMeta, tz: &TimeZone) -> Value {
    let t = &m.tally;
    json!({
        "id": m.id.as_str(),
        "test": m.test.as_str(),
        "selector": m.selector,
        "status": m.status.as_str(),
        "started_at": Stamp::new(m.started_at, tz),
        "deadline": Stamp::new(m.deadline, tz),
        "closed_at": m.closed_at.map(|c| Stamp::new(c, tz)),
        "started_by": m.started_by,
        "cancelled_by": m.cancelled_by,
        "schedule": m.schedule,
        "tally": {
            "asked": t.asked,
            "answered": t.answered(),
            "waiting": t.waiting,
            "passed": t.passed,
            "failed": t.failed,
            "errored": t.errored,
            "silent": t.silent,
            "late": t.late,
        },
        "sounding_rate_pct": (t.sounding_rate() * 10_000.0).round() / 100.0,
    })
}

/// One asked node's result.
pub(crate) fn result_json(r: &NodeResult, tz: &TimeZone) -> Value {
    let metrics = r
        .metrics
        .as_deref()
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
        .unwrap_or_else(|| json!({}));
    json!({
        "node": r.path.node.as_str(),
        "region": r.path.region.as_str(),
        "site": r.path.site.as_str(),
        "kind": r.kind.as_str(),
        "outcome": r.outcome.as_str(),
        "result": r.result.map(|x| match x {
            alarmnet_protocol::TestResult::Pass => "pass",
            alarmnet_protocol::TestResult::Fail => "fail",
            alarmnet_protocol::TestResult::Error => "error",
        }),
        "received_at": r.received_at.map(|at| Stamp::new(at, tz)),
        "duration_ms": r.duration_ms,
        "message": r.message,
        "metrics": metrics,
    })
}

fn drills_of(s: &ApiState) -> ApiResult<&DrillControl> {
    if let crate::ha::Role::Standby { active } = &*s.roles.borrow() {
        return Err(ApiError::unavailable(format!(
            "this collector is the standby: drills run on the active collector{}",
            active
                .as_ref()
                .map(|a| format!(" ({a})"))
                .unwrap_or_default()
        )));
    }
    s.drills
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("drills are not running in this collector"))
}

fn drill_error(e: DrillError) -> ApiError {
    match e {
        e @ DrillError::NoMatch => ApiError::bad_body("selector", e.to_string()),
        e @ DrillError::UnknownNodes(_) => ApiError::bad_body("selector.nodes", e.to_string()),
        DrillError::NotFound(id) => ApiError::not_found("id", format!("no drill {id}")),
        e @ DrillError::NotOpen { .. } => ApiError::conflict("not_open", e.to_string()),
        DrillError::Unavailable(m) => ApiError::unavailable(m),
        e @ DrillError::Claimed => ApiError::conflict("claimed", e.to_string()),
    }
}

fn drill_id(id: &str) -> ApiResult<CmdId> {
    CmdId::new(id).map_err(|_| {
        ApiError::bad_param(
            "id",
            id,
            "expected a drill id of 1 to 64 letters, digits, - or _",
        )
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    #[serde(default)]
    selector: Selector,
    test: Option<String>,
    deadline: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn start(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let c = caller(&c);
    let by = c.operator("starting drills")?.to_owned();
    let drills = drills_of(&s)?;
    let req: StartRequest = body(&bytes)?;
    let test = Name::new(req.test.unwrap_or_else(|| "silent".into()))
        .map_err(|e| ApiError::bad_body("test", format!("test: {e}")))?;
    let config = &s.drill_limits;
    let deadline = match &req.deadline {
        None => config.default_deadline,
        Some(d) => parse_duration("deadline", d)
            .map_err(|e| ApiError::bad_body("deadline", e.to_string()))?,
    };
    if deadline < Duration::from_secs(1) || deadline > config.max_deadline {
        return Err(ApiError::bad_body(
            "deadline",
            format!(
                "deadline must be from 1s to {}",
                humantime::format_duration(config.max_deadline)
            ),
        ));
    }
    if req
        .selector
        .nodes
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.len() > MAX_LISTED_NODES)
    {
        return Err(ApiError::bad_body(
            "selector.nodes",
            format!("list 1 to {MAX_LISTED_NODES} nodes, or leave nodes out"),
        ));
    }
    let spec = DrillSpec {
        selector: req.selector,
        test,
        deadline,
    };
    let started = drills
        .start(spec, by, req.dry_run)
        .await
        .map_err(drill_error)?;
    let Some(drill) = started.drill else {
        return Ok(Json(json!({"dry_run": true, "selected": started.selected})).into_response());
    };
    let mut v = drill_json(&drill, &s.tz);
    if let Value::Object(m) = &mut v {
        m.insert("selected".into(), started.selected.into());
    }
    let location = format!("/api/v1/drills/{}", drill.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(v)).into_response())
}

pub(super) async fn list(State(s): State<ApiState>, Query(raw): Raw) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let status = p.parse(
        "status",
        "expected open, completed, expired or cancelled",
        Status::from_name,
    )?;
    let page = Page::<TimeKey>::from(&p, 'd')?;
    let (after, limit) = (page.after, page.limit);
    let rows = s
        .store
        .read(move |db| db.drill_page(status, after.as_ref(), limit))
        .await?;
    Ok(page.answer(rows, |d| drill_json(d, &s.tz), json!({})))
}

pub(super) async fn show(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(raw): Raw,
) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let id = drill_id(&id)?;
    let outcomes = p
        .list(
            "outcome",
            "expected outcomes among waiting, pass, fail, error, silent, late",
            Outcome::from_name,
        )?
        .unwrap_or_default();
    let page = Page::<NodeKey>::from(&p, 'r')?;
    let (after, limit) = (page.after.clone(), page.limit);
    let look = id.clone();
    let (drill, rows) = s
        .store
        .read(move |db| {
            let Some(drill) = db.drill(look.as_str())? else {
                return Ok(None);
            };
            let rows = db.drill_results(&look, &outcomes, after.as_ref(), limit)?;
            Ok(Some((drill, rows)))
        })
        .await?
        .ok_or_else(|| ApiError::not_found("id", format!("no drill {id}")))?;
    let extra = drill_json(&drill.meta, &s.tz);
    Ok(page.answer(rows, |r| result_json(r, &s.tz), json!({"drill": extra})))
}

pub(super) async fn cancel(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller(&c);
    let by = c.operator("cancelling drills")?.to_owned();
    let drills = drills_of(&s)?;
    let id = drill_id(&id)?;
    let meta = drills
        .cancel(id.as_str().to_owned(), by)
        .await
        .map_err(drill_error)?;
    Ok(Json(drill_json(&meta, &s.tz)))
}

#[cfg(test)]
pub(crate) mod tests;
