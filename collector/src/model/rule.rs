//! Which rule raised an alert. The built-in rules are variants; a metric threshold rule
//! carries its configured name. Each name is written once, in [`RuleKind::as_str`]; a rule
//! name string becomes a [`RuleKind`] once (from config, the store or an API parameter) and
//! code past that point matches on the variant.

use std::fmt;
use std::str::FromStr;

use alarmnet_protocol::{IdError, Name};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The rule of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleKind {
    NodeOffline,
    Fault,
    SiteOutage,
    RegionOutage,
    Flapping,
    TelemetryGap,
    ClockSkew,
    CollectorBlind,
    StoreFailed,
    /// A standby collector took over from the active one (an event: notified once, and
    /// recorded as resolved at once).
    CollectorFailover,
    ReadinessLow,
    /// A metric threshold rule (`[[alerts.thresholds]]`), by its configured name, which is
    /// never one of the built-in names (config validation refuses those).
    Threshold(Name),
}

impl RuleKind {
    /// Every built-in rule.
    pub const BUILTIN: [RuleKind; 11] = [
        RuleKind::NodeOffline,
        RuleKind::Fault,
        RuleKind::SiteOutage,
        RuleKind::RegionOutage,
        RuleKind::Flapping,
        RuleKind::TelemetryGap,
        RuleKind::ClockSkew,
        RuleKind::CollectorBlind,
        RuleKind::StoreFailed,
        RuleKind::CollectorFailover,
        RuleKind::ReadinessLow,
    ];

    /// The rule's name on every wire and in the store.
    pub fn as_str(&self) -> &str {
        match self {
            RuleKind::NodeOffline => "node_offline",
            RuleKind::Fault => "fault",
            RuleKind::SiteOutage => "site_outage",
            RuleKind::RegionOutage => "region_outage",
            RuleKind::Flapping => "flapping",
            RuleKind::TelemetryGap => "telemetry_gap",
            RuleKind::ClockSkew => "clock_skew",
            RuleKind::CollectorBlind => "collector_blind",
            RuleKind::StoreFailed => "store_failed",
            RuleKind::CollectorFailover => "collector_failover",
            RuleKind::ReadinessLow => "readiness_low",
            RuleKind::Threshold(name) => name.as_str(),
        }
    }

    /// The built-in rule named `name`, if it is one.
    pub fn builtin(name: &str) -> Option<RuleKind> {
        Self::BUILTIN.into_iter().find(|r| r.as_str() == name)
    }

    /// The rule's name as a protocol [`Name`] (the `rule` of `$alerts` notifications).
    pub fn to_name(&self) -> Name {
        match self {
            RuleKind::Threshold(name) => name.clone(),
            builtin => Name::new(builtin.as_str()).expect("built-in rule names are valid names"),
        }
    }

    /// Whether the rule says a node, site or region is unreachable, or the collector itself
    /// cannot watch: its notices are delivered ahead of the rest.
    pub fn is_availability(&self) -> bool {
        match self {
            RuleKind::NodeOffline
            | RuleKind::SiteOutage
            | RuleKind::RegionOutage
            | RuleKind::CollectorBlind
            | RuleKind::StoreFailed => true,
            RuleKind::Fault
            | RuleKind::Flapping
            | RuleKind::TelemetryGap
            | RuleKind::ClockSkew
            | RuleKind::CollectorFailover
            | RuleKind::ReadinessLow
            | RuleKind::Threshold(_) => false,
        }
    }

    /// Whether the rule is about a group of nodes (a site or a whole region going offline),
    /// whose offline members are tracked and re-notified as they change.
    pub fn is_outage(&self) -> bool {
        matches!(self, RuleKind::SiteOutage | RuleKind::RegionOutage)
    }
}

impl FromStr for RuleKind {
    type Err = IdError;

    /// A built-in rule by its name, or else a threshold rule of that name (any valid
    /// [`Name`]).
    fn from_str(s: &str) -> Result<Self, IdError> {
        match Self::builtin(s) {
            Some(rule) => Ok(rule),
            None => Name::new(s).map(RuleKind::Threshold),
        }
    }
}

impl From<Name> for RuleKind {
    fn from(name: Name) -> Self {
        Self::builtin(name.as_str()).unwrap_or(RuleKind::Threshold(name))
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RuleKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RuleKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Name::deserialize(d).map(RuleKind::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for rule in RuleKind::BUILTIN {
            assert_eq!(rule.as_str().parse::<RuleKind>(), Ok(rule.clone()));
            assert_eq!(rule.to_name().as_str(), rule.as_str());
            let json = serde_json::to_string(&rule).expect("json");
            assert_eq!(json, format!("\"{}\"", rule.as_str()));
            assert_eq!(serde_json::from_str::<RuleKind>(&json).expect("json"), rule);
        }
        let battery: RuleKind = "battery_low".parse().expect("rule");
        assert_eq!(
            battery,
            RuleKind::Threshold(Name::new("battery_low").expect("name"))
        );
        assert_eq!(battery.to_string(), "battery_low");
        assert!("no spaces".parse::<RuleKind>().is_err());
    }

    #[test]
    fn a_threshold_never_holds_a_builtin_name() {
        let name = Name::new("node_offline").expect("name");
        assert_eq!(RuleKind::from(name), RuleKind::NodeOffline);
    }
}
