//! Prometheus Alertmanager v2: `POST {url}/api/v2/alerts`.
//!
//! Labels: `alertname` (the rule), `severity`, `region`, `site`, `node`, `kind` (absent when
//! the alert has none: Alertmanager treats an empty label as absent anyway) and
//! `alarmnet_id` (the stable alert id), so Alertmanager's grouping, inhibition and routing
//! work on them; annotation `summary`. A firing alert has no `endsAt`; Alertmanager then
//! resolves it by itself after its `resolve_timeout` unless it hears of it again, so every
//! firing alert is posted again each `resend_interval` (Alertmanager's own clients do the
//! same). A resolved alert is posted once with `endsAt` = its end and forgotten.
//!
//! The first post of a notification and its retries are kept in the notification log;
//! periodic re-posts are not (they repeat what the log already says), failures are logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alarmnet_protocol::AlertStatus;
use serde::Serialize;

use super::delivery::{self, Retry};
use super::{Notice, NoticeReceiver, OutputContext};
use crate::config::AlertmanagerConfig;
use crate::model::{Alert, AlertId, Millis, now_millis};

/// The output's name in logs, metrics and the notification log.
pub const NAME: &str = "alertmanager";

/// One alert as Alertmanager's v2 API takes it (`postableAlert`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// RFC 3339 in UTC, millisecond precision.
pub fn rfc3339(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX)) {
        Ok(t) => t.to_string(),
        Err(_) => jiff::Timestamp::UNIX_EPOCH.to_string(),
    }
}

/// Maps an alert to Alertmanager's shape.
pub fn postable(alert: &Alert, generator_url: Option<&str>) -> PostableAlert {
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_owned(), alert.rule.to_string());
    labels.insert("severity".to_owned(), alert.severity.as_str().to_owned());
    labels.insert("alarmnet_id".to_owned(), alert.id.to_string());
    let s = &alert.subject;
    for (key, value) in [
        ("region", s.region().map(|x| x.to_string())),
        ("site", s.site().map(|x| x.to_string())),
        ("node", s.node().map(|x| x.to_string())),
        ("kind", alert.kind.as_ref().map(|x| x.to_string())),
    ] {
        if let Some(v) = value {
            labels.insert(key.to_owned(), v);
        }
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_owned(), alert.summary.clone());
    PostableAlert {
        labels,
        annotations,
        starts_at: rfc3339(alert.started_at),
        ends_at: match alert.status {
            AlertStatus::Firing => None,
            AlertStatus::Resolved => Some(rfc3339(alert.ended_at.unwrap_or_else(now_millis))),
        },
        generator_url: generator_url.map(str::to_owned),
    }
}

/// The Alertmanager output.
#[derive(Debug)]
pub struct Alertmanager {
    endpoint: reqwest::Url,
    client: reqwest::Client,
    resend: Duration,
    retry: Retry,
    generator_url: Option<String>,
}

impl Alertmanager {
    pub fn new(config: &AlertmanagerConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("alarmnet-collector/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = config.url.trim_end_matches('/');
        // The URL was validated with the configuration.
        let endpoint = reqwest::Url::parse(&format!("{base}/api/v2/alerts")).unwrap_or_else(|_| {
            reqwest::Url::parse("http://127.0.0.1/api/v2/alerts").unwrap_or_else(|_| unreachable!())
        });
        Ok(Self {
            endpoint,
            client,
            resend: config.resend_interval,
            retry: Retry::new(config.max_attempts, config.retry_delay),
            generator_url: config.generator_url.clone(),
        })
    }

    async fn post(&self, alerts: &[PostableAlert]) -> Result<(), String> {
        match self
            .client
            .post(self.endpoint.clone())
            .json(alerts)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let body: String = r
                    .text()
                    .await
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                Err(format!("HTTP {status}: {body}"))
            }
            Err(e) if e.is_timeout() => Err(format!("timeout: {e}")),
            Err(e) => Err(format!("request failed: {e}")),
        }
    }

    /// Delivers notifications and re-posts firing alerts until shutdown.
    pub async fn run(self, mut rx: NoticeReceiver, ctx: OutputContext) {
        let mut firing: BTreeMap<AlertId, Arc<Alert>> = BTreeMap::new();
        let mut resend = tokio::time::interval(self.resend);
        resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resend.tick().await;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = resend.tick() => {
                    if firing.is_empty() {
                        continue;
                    }
                    let batch: Vec<_> = firing
                        .values()
                        .map(|a| postable(a, self.generator_url.as_deref()))
                        .collect();
                    if let Err(error) = self.post(&batch).await {
                        tracing::warn!(alerts = batch.len(), %error, "re-posting firing alerts failed");
                    }
                }
                notice = rx.recv() => match notice {
                    None => break,
                    Some(Notice::Resume(alert)) => {
                        firing.insert(alert.id, alert);
                    }
                    Some(Notice::Alert(alert)) => {
                        match alert.status {
                            AlertStatus::Firing => firing.insert(alert.id, alert.clone()),
                            AlertStatus::Resolved => firing.remove(&alert.id),
                        };
                        self.deliver(&alert, &ctx).await;
                    }
                },
            }
        }
    }

    async fn deliver(&self, alert: &Alert, ctx: &OutputContext) -> bool {
        let body = [postable(alert, self.generator_url.as_deref())];
        delivery::deliver(NAME, alert, self.retry, ctx, |_| self.post(&body)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Subject;
    use crate::outputs::tests_support::alert;

    #[test]
    fn labels_and_times_are_mapped() {
        let a = alert("0000000000000f01", AlertStatus::Firing);
        let p = postable(&a, Some("http://console/"));
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "labels": {
                    "alertname": "node_offline", "severity": "critical", "alarmnet_id": "0000000000000f01",
                    "region": "lanzhou", "site": "lz-cg", "node": "lz-cg-s001", "kind": "siren"
                },
                "annotations": {"summary": "lz-cg-s001 is offline"},
                "startsAt": "2025-11-28T11:40:00Z",
                "generatorURL": "http://console/"
            })
        );
        let r = postable(&alert("0000000000000f01", AlertStatus::Resolved), None);
        assert_eq!(r.ends_at.as_deref(), Some("2025-11-28T11:50:00Z"));
    }

    #[test]
    fn site_alerts_have_no_node_label() {
        let mut a = alert("0000000000000f02", AlertStatus::Firing);
        a.subject = Subject::Site {
            region: a.subject.region().cloned().expect("region"),
            site: a.subject.site().cloned().expect("site"),
        };
        a.kind = None;
        let p = postable(&a, None);
        assert!(!p.labels.contains_key("node") && !p.labels.contains_key("kind"));
        assert_eq!(p.labels["site"], "lz-cg");
    }

    #[test]
    fn rfc3339_keeps_milliseconds() {
        assert_eq!(rfc3339(1_764_330_000_123), "2025-11-28T11:40:00.123Z");
    }
}
