//! `[ingest]`: what the collector accepts from the network, and the allowlist it reads.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alarmnet_protocol::NodeId;
use serde::Deserialize;

/// `[ingest]`: what the collector accepts from the network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// The most nodes the collector registers; births of further nodes are rejected
    /// (`node_cap`), so a flood of invented ids cannot exhaust memory or the store.
    #[serde(default = "default_max_nodes")]
    pub max_nodes: usize,
    /// `open`: any valid birth registers its node (up to `max_nodes`); `allowlist`: only the
    /// node ids listed in `allowlist_file` (one per line, `#` comments; a `pki` node list
    /// of `node,site,region` lines works too).
    #[serde(default)]
    pub registration: Registration,
    pub allowlist_file: Option<PathBuf>,
    /// Messages waiting between MQTT and the core. When full, MQTT reading waits (the broker
    /// queues for the persistent session): nothing accepted is dropped.
    #[serde(default = "default_ingest_queue")]
    pub queue: usize,
    /// At most one warning per rejection reason per window; the others are counted.
    #[serde(default = "default_log_window", with = "humantime_serde")]
    pub reject_log_window: Duration,
    /// A message whose agent `ts` is further ahead of the collector's clock than this is
    /// rejected (`future_ts`): a birth dated in the future would otherwise pin the node's
    /// place and names against every later, honest birth. Agent clocks that run ahead
    /// less than this are only reported (`clock_skew`).
    #[serde(default = "default_max_future_skew", with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Messages per second each node may send of each kind (birth, state, heartbeat,
    /// fault, test), refilled continuously; beyond it (and its burst) messages are dropped
    /// at ingest and counted (`rate_limited`), so one broken or hostile node cannot drown
    /// the feed. A Last Will always passes. 0 turns the limit off. Raise it for agents that
    /// legitimately send more (many checks with fast fault cycles).
    #[serde(default = "default_node_rate")]
    pub node_rate: f64,
    /// Messages of one kind a node may send at once above its rate: covers an agent
    /// replaying its spool after a reconnection (each record is one message).
    #[serde(default = "default_node_burst")]
    pub node_burst: u32,
}

/// Who may register a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    #[default]
    Open,
    Allowlist,
}

fn default_max_nodes() -> usize {
    200_000
}
fn default_ingest_queue() -> usize {
    10_000
}
fn default_log_window() -> Duration {
    Duration::from_secs(10)
}
fn default_max_future_skew() -> Duration {
    Duration::from_secs(300)
}
fn default_node_rate() -> f64 {
    20.0
}
fn default_node_burst() -> u32 {
    1_000
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_nodes: default_max_nodes(),
            registration: Registration::Open,
            allowlist_file: None,
            queue: default_ingest_queue(),
            reject_log_window: default_log_window(),
            max_future_skew: default_max_future_skew(),
            node_rate: default_node_rate(),
            node_burst: default_node_burst(),
        }
    }
}

impl IngestConfig {
    /// Checks every key under `ingest.` and reads the allowlist when the registration
    /// policy is `allowlist`: the node ids it lists, or every problem.
    pub fn build(&self) -> Result<Option<HashSet<NodeId>>, Vec<String>> {
        let mut errors = Vec::new();
        let mut allowlist = None;
        if self.max_nodes == 0 {
            errors.push("ingest.max_nodes: must be at least 1".into());
        }
        if self.max_future_skew < Duration::from_secs(1) {
            errors.push(
                "ingest.max_future_skew: must be at least 1s (agent clocks are never exact)".into(),
            );
        }
        if self.queue == 0 {
            errors.push("ingest.queue: must be at least 1".into());
        }
        if !self.node_rate.is_finite() || self.node_rate < 0.0 {
            errors.push(
                "ingest.node_rate: must be a number of messages per second, 0 or more \
                 (0 turns the limit off)"
                    .into(),
            );
        }
        if self.node_rate > 0.0 && self.node_burst == 0 {
            errors.push("ingest.node_burst: must be at least 1".into());
        }
        match (self.registration, &self.allowlist_file) {
            (Registration::Allowlist, None) => errors.push(
                "ingest.allowlist_file: required when ingest.registration = \"allowlist\"".into(),
            ),
            (Registration::Allowlist, Some(file)) => match read_allowlist(file) {
                Ok(ids) => allowlist = Some(ids),
                Err(problems) => errors.extend(problems),
            },
            (Registration::Open, Some(_)) => errors.push(
                "ingest.allowlist_file: set, but ingest.registration is \"open\" \
                 (set registration = \"allowlist\" to use it)"
                    .into(),
            ),
            (Registration::Open, None) => {}
        }
        if errors.is_empty() {
            Ok(allowlist)
        } else {
            Err(errors)
        }
    }
}

/// Reads an allowlist: one node id per line; blank lines and `#` comments ignored.
pub fn read_allowlist(path: &Path) -> Result<HashSet<NodeId>, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("ingest.allowlist_file: {}: {e}", path.display())])?;
    let mut ids = HashSet::new();
    let mut errors = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        // The PKI's node list (`node,site,region` lines, docs/operations.md) is an
        // allowlist too: its first field is the node id.
        if line.is_empty() || line.replace(' ', "") == "node,site,region" {
            continue;
        }
        let line = line.split(',').next().unwrap_or("").trim();
        match NodeId::new(line) {
            Ok(id) => {
                ids.insert(id);
            }
            Err(e) => errors.push(format!(
                "ingest.allowlist_file: {} line {}: {e}",
                path.display(),
                n + 1
            )),
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(errors)
    }
}
