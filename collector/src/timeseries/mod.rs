//! Time series: the collector's telemetry, states, faults, tests and alerts as InfluxDB line
//! protocol, written through the v2 write API (InfluxDB 2.x/3.x, VictoriaMetrics and others)
//! with batching, retries and a disk spool, so a database outage loses nothing.
//!
//! # Layout
//! - [`point`]: [`Point`] and its builder; one constructor per measurement (the schema).
//! - [`sink`]: `[influx]` ([`SinkConfig`] builds the parsed [`SinkSettings`]), [`Sink`]
//!   started from them, [`SinkHandle::submit`], [`Counters`].
//! - [`spool`]: the bounded, checksummed on-disk queue used while the database is down.

pub mod point;
pub mod sink;
pub mod spool;

pub use point::{NodeTags, Point, PointBuilder, PointError, state_code};
pub use sink::{Counters, Sink, SinkConfig, SinkError, SinkHandle, SinkSettings};

/// The time-series spool's directory, next to the store's file, unless `influx.spool_dir`
/// says otherwise.
pub const DEFAULT_SPOOL_DIR: &str = "tsdb-spool";
