//! Points in InfluxDB line protocol: a small builder with correct escaping, and one
//! constructor per measurement of the time-series schema.
//!
//! # Schema
//! Every measurement that concerns a node carries the tags `region`, `site`, `node`, `kind`.
//! Fields are numbers only (Prometheus-style stores keep string fields as 0). Within one
//! field name the type never changes, because InfluxDB refuses a field whose type differs
//! from what a shard already holds: agent metrics are always floats, everything else
//! (`seq`, `uptime_s`, `up`, `state_code`, `active`, `pass`, `duration_ms`, `firing`) is
//! always an integer (`1i`). Timestamps are milliseconds (the sink writes with `ms`
//! precision).
//!
//! | measurement | extra tags | fields | time |
//! |---|---|---|---|
//! | `alarmnet_heartbeat` | | each metric (float), `seq`, `uptime_s` | agent `ts` |
//! | `alarmnet_node_state` | `state`, `cause` | `up` 0/1, `state_code` ([`state_code`]) | collector |
//! | `alarmnet_fault` | `check`, `code`, `severity` | `active` 0/1 | agent `ts` |
//! | `alarmnet_test` | `test`, `result` | `pass` 0/1, `duration_ms`, each metric | agent `ts` |
//! | `alarmnet_alert` | `rule`, `severity`, `alert_id` + subject tags | `firing` 0/1 | collector |
//!
//! VictoriaMetrics names the resulting series `<measurement>_<field>`
//! (`alarmnet_heartbeat_battery_v`, `alarmnet_node_state_up`) and turns tags into labels.

use std::fmt::{self, Write as _};

use alarmnet_protocol::{
    AlertStatus, FaultStatus, Heartbeat, Name, NodeId, NodePath, RegionId, SiteId, TestReceipt,
    TestResult,
};

use crate::model::{Alert, Liveness, NodeInfo, Transition, UnixMillis};

/// The measurement of heartbeat telemetry.
pub const HEARTBEAT: &str = "alarmnet_heartbeat";
/// The measurement of liveness transitions.
pub const NODE_STATE: &str = "alarmnet_node_state";
/// The measurement of faults raised and cleared.
pub const FAULT: &str = "alarmnet_fault";
/// The measurement of self-test and drill receipts.
pub const TEST: &str = "alarmnet_test";
/// The measurement of alerts firing and resolved.
pub const ALERT: &str = "alarmnet_alert";
/// The measurement of readiness changes.
pub const READINESS: &str = "alarmnet_readiness";

/// The numeric code of a liveness state, stored as `state_code` so a dashboard can map
/// values to colours: 0 unknown, 1 online, 2 late, 3 offline, 4 stopped, 5 maintenance.
pub fn state_code(state: Liveness) -> i64 {
    match state {
        Liveness::Unknown => 0,
        Liveness::Online => 1,
        Liveness::Late => 2,
        Liveness::Offline => 3,
        Liveness::Stopped => 4,
        Liveness::Maintenance => 5,
    }
}

/// The tags every measurement about a node carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeTags {
    pub region: RegionId,
    pub site: SiteId,
    pub node: NodeId,
    pub kind: Name,
}

impl NodeTags {
    pub fn new(path: &NodePath, kind: &Name) -> Self {
        Self {
            region: path.region.clone(),
            site: path.site.clone(),
            node: path.node.clone(),
            kind: kind.clone(),
        }
    }

    fn apply(&self, b: PointBuilder) -> PointBuilder {
        b.tag("region", self.region.as_str())
            .tag("site", self.site.as_str())
            .tag("node", self.node.as_str())
            .tag("kind", self.kind.as_str())
    }
}

impl From<&NodeInfo> for NodeTags {
    fn from(info: &NodeInfo) -> Self {
        Self::new(&info.path, &info.kind)
    }
}

/// A point that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointError {
    #[error("measurement name is empty")]
    EmptyMeasurement,
    #[error("point of {measurement} has no field (line protocol needs at least one)")]
    NoFields { measurement: String },
}

/// One encoded line of line protocol (without the trailing newline).
#[derive(Clone, PartialEq, Eq)]
pub struct Point {
    line: String,
}

impl Point {
    /// Starts a point of `measurement`.
    pub fn builder(measurement: &str) -> PointBuilder {
        PointBuilder {
            measurement: measurement.to_owned(),
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// The encoded line, without a trailing newline.
    pub fn as_line(&self) -> &str {
        &self.line
    }

    /// A line used as given, for tests that need a line the database refuses. Newlines are
    /// replaced by spaces so one point stays one line.
    #[doc(hidden)]
    pub fn from_raw_line(line: &str) -> Self {
        Self {
            line: line.replace(['\n', '\r'], " "),
        }
    }

    /// `alarmnet_heartbeat` at the agent's `ts`: every metric as a float field, plus `seq`
    /// and `uptime_s` (when sent). A metric named `seq` or `uptime_s` is left out rather
    /// than overwrite those fields.
    pub fn heartbeat(tags: &NodeTags, hb: &Heartbeat) -> Self {
        let mut b = tags.apply(Point::builder(HEARTBEAT));
        for (name, value) in hb.metrics.iter() {
            if !matches!(name.as_str(), "seq" | "uptime_s") {
                b = b.field_f64(name.as_str(), value);
            }
        }
        b = b.field_i64("seq", saturating_i64(hb.seq));
        if let Some(uptime) = hb.uptime_s {
            b = b.field_i64("uptime_s", saturating_i64(uptime));
        }
        b.timestamp_ms(UnixMillis::from_millis(hb.ts))
            .build()
            .expect("a heartbeat point always has its seq field")
    }

    /// `alarmnet_node_state` at the collector's time of the transition.
    pub fn node_state(tags: &NodeTags, t: &Transition) -> Self {
        tags.apply(Point::builder(NODE_STATE))
            .tag("state", t.to.as_str())
            .tag("cause", t.cause.as_str())
            .field_i64("up", i64::from(t.to.is_up()))
            .field_i64("state_code", state_code(t.to))
            .timestamp_ms(t.at)
            .build()
            .expect("a node state point always has fields")
    }

    /// `alarmnet_readiness` at the collector's time of the change: `code` 2 ready, 1 degraded,
    /// 0 not ready, and `ready` 0/1; the state is a tag too (a small fixed set).
    pub fn readiness(tags: &NodeTags, c: &crate::readiness::ReadinessChange) -> Self {
        tags.apply(Point::builder(READINESS))
            .tag("state", c.to.as_str())
            .field_i64("code", i64::from(c.to.code()))
            .field_i64(
                "ready",
                i64::from(c.to == crate::readiness::Readiness::Ready),
            )
            .timestamp_ms(c.at)
            .build()
            .expect("a readiness point always has fields")
    }

    /// `alarmnet_fault` at the agent's `ts`: `active` is 1 when raised, 0 when cleared.
    pub fn fault(tags: &NodeTags, f: &alarmnet_protocol::Fault) -> Self {
        tags.apply(Point::builder(FAULT))
            .tag("check", f.check.as_str())
            .tag("code", f.code.as_str())
            .tag("severity", f.severity.as_str())
            .field_i64("active", i64::from(f.status == FaultStatus::Raised))
            .timestamp_ms(UnixMillis::from_millis(f.ts))
            .build()
            .expect("a fault point always has its active field")
    }

    /// `alarmnet_test` at the agent's `ts`: `pass` 0/1, `duration_ms` when sent, and the
    /// receipt's metrics as float fields (except any named `pass` or `duration_ms`).
    pub fn test(tags: &NodeTags, r: &TestReceipt) -> Self {
        let result = match r.result {
            TestResult::Pass => "pass",
            TestResult::Fail => "fail",
            TestResult::Error => "error",
        };
        let mut b = tags
            .apply(Point::builder(TEST))
            .tag("test", r.test.as_str())
            .tag("result", result)
            .field_i64("pass", i64::from(r.result == TestResult::Pass));
        if let Some(d) = r.duration_ms {
            b = b.field_i64("duration_ms", saturating_i64(d));
        }
        for (name, value) in r.metrics.iter() {
            if !matches!(name.as_str(), "pass" | "duration_ms") {
                b = b.field_f64(name.as_str(), value);
            }
        }
        b.timestamp_ms(UnixMillis::from_millis(r.ts))
            .build()
            .expect("a test point always has its pass field")
    }

    /// `alarmnet_alert` at the collector's time: `firing` 1 at `started_at`, 0 at `ended_at`
    /// once resolved. Tagged with the subject's `region`, `site`, `node` and the `kind`
    /// where the alert has them, and `alert_id` (the fingerprint), so two alerts of one rule
    /// on one node (two faults) stay two series.
    pub fn alert(a: &Alert) -> Self {
        let mut b = Point::builder(ALERT);
        if let Some(region) = a.subject.region() {
            b = b.tag("region", region.as_str());
        }
        if let Some(site) = a.subject.site() {
            b = b.tag("site", site.as_str());
        }
        if let Some(node) = a.subject.node() {
            b = b.tag("node", node.as_str());
        }
        if let Some(kind) = &a.kind {
            b = b.tag("kind", kind.as_str());
        }
        let (firing, at): (i64, UnixMillis) = match a.status {
            AlertStatus::Firing => (1, a.started_at),
            AlertStatus::Resolved => (0, a.ended_at.unwrap_or(a.started_at)),
        };
        b.tag("rule", a.rule.as_str())
            .tag("severity", a.severity.as_str())
            .tag("alert_id", &a.id.to_string())
            .field_i64("firing", firing)
            .timestamp_ms(at)
            .build()
            .expect("an alert point always has its firing field")
    }
}

impl fmt::Debug for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.line, f)
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

fn saturating_i64(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldValue {
    Float(f64),
    Int(i64),
}

/// Builds a [`Point`]. Tags with an empty value are left out (line protocol has no empty
/// tag values); float fields that are not finite are left out (line protocol has no NaN or
/// infinity); a later tag or field of the same key replaces the earlier one.
#[derive(Debug, Clone)]
pub struct PointBuilder {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(String, FieldValue)>,
    timestamp_ms: Option<UnixMillis>,
}

impl PointBuilder {
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        if key.is_empty() || value.is_empty() {
            return self;
        }
        self.tags.retain(|(k, _)| k != key);
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn field_f64(self, key: &str, value: f64) -> Self {
        if value.is_finite() {
            self.field(key, FieldValue::Float(value))
        } else {
            self
        }
    }

    pub fn field_i64(self, key: &str, value: i64) -> Self {
        self.field(key, FieldValue::Int(value))
    }

    fn field(mut self, key: &str, value: FieldValue) -> Self {
        if key.is_empty() {
            return self;
        }
        self.fields.retain(|(k, _)| k != key);
        self.fields.push((key.to_owned(), value));
        self
    }

    /// The point's time in milliseconds since the Unix epoch. Without it the database
    /// stamps the point on arrival, which a spooled point must never rely on.
    pub fn timestamp_ms(mut self, ms: UnixMillis) -> Self {
        self.timestamp_ms = Some(ms);
        self
    }

    pub fn build(mut self) -> Result<Point, PointError> {
        if self.measurement.is_empty() {
            return Err(PointError::EmptyMeasurement);
        }
        if self.fields.is_empty() {
            return Err(PointError::NoFields {
                measurement: self.measurement,
            });
        }
        // Sorted tags are what InfluxDB recommends (and stores) for series keys.
        self.tags.sort_by(|a, b| a.0.cmp(&b.0));
        let mut line = String::with_capacity(64 + 32 * (self.tags.len() + self.fields.len()));
        escape_into(&mut line, &self.measurement, &[',', ' ']);
        for (k, v) in &self.tags {
            line.push(',');
            escape_into(&mut line, k, &[',', '=', ' ']);
            line.push('=');
            escape_into(&mut line, v, &[',', '=', ' ']);
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            line.push(if i == 0 { ' ' } else { ',' });
            escape_into(&mut line, k, &[',', '=', ' ']);
            line.push('=');
            // Writing to a String cannot fail.
            let _ = match v {
                FieldValue::Float(x) => write!(line, "{x}"),
                FieldValue::Int(x) => write!(line, "{x}i"),
            };
        }
        if let Some(ts) = self.timestamp_ms {
            let _ = write!(line, " {ts}");
        }
        Ok(Point { line })
    }
}

/// Appends `s` with backslash escapes before `special` characters and before backslashes;
/// newlines (which line protocol cannot carry in names) become spaces, escaped.
fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AlertId, Cause, RuleKind, Subject};
    use alarmnet_protocol::{MetricName, Metrics, Severity, V1};

    fn tags() -> NodeTags {
        NodeTags {
            region: RegionId::new("lanzhou").expect("id"),
            site: SiteId::new("lz-cg").expect("id"),
            node: NodeId::new("lz-cg-s001").expect("id"),
            kind: Name::new("siren").expect("name"),
        }
    }

    const NODE: &str = "kind=siren,node=lz-cg-s001,region=lanzhou,site=lz-cg";

    #[test]
    fn escapes_measurement_tags_and_fields() {
        let p = Point::builder("my measure,x")
            .tag("tag key", "a=b,c d")
            .tag("back", "x\\")
            .tag("empty", "")
            .field_f64("f,1", 1.5)
            .field_f64("nan", f64::NAN)
            .field_i64("n=2", -3)
            .timestamp_ms(UnixMillis::from_millis(1_700_000_000_000))
            .build()
            .expect("valid");
        assert_eq!(
            p.as_line(),
            r"my\ measure\,x,back=x\\,tag\ key=a\=b\,c\ d f\,1=1.5,n\=2=-3i 1700000000000"
        );
    }

    #[test]
    fn newlines_never_split_a_point() {
        let p = Point::builder("m\nx")
            .tag("t", "a\nb")
            .field_i64("f", 1)
            .build()
            .expect("valid");
        assert!(!p.as_line().contains('\n'), "{p}");
        assert!(!Point::from_raw_line("a\nb").as_line().contains('\n'));
    }

    #[test]
    fn a_point_needs_a_field_and_a_name() {
        assert_eq!(
            Point::builder("m").tag("a", "b").build(),
            Err(PointError::NoFields {
                measurement: "m".into()
            })
        );
        assert_eq!(
            Point::builder("").field_i64("f", 1).build(),
            Err(PointError::EmptyMeasurement)
        );
        // A non-finite value is no field at all.
        assert!(
            Point::builder("m")
                .field_f64("f", f64::INFINITY)
                .build()
                .is_err()
        );
    }

    #[test]
    fn floats_keep_their_value_and_integers_their_suffix() {
        let p = Point::builder("m")
            .field_f64("a", 12.0)
            .field_f64("b", 1e-7)
            .field_f64("c", 1.25e20)
            .field_i64("d", i64::MIN)
            .build()
            .expect("valid");
        let fields = p.as_line().strip_prefix("m ").expect("no tags");
        let parsed: Vec<(&str, &str)> = fields
            .split(',')
            .map(|kv| kv.split_once('=').expect("k=v"))
            .collect();
        assert_eq!(parsed[0], ("a", "12"));
        assert_eq!(parsed[1].1.parse::<f64>(), Ok(1e-7));
        assert_eq!(parsed[2].1.parse::<f64>(), Ok(1.25e20));
        assert_eq!(parsed[3], ("d", "-9223372036854775808i"));
    }

    #[test]
    fn heartbeat_point() {
        let mut metrics = Metrics::new();
        metrics
            .insert(MetricName::new("battery_v").expect("name"), 12.5)
            .expect("metric");
        metrics
            .insert(MetricName::new("seq").expect("name"), 99.0)
            .expect("metric");
        let hb = Heartbeat {
            v: V1,
            boot: alarmnet_protocol::BootId::from_random(1),
            seq: 41,
            ts: 1_764_330_410_123,
            uptime_s: Some(86_400),
            metrics,
            checks: None,
            faults: None,
            replay: false,
        };
        assert_eq!(
            Point::heartbeat(&tags(), &hb).as_line(),
            format!(
                "alarmnet_heartbeat,{NODE} battery_v=12.5,seq=41i,uptime_s=86400i 1764330410123"
            )
        );
    }

    #[test]
    fn readiness_points_carry_code_and_ready() {
        use crate::readiness::{Readiness, ReadinessChange};
        for (to, tail) in [
            (Readiness::Ready, "state=ready code=2i,ready=1i 7"),
            (Readiness::Degraded, "state=degraded code=1i,ready=0i 7"),
            (Readiness::NotReady, "state=not_ready code=0i,ready=0i 7"),
        ] {
            let c = ReadinessChange {
                node: tags().node,
                from: None,
                to,
                reasons: Vec::new(),
                at: UnixMillis::from_millis(7),
            };
            assert_eq!(
                Point::readiness(&tags(), &c).as_line(),
                format!("alarmnet_readiness,{NODE},{tail}")
            );
        }
    }

    #[test]
    fn node_state_points_carry_code_and_up() {
        let t = Transition {
            node: tags().node,
            from: Liveness::Online,
            to: Liveness::Late,
            at: UnixMillis::from_millis(5),
            cause: Cause::Timeout,
        };
        assert_eq!(
            Point::node_state(&tags(), &t).as_line(),
            format!("alarmnet_node_state,cause=timeout,{NODE},state=late up=1i,state_code=2i 5")
        );
        let codes: Vec<i64> = [
            Liveness::Unknown,
            Liveness::Online,
            Liveness::Late,
            Liveness::Offline,
            Liveness::Stopped,
            Liveness::Maintenance,
        ]
        .into_iter()
        .map(state_code)
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn fault_and_test_points() {
        let f = alarmnet_protocol::Fault {
            v: V1,
            boot: alarmnet_protocol::BootId::from_random(1),
            seq: 1,
            ts: 7,
            check: Name::new("amplifier").expect("name"),
            code: Name::new("AMP_NO_OUTPUT").expect("name"),
            severity: Severity::Critical,
            status: FaultStatus::Cleared,
            message: None,
            replay: true,
        };
        assert_eq!(
            Point::fault(&tags(), &f).as_line(),
            "alarmnet_fault,check=amplifier,code=AMP_NO_OUTPUT,kind=siren,node=lz-cg-s001,\
             region=lanzhou,severity=critical,site=lz-cg active=0i 7"
        );
        let r = TestReceipt {
            v: V1,
            boot: alarmnet_protocol::BootId::from_random(1),
            seq: 2,
            ts: 9,
            drill: None,
            test: Name::new("silent").expect("name"),
            result: TestResult::Fail,
            duration_ms: Some(1500),
            metrics: Metrics::new(),
            message: None,
            replay: false,
        };
        assert_eq!(
            Point::test(&tags(), &r).as_line(),
            "alarmnet_test,kind=siren,node=lz-cg-s001,region=lanzhou,result=fail,site=lz-cg,\
             test=silent pass=0i,duration_ms=1500i 9"
        );
    }

    #[test]
    fn alert_points_firing_then_resolved() {
        let mut a = Alert {
            id: AlertId::new(0xf00d),
            rule: RuleKind::SiteOutage,
            severity: Severity::Major,
            status: AlertStatus::Firing,
            subject: Subject::Site {
                region: tags().region,
                site: tags().site,
            },
            kind: None,
            started_at: UnixMillis::from_millis(100),
            ended_at: None,
            summary: "half of the site is offline".into(),
            args: Default::default(),
            ack: None,
            notified: true,
        };
        assert_eq!(
            Point::alert(&a).as_line(),
            "alarmnet_alert,alert_id=000000000000f00d,region=lanzhou,rule=site_outage,severity=major,\
             site=lz-cg firing=1i 100"
        );
        a.status = AlertStatus::Resolved;
        a.ended_at = Some(UnixMillis::from_millis(200));
        assert!(Point::alert(&a).as_line().ends_with(" firing=0i 200"));
    }
}
