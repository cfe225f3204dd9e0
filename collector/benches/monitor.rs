//! Throughput and memory of the pure liveness + alert pipeline ([`Monitor`]).
//!
//! `cargo bench -p alarmnet-collector --bench monitor` prints:
//! - heartbeats per second through the monitor alone and through decode + monitor, with
//!   100 000 nodes beating every 10 s of simulated time and a tick every simulated second;
//! - resident memory per tracked node with 600 000 nodes (RSS delta from /proc/self/statm);
//! - the cost of a tick with 600 000 nodes when nothing is due and when 1 000 are due, next
//!   to the same with 6 000 nodes: a tick costs what is due, not what is tracked.
//!
//! Figures, not asserts: this is a bench binary, not a test.

use std::hint::black_box;
use std::time::Instant;

use alarmnet_collector::alerts::{Monitor, MonitorConfig};
use alarmnet_collector::model::UnixMillis;
use alarmnet_e2e::usage::rss_bytes;
use alarmnet_protocol::{
    Birth, Envelope, Heartbeat, Message, NodePath, NodeTopic, Prefix, Topic, decode,
};
use serde_json::json;

const T0: u64 = 1_764_330_000_000;
const INTERVAL: u64 = 10_000;

fn path(k: usize) -> NodePath {
    let region = format!("region-{:02}", k % 14);
    let site = format!("site-{:05}", k / 20);
    let node = format!("node-{k:07}");
    NodePath::new(
        region.parse().expect("region"),
        site.parse().expect("site"),
        node.parse().expect("node"),
    )
}

fn birth(p: &NodePath, k: usize) -> Birth {
    serde_json::from_value(json!({
        "v": 1, "boot": format!("{:016x}", k as u64 * 7919 + 1), "ts": T0,
        "node": p.node, "site": p.site, "region": p.region,
        "kind": if k % 3 == 0 { "siren" } else { "display" },
        "name": format!("城关区人防办楼顶警报器 {k}"), "hb_interval_s": INTERVAL / 1000
    }))
    .expect("birth")
}

fn heartbeat(k: usize, seq: u64, ts: u64) -> Heartbeat {
    serde_json::from_value(json!({
        "v": 1, "boot": format!("{:016x}", k as u64 * 7919 + 1), "seq": seq, "ts": ts,
        "uptime_s": 86400,
        "metrics": {"cpu_pct": 3.5, "mem_pct": 41.0, "disk_pct": 62.0, "temp_c": 48.5,
                    "load1": 0.12, "ac_power": 1, "battery_pct": 97, "battery_v": 13.4},
        "checks": {"ok": 5, "warning": 0, "critical": 0, "unknown": 0},
        "faults": []
    }))
    .expect("heartbeat")
}

fn populate(m: &mut Monitor, n: usize, now: u64) -> Vec<NodePath> {
    let paths: Vec<NodePath> = (0..n).map(path).collect();
    for (k, p) in paths.iter().enumerate() {
        m.on_birth(p, &birth(p, k), false, UnixMillis::from_millis(now));
    }
    paths
}

fn config() -> MonitorConfig {
    let mut cfg: MonitorConfig = serde_json::from_value(json!({
        "alerts": {"thresholds": [{
            "name": "battery_low", "metric": "battery_v", "op": "<", "value": 11.8,
            "for": "5m", "severity": "major", "kind": "siren"
        }]}
    }))
    .expect("config");
    cfg.alerts.node_offline.group_wait = std::time::Duration::from_secs(15);
    cfg
}

/// Heartbeats through the monitor: every node once per simulated interval, ticks every
/// simulated second. Returns messages per second of wall time.
fn throughput(nodes: usize, rounds: u64, with_decode: bool) -> f64 {
    let mut m = Monitor::new(config(), UnixMillis::from_millis(T0));
    m.broker_connected(UnixMillis::from_millis(T0));
    let paths = populate(&mut m, nodes, T0);
    let prefix = Prefix::new("alarmnet/v1").expect("prefix");
    // Pre-encode one round of payloads per node when decoding (the seq repeats per round,
    // which the monitor sees as duplicates: no effect on the work done per message).
    let encoded: Vec<(String, Vec<u8>)> = if with_decode {
        paths
            .iter()
            .enumerate()
            .map(|(k, p)| {
                Envelope {
                    topic: Topic::Node(p.clone(), NodeTopic::Heartbeat),
                    message: Message::Heartbeat(heartbeat(k, 1, T0)),
                }
                .encode(&prefix)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut hbs: Vec<Heartbeat> = (0..nodes).map(|k| heartbeat(k, 0, T0)).collect();
    let per_ms = nodes as f64 / INTERVAL as f64;
    let mut now = T0;
    let mut sent = 0u64;
    let mut changes = 0usize;
    let start = Instant::now();
    for round in 1..=rounds {
        for k in 0..nodes {
            let t = T0 + (round - 1) * INTERVAL + (k as f64 / per_ms) as u64;
            if t >= now + 1_000 {
                now = t;
                changes += m.tick(UnixMillis::from_millis(now)).alerts.len();
            }
            if with_decode {
                let (topic, payload) = &encoded[k];
                let env = decode(&prefix, topic, payload).expect("valid");
                if let (Topic::Node(p, _), Message::Heartbeat(hb)) = (&env.topic, &env.message) {
                    changes += m
                        .on_heartbeat(p, hb, UnixMillis::from_millis(t))
                        .transitions
                        .len();
                }
            } else {
                let hb = &mut hbs[k];
                hb.seq = round;
                hb.ts = t;
                changes += m
                    .on_heartbeat(&paths[k], hb, UnixMillis::from_millis(t))
                    .transitions
                    .len();
            }
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    black_box(changes);
    sent as f64 / secs
}

fn main() {
    println!("# alarmnet-collector monitor benchmark (one core, pure code, no I/O)");

    let n = 100_000;
    let rate = throughput(n, 10, false);
    println!("heartbeats through monitor (tracker + alerts), {n} nodes: {rate:.0} msg/s");
    let rate = throughput(n, 5, true);
    println!("heartbeats through decode + monitor, {n} nodes: {rate:.0} msg/s");

    // Memory per node with 600 000 nodes.
    let n = 600_000;
    let before = rss_bytes(std::process::id());
    let mut m = Monitor::new(config(), UnixMillis::from_millis(T0));
    m.broker_connected(UnixMillis::from_millis(T0));
    let paths = populate(&mut m, n, T0);
    let after = rss_bytes(std::process::id());
    let per_node = (after - before) as f64 / n as f64;
    println!(
        "memory: {n} nodes online: RSS +{:.1} MiB, {per_node:.0} bytes per node (names of ~30 bytes)",
        (after - before) as f64 / 1_048_576.0
    );

    let (idle, avg, max) = tick_cost(&mut m, &paths);
    println!(
        "tick, {n} nodes: {idle:.0} ns when nothing is due; steady state (every node beating, \
         ticks every second): {avg:.0} µs per tick on average, {max:.0} µs at most"
    );
    drop(m);

    for n in [25_000, 50_000, 100_000] {
        let (down, up, changes) = mass_outage(n);
        println!(
            "whole network of {n} nodes lost at once: {down:.0} ms for the tick that takes all \
             offline ({changes} alert changes: node, site and region alerts); {up:.0} ms for \
             all {n} heartbeats that bring it back"
        );
    }

    let n = 60_000;
    let mut small = Monitor::new(config(), UnixMillis::from_millis(T0));
    small.broker_connected(UnixMillis::from_millis(T0));
    let few = populate(&mut small, n, T0);
    let (idle, avg, max) = tick_cost(&mut small, &few);
    println!(
        "tick, {n} nodes: {idle:.0} ns when nothing is due; steady state: {avg:.0} µs per tick \
         on average, {max:.0} µs at most"
    );
}

/// The cost of a tick: with nothing due, and in the steady state where every node beats once
/// per interval (spread evenly) and the shell ticks every second. A tick pops only due heap
/// entries; each node's single entry comes due about once per 1.5 intervals (heartbeats
/// themselves never touch the heap), so a tick's work follows the message rate, not a scan.
fn tick_cost(m: &mut Monitor, paths: &[NodePath]) -> (f64, f64, f64) {
    let n = paths.len();
    let base = T0 + 60_000;
    let per_ms = n as f64 / INTERVAL as f64;
    let mut hbs: Vec<Heartbeat> = (0..n).map(|k| heartbeat(k, 0, base)).collect();
    for (k, p) in paths.iter().enumerate() {
        m.on_heartbeat(p, &hbs[k], UnixMillis::from_millis(base));
    }
    m.tick(UnixMillis::from_millis(base));
    // Two warm-up intervals to spread the heap entries like a live network's.
    let mut ticks = Vec::new();
    let mut now = base;
    for round in 1..=6u64 {
        for k in 0..n {
            let t = base + (round - 1) * INTERVAL + (k as f64 / per_ms) as u64;
            if t >= now + 1_000 {
                now = t;
                let start = Instant::now();
                black_box(m.tick(UnixMillis::from_millis(now)));
                if round > 2 {
                    ticks.push(start.elapsed().as_nanos() as f64 / 1_000.0);
                }
            }
            let hb = &mut hbs[k];
            hb.seq = round;
            hb.ts = t;
            m.on_heartbeat(&paths[k], hb, UnixMillis::from_millis(t));
        }
    }
    let avg = ticks.iter().sum::<f64>() / ticks.len() as f64;
    let max = ticks.iter().copied().fold(0.0, f64::max);
    // Nothing due: right after a tick.
    m.tick(UnixMillis::from_millis(now));
    let reps = 100_000u32;
    let start = Instant::now();
    for _ in 0..reps {
        black_box(m.tick(UnixMillis::from_millis(now)));
    }
    let idle = start.elapsed().as_nanos() as f64 / f64::from(reps);
    (idle, avg, max)
}

/// Every node stops at once and comes back at once: the worst burst of alert work.
fn mass_outage(n: usize) -> (f64, f64, usize) {
    let mut m = Monitor::new(config(), UnixMillis::from_millis(T0));
    m.broker_connected(UnixMillis::from_millis(T0));
    let paths = populate(&mut m, n, T0);
    let beat = |m: &mut Monitor, seq: u64, now: u64| {
        let start = Instant::now();
        let mut changes = 0;
        for (k, p) in paths.iter().enumerate() {
            changes += m
                .on_heartbeat(p, &heartbeat(k, seq, now), UnixMillis::from_millis(now))
                .alerts
                .len();
        }
        (start.elapsed().as_secs_f64() * 1_000.0, changes)
    };
    beat(&mut m, 1, T0 + 1_000);
    m.tick(UnixMillis::from_millis(T0 + 1_000));
    let start = Instant::now();
    let out = m.tick(UnixMillis::from_millis(T0 + 1_000 + 3 * INTERVAL));
    let down = start.elapsed().as_secs_f64() * 1_000.0;
    let mut changes = out.alerts.len();
    changes += m.tick(UnixMillis::from_millis(T0 + 120_000)).alerts.len();
    let (up, more) = beat(&mut m, 2, T0 + 130_000);
    (down, up, changes + more)
}
