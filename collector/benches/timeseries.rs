//! End-to-end throughput of the time-series sink into a real VictoriaMetrics
//! (`/usr/bin/victoria-metrics`, started here on a free loopback port, stopped at the end).
//!
//! `cargo bench -p alarmnet-collector --bench timeseries -- [--points N] [--rate R] [--gzip]`
//!
//! - burst (default): submits N heartbeat points (6 fields, 4 tags) as fast as one task can
//!   and reports points per second from the first submit until the database accepted all.
//! - `--null`: an in-process endpoint that reads each request and answers 204 stands in for
//!   the database, to measure the sink's own ceiling.
//! - `--rate R`: submits R points per second for N/R seconds and reports the deepest
//!   memory buffer seen, spool use and how long after the last submit everything was
//!   written: the sink keeps up when the buffer stays near one batch and nothing spools.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alarmnet_collector::timeseries::{NodeTags, Point, Sink, SinkConfig};
use alarmnet_protocol::{
    BootId, Heartbeat, MetricName, Metrics, Name, NodeId, RegionId, SiteId, V1,
};
use tokio::time::Instant;

/// The database process and its storage, both gone on drop.
struct Vm(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_vm() -> (Vm, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("storage");
    let child = Command::new("/usr/bin/victoria-metrics")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", dir.path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start victoria-metrics");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "victoria-metrics not healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Vm(child, dir), url)
}

/// An HTTP endpoint that reads every request body and answers 204: the sink's own ceiling.
async fn start_null() -> String {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                loop {
                    let mut len = 0usize;
                    let mut chunked = false;
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("transfer-encoding")
                        {
                            chunked = v.trim().eq_ignore_ascii_case("chunked");
                        }
                    }
                    if chunked {
                        // A gzip body arrives in chunks: `size (hex)\r\n data \r\n`, size 0 last.
                        loop {
                            line.clear();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let size = usize::from_str_radix(line.trim_end(), 16).unwrap_or(0);
                            let mut chunk = vec![0u8; size + 2];
                            if stream.read_exact(&mut chunk).await.is_err() {
                                return;
                            }
                            if size == 0 {
                                break;
                            }
                        }
                    } else {
                        let mut body = vec![0u8; len];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                    }
                    let reply = b"HTTP/1.1 204 No Content\r\n\r\n";
                    if stream.get_mut().write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

fn nodes(count: usize) -> Vec<NodeTags> {
    (0..count)
        .map(|i| NodeTags {
            region: RegionId::new(format!("region-{}", i % 14)).expect("id"),
            site: SiteId::new(format!("site-{}", i % 700)).expect("id"),
            node: NodeId::new(format!("node-{i:06}")).expect("id"),
            kind: Name::new(if i % 3 == 0 { "display" } else { "siren" }).expect("name"),
        })
        .collect()
}

fn heartbeat(node: &NodeTags, seq: u64, ts: u64) -> Point {
    let mut metrics = Metrics::new();
    for (name, v) in [
        ("battery_v", 12.0 + (seq % 10) as f64 / 10.0),
        ("temperature_c", 30.5),
        ("cpu_pct", 3.25),
        ("mem_pct", 41.0),
    ] {
        metrics
            .insert(MetricName::new(name).expect("name"), v)
            .expect("metric");
    }
    Point::heartbeat(
        node,
        &Heartbeat {
            v: V1,
            boot: BootId::from_random(1),
            seq,
            ts,
            uptime_s: Some(seq * 10),
            metrics,
            checks: None,
            faults: None,
            replay: false,
        },
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(|v| v.parse::<u64>().expect("a number"))
    };
    let points = value("--points").unwrap_or(2_000_000);
    let rate = value("--rate");
    let gzip = args.iter().any(|a| a == "--gzip");
    let null = args.iter().any(|a| a == "--null");

    let (_vm, url) = if null {
        (None, start_null().await)
    } else {
        let (vm, url) = start_vm().await;
        (Some(vm), url)
    };
    let mut config = SinkConfig::new(&url, "bench", "bench", "");
    config.gzip = gzip;
    config.max_buffer_points = 4_000_000;
    let sink = Sink::start(&config.build().expect("valid sink config")).expect("sink");
    let fleet = nodes(100_000);
    let base = now_ms() - 3_600_000;

    // Warm-up: one heartbeat per node, so the database has created every series (new
    // series are far slower to ingest than samples of known ones) before timing starts.
    let warm = fleet.len() as u64;
    for (i, node) in fleet.iter().enumerate() {
        sink.submit(heartbeat(node, 0, base - 60_000 + i as u64 / 100));
    }
    sink.flush().await;
    while sink.counters().points_written < warm {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("warm-up: {warm} series sets created");

    // Encode outside the timed part: the sink's cost starts at submit.
    let batch: Vec<Point> = (0..points)
        .map(|i| heartbeat(&fleet[(i % 100_000) as usize], i, base + i / 100))
        .collect();
    let bytes: usize = batch.iter().map(|p| p.as_line().len() + 1).sum();

    let started = Instant::now();
    let mut max_depth = 0u64;
    match rate {
        None => {
            for p in batch {
                sink.submit(p);
            }
        }
        Some(rate) => {
            let per_tick = (rate / 100).max(1);
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut it = batch.into_iter();
            'outer: loop {
                tick.tick().await;
                for _ in 0..per_tick {
                    match it.next() {
                        Some(p) => sink.submit(p),
                        None => break 'outer,
                    }
                }
                let c = sink.counters();
                max_depth = max_depth.max(c.buffer_points + c.inflight_points);
            }
        }
    }
    let submitted = started.elapsed();
    sink.flush().await;
    while sink.counters().points_written < warm + points {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let total = started.elapsed();
    let c = sink.shutdown(Duration::from_secs(10)).await;

    println!(
        "time-series sink → {}: {points} points ({:.0} bytes/point), gzip {gzip}, batch {}",
        if null {
            "null endpoint"
        } else {
            "VictoriaMetrics"
        },
        bytes as f64 / points as f64,
        config.batch_size
    );
    println!(
        "  submit: {:.0} ns/point ({:.2} s)",
        submitted.as_nanos() as f64 / points as f64,
        submitted.as_secs_f64()
    );
    match rate {
        None => println!(
            "  end to end: {:.0} points/s ({:.2} s until all were accepted)",
            points as f64 / total.as_secs_f64(),
            total.as_secs_f64()
        ),
        Some(rate) => println!(
            "  paced at {rate}/s: deepest buffer {max_depth} points, all written {:.0} ms after the last submit",
            (total - submitted).as_secs_f64() * 1000.0
        ),
    }
    println!(
        "  written {}, retries {}, spooled {}, dropped {}",
        c.points_written,
        c.write_retries,
        c.points_spooled,
        c.dropped()
    );
}
