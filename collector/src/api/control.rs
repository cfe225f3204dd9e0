//! How acknowledgements and silences reach the single owner of alert state (the core).
//!
//! The API sends a [`ControlRequest`] on a bounded channel and awaits the reply; the core
//! applies it to its in-memory state, commits it to the store, announces it (an `ack`
//! event for acknowledgements) and replies. The API never writes alert state itself.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::events::EventHub;
use crate::model::{Ack, Alert, AlertId, Silence, SilenceId, UnixMillis};
use crate::store::{Store, StoreError};

/// Requests waiting for the core.
pub const DEFAULT_QUEUE: usize = 64;

/// How long the API waits for the core's answer before answering 503.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no such {what}: {id}")]
    NotFound { what: &'static str, id: String },
    #[error("alert {id} is already acknowledged by {by}")]
    AlreadyAcknowledged { id: String, by: String },
    #[error("silence {id} has already expired")]
    AlreadyExpired { id: String },
    #[error("{0}")]
    Unavailable(String),
}

impl ControlError {
    /// No `what` (an alert or a silence) with this id.
    pub fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        ControlError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        ControlError::Unavailable(format!("store: {e}"))
    }
}

/// The reply channel of a request.
pub type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

/// A write the core must apply.
#[derive(Debug)]
pub enum ControlRequest {
    /// Acknowledge the latest firing of alert `id`; reply with it, acknowledged. The core
    /// announces it with [`EventHub::publish_ack`] after the commit.
    Ack {
        id: AlertId,
        ack: Ack,
        reply: Reply<Alert>,
    },
    /// Add a silence (its `id` is chosen by the API); reply with it as stored.
    AddSilence {
        silence: Silence,
        reply: Reply<Silence>,
    },
    /// End silence `id` at `at` (a pending one ends before it starts: removed from effect);
    /// reply with it as it now stands, or as it was when it was pending.
    EndSilence {
        id: SilenceId,
        at: UnixMillis,
        reply: Reply<Silence>,
    },
}

/// The API's side of the control channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::Sender<ControlRequest>,
}

impl Control {
    /// A control channel; the receiver goes to the core.
    pub fn channel(queue: usize) -> (Control, mpsc::Receiver<ControlRequest>) {
        let (tx, rx) = mpsc::channel(queue.max(1));
        (Control { tx }, rx)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> ControlRequest,
    ) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        let closed = || ControlError::Unavailable("the collector's core is not running".into());
        let send = self.tx.send(make(reply));
        match tokio::time::timeout(REPLY_TIMEOUT, async {
            send.await.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ControlError::Unavailable(
                "the collector's core did not answer in time".into(),
            )),
        }
    }

    pub async fn ack(&self, id: AlertId, ack: Ack) -> Result<Alert, ControlError> {
        self.ask(|reply| ControlRequest::Ack { id, ack, reply })
            .await
    }

    pub async fn add_silence(&self, silence: Silence) -> Result<Silence, ControlError> {
        self.ask(|reply| ControlRequest::AddSilence { silence, reply })
            .await
    }

    pub async fn end_silence(
        &self,
        id: SilenceId,
        at: UnixMillis,
    ) -> Result<Silence, ControlError> {
        self.ask(|reply| ControlRequest::EndSilence { id, at, reply })
            .await
    }
}

/// Serves control requests straight against the store, announcing acks on `events`.
///
/// Correct only while no other task keeps alert or silence state in memory: it stands in
/// for the core until the core owns alert state (then the core serves the receiver and this
/// must not run). Ends when every [`Control`] is dropped.
pub async fn serve_with_store(
    mut rx: mpsc::Receiver<ControlRequest>,
    store: Store,
    events: EventHub,
) {
    while let Some(request) = rx.recv().await {
        match request {
            ControlRequest::Ack { id, ack, reply } => {
                let result = ack_in_store(&store, id, ack).await;
                if let Ok(alert) = &result {
                    events.publish_ack(alert);
                }
                let _ = reply.send(result);
            }
            ControlRequest::AddSilence { silence, reply } => {
                let result = store
                    .upsert_silence(silence.clone())
                    .await
                    .map(|()| silence)
                    .map_err(ControlError::from);
                let _ = reply.send(result);
            }
            ControlRequest::EndSilence { id, at, reply } => {
                let _ = reply.send(end_in_store(&store, id, at).await);
            }
        }
    }
}

async fn ack_in_store(store: &Store, id: AlertId, ack: Ack) -> Result<Alert, ControlError> {
    store
        .call(move |db| {
            let Some(latest) = db.latest_alert(id)? else {
                return Ok(Err(ControlError::not_found("alert", id)));
            };
            if let Some(previous) = latest.ack {
                return Ok(Err(ControlError::AlreadyAcknowledged {
                    id: id.to_string(),
                    by: previous.by,
                }));
            }
            Ok(db
                .ack_alert(id, &ack)?
                .ok_or_else(|| ControlError::not_found("alert", id)))
        })
        .await?
}

async fn end_in_store(
    store: &Store,
    id: SilenceId,
    at: UnixMillis,
) -> Result<Silence, ControlError> {
    store
        .call(move |db| {
            let Some(mut silence) = db.silences(None)?.into_iter().find(|s| s.id == id) else {
                return Ok(Err(ControlError::not_found("silence", id)));
            };
            if silence.ends_at <= at {
                return Ok(Err(ControlError::AlreadyExpired { id: id.to_string() }));
            }
            db.end_silence(id, at)?;
            if silence.starts_at <= at {
                silence.ends_at = at;
            }
            Ok(Ok(silence))
        })
        .await?
}
