//! Every liveness transition, with injected time.

use crate::model::ms;
use alarmnet_protocol::{Birth, BootId, Heartbeat, NodeId, NodePath, SiteId, State};
use serde_json::json;

use super::*;
use crate::model::{Cause, Liveness, Transition};

const T0: UnixMillis = UnixMillis::from_millis(1_764_330_000_000);
const I: u64 = 10_000; // heartbeat interval of the test nodes

fn path(node: &str) -> NodePath {
    path_in("lanzhou", "chengguan", node)
}

fn path_in(region: &str, site: &str, node: &str) -> NodePath {
    NodePath::new(
        region.parse().expect("region"),
        site.parse().expect("site"),
        node.parse().expect("node"),
    )
}

fn birth(p: &NodePath, boot: &str) -> Birth {
    serde_json::from_value(json!({
        "v": 1, "boot": boot, "ts": T0, "node": p.node, "site": p.site, "region": p.region,
        "kind": "siren", "name": "城关区人防办楼顶警报器", "hb_interval_s": I / 1000
    }))
    .expect("birth")
}

fn hb(boot: &str, seq: u64, replay: bool) -> Heartbeat {
    serde_json::from_value(json!({"v": 1, "boot": boot, "seq": seq, "ts": T0, "replay": replay}))
        .expect("heartbeat")
}

fn state(s: &str, boot: &str, reason: Option<&str>) -> State {
    let mut v = json!({"v": 1, "state": s, "boot": boot});
    if let Some(r) = reason {
        v["reason"] = json!(r);
    }
    serde_json::from_value(v).expect("state")
}

fn tr(node: &str, from: Liveness, to: Liveness, at: UnixMillis, cause: Cause) -> Transition {
    Transition {
        node: NodeId::new(node).expect("node"),
        from,
        to,
        at,
        cause,
    }
}

fn tracker() -> Tracker {
    Tracker::new(&LivenessConfig::default(), T0)
}

/// A tracker with node `n1` online since `T0 + 100`.
fn online() -> (Tracker, NodePath) {
    let mut t = tracker();
    let p = path("n1");
    let out = t.on_birth(&p, &birth(&p, "boot-aaaaaaaa"), false, T0 + ms(100));
    assert_eq!(
        out,
        vec![tr(
            "n1",
            Liveness::Unknown,
            Liveness::Online,
            T0 + ms(100),
            Cause::Birth
        )]
    );
    (t, p)
}

fn own(t: &Tracker, node: &str) -> Liveness {
    t.node(&NodeId::new(node).expect("node"))
        .expect("tracked")
        .own_state()
}

#[test]
fn live_birth_makes_a_new_node_online_and_describes_it() {
    let (t, p) = online();
    let v = t.node(&p.node).expect("tracked");
    assert_eq!(v.state(), Liveness::Online);
    assert_eq!(v.since(), T0 + ms(100));
    assert_eq!(v.boot().map(BootId::as_str), Some("boot-aaaaaaaa"));
    assert_eq!(v.hb_interval_ms(), I);
    let info = v.info();
    assert_eq!(info.path, p);
    assert_eq!(info.kind.as_str(), "siren");
    assert_eq!(info.name.as_deref(), Some("城关区人防办楼顶警报器"));
    assert_eq!(t.site_counts(&p.region, &p.site), Some((0, 1)));
}

#[test]
fn heartbeats_keep_a_node_online_then_late_then_offline_at_exact_deadlines() {
    let (mut t, p) = online();
    let last = T0 + ms(5_000);
    assert!(
        t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, false), last)
            .is_empty()
    );
    assert_eq!(t.node(&p.node).and_then(|v| v.last_heartbeat()), Some(last));
    // Late exactly 1.5 intervals after the last live heartbeat, not a millisecond before.
    assert!(t.tick(last + ms(15_000) - ms(1)).is_empty());
    assert_eq!(
        t.tick(last + ms(15_000)),
        vec![tr(
            "n1",
            Liveness::Online,
            Liveness::Late,
            last + ms(15_000),
            Cause::Timeout
        )]
    );
    assert!(t.tick(last + ms(30_000) - ms(1)).is_empty());
    assert_eq!(
        t.tick(last + ms(30_000)),
        vec![tr(
            "n1",
            Liveness::Late,
            Liveness::Offline,
            last + ms(30_000),
            Cause::Timeout
        )]
    );
    assert_eq!(t.site_counts(&p.region, &p.site), Some((1, 1)));
    // Nothing more is due for an offline node.
    assert!(t.tick(last + ms(1_000_000)).is_empty());
    assert_eq!(t.next_deadline(), None);
    // A live heartbeat brings it back.
    assert_eq!(
        t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 1, false), last + ms(2_000_000)),
        vec![tr(
            "n1",
            Liveness::Offline,
            Liveness::Online,
            last + ms(2_000_000),
            Cause::Heartbeat
        )]
    );
    assert_eq!(t.site_counts(&p.region, &p.site), Some((0, 1)));
}

#[test]
fn a_sparse_tick_reports_late_and_offline_at_their_own_times() {
    let (mut t, _) = online();
    let out = t.tick(T0 + ms(1_000_000));
    assert_eq!(
        out,
        vec![
            tr(
                "n1",
                Liveness::Online,
                Liveness::Late,
                T0 + ms(100) + ms(15_000),
                Cause::Timeout
            ),
            tr(
                "n1",
                Liveness::Late,
                Liveness::Offline,
                T0 + ms(100) + ms(30_000),
                Cause::Timeout
            ),
        ]
    );
}

#[test]
fn late_node_recovers_with_a_heartbeat() {
    let (mut t, p) = online();
    t.tick(T0 + ms(20_000));
    assert_eq!(own(&t, "n1"), Liveness::Late);
    assert_eq!(
        t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, false), T0 + ms(21_000)),
        vec![tr(
            "n1",
            Liveness::Late,
            Liveness::Online,
            T0 + ms(21_000),
            Cause::Heartbeat
        )]
    );
    // The deadline moved with the heartbeat.
    assert!(t.tick(T0 + ms(21_000) + ms(15_000) - ms(1)).is_empty());
    assert_eq!(t.tick(T0 + ms(21_000) + ms(15_000)).len(), 1);
}

#[test]
fn will_of_the_current_boot_takes_the_node_offline_at_once() {
    let (mut t, p) = online();
    assert_eq!(
        t.on_state(
            &p,
            &state("offline", "boot-aaaaaaaa", Some("lost")),
            false,
            T0 + ms(200)
        ),
        vec![tr(
            "n1",
            Liveness::Online,
            Liveness::Offline,
            T0 + ms(200),
            Cause::Will
        )]
    );
    // A Will without a reason is a loss too (and repeating it changes nothing).
    assert!(
        t.on_state(
            &p,
            &state("offline", "boot-aaaaaaaa", None),
            false,
            T0 + ms(300)
        )
        .is_empty()
    );
}

#[test]
fn stale_will_after_a_fast_restart_is_ignored() {
    let (mut t, p) = online();
    // The agent restarts before the broker noticed the old connection died.
    let out = t.on_birth(&p, &birth(&p, "boot-bbbbbbbb"), false, T0 + ms(1_000));
    assert!(out.is_empty(), "still online: {out:?}");
    assert_eq!(t.node(&p.node).map(|v| v.restarts()), Some(1));
    // Now the old connection's Will arrives: stale.
    let out = t.on_state(
        &p,
        &state("offline", "boot-aaaaaaaa", Some("lost")),
        false,
        T0 + ms(9_000),
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(own(&t, "n1"), Liveness::Online);
    // The same holds for a retained stale Will.
    assert!(
        t.on_state(
            &p,
            &state("offline", "boot-aaaaaaaa", Some("lost")),
            true,
            T0 + ms(9_500)
        )
        .is_empty()
    );
    // The new boot's own Will still counts.
    assert_eq!(
        t.on_state(
            &p,
            &state("offline", "boot-bbbbbbbb", Some("lost")),
            false,
            T0 + ms(9_900)
        )
        .len(),
        1
    );
}

#[test]
fn clean_shutdown_is_stopped_and_never_times_out() {
    let (mut t, p) = online();
    assert_eq!(
        t.on_state(
            &p,
            &state("offline", "boot-aaaaaaaa", Some("shutdown")),
            false,
            T0 + ms(500)
        ),
        vec![tr(
            "n1",
            Liveness::Online,
            Liveness::Stopped,
            T0 + ms(500),
            Cause::Shutdown
        )]
    );
    assert!(t.tick(T0 + ms(10_000_000)).is_empty());
    assert_eq!(t.site_counts(&p.region, &p.site), Some((0, 1)));
    // A Will after the clean stop does not turn it into a failure.
    assert!(
        t.on_state(
            &p,
            &state("offline", "boot-aaaaaaaa", Some("lost")),
            false,
            T0 + ms(600)
        )
        .is_empty()
    );
    // Starting again is a new birth.
    assert_eq!(
        t.on_birth(&p, &birth(&p, "boot-cccccccc"), false, T0 + ms(20_000_000)),
        vec![tr(
            "n1",
            Liveness::Stopped,
            Liveness::Online,
            T0 + ms(20_000_000),
            Cause::Birth
        )]
    );
}

#[test]
fn replayed_heartbeats_never_end_an_outage() {
    let (mut t, p) = online();
    t.on_state(
        &p,
        &state("offline", "boot-aaaaaaaa", Some("lost")),
        false,
        T0 + ms(200),
    );
    for seq in 0..50 {
        assert!(
            t.on_heartbeat(
                &p,
                &hb("boot-aaaaaaaa", seq, true),
                T0 + ms(1_000) + ms(seq)
            )
            .is_empty()
        );
        t.on_replayed_message(&p.node, &"boot-aaaaaaaa".parse().expect("boot"), seq);
    }
    assert_eq!(own(&t, "n1"), Liveness::Offline);
    assert_eq!(t.node(&p.node).and_then(|v| v.last_heartbeat()), None);
    // ...but they advance the sequence of the current boot.
    assert_eq!(t.node(&p.node).and_then(|v| v.last_seq()), Some(49));
}

#[test]
fn replayed_heartbeats_do_not_keep_an_online_node_alive() {
    let (mut t, p) = online();
    t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, true), T0 + ms(14_000));
    assert_eq!(
        t.tick(T0 + ms(100) + ms(15_000)).len(),
        1,
        "late despite the replay"
    );
}

#[test]
fn live_heartbeat_with_a_new_boot_is_a_restart() {
    let (mut t, p) = online();
    t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 7, false), T0 + ms(1_000));
    let out = t.on_heartbeat(&p, &hb("boot-dddddddd", 0, false), T0 + ms(2_000));
    assert!(out.is_empty());
    let v = t.node(&p.node).expect("tracked");
    assert_eq!(v.boot().map(BootId::as_str), Some("boot-dddddddd"));
    assert_eq!(v.restarts(), 1);
    assert_eq!(v.last_seq(), Some(0));
}

#[test]
fn replayed_data_of_an_old_boot_does_not_touch_the_current_boot() {
    let (mut t, p) = online();
    t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 3, false), T0 + ms(1_000));
    let mut changes = Vec::new();
    let (_, seq) = t
        .sequenced(
            &p.node,
            &"boot-zzzzzzzz".parse().expect("boot"),
            99,
            true,
            T0 + ms(2_000),
            &mut changes,
        )
        .expect("tracked");
    assert_eq!(seq, SeqInfo::default());
    let v = t.node(&p.node).expect("tracked");
    assert_eq!(v.boot().map(BootId::as_str), Some("boot-aaaaaaaa"));
    assert_eq!(v.last_seq(), Some(3));
}

#[test]
fn sequence_gaps_are_counted_within_a_boot() {
    let (mut t, p) = online();
    let mut changes = Vec::new();
    let boot: BootId = "boot-aaaaaaaa".parse().expect("boot");
    let mut seq = |t: &mut Tracker, s: u64| {
        t.sequenced(&p.node, &boot, s, false, T0 + ms(1_000), &mut changes)
            .expect("tracked")
            .1
    };
    assert_eq!(seq(&mut t, 0).missing, 0);
    assert_eq!(seq(&mut t, 1).missing, 0);
    assert_eq!(seq(&mut t, 5).missing, 3);
    // A duplicate or reordered message is not a gap and does not move the counter back.
    assert_eq!(seq(&mut t, 4).missing, 0);
    assert_eq!(seq(&mut t, 6).missing, 0);
}

#[test]
fn live_fault_or_test_proves_life() {
    let (mut t, p) = online();
    t.on_state(
        &p,
        &state("offline", "boot-aaaaaaaa", Some("lost")),
        false,
        T0 + ms(200),
    );
    let boot = "boot-aaaaaaaa".parse().expect("boot");
    assert_eq!(
        t.on_live_message(&p.node, &boot, 3, T0 + ms(300)),
        vec![tr(
            "n1",
            Liveness::Offline,
            Liveness::Online,
            T0 + ms(300),
            Cause::Heartbeat
        )]
    );
}

#[test]
fn state_online_of_a_live_connection_proves_life_but_a_retained_one_does_not() {
    let (mut t, p) = online();
    t.on_state(
        &p,
        &state("offline", "boot-aaaaaaaa", Some("lost")),
        false,
        T0 + ms(200),
    );
    assert!(
        t.on_state(
            &p,
            &state("online", "boot-aaaaaaaa", None),
            true,
            T0 + ms(300)
        )
        .is_empty()
    );
    assert_eq!(
        t.on_state(
            &p,
            &state("online", "boot-aaaaaaaa", None),
            false,
            T0 + ms(400)
        ),
        vec![tr(
            "n1",
            Liveness::Offline,
            Liveness::Online,
            T0 + ms(400),
            Cause::Heartbeat
        )]
    );
}

#[test]
fn retained_birth_registers_without_proving_life_and_unknown_goes_offline_after_grace() {
    let mut t = tracker();
    let p = path("n2");
    assert!(
        t.on_birth(&p, &birth(&p, "boot-aaaaaaaa"), true, T0 + ms(50))
            .is_empty()
    );
    assert_eq!(own(&t, "n2"), Liveness::Unknown);
    assert!(
        t.tick(T0 + ms(50) + ms(15_000)).is_empty(),
        "unknown is never late"
    );
    assert!(t.tick(T0 + ms(50) + ms(30_000) - ms(1)).is_empty());
    assert_eq!(
        t.tick(T0 + ms(50) + ms(30_000)),
        vec![tr(
            "n2",
            Liveness::Unknown,
            Liveness::Offline,
            T0 + ms(50) + ms(30_000),
            Cause::Timeout
        )]
    );
}

#[test]
fn retained_offline_of_the_current_boot_is_the_broker_record_of_the_loss() {
    let mut t = tracker();
    let p = path("n3");
    t.on_birth(&p, &birth(&p, "boot-aaaaaaaa"), true, T0);
    assert_eq!(
        t.on_state(
            &p,
            &state("offline", "boot-aaaaaaaa", Some("lost")),
            true,
            T0 + ms(1)
        ),
        vec![tr(
            "n3",
            Liveness::Unknown,
            Liveness::Offline,
            T0 + ms(1),
            Cause::Will
        )]
    );
}

#[test]
fn messages_of_unregistered_nodes_are_ignored() {
    let mut t = tracker();
    let p = path("ghost");
    assert!(
        t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, false), T0)
            .is_empty()
    );
    assert!(
        t.on_state(&p, &state("offline", "boot-aaaaaaaa", None), false, T0)
            .is_empty()
    );
    assert!(!t.contains(&p.node));
    assert!(t.is_empty());
}

#[test]
fn blind_mode_judges_nobody_and_reconnect_gives_a_full_timeout() {
    let (mut t, p) = online();
    t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, false), T0 + ms(1_000));
    let lost = T0 + ms(5_000);
    assert!(t.broker_lost(lost).is_empty());
    assert!(t.is_blind());
    assert_eq!(t.next_deadline(), None);
    // Hours pass while blind: nobody is judged.
    assert!(t.tick(T0 + ms(3_600_000)).is_empty());
    let back = T0 + ms(3_600_000);
    t.broker_connected(back);
    assert!(!t.is_blind());
    assert!(t.tick(back + ms(15_000) - ms(1)).is_empty());
    assert_eq!(
        t.tick(back + ms(15_000)),
        vec![tr(
            "n1",
            Liveness::Online,
            Liveness::Late,
            back + ms(15_000),
            Cause::Timeout
        )]
    );
    assert!(t.tick(back + ms(30_000) - ms(1)).is_empty());
    assert_eq!(
        t.tick(back + ms(30_000)),
        vec![tr(
            "n1",
            Liveness::Late,
            Liveness::Offline,
            back + ms(30_000),
            Cause::Timeout
        )]
    );
}

#[test]
fn broker_lost_first_judges_what_was_already_due() {
    let (mut t, _) = online();
    let out = t.broker_lost(T0 + ms(100) + ms(15_000));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].to, Liveness::Late);
}

#[test]
fn heartbeat_after_reconnect_restarts_the_normal_rhythm() {
    let (mut t, p) = online();
    t.broker_lost(T0 + ms(1_000));
    let back = T0 + ms(100_000);
    t.broker_connected(back);
    t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, false), back + ms(20_000));
    assert!(t.tick(back + ms(20_000) + ms(15_000) - ms(1)).is_empty());
    assert_eq!(t.tick(back + ms(20_000) + ms(15_000)).len(), 1);
}

fn restored(
    node: &str,
    state: Liveness,
    since: UnixMillis,
    last_hb: Option<UnixMillis>,
) -> RestoredNode {
    let p = path(node);
    RestoredNode {
        info: NodeInfo {
            path: p,
            kind: "siren".parse().expect("kind"),
            name: None,
            boot: Some("boot-aaaaaaaa".parse().expect("boot")),
            hb_interval_ms: I,
        },
        state,
        since,
        last_heartbeat: last_hb,
        last_seq: Some(41),
    }
}

#[test]
fn restore_keeps_stored_states_and_grace_delays_judgement_after_start() {
    let start = T0 + ms(86_400_000);
    let mut t = Tracker::new(&LivenessConfig::default(), start);
    // Stored as online with a heartbeat long before the collector went down.
    t.restore(restored("up", Liveness::Online, T0, Some(T0 + ms(10))));
    t.restore(restored("down", Liveness::Offline, T0, Some(T0)));
    t.restore(restored("stop", Liveness::Stopped, T0, None));
    let v = t.node(&"up".parse().expect("node")).expect("tracked");
    assert_eq!(
        (v.state(), v.since(), v.last_seq()),
        (Liveness::Online, T0, Some(41))
    );
    let lz = "lanzhou".parse().expect("region");
    assert_eq!(t.region_counts(&lz), Some((1, 3)));
    // No false offline during the grace period, exact judgement after it.
    assert!(t.tick(start + ms(15_000) - ms(1)).is_empty());
    assert_eq!(
        t.tick(start + ms(15_000)),
        vec![tr(
            "up",
            Liveness::Online,
            Liveness::Late,
            start + ms(15_000),
            Cause::Timeout
        )]
    );
    assert_eq!(
        t.tick(start + ms(30_000)),
        vec![tr(
            "up",
            Liveness::Late,
            Liveness::Offline,
            start + ms(30_000),
            Cause::Timeout
        )]
    );
    assert!(t.tick(start + ms(1_000_000)).is_empty());
}

#[test]
fn restored_node_that_keeps_talking_never_goes_offline() {
    let start = T0 + ms(86_400_000);
    let mut t = Tracker::new(&LivenessConfig::default(), start);
    t.restore(restored("up", Liveness::Online, T0, Some(T0 + ms(10))));
    let p = path("up");
    // Retained birth and state of the same boot: describe, do not change anything.
    assert!(
        t.on_birth(&p, &birth(&p, "boot-aaaaaaaa"), true, start + ms(5))
            .is_empty()
    );
    assert!(
        t.on_state(
            &p,
            &state("online", "boot-aaaaaaaa", None),
            true,
            start + ms(6)
        )
        .is_empty()
    );
    for k in 1..100 {
        let now = start + ms(k * I);
        assert!(
            t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 41 + k, false), now)
                .is_empty()
        );
        assert!(t.tick(now).is_empty());
    }
}

#[test]
fn maintenance_masks_the_own_state_and_reveals_it_at_the_end() {
    let (mut t, p) = online();
    assert_eq!(
        t.set_maintenance(&p.node, true, T0 + ms(1_000)),
        vec![tr(
            "n1",
            Liveness::Online,
            Liveness::Maintenance,
            T0 + ms(1_000),
            Cause::MaintenanceStart
        )]
    );
    // The node dies during maintenance: judged underneath, not reported.
    assert!(t.tick(T0 + ms(100_000)).is_empty());
    let v = t.node(&p.node).expect("tracked");
    assert_eq!(
        (v.state(), v.own_state()),
        (Liveness::Maintenance, Liveness::Offline)
    );
    assert_eq!(t.site_counts(&p.region, &p.site), Some((1, 1)));
    // Setting it again changes nothing.
    assert!(
        t.set_maintenance(&p.node, true, T0 + ms(100_001))
            .is_empty()
    );
    assert_eq!(
        t.set_maintenance(&p.node, false, T0 + ms(200_000)),
        vec![tr(
            "n1",
            Liveness::Maintenance,
            Liveness::Offline,
            T0 + ms(200_000),
            Cause::MaintenanceEnd
        )]
    );
}

#[test]
fn restored_maintenance_is_an_unknown_own_state_under_maintenance() {
    let mut t = tracker();
    t.restore(restored("m", Liveness::Maintenance, T0, None));
    let v = t.node(&"m".parse().expect("node")).expect("tracked");
    assert_eq!(
        (v.state(), v.own_state()),
        (Liveness::Maintenance, Liveness::Unknown)
    );
}

#[test]
fn a_node_moving_to_another_site_moves_its_counts() {
    let (mut t, p) = online();
    t.on_state(
        &p,
        &state("offline", "boot-aaaaaaaa", None),
        false,
        T0 + ms(200),
    );
    let q = path_in("lanzhou", "anning", "n1");
    t.on_birth(&q, &birth(&q, "boot-aaaaaaaa"), true, T0 + ms(300));
    assert_eq!(t.site_counts(&p.region, &p.site), Some((0, 0)));
    assert_eq!(t.site_counts(&q.region, &q.site), Some((1, 1)));
}

/// The ids `members` yields for a region or site, sorted.
fn members(t: &Tracker, region: &str, site: Option<&str>) -> Vec<String> {
    let region = region.parse().expect("region");
    let site: Option<SiteId> = site.map(|s| s.parse().expect("site"));
    let mut ids: Vec<String> = t
        .members(&region, site.as_ref())
        .map(|v| v.id().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn members_of_a_site_and_a_region_follow_births_and_moves() {
    let mut t = tracker();
    for (region, site, node) in [
        ("lanzhou", "chengguan", "a1"),
        ("lanzhou", "chengguan", "a2"),
        ("lanzhou", "anning", "b1"),
        ("tianshui", "chengguan", "c1"),
    ] {
        let p = path_in(region, site, node);
        t.on_birth(&p, &birth(&p, "boot-aaaaaaaa"), false, T0);
    }
    assert_eq!(members(&t, "lanzhou", Some("chengguan")), ["a1", "a2"]);
    assert_eq!(members(&t, "lanzhou", None), ["a1", "a2", "b1"]);
    // The same site id in another region is another site.
    assert_eq!(members(&t, "tianshui", Some("chengguan")), ["c1"]);
    assert!(members(&t, "lanzhou", Some("nowhere")).is_empty());
    assert!(members(&t, "nowhere", None).is_empty());

    // A node that moves leaves its old site's members and joins the new one's, also across
    // regions.
    let q = path_in("tianshui", "maiji", "a1");
    t.on_birth(&q, &birth(&q, "boot-aaaaaaaa"), false, T0 + ms(10));
    assert_eq!(members(&t, "lanzhou", Some("chengguan")), ["a2"]);
    assert_eq!(members(&t, "lanzhou", None), ["a2", "b1"]);
    assert_eq!(members(&t, "tianshui", None), ["a1", "c1"]);
    // Every node is a member of exactly one site.
    let all: usize = ["lanzhou", "tianshui"]
        .iter()
        .map(|r| members(&t, r, None).len())
        .sum();
    assert_eq!(all, t.len());
}

#[test]
fn fractional_intervals_and_a_new_interval_from_birth_are_used() {
    let mut t = tracker();
    let p = path("fast");
    let mut b = birth(&p, "boot-aaaaaaaa");
    b.hb_interval_s = 0.5;
    t.on_birth(&p, &b, false, T0);
    assert_eq!(t.tick(T0 + ms(750)).len(), 1, "late after 750 ms");
    b.hb_interval_s = 60.0;
    t.on_birth(&p, &b, false, T0 + ms(1_000));
    assert!(t.tick(T0 + ms(1_000) + ms(89_999)).is_empty());
    assert_eq!(t.tick(T0 + ms(1_000) + ms(90_000)).len(), 1);
}

#[test]
fn a_tick_touches_only_due_entries() {
    let mut t = tracker();
    for k in 0..1_000u64 {
        let p = path(&format!("n{k}"));
        t.on_birth(&p, &birth(&p, "boot-aaaaaaaa"), false, T0 + ms(k));
    }
    assert_eq!(t.heap.len(), 1_000);
    // Heartbeats do not push heap entries.
    for k in 0..1_000u64 {
        let p = path(&format!("n{k}"));
        t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, false), T0 + ms(5_000) + ms(k));
    }
    assert_eq!(t.heap.len(), 1_000);
    // Only the ten nodes born first are due; the others stay untouched in the heap.
    let out = t.tick(T0 + ms(15_000) + ms(9));
    assert!(out.is_empty());
    assert_eq!(t.heap.len(), 1_000, "popped entries were re-pushed once");
    assert_eq!(t.next_deadline(), Some(T0 + ms(15_000) + ms(10)));
}

#[test]
fn config_rejects_nonsense_factors() {
    assert!(LivenessConfig::default().problems().is_empty());
    let bad = LivenessConfig {
        late_factor: 0.5,
        offline_factor: 0.4,
    };
    assert_eq!(bad.problems().len(), 2);
    let parsed: Result<LivenessConfig, _> =
        serde_json::from_value(json!({"late_factor": 2.0, "bogus": 1}));
    assert!(parsed.is_err(), "unknown fields are rejected");
}

/// `due` names exactly the nodes the next tick judges, and judges none of them; a
/// forgotten node is judged no more, counts nowhere, and a birth registers it anew.
#[test]
fn due_names_what_a_tick_would_judge_and_a_forgotten_node_is_never_judged() {
    let (mut t, p) = online();
    let q = path_in("lanzhou", "chengguan", "n2");
    t.on_birth(&q, &birth(&q, "boot-bbbbbbbb"), false, T0 + ms(100));
    let last = T0 + ms(5_000);
    t.on_heartbeat(&p, &hb("boot-aaaaaaaa", 0, false), last);
    // n2 is late first (its last sign of life is its birth).
    let n2_late = T0 + ms(100) + ms(15_000);
    assert!(t.due(n2_late - ms(1)).is_empty());
    assert_eq!(t.due(n2_late), vec![q.node.clone()]);
    // Asking twice judges nothing.
    assert_eq!(t.due(n2_late), vec![q.node.clone()]);
    assert_eq!(t.site_counts(&p.region, &p.site), Some((0, 2)));

    assert!(t.forget(&q.node));
    assert!(!t.forget(&q.node));
    assert!(!t.contains(&q.node));
    assert_eq!(t.site_counts(&p.region, &p.site), Some((0, 1)));
    assert_eq!(t.members(&p.region, None).count(), 1);
    assert_eq!(t.nodes().count(), 1);
    assert!(t.due(n2_late).is_empty());
    // Only n1 is ever judged.
    let out = t.tick(last + ms(1_000_000));
    assert!(out.iter().all(|tr| tr.node == p.node), "{out:?}");
    assert_eq!(out.len(), 2);

    // Back under a region of this tracker: registered anew.
    t.on_birth(&q, &birth(&q, "boot-cccccccc"), false, T0 + ms(2_000_000));
    assert!(t.contains(&q.node));
    assert_eq!(t.site_counts(&p.region, &p.site), Some((1, 2)));
}
