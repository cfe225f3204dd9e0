//! `alarmnet-agent check`, the technician's install test, through the real binary: one row
//! per check, exit code = the worst status (0 ok, 1 warning, 2 critical, 3 unknown), and 64
//! for a configuration it cannot use, TLS settings included. Needs no broker.

use std::path::Path;
use std::time::Duration;

use alarmnet_e2e::{Process, binary};

const NODE: &str = "[node]\nid = \"lz-cg-s001\"\nsite = \"lz-chengguan\"\nregion = \"lanzhou\"\n";

/// An `exec` check that prints `message` and exits with `code` (Nagios plugin style).
fn exec_check(name: &str, code: i32, message: &str) -> String {
    format!(
        "[[checks]]\nname = \"{name}\"\nkind = \"exec\"\n\
         command = [\"/bin/sh\", \"-c\", \"echo '{message} | level={code}'; exit {code}\"]\ninterval = \"30s\"\n"
    )
}

/// Runs `alarmnet-agent check` on `config`; returns its exit code, stdout and stderr.
async fn check(dir: &Path, name: &str, config: &str) -> (i32, String, String) {
    let path = dir.join(format!("{name}.toml"));
    let spool = dir.join(format!("{name}-spool"));
    std::fs::write(
        &path,
        format!("{config}\n[spool]\ndir = \"{}\"\n", spool.display()),
    )
    .expect("write config");
    let mut agent = Process::builder(binary("alarmnet-agent"))
        .name(format!("agent-check:{name}"))
        .args(["check", "--config"])
        .arg(&path)
        .spawn();
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("check finishes");
    (
        status.code().expect("an exit code, not a signal"),
        agent.stdout_text(),
        agent.stderr_text(),
    )
}

#[tokio::test]
async fn check_exits_with_the_worst_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, &[i32], i32); 6] = [
        ("all-ok", &[0, 0], 0),
        ("one-warning", &[0, 1], 1),
        ("critical-beats-warning", &[1, 2, 0], 2),
        ("unknown-is-worst", &[2, 3], 3),
        // Not a plugin exit code: the check could not say, so unknown.
        ("out-of-range", &[0, 7], 3),
        ("no-checks", &[], 0),
    ];
    for (name, codes, want) in cases {
        let mut config = NODE.to_owned();
        for (i, code) in codes.iter().enumerate() {
            config.push_str(&exec_check(
                &format!("c{i}"),
                *code,
                &format!("says {code}"),
            ));
        }
        let (code, stdout, stderr) = check(dir.path(), name, &config).await;
        assert_eq!(code, want, "{name}: stdout:\n{stdout}\nstderr:\n{stderr}");
        for (i, c) in codes.iter().enumerate() {
            let row = stdout
                .lines()
                .find(|l| l.starts_with(&format!("c{i} ")))
                .unwrap_or_else(|| panic!("{name}: no row for c{i} in\n{stdout}"));
            assert!(row.contains(&format!("says {c}")), "{name}: {row}");
        }
    }
}

#[tokio::test]
async fn check_exits_64_on_a_config_it_cannot_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("node.crt");
    let key = dir.path().join("node.key");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let (cert, key) = (cert.display(), key.display());
    let cases = [
        (
            "cert-without-ca",
            format!(
                "{NODE}[mqtt]\nbrokers = [\"mqtts://127.0.0.1:8883\"]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
            ),
            "mqtt.ca_file: required with mqtt.cert_file",
        ),
        (
            "cert-without-key",
            format!(
                "{NODE}[mqtt]\nbrokers = [\"mqtts://127.0.0.1:8883\"]\nca_file = \"{cert}\"\ncert_file = \"{cert}\"\n"
            ),
            "mqtt.cert_file: set without mqtt.key_file",
        ),
        (
            "mixed-schemes",
            format!(
                "{NODE}[mqtt]\nbrokers = [\"mqtts://127.0.0.1:8883\", \"mqtt://127.0.0.1:1883\"]\n"
            ),
            "mixes mqtt:// and mqtts://",
        ),
        (
            "bad-check",
            format!("{NODE}[[checks]]\nname = \"x\"\nkind = \"no-such-kind\"\n"),
            "no-such-kind",
        ),
    ];
    for (name, config, needle) in cases {
        let (code, stdout, stderr) = check(dir.path(), name, &config).await;
        assert_eq!(code, 64, "{name}: stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            stderr.contains(needle),
            "{name}: {needle:?} not in:\n{stderr}"
        );
        assert!(stdout.is_empty(), "{name}: ran checks anyway:\n{stdout}");
    }
}
