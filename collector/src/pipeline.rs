//! The core: the single owner of the collector's state, fed by ingest's bounded channel.
//!
//! It takes a burst of events at a time, lets [`Monitor`] (liveness tracker + alert engine)
//! decide, commits everything the burst produced in **one** store transaction, and only
//! after the commit announces: transitions and alert changes on the event stream, and
//! notifications (only for changes with `notify`) to the outputs. Heartbeats only update an
//! in-memory "last heard" map that is flushed to the store once a second, so the heartbeat
//! rate costs the store almost nothing.
//!
//! Time series (when configured): every accepted heartbeat, fault and test receipt (at the
//! agent's `ts`, replayed ones included), every committed transition and every alert change
//! becomes a [`Point`] handed to the sink after the commit; [`SinkHandle::submit`] never
//! waits, so liveness and alerting never stall behind the database.
//!
//! Around the events: [`Monitor::tick`] runs at [`Monitor::next_deadline`]; operators' acks
//! and silences arrive as [`ControlRequest`]s and are answered after their commit; the
//! collector's own run and blind intervals are recorded for uptime's coverage.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alarmnet_protocol::{
    AlertStatus, BootId, FaultStatus, NodeId, NodePath, NodeState, OfflineReason, State,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::alerts::BlindCause;
use crate::alerts::{AlertChange, Monitor, Output};
use crate::api::{ControlError, ControlRequest, EventHub, RecentMetrics};
use crate::ingest::{CoreEvent, NodeMessage};
use crate::liveness::RestoredNode;
use crate::liveness::wills::{HeldWill, WillGate};
use crate::metrics::Metrics;
use crate::model::{
    AlertId, Clock, NodeInfo, Silence, SilenceId, Transition, UnixMillis, system_clock,
};
use crate::outputs::Outputs;
use crate::readiness::{Board, ReadinessChange, ReadinessConfig, ReadinessTracker};
use crate::store::reserve::{Reserve, is_disk_full};
use crate::store::{Heard, NodeFilter, Store, StoreError, WriteBatch};
use crate::timeseries::{NodeTags, Point, SinkHandle};

/// Most events folded into one batch (one transaction).
const MAX_BURST: usize = 4096;

/// While the store fails, a commit of the held writes is tried at most this often.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// How often a missing reserve file is made again (when the disk has room for it).
const RESERVE_EVERY: Duration = Duration::from_secs(30);

/// How often "last heard" times reach the store (and the run's "alive" mark).
const SEEN_FLUSH: Duration = Duration::from_secs(1);

/// Notices decided this long before a start whose delivery no attempt ended are sent at
/// the start (see [`Core::restore`]).
const REDELIVER_WITHIN: Duration = Duration::from_secs(600);

/// At most one `rebirth` request per node in this long.
const REBIRTH_EVERY: Duration = Duration::from_secs(60);

/// A Last Will (or any `offline` other than a clean shutdown): held by the [`WillGate`].
fn is_will(state: &State) -> bool {
    state.state == NodeState::Offline && state.reason != Some(OfflineReason::Shutdown)
}

/// Whether a message proves the node is connected now (and so supersedes a held Will).
fn is_live(message: &NodeMessage, retained: bool) -> bool {
    match message {
        NodeMessage::Birth(_) => !retained,
        NodeMessage::State(s) => !retained && s.state == NodeState::Online,
        NodeMessage::Heartbeat(hb) => !hb.replay,
        NodeMessage::Fault(f) => !f.replay,
        NodeMessage::Test(t) => !t.replay,
    }
}

/// One store transaction: when nodes were last heard (with their sequence numbers), and
/// this run's "alive" mark.
fn touch(
    db: &crate::store::Db,
    heard: &[Heard],
    run: Option<i64>,
    now: UnixMillis,
) -> Result<(), StoreError> {
    db.touch(heard)?;
    if let Some(run) = run {
        db.run_alive(run, now)?;
    }
    Ok(())
}

/// How a flush of "last heard" times went: the error and whether it means a full disk.
type FlushResult = Result<(), (String, bool)>;

/// What the core announces to besides the outputs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Links {
    pub events: EventHub,
    pub recent: RecentMetrics,
    /// Where rebirth requests go (the command sender, which signs and paces them).
    pub rebirth: Option<crate::commands::Commands>,
    /// The time-series sink, when `[influx]` is configured.
    pub tsdb: Option<SinkHandle>,
}

/// What a burst decided, announced once it is committed.
#[derive(Debug, Default)]
struct Pending {
    transitions: Vec<Transition>,
    alerts: Vec<AlertChange>,
    /// Telemetry points (heartbeats, faults, tests) for the time-series sink.
    points: Vec<Point>,
    readiness: Vec<ReadinessChange>,
}

impl Pending {
    /// Appends what `later` decided after this.
    fn append(&mut self, mut later: Pending) {
        self.transitions.append(&mut later.transitions);
        self.alerts.append(&mut later.alerts);
        self.points.append(&mut later.points);
        self.readiness.append(&mut later.readiness);
    }

    fn is_empty(&self) -> bool {
        self.transitions.is_empty()
            && self.alerts.is_empty()
            && self.points.is_empty()
            && self.readiness.is_empty()
    }
}

/// A node as the store holds it, for the liveness tracker.
pub fn restored_node(rec: crate::store::NodeRecord) -> RestoredNode {
    let boot = rec.boot.and_then(|b| BootId::new(b).ok());
    // The stored sequence counts only for the boot it was heard in.
    let last_seq = rec
        .last_seq
        .filter(|(b, _)| boot.as_ref().is_some_and(|boot| boot.as_str() == b))
        .map(|(_, seq)| seq);
    RestoredNode {
        info: NodeInfo {
            path: rec.path,
            kind: rec.kind,
            name: rec.name,
            boot,
            hb_interval_ms: rec.hb_interval_ms,
        },
        state: rec.state,
        since: rec.state_since,
        last_heartbeat: Some(rec.last_seen),
        last_seq,
    }
}

/// The core task's state.
#[derive(Debug)]
pub struct Core {
    store: Store,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    monitor: Monitor,
    links: Links,
    /// Last heard per node since the last flush.
    seen: foldhash::HashMap<NodeId, UnixMillis>,
    /// The flush of "last heard" times being written, if any.
    seen_flush: Option<tokio::task::JoinHandle<()>>,
    /// How the last flush of "last heard" times went (`None`: not known yet). On a quiet
    /// network those flushes are the only writes, so they tell a failing store too.
    seen_result: Arc<std::sync::Mutex<Option<FlushResult>>>,
    /// The writes of the burst being processed.
    batch: WriteBatch,
    /// What the burst decided, announced after its commit.
    pending: Pending,
    /// Edges of blind mode not yet stored: `(blind, at)`.
    blind_edges: Vec<(bool, UnixMillis)>,
    /// Since when the broker connection is down, if it is.
    blind_since: Option<UnixMillis>,
    /// Since when the store fails to commit, if it does.
    store_failing: Option<UnixMillis>,
    /// When a commit was last tried (paces retries while the store fails).
    last_try: UnixMillis,
    /// Most writes held while the store fails (`[store] max_backlog`).
    max_backlog: usize,
    /// The store's reserve file, if one is kept (`[store] reserve`).
    reserve: Option<Arc<Reserve>>,
    /// When the reserve file was last checked (and made again if missing).
    reserve_checked: UnixMillis,
    /// A reserve file is being made (off the core's thread).
    reserve_making: Option<tokio::task::JoinHandle<()>>,
    /// This run's row in the store's run log, once started.
    run: Option<i64>,
    /// When each node was last asked for a rebirth.
    rebirths: HashMap<NodeId, UnixMillis>,
    /// Readiness of every node, fed beside the monitor (see [`crate::readiness`]).
    readiness: ReadinessTracker,
    /// Where the readiness rollups are published after each commit.
    board: Board,
    /// Wills waiting for the link to be confirmed.
    wills: WillGate,
    /// The last moment the broker is known to have been delivering to the collector (a
    /// message, a link check's echo, a connection): liveness deadlines are judged only up
    /// to it, so a link that only looks up is not judged as every node going silent.
    heard_until: UnixMillis,
    /// The current connection follows a broker outage (not the collector's start): Wills
    /// within a node's grace period describe the outage.
    after_outage: bool,
    /// Where the core reads "now" (its deadlines, retries and run log); every other time
    /// comes in with the events.
    clock: CoreClock,
    /// The regions this collector serves, when it is a region shard: it restores only
    /// their nodes and alerts (and its own collector alerts).
    scope: Option<crate::store::ShardScope>,
}

/// The core's [`Clock`], shown in `Debug` only by name.
#[derive(Clone)]
struct CoreClock(Clock);

impl std::fmt::Debug for CoreClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Core {
    pub fn new(
        store: Store,
        outputs: Outputs,
        metrics: Arc<Metrics>,
        monitor: Monitor,
        links: Links,
    ) -> Self {
        Self {
            store,
            outputs,
            metrics,
            monitor,
            links,
            seen: foldhash::HashMap::default(),
            seen_flush: None,
            seen_result: Arc::default(),
            batch: WriteBatch::default(),
            pending: Pending::default(),
            blind_edges: Vec::new(),
            blind_since: None,
            store_failing: None,
            last_try: UnixMillis::EPOCH,
            max_backlog: 1_000_000,
            reserve: None,
            reserve_checked: UnixMillis::EPOCH,
            reserve_making: None,
            run: None,
            rebirths: HashMap::new(),
            readiness: ReadinessTracker::new(&ReadinessConfig::default()),
            board: Board::new(),
            wills: WillGate::new(),
            heard_until: UnixMillis::EPOCH,
            after_outage: false,
            clock: CoreClock(system_clock()),
            scope: None,
        }
    }

    /// The same core serving only the regions of `scope` (a region shard).
    pub fn with_scope(mut self, scope: Option<crate::store::ShardScope>) -> Self {
        self.scope = scope;
        self
    }

    /// Whether this core restores `alert`: all of them, or on a region shard those of its
    /// regions and its own collector alerts.
    fn restores(&self, alert: &crate::model::Alert) -> bool {
        let Some(scope) = &self.scope else {
            return true;
        };
        match alert.subject.region() {
            Some(region) => scope.serves(region),
            None => {
                let engine = self.monitor.engine();
                [
                    crate::model::RuleKind::CollectorBlind,
                    crate::model::RuleKind::StoreFailed,
                ]
                .iter()
                .any(|rule| engine.network_alert_id(rule) == alert.id)
            }
        }
    }

    /// The same core reading "now" from `clock` (the system clock by default; tests pass
    /// [`crate::model::tokio_clock`] to run the core on paused time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = CoreClock(clock);
        self
    }

    /// Now, on the core's clock.
    fn now(&self) -> UnixMillis {
        (self.clock.0)()
    }

    /// The same core deriving readiness by `config` and publishing its rollups on `board`.
    pub fn with_readiness(mut self, config: &ReadinessConfig, board: Board) -> Self {
        self.readiness = ReadinessTracker::new(config);
        self.board = board;
        self
    }

    /// The same core holding at most `max_backlog` writes while the store fails, and
    /// deleting `reserve` (when given) when the disk is full.
    pub fn with_store_safety(mut self, max_backlog: usize, reserve: Option<Arc<Reserve>>) -> Self {
        self.max_backlog = max_backlog;
        self.reserve = reserve;
        self
    }

    /// Readiness of every node (tests and benchmarks read it).
    pub fn readiness(&self) -> &ReadinessTracker {
        &self.readiness
    }

    /// The liveness tracker and alert engine (tests and benchmarks read it).
    pub fn monitor(&self) -> &Monitor {
        &self.monitor
    }

    /// Restores what a restart must not forget, in the monitor's order: nodes, firing
    /// alerts, silences, then reconciliation. Firing alerts notified before the restart are
    /// handed to outputs that repeat them (no new notification is sent); notices stored
    /// but not delivered before it are sent. Starts this run's
    /// entry in the run log (the time before it, since the last run's last sign of life, is
    /// time nobody watched).
    pub async fn restore(&mut self, now: UnixMillis) -> Result<(), StoreError> {
        self.restore_watched_since(now, now).await
    }

    /// Takes over from the active collector `from` (none: this collector held the lease
    /// before, or nobody did), as [`crate::ha`] describes: restores what the store holds,
    /// replays what the standby heard (`warm`), and, after a takeover, raises
    /// `collector_failover`. This run counts as watching since the standby's link was up.
    pub async fn take_over(
        &mut self,
        now: UnixMillis,
        warm: crate::ha::Warm,
        failover: Option<(&str, &str, i64)>,
    ) -> Result<(), StoreError> {
        let since = warm.linked_since.map_or(now, |at| at.min(now));
        // Read before this run starts: the old active's last sign of life.
        let scope = self.scope.clone();
        let alive = self
            .store
            .read(move |db| db.last_alive(scope.as_ref()))
            .await?;
        self.restore_watched_since(now, since).await?;
        let after = alive.map_or(UnixMillis::EPOCH, |at| at - crate::ha::REPLAY_MARGIN);
        let replay = warm.replay(after);
        tracing::info!(events = replay.len(), "replaying what the standby heard");
        for event in replay {
            // A heartbeat, birth or state heard before the node's last committed
            // transition was judged by the old active already (its last heartbeats may not
            // have reached the store's sequence numbers): not news.
            if let CoreEvent::Node {
                path,
                message: NodeMessage::Heartbeat(_) | NodeMessage::State(_) | NodeMessage::Birth(_),
                received_at,
                ..
            } = &event
                && self
                    .monitor
                    .tracker()
                    .node(&path.node)
                    .is_some_and(|n| *received_at <= n.since())
            {
                continue;
            }
            self.absorb(event);
        }
        if let Some((from, to, epoch)) = failover {
            let out = self.monitor.failover(from, to, epoch, now);
            self.take(out);
        }
        self.commit_and_announce().await;
        Ok(())
    }

    async fn restore_watched_since(
        &mut self,
        now: UnixMillis,
        watched_since: UnixMillis,
    ) -> Result<(), StoreError> {
        let mut nodes = self.store.nodes(NodeFilter::default()).await?;
        if let Some(scope) = &self.scope {
            nodes.retain(|rec| scope.serves(&rec.path.region));
        }
        let count = nodes.len();
        for rec in nodes {
            self.monitor.restore_node(restored_node(rec));
        }
        // Readiness inputs before anything feeds liveness changes (silences do).
        let inputs = self.store.call(|db| db.readiness_inputs()).await?;
        for (node, restored) in inputs {
            self.readiness
                .restore(self.monitor.tracker(), &node, restored);
        }
        let mut firing = self
            .store
            .alerts(Some(AlertStatus::Firing), usize::MAX)
            .await?;
        firing.retain(|a| self.restores(a));
        for alert in &firing {
            self.outputs.resume(alert);
            self.monitor.restore_alert(alert.clone());
        }
        self.redeliver(now).await?;
        let silences = self.store.silences(Some(now)).await?;
        for silence in silences {
            let out = self.monitor.restore_silence(silence, now);
            self.take(out);
        }
        let out = self.monitor.finish_restore(now);
        self.take(out);
        self.readiness.finish_restore(self.monitor.tracker(), now);
        self.settle_readiness();
        let scope = self.scope.clone();
        self.run = Some(
            self.store
                .call(move |db| db.start_run(watched_since, scope.as_ref()))
                .await?,
        );
        tracing::info!(nodes = count, alerts = firing.len(), "state restored");
        self.commit_and_announce().await;
        // The restored rollups, even when nothing changed (nothing else publishes them).
        self.board
            .publish(self.monitor.tracker(), &mut self.readiness);
        Ok(())
    }

    /// Hands each output the stored notices it never finished delivering (the collector
    /// that decided them stopped first): decided in the last [`REDELIVER_WITHIN`].
    async fn redeliver(&mut self, now: UnixMillis) -> Result<(), StoreError> {
        let since = now - REDELIVER_WITHIN;
        let names: Vec<String> = self
            .outputs
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        for name in names {
            let output = name.clone();
            let mut notices = self
                .store
                .read(move |db| db.unsent_notices(&output, since))
                .await?;
            // On a region shard: only its own (the other shards send theirs).
            notices.retain(|n| self.restores(&n.alert));
            if !notices.is_empty() {
                tracing::warn!(output = %name, notices = notices.len(), "sending notifications the last run did not finish");
            }
            for notice in notices {
                self.outputs.redeliver(&name, notice);
            }
        }
        Ok(())
    }

    /// Runs until the channel closes or `shutdown`; then flushes what is pending.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<CoreEvent>,
        mut control: mpsc::Receiver<ControlRequest>,
        shutdown: CancellationToken,
    ) {
        let mut flush = tokio::time::interval(SEEN_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Never tick twice within this long (a deadline "early, never late" cannot spin).
        let mut earliest = tokio::time::Instant::now();
        loop {
            let wake = self.next_wake().map(|at| {
                let wait = at - self.now();
                (tokio::time::Instant::now() + wait).max(earliest)
            });
            let deadline = async move {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                // Events are taken even while the store cannot commit: judging and notifying
                // go on, and the held writes are bounded by `max_backlog` (see
                // `commit_and_announce`).
                event = rx.recv() => {
                    let Some(event) = event else { break };
                    self.absorb(event);
                    let mut n = 1;
                    while n < MAX_BURST {
                        match rx.try_recv() {
                            Ok(event) => self.absorb(event),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                    self.metrics.ingest_queue_depth.store(rx.len() as u64, Relaxed);
                    self.commit_and_announce().await;
                }
                Some(request) = control.recv() => self.control(request).await,
                _ = flush.tick() => {
                    self.flush_seen();
                    self.check_seen_flush();
                    self.commit_and_announce().await;
                    self.maintain_reserve();
                }
                _ = deadline => {
                    earliest = tokio::time::Instant::now() + Duration::from_millis(10);
                    // One `now` for the check and the judgement: nothing due after the
                    // check is judged unchecked.
                    let now = self.now();
                    self.forget_moved(now).await;
                    self.tick(now);
                    self.commit_and_announce().await;
                }
            }
        }
        self.commit_and_announce().await;
        self.flush_seen_now().await;
        if let Some(run) = self.run {
            let at = self.now();
            if let Err(e) = self.store.call(move |db| db.end_run(run, at)).await {
                tracing::error!(error = %e, "cannot record the end of this run");
            }
        }
        tracing::info!("core stopped");
    }

    /// Folds one event into the current batch.
    pub fn absorb(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Node {
                path,
                message,
                received_at,
                retained,
            } => {
                self.heard_until = self.heard_until.max(received_at);
                if let NodeMessage::State(state) = &message
                    && is_will(state)
                {
                    // Judged once the link is confirmed (liveness::wills).
                    let tracker = self.monitor.tracker();
                    let in_grace = self.after_outage
                        && tracker
                            .idx(&path.node)
                            .is_some_and(|idx| received_at < tracker.grace_end(idx));
                    self.wills.hold(
                        HeldWill {
                            path: path.clone(),
                            state: state.clone(),
                            retained,
                            at: received_at,
                        },
                        in_grace,
                    );
                } else {
                    if is_live(&message, retained) {
                        self.wills.supersede(&path.node);
                    }
                    let out = self.node_message(&path, message, retained, received_at);
                    self.take(out);
                }
                if !retained {
                    let at = self.seen.entry(path.node).or_insert(received_at);
                    *at = (*at).max(received_at);
                }
            }
            CoreEvent::BrokerConnected {
                at,
                session_present,
            } => {
                self.after_outage = self.blind_since.is_some();
                if let Some(since) = self.blind_since.take() {
                    tracing::info!(
                        blind_ms = at.millis_since(since),
                        session_present,
                        "broker back"
                    );
                }
                self.wills.connected();
                self.heard_until = self.heard_until.max(at);
                self.see_again(at);
            }
            CoreEvent::BrokerLost { at } => {
                let held = self.wills.len();
                // A wave of Wills just before the loss belongs to the blind period, and so
                // does the time since the broker was last heard.
                let from = self.wills.lost(at);
                let from = if self.heard_until > UnixMillis::EPOCH {
                    from.min(self.heard_until)
                } else {
                    from
                };
                if held > 0 {
                    tracing::info!(
                        wills = held,
                        wave_ms = at.millis_since(from),
                        "Wills delivered just before the broker connection was lost are not judged"
                    );
                }
                if self.blind_since.is_none() {
                    self.blind_since = Some(from);
                    self.go_blind(BlindCause::Broker, from);
                }
            }
            CoreEvent::LinkConfirmed { at } => {
                self.heard_until = self.heard_until.max(at);
                for will in self.wills.confirmed() {
                    let out =
                        self.monitor
                            .on_state(&will.path, &will.state, will.retained, will.at);
                    self.take(out);
                }
            }
        }
    }

    /// One cause of blindness began (the broker or the store): the monitor stops judging if
    /// it was not already blind.
    fn go_blind(&mut self, cause: BlindCause, at: UnixMillis) {
        if self.monitor.tracker().is_blind() {
            return;
        }
        self.blind_edges.push((true, at));
        let out = self.monitor.go_blind(cause, at);
        self.take(out);
    }

    /// One cause of blindness ended (also the first connection after start): once neither
    /// the broker nor the store is failing, the monitor judges again, every node with a full
    /// timeout from `at`.
    fn see_again(&mut self, at: UnixMillis) {
        if self.blind_since.is_some() {
            return;
        }
        if self.monitor.tracker().is_blind() {
            self.blind_edges.push((false, at));
        }
        let out = self.monitor.broker_connected(at);
        self.take(out);
    }

    fn node_message(
        &mut self,
        path: &NodePath,
        message: NodeMessage,
        retained: bool,
        now: UnixMillis,
    ) -> Output {
        let sequenced = match &message {
            NodeMessage::Heartbeat(hb) => Some((&hb.boot, hb.seq)),
            NodeMessage::Fault(f) => Some((&f.boot, f.seq)),
            NodeMessage::Test(t) => Some((&t.boot, t.seq)),
            NodeMessage::Birth(_) | NodeMessage::State(_) => None,
        };
        if let Some((boot, seq)) = sequenced
            && self.monitor.tracker().is_duplicate(&path.node, boot, seq)
        {
            self.metrics.duplicates.fetch_add(1, Relaxed);
            return Output::default();
        }
        match message {
            NodeMessage::Birth(birth) => {
                let out = self.monitor.on_birth(path, &birth, retained, now);
                self.readiness
                    .birth(self.monitor.tracker(), &path.node, now);
                self.batch.births.push((path.clone(), birth, now));
                out
            }
            NodeMessage::State(state) => self.monitor.on_state(path, &state, retained, now),
            NodeMessage::Heartbeat(hb) => {
                if !self.monitor.tracker().contains(&path.node) {
                    self.ask_rebirth(path, now);
                    return Output::default();
                }
                if let Some(tags) = self.tags(path) {
                    self.pending.points.push(Point::heartbeat(&tags, &hb));
                }
                let out = self.monitor.on_heartbeat(path, &hb, now);
                if let (false, Some(keys)) = (hb.replay, &hb.faults) {
                    let unknown = self.monitor.engine().config().fault.reconciled_severity;
                    self.readiness.fault_list(
                        self.monitor.tracker(),
                        &path.node,
                        keys,
                        unknown,
                        now,
                    );
                }
                // Last: the heartbeat moves into the recent samples.
                self.links.recent.record(&path.node, now, hb);
                out
            }
            NodeMessage::Fault(fault) => {
                let out = self.monitor.on_fault(path, &fault, now);
                self.metrics
                    .faults_capped
                    .store(self.monitor.engine().faults_capped(), Relaxed);
                let severity = (fault.status == FaultStatus::Raised).then_some(fault.severity);
                self.readiness.fault(
                    self.monitor.tracker(),
                    &path.node,
                    &fault.key(),
                    severity,
                    now,
                );
                if let Some(tags) = self.tags(path) {
                    self.pending.points.push(Point::fault(&tags, &fault));
                }
                self.batch.faults.push((path.node.clone(), fault, now));
                out
            }
            NodeMessage::Test(test) => {
                let out = self.monitor.on_test(path, &test, now);
                // A test cannot have run after it arrived, whatever the agent's clock says.
                self.readiness.test(
                    self.monitor.tracker(),
                    &path.node,
                    &test.test,
                    test.result,
                    UnixMillis::from_millis(test.ts).min(now),
                    now,
                );
                if let Some(tags) = self.tags(path) {
                    self.pending.points.push(Point::test(&tags, &test));
                }
                self.batch.tests.push((path.node.clone(), test, now));
                out
            }
        }
    }

    /// A registered node's time-series tags, when the sink is configured.
    fn tags(&self, path: &NodePath) -> Option<NodeTags> {
        self.links.tsdb.as_ref()?;
        let view = self.monitor.tracker().node(&path.node)?;
        Some(NodeTags::new(path, view.kind()))
    }

    /// Adds what the monitor decided to the batch (to store) and to what is announced after.
    pub fn take(&mut self, out: Output) {
        for t in &out.transitions {
            self.readiness
                .liveness(self.monitor.tracker(), &t.node, t.to, t.at);
        }
        self.batch
            .transitions
            .extend(out.transitions.iter().cloned());
        self.pending.transitions.extend(out.transitions);
        for change in out.alerts {
            self.stage_alert(change);
        }
        self.settle_readiness();
    }

    /// An alert change to store, and to announce after the commit; one to notify goes in
    /// the store's outbox with it.
    fn stage_alert(&mut self, change: AlertChange) {
        self.batch.alerts.push(change.alert.clone());
        if change.notify {
            let now = self.now();
            self.batch.notices.push((change.alert.clone(), now));
        }
        self.pending.alerts.push(change);
    }

    /// Moves the readiness changes decided so far into the batch (to store) and what is
    /// announced after it, and lets `readiness_low` judge the regions whose rollup moved.
    fn settle_readiness(&mut self) {
        let changes = self.readiness.take_changes();
        self.batch.readiness.extend(changes.iter().cloned());
        self.pending.readiness.extend(changes);
        for (region, at) in self.readiness.take_alert_regions() {
            let sirens = self.readiness.region(region).sirens;
            let out = self.monitor.readiness_region(region, &sirens, at);
            for change in out.alerts {
                self.stage_alert(change);
            }
        }
    }

    /// Sends a `rebirth` command to a node heard before its birth (at most once a minute).
    fn ask_rebirth(&mut self, path: &NodePath, now: UnixMillis) {
        let Some(rebirth) = &self.links.rebirth else {
            return;
        };
        if self
            .rebirths
            .get(&path.node)
            .is_some_and(|&at| now < at + REBIRTH_EVERY)
        {
            return;
        }
        if self.rebirths.len() >= 100_000 {
            self.rebirths.retain(|_, at| now < *at + REBIRTH_EVERY);
        }
        self.rebirths.insert(path.node.clone(), now);
        if rebirth.rebirth(path.clone()) {
            tracing::info!(node = %path.node, "heartbeat before birth: rebirth asked");
        } else {
            tracing::warn!(node = %path.node, "cannot ask for a rebirth: the command queue is full");
        }
    }

    /// Judges every deadline due at `now` into the current batch.
    pub fn tick(&mut self, now: UnixMillis) {
        let out = self.monitor.tick_judging_until(now, self.heard_until);
        self.take(out);
        self.readiness.tick(self.monitor.tracker(), now);
        self.settle_readiness();
    }

    /// On a region shard: forgets the nodes a tick at `now` would judge late or offline
    /// whose stored region this shard does not serve. Such a node moved: its birth in the
    /// new region went to that region's shard, which registered it, and this one, no
    /// longer hearing it, would judge it offline and notify. Forgotten, it is neither
    /// judged nor announced here (no transition, no notification). One store read, only
    /// when some node is due (never per heartbeat); when the store does not answer soon,
    /// the nodes are judged as usual.
    async fn forget_moved(&mut self, now: UnixMillis) {
        /// The longest the core waits for the check.
        const CHECK_WITHIN: Duration = Duration::from_secs(1);
        let Some(scope) = self.scope.clone() else {
            return;
        };
        if self.store_failing.is_some() {
            return;
        }
        let due = self.monitor.due(now, self.heard_until);
        if due.is_empty() {
            return;
        }
        let read = self.store.read(move |db| db.regions_of(&due));
        let stored = match tokio::time::timeout(CHECK_WITHIN, read).await {
            Ok(Ok(stored)) => stored,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot check the regions of nodes due for judgement");
                return;
            }
            Err(_) => {
                tracing::warn!(
                    "the store did not tell the regions of nodes due for judgement in time"
                );
                return;
            }
        };
        for (node, region) in stored {
            if scope.serves(&region) {
                continue;
            }
            self.readiness.forget(self.monitor.tracker(), &node, now);
            if self.monitor.forget(&node) {
                self.seen.remove(&node);
                tracing::info!(node = %node, %region, "node moved to a region another shard serves: forgotten");
            }
        }
        self.settle_readiness();
    }

    /// When the core should tick next: the alert engine's next deadline, and a liveness
    /// deadline only once the broker has been heard past it (until then the next message or
    /// link check wakes the core anyway).
    fn next_wake(&self) -> Option<UnixMillis> {
        let liveness = self
            .monitor
            .tracker()
            .next_deadline()
            .filter(|&at| at <= self.heard_until);
        [
            liveness,
            self.monitor.engine().next_deadline(),
            self.readiness.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Hands the "last heard" times to the store, with this run's "alive" mark, without
    /// waiting: nothing is announced from them, so the core goes on with the next burst while
    /// the store thread writes. While the previous flush is still being written, the times
    /// keep coalescing (one entry per node) for the next one, so a slow disk makes the stored
    /// times staler, never the core slower.
    pub fn flush_seen(&mut self) {
        if self.seen_flush.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let (store, seen, run, now) = (self.store.clone(), self.take_seen(), self.run, self.now());
        let result = self.seen_result.clone();
        self.seen_flush = Some(tokio::spawn(async move {
            let r = store.call(move |db| touch(db, &seen, run, now)).await;
            if let Err(e) = &r {
                tracing::debug!(error = %e, "cannot store when nodes were last heard");
            }
            *result.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(r.map_err(|e| (e.to_string(), is_disk_full(&e))));
        }));
    }

    /// [`Core::flush_seen`], waiting until it is written (at shutdown, and in tests).
    pub async fn flush_seen_now(&mut self) {
        if let Some(previous) = self.seen_flush.take() {
            let _ = previous.await;
        }
        let (seen, run, now) = (self.take_seen(), self.run, self.now());
        if let Err(e) = self.store.call(move |db| touch(db, &seen, run, now)).await {
            tracing::warn!(error = %e, "cannot store when nodes were last heard");
        }
    }

    fn take_seen(&mut self) -> Vec<Heard> {
        let tracker = self.monitor.tracker();
        self.seen
            .drain()
            .map(|(node, at)| {
                let seq = tracker
                    .node(&node)
                    .and_then(|view| Some((view.boot()?.as_str().to_owned(), view.last_seq()?)));
                Heard { node, at, seq }
            })
            .collect()
    }

    /// Publishes the Will gate's count of discarded Wills.
    fn count_wills(&self) {
        self.metrics
            .wills_discarded
            .store(self.wills.discarded(), Relaxed);
    }

    /// Commits the batch, then announces its transitions and alert changes.
    ///
    /// While the store cannot commit (see [`Core::store_failed`]) the writes are held in
    /// memory, bounded by `max_backlog`, and retried at most once a second; what was decided
    /// is announced at once all the same, so a siren that goes offline during a disk-full
    /// outage still reaches the operators. When a commit succeeds again the whole backlog is
    /// in it, in order, and `store_failed` resolves.
    pub async fn commit_and_announce(&mut self) {
        if let (Some(run), false) = (self.run, self.blind_edges.is_empty()) {
            let edges = std::mem::take(&mut self.blind_edges);
            let kept = edges.clone();
            if let Err(e) = self.store.call(move |db| db.blind_edges(run, &edges)).await {
                tracing::debug!(error = %e, "cannot record blind mode in the run log yet");
                // Tried again with the next commit (before any newer edge).
                let newer = std::mem::replace(&mut self.blind_edges, kept);
                self.blind_edges.extend(newer);
            }
        }
        self.count_wills();
        loop {
            if self.fenced_out() || (self.batch.is_empty() && self.pending.is_empty()) {
                return;
            }
            let now = self.now();
            if self.store_failing.is_some() && now < self.last_try + RETRY_EVERY {
                // Not time to retry yet: hold the writes, announce the decisions.
                self.shed_backlog();
                let pending = std::mem::take(&mut self.pending);
                self.announce(pending, None);
                return;
            }
            self.last_try = now;
            let batch = std::mem::take(&mut self.batch);
            let pending = std::mem::take(&mut self.pending);
            match self.store.write(batch).await {
                Err((e, batch)) => {
                    if self.fenced_out() {
                        return;
                    }
                    if is_disk_full(&e) && self.release_reserve() {
                        // Room was made: the same writes again, at once.
                        self.batch = batch;
                        self.pending = pending;
                        self.last_try = UnixMillis::EPOCH;
                        continue;
                    }
                    self.store_failed(batch, pending, &e);
                    return;
                }
                Ok(notices) => {
                    let recovered = self.store_recovered();
                    self.announce(pending, Some(notices));
                    if !recovered {
                        return;
                    }
                    // The resolution of `store_failed` is committed and announced too.
                }
            }
        }
    }

    /// Whether another collector took the lease over (this one stalled past it): what this
    /// one decides since is neither committed (the store's fence refused it) nor announced,
    /// since the new active collector judges the same nodes and notifies what it finds.
    /// Its held writes are dropped; the lease task stops the collector.
    fn fenced_out(&mut self) -> bool {
        if !self.store.lease_lost() {
            return false;
        }
        if !(self.batch.is_empty() && self.pending.is_empty()) {
            tracing::error!(
                writes = self.batch.len(),
                "the active lease was taken over: nothing decided since is committed or announced"
            );
            self.batch = WriteBatch::default();
            self.pending = Pending::default();
        }
        true
    }

    /// Announces what a burst decided: events, time-series points, notifications.
    /// `notices` are the outbox ids of its notifications once committed, `None` while the
    /// store fails (the writes are held, see [`Core::store_failed`]; the notifications go
    /// out at once, so they leave the held writes: sent, they are not the outbox's).
    fn announce(&mut self, pending: Pending, notices: Option<Vec<i64>>) {
        let committed = notices.is_some();
        if !committed {
            self.batch.notices.clear();
        }
        let mut notices = notices.unwrap_or_default().into_iter();
        let tsdb = self.links.tsdb.as_ref();
        if let Some(tsdb) = tsdb {
            for point in pending.points {
                tsdb.submit(point);
            }
        }
        for t in &pending.transitions {
            tracing::info!(node = %t.node, from = t.from.as_str(), to = t.to.as_str(), cause = t.cause.as_str(), committed, "transition");
            if let Some(view) = self.monitor.tracker().node(&t.node) {
                let path = view.path();
                self.links
                    .events
                    .publish_state(t, &path, view.kind(), view.name());
                if let Some(tsdb) = tsdb {
                    tsdb.submit(Point::node_state(&NodeTags::new(&path, view.kind()), t));
                }
            }
        }
        for c in &pending.readiness {
            if let Some(view) = self.monitor.tracker().node(&c.node) {
                let path = view.path();
                self.links.events.publish_readiness(c, &path, view.kind());
                if let Some(tsdb) = tsdb {
                    tsdb.submit(Point::readiness(&NodeTags::new(&path, view.kind()), c));
                }
            }
        }
        self.board
            .publish(self.monitor.tracker(), &mut self.readiness);
        for change in &pending.alerts {
            let a = &change.alert;
            if let Some(tsdb) = tsdb {
                tsdb.submit(Point::alert(a));
            }
            tracing::info!(alert = %a.id, rule = %a.rule, event = ?change.event, notify = change.notify, committed, "alert");
            if change.notify {
                self.links.events.publish_alert(&a.to_notification());
                self.outputs.notify(a, notices.next());
            }
        }
    }

    /// A commit failed: its writes are held (first, before anything absorbed since) to be
    /// retried, `store_failed` fires on the first failure, and what the burst decided is
    /// announced without waiting for the store.
    ///
    /// Design: the collector goes on judging. Going blind instead (the earlier design)
    /// meant a siren going offline during a long disk-full outage reached nobody; the
    /// price of announcing before the commit is that a collector killed during the outage
    /// loses the held history and, after its restart, may notify again what it had
    /// announced (a duplicate, never a silence).
    fn store_failed(&mut self, batch: WriteBatch, pending: Pending, e: &StoreError) {
        let now = self.now();
        self.metrics.store_write_failures.fetch_add(1, Relaxed);
        self.metrics.store_failing.store(true, Relaxed);
        // Nothing was absorbed while the commit ran: the kept writes come first.
        debug_assert!(self.batch.is_empty() && self.pending.is_empty());
        self.batch = batch;
        if self.store_failing.is_none() {
            tracing::error!(error = %e, writes = self.batch.len(), "store write failed; writes kept and retried, nodes still judged and notified");
            self.store_failing = Some(now);
            let out = self.monitor.store_failed(&e.to_string(), now);
            self.take(out);
        } else {
            tracing::debug!(error = %e, writes = self.batch.len(), "store write failed again");
        }
        let mut pending = pending;
        pending.append(std::mem::take(&mut self.pending));
        self.shed_backlog();
        self.announce(pending, None);
    }

    /// Learns from the last flush of "last heard" times whether the store takes writes: on
    /// a quiet network (no transition, alert or fault to commit) that flush is the only
    /// write, and a store that fails it fails; one that takes it again while nothing is
    /// held has recovered.
    fn check_seen_flush(&mut self) {
        if self.store.lease_lost() {
            return;
        }
        let result = self
            .seen_result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match result {
            Some(Err((e, full))) if self.store_failing.is_none() => {
                if full && self.release_reserve() {
                    return; // the next flush tries again, with room
                }
                let now = self.now();
                self.metrics.store_write_failures.fetch_add(1, Relaxed);
                self.metrics.store_failing.store(true, Relaxed);
                tracing::error!(error = %e, "store write failed; writes kept and retried, nodes still judged and notified");
                self.store_failing = Some(now);
                // Announced by the next commit, which holds it without trying the store.
                self.last_try = now;
                let out = self.monitor.store_failed(&e, now);
                self.take(out);
            }
            Some(Ok(())) if self.store_failing.is_some() && self.batch.is_empty() => {
                // Its resolution is committed (and so announced) by the next commit.
                self.store_recovered();
            }
            _ => {}
        }
    }

    /// Keeps the held writes within `max_backlog`, counting what is dropped.
    fn shed_backlog(&mut self) {
        if self.batch.len() > self.max_backlog {
            let dropped = self.batch.shed(self.max_backlog);
            for (i, n) in dropped.iter().enumerate() {
                if *n > 0 {
                    self.metrics.store_backlog_dropped[i].fetch_add(*n as u64, Relaxed);
                    tracing::error!(
                        kind = crate::metrics::BACKLOG_KINDS[i],
                        dropped = n,
                        max_backlog = self.max_backlog,
                        "store backlog full: held writes dropped"
                    );
                }
            }
        }
        self.metrics
            .store_pending_writes
            .store(self.batch.len() as u64, Relaxed);
    }

    /// After a commit: if the store had been failing, it is back and `store_failed`
    /// resolves (its resolution goes into the batch). Returns whether it was failing.
    fn store_recovered(&mut self) -> bool {
        let Some(since) = self.store_failing.take() else {
            return false;
        };
        let now = self.now();
        self.metrics.store_pending_writes.store(0, Relaxed);
        self.metrics.store_failing.store(false, Relaxed);
        tracing::info!(
            failing_ms = now.millis_since(since),
            "store writes again; held writes committed"
        );
        let out = self.monitor.store_recovered(now);
        self.take(out);
        true
    }

    /// Deletes the reserve file after a disk-full failure. Returns whether there was one.
    fn release_reserve(&mut self) -> bool {
        let Some(reserve) = &self.reserve else {
            return false;
        };
        if !reserve.release() {
            return false;
        }
        self.metrics.store_reserve_released.fetch_add(1, Relaxed);
        self.metrics.store_reserve_present.store(false, Relaxed);
        self.reserve_checked = self.now();
        tracing::error!(
            reserve = %reserve.path().display(),
            "store disk full: reserve file deleted to make room; free space on the disk"
        );
        true
    }

    /// Makes the reserve file again when it is missing, the store commits, and the disk
    /// has room (checked at most every 30 s, written off the core's thread).
    fn maintain_reserve(&mut self) {
        let Some(reserve) = self.reserve.clone() else {
            return;
        };
        let now = self.now();
        if self.store_failing.is_some()
            || now < self.reserve_checked + RESERVE_EVERY
            || self
                .reserve_making
                .as_ref()
                .is_some_and(|h| !h.is_finished())
        {
            return;
        }
        self.reserve_checked = now;
        let metrics = self.metrics.clone();
        self.reserve_making = Some(tokio::task::spawn_blocking(move || {
            match reserve.ensure() {
                Ok(true) => {
                    tracing::info!(reserve = %reserve.path().display(), "store reserve file made")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(reserve = %reserve.path().display(), error = %e, "cannot make the store reserve file")
                }
            }
            metrics
                .store_reserve_present
                .store(reserve.present(), Relaxed);
        }));
    }

    /// Applies an operator's request, commits it, announces it, then replies.
    async fn control(&mut self, request: ControlRequest) {
        let now = self.now();
        match request {
            ControlRequest::Ack { id, ack, reply } => {
                let result = self.ack(id, ack, now).await;
                let _ = reply.send(result);
            }
            ControlRequest::AddSilence { silence, reply } => {
                let result = match self.store.upsert_silence(silence.clone()).await {
                    Ok(()) => {
                        let out = self.monitor.add_silence(silence.clone(), now);
                        self.take(out);
                        self.commit_and_announce().await;
                        Ok(silence)
                    }
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(result);
            }
            ControlRequest::EndSilence { id, at, reply } => {
                let result = self.end_silence(id, at, now).await;
                let _ = reply.send(result);
            }
        }
    }

    /// Acknowledges the latest firing of alert `id`: in the engine when it still fires
    /// there, and in the store (history) in any case.
    async fn ack(
        &mut self,
        id: AlertId,
        ack: crate::model::Ack,
        now: UnixMillis,
    ) -> Result<crate::model::Alert, ControlError> {
        self.commit_and_announce().await;
        match self.store.call(move |db| db.latest_alert(id)).await? {
            None => return Err(ControlError::not_found("alert", id)),
            Some(latest) => {
                if let Some(previous) = latest.ack {
                    return Err(ControlError::AlreadyAcknowledged {
                        id: id.to_string(),
                        by: previous.by,
                    });
                }
            }
        }
        let ack = match self.monitor.ack(id, &ack.by, ack.comment.as_deref(), now) {
            Ok(change) => change.alert.ack.unwrap_or(ack),
            // Resolved already: the acknowledgement is kept in history all the same.
            Err(_) => ack,
        };
        match self.store.ack_alert(id, ack).await? {
            Some(alert) => {
                self.links.events.publish_ack(&alert);
                Ok(alert)
            }
            None => Err(ControlError::not_found("alert", id)),
        }
    }

    async fn end_silence(
        &mut self,
        id: SilenceId,
        at: UnixMillis,
        now: UnixMillis,
    ) -> Result<Silence, ControlError> {
        let silences = self.store.silences(None).await?;
        let Some(mut silence) = silences.into_iter().find(|s| s.id == id) else {
            return Err(ControlError::not_found("silence", id));
        };
        if silence.ends_at <= at {
            return Err(ControlError::AlreadyExpired { id: id.to_string() });
        }
        self.store.end_silence(id, at).await?;
        if let Some(out) = self.monitor.expire_silence(id, now) {
            self.take(out);
        }
        self.commit_and_announce().await;
        if silence.starts_at <= at {
            silence.ends_at = at;
        }
        Ok(silence)
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ms;
    use alarmnet_protocol::Prefix;

    use super::*;
    use crate::alerts::MonitorConfig;
    use crate::ingest::Ingest;
    use crate::ingest::IngestConfig;
    use crate::model::{Liveness, RuleKind};
    use crate::outputs::Notice;
    use crate::store::Db;

    const T0: UnixMillis = UnixMillis::from_millis(1_764_330_000_000);

    fn core(
        store: &Store,
        metrics: &Arc<Metrics>,
    ) -> (Core, crate::outputs::NoticeReceiver, EventHub) {
        let mut outputs = Outputs::none(metrics.clone());
        let rx = outputs.add("probe", 100);
        let mut config = MonitorConfig::default();
        config.alerts.node_offline.group_wait = Duration::ZERO;
        let events = EventHub::new(T0, 100, 100, jiff::tz::TimeZone::UTC);
        let links = Links {
            events: events.clone(),
            recent: RecentMetrics::new(8),
            rebirth: None,
            tsdb: None,
        };
        let monitor = Monitor::new(config, T0);
        (
            Core::new(store.clone(), outputs, metrics.clone(), monitor, links),
            rx,
            events,
        )
    }

    fn ingest(metrics: &Arc<Metrics>) -> Ingest {
        Ingest::new(
            Prefix::default(),
            &IngestConfig::default(),
            None,
            [],
            metrics.clone(),
        )
    }

    fn event(
        ingest: &mut Ingest,
        node: &str,
        topic: &str,
        body: &str,
        at: UnixMillis,
    ) -> CoreEvent {
        ingest
            .handle(
                &format!("alarmnet/v1/r/s/{node}/{topic}"),
                body.as_bytes(),
                at,
            )
            .expect("accepted")
    }

    /// The birth of `node` at `T0 + 100 ms`, through ingest.
    fn born(ingest: &mut Ingest, node: &str) -> CoreEvent {
        event(ingest, node, "birth", &birth(node), T0 + ms(100))
    }

    /// Restores `core`, connects it to a broker whose link is confirmed at `T0 + 1 ms`, and
    /// gives it the births of `nodes` (through `ingest`).
    async fn linked_with(core: &mut Core, ingest: &mut Ingest, nodes: &[&str]) {
        core.restore(T0).await.expect("restore");
        core.absorb(CoreEvent::BrokerConnected {
            at: T0,
            session_present: false,
        });
        core.absorb(CoreEvent::LinkConfirmed { at: T0 + ms(1) });
        for n in nodes {
            core.absorb(born(ingest, n));
        }
    }

    fn birth(node: &str) -> String {
        format!(
            r#"{{"v":1,"boot":"b0000001","ts":{T0},"node":"{node}","site":"s","region":"r",
                "kind":"siren","hb_interval_s":10}}"#
        )
    }

    #[tokio::test]
    async fn a_second_delivery_of_a_fault_is_dropped_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let store =
            Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
        let (mut core, _rx, _events) = core(&store, &metrics);
        let mut ingest = ingest(&metrics);
        core.restore(T0).await.expect("restore");
        core.absorb(born(&mut ingest, "n1"));
        let fault = |seq: u64, code: &str| {
            format!(
                r#"{{"v":1,"boot":"b0000001","seq":{seq},"ts":{T0},"check":"power",
                    "code":"{code}","severity":"major","status":"raised"}}"#
            )
        };
        for (seq, code) in [(1, "A"), (2, "B"), (2, "B"), (1, "A"), (3, "C")] {
            core.absorb(event(
                &mut ingest,
                "n1",
                "fault",
                &fault(seq, code),
                T0 + ms(200),
            ));
        }
        core.commit_and_announce().await;
        let node = NodeId::new("n1").expect("id");
        let stored = store.faults(node.clone(), false).await.expect("faults");
        let mut keys: Vec<&str> = stored.iter().map(|f| f.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["power/A", "power/B", "power/C"]);
        assert_eq!(metrics.duplicates.load(Relaxed), 2);

        // A restarted collector still knows the highest sequence number it stored.
        core.flush_seen_now().await;
        let (mut again, _rx, _events) = self::core(&store, &metrics);
        again.restore(T0 + ms(1_000)).await.expect("restore");
        again.absorb(event(
            &mut ingest,
            "n1",
            "fault",
            &fault(3, "C"),
            T0 + ms(300),
        ));
        again.absorb(event(
            &mut ingest,
            "n1",
            "fault",
            &fault(4, "D"),
            T0 + ms(300),
        ));
        again.commit_and_announce().await;
        assert_eq!(metrics.duplicates.load(Relaxed), 3);
        let stored = store.faults(node, false).await.expect("faults");
        assert_eq!(stored.len(), 4, "D stored, the second C not");
    }

    /// A store on a file in `dir` (a cap on its pages simulates a full disk).
    fn file_store(dir: &std::path::Path, metrics: &Arc<Metrics>) -> Store {
        Store::open(&dir.join("alarmnet.db"), metrics.clone()).expect("store")
    }

    fn notices(rx: &mut crate::outputs::NoticeReceiver) -> Vec<(String, AlertStatus)> {
        std::iter::from_fn(|| rx.try_recv())
            .filter_map(|n| match n {
                Notice::Alert(a) => Some((a.rule.as_str().to_owned(), a.status)),
                Notice::Resume(_) => None,
            })
            .collect()
    }

    /// An active collector that stalled past its lease, and finds it taken when it writes,
    /// announces nothing it decides since: no notification, no `store_failed` for the
    /// refused commits, nothing committed. The new active collector judges the same nodes.
    #[test]
    fn a_collector_fenced_out_of_its_lease_announces_nothing() {
        use crate::store::lease::{Fence, LeaseTry};
        // The blocking PostgreSQL client runs outside the runtime; only the store's calls
        // run inside.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = crate::store::engines::postgres_url();
        let metrics = Arc::new(Metrics::new());
        let store = Store::connect(&url, None, metrics.clone()).expect("store");
        let config = crate::store::sql::pg_config(&url, None).expect("url");
        let leases = Db::connect_reader(&config).expect("connect");
        let fence = Arc::new(Fence::new("active", "a"));
        store.set_fence(fence.clone());
        let LeaseTry::Taken { epoch, .. } = leases.try_lease("active", "a", 1).expect("try") else {
            panic!("a free lease");
        };
        fence.arm(epoch);
        let (mut core, mut rx, _events) = core(&store, &metrics);
        let mut ingest = ingest(&metrics);
        rt.block_on(async {
            linked_with(&mut core, &mut ingest, &["n1", "n2"]).await;
            core.commit_and_announce().await;
        });
        assert!(notices(&mut rx).is_empty());

        // Another collector takes the expired lease over; this one wakes and hears n2 die.
        std::thread::sleep(Duration::from_millis(20));
        let taken = leases.try_lease("active", "b", 60_000).expect("try");
        assert!(matches!(taken, LeaseTry::Taken { .. }), "{taken:?}");
        let will = r#"{"v":1,"state":"offline","boot":"b0000001","reason":"lost"}"#;
        rt.block_on(async {
            core.absorb(event(&mut ingest, "n2", "state", will, T0 + ms(40_000)));
            core.absorb(CoreEvent::LinkConfirmed {
                at: T0 + ms(40_001),
            });
            assert_eq!(
                core.monitor()
                    .tracker()
                    .node(&NodeId::new("n2").expect("id"))
                    .map(|v| v.state()),
                Some(Liveness::Offline),
                "judged as usual"
            );
            core.commit_and_announce().await;
            // Once more, as the next burst would.
            core.absorb(event(&mut ingest, "n1", "state", will, T0 + ms(41_000)));
            core.commit_and_announce().await;
        });
        assert!(fence.lost());
        assert_eq!(notices(&mut rx), [], "nothing announced once fenced out");
        assert!(!metrics.store_failing.load(Relaxed), "not a store failure");
        let n2 = leases
            .node(&NodeId::new("n2").expect("id"))
            .expect("read")
            .expect("n2");
        assert_eq!(n2.state, Liveness::Online, "nothing committed");
    }

    #[tokio::test]
    async fn a_full_store_alerts_at_once_keeps_judging_and_loses_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let metrics = Arc::new(Metrics::new());
        let store = file_store(dir.path(), &metrics);
        let (mut core, mut rx, _events) = core(&store, &metrics);
        let mut ingest = ingest(&metrics);
        linked_with(&mut core, &mut ingest, &["n1", "n2"]).await;
        core.commit_and_announce().await;
        assert!(notices(&mut rx).is_empty());

        // The disk is full: 300 faults cannot be committed.
        store
            .call(|db| db.cap_pages_for_tests(Some(0)))
            .await
            .expect("cap");
        let fault = |seq: u64| {
            format!(
                r#"{{"v":1,"boot":"b0000001","seq":{seq},"ts":{T0},"check":"amp",
                    "code":"C{seq:04}","severity":"warning","status":"raised",
                    "message":"{}"}}"#,
                "x".repeat(200)
            )
        };
        for seq in 1..=300 {
            core.absorb(event(&mut ingest, "n1", "fault", &fault(seq), T0 + ms(200)));
        }
        core.commit_and_announce().await;
        let first = notices(&mut rx);
        assert_eq!(
            first
                .iter()
                .filter(|(r, _)| r == "store_failed")
                .collect::<Vec<_>>(),
            [&("store_failed".to_owned(), AlertStatus::Firing)],
            "store_failed notified without a commit"
        );
        assert!(metrics.store_failing.load(Relaxed));
        assert!(metrics.store_pending_writes.load(Relaxed) >= 300);
        assert!(!core.monitor().tracker().is_blind(), "judging goes on");

        // n2 dies meanwhile: its offline reaches the outputs during the outage.
        let will = r#"{"v":1,"state":"offline","boot":"b0000001","reason":"lost"}"#;
        core.absorb(event(&mut ingest, "n2", "state", will, T0 + ms(40_000)));
        core.absorb(CoreEvent::LinkConfirmed {
            at: T0 + ms(40_001),
        });
        core.commit_and_announce().await;
        assert_eq!(
            notices(&mut rx),
            [("node_offline".to_owned(), AlertStatus::Firing)]
        );
        let n2 = NodeId::new("n2").expect("id");
        let stored = store.node(n2.clone()).await.expect("q").expect("n2");
        assert_eq!(stored.state, Liveness::Online, "not committed yet");

        // Space again: the next try commits the whole backlog, then store_failed resolves.
        store
            .call(|db| db.cap_pages_for_tests(None))
            .await
            .expect("uncap");
        core.last_try = UnixMillis::EPOCH;
        core.commit_and_announce().await;
        assert_eq!(
            notices(&mut rx),
            [("store_failed".to_owned(), AlertStatus::Resolved)]
        );
        assert!(!metrics.store_failing.load(Relaxed));
        assert_eq!(metrics.store_pending_writes.load(Relaxed), 0);
        let n1 = NodeId::new("n1").expect("id");
        assert_eq!(store.faults(n1, false).await.expect("q").len(), 300);
        let stored = store.node(n2.clone()).await.expect("q").expect("n2");
        assert_eq!(stored.state, Liveness::Offline);
        let history = store
            .node_history(n2, UnixMillis::EPOCH, UnixMillis::MAX)
            .await
            .expect("q");
        assert!(history.iter().any(|t| t.to == Liveness::Offline));
        let alerts = store.alerts(None, 1_000).await.expect("q");
        let rules = |rule: &str, status| {
            alerts
                .iter()
                .filter(|a| a.rule.as_str() == rule && a.status == status)
                .count()
        };
        assert_eq!(rules("store_failed", AlertStatus::Resolved), 1);
        assert_eq!(rules("node_offline", AlertStatus::Firing), 1);
        assert_eq!(metrics.store_backlog_dropped[2].load(Relaxed), 0);
    }

    #[tokio::test]
    async fn a_backlog_over_its_bound_drops_the_newest_faults_first_and_counts_them() {
        let dir = tempfile::tempdir().expect("dir");
        let metrics = Arc::new(Metrics::new());
        let store = file_store(dir.path(), &metrics);
        let (core, _rx, _events) = core(&store, &metrics);
        let mut core = core.with_store_safety(500, None);
        let mut ingest = ingest(&metrics);
        core.restore(T0).await.expect("restore");
        core.absorb(born(&mut ingest, "n1"));
        core.commit_and_announce().await;
        store
            .call(|db| db.cap_pages_for_tests(Some(0)))
            .await
            .expect("cap");
        for seq in 1..=800u64 {
            let f = format!(
                r#"{{"v":1,"boot":"b0000001","seq":{seq},"ts":{T0},"check":"amp",
                    "code":"C{seq:04}","severity":"warning","status":"raised"}}"#
            );
            core.absorb(event(&mut ingest, "n1", "fault", &f, T0 + ms(200)));
        }
        core.commit_and_announce().await;
        assert!(metrics.store_failing.load(Relaxed));
        assert_eq!(core.batch.len(), 500);
        let dropped: u64 = metrics
            .store_backlog_dropped
            .iter()
            .map(|c| c.load(Relaxed))
            .sum();
        assert!(dropped >= 300, "{dropped}");
        assert!(
            !core.batch.alerts.is_empty(),
            "alerts are kept before faults"
        );
        assert!(
            metrics
                .render()
                .contains("alarmnet_store_backlog_dropped_total{kind=\"faults\"}")
        );
    }

    #[tokio::test]
    async fn wills_are_judged_only_once_an_echo_confirms_the_link() {
        let metrics = Arc::new(Metrics::new());
        let store =
            Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
        let (mut core, mut rx, _events) = core(&store, &metrics);
        let mut ingest = ingest(&metrics);
        linked_with(&mut core, &mut ingest, &["n1", "n2"]).await;
        let will = r#"{"v":1,"state":"offline","boot":"b0000001","reason":"lost"}"#;
        let state = |core: &Core, n: &str| {
            let node = NodeId::new(n).expect("id");
            core.monitor().tracker().node(&node).map(|v| v.state())
        };
        for n in ["n1", "n2"] {
            let hb = format!(
                r#"{{"v":1,"boot":"b0000001","seq":1,"ts":{}}}"#,
                T0 + ms(39_000)
            );
            core.absorb(event(&mut ingest, n, "hb", &hb, T0 + ms(39_000)));
        }
        // A wave just before the connection is lost: blind from the first Will, nobody judged.
        core.absorb(event(&mut ingest, "n1", "state", will, T0 + ms(40_000)));
        core.absorb(event(&mut ingest, "n2", "state", will, T0 + ms(40_001)));
        core.absorb(CoreEvent::BrokerLost {
            at: T0 + ms(40_010),
        });
        core.commit_and_announce().await;
        assert_eq!(state(&core, "n1"), Some(Liveness::Online));
        assert_eq!(state(&core, "n2"), Some(Liveness::Online));
        let Notice::Alert(blind) = rx.try_recv().expect("collector_blind") else {
            panic!("not an alert notice");
        };
        assert_eq!(blind.rule.as_str(), "collector_blind");
        assert_eq!(
            blind.started_at,
            T0 + ms(40_000),
            "blind from the first Will of the wave"
        );
        assert!(rx.try_recv().is_none(), "nothing but collector_blind");

        // Back: a Will queued for the session while the collector was away is the backlog.
        core.absorb(CoreEvent::BrokerConnected {
            at: T0 + ms(45_000),
            session_present: true,
        });
        core.absorb(event(&mut ingest, "n1", "state", will, T0 + ms(45_001)));
        core.absorb(CoreEvent::LinkConfirmed {
            at: T0 + ms(45_002),
        });
        assert_eq!(
            state(&core, "n1"),
            Some(Liveness::Online),
            "re-judged by timeout"
        );

        // Past the nodes' grace (3 × 10 s after the reconnection), a Will on a confirmed link
        // is judged at its arrival; live evidence supersedes one.
        core.absorb(event(&mut ingest, "n2", "state", will, T0 + ms(80_000)));
        core.absorb(event(&mut ingest, "n1", "state", will, T0 + ms(80_000)));
        let hb = format!(
            r#"{{"v":1,"boot":"b0000001","seq":2,"ts":{}}}"#,
            T0 + ms(80_001)
        );
        core.absorb(event(&mut ingest, "n1", "hb", &hb, T0 + ms(80_001)));
        assert_eq!(state(&core, "n2"), Some(Liveness::Online), "held");
        core.absorb(CoreEvent::LinkConfirmed {
            at: T0 + ms(80_003),
        });
        assert_eq!(state(&core, "n2"), Some(Liveness::Offline));
        assert_eq!(state(&core, "n1"), Some(Liveness::Online), "reconnected");
        let node = NodeId::new("n2").expect("id");
        let since = core.monitor().tracker().node(&node).map(|v| v.since());
        assert_eq!(since, Some(T0 + ms(80_000)), "judged at the Will's arrival");
    }

    #[tokio::test]
    async fn silence_is_judged_only_as_far_as_the_broker_was_heard() {
        let metrics = Arc::new(Metrics::new());
        let store =
            Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
        let (mut core, _rx, _events) = core(&store, &metrics);
        let mut ingest = ingest(&metrics);
        core.restore(T0).await.expect("restore");
        core.absorb(CoreEvent::BrokerConnected {
            at: T0,
            session_present: false,
        });
        core.absorb(born(&mut ingest, "n1"));
        let node = NodeId::new("n1").expect("id");
        let state = |core: &Core| core.monitor().tracker().node(&node).map(|v| v.state());
        // Nothing heard from the broker after T0 + 100: a minute later nobody is judged (the
        // silence may be the collector's own link).
        core.tick(T0 + ms(60_000));
        assert_eq!(state(&core), Some(Liveness::Online));
        assert_eq!(
            core.next_wake(),
            None,
            "no liveness wake-up past the last sign"
        );
        // A link check's echo at T0 + 60 s: the broker was delivering, the node was silent.
        core.absorb(CoreEvent::LinkConfirmed {
            at: T0 + ms(60_000),
        });
        core.tick(T0 + ms(60_000));
        assert_eq!(state(&core), Some(Liveness::Offline));
    }

    #[tokio::test]
    async fn a_silent_node_goes_offline_after_commit_and_is_notified_once() {
        let metrics = Arc::new(Metrics::new());
        let store =
            Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
        let (mut core, mut rx, events) = core(&store, &metrics);
        let mut ingest = ingest(&metrics);
        core.restore(T0).await.expect("restore");
        core.absorb(CoreEvent::BrokerConnected {
            at: T0,
            session_present: false,
        });
        core.absorb(born(&mut ingest, "n1"));
        let hb = format!(
            r#"{{"v":1,"boot":"b0000001","seq":1,"ts":{}}}"#,
            T0 + ms(150)
        );
        core.absorb(event(&mut ingest, "n1", "hb", &hb, T0 + ms(150)));
        core.commit_and_announce().await;
        core.flush_seen_now().await;
        let node = NodeId::new("n1").expect("id");
        let rec = store.node(node.clone()).await.expect("q").expect("stored");
        assert_eq!(rec.state, Liveness::Online);
        assert_eq!(rec.last_seen, T0 + ms(150));
        assert!(rx.try_recv().is_none(), "nothing to notify yet");

        // Silence for 3 heartbeat intervals (and past the start grace): offline.
        let mut now = T0 + ms(150);
        while core.monitor().tracker().node(&node).map(|v| v.state()) != Some(Liveness::Offline) {
            let next = core.monitor().next_deadline().expect("a deadline");
            assert!(next <= T0 + ms(600_000), "no offline within 10 min");
            now = next.max(now + ms(1));
            let out = core.monitor.tick(now);
            core.take(out);
        }
        core.commit_and_announce().await;
        let rec = store.node(node.clone()).await.expect("q").expect("stored");
        assert_eq!(rec.state, Liveness::Offline);
        let Notice::Alert(alert) = rx.try_recv().expect("notified") else {
            panic!("not an alert notice");
        };
        assert_eq!(alert.rule.as_str(), "node_offline");
        assert_eq!(alert.status, AlertStatus::Firing);
        assert!(rx.try_recv().is_none(), "exactly one notification");
        let stored = store
            .alerts(Some(AlertStatus::Firing), 10)
            .await
            .expect("q");
        assert_eq!(stored.len(), 1);
        let sub = events.subscribe(Some(&events.id_of(0)));
        let kinds: Vec<&str> = sub.replay.iter().map(|e| e.kind.as_str()).collect();
        assert!(
            kinds.contains(&"state") && kinds.contains(&"alert"),
            "{kinds:?}"
        );

        // Nothing logged a delivery (no output task here): a restart sends the stored
        // notice again, the same notification under the same outbox id.
        let notice = alert.notice.expect("stored in the outbox");
        let (mut again, mut rx2, _) = self::core(&store, &metrics);
        again.restore(now + ms(1_000)).await.expect("restore");
        let sent: Vec<_> = std::iter::from_fn(|| rx2.try_recv())
            .filter_map(|n| match n {
                Notice::Alert(o) => Some(o),
                Notice::Resume(_) => None,
            })
            .collect();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            (sent[0].notice, &sent[0].alert),
            (Some(notice), &alert.alert)
        );

        // Once an attempt ended it, a restart restores the offline node and its alert and
        // notifies nothing again.
        let attempt = crate::store::NotificationAttempt {
            alert_id: alert.id,
            alert_started_at: alert.started_at,
            status: alert.status,
            output: "probe".into(),
            attempt: 1,
            at: now,
            ok: true,
            error: None,
            notice: Some(notice),
            done: true,
        };
        store.record_notification(attempt).await.expect("log");
        let (mut again, mut rx2, _) = self::core(&store, &metrics);
        again.restore(now + ms(2_000)).await.expect("restore");
        assert!(
            again.monitor().tracker().contains(&node),
            "the node is restored"
        );
        while let Some(notice) = rx2.try_recv() {
            assert!(
                matches!(notice, Notice::Resume(_)),
                "no new notification after a restart: {notice:?}"
            );
        }
    }

    /// Keeps tokio from advancing paused time on its own while it lives, so time moves only
    /// when the test advances it. Needed because the store answers from its own thread,
    /// which tokio cannot see: left alone, paused time would jump from timer to timer while
    /// the core waits for a commit. (An open `spawn_blocking` task holds auto-advance off.)
    struct HoldTime(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

    fn hold_time() -> HoldTime {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        HoldTime(tx)
    }

    /// Lets the core finish what it was woken for: it runs until it waits for the store,
    /// and a round trip queued behind its own comes back after it.
    async fn settle(store: &Store) {
        for _ in 0..3 {
            tokio::task::yield_now().await;
            store.call(|_| Ok(())).await.expect("store");
        }
        tokio::task::yield_now().await;
    }

    /// The whole shell on paused time: events on the core's channel, a link that confirms
    /// the broker every 5 s, and no heartbeat after the first. The core's timers and its
    /// clock both follow tokio's, so the node goes offline three heartbeat intervals later
    /// and the alert leaves through the outputs without any real waiting.
    #[tokio::test(start_paused = true)]
    async fn run_judges_a_silent_node_offline_on_paused_time() {
        let _hold = hold_time();
        let clock = crate::model::tokio_clock(T0);
        let metrics = Arc::new(Metrics::new());
        let store =
            Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
        let (core, mut rx, _events) = core(&store, &metrics);
        let mut core = core.with_clock(clock.clone());
        let mut ingest = ingest(&metrics);
        core.restore(clock()).await.expect("restore");

        let (tx, events_rx) = mpsc::channel(16);
        let (_control, control_rx) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(core.run(events_rx, control_rx, shutdown.clone()));
        let hb = format!(r#"{{"v":1,"boot":"b0000001","seq":1,"ts":{}}}"#, clock());
        for event in [
            CoreEvent::BrokerConnected {
                at: clock(),
                session_present: false,
            },
            event(&mut ingest, "n1", "birth", &birth("n1"), clock()),
            event(&mut ingest, "n1", "hb", &hb, clock()),
        ] {
            tx.send(event).await.expect("core running");
        }
        let last_heard = clock();
        let link = tokio::spawn({
            let (tx, clock) = (tx.clone(), clock.clone());
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    if tx
                        .send(CoreEvent::LinkConfirmed { at: clock() })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });

        let notice = loop {
            settle(&store).await;
            if let Some(notice) = rx.try_recv() {
                break notice;
            }
            assert!(clock() < T0 + ms(600_000), "no alert within 10 minutes");
            tokio::time::advance(Duration::from_secs(1)).await;
        };
        let Notice::Alert(alert) = notice else {
            panic!("not an alert notice: {notice:?}");
        };
        assert_eq!(alert.rule, RuleKind::NodeOffline);
        assert_eq!(alert.status, AlertStatus::Firing);
        assert_eq!(alert.subject.node().map(NodeId::as_str), Some("n1"));
        // Offline three 10 s heartbeat intervals after the last heartbeat, never sooner,
        // and judged within a link check of it.
        let silence = alert.started_at.millis_since(last_heard);
        assert!(
            (30_000..=36_000).contains(&silence),
            "offline after {silence} ms"
        );
        assert!(
            clock().millis_since(last_heard) <= 36_000,
            "judged {} ms late",
            clock().millis_since(last_heard)
        );

        shutdown.cancel();
        running.await.expect("the core stops cleanly");
        link.abort();
        let node = NodeId::new("n1").expect("id");
        let rec = store.node(node).await.expect("q").expect("stored");
        assert_eq!(
            rec.state,
            Liveness::Offline,
            "committed before it was announced"
        );
    }
}
