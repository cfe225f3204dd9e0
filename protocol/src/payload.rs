//! Payload types, one per message kind, with every limit of the contract enforced while
//! deserializing. A value of these types that came from [`crate::decode`] is valid.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::ids::{BootId, CmdId, KeyId, MetricName, Name, NodeId, RegionId, SiteId};
use crate::signing::CmdSignature;

/// The version marker, serialized as `"v": 1`; any other value is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct V1;

impl Serialize for V1 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(crate::VERSION)
    }
}

impl<'de> Deserialize<'de> for V1 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d)? {
            crate::VERSION => Ok(V1),
            v => Err(de::Error::custom(format_args!(
                "unsupported version {v}: this decoder speaks version 1"
            ))),
        }
    }
}

/// A free-text string of at most `MAX` characters (Unicode scalar values, not bytes).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    /// Wraps `s` if it has at most `MAX` characters.
    pub fn new(s: impl Into<String>) -> Result<Self, String> {
        let s = s.into();
        let n = s.chars().count();
        if n <= MAX {
            Ok(Self(s))
        } else {
            Err(format!("at most {MAX} characters allowed, got {n}"))
        }
    }

    /// Wraps `s`, cutting it to `MAX` characters if it is longer: for text produced locally,
    /// such as a check's output, which must not make a whole message invalid.
    pub fn truncated(s: impl Into<String>) -> Self {
        let s = s.into();
        match s.char_indices().nth(MAX) {
            Some((cut, _)) => Self(s[..cut].to_owned()),
            None => Self(s),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> fmt::Debug for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> AsRef<str> for Text<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(s.into_owned()).map_err(de::Error::custom)
    }
}

/// Names, models, firmware and agent versions: at most 128 characters.
pub type ShortText = Text<128>;
/// Fault, test and alert messages: at most 1024 characters.
pub type LongText = Text<1024>;

/// A finite number within `[min, max]`.
fn bounded<'de, D: Deserializer<'de>>(d: D, min: f64, max: f64) -> Result<f64, D::Error> {
    let x = f64::deserialize(d)?;
    if x.is_finite() && (min..=max).contains(&x) {
        Ok(x)
    } else {
        Err(de::Error::custom(format_args!(
            "must be a number from {min} to {max}, got {x}"
        )))
    }
}

fn hb_interval<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    bounded(d, 0.5, 86_400.0)
}

fn latitude<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    bounded(d, -90.0, 90.0).map(Some)
}

fn longitude<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    bounded(d, -180.0, 180.0).map(Some)
}

/// A map with string keys of type `K`, at most `max` entries, values checked by `value`:
/// its entries sorted by key, a duplicate key refused.
fn bounded_map<'de, D, K, V>(
    d: D,
    what: &'static str,
    max: usize,
    value: fn(&V) -> Result<(), String>,
) -> Result<Vec<(K, V)>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    struct MapVisitor<K, V> {
        what: &'static str,
        max: usize,
        value: fn(&V) -> Result<(), String>,
        marker: std::marker::PhantomData<(K, V)>,
    }

    impl<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>> Visitor<'de> for MapVisitor<K, V> {
        type Value = Vec<(K, V)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an object of at most {} {}", self.max, self.what)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(self.max));
            while let Some(key) = map.next_key::<K>()? {
                if out.len() == self.max {
                    return Err(de::Error::custom(format_args!(
                        "at most {} {} allowed",
                        self.max, self.what
                    )));
                }
                let v: V = map.next_value()?;
                (self.value)(&v).map_err(de::Error::custom)?;
                out.push((key, v));
            }
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            if out.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key in {}",
                    self.what
                )));
            }
            Ok(out)
        }
    }

    d.deserialize_map(MapVisitor {
        what,
        max,
        value,
        marker: std::marker::PhantomData,
    })
}

/// Health metrics: name (`[a-z0-9_]{1,64}`) → finite number, at most 64 entries.
///
/// Design: entries sorted by name in one vector, not a tree map: a heartbeat's handful of
/// metrics is one allocation to decode and to drop (the collector keeps recent samples of
/// every node, and decodes every heartbeat).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(Vec<(MetricName, f64)>);

impl Metrics {
    /// The most entries a metrics map may hold.
    pub const MAX: usize = 64;

    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metric. Refuses non-finite values and a 65th entry.
    pub fn insert(&mut self, name: MetricName, value: f64) -> Result<(), String> {
        if !value.is_finite() {
            return Err(format!("metric {name}: value {value} is not finite"));
        }
        match self.0.binary_search_by(|(k, _)| k.cmp(&name)) {
            Ok(i) => self.0[i].1 = value,
            Err(_) if self.0.len() >= Self::MAX => {
                return Err(format!("at most {} metrics allowed", Self::MAX));
            }
            Err(i) => self.0.insert(i, (name, value)),
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|i| self.0[i].1)
    }

    /// The metrics in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&MetricName, f64)> {
        self.0.iter().map(|(k, v)| (k, *v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Metrics {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Metrics {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded_map(d, "metrics", Self::MAX, |v: &f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("metric value {v} is not finite"))
            }
        })
        .map(Self)
    }
}

/// Free-form tags: key (`[a-z0-9_]{1,64}`) → text of at most 256 characters, at most 32.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tags(BTreeMap<MetricName, Text<256>>);

impl Tags {
    /// The most entries a tag map may hold.
    pub const MAX: usize = 32;

    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a tag. Refuses a 33rd entry.
    pub fn insert(&mut self, key: MetricName, value: Text<256>) -> Result<(), String> {
        if self.0.len() >= Self::MAX && !self.0.contains_key(&key) {
            return Err(format!("at most {} tags allowed", Self::MAX));
        }
        self.0.insert(key, value);
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(Text::as_str)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&MetricName, &str)> {
        self.0.iter().map(|(k, v)| (k, v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded_map(d, "tags", Self::MAX, |_: &Text<256>| Ok(()))
            .map(|entries| Self(entries.into_iter().collect()))
    }
}

/// The most check names a birth may list.
pub const MAX_BIRTH_CHECKS: usize = 64;

fn birth_checks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Name>, D::Error> {
    let checks = Vec::<Name>::deserialize(d)?;
    if checks.len() > MAX_BIRTH_CHECKS {
        return Err(de::Error::custom(format_args!(
            "at most {MAX_BIRTH_CHECKS} check names allowed, got {}",
            checks.len()
        )));
    }
    Ok(checks)
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `birth`: who the node is. Retained; sent first on every (re)connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Birth {
    pub v: V1,
    pub boot: BootId,
    pub ts: u64,
    pub node: NodeId,
    pub site: SiteId,
    pub region: RegionId,
    /// `siren`, `display`, or another lowercase word.
    pub kind: Name,
    /// Seconds between heartbeats, 0.5 to 86400; tells the collector when to expect them.
    #[serde(deserialize_with = "hb_interval")]
    pub hb_interval_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ShortText>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "latitude"
    )]
    pub lat: Option<f64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "longitude"
    )]
    pub lon: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<ShortText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<ShortText>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "birth_checks"
    )]
    pub checks: Vec<Name>,
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

/// `online` or `offline`, for nodes and collectors alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Online,
    Offline,
}

/// Why a node went offline: `lost` (the Will) or `shutdown` (a clean, planned stop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    Lost,
    Shutdown,
}

/// `state`: online or offline, published by the agent and by the broker as its Last Will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub v: V1,
    pub state: NodeState,
    /// The boot of the connection this state belongs to; a stale Will has a foreign boot.
    pub boot: BootId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<OfflineReason>,
}

/// The number of checks in each status, as carried by a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckCounts {
    pub ok: u32,
    pub warning: u32,
    pub critical: u32,
    pub unknown: u32,
}

/// A fault's key, `check/code`, unique per node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultKey {
    pub check: Name,
    pub code: Name,
}

impl FaultKey {
    pub fn new(check: Name, code: Name) -> Self {
        Self { check, code }
    }
}

impl fmt::Display for FaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.check, self.code)
    }
}

impl std::str::FromStr for FaultKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (check, code) = s
            .split_once('/')
            .ok_or_else(|| format!("fault key {s:?} is not check/code"))?;
        Ok(Self {
            check: Name::new(check).map_err(|e| e.to_string())?,
            code: Name::new(code).map_err(|e| e.to_string())?,
        })
    }
}

impl Serialize for FaultKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FaultKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// `hb`: the node is alive, with its health metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: V1,
    pub boot: BootId,
    pub seq: u64,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<CheckCounts>,
    /// Every fault active now; `None` when the agent does not say (no reconciliation then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<Vec<FaultKey>>,
    /// Sent late from the agent's spool: proves nothing about liveness now.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay: bool,
}

/// A severity, for faults and alerts, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Major,
    Minor,
    Warning,
    Info,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Critical,
        Severity::Major,
        Severity::Minor,
        Severity::Warning,
        Severity::Info,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("unknown severity {s:?}: critical, major, minor, warning or info")
            })
    }
}

/// Whether a fault begins or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultStatus {
    Raised,
    Cleared,
}

/// `fault`: a fault raised or cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub v: V1,
    pub boot: BootId,
    pub seq: u64,
    pub ts: u64,
    pub check: Name,
    pub code: Name,
    pub severity: Severity,
    pub status: FaultStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<LongText>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay: bool,
}

impl Fault {
    pub fn key(&self) -> FaultKey {
        FaultKey::new(self.check.clone(), self.code.clone())
    }
}

/// The outcome of a self-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestResult {
    Pass,
    Fail,
    /// The test could not run.
    Error,
}

/// `test`: the receipt of a self-test or drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestReceipt {
    pub v: V1,
    pub boot: BootId,
    pub seq: u64,
    pub ts: u64,
    /// The drill (command id) that asked for the test; absent for scheduled self-tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<CmdId>,
    /// `silent`, `sound`, or another lowercase word.
    pub test: Name,
    pub result: TestResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub metrics: Metrics,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<LongText>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub replay: bool,
}

/// What a command asks the agent to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdAction {
    /// Publish birth and state again.
    Rebirth,
    /// Run every check now and publish a heartbeat.
    Check,
    /// Run the configured test procedure of this kind and publish a receipt.
    Test { test: Name },
}

/// `cmd`: a command to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCommand", into = "RawCommand")]
pub struct Command {
    pub id: CmdId,
    pub action: CmdAction,
    /// The collector's signature block (`ts`, `exp`, `kid`, `sig`); `None` when unsigned.
    /// See [`crate::signing`] for how it is made and checked.
    pub seal: Option<Seal>,
}

/// The signature block of a signed command: when it was made, the last instant it may
/// start, which collector key made it, and the Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seal {
    /// When the collector signed it, ms since the Unix epoch.
    pub ts: u64,
    /// The last instant the command may start, ms since the Unix epoch.
    pub exp: u64,
    pub kid: KeyId,
    pub sig: CmdSignature,
}

/// The wire form of a command; its field order is the order the signature covers
/// (`v cmd id test ts exp kid`, then `sig`), so serializing it with `sig: None` gives the
/// exact signed bytes.
#[derive(Serialize, Deserialize)]
pub(crate) struct RawCommand {
    pub(crate) v: V1,
    cmd: CmdVerb,
    id: CmdId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<KeyId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sig: Option<CmdSignature>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CmdVerb {
    Rebirth,
    Check,
    Test,
}

impl TryFrom<RawCommand> for Command {
    type Error = String;
    fn try_from(raw: RawCommand) -> Result<Self, String> {
        let action = match (raw.cmd, raw.test) {
            (CmdVerb::Rebirth, _) => CmdAction::Rebirth,
            (CmdVerb::Check, _) => CmdAction::Check,
            (CmdVerb::Test, Some(test)) => CmdAction::Test { test },
            (CmdVerb::Test, None) => {
                return Err("missing field `test` (required when cmd is test)".into());
            }
        };
        let seal = match (raw.ts, raw.exp, raw.kid, raw.sig) {
            (None, None, None, None) => None,
            (Some(ts), Some(exp), Some(kid), Some(sig)) => Some(Seal { ts, exp, kid, sig }),
            _ => {
                return Err(
                    "incomplete signature: `ts`, `exp`, `kid` and `sig` go together".into(),
                );
            }
        };
        Ok(Command {
            id: raw.id,
            action,
            seal,
        })
    }
}

impl From<Command> for RawCommand {
    fn from(c: Command) -> Self {
        let (cmd, test) = match c.action {
            CmdAction::Rebirth => (CmdVerb::Rebirth, None),
            CmdAction::Check => (CmdVerb::Check, None),
            CmdAction::Test { test } => (CmdVerb::Test, Some(test)),
        };
        let (ts, exp, kid, sig) = match c.seal {
            Some(s) => (Some(s.ts), Some(s.exp), Some(s.kid), Some(s.sig)),
            None => (None, None, None, None),
        };
        RawCommand {
            v: V1,
            cmd,
            id: c.id,
            test,
            ts,
            exp,
            kid,
            sig,
        }
    }
}

/// `$collector/{id}/state`: whether a collector is running; its Will says `offline`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorState {
    pub v: V1,
    pub state: NodeState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
}

/// Whether an alert is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// An alert notification, as published on `$alerts` topics, posted to webhooks and sent on
/// the event stream. Times are milliseconds since the Unix epoch, as everywhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertNotification {
    pub v: V1,
    /// Stable id: a fingerprint of the rule and the subject.
    pub id: Text<64>,
    pub rule: Name,
    pub severity: Severity,
    pub status: AlertStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<RegionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteId>,
    /// Absent for site and region alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Name>,
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<u64>,
    pub summary: LongText,
    /// The summary's facts by name (`cause`, `offline`, `total`, `check`, `code`, ...), so a
    /// receiver can word the alert in its own language; the keys per rule are in the docs.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub args: Tags,
}

/// A decoded message of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Birth(Birth),
    State(State),
    Heartbeat(Heartbeat),
    Fault(Fault),
    Test(TestReceipt),
    Command(Command),
    CollectorState(CollectorState),
    Alert(AlertNotification),
    /// The empty retained payload that clears a resolved alert's topic.
    AlertCleared,
}
