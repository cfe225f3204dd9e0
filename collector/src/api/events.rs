//! The live event stream: [`EventHub`] (publish side, called by the core after commits) and
//! the `GET /api/v1/events` server-sent-event handler.
//!
//! Design: every event gets an id `<run>-<seq>` (`run` = the hub's start time in ms, `seq`
//! increasing from 1) and goes into a ring of the last `capacity` events and into a bounded
//! broadcast channel. Publishing never waits: a subscriber that falls more than the channel's
//! capacity behind gets `Lagged` and its stream ends (the client reconnects with
//! `Last-Event-ID` and resumes from the ring, or gets `resync`). Subscribing takes the ring
//! lock, so the replay and the live feed join with no gap and no duplicate.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alarmnet_protocol::{AlertNotification, Name, NodePath};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::error::ApiError;
use super::{ApiState, Params};
use crate::model::{Ack, Alert, AlertId, Transition, UnixMillis};
use crate::readiness::{Readiness, ReadinessChange};
use crate::uptime::Stamp;

/// Events kept for clients that reconnect.
pub const DEFAULT_BUFFER: usize = 4096;

/// How far a live subscriber may fall behind before it is dropped.
pub const DEFAULT_LAG: usize = 1024;

/// What clients are told to wait before reconnecting.
const RETRY: Duration = Duration::from_millis(3000);

/// Comment lines sent after this much silence.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The event types, as the `event:` field names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    State,
    Alert,
    Ack,
    /// A node's readiness changed.
    Readiness,
    Resync,
    /// A drill's progress (drills task).
    Drill,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Alert => "alert",
            EventKind::Ack => "ack",
            EventKind::Readiness => "readiness",
            EventKind::Resync => "resync",
            EventKind::Drill => "drill",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "state" => Some(EventKind::State),
            "alert" => Some(EventKind::Alert),
            "ack" => Some(EventKind::Ack),
            "readiness" => Some(EventKind::Readiness),
            "resync" => Some(EventKind::Resync),
            "drill" => Some(EventKind::Drill),
            _ => None,
        }
    }
}

/// One published event: its sequence number, type and JSON data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub seq: u64,
    pub kind: EventKind,
    pub data: String,
}

#[derive(Debug)]
struct Ring {
    events: VecDeque<Arc<Published>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Inner {
    run: u64,
    capacity: usize,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Published>>,
    tz: jiff::tz::TimeZone,
    /// Where this collector's own events also go, to the other collectors on its store
    /// (see [`super::relay`]).
    relay: std::sync::OnceLock<tokio::sync::mpsc::Sender<(EventKind, String)>>,
}

/// The publish side of the event stream. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

#[derive(Serialize)]
struct StateData<'a> {
    node: &'a str,
    region: &'a str,
    site: &'a str,
    kind: &'a str,
    name: Option<&'a str>,
    from: &'static str,
    to: &'static str,
    at: Stamp,
    cause: &'static str,
}

#[derive(Serialize)]
struct AckData<'a> {
    id: AlertId,
    started_at: Stamp,
    ack: AckJson<'a>,
}

/// An acknowledgement as the API shows it.
#[derive(Debug, Serialize)]
pub struct AckJson<'a> {
    pub by: &'a str,
    pub at: Stamp,
    pub comment: Option<&'a str>,
}

impl<'a> AckJson<'a> {
    pub fn new(ack: &'a Ack, tz: &jiff::tz::TimeZone) -> Self {
        Self {
            by: &ack.by,
            at: Stamp::new(ack.at, tz),
            comment: ack.comment.as_deref(),
        }
    }
}

/// Where a new subscriber starts.
#[derive(Debug)]
pub struct Subscription {
    /// Sent first when the client's last id is not buffered (`buffer_exceeded`, `unknown_id`).
    pub resync: Option<&'static str>,
    /// Buffered events after the client's last id.
    pub replay: Vec<Arc<Published>>,
    /// Live events after those.
    pub live: broadcast::Receiver<Arc<Published>>,
}

impl EventHub {
    /// A hub whose ids start with `run` (use the start time in ms, so ids of an earlier run
    /// are recognised as such), keeping `buffer` events and dropping subscribers more than
    /// `lag` events behind. Times in event data are written in `tz`.
    pub fn new(run: UnixMillis, buffer: usize, lag: usize, tz: jiff::tz::TimeZone) -> Self {
        let (tx, _) = broadcast::channel(lag.max(1));
        Self {
            inner: Arc::new(Inner {
                run: run.as_millis(),
                capacity: buffer.max(1),
                ring: Mutex::new(Ring {
                    events: VecDeque::new(),
                    next_seq: 1,
                }),
                tx,
                tz,
                relay: std::sync::OnceLock::new(),
            }),
        }
    }

    /// From now on, this collector's own events are also handed to `relay` (never
    /// waiting: when it is full, an event reaches only this collector's subscribers).
    pub fn relay_to(&self, relay: tokio::sync::mpsc::Sender<(EventKind, String)>) {
        let _ = self.inner.relay.set(relay);
    }

    /// The SSE id of event `seq`.
    pub fn id_of(&self, seq: u64) -> String {
        format!("{}-{seq}", self.inner.run)
    }

    /// Announces a node's transition (after it is committed).
    pub fn publish_state(&self, t: &Transition, path: &NodePath, kind: &Name, name: Option<&str>) {
        let data = StateData {
            node: t.node.as_str(),
            region: path.region.as_str(),
            site: path.site.as_str(),
            kind: kind.as_str(),
            name,
            from: t.from.as_str(),
            to: t.to.as_str(),
            at: Stamp::new(t.at, &self.inner.tz),
            cause: t.cause.as_str(),
        };
        self.publish_json(EventKind::State, &data);
    }

    /// Announces a change of a node's readiness (after it is committed).
    pub fn publish_readiness(&self, c: &ReadinessChange, path: &NodePath, kind: &Name) {
        let data = serde_json::json!({
            "node": c.node.as_str(),
            "region": path.region.as_str(),
            "site": path.site.as_str(),
            "kind": kind.as_str(),
            "from": c.from.map(Readiness::as_str),
            "to": c.to.as_str(),
            "reasons": crate::api::readiness::reasons_json(&c.reasons, &self.inner.tz),
            "at": Stamp::new(c.at, &self.inner.tz),
        });
        self.publish_json(EventKind::Readiness, &data);
    }

    /// Announces an alert notification (exactly what webhooks get).
    pub fn publish_alert(&self, n: &AlertNotification) {
        self.publish_json(EventKind::Alert, n);
    }

    /// Announces an acknowledgement; `alert` is the acknowledged firing (its `ack` set).
    pub fn publish_ack(&self, alert: &Alert) {
        let Some(ack) = &alert.ack else {
            tracing::warn!(alert = %alert.id, "publish_ack for an alert without an ack");
            return;
        };
        let data = AckData {
            id: alert.id,
            started_at: Stamp::new(alert.started_at, &self.inner.tz),
            ack: AckJson::new(ack, &self.inner.tz),
        };
        self.publish_json(EventKind::Ack, &data);
    }

    fn publish_json<T: Serialize>(&self, kind: EventKind, data: &T) {
        match serde_json::to_string(data) {
            Ok(json) => {
                self.publish(kind, json);
            }
            Err(e) => tracing::error!(error = %e, kind = kind.as_str(), "event not encoded"),
        }
    }

    /// Publishes one of this collector's events; returns its sequence number. Never waits
    /// for a subscriber.
    pub fn publish(&self, kind: EventKind, data: String) -> u64 {
        if let Some(relay) = self.inner.relay.get()
            && kind != EventKind::Resync
            && relay.try_send((kind, data.clone())).is_err()
        {
            tracing::debug!(
                kind = kind.as_str(),
                "event not relayed: the relay is behind"
            );
        }
        self.publish_here(kind, data)
    }

    /// Publishes an event to this collector's subscribers only (one another collector
    /// published, or a subscriber's own resync).
    pub fn publish_here(&self, kind: EventKind, data: String) -> u64 {
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let event = Arc::new(Published { seq, kind, data });
        if ring.events.len() == self.inner.capacity {
            ring.events.pop_front();
        }
        ring.events.push_back(event.clone());
        // Sent under the lock so live order equals ring order. No receivers is fine.
        let _ = self.inner.tx.send(event);
        seq
    }

    /// Subscribes after the client's `last_event_id` (none: live events only).
    pub fn subscribe(&self, last_event_id: Option<&str>) -> Subscription {
        let ring = self.lock();
        let live = self.inner.tx.subscribe();
        let Some(last) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) else {
            return Subscription {
                resync: None,
                replay: Vec::new(),
                live,
            };
        };
        let seq = last
            .split_once('-')
            .filter(|(run, _)| run.parse::<u64>().ok() == Some(self.inner.run))
            .and_then(|(_, seq)| seq.parse::<u64>().ok())
            .filter(|seq| *seq < ring.next_seq);
        let (resync, after) = match seq {
            None => (Some("unknown_id"), 0),
            Some(seq) => {
                // Every event after `seq` must still be buffered.
                let oldest = ring.events.front().map_or(ring.next_seq, |e| e.seq);
                if seq + 1 < oldest {
                    (Some("buffer_exceeded"), 0)
                } else {
                    (None, seq)
                }
            }
        };
        let replay = if resync.is_some() {
            Vec::new()
        } else {
            ring.events
                .iter()
                .filter(|e| e.seq > after)
                .cloned()
                .collect()
        };
        Subscription {
            resync,
            replay,
            live,
        }
    }

    /// Current number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock leaves the ring consistent (push/pop only).
        self.inner
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Which event types a client wants (`?types=`); `None` is all.
fn parse_types(text: Option<&str>) -> Result<Option<Vec<EventKind>>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            EventKind::parse(s).ok_or_else(|| {
                ApiError::bad_param(
                    "types",
                    text,
                    "expected event types among state, alert, ack, readiness, resync, drill",
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Says once per run that a client still puts its token in the URL.
fn warn_access_token_once() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "a client passed its token as ?access_token= on /api/v1/events, which is deprecated \
             (URLs end up in logs): it should POST /api/v1/events/ticket and pass ?ticket="
        );
    }
}

/// `GET /api/v1/events`.
pub(super) async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<
    (
        HeaderMap,
        Sse<impl Stream<Item = Result<SseEvent, Infallible>>>,
    ),
    ApiError,
> {
    let params = Params::new(raw);
    let mut deprecated = None;
    match params.get("ticket") {
        // A ticket stands for the token it was issued to (single use, short-lived).
        Some(ticket) => {
            state
                .tickets
                .redeem(ticket, state.now())
                .ok_or_else(|| ApiError::unauthorized("unknown, used or expired ticket"))?;
        }
        // `access_token` is deprecated: POST /api/v1/events/ticket instead.
        None => {
            let in_url = params.get("access_token");
            state.auth.identify(&headers, in_url)?;
            if in_url.is_some() && headers.get(axum::http::header::AUTHORIZATION).is_none() {
                warn_access_token_once();
                deprecated = Some(access_token_deprecation());
            }
        }
    }
    let types = parse_types(params.get("types"))?;
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| params.get("last_event_id").map(str::to_owned));
    let hub = state.events.clone();
    let sub = hub.subscribe(last.as_deref());
    let wanted = move |kind: EventKind| {
        kind == EventKind::Resync || types.as_ref().is_none_or(|t| t.contains(&kind))
    };
    let run = hub.inner.run;
    let to_sse = move |e: &Published| {
        SseEvent::default()
            .id(format!("{run}-{}", e.seq))
            .event(e.kind.as_str())
            .data(e.data.as_str())
    };
    let mut first = vec![SseEvent::default().retry(RETRY)];
    if let Some(reason) = sub.resync {
        // The resync marks where the client stands now: the newest buffered id.
        let seq = hub.lock().next_seq - 1;
        first.push(
            SseEvent::default()
                .id(format!("{run}-{seq}"))
                .event(EventKind::Resync.as_str())
                .data(format!("{{\"reason\":\"{reason}\"}}")),
        );
    }
    let replay_to = sub.replay.last().map_or(0, |e| e.seq);
    let wanted_replay = wanted.clone();
    let replay: Vec<SseEvent> = sub
        .replay
        .iter()
        .filter(|e| wanted_replay(e.kind))
        .map(|e| to_sse(e))
        .collect();
    let live = BroadcastStream::new(sub.live)
        // A lagging client is dropped: the stream ends at the first `Lagged`.
        .take_while(|r| {
            let ok = !matches!(r, Err(BroadcastStreamRecvError::Lagged(_)));
            if !ok {
                tracing::info!("event stream client too slow: disconnected");
            }
            std::future::ready(ok)
        })
        .filter_map(move |r| {
            let out = match r {
                Ok(e) if e.seq > replay_to && wanted(e.kind) => Some(Ok(to_sse(&e))),
                _ => None,
            };
            std::future::ready(out)
        });
    let head = stream::iter(first.into_iter().chain(replay).map(Ok));
    let sse = Sse::new(head.chain(live))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    Ok((deprecated.unwrap_or_default(), sse))
}

/// The response headers that tell a client its `?access_token=` is deprecated (RFC 9745's
/// `Deprecation`, and a `Link` to the replacement, as RFC 8594 suggests).
fn access_token_deprecation() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("deprecation", HeaderValue::from_static("true"));
    headers.insert(
        axum::http::header::LINK,
        HeaderValue::from_static("</api/v1/events/ticket>; rel=\"alternate\""),
    );
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Cause, Liveness};
    use alarmnet_protocol::{NodeId, RegionId, SiteId};

    fn hub(buffer: usize, lag: usize) -> EventHub {
        EventHub::new(
            UnixMillis::from_millis(1000),
            buffer,
            lag,
            jiff::tz::TimeZone::UTC,
        )
    }

    fn transition(at: UnixMillis) -> (Transition, NodePath, Name) {
        let node = NodeId::new("n1").expect("id");
        let path = NodePath::new(
            RegionId::new("r").expect("id"),
            SiteId::new("s").expect("id"),
            node.clone(),
        );
        let t = Transition {
            node,
            from: Liveness::Online,
            to: Liveness::Offline,
            at,
            cause: Cause::Will,
        };
        (t, path, Name::new("siren").expect("kind"))
    }

    #[test]
    fn state_event_data_has_the_documented_fields() {
        let h = hub(8, 8);
        let mut sub = h.subscribe(None);
        let (t, path, kind) = transition(UnixMillis::from_millis(1_764_330_440_000));
        h.publish_state(&t, &path, &kind, Some("roof"));
        let e = sub.live.try_recv().expect("live event");
        assert_eq!(e.kind, EventKind::State);
        let v: serde_json::Value = serde_json::from_str(&e.data).expect("json");
        assert_eq!(v["to"], "offline");
        assert_eq!(v["cause"], "will");
        assert_eq!(v["at"], "2025-11-28T11:47:20+00:00");
        assert_eq!(v["name"], "roof");
    }

    #[test]
    fn resume_replays_what_is_buffered_or_asks_for_a_resync() {
        let h = hub(3, 8);
        for i in 0..5 {
            h.publish(EventKind::State, format!("{i}"));
        }
        // Ring holds seq 3, 4, 5.
        let s = h.subscribe(Some("1000-2"));
        assert_eq!(s.resync, None);
        assert_eq!(
            s.replay.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        let s = h.subscribe(Some("1000-4"));
        assert_eq!(s.replay.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
        let s = h.subscribe(Some("1000-1"));
        assert_eq!(s.resync, Some("buffer_exceeded"));
        assert!(s.replay.is_empty());
        assert_eq!(h.subscribe(Some("999-4")).resync, Some("unknown_id"));
        assert_eq!(h.subscribe(Some("1000-77")).resync, Some("unknown_id"));
        assert_eq!(h.subscribe(Some("garbage")).resync, Some("unknown_id"));
        assert_eq!(h.subscribe(Some("1000-5")).replay.len(), 0);
    }

    #[test]
    fn publishing_never_waits_for_a_subscriber_that_does_not_read() {
        let h = hub(16, 4);
        let mut slow = h.subscribe(None);
        for i in 0..10_000 {
            h.publish(EventKind::Alert, format!("{i}"));
        }
        assert!(matches!(
            slow.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
    }
}
