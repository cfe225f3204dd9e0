//! Running the real `alarmnet-collector` binary for end-to-end tests, reading its
//! `/metrics`, and publishing raw (hostile) traffic with a plain rumqttc client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Process, binary, free_port, unique_id};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use tempfile::TempDir;

pub const READY: Duration = Duration::from_secs(30);

/// A tmpfs mounted for the test's lifetime.
pub struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk {
            dir: dir.to_owned(),
        })
    }

    /// Writes a file until the disk is full.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl SmallDisk {
    /// Keeps the disk full from another thread (filling again every 50 ms whatever gets
    /// freed, as a runaway log would) until the returned flag is set; then deletes its
    /// file.
    pub fn keep_full(
        &self,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    ) {
        use std::io::Write as _;
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let path = self.dir.join("runaway");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).expect("create runaway file");
            let block = vec![0u8; 4096];
            while !flag.load(Relaxed) {
                while f.write_all(&block).is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            drop(f);
            let _ = std::fs::remove_file(&path);
        });
        (stop, thread)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A running collector with its own store directory.
#[derive(Debug)]
pub struct Collector {
    pub process: Process,
    pub http_port: u16,
    pub client_id: String,
    pub config: PathBuf,
    http: reqwest::Client,
}

/// A directory for a collector's config and store, kept across restarts.
pub fn workdir() -> TempDir {
    tempfile::Builder::new()
        .prefix("alarmnet-e2e-collector-")
        .tempdir()
        .expect("temp dir")
}

/// The config for a collector on `broker`, with `extra` TOML appended (sections other than
/// `[mqtt]`, `[store]` and `[http]`).
pub fn config_text(
    broker: &Mosquitto,
    dir: &Path,
    client_id: &str,
    http: u16,
    extra: &str,
) -> String {
    format!(
        "[mqtt]\nbroker = \"{}\"\nclient_id = \"{client_id}\"\nkeep_alive = \"10s\"\n\
         reconnect_max = \"1s\"\n[store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n{extra}",
        broker.url(),
        dir.join("alarmnet.db").display()
    )
}

impl Collector {
    /// Writes a config into `dir` and starts the collector; returns once `/readyz` is 200.
    pub async fn start(broker: &Mosquitto, dir: &Path, extra: &str) -> Collector {
        Self::start_with_env(broker, dir, extra, &[]).await
    }

    pub async fn start_with_env(
        broker: &Mosquitto,
        dir: &Path,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Collector {
        Self::start_with_store(broker, dir, "", extra, env).await
    }

    /// [`Self::start_with_env`] with `store` (TOML lines) added to the `[store]` section.
    pub async fn start_with_store(
        broker: &Mosquitto,
        dir: &Path,
        store: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Collector {
        let client_id = env
            .iter()
            .find(|(k, _)| *k == "ALARMNET_MQTT__CLIENT_ID")
            .map(|(_, v)| (*v).to_owned())
            .unwrap_or_else(|| unique_id("collector"));
        let http_port = free_port();
        let config = dir.join("collector.toml");
        let text = config_text(broker, dir, &client_id, http_port, extra).replacen(
            "[store]\n",
            &format!("[store]\n{store}\n"),
            1,
        );
        std::fs::write(&config, text).expect("write config");
        Self::spawn(config, client_id, http_port, env).await
    }

    /// Starts again with the same config (same client id, store, port).
    pub async fn restart(self) -> Collector {
        let Collector {
            config,
            client_id,
            http_port,
            process,
            ..
        } = self;
        drop(process);
        Self::spawn(config, client_id, http_port, &[]).await
    }

    /// Kills the collector (if it still runs) and starts it again with the same config,
    /// client id, store and port.
    pub async fn restart_in_place(&mut self) {
        self.process.kill_and_reap();
        *self = Self::spawn(
            self.config.clone(),
            self.client_id.clone(),
            self.http_port,
            &[],
        )
        .await;
    }

    async fn spawn(
        config: PathBuf,
        client_id: String,
        http_port: u16,
        env: &[(&str, &str)],
    ) -> Collector {
        let mut builder = Process::builder(binary("alarmnet-collector"))
            .name(format!("collector:{http_port}"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("ALARMNET_LOG", "info");
        for (k, v) in env {
            builder = builder.env(*k, *v);
        }
        let mut collector = Collector {
            process: builder.spawn(),
            http_port,
            client_id,
            config,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        collector.wait_ready().await;
        collector
    }

    pub async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.http_port);
        let deadline = tokio::time::Instant::now() + READY;
        loop {
            if let Some(status) = self.process.try_exit() {
                panic!(
                    "the collector exited during startup ({status})\n{}",
                    self.process.output_tail(40)
                );
            }
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the collector was not ready within {READY:?}\n{}",
                self.process.output_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.http_port);
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.text().await.expect("metrics body")
    }

    /// One series' value: `series` is the name with its labels, as printed.
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series)
    }

    /// Waits until `series` equals `want`.
    pub async fn wait_metric(&self, series: &str, want: f64, timeout: Duration) {
        self.wait_metric_by(series, want, timeout, |got, want| got == want)
            .await;
    }

    /// Waits until `series` is at least `want` (QoS 1 may deliver a message twice after a
    /// reconnect).
    pub async fn wait_metric_at_least(&self, series: &str, want: f64, timeout: Duration) {
        self.wait_metric_by(series, want, timeout, |got, want| got >= want)
            .await;
    }

    async fn wait_metric_by(
        &self,
        series: &str,
        want: f64,
        timeout: Duration,
        done: impl Fn(f64, f64) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.metric(series).await;
            if done(got, want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} is {got}, not {want}, after {timeout:?}\n{}\n{}",
                self.metrics().await,
                self.process.output_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads one series from Prometheus text; panics if absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("series {series} not in /metrics:\n{text}"))
}

/// A plain MQTT client for hostile traffic: publishes and counts acknowledgements.
pub struct Publisher {
    client: AsyncClient,
    acked: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub async fn connect(broker: &Mosquitto) -> Publisher {
        let mut options = MqttOptions::new(unique_id("hostile"), "127.0.0.1", broker.port());
        options
            .set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(100)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 10_000);
        let (tx, acked) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                match eventloop.poll().await {
                    // QoS 1: the broker's PUBACK; QoS 0: the publish left the client.
                    Ok(Event::Incoming(Packet::PubAck(_)))
                    | Ok(Event::Outgoing(Outgoing::Publish(0))) => {
                        n += 1;
                        let _ = tx.send(n);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        Publisher {
            client,
            acked,
            task,
        }
    }

    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: QoS, retain: bool) {
        self.client
            .publish(topic, qos, retain, payload.into())
            .await
            .expect("queue publish");
    }

    /// Waits until `n` publishes in total were acknowledged (or sent, at QoS 0).
    pub async fn wait_acked(&self, n: u64, timeout: Duration) {
        let mut acked = self.acked.clone();
        tokio::time::timeout(timeout, acked.wait_for(|a| *a >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {n} publishes acknowledged",
                    *self.acked.borrow()
                )
            })
            .expect("publisher alive");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A valid birth payload.
pub fn birth(region: &str, site: &str, node: &str, ts: u64) -> Vec<u8> {
    format!(
        r#"{{"v":1,"boot":"boot{ts:012}","ts":{ts},"node":"{node}","site":"{site}","region":"{region}","kind":"siren","hb_interval_s":10}}"#
    )
    .into_bytes()
}

/// A valid heartbeat payload.
pub fn heartbeat(seq: u64) -> Vec<u8> {
    format!(r#"{{"v":1,"boot":"boot000000000001","seq":{seq},"ts":1764330000000}}"#).into_bytes()
}

/// A reader of `/api/v1/events`.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    pub async fn open(port: u16) -> Events {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/v1/events"))
            .send()
            .await
            .expect("event stream");
        assert_eq!(response.status(), 200, "the event stream answers");
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event of `kind` whose data satisfies `want`, within `timeout`.
    pub async fn next(
        &mut self,
        kind: &str,
        timeout: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let event = block.lines().find_map(|l| l.strip_prefix("event: "));
                let data = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(event), Some(data)) = (event, data)
                    && event == kind
                {
                    let data: Value = serde_json::from_str(data).expect("event data is JSON");
                    if want(&data) {
                        return Some(data);
                    }
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .expect("stream read")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Waits for `node`'s transition to `to`; panics after `timeout`.
    pub async fn state(&mut self, node: &str, to: &str, timeout: Duration) -> Value {
        self.next("state", timeout, |d| d["node"] == node && d["to"] == to)
            .await
            .unwrap_or_else(|| panic!("no {node} → {to} on the event stream within {timeout:?}"))
    }
}

/// A notification as the webhook receiver keys it: rule, subject, status.
pub type Key = (String, String, String);

pub fn k(rule: &str, subject: &str, status: &str) -> Key {
    (rule.to_owned(), subject.to_owned(), status.to_owned())
}

/// Waits for the notification `want` at `hook`.
pub async fn wait_key(hook: &alarmnet_e2e::WebhookReceiver, want: &Key, timeout: Duration) {
    hook.wait(timeout, &format!("{want:?} at the webhook"), |body| {
        alarmnet_e2e::webhook::key(body) == *want
    })
    .await;
}

/// Starts `alarmnet-sim` on `broker` with `nodes` nodes beating every second (dealt over
/// the province's counties in order) and `script` (TOML `[[script]]` tables).
pub fn sim(dir: &Path, broker: &Mosquitto, nodes: u64, script: &str) -> Process {
    let config = dir.join("sim.toml");
    std::fs::write(
        &config,
        format!(
            "broker = \"{}\"\nnodes = {nodes}\nheartbeat_interval = \"1s\"\n\
             keep_alive = \"2s\"\nreconnect_max = \"1s\"\nfault_rate = 0.0\nramp = \"2s\"\n{script}",
            broker.url()
        ),
    )
    .expect("sim config");
    Process::builder(alarmnet_e2e::binary("alarmnet-sim"))
        .name("alarmnet-sim")
        .arg("--config")
        .arg(&config)
        .spawn()
}

/// How many of a collector's log lines contain `needle`.
pub fn log_lines(collector: &Collector, needle: &str) -> usize {
    let (err, out) = (
        collector.process.stderr_text(),
        collector.process.stdout_text(),
    );
    err.lines()
        .chain(out.lines())
        .filter(|l| l.contains(needle))
        .count()
}
