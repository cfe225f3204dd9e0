//! Drills end to end: real Mosquitto, the real `alarmnet-collector run` with a signing key
//! made by `alarmnet-collector keygen`, 200 virtual nodes of the real `alarmnet-sim`, and a
//! few nodes played by this test over MQTT.
//!
//! Known sets: 10 sim nodes whose silent test fails (a scripted silent test marks them),
//! 10 sim nodes killed for the whole test (offline: asked, never answer), 5 test-played
//! nodes that answer `error`, and 1 test-played node that answers only after the deadline
//! (late). The drill's tally must be exact before the deadline, survive a collector restart
//! mid-drill, and the late receipt must count as late. A second drill is cancelled; a
//! viewer token cannot start one.

use std::path::Path;
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, binary, free_port, unique_id, wait_for};
use alarmnet_protocol::signing::{PublicKey, TrustedKeys};
use alarmnet_protocol::{KeyId, Message, Prefix, decode};
use serde_json::{Value, json};

const VIEWER: &str = "e2e-viewer-token-0123456789";
const OPERATOR: &str = "e2e-operator-token-0123456789";
const WAIT: Duration = Duration::from_secs(60);
const SIM_NODES: usize = 200;
/// Test-played nodes that answer `error`.
const ERRORS: usize = 5;
const LATE_NODE: &str = "e2e-lab-late";

struct Collector {
    config: std::path::PathBuf,
    base: String,
    client: reqwest::Client,
}

impl Collector {
    fn spawn(&self) -> Process {
        Process::builder(binary("alarmnet-collector"))
            .name("collector")
            .args(["run", "--config"])
            .arg(&self.config)
            .spawn()
    }

    async fn ready(&self) {
        let url = format!("{}/readyz", self.base);
        wait_for(WAIT, "the collector's /readyz", || {
            let r = self.client.get(&url).send();
            async move { r.await.ok()?.status().is_success().then_some(()) }
        })
        .await;
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(VIEWER)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json")
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `pred` picks a value out of it.
    async fn until<T>(&self, what: &str, path: &str, pred: impl Fn(&Value) -> Option<T>) -> T {
        wait_for(WAIT, what, || {
            let get = self.get(path);
            let pred = &pred;
            async move { pred(&get.await) }
        })
        .await
    }
}

/// The sim's layout: (node, site, region) of each virtual node, in start order.
fn layout(nodes: usize) -> Vec<(String, String, String)> {
    let out = std::process::Command::new(binary("alarmnet-sim"))
        .args(["--list", "--nodes", &nodes.to_string()])
        .output()
        .expect("alarmnet-sim --list");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

/// The keys the test checks commands with, and the line agents need to trust the key.
fn keygen(dir: &Path) -> (TrustedKeys, String) {
    let key = dir.join("command.key");
    let out = std::process::Command::new(binary("alarmnet-collector"))
        .args(["keygen", "--kid", "centre-e2e", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    // keys = { "centre-e2e" = "<public key>" }
    let line = text
        .lines()
        .find(|l| l.starts_with("keys = "))
        .expect("agent line");
    let public = line.rsplit('"').nth(1).expect("quoted key");
    let public: PublicKey = public.parse().expect("public key");
    // A second keygen never overwrites the key.
    let again = std::process::Command::new(binary("alarmnet-collector"))
        .args(["keygen", "--kid", "centre-e2e", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert_eq!(again.status.code(), Some(64));
    (
        TrustedKeys::new([(KeyId::new("centre-e2e").expect("kid"), public)]),
        line.to_owned(),
    )
}

fn birth(prefix: &str, node: &str) -> (String, String) {
    (
        format!("{prefix}/e2e/e2e-lab/{node}/birth"),
        json!({"v": 1, "boot": "e2eboot01", "ts": 1_790_000_000_000u64, "node": node,
               "site": "e2e-lab", "region": "e2e", "kind": "siren", "hb_interval_s": 3600})
        .to_string(),
    )
}

fn receipt(drill: &str, seq: u64, result: &str) -> String {
    json!({"v": 1, "boot": "e2eboot01", "seq": seq, "ts": 1_790_000_000_000u64,
           "drill": drill, "test": "silent", "result": result,
           "message": "played by the e2e test"})
    .to_string()
}

#[tokio::test]
async fn a_drill_over_a_simulated_province_tallies_exactly_and_survives_a_restart() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (trusted, agent_keys) = keygen(dir.path());
    let prefix = format!("{}/v1", unique_id("drill"));
    let http = free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nbroker = \"{broker}\"\nclient_id = \"{client}\"\nkeep_alive = \"5s\"\n\
             prefix = \"{prefix}\"\n\
             [store]\npath = \"{db}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\
             [[http.tokens]]\nname = \"wall\"\ntoken = \"{VIEWER}\"\nrole = \"viewer\"\n\
             [[http.tokens]]\nname = \"ops-desk\"\ntoken = \"{OPERATOR}\"\nrole = \"operator\"\n\
             [commands]\nkey_file = \"{key}\"\nttl = \"2m\"\nrate = 500\n",
            broker = broker.url(),
            client = unique_id("collector"),
            db = dir.path().join("alarmnet.db").display(),
            key = dir.path().join("command.key").display(),
        ),
    )
    .expect("collector config");
    let c = Collector {
        config,
        base: format!("http://127.0.0.1:{http}"),
        client: reqwest::Client::new(),
    };
    let mut collector = c.spawn();
    c.ready().await;

    let nodes = layout(SIM_NODES);
    assert_eq!(nodes.len(), SIM_NODES);
    // Disjoint known sets out of the layout.
    let failing: Vec<&str> = nodes
        .iter()
        .skip(3)
        .step_by(19)
        .take(10)
        .map(|n| n.0.as_str())
        .collect();
    let offline: Vec<&str> = nodes
        .iter()
        .skip(5)
        .step_by(19)
        .take(10)
        .map(|n| n.0.as_str())
        .collect();
    let mut script = format!(
        "[[script]]\nat = \"2s\"\naction = \"silent_test\"\ndrill = \"warmup\"\nfail = {failing:?}\n"
    );
    for n in &offline {
        script.push_str(&format!(
            "[[script]]\nat = \"3s\"\naction = \"kill\"\nnode = \"{n}\"\ndown_for = \"1h\"\n"
        ));
    }
    let sim_config = dir.path().join("sim.toml");
    std::fs::write(
        &sim_config,
        format!(
            "broker = \"{url}\"\nnodes = {SIM_NODES}\nheartbeat_interval = \"2s\"\n\
             keep_alive = \"5s\"\nreconnect_max = \"1s\"\nprefix = \"{prefix}\"\n\
             ramp = \"500ms\"\n[commands]\n{agent_keys}\nallow_unsigned = false\n{script}",
            url = broker.url(),
        ),
    )
    .expect("sim config");
    let _sim = Process::builder(binary("alarmnet-sim"))
        .name("alarmnet-sim")
        .arg("--config")
        .arg(&sim_config)
        .spawn();

    // The test-played nodes: births, then they listen for their commands.
    let players = MqttProbe::connect(broker.port(), &format!("{prefix}/e2e/+/+/cmd")).await;
    let mut played: Vec<String> = (1..=ERRORS).map(|i| format!("e2e-lab-err{i}")).collect();
    played.push(LATE_NODE.to_owned());
    for n in &played {
        let (topic, body) = birth(&prefix, n);
        players.publish(&topic, body, true).await;
    }
    let total = SIM_NODES + played.len();
    c.until(
        "every node registered and the killed ones offline",
        "/api/v1/nodes?state=offline&limit=1",
        |v| (v["total"].as_u64()? == offline.len() as u64).then_some(()),
    )
    .await;
    c.until("every node registered", "/api/v1/nodes?limit=1", |v| {
        (v["total"].as_u64()? == total as u64).then_some(())
    })
    .await;
    // The warm-up test ran everywhere (its receipts are plain test receipts).
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A viewer cannot start a drill; a dry run counts without starting.
    let (status, _) = c.post("/api/v1/drills", VIEWER, json!({})).await;
    assert_eq!(status, 403);
    let (status, dry) = c
        .post("/api/v1/drills", OPERATOR, json!({"dry_run": true}))
        .await;
    assert_eq!(
        (status, dry["selected"].as_u64()),
        (200, Some(total as u64))
    );

    let (status, started) = c
        .post("/api/v1/drills", OPERATOR, json!({"deadline": "40s"}))
        .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().expect("id").to_owned();
    assert_eq!(started["selected"], total);
    assert_eq!(started["started_by"], "ops-desk");

    // The played nodes get signed commands for their own topic; the error nodes answer.
    let cmd_prefix = Prefix::new(prefix.clone()).expect("prefix");
    let mut asked = 0;
    while asked < played.len() {
        let m = players
            .next(WAIT)
            .await
            .expect("a command for every played node");
        let env = decode(&cmd_prefix, &m.topic, &m.payload).expect("valid cmd");
        let Message::Command(cmd) = env.message else {
            panic!("not a command on {}", m.topic);
        };
        trusted
            .verify(&m.topic, &cmd)
            .expect("the collector's signature verifies");
        assert_eq!(cmd.id.as_str(), id);
        asked += 1;
        if !m.topic.contains(LATE_NODE) {
            let node = m.topic.split('/').nth(4).expect("node level");
            players
                .publish(
                    &m.topic.replace("/cmd", "/test"),
                    receipt(&id, 1, "error"),
                    false,
                )
                .await;
            assert!(node.starts_with("e2e-lab-err"));
        }
    }

    // Exact counts before the deadline.
    let path = format!("/api/v1/drills/{id}?limit=1");
    let answered = (SIM_NODES - offline.len() + ERRORS) as u64;
    let tally = c
        .until("every online node answered", &path, |v| {
            let t = &v["drill"]["tally"];
            (t["answered"].as_u64()? == answered).then(|| v["drill"].clone())
        })
        .await;
    let t = &tally["tally"];
    let passed = (SIM_NODES - offline.len() - failing.len()) as u64;
    assert_eq!(t["passed"], passed, "{tally}");
    assert_eq!(t["failed"], failing.len(), "{tally}");
    assert_eq!(t["errored"], ERRORS, "{tally}");
    assert_eq!(t["waiting"], offline.len() + 1, "{tally}");
    assert_eq!(tally["status"], "open");
    let rate = (passed as f64 / total as f64 * 10_000.0).round() / 100.0;
    assert_eq!(tally["sounding_rate_pct"], rate, "{tally}");
    let failed = c
        .get(&format!("/api/v1/drills/{id}?outcome=fail&limit=100"))
        .await;
    let mut failed_nodes: Vec<&str> = failed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["node"].as_str().expect("node"))
        .collect();
    failed_nodes.sort_unstable();
    let mut want = failing.clone();
    want.sort_unstable();
    assert_eq!(failed_nodes, want);

    // A restart mid-drill keeps the tally; the deadline still applies.
    let status = collector.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "clean stop");
    let _collector = c.spawn();
    c.ready().await;
    let after = c.get(&path).await;
    assert_eq!(
        after["drill"]["tally"], tally["tally"],
        "tally kept across the restart"
    );
    let closed = c
        .until("the deadline closes the drill", &path, |v| {
            (v["drill"]["status"] == "expired").then(|| v["drill"].clone())
        })
        .await;
    assert_eq!(closed["tally"]["silent"], offline.len() + 1, "{closed}");
    assert_eq!(closed["tally"]["passed"], passed);

    // The late node answers after the deadline: late, not a pass.
    players
        .publish(
            &format!("{prefix}/e2e/e2e-lab/{LATE_NODE}/test"),
            receipt(&id, 1, "pass"),
            false,
        )
        .await;
    let late = c
        .until("the late receipt is recorded", &path, |v| {
            (v["drill"]["tally"]["late"] == 1).then(|| v["drill"].clone())
        })
        .await;
    assert_eq!(late["tally"]["silent"], offline.len());
    assert_eq!(late["tally"]["passed"], passed);
    let shown = c.get(&format!("/api/v1/drills/{id}?outcome=late")).await;
    assert_eq!(shown["items"][0]["node"], LATE_NODE);
    assert_eq!(shown["items"][0]["result"], "pass");

    // A second drill on a region, cancelled.
    let (status, second) = c
        .post(
            "/api/v1/drills",
            OPERATOR,
            json!({"selector": {"region": "e2e"}, "deadline": "10m"}),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(second["selected"], played.len());
    let second_id = second["id"].as_str().expect("id");
    let cancel = format!("/api/v1/drills/{second_id}/cancel");
    let (status, _) = c.post(&cancel, VIEWER, json!({})).await;
    assert_eq!(status, 403);
    let (status, cancelled) = c.post(&cancel, OPERATOR, json!({})).await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancelled_by"], "ops-desk");
    let list = c.get("/api/v1/drills").await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["id"], second_id, "newest first");
}
