//! Startup and shutdown: builds every component from a validated [`Config`], runs the tasks,
//! and stops them all when `shutdown` fires or one of them ends unexpectedly.
//!
//! ```text
//!  broker ──► mqtt link (poll, decode, registry) ──[ingest.queue]──► core ──► store thread
//!                                                                    │  (commit first)
//!                                                                    └──► outputs: mqtt,
//!                                                                         webhook-N, alertmanager
//!                                                                         (own queue each)
//!  http: /api/v1 (reads: store; acks/silences: control ──► core; /events ◄── core)
//!        console, /metrics /healthz /readyz
//!  core ──► time-series sink (optional; submit never waits) ──► database, or its disk spool
//!  http /drills ──► drills task (reads committed receipts) ──► commander (signed, paced) ──► cmd
//!  core, mqtt link (rebirths) ──► commander
//! ```

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alarmnet_runtime::{Stopped, TaskError, Tasks};
use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::alerts::Monitor;
use crate::api::{self, ApiState, Auth, Control, EventHub, RecentMetrics};
use crate::config::Config;
use crate::http;
use crate::ingest::mqtt::{self, Topics};
use crate::ingest::{Binding, Ingest};
use crate::metrics::Metrics;
use crate::model::system_clock;
use crate::outputs::{OutputContext, Outputs, mqtt::MqttAlerts};
use crate::pipeline::{Core, Links};
use crate::readiness::Board;
use crate::store::Store;
use crate::timeseries::Sink;
use crate::tls::TlsReloader;

/// How long open HTTP connections (event streams) may take to finish after shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(2);

/// How long the time-series sink may keep writing after the core stopped; what is still
/// unwritten then goes to its spool (written at the next start).
const TSDB_GRACE: Duration = Duration::from_secs(5);

/// Runs the collector until `shutdown` is cancelled. An error means a component failed.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // One clock for the core, the MQTT link, the outputs, the drills, the API, retention
    // and the audit log.
    let clock = system_clock();
    let metrics = Arc::new(Metrics::new());
    let location = config
        .store
        .location(crate::secret::credentials_dir().as_deref())
        .map_err(anyhow::Error::msg)?;
    let store = {
        let metrics = metrics.clone();
        let at = location.clone();
        tokio::task::spawn_blocking(move || Store::open_at(&at, metrics))
            .await
            .context("store thread")?
            .with_context(|| format!("cannot open the store {}", location.describe()))?
    };
    tracing::info!(store = %location.describe(), "store open");
    // On a shared (PostgreSQL) store, the lease decides which collector is active.
    let shared = location.pg_target()?;
    if let Some(pg) = &shared
        && !pg.authenticates_server()
    {
        // Design: kept working (an existing config has no sslmode), but said at every start.
        let traffic = match pg.sslmode() {
            crate::store::pg::SslMode::Require => "encrypted",
            crate::store::pg::SslMode::Disable => "in clear",
            _ => "encrypted only if the server offers TLS",
        };
        tracing::warn!(
            sslmode = pg.sslmode().as_str(),
            traffic,
            "store: the PostgreSQL server is not authenticated; \
             set [store] ca_file to verify its certificate (sslmode verify-full)"
        );
    }
    let (roles, lease_thread) = match shared.clone() {
        None => (crate::ha::single(), None),
        Some(pg) => {
            let holder = config.mqtt.collector_id.as_str().to_owned();
            let lease = crate::ha::lease_name(config.store.shard.as_deref());
            let fence = Arc::new(crate::store::lease::Fence::new(&lease, &holder));
            store.set_fence(fence.clone());
            let settings = crate::ha::LeaseSettings {
                name: lease,
                holder,
                ttl: config.store.lease,
            };
            let (roles, thread) = crate::ha::start(
                move || crate::store::Db::connect_reader(&pg),
                settings,
                fence,
                shutdown.clone(),
            )
            .context("starting the lease thread")?;
            (roles, Some(thread))
        }
    };
    // The reserve file keeps room on the SQLite database's own disk; a PostgreSQL server
    // manages its disk itself.
    let on_file = matches!(location, crate::store::Location::Sqlite(_));
    let reserve = (on_file && config.store.reserve.0 > 0).then(|| {
        Arc::new(crate::store::reserve::Reserve::new(
            &config.store.path,
            config.store.reserve.0,
        ))
    });
    if let Some(r) = reserve.clone() {
        let made = tokio::task::spawn_blocking(move || (r.ensure(), r.present()))
            .await
            .context("reserve file")?;
        match made {
            (Ok(_), present) => metrics.store_reserve_present.store(present, Relaxed),
            (Err(e), _) => tracing::warn!(error = %e, "cannot make the store reserve file"),
        }
        if !metrics.store_reserve_present.load(Relaxed) {
            tracing::warn!(
                size = config.store.reserve.0,
                "no store reserve file: the disk lacks twice its size free"
            );
        }
    }
    let bindings = store
        .bindings()
        .await
        .context("reading the node registry")?;
    tracing::info!(nodes = bindings.len(), "node registry loaded");
    let prefix = config.mqtt.prefix.clone();
    let ingest = Ingest::new(
        prefix.clone(),
        &config.ingest,
        config.allowlist.clone(),
        bindings.into_iter().map(|(path, birth_ts)| {
            (
                path.node,
                Binding {
                    region: path.region,
                    site: path.site,
                    birth_ts,
                },
            )
        }),
        metrics.clone(),
    );

    let addr = config.http.listen;
    let tls = match config.http.tls_files() {
        Some(files) => Some(TlsReloader::load(files).context("the API's TLS")?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        tls = tls.is_some(),
        "http listening"
    );

    let scope = config.store.shard_scope();
    let topics = Topics {
        prefix: prefix.clone(),
        collector: config.mqtt.collector_id.clone(),
        regions: scope.as_ref().map(|s| s.regions.iter().cloned().collect()),
    };
    let (client, eventloop) = mqtt::client(&config.mqtt, &topics, clock());

    // Started before the core so that nothing the core accepts misses it; resumes the
    // previous run's spool.
    let sink = match &config.influx {
        Some(cfg) => {
            let sink = Sink::start(cfg).context("starting the time-series sink")?;
            tracing::info!(url = %cfg.url.as_str(), spool = ?cfg.spool_dir, "time-series sink started");
            Some(sink)
        }
        None => None,
    };
    let tsdb = sink.as_ref().map(Sink::handle);

    let mut tasks = Tasks::new();
    let ctx = OutputContext {
        store: store.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        clock: clock.clone(),
    };
    let outputs = Outputs::start(
        &config,
        Some(MqttAlerts::new(client.clone(), prefix.clone())),
        ctx,
        &mut tasks,
    )
    .context("building the outputs")?;
    tracing::info!(outputs = ?outputs.names(), "outputs started");

    let started = clock();
    let tz = config.time_zone.clone();
    let events = EventHub::new(
        started,
        api::events::DEFAULT_BUFFER,
        api::events::DEFAULT_LAG,
        tz.clone(),
    );
    if let Some(pg) = shared.clone() {
        // The collectors of one store see each other's events.
        api::relay::start(
            pg,
            config.mqtt.collector_id.as_str().to_owned(),
            events.clone(),
            shutdown.clone(),
        )
        .context("starting the event relay")?;
    }
    let recent = RecentMetrics::new(api::recent::DEFAULT_CAPACITY);
    let (control, control_rx) = Control::channel(api::control::DEFAULT_QUEUE);

    // Every command leaves through one sender: signed when a key is configured, paced.
    let (commands, command_queue) = crate::commands::Commands::channel();
    let signer = crate::commands::Signer::new(config.command_key.clone(), config.commands.ttl);
    match config.command_key.as_deref() {
        Some(key) => {
            tracing::info!(kid = %key.kid(), public = %key.public_key(), "commands are signed")
        }
        None => tracing::warn!(
            "no commands.key_file: commands go out unsigned (only agents with allow_unsigned run them)"
        ),
    }
    let commander = crate::commands::Commander::new(
        client.clone(),
        prefix.clone(),
        signer,
        config.commands.rate,
    )
    .with_link(metrics.clone());
    tasks.spawn(
        "commands",
        until_shutdown(
            commander.run(command_queue, shutdown.clone()),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("commands")),
    );
    let (drill_control, drill_rx) = crate::drills::DrillControl::channel();
    let mut drills = crate::drills::DrillsTask::new(
        store.clone(),
        events.clone(),
        commands.clone(),
        config.drills.clone(),
        tz.clone(),
        clock.clone(),
    )
    .for_shard(config.store.shard.as_deref().unwrap_or_default());
    tasks.spawn(
        "drills",
        when_active(roles.clone(), shutdown.clone(), {
            let shutdown = shutdown.clone();
            async move {
                drills.restore().await.map_err(|e| {
                    TaskError::from(format!("restoring drills from the store: {e}"))
                })?;
                drills.run(drill_rx, shutdown).await;
                Ok(())
            }
        })
        .instrument(tracing::info_span!("drills")),
    );

    let board = Board::new();
    let api_state = ApiState::new(
        store.clone(),
        events.clone(),
        control,
        Auth::new(&config.http.auth()),
        recent.clone(),
        tz,
    )
    .with_drills(drill_control, config.drills.clone())
    .with_readiness(board.clone())
    .with_max_reports(config.http.max_reports)
    .with_request_timeout(config.http.request_timeout)
    .with_trusted_proxies(&config.http.trusted_proxies)
    .with_roles(roles.clone())
    .with_clock(clock.clone());
    let links = Links {
        events,
        recent,
        rebirth: Some(commands.clone()),
        tsdb: tsdb.clone(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(config.ingest.queue);
    metrics
        .ingest_queue_capacity
        .store(config.ingest.queue as u64, Relaxed);
    let make_core = {
        let (store, metrics, clock) = (store.clone(), metrics.clone(), clock.clone());
        // A region shard's core publishes its own regions' rollups only: the API's
        // readiness page is read from the store instead (below).
        let core_board = match &scope {
            Some(_) => Board::new(),
            None => board.clone(),
        };
        let (monitor, readiness, scope) = (
            config.monitor.clone(),
            config.readiness.clone(),
            scope.clone(),
        );
        let max_backlog = config.store.max_backlog;
        // The monitor's grace runs from `since`: the start, or how long a standby's link
        // has been up.
        move |since| {
            let monitor =
                Monitor::new(monitor, since).with_scope(scope.as_ref().map(|s| s.name.clone()));
            Core::new(store, outputs, metrics, monitor, links)
                .with_clock(clock)
                .with_readiness(&readiness, core_board)
                .with_store_safety(max_backlog, reserve)
                .with_scope(scope)
        }
    };
    if shared.is_some() {
        // The API's readiness page read from the store: a standby's, and a region
        // shard's (the whole network's, from what every shard stored).
        let refresher = crate::ha::StoreBoard {
            store: store.clone(),
            monitor: config.monitor.clone(),
            readiness: config.readiness.clone(),
            board: board.clone(),
        };
        let (roles, shutdown, clock) = (roles.clone(), shutdown.clone(), clock.clone());
        let shard = scope.is_some();
        tasks.spawn(
            "readiness-board",
            async move {
                refresher.run(&clock, roles, shard, &shutdown).await;
                ended(&shutdown)
            }
            .instrument(tracing::info_span!("readiness-board")),
        );
    }
    if roles.borrow().is_active() {
        // Alone on the store: restored before anything else starts, as always.
        let mut core = make_core(started);
        core.restore(started)
            .await
            .context("restoring state from the store")?;
        tasks.spawn(
            "core",
            until_shutdown(core.run(rx, control_rx, shutdown.clone()), shutdown.clone())
                .instrument(tracing::info_span!("core")),
        );
    } else {
        let (mut roles, shutdown) = (roles.clone(), shutdown.clone());
        let me = config.mqtt.collector_id.as_str().to_owned();
        let (mut rx, mut control_rx, clock) = (rx, control_rx, clock.clone());
        tasks.spawn(
            "core",
            async move {
                let Some((warm, role)) =
                    crate::ha::stand_by(&mut rx, &mut control_rx, &mut roles, &shutdown).await
                else {
                    return ended(&shutdown);
                };
                let now = clock();
                let mut core = make_core(warm.linked_since.unwrap_or(now).min(now));
                let failover = match &role {
                    crate::ha::Role::Active {
                        epoch,
                        took_over_from: Some(from),
                    } => Some((from.as_str(), me.as_str(), *epoch)),
                    _ => None,
                };
                core.take_over(now, warm, failover)
                    .await
                    .map_err(|e| TaskError::from(format!("taking over from the store: {e}")))?;
                core.run(rx, control_rx, shutdown.clone()).await;
                ended(&shutdown)
            }
            .instrument(tracing::info_span!("core")),
        );
    }
    {
        // Keeps the role metric current; a lost lease stops the collector.
        let (mut roles, shutdown, metrics) = (roles.clone(), shutdown.clone(), metrics.clone());
        tasks.spawn(
            "lease",
            async move {
                loop {
                    let role = roles.borrow_and_update().clone();
                    let value = match role {
                        crate::ha::Role::Single => 0,
                        crate::ha::Role::Standby { .. } => 1,
                        crate::ha::Role::Active { .. } => 2,
                        crate::ha::Role::Lost(why) => return Err(TaskError::from(why)),
                    };
                    metrics.role.store(value, Relaxed);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        changed = roles.changed() => if changed.is_err() {
                            shutdown.cancelled().await;
                            return Ok(());
                        },
                    }
                }
            }
            .instrument(tracing::info_span!("lease")),
        );
    }
    let link = mqtt::run(
        mqtt::Link {
            eventloop,
            client,
            topics,
            reconnect_max: config.mqtt.reconnect_max,
            commands,
            clock: clock.clone(),
        },
        ingest,
        tx,
        metrics.clone(),
        shutdown.clone(),
    );
    tasks.spawn(
        "ingest",
        async move { link.await.map_err(TaskError::from) }.instrument(tracing::info_span!("mqtt")),
    );
    tasks.spawn(
        "reload",
        until_shutdown(
            reload_on_hangup(tls.clone(), store.clone(), clock.clone(), shutdown.clone()),
            shutdown.clone(),
        )
        .instrument(tracing::info_span!("reload")),
    );
    let retention = crate::store::retention::run(
        store.clone(),
        config.retention.clone(),
        config.time_zone.clone(),
        metrics.clone(),
        clock.clone(),
        shutdown.clone(),
    );
    tasks.spawn(
        "retention",
        when_active(roles.clone(), shutdown.clone(), async move {
            retention.await;
            Ok(())
        })
        .instrument(tracing::info_span!("retention")),
    );
    {
        let shutdown = shutdown.clone();
        let tls_for_http = tls;
        let router = http::router(http::HttpState {
            metrics: metrics.clone(),
            tsdb,
            readiness: Some(board),
        })
        .merge(api::router(api_state));
        tasks.spawn(
            "http",
            async move {
                // Returning before shutdown stops the collector (see below). Event-stream
                // clients keep their connections open: after shutdown they get a moment,
                // then the server is dropped.
                let stopped = shutdown.clone();
                tokio::select! {
                    r = http::serve_with(listener, tls_for_http, router, shutdown.clone()) => {
                        r.map_err(|e| TaskError::from(format!("the http server failed: {e}")))?;
                        ended(&shutdown)
                    }
                    _ = async move {
                        stopped.cancelled().await;
                        tokio::time::sleep(HTTP_DRAIN).await;
                    } => Ok(()),
                }
            }
            .instrument(tracing::info_span!("http")),
        );
    }

    let failure = supervise(&mut tasks, &shutdown).await;
    // The core has stopped: every point it accepted is in the sink.
    if let Some(sink) = sink {
        let c = sink.shutdown(TSDB_GRACE).await;
        tracing::info!(
            written = c.points_written,
            spooled = c.spool_points,
            dropped = c.dropped(),
            "time-series sink stopped"
        );
    }
    drop(store);
    if let Some(thread) = lease_thread {
        // A clean stop gives the lease up before the process ends.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    match failure {
        Some(stopped) => Err(anyhow::anyhow!("{stopped}")),
        None => Ok(()),
    }
}

/// On SIGHUP: reads the API's certificate and key again (new connections use them; the
/// listener stays open), and records the reload, or its failure, in the audit log.
async fn reload_on_hangup(
    tls: Option<TlsReloader>,
    store: crate::store::Store,
    clock: crate::model::Clock,
    shutdown: CancellationToken,
) {
    let mut hangups = match alarmnet_runtime::signal::Hangups::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reloads need a restart");
            shutdown.cancelled().await;
            return;
        }
    };
    while hangups.recv(&shutdown).await {
        let (outcome, target, message) = match &tls {
            None => (
                crate::audit::Outcome::Success,
                None,
                "SIGHUP: nothing to reload (the API has no TLS)".to_owned(),
            ),
            Some(tls) => match tls.reload() {
                Ok(()) => {
                    tracing::info!(cert = %tls.files().cert.display(), "SIGHUP: API certificate reloaded");
                    (
                        crate::audit::Outcome::Success,
                        Some("http.tls".to_owned()),
                        "SIGHUP: API certificate reloaded".to_owned(),
                    )
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: API certificate not reloaded; the previous one stays in use");
                    (
                        crate::audit::Outcome::Failed,
                        Some("http.tls".to_owned()),
                        format!("SIGHUP: {e}; the previous certificate stays in use"),
                    )
                }
            },
        };
        let entry = crate::audit::AuditEntry {
            id: 0,
            at: clock(),
            actor: None,
            role: "system".into(),
            peer: None,
            action: "config.reload".into(),
            target,
            outcome,
            status: None,
            detail: Some(serde_json::json!({ "message": message }).to_string()),
        };
        if let Err(e) = store.call(move |db| db.record_audit(&entry)).await {
            tracing::error!(error = %e, "cannot record the reload in the audit log");
        }
    }
}

/// Waits for `shutdown` or the first task to end, whichever comes first: every task runs
/// until shutdown, so one that ends before it is a failure, and it stops the others. Then
/// waits for every task, logging each that did not stop cleanly. Returns the failure.
pub async fn supervise(tasks: &mut Tasks, shutdown: &CancellationToken) -> Option<Stopped> {
    let mut failure = None;
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        Some(stopped) = tasks.join_next(), if !shutdown.is_cancelled() => {
            tracing::error!("{stopped}; stopping the collector");
            failure = Some(stopped);
            shutdown.cancel();
        }
    }
    while let Some(stopped) = tasks.join_next().await {
        if stopped.returned() {
            tracing::debug!("{stopped}");
        } else {
            tracing::error!("{stopped} (while stopping)");
        }
    }
    failure
}

/// A task that ends by itself: `Ok` once shutdown has begun, an error before.
fn ended(shutdown: &CancellationToken) -> Result<(), TaskError> {
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        Err("it ended before shutdown".into())
    }
}

/// Runs `task` once this collector is active (at once when it is alone on its store):
/// drills and retention run on the active collector only. Ending before shutdown is a
/// failure, as for every task.
async fn when_active(
    mut roles: crate::ha::Roles,
    shutdown: CancellationToken,
    task: impl Future<Output = Result<(), TaskError>>,
) -> Result<(), TaskError> {
    if crate::ha::until_active(&mut roles, &shutdown)
        .await
        .is_some()
    {
        task.await?;
    }
    ended(&shutdown)
}

/// Runs a task that has no error of its own (what it returns is not needed here); ending
/// before shutdown is its failure.
async fn until_shutdown<T>(
    task: impl Future<Output = T>,
    shutdown: CancellationToken,
) -> Result<(), TaskError> {
    task.await;
    ended(&shutdown)
}
