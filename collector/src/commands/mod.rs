//! Every command the collector publishes (`cmd` topics): drill tests and rebirth requests
//! leave through one output task, the [`Commander`], which signs them when a key is
//! configured and paces them with a token bucket, so asking 100 000 nodes never floods the
//! broker.
//!
//! ```text
//!  drills task ──DrillJob──┐
//!  core, mqtt link ─rebirth┴─[QUEUE 1 024]──► commander: sign (ts, exp, kid, sig), pace
//!                                             (commands.rate per s) ──► MQTT publish QoS 1
//! ```
//!
//! Design: a drill is handed over as one job holding its node list, not as one message per
//! node, so the queue stays small whatever the drill's size; the commander walks the list
//! at the configured rate, counts what it sent in the job's shared counter, and stops early
//! when the job's cancellation token fires. Rebirth requests go before the next drill
//! command (they are rare and unblock a node's registration) but are paced by the same
//! bucket. Without a key file commands go out unsigned: only agents configured with
//! `allow_unsigned = true` run them.

pub mod config;
pub mod key;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use alarmnet_protocol::signing::CommandKey;
use alarmnet_protocol::{
    CmdAction, CmdId, Command, Envelope, Message, Name, NodePath, NodeTopic, Prefix, Topic,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::UnixMillis;

pub use config::CommandsConfig;

/// Requests waiting for the commander (drill jobs and rebirths).
pub const QUEUE: usize = 1024;

/// How often a commander waiting for the broker link looks again.
const LINK_WAIT: Duration = Duration::from_millis(100);

/// Publishes one QoS 1, non-retained message. The collector's MQTT client in production;
/// tests record what would be sent.
pub trait Publisher: Send + 'static {
    fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

impl Publisher for rumqttc::AsyncClient {
    async fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        rumqttc::AsyncClient::publish(self, topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A publisher that drops everything (API tests, which need drills but no broker).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Discard;

#[cfg(test)]
impl Publisher for Discard {
    async fn publish(&mut self, _topic: String, _payload: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
}

/// Makes commands: signed with the collector's key when there is one.
#[derive(Debug, Clone)]
pub struct Signer {
    key: Option<Arc<CommandKey>>,
    ttl: Duration,
}

impl Signer {
    /// `ttl`: how long after it is made a command may still start (`exp = ts + ttl`).
    pub fn new(key: Option<Arc<CommandKey>>, ttl: Duration) -> Self {
        Self { key, ttl }
    }

    pub fn is_signing(&self) -> bool {
        self.key.is_some()
    }

    /// The `cmd` publish (topic, payload) for `path`, made at `now`, expiring at
    /// `now + ttl` or at `until` if that is sooner (a drill's deadline: a test started after
    /// it could only produce a late receipt).
    pub fn command(
        &self,
        prefix: &Prefix,
        path: &NodePath,
        id: CmdId,
        action: CmdAction,
        now: UnixMillis,
        until: Option<UnixMillis>,
    ) -> (String, Vec<u8>) {
        let topic = Topic::Node(path.clone(), NodeTopic::Command);
        let command = match &self.key {
            Some(key) => {
                let mut exp = now + self.ttl;
                if let Some(until) = until {
                    exp = exp.min(until.max(now));
                }
                key.seal(
                    &topic.format(prefix),
                    id,
                    action,
                    now.as_millis(),
                    exp.as_millis(),
                )
            }
            None => Command {
                id,
                action,
                seal: None,
            },
        };
        Envelope {
            topic,
            message: Message::Command(command),
        }
        .encode(prefix)
    }
}

/// Asks every listed node to run test `test` under command id `id` (the drill's id).
#[derive(Debug)]
pub struct DrillJob {
    pub id: CmdId,
    pub test: Name,
    /// The drill's deadline: no command is sent after it, and none expires later.
    pub deadline: UnixMillis,
    pub nodes: Vec<NodePath>,
    /// Fired when the drill is cancelled: the rest of the list is not sent.
    pub cancel: CancellationToken,
    /// Commands of this job published so far.
    pub sent: Arc<AtomicU64>,
}

#[derive(Debug)]
enum Outgoing {
    Rebirth(NodePath),
    Drill(DrillJob),
}

/// The handle other tasks send commands through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Commands {
    tx: mpsc::Sender<Outgoing>,
}

/// The commander has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the command sender has stopped")]
pub struct Stopped;

impl Commands {
    /// A handle and the receiver to give [`Commander::run`].
    pub fn channel() -> (Commands, CommandQueue) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Commands { tx }, CommandQueue(rx))
    }

    /// Asks the node at `path` to publish its birth again. Never waits (the MQTT link calls
    /// it from the task that drains the client); `false` when the queue is full or closed.
    pub fn rebirth(&self, path: NodePath) -> bool {
        self.tx.try_send(Outgoing::Rebirth(path)).is_ok()
    }

    /// Queues a drill's commands (waits while the queue is full).
    pub async fn drill(&self, job: DrillJob) -> Result<(), Stopped> {
        self.tx
            .send(Outgoing::Drill(job))
            .await
            .map_err(|_| Stopped)
    }
}

/// The receiving end of [`Commands`].
#[derive(Debug)]
pub struct CommandQueue(mpsc::Receiver<Outgoing>);

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        // 50 ms worth: smooth enough for the broker, coarse enough for a 1 ms timer.
        let burst = (rate / 20.0).max(1.0);
        Self {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    async fn take(&mut self) {
        loop {
            let now = Instant::now();
            let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.burst);
            self.last = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

/// The output task that publishes commands. See the module documentation.
pub struct Commander<P> {
    publisher: P,
    prefix: Prefix,
    signer: Signer,
    /// Commands per second.
    rate: u32,
    clock: crate::model::Clock,
    /// The MQTT link's state: while it is down nothing is handed to the client.
    link: Option<Arc<crate::metrics::Metrics>>,
}

impl<P> std::fmt::Debug for Commander<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commander")
            .field("rate", &self.rate)
            .field("signing", &self.signer.is_signing())
            .finish_non_exhaustive()
    }
}

/// What [`Commander::run`] did, for the log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub drill_commands: u64,
    pub rebirths: u64,
    pub failed: u64,
}

impl<P: Publisher> Commander<P> {
    pub fn new(publisher: P, prefix: Prefix, signer: Signer, rate: u32) -> Self {
        Self {
            publisher,
            prefix,
            signer,
            rate,
            clock: crate::model::system_clock(),
            link: None,
        }
    }

    /// Sends only while `metrics.mqtt_connected` says the broker link is up.
    ///
    /// Design: the client's request queue is shared with the MQTT link, which must be able
    /// to subscribe again after a reconnect; publishing into it during an outage would fill
    /// it (a drill has up to 100 000 commands) and leave no room for that subscribe. So
    /// commands wait while the link is down (the drill's deadline still applies).
    pub fn with_link(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.link = Some(metrics);
        self
    }

    fn link_down(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|m| !m.mqtt_connected.load(Relaxed))
    }

    /// The same commander with another wall clock for `ts`/`exp` (tests).
    pub fn with_clock(mut self, clock: crate::model::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Sends until every [`Commands`] handle is dropped or `shutdown`.
    pub async fn run(mut self, queue: CommandQueue, shutdown: CancellationToken) -> Sent {
        let CommandQueue(mut rx) = queue;
        let mut bucket = Bucket::new(self.rate);
        let mut rebirths: VecDeque<NodePath> = VecDeque::new();
        let mut jobs: VecDeque<(DrillJob, usize)> = VecDeque::new();
        let mut sent = Sent::default();
        let mut open = true;
        loop {
            while let Ok(m) = rx.try_recv() {
                enqueue(m, &mut rebirths, &mut jobs);
            }
            // Finished, cancelled and overdue jobs leave the queue.
            let now = (self.clock)();
            while let Some((job, next)) = jobs.front() {
                if *next < job.nodes.len() && !job.cancel.is_cancelled() && now < job.deadline {
                    break;
                }
                if *next < job.nodes.len() {
                    tracing::info!(drill = %job.id, sent = next, of = job.nodes.len(), "drill commands stopped (cancelled or past the deadline)");
                }
                jobs.pop_front();
            }
            if rebirths.is_empty() && jobs.is_empty() {
                if !open {
                    break;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = rx.recv() => match m {
                        Some(m) => enqueue(m, &mut rebirths, &mut jobs),
                        None => open = false,
                    },
                }
                continue;
            }
            if self.link_down() {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(LINK_WAIT) => {}
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = bucket.take() => {}
            }
            let now = (self.clock)();
            let (topic, payload, drill) = if let Some(path) = rebirths.pop_front() {
                let Ok(id) = CmdId::new(format!("rebirth-{now}")) else {
                    continue;
                };
                let (t, p) =
                    self.signer
                        .command(&self.prefix, &path, id, CmdAction::Rebirth, now, None);
                (t, p, None)
            } else if let Some((job, next)) = jobs.front_mut() {
                let Some(path) = job.nodes.get(*next) else {
                    continue;
                };
                *next += 1;
                let action = CmdAction::Test {
                    test: job.test.clone(),
                };
                let (t, p) = self.signer.command(
                    &self.prefix,
                    path,
                    job.id.clone(),
                    action,
                    now,
                    Some(job.deadline),
                );
                (t, p, Some(job.sent.clone()))
            } else {
                continue;
            };
            let published = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.publisher.publish(topic, payload) => r,
            };
            match (published, drill) {
                (Ok(()), Some(counter)) => {
                    counter.fetch_add(1, Relaxed);
                    sent.drill_commands += 1;
                }
                (Ok(()), None) => sent.rebirths += 1,
                (Err(e), _) => {
                    sent.failed += 1;
                    if sent.failed.is_power_of_two() {
                        tracing::warn!(error = %e, failed = sent.failed, "cannot publish a command");
                    }
                }
            }
        }
        tracing::info!(
            drill_commands = sent.drill_commands,
            rebirths = sent.rebirths,
            failed = sent.failed,
            "command sender stopped"
        );
        sent
    }
}

fn enqueue(m: Outgoing, rebirths: &mut VecDeque<NodePath>, jobs: &mut VecDeque<(DrillJob, usize)>) {
    match m {
        Outgoing::Rebirth(path) => rebirths.push_back(path),
        Outgoing::Drill(job) => jobs.push_back((job, 0)),
    }
}

#[cfg(test)]
mod tests;
