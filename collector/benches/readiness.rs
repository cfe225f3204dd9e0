//! Cost of readiness per message ([`ReadinessTracker`]), with 100 000 nodes.
//!
//! `cargo bench -p alarmnet-collector --bench readiness` prints the time per call of:
//! - a live heartbeat's fault list when nothing changed (the common message);
//! - a fault raised or cleared, and a test receipt, each re-deriving one node and moving it
//!   between the rollups' buckets (site, region, network);
//! - for comparison, recounting the rollups from every node's state, which is what a
//!   message would cost if the rollups were recomputed instead of kept incrementally.
//!
//! Figures, not asserts: this is a bench binary, not a test.

use std::hint::black_box;
use std::time::Instant;

use alarmnet_collector::alerts::{Monitor, MonitorConfig};
use alarmnet_collector::model::UnixMillis;
use alarmnet_collector::readiness::{Readiness, ReadinessConfig, ReadinessTracker};
use alarmnet_protocol::{Birth, FaultKey, Name, NodeId, NodePath, Severity, TestResult};
use serde_json::json;

const T0: u64 = 1_764_330_000_000;

/// `offset` ms after `T0`.
fn at(offset: u64) -> UnixMillis {
    UnixMillis::from_millis(T0 + offset)
}
const NODES: usize = 100_000;

fn path(k: usize) -> NodePath {
    NodePath::new(
        format!("region-{:02}", k % 14).parse().expect("region"),
        format!("site-{:05}", k / 20).parse().expect("site"),
        format!("node-{k:07}").parse().expect("node"),
    )
}

fn birth(p: &NodePath, k: usize) -> Birth {
    serde_json::from_value(json!({
        "v": 1, "boot": format!("{:016x}", k as u64 * 7919 + 1), "ts": T0,
        "node": p.node, "site": p.site, "region": p.region,
        "kind": if k % 3 == 0 { "display" } else { "siren" }, "hb_interval_s": 10
    }))
    .expect("birth")
}

fn per_op(label: &str, ops: usize, f: impl FnOnce()) {
    let start = Instant::now();
    f();
    let ns = start.elapsed().as_nanos() as f64 / ops as f64;
    println!("{label:<58} {ns:>10.0} ns/op");
}

fn main() {
    let mut m = Monitor::new(MonitorConfig::default(), at(0));
    let mut r = ReadinessTracker::new(&ReadinessConfig::default());
    let paths: Vec<NodePath> = (0..NODES).map(path).collect();
    let ids: Vec<NodeId> = paths.iter().map(|p| p.node.clone()).collect();
    for (k, p) in paths.iter().enumerate() {
        let out = m.on_birth(p, &birth(p, k), false, at(0));
        for t in &out.transitions {
            r.liveness(m.tracker(), &t.node, t.to, t.at);
        }
        r.birth(m.tracker(), &p.node, at(0));
    }
    let silent = Name::new("silent").expect("name");
    for id in &ids {
        r.test(m.tracker(), id, &silent, TestResult::Pass, at(0), at(0));
    }
    r.take_changes();
    let t = m.tracker();
    println!("{NODES} nodes, 14 regions, {} sites", NODES / 20);

    const OPS: usize = 1_000_000;
    per_op("heartbeat fault list, nothing changed", OPS, || {
        for i in 0..OPS {
            r.fault_list(t, &ids[i % NODES], &[], Severity::Major, at(1));
        }
    });
    let key = FaultKey::new(Name::new("amp").expect("n"), Name::new("X").expect("n"));
    let mut changes = 0;
    per_op("fault raised or cleared (a state change)", OPS, || {
        for i in 0..OPS {
            let sev = (i / NODES % 2 == 0).then_some(Severity::Critical);
            r.fault(t, &ids[i % NODES], &key, sev, at(2 + i as u64));
            if i % 4096 == 0 {
                changes += r.take_changes().len();
            }
        }
    });
    black_box(changes);
    per_op("test receipt (pass, no state change)", OPS, || {
        for i in 0..OPS {
            r.test(t, &ids[i % NODES], &silent, TestResult::Pass, at(3), at(3));
        }
    });
    r.take_changes();
    const RECOUNTS: usize = 20;
    per_op(
        "recount of every node (what a non-incremental rollup costs)",
        RECOUNTS,
        || {
            for _ in 0..RECOUNTS {
                let mut ready = 0u32;
                for id in &ids {
                    if r.node(t, id).is_some_and(|(s, _)| s == Readiness::Ready) {
                        ready += 1;
                    }
                }
                black_box(ready);
            }
        },
    );
    let net = r.network();
    println!(
        "network now: {} ready, {} not ready; sirens ready {:.1} %",
        net.nodes.ready,
        net.nodes.not_ready,
        net.sirens.ready_pct().unwrap_or(0.0)
    );
}
