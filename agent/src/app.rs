//! The agent's two jobs: `run` (the daemon) and `check` (every check once, as a table).

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::checks::{CheckSet, TestProcedures, render_table};
use crate::config::AgentConfig;
use crate::health::Status;
use crate::seen_file::{Opened, SeenStore};
use crate::session::{Session, SessionConfig, Sources, Uptime, now_ms};
use crate::spool::Spool;

/// Fault events waiting for the session, at most; checks wait when it is full (the session
/// only appends them to the spool, so it keeps up).
const FAULT_CHANNEL: usize = 64;

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // Before the spool: opening the spool creates its log, which tells a first start from
    // a lost seen-ids file.
    let (seen_store, seen, opened) =
        SeenStore::open(&config.spool.dir, now_ms(), config.commands.max_skew);
    match &opened {
        Opened::Loaded { ids } => info!(ids, "seen command ids loaded"),
        Opened::FirstStart => {}
        Opened::Lost { why, not_before } => warn!(
            %why,
            not_before,
            "seen command ids lost: signed commands made before not_before (ms) are refused as possible replays"
        ),
    }
    if !matches!(opened, Opened::Loaded { .. }) {
        if let Err(e) = seen_store.save(&seen) {
            warn!(error = %e, "cannot write the seen command ids file");
        }
    }
    let (spool, recovery) = Spool::open(&config.spool.dir, config.spool.limits)
        .with_context(|| format!("opening the spool in {}", config.spool.dir.display()))?;
    if recovery.torn_bytes > 0 {
        warn!(
            torn_bytes = recovery.torn_bytes,
            "spool: a torn or corrupt tail after an unclean stop is not replayed"
        );
    }
    if let Some(error) = spool.failure() {
        warn!(
            records = recovery.records,
            %error,
            "spool: opened but cannot be written; its records are sent, new ones held in memory"
        );
    }
    let check_names = config.checks.iter().map(|c| c.name.clone()).collect();
    let checks = CheckSet::new(config.checks.clone())
        .map_err(|e| anyhow::anyhow!("checks: {}", e.join("; ")))?;
    let (fault_tx, fault_rx) = mpsc::channel(FAULT_CHANNEL);
    let health = checks.spawn(fault_tx, shutdown.child_token());
    let tests = TestProcedures::new(config.tests.clone());
    let session = Session::new(
        SessionConfig {
            identity: config.node.clone(),
            mqtt: config.mqtt.clone(),
            check_names,
            test_schedules: tests.schedules(),
            uptime: Uptime::Host,
            agent_version: env!("CARGO_PKG_VERSION").into(),
            commands: config.commands.clone(),
            local_only_tests: tests.local_only(),
        },
        spool,
        Sources {
            health,
            tests: Arc::new(tests),
            faults: fault_rx,
            control: None,
            seen_store,
            seen,
        },
    )?;
    session.run(shutdown).await?;
    Ok(())
}

/// Runs every check once and prints the table; returns the exit code (the worst status).
pub async fn check(config: AgentConfig) -> anyhow::Result<i32> {
    let checks =
        CheckSet::new(config.checks).map_err(|e| anyhow::anyhow!("checks: {}", e.join("; ")))?;
    let results = checks.run_once().await;
    print!("{}", render_table(&results));
    let worst = results
        .iter()
        .map(|(_, o)| o.status)
        .max()
        .unwrap_or(Status::Ok);
    Ok(worst.exit_code())
}
