//! Signed command admission, end to end: the real `alarmnet-agent` binary against a real
//! Mosquitto. Forged, expired, early, retained, replayed and forbidden commands are refused,
//! each counted under its reason in the heartbeat's metrics, and none of them runs a test
//! procedure (each procedure writes a marker file); a valid signed command runs once, and
//! its id is still refused after the agent restarts, or, when its memory of ids is damaged,
//! every command signed before the restart is. A bad key in the config exits 64.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, TestAgent, binary};
use alarmnet_protocol::signing::CommandKey;
use alarmnet_protocol::{
    CmdAction, CmdId, KeyId, Message, Name, Prefix, TestReceipt, TestResult, decode,
};

const WAIT: Duration = Duration::from_secs(15);
const KID: &str = "centre-e2e";
const MIN: u64 = 60_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn key(kid: &str, seed: u8) -> CommandKey {
    CommandKey::from_seed(KeyId::new(kid).expect("kid"), [seed; 32])
}

/// The harness's test agent, with what this file asks of it.
struct Node(TestAgent);

impl std::ops::Deref for Node {
    type Target = TestAgent;
    fn deref(&self) -> &TestAgent {
        &self.0
    }
}

impl Node {
    fn new() -> Self {
        Self(TestAgent::new("cmd"))
    }

    fn marker(&self, test: &str) -> PathBuf {
        self.dir.path().join(format!("{test}.ran"))
    }

    /// The agent's config: a `silent` procedure that marks its run and takes a second, a
    /// `sound` procedure (remote starts forbidden by default) that marks its run.
    fn config(&self, broker: &Mosquitto, trusted: &CommandKey, max_skew: &str) -> PathBuf {
        let path = self.dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!(
                r#"
[node]
id = "{id}"
site = "lanzhou-chengguan"
region = "lanzhou"
[mqtt]
brokers = ["{url}"]
heartbeat_interval = "500ms"
keep_alive = "5s"
reconnect_min = "100ms"
reconnect_max = "1s"
prefix = "{prefix}"
[spool]
dir = "{spool}"
[tests.silent]
command = ["sh", "-c", "touch '{silent}'; sleep 1"]
[tests.sound]
command = ["sh", "-c", "touch '{sound}'"]
[commands]
keys = {{ "{KID}" = "{public}" }}
allow_unsigned = false
max_skew = "{max_skew}"
"#,
                id = self.id,
                url = broker.url(),
                prefix = self.prefix,
                spool = self.dir.path().join("spool").display(),
                silent = self.marker("silent").display(),
                sound = self.marker("sound").display(),
                public = trusted.public_key(),
            ),
        )
        .expect("write config");
        path
    }

    /// A `test` command of `kind` signed by `key`, as JSON.
    fn signed(&self, key: &CommandKey, id: &str, kind: &str, ts: u64, exp: u64) -> String {
        let action = CmdAction::Test {
            test: Name::new(kind).expect("kind"),
        };
        let cmd = key.seal(
            &self.topic("cmd"),
            CmdId::new(id).expect("id"),
            action,
            ts,
            exp,
        );
        serde_json::to_string(&cmd).expect("json")
    }

    fn message(&self, topic: &str, payload: &[u8]) -> Message {
        let prefix = Prefix::new(self.prefix.clone()).expect("prefix");
        decode(&prefix, topic, payload)
            .unwrap_or_else(|e| panic!("invalid message on {topic}: {e}"))
            .message
    }

    /// Waits for the node's birth (the agent is connected and subscribed once its birth
    /// is out: it subscribes before publishing).
    async fn birth(&self, probe: &MqttProbe) {
        let topic = self.topic("birth");
        probe
            .next_matching(WAIT, |t, _| t == topic)
            .await
            .unwrap_or_else(|| panic!("no birth on {topic}"));
    }

    /// The test receipts for drills `ids`, whatever order they arrive in.
    async fn receipts(&self, probe: &MqttProbe, ids: &[&str]) -> BTreeMap<String, TestReceipt> {
        let topic = self.topic("test");
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut found = BTreeMap::new();
        while found.len() < ids.len() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let m = probe
                .next_matching(left, |t, _| t == topic)
                .await
                .unwrap_or_else(|| panic!("receipts for {ids:?}: only {found:?}"));
            if let Message::Test(r) = self.message(&m.topic, &m.payload) {
                if let Some(drill) = r.drill.as_ref().filter(|d| ids.contains(&d.as_str())) {
                    found.insert(drill.as_str().to_owned(), r);
                }
            }
        }
        found
    }

    /// Waits for a heartbeat whose command counters (`cmd_*` metrics) are exactly
    /// `expected`; panics with the last ones seen if none is within [`WAIT`].
    async fn counters(&self, probe: &MqttProbe, expected: &[(&str, f64)]) {
        let expected: BTreeMap<String, f64> =
            expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let topic = self.topic("hb");
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = BTreeMap::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(m) = probe.next_matching(left, |t, _| t == topic).await else {
                panic!("no heartbeat with counters {expected:?}; last seen {last:?}");
            };
            let Message::Heartbeat(hb) = self.message(&m.topic, &m.payload) else {
                continue;
            };
            last = hb
                .metrics
                .iter()
                .filter(|(k, _)| k.as_str().starts_with("cmd_"))
                .map(|(k, v)| (k.as_str().to_owned(), v))
                .collect();
            if last == expected {
                return;
            }
        }
    }
}

#[tokio::test]
async fn forged_stale_retained_replayed_and_forbidden_commands_never_run() {
    let broker = Mosquitto::start().await;
    let node = Node::new();
    let centre = key(KID, 11);
    let config = node.config(&broker, &centre, "30s");
    let probe = MqttProbe::connect(broker.port(), &format!("{}/#", node.prefix)).await;
    let cmd = node.topic("cmd");
    let now = now_ms();
    let exp = now + 5 * MIN;

    // A valid command left retained on the broker: delivered on the agent's subscribe.
    let retained = node.signed(&centre, "d-retained", "silent", now, exp);
    probe.publish(&cmd, retained.clone(), true).await;

    let mut agent = node.start(&config);
    node.birth(&probe).await;
    node.counters(
        &probe,
        &[
            ("cmd_accepted", 0.0),
            ("cmd_refused", 1.0),
            ("cmd_refused_retained", 1.0),
        ],
    )
    .await;
    // Clear it (the agent ignores the empty payload as an invalid message).
    probe.publish(&cmd, Vec::new(), true).await;

    // One of each forgery.
    let unsigned = r#"{"v":1,"cmd":"test","id":"d-unsigned","test":"silent"}"#.to_owned();
    let unknown = node.signed(&key("rogue", 12), "d-unknown", "silent", now, exp);
    let wrong_key = node.signed(&key(KID, 13), "d-wrong-key", "silent", now, exp);
    let mut tampered: serde_json::Value =
        serde_json::from_str(&node.signed(&centre, "d-tampered", "silent", now, exp))
            .expect("json");
    tampered["exp"] = (exp + 10 * MIN).into();
    let expired = node.signed(&centre, "d-expired", "silent", now - 10 * MIN, now - MIN);
    let future = node.signed(
        &centre,
        "d-future",
        "silent",
        now + 10 * MIN,
        now + 15 * MIN,
    );
    let sound = node.signed(&centre, "d-sound", "sound", now, exp);
    for payload in [
        unsigned,
        unknown,
        wrong_key,
        tampered.to_string(),
        expired,
        future,
        retained.clone(), // the retained command's id, live now: a replay
        sound,
    ] {
        probe.publish(&cmd, payload, false).await;
    }
    // A forbidden test is answered, so a drill learns why.
    let answer = node
        .receipts(&probe, &["d-sound"])
        .await
        .remove("d-sound")
        .expect("receipt");
    assert_eq!(answer.result, TestResult::Error);
    assert_eq!(answer.test.as_str(), "sound");
    let message = answer.message.as_ref().map(|m| m.as_str()).unwrap_or("");
    assert!(message.contains("remote_forbidden"), "{message}");
    node.counters(
        &probe,
        &[
            ("cmd_accepted", 0.0),
            ("cmd_refused", 9.0),
            ("cmd_refused_unsigned", 1.0),
            ("cmd_refused_unknown_key", 1.0),
            ("cmd_refused_bad_signature", 2.0),
            ("cmd_refused_retained", 1.0),
            ("cmd_refused_replayed", 1.0),
            ("cmd_refused_expired", 1.0),
            ("cmd_refused_future", 1.0),
            ("cmd_refused_remote_forbidden", 1.0),
        ],
    )
    .await;
    assert!(!node.marker("silent").exists(), "a refused command ran");
    assert!(!node.marker("sound").exists(), "a refused command ran");

    // A valid signed command runs; a second one while the first is running is busy.
    let valid = node.signed(&centre, "d-valid", "silent", now_ms(), now_ms() + 5 * MIN);
    probe.publish(&cmd, valid.clone(), false).await;
    let second = node.signed(&centre, "d-second", "silent", now_ms(), now_ms() + 5 * MIN);
    probe.publish(&cmd, second, false).await;
    let mut answers = node.receipts(&probe, &["d-valid", "d-second"]).await;
    let busy = answers.remove("d-second").expect("busy receipt");
    assert_eq!(busy.result, TestResult::Error);
    let message = busy.message.as_ref().map(|m| m.as_str()).unwrap_or("");
    assert!(message.contains("already running"), "{message}");
    let ran = answers.remove("d-valid").expect("receipt");
    assert_eq!(ran.result, TestResult::Pass, "{:?}", ran.message);
    assert_eq!(ran.test.as_str(), "silent");
    assert!(
        node.marker("silent").exists(),
        "the valid command did not run"
    );
    assert!(!node.marker("sound").exists());

    // The same command again (a QoS 1 redelivery, or a capture replayed): refused.
    std::fs::remove_file(node.marker("silent")).expect("remove marker");
    probe.publish(&cmd, valid.clone(), false).await;
    node.counters(
        &probe,
        &[
            ("cmd_accepted", 1.0),
            ("cmd_refused", 11.0),
            ("cmd_refused_unsigned", 1.0),
            ("cmd_refused_unknown_key", 1.0),
            ("cmd_refused_bad_signature", 2.0),
            ("cmd_refused_retained", 1.0),
            ("cmd_refused_replayed", 2.0),
            ("cmd_refused_expired", 1.0),
            ("cmd_refused_future", 1.0),
            ("cmd_refused_remote_forbidden", 1.0),
            ("cmd_refused_busy", 1.0),
        ],
    )
    .await;
    assert!(!node.marker("silent").exists(), "a replay ran");

    let stderr = agent.stderr_text();
    assert!(
        stderr.contains("command refused") && stderr.contains("bad_signature"),
        "refusals are logged:\n{stderr}"
    );
    for secret in [centre.public_key().to_string(), centre.to_file_text()] {
        for part in secret.split_whitespace().filter(|p| p.len() > 20) {
            assert!(!stderr.contains(part), "key material in the log");
        }
    }

    // After a restart the ids are still known.
    agent.signal("TERM");
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
    assert!(status.success(), "{status}");
    assert!(node.dir.path().join("spool/seen-commands").is_file());
    let mut agent = node.start(&config);
    node.birth(&probe).await;
    probe.publish(&cmd, valid, false).await;
    probe.publish(&cmd, retained, false).await;
    node.counters(
        &probe,
        &[
            ("cmd_accepted", 0.0),
            ("cmd_refused", 2.0),
            ("cmd_refused_replayed", 2.0),
        ],
    )
    .await;
    assert!(
        !node.marker("silent").exists(),
        "a replay ran after a restart"
    );
    agent.signal("TERM");
    agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
}

#[tokio::test]
async fn a_damaged_seen_ids_file_refuses_commands_signed_before_the_restart() {
    let broker = Mosquitto::start().await;
    let node = Node::new();
    let centre = key(KID, 11);
    let config = node.config(&broker, &centre, "1s");
    let probe = MqttProbe::connect(broker.port(), &format!("{}/#", node.prefix)).await;
    let cmd = node.topic("cmd");

    // A first run accepts a command, so the spool directory is in use.
    let mut agent = node.start(&config);
    node.birth(&probe).await;
    let first = node.signed(&centre, "d-first", "silent", now_ms(), now_ms() + 5 * MIN);
    probe.publish(&cmd, first.clone(), false).await;
    node.receipts(&probe, &["d-first"]).await;
    agent.signal("TERM");
    agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");

    // The file is damaged while the agent is down: it forgets which ids it saw.
    let seen = node.dir.path().join("spool/seen-commands");
    std::fs::write(&seen, "v 1\nnot a line of this file\n").expect("damage");
    let signed_before = node.signed(&centre, "d-before", "silent", now_ms(), now_ms() + 5 * MIN);
    let mut agent = node.start(&config);
    node.birth(&probe).await;
    // Both the id it ran and a command it never saw, signed before the restart, are
    // refused: it cannot tell them apart any more.
    probe.publish(&cmd, first, false).await;
    probe.publish(&cmd, signed_before, false).await;
    node.counters(
        &probe,
        &[
            ("cmd_accepted", 0.0),
            ("cmd_refused", 2.0),
            ("cmd_refused_replayed", 2.0),
        ],
    )
    .await;
    assert!(agent.stderr_text().contains("seen command ids lost"));
    // A command signed more than max_skew after the restart runs.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = node.signed(&centre, "d-after", "silent", now_ms(), now_ms() + 5 * MIN);
    probe.publish(&cmd, after, false).await;
    let ran = node.receipts(&probe, &["d-after"]).await;
    assert_eq!(ran["d-after"].result, TestResult::Pass);
    agent.signal("TERM");
    agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits");
}

#[tokio::test]
async fn a_bad_command_key_exits_64_naming_the_key_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[node]
id = "lz-cg-s001"
site = "lz-chengguan"
region = "lanzhou"
[spool]
dir = "/nonexistent/never-created"
[commands]
keys = { "centre-2026" = "c2VjcmV0LWxvb2tpbmctYnV0LXNob3J0" }
max_skew = "soon"
"#,
    )
    .expect("write");
    let mut agent = Process::builder(binary("alarmnet-agent"))
        .name("agent:bad-key")
        .args(["run", "--config"])
        .arg(&path)
        .spawn();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits at once");
    assert_eq!(status.code(), Some(64));
    let stderr = agent.stderr_text();
    assert!(stderr.contains("commands.keys.centre-2026"), "{stderr}");
    assert!(stderr.contains("commands.max_skew"), "{stderr}");
    assert!(
        !stderr.contains("c2VjcmV0LWxvb2tpbmctYnV0LXNob3J0"),
        "the key's value stays out of the message:\n{stderr}"
    );
}
