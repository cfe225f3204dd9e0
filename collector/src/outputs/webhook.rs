//! Webhooks: a JSON POST of each notification ([`alarmnet_protocol::AlertNotification`]),
//! retried with exponential backoff, every attempt logged and kept in the notification log.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::chat::{WebhookFormat, accepted, request};
use super::{Notice, NoticeReceiver, OutputContext, notification, retry_delay};
use crate::config::WebhookConfig;
use crate::ingest::now_millis;
use crate::metrics::OutputEvent;
use crate::model::Alert;

/// The longest wait between two attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// One webhook receiver.
#[derive(Debug)]
pub struct Webhook {
    name: String,
    url: reqwest::Url,
    format: WebhookFormat,
    secret: Option<String>,
    /// Times in chat messages are shown in the configured zone.
    tz: jiff::tz::TimeZone,
    client: reqwest::Client,
    max_attempts: u32,
    retry_delay: Duration,
}

/// Why an attempt failed (kept in the notification log).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {e}")
}

impl Webhook {
    pub fn new(
        name: String,
        config: &WebhookConfig,
        tz: jiff::tz::TimeZone,
    ) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            // Validated at config load would be nicer; an invalid header is skipped loudly.
            match (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                _ => tracing::error!(webhook = %name, header = %k, "invalid header skipped"),
            }
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .default_headers(headers)
            .user_agent(concat!("alarmnet-collector/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // The URL was validated with the configuration.
        let url = reqwest::Url::parse(&config.url).unwrap_or_else(|_| {
            reqwest::Url::parse("http://127.0.0.1/").unwrap_or_else(|_| unreachable!())
        });
        Ok(Self {
            name,
            url,
            format: config.format,
            secret: config.secret.clone(),
            tz,
            client,
            max_attempts: config.max_attempts.max(1),
            retry_delay: config.retry_delay,
        })
    }

    /// Delivers notifications in order until the queue closes or shutdown.
    pub async fn run(self, mut rx: NoticeReceiver, ctx: OutputContext) {
        loop {
            let notice = tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                n = rx.recv() => match n { Some(n) => n, None => break },
            };
            if let Notice::Alert(alert) = notice {
                self.deliver(&alert, &ctx).await;
            }
        }
    }

    /// Posts one notification, retrying until success or `max_attempts`.
    pub async fn deliver(&self, alert: &Alert, ctx: &OutputContext) -> bool {
        let body = notification(alert);
        for attempt in 1..=self.max_attempts {
            let at = now_millis();
            // Built anew for each attempt: the chat robots' signatures carry the time.
            let req = request(
                self.format,
                &self.url,
                self.secret.as_deref(),
                &body,
                at,
                &self.tz,
            );
            let result = match self.client.post(req.url).json(&req.body).send().await {
                Ok(r) if r.status().is_success() && self.format == WebhookFormat::Json => Ok(()),
                Ok(r) if r.status().is_success() => match r.text().await {
                    Ok(text) => accepted(self.format, &text),
                    Err(e) => Err(describe(&e)),
                },
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(describe(&e)),
            };
            ctx.record(&self.name, alert, attempt, at, result.clone())
                .await;
            match result {
                Ok(()) => {
                    tracing::info!(
                        webhook = %self.name, alert = %alert.id, status = ?alert.status, attempt,
                        "notification delivered"
                    );
                    ctx.outcome(&self.name, OutputEvent::Sent);
                    return true;
                }
                Err(error) if attempt < self.max_attempts => {
                    let wait = retry_delay(self.retry_delay, attempt, MAX_RETRY_DELAY);
                    tracing::warn!(
                        webhook = %self.name, alert = %alert.id, attempt, %error,
                        retry_in = %humantime::format_duration(wait),
                        "notification attempt failed"
                    );
                    tokio::select! {
                        _ = ctx.shutdown.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(error) => {
                    tracing::error!(
                        webhook = %self.name, alert = %alert.id, attempt, %error,
                        "notification given up after the last attempt"
                    );
                }
            }
        }
        ctx.outcome(&self.name, OutputEvent::Failed);
        false
    }
}
