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
use serde::{Deserialize, Serialize};

use super::delivery::{self, Retry};
use super::{Notice, NoticeReceiver, Outgoing, OutputContext};
use crate::model::{Alert, AlertId, UnixMillis};

/// `[alertmanager]`: Prometheus Alertmanager's v2 API, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://127.0.0.1:9093`; alerts go to `{url}/api/v2/alerts`.
    pub url: String,
    /// Firing alerts are posted again this often: Alertmanager resolves an alert on its own
    /// when it stops hearing of it (its `resolve_timeout`, 5 minutes by default).
    #[serde(default = "default_resend", with = "humantime_serde")]
    pub resend_interval: Duration,
    #[serde(default = "delivery::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "delivery::default_attempts")]
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each retry, up to 5 minutes.
    #[serde(default = "delivery::default_retry_delay", with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Link shown in Alertmanager as the alert's source (the collector's console).
    pub generator_url: Option<String>,
    #[serde(default = "delivery::default_queue")]
    pub queue: usize,
}

fn default_resend() -> Duration {
    Duration::from_secs(60)
}

/// The Alertmanager output's settings, checked and parsed once at load.
#[derive(Debug, Clone)]
pub struct AlertmanagerSettings {
    /// `{url}/api/v2/alerts`.
    pub endpoint: reqwest::Url,
    pub resend_interval: Duration,
    pub timeout: Duration,
    pub retry: Retry,
    /// The console's link, parsed.
    pub generator_url: Option<reqwest::Url>,
    pub queue: usize,
}

impl AlertmanagerConfig {
    /// The checked settings, or every problem under `alertmanager.`.
    pub fn build(&self) -> Result<AlertmanagerSettings, Vec<String>> {
        let mut errors = Vec::new();
        let endpoint = delivery::http_url("alertmanager.url", &self.url)
            .and_then(|_| {
                let base = self.url.trim_end_matches('/');
                delivery::http_url("alertmanager.url", &format!("{base}/api/v2/alerts"))
            })
            .map_err(|e| errors.push(e));
        delivery::check_delivery(
            "alertmanager",
            self.max_attempts,
            self.queue,
            self.timeout,
            &mut errors,
        );
        if self.resend_interval < Duration::from_secs(1) {
            errors.push("alertmanager.resend_interval: must be at least 1s".into());
        }
        let generator_url = match &self.generator_url {
            Some(u) => delivery::http_url("alertmanager.generator_url", u)
                .map(Some)
                .map_err(|e| errors.push(e)),
            None => Ok(None),
        };
        match (endpoint, generator_url) {
            (Ok(endpoint), Ok(generator_url)) if errors.is_empty() => Ok(AlertmanagerSettings {
                endpoint,
                resend_interval: self.resend_interval,
                timeout: self.timeout,
                retry: Retry::new(self.max_attempts, self.retry_delay),
                generator_url,
                queue: self.queue,
            }),
            _ => Err(errors),
        }
    }
}

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
pub fn rfc3339(ms: UnixMillis) -> String {
    match jiff::Timestamp::from_millisecond(i64::try_from(ms.as_millis()).unwrap_or(i64::MAX)) {
        Ok(t) => t.to_string(),
        Err(_) => jiff::Timestamp::UNIX_EPOCH.to_string(),
    }
}

/// Maps an alert to Alertmanager's shape; `now` ends a resolved alert that has no end time.
pub fn postable(
    alert: &Alert,
    generator_url: Option<&reqwest::Url>,
    now: UnixMillis,
) -> PostableAlert {
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
            AlertStatus::Resolved => Some(rfc3339(alert.ended_at.unwrap_or(now))),
        },
        generator_url: generator_url.map(|u| u.as_str().to_owned()),
    }
}

/// The Alertmanager output.
#[derive(Debug)]
pub struct Alertmanager {
    endpoint: reqwest::Url,
    client: reqwest::Client,
    resend: Duration,
    retry: Retry,
    generator_url: Option<reqwest::Url>,
}

impl Alertmanager {
    pub fn new(config: &AlertmanagerSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("alarmnet-collector/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            endpoint: config.endpoint.clone(),
            client,
            resend: config.resend_interval,
            retry: config.retry,
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
                        .map(|a| postable(a, self.generator_url.as_ref(), (ctx.clock)()))
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
                            AlertStatus::Firing => firing.insert(alert.id, Arc::new(alert.alert.clone())),
                            AlertStatus::Resolved => firing.remove(&alert.id),
                        };
                        self.deliver(&alert, &ctx).await;
                    }
                },
            }
        }
    }

    async fn deliver(&self, alert: &Outgoing, ctx: &OutputContext) -> bool {
        let body = [postable(alert, self.generator_url.as_ref(), (ctx.clock)())];
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
        let console = reqwest::Url::parse("http://console/").expect("url");
        let p = postable(&a, Some(&console), UnixMillis::EPOCH);
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
        let r = postable(
            &alert("0000000000000f01", AlertStatus::Resolved),
            None,
            UnixMillis::EPOCH,
        );
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
        let p = postable(&a, None, UnixMillis::EPOCH);
        assert!(!p.labels.contains_key("node") && !p.labels.contains_key("kind"));
        assert_eq!(p.labels["site"], "lz-cg");
    }

    #[test]
    fn the_generator_url_is_parsed_at_load() {
        let config = |url: &str| {
            serde_json::from_value::<AlertmanagerConfig>(serde_json::json!({
                "url": "http://127.0.0.1:9093", "generator_url": url
            }))
            .expect("deserialized")
        };
        let built = config("https://console.example/alerts")
            .build()
            .expect("valid");
        assert_eq!(
            built.generator_url.map(String::from).as_deref(),
            Some("https://console.example/alerts")
        );
        let errors = config("console").build().expect_err("not a URL");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("alertmanager.generator_url: "),
            "{errors:?}"
        );
    }

    #[test]
    fn rfc3339_keeps_milliseconds() {
        assert_eq!(
            rfc3339(UnixMillis::from_millis(1_764_330_000_123)),
            "2025-11-28T11:40:00.123Z"
        );
    }
}
