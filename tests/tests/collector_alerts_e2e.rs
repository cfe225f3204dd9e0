//! Liveness and alerts end to end: the real `alarmnet-collector run`, real `alarmnet-agent`
//! processes and `alarmnet-sim`, through a real Mosquitto.
//!
//! - kill -9 an agent: offline within keep-alive × 1.5 + 1 s, on the API and the event
//!   stream; the webhook receives `node_offline` firing, then resolved when it is back;
//! - SIGSTOP an agent: offline within 3 heartbeats + 1 s, online again after SIGCONT;
//! - cut a site with the simulator: exactly one `site_outage` on `$alerts`, no per-node
//!   notification; kill -9 the collector and restart it: no duplicate, no false offline;
//!   restart the broker: one `collector_blind`, no storm.
//!
//! Detection latencies are printed (`--nocapture`) for the latency distribution.

mod collector_support;

use std::time::{Duration, Instant};

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, WebhookReceiver, binary, unique_id, wait_for};
use collector_support::{Collector, Events, workdir};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The operator token the first test configures (operator role: acks).
const OPERATOR: &str = "e2e-operator-token-0123456789";

// ----- the webhook receiver -----

/// The harness's webhook receiver, with the queries these tests ask of it.
struct Hook(WebhookReceiver);

impl Hook {
    async fn start() -> Hook {
        Hook(WebhookReceiver::start().await)
    }

    fn url(&self) -> String {
        self.0.url()
    }

    fn bodies(&self) -> Vec<Value> {
        self.0.received().into_iter().map(|r| r.body).collect()
    }

    /// Notifications received for `rule` with `status`.
    fn count(&self, rule: &str, status: &str) -> usize {
        self.bodies()
            .iter()
            .filter(|b| b["rule"] == rule && b["status"] == status)
            .count()
    }

    async fn wait(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        self.0.wait(WAIT, what, want).await.body
    }
}

// ----- the event stream and the API -----

async fn get_json(collector: &Collector, path: &str) -> Value {
    reqwest::get(format!("http://127.0.0.1:{}{path}", collector.http_port))
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

async fn node_state(collector: &Collector, node: &str) -> String {
    get_json(collector, &format!("/api/v1/nodes/{node}")).await["state"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn nodes_in(collector: &Collector, states: &str) -> u64 {
    get_json(
        collector,
        &format!("/api/v1/nodes?state={states}&limit=1000"),
    )
    .await["total"]
        .as_u64()
        .expect("a total")
}

// ----- agents -----

struct Agent {
    config: std::path::PathBuf,
    process: Process,
}

impl Agent {
    fn start(dir: &std::path::Path, broker: &Mosquitto, node: &str, site: &str) -> Agent {
        let config = dir.join(format!("{node}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nid = \"{node}\"\nsite = \"{site}\"\nregion = \"lanzhou\"\n\
                 kind = \"siren\"\n[mqtt]\nbrokers = [\"{broker}\"]\n\
                 heartbeat_interval = \"1s\"\nkeep_alive = \"2s\"\n[spool]\ndir = \"{spool}\"\n",
                broker = broker.url(),
                spool = dir.join(format!("spool-{node}")).display(),
            ),
        )
        .expect("agent config");
        let process = Self::spawn(&config, node);
        Agent { config, process }
    }

    fn spawn(config: &std::path::Path, node: &str) -> Process {
        Process::builder(binary("alarmnet-agent"))
            .name(format!("agent:{node}"))
            .args(["run", "--config"])
            .arg(config)
            .spawn()
    }

    fn restart(&mut self, node: &str) {
        self.process = Self::spawn(&self.config, node);
    }
}

/// Runs `alarmnet-collector <args> --url <collector>` with the operator token; returns its
/// stdout, panicking unless it exits 0.
async fn cli(collector: &Collector, args: &[&str]) -> String {
    let mut p = Process::builder(binary("alarmnet-collector"))
        .name(format!("cli:{}", args[0]))
        .args(args)
        .args([
            "--url",
            &format!("http://127.0.0.1:{}", collector.http_port),
        ])
        .env("ALARMNET_TOKEN", OPERATOR)
        .spawn();
    let status = p.wait_exit(WAIT).await.expect("the CLI exits");
    assert!(
        status.success(),
        "{args:?}: {status}\n{}",
        p.output_tail(20)
    );
    p.stdout_text()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn summary(name: &str, samples: &[u64]) {
    let mut s = samples.to_vec();
    s.sort_unstable();
    if s.is_empty() {
        return;
    }
    println!(
        "detection latency {name}: n={} min={}ms median={}ms max={}ms all={s:?}",
        s.len(),
        s[0],
        s[s.len() / 2],
        s[s.len() - 1]
    );
}

/// Keep-alive 2 s and heartbeats every second: kill -9 must be detected within
/// 2 × 1.5 + 1 = 4 s, a frozen agent within 3 × 1 + 1 = 4 s.
#[tokio::test]
async fn killed_and_frozen_agents_are_detected_in_time_with_webhooks_and_events() {
    let broker = Mosquitto::start().await;
    let hook = Hook::start().await;
    let dir = workdir();
    let collector = Collector::start(
        &broker,
        dir.path(),
        &format!(
            "anonymous_read = true\n[[http.tokens]]\nname = \"duty\"\n\
             token = \"{OPERATOR}\"\nrole = \"operator\"\n\
             [alerts.node_offline]\ngroup_wait = \"0s\"\n\
             [[webhooks]]\nurl = \"{}\"\nretry_delay = \"100ms\"\n",
            hook.url()
        ),
    )
    .await;
    let mut events = Events::open(collector.http_port).await;
    let killed = unique_id("kill");
    let frozen = unique_id("freeze");
    let mut a = Agent::start(dir.path(), &broker, &killed, "lz-chengguan");
    let mut b = Agent::start(dir.path(), &broker, &frozen, "lz-qilihe");
    // Both births, in whatever order they come.
    let mut starting = vec![killed.clone(), frozen.clone()];
    while !starting.is_empty() {
        let d = events
            .next("state", WAIT, |d| {
                d["to"] == "online" && starting.iter().any(|n| d["node"] == n.as_str())
            })
            .await
            .unwrap_or_else(|| panic!("{starting:?} not online on the event stream"));
        starting.retain(|n| d["node"] != n.as_str());
    }

    // kill -9, three times: the broker publishes the Will when the socket closes.
    let bound = Duration::from_millis(2_000 * 3 / 2 + 1_000);
    let mut kill_latencies = Vec::new();
    for round in 0..8 {
        let t0 = Instant::now();
        a.process.kill_and_reap();
        let offline = events.state(&killed, "offline", bound * 2).await;
        let latency = t0.elapsed();
        assert!(
            latency <= bound,
            "round {round}: kill -9 detected after {latency:?} (bound {bound:?})"
        );
        assert_eq!(offline["cause"], "will", "{offline}");
        assert_eq!(offline["site"], "lz-chengguan");
        assert_eq!(node_state(&collector, &killed).await, "offline");
        kill_latencies.push(millis(latency));
        if round == 0 {
            let firing = hook
                .wait("node_offline firing at the webhook", |b| {
                    b["rule"] == "node_offline" && b["node"] == killed.as_str()
                })
                .await;
            assert_eq!(firing["status"], "firing");
            assert_eq!(firing["region"], "lanzhou");
            assert!(firing["id"].is_string() && firing["started_at"].is_number());
            // An operator acknowledges it with the CLI: API → core → store → event stream.
            let id = firing["id"].as_str().expect("id").to_owned();
            let out = cli(
                &collector,
                &[
                    "ack",
                    &id,
                    "--comment",
                    "crew on the way",
                    "--format",
                    "json",
                ],
            )
            .await;
            let acked: Value = serde_json::from_str(&out).expect("ack answer is JSON");
            assert_eq!(acked["ack"]["by"], "duty", "{acked}");
            let event = events
                .next("ack", WAIT, |d| d["id"] == id.as_str())
                .await
                .expect("the ack on the event stream");
            assert_eq!(event["ack"]["comment"], "crew on the way");
            let listed = cli(&collector, &["alerts", "--format", "json"]).await;
            assert!(
                listed.contains(&id),
                "the CLI lists the firing alert: {listed}"
            );
        }
        a.restart(&killed);
        events.state(&killed, "online", WAIT).await;
        if round == 0 {
            let resolved = hook
                .wait("node_offline resolved at the webhook", |b| {
                    b["rule"] == "node_offline"
                        && b["node"] == killed.as_str()
                        && b["status"] == "resolved"
                })
                .await;
            assert!(resolved["ended_at"].is_number(), "{resolved}");
        }
    }

    // SIGSTOP: the socket stays open (keep-alive 2 s: Will after 3 s); heartbeats stop.
    let bound = Duration::from_millis(3 * 1_000 + 1_000);
    let mut freeze_latencies = Vec::new();
    for round in 0..4 {
        let t0 = Instant::now();
        b.process.signal("STOP");
        let offline = events.state(&frozen, "offline", bound * 2).await;
        let latency = t0.elapsed();
        assert!(
            latency <= bound,
            "round {round}: SIGSTOP detected after {latency:?} (bound {bound:?}): {offline}"
        );
        freeze_latencies.push(millis(latency));
        b.process.signal("CONT");
        events.state(&frozen, "online", WAIT).await;
        assert_eq!(node_state(&collector, &frozen).await, "online");
    }
    summary("kill -9 (keep-alive 2s)", &kill_latencies);
    summary("SIGSTOP (heartbeat 1s)", &freeze_latencies);
}

/// 172 simulated nodes (two per county site), heartbeats every second, keep-alive 2 s.
#[tokio::test]
async fn a_site_cut_a_collector_crash_and_a_broker_restart_raise_no_storm() {
    let mut broker = Mosquitto::builder().persistence(true).start().await;
    let hook = Hook::start().await;
    let probe = MqttProbe::connect(broker.port(), "alarmnet/v1/$alerts/#").await;
    let dir = workdir();
    let mut collector = Collector::start(
        &broker,
        dir.path(),
        &format!(
            "anonymous_read = true\n[alerts.node_offline]\ngroup_wait = \"5s\"\n\
             [[webhooks]]\nurl = \"{}\"\nretry_delay = \"100ms\"\n",
            hook.url()
        ),
    )
    .await;
    let nodes = 172u64;
    let sim_config = dir.path().join("sim.toml");
    std::fs::write(
        &sim_config,
        format!(
            "broker = \"{}\"\nnodes = {nodes}\nheartbeat_interval = \"1s\"\nkeep_alive = \"2s\"\n\
             reconnect_max = \"1s\"\nfault_rate = 0.0\nramp = \"2s\"\n\
             [[script]]\nat = \"12s\"\naction = \"cut_site\"\nsite = \"lanzhou-chengguan\"\n\
             down_for = \"15s\"\n",
            broker.url()
        ),
    )
    .expect("sim config");
    let _sim = Process::builder(binary("alarmnet-sim"))
        .name("alarmnet-sim")
        .arg("--config")
        .arg(&sim_config)
        .spawn();
    wait_for(WAIT, "every simulated node online", || {
        let c = &collector;
        async move { (nodes_in(c, "online").await == nodes).then_some(()) }
    })
    .await;

    // The site cut: both nodes of lanzhou-chengguan drop at once.
    let t0 = Instant::now();
    let firing = probe
        .next_matching(WAIT, |topic, payload| {
            topic.ends_with("/site_outage") && !payload.is_empty()
        })
        .await
        .expect("a site_outage notification on $alerts");
    let outage: Value = firing.json();
    assert_eq!(outage["status"], "firing");
    assert_eq!(outage["site"], "lanzhou-chengguan");
    assert!(outage.get("node").is_none_or(Value::is_null), "{outage}");
    let resolved = probe
        .next_matching(WAIT, |topic, payload| {
            topic.ends_with("/site_outage")
                && String::from_utf8_lossy(payload).contains("\"resolved\"")
        })
        .await
        .expect("the site_outage resolves when the site is back");
    println!(
        "site cut: firing..resolved observed over {:?}",
        t0.elapsed()
    );
    drop(resolved);
    wait_for(WAIT, "every simulated node online again", || {
        let c = &collector;
        async move { (nodes_in(c, "online").await == nodes).then_some(()) }
    })
    .await;
    // Members' node_offline notifications were held by the group wait, then inhibited.
    let settle = probe.collect_for(Duration::from_secs(6)).await;
    let node_offline_on_mqtt = settle
        .iter()
        .filter(|m| m.topic.ends_with("/node_offline") && !m.payload.is_empty())
        .count();
    assert_eq!(
        node_offline_on_mqtt, 0,
        "no per-node notification on $alerts"
    );
    assert_eq!(
        hook.count("node_offline", "firing"),
        0,
        "{:?}",
        hook.bodies()
    );
    assert_eq!(
        hook.count("site_outage", "firing"),
        1,
        "{:?}",
        hook.bodies()
    );
    assert_eq!(
        hook.count("site_outage", "resolved"),
        1,
        "{:?}",
        hook.bodies()
    );

    // kill -9 the collector and start it again on the same store and session.
    let sent_before = hook.bodies().len();
    collector = collector.restart().await;
    let after_restart = probe.collect_for(Duration::from_secs(6)).await;
    assert!(
        after_restart
            .iter()
            .all(|m| m.payload.is_empty()
                || !String::from_utf8_lossy(&m.payload).contains("\"firing\"")),
        "no notification after a restart: {:?}",
        after_restart.iter().map(|m| m.text()).collect::<Vec<_>>()
    );
    assert_eq!(hook.bodies().len(), sent_before, "{:?}", hook.bodies());
    assert_eq!(
        nodes_in(&collector, "offline,late").await,
        0,
        "no false offline"
    );
    assert_eq!(nodes_in(&collector, "online").await, nodes);

    // Restart the broker (sessions persist): the collector is blind for a moment.
    broker.stop().await;
    hook.wait("collector_blind firing at the webhook", |b| {
        b["rule"] == "collector_blind" && b["status"] == "firing"
    })
    .await;
    broker.start_again().await;
    hook.wait("collector_blind resolved at the webhook", |b| {
        b["rule"] == "collector_blind" && b["status"] == "resolved"
    })
    .await;
    wait_for(
        WAIT,
        "every simulated node online after the broker restart",
        || {
            let c = &collector;
            async move { (nodes_in(c, "online").await == nodes).then_some(()) }
        },
    )
    .await;
    // Every node got a full timeout after the reconnect: watch for 5 more heartbeat
    // intervals that nobody is called offline.
    let later = probe.collect_for(Duration::from_secs(5)).await;
    assert!(
        later
            .iter()
            .all(|m| !m.topic.ends_with("/node_offline") || m.payload.is_empty()),
        "no node_offline storm after the broker restart"
    );
    assert_eq!(
        hook.count("collector_blind", "firing"),
        1,
        "{:?}",
        hook.bodies()
    );
    assert_eq!(
        hook.count("node_offline", "firing"),
        0,
        "{:?}",
        hook.bodies()
    );
    assert_eq!(
        hook.count("site_outage", "firing"),
        1,
        "{:?}",
        hook.bodies()
    );
    assert_eq!(nodes_in(&collector, "offline").await, 0);
}
