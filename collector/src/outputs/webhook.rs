//! Webhooks: a JSON POST of each notification ([`alarmnet_protocol::AlertNotification`]),
//! or a chat robot's message; retried by the outputs' one delivery loop ([`super::delivery`]),
//! every attempt logged and kept in the notification log.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::chat::{WebhookFormat, accepted, request};
use super::delivery::{self, Retry};
use super::{Notice, NoticeReceiver, OutputContext, notification};
use crate::config::WebhookConfig;
use crate::model::{Alert, Millis};

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
    retry: Retry,
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
            retry: Retry::new(config.max_attempts, config.retry_delay),
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

    /// Posts one notification, retrying until success or the last attempt.
    pub async fn deliver(&self, alert: &Alert, ctx: &OutputContext) -> bool {
        let body = notification(alert);
        delivery::deliver(&self.name, alert, self.retry, ctx, |at| {
            self.attempt(&body, at)
        })
        .await
    }

    /// One POST at `at`.
    async fn attempt(
        &self,
        body: &alarmnet_protocol::AlertNotification,
        at: Millis,
    ) -> Result<(), String> {
        // Built anew for each attempt: the chat robots' signatures carry the time.
        let req = request(
            self.format,
            &self.url,
            self.secret.as_deref(),
            body,
            at,
            &self.tz,
        );
        match self.client.post(req.url).json(&req.body).send().await {
            Ok(r) if r.status().is_success() && self.format == WebhookFormat::Json => Ok(()),
            Ok(r) if r.status().is_success() => match r.text().await {
                Ok(text) => accepted(self.format, &text),
                Err(e) => Err(describe(&e)),
            },
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => Err(describe(&e)),
        }
    }
}
