//! The demo's scripted failures: a 12-minute cycle of incidents, each on nodes picked at
//! random from the layout, repeated for a day, so that a newcomer watching the console sees
//! alerts appear and resolve. Pure: the layout and a seed in, the simulator's script out.
//!
//! One cycle, in minutes from its start:
//!
//! | at   | incident                                              | expected in the console          |
//! |------|-------------------------------------------------------|----------------------------------|
//! | 0:40 | a siren's amplifier fails (critical fault), 3 min     | `fault` critical, then resolved  |
//! | 1:00 | a node is killed (its Will fires), back after 90 s    | `node_offline`, then resolved    |
//! | 2:00 | a node flaps: dropped 5 times, once every 40 s        | `flapping`                       |
//! | 3:00 | a whole site is cut off for 150 s                     | `site_outage` for the site       |
//! | 5:00 | a node freezes (no pings) for 60 s                    | late, then offline by keep-alive |
//! | 6:00 | a silent test: two nodes (and ~2 % at random) fail    | drill results, failed tests      |
//! | 7:00 | a siren loses mains power (major fault), 3 min        | `fault` major, battery draining  |
//! | 8:00 | a node is killed for 3 min                            | `node_offline`, then resolved    |
//!
//! Outages last at least six heartbeats, so a slow `--heartbeat` still shows them.

use std::time::Duration;

use alarmnet_protocol::Severity;
use alarmnet_sim::{Action, NodeInfo, ScriptEvent};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};

/// The length of one cycle of incidents.
pub const CYCLE: Duration = Duration::from_secs(12 * 60);

/// How many cycles are scripted (a day); the demo keeps running with random faults after.
pub const CYCLES: u32 = 120;

/// The script for `nodes` (the simulator's layout): [`CYCLES`] cycles of [`CYCLE`].
///
/// `run` makes drill ids unique across runs of the demo, whose store outlives the process.
pub fn script(nodes: &[NodeInfo], heartbeat: Duration, seed: u64, run: u64) -> Vec<ScriptEvent> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xde70);
    let mut out = Vec::new();
    if nodes.is_empty() {
        return out;
    }
    let outage = |d: Duration| d.max(heartbeat * 6);
    let sirens: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.kind.as_str() == "siren")
        .collect();
    // Sites with at least two nodes, so that cutting one raises a site outage.
    let mut sites: Vec<&str> = nodes.iter().map(|n| n.path.site.as_str()).collect();
    sites.sort_unstable();
    let mut shared: Vec<&str> = sites
        .chunk_by(|a, b| a == b)
        .filter(|c| c.len() >= 2)
        .map(|c| c[0])
        .collect();
    if shared.is_empty() {
        sites.dedup();
        shared = sites;
    }
    for cycle in 0..CYCLES {
        let base = CYCLE * cycle;
        let at = |secs: u64| base + Duration::from_secs(secs);
        // Six different nodes (fewer in a tiny layout) for this cycle's node incidents.
        let mut picks: Vec<&NodeInfo> = nodes.choose_multiple(&mut rng, 6).collect();
        picks.shuffle(&mut rng);
        let pick = |i: usize| picks[i % picks.len()].path.node.to_string();
        let siren = |rng: &mut StdRng| {
            sirens
                .choose(rng)
                .map_or_else(|| pick(5), |n| n.path.node.to_string())
        };

        let amp = siren(&mut rng);
        out.push(event(
            at(40),
            Action::Raise {
                node: amp.clone(),
                check: "amplifier".into(),
                code: "AMP_NO_OUTPUT".into(),
                severity: Severity::Critical,
                message: "amplifier 2: no output on the test tone".into(),
            },
        ));
        out.push(event(
            at(40 + 180),
            Action::Clear {
                node: amp,
                check: "amplifier".into(),
                code: "AMP_NO_OUTPUT".into(),
            },
        ));
        out.push(event(
            at(60),
            Action::Kill {
                node: pick(0),
                down_for: outage(Duration::from_secs(90)),
            },
        ));
        out.push(event(
            at(120),
            Action::Flap {
                node: pick(1),
                times: 5,
                period: Duration::from_secs(40).max(heartbeat * 8),
            },
        ));
        if let Some(site) = shared.choose(&mut rng) {
            out.push(event(
                at(180),
                Action::CutSite {
                    site: (*site).to_owned(),
                    down_for: outage(Duration::from_secs(150)),
                },
            ));
        }
        out.push(event(
            at(300),
            Action::Freeze {
                node: pick(2),
                duration: outage(Duration::from_secs(60)),
            },
        ));
        out.push(event(
            at(360),
            Action::SilentTest {
                fail: vec![pick(3), pick(4)],
                fail_fraction: 0.02,
                drill: Some(format!("demo-{run}-{}", cycle + 1)),
            },
        ));
        let power = siren(&mut rng);
        out.push(event(
            at(420),
            Action::Raise {
                node: power.clone(),
                check: "power".into(),
                code: "AC_LOST".into(),
                severity: Severity::Major,
                message: "mains power lost, on battery".into(),
            },
        ));
        out.push(event(
            at(420 + 180),
            Action::Clear {
                node: power,
                check: "power".into(),
                code: "AC_LOST".into(),
            },
        ));
        out.push(event(
            at(480),
            Action::Kill {
                node: pick(5),
                down_for: outage(Duration::from_secs(180)),
            },
        ));
    }
    out
}

fn event(at: Duration, action: Action) -> ScriptEvent {
    ScriptEvent { at, action }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alarmnet_sim::{SimConfig, Simulator, layout};

    fn kinds(script: &[ScriptEvent]) -> Vec<&'static str> {
        let mut k: Vec<&'static str> = script
            .iter()
            .map(|e| match e.action {
                Action::Kill { .. } => "kill",
                Action::Freeze { .. } => "freeze",
                Action::CutSite { .. } => "cut_site",
                Action::Flap { .. } => "flap",
                Action::SilentTest { .. } => "silent_test",
                Action::Raise { .. } => "raise",
                Action::Clear { .. } => "clear",
            })
            .collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    #[test]
    fn every_incident_kind_on_nodes_and_sites_the_simulator_accepts() {
        for count in [1, 20, 300] {
            let nodes = layout(count, 7).expect("layout");
            let script = script(&nodes, Duration::from_secs(5), 7, 1);
            assert_eq!(
                kinds(&script),
                [
                    "clear",
                    "cut_site",
                    "flap",
                    "freeze",
                    "kill",
                    "raise",
                    "silent_test"
                ],
                "{count} nodes"
            );
            let last = script.iter().map(|e| e.at).max().expect("events");
            assert!(
                last > CYCLE * (CYCLES - 1),
                "{count} nodes: last at {last:?}"
            );
            // The simulator checks that every named node and site exists.
            Simulator::new(SimConfig {
                nodes: count,
                seed: 7,
                script,
                ..SimConfig::default()
            })
            .unwrap_or_else(|e| panic!("{count} nodes: {e}"));
        }
    }

    #[test]
    fn site_cuts_pick_sites_with_several_nodes() {
        let nodes = layout(300, 3).expect("layout");
        let script = script(&nodes, Duration::from_secs(5), 3, 1);
        let mut cuts = 0;
        for e in &script {
            if let Action::CutSite { site, .. } = &e.action {
                cuts += 1;
                let members = nodes
                    .iter()
                    .filter(|n| n.path.site.as_str() == site)
                    .count();
                assert!(members >= 2, "{site} has {members} node(s)");
            }
        }
        assert_eq!(cuts, CYCLES);
    }

    #[test]
    fn outages_outlast_six_heartbeats_and_drills_are_unique() {
        let nodes = layout(50, 1).expect("layout");
        let hb = Duration::from_secs(30);
        let script = script(&nodes, hb, 1, 42);
        let mut drills = Vec::new();
        for e in &script {
            match &e.action {
                Action::Kill { down_for, .. } | Action::CutSite { down_for, .. } => {
                    assert!(*down_for >= hb * 6, "{e:?}");
                }
                Action::Freeze { duration, .. } => assert!(*duration >= hb * 6, "{e:?}"),
                Action::SilentTest { drill, .. } => drills.push(drill.clone().expect("named")),
                _ => {}
            }
        }
        assert_eq!(drills.len(), CYCLES as usize);
        assert!(drills[0].starts_with("demo-42-"), "{}", drills[0]);
        drills.sort();
        drills.dedup();
        assert_eq!(drills.len(), CYCLES as usize);
    }

    #[test]
    fn the_same_seed_gives_the_same_script() {
        let nodes = layout(100, 5).expect("layout");
        let a = format!("{:?}", script(&nodes, Duration::from_secs(5), 5, 1));
        let b = format!("{:?}", script(&nodes, Duration::from_secs(5), 5, 1));
        let c = format!("{:?}", script(&nodes, Duration::from_secs(5), 6, 1));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
