//! The real `alarmnet-agent` with its spool on a small tmpfs that fills up: heartbeats keep
//! reaching the broker live, the `spool/SPOOL_WRITE_FAILED` fault is raised (and carried by
//! every heartbeat while active), and once space is back the fault is cleared and the spool
//! works again (a broker outage afterwards is spooled and replayed). A command received
//! while the disk is full still runs, although its id cannot be saved.
//!
//! A spool on a file system that is read-only when the agent starts: its records are
//! replayed, the agent runs and raises the fault, and clears it once the file system is
//! writable again. (A remount read-only under a running agent cannot be shown: the kernel
//! refuses it while a file on it is open for writing, which the agent's log always is; the
//! spool's unit tests cover a write failing with that error.)
//!
//! Mounting needs root, which the test machines have; elsewhere the tests say so and pass
//! without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, TestAgent};
use alarmnet_protocol::{Fault, FaultStatus, Heartbeat, Message, Prefix, Severity, decode};

const WAIT: Duration = Duration::from_secs(20);
const FAULT_KEY: &str = "spool/SPOOL_WRITE_FAILED";

/// A tmpfs mounted for the test's lifetime.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            dir: dir.to_owned(),
        })
    }

    /// Remounts the file system read-only (`ro`) or writable (`rw`).
    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "remount,{mode} failed");
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        // Whatever is left below one block.
        while f.write_all(&[0]).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
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
        Self(TestAgent::new("disk"))
    }

    fn config(&self, broker: &Mosquitto) -> PathBuf {
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
[mqtt]
brokers = ["{url}"]
heartbeat_interval = "500ms"
keep_alive = "5s"
reconnect_min = "100ms"
reconnect_max = "500ms"
prefix = "{prefix}"
[spool]
dir = "{spool}"
# The test sends an unsigned `check` command while the disk is full.
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

    /// The next heartbeat or fault of this node (births and states are skipped).
    async fn next(&self, probe: &MqttProbe) -> Telemetry {
        let prefix = Prefix::new(self.prefix.clone()).expect("prefix");
        loop {
            let m = probe
                .next_matching(WAIT, |t, _| t.ends_with("/hb") || t.ends_with("/fault"))
                .await
                .expect("telemetry keeps arriving");
            match decode(&prefix, &m.topic, &m.payload)
                .unwrap_or_else(|e| panic!("invalid message on {}: {e}: {}", m.topic, m.text()))
                .message
            {
                Message::Heartbeat(hb) => return Telemetry::Heartbeat(hb),
                Message::Fault(f) => return Telemetry::Fault(f),
                _ => {}
            }
        }
    }

    /// Waits for the spool fault with `status`; returns it and the heartbeats seen meanwhile.
    async fn spool_fault(&self, probe: &MqttProbe, status: FaultStatus) -> (Fault, Vec<Heartbeat>) {
        let mut heartbeats = Vec::new();
        loop {
            match self.next(probe).await {
                Telemetry::Heartbeat(hb) => heartbeats.push(hb),
                Telemetry::Fault(f) if f.key().to_string() == FAULT_KEY => {
                    assert_eq!(f.status, status, "{f:?}");
                    return (f, heartbeats);
                }
                Telemetry::Fault(f) => panic!("unexpected fault {f:?}"),
            }
        }
    }

    async fn heartbeat(&self, probe: &MqttProbe) -> Heartbeat {
        loop {
            if let Telemetry::Heartbeat(hb) = self.next(probe).await {
                return hb;
            }
        }
    }
}

enum Telemetry {
    Heartbeat(Heartbeat),
    Fault(Fault),
}

fn metric(hb: &Heartbeat, name: &str) -> f64 {
    hb.metrics
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {hb:?}"))
}

fn carries_fault(hb: &Heartbeat) -> bool {
    hb.faults
        .as_ref()
        .is_some_and(|f| f.iter().any(|k| k.to_string() == FAULT_KEY))
}

#[tokio::test]
async fn a_full_spool_disk_never_stops_the_heartbeats_and_the_spool_recovers() {
    let node = Node::new();
    std::fs::create_dir(node.spool_dir()).expect("spool dir");
    let Some(disk) = SmallDisk::mount(&node.spool_dir(), "1m") else {
        eprintln!("cannot mount a tmpfs (not root?): full spool disk test not run");
        return;
    };
    let mut broker = Mosquitto::start().await;
    let config = node.config(&broker);
    let probe = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let first = node.heartbeat(&probe).await;
    assert_eq!(metric(&first, "spool_write_errors"), 0.0);
    assert!(!carries_fault(&first));

    // The disk fills up: the agent raises the fault and keeps sending live heartbeats.
    let filler = disk.fill();
    let (raised, _) = node.spool_fault(&probe, FaultStatus::Raised).await;
    assert_eq!(raised.severity, Severity::Major);
    assert!(!raised.replay);
    let message = raised.message.as_ref().expect("a message").as_str();
    assert!(
        message.contains("No space left on device"),
        "the OS error is in the message: {message}"
    );
    let mut seqs = vec![raised.seq];
    for _ in 0..4 {
        let hb = node.heartbeat(&probe).await;
        assert!(!hb.replay, "sent live");
        assert!(
            carries_fault(&hb),
            "every heartbeat carries the active fault"
        );
        assert!(metric(&hb, "spool_write_errors") >= 1.0);
        assert!(metric(&hb, "spool_memory_only") >= 0.0);
        seqs.push(hb.seq);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(agent.is_running(), "the agent keeps running on a full disk");

    // A command still runs although its id cannot be saved in `seen-commands`.
    let cmd = format!("{}/lanzhou/lanzhou-chengguan/{}/cmd", node.prefix, node.id);
    probe
        .publish(&cmd, r#"{"v":1,"cmd":"check","id":"c-disk-full-1"}"#, false)
        .await;
    alarmnet_e2e::wait_for(WAIT, "the command run despite the full disk", || async {
        let log = agent.stderr_text();
        (log.contains("cannot save the seen command ids") && log.contains("command accepted"))
            .then_some(())
    })
    .await;

    // Space is back: the next retry clears the fault and the spool is on disk again.
    std::fs::remove_file(filler).expect("free space");
    let (cleared, _) = node.spool_fault(&probe, FaultStatus::Cleared).await;
    assert_eq!(cleared.severity, Severity::Major);
    let hb = node.heartbeat(&probe).await;
    assert!(!carries_fault(&hb), "{hb:?}");
    let errors = metric(&hb, "spool_write_errors");
    assert!(errors >= 1.0);
    assert_eq!(metric(&hb, "spool_memory_only"), 0.0);

    // Spooling works again: a broker outage is spooled and replayed, in order.
    let before = hb.seq;
    broker.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Hold the agent while the broker comes back, so the new subscriber is in place first.
    agent.signal("STOP");
    broker.start_again().await;
    let after = MqttProbe::connect(broker.port(), &node.filter()).await;
    agent.signal("CONT");
    let mut replayed = Vec::new();
    loop {
        let hb = node.heartbeat(&after).await;
        if !hb.replay {
            break;
        }
        assert!(!carries_fault(&hb));
        replayed.push(hb.seq);
    }
    // A heartbeat in flight at the kill may come again (at least once); what matters is
    // the outage's heartbeats, spooled on disk and replayed in order.
    let outage = replayed.iter().filter(|s| **s > before).count();
    assert!(
        outage >= 3,
        "only {outage} heartbeats replayed: {replayed:?}"
    );
    assert!(replayed.windows(2).all(|w| w[0] < w[1]), "{replayed:?}");
    let hb = node.heartbeat(&after).await;
    assert_eq!(
        metric(&hb, "spool_write_errors"),
        errors,
        "no write failed since the recovery"
    );

    agent.signal("TERM");
    let status = agent.wait_exit(WAIT).await.expect("exits");
    assert!(status.success(), "{status:?}");
    let log = agent.stderr_text();
    assert!(log.contains("spool cannot write"), "{log}");
    assert!(log.contains("spool writes to disk again"), "{log}");
}

#[tokio::test]
async fn a_read_only_spool_disk_at_start_is_replayed_and_the_agent_runs() {
    let node = Node::new();
    std::fs::create_dir(node.spool_dir()).expect("spool dir");
    let Some(disk) = SmallDisk::mount(&node.spool_dir(), "1m") else {
        eprintln!("cannot mount a tmpfs (not root?): read-only spool disk test not run");
        return;
    };
    let mut broker = Mosquitto::start().await;
    let config = node.config(&broker);
    // A first run spools heartbeats while the broker is away, then stops.
    broker.stop().await;
    let mut agent = node.start(&config);
    tokio::time::sleep(Duration::from_secs(3)).await;
    agent.signal("TERM");
    assert!(agent.wait_exit(WAIT).await.expect("exits").success());
    drop(agent);

    disk.remount("ro");
    broker.start_again().await;
    let probe = MqttProbe::connect(broker.port(), &node.filter()).await;
    let mut agent = node.start(&config);
    let mut replayed = 0;
    let mut live = Vec::new();
    let mut raised = None;
    while raised.is_none() || live.len() < 3 {
        match node.next(&probe).await {
            Telemetry::Heartbeat(hb) if hb.replay => replayed += 1,
            Telemetry::Heartbeat(hb) => live.push(hb),
            Telemetry::Fault(f) if f.key().to_string() == FAULT_KEY => {
                assert_eq!(f.status, FaultStatus::Raised);
                raised = Some(f);
            }
            Telemetry::Fault(f) => panic!("unexpected fault {f:?}"),
        }
    }
    assert!(replayed >= 3, "only {replayed} spooled heartbeats replayed");
    let raised = raised.expect("raised");
    let message = raised.message.as_ref().expect("a message").as_str();
    assert!(message.contains("Read-only file system"), "{message}");
    assert!(live.iter().skip(1).all(carries_fault), "{live:?}");
    assert!(agent.is_running());

    disk.remount("rw");
    let (cleared, _) = node.spool_fault(&probe, FaultStatus::Cleared).await;
    assert!(!cleared.replay);
    let hb = node.heartbeat(&probe).await;
    assert!(!carries_fault(&hb));
    assert_eq!(metric(&hb, "spool_memory_only"), 0.0);
    agent.signal("TERM");
    assert!(agent.wait_exit(WAIT).await.expect("exits").success());
}
