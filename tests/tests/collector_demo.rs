//! `alarmnet-collector demo` end to end: the real binary with its embedded broker, a small
//! province and a fast heartbeat. It becomes ready, every simulated node comes online through
//! the embedded broker and is tracked by the collector, and Ctrl-C (SIGINT) stops it cleanly:
//! every node publishes its clean `offline`, and the process exits 0.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, binary, free_port, wait_for};

const NODES: usize = 20;

async fn get(http: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let r = http.get(url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// The value of an unlabelled series in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Node id of `alarmnet/v1/{region}/{site}/{node}/state`.
fn state_node(topic: &str) -> Option<String> {
    let parts: Vec<&str> = topic.split('/').collect();
    (parts.len() == 6 && parts[5] == "state" && !parts[2].starts_with('$'))
        .then(|| parts[4].to_owned())
}

#[tokio::test]
async fn demo_runs_a_province_and_stops_cleanly_on_ctrl_c() {
    let port = free_port();
    run_demo(&["--broker-port".to_owned(), port.to_string()], port).await;
}

/// Without the embedded broker: the same demo through an external Mosquitto.
#[tokio::test]
async fn demo_uses_an_external_broker_when_given_one() {
    let mosquitto = Mosquitto::start().await;
    run_demo(&["--broker".to_owned(), mosquitto.url()], mosquitto.port()).await;
}

/// Runs the demo with `broker_args` (its broker on `broker_port`) through start, readiness,
/// every node online, and a clean stop on SIGINT.
async fn run_demo(broker_args: &[String], broker_port: u16) {
    let data = tempfile::tempdir().expect("temp dir");
    let http_port = free_port();
    let started = Instant::now();
    let mut demo = Process::builder(binary("alarmnet-collector"))
        .name("demo")
        .args(["demo", "--data-dir"])
        .arg(data.path())
        .args(["--http", &format!("127.0.0.1:{http_port}")])
        .args(broker_args)
        .args([
            "--nodes",
            &NODES.to_string(),
            "--heartbeat",
            "1s",
            "--seed",
            "3",
        ])
        .env_remove("ALARMNET_LOG")
        .spawn();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");

    let base = format!("http://127.0.0.1:{http_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = demo.try_exit() {
            panic!(
                "the demo exited ({status}) while starting\n{}",
                demo.output_tail(40)
            );
        }
        if let Some((200, _)) = get(&http, &format!("{base}/readyz")).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo's /readyz did not answer 200 within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("demo ready after {:?}", started.elapsed());
    // The banner names the console and the broker.
    demo.wait_for_output(&format!("{base}/"), Duration::from_secs(5))
        .await;
    demo.wait_for_output(
        &format!("mqtt://127.0.0.1:{broker_port}"),
        Duration::from_secs(5),
    )
    .await;

    // Every virtual node is online on the embedded broker.
    let probe = MqttProbe::connect(broker_port, "alarmnet/v1/+/+/+/state").await;
    let mut online = HashSet::new();
    while online.len() < NODES {
        let m = probe
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("only {} of {NODES} nodes online", online.len()));
        if let Some(node) = state_node(&m.topic)
            && m.json()["state"] == "online"
        {
            online.insert(node);
        }
    }

    // ... and tracked by the collector.
    wait_for(
        Duration::from_secs(30),
        "the collector tracks every node",
        || async {
            let (_, text) = get(&http, &format!("{base}/metrics")).await?;
            (metric(&text, "alarmnet_nodes_tracked")? >= NODES as f64).then_some(())
        },
    )
    .await;
    // The API shows them online (the core commits each state change after the registration
    // the metric counts, so poll).
    let expected: HashSet<String> = online.clone();
    let listed = wait_for(
        Duration::from_secs(30),
        "the API lists every node online",
        || async {
            let (code, body) = get(&http, &format!("{base}/api/v1/nodes")).await?;
            if code != 200 {
                return None;
            }
            let json: serde_json::Value = serde_json::from_str(&body).ok()?;
            let listed: HashSet<String> = json["items"]
                .as_array()?
                .iter()
                .filter(|n| n["state"] == "online")
                .filter_map(|n| n["node"].as_str().map(str::to_owned))
                .collect();
            (listed == expected).then_some(listed)
        },
    )
    .await;
    assert_eq!(listed, online, "online in the API and on the broker");

    // Ctrl-C: every node says goodbye, then the process exits 0.
    demo.signal("INT");
    let mut stopped = HashSet::new();
    while stopped.len() < NODES {
        let Some(m) = probe.next(Duration::from_secs(10)).await else {
            break;
        };
        if let Some(node) = state_node(&m.topic) {
            let json = m.json();
            if json["state"] == "offline" && json["reason"] == "shutdown" {
                stopped.insert(node);
            }
        }
    }
    let status = demo
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the demo exits within 10 s of SIGINT");
    assert!(status.success(), "exit {status}\n{}", demo.output_tail(40));
    assert_eq!(
        stopped.len(),
        NODES,
        "nodes that stopped cleanly: {stopped:?}"
    );
    assert!(
        demo.stdout_text().contains("demo stopped"),
        "{}",
        demo.output_tail(20)
    );
    assert!(
        data.path().join("alarmnet.db").is_file(),
        "the store is in the data dir"
    );
}
