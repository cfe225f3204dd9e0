//! Tests of configuration, thresholds, scheduling, hysteresis through real runs, and test
//! procedures. Kind-specific tests live beside each kind.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alarmnet_protocol::{FaultKey, FaultStatus, Name, Severity, TestResult};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::health::{HealthSnapshot, TestRunner};

fn config(v: serde_json::Value) -> CheckConfig {
    serde_json::from_value(v).expect("check config")
}

fn name(s: &str) -> Name {
    Name::new(s).expect("name")
}

fn script(dir: &Path, file: &str, body: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn exec_config(check: &str, path: &Path, extra: serde_json::Value) -> CheckConfig {
    let mut v = json!({"name": check, "kind": "exec", "command": [path.display().to_string()]});
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
    }
    config(v)
}

/// Polls `snapshot` until `done` holds (or fails the test after 10 s).
async fn wait_for(
    health: &dyn Health,
    what: &str,
    done: impl Fn(&HealthSnapshot) -> bool,
) -> HealthSnapshot {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let snap = health.snapshot();
        if done(&snap) {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn unknown_keys_are_refused_when_deserializing() {
    let err = serde_json::from_value::<CheckConfig>(json!({
        "name": "amp", "kind": "exec", "command": ["x"], "raise_afer": 3
    }))
    .expect_err("typo");
    assert!(err.to_string().contains("raise_afer"), "{err}");
    let err = serde_json::from_value::<CheckConfig>(json!({
        "name": "sys", "kind": "system", "thresholds": {"disk_pct": {"warn": 1}}
    }))
    .expect_err("typo in a threshold");
    assert!(err.to_string().contains("warn"), "{err}");
    let err = serde_json::from_value::<TestConfig>(json!({"command": ["x"], "every": "1d"}))
        .expect_err("typo in a test");
    assert!(err.to_string().contains("every"), "{err}");
}

#[test]
fn validate_lists_every_problem_naming_check_and_key() {
    let checks = vec![
        config(
            json!({"name": "a", "kind": "exec", "command": [], "interval": "0s",
                      "raise_after": 0, "clear_after": 0, "raise_on": "ok",
                      "url": "http://x/", "metric_prefix": "Bad-"}),
        ),
        config(json!({"name": "a", "kind": "tcp"})),
        config(json!({"name": "b", "kind": "modbus"})),
        config(json!({"name": "c", "kind": "tcp", "address": "controller",
                      "interval": "10s", "timeout": "20s"})),
        config(json!({"name": "d", "kind": "http", "url": "https://x/", "expect_status": 42})),
        config(json!({"name": "e", "kind": "file_age", "warn_age": "1h", "max_age": "10m"})),
        config(json!({"name": "f", "kind": "process", "process": "a", "cmdline": "b"})),
        config(json!({"name": "g", "kind": "process"})),
        config(
            json!({"name": "h", "kind": "system", "timeout": "0s", "thresholds": {
            "disk_pct": {"warning": 95, "critical": 90},
            "battery_v": {"warning": 1},
            "Bad": {"warning": 1}}}),
        ),
        config(json!({"name": "i", "kind": "power",
                      "thresholds": {"battery_pct": {"warning": 10, "critical": 20}}})),
    ];
    let mut tests = BTreeMap::new();
    tests.insert(
        name("Silent"),
        serde_json::from_value::<TestConfig>(json!({"command": [""], "timeout": "0s",
                                                    "schedule": "10s"}))
        .expect("test config"),
    );
    let problems = validate(&checks, &tests);
    let expected = [
        "check `a`: `interval` must be more than 0",
        "check `a`: `raise_after` must be at least 1",
        "check `a`: `clear_after` must be at least 1",
        "check `a`: `raise_on` must be `warning` or `critical`",
        "check `a`: `metric_prefix` \"Bad-\" must be at most 32 characters of a-z 0-9 _",
        "check `a`: `url` does not apply to kind `exec`",
        "check `a`: `command` must start with a program",
        "check `a`: name is used by more than one check",
        "check `a`: `address` is required (host:port)",
        "check `b`: `kind` \"modbus\" is not one of system, power, process, tcp, http, file_age, exec",
        "check `c`: `timeout` (20s) must not exceed `interval` (10s)",
        "check `c`: `address` \"controller\" must be host:port",
        "check `d`: `url` \"https://x/\": https is not supported; use an exec check with check_http",
        "check `d`: `expect_status` 42 is not an HTTP status (100..599)",
        "check `e`: `path` is required",
        "check `e`: `warn_age` must be more than 0 and less than `max_age`",
        "check `f`: `process` and `cmdline` exclude each other",
        "check `g`: `process` or `cmdline` is required",
        "check `h`: `timeout` must be more than 0",
        "check `h`: `thresholds.Bad` names no metric: must be 1 to 64 characters of a-z 0-9 _",
        "check `h`: `thresholds.battery_v` names no metric of kind `system` (cpu_pct, mem_pct, disk_pct, load1, temp_c, uptime_s)",
        "check `h`: `thresholds.disk_pct` warning 95 is above critical 90, but `above` is bad",
        "check `i`: `thresholds.battery_pct` warning 10 is below critical 20, but `below` is bad",
        "test `Silent`: `name` must be a lowercase word (a-z 0-9 _ . -)",
        "test `Silent`: `command` must start with a program",
        "test `Silent`: `timeout` must be more than 0",
        "test `Silent`: `schedule` must be at least 1m",
    ];
    for e in expected {
        assert!(
            problems.iter().any(|p| p == e),
            "missing {e:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    assert_eq!(
        CheckSet::new(checks).expect_err("invalid").len(),
        expected.len() - 4
    );
}

#[test]
fn a_good_config_is_valid_and_gets_per_kind_defaults() {
    let checks = vec![
        config(json!({"name": "system", "kind": "system",
                      "thresholds": {"temp_c": {}, "cpu_pct": {"warning": 90}}})),
        config(json!({"name": "power", "kind": "power", "mains_lost": "critical"})),
        config(json!({"name": "player", "kind": "process", "process": "mpv"})),
        config(json!({"name": "siren-ctl", "kind": "tcp", "address": "127.0.0.1:502"})),
        config(json!({"name": "web", "kind": "http", "url": "http://127.0.0.1:8080/health"})),
        config(json!({"name": "content", "kind": "file_age", "path": "/tmp/x", "max_age": "15m"})),
        config(
            json!({"name": "amp", "kind": "exec", "command": ["check_amp"], "code": "AMP_NO_OUTPUT",
                      "severity": "critical", "raise_after": 1, "interval": "5s"}),
        ),
    ];
    assert_eq!(validate(&checks, &BTreeMap::new()), Vec::<String>::new());
    let set = CheckSet::new(checks).expect("valid");
    let c = &set.checks;
    assert_eq!(c[0].metric_prefix, "");
    assert_eq!(c[1].metric_prefix, "");
    assert_eq!(c[3].metric_prefix, "siren_ctl_");
    assert_eq!(c[0].timeout, Duration::from_secs(10));
    assert_eq!(c[6].timeout, Duration::from_secs(5), "at most the interval");
    assert_eq!(
        (c[3].code.as_str(), c[3].severity),
        ("TCP_UNREACHABLE", Severity::Critical)
    );
    assert_eq!(
        (c[6].code.as_str(), c[6].severity),
        ("AMP_NO_OUTPUT", Severity::Critical)
    );
    assert_eq!(
        (c[0].code.as_str(), c[0].severity),
        ("SYSTEM_RESOURCES", Severity::Minor)
    );
    let thresholds: Vec<&str> = c[0].thresholds.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        thresholds,
        ["cpu_pct", "disk_pct", "mem_pct"],
        "temp_c switched off"
    );
    assert_eq!(c[1].thresholds.len(), 1);
    assert_eq!(set.names().len(), 7);
}

#[tokio::test]
async fn thresholds_worsen_the_status_and_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(
        dir.path(),
        "p",
        "echo 'readings | temp=95;; battery_v=11.7V load=0.5'",
    );
    let set = CheckSet::new(vec![exec_config(
        "p",
        &s,
        json!({"thresholds": {
            "temp": {"warning": 70, "critical": 90},
            "battery_v": {"warning": 12.0, "critical": 11.5},
            "load": {"warning": 0.5}}}),
    )])
    .expect("valid");
    let results = set.run_once().await;
    let out = &results[0].1;
    assert_eq!(out.status, Status::Critical);
    assert_eq!(
        out.message,
        "battery_v 11.7 < 12 (warning), temp 95 > 90 (critical); readings"
    );
}

#[tokio::test]
async fn faults_follow_hysteresis_through_real_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::write(&state, "0").expect("write");
    let s = script(
        dir.path(),
        "amp",
        &format!(
            "s=$(cat {0})\necho \"amp state $s | out_w=${{s}}00\"\nexit $s",
            state.display()
        ),
    );
    let set = CheckSet::new(vec![exec_config(
        "amp",
        &s,
        json!({"code": "AMP_NO_OUTPUT", "severity": "critical", "interval": "1h",
               "raise_after": 2, "clear_after": 1}),
    )])
    .expect("valid");
    let (tx, mut rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let health = set.spawn(tx, shutdown.clone());
    assert_eq!(health.check_names(), vec![name("amp")]);
    let first = wait_for(health.as_ref(), "the first run", |s| s.counts.ok == 1).await;
    assert_eq!(first.metrics.get("amp_out_w"), Some(0.0));

    std::fs::write(&state, "2").expect("write");
    health.run_all_now().await;
    assert!(rx.try_recv().is_err(), "one failing run raises nothing");
    let snap = health.snapshot();
    assert_eq!((snap.counts.critical, snap.counts.ok), (1, 0));
    assert!(snap.faults.is_empty());

    health.run_all_now().await;
    let raised = rx.try_recv().expect("raised after two");
    assert_eq!(
        (
            raised.check.as_str(),
            raised.code.as_str(),
            raised.severity,
            raised.status
        ),
        (
            "amp",
            "AMP_NO_OUTPUT",
            Severity::Critical,
            FaultStatus::Raised
        )
    );
    assert_eq!(raised.message, "critical: amp state 2");
    assert!(raised.ts_ms > 1_700_000_000_000);
    let key: FaultKey = "amp/AMP_NO_OUTPUT".parse().expect("key");
    assert_eq!(health.snapshot().faults, vec![key]);
    assert_eq!(health.snapshot().metrics.get("amp_out_w"), Some(200.0));

    health.run_all_now().await;
    assert!(rx.try_recv().is_err(), "raised once");

    // Unknown (exit 3) counts as failing: the fault stays.
    std::fs::write(&state, "3").expect("write");
    health.run_all_now().await;
    assert!(rx.try_recv().is_err());

    std::fs::write(&state, "0").expect("write");
    health.run_all_now().await;
    let cleared = rx.try_recv().expect("cleared after one ok run");
    assert_eq!(cleared.status, FaultStatus::Cleared);
    assert_eq!(cleared.message, "ok: amp state 0");
    assert!(health.snapshot().faults.is_empty());
    shutdown.cancel();
}

#[tokio::test]
async fn a_hung_check_never_blocks_the_snapshot_or_other_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("content");
    std::fs::write(&file, "x").expect("write");
    let marker = dir.path().join("hang-pid");
    let hang = script(
        dir.path(),
        "hang",
        &format!(
            "echo $$ > {}.tmp && mv {0}.tmp {0}\nexec sleep 300",
            marker.display()
        ),
    );
    let set = CheckSet::new(vec![
        exec_config("hang", &hang, json!({"interval": "2h", "timeout": "1h"})),
        config(json!({"name": "content", "kind": "file_age", "path": file,
                      "max_age": "1h", "interval": "1h"})),
    ])
    .expect("valid");
    let (tx, _rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let health = set.spawn(tx, shutdown.clone());
    let snap = wait_for(health.as_ref(), "the file check", |s| {
        s.counts.ok == 1 && marker.exists()
    })
    .await;
    // The hung check has no result yet and is in no count; the other one is.
    assert_eq!(
        snap.counts.unknown + snap.counts.critical + snap.counts.warning,
        0
    );
    assert!(snap.metrics.get("content_age_s").is_some(), "{snap:?}");

    // Shutting down abandons the hung run, which kills the plugin.
    let pid = std::fs::read_to_string(&marker).expect("pid");
    let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
    shutdown.cancel();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = std::fs::read_to_string(&stat).unwrap_or_default();
        if state.is_empty() || state.contains(") Z") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hung plugin survived: {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_crashing_check_is_unknown() {
    let mut set = CheckSet::new(vec![config(json!({
        "name": "crash", "kind": "exec", "command": ["true"]
    }))])
    .expect("valid");
    set.checks[0].probe = Probe::Panic;
    let results = set.run_once().await;
    assert_eq!(results[0].1.status, Status::Unknown);
    assert_eq!(results[0].1.message, "the check panicked");
}

#[tokio::test(start_paused = true)]
async fn a_check_past_its_timeout_is_unknown() {
    let set = CheckSet::new(vec![config(json!({
        "name": "hang", "kind": "exec", "command": ["sleep", "300"],
        "interval": "2h", "timeout": "1h"
    }))])
    .expect("valid");
    let results = set.run_once().await;
    assert_eq!(results[0].1.status, Status::Unknown);
    assert_eq!(results[0].1.message, "timed out after 1h");
}

#[tokio::test]
async fn heartbeat_metrics_are_capped_at_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let perf: Vec<String> = (0..70).map(|i| format!("m{i:02}={i}")).collect();
    let s = script(
        dir.path(),
        "many",
        &format!("echo 'many | {}'", perf.join(" ")),
    );
    let set =
        CheckSet::new(vec![exec_config("many", &s, json!({"metric_prefix": ""}))]).expect("valid");
    let (tx, _rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let health = set.spawn(tx, shutdown.clone());
    let snap = wait_for(health.as_ref(), "the run", |s| s.counts.ok == 1).await;
    assert_eq!(snap.metrics.len(), 64);
    assert_eq!(snap.metrics.get("m00"), Some(0.0));
    assert_eq!(snap.metrics.get("m69"), None);
    shutdown.cancel();
}

#[tokio::test]
async fn test_procedures_follow_the_exec_convention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tests = BTreeMap::new();
    let mut add = |kind: &str, body: &str, timeout: Option<&str>| {
        let s = script(dir.path(), kind, body);
        let mut v = json!({"command": [s.display().to_string()]});
        if let (Some(t), Some(obj)) = (timeout, v.as_object_mut()) {
            obj.insert("timeout".into(), json!(t));
        }
        tests.insert(
            name(kind),
            serde_json::from_value::<TestConfig>(v).expect("test"),
        );
    };
    add(
        "silent",
        "echo 'all 2 amplifiers delivered rated power | amp1_out_w=395.0W amp2_out_w=401.5'",
        None,
    );
    add("sound", "echo 'amp 2 silent'; exit 2", None);
    add("fail1", "echo 'low'; exit 1", None);
    add("broken", "echo 'no test load'; exit 3", None);
    add("weird", "exit 9", None);
    add("slow", "exec sleep 300", Some("300ms"));
    let procedures = TestProcedures::new(tests);
    assert!(procedures.schedules().is_empty());

    let pass = procedures.run(&name("silent")).await;
    assert_eq!(pass.result, TestResult::Pass);
    assert_eq!(pass.message, "all 2 amplifiers delivered rated power");
    assert_eq!(pass.metrics.get("amp1_out_w"), Some(395.0));
    assert_eq!(pass.metrics.get("amp2_out_w"), Some(401.5));

    for (kind, result, message) in [
        ("sound", TestResult::Fail, "amp 2 silent"),
        ("fail1", TestResult::Fail, "low"),
        ("broken", TestResult::Error, "exit code 3: no test load"),
        ("weird", TestResult::Error, "exit code 9: (no output)"),
        ("slow", TestResult::Error, "timed out after 300ms"),
        (
            "drill",
            TestResult::Error,
            "no test procedure configured for kind `drill`",
        ),
    ] {
        let out = procedures.run(&name(kind)).await;
        assert_eq!(
            (out.result, out.message.as_str()),
            (result, message),
            "{kind}"
        );
    }
    let slow = procedures.run(&name("slow")).await;
    assert!(slow.duration_ms >= 300, "{}", slow.duration_ms);
}

#[test]
fn schedules_list_only_scheduled_tests() {
    let mut tests = BTreeMap::new();
    tests.insert(
        name("silent"),
        serde_json::from_value::<TestConfig>(json!({"command": ["x"], "schedule": "1d"}))
            .expect("test"),
    );
    tests.insert(
        name("sound"),
        serde_json::from_value::<TestConfig>(json!({"command": ["y"]})).expect("test"),
    );
    assert_eq!(
        TestProcedures::new(tests).schedules(),
        vec![(name("silent"), Duration::from_secs(86400))]
    );
}

#[test]
fn monitoring_plugins_check_dummy_when_installed() {
    // Uses Debian's monitoring-plugins-basic only when it is already installed.
    let plugin = Path::new("/usr/lib/nagios/plugins/check_dummy");
    if !plugin.exists() {
        eprintln!("skipped: {} is not installed", plugin.display());
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let set = CheckSet::new(vec![config(json!({
        "name": "dummy", "kind": "exec",
        "command": [plugin.display().to_string(), "1", "amplifier warm"]
    }))])
    .expect("valid");
    let results = rt.block_on(set.run_once());
    assert_eq!(results[0].1.status, Status::Warning);
    assert_eq!(results[0].1.message, "WARNING: amplifier warm");
}

/// A full example, loaded the way the agent loads its file (the `config` crate, TOML).
const EXAMPLE: &str = r#"
[[checks]]
name = "system"
kind = "system"
interval = "30s"
disk_path = "/"
thresholds = { disk_pct = { warning = 85, critical = 95 }, temp_c = { warning = 70.5 } }

[[checks]]
name = "power"
kind = "power"
interval = "15s"
raise_after = 1
clear_after = 3
mains_lost = "critical"
severity = "critical"
thresholds = { battery_v = { warning = 12.0, critical = 11.8 } }

[[checks]]
name = "player"
kind = "process"
process = "mpv"
min_count = 1

[[checks]]
name = "siren-controller"
kind = "tcp"
address = "127.0.0.1:502"
timeout = "3s"
code = "CONTROLLER_UNREACHABLE"

[[checks]]
name = "player-api"
kind = "http"
url = "http://127.0.0.1:8080/health"
expect_status = 204
thresholds = { response_ms = { warning = 500 } }

[[checks]]
name = "content"
kind = "file_age"
path = "/var/lib/player/content.json"
max_age = "15m"
warn_age = "10m"

[[checks]]
name = "amplifier"
kind = "exec"
command = ["/usr/lib/nagios/plugins/check_dummy", "0", "ok"]
interval = "30s"
timeout = "10s"
raise_on = "critical"
code = "AMP_NO_OUTPUT"
metric_prefix = "amp_"

[tests.silent]
command = ["/usr/local/lib/alarmnet/test-silent"]
timeout = "2m"
schedule = "7d"

[tests.sound]
command = ["/usr/local/lib/alarmnet/test-sound"]
"#;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleFile {
    checks: Vec<CheckConfig>,
    #[serde(default)]
    tests: BTreeMap<Name, TestConfig>,
}

fn load(toml: &str) -> Result<ExampleFile, String> {
    ::config::Config::builder()
        .add_source(::config::File::from_str(toml, ::config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

#[test]
fn the_example_loads_through_the_config_crate_and_is_valid() {
    let file = load(EXAMPLE).expect("example loads");
    assert_eq!(validate(&file.checks, &file.tests), Vec::<String>::new());
    assert_eq!(file.checks.len(), 7);
    assert_eq!(file.checks[0].thresholds["temp_c"].warning, Some(70.5));
    assert_eq!(file.checks[0].thresholds["disk_pct"].warning, Some(85.0));
    assert_eq!(file.checks[4].expect_status, Some(204));
    assert_eq!(file.checks[1].interval, Duration::from_secs(15));
    let procedures = TestProcedures::new(file.tests);
    assert_eq!(
        procedures.schedules(),
        vec![(name("silent"), Duration::from_secs(7 * 86400))]
    );
    CheckSet::new(file.checks).expect("builds");

    let typo = EXAMPLE.replace("warn_age", "warn_agee");
    let err = load(&typo).expect_err("typo");
    assert!(err.contains("warn_agee"), "{err}");
}
