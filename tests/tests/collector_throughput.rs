//! Throughput of the collector's ingest path through a real Mosquitto: heartbeats of
//! registered nodes published at QoS 1, counted on `/metrics` as received. A measurement,
//! not a check: run it on purpose, in release, and read the figure it prints:
//!
//! ```text
//! cargo build --release -p alarmnet-collector --bins
//! cargo test --release -p alarmnet-e2e --test collector_throughput -- --ignored --nocapture
//! ```

mod collector_support;

use std::time::{Duration, Instant};

use alarmnet_e2e::Mosquitto;
use collector_support::{Collector, Publisher, birth, heartbeat, workdir};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release on purpose"]
async fn heartbeats_per_second_through_the_collector() {
    const NODES: u64 = 1000;
    const HEARTBEATS: u64 = 200_000;
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let collector = Collector::start(&broker, dir.path(), "").await;
    let p = Publisher::connect(&broker).await;
    for n in 0..NODES {
        let node = format!("n{n}");
        p.publish(
            &format!("alarmnet/v1/r/s/{node}/birth"),
            birth("r", "s", &node, 1),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    collector
        .wait_metric_at_least(
            "alarmnet_nodes_tracked",
            NODES as f64,
            Duration::from_secs(60),
        )
        .await;
    let started = Instant::now();
    for i in 0..HEARTBEATS {
        let node = format!("n{}", i % NODES);
        p.publish(
            &format!("alarmnet/v1/r/s/{node}/hb"),
            heartbeat(i),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    let published = started.elapsed();
    collector
        .wait_metric_at_least(
            "alarmnet_messages_accepted_total",
            (NODES + HEARTBEATS) as f64,
            Duration::from_secs(300),
        )
        .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{HEARTBEATS} heartbeats of {NODES} nodes: published in {published:?}, all accepted by \
         the collector in {elapsed:?} = {:.0} msg/s end to end (QoS 1, one publisher)",
        HEARTBEATS as f64 / elapsed.as_secs_f64()
    );
}
