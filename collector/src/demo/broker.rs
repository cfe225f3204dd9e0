//! The demo's embedded MQTT broker: rumqttd with its configuration built in code, one MQTT
//! 3.1.1 listener on a loopback port, sized for a few thousand simulated nodes.
//!
//! Design: rumqttd 0.20 has no shutdown API. `rumqttd::Broker::start` blocks for as long as
//! its listener threads live and spawns the router and listener threads itself, so the
//! broker runs on a std thread of its own and **ends with the process**. Its sessions and
//! retained messages are in memory only: a new demo process starts with an empty broker,
//! while the collector's store (in the data directory) keeps its history.
//!
//! What the collector and the agents rely on, all checked in tests: retained messages
//! (births, states, `$alerts`), Last Will (an agent killed or cut off goes offline at once,
//! or after 1.5 × keep-alive when it freezes), and persistent sessions (the collector's
//! subscriptions survive its reconnection).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::mpsc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// The conventional MQTT port, used when it is free.
pub const DEFAULT_PORT: u16 = 1883;

/// How often readiness is probed while the broker starts.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// Why the embedded broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot listen on {addr}: {source} (choose another port with --broker-port)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot find a free port for the broker: {0}")]
    NoFreePort(std::io::Error),
    #[error("cannot start the broker thread: {0}")]
    Thread(std::io::Error),
    #[error("the broker stopped while starting: {0}")]
    Stopped(String),
    #[error("the broker on {addr} did not answer an MQTT CONNECT within {waited:?}")]
    NotReady { addr: SocketAddr, waited: Duration },
}

/// Sizing of the embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Loopback address to listen on. Port 0 is not allowed: rumqttd binds the listener
    /// itself and does not report the port it got (see [`pick_port`]).
    pub addr: SocketAddr,
    /// Simultaneous connections: every simulated node, the collector, and room for the
    /// operator's own clients (`mosquitto_sub`) and reconnection overlap.
    pub max_connections: usize,
}

impl BrokerSettings {
    /// A broker on `127.0.0.1:port` for about `nodes` clients.
    pub fn for_nodes(port: u16, nodes: usize) -> Self {
        Self {
            addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)),
            max_connections: nodes.saturating_mul(2).max(1_000) + 100,
        }
    }

    /// The rumqttd configuration.
    fn to_rumqttd(&self) -> rumqttd::Config {
        let connections = rumqttd::ConnectionSettings {
            // Time a new connection has to send CONNECT.
            connection_timeout_ms: 10_000,
            // The agents cap their packets at 64 KiB, the collector at 256 KiB.
            max_payload_size: 256 * 1024,
            // QoS 1 messages in flight per client: the collector receives every node's
            // heartbeats on one connection.
            max_inflight_count: 1_000,
            auth: None,
            external_auth: None,
            // Clients may subscribe to any filter at any time (the agents' `cmd` topics).
            dynamic_filters: true,
        };
        let v4 = rumqttd::ServerSettings {
            name: "demo-v4".to_owned(),
            listen: self.addr,
            tls: None,
            // Pause after each accepted connection: a reconnecting province is spread a
            // little instead of hitting the router all at once.
            next_connection_delay_ms: 1,
            connections,
        };
        let router = rumqttd::RouterConfig {
            max_connections: self.max_connections,
            // Packets handed to one connection per scheduling round.
            max_outgoing_packet_count: 200,
            // Messages are logged per subscription filter in memory segments; the oldest
            // segment is dropped past the count, which bounds the broker's memory per filter
            // at 8 MiB. The collector's filter sees every message: at 300 nodes and a 5 s
            // heartbeat that is several minutes of backlog for a collector that reconnects,
            // and a lagging reader skips to the oldest segment kept.
            max_segment_size: 2 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        };
        rumqttd::Config {
            id: 0,
            router,
            v4: Some(HashMap::from([("1".to_owned(), v4)])),
            ..Default::default()
        }
    }
}

/// Chooses the broker port: `wanted` if given (it must be free), else 1883 if free, else
/// any free loopback port.
///
/// The port is probed by binding and releasing it, so another process could take it before
/// rumqttd binds; [`EmbeddedBroker::start`] then fails with a clear error.
pub fn pick_port(wanted: Option<u16>) -> Result<u16, BrokerError> {
    let bind = |port: u16| std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    if let Some(port) = wanted {
        return match bind(port) {
            Ok(_) => Ok(port),
            Err(source) => Err(BrokerError::Bind {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                source,
            }),
        };
    }
    if bind(DEFAULT_PORT).is_ok() {
        return Ok(DEFAULT_PORT);
    }
    bind(0)
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(BrokerError::NoFreePort)
}

/// A running embedded broker. Dropping the handle does not stop it (see the module docs).
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    /// Receives a message if `rumqttd::Broker::start` returns, which only happens when every
    /// listener has failed (typically: the port was taken).
    stopped: mpsc::Receiver<String>,
}

impl EmbeddedBroker {
    /// Starts the broker on its own thread and waits until it answers an MQTT CONNECT.
    pub async fn start(settings: &BrokerSettings, wait: Duration) -> Result<Self, BrokerError> {
        // Bind once ourselves for a clear error: rumqttd only logs a failed bind.
        drop(
            std::net::TcpListener::bind(settings.addr).map_err(|source| BrokerError::Bind {
                addr: settings.addr,
                source,
            })?,
        );
        let config = settings.to_rumqttd();
        let (tx, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("mqtt-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                let why = match broker.start() {
                    Ok(()) => "its listener ended (see the log above)".to_owned(),
                    Err(e) => e.to_string(),
                };
                // Nobody listens any more once the broker is ready; that is fine.
                let _ = tx.send(why);
            })
            .map_err(BrokerError::Thread)?;
        let broker = Self {
            addr: settings.addr,
            stopped,
        };
        broker.wait_ready(wait).await?;
        Ok(broker)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://127.0.0.1:<port>`, as the collector and the agents want it.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    async fn wait_ready(&self, wait: Duration) -> Result<(), BrokerError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Ok(why) = self.stopped.try_recv() {
                return Err(BrokerError::Stopped(why));
            }
            if mqtt_connack(self.addr).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::NotReady {
                    addr: self.addr,
                    waited: wait,
                });
            }
            sleep(PROBE_INTERVAL).await;
        }
    }
}

/// Whether a broker on `addr` accepts a TCP connection and answers an MQTT 3.1.1 CONNECT
/// with a successful CONNACK. The probe then disconnects cleanly.
pub async fn mqtt_connack(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(&connect_packet("alarmnet-demo-probe"))
            .await
            .ok()?;
        let mut ack = [0u8; 4];
        stream.read_exact(&mut ack).await.ok()?;
        // CONNACK, remaining length 2, return code 0 (accepted).
        let accepted = ack[0] == 0x20 && ack[1] == 0x02 && ack[3] == 0x00;
        // DISCONNECT, so the probe leaves no Will and no session behind.
        stream.write_all(&[0xE0, 0x00]).await.ok()?;
        Some(accepted)
    };
    matches!(
        timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(true))
    )
}

/// An MQTT 3.1.1 CONNECT with a clean session, a 5 s keep-alive and no Will.
fn connect_packet(client_id: &str) -> Vec<u8> {
    let id = client_id.as_bytes();
    // Variable header (10 bytes) + client id (2-byte length + bytes); ids here are short,
    // so the remaining length fits in one byte.
    let remaining = 10 + 2 + id.len();
    debug_assert!(remaining < 128);
    let mut p = Vec::with_capacity(2 + remaining);
    p.extend_from_slice(&[0x10, remaining as u8]);
    p.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x05]);
    p.extend_from_slice(&(id.len() as u16).to_be_bytes());
    p.extend_from_slice(id);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_is_well_formed() {
        let p = connect_packet("ab");
        assert_eq!(
            p,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 5, 0, 2, b'a', b'b'
            ]
        );
    }

    use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, Publish, QoS};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    /// A client whose event loop runs in a task; aborting the task drops the socket without
    /// DISCONNECT, as a crashed agent would.
    struct Client {
        client: AsyncClient,
        events: mpsc::UnboundedReceiver<Incoming>,
        task: JoinHandle<()>,
    }

    fn connect(port: u16, id: &str, clean: bool, will: Option<LastWill>) -> Client {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_clean_session(clean);
        if let Some(w) = will {
            o.set_last_will(w);
        }
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(ev) = eventloop.poll().await {
                if let Event::Incoming(i) = ev
                    && tx.send(i).is_err()
                {
                    return;
                }
            }
        });
        Client {
            client,
            events,
            task,
        }
    }

    impl Client {
        /// The next incoming packet that `pick` accepts, within 10 s.
        async fn next<T>(&mut self, what: &str, pick: impl Fn(Incoming) -> Option<T>) -> T {
            let wait = async {
                while let Some(i) = self.events.recv().await {
                    if let Some(t) = pick(i) {
                        return t;
                    }
                }
                panic!("{what}: the connection ended");
            };
            timeout(Duration::from_secs(10), wait)
                .await
                .unwrap_or_else(|_| panic!("{what}: nothing within 10 s"))
        }

        async fn connack(&mut self) -> bool {
            self.next("connack", |i| match i {
                Incoming::ConnAck(a) => Some(a.session_present),
                _ => None,
            })
            .await
        }

        async fn publish_on(&mut self, topic: &str) -> Publish {
            let topic = topic.to_owned();
            self.next(&topic.clone(), move |i| match i {
                Incoming::Publish(p) if p.topic == topic => Some(p),
                _ => None,
            })
            .await
        }

        async fn subscribe(&mut self, filter: &str) {
            self.client
                .subscribe(filter, QoS::AtLeastOnce)
                .await
                .expect("subscribe");
            self.next("suback", |i| matches!(i, Incoming::SubAck(_)).then_some(()))
                .await;
        }

        async fn publish_acked(&mut self, topic: &str, retain: bool, payload: &str) {
            self.client
                .publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec())
                .await
                .expect("publish");
            self.next("puback", |i| matches!(i, Incoming::PubAck(_)).then_some(()))
                .await;
        }
    }

    async fn test_broker() -> EmbeddedBroker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let settings = BrokerSettings::for_nodes(port, 10);
        EmbeddedBroker::start(&settings, Duration::from_secs(10))
            .await
            .expect("broker ready")
    }

    #[tokio::test]
    async fn retained_messages_last_will_and_persistent_sessions_work() {
        let broker = test_broker().await;
        let port = broker.addr().port();
        assert!(mqtt_connack(broker.addr()).await, "answers CONNECT");
        assert!(broker.url().starts_with("mqtt://127.0.0.1:"));

        // A persistent-session watcher, as the collector is.
        let mut watcher = connect(port, "watcher", false, None);
        assert!(!watcher.connack().await, "no session yet");
        watcher.subscribe("t/#").await;

        // An agent with a retained Will publishes a retained state, then crashes.
        let will = LastWill::new("t/node/state", "offline-will", QoS::AtLeastOnce, true);
        let mut agent = connect(port, "agent-1", true, Some(will));
        agent.connack().await;
        agent.publish_acked("t/node/state", true, "online").await;
        let p = watcher.publish_on("t/node/state").await;
        assert_eq!(&p.payload[..], b"online");
        agent.task.abort();
        let p = watcher.publish_on("t/node/state").await;
        assert_eq!(&p.payload[..], b"offline-will", "the Will is delivered");

        // A newcomer gets the retained Will (it replaced the retained state).
        let mut late = connect(port, "late", true, None);
        late.connack().await;
        late.subscribe("t/node/+").await;
        let p = late.publish_on("t/node/state").await;
        assert!(p.retain, "delivered as retained");
        assert_eq!(&p.payload[..], b"offline-will");

        // The watcher goes away; what is published meanwhile waits in its session.
        watcher.client.disconnect().await.expect("disconnect");
        let _ = timeout(Duration::from_secs(5), &mut watcher.task).await;
        late.publish_acked("t/while-away", false, "queued").await;
        let mut back = connect(port, "watcher", false, None);
        assert!(back.connack().await, "the session is still there");
        let p = back.publish_on("t/while-away").await;
        assert_eq!(
            &p.payload[..],
            b"queued",
            "delivered without subscribing again"
        );

        // A clean disconnect sends no Will.
        let will = LastWill::new("t/node2/state", "offline-will", QoS::AtLeastOnce, true);
        let mut polite = connect(port, "agent-2", true, Some(will));
        polite.connack().await;
        polite.publish_acked("t/node2/state", true, "stopped").await;
        let p = back.publish_on("t/node2/state").await;
        assert_eq!(&p.payload[..], b"stopped");
        polite.client.disconnect().await.expect("disconnect");
        let _ = timeout(Duration::from_secs(5), &mut polite.task).await;
        late.publish_acked("t/marker", false, "after").await;
        let next = back
            .next("after the clean disconnect", |i| match i {
                Incoming::Publish(p) if p.topic.starts_with("t/") => Some(p),
                _ => None,
            })
            .await;
        assert_eq!(next.topic, "t/marker", "no Will after DISCONNECT");
    }

    #[tokio::test]
    async fn a_second_broker_on_the_same_port_is_refused_clearly() {
        let broker = test_broker().await;
        let settings = BrokerSettings::for_nodes(broker.addr().port(), 10);
        let err = EmbeddedBroker::start(&settings, Duration::from_secs(2))
            .await
            .expect_err("port taken");
        assert!(matches!(err, BrokerError::Bind { .. }), "{err}");
    }

    #[test]
    fn a_wanted_port_that_is_taken_is_an_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let err = pick_port(Some(port)).expect_err("taken");
        assert!(err.to_string().contains("--broker-port"), "{err}");
    }
}
