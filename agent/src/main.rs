//! `alarmnet-agent`: parses the command line, sets up logging, loads the configuration and
//! hands over to [`alarmnet_agent::app`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use alarmnet_agent::app;
use alarmnet_agent::config::{AgentConfig, EXIT_CONFIG};
use tokio_util::sync::CancellationToken;

/// How long a clean stop may take after the first signal before the process quits anyway.
const GRACE: Duration = Duration::from_secs(5);

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Cmd {
    /// `run --config FILE`: run the agent.
    Run(PathBuf),
    /// `check --config FILE`: every check once, a table, exit with the worst status.
    Check(PathBuf),
    Help,
    Version,
}

const USAGE: &str = "\
alarmnet node agent

Usage: alarmnet-agent <COMMAND> --config <FILE>

Commands:
  run    Run the agent
  check  Run every check once, print a table, exit with the worst status (0..3)

Options:
  -c, --config <FILE>  The configuration file
  -h, --help           Print help
  -V, --version        Print version
";

/// Exit code for a command line that cannot be understood (as `EX_USAGE` is taken by a bad
/// configuration, this follows the usual `2` of command-line parsers).
const EXIT_USAGE: u8 = 2;

/// Reads the arguments after the program name. Hand-written rather than derived: two
/// subcommands with one option do not need a parser library, and leaving it out keeps the
/// binary, all of whose pages end up resident, smaller.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cmd, String> {
    let mut args = args.into_iter();
    let mut command: Option<&str> = None;
    let mut config: Option<PathBuf> = None;
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        match text.as_ref() {
            "-h" | "--help" | "help" => return Ok(Cmd::Help),
            "-V" | "--version" => return Ok(Cmd::Version),
            "-c" | "--config" => {
                let file = args.next().ok_or("`--config` needs a file")?;
                config = Some(file.into());
            }
            "run" | "check" if command.is_none() => {
                command = Some(if text == "run" { "run" } else { "check" });
            }
            t if t.starts_with("--config=") => config = Some(t["--config=".len()..].into()),
            t => return Err(format!("unexpected argument `{t}`")),
        }
    }
    let command = command.ok_or("a command is required: `run` or `check`")?;
    let config = config.ok_or_else(|| format!("`{command}` needs `--config <FILE>`"))?;
    Ok(if command == "run" {
        Cmd::Run(config)
    } else {
        Cmd::Check(config)
    })
}

fn main() -> ExitCode {
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("alarmnet-agent: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (run, config) = match command {
        Cmd::Run(config) => (true, config),
        Cmd::Check(config) => (false, config),
        Cmd::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Cmd::Version => {
            println!("alarmnet-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
    };
    init_tracing();
    let config = match AgentConfig::load(&config) {
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
        if run {
            let shutdown = CancellationToken::new();
            tokio::spawn(alarmnet_runtime::signal::stop_on_signals(
                shutdown.clone(),
                Some(GRACE),
            ));
            app::run(config, shutdown).await.map(|()| 0)
        } else {
            app::check(config).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cmd, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn commands_and_config_in_any_order() {
        let file = PathBuf::from("/etc/alarmnet/agent.toml");
        for args in [
            &["run", "--config", "/etc/alarmnet/agent.toml"][..],
            &["run", "-c", "/etc/alarmnet/agent.toml"],
            &["--config", "/etc/alarmnet/agent.toml", "run"],
            &["run", "--config=/etc/alarmnet/agent.toml"],
        ] {
            assert_eq!(parse(args), Ok(Cmd::Run(file.clone())), "{args:?}");
        }
        assert_eq!(
            parse(&["check", "-c", "a.toml"]),
            Ok(Cmd::Check("a.toml".into()))
        );
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]), Ok(Cmd::Help));
        assert_eq!(parse(&["run", "-h"]), Ok(Cmd::Help));
        assert_eq!(parse(&["-V"]), Ok(Cmd::Version));
        assert_eq!(parse(&["--version"]), Ok(Cmd::Version));
    }

    #[test]
    fn mistakes_are_refused() {
        for args in [
            &[][..],
            &["run"],
            &["--config", "a.toml"],
            &["run", "--config"],
            &["run", "check", "-c", "a.toml"],
            &["start", "-c", "a.toml"],
            &["run", "-c", "a.toml", "--verbose"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }
}
