//! Readiness end to end: the real `alarmnet-collector run`, three real `alarmnet-agent`
//! sirens and a real Mosquitto. One siren passes its scheduled silent test, one fails it,
//! one passes it but has a critical fault (an exec check exiting 2). The collector must
//! show the two as `not_ready` with their reasons in `/api/v1/nodes/{node}`, the region's
//! rollup in `/api/v1/readiness` and on `/metrics`, and fire `readiness_low` for the region.

mod collector_support;

use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Process, binary, unique_id, wait_for};
use collector_support::{Collector, metric, workdir};
use serde_json::Value;

// The agents run their first scheduled self-test one minute after start.
const WAIT: Duration = Duration::from_secs(120);

fn agent_config(
    dir: &std::path::Path,
    broker: &Mosquitto,
    (region, node): (&str, &str),
    test: &str,
    fault: bool,
) {
    let check = if fault {
        "[[checks]]\nname = \"amplifier\"\nkind = \"exec\"\n\
         command = [\"sh\", \"-c\", \"echo no output; exit 2\"]\ninterval = \"1s\"\n\
         raise_after = 1\nseverity = \"critical\"\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join(format!("{node}.toml")),
        format!(
            "[node]\nid = \"{node}\"\nsite = \"lz-chengguan\"\nregion = \"{region}\"\n\
             kind = \"siren\"\n[mqtt]\nbrokers = [\"{broker}\"]\nheartbeat_interval = \"1s\"\n\
             keep_alive = \"5s\"\n[spool]\ndir = \"{spool}\"\n\
             [tests.silent]\ncommand = [\"{test}\"]\nschedule = \"1m\"\n{check}",
            broker = broker.url(),
            spool = dir.join(format!("spool-{node}")).display(),
        ),
    )
    .expect("agent config");
}

async fn get(client: &reqwest::Client, url: &str) -> Option<Value> {
    client.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test]
async fn failing_tests_and_critical_faults_make_sirens_not_ready() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    // Each run gets its own region.
    let region = unique_id("rd");
    let collector = Collector::start(
        &broker,
        dir.path(),
        "anonymous_read = true\n\
         [alerts.readiness_low]\nfloor_pct = 90\nmin_nodes = 3\n",
    )
    .await;
    let (good, failing, faulty) = (
        format!("{region}-good"),
        format!("{region}-failing"),
        format!("{region}-faulty"),
    );
    agent_config(dir.path(), &broker, (&region, &good), "true", false);
    agent_config(dir.path(), &broker, (&region, &failing), "false", false);
    agent_config(dir.path(), &broker, (&region, &faulty), "true", true);
    let _agents: Vec<Process> = [&good, &failing, &faulty]
        .iter()
        .map(|node| {
            Process::builder(binary("alarmnet-agent"))
                .name(node.as_str())
                .args(["run", "--config"])
                .arg(dir.path().join(format!("{node}.toml")))
                .spawn()
        })
        .collect();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", collector.http_port);

    // The region's rollup: one ready siren, two not ready.
    let url = format!("{base}/api/v1/readiness?region={region}");
    let rollup = wait_for(WAIT, "the region's readiness rollup", || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let v = get(&client, &url).await?;
            let s = &v["regions"][0]["sirens"];
            (s["ready"] == 1 && s["not_ready"] == 2).then_some(v)
        }
    })
    .await;
    let pct = rollup["regions"][0]["ready_pct"].as_f64().expect("pct");
    assert!((pct - 100.0 / 3.0).abs() < 1e-9, "{rollup}");
    assert_eq!(rollup["sites"][0]["site"], "lz-chengguan", "{rollup}");

    // The reasons, node by node.
    let reasons = |v: &Value| -> Vec<String> {
        v["readiness"]["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["code"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let n = get(&client, &format!("{base}/api/v1/nodes/{failing}"))
        .await
        .expect("node");
    assert_eq!(n["readiness"]["state"], "not_ready", "{n}");
    assert_eq!(reasons(&n), ["test_failed"], "{n}");
    assert_eq!(n["readiness"]["reasons"][0]["test"], "silent", "{n}");
    let n = get(&client, &format!("{base}/api/v1/nodes/{faulty}"))
        .await
        .expect("node");
    assert_eq!(n["readiness"]["state"], "not_ready", "{n}");
    assert_eq!(reasons(&n), ["fault_critical"], "{n}");
    let n = get(&client, &format!("{base}/api/v1/nodes/{good}"))
        .await
        .expect("node");
    assert_eq!(n["readiness"]["state"], "ready", "{n}");
    let list = get(
        &client,
        &format!("{base}/api/v1/nodes?region={region}&readiness=not_ready"),
    )
    .await
    .expect("list");
    assert_eq!(list["total"], 2, "{list}");

    // /metrics per region.
    let text = collector.metrics().await;
    assert_eq!(
        metric(
            &text,
            &format!("alarmnet_readiness_sirens{{region=\"{region}\",state=\"not_ready\"}}")
        ),
        2.0,
        "{text}"
    );
    let ratio = metric(
        &text,
        &format!("alarmnet_readiness_ready_ratio{{region=\"{region}\"}}"),
    );
    assert!((ratio - 1.0 / 3.0).abs() < 1e-9, "{ratio}");

    // readiness_low fires for the region (33 % < 90 %; it fired already while no test had
    // run, since untested sirens are degraded, not ready).
    let alert = wait_for(WAIT, "readiness_low firing", || {
        let (client, url) = (
            client.clone(),
            format!("{base}/api/v1/alerts?status=firing"),
        );
        let region = region.clone();
        async move {
            let v = get(&client, &url).await?;
            v["items"]
                .as_array()?
                .iter()
                .find(|a| a["rule"] == "readiness_low" && a["region"] == region.as_str())
                .cloned()
        }
    })
    .await;
    assert!(
        alert["summary"]
            .as_str()
            .is_some_and(|s| s.contains("of 3 sirens ready") && s.contains("floor 90 %")),
        "{alert}"
    );
}
