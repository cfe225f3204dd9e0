//! The collector's own lifecycle through a real Mosquitto: its retained `$collector` state,
//! the Will after kill -9, the clean offline after SIGTERM, environment overrides, and a bad
//! configuration refused with exit code 64 before anything connects.

mod collector_support;

use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, binary, free_port};
use collector_support::{Collector, workdir};

const T: Duration = Duration::from_secs(20);

/// Waits for the collector `id`'s state to be `want` and returns whether that message was a
/// stored retained one. Other messages on the topic (a repeated retained delivery) are
/// skipped.
async fn wait_state(probe: &MqttProbe, id: &str, want: &str) -> bool {
    let topic = format!("alarmnet/v1/$collector/{id}/state");
    let needle = format!("\"state\":\"{want}\"");
    let m = probe
        .next_matching(T, |t, p| {
            t == topic && String::from_utf8_lossy(p).contains(&needle)
        })
        .await
        .unwrap_or_else(|| panic!("no {want} state on {topic}"));
    m.retain
}

#[tokio::test]
async fn collector_state_is_retained_online_and_the_will_says_offline_after_kill_9() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    // The client id comes from the environment and stays "007", not 7.
    let mut collector = Collector::start_with_env(
        &broker,
        dir.path(),
        "",
        &[("ALARMNET_MQTT__CLIENT_ID", "007")],
    )
    .await;
    assert_eq!(collector.client_id, "007");

    // A probe that subscribes after the fact gets the retained online state.
    let probe = MqttProbe::connect(broker.port(), "alarmnet/v1/$collector/+/state").await;
    assert!(wait_state(&probe, "007", "online").await, "retained");

    collector.process.kill_and_reap();
    wait_state(&probe, "007", "offline").await;
    // And it stays retained.
    let late = MqttProbe::connect(broker.port(), "alarmnet/v1/$collector/+/state").await;
    assert!(wait_state(&late, "007", "offline").await, "retained");
}

#[tokio::test]
async fn sigterm_publishes_offline_and_exits_cleanly_and_a_restart_is_online_again() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let mut collector = Collector::start(&broker, dir.path(), "").await;
    let id = collector.client_id.clone();
    let probe = MqttProbe::connect(broker.port(), "alarmnet/v1/$collector/+/state").await;
    wait_state(&probe, &id, "online").await;

    let status = collector.process.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    wait_state(&probe, &id, "offline").await;
    // A clean DISCONNECT, not a dropped connection (which would publish the Will).
    assert!(
        broker
            .log_text()
            .contains(&format!("Client {id} disconnected.")),
        "{}",
        broker.log_text()
    );

    let collector = collector.restart().await;
    wait_state(&probe, &id, "online").await;
    drop(collector);
}

#[tokio::test]
async fn a_bad_config_lists_every_problem_and_exits_64_before_connecting() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let config = dir.path().join("bad.toml");
    let client_id = "never-connects";
    let http = free_port();
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nbroker = \"{}\"\nclient_id = \"{client_id}\"\nkeep_alive = \"1s\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n[store]\npath = \"{}\"\n\
             [[webhooks]]\nurl = \"not a url\"\n[ingest]\nmax_nodes = 0\n[bogus]\nx = 1\n",
            broker.url(),
            dir.path().join("a.db").display()
        ),
    )
    .expect("write config");
    let mut process = Process::builder(binary("alarmnet-collector"))
        .name("collector-bad-config")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("ALARMNET_ALERTMANAGER__URL", "ftp://nowhere")
        .spawn();
    let status = process
        .wait_exit(T)
        .await
        .expect("the collector exits on a bad config");
    assert_eq!(status.code(), Some(64), "{}", process.output_tail(20));
    let stderr = process.stderr_text();
    for needle in [
        "mqtt.keep_alive",
        "webhooks[0].url",
        "ingest.max_nodes",
        "unknown section [bogus]",
        "alertmanager.url",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
    assert!(stderr.contains("5 problem(s)"), "{stderr}");
    // Nothing was created, bound or connected.
    assert!(
        !dir.path().join("a.db").exists(),
        "the store was not created"
    );
    assert!(std::net::TcpListener::bind(("127.0.0.1", http)).is_ok());
    assert!(
        !broker.log_text().contains(client_id),
        "{}",
        broker.log_text()
    );
}

#[tokio::test]
async fn after_a_broker_restart_that_lost_the_session_the_collector_subscribes_again() {
    use collector_support::{Publisher, birth};
    use rumqttc::QoS;

    // No persistence: the restarted broker has forgotten the collector's session.
    let mut broker = Mosquitto::start().await;
    let dir = workdir();
    let mut collector = Collector::start(&broker, dir.path(), "").await;
    broker.stop().await;
    broker.start_again().await;
    collector
        .wait_metric("alarmnet_mqtt_connects_total", 2.0, T)
        .await;
    collector.wait_ready().await;
    let p = Publisher::connect(&broker).await;
    p.publish(
        "alarmnet/v1/lanzhou/lz-cg/n1/birth",
        birth("lanzhou", "lz-cg", "n1", 1),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    collector
        .wait_metric("alarmnet_messages_accepted_total", 1.0, T)
        .await;
    assert!(
        collector
            .process
            .stderr_text()
            .contains("session_present=false"),
        "{}",
        collector.process.output_tail(20)
    );
}
