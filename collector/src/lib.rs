//! # alarmnet collector
//!
//! Subscribes to every agent, tracks liveness, raises availability alerts, keeps an exact
//! history and answers uptime questions.
//!
//! # Layout
//! - [`model`]: domain types shared by the pure logic and the I/O shell.
//! - [`uptime`]: availability arithmetic over stored transitions, pure.

pub mod model;
pub mod uptime;
