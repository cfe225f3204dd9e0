//! The simulator engine: many virtual nodes in one process, each with its own MQTT client
//! (client id = node id) running the same [`Session`] and [`Spool`] code as the agent, with
//! simulated health and test procedures, random faults and a scripted timeline of failures.
//! `alarmnet-sim` is a thin CLI over [`Simulator`]; the collector's demo embeds it.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alarmnet_protocol::payload::ShortText;
use alarmnet_protocol::signing::{PublicKey, TrustedKeys};
use alarmnet_protocol::{
    CheckCounts, CmdId, FaultKey, FaultStatus, KeyId, MetricName, Metrics, Name, NodeId, NodePath,
    Prefix, RegionId, Severity, SiteId, Tags, TestResult, Text,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use alarmnet_agent::config::{Broker, Identity, MqttSettings, TlsFiles};
use alarmnet_agent::health::{
    BoxFuture, FaultEvent, Health, HealthSnapshot, TestOutcome, TestRunner,
};
use alarmnet_agent::protocol_state::{CommandSettings, SeenIds};
use alarmnet_agent::seen_file::{Opened, SeenStore};
use alarmnet_agent::session::{Control, Session, SessionConfig, Sources, Uptime, now_ms};
use alarmnet_agent::spool::{Spool, SpoolLimits};

/// The province the default layout is drawn from.
const REGIONS_JSON: &str = include_str!("../../data/gansu-regions.json");

/// Short prefixes for node ids, by region id (pinyin initials).
const REGION_ABBREV: &[(&str, &str)] = &[
    ("lanzhou", "lz"),
    ("jiayuguan", "jyg"),
    ("jinchang", "jc"),
    ("baiyin", "by"),
    ("tianshui", "ts"),
    ("wuwei", "ww"),
    ("zhangye", "zy"),
    ("pingliang", "pl"),
    ("jiuquan", "jq"),
    ("qingyang", "qy"),
    ("dingxi", "dx"),
    ("longnan", "ln"),
    ("linxia", "lx"),
    ("gannan", "gn"),
];

/// Everything the simulator needs; every field has a default (see [`SimConfig::default`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// `mqtt://host:port` of the broker every virtual node connects to.
    pub broker: String,
    /// How many nodes, spread over the province's counties (sirens and displays).
    pub nodes: usize,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_alive: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Random faults raised per node per hour (each clears after 30 s to 5 min).
    pub fault_rate: f64,
    /// Fraction of nodes whose tests fail (until a scripted silent test picks again).
    pub test_fail_fraction: f64,
    /// Nodes (ids) whose every test fails (`result: fail`), whatever the script picks.
    pub test_fail: Vec<String>,
    /// Nodes (ids) whose every test cannot run (`result: error`).
    pub test_error: Vec<String>,
    /// `[commands]`: the admission rules every simulated node applies, as the agent's
    /// `[commands]` section. As on a real agent, `sound` never starts by command.
    pub commands: SimCommands,
    /// Seed for the layout's random choices, faults and test failures.
    pub seed: u64,
    pub prefix: String,
    /// Spool on disk under `<dir>/<node id>`; in memory when absent.
    pub spool_dir: Option<PathBuf>,
    /// Connections are spread over this long at start, so the broker is not hit at once.
    #[serde(with = "humantime_serde")]
    pub ramp: Duration,
    /// Scripted failures.
    pub script: Vec<ScriptEvent>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            broker: "mqtt://127.0.0.1:1883".into(),
            nodes: 100,
            heartbeat_interval: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
            reconnect_max: Duration::from_secs(60),
            fault_rate: 0.0,
            test_fail_fraction: 0.0,
            test_fail: Vec::new(),
            test_error: Vec::new(),
            commands: SimCommands::default(),
            seed: 1,
            prefix: alarmnet_protocol::DEFAULT_PREFIX.into(),
            spool_dir: None,
            ramp: Duration::from_secs(2),
            script: Vec::new(),
        }
    }
}

/// The `[commands]` section of the simulator: the same keys as the agent's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimCommands {
    /// Key id → the collector's public key (base64url). Code embedding the simulator (the
    /// demo) sets its collector's key here.
    pub keys: BTreeMap<KeyId, PublicKey>,
    /// Run unsigned commands too. `true` by default: the demo's collector sends unsigned
    /// `rebirth` requests.
    pub allow_unsigned: bool,
    /// How far a command's `ts` may be ahead of the simulator's clock.
    #[serde(with = "humantime_serde")]
    pub max_skew: Duration,
}

impl Default for SimCommands {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            allow_unsigned: true,
            max_skew: Duration::from_secs(30),
        }
    }
}

impl SimCommands {
    /// The admission settings every simulated node gets.
    pub fn settings(&self) -> CommandSettings {
        CommandSettings {
            keys: TrustedKeys::new(self.keys.iter().map(|(k, v)| (k.clone(), *v))),
            allow_unsigned: self.allow_unsigned,
            max_skew: self.max_skew,
        }
    }
}

/// One step of the timeline, `at` after the simulator starts.
#[derive(Debug, Clone, Deserialize)]
pub struct ScriptEvent {
    #[serde(with = "humantime_serde")]
    pub at: Duration,
    #[serde(flatten)]
    pub action: Action,
}

/// A scripted failure or event.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Drop the node's connection without a clean stop (the Will fires); back after `down_for`.
    Kill {
        node: String,
        #[serde(with = "humantime_serde")]
        down_for: Duration,
    },
    /// Stop the node entirely with its connection open, as SIGSTOP would.
    Freeze {
        node: String,
        #[serde(with = "humantime_serde")]
        duration: Duration,
    },
    /// Cut every node of a site off the network for `down_for`.
    CutSite {
        site: String,
        #[serde(with = "humantime_serde")]
        down_for: Duration,
    },
    /// Drop the node's connection `times` times, once per `period`.
    Flap {
        node: String,
        times: u32,
        #[serde(with = "humantime_serde")]
        period: Duration,
    },
    /// Every node runs a silent test; the listed nodes (or a random fraction) fail it.
    SilentTest {
        #[serde(default)]
        fail: Vec<String>,
        #[serde(default)]
        fail_fraction: f64,
        #[serde(default)]
        drill: Option<String>,
    },
    /// Raise a fault on a node.
    Raise {
        node: String,
        check: String,
        code: String,
        #[serde(default = "default_severity")]
        severity: Severity,
        #[serde(default)]
        message: String,
    },
    /// Clear a fault on a node.
    Clear {
        node: String,
        check: String,
        code: String,
    },
}

fn default_severity() -> Severity {
    Severity::Major
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulator configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Spool(#[from] alarmnet_agent::spool::SpoolError),
    #[error(transparent)]
    Session(#[from] alarmnet_agent::session::SessionError),
}

/// A virtual node of the layout.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub path: NodePath,
    pub kind: Name,
    pub name: String,
    /// The region's and the site's display names (`兰州市`, `城关区`), sent in the birth as
    /// the tags `region_name` and `site_name` so the console can show them.
    pub region_name: String,
    pub site_name: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Deserialize)]
struct Province {
    regions: Vec<RegionJson>,
}

#[derive(Debug, Deserialize)]
struct RegionJson {
    id: String,
    name: String,
    lat: f64,
    lon: f64,
    counties: Vec<CountyJson>,
}

#[derive(Debug, Deserialize)]
struct CountyJson {
    id: String,
    name: String,
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap_or_else(|_| unreachable!("static name {s} is valid"))
}

/// The default layout: `count` nodes dealt over the counties of the 14 regions in turn, so
/// every county gets a site (`lanzhou-chengguan`) once there are enough nodes. In each site
/// odd-numbered nodes are sirens (`lz-chengguan-s01`, `城关区 1号警报器`), even-numbered ones
/// displays (`lz-chengguan-d01`, `城关区 1号显示屏`).
pub fn layout(count: usize, seed: u64) -> Result<Vec<NodeInfo>, SimError> {
    let province: Province = serde_json::from_str(REGIONS_JSON)
        .map_err(|e| SimError::Config(format!("data/gansu-regions.json: {e}")))?;
    let counties: Vec<(&RegionJson, &CountyJson)> = province
        .regions
        .iter()
        .flat_map(|r| r.counties.iter().map(move |c| (r, c)))
        .collect();
    if counties.is_empty() {
        return Err(SimError::Config("no counties in the layout".into()));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let (region, county) = counties[i % counties.len()];
        let k = i / counties.len() + 1;
        let abbrev = REGION_ABBREV
            .iter()
            .find(|(r, _)| *r == region.id)
            .map_or(region.id.as_str(), |(_, a)| *a);
        let (kind, letter, number, label) = if k % 2 == 1 {
            ("siren", 's', k.div_ceil(2), "号警报器")
        } else {
            ("display", 'd', k / 2, "号显示屏")
        };
        let bad = |e: alarmnet_protocol::IdError| SimError::Config(e.to_string());
        let path = NodePath::new(
            RegionId::new(&region.id).map_err(bad)?,
            SiteId::new(format!("{}-{}", region.id, county.id)).map_err(bad)?,
            NodeId::new(format!("{abbrev}-{}-{letter}{number:02}", county.id)).map_err(bad)?,
        );
        out.push(NodeInfo {
            path,
            kind: name(kind),
            name: format!("{} {number}{label}", county.name),
            region_name: region.name.clone(),
            site_name: county.name.clone(),
            lat: region.lat + rng.random_range(-0.3..0.3),
            lon: region.lon + rng.random_range(-0.3..0.3),
        });
    }
    Ok(out)
}

/// The birth tags naming a node's region and site for people.
fn display_names(info: &NodeInfo) -> Tags {
    let mut tags = Tags::new();
    for (key, value) in [
        ("region_name", &info.region_name),
        ("site_name", &info.site_name),
    ] {
        if let (Ok(key), Ok(value)) = (MetricName::new(key), Text::new(value.as_str())) {
            let _ = tags.insert(key, value);
        }
    }
    tags
}

/// The checks a simulated node of a kind has, with the faults each can raise.
fn fault_catalog(kind: &str) -> &'static [(&'static str, &'static str, Severity, &'static str)] {
    if kind == "display" {
        &[
            ("system", "DISK_FULL", Severity::Minor, "disk 97% full"),
            (
                "player",
                "PROCESS_DOWN",
                Severity::Major,
                "player process not running",
            ),
            (
                "content",
                "STALE",
                Severity::Minor,
                "content not synced for 2 h",
            ),
        ]
    } else {
        &[
            ("system", "DISK_FULL", Severity::Minor, "disk 97% full"),
            (
                "power",
                "AC_LOST",
                Severity::Major,
                "mains power lost, on battery",
            ),
            (
                "amplifier",
                "AMP_NO_OUTPUT",
                Severity::Critical,
                "amplifier 2: no output",
            ),
        ]
    }
}

/// A simulated node's health: slowly wandering metrics and the faults the simulator set.
#[derive(Debug)]
struct SimHealth {
    checks: Vec<Name>,
    state: Mutex<SimState>,
}

#[derive(Debug)]
struct SimState {
    rng: StdRng,
    cpu: f64,
    temp: f64,
    battery_v: f64,
    faults: BTreeMap<FaultKey, Severity>,
}

impl SimHealth {
    fn new(kind: &str, seed: u64) -> Self {
        let checks = fault_catalog(kind).iter().map(|(c, ..)| name(c)).collect();
        Self {
            checks,
            state: Mutex::new(SimState {
                rng: StdRng::seed_from_u64(seed),
                cpu: 5.0,
                temp: 45.0,
                battery_v: 13.4,
                faults: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        // A panic while holding this lock cannot leave the numbers inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a fault change; returns false if it changes nothing.
    fn set_fault(&self, key: FaultKey, severity: Severity, active: bool) -> bool {
        let mut s = self.lock();
        if active {
            s.faults.insert(key, severity).is_none()
        } else {
            s.faults.remove(&key).is_some()
        }
    }
}

impl Health for SimHealth {
    fn check_names(&self) -> Vec<Name> {
        self.checks.clone()
    }

    fn snapshot(&self) -> HealthSnapshot {
        let mut s = self.lock();
        let step: f64 = s.rng.random_range(-1.0..1.0);
        s.cpu = (s.cpu + step).clamp(1.0, 60.0);
        let step: f64 = s.rng.random_range(-0.3..0.3);
        s.temp = (s.temp + step).clamp(30.0, 70.0);
        let ac = !s.faults.keys().any(|k| k.code.as_str() == "AC_LOST");
        let step = if ac { 0.02 } else { -0.05 };
        s.battery_v = (s.battery_v + step).clamp(11.0, 13.6);
        let mut metrics = Metrics::new();
        for (k, v) in [
            ("cpu_pct", s.cpu),
            ("mem_pct", 40.0 + s.cpu / 4.0),
            ("temp_c", s.temp),
            ("ac_power", if ac { 1.0 } else { 0.0 }),
            ("battery_v", s.battery_v),
        ] {
            if let Ok(k) = MetricName::new(k) {
                let _ = metrics.insert(k, (v * 10.0).round() / 10.0);
            }
        }
        let mut counts = CheckCounts::default();
        for check in &self.checks {
            let worst = s
                .faults
                .iter()
                .filter(|(k, _)| &k.check == check)
                .map(|(_, sev)| *sev)
                .min();
            match worst {
                None | Some(Severity::Info) => counts.ok += 1,
                Some(Severity::Critical) | Some(Severity::Major) => counts.critical += 1,
                Some(_) => counts.warning += 1,
            }
        }
        HealthSnapshot {
            metrics,
            counts,
            faults: s.faults.keys().cloned().collect(),
        }
    }

    fn run_all_now(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A simulated test procedure: passes unless the node is marked to fail or to error.
#[derive(Debug)]
struct SimTests {
    /// Set by the start-up draw (`test_fail_fraction`) and by scripted silent tests.
    fail: AtomicBool,
    /// Configured (`test_fail`): fails whatever the script picks.
    always_fail: bool,
    /// Configured (`test_error`): the procedure cannot run.
    always_error: bool,
}

impl TestRunner for SimTests {
    fn run(&self, test: &Name) -> BoxFuture<'_, TestOutcome> {
        let fail = self.always_fail || self.fail.load(Ordering::Relaxed);
        let error = self.always_error;
        let known = matches!(test.as_str(), "silent" | "sound");
        Box::pin(async move {
            let started = Instant::now();
            if !known {
                return TestOutcome {
                    result: TestResult::Error,
                    duration_ms: 0,
                    metrics: Metrics::new(),
                    message: "no procedure configured for this test".into(),
                };
            }
            sleep(Duration::from_millis(200)).await;
            if error {
                return TestOutcome {
                    result: TestResult::Error,
                    duration_ms: started.elapsed().as_millis() as u64,
                    metrics: Metrics::new(),
                    message: "amplifier controller not answering: test could not run".into(),
                };
            }
            let mut metrics = Metrics::new();
            let watts = if fail { 0.0 } else { 398.5 };
            if let Ok(k) = MetricName::new("amp1_out_w") {
                let _ = metrics.insert(k, watts);
            }
            TestOutcome {
                result: if fail {
                    TestResult::Fail
                } else {
                    TestResult::Pass
                },
                duration_ms: started.elapsed().as_millis() as u64,
                metrics,
                message: if fail {
                    "amplifier 1: no output into the test load".into()
                } else {
                    "all amplifiers delivered rated power into the test load".into()
                },
            }
        })
    }
}

/// One running virtual node's handles.
struct Handle {
    info: NodeInfo,
    health: Arc<SimHealth>,
    tests: Arc<SimTests>,
    faults: mpsc::Sender<FaultEvent>,
    control: mpsc::Sender<Control>,
}

/// Many virtual nodes; see the module documentation.
#[derive(Debug)]
pub struct Simulator {
    cfg: SimConfig,
    broker: Broker,
    prefix: Prefix,
    nodes: Vec<NodeInfo>,
}

impl Simulator {
    /// Checks the configuration and lays out the nodes.
    pub fn new(cfg: SimConfig) -> Result<Self, SimError> {
        let broker: Broker = cfg.broker.parse().map_err(SimError::Config)?;
        let prefix = Prefix::new(cfg.prefix.clone()).map_err(SimError::Config)?;
        if cfg.heartbeat_interval < Duration::from_millis(500) {
            return Err(SimError::Config("heartbeat_interval below 0.5 s".into()));
        }
        if cfg.keep_alive < Duration::from_secs(1) {
            return Err(SimError::Config("keep_alive below 1 s".into()));
        }
        let nodes = layout(cfg.nodes, cfg.seed)?;
        let ids: HashSet<&str> = nodes.iter().map(|n| n.path.node.as_str()).collect();
        for (key, list) in [
            ("test_fail", &cfg.test_fail),
            ("test_error", &cfg.test_error),
        ] {
            if let Some(n) = list.iter().find(|n| !ids.contains(n.as_str())) {
                return Err(SimError::Config(format!(
                    "{key}: no node {n:?} in the layout"
                )));
            }
        }
        if let Some(n) = cfg.test_fail.iter().find(|n| cfg.test_error.contains(n)) {
            return Err(SimError::Config(format!(
                "node {n:?} is in both test_fail and test_error"
            )));
        }
        let sites: HashSet<&str> = nodes.iter().map(|n| n.path.site.as_str()).collect();
        for ev in &cfg.script {
            let (nodes_named, site): (Vec<&str>, Option<&str>) = match &ev.action {
                Action::Kill { node, .. }
                | Action::Freeze { node, .. }
                | Action::Flap { node, .. }
                | Action::Raise { node, .. }
                | Action::Clear { node, .. } => (vec![node.as_str()], None),
                Action::CutSite { site, .. } => (vec![], Some(site.as_str())),
                Action::SilentTest { fail, .. } => {
                    (fail.iter().map(String::as_str).collect(), None)
                }
            };
            for n in nodes_named {
                if !ids.contains(n) {
                    return Err(SimError::Config(format!(
                        "script: no node {n:?} in the layout"
                    )));
                }
            }
            if let Some(s) = site.filter(|s| !sites.contains(s)) {
                return Err(SimError::Config(format!(
                    "script: no site {s:?} in the layout"
                )));
            }
        }
        Ok(Self {
            cfg,
            broker,
            prefix,
            nodes,
        })
    }

    /// The virtual nodes, in start order.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Runs every node and the script until `shutdown`; then every node stops cleanly
    /// (state `offline`/`shutdown`).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SimError> {
        let start = Instant::now();
        let tracker = TaskTracker::new();
        let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ 0x5eed);
        let mut handles = Vec::with_capacity(self.nodes.len());
        let count = self.nodes.len().max(1) as u32;
        let commands = self.cfg.commands.settings();
        if commands.refuses_everything() {
            warn!(
                "no [commands] keys and allow_unsigned = false: every node refuses every command"
            );
        }
        // As on a real agent, an audible test never starts by command.
        let local_only_tests: std::collections::BTreeSet<Name> = [name("sound")].into();
        for (i, info) in self.nodes.iter().enumerate() {
            let health = Arc::new(SimHealth::new(info.kind.as_str(), rng.random()));
            let id = info.path.node.as_str();
            let tests = Arc::new(SimTests {
                fail: AtomicBool::new(rng.random_bool(self.cfg.test_fail_fraction.clamp(0.0, 1.0))),
                always_fail: self.cfg.test_fail.iter().any(|n| n == id),
                always_error: self.cfg.test_error.iter().any(|n| n == id),
            });
            let (fault_tx, fault_rx) = mpsc::channel(16);
            let (control_tx, control_rx) = mpsc::channel(8);
            let (spool, seen_store, seen) = match &self.cfg.spool_dir {
                Some(dir) => {
                    let dir = dir.join(id);
                    let (store, seen, opened) = SeenStore::open(&dir, now_ms(), commands.max_skew);
                    if let Opened::Lost { why, .. } = &opened {
                        warn!(node = %id, %why, "seen command ids lost");
                    }
                    if !matches!(opened, Opened::Loaded { .. }) {
                        if let Err(e) = store.save(&seen) {
                            warn!(node = %id, error = %e, "cannot write the seen command ids file");
                        }
                    }
                    let spool = Spool::open(&dir, SpoolLimits::default())?.0;
                    (spool, store, seen)
                }
                None => (
                    Spool::in_memory(SpoolLimits {
                        max_bytes: 1024 * 1024,
                        max_records: 2_000,
                    }),
                    SeenStore::Memory,
                    SeenIds::default(),
                ),
            };
            let session = Session::new(
                SessionConfig {
                    identity: Identity {
                        path: info.path.clone(),
                        kind: info.kind.clone(),
                        name: Some(ShortText::truncated(info.name.clone())),
                        lat: Some(info.lat),
                        lon: Some(info.lon),
                        model: Some(ShortText::truncated(if info.kind.as_str() == "siren" {
                            "WSJ-2000"
                        } else {
                            "LED-P10"
                        })),
                        firmware: Some(ShortText::truncated("3.2")),
                        tags: display_names(info),
                    },
                    mqtt: MqttSettings {
                        brokers: vec![self.broker.clone()],
                        heartbeat_interval: self.cfg.heartbeat_interval,
                        keep_alive: self.cfg.keep_alive,
                        reconnect_min: Duration::from_millis(500),
                        reconnect_max: self.cfg.reconnect_max,
                        credentials: None,
                        tls: TlsFiles::default(),
                        prefix: self.prefix.clone(),
                    },
                    check_names: health.check_names(),
                    test_schedules: Vec::new(),
                    uptime: Uptime::Since(start),
                    agent_version: format!("{} (sim)", env!("CARGO_PKG_VERSION")),
                    commands: commands.clone(),
                    local_only_tests: local_only_tests.clone(),
                },
                spool,
                Sources {
                    health: health.clone(),
                    tests: tests.clone(),
                    faults: fault_rx,
                    control: Some(control_rx),
                    seen_store,
                    seen,
                },
            )?;
            let delay = self.cfg.ramp * i as u32 / count;
            let token = shutdown.clone();
            let span = info_span!("node", node = %info.path.node);
            tracker.spawn(
                async move {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = sleep(delay) => {}
                    }
                    if let Err(e) = session.run(token).await {
                        warn!(error = %e, "session ended with an error");
                    }
                }
                .instrument(span),
            );
            handles.push(Handle {
                info: info.clone(),
                health,
                tests,
                faults: fault_tx,
                control: control_tx,
            });
        }
        info!(nodes = handles.len(), broker = %self.broker, "simulator running");
        let handles = Arc::new(handles);
        tracker.spawn(random_faults(
            handles.clone(),
            self.cfg.fault_rate,
            self.cfg.seed ^ 0xfa17,
            shutdown.clone(),
        ));
        tracker.spawn(timeline(
            handles,
            self.cfg.script.clone(),
            start,
            self.cfg.seed ^ 0x7e57,
            shutdown.clone(),
            tracker.clone(),
        ));
        tracker.close();
        tracker.wait().await;
        Ok(())
    }
}

fn fault_event(
    check: &str,
    code: &str,
    severity: Severity,
    status: FaultStatus,
    message: &str,
) -> Option<FaultEvent> {
    Some(FaultEvent {
        ts_ms: now_ms(),
        check: Name::new(check).ok()?,
        code: Name::new(code).ok()?,
        severity,
        status,
        message: message.into(),
    })
}

/// Applies a fault change to a node's health and sends the event to its session.
async fn set_fault(h: &Handle, ev: FaultEvent) {
    let active = ev.status == FaultStatus::Raised;
    if h.health.set_fault(ev.key(), ev.severity, active) {
        let _ = h.faults.send(ev).await;
    }
}

/// Raises random faults at `rate` per node per hour; each clears after 30 s to 5 min.
async fn random_faults(
    handles: Arc<Vec<Handle>>,
    rate: f64,
    seed: u64,
    shutdown: CancellationToken,
) {
    if rate <= 0.0 || handles.is_empty() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut clears: Vec<(Instant, usize, FaultEvent)> = Vec::new();
    let per_second = rate / 3600.0 * handles.len() as f64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = clears.drain(..).partition(|(t, ..)| *t <= now);
        clears = later;
        for (_, i, mut ev) in due {
            ev.status = FaultStatus::Cleared;
            ev.ts_ms = now_ms();
            set_fault(&handles[i], ev).await;
        }
        // Poisson arrivals approximated per second.
        let mut n = 0;
        let mut p = per_second;
        while p > 0.0 {
            if rng.random_bool(p.min(1.0)) {
                n += 1;
            }
            p -= 1.0;
        }
        for _ in 0..n {
            let i = rng.random_range(0..handles.len());
            let catalog = fault_catalog(handles[i].info.kind.as_str());
            let (check, code, sev, msg) = catalog[rng.random_range(0..catalog.len())];
            if let Some(ev) = fault_event(check, code, sev, FaultStatus::Raised, msg) {
                let clear_at = now + Duration::from_secs(rng.random_range(30..300));
                clears.push((clear_at, i, ev.clone()));
                set_fault(&handles[i], ev).await;
            }
        }
    }
}

async fn timeline(
    handles: Arc<Vec<Handle>>,
    mut script: Vec<ScriptEvent>,
    start: Instant,
    seed: u64,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    script.sort_by_key(|e| e.at);
    let mut rng = StdRng::seed_from_u64(seed);
    let find = |id: &str| handles.iter().find(|h| h.info.path.node.as_str() == id);
    let mut drills = 0u32;
    for ev in script {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sleep_until(start + ev.at) => {}
        }
        info!(at = ?ev.at, action = ?ev.action, "script");
        match ev.action {
            Action::Kill { node, down_for } => {
                if let Some(h) = find(&node) {
                    let _ = h.control.send(Control::Kill { down_for }).await;
                }
            }
            Action::Freeze { node, duration } => {
                if let Some(h) = find(&node) {
                    let _ = h.control.send(Control::Freeze { duration }).await;
                }
            }
            Action::CutSite { site, down_for } => {
                for h in handles.iter().filter(|h| h.info.path.site.as_str() == site) {
                    let _ = h.control.send(Control::Kill { down_for }).await;
                }
            }
            Action::Flap {
                node,
                times,
                period,
            } => {
                if let Some(h) = find(&node) {
                    let control = h.control.clone();
                    let token = shutdown.clone();
                    tracker.spawn(async move {
                        for _ in 0..times {
                            let _ = control
                                .send(Control::Kill {
                                    down_for: period / 2,
                                })
                                .await;
                            tokio::select! {
                                _ = token.cancelled() => return,
                                _ = sleep(period) => {}
                            }
                        }
                    });
                }
            }
            Action::SilentTest {
                fail,
                fail_fraction,
                drill,
            } => {
                drills += 1;
                let drill = drill
                    .and_then(|d| CmdId::new(d).ok())
                    .or_else(|| CmdId::new(format!("sim-drill-{drills}")).ok());
                let test = name("silent");
                for h in handles.iter() {
                    let fails = fail.iter().any(|f| f == h.info.path.node.as_str())
                        || rng.random_bool(fail_fraction.clamp(0.0, 1.0));
                    h.tests.fail.store(fails, Ordering::Relaxed);
                    let _ = h
                        .control
                        .send(Control::RunTest {
                            test: test.clone(),
                            drill: drill.clone(),
                        })
                        .await;
                }
            }
            Action::Raise {
                node,
                check,
                code,
                severity,
                message,
            } => {
                if let (Some(h), Some(ev)) = (
                    find(&node),
                    fault_event(&check, &code, severity, FaultStatus::Raised, &message),
                ) {
                    set_fault(h, ev).await;
                }
            }
            Action::Clear { node, check, code } => {
                let severity = find(&node)
                    .and_then(|h| {
                        let key = FaultKey::new(Name::new(&check).ok()?, Name::new(&code).ok()?);
                        h.health.lock().faults.get(&key).copied()
                    })
                    .unwrap_or(Severity::Info);
                if let (Some(h), Some(ev)) = (
                    find(&node),
                    fault_event(&check, &code, severity, FaultStatus::Cleared, ""),
                ) {
                    set_fault(h, ev).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_sites_after_counties_with_unique_ids() {
        let nodes = layout(200, 1).expect("layout");
        assert_eq!(nodes[0].path.site.as_str(), "lanzhou-chengguan");
        assert_eq!(nodes[0].path.node.as_str(), "lz-chengguan-s01");
        assert_eq!(nodes[0].name, "城关区 1号警报器");
        assert_eq!(nodes[0].region_name, "兰州市");
        assert_eq!(nodes[0].site_name, "城关区");
        let tags = display_names(&nodes[0]);
        assert_eq!(tags.get("region_name"), Some("兰州市"));
        assert_eq!(tags.get("site_name"), Some("城关区"));
        assert_eq!(nodes[0].kind.as_str(), "siren");
        let second = nodes
            .iter()
            .filter(|n| n.path.site.as_str() == "lanzhou-chengguan")
            .nth(1)
            .expect("two nodes in chengguan");
        assert_eq!(second.path.node.as_str(), "lz-chengguan-d01");
        assert_eq!(second.name, "城关区 1号显示屏");
        let ids: HashSet<_> = nodes.iter().map(|n| n.path.node.clone()).collect();
        assert_eq!(ids.len(), 200);
        let regions: HashSet<_> = nodes.iter().map(|n| n.path.region.clone()).collect();
        assert_eq!(regions.len(), 14);
    }

    #[test]
    fn script_must_name_known_nodes_and_sites() {
        let cfg: SimConfig = toml_like(
            r#"{"nodes": 5, "script": [{"at": "1s", "action": "kill", "node": "nope", "down_for": "5s"}]}"#,
        );
        let err = Simulator::new(cfg).expect_err("unknown node");
        assert!(err.to_string().contains("nope"));
        let cfg: SimConfig = toml_like(
            r#"{"nodes": 5, "script": [{"at": "1s", "action": "cut_site", "site": "lanzhou-chengguan", "down_for": "5s"}]}"#,
        );
        Simulator::new(cfg).expect("known site");
    }

    #[test]
    fn failing_and_erroring_nodes_and_commands_are_configured() {
        let cfg: SimConfig = toml_like(
            r#"{"nodes": 5, "test_fail": ["lz-chengguan-s01"], "test_error": ["lz-qilihe-s01"]}"#,
        );
        assert!(
            cfg.commands.allow_unsigned,
            "the demo's unsigned rebirths keep working"
        );
        Simulator::new(cfg).expect("known nodes");
        let cfg: SimConfig = toml_like(r#"{"nodes": 5, "test_error": ["nope"]}"#);
        let err = Simulator::new(cfg).expect_err("unknown node");
        assert!(err.to_string().contains("test_error") && err.to_string().contains("nope"));
        let cfg: SimConfig = toml_like(
            r#"{"nodes": 5, "test_fail": ["lz-chengguan-s01"], "test_error": ["lz-chengguan-s01"]}"#,
        );
        assert!(Simulator::new(cfg).is_err(), "fail and error at once");

        let key = alarmnet_protocol::signing::CommandKey::from_seed(
            KeyId::new("centre-2026").expect("kid"),
            [7; 32],
        )
        .public_key();
        let cfg: SimConfig = toml_like(&format!(
            r#"{{"commands": {{"keys": {{"centre-2026": "{key}"}}, "allow_unsigned": false, "max_skew": "5s"}}}}"#
        ));
        let settings = cfg.commands.settings();
        assert!(!settings.refuses_everything() && !settings.allow_unsigned);
        assert_eq!(settings.max_skew, Duration::from_secs(5));
        let bad: Result<SimConfig, _> =
            serde_json::from_str(r#"{"commands": {"keys": {"k": "short"}}}"#);
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn sim_tests_fail_or_error_as_configured() {
        let silent = name("silent");
        let run = |fail: bool, always_fail: bool, always_error: bool| {
            let t = SimTests {
                fail: AtomicBool::new(fail),
                always_fail,
                always_error,
            };
            let silent = silent.clone();
            async move { t.run(&silent).await.result }
        };
        assert_eq!(run(false, false, false).await, TestResult::Pass);
        assert_eq!(run(true, false, false).await, TestResult::Fail);
        assert_eq!(run(false, true, false).await, TestResult::Fail);
        assert_eq!(run(false, false, true).await, TestResult::Error);
    }

    #[test]
    fn shipped_example_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sim.example.toml");
        let cfg: SimConfig = config::Config::builder()
            .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("example is valid");
        assert_eq!(cfg.test_error, vec!["lz-xigu-s01".to_owned()]);
        Simulator::new(cfg).expect("the example's nodes exist");
    }

    fn toml_like(json: &str) -> SimConfig {
        serde_json::from_str(json).expect("config")
    }

    #[test]
    fn sim_health_counts_faults_per_check() {
        let h = SimHealth::new("siren", 3);
        let key = FaultKey::new(name("amplifier"), name("AMP_NO_OUTPUT"));
        assert!(h.set_fault(key.clone(), Severity::Critical, true));
        assert!(
            !h.set_fault(key.clone(), Severity::Critical, true),
            "raising twice is a no-op"
        );
        let snap = h.snapshot();
        assert_eq!(snap.faults, vec![key]);
        assert_eq!(snap.counts.critical, 1);
        assert_eq!(snap.counts.ok, 2);
        assert!(snap.metrics.get("battery_v").is_some());
    }
}
