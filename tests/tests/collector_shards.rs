//! Region shards on one PostgreSQL: two real `alarmnet-collector` processes, each serving
//! part of the province's regions, on a real PostgreSQL and a real Mosquitto, with the
//! simulator's 172 nodes over all 14 regions, scored by one webhook receiver.

mod collector_support;

use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Postgres, WebhookReceiver, wait_for};
use collector_support::{Collector, Publisher, k, log_lines, sim, wait_key, workdir};
use rumqttc::QoS;
use serde_json::Value;

const SIM_NODES: u64 = 172;
const WAIT: Duration = Duration::from_secs(60);
const EAST: &str = "lanzhou,baiyin,tianshui,pingliang,qingyang,dingxi,longnan,linxia,gannan";
const WEST: &str = "jiayuguan,jinchang,wuwei,zhangye,jiuquan";

async fn shard(
    broker: &Mosquitto,
    hook: &WebhookReceiver,
    url: &str,
    name: &str,
    regions: &str,
) -> Collector {
    shard_with(broker, hook, url, name, regions, "").await
}

/// [`shard`] with `alerts` (TOML tables under `[alerts]`) added.
async fn shard_with(
    broker: &Mosquitto,
    hook: &WebhookReceiver,
    url: &str,
    name: &str,
    regions: &str,
    alerts: &str,
) -> Collector {
    let dir = workdir().keep();
    let extra = format!(
        "anonymous_read = true\n[[webhooks]]\nurl = \"{}\"\nretry_delay = \"100ms\"\n\
         [alerts.readiness_low]\nenabled = false\n{alerts}",
        hook.url()
    );
    let regions: Vec<String> = regions.split(',').map(|r| format!("\"{r}\"")).collect();
    // The URL in the file, so that a restart (same file, no environment) finds it.
    let store = format!(
        "url = \"{url}\"\nshard = \"{name}\"\nregions = [{}]",
        regions.join(", ")
    );
    Collector::start_with_store(
        broker,
        &dir,
        &store,
        &extra,
        &[("ALARMNET_MQTT__CLIENT_ID", &format!("collector-{name}"))],
    )
    .await
}

async fn get(port: u16, path: &str) -> Value {
    reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// A site cut in a region of each shard: one `site_outage` each, firing then resolved,
/// nothing else; both collectors' APIs answer for the whole network (nodes, uptime,
/// readiness), and each raises its own shard's alerts only.
#[tokio::test]
async fn two_region_shards_alert_for_their_own_regions_and_answer_for_the_whole_network() {
    let postgres = Postgres::start();
    let url = postgres.create_database();
    let broker = Mosquitto::builder().start().await;
    let hook = WebhookReceiver::start().await;
    let east = shard(&broker, &hook, &url, "east", EAST).await;
    let west = shard(&broker, &hook, &url, "west", WEST).await;

    let dir = workdir();
    let _sim = sim(
        dir.path(),
        &broker,
        SIM_NODES,
        "[[script]]\nat = \"10s\"\naction = \"cut_site\"\nsite = \"lanzhou-chengguan\"\n\
         down_for = \"10s\"\n\
         [[script]]\nat = \"10s\"\naction = \"cut_site\"\nsite = \"jiayuguan-xiongguan\"\n\
         down_for = \"10s\"\n",
    );

    for c in [&east, &west] {
        wait_for(
            WAIT,
            "the whole network online on each collector's API",
            || async {
                let online = get(c.http_port, "/api/v1/nodes?state=online&limit=1").await;
                (online["total"].as_u64() == Some(SIM_NODES)).then_some(())
            },
        )
        .await;
    }
    for site in ["lanzhou-chengguan", "jiayuguan-xiongguan"] {
        for status in ["firing", "resolved"] {
            wait_key(&hook, &k("site_outage", site, status), WAIT).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(8)).await;
    hook.assert_exactly(
        &[
            k("site_outage", "lanzhou-chengguan", "firing"),
            k("site_outage", "lanzhou-chengguan", "resolved"),
            k("site_outage", "jiayuguan-xiongguan", "firing"),
            k("site_outage", "jiayuguan-xiongguan", "resolved"),
        ],
        &format!(
            "east:\n{}\nwest:\n{}",
            east.process.output_tail(30),
            west.process.output_tail(30)
        ),
    );

    for c in [&east, &west] {
        let nodes = get(c.http_port, "/api/v1/nodes?limit=1").await;
        assert_eq!(nodes["total"].as_u64(), Some(SIM_NODES), "{nodes}");
        let uptime = get(c.http_port, "/api/v1/uptime?since=1h&by=region").await;
        let regions: Vec<&str> = uptime["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["region"].as_str())
            .collect();
        assert_eq!(
            regions.len(),
            14,
            "every region on either collector: {uptime}"
        );
        let readiness = get(c.http_port, "/api/v1/readiness").await;
        assert_eq!(
            readiness["network"]["nodes"]["total"].as_u64(),
            Some(SIM_NODES),
            "{readiness}"
        );
        assert_eq!(readiness["regions"].as_array().map(Vec::len), Some(14));
    }
    // Each shard judged its own site only.
    let fired = |c: &Collector| log_lines(c, "rule=site_outage event=Fired");
    assert_eq!((fired(&east), fired(&west)), (1, 1));
}

/// Now, in milliseconds since the epoch (an agent's `ts`).
fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    u64::try_from(since.as_millis()).expect("fits")
}

/// A birth with a one-second heartbeat interval (late after 1.5 s, offline after 3 s).
fn quick_birth(region: &str, site: &str, node: &str, ts: u64) -> Vec<u8> {
    format!(
        r#"{{"v":1,"boot":"boot{ts:013}","ts":{ts},"node":"{node}","site":"{site}","region":"{region}","kind":"siren","hb_interval_s":1}}"#
    )
    .into_bytes()
}

/// A heartbeat of the boot [`quick_birth`] with `ts` announced.
fn quick_heartbeat(ts: u64, seq: u64) -> Vec<u8> {
    format!(
        r#"{{"v":1,"boot":"boot{ts:013}","seq":{seq},"ts":{}}}"#,
        now_ms()
    )
    .into_bytes()
}

/// Node `node` under `region/site`, as the topics name it.
#[derive(Clone)]
struct Place {
    region: &'static str,
    site: &'static str,
    node: &'static str,
    /// The birth's `ts` (and boot): a later birth under another place is a move.
    ts: u64,
}

impl Place {
    /// `node` at `site` of `region`, born now.
    fn now(region: &'static str, site: &'static str, node: &'static str) -> Place {
        Place {
            region,
            site,
            node,
            ts: now_ms(),
        }
    }

    fn topic(&self, leaf: &str) -> String {
        format!(
            "alarmnet/v1/{}/{}/{}/{leaf}",
            self.region, self.site, self.node
        )
    }
}

/// An agent stand-in: a birth, then a heartbeat every 300 ms, under the place it is told
/// (a new place is announced with a new birth); dropped, it stops.
struct Beating {
    place: tokio::sync::watch::Sender<Place>,
    task: tokio::task::JoinHandle<()>,
}

impl Beating {
    async fn start(broker: &Mosquitto, place: Place) -> Beating {
        let publisher = Publisher::connect(broker).await;
        let (tx, mut rx) = tokio::sync::watch::channel(place);
        let task = tokio::spawn(async move {
            let mut seq = 0;
            loop {
                let place = rx.borrow_and_update().clone();
                let q = QoS::AtLeastOnce;
                let birth = quick_birth(place.region, place.site, place.node, place.ts);
                publisher
                    .publish(&place.topic("birth"), birth, q, false)
                    .await;
                while !rx.has_changed().unwrap_or(false) {
                    seq += 1;
                    let hb = quick_heartbeat(place.ts, seq);
                    publisher.publish(&place.topic("hb"), hb, q, false).await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        });
        Beating { place: tx, task }
    }

    fn move_to(&self, place: Place) {
        self.place.send_replace(place);
    }
}

impl Drop for Beating {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One node's uptime row on the collector at `port` since `from` (an RFC 3339 stamp).
async fn node_uptime(port: u16, node: &str, from: &str) -> Value {
    let from = from.replace('+', "%2B");
    let report = get(port, &format!("/api/v1/uptime?from={from}&node={node}")).await;
    report["rows"][0].clone()
}

async fn wait_online(port: u16, node: &str) {
    wait_for(WAIT, &format!("{node} online"), || async {
        let n = get(port, &format!("/api/v1/nodes/{node}")).await;
        (n["state"] == "online").then_some(())
    })
    .await;
}

/// Shard east is killed while shard west runs: from its last sign of life, east's nodes
/// are unwatched (blind, not up or down) on every collector's report, west's stay watched;
/// east started again closes its own crashed run only. No notification at all.
#[tokio::test]
async fn a_killed_shards_regions_are_unwatched_while_the_other_shard_watches_its_own() {
    let url = Postgres::shared().create_database();
    let broker = Mosquitto::builder().start().await;
    let hook = WebhookReceiver::start().await;
    let mut east = shard(&broker, &hook, &url, "east", "lanzhou").await;
    let west = shard(&broker, &hook, &url, "west", "jiuquan").await;
    let e1 = Place::now("lanzhou", "lz-cg", "e1");
    let w1 = Place::now("jiuquan", "jq-sz", "w1");
    let _e1 = Beating::start(&broker, e1).await;
    let _w1 = Beating::start(&broker, w1).await;
    wait_online(east.http_port, "e1").await;
    wait_online(west.http_port, "w1").await;
    // Both watched and online from here on.
    let from = get(west.http_port, "/api/v1/uptime?since=1s").await["to"]
        .as_str()
        .expect("to")
        .to_owned();
    for node in ["e1", "w1"] {
        let row = wait_for(WAIT, &format!("{node} up for 2 s"), || async {
            let row = node_uptime(west.http_port, node, &from).await;
            (row["up_s"].as_f64().expect("up") >= 2.0).then_some(row)
        })
        .await;
        assert_eq!(row["coverage_pct"], 100.0, "{node} watched: {row}");
    }

    east.process.kill_and_reap();
    // East's run looks running until its last sign of life is `RUN_STALE` (10 s) old.
    let row = wait_for(
        Duration::from_secs(30),
        "e1 unwatched on west's report once east's run fell silent",
        || async {
            let row = node_uptime(west.http_port, "e1", &from).await;
            (row["coverage_pct"].as_f64().expect("coverage") < 90.0).then_some(row)
        },
    )
    .await;
    assert_eq!(
        row["availability_pct"], 100.0,
        "blind time is not down: {row}"
    );
    assert_eq!(row["outages"], 0, "{row}");
    let row = node_uptime(west.http_port, "w1", &from).await;
    assert_eq!(
        row["coverage_pct"], 100.0,
        "west's own node stays watched: {row}"
    );

    // East again: its crashed run ends at its last sign of life; west's run goes on.
    east.restart_in_place().await;
    wait_online(east.http_port, "e1").await;
    for c in [&east, &west] {
        let e = node_uptime(c.http_port, "e1", &from).await;
        assert!(
            e["coverage_pct"].as_f64().expect("coverage") < 90.0,
            "east's downtime stays unwatched: {e}"
        );
        let w = node_uptime(c.http_port, "w1", &from).await;
        assert_eq!(
            w["coverage_pct"], 100.0,
            "east's start did not end west's run: {w}"
        );
    }
    hook.assert_exactly(
        &[],
        &format!(
            "east:\n{}\nwest:\n{}",
            east.process.output_tail(30),
            west.process.output_tail(30)
        ),
    );
}

/// A node moves from east's region to west's (a new birth under its new place): west
/// takes it over, east forgets it at the deadline it would have judged it by, with no
/// transition and no notification. A node that really goes silent on east is still judged.
#[tokio::test]
async fn a_node_moved_to_another_shard_is_forgotten_by_its_old_shard_without_a_notification() {
    let url = Postgres::shared().create_database();
    let broker = Mosquitto::builder().start().await;
    let hook = WebhookReceiver::start().await;
    // Offline notified at once, so the test need not wait for `group_wait`.
    let alerts = "[alerts.node_offline]\ngroup_wait = \"0s\"\n";
    let east = shard_with(&broker, &hook, &url, "east", "lanzhou", alerts).await;
    let west = shard_with(&broker, &hook, &url, "west", "jiuquan", alerts).await;
    let logs = |east: &Collector, west: &Collector| {
        format!(
            "east:\n{}\nwest:\n{}",
            east.process.output_tail(30),
            west.process.output_tail(30)
        )
    };
    let moving = Place::now("lanzhou", "lz-cg", "m1");
    let silent = Place::now("lanzhou", "lz-qlh", "s1");
    let m1 = Beating::start(&broker, moving).await;
    let s1 = Beating::start(&broker, silent).await;
    wait_online(east.http_port, "m1").await;
    wait_online(east.http_port, "s1").await;

    m1.move_to(Place::now("jiuquan", "jq-sz", "m1"));
    wait_for(WAIT, "m1 in jiuquan, online", || async {
        let n = get(west.http_port, "/api/v1/nodes/m1").await;
        (n["region"] == "jiuquan" && n["state"] == "online").then_some(())
    })
    .await;
    // East hears m1 no more: by its offline deadline (3 s) it forgets m1, or (as before
    // the fix) notifies it offline.
    wait_for(WAIT, "east forgets m1 (or judges it)", || async {
        let judged = hook.keys().iter().any(|(_, subject, _)| subject == "m1");
        (judged || log_lines(&east, "forgotten") >= 1).then_some(())
    })
    .await;
    let history = get(west.http_port, "/api/v1/nodes/m1/history?since=1h").await;
    let judged: Vec<&Value> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|t| t["to"] != "online")
        .collect();
    assert!(judged.is_empty(), "m1 was only ever online: {history}");

    // s1 goes silent on east for real: judged offline and notified (the check a moved
    // node gets does not spare a silent one).
    drop(s1);
    wait_key(&hook, &k("node_offline", "s1", "firing"), WAIT).await;
    hook.assert_exactly(&[k("node_offline", "s1", "firing")], &logs(&east, &west));
}
