//! A private Mosquitto broker per test, on a free loopback port, with its config, log and
//! persistence file in a temp dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tempfile::TempDir;

use crate::ids::{free_port, unique_id};
use crate::process::Process;
use crate::wait::POLL_INTERVAL;

/// Where Debian installs the broker.
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// How long a broker may take to accept MQTT connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long `stop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Options for a [`Mosquitto`] broker.
#[derive(Debug, Default)]
pub struct MosquittoBuilder {
    persistence: bool,
    port: Option<u16>,
    extra: Vec<String>,
}

impl MosquittoBuilder {
    /// Listens on `port` (from [`free_port`]) instead of a port of its own choosing: for
    /// tests that start a client first and the broker later.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Keeps retained messages and persistent sessions across `stop`/`start_again` in a
    /// file in the broker's temp dir. Mosquitto writes it on SIGTERM (and every
    /// `autosave_interval`, default 30 min), so `kill` loses what arrived since.
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// Appends one line to the generated `mosquitto.conf` (e.g. `"autosave_interval 1"`).
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.extra.push(line.into());
        self
    }

    /// Starts the broker from a complete config of the test's own instead of the generated
    /// one (a shipped production file with TLS, an ACL, its own listeners): `config` gets
    /// the broker's temp dir and its port, and should log to `{dir}/mosquitto.log` so a
    /// failing test shows the log. Ready once the port accepts TCP connections, as a TLS
    /// listener that requires certificates answers no plain CONNECT; `extra` lines from
    /// [`config_line`](Self::config_line) are appended.
    pub async fn start_with_config(self, config: impl FnOnce(&Path, u16) -> String) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("alarmnet-e2e-mosquitto-")
            .tempdir()
            .expect("create a temp dir for mosquitto");
        let port = self.port.unwrap_or_else(free_port);
        let config_path = dir.path().join("mosquitto.conf");
        let log_path = dir.path().join("mosquitto.log");
        let mut text = config(dir.path(), port);
        for line in &self.extra {
            text.push_str(&format!("\n{line}"));
        }
        std::fs::write(&config_path, text + "\n").expect("write mosquitto.conf");
        let mut broker = Mosquitto {
            port,
            config_path,
            log_path,
            process: None,
            plain_mqtt: false,
            _dir: dir,
        };
        broker.spawn_and_wait().await;
        broker
    }

    /// Starts the broker and waits until it answers an MQTT CONNECT.
    pub async fn start(self) -> Mosquitto {
        let dir = tempfile::Builder::new()
            .prefix("alarmnet-e2e-mosquitto-")
            .tempdir()
            .expect("create a temp dir for mosquitto");
        let port = self.port.unwrap_or_else(free_port);
        let config_path = dir.path().join("mosquitto.conf");
        let log_path = dir.path().join("mosquitto.log");
        std::fs::write(&config_path, self.config(port, dir.path(), &log_path))
            .expect("write mosquitto.conf");
        let mut broker = Mosquitto {
            port,
            config_path,
            log_path,
            process: None,
            plain_mqtt: true,
            _dir: dir,
        };
        broker.spawn_and_wait().await;
        broker
    }

    fn config(&self, port: u16, dir: &Path, log_path: &Path) -> String {
        let mut lines = vec![
            // Run as whoever started the test: as root, Mosquitto would otherwise switch to
            // the `mosquitto` user, who cannot write to this temp dir. Ignored when not root.
            "user root".to_owned(),
            format!("listener {port} 127.0.0.1"),
            "allow_anonymous true".to_owned(),
            // The default of 1000 queued messages per client silently drops the rest for a
            // slow or offline persistent-session subscriber.
            "max_queued_messages 1000000".to_owned(),
            "max_inflight_messages 100".to_owned(),
            format!("log_dest file {}", log_path.display()),
            "log_type error".to_owned(),
            "log_type warning".to_owned(),
            "log_type notice".to_owned(),
            "log_type information".to_owned(),
            "log_type subscribe".to_owned(),
            "log_timestamp_format %H:%M:%S".to_owned(),
            "connection_messages true".to_owned(),
        ];
        if self.persistence {
            lines.push("persistence true".to_owned());
            // The trailing slash matters: Mosquitto appends the file name to it.
            lines.push(format!("persistence_location {}/", dir.display()));
        } else {
            lines.push("persistence false".to_owned());
        }
        lines.extend(self.extra.iter().cloned());
        lines.join("\n") + "\n"
    }
}

/// A running Mosquitto. Dropping it kills the broker; if the test is panicking, the tail of
/// the broker's log is printed to stderr.
#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    config_path: PathBuf,
    log_path: PathBuf,
    process: Option<Process>,
    /// Whether readiness is an MQTT CONNACK on the port (else: the port accepts TCP).
    plain_mqtt: bool,
    _dir: TempDir,
}

impl Mosquitto {
    /// Starts a broker with persistence off.
    pub async fn start() -> Mosquitto {
        Self::builder().start().await
    }

    /// Options: persistence, extra config lines.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    /// The loopback port the broker listens on (the same after `start_again`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's temp dir (config, log, persistence, and whatever a test puts there).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The broker's log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(Process::is_running)
    }

    /// The broker's process id, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// Sends a signal by name (`HUP`: Mosquitto reloads its configuration).
    pub fn signal(&mut self, signal: &str) {
        match self.process.as_mut() {
            Some(process) => process.signal(signal),
            None => panic!("SIG{signal}: the broker is not running"),
        }
    }

    /// SIGTERM and wait for the broker to exit (SIGKILL after 10 s). A persistent broker
    /// saves its database on the way out.
    pub async fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.terminate(STOP_GRACE).await;
        }
    }

    /// SIGKILL: the broker dies at once and saves nothing; clients see their connection
    /// drop.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill_and_reap();
        }
    }

    /// Starts the broker again after `stop` or `kill`: same port, same config, same data
    /// dir. Waits until it answers an MQTT CONNECT.
    pub async fn start_again(&mut self) {
        assert!(
            self.process.is_none(),
            "start_again: the broker is still running; stop or kill it first"
        );
        self.spawn_and_wait().await;
    }

    async fn spawn_and_wait(&mut self) {
        let process = Process::builder(MOSQUITTO)
            .name(format!("mosquitto:{}", self.port))
            .arg("-c")
            .arg(&self.config_path)
            .spawn();
        let process = self.process.insert(process);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.try_exit() {
                crate::print_log_tail("mosquitto log", &self.log_path, 40);
                panic!(
                    "mosquitto on port {} exited during startup ({status})\n{}",
                    self.port,
                    process.output_tail(20)
                );
            }
            let ready = if self.plain_mqtt {
                mqtt_connack(self.port).await
            } else {
                tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            };
            if ready {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                crate::print_log_tail("mosquitto log", &self.log_path, 40);
                panic!(
                    "mosquitto on port {} not ready within {READY_TIMEOUT:?}",
                    self.port
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // Kill first, so the log is complete when it is printed.
        self.process.take();
        if std::thread::panicking() {
            crate::print_log_tail(&format!("mosquitto:{}", self.port), &self.log_path, 60);
        }
    }
}

/// Whether a broker on `port` answers an MQTT CONNECT with a CONNACK.
pub(crate) async fn mqtt_connack(port: u16) -> bool {
    if tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        return false;
    }
    let mut options = MqttOptions::new(unique_id("ready"), "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let connack = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false);
    if connack {
        // Say goodbye properly so the broker does not log a dropped connection.
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
    }
    connack
}
