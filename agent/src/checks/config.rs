//! The `[[checks]]` and `[tests.<kind>]` tables of the agent's configuration, and their
//! validation, which lists every problem at once.
//!
// Design: one flat struct with every key of every kind, rather than an enum tagged by `kind`.
// `deny_unknown_fields` then still catches typos (it does not combine with `flatten`), and a
// key given to the wrong kind, a missing key or a bad value are all reported together by
// `validate` instead of serde stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use alarmnet_protocol::payload::MAX_BIRTH_CHECKS;
use alarmnet_protocol::{MetricName, Name, Severity};
use serde::Deserialize;

use crate::health::Status;

/// One `[[checks]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// The check's name: part of its fault key (`name/code`) and listed in `birth`.
    pub name: Name,
    /// `system`, `power`, `process`, `tcp`, `http`, `file_age` or `exec`.
    pub kind: String,
    /// How often the check runs.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long one run may take before it counts as `unknown` (default 10 s, at most the
    /// interval). Raise it for slow plugins.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Consecutive failing runs before the fault is raised: 1 raises on the first bad reading.
    #[serde(default = "default_streak")]
    pub raise_after: u32,
    /// Consecutive passing runs before a raised fault is cleared.
    #[serde(default = "default_streak")]
    pub clear_after: u32,
    /// The least status that counts as failing: `warning` (default) or `critical`.
    /// `unknown` always counts as failing.
    #[serde(default)]
    pub raise_on: Option<Level>,
    /// The severity of the fault this check raises (default per kind).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// The fault code (default per kind, e.g. `PROCESS_DOWN`).
    #[serde(default)]
    pub code: Option<Name>,
    /// Per metric `{ warning = x, critical = y, direction = "above" | "below" }`.
    #[serde(default)]
    pub thresholds: BTreeMap<String, ThresholdConfig>,
    /// Put before this check's metric names in the heartbeat. Default: none for `system` and
    /// `power` (node-wide names such as `cpu_pct`, `battery_v`), `<name>_` for the others.
    #[serde(default)]
    pub metric_prefix: Option<String>,

    /// `system`: the file system whose usage is `disk_pct` (default `/`).
    #[serde(default)]
    pub disk_path: Option<PathBuf>,
    /// `power`: the power supply class directory (default `/sys/class/power_supply`).
    #[serde(default)]
    pub sysfs_root: Option<PathBuf>,
    /// `power`: the status while mains power is off (default `warning`).
    #[serde(default)]
    pub mains_lost: Option<Level>,
    /// `process`: a process name, matched against `/proc/<pid>/comm` or argv[0]'s file name.
    #[serde(default)]
    pub process: Option<String>,
    /// `process`: a substring of the full command line (arguments joined by spaces).
    #[serde(default)]
    pub cmdline: Option<String>,
    /// `process`: the fewest matching processes that count as alive (default 1).
    #[serde(default)]
    pub min_count: Option<u32>,
    /// `tcp`: `host:port` to connect to.
    #[serde(default)]
    pub address: Option<String>,
    /// `http`: an `http://` URL to GET.
    #[serde(default)]
    pub url: Option<String>,
    /// `http`: the status code expected (default 200).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// `file_age`: the file that must be updated regularly.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `file_age`: older than this is `critical`.
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// `file_age`: older than this is `warning`.
    #[serde(default, with = "humantime_serde")]
    pub warn_age: Option<Duration>,
    /// `exec`: program and arguments (no shell), run in the plugin convention.
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// One `[tests.<kind>]` table: the procedure the agent runs for `cmd test` of that kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// Program and arguments (no shell): exit 0 pass, 1 or 2 fail, anything else error.
    pub command: Vec<String>,
    /// How long the procedure may take (default 2 min).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Run this test on its own every so often (self-test), if set.
    #[serde(default, with = "humantime_serde")]
    pub schedule: Option<Duration>,
    /// Whether a command may start it. Default: `false` for `sound` (an audible test is
    /// only ever started by its local schedule), `true` for every other kind.
    #[serde(default)]
    pub remote: Option<bool>,
}

impl TestConfig {
    /// Whether a command may start the test of kind `kind` (see `remote`).
    pub fn remote_allowed(&self, kind: &Name) -> bool {
        self.remote.unwrap_or(kind.as_str() != "sound")
    }
}

/// A status a setting can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn status(self) -> Status {
        match self {
            Level::Ok => Status::Ok,
            Level::Warning => Status::Warning,
            Level::Critical => Status::Critical,
        }
    }
}

/// Limits on one metric. An empty table switches a default threshold off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    #[serde(default)]
    pub warning: Option<f64>,
    #[serde(default)]
    pub critical: Option<f64>,
    /// Which side is bad; default `below` for battery metrics, `above` for the rest.
    #[serde(default)]
    pub direction: Option<Direction>,
}

/// Which side of a limit is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Bad when the value is greater than the limit.
    Above,
    /// Bad when the value is less than the limit.
    Below,
}

/// The built-in check kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    System,
    Power,
    Process,
    Tcp,
    Http,
    FileAge,
    Exec,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::System,
        Kind::Power,
        Kind::Process,
        Kind::Tcp,
        Kind::Http,
        Kind::FileAge,
        Kind::Exec,
    ];

    pub fn parse(s: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::System => "system",
            Kind::Power => "power",
            Kind::Process => "process",
            Kind::Tcp => "tcp",
            Kind::Http => "http",
            Kind::FileAge => "file_age",
            Kind::Exec => "exec",
        }
    }

    /// The fault code when the config names none.
    pub fn default_code(self) -> &'static str {
        match self {
            Kind::System => "SYSTEM_RESOURCES",
            Kind::Power => "POWER_FAULT",
            Kind::Process => "PROCESS_DOWN",
            Kind::Tcp => "TCP_UNREACHABLE",
            Kind::Http => "HTTP_BAD_STATUS",
            Kind::FileAge => "FILE_STALE",
            Kind::Exec => "EXEC_FAILED",
        }
    }

    /// The fault severity when the config names none. A siren that cannot reach its
    /// controller cannot sound (critical); power, a dead player or a failing plugin make a
    /// node not ready (major); a full disk or stale content degrade it (minor).
    pub fn default_severity(self) -> Severity {
        match self {
            Kind::Tcp => Severity::Critical,
            Kind::Power | Kind::Process | Kind::Http | Kind::Exec => Severity::Major,
            Kind::System | Kind::FileAge => Severity::Minor,
        }
    }

    /// The metrics this kind produces; `None` when the set is open (`exec` perfdata).
    pub fn metrics(self) -> Option<&'static [&'static str]> {
        Some(match self {
            Kind::System => &[
                "cpu_pct", "mem_pct", "disk_pct", "load1", "temp_c", "uptime_s",
            ],
            Kind::Power => &["ac_power", "battery_pct", "battery_v"],
            Kind::Process => &["count"],
            Kind::Tcp => &["connect_ms"],
            Kind::Http => &["response_ms", "status_code"],
            Kind::FileAge => &["age_s"],
            Kind::Exec => return None,
        })
    }

    /// Thresholds that apply unless the config overrides them.
    pub fn default_thresholds(self) -> &'static [(&'static str, ThresholdConfig)] {
        const fn above(warning: f64, critical: f64) -> ThresholdConfig {
            ThresholdConfig {
                warning: Some(warning),
                critical: Some(critical),
                direction: Some(Direction::Above),
            }
        }
        const SYSTEM: [(&str, ThresholdConfig); 3] = [
            ("mem_pct", above(90.0, 95.0)),
            ("disk_pct", above(90.0, 95.0)),
            ("temp_c", above(80.0, 90.0)),
        ];
        const POWER: [(&str, ThresholdConfig); 1] = [(
            "battery_pct",
            ThresholdConfig {
                warning: Some(30.0),
                critical: Some(15.0),
                direction: Some(Direction::Below),
            },
        )];
        match self {
            Kind::System => &SYSTEM,
            Kind::Power => &POWER,
            _ => &[],
        }
    }

    /// The keys only this kind accepts.
    fn own_keys(self) -> &'static [&'static str] {
        match self {
            Kind::System => &["disk_path"],
            Kind::Power => &["sysfs_root", "mains_lost"],
            Kind::Process => &["process", "cmdline", "min_count"],
            Kind::Tcp => &["address"],
            Kind::Http => &["url", "expect_status"],
            Kind::FileAge => &["path", "max_age", "warn_age"],
            Kind::Exec => &["command"],
        }
    }
}

/// The direction a metric's limits point when the config does not say.
pub fn default_direction(metric: &str) -> Direction {
    if metric.starts_with("battery_") {
        Direction::Below
    } else {
        Direction::Above
    }
}

pub(crate) fn default_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_streak() -> u32 {
    2
}

/// The timeout of one run when the config names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The timeout of a test procedure when the config names none.
pub const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(120);

impl CheckConfig {
    /// The kind-specific keys and whether each is set.
    fn specific_keys(&self) -> [(&'static str, bool); 13] {
        [
            ("disk_path", self.disk_path.is_some()),
            ("sysfs_root", self.sysfs_root.is_some()),
            ("mains_lost", self.mains_lost.is_some()),
            ("process", self.process.is_some()),
            ("cmdline", self.cmdline.is_some()),
            ("min_count", self.min_count.is_some()),
            ("address", self.address.is_some()),
            ("url", self.url.is_some()),
            ("expect_status", self.expect_status.is_some()),
            ("path", self.path.is_some()),
            ("max_age", self.max_age.is_some()),
            ("warn_age", self.warn_age.is_some()),
            ("command", self.command.is_some()),
        ]
    }

    /// The timeout of one run.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| DEFAULT_TIMEOUT.min(self.interval))
    }

    /// The prefix of this check's metric names in the heartbeat.
    pub fn effective_metric_prefix(&self, kind: Kind) -> String {
        match &self.metric_prefix {
            Some(p) => p.clone(),
            None if matches!(kind, Kind::System | Kind::Power) => String::new(),
            None => format!("{}_", sanitize_metric(self.name.as_str())),
        }
    }

    /// The thresholds in force: the kind's defaults, replaced metric by metric by the
    /// config's, with every direction resolved. Empty tables (switched off) are left out.
    pub fn effective_thresholds(&self, kind: Kind) -> Vec<(MetricName, Threshold)> {
        let mut all: BTreeMap<String, ThresholdConfig> = kind
            .default_thresholds()
            .iter()
            .map(|(m, t)| ((*m).to_owned(), *t))
            .collect();
        all.extend(self.thresholds.iter().map(|(m, t)| (m.clone(), *t)));
        all.into_iter()
            .filter_map(|(metric, t)| {
                let name = MetricName::new(metric.as_str()).ok()?;
                if t.warning.is_none() && t.critical.is_none() {
                    return None;
                }
                let direction = t.direction.unwrap_or_else(|| default_direction(&metric));
                Some((
                    name,
                    Threshold {
                        warning: t.warning,
                        critical: t.critical,
                        direction,
                    },
                ))
            })
            .collect()
    }
}

/// A resolved threshold on one metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    pub direction: Direction,
}

impl Threshold {
    /// The status of `value` against these limits, with the limit it crossed.
    pub fn judge(&self, value: f64) -> (Status, Option<f64>) {
        let beyond = |limit: f64| match self.direction {
            Direction::Above => value > limit,
            Direction::Below => value < limit,
        };
        match (self.critical, self.warning) {
            (Some(c), _) if beyond(c) => (Status::Critical, Some(c)),
            (_, Some(w)) if beyond(w) => (Status::Warning, Some(w)),
            _ => (Status::Ok, None),
        }
    }
}

/// Turns a free label into a metric name: lowercase, every other character `_`, at most 64
/// characters. Empty input stays empty (the caller drops it).
pub fn sanitize_metric(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// Every problem in the checks and tests configuration, all at once; each names the check
/// or test and the key.
pub fn validate(checks: &[CheckConfig], tests: &BTreeMap<Name, TestConfig>) -> Vec<String> {
    let mut problems = Vec::new();
    if checks.len() > MAX_BIRTH_CHECKS {
        problems.push(format!(
            "checks: {} configured, at most {MAX_BIRTH_CHECKS} allowed",
            checks.len()
        ));
    }
    let mut seen = BTreeSet::new();
    for check in checks {
        if !seen.insert(check.name.as_str()) {
            problems.push(format!(
                "check `{}`: name is used by more than one check",
                check.name
            ));
        }
        validate_check(check, &mut problems);
    }
    for (test, config) in tests {
        validate_test(test, config, &mut problems);
    }
    problems
}

fn validate_check(c: &CheckConfig, problems: &mut Vec<String>) {
    let mut problem = |key: &str, what: String| {
        problems.push(format!("check `{}`: `{key}` {what}", c.name));
    };
    if c.interval.is_zero() {
        problem("interval", "must be more than 0".into());
    }
    if let Some(t) = c.timeout {
        if t.is_zero() {
            problem("timeout", "must be more than 0".into());
        } else if t > c.interval {
            problem(
                "timeout",
                format!(
                    "({}) must not exceed `interval` ({})",
                    humantime::format_duration(t),
                    humantime::format_duration(c.interval)
                ),
            );
        }
    }
    if c.raise_after == 0 {
        problem("raise_after", "must be at least 1".into());
    }
    if c.clear_after == 0 {
        problem("clear_after", "must be at least 1".into());
    }
    if c.raise_on == Some(Level::Ok) {
        problem("raise_on", "must be `warning` or `critical`".into());
    }
    if let Some(p) = &c.metric_prefix {
        if p.len() > 32 || !p.bytes().all(sanitize_metric_byte_ok) {
            problem(
                "metric_prefix",
                format!("{p:?} must be at most 32 characters of a-z 0-9 _"),
            );
        }
    }

    let Some(kind) = Kind::parse(&c.kind) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        problem(
            "kind",
            format!("{:?} is not one of {}", c.kind, known.join(", ")),
        );
        return;
    };
    for (key, set) in c.specific_keys() {
        if set && !kind.own_keys().contains(&key) {
            problem(key, format!("does not apply to kind `{}`", kind.as_str()));
        }
    }

    for (metric, t) in &c.thresholds {
        let key = format!("thresholds.{metric}");
        if MetricName::new(metric.as_str()).is_err() {
            problem(
                &key,
                format!("names no metric: must be {}", MetricName::RULE),
            );
            continue;
        }
        if let Some(known) = kind.metrics() {
            if !known.contains(&metric.as_str()) {
                problem(
                    &key,
                    format!(
                        "names no metric of kind `{}` ({})",
                        kind.as_str(),
                        known.join(", ")
                    ),
                );
            }
        }
        for (which, v) in [("warning", t.warning), ("critical", t.critical)] {
            if v.is_some_and(|v| !v.is_finite()) {
                problem(&key, format!("{which} must be a finite number"));
            }
        }
        if let (Some(w), Some(cr)) = (t.warning, t.critical) {
            let direction = t.direction.unwrap_or_else(|| default_direction(metric));
            match direction {
                Direction::Above if w > cr => problem(
                    &key,
                    format!("warning {w} is above critical {cr}, but `above` is bad"),
                ),
                Direction::Below if w < cr => problem(
                    &key,
                    format!("warning {w} is below critical {cr}, but `below` is bad"),
                ),
                _ => {}
            }
        }
    }

    match kind {
        Kind::System | Kind::Power => {}
        Kind::Process => match (&c.process, &c.cmdline) {
            (None, None) => problem("process", "or `cmdline` is required".into()),
            (Some(_), Some(_)) => problem("process", "and `cmdline` exclude each other".into()),
            (Some(p), None) if p.is_empty() || p.contains('/') => {
                problem("process", "must be a non-empty name without `/`".into())
            }
            (None, Some(s)) if s.is_empty() => problem("cmdline", "must not be empty".into()),
            _ => {}
        },
        Kind::Tcp => match &c.address {
            None => problem("address", "is required (host:port)".into()),
            Some(a) => {
                if let Err(e) = super::tcp::parse_address(a) {
                    problem("address", e);
                }
            }
        },
        Kind::Http => {
            match &c.url {
                None => problem("url", "is required (http://host[:port]/path)".into()),
                Some(u) => {
                    if let Err(e) = super::http::HttpUrl::parse(u) {
                        problem("url", e);
                    }
                }
            }
            if let Some(s) = c.expect_status.filter(|s| !(100..=599).contains(s)) {
                problem(
                    "expect_status",
                    format!("{s} is not an HTTP status (100..599)"),
                );
            }
        }
        Kind::FileAge => {
            if c.path.is_none() {
                problem("path", "is required".into());
            }
            match c.max_age {
                None => problem("max_age", "is required (e.g. \"15m\")".into()),
                Some(m) if m.is_zero() => problem("max_age", "must be more than 0".into()),
                Some(m) => {
                    if c.warn_age.is_some_and(|w| w.is_zero() || w >= m) {
                        problem(
                            "warn_age",
                            "must be more than 0 and less than `max_age`".into(),
                        );
                    }
                }
            }
        }
        Kind::Exec => match &c.command {
            None => problem("command", "is required (program and arguments)".into()),
            Some(cmd) if cmd.first().is_none_or(|p| p.is_empty()) => {
                problem("command", "must start with a program".into())
            }
            Some(_) => {}
        },
    }
}

fn sanitize_metric_byte_ok(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

fn validate_test(test: &Name, c: &TestConfig, problems: &mut Vec<String>) {
    let mut problem = |key: &str, what: &str| {
        problems.push(format!("test `{test}`: `{key}` {what}"));
    };
    if !test
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        problem("name", "must be a lowercase word (a-z 0-9 _ . -)");
    }
    if c.command.first().is_none_or(|p| p.is_empty()) {
        problem("command", "must start with a program");
    }
    if c.timeout.is_some_and(|t| t.is_zero()) {
        problem("timeout", "must be more than 0");
    }
    if c.schedule.is_some_and(|s| s < Duration::from_secs(60)) {
        problem("schedule", "must be at least 1m");
    }
}
