//! Scheduled drills: `[[drills.schedule]]` entries with a calendar rule read in the
//! configured time zone, and the pure arithmetic of their next occurrence.
//!
//! Rules (case-insensitive, `HH:MM` on a 24-hour clock):
//! - `every day at 03:00`
//! - `every monday at 10:00`
//! - `first monday of every month at 10:00` (`first`, `second`, `third`, `fourth`, `last`)
//! - `day 15 of every month at 10:00` (months without that day are skipped)
//!
//! A local time that does not exist (skipped by a daylight-saving change) runs at the
//! first instant after the gap, one that exists twice runs at the first of the two.

use std::time::Duration;

use alarmnet_protocol::Name;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::{DrillSpec, Selector};
use crate::model::UnixMillis;

/// One `[[drills.schedule]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// A unique name: it is recorded as who started the drill (`schedule:<name>`) and keys
    /// the last occurrence run, so renaming an entry makes it a new schedule.
    pub name: String,
    /// The calendar rule, e.g. `first monday of every month at 10:00`.
    pub when: String,
    /// Which nodes (all when empty), e.g. `selector = { region = "lanzhou" }`.
    #[serde(default)]
    pub selector: Selector,
    /// The test kind the nodes run.
    #[serde(default = "default_test")]
    pub test: String,
    /// How long the drill waits for receipts.
    #[serde(default = "super::default_deadline", with = "humantime_serde")]
    pub deadline: Duration,
}

fn default_test() -> String {
    "silent".into()
}

/// A `[[drills.schedule]]` entry checked at load: its rule parsed, what it asks for built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub name: String,
    pub rule: Rule,
    pub spec: DrillSpec,
}

impl ScheduleConfig {
    /// The parsed entry, or every problem of it, each prefixed with `at`.
    pub fn build(&self, at: &str, max_deadline: Duration) -> Result<Schedule, Vec<String>> {
        let mut errors = Vec::new();
        if self.name.is_empty() || self.name.len() > 64 {
            errors.push(format!("{at}.name: must be 1 to 64 characters"));
        }
        let rule = self
            .when
            .parse::<Rule>()
            .map_err(|e| errors.push(format!("{at}.when: {e}")))
            .ok();
        let test = Name::new(self.test.clone())
            .map_err(|e| errors.push(format!("{at}.test: {e}")))
            .ok();
        if self.deadline < Duration::from_secs(1) || self.deadline > max_deadline {
            errors.push(format!(
                "{at}.deadline: must be from 1s to drills.max_deadline ({})",
                humantime::format_duration(max_deadline)
            ));
        }
        match (rule, test) {
            (Some(rule), Some(test)) if errors.is_empty() => Ok(Schedule {
                name: self.name.clone(),
                rule,
                spec: DrillSpec {
                    selector: self.selector.clone(),
                    test,
                    deadline: self.deadline,
                },
            }),
            _ => Err(errors),
        }
    }
}

/// Which days a rule runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Days {
    Every,
    Weekday(Weekday),
    /// The nth (1..=4, or -1 for the last) weekday of each month.
    NthWeekday(i8, Weekday),
    /// This day of each month.
    DayOfMonth(i8),
}

/// A calendar rule: which days, at what local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub days: Days,
    pub hour: i8,
    pub minute: i8,
}

/// A rule that cannot be read, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a rule like \"every day at 03:00\", \"every monday at 10:00\", \"first monday of every month at 10:00\" or \"day 15 of every month at 10:00\""
)]
pub struct RuleError(String);

fn weekday(s: &str) -> Option<Weekday> {
    Some(match s {
        "monday" => Weekday::Monday,
        "tuesday" => Weekday::Tuesday,
        "wednesday" => Weekday::Wednesday,
        "thursday" => Weekday::Thursday,
        "friday" => Weekday::Friday,
        "saturday" => Weekday::Saturday,
        "sunday" => Weekday::Sunday,
        _ => return None,
    })
}

fn time(s: &str) -> Option<(i8, i8)> {
    let (h, m) = s.split_once(':')?;
    let (h, m) = (h.parse::<i8>().ok()?, m.parse::<i8>().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m) && s.len() <= 5).then_some((h, m))
}

impl std::str::FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || RuleError(text.to_owned());
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        let (days, at) = match words.as_slice() {
            ["every", "day", "at", t] => (Days::Every, t),
            ["every", d, "at", t] => (Days::Weekday(weekday(d).ok_or_else(err)?), t),
            ["day", n, "of", "every", "month", "at", t] => {
                let n = n.parse::<i8>().ok().filter(|n| (1..=31).contains(n));
                (Days::DayOfMonth(n.ok_or_else(err)?), t)
            }
            [nth, d, "of", "every", "month", "at", t] => {
                let n = match *nth {
                    "first" => 1,
                    "second" => 2,
                    "third" => 3,
                    "fourth" => 4,
                    "last" => -1,
                    _ => return Err(err()),
                };
                (Days::NthWeekday(n, weekday(d).ok_or_else(err)?), t)
            }
            _ => return Err(err()),
        };
        let (hour, minute) = time(at).ok_or_else(err)?;
        Ok(Rule { days, hour, minute })
    }
}

impl Rule {
    fn runs_on(&self, d: Date) -> bool {
        match self.days {
            Days::Every => true,
            Days::Weekday(w) => d.weekday() == w,
            Days::NthWeekday(n, w) => d.nth_weekday_of_month(n, w).is_ok_and(|x| x == d),
            Days::DayOfMonth(n) => d.day() == n,
        }
    }

    /// The first occurrence strictly after `after`, in zone `tz`.
    pub fn next_after(&self, after: UnixMillis, tz: &TimeZone) -> Option<UnixMillis> {
        let ts = jiff::Timestamp::from_millisecond(i64::try_from(after.as_millis()).ok()?).ok()?;
        let mut day = ts.to_zoned_datetime(tz.clone()).date();
        // Every rule runs at least once in 31 days; a year is a safe bound.
        for _ in 0..400 {
            if self.runs_on(day) {
                let local = day.at(self.hour, self.minute, 0, 0);
                let at = local.to_zoned_datetime(tz.clone()).ok()?;
                let ms =
                    UnixMillis::from_millis(u64::try_from(at.timestamp().as_millisecond()).ok()?);
                if ms > after {
                    return Some(ms);
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> UnixMillis {
        let ts: jiff::Timestamp = text.parse().expect("RFC 3339");
        UnixMillis::from_millis(u64::try_from(ts.as_millisecond()).expect("after 1970"))
    }

    fn shanghai() -> TimeZone {
        TimeZone::get("Asia/Shanghai").expect("zone")
    }

    #[test]
    fn rules_parse_and_bad_ones_say_what_is_expected() {
        let r: Rule = "First Monday of every month at 10:00"
            .parse()
            .expect("rule");
        assert_eq!(r.days, Days::NthWeekday(1, Weekday::Monday));
        assert_eq!((r.hour, r.minute), (10, 0));
        assert_eq!(
            "every day at 03:30".parse::<Rule>().map(|r| r.days),
            Ok(Days::Every)
        );
        assert_eq!(
            "day 31 of every month at 23:59"
                .parse::<Rule>()
                .map(|r| r.days),
            Ok(Days::DayOfMonth(31))
        );
        for bad in [
            "",
            "every day",
            "every day at 24:00",
            "every day at 10:60",
            "every funday at 10:00",
            "fifth monday of every month at 10:00",
            "day 0 of every month at 10:00",
            "day 32 of every month at 10:00",
            "every day at 10:00:00",
        ] {
            let e = bad.parse::<Rule>().expect_err(bad);
            assert!(e.to_string().contains("is not a rule like"), "{e}");
        }
    }

    #[test]
    fn first_monday_of_the_month_in_shanghai() {
        let r: Rule = "first monday of every month at 10:00"
            .parse()
            .expect("rule");
        let tz = shanghai();
        // 2026-12-02 (a Wednesday): December's first Monday was the 7th.
        let next = r.next_after(ms("2026-12-02T08:00:00+08:00"), &tz);
        assert_eq!(next, Some(ms("2026-12-07T10:00:00+08:00")));
        // Exactly at an occurrence: the next one, a month on (2027-01-04 is a Monday).
        let after = r.next_after(ms("2026-12-07T10:00:00+08:00"), &tz);
        assert_eq!(after, Some(ms("2027-01-04T10:00:00+08:00")));
        // The same instant read in UTC is another local day: the zone decides.
        let utc = r.next_after(ms("2026-12-07T01:59:00Z"), &TimeZone::UTC);
        assert_eq!(utc, Some(ms("2026-12-07T10:00:00Z")));
    }

    #[test]
    fn last_weekday_day_of_month_weekly_and_daily() {
        let tz = shanghai();
        let last: Rule = "last friday of every month at 14:30".parse().expect("rule");
        assert_eq!(
            last.next_after(ms("2026-12-01T00:00:00+08:00"), &tz),
            Some(ms("2026-12-25T14:30:00+08:00"))
        );
        let d31: Rule = "day 31 of every month at 09:00".parse().expect("rule");
        // November has no 31st: December's.
        assert_eq!(
            d31.next_after(ms("2026-11-01T00:00:00+08:00"), &tz),
            Some(ms("2026-12-31T09:00:00+08:00"))
        );
        let weekly: Rule = "every sunday at 10:00".parse().expect("rule");
        assert_eq!(
            weekly.next_after(ms("2026-12-06T10:00:00+08:00"), &tz),
            Some(ms("2026-12-13T10:00:00+08:00"))
        );
        let daily: Rule = "every day at 03:00".parse().expect("rule");
        assert_eq!(
            daily.next_after(ms("2026-12-06T02:59:59+08:00"), &tz),
            Some(ms("2026-12-06T03:00:00+08:00"))
        );
    }

    #[test]
    fn a_time_skipped_by_daylight_saving_runs_after_the_gap() {
        let tz = TimeZone::get("Europe/Berlin").expect("zone");
        let r: Rule = "every day at 02:30".parse().expect("rule");
        // 2027-03-28: clocks jump from 02:00 to 03:00 in Berlin.
        assert_eq!(
            r.next_after(ms("2027-03-28T00:00:00+01:00"), &tz),
            Some(ms("2027-03-28T03:30:00+02:00"))
        );
    }

    #[test]
    fn entries_are_checked() {
        let tz = shanghai();
        let entry = ScheduleConfig {
            name: "monthly".into(),
            when: "first monday of every month at 10:00".into(),
            selector: Selector::default(),
            test: "silent".into(),
            deadline: Duration::from_secs(600),
        };
        let built = entry.build("s", Duration::from_secs(3600)).expect("valid");
        assert!(built.rule.next_after(UnixMillis::EPOCH, &tz).is_some());
        assert_eq!(built.spec.test.as_str(), "silent");
        let bad = ScheduleConfig {
            name: String::new(),
            when: "sometimes".into(),
            test: "no spaces".into(),
            deadline: Duration::from_secs(7200),
            ..entry
        };
        let p = bad
            .build("drills.schedule[0]", Duration::from_secs(3600))
            .expect_err("invalid");
        assert_eq!(p.len(), 4, "{p:?}");
        assert!(p[1].starts_with("drills.schedule[0].when"), "{p:?}");
    }
}
