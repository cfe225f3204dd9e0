//! # alarmnet agent
//!
//! The daemon on every alarm and display node, and `alarmnet-sim`, many virtual agents in
//! one process running the same session and spool code.
//!
//! # Layout
//! - [`health`]: what checks report and what the session asks of them.
//! - [`checks`]: check configuration, scheduling, hysteresis and the built-in kinds.

pub mod checks;
pub mod health;
