//! The API over TLS and the audit log, through the real binary: certificates from the
//! collector's own `pki` tool; a plain-HTTP listener on a public address refused at start
//! (exit 64 naming `http.insecure`); the console, the API and the event stream over HTTPS;
//! SIGHUP swapping the certificate under an open listener (a new connection sees the new
//! serial); an acknowledgement and a silence in `/api/v1/audit` with actor, peer and action,
//! refusals recorded too, and the log closed to viewers and anonymous callers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Process, binary, free_port, unique_id, wait_for};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const OPERATOR: &str = "e2e-tls-operator-token-0123";
const VIEWER: &str = "e2e-tls-viewer-token-0123";

fn collector(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary("alarmnet-collector"))
        .args(args)
        .output()
        .expect("run alarmnet-collector");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CA and a server certificate for 127.0.0.1 named `host`, by `alarmnet-collector pki`;
/// returns (ca.crt, host.crt, host.key).
fn issue(pki: &Path, host: &str) -> (PathBuf, PathBuf, PathBuf) {
    if !pki.join("ca.crt").exists() {
        let (code, out, err) = collector(&["pki", "init", "--dir", &pki.display().to_string()]);
        assert_eq!(code, Some(0), "pki init: {out}{err}");
    }
    let (code, out, err) = collector(&[
        "pki",
        "broker",
        "--dir",
        &pki.display().to_string(),
        "--host",
        host,
        "--ip",
        "127.0.0.1",
    ]);
    assert_eq!(code, Some(0), "pki broker: {out}{err}");
    let dir = pki.join("broker");
    (
        pki.join("ca.crt"),
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    )
}

/// The DER serial of the first certificate in a PEM file.
fn serial_of_pem(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).expect("read certificate");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes).expect("PEM");
    let cert = pem.parse_x509().expect("certificate");
    cert.tbs_certificate.raw_serial().to_vec()
}

fn serial_of_der(der: &[u8]) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("certificate");
    cert.tbs_certificate.raw_serial().to_vec()
}

/// A client trusting only the network's CA, telling which certificate the server showed.
/// A new client per call: one connection, one handshake.
fn https(ca: &Path) -> reqwest::Client {
    https_builder(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client")
}

fn https_builder(ca: &Path) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).expect("read CA")).expect("CA");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .tls_info(true)
}

/// The serial of the certificate a fresh connection to `url` is shown.
async fn served_serial(ca: &Path, url: &str) -> Vec<u8> {
    let r = https(ca).get(url).send().await.expect("https request");
    assert!(r.status().is_success(), "{}", r.status());
    let info = r
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info");
    serial_of_der(info.peer_certificate().expect("peer certificate"))
}

#[test]
fn plain_http_on_a_public_address_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"{}\"\n[http]\nlisten = \"0.0.0.0:{}\"\n",
            dir.path().join("alarmnet.db").display(),
            free_port()
        ),
    )
    .expect("config");
    let (code, out, err) = collector(&["run", "--config", &config.display().to_string()]);
    assert_eq!(code, Some(64), "{out}{err}");
    assert!(err.contains("http.insecure"), "{err}");
    assert!(err.contains("http.tls_cert_file"), "{err}");
    // Nothing was opened: no store file.
    assert!(!dir.path().join("alarmnet.db").exists());

    // A key without its certificate, and a certificate file that is no certificate.
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert_file = \"{c}\"\ntls_key_file = \"{c}\"\n",
            c = config.display()
        ),
    )
    .expect("config");
    let (code, _, err) = collector(&["run", "--config", &config.display().to_string()]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("http.tls_cert_file"), "{err}");
}

async fn wait_ready(client: &reqwest::Client, base: &str, collector: &mut Process) {
    let url = format!("{base}/readyz");
    wait_for(WAIT, "the collector's /readyz over https", || {
        let request = client.get(&url).send();
        let exited = collector.try_exit();
        assert!(
            exited.is_none(),
            "collector exited: {}",
            collector.output_tail(30)
        );
        async move {
            request
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;
}

/// Reads server-sent events until one satisfies `want`.
async fn next_event(
    response: &mut reqwest::Response,
    buffer: &mut String,
    want: impl Fn(&str, &Value) -> bool,
) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let event = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data = block.lines().find_map(|l| l.strip_prefix("data: "));
            if let (Some(event), Some(data)) = (event, data)
                && let Ok(data) = serde_json::from_str::<Value>(data)
                && want(event, &data)
            {
                return Some(data);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .ok()?
            .expect("stream read")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn api_over_tls_reloads_on_sighup_and_audits_operator_actions() {
    let broker = Mosquitto::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = dir.path().join("pki");
    let (ca, first_crt, first_key) = issue(&pki, "localhost");
    let (cert, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    std::fs::copy(&first_crt, &cert).expect("copy cert");
    std::fs::copy(&first_key, &key).expect("copy key");
    let http = free_port();
    let node = unique_id("tls-e2e");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nbroker = \"{broker}\"\nclient_id = \"{client}\"\nkeep_alive = \"5s\"\n\
             [store]\npath = \"{db}\"\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\ntls_cert_file = \"{cert}\"\n\
             tls_key_file = \"{key}\"\n\
             [[http.tokens]]\nname = \"desk\"\ntoken = \"{OPERATOR}\"\nrole = \"operator\"\n\
             [[http.tokens]]\nname = \"wall\"\ntoken = \"{VIEWER}\"\nrole = \"viewer\"\n\
             [retention]\naudit = \"30d\"\n",
            broker = broker.url(),
            client = unique_id("collector"),
            db = dir.path().join("alarmnet.db").display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .expect("collector config");
    std::fs::write(
        dir.path().join("agent.toml"),
        format!(
            "[node]\nid = \"{node}\"\nsite = \"lz-chengguan\"\nregion = \"lanzhou\"\n\
             kind = \"siren\"\n[mqtt]\nbrokers = [\"{broker}\"]\nheartbeat_interval = \"1s\"\n\
             keep_alive = \"5s\"\n[spool]\ndir = \"{spool}\"\n",
            broker = broker.url(),
            spool = dir.path().join("spool").display(),
        ),
    )
    .expect("agent config");
    let mut collector = Process::builder(binary("alarmnet-collector"))
        .name("collector-tls")
        .args(["run", "--config"])
        .arg(&config)
        .env("ALARMNET_LOG", "info")
        .spawn();
    let client = https(&ca);
    // The certificate names 127.0.0.1 (an IP SAN) as well as the host.
    let base = format!("https://127.0.0.1:{http}");
    wait_ready(&client, &base, &mut collector).await;

    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(format!("http://127.0.0.1:{http}/healthz"))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.as_ref().is_ok_and(|r| r.status().is_success()),
        "{plain:?}"
    );

    // The console over TLS, with the hardening headers and HSTS.
    let console = client
        .get(format!("{base}/"))
        .send()
        .await
        .expect("console");
    assert_eq!(console.status(), 200);
    let h = console.headers().clone();
    assert!(
        h["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("frame-ancestors 'none'")
    );
    assert!(
        h["strict-transport-security"]
            .to_str()
            .expect("hsts")
            .contains("max-age=")
    );
    assert!(console.text().await.expect("html").contains("<html"));
    let js = client
        .get(format!("{base}/audit.js"))
        .send()
        .await
        .expect("audit.js");
    assert_eq!(js.status(), 200);

    // The event stream over TLS, by ticket.
    let ticket: Value = client
        .post(format!("{base}/api/v1/events/ticket"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("ticket")
        .json()
        .await
        .expect("ticket json");
    // No overall timeout: the stream stays open.
    let mut events = https_builder(&ca)
        .build()
        .expect("stream client")
        .get(format!(
            "{base}/api/v1/events?ticket={}",
            ticket["ticket"].as_str().expect("ticket")
        ))
        .send()
        .await
        .expect("event stream");
    assert_eq!(events.status(), 200);
    let mut buffer = String::new();
    let mut agent = Process::builder(binary("alarmnet-agent"))
        .name("agent")
        .args(["run", "--config"])
        .arg(dir.path().join("agent.toml"))
        .spawn();
    next_event(&mut events, &mut buffer, |event, d| {
        event == "state" && d["node"] == node.as_str() && d["to"] == "online"
    })
    .await
    .expect("the node comes online on the stream over TLS");
    agent.kill_and_reap();
    next_event(&mut events, &mut buffer, |event, d| {
        event == "state" && d["node"] == node.as_str() && d["to"] == "offline"
    })
    .await
    .expect("the node goes offline on the stream over TLS");
    let alerts_url = format!("{base}/api/v1/alerts?status=firing&node={node}");
    let alert_id = wait_for(WAIT, "a firing node_offline alert", || {
        let request = client.get(&alerts_url).bearer_auth(VIEWER).send();
        async move {
            let v: Value = request.await.ok()?.json().await.ok()?;
            v["items"].get(0)?["id"].as_str().map(str::to_owned)
        }
    })
    .await;

    // SIGHUP: a new certificate (new serial) for new connections, same listener.
    let before = served_serial(&ca, &format!("{base}/healthz")).await;
    assert_eq!(before, serial_of_pem(&cert));
    let (_, second_crt, second_key) = issue(&pki, "api-2");
    std::fs::copy(&second_crt, &cert).expect("replace cert");
    std::fs::copy(&second_key, &key).expect("replace key");
    // Not before the signal.
    assert_eq!(served_serial(&ca, &format!("{base}/healthz")).await, before);
    collector.signal("HUP");
    let want = serial_of_pem(&second_crt);
    assert_ne!(want, before);
    wait_for(WAIT, "the new certificate after SIGHUP", || {
        let ca = ca.clone();
        let url = format!("{base}/healthz");
        let want = want.clone();
        async move { (served_serial(&ca, &url).await == want).then_some(()) }
    })
    .await;
    // The stream opened before the reload is still open (the listener never closed).
    assert!(collector.is_running(), "{}", collector.output_tail(30));

    // Operator actions, over TLS.
    let r = client
        .post(format!("{base}/api/v1/alerts/{alert_id}/ack"))
        .bearer_auth(OPERATOR)
        .json(&json!({"comment": "crew sent"}))
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = client
        .post(format!("{base}/api/v1/silences"))
        .bearer_auth(OPERATOR)
        .json(&json!({"site": "lz-chengguan", "duration": "1h", "comment": "mast repair"}))
        .send()
        .await
        .expect("silence");
    assert_eq!(r.status(), 201);
    let silence: Value = r.json().await.expect("silence json");
    let silence_id = silence["id"].as_str().expect("silence id").to_owned();
    // Refused: a viewer acknowledging, an unknown token silencing.
    let r = client
        .post(format!("{base}/api/v1/alerts/{alert_id}/ack"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .expect("viewer ack");
    assert_eq!(r.status(), 403);
    let r = client
        .post(format!("{base}/api/v1/silences"))
        .bearer_auth("e2e-not-a-configured-token")
        .json(&json!({"node": node, "duration": "1h"}))
        .send()
        .await
        .expect("unknown token");
    assert_eq!(r.status(), 401);

    // The log: operators only.
    for (token, status) in [(None, 401), (Some(VIEWER), 403)] {
        let mut request = client.get(format!("{base}/api/v1/audit"));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        assert_eq!(request.send().await.expect("audit").status(), status);
    }
    let log: Value = client
        .get(format!("{base}/api/v1/audit?since=1h"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("audit json");
    let items = log["items"].as_array().expect("items");
    let find = |action: &str, outcome: &str| {
        items
            .iter()
            .find(|e| e["action"] == action && e["outcome"] == outcome)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} {outcome} in {log:#}"))
    };
    let ack = find("alert.ack", "success");
    assert_eq!(ack["actor"], "desk");
    assert_eq!(ack["role"], "operator");
    assert_eq!(ack["peer"], "127.0.0.1");
    assert_eq!(ack["target"], alert_id.as_str());
    assert_eq!(ack["status"], 200);
    assert_eq!(ack["detail"]["request"]["comment"], "crew sent");
    let added = find("silence.add", "success");
    assert_eq!(added["actor"], "desk");
    assert_eq!(added["peer"], "127.0.0.1");
    assert_eq!(added["target"], silence_id.as_str());
    let refused = find("alert.ack", "refused");
    assert_eq!(refused["actor"], "wall");
    assert_eq!(refused["status"], 403);
    assert!(
        refused["detail"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("operator")),
        "{refused}"
    );
    let unknown = find("silence.add", "refused");
    assert_eq!(unknown["role"], "unknown_token");
    assert_eq!(unknown["actor"], Value::Null);
    let reload = find("config.reload", "success");
    assert_eq!(reload["role"], "system");
    assert_eq!(reload["target"], "http.tls");

    // Filters: by actor and action.
    let mine: Value = client
        .get(format!("{base}/api/v1/audit?actor=desk&action=silence.add"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("filtered")
        .json()
        .await
        .expect("json");
    assert_eq!(mine["total"], 1, "{mine:#}");

    // The CLI lists it too, trusting the CA given.
    let out = Command::new(binary("alarmnet-collector"))
        .args(["audit", "--url", &base, "--ca-file"])
        .arg(&ca)
        .args(["--format", "json", "--action", "alert.ack"])
        .env("ALARMNET_TOKEN", OPERATOR)
        .output()
        .expect("cli audit");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_str(&text).expect("cli json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed:#}");

    // A reload that fails (a truncated key) keeps the certificate in use, and says so.
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").expect("truncate key");
    collector.signal("HUP");
    let failed = wait_for(WAIT, "the failed reload in the audit log", || {
        let request = client
            .get(format!(
                "{base}/api/v1/audit?action=config.reload&outcome=failed"
            ))
            .bearer_auth(OPERATOR)
            .send();
        async move {
            let v: Value = request.await.ok()?.json().await.ok()?;
            v["items"].get(0).cloned()
        }
    })
    .await;
    assert!(
        failed["detail"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("http.tls_key_file")),
        "{failed}"
    );
    assert_eq!(served_serial(&ca, &format!("{base}/healthz")).await, want);
    drop(events);
    collector.terminate(Duration::from_secs(10)).await;
}
