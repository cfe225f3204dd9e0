//! `GET /api/v1/readiness` (the rollups the core keeps current, read from the
//! [`Board`](crate::readiness::Board)) and the readiness JSON of nodes and events.

use alarmnet_protocol::{Name, NodeId, RegionId, SiteId};
use axum::Json;
use axum::extract::{Query, State};
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use super::handlers::id_param;
use super::{ApiState, Params};
use crate::readiness::Reason;
use crate::readiness::history::HistoryBuilder;
use crate::readiness::tracker::{Counts, Rollup};
use crate::store::{NodeQuery, NodeReadiness};
use crate::uptime::{GroupBy, Stamp};

/// Reasons as JSON: `{"code": ..., parameters}`, times (`last`) as RFC 3339 in `tz`.
pub(crate) fn reasons_json(reasons: &[Reason], tz: &TimeZone) -> Value {
    Value::Array(
        reasons
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Reason::TestOverdue { last, .. } = r
                    && let Value::Object(m) = &mut v
                {
                    m.insert("last".into(), json!(Stamp::new(*last, tz)));
                }
                v
            })
            .collect(),
    )
}

/// A node's `readiness` member: `{"state", "reasons", "since"}`, or null before its first
/// derivation.
pub(crate) fn node_json(r: Option<&NodeReadiness>, tz: &TimeZone) -> Value {
    match r {
        Some(r) => json!({
            "state": r.state.as_str(),
            "reasons": reasons_json(&r.reasons, tz),
            "since": Stamp::new(r.since, tz),
        }),
        None => Value::Null,
    }
}

fn counts_json(c: &Counts) -> Value {
    json!({
        "ready": c.ready,
        "degraded": c.degraded,
        "not_ready": c.not_ready,
        "maintenance": c.maintenance,
        "total": c.total(),
    })
}

/// One rollup: all nodes, the counted kinds (`sirens`), and the ready share of those.
pub(crate) fn rollup_json(r: &Rollup) -> Value {
    json!({
        "nodes": counts_json(&r.nodes),
        "sirens": counts_json(&r.sirens),
        "ready_pct": r.sirens.ready_pct(),
    })
}

fn with(mut v: Value, key: &str, id: &str) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert(key.into(), json!(id));
    }
    v
}

/// `GET /api/v1/readiness[?region=]`: the network and every region; with `region=`, that
/// region and its sites.
pub(super) async fn readiness(
    State(s): State<ApiState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let region = id_param(&p, "region", RegionId::new)?;
    let board = s.readiness.snapshot();
    let mut body = json!({
        "at": Stamp::new(s.now(), &s.tz),
        "network": rollup_json(&board.network),
    });
    let regions: Vec<Value> = board
        .regions
        .iter()
        .filter(|(id, _)| region.as_ref().is_none_or(|r| r == *id))
        .map(|(id, r)| with(rollup_json(r), "region", id.as_str()))
        .collect();
    if let Some(region) = &region {
        if regions.is_empty() {
            return Err(ApiError::not_found(
                "region",
                format!("no region {region} with nodes"),
            ));
        }
        let sites: Vec<Value> = board
            .sites
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|((_, site), v)| with(rollup_json(v), "site", site.as_str()))
            .collect();
        body["sites"] = Value::Array(sites);
    }
    body["regions"] = Value::Array(regions);
    Ok(Json(body))
}

/// `GET /api/v1/readiness/history`: the share of time ready, degraded and not ready over a
/// window (the uptime report's window parameters and time zone), grouped `by=` node (the
/// default), site, region, kind or network, filtered by `region=`, `site=`, `node=`,
/// `kind=`.
pub(super) async fn history(
    State(s): State<ApiState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let by = match p.get("by") {
        Some(v) => v.parse::<GroupBy>()?,
        None => GroupBy::Node,
    };
    let nodes = NodeQuery {
        region: id_param(&p, "region", RegionId::new)?,
        site: id_param(&p, "site", SiteId::new)?,
        node: id_param(&p, "node", NodeId::new)?,
        kind: id_param(&p, "kind", Name::new)?,
        states: Vec::new(),
        readiness: None,
    };
    let now = s.now();
    let window = p.report_window(now, &s.tz)?;
    // The future has no history yet.
    let (from, until) = (window.from(), window.to().min(now).max(window.from()));
    let slot = s.reports.start()?;
    let abandoned = slot.abandoned();
    let rows = s
        .store
        .read(move |db| {
            let mut b = HistoryBuilder::new(by, from, until);
            db.each_node_readiness(&nodes, (from, until), |path, kind, steps| {
                abandoned.check()?;
                b.add_node(path, kind, steps);
                Ok(())
            })?;
            Ok(b.finish())
        })
        .await?;
    drop(slot);
    Ok(Json(json!({
        "from": Stamp::new(window.from(), &s.tz),
        "to": Stamp::new(window.to(), &s.tz),
        "by": by.as_str(),
        "rows": rows,
    })))
}
