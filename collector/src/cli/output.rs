//! Tables (aligned or CSV) and cell formatting for the CLI.

use std::io::{self, Write};

use serde_json::Value;

/// Rows under headers.
#[derive(Debug, Default)]
pub(super) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Columns padded to their widest cell (by characters: CJK names stay readable if not
    /// perfectly aligned), two spaces apart, no trailing spaces.
    pub(super) fn write_aligned(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String], out: &mut dyn Write| -> io::Result<()> {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
            writeln!(out, "{}", text.trim_end())
        };
        line(&self.headers, out)?;
        for row in &self.rows {
            line(row, out)?;
        }
        Ok(())
    }

    /// RFC 4180: fields with a comma, quote or line break are quoted, quotes doubled. Text that
    /// a spreadsheet would run as a formula (starting with `= + - @`, a tab or a carriage
    /// return, and not a number) gets a leading `'`: names come from agents' births.
    pub(super) fn write_csv(&self, out: &mut dyn Write) -> io::Result<()> {
        let field = |s: &str| {
            let s = defuse_formula(s);
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.into_owned()
            }
        };
        let header: Vec<String> = self
            .headers
            .iter()
            .map(|h| field(&h.to_lowercase()))
            .collect();
        write!(out, "{}\r\n", header.join(","))?;
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| field(c)).collect();
            write!(out, "{}\r\n", cells.join(","))?;
        }
        Ok(())
    }
}

/// A JSON value as a cell: strings bare, null empty.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A percentage: 3 decimals in tables, unrounded in CSV; empty when null.
pub(super) fn pct(v: &Value, exact: bool) -> String {
    match v.as_f64() {
        Some(p) if exact => p.to_string(),
        Some(p) => format!("{p:.3}"),
        None => String::new(),
    }
}

/// Seconds as `2d3h04m`, `6h00m`, `4m05s`, `12s`; empty when null.
pub(super) fn human_duration(v: &Value) -> String {
    let Some(s) = v.as_f64() else {
        return String::new();
    };
    let total = s.round() as u64;
    let (d, h, m, sec) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if d > 0 {
        format!("{d}d{h}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{sec:02}s")
    } else {
        format!("{sec}s")
    }
}

/// `s`, with a `'` in front when a spreadsheet would take it for a formula.
pub(crate) fn defuse_formula(s: &str) -> std::borrow::Cow<'_, str> {
    let risky = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && s.parse::<f64>().is_err() {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_csv_quoting() {
        assert_eq!(human_duration(&json!(21600.0)), "6h00m");
        assert_eq!(human_duration(&json!(183_845)), "2d3h04m");
        assert_eq!(human_duration(&json!(245)), "4m05s");
        assert_eq!(human_duration(&Value::Null), "");
        let mut t = Table::new(&["A", "B"]);
        t.push(vec!["x,y".into(), "say \"hi\"".into()]);
        let mut out = Vec::new();
        t.write_csv(&mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "a,b\r\n\"x,y\",\"say \"\"hi\"\"\"\r\n"
        );
        let mut t = Table::new(&["A", "B", "C", "D"]);
        t.push(vec![
            "=HYPERLINK(\"http://x\",\"y\")".into(),
            "-12.5".into(),
            "@SUM(A1)".into(),
            "+1+1".into(),
        ]);
        let mut out = Vec::new();
        t.write_csv(&mut out).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "a,b,c,d\r\n\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",-12.5,'@SUM(A1),'+1+1\r\n"
        );
    }
}
