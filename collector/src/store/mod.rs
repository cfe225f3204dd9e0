//! The embedded store: SQLite on a dedicated thread, reached through [`Store`], a cheap
//! cloneable handle with async methods.
//!
//! Design: one thread owns the connection (no blocking call on an async worker, no lock
//! contention). Commands arrive on a bounded channel (when full, callers wait: the store is
//! the slowest stage and this is its backpressure). The thread takes every command waiting,
//! runs them all in **one** transaction, each inside its own savepoint (a failing command
//! rolls back alone), commits, and only then answers each caller. So a method returns
//! after its writes are durable — "committed before announced" is simply "await the store
//! call, then announce" — and a burst of heartbeat-derived writes costs one fsync.

mod alerts;
mod audit;
pub mod config;
pub mod days;
mod db;
mod drills;
mod faults;
mod history;
pub mod lease;
mod lists;
mod nodes;
pub mod pg;
mod readiness;
pub mod reserve;
pub mod retention;
mod runs;
pub mod schema;
pub mod sql;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use alarmnet_protocol::{AlertStatus, Birth, Fault, NodeId, NodePath, TestReceipt};
use tokio::sync::{mpsc, oneshot};

pub use alerts::{
    AlertQuery, FiringCount, NotificationAttempt, SilenceKey, SilenceQuery, SilenceStatus,
    StoredNotice,
};
pub use audit::AuditQuery;
pub use config::{ByteSize, Location, ShardScope, StoreConfig};
pub use db::Db;
pub use drills::{DrillRow, Targets};
pub use faults::FaultRecord;
pub use history::{Shard, TransitionWindow};
pub use lists::{Paged, TimeKey};
pub use nodes::{
    Heard, NodeBrief, NodeFilter, NodeKey, NodeQuery, NodeRecord, PlaceCount, PlaceName,
};

use crate::metrics::Metrics;
use crate::model::{Ack, Alert, AlertId, Silence, SilenceId, Transition, UnixMillis};
use crate::readiness::ReadinessChange;

pub use readiness::{NodeReadiness, ReadinessStep};

/// Commands waiting for the store thread.
const QUEUE: usize = 1024;

/// Most commands committed in one transaction.
const MAX_BATCH: usize = 512;

/// Reader threads, each with its own read-only connection, for [`Store::read`].
const READERS: usize = 2;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// With its causes: the client's own text is only the kind ("db error", "error
    /// performing TLS handshake"); the server's message or the TLS failure is the cause.
    #[error("postgres: {}", with_causes(.0))]
    Postgres(postgres::Error),
    #[error("store url: {0}")]
    Url(String),
    /// The TLS files of the PostgreSQL store (each message names its key).
    #[error("{0}")]
    Tls(String),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the database has schema version {found}; this collector knows up to {known}")]
    TooNew { found: usize, known: usize },
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the store is closed")]
    Closed,
    /// The read was stopped because nobody waits for its answer any more.
    #[error("abandoned: nobody waits for the answer")]
    Abandoned,
}

// Not `#[from]`: the causes are in the message, so a chain printer does not repeat them.
impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

/// `e` and each of its causes, joined by `: `.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Runs on the store thread: does its work and returns what to tell the caller once the
/// transaction's fate is known; given no database when the transaction could not begin
/// (it then does nothing, and is told why).
type Job = Box<dyn FnOnce(Option<&Db>) -> Done + Send>;
type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Runs on a reader thread and answers its caller itself.
type ReadJob = Box<dyn FnOnce(&Db) + Send>;

/// Where the store thread finds the lease fence, once the collector has one.
type FenceSlot = Arc<std::sync::OnceLock<Arc<lease::Fence>>>;

/// A handle to the store thread (and its reader threads). Clone freely.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Job>,
    fence: FenceSlot,
    /// `None` without a file to open again (an in-memory database): reads go to the writer.
    readers: Option<mpsc::Sender<ReadJob>>,
}

impl Store {
    /// Opens and migrates the SQLite database at `path`, starts the store thread and the
    /// reader threads.
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let writer = path.to_owned();
        let reader = path.to_owned();
        Self::spawn(
            move || Db::open(&writer),
            Some(move || Db::open_reader(&reader)),
            metrics,
        )
    }

    /// Opens the store at `location`: [`Self::open`] for SQLite, [`Self::connect`] for
    /// PostgreSQL.
    pub fn open_at(location: &Location, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => Self::open(path, metrics),
            Location::Postgres { url, password, tls } => Self::connect_to(
                pg::PgTarget::new(url.expose(), password.as_ref().map(|p| p.expose()), tls)?,
                metrics,
            ),
        }
    }

    /// Connects to (and migrates) the PostgreSQL database at `url` (with `password`, when
    /// the URL has none), starts the store thread and the reader threads, each with its
    /// own connection.
    pub fn connect(
        url: &str,
        password: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        Self::connect_to(sql::pg_config(url, password)?, metrics)
    }

    /// [`Self::connect`] to `target` (its TLS settled).
    pub fn connect_to(target: pg::PgTarget, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        let config = target;
        let reader = config.clone();
        Self::spawn(
            move || Db::connect(&config),
            Some(move || Db::connect_reader(&reader)),
            metrics,
        )
    }

    /// Starts the store thread around an open database (reads share the writer's thread).
    pub fn start(db: Db, metrics: Arc<Metrics>) -> Result<Store, StoreError> {
        // An open database is opened once: it cannot be opened again.
        let db = Arc::new(std::sync::Mutex::new(Some(db)));
        let open = move || {
            db.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .ok_or(StoreError::Closed)
        };
        Self::spawn(open, None::<fn() -> _>, metrics)
    }

    /// Starts the store thread with the connection `writer` opens, and [`READERS`] reader
    /// threads with the connections `reader` opens (none without it: reads go to the
    /// writer). Returns once every connection is open, or with the first failure.
    ///
    /// Design: each thread opens its own connection. The PostgreSQL client blocks on a
    /// runtime of its own, which must never run inside the caller's async runtime; on the
    /// store's plain threads it never does.
    ///
    /// A connection found closed (the PostgreSQL server restarted) is opened again the same
    /// way before the next transaction; until it opens, transactions fail as the server
    /// does, and the core holds and retries its writes.
    fn spawn(
        writer: impl Fn() -> Result<Db, StoreError> + Send + Clone + 'static,
        reader: Option<impl Fn() -> Result<Db, StoreError> + Send + Clone + 'static>,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let fence = FenceSlot::default();
        {
            let metrics = metrics.clone();
            let fence = fence.clone();
            let reopen = writer.clone();
            spawn_thread("alarmnet-store".into(), writer, move |db| {
                run(
                    Reconnecting::new(db, reopen, IDLE_CHECK),
                    rx,
                    &fence,
                    metrics,
                )
            })?;
        }
        metrics.store_open.store(true, Relaxed);
        let readers = match reader {
            None => None,
            Some(open) => {
                let (readers, jobs) = mpsc::channel::<ReadJob>(QUEUE);
                let jobs = Arc::new(std::sync::Mutex::new(jobs));
                for i in 0..READERS {
                    let jobs = jobs.clone();
                    let name = format!("alarmnet-store-read-{i}");
                    let reopen = open.clone();
                    spawn_thread(name, open.clone(), move |db| {
                        read(Reconnecting::new(db, reopen, Duration::ZERO), &jobs)
                    })?;
                }
                Some(readers)
            }
        };
        Ok(Store { tx, fence, readers })
    }

    /// Fences every write from now on with `fence` (see [`lease::Fence`]); set once.
    pub fn set_fence(&self, fence: Arc<lease::Fence>) {
        let _ = self.fence.set(fence);
    }

    /// Whether a write found the lease taken by another collector (see [`lease::Fence`]):
    /// nothing this collector decides is committed any more, and nothing may be announced.
    pub fn lease_lost(&self) -> bool {
        self.fence.get().is_some_and(|f| f.lost())
    }

    /// How many reads run at once (reader threads; 1 without them): how many shards a
    /// large read is worth splitting into.
    pub fn parallel_reads(&self) -> usize {
        if self.readers.is_some() { READERS } else { 1 }
    }

    /// Runs the read-only `f` on a reader thread, inside one read transaction (a
    /// consistent snapshot of everything committed when it begins).
    ///
    /// Design: the API's reads (lists, counts, uptime reports over a million transitions)
    /// run beside the writer, not in its queue: WAL lets readers and the one writer work at
    /// once, so a slow report never delays committing transitions, and a burst of writes
    /// never delays a list. Without reader threads (in-memory database) it is [`Self::call`].
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(readers) = &self.readers else {
            return self.call(f).await;
        };
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move |db| {
            let _ = reply.send(in_snapshot(db, f));
        });
        readers.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on the store thread inside the current batch's transaction, and returns its
    /// result once that transaction has committed.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |db| {
            let result = db.map(|db| in_savepoint(db, f));
            Box::new(move |commit: Result<(), String>| {
                let _ = reply.send(match (commit, result) {
                    (Err(e), _) => Err(StoreError::Commit(e)),
                    (Ok(()), Some(result)) => result,
                    (Ok(()), None) => Err(StoreError::Closed),
                });
            })
        });
        self.tx.send(job).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    // Writes.

    /// Commits a batch of writes in one go: the core's unit of work. Returns after commit;
    /// on failure hands the batch back, untouched, to be retried.
    /// Returns the ids of the batch's notices, in order.
    pub async fn write(&self, batch: WriteBatch) -> Result<Vec<i64>, (StoreError, WriteBatch)> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let batch = Arc::new(batch);
        let job = Arc::clone(&batch);
        match self.call(move |db| db.write(&job)).await {
            Ok(ids) => Ok(ids),
            // The job (and its reference) is gone once the answer is back.
            Err(e) => Err((e, Arc::try_unwrap(batch).unwrap_or_else(|b| (*b).clone()))),
        }
    }

    pub async fn upsert_birth(
        &self,
        path: NodePath,
        birth: Box<Birth>,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.upsert_birth(&path, &birth, received_at))
            .await
    }

    /// Returns after the transitions are committed: only then may they be announced.
    pub async fn record_transitions(&self, t: Vec<Transition>) -> Result<(), StoreError> {
        if t.is_empty() {
            return Ok(());
        }
        self.call(move |db| db.record_transitions(&t)).await
    }

    pub async fn record_fault(
        &self,
        node: NodeId,
        fault: Fault,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.record_fault(&node, &fault, received_at))
            .await
    }

    pub async fn record_test(
        &self,
        node: NodeId,
        test: TestReceipt,
        received_at: UnixMillis,
    ) -> Result<(), StoreError> {
        self.call(move |db| db.record_test(&node, &test, received_at))
            .await
    }

    /// Returns after the alerts are committed: only then may they be notified.
    pub async fn upsert_alerts(&self, alerts: Vec<Alert>) -> Result<(), StoreError> {
        if alerts.is_empty() {
            return Ok(());
        }
        self.call(move |db| alerts.iter().try_for_each(|a| db.upsert_alert(a)))
            .await
    }

    pub async fn ack_alert(
        &self,
        alert_id: AlertId,
        ack: Ack,
    ) -> Result<Option<Alert>, StoreError> {
        self.call(move |db| db.ack_alert(alert_id, &ack)).await
    }

    pub async fn upsert_silence(&self, s: Silence) -> Result<(), StoreError> {
        self.call(move |db| db.upsert_silence(&s)).await
    }

    pub async fn end_silence(&self, id: SilenceId, at: UnixMillis) -> Result<bool, StoreError> {
        self.call(move |db| db.end_silence(id, at)).await
    }

    pub async fn record_notification(&self, n: NotificationAttempt) -> Result<(), StoreError> {
        self.call(move |db| db.record_notification(&n)).await
    }

    // Reads.

    pub async fn nodes(&self, filter: NodeFilter) -> Result<Vec<NodeRecord>, StoreError> {
        self.call(move |db| db.nodes(&filter)).await
    }

    pub async fn node(&self, node: NodeId) -> Result<Option<NodeRecord>, StoreError> {
        self.call(move |db| db.node(&node)).await
    }

    pub async fn count_nodes(&self) -> Result<u64, StoreError> {
        self.call(|db| db.count_nodes()).await
    }

    pub async fn bindings(&self) -> Result<Vec<(NodePath, u64)>, StoreError> {
        self.call(|db| db.bindings()).await
    }

    pub async fn node_history(
        &self,
        node: NodeId,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Transition>, StoreError> {
        self.call(move |db| db.node_history(&node, from, to)).await
    }

    pub async fn transition_window(
        &self,
        nodes: Option<Vec<NodeId>>,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<TransitionWindow, StoreError> {
        self.call(move |db| db.transition_window(nodes.as_deref(), from, to))
            .await
    }

    pub async fn faults(
        &self,
        node: NodeId,
        active_only: bool,
    ) -> Result<Vec<FaultRecord>, StoreError> {
        self.call(move |db| db.faults(&node, active_only)).await
    }

    pub async fn alerts(
        &self,
        status: Option<AlertStatus>,
        limit: usize,
    ) -> Result<Vec<Alert>, StoreError> {
        self.call(move |db| db.alerts(status, limit)).await
    }

    pub async fn silences(&self, now: Option<UnixMillis>) -> Result<Vec<Silence>, StoreError> {
        self.call(move |db| db.silences(now)).await
    }

    pub async fn notifications(
        &self,
        alert_id: AlertId,
    ) -> Result<Vec<NotificationAttempt>, StoreError> {
        self.call(move |db| db.notifications(alert_id)).await
    }
}

/// Writes collected by the core from a burst of events, committed together.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    /// Node registrations and rebirths (applied first, so later rows have their node).
    pub births: Vec<(NodePath, Box<Birth>, UnixMillis)>,
    /// Liveness transitions: committed before they are announced.
    pub transitions: Vec<Transition>,
    pub faults: Vec<(NodeId, Fault, UnixMillis)>,
    pub tests: Vec<(NodeId, TestReceipt, UnixMillis)>,
    /// Alerts created or changed: committed before they are notified.
    pub alerts: Vec<Alert>,
    /// Readiness changes: committed before they are announced.
    pub readiness: Vec<ReadinessChange>,
    /// Notifications to send once committed (the outbox, see `schema` migration 11), with
    /// when they were decided.
    pub notices: Vec<(Alert, UnixMillis)>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.births.is_empty()
            && self.transitions.is_empty()
            && self.faults.is_empty()
            && self.tests.is_empty()
            && self.alerts.is_empty()
            && self.readiness.is_empty()
            && self.notices.is_empty()
    }

    /// Cuts the batch to at most `max` writes, dropping the newest rows of the least vital
    /// kinds first: readiness changes, test receipts, faults, then births, transitions and
    /// alerts last. Returns how many of each kind went, in the order of
    /// [`crate::metrics::BACKLOG_KINDS`].
    ///
    /// Design: a held prefix of each kind stays consistent (a fault's raise is never kept
    /// without what came before it); transitions and alerts (availability history and the
    /// alert record) are what operators and uptime reports need most, so they go last.
    pub fn shed(&mut self, max: usize) -> [usize; 6] {
        let mut dropped = [0usize; 6];
        let mut over = self.len().saturating_sub(max);
        fn cut<T>(v: &mut Vec<T>, over: &mut usize) -> usize {
            let n = (*over).min(v.len());
            v.truncate(v.len() - n);
            *over -= n;
            n
        }
        dropped[5] = cut(&mut self.readiness, &mut over);
        dropped[3] = cut(&mut self.tests, &mut over);
        dropped[2] = cut(&mut self.faults, &mut over);
        dropped[0] = cut(&mut self.births, &mut over);
        dropped[1] = cut(&mut self.transitions, &mut over);
        dropped[4] = cut(&mut self.alerts, &mut over);
        dropped
    }

    /// The number of writes.
    pub fn len(&self) -> usize {
        self.births.len()
            + self.transitions.len()
            + self.faults.len()
            + self.tests.len()
            + self.alerts.len()
            + self.readiness.len()
    }
}

impl Db {
    /// Applies a [`WriteBatch`] (inside the caller's transaction). Returns the ids of its
    /// notices, in order.
    pub fn write(&self, b: &WriteBatch) -> Result<Vec<i64>, StoreError> {
        for (path, birth, at) in &b.births {
            self.upsert_birth(path, birth, *at)?;
        }
        self.record_transitions(&b.transitions)?;
        for (node, fault, at) in &b.faults {
            self.record_fault(node, fault, *at)?;
        }
        for (node, test, at) in &b.tests {
            self.record_test(node, test, *at)?;
        }
        for a in &b.alerts {
            self.upsert_alert(a)?;
        }
        self.record_readiness(&b.readiness)?;
        b.notices
            .iter()
            .map(|(alert, at)| self.store_notice(alert, *at))
            .collect()
    }
}

fn in_savepoint<T>(db: &Db, f: impl FnOnce(&Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
    db.conn().batch("SAVEPOINT job")?;
    match f(db) {
        Ok(v) => {
            db.conn().batch("RELEASE job")?;
            Ok(v)
        }
        Err(e) => {
            db.conn().batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

fn in_snapshot<T>(db: &Db, f: impl FnOnce(&Db) -> Result<T, StoreError>) -> Result<T, StoreError> {
    db.conn().begin_read()?;
    let result = f(db);
    // A read transaction has nothing to commit; ending it releases the snapshot.
    if let Err(e) = db.conn().batch("COMMIT") {
        tracing::warn!(error = %e, "store reader: cannot end a read transaction");
    }
    result
}

/// Starts a thread that opens its connection with `open`, then runs `body` with it.
/// Returns once the connection is open, or with the error that prevented it.
fn spawn_thread(
    name: String,
    open: impl FnOnce() -> Result<Db, StoreError> + Send + 'static,
    body: impl FnOnce(Db) + Send + 'static,
) -> Result<(), StoreError> {
    let (opened, result) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || match open() {
            Ok(db) => {
                let _ = opened.send(Ok(()));
                body(db);
            }
            Err(e) => {
                let _ = opened.send(Err(e));
            }
        })
        .map_err(|e| StoreError::Commit(format!("cannot start {name}: {e}")))?;
    result
        .recv()
        .map_err(|_| StoreError::Commit(format!("{name} ended while opening")))?
}

/// A store thread's database connection, opened again once found closed.
struct Reconnecting<F> {
    db: Db,
    reopen: F,
    used: Instant,
    /// Idle this long, the connection is checked before use.
    idle_check: Duration,
    /// Something failed on it: checked before the next use, however soon.
    failed: bool,
}

/// The writer's connection, idle this long, is checked before use (see
/// [`Reconnecting::db`]); a reader's is checked before every read.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl<F: Fn() -> Result<Db, StoreError>> Reconnecting<F> {
    fn new(db: Db, reopen: F, idle_check: Duration) -> Self {
        Self {
            db,
            reopen,
            used: Instant::now(),
            idle_check,
            failed: false,
        }
    }

    /// What ran on the connection failed: it is checked before the next use. (A
    /// connection the server just ended can fail without yet looking closed: the client
    /// has not read the end of its socket.)
    fn failed(&mut self) {
        self.failed = true;
    }

    /// The connection, opened again first if the server closed it. When that fails too,
    /// the closed one: what runs on it fails with the server's error, and the next use
    /// tries again.
    ///
    /// Design: a connection the server dropped (a restart) looks open until used; so it is
    /// asked first (an empty query, well under a millisecond on a live server): before
    /// every read, since a read that fails reaches an operator; before a write batch only
    /// after [`IDLE_CHECK`], since a busy writer commits many batches a second and the
    /// core retries a failed one.
    fn db(&mut self) -> &Db {
        let idle = std::mem::replace(&mut self.used, Instant::now()).elapsed() >= self.idle_check;
        let check = idle || std::mem::take(&mut self.failed);
        let conn = self.db.conn();
        if conn.is_closed() || (check && !conn.answers()) {
            match (self.reopen)() {
                Ok(db) => {
                    tracing::info!("store: connected to the database again");
                    self.db = db;
                }
                Err(e) => tracing::warn!(error = %e, "store: cannot connect to the database again"),
            }
        }
        &self.db
    }
}

/// A reader thread: takes jobs from the readers' shared queue (when full, callers wait).
/// Ends when every [`Store`] handle is dropped.
fn read<F: Fn() -> Result<Db, StoreError>>(
    mut conn: Reconnecting<F>,
    jobs: &std::sync::Mutex<mpsc::Receiver<ReadJob>>,
) {
    loop {
        // Only the wait for a job holds the lock; the job runs without it.
        let job = jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .blocking_recv();
        match job {
            Some(job) => job(conn.db()),
            None => break,
        }
    }
}

/// The store thread: batch, commit, answer. Ends when every [`Store`] handle is dropped.
/// With a fence, a batch commits only while this collector holds its lease.
fn run<F: Fn() -> Result<Db, StoreError>>(
    mut conn: Reconnecting<F>,
    mut rx: mpsc::Receiver<Job>,
    fence: &FenceSlot,
    metrics: Arc<Metrics>,
) {
    let mut done: Vec<Done> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let db = conn.db();
        let started = Instant::now();
        if let Err(e) = db.conn().begin_write() {
            metrics.store_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "store: cannot begin a transaction");
            // The caller is told why; the next job tries again (connecting first if the
            // connection is gone).
            first(None)(Err(format!("cannot begin a transaction: {e}")));
            conn.failed();
            continue;
        }
        done.push(first(Some(db)));
        while done.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => done.push(job(Some(db))),
                Err(_) => break,
            }
        }
        let fenced = fence.get().map_or(Ok(()), |f| f.check(db));
        let commit = fenced
            .and_then(|()| db.conn().batch("COMMIT").map_err(|e| e.to_string()))
            .inspect_err(|_| {
                let _ = db.conn().batch("ROLLBACK");
            });
        metrics.store_latency(started.elapsed());
        if let Err(e) = &commit {
            metrics.store_errors.fetch_add(1, Relaxed);
            tracing::error!(error = %e, commands = done.len(), "store: commit failed");
            conn.failed();
        }
        for d in done.drain(..) {
            d(commit.clone());
        }
    }
    metrics.store_open.store(false, Relaxed);
    tracing::debug!("store thread stopped");
}

#[cfg(test)]
pub(crate) mod engines;
#[cfg(test)]
mod lists_tests;
#[cfg(test)]
mod tests;
