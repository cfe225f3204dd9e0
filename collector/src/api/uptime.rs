//! `GET /api/v1/uptime`: reads the nodes, their transitions around the window and the
//! silences in one store call, then computes the report off the async workers.

use alarmnet_protocol::{Name, NodeId, RegionId, SiteId};
use axum::Json;
use axum::extract::{Query, State};

use super::error::{ApiError, ApiResult};
use super::{ApiState, Params};
use crate::model::{NodeInfo, Transition};
use crate::store::NodeFilter;
use crate::uptime::{
    Filter, GroupBy, Inputs, Query as UptimeQuery, UptimeReport, Window, WindowParams,
};

fn id<T>(
    p: &Params,
    name: &str,
    new: impl FnOnce(String) -> Result<T, alarmnet_protocol::IdError>,
) -> ApiResult<Option<T>> {
    p.parse(
        name,
        "expected an id of 1 to 64 letters, digits, - or _",
        |v| new(v.to_owned()).ok(),
    )
}

pub(super) async fn uptime(
    State(s): State<ApiState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> ApiResult<Json<UptimeReport>> {
    let p = Params::new(raw);
    let by = match p.get("by") {
        Some(v) => v.parse::<GroupBy>()?,
        None => GroupBy::Node,
    };
    let filter = Filter {
        region: id(&p, "region", RegionId::new)?,
        site: id(&p, "site", SiteId::new)?,
        node: id(&p, "node", NodeId::new)?,
        kind: id(&p, "kind", Name::new)?,
    };
    let params = WindowParams {
        since: p.owned("since"),
        from: p.owned("from"),
        to: p.owned("to"),
        day: p.owned("day"),
        week: p.owned("week"),
        month: p.owned("month"),
        year: p.owned("year"),
    };
    let now = s.now();
    let window = params.resolve(now, &s.tz)?;
    let query = UptimeQuery {
        window,
        now,
        by,
        outage_list: filter.node.is_some() && by == GroupBy::Node,
        filter: filter.clone(),
        tz: s.tz.clone(),
    };
    let until = query.until();
    let node_filter = NodeFilter {
        region: filter.region.clone(),
        site: filter.site.clone(),
        kind: filter.kind.clone(),
        ..NodeFilter::default()
    };
    let only = filter.node.clone();
    let (nodes, transitions, silences, blind) = s
        .store
        .call(move |db| {
            let nodes: Vec<NodeInfo> = db
                .nodes(&node_filter)?
                .into_iter()
                .filter(|n| only.as_ref().is_none_or(|o| *o == n.path.node))
                .map(|n| NodeInfo {
                    path: n.path,
                    kind: n.kind,
                    name: n.name,
                    boot: None,
                    hb_interval_ms: n.hb_interval_ms,
                })
                .collect();
            let ids: Option<Vec<NodeId>> = if only.is_some()
                || node_filter.region.is_some()
                || node_filter.site.is_some()
                || node_filter.kind.is_some()
            {
                Some(nodes.iter().map(|n| n.path.node.clone()).collect())
            } else {
                None
            };
            let w =
                db.transition_window(ids.as_deref(), window.from(), until.max(window.from()))?;
            let mut transitions: Vec<Transition> = w.before;
            transitions.extend(w.within);
            // Stable: per node, the one before the window, then the window's in time order.
            transitions.sort_by(|a, b| a.node.as_str().cmp(b.node.as_str()));
            // Nobody watched outside the collector's runs and while it was blind.
            let blind = db
                .unwatched(window.from(), until.max(window.from()))?
                .into_iter()
                .filter_map(|(from, to)| Window::new(from, to).ok())
                .collect::<Vec<_>>();
            Ok((nodes, transitions, db.silences(None)?, blind))
        })
        .await?;
    let report = tokio::task::spawn_blocking(move || {
        crate::uptime::report(
            &query,
            Inputs {
                nodes: &nodes,
                transitions: &transitions,
                silences: &silences,
                blind: &blind,
            },
        )
    })
    .await
    .map_err(|e| ApiError::internal(format!("uptime computation failed: {e}")))?
    .map_err(|e| ApiError::internal(format!("uptime: {e}")))?;
    Ok(Json(report))
}
