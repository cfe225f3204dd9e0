//! Throughput of the collector's whole ingest path through a real Mosquitto: heartbeats of
//! registered nodes published at QoS 1 by several publishers at once, counted on `/metrics`
//! as accepted. A measurement, not a check: run it on purpose and read the figures it
//! prints. With release binaries:
//!
//! ```text
//! cargo build --release -p alarmnet-collector --bins
//! ALARMNET_E2E_BIN_DIR=target/release \
//!   cargo test --release -p alarmnet-e2e --test collector_throughput -- --ignored --nocapture
//! ```
//!
//! It prints the end-to-end rate (bounded on a small machine by the publishers and the
//! broker sharing its cores) and the collector's own CPU time per message (user + system
//! from `/proc/{pid}/stat`: MQTT reads, decode, liveness, alert rules, store flushes), which
//! is what one core of the collector sustains. It asserts only that nothing was lost.

mod collector_support;

use std::time::{Duration, Instant};

use alarmnet_e2e::usage::cpu_seconds;
use alarmnet_e2e::{Mosquitto, wait_for};
use collector_support::{Collector, Publisher, birth, metric, workdir};
use rumqttc::QoS;

const PUBLISHERS: u64 = 4;
const NODES_PER_PUBLISHER: u64 = 250;
const HEARTBEATS_PER_PUBLISHER: u64 = 100_000;

fn heartbeat(boot: &str, seq: u64) -> Vec<u8> {
    format!(
        r#"{{"v":1,"boot":"{boot}","seq":{seq},"ts":1764330000000,"uptime_s":86400,"metrics":{{"cpu_pct":3.5,"mem_pct":41.0,"temp_c":48.5,"battery_v":13.4}},"checks":{{"ok":5,"warning":0,"critical":0,"unknown":0}},"faults":[]}}"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it on purpose, with release binaries"]
async fn heartbeats_per_second_through_the_collector() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let collector = Collector::start(&broker, dir.path(), "").await;
    let nodes = PUBLISHERS * NODES_PER_PUBLISHER;
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let publisher = Publisher::connect(&broker).await;
        for n in 0..NODES_PER_PUBLISHER {
            let node = format!("p{p}-n{n}");
            publisher
                .publish(
                    &format!("alarmnet/v1/r/s{p}/{node}/birth"),
                    birth("r", &format!("s{p}"), &node, 1),
                    QoS::AtLeastOnce,
                    false,
                )
                .await;
        }
        publishers.push(publisher);
    }
    collector
        .wait_metric_at_least(
            "alarmnet_nodes_tracked",
            nodes as f64,
            Duration::from_secs(60),
        )
        .await;
    let accepted_before = collector.metric("alarmnet_messages_accepted_total").await;
    let pid = collector.process.pid();
    let cpu0 = cpu_seconds(pid);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (p, publisher) in publishers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..HEARTBEATS_PER_PUBLISHER {
                let n = i % NODES_PER_PUBLISHER;
                // The birth's boot ("boot" + its ts) and one sequence per node.
                let seq = i / NODES_PER_PUBLISHER + 1;
                publisher
                    .publish(
                        &format!("alarmnet/v1/r/s{p}/p{p}-n{n}/hb"),
                        heartbeat("boot000000000001", seq),
                        QoS::AtLeastOnce,
                        false,
                    )
                    .await;
            }
            publisher
                .wait_acked(
                    NODES_PER_PUBLISHER + HEARTBEATS_PER_PUBLISHER,
                    Duration::from_secs(600),
                )
                .await;
        }));
    }
    for t in tasks {
        t.await.expect("publisher");
    }
    let published = started.elapsed();
    let total = PUBLISHERS * HEARTBEATS_PER_PUBLISHER;
    let c = &collector;
    wait_for(
        Duration::from_secs(300),
        "every heartbeat accepted",
        move || async move {
            let text = c.metrics().await;
            let unique = metric(&text, "alarmnet_messages_accepted_total")
                - metric(&text, "alarmnet_messages_duplicate_total");
            (unique >= accepted_before + total as f64).then_some(())
        },
    )
    .await;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    let accepted = collector.metric("alarmnet_messages_accepted_total").await - accepted_before;
    let duplicates = collector.metric("alarmnet_messages_duplicate_total").await;
    eprintln!(
        "{duplicates} second deliveries dropped as duplicates\n{total} heartbeats of {nodes} nodes from {PUBLISHERS} publishers (QoS 1): published \
         in {published:.2?}, all accepted in {elapsed:.2?} = {:.0} msg/s end to end; collector \
         CPU {cpu:.2} s = {:.1} µs per message = {:.0} msg/s per core",
        total as f64 / elapsed.as_secs_f64(),
        cpu * 1e6 / total as f64,
        total as f64 / cpu.max(0.01),
    );
    // A second delivery (QoS 1 is at least once) is accepted by ingest, then dropped by the
    // core as a duplicate: each heartbeat counts once.
    assert_eq!(
        accepted - duplicates,
        total as f64,
        "every heartbeat accepted once ({duplicates} duplicates)"
    );
}
