//! A measurement, not a check: the layout of `docs/scale.md` on this machine. Two region
//! shards (east with an active collector and a standby, west with an active one) on one
//! durable PostgreSQL and one Mosquitto, under `alarmnet-sim`; prints each collector's CPU
//! per message and memory, the standby's API latencies, and the time a standby takes to
//! take over from a killed active collector.
//!
//! Run it on purpose, with release binaries:
//!   cargo build --release -p alarmnet-collector -p alarmnet-sim
//!   ALARMNET_E2E_BIN_DIR=target/release cargo test --release -p alarmnet-e2e \
//!     --test collector_layout -- --ignored --nocapture

mod collector_support;

use std::time::{Duration, Instant};

use alarmnet_e2e::usage::{cpu_seconds, rss_bytes};
use alarmnet_e2e::{Mosquitto, Postgres, WebhookReceiver, wait_for};
use collector_support::{Collector, sim, workdir};

/// Nodes beating every second: the load of ten times as many at a 10 s heartbeat.
const NODES: u64 = 2_000;
const EAST: &str = "lanzhou,baiyin,tianshui,pingliang,qingyang,dingxi,longnan,linxia,gannan";
const WEST: &str = "jiayuguan,jinchang,wuwei,zhangye,jiuquan";
const WINDOW: Duration = Duration::from_secs(20);

async fn start(
    broker: &Mosquitto,
    hook: &WebhookReceiver,
    url: &str,
    shard: &str,
    regions: &str,
    name: &str,
) -> Collector {
    let dir = workdir().keep();
    let regions: Vec<String> = regions.split(',').map(|r| format!("\"{r}\"")).collect();
    let store = format!(
        "shard = \"{shard}\"\nregions = [{}]\nlease = \"3s\"",
        regions.join(", ")
    );
    let extra = format!(
        "anonymous_read = true\n[[webhooks]]\nurl = \"{}\"\n[alerts.readiness_low]\nenabled = false\n",
        hook.url()
    );
    Collector::start_with_store(
        broker,
        &dir,
        &store,
        &extra,
        &[
            ("ALARMNET_STORE__URL", url),
            ("ALARMNET_MQTT__CLIENT_ID", name),
        ],
    )
    .await
}

async fn get_ms(port: u16, path: &str) -> f64 {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .expect("request");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.bytes().await.expect("body");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    times[2]
}

async fn readyz(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("{e}"),
    }
}

#[tokio::test]
#[ignore = "a measurement: run it on purpose, with release binaries"]
async fn two_shards_and_a_standby_under_the_simulator() {
    let postgres = Postgres::start_durable();
    let url = postgres.create_database();
    let broker = Mosquitto::start().await;
    let hook = WebhookReceiver::start().await;
    let mut east = start(&broker, &hook, &url, "east", EAST, "east-a").await;
    let standby = start(&broker, &hook, &url, "east", EAST, "east-b").await;
    let west = start(&broker, &hook, &url, "west", WEST, "west-a").await;
    let dir = workdir();
    let _sim = sim(dir.path(), &broker, NODES, "");
    wait_for(Duration::from_secs(180), "every node online", || async {
        let v: serde_json::Value = reqwest::get(format!(
            "http://127.0.0.1:{}/api/v1/nodes?state=online&limit=1",
            standby.http_port
        ))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
        (v["total"].as_u64() == Some(NODES)).then_some(())
    })
    .await;

    let collectors = [
        ("east active", &east),
        ("east standby", &standby),
        ("west active", &west),
    ];
    let mut before = Vec::new();
    for (_, c) in collectors {
        before.push((
            cpu_seconds(c.process.pid()),
            c.metric("alarmnet_messages_accepted_total").await,
        ));
    }
    tokio::time::sleep(WINDOW).await;
    println!("{NODES} simulated nodes beating every second, over {WINDOW:?}:");
    for ((name, c), (cpu0, msgs0)) in collectors.iter().zip(before) {
        let cpu = cpu_seconds(c.process.pid()) - cpu0;
        let msgs = c.metric("alarmnet_messages_accepted_total").await - msgs0;
        println!(
            "  {name:<13} {msgs:>7.0} messages, CPU {cpu:.2} s = {:.1} µs per message, {:.1} % of a core, RSS {:.1} MiB",
            cpu * 1e6 / msgs.max(1.0),
            cpu * 100.0 / WINDOW.as_secs_f64(),
            rss_bytes(c.process.pid()) as f64 / (1 << 20) as f64
        );
    }
    let port = standby.http_port;
    println!("the standby's API (median of 5):");
    for path in [
        "/api/v1/nodes?limit=100",
        "/api/v1/summary",
        "/api/v1/readiness",
        "/api/v1/uptime?since=1h&by=region",
        "/api/v1/uptime?since=1h&by=node",
    ] {
        println!("  {path:<36} {:>7.1} ms", get_ms(port, path).await);
    }
    let t0 = Instant::now();
    east.process.kill_and_reap();
    wait_for(Duration::from_secs(30), "the standby active", || async {
        (readyz(port).await == "ready (active)\n").then_some(())
    })
    .await;
    println!(
        "kill -9 of the east active → its standby active: {:?} (lease 3 s)",
        t0.elapsed()
    );
}
