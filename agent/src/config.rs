//! The agent's configuration: a TOML file plus `ALARMNET_` environment overrides, read into
//! raw serde structs and then validated into typed settings, collecting every problem so a
//! technician fixes the file in one pass.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use alarmnet_protocol::payload::ShortText;
use alarmnet_protocol::{MetricName, Name, NodeId, NodePath, Prefix, RegionId, SiteId, Tags, Text};
use serde::Deserialize;

use alarmnet_protocol::KeyId;
use alarmnet_protocol::signing::{PublicKey, TrustedKeys};

use crate::checks::{self, CheckConfig, TestConfig};
use crate::protocol_state::CommandSettings;
use crate::spool::SpoolLimits;

/// The exit code for a configuration error (`EX_CONFIG` is 78, but `EX_USAGE`, 64, is the
/// project's promise for "bad config, nothing started").
pub const EXIT_CONFIG: i32 = 64;

/// Keys whose environment override is a comma-separated list.
const LIST_KEYS: &[&str] = &["mqtt.brokers"];

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or does not have the expected shape.
    #[error("cannot load configuration: {0}")]
    Load(String),
    /// The file has the right shape but these values are wrong.
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl ConfigError {
    /// Every problem, one line each.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Load(e) => vec![e.clone()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw shape, as written in the file.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    #[serde(default)]
    mqtt: RawMqtt,
    #[serde(default)]
    spool: RawSpool,
    #[serde(default)]
    checks: Vec<CheckConfig>,
    #[serde(default)]
    tests: BTreeMap<String, TestConfig>,
    #[serde(default)]
    commands: RawCommands,
}

/// `[commands]`: which collector keys this node trusts, and how strictly it admits commands.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommands {
    /// Key id → the collector's public key (base64url), as `alarmnet-collector keygen`
    /// prints it. Two entries let a key be rolled over without a gap.
    #[serde(default)]
    keys: BTreeMap<String, String>,
    /// Run unsigned commands too: only for a demo or a lab.
    #[serde(default)]
    allow_unsigned: bool,
    /// How far a command's `ts` may be ahead of this node's clock.
    #[serde(default = "default_max_skew")]
    max_skew: String,
}

impl Default for RawCommands {
    fn default() -> Self {
        Self {
            keys: BTreeMap::new(),
            allow_unsigned: false,
            max_skew: default_max_skew(),
        }
    }
}

fn default_max_skew() -> String {
    "30s".into()
}

/// `[node]`: who this node is. Ids travel in topics, names in payloads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    /// Unique in the whole network; also the MQTT client id.
    id: String,
    site: String,
    region: String,
    /// `siren`, `display`, or another lowercase word.
    #[serde(default = "default_kind")]
    kind: String,
    /// The human name shown in the console (Chinese is fine).
    name: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    model: Option<String>,
    firmware: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

fn default_kind() -> String {
    "siren".into()
}

/// `[mqtt]`: how to reach the broker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    /// `mqtt://host:port` or `mqtts://host:port`, tried in order.
    #[serde(default = "default_brokers")]
    brokers: Vec<String>,
    #[serde(default = "default_heartbeat")]
    heartbeat_interval: String,
    /// The broker publishes the Will after 1.5 × keep-alive of silence.
    #[serde(default = "default_keep_alive")]
    keep_alive: String,
    /// First reconnect delay bound; grows exponentially up to `reconnect_max`, with jitter.
    #[serde(default = "default_reconnect_min")]
    reconnect_min: String,
    #[serde(default = "default_reconnect_max")]
    reconnect_max: String,
    username: Option<String>,
    password: Option<String>,
    /// A file holding the password, so it stays out of this file; a relative name is
    /// looked up in systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when set.
    password_file: Option<PathBuf>,
    /// PEM file of the CA that signed the broker's certificate (mqtts); without it, the
    /// system's trust store is used. Required with a client certificate.
    ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that authenticate nodes by certificate
    /// (CN = node id). Both or neither, and only together with `ca_file`.
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default = "default_prefix")]
    prefix: String,
}

impl Default for RawMqtt {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            heartbeat_interval: default_heartbeat(),
            keep_alive: default_keep_alive(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            prefix: default_prefix(),
        }
    }
}

fn default_brokers() -> Vec<String> {
    vec!["mqtt://127.0.0.1:1883".into()]
}
fn default_heartbeat() -> String {
    "10s".into()
}
fn default_keep_alive() -> String {
    "30s".into()
}
fn default_reconnect_min() -> String {
    "1s".into()
}
fn default_reconnect_max() -> String {
    "60s".into()
}
fn default_prefix() -> String {
    alarmnet_protocol::DEFAULT_PREFIX.into()
}

/// `[spool]`: where unacknowledged messages wait, and how much may wait.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpool {
    #[serde(default = "default_spool_dir")]
    dir: PathBuf,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default = "default_max_records")]
    max_records: usize,
}

impl Default for RawSpool {
    fn default() -> Self {
        Self {
            dir: default_spool_dir(),
            max_bytes: default_max_bytes(),
            max_records: default_max_records(),
        }
    }
}

fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/lib/alarmnet-agent/spool")
}
fn default_max_bytes() -> u64 {
    SpoolLimits::default().max_bytes
}
fn default_max_records() -> usize {
    SpoolLimits::default().max_records
}

// ---------------------------------------------------------------------------------------
// Validated settings.

/// The node's identity, as its birth message states it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub path: NodePath,
    pub kind: Name,
    pub name: Option<ShortText>,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub model: Option<ShortText>,
    pub firmware: Option<ShortText>,
    pub tags: Tags,
}

/// One broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Broker {
    type Err = String;
    fn from_str(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("broker {url:?}: expected mqtt://host:port or mqtts://host:port")
        })?;
        let (tls, default_port) = match scheme {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => {
                return Err(format!(
                    "broker {url:?}: scheme {other:?} is not mqtt:// or mqtts://"
                ));
            }
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.is_empty() {
            return Err(format!(
                "broker {url:?}: expected host[:port] after the scheme"
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("broker {url:?}: unclosed [ in IPv6 address"))?;
            (host, after.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("broker {url:?}: port {p:?} is not 1..65535"))?,
            None => default_port,
        };
        if host.is_empty() {
            return Err(format!("broker {url:?}: host is empty"));
        }
        Ok(Broker {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// TLS material, read at connect time.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub brokers: Vec<Broker>,
    pub heartbeat_interval: Duration,
    pub keep_alive: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// User name and password for the broker.
    pub credentials: Option<(String, Password)>,
    pub tls: TlsFiles,
    pub prefix: Prefix,
}

#[derive(Debug, Clone)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub limits: SpoolLimits,
}

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: Identity,
    pub mqtt: MqttSettings,
    pub spool: SpoolSettings,
    pub checks: Vec<CheckConfig>,
    pub tests: BTreeMap<Name, TestConfig>,
    pub commands: CommandSettings,
}

impl AgentConfig {
    /// Reads `file` with overrides from the process environment.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.to_ascii_uppercase().starts_with("ALARMNET_"))
            .collect();
        Self::load_with_env(file, env)
    }

    /// Reads `file` with overrides from `env` (variables named `ALARMNET_<SECTION>__<KEY>`).
    pub fn load_with_env(file: &Path, env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let is_list_var = |k: &str| {
            let key = k
                .to_ascii_lowercase()
                .replacen("alarmnet_", "", 1)
                .replace("__", ".");
            LIST_KEYS.contains(&key.as_str())
        };
        let lists: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| is_list_var(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Scalars stay strings (no `try_parsing`): ids and secrets such as "007" must not
        // turn into numbers; the deserializer converts strings where a number is expected.
        let scalars = config::Environment::with_prefix("ALARMNET")
            .prefix_separator("_")
            .separator("__")
            .source(Some(env));
        let mut list_env = config::Environment::with_prefix("ALARMNET")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",");
        for key in LIST_KEYS {
            list_env = list_env.with_list_parse_key(key);
        }
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from(file).format(config::FileFormat::Toml))
            .add_source(scalars)
            .add_source(list_env.source(Some(lists)))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        raw.validate()
    }

    /// Parses a TOML string without environment overrides (tests, the simulator).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        raw.validate()
    }
}

fn duration(
    problems: &mut Vec<String>,
    key: &str,
    value: &str,
    min: Duration,
    max: Duration,
) -> Duration {
    match humantime::parse_duration(value) {
        Ok(d) if (min..=max).contains(&d) => d,
        Ok(d) => {
            problems.push(format!(
                "{key}: {} is out of range {} to {}",
                humantime::format_duration(d),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ));
            min
        }
        Err(e) => {
            problems.push(format!(
                "{key}: {value:?} is not a duration like \"10s\": {e}"
            ));
            min
        }
    }
}

fn id<T>(
    problems: &mut Vec<String>,
    key: &str,
    value: &str,
    parse: fn(&str) -> Result<T, alarmnet_protocol::IdError>,
) -> Option<T> {
    parse(value)
        .map_err(|e| problems.push(format!("{key}: {e}")))
        .ok()
}

fn short_text(problems: &mut Vec<String>, key: &str, value: Option<String>) -> Option<ShortText> {
    value.and_then(|v| {
        ShortText::new(v)
            .map_err(|e| problems.push(format!("{key}: {e}")))
            .ok()
    })
}

/// What a PEM file named in the config must contain.
#[derive(Debug, Clone, Copy)]
enum Pem {
    Certificate,
    PrivateKey,
}

/// Checks that `path` is a readable PEM file holding a certificate or a private key, so a
/// swapped or truncated file is a config error at start instead of a TLS failure on every
/// reconnection.
fn pem_file(problems: &mut Vec<String>, key: &str, path: &Path, want: Pem) {
    let text = match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            problems.push(format!(
                "{key}: {} is not a readable file: {e}",
                path.display()
            ));
            return;
        }
    };
    let found = match want {
        Pem::Certificate => text.contains("-----BEGIN CERTIFICATE-----"),
        Pem::PrivateKey => text
            .lines()
            .any(|l| l.starts_with("-----BEGIN ") && l.ends_with("PRIVATE KEY-----")),
    };
    if !found {
        let what = match want {
            Pem::Certificate => "a PEM certificate (BEGIN CERTIFICATE)",
            Pem::PrivateKey => "a PEM private key (BEGIN ... PRIVATE KEY)",
        };
        problems.push(format!("{key}: {} does not hold {what}", path.display()));
    }
}

impl RawCommands {
    fn validate(self, p: &mut Vec<String>) -> CommandSettings {
        let mut keys = Vec::new();
        for (kid, key) in self.keys {
            let id = KeyId::new(&kid).map_err(|e| p.push(format!("commands.keys: {e}")));
            // The message names the key id, never the value.
            let public = key
                .parse::<PublicKey>()
                .map_err(|e| p.push(format!("commands.keys.{kid}: {e}")));
            if let (Ok(id), Ok(public)) = (id, public) {
                keys.push((id, public));
            }
        }
        let max_skew = duration(
            p,
            "commands.max_skew",
            &self.max_skew,
            Duration::ZERO,
            Duration::from_secs(3600),
        );
        CommandSettings {
            keys: TrustedKeys::new(keys),
            allow_unsigned: self.allow_unsigned,
            max_skew,
        }
    }
}

impl RawConfig {
    fn validate(self) -> Result<AgentConfig, ConfigError> {
        let mut p = Vec::new();
        let n = self.node;
        let node_id = id(&mut p, "node.id", &n.id, |s| NodeId::new(s));
        let site = id(&mut p, "node.site", &n.site, |s| SiteId::new(s));
        let region = id(&mut p, "node.region", &n.region, |s| RegionId::new(s));
        let kind = id(&mut p, "node.kind", &n.kind, |s| Name::new(s));
        let name = short_text(&mut p, "node.name", n.name);
        let model = short_text(&mut p, "node.model", n.model);
        let firmware = short_text(&mut p, "node.firmware", n.firmware);
        if let Some(lat) = n
            .lat
            .filter(|l| !(l.is_finite() && (-90.0..=90.0).contains(l)))
        {
            p.push(format!("node.lat: {lat} is not a latitude from -90 to 90"));
        }
        if let Some(lon) = n
            .lon
            .filter(|l| !(l.is_finite() && (-180.0..=180.0).contains(l)))
        {
            p.push(format!(
                "node.lon: {lon} is not a longitude from -180 to 180"
            ));
        }
        let mut tags = Tags::new();
        for (k, v) in n.tags {
            let key = MetricName::new(&k).map_err(|e| format!("node.tags.{k}: {e}"));
            let value = Text::<256>::new(v).map_err(|e| format!("node.tags.{k}: {e}"));
            match (key, value) {
                (Ok(key), Ok(value)) => {
                    if let Err(e) = tags.insert(key, value) {
                        p.push(format!("node.tags: {e}"));
                    }
                }
                (key, value) => p.extend(key.err().into_iter().chain(value.err())),
            }
        }

        let m = self.mqtt;
        if m.brokers.is_empty() {
            p.push("mqtt.brokers: at least one broker is needed".into());
        }
        let brokers: Vec<Broker> = m
            .brokers
            .iter()
            .filter_map(|b| {
                b.trim()
                    .parse()
                    .map_err(|e| p.push(format!("mqtt.brokers: {e}")))
                    .ok()
            })
            .collect();
        let heartbeat_interval = duration(
            &mut p,
            "mqtt.heartbeat_interval",
            &m.heartbeat_interval,
            Duration::from_millis(500),
            Duration::from_secs(86_400),
        );
        let keep_alive = duration(
            &mut p,
            "mqtt.keep_alive",
            &m.keep_alive,
            Duration::from_secs(2),
            Duration::from_secs(u16::MAX as u64),
        );
        let reconnect_min = duration(
            &mut p,
            "mqtt.reconnect_min",
            &m.reconnect_min,
            Duration::from_millis(10),
            Duration::from_secs(600),
        );
        let reconnect_max = duration(
            &mut p,
            "mqtt.reconnect_max",
            &m.reconnect_max,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        if reconnect_max < reconnect_min {
            p.push("mqtt.reconnect_max: must not be below mqtt.reconnect_min".into());
        }
        let password = match (m.password, &m.password_file) {
            (Some(_), Some(_)) => {
                p.push("mqtt.password_file: set together with mqtt.password; give only one".into());
                None
            }
            (Some(pw), None) => Some(pw),
            (None, Some(file)) => {
                let credentials = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from);
                match read_secret_file("mqtt.password_file", file, credentials.as_deref()) {
                    Ok(pw) => Some(pw),
                    Err(e) => {
                        p.push(e);
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let credentials = match (m.username, password) {
            (Some(u), Some(pw)) => Some((u, Password(pw))),
            (Some(u), None) => Some((u, Password(String::new()))),
            (None, Some(_)) => {
                p.push("mqtt.password: set without mqtt.username".into());
                None
            }
            (None, None) => None,
        };
        if let Some(ca) = &m.ca_file {
            pem_file(&mut p, "mqtt.ca_file", ca, Pem::Certificate);
        }
        let client = match (m.cert_file, m.key_file) {
            (Some(c), Some(k)) => {
                pem_file(&mut p, "mqtt.cert_file", &c, Pem::Certificate);
                pem_file(&mut p, "mqtt.key_file", &k, Pem::PrivateKey);
                Some((c, k))
            }
            (Some(_), None) => {
                p.push("mqtt.cert_file: set without mqtt.key_file".into());
                None
            }
            (None, Some(_)) => {
                p.push("mqtt.key_file: set without mqtt.cert_file".into());
                None
            }
            (None, None) => None,
        };
        let uses_tls = brokers.iter().any(|b| b.tls);
        // Design: one scheme for all brokers. A failover from a TLS broker to a plain one
        // would send the node's traffic (and its password, if any) in clear text, and
        // would connect without the client certificate the TLS broker authenticates by.
        if uses_tls && brokers.iter().any(|b| !b.tls) {
            p.push(format!(
                "mqtt.brokers: mixes mqtt:// and mqtts:// ({}); all brokers of a node use one scheme",
                brokers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !uses_tls && (m.ca_file.is_some() || client.is_some()) {
            p.push("mqtt: TLS files are set but no broker uses mqtts://".into());
        }
        // A client certificate is only presented with an explicit trust anchor (rumqttc's
        // default TLS setup has no client authentication): refuse rather than connect
        // without the certificate the broker authenticates this node by.
        if uses_tls && client.is_some() && m.ca_file.is_none() {
            p.push(
                "mqtt.ca_file: required with mqtt.cert_file (the CA that signed the broker's \
                 certificate); without it the client certificate could not be presented"
                    .into(),
            );
        }
        let prefix = Prefix::new(m.prefix.clone())
            .map_err(|e| p.push(format!("mqtt.prefix: {e}")))
            .ok();

        let s = self.spool;
        if s.max_bytes < 64 * 1024 {
            p.push(format!(
                "spool.max_bytes: {} is below the minimum of 65536",
                s.max_bytes
            ));
        }
        if s.max_records < 10 {
            p.push(format!(
                "spool.max_records: {} is below the minimum of 10",
                s.max_records
            ));
        }
        if s.dir.as_os_str().is_empty() {
            p.push("spool.dir: must not be empty".into());
        }

        let mut tests = BTreeMap::new();
        for (k, t) in self.tests {
            if let Some(name) = id(&mut p, &format!("tests.{k}"), &k, |s| Name::new(s)) {
                tests.insert(name, t);
            }
        }
        p.extend(checks::validate(&self.checks, &tests));
        let commands = self.commands.validate(&mut p);

        match (node_id, site, region, kind, prefix) {
            (Some(node), Some(site), Some(region), Some(kind), Some(prefix)) if p.is_empty() => {
                Ok(AgentConfig {
                    node: Identity {
                        path: NodePath::new(region, site, node),
                        kind,
                        name,
                        lat: n.lat,
                        lon: n.lon,
                        model,
                        firmware,
                        tags,
                    },
                    mqtt: MqttSettings {
                        brokers,
                        heartbeat_interval,
                        keep_alive,
                        reconnect_min,
                        reconnect_max,
                        credentials,
                        tls: TlsFiles {
                            ca_file: m.ca_file,
                            client,
                        },
                        prefix,
                    },
                    spool: SpoolSettings {
                        dir: s.dir,
                        limits: SpoolLimits {
                            max_bytes: s.max_bytes,
                            max_records: s.max_records,
                        },
                    },
                    checks: self.checks,
                    tests,
                    commands,
                })
            }
            _ => Err(ConfigError::Invalid(p)),
        }
    }
}

/// A broker password: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The password itself, for the MQTT CONNECT packet.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Reads a secret from `file` (a relative name in `credentials`, systemd's credentials
/// directory, when given); one trailing line break is not part of it. Errors name `key`.
fn read_secret_file(key: &str, file: &Path, credentials: Option<&Path>) -> Result<String, String> {
    let path = match credentials {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_path_buf(),
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if value.is_empty() {
        return Err(format!("{key}: {}: empty", path.display()));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[node]
id = "lz-cg-s001"
site = "lz-chengguan"
region = "lanzhou"
name = "城关区人防办楼顶警报器"
"#;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write");
        (dir, path)
    }

    #[test]
    fn the_password_comes_from_a_file_and_never_shows_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("mqtt.pw");
        std::fs::write(&file, "node-secret-pw\n").expect("write");
        let text = format!("{MINIMAL}[mqtt]\nusername = \"node\"\npassword_file = {file:?}\n");
        let c = AgentConfig::from_toml(&text).expect("valid");
        assert_eq!(
            c.mqtt
                .credentials
                .as_ref()
                .map(|(u, p)| (u.as_str(), p.expose())),
            Some(("node", "node-secret-pw"))
        );
        let debug = format!("{c:?}");
        assert!(!debug.contains("node-secret-pw"), "{debug}");

        let text = format!(
            "{MINIMAL}[mqtt]\nusername = \"node\"\npassword = \"x\"\npassword_file = {file:?}\n"
        );
        let e = AgentConfig::from_toml(&text).expect_err("both").to_string();
        assert!(
            e.contains("mqtt.password_file: set together with mqtt.password"),
            "{e}"
        );
        let text =
            format!("{MINIMAL}[mqtt]\nusername = \"node\"\npassword_file = \"/nonexistent/pw\"\n");
        let e = AgentConfig::from_toml(&text)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("mqtt.password_file: /nonexistent/pw"), "{e}");
        assert!(!e.contains("node-secret-pw"), "{e}");
        let dir2 = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir2.path().join("pw"), "in-credentials\n").expect("write");
        assert_eq!(
            read_secret_file("k", Path::new("pw"), Some(dir2.path())).as_deref(),
            Ok("in-credentials")
        );
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = AgentConfig::from_toml(MINIMAL).expect("valid");
        assert_eq!(c.node.path.node.as_str(), "lz-cg-s001");
        assert_eq!(c.node.kind.as_str(), "siren");
        assert_eq!(c.mqtt.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(c.mqtt.keep_alive, Duration::from_secs(30));
        assert_eq!(
            c.mqtt.brokers,
            vec![Broker {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883
            }]
        );
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let text = r#"
[node]
id = "bad id"
site = "s/1"
region = "lanzhou"
lat = 123.0
[mqtt]
brokers = ["http://x:1883", "mqtt://h:0"]
heartbeat_interval = "0s"
keep_alive = "forever"
ca_file = "/nonexistent/ca.pem"
[spool]
max_records = 1
"#;
        let err = AgentConfig::from_toml(text).expect_err("invalid");
        let problems = err.problems();
        for needle in [
            "node.id",
            "node.site",
            "node.lat",
            "scheme \"http\"",
            "port \"0\"",
            "mqtt.heartbeat_interval",
            "mqtt.keep_alive",
            "mqtt.ca_file",
            "spool.max_records",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), 10, "{problems:#?}");
    }

    #[test]
    fn empty_broker_list_and_unknown_fields_are_refused() {
        let text = format!("{MINIMAL}\n[mqtt]\nbrokers = []\n");
        let err = AgentConfig::from_toml(&text).expect_err("no brokers");
        assert!(err.problems()[0].contains("at least one broker"));
        let text = format!("{MINIMAL}\n[mqtt]\nbroker = \"mqtt://x\"\n");
        let err = AgentConfig::from_toml(&text).expect_err("unknown field");
        assert!(err.problems()[0].contains("broker"), "{err}");
    }

    #[test]
    fn environment_overrides_keep_ids_as_strings_and_split_lists() {
        let (_dir, path) = write(MINIMAL);
        let env = HashMap::from([
            ("ALARMNET_NODE__ID".to_owned(), "007".to_owned()),
            ("ALARMNET_MQTT__PASSWORD".to_owned(), "0123".to_owned()),
            ("ALARMNET_MQTT__USERNAME".to_owned(), "node".to_owned()),
            (
                "ALARMNET_MQTT__BROKERS".to_owned(),
                "mqtts://a:1884,mqtts://b".to_owned(),
            ),
            ("ALARMNET_SPOOL__MAX_RECORDS".to_owned(), "500".to_owned()),
            ("ALARMNET_NODE__LAT".to_owned(), "36.5".to_owned()),
        ]);
        let c = AgentConfig::load_with_env(&path, env).expect("valid");
        assert_eq!(c.node.path.node.as_str(), "007");
        assert_eq!(
            c.mqtt.credentials,
            Some(("node".into(), Password::new("0123")))
        );
        assert_eq!(c.mqtt.brokers.len(), 2);
        assert_eq!(c.mqtt.brokers[1].to_string(), "mqtts://b:8883");
        assert_eq!(c.spool.limits.max_records, 500);
        assert_eq!(c.node.lat, Some(36.5));
    }

    #[test]
    fn broker_urls() {
        let b: Broker = "mqtt://[::1]:1999".parse().expect("v6");
        assert_eq!((b.host.as_str(), b.port, b.tls), ("::1", 1999, false));
        assert!("mqtt://".parse::<Broker>().is_err());
        assert!("mqtt://h:1/path".parse::<Broker>().is_err());
        assert!("h:1883".parse::<Broker>().is_err());
    }

    /// Writes a CA, a certificate and a key (PEM-shaped; validation reads the PEM labels,
    /// the TLS handshake checks the contents) into a temp dir.
    fn tls_files() -> (tempfile::TempDir, String, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
        let path = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p.display().to_string()
        };
        let (ca, crt, k) = (
            path("ca.pem", cert),
            path("node.pem", cert),
            path("node.key", key),
        );
        (dir, ca, crt, k)
    }

    fn problems_of(text: &str) -> Vec<String> {
        AgentConfig::from_toml(text)
            .expect_err("invalid")
            .problems()
    }

    #[test]
    fn client_certificate_with_ca_is_kept() {
        let (_dir, ca, cert, key) = tls_files();
        let text = format!(
            "{MINIMAL}\n[mqtt]\nbrokers = [\"mqtts://a:8883\", \"mqtts://b\"]\n\
             ca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        );
        let c = AgentConfig::from_toml(&text).expect("valid");
        assert_eq!(c.mqtt.tls.ca_file, Some(PathBuf::from(&ca)));
        assert_eq!(
            c.mqtt.tls.client,
            Some((PathBuf::from(cert), PathBuf::from(key)))
        );
    }

    #[test]
    fn client_certificate_without_ca_is_refused() {
        let (_dir, _ca, cert, key) = tls_files();
        let text = format!(
            "{MINIMAL}\n[mqtt]\nbrokers = [\"mqtts://a:8883\"]\n\
             cert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        );
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("mqtt.ca_file: required with mqtt.cert_file"),
            "{problems:#?}"
        );
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let (_dir, ca, cert, key) = tls_files();
        let base = format!("{MINIMAL}\n[mqtt]\nbrokers = [\"mqtts://a\"]\nca_file = \"{ca}\"\n");
        let problems = problems_of(&format!("{base}cert_file = \"{cert}\"\n"));
        assert_eq!(problems, vec!["mqtt.cert_file: set without mqtt.key_file"]);
        let problems = problems_of(&format!("{base}key_file = \"{key}\"\n"));
        assert_eq!(problems, vec!["mqtt.key_file: set without mqtt.cert_file"]);
    }

    #[test]
    fn swapped_or_missing_pem_files_are_refused() {
        let (_dir, ca, cert, key) = tls_files();
        // Certificate and key swapped, and a CA file that is not there.
        let text = format!(
            "{MINIMAL}\n[mqtt]\nbrokers = [\"mqtts://a\"]\nca_file = \"{ca}.missing\"\n\
             cert_file = \"{key}\"\nkey_file = \"{cert}\"\n"
        );
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].starts_with("mqtt.ca_file:") && problems[0].contains("not a readable file")
        );
        assert!(
            problems[1].starts_with("mqtt.cert_file:") && problems[1].contains("BEGIN CERTIFICATE")
        );
        assert!(problems[2].starts_with("mqtt.key_file:") && problems[2].contains("PRIVATE KEY"));
    }

    #[test]
    fn mixed_schemes_are_refused() {
        let text =
            format!("{MINIMAL}\n[mqtt]\nbrokers = [\"mqtts://a:8883\", \"mqtt://b:1883\"]\n");
        let problems = problems_of(&text);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].contains("mixes mqtt:// and mqtts:// (mqtts://a:8883, mqtt://b:1883)"),
            "{problems:#?}"
        );
    }

    #[test]
    fn commands_section_is_validated_naming_the_key_id() {
        let c = AgentConfig::from_toml(MINIMAL).expect("valid");
        assert!(
            c.commands.refuses_everything(),
            "no keys, no unsigned: nothing runs"
        );
        assert_eq!(c.commands.max_skew, Duration::from_secs(30));

        let key = alarmnet_protocol::signing::CommandKey::from_seed(
            KeyId::new("centre-2026").expect("kid"),
            [7; 32],
        )
        .public_key();
        let text = format!(
            "{MINIMAL}\n[commands]\nkeys = {{ \"centre-2026\" = \"{key}\" }}\nmax_skew = \"5s\"\n"
        );
        let c = AgentConfig::from_toml(&text).expect("valid");
        assert!(!c.commands.refuses_everything());
        assert!(!c.commands.allow_unsigned);
        assert_eq!(c.commands.max_skew, Duration::from_secs(5));

        let text = format!(
            "{MINIMAL}\n[commands]\nkeys = {{ \"old-key\" = \"secret-looking-value\", \"bad kid\" = \"{key}\" }}\nmax_skew = \"2h\"\n"
        );
        let problems = AgentConfig::from_toml(&text)
            .expect_err("invalid")
            .problems();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("commands.keys.old-key: "))
        );
        assert!(problems.iter().any(|p| p.contains("bad kid")));
        assert!(problems.iter().any(|p| p.starts_with("commands.max_skew")));
        assert!(
            !problems.iter().any(|p| p.contains("secret-looking-value")),
            "key values stay out of messages: {problems:#?}"
        );
    }

    #[test]
    fn commands_and_test_remote_flags_from_the_environment() {
        let text = format!(
            "{MINIMAL}\n[tests.sound]\ncommand = [\"true\"]\n[tests.silent]\ncommand = [\"true\"]\n[tests.battery]\ncommand = [\"true\"]\nremote = false\n"
        );
        let (_dir, path) = write(&text);
        let env = HashMap::from([(
            "ALARMNET_COMMANDS__ALLOW_UNSIGNED".to_owned(),
            "true".to_owned(),
        )]);
        let c = AgentConfig::load_with_env(&path, env).expect("valid");
        assert!(c.commands.allow_unsigned);
        let local = crate::checks::TestProcedures::new(c.tests).local_only();
        let local: Vec<&str> = local.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            local,
            vec!["battery", "sound"],
            "sound is local unless it says otherwise"
        );
    }

    #[test]
    fn shipped_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
        let c = AgentConfig::load_with_env(&path, HashMap::new()).expect("example is valid");
        assert!(!c.mqtt.brokers.is_empty());
    }
}
