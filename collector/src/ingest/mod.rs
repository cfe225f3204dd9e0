//! Ingest: MQTT publishes → validated, registered node messages for the core.
//!
//! Every message goes through [`alarmnet_protocol::decode`]; what passes is then checked
//! against the node registry:
//! - only a **birth** registers a node, and only under the registration policy (`open`, or
//!   an allowlist) and while fewer than `max_nodes` are registered (`node_cap`). A flood of
//!   invented ids therefore costs a counter increment each, never memory or store rows;
//! - any other message from an unregistered node is rejected (`unknown_node`): the node's
//!   retained birth arrives with the subscription, and a live agent sends one on every
//!   connect;
//! - a node id is bound to the region and site of its birth. Design: a relocated node is
//!   accepted as a **move** when it sends a birth under its new path whose agent `ts` is
//!   newer than the birth that made the current binding (counted in
//!   `alarmnet_node_moves_total`); an older birth under another path (the stale retained
//!   birth left on the old topic) and every non-birth message under a path other than the
//!   bound one are rejected (`moved`). Ids stay unique in the whole network, as the
//!   protocol requires.
//!
//! Rejections are counted per reason and logged at most once per reason per window, with
//! the number suppressed since, so a hostile flood cannot flood the log.
//!
//! Each registered node is rate-limited per message kind ([`limit`]: `[ingest] node_rate`,
//! `node_burst`): a node publishing thousands of messages a second is cut down to its rate
//! before decoding, its excess counted (`rate_limited`), and a Last Will always passes.

pub mod config;
pub mod limit;
pub mod mqtt;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alarmnet_protocol::{
    Birth, DecodeError, Fault, Heartbeat, Message, NodeId, NodePath, NodeState, NodeTopic, Prefix,
    RegionId, SiteId, State, TestReceipt, Topic,
};
use tokio::time::Instant;

use crate::metrics::Metrics;
pub use crate::model::RejectReason;
use crate::model::UnixMillis;
pub use config::{IngestConfig, Registration, read_allowlist};

/// A message from a node that the core should act on.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeMessage {
    Birth(Box<Birth>),
    State(State),
    Heartbeat(Heartbeat),
    Fault(Fault),
    Test(TestReceipt),
}

/// What ingest hands to the core, in arrival order, over one bounded channel.
// Node messages are nearly all the traffic: boxing them would cost an allocation each for
// nothing, the rare broker events are merely as large.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum CoreEvent {
    /// An accepted message from a registered node (a birth registers it first).
    Node {
        path: NodePath,
        message: NodeMessage,
        received_at: UnixMillis,
        /// The MQTT retain flag of the delivery: a retained birth or state is the broker's
        /// memory, not a sign of life now.
        retained: bool,
    },
    /// The broker connection is up (sent on every ConnAck). With `session_present = false`
    /// the broker lost the session: messages queued for the collector may be gone.
    BrokerConnected {
        at: UnixMillis,
        session_present: bool,
    },
    /// The broker connection was lost: the collector is blind from `at`.
    BrokerLost { at: UnixMillis },
    /// A link check's marker came back through the broker: every message received before
    /// this event was delivered by a broker that was running normally (see
    /// [`crate::liveness::wills`]).
    LinkConfirmed { at: UnixMillis },
}

impl CoreEvent {
    /// The same event with the MQTT retain flag of its delivery (node messages only).
    pub fn retained(mut self, retain: bool) -> Self {
        if let CoreEvent::Node { retained, .. } = &mut self {
            *retained = retain;
        }
        self
    }
}

/// Where a node is registered, and the agent `ts` of the birth that put it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub region: RegionId,
    pub site: SiteId,
    pub birth_ts: u64,
}

/// A rejected message: why, and what to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
}

impl Rejection {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The ingest stage: decode, registry checks, counting and rate-limited logging.
#[derive(Debug)]
pub struct Ingest {
    prefix: Prefix,
    max_nodes: usize,
    max_future_skew: Duration,
    allowlist: Option<HashSet<NodeId>>,
    /// foldhash: looked up per message (see the workspace Cargo.toml). Only births under
    /// the registration policy and the node cap add entries, so invented ids cannot grow it.
    registry: foldhash::HashMap<NodeId, Binding>,
    metrics: Arc<Metrics>,
    log: RejectLog,
    rebirth: RebirthAsk,
    /// Per-node token buckets; `None` when `node_rate` is 0.
    limits: Option<limit::NodeLimits>,
}

/// Most `rebirth` requests per second for nodes heard without a birth: a node that lost
/// its birth (store wiped, broker restarted without its retained messages) is asked to
/// send it again, and a flood of invented ids cannot turn into a flood of commands.
const REBIRTHS_PER_SECOND: u32 = 20;

/// The same node is asked again after this long at the earliest.
const REBIRTH_AGAIN: Duration = Duration::from_secs(60);

/// Nodes to ask for a birth, rate-limited and bounded.
#[derive(Debug)]
struct RebirthAsk {
    asked: HashMap<NodeId, Instant>,
    second: Instant,
    in_second: u32,
    due: Vec<NodePath>,
}

impl RebirthAsk {
    fn new() -> Self {
        Self {
            asked: HashMap::new(),
            second: Instant::now(),
            in_second: 0,
            due: Vec::new(),
        }
    }

    fn ask(&mut self, path: &NodePath, now: Instant) {
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.in_second = 0;
            self.asked
                .retain(|_, at| now.duration_since(*at) < REBIRTH_AGAIN);
        }
        if self.in_second >= REBIRTHS_PER_SECOND
            || self
                .asked
                .get(&path.node)
                .is_some_and(|at| now.duration_since(*at) < REBIRTH_AGAIN)
        {
            return;
        }
        self.in_second += 1;
        self.asked.insert(path.node.clone(), now);
        self.due.push(path.clone());
    }
}

impl Ingest {
    /// `known` is the registry restored from the store.
    pub fn new(
        prefix: Prefix,
        config: &IngestConfig,
        allowlist: Option<HashSet<NodeId>>,
        known: impl IntoIterator<Item = (NodeId, Binding)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let registry: foldhash::HashMap<_, _> = known.into_iter().collect();
        metrics.nodes_tracked.store(registry.len() as u64, Relaxed);
        let allowlist = match config.registration {
            Registration::Open => None,
            Registration::Allowlist => Some(allowlist.unwrap_or_default()),
        };
        Self {
            prefix,
            max_nodes: config.max_nodes,
            max_future_skew: config.max_future_skew,
            allowlist,
            registry,
            log: RejectLog::new(config.reject_log_window),
            rebirth: RebirthAsk::new(),
            limits: limit::NodeLimits::new(
                config.node_rate,
                config.node_burst,
                config.reject_log_window,
                metrics.clone(),
            ),
            metrics,
        }
    }

    /// Nodes heard without a birth that may register (room under the cap, allowed): send
    /// each a `rebirth` command. Rate-limited (see [`REBIRTHS_PER_SECOND`]).
    pub fn take_rebirths(&mut self) -> Vec<NodePath> {
        std::mem::take(&mut self.rebirth.due)
    }

    /// The number of registered nodes.
    pub fn registered(&self) -> usize {
        self.registry.len()
    }

    /// Handles one publish: counts it, and returns what the core must see, if anything.
    /// `None` for rejections (counted and perhaps logged) and for ignored topics.
    pub fn handle(&mut self, topic: &str, payload: &[u8], now: UnixMillis) -> Option<CoreEvent> {
        // Commands are the collector's own (or an operator's) traffic to agents.
        if topic.ends_with("/cmd") {
            return None;
        }
        // An empty payload on a birth or state topic is somebody deleting the retained copy
        // (how a node's topics are cleaned up when it is taken out of service): MQTT's
        // convention, not a malformed message. The node itself stays known until it is
        // forgotten; its silence is judged as usual.
        if payload.is_empty() && (topic.ends_with("/birth") || topic.ends_with("/state")) {
            self.metrics.retained_cleared.fetch_add(1, Relaxed);
            tracing::info!(topic, "retained message cleared");
            return None;
        }
        self.metrics.received.fetch_add(1, Relaxed);
        // The topic is parsed once: the rate limit reads it, then the payload is decoded on it.
        let parsed = Topic::parse(&self.prefix, topic);
        if let Ok(t) = &parsed
            && self.over_limit_before_decode(t, now)
        {
            self.metrics.rejected(RejectReason::RateLimited);
            return None;
        }
        let decoded = match parsed {
            Ok(t) => alarmnet_protocol::decode_on(t, payload),
            // The decoder words the bad topic the way every rejection reads.
            Err(_) => alarmnet_protocol::decode(&self.prefix, topic, payload),
        };
        match self.classify_decoded(decoded, now) {
            Ok(event) if self.over_limit_after_decode(&event, now) => {
                self.metrics.rejected(RejectReason::RateLimited);
                None
            }
            Ok(event) => {
                self.metrics.accepted.fetch_add(1, Relaxed);
                Some(event)
            }
            Err(rejection) => {
                if rejection.reason == RejectReason::UnknownNode
                    && let Ok(Topic::Node(path, _)) = Topic::parse(&self.prefix, topic)
                    && self.registry.len() < self.max_nodes
                    && self
                        .allowlist
                        .as_ref()
                        .is_none_or(|a| a.contains(&path.node))
                {
                    self.rebirth.ask(&path, Instant::now());
                }
                self.metrics.rejected(rejection.reason);
                self.log.rejected(&rejection, topic, Instant::now());
                None
            }
        }
    }

    /// Heartbeats, faults and test receipts of a registered node beyond its rate: dropped
    /// before they cost a decode.
    fn over_limit_before_decode(&mut self, topic: &Topic, now: UnixMillis) -> bool {
        let Some(limits) = &mut self.limits else {
            return false;
        };
        let Topic::Node(path, kind) = topic else {
            return false;
        };
        matches!(
            kind,
            NodeTopic::Heartbeat | NodeTopic::Fault | NodeTopic::Test
        ) && self.registry.contains_key(&path.node)
            && !limits.admit(&path.node, *kind, now)
    }

    /// Births and states beyond their node's rate (their own buckets, so a flood of other
    /// messages never starves them). A Last Will (`offline` other than a clean stop is
    /// the broker's word that the node is gone) and a clean `offline` are never limited.
    fn over_limit_after_decode(&mut self, event: &CoreEvent, now: UnixMillis) -> bool {
        let Some(limits) = &mut self.limits else {
            return false;
        };
        let CoreEvent::Node { path, message, .. } = event else {
            return false;
        };
        let kind = match message {
            NodeMessage::Birth(_) => NodeTopic::Birth,
            NodeMessage::State(s) if s.state != NodeState::Offline => NodeTopic::State,
            _ => return false,
        };
        !limits.admit(&path.node, kind, now)
    }

    /// Decides about one message without counting it.
    pub fn classify(
        &mut self,
        topic: &str,
        payload: &[u8],
        now: UnixMillis,
    ) -> Result<CoreEvent, Rejection> {
        self.classify_decoded(alarmnet_protocol::decode(&self.prefix, topic, payload), now)
    }

    /// [`Ingest::classify`] of a message already decoded (or refused by the decoder).
    fn classify_decoded(
        &mut self,
        decoded: Result<alarmnet_protocol::Envelope, DecodeError>,
        now: UnixMillis,
    ) -> Result<CoreEvent, Rejection> {
        let envelope = decoded.map_err(|e| Rejection::new(e.reason.into(), e.to_string()))?;
        let Topic::Node(path, _) = envelope.topic else {
            return Err(Rejection::new(
                RejectReason::BadTopic,
                "not a node topic (collector and alert topics are not ingested)",
            ));
        };
        if let Some(ts) = agent_ts(&envelope.message)
            && UnixMillis::from_millis(ts) > now + self.max_future_skew
        {
            return Err(Rejection::new(
                RejectReason::FutureTs,
                format!(
                    "node {}: message dated {} s ahead of the collector's clock \
                     (ingest.max_future_skew)",
                    path.node,
                    UnixMillis::from_millis(ts).millis_since(now) / 1000
                ),
            ));
        }
        let message = match envelope.message {
            Message::Birth(birth) => {
                self.register(&path, &birth)?;
                NodeMessage::Birth(Box::new(birth))
            }
            other => {
                self.check_bound(&path)?;
                match other {
                    Message::State(m) => NodeMessage::State(m),
                    Message::Heartbeat(m) => NodeMessage::Heartbeat(m),
                    Message::Fault(m) => NodeMessage::Fault(m),
                    Message::Test(m) => NodeMessage::Test(m),
                    _ => {
                        return Err(Rejection::new(
                            RejectReason::BadTopic,
                            "not a message agents send",
                        ));
                    }
                }
            }
        };
        Ok(CoreEvent::Node {
            path,
            message,
            received_at: now,
            retained: false,
        })
    }

    fn register(&mut self, path: &NodePath, birth: &Birth) -> Result<(), Rejection> {
        if let Some(bound) = self.registry.get_mut(&path.node) {
            if bound.region == path.region && bound.site == path.site {
                bound.birth_ts = bound.birth_ts.max(birth.ts);
                return Ok(());
            }
            if birth.ts <= bound.birth_ts {
                return Err(Rejection::new(
                    RejectReason::Moved,
                    format!(
                        "node {} is registered under {}/{} by a newer birth; \
                         this birth under {}/{} is stale",
                        path.node, bound.region, bound.site, path.region, path.site
                    ),
                ));
            }
            tracing::warn!(
                node = %path.node,
                from = %format_args!("{}/{}", bound.region, bound.site),
                to = %format_args!("{}/{}", path.region, path.site),
                "node moved"
            );
            self.metrics.node_moves.fetch_add(1, Relaxed);
            *bound = Binding {
                region: path.region.clone(),
                site: path.site.clone(),
                birth_ts: birth.ts,
            };
            return Ok(());
        }
        if let Some(allowed) = &self.allowlist
            && !allowed.contains(&path.node)
        {
            return Err(Rejection::new(
                RejectReason::NotAllowed,
                format!("node {} is not on the allowlist", path.node),
            ));
        }
        if self.registry.len() >= self.max_nodes {
            return Err(Rejection::new(
                RejectReason::NodeCap,
                format!(
                    "{} nodes registered, the configured maximum (ingest.max_nodes)",
                    self.registry.len()
                ),
            ));
        }
        self.registry.insert(
            path.node.clone(),
            Binding {
                region: path.region.clone(),
                site: path.site.clone(),
                birth_ts: birth.ts,
            },
        );
        self.metrics
            .nodes_tracked
            .store(self.registry.len() as u64, Relaxed);
        Ok(())
    }

    fn check_bound(&self, path: &NodePath) -> Result<(), Rejection> {
        match self.registry.get(&path.node) {
            None => Err(Rejection::new(
                RejectReason::UnknownNode,
                format!("node {} has not sent a birth", path.node),
            )),
            Some(b) if b.region != path.region || b.site != path.site => Err(Rejection::new(
                RejectReason::Moved,
                format!(
                    "node {} is registered under {}/{}, not {}/{}",
                    path.node, b.region, b.site, path.region, path.site
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// The agent's `ts` of a node message, where it has one.
fn agent_ts(message: &Message) -> Option<u64> {
    match message {
        Message::Birth(m) => Some(m.ts),
        Message::State(m) => m.ts,
        Message::Heartbeat(m) => Some(m.ts),
        Message::Fault(m) => Some(m.ts),
        Message::Test(m) => Some(m.ts),
        _ => None,
    }
}

/// At most one warning per reason per window; the count of the others goes in the next.
#[derive(Debug)]
struct RejectLog {
    window: Duration,
    last: [Option<Instant>; RejectReason::COUNT],
    suppressed: [u64; RejectReason::COUNT],
}

impl RejectLog {
    fn new(window: Duration) -> Self {
        Self {
            window,
            last: [None; RejectReason::COUNT],
            suppressed: [0; RejectReason::COUNT],
        }
    }

    /// Returns whether it logged.
    fn rejected(&mut self, r: &Rejection, topic: &str, now: Instant) -> bool {
        let i = r.reason as usize;
        if let Some(last) = self.last[i]
            && now.duration_since(last) < self.window
        {
            self.suppressed[i] += 1;
            return false;
        }
        // Hostile topics can be long: log a bounded prefix.
        let topic: String = topic.chars().take(160).collect();
        let detail: String = r.detail.chars().take(300).collect();
        tracing::warn!(
            reason = r.reason.as_str(),
            topic = %topic,
            detail = %detail,
            suppressed = self.suppressed[i],
            "message rejected (further {} rejections are counted, logged at most every {})",
            r.reason.as_str(),
            humantime::format_duration(self.window)
        );
        self.last[i] = Some(now);
        self.suppressed[i] = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ms;

    fn ingest(max_nodes: usize, allow: Option<&[&str]>) -> Ingest {
        let config = IngestConfig {
            max_nodes,
            registration: if allow.is_some() {
                Registration::Allowlist
            } else {
                Registration::Open
            },
            ..IngestConfig::default()
        };
        let allowlist = allow.map(|ids| {
            ids.iter()
                .map(|i| NodeId::new(*i).expect("valid id"))
                .collect()
        });
        Ingest::new(
            Prefix::default(),
            &config,
            allowlist,
            [],
            Arc::new(Metrics::new()),
        )
    }

    fn birth(region: &str, site: &str, node: &str, ts: u64) -> (String, Vec<u8>) {
        let topic = format!("alarmnet/v1/{region}/{site}/{node}/birth");
        let body = format!(
            r#"{{"v":1,"boot":"b0000001","ts":{ts},"node":"{node}","site":"{site}",
                "region":"{region}","kind":"siren","hb_interval_s":10}}"#
        );
        (topic, body.into_bytes())
    }

    fn hb(region: &str, site: &str, node: &str) -> (String, Vec<u8>) {
        let topic = format!("alarmnet/v1/{region}/{site}/{node}/hb");
        let body = r#"{"v":1,"boot":"b0000001","seq":1,"ts":5}"#;
        (topic, body.as_bytes().to_vec())
    }

    fn reason(i: &mut Ingest, (topic, body): (String, Vec<u8>)) -> Option<RejectReason> {
        i.classify(&topic, &body, UnixMillis::from_millis(1))
            .err()
            .map(|r| r.reason)
    }

    #[test]
    fn protocol_reasons_are_kept() {
        let mut i = ingest(10, None);
        let cases: [(&str, &[u8], RejectReason); 6] = [
            ("other/x/y/z/hb", b"{}", RejectReason::BadTopic),
            ("alarmnet/v1/r/s/n/hb", b"nope", RejectReason::BadJson),
            (
                "alarmnet/v1/r/s/n/hb",
                br#"{"v":2}"#,
                RejectReason::UnsupportedVersion,
            ),
            (
                "alarmnet/v1/r/s/n/hb",
                br#"{"v":1,"boot":"b0000001","seq":1}"#,
                RejectReason::MissingField,
            ),
            (
                "alarmnet/v1/r/s/n/hb",
                br#"{"v":1,"boot":"b0000001","seq":"1","ts":1}"#,
                RejectReason::InvalidField,
            ),
            (
                "alarmnet/v1/$collector/c/state",
                br#"{"v":1,"state":"online"}"#,
                RejectReason::BadTopic,
            ),
        ];
        for (topic, body, want) in cases {
            let got = i
                .classify(topic, body, UnixMillis::from_millis(1))
                .expect_err(topic)
                .reason;
            assert_eq!(got, want, "{topic} {}", String::from_utf8_lossy(body));
        }
        let huge = vec![b' '; 17 * 1024];
        assert_eq!(
            i.classify("alarmnet/v1/r/s/n/hb", &huge, UnixMillis::from_millis(1))
                .expect_err("huge")
                .reason,
            RejectReason::TooLarge
        );
        let (topic, body) = birth("r", "s", "n", 1);
        let wrong = String::from_utf8(body)
            .expect("utf8")
            .replace("\"site\":\"s\"", "\"site\":\"t\"");
        assert_eq!(
            i.classify(&topic, wrong.as_bytes(), UnixMillis::from_millis(1))
                .expect_err("mismatch")
                .reason,
            RejectReason::IdMismatch
        );
        assert_eq!(i.registered(), 0);
    }

    #[test]
    fn messages_dated_in_the_future_are_rejected_and_cannot_pin_a_node() {
        const NOW: u64 = 1_764_330_000_000;
        const DAY: u64 = 86_400_000;
        let metrics = Arc::new(Metrics::new());
        let mut i = Ingest::new(
            Prefix::default(),
            &IngestConfig::default(),
            None,
            [],
            metrics.clone(),
        );
        let at = |i: &mut Ingest, (topic, body): (String, Vec<u8>), now: u64| {
            i.handle(&topic, &body, UnixMillis::from_millis(now))
                .is_some()
        };
        // A birth a day ahead: rejected and counted, nothing registered.
        assert!(!at(&mut i, birth("r", "a", "n", NOW + DAY), NOW));
        assert_eq!(metrics.rejected_count(RejectReason::FutureTs), 1);
        assert_eq!(i.registered(), 0);
        // Within the 5 min allowance: accepted.
        assert!(at(&mut i, birth("r", "a", "n", NOW + 299_000), NOW));
        // The honest birth of the node at its new place, an hour later, moves it: the
        // future-dated birth pinned nothing.
        assert!(at(
            &mut i,
            birth("r", "b", "n", NOW + 3_600_000),
            NOW + 3_600_000
        ));
        // A birth dated in the past is accepted where the node is, but never moves it back.
        assert!(at(&mut i, birth("r", "b", "n", NOW - DAY), NOW + 3_600_001));
        let (topic, body) = birth("r", "a", "n", NOW + 10);
        assert_eq!(
            i.classify(&topic, &body, UnixMillis::from_millis(NOW) + ms(3_600_002))
                .map_err(|r| r.reason),
            Err(RejectReason::Moved)
        );
        // Any message type: a heartbeat dated a day ahead.
        let hb = format!(
            r#"{{"v":1,"boot":"b0000001","seq":1,"ts":{}}}"#,
            NOW + 2 * DAY
        );
        assert_eq!(
            i.classify(
                "alarmnet/v1/r/b/n/hb",
                hb.as_bytes(),
                UnixMillis::from_millis(NOW) + ms(DAY)
            )
            .map_err(|r| r.reason),
            Err(RejectReason::FutureTs)
        );
    }

    #[test]
    fn only_births_register_and_the_cap_holds() {
        let mut i = ingest(2, None);
        assert_eq!(
            reason(&mut i, hb("r", "s", "a")),
            Some(RejectReason::UnknownNode)
        );
        assert_eq!(reason(&mut i, birth("r", "s", "a", 1)), None);
        assert_eq!(reason(&mut i, hb("r", "s", "a")), None);
        assert_eq!(reason(&mut i, birth("r", "s", "b", 1)), None);
        assert_eq!(
            reason(&mut i, birth("r", "s", "c", 1)),
            Some(RejectReason::NodeCap)
        );
        assert_eq!(
            reason(&mut i, hb("r", "s", "c")),
            Some(RejectReason::UnknownNode)
        );
        // A known node's rebirth is always accepted, even at the cap.
        assert_eq!(reason(&mut i, birth("r", "s", "a", 2)), None);
        assert_eq!(i.registered(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_heard_without_a_birth_are_asked_for_one_within_limits() {
        let mut i = ingest(1_000, None);
        let (topic, body) = hb("r", "s", "a");
        assert!(
            i.handle(&topic, &body, UnixMillis::from_millis(1))
                .is_none(),
            "rejected: no birth"
        );
        assert!(
            i.handle(&topic, &body, UnixMillis::from_millis(2))
                .is_none()
        );
        let asked = i.take_rebirths();
        assert_eq!(asked.len(), 1, "asked once, not per message: {asked:?}");
        assert_eq!(asked[0].node.as_str(), "a");
        assert!(i.take_rebirths().is_empty());
        // A flood of invented ids: at most REBIRTHS_PER_SECOND commands a second.
        tokio::time::advance(Duration::from_secs(1)).await;
        for n in 0..500 {
            let (topic, body) = hb("r", "s", &format!("x{n}"));
            i.handle(&topic, &body, UnixMillis::from_millis(3));
        }
        assert_eq!(i.take_rebirths().len(), REBIRTHS_PER_SECOND as usize);
        tokio::time::advance(Duration::from_secs(1)).await;
        i.handle(&topic, &body, UnixMillis::from_millis(4));
        assert!(
            i.take_rebirths().is_empty(),
            "a is not asked again within a minute"
        );
        // Not allowed to register: never asked.
        let mut only = ingest(10, Some(&["ok"]));
        let (topic, body) = hb("r", "s", "intruder");
        only.handle(&topic, &body, UnixMillis::from_millis(1));
        assert!(only.take_rebirths().is_empty());
    }

    #[test]
    fn allowlist_decides_registration() {
        let mut i = ingest(10, Some(&["a"]));
        assert_eq!(
            reason(&mut i, birth("r", "s", "b", 1)),
            Some(RejectReason::NotAllowed)
        );
        assert_eq!(reason(&mut i, birth("r", "s", "a", 1)), None);
        assert_eq!(i.registered(), 1);
    }

    #[test]
    fn a_node_is_bound_to_its_site_until_a_newer_birth_moves_it() {
        let mut i = ingest(10, None);
        assert_eq!(reason(&mut i, birth("r", "s", "a", 100)), None);
        assert_eq!(reason(&mut i, hb("r", "t", "a")), Some(RejectReason::Moved));
        // The old retained birth under another site is stale.
        assert_eq!(
            reason(&mut i, birth("r", "t", "a", 50)),
            Some(RejectReason::Moved)
        );
        assert_eq!(reason(&mut i, birth("r", "t", "a", 200)), None);
        assert_eq!(i.metrics.node_moves.load(Relaxed), 1);
        assert_eq!(reason(&mut i, hb("r", "t", "a")), None);
        assert_eq!(reason(&mut i, hb("r", "s", "a")), Some(RejectReason::Moved));
        assert_eq!(i.registered(), 1);
    }

    #[test]
    fn an_empty_birth_or_state_is_a_cleared_retained_copy_not_garbage() {
        let mut i = ingest(10, None);
        assert!(
            i.handle("alarmnet/v1/r/s/a/birth", b"", UnixMillis::from_millis(7))
                .is_none()
        );
        assert!(
            i.handle("alarmnet/v1/r/s/a/state", b"", UnixMillis::from_millis(7))
                .is_none()
        );
        assert!(
            i.handle("alarmnet/v1/r/s/a/hb", b"", UnixMillis::from_millis(7))
                .is_none()
        );
        assert_eq!(i.metrics.retained_cleared.load(Relaxed), 2);
        assert_eq!(i.metrics.received.load(Relaxed), 1);
        assert_eq!(i.metrics.rejected_count(RejectReason::BadJson), 1);
    }

    #[test]
    fn handle_counts_and_ignores_commands() {
        let mut i = ingest(10, None);
        let (t, b) = birth("r", "s", "a", 1);
        assert!(i.handle(&t, &b, UnixMillis::from_millis(7)).is_some());
        assert!(
            i.handle("alarmnet/v1/r/s/a/cmd", b"{}", UnixMillis::from_millis(7))
                .is_none()
        );
        assert!(
            i.handle("alarmnet/v1/r/s/a/hb", b"[]", UnixMillis::from_millis(7))
                .is_none()
        );
        assert_eq!(i.metrics.received.load(Relaxed), 2);
        assert_eq!(i.metrics.accepted.load(Relaxed), 1);
        assert_eq!(i.metrics.rejected_count(RejectReason::BadJson), 1);
    }

    #[test]
    fn rejections_are_logged_once_per_window() {
        let mut log = RejectLog::new(Duration::from_secs(10));
        let r = Rejection::new(RejectReason::BadJson, "x");
        let other = Rejection::new(RejectReason::NodeCap, "y");
        let t0 = Instant::now();
        assert!(log.rejected(&r, "t", t0));
        assert!(!log.rejected(&r, "t", t0 + Duration::from_secs(1)));
        assert!(!log.rejected(&r, "t", t0 + Duration::from_secs(9)));
        assert!(log.rejected(&other, "t", t0 + Duration::from_secs(9)));
        assert_eq!(log.suppressed[RejectReason::BadJson as usize], 2);
        assert!(log.rejected(&r, "t", t0 + Duration::from_secs(10)));
        assert_eq!(log.suppressed[RejectReason::BadJson as usize], 0);
    }

    #[test]
    fn a_flooding_node_is_limited_and_its_will_still_passes() {
        let config = IngestConfig {
            node_rate: 10.0,
            node_burst: 20,
            ..IngestConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let mut i = Ingest::new(Prefix::default(), &config, None, [], metrics.clone());
        for node in ["flood", "calm"] {
            let (t, b) = birth("r", "s", node, 1);
            assert!(i.handle(&t, &b, UnixMillis::from_millis(1_000)).is_some());
        }
        let fault = |seq: u64| {
            format!(
                r#"{{"v":1,"boot":"b0000001","seq":{seq},"ts":5,"check":"amp","code":"X",
                    "severity":"major","status":"raised"}}"#
            )
        };
        let passed = (0..5_000u64)
            .filter(|seq| {
                i.handle(
                    "alarmnet/v1/r/s/flood/fault",
                    fault(*seq).as_bytes(),
                    UnixMillis::from_millis(1_000),
                )
                .is_some()
            })
            .count();
        assert_eq!(passed, 20, "the burst only");
        assert_eq!(metrics.rejected_count(RejectReason::RateLimited), 4_980);
        // Its heartbeat, a state, and the other node are not starved.
        let (t, b) = hb("r", "s", "flood");
        assert!(i.handle(&t, &b, UnixMillis::from_millis(1_001)).is_some());
        let online = br#"{"v":1,"boot":"b0000001","state":"online","ts":5}"#;
        assert!(
            i.handle(
                "alarmnet/v1/r/s/flood/state",
                online,
                UnixMillis::from_millis(1_001)
            )
            .is_some()
        );
        let (t, b) = hb("r", "s", "calm");
        assert!(i.handle(&t, &b, UnixMillis::from_millis(1_001)).is_some());
        // However many states it sent, its Will always passes.
        for _ in 0..100 {
            i.handle(
                "alarmnet/v1/r/s/flood/state",
                online,
                UnixMillis::from_millis(1_002),
            );
        }
        let will = br#"{"v":1,"boot":"b0000001","state":"offline","reason":"lost"}"#;
        assert!(
            i.handle(
                "alarmnet/v1/r/s/flood/state",
                will,
                UnixMillis::from_millis(1_002)
            )
            .is_some()
        );
        // A second later: ten more faults.
        let passed = (0..100u64)
            .filter(|seq| {
                i.handle(
                    "alarmnet/v1/r/s/flood/fault",
                    fault(*seq).as_bytes(),
                    UnixMillis::from_millis(2_000),
                )
                .is_some()
            })
            .count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn node_rate_zero_turns_the_limit_off() {
        let config = IngestConfig {
            node_rate: 0.0,
            ..IngestConfig::default()
        };
        let metrics = Arc::new(Metrics::new());
        let mut i = Ingest::new(Prefix::default(), &config, None, [], metrics.clone());
        let (t, b) = birth("r", "s", "a", 1);
        assert!(i.handle(&t, &b, UnixMillis::from_millis(1)).is_some());
        let (t, b) = hb("r", "s", "a");
        assert!((0..5_000).all(|_| i.handle(&t, &b, UnixMillis::from_millis(1)).is_some()));
        assert_eq!(metrics.rejected_count(RejectReason::RateLimited), 0);
    }

    #[test]
    fn reason_labels_are_unique() {
        let labels: HashSet<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RejectReason::COUNT);
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
