//! `GET /api/v1/uptime`: streams the nodes and their transitions around the window from the
//! store into the uptime engine, on the store's reader threads (off the async workers).

use std::collections::HashMap;

use alarmnet_protocol::{Name, NodeId, RegionId, SiteId};
use axum::Json;
use axum::extract::{Query, State};

use super::error::{ApiError, ApiResult};
use super::handlers::id_param;
use super::{Abandoned, ApiState, Params};
use crate::model::UnixMillis;
use crate::store::{NodeQuery, Shard, StoreError};
use crate::uptime::{
    Filter, GroupBy, PartialReport, Query as UptimeQuery, ReportBuilder, Segment, Unwatched,
    UptimeReport, Window,
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
    let query = UptimeQuery {
        window,
        now,
        by,
        outage_list: filter.node.is_some() && by == GroupBy::Node,
        filter: filter.clone(),
        tz: s.tz.clone(),
    };
    let span = (window.from(), query.until());
    // The whole summarized days inside the window are read from the daily summaries, the
    // rest from the transitions. Transitions before `pruned` are gone (retention): that
    // part of a window must be whole summarized days. The outage list needs the
    // transitions (a node's: cheap), but where they are gone it is left out.
    let (pruned, summarized) = s
        .store
        .read(move |db| {
            let pruned = db.pruned_before()?.filter(|&pruned| span.0 < pruned);
            Ok((pruned, db.summarized_within(span.0, span.1)?))
        })
        .await?;
    let plan = match pruned {
        Some(pruned) => {
            check_day_edges(&p, window, pruned, now, &s.tz)?;
            match summarized {
                Some((a, b)) if a == span.0 && (b == span.1 || b >= pruned) => Some((a, b)),
                _ => return Err(not_summarized(&p, window, pruned, &s.tz)),
            }
        }
        None if query.outage_list => None,
        None => summarized,
    };
    let slot = s.reports.start()?;
    let nodes = NodeQuery {
        region: filter.region,
        site: filter.site,
        node: filter.node,
        kind: filter.kind,
        states: Vec::new(),
        readiness: None,
    };
    // The report runs on the store's reader threads, each taking a shard of the nodes: the
    // transitions (or summaries) stream from the store into the engine node by node and
    // are never all held at once; the shards' sums merge at the end. Each shard reads its
    // own snapshot, begun at about the same instant; every node is in exactly one shard (by
    // rowid, which an upsert never changes), so each node's figures are consistent in
    // themselves.
    let shards = u32::try_from(s.store.parallel_reads()).unwrap_or(1);
    let query = std::sync::Arc::new(query);
    let parts = (0..shards).map(|index| {
        let (query, nodes) = (query.clone(), nodes.clone());
        let abandoned = slot.abandoned();
        s.store.read(move |db| {
            shard_report(
                db,
                &query,
                &nodes,
                plan,
                Shard { index, of: shards },
                &abandoned,
            )
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

/// The sums of `query` over the nodes of `nodes` in `shard`: from the summaries over
/// `plan`'s whole days (and the transitions around them) when given, else from the
/// transitions alone. Both give the same figures (see `uptime_tests`).
pub(crate) fn shard_report(
    db: &crate::store::Db,
    query: &UptimeQuery,
    nodes: &NodeQuery,
    plan: Option<(UnixMillis, UnixMillis)>,
    shard: Shard,
    abandoned: &Abandoned,
) -> Result<PartialReport, StoreError> {
    abandoned.check()?;
    let span = (query.window.from(), query.until());
    let silences = db.silences(None)?;
    // Nobody watched a node outside the runs of the collectors of its region (its shard's,
    // or the whole network's) and while they were blind.
    let blind = db.unwatched(span.0, span.1, query.now)?;
    let mut builder = ReportBuilder::with_unwatched(query, &silences, &blind);
    match plan {
        Some(days) => from_summaries(
            db,
            &mut builder,
            query,
            nodes,
            days,
            shard,
            (&silences, &blind),
            abandoned,
        )?,
        None => from_transitions(db, &mut builder, nodes, span, shard, abandoned)?,
    }
    Ok(builder.into_partial())
}

/// Adds the nodes of `nodes` in `shard` to `builder` from their transitions in `span`.
fn from_transitions(
    db: &crate::store::Db,
    builder: &mut ReportBuilder<'_>,
    nodes: &NodeQuery,
    span: (UnixMillis, UnixMillis),
    shard: Shard,
    abandoned: &Abandoned,
) -> Result<(), StoreError> {
    db.each_node_history(nodes, span, shard, |path, kind, steps, tests| {
        abandoned.check()?;
        builder.add_node_tests(path, kind, tests);
        builder
            .add_node_steps(path, kind, steps)
            .map_err(|e| StoreError::Corrupt(format!("uptime: {e}")))
    })
}

/// The error for a window reaching into pruned history that the summaries cannot answer
/// exactly: its edges there must be a day's start in the configured zone.
fn check_day_edges(
    p: &Params,
    window: Window,
    pruned: UnixMillis,
    now: UnixMillis,
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

/// The error for a window reaching into pruned history where the summaries do not cover
/// it (they were cut in another time zone, or do not reach that far).
fn not_summarized(
    p: &Params,
    window: Window,
    pruned: UnixMillis,
    tz: &jiff::tz::TimeZone,
) -> ApiError {
    let kept = crate::uptime::Stamp::new(pruned, tz);
    ApiError::bad_param(
        "from",
        p.get("from")
            .unwrap_or(&crate::uptime::Stamp::new(window.from(), tz).to_string()),
        &format!(
            "transitions before {kept} were pruned (retention), and the daily summaries do \
             not cover this window's part before that in whole days"
        ),
    )
}

/// Adds every node of `shard` to `builder` from its daily summaries over `[a, b)` (whole
/// summarized days), with segments computed from the transitions for the partial days
/// before and after. A node whose summaries do not cover `[a, b)` exactly (a late write
/// deleted some, or it was registered after those days were summarized) is read from its
/// transitions over the whole window instead.
#[allow(clippy::too_many_arguments)]
fn from_summaries(
    db: &crate::store::Db,
    builder: &mut ReportBuilder<'_>,
    query: &UptimeQuery,
    nodes: &NodeQuery,
    (a, b): (UnixMillis, UnixMillis),
    shard: Shard,
    (silences, blind): (&[crate::model::Silence], &Unwatched),
    abandoned: &Abandoned,
) -> Result<(), StoreError> {
    let from = query.window.from();
    let until = query.until();
    // One segment per node over `[start, end)` from the transitions.
    let edge =
        |start: UnixMillis, end: UnixMillis| -> Result<HashMap<NodeId, Segment>, StoreError> {
            let mut out = HashMap::new();
            if start >= end {
                return Ok(out);
            }
            let edge_query = UptimeQuery {
                window: Window::new(start, end).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                now: end,
                ..query.clone()
            };
            let mut edge = ReportBuilder::with_unwatched(&edge_query, silences, blind);
            db.each_node_span(nodes, (start, end), shard, |path, kind, steps, tests| {
                abandoned.check()?;
                let seg = edge
                    .segment(path, kind, steps, tests)
                    .map_err(|e| StoreError::Corrupt(format!("uptime: {e}")))?;
                out.insert(path.node.clone(), seg);
                Ok(())
            })?;
            Ok(out)
        };
    let mut heads = edge(from, a)?;
    let mut tails = edge(b, until)?;
    let mut segments = Vec::new();
    let mut unsummarized = Vec::new();
    db.each_node_days(nodes, (a, b), shard, |path, kind, days| {
        abandoned.check()?;
        let covered = days.first().is_some_and(|d| d.from == a)
            && days.last().is_some_and(|d| d.to == b)
            && days.windows(2).all(|w| w[0].to == w[1].from);
        if !covered {
            unsummarized.push(path.node.clone());
            return Ok(());
        }
        segments.clear();
        segments.extend(heads.remove(&path.node));
        segments.extend_from_slice(days);
        segments.extend(tails.remove(&path.node));
        builder.add_node_segments(path, kind, &segments);
        Ok(())
    })?;
    for node in unsummarized {
        let one = NodeQuery {
            node: Some(node),
            ..nodes.clone()
        };
        from_transitions(db, builder, &one, (from, until), Shard::ALL, abandoned)?;
    }
    Ok(())
}
