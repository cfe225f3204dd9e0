//! Readiness history: the share of time each node (site, region, kind, network) spent
//! `ready`, `degraded` and `not_ready` over a window, from the stored readiness changes.
//! Pure: the store streams each node's changes in, the report comes out.
//!
//! Time under a silence counts as `maintenance` and, like maintenance in uptime, is left out
//! of the percentages; time before a node's first derivation (before it was registered, or
//! before this feature existed) is `unknown` and left out as well.

use std::collections::BTreeMap;

use alarmnet_protocol::{Name, NodePath};
use serde::Serialize;

use super::Readiness;
use crate::model::UnixMillis;
use crate::store::ReadinessStep;
use crate::uptime::GroupBy;

/// Time per bucket, in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shares {
    pub ready: u64,
    pub degraded: u64,
    pub not_ready: u64,
    pub maintenance: u64,
    pub unknown: u64,
}

impl Shares {
    fn add(&mut self, o: &Shares) {
        self.ready += o.ready;
        self.degraded += o.degraded;
        self.not_ready += o.not_ready;
        self.maintenance += o.maintenance;
        self.unknown += o.unknown;
    }

    fn judged(&self) -> u64 {
        self.ready + self.degraded + self.not_ready
    }

    fn pct(&self, part: u64) -> Option<f64> {
        let judged = self.judged();
        (judged > 0).then(|| 100.0 * part as f64 / judged as f64)
    }
}

/// One node's shares over `[from, until)`. `steps` are its changes from the last one
/// before `from` on, oldest first (as the store gives them).
pub fn node_shares(steps: &[ReadinessStep], from: UnixMillis, until: UnixMillis) -> Shares {
    let mut s = Shares::default();
    let mut cur: Option<&ReadinessStep> = None;
    let mut t = from;
    let credit = |s: &mut Shares, cur: Option<&ReadinessStep>, len: u64| {
        let slot = match cur {
            None => &mut s.unknown,
            Some(c) if c.maintenance => &mut s.maintenance,
            Some(c) => match c.to {
                Readiness::Ready => &mut s.ready,
                Readiness::Degraded => &mut s.degraded,
                Readiness::NotReady => &mut s.not_ready,
            },
        };
        *slot += len;
    };
    for step in steps {
        if step.at >= until {
            break;
        }
        if step.at > t {
            credit(&mut s, cur, step.at.millis_since(t));
            t = step.at;
        }
        cur = Some(step);
    }
    if until > t {
        credit(&mut s, cur, until.millis_since(t));
    }
    s
}

/// One row of a readiness history report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// How many nodes the row sums.
    pub nodes: u64,
    /// Shares of the judged time (ready + degraded + not ready), 0-100; null when none.
    pub ready_pct: Option<f64>,
    pub degraded_pct: Option<f64>,
    pub not_ready_pct: Option<f64>,
    pub ready_s: f64,
    pub degraded_s: f64,
    pub not_ready_s: f64,
    pub maintenance_s: f64,
    pub unknown_s: f64,
}

/// Sums nodes' shares into rows grouped by `by`.
#[derive(Debug)]
pub struct HistoryBuilder {
    by: GroupBy,
    from: UnixMillis,
    until: UnixMillis,
    rows: BTreeMap<[Option<String>; 4], (u64, Shares)>,
}

impl HistoryBuilder {
    pub fn new(by: GroupBy, from: UnixMillis, until: UnixMillis) -> Self {
        Self {
            by,
            from,
            until,
            rows: BTreeMap::new(),
        }
    }

    pub fn add_node(&mut self, path: &NodePath, kind: &Name, steps: &[ReadinessStep]) {
        let s = node_shares(steps, self.from, self.until);
        let (r, si, n, k) = (
            Some(path.region.to_string()),
            Some(path.site.to_string()),
            Some(path.node.to_string()),
            Some(kind.to_string()),
        );
        let key = match self.by {
            GroupBy::Node => [r, si, n, k],
            GroupBy::Site => [r, si, None, None],
            GroupBy::Region => [r, None, None, None],
            GroupBy::Kind => [None, None, None, k],
            GroupBy::Network => [None, None, None, None],
        };
        let e = self.rows.entry(key).or_default();
        e.0 += 1;
        e.1.add(&s);
    }

    pub fn finish(self) -> Vec<HistoryRow> {
        let secs = |ms: u64| ms as f64 / 1000.0;
        self.rows
            .into_iter()
            .map(|([region, site, node, kind], (nodes, s))| HistoryRow {
                region,
                site,
                node,
                kind,
                nodes,
                ready_pct: s.pct(s.ready),
                degraded_pct: s.pct(s.degraded),
                not_ready_pct: s.pct(s.not_ready),
                ready_s: secs(s.ready),
                degraded_s: secs(s.degraded),
                not_ready_s: secs(s.not_ready),
                maintenance_s: secs(s.maintenance),
                unknown_s: secs(s.unknown),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ms;

    const H: u64 = 3_600_000;
    const T0: UnixMillis = UnixMillis::from_millis(1_790_000_000_000);

    fn step(at: UnixMillis, to: Readiness, maintenance: bool) -> ReadinessStep {
        ReadinessStep {
            at,
            to,
            maintenance,
        }
    }

    #[test]
    fn shares_of_one_node_by_hand() {
        // Window [T0, T0 + 10 h). Ready since before the window; not ready 2 h at +3 h;
        // degraded at +5 h for 1 h; maintenance +6..+7 h; ready from +7 h to the end.
        let steps = [
            step(T0 - ms(5 * H), Readiness::Ready, false),
            step(T0 + ms(3 * H), Readiness::NotReady, false),
            step(T0 + ms(5 * H), Readiness::Degraded, false),
            step(T0 + ms(6 * H), Readiness::NotReady, true),
            step(T0 + ms(7 * H), Readiness::Ready, false),
        ];
        let s = node_shares(&steps, T0, T0 + ms(10 * H));
        assert_eq!(
            s,
            Shares {
                ready: 6 * H,
                degraded: H,
                not_ready: 2 * H,
                maintenance: H,
                unknown: 0,
            }
        );
        assert_eq!(s.pct(s.ready), Some(100.0 * 6.0 / 9.0));
        // A node first derived inside the window: the time before is unknown.
        let s = node_shares(
            &[step(T0 + ms(4 * H), Readiness::Ready, false)],
            T0,
            T0 + ms(10 * H),
        );
        assert_eq!((s.unknown, s.ready), (4 * H, 6 * H));
        // Changes at or after the end of the window do not count.
        let s = node_shares(
            &[
                step(T0, Readiness::Degraded, false),
                step(T0 + ms(10 * H), Readiness::Ready, false),
            ],
            T0,
            T0 + ms(10 * H),
        );
        assert_eq!((s.degraded, s.ready), (10 * H, 0));
    }

    #[test]
    fn rollups_are_time_weighted_over_the_members() {
        let path = |site: &str, node: &str| {
            NodePath::new(
                "lanzhou".parse().expect("region"),
                site.parse().expect("site"),
                node.parse().expect("node"),
            )
        };
        let siren = Name::new("siren").expect("kind");
        let mut b = HistoryBuilder::new(GroupBy::Region, T0, T0 + ms(10 * H));
        // Node a: ready all 10 h. Node b: not ready 4 h, then ready 6 h.
        b.add_node(
            &path("cg", "a"),
            &siren,
            &[step(T0 - ms(H), Readiness::Ready, false)],
        );
        b.add_node(
            &path("ql", "b"),
            &siren,
            &[
                step(T0 - ms(H), Readiness::NotReady, false),
                step(T0 + ms(4 * H), Readiness::Ready, false),
            ],
        );
        let rows = b.finish();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.region.as_deref(), Some("lanzhou"));
        assert_eq!(r.nodes, 2);
        assert_eq!(r.ready_s, 16.0 * 3600.0);
        assert_eq!(r.not_ready_s, 4.0 * 3600.0);
        assert_eq!(r.ready_pct, Some(80.0));
        assert_eq!(r.not_ready_pct, Some(20.0));
        assert_eq!(r.degraded_pct, Some(0.0));
    }
}
