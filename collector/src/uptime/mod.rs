//! Historical availability, as pure arithmetic over stored transitions: any window, per
//! node and rolled up per site, region, kind and the whole network.
//!
//! # Definitions
//! For each node the measured span is `[from, until)` with `until = min(to, now)` (never
//! before `from`). Each instant of it is exactly one of:
//! - **maintenance**: the node's state is `maintenance`, or a matching silence covers it
//!   (whatever the state);
//! - **unknown**: otherwise, inside a blind interval (nobody watching), or the state is
//!   `unknown` (including before the node's first transition);
//! - **up**: otherwise, state `online` or `late`;
//! - **down**: otherwise, state `offline` or `stopped`.
//!
//! So `up + down + maintenance + unknown = until − from` for every node.
//! `availability = up / (up + down)` and `coverage = (up + down) / (up + down + unknown)`,
//! both × 100; rollups sum the members' times before dividing (time-weighted).
//! An **outage** begins when the state becomes down and ends when it next becomes up;
//! maintenance and unknown time inside it neither end it nor count toward its duration.
//! It is counted in a window when some of its down time falls inside it.
//! `mttr = downtime / outages`, `mtbf = up / outages`.
//!
//! Beside availability, a row counts the test receipts (self-tests and drills) whose `ts`
//! falls in `[from, until)`: run, passed, failed (the rest could not run: `error`), and
//! `test_pass_pct = passed / run × 100` (null with no test). Maintenance does not hide
//! them: a test in a maintenance window still says whether the siren sounds.
//!
//! # Input ordering
//! One pass per node over its transitions sorted by `at`, nodes one after another, so a
//! store can stream `ORDER BY node, at` ([`report`] checks the order, [`ReportBuilder`]
//! takes one node at a time).
//!
//! # Output
//! Instants are RFC 3339 with the configured zone's offset ([`Stamp`]); durations are
//! seconds as numbers with millisecond precision; percentages are unrounded.

mod config;
mod days;
mod engine;
mod unwatched;
mod window;

#[cfg(test)]
mod tests;

pub use config::UptimeConfig;
pub use days::{Combined, Segment, combine};
pub use engine::{
    Filter, GroupBy, Inputs, NodeTests, Outage, PartialReport, Query, ReportBuilder, Row, Step,
    TestTally, UptimeError, UptimeReport, report,
};
pub use unwatched::Unwatched;
pub use window::{
    DEFAULT_SINCE, DEFAULT_TIME_ZONE, DateMeans, ParamError, Period, Stamp, Window, WindowParams,
    parse_date, parse_duration, parse_instant, parse_iso_week, parse_month, parse_year, time_zone,
};
