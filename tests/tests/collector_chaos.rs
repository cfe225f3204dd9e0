//! Chaos suite: the real `alarmnet-collector`, real agents (`alarmnet-agent` and
//! `alarmnet-sim`) and a real Mosquitto, with infrastructure failures injected, scored by a
//! webhook receiver against **exact** lists of notifications (rule, subject, status).
//!
//! Every scenario has its own broker, collector, store and receiver (nothing shared), and
//! the scenarios run one at a time (a process-wide lock), so their timing bounds hold on a
//! small machine. Heartbeats every second, keep-alive 2 s. The scenarios and their expected
//! notifications are listed in `docs/chaos.md`.

mod collector_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alarmnet_e2e::{
    Alertmanager, Mosquitto, MqttProbe, Process, WebhookReceiver, binary, wait_for,
};
use collector_support::{Collector, workdir};
use serde_json::Value;
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(30);

/// One scenario at a time: their latency bounds assume the machine is not shared with
/// another scenario's hundreds of agents.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Key = (String, String, String);

fn k(rule: &str, subject: &str, status: &str) -> Key {
    (rule.to_owned(), subject.to_owned(), status.to_owned())
}

/// The collector settings every scenario shares: node alerts notified at once (the
/// strictest setting for false alarms), every other rule at its default.
/// Readiness is not what these scenarios score: simulated sirens have never run a silent
/// test, so their regions' ready share starts at 0 and `readiness_low` would fire for each.
fn collector_extra(hook: &WebhookReceiver, more: &str) -> String {
    format!(
        "anonymous_read = true\n[[webhooks]]\nurl = \"{}\"\nretry_delay = \"100ms\"\n\
         [alerts.readiness_low]\nenabled = false\n{more}",
        hook.url()
    )
}

/// A broker, a webhook receiver and a collector on them.
struct Scene {
    broker: Mosquitto,
    hook: WebhookReceiver,
    collector: Collector,
    dir: TempDir,
}

impl Scene {
    async fn start(persistence: bool, more: &str) -> Scene {
        let broker = Mosquitto::builder().persistence(persistence).start().await;
        let hook = WebhookReceiver::start().await;
        let dir = workdir();
        let collector = Collector::start(&broker, dir.path(), &collector_extra(&hook, more)).await;
        Scene {
            broker,
            hook,
            collector,
            dir,
        }
    }

    /// Starts `alarmnet-sim` with `nodes` nodes (dealt over the province's counties in
    /// order) and `script` (TOML `[[script]]` tables).
    fn sim(&self, nodes: usize, script: &str) -> Process {
        let config = self.dir.path().join("sim.toml");
        std::fs::write(
            &config,
            format!(
                "broker = \"{}\"\nnodes = {nodes}\nheartbeat_interval = \"1s\"\n\
                 keep_alive = \"2s\"\nreconnect_max = \"1s\"\nfault_rate = 0.0\n\
                 ramp = \"1s\"\n{script}",
                self.broker.url()
            ),
        )
        .expect("sim config");
        Process::builder(binary("alarmnet-sim"))
            .name("alarmnet-sim")
            .arg("--config")
            .arg(&config)
            .spawn()
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!(
            "http://127.0.0.1:{}{path}",
            self.collector.http_port
        ))
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
    }

    async fn count(&self, states: &str) -> u64 {
        self.get(&format!("/api/v1/nodes?state={states}&limit=1"))
            .await["total"]
            .as_u64()
            .expect("a total")
    }

    async fn wait_online(&self, nodes: u64, what: &str) {
        wait_for(WAIT, what, || async move {
            (self.count("online").await == nodes).then_some(())
        })
        .await;
    }

    /// When the `n`th (from 0) notification `want` arrived.
    async fn nth_arrival(&self, want: &Key, n: usize) -> Instant {
        wait_for(WAIT, &format!("{want:?} #{n} at the webhook"), || {
            let found = self
                .hook
                .received()
                .into_iter()
                .filter(|r| r.key() == *want)
                .nth(n)
                .map(|r| r.at);
            async move { found }
        })
        .await
    }

    /// The whole network's uptime figures over the last hour.
    async fn network_uptime(&self) -> Value {
        let v = self.get("/api/v1/uptime?since=1h&by=network").await;
        v["rows"][0].clone()
    }

    /// Waits `quiet` more, then asserts the notifications received are exactly `want`
    /// (as a multiset: order between subjects is not specified, but a resolution must not
    /// come before its firing).
    async fn expect_exactly(&self, quiet: Duration, want: &[Key]) {
        tokio::time::sleep(quiet).await;
        let got = self.hook.keys();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut want_sorted = want.to_vec();
        want_sorted.sort();
        assert_eq!(
            got_sorted,
            want_sorted,
            "notifications received (in order): {got:#?}\n{}",
            self.collector.process.output_tail(40)
        );
        let mut firing: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (rule, subject, status) in &got {
            let open = firing.entry((rule.clone(), subject.clone())).or_default();
            match status.as_str() {
                "firing" => *open += 1,
                _ => {
                    assert!(
                        *open > 0,
                        "{rule} {subject} resolved before it fired: {got:?}"
                    );
                    *open -= 1;
                }
            }
        }
    }
}

fn assert_within(what: &str, from: Instant, to: Instant, bound: Duration) {
    let took = to.saturating_duration_since(from);
    println!("{what}: {took:?} (bound {bound:?})");
    assert!(took <= bound, "{what} took {took:?}, bound {bound:?}");
}

/// An `alarmnet-agent` process with its own config.
struct Agent {
    config: PathBuf,
    node: String,
    process: Process,
}

impl Agent {
    fn start(dir: &Path, broker: &Mosquitto, node: &str, site: &str) -> Agent {
        Self::start_as(dir, broker, node, site, node)
    }

    /// An agent whose config and spool files are named after `tag` (a second process of
    /// the same node).
    fn start_as(dir: &Path, broker: &Mosquitto, node: &str, site: &str, tag: &str) -> Agent {
        let config = dir.join(format!("{tag}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nid = \"{node}\"\nsite = \"{site}\"\nregion = \"chaos\"\n\
                 kind = \"siren\"\n[mqtt]\nbrokers = [\"{broker}\"]\n\
                 heartbeat_interval = \"1s\"\nkeep_alive = \"2s\"\n[spool]\ndir = \"{spool}\"\n",
                broker = broker.url(),
                spool = dir.join(format!("spool-{tag}")).display(),
            ),
        )
        .expect("agent config");
        let process = Self::spawn(&config, node);
        Agent {
            config,
            node: node.to_owned(),
            process,
        }
    }

    fn spawn(config: &Path, node: &str) -> Process {
        Process::builder(binary("alarmnet-agent"))
            .name(format!("agent:{node}"))
            .args(["run", "--config"])
            .arg(config)
            .spawn()
    }

    fn restart(&mut self) {
        self.process = Self::spawn(&self.config, &self.node);
    }
}

/// 172 simulated nodes: two per county site, 86 sites in 14 regions.
const SIM_NODES: u64 = 172;

/// Stopping Mosquitto gracefully delivers every client's Will to the collector just before
/// its own connection closes. Operators get one `collector_blind`, firing then resolved,
/// and nothing else: no node, site or region outage, no flapping later, no downtime.
#[tokio::test]
async fn broker_stopped_gracefully_and_restarted_is_one_blind_alert() {
    let _serial = SERIAL.lock().await;
    let mut scene = Scene::start(true, "[alerts.node_offline]\ngroup_wait = \"0s\"\n").await;
    let _sim = scene.sim(SIM_NODES as usize, "");
    scene
        .wait_online(SIM_NODES, "every simulated node online")
        .await;
    assert!(scene.hook.keys().is_empty(), "{:?}", scene.hook.keys());

    for round in 0..2 {
        let t0 = Instant::now();
        scene.broker.stop().await;
        let blind = scene
            .nth_arrival(&k("collector_blind", "-", "firing"), round)
            .await;
        assert_within(
            "broker SIGTERM → collector_blind",
            t0,
            blind,
            Duration::from_secs(3),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        scene.broker.start_again().await;
        let back = scene
            .nth_arrival(&k("collector_blind", "-", "resolved"), round)
            .await;
        assert_within(
            "broker back → collector_blind resolved",
            t1,
            back,
            Duration::from_secs(5),
        );
        scene
            .wait_online(SIM_NODES, "every simulated node online after the restart")
            .await;
    }
    // Past every group wait and past the flapping threshold of 4 transitions.
    let mut want = Vec::new();
    for _ in 0..2 {
        want.push(k("collector_blind", "-", "firing"));
        want.push(k("collector_blind", "-", "resolved"));
    }
    scene.expect_exactly(Duration::from_secs(8), &want).await;
    // The Will waves reached the collector and were not judged.
    let discarded = scene
        .collector
        .metric("alarmnet_wills_discarded_total")
        .await;
    println!("Wills discarded over two graceful stops: {discarded}");
    assert!(discarded > 0.0, "no Will wave seen");
    let up = scene.network_uptime().await;
    assert_eq!(up["downtime_s"].as_f64(), Some(0.0), "{up}");
    assert_eq!(up["outages"].as_u64(), Some(0), "{up}");
}

/// Node alerts notified at once: the strictest setting for false alarms.
const NODE_AT_ONCE: &str = "[alerts.node_offline]\ngroup_wait = \"0s\"\n";

/// Two agents in two sites of one region, both online.
async fn two_agents(scene: &Scene) -> (Agent, Agent) {
    let a = Agent::start(scene.dir.path(), &scene.broker, "chaos-a", "site-a");
    let b = Agent::start(scene.dir.path(), &scene.broker, "chaos-b", "site-b");
    scene.wait_online(2, "both agents online").await;
    (a, b)
}

/// kill -9: the broker publishes the Will as the socket closes; the collector confirms its
/// link with one round trip and judges it. One `node_offline`, firing then resolved.
#[tokio::test]
async fn node_killed_is_one_node_alert_within_the_bound() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(false, NODE_AT_ONCE).await;
    let (mut a, _b) = two_agents(&scene).await;
    let t0 = Instant::now();
    a.process.kill_and_reap();
    let fired = scene
        .nth_arrival(&k("node_offline", "chaos-a", "firing"), 0)
        .await;
    assert_within("kill -9 → node_offline", t0, fired, Duration::from_secs(2));
    let t1 = Instant::now();
    a.restart();
    let resolved = scene
        .nth_arrival(&k("node_offline", "chaos-a", "resolved"), 0)
        .await;
    assert_within("restart → resolved", t1, resolved, Duration::from_secs(5));
    scene
        .expect_exactly(
            Duration::from_secs(4),
            &[
                k("node_offline", "chaos-a", "firing"),
                k("node_offline", "chaos-a", "resolved"),
            ],
        )
        .await;
}

/// SIGSTOP: the connection stays open, heartbeats stop. Offline after 3 heartbeat
/// intervals (or the broker's keep-alive Will, 1.5 × 2 s), whichever comes first.
#[tokio::test]
async fn node_frozen_with_its_connection_up_is_one_node_alert_within_the_bound() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(false, NODE_AT_ONCE).await;
    let (_a, mut b) = two_agents(&scene).await;
    let t0 = Instant::now();
    b.process.signal("STOP");
    let fired = scene
        .nth_arrival(&k("node_offline", "chaos-b", "firing"), 0)
        .await;
    assert_within("SIGSTOP → node_offline", t0, fired, Duration::from_secs(5));
    let t1 = Instant::now();
    b.process.signal("CONT");
    let resolved = scene
        .nth_arrival(&k("node_offline", "chaos-b", "resolved"), 0)
        .await;
    assert_within("SIGCONT → resolved", t1, resolved, Duration::from_secs(5));
    scene
        .expect_exactly(
            Duration::from_secs(4),
            &[
                k("node_offline", "chaos-b", "firing"),
                k("node_offline", "chaos-b", "resolved"),
            ],
        )
        .await;
}

/// A fast restart: a second agent process of the node connects (new boot) while the first
/// is frozen with its connection open; the broker hands the connection over and publishes
/// the old connection's Will, just before or just after the new birth. After the birth it
/// is stale (foreign boot) and ignored; before it, the node is offline for a moment, which
/// `node_offline`'s default 15 s group wait keeps quiet. No notification at all; the node
/// ends online.
#[tokio::test]
async fn fast_restart_with_a_stale_will_raises_nothing() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(false, "").await;
    let (mut a, _b) = two_agents(&scene).await;
    a.process.signal("STOP");
    let mut again = Agent::start_as(
        scene.dir.path(),
        &scene.broker,
        "chaos-a",
        "site-a",
        "chaos-a-again",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.process.kill_and_reap();
    scene.expect_exactly(Duration::from_secs(5), &[]).await;
    assert_eq!(scene.count("online").await, 2);
    let node = scene.get("/api/v1/nodes/chaos-a").await;
    assert_eq!(node["state"], "online", "{node}");
    again.process.kill_and_reap();
}

/// A whole site cut off (both of its nodes) for 10 s, in a region of 16 nodes: one
/// `site_outage`, firing then resolved; its members' `node_offline` alerts are inhibited,
/// and no region outage.
#[tokio::test]
async fn whole_site_cut_is_one_site_alert() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(false, "").await;
    let started = Instant::now();
    let _sim = scene.sim(
        SIM_NODES as usize,
        "[[script]]\nat = \"8s\"\naction = \"cut_site\"\nsite = \"lanzhou-chengguan\"\n\
         down_for = \"10s\"\n",
    );
    scene
        .wait_online(SIM_NODES, "every simulated node online")
        .await;
    let fired = scene
        .nth_arrival(&k("site_outage", "lanzhou-chengguan", "firing"), 0)
        .await;
    let resolved = scene
        .nth_arrival(&k("site_outage", "lanzhou-chengguan", "resolved"), 0)
        .await;
    // The cut at 8 s; detection within keep-alive × 1.5 (or 3 heartbeats), then the site's
    // 5 s group wait.
    assert_within(
        "sim start → site_outage (cut at 8 s)",
        started,
        fired,
        Duration::from_secs(8 + 3 + 5 + 2),
    );
    println!("site cut: notified, resolved {:?} later", resolved - fired);
    scene.wait_online(SIM_NODES, "the site back").await;
    scene
        .expect_exactly(
            Duration::from_secs(16),
            &[
                k("site_outage", "lanzhou-chengguan", "firing"),
                k("site_outage", "lanzhou-chengguan", "resolved"),
            ],
        )
        .await;
}

/// A node whose connection drops four times, 3 s apart: one `flapping` alert instead of a
/// stream of `node_offline` (each blip is shorter than its 15 s group wait), resolved after
/// the quiet period.
#[tokio::test]
async fn flapping_node_is_one_flapping_alert() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(false, "[alerts.flapping]\nquiet = \"8s\"\n").await;
    let started = Instant::now();
    let _sim = scene.sim(
        4,
        "[[script]]\nat = \"5s\"\naction = \"flap\"\nnode = \"lz-chengguan-s01\"\n\
         times = 4\nperiod = \"3s\"\n",
    );
    scene.wait_online(4, "every simulated node online").await;
    let t0 = Instant::now();
    let fired = scene
        .nth_arrival(&k("flapping", "lz-chengguan-s01", "firing"), 0)
        .await;
    let resolved = scene
        .nth_arrival(&k("flapping", "lz-chengguan-s01", "resolved"), 0)
        .await;
    println!(
        "flapping: fired after {:?}, resolved {:?} later",
        fired - t0,
        resolved - fired
    );
    // Drops at 5, 8, 11 and 14 s: the fourth up/down transition (the second return) comes
    // by about 10 s; quiet 8 s after the last transition.
    assert_within(
        "sim start → flapping (first drop at 5 s)",
        started,
        fired,
        Duration::from_secs(14),
    );
    scene
        .expect_exactly(
            Duration::from_secs(5),
            &[
                k("flapping", "lz-chengguan-s01", "firing"),
                k("flapping", "lz-chengguan-s01", "resolved"),
            ],
        )
        .await;
}

/// The node is killed while the collector is down; the broker queues its Will for the
/// collector's session. After the restart the queued Will is the blind period's backlog: the
/// node is judged from what arrives after reconnection (nothing), so it is offline after one
/// full timeout (3 heartbeat intervals). One `node_offline`, resolved when the node is back.
#[tokio::test]
async fn node_dies_while_the_collector_is_down() {
    let _serial = SERIAL.lock().await;
    let mut scene = Scene::start(false, NODE_AT_ONCE).await;
    let (mut a, _b) = two_agents(&scene).await;
    scene.collector.process.kill_and_reap();
    a.process.kill_and_reap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    scene.collector.restart_in_place().await;
    let fired = scene
        .nth_arrival(&k("node_offline", "chaos-a", "firing"), 0)
        .await;
    assert_within(
        "collector start → node_offline (full timeout)",
        t0,
        fired,
        Duration::from_secs(6),
    );
    a.restart();
    scene
        .nth_arrival(&k("node_offline", "chaos-a", "resolved"), 0)
        .await;
    scene
        .expect_exactly(
            Duration::from_secs(4),
            &[
                k("node_offline", "chaos-a", "firing"),
                k("node_offline", "chaos-a", "resolved"),
            ],
        )
        .await;
}

/// kill -9 of the broker: no Wills at all, the connection drops. One `collector_blind`,
/// firing then resolved, nothing else, no downtime.
#[tokio::test]
async fn broker_killed_and_restarted_is_one_blind_alert() {
    let _serial = SERIAL.lock().await;
    let mut scene = Scene::start(true, NODE_AT_ONCE).await;
    let _sim = scene.sim(SIM_NODES as usize, "");
    scene
        .wait_online(SIM_NODES, "every simulated node online")
        .await;
    let t0 = Instant::now();
    scene.broker.kill();
    let blind = scene
        .nth_arrival(&k("collector_blind", "-", "firing"), 0)
        .await;
    assert_within(
        "broker kill -9 → collector_blind",
        t0,
        blind,
        Duration::from_secs(3),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t1 = Instant::now();
    scene.broker.start_again().await;
    let back = scene
        .nth_arrival(&k("collector_blind", "-", "resolved"), 0)
        .await;
    assert_within(
        "broker back → collector_blind resolved",
        t1,
        back,
        Duration::from_secs(5),
    );
    scene
        .wait_online(SIM_NODES, "every simulated node online after the restart")
        .await;
    scene
        .expect_exactly(
            Duration::from_secs(8),
            &[
                k("collector_blind", "-", "firing"),
                k("collector_blind", "-", "resolved"),
            ],
        )
        .await;
    let up = scene.network_uptime().await;
    assert_eq!(up["downtime_s"].as_f64(), Some(0.0), "{up}");
    assert_eq!(up["outages"].as_u64(), Some(0), "{up}");
}

/// A birth dated a day in the future (a node whose clock was wrong once) is rejected and
/// counted; it does not pin the node: the node's honest birth at another site registers it
/// there. No notification.
#[tokio::test]
async fn a_birth_a_day_in_the_future_is_rejected_and_pins_nothing() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(false, NODE_AT_ONCE).await;
    let publisher = collector_support::Publisher::connect(&scene.broker).await;
    let day_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        + 86_400_000;
    publisher
        .publish(
            "alarmnet/v1/chaos/site-x/chaos-f/birth",
            collector_support::birth("chaos", "site-x", "chaos-f", day_ahead),
            rumqttc::QoS::AtLeastOnce,
            true,
        )
        .await;
    publisher.wait_acked(1, WAIT).await;
    scene
        .collector
        .wait_metric(
            "alarmnet_messages_rejected_total{reason=\"future_ts\"}",
            1.0,
            WAIT,
        )
        .await;
    let _f = Agent::start(scene.dir.path(), &scene.broker, "chaos-f", "site-y");
    scene.wait_online(1, "the node online").await;
    let node = scene.get("/api/v1/nodes/chaos-f").await;
    assert_eq!(node["site"], "site-y", "{node}");
    scene.expect_exactly(Duration::from_secs(3), &[]).await;
}

/// The broker frozen (`SIGSTOP`) for 8 s with 172 nodes, then resumed: the collector's
/// connection only looks up and nothing arrives. The collector judges nobody past the last
/// moment it heard the broker, its link check declares the link lost, and the Wills the
/// broker publishes once it runs again (every agent's connection timed out meanwhile)
/// describe the blind period. One `collector_blind`, firing then resolved, nothing else.
#[tokio::test]
async fn broker_frozen_and_resumed_is_one_blind_alert() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::start(true, NODE_AT_ONCE).await;
    let _sim = scene.sim(SIM_NODES as usize, "");
    scene
        .wait_online(SIM_NODES, "every simulated node online")
        .await;
    let pid = scene.broker.pid().expect("broker running").to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    let t0 = Instant::now();
    signal("-STOP");
    let blind = scene
        .nth_arrival(&k("collector_blind", "-", "firing"), 0)
        .await;
    // Idle check after 1 s, declared lost 5 s after the last packet.
    assert_within(
        "broker SIGSTOP → collector_blind",
        t0,
        blind,
        Duration::from_secs(8),
    );
    let elapsed = t0.elapsed();
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(elapsed)).await;
    let t1 = Instant::now();
    signal("-CONT");
    let back = scene
        .nth_arrival(&k("collector_blind", "-", "resolved"), 0)
        .await;
    assert_within(
        "broker resumed → collector_blind resolved",
        t1,
        back,
        Duration::from_secs(10),
    );
    scene
        .wait_online(SIM_NODES, "every simulated node online after the freeze")
        .await;
    scene
        .expect_exactly(
            Duration::from_secs(8),
            &[
                k("collector_blind", "-", "firing"),
                k("collector_blind", "-", "resolved"),
            ],
        )
        .await;
    let up = scene.network_uptime().await;
    assert_eq!(up["outages"].as_u64(), Some(0), "{up}");
}

/// Healthy simulated nodes beside the flooding one.
const FLOOD_HEALTHY: u64 = 100;

/// Fault messages per second the flooding node publishes.
const FLOOD_RATE: u64 = 10_000;

/// One node publishing about 10 000 fault messages a second (the same fault, raised again
/// and again, as a looping agent would) beside 100 healthy simulated nodes and one real
/// agent. While it floods, the agent is killed: its `node_offline` is notified within the
/// bound of the plain kill scenario, the flooding node is rate-limited at ingest (counted on
/// `/metrics`, its heartbeats still heard: it stays online), and nobody else is judged
/// offline. What the flood legitimately produces: one `fault` alert for its fault, and one
/// `telemetry_gap` (the messages dropped by the limit are missing from its sequence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_node_cannot_delay_a_siren_offline() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    let _serial = SERIAL.lock().await;
    let scene = Scene::start(false, NODE_AT_ONCE).await;
    let _sim = scene.sim(FLOOD_HEALTHY as usize, "");
    let mut a = Agent::start(scene.dir.path(), &scene.broker, "chaos-a", "site-a");
    scene
        .wait_online(
            FLOOD_HEALTHY + 1,
            "the simulated nodes and the agent online",
        )
        .await;

    // The flooding node: a birth, then heartbeats every second naming its fault, and the
    // fault itself 10 000 times a second, all from one raw MQTT client at QoS 0.
    let publisher = Arc::new(collector_support::Publisher::connect(&scene.broker).await);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64
    };
    let born = now_ms();
    let boot = format!("boot{born:012}");
    let base = "alarmnet/v1/chaos/site-flood/chaos-flood";
    publisher
        .publish(
            &format!("{base}/birth"),
            collector_support::birth("chaos", "site-flood", "chaos-flood", born),
            rumqttc::QoS::AtLeastOnce,
            true,
        )
        .await;
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let stop_beating = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let heartbeats = {
        let (publisher, seq, stop, boot) = (
            publisher.clone(),
            seq.clone(),
            stop_beating.clone(),
            boot.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                let s = seq.fetch_add(1, Relaxed) + 1;
                let hb = format!(
                    r#"{{"v":1,"boot":"{boot}","seq":{s},"ts":{},"faults":["amp/FLOOD"]}}"#,
                    now_ms()
                );
                publisher
                    .publish(&format!("{base}/hb"), hb, rumqttc::QoS::AtLeastOnce, false)
                    .await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    scene
        .wait_online(FLOOD_HEALTHY + 2, "the flooding node online")
        .await;
    let flood = {
        let (publisher, seq, stop, sent) =
            (publisher.clone(), seq.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            // 100 faults every 10 ms.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Relaxed) {
                tick.tick().await;
                for _ in 0..FLOOD_RATE / 100 {
                    let s = seq.fetch_add(1, Relaxed) + 1;
                    let fault = format!(
                        r#"{{"v":1,"boot":"{boot}","seq":{s},"ts":{},"check":"amp","code":"FLOOD","severity":"major","status":"raised","message":"stuck in a loop"}}"#,
                        now_ms()
                    );
                    publisher
                        .publish(
                            &format!("{base}/fault"),
                            fault,
                            rumqttc::QoS::AtMostOnce,
                            false,
                        )
                        .await;
                    sent.fetch_add(1, Relaxed);
                }
            }
        })
    };

    // Flooding for 5 s, then the agent is killed mid-flood.
    let flood_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t0 = Instant::now();
    a.process.kill_and_reap();
    let fired = scene
        .nth_arrival(&k("node_offline", "chaos-a", "firing"), 0)
        .await;
    assert_within(
        "kill -9 during a 10 000/s flood → node_offline",
        t0,
        fired,
        Duration::from_secs(2),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t1 = Instant::now();
    a.restart();
    let resolved = scene
        .nth_arrival(&k("node_offline", "chaos-a", "resolved"), 0)
        .await;
    assert_within(
        "restart during the flood → resolved",
        t1,
        resolved,
        Duration::from_secs(5),
    );
    stop.store(true, Relaxed);
    let flooded = flood_start.elapsed();
    flood.await.expect("flood task");
    let sent = sent.load(Relaxed);
    println!(
        "flood: {sent} faults in {flooded:?} ({:.0}/s)",
        sent as f64 / flooded.as_secs_f64()
    );
    assert!(
        sent as f64 / flooded.as_secs_f64() > FLOOD_RATE as f64 * 0.7,
        "the flood was too slow to mean anything: {sent} in {flooded:?}"
    );

    // Nobody else was judged offline; the flooding node is online (its heartbeats have a
    // bucket of their own).
    scene
        .wait_online(FLOOD_HEALTHY + 2, "everyone online after the flood")
        .await;
    scene
        .expect_exactly(
            Duration::from_secs(4),
            &[
                k("fault", "chaos-flood", "firing"),
                k("telemetry_gap", "chaos-flood", "firing"),
                k("node_offline", "chaos-a", "firing"),
                k("node_offline", "chaos-a", "resolved"),
            ],
        )
        .await;
    let limited = scene
        .collector
        .metric("alarmnet_messages_rejected_total{reason=\"rate_limited\"}")
        .await;
    // The per-node count reaches /metrics within a second (with the next message of any
    // node); nobody else was limited, so it is the whole count.
    scene
        .collector
        .wait_metric(
            "alarmnet_node_rate_limited_total{node=\"chaos-flood\"}",
            limited,
            WAIT,
        )
        .await;
    let node = limited;
    let received = scene
        .collector
        .metric("alarmnet_messages_received_total")
        .await;
    println!("rate-limited: {limited} (chaos-flood: {node}); received in all: {received}");
    assert!(limited > 0.0 && node > 0.0, "the flood was not limited");
    assert!(
        node >= sent as f64 * 0.5,
        "most of the {sent} faults should be dropped at ingest, {node} were"
    );
    assert_eq!(
        scene.collector.metric("alarmnet_nodes_rate_limited").await,
        1.0,
        "only the flooding node is limited"
    );
    stop_beating.store(true, Relaxed);
    heartbeats.await.expect("heartbeat task");
}

/// The store's disk full for 30 s (a runaway file on the store's own small tmpfs fills
/// whatever is freed, the reserve file included), and a siren killed 5 s into it. Operators
/// get `store_failed` at once and the siren's `node_offline` during the outage (the
/// collector keeps judging and announces without the commit); when the disk has room again
/// the held writes are committed and `store_failed` resolves. Nothing is lost: the
/// siren's transitions and alerts are in the store afterwards.
#[tokio::test]
async fn store_disk_full_for_30_s_still_alerts_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let dir = workdir();
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).expect("store dir");
    let Some(disk) = collector_support::SmallDisk::mount(&store_dir, "16m") else {
        eprintln!("cannot mount a tmpfs (not root?): disk-full scenario not run");
        return;
    };
    let broker = Mosquitto::start().await;
    let hook = WebhookReceiver::start().await;
    // The webhook scores the scenario; Alertmanager and the `$alerts` topic must hear of the
    // failing store too, while it still fails (nothing waits for a commit).
    let am = Alertmanager::start().await;
    let probe = MqttProbe::connect(broker.port(), "alarmnet/v1/$alerts/#").await;
    let collector = Collector::start_with_env(
        &broker,
        &store_dir,
        &collector_extra(
            &hook,
            &format!(
                "{NODE_AT_ONCE}[alertmanager]\nurl = \"{}\"\nretry_delay = \"100ms\"\n",
                am.url()
            ),
        ),
        &[("ALARMNET_STORE__RESERVE", "1MiB")],
    )
    .await;
    let scene = Scene {
        broker,
        hook,
        collector,
        dir,
    };
    collector_support_wait(&scene, "alarmnet_store_reserve_present", 1.0).await;
    let (mut a, _b) = two_agents(&scene).await;

    let t0 = Instant::now();
    let (stop, filler) = disk.keep_full();
    let failed = scene
        .nth_arrival(&k("store_failed", "-", "firing"), 0)
        .await;
    assert_within(
        "disk full → store_failed",
        t0,
        failed,
        Duration::from_secs(5),
    );
    let on_mqtt = probe
        .next_matching(WAIT, |topic, payload| {
            topic.ends_with("/store_failed") && !payload.is_empty()
        })
        .await
        .expect("store_failed on the $alerts topic");
    assert_eq!(on_mqtt.json()["status"], "firing", "{}", on_mqtt.text());
    // A client subscribing now gets it as the retained state of the network.
    let late = MqttProbe::connect(scene.broker.port(), "alarmnet/v1/$alerts/#").await;
    let retained = late
        .next_matching(WAIT, |topic, _| topic.ends_with("/store_failed"))
        .await
        .expect("store_failed retained on $alerts");
    assert!(retained.retain, "a firing alert is retained: {retained:?}");
    assert_eq!(retained.json()["status"], "firing");
    wait_for(WAIT, "Alertmanager holds store_failed", || async {
        am.alerts().await.as_array().and_then(|alerts| {
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == "store_failed")
                .then_some(())
        })
    })
    .await;
    assert_eq!(
        scene.collector.metric("alarmnet_store_failing").await,
        1.0,
        "store_failed reached every output while the store still fails"
    );
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed())).await;

    let t1 = Instant::now();
    a.process.kill_and_reap();
    let offline = scene
        .nth_arrival(&k("node_offline", "chaos-a", "firing"), 0)
        .await;
    assert_within(
        "kill -9 during the full disk → node_offline",
        t1,
        offline,
        Duration::from_secs(2),
    );
    assert_eq!(
        scene.collector.metric("alarmnet_store_failing").await,
        1.0,
        "the store still fails"
    );
    let held = scene
        .collector
        .metric("alarmnet_store_pending_writes")
        .await;
    println!("writes held during the outage: {held}");
    assert!(held >= 1.0);

    tokio::time::sleep(Duration::from_secs(30).saturating_sub(t0.elapsed())).await;
    let t2 = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    filler.join().expect("filler");
    let back = scene
        .nth_arrival(&k("store_failed", "-", "resolved"), 0)
        .await;
    assert_within(
        "space back → store_failed resolved",
        t2,
        back,
        Duration::from_secs(5),
    );
    a.restart();
    scene
        .nth_arrival(&k("node_offline", "chaos-a", "resolved"), 0)
        .await;
    scene
        .expect_exactly(
            Duration::from_secs(3),
            &[
                k("store_failed", "-", "firing"),
                k("node_offline", "chaos-a", "firing"),
                k("store_failed", "-", "resolved"),
                k("node_offline", "chaos-a", "resolved"),
            ],
        )
        .await;

    // Nothing decided during the outage is lost.
    let history = scene.get("/api/v1/nodes/chaos-a/history?since=1h").await;
    let offline_stored = history["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|t| t["to"] == "offline"));
    assert!(
        offline_stored,
        "the outage's transition is stored: {history}"
    );
    let alerts = scene.get("/api/v1/alerts?limit=100").await;
    let stored: Vec<(String, String)> = alerts["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| {
            (
                a["rule"].as_str().unwrap_or_default().to_owned(),
                a["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        stored.contains(&("store_failed".to_owned(), "resolved".to_owned())),
        "{stored:?}"
    );
    assert!(
        stored.iter().any(|(r, _)| r == "node_offline"),
        "{stored:?}"
    );
    let released = scene
        .collector
        .metric("alarmnet_store_reserve_released_total")
        .await;
    println!("reserve file released {released} time(s)");
    assert!(released >= 1.0);
    assert_eq!(
        scene
            .collector
            .metric("alarmnet_store_pending_writes")
            .await,
        0.0
    );
    drop(scene);
    drop(disk);
}

async fn collector_support_wait(scene: &Scene, series: &str, want: f64) {
    scene.collector.wait_metric(series, want, WAIT).await;
}
