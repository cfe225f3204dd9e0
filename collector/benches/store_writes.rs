//! What the store commits per second, on each engine (an SQLite file, and a PostgreSQL
//! server started here on a free loopback port, fsync on): at 100 000 registered nodes,
//! - node registrations (births), in transactions of 10 000;
//! - "last heard" flushes (`touch`): the core's once-a-second write, 10 000 nodes each
//!   (100 000 nodes beating every 10 s);
//! - liveness transitions, in batches of 10 000.
//!
//! Prints rows per second of each. Run: `cargo bench -p alarmnet-collector --bench
//! store_writes`. These are the store figures of `docs/scale.md`.

use std::sync::Arc;
use std::time::Instant;

use alarmnet_collector::metrics::Metrics;
use alarmnet_collector::model::{Cause, Liveness, Transition, UnixMillis};
use alarmnet_collector::store::{Heard, Store};
use alarmnet_protocol::{Birth, NodeId, NodePath, RegionId, SiteId};

const NODES: usize = 100_000;
const BATCH: usize = 10_000;
const ROUNDS: usize = 10;
const T0: u64 = 1_790_000_000_000;

fn path(i: usize) -> NodePath {
    NodePath::new(
        RegionId::new(format!("r{:02}", i % 14)).expect("id"),
        SiteId::new(format!("s{:04}", i % 2000)).expect("id"),
        NodeId::new(format!("n{i:06}")).expect("id"),
    )
}

async fn measure(engine: &str, store: &Store) {
    let started = Instant::now();
    for chunk in (0..NODES).collect::<Vec<_>>().chunks(BATCH) {
        let chunk = chunk.to_vec();
        store
            .call(move |db| {
                for i in chunk {
                    let p = path(i);
                    let b: Birth = serde_json::from_value(serde_json::json!({
                        "v": 1, "boot": "bench0001", "ts": T0, "node": p.node,
                        "site": p.site, "region": p.region, "kind": "siren",
                        "hb_interval_s": 10
                    }))
                    .expect("birth");
                    db.upsert_birth(&p, &b, UnixMillis::from_millis(T0))?;
                }
                Ok(())
            })
            .await
            .expect("births");
    }
    report(engine, "births", NODES, started);

    let started = Instant::now();
    for round in 0..ROUNDS {
        let heard: Vec<Heard> = (0..BATCH)
            .map(|i| {
                let n = round * BATCH + i;
                Heard {
                    node: path(n % NODES).node,
                    at: UnixMillis::from_millis(T0 + 1_000 * (round as u64 + 1)),
                    seq: Some(("bench0001".to_owned(), round as u64 + 1)),
                }
            })
            .collect();
        store.call(move |db| db.touch(&heard)).await.expect("touch");
    }
    report(
        engine,
        "last-heard updates (touch)",
        ROUNDS * BATCH,
        started,
    );

    let started = Instant::now();
    for round in 0..ROUNDS {
        let transitions: Vec<Transition> = (0..BATCH)
            .map(|i| Transition {
                node: path((round * BATCH + i) % NODES).node,
                from: Liveness::Online,
                to: Liveness::Offline,
                at: UnixMillis::from_millis(T0 + 100_000 + round as u64),
                cause: Cause::Timeout,
            })
            .collect();
        store
            .record_transitions(transitions)
            .await
            .expect("transitions");
    }
    report(engine, "transitions", ROUNDS * BATCH, started);
}

fn report(engine: &str, what: &str, rows: usize, started: Instant) {
    let s = started.elapsed().as_secs_f64();
    println!(
        "{engine:>10}  {what:<28} {rows:>7} rows in {s:>6.2} s = {:>8.0} rows/s",
        rows as f64 / s
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite =
        Store::open(&dir.path().join("bench.db"), Arc::new(Metrics::new())).expect("sqlite store");
    rt.block_on(measure("sqlite", &sqlite));
    drop(sqlite);
    let mut server = alarmnet_e2e::Postgres::start_durable();
    let url = server.create_database();
    let postgres = Store::connect(&url, None, Arc::new(Metrics::new())).expect("postgres store");
    rt.block_on(measure("postgres", &postgres));
    drop(postgres);
    server.stop();
}
