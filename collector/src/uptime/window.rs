//! Report windows: half-open `[from, to)` ranges of collector time, calendar windows in the
//! configured time zone, the API/CLI window parameters, and instants as RFC 3339 text.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, DateTime, ISOWeekDate, Weekday};
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ToSpan};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use std::time::Duration;

use crate::model::UnixMillis;

/// The zone calendar windows and plain dates are read in when the config names none.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Shanghai";

/// The window of a request that names none: the last 30 days up to `now`.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(30 * DAY_S);

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const DAY_S: u64 = DAY_MS / SECOND_MS;
const WEEK_MS: u64 = 7 * DAY_MS;

/// A request parameter that could not be understood; `param` names it as the API and CLI
/// spell it (`from`, `to`, `since`, `day`, `week`, `month`, `year`, `by`, `tz`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad parameter `{param}` ({value:?}): {reason}")]
pub struct ParamError {
    pub param: &'static str,
    pub value: String,
    pub reason: String,
}

impl ParamError {
    pub fn new(param: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            param,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Looks up an IANA time zone (`Asia/Shanghai`, `Europe/Berlin`) in the system database.
pub fn time_zone(name: &str) -> Result<TimeZone, ParamError> {
    TimeZone::get(name).map_err(|e| ParamError::new("tz", name, e.to_string()))
}

/// A half-open range of collector time `[from, to)`, `from <= to`. Zero length is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    from: UnixMillis,
    to: UnixMillis,
}

impl Window {
    /// `[from, to)`; an error naming `to` when `to` is before `from`.
    pub fn new(from: UnixMillis, to: UnixMillis) -> Result<Self, ParamError> {
        if to < from {
            return Err(ParamError::new(
                "to",
                to.to_string(),
                format!("ends before `from` ({from})"),
            ));
        }
        Ok(Self { from, to })
    }

    /// The last `len` before `now` (starting at the epoch at the earliest).
    pub fn last(len: Duration, now: UnixMillis) -> Self {
        Self {
            from: now - len,
            to: now,
        }
    }

    /// The calendar `period` (day, ISO week starting Monday, month, year) in `tz` that
    /// contains the civil `date`. Its length follows the zone's clock: a Europe/Berlin
    /// October is 745 hours, a March 743.
    pub fn calendar(period: Period, date: Date, tz: &TimeZone) -> Result<Self, ParamError> {
        let bad = |e: jiff::Error| ParamError::new(period.param(), date.to_string(), e.to_string());
        let start = match period {
            Period::Day => date,
            Period::Week => date.iso_week_date().first_of_week().map_err(bad)?.date(),
            Period::Month => date.first_of_month(),
            Period::Year => date.first_of_year(),
        };
        let next = match period {
            Period::Day => start.checked_add(1.day()),
            Period::Week => start.checked_add(1.week()),
            Period::Month => start.checked_add(1.month()),
            Period::Year => start.checked_add(1.year()),
        }
        .map_err(bad)?;
        let from = start_of_day(period.param(), start, tz)?;
        let to = start_of_day(period.param(), next, tz)?;
        Self::new(from, to)
    }

    /// The calendar day in `tz` that contains the instant `ms`.
    pub fn day_of(ms: UnixMillis, tz: &TimeZone) -> Result<Self, ParamError> {
        let date = tz.to_datetime(timestamp(ms)).date();
        Self::calendar(Period::Day, date, tz)
    }

    pub fn from(&self) -> UnixMillis {
        self.from
    }

    pub fn to(&self) -> UnixMillis {
        self.to
    }

    pub fn len_ms(&self) -> u64 {
        self.to.millis_since(self.from)
    }

    /// Whether `[self)` and `[other)` share any instant.
    pub fn overlaps(&self, other: &Window) -> bool {
        self.from < other.to && other.from < self.to
    }
}

/// A calendar period for [`Window::calendar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Day,
    /// An ISO 8601 week: Monday 00:00 to the next Monday 00:00.
    Week,
    Month,
    Year,
}

impl Period {
    /// The request parameter that selects this period.
    pub fn param(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
            Period::Year => "year",
        }
    }
}

/// The window parameters of `GET /api/v1/uptime` and `alarmnet-collector uptime`, as given.
/// Exactly one way of choosing the window may be used:
///
/// - nothing: the last 30 days up to `now`;
/// - `since`: the last duration up to `now`: `30d`, `12h`, `90m`, `2w`, `1d12h` (units `s`,
///   `m`, `h`, `d` = 24 h, `w` = 7 d);
/// - `from` (and optionally `to`, default `now`): each an RFC 3339 time with offset
///   (`2026-10-01T08:00:00+08:00`, `...Z`), a local time in the zone
///   (`2026-10-01T08:00`), or a plain date (`2026-10-01`). A plain `from` date means the
///   start of that day in the zone; a plain `to` date is **inclusive**: it means the end
///   of that day (the start of the next), so `from=2026-10-01&to=2026-10-31` is October;
/// - `day` (`2026-10-01`), `week` (ISO, `2026-W40`), `month` (`2026-10`) or `year`
///   (`2026`): that calendar period in the zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WindowParams {
    pub since: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub day: Option<String>,
    pub week: Option<String>,
    pub month: Option<String>,
    pub year: Option<String>,
}

impl WindowParams {
    /// The window these parameters choose, reading dates in `tz`.
    pub fn resolve(&self, now: UnixMillis, tz: &TimeZone) -> Result<Window, ParamError> {
        let mut chosen: Option<&'static str> = None;
        for (param, given) in [
            ("since", self.since.is_some()),
            ("from", self.from.is_some() || self.to.is_some()),
            ("day", self.day.is_some()),
            ("week", self.week.is_some()),
            ("month", self.month.is_some()),
            ("year", self.year.is_some()),
        ] {
            if !given {
                continue;
            }
            if let Some(first) = chosen {
                let value = self.value_of(param);
                return Err(ParamError::new(
                    param,
                    value,
                    format!("cannot be combined with `{first}`: choose one way to give the window"),
                ));
            }
            chosen = Some(param);
        }
        match chosen {
            None => Ok(Window::last(DEFAULT_SINCE, now)),
            Some("since") => {
                let text = self.since.as_deref().unwrap_or_default();
                Ok(Window::last(parse_duration("since", text)?, now))
            }
            Some("from") => {
                let Some(from_text) = self.from.as_deref() else {
                    return Err(ParamError::new(
                        "from",
                        "",
                        "is required when `to` is given",
                    ));
                };
                let from = parse_instant("from", from_text, tz, DateMeans::StartOfDay)?;
                let to = match self.to.as_deref() {
                    Some(text) => parse_instant("to", text, tz, DateMeans::EndOfDay)?,
                    None => now,
                };
                if to < from {
                    return Err(ParamError::new(
                        "to",
                        self.to.clone().unwrap_or_else(|| "now".to_owned()),
                        format!("ends before `from` ({from_text})"),
                    ));
                }
                Window::new(from, to)
            }
            Some("day") => {
                let text = self.day.as_deref().unwrap_or_default();
                Window::calendar(Period::Day, parse_date("day", text)?, tz)
            }
            Some("week") => {
                let text = self.week.as_deref().unwrap_or_default();
                Window::calendar(Period::Week, parse_iso_week("week", text)?, tz)
            }
            Some("month") => {
                let text = self.month.as_deref().unwrap_or_default();
                Window::calendar(Period::Month, parse_month("month", text)?, tz)
            }
            Some(_) => {
                let text = self.year.as_deref().unwrap_or_default();
                Window::calendar(Period::Year, parse_year("year", text)?, tz)
            }
        }
    }

    fn value_of(&self, param: &str) -> String {
        let value = match param {
            "since" => &self.since,
            "from" => {
                if self.from.is_some() {
                    &self.from
                } else {
                    &self.to
                }
            }
            "day" => &self.day,
            "week" => &self.week,
            "month" => &self.month,
            _ => &self.year,
        };
        value.clone().unwrap_or_default()
    }
}

/// What a plain date means as a window bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateMeans {
    /// 00:00 of that day in the zone (a `from`).
    StartOfDay,
    /// 00:00 of the next day in the zone: the day is included (a `to`).
    EndOfDay,
}

/// Parses one window bound: RFC 3339 with offset, a local date-time in `tz`, or a plain
/// date (see [`DateMeans`]). Errors name `param`.
pub fn parse_instant(
    param: &'static str,
    text: &str,
    tz: &TimeZone,
    date_means: DateMeans,
) -> Result<UnixMillis, ParamError> {
    let text = text.trim();
    if let Ok(ts) = text.parse::<Timestamp>() {
        return to_millis(param, text, ts);
    }
    let looks_like_date = !text.contains(['T', 't', ' ']);
    if looks_like_date {
        let date = parse_date(param, text)?;
        let date = match date_means {
            DateMeans::StartOfDay => date,
            DateMeans::EndOfDay => date
                .tomorrow()
                .map_err(|e| ParamError::new(param, text, e.to_string()))?,
        };
        return start_of_day(param, date, tz);
    }
    match text.parse::<DateTime>() {
        Ok(dt) => {
            let zoned = dt
                .to_zoned_datetime(tz.clone())
                .map_err(|e| ParamError::new(param, text, e.to_string()))?;
            to_millis(param, text, zoned.timestamp())
        }
        Err(_) => Err(ParamError::new(
            param,
            text,
            "expected an RFC 3339 time (2026-10-01T08:00:00+08:00), a local time \
             (2026-10-01T08:00) or a date (2026-10-01)",
        )),
    }
}

/// `2026-10-01`.
pub fn parse_date(param: &'static str, text: &str) -> Result<Date, ParamError> {
    Date::from_str(text.trim())
        .map_err(|e| ParamError::new(param, text, format!("expected a date like 2026-10-01: {e}")))
}

/// `2026-10`: the first day of that month.
pub fn parse_month(param: &'static str, text: &str) -> Result<Date, ParamError> {
    let bad = || ParamError::new(param, text, "expected a month like 2026-10");
    let (year, month) = text.trim().split_once('-').ok_or_else(bad)?;
    if year.len() != 4 || month.len() != 2 {
        return Err(bad());
    }
    let year: i16 = year.parse().map_err(|_| bad())?;
    let month: i8 = month.parse().map_err(|_| bad())?;
    Date::new(year, month, 1).map_err(|_| bad())
}

/// `2026`: 1 January of that year.
pub fn parse_year(param: &'static str, text: &str) -> Result<Date, ParamError> {
    let bad = || ParamError::new(param, text, "expected a year like 2026");
    let text = text.trim();
    if text.len() != 4 {
        return Err(bad());
    }
    let year: i16 = text.parse().map_err(|_| bad())?;
    Date::new(year, 1, 1).map_err(|_| bad())
}

/// `2026-W40` (ISO 8601 week; `2026-W40-3` is accepted too): the Monday of that week.
pub fn parse_iso_week(param: &'static str, text: &str) -> Result<Date, ParamError> {
    let bad = || ParamError::new(param, text, "expected an ISO week like 2026-W40");
    let trimmed = text.trim();
    let (year, rest) = trimmed.split_once(['-']).ok_or_else(bad)?;
    let week = rest.strip_prefix(['W', 'w']).ok_or_else(bad)?;
    let week = week.split_once('-').map_or(week, |(w, _day)| w);
    if year.len() != 4 || week.len() != 2 {
        return Err(bad());
    }
    let year: i16 = year.parse().map_err(|_| bad())?;
    let week: i8 = week.parse().map_err(|_| bad())?;
    ISOWeekDate::new(year, week, Weekday::Monday)
        .map(|w| w.date())
        .map_err(|e| ParamError::new(param, text, format!("no such ISO week: {e}")))
}

/// A relative duration: one or more `<integer><unit>` with units `s`, `m`, `h`, `d` (24 h),
/// `w` (7 d), e.g. `30d`, `1d12h`. Errors name `param`.
pub fn parse_duration(param: &'static str, text: &str) -> Result<Duration, ParamError> {
    let bad = |why: &str| {
        ParamError::new(
            param,
            text,
            format!("{why}; expected a duration like 30d, 12h, 90m, 2w or 1d12h"),
        )
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u64 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("a number must come before each unit"));
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad("number too large"))?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let unit_ms = match unit {
            "s" => SECOND_MS,
            "m" => MINUTE_MS,
            "h" => HOUR_MS,
            "d" => DAY_MS,
            "w" => WEEK_MS,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        total = number
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| bad("too long"))?;
        rest = after.trim_start();
    }
    Ok(Duration::from_millis(total))
}

/// 00:00 of `date` in `tz` (or the first instant of the day when a DST jump skips
/// midnight).
fn start_of_day(param: &'static str, date: Date, tz: &TimeZone) -> Result<UnixMillis, ParamError> {
    let zoned = date
        .to_zoned_datetime(tz.clone())
        .and_then(|z| z.start_of_day())
        .map_err(|e| ParamError::new(param, date.to_string(), e.to_string()))?;
    to_millis(param, &date.to_string(), zoned.timestamp())
}

fn to_millis(param: &'static str, text: &str, ts: Timestamp) -> Result<UnixMillis, ParamError> {
    u64::try_from(ts.as_millisecond())
        .map(UnixMillis::from_millis)
        .map_err(|_| ParamError::new(param, text, "is before 1970-01-01T00:00:00Z"))
}

/// An instant shown in the configured zone: serializes as RFC 3339 with the zone's offset
/// at that instant, with milliseconds only when they are not zero
/// (`2026-10-01T00:00:00+08:00`, `2026-10-01T08:15:30.250+08:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    ms: UnixMillis,
    offset: Offset,
}

impl Stamp {
    pub fn new(ms: UnixMillis, tz: &TimeZone) -> Self {
        Self {
            ms,
            offset: tz.to_offset(timestamp(ms)),
        }
    }

    pub fn millis(&self) -> UnixMillis {
        self.ms
    }

    /// The zone's offset from UTC at this instant, in seconds.
    pub fn offset_seconds(&self) -> i32 {
        self.offset.seconds()
    }
}

fn timestamp(ms: UnixMillis) -> Timestamp {
    i64::try_from(ms.as_millis())
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::MAX)
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&timestamp(self.ms).display_with_offset(self.offset), f)
    }
}

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Stamp {
    type Err = ParamError;

    /// Reads the RFC 3339 text [`Stamp`] writes, keeping its offset.
    fn from_str(text: &str) -> Result<Self, ParamError> {
        let bad = |why: String| ParamError::new("time", text, why);
        let ts: Timestamp = text.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
        let pieces = jiff::fmt::temporal::Pieces::parse(text).map_err(|e| bad(e.to_string()))?;
        let offset = pieces
            .to_numeric_offset()
            .ok_or_else(|| bad("has no numeric offset".to_owned()))?;
        let ms = to_millis("time", text, ts)?;
        Ok(Self { ms, offset })
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
