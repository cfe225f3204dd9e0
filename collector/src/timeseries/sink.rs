//! The sink: batches points, writes them through the v2 write API, retries, isolates points
//! the database refuses, and spools to disk while the database cannot keep up or is down.
//!
//! # Policy
//! - [`SinkHandle::submit`] never waits for the database or the disk: it appends the line to
//!   the open batch under a short lock. A batch is sealed at `batch_size` points or
//!   `flush_interval` after its first point.
//! - One worker task writes sealed batches, up to `max_inflight_requests` at once (spooled
//!   batches one at a time, so the spool is acknowledged in order). Memory holds at most
//!   `max_buffer_points`. While the database is healthy but slower than ingest, the worker
//!   moves the oldest sealed batches to the spool once memory holds more than half of that
//!   bound; while the database is failing, every sealed batch goes to the spool (so a crash
//!   loses at most the last `flush_interval` of points). Without a spool, or if the worker
//!   cannot keep up even with the disk, the oldest in-memory batch is dropped and counted
//!   (`buffer_full`).
//! - Spooled batches are written oldest first, interleaved one for one with live batches
//!   from memory, so dashboards show the present while the past fills in. Writes are
//!   idempotent in InfluxDB and VictoriaMetrics (same series, same time), so order across
//!   batches does not matter and delivery is at least once.
//! - Timeouts, connection errors, 5xx and 4xx other than 400/413/422 (auth, wrong bucket:
//!   an operator can fix those, so the data is kept) are retried with exponential backoff.
//!   A 400, 413 or 422 splits the batch in halves, recursively, so the points the database
//!   refuses are isolated, logged and counted (`invalid`) and the rest is written.
//! - The spool is bounded by bytes: when full, its oldest data is deleted and counted
//!   (`spool_full`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alarmnet_runtime::Backoff;
use influxdb2::RequestError;
use influxdb2::api::write::TimestampPrecision;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::point::Point;
use super::spool::{Spool, SpoolRecord};
use crate::secret::Secret;

/// Configuration of the time-series sink: the collector's `[influx]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Base URL of the database, e.g. `http://127.0.0.1:8086` (InfluxDB) or
    /// `http://127.0.0.1:8428` (VictoriaMetrics). Points go to `/api/v2/write`.
    pub url: String,
    /// InfluxDB organisation (ignored by VictoriaMetrics).
    pub org: String,
    /// InfluxDB bucket (ignored by VictoriaMetrics).
    pub bucket: String,
    /// API token, sent as `Authorization: Token ...`; empty sends none.
    #[serde(default)]
    pub token: Secret,
    /// A file holding the token (read at load into `token`); a relative name is looked up
    /// in systemd's `$CREDENTIALS_DIRECTORY` when it is set.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Points per write request. Larger batches cost fewer requests; InfluxDB suggests 5000.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a point may wait for its batch to fill before it is written anyway.
    #[serde(default = "default_flush_interval", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Points kept in memory at most (about 200 bytes each). Beyond half of it batches go
    /// to the spool; beyond all of it the oldest in-memory batch is dropped.
    #[serde(default = "default_max_buffer_points")]
    pub max_buffer_points: usize,
    /// Directory of the disk spool used while the database is down or slow. Without one,
    /// a database outage longer than the memory buffer loses data.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Bytes of disk the spool may use; when full its oldest data is dropped.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Timeout of one write request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Write requests under way at once. More lets the database use more cores; spooled
    /// batches are written one at a time whatever this says, to keep their order.
    #[serde(default = "default_max_inflight")]
    pub max_inflight_requests: usize,
    /// Compress request bodies (gzip): for a remote database over a slow link. It costs
    /// CPU (the client compresses at its best level: about one core per 150 000 points/s
    /// measured here), so it is off by default.
    #[serde(default = "default_gzip")]
    pub gzip: bool,
    /// First wait after a failed write; doubled after each further failure.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    /// Longest wait between two attempts while the database is failing.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

fn default_batch_size() -> usize {
    5000
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_max_buffer_points() -> usize {
    200_000
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_inflight() -> usize {
    4
}
fn default_gzip() -> bool {
    false
}
fn default_retry_initial() -> Duration {
    Duration::from_millis(200)
}
fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

impl SinkConfig {
    /// A configuration with every default, for the given database.
    pub fn new(url: &str, org: &str, bucket: &str, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            org: org.to_owned(),
            bucket: bucket.to_owned(),
            token: Secret::new(token),
            token_file: None,
            batch_size: default_batch_size(),
            flush_interval: default_flush_interval(),
            max_buffer_points: default_max_buffer_points(),
            spool_dir: None,
            spool_max_bytes: default_spool_max_bytes(),
            timeout: default_timeout(),
            max_inflight_requests: default_max_inflight(),
            gzip: default_gzip(),
            retry_initial_backoff: default_retry_initial(),
            retry_max_backoff: default_retry_max(),
        }
    }

    /// As the collector's config loads it: the token read from `token_file` (a relative path
    /// from `credentials`), the spool next to the store (`store_dir`) unless `spool_dir` is
    /// set, then [`SinkConfig::build`]. Every problem, all at once.
    pub fn build_with(
        mut self,
        credentials: Option<&Path>,
        store_dir: Option<&Path>,
    ) -> Result<SinkSettings, Vec<String>> {
        let mut problems = Vec::new();
        if let Some(file) = &self.token_file {
            if self.token.expose().is_empty() {
                match crate::secret::read_file("influx.token_file", file, credentials) {
                    Ok(t) => self.token = t,
                    Err(e) => problems.push(e),
                }
            } else {
                problems.push(
                    "influx.token_file: set together with influx.token; give only one".into(),
                );
            }
        }
        if self.spool_dir.is_none()
            && let Some(dir) = store_dir
        {
            self.spool_dir = Some(dir.join(super::DEFAULT_SPOOL_DIR));
        }
        match self.build() {
            Ok(settings) if problems.is_empty() => Ok(settings),
            Ok(_) => Err(problems),
            Err(SinkError::Config(more)) => {
                problems.extend(more);
                Err(problems)
            }
            Err(e) => {
                problems.push(e.to_string());
                Err(problems)
            }
        }
    }

    /// The checked settings, or every problem with this configuration, all at once.
    pub fn build(&self) -> Result<SinkSettings, SinkError> {
        let mut problems = Vec::new();
        let url = match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                if u.path() != "/" {
                    problems.push(format!(
                        "influx.url {:?}: a path is not supported (writes go to /api/v2/write)",
                        self.url
                    ));
                }
                Some(u)
            }
            Ok(_) => {
                problems.push(format!("influx.url {:?}: must be http or https", self.url));
                None
            }
            Err(e) => {
                problems.push(format!("influx.url {:?}: {e}", self.url));
                None
            }
        };
        if self.org.is_empty() {
            problems.push("influx.org: must not be empty".into());
        }
        if self.bucket.is_empty() {
            problems.push("influx.bucket: must not be empty".into());
        }
        if self.batch_size == 0 || self.batch_size > 1_000_000 {
            problems.push("influx.batch_size: must be 1 to 1000000".into());
        }
        if self.max_buffer_points < self.batch_size.saturating_mul(2) {
            problems.push("influx.max_buffer_points: must be at least 2 × batch_size".into());
        }
        if !(1..=64).contains(&self.max_inflight_requests) {
            problems.push("influx.max_inflight_requests: must be 1 to 64".into());
        }
        if self.flush_interval.is_zero() {
            problems.push("influx.flush_interval: must be more than 0".into());
        }
        if self.timeout.is_zero() {
            problems.push("influx.timeout: must be more than 0".into());
        }
        if self.retry_initial_backoff.is_zero()
            || self.retry_max_backoff < self.retry_initial_backoff
        {
            problems.push(
                "influx.retry_initial_backoff: must be more than 0 and at most retry_max_backoff"
                    .into(),
            );
        }
        if self.spool_dir.is_some() && self.spool_max_bytes < 64 * 1024 {
            problems.push("influx.spool_max_bytes: must be at least 65536".into());
        }
        match url {
            Some(url) if problems.is_empty() => Ok(SinkSettings {
                url,
                org: self.org.clone(),
                bucket: self.bucket.clone(),
                token: self.token.clone(),
                batch_size: self.batch_size,
                flush_interval: self.flush_interval,
                max_buffer_points: self.max_buffer_points,
                spool_dir: self.spool_dir.clone(),
                spool_max_bytes: self.spool_max_bytes,
                timeout: self.timeout,
                max_inflight_requests: self.max_inflight_requests,
                gzip: self.gzip,
                retry_initial_backoff: self.retry_initial_backoff,
                retry_max_backoff: self.retry_max_backoff,
            }),
            _ => Err(SinkError::Config(problems)),
        }
    }
}

/// `[influx]` checked by [`SinkConfig::build`]: the database's URL parsed, the token read.
/// Fields as in [`SinkConfig`].
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// The database's base URL (http or https, no path).
    pub url: reqwest::Url,
    pub org: String,
    pub bucket: String,
    pub token: Secret,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_buffer_points: usize,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    pub timeout: Duration,
    pub max_inflight_requests: usize,
    pub gzip: bool,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid time-series configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot open the time-series spool in {dir}: {source}")]
    Spool { dir: PathBuf, source: io::Error },
}

/// A snapshot of the sink's counters and gauges, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Points handed to [`SinkHandle::submit`].
    pub points_submitted: u64,
    /// Points the database accepted (a point written twice after an ambiguous failure
    /// counts twice).
    pub points_written: u64,
    /// Write attempts that failed and will be retried.
    pub write_retries: u64,
    /// Points written to the disk spool.
    pub points_spooled: u64,
    /// Points the database refused, isolated and dropped.
    pub dropped_invalid: u64,
    /// Unsent points deleted from a full spool.
    pub dropped_spool_full: u64,
    /// Points dropped from a full memory buffer (no spool, or the disk too slow).
    pub dropped_buffer_full: u64,
    /// Spool records found torn or corrupt and skipped.
    pub spool_corrupt_records: u64,
    /// Bytes of the spool on disk.
    pub spool_bytes: u64,
    /// Points waiting in the spool.
    pub spool_points: u64,
    /// Points waiting in memory (not counting the batch being written).
    pub buffer_points: u64,
    /// Points in the write request under way.
    pub inflight_points: u64,
    /// Whether the last write attempt succeeded.
    pub database_up: bool,
}

impl Counters {
    /// Every dropped point, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_invalid + self.dropped_spool_full + self.dropped_buffer_full
    }

    /// Appends the counters as Prometheus text exposition lines (`alarmnet_tsdb_*`).
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        metric(
            "alarmnet_tsdb_points_submitted_total",
            "counter",
            "Points handed to the time-series sink.",
            &[("", self.points_submitted)],
        );
        metric(
            "alarmnet_tsdb_points_written_total",
            "counter",
            "Points the time-series database accepted.",
            &[("", self.points_written)],
        );
        metric(
            "alarmnet_tsdb_write_retries_total",
            "counter",
            "Time-series write attempts that failed and are retried.",
            &[("", self.write_retries)],
        );
        metric(
            "alarmnet_tsdb_points_spooled_total",
            "counter",
            "Points written to the time-series disk spool.",
            &[("", self.points_spooled)],
        );
        metric(
            "alarmnet_tsdb_points_dropped_total",
            "counter",
            "Points the time-series sink dropped, by reason.",
            &[
                ("{reason=\"invalid\"}", self.dropped_invalid),
                ("{reason=\"spool_full\"}", self.dropped_spool_full),
                ("{reason=\"buffer_full\"}", self.dropped_buffer_full),
            ],
        );
        metric(
            "alarmnet_tsdb_spool_corrupt_records_total",
            "counter",
            "Torn or corrupt time-series spool records skipped.",
            &[("", self.spool_corrupt_records)],
        );
        metric(
            "alarmnet_tsdb_spool_bytes",
            "gauge",
            "Bytes of the time-series spool on disk.",
            &[("", self.spool_bytes)],
        );
        metric(
            "alarmnet_tsdb_spool_points",
            "gauge",
            "Points waiting in the time-series spool.",
            &[("", self.spool_points)],
        );
        metric(
            "alarmnet_tsdb_buffer_points",
            "gauge",
            "Points waiting in the time-series sink's memory.",
            &[("", self.buffer_points + self.inflight_points)],
        );
        metric(
            "alarmnet_tsdb_up",
            "gauge",
            "1 if the last time-series write succeeded.",
            &[("", u64::from(self.database_up))],
        );
    }
}

#[derive(Debug, Default)]
struct Stats {
    submitted: AtomicU64,
    written: AtomicU64,
    retries: AtomicU64,
    spooled: AtomicU64,
    dropped_invalid: AtomicU64,
    dropped_spool_full: AtomicU64,
    dropped_buffer_full: AtomicU64,
    spool_corrupt: AtomicU64,
    spool_bytes: AtomicU64,
    spool_points: AtomicU64,
    inflight: AtomicU64,
    up: AtomicBool,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn sub(c: &AtomicU64, n: u64) {
    c.fetch_sub(n, Ordering::Relaxed);
}

#[derive(Debug)]
struct Batch {
    bytes: Vec<u8>,
    points: u32,
}

#[derive(Debug, Default)]
struct Buffer {
    open: Vec<u8>,
    open_points: u32,
    open_since: Option<Instant>,
    sealed: VecDeque<Batch>,
    sealed_points: usize,
    flush_requested: bool,
    /// Set by shutdown: write what is in memory until then, spool the rest, stop.
    closing_deadline: Option<Instant>,
}

impl Buffer {
    fn seal(&mut self) {
        if self.open_points > 0 {
            let bytes = std::mem::take(&mut self.open);
            self.sealed_points += self.open_points as usize;
            self.sealed.push_back(Batch {
                bytes,
                points: self.open_points,
            });
            self.open_points = 0;
            self.open_since = None;
        }
    }

    fn pop(&mut self) -> Option<Batch> {
        let b = self.sealed.pop_front()?;
        self.sealed_points -= b.points as usize;
        Some(b)
    }

    fn is_empty(&self) -> bool {
        self.open_points == 0 && self.sealed.is_empty()
    }
}

#[derive(Debug)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes the worker: a batch was sealed, a first point arrived, flush or shutdown.
    wake: Notify,
    /// Wakes [`SinkHandle::flush`] callers when memory is empty.
    idle: Notify,
    stats: Stats,
    batch_size: u32,
    max_buffer_points: usize,
    has_spool: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // The buffer holds plain data that stays consistent even if a holder panicked.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn flushed(&self, b: &Buffer) -> bool {
        let done = b.is_empty() && self.stats.inflight.load(Ordering::Relaxed) == 0;
        let stuck = !self.has_spool && !self.stats.up.load(Ordering::Relaxed);
        done || stuck
    }
}

/// A cheap, cloneable handle to submit points and read counters.
#[derive(Debug, Clone)]
pub struct SinkHandle {
    shared: Arc<Shared>,
}

impl SinkHandle {
    /// Queues a point. Never waits for the database or the disk (see the module docs for
    /// what happens when memory is full).
    pub fn submit(&self, point: Point) {
        let shared = &*self.shared;
        let mut wake = false;
        let mut dropped = 0u64;
        {
            let mut b = shared.lock();
            if b.open_points == 0 {
                b.open_since = Some(Instant::now());
                wake = true;
            }
            b.open.extend_from_slice(point.as_line().as_bytes());
            b.open.push(b'\n');
            b.open_points += 1;
            if b.open_points >= shared.batch_size {
                b.seal();
                wake = true;
            }
            while b.sealed_points + b.open_points as usize > shared.max_buffer_points {
                match b.pop() {
                    Some(old) => dropped += u64::from(old.points),
                    None => break,
                }
            }
        }
        add(&shared.stats.submitted, 1);
        if dropped > 0 {
            add(&shared.stats.dropped_buffer_full, dropped);
            tracing::warn!(
                points = dropped,
                "time-series buffer full: dropped the oldest batch"
            );
        }
        if wake {
            shared.wake.notify_one();
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        let s = &self.shared.stats;
        let buffer_points = {
            let b = self.shared.lock();
            (b.sealed_points + b.open_points as usize) as u64
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            points_submitted: get(&s.submitted),
            points_written: get(&s.written),
            write_retries: get(&s.retries),
            points_spooled: get(&s.spooled),
            dropped_invalid: get(&s.dropped_invalid),
            dropped_spool_full: get(&s.dropped_spool_full),
            dropped_buffer_full: get(&s.dropped_buffer_full),
            spool_corrupt_records: get(&s.spool_corrupt),
            spool_bytes: get(&s.spool_bytes),
            spool_points: get(&s.spool_points),
            buffer_points,
            inflight_points: get(&s.inflight),
            database_up: s.up.load(Ordering::Relaxed),
        }
    }

    /// Seals the open batch and waits until every point submitted before the call has left
    /// memory: written, spooled or dropped. Returns at once if that cannot happen (no spool
    /// and the database failing). Does not wait for the spool to drain.
    pub async fn flush(&self) {
        loop {
            let idle = self.shared.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            {
                let mut b = self.shared.lock();
                if self.shared.flushed(&b) {
                    return;
                }
                b.flush_requested = true;
            }
            self.shared.wake.notify_one();
            idle.await;
        }
    }
}

/// The time-series sink: owns the worker task. Dropping it stops the worker at once, as a
/// crash would (points in memory are lost, the spool is kept); call [`Sink::shutdown`] to
/// stop cleanly.
#[derive(Debug)]
pub struct Sink {
    handle: SinkHandle,
    worker: Option<JoinHandle<()>>,
}

impl Sink {
    /// Opens the spool (reading it once: it may hold up to `spool_max_bytes`) and starts
    /// the worker, which first resumes writing what a previous run left in the spool. Must
    /// be called within a tokio runtime.
    pub fn start(config: &SinkSettings) -> Result<Self, SinkError> {
        let spool = match &config.spool_dir {
            Some(dir) => Some(Spool::open(dir, config.spool_max_bytes).map_err(|source| {
                SinkError::Spool {
                    dir: dir.clone(),
                    source,
                }
            })?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)));
        let mut builder = influxdb2::ClientBuilder::with_builder(
            http,
            config.url.as_str(),
            config.org.clone(),
            config.token.expose(),
        );
        if config.gzip {
            builder = builder.gzip(true);
        }
        let client = builder
            .build()
            .map_err(|e| SinkError::Client(e.to_string()))?;
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            wake: Notify::new(),
            idle: Notify::new(),
            stats: Stats::default(),
            batch_size: u32::try_from(config.batch_size).unwrap_or(u32::MAX),
            max_buffer_points: config.max_buffer_points,
            has_spool: spool.is_some(),
        });
        shared.stats.up.store(true, Ordering::Relaxed);
        if let Some(s) = &spool {
            if s.pending_points() > 0 {
                tracing::info!(
                    points = s.pending_points(),
                    bytes = s.bytes(),
                    "time-series spool holds points from before: writing them first"
                );
            }
        }
        let writer = Arc::new(Writer {
            client,
            org: config.org.clone(),
            bucket: config.bucket.clone(),
            gzip: config.gzip,
            shared: Arc::clone(&shared),
        });
        let mut worker = Worker {
            shared: Arc::clone(&shared),
            writer,
            spool,
            flush_interval: config.flush_interval,
            backoff: Backoff::new(config.retry_initial_backoff, config.retry_max_backoff),
            failing: false,
            retry_at: Instant::now(),
            spool_turn: true,
            max_inflight: config.max_inflight_requests,
            tasks: JoinSet::new(),
            jobs: HashMap::new(),
            spool_inflight: false,
        };
        worker.update_spool_gauges();
        let task = tokio::spawn(
            worker
                .run()
                .instrument(tracing::info_span!("timeseries", url = %config.url.as_str())),
        );
        Ok(Self {
            handle: SinkHandle { shared },
            worker: Some(task),
        })
    }

    /// A cloneable handle for the tasks that submit points.
    pub fn handle(&self) -> SinkHandle {
        self.handle.clone()
    }

    /// See [`SinkHandle::submit`].
    pub fn submit(&self, point: Point) {
        self.handle.submit(point);
    }

    /// See [`SinkHandle::counters`].
    pub fn counters(&self) -> Counters {
        self.handle.counters()
    }

    /// See [`SinkHandle::flush`].
    pub async fn flush(&self) {
        self.handle.flush().await;
    }

    /// Stops cleanly: writes what is in memory to the database for at most `grace`, spools
    /// whatever is left (or drops and counts it without a spool), and stops the worker.
    /// The spool is not drained: the next start resumes it.
    pub async fn shutdown(mut self, grace: Duration) -> Counters {
        self.handle.shared.lock().closing_deadline = Some(Instant::now() + grace);
        self.handle.shared.wake.notify_one();
        if let Some(task) = self.worker.take() {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "time-series worker failed");
            }
        }
        self.handle.counters()
    }

    /// Stops the worker at once and waits until it is gone, as a crash would: points in
    /// memory are lost, the spool stays on disk. For tests of restart behaviour.
    #[doc(hidden)]
    pub async fn abort(mut self) {
        if let Some(task) = self.worker.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(task) = self.worker.take() {
            task.abort();
        }
    }
}

/// A batch being written and where it came from.
enum Job {
    Memory(Batch),
    Spool(SpoolRecord),
}

impl Job {
    fn points(&self) -> u32 {
        match self {
            Job::Memory(b) => b.points,
            Job::Spool(r) => r.points,
        }
    }
}

enum WriteError {
    /// Worth trying again later: the database is down, slow or misconfigured.
    Retry(String),
    /// The database refused the content: split it to find the bad points.
    Rejected(u16, String),
}

/// Pre-encoded line protocol handed to the client's streaming (gzip) write path as is.
struct RawLines(Vec<u8>);

impl influxdb2::models::WriteDataPoint for RawLines {
    fn write_data_point_to<W: io::Write>(&self, mut w: W) -> io::Result<()> {
        w.write_all(&self.0)
    }
}

/// What a write task needs: shared by the concurrent writes.
struct Writer {
    client: influxdb2::Client,
    org: String,
    bucket: String,
    gzip: bool,
    shared: Arc<Shared>,
}

impl Writer {
    /// Writes `bytes`; on a refusal of the content, halves it until the refused points are
    /// single lines, which are dropped and counted. Parts written before a retryable
    /// failure are written again with the whole batch later (writes are idempotent).
    async fn write_isolating(&self, bytes: Vec<u8>) -> Result<(), String> {
        let stats = &self.shared.stats;
        let mut parts = vec![bytes];
        while let Some(part) = parts.pop() {
            let lines = count_lines(&part);
            match self.send(part.clone()).await {
                Ok(()) => add(&stats.written, lines),
                Err(WriteError::Retry(reason)) => return Err(reason),
                Err(WriteError::Rejected(status, text)) => match split_lines(&part) {
                    Some((first, second)) => {
                        parts.push(second.to_vec());
                        parts.push(first.to_vec());
                    }
                    None => {
                        add(&stats.dropped_invalid, lines.max(1));
                        let line = String::from_utf8_lossy(&part);
                        let line: String = line.trim_end().chars().take(300).collect();
                        tracing::warn!(status, error = %text, line = %line, "time-series database refused a point: dropped");
                    }
                },
            }
        }
        Ok(())
    }

    /// One write request.
    async fn send(&self, body: Vec<u8>) -> Result<(), WriteError> {
        let result = if self.gzip {
            let stream = futures_util::stream::iter([RawLines(body)]);
            self.client
                .write_with_precision(&self.bucket, stream, TimestampPrecision::Milliseconds)
                .await
        } else {
            self.client
                .write_line_protocol_with_precision(
                    &self.org,
                    &self.bucket,
                    body,
                    TimestampPrecision::Milliseconds,
                )
                .await
        };
        result.map_err(classify)
    }
}

struct Worker {
    shared: Arc<Shared>,
    writer: Arc<Writer>,
    spool: Option<Spool>,
    flush_interval: Duration,
    /// Waits between probes of a failing database: doubling, no jitter (one writer).
    backoff: Backoff,
    failing: bool,
    retry_at: Instant,
    /// Whose turn it is when both the spool and memory have batches.
    spool_turn: bool,
    max_inflight: usize,
    /// Write requests under way, and their batches (kept here so a shutdown that cannot
    /// wait for them still spools them).
    tasks: JoinSet<Result<(), String>>,
    jobs: HashMap<tokio::task::Id, Job>,
    /// Spool records are written one at a time, so they are acknowledged in order.
    spool_inflight: bool,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let now = Instant::now();
            let (closing, seal_at) = self.seal_due(now);
            self.spill();
            if let Some(deadline) = closing {
                let empty = self.shared.lock().is_empty() && self.tasks.is_empty();
                if empty || now >= deadline || (self.failing && self.tasks.is_empty()) {
                    self.stop().await;
                    tracing::info!("time-series sink stopped");
                    return;
                }
            }
            self.notify_idle();
            while self.tasks.len() < self.max_inflight {
                // While failing, one probe at a time once the backoff has passed.
                if self.failing && (now < self.retry_at || !self.tasks.is_empty()) {
                    break;
                }
                match self.next_job(closing.is_none()) {
                    Some(job) => self.start(job),
                    None => break,
                }
            }
            let mut wake_at = seal_at;
            if self.failing && self.tasks.is_empty() && self.has_work() {
                wake_at = Some(wake_at.map_or(self.retry_at, |t| t.min(self.retry_at)));
            }
            if let Some(d) = closing {
                wake_at = Some(wake_at.map_or(d, |t| t.min(d)));
            }
            let far = now + Duration::from_secs(86_400);
            tokio::select! {
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finish(done);
                }
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at.unwrap_or(far)), if wake_at.is_some() => {}
            }
        }
    }

    /// Seals the open batch if it is due (age, flush or shutdown). Returns the shutdown
    /// deadline, if any, and when the open batch will be due.
    fn seal_due(&mut self, now: Instant) -> (Option<Instant>, Option<Instant>) {
        let mut b = self.shared.lock();
        let due = b.open_since.is_some_and(|t| now >= t + self.flush_interval);
        if due || b.flush_requested || b.closing_deadline.is_some() {
            b.seal();
            b.flush_requested = false;
        }
        (
            b.closing_deadline,
            b.open_since.map(|t| t + self.flush_interval),
        )
    }

    fn has_work(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| s.pending_points() > 0)
            || !self.shared.lock().sealed.is_empty()
    }

    /// Moves sealed batches to the spool: all of them while the database is failing, the
    /// oldest beyond half the memory bound while it is only slow.
    fn spill(&mut self) {
        if self.spool.is_none() {
            return;
        }
        let limit = if self.failing {
            0
        } else {
            self.shared.max_buffer_points / 2
        };
        loop {
            let batch = {
                let mut b = self.shared.lock();
                if b.sealed_points <= limit {
                    break;
                }
                b.pop()
            };
            match batch {
                Some(batch) => self.spool_batch(batch),
                None => break,
            }
        }
    }

    /// At shutdown: stops the writes still under way and puts everything in memory into
    /// the spool, or drops and counts it without one.
    async fn stop(&mut self) {
        self.tasks.abort_all();
        while let Some(done) = self.tasks.join_next_with_id().await {
            if let Ok((id, Ok(()))) = done {
                // Finished before the abort reached it.
                self.finish(Ok((id, Ok(()))));
            }
        }
        for (_, job) in std::mem::take(&mut self.jobs) {
            sub(&self.shared.stats.inflight, u64::from(job.points()));
            if let Job::Memory(batch) = job {
                self.keep_or_drop(batch);
            }
        }
        loop {
            let batch = {
                let mut b = self.shared.lock();
                b.seal();
                b.pop()
            };
            let Some(batch) = batch else { break };
            self.keep_or_drop(batch);
        }
        self.notify_idle();
    }

    fn keep_or_drop(&mut self, batch: Batch) {
        if self.spool.is_some() {
            self.spool_batch(batch);
        } else {
            add(
                &self.shared.stats.dropped_buffer_full,
                u64::from(batch.points),
            );
            tracing::warn!(
                points = batch.points,
                "time-series sink stopping without a spool: batch dropped"
            );
        }
    }

    fn spool_batch(&mut self, batch: Batch) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        let stats = &self.shared.stats;
        match spool.append(batch.points, &batch.bytes) {
            Ok(outcome) => {
                if outcome.refused {
                    add(&stats.dropped_spool_full, u64::from(batch.points));
                    tracing::warn!(
                        points = batch.points,
                        "time-series batch larger than the whole spool: dropped"
                    );
                } else {
                    add(&stats.spooled, u64::from(batch.points));
                }
                if outcome.dropped_points > 0 {
                    add(&stats.dropped_spool_full, outcome.dropped_points);
                    tracing::warn!(
                        points = outcome.dropped_points,
                        "time-series spool full: dropped its oldest points"
                    );
                }
            }
            Err(e) => {
                // The disk failed us: keep the batch in memory (bounded there) and go on.
                tracing::error!(error = %e, "time-series spool write failed");
                self.requeue(batch);
            }
        }
        self.update_spool_gauges();
    }

    fn requeue(&self, batch: Batch) {
        let mut b = self.shared.lock();
        b.sealed_points += batch.points as usize;
        b.sealed.push_front(batch);
    }

    fn update_spool_gauges(&mut self) {
        if let Some(s) = &self.spool {
            let stats = &self.shared.stats;
            stats.spool_bytes.store(s.bytes(), Ordering::Relaxed);
            stats
                .spool_points
                .store(s.pending_points(), Ordering::Relaxed);
            stats
                .spool_corrupt
                .store(s.corrupt_records(), Ordering::Relaxed);
        }
    }

    fn notify_idle(&self) {
        if self.shared.flushed(&self.shared.lock()) {
            self.shared.idle.notify_waiters();
        }
    }

    /// The next batch to write: spool and memory take turns; the spool is left alone at
    /// shutdown (`use_spool` false) and while one of its records is being written.
    fn next_job(&mut self, use_spool: bool) -> Option<Job> {
        let spool_ready = use_spool
            && !self.spool_inflight
            && self.spool.as_ref().is_some_and(|s| s.pending_points() > 0);
        let memory = if spool_ready && self.spool_turn {
            None
        } else {
            let mut b = self.shared.lock();
            let batch = b.pop();
            if let Some(batch) = &batch {
                // Counted as in flight under the lock, so flush() never sees it nowhere.
                add(&self.shared.stats.inflight, u64::from(batch.points));
            }
            batch
        };
        if let Some(batch) = memory {
            self.spool_turn = true;
            return Some(Job::Memory(batch));
        }
        if !spool_ready {
            return None;
        }
        self.spool_turn = false;
        let spool = self.spool.as_mut()?;
        match spool.peek() {
            Ok(Some(record)) => {
                add(&self.shared.stats.inflight, u64::from(record.points));
                Some(Job::Spool(record))
            }
            Ok(None) => None,
            Err(e) => {
                // Try again after a backoff, as after a failed write, rather than spin.
                tracing::error!(error = %e, "time-series spool read failed");
                self.failing = true;
                self.retry_at = Instant::now() + self.backoff.next_delay();
                None
            }
        }
    }

    fn start(&mut self, job: Job) {
        let body = match &job {
            Job::Memory(b) => b.bytes.clone(),
            Job::Spool(r) => {
                self.spool_inflight = true;
                r.payload.clone()
            }
        };
        let writer = Arc::clone(&self.writer);
        let handle = self
            .tasks
            .spawn(async move { writer.write_isolating(body).await }.in_current_span());
        self.jobs.insert(handle.id(), job);
    }

    fn finish(&mut self, done: Result<(tokio::task::Id, Result<(), String>), JoinError>) {
        let (id, result) = match done {
            Ok((id, result)) => (id, result),
            Err(e) => (e.id(), Err(format!("write task failed: {e}"))),
        };
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        sub(&self.shared.stats.inflight, u64::from(job.points()));
        if matches!(job, Job::Spool(_)) {
            self.spool_inflight = false;
        }
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!("time-series database is back");
                }
                self.failing = false;
                self.backoff.reset();
                self.shared.stats.up.store(true, Ordering::Relaxed);
                if let Job::Spool(record) = job
                    && let Some(spool) = self.spool.as_mut()
                {
                    if let Err(e) = spool.ack(record.pos) {
                        tracing::error!(error = %e, "time-series spool: cannot save position");
                    }
                    self.update_spool_gauges();
                }
            }
            Err(reason) => {
                add(&self.shared.stats.retries, 1);
                self.shared.stats.up.store(false, Ordering::Relaxed);
                let wait = self.backoff.next_delay();
                if self.failing {
                    tracing::debug!(error = %reason, retry_in = ?wait, "time-series write failed again");
                } else {
                    tracing::warn!(error = %reason, retry_in = ?wait, "time-series write failed: spooling until the database is back");
                }
                self.failing = true;
                self.retry_at = Instant::now() + wait;
                if let Job::Memory(batch) = job {
                    if self.spool.is_some() {
                        self.spool_batch(batch);
                    } else {
                        self.requeue(batch);
                    }
                }
            }
        }
        self.notify_idle();
    }
}

fn classify(e: RequestError) -> WriteError {
    match e {
        RequestError::Http { status, text } => match status.as_u16() {
            code @ (400 | 413 | 422) => WriteError::Rejected(code, text),
            code => WriteError::Retry(format!("HTTP {code}: {text}")),
        },
        other => WriteError::Retry(other.to_string()),
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Retry(r) => f.write_str(r),
            WriteError::Rejected(code, text) => write!(f, "HTTP {code}: {text}"),
        }
    }
}

fn count_lines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// Splits newline-terminated lines into two non-empty halves near the middle; `None` for a
/// single line.
fn split_lines(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = b.strip_suffix(b"\n").unwrap_or(b);
    let mid = body.len() / 2;
    let cut = body[mid..]
        .iter()
        .position(|&c| c == b'\n')
        .map(|i| mid + i)
        .or_else(|| body[..mid].iter().rposition(|&c| c == b'\n'))?;
    Some((&b[..=cut], &b[cut + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_lines_halves_at_line_boundaries() {
        assert_eq!(split_lines(b"a\n"), None);
        assert_eq!(split_lines(b"a"), None);
        assert_eq!(split_lines(b"a\nb\n"), Some((&b"a\n"[..], &b"b\n"[..])));
        let (x, y) = split_lines(b"aaaaaaaa\nb\nc\n").expect("three lines");
        assert_eq!((x, y), (&b"aaaaaaaa\n"[..], &b"b\nc\n"[..]));
        assert_eq!(count_lines(x) + count_lines(y), 3);
    }

    #[test]
    fn config_problems_are_reported_together() {
        let mut c = SinkConfig::new("ftp://x", "", "b", "");
        c.batch_size = 0;
        let Err(SinkError::Config(problems)) = c.build() else {
            panic!("invalid config accepted");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            SinkConfig::new("http://127.0.0.1:8086", "o", "b", "t")
                .build()
                .is_ok()
        );
        assert!(SinkConfig::new("not a url", "o", "b", "t").build().is_err());
    }

    #[test]
    fn config_defaults_and_durations_from_toml_values() {
        let c: SinkConfig = serde_json::from_value(serde_json::json!({
            "url": "http://127.0.0.1:8428", "org": "o", "bucket": "b", "token": "secret",
            "flush_interval": "250ms", "spool_dir": "/tmp/x"
        }))
        .expect("valid config");
        assert_eq!(c.flush_interval, Duration::from_millis(250));
        assert_eq!(c.batch_size, 5000);
        assert_eq!(c.spool_max_bytes, 1 << 30);
        assert!(!format!("{c:?}").contains("secret"));
        let unknown = serde_json::from_value::<SinkConfig>(serde_json::json!({
            "url": "http://x", "org": "o", "bucket": "b", "batchsize": 1
        }));
        assert!(unknown.is_err());
    }

    #[test]
    fn prometheus_lines() {
        let c = Counters {
            points_written: 7,
            dropped_invalid: 2,
            database_up: true,
            ..Counters::default()
        };
        let mut out = String::new();
        c.render_prometheus(&mut out);
        assert!(
            out.contains("\nalarmnet_tsdb_points_written_total 7\n"),
            "{out}"
        );
        assert!(out.contains("alarmnet_tsdb_points_dropped_total{reason=\"invalid\"} 2\n"));
        assert!(out.contains("alarmnet_tsdb_up 1\n"));
        assert!(out.contains("# TYPE alarmnet_tsdb_spool_bytes gauge\n"));
    }
}
