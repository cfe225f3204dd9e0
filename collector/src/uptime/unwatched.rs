//! Who was not watched when: the intervals nobody watched a node, by the node's region.
//!
//! One collector watches the whole network, and its unwatched time (outside its runs, and
//! while it was blind) is everybody's. Region shards each watch their own regions: while
//! one is down, only the nodes of its regions are unwatched. So the unwatched intervals
//! are kept per region, with one list for the regions no shard named (watched only by
//! collectors of the whole network).

use std::collections::HashMap;

use alarmnet_protocol::RegionId;

use super::window::Window;

/// The intervals nobody watched, per region; each list sorted and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unwatched {
    /// For a region with no list of its own.
    elsewhere: Vec<Window>,
    regions: HashMap<RegionId, Vec<Window>>,
}

impl Unwatched {
    /// The same intervals for every region (a collector of the whole network).
    pub fn everywhere(blind: Vec<Window>) -> Self {
        Self {
            elsewhere: blind,
            regions: HashMap::new(),
        }
    }

    /// The same, with `region`'s own intervals.
    pub fn with_region(mut self, region: RegionId, blind: Vec<Window>) -> Self {
        self.regions.insert(region, blind);
        self
    }

    /// The intervals nobody watched the nodes of `region`.
    pub fn of(&self, region: &RegionId) -> &[Window] {
        self.regions.get(region).unwrap_or(&self.elsewhere)
    }

    /// The regions with their own intervals, and `None` for every other region.
    pub fn lists(&self) -> impl Iterator<Item = (Option<&RegionId>, &[Window])> {
        std::iter::once((None, self.elsewhere.as_slice()))
            .chain(self.regions.iter().map(|(r, w)| (Some(r), w.as_slice())))
    }
}
