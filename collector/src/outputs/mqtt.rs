//! `$alerts` topics: `{prefix}/$alerts/{region}/{site}/{subject}/{rule}`.
//!
//! While an alert fires its notification is retained there, so the retained set is the set
//! of active alerts. On resolve: the `resolved` notification (not retained), then an empty
//! retained payload that clears the topic.
//!
//! Design: this output hands messages to rumqttc's queue and logs the attempt as delivered
//! to the client; the broker's PUBACK is not awaited per message. While the broker is down,
//! `publish().await` waits in this task only (its queue absorbs the core's notifications).

use alarmnet_protocol::{AlertStatus, AlertTopic, Message, Prefix, Topic};
use rumqttc::{AsyncClient, QoS};

use super::delivery::{self, Retry};
use super::{Notice, NoticeReceiver, OutputContext, notification};
use crate::model::Alert;

/// The output's name in logs, metrics and the notification log.
pub const NAME: &str = "mqtt";

/// Publishes alerts on the collector's own MQTT connection.
#[derive(Debug, Clone)]
pub struct MqttAlerts {
    client: AsyncClient,
    prefix: Prefix,
}

/// One publish: topic, payload, retained.
pub type Publish = (String, Vec<u8>, bool);

impl MqttAlerts {
    pub fn new(client: AsyncClient, prefix: Prefix) -> Self {
        Self { client, prefix }
    }

    /// The topic of an alert.
    pub fn topic(prefix: &Prefix, alert: &Alert) -> String {
        Topic::Alert(AlertTopic {
            region: alert.subject.region().cloned(),
            site: alert.subject.site().cloned(),
            node: alert.subject.node().cloned(),
            rule: alert.rule.to_name(),
        })
        .format(prefix)
    }

    /// What to publish for one notification, in order.
    pub fn publishes(prefix: &Prefix, alert: &Alert) -> Vec<Publish> {
        let topic = Self::topic(prefix, alert);
        let body = alarmnet_protocol::encode(&Message::Alert(notification(alert)));
        match alert.status {
            AlertStatus::Firing => vec![(topic, body, true)],
            AlertStatus::Resolved => vec![
                (topic.clone(), body, false),
                (
                    topic,
                    alarmnet_protocol::encode(&Message::AlertCleared),
                    true,
                ),
            ],
        }
    }

    pub async fn run(self, mut rx: NoticeReceiver, ctx: OutputContext) {
        loop {
            let notice = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                n = rx.recv() => match n { Some(n) => n, None => break },
            };
            // A resumed alert's retained notification is still on the broker.
            let Notice::Alert(alert) = notice else {
                continue;
            };
            // One attempt: rumqttc queues while the broker is away, so a failure means the
            // client is gone for good.
            delivery::deliver(NAME, &alert, Retry::once(), &ctx, |_| self.publish(&alert)).await;
        }
    }

    /// Hands one notification's publishes to the client, in order.
    async fn publish(&self, alert: &Alert) -> Result<(), String> {
        for (topic, payload, retain) in Self::publishes(&self.prefix, alert) {
            self.client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| format!("MQTT client closed: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::tests_support::alert;

    #[test]
    fn firing_is_retained_and_resolution_clears() {
        let p = Prefix::default();
        let firing = MqttAlerts::publishes(&p, &alert("0000000000000f00", AlertStatus::Firing));
        let topic = "alarmnet/v1/$alerts/lanzhou/lz-cg/lz-cg-s001/node_offline";
        assert_eq!(firing.len(), 1);
        assert_eq!((firing[0].0.as_str(), firing[0].2), (topic, true));
        let decoded = alarmnet_protocol::decode(&p, topic, &firing[0].1).expect("valid");
        let Message::Alert(n) = decoded.message else {
            panic!("not an alert: {decoded:?}");
        };
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!(n.id.as_str(), "0000000000000f00");

        let resolved = MqttAlerts::publishes(&p, &alert("0000000000000f00", AlertStatus::Resolved));
        assert_eq!(resolved.len(), 2);
        assert_eq!((resolved[0].0.as_str(), resolved[0].2), (topic, false));
        assert!(String::from_utf8_lossy(&resolved[0].1).contains("\"resolved\""));
        assert_eq!((resolved[1].0.as_str(), resolved[1].2), (topic, true));
        assert!(resolved[1].1.is_empty());
    }
}
