//! # alarmnet runtime
//!
//! What every alarmnet process does the same way around its own logic, written once: how
//! long to wait before trying again, how to stop on a signal, and how to run long-lived
//! tasks so that one that ends says which it was and why. Used by the agent, the
//! simulator and the collector; no alarmnet types, so none of them depends on another.
//!
//! # Layout
//! - [`backoff`]: exponential retry delays with a choice of jitter (reconnects, deliveries).
//! - [`signal`]: SIGTERM/SIGINT into a cancellation token; a second signal quits.
//! - [`tasks`]: a set of named tasks returning `Result`, reported as "task `x` stopped: why".

pub mod backoff;
pub mod signal;
pub mod tasks;

pub use backoff::{Backoff, Jitter};
pub use tasks::{Stopped, TaskError, Tasks};
