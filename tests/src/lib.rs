//! # alarmnet end-to-end test harness
//!
//! Starts the real things a test needs (Mosquitto, VictoriaMetrics, Alertmanager, the
//! project's own binaries) on free loopback ports, waits for them to be ready by polling, and
//! kills them when the handle is dropped, printing their logs if the test is failing. Helpers
//! panic with a message instead of returning errors: they exist to be called from tests.
//!
//! # Layout
//! - [`ids`]: free ports and unique client/node ids, safe for parallel tests.
//! - [`process`]: [`binary`] to find a built workspace binary and [`Process`] to run one.
//! - [`wait`]: [`wait_for`], the polling helper every readiness check uses.
//! - [`mosquitto`]: a private Mosquitto broker per test.
//! - [`victoria`]: a private VictoriaMetrics per test, with export and query helpers.
//! - [`alertmanager`]: a private Prometheus Alertmanager per test.
//! - [`postgres`]: a private PostgreSQL server, per test or shared by a test process.
//! - [`probe`]: [`MqttProbe`], an MQTT client that records what it receives and publishes
//!   with acknowledgement.
//! - [`webhook`]: [`WebhookReceiver`], a webhook endpoint that records every notification.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use alarmnet_e2e::{Mosquitto, MqttProbe, Process, binary, unique_id};
//!
//! # async fn example() {
//! let broker = Mosquitto::start().await;
//! let probe = MqttProbe::connect(broker.port(), "alarmnet/v1/#").await;
//! let node = unique_id("node");
//! let config = format!("...node id {node} and broker {} ...", broker.url());
//! # let config_path = std::path::PathBuf::from("agent.toml");
//! std::fs::write(&config_path, config).expect("write the agent's config");
//! let mut agent = Process::builder(binary("alarmnet-agent"))
//!     .args(["run", "--config"])
//!     .arg(&config_path)
//!     .spawn();
//! let birth = probe
//!     .next_matching(Duration::from_secs(10), |topic, _| topic.ends_with("/birth"))
//!     .await
//!     .expect("a birth");
//! agent.signal("TERM");
//! let status = agent.wait_exit(Duration::from_secs(10)).await.expect("exits on SIGTERM");
//! assert!(status.success());
//! # drop(birth);
//! # }
//! ```

pub mod agent;
pub mod alertmanager;
pub mod ids;
pub mod mosquitto;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod usage;
pub mod victoria;
pub mod wait;
pub mod webhook;

pub use agent::TestAgent;
pub use alertmanager::Alertmanager;
pub use ids::{free_port, unique_id};
pub use mosquitto::{Mosquitto, MosquittoBuilder};
pub use postgres::Postgres;
pub use probe::{MqttProbe, Received};
pub use process::{Process, ProcessBuilder, binary};
pub use victoria::{Series, VictoriaMetrics};
pub use wait::wait_for;
pub use webhook::WebhookReceiver;

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> &str {
    let mut start = text.len();
    for _ in 0..lines {
        match text[..start].trim_end_matches('\n').rfind('\n') {
            Some(i) => start = i,
            None => return text,
        }
    }
    &text[start + 1..]
}

/// Prints the tail of a log file to stderr, for a test that is failing.
pub(crate) fn print_log_tail(what: &str, path: &std::path::Path, lines: usize) {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    };
    if text.trim().is_empty() {
        eprintln!("----- {what}: {} is empty -----", path.display());
        return;
    }
    eprintln!(
        "----- {what}: last {lines} lines of {} -----",
        path.display()
    );
    eprintln!("{}", tail(&text, lines).trim_end());
    eprintln!("----- end of {what} -----");
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a\nb", 5), "a\nb");
        assert_eq!(tail("", 3), "");
    }
}
