//! A private Prometheus Alertmanager per test, with a minimal config that routes every alert
//! to a receiver that sends nothing, so tests can read what it holds through its API.

use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::ids::free_port;
use crate::process::Process;
use crate::wait::POLL_INTERVAL;

/// Where Debian installs Alertmanager.
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

const CONFIG: &str = "\
route:
  receiver: blackhole
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
";

/// A running Alertmanager. Dropping it kills the process; if the test is panicking, the tail
/// of its output is printed.
#[derive(Debug)]
pub struct Alertmanager {
    port: u16,
    http: reqwest::Client,
    process: Process,
    _dir: TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager on a free port (clustering off) and waits for `/-/ready`.
    pub async fn start() -> Alertmanager {
        let dir = tempfile::Builder::new()
            .prefix("alarmnet-e2e-alertmanager-")
            .tempdir()
            .expect("create a temp dir for alertmanager");
        let config: PathBuf = dir.path().join("alertmanager.yml");
        std::fs::write(&config, CONFIG).expect("write alertmanager.yml");
        let storage = dir.path().join("data");
        let port = free_port();
        let mut process = Process::builder(ALERTMANAGER)
            .name(format!("alertmanager:{port}"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // An empty address turns the gossip cluster off (it would bind 0.0.0.0:9094).
            .arg("--cluster.listen-address=")
            .spawn();
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("build an HTTP client");
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.try_exit() {
                panic!(
                    "alertmanager on port {port} exited during startup ({status})\n{}",
                    process.output_tail(40)
                );
            }
            if let Ok(response) = http.get(&ready).send().await
                && response.status().is_success()
            {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "alertmanager on port {port} not ready within {READY_TIMEOUT:?}\n{}",
                    process.output_tail(40)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Alertmanager {
            port,
            http,
            process,
            _dir: dir,
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (alerts are posted to `{url}/api/v2/alerts`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `GET /api/v2/alerts`: the JSON array of alerts it holds (active, silenced and
    /// inhibited; resolved alerts disappear once their `endsAt` has passed).
    pub async fn alerts(&self) -> serde_json::Value {
        let url = format!("{}/api/v2/alerts", self.url());
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: cannot read the body: {e}"));
        assert!(status.is_success(), "GET {url}: {status}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: answer is not JSON: {e}: {body}"))
    }
}
