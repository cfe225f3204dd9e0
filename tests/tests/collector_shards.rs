//! Region shards on one PostgreSQL: two real `alarmnet-collector` processes, each serving
//! part of the province's regions, on a real PostgreSQL and a real Mosquitto, with the
//! simulator's 172 nodes over all 14 regions, scored by one webhook receiver.

mod collector_support;

use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Postgres, WebhookReceiver, wait_for};
use collector_support::{Collector, k, log_lines, sim, wait_key, workdir};
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
    let dir = workdir().keep();
    let extra = format!(
        "anonymous_read = true\n[[webhooks]]\nurl = \"{}\"\nretry_delay = \"100ms\"\n\
         [alerts.readiness_low]\nenabled = false\n",
        hook.url()
    );
    let regions: Vec<String> = regions.split(',').map(|r| format!("\"{r}\"")).collect();
    let store = format!("shard = \"{name}\"\nregions = [{}]", regions.join(", "));
    Collector::start_with_store(
        broker,
        &dir,
        &store,
        &extra,
        &[
            ("ALARMNET_STORE__URL", url),
            ("ALARMNET_MQTT__CLIENT_ID", &format!("collector-{name}")),
        ],
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
