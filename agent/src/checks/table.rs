//! The table `alarmnet-agent check` prints: one line per check with its status, message and
//! metrics, in aligned columns for a technician's terminal.

use alarmnet_protocol::Name;

use crate::health::{CheckOutcome, Status};

/// The worst status of all results (`Ok` when there are none): the exit code of
/// `alarmnet-agent check`.
pub fn worst_status(results: &[(Name, CheckOutcome)]) -> Status {
    results
        .iter()
        .map(|(_, o)| o.status)
        .max()
        .unwrap_or(Status::Ok)
}

/// Columns `CHECK  STATUS  MESSAGE  METRICS`; the message is padded to the longest, the
/// metrics (`name=value`, space separated) come last so long lines only run on at the end.
pub fn render_table(results: &[(Name, CheckOutcome)]) -> String {
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|(name, o)| {
            let metrics: Vec<String> = o
                .metrics
                .iter()
                .map(|(n, v)| format!("{n}={}", format_value(*v)))
                .collect();
            [
                name.to_string(),
                o.status.as_str().to_owned(),
                o.message.replace(['\n', '\r', '\t'], " "),
                metrics.join(" "),
            ]
        })
        .collect();
    let header = ["CHECK", "STATUS", "MESSAGE", "METRICS"].map(str::to_owned);
    let width = |col: usize| {
        std::iter::once(&header)
            .chain(&rows)
            .map(|r| r[col].chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (col, w) in widths.iter().enumerate() {
            line.push_str(&row[col]);
            let pad = w - row[col].chars().count() + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        line.push_str(&row[3]);
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Whole numbers without a fraction, others with at most three decimals.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use alarmnet_protocol::MetricName;

    use super::*;

    fn outcome(status: Status, message: &str, metrics: &[(&str, f64)]) -> CheckOutcome {
        CheckOutcome {
            status,
            message: message.into(),
            metrics: metrics
                .iter()
                .map(|(n, v)| (MetricName::new(*n).expect("metric"), *v))
                .collect(),
        }
    }

    #[test]
    fn columns_line_up() {
        let results = vec![
            (
                Name::new("system").expect("name"),
                outcome(
                    Status::Ok,
                    "cpu 3.5 %",
                    &[("cpu_pct", 3.5), ("load1", 0.125)],
                ),
            ),
            (
                Name::new("siren-controller").expect("name"),
                outcome(Status::Critical, "127.0.0.1:502: refused\nmore", &[]),
            ),
            (
                Name::new("amp").expect("name"),
                outcome(Status::Unknown, "timed out after 10s", &[("w", 1.0 / 3.0)]),
            ),
        ];
        let table = render_table(&results);
        let expected = "\
CHECK             STATUS    MESSAGE                      METRICS
system            ok        cpu 3.5 %                    cpu_pct=3.5 load1=0.125
siren-controller  critical  127.0.0.1:502: refused more
amp               unknown   timed out after 10s          w=0.333
";
        assert_eq!(table, expected);
        assert_eq!(worst_status(&results), Status::Unknown);
        assert_eq!(worst_status(&results[..1]), Status::Ok);
        assert_eq!(worst_status(&[]), Status::Ok);
    }
}
