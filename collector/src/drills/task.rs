//! The drills task: the single owner of live drills. Operators' starts and cancels arrive
//! as [`DrillRequest`]s ([`DrillControl`] is the API's side) and are answered after their
//! commit; every [`POLL`] it reads the test receipts the core committed for each live
//! drill, applies them, closes drills at their deadline, commits the changes in one store
//! transaction and then announces them as `drill` events; schedules start drills on their
//! own.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use alarmnet_protocol::{CmdId, NodeId};
use jiff::tz::TimeZone;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{DrillMeta, DrillSpec, DrillsSettings, LiveDrill, NodeResult, Schedule, Status};
use crate::api::{EventHub, EventKind};
use crate::commands::{Commands, DrillJob};
use crate::model::{Clock, UnixMillis};
use crate::store::{DrillRow, Store, StoreError};

/// How often receipts are read and progress is announced (so at most 4 `drill` events a
/// second per drill).
pub const POLL: Duration = Duration::from_millis(250);

/// Closed drills read receipts every this many polls (late ones only).
const CLOSED_POLL_EVERY: u64 = 20;

/// How long after closing a drill still records late receipts in its results.
const LATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Receipts read per drill per poll.
const RECEIPTS_PER_POLL: usize = 20_000;

/// Node results carried by one `drill` event; more changed ones are counted in
/// `results_omitted` (the console then reads the drill again).
const RESULTS_PER_EVENT: usize = 500;

/// Requests waiting for the drills task.
pub const QUEUE: usize = 64;

/// How long the API waits for the drills task.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a drill request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrillError {
    #[error("no registered node matches the selector")]
    NoMatch,
    #[error("not registered: {}", list(.0))]
    UnknownNodes(Vec<NodeId>),
    #[error("no drill {0}")]
    NotFound(String),
    #[error("drill {id} is already {}", .status.as_str())]
    NotOpen { id: String, status: Status },
    #[error("{0}")]
    Unavailable(String),
    /// A scheduled occurrence another collector (another shard's) started first.
    #[error("this occurrence was started by another collector")]
    Claimed,
}

fn list(nodes: &[NodeId]) -> String {
    let mut s: Vec<&str> = nodes.iter().take(20).map(NodeId::as_str).collect();
    if nodes.len() > 20 {
        s.push("...");
    }
    s.join(", ")
}

impl From<StoreError> for DrillError {
    fn from(e: StoreError) -> Self {
        DrillError::Unavailable(format!("store: {e}"))
    }
}

/// What a start answered: the nodes selected, and the drill unless it was a dry run.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub selected: u64,
    pub drill: Option<DrillMeta>,
}

type Reply<T> = oneshot::Sender<Result<T, DrillError>>;

/// A request to the drills task.
#[derive(Debug)]
pub enum DrillRequest {
    Start {
        spec: DrillSpec,
        by: String,
        dry_run: bool,
        reply: Reply<Started>,
    },
    Cancel {
        id: String,
        by: String,
        reply: Reply<DrillMeta>,
    },
}

/// The API's side of the drills task. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DrillControl {
    tx: mpsc::Sender<DrillRequest>,
}

impl DrillControl {
    pub fn channel() -> (DrillControl, mpsc::Receiver<DrillRequest>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (DrillControl { tx }, rx)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> DrillRequest) -> Result<T, DrillError> {
        let (reply, answer) = oneshot::channel();
        let closed = || DrillError::Unavailable("the drills task is not running".into());
        match tokio::time::timeout(REPLY_TIMEOUT, async {
            self.tx.send(make(reply)).await.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(DrillError::Unavailable(
                "the drills task did not answer in time".into(),
            )),
        }
    }

    pub async fn start(
        &self,
        spec: DrillSpec,
        by: String,
        dry_run: bool,
    ) -> Result<Started, DrillError> {
        self.ask(|reply| DrillRequest::Start {
            spec,
            by,
            dry_run,
            reply,
        })
        .await
    }

    pub async fn cancel(&self, id: String, by: String) -> Result<DrillMeta, DrillError> {
        self.ask(|reply| DrillRequest::Cancel { id, by, reply })
            .await
    }
}

/// A live drill with its reading position and its commands in flight.
#[derive(Debug)]
struct Entry {
    drill: LiveDrill,
    /// The last test receipt row read.
    cursor: i64,
    cursor_dirty: bool,
    /// Cancels the rest of the drill's commands.
    stop: CancellationToken,
    /// Commands of this drill published by this run.
    sent: Arc<AtomicU64>,
    /// Results changed since the last event.
    announce: Vec<NodeResult>,
    announce_meta: bool,
    /// Changes not yet committed (kept across a failed commit).
    unsaved: HashMap<NodeId, NodeResult>,
    meta_unsaved: bool,
}

impl Entry {
    fn new(drill: LiveDrill, cursor: i64) -> Self {
        Self {
            drill,
            cursor,
            cursor_dirty: false,
            stop: CancellationToken::new(),
            sent: Arc::new(AtomicU64::new(0)),
            announce: Vec::new(),
            announce_meta: false,
            unsaved: HashMap::new(),
            meta_unsaved: false,
        }
    }

    /// Moves the drill's changes into what is to be saved and announced.
    fn collect(&mut self) {
        let (rows, meta) = self.drill.take_changes();
        for r in rows {
            self.announce.push(r.clone());
            self.unsaved.insert(r.path.node.clone(), r);
        }
        self.announce_meta |= meta;
        self.meta_unsaved |= meta;
        if !self.drill.is_open() {
            self.stop.cancel();
        }
    }
}

/// A schedule with the last occurrence it ran (or skipped).
#[derive(Debug)]
struct Scheduled {
    schedule: Schedule,
    last: Option<UnixMillis>,
}

/// The drills task's state. See the module documentation.
pub struct DrillsTask {
    store: Store,
    events: EventHub,
    commands: Commands,
    tz: TimeZone,
    clock: Clock,
    live: HashMap<CmdId, Entry>,
    schedules: Vec<Scheduled>,
    polls: u64,
    /// The region shard whose drills this task runs (`""` without shards).
    owner: String,
}

impl std::fmt::Debug for DrillsTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrillsTask")
            .field("live", &self.live.len())
            .finish_non_exhaustive()
    }
}

impl DrillsTask {
    pub fn new(
        store: Store,
        events: EventHub,
        commands: Commands,
        config: DrillsSettings,
        tz: TimeZone,
        clock: Clock,
    ) -> Self {
        let schedules = config
            .schedule
            .into_iter()
            .map(|schedule| Scheduled {
                schedule,
                last: None,
            })
            .collect();
        Self {
            store,
            events,
            commands,
            tz,
            clock,
            live: HashMap::new(),
            schedules,
            polls: 0,
            owner: String::new(),
        }
    }

    /// Runs the drills of region shard `shard` only: those started through its collectors'
    /// API or by a schedule occurrence one of them claimed. Every shard's drill reaches
    /// nodes of any region (commands go through the broker, receipts through the store).
    pub fn for_shard(mut self, shard: &str) -> Self {
        self.owner = shard.to_owned();
        self
    }

    fn now(&self) -> UnixMillis {
        (self.clock)()
    }

    /// Loads open and recently closed drills, asks again every node an open drill is still
    /// waiting for, and reads when each schedule last ran.
    pub async fn restore(&mut self) -> Result<(), StoreError> {
        let now = self.now();
        let rows = self
            .store
            .read({
                let owner = self.owner.clone();
                move |db| db.live_drills(now - LATE_WINDOW, &owner)
            })
            .await?;
        for (DrillRow { meta, cursor }, results) in rows {
            let entry = Entry::new(LiveDrill::new(meta, results), cursor);
            let d = &entry.drill;
            if d.is_open() && now < d.meta().deadline {
                let nodes: Vec<_> = d.waiting().map(|n| n.path.clone()).collect();
                tracing::info!(drill = %d.meta().id, waiting = nodes.len(), "open drill resumed; asking the waiting nodes again");
                self.send(&entry, nodes).await;
            }
            self.live.insert(entry.drill.meta().id.clone(), entry);
        }
        for s in &mut self.schedules {
            let name = s.schedule.name.clone();
            s.last = self.store.read(move |db| db.schedule_last(&name)).await?;
            if s.last.is_none() {
                // A new schedule starts counting now: nothing before it is "missed" (another
                // shard's collector may have started the count a moment ago).
                let name = s.schedule.name.clone();
                s.last = self
                    .store
                    .call(move |db| {
                        db.claim_schedule(&name, now)?;
                        db.schedule_last(&name)
                    })
                    .await?;
            }
        }
        self.poll().await;
        Ok(())
    }

    /// Runs until `shutdown` or until every [`DrillControl`] is dropped.
    pub async fn run(mut self, mut rx: mpsc::Receiver<DrillRequest>, shutdown: CancellationToken) {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                request = rx.recv() => match request {
                    Some(r) => self.request(r).await,
                    None => break,
                },
                _ = poll.tick() => self.poll().await,
            }
        }
        self.poll().await;
        tracing::info!("drills task stopped");
    }

    async fn request(&mut self, request: DrillRequest) {
        match request {
            DrillRequest::Start {
                spec,
                by,
                dry_run,
                reply,
            } => {
                let _ = reply.send(self.start(spec, by, dry_run, None).await);
            }
            DrillRequest::Cancel { id, by, reply } => {
                let _ = reply.send(self.cancel(id, by).await);
            }
        }
    }

    async fn send(&self, entry: &Entry, nodes: Vec<alarmnet_protocol::NodePath>) {
        let m = entry.drill.meta();
        let job = DrillJob {
            id: m.id.clone(),
            test: m.test.clone(),
            deadline: m.deadline,
            nodes,
            cancel: entry.stop.clone(),
            sent: entry.sent.clone(),
        };
        if self.commands.drill(job).await.is_err() {
            tracing::error!(drill = %m.id, "the command sender has stopped: drill commands not sent");
        }
    }

    /// Starts a drill (or counts its nodes, for a dry run). `schedule`: the schedule entry
    /// and occurrence that start it, recorded in the same transaction.
    async fn start(
        &mut self,
        spec: DrillSpec,
        by: String,
        dry_run: bool,
        schedule: Option<(String, UnixMillis)>,
    ) -> Result<Started, DrillError> {
        let selector = spec.selector.clone();
        let targets = self
            .store
            .read(move |db| db.drill_targets(&selector))
            .await?;
        if !targets.unknown.is_empty() {
            return Err(DrillError::UnknownNodes(targets.unknown));
        }
        if targets.found.is_empty() {
            return Err(DrillError::NoMatch);
        }
        let selected = targets.found.len() as u64;
        if dry_run {
            return Ok(Started {
                selected,
                drill: None,
            });
        }
        let now = self.now();
        let meta = DrillMeta {
            id: super::new_id(now),
            test: spec.test,
            selector: spec.selector,
            started_at: now,
            deadline: now + spec.deadline,
            started_by: by,
            status: Status::Open,
            closed_at: None,
            cancelled_by: None,
            schedule: schedule.as_ref().map(|(name, _)| name.clone()),
            tally: Default::default(),
        };
        let nodes: Vec<NodeResult> = targets
            .found
            .into_iter()
            .map(|(path, kind)| NodeResult::waiting(path, kind))
            .collect();
        let paths: Vec<_> = nodes.iter().map(|n| n.path.clone()).collect();
        let drill = LiveDrill::new(meta, nodes.clone());
        let stored = drill.meta().clone();
        let owner = self.owner.clone();
        let cursor = self
            .store
            .call(move |db| {
                if let Some((name, at)) = &schedule
                    && !db.claim_schedule(name, *at)?
                {
                    return Ok(None);
                }
                db.insert_drill(&stored, &nodes, &owner)?;
                Ok(Some(db.drill(stored.id.as_str())?.map_or(0, |d| d.cursor)))
            })
            .await?
            .ok_or(DrillError::Claimed)?;
        let mut entry = Entry::new(drill, cursor);
        let m = entry.drill.meta().clone();
        tracing::info!(drill = %m.id, by = %m.started_by, test = %m.test, nodes = selected, "drill started");
        self.send(&entry, paths).await;
        entry.announce_meta = true;
        self.announce(&mut entry);
        self.live.insert(m.id.clone(), entry);
        Ok(Started {
            selected,
            drill: Some(m),
        })
    }

    async fn cancel(&mut self, id: String, by: String) -> Result<DrillMeta, DrillError> {
        let now = self.now();
        let Some(entry) = self
            .live
            .iter_mut()
            .find(|(k, _)| k.as_str() == id)
            .map(|x| x.1)
        else {
            let look = id.clone();
            let owner = self.owner.clone();
            let (found, run_by) = self
                .store
                .read(move |db| Ok((db.drill(&look)?, db.drill_owner(&look)?)))
                .await?;
            if let (Some(d), Some(shard)) = (&found, run_by)
                && d.meta.status == Status::Open
                && shard != owner
            {
                return Err(DrillError::Unavailable(format!(
                    "drill {id} is run by the collectors of shard {shard:?}; cancel it there"
                )));
            }
            return match found {
                Some(d) => Err(DrillError::NotOpen {
                    id,
                    status: d.meta.status,
                }),
                None => Err(DrillError::NotFound(id)),
            };
        };
        entry
            .drill
            .cancel(&by, now)
            .map_err(|e| DrillError::NotOpen {
                id: id.clone(),
                status: e.0,
            })?;
        entry.collect();
        tracing::info!(drill = %id, by = %by, "drill cancelled");
        self.save().await?;
        let meta = self
            .live
            .values()
            .find(|e| e.drill.meta().id.as_str() == id)
            .map(|e| e.drill.meta().clone())
            .ok_or_else(|| DrillError::NotFound(id.clone()))?;
        self.announce_all();
        Ok(meta)
    }

    /// Reads receipts, closes drills due, commits, announces, runs schedules.
    async fn poll(&mut self) {
        self.polls += 1;
        let closed_turn = self.polls % CLOSED_POLL_EVERY == 0;
        let ids: Vec<CmdId> = self.live.keys().cloned().collect();
        for id in ids {
            let Some(entry) = self.live.get(&id) else {
                continue;
            };
            if !entry.drill.is_open() && !closed_turn {
                continue;
            }
            let (look, after) = (id.clone(), entry.cursor);
            let receipts = match self
                .store
                .read(move |db| db.drill_receipts(&look, after, RECEIPTS_PER_POLL))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(drill = %id, error = %e, "cannot read drill receipts");
                    continue;
                }
            };
            let Some(entry) = self.live.get_mut(&id) else {
                continue;
            };
            for (row, receipt) in receipts {
                entry.drill.receipt(&receipt);
                entry.cursor = row;
                entry.cursor_dirty = true;
            }
        }
        let now = self.now();
        for entry in self.live.values_mut() {
            if entry.drill.tick(now) {
                tracing::info!(drill = %entry.drill.meta().id, "drill deadline reached");
            }
            entry.collect();
        }
        if let Err(e) = self.save().await {
            tracing::error!(error = %e, "cannot store drill results; kept and retried");
            return;
        }
        self.announce_all();
        // Closed drills past the late window leave memory (their rows stay).
        self.live.retain(|_, e| {
            e.drill.is_open()
                || e.drill
                    .meta()
                    .closed_at
                    .is_some_and(|at| now < at + LATE_WINDOW)
        });
        self.run_schedules(now).await;
    }

    /// Commits every unsaved change of every live drill in one transaction.
    async fn save(&mut self) -> Result<(), StoreError> {
        let mut writes = Vec::new();
        for e in self.live.values_mut() {
            if e.unsaved.is_empty() && !e.meta_unsaved && !e.cursor_dirty {
                continue;
            }
            let rows: Vec<NodeResult> = e.unsaved.values().cloned().collect();
            writes.push((e.drill.meta().clone(), rows, e.cursor));
        }
        if writes.is_empty() {
            return Ok(());
        }
        let ids: Vec<CmdId> = writes.iter().map(|w| w.0.id.clone()).collect();
        self.store
            .call(move |db| {
                for (meta, rows, cursor) in &writes {
                    db.save_drill(meta, rows, Some(*cursor))?;
                }
                Ok(())
            })
            .await?;
        for id in ids {
            if let Some(e) = self.live.get_mut(&id) {
                e.unsaved.clear();
                e.meta_unsaved = false;
                e.cursor_dirty = false;
            }
        }
        Ok(())
    }

    fn announce_all(&mut self) {
        let events = self.events.clone();
        let tz = self.tz.clone();
        for e in self.live.values_mut() {
            announce_entry(&events, &tz, e);
        }
    }

    fn announce(&self, e: &mut Entry) {
        announce_entry(&self.events, &self.tz, e);
    }

    async fn run_schedules(&mut self, now: UnixMillis) {
        for i in 0..self.schedules.len() {
            loop {
                let s = &self.schedules[i];
                let Some(last) = s.last else {
                    break;
                };
                let Some(next) = s.schedule.rule.next_after(last, &self.tz) else {
                    break;
                };
                if next > now {
                    break;
                }
                let name = s.schedule.name.clone();
                let spec = s.schedule.spec.clone();
                if now - next > spec.deadline {
                    tracing::warn!(schedule = %name, missed = next.as_millis(), "scheduled drill missed (collector not running); skipped");
                    let n = name.clone();
                    if let Err(e) = self.store.call(move |db| db.claim_schedule(&n, next)).await {
                        tracing::error!(error = %e, "cannot record a skipped schedule");
                        break;
                    }
                } else {
                    let by = format!("schedule:{name}");
                    match self
                        .start(spec, by, false, Some((name.clone(), next)))
                        .await
                    {
                        Ok(_) => {}
                        Err(DrillError::Claimed) => {
                            tracing::info!(schedule = %name, "scheduled drill started by another collector");
                        }
                        Err(e @ (DrillError::NoMatch | DrillError::UnknownNodes(_))) => {
                            tracing::warn!(schedule = %name, error = %e, "scheduled drill not started");
                            let n = name.clone();
                            let _ = self.store.call(move |db| db.claim_schedule(&n, next)).await;
                        }
                        Err(e) => {
                            tracing::error!(schedule = %name, error = %e, "scheduled drill failed to start; retried");
                            break;
                        }
                    }
                }
                self.schedules[i].last = Some(next);
            }
        }
    }
}

/// Publishes one `drill` event for `e` if anything changed since the last one.
fn announce_entry(events: &EventHub, tz: &TimeZone, e: &mut Entry) {
    if e.announce.is_empty() && !e.announce_meta {
        return;
    }
    let results = std::mem::take(&mut e.announce);
    e.announce_meta = false;
    let omitted = results.len().saturating_sub(RESULTS_PER_EVENT);
    let mut v = crate::api::drills::drill_json(e.drill.meta(), tz);
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("sent".into(), e.sent.load(Relaxed).into());
        m.insert(
            "results".into(),
            results
                .iter()
                .take(RESULTS_PER_EVENT)
                .map(|r| crate::api::drills::result_json(r, tz))
                .collect(),
        );
        m.insert("results_omitted".into(), omitted.into());
    }
    events.publish(EventKind::Drill, v.to_string());
}

#[cfg(test)]
mod tests {
    use crate::model::ms;
    use std::sync::atomic::AtomicU64;

    use alarmnet_protocol::{Birth, Message, NodePath, Prefix, RegionId, SiteId, TestReceipt};
    use serde_json::json;

    use super::*;
    use crate::commands::{Commander, Publisher, Signer};
    use crate::drills::{DrillsConfig, ScheduleConfig, Selector};
    use crate::metrics::Metrics;
    use crate::store::Db;

    /// 2026-12-02 08:00 in Asia/Shanghai.
    const T0: UnixMillis = UnixMillis::from_millis(1_796_169_600_000);

    #[derive(Debug)]
    struct Recorder(mpsc::UnboundedSender<(String, Vec<u8>)>);

    impl Publisher for Recorder {
        async fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
            self.0.send((topic, payload)).map_err(|e| e.to_string())
        }
    }

    fn path(node: &str) -> NodePath {
        NodePath::new(
            RegionId::new("lanzhou").expect("id"),
            SiteId::new("lz-cg").expect("id"),
            NodeId::new(node).expect("id"),
        )
    }

    async fn store_with(nodes: &[&str]) -> Store {
        let store = Store::start(Db::open_in_memory().expect("db"), Arc::new(Metrics::new()))
            .expect("store");
        for n in nodes {
            let birth: Birth = serde_json::from_value(json!({
                "v": 1, "boot": "boot0001", "ts": T0, "node": n, "site": "lz-cg",
                "region": "lanzhou", "kind": "siren", "hb_interval_s": 10
            }))
            .expect("birth");
            store
                .upsert_birth(path(n), Box::new(birth), T0)
                .await
                .expect("birth stored");
        }
        store
    }

    struct Rig {
        task: DrillsTask,
        sent: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
        stop: CancellationToken,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    async fn rig(store: &Store, clock: &Arc<AtomicU64>, schedule: Vec<ScheduleConfig>) -> Rig {
        rig_of(store, clock, schedule, "").await
    }

    /// [`rig`] for the collectors of region shard `shard`.
    async fn rig_of(
        store: &Store,
        clock: &Arc<AtomicU64>,
        schedule: Vec<ScheduleConfig>,
        shard: &str,
    ) -> Rig {
        let (tx, sent) = mpsc::unbounded_channel();
        let (commands, queue) = Commands::channel();
        let stop = CancellationToken::new();
        let signer = Signer::new(None, Duration::from_secs(300));
        let c = clock.clone();
        let commander = Commander::new(Recorder(tx), Prefix::default(), signer, 100_000)
            .with_clock(Arc::new(move || UnixMillis::from_millis(c.load(Relaxed))));
        tokio::spawn(commander.run(queue, stop.clone()));
        let tz = TimeZone::get("Asia/Shanghai").expect("zone");
        let events = EventHub::new(T0, 64, 64, tz.clone());
        let c = clock.clone();
        let config = DrillsConfig {
            schedule,
            ..DrillsConfig::default()
        }
        .build()
        .expect("valid schedules");
        let mut task = DrillsTask::new(
            store.clone(),
            events,
            commands,
            config,
            tz,
            Arc::new(move || UnixMillis::from_millis(c.load(Relaxed))),
        )
        .for_shard(shard);
        task.restore().await.expect("restore");
        Rig { task, sent, stop }
    }

    /// A schedule: a silent test of every node, every day at 09:00 (Shanghai).
    fn daily() -> Vec<ScheduleConfig> {
        vec![ScheduleConfig {
            name: "daily".into(),
            when: "every day at 09:00".into(),
            selector: Selector::default(),
            test: "silent".into(),
            deadline: Duration::from_secs(600),
        }]
    }

    async fn commands(
        rx: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
        n: usize,
    ) -> Vec<String> {
        let mut ids = Vec::new();
        while ids.len() < n {
            let (topic, payload) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a command in time")
                .expect("open");
            let env = alarmnet_protocol::decode(&Prefix::default(), &topic, &payload).expect("cmd");
            let Message::Command(c) = env.message else {
                panic!("not a command");
            };
            ids.push(format!(
                "{}@{}",
                c.id,
                topic.split('/').nth(4).unwrap_or("")
            ));
        }
        ids
    }

    #[tokio::test]
    async fn a_restarted_task_resumes_the_tally_and_asks_only_the_waiting_nodes_again() {
        let store = store_with(&["n1", "n2", "n3"]).await;
        let clock = Arc::new(AtomicU64::new(T0.as_millis()));
        let mut a = rig(&store, &clock, Vec::new()).await;
        let spec = DrillSpec {
            selector: Selector::default(),
            test: alarmnet_protocol::Name::new("silent").expect("test"),
            deadline: Duration::from_secs(600),
        };
        let started = a
            .task
            .start(spec, "ops".into(), false, None)
            .await
            .expect("start");
        let id = started.drill.expect("drill").id;
        assert_eq!(commands(&mut a.sent, 3).await.len(), 3);
        let receipt: TestReceipt = serde_json::from_value(json!({
            "v": 1, "boot": "boot0001", "seq": 1, "ts": T0, "drill": id.as_str(),
            "test": "silent", "result": "pass"
        }))
        .expect("receipt");
        store
            .record_test(NodeId::new("n2").expect("id"), receipt, T0 + ms(5_000))
            .await
            .expect("stored");
        a.task.poll().await;
        assert_eq!(a.task.live[&id].drill.tally().passed, 1);
        drop(a);

        clock.store((T0 + ms(60_000)).as_millis(), Relaxed);
        let mut b = rig(&store, &clock, Vec::new()).await;
        let t = b.task.live[&id].drill.tally();
        assert_eq!((t.asked, t.passed, t.waiting), (3, 1, 2));
        let mut again = commands(&mut b.sent, 2).await;
        again.sort();
        assert_eq!(again, [format!("{id}@n1"), format!("{id}@n3")]);

        // The deadline still applies after the restart.
        clock.store((T0 + ms(600_000)).as_millis(), Relaxed);
        b.task.poll().await;
        let row = store
            .read({
                let id = id.clone();
                move |db| db.drill(id.as_str())
            })
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(row.meta.status, Status::Expired);
        assert_eq!((row.meta.tally.passed, row.meta.tally.silent), (1, 2));
    }

    #[tokio::test]
    async fn a_schedule_runs_each_occurrence_once_across_restarts() {
        let store = store_with(&["n1", "n2"]).await;
        let clock = Arc::new(AtomicU64::new(T0.as_millis()));
        let schedule = daily();
        let mut a = rig(&store, &clock, schedule.clone()).await;
        a.task.poll().await;
        assert!(a.task.live.is_empty(), "08:00: nothing due yet");
        // 09:00:01 Shanghai.
        clock.store((T0 + ms(3_601_000)).as_millis(), Relaxed);
        a.task.poll().await;
        let drills: Vec<_> = a
            .task
            .live
            .values()
            .map(|e| e.drill.meta().clone())
            .collect();
        assert_eq!(drills.len(), 1);
        assert_eq!(drills[0].started_by, "schedule:daily");
        assert_eq!(drills[0].schedule.as_deref(), Some("daily"));
        drop(a);
        // A restart at 09:00:30 does not run 09:00 again.
        clock.store((T0 + ms(3_630_000)).as_millis(), Relaxed);
        let mut b = rig(&store, &clock, schedule).await;
        b.task.poll().await;
        let page = store
            .read(|db| db.drill_page(None, None, 10))
            .await
            .expect("list");
        assert_eq!(page.total, 1);
    }

    /// Region shards on one store run the same schedules: each occurrence starts one drill,
    /// run (tallied, closed, resumed after a restart) by the shard that claimed it only.
    #[tokio::test]
    async fn shards_start_each_scheduled_drill_once_and_run_only_their_own() {
        let store = store_with(&["n1", "n2"]).await;
        let clock = Arc::new(AtomicU64::new(T0.as_millis()));
        let schedule = daily();
        let mut east = rig_of(&store, &clock, schedule.clone(), "east").await;
        let mut west = rig_of(&store, &clock, schedule.clone(), "west").await;
        clock.store((T0 + ms(3_601_000)).as_millis(), Relaxed);
        west.task.poll().await;
        east.task.poll().await;
        let page = store
            .read(|db| db.drill_page(None, None, 10))
            .await
            .expect("list");
        assert_eq!(page.total, 1, "one drill for the occurrence");
        assert_eq!((west.task.live.len(), east.task.live.len()), (1, 0));
        let id = west.task.live.keys().next().expect("west's").clone();

        // Each shard's restarted (or new active) collector resumes its own drills only.
        drop((east, west));
        let mut east = rig_of(&store, &clock, schedule.clone(), "east").await;
        let west = rig_of(&store, &clock, schedule, "west").await;
        assert!(east.task.live.is_empty());
        assert!(west.task.live.contains_key(&id));
        // A cancel through the other shard's API says where the drill runs.
        let refused = east.task.cancel(id.as_str().to_owned(), "ops".into()).await;
        assert!(
            matches!(&refused, Err(DrillError::Unavailable(m)) if m.contains("\"west\"")),
            "{refused:?}"
        );
    }
}
