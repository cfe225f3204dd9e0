//! `alarmnet-sim` admits commands as the agent does, with the `[commands]` section of its
//! config, and its configured `test_fail` and `test_error` nodes answer drills with `fail`
//! and `error`: the real binary against a real Mosquitto.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, binary, unique_id};
use alarmnet_protocol::signing::CommandKey;
use alarmnet_protocol::{CmdAction, CmdId, KeyId, Message, Name, Prefix, TestResult, decode};

const WAIT: Duration = Duration::from_secs(20);

/// The first five nodes of the simulator's layout, with their sites.
const NODES: [(&str, &str); 5] = [
    ("lanzhou-chengguan", "lz-chengguan-s01"),
    ("lanzhou-qilihe", "lz-qilihe-s01"),
    ("lanzhou-xigu", "lz-xigu-s01"),
    ("lanzhou-anning", "lz-anning-s01"),
    ("lanzhou-honggu", "lz-honggu-s01"),
];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

#[tokio::test]
async fn simulated_nodes_admit_signed_commands_and_fail_or_error_as_configured() {
    let broker = Mosquitto::start().await;
    let prefix = format!("{}/v1", unique_id("simcmd"));
    let dir = tempfile::tempdir().expect("tempdir");
    let centre = CommandKey::from_seed(KeyId::new("centre-sim").expect("kid"), [21; 32]);
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        format!(
            r#"
broker = "{url}"
nodes = 5
heartbeat_interval = "500ms"
keep_alive = "5s"
reconnect_max = "1s"
prefix = "{prefix}"
ramp = "100ms"
test_fail = ["lz-qilihe-s01"]
test_error = ["lz-xigu-s01"]
[commands]
keys = {{ "centre-sim" = "{public}" }}
allow_unsigned = false
"#,
            url = broker.url(),
            public = centre.public_key(),
        ),
    )
    .expect("write config");
    let probe = MqttProbe::connect(broker.port(), &format!("{prefix}/#")).await;
    let mut sim = Process::builder(binary("alarmnet-sim"))
        .name("alarmnet-sim")
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .spawn();
    let topic =
        |site: &str, node: &str, leaf: &str| format!("{prefix}/lanzhou/{site}/{node}/{leaf}");
    let parsed = Prefix::new(prefix.clone()).expect("prefix");

    // Every node is connected (and subscribed) once its birth is out.
    let mut born = 0;
    while born < NODES.len() {
        probe
            .next_matching(WAIT, |t, _| t.ends_with("/birth"))
            .await
            .expect("every node's birth");
        born += 1;
    }

    let now = now_ms();
    let signed = |site: &str, node: &str, id: &str, kind: &str| {
        let cmd = centre.seal(
            &topic(site, node, "cmd"),
            CmdId::new(id).expect("id"),
            CmdAction::Test {
                test: Name::new(kind).expect("kind"),
            },
            now,
            now + 300_000,
        );
        serde_json::to_string(&cmd).expect("json")
    };
    for (i, (site, node)) in NODES.iter().take(3).enumerate() {
        let id = format!("d-sim-{i}");
        probe
            .publish(
                &topic(site, node, "cmd"),
                signed(site, node, &id, "silent"),
                false,
            )
            .await;
    }
    let (site, node) = NODES[3];
    probe
        .publish(
            &topic(site, node, "cmd"),
            r#"{"v":1,"cmd":"test","id":"d-sim-unsigned","test":"silent"}"#,
            false,
        )
        .await;
    let (site, node) = NODES[4];
    probe
        .publish(
            &topic(site, node, "cmd"),
            signed(site, node, "d-sim-sound", "sound"),
            false,
        )
        .await;

    // Receipts: pass, fail, error, and the forbidden sound test answered with an error.
    let mut results = BTreeMap::new();
    let mut unsigned_refused = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while results.len() < 4 || !unsigned_refused {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = probe
            .next_matching(left, |t, _| t.ends_with("/test") || t.ends_with("/hb"))
            .await
            .unwrap_or_else(|| {
                panic!("receipts so far {results:?}, unsigned refused {unsigned_refused}")
            });
        match decode(&parsed, &m.topic, &m.payload)
            .expect("valid")
            .message
        {
            Message::Test(r) => {
                let drill = r.drill.map(|d| d.as_str().to_owned()).unwrap_or_default();
                results.insert(drill, r.result);
            }
            Message::Heartbeat(hb)
                if m.topic.contains(NODES[3].1)
                    && hb.metrics.get("cmd_refused_unsigned") == Some(1.0) =>
            {
                unsigned_refused = true;
            }
            _ => {}
        }
    }
    assert_eq!(
        results,
        BTreeMap::from([
            ("d-sim-0".to_owned(), TestResult::Pass),
            ("d-sim-1".to_owned(), TestResult::Fail),
            ("d-sim-2".to_owned(), TestResult::Error),
            ("d-sim-sound".to_owned(), TestResult::Error),
        ])
    );
    sim.signal("TERM");
    sim.wait_exit(Duration::from_secs(10)).await.expect("exits");
}
