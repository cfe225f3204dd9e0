//! The collector's instant: [`UnixMillis`], milliseconds since the Unix epoch. Spans are
//! [`Duration`]; the two do not mix by accident (an instant plus an instant does not compile).
//! On every wire (API JSON, event stream, webhooks, MQTT) and in the store it is the bare
//! number of milliseconds, as before it had a type.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An instant on the collector's clock: milliseconds since the Unix epoch, UTC.
///
/// Arithmetic saturates (at the epoch and at `u64::MAX` ms) instead of panicking: a clock
/// read before the epoch or a deadline far in the future stays a valid instant.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(u64);

impl UnixMillis {
    /// The Unix epoch (also what a clock before it reads).
    pub const EPOCH: UnixMillis = UnixMillis(0);
    /// The last representable instant.
    pub const MAX: UnixMillis = UnixMillis(u64::MAX);

    pub const fn from_millis(ms: u64) -> Self {
        UnixMillis(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// The span from `earlier` to `self`; zero when `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Whole milliseconds from `earlier` to `self`; zero when `earlier` is later. For the
    /// arithmetic that sums spans as integer milliseconds (uptime, readiness).
    pub const fn millis_since(self, earlier: UnixMillis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self + d`, or `None` past [`UnixMillis::MAX`].
    pub fn checked_add(self, d: Duration) -> Option<UnixMillis> {
        self.0.checked_add(duration_millis(d)).map(UnixMillis)
    }
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Display for UnixMillis {
    /// The number of milliseconds, as on the wire.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UnixMillis {
    type Err = std::num::ParseIntError;
    /// The number of milliseconds, as [`Display`](fmt::Display) writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(UnixMillis)
    }
}

impl Add<Duration> for UnixMillis {
    type Output = UnixMillis;
    /// Saturates at [`UnixMillis::MAX`]; sub-millisecond parts are dropped.
    fn add(self, d: Duration) -> UnixMillis {
        UnixMillis(self.0.saturating_add(duration_millis(d)))
    }
}

impl AddAssign<Duration> for UnixMillis {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for UnixMillis {
    type Output = UnixMillis;
    /// Saturates at [`UnixMillis::EPOCH`]; sub-millisecond parts are dropped.
    fn sub(self, d: Duration) -> UnixMillis {
        UnixMillis(self.0.saturating_sub(duration_millis(d)))
    }
}

impl SubAssign<Duration> for UnixMillis {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub for UnixMillis {
    type Output = Duration;
    /// [`UnixMillis::saturating_duration_since`]: zero when `earlier` is later.
    fn sub(self, earlier: UnixMillis) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// `n` milliseconds: spans in tests read as `t + ms(1_500)`.
#[cfg(test)]
pub(crate) const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_keeps_instants_and_spans_apart() {
        let t = UnixMillis::from_millis(10_000);
        assert_eq!((t + Duration::from_secs(5)).as_millis(), 15_000);
        assert_eq!((t - Duration::from_secs(4)).as_millis(), 6_000);
        assert_eq!(t - Duration::from_secs(60), UnixMillis::EPOCH);
        assert_eq!(UnixMillis::MAX + Duration::from_millis(1), UnixMillis::MAX);
        assert_eq!(UnixMillis::MAX.checked_add(Duration::from_millis(1)), None);
        assert_eq!(
            t - UnixMillis::from_millis(7_500),
            Duration::from_millis(2_500)
        );
        assert_eq!(UnixMillis::from_millis(7_500) - t, Duration::ZERO);
        assert_eq!(t.millis_since(UnixMillis::from_millis(7_500)), 2_500);
        assert_eq!(UnixMillis::EPOCH.millis_since(t), 0);
        assert_eq!(
            t + Duration::from_micros(1_999),
            UnixMillis::from_millis(10_001)
        );
        let mut u = t;
        u += Duration::from_millis(1);
        u -= Duration::from_millis(2);
        assert_eq!(u.as_millis(), 9_999);
        assert!(UnixMillis::EPOCH < t);
    }

    #[test]
    fn serde_is_the_bare_number_of_milliseconds() {
        let t = UnixMillis::from_millis(1_767_225_600_123);
        let json = |v: serde_json::Value| v.to_string();
        assert_eq!(json(serde_json::json!(t)), "1767225600123");
        assert_eq!(
            serde_json::from_str::<UnixMillis>("1767225600123").ok(),
            Some(t)
        );
        assert_eq!(
            json(serde_json::json!({"at": Some(t)})),
            json(serde_json::json!({"at": Some(1_767_225_600_123_u64)}))
        );
        assert!(serde_json::from_str::<UnixMillis>("-1").is_err());
        assert_eq!(t.to_string(), "1767225600123");
        assert_eq!("1767225600123".parse::<UnixMillis>(), Ok(t));
    }
}
