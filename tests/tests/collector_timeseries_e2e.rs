//! The collector's time series end to end: the real `alarmnet-collector` binary, fed through
//! a real Mosquitto, writing into a real VictoriaMetrics, read back through VictoriaMetrics'
//! own export API.
//!
//! The feed is a plain MQTT client publishing protocol messages with chosen `seq` and `ts`,
//! so every expected point is known exactly: a node's heartbeats are `seq` 1..=N, each at its
//! own `ts` (the wall clock at publish time, strictly increasing per node, like an agent).
//!
//! A point the database refuses cannot be produced through the real pipeline (every point
//! is built by the schema's constructors, and VictoriaMetrics answers 204 even to malformed
//! lines); that path is covered against a scripted endpoint in
//! `collector/tests/timeseries_stub.rs`.

mod collector_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alarmnet_e2e::{Mosquitto, VictoriaMetrics, wait_for};
use collector_support::{Collector, Publisher, workdir};
use rumqttc::QoS;

const BOOT: &str = "boote2e00000001";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// `[influx]` for a collector writing into `vm`, quick to flush and to retry.
fn influx(vm: &VictoriaMetrics) -> String {
    format!(
        "[influx]\nurl = \"{}\"\norg = \"civil-defence\"\nbucket = \"alarmnet\"\n\
         flush_interval = \"200ms\"\ntimeout = \"2s\"\nretry_initial_backoff = \"100ms\"\n\
         retry_max_backoff = \"1s\"\n",
        vm.url()
    )
}

/// One simulated node: its place and what it has sent.
struct Node {
    region: String,
    site: String,
    node: String,
    seq: u64,
    last_ts: u64,
    /// `seq` → `ts` of every heartbeat published.
    sent: BTreeMap<u64, u64>,
}

impl Node {
    fn new(region: &str, site: &str, node: &str) -> Node {
        Node {
            region: region.into(),
            site: site.into(),
            node: node.into(),
            seq: 0,
            last_ts: 0,
            sent: BTreeMap::new(),
        }
    }

    fn topic(&self, leaf: &str) -> String {
        format!(
            "alarmnet/v1/{}/{}/{}/{leaf}",
            self.region, self.site, self.node
        )
    }

    /// A timestamp after the previous one, from the wall clock.
    fn ts(&mut self) -> u64 {
        self.last_ts = now_ms().max(self.last_ts + 1);
        self.last_ts
    }

    async fn birth(&mut self, p: &Publisher) {
        let ts = self.ts();
        let body = format!(
            r#"{{"v":1,"boot":"{BOOT}","ts":{ts},"node":"{}","site":"{}","region":"{}","kind":"siren","hb_interval_s":10}}"#,
            self.node, self.site, self.region
        );
        p.publish(&self.topic("birth"), body, QoS::AtLeastOnce, false)
            .await;
    }

    /// The next heartbeat, with metrics derived from `seq` so values can be checked.
    async fn heartbeat(&mut self, p: &Publisher) {
        self.seq += 1;
        let seq = self.seq;
        let ts = self.ts();
        let body = format!(
            r#"{{"v":1,"boot":"{BOOT}","seq":{seq},"ts":{ts},"uptime_s":{},"metrics":{{"battery_v":{},"temp_c":{}}}}}"#,
            seq * 10,
            battery(seq),
            temp(seq),
        );
        p.publish(&self.topic("hb"), body, QoS::AtLeastOnce, false)
            .await;
        self.sent.insert(seq, ts);
    }
}

fn battery(seq: u64) -> f64 {
    12.0 + (seq % 50) as f64 / 100.0
}

fn temp(seq: u64) -> f64 {
    20.0 + (seq % 7) as f64
}

/// `seq` → `ts` of the heartbeats VictoriaMetrics holds for `node` (duplicates of one
/// sample collapse), and how many samples it holds in all.
async fn stored_heartbeats(vm: &VictoriaMetrics, node: &str) -> (BTreeMap<u64, u64>, usize) {
    let mut got = BTreeMap::new();
    let mut samples = 0;
    for s in vm
        .export(&format!("alarmnet_heartbeat_seq{{node=\"{node}\"}}"))
        .await
    {
        samples += s.values.len();
        for (v, t) in s.values.iter().zip(&s.timestamps) {
            got.insert(*v as u64, *t as u64);
        }
    }
    (got, samples)
}

/// Waits until VictoriaMetrics holds exactly the heartbeats each node sent, then checks it.
async fn wait_all_stored(vm: &VictoriaMetrics, nodes: &[Node], timeout: Duration) {
    for n in nodes {
        let want = &n.sent;
        let what = format!(
            "VictoriaMetrics holds the {} heartbeats of {}",
            want.len(),
            n.node
        );
        let got = wait_for(timeout, &what, || async {
            let (got, _) = stored_heartbeats(vm, &n.node).await;
            (got.len() >= want.len()).then_some(got)
        })
        .await;
        let missing: BTreeSet<_> = want.keys().filter(|s| !got.contains_key(s)).collect();
        assert!(missing.is_empty(), "{}: seqs lost: {missing:?}", n.node);
        assert_eq!(
            &got, want,
            "{}: seq → ts differs from what was sent",
            n.node
        );
    }
}

/// A `/metrics` series of the collector.
async fn metric(c: &Collector, series: &str) -> u64 {
    c.metric(series).await as u64
}

async fn start_nodes(p: &Publisher, c: &Collector, count: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = (0..count)
        .map(|i| {
            Node::new(
                &format!("r{}", i % 2),
                &format!("s{i}"),
                &format!("ts-e2e-{i}"),
            )
        })
        .collect();
    for n in &mut nodes {
        n.birth(p).await;
    }
    c.wait_metric_at_least(
        "alarmnet_nodes_tracked",
        count as f64,
        Duration::from_secs(20),
    )
    .await;
    nodes
}

/// Sends `rounds` heartbeats per node, one round every `every`; returns once all were
/// acknowledged by the broker.
async fn stream(p: &Publisher, nodes: &mut [Node], rounds: u64, every: Duration, acked: &mut u64) {
    let mut tick = tokio::time::interval(every);
    for _ in 0..rounds {
        tick.tick().await;
        for n in nodes.iter_mut() {
            n.heartbeat(p).await;
        }
    }
    *acked += rounds * nodes.len() as u64;
    p.wait_acked(*acked, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_read_back_with_names_labels_values_and_agent_timestamps() {
    let vm = VictoriaMetrics::start().await;
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let collector = Collector::start(&broker, dir.path(), &influx(&vm)).await;
    let p = Publisher::connect(&broker).await;
    let mut acked = 0;
    let mut nodes = start_nodes(&p, &collector, 2).await;
    acked += 2;
    let before = now_ms();
    stream(&p, &mut nodes, 20, Duration::from_millis(20), &mut acked).await;

    // A fault raised and a test receipt, at chosen agent times.
    let n0 = &mut nodes[0];
    let fault_ts = n0.ts();
    let body = format!(
        r#"{{"v":1,"boot":"{BOOT}","seq":{},"ts":{fault_ts},"check":"battery","code":"low","severity":"minor","status":"raised","message":"11.2 V"}}"#,
        n0.seq + 1
    );
    n0.seq += 1;
    p.publish(&n0.topic("fault"), body, QoS::AtLeastOnce, false)
        .await;
    let test_ts = n0.ts();
    let body = format!(
        r#"{{"v":1,"boot":"{BOOT}","seq":{},"ts":{test_ts},"test":"silent","result":"pass","duration_ms":1500}}"#,
        n0.seq + 1
    );
    n0.seq += 1;
    p.publish(&n0.topic("test"), body, QoS::AtLeastOnce, false)
        .await;
    acked += 2;
    p.wait_acked(acked, Duration::from_secs(10)).await;

    wait_all_stored(&vm, &nodes, Duration::from_secs(30)).await;
    for (i, n) in nodes.iter().enumerate() {
        let labels = |s: &alarmnet_e2e::Series| {
            (
                s.label("region").map(str::to_owned),
                s.label("site").map(str::to_owned),
                s.label("node").map(str::to_owned),
                s.label("kind").map(str::to_owned),
            )
        };
        let want = (
            Some(format!("r{}", i % 2)),
            Some(format!("s{i}")),
            Some(n.node.clone()),
            Some("siren".to_owned()),
        );
        for (name, value) in [
            ("battery_v", battery as fn(u64) -> f64),
            ("temp_c", temp),
            ("uptime_s", |seq| (seq * 10) as f64),
        ] {
            let series = vm
                .export(&format!("alarmnet_heartbeat_{name}{{node=\"{}\"}}", n.node))
                .await;
            assert_eq!(series.len(), 1, "one series of {name} for {}", n.node);
            let s = &series[0];
            assert_eq!(labels(s), want, "{name} labels");
            let got: BTreeMap<u64, f64> = s
                .timestamps
                .iter()
                .map(|t| *t as u64)
                .zip(s.values.iter().copied())
                .collect();
            let expected: BTreeMap<u64, f64> =
                n.sent.iter().map(|(seq, ts)| (*ts, value(*seq))).collect();
            assert_eq!(got, expected, "{name} of {} at the agent's ts", n.node);
        }

        // The node came online: one transition, at the collector's clock.
        let states = vm
            .export(&format!("alarmnet_node_state_up{{node=\"{}\"}}", n.node))
            .await;
        assert_eq!(states.len(), 1, "{states:?}");
        let s = &states[0];
        assert_eq!(labels(s), want);
        assert_eq!(s.label("state"), Some("online"));
        assert_eq!(s.values, vec![1.0]);
        let at = s.timestamps[0] as u64;
        assert!(
            at >= before - 60_000 && at <= now_ms(),
            "state at the collector's time: {at}"
        );
        let code = vm
            .export(&format!(
                "alarmnet_node_state_state_code{{node=\"{}\"}}",
                n.node
            ))
            .await;
        assert_eq!(code[0].values, vec![1.0], "state_code 1 = online");
    }

    let n0 = &nodes[0].node;
    let fault = wait_for(Duration::from_secs(10), "the fault point", || async {
        let s = vm
            .export(&format!("alarmnet_fault_active{{node=\"{n0}\"}}"))
            .await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(fault[0].label("check"), Some("battery"));
    assert_eq!(fault[0].label("code"), Some("low"));
    assert_eq!(fault[0].label("severity"), Some("minor"));
    assert_eq!(fault[0].label("kind"), Some("siren"));
    assert_eq!(fault[0].values, vec![1.0]);
    assert_eq!(fault[0].timestamps, vec![fault_ts as i64]);
    let pass = vm
        .export(&format!("alarmnet_test_pass{{node=\"{n0}\"}}"))
        .await;
    assert_eq!(pass.len(), 1, "{pass:?}");
    assert_eq!(pass[0].label("test"), Some("silent"));
    assert_eq!(pass[0].label("result"), Some("pass"));
    assert_eq!(pass[0].values, vec![1.0]);
    assert_eq!(pass[0].timestamps, vec![test_ts as i64]);
    let duration = vm
        .export(&format!("alarmnet_test_duration_ms{{node=\"{n0}\"}}"))
        .await;
    assert_eq!(duration[0].values, vec![1500.0]);

    assert!(metric(&collector, "alarmnet_tsdb_points_written_total").await >= 44);
    assert_eq!(
        metric(
            &collector,
            "alarmnet_tsdb_points_dropped_total{reason=\"invalid\"}"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30_second_database_outage_under_a_steady_stream_loses_nothing() {
    let mut vm = VictoriaMetrics::start().await;
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let collector = Collector::start(&broker, dir.path(), &influx(&vm)).await;
    let p = Publisher::connect(&broker).await;
    let mut acked = 3;
    let mut nodes = start_nodes(&p, &collector, 3).await;
    let every = Duration::from_millis(100);
    stream(&p, &mut nodes, 20, every, &mut acked).await;
    wait_all_stored(&vm, &nodes, Duration::from_secs(30)).await;

    vm.stop().await;
    let down = tokio::time::Instant::now();
    // The steady stream goes on for the 30 s the database is down.
    stream(&p, &mut nodes, 300, every, &mut acked).await;
    let left = Duration::from_secs(30).saturating_sub(down.elapsed());
    tokio::time::sleep(left).await;
    assert!(
        metric(&collector, "alarmnet_tsdb_points_spooled_total").await > 0,
        "the outage was spooled"
    );
    assert!(metric(&collector, "alarmnet_tsdb_write_retries_total").await > 0);
    assert_eq!(metric(&collector, "alarmnet_tsdb_up").await, 0);
    vm.start_again().await;
    stream(&p, &mut nodes, 20, every, &mut acked).await;

    wait_all_stored(&vm, &nodes, Duration::from_secs(60)).await;
    let total: usize = nodes.iter().map(|n| n.sent.len()).sum();
    assert_eq!(total, 3 * 340);
    collector
        .wait_metric("alarmnet_tsdb_spool_points", 0.0, Duration::from_secs(30))
        .await;
    for reason in ["invalid", "spool_full", "buffer_full"] {
        assert_eq!(
            metric(
                &collector,
                &format!("alarmnet_tsdb_points_dropped_total{{reason=\"{reason}\"}}")
            )
            .await,
            0,
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_while_spooling_loses_nothing_after_restart() {
    let mut vm = VictoriaMetrics::start().await;
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let mut collector = Collector::start(&broker, dir.path(), &influx(&vm)).await;
    let p = Publisher::connect(&broker).await;
    let mut acked = 3;
    let mut nodes = start_nodes(&p, &collector, 3).await;
    let every = Duration::from_millis(20);
    stream(&p, &mut nodes, 50, every, &mut acked).await;
    wait_all_stored(&vm, &nodes, Duration::from_secs(30)).await;
    let base = metric(&collector, "alarmnet_tsdb_points_submitted_total").await;

    // Database down: the next heartbeats can only go to the spool.
    vm.stop().await;
    stream(&p, &mut nodes, 100, every, &mut acked).await;
    let hb_total = 300;
    wait_for(
        Duration::from_secs(30),
        "every point submitted while the database is down is in the spool",
        || async {
            let text = collector.metrics().await;
            let get = |s: &str| collector_support::metric(&text, s) as u64;
            let submitted = get("alarmnet_tsdb_points_submitted_total");
            let spooled = get("alarmnet_tsdb_points_spooled_total");
            (submitted >= base + hb_total
                && get("alarmnet_tsdb_buffer_points") == 0
                && spooled >= submitted - base)
                .then_some(())
        },
    )
    .await;
    assert!(metric(&collector, "alarmnet_tsdb_spool_bytes").await > 0);

    collector.process.kill_and_reap();
    // While the collector is dead the broker queues the node's heartbeats for its
    // persistent session.
    stream(&p, &mut nodes, 50, every, &mut acked).await;
    let collector = collector.restart().await;
    // Restarted with the database still down, then the database comes back.
    stream(&p, &mut nodes, 20, every, &mut acked).await;
    vm.start_again().await;
    stream(&p, &mut nodes, 20, every, &mut acked).await;

    wait_all_stored(&vm, &nodes, Duration::from_secs(60)).await;
    for n in &nodes {
        assert_eq!(n.sent.len(), 240, "{}", n.node);
    }
    collector
        .wait_metric("alarmnet_tsdb_spool_points", 0.0, Duration::from_secs(30))
        .await;
    assert_eq!(
        metric(
            &collector,
            "alarmnet_tsdb_points_dropped_total{reason=\"spool_full\"}"
        )
        .await,
        0
    );
}

/// Points per second written end to end: heartbeats of many nodes published as fast as one
/// client can at QoS 1, through Mosquitto and the collector into VictoriaMetrics, timed until
/// the sink reports every point written. A measurement, not a check: run it in release.
///
/// ```text
/// cargo build --release -p alarmnet-collector --bins
/// cargo test --release -p alarmnet-e2e --test collector_timeseries_e2e -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release on purpose"]
async fn points_per_second_written_end_to_end() {
    const NODES: usize = 1000;
    const ROUNDS: u64 = 200;
    let vm = VictoriaMetrics::start().await;
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let collector = Collector::start(&broker, dir.path(), &influx(&vm)).await;
    let p = Publisher::connect(&broker).await;
    let mut nodes = start_nodes(&p, &collector, NODES).await;
    let base = metric(&collector, "alarmnet_tsdb_points_submitted_total").await;
    let started = std::time::Instant::now();
    for _ in 0..ROUNDS {
        for n in nodes.iter_mut() {
            n.heartbeat(&p).await;
        }
    }
    let published = started.elapsed();
    let points = ROUNDS * NODES as u64;
    let accepted_at = wait_for(
        Duration::from_secs(600),
        "every heartbeat submitted to the sink",
        || async {
            let s = metric(&collector, "alarmnet_tsdb_points_submitted_total").await;
            (s >= base + points).then(|| started.elapsed())
        },
    )
    .await;
    wait_for(Duration::from_secs(600), "every point written", || async {
        let text = collector.metrics().await;
        let get = |s: &str| collector_support::metric(&text, s) as u64;
        (get("alarmnet_tsdb_points_written_total") >= get("alarmnet_tsdb_points_submitted_total")
            && get("alarmnet_tsdb_points_submitted_total") >= base + points)
            .then_some(())
    })
    .await;
    let written_at = started.elapsed();
    let (stored, _) = stored_heartbeats(&vm, &nodes[0].node).await;
    assert_eq!(
        stored.len() as u64,
        ROUNDS,
        "every heartbeat of one node stored"
    );
    eprintln!(
        "{points} heartbeats of {NODES} nodes: published in {published:?}, submitted to the sink \
         in {accepted_at:?}, all written to VictoriaMetrics in {written_at:?} = {:.0} points/s end \
         to end (QoS 1, one publisher); dropped {}",
        points as f64 / written_at.as_secs_f64(),
        metric(
            &collector,
            "alarmnet_tsdb_points_dropped_total{reason=\"buffer_full\"}"
        )
        .await
    );
}
