//! `[uptime]`: the time zone availability is reported in.

use serde::Deserialize;

/// `[uptime]`: how availability is reported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UptimeConfig {
    /// IANA time zone in which dates, days and calendar months are read and written (a
    /// month's availability is the month as the operations centre lives it).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
}

impl Default for UptimeConfig {
    fn default() -> Self {
        Self {
            time_zone: default_time_zone(),
        }
    }
}

impl UptimeConfig {
    /// The configured zone, or the problem under `uptime.time_zone`.
    pub fn build(&self) -> Result<jiff::tz::TimeZone, String> {
        jiff::tz::TimeZone::get(&self.time_zone).map_err(|e| {
            format!(
                "uptime.time_zone: {:?} is not a known IANA time zone ({e})",
                self.time_zone
            )
        })
    }
}

fn default_time_zone() -> String {
    crate::uptime::DEFAULT_TIME_ZONE.into()
}
