//! [`Monitor`]: the liveness tracker and the alert engine wired together, so the I/O shell
//! feeds one object and handles one [`Output`] per call.
//!
//! What the caller does with every [`Output`], in this order:
//! 1. commit `transitions` and every `alerts[i].alert` (history; upsert the alert by id
//!    and `started_at`) to the store;
//! 2. announce the transitions (event stream, time series);
//! 3. for each change with `notify == true`, send `alert.to_notification()` to the outputs
//!    (`$alerts`: retained while firing; on resolve the `resolved` notification, then an
//!    empty retained payload).
//!
//! And around it: call [`Monitor::tick`] at [`Monitor::next_deadline`] (or every second),
//! [`Monitor::broker_lost`] / [`Monitor::broker_connected`] on the connection's edges, and
//! at start `new` → `restore_*` → [`Monitor::finish_restore`].

use alarmnet_protocol::{Birth, Fault, Heartbeat, Message, NodeId, NodePath, State, TestReceipt};
use serde::{Deserialize, Serialize};

use super::AlertChange;
use super::config::AlertsConfig;
use super::engine::{AckError, BlindCause, Engine};
use crate::liveness::{Change, LivenessConfig, NodeIdx, RestoredNode, SeqInfo, Tracker};
use crate::model::{Alert, AlertId, Silence, SilenceId, Transition, UnixMillis};

/// The settings of liveness and alerts (`[liveness]` and `[alerts]` in the config file).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    pub liveness: LivenessConfig,
    pub alerts: AlertsConfig,
}

impl MonitorConfig {
    /// Every problem with these settings, empty when they are usable.
    pub fn problems(&self) -> Vec<String> {
        let mut p = self.liveness.problems();
        p.extend(self.alerts.problems());
        p
    }
}

/// What one call changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Output {
    /// Node state transitions (effective states, `maintenance` included), oldest first.
    pub transitions: Vec<Transition>,
    /// Alert changes, in the order they happened.
    pub alerts: Vec<AlertChange>,
}

impl Output {
    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty() && self.alerts.is_empty()
    }
}

/// Liveness tracker + alert engine. See the module documentation for the caller's duties.
#[derive(Debug)]
pub struct Monitor {
    tracker: Tracker,
    engine: Engine,
}

impl Monitor {
    /// A monitor started at `now` (the start grace runs from `now`). Check
    /// [`MonitorConfig::problems`] first.
    pub fn new(config: MonitorConfig, now: UnixMillis) -> Self {
        Self {
            tracker: Tracker::new(&config.liveness, now),
            engine: Engine::new(config.alerts),
        }
    }

    /// The same monitor for the collectors of region shard `name` (see
    /// [`Engine::with_scope`]).
    pub fn with_scope(self, name: Option<String>) -> Self {
        let Monitor { tracker, engine } = self;
        Monitor {
            tracker,
            engine: engine.with_scope(name),
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The earliest time [`Monitor::tick`] may have work (may be early, never late).
    pub fn next_deadline(&self) -> Option<UnixMillis> {
        match (self.tracker.next_deadline(), self.engine.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- start -----

    /// Restores a node from the store (before [`Monitor::finish_restore`]).
    pub fn restore_node(&mut self, node: RestoredNode) {
        self.tracker.restore(node);
    }

    /// Restores a firing alert from the store (after the nodes, before
    /// [`Monitor::finish_restore`]). Resolved alerts are ignored.
    pub fn restore_alert(&mut self, alert: Alert) {
        self.engine.restore_alert(&self.tracker, alert);
    }

    /// Restores a silence from the store (before [`Monitor::finish_restore`]).
    pub fn restore_silence(&mut self, silence: Silence, now: UnixMillis) -> Output {
        self.add_silence(silence, now)
    }

    /// Reconciles the restored state: ends maintenance no silence covers, resolves restored
    /// alerts whose condition is gone, raises missing ones, notifies what is due.
    pub fn finish_restore(&mut self, now: UnixMillis) -> Output {
        let mut alerts = Vec::new();
        let mut maint = Vec::new();
        self.engine
            .finish_restore(&self.tracker, now, &mut alerts, &mut maint);
        let stale: Vec<NodeIdx> = self
            .tracker
            .nodes()
            .filter(|v| v.in_maintenance() && !self.engine.covers(*v))
            .filter_map(|v| self.tracker.idx(v.id()))
            .collect();
        maint.extend(stale.into_iter().map(|idx| (idx, false)));
        let mut changes = Vec::new();
        self.apply_maintenance(&maint, now, &mut changes);
        self.finish(changes, alerts)
    }

    // ----- messages -----

    /// Any decoded node message. `retained` is the MQTT retain flag of the delivery.
    /// Commands and collector/alert topics are not the monitor's business (empty output).
    pub fn on_message(
        &mut self,
        path: &NodePath,
        message: &Message,
        retained: bool,
        now: UnixMillis,
    ) -> Output {
        match message {
            Message::Birth(b) => self.on_birth(path, b, retained, now),
            Message::State(s) => self.on_state(path, s, retained, now),
            Message::Heartbeat(hb) => self.on_heartbeat(path, hb, now),
            Message::Fault(f) => self.on_fault(path, f, now),
            Message::Test(t) => self.on_test(path, t, now),
            _ => Output::default(),
        }
    }

    pub fn on_birth(
        &mut self,
        path: &NodePath,
        birth: &Birth,
        retained: bool,
        now: UnixMillis,
    ) -> Output {
        let mut changes = Vec::new();
        let mut alerts = Vec::new();
        let idx = self.tracker.birth(path, birth, retained, now, &mut changes);
        self.engine.on_changes(&self.tracker, &changes, &mut alerts);
        if !retained {
            self.engine
                .clock(&self.tracker, idx, birth.ts, now, &mut alerts);
        }
        let view = self.tracker.view(idx);
        let want = self.engine.covers(view);
        if want != view.in_maintenance() {
            self.tracker.maintenance(idx, want, now, &mut changes);
        }
        let transitions = self.tracker.transitions(&changes);
        Output {
            transitions,
            alerts,
        }
    }

    pub fn on_state(
        &mut self,
        path: &NodePath,
        state: &State,
        retained: bool,
        now: UnixMillis,
    ) -> Output {
        let mut changes = Vec::new();
        self.tracker
            .state(&path.node, state, retained, now, &mut changes);
        self.finish(changes, Vec::new())
    }

    /// A heartbeat; unregistered nodes (no birth yet) are ignored: see
    /// [`Tracker::contains`] and ask the agent for a `rebirth`.
    pub fn on_heartbeat(&mut self, path: &NodePath, hb: &Heartbeat, now: UnixMillis) -> Output {
        let mut changes = Vec::new();
        let mut alerts = Vec::new();
        let Some((idx, seq)) = self.tracker.heartbeat(&path.node, hb, now, &mut changes) else {
            return Output::default();
        };
        let live_ts = (!hb.replay).then_some(hb.ts);
        self.sequenced_alerts(&changes, idx, seq, live_ts, now, &mut alerts);
        self.engine
            .heartbeat(&self.tracker, idx, hb, now, &mut alerts);
        Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        }
    }

    pub fn on_fault(&mut self, path: &NodePath, fault: &Fault, now: UnixMillis) -> Output {
        let mut changes = Vec::new();
        let mut alerts = Vec::new();
        let Some((idx, seq)) = self.tracker.sequenced(
            &path.node,
            &fault.boot,
            fault.seq,
            fault.replay,
            now,
            &mut changes,
        ) else {
            return Output::default();
        };
        let live_ts = (!fault.replay).then_some(fault.ts);
        self.sequenced_alerts(&changes, idx, seq, live_ts, now, &mut alerts);
        self.engine
            .fault(&self.tracker, idx, fault, now, &mut alerts);
        Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        }
    }

    pub fn on_test(&mut self, path: &NodePath, test: &TestReceipt, now: UnixMillis) -> Output {
        let mut changes = Vec::new();
        let mut alerts = Vec::new();
        let Some((idx, seq)) = self.tracker.sequenced(
            &path.node,
            &test.boot,
            test.seq,
            test.replay,
            now,
            &mut changes,
        ) else {
            return Output::default();
        };
        let live_ts = (!test.replay).then_some(test.ts);
        self.sequenced_alerts(&changes, idx, seq, live_ts, now, &mut alerts);
        Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        }
    }

    /// The rules every sequenced message (heartbeat, fault, test) feeds once the tracker has
    /// taken it: liveness changes, sequence gaps, and clock skew for live (`live_ts`) messages.
    fn sequenced_alerts(
        &mut self,
        changes: &[Change],
        idx: NodeIdx,
        seq: SeqInfo,
        live_ts: Option<u64>,
        now: UnixMillis,
        alerts: &mut Vec<AlertChange>,
    ) {
        self.engine.on_changes(&self.tracker, changes, alerts);
        self.engine.sequence(&self.tracker, idx, seq, now, alerts);
        if let Some(ts) = live_ts {
            self.engine.clock(&self.tracker, idx, ts, now, alerts);
        }
    }

    // ----- connection and time -----

    /// The broker connection is down: due deadlines are judged, then nobody is judged, and
    /// `collector_blind` fires.
    pub fn broker_lost(&mut self, now: UnixMillis) -> Output {
        self.go_blind(BlindCause::Broker, now)
    }

    /// The collector cannot watch (`cause`): due deadlines are judged, then nobody is
    /// judged, and `collector_blind` fires. [`Monitor::broker_connected`] ends it.
    pub fn go_blind(&mut self, cause: BlindCause, now: UnixMillis) -> Output {
        let mut changes = Vec::new();
        let mut alerts = Vec::new();
        self.tracker.lost(now, &mut changes);
        self.engine.on_changes(&self.tracker, &changes, &mut alerts);
        self.engine.blind(&self.tracker, cause, now, &mut alerts);
        self.finish_alerts(changes, alerts)
    }

    /// The store cannot commit: `store_failed` fires. Judging goes on.
    pub fn store_failed(&mut self, error: &str, now: UnixMillis) -> Output {
        let mut alerts = Vec::new();
        self.engine
            .store_failed(&self.tracker, error, now, &mut alerts);
        Output {
            transitions: Vec::new(),
            alerts,
        }
    }

    /// The store commits again: `store_failed` resolves.
    pub fn store_recovered(&mut self, now: UnixMillis) -> Output {
        let mut alerts = Vec::new();
        self.engine.store_recovered(&self.tracker, now, &mut alerts);
        Output {
            transitions: Vec::new(),
            alerts,
        }
    }

    /// This collector took over from the active collector `from` (see
    /// [`crate::ha`]): one `collector_failover` notice.
    pub fn failover(&mut self, from: &str, to: &str, epoch: i64, now: UnixMillis) -> Output {
        let mut alerts = Vec::new();
        self.engine.failover(from, to, epoch, now, &mut alerts);
        Output {
            transitions: Vec::new(),
            alerts,
        }
    }

    /// The broker connection is up (also the first connection after start): every node
    /// gets a full timeout from `now`; `collector_blind` resolves.
    pub fn broker_connected(&mut self, now: UnixMillis) -> Output {
        let mut alerts = Vec::new();
        self.tracker.broker_connected(now);
        self.engine.connected(&self.tracker, now, &mut alerts);
        Output {
            transitions: Vec::new(),
            alerts,
        }
    }

    /// Judges every deadline due at `now`: liveness timeouts, group waits, quiet periods,
    /// silence windows.
    pub fn tick(&mut self, now: UnixMillis) -> Output {
        self.tick_judging_until(now, now)
    }

    /// Like [`Monitor::tick`], but liveness deadlines are judged only up to `heard`: the
    /// last moment the broker is known to have been delivering to the collector. A node's
    /// silence after that may be the collector's own (a link that only looks up).
    pub fn tick_judging_until(&mut self, now: UnixMillis, heard: UnixMillis) -> Output {
        let mut changes = Vec::new();
        let mut alerts = Vec::new();
        let mut maint = Vec::new();
        self.tracker.tick_into(heard.min(now), &mut changes);
        self.engine.on_changes(&self.tracker, &changes, &mut alerts);
        self.engine
            .tick(&self.tracker, now, &mut alerts, &mut maint);
        self.apply_maintenance(&maint, now, &mut changes);
        Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        }
    }

    /// The nodes a tick at `now` would judge late or offline ([`Tracker::due`]), liveness
    /// judged up to `heard` as in [`Monitor::tick_judging_until`].
    pub fn due(&mut self, now: UnixMillis, heard: UnixMillis) -> Vec<NodeId> {
        self.tracker.due(heard.min(now))
    }

    /// Forgets a node another collector serves now ([`Tracker::forget`]).
    pub fn forget(&mut self, node: &NodeId) -> bool {
        self.tracker.forget(node)
    }

    // ----- operators -----

    /// Acknowledges a firing alert by id.
    pub fn ack(
        &mut self,
        id: AlertId,
        by: &str,
        comment: Option<&str>,
        now: UnixMillis,
    ) -> Result<AlertChange, AckError> {
        self.engine.ack(id, by, comment, now)
    }

    /// Adds (or replaces, by id) a silence. Nodes it covers while its window is open are in
    /// `maintenance` (the returned transitions); a future window opens on a later tick.
    pub fn add_silence(&mut self, silence: Silence, now: UnixMillis) -> Output {
        let mut alerts = Vec::new();
        let mut maint = Vec::new();
        self.engine
            .add_silence(&self.tracker, silence, now, &mut alerts, &mut maint);
        let mut changes = Vec::new();
        self.apply_maintenance(&maint, now, &mut changes);
        Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        }
    }

    /// Ends a silence now; `None` if no such silence is known (or it already ended).
    pub fn expire_silence(&mut self, id: SilenceId, now: UnixMillis) -> Option<Output> {
        let mut alerts = Vec::new();
        let mut maint = Vec::new();
        if !self
            .engine
            .expire_silence(&self.tracker, id, now, &mut alerts, &mut maint)
        {
            return None;
        }
        let mut changes = Vec::new();
        self.apply_maintenance(&maint, now, &mut changes);
        Some(Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        })
    }

    /// A region's rollup of counted kinds (sirens) changed: re-evaluates `readiness_low`.
    pub(crate) fn readiness_region(
        &mut self,
        region: u32,
        sirens: &crate::readiness::tracker::Counts,
        now: UnixMillis,
    ) -> Output {
        let mut alerts = Vec::new();
        self.engine
            .readiness_region(&self.tracker, region, sirens, now, &mut alerts);
        Output {
            transitions: Vec::new(),
            alerts,
        }
    }

    // ----- internals -----

    fn apply_maintenance(
        &mut self,
        maint: &[(NodeIdx, bool)],
        now: UnixMillis,
        changes: &mut Vec<Change>,
    ) {
        for &(idx, on) in maint {
            self.tracker.maintenance(idx, on, now, changes);
        }
    }

    fn finish(&mut self, changes: Vec<Change>, mut alerts: Vec<AlertChange>) -> Output {
        self.engine.on_changes(&self.tracker, &changes, &mut alerts);
        Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        }
    }

    fn finish_alerts(&mut self, changes: Vec<Change>, alerts: Vec<AlertChange>) -> Output {
        Output {
            transitions: self.tracker.transitions(&changes),
            alerts,
        }
    }
}
