//! Drills at 100 000 nodes: signing and handing 100 000 commands to MQTT (the commander
//! without its pace limit, into a counting publisher), starting a drill over 100 000
//! registered nodes (selection + storing every node's row), and tallying 100 000 receipts
//! committed to the store (the drills task's poll, read, apply, store cycle). Prints the
//! figures. Run: `cargo bench -p alarmnet-collector --bench drills`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use alarmnet_collector::api::EventHub;
use alarmnet_collector::commands::{Commander, Commands, Publisher, Signer, key};
use alarmnet_collector::drills::{DrillControl, DrillSpec, DrillsSettings, DrillsTask, Selector};
use alarmnet_collector::metrics::Metrics;
use alarmnet_collector::model::UnixMillis;
use alarmnet_collector::store::Store;
use alarmnet_protocol::{
    Birth, KeyId, Name, NodeId, NodePath, Prefix, RegionId, SiteId, TestReceipt,
};
use tokio_util::sync::CancellationToken;

const NODES: usize = 100_000;

/// Counts publishes; the payload bytes are kept in a sum so the work is not optimized away.
#[derive(Debug)]
struct Counting(Arc<AtomicU64>, Arc<AtomicU64>);

impl Publisher for Counting {
    async fn publish(&mut self, _topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.0.fetch_add(1, Relaxed);
        self.1.fetch_add(payload.len() as u64, Relaxed);
        Ok(())
    }
}

fn path(i: usize) -> NodePath {
    NodePath::new(
        RegionId::new(format!("r{:02}", i % 14)).expect("id"),
        SiteId::new(format!("s{:04}", i % 2000)).expect("id"),
        NodeId::new(format!("n{i:06}")).expect("id"),
    )
}

async fn register(store: &Store) {
    let births: Vec<(NodePath, Birth)> = (0..NODES)
        .map(|i| {
            let p = path(i);
            let b: Birth = serde_json::from_value(serde_json::json!({
                "v": 1, "boot": "bench0001", "ts": 1_790_000_000_000u64, "node": p.node,
                "site": p.site, "region": p.region, "kind": "siren", "hb_interval_s": 10
            }))
            .expect("birth");
            (p, b)
        })
        .collect();
    for chunk in births.chunks(10_000) {
        let chunk = chunk.to_vec();
        store
            .call(move |db| {
                for (p, b) in &chunk {
                    db.upsert_birth(p, b, UnixMillis::from_millis(1_790_000_000_000))?;
                }
                Ok(())
            })
            .await
            .expect("births");
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let key = Arc::new(key::generate(KeyId::new("bench").expect("kid")));
    let stop = CancellationToken::new();

    // 1. Signing and publishing, unpaced.
    let (sent, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (commands, queue) = Commands::channel();
    let commander = Commander::new(
        Counting(sent.clone(), bytes.clone()),
        Prefix::default(),
        Signer::new(Some(key.clone()), Duration::from_secs(300)),
        u32::MAX,
    );
    let task = tokio::spawn(commander.run(queue, stop.clone()));
    let job_sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    commands
        .drill(alarmnet_collector::commands::DrillJob {
            id: alarmnet_protocol::CmdId::new("d-bench").expect("id"),
            test: Name::new("silent").expect("test"),
            deadline: UnixMillis::MAX,
            nodes: (0..NODES).map(path).collect(),
            cancel: CancellationToken::new(),
            sent: job_sent.clone(),
        })
        .await
        .expect("queued");
    drop(commands);
    task.await.expect("commander");
    let took = started.elapsed();
    println!(
        "sign + encode + publish {NODES} signed drill commands: {:.2} s, {:.0} commands/s on one task, {:.1} µs each, {} bytes each",
        took.as_secs_f64(),
        NODES as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / NODES as f64,
        bytes.load(Relaxed) / sent.load(Relaxed).max(1),
    );
    println!(
        "at the default commands.rate of 2000/s, asking {NODES} nodes takes {:.0} s by design",
        NODES as f64 / 2000.0
    );

    // 2. A drill over 100 000 registered nodes, through the drills task and the store.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.db"), Arc::new(Metrics::new())).expect("store");
    register(&store).await;
    let (sent, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (commands, queue) = Commands::channel();
    let commander = Commander::new(
        Counting(sent.clone(), bytes),
        Prefix::default(),
        Signer::new(Some(key), Duration::from_secs(300)),
        u32::MAX,
    );
    tokio::spawn(commander.run(queue, stop.clone()));
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").expect("zone");
    let events = EventHub::new(UnixMillis::EPOCH, 4096, 1024, tz.clone());
    let (control, rx) = DrillControl::channel();
    let mut drills = DrillsTask::new(
        store.clone(),
        events,
        commands,
        DrillsSettings::default(),
        tz,
        alarmnet_collector::model::system_clock(),
    );
    drills.restore().await.expect("restore");
    tokio::spawn(drills.run(rx, stop.clone()));
    let started = Instant::now();
    let spec = DrillSpec {
        selector: Selector::default(),
        test: Name::new("silent").expect("test"),
        deadline: Duration::from_secs(3600),
    };
    let drill = control
        .start(spec, "bench".into(), false)
        .await
        .expect("started")
        .drill
        .expect("not a dry run");
    let start_took = started.elapsed();
    while sent.load(Relaxed) < NODES as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "start a drill over {NODES} nodes (select, store {NODES} rows, hand over): {:.2} s; all commands published after {:.2} s",
        start_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // 3. 100 000 receipts committed as the core would, then tallied by the drills task.
    let id = drill.id.clone();
    let started = Instant::now();
    for chunk in (0..NODES).collect::<Vec<_>>().chunks(10_000) {
        let chunk = chunk.to_vec();
        let id = id.clone();
        store
            .call(move |db| {
                for i in chunk {
                    let r: TestReceipt = serde_json::from_value(serde_json::json!({
                        "v": 1, "boot": "bench0001", "seq": 1, "ts": 1_790_000_000_000u64,
                        "drill": id.as_str(), "test": "silent",
                        "result": if i % 20 == 0 { "fail" } else { "pass" }, "duration_ms": 4000
                    }))
                    .expect("receipt");
                    db.record_test(&path(i).node, &r, alarmnet_collector::model::now_millis())?;
                }
                Ok(())
            })
            .await
            .expect("receipts");
    }
    let written = started.elapsed();
    let look = id.clone();
    loop {
        let look = look.clone();
        let row = store
            .read(move |db| db.drill(look.as_str()))
            .await
            .expect("read")
            .expect("stored");
        if row.meta.tally.waiting == 0 {
            println!(
                "tally {NODES} receipts: stored in {:.2} s, tallied and the drill closed {:.2} s after the last was stored ({} passed, {} failed, sounding rate {:.1} %)",
                written.as_secs_f64(),
                (started.elapsed() - written).as_secs_f64(),
                row.meta.tally.passed,
                row.meta.tally.failed,
                row.meta.tally.sounding_rate() * 100.0
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
}
