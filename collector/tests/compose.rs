//! `deploy/compose/compose.yaml`, checked without Docker: every file a service mounts or
//! builds from exists in the repository (or is one of the site's own files under
//! `deploy/compose/site/`, which the operations guide lists), Mosquitto's configuration
//! finds every file it names under a mount, the collector's configuration loads with the
//! real loader (container paths mapped to stand-ins), and the ports agree: the collector
//! reaches the broker's loopback listener and VictoriaMetrics, Grafana's datasource points
//! at VictoriaMetrics under the uid the dashboard names, and no two services (all on the
//! host's network) listen on one port.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use alarmnet_collector::config::Config;
use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn compose_dir() -> PathBuf {
    repo().join("deploy/compose")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read(&compose_dir().join("compose.yaml"))).expect("compose.yaml")
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

/// A service's bind mount or named volume.
#[derive(Debug, Clone)]
enum Source {
    /// A file or directory of the repository (absolute path).
    Repo(PathBuf),
    /// A site file under `deploy/compose/site/` (path relative to `deploy/compose`).
    Site(String),
    /// A named volume.
    Volume(String),
}

#[derive(Debug, Clone)]
struct Mount {
    source: Source,
    target: String,
}

fn source(text: &str) -> Source {
    if text.starts_with("./site/") {
        Source::Site(text.to_owned())
    } else if text.starts_with('.') || text.starts_with('/') {
        Source::Repo(compose_dir().join(text))
    } else {
        Source::Volume(text.to_owned())
    }
}

/// Volumes and secrets of a service, as mounts.
fn mounts(doc: &Value, name: &str) -> Vec<Mount> {
    let service = &doc["services"][name];
    let mut mounts = Vec::new();
    if let Some(volumes) = service["volumes"].as_sequence() {
        for v in volumes {
            let text = str_of(v, "a volume");
            let parts: Vec<&str> = text.split(':').collect();
            assert!(
                (2..=3).contains(&parts.len()),
                "{name}: volume {text} is not SOURCE:TARGET[:MODE]"
            );
            mounts.push(Mount {
                source: source(parts[0]),
                target: parts[1].to_owned(),
            });
        }
    }
    if let Some(secrets) = service["secrets"].as_sequence() {
        for s in secrets {
            let id = str_of(&s["source"], "a secret's source");
            let target = str_of(&s["target"], "a secret's target");
            let file = str_of(&doc["secrets"][id]["file"], "the secret's file");
            mounts.push(Mount {
                source: source(file),
                target: target.to_owned(),
            });
        }
    }
    mounts
}

fn port_of(addr: &str) -> u16 {
    let tail = addr.rsplit(':').next().expect("port");
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no port in {addr}"))
}

/// `mosquitto.conf`'s listeners as (port, bind address or None for every interface).
fn mosquitto_listeners(conf: &str) -> Vec<(u16, Option<String>)> {
    conf.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "listener").then(|| {
                let port = words.next().expect("listener port").parse().expect("port");
                (port, words.next().map(str::to_owned))
            })
        })
        .collect()
}

/// The files and directories `mosquitto.conf` names.
fn mosquitto_paths(conf: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for line in conf.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [
                "pid_file"
                | "persistence_location"
                | "password_file"
                | "acl_file"
                | "cafile"
                | "certfile"
                | "keyfile"
                | "crlfile",
                path,
            ] => paths.push((*path).to_owned()),
            ["log_dest", "file", path] => paths.push((*path).to_owned()),
            _ => {}
        }
    }
    paths
}

/// The site files every service expects; the guides must tell the operator to make each.
fn site_files(doc: &Value) -> BTreeSet<String> {
    let services = doc["services"].as_mapping().expect("services");
    services
        .keys()
        .flat_map(|name| mounts(doc, str_of(name, "a service name")))
        .filter_map(|m| match m.source {
            Source::Site(s) => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn every_service_mounts_what_exists_and_shares_the_host_network() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    let declared: BTreeSet<&str> = doc["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(|k| str_of(k, "a volume name")).collect())
        .unwrap_or_default();
    assert_eq!(
        services
            .keys()
            .map(|k| str_of(k, "a service"))
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["collector", "grafana", "mosquitto", "victoriametrics"])
    );
    for (name, service) in services {
        let name = str_of(name, "a service name");
        assert_eq!(
            service["network_mode"].as_str(),
            Some("host"),
            "{name}: the ports below assume the host's network"
        );
        let mut targets = BTreeSet::new();
        for m in mounts(&doc, name) {
            assert!(
                targets.insert(m.target.clone()),
                "{name} mounts {} twice",
                m.target
            );
            assert!(m.target.starts_with('/'), "{name}: {m:?}");
            match &m.source {
                Source::Repo(p) => assert!(p.exists(), "{name} mounts {} (missing)", p.display()),
                Source::Volume(v) => {
                    assert!(
                        declared.contains(v.as_str()),
                        "{name}: volume {v} undeclared"
                    )
                }
                Source::Site(_) => {}
            }
        }
        if let Some(build) = service.get("build") {
            let context = compose_dir().join(str_of(&build["context"], "build context"));
            let dockerfile = context.join(str_of(&build["dockerfile"], "dockerfile"));
            let text = read(&dockerfile);
            for line in text.lines().filter(|l| l.starts_with("COPY ")) {
                if line.contains("--from=") {
                    continue;
                }
                let words: Vec<&str> = line.split_whitespace().collect();
                for src in &words[1..words.len() - 1] {
                    assert!(context.join(src).exists(), "{name}: {line}: {src} missing");
                }
            }
        }
    }

    // The operator's own files all live under ./site/, which git ignores, and the guides
    // (English and Chinese) tell the operator to make every one.
    let ignore = read(&compose_dir().join(".gitignore"));
    assert!(ignore.lines().any(|l| l.trim() == "/site/"), "{ignore}");
    for guide in ["docs/operations.md", "docs/operations.zh.md"] {
        let text = read(&repo().join(guide));
        for file in site_files(&doc) {
            let relative = file.trim_start_matches("./");
            assert!(
                text.contains(relative),
                "{guide} does not say how to make deploy/compose/{relative}"
            );
        }
    }
}

#[test]
fn mosquitto_runs_the_shipped_configuration_and_finds_its_files() {
    let doc = compose();
    let mounts = mounts(&doc, "mosquitto");
    let conf_mount = mounts
        .iter()
        .find(|m| m.target == "/etc/mosquitto/mosquitto.conf")
        .expect("mosquitto.conf mounted");
    let Source::Repo(conf_path) = &conf_mount.source else {
        panic!("mosquitto.conf is not the repository's: {conf_mount:?}");
    };
    assert_eq!(
        conf_path.canonicalize().expect("conf"),
        repo().join("deploy/mosquitto/mosquitto.conf")
    );
    let dockerfile = read(&compose_dir().join("mosquitto.Dockerfile"));
    assert!(dockerfile.contains("\"-c\", \"/etc/mosquitto/mosquitto.conf\""));

    // Every path the configuration names is under a mount, or made by the image.
    let conf = read(conf_path);
    let made_by_image = ["/run/mosquitto", "/var/log/mosquitto", "/var/lib/mosquitto"];
    for path in mosquitto_paths(&conf) {
        let path = path.trim_end_matches('/');
        let mounted = mounts
            .iter()
            .any(|m| path == m.target || path.starts_with(&format!("{}/", m.target)));
        let made = made_by_image
            .iter()
            .any(|d| (path == *d || path.starts_with(&format!("{d}/"))) && dockerfile.contains(d));
        assert!(
            mounted || made,
            "mosquitto.conf names {path}, which neither a mount nor the image provides"
        );
    }
    // The broker's state and log survive a new container.
    for dir in ["/var/lib/mosquitto", "/var/log/mosquitto"] {
        assert!(
            mounts
                .iter()
                .any(|m| m.target == dir && matches!(m.source, Source::Volume(_))),
            "{dir} is not a volume"
        );
    }
}

/// The collector's configuration as its container sees it, loaded by the real loader with
/// every container path replaced by a stand-in: repository files by themselves, site files
/// (secrets) by files with plausible contents, volumes by an empty directory.
fn collector_config(doc: &Value, scratch: &Path) -> Config {
    let mounts = mounts(doc, "collector");
    let command: Vec<&str> = doc["services"]["collector"]["command"]
        .as_sequence()
        .expect("collector command")
        .iter()
        .map(|v| str_of(v, "an argument"))
        .collect();
    assert_eq!(command[..2], ["run", "--config"]);
    let config_mount = mounts
        .iter()
        .find(|m| m.target == command[2])
        .unwrap_or_else(|| panic!("{} is not mounted", command[2]));
    let Source::Repo(config_path) = &config_mount.source else {
        panic!("the collector's config is not in the repository")
    };
    let mut text = read(config_path);
    let mut by_length: Vec<&Mount> = mounts.iter().collect();
    by_length.sort_by_key(|m| std::cmp::Reverse(m.target.len()));
    for (i, m) in by_length.into_iter().enumerate() {
        let stand_in = match &m.source {
            Source::Repo(p) => p.clone(),
            Source::Site(_) => {
                let p = scratch.join(format!("site-{i}"));
                std::fs::write(&p, "a-site-secret-0123456789abcdef\n").expect("stand-in");
                p
            }
            Source::Volume(_) => {
                let p = scratch.join(format!("volume-{i}"));
                std::fs::create_dir_all(&p).expect("stand-in dir");
                p
            }
        };
        text = text.replace(&m.target, &stand_in.display().to_string());
    }
    assert!(
        !text.contains("/var/lib/") && !text.contains("/run/") && !text.contains("/etc/"),
        "the collector's config names a path no mount provides:\n{text}"
    );
    let path = scratch.join("collector.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load_with(
        &path,
        config::Environment::with_prefix("ALARMNET_COMPOSE_TEST_NONE"),
    )
    .unwrap_or_else(|e| panic!("the compose collector.toml does not load: {e}"))
}

#[test]
fn the_collector_config_loads_and_the_ports_agree() {
    let doc = compose();
    let scratch = tempfile::tempdir().expect("tempdir");
    let config = collector_config(&doc, scratch.path());

    // Who listens where (every service is on the host's network).
    let mut listeners: BTreeMap<u16, String> = BTreeMap::new();
    let mut listen = |port: u16, who: &str| {
        if let Some(other) = listeners.insert(port, who.to_owned()) {
            panic!("{who} and {other} both listen on {port}");
        }
    };

    // Mosquitto: the collector uses the loopback listener, with a password.
    let conf = read(&repo().join("deploy/mosquitto/mosquitto.conf"));
    let broker_listeners = mosquitto_listeners(&conf);
    for (port, _) in &broker_listeners {
        listen(*port, "mosquitto");
    }
    let (tls, host, port) = (
        config.mqtt.broker.tls,
        config.mqtt.broker.host.as_str(),
        config.mqtt.broker.port,
    );
    assert!(
        broker_listeners
            .iter()
            .any(|(p, addr)| *p == port && addr.as_deref().is_none_or(|a| a == host)),
        "the collector's broker {host}:{port} is none of mosquitto.conf's listeners {broker_listeners:?}"
    );
    assert!(
        !tls && host == "127.0.0.1",
        "the compose collector uses the loopback listener"
    );
    assert_eq!(
        config.mqtt.username.as_deref(),
        Some(config.mqtt.collector_id.as_str()),
        "use_username_as_clientid: the collector's username is its client id"
    );
    assert!(
        config.mqtt.password.is_some(),
        "a password, inline or read from its file"
    );

    // The collector's own listener.
    listen(config.http.listen.port(), "collector");
    assert_eq!(config.http.listen.ip().to_string(), "127.0.0.1");
    assert!(!config.http.tokens.is_empty());

    // VictoriaMetrics, as the collector and Grafana reach it.
    let vm_args: Vec<&str> = doc["services"]["victoriametrics"]["command"]
        .as_sequence()
        .expect("victoriametrics command")
        .iter()
        .map(|v| str_of(v, "an argument"))
        .collect();
    let vm_listen = vm_args
        .iter()
        .find_map(|a| a.strip_prefix("-httpListenAddr="))
        .expect("-httpListenAddr");
    let vm_port = port_of(vm_listen);
    listen(vm_port, "victoriametrics");
    let storage = vm_args
        .iter()
        .find_map(|a| a.strip_prefix("-storageDataPath="))
        .expect("-storageDataPath");
    assert!(
        mounts(&doc, "victoriametrics")
            .iter()
            .any(|m| m.target == storage && matches!(m.source, Source::Volume(_))),
        "VictoriaMetrics' storage is not a volume"
    );
    let influx = config.influx.as_ref().expect("[influx] set");
    assert_eq!(
        influx.url.as_str(),
        format!("http://{vm_listen}/"),
        "the collector writes elsewhere than VictoriaMetrics listens"
    );

    // Grafana: its port, its datasource (VictoriaMetrics, under the dashboard's uid), and
    // the dashboard where the shipped provider looks for it.
    let grafana = &doc["services"]["grafana"];
    let env = &grafana["environment"];
    let grafana_port: u16 = str_of(&env["GF_SERVER_HTTP_PORT"], "GF_SERVER_HTTP_PORT")
        .parse()
        .expect("port");
    listen(grafana_port, "grafana");
    let grafana_mounts = mounts(&doc, "grafana");
    let repo_file = |target_dir: &str| -> Vec<PathBuf> {
        grafana_mounts
            .iter()
            .filter(|m| m.target.starts_with(target_dir))
            .filter_map(|m| match &m.source {
                Source::Repo(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    };
    let datasources = repo_file("/etc/grafana/provisioning/datasources/");
    assert_eq!(datasources.len(), 1, "{datasources:?}");
    let ds: Value = serde_yaml_ng::from_str(&read(&datasources[0])).expect("datasource yaml");
    let ds = &ds["datasources"][0];
    assert_eq!(ds["type"].as_str(), Some("prometheus"));
    assert_eq!(
        ds["url"].as_str(),
        Some(format!("http://{vm_listen}").as_str())
    );
    let uid = str_of(&ds["uid"], "datasource uid");

    let providers = repo_file("/etc/grafana/provisioning/dashboards/");
    assert_eq!(providers.len(), 1, "{providers:?}");
    let provider: Value = serde_yaml_ng::from_str(&read(&providers[0])).expect("provider yaml");
    let dashboards_dir = str_of(
        &provider["providers"][0]["options"]["path"],
        "provider path",
    );
    let dashboards = repo_file(&format!("{dashboards_dir}/"));
    assert!(
        !dashboards.is_empty(),
        "no dashboard under {dashboards_dir}"
    );
    for dashboard in dashboards {
        let json: serde_json::Value =
            serde_json::from_str(&read(&dashboard)).expect("dashboard json");
        let mut uids = BTreeSet::new();
        collect_datasource_uids(&json, &mut uids);
        assert_eq!(
            uids,
            BTreeSet::from([uid.to_owned()]),
            "{}: datasources",
            dashboard.display()
        );
    }
}

fn collect_datasource_uids(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(uid) = m
                .get("datasource")
                .and_then(|d| d.get("uid"))
                .and_then(|u| u.as_str())
                && !uid.starts_with('$')
                && !uid.starts_with("-- ")
            {
                out.insert(uid.to_owned());
            }
            m.values().for_each(|v| collect_datasource_uids(v, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_datasource_uids(v, out)),
        _ => {}
    }
}
