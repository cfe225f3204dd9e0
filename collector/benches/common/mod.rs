//! What the uptime benchmarks share: "now", a deterministic generator, and the 30-day
//! history of 10 000 nodes with 1 000 000 transitions that both the engine bench (`uptime`)
//! and the API bench (`api_scale`) report on.

#![allow(dead_code)]

use alarmnet_collector::model::{
    Cause, Liveness, NodeInfo, Silence, SilenceId, Transition, UnixMillis,
};
use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, SiteId};

pub const DAY: u64 = 86_400_000;
/// 2026-11-01T00:00:00+08:00.
pub const NOW: u64 = 1_793_462_400_000;

pub const UPTIME_NODES: usize = 10_000;
pub const TRANSITIONS_PER_NODE: usize = 100;
const REGIONS: usize = 14;
const SITES_PER_REGION: usize = 50;

/// A small deterministic generator (64-bit LCG), so every run measures the same data.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 30 days of history: every node registered 31 days back, then 99 state changes spread
/// over the window; 20 four-hour region silences; two blind intervals (`(from, to)`).
pub struct UptimeData {
    pub nodes: Vec<NodeInfo>,
    /// Ordered by node, then time.
    pub transitions: Vec<Transition>,
    pub silences: Vec<Silence>,
    pub blind: Vec<(u64, u64)>,
}

/// When every node of [`uptime_data`] was registered.
pub const REGISTERED: u64 = NOW - 31 * DAY;

pub fn uptime_data() -> UptimeData {
    let mut rng = Lcg(0x0a1a_2e7e);
    let mut nodes = Vec::with_capacity(UPTIME_NODES);
    let mut transitions = Vec::with_capacity(UPTIME_NODES * TRANSITIONS_PER_NODE);
    let siren = Name::new("siren").expect("valid kind");
    let display = Name::new("display").expect("valid kind");
    let step = 30 * DAY / TRANSITIONS_PER_NODE as u64;
    for i in 0..UPTIME_NODES {
        let region = i % REGIONS;
        let site = (i / REGIONS) % SITES_PER_REGION;
        let node = NodeId::new(format!("n{i:05}")).expect("valid node");
        nodes.push(NodeInfo {
            path: NodePath::new(
                RegionId::new(format!("r{region:02}")).expect("valid region"),
                SiteId::new(format!("r{region:02}-s{site:02}")).expect("valid site"),
                node.clone(),
            ),
            kind: if i % 3 == 0 {
                display.clone()
            } else {
                siren.clone()
            },
            name: None,
            boot: None,
            hb_interval_ms: 10_000,
        });
        let mut state = Liveness::Unknown;
        let mut at = REGISTERED;
        for k in 0..TRANSITIONS_PER_NODE {
            let (to, cause) = if k == 0 {
                (Liveness::Online, Cause::Birth)
            } else {
                match (state, rng.below(4)) {
                    (Liveness::Online, 0) => (Liveness::Late, Cause::Timeout),
                    (Liveness::Online, 1) => (Liveness::Stopped, Cause::Shutdown),
                    (Liveness::Online, _) => (Liveness::Offline, Cause::Will),
                    (Liveness::Late, 0) => (Liveness::Offline, Cause::Timeout),
                    _ => (Liveness::Online, Cause::Heartbeat),
                }
            };
            transitions.push(Transition {
                node: node.clone(),
                from: state,
                to,
                at: UnixMillis::from_millis(at),
                cause,
            });
            state = to;
            at = if k == 0 {
                NOW - 30 * DAY + rng.below(step)
            } else {
                at + 1 + rng.below(step)
            };
        }
    }
    let silences = (0..20)
        .map(|i| {
            let starts_at = NOW - 30 * DAY + rng.below(29 * DAY);
            Silence {
                id: SilenceId::new(i as u64),
                region: Some(RegionId::new(format!("r{:02}", i % REGIONS)).expect("valid")),
                site: None,
                node: None,
                kind: None,
                starts_at: UnixMillis::from_millis(starts_at),
                ends_at: UnixMillis::from_millis(starts_at)
                    + std::time::Duration::from_millis(4 * 3_600_000),
                created_by: "bench".to_owned(),
                comment: None,
            }
        })
        .collect();
    let blind = vec![
        (NOW - 20 * DAY, NOW - 20 * DAY + 600_000),
        (NOW - 3 * DAY, NOW - 3 * DAY + 1_800_000),
    ];
    UptimeData {
        nodes,
        transitions,
        silences,
        blind,
    }
}
