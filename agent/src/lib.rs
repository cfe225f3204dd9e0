//! # alarmnet agent
//!
//! The daemon on every alarm and display node. Its session and spool are public: the
//! simulator (`alarmnet-sim`, its own crate) runs many of them in one process.
//!
//! # Layout
//! - [`app`]: `run` and `check`, wiring configuration, checks, spool and session.
//! - [`config`]: the configuration file and environment overrides, validated all at once.
//! - [`session`]: the MQTT session's I/O: client, event loop, spool, test tasks, reconnects.
//! - [`protocol_state`]: the session's pure state: connection phase, in-flight window,
//!   command admission (signatures, expiry, replays), tested without a broker.
//! - [`seen_file`]: the command ids already seen, kept on disk across restarts.
//! - [`spool`]: store-and-forward on disk until the broker's PUBACK.
//! - [`health`]: what checks report and what the session asks of them.
//! - [`checks`]: check configuration, scheduling, hysteresis and the built-in kinds.

pub mod app;
pub mod checks;
pub mod config;
pub mod health;
pub mod protocol_state;
pub mod seen_file;
pub mod session;
pub mod spool;
