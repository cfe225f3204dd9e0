//! `alarmnet-sim` against a real Mosquitto. The simulator runs the agent's own session and
//! spool code, with faults raised and cleared on a script, so these tests cover what a real
//! check would do without depending on one: faults during a broker outage, faults spooled
//! on disk across kill -9, and a thousand agents through one broker.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, Received, binary, unique_id};
use alarmnet_protocol::{FaultStatus, Message, NodeState, Prefix, decode};

const WAIT: Duration = Duration::from_secs(20);
const NODE: &str = "lz-chengguan-s01";

/// How long the broker stays down in the outage test: 20 s, as the issue asks (twenty
/// heartbeats at the test's 1 s interval, and several reconnect attempts).
/// `ALARMNET_E2E_OUTAGE_SECS` shortens it while iterating on the test.
fn outage() -> Duration {
    let secs = std::env::var("ALARMNET_E2E_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

struct Sim {
    prefix: String,
    dir: tempfile::TempDir,
}

impl Sim {
    fn new() -> Self {
        Self {
            prefix: format!("{}/v1", unique_id("sim")),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config(&self, broker: &Mosquitto, nodes: usize, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("sim-{}.toml", unique_id("c")));
        std::fs::write(
            &path,
            format!(
                r#"
broker = "{url}"
nodes = {nodes}
heartbeat_interval = "1s"
keep_alive = "5s"
reconnect_max = "1s"
prefix = "{prefix}"
ramp = "100ms"
{extra}
"#,
                url = broker.url(),
                prefix = self.prefix,
            ),
        )
        .expect("write sim config");
        path
    }

    fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn start(&self, config: &Path, args: &[&str]) -> Process {
        Process::builder(binary("alarmnet-sim"))
            .name("alarmnet-sim")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .spawn()
    }

    fn decode(&self, m: &Received) -> Message {
        let prefix = Prefix::new(self.prefix.clone()).expect("prefix");
        decode(&prefix, &m.topic, &m.payload)
            .unwrap_or_else(|e| panic!("invalid message on {}: {e}: {}", m.topic, m.text()))
            .message
    }

    fn filter(&self) -> String {
        format!("{}/#", self.prefix)
    }
}

const RAISE_AND_CLEAR: &str = r#"
[[script]]
at = "3s"
action = "raise"
node = "lz-chengguan-s01"
check = "amplifier"
code = "AMP_NO_OUTPUT"
severity = "critical"
message = "amplifier 2: no output on test tone"

[[script]]
at = "4s"
action = "clear"
node = "lz-chengguan-s01"
check = "amplifier"
code = "AMP_NO_OUTPUT"
"#;

/// `(boot, seq, ts, status, replay)` of one fault message.
type FaultSeen = (String, u64, u64, FaultStatus, bool);

/// `(boot, seq, ts, status, replay)` of every fault, and `(boot, seq)` of every message
/// with a seq, from `messages`.
fn telemetry(sim: &Sim, messages: &[Received]) -> (Vec<FaultSeen>, Vec<(String, u64)>) {
    let mut faults = Vec::new();
    let mut seqs = Vec::new();
    for m in messages {
        if !m.topic.contains(NODE) {
            continue;
        }
        match sim.decode(m) {
            Message::Fault(f) => {
                seqs.push((f.boot.to_string(), f.seq));
                faults.push((f.boot.to_string(), f.seq, f.ts, f.status, f.replay));
            }
            Message::Heartbeat(h) => seqs.push((h.boot.to_string(), h.seq)),
            Message::Test(t) => seqs.push((t.boot.to_string(), t.seq)),
            _ => {}
        }
    }
    (faults, seqs)
}

#[tokio::test]
async fn faults_raised_and_cleared_during_a_broker_outage_arrive_in_order_with_their_ts() {
    let mut broker = Mosquitto::start().await;
    let sim = Sim::new();
    let config = sim.config(&broker, 1, RAISE_AND_CLEAR);
    let before = MqttProbe::connect(broker.port(), &sim.filter()).await;
    let mut proc = sim.start(&config, &[]);
    // The first heartbeat has been delivered: stop the broker between two heartbeats, so
    // nothing it acknowledged is lost in it (that would be the broker's loss, not ours).
    let first = before
        .next_matching(WAIT, |t, _| t.ends_with("/hb"))
        .await
        .expect("the node comes online and beats");
    let mut messages = vec![first];
    let down_at = std::time::Instant::now();
    broker.stop().await;
    proc.wait_for_output("status=Cleared", WAIT).await;
    let rest = outage().saturating_sub(down_at.elapsed());
    tokio::time::sleep(rest).await; // the outage itself: nothing to poll for
    // Hold the simulator while the broker comes back (it lost every subscription), so the
    // new subscriber is in place before the replay.
    proc.signal("STOP");
    broker.start_again().await;
    let restarted_ms = now_ms();
    let after = MqttProbe::connect(broker.port(), &sim.filter()).await;
    proc.signal("CONT");

    messages.extend(before.drain().await);
    let mut faults_seen = 0;
    let mut received = collect_until(&after, WAIT, "both fault events after the outage", |m| {
        faults_seen += usize::from(m.topic.ends_with("/fault"));
        faults_seen >= 2
    })
    .await;
    // A few more live heartbeats, so the sequence is seen past the replay.
    received.extend(after.collect_for(Duration::from_secs(2)).await);
    messages.extend(received);
    let (faults, seqs) = telemetry(&sim, &messages);
    assert_eq!(faults.len(), 2, "{faults:?}");
    let (raised, cleared) = (&faults[0], &faults[1]);
    assert_eq!(raised.3, FaultStatus::Raised);
    assert_eq!(cleared.3, FaultStatus::Cleared);
    assert!(
        raised.4 && cleared.4,
        "both were spooled, so both are replays"
    );
    assert!(raised.2 < cleared.2, "original ts, in order");
    assert!(
        cleared.2 < restarted_ms,
        "ts from when they happened, not when sent"
    );
    assert!(cleared.1 > raised.1, "seq in order");
    let boot = &raised.0;
    let mut mine: Vec<u64> = seqs
        .iter()
        .filter(|(b, _)| b == boot)
        .map(|(_, s)| *s)
        .collect();
    mine.sort_unstable();
    mine.dedup();
    let expected: Vec<u64> = (0..=*mine.last().expect("some")).collect();
    assert_eq!(mine, expected, "seq is continuous across the outage");
    proc.signal("TERM");
    proc.wait_exit(WAIT).await.expect("sim exits");
}

#[tokio::test]
async fn faults_spooled_on_disk_survive_kill_9_and_are_replayed_after_restart() {
    let mut broker = Mosquitto::start().await;
    let sim = Sim::new();
    let spool = sim.spool_dir();
    let spool_arg = spool.display().to_string();
    let with_script = sim.config(&broker, 1, RAISE_AND_CLEAR);
    broker.stop().await;
    let mut proc = sim.start(&with_script, &["--spool-dir", &spool_arg]);
    proc.wait_for_output("status=Cleared", WAIT).await;
    proc.signal("KILL");
    proc.wait_exit(WAIT).await.expect("killed");

    broker.start_again().await;
    let probe = MqttProbe::connect(broker.port(), &sim.filter()).await;
    let plain = sim.config(&broker, 1, "");
    let mut proc = sim.start(&plain, &["--spool-dir", &spool_arg]);
    let mut faults_seen = 0;
    let received = collect_until(&probe, WAIT, "both fault events after the restart", |m| {
        faults_seen += usize::from(m.topic.ends_with("/fault"));
        faults_seen >= 2
    })
    .await;
    let (faults, _) = telemetry(&sim, &received);
    let statuses: Vec<_> = faults.iter().map(|f| (f.3, f.4)).collect();
    assert_eq!(
        statuses,
        vec![(FaultStatus::Raised, true), (FaultStatus::Cleared, true)]
    );
    assert_eq!(faults[0].0, faults[1].0, "both from the killed run's boot");
    let new_boot = received
        .iter()
        .find_map(|m| match sim.decode(m) {
            Message::State(s) if s.state == NodeState::Online => Some(s.boot.to_string()),
            _ => None,
        })
        .expect("online state of the new run");
    assert_ne!(faults[0].0, new_boot);
    proc.signal("TERM");
    proc.wait_exit(WAIT).await.expect("sim exits");
}

#[tokio::test]
async fn a_thousand_simulated_agents_connect_and_heartbeat_through_one_broker() {
    const N: usize = 1000;
    let broker = Mosquitto::start().await;
    let sim = Sim::new();
    let config = sim.config(&broker, N, "");
    let probe = MqttProbe::connect(broker.port(), &sim.filter()).await;
    let mut proc = sim.start(&config, &["--heartbeat", "5s"]);
    let mut online: HashSet<String> = HashSet::new();
    let mut beating: HashMap<String, u32> = HashMap::new();
    let what = "1000 nodes online, each with two heartbeats";
    collect_until(&probe, Duration::from_secs(90), what, |m| {
        match sim.decode(m) {
            Message::State(s) if s.state == NodeState::Online => {
                online.insert(node_of(&m.topic));
            }
            Message::Heartbeat(_) => *beating.entry(node_of(&m.topic)).or_default() += 1,
            _ => {}
        }
        online.len() == N && beating.len() == N && beating.values().all(|n| *n >= 2)
    })
    .await;
    proc.signal("TERM");
    proc.wait_exit(Duration::from_secs(30))
        .await
        .expect("sim exits");
}

/// Reads messages from `probe` until `done` (called on each) says so; panics after `timeout`.
async fn collect_until(
    probe: &MqttProbe,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Received) -> bool,
) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = probe
            .next(left)
            .await
            .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"));
        let finished = done(&m);
        out.push(m);
        if finished {
            return out;
        }
    }
}

fn node_of(topic: &str) -> String {
    topic.rsplit('/').nth(1).unwrap_or_default().to_owned()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
