//! Store-backed API reads at scale, through the real router over real HTTP on 127.0.0.1:
//! - 100 000 nodes: `/nodes?limit=100` (first page, and a deep page by cursor), a walk of
//!   every node by cursor, `/summary`, `/alerts?status=firing`;
//! - 10 000 nodes with 1 000 000 transitions over 30 days, on SQLite and on PostgreSQL (a
//!   server of the test harness, `alarmnet_e2e::Postgres`), their finished days in the
//!   daily summaries: `/uptime?since=30d&by=node` (summaries only), 30 days from mid-day
//!   to mid-day by node (29 days of summaries, two partial days of transitions), `by=region`.
//!
//! Targets: lists and summary well under 100 ms, uptime well under 200 ms. Each seed is written once
//! through the store's own write API in one transaction and kept under
//! `target/bench-data/` (named by schema version) for later runs.
//!
//! Run: `cargo bench -p alarmnet-collector --bench api_scale` (`-- uptime` or `-- lists`
//! for one part, `-- uptime sqlite` or `-- uptime postgres` for one engine). PostgreSQL's
//! seed is written anew each run (a minute, and three to summarize it), unless
//! `ALARMNET_BENCH_POSTGRES=postgres://…` names a database to seed once and reuse.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alarmnet_collector::api::{
    ApiState, Auth, AuthConfig, Control, EventHub, RecentMetrics, router, serve_with_store,
};
use alarmnet_collector::metrics::Metrics;
use alarmnet_collector::model::{
    Alert, AlertId, Cause, Liveness, RuleKind, Subject, Transition, UnixMillis,
};
use alarmnet_collector::store::{Db, Store, StoreError, days, schema};
use alarmnet_collector::uptime::{DEFAULT_TIME_ZONE, time_zone};
use alarmnet_protocol::{
    AlertStatus, Birth, Name, NodeId, NodePath, RegionId, Severity, SiteId, TestResult,
};
use serde_json::{Value, json};

mod common;
use common::{DAY, Lcg, NOW, REGISTERED, TRANSITIONS_PER_NODE, UPTIME_NODES, uptime_data};

const LIST_NODES: usize = 100_000;
const LIST_REGIONS: usize = 14;
const LIST_SITES_PER_REGION: usize = 100;
const LIST_ALERTS: usize = 100_000;

fn path(region: usize, site: usize, node: usize) -> NodePath {
    NodePath::new(
        RegionId::new(format!("r{region:02}")).expect("valid region"),
        SiteId::new(format!("r{region:02}-s{site:03}")).expect("valid site"),
        NodeId::new(format!("n{node:06}")).expect("valid node"),
    )
}

fn kind(i: usize) -> &'static str {
    if i % 3 == 0 { "display" } else { "siren" }
}

fn birth(p: &NodePath, kind: &str, ts: u64) -> Birth {
    serde_json::from_value(json!({
        "v": 1, "boot": "boot0001", "ts": ts, "node": p.node, "site": p.site,
        "region": p.region, "kind": kind, "name": format!("{} {kind}", p.node),
        "hb_interval_s": 10, "lat": 36.06, "lon": 103.83, "model": "WS-600",
        "checks": ["system", "amplifier"],
        "tags": {"region_name": format!("Region {}", p.region),
                 "site_name": format!("Site {}", p.site)}
    }))
    .expect("valid birth")
}

fn transition(node: &NodeId, from: Liveness, to: Liveness, at: u64, cause: Cause) -> Transition {
    Transition {
        node: node.clone(),
        from,
        to,
        at: UnixMillis::from_millis(at),
        cause,
    }
}

/// 100 000 nodes in 1 400 sites, mostly online, some offline, late or stopped; 100 000
/// alerts over 30 days, those of the offline nodes still firing; 1 % with an active fault.
fn seed_lists(db: &Db) -> Result<(), StoreError> {
    let mut rng = Lcg(0x5ca1e);
    let joined = NOW - 31 * DAY;
    let mut offline = Vec::new();
    for i in 0..LIST_NODES {
        let p = path(
            i % LIST_REGIONS,
            (i / LIST_REGIONS) % LIST_SITES_PER_REGION,
            i,
        );
        db.upsert_birth(
            &p,
            &birth(&p, kind(i), joined),
            UnixMillis::from_millis(joined),
        )?;
        let mut t = vec![transition(
            &p.node,
            Liveness::Unknown,
            Liveness::Online,
            joined,
            Cause::Birth,
        )];
        let at = NOW - rng.below(DAY);
        let to = match rng.below(100) {
            0..=2 => Some((Liveness::Offline, Cause::Will)),
            3 => Some((Liveness::Late, Cause::Timeout)),
            4 => Some((Liveness::Stopped, Cause::Shutdown)),
            _ => None,
        };
        if let Some((to, cause)) = to {
            t.push(transition(&p.node, Liveness::Online, to, at, cause));
            if to == Liveness::Offline {
                offline.push((p.clone(), at));
            }
        }
        db.record_transitions(&t)?;
        if rng.below(100) == 0 {
            let fault: alarmnet_protocol::Fault = serde_json::from_value(json!({
                "v": 1, "boot": "boot0001", "seq": 7, "ts": NOW - DAY, "check": "amplifier",
                "code": "no_load", "severity": "major", "status": "raised"
            }))
            .expect("valid fault");
            db.record_fault(&p.node, &fault, UnixMillis::from_millis(NOW - DAY))?;
        }
    }
    let alert = |p: &NodePath, started_at: u64, ended_at: Option<u64>| Alert {
        id: AlertId::new(started_at ^ p.node.as_str().len() as u64),
        rule: RuleKind::NodeOffline,
        severity: Severity::Critical,
        status: if ended_at.is_some() {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        },
        subject: Subject::Node {
            region: p.region.clone(),
            site: p.site.clone(),
            node: p.node.clone(),
        },
        kind: Some(Name::new("siren").expect("valid kind")),
        started_at: UnixMillis::from_millis(started_at),
        ended_at: ended_at.map(UnixMillis::from_millis),
        summary: format!("{} offline", p.node),
        args: Default::default(),
        ack: None,
        notified: true,
    };
    for i in 0..LIST_ALERTS - offline.len() {
        let p = path(
            i % LIST_REGIONS,
            (i / LIST_REGIONS) % LIST_SITES_PER_REGION,
            i,
        );
        let started = NOW - 30 * DAY + rng.below(29 * DAY);
        let mut a = alert(&p, started, Some(started + 1 + rng.below(3_600_000)));
        a.id = AlertId::new(0xa000_0000 + i as u64);
        db.upsert_alert(&a)?;
    }
    for (i, (p, at)) in offline.iter().enumerate() {
        let mut a = alert(p, *at, None);
        a.id = AlertId::new(0xf000_0000 + i as u64);
        db.upsert_alert(&a)?;
    }
    Ok(())
}

/// The uptime bench's data (same generator): 10 000 nodes, one birth 31 days back, then 99
/// changes spread over the 30-day window; 20 region silences of 4 h; two blind intervals.
/// The history the engine bench (`uptime`) reports on, stored, with a daily self-test of
/// every node (300 000 test receipts, 1 in 50 failed).
fn seed_uptime(db: &Db) -> Result<(), StoreError> {
    let data = uptime_data();
    let run = db.start_run(UnixMillis::from_millis(REGISTERED - DAY), None)?;
    let mut receipt: alarmnet_protocol::TestReceipt = serde_json::from_value(json!({
        "v": 1, "boot": "boot0001", "seq": 0, "ts": 0, "test": "silent", "result": "pass",
        "duration_ms": 4200
    }))
    .expect("valid receipt");
    let mut rng = Lcg(0x7e57);
    for n in &data.nodes {
        let birth = birth(&n.path, n.kind.as_str(), REGISTERED);
        db.upsert_birth(&n.path, &birth, UnixMillis::from_millis(REGISTERED))?;
        let time_of_day = rng.below(DAY);
        for day in 0..30 {
            receipt.seq = day;
            receipt.ts = NOW - 30 * DAY + day * DAY + time_of_day;
            receipt.result = if rng.below(50) == 0 {
                TestResult::Fail
            } else {
                TestResult::Pass
            };
            db.record_test(&n.path.node, &receipt, UnixMillis::from_millis(receipt.ts))?;
        }
    }
    db.record_transitions(&data.transitions)?;
    for silence in &data.silences {
        db.upsert_silence(silence)?;
    }
    let edges: Vec<(bool, UnixMillis)> = data
        .blind
        .iter()
        .map(|&(from, to)| (UnixMillis::from_millis(from), UnixMillis::from_millis(to)))
        .flat_map(|(from, to)| [(true, from), (false, to)])
        .collect();
    db.blind_edges(run, &edges)?;
    db.run_alive(run, UnixMillis::from_millis(NOW))?;
    Ok(())
}

fn data_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("bench-data")
}

/// Copies the write-ahead log into the database and empties it, as the running collector's
/// automatic checkpoints keep it small (a seed's one huge transaction leaves it full).
fn checkpoint(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("open for a checkpoint");
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
}

/// The store at `target/bench-data/<name>-v<schema>.db`, seeded by `seed` (in one
/// transaction) unless an earlier run finished seeding it.
async fn seeded(name: &str, seed: fn(&Db) -> Result<(), StoreError>) -> Store {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    let db = dir.join(format!("{name}-v{}.db", schema::MIGRATIONS.len()));
    let done = db.with_extension("done");
    if !done.exists() {
        for ext in ["db", "db-wal", "db-shm"] {
            let _ = std::fs::remove_file(db.with_extension(ext));
        }
        let started = Instant::now();
        let store = Store::open(&db, Arc::new(Metrics::new())).expect("open the store");
        store.call(seed).await.expect("seed");
        checkpoint(&db);
        std::fs::write(&done, b"").expect("mark the seed done");
        println!("seeded {} in {:.1?}", db.display(), started.elapsed());
        return store;
    }
    checkpoint(&db);
    Store::open(&db, Arc::new(Metrics::new())).expect("open the store")
}

/// Serves the API over `store` on 127.0.0.1:0 with the clock at [`NOW`]; returns its base URL.
async fn serve(store: Store) -> String {
    let tz = time_zone(DEFAULT_TIME_ZONE).expect("the time zone database has Asia/Shanghai");
    let events = EventHub::new(UnixMillis::from_millis(NOW), 4096, 1024, tz.clone());
    let (control, rx) = Control::channel(8);
    tokio::spawn(serve_with_store(rx, store.clone(), events.clone()));
    let auth = Auth::new(&AuthConfig {
        anonymous_read: true,
        tokens: Vec::new(),
    });
    let state = ApiState::new(store, events, control, auth, RecentMetrics::new(4), tz)
        .with_clock(Arc::new(|| UnixMillis::from_millis(NOW)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    format!("http://{addr}")
}

async fn get(client: &reqwest::Client, url: &str) -> (Value, usize) {
    let r = client.get(url).send().await.expect("request");
    let status = r.status();
    let body = r.bytes().await.expect("body");
    assert!(
        status.is_success(),
        "{url}: {status} {}",
        String::from_utf8_lossy(&body)
    );
    (serde_json::from_slice(&body).expect("JSON"), body.len())
}

/// Times `runs` requests of `path` (until the whole body is received, not parsed) after one
/// warm-up; prints min, median and max.
async fn measure(client: &reqwest::Client, base: &str, label: &str, path: &str, runs: usize) {
    let url = format!("{base}{path}");
    let (_, bytes) = get(client, &url).await;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let r = client.get(&url).send().await.expect("request");
        assert!(r.status().is_success(), "{url}: {}", r.status());
        let body = r.bytes().await.expect("body");
        times.push(started.elapsed());
        assert_eq!(body.len(), bytes, "{url}: the answer changed");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<44} min {:>8.1} ms  median {:>8.1} ms  max {:>8.1} ms  ({} runs, {} kB)",
        ms(times[0]),
        ms(times[runs / 2]),
        ms(times[runs - 1]),
        runs,
        bytes / 1000
    );
}

/// The cursor `pages` pages of `limit` nodes deep, following `next_cursor`.
async fn cursor_after(client: &reqwest::Client, base: &str, pages: usize, limit: usize) -> String {
    let mut cursor: Option<String> = None;
    for _ in 0..pages {
        let mut url = format!("{base}/api/v1/nodes?limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (page, _) = get(client, &url).await;
        cursor = page["next_cursor"].as_str().map(str::to_owned);
    }
    cursor.expect("the list is deeper than that")
}

async fn lists(client: &reqwest::Client) {
    let base = serve(seeded("api-lists", seed_lists).await).await;
    println!("-- {LIST_NODES} nodes, {LIST_ALERTS} alerts");
    measure(
        client,
        &base,
        "/nodes?limit=100 (first page)",
        "/api/v1/nodes?limit=100",
        20,
    )
    .await;
    let deep = cursor_after(client, &base, 90, 1000).await;
    let path = format!("/api/v1/nodes?limit=100&cursor={deep}");
    measure(
        client,
        &base,
        "/nodes?limit=100 (page after 90 000 nodes)",
        &path,
        20,
    )
    .await;
    measure(
        client,
        &base,
        "/nodes?state=offline,late&limit=100",
        "/api/v1/nodes?state=offline,late&limit=100",
        20,
    )
    .await;
    measure(
        client,
        &base,
        "/nodes?region=r03&kind=siren&limit=1000",
        "/api/v1/nodes?region=r03&kind=siren&limit=1000",
        20,
    )
    .await;
    measure(client, &base, "/summary", "/api/v1/summary", 20).await;
    measure(
        client,
        &base,
        "/alerts?status=firing",
        "/api/v1/alerts?status=firing",
        20,
    )
    .await;
    measure(
        client,
        &base,
        "/alerts (all, newest 100)",
        "/api/v1/alerts",
        20,
    )
    .await;
    let started = Instant::now();
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/v1/nodes?limit=1000");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (page, _) = get(client, &url).await;
        seen += page["items"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, LIST_NODES);
    println!(
        "{:<44} {:>12.1} ms  (100 pages of 1000)",
        "walk of every node by cursor",
        started.elapsed().as_secs_f64() * 1000.0
    );
}

/// Folds the seeded history's finished days into the daily summaries, and those into
/// blocks of several days, as the retention task does an hour after each day ends (a
/// round that finds nothing to do once done: the marks are in the store).
async fn summarize(store: &Store) {
    let now = UnixMillis::from_millis(NOW);
    let started = Instant::now();
    let tz = time_zone(DEFAULT_TIME_ZONE).expect("zone");
    let later = now + Duration::from_secs(2 * 3_600);
    let token = tokio_util::sync::CancellationToken::new();
    let n = days::summarize(store, &tz, later, &token)
        .await
        .expect("summarize");
    println!(
        "summarized {n} node-days and blocks in {:.1?}",
        started.elapsed()
    );
}

/// The uptime reports over [`seed_uptime`]'s history, on `store`; returns the body of the
/// 30-day report by node (to compare the engines' answers).
async fn uptime(client: &reqwest::Client, engine: &str, store: Store) -> String {
    summarize(&store).await;
    let base = serve(store).await;
    println!(
        "-- {engine}: {UPTIME_NODES} nodes, {} transitions and {} test receipts over 30 days",
        UPTIME_NODES * TRANSITIONS_PER_NODE,
        UPTIME_NODES * 30
    );
    // What the report says of the whole network, as a check that it read everything.
    let network: Value = client
        .get(format!("{base}/api/v1/uptime?since=30d&by=network"))
        .send()
        .await
        .expect("network report")
        .json()
        .await
        .expect("json");
    let row = &network["rows"][0];
    println!(
        "network: availability {:.3} %, {} outages, {} tests, {:.2} % passed",
        row["availability_pct"].as_f64().unwrap_or(f64::NAN),
        row["outages"],
        row["tests"],
        row["test_pass_pct"].as_f64().unwrap_or(f64::NAN)
    );
    // 30 whole days: the summaries alone. Then 30 days from and to mid-day, ending before
    // now (midnight): 29 days of summaries and two partial days of transitions.
    let partial = "/api/v1/uptime?from=2026-10-01T13:00:00%2B08:00\
                   &to=2026-10-31T13:00:00%2B08:00&by=node";
    for (label, path) in [
        (
            "/uptime?since=30d&by=node",
            "/api/v1/uptime?since=30d&by=node",
        ),
        ("/uptime 30 days by node, two partial days", partial),
        (
            "/uptime?since=30d&by=region",
            "/api/v1/uptime?since=30d&by=region",
        ),
        (
            "/uptime?since=30d&by=region&region=r03",
            "/api/v1/uptime?since=30d&by=region&region=r03",
        ),
    ] {
        measure(client, &base, label, path, 5).await;
    }
    let r = client
        .get(format!("{base}{partial}"))
        .send()
        .await
        .expect("report");
    r.text().await.expect("body")
}

/// The uptime history on PostgreSQL, seeded through the store like SQLite's: on a fresh
/// database of a server of the test harness's, or on the database that
/// `ALARMNET_BENCH_POSTGRES` names (a URL), seeded on the first run and kept for later ones.
async fn postgres_store() -> (Store, Option<&'static alarmnet_e2e::Postgres>) {
    let (url, server) = match std::env::var("ALARMNET_BENCH_POSTGRES") {
        Ok(url) => (url, None),
        Err(_) => {
            let server = alarmnet_e2e::Postgres::shared();
            (server.create_database(), Some(server))
        }
    };
    let store = Store::connect(&url, None, Arc::new(Metrics::new())).expect("connect");
    let seeded = store
        .read(|db| db.last_alive(None))
        .await
        .expect("read the run log");
    if seeded.is_none() {
        let started = Instant::now();
        store.call(seed_uptime).await.expect("seed");
        println!("seeded PostgreSQL in {:.1?}", started.elapsed());
    }
    (store, server)
}

fn main() {
    // `cargo bench` passes `--bench`; a test run of benches (`cargo test --benches`) does not.
    if !std::env::args().any(|a| a == "--bench") {
        println!("api_scale: run with `cargo bench -p alarmnet-collector --bench api_scale`");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // `cargo bench ... -- uptime` runs only the uptime part; `-- lists` only the lists.
    let only = |part: &str| {
        let parts = ["lists", "uptime"];
        let named: Vec<String> = std::env::args()
            .filter(|a| parts.contains(&a.as_str()))
            .collect();
        named.is_empty() || named.iter().any(|a| a == part)
    };
    runtime.block_on(async {
        let client = reqwest::Client::new();
        if only("lists") {
            lists(&client).await;
        }
        if only("uptime") {
            // `-- uptime sqlite` or `-- uptime postgres`: one engine only.
            let engine = |name: &str| {
                let args: Vec<String> = std::env::args().collect();
                !args.iter().any(|a| a == "sqlite" || a == "postgres")
                    || args.iter().any(|a| a == name)
            };
            let mut answers = Vec::new();
            if engine("sqlite") {
                let sqlite = seeded("api-uptime-tests", seed_uptime).await;
                answers.push(uptime(&client, "SQLite", sqlite).await);
            }
            if engine("postgres") {
                let (store, _server) = postgres_store().await;
                answers.push(uptime(&client, "PostgreSQL", store).await);
            }
            if let [on_sqlite, on_postgres] = &answers[..] {
                assert_eq!(on_sqlite, on_postgres, "the engines answer alike");
                println!(
                    "both engines gave the same report ({} kB)",
                    on_sqlite.len() / 1000
                );
            }
        }
    });
}
