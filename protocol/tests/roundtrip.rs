//! Property tests: for every message the types can hold, `decode(encode(m)) == m`.

use alarmnet_protocol::*;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    // A lone `_` is reserved for region, site and node ids.
    "[A-Za-z0-9_-]{1,64}".prop_filter("reserved", |s| s != "_")
}

fn name() -> impl Strategy<Value = Name> {
    "[A-Za-z0-9_.-]{1,64}".prop_map(|s| Name::new(s).expect("strategy makes valid names"))
}

fn boot() -> impl Strategy<Value = BootId> {
    "[A-Za-z0-9_-]{8,64}".prop_map(|s| BootId::new(s).expect("valid boot"))
}

fn text<const N: usize>() -> impl Strategy<Value = Text<N>> {
    // Any Unicode, Chinese and control characters included, within the limit.
    proptest::string::string_regex(&format!("(?s).{{0,{N}}}"))
        .expect("regex")
        .prop_map(Text::truncated)
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("finite", |x| x.is_finite()),
        -1e6..1e6f64
    ]
}

fn metrics() -> impl Strategy<Value = Metrics> {
    btree_map("[a-z0-9_]{1,64}", finite(), 0..=64).prop_map(|m| {
        let mut out = Metrics::new();
        for (k, v) in m {
            out.insert(MetricName::new(k).expect("valid metric"), v)
                .expect("within limits");
        }
        out
    })
}

fn severity() -> impl Strategy<Value = Severity> {
    proptest::sample::select(Severity::ALL.to_vec())
}

fn node_path() -> impl Strategy<Value = NodePath> {
    (id(), id(), id()).prop_map(|(r, s, n)| {
        NodePath::new(
            RegionId::new(r).expect("id"),
            SiteId::new(s).expect("id"),
            NodeId::new(n).expect("id"),
        )
    })
}

fn birth(path: NodePath) -> impl Strategy<Value = Birth> {
    (
        (
            boot(),
            any::<u64>(),
            name(),
            0.5..=86_400.0f64,
            option::of(text::<128>()),
        ),
        (
            option::of(-90.0..=90.0f64),
            option::of(-180.0..=180.0f64),
            option::of(text::<128>()),
        ),
        (
            option::of(text::<128>()),
            option::of(text::<128>()),
            vec(name(), 0..=64),
        ),
        btree_map("[a-z0-9_]{1,64}", text::<256>(), 0..=32),
    )
        .prop_map(
            move |(
                (boot, ts, kind, hb, name),
                (lat, lon, model),
                (firmware, agent, checks),
                tags,
            )| {
                let mut t = Tags::new();
                for (k, v) in tags {
                    t.insert(MetricName::new(k).expect("valid key"), v)
                        .expect("within limits");
                }
                Birth {
                    v: V1,
                    boot,
                    ts,
                    node: path.node.clone(),
                    site: path.site.clone(),
                    region: path.region.clone(),
                    kind,
                    hb_interval_s: hb,
                    name,
                    lat,
                    lon,
                    model,
                    firmware,
                    agent,
                    checks,
                    tags: t,
                }
            },
        )
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        boot(),
        any::<u64>(),
        any::<u64>(),
        option::of(any::<u64>()),
        metrics(),
        option::of((any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>())),
        option::of(vec((name(), name()), 0..8)),
        any::<bool>(),
    )
        .prop_map(
            |(boot, seq, ts, uptime_s, metrics, checks, faults, replay)| Heartbeat {
                v: V1,
                boot,
                seq,
                ts,
                uptime_s,
                metrics,
                checks: checks.map(|(ok, warning, critical, unknown)| CheckCounts {
                    ok,
                    warning,
                    critical,
                    unknown,
                }),
                faults: faults.map(|f| f.into_iter().map(|(c, k)| FaultKey::new(c, k)).collect()),
                replay,
            },
        )
}

fn node_message(kind: NodeTopic, path: NodePath) -> BoxedStrategy<Message> {
    match kind {
        NodeTopic::Birth => birth(path).prop_map(Message::Birth).boxed(),
        NodeTopic::State => (
            boot(),
            any::<bool>(),
            option::of(any::<u64>()),
            option::of(any::<bool>()),
        )
            .prop_map(|(boot, online, ts, reason)| {
                Message::State(State {
                    v: V1,
                    state: if online {
                        NodeState::Online
                    } else {
                        NodeState::Offline
                    },
                    boot,
                    ts,
                    reason: reason.map(|lost| {
                        if lost {
                            OfflineReason::Lost
                        } else {
                            OfflineReason::Shutdown
                        }
                    }),
                })
            })
            .boxed(),
        NodeTopic::Heartbeat => heartbeat().prop_map(Message::Heartbeat).boxed(),
        NodeTopic::Fault => (
            (boot(), any::<u64>(), any::<u64>(), name(), name()),
            (
                severity(),
                any::<bool>(),
                option::of(text::<1024>()),
                any::<bool>(),
            ),
        )
            .prop_map(
                |((boot, seq, ts, check, code), (severity, raised, message, replay))| {
                    Message::Fault(Fault {
                        v: V1,
                        boot,
                        seq,
                        ts,
                        check,
                        code,
                        severity,
                        status: if raised {
                            FaultStatus::Raised
                        } else {
                            FaultStatus::Cleared
                        },
                        message,
                        replay,
                    })
                },
            )
            .boxed(),
        NodeTopic::Test => (
            (boot(), any::<u64>(), any::<u64>(), option::of(id()), name()),
            (
                0..3u8,
                option::of(any::<u64>()),
                metrics(),
                option::of(text::<1024>()),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (boot, seq, ts, drill, test),
                    (result, duration_ms, metrics, message, replay),
                )| {
                    Message::Test(TestReceipt {
                        v: V1,
                        boot,
                        seq,
                        ts,
                        drill: drill.map(|d| CmdId::new(d).expect("id")),
                        test,
                        result: [TestResult::Pass, TestResult::Fail, TestResult::Error]
                            [result as usize],
                        duration_ms,
                        metrics,
                        message,
                        replay,
                    })
                },
            )
            .boxed(),
        NodeTopic::Command => (id(), 0..3u8, name())
            .prop_map(|(id, verb, test)| {
                let action = match verb {
                    0 => CmdAction::Rebirth,
                    1 => CmdAction::Check,
                    _ => CmdAction::Test { test },
                };
                Message::Command(Command {
                    id: CmdId::new(id).expect("id"),
                    action,
                    seal: None,
                })
            })
            .boxed(),
    }
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        node_path(),
        proptest::sample::select(NodeTopic::ALL.to_vec()),
    )
        .prop_flat_map(|(path, kind)| {
            node_message(kind, path.clone()).prop_map(move |message| Envelope {
                topic: Topic::Node(path.clone(), kind),
                message,
            })
        })
}

fn alert() -> impl Strategy<Value = Envelope> {
    (
        (node_path(), 0..3u8, name(), severity(), any::<bool>()),
        (
            "[0-9a-f]{16}",
            option::of(name()),
            any::<u64>(),
            option::of(any::<u64>()),
            text::<1024>(),
        ),
    )
        .prop_map(
            |((path, level, rule, severity, firing), (id, kind, started_at, ended_at, summary))| {
                let region = (level < 3).then(|| path.region.clone());
                let site = (level < 2).then(|| path.site.clone());
                let node = (level < 1).then(|| path.node.clone());
                Envelope {
                    topic: Topic::Alert(AlertTopic {
                        region: region.clone(),
                        site: site.clone(),
                        node: node.clone(),
                        rule: rule.clone(),
                    }),
                    message: Message::Alert(AlertNotification {
                        v: V1,
                        id: Text::new(id).expect("short"),
                        rule,
                        severity,
                        status: if firing {
                            AlertStatus::Firing
                        } else {
                            AlertStatus::Resolved
                        },
                        region,
                        site,
                        node,
                        kind,
                        started_at,
                        ended_at,
                        summary,
                        args: Default::default(),
                    }),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn node_messages_round_trip(env in envelope()) {
        let prefix = Prefix::default();
        let (topic, bytes) = env.encode(&prefix);
        prop_assume!(bytes.len() <= MAX_PAYLOAD_BYTES);
        let decoded = decode(&prefix, &topic, &bytes);
        prop_assert_eq!(decoded, Ok(env));
    }

    #[test]
    fn alerts_round_trip(env in alert()) {
        let prefix = Prefix::new("site-a/alarm").expect("prefix");
        let (topic, bytes) = env.encode(&prefix);
        prop_assume!(bytes.len() <= MAX_PAYLOAD_BYTES);
        prop_assert_eq!(decode(&prefix, &topic, &bytes), Ok(env));
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in vec(any::<u8>(), 0..512), leaf in 0..6usize) {
        let topic = format!("alarmnet/v1/r/s/n/{}", NodeTopic::ALL[leaf].leaf());
        let _ = decode(&Prefix::default(), &topic, &bytes);
    }
}

#[test]
fn collector_state_round_trips() {
    let prefix = Prefix::default();
    let env = Envelope {
        topic: Topic::CollectorState(CollectorId::new("alarmnet-collector-1").expect("id")),
        message: Message::CollectorState(CollectorState {
            v: V1,
            state: NodeState::Offline,
            ts: None,
        }),
    };
    let (topic, bytes) = env.encode(&prefix);
    assert_eq!(decode(&prefix, &topic, &bytes), Ok(env));
}
