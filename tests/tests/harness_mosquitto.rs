//! The Mosquitto handle and the MQTT probe: readiness, publish/receive, restart on the same
//! port, persistence across a clean restart.

use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, unique_id};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn probe_receives_what_another_probe_publishes() {
    let broker = Mosquitto::start().await;
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
    let topic = format!("harness/{}/hello", unique_id("t"));
    let listener = MqttProbe::connect(broker.port(), "harness/#").await;
    let talker = MqttProbe::connect(broker.port(), "unused/#").await;
    talker.publish(&topic, "hi", false).await;
    let got = listener
        .next_matching(WAIT, |t, _| t == topic)
        .await
        .expect("the message published by the other probe");
    assert_eq!(got.text(), "hi");
    assert!(!got.retain);
}

#[tokio::test]
async fn stop_and_start_again_keeps_the_port_and_probes_reconnect() {
    let mut broker = Mosquitto::start().await;
    let port = broker.port();
    let probe = MqttProbe::connect(port, "restart/#").await;
    let first_pid = broker.pid().expect("running");

    broker.stop().await;
    assert!(!broker.is_running());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing listens after stop"
    );
    broker.start_again().await;
    assert_eq!(broker.port(), port);
    assert_ne!(broker.pid(), Some(first_pid));

    // The probe reconnects and subscribes again by itself; retry the publish until its
    // subscription is back.
    let got = alarmnet_e2e::wait_for(WAIT, "the probe sees a message after the restart", || {
        let probe = &probe;
        async move {
            probe.publish("restart/x", "after", false).await;
            probe
                .next_matching(Duration::from_millis(200), |t, _| t == "restart/x")
                .await
        }
    })
    .await;
    assert_eq!(got.text(), "after");
}

#[tokio::test]
async fn kill_then_start_again_works() {
    let mut broker = Mosquitto::start().await;
    broker.kill();
    assert!(!broker.is_running());
    broker.start_again().await;
    assert!(broker.is_running());
}

#[tokio::test]
async fn retained_messages_survive_a_clean_restart_only_with_persistence() {
    for persistence in [true, false] {
        let mut broker = Mosquitto::builder().persistence(persistence).start().await;
        let topic = format!("retained/{}", unique_id("t"));
        let publisher = MqttProbe::connect(broker.port(), "unused/#").await;
        publisher.publish(&topic, "kept", true).await;
        drop(publisher);
        broker.stop().await;
        broker.start_again().await;
        let reader = MqttProbe::connect(broker.port(), &topic).await;
        let got = reader.next(Duration::from_millis(500)).await;
        if persistence {
            let got = got.expect("the retained message after a restart with persistence");
            assert_eq!(got.text(), "kept");
            assert!(got.retain);
        } else {
            assert_eq!(
                got, None,
                "no persistence: nothing retained after a restart"
            );
        }
    }
}

#[tokio::test]
async fn a_probe_started_before_the_broker_connects_once_it_is_up() {
    let port = alarmnet_e2e::free_port();
    let early = tokio::spawn(async move { MqttProbe::connect(port, "early/#").await });
    let broker = Mosquitto::builder().port(port).start().await;
    assert_eq!(broker.port(), port);
    let early = early
        .await
        .expect("the probe connects once the broker is up");
    let talker = MqttProbe::connect(port, "unused/#").await;
    talker.publish("early/x", "late broker", false).await;
    let got = early
        .next_matching(WAIT, |t, _| t == "early/x")
        .await
        .expect("delivered");
    assert_eq!(got.text(), "late broker");
}
