//! Active and standby on one PostgreSQL: two real `alarmnet-collector` processes on a real
//! PostgreSQL and a real Mosquitto, 500 simulated nodes and two real agents, scored by a
//! webhook receiver against the exact list of notifications.

mod collector_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use alarmnet_e2e::{Mosquitto, Postgres, Process, WebhookReceiver, binary, wait_for};
use collector_support::{Collector, Events, k, sim, wait_key, workdir};
use serde_json::Value;

/// The lease: the standby takes over within this long of the active collector stopping.
const LEASE: Duration = Duration::from_secs(3);
const SIM_NODES: u64 = 500;
const WAIT: Duration = Duration::from_secs(60);

async fn start_collector(
    broker: &Mosquitto,
    hook: &WebhookReceiver,
    url: &str,
    name: &str,
) -> Collector {
    start_collector_with(broker, hook, url, name, LEASE).await
}

/// [`start_collector`] with its own lease.
async fn start_collector_with(
    broker: &Mosquitto,
    hook: &WebhookReceiver,
    url: &str,
    name: &str,
    lease: Duration,
) -> Collector {
    let dir = workdir().keep();
    let extra = format!(
        "anonymous_read = true\n[[webhooks]]\nurl = \"{}\"\nretry_delay = \"100ms\"\n\
         [alerts.readiness_low]\nenabled = false\n[alerts.node_offline]\ngroup_wait = \"0s\"\n",
        hook.url()
    );
    let lease = format!("{}s", lease.as_secs());
    Collector::start_with_env(
        broker,
        &dir,
        &extra,
        &[
            ("ALARMNET_STORE__URL", url),
            ("ALARMNET_STORE__LEASE", &lease),
            ("ALARMNET_MQTT__CLIENT_ID", name),
        ],
    )
    .await
}

/// A PostgreSQL store, a broker and a webhook receiver, with two collectors on them:
/// `a` active, `b` standby.
struct ActiveAndStandby {
    postgres: Postgres,
    url: String,
    broker: Mosquitto,
    hook: WebhookReceiver,
    a: Collector,
    b: Collector,
}

async fn active_and_standby() -> ActiveAndStandby {
    let postgres = Postgres::start();
    let url = postgres.create_database();
    let broker = Mosquitto::builder().start().await;
    let hook = WebhookReceiver::start().await;
    let a = start_collector(&broker, &hook, &url, "collector-a").await;
    wait_role(&a, "active").await;
    let b = start_collector(&broker, &hook, &url, "collector-b").await;
    wait_role(&b, "standby").await;
    ActiveAndStandby {
        postgres,
        url,
        broker,
        hook,
        a,
        b,
    }
}

async fn get(port: u16, path: &str) -> reqwest::Result<reqwest::Response> {
    reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
}

async fn readyz(port: u16) -> String {
    match get(port, "/readyz").await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("error: {e}"),
    }
}

/// Waits until `/readyz` names `role` (the lease is tried just after the start).
async fn wait_role(c: &Collector, role: &str) {
    let want = format!("ready ({role})\n");
    wait_for(
        Duration::from_secs(10),
        &format!("{role} on :{}", c.http_port),
        || async { (readyz(c.http_port).await == want).then_some(()) },
    )
    .await;
}

async fn count(port: u16, states: &str) -> u64 {
    let v: Value = get(port, &format!("/api/v1/nodes?state={states}&limit=1"))
        .await
        .expect("nodes")
        .json()
        .await
        .expect("json");
    v["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("a total: {v}"))
}

/// A real agent, alone in its own region (so that it going offline is a node alert, not
/// an outage).
fn agent(dir: &std::path::Path, broker: &Mosquitto, node: &str) -> Process {
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"{node}\"\nsite = \"site-{node}\"\nregion = \"{node}\"\n\
             kind = \"siren\"\n[mqtt]\nbrokers = [\"{}\"]\n\
             heartbeat_interval = \"1s\"\nkeep_alive = \"2s\"\n[spool]\ndir = \"{}\"\n",
            broker.url(),
            dir.join(format!("spool-{node}")).display(),
        ),
    )
    .expect("agent config");
    Process::builder(binary("alarmnet-agent"))
        .name(format!("agent:{node}"))
        .args(["run", "--config"])
        .arg(&config)
        .spawn()
}

/// kill -9 of the active collector under load, while a siren is killed: the standby takes
/// over within the lease, the siren's `node_offline` is notified once, no other node goes
/// offline, an alert the old active notified is neither lost nor sent again (its
/// resolution comes from the new active), one `collector_failover` notice, and the
/// standby's API answers throughout.
#[tokio::test]
async fn kill_9_of_the_active_collector_hands_over_without_loss_or_duplicate() {
    let ActiveAndStandby {
        postgres,
        url,
        broker,
        hook,
        mut a,
        b,
    } = active_and_standby().await;
    assert_eq!(
        b.metric("alarmnet_collector_role{role=\"standby\"}").await,
        1.0
    );

    let dir = workdir();
    let _sim = sim(dir.path(), &broker, SIM_NODES, "");
    let mut siren = agent(dir.path(), &broker, "ha-siren");
    let mut earlier = agent(dir.path(), &broker, "ha-earlier");
    let all = SIM_NODES + 2;
    wait_for(
        WAIT,
        "every node online (seen by the standby's API)",
        || async { (count(b.http_port, "online").await == all).then_some(()) },
    )
    .await;

    // The standby's readiness page counts every node (read from the store).
    wait_for(WAIT, "the standby's readiness page", || async {
        let v: Value = get(b.http_port, "/api/v1/readiness")
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v["network"]["nodes"]["total"].as_u64() == Some(all)).then_some(())
    })
    .await;

    // An alert the active collector notifies before it dies; its transition reaches the
    // standby's event stream (relayed through the store).
    let mut events = Events::open(b.http_port).await;
    earlier.kill_and_reap();
    let offline = events
        .next("state", Duration::from_secs(15), |d| {
            d["node"] == "ha-earlier" && d["to"] == "offline"
        })
        .await;
    assert!(
        offline.is_some(),
        "the standby's event stream shows the active's transition"
    );
    wait_key(&hook, &k("node_offline", "ha-earlier", "firing"), WAIT).await;

    // The standby's API answers throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let poller = {
        let (stop, answered, failed, port) =
            (stop.clone(), answered.clone(), failed.clone(), b.http_port);
        tokio::spawn(async move {
            while !stop.load(Relaxed) {
                match get(port, "/api/v1/nodes?limit=5").await {
                    Ok(r) if r.status().is_success() => answered.fetch_add(1, Relaxed),
                    _ => failed.fetch_add(1, Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Its delivery logged by both outputs (mqtt, webhook-0): a collector killed between
    // sending and logging sends again (at least once), which is not what is scored here.
    let db = url.rsplit('/').next().expect("a database name");
    wait_for(WAIT, "the earlier alert's deliveries logged", || async {
        let done = postgres.psql(db, "SELECT count(*) FROM notification_log WHERE done <> 0");
        (done.trim() == "2").then_some(())
    })
    .await;
    let t0 = Instant::now();
    a.process.kill_and_reap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    siren.kill_and_reap();
    wait_for(WAIT, "the standby active", || async {
        (readyz(b.http_port).await == "ready (active)\n").then_some(())
    })
    .await;
    let took = t0.elapsed();
    println!("kill -9 of the active collector → the standby active: {took:?} (lease {LEASE:?})");
    assert!(
        took <= LEASE + Duration::from_secs(2),
        "takeover took {took:?}\n{}",
        b.process.output_tail(40)
    );
    wait_key(&hook, &k("node_offline", "ha-siren", "firing"), WAIT).await;
    let restarted = agent(dir.path(), &broker, "ha-earlier");
    wait_key(&hook, &k("node_offline", "ha-earlier", "resolved"), WAIT).await;

    // Settle past every timeout, then score.
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Relaxed);
    poller.await.expect("poller");
    hook.assert_exactly(
        &[
            k("node_offline", "ha-earlier", "firing"),
            k("collector_failover", "-", "firing"),
            k("node_offline", "ha-siren", "firing"),
            k("node_offline", "ha-earlier", "resolved"),
        ],
        &b.process.output_tail(60),
    );
    assert_eq!(
        count(b.http_port, "offline").await,
        1,
        "only the killed siren is offline"
    );
    assert_eq!(count(b.http_port, "online").await, all - 1);
    println!(
        "API on the standby during the handover: {} answered, {} failed",
        answered.load(Relaxed),
        failed.load(Relaxed)
    );
    assert_eq!(failed.load(Relaxed), 0);
    assert!(answered.load(Relaxed) > 10);
    assert_eq!(
        b.metric("alarmnet_collector_role{role=\"active\"}").await,
        1.0
    );

    // A clean stop gives the lease up: a new standby takes over at once, not after the
    // lease, and says so once more.
    let mut b = b;
    let c = start_collector(&broker, &hook, &url, "collector-c").await;
    wait_role(&c, "standby").await;
    let t1 = Instant::now();
    b.process.signal("TERM");
    wait_for(WAIT, "the new standby active", || async {
        (readyz(c.http_port).await == "ready (active)\n").then_some(())
    })
    .await;
    let took = t1.elapsed();
    let stopped = b.process.wait_exit(Duration::from_secs(10)).await;
    assert!(
        stopped.is_some_and(|s| s.success()),
        "a clean stop: {stopped:?}"
    );
    println!("SIGTERM of the active collector → the standby active: {took:?}");
    assert!(
        took < LEASE / 2,
        "took {took:?}: the lease was not given up"
    );
    wait_key(&hook, &k("collector_failover", "-", "firing"), WAIT).await;
    drop(restarted);
}

/// An active collector that stalls (SIGSTOP) past its lease while a siren dies: the
/// standby takes over and notifies the siren once. When the stalled one wakes (SIGCONT) it
/// still holds in its socket what it heard before the stall and the siren's death, and
/// judges on it; but the lease is no longer its own, so it commits nothing, notifies
/// nothing (no second `node_offline`, no `store_failed` for the refused commits), and
/// stops with an error.
#[tokio::test]
async fn a_stalled_active_collector_wakes_up_fenced_and_silent() {
    // The database must live as long as the collectors (`..` would drop it here).
    let ActiveAndStandby {
        postgres: _postgres,
        broker,
        hook,
        mut a,
        b,
        ..
    } = active_and_standby().await;

    let dir = workdir();
    let _sim = sim(dir.path(), &broker, 100, "");
    let mut siren = agent(dir.path(), &broker, "ha-siren");
    wait_for(WAIT, "every node online", || async {
        (count(b.http_port, "online").await == 101).then_some(())
    })
    .await;

    let t0 = Instant::now();
    a.process.signal("STOP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    siren.kill_and_reap();
    wait_for(WAIT, "the standby active", || async {
        (readyz(b.http_port).await == "ready (active)\n").then_some(())
    })
    .await;
    let took = t0.elapsed();
    println!("SIGSTOP of the active collector → the standby active: {took:?} (lease {LEASE:?})");
    assert!(
        took <= LEASE + Duration::from_secs(2),
        "takeover took {took:?}"
    );
    wait_key(&hook, &k("node_offline", "ha-siren", "firing"), WAIT).await;

    // Stalled well past the siren's timeout, then awake.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.process.signal("CONT");
    let stopped = a.process.wait_exit(Duration::from_secs(15)).await;
    assert!(
        stopped.is_some_and(|s| !s.success()),
        "the woken collector stops with an error: {stopped:?}\n{}",
        a.process.output_tail(30)
    );
    assert!(
        a.process.output_tail(200).contains("lease"),
        "it says why: {}",
        a.process.output_tail(30)
    );

    // Settle past the retry delays of every output, then score.
    tokio::time::sleep(Duration::from_secs(3)).await;
    hook.assert_exactly(
        &[
            k("collector_failover", "-", "firing"),
            k("node_offline", "ha-siren", "firing"),
        ],
        &a.process.output_tail(60),
    );
    assert_eq!(count(b.http_port, "offline").await, 1, "only the siren");
}

/// The database goes away (every connection dropped, new ones refused) for a few seconds,
/// shorter than the lease, while a siren dies: the collector raises `store_failed`,
/// notifies the siren at once all the same, connects again once the database is back,
/// commits what it held (the siren's offline history) and resolves `store_failed`.
#[tokio::test]
async fn a_database_outage_is_alerted_and_what_was_held_is_committed_after() {
    let postgres = Postgres::start();
    let url = postgres.create_database();
    let db = url.rsplit('/').next().expect("a database name").to_owned();
    let broker = Mosquitto::builder().start().await;
    let hook = WebhookReceiver::start().await;
    let c =
        start_collector_with(&broker, &hook, &url, "collector-a", Duration::from_secs(30)).await;
    wait_role(&c, "active").await;
    let work = workdir();
    let _sim = sim(work.path(), &broker, 50, "");
    let mut siren = agent(work.path(), &broker, "db-siren");
    wait_for(WAIT, "every node online", || async {
        (count(c.http_port, "online").await == 51).then_some(())
    })
    .await;

    postgres.cut_off(&db);
    siren.kill_and_reap();
    wait_key(&hook, &k("store_failed", "-", "firing"), WAIT).await;
    wait_key(&hook, &k("node_offline", "db-siren", "firing"), WAIT).await;
    assert!(c.metric("alarmnet_store_failing").await >= 1.0);

    postgres.let_in(&db);
    wait_key(&hook, &k("store_failed", "-", "resolved"), WAIT).await;
    assert_eq!(
        count(c.http_port, "offline").await,
        1,
        "the siren, committed"
    );
    let history: Value = get(c.http_port, "/api/v1/nodes/db-siren/history")
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    let offline = history["items"].as_array().is_some_and(|items| {
        items
            .iter()
            .any(|t| t["from"] == "online" && t["to"] == "offline")
    });
    assert!(offline, "the held transition is in the history: {history}");
    hook.assert_exactly(
        &[
            k("store_failed", "-", "firing"),
            k("node_offline", "db-siren", "firing"),
            k("store_failed", "-", "resolved"),
        ],
        &c.process.output_tail(40),
    );
}
