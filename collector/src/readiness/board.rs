//! [`Board`]: the readiness rollups as the HTTP API and `/metrics` read them, published by
//! the core after each commit.
//!
// Design: the core owns the live rollups; after a commit it copies only the sites and
// regions whose counts changed into the board (a short write lock), so readers never touch
// the core's state and a publish costs what changed, not the network's size.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use alarmnet_protocol::{RegionId, SiteId};

use super::tracker::{ReadinessTracker, Rollup};
use crate::liveness::Tracker;

/// A copy of the rollups at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BoardSnapshot {
    pub network: Rollup,
    pub regions: BTreeMap<RegionId, Rollup>,
    pub sites: BTreeMap<(RegionId, SiteId), Rollup>,
}

/// Shared, cheap to clone handle on the published rollups.
#[derive(Debug, Clone, Default)]
pub struct Board {
    inner: Arc<RwLock<BoardSnapshot>>,
}

impl Board {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything (regions and sites are a bounded, operator-sized set).
    pub fn snapshot(&self) -> BoardSnapshot {
        self.inner
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replaces everything (API tests, which have no core).
    #[cfg(test)]
    pub(crate) fn replace(&self, snapshot: BoardSnapshot) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Copies the rollups of the sites and regions that changed since the last publish.
    pub fn publish(&self, t: &Tracker, r: &mut ReadinessTracker) {
        let (sites, regions) = r.take_dirty();
        if sites.is_empty() && regions.is_empty() {
            return;
        }
        let mut b = self.inner.write().unwrap_or_else(|e| e.into_inner());
        b.network = r.network();
        for region in regions {
            let id = t.region_entry(region).id.clone();
            let rollup = r.region(region);
            // A region whose last node moved away is dropped.
            if rollup.nodes.total() > 0 {
                b.regions.insert(id, rollup);
            } else {
                b.regions.remove(&id);
            }
        }
        for site in sites {
            let s = t.site_entry(site);
            let key = (t.region_entry(s.region).id.clone(), s.id.clone());
            let rollup = r.site(site);
            if rollup.nodes.total() > 0 {
                b.sites.insert(key, rollup);
            } else {
                b.sites.remove(&key);
            }
        }
    }
}

impl BoardSnapshot {
    /// The rollups as Prometheus gauges per region (a bounded label set: never a node):
    /// `alarmnet_readiness_nodes{region,state}` and `alarmnet_readiness_sirens{region,state}`
    /// (states `ready`, `degraded`, `not_ready`, `maintenance`), and
    /// `alarmnet_readiness_ready_ratio{region}` (0..1, the counted kinds without
    /// maintenance; absent for a region with none).
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let gauges = [
            (
                "alarmnet_readiness_nodes",
                "Nodes per readiness state (maintenance apart), per region.",
                false,
            ),
            (
                "alarmnet_readiness_sirens",
                "Nodes of the counted kinds (sirens) per readiness state, per region.",
                true,
            ),
        ];
        for (name, help, sirens) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (region, r) in &self.regions {
                let c = if sirens { &r.sirens } else { &r.nodes };
                for (state, n) in [
                    ("ready", c.ready),
                    ("degraded", c.degraded),
                    ("not_ready", c.not_ready),
                    ("maintenance", c.maintenance),
                ] {
                    let _ = writeln!(out, "{name}{{region=\"{region}\",state=\"{state}\"}} {n}");
                }
            }
        }
        let name = "alarmnet_readiness_ready_ratio";
        let _ = writeln!(
            out,
            "# HELP {name} Ready share (0..1) of the counted kinds (sirens), maintenance excluded, per region.\n# TYPE {name} gauge"
        );
        for (region, r) in &self.regions {
            if let Some(pct) = r.sirens.ready_pct() {
                let _ = writeln!(out, "{name}{{region=\"{region}\"}} {}", pct / 100.0);
            }
        }
    }
}
