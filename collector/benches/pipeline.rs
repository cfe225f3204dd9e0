//! Heartbeats through the collector's whole pipeline, as `pipeline::Core::run` drives it:
//! MQTT payload → [`Ingest::handle`] (decode, topic identity, registry) → [`Core::absorb`]
//! (duplicate check, liveness, alert rules, recent metrics) in bursts of 4 096 → one store
//! commit per burst on an SQLite file (WAL, `synchronous=FULL`), "last heard" handed to the
//! store thread once per simulated second, deadlines judged once per simulated second.
//!
//! `cargo bench -p alarmnet-collector --bench pipeline` prints messages per second of wall
//! time with the core on one thread (the store thread runs beside it, as in the collector),
//! and the process CPU time per message. 100 000 nodes beat every 10 s of simulated time,
//! so every second of simulated time carries 10 000 heartbeats and its flush 10 000 rows.
//!
//! Figures, not asserts: this is a bench binary, not a test.

use std::sync::Arc;
use std::time::Instant;

use alarmnet_collector::alerts::{Monitor, MonitorConfig};
use alarmnet_collector::api::{EventHub, RecentMetrics};
use alarmnet_collector::config::IngestConfig;
use alarmnet_collector::ingest::Ingest;
use alarmnet_collector::metrics::Metrics;
use alarmnet_collector::model::Millis;
use alarmnet_collector::outputs::Outputs;
use alarmnet_collector::pipeline::{Core, Links};
use alarmnet_collector::store::Store;
use alarmnet_protocol::Prefix;
use serde_json::json;

const T0: Millis = 1_764_330_000_000;
const INTERVAL: u64 = 10_000;
const NODES: usize = 100_000;
const ROUNDS: u64 = 6;
const BURST: usize = 4096;

fn topic(k: usize, kind: &str) -> String {
    format!(
        "alarmnet/v1/region-{:02}/site-{:05}/node-{k:07}/{kind}",
        k % 14,
        k / 20
    )
}

fn birth(k: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "v": 1, "boot": format!("{:016x}", k as u64 * 7919 + 1), "ts": T0,
        "node": format!("node-{k:07}"), "site": format!("site-{:05}", k / 20),
        "region": format!("region-{:02}", k % 14),
        "kind": if k % 3 == 0 { "siren" } else { "display" },
        "name": format!("城关区人防办楼顶警报器 {k}"), "hb_interval_s": INTERVAL / 1000
    }))
    .expect("birth")
}

fn heartbeat(k: usize, seq: u64, ts: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "v": 1, "boot": format!("{:016x}", k as u64 * 7919 + 1), "seq": seq, "ts": ts,
        "uptime_s": 86400,
        "metrics": {"cpu_pct": 3.5, "mem_pct": 41.0, "disk_pct": 62.0, "temp_c": 48.5,
                    "load1": 0.12, "ac_power": 1, "battery_pct": 97, "battery_v": 13.4},
        "checks": {"ok": 5, "warning": 0, "critical": 0, "unknown": 0},
        "faults": []
    }))
    .expect("heartbeat")
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / 100.0
}

fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("dir");
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(&dir.path().join("bench.db"), metrics.clone()).expect("store");
    let links = Links {
        events: EventHub::new(T0, 1024, 1024, jiff::tz::TimeZone::UTC),
        recent: RecentMetrics::new(16),
        rebirth: None,
        tsdb: None,
    };
    let monitor = Monitor::new(MonitorConfig::default(), T0);
    let mut core = Core::new(
        store.clone(),
        Outputs::none(metrics.clone()),
        metrics.clone(),
        monitor,
        links,
    );
    core.restore(T0).await.expect("restore");
    let mut ingest = Ingest::new(
        Prefix::default(),
        &IngestConfig {
            max_nodes: NODES * 2,
            ..IngestConfig::default()
        },
        None,
        [],
        metrics.clone(),
    );
    core.absorb(alarmnet_collector::ingest::CoreEvent::BrokerConnected {
        at: T0,
        session_present: false,
    });

    // Registration, committed like the collector's first minutes.
    let started = Instant::now();
    for k in 0..NODES {
        if let Some(e) = ingest_event(&mut ingest, &topic(k, "birth"), &birth(k), T0) {
            core.absorb(e);
        }
        if k % BURST == BURST - 1 {
            core.commit_and_announce().await;
        }
    }
    core.commit_and_announce().await;
    println!(
        "registered {NODES} nodes (birth decode + registry + store) in {:.2} s; process RSS \
         {:.0} MiB",
        started.elapsed().as_secs_f64(),
        rss_mib()
    );

    // Every payload of every round encoded beforehand: distinct sequence numbers, so none
    // is dropped as a duplicate.
    let topics: Vec<String> = (0..NODES).map(|k| topic(k, "hb")).collect();
    let per_ms = NODES as f64 / INTERVAL as f64;
    let mut traffic: Vec<(usize, Millis, Vec<u8>)> = Vec::with_capacity(NODES * ROUNDS as usize);
    for round in 1..=ROUNDS {
        for k in 0..NODES {
            let t = T0 + 30_000 + (round - 1) * INTERVAL + (k as f64 / per_ms) as u64;
            traffic.push((k, t, heartbeat(k, round, t)));
        }
    }

    let accepted_before = metrics.accepted.load(std::sync::atomic::Ordering::Relaxed);
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let mut second = T0 + 30_000;
    let mut in_burst = 0;
    for (k, t, payload) in &traffic {
        if *t >= second + 1_000 {
            second = *t;
            core.flush_seen();
            core.tick(second);
        }
        if let Some(e) = ingest_event(&mut ingest, &topics[*k], payload, *t) {
            core.absorb(e);
        }
        in_burst += 1;
        if in_burst == BURST {
            in_burst = 0;
            core.commit_and_announce().await;
            // The collector's loop waits for the next event here, which lets the flush
            // task hand its job to the store thread.
            tokio::task::yield_now().await;
        }
    }
    core.commit_and_announce().await;
    core.flush_seen_now().await;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let n = traffic.len() as f64;
    let accepted = metrics.accepted.load(std::sync::atomic::Ordering::Relaxed) - accepted_before;
    assert_eq!(accepted, traffic.len() as u64, "every heartbeat accepted");
    println!(
        "pipeline: {n:.0} heartbeats of {NODES} nodes in {secs:.2} s = {:.0} msg/s \
         (core on one thread; process CPU {cpu:.2} s = {:.1} µs per message, store thread included)",
        n / secs,
        cpu * 1e6 / n
    );
    let tracked = core.monitor().tracker().len();
    println!("tracked nodes: {tracked}");
}

fn ingest_event(
    ingest: &mut Ingest,
    topic: &str,
    payload: &[u8],
    at: Millis,
) -> Option<alarmnet_collector::ingest::CoreEvent> {
    ingest.handle(topic, payload, at)
}
