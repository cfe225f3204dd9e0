//! The collector's own health counters, rendered as Prometheus text on `/metrics`.
//!
//! Design: plain atomics in one shared struct, no registry: the set of series is small and
//! fixed, and label values come from closed sets (rejection reasons, output names, histogram
//! buckets), never from node ids, so the label space stays bounded.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::model::RejectReason;

/// Upper bounds of the store latency histogram, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The kinds of held store writes, in the order of [`Metrics::store_backlog_dropped`].
pub const BACKLOG_KINDS: [&str; 6] = [
    "births",
    "transitions",
    "faults",
    "tests",
    "alerts",
    "readiness",
];

/// Counters and gauges shared by every task.
#[derive(Debug, Default)]
pub struct Metrics {
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    /// Empty payloads on birth/state topics: a retained copy deleted.
    pub retained_cleared: AtomicU64,
    rejected: [AtomicU64; RejectReason::COUNT],
    pub nodes_tracked: AtomicU64,
    pub node_moves: AtomicU64,
    pub ingest_queue_depth: AtomicU64,
    pub ingest_queue_capacity: AtomicU64,
    pub mqtt_connected: AtomicBool,
    /// The broker delivers to the collector on its current connection: a link check's echo
    /// came back through the collector's subscriptions (readiness waits for it).
    pub mqtt_receiving: AtomicBool,
    pub mqtt_connects: AtomicU64,
    /// This collector's role (see [`crate::ha`]): 0 alone (SQLite), 1 standby, 2 active
    /// on a shared store.
    pub role: std::sync::atomic::AtomicU8,
    /// Sequenced messages dropped as already seen (same boot, sequence not above the last).
    pub duplicates: AtomicU64,
    /// Fault raises not alerted because their node was at `alerts.fault.max_active_per_node`.
    pub faults_capped: AtomicU64,
    /// Last Wills not judged: delivered around a broker outage (`liveness::wills`).
    pub wills_discarded: AtomicU64,
    /// Link checks whose marker never came back (a link that only looked up).
    pub link_check_failures: AtomicU64,
    /// Commits of the core's writes that failed (kept and retried).
    pub store_write_failures: AtomicU64,
    /// Store writes (rows) held in memory while the store cannot commit them.
    pub store_pending_writes: AtomicU64,
    /// The last commit of the core's writes failed.
    pub store_failing: AtomicBool,
    /// Held writes dropped because the backlog was at `store.max_backlog`, by kind
    /// ([`BACKLOG_KINDS`]).
    pub store_backlog_dropped: [AtomicU64; BACKLOG_KINDS.len()],
    /// Times the reserve file was deleted to give a full disk room.
    pub store_reserve_released: AtomicU64,
    /// The reserve file is in place.
    pub store_reserve_present: AtomicBool,
    /// Rows deleted by retention, by kind ([`crate::store::retention::Kind::ALL`]).
    pub retention_pruned: [AtomicU64; 5],
    /// Days folded into the per-node daily summaries.
    pub days_summarized: AtomicU64,
    pub store_open: AtomicBool,
    store_latency: Histogram,
    pub store_errors: AtomicU64,
    /// Per output name: sent, failed, dropped.
    outputs: Mutex<Vec<(String, OutputCounters)>>,
    /// The nodes with the most messages dropped by the ingest rate limit (at most
    /// `ingest::limit::TOP_OFFENDERS`), most first, and how many nodes had any.
    rate_limited: Mutex<(Vec<(alarmnet_protocol::NodeId, u64)>, usize)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct OutputCounters {
    sent: u64,
    failed: u64,
    dropped: u64,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

/// What happened to one notification at one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputEvent {
    /// Delivered (possibly after retries).
    Sent,
    /// Given up after the last attempt.
    Failed,
    /// Not even queued: the output's queue was full.
    Dropped,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Relaxed)
    }

    /// The ingest rate limit's worst offenders (bounded) and the number of limited nodes.
    pub fn set_rate_limited(&self, top: Vec<(alarmnet_protocol::NodeId, u64)>, nodes: usize) {
        *self.rate_limited.lock().unwrap_or_else(|p| p.into_inner()) = (top, nodes);
    }

    /// Records the duration of one store command (one transaction).
    pub fn store_latency(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let h = &self.store_latency;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i].fetch_add(1, Relaxed);
            }
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_ns
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Makes an output's series appear (at 0) before its first notification.
    pub fn register_output(&self, output: &str) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        Self::counters(&mut outputs, output);
    }

    fn counters<'a>(
        outputs: &'a mut Vec<(String, OutputCounters)>,
        output: &str,
    ) -> &'a mut OutputCounters {
        let i = match outputs.iter().position(|(name, _)| name == output) {
            Some(i) => i,
            None => {
                outputs.push((output.to_owned(), OutputCounters::default()));
                outputs.len() - 1
            }
        };
        &mut outputs[i].1
    }

    pub fn output(&self, output: &str, event: OutputEvent) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        let c = Self::counters(&mut outputs, output);
        match event {
            OutputEvent::Sent => c.sent += 1,
            OutputEvent::Failed => c.failed += 1,
            OutputEvent::Dropped => c.dropped += 1,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut out,
            "alarmnet_messages_received_total",
            "MQTT messages received from agents.",
            self.received.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_messages_accepted_total",
            "Messages that passed validation and registration.",
            self.accepted.load(Relaxed),
        );
        let name = "alarmnet_messages_rejected_total";
        let _ = writeln!(
            out,
            "# HELP {name} Messages rejected, by reason.\n# TYPE {name} counter"
        );
        for reason in RejectReason::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                reason.as_str(),
                self.rejected_count(reason)
            );
        }
        let (top, limited) = self
            .rate_limited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        gauge(
            &mut out,
            "alarmnet_nodes_rate_limited",
            "Nodes that had messages dropped by the ingest rate limit since the start.",
            limited as u64,
        );
        let name = "alarmnet_node_rate_limited_total";
        let _ = writeln!(
            out,
            "# HELP {name} Messages dropped by the ingest rate limit, for the nodes with the \
             most drops only (a bounded set).\n# TYPE {name} counter"
        );
        for (node, n) in &top {
            let _ = writeln!(out, "{name}{{node=\"{node}\"}} {n}");
        }
        gauge(
            &mut out,
            "alarmnet_nodes_tracked",
            "Nodes registered.",
            self.nodes_tracked.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_node_moves_total",
            "Births that moved a node to another region or site.",
            self.node_moves.load(Relaxed),
        );
        gauge(
            &mut out,
            "alarmnet_ingest_queue_depth",
            "Messages waiting between MQTT and the core.",
            self.ingest_queue_depth.load(Relaxed),
        );
        gauge(
            &mut out,
            "alarmnet_ingest_queue_capacity",
            "Capacity of the queue between MQTT and the core.",
            self.ingest_queue_capacity.load(Relaxed),
        );
        let role = self.role.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP alarmnet_collector_role This collector's role: 1 for the one it has \
             (single: alone on its store; active or standby on a shared one).\n\
             # TYPE alarmnet_collector_role gauge"
        );
        for (value, name) in [(0, "single"), (1, "standby"), (2, "active")] {
            let _ = writeln!(
                out,
                "alarmnet_collector_role{{role=\"{name}\"}} {}",
                u8::from(role == value)
            );
        }
        gauge(
            &mut out,
            "alarmnet_mqtt_connected",
            "1 while the collector is connected to the broker.",
            u64::from(self.mqtt_connected.load(Relaxed)),
        );
        counter(
            &mut out,
            "alarmnet_mqtt_connects_total",
            "Successful connections to the broker.",
            self.mqtt_connects.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_retained_cleared_total",
            "Empty payloads on birth or state topics (retained copies deleted).",
            self.retained_cleared.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_messages_duplicate_total",
            "Heartbeats, faults and test receipts dropped as already received.",
            self.duplicates.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_faults_capped_total",
            "Fault raises not alerted one by one: their node was at its fault cap.",
            self.faults_capped.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_wills_discarded_total",
            "Last Wills not judged because they were delivered around a broker outage.",
            self.wills_discarded.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_link_check_failures_total",
            "Link checks whose marker never came back: the connection was re-established.",
            self.link_check_failures.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_store_write_failures_total",
            "Commits of accepted data that failed; the data is kept and retried.",
            self.store_write_failures.load(Relaxed),
        );
        gauge(
            &mut out,
            "alarmnet_store_pending_writes",
            "Accepted writes held in memory until the store can commit them.",
            self.store_pending_writes.load(Relaxed),
        );
        let name = "alarmnet_store_backlog_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} Held writes dropped while the store could not commit (backlog at store.max_backlog), by kind.\n# TYPE {name} counter"
        );
        for (i, kind) in BACKLOG_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{kind}\"}} {}",
                self.store_backlog_dropped[i].load(Relaxed)
            );
        }
        gauge(
            &mut out,
            "alarmnet_store_failing",
            "1 while the store cannot commit (store_failed fires).",
            u64::from(self.store_failing.load(Relaxed)),
        );
        counter(
            &mut out,
            "alarmnet_store_reserve_released_total",
            "Times the reserve file was deleted to give a full disk room for the store.",
            self.store_reserve_released.load(Relaxed),
        );
        gauge(
            &mut out,
            "alarmnet_store_reserve_present",
            "1 while the store's reserve file is in place.",
            u64::from(self.store_reserve_present.load(Relaxed)),
        );
        let name = "alarmnet_retention_pruned_total";
        let _ = writeln!(
            out,
            "# HELP {name} Rows deleted by retention, by kind.\n# TYPE {name} counter"
        );
        for (i, kind) in crate::store::retention::Kind::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\"}} {}",
                kind.as_str(),
                self.retention_pruned[i].load(Relaxed)
            );
        }
        counter(
            &mut out,
            "alarmnet_days_summarized_total",
            "Node-days folded into the per-node daily summaries before their transitions were pruned.",
            self.days_summarized.load(Relaxed),
        );
        counter(
            &mut out,
            "alarmnet_store_errors_total",
            "Store commands that failed.",
            self.store_errors.load(Relaxed),
        );
        let name = "alarmnet_store_latency_seconds";
        let h = &self.store_latency;
        let _ = writeln!(
            out,
            "# HELP {name} Duration of store transactions.\n# TYPE {name} histogram"
        );
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                h.buckets[i].load(Relaxed)
            );
        }
        let count = h.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", h.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");

        let outputs = self
            .outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (metric, help, pick) in [
            (
                "alarmnet_notifications_sent_total",
                "Notifications delivered, by output.",
                (|c: &OutputCounters| c.sent) as fn(&OutputCounters) -> u64,
            ),
            (
                "alarmnet_notifications_failed_total",
                "Notifications given up after every attempt, by output.",
                |c: &OutputCounters| c.failed,
            ),
            (
                "alarmnet_notifications_dropped_total",
                "Notifications dropped because the output's queue was full, by output.",
                |c: &OutputCounters| c.dropped,
            ),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for (output, c) in &outputs {
                let _ = writeln!(out, "{metric}{{output=\"{output}\"}} {}", pick(c));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_reason_and_output() {
        let m = Metrics::new();
        m.received.fetch_add(3, Relaxed);
        m.rejected(RejectReason::NodeCap);
        m.rejected(RejectReason::NodeCap);
        m.output("webhook-0", OutputEvent::Sent);
        m.output("webhook-0", OutputEvent::Failed);
        m.store_latency(Duration::from_millis(3));
        m.register_output("alertmanager");
        let text = m.render();
        assert!(text.contains("alarmnet_notifications_sent_total{output=\"alertmanager\"} 0\n"));
        assert!(
            text.contains("alarmnet_messages_received_total 3\n"),
            "{text}"
        );
        assert!(text.contains("alarmnet_messages_rejected_total{reason=\"node_cap\"} 2\n"));
        assert!(text.contains("alarmnet_messages_rejected_total{reason=\"bad_json\"} 0\n"));
        assert!(text.contains("alarmnet_notifications_sent_total{output=\"webhook-0\"} 1\n"));
        assert!(text.contains("alarmnet_notifications_failed_total{output=\"webhook-0\"} 1\n"));
        assert!(text.contains("alarmnet_store_latency_seconds_bucket{le=\"0.0025\"} 0\n"));
        assert!(text.contains("alarmnet_store_latency_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("alarmnet_store_latency_seconds_count 1\n"));
    }
}
