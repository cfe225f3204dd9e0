//! `GET /api/v1/uptime`: streams the nodes and their transitions around the window from the
//! store into the uptime engine, on the store's reader threads (off the async workers).

use alarmnet_protocol::{Name, NodeId, RegionId, SiteId};
use axum::Json;
use axum::extract::{Query, State};

use super::error::ApiResult;
use super::handlers::id_param;
use super::{ApiState, Params};
use crate::store::{NodeQuery, Shard, StoreError};
use crate::uptime::{
    Filter, GroupBy, PartialReport, Query as UptimeQuery, ReportBuilder, UptimeReport, Window,
};

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
        region: id_param(&p, "region", RegionId::new)?,
        site: id_param(&p, "site", SiteId::new)?,
        node: id_param(&p, "node", NodeId::new)?,
        kind: id_param(&p, "kind", Name::new)?,
    };
    let now = s.now();
    let window = p.report_window(now, &s.tz)?;
    let slot = s.reports.start()?;
    let query = UptimeQuery {
        window,
        now,
        by,
        outage_list: filter.node.is_some() && by == GroupBy::Node,
        filter: filter.clone(),
        tz: s.tz.clone(),
    };
    let span = (window.from(), query.until());
    let nodes = NodeQuery {
        region: filter.region,
        site: filter.site,
        node: filter.node,
        kind: filter.kind,
        states: Vec::new(),
        readiness: None,
    };
    // The report runs on the store's reader threads, each taking a shard of the nodes: the
    // transitions stream from the store into the engine node by node and are never all
    // held at once; the shards' sums merge at the end. Each shard reads its own snapshot,
    // begun at about the same instant; every node is in exactly one shard (by rowid, which
    // an upsert never changes), so each node's figures are consistent in themselves.
    let shards = u32::try_from(s.store.parallel_reads()).unwrap_or(1);
    let query = std::sync::Arc::new(query);
    let parts = (0..shards).map(|index| {
        let (query, nodes) = (query.clone(), nodes.clone());
        let abandoned = slot.abandoned();
        s.store.read(move |db| {
            abandoned.check()?;
            let silences = db.silences(None)?;
            // Nobody watched outside the collector's runs and while it was blind.
            let blind: Vec<Window> = db
                .unwatched(span.0, span.1)?
                .into_iter()
                .filter_map(|(from, to)| Window::new(from, to).ok())
                .collect();
            let mut builder = ReportBuilder::new(&query, &silences, &blind);
            let shard = Shard { index, of: shards };
            db.each_node_history(&nodes, span, shard, |path, kind, steps, tests| {
                abandoned.check()?;
                builder.add_node_tests(path, kind, tests);
                builder
                    .add_node_steps(path, kind, steps)
                    .map_err(|e| StoreError::Corrupt(format!("uptime: {e}")))
            })?;
            Ok(builder.into_partial())
        })
    });
    let mut report = PartialReport::default();
    for part in futures_util::future::try_join_all(parts).await? {
        report.merge(part);
    }
    drop(slot);
    let report = report.finish(&query);
    Ok(Json(report))
}
