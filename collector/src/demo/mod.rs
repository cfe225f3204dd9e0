//! `alarmnet-collector demo`: the whole system in one process with nothing to install. An
//! embedded MQTT broker ([`broker`], the `embedded-broker` feature), the collector itself
//! ([`crate::app::run`]) with its SQLite store in a data directory, and the simulator's
//! virtual Gansu province (`alarmnet_sim`) with a scripted timeline of failures
//! ([`timeline`]).
//!
//! ```text
//!  simulator (N virtual agents) ──► embedded broker ──► collector ──► store (data dir)
//!        ▲ scripted failures                                 └──► console, API on --http
//! ```
//!
//! Drills: the demo makes a command signing key in its data directory (kept for the next
//! run) and, at [`DRILL_AT`] into every cycle of the timeline, starts a silent drill of the
//! whole province through the API, as an operator would; about [`TEST_FAIL_FRACTION`] of
//! the nodes fail it.
//!
//! Stopping: on `shutdown` the virtual agents stop first (each publishes its clean `offline`
//! state), then the collector drains and closes its store. The embedded broker has no
//! shutdown API and ends with the process.

#[cfg(feature = "embedded-broker")]
pub mod broker;
pub mod timeline;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alarmnet_sim::{SimConfig, Simulator};
use anyhow::Context as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The tracing filter the demo is best read with: the collector's own log and the
/// simulator's script, without one line per virtual agent or per broker connection.
/// `ALARMNET_LOG` overrides it.
pub const LOG_FILTER: &str = "info,rumqttd=off,alarmnet_agent=warn,alarmnet_sim=info";

/// The collector's MQTT client id in the demo.
const COLLECTOR_ID: &str = "alarmnet-demo-collector";

/// How long the embedded broker may take to answer its first CONNECT.
#[cfg(feature = "embedded-broker")]
const BROKER_START: Duration = Duration::from_secs(10);

/// How long the collector may take to be ready (store open, broker connected).
const COLLECTOR_START: Duration = Duration::from_secs(30);

/// When, into each cycle of the timeline, the demo starts a silent drill of every node.
pub const DRILL_AT: Duration = Duration::from_secs(2 * 60);

/// How long the demo's drills wait for receipts.
const DRILL_DEADLINE: &str = "3m";

/// The share of virtual nodes whose silent test fails (until the timeline's own silent test
/// picks again).
pub const TEST_FAIL_FRACTION: f64 = 0.05;

/// The demo's command signing key, in its data directory.
const KEY_FILE: &str = "command.key";

/// How long the virtual agents get to publish their clean `offline` state on stop.
const SIM_STOP: Duration = Duration::from_secs(5);

/// `alarmnet-collector demo` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its store; reused by the next run (delete it to start afresh).
    #[arg(long, default_value = "alarmnet-demo")]
    pub data_dir: PathBuf,
    /// Address of the web console and the API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,
    /// Number of simulated nodes (sirens and displays over Gansu's 86 counties).
    #[arg(long, default_value_t = 300)]
    pub nodes: usize,
    /// Heartbeat interval of the simulated nodes.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,
    /// Seed for the layout, the random faults and the timeline of incidents.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Random faults per node per hour, on top of the scripted incidents.
    #[arg(long, default_value_t = 0.3)]
    pub fault_rate: f64,
    /// Port of the embedded broker on 127.0.0.1 [default: 1883, or any free port if taken].
    #[arg(long)]
    pub broker_port: Option<u16>,
    /// Use this broker (e.g. mqtt://127.0.0.1:1883) instead of the embedded one.
    #[arg(long, conflicts_with = "broker_port")]
    pub broker: Option<String>,
}

/// Runs the demo until `shutdown` is cancelled. An error means a part failed to start or
/// stopped unexpectedly.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            args.data_dir.display()
        )
    })?;
    let data_dir = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("{}", args.data_dir.display()))?;

    let broker_url = match &args.broker {
        Some(url) => url.clone(),
        None => start_broker(&args).await?,
    };
    let token = new_token();
    let key = demo_key(&data_dir)?;
    let mut config = collector_config(&args, &data_dir, &broker_url, &token)?;
    config.commands.key_file = Some(data_dir.join(KEY_FILE));
    let mut sim_config = sim_config(&args, &broker_url)?;
    trust(&mut sim_config, &key);
    config.command_key = Some(std::sync::Arc::new(key));
    let sim = Simulator::new(sim_config).context("the simulator")?;

    print_banner(&args, &data_dir, &broker_url, &token, sim.nodes().len());

    // The collector starts first so that it sees every node's birth.
    let collector_stop = CancellationToken::new();
    let mut collector = tokio::spawn(crate::app::run(config, collector_stop.clone()));
    let ready = tokio::select! {
        r = wait_ready(args.http, &mut collector) => Some(r),
        _ = shutdown.cancelled() => None,
    };
    match ready {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            collector_stop.cancel();
            return Err(e);
        }
        None => {
            collector_stop.cancel();
            return match collector.await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!(
                    "the collector panicked while stopping: {e}"
                )),
            };
        }
    }
    println!(
        "collector ready in {:.1} s; {} virtual nodes connecting",
        started.elapsed().as_secs_f64(),
        sim.nodes().len()
    );

    let sim_stop = shutdown.child_token();
    let mut simulator = tokio::spawn(sim.run(sim_stop.clone()));
    tokio::spawn(timed_drills(args.http, token.clone(), sim_stop.clone()));
    let failure = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut collector => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("the collector stopped unexpectedly"),
            Ok(Err(e)) => e.context("the collector failed"),
            Err(e) => anyhow::anyhow!("the collector panicked: {e}"),
        }),
        r = &mut simulator => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("the simulator stopped unexpectedly"),
            Ok(Err(e)) => anyhow::Error::new(e).context("the simulator failed"),
            Err(e) => anyhow::anyhow!("the simulator panicked: {e}"),
        }),
    };
    println!("stopping: virtual nodes first, then the collector");
    sim_stop.cancel();
    if !simulator.is_finished() {
        match tokio::time::timeout(SIM_STOP, &mut simulator).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "simulator stopped with an error"),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(waited = ?SIM_STOP, "virtual nodes still stopping; not waiting");
                simulator.abort();
            }
        }
    }
    collector_stop.cancel();
    if !collector.is_finished() {
        match collector.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.context("the collector failed while stopping")),
            Err(e) => anyhow::bail!("the collector panicked while stopping: {e}"),
        }
    }
    match failure {
        Some(e) => Err(e),
        None => {
            println!("demo stopped; its history stays in {}", data_dir.display());
            Ok(())
        }
    }
}

/// The demo's signing key: read from the data directory, or made there (mode 0600).
fn demo_key(data_dir: &Path) -> anyhow::Result<alarmnet_protocol::signing::CommandKey> {
    let path = data_dir.join(KEY_FILE);
    if path.exists() {
        return crate::commands::key::load(&path).context("the demo's command key");
    }
    let kid = alarmnet_protocol::KeyId::new("demo").context("key id")?;
    let key = crate::commands::key::generate(kid);
    crate::commands::key::write_new(&path, &key).context("the demo's command key")?;
    Ok(key)
}

/// Starts a silent drill of every node [`DRILL_AT`] into each timeline cycle, through the
/// API with the demo's operator token, until `stop`.
async fn timed_drills(http: SocketAddr, token: String, stop: CancellationToken) {
    let client = reqwest::Client::new();
    let url = format!("http://{http}/api/v1/drills");
    let mut next = DRILL_AT;
    let start = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(start + next) => {}
        }
        next += timeline::CYCLE;
        let body = serde_json::json!({"test": "silent", "deadline": DRILL_DEADLINE});
        match client
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                println!(
                    "drill {} started: {} nodes asked for a silent test",
                    v["id"].as_str().unwrap_or("?"),
                    v["selected"]
                );
            }
            Ok(r) => tracing::warn!(status = %r.status(), "the demo's drill was refused"),
            Err(e) => tracing::warn!(error = %e, "cannot start the demo's drill"),
        }
    }
}

/// Starts the embedded broker and returns its URL.
#[cfg(feature = "embedded-broker")]
async fn start_broker(args: &DemoArgs) -> anyhow::Result<String> {
    let port = broker::pick_port(args.broker_port)?;
    let settings = broker::BrokerSettings::for_nodes(port, args.nodes);
    let broker = broker::EmbeddedBroker::start(&settings, BROKER_START).await?;
    tracing::info!(addr = %broker.addr(), "embedded broker ready");
    Ok(broker.url())
}

#[cfg(not(feature = "embedded-broker"))]
async fn start_broker(_args: &DemoArgs) -> anyhow::Result<String> {
    anyhow::bail!(
        "this build has no embedded broker (feature `embedded-broker`): \
         pass --broker mqtt://HOST:PORT"
    )
}

/// The collector's configuration: the broker, the store in the data directory, HTTP on
/// `--http` with anonymous reads and one operator token (to acknowledge and silence), no
/// time series and no outputs besides `$alerts`.
pub fn collector_config(
    args: &DemoArgs,
    data_dir: &Path,
    broker: &str,
    operator_token: &str,
) -> anyhow::Result<Config> {
    let store = data_dir.join("alarmnet.db");
    let store = store
        .to_str()
        .with_context(|| format!("the data directory {} is not UTF-8", data_dir.display()))?;
    // A JSON string is a valid TOML basic string: the same escapes.
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let text = format!(
        "[mqtt]\nbroker = {}\nclient_id = {}\nkeep_alive = \"10s\"\nreconnect_max = \"5s\"\n\
         [store]\npath = {}\n\
         [http]\nlisten = {}\nanonymous_read = true\n\
         [[http.tokens]]\nname = \"demo operator\"\ntoken = {}\nrole = \"operator\"\n\
         [ingest]\nmax_nodes = {}\n",
        quote(broker),
        quote(COLLECTOR_ID),
        quote(store),
        quote(&args.http.to_string()),
        quote(operator_token),
        args.nodes.saturating_mul(2).max(1_000),
    );
    Config::from_toml(&text).map_err(|e| anyhow::anyhow!("the demo's collector configuration: {e}"))
}

/// A fresh operator token for this run (printed in the banner).
fn new_token() -> String {
    use rand::Rng as _;
    let tail: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("demo-{tail}")
}

/// The simulator's configuration: `--nodes` over the Gansu layout with the timeline.
pub fn sim_config(args: &DemoArgs, broker: &str) -> anyhow::Result<SimConfig> {
    let nodes = alarmnet_sim::layout(args.nodes, args.seed).context("the layout")?;
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(SimConfig {
        broker: broker.to_owned(),
        nodes: args.nodes,
        heartbeat_interval: args.heartbeat,
        // A frozen node's Will fires 1.5 × keep-alive after its last packet.
        keep_alive: (args.heartbeat * 2).max(Duration::from_secs(5)),
        reconnect_max: Duration::from_secs(10),
        fault_rate: args.fault_rate,
        test_fail_fraction: TEST_FAIL_FRACTION,
        seed: args.seed,
        spool_dir: None,
        ramp: Duration::from_secs(3),
        script: timeline::script(&nodes, args.heartbeat, args.seed, run),
        ..SimConfig::default()
    })
}

/// The simulated nodes trust the demo collector's key and, like real agents, run nothing
/// unsigned: every command the demo sends (drill tests, rebirths) is signed.
fn trust(sim: &mut SimConfig, key: &alarmnet_protocol::signing::CommandKey) {
    sim.commands
        .keys
        .insert(key.kid().clone(), key.public_key());
    sim.commands.allow_unsigned = false;
}

fn print_banner(args: &DemoArgs, data_dir: &Path, broker: &str, token: &str, nodes: usize) {
    let embedded = if args.broker.is_some() {
        ""
    } else {
        " (embedded, in memory)"
    };
    let (host, port) = broker_host(broker);
    println!(
        "\nalarmnet demo: {nodes} simulated sirens and displays in Gansu, with failures every \
         few minutes\n\
         \n  console   http://{http}/\n  \
         API       http://{http}/api/v1/nodes   metrics http://{http}/metrics\n  \
         broker    {broker}{embedded}   e.g. mosquitto_sub -h {host} -p {port} -t 'alarmnet/#' -v\n  \
         operator  token {token} (to acknowledge and silence; reading needs none)\n  \
         data      {data}\n  \
         stop      Ctrl-C (the nodes say goodbye, the store is flushed)\n",
        http = args.http,
        data = data_dir.display(),
    );
}

/// `(host, port)` of an `mqtt://host:port` URL, for the banner's example command.
fn broker_host(url: &str) -> (&str, &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.rsplit_once(':').unwrap_or((rest, "1883"))
}

/// Polls `/readyz` until the collector is ready; fails if it stops first or takes too long.
async fn wait_ready(
    http: SocketAddr,
    collector: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let url = format!("http://{http}/readyz");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("http client")?;
    let deadline = Instant::now() + COLLECTOR_START;
    loop {
        if collector.is_finished() {
            return match collector.await {
                Ok(Ok(())) => Err(anyhow::anyhow!("the collector stopped while starting")),
                Ok(Err(e)) => Err(e.context("the collector failed to start")),
                Err(e) => Err(anyhow::anyhow!(
                    "the collector panicked while starting: {e}"
                )),
            };
        }
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("the collector was not ready on {url} within {COLLECTOR_START:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn defaults_are_a_few_hundred_nodes_on_the_usual_ports() {
        let args = Cli::parse_from(["demo"]).demo;
        assert_eq!(args.nodes, 300);
        assert_eq!(args.http.to_string(), "127.0.0.1:8080");
        assert_eq!(args.heartbeat, Duration::from_secs(5));
        assert_eq!(args.data_dir, PathBuf::from("alarmnet-demo"));
        assert!(args.broker_port.is_none() && args.broker.is_none());
        assert!(
            Cli::try_parse_from(["demo", "--broker", "mqtt://x:1", "--broker-port", "2"]).is_err()
        );
    }

    #[test]
    fn the_collector_config_is_valid_and_points_at_the_data_dir() {
        let args = Cli::parse_from(["demo", "--http", "127.0.0.1:0", "--nodes", "20"]).demo;
        let dir = Path::new("/tmp/a \"quoted\" dir\\x");
        let token = new_token();
        let config = collector_config(&args, dir, "mqtt://127.0.0.1:18830", &token).expect("valid");
        assert_eq!(config.store.path, dir.join("alarmnet.db"));
        assert_eq!(
            (config.mqtt.broker.host.as_str(), config.mqtt.broker.port),
            ("127.0.0.1", 18830)
        );
        assert_eq!(config.mqtt.collector_id.as_str(), COLLECTOR_ID);
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:0");
        assert!(config.influx.is_none() && config.webhooks.is_empty());
        assert!(config.http.anonymous_read);
        assert_eq!(config.http.tokens.len(), 1);
        assert_eq!(
            config.http.tokens[0]
                .token
                .as_ref()
                .map(crate::secret::Secret::expose),
            Some(token.as_str())
        );
        assert_ne!(new_token(), token, "a new token per run");
    }

    #[test]
    fn the_sim_config_is_accepted_by_the_simulator() {
        let args = Cli::parse_from(["demo", "--nodes", "40", "--heartbeat", "2s"]).demo;
        let cfg = sim_config(&args, "mqtt://127.0.0.1:1").expect("config");
        assert_eq!(cfg.keep_alive, Duration::from_secs(5));
        assert!(!cfg.script.is_empty());
        let sim = Simulator::new(cfg).expect("valid");
        assert_eq!(sim.nodes().len(), 40);
    }

    #[test]
    fn broker_host_splits_the_url() {
        assert_eq!(broker_host("mqtt://127.0.0.1:1883"), ("127.0.0.1", "1883"));
        assert_eq!(broker_host("mqtt://b"), ("b", "1883"));
    }
}
