//! `GET /api/v1/uptime`: streams the nodes and their transitions around the window from the
//! store into the uptime engine, on the store's reader threads (off the async workers).

use alarmnet_protocol::{Name, NodeId, RegionId, SiteId};
use axum::Json;
use axum::extract::{Query, State};

use super::error::{ApiError, ApiResult};
use super::handlers::id_param;
use super::{ApiState, Params};
use crate::store::{NodeQuery, Shard, StoreError};
use crate::uptime::{
    Filter, GroupBy, PartialReport, Query as UptimeQuery, ReportBuilder, Segment, UptimeReport,
    Window,
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
    // Transitions before `pruned` are gone (retention): that part of a window is answered
    // from the per-node daily summaries, which needs it to start on a day's edge.
    let pruned = s
        .store
        .read(|db| db.pruned_before())
        .await?
        .filter(|&pruned| window.from() < pruned);
    if let Some(pruned) = pruned {
        check_day_edges(&p, window, pruned, now, &s.tz)?;
    }
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
            if let Some(pruned) = pruned {
                abandoned.check()?;
                from_summaries(
                    db,
                    &mut builder,
                    &query,
                    &nodes,
                    pruned,
                    shard,
                    &silences,
                    &blind,
                )?;
                return Ok(builder.into_partial());
            }
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

/// The error for a window reaching into pruned history that the summaries cannot answer
/// exactly: its edges there must be a day's start in the configured zone.
fn check_day_edges(
    p: &Params,
    window: Window,
    pruned: crate::model::UnixMillis,
    now: crate::model::UnixMillis,
    tz: &jiff::tz::TimeZone,
) -> Result<(), ApiError> {
    let is_day_start = |ms| Window::day_of(ms, tz).is_ok_and(|d| d.from() == ms);
    let until = window.to().min(now);
    let mut bad = None;
    if !is_day_start(window.from()) {
        bad = Some(("from", window.from()));
    } else if until < pruned && !is_day_start(until) {
        bad = Some(("to", until));
    }
    if let Some((name, at)) = bad {
        let kept = crate::uptime::Stamp::new(pruned, tz);
        return Err(ApiError::bad_param(
            name,
            p.get(name)
                .unwrap_or(&crate::uptime::Stamp::new(at, tz).to_string()),
            &format!(
                "transitions before {kept} were pruned (retention); a window before that is \
                 answered from daily summaries and must start and end on a day's start \
                 (midnight in the configured time zone)"
            ),
        ));
    }
    Ok(())
}

/// Adds every node of `shard` to `builder` from its daily summaries up to `pruned`, and
/// from the raw transitions after it. A day without a summary row (the node did not exist
/// yet) is unknown time, as the raw transitions would say.
#[allow(clippy::too_many_arguments)]
fn from_summaries(
    db: &crate::store::Db,
    builder: &mut ReportBuilder<'_>,
    query: &UptimeQuery,
    nodes: &NodeQuery,
    pruned: crate::model::UnixMillis,
    shard: Shard,
    silences: &[crate::model::Silence],
    blind: &[Window],
) -> Result<(), StoreError> {
    use std::collections::HashMap;
    let from = query.window.from();
    let until = query.until();
    let summary_end = until.min(pruned);
    let mut tails: HashMap<NodeId, Segment> = HashMap::new();
    if until > pruned {
        let tail_query = UptimeQuery {
            window: Window::new(pruned, query.window.to())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            ..query.clone()
        };
        let mut tail = ReportBuilder::new(&tail_query, silences, blind);
        db.each_node_history(nodes, (pruned, until), shard, |path, kind, steps, tests| {
            let seg = tail
                .segment(path, kind, steps, tests)
                .map_err(|e| StoreError::Corrupt(format!("uptime: {e}")))?;
            tails.insert(path.node.clone(), seg);
            Ok(())
        })?;
    }
    let mut segments = Vec::new();
    db.each_node_days(nodes, (from, summary_end), shard, |path, kind, days| {
        segments.clear();
        let mut at = from;
        for d in days {
            if d.from > at {
                segments.push(Segment::unknown(at, d.from));
            }
            segments.push(*d);
            at = d.to;
        }
        if at < summary_end {
            segments.push(Segment::unknown(at, summary_end));
        }
        if let Some(t) = tails.remove(&path.node) {
            segments.push(t);
        }
        builder.add_node_segments(path, kind, &segments);
        Ok(())
    })
}
