//! The `readiness_low` rule: a region's ready share of sirens below a floor, with
//! hysteresis. Fed by the core with the region's rollup whenever it changes.

use super::Engine;
use crate::alerts::{AlertChange, fingerprint};
use crate::liveness::Tracker;
use crate::model::{RuleKind, UnixMillis};
use crate::readiness::tracker::Counts;

impl Engine {
    /// Re-evaluates `readiness_low` for `region` (a tracker index) whose counted kinds'
    /// rollup is now `sirens`.
    pub(crate) fn readiness_region(
        &mut self,
        t: &Tracker,
        region: u32,
        sirens: &Counts,
        at: UnixMillis,
        out: &mut Vec<AlertChange>,
    ) {
        let rule = &self.cfg.readiness_low;
        let r = t.region_entry(region);
        let fp = fingerprint(
            RuleKind::ReadinessLow.as_str(),
            Some(r.id.as_str()),
            None,
            None,
            None,
        );
        let judged = sirens.judged();
        let pct = sirens.ready_pct().unwrap_or(100.0);
        let watched = rule.enabled && judged >= rule.min_nodes;
        let cond = if self.is_active(fp) {
            watched && pct < rule.floor_pct + rule.hysteresis_pct
        } else {
            watched && pct < rule.floor_pct
        };
        let (severity, floor) = (rule.severity, rule.floor_pct);
        self.toggle(t, fp, cond, at, out, || {
            super::region_alert(
                fp,
                RuleKind::ReadinessLow,
                severity,
                (region, &r.id),
                format!(
                    "readiness low in {}: {} of {judged} sirens ready ({pct:.1} %, floor {floor} %)",
                    r.id, sirens.ready
                ),
                super::args([
                    ("ready", sirens.ready.to_string()),
                    ("judged", judged.to_string()),
                    ("ready_pct", format!("{pct:.1}")),
                    ("floor_pct", floor.to_string()),
                ]),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::model::ms;
    use alarmnet_protocol::{AlertStatus, Birth, NodePath};
    use serde_json::json;

    use crate::alerts::{AlertEvent, Monitor, MonitorConfig, Output};
    use crate::model::UnixMillis;
    use crate::readiness::tracker::Counts;

    const T0: UnixMillis = UnixMillis::from_millis(1_764_330_000_000);

    /// A monitor knowing region `lanzhou` (index 0) through one node's birth.
    fn monitor(config: MonitorConfig) -> Monitor {
        let mut m = Monitor::new(config, T0);
        let p = NodePath::new(
            "lanzhou".parse().expect("region"),
            "cg".parse().expect("site"),
            "s1".parse().expect("node"),
        );
        let b: Birth = serde_json::from_value(json!({
            "v": 1, "boot": "boot-aaaaaaaa", "ts": T0, "node": "s1", "site": "cg",
            "region": "lanzhou", "kind": "siren", "hb_interval_s": 10
        }))
        .expect("birth");
        m.on_birth(&p, &b, false, T0);
        m
    }

    fn sirens(ready: u32, not_ready: u32, maintenance: u32) -> Counts {
        Counts {
            ready,
            degraded: 0,
            not_ready,
            maintenance,
        }
    }

    fn events(out: &Output) -> Vec<(AlertEvent, AlertStatus, bool)> {
        out.alerts
            .iter()
            .map(|c| (c.event, c.alert.status, c.notify))
            .collect()
    }

    #[test]
    fn fires_below_the_floor_and_resolves_above_it_plus_the_hysteresis() {
        let mut m = monitor(MonitorConfig::default());
        // Floor 90 %, hysteresis 2: 9 of 10 is at the floor, not below.
        assert!(
            m.readiness_region(0, &sirens(9, 1, 0), T0 + ms(1))
                .is_empty()
        );
        let out = m.readiness_region(0, &sirens(17, 3, 0), T0 + ms(2));
        assert_eq!(
            events(&out),
            [(AlertEvent::Fired, AlertStatus::Firing, true)]
        );
        let a = &out.alerts[0].alert;
        assert_eq!(a.rule.as_str(), "readiness_low");
        assert_eq!(a.subject.region().map(|r| r.as_str()), Some("lanzhou"));
        assert_eq!((a.subject.site(), a.subject.node()), (None, None));
        assert_eq!(
            a.summary,
            "readiness low in lanzhou: 17 of 20 sirens ready (85.0 %, floor 90 %)"
        );
        // Back at 90 % and 91 %: inside the hysteresis band, still firing.
        assert!(
            m.readiness_region(0, &sirens(18, 2, 0), T0 + ms(3))
                .is_empty()
        );
        assert!(
            m.readiness_region(0, &sirens(91, 9, 0), T0 + ms(4))
                .is_empty()
        );
        // 92 %: resolved, and notified since the firing was.
        let out = m.readiness_region(0, &sirens(23, 2, 0), T0 + ms(5));
        assert_eq!(
            events(&out),
            [(AlertEvent::Resolved, AlertStatus::Resolved, true)]
        );
        assert_eq!(out.alerts[0].alert.ended_at, Some(T0 + ms(5)));
    }

    #[test]
    fn too_few_judged_sirens_raise_nothing_and_maintenance_is_not_judged() {
        let mut m = monitor(MonitorConfig::default());
        // 4 judged (min_nodes 5), all not ready: nothing.
        assert!(
            m.readiness_region(0, &sirens(0, 4, 0), T0 + ms(1))
                .is_empty()
        );
        // 2 of 5 judged ready; the 10 under maintenance do not dilute the share.
        let out = m.readiness_region(0, &sirens(2, 3, 10), T0 + ms(2));
        assert_eq!(out.alerts.len(), 1);
        assert!(out.alerts[0].alert.summary.contains("2 of 5 sirens"));
        // Most go into maintenance: too few judged, the alert resolves.
        let out = m.readiness_region(0, &sirens(1, 1, 13), T0 + ms(3));
        assert_eq!(
            events(&out),
            [(AlertEvent::Resolved, AlertStatus::Resolved, true)]
        );
    }

    #[test]
    fn a_disabled_rule_raises_nothing() {
        let mut config = MonitorConfig::default();
        config.alerts.readiness_low.enabled = false;
        let mut m = monitor(config);
        assert!(
            m.readiness_region(0, &sirens(0, 50, 0), T0 + ms(1))
                .is_empty()
        );
    }

    #[test]
    fn bad_settings_are_reported_together() {
        let mut config = MonitorConfig::default();
        config.alerts.readiness_low.floor_pct = 0.0;
        config.alerts.readiness_low.hysteresis_pct = -1.0;
        config.alerts.readiness_low.min_nodes = 0;
        let p = config.problems();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p.iter().all(|x| x.contains("alerts.readiness_low.")));
    }
}
