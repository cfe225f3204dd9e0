//! `alarmnet-sim`: many virtual agents in one process, through a real broker. Parses the
//! command line (and an optional TOML file) and runs [`alarmnet_sim::Simulator`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alarmnet_sim::{SimConfig, Simulator};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// How long a clean stop may take after the first signal (or the end of `--duration`)
/// before the process quits anyway.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "alarmnet-sim",
    version,
    about = "alarmnet simulator: many virtual nodes"
)]
struct Cli {
    /// TOML file with any of the options below and a `[[script]]` timeline.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Broker URL, e.g. mqtt://127.0.0.1:1883.
    #[arg(long)]
    broker: Option<String>,
    /// Number of virtual nodes.
    #[arg(long)]
    nodes: Option<usize>,
    /// Heartbeat interval, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat: Option<Duration>,
    /// MQTT keep-alive, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    keep_alive: Option<Duration>,
    /// Random faults per node per hour.
    #[arg(long)]
    fault_rate: Option<f64>,
    /// Seed for the layout, faults and test failures.
    #[arg(long)]
    seed: Option<u64>,
    /// Spool on disk under this directory (one folder per node); in memory otherwise.
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Stop after this long (runs until SIGINT/SIGTERM otherwise).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Print the node layout (id, site, region, kind, name) and exit.
    #[arg(long)]
    list: bool,
}

fn load(cli: &Cli) -> Result<SimConfig, String> {
    let mut cfg = match &cli.config {
        Some(path) => config::Config::builder()
            .add_source(config::File::from(path.as_path()).format(config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<SimConfig>())
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => SimConfig::default(),
    };
    if let Some(b) = &cli.broker {
        cfg.broker = b.clone();
    }
    if let Some(n) = cli.nodes {
        cfg.nodes = n;
    }
    if let Some(h) = cli.heartbeat {
        cfg.heartbeat_interval = h;
    }
    if let Some(k) = cli.keep_alive {
        cfg.keep_alive = k;
    }
    if let Some(r) = cli.fault_rate {
        cfg.fault_rate = r;
    }
    if let Some(s) = cli.seed {
        cfg.seed = s;
    }
    if let Some(d) = &cli.spool_dir {
        cfg.spool_dir = Some(d.clone());
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let sim = match load(&cli)
        .map_err(|e| e.to_string())
        .and_then(|c| Simulator::new(c).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("alarmnet-sim: {e}");
            return ExitCode::from(64);
        }
    };
    if cli.list {
        for n in sim.nodes() {
            println!(
                "{}\t{}\t{}\t{}\t{}",
                n.path.node, n.path.site, n.path.region, n.kind, n.name
            );
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alarmnet-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let duration = cli.duration;
        tokio::spawn(alarmnet_runtime::signal::stop_on_signals_or(
            shutdown.clone(),
            Some(GRACE),
            async move {
                match duration {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            },
        ));
        sim.run(shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alarmnet-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
