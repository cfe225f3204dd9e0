//! The commander with paused time and a recording publisher.

use crate::model::ms;
use alarmnet_protocol::signing::TrustedKeys;
use alarmnet_protocol::{KeyId, NodeId, RegionId, SiteId};

use super::*;

const T0: UnixMillis = UnixMillis::from_millis(1_790_000_000_000);

fn clock() -> UnixMillis {
    T0
}

#[derive(Debug)]
struct Recorder(mpsc::UnboundedSender<(String, Vec<u8>, Instant)>);

impl Publisher for Recorder {
    async fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), String> {
        self.0
            .send((topic, payload, Instant::now()))
            .map_err(|e| e.to_string())
    }
}

fn path(i: usize) -> NodePath {
    NodePath::new(
        RegionId::new("lanzhou").expect("id"),
        SiteId::new("lz-cg").expect("id"),
        NodeId::new(format!("n{i:06}")).expect("id"),
    )
}

fn job(n: usize, cancel: &CancellationToken) -> DrillJob {
    DrillJob {
        id: CmdId::new("d-test-1").expect("id"),
        test: Name::new("silent").expect("test"),
        deadline: T0 + ms(600_000),
        nodes: (0..n).map(path).collect(),
        cancel: cancel.clone(),
        sent: Arc::new(AtomicU64::new(0)),
    }
}

type Sink = mpsc::UnboundedReceiver<(String, Vec<u8>, Instant)>;

fn start(
    key: Option<Arc<CommandKey>>,
    rate: u32,
) -> (Commands, Sink, tokio::task::JoinHandle<Sent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (commands, queue) = Commands::channel();
    let commander = Commander::new(
        Recorder(tx),
        Prefix::default(),
        Signer::new(key, Duration::from_secs(300)),
        rate,
    )
    .with_clock(Arc::new(clock));
    let task = tokio::spawn(commander.run(queue, CancellationToken::new()));
    (commands, rx, task)
}

#[tokio::test(start_paused = true)]
async fn a_drill_is_paced_at_the_configured_rate() {
    let (commands, mut rx, task) = start(None, 2_000);
    let cancel = CancellationToken::new();
    let j = job(10_000, &cancel);
    let sent = j.sent.clone();
    let started = Instant::now();
    commands.drill(j).await.expect("queued");
    drop(commands);
    let done = task.await.expect("commander");
    assert_eq!(done.drill_commands, 10_000);
    assert_eq!(sent.load(Relaxed), 10_000);
    let mut times = Vec::new();
    while let Ok((_, _, at)) = rx.try_recv() {
        times.push(at.duration_since(started));
    }
    assert_eq!(times.len(), 10_000);
    let total = times[times.len() - 1];
    // 10 000 at 2 000/s: 5 s, less the initial burst of 100.
    assert!(
        total >= Duration::from_millis(4_900) && total <= Duration::from_millis(5_100),
        "{total:?}"
    );
    // No second holds more than the rate plus the burst.
    for w in 0..4 {
        let in_second = times.iter().filter(|t| t.as_secs() == w).count();
        assert!(in_second <= 2_100, "second {w}: {in_second}");
    }
}

#[tokio::test(start_paused = true)]
async fn commands_are_signed_for_their_topic_and_expire_by_the_deadline() {
    let key = Arc::new(key::generate(KeyId::new("centre-2026").expect("kid")));
    let trusted = TrustedKeys::new([(key.kid().clone(), key.public_key())]);
    let (commands, mut rx, task) = start(Some(key), 1_000);
    let cancel = CancellationToken::new();
    let mut j = job(3, &cancel);
    j.deadline = T0 + ms(60_000);
    commands.drill(j).await.expect("queued");
    assert!(commands.rebirth(path(7)));
    drop(commands);
    let done = task.await.expect("commander");
    assert_eq!((done.drill_commands, done.rebirths), (3, 1));
    let prefix = Prefix::default();
    let mut seen = Vec::new();
    while let Ok((topic, payload, _)) = rx.try_recv() {
        let env = alarmnet_protocol::decode(&prefix, &topic, &payload).expect("valid cmd");
        let Message::Command(cmd) = env.message else {
            panic!("not a command");
        };
        trusted.verify(&topic, &cmd).expect("signature verifies");
        let seal = cmd.seal.clone().expect("sealed");
        assert_eq!(seal.ts, T0.as_millis());
        match &cmd.action {
            CmdAction::Test { test } => {
                assert_eq!(test.as_str(), "silent");
                assert_eq!(cmd.id.as_str(), "d-test-1");
                assert_eq!(
                    seal.exp,
                    (T0 + ms(60_000)).as_millis(),
                    "capped at the deadline"
                );
            }
            CmdAction::Rebirth => assert_eq!(seal.exp, (T0 + ms(300_000)).as_millis(), "ts + ttl"),
            CmdAction::Check => panic!("unexpected check"),
        }
        // A signature for one node's topic does not verify on another's.
        let other = format!("{}/x", topic);
        assert!(trusted.verify(&other, &cmd).is_err());
        seen.push(cmd.action);
    }
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen[0],
        CmdAction::Rebirth,
        "a rebirth goes before drill commands"
    );
}

#[tokio::test(start_paused = true)]
async fn unsigned_without_a_key_and_cancel_stops_the_rest() {
    let (commands, mut rx, task) = start(None, 100);
    let cancel = CancellationToken::new();
    let j = job(1_000, &cancel);
    let sent = j.sent.clone();
    commands.drill(j).await.expect("queued");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cancel.cancel();
    let at_cancel = sent.load(Relaxed);
    assert!((150..=250).contains(&at_cancel), "{at_cancel}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(commands);
    let done = task.await.expect("commander");
    assert!(
        done.drill_commands <= at_cancel + 1,
        "{done:?} vs {at_cancel}"
    );
    let (topic, payload, _) = rx.try_recv().expect("one sent");
    let env = alarmnet_protocol::decode(&Prefix::default(), &topic, &payload).expect("cmd");
    let Message::Command(cmd) = env.message else {
        panic!("not a command");
    };
    assert!(cmd.seal.is_none(), "no key: unsigned");
}

#[tokio::test(start_paused = true)]
async fn nothing_is_handed_to_the_client_while_the_broker_link_is_down() {
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (commands, queue) = Commands::channel();
    let commander = Commander::new(
        Recorder(tx),
        Prefix::default(),
        Signer::new(None, Duration::from_secs(300)),
        1_000,
    )
    .with_clock(Arc::new(clock))
    .with_link(metrics.clone());
    let task = tokio::spawn(commander.run(queue, CancellationToken::new()));
    let cancel = CancellationToken::new();
    commands.drill(job(10, &cancel)).await.expect("queued");
    assert!(commands.rebirth(path(99)));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(rx.try_recv().is_err(), "link down: nothing sent");
    metrics.mqtt_connected.store(true, Relaxed);
    drop(commands);
    let done = task.await.expect("commander");
    assert_eq!((done.drill_commands, done.rebirths), (10, 1));
}
