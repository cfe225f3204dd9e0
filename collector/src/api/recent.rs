//! [`RecentMetrics`]: the last few live heartbeats per node, in memory, for
//! `GET /api/v1/nodes/{node}/metrics` and a node's `last_heartbeat`.
//!
//! The core records each live heartbeat (replays are skipped: they say nothing about now).
//! Sharded so that the core's writes and the API's reads rarely meet on one lock.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use alarmnet_protocol::{CheckCounts, Heartbeat, Metrics, NodeId};

use crate::model::UnixMillis;

const SHARDS: usize = 16;

/// Samples kept per node unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 30;

/// One heartbeat as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The collector's clock when it arrived.
    pub received_at: UnixMillis,
    /// The agent's clock.
    pub ts: UnixMillis,
    pub seq: u64,
    pub uptime_s: Option<u64>,
    pub metrics: Metrics,
    pub checks: Option<CheckCounts>,
}

/// foldhash: hashed twice per heartbeat, for the shard and in it (see the workspace
/// Cargo.toml).
type Shard = Mutex<foldhash::HashMap<NodeId, VecDeque<Sample>>>;

/// The rings, one per node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RecentMetrics {
    shards: Arc<[Shard]>,
    capacity: usize,
    hasher: foldhash::fast::RandomState,
}

impl RecentMetrics {
    /// Keeps at most `capacity` samples per node (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(foldhash::HashMap::default()))
                .collect(),
            capacity: capacity.max(1),
            hasher: Default::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn shard(&self, node: &NodeId) -> MutexGuard<'_, foldhash::HashMap<NodeId, VecDeque<Sample>>> {
        let i = (self.hasher.hash_one(node) as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a live heartbeat (ignores replayed ones). Takes the heartbeat: its metrics
    /// move into the sample instead of being copied (a map of owned names each).
    pub fn record(&self, node: &NodeId, received_at: UnixMillis, hb: Heartbeat) {
        if hb.replay {
            return;
        }
        self.push(
            node,
            Sample {
                received_at,
                ts: UnixMillis::from_millis(hb.ts),
                seq: hb.seq,
                uptime_s: hb.uptime_s,
                metrics: hb.metrics,
                checks: hb.checks,
            },
        );
    }

    /// Appends a sample, dropping the oldest beyond the capacity.
    pub fn push(&self, node: &NodeId, sample: Sample) {
        let mut shard = self.shard(node);
        // Design: look up before inserting, so the id is cloned only for a node's first
        // sample (`entry` takes an owned key every time), and a ring is allocated once at
        // its full size. The dropped sample is freed after the lock is released.
        let oldest = match shard.get_mut(node) {
            Some(ring) => {
                let oldest = (ring.len() == self.capacity)
                    .then(|| ring.pop_front())
                    .flatten();
                ring.push_back(sample);
                oldest
            }
            None => {
                let mut ring = VecDeque::with_capacity(self.capacity);
                ring.push_back(sample);
                shard.insert(node.clone(), ring);
                None
            }
        };
        drop(shard);
        drop(oldest);
    }

    /// The node's samples, oldest first.
    pub fn samples(&self, node: &NodeId) -> Vec<Sample> {
        self.shard(node)
            .get(node)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The node's latest sample.
    pub fn latest(&self, node: &NodeId) -> Option<Sample> {
        self.shard(node).get(node).and_then(|r| r.back().cloned())
    }

    /// Forgets a node (removed from the registry).
    pub fn forget(&self, node: &NodeId) {
        self.shard(node).remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Sample {
        Sample {
            received_at: UnixMillis::from_millis(seq * 10),
            ts: UnixMillis::from_millis(seq * 10),
            seq,
            uptime_s: None,
            metrics: Metrics::new(),
            checks: None,
        }
    }

    #[test]
    fn keeps_the_last_capacity_samples_per_node() {
        let r = RecentMetrics::new(3);
        let a = NodeId::new("a").expect("id");
        let b = NodeId::new("b").expect("id");
        for seq in 1..=5 {
            r.push(&a, sample(seq));
        }
        r.push(&b, sample(9));
        let seqs: Vec<u64> = r.samples(&a).iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(r.latest(&b).map(|s| s.seq), Some(9));
        r.forget(&a);
        assert!(r.samples(&a).is_empty());
    }
}
