//! Readiness derivation (every combination of liveness, fault severity and test age), the
//! overdue deadlines, and the incremental rollups against a recount.

use crate::model::ms;
use alarmnet_protocol::{Birth, FaultKey, Name, NodeId, NodePath, Severity, TestResult};
use proptest::prelude::*;
use serde_json::json;

use super::tracker::{ReadinessTracker, RestoredReadiness};
use super::*;
use crate::liveness::{LivenessConfig, Tracker};

const T0: UnixMillis = UnixMillis::from_millis(1_764_330_000_000);
const DAY: u64 = 86_400_000;
const MAX_AGE: Duration = ms(30 * DAY);

fn name(s: &str) -> Name {
    Name::new(s).expect("name")
}

#[derive(Debug, Clone, Copy)]
enum Age {
    Never,
    Fresh(TestResult),
    Old(TestResult),
}

/// Every liveness × worst fault × state of the required `silent` test, against the rules
/// written out independently of [`derive`].
#[test]
fn every_combination_of_liveness_fault_and_test_age() {
    let faults = [
        None,
        Some(Severity::Info),
        Some(Severity::Warning),
        Some(Severity::Minor),
        Some(Severity::Major),
        Some(Severity::Critical),
    ];
    let ages = [
        Age::Never,
        Age::Fresh(TestResult::Pass),
        Age::Old(TestResult::Pass),
        Age::Fresh(TestResult::Fail),
        Age::Old(TestResult::Fail),
        Age::Fresh(TestResult::Error),
    ];
    let now = T0 + ms(100 * DAY);
    let required = [name("silent")];
    let mut rows = 0;
    for liveness in Liveness::ALL {
        for fault in faults {
            for age in ages {
                let f: Vec<(String, Severity)> =
                    fault.map(|s| ("amp/X".to_owned(), s)).into_iter().collect();
                let tests: Vec<LastTest> = match age {
                    Age::Never => vec![],
                    Age::Fresh(result) => vec![LastTest {
                        test: name("silent"),
                        result,
                        at: now - ms(DAY),
                    }],
                    Age::Old(result) => vec![LastTest {
                        test: name("silent"),
                        result,
                        at: now - MAX_AGE,
                    }],
                };
                let d = derive(
                    Inputs {
                        liveness,
                        faults: &f,
                        tests: &tests,
                        required: &required,
                    },
                    MAX_AGE,
                    now,
                );
                let online = matches!(liveness, Liveness::Online | Liveness::Late);
                let blocking_fault = matches!(fault, Some(Severity::Critical | Severity::Major));
                let minor_fault = matches!(fault, Some(Severity::Minor | Severity::Warning));
                let failed = matches!(
                    age,
                    Age::Fresh(TestResult::Fail | TestResult::Error) | Age::Old(TestResult::Fail)
                );
                let stale = matches!(age, Age::Never | Age::Old(TestResult::Pass));
                let want = if !online || blocking_fault || failed {
                    Readiness::NotReady
                } else if minor_fault || stale {
                    Readiness::Degraded
                } else {
                    Readiness::Ready
                };
                assert_eq!(d.state, want, "{liveness:?} {fault:?} {age:?}: {d:?}");
                // The reasons name every cause, and nothing else.
                let codes: Vec<&str> = d.reasons.iter().map(Reason::code).collect();
                let mut expect = Vec::new();
                if !online {
                    expect.push(liveness.as_str());
                }
                match fault {
                    Some(Severity::Critical) => expect.push("fault_critical"),
                    Some(Severity::Major) => expect.push("fault_major"),
                    Some(Severity::Minor | Severity::Warning) => expect.push("fault_minor"),
                    _ => {}
                }
                match age {
                    Age::Never => expect.push("test_never"),
                    Age::Old(TestResult::Pass) => expect.push("test_overdue"),
                    Age::Fresh(TestResult::Fail) | Age::Old(TestResult::Fail) => {
                        expect.push("test_failed")
                    }
                    Age::Fresh(TestResult::Error) | Age::Old(TestResult::Error) => {
                        expect.push("test_error")
                    }
                    Age::Fresh(TestResult::Pass) => {}
                }
                assert_eq!(codes, expect, "{liveness:?} {fault:?} {age:?}");
                // Only a fresh pass changes with time alone, when it turns overdue.
                let due =
                    matches!(age, Age::Fresh(TestResult::Pass)).then_some(now - ms(DAY) + MAX_AGE);
                assert_eq!(d.next_change, due, "{liveness:?} {fault:?} {age:?}");
                rows += 1;
            }
        }
    }
    assert_eq!(rows, 6 * 6 * 6);
}

#[test]
fn kinds_without_required_tests_and_errors_of_other_kinds() {
    let tests = [
        LastTest {
            test: name("sound"),
            result: TestResult::Error,
            at: T0,
        },
        LastTest {
            test: name("silent"),
            result: TestResult::Pass,
            at: T0,
        },
    ];
    let inputs = |required: &'static [Name]| Inputs {
        liveness: Liveness::Online,
        faults: &[],
        tests: &tests,
        required,
    };
    // A display requires nothing: an error of a kind it has no procedure for is ignored.
    let d = derive(inputs(&[]), MAX_AGE, T0 + ms(40 * DAY));
    assert_eq!(
        (d.state, d.reasons.len(), d.next_change),
        (Readiness::Ready, 0, None)
    );
    // A failure of any kind counts.
    let failed = [LastTest {
        test: name("sound"),
        result: TestResult::Fail,
        at: T0,
    }];
    let d = derive(
        Inputs {
            tests: &failed,
            ..inputs(&[])
        },
        MAX_AGE,
        T0,
    );
    assert_eq!(d.state, Readiness::NotReady);
    assert_eq!(
        d.reasons,
        vec![Reason::TestFailed {
            test: "sound".into()
        }]
    );
    // The overdue instant itself is overdue.
    let silent: &'static [Name] = Box::leak(Box::new([name("silent")]));
    let d = derive(inputs(silent), MAX_AGE, T0 + MAX_AGE - ms(1));
    assert_eq!(d.state, Readiness::Ready);
    let d = derive(inputs(silent), MAX_AGE, T0 + MAX_AGE);
    assert_eq!(
        d.reasons,
        vec![Reason::TestOverdue {
            test: "silent".into(),
            last: T0
        }]
    );
}

#[test]
fn reasons_serialize_as_a_code_with_parameters() {
    let r = Reason::FaultMinor {
        fault: "power/ON_BATTERY".into(),
        severity: Severity::Warning,
    };
    assert_eq!(
        serde_json::to_value(&r).expect("json"),
        json!({"code": "fault_minor", "fault": "power/ON_BATTERY", "severity": "warning"})
    );
    assert_eq!(
        serde_json::to_value(Reason::Offline).expect("json"),
        json!({"code": "offline"})
    );
    let back: Reason =
        serde_json::from_value(json!({"code": "test_overdue", "test": "silent", "last": 5}))
            .expect("parse");
    assert_eq!(
        back,
        Reason::TestOverdue {
            test: "silent".into(),
            last: UnixMillis::from_millis(5)
        }
    );
}

// ----- the tracker -----

fn path(region: &str, site: &str, node: &str) -> NodePath {
    NodePath::new(
        region.parse().expect("region"),
        site.parse().expect("site"),
        node.parse().expect("node"),
    )
}

fn birth(p: &NodePath, kind: &str) -> Birth {
    serde_json::from_value(json!({
        "v": 1, "boot": "boot-aaaaaaaa", "ts": T0, "node": p.node, "site": p.site,
        "region": p.region, "kind": kind, "hb_interval_s": 10
    }))
    .expect("birth")
}

/// A liveness tracker and a readiness tracker fed with its transitions.
struct Rig {
    t: Tracker,
    r: ReadinessTracker,
}

impl Rig {
    fn new() -> Self {
        Self {
            t: Tracker::new(&LivenessConfig::default(), T0),
            r: ReadinessTracker::new(&ReadinessConfig::default()),
        }
    }

    fn feed(&mut self, transitions: Vec<crate::model::Transition>) {
        for tr in transitions {
            self.r.liveness(&self.t, &tr.node, tr.to, tr.at);
        }
    }

    fn born(&mut self, p: &NodePath, kind: &str, at: UnixMillis) {
        let out = self.t.on_birth(p, &birth(p, kind), false, at);
        self.feed(out);
        self.r.birth(&self.t, &p.node, at);
    }

    fn state(&self, node: &str) -> Readiness {
        self.r
            .node(&self.t, &NodeId::new(node).expect("id"))
            .expect("derived")
            .0
    }
}

#[test]
fn a_passed_test_turns_overdue_at_its_deadline_without_any_message() {
    let mut g = Rig::new();
    let p = path("lanzhou", "chengguan", "s1");
    g.born(&p, "siren", T0);
    assert_eq!(g.state("s1"), Readiness::Degraded, "never tested");
    g.r.test(
        &g.t,
        &p.node,
        &name("silent"),
        TestResult::Pass,
        T0 + ms(1_000),
        T0 + ms(2_000),
    );
    assert_eq!(g.state("s1"), Readiness::Ready);
    let due = T0 + ms(1_000) + MAX_AGE;
    assert_eq!(g.r.next_deadline(), Some(due));
    g.r.take_changes();
    g.r.tick(&g.t, due - ms(1));
    assert_eq!(g.state("s1"), Readiness::Ready);
    assert!(g.r.take_changes().is_empty());
    g.r.tick(&g.t, due);
    assert_eq!(g.state("s1"), Readiness::Degraded);
    let changes = g.r.take_changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].from, Some(Readiness::Ready));
    assert_eq!(changes[0].at, due);
    assert_eq!(g.r.next_deadline(), None, "nothing more to wait for");

    // A newer pass supersedes the heap entry; the stale one does nothing when it pops.
    g.r.test(
        &g.t,
        &p.node,
        &name("silent"),
        TestResult::Pass,
        due + ms(10),
        due + ms(10),
    );
    g.r.test(
        &g.t,
        &p.node,
        &name("silent"),
        TestResult::Pass,
        due + ms(20),
        due + ms(20),
    );
    g.r.take_changes();
    g.r.tick(&g.t, due + ms(10) + MAX_AGE);
    assert_eq!(g.state("s1"), Readiness::Ready);
    // A late replay of an older receipt changes nothing.
    g.r.test(
        &g.t,
        &p.node,
        &name("silent"),
        TestResult::Fail,
        due,
        due + ms(30),
    );
    assert_eq!(g.state("s1"), Readiness::Ready);
}

#[test]
fn faults_from_messages_and_heartbeat_lists() {
    let mut g = Rig::new();
    let p = path("lanzhou", "chengguan", "s1");
    g.born(&p, "display", T0);
    assert_eq!(g.state("s1"), Readiness::Ready, "displays need no test");
    let amp = FaultKey::new(name("amp"), name("NO_OUTPUT"));
    let temp = FaultKey::new(name("system"), name("HOT"));
    g.r.fault(&g.t, &p.node, &temp, Some(Severity::Warning), T0 + ms(1));
    assert_eq!(g.state("s1"), Readiness::Degraded);
    g.r.fault(&g.t, &p.node, &amp, Some(Severity::Critical), T0 + ms(2));
    assert_eq!(g.state("s1"), Readiness::NotReady);
    // The heartbeat lists only the temperature: the amplifier fault cleared unseen.
    g.r.fault_list(
        &g.t,
        &p.node,
        std::slice::from_ref(&temp),
        Severity::Major,
        T0 + ms(3),
    );
    assert_eq!(g.state("s1"), Readiness::Degraded);
    // A listed key never announced counts with the severity given for unknown ones.
    g.r.fault_list(
        &g.t,
        &p.node,
        &[temp.clone(), amp.clone()],
        Severity::Major,
        T0 + ms(4),
    );
    let (state, reasons) = g.r.node(&g.t, &p.node).expect("derived");
    assert_eq!(state, Readiness::NotReady);
    assert!(reasons.contains(&Reason::FaultMajor {
        fault: "amp/NO_OUTPUT".into()
    }));
    g.r.fault(&g.t, &p.node, &amp, None, T0 + ms(5));
    g.r.fault(&g.t, &p.node, &temp, None, T0 + ms(6));
    assert_eq!(g.state("s1"), Readiness::Ready);
}

#[test]
fn rollups_count_sirens_apart_and_leave_maintenance_out_of_the_percentage() {
    let mut g = Rig::new();
    for (i, kind) in ["siren", "siren", "siren", "display"].iter().enumerate() {
        let p = path("lanzhou", "chengguan", &format!("n{i}"));
        g.born(&p, kind, T0);
        g.r.test(&g.t, &p.node, &name("silent"), TestResult::Pass, T0, T0);
    }
    let net = g.r.network();
    assert_eq!(net.nodes.ready, 4);
    assert_eq!(net.sirens.ready, 3);
    assert_eq!(net.sirens.ready_pct(), Some(100.0));
    let n0 = NodeId::new("n0").expect("id");
    let out = g.t.set_maintenance(&n0, true, T0 + ms(5));
    g.feed(out);
    let n1 = NodeId::new("n1").expect("id");
    g.r.fault(
        &g.t,
        &n1,
        &FaultKey::new(name("amp"), name("X")),
        Some(Severity::Major),
        T0 + ms(6),
    );
    let s = g.r.network().sirens;
    assert_eq!((s.ready, s.not_ready, s.maintenance), (1, 1, 1));
    assert_eq!(s.ready_pct(), Some(50.0));
    assert_eq!(g.state("n0"), Readiness::NotReady);
}

#[test]
fn restore_emits_only_what_differs_from_the_stored_state() {
    let mut g = Rig::new();
    let p1 = path("r", "s", "a");
    let p2 = path("r", "s", "b");
    g.born(&p1, "siren", T0);
    g.born(&p2, "siren", T0);
    let mut r = ReadinessTracker::new(&ReadinessConfig::default());
    let pass = vec![LastTest {
        test: name("silent"),
        result: TestResult::Pass,
        at: T0,
    }];
    r.restore(
        &g.t,
        &p1.node,
        RestoredReadiness {
            previous: Some((Readiness::Ready, vec![])),
            faults: vec![],
            tests: pass.clone(),
        },
    );
    r.restore(
        &g.t,
        &p2.node,
        RestoredReadiness {
            previous: Some((Readiness::Ready, vec![])),
            faults: vec![("amp/X".into(), Severity::Critical)],
            tests: pass,
        },
    );
    r.finish_restore(&g.t, T0 + ms(10));
    let changes = r.take_changes();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].node, p2.node);
    assert_eq!(changes[0].to, Readiness::NotReady);
    assert_eq!(r.network().nodes.ready, 1);
    assert_eq!(r.network().nodes.not_ready, 1);
}

#[derive(Debug, Clone)]
enum Op {
    Birth { node: u8, site: u8, kind: bool },
    Silence { node: u8, on: bool },
    Fault { node: u8, sev: u8, clear: bool },
    List { node: u8, keep: bool },
    Test { node: u8, result: u8 },
    Wait { days: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..12, 0u8..4, any::<bool>()).prop_map(|(node, site, kind)| Op::Birth {
            node,
            site,
            kind
        }),
        (0u8..12, any::<bool>()).prop_map(|(node, on)| Op::Silence { node, on }),
        (0u8..12, 0u8..5, any::<bool>()).prop_map(|(node, sev, clear)| Op::Fault {
            node,
            sev,
            clear
        }),
        (0u8..12, any::<bool>()).prop_map(|(node, keep)| Op::List { node, keep }),
        (0u8..12, 0u8..3).prop_map(|(node, result)| Op::Test { node, result }),
        (0u8..20).prop_map(|days| Op::Wait { days }),
    ]
}

proptest! {
    /// The incremental rollups equal a recount from every node's state after any history
    /// (births, moves between sites and regions, kind changes, silences, faults, tests,
    /// time passing).
    #[test]
    fn incremental_rollups_equal_a_recount(ops in prop::collection::vec(op(), 1..120)) {
        let mut g = Rig::new();
        let mut now = T0;
        for op in ops {
            now += ms(1_000);
            match op {
                Op::Birth { node, site, kind } => {
                    let region = if site < 2 { "r0" } else { "r1" };
                    let p = path(region, &format!("s{site}"), &format!("n{node}"));
                    g.born(&p, if kind { "siren" } else { "display" }, now);
                }
                Op::Silence { node, on } => {
                    let id = NodeId::new(format!("n{node}")).expect("id");
                    if g.t.contains(&id) {
                        let out = g.t.set_maintenance(&id, on, now);
                        g.feed(out);
                    }
                }
                Op::Fault { node, sev, clear } => {
                    let id = NodeId::new(format!("n{node}")).expect("id");
                    let key = FaultKey::new(name("c"), name(&format!("F{sev}")));
                    let sev = (!clear).then(|| Severity::ALL[sev as usize]);
                    g.r.fault(&g.t, &id, &key, sev, now);
                }
                Op::List { node, keep } => {
                    let id = NodeId::new(format!("n{node}")).expect("id");
                    let keys = if keep {
                        vec![FaultKey::new(name("c"), name("F0"))]
                    } else {
                        vec![]
                    };
                    g.r.fault_list(&g.t, &id, &keys, Severity::Major, now);
                }
                Op::Test { node, result } => {
                    let id = NodeId::new(format!("n{node}")).expect("id");
                    let result = [TestResult::Pass, TestResult::Fail, TestResult::Error]
                        [result as usize];
                    g.r.test(&g.t, &id, &name("silent"), result, now, now);
                }
                Op::Wait { days } => {
                    now += ms(u64::from(days) * DAY);
                    let out = g.t.tick(now);
                    g.feed(out);
                    g.r.tick(&g.t, now);
                }
            }
            let (net, sites, regions) = g.r.rollups();
            let (net2, sites2, regions2) = g.r.recount(&g.t);
            prop_assert_eq!(net, net2);
            let pad = |mut v: Vec<_>, n: usize| { v.resize(n, Default::default()); v };
            let n = sites.len().max(sites2.len());
            prop_assert_eq!(pad(sites, n), pad(sites2, n));
            let n = regions.len().max(regions2.len());
            prop_assert_eq!(pad(regions, n), pad(regions2, n));
        }
    }
}
