//! The collector's HTTP API end to end: real `alarmnet-collector run`, a real
//! `alarmnet-agent` and a real Mosquitto. Killing the agent (kill -9: the broker publishes
//! its Will) must reach a client of `/api/v1/events` as a `state` event to `offline`, and
//! the uptime report must show the outage and the tests the agent ran.

use std::time::Duration;

use alarmnet_e2e::{Mosquitto, MqttProbe, Process, binary, free_port, unique_id, wait_for};
use serde_json::Value;

const TOKEN: &str = "e2e-viewer-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

fn write_configs(dir: &std::path::Path, broker: &Mosquitto, node: &str, http: u16) {
    std::fs::write(
        dir.join("collector.toml"),
        format!(
            "[mqtt]\nbroker = \"{broker}\"\nclient_id = \"{client}\"\nkeep_alive = \"5s\"\n\
             [store]\npath = \"{db}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\n\
             [[http.tokens]]\nname = \"e2e\"\ntoken = \"{TOKEN}\"\nrole = \"viewer\"\n",
            broker = broker.url(),
            client = unique_id("collector"),
            db = dir.join("alarmnet.db").display(),
        ),
    )
    .expect("collector config");
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            "[node]\nid = \"{node}\"\nsite = \"lz-chengguan\"\nregion = \"lanzhou\"\n\
             kind = \"siren\"\n[mqtt]\nbrokers = [\"{broker}\"]\nheartbeat_interval = \"1s\"\n\
             keep_alive = \"5s\"\n[spool]\ndir = \"{spool}\"\n\
             [tests.silent]\ncommand = [\"true\"]\n[tests.sound]\ncommand = [\"false\"]\n\
             remote = true\n[commands]\nallow_unsigned = true\n",
            broker = broker.url(),
            spool = dir.join("spool").display(),
        ),
    )
    .expect("agent config");
}

/// Reads server-sent events until one satisfies `want`.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    want: impl Fn(&str, &Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let event = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(event), Some(data)) = (event, data) {
                let data: Value = serde_json::from_str(data).expect("event data is JSON");
                if want(event, &data) {
                    return Some(data);
                }
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .ok()?
            .expect("stream read")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn killing_an_agent_reaches_the_event_stream() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let node = unique_id("api-e2e");
    let http = free_port();
    write_configs(dir.path(), &broker, &node, http);
    let _collector = Process::builder(binary("alarmnet-collector"))
        .name("collector")
        .args(["run", "--config"])
        .arg(dir.path().join("collector.toml"))
        .spawn();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http}");
    wait_for(WAIT, "the collector's /readyz", || {
        let client = client.clone();
        let url = format!("{base}/readyz");
        async move {
            let ready = client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            ready.then_some(())
        }
    })
    .await;
    let mut events = client
        .get(format!("{base}/api/v1/events?access_token={TOKEN}"))
        .send()
        .await
        .expect("event stream");
    assert_eq!(events.status(), 200);
    let mut buffer = String::new();
    let mut agent = Process::builder(binary("alarmnet-agent"))
        .name("agent")
        .args(["run", "--config"])
        .arg(dir.path().join("agent.toml"))
        .spawn();
    let online = next_event(&mut events, &mut buffer, |event, d| {
        event == "state" && d["node"] == node.as_str() && d["to"] == "online"
    })
    .await
    .expect("the node comes online on the stream");
    assert_eq!(online["region"], "lanzhou");
    // Two tests asked over MQTT (the agent's `silent` procedure passes, `sound` fails)
    // reach the report.
    let operator = MqttProbe::connect(broker.port(), "alarmnet/v1/none").await;
    let cmd = format!("alarmnet/v1/lanzhou/lz-chengguan/{node}/cmd");
    for (id, test) in [("e2e-1", "silent"), ("e2e-2", "sound")] {
        let body = format!(r#"{{"v":1,"cmd":"test","id":"{id}","test":"{test}"}}"#);
        operator.publish(&cmd, body, false).await;
    }
    let uptime_url = format!("{base}/api/v1/uptime?since=1h&node={node}");
    let tested = wait_for(WAIT, "self-tests in the uptime report", || {
        let request = client.get(&uptime_url).bearer_auth(TOKEN).send();
        async move {
            let r: Value = request.await.ok()?.json().await.ok()?;
            let row = r["rows"][0].clone();
            (row["tests"].as_u64()? == 2).then_some(row)
        }
    })
    .await;
    assert_eq!(tested["tests_passed"], 1, "{tested}");
    assert_eq!(tested["tests_failed"], 1, "{tested}");
    assert_eq!(tested["test_pass_pct"], 50.0, "{tested}");
    agent.kill_and_reap();
    let offline = next_event(&mut events, &mut buffer, |event, d| {
        event == "state" && d["node"] == node.as_str() && d["to"] == "offline"
    })
    .await
    .expect("the kill reaches the stream");
    assert_eq!(offline["cause"], "will");
    assert_eq!(offline["site"], "lz-chengguan");
    // The API agrees with the stream.
    let n: Value = client
        .get(format!("{base}/api/v1/nodes/{node}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("node")
        .json()
        .await
        .expect("json");
    assert_eq!(n["state"], "offline");
    // And the report has the outage, still going on.
    let r: Value = client
        .get(&uptime_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("uptime")
        .json()
        .await
        .expect("json");
    let row = &r["rows"][0];
    assert_eq!(row["outages"], 1, "{r}");
    assert_eq!(row["outage_list"][0]["cause"], "will", "{r}");
    assert_eq!(row["outage_list"][0]["end"], Value::Null, "{r}");
}
