//! Per-node rate limits at ingest: one node cannot drown the feed.
//!
//! Design: a token bucket per registered node **and per message kind** (birth, state,
//! heartbeat, fault, test), all refilled at `[ingest] node_rate` messages per second up to
//! `node_burst`. A flood of one kind never starves another: a node publishing thousands of
//! faults a second still has its heartbeats, births and states heard, so it is not declared
//! offline for its own flood, and nobody else's messages wait behind it in the core. A Last
//! Will (an `offline` state) is never limited at all: a node's `offline` must always be
//! judged. Excess messages are dropped before they are decoded (heartbeats, faults, tests)
//! or before the core (births, states), counted as
//! `alarmnet_messages_rejected_total{reason="rate_limited"}`, counted per node, and logged
//! at WARN at most once per node per `reject_log_window` with the number dropped since.
//!
//! Per-node counts are exposed without a node id label on every node (label sets stay
//! bounded): `/metrics` shows `alarmnet_node_rate_limited_total{node}` for the
//! [`TOP_OFFENDERS`] nodes with the most drops since the start, refreshed at most once a
//! second (by the next message of any node after a drop), and `alarmnet_nodes_rate_limited`,
//! the number of nodes that had any.
//!
//! Buckets exist only for registered nodes (the registry is bounded by `max_nodes`), so
//! invented ids cost no memory here either. The clock is the collector's [`UnixMillis`], passed
//! in: the limiter is pure and tested without sleeping.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use alarmnet_protocol::{NodeId, NodeTopic};

use crate::metrics::Metrics;
use crate::model::UnixMillis;

/// How many of the worst offenders `/metrics` names.
pub const TOP_OFFENDERS: usize = 10;

/// The top offenders are recomputed at most this often (only while nodes are limited).
const TOP_REFRESH: Duration = Duration::from_secs(1);

/// The message kinds with a bucket of their own.
const KINDS: usize = 5;

fn kind_index(kind: NodeTopic) -> Option<usize> {
    match kind {
        NodeTopic::Birth => Some(0),
        NodeTopic::State => Some(1),
        NodeTopic::Heartbeat => Some(2),
        NodeTopic::Fault => Some(3),
        NodeTopic::Test => Some(4),
        NodeTopic::Command => None,
    }
}

/// One node's buckets, refilled together.
#[derive(Debug, Clone)]
struct NodeBuckets {
    /// When the tokens were last refilled.
    at: UnixMillis,
    tokens: [f32; KINDS],
    /// Messages dropped since the start.
    dropped: u64,
    /// Messages dropped since the last warning.
    unlogged: u64,
    warned_at: Option<UnixMillis>,
}

/// The per-node token buckets of the ingest stage.
#[derive(Debug)]
pub struct NodeLimits {
    /// Tokens per millisecond.
    per_ms: f64,
    burst: f32,
    log_window: Duration,
    /// foldhash: looked up per message (see the workspace Cargo.toml).
    nodes: foldhash::HashMap<NodeId, NodeBuckets>,
    /// Nodes that had at least one message dropped.
    offenders: HashSet<NodeId>,
    top_refreshed: Option<UnixMillis>,
    /// Drops since the counts were last handed to `/metrics`.
    dirty: bool,
    metrics: Arc<Metrics>,
}

impl NodeLimits {
    /// `rate` messages per second per node and kind, up to `burst` at once. `None` when
    /// `rate` is 0 (limits off).
    pub fn new(rate: f64, burst: u32, log_window: Duration, metrics: Arc<Metrics>) -> Option<Self> {
        if rate <= 0.0 || !rate.is_finite() {
            return None;
        }
        Some(Self {
            per_ms: rate / 1000.0,
            burst: burst.max(1) as f32,
            log_window,
            nodes: foldhash::HashMap::default(),
            offenders: HashSet::new(),
            top_refreshed: None,
            dirty: false,
            metrics,
        })
    }

    /// Whether a message of `kind` from the registered node `node` may pass at `now`. Takes
    /// a token when it does; counts, logs (rate-limited) and returns `false` when not.
    pub fn admit(&mut self, node: &NodeId, kind: NodeTopic, now: UnixMillis) -> bool {
        let Some(k) = kind_index(kind) else {
            return true;
        };
        // Any node's traffic brings the published counts up to date after a flood ends.
        if self.dirty && self.top_refreshed.is_none_or(|at| now - at >= TOP_REFRESH) {
            self.top_refreshed = Some(now);
            self.publish();
        }
        let burst = self.burst;
        let b = match self.nodes.get_mut(node) {
            Some(b) => b,
            None => self.nodes.entry(node.clone()).or_insert(NodeBuckets {
                at: now,
                tokens: [burst; KINDS],
                dropped: 0,
                unlogged: 0,
                warned_at: None,
            }),
        };
        let elapsed = now.millis_since(b.at);
        if elapsed > 0 {
            let add = (elapsed as f64 * self.per_ms) as f32;
            for t in &mut b.tokens {
                *t = (*t + add).min(burst);
            }
            b.at = now;
        }
        if b.tokens[k] >= 1.0 {
            b.tokens[k] -= 1.0;
            return true;
        }
        b.dropped += 1;
        b.unlogged += 1;
        if b.warned_at.is_none_or(|at| now - at >= self.log_window) {
            tracing::warn!(
                node = %node,
                kind = ?kind,
                dropped = b.unlogged,
                dropped_total = b.dropped,
                rate = self.per_ms * 1000.0,
                burst = self.burst,
                "node rate-limited: messages dropped at ingest (ingest.node_rate, \
                 logged at most once per node per reject_log_window)"
            );
            b.warned_at = Some(now);
            b.unlogged = 0;
        }
        if b.dropped == 1 {
            self.offenders.insert(node.clone());
        }
        self.dirty = true;
        if self.top_refreshed.is_none_or(|at| now - at >= TOP_REFRESH) {
            self.top_refreshed = Some(now);
            self.publish();
        }
        false
    }

    /// Hands the worst offenders and their number to `/metrics` now (normally done at most
    /// once a second while messages are dropped).
    pub fn publish(&mut self) {
        self.dirty = false;
        self.metrics
            .set_rate_limited(self.top(TOP_OFFENDERS), self.offenders.len());
    }

    /// The `n` nodes with the most dropped messages, most first (ties by id).
    pub fn top(&self, n: usize) -> Vec<(NodeId, u64)> {
        let mut all: Vec<(NodeId, u64)> = self
            .offenders
            .iter()
            .filter_map(|id| self.nodes.get(id).map(|b| (id.clone(), b.dropped)))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Messages dropped for `node` since the start.
    pub fn dropped(&self, node: &NodeId) -> u64 {
        self.nodes.get(node).map_or(0, |b| b.dropped)
    }

    /// Nodes with a bucket (registered nodes heard since the start).
    pub fn tracked(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ms;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("valid id")
    }

    fn limits(rate: f64, burst: u32) -> (NodeLimits, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let l = NodeLimits::new(rate, burst, Duration::from_secs(10), metrics.clone())
            .expect("limits on");
        (l, metrics)
    }

    #[test]
    fn rate_zero_turns_limits_off() {
        let m = Arc::new(Metrics::new());
        assert!(NodeLimits::new(0.0, 10, Duration::from_secs(1), m).is_none());
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let (mut l, _) = limits(20.0, 200);
        let n = id("flood");
        let passed = (0..10_000)
            .filter(|_| l.admit(&n, NodeTopic::Fault, UnixMillis::from_millis(1_000)))
            .count();
        assert_eq!(
            passed, 200,
            "the burst, then nothing within the same millisecond"
        );
        // One second later: 20 more tokens.
        let passed = (0..10_000)
            .filter(|_| l.admit(&n, NodeTopic::Fault, UnixMillis::from_millis(2_000)))
            .count();
        assert_eq!(passed, 20);
        assert_eq!(l.dropped(&n), 19_780);
        // Tokens never exceed the burst, however long the node was quiet.
        let passed = (0..10_000)
            .filter(|_| l.admit(&n, NodeTopic::Fault, UnixMillis::from_millis(1_000_000)))
            .count();
        assert_eq!(passed, 200);
    }

    #[test]
    fn a_flood_of_one_kind_starves_no_other_kind_and_no_other_node() {
        let (mut l, _) = limits(20.0, 5);
        let flood = id("flood");
        let calm = id("calm");
        for i in 0..1_000 {
            l.admit(
                &flood,
                NodeTopic::Fault,
                UnixMillis::from_millis(1_000) + ms(i),
            );
        }
        // The flooding node's heartbeats, births and states still pass.
        for (i, kind) in [NodeTopic::Heartbeat, NodeTopic::Birth, NodeTopic::State]
            .into_iter()
            .enumerate()
        {
            assert!(
                l.admit(&flood, kind, UnixMillis::from_millis(2_000) + ms(i as u64)),
                "{kind:?}"
            );
        }
        // Another node is untouched.
        assert!((0..5).all(|i| l.admit(
            &calm,
            NodeTopic::Fault,
            UnixMillis::from_millis(2_000) + ms(i)
        )));
        assert_eq!(l.dropped(&calm), 0);
        // Commands are never ingested; never limited here either.
        assert!((0..100).all(|_| l.admit(
            &flood,
            NodeTopic::Command,
            UnixMillis::from_millis(2_000)
        )));
    }

    #[test]
    fn counts_reach_the_metrics_after_the_flood_ends() {
        let (mut l, metrics) = limits(1.0, 1);
        let flood = id("flood");
        for _ in 0..100 {
            l.admit(&flood, NodeTopic::Fault, UnixMillis::from_millis(10_000));
        }
        // Published at the first drop only (once a second at most).
        assert!(metrics.render().contains("{node=\"flood\"} 1\n"));
        // A calm node's message a second later brings the count up to date.
        assert!(l.admit(
            &id("calm"),
            NodeTopic::Heartbeat,
            UnixMillis::from_millis(11_000)
        ));
        let text = metrics.render();
        assert!(text.contains("{node=\"flood\"} 99\n"), "{text}");
    }

    #[test]
    fn the_worst_offenders_are_published_bounded() {
        let (mut l, metrics) = limits(1.0, 1);
        // 15 offenders: node k drops k messages.
        for k in 1..=15u64 {
            let n = id(&format!("n{k:02}"));
            for _ in 0..=k {
                l.admit(&n, NodeTopic::Heartbeat, UnixMillis::from_millis(5_000));
            }
        }
        let top = l.top(TOP_OFFENDERS);
        assert_eq!(top.len(), TOP_OFFENDERS);
        assert_eq!(top[0], (id("n15"), 15));
        assert_eq!(top[9], (id("n06"), 6));
        l.publish();
        let text = metrics.render();
        assert!(
            text.contains("alarmnet_node_rate_limited_total{node=\"n15\"} 15\n"),
            "{text}"
        );
        assert!(
            !text.contains("node=\"n05\""),
            "only the top {TOP_OFFENDERS}: {text}"
        );
        assert!(text.contains("alarmnet_nodes_rate_limited 15\n"), "{text}");
    }
}
