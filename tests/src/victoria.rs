//! A private VictoriaMetrics per test (the real line-protocol database the project writes
//! to), with helpers to read back what was written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tempfile::TempDir;

use crate::ids::free_port;
use crate::process::Process;
use crate::wait::POLL_INTERVAL;

/// Where Debian installs the database.
const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(15);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// One series from `/api/v1/export`: its labels (including `__name__`) and its samples.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Series {
    /// Label name → value; the metric name is under `__name__`.
    pub metric: BTreeMap<String, String>,
    /// Sample values, in timestamp order.
    pub values: Vec<f64>,
    /// Sample timestamps in milliseconds since the Unix epoch.
    pub timestamps: Vec<i64>,
}

impl Series {
    /// The metric name (`__name__`), e.g. `alarmnet_node_cpu_pct`.
    pub fn name(&self) -> &str {
        self.label("__name__").unwrap_or_default()
    }

    /// The value of one label.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.metric.get(name).map(String::as_str)
    }
}

/// A running VictoriaMetrics. Dropping it kills the process; if the test is panicking, the
/// tail of its output is printed.
#[derive(Debug)]
pub struct VictoriaMetrics {
    port: u16,
    data_path: PathBuf,
    http: reqwest::Client,
    process: Option<Process>,
    _dir: TempDir,
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics on a free port with an empty data dir, and waits for
    /// `/health`.
    pub async fn start() -> VictoriaMetrics {
        let dir = tempfile::Builder::new()
            .prefix("alarmnet-e2e-victoria-")
            .tempdir()
            .expect("create a temp dir for victoria-metrics");
        let data_path = dir.path().join("data");
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("build an HTTP client");
        let mut vm = VictoriaMetrics {
            port: free_port(),
            data_path,
            http,
            process: None,
            _dir: dir,
        };
        vm.spawn_and_wait().await;
        vm
    }

    /// The loopback port it listens on (the same after `start_again`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (line protocol goes to `{url}/api/v2/write`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// SIGTERM and wait for it to exit (SIGKILL after 15 s).
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(STOP_GRACE).await;
        }
    }

    /// SIGKILL: data not yet flushed to disk is lost.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill_and_reap();
        }
    }

    /// Starts it again after `stop` or `kill`: same port, same data dir.
    pub async fn start_again(&mut self) {
        assert!(
            self.process.is_none(),
            "start_again: victoria-metrics is still running; stop or kill it first"
        );
        self.spawn_and_wait().await;
    }

    /// Every series matching the selector (e.g. `{__name__=~"alarmnet_.*"}` or
    /// `alarmnet_node_cpu_pct{node="n1"}`), after flushing recent writes so they are
    /// visible. Sorted by labels.
    pub async fn export(&self, selector: &str) -> Vec<Series> {
        self.force_flush().await;
        let url = format!("{}/api/v1/export", self.url());
        let body = self.get_text(&url, &[("match[]", selector)]).await;
        let mut series: Vec<Series> = body
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("bad export line from victoria-metrics: {e}: {line}")
                })
            })
            .collect();
        series.sort_by(|a, b| a.metric.cmp(&b.metric));
        series
    }

    /// An instant PromQL query at the current time, returning the whole JSON answer
    /// (`{"status":"success","data":{"resultType":...,"result":[...]}}`).
    pub async fn query(&self, promql: &str) -> serde_json::Value {
        self.force_flush().await;
        let url = format!("{}/api/v1/query", self.url());
        let body = self.get_text(&url, &[("query", promql)]).await;
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("victoria-metrics query answer is not JSON: {e}: {body}"))
    }

    /// Makes recently ingested samples visible to queries and exports.
    pub async fn force_flush(&self) {
        let url = format!("{}/internal/force_flush", self.url());
        self.get_text(&url, &[]).await;
    }

    async fn get_text(&self, url: &str, query: &[(&str, &str)]) -> String {
        let response = self
            .http
            .get(url)
            .query(query)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url} failed: {e}"));
        let status = response.status();
        let body = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: cannot read the body: {e}"));
        assert!(status.is_success(), "GET {url} {query:?}: {status}: {body}");
        body
    }

    async fn spawn_and_wait(&mut self) {
        let process = Process::builder(VICTORIA_METRICS)
            .name(format!("victoria-metrics:{}", self.port))
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.data_path.display()))
            // Tests write samples with timestamps of their choosing, some far in the past.
            .arg("-retentionPeriod=100y")
            // Make fresh samples visible to queries at once, and never answer from a cache.
            .arg("-search.latencyOffset=0s")
            .arg("-search.disableCache")
            .spawn();
        let health = format!("{}/health", self.url());
        let process = self.process.insert(process);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.try_exit() {
                panic!(
                    "victoria-metrics on port {} exited during startup ({status})\n{}",
                    self.port,
                    process.output_tail(40)
                );
            }
            if let Ok(response) = self.http.get(&health).send().await
                && response.status().is_success()
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "victoria-metrics on port {} not ready within {READY_TIMEOUT:?}\n{}",
                    self.port,
                    process.output_tail(40)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
