//! `alarmnet-collector`: parses the command line, sets up logging, loads the configuration
//! and runs [`alarmnet_collector::app::run`] (or the demo, or an operator command of
//! [`alarmnet_collector::cli`]). Nothing else lives here.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use alarmnet_collector::config::Config;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a bad configuration (sysexits' EX_USAGE), before anything is bound.
const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(name = "alarmnet-collector", version, about = "alarmnet collector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector.
    Run {
        /// The configuration file (TOML); ALARMNET_<SECTION>__<KEY> variables override it.
        #[arg(long, short, env = "ALARMNET_CONFIG")]
        config: PathBuf,
    },
    /// The whole system on this machine, nothing to install: embedded MQTT broker, store,
    /// a simulated province with failures, and the console.
    #[cfg(feature = "demo")]
    Demo(alarmnet_collector::demo::DemoArgs),
    /// The network's certificates (CA, broker, collector, nodes), their CRL and the
    /// broker's ACL, in a directory on the operator's machine.
    #[command(subcommand)]
    Pki(alarmnet_collector::pki::PkiCommand),
    /// Write a new command signing key (mode 0600, never over an existing file) and print
    /// the line agents need in their `[commands]` section to trust it.
    Keygen {
        /// The key's id, named in every signed command (e.g. `centre-2026`).
        #[arg(long)]
        kid: String,
        /// Where to write the key (then set `[commands] key_file` to it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the `token_sha256 = "..."` line of an API token for `[[http.tokens]]`: the
    /// token is read from stdin (one line), or made up with `--new` and printed once.
    HashToken {
        /// Make a new random token, print it (only this once) and its line.
        #[arg(long)]
        new: bool,
    },
    /// Operator commands against a running collector (`--url`, token in ALARMNET_TOKEN).
    #[command(flatten)]
    Operator(Box<alarmnet_collector::cli::Command>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Operator commands print results, not logs.
    if let Command::Operator(command) = cli.command {
        return alarmnet_collector::cli::run(*command);
    }
    if let Command::Pki(command) = cli.command {
        return alarmnet_collector::pki::run(command);
    }
    if let Command::Keygen { kid, out } = &cli.command {
        return keygen(kid, out);
    }
    if let Command::HashToken { new } = cli.command {
        return hash_token(new);
    }
    init_tracing(match cli.command {
        #[cfg(feature = "demo")]
        Command::Demo(_) => alarmnet_collector::demo::LOG_FILTER,
        _ => "info",
    });
    match cli.command {
        Command::Run { config } => run(&config),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo(args),
        Command::Operator(command) => alarmnet_collector::cli::run(*command),
        Command::Pki(command) => alarmnet_collector::pki::run(command),
        Command::Keygen { kid, out } => keygen(&kid, &out),
        Command::HashToken { new } => hash_token(new),
    }
}

fn hash_token(new: bool) -> ExitCode {
    use alarmnet_collector::secret;
    let token = if new {
        let token = secret::new_token();
        println!("# the new token (shown only now; give it to its user):\n# {token}");
        token
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().read_line(&mut line) {
            eprintln!("alarmnet-collector hash-token: reading stdin: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        let token = line.trim_end_matches(['\n', '\r']).to_owned();
        if let Some(problem) = secret::token_problem(&token) {
            eprintln!("alarmnet-collector hash-token: the token {problem}");
            return ExitCode::from(EXIT_CONFIG);
        }
        token
    };
    println!("{}", secret::config_line(&token));
    ExitCode::SUCCESS
}

fn keygen(kid: &str, out: &std::path::Path) -> ExitCode {
    match alarmnet_collector::commands::key::keygen(kid, out) {
        Ok(key) => {
            println!(
                "# {}: add to every agent's [commands] section:",
                out.display()
            );
            println!("{}", alarmnet_collector::commands::key::agent_line(&key));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("alarmnet-collector keygen: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

#[cfg(feature = "demo")]
fn demo(args: alarmnet_collector::demo::DemoArgs) -> ExitCode {
    until_stopped(|shutdown| async move {
        match alarmnet_collector::demo::run(args, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alarmnet-collector demo: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("alarmnet-collector: {}: {errors}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    until_stopped(|shutdown| async move {
        match alarmnet_collector::app::run(config, shutdown).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "collector failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Runs `main` on a multi-threaded runtime with a shutdown token that signals cancel.
fn until_stopped<F, Fut>(main: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("alarmnet-collector: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(alarmnet_runtime::signal::stop_on_signals(
            shutdown.clone(),
            None,
        ));
        main(shutdown).await
    })
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALARMNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
