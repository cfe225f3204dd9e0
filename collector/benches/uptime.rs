//! A 30-day uptime report over 10 000 nodes and 1 000 000 stored transitions, by node and
//! by region (target: under 1 s). Run: `cargo bench -p alarmnet-collector --bench uptime`.

use std::hint::black_box;

use alarmnet_collector::model::{Cause, Liveness, Millis, NodeInfo, Silence, Transition};
use alarmnet_collector::uptime::{
    DEFAULT_TIME_ZONE, Filter, GroupBy, Inputs, Query, Window, report, time_zone,
};
use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, SiteId};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const NODES: usize = 10_000;
const TRANSITIONS_PER_NODE: usize = 100;
const REGIONS: usize = 14;
const SITES_PER_REGION: usize = 50;
const DAY: Millis = 86_400_000;
/// 2026-11-01T00:00:00+08:00.
const NOW: Millis = 1_793_462_400_000;

/// A small deterministic generator (64-bit LCG), so every run measures the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Data {
    nodes: Vec<NodeInfo>,
    transitions: Vec<Transition>,
    silences: Vec<Silence>,
    blind: Vec<Window>,
}

fn generate() -> Data {
    let mut rng = Lcg(0x0a1a_2e7e);
    let mut nodes = Vec::with_capacity(NODES);
    let mut transitions = Vec::with_capacity(NODES * TRANSITIONS_PER_NODE);
    let siren = Name::new("siren").expect("valid kind");
    let display = Name::new("display").expect("valid kind");
    // One birth 31 days back, then 99 changes spread over the 30-day window.
    let start = NOW - 31 * DAY;
    let step = 30 * DAY / TRANSITIONS_PER_NODE as Millis;
    for i in 0..NODES {
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
        let mut at = start;
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
                at,
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
                id: format!("s{i}"),
                region: Some(RegionId::new(format!("r{:02}", i % REGIONS)).expect("valid")),
                site: None,
                node: None,
                kind: None,
                starts_at,
                ends_at: starts_at + 4 * 3_600_000,
                created_by: "bench".to_owned(),
                comment: None,
            }
        })
        .collect();
    let blind = vec![
        Window::new(NOW - 20 * DAY, NOW - 20 * DAY + 600_000).expect("ordered"),
        Window::new(NOW - 3 * DAY, NOW - 3 * DAY + 1_800_000).expect("ordered"),
    ];
    Data {
        nodes,
        transitions,
        silences,
        blind,
    }
}

fn bench(c: &mut Criterion) {
    let data = generate();
    let tz = time_zone(DEFAULT_TIME_ZONE).expect("the time zone database has Asia/Shanghai");
    let mut group = c.benchmark_group("uptime_30d_10k_nodes_1m_transitions");
    group.sample_size(10);
    group.throughput(Throughput::Elements(data.transitions.len() as u64));
    for by in [GroupBy::Node, GroupBy::Region] {
        let query = Query {
            window: Window::last(30 * DAY, NOW),
            now: NOW,
            by,
            filter: Filter::default(),
            outage_list: false,
            tz: tz.clone(),
        };
        group.bench_function(by.as_str(), |b| {
            b.iter(|| {
                let r = report(
                    &query,
                    Inputs {
                        nodes: &data.nodes,
                        transitions: &data.transitions,
                        silences: &data.silences,
                        blind: &data.blind,
                    },
                )
                .expect("generated input is sorted");
                black_box(r.rows.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
