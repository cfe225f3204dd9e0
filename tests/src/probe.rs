//! [`MqttProbe`]: a test's own MQTT client. It records every message it receives on its
//! subscriptions and publishes at QoS 1, returning only once the broker has acknowledged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::ids::unique_id;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// Large enough for the oversized payloads tests send on purpose (rumqttc's default is 10 KiB).
const MAX_PACKET_BYTES: usize = 4 * 1024 * 1024;

/// One message the probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Set when the broker delivered a stored retained message (on subscribe); live
    /// messages arrive with it cleared, even if they were published retained.
    pub retain: bool,
}

impl Received {
    /// The payload as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload parsed as JSON. Panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                self.text()
            )
        })
    }
}

/// A clean-session MQTT 3.1.1 client with a unique id, subscribed at QoS 1.
///
/// Received messages wait in an unbounded queue until the test reads them: a probe must
/// never slow the broker down or drop what the test is looking for. After a broker restart
/// it reconnects and subscribes again by itself.
#[derive(Debug)]
pub struct MqttProbe {
    id: String,
    client: AsyncClient,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    filters: Arc<Mutex<Vec<String>>>,
    suback_count: watch::Receiver<u64>,
    /// Held across one publish and its PUBACK, so any PUBACK is the current publish's.
    publishing: tokio::sync::Mutex<()>,
    puback: Arc<Mutex<Option<oneshot::Sender<()>>>>,
    task: JoinHandle<()>,
}

impl MqttProbe {
    /// Connects to the broker on `127.0.0.1:port` and subscribes to `filter` (e.g.
    /// `alarmnet/v1/#`); returns once the broker has acknowledged the subscription.
    pub async fn connect(port: u16, filter: &str) -> MqttProbe {
        let id = unique_id("probe");
        let mut options = MqttOptions::new(id.clone(), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        let (client, eventloop) = AsyncClient::new(options, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        let (suback_tx, suback_rx) = watch::channel(0);
        let filters = Arc::new(Mutex::new(Vec::new()));
        let puback = Arc::new(Mutex::new(None));
        let task = tokio::spawn(run(
            eventloop,
            client.clone(),
            tx,
            Arc::clone(&filters),
            suback_tx,
            Arc::clone(&puback),
        ));
        let probe = MqttProbe {
            id,
            client,
            received: tokio::sync::Mutex::new(rx),
            filters,
            suback_count: suback_rx,
            publishing: tokio::sync::Mutex::new(()),
            puback,
            task,
        };
        probe.subscribe(filter).await;
        probe
    }

    /// The MQTT client id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds a subscription at QoS 1 and waits for the broker's SUBACK.
    pub async fn subscribe(&self, filter: &str) {
        lock(&self.filters).push(filter.to_owned());
        let mut subacks = self.suback_count.clone();
        let before = *subacks.borrow_and_update();
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("queue SUBSCRIBE");
        tokio::time::timeout(CONNECT_TIMEOUT, subacks.wait_for(|n| *n > before))
            .await
            .unwrap_or_else(|_| panic!("probe {}: no SUBACK for {filter:?}", self.id))
            .expect("probe event loop alive");
    }

    /// Publishes at QoS 1 and waits until the broker has acknowledged it (PUBACK).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let _one_at_a_time = self.publishing.lock().await;
        let (tx, rx) = oneshot::channel();
        *lock(&self.puback) = Some(tx);
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .expect("queue PUBLISH");
        tokio::time::timeout(ACK_TIMEOUT, rx)
            .await
            .unwrap_or_else(|_| panic!("probe {}: no PUBACK for a publish on {topic}", self.id))
            .expect("probe event loop alive");
    }

    /// The next received message for which `matches(topic, payload)` holds, waiting up to
    /// `timeout`. Messages that do not match are consumed and discarded. `None` on timeout.
    pub async fn next_matching(
        &self,
        timeout: Duration,
        mut matches: impl FnMut(&str, &[u8]) -> bool,
    ) -> Option<Received> {
        let mut received = self.received.lock().await;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, received.recv()).await {
                Ok(Some(message)) if matches(&message.topic, &message.payload) => {
                    return Some(message);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next received message, whatever it is, waiting up to `timeout`.
    pub async fn next(&self, timeout: Duration) -> Option<Received> {
        self.next_matching(timeout, |_, _| true).await
    }

    /// Everything received from now until `duration` has passed (including what was
    /// already queued).
    pub async fn collect_for(&self, duration: Duration) -> Vec<Received> {
        let mut received = self.received.lock().await;
        let deadline = tokio::time::Instant::now() + duration;
        let mut out = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, received.recv()).await {
            out.push(message);
        }
        out
    }

    /// Everything already queued, without waiting.
    pub async fn drain(&self) -> Vec<Received> {
        let mut received = self.received.lock().await;
        let mut out = Vec::new();
        while let Ok(message) = received.try_recv() {
            out.push(message);
        }
        out
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drives the connection: records publishes, counts SUBACKs, forwards PUBACKs, and
/// re-subscribes after a reconnect that lost the session.
async fn run(
    mut eventloop: EventLoop,
    client: AsyncClient,
    received: mpsc::UnboundedSender<Received>,
    filters: Arc<Mutex<Vec<String>>>,
    subacks: watch::Sender<u64>,
    puback: Arc<Mutex<Option<oneshot::Sender<()>>>>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let _ = received.send(Received {
                    topic: publish.topic,
                    payload: publish.payload.to_vec(),
                    retain: publish.retain,
                });
            }
            Ok(Event::Incoming(Packet::ConnAck(connack))) if !connack.session_present => {
                // A fresh session has no subscriptions: restore them. `try_` because this
                // task is the one that drains the request queue.
                for filter in lock(&filters).iter() {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                subacks.send_modify(|n| *n += 1);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                if let Some(tx) = lock(&puback).take() {
                    let _ = tx.send(());
                }
            }
            Ok(_) => {}
            Err(_) => {
                // Broker down or restarting: polling again reconnects. Back off so a refused
                // connection does not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
