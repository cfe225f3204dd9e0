//! [`decode`] and [`encode`]: bytes on a topic ⇄ a validated [`Message`].
//!
//! Design: the fast path deserializes straight into the typed payload. Only when that fails
//! is the payload parsed again, generically and with path tracking, to tell *which* field
//! broke *which* rule and to pick a stable [`Reason`]. Bad input is the rare case; it may
//! cost more than good input.

use std::fmt;

use serde::de::DeserializeOwned;

use crate::MAX_PAYLOAD_BYTES;
use crate::payload::{
    AlertNotification, Birth, CollectorState, Command, Fault, Heartbeat, Message, State,
    TestReceipt,
};
use crate::topic::{NodeTopic, Prefix, Topic};

/// A short, stable code for why a message was rejected, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The topic is not a protocol topic (prefix, shape, kind, or an invalid id level).
    BadTopic,
    /// The payload is larger than 16 KiB.
    TooLarge,
    /// The payload is not UTF-8 JSON, or not a JSON object.
    BadJson,
    /// `v` is a number other than 1.
    UnsupportedVersion,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong type, is out of range, too long, or breaks an id rule.
    InvalidField,
    /// An id in the payload differs from the topic's.
    IdMismatch,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::BadTopic,
        Reason::TooLarge,
        Reason::BadJson,
        Reason::UnsupportedVersion,
        Reason::MissingField,
        Reason::InvalidField,
        Reason::IdMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadTopic => "bad_topic",
            Reason::TooLarge => "too_large",
            Reason::BadJson => "bad_json",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::IdMismatch => "id_mismatch",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was rejected: a [`Reason`], the field concerned (a path such as
/// `metrics.cpu_pct` or `faults[2]`), and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub reason: Reason,
    pub field: Option<String>,
    pub detail: String,
}

impl DecodeError {
    fn new(reason: Reason, field: Option<String>, detail: impl Into<String>) -> Self {
        Self {
            reason,
            field,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field `{}`: {}", self.reason, field, self.detail),
            None => write!(f, "{}: {}", self.reason, self.detail),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A message with its topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub topic: Topic,
    pub message: Message,
}

impl Envelope {
    /// The topic string and payload bytes to publish under `prefix`.
    pub fn encode(&self, prefix: &Prefix) -> (String, Vec<u8>) {
        (self.topic.format(prefix), encode(&self.message))
    }
}

/// Encodes a message's payload. [`Message::AlertCleared`] is the empty payload.
pub fn encode(message: &Message) -> Vec<u8> {
    let bytes = match message {
        Message::Birth(m) => serde_json::to_vec(m),
        Message::State(m) => serde_json::to_vec(m),
        Message::Heartbeat(m) => serde_json::to_vec(m),
        Message::Fault(m) => serde_json::to_vec(m),
        Message::Test(m) => serde_json::to_vec(m),
        Message::Command(m) => serde_json::to_vec(m),
        Message::CollectorState(m) => serde_json::to_vec(m),
        Message::Alert(m) => serde_json::to_vec(m),
        Message::AlertCleared => Ok(Vec::new()),
    };
    // Serializing these types cannot fail: all map keys are strings and no custom
    // serializer returns an error.
    bytes.unwrap_or_default()
}

/// Decodes `payload` received on `topic` under `prefix`, enforcing every rule of the
/// contract, including that a birth's ids equal its topic's.
pub fn decode(prefix: &Prefix, topic: &str, payload: &[u8]) -> Result<Envelope, DecodeError> {
    let topic = Topic::parse(prefix, topic)
        .map_err(|e| DecodeError::new(Reason::BadTopic, None, e.to_string()))?;
    decode_on(topic, payload)
}

/// [`decode`] for a topic already parsed (a receiver that looks at the topic first, e.g. to
/// rate-limit by node, need not parse it twice).
pub fn decode_on(topic: Topic, payload: &[u8]) -> Result<Envelope, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::new(
            Reason::TooLarge,
            None,
            format!(
                "payload is {} bytes, at most {MAX_PAYLOAD_BYTES} allowed",
                payload.len()
            ),
        ));
    }
    let message = match &topic {
        Topic::Node(path, kind) => match kind {
            NodeTopic::Birth => {
                let birth: Birth = parse(payload)?;
                for (field, got, want) in [
                    ("region", birth.region.as_str(), path.region.as_str()),
                    ("site", birth.site.as_str(), path.site.as_str()),
                    ("node", birth.node.as_str(), path.node.as_str()),
                ] {
                    if got != want {
                        return Err(DecodeError::new(
                            Reason::IdMismatch,
                            Some(field.into()),
                            format!("payload says {got:?}, topic says {want:?}"),
                        ));
                    }
                }
                Message::Birth(birth)
            }
            NodeTopic::State => Message::State(parse::<State>(payload)?),
            NodeTopic::Heartbeat => Message::Heartbeat(parse::<Heartbeat>(payload)?),
            NodeTopic::Fault => Message::Fault(parse::<Fault>(payload)?),
            NodeTopic::Test => Message::Test(parse::<TestReceipt>(payload)?),
            NodeTopic::Command => Message::Command(parse::<Command>(payload)?),
        },
        Topic::CollectorState(_) => Message::CollectorState(parse::<CollectorState>(payload)?),
        Topic::Alert(_) if payload.is_empty() => Message::AlertCleared,
        Topic::Alert(t) => {
            let alert: AlertNotification = parse(payload)?;
            for (field, got, want) in [
                (
                    "region",
                    alert.region.as_ref().map(|x| x.as_str()),
                    t.region.as_ref().map(|x| x.as_str()),
                ),
                (
                    "site",
                    alert.site.as_ref().map(|x| x.as_str()),
                    t.site.as_ref().map(|x| x.as_str()),
                ),
                (
                    "node",
                    alert.node.as_ref().map(|x| x.as_str()),
                    t.node.as_ref().map(|x| x.as_str()),
                ),
                ("rule", Some(alert.rule.as_str()), Some(t.rule.as_str())),
            ] {
                if got != want {
                    return Err(DecodeError::new(
                        Reason::IdMismatch,
                        Some(field.into()),
                        format!("payload says {got:?}, topic says {want:?}"),
                    ));
                }
            }
            Message::Alert(alert)
        }
    };
    Ok(Envelope { topic, message })
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    // serde_json does not check the UTF-8 of strings it skips (unknown fields): check it all.
    let text = std::str::from_utf8(payload).map_err(|e| {
        DecodeError::new(
            Reason::BadJson,
            None,
            format!("not UTF-8: invalid byte at offset {}", e.valid_up_to()),
        )
    })?;
    serde_json::from_str(text).map_err(|_| explain::<T>(text))
}

/// The slow path: finds out why `payload` is not a valid `T`.
fn explain<T: DeserializeOwned>(payload: &str) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(e) if payload.is_empty() => {
            return DecodeError::new(Reason::BadJson, None, format!("empty payload ({e})"));
        }
        Err(e) if e.to_string().starts_with("number out of range") => {
            // Valid JSON syntax, but a number no f64 can hold: a non-finite number.
            let mut de = serde_json::Deserializer::from_str(payload);
            let field = serde_path_to_error::deserialize::<_, T>(&mut de)
                .err()
                .map(|e| e.path().to_string());
            return DecodeError::new(
                Reason::InvalidField,
                field.filter(|p| p != "."),
                "number out of range: not a finite number",
            );
        }
        Err(e) => return DecodeError::new(Reason::BadJson, None, format!("not valid JSON: {e}")),
    };
    let Some(object) = value.as_object() else {
        return DecodeError::new(Reason::BadJson, None, "the payload must be a JSON object");
    };
    match object.get("v") {
        None => {
            return DecodeError::new(
                Reason::MissingField,
                Some("v".into()),
                "the version is required",
            );
        }
        Some(v) if v.as_u64() == Some(crate::VERSION) => {}
        Some(v) if v.is_number() => {
            return DecodeError::new(
                Reason::UnsupportedVersion,
                Some("v".into()),
                format!(
                    "version {v} is not supported; this decoder speaks version {}",
                    crate::VERSION
                ),
            );
        }
        Some(v) => {
            return DecodeError::new(
                Reason::InvalidField,
                Some("v".into()),
                format!("must be the number 1, got {v}"),
            );
        }
    }
    let mut de = serde_json::Deserializer::from_str(payload);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(_) => DecodeError::new(Reason::BadJson, None, "trailing data after the JSON object"),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = strip_position(&inner.to_string());
            if let Some(name) = missing_field_name(&msg) {
                let field = if path == "." {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                return DecodeError::new(Reason::MissingField, Some(field), "is required");
            }
            let field = (path != ".").then_some(path);
            DecodeError::new(Reason::InvalidField, field, msg)
        }
    }
}

/// `missing field `boot`` → `boot`
fn missing_field_name(msg: &str) -> Option<&str> {
    let rest = msg.split_once("missing field `")?.1;
    rest.split_once('`').map(|(name, _)| name)
}

/// serde_json appends " at line 1 column 42"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}
