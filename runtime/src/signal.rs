//! Stopping on a signal, the same way in every binary: the first SIGTERM or SIGINT starts a
//! clean stop (the root [`CancellationToken`] is cancelled); a second one, or the grace
//! period running out, ends the process at once with code 1.
//!
//! SIGHUP asks for a reload ([`Hangups`]); only the collector listens for it (it reloads the
//! API's certificate), so in the other binaries it keeps its default meaning.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// SIGTERM and SIGINT, installed once (a signal arriving between two waits is not lost).
#[derive(Debug)]
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers; from now on the signals no longer kill the process.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// SIGHUP, installed once: [`Hangups::recv`] resolves at each one, or at `shutdown`.
#[derive(Debug)]
pub struct Hangups {
    hangup: Signal,
}

impl Hangups {
    /// Installs the handler; from now on SIGHUP no longer kills the process.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// `true` at the next SIGHUP, `false` once `shutdown` is cancelled.
    pub async fn recv(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            got = self.hangup.recv() => got.is_some(),
        }
    }
}

/// Runs the stop protocol: cancels `shutdown` at the first SIGTERM or SIGINT, then quits
/// the process at a second one or, when `grace` is set, once it has passed. Spawn it.
pub async fn stop_on_signals(shutdown: CancellationToken, grace: Option<Duration>) {
    stop_on_signals_or(shutdown, grace, std::future::pending()).await;
}

/// As [`stop_on_signals`], and also starts the clean stop when `stop_early` resolves (a run
/// of fixed length).
pub async fn stop_on_signals_or(
    shutdown: CancellationToken,
    grace: Option<Duration>,
    stop_early: impl Future<Output = ()>,
) {
    let mut signals = match StopSignals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return;
        }
    };
    tokio::select! {
        _ = signals.recv() => {
            tracing::info!("stopping (send the signal again to quit at once)");
        }
        _ = stop_early => tracing::info!("stopping"),
    }
    shutdown.cancel();
    let out_of_time = async {
        match grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = signals.recv() => tracing::warn!("second signal: quitting at once"),
        _ = out_of_time => tracing::warn!("clean stop took too long: quitting"),
    }
    std::process::exit(1);
}
