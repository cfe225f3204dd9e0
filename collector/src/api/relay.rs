//! The event stream across the collectors of one PostgreSQL store: each collector sends
//! its own events (transitions, alerts, acks, readiness, drills) with `NOTIFY` and
//! publishes the others' (`LISTEN`) to its subscribers, so the console on a standby, or
//! on any region shard, shows the whole network live.
//!
//! Design: PostgreSQL's notifications, not another broker: every collector already has
//! the database, and a notification reaches every listener in commit order. A
//! notification carries at most about 8000 bytes; an event larger than that (a drill's
//! full tally on a very large drill) reaches only the collector that made it, and is
//! counted in the log. Sending never blocks the collector: the queue to the sending
//! thread is bounded, and what does not fit is dropped for the others (logged).
//! Event ids stay each collector's own: a client that reconnects to another collector
//! resynchronises, as after a restart.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::events::{EventHub, EventKind};

/// The notification channel.
pub const CHANNEL: &str = "alarmnet_events";

/// The largest notification PostgreSQL takes is 8000 bytes; room is left for the header.
const MAX_PAYLOAD: usize = 7_900;

/// Events waiting for the sending thread.
const QUEUE: usize = 10_000;

/// Separates the origin, the kind and the data in a payload.
const SEP: char = '\u{1f}';

/// Starts relaying: this collector's events (from `hub`) to the others, theirs to `hub`.
/// `origin` names this collector (its MQTT client id). Both threads stop at `shutdown`.
pub fn start(
    config: crate::store::pg::PgTarget,
    origin: String,
    hub: EventHub,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel(QUEUE);
    hub.relay_to(tx);
    {
        let (config, origin, shutdown) = (config.clone(), origin.clone(), shutdown.clone());
        std::thread::Builder::new()
            .name("alarmnet-relay-out".into())
            .spawn(move || send(&config, &origin, rx, &shutdown))?;
    }
    std::thread::Builder::new()
        .name("alarmnet-relay-in".into())
        .spawn(move || listen(&config, &origin, &hub, &shutdown))?;
    Ok(())
}

fn connect(
    config: &crate::store::pg::PgTarget,
    shutdown: &CancellationToken,
) -> Option<postgres::Client> {
    while !shutdown.is_cancelled() {
        match config.connect() {
            Ok(c) => return Some(c),
            Err(e) => {
                let error = crate::store::StoreError::from(e);
                tracing::warn!(%error, "event relay: cannot connect to the store; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    None
}

fn send(
    config: &crate::store::pg::PgTarget,
    origin: &str,
    mut rx: mpsc::Receiver<(EventKind, String)>,
    shutdown: &CancellationToken,
) {
    let mut client = None;
    while let Some((kind, data)) = rx.blocking_recv() {
        if shutdown.is_cancelled() {
            return;
        }
        let payload = format!("{origin}{SEP}{}{SEP}{data}", kind.as_str());
        if payload.len() > MAX_PAYLOAD {
            tracing::warn!(
                kind = kind.as_str(),
                bytes = payload.len(),
                "event too large to relay to the other collectors"
            );
            continue;
        }
        if client.is_none() {
            client = connect(config, shutdown);
        }
        let Some(c) = client.as_mut() else { return };
        if let Err(e) = c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]) {
            tracing::warn!(error = %e, "event relay: cannot send an event");
            client = None;
        }
    }
}

fn listen(
    config: &crate::store::pg::PgTarget,
    origin: &str,
    hub: &EventHub,
    shutdown: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let Some(mut client) = connect(config, shutdown) else {
            return;
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %e, "event relay: cannot listen");
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        tracing::debug!("event relay: listening");
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let mut notifications = client.notifications();
            let mut batch = notifications.timeout_iter(Duration::from_millis(200));
            let next = batch.next();
            match next {
                Ok(Some(n)) => publish(n.payload(), origin, hub),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "event relay: the listening connection failed; reconnecting");
                    break;
                }
            }
        }
    }
}

/// Publishes another collector's event to this collector's subscribers.
fn publish(payload: &str, origin: &str, hub: &EventHub) {
    let mut parts = payload.splitn(3, SEP);
    let (Some(from), Some(kind), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        tracing::warn!("event relay: an unreadable notification");
        return;
    };
    if from == origin {
        return;
    }
    match EventKind::parse(kind) {
        Some(kind) => {
            hub.publish_here(kind, data.to_owned());
        }
        None => tracing::warn!(kind, "event relay: an unknown event kind"),
    }
}
