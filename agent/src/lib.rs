//! # alarmnet agent
//!
//! The daemon on every alarm and display node, and `alarmnet-sim`, many virtual agents in
//! one process running the same session and spool code.
//!
//! # Layout
//! - [`app`]: `run` and `check`, wiring configuration, checks, spool and session.
//! - [`config`]: the configuration file and environment overrides, validated all at once.
//! - [`session`]: the MQTT session's I/O: client, event loop, spool, test tasks, reconnects.
//! - [`protocol_state`]: the session's pure state: connection phase, in-flight window,
//!   command admission (signatures, expiry, replays), tested without a broker.
//! - [`seen_file`]: the command ids already seen, kept on disk across restarts.
//! - [`spool`]: store-and-forward on disk until the broker's PUBACK.
//! - [`backoff`]: reconnect delays with exponential growth and full jitter.
//! - [`health`]: what checks report and what the session asks of them.
//! - [`checks`]: check configuration, scheduling, hysteresis and the built-in kinds.
//! - [`sim`]: the simulator engine behind `alarmnet-sim` (and the collector's demo).

pub mod app;
pub mod backoff;
pub mod checks;
pub mod config;
pub mod health;
pub mod protocol_state;
pub mod seen_file;
pub mod session;
pub mod sim;
pub mod spool;
