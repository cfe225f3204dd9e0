//! `alarmnet-agent`: parses the command line, sets up logging, loads the configuration and
//! hands over to [`alarmnet_agent::app`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alarmnet_agent::app;
use alarmnet_agent::config::{AgentConfig, EXIT_CONFIG};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// How long a clean stop may take after the first signal before the process quits anyway.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(name = "alarmnet-agent", version, about = "alarmnet node agent")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run every check once, print a table, exit with the worst status (0..3).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let (Cmd::Run { config } | Cmd::Check { config }) = &cli.command;
    let config = match AgentConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "alarmnet-agent: {}: configuration is not valid:",
                config.display()
            );
            for p in e.problems() {
                eprintln!("  - {p}");
            }
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alarmnet-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Check { .. } => app::check(config).await,
            Cmd::Run { .. } => {
                let shutdown = CancellationToken::new();
                tokio::spawn(signals(shutdown.clone()));
                app::run(config, shutdown).await.map(|()| 0)
            }
        }
    });
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "alarmnet-agent failed");
            ExitCode::FAILURE
        }
    }
}

/// The first SIGTERM/SIGINT starts a clean stop; a second one, or the grace period running
/// out, ends the process at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => tracing::warn!("second signal: quitting at once"),
        _ = int.recv() => tracing::warn!("second signal: quitting at once"),
        _ = tokio::time::sleep(GRACE) => tracing::warn!("clean stop took too long: quitting"),
    }
    std::process::exit(1);
}

/// Logs to stderr at the level named by `RUST_LOG` (`error`, `warn`, `info`, `debug`,
/// `trace`; default `info`). A plain level, not `EnvFilter` directives: the filter's regex
/// engine would add about a megabyte to a binary meant for small boards.
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::LevelFilter;
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
