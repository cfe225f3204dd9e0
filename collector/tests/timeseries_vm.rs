//! The time-series sink against a real VictoriaMetrics (Debian's `victoria-metrics`),
//! started by each test on a free loopback port with its own storage directory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alarmnet_collector::model::{
    Alert, Cause, Liveness, RuleKind, Subject, Transition, UnixMillis,
};
use alarmnet_collector::timeseries::{Counters, NodeTags, Point, Sink, SinkConfig};
use alarmnet_protocol::{
    AlertStatus, BootId, Fault, FaultStatus, Heartbeat, MetricName, Metrics, Name, NodeId,
    RegionId, Severity, SiteId, TestReceipt, TestResult, V1,
};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::time::Instant;

/// Extra labels a series must carry.
type Labels<'a> = &'a [(&'a str, &'a str)];

const VM_BIN: &str = "/usr/bin/victoria-metrics";

/// A VictoriaMetrics process owned by one test, killed on drop.
struct Vm {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    http: reqwest::Client,
}

impl Vm {
    async fn start() -> Vm {
        Self::start_on(free_port()).await
    }

    /// A VictoriaMetrics that will listen on `port` once [`Vm::resume`] is called.
    fn not_started(port: u16) -> Vm {
        Vm {
            child: None,
            port,
            dir: tempfile::tempdir().expect("storage dir"),
            http: reqwest::Client::new(),
        }
    }

    async fn start_on(port: u16) -> Vm {
        let mut vm = Self::not_started(port);
        vm.resume().await;
        vm
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process (again) on the same port and storage, and waits for `/health`.
    async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("vm.log"))
            .expect("log file");
        let child = Command::new(VM_BIN)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.path().join("data").display()
            ))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start victoria-metrics");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .http
                .get(format!("{}/health", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "victoria-metrics exited early ({status}); see {}",
                    self.log_path().display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "victoria-metrics never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("vm.log")
    }

    /// Stops the process gracefully (SIGTERM, so what it accepted is on disk) and waits.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
    }

    /// Every sample of the series matching `selector`, after making recent writes visible.
    async fn export(&self, selector: &str) -> Vec<Series> {
        self.http
            .get(format!("{}/internal/force_flush", self.url()))
            .send()
            .await
            .expect("force_flush");
        let body = self
            .http
            .post(format!("{}/api/v1/export", self.url()))
            .form(&[("match[]", selector)])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("export body");
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("export line"))
            .collect()
    }

    /// Exports until at least `want` distinct samples match `selector` (or 30 s passed).
    async fn export_until(&self, selector: &str, want: usize) -> Vec<Series> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let series = self.export(selector).await;
            if distinct_samples(&series).len() >= want || Instant::now() > deadline {
                return series;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    values: Vec<f64>,
    timestamps: Vec<u64>,
}

/// (labels, timestamp) → value; a sample written twice (at-least-once delivery) is one.
fn distinct_samples(series: &[Series]) -> BTreeMap<(String, u64), f64> {
    let mut out = BTreeMap::new();
    for s in series {
        let labels = format!("{:?}", s.metric);
        for (t, v) in s.timestamps.iter().zip(&s.values) {
            out.insert((labels.clone(), *t), *v);
        }
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn config(url: &str, spool: Option<&Path>) -> SinkConfig {
    let mut c = SinkConfig::new(url, "civil-defence", "alarmnet", "token");
    c.batch_size = 500;
    c.max_buffer_points = 20_000;
    c.flush_interval = Duration::from_millis(50);
    c.timeout = Duration::from_secs(2);
    c.retry_initial_backoff = Duration::from_millis(50);
    c.retry_max_backoff = Duration::from_millis(400);
    c.spool_dir = spool.map(Path::to_owned);
    c.spool_max_bytes = 64 << 20;
    c
}

fn tags(node: &str) -> NodeTags {
    NodeTags {
        region: RegionId::new("lanzhou").expect("id"),
        site: SiteId::new("lz-cg").expect("id"),
        node: NodeId::new(node).expect("id"),
        kind: Name::new("siren").expect("name"),
    }
}

/// One heartbeat point per `i`, `battery_v` = i, at `base + i` ms.
fn numbered(node: &NodeTags, base: u64, i: u64) -> Point {
    let mut metrics = Metrics::new();
    metrics
        .insert(MetricName::new("battery_v").expect("name"), i as f64)
        .expect("metric");
    Point::heartbeat(
        node,
        &Heartbeat {
            v: V1,
            boot: BootId::from_random(7),
            seq: i,
            ts: base + i,
            uptime_s: None,
            metrics,
            checks: None,
            faults: None,
            replay: false,
        },
    )
}

/// Asserts the export holds exactly the `n` numbered samples of `node`.
async fn assert_all_numbered(vm: &Vm, node: &str, base: u64, n: u64) {
    let selector = format!("alarmnet_heartbeat_battery_v{{node=\"{node}\"}}");
    let series = vm.export_until(&selector, n as usize).await;
    let samples = distinct_samples(&series);
    let got: BTreeSet<(u64, u64)> = samples.iter().map(|((_, t), v)| (*t, *v as u64)).collect();
    let want: BTreeSet<(u64, u64)> = (0..n).map(|i| (base + i, i)).collect();
    let missing = want.difference(&got).count();
    let extra = got.difference(&want).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "{missing} of {n} points missing, {extra} unexpected"
    );
}

async fn wait_for(sink: &Sink, what: &str, done: impl Fn(&Counters) -> bool) -> Counters {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = sink.counters();
        if done(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_are_read_back_with_names_labels_values_and_times() {
    let vm = Vm::start().await;
    let spool = tempfile::tempdir().expect("spool");
    let mut c = config(&vm.url(), Some(spool.path()));
    // The compressed path of the client, as against a remote database.
    c.gzip = true;
    let sink = Sink::start(&c.build().expect("valid sink config")).expect("sink");
    let node = tags("lz-cg-s001");
    let t0 = now_ms() - 60_000;

    let mut metrics = Metrics::new();
    for (name, v) in [("battery_v", 12.5), ("temperature_c", -3.25)] {
        metrics
            .insert(MetricName::new(name).expect("name"), v)
            .expect("metric");
    }
    sink.submit(Point::heartbeat(
        &node,
        &Heartbeat {
            v: V1,
            boot: BootId::from_random(1),
            seq: 41,
            ts: t0,
            uptime_s: Some(86_400),
            metrics,
            checks: None,
            faults: None,
            replay: true,
        },
    ));
    sink.submit(Point::node_state(
        &node,
        &Transition {
            node: node.node.clone(),
            from: Liveness::Online,
            to: Liveness::Offline,
            at: UnixMillis::from_millis(t0 + 1),
            cause: Cause::Will,
        },
    ));
    sink.submit(Point::fault(
        &node,
        &Fault {
            v: V1,
            boot: BootId::from_random(1),
            seq: 42,
            ts: t0 + 2,
            check: Name::new("amplifier").expect("name"),
            code: Name::new("AMP_NO_OUTPUT").expect("name"),
            severity: Severity::Critical,
            status: FaultStatus::Raised,
            message: None,
            replay: false,
        },
    ));
    sink.submit(Point::test(
        &node,
        &TestReceipt {
            v: V1,
            boot: BootId::from_random(1),
            seq: 43,
            ts: t0 + 3,
            drill: None,
            test: Name::new("silent").expect("name"),
            result: TestResult::Pass,
            duration_ms: Some(1234),
            metrics: Metrics::new(),
            message: None,
            replay: false,
        },
    ));
    sink.submit(Point::alert(&Alert {
        id: "0000000000a1b2c3".parse().expect("alert id"),
        rule: RuleKind::NodeOffline,
        severity: Severity::Critical,
        status: AlertStatus::Firing,
        subject: Subject::Node {
            region: node.region.clone(),
            site: node.site.clone(),
            node: node.node.clone(),
        },
        kind: Some(node.kind.clone()),
        started_at: UnixMillis::from_millis(t0 + 4),
        ended_at: None,
        summary: "offline".into(),
        args: Default::default(),
        ack: None,
        notified: true,
    }));
    // Escaping survives the round trip.
    sink.submit(
        Point::builder("escape test")
            .tag("odd", r"a b,c=d\e")
            .field_f64("x y", 2.5)
            .timestamp_ms(UnixMillis::from_millis(t0 + 5))
            .build()
            .expect("point"),
    );
    sink.flush().await;

    let node_labels = [
        ("region", "lanzhou"),
        ("site", "lz-cg"),
        ("node", "lz-cg-s001"),
        ("kind", "siren"),
    ];
    let cases: &[(&str, Labels<'_>, f64, u64)] = &[
        ("alarmnet_heartbeat_battery_v", &[], 12.5, t0),
        ("alarmnet_heartbeat_temperature_c", &[], -3.25, t0),
        ("alarmnet_heartbeat_seq", &[], 41.0, t0),
        ("alarmnet_heartbeat_uptime_s", &[], 86_400.0, t0),
        (
            "alarmnet_node_state_up",
            &[("state", "offline"), ("cause", "will")],
            0.0,
            t0 + 1,
        ),
        (
            "alarmnet_node_state_state_code",
            &[("state", "offline"), ("cause", "will")],
            3.0,
            t0 + 1,
        ),
        (
            "alarmnet_fault_active",
            &[
                ("check", "amplifier"),
                ("code", "AMP_NO_OUTPUT"),
                ("severity", "critical"),
            ],
            1.0,
            t0 + 2,
        ),
        (
            "alarmnet_test_pass",
            &[("test", "silent"), ("result", "pass")],
            1.0,
            t0 + 3,
        ),
        (
            "alarmnet_test_duration_ms",
            &[("test", "silent"), ("result", "pass")],
            1234.0,
            t0 + 3,
        ),
        (
            "alarmnet_alert_firing",
            &[
                ("rule", "node_offline"),
                ("severity", "critical"),
                ("alert_id", "0000000000a1b2c3"),
            ],
            1.0,
            t0 + 4,
        ),
    ];
    for (name, extra, value, ts) in cases {
        let series = vm
            .export_until(&format!("{name}{{node=\"lz-cg-s001\"}}"), 1)
            .await;
        assert_eq!(series.len(), 1, "{name}: {series:?}");
        let s = &series[0];
        let mut want: BTreeMap<String, String> = node_labels
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.insert("__name__".into(), name.to_string());
        assert_eq!(s.metric, want, "{name}");
        assert_eq!(
            (&s.values[..], &s.timestamps[..]),
            (&[*value][..], &[*ts][..]),
            "{name}"
        );
    }
    let odd = vm.export_until(r#"{__name__="escape test_x y"}"#, 1).await;
    assert_eq!(odd.len(), 1, "{odd:?}");
    assert_eq!(
        odd[0].metric.get("odd").map(String::as_str),
        Some(r"a b,c=d\e")
    );
    assert_eq!((odd[0].values[0], odd[0].timestamps[0]), (2.5, t0 + 5));

    let c = sink.shutdown(Duration::from_secs(5)).await;
    assert_eq!(c.points_written, 6, "{c:?}");
    assert_eq!((c.dropped(), c.points_spooled), (0, 0), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_a_steady_stream_loses_nothing() {
    let mut vm = Vm::start().await;
    let spool = tempfile::tempdir().expect("spool");
    let mut c = config(&vm.url(), Some(spool.path()));
    // Far less memory than the outage needs: without the spool, points would be lost.
    c.max_buffer_points = 2_000;
    let sink = Sink::start(&c.build().expect("valid sink config")).expect("sink");
    let node = tags("outage-1");
    let n: u64 = 24_000;
    let base = now_ms() - 3_600_000;
    // About 4000 points/s; the database is down for the middle half (about 3 s).
    for i in 0..n {
        if i == n / 4 {
            vm.stop().await;
        }
        if i == 3 * n / 4 {
            // The sink must have noticed and spooled by now.
            wait_for(&sink, "spooling", |c| c.points_spooled > 0).await;
            vm.resume().await;
        }
        sink.submit(numbered(&node, base, i));
        if i % 40 == 39 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    sink.flush().await;
    let c = wait_for(&sink, "the spool to drain", |c| {
        c.spool_points == 0 && c.buffer_points == 0 && c.inflight_points == 0
    })
    .await;
    assert!(c.write_retries > 0, "the outage was never noticed: {c:?}");
    assert_eq!(c.dropped(), 0, "{c:?}");
    assert!(c.points_written >= n, "{c:?}");
    assert_all_numbered(&vm, "outage-1", base, n).await;
    sink.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sink_drains_what_a_crashed_one_spooled() {
    let port = free_port();
    let spool = tempfile::tempdir().expect("spool");
    let node = tags("restart-1");
    let n: u64 = 5_000;
    let base = now_ms() - 600_000;
    {
        // The database is not there: everything goes to the spool.
        let sink = Sink::start(
            &config(&format!("http://127.0.0.1:{port}"), Some(spool.path()))
                .build()
                .expect("valid sink config"),
        )
        .expect("sink");
        for i in 0..n {
            sink.submit(numbered(&node, base, i));
        }
        wait_for(&sink, "all points spooled", |c| c.points_spooled == n).await;
        // A crash: no shutdown, no drain.
        sink.abort().await;
    }
    // A crash in the middle of a write leaves a torn record at the end of the spool.
    let newest = std::fs::read_dir(spool.path())
        .expect("spool dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a segment");
    {
        use std::io::Write;
        let mut f = File::options().append(true).open(&newest).expect("segment");
        f.write_all(&[200, 1, 0, 0, 9, 9]).expect("torn bytes");
    }

    let vm = Vm::start_on(port).await;
    let sink = Sink::start(
        &config(&vm.url(), Some(spool.path()))
            .build()
            .expect("valid sink config"),
    )
    .expect("restarted sink");
    let c = wait_for(&sink, "the spool to drain", |c| {
        c.spool_points == 0 && c.points_written >= n
    })
    .await;
    assert_eq!(c.spool_corrupt_records, 1, "{c:?}");
    assert_eq!(c.dropped(), 0, "{c:?}");
    assert_all_numbered(&vm, "restart-1", base, n).await;
    sink.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_the_database_cannot_parse_does_not_block_the_rest() {
    let vm = Vm::start().await;
    let sink =
        Sink::start(&config(&vm.url(), None).build().expect("valid sink config")).expect("sink");
    let node = tags("bad-1");
    let base = now_ms() - 120_000;
    let n = 2_000;
    for i in 0..n {
        if i % 500 == 7 {
            sink.submit(Point::from_raw_line("this is not line protocol"));
            sink.submit(Point::from_raw_line(
                "alarmnet_heartbeat,node=bad-1 battery_v=oops 1",
            ));
        }
        sink.submit(numbered(&node, base, i));
    }
    sink.flush().await;
    assert_all_numbered(&vm, "bad-1", base, n).await;
    let c = sink.shutdown(Duration::from_secs(5)).await;
    // VictoriaMetrics 1.79 skips unparsable lines (logged) and answers 204: nothing to
    // isolate here; refusals (400) are covered against a stub in timeseries_stub.rs.
    assert_eq!(c.points_written, n + 8, "{c:?}");
    assert_eq!(c.dropped(), 0, "{c:?}");
}

/// A query of the VictoriaMetrics dashboard, with its variables set to "all".
fn dashboard_query(title: &str) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/dashboards/alarmnet-victoriametrics.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let panel = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["title"] == title)
        .unwrap_or_else(|| panic!("no panel {title:?}"));
    panel["targets"][0]["expr"]
        .as_str()
        .expect("expr")
        .replace("$region", ".*")
        .replace("$__interval", "5m")
}

impl Vm {
    /// Runs an instant query until it returns `want` series (or 30 s passed).
    async fn query_until(&self, query: &str, want: usize) -> Vec<(BTreeMap<String, String>, f64)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.http
                .get(format!("{}/internal/force_flush", self.url()))
                .send()
                .await
                .expect("force_flush");
            let body: serde_json::Value = self
                .http
                .post(format!("{}/api/v1/query", self.url()))
                .form(&[("query", query)])
                .send()
                .await
                .expect("query")
                .json()
                .await
                .expect("query json");
            assert_eq!(body["status"], "success", "{query}: {body}");
            let rows: Vec<(BTreeMap<String, String>, f64)> = body["data"]["result"]
                .as_array()
                .expect("result")
                .iter()
                .map(|r| {
                    let labels = serde_json::from_value(r["metric"].clone()).expect("labels");
                    let v = r["value"][1]
                        .as_str()
                        .expect("value")
                        .parse()
                        .expect("number");
                    (labels, v)
                })
                .collect();
            if rows.len() >= want || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_victoriametrics_dashboard_answers_from_what_the_sink_wrote() {
    let vm = Vm::start().await;
    let sink =
        Sink::start(&config(&vm.url(), None).build().expect("valid sink config")).expect("sink");
    let t0 = now_ms() - 3_600_000;
    let state = |node: &NodeTags, to: Liveness, cause: Cause, at: u64| {
        Point::node_state(
            node,
            &Transition {
                node: node.node.clone(),
                from: Liveness::Unknown,
                to,
                at: UnixMillis::from_millis(at),
                cause,
            },
        )
    };
    let a = tags("a");
    let b = tags("b");
    let mut c = tags("c");
    c.region = RegionId::new("tianshui").expect("id");
    sink.submit(state(&a, Liveness::Online, Cause::Birth, t0));
    sink.submit(state(&a, Liveness::Offline, Cause::Will, t0 + 60_000));
    sink.submit(state(&b, Liveness::Online, Cause::Birth, t0));
    sink.submit(state(&c, Liveness::Online, Cause::Birth, t0));
    sink.submit(state(&c, Liveness::Late, Cause::Timeout, t0 + 30_000));
    let fault = |code: &str, status: FaultStatus, ts: u64| Fault {
        v: V1,
        boot: BootId::from_random(1),
        seq: 1,
        ts,
        check: Name::new("amplifier").expect("name"),
        code: Name::new(code).expect("name"),
        severity: Severity::Major,
        status,
        message: None,
        replay: false,
    };
    sink.submit(Point::fault(
        &a,
        &fault("AMP_NO_OUTPUT", FaultStatus::Raised, t0),
    ));
    sink.submit(Point::fault(&b, &fault("AMP_HOT", FaultStatus::Raised, t0)));
    sink.submit(Point::fault(
        &b,
        &fault("AMP_HOT", FaultStatus::Cleared, t0 + 1000),
    ));
    sink.flush().await;

    // a offline, b online, c late (up): two of three nodes up.
    let now = vm
        .query_until(&dashboard_query("Network availability now"), 1)
        .await;
    assert_eq!(now.len(), 1, "{now:?}");
    assert!((now[0].1 - 200.0 / 3.0).abs() < 1e-9, "{now:?}");

    let states = vm
        .query_until(&dashboard_query("Node states by region"), 3)
        .await;
    let got: BTreeSet<(String, String, u64)> = states
        .iter()
        .map(|(l, v)| (l["region"].clone(), l["state"].clone(), *v as u64))
        .collect();
    let want: BTreeSet<(String, String, u64)> = [
        ("lanzhou", "offline", 1),
        ("lanzhou", "online", 1),
        ("tianshui", "late", 1),
    ]
    .into_iter()
    .map(|(r, s, n)| (r.to_owned(), s.to_owned(), n))
    .collect();
    assert_eq!(got, want);

    let faults = vm.query_until(&dashboard_query("Active faults"), 1).await;
    let active: Vec<(&str, &str)> = faults
        .iter()
        .map(|(l, _)| (l["node"].as_str(), l["code"].as_str()))
        .collect();
    assert_eq!(active, [("a", "AMP_NO_OUTPUT")]);
    sink.shutdown(Duration::from_secs(5)).await;
}
