//! The core: the single owner of the collector's state, fed by ingest's bounded channel.
//!
//! It takes a burst of events at a time, lets the pure state machines decide (liveness,
//! alerts), commits everything the burst produced in **one** store transaction, and only
//! after the commit announces transitions and alert changes to the outputs. Heartbeats only
//! update an in-memory "last heard" map that is flushed to the store once a second, so the
//! heartbeat rate costs the store almost nothing.
//!
//! The liveness tracker and the alert engine plug in at the places marked `ENGINE:`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alarmnet_protocol::NodeId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ingest::{CoreEvent, NodeMessage};
use crate::metrics::Metrics;
use crate::model::{Alert, Millis, Transition};
use crate::outputs::Outputs;
use crate::store::{Store, StoreError, WriteBatch};

/// Most events folded into one batch (one transaction).
const MAX_BURST: usize = 4096;

/// How often "last heard" times reach the store.
const SEEN_FLUSH: Duration = Duration::from_secs(1);

/// The core task's state.
#[derive(Debug)]
pub struct Core {
    store: Store,
    outputs: Outputs,
    metrics: Arc<Metrics>,
    /// Last heard per node since the last flush.
    seen: HashMap<NodeId, Millis>,
    /// The writes of the burst being processed.
    batch: WriteBatch,
    /// Since when the broker connection is down (blind mode), if it is.
    blind_since: Option<Millis>,
    // ENGINE: `tracker: liveness::Tracker` and `engine: alerts::Engine` live here.
}

impl Core {
    pub fn new(store: Store, outputs: Outputs, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            outputs,
            metrics,
            seen: HashMap::new(),
            batch: WriteBatch::default(),
            blind_since: None,
        }
    }

    /// Restores what a restart must not forget: alerts that fire and were notified are
    /// handed to outputs that repeat them (no new notification is sent).
    // ENGINE: restore the tracker from `store.nodes(..)` and the engine from the active
    // alerts and silences here.
    pub async fn restore(&mut self) -> Result<(), StoreError> {
        let firing = self
            .store
            .alerts(Some(alarmnet_protocol::AlertStatus::Firing), usize::MAX)
            .await?;
        for alert in &firing {
            self.outputs.resume(alert);
        }
        if !firing.is_empty() {
            tracing::info!(alerts = firing.len(), "firing alerts restored");
        }
        Ok(())
    }

    /// Runs until the channel closes or `shutdown`; then flushes what is pending.
    pub async fn run(mut self, mut rx: mpsc::Receiver<CoreEvent>, shutdown: CancellationToken) {
        let mut flush = tokio::time::interval(SEEN_FLUSH);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
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
                _ = flush.tick() => {
                    self.flush_seen();
                    self.commit_and_announce().await;
                }
                // ENGINE: _ = sleep_until(tracker.next_deadline()) => {
                //     let t = tracker.tick(now); self.transitions(t);
                //     let a = engine.on_transitions(&t, now); self.alerts(a);
                //     self.commit_and_announce().await;
                // }
            }
        }
        self.flush_seen();
        self.commit_and_announce().await;
        tracing::info!("core stopped");
    }

    /// Folds one event into the current batch.
    pub fn absorb(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Node {
                path,
                message,
                received_at,
            } => {
                match message {
                    NodeMessage::Birth(birth) => {
                        // ENGINE: self.transitions(tracker.on_birth(&path, &birth, received_at))
                        self.batch.births.push((path.clone(), birth, received_at));
                    }
                    NodeMessage::State(_state) => {
                        // ENGINE: self.transitions(tracker.on_state(&path, &state, received_at))
                    }
                    NodeMessage::Heartbeat(_hb) => {
                        // ENGINE: self.transitions(tracker.on_heartbeat(&path, &hb, received_at))
                        // and engine.on_heartbeat(..) for metric thresholds, seq gaps, skew.
                    }
                    NodeMessage::Fault(fault) => {
                        // ENGINE: self.alerts(engine.on_fault(&path, &fault, received_at))
                        self.batch
                            .faults
                            .push((path.node.clone(), fault, received_at));
                    }
                    NodeMessage::Test(test) => {
                        self.batch
                            .tests
                            .push((path.node.clone(), test, received_at));
                    }
                }
                let at = self.seen.entry(path.node).or_insert(received_at);
                *at = (*at).max(received_at);
            }
            CoreEvent::BrokerConnected {
                at,
                session_present,
            } => {
                if let Some(since) = self.blind_since.take() {
                    tracing::info!(
                        blind_ms = at.saturating_sub(since),
                        session_present,
                        "broker back"
                    );
                }
                // ENGINE: self.transitions(tracker.broker_connected(at)); alerts likewise.
            }
            CoreEvent::BrokerLost { at } => {
                self.blind_since = Some(at);
                // ENGINE: self.transitions(tracker.broker_lost(at)); alerts: collector_blind.
            }
        }
    }

    /// Adds transitions decided by the liveness tracker to the batch.
    pub fn transitions(&mut self, t: Vec<Transition>) {
        self.batch.transitions.extend(t);
    }

    /// Adds alert changes decided by the alert engine to the batch.
    pub fn alerts(&mut self, a: impl IntoIterator<Item = Alert>) {
        self.batch.alerts.extend(a);
    }

    fn flush_seen(&mut self) {
        self.batch.seen.extend(self.seen.drain());
    }

    /// Commits the batch, then announces its transitions and alerts. If the commit fails
    /// nothing is announced (the promise is "committed before announced") and the error is
    /// logged; the next burst goes on.
    pub async fn commit_and_announce(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let transitions = batch.transitions.clone();
        let alerts = batch.alerts.clone();
        let writes = batch.len();
        if let Err(e) = self.store.write(batch).await {
            tracing::error!(error = %e, writes, "store write failed; nothing of it was announced");
            return;
        }
        for t in &transitions {
            tracing::info!(node = %t.node, from = t.from.as_str(), to = t.to.as_str(), cause = t.cause.as_str(), "transition");
            // ENGINE (api): publish on the event stream.
        }
        for a in &alerts {
            if should_notify(a) {
                self.outputs.notify(a);
            }
        }
    }
}

/// Whether a committed alert change goes to the outputs: a firing alert that was not
/// silenced or inhibited (`notified`), and the resolution of exactly those.
// ENGINE: the alert engine's `AlertChange { alert, notify }` decides this instead.
fn should_notify(a: &Alert) -> bool {
    a.notified
}

#[cfg(test)]
mod tests {
    use alarmnet_protocol::{AlertStatus, NodePath, Prefix, RegionId, SiteId};

    use super::*;
    use crate::config::IngestConfig;
    use crate::ingest::Ingest;
    use crate::model::{Cause, Liveness};
    use crate::store::Db;

    fn birth_bytes(node: &str) -> (String, Vec<u8>) {
        (
            format!("alarmnet/v1/r/s/{node}/birth"),
            format!(
                r#"{{"v":1,"boot":"b0000001","ts":1,"node":"{node}","site":"s","region":"r",
                    "kind":"siren","hb_interval_s":10}}"#
            )
            .into_bytes(),
        )
    }

    #[tokio::test]
    async fn births_faults_and_last_heard_reach_the_store_and_alerts_go_out_after_commit() {
        let metrics = Arc::new(Metrics::new());
        let store =
            Store::start(Db::open_in_memory().expect("db"), metrics.clone()).expect("store");
        let mut outputs = Outputs::none(metrics.clone());
        let mut rx = outputs.add("probe", 10);
        let mut ingest = Ingest::new(
            Prefix::default(),
            &IngestConfig::default(),
            None,
            [],
            metrics.clone(),
        );
        let mut core = Core::new(store.clone(), outputs, metrics.clone());
        let (topic, body) = birth_bytes("n1");
        core.absorb(ingest.handle(&topic, &body, 100).expect("accepted"));
        let hb = br#"{"v":1,"boot":"b0000001","seq":1,"ts":5}"#;
        core.absorb(
            ingest
                .handle("alarmnet/v1/r/s/n1/hb", hb, 150)
                .expect("accepted"),
        );
        let fault = br#"{"v":1,"boot":"b0000001","seq":2,"ts":6,"check":"amp","code":"X",
            "severity":"major","status":"raised"}"#;
        core.absorb(
            ingest
                .handle("alarmnet/v1/r/s/n1/fault", fault, 160)
                .expect("accepted"),
        );
        let node = NodeId::new("n1").expect("id");
        core.transitions(vec![Transition {
            node: node.clone(),
            from: Liveness::Unknown,
            to: Liveness::Online,
            at: 100,
            cause: Cause::Birth,
        }]);
        let mut alert = crate::outputs::tests_support::alert("fp", AlertStatus::Firing);
        core.alerts([alert.clone()]);
        alert.id = "silenced".into();
        alert.notified = false;
        core.alerts([alert]);
        core.flush_seen();
        core.commit_and_announce().await;

        let rec = store
            .node(node.clone())
            .await
            .expect("q")
            .expect("registered");
        let want = NodePath::new(
            RegionId::new("r").expect("id"),
            SiteId::new("s").expect("id"),
            node.clone(),
        );
        assert_eq!(rec.path, want);
        assert_eq!(rec.last_seen, 160);
        assert_eq!(rec.state, Liveness::Online);
        assert_eq!(store.faults(node, true).await.expect("faults").len(), 1);
        assert_eq!(store.alerts(None, 10).await.expect("alerts").len(), 2);
        match rx.try_recv().expect("one notification") {
            crate::outputs::Notice::Alert(a) => assert_eq!(a.id, "fp"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(rx.try_recv().is_err(), "the silenced alert is not notified");
    }
}
