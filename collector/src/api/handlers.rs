//! The JSON handlers of `/api/v1` (the event stream is in `events`, uptime in `uptime`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use alarmnet_protocol::{AlertStatus, Name, NodeId, RegionId, Severity, SiteId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use rand::Rng as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::control::ControlError;
use super::cursor::{self, CursorKey};
use super::error::{ApiError, ApiResult};
use super::events::AckJson;
use super::{ApiState, Params, readiness};
use crate::model::{
    Ack, Alert, AlertId, Liveness, RuleKind, Silence, SilenceId, Transition, UnixMillis,
};
use crate::readiness::Readiness;
use crate::store::{
    AlertQuery, FaultRecord, NodeBrief, NodeKey, NodeQuery, NodeRecord, Paged, SilenceKey,
    SilenceQuery, SilenceStatus, TimeKey,
};
use crate::uptime::{DateMeans, Stamp, parse_duration, parse_instant};

type Raw = Query<Vec<(String, String)>>;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const DEFAULT_HISTORY: Duration = Duration::from_secs(7 * 24 * 3600);
const MAX_COMMENT: usize = 1024;

/// `limit` and `cursor` of one list (named by a letter, see [`cursor`]).
#[derive(Debug, Clone)]
pub(super) struct Page<K> {
    list: char,
    pub(super) after: Option<K>,
    pub(super) limit: usize,
}

impl<K: CursorKey> Page<K> {
    pub(super) fn from(p: &Params, list: char) -> ApiResult<Page<K>> {
        let limit = p
            .parse("limit", "expected an integer from 1 to 1000", |v| {
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
            })?
            .unwrap_or(DEFAULT_LIMIT);
        let after = cursor::param(p, list)?;
        Ok(Page { list, after, limit })
    }

    /// `{"items", "next_cursor", "total"}` plus the fields of `extra`.
    pub(super) fn answer<T>(
        &self,
        page: Paged<T, K>,
        render: impl Fn(&T) -> Value,
        extra: Value,
    ) -> Json<Value> {
        let items: Vec<Value> = page.items.iter().map(render).collect();
        let next = page.next.map(|k| cursor::encode(self.list, &k));
        let mut body = json!({"items": items, "next_cursor": next, "total": page.total});
        if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
            body.extend(extra);
        }
        Json(body)
    }
}

pub(super) fn id_param<T>(
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

fn node_id(text: &str) -> ApiResult<NodeId> {
    NodeId::new(text).map_err(|_| {
        ApiError::bad_param(
            "node",
            text,
            "expected a node id of 1 to 64 letters, digits, - or _",
        )
    })
}

/// The `[from, to)` window of `since`/`from`/`to`, or `default_len` back from now.
pub(super) fn window(
    p: &Params,
    state: &ApiState,
    default_len: Option<Duration>,
) -> ApiResult<Option<(UnixMillis, UnixMillis)>> {
    let now = state.now();
    let since = p.get("since");
    let from = p.get("from");
    let to = p.get("to");
    if let Some(since) = since {
        if from.is_some() || to.is_some() {
            let (name, v) = if let Some(f) = from {
                ("from", f)
            } else {
                ("to", to.unwrap_or_default())
            };
            return Err(ApiError::bad_param(
                name,
                v,
                "cannot be combined with `since`",
            ));
        }
        let len = parse_duration("since", since)?;
        return Ok(Some((now - len, now)));
    }
    if from.is_none() && to.is_none() {
        return Ok(default_len.map(|len| (now - len, now)));
    }
    let to_ms = match to {
        Some(t) => parse_instant("to", t, &state.tz, DateMeans::EndOfDay)?,
        None => now,
    };
    let from_ms = match from {
        Some(f) => parse_instant("from", f, &state.tz, DateMeans::StartOfDay)?,
        None => default_len.map_or(UnixMillis::EPOCH, |len| to_ms - len),
    };
    if to_ms < from_ms {
        return Err(ApiError::bad_param(
            "to",
            to.unwrap_or("now"),
            "ends before `from`",
        ));
    }
    Ok(Some((from_ms, to_ms)))
}

pub(super) fn caller(ext: &Option<Extension<Caller>>) -> Caller {
    ext.as_ref()
        .map_or(Caller::Anonymous, |Extension(c)| c.clone())
}

pub(super) async fn no_route(uri: Uri) -> ApiError {
    ApiError::no_route(uri.path())
}

pub(super) async fn whoami(c: Option<Extension<Caller>>) -> Json<Value> {
    let c = caller(&c);
    let role = match &c {
        Caller::Anonymous => "anonymous",
        Caller::Token { role, .. } => role.as_str(),
    };
    Json(json!({"name": c.name(), "role": role}))
}

// ---- nodes ----

fn state_counts(states: &BTreeMap<&'static str, u64>) -> Value {
    let mut m = serde_json::Map::new();
    for s in Liveness::ALL {
        m.insert(
            s.as_str().into(),
            json!(states.get(s.as_str()).copied().unwrap_or(0)),
        );
    }
    Value::Object(m)
}

#[derive(Default)]
struct Counts {
    nodes: u64,
    states: BTreeMap<&'static str, u64>,
}

impl Counts {
    fn add(&mut self, state: Liveness, nodes: u64) {
        self.nodes += nodes;
        *self.states.entry(state.as_str()).or_default() += nodes;
    }
}

type Places = BTreeMap<String, (Counts, BTreeMap<String, Counts>)>;

/// A region or site of the summary: `{<field>: id, "name", "nodes", "states"}`.
fn place_json(field: &str, id: &str, name: Option<&String>, c: &Counts) -> Value {
    json!({field: id, "name": name, "nodes": c.nodes, "states": state_counts(&c.states)})
}

pub(super) async fn summary(State(s): State<ApiState>, Query(raw): Raw) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let q = NodeQuery {
        region: id_param(&p, "region", RegionId::new)?,
        kind: id_param(&p, "kind", Name::new)?,
        ..NodeQuery::default()
    };
    let (counts, names, firing) = s
        .store
        .read(move |db| Ok((db.place_counts(&q)?, db.place_names()?, db.firing_counts()?)))
        .await?;
    let names: HashMap<(String, String), String> = names
        .into_iter()
        .map(|n| {
            let site = n.site.map(|x| x.as_str().to_owned()).unwrap_or_default();
            ((n.region.as_str().to_owned(), site), n.name)
        })
        .collect();
    let mut network = Counts::default();
    let mut places = Places::new();
    for c in &counts {
        network.add(c.state, c.nodes);
        let region = places.entry(c.region.as_str().to_owned()).or_default();
        region.0.add(c.state, c.nodes);
        let site = region.1.entry(c.site.as_str().to_owned()).or_default();
        site.add(c.state, c.nodes);
    }
    let name = |region: &str, site: &str| names.get(&(region.to_owned(), site.to_owned()));
    let regions: Vec<Value> = places
        .iter()
        .map(|(region, (c, sites))| {
            let sites: Vec<Value> = sites
                .iter()
                .map(|(site, c)| place_json("site", site, name(region, site), c))
                .collect();
            let mut v = place_json("region", region, name(region, ""), c);
            v["sites"] = Value::Array(sites);
            v
        })
        .collect();
    let mut by_severity = serde_json::Map::new();
    for sev in Severity::ALL {
        let n = firing
            .iter()
            .find(|f| f.severity == sev)
            .map_or(0, |f| f.firing);
        by_severity.insert(sev.as_str().into(), json!(n));
    }
    Ok(Json(json!({
        "at": Stamp::new(s.now(), &s.tz),
        "nodes": network.nodes,
        "states": state_counts(&network.states),
        "alerts": {
            "firing": firing.iter().map(|f| f.firing).sum::<u64>(),
            "unacked": firing.iter().map(|f| f.unacked).sum::<u64>(),
            "by_severity": by_severity,
        },
        "regions": regions,
    })))
}

fn brief_json(n: &NodeBrief, s: &ApiState) -> Value {
    json!({
        "node": n.path.node.as_str(),
        "region": n.path.region.as_str(),
        "site": n.path.site.as_str(),
        "kind": n.kind.as_str(),
        "name": n.name,
        "state": n.state.as_str(),
        "since": Stamp::new(n.state_since, &s.tz),
        "last_seen": Stamp::new(n.last_seen, &s.tz),
        "faults": n.active_faults,
    })
}

pub(super) async fn nodes(State(s): State<ApiState>, Query(raw): Raw) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let states = p.list(
        "state",
        "expected states among unknown, online, late, offline, stopped, maintenance",
        Liveness::from_name,
    )?;
    let q = NodeQuery {
        region: id_param(&p, "region", RegionId::new)?,
        site: id_param(&p, "site", SiteId::new)?,
        kind: id_param(&p, "kind", Name::new)?,
        states: states.unwrap_or_default(),
        node: None,
        readiness: p.parse(
            "readiness",
            "expected one of ready, degraded, not_ready",
            Readiness::from_name,
        )?,
    };
    let page = Page::<NodeKey>::from(&p, 'n')?;
    let after = page.after.clone();
    let limit = page.limit;
    let (rows, ready) = s
        .store
        .read(move |db| {
            let rows = db.node_page(&q, after.as_ref(), limit)?;
            let ids: Vec<NodeId> = rows.items.iter().map(|n| n.path.node.clone()).collect();
            Ok((rows, db.readiness_of(&ids)?))
        })
        .await?;
    let render = |n: &NodeBrief| {
        let mut v = brief_json(n, &s);
        v["readiness"] = readiness::node_json(ready.get(&n.path.node), &s.tz);
        v
    };
    Ok(page.answer(rows, render, json!({})))
}

fn fault_json(f: &FaultRecord, s: &ApiState) -> Value {
    let (check, code) = f.key.split_once('/').unwrap_or((f.key.as_str(), ""));
    json!({
        "key": f.key,
        "check": check,
        "code": code,
        "severity": f.severity.as_str(),
        "raised_at": Stamp::new(UnixMillis::from_millis(f.raised_at), &s.tz),
        "cleared_at": f.cleared_at.map(|c| Stamp::new(UnixMillis::from_millis(c), &s.tz)),
        "message": f.message,
        "replay": f.replay,
    })
}

async fn find_node(s: &ApiState, node: &str) -> ApiResult<NodeRecord> {
    let id = node_id(node)?;
    s.store
        .node(id)
        .await?
        .ok_or_else(|| ApiError::not_found("node", format!("no node {node}")))
}

pub(super) async fn node(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
    Path(node): Path<String>,
) -> ApiResult<Json<Value>> {
    // Where a siren stands is for the operations centre, not for an anonymous wall screen.
    let coordinates = caller(&c) != Caller::Anonymous;
    let n = find_node(&s, &node).await?;
    let faults = s.store.faults(n.path.node.clone(), true).await?;
    let brief = NodeBrief {
        path: n.path.clone(),
        kind: n.kind.clone(),
        name: n.name.clone(),
        state: n.state,
        state_since: n.state_since,
        last_seen: n.last_seen,
        active_faults: faults.len() as u64,
    };
    let mut v = brief_json(&brief, &s);
    let id = n.path.node.clone();
    let ready = s.store.read(move |db| db.node_readiness(&id)).await?;
    v["readiness"] = readiness::node_json(ready.as_ref(), &s.tz);
    let info = &n.info;
    let born_at = info
        .get("ts")
        .and_then(Value::as_u64)
        .map(|ts| Stamp::new(UnixMillis::from_millis(ts), &s.tz));
    let last = s.recent.latest(&n.path.node).map(|h| {
        json!({
            "received_at": Stamp::new(h.received_at, &s.tz),
            "ts": Stamp::new(h.ts, &s.tz),
            "seq": h.seq,
            "uptime_s": h.uptime_s,
            "metrics": h.metrics,
            "checks": h.checks,
        })
    });
    if let Value::Object(m) = &mut v {
        for key in ["lat", "lon", "model", "firmware", "agent"] {
            if !coordinates && matches!(key, "lat" | "lon") {
                continue;
            }
            m.insert(key.into(), info.get(key).cloned().unwrap_or(Value::Null));
        }
        m.insert(
            "checks".into(),
            info.get("checks").cloned().unwrap_or(json!([])),
        );
        m.insert(
            "tags".into(),
            info.get("tags").cloned().unwrap_or(json!({})),
        );
        m.insert("boot".into(), json!(n.boot));
        m.insert("born_at".into(), json!(born_at));
        m.insert(
            "hb_interval_s".into(),
            json!(n.hb_interval_ms as f64 / 1000.0),
        );
        m.insert("first_seen".into(), json!(Stamp::new(n.first_seen, &s.tz)));
        m.insert(
            "faults_active".into(),
            Value::Array(faults.iter().map(|f| fault_json(f, &s)).collect()),
        );
        m.insert("last_heartbeat".into(), last.unwrap_or(Value::Null));
    }
    Ok(Json(v))
}

pub(super) async fn history(
    State(s): State<ApiState>,
    Path(node): Path<String>,
    Query(raw): Raw,
) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let kind = p
        .parse("type", "expected transitions or faults", |v| {
            matches!(v, "transitions" | "faults").then(|| v.to_owned())
        })?
        .unwrap_or_else(|| "transitions".into());
    let (from, to) = window(&p, &s, Some(DEFAULT_HISTORY))?.unwrap_or_default();
    let page = Page::<TimeKey>::from(&p, if kind == "faults" { 'f' } else { 't' })?;
    let n = find_node(&s, &node).await?;
    let id = n.path.node.clone();
    let (after, limit) = (page.after, page.limit);
    let extra = json!({"node": node, "type": kind, "from": Stamp::new(from, &s.tz),
                       "to": Stamp::new(to, &s.tz)});
    if kind == "faults" {
        let rows = s
            .store
            .read(move |db| db.fault_page(&id, (from, to), after.as_ref(), limit))
            .await?;
        Ok(page.answer(rows, |f| fault_json(f, &s), extra))
    } else {
        let rows = s
            .store
            .read(move |db| db.transition_page(&id, (from, to), after.as_ref(), limit))
            .await?;
        let render = |t: &Transition| {
            json!({"at": Stamp::new(t.at, &s.tz), "from": t.from.as_str(),
                   "to": t.to.as_str(), "cause": t.cause.as_str()})
        };
        Ok(page.answer(rows, render, extra))
    }
}

pub(super) async fn metrics(
    State(s): State<ApiState>,
    Path(node): Path<String>,
    Query(raw): Raw,
) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let names = p.list("names", "expected comma-separated metric names", |v| {
        Some(v.to_owned())
    })?;
    if let Some(ns) = &names
        && ns.len() > super::MAX_METRIC_NAMES
    {
        return Err(ApiError::bad_param(
            "names",
            &format!("{} names", ns.len()),
            &format!("at most {} metric names", super::MAX_METRIC_NAMES),
        ));
    }
    let n = find_node(&s, &node).await?;
    let samples: Vec<Value> = s
        .recent
        .samples(&n.path.node)
        .into_iter()
        .map(|h| {
            let metrics: serde_json::Map<String, Value> = h
                .metrics
                .iter()
                .filter(|(k, _)| {
                    names
                        .as_ref()
                        .is_none_or(|ns| ns.iter().any(|x| x == k.as_str()))
                })
                .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
                .collect();
            json!({"at": Stamp::new(h.ts, &s.tz), "seq": h.seq, "metrics": metrics})
        })
        .collect();
    Ok(Json(json!({
        "node": n.path.node.as_str(),
        "capacity": s.recent.capacity(),
        "samples": samples,
    })))
}

// ---- alerts ----

/// An alert as the API shows it.
pub(super) fn alert_json(a: &Alert, s: &ApiState) -> Value {
    let mut v = json!({
        "id": a.id,
        "rule": a.rule.as_str(),
        "severity": a.severity.as_str(),
        "status": match a.status { AlertStatus::Firing => "firing", AlertStatus::Resolved => "resolved" },
        "started_at": Stamp::new(a.started_at, &s.tz),
        "ended_at": a.ended_at.map(|e| Stamp::new(e, &s.tz)),
        "summary": a.summary,
        "args": a.args,
        "ack": a.ack.as_ref().map(|k| AckJson::new(k, &s.tz)),
        "notified": a.notified,
    });
    insert_present(
        &mut v,
        [
            ("region", a.subject.region().map(|x| x.as_str())),
            ("site", a.subject.site().map(|x| x.as_str())),
            ("node", a.subject.node().map(|x| x.as_str())),
            ("kind", a.kind.as_ref().map(|x| x.as_str())),
        ],
    );
    v
}

/// Adds the fields that have a value to the JSON object `v` (absent ones stay absent).
fn insert_present<const N: usize>(v: &mut Value, fields: [(&str, Option<&str>); N]) {
    if let Value::Object(m) = v {
        for (key, value) in fields {
            if let Some(value) = value {
                m.insert(key.into(), json!(value));
            }
        }
    }
}

pub(super) async fn alerts(State(s): State<ApiState>, Query(raw): Raw) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let status = p.parse("status", "expected firing or resolved", |v| match v {
        "firing" => Some(AlertStatus::Firing),
        "resolved" => Some(AlertStatus::Resolved),
        _ => None,
    })?;
    let severities = p.list(
        "severity",
        "expected severities among critical, major, minor, warning, info",
        |v| v.parse::<Severity>().ok(),
    )?;
    let rule = id_param(&p, "rule", |v| v.parse::<RuleKind>())?;
    let region = id_param(&p, "region", RegionId::new)?;
    let site = id_param(&p, "site", SiteId::new)?;
    let node = id_param(&p, "node", NodeId::new)?;
    let kind = id_param(&p, "kind", Name::new)?;
    let acked = p.parse("acked", "expected true or false", |v| match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    })?;
    let q = AlertQuery {
        status,
        severities: severities.unwrap_or_default(),
        rule,
        region,
        site,
        node,
        kind,
        acked,
        window: window(&p, &s, None)?,
    };
    let page = Page::<TimeKey>::from(&p, 'a')?;
    let (after, limit) = (page.after, page.limit);
    let rows = s
        .store
        .read(move |db| db.alert_page(&q, after.as_ref(), limit))
        .await?;
    Ok(page.answer(rows, |a| alert_json(a, &s), json!({})))
}

/// Reads an optional JSON body, naming the field at fault.
pub(super) fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        let field = if path != "." {
            path
        } else if let Some(rest) = text.split_once("field `").map(|x| x.1) {
            rest.split('`').next().unwrap_or("body").to_owned()
        } else {
            "body".to_owned()
        };
        ApiError::bad_body(&field, format!("bad body: {text}"))
    })
}

fn control_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NotFound { what, id } => ApiError::not_found(
            if what == "alert" { "id" } else { what },
            format!("no {what} {id}"),
        ),
        e @ ControlError::AlreadyAcknowledged { .. } => {
            ApiError::conflict("already_acknowledged", e.to_string())
        }
        e @ ControlError::AlreadyExpired { .. } => {
            ApiError::conflict("already_expired", e.to_string())
        }
        ControlError::Unavailable(m) => ApiError::unavailable(m),
    }
}

/// An alert or silence id from the path. One that cannot be an id names nothing: 404, as
/// for a well-formed id that is not known.
fn path_id<T: std::str::FromStr>(what: &'static str, id: &str) -> ApiResult<T> {
    id.parse()
        .map_err(|_| control_error(ControlError::not_found(what, id)))
}

fn comment(c: Option<String>) -> ApiResult<Option<String>> {
    match c {
        Some(c) if c.chars().count() > MAX_COMMENT => Err(ApiError::bad_body(
            "comment",
            format!("comment is longer than {MAX_COMMENT} characters"),
        )),
        Some(c) if c.trim().is_empty() => Ok(None),
        c => Ok(c),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    comment: Option<String>,
}

pub(super) async fn ack(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult<Json<Value>> {
    let c = caller(&c);
    let by = c.operator("acknowledging alerts")?.to_owned();
    if id.is_empty() || id.len() > 64 {
        return Err(ApiError::bad_param(
            "id",
            &id,
            "expected an alert id of at most 64 characters",
        ));
    }
    let req: AckRequest = body(&bytes)?;
    let ack = Ack {
        by,
        at: s.now(),
        comment: comment(req.comment)?,
    };
    let id: AlertId = path_id("alert", &id)?;
    let alert = s.control.ack(id, ack).await.map_err(control_error)?;
    Ok(Json(alert_json(&alert, &s)))
}

// ---- silences ----

fn silence_status(x: &Silence, now: UnixMillis) -> &'static str {
    if x.ends_at <= now {
        "expired"
    } else if x.starts_at > now {
        "pending"
    } else {
        "active"
    }
}

fn silence_json(x: &Silence, s: &ApiState, now: UnixMillis) -> Value {
    let mut v = json!({
        "id": x.id,
        "starts_at": Stamp::new(x.starts_at, &s.tz),
        "ends_at": Stamp::new(x.ends_at, &s.tz),
        "created_by": x.created_by,
        "comment": x.comment,
        "status": silence_status(x, now),
    });
    insert_present(
        &mut v,
        [
            ("region", x.region.as_ref().map(|x| x.as_str())),
            ("site", x.site.as_ref().map(|x| x.as_str())),
            ("node", x.node.as_ref().map(|x| x.as_str())),
            ("kind", x.kind.as_ref().map(|x| x.as_str())),
        ],
    );
    v
}

pub(super) async fn silences(State(s): State<ApiState>, Query(raw): Raw) -> ApiResult<Json<Value>> {
    let p = Params::new(raw);
    let status = p.parse(
        "status",
        "expected active, pending or expired",
        |v| match v {
            "active" => Some(SilenceStatus::Active),
            "pending" => Some(SilenceStatus::Pending),
            "expired" => Some(SilenceStatus::Expired),
            _ => None,
        },
    )?;
    let now = s.now();
    let q = SilenceQuery {
        now,
        status,
        region: id_param(&p, "region", RegionId::new)?,
        site: id_param(&p, "site", SiteId::new)?,
    };
    let page = Page::<SilenceKey>::from(&p, 's')?;
    let after = page.after.clone();
    let limit = page.limit;
    let rows = s
        .store
        .read(move |db| db.silence_page(&q, after.as_ref(), limit))
        .await?;
    Ok(page.answer(rows, |x| silence_json(x, &s, now), json!({})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    region: Option<String>,
    site: Option<String>,
    node: Option<String>,
    kind: Option<String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    duration: Option<String>,
    comment: Option<String>,
}

fn body_id<T>(
    field: &str,
    v: Option<String>,
    new: impl FnOnce(String) -> Result<T, alarmnet_protocol::IdError>,
) -> ApiResult<Option<T>> {
    v.map(|text| {
        new(text.clone()).map_err(|_| {
            ApiError::bad_body(
                field,
                format!("{field} {text:?}: expected an id of 1 to 64 letters, digits, - or _"),
            )
        })
    })
    .transpose()
}

fn as_body_error(field: &str, e: crate::uptime::ParamError) -> ApiError {
    ApiError::bad_body(field, e.to_string())
}

pub(super) async fn add_silence(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
    bytes: Bytes,
) -> ApiResult<Response> {
    let c = caller(&c);
    let by = c.operator("creating silences")?.to_owned();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_body("body", "a JSON body is required"));
    }
    let req: SilenceRequest = body(&bytes)?;
    let now = s.now();
    let region = body_id("region", req.region, RegionId::new)?;
    let site = body_id("site", req.site, SiteId::new)?;
    let node = body_id("node", req.node, NodeId::new)?;
    let kind = body_id("kind", req.kind, Name::new)?;
    if region.is_none() && site.is_none() && node.is_none() && kind.is_none() {
        return Err(ApiError::bad_body(
            "region",
            "give at least one of region, site, node, kind: the whole network cannot be silenced",
        ));
    }
    let starts_at = match &req.starts_at {
        Some(t) => parse_instant("starts_at", t, &s.tz, DateMeans::StartOfDay)
            .map_err(|e| as_body_error("starts_at", e))?,
        None => now,
    };
    let ends_at = match (&req.ends_at, &req.duration) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_body(
                "duration",
                "give ends_at or duration, not both",
            ));
        }
        (None, None) => return Err(ApiError::bad_body("ends_at", "give ends_at or duration")),
        (Some(t), None) => parse_instant("ends_at", t, &s.tz, DateMeans::EndOfDay)
            .map_err(|e| as_body_error("ends_at", e))?,
        (None, Some(d)) => {
            starts_at + parse_duration("duration", d).map_err(|e| as_body_error("duration", e))?
        }
    };
    if ends_at <= starts_at {
        return Err(ApiError::bad_body(
            "ends_at",
            "the silence must end after it starts",
        ));
    }
    if ends_at <= now {
        return Err(ApiError::bad_body(
            "ends_at",
            "the silence would already be over",
        ));
    }
    let silence = Silence {
        id: SilenceId::new(rand::rng().random::<u64>()),
        region,
        site,
        node,
        kind,
        starts_at,
        ends_at,
        created_by: by,
        comment: comment(req.comment)?,
    };
    let stored = s
        .control
        .add_silence(silence)
        .await
        .map_err(control_error)?;
    let location = format!("/api/v1/silences/{}", stored.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(silence_json(&stored, &s, now)),
    )
        .into_response())
}

pub(super) async fn end_silence(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let c = caller(&c);
    c.operator("ending silences")?;
    let id: SilenceId = path_id("silence", &id)?;
    let now = s.now();
    let ended = s
        .control
        .end_silence(id, now)
        .await
        .map_err(control_error)?;
    Ok(Json(silence_json(&ended, &s, now)))
}
