//! Chat-robot webhook formats: the group robots a Chinese duty office reads alerts in
//! (DingTalk 钉钉, WeCom 企业微信, Feishu 飞书) each take their own message JSON, and
//! DingTalk and Feishu sign requests with a shared secret (HMAC-SHA256).
//!
//! Pure: a notification, a clock reading and the receiver's settings in, the URL and body of
//! the request out, so the formats and signatures are tested without a network.

use alarmnet_protocol::{AlertNotification, AlertStatus, Severity};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::RuleKind;

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The notification object itself (`docs/api.md`), for programs.
    #[default]
    Json,
    /// A DingTalk group robot (`msgtype: markdown`); signed when a secret is set.
    Dingtalk,
    /// A WeCom (企业微信) group robot (`msgtype: markdown`); its key is in the URL.
    Wecom,
    /// A Feishu (飞书) custom bot (`msg_type: text`); signed when a secret is set.
    Feishu,
}

impl WebhookFormat {
    /// Whether the format can use a signing secret.
    pub fn signs(self) -> bool {
        matches!(self, WebhookFormat::Dingtalk | WebhookFormat::Feishu)
    }
}

/// One request to send.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub url: reqwest::Url,
    pub body: Value,
}

/// The request for `n` in `format`, at `now_ms`; times shown in `tz`.
pub fn request(
    format: WebhookFormat,
    url: &reqwest::Url,
    secret: Option<&str>,
    n: &AlertNotification,
    now_ms: u64,
    tz: &jiff::tz::TimeZone,
) -> ChatRequest {
    let mut url = url.clone();
    let body = match format {
        WebhookFormat::Json => serde_json::to_value(n).unwrap_or(Value::Null),
        WebhookFormat::Dingtalk => {
            if let Some(secret) = secret {
                // https://open.dingtalk.com "加签": sign = base64(HmacSHA256(secret,
                // "{timestamp}\n{secret}")), both as query parameters, timestamp in ms.
                let sign = hmac_base64(secret.as_bytes(), format!("{now_ms}\n{secret}").as_bytes());
                url.query_pairs_mut()
                    .append_pair("timestamp", &now_ms.to_string())
                    .append_pair("sign", &sign);
            }
            json!({
                "msgtype": "markdown",
                "markdown": { "title": title(n), "text": markdown(n, tz) },
            })
        }
        WebhookFormat::Wecom => json!({
            "msgtype": "markdown",
            "markdown": { "content": markdown(n, tz) },
        }),
        WebhookFormat::Feishu => {
            let mut body = json!({
                "msg_type": "text",
                "content": { "text": plain(n, tz) },
            });
            if let Some(secret) = secret {
                // Feishu: sign = base64(HmacSHA256(key = "{timestamp}\n{secret}", message = "")),
                // timestamp in seconds, both in the body.
                let ts = now_ms / 1000;
                let sign = hmac_base64(format!("{ts}\n{secret}").as_bytes(), b"");
                body["timestamp"] = Value::String(ts.to_string());
                body["sign"] = Value::String(sign);
            }
            body
        }
    };
    ChatRequest { url, body }
}

/// Whether the receiver accepted the message. The robots answer HTTP 200 also when they
/// refuse one (a bad signature, a rate limit), with an error code in the body: DingTalk and
/// WeCom `{"errcode": 0}` on success, Feishu `{"code": 0}` (older bots `{"StatusCode": 0}`).
pub fn accepted(format: WebhookFormat, body: &str) -> Result<(), String> {
    let code_field = match format {
        WebhookFormat::Json => return Ok(()),
        WebhookFormat::Dingtalk | WebhookFormat::Wecom => &["errcode"][..],
        WebhookFormat::Feishu => &["code", "StatusCode"][..],
    };
    let value: Value = serde_json::from_str(body)
        .map_err(|_| format!("robot answered without a JSON status: {:.200}", body))?;
    let code = code_field.iter().find_map(|k| value.get(*k)?.as_i64());
    match code {
        Some(0) => Ok(()),
        Some(code) => {
            let msg = ["errmsg", "msg", "StatusMessage"]
                .iter()
                .find_map(|k| value.get(*k)?.as_str())
                .unwrap_or("");
            Err(format!("robot refused: code {code}: {msg:.200}"))
        }
        None => Err(format!(
            "robot answered without a status code: {:.200}",
            body
        )),
    }
}

fn hmac_base64(key: &[u8], message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    STANDARD.encode(ring::hmac::sign(&key, message).as_ref())
}

fn severity_zh(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "紧急",
        Severity::Major => "严重",
        Severity::Minor => "次要",
        Severity::Warning => "警告",
        Severity::Info => "提示",
    }
}

/// The rule's name for a duty officer; metric thresholds keep their own.
fn rule_zh(rule: &RuleKind) -> &str {
    match rule {
        RuleKind::NodeOffline => "节点离线",
        RuleKind::Fault => "设备故障",
        RuleKind::SiteOutage => "站点中断",
        RuleKind::RegionOutage => "区域中断",
        RuleKind::Flapping => "频繁掉线",
        RuleKind::TelemetryGap => "数据缺失",
        RuleKind::ClockSkew => "时钟偏差",
        RuleKind::CollectorBlind => "监测中心失联",
        RuleKind::StoreFailed => "监测中心存储故障",
        RuleKind::CollectorFailover => "监测中心主备切换",
        RuleKind::ReadinessLow => "就绪率过低",
        RuleKind::Threshold(name) => name.as_str(),
    }
}

fn title(n: &AlertNotification) -> String {
    let status = match n.status {
        AlertStatus::Firing => "告警",
        AlertStatus::Resolved => "恢复",
    };
    let rule = RuleKind::from(n.rule.clone());
    format!("【{status}·{}】{}", severity_zh(n.severity), rule_zh(&rule))
}

fn place(n: &AlertNotification) -> String {
    let parts: Vec<&str> = [
        n.region.as_ref().map(|r| r.as_str()),
        n.site.as_ref().map(|s| s.as_str()),
        n.node.as_ref().map(|x| x.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        "全网 (network)".into()
    } else {
        parts.join(" / ")
    }
}

fn local(ms: u64, tz: &jiff::tz::TimeZone) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The lines every format shows: what, where, since when, and the collector's summary.
fn lines(n: &AlertNotification, tz: &jiff::tz::TimeZone) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("地点 place", place(n)),
        ("开始 started", local(n.started_at, tz)),
    ];
    if let Some(end) = n.ended_at {
        out.push(("结束 ended", local(end, tz)));
    }
    out.push(("摘要 summary", n.summary.as_str().to_owned()));
    out.push(("告警 id", n.id.as_str().to_owned()));
    out
}

fn markdown(n: &AlertNotification, tz: &jiff::tz::TimeZone) -> String {
    let mut text = format!("### {}\n", title(n));
    for (label, value) in lines(n, tz) {
        text.push_str(&format!("- **{label}**: {value}\n"));
    }
    text
}

fn plain(n: &AlertNotification, tz: &jiff::tz::TimeZone) -> String {
    let mut text = title(n);
    for (label, value) in lines(n, tz) {
        text.push_str(&format!("\n{label}: {value}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use alarmnet_protocol::payload::Text;
    use alarmnet_protocol::{Name, NodeId, RegionId, SiteId, V1};

    fn notification(status: AlertStatus) -> AlertNotification {
        AlertNotification {
            v: V1,
            id: Text::truncated("a1b2c3d4e5f60718"),
            rule: Name::new("node_offline").expect("rule"),
            severity: Severity::Critical,
            status,
            region: Some(RegionId::new("lanzhou").expect("region")),
            site: Some(SiteId::new("lanzhou-chengguan").expect("site")),
            node: Some(NodeId::new("lz-chengguan-s01").expect("node")),
            kind: Some(Name::new("siren").expect("kind")),
            started_at: 1_764_662_400_000, // 2025-12-02 08:00:00 UTC
            ended_at: (status == AlertStatus::Resolved).then_some(1_764_662_700_000),
            summary: Text::truncated(
                "siren lz-chengguan-s01 at lanzhou/lanzhou-chengguan: offline (Will)",
            ),
            args: Default::default(),
        }
    }

    fn shanghai() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get("Asia/Shanghai").expect("zone")
    }

    fn url() -> reqwest::Url {
        reqwest::Url::parse("http://127.0.0.1:9/robot/send?access_token=abc").expect("url")
    }

    #[test]
    fn dingtalk_signs_in_the_query_as_documented() {
        let now = 1_764_662_401_234;
        let r = request(
            WebhookFormat::Dingtalk,
            &url(),
            Some("SECxyz"),
            &notification(AlertStatus::Firing),
            now,
            &shanghai(),
        );
        let q: std::collections::HashMap<_, _> = r.url.query_pairs().into_owned().collect();
        assert_eq!(q["access_token"], "abc");
        assert_eq!(q["timestamp"], now.to_string());
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"SECxyz");
        let expected = STANDARD.encode(ring::hmac::sign(&key, format!("{now}\nSECxyz").as_bytes()));
        assert_eq!(q["sign"], expected);
        assert_eq!(r.body["msgtype"], "markdown");
        assert_eq!(r.body["markdown"]["title"], "【告警·紧急】节点离线");
        let text = r.body["markdown"]["text"].as_str().expect("text");
        assert!(
            text.contains("lanzhou / lanzhou-chengguan / lz-chengguan-s01"),
            "{text}"
        );
        // 08:00 UTC is 16:00 in Shanghai.
        assert!(text.contains("2025-12-02 16:00:00"), "{text}");
        assert!(text.contains("offline (Will)"), "{text}");
    }

    #[test]
    fn feishu_signs_in_the_body_with_seconds() {
        let now = 1_764_662_401_234;
        let r = request(
            WebhookFormat::Feishu,
            &url(),
            Some("s3cret"),
            &notification(AlertStatus::Resolved),
            now,
            &shanghai(),
        );
        assert_eq!(r.url, url());
        assert_eq!(r.body["timestamp"], "1764662401");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"1764662401\ns3cret");
        assert_eq!(
            r.body["sign"],
            STANDARD.encode(ring::hmac::sign(&key, b"").as_ref())
        );
        assert_eq!(r.body["msg_type"], "text");
        let text = r.body["content"]["text"].as_str().expect("text");
        assert!(text.starts_with("【恢复·紧急】节点离线"), "{text}");
        assert!(text.contains("结束 ended: 2025-12-02 16:05:00"), "{text}");
    }

    #[test]
    fn wecom_and_unsigned_formats_leave_the_url_alone() {
        let n = notification(AlertStatus::Firing);
        let r = request(WebhookFormat::Wecom, &url(), None, &n, 0, &shanghai());
        assert_eq!(r.url, url());
        assert_eq!(r.body["msgtype"], "markdown");
        assert!(
            r.body["markdown"]["content"]
                .as_str()
                .expect("content")
                .starts_with("### 【告警·紧急】")
        );
        let r = request(WebhookFormat::Dingtalk, &url(), None, &n, 0, &shanghai());
        assert_eq!(r.url, url());
        let r = request(WebhookFormat::Feishu, &url(), None, &n, 0, &shanghai());
        assert!(r.body.get("sign").is_none());
        let r = request(
            WebhookFormat::Json,
            &url(),
            Some("ignored"),
            &n,
            0,
            &shanghai(),
        );
        assert_eq!(r.body, serde_json::to_value(&n).expect("json"));
    }

    #[test]
    fn robot_answers_are_read_for_their_error_codes() {
        use WebhookFormat::*;
        assert_eq!(accepted(Dingtalk, r#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
        assert_eq!(
            accepted(Dingtalk, r#"{"errcode":310000,"errmsg":"sign not match"}"#),
            Err("robot refused: code 310000: sign not match".into())
        );
        assert_eq!(accepted(Wecom, r#"{"errcode":0,"errmsg":"ok"}"#), Ok(()));
        assert_eq!(accepted(Feishu, r#"{"code":0,"msg":"success"}"#), Ok(()));
        assert_eq!(accepted(Feishu, r#"{"StatusCode":0}"#), Ok(()));
        assert!(accepted(Feishu, r#"{"code":19021,"msg":"sign match fail"}"#).is_err());
        assert!(accepted(Wecom, "<html>").is_err());
        assert!(accepted(Dingtalk, "{}").is_err());
        assert_eq!(accepted(Json, ""), Ok(()));
    }

    #[test]
    fn network_alerts_and_unknown_rules_read_sensibly() {
        let mut n = notification(AlertStatus::Firing);
        n.region = None;
        n.site = None;
        n.node = None;
        n.rule = Name::new("battery_low").expect("rule");
        let text = plain(&n, &shanghai());
        assert!(text.starts_with("【告警·紧急】battery_low"), "{text}");
        assert!(text.contains("全网 (network)"), "{text}");
    }
}
