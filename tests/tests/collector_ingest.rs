//! The collector against hostile and broken traffic through a real Mosquitto: every
//! rejection counted by reason on `/metrics`, the process stays up, the node cap and the
//! allowlist hold, and the registry survives a restart.

mod collector_support;

use std::time::Duration;

use alarmnet_e2e::Mosquitto;
use collector_support::{Collector, Publisher, birth, heartbeat, metric, workdir};
use rumqttc::QoS;

const T: Duration = Duration::from_secs(30);

fn rejected(reason: &str) -> String {
    format!("alarmnet_messages_rejected_total{{reason=\"{reason}\"}}")
}

#[tokio::test]
async fn garbage_is_counted_by_reason_and_the_collector_stays_up() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let collector = Collector::start(&broker, dir.path(), "").await;
    let p = Publisher::connect(&broker).await;
    let q = QoS::AtLeastOnce;
    let hb_topic = "alarmnet/v1/lanzhou/lz-cg/n1/hb";

    // One valid node first, so later messages can be judged against its binding.
    p.publish(
        "alarmnet/v1/lanzhou/lz-cg/n1/birth",
        birth("lanzhou", "lz-cg", "n1", 1000),
        q,
        false,
    )
    .await;
    p.publish(hb_topic, heartbeat(1), q, false).await;
    // Hostile and broken messages, each of a known reason.
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (hb_topic, b"not json at all".to_vec(), "bad_json"),
        (hb_topic, vec![0xff, 0xfe, 0x00], "bad_json"),
        (hb_topic, b"[1,2,3]".to_vec(), "bad_json"),
        (
            hb_topic,
            br#"{"v":1,"boot":"boot000000000001","seq":"1","ts":1}"#.to_vec(),
            "invalid_field",
        ),
        (
            hb_topic,
            br#"{"v":1,"boot":"x","seq":1,"ts":1}"#.to_vec(),
            "invalid_field",
        ),
        (
            hb_topic,
            br#"{"v":1,"boot":"boot000000000001","seq":1,"ts":1,"metrics":{"t":1e999}}"#.to_vec(),
            "invalid_field",
        ),
        (
            hb_topic,
            br#"{"v":1,"boot":"boot000000000001","ts":1}"#.to_vec(),
            "missing_field",
        ),
        (
            hb_topic,
            br#"{"v":7,"boot":"boot000000000001","seq":1,"ts":1}"#.to_vec(),
            "unsupported_version",
        ),
        (hb_topic, vec![b' '; 100 * 1024], "too_large"),
        (
            "alarmnet/v1/lanzhou/lz-cg/n1/heartbeat",
            heartbeat(2),
            "bad_topic",
        ),
        (
            "alarmnet/v1/lanzhou/lz-cg/n.1/hb",
            heartbeat(2),
            "bad_topic",
        ),
        (
            "alarmnet/v1/lanzhou/lz-cg/n2/birth",
            birth("lanzhou", "lz-cg", "other", 1),
            "id_mismatch",
        ),
        (
            "alarmnet/v1/lanzhou/lz-cg/n2/birth",
            birth("lanzhou", "elsewhere", "n2", 1),
            "id_mismatch",
        ),
        (
            "alarmnet/v1/lanzhou/lz-cg/ghost/hb",
            heartbeat(1),
            "unknown_node",
        ),
        (
            "alarmnet/v1/lanzhou/other-site/n1/hb",
            heartbeat(3),
            "moved",
        ),
        // A stale birth under another site (older ts than the binding's).
        (
            "alarmnet/v1/lanzhou/other-site/n1/birth",
            birth("lanzhou", "other-site", "n1", 10),
            "moved",
        ),
    ];
    for (topic, payload, _) in &cases {
        p.publish(topic, payload.clone(), q, false).await;
    }
    // Commands are traffic to agents, not from them: ignored, not counted.
    p.publish("alarmnet/v1/lanzhou/lz-cg/n1/cmd", b"{}".to_vec(), q, false)
        .await;
    p.wait_acked(cases.len() as u64 + 3, T).await;

    let total = cases.len() as f64 + 2.0;
    collector
        .wait_metric("alarmnet_messages_received_total", total, T)
        .await;
    let text = collector.metrics().await;
    for reason in [
        "bad_json",
        "invalid_field",
        "missing_field",
        "unsupported_version",
        "too_large",
        "bad_topic",
        "id_mismatch",
        "unknown_node",
        "moved",
    ] {
        let want = cases.iter().filter(|c| c.2 == reason).count() as f64;
        assert_eq!(metric(&text, &rejected(reason)), want, "{reason}\n{text}");
    }
    assert_eq!(metric(&text, "alarmnet_messages_accepted_total"), 2.0);
    assert_eq!(metric(&text, "alarmnet_nodes_tracked"), 1.0);

    // Rejections are logged, but not one line each: at most one per reason per window.
    let log = collector.process.stderr_text();
    let warnings = log.matches("message rejected").count();
    assert!(
        (1..=9).contains(&warnings),
        "{warnings} rejection lines:\n{log}"
    );

    // Still up and well.
    let mut collector = collector;
    assert!(collector.process.is_running());
    collector.wait_ready().await;
}

#[tokio::test]
async fn a_flood_of_invented_node_ids_cannot_pass_the_node_cap() {
    const CAP: usize = 50;
    const FLOOD: u64 = 100_000;
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let collector = Collector::start(
        &broker,
        dir.path(),
        &format!("[ingest]\nmax_nodes = {CAP}\n"),
    )
    .await;
    let p = Publisher::connect(&broker).await;
    let started = std::time::Instant::now();
    for i in 0..FLOOD {
        let node = format!("fake-{i}");
        let topic = format!("alarmnet/v1/evil/s{}/{node}/birth", i % 100);
        p.publish(
            &topic,
            birth("evil", &format!("s{}", i % 100), &node, 1),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    p.wait_acked(FLOOD, Duration::from_secs(120)).await;
    collector
        .wait_metric_at_least(
            "alarmnet_messages_received_total",
            FLOOD as f64,
            Duration::from_secs(180),
        )
        .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{FLOOD} births published (QoS 1) and judged in {elapsed:?}: {:.0} msg/s",
        FLOOD as f64 / elapsed.as_secs_f64()
    );
    let text = collector.metrics().await;
    assert_eq!(
        metric(&text, "alarmnet_nodes_tracked"),
        CAP as f64,
        "{text}"
    );
    // Every invented node beyond the cap was refused (a redelivered duplicate may add one).
    let received = metric(&text, "alarmnet_messages_received_total");
    let refused = metric(&text, &rejected("node_cap"));
    let accepted = metric(&text, "alarmnet_messages_accepted_total");
    assert!(refused >= (FLOOD as usize - CAP) as f64, "{text}");
    assert_eq!(refused + accepted, received, "{text}");

    // The store holds the cap too: a restart loads exactly CAP nodes from it, and the
    // flood's stragglers are still refused.
    let mut collector = collector;
    let status = collector.process.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "clean stop: {status}");
    let collector = collector.restart().await;
    assert_eq!(collector.metric("alarmnet_nodes_tracked").await, CAP as f64);
    p.publish(
        "alarmnet/v1/evil/s1/late-1/birth",
        birth("evil", "s1", "late-1", 1),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    collector.wait_metric(&rejected("node_cap"), 1.0, T).await;
    assert_eq!(collector.metric("alarmnet_nodes_tracked").await, CAP as f64);
}

#[tokio::test]
async fn only_allowlisted_nodes_register() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let list = dir.path().join("nodes.txt");
    std::fs::write(&list, "# the sirens of lz-cg\nlz-cg-s001\nlz-cg-s002\n")
        .expect("write allowlist");
    let extra = format!(
        "[ingest]\nregistration = \"allowlist\"\nallowlist_file = \"{}\"\n",
        list.display()
    );
    let collector = Collector::start(&broker, dir.path(), &extra).await;
    let p = Publisher::connect(&broker).await;
    for node in ["lz-cg-s001", "intruder", "lz-cg-s002", "lz-cg-s003"] {
        let topic = format!("alarmnet/v1/lanzhou/lz-cg/{node}/birth");
        p.publish(
            &topic,
            birth("lanzhou", "lz-cg", node, 5),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    collector
        .wait_metric("alarmnet_messages_received_total", 4.0, T)
        .await;
    let text = collector.metrics().await;
    assert_eq!(metric(&text, "alarmnet_nodes_tracked"), 2.0);
    assert_eq!(metric(&text, &rejected("not_allowed")), 2.0);
}
