//! Hand-computed uptime cases and a property test against a brute-force reference.

use crate::model::ms;
use alarmnet_protocol::{Name, NodeId, NodePath, RegionId, SiteId};
use jiff::civil::date;
use jiff::tz::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::model::{Cause, Liveness, NodeInfo, Silence, SilenceId, Transition, UnixMillis};

const S: u64 = 1_000;
const H: u64 = 3_600 * S;
const D: u64 = 24 * H;
/// 2026-10-01T00:00:00+08:00 (2026-09-30T16:00:00Z).
const T0: UnixMillis = UnixMillis::from_millis(1_790_784_000_000);
/// 2026-11-01T00:00:00+08:00.
const NOV_1: UnixMillis = UnixMillis::from_millis(1_793_462_400_000);

fn shanghai() -> TimeZone {
    time_zone(DEFAULT_TIME_ZONE).expect("the system time zone database has Asia/Shanghai")
}

fn info(region: &str, site: &str, node: &str, kind: &str) -> NodeInfo {
    NodeInfo {
        path: NodePath::new(
            RegionId::new(region).expect("valid region"),
            SiteId::new(site).expect("valid site"),
            NodeId::new(node).expect("valid node"),
        ),
        kind: Name::new(kind).expect("valid kind"),
        name: None,
        boot: None,
        hb_interval_ms: 10_000,
    }
}

fn tr(node: &str, from: Liveness, to: Liveness, at: UnixMillis, cause: Cause) -> Transition {
    Transition {
        node: NodeId::new(node).expect("valid node"),
        from,
        to,
        at,
        cause,
    }
}

fn query(from: UnixMillis, to: UnixMillis, now: UnixMillis, by: GroupBy) -> Query {
    Query {
        window: Window::new(from, to).expect("from <= to"),
        now,
        by,
        filter: Filter::default(),
        outage_list: true,
        tz: shanghai(),
    }
}

fn silence(
    node: Option<&str>,
    site: Option<&str>,
    starts_at: UnixMillis,
    ends_at: UnixMillis,
) -> Silence {
    Silence {
        id: SilenceId::new(1),
        region: None,
        site: site.map(|s| SiteId::new(s).expect("valid site")),
        node: node.map(|n| NodeId::new(n).expect("valid node")),
        kind: None,
        starts_at,
        ends_at,
        created_by: "ops".to_owned(),
        comment: None,
    }
}

fn run(
    q: &Query,
    nodes: &[NodeInfo],
    transitions: &[Transition],
    silences: &[Silence],
    blind: &[Window],
) -> UptimeReport {
    report(
        q,
        Inputs {
            nodes,
            transitions,
            silences,
            blind,
            tests: &[],
        },
    )
    .expect("input is sorted")
}

fn only_row(r: &UptimeReport) -> &Row {
    assert_eq!(r.rows.len(), 1, "{:#?}", r.rows);
    &r.rows[0]
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn stamp(ms: UnixMillis) -> Stamp {
    Stamp::new(ms, &shanghai())
}

use Liveness::{Maintenance, Offline, Online, Stopped, Unknown};

#[test]
fn transitions_exactly_at_the_window_edges() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Unknown, Online, T0, Cause::Birth),
        tr("n1", Online, Offline, T0 + ms(4 * H), Cause::Timeout),
        tr("n1", Offline, Online, T0 + ms(6 * H), Cause::Heartbeat),
        // At `to`: outside [from, to).
        tr("n1", Online, Offline, T0 + ms(10 * H), Cause::Will),
    ];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    let row = only_row(&r);
    assert_eq!(row.node.as_ref().map(NodeId::as_str), Some("n1"));
    assert_eq!(row.kind.as_ref().map(Name::as_str), Some("siren"));
    assert_eq!(row.up_s, secs(8 * H));
    assert_eq!(row.downtime_s, secs(2 * H));
    assert_eq!(row.unknown_s, 0.0);
    assert_eq!(row.availability_pct, Some(80.0));
    assert_eq!(row.coverage_pct, Some(100.0));
    assert_eq!(row.outages, 1);
    assert_eq!(row.longest_outage_s, Some(7_200.0));
    assert_eq!(row.mttr_s, Some(7_200.0));
    assert_eq!(row.mtbf_s, Some(28_800.0));
    assert_eq!(
        row.outage_list,
        Some(vec![Outage {
            start: stamp(T0 + ms(4 * H)),
            end: Some(stamp(T0 + ms(6 * H))),
            duration_s: 7_200.0,
            cause: Some(Cause::Timeout),
        }])
    );
}

#[test]
fn an_outage_spanning_the_window_start_keeps_its_true_start_and_is_clipped() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Unknown, Online, T0 - ms(2 * D), Cause::Birth),
        tr("n1", Online, Offline, T0 - ms(3 * H), Cause::Will),
        tr("n1", Offline, Online, T0 + ms(H), Cause::Birth),
    ];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    let row = only_row(&r);
    assert_eq!(row.downtime_s, 3_600.0);
    assert_eq!(row.up_s, secs(9 * H));
    assert_eq!(row.outages, 1);
    assert_eq!(row.availability_pct, Some(90.0));
    let outage = &row.outage_list.as_ref().expect("asked for")[0];
    assert_eq!(outage.start, stamp(T0 - ms(3 * H)));
    assert_eq!(outage.end, Some(stamp(T0 + ms(H))));
    assert_eq!(outage.duration_s, 3_600.0);
    assert_eq!(outage.cause, Some(Cause::Will));
}

#[test]
fn an_outage_ended_before_the_window_is_not_counted() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Online, Offline, T0 - ms(3 * H), Cause::Will),
        tr("n1", Offline, Online, T0, Cause::Birth),
    ];
    let r = run(
        &query(T0, T0 + ms(H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    let row = only_row(&r);
    assert_eq!(row.outages, 0);
    assert_eq!(row.downtime_s, 0.0);
    assert_eq!(row.availability_pct, Some(100.0));
    assert_eq!(row.mttr_s, None);
    assert_eq!(row.mtbf_s, None);
    assert_eq!(row.longest_outage_s, None);
    assert_eq!(row.outage_list, Some(vec![]));
}

#[test]
fn an_outage_still_going_on_at_now_before_to() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("n1", Online, Offline, T0 + ms(7 * H), Cause::Timeout),
        // Recorded after `now` (cannot happen on one clock): ignored.
        tr("n1", Offline, Online, T0 + ms(12 * H), Cause::Birth),
    ];
    let now = T0 + ms(10 * H);
    let r = run(
        &query(T0, T0 + ms(D), now, GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    assert_eq!(r.until, stamp(now));
    assert_eq!(r.to, stamp(T0 + ms(D)));
    let row = only_row(&r);
    assert_eq!(row.up_s, secs(7 * H));
    assert_eq!(row.downtime_s, secs(3 * H));
    assert_eq!(row.unknown_s, 0.0);
    assert_eq!(row.coverage_pct, Some(100.0));
    assert_eq!(row.availability_pct, Some(70.0));
    let list = row.outage_list.as_ref().expect("asked for");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].start, stamp(T0 + ms(7 * H)));
    assert_eq!(list[0].end, None);
    assert_eq!(list[0].duration_s, secs(3 * H));
}

#[test]
fn a_silence_overlapping_downtime_turns_it_into_maintenance() {
    let nodes = [
        info("lz", "cg", "n1", "siren"),
        info("lz", "other", "n2", "siren"),
    ];
    let ts = [
        tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("n1", Online, Offline, T0 + ms(4 * H), Cause::Timeout),
        tr("n1", Offline, Online, T0 + ms(8 * H), Cause::Birth),
        tr("n2", Unknown, Online, T0 - ms(H), Cause::Birth),
    ];
    // Covers site cg from 02:00 to 05:00; n2 is at another site.
    let silences = [silence(None, Some("cg"), T0 + ms(2 * H), T0 + ms(5 * H))];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &silences,
        &[],
    );
    let n1 = &r.rows[0];
    assert_eq!(n1.node.as_ref().map(NodeId::as_str), Some("n1"));
    // up: 00-02 and 08-10; maintenance 02-05; down 05-08.
    assert_eq!(n1.up_s, secs(4 * H));
    assert_eq!(n1.maintenance_s, secs(3 * H));
    assert_eq!(n1.downtime_s, secs(3 * H));
    assert_eq!(n1.coverage_pct, Some(100.0));
    assert_eq!(n1.availability_pct, Some(4.0 * 100.0 / 7.0));
    assert_eq!(n1.outages, 1);
    let outage = &n1.outage_list.as_ref().expect("asked for")[0];
    assert_eq!(outage.start, stamp(T0 + ms(4 * H)));
    assert_eq!(outage.duration_s, secs(3 * H));
    let n2 = &r.rows[1];
    assert_eq!(n2.maintenance_s, 0.0);
    assert_eq!(n2.up_s, secs(10 * H));
}

#[test]
fn maintenance_state_inside_an_outage_neither_ends_nor_lengthens_it() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("n1", Online, Offline, T0 + ms(H), Cause::Timeout),
        tr(
            "n1",
            Offline,
            Maintenance,
            T0 + ms(2 * H),
            Cause::MaintenanceStart,
        ),
        tr(
            "n1",
            Maintenance,
            Offline,
            T0 + ms(6 * H),
            Cause::MaintenanceEnd,
        ),
        tr("n1", Offline, Online, T0 + ms(7 * H), Cause::Birth),
    ];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    let row = only_row(&r);
    assert_eq!(row.maintenance_s, secs(4 * H));
    assert_eq!(row.downtime_s, secs(2 * H));
    assert_eq!(row.up_s, secs(4 * H));
    assert_eq!(row.outages, 1);
    let outage = &row.outage_list.as_ref().expect("asked for")[0];
    assert_eq!(outage.start, stamp(T0 + ms(H)));
    assert_eq!(outage.end, Some(stamp(T0 + ms(7 * H))));
    assert_eq!(outage.duration_s, secs(2 * H));
}

#[test]
fn an_outage_entirely_inside_maintenance_is_not_an_outage() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("n1", Online, Stopped, T0 + ms(3 * H), Cause::Shutdown),
        tr("n1", Stopped, Online, T0 + ms(4 * H), Cause::Birth),
    ];
    let silences = [silence(Some("n1"), None, T0 + ms(2 * H), T0 + ms(5 * H))];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &silences,
        &[],
    );
    let row = only_row(&r);
    assert_eq!(row.outages, 0);
    assert_eq!(row.downtime_s, 0.0);
    assert_eq!(row.maintenance_s, secs(3 * H));
    assert_eq!(row.availability_pct, Some(100.0));
}

#[test]
fn a_clean_stop_is_an_outage_caused_by_shutdown() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("n1", Online, Stopped, T0 + ms(3 * H), Cause::Shutdown),
        // Stopped, then judged offline: still the same outage.
        tr("n1", Stopped, Offline, T0 + ms(4 * H), Cause::Timeout),
        tr("n1", Offline, Online, T0 + ms(5 * H), Cause::Birth),
    ];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    let row = only_row(&r);
    assert_eq!(row.outages, 1);
    assert_eq!(row.downtime_s, secs(2 * H));
    let outage = &row.outage_list.as_ref().expect("asked for")[0];
    assert_eq!(outage.cause, Some(Cause::Shutdown));
    assert_eq!(outage.duration_s, secs(2 * H));
}

#[test]
fn unknown_before_birth_and_while_blind_lowers_coverage_only() {
    let nodes = [
        info("lz", "cg", "n1", "siren"),
        info("lz", "cg", "n2", "siren"),
        info("lz", "cg", "n3", "siren"),
    ];
    let ts = [
        // n1 is born at 02:00.
        tr("n1", Unknown, Online, T0 + ms(2 * H), Cause::Birth),
        // n2 is offline 03:00-08:00 with the collector blind 05:00-06:00 inside.
        tr("n2", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("n2", Online, Offline, T0 + ms(3 * H), Cause::Timeout),
        tr("n2", Offline, Online, T0 + ms(8 * H), Cause::Birth),
        // n3 never heard of: no transitions at all.
    ];
    let blind = [Window::new(T0 + ms(5 * H), T0 + ms(6 * H)).expect("ordered")];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &blind,
    );
    let (n1, n2, n3) = (&r.rows[0], &r.rows[1], &r.rows[2]);
    assert_eq!(n1.up_s, secs(7 * H));
    assert_eq!(n1.unknown_s, secs(3 * H));
    assert_eq!(n1.availability_pct, Some(100.0));
    assert_eq!(n1.coverage_pct, Some(70.0));

    assert_eq!(n2.up_s, secs(5 * H));
    assert_eq!(n2.downtime_s, secs(4 * H));
    assert_eq!(n2.unknown_s, secs(H));
    assert_eq!(n2.outages, 1);
    assert_eq!(n2.coverage_pct, Some(90.0));
    let outage = &n2.outage_list.as_ref().expect("asked for")[0];
    assert_eq!(outage.duration_s, secs(4 * H));
    assert_eq!(outage.end, Some(stamp(T0 + ms(8 * H))));

    assert_eq!(n3.unknown_s, secs(10 * H));
    assert_eq!(n3.availability_pct, None);
    assert_eq!(n3.coverage_pct, Some(0.0));
}

#[test]
fn maintenance_wins_over_blind_and_blind_over_the_state() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth)];
    let silences = [silence(Some("n1"), None, T0 + ms(2 * H), T0 + ms(4 * H))];
    let blind = [
        Window::new(T0 + ms(H), T0 + ms(3 * H)).expect("ordered"),
        Window::new(T0 + ms(5 * H), T0 + ms(6 * H)).expect("ordered"),
    ];
    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &silences,
        &blind,
    );
    let row = only_row(&r);
    assert_eq!(row.maintenance_s, secs(2 * H));
    assert_eq!(row.unknown_s, secs(2 * H));
    assert_eq!(row.up_s, secs(6 * H));
    assert_eq!(row.coverage_pct, Some(75.0));
}

#[test]
fn rollups_are_time_weighted() {
    let nodes = [
        info("lz", "cg", "a", "siren"),
        info("lz", "cg", "b", "siren"),
    ];
    let ts = [
        // a: watched 10 h, down 1 h.
        tr("a", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("a", Online, Offline, T0 + ms(2 * H), Cause::Will),
        tr("a", Offline, Online, T0 + ms(3 * H), Cause::Birth),
        // b: born at 08:00, watched 2 h, down 1 h.
        tr("b", Unknown, Online, T0 + ms(8 * H), Cause::Birth),
        tr("b", Online, Offline, T0 + ms(9 * H), Cause::Timeout),
    ];
    for by in [GroupBy::Site, GroupBy::Region, GroupBy::Network] {
        let r = run(
            &query(T0, T0 + ms(10 * H), T0 + ms(D), by),
            &nodes,
            &ts,
            &[],
            &[],
        );
        let row = only_row(&r);
        assert_eq!(row.nodes, 2);
        // (9 + 1) / (10 + 2), not the mean of 90 % and 50 %.
        assert_eq!(row.availability_pct, Some(10.0 * 100.0 / 12.0));
        assert_eq!(row.coverage_pct, Some(60.0));
        assert_eq!(row.downtime_s, secs(2 * H));
        assert_eq!(row.outages, 2);
        assert_eq!(row.longest_outage_s, Some(secs(H)));
        assert_eq!(row.mttr_s, Some(secs(H)));
        assert_eq!(row.mtbf_s, Some(secs(5 * H)));
        assert_eq!(row.outage_list, None);
        assert_eq!(row.node, None);
        assert_eq!(row.kind, None);
        match by {
            GroupBy::Site => {
                assert_eq!(row.region.as_ref().map(RegionId::as_str), Some("lz"));
                assert_eq!(row.site.as_ref().map(SiteId::as_str), Some("cg"));
            }
            GroupBy::Region => {
                assert_eq!(row.region.as_ref().map(RegionId::as_str), Some("lz"));
                assert_eq!(row.site, None);
            }
            _ => {
                assert_eq!(row.region, None);
                assert_eq!(row.site, None);
            }
        }
    }
}

#[test]
fn rollup_by_kind_and_by_region_across_the_network() {
    let nodes = [
        info("lz", "cg", "a", "siren"),
        info("lz", "cg", "b", "display"),
        info("tianshui", "qz", "c", "siren"),
    ];
    let ts = [
        tr("a", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("a", Online, Offline, T0 + ms(5 * H), Cause::Will),
        tr("b", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("c", Unknown, Online, T0 - ms(H), Cause::Birth),
    ];
    let q = query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Kind);
    let r = run(&q, &nodes, &ts, &[], &[]);
    assert_eq!(r.rows.len(), 2);
    let display = &r.rows[0];
    assert_eq!(display.kind.as_ref().map(Name::as_str), Some("display"));
    assert_eq!(display.nodes, 1);
    assert_eq!(display.availability_pct, Some(100.0));
    let siren = &r.rows[1];
    assert_eq!(siren.kind.as_ref().map(Name::as_str), Some("siren"));
    assert_eq!(siren.nodes, 2);
    assert_eq!(siren.availability_pct, Some(75.0));
    assert_eq!(siren.outages, 1);

    let r = run(
        &query(T0, T0 + ms(10 * H), T0 + ms(D), GroupBy::Region),
        &nodes,
        &ts,
        &[],
        &[],
    );
    let regions: Vec<_> = r
        .rows
        .iter()
        .map(|row| (row.region.as_ref().map(RegionId::as_str), row.nodes))
        .collect();
    assert_eq!(regions, [(Some("lz"), 2), (Some("tianshui"), 1)]);
    assert_eq!(r.rows[0].availability_pct, Some(75.0));
}

#[test]
fn filters_select_nodes() {
    let nodes = [
        info("lz", "cg", "a", "siren"),
        info("lz", "cg", "b", "display"),
        info("tianshui", "qz", "c", "siren"),
    ];
    let mut q = query(T0, T0 + ms(H), T0 + ms(D), GroupBy::Node);
    q.filter.kind = Some(Name::new("siren").expect("valid"));
    q.filter.region = Some(RegionId::new("lz").expect("valid"));
    let r = run(&q, &nodes, &[], &[], &[]);
    let row = only_row(&r);
    assert_eq!(row.node.as_ref().map(NodeId::as_str), Some("a"));
}

#[test]
fn test_results_roll_up_and_respect_the_filter() {
    let nodes = [
        info("lz", "cg", "a", "siren"),
        info("lz", "cg", "b", "siren"),
        info("lz", "qz", "c", "display"),
        info("tianshui", "qz", "d", "siren"),
    ];
    let tally = |run, passed, failed| TestTally {
        run,
        passed,
        failed,
    };
    let tests = [
        NodeTests {
            node: NodeId::new("a").expect("id"),
            tally: tally(4, 3, 1),
        },
        NodeTests {
            node: NodeId::new("c").expect("id"),
            tally: tally(2, 0, 1),
        },
        NodeTests {
            node: NodeId::new("d").expect("id"),
            tally: tally(5, 5, 0),
        },
        // Not a known node: ignored.
        NodeTests {
            node: NodeId::new("zz").expect("id"),
            tally: tally(9, 9, 0),
        },
    ];
    let inputs = |q: &Query| {
        report(
            q,
            Inputs {
                nodes: &nodes,
                transitions: &[],
                silences: &[],
                blind: &[],
                tests: &tests,
            },
        )
        .expect("report")
    };
    let q = query(T0, T0 + ms(D), T0 + ms(D), GroupBy::Node);
    let r = inputs(&q);
    let by_node: Vec<_> = r
        .rows
        .iter()
        .map(|r| {
            (
                r.node.as_ref().map(NodeId::as_str),
                r.tests,
                r.tests_passed,
                r.tests_failed,
                r.test_pass_pct,
            )
        })
        .collect();
    assert_eq!(
        by_node,
        [
            (Some("a"), 4, 3, 1, Some(75.0)),
            (Some("b"), 0, 0, 0, None),
            (Some("c"), 2, 0, 1, Some(0.0)),
            (Some("d"), 5, 5, 0, Some(100.0)),
        ]
    );
    // Per region: lz has a, b, c: 3 of 6 passed; the node count is not disturbed.
    let r = inputs(&query(T0, T0 + ms(D), T0 + ms(D), GroupBy::Region));
    assert_eq!(r.rows[0].nodes, 3);
    assert_eq!((r.rows[0].tests, r.rows[0].tests_passed), (6, 3));
    assert_eq!(r.rows[0].test_pass_pct, Some(50.0));
    // Filtered by kind: only the display's tests.
    let mut q = query(T0, T0 + ms(D), T0 + ms(D), GroupBy::Network);
    q.filter.kind = Some(Name::new("display").expect("kind"));
    let row = inputs(&q).rows.remove(0);
    assert_eq!((row.nodes, row.tests, row.tests_failed), (1, 2, 1));
    // Shown in the JSON.
    let json = serde_json::to_value(&row).expect("json");
    assert_eq!(json["test_pass_pct"], serde_json::json!(0.0));
    assert_eq!(json["tests"], serde_json::json!(2));
}

#[test]
fn zero_length_windows_and_empty_inputs() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth)];
    let r = run(
        &query(T0, T0, T0 + ms(D), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    let row = only_row(&r);
    assert_eq!(row.availability_pct, None);
    assert_eq!(row.coverage_pct, None);
    assert_eq!(row.up_s, 0.0);
    assert_eq!(row.outages, 0);

    // `now` before the window: nothing measured yet.
    let r = run(
        &query(T0, T0 + ms(D), T0 - ms(H), GroupBy::Node),
        &nodes,
        &ts,
        &[],
        &[],
    );
    assert_eq!(r.until, stamp(T0));
    assert_eq!(only_row(&r).availability_pct, None);

    let r = run(
        &query(T0, T0 + ms(D), T0 + ms(D), GroupBy::Region),
        &[],
        &[],
        &[],
        &[],
    );
    assert!(r.rows.is_empty());
    let json = serde_json::to_value(&r).expect("serializable");
    assert_eq!(json["rows"], serde_json::json!([]));
}

#[test]
fn misordered_input_is_refused() {
    let nodes = [
        info("lz", "cg", "a", "siren"),
        info("lz", "cg", "b", "siren"),
    ];
    let q = query(T0, T0 + ms(D), T0 + ms(D), GroupBy::Node);
    let times = [
        tr("a", Unknown, Online, T0 + ms(2 * H), Cause::Birth),
        tr("a", Online, Offline, T0 + ms(H), Cause::Timeout),
    ];
    let inputs = |transitions| Inputs {
        nodes: &nodes,
        transitions,
        silences: &[],
        blind: &[],
        tests: &[],
    };
    assert!(matches!(
        report(&q, inputs(&times)),
        Err(UptimeError::UnsortedTimes { .. })
    ));
    let order = [
        tr("b", Unknown, Online, T0, Cause::Birth),
        tr("a", Unknown, Online, T0, Cause::Birth),
    ];
    assert!(matches!(
        report(&q, inputs(&order)),
        Err(UptimeError::UnsortedNodes { .. })
    ));
    let mut builder = ReportBuilder::new(&q, &[], &[]);
    let err = builder
        .add_node(&nodes[0].path, &nodes[0].kind, &order[..1])
        .expect_err("b's transition given for a");
    assert!(matches!(err, UptimeError::WrongNode { .. }));
}

#[test]
fn calendar_month_in_shanghai() {
    let tz = shanghai();
    let w = Window::calendar(Period::Month, date(2026, 10, 17), &tz).expect("valid");
    assert_eq!((w.from(), w.to()), (T0, NOV_1));
    assert_eq!(w.len_ms(), 744 * H);
    let params = WindowParams {
        month: Some("2026-10".to_owned()),
        ..WindowParams::default()
    };
    assert_eq!(params.resolve(UnixMillis::from_millis(0), &tz), Ok(w));
    // A plain `to` date is inclusive.
    let params = WindowParams {
        from: Some("2026-10-01".to_owned()),
        to: Some("2026-10-31".to_owned()),
        ..WindowParams::default()
    };
    assert_eq!(params.resolve(UnixMillis::from_millis(0), &tz), Ok(w));
    let params = WindowParams {
        from: Some("2026-09-30T16:00:00Z".to_owned()),
        to: Some("2026-11-01T00:00:00+08:00".to_owned()),
        ..WindowParams::default()
    };
    assert_eq!(params.resolve(UnixMillis::from_millis(0), &tz), Ok(w));
    // A whole month of one node up, in a report, written in the zone.
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [tr("n1", Unknown, Online, T0 - ms(D), Cause::Birth)];
    let q = Query {
        window: w,
        now: NOV_1 + ms(D),
        by: GroupBy::Network,
        filter: Filter::default(),
        outage_list: false,
        tz,
    };
    let r = run(&q, &nodes, &ts, &[], &[]);
    assert_eq!(r.from.to_string(), "2026-10-01T00:00:00+08:00");
    assert_eq!(r.to.to_string(), "2026-11-01T00:00:00+08:00");
    assert_eq!(only_row(&r).up_s, secs(744 * H));
}

#[test]
fn calendar_months_with_a_dst_switch() {
    let berlin = time_zone("Europe/Berlin").expect("the system time zone database has Berlin");
    let march = Window::calendar(Period::Month, date(2026, 3, 1), &berlin).expect("valid");
    assert_eq!(march.from(), UnixMillis::from_millis(1_772_319_600_000));
    assert_eq!(march.len_ms(), 743 * H);
    let october = Window::calendar(Period::Month, date(2026, 10, 31), &berlin).expect("valid");
    assert_eq!(october.len_ms(), 745 * H);
    let day = Window::calendar(Period::Day, date(2026, 3, 29), &berlin).expect("valid");
    assert_eq!(day.len_ms(), 23 * H);
}

#[test]
fn calendar_days_weeks_and_years() {
    let tz = shanghai();
    let week = Window::calendar(Period::Week, date(2026, 10, 1), &tz).expect("valid");
    assert_eq!(
        (week.from().as_millis(), week.to().as_millis()),
        (1_790_524_800_000, 1_791_129_600_000)
    );
    let resolve = |params: WindowParams| params.resolve(UnixMillis::from_millis(0), &tz);
    assert_eq!(
        resolve(WindowParams {
            week: Some("2026-W40".to_owned()),
            ..WindowParams::default()
        }),
        Ok(week)
    );
    let year = resolve(WindowParams {
        year: Some("2026".to_owned()),
        ..WindowParams::default()
    })
    .expect("valid");
    assert_eq!(
        (year.from().as_millis(), year.to().as_millis()),
        (1_767_196_800_000, 1_798_732_800_000)
    );
    let day = resolve(WindowParams {
        day: Some("2026-10-01".to_owned()),
        ..WindowParams::default()
    })
    .expect("valid");
    assert_eq!((day.from(), day.to()), (T0, T0 + ms(D)));
}

#[test]
fn relative_and_local_windows() {
    let tz = shanghai();
    let now = T0 + ms(5 * D) + ms(123);
    let resolve = |params: WindowParams| params.resolve(now, &tz);
    assert_eq!(
        resolve(WindowParams::default()),
        Ok(Window::last(ms(30 * D), now))
    );
    assert_eq!(
        resolve(WindowParams {
            since: Some("30d".to_owned()),
            ..WindowParams::default()
        }),
        Ok(Window::new(now - ms(30 * D), now).expect("ordered"))
    );
    assert_eq!(parse_duration("since", "1d12h"), Ok(ms(36 * H)));
    assert_eq!(parse_duration("since", "2w"), Ok(ms(14 * D)));
    assert_eq!(parse_duration("since", "90m"), Ok(ms(90 * 60 * S)));
    // A local time in the zone, and `to` defaulting to now.
    let w = resolve(WindowParams {
        from: Some("2026-10-01T08:30".to_owned()),
        ..WindowParams::default()
    })
    .expect("valid");
    assert_eq!((w.from(), w.to()), (T0 + ms(8 * H) + ms(30 * 60 * S), now));
}

#[test]
fn bad_parameters_are_named() {
    let tz = shanghai();
    let resolve = |params: WindowParams| params.resolve(T0, &tz).expect_err("invalid");
    let e = resolve(WindowParams {
        since: Some("30x".to_owned()),
        ..WindowParams::default()
    });
    assert_eq!(e.param, "since");
    let e = resolve(WindowParams {
        from: Some("yesterday".to_owned()),
        ..WindowParams::default()
    });
    assert_eq!(e.param, "from");
    assert!(e.to_string().contains("from"), "{e}");
    let e = resolve(WindowParams {
        from: Some("2026-10-05".to_owned()),
        to: Some("2026-10-01".to_owned()),
        ..WindowParams::default()
    });
    assert_eq!(e.param, "to");
    let e = resolve(WindowParams {
        to: Some("2026-10-01".to_owned()),
        ..WindowParams::default()
    });
    assert_eq!(e.param, "from");
    let e = resolve(WindowParams {
        since: Some("30d".to_owned()),
        month: Some("2026-10".to_owned()),
        ..WindowParams::default()
    });
    assert_eq!(e.param, "month");
    for (month, param) in [("2026-13", "month"), ("2026-1", "month")] {
        let e = resolve(WindowParams {
            month: Some(month.to_owned()),
            ..WindowParams::default()
        });
        assert_eq!(e.param, param, "{month}");
    }
    let e = resolve(WindowParams {
        week: Some("2026-W54".to_owned()),
        ..WindowParams::default()
    });
    assert_eq!(e.param, "week");
    let e = resolve(WindowParams {
        from: Some("1969-12-31".to_owned()),
        ..WindowParams::default()
    });
    assert_eq!(e.param, "from");
    assert_eq!(
        "weekly".parse::<GroupBy>().expect_err("invalid").param,
        "by"
    );
    assert_eq!("site".parse::<GroupBy>(), Ok(GroupBy::Site));
    assert_eq!(time_zone("Mars/Olympus").expect_err("invalid").param, "tz");
}

#[test]
fn report_json_shape() {
    let nodes = [info("lz", "cg", "n1", "siren")];
    let ts = [
        tr("n1", Unknown, Online, T0 - ms(H), Cause::Birth),
        tr("n1", Online, Offline, T0 + ms(H) + ms(250), Cause::Will),
    ];
    let mut q = query(T0, T0 + ms(D), T0 + ms(2 * H), GroupBy::Node);
    q.filter.node = Some(NodeId::new("n1").expect("valid"));
    let r = run(&q, &nodes, &ts, &[], &[]);
    let json = serde_json::to_value(&r).expect("serializable");
    assert_eq!(
        json,
        serde_json::json!({
            "from": "2026-10-01T00:00:00+08:00",
            "to": "2026-10-02T00:00:00+08:00",
            "until": "2026-10-01T02:00:00+08:00",
            "by": "node",
            "rows": [{
                "region": "lz", "site": "cg", "node": "n1", "kind": "siren",
                "nodes": 1,
                "availability_pct": (3_600_250.0 * 100.0 / 7_200_000.0),
                "coverage_pct": 100.0,
                "up_s": 3600.25,
                "downtime_s": 3599.75,
                "maintenance_s": 0.0,
                "unknown_s": 0.0,
                "outages": 1,
                "longest_outage_s": 3599.75,
                "mttr_s": 3599.75,
                "mtbf_s": 3600.25,
                "tests": 0,
                "tests_passed": 0,
                "tests_failed": 0,
                "test_pass_pct": null,
                "outage_list": [{
                    "start": "2026-10-01T01:00:00.25+08:00",
                    "end": null,
                    "duration_s": 3599.75,
                    "cause": "will",
                }],
            }],
        })
    );
    let back: UptimeReport = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, r);
}

/// The category of one instant by the definitions, straight from the inputs.
fn reference_category(
    t: UnixMillis,
    transitions: &[Transition],
    maintenance: &[(UnixMillis, UnixMillis)],
    blind: &[(UnixMillis, UnixMillis)],
) -> Liveness {
    if maintenance.iter().any(|&(a, b)| a <= t && t < b) {
        return Maintenance;
    }
    if blind.iter().any(|&(a, b)| a <= t && t < b) {
        return Unknown;
    }
    match transitions.iter().rev().find(|x| x.at <= t) {
        Some(x) => x.to,
        None => transitions.first().map_or(Unknown, |x| x.from),
    }
}

type Intervals = Vec<(UnixMillis, UnixMillis)>;

/// (initial state, (at, state) sorted by at, silences, blind, from, to, now)
type Case = (
    usize,
    Vec<(UnixMillis, usize)>,
    Intervals,
    Intervals,
    UnixMillis,
    UnixMillis,
    UnixMillis,
);

fn arb_case() -> impl Strategy<Value = Case> {
    (
        0..6usize,
        prop::collection::vec((0..120u64, 0..6usize), 0..12),
        prop::collection::vec((0..120u64, 0..40u64), 0..3),
        prop::collection::vec((0..120u64, 0..40u64), 0..3),
        0..120u64,
        0..80u64,
        0..140u64,
    )
        .prop_map(|(init, mut ts, silences, blind, from, len, now)| {
            let at = UnixMillis::from_millis;
            ts.sort_by_key(|&(at, _)| at);
            let ts = ts.into_iter().map(|(t, s)| (at(t), s)).collect();
            let span =
                |v: Vec<(u64, u64)>| v.into_iter().map(|(a, l)| (at(a), at(a + l))).collect();
            (
                init,
                ts,
                span(silences),
                span(blind),
                at(from),
                at(from + len),
                at(now),
            )
        })
}

proptest! {
    #[test]
    fn every_instant_is_counted_once_and_matches_the_definitions(
        (init, ts, silences, blind, from, to, now) in arb_case()
    ) {
        let node = info("lz", "cg", "n1", "siren");
        let mut transitions = Vec::new();
        let mut state = Liveness::ALL[init];
        for (at, s) in ts {
            let to_state = Liveness::ALL[s];
            transitions.push(tr("n1", state, to_state, at, Cause::Heartbeat));
            state = to_state;
        }
        let silences: Vec<Silence> = silences
            .iter()
            .map(|&(a, b)| silence(Some("n1"), None, a, b))
            .collect();
        let blind_windows: Vec<Window> = blind
            .iter()
            .map(|&(a, b)| Window::new(a, b).expect("ordered"))
            .collect();
        let mut q = query(from, to, now, GroupBy::Node);
        q.tz = TimeZone::UTC;
        let r = run(&q, std::slice::from_ref(&node), &transitions, &silences, &blind_windows);
        let row = &r.rows[0];

        let until = to.min(now).max(from);
        let (mut up, mut down, mut maint, mut unknown) = (0u64, 0u64, 0u64, 0u64);
        for t in from.as_millis()..until.as_millis() {
            match reference_category(UnixMillis::from_millis(t), &transitions, &silences.iter().map(|s| (s.starts_at, s.ends_at)).collect::<Vec<_>>(), &blind) {
                s if s.is_up() => up += 1,
                s if s.is_down() => down += 1,
                Maintenance => maint += 1,
                _ => unknown += 1,
            }
        }
        prop_assert_eq!(row.up_s, secs(up));
        prop_assert_eq!(row.downtime_s, secs(down));
        prop_assert_eq!(row.maintenance_s, secs(maint));
        prop_assert_eq!(row.unknown_s, secs(unknown));
        prop_assert_eq!(up + down + maint + unknown, until.millis_since(from));
        if let Some(a) = row.availability_pct {
            prop_assert!((0.0..=100.0).contains(&a));
        }
        if let Some(c) = row.coverage_pct {
            prop_assert!((0.0..=100.0).contains(&c));
        }
        let list = row.outage_list.as_ref().expect("asked for");
        prop_assert_eq!(list.len() as u64, row.outages);
        let total: f64 = list.iter().map(|o| o.duration_s).sum();
        prop_assert!((total - row.downtime_s).abs() < 1e-9);
        prop_assert!(list.iter().all(|o| o.duration_s > 0.0));
        prop_assert!(list.iter().all(|o| o.duration_s <= row.longest_outage_s.unwrap_or(0.0)));
        prop_assert_eq!(row.outages == 0, down == 0);
    }
}

/// The steps a store hands the engine for `[from, until)`: from the last transition before
/// `from` (all of those at that instant), up to `until` (as `Db::each_node_history`).
fn store_steps(transitions: &[Transition], from: UnixMillis, until: UnixMillis) -> Vec<Step> {
    let start = transitions
        .iter()
        .filter(|t| t.at < from)
        .map(|t| t.at)
        .max()
        .unwrap_or(from);
    transitions
        .iter()
        .filter(|t| t.at >= start && t.at < until)
        .map(Step::from)
        .collect()
}

proptest! {
    /// Daily summaries add up to what the raw transitions say over the whole span: every
    /// time category, the outage count (an outage over midnight is one), the longest outage.
    #[test]
    fn summaries_of_consecutive_days_equal_the_report_over_the_raw_transitions(
        (_init, ts, silences, blind, _from, _to, _now) in arb_case(),
        day in 1..45u64,
        days in 1..8u64,
        split in 0..8usize,
    ) {
        let node = info("lz", "cg", "n1", "siren");
        let mut transitions = Vec::new();
        // A node's first stored transition is from `unknown` (nobody knew it before).
        let mut state = Liveness::Unknown;
        for (at, s) in ts {
            let to_state = Liveness::ALL[s];
            transitions.push(tr("n1", state, to_state, at, Cause::Heartbeat));
            state = to_state;
        }
        let silences: Vec<Silence> = silences
            .iter()
            .map(|&(a, b)| silence(Some("n1"), None, a, b))
            .collect();
        let blind: Vec<Window> = blind
            .iter()
            .map(|&(a, b)| Window::new(a, b).expect("ordered"))
            .collect();
        let at = UnixMillis::from_millis;
        let end = at(day * days);
        let mut q = query(UnixMillis::EPOCH, end, UnixMillis::MAX, GroupBy::Node);
        q.tz = TimeZone::UTC;
        q.outage_list = false;
        let mut whole = ReportBuilder::new(&q, &silences, &blind);
        whole
            .add_node_steps(&node.path, &node.kind, &store_steps(&transitions, UnixMillis::EPOCH, end))
            .expect("sorted");
        let row = whole.finish().rows.remove(0);

        let mut segments = Vec::new();
        for d in 0..days {
            let mut dq = query(at(d * day), at((d + 1) * day), UnixMillis::MAX, GroupBy::Node);
            dq.tz = TimeZone::UTC;
            let mut b = ReportBuilder::new(&dq, &silences, &blind);
            let steps = store_steps(&transitions, at(d * day), at((d + 1) * day));
            segments.push(
                b.segment(&node.path, &node.kind, &steps, TestTally::default())
                    .expect("sorted"),
            );
        }
        let c = combine(&segments);
        // Merged into blocks of consecutive days, grouped otherwise than `combine` merges
        // them (one by one from the first), they add up alike.
        let merge = |part: &[Segment]| part[1..].iter().fold(part[0], |m, s| m.then(s));
        let cut = split % segments.len();
        let mut blocks = Vec::new();
        if cut > 0 {
            blocks.push(merge(&segments[..cut]));
        }
        blocks.extend(segments[cut..].chunks(2).map(merge));
        prop_assert_eq!(combine(&blocks), c, "{:?}", segments);
        prop_assert_eq!(secs(c.up_ms), row.up_s);
        prop_assert_eq!(secs(c.down_ms), row.downtime_s);
        prop_assert_eq!(secs(c.maintenance_ms), row.maintenance_s);
        prop_assert_eq!(secs(c.unknown_ms), row.unknown_s);
        prop_assert_eq!(c.outages, row.outages, "{:?}", segments);
        prop_assert_eq!(
            (c.outages > 0).then(|| secs(c.longest_ms)),
            row.longest_outage_s,
            "{:?}",
            segments
        );
    }
}

#[test]
fn an_outage_over_midnight_is_one_outage_in_the_summaries() {
    let node = info("lz", "cg", "n1", "siren");
    let t = [
        tr(
            "n1",
            Unknown,
            Online,
            UnixMillis::from_millis(0),
            Cause::Birth,
        ),
        tr(
            "n1",
            Online,
            Offline,
            UnixMillis::from_millis(22 * H),
            Cause::Timeout,
        ),
        tr(
            "n1",
            Offline,
            Online,
            UnixMillis::from_millis(D) + ms(2 * H),
            Cause::Heartbeat,
        ),
    ];
    let day = |d: u64| {
        let mut q = query(
            UnixMillis::from_millis(d * D),
            UnixMillis::from_millis((d + 1) * D),
            UnixMillis::MAX,
            GroupBy::Node,
        );
        q.tz = TimeZone::UTC;
        let mut b = ReportBuilder::new(&q, &[], &[]);
        b.segment(
            &node.path,
            &node.kind,
            &store_steps(
                &t,
                UnixMillis::from_millis(d * D),
                UnixMillis::from_millis((d + 1) * D),
            ),
            TestTally::default(),
        )
        .expect("sorted")
    };
    let (d0, d1) = (day(0), day(1));
    assert_eq!((d0.outages, d0.last_open, d0.last_ms), (1, true, 2 * H));
    assert_eq!(
        (d1.outages, d1.first_carried, d1.first_ms),
        (1, true, 2 * H)
    );
    let c = combine(&[d0, d1]);
    assert_eq!((c.outages, c.longest_ms, c.down_ms), (1, 4 * H, 4 * H));
}
