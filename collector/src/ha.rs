//! Active and standby: several collectors on one PostgreSQL store, one of them active.
//!
//! The active collector holds the store's lease ([`crate::store::lease`]) and renews it
//! every third of `[store] lease`; it alone judges liveness, writes history, notifies,
//! runs drills and retention. A standby keeps its own MQTT session (so the broker keeps
//! delivering to it), keeps what it hears warm ([`Warm`]), and serves the API and the
//! console from the shared store. It tries the lease several times a lease period; once
//! the active collector has stopped renewing (stopped, crashed, stalled or cut off) for
//! the whole lease, it takes it over:
//!
//! - it restores the alerts, silences and nodes the active one committed, as a restart
//!   does, then replays what it heard ([`Warm`]): every node's latest heartbeat, the
//!   faults and test receipts of the last minutes (what the old active committed of these
//!   is recognised by sequence number and dropped), and the births and states heard since
//!   the old active's last sign of life; so no alert is lost, and a node is judged offline
//!   only by what it has really not said;
//! - liveness counts from the time the standby's own broker link has been up, not from
//!   the takeover: a node that went silent during the handover is declared offline when
//!   its own timeout ends, once;
//! - notifications the old active stored but did not finish delivering are sent (the
//!   outbox, [`crate::outputs::Outputs::redeliver`]); those it delivered are not sent
//!   again;
//! - one `collector_failover` notice says who took over from whom.
//!
//! An active collector that cannot renew its lease for a whole lease period, or finds it
//! taken (it stalled), stops with an error: a supervisor restarts it, as a standby. Its
//! writes are fenced in the meantime ([`crate::store::lease::Fence`]): nothing it decides
//! after losing the lease is committed.
//!
//! With SQLite the collector is alone ([`Role::Single`]) and none of this runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alarmnet_protocol::NodeId;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api::{ControlError, ControlRequest};
use crate::ingest::{CoreEvent, NodeMessage};
use crate::model::UnixMillis;
use crate::store::lease::{Fence, LeaseTry};
use crate::store::{Db, StoreError};

/// The lease the collectors of one store compete for: one for the whole network, or one
/// per region shard (`[store] shard`).
pub fn lease_name(shard: Option<&str>) -> String {
    match shard {
        None => "active".into(),
        Some(shard) => format!("active/{shard}"),
    }
}

/// Node messages other than heartbeats are kept this long on a standby for the replay.
const KEEP: Duration = Duration::from_secs(300);

/// What this collector is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Alone on its store (SQLite): always active, no lease.
    Single,
    /// Waiting for the lease; `active` holds it (when known).
    Standby { active: Option<String> },
    /// Holds the lease under `epoch`; `took_over_from` held it before this collector.
    Active {
        epoch: i64,
        took_over_from: Option<String>,
    },
    /// Held the lease and lost it (why): the collector must stop.
    Lost(String),
}

impl Role {
    /// The role's name in `/readyz` and `/metrics`.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Single | Role::Active { .. } => "active",
            Role::Standby { .. } => "standby",
            Role::Lost(_) => "lost",
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self, Role::Single | Role::Active { .. })
    }
}

/// A watch on this collector's role.
pub type Roles = watch::Receiver<Role>;

/// A role that never changes (SQLite).
pub fn single() -> Roles {
    let (tx, rx) = watch::channel(Role::Single);
    // The receiver keeps the last value after the sender is gone.
    drop(tx);
    rx
}

/// Waits until this collector is active; `None` when shutdown comes first or the role
/// was lost.
pub async fn until_active(roles: &mut Roles, shutdown: &CancellationToken) -> Option<Role> {
    loop {
        let role = roles.borrow_and_update().clone();
        match role {
            Role::Lost(_) => return None,
            r if r.is_active() => return Some(r),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            changed = roles.changed() => {
                if changed.is_err() {
                    // No more changes: the last role stands.
                    let last = roles.borrow().clone();
                    return last.is_active().then_some(last);
                }
            }
        }
    }
}

/// The lease loop's settings.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The lease ([`lease_name`]).
    pub name: String,
    /// This collector's name in the lease (its MQTT client id).
    pub holder: String,
    /// How long the lease lasts without renewal.
    pub ttl: Duration,
}

impl LeaseSettings {
    /// The active collector renews this often.
    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// A standby tries this often: a small part of the lease, so that it takes over soon
    /// after the lease ends.
    fn try_every(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// Starts the lease loop on a thread of its own with its own connection (`open`), and
/// returns the role it keeps current, and the thread. The loop ends at `shutdown` (giving
/// the lease up when it holds it) or when the lease is lost.
pub fn start(
    open: impl Fn() -> Result<Db, StoreError> + Send + 'static,
    settings: LeaseSettings,
    fence: Arc<Fence>,
    shutdown: CancellationToken,
) -> std::io::Result<(Roles, std::thread::JoinHandle<()>)> {
    let (tx, rx) = watch::channel(Role::Standby { active: None });
    let thread = std::thread::Builder::new()
        .name("alarmnet-lease".into())
        .spawn(move || lease_loop(open, &settings, &fence, &tx, &shutdown))?;
    Ok((rx, thread))
}

fn lease_loop(
    open: impl Fn() -> Result<Db, StoreError>,
    s: &LeaseSettings,
    fence: &Fence,
    roles: &watch::Sender<Role>,
    shutdown: &CancellationToken,
) {
    let ttl_ms = i64::try_from(s.ttl.as_millis()).unwrap_or(i64::MAX);
    let mut db: Option<Db> = None;
    // Under which epoch this collector holds the lease, and when it last renewed it.
    let mut held: Option<(i64, Instant)> = None;
    loop {
        if shutdown.is_cancelled() {
            if let (Some(db), Some((epoch, _))) = (&db, held) {
                match db.release_lease(&s.name, &s.holder, epoch) {
                    Ok(()) => tracing::info!("active lease given up"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot give the active lease up; it expires by itself")
                    }
                }
            }
            return;
        }
        if db.is_none() {
            match open() {
                Ok(opened) => db = Some(opened),
                Err(e) => tracing::warn!(error = %e, "lease: cannot connect to the store"),
            }
        }
        if let Some((epoch, renewed)) = held {
            if fence.lost() {
                lose(
                    roles,
                    "a write found the active lease taken by another collector".into(),
                );
                return;
            }
            let outcome = match &db {
                Some(db) => db.renew_lease(&s.name, &s.holder, epoch, ttl_ms),
                None => Err(StoreError::Closed),
            };
            match outcome {
                Ok(true) => held = Some((epoch, Instant::now())),
                Ok(false) => {
                    lose(roles, "another collector holds the active lease".into());
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the active lease");
                    db = None;
                    if renewed.elapsed() >= s.ttl {
                        lose(
                            roles,
                            format!(
                                "could not renew the active lease for {} ({e})",
                                humantime::format_duration(s.ttl)
                            ),
                        );
                        return;
                    }
                }
            }
        } else if let Some(conn) = &db {
            match conn.try_lease(&s.name, &s.holder, ttl_ms) {
                Ok(LeaseTry::Taken { epoch, from }) => {
                    fence.arm(epoch);
                    held = Some((epoch, Instant::now()));
                    match &from {
                        Some(from) => tracing::warn!(epoch, %from, "took the active lease over"),
                        None => tracing::info!(epoch, "holding the active lease"),
                    }
                    roles.send_replace(Role::Active {
                        epoch,
                        took_over_from: from,
                    });
                }
                Ok(LeaseTry::Held { holder, .. }) => {
                    roles.send_if_modified(|role| {
                        let new = Role::Standby {
                            active: Some(holder),
                        };
                        let changed = *role != new;
                        if changed {
                            tracing::info!(role = ?new, "standby");
                        }
                        *role = new;
                        changed
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot try the active lease");
                    db = None;
                }
            }
        }
        let wait = if held.is_some() {
            s.renew_every()
        } else {
            s.try_every()
        };
        sleep_unless(wait, shutdown);
    }
}

fn lose(roles: &watch::Sender<Role>, why: String) {
    tracing::error!(reason = %why, "no longer the active collector");
    roles.send_replace(Role::Lost(why));
}

/// Sleeps `wait`, waking early at shutdown.
fn sleep_unless(wait: Duration, shutdown: &CancellationToken) {
    let end = Instant::now() + wait;
    while !shutdown.is_cancelled() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// What a standby heard, to be replayed when it takes over.
///
/// Design: what the old active committed must not be replayed as news. Heartbeats, faults
/// and test receipts carry sequence numbers, which the new active restores from the store
/// and drops duplicates by: they are kept (each node's latest heartbeat, the others of the
/// last [`KEEP`]) and replayed whole. Births and states carry none: only those heard after
/// the old active's last sign of life (less a margin) are replayed, so that an old
/// `online` state never undoes an `offline` the old active judged since.
#[derive(Debug, Default)]
pub struct Warm {
    /// Since when the broker link is up without a break (`None`: it is down).
    pub linked_since: Option<UnixMillis>,
    session_present: bool,
    /// When the link went down, if it is down.
    lost_at: Option<UnixMillis>,
    /// The last link check's echo.
    confirmed: Option<UnixMillis>,
    /// Each node's latest heartbeat.
    heartbeats: foldhash::HashMap<NodeId, CoreEvent>,
    /// Every other node message of the last [`KEEP`], in arrival order.
    recent: VecDeque<(UnixMillis, CoreEvent)>,
}

/// Births and states heard this long before the old active's last sign of life are
/// replayed too (its last second of work may not have been committed).
pub const REPLAY_MARGIN: Duration = Duration::from_secs(2);

impl Warm {
    /// Keeps what a takeover needs from `event`.
    pub fn absorb(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::BrokerConnected {
                at,
                session_present,
            } => {
                if self.linked_since.is_none() {
                    self.linked_since = Some(at);
                }
                self.session_present = session_present;
                self.lost_at = None;
            }
            CoreEvent::BrokerLost { at } => {
                self.linked_since = None;
                self.lost_at = Some(at);
            }
            CoreEvent::LinkConfirmed { at } => self.confirmed = Some(at),
            CoreEvent::Node {
                ref path,
                ref message,
                received_at,
                ..
            } => {
                if let NodeMessage::Heartbeat(_) = message {
                    self.heartbeats.insert(path.node.clone(), event);
                } else {
                    while self
                        .recent
                        .front()
                        .is_some_and(|(at, _)| *at + KEEP < received_at)
                    {
                        self.recent.pop_front();
                    }
                    self.recent.push_back((received_at, event));
                }
            }
        }
    }

    /// The events that bring a fresh core to what this standby knows, in order: the
    /// link's state, then the node messages and the last link check by arrival. Births
    /// and states only from `after` on (see [`Warm`]).
    pub fn replay(self, after: UnixMillis) -> Vec<CoreEvent> {
        let mut events = Vec::with_capacity(self.heartbeats.len() + self.recent.len() + 2);
        match (self.linked_since, self.lost_at) {
            (Some(at), _) => events.push(CoreEvent::BrokerConnected {
                at,
                session_present: self.session_present,
            }),
            (None, Some(at)) => events.push(CoreEvent::BrokerLost { at }),
            (None, None) => {}
        }
        let confirmed = self
            .confirmed
            .map(|at| (at, CoreEvent::LinkConfirmed { at }));
        let sequenced = |(at, e): &(UnixMillis, CoreEvent)| {
            *at >= after
                || matches!(
                    e,
                    CoreEvent::Node {
                        message: NodeMessage::Fault(_) | NodeMessage::Test(_),
                        ..
                    }
                )
        };
        let mut heard: Vec<(UnixMillis, CoreEvent)> = self
            .heartbeats
            .into_values()
            .map(|e| (received_at(&e), e))
            .chain(self.recent.into_iter().filter(sequenced))
            .chain(confirmed)
            .collect();
        // Stable: what arrived at one instant stays in arrival order.
        heard.sort_by_key(|(at, _)| *at);
        events.extend(heard.into_iter().map(|(_, e)| e));
        events
    }
}

fn received_at(event: &CoreEvent) -> UnixMillis {
    match event {
        CoreEvent::Node { received_at, .. } => *received_at,
        CoreEvent::BrokerConnected { at, .. }
        | CoreEvent::BrokerLost { at }
        | CoreEvent::LinkConfirmed { at } => *at,
    }
}

/// How often a standby or a region shard reads the readiness rollups from the store.
const BOARD_EVERY: Duration = Duration::from_secs(5);

/// A readiness page read from the store: a standby's (the rollups of what the active
/// collector stored), or any region shard's (the rollups of what every shard stored).
#[derive(Debug, Clone)]
pub struct StoreBoard {
    pub store: crate::store::Store,
    pub monitor: crate::alerts::MonitorConfig,
    pub readiness: crate::readiness::ReadinessConfig,
    pub board: crate::readiness::Board,
}

impl StoreBoard {
    /// Reads every node's liveness and readiness inputs from the store and publishes the
    /// rollups, as the active collector's core would after a restart.
    pub async fn refresh(&self, now: UnixMillis) -> Result<(), StoreError> {
        let nodes = self
            .store
            .read(|db| db.nodes(&crate::store::NodeFilter::default()))
            .await?;
        let mut monitor = crate::alerts::Monitor::new(self.monitor.clone(), now);
        for rec in nodes {
            monitor.restore_node(crate::pipeline::restored_node(rec));
        }
        let inputs = self.store.read(|db| db.readiness_inputs()).await?;
        let mut readiness = crate::readiness::ReadinessTracker::new(&self.readiness);
        for (node, restored) in inputs {
            readiness.restore(monitor.tracker(), &node, restored);
        }
        readiness.finish_restore(monitor.tracker(), now);
        self.board.publish(monitor.tracker(), &mut readiness);
        Ok(())
    }
}

impl StoreBoard {
    /// Refreshes the rollups every few seconds until `shutdown`: always on a region shard
    /// (`shard`), otherwise while this collector stands by (the active one's core
    /// publishes its own).
    pub async fn run(
        &self,
        clock: &crate::model::Clock,
        roles: Roles,
        shard: bool,
        shutdown: &CancellationToken,
    ) {
        let mut refresh = tokio::time::interval(BOARD_EVERY);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = refresh.tick() => {}
            }
            let standby = matches!(*roles.borrow(), Role::Standby { .. });
            if !(shard || standby) {
                continue;
            }
            if let Err(e) = self.refresh(clock()).await {
                tracing::warn!(error = %e, "cannot read readiness from the store");
            }
        }
    }
}

/// Runs the standby: keeps what ingest delivers warm and refuses operators' writes (they
/// go to the active collector) until this collector becomes active (its readiness page
/// comes from [`StoreBoard::run`]). Returns what it heard, or `None` at shutdown or when
/// the role was lost.
pub async fn stand_by(
    events: &mut mpsc::Receiver<CoreEvent>,
    control: &mut mpsc::Receiver<ControlRequest>,
    roles: &mut Roles,
    shutdown: &CancellationToken,
) -> Option<(Warm, Role)> {
    let mut warm = Warm::default();
    loop {
        let role = roles.borrow_and_update().clone();
        match role {
            Role::Lost(_) => return None,
            ref r if r.is_active() => return Some((warm, role)),
            _ => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            changed = roles.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            event = events.recv() => match event {
                Some(event) => warm.absorb(event),
                None => return None,
            },
            Some(request) = control.recv() => refuse(request, &role),
        }
    }
}

/// Answers an operator's write on a standby.
fn refuse(request: ControlRequest, role: &Role) {
    let active = match role {
        Role::Standby {
            active: Some(holder),
        } => format!(" ({holder})"),
        _ => String::new(),
    };
    let error = || {
        ControlError::Unavailable(format!(
            "this collector is the standby: send it to the active collector{active}"
        ))
    };
    match request {
        ControlRequest::Ack { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        ControlRequest::AddSilence { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        ControlRequest::EndSilence { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alarmnet_protocol::{Heartbeat, NodePath};

    fn path(node: &str) -> NodePath {
        NodePath::new(
            "r".parse().expect("region"),
            "s".parse().expect("site"),
            node.parse().expect("node"),
        )
    }

    fn node_event(node: &str, at: u64, message: NodeMessage) -> CoreEvent {
        CoreEvent::Node {
            path: path(node),
            message,
            received_at: UnixMillis::from_millis(at),
            retained: false,
        }
    }

    #[test]
    fn a_standby_replays_heartbeats_faults_and_only_recent_states() {
        let hb = |seq| {
            NodeMessage::Heartbeat(
                serde_json::from_value::<Heartbeat>(serde_json::json!({
                    "v": 1, "ts": 1, "seq": seq, "boot": "0000000000000b01"
                }))
                .expect("heartbeat"),
            )
        };
        let state = || {
            NodeMessage::State(
                serde_json::from_value(serde_json::json!({
                    "v": 1, "ts": 1, "state": "online", "boot": "0000000000000b01"
                }))
                .expect("state"),
            )
        };
        let mut warm = Warm::default();
        warm.absorb(CoreEvent::BrokerConnected {
            at: UnixMillis::from_millis(1_000),
            session_present: false,
        });
        warm.absorb(node_event("a", 2_000, hb(1)));
        warm.absorb(node_event("b", 2_500, state()));
        warm.absorb(node_event("a", 3_000, hb(2)));
        // A reconnection keeps the first link time only after a loss.
        warm.absorb(CoreEvent::BrokerConnected {
            at: UnixMillis::from_millis(3_500),
            session_present: true,
        });
        warm.absorb(CoreEvent::LinkConfirmed {
            at: UnixMillis::from_millis(4_000),
        });
        warm.absorb(node_event("b", 4_500, state()));
        let late = 4_500 + KEEP.as_millis() as u64;
        warm.absorb(node_event("c", late, state()));
        assert_eq!(warm.linked_since, Some(UnixMillis::from_millis(1_000)));
        let replay = warm.replay(UnixMillis::from_millis(4_500));
        let at: Vec<u64> = replay.iter().map(|e| received_at(e).as_millis()).collect();
        // The state of b at 2 500 is older than KEEP before c's (gone), and before the
        // cut: only the one at 4 500 is replayed.
        assert_eq!(at, vec![1_000, 3_000, 4_000, 4_500, late]);
        let CoreEvent::Node {
            message: NodeMessage::Heartbeat(h),
            ..
        } = &replay[1]
        else {
            panic!("the heartbeat first: {replay:?}");
        };
        assert_eq!(h.seq, 2, "the latest heartbeat of a");
    }
}
