//! Secrets through the real binary: `hash-token`, API tokens read from systemd's
//! credentials directory or given as digests, the event stream's single-use tickets, and a
//! missing secret file refused with exit code 64 naming its key.

mod collector_support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Process, binary, free_port};
use collector_support::{Collector, workdir};

const T: Duration = Duration::from_secs(20);
const VIEWER: &str = "e2e-wall-viewer-token-0123";
const OPERATOR: &str = "e2e-desk-operator-token-0123";
/// SHA-256 of `OPERATOR` (`printf %s "$OPERATOR" | sha256sum`).
const OPERATOR_SHA256: &str = "a689bc1784282a55822386492c1ece38c78ef6be9900ce902018d78d75e7c81e";

fn hash_token(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(binary("alarmnet-collector"))
        .arg("hash-token")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hash-token");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("hash-token output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hash_token_prints_the_config_line() {
    let (code, out, _) = hash_token(&[], &format!("{OPERATOR}\n"));
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("token_sha256 = \"{OPERATOR_SHA256}\"\n"));

    // --new: the token once (a comment), then its line, which hashing it again reproduces.
    let (code, out, _) = hash_token(&["--new"], "");
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let token = lines[1].trim_start_matches("# ").trim();
    assert_eq!(token.len(), 32, "{out}");
    let (_, again, _) = hash_token(&[], token);
    assert_eq!(again.trim(), lines[2]);

    for bad in ["short", "change-me-operator-0000"] {
        let (code, out, err) = hash_token(&[], bad);
        assert_eq!(code, Some(64), "{bad}: {out}{err}");
        assert!(out.is_empty(), "{out}");
    }
}

#[tokio::test]
async fn tokens_from_credentials_and_digests_and_stream_tickets() {
    let broker = Mosquitto::start().await;
    let dir = workdir();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).expect("credentials dir");
    std::fs::write(credentials.join("wall.token"), format!("{VIEWER}\n")).expect("write");
    let extra = format!(
        "[[http.tokens]]\nname = \"wall\"\ntoken_file = \"wall.token\"\nrole = \"viewer\"\n\
         [[http.tokens]]\nname = \"desk\"\ntoken_sha256 = \"{OPERATOR_SHA256}\"\nrole = \"operator\"\n"
    );
    let collector = Collector::start_with_env(
        &broker,
        dir.path(),
        &extra,
        &[(
            "CREDENTIALS_DIRECTORY",
            credentials.to_str().expect("utf-8"),
        )],
    )
    .await;
    let base = format!("http://127.0.0.1:{}", collector.http_port);
    let http = reqwest::Client::new();
    for (token, name, role) in [(VIEWER, "wall", "viewer"), (OPERATOR, "desk", "operator")] {
        let r = http
            .get(format!("{base}/api/v1/whoami"))
            .bearer_auth(token)
            .send()
            .await
            .expect("whoami");
        assert_eq!(r.status(), 200);
        let me: serde_json::Value = r.json().await.expect("json");
        assert_eq!(
            (me["name"].as_str(), me["role"].as_str()),
            (Some(name), Some(role))
        );
    }
    let r = http
        .get(format!("{base}/api/v1/whoami"))
        .bearer_auth(OPERATOR_SHA256)
        .send()
        .await
        .expect("whoami");
    assert_eq!(r.status(), 401, "the digest itself is not a token");

    let r = http
        .post(format!("{base}/api/v1/events/ticket"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("ticket");
    assert_eq!(r.status(), 201);
    let ticket: serde_json::Value = r.json().await.expect("json");
    let ticket = ticket["ticket"].as_str().expect("ticket").to_owned();
    let stream = http
        .get(format!("{base}/api/v1/events?ticket={ticket}"))
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    drop(stream);
    let again = http
        .get(format!("{base}/api/v1/events?ticket={ticket}"))
        .send()
        .await
        .expect("stream");
    assert_eq!(again.status(), 401, "a ticket opens one connection");
}

#[tokio::test]
async fn a_missing_secret_file_exits_64_naming_the_key() {
    let dir = workdir();
    let credentials = dir.path().join("credentials");
    std::fs::create_dir(&credentials).expect("credentials dir");
    std::fs::write(credentials.join("mqtt-password"), "never-shown-password\n").expect("write");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nbroker = \"mqtt://127.0.0.1:1\"\nusername = \"c\"\npassword = \"inline-pw\"\n\
             password_file = \"mqtt-password\"\n\
             [store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n\
             [[http.tokens]]\nname = \"wall\"\ntoken_file = \"no-such.token\"\nrole = \"viewer\"\n",
            dir.path().join("a.db").display(),
            free_port()
        ),
    )
    .expect("write config");
    let mut process = Process::builder(binary("alarmnet-collector"))
        .name("collector-missing-secret")
        .arg("run")
        .arg("--config")
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .spawn();
    let status = process.wait_exit(T).await.expect("exits on a bad config");
    assert_eq!(status.code(), Some(64), "{}", process.output_tail(20));
    let stderr = process.stderr_text();
    assert!(
        stderr.contains("mqtt.password_file: set together with mqtt.password"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "http.tokens[0].token_file: {}",
            credentials.join("no-such.token").display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("never-shown-password") && !stderr.contains("inline-pw"),
        "{stderr}"
    );
}
