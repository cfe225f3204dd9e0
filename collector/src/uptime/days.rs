//! Per-node summaries of consecutive spans (whole days in the uptime time zone), and how
//! they add up to the figures of the span they cover.
//!
//! Time in each category adds up directly. Outages do not: one that runs over midnight has
//! down time in both days and is one outage, not two. So a segment also says whether its
//! first outage began before it (`first_carried`) and its down time there (`first_ms`),
//! whether its last one was still open at its end (`last_open`, `last_ms`), and whether the
//! node came up at all inside it (`went_up`). [`Segment::then`] merges two segments into
//! one, linking an outage open at the first one's end with the carried first outage of
//! the next one that has any, when nothing in between ended it (a segment without outages
//! and without the node coming up passes it on): that is exactly when the raw transitions make them one
//! outage. [`combine`] merges them all, so the outage count, the longest outage, MTTR and
//! MTBF are exact too; only the list of outages needs the raw transitions.

use super::engine::TestTally;
use crate::model::UnixMillis;

/// One node's figures over `[from, to)`; see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub from: UnixMillis,
    pub to: UnixMillis,
    pub up_ms: u64,
    pub down_ms: u64,
    pub maintenance_ms: u64,
    pub unknown_ms: u64,
    /// Outages with down time inside the segment.
    pub outages: u64,
    /// The first of them continues an outage open at `from`, if there was one: it began
    /// before `from`, or the node did not come up between `from` and its start.
    pub first_carried: bool,
    /// Down time of the first of them inside the segment.
    pub first_ms: u64,
    /// The last of them was still going on at `to`.
    pub last_open: bool,
    /// Down time of the last of them inside the segment.
    pub last_ms: u64,
    /// The most down time of any one of them inside the segment.
    pub longest_ms: u64,
    /// The node became up (`online` or `late`) inside the segment: any outage open before
    /// it ended.
    pub went_up: bool,
    pub tests: TestTally,
}

impl Segment {
    /// A span with nothing known (a node not registered yet).
    pub fn unknown(from: UnixMillis, to: UnixMillis) -> Self {
        Segment {
            from,
            to,
            unknown_ms: to.millis_since(from),
            ..Segment::default()
        }
    }
}

impl Segment {
    /// This segment followed by `next` (which starts where it ends), as one segment over
    /// both spans: [`combine`] gives the same figures for any grouping of consecutive
    /// segments into such merged ones, so summaries of several days can stand for their
    /// days (the `node_days` blocks, see `store::days`).
    pub fn then(&self, next: &Segment) -> Segment {
        let (a, b) = (self, next);
        let mut m = Segment {
            from: a.from,
            to: b.to,
            up_ms: a.up_ms + b.up_ms,
            down_ms: a.down_ms + b.down_ms,
            maintenance_ms: a.maintenance_ms + b.maintenance_ms,
            unknown_ms: a.unknown_ms + b.unknown_ms,
            went_up: a.went_up || b.went_up,
            tests: TestTally {
                run: a.tests.run + b.tests.run,
                passed: a.tests.passed + b.tests.passed,
                failed: a.tests.failed + b.tests.failed,
            },
            ..Segment::default()
        };
        match (a.outages, b.outages) {
            (0, 0) => {}
            // An outage open before `a` goes on through it unless the node came up.
            (0, _) => {
                m.outages = b.outages;
                m.first_carried = b.first_carried && !a.went_up;
                m.first_ms = b.first_ms;
                m.last_open = b.last_open;
                m.last_ms = b.last_ms;
                m.longest_ms = b.longest_ms;
            }
            (_, 0) => {
                m.outages = a.outages;
                m.first_carried = a.first_carried;
                m.first_ms = a.first_ms;
                m.last_open = a.last_open && !b.went_up;
                m.last_ms = a.last_ms;
                m.longest_ms = a.longest_ms;
            }
            (_, _) => {
                // `a`'s last outage and `b`'s first are one when it was open at `a`'s end
                // and nothing ended it before `b`'s first began.
                let linked = a.last_open && b.first_carried;
                let joined = if linked { a.last_ms + b.first_ms } else { 0 };
                m.outages = a.outages + b.outages - u64::from(linked);
                m.first_carried = a.first_carried;
                m.first_ms = if linked && a.outages == 1 {
                    joined
                } else {
                    a.first_ms
                };
                m.last_open = b.last_open;
                m.last_ms = if linked && b.outages == 1 {
                    joined
                } else {
                    b.last_ms
                };
                m.longest_ms = a.longest_ms.max(b.longest_ms).max(joined);
            }
        }
        m
    }
}

/// The figures of consecutive segments, as if over their whole span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Combined {
    pub up_ms: u64,
    pub down_ms: u64,
    pub maintenance_ms: u64,
    pub unknown_ms: u64,
    pub outages: u64,
    pub longest_ms: u64,
    pub tests: TestTally,
}

/// Adds up consecutive segments (sorted, each starting where the previous ended): merged
/// into one ([`Segment::then`]), whose outages and longest outage are those of the whole.
pub fn combine(segments: &[Segment]) -> Combined {
    let Some((first, rest)) = segments.split_first() else {
        return Combined::default();
    };
    let m = rest.iter().fold(*first, |m, s| m.then(s));
    Combined {
        up_ms: m.up_ms,
        down_ms: m.down_ms,
        maintenance_ms: m.maintenance_ms,
        unknown_ms: m.unknown_ms,
        outages: m.outages,
        longest_ms: m.longest_ms,
        tests: m.tests,
    }
}
