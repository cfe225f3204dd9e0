//! Golden fixtures: every file under `fixtures/valid` decodes, forever; every file under
//! `fixtures/invalid` fails with the reason its name states (`{kind}--{reason}--{what}.json`).

use std::fs;
use std::path::Path;

use alarmnet_protocol::{Message, Prefix, Reason, decode, encode};

const NODE: &str = "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001";

fn topic_for(file: &str) -> String {
    let kind = file.split(['-', '.']).next().unwrap_or_default();
    match kind {
        "collector" => "alarmnet/v1/$collector/alarmnet-collector-1/state".into(),
        "alert" if file.contains("site") => {
            "alarmnet/v1/$alerts/lanzhou/lz-chengguan/_/site_outage".into()
        }
        "alert" => "alarmnet/v1/$alerts/lanzhou/lz-chengguan/lz-cg-s001/node_offline".into(),
        leaf => format!("{NODE}/{leaf}"),
    }
}

fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut out: Vec<_> = fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, fs::read(&path).expect("read fixture"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_valid_fixture_decodes_and_re_encodes_to_the_same_message() {
    let prefix = Prefix::default();
    let valid = files("valid");
    assert!(valid.len() >= 12, "fixtures missing");
    for (name, bytes) in valid {
        let topic = topic_for(&name);
        let env = decode(&prefix, &topic, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let again =
            decode(&prefix, &topic, &encode(&env.message)).expect("re-encoded message decodes");
        assert_eq!(again, env, "{name}");
    }
}

#[test]
fn every_message_kind_has_valid_and_invalid_fixtures() {
    let valid: Vec<_> = files("valid").into_iter().map(|(n, _)| n).collect();
    let invalid: Vec<_> = files("invalid").into_iter().map(|(n, _)| n).collect();
    for kind in ["birth", "state", "hb", "fault", "test", "cmd"] {
        assert!(
            valid.iter().any(|n| n.starts_with(kind)),
            "no valid {kind} fixture"
        );
        assert!(
            invalid.iter().any(|n| n.starts_with(&format!("{kind}--"))),
            "no invalid {kind} fixture"
        );
    }
}

#[test]
fn every_invalid_fixture_fails_with_its_reason() {
    let prefix = Prefix::default();
    let mut reasons_seen = std::collections::BTreeSet::new();
    for (name, bytes) in files("invalid") {
        let mut parts = name.split("--");
        let leaf = parts.next().expect("kind");
        let expected = parts.next().expect("reason");
        let topic = format!("{NODE}/{leaf}");
        let err = decode(&prefix, &topic, &bytes).expect_err(&name);
        assert_eq!(err.reason.as_str(), expected, "{name}: {err}");
        reasons_seen.insert(err.reason);
    }
    for reason in Reason::ALL {
        if reason != Reason::BadTopic {
            assert!(
                reasons_seen.contains(&reason),
                "no invalid fixture for {reason}"
            );
        }
    }
}

/// The error names the field and the rule, so a vendor can fix their agent from the log.
#[test]
fn errors_name_the_field_and_the_rule() {
    let prefix = Prefix::default();
    let cases: &[(&str, &str, Reason, Option<&str>, &str)] = &[
        (
            "hb",
            "hb--invalid_field--negative-seq.json",
            Reason::InvalidField,
            Some("seq"),
            "-1",
        ),
        (
            "hb",
            "hb--invalid_field--short-boot.json",
            Reason::InvalidField,
            Some("boot"),
            "8 to 64 characters",
        ),
        (
            "hb",
            "hb--invalid_field--metric-name.json",
            Reason::InvalidField,
            Some("metrics.CPU-pct"),
            "a-z 0-9 _",
        ),
        (
            "hb",
            "hb--invalid_field--metric-string.json",
            Reason::InvalidField,
            Some("metrics.cpu_pct"),
            "string",
        ),
        (
            "hb",
            "hb--invalid_field--too-many-metrics.json",
            Reason::InvalidField,
            Some("metrics"),
            "at most 64",
        ),
        (
            "hb",
            "hb--invalid_field--fault-key.json",
            Reason::InvalidField,
            Some("faults[0]"),
            "check/code",
        ),
        (
            "hb",
            "hb--invalid_field--metric-overflow.json",
            Reason::InvalidField,
            Some("metrics.cpu_pct"),
            "finite",
        ),
        (
            "hb",
            "hb--missing_field--seq.json",
            Reason::MissingField,
            Some("seq"),
            "required",
        ),
        (
            "hb",
            "hb--unsupported_version--v2.json",
            Reason::UnsupportedVersion,
            Some("v"),
            "version 2",
        ),
        (
            "birth",
            "birth--id_mismatch--node.json",
            Reason::IdMismatch,
            Some("node"),
            "someone-else",
        ),
        (
            "birth",
            "birth--invalid_field--hb-interval.json",
            Reason::InvalidField,
            Some("hb_interval_s"),
            "0.5 to 86400",
        ),
        (
            "birth",
            "birth--invalid_field--name-too-long.json",
            Reason::InvalidField,
            Some("name"),
            "at most 128",
        ),
        (
            "birth",
            "birth--invalid_field--too-many-tags.json",
            Reason::InvalidField,
            Some("tags"),
            "at most 32",
        ),
        (
            "fault",
            "fault--invalid_field--severity.json",
            Reason::InvalidField,
            Some("severity"),
            "fatal",
        ),
        (
            "cmd",
            "cmd--missing_field--test-without-kind.json",
            Reason::MissingField,
            Some("test"),
            "required",
        ),
    ];
    for (leaf, file, reason, field, needle) in cases {
        let bytes = fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/invalid")
                .join(file),
        )
        .expect(file);
        let err = decode(&prefix, &format!("{NODE}/{leaf}"), &bytes).expect_err(file);
        assert_eq!(
            (err.reason, err.field.as_deref()),
            (*reason, *field),
            "{file}: {err}"
        );
        assert!(err.to_string().contains(needle), "{file}: {err}");
    }
}

#[test]
fn bad_topics_are_rejected_before_the_payload_is_read() {
    let prefix = Prefix::default();
    let hb = br#"{"v":1,"boot":"9f2c4e1a7b3d5e60","seq":1,"ts":1}"#;
    for topic in [
        "alarmnet/v2/lanzhou/lz-chengguan/lz-cg-s001/hb",
        "alarmnet/v1/lanzhou/lz-chengguan/hb",
        "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/heartbeat",
        "alarmnet/v1/lanzhou/lz chengguan/lz-cg-s001/hb",
        "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/hb/extra",
    ] {
        let err = decode(&prefix, topic, hb).expect_err(topic);
        assert_eq!(err.reason, Reason::BadTopic, "{topic}: {err}");
    }
}

#[test]
fn an_empty_payload_on_an_alert_topic_clears_it() {
    let prefix = Prefix::default();
    let env = decode(
        &prefix,
        "alarmnet/v1/$alerts/lanzhou/lz-chengguan/lz-cg-s001/node_offline",
        b"",
    )
    .expect("clear");
    assert_eq!(env.message, Message::AlertCleared);
    assert!(encode(&Message::AlertCleared).is_empty());
}

#[test]
fn an_alert_whose_payload_disagrees_with_its_topic_is_refused() {
    let prefix = Prefix::default();
    let bytes = fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/alert-firing.json"),
    )
    .expect("fixture");
    let err = decode(
        &prefix,
        "alarmnet/v1/$alerts/lanzhou/lz-chengguan/other-node/node_offline",
        &bytes,
    )
    .expect_err("mismatch");
    assert_eq!(
        (err.reason, err.field.as_deref()),
        (Reason::IdMismatch, Some("node"))
    );
}
