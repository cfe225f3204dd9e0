//! The alert rules, lifecycle, silences and inhibition, driven through [`Monitor`] with
//! injected time.

use crate::model::ms;
use std::time::Duration;

use alarmnet_protocol::{AlertStatus, Birth, Fault, Heartbeat, NodePath, Severity, State};
use serde_json::json;

use super::*;
use crate::liveness::RestoredNode;
use crate::model::{AlertId, Liveness, NodeInfo, Silence, SilenceId, UnixMillis};

const T0: UnixMillis = UnixMillis::from_millis(1_764_330_000_000);
const I: u64 = 10_000;
const BOOT: &str = "boot-aaaaaaaa";

fn path(region: &str, site: &str, node: &str) -> NodePath {
    NodePath::new(
        region.parse().expect("region"),
        site.parse().expect("site"),
        node.parse().expect("node"),
    )
}

fn birth(p: &NodePath, boot: &str, kind: &str, ts: u64) -> Birth {
    serde_json::from_value(json!({
        "v": 1, "boot": boot, "ts": ts, "node": p.node, "site": p.site, "region": p.region,
        "kind": kind, "name": format!("警报器 {}", p.node), "hb_interval_s": I / 1000
    }))
    .expect("birth")
}

fn hb(seq: u64, ts: u64) -> Heartbeat {
    serde_json::from_value(json!({"v": 1, "boot": BOOT, "seq": seq, "ts": ts})).expect("hb")
}

fn will() -> State {
    serde_json::from_value(json!({"v": 1, "state": "offline", "boot": BOOT, "reason": "lost"}))
        .expect("state")
}

fn fault(seq: u64, ts: u64, code: &str, severity: &str, status: &str, replay: bool) -> Fault {
    serde_json::from_value(json!({
        "v": 1, "boot": BOOT, "seq": seq, "ts": ts, "check": "amplifier", "code": code,
        "severity": severity, "status": status, "message": "amplifier 2: no output",
        "replay": replay
    }))
    .expect("fault")
}

/// A monitor, a clock, and every output recorded.
struct H {
    m: Monitor,
    now: UnixMillis,
    seq: u64,
    log: Vec<AlertChange>,
}

impl H {
    fn new() -> Self {
        Self::with(MonitorConfig::default())
    }

    /// Site and region outages notified as soon as they fire (inhibition tests).
    fn outages_at_once() -> Self {
        let mut cfg = MonitorConfig::default();
        cfg.alerts.site_outage.group_wait = Duration::ZERO;
        cfg.alerts.region_outage.group_wait = Duration::ZERO;
        Self::with(cfg)
    }

    fn with(cfg: MonitorConfig) -> Self {
        assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
        Self {
            m: Monitor::new(cfg, T0),
            now: T0,
            seq: 0,
            log: Vec::new(),
        }
    }

    fn take(&mut self, out: Output) -> Output {
        self.log.extend(out.alerts.iter().cloned());
        out
    }

    fn add(&mut self, region: &str, site: &str, node: &str, kind: &str) -> NodePath {
        let p = path(region, site, node);
        let out = self.m.on_birth(
            &p,
            &birth(&p, BOOT, kind, self.now.as_millis()),
            false,
            self.now,
        );
        self.take(out);
        p
    }

    /// Advances the clock to `to`, ticking every second.
    fn run_to(&mut self, to: UnixMillis) -> Vec<AlertChange> {
        let mut changes = Vec::new();
        while self.now < to {
            self.now = (self.now + ms(1_000)).min(to);
            let out = self.m.tick(self.now);
            changes.extend(self.take(out).alerts);
        }
        changes
    }

    /// Live heartbeats from `nodes` every interval until `to`, ticking in between.
    fn beat_until(&mut self, nodes: &[&NodePath], to: UnixMillis) {
        while self.now + ms(I) <= to {
            self.run_to(self.now + ms(I));
            self.seq += 1;
            for p in nodes {
                let out = self
                    .m
                    .on_heartbeat(p, &hb(self.seq, self.now.as_millis()), self.now);
                self.take(out);
            }
        }
        self.run_to(to);
    }

    fn will(&mut self, p: &NodePath) -> Output {
        let out = self.m.on_state(p, &will(), false, self.now);
        self.take(out)
    }

    fn beat(&mut self, p: &NodePath) -> Output {
        self.seq += 1;
        let out = self
            .m
            .on_heartbeat(p, &hb(self.seq, self.now.as_millis()), self.now);
        self.take(out)
    }

    /// Notifications sent so far for a rule: (event, status) pairs.
    fn sent(&self, rule: &str) -> Vec<(AlertEvent, AlertStatus)> {
        self.log
            .iter()
            .filter(|c| c.notify && c.alert.rule.as_str() == rule)
            .map(|c| (c.event, c.alert.status))
            .collect()
    }

    fn firing(&self, rule: &str) -> usize {
        self.m
            .engine()
            .alerts()
            .filter(|a| a.rule.as_str() == rule)
            .count()
    }
}

/// The changes of one rule in an output.
fn of<'a>(out: &'a Output, rule: &str) -> Vec<&'a AlertChange> {
    out.alerts
        .iter()
        .filter(|c| c.alert.rule.as_str() == rule)
        .collect()
}

/// The silence id for a short test label (its bytes as a number: distinct labels of up to
/// eight bytes get distinct ids).
fn sid(label: &str) -> SilenceId {
    SilenceId::new(label.bytes().fold(0, |id, b| id << 8 | u64::from(b)))
}

fn silence(
    id: &str,
    node: Option<&str>,
    site: Option<&str>,
    from: UnixMillis,
    to: UnixMillis,
) -> Silence {
    Silence {
        id: sid(id),
        region: None,
        site: site.map(|s| s.parse().expect("site")),
        node: node.map(|n| n.parse().expect("node")),
        kind: None,
        starts_at: from,
        ends_at: to,
        created_by: "duty-officer".to_owned(),
        comment: Some("amplifier replacement".to_owned()),
    }
}

const FIRED: (AlertEvent, AlertStatus) = (AlertEvent::Fired, AlertStatus::Firing);
const LATE_FIRED: (AlertEvent, AlertStatus) = (AlertEvent::Updated, AlertStatus::Firing);
const RESOLVED: (AlertEvent, AlertStatus) = (AlertEvent::Resolved, AlertStatus::Resolved);

// ----- node_offline -----

#[test]
fn node_offline_fires_at_once_and_is_notified_after_the_group_wait() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.run_to(T0 + ms(5_000));
    let out = h.will(&p);
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.alerts.len(), 1);
    let a = &out.alerts[0];
    assert_eq!((a.event, a.notify), (AlertEvent::Fired, false));
    assert_eq!(a.alert.severity, Severity::Critical, "sirens are critical");
    assert_eq!(a.alert.started_at, T0 + ms(5_000));
    assert!(
        a.alert.summary.contains("警报器 s1 (s1)"),
        "{}",
        a.alert.summary
    );
    assert!(!a.alert.summary.contains('\n'));
    assert_eq!(
        a.alert.args.get("cause"),
        Some("will"),
        "{:?}",
        a.alert.args
    );
    assert!(h.run_to(T0 + ms(5_000) + ms(14_999)).is_empty());
    let late = h.run_to(T0 + ms(5_000) + ms(15_000));
    assert_eq!(late.len(), 1);
    assert!(late[0].notify && late[0].alert.notified);
    // Back online: the resolution is notified because the firing was.
    let out = h.beat(&p);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].alert.status, AlertStatus::Resolved);
    assert!(out.alerts[0].notify);
    assert_eq!(out.alerts[0].alert.ended_at, Some(h.now));
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED, RESOLVED]);
}

#[test]
fn displays_are_major_and_group_wait_zero_notifies_at_once() {
    let mut cfg = MonitorConfig::default();
    cfg.alerts.node_offline.group_wait = Duration::ZERO;
    let mut h = H::with(cfg);
    let p = h.add("lz", "cg", "d1", "display");
    let out = h.will(&p);
    assert_eq!(out.alerts[0].alert.severity, Severity::Major);
    assert!(out.alerts[0].notify);
}

#[test]
fn a_blip_shorter_than_the_group_wait_is_recorded_but_never_notified() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.will(&p);
    h.run_to(T0 + ms(3_000));
    let out = h.beat(&p);
    assert_eq!(out.alerts[0].event, AlertEvent::Resolved);
    assert!(!out.alerts[0].notify);
    h.beat_until(&[&p], T0 + ms(60_000));
    assert!(h.sent("node_offline").is_empty());
    assert_eq!(h.log.len(), 2, "fired and resolved are both in history");
}

#[test]
fn timeout_offline_fires_and_stopped_raises_nothing() {
    let mut h = H::new();
    let a = h.add("lz", "cg", "a", "siren");
    let b = h.add("lz", "cg2", "b", "siren");
    let out = h.m.on_state(
        &b,
        &serde_json::from_value(
            json!({"v": 1, "state": "offline", "boot": BOOT, "reason": "shutdown"}),
        )
        .expect("state"),
        false,
        h.now,
    );
    assert_eq!(out.transitions[0].to, Liveness::Stopped);
    assert!(out.alerts.is_empty());
    let changes = h.run_to(T0 + ms(3 * I));
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].alert.subject.node(), Some(&a.node));
    h.run_to(T0 + ms(3 * I) + ms(15_000));
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED]);
}

// ----- site and region outages, inhibition -----

#[test]
fn site_cut_gives_one_site_alert_and_no_node_notifications() {
    let mut h = H::outages_at_once();
    let cut: Vec<NodePath> = (0..6)
        .map(|k| h.add("lz", "cg", &format!("cg{k}"), "siren"))
        .collect();
    // A bigger site next door keeps the region below 50 %.
    let others: Vec<NodePath> = (0..8)
        .map(|k| h.add("lz", "an", &format!("an{k}"), "siren"))
        .collect();
    let all: Vec<&NodePath> = cut.iter().chain(&others).collect();
    h.beat_until(&all, T0 + ms(60_000));
    // The site is cut: only the other site keeps talking. Run far past every wait.
    let rest: Vec<&NodePath> = others.iter().collect();
    h.beat_until(&rest, T0 + ms(600_000));
    assert_eq!(
        h.firing("node_offline"),
        6,
        "every node's alert is recorded"
    );
    assert_eq!(h.sent("site_outage"), vec![FIRED]);
    assert!(
        h.sent("node_offline").is_empty(),
        "{:?}",
        h.sent("node_offline")
    );
    let site =
        h.m.engine()
            .alerts()
            .find(|a| a.rule.as_str() == "site_outage")
            .expect("site alert");
    assert_eq!(site.subject.node(), None);
    assert_eq!(site.subject.site().map(|s| s.as_str()), Some("cg"));
    assert!(
        h.sent("region_outage").is_empty(),
        "6 of 14 is no region outage"
    );
}

#[test]
fn a_site_flicker_inside_the_group_wait_is_recorded_never_notified() {
    let mut h = H::new();
    let site: Vec<NodePath> = (0..2)
        .map(|k| h.add("lz", "cg", &format!("cg{k}"), "siren"))
        .collect();
    let others: Vec<NodePath> = (0..6)
        .map(|k| h.add("lz", "an", &format!("an{k}"), "siren"))
        .collect();
    let rest: Vec<&NodePath> = others.iter().collect();
    let all: Vec<&NodePath> = site.iter().chain(&others).collect();
    h.beat_until(&all, T0 + ms(60_000));
    // Both Wills, back 4 s later: inside the 5 s default group wait.
    h.will(&site[0]);
    h.will(&site[1]);
    assert_eq!(h.firing("site_outage"), 1, "recorded at once");
    h.run_to(h.now + ms(4_000));
    h.beat(&site[0]);
    h.beat(&site[1]);
    h.beat_until(&all, h.now + ms(60_000));
    assert_eq!(h.firing("site_outage"), 0);
    let site_changes: Vec<_> = h
        .log
        .iter()
        .filter(|c| c.alert.rule.as_str() == "site_outage")
        .map(|c| (c.event, c.notify))
        .collect();
    assert_eq!(
        site_changes,
        [(AlertEvent::Fired, false), (AlertEvent::Resolved, false)]
    );
    // A real cut: notified once, 5 s after it began, counting its members then.
    let cut = h.now;
    h.will(&site[0]);
    h.will(&site[1]);
    h.beat_until(&rest, cut + ms(4_000));
    assert!(h.sent("site_outage").is_empty());
    h.beat_until(&rest, cut + ms(6_000));
    assert_eq!(h.sent("site_outage"), vec![LATE_FIRED]);
    let notified = h.log.iter().rev().find(|c| c.notify).expect("notified");
    assert_eq!(
        notified.alert.summary,
        "site outage at lz/cg: 2 of 2 nodes offline"
    );
    let args = &notified.alert.args;
    assert_eq!(
        (args.get("offline"), args.get("total")),
        (Some("2"), Some("2"))
    );
    assert_eq!(notified.alert.started_at, cut, "started when it began");
}

#[test]
fn a_firing_outage_renotifies_member_changes_at_most_once_per_group_interval() {
    let mut cfg = MonitorConfig::default();
    cfg.alerts.site_outage.group_interval = Duration::from_secs(60);
    let mut h = H::with(cfg);
    let site: Vec<NodePath> = (0..4)
        .map(|k| h.add("lz", "cg", &format!("cg{k}"), "siren"))
        .collect();
    let others: Vec<NodePath> = (0..8)
        .map(|k| h.add("lz", "an", &format!("an{k}"), "siren"))
        .collect();
    let all: Vec<&NodePath> = site.iter().chain(&others).collect();
    h.beat_until(&all, T0 + ms(60_000));
    let cut = h.now;
    h.will(&site[0]);
    h.will(&site[1]);
    let mut alive: Vec<&NodePath> = others.iter().chain(&site[2..]).collect();
    h.beat_until(&alive, cut + ms(10_000));
    assert_eq!(h.sent("site_outage"), vec![LATE_FIRED]);
    // cg2 goes down 5 s after the notification (sent at cut + 5 s, after the group wait):
    // the change waits until 60 s after that notification.
    h.will(&site[2]);
    alive.retain(|p| p.node.as_str() != "cg2");
    h.beat_until(&alive, cut + ms(20_000));
    // cg0 comes back within the same interval: one re-notification will carry both.
    h.beat(&site[0]);
    alive.push(&site[0]);
    h.beat_until(&alive, cut + ms(64_000));
    assert_eq!(h.sent("site_outage"), vec![LATE_FIRED], "rate-limited");
    h.beat_until(&alive, cut + ms(66_000));
    assert_eq!(h.sent("site_outage"), vec![LATE_FIRED, LATE_FIRED]);
    let update = h.log.iter().rev().find(|c| c.notify).expect("the update");
    assert_eq!(
        update.alert.summary,
        "site outage at lz/cg: 2 of 4 nodes offline (offline since the last notice: cg2; back: cg0)"
    );
    let args = &update.alert.args;
    assert_eq!(
        [
            args.get("offline"),
            args.get("total"),
            args.get("went_down"),
            args.get("came_back")
        ],
        [Some("2"), Some("4"), Some("cg2"), Some("cg0")]
    );
    // Nothing changes: nothing more is sent.
    h.beat_until(&alive, cut + ms(300_000));
    assert_eq!(h.sent("site_outage").len(), 2);
}

#[test]
fn every_rule_waits_its_configured_group_wait() {
    let mut cfg = MonitorConfig::default();
    cfg.alerts.clock_skew.group_wait = Duration::from_secs(10);
    let mut h = H::with(cfg);
    let p = h.add("lz", "cg", "n1", "siren");
    h.beat_until(&[&p], T0 + ms(60_000));
    // An agent clock 5 min ahead: recorded at once, notified 10 s later.
    h.seq += 1;
    let out =
        h.m.on_heartbeat(&p, &hb(h.seq, (h.now + ms(300_000)).as_millis()), h.now);
    h.take(out);
    assert_eq!(h.firing("clock_skew"), 1);
    assert!(h.sent("clock_skew").is_empty());
    h.run_to(h.now + ms(9_000));
    assert!(h.sent("clock_skew").is_empty());
    h.run_to(h.now + ms(1_000));
    assert_eq!(h.sent("clock_skew"), vec![LATE_FIRED]);
}

#[test]
fn region_outage_inhibits_site_and_node_notifications() {
    let mut h = H::outages_at_once();
    let nodes: Vec<NodePath> = ["a1", "a2", "b1", "b2"]
        .iter()
        .map(|n| h.add("lz", &n[..1], n, "siren"))
        .collect();
    let lone = h.add("tianshui", "ts", "t1", "siren");
    let all: Vec<&NodePath> = nodes.iter().chain([&lone]).collect();
    h.beat_until(&all, T0 + ms(20_000));
    // One Will: notified after the group wait (no outage yet).
    h.will(&nodes[0]);
    h.beat_until(&all[1..], T0 + ms(40_000));
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED]);
    // The second node of the region takes it to 50%: region outage, which also inhibits
    // site `a` (2 of 2 offline), and the second node's own alert.
    h.will(&nodes[1]);
    assert_eq!(h.sent("region_outage"), vec![FIRED]);
    assert_eq!(h.firing("site_outage"), 1);
    assert!(h.sent("site_outage").is_empty());
    h.will(&nodes[2]);
    h.will(&nodes[3]);
    h.beat_until(&[&lone], T0 + ms(600_000));
    assert_eq!(
        h.sent("node_offline"),
        vec![LATE_FIRED],
        "only the first, before the outage"
    );
    assert_eq!(h.firing("site_outage"), 2);
    assert_eq!(h.firing("node_offline"), 4);
    h.will(&lone);
    assert_eq!(h.firing("region_outage"), 1, "one node is no region outage");
    // Everything comes back within a few seconds.
    for p in &nodes {
        h.beat(p);
        h.run_to(h.now + ms(2_000));
    }
    let back: Vec<&NodePath> = nodes.iter().collect();
    h.beat_until(&back, h.now + ms(60_000));
    // b1 and b2 went down after the region outage was notified: one re-notification names
    // them (members changed), then the resolution.
    assert_eq!(h.sent("region_outage"), vec![FIRED, LATE_FIRED, RESOLVED]);
    let update = h
        .log
        .iter()
        .find(|c| c.alert.rule.as_str() == "region_outage" && c.event == AlertEvent::Updated)
        .expect("the re-notification");
    assert!(
        update
            .alert
            .summary
            .ends_with("4 of 4 nodes offline (offline since the last notice: b1, b2)"),
        "{}",
        update.alert.summary
    );
    assert!(h.sent("site_outage").is_empty());
    // a1's resolution, then the lone node (no outage in a region of one).
    assert_eq!(
        h.sent("node_offline"),
        vec![LATE_FIRED, RESOLVED, LATE_FIRED]
    );
}

#[test]
fn nodes_still_offline_when_a_site_outage_ends_are_notified_then() {
    let mut h = H::outages_at_once();
    let nodes: Vec<NodePath> = (0..4)
        .map(|k| h.add("lz", "cg", &format!("n{k}"), "siren"))
        .collect();
    // Enough other nodes in the region that this is no region outage.
    let far: Vec<NodePath> = (0..5)
        .map(|k| h.add("lz", "x", &format!("far{k}"), "siren"))
        .collect();
    let far: Vec<&NodePath> = far.iter().collect();
    for p in &nodes {
        h.will(p);
    }
    h.beat_until(&far, T0 + ms(60_000));
    assert_eq!(h.sent("site_outage"), vec![FIRED]);
    // Three come back; n3 stays down: the site alert resolves, and n3's alert is notified
    // after a fresh group wait (the others had that long to come back too).
    h.beat(&nodes[0]);
    h.beat(&nodes[1]);
    assert!(h.sent("node_offline").is_empty());
    h.beat(&nodes[2]);
    assert_eq!(h.sent("site_outage"), vec![FIRED, RESOLVED]);
    let back = h.now;
    let alive: Vec<&NodePath> = far.iter().copied().chain(&nodes[..3]).collect();
    h.beat_until(&alive, back + ms(14_000));
    assert!(h.sent("node_offline").is_empty());
    h.beat_until(&alive, back + ms(15_000));
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED]);
}

// ----- flapping -----

#[test]
fn flapping_replaces_a_stream_of_offline_notifications() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let q = h.add("lz", "cg", "s2", "siren");
    let r = h.add("lz", "cg", "s3", "siren");
    // Down 30 s, up 30 s, over and over; the neighbours are fine.
    for _ in 0..6 {
        h.will(&p);
        h.beat_until(&[&q, &r], h.now + ms(30_000));
        h.beat(&p);
        h.beat_until(&[&p, &q, &r], h.now + ms(30_000));
    }
    assert_eq!(h.sent("flapping"), vec![FIRED]);
    // Two full down/up cycles were notified before the pattern was clear; none after.
    assert_eq!(
        h.sent("node_offline"),
        vec![LATE_FIRED, RESOLVED, LATE_FIRED, RESOLVED]
    );
    // It ends down and stays down: flapping resolves after the quiet period and the
    // offline alert is notified then.
    h.will(&p);
    let quiet_end = h.now + ms(600_000);
    h.beat_until(&[&q, &r], quiet_end - ms(1_000));
    assert_eq!(h.firing("flapping"), 1);
    h.beat_until(&[&q, &r], quiet_end);
    assert_eq!(h.sent("flapping"), vec![FIRED, RESOLVED]);
    // ...after a fresh group wait, like any alert an inhibitor held back.
    h.beat_until(&[&q, &r], quiet_end + ms(15_000));
    assert_eq!(
        h.sent("node_offline"),
        vec![LATE_FIRED, RESOLVED, LATE_FIRED, RESOLVED, LATE_FIRED]
    );
}

// ----- faults -----

#[test]
fn fault_alerts_follow_fault_messages_with_the_agent_severity() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let out = h.m.on_fault(
        &p,
        &fault(1, h.now.as_millis(), "AMP", "minor", "raised", false),
        h.now,
    );
    assert_eq!(out.alerts.len(), 1);
    let a = &out.alerts[0];
    assert!(a.notify);
    assert_eq!(a.alert.severity, Severity::Minor);
    assert!(
        a.alert.summary.contains("amplifier/AMP"),
        "{}",
        a.alert.summary
    );
    let args = &a.alert.args;
    assert_eq!(
        [
            args.get("check"),
            args.get("code"),
            args.get("fault_severity")
        ],
        [Some("amplifier"), Some("AMP"), Some("minor")]
    );
    // Raising again is a no-op; a new severity is an update, not a new notification.
    let again = h.m.on_fault(
        &p,
        &fault(2, h.now.as_millis(), "AMP", "minor", "raised", false),
        h.now,
    );
    assert!(again.alerts.is_empty());
    let worse = h.m.on_fault(
        &p,
        &fault(3, h.now.as_millis(), "AMP", "critical", "raised", false),
        h.now,
    );
    assert_eq!(worse.alerts.len(), 1);
    assert_eq!(
        (worse.alerts[0].event, worse.alerts[0].notify),
        (AlertEvent::Updated, false)
    );
    // A second key is its own alert with its own id.
    let other = h.m.on_fault(
        &p,
        &fault(4, h.now.as_millis(), "PSU", "major", "raised", false),
        h.now,
    );
    assert_ne!(other.alerts[0].alert.id, a.alert.id);
    let clear = h.m.on_fault(
        &p,
        &fault(5, h.now.as_millis(), "AMP", "critical", "cleared", false),
        h.now,
    );
    assert_eq!(clear.alerts.len(), 1);
    assert_eq!(clear.alerts[0].alert.status, AlertStatus::Resolved);
    assert!(clear.alerts[0].notify);
    assert_eq!(h.firing("fault"), 1);
}

#[test]
fn heartbeat_fault_lists_reconcile_missed_fault_messages() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.m.on_fault(
        &p,
        &fault(1, h.now.as_millis(), "AMP", "critical", "raised", false),
        h.now,
    );
    // `faults` absent: no reconciliation.
    let out = h.m.on_heartbeat(&p, &hb(2, h.now.as_millis()), h.now);
    assert!(out.alerts.is_empty());
    // A list without AMP (its clear was missed) but with PSU (its raise was missed).
    let mut beat = hb(3, h.now.as_millis());
    beat.faults = Some(vec!["power/PSU".parse().expect("key")]);
    let out = h.m.on_heartbeat(&p, &beat, h.now);
    let events: Vec<(&str, AlertStatus, Severity)> = out
        .alerts
        .iter()
        .map(|c| (c.alert.summary.as_str(), c.alert.status, c.alert.severity))
        .collect();
    assert_eq!(out.alerts.len(), 2, "{events:?}");
    assert!(events.iter().any(|e| e.0.contains("power/PSU")
        && e.1 == AlertStatus::Firing
        && e.2 == Severity::Major));
    assert!(
        events
            .iter()
            .any(|e| e.0.contains("amplifier/AMP") && e.1 == AlertStatus::Resolved)
    );
    // An empty list clears everything.
    let mut beat = hb(4, h.now.as_millis());
    beat.faults = Some(Vec::new());
    let out = h.m.on_heartbeat(&p, &beat, h.now);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(h.firing("fault"), 0);
}

#[test]
fn a_node_over_its_fault_cap_gets_one_summary_alert_not_one_per_fault() {
    let mut cfg = MonitorConfig::default();
    cfg.alerts.fault.max_active_per_node = 3;
    let mut h = H::with(cfg);
    let p = h.add("lz", "cg", "s1", "siren");
    let other = h.add("lz", "cg", "s2", "siren");
    let mut notices = Vec::new();
    for i in 0..50u64 {
        let out = h.m.on_fault(
            &p,
            &fault(
                i + 1,
                h.now.as_millis(),
                &format!("F{i}"),
                "major",
                "raised",
                false,
            ),
            h.now,
        );
        notices.extend(out.alerts.into_iter().filter(|c| c.notify));
    }
    // Three faults, then one summary; the other 46 raises are counted.
    assert_eq!(notices.len(), 4, "{notices:#?}");
    let summary = &notices[3].alert;
    assert!(
        summary.summary.contains("more than 3 faults"),
        "{}",
        summary.summary
    );
    assert_eq!(summary.args.get("capped_at"), Some("3"));
    assert_eq!(h.m.engine().faults_capped(), 47);
    assert_eq!(h.firing("fault"), 4);
    // Another node is not affected.
    let out = h.m.on_fault(
        &other,
        &fault(1, h.now.as_millis(), "AMP", "major", "raised", false),
        h.now,
    );
    assert_eq!(out.alerts.len(), 1);
    // A heartbeat listing many faults fires none beyond the cap, and notifies nothing new.
    let mut beat = hb(51, h.now.as_millis());
    beat.faults = Some(
        (0..40)
            .map(|i| format!("amplifier/F{i}").parse().expect("key"))
            .collect(),
    );
    let out = h.m.on_heartbeat(&p, &beat, h.now);
    assert!(out.alerts.iter().all(|c| !c.notify), "{:#?}", out.alerts);
    assert_eq!(
        h.m.engine().faults_capped(),
        47,
        "a listing is not a new raise"
    );
    // Cleared below the cap: the summary resolves; the next heartbeat brings the faults
    // the node still has, up to the cap again.
    let out = h.m.on_fault(
        &p,
        &fault(52, h.now.as_millis(), "F0", "major", "cleared", false),
        h.now,
    );
    let resolved: Vec<_> = out
        .alerts
        .iter()
        .filter(|c| c.alert.status == AlertStatus::Resolved)
        .map(|c| c.alert.summary.clone())
        .collect();
    assert_eq!(resolved.len(), 2, "F0 and the summary: {resolved:?}");
    let mut beat = hb(53, h.now.as_millis());
    beat.faults = Some(
        (1..40)
            .map(|i| format!("amplifier/F{i}").parse().expect("key"))
            .collect(),
    );
    let out = h.m.on_heartbeat(&p, &beat, h.now);
    let fired = out
        .alerts
        .iter()
        .filter(|c| c.notify && c.alert.status == AlertStatus::Firing)
        .count();
    assert_eq!(
        fired, 2,
        "one listed fault fills the cap, then the summary again"
    );
}

#[test]
fn reconciling_a_long_fault_list_is_linear() {
    let mut cfg = MonitorConfig::default();
    cfg.alerts.fault.max_active_per_node = 5_000;
    let mut h = H::with(cfg);
    let p = h.add("lz", "cg", "s1", "siren");
    let keys: Vec<alarmnet_protocol::FaultKey> = (0..4_000)
        .map(|i| format!("amplifier/F{i}").parse().expect("key"))
        .collect();
    let mut beat = hb(1, h.now.as_millis());
    beat.faults = Some(keys.clone());
    let out = h.m.on_heartbeat(&p, &beat, h.now);
    assert_eq!(out.alerts.len(), 4_000);
    // The same list again, then half of it: with a quadratic scan this is 16 million and
    // 8 million comparisons; linear, it is a few milliseconds even unoptimized.
    let started = std::time::Instant::now();
    let mut beat = hb(2, h.now.as_millis());
    beat.faults = Some(keys.clone());
    assert!(h.m.on_heartbeat(&p, &beat, h.now).alerts.is_empty());
    let mut beat = hb(3, h.now.as_millis());
    beat.faults = Some(keys[..2_000].to_vec());
    let out = h.m.on_heartbeat(&p, &beat, h.now);
    assert_eq!(out.alerts.len(), 2_000);
    println!(
        "two reconciliations of 4 000 faults: {:?}",
        started.elapsed()
    );
    assert_eq!(h.firing("fault"), 2_000);
}

#[test]
fn replayed_faults_wait_for_a_live_confirmation() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let out = h.m.on_fault(
        &p,
        &fault(
            1,
            (h.now - ms(60_000)).as_millis(),
            "AMP",
            "major",
            "raised",
            true,
        ),
        h.now,
    );
    assert_eq!(out.alerts.len(), 1);
    assert!(!out.alerts[0].notify, "old news from the spool");
    let out = h.m.on_fault(
        &p,
        &fault(
            2,
            (h.now - ms(50_000)).as_millis(),
            "OLD",
            "major",
            "raised",
            true,
        ),
        h.now,
    );
    assert!(!out.alerts[0].notify);
    let out = h.m.on_fault(
        &p,
        &fault(
            3,
            (h.now - ms(40_000)).as_millis(),
            "OLD",
            "major",
            "cleared",
            true,
        ),
        h.now,
    );
    assert!(
        !out.alerts[0].notify,
        "a resolution is notified only if the firing was"
    );
    let mut beat = hb(4, h.now.as_millis());
    beat.faults = Some(vec!["amplifier/AMP".parse().expect("key")]);
    let out = h.m.on_heartbeat(&p, &beat, h.now);
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(
        (out.alerts[0].event, out.alerts[0].notify),
        (AlertEvent::Updated, true)
    );
}

// ----- clock skew, telemetry gaps, thresholds, blind -----

#[test]
fn clock_skew_fires_beyond_a_minute() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    // During the start grace a late-delivered backlog is not skew.
    h.seq += 1;
    let out =
        h.m.on_heartbeat(&p, &hb(h.seq, (h.now - ms(3_600_000)).as_millis()), h.now);
    assert!(out.alerts.is_empty());
    h.beat_until(&[&p], T0 + ms(3 * I));
    h.seq += 1;
    let out =
        h.m.on_heartbeat(&p, &hb(h.seq, (h.now + ms(60_000)).as_millis()), h.now);
    assert!(out.alerts.is_empty(), "exactly a minute is tolerated");
    h.seq += 1;
    let out =
        h.m.on_heartbeat(&p, &hb(h.seq, (h.now + ms(61_000)).as_millis()), h.now);
    assert_eq!(out.alerts.len(), 1);
    assert!(out.alerts[0].notify);
    let summary = &out.alerts[0].alert.summary;
    assert!(summary.contains("+61 s"), "{summary}");
    // A replayed message says nothing about the clock.
    let mut old = hb(1, (h.now - ms(3_600_000)).as_millis());
    old.replay = true;
    assert!(h.m.on_heartbeat(&p, &old, h.now).alerts.is_empty());
    assert_eq!(h.firing("clock_skew"), 1);
}

#[test]
fn clock_skew_resolves_on_a_good_message() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.beat_until(&[&p], T0 + ms(3 * I));
    h.m.on_heartbeat(&p, &hb(100, (h.now - ms(120_000)).as_millis()), h.now);
    assert_eq!(h.firing("clock_skew"), 1);
    let out =
        h.m.on_heartbeat(&p, &hb(101, (h.now + ms(1_000)).as_millis()), h.now);
    assert_eq!(out.alerts[0].alert.status, AlertStatus::Resolved);
    assert!(out.alerts[0].notify);
}

#[test]
fn telemetry_gap_fires_on_enough_missing_messages_and_resolves_after_a_clean_window() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.m.on_heartbeat(&p, &hb(10, h.now.as_millis()), h.now);
    // 2 + 2 missing: below 5.
    h.m.on_heartbeat(&p, &hb(13, h.now.as_millis()), h.now);
    h.m.on_heartbeat(&p, &hb(16, h.now.as_millis()), h.now);
    assert_eq!(h.firing("telemetry_gap"), 0);
    h.run_to(T0 + ms(60_000));
    let out = h.m.on_heartbeat(&p, &hb(18, h.now.as_millis()), h.now);
    let out = h.take(out);
    let gap = of(&out, "telemetry_gap");
    assert_eq!(gap.len(), 1, "5 missing within the window");
    assert!(gap[0].alert.summary.contains("5 telemetry messages"));
    let gap_at = h.now;
    h.seq = 18;
    h.beat_until(&[&p], gap_at + ms(600_000) - ms(1_000));
    assert_eq!(h.firing("telemetry_gap"), 1);
    h.beat_until(&[&p], gap_at + ms(600_000));
    assert_eq!(h.firing("telemetry_gap"), 0);
    assert_eq!(h.sent("telemetry_gap"), vec![FIRED, RESOLVED]);
}

#[test]
fn a_gap_across_a_broker_outage_is_recorded_not_alerted() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.beat_until(&[&p], T0 + ms(30_000));
    let out = h.m.broker_lost(h.now);
    h.take(out);
    h.now += ms(20_000);
    let out = h.m.broker_connected(h.now);
    h.take(out);
    // 20 heartbeats were lost with the broker's queue for the collector.
    h.seq += 20;
    h.beat(&p);
    let gap: Vec<_> = h
        .log
        .iter()
        .filter(|c| c.alert.rule.as_str() == "telemetry_gap")
        .collect();
    assert_eq!(gap.len(), 2, "fired and resolved at once: {gap:?}");
    assert!(gap.iter().all(|c| !c.notify));
    assert!(
        gap[0]
            .alert
            .summary
            .contains("20 telemetry messages missing while")
    );
    assert_eq!(h.firing("telemetry_gap"), 0);
    // A gap on a watched link afterwards still counts in full.
    h.seq += 6;
    h.beat(&p);
    assert_eq!(h.sent("telemetry_gap"), vec![FIRED]);
}

#[test]
fn gaps_in_separate_windows_do_not_add_up() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.m.on_heartbeat(&p, &hb(0, h.now.as_millis()), h.now);
    h.m.on_heartbeat(&p, &hb(4, h.now.as_millis()), h.now); // 3 missing
    h.run_to(T0 + ms(700_000));
    h.m.on_heartbeat(&p, &hb(8, h.now.as_millis()), h.now); // 3 more, but a new window
    assert_eq!(h.firing("telemetry_gap"), 0);
}

#[test]
fn replayed_spool_fills_the_sequence_so_a_reconnect_is_no_gap() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.m.on_heartbeat(&p, &hb(0, h.now.as_millis()), h.now);
    for seq in 1..20 {
        let mut r = hb(seq, h.now.as_millis());
        r.replay = true;
        h.m.on_heartbeat(&p, &r, h.now);
    }
    h.m.on_heartbeat(&p, &hb(20, h.now.as_millis()), h.now);
    assert_eq!(h.firing("telemetry_gap"), 0);
}

#[test]
fn threshold_fires_after_its_for_duration_and_resolves_when_false() {
    let cfg: MonitorConfig = serde_json::from_value(json!({
        "alerts": {"thresholds": [{
            "name": "battery_low", "metric": "battery_v", "op": "<", "value": 11.8,
            "for": "5m", "severity": "major", "kind": "siren"
        }]}
    }))
    .expect("config");
    let mut h = H::with(cfg);
    let p = h.add("lz", "cg", "s1", "siren");
    let d = h.add("lz", "cg", "d1", "display");
    let low = |h: &mut H, node: &NodePath, v: f64| {
        h.seq += 1;
        let mut beat = hb(h.seq, h.now.as_millis());
        beat.metrics
            .insert("battery_v".parse().expect("metric"), v)
            .expect("metric fits");
        let out = h.m.on_heartbeat(node, &beat, h.now);
        h.take(out)
    };
    low(&mut h, &p, 11.5);
    low(&mut h, &d, 11.0);
    h.run_to(T0 + ms(299_000));
    assert!(of(&low(&mut h, &p, 11.6), "battery_low").is_empty());
    // A heartbeat without the metric changes nothing.
    h.run_to(T0 + ms(300_000));
    assert!(of(&h.beat(&p), "battery_low").is_empty());
    let out = low(&mut h, &p, 11.7);
    let fired = of(&out, "battery_low");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].alert.severity, Severity::Major);
    assert!(fired[0].notify);
    assert!(
        of(&low(&mut h, &d, 11.0), "battery_low").is_empty(),
        "kind filter: displays are exempt"
    );
    let out = low(&mut h, &p, 12.4);
    assert_eq!(
        of(&out, "battery_low")[0].alert.status,
        AlertStatus::Resolved
    );
    // A dip that recovers before `for` never fires.
    low(&mut h, &p, 11.0);
    h.run_to(h.now + ms(200_000));
    low(&mut h, &p, 12.0);
    h.run_to(h.now + ms(200_000));
    low(&mut h, &p, 11.0);
    assert_eq!(h.sent("battery_low"), vec![FIRED, RESOLVED]);
}

#[test]
fn collector_blind_fires_once_and_nobody_goes_offline_while_blind() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let out = h.m.broker_lost(h.now + ms(1_000));
    assert_eq!(out.alerts.len(), 1);
    assert!(out.alerts[0].notify);
    assert_eq!(out.alerts[0].alert.subject, crate::model::Subject::Network);
    h.now += ms(1_000);
    assert!(h.run_to(T0 + ms(3_600_000)).is_empty());
    assert_eq!(
        h.m.tracker().node(&p.node).map(|v| v.state()),
        Some(Liveness::Online)
    );
    let back = h.now;
    let out = h.m.broker_connected(back);
    assert_eq!(out.alerts[0].alert.status, AlertStatus::Resolved);
    assert!(out.alerts[0].notify);
    h.run_to(back + ms(3 * I) - ms(1_000));
    assert_eq!(h.firing("node_offline"), 0);
    h.run_to(back + ms(3 * I));
    assert_eq!(h.firing("node_offline"), 1);
}

// ----- silences and maintenance -----

#[test]
fn silence_moves_nodes_to_maintenance_and_records_without_notifying() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let q = h.add("lz", "cg", "s2", "siren");
    let out = h.m.add_silence(
        silence("m1", Some("s1"), None, T0 + ms(10_000), T0 + ms(600_000)),
        h.now,
    );
    assert!(out.is_empty(), "the window has not opened yet");
    let changes = h.run_to(T0 + ms(10_000));
    assert!(changes.is_empty());
    assert_eq!(
        h.m.tracker().node(&p.node).map(|v| v.state()),
        Some(Liveness::Maintenance)
    );
    assert_eq!(
        h.m.tracker().node(&q.node).map(|v| v.state()),
        Some(Liveness::Online)
    );
    // The silenced node dies: the alert is recorded, not notified; the stored state stays
    // maintenance.
    let out = h.will(&p);
    assert!(out.transitions.is_empty());
    assert_eq!(out.alerts.len(), 1);
    h.beat_until(&[&q], T0 + ms(300_000));
    assert!(h.sent("node_offline").is_empty());
    // The window ends while the alert still fires: the node shows offline and the alert is
    // notified now.
    let before = h.log.len();
    h.beat_until(&[&q], T0 + ms(600_000));
    let after: Vec<&AlertChange> = h.log[before..].iter().collect();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(
        (after[0].event, after[0].notify),
        (AlertEvent::Updated, true)
    );
    assert_eq!(
        h.m.tracker().node(&p.node).map(|v| v.state()),
        Some(Liveness::Offline)
    );
    assert!(
        h.m.engine().silences().next().is_none(),
        "ended silences are dropped"
    );
}

#[test]
fn resolution_inside_a_silence_of_an_alert_notified_before_it_is_notified() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let _q = h.add("lz", "cg", "s2", "siren");
    let _r = h.add("lz", "cg", "s3", "siren");
    h.will(&p);
    h.run_to(T0 + ms(20_000));
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED]);
    let out = h.m.add_silence(
        silence("m1", None, Some("cg"), h.now, h.now + ms(600_000)),
        h.now,
    );
    assert_eq!(
        out.transitions.len(),
        3,
        "all three nodes enter maintenance"
    );
    assert!(out.alerts.is_empty());
    h.run_to(h.now + ms(60_000));
    let out = h.beat(&p);
    assert!(
        out.transitions.is_empty(),
        "effective state stays maintenance"
    );
    assert_eq!(out.alerts.len(), 1);
    assert!(
        out.alerts[0].notify,
        "a silence never swallows the resolution"
    );
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED, RESOLVED]);
}

#[test]
fn alert_firing_across_a_whole_window_is_not_notified_again() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.will(&p);
    h.run_to(T0 + ms(20_000));
    h.m.add_silence(
        silence("m1", Some("s1"), None, h.now, h.now + ms(100_000)),
        h.now,
    );
    let changes = h.run_to(T0 + ms(500_000));
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED]);
    assert_eq!(
        h.m.tracker().node(&p.node).map(|v| v.state()),
        Some(Liveness::Offline)
    );
}

#[test]
fn expiring_a_silence_early_ends_maintenance_now() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.m.add_silence(
        silence("m1", Some("s1"), None, h.now, h.now + ms(3_600_000)),
        h.now,
    );
    h.run_to(T0 + ms(5_000));
    let out = h.m.expire_silence(sid("m1"), h.now).expect("known silence");
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.transitions[0].to, Liveness::Online);
    assert!(h.m.expire_silence(sid("m1"), h.now).is_none());
    let _ = p;
}

#[test]
fn overlapping_silences_keep_maintenance_until_the_last_ends() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    h.m.add_silence(
        silence("a", Some("s1"), None, h.now, h.now + ms(10_000)),
        h.now,
    );
    h.m.add_silence(
        silence("b", None, Some("cg"), h.now, h.now + ms(20_000)),
        h.now,
    );
    h.beat_until(&[&p], T0 + ms(15_000));
    assert_eq!(
        h.m.tracker().node(&p.node).map(|v| v.state()),
        Some(Liveness::Maintenance)
    );
    h.beat_until(&[&p], T0 + ms(20_000));
    assert_eq!(
        h.m.tracker().node(&p.node).map(|v| v.state()),
        Some(Liveness::Online)
    );
}

#[test]
fn a_node_born_inside_an_open_silence_enters_maintenance() {
    let mut h = H::new();
    h.m.add_silence(
        silence("a", None, Some("cg"), h.now, h.now + ms(10_000)),
        h.now,
    );
    let p = path("lz", "cg", "late-comer");
    let out = h.m.on_birth(
        &p,
        &birth(&p, BOOT, "siren", h.now.as_millis()),
        false,
        h.now,
    );
    let to: Vec<Liveness> = out.transitions.iter().map(|t| t.to).collect();
    assert_eq!(to, vec![Liveness::Online, Liveness::Maintenance]);
}

// ----- ack, ids, notifications -----

#[test]
fn ack_records_who_when_and_why() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let out = h.will(&p);
    let id = out.alerts[0].alert.id;
    let change =
        h.m.ack(id, "王工", Some("crew dispatched"), h.now + ms(5))
            .expect("firing");
    assert_eq!(change.event, AlertEvent::Acked);
    assert!(!change.notify);
    let ack = change.alert.ack.expect("ack");
    assert_eq!(
        (ack.by.as_str(), ack.at, ack.comment.as_deref()),
        ("王工", h.now + ms(5), Some("crew dispatched"))
    );
    assert_eq!(
        h.m.engine()
            .alert(id)
            .and_then(|a| a.ack.clone())
            .map(|a| a.by),
        Some("王工".to_owned())
    );
    assert!(matches!(
        h.m.ack(AlertId::new(0), "x", None, h.now),
        Err(AckError::NotFound(_))
    ));
    assert!("nonsense".parse::<AlertId>().is_err());
}

#[test]
fn ids_are_stable_fnv1a_fingerprints() {
    // Independent FNV-1a 64 over the documented canonical string.
    let canonical = "node_offline\u{1f}lz\u{1f}cg\u{1f}s1\u{1f}";
    let mut expect: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        expect ^= u64::from(b);
        expect = expect.wrapping_mul(0x100_0000_01b3);
    }
    assert_eq!(
        fingerprint("node_offline", Some("lz"), Some("cg"), Some("s1"), None),
        expect
    );
    // Golden value: must never change between versions.
    assert_eq!(
        AlertId::new(fingerprint(
            "node_offline",
            Some("lz"),
            Some("cg"),
            Some("s1"),
            None
        ))
        .to_string(),
        format!("{expect:016x}")
    );
    assert_eq!(
        fingerprint("", None, None, None, None),
        fingerprint("", None, None, None, None)
    );
    assert_ne!(
        fingerprint("fault", Some("lz"), Some("cg"), Some("s1"), Some("a/b")),
        fingerprint("fault", Some("lz"), Some("cg"), Some("s1a"), Some("/b"))
    );
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let first = h.will(&p).alerts[0].alert.id;
    h.beat(&p);
    let again = h.will(&p).alerts[0].alert.id;
    assert_eq!(first, again);
    assert_eq!(first, AlertId::new(expect));
}

#[test]
fn notifications_carry_the_documented_fields() {
    let mut h = H::new();
    let p = h.add("lz", "cg", "s1", "siren");
    let fired = h.will(&p).alerts[0].alert.clone();
    let n = serde_json::to_value(fired.to_notification()).expect("json");
    for key in [
        "id",
        "rule",
        "severity",
        "status",
        "region",
        "site",
        "node",
        "started_at",
        "summary",
    ] {
        assert!(n.get(key).is_some(), "{key} missing in {n}");
    }
    assert_eq!(n["status"], "firing");
    assert!(n.get("ended_at").is_none());
    h.run_to(T0 + ms(1_000));
    let resolved = h.beat(&p).alerts[0].alert.clone();
    let n = serde_json::to_value(resolved.to_notification()).expect("json");
    assert_eq!(n["status"], "resolved");
    assert_eq!(n["ended_at"], json!(T0 + ms(1_000)));
    let topic = resolved.topic();
    assert_eq!(topic.rule.as_str(), "node_offline");
    assert_eq!(topic.node.as_ref(), Some(&p.node));
}

#[test]
fn config_parses_humantime_and_rejects_unknown_fields_and_bad_values() {
    let cfg: MonitorConfig = serde_json::from_value(json!({
        "liveness": {"offline_factor": 4.0},
        "alerts": {"node_offline": {"group_wait": "30s", "severity": {"gateway": "minor"}},
                   "flapping": {"window": "15m"}}
    }))
    .expect("config");
    assert_eq!(cfg.alerts.node_offline.group_wait, Duration::from_secs(30));
    assert_eq!(cfg.alerts.flapping.window, Duration::from_secs(900));
    assert_eq!(cfg.alerts.offline_severity("gateway"), Severity::Minor);
    assert_eq!(cfg.alerts.offline_severity("unknown-kind"), Severity::Major);
    assert!(
        serde_json::from_value::<MonitorConfig>(json!({"alerts": {"nodeoffline": {}}})).is_err()
    );
    let mut bad = MonitorConfig::default();
    bad.alerts.site_outage.min_fraction = 0.0;
    bad.alerts.thresholds.push(
        serde_json::from_value(
            json!({"name": "fault", "metric": "x", "op": ">", "value": 1.0, "severity": "info"}),
        )
        .expect("threshold"),
    );
    assert_eq!(bad.problems().len(), 2, "{:?}", bad.problems());
}

// ----- restart of the collector -----

/// Everything the store would hold about nodes and firing alerts.
fn snapshot(m: &Monitor) -> (Vec<RestoredNode>, Vec<crate::model::Alert>) {
    let nodes = m
        .tracker()
        .nodes()
        .map(|v| RestoredNode {
            info: NodeInfo { ..v.info() },
            state: v.state(),
            since: v.since(),
            last_heartbeat: v.last_heartbeat(),
            last_seq: v.last_seq(),
        })
        .collect();
    (nodes, m.engine().alerts().cloned().collect())
}

#[test]
fn restart_restores_without_duplicate_notifications_or_false_offline() {
    let mut h = H::new();
    let nodes: Vec<NodePath> = (0..5)
        .map(|k| h.add("lz", "cg", &format!("s{k}"), "siren"))
        .collect();
    let live: Vec<&NodePath> = nodes[1..].iter().collect();
    h.beat_until(&live, T0 + ms(60_000));
    h.will(&nodes[0]);
    h.beat_until(&live, T0 + ms(120_000));
    assert_eq!(h.sent("node_offline"), vec![LATE_FIRED]);
    let (stored_nodes, stored_alerts) = snapshot(&h.m);
    // kill -9, restart 5 minutes later. Heartbeats were queued by the broker meanwhile.
    let start = h.now + ms(300_000);
    let mut m = Monitor::new(MonitorConfig::default(), start);
    for n in stored_nodes {
        m.restore_node(n);
    }
    for a in stored_alerts {
        m.restore_alert(a);
    }
    let out = m.finish_restore(start);
    assert!(out.is_empty(), "{out:?}");
    let out = m.broker_connected(start + ms(100));
    assert!(out.is_empty());
    // Retained births and states arrive, then the queued and live heartbeats.
    let mut notes = Vec::new();
    for p in &nodes {
        let b = birth(p, BOOT, "siren", T0.as_millis());
        notes.extend(m.on_birth(p, &b, true, start + ms(200)).alerts);
    }
    notes.extend(m.on_state(&nodes[0], &will(), true, start + ms(300)).alerts);
    let mut now = start + ms(1_000);
    let mut seq = h.seq;
    while now < start + ms(600_000) {
        seq += 1;
        for p in &live {
            let out = m.on_heartbeat(p, &hb(seq, now.as_millis()), now);
            assert!(out.transitions.is_empty(), "{out:?}");
            notes.extend(out.alerts);
        }
        now += ms(I);
        let out = m.tick(now);
        assert!(out.transitions.is_empty(), "{out:?}");
        notes.extend(out.alerts);
    }
    assert!(notes.iter().all(|c| !c.notify), "{notes:?}");
    assert_eq!(
        m.engine().alerts().count(),
        1,
        "the restored offline alert stays firing"
    );
    // The dead node comes back: its resolution is notified once.
    let out = m.on_heartbeat(&nodes[0], &hb(seq + 1, now.as_millis()), now);
    assert_eq!(out.alerts.len(), 1);
    assert!(out.alerts[0].notify);
}

#[test]
fn restart_repairs_a_crash_between_transition_and_alert() {
    let start = T0 + ms(1_000_000);
    let mut m = Monitor::new(MonitorConfig::default(), start);
    let p = path("lz", "cg", "s1");
    let restored = |state| RestoredNode {
        info: NodeInfo {
            path: p.clone(),
            kind: "siren".parse().expect("kind"),
            name: None,
            boot: Some(BOOT.parse().expect("boot")),
            hb_interval_ms: I,
        },
        state,
        since: T0,
        last_heartbeat: Some(T0),
        last_seq: None,
    };
    m.restore_node(restored(Liveness::Offline));
    // A stale node_offline alert of a node that the store says is online.
    let q = path("lz", "cg", "s2");
    m.restore_node(RestoredNode {
        info: NodeInfo {
            path: q.clone(),
            ..restored(Liveness::Online).info
        },
        ..restored(Liveness::Online)
    });
    let stale = crate::model::Alert {
        id: AlertId::new(fingerprint(
            "node_offline",
            Some("lz"),
            Some("cg"),
            Some("s2"),
            None,
        )),
        rule: "node_offline".parse().expect("rule"),
        severity: Severity::Critical,
        status: AlertStatus::Firing,
        subject: crate::model::Subject::Node {
            region: q.region.clone(),
            site: q.site.clone(),
            node: q.node.clone(),
        },
        kind: Some("siren".parse().expect("kind")),
        started_at: T0,
        ended_at: None,
        summary: "s2 offline".to_owned(),
        args: Default::default(),
        ack: None,
        notified: true,
    };
    m.restore_alert(stale);
    let out = m.finish_restore(start);
    let events: Vec<(AlertEvent, bool, &str)> = out
        .alerts
        .iter()
        .map(|c| {
            (
                c.event,
                c.notify,
                c.alert.subject.node().map_or("", |n| n.as_str()),
            )
        })
        .collect();
    assert!(
        events.contains(&(AlertEvent::Resolved, true, "s2")),
        "{events:?}"
    );
    assert!(
        events.contains(&(AlertEvent::Fired, false, "s1")),
        "{events:?}"
    );
}

#[test]
fn restored_maintenance_ends_unless_a_restored_silence_still_covers_it() {
    let start = T0 + ms(1_000_000);
    let mut m = Monitor::new(MonitorConfig::default(), start);
    for node in ["covered", "orphan"] {
        m.restore_node(RestoredNode {
            info: NodeInfo {
                path: path("lz", node, node),
                kind: "siren".parse().expect("kind"),
                name: None,
                boot: Some(BOOT.parse().expect("boot")),
                hb_interval_ms: I,
            },
            state: Liveness::Maintenance,
            since: T0,
            last_heartbeat: Some(T0),
            last_seq: None,
        });
    }
    let out = m.restore_silence(
        silence("w", None, Some("covered"), T0, start + ms(60_000)),
        start,
    );
    assert!(out.is_empty(), "{out:?}");
    let out = m.finish_restore(start);
    assert_eq!(out.transitions.len(), 1, "{out:?}");
    assert_eq!(out.transitions[0].node.as_str(), "orphan");
    assert_eq!(
        (out.transitions[0].from, out.transitions[0].to),
        (Liveness::Maintenance, Liveness::Unknown)
    );
    // The covered node leaves maintenance when its window ends.
    let out = m.tick(start + ms(60_000));
    assert!(
        out.transitions
            .iter()
            .any(|t| t.node.as_str() == "covered" && t.from == Liveness::Maintenance)
    );
}

// ----- randomized model check -----

/// xorshift64*: deterministic and dependency free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_histories_keep_the_invariants() {
    for seed in 1..=150u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut cfg = MonitorConfig::default();
        if seed % 2 == 0 {
            cfg.alerts.node_offline.group_wait = Duration::ZERO;
        }
        let mut m = Monitor::new(cfg, T0);
        let nodes: Vec<NodePath> = (0..6)
            .map(|k| path("lz", if k < 3 { "a" } else { "b" }, &format!("n{k}")))
            .collect();
        let boots = ["boot-aaaaaaaa", "boot-bbbbbbbb", "boot-cccccccc"];
        let mut current = vec![0usize; nodes.len()];
        let mut seqs = vec![0u64; nodes.len()];
        let mut now = T0;
        let mut blind = false;
        // id → whether a firing notification is outstanding
        let mut outstanding: std::collections::HashMap<AlertId, bool> = Default::default();
        let mut last_state: std::collections::HashMap<String, Liveness> = Default::default();
        for step in 0..400 {
            now += ms(rng.below(8_000));
            let k = rng.below(nodes.len() as u64) as usize;
            let p = &nodes[k];
            let was_blind = blind;
            let out = match rng.below(12) {
                0 => {
                    if rng.below(3) == 0 {
                        current[k] = (current[k] + 1) % boots.len();
                        seqs[k] = 0;
                    }
                    let b = birth(p, boots[current[k]], "siren", now.as_millis());
                    m.on_birth(p, &b, rng.below(4) == 0, now)
                }
                1 => {
                    // A Will, sometimes of a stale boot.
                    let boot = boots[(current[k] + rng.below(2) as usize) % boots.len()];
                    let s: State = serde_json::from_value(
                        json!({"v": 1, "state": "offline", "boot": boot, "reason": "lost"}),
                    )
                    .expect("state");
                    m.on_state(p, &s, false, now)
                }
                2 => {
                    let s: State = serde_json::from_value(json!({
                        "v": 1, "state": "offline", "boot": boots[current[k]], "reason": "shutdown"
                    }))
                    .expect("state");
                    m.on_state(p, &s, false, now)
                }
                3..=5 if !blind => {
                    seqs[k] += 1 + rng.below(2);
                    let mut beat: Heartbeat = serde_json::from_value(json!({
                        "v": 1, "boot": boots[current[k]], "seq": seqs[k], "ts": now
                    }))
                    .expect("hb");
                    beat.replay = rng.below(4) == 0;
                    m.on_heartbeat(p, &beat, now)
                }
                6 => {
                    let out = if blind {
                        m.broker_connected(now)
                    } else {
                        m.broker_lost(now)
                    };
                    blind = !blind;
                    out
                }
                7 => {
                    let s = silence(
                        &format!("s{}", rng.below(3)),
                        None,
                        Some(if rng.below(2) == 0 { "a" } else { "b" }),
                        now + ms(rng.below(20_000)),
                        now + ms(rng.below(200_000)),
                    );
                    m.add_silence(s, now)
                }
                8 => m
                    .expire_silence(sid(&format!("s{}", rng.below(3))), now)
                    .unwrap_or_default(),
                _ => m.tick(now),
            };
            for t in &out.transitions {
                if was_blind {
                    assert_ne!(
                        t.cause,
                        crate::model::Cause::Timeout,
                        "seed {seed} step {step}: judged while blind"
                    );
                }
                let prev = last_state
                    .insert(t.node.to_string(), t.to)
                    .unwrap_or(Liveness::Unknown);
                assert_eq!(prev, t.from, "seed {seed} step {step}: transitions chain");
                assert_ne!(t.from, t.to);
            }
            for c in &out.alerts {
                let id = c.alert.id;
                match (c.alert.status, c.notify) {
                    (AlertStatus::Firing, true) => {
                        let was = outstanding.insert(id, true).unwrap_or(false);
                        // Only an outage whose members changed is notified again.
                        let regroup = c.event == AlertEvent::Updated
                            && matches!(c.alert.rule.as_str(), "site_outage" | "region_outage");
                        assert!(
                            !was || regroup,
                            "seed {seed} step {step}: notified twice: {c:?}"
                        );
                    }
                    (AlertStatus::Resolved, true) => {
                        let was = outstanding.remove(&id).unwrap_or(false);
                        assert!(
                            was,
                            "seed {seed} step {step}: resolution without firing: {c:?}"
                        );
                    }
                    (AlertStatus::Resolved, false) => {
                        assert!(
                            !outstanding.get(&id).copied().unwrap_or(false),
                            "seed {seed} step {step}: resolution swallowed: {c:?}"
                        );
                    }
                    (AlertStatus::Firing, false) => {}
                }
                match c.alert.status {
                    AlertStatus::Firing => assert_eq!(
                        c.alert.notified,
                        outstanding.get(&c.alert.id).copied().unwrap_or(false),
                        "seed {seed} step {step}: notified flag: {c:?}"
                    ),
                    AlertStatus::Resolved => assert_eq!(c.notify, c.alert.notified),
                }
            }
            // node_offline fires exactly while the node's own state is offline.
            for v in m.tracker().nodes() {
                let fp = fingerprint(
                    "node_offline",
                    Some(v.region().as_str()),
                    Some(v.site().as_str()),
                    Some(v.id().as_str()),
                    None,
                );
                let firing = m.engine().alert(AlertId::new(fp)).is_some();
                assert_eq!(
                    firing,
                    v.own_state() == Liveness::Offline,
                    "seed {seed} step {step}: {}",
                    v.id()
                );
            }
            // Site counts match a recount.
            for site in ["a", "b"] {
                let (offline, total) = m
                    .tracker()
                    .site_counts(&"lz".parse().expect("region"), &site.parse().expect("site"))
                    .unwrap_or((0, 0));
                let members: Vec<_> = m
                    .tracker()
                    .nodes()
                    .filter(|v| v.site().as_str() == site)
                    .collect();
                assert_eq!(total as usize, members.len());
                assert_eq!(
                    offline as usize,
                    members
                        .iter()
                        .filter(|v| v.own_state() == Liveness::Offline)
                        .count()
                );
            }
            if blind {
                assert_eq!(m.tracker().next_deadline(), None);
            }
        }
    }
}
