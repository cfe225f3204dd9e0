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
//! `ALARMNET_BENCH_NODES=600000` runs it with another network size.
//!
//! Figures, not asserts: this is a bench binary, not a test.

use std::sync::Arc;
use std::time::Instant;

use alarmnet_collector::alerts::{Monitor, MonitorConfig};
use alarmnet_collector::api::{EventHub, RecentMetrics};
use alarmnet_collector::ingest::IngestConfig;
use alarmnet_collector::ingest::{CoreEvent, Ingest};
use alarmnet_collector::metrics::Metrics;
use alarmnet_collector::model::UnixMillis;
use alarmnet_collector::outputs::Outputs;
use alarmnet_collector::pipeline::{Core, Links};
use alarmnet_collector::store::Store;
use alarmnet_e2e::usage::{cpu_seconds, rss_bytes};
use alarmnet_protocol::Prefix;
use serde_json::json;

// The collector binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const T0: u64 = 1_764_330_000_000;
const INTERVAL: u64 = 10_000;
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

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let nodes: usize = std::env::var("ALARMNET_BENCH_NODES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("dir");
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(&dir.path().join("bench.db"), metrics.clone()).expect("store");
    let links = Links {
        events: EventHub::new(
            UnixMillis::from_millis(T0),
            1024,
            1024,
            jiff::tz::TimeZone::UTC,
        ),
        recent: RecentMetrics::new(16),
        rebirth: None,
        tsdb: None,
    };
    let monitor = Monitor::new(MonitorConfig::default(), UnixMillis::from_millis(T0));
    let mut core = Core::new(
        store.clone(),
        Outputs::none(metrics.clone()),
        metrics.clone(),
        monitor,
        links,
    );
    core.restore(UnixMillis::from_millis(T0))
        .await
        .expect("restore");
    let mut ingest = Ingest::new(
        Prefix::default(),
        &IngestConfig {
            max_nodes: nodes * 2,
            ..IngestConfig::default()
        },
        None,
        [],
        metrics.clone(),
    );
    core.absorb(CoreEvent::BrokerConnected {
        at: UnixMillis::from_millis(T0),
        session_present: false,
    });

    // Registration, committed like the collector's first minutes.
    let started = Instant::now();
    for k in 0..nodes {
        if let Some(e) = ingest.handle(&topic(k, "birth"), &birth(k), UnixMillis::from_millis(T0)) {
            core.absorb(e);
        }
        if k % BURST == BURST - 1 {
            core.commit_and_announce().await;
        }
    }
    core.commit_and_announce().await;
    println!(
        "registered {nodes} nodes (birth decode + registry + store) in {:.2} s; process RSS \
         {:.0} MiB",
        started.elapsed().as_secs_f64(),
        rss_bytes(std::process::id()) as f64 / (1024.0 * 1024.0)
    );

    // Every payload of every round encoded beforehand: distinct sequence numbers, so none
    // is dropped as a duplicate.
    let topics: Vec<String> = (0..nodes).map(|k| topic(k, "hb")).collect();
    let per_ms = nodes as f64 / INTERVAL as f64;
    let mut traffic: Vec<(usize, u64, Vec<u8>)> = Vec::with_capacity(nodes * ROUNDS as usize);
    for round in 1..=ROUNDS {
        for k in 0..nodes {
            let t = T0 + 30_000 + (round - 1) * INTERVAL + (k as f64 / per_ms) as u64;
            traffic.push((k, t, heartbeat(k, round, t)));
        }
    }

    // Round 1 takes every node from `unknown` to `online` (100 000 transitions and their
    // store rows): measured on its own. Rounds 2.. are the steady state, measured as the
    // collector runs them (decode in the MQTT task, the rest in the core task) stage by
    // stage: decode + registry alone, then the core alone on the decoded events.
    let (first, steady) = traffic.split_at(nodes);
    let started = Instant::now();
    let mut clock = Clock::new(T0 + 30_000);
    for (k, t, payload) in first {
        let e = ingest
            .handle(&topics[*k], payload, UnixMillis::from_millis(*t))
            .expect("accepted");
        clock.feed(&mut core, e, *t).await;
    }
    clock.finish(&mut core).await;
    println!(
        "first heartbeats: {nodes} nodes unknown → online in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let n = steady.len() as f64;
    let cpu0 = cpu_seconds(std::process::id());
    let started = Instant::now();
    let events: Vec<_> = steady
        .iter()
        .map(|(k, t, payload)| {
            (
                ingest
                    .handle(&topics[*k], payload, UnixMillis::from_millis(*t))
                    .expect("accepted"),
                *t,
            )
        })
        .collect();
    let decode = started.elapsed().as_secs_f64();
    let cpu_decode = cpu_seconds(std::process::id()) - cpu0;

    let cpu0 = cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut clock = Clock::new(steady[0].1);
    for (e, t) in events {
        clock.feed(&mut core, e, t).await;
    }
    clock.finish(&mut core).await;
    let judge = started.elapsed().as_secs_f64();
    let cpu_judge = cpu_seconds(std::process::id()) - cpu0;
    assert_eq!(
        core.monitor().tracker().len(),
        nodes,
        "every node still tracked"
    );
    println!(
        "steady state, {n:.0} heartbeats of {nodes} nodes (every node every 10 s):\n\
         - decode + topic identity + registry (MQTT task): {:.0} msg/s, {:.1} µs CPU each\n\
         - core: duplicates, liveness, alert rules, recent metrics, commits, last-heard \
         flushes (core task + store thread): {:.0} msg/s, {:.1} µs CPU each\n\
         - both stages on one core: {:.0} msg/s; pipelined as the collector runs them: {:.0} msg/s",
        n / decode,
        cpu_decode * 1e6 / n,
        n / judge,
        cpu_judge * 1e6 / n,
        n / (decode + judge),
        n / decode.max(judge),
    );
    let tracked = core.monitor().tracker().len();
    println!("tracked nodes: {tracked}");
}

/// Drives the core as its loop does: bursts of [`BURST`] events, one commit each, "last
/// heard" flushed and deadlines judged once per second of the messages' time.
struct Clock {
    second: u64,
    in_burst: usize,
}

impl Clock {
    fn new(start: u64) -> Self {
        Self {
            second: start,
            in_burst: 0,
        }
    }

    async fn feed(&mut self, core: &mut Core, event: CoreEvent, at: u64) {
        if at >= self.second + 1_000 {
            self.second = at;
            core.flush_seen();
            core.tick(UnixMillis::from_millis(at));
        }
        core.absorb(event);
        self.in_burst += 1;
        if self.in_burst == BURST {
            self.in_burst = 0;
            core.commit_and_announce().await;
            // The collector's loop waits for the next event here, which lets the flush
            // task hand its job to the store thread.
            tokio::task::yield_now().await;
        }
    }

    async fn finish(&mut self, core: &mut Core) {
        core.commit_and_announce().await;
        core.flush_seen_now().await;
    }
}
