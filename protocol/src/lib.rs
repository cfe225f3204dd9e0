//! # alarmnet wire protocol, version 1
//!
//! The contract between agents on alarm and display nodes and the collector, as described in
//! `docs/protocol.md`. This crate does no I/O: it parses topics, validates payloads and
//! encodes messages, so the agent, the collector, the simulator and third-party tools share one
//! definition of what is valid.
//!
//! # Layout
//! - [`ids`]: identifiers that can only hold valid values (`NodeId`, `BootId`, `Name`, ...).
//! - [`topic`]: the topic tree, parsed once into [`Topic`].
//! - [`payload`]: one type per message kind, with every limit of the contract.
//! - [`signing`]: the Ed25519 signature on commands and its check.
//! - [`codec`]: [`decode`] and [`encode`], and [`DecodeError`] with its stable [`Reason`] code.

pub mod codec;
pub mod ids;
pub mod payload;
pub mod signing;
pub mod topic;

pub use codec::{DecodeError, Envelope, Reason, decode, decode_on, encode};
pub use ids::{
    BootId, CmdId, CollectorId, IdError, KeyId, MetricName, Name, NodeId, RegionId, SiteId,
};
pub use payload::{
    AlertNotification, AlertStatus, Birth, CheckCounts, CmdAction, CollectorState, Command, Fault,
    FaultKey, FaultStatus, Heartbeat, Message, Metrics, NodeState, OfflineReason, Seal, Severity,
    State, Tags, TestReceipt, TestResult, Text, V1,
};
pub use topic::{AlertTopic, NodePath, NodeTopic, Prefix, Topic};

/// The protocol version every payload carries as `"v": 1`.
pub const VERSION: u64 = 1;

/// The largest payload accepted, in bytes (16 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "alarmnet/v1";
