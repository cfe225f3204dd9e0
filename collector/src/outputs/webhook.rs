//! Webhooks: a JSON POST of each notification ([`alarmnet_protocol::AlertNotification`]),
//! or a chat robot's message; retried by the outputs' one delivery loop ([`super::delivery`]),
//! every attempt logged and kept in the notification log.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::chat::{WebhookFormat, accepted, request};
use super::delivery::{self, Retry};
use super::{Notice, NoticeReceiver, Outgoing, OutputContext, notification};
use crate::model::UnixMillis;

/// `[[webhooks]]`: a JSON POST of every notification, as written in the file.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The body: `json` (the notification object, for programs), or a chat robot's own
    /// message (`dingtalk`, `wecom`, `feishu`) for a duty office's group chat.
    #[serde(default)]
    pub format: WebhookFormat,
    /// The robot's signing secret (DingTalk 加签, Feishu 签名校验); requests are signed
    /// with it when set. Only for `dingtalk` and `feishu`.
    #[serde(default)]
    pub secret: Option<String>,
    /// Extra request headers, e.g. an `Authorization` token the receiver expects.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time allowed for one attempt.
    #[serde(default = "delivery::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per notification, the first included, before it is given up (and logged).
    #[serde(default = "delivery::default_attempts")]
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each retry, up to 5 minutes.
    #[serde(default = "delivery::default_retry_delay", with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Notifications waiting for this receiver; when full, new ones are dropped and counted.
    #[serde(default = "delivery::default_queue")]
    pub queue: usize,
}

/// Shows what [`WebhookSettings`]'s `Debug` shows, or `<invalid>` for a URL that does not
/// parse.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = reqwest::Url::parse(&self.url)
            .map_or_else(|_| "<invalid>".to_owned(), |u| shown_url(&u));
        f.debug_struct("WebhookConfig")
            .field("url", &url)
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A webhook receiver's settings, checked and parsed once at load: what [`Webhook::new`]
/// is built from.
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    pub format: WebhookFormat,
    pub secret: Option<String>,
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub retry: Retry,
    pub queue: usize,
}

/// Scheme, host and path: never the query (robot URLs carry their access token there) or
/// the credentials.
fn shown_url(u: &reqwest::Url) -> String {
    format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.path()
    )
}

impl std::fmt::Debug for WebhookSettings {
    /// Never shows the signing secret, the header values, nor the URL's query or
    /// credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &shown_url(&self.url))
            .field("format", &self.format)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("queue", &self.queue)
            .finish()
    }
}

impl WebhookConfig {
    /// The checked settings, or every problem, each under its key (`at` is the entry's
    /// path, e.g. `webhooks[0]`).
    pub fn build(&self, at: &str) -> Result<WebhookSettings, Vec<String>> {
        let mut errors = Vec::new();
        let url = delivery::http_url(&format!("{at}.url"), &self.url).map_err(|e| errors.push(e));
        delivery::check_delivery(at, self.max_attempts, self.queue, self.timeout, &mut errors);
        if self.secret.is_some() && !self.format.signs() {
            errors.push(format!(
                "{at}.secret: only the dingtalk and feishu formats sign requests (format is {:?})",
                self.format
            ));
        }
        if self.secret.as_deref().is_some_and(str::is_empty) {
            errors.push(format!("{at}.secret: empty"));
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            match (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                _ => errors.push(format!("{at}.headers: {k:?} is not a valid HTTP header")),
            }
        }
        match url {
            Ok(url) if errors.is_empty() => Ok(WebhookSettings {
                url,
                format: self.format,
                secret: self.secret.clone(),
                headers,
                timeout: self.timeout,
                retry: Retry::new(self.max_attempts, self.retry_delay),
                queue: self.queue,
            }),
            _ => Err(errors),
        }
    }
}

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
        config: &WebhookSettings,
        tz: jiff::tz::TimeZone,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .default_headers(config.headers.clone())
            .user_agent(concat!("alarmnet-collector/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            name,
            url: config.url.clone(),
            format: config.format,
            secret: config.secret.clone(),
            tz,
            client,
            retry: config.retry,
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
    pub async fn deliver(&self, alert: &Outgoing, ctx: &OutputContext) -> bool {
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
        at: UnixMillis,
    ) -> Result<(), String> {
        // Built anew for each attempt: the chat robots' signatures carry the time.
        let req = request(
            self.format,
            &self.url,
            self.secret.as_deref(),
            body,
            at.as_millis(),
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
