//! The production broker setup, end to end: the shipped `deploy/mosquitto/mosquitto.conf`
//! (TLS listener requiring client certificates, CN as username, CRL, ACL) run by a real
//! Mosquitto, with a CA, certificates, CRL and ACL made by the shipped
//! `alarmnet-collector pki` commands, and the real agent and collector connecting over
//! `mqtts://` with client certificates. Clients that must be refused are the stock
//! `mosquitto_pub`/`mosquitto_sub` with the certificates an attacker would hold.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use alarmnet_e2e::{Mosquitto, Process, binary, free_port, unique_id, wait_for};
use serde_json::Value;

const SHIPPED_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/mosquitto/mosquitto.conf"
);
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `alarmnet-collector pki ARGS`, which must succeed; returns its stdout.
fn run_pki(args: &[&str]) -> String {
    let out = Command::new(binary("alarmnet-collector"))
        .arg("pki")
        .args(args)
        .output()
        .expect("run alarmnet-collector pki");
    assert!(
        out.status.success(),
        "pki {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The network's PKI for one test, made by the shipped commands.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }
    /// `(cert, key)` of a node.
    fn node(&self, node: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("nodes/{node}.crt")),
            self.path(&format!("nodes/{node}.key")),
        )
    }
    fn collector(&self, id: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("collector/{id}.crt")),
            self.path(&format!("collector/{id}.key")),
        )
    }
}

/// The shipped mosquitto.conf with its paths moved into the test's directories and its
/// listeners onto loopback ports. Every directive it rewrites must be in the file, so the
/// test fails if the shipped file changes shape.
fn shipped_config(pki: &Path, acl: &Path) -> impl FnOnce(&Path, u16) -> String {
    let shipped = std::fs::read_to_string(SHIPPED_CONF).expect("read the shipped mosquitto.conf");
    let (pki, acl) = (pki.to_owned(), acl.to_owned());
    move |dir: &Path, port: u16| {
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, "").expect("empty password file");
        let d = dir.display();
        let rewrites: Vec<(&str, String)> = vec![
            ("pid_file ", format!("pid_file {d}/mosquitto.pid")),
            (
                "persistence_location ",
                format!("persistence_location {d}/"),
            ),
            (
                "password_file ",
                format!("password_file {}", passwd.display()),
            ),
            ("acl_file ", format!("acl_file {}", acl.display())),
            ("log_dest ", format!("log_dest file {d}/mosquitto.log")),
            ("listener 8883", format!("listener {port} 127.0.0.1")),
            (
                "listener 1883 127.0.0.1",
                format!("listener {} 127.0.0.1", free_port()),
            ),
            (
                "cafile ",
                format!("cafile {}", pki.join("ca.crt").display()),
            ),
            (
                "certfile ",
                format!("certfile {}", pki.join("broker/localhost.crt").display()),
            ),
            (
                "keyfile ",
                format!("keyfile {}", pki.join("broker/localhost.key").display()),
            ),
            (
                "crlfile ",
                format!("crlfile {}", pki.join("ca.crl").display()),
            ),
        ];
        let mut used = vec![false; rewrites.len()];
        // As root, Mosquitto would switch to the `mosquitto` user, who cannot read the
        // test's temp dirs.
        let mut lines = vec!["user root".to_owned()];
        for line in shipped.lines() {
            match rewrites
                .iter()
                .position(|(start, _)| line.starts_with(start))
            {
                Some(i) => {
                    assert!(!used[i], "{} twice in the shipped config", rewrites[i].0);
                    used[i] = true;
                    lines.push(rewrites[i].1.clone());
                }
                None => lines.push(line.to_owned()),
            }
        }
        for ((start, _), used) in rewrites.iter().zip(used) {
            assert!(used, "the shipped mosquitto.conf has no `{start}` line");
        }
        lines.join("\n")
    }
}

/// `mosquitto_pub`/`mosquitto_sub` over TLS with the CA and, if given, a client
/// certificate: the arguments before the command's own.
fn tls_args(port: u16, ca: &Path, cert: Option<&(PathBuf, PathBuf)>) -> Vec<String> {
    let mut args = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "--cafile".into(),
        ca.display().to_string(),
        "-q".into(),
        "1".into(),
        "-i".into(),
        unique_id("tool"),
    ];
    if let Some((c, k)) = cert {
        args.extend([
            "--cert".into(),
            c.display().to_string(),
            "--key".into(),
            k.display().to_string(),
        ]);
    }
    args
}

/// One `mosquitto_pub` (connect, publish QoS 1, wait for PUBACK, disconnect).
fn publish(
    port: u16,
    ca: &Path,
    cert: Option<&(PathBuf, PathBuf)>,
    topic: &str,
    payload: &str,
) -> Output {
    Command::new("timeout")
        .arg("20")
        .arg("mosquitto_pub")
        .args(tls_args(port, ca, cert))
        .args(["-t", topic, "-m", payload])
        .output()
        .expect("run mosquitto_pub")
}

fn assert_published(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: mosquitto_pub failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running collector (the real binary) connected over mqtts with its certificate.
struct Collector {
    process: Process,
    http: u16,
    client: reqwest::Client,
}

impl Collector {
    async fn start(dir: &Path, port: u16, pki: &Pki, id: &str) -> Collector {
        let http = free_port();
        let (cert, key) = pki.collector(id);
        let config = dir.join("collector.toml");
        std::fs::write(
            &config,
            format!(
                "[mqtt]\nbroker = \"mqtts://127.0.0.1:{port}\"\nclient_id = \"{id}\"\n\
                 keep_alive = \"10s\"\nreconnect_max = \"1s\"\n\
                 [mqtt.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
                 [store]\npath = \"{}\"\n[http]\nlisten = \"127.0.0.1:{http}\"\nanonymous_read = true\n",
                pki.ca().display(),
                cert.display(),
                key.display(),
                dir.join("alarmnet.db").display()
            ),
        )
        .expect("write collector.toml");
        let process = Process::builder(binary("alarmnet-collector"))
            .name(format!("collector:{http}"))
            .args(["run", "--config"])
            .arg(&config)
            .env("ALARMNET_LOG", "info")
            .spawn();
        let mut c = Collector {
            process,
            http,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        let url = format!("http://127.0.0.1:{http}/readyz");
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = c.process.try_exit() {
                panic!(
                    "the collector exited ({status})\n{}",
                    c.process.output_tail(40)
                );
            }
            if let Ok(r) = c.client.get(&url).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the collector did not become ready over TLS\n{}",
                c.process.output_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("http://127.0.0.1:{}{path}", self.http))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn node_state(&self, node: &str) -> Option<String> {
        match self.get(&format!("/api/v1/nodes/{node}")).await {
            (200, v) => v["state"].as_str().map(str::to_owned),
            _ => None,
        }
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{}/metrics", self.http))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }
}

/// Starts the real agent for `node` over mqtts with its certificate.
fn start_agent(dir: &Path, port: u16, pki: &Pki, node: &str, site: &str, region: &str) -> Process {
    let (cert, key) = pki.node(node);
    let config = dir.join(format!("{node}.toml"));
    std::fs::write(
        &config,
        format!(
            "[node]\nid = \"{node}\"\nsite = \"{site}\"\nregion = \"{region}\"\n\
             [mqtt]\nbrokers = [\"mqtts://127.0.0.1:{port}\"]\nheartbeat_interval = \"1s\"\n\
             reconnect_max = \"1s\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [spool]\ndir = \"{}\"\n",
            pki.ca().display(),
            cert.display(),
            key.display(),
            dir.join(format!("{node}-spool")).display()
        ),
    )
    .expect("write the agent's config");
    Process::builder(binary("alarmnet-agent"))
        .name(format!("agent:{node}"))
        .args(["run", "--config"])
        .arg(&config)
        .spawn()
}

#[tokio::test]
async fn nodes_and_the_collector_over_tls_each_confined_to_their_own_topics() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let (region, site) = ("lanzhou", "lz-chengguan");
    let agent = unique_id("tls-agent");
    let victim = unique_id("tls-victim");
    let thief = unique_id("tls-thief");
    let collector_id = unique_id("collector");
    let operator_id = unique_id("operator");

    // The PKI and the ACL, made by the shipped commands from a node list.
    let pki = Pki { dir: w.join("pki") };
    let d = pki.dir.to_str().expect("utf-8 path");
    run_pki(&["init", "--dir", d]);
    run_pki(&[
        "broker",
        "--dir",
        d,
        "--host",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    run_pki(&["collector", "--dir", d, "--id", &collector_id]);
    // A second collector identity for the test's own commands: two clients with one
    // identity would take over each other's session.
    run_pki(&["collector", "--dir", d, "--id", &operator_id]);
    let nodes = w.join("nodes.csv");
    std::fs::write(
        &nodes,
        format!("node,site,region\n{agent},{site},{region}\n{victim},{site},{region}\n{thief},{site},{region}\n"),
    )
    .expect("node list");
    let issued = run_pki(&[
        "nodes",
        "--dir",
        d,
        "--nodes",
        nodes.to_str().expect("utf-8"),
    ]);
    assert!(issued.contains("3 certificates issued"), "{issued}");
    let acl = w.join("acl");
    let acl_text = run_pki(&[
        "acl",
        "--nodes",
        nodes.to_str().expect("utf-8"),
        "--collector",
        &collector_id,
        "--collector",
        &operator_id,
    ]);
    std::fs::write(&acl, acl_text).expect("write acl");

    let mut broker = Mosquitto::builder()
        // The test waits for a subscription to be in place by reading the log.
        .config_line("log_type subscribe")
        .start_with_config(shipped_config(&pki.dir, &acl))
        .await;
    let port = broker.port();

    // The collector and an agent, both over mqtts with client certificates.
    let collector = Collector::start(w, port, &pki, &collector_id).await;
    let mut agent_process = start_agent(w, port, &pki, &agent, site, region);
    wait_for(
        TIMEOUT,
        "the agent online in the collector over TLS",
        || async {
            (collector.node_state(&agent).await.as_deref() == Some("online")).then_some(())
        },
    )
    .await;
    assert!(agent_process.is_running());

    // The thief's certificate forges the victim's birth and heartbeat, and its own birth
    // under another site: the ACL drops all three. Then a marker the collector does see on
    // the thief's own topic (garbage, counted as bad_json); the broker forwards a client's
    // messages in order, so once the marker is counted, anything forged would have been.
    let thief_cert = pki.node(&thief);
    let ca = pki.ca();
    let base = format!("alarmnet/v1/{region}/{site}");
    let forged_birth = format!(
        r#"{{"v":1,"boot":"forged000000001","ts":1764330000000,"node":"{victim}","site":"{site}","region":"{region}","kind":"siren","hb_interval_s":10}}"#
    );
    let moved_birth = format!(
        r#"{{"v":1,"boot":"forged000000002","ts":1764330000000,"node":"{thief}","site":"elsewhere","region":"{region}","kind":"siren","hb_interval_s":10}}"#
    );
    let bad_json = r#"alarmnet_messages_rejected_total{reason="bad_json"}"#;
    let bad_before = collector.metric(bad_json).await;
    let received = "alarmnet_messages_received_total";
    let received_before = collector.metric(received).await;
    for (topic, payload) in [
        (format!("{base}/{victim}/birth"), forged_birth.as_str()),
        (
            format!("{base}/{victim}/hb"),
            r#"{"v":1,"boot":"forged000000001","seq":0,"ts":1764330000000}"#,
        ),
        (
            format!("alarmnet/v1/{region}/elsewhere/{thief}/birth"),
            moved_birth.as_str(),
        ),
        (format!("{base}/{thief}/hb"), "not json: the marker"),
    ] {
        // The broker accepts the PUBLISH either way (MQTT 3.1.1 has no way to say no).
        assert_published(
            &publish(port, &ca, Some(&thief_cert), &topic, payload),
            &topic,
        );
    }
    wait_for(TIMEOUT, "the marker counted as bad_json", || async {
        (collector.metric(bad_json).await >= bad_before + 1.0).then_some(())
    })
    .await;
    assert_eq!(
        collector.get(&format!("/api/v1/nodes/{victim}")).await.0,
        404,
        "the forged birth registered the victim"
    );
    assert_eq!(
        collector.get(&format!("/api/v1/nodes/{thief}")).await.0,
        404,
        "a birth under a site not the thief's own got through"
    );
    for reason in ["unknown_node", "moved", "id_mismatch"] {
        let series = format!(r#"alarmnet_messages_rejected_total{{reason="{reason}"}}"#);
        assert_eq!(collector.metric(&series).await, 0.0, "{series}");
    }
    assert!(collector.metric(received).await > received_before);

    // Reading: the thief subscribes to the victim's cmd and its own; the operator identity
    // sends one command to each. Only its own arrives.
    let sub_out = w.join("thief-sub.txt");
    let mut sub = Command::new("timeout")
        .arg("20")
        .arg("mosquitto_sub")
        .args(tls_args(port, &ca, Some(&thief_cert)))
        .args(["-v", "-C", "1", "-W", "15"])
        .args([
            "-t",
            &format!("{base}/{victim}/cmd"),
            "-t",
            &format!("{base}/{thief}/cmd"),
        ])
        .stdout(Stdio::from(
            std::fs::File::create(&sub_out).expect("create"),
        ))
        .stderr(Stdio::null())
        .spawn()
        .expect("run mosquitto_sub");
    let operator = pki.collector(&operator_id);
    wait_for(
        TIMEOUT,
        "the thief's subscription in the broker log",
        || async {
            broker
                .log_text()
                .contains(&format!("{base}/{thief}/cmd"))
                .then_some(())
        },
    )
    .await;
    let victim_cmd = r#"{"v":1,"cmd":"rebirth","id":"c-for-victim"}"#;
    let thief_cmd = r#"{"v":1,"cmd":"rebirth","id":"c-for-thief"}"#;
    assert_published(
        &publish(
            port,
            &ca,
            Some(&operator),
            &format!("{base}/{victim}/cmd"),
            victim_cmd,
        ),
        "cmd to the victim",
    );
    assert_published(
        &publish(
            port,
            &ca,
            Some(&operator),
            &format!("{base}/{thief}/cmd"),
            thief_cmd,
        ),
        "cmd to the thief",
    );
    let status = sub.wait().expect("mosquitto_sub exits");
    let seen = std::fs::read_to_string(&sub_out).expect("read");
    assert!(status.success(), "mosquitto_sub: {status}, saw {seen:?}");
    assert_eq!(seen.trim(), format!("{base}/{thief}/cmd {thief_cmd}"));

    // Without a client certificate, or with one from another CA, no connection at all.
    let out = publish(port, &ca, None, &format!("{base}/{thief}/hb"), "x");
    assert!(
        !out.status.success(),
        "a client without a certificate was let in"
    );
    let stranger = Pki {
        dir: w.join("stranger"),
    };
    let sd = stranger.dir.to_str().expect("utf-8");
    run_pki(&["init", "--dir", sd]);
    run_pki(&[
        "nodes",
        "--dir",
        sd,
        "--nodes",
        nodes.to_str().expect("utf-8"),
    ]);
    let out = publish(
        port,
        &ca,
        Some(&stranger.node(&thief)),
        &format!("{base}/{thief}/hb"),
        "x",
    );
    assert!(
        !out.status.success(),
        "a certificate of another CA was let in"
    );

    // Revocation: keep a copy of the thief's certificate and key (revoke retires them),
    // revoke, and have the broker reload its configuration.
    let kept = (w.join("thief.crt"), w.join("thief.key"));
    std::fs::copy(&thief_cert.0, &kept.0).expect("copy");
    std::fs::copy(&thief_cert.1, &kept.1).expect("copy");
    assert_published(
        &publish(
            port,
            &ca,
            Some(&kept),
            &format!("{base}/{thief}/hb"),
            "before",
        ),
        "before revocation",
    );
    let revoked = run_pki(&["revoke", "--dir", d, "--node", &thief]);
    assert!(
        revoked.contains(&format!("revoked node {thief}")),
        "{revoked}"
    );
    // The broker read the CRL at start: until it reloads, the old certificate still works
    // (what lets a rotation install the new certificate first).
    assert_published(
        &publish(
            port,
            &ca,
            Some(&kept),
            &format!("{base}/{thief}/hb"),
            "not reloaded yet",
        ),
        "revoked, broker not reloaded",
    );
    // A connection the thief holds open across the reload (opened now: with the username as
    // client id, each new connection of the thief takes over the one before).
    let open_out = w.join("thief-open.txt");
    let mut open_args = tls_args(port, &ca, Some(&kept));
    open_args.extend(
        ["-v", "-C", "1", "-W", "25", "-t"]
            .map(String::from)
            .into_iter()
            .chain([
                format!("{base}/{thief}/cmd"),
                "-t".into(),
                format!("{base}/{thief}/state"),
            ]),
    );
    let mut open_sub = subscribe(&open_args, &open_out);
    wait_for(TIMEOUT, "the thief's open connection", || async {
        broker
            .log_text()
            .contains(&format!("{base}/{thief}/state"))
            .then_some(())
    })
    .await;
    // Publishing with the revoked certificate before the broker has re-read its CRL would
    // connect under the thief's client id and take over the open connection: wait for the
    // reload first.
    let reloads = |b: &Mosquitto| b.log_text().matches("Reloading config.").count();
    let before = reloads(&broker);
    broker.signal("HUP");
    wait_for(TIMEOUT, "the broker reloading its config", || async {
        (reloads(&broker) > before).then_some(())
    })
    .await;
    wait_for(
        TIMEOUT,
        "the revoked certificate refused after SIGHUP",
        || async {
            (!publish(
                port,
                &ca,
                Some(&kept),
                &format!("{base}/{thief}/hb"),
                "after",
            )
            .status
            .success())
            .then_some(())
        },
    )
    .await;
    // Everyone else still connects, and the agent stayed online throughout.
    assert_published(
        &publish(
            port,
            &ca,
            Some(&pki.node(&victim)),
            &format!("{base}/{victim}/hb"),
            "x",
        ),
        "a certificate that was not revoked",
    );
    // The CRL is checked in the TLS handshake only: a connection opened before the reload
    // stays (docs/operations.md: restart the broker to cut a node off at once).
    let late_cmd = r#"{"v":1,"cmd":"rebirth","id":"c-after-revocation"}"#;
    assert_published(
        &publish(
            port,
            &ca,
            Some(&operator),
            &format!("{base}/{thief}/cmd"),
            late_cmd,
        ),
        "cmd after the revocation",
    );
    let status = open_sub.wait().expect("mosquitto_sub exits");
    let seen = std::fs::read_to_string(&open_out).expect("read");
    assert!(status.success(), "{status}: {seen:?}");
    assert_eq!(seen.trim(), format!("{base}/{thief}/cmd {late_cmd}"));
    assert_eq!(
        collector.node_state(&agent).await.as_deref(),
        Some("online")
    );
    assert!(agent_process.is_running());
    agent_process.signal("TERM");
    agent_process
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("the agent stops on SIGTERM");
}

const BRIDGE_EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/mosquitto/bridge.example.conf"
);

/// Starts `mosquitto_sub ARGS` in the background, its output into `out`.
fn subscribe(args: &[String], out: &Path) -> std::process::Child {
    Command::new("timeout")
        .arg("30")
        .arg("mosquitto_sub")
        .args(args)
        .stdout(Stdio::from(std::fs::File::create(out).expect("create")))
        .stderr(Stdio::null())
        .spawn()
        .expect("run mosquitto_sub")
}

#[tokio::test]
async fn the_bridge_example_carries_a_county_to_the_centre_over_tls() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let example = std::fs::read_to_string(BRIDGE_EXAMPLE).expect("read bridge.example.conf");
    // The bridge's identity is the example's remote_clientid.
    let bridge_id = example
        .lines()
        .find_map(|l| l.strip_prefix("remote_clientid "))
        .expect("remote_clientid in the example")
        .trim()
        .to_owned();
    let operator_id = unique_id("operator");

    let pki = Pki { dir: w.join("pki") };
    let d = pki.dir.to_str().expect("utf-8 path");
    run_pki(&["init", "--dir", d]);
    run_pki(&[
        "broker",
        "--dir",
        d,
        "--host",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    run_pki(&["collector", "--dir", d, "--id", &operator_id]);
    run_pki(&["bridge", "--dir", d, "--id", &bridge_id]);
    let nodes = w.join("nodes.csv");
    std::fs::write(&nodes, "lz-cg-s001,lz-chengguan,lanzhou\n").expect("node list");
    let mut acl = run_pki(&[
        "acl",
        "--nodes",
        nodes.to_str().expect("utf-8"),
        "--collector",
        &operator_id,
    ]);
    // The centre's ACL block for the bridge, as the example's comment gives it.
    let block: Vec<&str> = example
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| l.starts_with("user ") || l.starts_with("topic "))
        .collect();
    assert!(
        block.first() == Some(&format!("user {bridge_id}").as_str()) && block.len() > 1,
        "no ACL block for {bridge_id} in the example: {block:?}"
    );
    acl.push_str(&format!("\n{}\n", block.join("\n")));
    let acl_path = w.join("acl");
    std::fs::write(&acl_path, acl).expect("write acl");

    let centre = Mosquitto::builder()
        .config_line("log_type subscribe")
        .start_with_config(shipped_config(&pki.dir, &acl_path))
        .await;

    // The county broker: the test harness's plain broker plus the example's bridge lines,
    // pointed at the centre and at the PKI's files.
    let bridge_cert = pki.path(&format!("bridge/{bridge_id}.crt"));
    let bridge_key = pki.path(&format!("bridge/{bridge_id}.key"));
    let mut county = Mosquitto::builder();
    let mut rewritten = 0;
    for line in example.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, _) = line.split_once(' ').unwrap_or((line, ""));
        let line = match key {
            "address" => format!("address 127.0.0.1:{}", centre.port()),
            "bridge_cafile" => format!("bridge_cafile {}", pki.ca().display()),
            "bridge_certfile" => format!("bridge_certfile {}", bridge_cert.display()),
            "bridge_keyfile" => format!("bridge_keyfile {}", bridge_key.display()),
            _ => {
                county = county.config_line(line);
                continue;
            }
        };
        rewritten += 1;
        county = county.config_line(line);
    }
    assert_eq!(rewritten, 4, "address and the three bridge TLS files");
    let county = county.start().await;
    wait_for(TIMEOUT, "the bridge subscribed at the centre", || async {
        centre
            .log_text()
            .contains(&format!("{bridge_id} 1 alarmnet/v1/lanzhou/+/+/cmd"))
            .then_some(())
    })
    .await;

    // Up: the county's telemetry for its region reaches the centre; other regions' does not.
    let operator = pki.collector(&operator_id);
    let mut args = tls_args(centre.port(), &pki.ca(), Some(&operator));
    args.extend(["-v", "-W", "5", "-t", "alarmnet/v1/#"].map(String::from));
    let up = w.join("up.txt");
    let mut sub = subscribe(&args, &up);
    wait_for(TIMEOUT, "the centre's subscriber", || async {
        centre
            .log_text()
            .contains(&format!("{operator_id} 1 alarmnet/v1/#"))
            .then_some(())
    })
    .await;
    let county_pub = |topic: &str, payload: &str| {
        let out = Command::new("timeout")
            .args(["20", "mosquitto_pub", "-h", "127.0.0.1", "-q", "1", "-i"])
            .arg(unique_id("county-pub"))
            .args(["-p", &county.port().to_string(), "-t", topic, "-m", payload])
            .output()
            .expect("mosquitto_pub");
        assert_published(&out, topic);
    };
    county_pub("alarmnet/v1/other-region/s1/n9/hb", "not-bridged");
    county_pub(
        "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/hb",
        "bridged-up",
    );
    let _ = sub.wait();
    let seen = std::fs::read_to_string(&up).expect("read");
    assert!(
        seen.lines()
            .any(|l| l == "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/hb bridged-up"),
        "{seen:?}"
    );
    assert!(!seen.contains("not-bridged"), "{seen:?}");

    // Down: a command from the centre reaches the county's subscribers.
    let down = w.join("down.txt");
    let mut sub = subscribe(
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &county.port().to_string(),
            "-i",
            &unique_id("county-sub"),
            "-q",
            "1",
            "-v",
            "-C",
            "1",
            "-W",
            "10",
            "-t",
            "alarmnet/v1/lanzhou/+/+/cmd",
        ]
        .map(String::from),
        &down,
    );
    wait_for(TIMEOUT, "the county's subscriber", || async {
        county
            .log_text()
            .contains("alarmnet/v1/lanzhou/+/+/cmd")
            .then_some(())
    })
    .await;
    let cmd = r#"{"v":1,"cmd":"rebirth","id":"c-down"}"#;
    assert_published(
        &publish(
            centre.port(),
            &pki.ca(),
            Some(&operator),
            "alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/cmd",
            cmd,
        ),
        "cmd at the centre",
    );
    let status = sub.wait().expect("mosquitto_sub exits");
    let seen = std::fs::read_to_string(&down).expect("read");
    assert!(status.success(), "{status}: {seen:?}");
    assert_eq!(
        seen.trim(),
        format!("alarmnet/v1/lanzhou/lz-chengguan/lz-cg-s001/cmd {cmd}")
    );
}

#[test]
fn pki_refuses_bad_input_with_64_and_existing_keys_with_1() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("pki");
    let d = dir.to_str().expect("utf-8");
    let run = |args: &[&str]| {
        Command::new(binary("alarmnet-collector"))
            .arg("pki")
            .args(args)
            .output()
            .expect("run alarmnet-collector pki")
    };
    run_pki(&["init", "--dir", d]);
    let key = std::fs::read(dir.join("ca.key")).expect("ca.key");

    let again = run(&["init", "--dir", d]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(dir.join("ca.key")).expect("ca.key"), key);

    let list = work.path().join("nodes.csv");
    std::fs::write(&list, "ok-1,s,r\nbad id,s,r\nok-2,s\n").expect("write");
    let bad = run(&[
        "nodes",
        "--dir",
        d,
        "--nodes",
        list.to_str().expect("utf-8"),
    ]);
    assert_eq!(bad.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("line 2: node:") && stderr.contains("line 3: expected"),
        "{stderr}"
    );
    assert!(!dir.join("nodes").exists(), "issued from a bad list");

    let revoke = run(&["revoke", "--dir", d]);
    assert_eq!(
        revoke.status.code(),
        Some(2),
        "clap: --node or --serial is required"
    );
}

/// `acl.example`, the pattern-based alternative to the generated ACL, checked by its own
/// script against the shipped mosquitto.conf (TLS swapped for a plain loopback listener).
#[test]
fn the_pattern_acl_example_grants_exactly_what_it_promises() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/mosquitto/check-acl.sh"
    );
    let out = Command::new("timeout")
        .args(["120", script])
        .output()
        .expect("run check-acl.sh");
    assert!(
        out.status.success(),
        "check-acl.sh: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The collector refuses an `[mqtt.tls]` it could not use, before connecting: exit 64.
#[test]
fn the_collector_exits_64_on_half_a_tls_identity() {
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path().join("pki");
    let ds = d.to_str().expect("utf-8");
    run_pki(&["init", "--dir", ds]);
    run_pki(&["collector", "--dir", ds, "--id", "alarmnet-collector-1"]);
    let config = work.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nbroker = \"mqtts://127.0.0.1:{}\"\n[mqtt.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\n\
             [store]\npath = \"{}\"\n",
            free_port(),
            d.join("ca.crt").display(),
            d.join("collector/alarmnet-collector-1.crt").display(),
            work.path().join("alarmnet.db").display()
        ),
    )
    .expect("write");
    let out = Command::new("timeout")
        .arg("30")
        .arg(binary("alarmnet-collector"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run the collector");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("cert_file and key_file go together"),
        "{stderr}"
    );
    assert!(
        !work.path().join("alarmnet.db").exists(),
        "opened its store anyway"
    );
}

/// A technician installs a neighbour's certificate: the node connects (as the neighbour,
/// the certificate's CN) but everything it publishes under its own id is denied by the ACL,
/// so it never shows up; docs/operations.md tells how to check the CN on site.
#[tokio::test]
async fn a_node_with_another_nodes_certificate_never_shows_up() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let (region, site) = ("lanzhou", "lz-chengguan");
    let node = unique_id("tls-node");
    let neighbour = unique_id("tls-neighbour");
    let collector_id = unique_id("collector");
    let pki = Pki { dir: w.join("pki") };
    let d = pki.dir.to_str().expect("utf-8 path");
    run_pki(&["init", "--dir", d]);
    run_pki(&[
        "broker",
        "--dir",
        d,
        "--host",
        "localhost",
        "--ip",
        "127.0.0.1",
    ]);
    run_pki(&["collector", "--dir", d, "--id", &collector_id]);
    let nodes = w.join("nodes.csv");
    std::fs::write(
        &nodes,
        format!("{node},{site},{region}\n{neighbour},{site},{region}\n"),
    )
    .expect("node list");
    run_pki(&[
        "nodes",
        "--dir",
        d,
        "--nodes",
        nodes.to_str().expect("utf-8"),
    ]);
    let acl = w.join("acl");
    let acl_text = run_pki(&[
        "acl",
        "--nodes",
        nodes.to_str().expect("utf-8"),
        "--collector",
        &collector_id,
    ]);
    std::fs::write(&acl, acl_text).expect("write acl");
    let broker = Mosquitto::builder()
        // Mosquitto logs each denied PUBLISH at debug level.
        .config_line("log_type debug")
        .start_with_config(shipped_config(&pki.dir, &acl))
        .await;
    let collector = Collector::start(w, broker.port(), &pki, &collector_id).await;

    // The node's own certificate swapped for the neighbour's.
    let (own_cert, own_key) = pki.node(&node);
    let (their_cert, their_key) = pki.node(&neighbour);
    std::fs::copy(&their_cert, &own_cert).expect("copy");
    std::fs::copy(&their_key, &own_key).expect("copy");
    let mut agent = start_agent(w, broker.port(), &pki, &node, site, region);
    let birth = format!("alarmnet/v1/{region}/{site}/{node}/birth");
    wait_for(TIMEOUT, "the broker denying the node's birth", || async {
        let log = broker.log_text();
        (log.contains(&format!("as {neighbour} "))
            && log.lines().any(|l| {
                l.contains(&format!("Denied PUBLISH from {neighbour}")) && l.contains(&birth)
            }))
        .then_some(())
    })
    .await;
    assert!(agent.is_running(), "the agent keeps trying, as it should");
    for id in [&node, &neighbour] {
        assert_eq!(
            collector.get(&format!("/api/v1/nodes/{id}")).await.0,
            404,
            "{id} registered"
        );
    }
}
