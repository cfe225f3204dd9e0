//! The MQTT session of one node, as the protocol orders it: connect with a Last Will, then
//! birth, state online, the spool drained oldest first (`replay: true`), then live traffic;
//! commands; heartbeats; reconnection with backoff and broker failover; a clean stop.
//!
//! # Tasks and channels
//! ```text
//!  checks ──FaultEvent (bounded)──┐
//!  command/test tasks ──Done(32)──┤
//!  control (sim, 8) ──────────────┼──> session task ──requests(WINDOW+16)──> rumqttc
//!  poller task ──rumqttc events(64)┘         │                               EventLoop
//!                                           spool (disk or memory)       (owned by poller)
//! ```
//! The protocol's state (connection phase, in-flight window, command admission) is the pure
//! [`ProtocolState`]; this module is its I/O shell: it owns the rumqttc client and event loop,
//! the spool, the seen-ids file and the test tasks, feeds the state events with the current
//! time and carries out what it decides.
//!
//! Design: every `hb`, `fault` and `test` is appended to the spool first and published from
//! it; a record leaves the spool only on the broker's PUBACK for its packet id. Each
//! connection gets a fresh rumqttc client and event loop with a clean session, so nothing
//! unacknowledged hides in rumqttc's queues across a reconnect (rumqttc drops them when
//! the session is not resumed anyway): the spool is the single source of truth, and the
//! mapping from packet id to record is exact because rumqttc reports one
//! `Outgoing::Publish(pkid)` per request, in the order the requests were made.

use std::collections::BTreeSet;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alarmnet_protocol::payload::{LongText, ShortText};
use alarmnet_protocol::{
    Birth, BootId, CmdAction, CmdId, Command, Fault, FaultStatus, Heartbeat, Message, MetricName,
    Metrics, Name, NodeState, NodeTopic, OfflineReason, Prefix, State, TestReceipt, TestResult, V1,
    decode, encode,
};
use alarmnet_runtime::{Backoff, Jitter};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{Broker, Identity, MqttSettings};
use crate::health::{FaultEvent, Health, TestOutcome, TestRunner};
use crate::protocol_state::disk::{DISK_RETRY, FAULT_CHECK, FAULT_CODE, FAULT_SEVERITY};
use crate::protocol_state::{
    Admission, CommandSettings, Decision, ProtocolState, Refused, SeenIds, Tracked, WINDOW,
};
use crate::seen_file::SeenStore;
use crate::spool::{RecordKind, Spool};
/// A connection that lasted this long resets the reconnect backoff when it drops.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);
/// How long a clean stop waits for the broker to acknowledge the `offline` state.
const SHUTDOWN_ACK_WAIT: Duration = Duration::from_secs(2);

/// What the session needs besides its health sources.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub identity: Identity,
    pub mqtt: MqttSettings,
    pub check_names: Vec<Name>,
    /// Self-tests that run on their own schedule: `(test kind, period)`.
    pub test_schedules: Vec<(Name, Duration)>,
    /// Where `uptime_s` comes from: the host (`/proc/uptime`) or a virtual start time.
    pub uptime: Uptime,
    /// The agent version announced in birth.
    pub agent_version: String,
    /// `[commands]`: the trusted collector keys and the admission rules.
    pub commands: CommandSettings,
    /// Test kinds that commands may not start (`remote = false`).
    pub local_only_tests: BTreeSet<Name>,
}

/// The source of a heartbeat's `uptime_s`.
#[derive(Debug, Clone, Copy)]
pub enum Uptime {
    /// The host's uptime, from `/proc/uptime`.
    Host,
    /// Seconds since this instant (simulated nodes).
    Since(Instant),
}

/// Orders from outside the protocol: the simulator's scripted failures.
#[derive(Debug, Clone)]
pub enum Control {
    /// Drop the connection without DISCONNECT (the broker publishes the Will), stay away
    /// for this long while still spooling, then reconnect.
    Kill { down_for: Duration },
    /// Stop everything (no pings, no heartbeats) with the connection left open, as SIGSTOP
    /// would; the broker publishes the Will after 1.5 × keep-alive.
    Freeze { duration: Duration },
    /// Run a test as if a drill command had asked for it.
    RunTest { test: Name, drill: Option<CmdId> },
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("TLS file {path}: {source}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a client certificate needs mqtt.ca_file")]
    ClientCertWithoutCa,
}

/// The handles a session is built from.
pub struct Sources {
    pub health: Arc<dyn Health>,
    pub tests: Arc<dyn TestRunner>,
    pub faults: mpsc::Receiver<FaultEvent>,
    /// Optional scripted control (the simulator); `None` for the real agent.
    pub control: Option<mpsc::Receiver<Control>>,
    /// Where the seen command ids are kept, and what was there at start.
    pub seen_store: SeenStore,
    pub seen: SeenIds,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("control", &self.control.is_some())
            .finish_non_exhaustive()
    }
}

/// A finished command or test, reported back to the session task.
#[derive(Debug)]
enum Done {
    Checked,
    Tested {
        test: Name,
        drill: Option<CmdId>,
        outcome: TestOutcome,
    },
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// `connected_for`: how long the connection was up, `None` if it never came up.
    Lost {
        connected_for: Option<Duration>,
    },
    Killed {
        down_for: Duration,
    },
}

struct Topics {
    birth: String,
    state: String,
    hb: String,
    fault: String,
    test: String,
    cmd: String,
}

/// The session of one node. Build with [`Session::new`], run with [`Session::run`].
pub struct Session {
    cfg: SessionConfig,
    boot: BootId,
    topics: Topics,
    prefix: Prefix,
    spool: Spool,
    seq: u64,
    health: Arc<dyn Health>,
    tests: Arc<dyn TestRunner>,
    faults: mpsc::Receiver<FaultEvent>,
    faults_open: bool,
    control: Option<mpsc::Receiver<Control>>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    transport: Transport,
    heartbeat: tokio::time::Interval,
    schedules: Vec<(Name, Duration, Instant)>,
    state: ProtocolState,
    seen_store: SeenStore,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("node", &self.cfg.identity.path)
            .field("boot", &self.boot)
            .field("seq", &self.seq)
            .field("spooled", &self.spool.len())
            .finish()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn host_uptime() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(secs as u64)
}

/// Installs the process-wide rustls crypto provider (ring) once.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn transport(mqtt: &MqttSettings) -> Result<Transport, SessionError> {
    if !mqtt.brokers.iter().any(|b| b.tls) {
        return Ok(Transport::Tcp);
    }
    install_crypto_provider();
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| SessionError::TlsFile {
            path: p.display().to_string(),
            source,
        })
    };
    let client_auth = match &mqtt.tls.client {
        Some((cert, key)) => Some((read(cert)?, read(key)?)),
        None => None,
    };
    Ok(match (&mqtt.tls.ca_file, client_auth) {
        (Some(ca), client_auth) => Transport::tls_with_config(TlsConfiguration::Simple {
            ca: read(ca)?,
            alpn: None,
            client_auth,
        }),
        (None, None) => Transport::tls_with_default_config(),
        // Config validation refuses this; never connect without the configured certificate.
        (None, Some(_)) => return Err(SessionError::ClientCertWithoutCa),
    })
}

impl Session {
    /// A session for one node, spooling into `spool`.
    pub fn new(cfg: SessionConfig, spool: Spool, sources: Sources) -> Result<Self, SessionError> {
        let prefix = cfg.mqtt.prefix.clone();
        let path = &cfg.identity.path;
        let topics = Topics {
            birth: path.topic(&prefix, NodeTopic::Birth),
            state: path.topic(&prefix, NodeTopic::State),
            hb: path.topic(&prefix, NodeTopic::Heartbeat),
            fault: path.topic(&prefix, NodeTopic::Fault),
            test: path.topic(&prefix, NodeTopic::Test),
            cmd: path.topic(&prefix, NodeTopic::Command),
        };
        let (done_tx, done_rx) = mpsc::channel(32);
        let transport = transport(&cfg.mqtt)?;
        // The first heartbeat of a connection is sent right after its birth (see `on_event`).
        let period = cfg.mqtt.heartbeat_interval;
        let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let now = Instant::now();
        let schedules = cfg
            .test_schedules
            .iter()
            .map(|(name, period)| (name.clone(), *period, now + *period))
            .collect();
        let state = ProtocolState::new(Admission::new(
            cfg.commands.clone(),
            cfg.local_only_tests.clone(),
            sources.seen,
        ));
        Ok(Self {
            boot: BootId::from_random(rand::random()),
            topics,
            prefix,
            spool,
            seq: 0,
            health: sources.health,
            tests: sources.tests,
            faults: sources.faults,
            faults_open: true,
            control: sources.control,
            done_tx,
            done_rx,
            transport,
            heartbeat,
            schedules,
            state,
            seen_store: sources.seen_store,
            cfg,
        })
    }

    /// This run's boot id.
    pub fn boot(&self) -> &BootId {
        &self.boot
    }

    /// Runs until `shutdown` is cancelled: then publishes `offline`/`shutdown` if connected,
    /// flushes the spool and returns.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SessionError> {
        info!(node = %self.cfg.identity.path, boot = %self.boot, spooled = self.spool.len(), "session starting");
        if self.cfg.commands.refuses_everything() {
            warn!(node = %self.cfg.identity.path, "no [commands] keys and allow_unsigned = false: every command will be refused");
        }
        let mut backoff = Backoff::new(self.cfg.mqtt.reconnect_min, self.cfg.mqtt.reconnect_max)
            .with_jitter(Jitter::Full);
        let brokers = self.cfg.mqtt.brokers.clone();
        let mut index = 0;
        loop {
            let broker = &brokers[index % brokers.len()];
            let wait = match self.connection(broker, &shutdown).await? {
                Ended::Shutdown => break,
                Ended::Lost { connected_for } => {
                    match connected_for {
                        // A connection that held: come back quickly (still jittered), to
                        // the first broker. One dropped at once (a broker that accepts and
                        // kicks, or another client with the same id) keeps backing off.
                        Some(up) if up >= STABLE_CONNECTION => {
                            backoff.reset();
                            index = 0;
                        }
                        Some(_) => {}
                        None => index += 1,
                    }
                    backoff.next_delay()
                }
                Ended::Killed { down_for } => down_for,
            };
            debug!(node = %self.cfg.identity.path, delay = ?wait, "reconnecting after delay");
            if self.offline_for(wait, &shutdown).await? {
                break;
            }
        }
        if let Err(e) = self.spool.sync() {
            error!(node = %self.cfg.identity.path, error = %e, "cannot sync the spool on stopping");
        }
        if self.spool.memory_only() > 0 {
            warn!(node = %self.cfg.identity.path, lost = self.spool.memory_only(), "records held in memory only (the spool disk failed) are lost with this stop");
        }
        info!(node = %self.cfg.identity.path, spooled = self.spool.len(), "session stopped");
        Ok(())
    }

    fn options(&self, broker: &Broker) -> MqttOptions {
        let mut o = MqttOptions::new(
            self.cfg.identity.path.node.as_str(),
            broker.host.clone(),
            broker.port,
        );
        o.set_keep_alive(self.cfg.mqtt.keep_alive);
        o.set_clean_session(true);
        o.set_request_channel_capacity(WINDOW + 16);
        o.set_max_packet_size(64 * 1024, 64 * 1024);
        o.set_pending_throttle(Duration::ZERO);
        if let Some((user, pass)) = &self.cfg.mqtt.credentials {
            o.set_credentials(user.clone(), pass.expose().to_owned());
        }
        let will = self.state_payload(NodeState::Offline, Some(OfflineReason::Lost), None);
        o.set_last_will(LastWill::new(
            &self.topics.state,
            will,
            QoS::AtLeastOnce,
            true,
        ));
        if broker.tls {
            o.set_transport(self.transport.clone());
        }
        o
    }

    fn state_payload(
        &self,
        state: NodeState,
        reason: Option<OfflineReason>,
        ts: Option<u64>,
    ) -> Vec<u8> {
        encode(&Message::State(State {
            v: V1,
            state,
            boot: self.boot.clone(),
            ts,
            reason,
        }))
    }

    fn birth_payload(&self) -> Vec<u8> {
        let id = &self.cfg.identity;
        encode(&Message::Birth(Birth {
            v: V1,
            boot: self.boot.clone(),
            ts: now_ms(),
            node: id.path.node.clone(),
            site: id.path.site.clone(),
            region: id.path.region.clone(),
            kind: id.kind.clone(),
            hb_interval_s: self.cfg.mqtt.heartbeat_interval.as_secs_f64(),
            name: id.name.clone(),
            lat: id.lat,
            lon: id.lon,
            model: id.model.clone(),
            firmware: id.firmware.clone(),
            agent: Some(ShortText::truncated(format!(
                "alarmnet-agent {}",
                self.cfg.agent_version
            ))),
            checks: self.cfg.check_names.iter().take(64).cloned().collect(),
            tags: id.tags.clone(),
        }))
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }

    fn spool_append(&mut self, kind: RecordKind, payload: Vec<u8>) -> Result<(), SessionError> {
        if self.spool.append(kind, payload).is_none() {
            warn!(node = %self.cfg.identity.path, ?kind, dropped = self.spool.dropped().total(), "spool full: record dropped");
        }
        self.spool_checked()
    }

    /// Raises or clears the spool fault after a spool operation, as its disk failed or
    /// recovered; the fault goes the normal way (spooled, or held in memory, and sent).
    fn spool_checked(&mut self) -> Result<(), SessionError> {
        let failure = self.spool.failure();
        let Some(change) = self.state.disk_mut().observe(failure, Instant::now()) else {
            return Ok(());
        };
        match change.status {
            FaultStatus::Raised => {
                error!(node = %self.cfg.identity.path, error = failure.unwrap_or_default(), memory_only = self.spool.memory_only(), "spool cannot write: sending from memory, retrying the disk every {:?}", DISK_RETRY);
            }
            FaultStatus::Cleared => {
                info!(node = %self.cfg.identity.path, write_errors = self.spool.write_errors(), "spool writes to disk again");
            }
        }
        let (Ok(check), Ok(code)) = (Name::new(FAULT_CHECK), Name::new(FAULT_CODE)) else {
            return Ok(());
        };
        self.produce_fault(FaultEvent {
            ts_ms: now_ms(),
            check,
            code,
            severity: FAULT_SEVERITY,
            status: change.status,
            message: change.message,
        })
    }

    /// Tries the failing spool disk again (see [`Spool::retry_disk`]).
    fn retry_spool(&mut self) -> Result<(), SessionError> {
        if !self.spool.retry_disk() {
            debug!(node = %self.cfg.identity.path, error = self.spool.failure().unwrap_or_default(), "spool disk still failing");
            self.state.disk_mut().retry_failed(Instant::now());
        }
        self.spool_checked()
    }

    fn produce_heartbeat(&mut self) -> Result<(), SessionError> {
        let snap = self.health.snapshot();
        let mut metrics = snap.metrics;
        let spool = [
            ("spool_records", self.spool.len() as f64),
            ("spool_dropped", self.spool.dropped().total() as f64),
            ("spool_write_errors", self.spool.write_errors() as f64),
            ("spool_memory_only", self.spool.memory_only() as f64),
        ];
        for (name, value) in spool.into_iter().chain(self.state.admission().metrics()) {
            if let Ok(name) = MetricName::new(name) {
                let _ = metrics.insert(name, value);
            }
        }
        let mut faults = snap.faults;
        faults.extend(self.state.disk().fault_key());
        let uptime_s = match self.cfg.uptime {
            Uptime::Host => host_uptime(),
            Uptime::Since(t) => Some(t.elapsed().as_secs()),
        };
        let hb = Heartbeat {
            v: V1,
            boot: self.boot.clone(),
            seq: self.next_seq(),
            ts: now_ms(),
            uptime_s,
            metrics,
            checks: Some(snap.counts),
            faults: Some(faults),
            replay: false,
        };
        self.spool_append(RecordKind::Heartbeat, encode(&Message::Heartbeat(hb)))
    }

    fn produce_fault(&mut self, ev: FaultEvent) -> Result<(), SessionError> {
        let fault = Fault {
            v: V1,
            boot: self.boot.clone(),
            seq: self.next_seq(),
            ts: ev.ts_ms,
            check: ev.check,
            code: ev.code,
            severity: ev.severity,
            status: ev.status,
            message: (!ev.message.is_empty()).then(|| LongText::truncated(ev.message)),
            replay: false,
        };
        info!(node = %self.cfg.identity.path, fault = %fault.key(), status = ?fault.status, seq = fault.seq, "fault");
        self.spool_append(RecordKind::Fault, encode(&Message::Fault(fault)))
    }

    fn produce_receipt(
        &mut self,
        test: Name,
        drill: Option<CmdId>,
        outcome: TestOutcome,
    ) -> Result<(), SessionError> {
        let receipt = TestReceipt {
            v: V1,
            boot: self.boot.clone(),
            seq: self.next_seq(),
            ts: now_ms(),
            drill,
            test,
            result: outcome.result,
            duration_ms: Some(outcome.duration_ms),
            metrics: outcome.metrics,
            message: (!outcome.message.is_empty()).then(|| LongText::truncated(outcome.message)),
            replay: false,
        };
        info!(node = %self.cfg.identity.path, test = %receipt.test, result = ?receipt.result, "test receipt");
        self.spool_append(RecordKind::Test, encode(&Message::Test(receipt)))
    }

    /// Starts a test that did not come through command admission (its schedule, or the
    /// simulator's control): at most one test of a kind runs at once. A schedule that finds
    /// its kind running skips this turn; a drill-like start is answered with an error.
    fn start_local_test(&mut self, test: Name, drill: Option<CmdId>) -> Result<(), SessionError> {
        if self.state.admission_mut().test_started(&test) {
            self.spawn_test(test, drill);
            return Ok(());
        }
        info!(node = %self.cfg.identity.path, %test, "a test of this kind is already running: not started again");
        match drill {
            Some(drill) => {
                let message = format!("a test of kind `{test}` is already running");
                self.produce_receipt(test, Some(drill), error_outcome(message))
            }
            None => Ok(()),
        }
    }

    /// Runs a test whose kind is already marked running.
    fn spawn_test(&self, test: Name, drill: Option<CmdId>) {
        let runner = self.tests.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            let outcome = runner.run(&test).await;
            let _ = tx
                .send(Done::Tested {
                    test,
                    drill,
                    outcome,
                })
                .await;
        });
    }

    fn start_check(&self) {
        let health = self.health.clone();
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            health.run_all_now().await;
            let _ = tx.send(Done::Checked).await;
        });
    }

    fn on_done(&mut self, done: Done) -> Result<(), SessionError> {
        match done {
            Done::Checked => self.produce_heartbeat(),
            Done::Tested {
                test,
                drill,
                outcome,
            } => {
                self.state.admission_mut().test_finished(&test);
                self.produce_receipt(test, drill, outcome)
            }
        }
    }

    fn next_schedule(&self) -> Option<Instant> {
        self.schedules.iter().map(|(_, _, due)| *due).min()
    }

    fn run_due_schedules(&mut self) -> Result<(), SessionError> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (name, period, next) in &mut self.schedules {
            if *next <= now {
                *next = now + *period;
                due.push(name.clone());
            }
        }
        for name in due {
            self.start_local_test(name, None)?;
        }
        Ok(())
    }

    /// Waits `wait` while disconnected, still producing and spooling. Returns true on shutdown.
    async fn offline_for(
        &mut self,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Result<bool, SessionError> {
        let mut deadline = Instant::now() + wait;
        loop {
            let schedule = self.next_schedule();
            let disk_retry = self.state.disk().retry_at();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(true),
                _ = sleep_until(deadline) => return Ok(false),
                _ = self.heartbeat.tick() => self.produce_heartbeat()?,
                ev = self.faults.recv(), if self.faults_open => match ev {
                    Some(ev) => self.produce_fault(ev)?,
                    None => self.faults_open = false,
                },
                Some(done) = self.done_rx.recv() => self.on_done(done)?,
                _ = sleep_until(schedule.unwrap_or(deadline)), if schedule.is_some() => {
                    self.run_due_schedules()?;
                }
                _ = sleep_until(disk_retry.unwrap_or(deadline)), if disk_retry.is_some() => {
                    self.retry_spool()?;
                }
                ctrl = recv_control(&mut self.control) => match ctrl {
                    Control::RunTest { test, drill } => self.start_local_test(test, drill)?,
                    Control::Freeze { duration } => sleep(duration).await,
                    // Already away: stay away at least that long from now.
                    Control::Kill { down_for } => {
                        deadline = deadline.max(Instant::now() + down_for);
                    }
                },
            }
        }
    }

    /// One connection attempt and, if it succeeds, the connection's life.
    async fn connection(
        &mut self,
        broker: &Broker,
        shutdown: &CancellationToken,
    ) -> Result<Ended, SessionError> {
        let (client, eventloop) = AsyncClient::new(self.options(broker), WINDOW + 16);
        let (events_tx, mut events) = mpsc::channel(64);
        let (pause_tx, pause_rx) = watch::channel(false);
        let poller = tokio::spawn(poll_events(eventloop, events_tx, pause_rx));
        let conn = Connection { client };
        self.state.connecting();
        let ended = loop {
            let schedule = self.next_schedule();
            let disk_retry = self.state.disk().retry_at();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if self.state.is_connected() {
                        self.clean_stop(&conn, &mut events).await;
                    }
                    break Ended::Shutdown;
                }
                ev = events.recv() => match ev {
                    Some(Ok(ev)) => self.on_event(&conn, ev, broker)?,
                    Some(Err(e)) => {
                        if self.state.is_connected() {
                            warn!(node = %self.cfg.identity.path, %broker, error = %e, "connection lost");
                        } else {
                            debug!(node = %self.cfg.identity.path, %broker, error = %e, "connect failed");
                        }
                        break Ended::Lost { connected_for: self.state.connection_ended(Instant::now()) };
                    }
                    None => break Ended::Lost { connected_for: self.state.connection_ended(Instant::now()) },
                },
                _ = self.heartbeat.tick() => {
                    self.produce_heartbeat()?;
                    self.pump(&conn);
                }
                ev = self.faults.recv(), if self.faults_open => {
                    match ev {
                        Some(ev) => self.produce_fault(ev)?,
                        None => self.faults_open = false,
                    }
                    self.pump(&conn);
                }
                Some(done) = self.done_rx.recv() => {
                    self.on_done(done)?;
                    self.pump(&conn);
                }
                _ = sleep_until(schedule.unwrap_or_else(Instant::now)), if schedule.is_some() => {
                    self.run_due_schedules()?;
                    self.pump(&conn);
                }
                _ = sleep_until(disk_retry.unwrap_or_else(Instant::now)), if disk_retry.is_some() => {
                    self.retry_spool()?;
                    self.pump(&conn);
                }
                ctrl = recv_control(&mut self.control) => match ctrl {
                    Control::Kill { down_for } => {
                        info!(node = %self.cfg.identity.path, "killed: dropping the connection");
                        break Ended::Killed { down_for };
                    }
                    Control::Freeze { duration } => {
                        info!(node = %self.cfg.identity.path, ?duration, "frozen");
                        let _ = pause_tx.send(true);
                        sleep(duration).await;
                        let _ = pause_tx.send(false);
                    }
                    Control::RunTest { test, drill } => {
                        self.start_local_test(test, drill)?;
                        self.pump(&conn);
                    }
                },
            }
        };
        self.state.connection_ended(Instant::now());
        // Dropping the event loop closes the socket without DISCONNECT, unless `clean_stop`
        // sent one: the broker publishes the Will.
        poller.abort();
        let _ = poller.await;
        Ok(ended)
    }

    fn on_event(
        &mut self,
        conn: &Connection,
        ev: Event,
        broker: &Broker,
    ) -> Result<(), SessionError> {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                info!(node = %self.cfg.identity.path, %broker, spooled = self.spool.len(), "connected");
                self.state.connected(Instant::now(), self.spool.last_id());
                for topic in [&self.topics.cmd, &self.topics.state] {
                    let _ = conn.client.try_subscribe(topic.as_str(), QoS::AtLeastOnce);
                }
                self.publish_presence(conn);
                // A live heartbeat at once: the node is reachable now, whatever the spool
                // still has to replay.
                self.produce_heartbeat()?;
                self.heartbeat.reset();
                self.pump(conn);
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.state.outgoing(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(t) = self.state.acked(ack.pkid) {
                    if let Tracked::Record(id) = t {
                        self.spool.remove(id);
                        self.spool_checked()?;
                    }
                    self.pump(conn);
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                self.on_publish(conn, &p.topic, &p.payload, p.retain)?
            }
            _ => {}
        }
        Ok(())
    }

    fn publish_presence(&mut self, conn: &Connection) {
        let birth = self.birth_payload();
        conn.publish(
            &mut self.state,
            &self.topics.birth,
            true,
            birth,
            Tracked::Control,
        );
        self.publish_online(conn);
    }

    /// The retained `online` state of this boot.
    fn publish_online(&mut self, conn: &Connection) {
        let online = self.state_payload(NodeState::Online, None, Some(now_ms()));
        conn.publish(
            &mut self.state,
            &self.topics.state,
            true,
            online,
            Tracked::Control,
        );
    }

    fn on_publish(
        &mut self,
        conn: &Connection,
        topic: &str,
        payload: &[u8],
        retained: bool,
    ) -> Result<(), SessionError> {
        let message = match decode(&self.prefix, topic, payload) {
            Ok(env) => env.message,
            Err(e) => {
                warn!(node = %self.cfg.identity.path, %topic, error = %e, "ignored an invalid message");
                return Ok(());
            }
        };
        match message {
            Message::Command(command) if topic == self.topics.cmd => {
                self.on_command(conn, &command, retained)?;
            }
            // A Will (ours from an old connection, or a previous boot's) arriving live while
            // we are connected: the node is online, say so again. Retained copies delivered
            // on subscribe are already superseded by the `online` sent right after.
            Message::State(s)
                if topic == self.topics.state
                    && !retained
                    && s.state == NodeState::Offline
                    && s.reason != Some(OfflineReason::Shutdown) =>
            {
                warn!(node = %self.cfg.identity.path, stale_boot = %s.boot, "stale Will seen: publishing online again");
                self.publish_online(conn);
            }
            _ => {}
        }
        Ok(())
    }

    /// Admits or refuses a command (see [`crate::protocol_state::admission`]); the seen ids
    /// are saved before anything runs.
    fn on_command(
        &mut self,
        conn: &Connection,
        command: &Command,
        retained: bool,
    ) -> Result<(), SessionError> {
        let verdict = self
            .state
            .on_command(&self.topics.cmd, command, retained, now_ms());
        if verdict.remembered {
            if let Err(e) = self.seen_store.save(self.state.admission().seen()) {
                error!(node = %self.cfg.identity.path, error = %e, "cannot save the seen command ids: a replay after a restart would not be recognised by id");
            }
        }
        match verdict.decision {
            Decision::Run { id, action } => {
                info!(node = %self.cfg.identity.path, cmd = %id, ?action, "command accepted");
                match action {
                    CmdAction::Rebirth => self.publish_presence(conn),
                    CmdAction::Check => self.start_check(),
                    CmdAction::Test { test } => self.spawn_test(test, Some(id)),
                }
            }
            Decision::Refuse(Refused {
                id,
                refusal,
                detail,
                answer,
                log,
            }) => {
                if let Some(unlogged) = log {
                    if unlogged > 0 {
                        warn!(node = %self.cfg.identity.path, unlogged, "more commands were refused than logged");
                    }
                    warn!(node = %self.cfg.identity.path, cmd = %id, reason = refusal.reason(), %detail, "command refused");
                }
                if let Some(test) = answer {
                    let message = format!("refused ({}): {detail}", refusal.reason());
                    self.produce_receipt(test, Some(id), error_outcome(message))?;
                    self.pump(conn);
                }
            }
        }
        Ok(())
    }

    /// Hands spool records to rumqttc, oldest first, while the window has room.
    fn pump(&mut self, conn: &Connection) {
        while self.state.may_send_record() {
            let (id, record) = match self.spool.next_after(self.state.window().cursor()) {
                Ok(Some(next)) => next,
                Ok(None) => break,
                Err(e) => {
                    warn!(node = %self.cfg.identity.path, error = %e, "spool: cannot read a record back; retrying later");
                    break;
                }
            };
            let replay = self.state.window().is_replay(id);
            let payload = if replay {
                mark_replay(record.kind, &record.payload)
            } else {
                record.payload
            };
            let topic = match record.kind {
                RecordKind::Heartbeat => &self.topics.hb,
                RecordKind::Fault => &self.topics.fault,
                RecordKind::Test => &self.topics.test,
            };
            if !conn.publish(&mut self.state, topic, false, payload, Tracked::Record(id)) {
                break;
            }
        }
    }

    /// Publishes `offline`/`shutdown`, waits briefly for its PUBACK, then disconnects.
    async fn clean_stop(
        &mut self,
        conn: &Connection,
        events: &mut mpsc::Receiver<Result<Event, ConnectionError>>,
    ) {
        let offline = self.state_payload(
            NodeState::Offline,
            Some(OfflineReason::Shutdown),
            Some(now_ms()),
        );
        if !conn.publish(
            &mut self.state,
            &self.topics.state,
            true,
            offline,
            Tracked::ShutdownState,
        ) {
            return;
        }
        let deadline = Instant::now() + SHUTDOWN_ACK_WAIT;
        let mut acked = false;
        while !acked {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                _ = sleep_until(deadline) => break,
            };
            match ev {
                Some(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => self.state.outgoing(pkid),
                Some(Ok(Event::Incoming(Packet::PubAck(ack)))) => {
                    match self.state.acked(ack.pkid) {
                        Some(Tracked::ShutdownState) => acked = true,
                        Some(Tracked::Record(id)) => {
                            self.spool.remove(id);
                        }
                        _ => {}
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        if !acked {
            warn!(node = %self.cfg.identity.path, "no acknowledgement of the offline state before stopping");
        }
        let _ = conn.client.try_disconnect();
        // Let the poller write the DISCONNECT; the event loop reports it as an error.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(Ok(Event::Outgoing(Outgoing::Disconnect))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                _ = sleep_until(deadline) => break,
            }
        }
    }
}

/// One connection's client; its bookkeeping is the [`ProtocolState`]'s window.
struct Connection {
    client: AsyncClient,
}

impl Connection {
    /// Hands a publish to rumqttc and records it in `state`; false when the request
    /// channel is full (the caller retries later).
    fn publish(
        &self,
        state: &mut ProtocolState,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
        t: Tracked,
    ) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                state.requested(t);
                true
            }
            Err(e) => {
                debug!(error = %e, "request channel full; retrying later");
                false
            }
        }
    }
}

/// The receipt of a test that could not run.
fn error_outcome(message: String) -> TestOutcome {
    TestOutcome {
        result: TestResult::Error,
        duration_ms: 0,
        metrics: Metrics::new(),
        message,
    }
}

/// Re-encodes a spooled payload with `replay: true`.
fn mark_replay(kind: RecordKind, payload: &[u8]) -> Vec<u8> {
    fn with<T: serde::de::DeserializeOwned + serde::Serialize>(
        payload: &[u8],
        set: fn(&mut T),
    ) -> Option<Vec<u8>> {
        let mut m: T = serde_json::from_slice(payload).ok()?;
        set(&mut m);
        serde_json::to_vec(&m).ok()
    }
    let out = match kind {
        RecordKind::Heartbeat => with::<Heartbeat>(payload, |m| m.replay = true),
        RecordKind::Fault => with::<Fault>(payload, |m| m.replay = true),
        RecordKind::Test => with::<TestReceipt>(payload, |m| m.replay = true),
    };
    out.unwrap_or_else(|| payload.to_vec())
}

async fn recv_control(control: &mut Option<mpsc::Receiver<Control>>) -> Control {
    match control {
        Some(rx) => match rx.recv().await {
            Some(c) => c,
            None => {
                *control = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

/// Polls the event loop continuously (as rumqttc requires) and forwards every event; stops
/// after the first error, since each connection gets a fresh event loop. While `paused`,
/// nothing is polled: no pings, no reads (a frozen node).
async fn poll_events(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Result<Event, ConnectionError>>,
    mut paused: watch::Receiver<bool>,
) {
    loop {
        while *paused.borrow() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        let ev = eventloop.poll().await;
        let failed = ev.is_err();
        if tx.send(ev).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alarmnet_protocol::{FaultStatus, Severity};

    #[test]
    fn replay_marking_keeps_everything_else() {
        let fault = Fault {
            v: V1,
            boot: BootId::from_random(1),
            seq: 7,
            ts: 1_764_330_411_000,
            check: Name::new("amp").expect("name"),
            code: Name::new("NO_OUT").expect("name"),
            severity: Severity::Critical,
            status: FaultStatus::Raised,
            message: None,
            replay: false,
        };
        let bytes = encode(&Message::Fault(fault.clone()));
        let marked: Fault =
            serde_json::from_slice(&mark_replay(RecordKind::Fault, &bytes)).expect("decode");
        assert_eq!(
            marked,
            Fault {
                replay: true,
                ..fault
            }
        );
    }
}
