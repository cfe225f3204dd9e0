//! The MQTT link: one task polls rumqttc's event loop, feeds publishes through [`Ingest`] into
//! the core's bounded channel, keeps the subscription and the collector's own retained
//! `$collector/{id}/state` alive, and reports the broker going up and down.
//!
//! Design: a persistent session (clean session off, fixed client id) at QoS 1, so the broker
//! queues for the collector while it restarts. rumqttc does not restore subscriptions when
//! the broker lost the session, so every ConnAck with `session_present = false` subscribes
//! again. When the core's channel is full this task waits: it stops reading, TCP pushes
//! back, and the broker queues (it never drops what it already PUBACKed to an agent unless
//! its own `max_queued_messages` overflows; the shipped broker config raises it).
//!
//! Link checks: on every ConnAck, and whenever a Will is forwarded while no check is out, the
//! link publishes a marker (a non-retained `online` on its own `$collector/{id}/state` with
//! a unique `ts`) and reports its echo as [`CoreEvent::LinkConfirmed`]: everything received
//! before the echo came from a broker that was still routing. See
//! [`crate::liveness::wills`] for what the core does with it. A marker with no packet at all
//! from the broker for [`LINK_CHECK_TIMEOUT`] means a link that only looks up: it is
//! reported lost and re-established. With nothing received for [`LINK_IDLE_CHECK`] the link
//! checks itself too, so the core (which judges liveness deadlines only up to the last
//! moment it heard the broker) keeps judging on a quiet network.
//!
//! The link's configuration is here too: [`MqttConfig`] (`[mqtt]` as written) builds the
//! checked [`MqttSettings`] once at load (the parsed [`Broker`], collector id and prefix).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use alarmnet_protocol::{
    CollectorId, CollectorState, Message, NodePath, NodeState, Prefix, Topic, V1,
};
use alarmnet_runtime::{Backoff, Jitter};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use serde::Deserialize;

use super::{CoreEvent, Ingest, NodeMessage};
use crate::metrics::Metrics;
use crate::model::{Clock, UnixMillis};
use crate::secret::{self, Secret};

/// The largest packet read from the broker. Payloads above 16 KiB are rejected as
/// `too_large` after reading; a packet above this limit makes rumqttc drop the connection,
/// so the broker should cap message sizes well below it (`message_size_limit`).
const MAX_INCOMING_PACKET: usize = 16 * 1024 * 1024;

/// Requests (publishes, subscribes) waiting for the event loop.
const REQUEST_CAPACITY: usize = 1024;

/// Most node messages handed to the core at once (see [`Burst`]).
const MAX_BURST: usize = 256;

/// rumqttc (0.25) takes at most this many packets per read of its buffer and acknowledges
/// them with one write; a read that brought fewer found the socket drained.
const FULL_READ: usize = 9;

/// After a read that drained the socket, the link waits this long before reading again,
/// when fewer than [`BUSY`] messages arrived since its last such decision.
///
/// Design: at a moderate rate (tens of thousands of heartbeats a second) a link that reads
/// as soon as anything arrives takes a few messages per read, and pays a read, a PUBACK
/// write, a wake of the core and a sleep in the kernel for each few: most of the
/// collector's kernel time per heartbeat. Waiting a millisecond lets the broker queue a
/// read's worth. It costs at most that millisecond of latency (receive times are stamped
/// when read, against deadlines of seconds). It must not cost throughput: while the link
/// waits the broker sends at most its in-flight limit (`max_inflight_messages`, 100 in the
/// tests, 1000 shipped), so pausing after every drained read would cap the rate at that
/// limit per millisecond. Hence the pause only when traffic is sparse: once [`BUSY`] or
/// more messages came since the last decision, the link reads on without pausing. This
/// holds only while the broker's in-flight limit is above [`BUSY`]: with Mosquitto's
/// default of 20 the link would keep pausing and take at most 20 messages a millisecond.
const READ_PAUSE: Duration = Duration::from_millis(1);

/// Messages between two drained reads from which the link no longer pauses (see
/// [`READ_PAUSE`]): well under the broker's in-flight limit.
const BUSY: usize = 48;

/// A link check whose marker has not come back, with nothing at all received from the broker
/// for this long, declares the connection lost.
pub const LINK_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// With nothing received for this long, the link checks itself: the core judges liveness
/// deadlines only up to the last moment it heard the broker, so a quiet network still needs
/// a sign of the broker about once a second.
pub const LINK_IDLE_CHECK: Duration = Duration::from_secs(1);

/// `[mqtt]`: the broker the collector subscribes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    #[serde(default = "default_broker")]
    pub broker: String,
    /// The MQTT client id. It must stay the same across restarts: the broker keeps the
    /// persistent session (and queues messages while the collector restarts) under it. It is
    /// also the collector's id in `{prefix}/$collector/{client_id}/state`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The topic prefix shared with the agents.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    pub username: Option<String>,
    /// The broker password; better `password_file` or `ALARMNET_MQTT__PASSWORD`.
    pub password: Option<Secret>,
    /// A file holding the password; a relative name is looked up in systemd's
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when it is set.
    pub password_file: Option<PathBuf>,
    /// The broker sees the collector as gone after 1.5 × keep-alive without a packet.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// The longest wait between reconnection attempts (backoff doubles up to this).
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Trust anchors and client identity for `mqtts://`.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `[mqtt.tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates that sign the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for brokers that authenticate clients by certificate.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

fn default_broker() -> String {
    "mqtt://127.0.0.1:1883".into()
}
fn default_client_id() -> String {
    "alarmnet-collector-1".into()
}
fn default_prefix() -> String {
    alarmnet_protocol::DEFAULT_PREFIX.into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

impl MqttConfig {
    /// The checked settings, or every problem under `mqtt.`. A relative `password_file`
    /// is looked up in `credentials` (systemd's `$CREDENTIALS_DIRECTORY`) when given.
    pub fn build(&self, credentials: Option<&Path>) -> Result<MqttSettings, Vec<String>> {
        let mut errors = Vec::new();
        let broker = parse_broker(&self.broker)
            .map_err(|e| errors.push(format!("mqtt.broker: {e}")))
            .ok();
        let collector_id = CollectorId::new(self.client_id.clone())
            .map_err(|e| errors.push(format!("mqtt.client_id: {e}")))
            .ok();
        let prefix = Prefix::new(self.prefix.clone())
            .map_err(|e| errors.push(format!("mqtt.prefix: {e}")))
            .ok();
        let tls = check(self, broker.as_ref(), &mut errors);
        let mut password = self.password.clone();
        if let Some(file) = &self.password_file {
            if password.is_some() {
                errors.push(
                    "mqtt.password_file: set together with mqtt.password; give only one".into(),
                );
            } else {
                match secret::read_file("mqtt.password_file", file, credentials) {
                    Ok(p) => password = Some(p),
                    Err(e) => errors.push(e),
                }
            }
        }
        match (broker, collector_id, prefix) {
            (Some(broker), Some(collector_id), Some(prefix)) if errors.is_empty() => {
                Ok(MqttSettings {
                    broker,
                    collector_id,
                    prefix,
                    username: self.username.clone(),
                    password,
                    keep_alive: self.keep_alive,
                    reconnect_max: self.reconnect_max,
                    tls,
                })
            }
            _ => Err(errors),
        }
    }
}

/// The broker's address, parsed from `mqtt.broker`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `mqtts://`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// `[mqtt]`, checked and parsed once at load, with the password read from its file.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    pub broker: Broker,
    /// The client id, which is also the collector's id in its `$collector` topics.
    pub collector_id: CollectorId,
    pub prefix: Prefix,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub keep_alive: Duration,
    pub reconnect_max: Duration,
    /// The CA and client certificate files, read at load; `Some` exactly for `mqtts://`.
    pub tls: Option<MqttTls>,
}

/// The PEM files of `[mqtt.tls]`, read and checked once at load.
#[derive(Clone)]
pub struct MqttTls {
    /// The CA certificates that sign the broker's certificate.
    pub ca: Vec<u8>,
    /// The client certificate chain and its private key, when the broker asks for one.
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for MqttTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTls")
            .field("ca_bytes", &self.ca.len())
            .field("client_auth", &self.client_auth.is_some())
            .finish()
    }
}

/// Every problem of `[mqtt]` but its password file, with its key; for an `mqtts://`
/// broker, the TLS files read.
fn check(m: &MqttConfig, broker: Option<&Broker>, errors: &mut Vec<String>) -> Option<MqttTls> {
    let tls = broker.is_some_and(|b| b.tls);
    if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
        errors.push("mqtt.password: set without mqtt.username".into());
    }
    if m.keep_alive < Duration::from_secs(5) {
        errors.push(format!(
            "mqtt.keep_alive: {} is below the 5s minimum",
            humantime::format_duration(m.keep_alive)
        ));
    }
    if m.reconnect_max < Duration::from_millis(100) {
        errors.push("mqtt.reconnect_max: must be at least 100ms".into());
    }
    let t = &m.tls;
    if !tls && (t.ca_file.is_some() || t.cert_file.is_some() || t.key_file.is_some()) {
        errors.push("mqtt.tls: set, but mqtt.broker is not an mqtts:// URL".into());
    }
    if tls && t.ca_file.is_none() {
        errors.push("mqtt.tls.ca_file: required for an mqtts:// broker".into());
    }
    if t.cert_file.is_some() != t.key_file.is_some() {
        errors.push("mqtt.tls: cert_file and key_file go together".into());
    }
    if !tls {
        return None;
    }
    // A swapped or truncated file is refused here, not at every reconnection.
    let mut read = Vec::new();
    for (key, file, label) in [
        ("ca_file", &t.ca_file, "CERTIFICATE"),
        ("cert_file", &t.cert_file, "CERTIFICATE"),
        ("key_file", &t.key_file, "PRIVATE KEY"),
    ] {
        let Some(f) = file else { continue };
        match std::fs::read(f) {
            Err(e) => errors.push(format!("mqtt.tls.{key}: {}: {e}", f.display())),
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let holds = text
                    .lines()
                    .any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&format!("{label}-----")));
                if holds {
                    read.push((key, bytes));
                } else {
                    errors.push(format!(
                        "mqtt.tls.{key}: {}: not a PEM file with a {label}",
                        f.display()
                    ));
                }
            }
        }
    }
    let mut take = |key: &str| {
        read.iter()
            .position(|(k, _)| *k == key)
            .map(|i| read.swap_remove(i).1)
    };
    let ca = take("ca_file")?;
    let client_auth = match (take("cert_file"), take("key_file")) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    Some(MqttTls { ca, client_auth })
}

/// `mqtt://host[:port]` or `mqtts://host[:port]`.
fn parse_broker(url: &str) -> Result<Broker, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("{url:?} must be scheme://host[:port] with no path"));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = match rest.rsplit_once(':') {
        // A bare IPv6 address without brackets: no port.
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (rest, default_port),
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("{url:?}: port {p:?} is not a number 1-65535"))?,
        ),
        None => (rest, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("{url:?} needs a host and a port 1-65535"));
    }
    Ok(Broker {
        tls,
        host: host.to_owned(),
        port,
    })
}

/// The collector's topics under its prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    pub prefix: Prefix,
    pub collector: CollectorId,
    /// On a region shard, its regions: only their agents' topics are subscribed to.
    pub regions: Option<Vec<alarmnet_protocol::RegionId>>,
}

impl Topics {
    /// The filters of the agents' topics: every agent's, or on a region shard
    /// `{prefix}/{region}/+/+/+` for each of its regions.
    pub fn agents(&self) -> Vec<String> {
        match &self.regions {
            None => vec![self.prefix.agents_filter()],
            Some(regions) => regions
                .iter()
                .map(|r| format!("{}/{r}/+/+/+", self.prefix.as_str()))
                .collect(),
        }
    }

    /// `{prefix}/$collector/{client_id}/state`.
    pub fn own_state(&self) -> String {
        Topic::CollectorState(self.collector.clone()).format(&self.prefix)
    }

    fn state_payload(state: NodeState, ts: u64) -> Vec<u8> {
        alarmnet_protocol::encode(&Message::CollectorState(CollectorState {
            v: V1,
            state,
            ts: Some(ts),
        }))
    }
}

/// Builds the client and its event loop: persistent session, Will = retained `offline`
/// (dated `now`).
pub fn client(config: &MqttSettings, topics: &Topics, now: UnixMillis) -> (AsyncClient, EventLoop) {
    let Broker { host, port, .. } = config.broker.clone();
    let mut options = MqttOptions::new(config.collector_id.as_str(), host, port);
    options
        .set_clean_session(false)
        .set_keep_alive(config.keep_alive)
        .set_max_packet_size(MAX_INCOMING_PACKET, 256 * 1024)
        .set_request_channel_capacity(REQUEST_CAPACITY)
        .set_last_will(LastWill::new(
            topics.own_state(),
            Topics::state_payload(NodeState::Offline, now.as_millis()),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &config.username {
        options.set_credentials(
            user.clone(),
            config
                .password
                .as_ref()
                .map_or_else(String::new, |p| p.expose().to_owned()),
        );
    }
    if let Some(tls) = &config.tls {
        // rumqttc builds a rustls config with the process-wide crypto provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: tls.ca.clone(),
            alpn: None,
            client_auth: tls.client_auth.clone(),
        }));
    }
    AsyncClient::new(options, REQUEST_CAPACITY)
}

/// The MQTT connection as [`run`] drives it.
pub struct Link {
    pub eventloop: EventLoop,
    pub client: AsyncClient,
    pub topics: Topics,
    /// The longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// Where rebirth requests go (the command sender signs and paces them).
    pub commands: crate::commands::Commands,
    /// The collector's clock: receive times, the link's events and its state's `ts`.
    pub clock: Clock,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

/// Why the link stopped before shutdown.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the core stopped taking events")]
    CoreGone,
}

/// Runs the link until `shutdown`; then publishes the clean `offline` state and disconnects.
/// Fails only when the core is gone before shutdown.
pub async fn run(
    link: Link,
    mut ingest: Ingest,
    core: mpsc::Sender<CoreEvent>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), LinkError> {
    let Link {
        mut eventloop,
        client,
        topics,
        reconnect_max,
        commands,
        clock,
    } = link;
    let own_state = topics.own_state();
    let agents = topics.agents();
    // ±20 % so that many collectors do not reconnect in lockstep.
    let mut backoff =
        Backoff::new(Duration::from_millis(200), reconnect_max).with_jitter(Jitter::Spread(0.2));
    let mut connected = false;
    let mut check = LinkCheck::default();
    let mut burst = Burst::default();
    // Packets taken from the broker since rumqttc's buffer of events was last empty, and
    // since the last decision whether to pause (see READ_PAUSE).
    let (mut read, mut since_decision) = (0, 0);
    loop {
        // The burst ends when rumqttc has nothing buffered: the next poll reads the socket.
        let drained = eventloop.state.events.is_empty();
        if !burst.is_empty()
            && (drained || burst.len() >= MAX_BURST)
            && !burst.hand_over(&core, &metrics, &shutdown).await
        {
            break;
        }
        if drained {
            since_decision += read;
            if read > 0 && read < FULL_READ {
                if since_decision < BUSY {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(READ_PAUSE) => {}
                    }
                }
                since_decision = 0;
            }
            read = 0;
        }
        let stalled = check.deadline();
        let idle = if connected { check.idle_due() } else { None };
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
            _ = sleep_until_opt(idle) => {
                check.start(&client, &own_state, clock());
                continue;
            }
            _ = sleep_until_opt(stalled) => {
                tracing::warn!(
                    timeout = ?LINK_CHECK_TIMEOUT,
                    "link check: no echo and nothing from the broker; reconnecting"
                );
                check.clear();
                metrics.link_check_failures.fetch_add(1, Relaxed);
                eventloop.clean();
                if connected {
                    connected = false;
                    metrics.mqtt_connected.store(false, Relaxed);
                    metrics.mqtt_receiving.store(false, Relaxed);
                    burst.push(CoreEvent::BrokerLost { at: clock() });
                    if !burst.hand_over(&core, &metrics, &shutdown).await {
                        break;
                    }
                }
                continue;
            }
        };
        if let Ok(Event::Incoming(_)) = &event {
            check.heard();
            read += 1;
        }
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                backoff.reset();
                connected = true;
                metrics.mqtt_connected.store(true, Relaxed);
                metrics.mqtt_connects.fetch_add(1, Relaxed);
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the broker"
                );
                if !ack.session_present {
                    // The broker has no subscription for us (first start, or it lost the
                    // session): subscribe again. `try_` because this task is the one that
                    // drains the request channel.
                    for filter in agents.iter().chain([&own_state]) {
                        if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                            tracing::error!(filter, error = %e, "cannot subscribe");
                        }
                    }
                }
                publish_state(&client, &own_state, NodeState::Online, clock());
                burst.push(CoreEvent::BrokerConnected {
                    at: clock(),
                    session_present: ack.session_present,
                });
                if !burst.hand_over(&core, &metrics, &shutdown).await {
                    break;
                }
                // The first echo on this connection ends the backlog of the blind period.
                check.clear();
                check.start(&client, &own_state, clock());
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if p.topic == own_state {
                    let own = match alarmnet_protocol::decode(&topics.prefix, &p.topic, &p.payload)
                    {
                        Ok(e) => match e.message {
                            Message::CollectorState(s) => Some(s),
                            _ => None,
                        },
                        Err(_) => None,
                    };
                    match own {
                        // A stale Will of an earlier connection of ours (or anybody) said we
                        // are offline while we are connected: say online again.
                        Some(CollectorState {
                            state: NodeState::Offline,
                            ..
                        }) => {
                            tracing::warn!("own state was overwritten with offline; republishing");
                            publish_state(&client, &own_state, NodeState::Online, clock());
                        }
                        Some(CollectorState {
                            state: NodeState::Online,
                            ts: Some(ts),
                            ..
                        }) if !p.retain && check.echoed(ts) => {
                            metrics.mqtt_receiving.store(true, Relaxed);
                            burst.push(CoreEvent::LinkConfirmed { at: clock() });
                            if !burst.hand_over(&core, &metrics, &shutdown).await {
                                break;
                            }
                            check.forwarded();
                        }
                        _ => {}
                    }
                    continue;
                }
                if let Some(event) = ingest.handle(&p.topic, &p.payload, clock()) {
                    let event = event.retained(p.retain);
                    let will = is_will(&event);
                    burst.push(event);
                    check.forwarded();
                    if will && !check.is_out() {
                        check.start(&client, &own_state, clock());
                    }
                }
                for path in ingest.take_rebirths() {
                    ask_rebirth(&commands, path);
                }
            }
            Ok(_) => {}
            Err(e) => {
                check.clear();
                if connected {
                    connected = false;
                    metrics.mqtt_connected.store(false, Relaxed);
                    metrics.mqtt_receiving.store(false, Relaxed);
                    tracing::warn!(error = %e, "lost the broker connection; reconnecting");
                    burst.push(CoreEvent::BrokerLost { at: clock() });
                    if !burst.hand_over(&core, &metrics, &shutdown).await {
                        break;
                    }
                } else {
                    log_connect_error(&e);
                }
                let wait = backoff.next_delay();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    // What the last reads brought still reaches the core if it has room.
    for event in burst.0.drain(..) {
        if core.try_send(event).is_err() {
            break;
        }
    }
    if connected {
        disconnect(&mut eventloop, &client, &own_state, clock()).await;
    }
    metrics.mqtt_connected.store(false, Relaxed);
    metrics.mqtt_receiving.store(false, Relaxed);
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        Err(LinkError::CoreGone)
    }
}

/// Whether `event` is a Will (an `offline` state other than a clean shutdown).
fn is_will(event: &CoreEvent) -> bool {
    matches!(
        event,
        CoreEvent::Node { message: NodeMessage::State(s), .. }
            if s.state == NodeState::Offline
                && s.reason != Some(alarmnet_protocol::OfflineReason::Shutdown)
    )
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The link check in flight, if any: its marker (a unique `ts`) and when the broker last
/// sent anything.
#[derive(Debug, Default)]
struct LinkCheck {
    marker: Option<u64>,
    last_heard: Option<tokio::time::Instant>,
    /// When the core was last handed a sign of the broker (a node message, an echo, a
    /// connection), or a check last started: the idle check counts from it. Rejected
    /// messages do not count: the core does not see them.
    last_forwarded: Option<tokio::time::Instant>,
    /// The last marker used: markers strictly increase, so an echo is never mistaken.
    last_marker: u64,
}

impl LinkCheck {
    fn is_out(&self) -> bool {
        self.marker.is_some()
    }

    /// Publishes a marker. `try_`: this task drains the client's request channel.
    fn start(&mut self, client: &AsyncClient, own_state: &str, now: UnixMillis) {
        // Above any `ts` the plain state publishes used so far (they take `now`).
        let marker = (now.as_millis() + 1).max(self.last_marker + 1);
        self.last_marker = marker;
        let payload = Topics::state_payload(NodeState::Online, marker);
        // Also when publishing fails: the next idle check is a second away, not now.
        self.last_forwarded = Some(tokio::time::Instant::now());
        match client.try_publish(own_state, QoS::AtLeastOnce, false, payload) {
            Ok(()) => {
                self.marker = Some(marker);
                self.last_heard = Some(tokio::time::Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "cannot publish a link check"),
        }
    }

    /// Something arrived from the broker: the connection is alive, the marker may be queued.
    fn heard(&mut self) {
        if self.marker.is_some() {
            self.last_heard = Some(tokio::time::Instant::now());
        }
    }

    /// The core was handed a sign of the broker.
    fn forwarded(&mut self) {
        self.last_forwarded = Some(tokio::time::Instant::now());
    }

    /// When the link should check itself for lack of traffic, if no check is out.
    fn idle_due(&self) -> Option<tokio::time::Instant> {
        if self.marker.is_some() {
            return None;
        }
        self.last_forwarded.map(|t| t + LINK_IDLE_CHECK)
    }

    /// Whether `ts` is the marker out; if so, the check is done.
    fn echoed(&mut self, ts: u64) -> bool {
        if self.marker == Some(ts) {
            self.clear();
            return true;
        }
        false
    }

    fn clear(&mut self) {
        self.marker = None;
        self.last_heard = None;
    }

    /// When the check declares the link lost, if one is out.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.marker?;
        self.last_heard.map(|t| t + LINK_CHECK_TIMEOUT)
    }
}

/// Events for the core, in arrival order, handed over a burst at a time.
///
/// Design: rumqttc reads up to ten packets per socket read and hands them out one poll at a
/// time. Sending each to the core on its own woke the core's task (often on the other
/// worker thread) once per message; collecting the node messages of one read and sending
/// them together under one reservation wakes it once per read. A burst is handed over when
/// rumqttc has nothing more buffered (the next poll waits on the socket, so nothing is
/// held while the link waits), at [`MAX_BURST`] messages, and right away with any broker
/// event (connected, lost, link confirmed), which therefore keeps its place in the order.
#[derive(Debug, Default)]
struct Burst(Vec<CoreEvent>);

impl Burst {
    fn push(&mut self, event: CoreEvent) {
        self.0.push(event);
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Sends the burst to the core, waiting while its queue is full. `false` when shutting
    /// down or when the core is gone.
    async fn hand_over(
        &mut self,
        core: &mpsc::Sender<CoreEvent>,
        metrics: &Metrics,
        shutdown: &CancellationToken,
    ) -> bool {
        metrics
            .ingest_queue_depth
            .store((core.max_capacity() - core.capacity()) as u64, Relaxed);
        let mut events = self.0.drain(..);
        while events.len() > 0 {
            let n = events.len().min(core.max_capacity());
            let permits = tokio::select! {
                _ = shutdown.cancelled() => return false,
                permits = core.reserve_many(n) => match permits {
                    Ok(permits) => permits,
                    Err(_) => return false,
                },
            };
            for (permit, event) in permits.zip(events.by_ref()) {
                permit.send(event);
            }
        }
        true
    }
}

fn publish_state(client: &AsyncClient, topic: &str, state: NodeState, now: UnixMillis) {
    let payload = Topics::state_payload(state, now.as_millis());
    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
        tracing::error!(error = %e, "cannot publish the collector's state");
    }
}

/// Publishes the clean `offline` state, waits (bounded) for it to be acknowledged, and
/// disconnects.
async fn disconnect(
    eventloop: &mut EventLoop,
    client: &AsyncClient,
    own_state: &str,
    now: UnixMillis,
) {
    publish_state(client, own_state, NodeState::Offline, now);
    let drain = async {
        let mut sent_disconnect = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) if !sent_disconnect => {
                    sent_disconnect = true;
                    let _ = client.try_disconnect();
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        tracing::warn!("the broker did not acknowledge the offline state in 3s");
    }
    tracing::info!("disconnected from the broker");
}

fn log_connect_error(e: &ConnectionError) {
    // Refused connections repeat every backoff step: keep them at WARN, one line each.
    tracing::warn!(error = %e, "cannot connect to the broker");
}

/// Asks a node heard without a birth to publish it again (`cmd` rebirth), through the
/// command sender. Never waits: this task drains the MQTT client's request channel.
fn ask_rebirth(commands: &crate::commands::Commands, path: NodePath) {
    let node = path.node.clone();
    if commands.rebirth(path) {
        tracing::info!(node = %node, "message before any birth: rebirth asked");
    } else {
        tracing::warn!(node = %node, "cannot ask for a rebirth: the command queue is full");
    }
}

#[cfg(test)]
mod broker_tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtts://b.example"),
            Ok(Broker {
                tls: true,
                host: "b.example".into(),
                port: 8883
            })
        );
        assert_eq!(
            parse_broker("mqtt://h:1884/"),
            Ok(Broker {
                tls: false,
                host: "h".into(),
                port: 1884
            })
        );
        assert_eq!(
            parse_broker("mqtt://[::1]:1884"),
            Ok(Broker {
                tls: false,
                host: "::1".into(),
                port: 1884
            })
        );
        for bad in [
            "tcp://h",
            "mqtt://",
            "mqtt://h:x",
            "mqtt://h:0",
            "mqtt://h/p",
        ] {
            assert!(parse_broker(bad).is_err(), "{bad}");
        }
    }
}
