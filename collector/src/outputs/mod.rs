//! Notification outputs: retained MQTT `$alerts` topics, webhooks, Prometheus Alertmanager.
//!
//! Design: the core hands an alert change to [`Outputs::notify`], which never waits: each
//! output has its own bounded queue and task, so a slow or dead receiver delays only itself.
//! Each queue ([`queue`]) delivers availability notices (`node_offline`, `site_outage`,
//! `region_outage`, `collector_blind`, `store_failed`) ahead of every other rule, so a flood of fault or
//! threshold notices never delays a siren going offline. When a queue is full a
//! low-priority notification is dropped for that output (never an availability one while a
//! low-priority one waits), counted (`alarmnet_notifications_dropped_total{output}`) and
//! logged at ERROR: an operator must look. Each output delivers each alert's notifications
//! in order (a resolution never overtakes its firing) and records every attempt in the
//! store's notification log.

pub mod alertmanager;
pub mod chat;
pub mod delivery;
pub mod mqtt;
pub mod queue;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;

use alarmnet_protocol::{AlertNotification, AlertStatus};
use alarmnet_runtime::Tasks;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, OutputEvent};
use crate::model::{Alert, Clock, UnixMillis};
use crate::store::{NotificationAttempt, Store};
pub use queue::{NoticeReceiver, NoticeSender, Pushed};

/// The JSON object every output sends for an alert (webhook body, `$alerts` payload).
pub fn notification(alert: &Alert) -> AlertNotification {
    alert.to_notification()
}

/// What an output task receives.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A notification to deliver (firing or resolved).
    Alert(Arc<Outgoing>),
    /// An alert that was notified before a restart and still fires: outputs that must keep
    /// repeating it (Alertmanager) take it up again; the others ignore it (no duplicate).
    Resume(Arc<Alert>),
}

impl Notice {
    /// The alert it is about.
    pub fn alert(&self) -> &Alert {
        match self {
            Notice::Alert(o) => &o.alert,
            Notice::Resume(a) => a,
        }
    }
}

/// A notification to deliver: the alert as notified, and its entry in the store's outbox
/// (none while the store cannot commit: such a notification is sent at once, unstored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub alert: Alert,
    pub notice: Option<i64>,
}

impl std::ops::Deref for Outgoing {
    type Target = Alert;
    fn deref(&self) -> &Alert {
        &self.alert
    }
}

impl From<Alert> for Outgoing {
    fn from(alert: Alert) -> Self {
        Self {
            alert,
            notice: None,
        }
    }
}

/// The core's handle to every output.
#[derive(Debug, Clone)]
pub struct Outputs {
    queues: Vec<(String, NoticeSender)>,
    metrics: Arc<Metrics>,
}

/// Shared by the output tasks: the store for the notification log, the metrics, and the
/// clock.
#[derive(Clone)]
pub struct OutputContext {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// The collector's clock: when attempts are made and recorded.
    pub clock: Clock,
}

impl std::fmt::Debug for OutputContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputContext")
            .field("store", &self.store)
            .field("metrics", &self.metrics)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl OutputContext {
    /// Records one attempt in the notification log and the metrics. A store failure is
    /// logged, never allowed to stop delivery.
    pub(crate) async fn record(
        &self,
        output: &str,
        alert: &Outgoing,
        (attempt, last): (u32, bool),
        at: UnixMillis,
        result: Result<(), String>,
    ) {
        let entry = NotificationAttempt {
            notice: alert.notice,
            done: last || result.is_ok(),
            alert_id: alert.id,
            alert_started_at: alert.started_at,
            status: alert.status,
            output: output.to_owned(),
            attempt,
            at,
            ok: result.is_ok(),
            error: result.err(),
        };
        if let Err(e) = self.store.record_notification(entry).await {
            tracing::error!(output, alert = %alert.id, error = %e, "cannot log a notification attempt");
        }
    }

    pub(crate) fn outcome(&self, output: &str, event: OutputEvent) {
        self.metrics.output(output, event);
    }
}

impl Outputs {
    /// No outputs at all (tests, or a collector that only stores).
    pub fn none(metrics: Arc<Metrics>) -> Self {
        Self {
            queues: Vec::new(),
            metrics,
        }
    }

    /// Adds an output queue; the caller spawns the task that drains `rx`.
    pub fn add(&mut self, name: impl Into<String>, capacity: usize) -> NoticeReceiver {
        let (tx, rx) = queue::channel(capacity);
        let name = name.into();
        self.metrics.register_output(&name);
        self.queues.push((name, tx));
        rx
    }

    /// Starts every configured output, each a task named `outputs/{name}`. `mqtt`
    /// publishes `$alerts` when given.
    pub fn start(
        config: &crate::config::Config,
        mqtt: Option<mqtt::MqttAlerts>,
        ctx: OutputContext,
        tasks: &mut Tasks,
    ) -> Result<Self, reqwest::Error> {
        let mut outputs = Self::none(ctx.metrics.clone());
        if let Some(m) = mqtt {
            let rx = outputs.add(mqtt::NAME, 10_000);
            spawn(tasks, mqtt::NAME, m.run(rx, ctx.clone()));
        }
        for (i, w) in config.webhooks.iter().enumerate() {
            let name = format!("webhook-{i}");
            let hook = webhook::Webhook::new(name.clone(), w, config.time_zone.clone())?;
            let rx = outputs.add(name.clone(), w.queue);
            spawn(tasks, &name, hook.run(rx, ctx.clone()));
        }
        if let Some(a) = &config.alertmanager {
            let am = alertmanager::Alertmanager::new(a)?;
            let rx = outputs.add(alertmanager::NAME, a.queue);
            spawn(tasks, alertmanager::NAME, am.run(rx, ctx.clone()));
        }
        Ok(outputs)
    }

    /// Hands a committed alert change to every output, without waiting. `notice` is its
    /// entry in the store's outbox.
    pub fn notify(&self, alert: &Alert, notice: Option<i64>) {
        self.send(Notice::Alert(Arc::new(Outgoing {
            alert: alert.clone(),
            notice,
        })));
    }

    /// After a start: a stored notice that output `name` never finished delivering (its
    /// collector stopped first) goes to that output alone.
    pub fn redeliver(&self, name: &str, notice: crate::store::StoredNotice) {
        let Some((_, tx)) = self.queues.iter().find(|(n, _)| n == name) else {
            return;
        };
        let outgoing = Notice::Alert(Arc::new(Outgoing {
            alert: notice.alert,
            notice: Some(notice.id),
        }));
        if !matches!(tx.push(outgoing), Pushed::Queued) {
            self.metrics.output(name, OutputEvent::Dropped);
            tracing::error!(output = %name, notice = notice.id, "a notification to send again was dropped: the output's queue is full");
        }
    }

    /// After a restart: alerts notified before it that still fire.
    pub fn resume(&self, alert: &Alert) {
        if alert.status == AlertStatus::Firing && alert.notified {
            self.send(Notice::Resume(Arc::new(alert.clone())));
        }
    }

    fn send(&self, notice: Notice) {
        for (name, tx) in &self.queues {
            let dropped = match tx.push(notice.clone()) {
                Pushed::Queued => continue,
                Pushed::Displaced(n) => (n, "dropped to make room for an availability notice"),
                Pushed::Full(n) => (n, "dropped: the output's queue is full"),
            };
            let alert = dropped.0.alert();
            self.metrics.output(name, OutputEvent::Dropped);
            tracing::error!(
                output = %name,
                alert = %alert.id,
                rule = %alert.rule,
                "notification {} (is the receiver down?)",
                dropped.1
            );
        }
    }

    /// The names of the outputs, in order.
    pub fn names(&self) -> Vec<&str> {
        self.queues.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// An output's task: it runs until shutdown, or until the core drops its queue.
fn spawn(tasks: &mut Tasks, name: &str, output: impl Future<Output = ()> + Send + 'static) {
    tasks.spawn(format!("outputs/{name}"), async move {
        output.await;
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::new());
        let mut outputs = Outputs::none(metrics.clone());
        let _rx = outputs.add("slow", 1);
        let alert = crate::outputs::tests_support::alert("00000000000000a1", AlertStatus::Firing);
        outputs.notify(&alert, None);
        outputs.notify(&alert, None);
        outputs.notify(&alert, None);
        let text = metrics.render();
        assert!(
            text.contains("alarmnet_notifications_dropped_total{output=\"slow\"} 2\n"),
            "{text}"
        );
    }
}

#[cfg(test)]
mod priority_tests {
    use crate::model::{AlertId, RuleKind};

    use super::*;

    #[tokio::test]
    async fn an_offline_displaces_a_queued_fault_and_is_delivered_first() {
        let metrics = Arc::new(Metrics::new());
        let mut outputs = Outputs::none(metrics.clone());
        let mut rx = outputs.add("hook", 3);
        let mut fault = tests_support::alert("00000000000000f0", AlertStatus::Firing);
        fault.rule = RuleKind::Fault;
        for i in 0..3 {
            fault.id = AlertId::new(0xf0 + i);
            outputs.notify(&fault, None);
        }
        // Full of faults: the offline takes the newest fault's place.
        outputs.notify(
            &tests_support::alert("00000000000000ff", AlertStatus::Firing),
            None,
        );
        let ids: Vec<String> = std::iter::from_fn(|| rx.try_recv())
            .map(|n| n.alert().id.to_string())
            .collect();
        assert_eq!(
            ids,
            ["00000000000000ff", "00000000000000f0", "00000000000000f1"]
        );
        assert!(
            metrics
                .render()
                .contains("alarmnet_notifications_dropped_total{output=\"hook\"} 1\n")
        );
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use alarmnet_protocol::{AlertStatus, Name, NodeId, RegionId, Severity, SiteId};

    use crate::model::{Alert, RuleKind, Subject};

    pub fn alert(id: &str, status: AlertStatus) -> Alert {
        Alert {
            id: id.parse().expect("alert id"),
            rule: RuleKind::NodeOffline,
            severity: Severity::Critical,
            status,
            subject: Subject::Node {
                region: RegionId::new("lanzhou").expect("id"),
                site: SiteId::new("lz-cg").expect("id"),
                node: NodeId::new("lz-cg-s001").expect("id"),
            },
            kind: Some(Name::new("siren").expect("name")),
            started_at: crate::model::UnixMillis::from_millis(1_764_330_000_000),
            ended_at: (status == AlertStatus::Resolved)
                .then_some(crate::model::UnixMillis::from_millis(1_764_330_600_000)),
            summary: "lz-cg-s001 is offline".into(),
            args: Default::default(),
            ack: None,
            notified: true,
        }
    }
}
