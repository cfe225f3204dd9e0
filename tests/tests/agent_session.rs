//! The real `alarmnet-agent` binary against a real Mosquitto: retained birth and state, the
//! Will after kill -9, a clean stop, commands, the spool across kill -9 and across a broker
//! restart without persistence, and a bad configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, Received, TestAgent, binary, wait_for};
use alarmnet_protocol::{Message, NodeState, OfflineReason, Prefix, decode};

const WAIT: Duration = Duration::from_secs(15);

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
        Self(TestAgent::new("ag"))
    }

    /// Writes the agent's config (heartbeat every `hb`) and returns its path.
    fn config(&self, broker: &Mosquitto, hb: &str) -> PathBuf {
        let path = self.dir.path().join("agent.toml");
        std::fs::write(
            &path,
            format!(
                r#"
[node]
id = "{id}"
site = "lanzhou-chengguan"
region = "lanzhou"
kind = "siren"
name = "城关区 1号警报器"
[mqtt]
brokers = ["{url}"]
heartbeat_interval = "{hb}"
keep_alive = "5s"
reconnect_min = "100ms"
reconnect_max = "1s"
prefix = "{prefix}"
[spool]
dir = "{spool}"
# These tests send unsigned commands; signed admission is tests/tests/agent_commands.rs.
[commands]
allow_unsigned = true
"#,
                id = self.id,
                url = broker.url(),
                prefix = self.prefix,
                spool = self.spool_dir().display(),
            ),
        )
        .expect("write config");
        path
    }

    fn decode(&self, m: &Received) -> Message {
        let prefix = Prefix::new(self.prefix.clone()).expect("prefix");
        decode(&prefix, &m.topic, &m.payload)
            .unwrap_or_else(|e| panic!("invalid message on {}: {e}: {}", m.topic, m.text()))
            .message
    }

    async fn next(&self, probe: &MqttProbe, leaf: &str) -> Message {
        let topic = self.topic(leaf);
        let m = probe
            .next_matching(WAIT, |t, _| t == topic)
            .await
            .unwrap_or_else(|| panic!("no message on {topic}"));
        self.decode(&m)
    }
}

fn state(m: Message) -> alarmnet_protocol::State {
    match m {
        Message::State(s) => s,
        other => panic!("expected a state, got {other:?}"),
    }
}

#[tokio::test]
async fn birth_and_state_are_retained_commands_work_and_a_clean_stop_says_shutdown() {
    let broker = Mosquitto::start().await;
    let node = Node::new();
    let config = node.config(&broker, "1s");
    let live = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);

    let Message::Birth(birth) = node.next(&live, "birth").await else {
        panic!("birth first")
    };
    assert_eq!(birth.node.as_str(), node.id);
    assert_eq!(birth.hb_interval_s, 1.0);
    let online = state(node.next(&live, "state").await);
    assert_eq!(online.state, NodeState::Online);
    assert_eq!(online.boot, birth.boot);
    let Message::Heartbeat(hb) = node.next(&live, "hb").await else {
        panic!("heartbeat")
    };
    assert_eq!((hb.seq, hb.replay), (0, false));

    // A late subscriber gets birth and state from the broker's retained store.
    let late = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut retained = Vec::new();
    while retained.len() < 2 {
        let m = late.next(WAIT).await.expect("retained birth and state");
        if m.retain {
            retained.push(m.topic.clone());
        }
    }
    retained.sort();
    assert_eq!(retained, vec![node.topic("birth"), node.topic("state")]);

    // cmd test: a receipt that names the drill (the test procedure itself is not configured,
    // so the result is `error`, as the protocol says).
    live.publish(
        &node.topic("cmd"),
        r#"{"v":1,"cmd":"test","id":"d-e2e-1","test":"silent"}"#,
        false,
    )
    .await;
    let Message::Test(receipt) = node.next(&live, "test").await else {
        panic!("test receipt")
    };
    assert_eq!(receipt.drill.as_ref().map(|d| d.as_str()), Some("d-e2e-1"));
    assert_eq!(receipt.test.as_str(), "silent");
    assert_eq!(receipt.boot, birth.boot);

    // cmd rebirth: birth and state again, same boot.
    live.publish(
        &node.topic("cmd"),
        r#"{"v":1,"cmd":"rebirth","id":"c-1"}"#,
        false,
    )
    .await;
    let Message::Birth(again) = node.next(&live, "birth").await else {
        panic!("birth again")
    };
    assert_eq!(again.boot, birth.boot);

    agent.signal("TERM");
    let offline = loop {
        // Skip the `online` that followed the rebirth.
        let s = state(node.next(&live, "state").await);
        if s.state == NodeState::Offline {
            break s;
        }
    };
    assert_eq!(offline.state, NodeState::Offline);
    assert_eq!(offline.reason, Some(OfflineReason::Shutdown));
    assert_eq!(offline.boot, birth.boot);
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("agent exits within 5 s of SIGTERM");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_will_after_kill_9_carries_the_boot() {
    let broker = Mosquitto::start().await;
    let node = Node::new();
    let config = node.config(&broker, "10s");
    let probe = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let online = state(node.next(&probe, "state").await);
    assert_eq!(online.state, NodeState::Online);
    agent.signal("KILL");
    let will = state(node.next(&probe, "state").await);
    assert_eq!(will.state, NodeState::Offline);
    assert_eq!(will.reason, Some(OfflineReason::Lost));
    assert_eq!(will.boot, online.boot);
}

#[tokio::test]
async fn a_bad_config_exits_64_listing_every_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[node]
id = "bad id"
site = "s/1"
region = "lanzhou"
[mqtt]
brokers = ["http://127.0.0.1:1883"]
heartbeat_interval = "0s"
ca_file = "/nonexistent/ca.pem"
"#,
    )
    .expect("write");
    let mut agent = Process::builder(binary("alarmnet-agent"))
        .name("agent:bad-config")
        .args(["run", "--config"])
        .arg(&path)
        .spawn();
    let status = agent
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits at once");
    assert_eq!(status.code(), Some(64));
    let stderr = agent.stderr_text();
    for needle in [
        "node.id",
        "node.site",
        "mqtt.brokers",
        "mqtt.heartbeat_interval",
        "mqtt.ca_file",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
}

/// Heartbeats spooled while the broker is down survive kill -9 and arrive after a restart,
/// all of them, intact, with their original boot, `seq` and `ts`, marked `replay`.
#[tokio::test]
async fn the_spool_survives_kill_9_and_is_replayed_after_restart() {
    let mut broker = Mosquitto::start().await;
    let node = Node::new();
    let config = node.config(&broker, "500ms");
    broker.stop().await;
    let mut agent = node.start(&config);
    // Wait until at least four heartbeats are in the spool's log (each record is 250 to
    // 400 bytes, depending on the host's metrics; `seen-commands` beside it does not count).
    let spool = node.spool_dir();
    wait_for(WAIT, "four heartbeats in the spool", || {
        let spool = spool.clone();
        async move {
            let bytes: u64 = std::fs::read_dir(&spool)
                .ok()?
                .filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name();
                    let name = name.to_string_lossy();
                    (name.starts_with("spool-") && name.ends_with(".log"))
                        .then(|| e.metadata().ok())
                        .flatten()
                })
                .map(|m| m.len())
                .sum();
            (bytes > 4 * 400).then_some(())
        }
    })
    .await;
    agent.signal("KILL");
    agent.wait_exit(WAIT).await.expect("killed");

    broker.start_again().await;
    let probe = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let new_boot = state(node.next(&probe, "state").await).boot;
    // Collect heartbeats until a live one of the new boot arrives: the replay comes first.
    let mut old = Vec::new();
    loop {
        let Message::Heartbeat(hb) = node.next(&probe, "hb").await else {
            unreachable!()
        };
        if hb.boot == new_boot {
            assert!(!hb.replay);
            break;
        }
        assert!(hb.replay, "spooled heartbeats are marked replay");
        old.push(hb);
    }
    assert!(old.len() >= 4, "only {} heartbeats replayed", old.len());
    let seqs: Vec<u64> = old.iter().map(|h| h.seq).collect();
    assert_eq!(
        seqs,
        (0..old.len() as u64).collect::<Vec<_>>(),
        "nothing lost or reordered"
    );
    assert!(
        old.windows(2).all(|w| w[0].ts < w[1].ts),
        "original ts kept"
    );
    assert!(old.iter().all(|h| h.boot == old[0].boot));
    agent.signal("TERM");
    agent.wait_exit(WAIT).await.expect("exits");
}

/// A broker restarted without persistence: the agent resends everything it had not seen
/// acknowledged, so the heartbeat sequence the subscribers see has no gap.
#[tokio::test]
async fn a_broker_restart_without_persistence_loses_nothing_unacknowledged() {
    let mut broker = Mosquitto::builder().persistence(false).start().await;
    let node = Node::new();
    let config = node.config(&broker, "500ms");
    let before = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let boot = state(node.next(&before, "state").await).boot;
    let mut seqs: Vec<u64> = Vec::new();
    for _ in 0..2 {
        let Message::Heartbeat(hb) = node.next(&before, "hb").await else {
            unreachable!()
        };
        seqs.push(hb.seq);
    }
    broker.kill();
    // An outage of several heartbeats, which the agent spools.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Hold the agent while the broker comes back, so the new subscriber is in place before
    // the agent can replay (the broker lost every subscription).
    agent.signal("STOP");
    broker.start_again().await;
    let after = MqttProbe::connect(broker.port(), &node.filter()).await;
    agent.signal("CONT");

    for m in before.drain().await {
        if let Message::Heartbeat(hb) = node.decode(&m) {
            seqs.push(hb.seq);
        }
    }
    let mut live = 0;
    let mut replayed = 0;
    while live < 3 {
        let Message::Heartbeat(hb) = node.next(&after, "hb").await else {
            unreachable!()
        };
        assert_eq!(hb.boot, boot);
        if hb.replay {
            replayed += 1;
        } else {
            live += 1;
        }
        seqs.push(hb.seq);
    }
    assert!(replayed >= 3, "only {replayed} heartbeats were replayed");
    seqs.sort_unstable();
    seqs.dedup(); // a message in flight at the kill may come twice (at least once)
    let expected: Vec<u64> = (0..=seqs[seqs.len() - 1]).collect();
    assert_eq!(seqs, expected, "a heartbeat went missing");
    agent.signal("TERM");
    agent.wait_exit(WAIT).await.expect("exits");
}

/// A Will of another boot arriving while the agent is connected (an old connection's Will,
/// late) turns the retained state `offline`: the agent notices and says `online` again.
#[tokio::test]
async fn a_stale_will_is_overwritten_with_online() {
    let broker = Mosquitto::start().await;
    let node = Node::new();
    let config = node.config(&broker, "10s");
    let probe = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let online = state(node.next(&probe, "state").await);
    assert_eq!(online.state, NodeState::Online);
    probe
        .publish(
            &node.topic("state"),
            r#"{"v":1,"state":"offline","boot":"0000000000000bad","reason":"lost"}"#,
            true,
        )
        .await;
    let stale = state(node.next(&probe, "state").await);
    assert_eq!(stale.boot.as_str(), "0000000000000bad");
    let healed = state(node.next(&probe, "state").await);
    assert_eq!(healed.state, NodeState::Online);
    assert_eq!(healed.boot, online.boot);
    // And the retained state is the healed one.
    let late = MqttProbe::connect(broker.port(), &node.topic("state")).await;
    let retained = late.next(WAIT).await.expect("retained state");
    assert_eq!(state(node.decode(&retained)).state, NodeState::Online);
    agent.signal("TERM");
    agent.wait_exit(WAIT).await.expect("exits");
}

/// With the first broker unreachable, the agent fails over to the next one in the list.
#[tokio::test]
async fn the_agent_fails_over_to_the_next_broker() {
    let broker = Mosquitto::start().await;
    let node = Node::new();
    let config = node.config(&broker, "10s");
    let dead = format!("mqtt://127.0.0.1:{}", alarmnet_e2e::free_port());
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        &format!("brokers = [\"{}\"]", broker.url()),
        &format!("brokers = [\"{dead}\", \"{}\"]", broker.url()),
    );
    assert!(text.contains(&dead));
    std::fs::write(&config, text).expect("config");
    let probe = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let online = state(node.next(&probe, "state").await);
    assert_eq!(online.state, NodeState::Online);
    agent.signal("TERM");
    agent.wait_exit(WAIT).await.expect("exits");
}

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// mqtts:// with the node's own CA file: the agent verifies the broker's certificate and
/// speaks the protocol over TLS.
#[tokio::test]
async fn the_agent_connects_over_tls_with_its_ca_file() {
    let pki = tempfile::tempdir().expect("tempdir");
    let d = pki.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=alarmnet test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        d.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "san.ext",
        ],
    );

    let tls_port = alarmnet_e2e::free_port();
    let broker = Mosquitto::builder()
        .config_line(format!("listener {tls_port} 127.0.0.1"))
        .config_line(format!("cafile {}", d.join("ca.pem").display()))
        .config_line(format!("certfile {}", d.join("server.pem").display()))
        .config_line(format!("keyfile {}", d.join("server.key").display()))
        .start()
        .await;
    let node = Node::new();
    let config = node.config(&broker, "10s");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text
        .replace(&broker.url(), &format!("mqtts://127.0.0.1:{tls_port}"))
        .replace(
            "[spool]",
            &format!("ca_file = \"{}\"\n[spool]", d.join("ca.pem").display()),
        );
    std::fs::write(&config, text).expect("config");
    let probe = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let online = state(node.next(&probe, "state").await);
    assert_eq!(online.state, NodeState::Online);
    agent.signal("TERM");
    agent.wait_exit(WAIT).await.expect("exits");
}
