//! Protocol messages through a real Mosquitto: what a client publishes arrives byte for byte,
//! and `alarmnet_protocol::decode` accepts the valid messages and rejects each invalid one
//! with the right `Reason` and field.

use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, Received, unique_id};
use alarmnet_protocol::{
    DecodeError, MAX_PAYLOAD_BYTES, Message, NodeTopic, Prefix, Reason, Topic, decode,
};

const WAIT: Duration = Duration::from_secs(10);
const BOOT: &str = "9f2c4e1a7b3d5e60";

/// A prefix of its own, so this test shares nothing with others on the same broker.
fn test_prefix() -> Prefix {
    Prefix::new(format!("{}/v1", unique_id("e2e"))).expect("a valid prefix")
}

fn heartbeat(seq: u64) -> String {
    format!(
        r#"{{"v":1,"boot":"{BOOT}","seq":{seq},"ts":1764330410123,"uptime_s":86400,
            "metrics":{{"cpu_pct":3.5,"battery_v":13.4}},
            "checks":{{"ok":5,"warning":0,"critical":1,"unknown":0}},
            "faults":["amplifier/AMP_NO_OUTPUT"]}}"#
    )
}

fn birth(region: &str, site: &str, node: &str) -> String {
    format!(
        r#"{{"v":1,"boot":"{BOOT}","ts":1764330000123,"node":"{node}","site":"{site}",
            "region":"{region}","kind":"siren","name":"城关区人防办楼顶警报器",
            "hb_interval_s":10,"checks":["system","power"]}}"#
    )
}

/// Publishes `payload` on `topic` and returns what the subscriber received on that topic,
/// decoded under `prefix`.
async fn round_trip(
    publisher: &MqttProbe,
    subscriber: &MqttProbe,
    prefix: &Prefix,
    topic: &str,
    payload: &[u8],
) -> Result<alarmnet_protocol::Envelope, DecodeError> {
    publisher.publish(topic, payload, false).await;
    let got: Received = subscriber
        .next_matching(WAIT, |t, _| t == topic)
        .await
        .unwrap_or_else(|| panic!("nothing arrived on {topic}"));
    assert_eq!(
        got.payload, payload,
        "the broker delivers the payload unchanged"
    );
    decode(prefix, &got.topic, &got.payload)
}

fn assert_rejected(
    result: Result<alarmnet_protocol::Envelope, DecodeError>,
    case: &str,
    reason: Reason,
    field: Option<&str>,
) {
    match result {
        Ok(envelope) => panic!("{case}: accepted, but should be {reason}: {envelope:?}"),
        Err(e) => {
            assert_eq!(e.reason, reason, "{case}: {e}");
            assert_eq!(e.field.as_deref(), field, "{case}: {e}");
        }
    }
}

#[tokio::test]
async fn valid_and_invalid_messages_through_mosquitto() {
    let broker = Mosquitto::start().await;
    let prefix = test_prefix();
    let root = prefix.as_str().split('/').next().expect("a first level");
    let subscriber = MqttProbe::connect(broker.port(), &format!("{root}/#")).await;
    let publisher = MqttProbe::connect(broker.port(), "unused/#").await;
    let node = unique_id("lz-cg");
    let hb_topic = format!("{prefix}/lanzhou/lz-chengguan/{node}/hb");

    // A valid heartbeat.
    let envelope = round_trip(
        &publisher,
        &subscriber,
        &prefix,
        &hb_topic,
        heartbeat(41).as_bytes(),
    )
    .await
    .expect("a valid heartbeat decodes");
    let Topic::Node(path, NodeTopic::Heartbeat) = &envelope.topic else {
        panic!("a heartbeat topic, got {:?}", envelope.topic);
    };
    assert_eq!(path.node.as_str(), node);
    assert_eq!(path.site.as_str(), "lz-chengguan");
    let Message::Heartbeat(hb) = &envelope.message else {
        panic!("a heartbeat, got {:?}", envelope.message);
    };
    assert_eq!(hb.seq, 41);
    assert_eq!(hb.boot.as_str(), BOOT);
    assert_eq!(hb.metrics.get("cpu_pct"), Some(3.5));
    assert_eq!(hb.checks.map(|c| c.critical), Some(1));

    // Bad JSON, in several ways.
    for (case, payload) in [
        ("truncated", &br#"{"v":1,"boot":"#[..]),
        ("not an object", &b"[1,2,3]"[..]),
        ("empty", &b""[..]),
        ("not UTF-8", &b"{\"v\":1,\"boot\":\"\xff\xfe\"}"[..]),
    ] {
        let result = round_trip(&publisher, &subscriber, &prefix, &hb_topic, payload).await;
        assert_rejected(result, case, Reason::BadJson, None);
    }

    // Version 2.
    let v2 = heartbeat(42).replace(r#""v":1"#, r#""v":2"#);
    let result = round_trip(&publisher, &subscriber, &prefix, &hb_topic, v2.as_bytes()).await;
    assert_rejected(result, "v=2", Reason::UnsupportedVersion, Some("v"));

    // A required field missing.
    let no_seq = heartbeat(43).replace(r#""seq":43,"#, "");
    let result = round_trip(
        &publisher,
        &subscriber,
        &prefix,
        &hb_topic,
        no_seq.as_bytes(),
    )
    .await;
    assert_rejected(result, "missing seq", Reason::MissingField, Some("seq"));

    // A field of the wrong type.
    let ts_string = heartbeat(44).replace(r#""ts":1764330410123"#, r#""ts":"yesterday""#);
    let result = round_trip(
        &publisher,
        &subscriber,
        &prefix,
        &hb_topic,
        ts_string.as_bytes(),
    )
    .await;
    assert_rejected(result, "ts as a string", Reason::InvalidField, Some("ts"));

    // Topics that are not protocol topics, each with a valid heartbeat payload.
    for (case, topic) in [
        (
            "unknown leaf",
            format!("{prefix}/lanzhou/lz-chengguan/{node}/bogus"),
        ),
        ("too few levels", format!("{prefix}/lanzhou/{node}/hb")),
        (
            "dot in a node id",
            format!("{prefix}/lanzhou/lz-chengguan/bad.node/hb"),
        ),
        (
            "another prefix",
            format!("{root}/v9/lanzhou/lz-chengguan/{node}/hb"),
        ),
    ] {
        let result = round_trip(
            &publisher,
            &subscriber,
            &prefix,
            &topic,
            heartbeat(45).as_bytes(),
        )
        .await;
        assert_rejected(result, case, Reason::BadTopic, None);
    }

    // A birth whose node differs from its topic's.
    let birth_topic = format!("{prefix}/lanzhou/lz-chengguan/{node}/birth");
    let impostor = birth("lanzhou", "lz-chengguan", "someone-else");
    let result = round_trip(
        &publisher,
        &subscriber,
        &prefix,
        &birth_topic,
        impostor.as_bytes(),
    )
    .await;
    assert_rejected(
        result,
        "birth id mismatch",
        Reason::IdMismatch,
        Some("node"),
    );

    // Size limit: exactly 16 KiB is accepted, one byte more is not. Padding goes into an
    // unknown field, which the protocol ignores.
    let padded = |len: usize| {
        let head = r#"{"v":1,"boot":"9f2c4e1a7b3d5e60","seq":46,"ts":1764330410123,"pad":""#;
        let tail = r#""}"#;
        let mut payload = String::from(head);
        payload.push_str(&"x".repeat(len - head.len() - tail.len()));
        payload.push_str(tail);
        assert_eq!(payload.len(), len);
        payload
    };
    let at_limit = padded(MAX_PAYLOAD_BYTES);
    let envelope = round_trip(
        &publisher,
        &subscriber,
        &prefix,
        &hb_topic,
        at_limit.as_bytes(),
    )
    .await
    .expect("a 16 KiB heartbeat is accepted");
    assert!(matches!(envelope.message, Message::Heartbeat(ref hb) if hb.seq == 46));
    let oversized = padded(MAX_PAYLOAD_BYTES + 1);
    let result = round_trip(
        &publisher,
        &subscriber,
        &prefix,
        &hb_topic,
        oversized.as_bytes(),
    )
    .await;
    assert_rejected(result, "16 KiB + 1", Reason::TooLarge, None);
}

#[tokio::test]
async fn a_retained_birth_reaches_a_late_subscriber_and_decodes() {
    let broker = Mosquitto::start().await;
    let prefix = test_prefix();
    let node = unique_id("lz-cg");
    let topic = format!("{prefix}/lanzhou/lz-chengguan/{node}/birth");
    let publisher = MqttProbe::connect(broker.port(), "unused/#").await;
    publisher
        .publish(
            &topic,
            birth("lanzhou", "lz-chengguan", &node).into_bytes(),
            true,
        )
        .await;

    let late = MqttProbe::connect(broker.port(), &prefix.agents_filter()).await;
    let got = late
        .next(WAIT)
        .await
        .expect("the retained birth on subscribe");
    assert_eq!(got.topic, topic);
    assert!(got.retain, "delivered from the broker's retained store");
    let envelope = decode(&prefix, &got.topic, &got.payload).expect("the birth decodes");
    let Message::Birth(birth) = envelope.message else {
        panic!("a birth, got {:?}", envelope.message);
    };
    assert_eq!(birth.node.as_str(), node);
    assert_eq!(
        birth.name.as_ref().map(|n| n.as_str()),
        Some("城关区人防办楼顶警报器")
    );
    assert_eq!(birth.hb_interval_s, 10.0);
}
