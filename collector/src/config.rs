//! The collector's configuration: a TOML file, then `ALARMNET_<SECTION>__<KEY>` environment
//! overrides, checked completely before anything is bound or connected.
//!
//! Design: each section is deserialized on its own and then validated, so a file with
//! several mistakes gets every one of them reported at once (serde stops at the first error
//! inside one struct, but not across sections). Environment values are read as strings and
//! converted by the `config` crate only where a number or boolean is expected, so ids and
//! secrets such as `007` stay exactly as written.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use alarmnet_protocol::NodeId;

use crate::alerts::{AlertsConfig, MonitorConfig};
use crate::commands::CommandsConfig;
use crate::http::{HttpConfig, HttpSettings};
use crate::ingest::IngestConfig;
use crate::ingest::mqtt::{MqttConfig, MqttSettings};
use crate::liveness::LivenessConfig;
use crate::outputs::alertmanager::{AlertmanagerConfig, AlertmanagerSettings};
use crate::outputs::webhook::{WebhookConfig, WebhookSettings};
use crate::readiness::ReadinessConfig;
use crate::secret;
use crate::store::StoreConfig;
use crate::timeseries::{SinkConfig, SinkSettings};
use crate::uptime::UptimeConfig;

/// Every section the collector knows.
const SECTIONS: &[&str] = &[
    "mqtt",
    "store",
    "http",
    "webhooks",
    "alertmanager",
    "influx",
    "ingest",
    "liveness",
    "alerts",
    "uptime",
    "commands",
    "drills",
    "readiness",
    "retention",
];

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub mqtt: MqttSettings,
    pub store: StoreConfig,
    pub http: HttpSettings,
    pub webhooks: Vec<WebhookSettings>,
    pub alertmanager: Option<AlertmanagerSettings>,
    /// `[influx]`: the optional time-series sink; without it no time series are written.
    pub influx: Option<SinkSettings>,
    pub ingest: IngestConfig,
    /// Node ids allowed to register, read from `ingest.allowlist_file` when the registration
    /// policy is `allowlist`.
    pub allowlist: Option<HashSet<NodeId>>,
    /// `[liveness]` and `[alerts]`: when nodes are late or offline, and the alert rules.
    pub monitor: MonitorConfig,
    /// `[uptime] time_zone`: the zone dates, days and months are read and written in.
    pub time_zone: jiff::tz::TimeZone,
    /// `[commands]`: signing and pacing of the commands the collector publishes.
    pub commands: CommandsConfig,
    /// The key read from `commands.key_file`; `None`: commands go out unsigned.
    pub command_key: Option<std::sync::Arc<alarmnet_protocol::signing::CommandKey>>,
    /// `[drills]`: defaults and schedules of drills.
    pub drills: crate::drills::DrillsSettings,
    /// `[readiness]`: which tests nodes must pass, and how recently.
    pub readiness: ReadinessConfig,
    /// `[retention]`: how long history is kept, and the pruning task's pace.
    pub retention: crate::store::retention::RetentionConfig,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Loads `path`, applies `ALARMNET_*` overrides from the process environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        // Only `ALARMNET_<SECTION>__<KEY>` variables: `ALARMNET_LOG` and `ALARMNET_CONFIG`
        // configure the process, not a section.
        let vars = std::env::vars()
            .filter(|(k, _)| {
                k.strip_prefix("ALARMNET_")
                    .is_some_and(|r| r.contains("__"))
            })
            .collect();
        let env = config::Environment::with_prefix("ALARMNET")
            .prefix_separator("_")
            .separator("__")
            .source(Some(vars));
        Self::load_with(path, env)
    }

    /// [`Config::load`] with an explicit environment source (tests pass a fixed map).
    pub fn load_with(path: &Path, env: config::Environment) -> Result<Config, ConfigErrors> {
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(env)
            .build()
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        Self::from_config(&built)
    }

    /// Loads from a TOML string with no environment (tests and the demo).
    pub fn from_toml(text: &str) -> Result<Config, ConfigErrors> {
        let built = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        Self::from_config(&built)
    }

    fn from_config(built: &config::Config) -> Result<Config, ConfigErrors> {
        let credentials = secret::credentials_dir();
        let credentials = credentials.as_deref();
        let mut errors = Vec::new();
        let table = match built
            .clone()
            .try_deserialize::<config::Map<String, config::Value>>()
        {
            Ok(t) => t,
            Err(e) => return Err(ConfigErrors(vec![e.to_string()])),
        };
        let mut unknown: Vec<&String> = table
            .keys()
            .filter(|k| !SECTIONS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        for key in unknown {
            errors.push(format!(
                "unknown section [{key}] (known: {})",
                SECTIONS.join(", ")
            ));
        }

        let mqtt = section::<MqttConfig>(built, &table, "mqtt", &mut errors);
        let store = section::<StoreConfig>(built, &table, "store", &mut errors);
        let http = section::<HttpConfig>(built, &table, "http", &mut errors);
        let webhooks = section::<Vec<WebhookConfig>>(built, &table, "webhooks", &mut errors);
        let alertmanager =
            section::<AlertmanagerConfig>(built, &table, "alertmanager", &mut errors);
        let influx = section::<SinkConfig>(built, &table, "influx", &mut errors);
        let ingest = section::<IngestConfig>(built, &table, "ingest", &mut errors);
        let liveness = section::<LivenessConfig>(built, &table, "liveness", &mut errors);
        let alerts = section::<AlertsConfig>(built, &table, "alerts", &mut errors);
        let uptime = section::<UptimeConfig>(built, &table, "uptime", &mut errors);
        let commands = section::<CommandsConfig>(built, &table, "commands", &mut errors)
            .map(Option::unwrap_or_default);
        let drills = section::<crate::drills::DrillsConfig>(built, &table, "drills", &mut errors)
            .map(Option::unwrap_or_default);
        let mut command_key = None;
        if let Some(c) = &commands {
            match c.build() {
                Ok(key) => command_key = key,
                Err(problems) => errors.extend(problems),
            }
        }
        let time_zone = match uptime.map(Option::unwrap_or_default).map(|u| u.build()) {
            Some(Ok(tz)) => Some(tz),
            Some(Err(e)) => {
                errors.push(e);
                None
            }
            None => None,
        };
        let drills = drills.and_then(|d| match d.build() {
            Ok(d) => Some(d),
            Err(problems) => {
                errors.extend(problems);
                None
            }
        });
        let readiness = section::<ReadinessConfig>(built, &table, "readiness", &mut errors)
            .map(Option::unwrap_or_default);
        if let Some(r) = &readiness {
            errors.extend(r.problems());
        }
        let monitor = match (liveness, alerts) {
            (Some(liveness), Some(alerts)) => {
                let m = MonitorConfig {
                    liveness: liveness.unwrap_or_default(),
                    alerts: alerts.unwrap_or_default(),
                };
                errors.extend(m.problems());
                Some(m)
            }
            _ => None,
        };

        // Sections that failed to parse were reported; validate the others.
        let mqtt = mqtt.and_then(|m| {
            match m
                .unwrap_or_else(empty_section::<MqttConfig>)
                .build(credentials)
            {
                Ok(m) => Some(m),
                Err(problems) => {
                    errors.extend(problems);
                    None
                }
            }
        });
        let store = store.map(Option::unwrap_or_default);
        if let Some(s) = &store {
            errors.extend(s.problems());
        }
        let retention = section::<crate::store::retention::RetentionConfig>(
            built,
            &table,
            "retention",
            &mut errors,
        )
        .map(Option::unwrap_or_default);
        if let Some(r) = &retention {
            errors.extend(r.problems());
        }
        let http = http.and_then(|h| match h.unwrap_or_default().build(credentials) {
            Ok(h) => Some(h),
            Err(problems) => {
                errors.extend(problems);
                None
            }
        });
        let webhooks = webhooks.map(Option::unwrap_or_default).map(|hooks| {
            let mut built = Vec::new();
            for (i, w) in hooks.iter().enumerate() {
                match w.build(&format!("webhooks[{i}]")) {
                    Ok(w) => built.push(w),
                    Err(problems) => errors.extend(problems),
                }
            }
            built
        });
        let alertmanager = alertmanager.map(|a| match a.map(|a| a.build()) {
            Some(Ok(a)) => Some(a),
            Some(Err(problems)) => {
                errors.extend(problems);
                None
            }
            None => None,
        });
        let influx = influx.map(|i| {
            let store_dir = store
                .as_ref()
                .map(|s| s.path.parent().unwrap_or(Path::new("")));
            match i?.build_with(credentials, store_dir) {
                Ok(i) => Some(i),
                Err(problems) => {
                    errors.extend(problems);
                    None
                }
            }
        });
        let ingest = ingest.map(Option::unwrap_or_default);
        let mut allowlist = None;
        if let Some(i) = &ingest {
            match i.build() {
                Ok(list) => allowlist = list,
                Err(problems) => errors.extend(problems),
            }
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        match (
            (mqtt, store, http, webhooks, commands, drills),
            (alertmanager, influx, ingest, monitor, time_zone, readiness),
            retention,
        ) {
            (
                (Some(mqtt), Some(store), Some(http), Some(webhooks), Some(commands), Some(drills)),
                (
                    Some(alertmanager),
                    Some(influx),
                    Some(ingest),
                    Some(monitor),
                    Some(time_zone),
                    Some(readiness),
                ),
                Some(retention),
            ) => Ok(Config {
                mqtt,
                store,
                http,
                webhooks,
                alertmanager,
                influx,
                ingest,
                allowlist,
                monitor,
                time_zone,
                commands,
                command_key,
                drills,
                readiness,
                retention,
            }),
            // Every `None` above pushed an error.
            _ => Err(ConfigErrors(vec!["invalid configuration".into()])),
        }
    }
}

/// `Some(None)`: section absent; `Some(Some(x))`: parsed; `None`: invalid (error pushed).
fn section<T: serde::de::DeserializeOwned>(
    built: &config::Config,
    table: &config::Map<String, config::Value>,
    key: &str,
    errors: &mut Vec<String>,
) -> Option<Option<T>> {
    if !table.contains_key(key) {
        return Some(None);
    }
    match built.get::<T>(key) {
        Ok(v) => Some(Some(v)),
        Err(e) => {
            errors.push(format!("[{key}]: {e}"));
            None
        }
    }
}

/// A section with every default, for a section that may be absent.
fn empty_section<T: serde::de::DeserializeOwned>() -> T {
    let empty = config::Config::builder()
        .build()
        .and_then(|c| c.try_deserialize::<T>());
    match empty {
        Ok(v) => v,
        // Only reachable if a required field without a default is added; the test
        // `defaults_alone_are_valid` guards it.
        Err(e) => panic!("section without defaults: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::ingest::Registration;
    use crate::ingest::mqtt::Broker;
    use crate::secret::Secret;

    fn env(vars: &[(&str, &str)]) -> config::Environment {
        let map = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        config::Environment::with_prefix("ALARMNET")
            .prefix_separator("_")
            .separator("__")
            .source(Some(map))
    }

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write test file");
        p
    }

    #[test]
    fn defaults_alone_are_valid() {
        let c = Config::from_toml("").expect("empty config is valid");
        assert_eq!(c.mqtt.collector_id.as_str(), "alarmnet-collector-1");
        assert_eq!(
            c.mqtt.broker,
            Broker {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        assert_eq!(c.ingest.registration, Registration::Open);
        assert!(c.webhooks.is_empty() && c.alertmanager.is_none() && c.influx.is_none());
    }

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/collector.example.toml");
        let c = Config::load_with(&path, env(&[])).expect("example config is valid");
        assert_eq!(c.webhooks.len(), 1);
        assert!(c.alertmanager.is_some());
        assert!(c.influx.is_some());
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.time_zone.iana_name(), Some("Asia/Shanghai"));
        assert_eq!(c.monitor.liveness.offline_factor, 3.0);
        assert_eq!(
            c.monitor.alerts.node_offline.group_wait,
            Duration::from_secs(15)
        );
        assert_eq!(c.monitor.alerts.thresholds.len(), 1);
        assert_eq!(c.http.tokens.len(), 2);
        assert_eq!(c.commands.rate, 2000);
        assert_eq!(c.drills.schedule.len(), 1);
        assert!(c.command_key.is_none());
    }

    #[test]
    fn command_key_and_drill_problems_are_config_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("command.key");
        crate::commands::key::keygen("centre-2026", &key).expect("keygen");
        let c = Config::from_toml(&format!("[commands]\nkey_file = {key:?}\n")).expect("valid");
        assert_eq!(
            c.command_key
                .map(|k| k.kid().as_str().to_owned())
                .as_deref(),
            Some("centre-2026")
        );
        let errors = Config::from_toml(&format!(
            "[commands]\nkey_file = {:?}\nrate = 0\nttl = \"0s\"\n\
             [drills]\ndefault_deadline = \"1h\"\nmax_deadline = \"10m\"\n\
             [[drills.schedule]]\nname = \"m\"\nwhen = \"sometimes\"\n",
            dir.path().join("missing.key")
        ))
        .expect_err("invalid")
        .0;
        let all = errors.join("\n");
        for needle in [
            "commands.key_file",
            "commands.rate",
            "commands.ttl",
            "drills.max_deadline",
            "drills.schedule[0].when",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn rules_tokens_and_time_zone_problems_come_together() {
        let errors = Config::from_toml(
            "[liveness]\noffline_factor = 1.0\n\
             [http]\nlisten = \"127.0.0.1:0\"\n\
             [[http.tokens]]\nname = \"ops\"\ntoken = \"short\"\nrole = \"operator\"\n\
             [uptime]\ntime_zone = \"Mars/Olympus\"\n",
        )
        .expect_err("invalid")
        .0;
        let all = errors.join("\n");
        assert_eq!(errors.len(), 3, "{all}");
        assert!(all.contains("liveness.offline_factor"), "{all}");
        assert!(all.contains("http.tokens[0].token"), "{all}");
        assert!(all.contains("uptime.time_zone"), "{all}");
        let errors = Config::from_toml("[alerts]\nno_such_rule = 1\n")
            .expect_err("unknown key")
            .0;
        assert!(errors[0].contains("[alerts]"), "{errors:?}");
    }

    #[test]
    fn a_shard_needs_postgres_regions_and_valid_names_and_the_lease_a_sane_length() {
        let problems = |store: &str| match Config::from_toml(&format!("[store]\n{store}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        assert_eq!(
            problems("shard = \"east\"\nregions = [\"lanzhou\"]\n"),
            ["store.shard: only with store.url (PostgreSQL)"]
        );
        let url = "url = \"postgres://alarmnet@127.0.0.1/alarmnet\"\n";
        assert!(problems(&format!("{url}shard = \"east\"\nregions = [\"lanzhou\"]\n")).is_empty());
        assert_eq!(
            problems(&format!("{url}shard = \"east\"\n")),
            ["store.shard: needs store.regions"]
        );
        assert_eq!(
            problems(&format!("{url}regions = [\"lanzhou\"]\n")),
            ["store.regions: only with store.shard"]
        );
        let bad = problems(&format!(
            "{url}shard = \"east\"\nregions = [\"Lan Zhou\"]\n"
        ));
        assert!(bad[0].starts_with("store.regions: \"Lan Zhou\""), "{bad:?}");
        assert_eq!(
            problems(&format!("{url}lease = \"100ms\"\n")),
            ["store.lease: must be 1s to 10m"]
        );
    }

    #[test]
    fn postgres_tls_problems_are_reported_with_the_others() {
        let problems = |store: &str| match Config::from_toml(&format!("[store]\n{store}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        assert_eq!(
            problems("ca_file = \"/etc/alarmnet/pg-ca.pem\"\n"),
            ["store.ca_file: only with store.url (PostgreSQL)"]
        );
        let errors = problems(
            "url = \"postgres://a@db.example/alarmnet?sslmode=verify-full\"\nlease = \"1ms\"\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("sslmode=verify-full needs the CA"),
            "{errors:?}"
        );
        assert_eq!(
            problems(
                "url = \"postgres://a@db.example/alarmnet\"\nca_file = \"/nonexistent.pem\"\n"
            ),
            ["store.ca_file: /nonexistent.pem: I/O error: No such file or directory (os error 2)"]
        );
        // A URL without sslmode and no CA stays valid (prefer).
        assert!(problems("url = \"postgres://a@db.example/alarmnet\"\n").is_empty());
    }

    #[test]
    fn secrets_come_from_files_and_never_show_in_debug() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = write(&dir, "mqtt.pw", "mqtt-secret-pw-1\n");
        let influx = write(&dir, "influx.tok", "influx-secret-tok-2");
        let api = write(&dir, "api.token", "api-secret-token-3-0123\n");
        let hashed = crate::secret::to_hex(&crate::secret::sha256(b"hashed-secret-token-4-0123"));
        let text = format!(
            "[mqtt]\nusername = \"collector\"\npassword_file = {pw:?}\n\
             [http]\n\
             [[http.tokens]]\nname = \"a\"\ntoken_file = {api:?}\nrole = \"viewer\"\n\
             [[http.tokens]]\nname = \"b\"\ntoken = \"clear-secret-token-5-0123\"\nrole = \"operator\"\n\
             [[http.tokens]]\nname = \"c\"\ntoken_sha256 = \"{hashed}\"\nrole = \"viewer\"\n\
             [[webhooks]]\nurl = \"https://oapi.dingtalk.com/robot/send?access_token=hook-secret-6\"\n\
             format = \"dingtalk\"\nsecret = \"SEC-hook-secret-7\"\n\
             [webhooks.headers]\nAuthorization = \"Bearer hook-secret-8\"\n\
             [influx]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = {influx:?}\n"
        );
        let c = Config::from_toml(&text).expect("valid");
        assert_eq!(
            c.mqtt.password.as_ref().map(Secret::expose),
            Some("mqtt-secret-pw-1")
        );
        assert_eq!(
            c.influx.as_ref().map(|i| i.token.expose()),
            Some("influx-secret-tok-2")
        );
        let auth = crate::api::Auth::new(&c.http.auth());
        for (token, name) in [
            ("api-secret-token-3-0123", "a"),
            ("clear-secret-token-5-0123", "b"),
            ("hashed-secret-token-4-0123", "c"),
        ] {
            let mut h = axum::http::HeaderMap::new();
            h.insert(
                axum::http::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header"),
            );
            assert_eq!(auth.identify(&h, None).expect(token).name(), Some(name));
        }
        let debug = format!("{c:?}");
        for secret in [
            "mqtt-secret-pw-1",
            "influx-secret-tok-2",
            "api-secret-token-3",
            hashed.as_str(),
            "clear-secret-token-5",
            "hook-secret-6",
            "hook-secret-7",
            "hook-secret-8",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }

        // A file and an inline value together, or a file that is missing: config errors
        // naming the key.
        let text = format!(
            "[mqtt]\nusername = \"u\"\npassword = \"p\"\npassword_file = {pw:?}\n\
             [[http.tokens]]\nname = \"a\"\ntoken_file = \"/nonexistent/api.token\"\nrole = \"viewer\"\n\
             [[http.tokens]]\nname = \"b\"\ntoken = \"change-me-operator-0000\"\nrole = \"operator\"\n\
             [influx]\nurl = \"http://h:1\"\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\ntoken_file = {influx:?}\n"
        );
        let errors = Config::from_toml(&text).expect_err("invalid").0;
        let all = errors.join("\n");
        for needle in [
            "mqtt.password_file: set together with mqtt.password",
            "http.tokens[0].token_file: /nonexistent/api.token",
            "http.tokens[1].token: a placeholder",
            "influx.token_file: set together with influx.token",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 4, "{all}");
        let errors =
            Config::from_toml("[mqtt]\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\n")
                .expect_err("missing")
                .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("mqtt.password_file: /nonexistent/pw"),
            "{errors:?}"
        );
    }

    #[test]
    fn environment_overrides_keep_ids_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            &dir,
            "c.toml",
            "[mqtt]\nclient_id = \"a\"\n[ingest]\nmax_nodes = 5\n",
        );
        let c = Config::load_with(
            &file,
            env(&[
                ("ALARMNET_MQTT__CLIENT_ID", "007"),
                ("ALARMNET_MQTT__PASSWORD", "0123"),
                ("ALARMNET_MQTT__USERNAME", "ops"),
                ("ALARMNET_MQTT__KEEP_ALIVE", "45s"),
                ("ALARMNET_INGEST__MAX_NODES", "12"),
                ("ALARMNET_HTTP__LISTEN", "127.0.0.1:0"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.mqtt.collector_id.as_str(), "007");
        assert_eq!(c.mqtt.password.as_ref().map(Secret::expose), Some("0123"));
        assert_eq!(c.mqtt.keep_alive, Duration::from_secs(45));
        assert_eq!(c.ingest.max_nodes, 12);
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:0");
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            &dir,
            "c.toml",
            r#"
[mqtt]
broker = "http://x"
client_id = "bad id"
prefix = "a/+/b"
password = "p"
keep_alive = "1s"
[http]
listen = "nowhere"
[[webhooks]]
url = "ftp://x"
max_attempts = 0
[[webhooks]]
url = "http://127.0.0.1:9/hook"
secret = "s"
[store]
pathh = "x"
[ingest]
registration = "allowlist"
max_nodes = 0
max_future_skew = "0s"
[influxx]
url = "x"
"#,
        );
        let errors = Config::load_with(&file, env(&[("ALARMNET_ALERTMANAGER__URL", "nope")]))
            .expect_err("invalid")
            .0;
        let all = errors.join("\n");
        for needle in [
            "unknown section [influxx]",
            "mqtt.broker",
            "mqtt.client_id",
            "mqtt.prefix",
            "mqtt.password",
            "mqtt.keep_alive",
            "http.listen",
            "webhooks[0].url",
            "webhooks[0].max_attempts",
            "webhooks[1].secret: only the dingtalk and feishu formats sign",
            "pathh",
            "ingest.allowlist_file",
            "ingest.max_nodes",
            "ingest.max_future_skew",
            "alertmanager.url",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 15, "{all}");
    }

    #[test]
    fn influx_spool_defaults_next_to_the_store_and_every_problem_is_listed() {
        let c = Config::from_toml(
            "[store]\npath = \"/srv/an/alarmnet.db\"\n\
             [influx]\nurl = \"http://127.0.0.1:8428\"\norg = \"o\"\nbucket = \"b\"\n",
        )
        .expect("valid");
        let influx = c.influx.expect("configured");
        assert_eq!(
            influx.spool_dir.as_deref(),
            Some(Path::new("/srv/an/tsdb-spool"))
        );
        let c = Config::from_toml(
            "[influx]\nurl = \"http://h:1\"\norg = \"o\"\nbucket = \"b\"\nspool_dir = \"/q\"\n",
        )
        .expect("valid");
        assert_eq!(
            c.influx.and_then(|i| i.spool_dir),
            Some(PathBuf::from("/q"))
        );

        let errors = Config::from_toml(
            "[mqtt]\nbroker = \"nope\"\n\
             [influx]\nurl = \"ftp://h\"\norg = \"\"\nbucket = \"b\"\nbatch_size = 0\n\
             flush_interval = \"0s\"\n",
        )
        .expect_err("invalid")
        .0;
        let all = errors.join("\n");
        for needle in [
            "mqtt.broker",
            "influx.url",
            "influx.org",
            "influx.batch_size",
            "influx.flush_interval",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let unknown = Config::from_toml(
            "[influx]\nurl = \"http://h:1\"\norg = \"o\"\nbucket = \"b\"\nspool = 1\n",
        )
        .expect_err("unknown key")
        .0;
        assert!(unknown[0].starts_with("[influx]"), "{unknown:?}");
    }

    #[test]
    fn wrong_types_and_durations_are_reported() {
        let errors = Config::from_toml(
            "[mqtt]\nkeep_alive = 30\n[ingest]\nmax_nodes = \"many\"\n[http]\nlisten = 8080\n",
        )
        .expect_err("invalid")
        .0;
        // `listen = 8080` is read as the string "8080", which is not an address.
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].starts_with("[mqtt]"), "{errors:?}");
        assert!(errors[1].starts_with("[ingest]"), "{errors:?}");
        assert!(errors[2].starts_with("http.listen"), "{errors:?}");
    }

    #[test]
    fn allowlist_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = write(&dir, "ok.txt", "# sirens\nlz-1\n\nlz-2 # roof\n");
        let text = format!(
            "[ingest]\nregistration = \"allowlist\"\nallowlist_file = {:?}\n",
            good
        );
        let c = Config::from_toml(&text).expect("valid");
        let list = c.allowlist.expect("allowlist read");
        assert_eq!(list.len(), 2);
        assert!(list.contains(&NodeId::new("lz-2").expect("id")));

        // The PKI's node list works as it is.
        let csv = write(
            &dir,
            "nodes.csv",
            "node,site,region\nlz-1,lz-chengguan,lanzhou\nlz-3 , s , r # roof\nlz-4\n",
        );
        let text = format!(
            "[ingest]\nregistration = \"allowlist\"\nallowlist_file = {:?}\n",
            csv
        );
        let list = Config::from_toml(&text)
            .expect("valid")
            .allowlist
            .expect("read");
        let mut ids: Vec<&str> = list.iter().map(|i| i.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["lz-1", "lz-3", "lz-4"]);

        let bad = write(&dir, "bad.txt", "ok-1\nnot ok\nalso/bad\n");
        let text = format!(
            "[ingest]\nregistration = \"allowlist\"\nallowlist_file = {:?}\n",
            bad
        );
        let errors = Config::from_toml(&text).expect_err("invalid").0;
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("line 2"), "{errors:?}");
    }

    #[test]
    fn tls_needs_a_ca_and_a_matching_key() {
        let errors = Config::from_toml(
            "[mqtt]\nbroker = \"mqtts://b.example\"\n[mqtt.tls]\ncert_file = \"/nonexistent.pem\"\n",
        )
        .expect_err("invalid")
        .0;
        let all = errors.join("\n");
        assert_eq!(errors.len(), 3, "{all}");
        assert!(all.contains("mqtt.tls.ca_file: required"), "{all}");
        assert!(all.contains("cert_file and key_file go together"), "{all}");
        assert!(
            all.contains("mqtt.tls.cert_file: /nonexistent.pem"),
            "{all}"
        );
        // A key where the certificate belongs, and the reverse.
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
        )
        .expect("write");
        let text = format!(
            "[mqtt]\nbroker = \"mqtts://b\"\n[mqtt.tls]\nca_file = \"{c}\"\ncert_file = \"{k}\"\nkey_file = \"{c}\"\n",
            c = cert.display(),
            k = key.display()
        );
        let errors = Config::from_toml(&text).expect_err("swapped").0;
        assert_eq!(
            errors,
            vec![
                format!(
                    "mqtt.tls.cert_file: {}: not a PEM file with a CERTIFICATE",
                    key.display()
                ),
                format!(
                    "mqtt.tls.key_file: {}: not a PEM file with a PRIVATE KEY",
                    cert.display()
                ),
            ]
        );
        let text = format!(
            "[mqtt]\nbroker = \"mqtts://b\"\n[mqtt.tls]\nca_file = \"{c}\"\ncert_file = \"{c}\"\nkey_file = \"{k}\"\n",
            c = cert.display(),
            k = key.display()
        );
        Config::from_toml(&text).expect("a CA, a certificate and its key");
        let errors = Config::from_toml("[mqtt.tls]\nca_file = \"/etc/hostname\"\n")
            .expect_err("tls without mqtts")
            .0;
        assert_eq!(
            errors,
            vec!["mqtt.tls: set, but mqtt.broker is not an mqtts:// URL"]
        );
    }

    #[test]
    fn a_public_listener_needs_tls_or_insecure() {
        let errors = Config::from_toml("[http]\nlisten = \"0.0.0.0:8080\"\n")
            .expect_err("plain HTTP on all interfaces")
            .0;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("http.insecure: "), "{errors:?}");
        assert!(errors[0].contains("http.tls_cert_file"), "{errors:?}");
        let c = Config::from_toml(
            "[http]\nlisten = \"0.0.0.0:8080\"\ninsecure = true\ntrusted_proxies = [\"10.0.0.1\"]\n",
        )
        .expect("told insecure");
        assert!(c.http.tls_files().is_none());
        assert_eq!(c.http.trusted_proxies.len(), 1);
        for local in ["127.0.0.1:8080", "[::1]:8080"] {
            Config::from_toml(&format!("[http]\nlisten = \"{local}\"\n")).expect(local);
        }
        let errors = Config::from_toml(
            "[http]\nlisten = \"0.0.0.0:8443\"\ntls_key_file = \"/nonexistent.key\"\n\
             tls_client_ca_file = \"/nonexistent.crt\"\n[retention]\naudit = \"1h\"\n",
        )
        .expect_err("half a pair")
        .0;
        let all = errors.join("\n");
        for needle in [
            "http.tls_cert_file, http.tls_key_file: give both or neither",
            "http.tls_client_ca_file: set without",
            "http.insecure: ",
            "retention.audit: keep at least 1d",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 4, "{all}");
        assert_eq!(
            Config::from_toml("").expect("defaults").retention.audit,
            Duration::from_secs(400 * 86_400)
        );
    }

    #[test]
    fn outputs_and_the_zone_hold_parsed_values() {
        let c = Config::from_toml(
            "[uptime]\ntime_zone = \"Europe/Kyiv\"\n\
             [[webhooks]]\nurl = \"https://h.example/hook?t=1\"\n\
             [webhooks.headers]\nX-Token = \"a\"\n\
             [alertmanager]\nurl = \"http://127.0.0.1:9093/\"\n",
        )
        .expect("valid");
        assert_eq!(c.time_zone.iana_name(), Some("Europe/Kyiv"));
        assert_eq!(c.webhooks[0].url.as_str(), "https://h.example/hook?t=1");
        assert_eq!(c.webhooks[0].headers["x-token"], "a");
        assert_eq!(
            c.alertmanager.expect("set").endpoint.as_str(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
        let errors = Config::from_toml(
            "[[webhooks]]\nurl = \"http://h/\"\n[webhooks.headers]\n\"bad header\" = \"x\"\n\
             [alertmanager]\nurl = \"mailto:x@y\"\nqueue = 0\nresend_interval = \"0s\"\n\
             [uptime]\ntime_zone = \"Nowhere/Else\"\n",
        )
        .expect_err("invalid")
        .0;
        let all = errors.join("\n");
        for needle in [
            "webhooks[0].headers: \"bad header\" is not a valid HTTP header",
            "alertmanager.url: \"mailto:x@y\" must be an http:// or https:// URL",
            "alertmanager.queue: must be at least 1",
            "alertmanager.resend_interval: must be at least 1s",
            "uptime.time_zone: \"Nowhere/Else\" is not a known IANA time zone",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 5, "{all}");
    }
}
