//! # alarmnet collector
//!
//! Subscribes to every agent, tracks liveness, raises availability alerts, keeps an exact
//! history and answers uptime questions.
//!
//! # Layout
//! - [`liveness`]: the pure liveness state machine (tracker, deadlines, blind mode, grace).
//! - [`alerts`]: the pure alert engine (rules, lifecycle, silences, inhibition) and
//!   [`alerts::Monitor`], tracker and engine wired together for the shell.
//! - [`model`]: domain types shared by the pure logic and the I/O shell.
//! - [`config`]: the configuration file and environment, validated all at once.
//! - [`ingest`]: MQTT link, decoding, node registry (cap, allowlist, moves), rejection counts.
//! - [`pipeline`]: the core task, single owner of the state; commits, then announces.
//! - [`readiness`]: per-node readiness (pure), its rollups and its history.
//! - [`store`]: the embedded SQLite store on its own thread, with migrations.
//! - [`outputs`]: `$alerts` topics, webhooks and Alertmanager, each with its own queue.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, hardening headers, plain or TLS serving.
//! - [`tls`]: the API's TLS: certificate files, reload on SIGHUP, the TLS listener.
//! - [`audit`]: the audit log of operator actions (who, when, from where, what, outcome).
//! - [`metrics`]: the collector's own counters.
//! - [`app`]: startup, task supervision and shutdown.
//! - [`ha`]: active and standby collectors on one PostgreSQL store (lease, takeover).
//! - [`timeseries`]: the InfluxDB line-protocol sink with its disk spool.
//! - [`uptime`]: availability arithmetic over stored transitions, pure.
//! - [`api`]: the JSON API under `/api/v1`, its event stream, tokens, and the console.
//! - [`cli`]: the operator commands that talk to a running collector over HTTP.
//! - [`demo`]: `alarmnet-collector demo`, the whole system in one process (embedded broker);
//!   behind the `demo` feature (default), the only part that uses the simulator and agent.
//! - [`pki`]: `alarmnet-collector pki`, the network's CA, certificates, CRL and broker ACL.
//! - [`commands`]: the command sender (signing key, `keygen`, rate-limited signed `cmd` publishes).
//! - [`secret`]: secrets in the configuration (redacted, from files), token digests.
//! - [`drills`]: drills: selection, live tally, schedules, the drills task and its store rows.

pub mod alerts;
pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod drills;
pub mod ha;
pub mod http;
pub mod ingest;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod outputs;
pub mod pipeline;
pub mod pki;
pub mod readiness;
pub mod secret;
pub mod store;
pub mod timeseries;
pub mod tls;
pub mod uptime;
