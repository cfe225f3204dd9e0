//! `alarmnet-collector readiness`: the live rollups by region (or by site with `--region`),
//! or, given a window, the share of time ready, degraded and not ready.

use std::io::Write;

use clap::Args;
use serde_json::Value;

use super::output::{Table, human_duration, pct, text};
use super::{CliError, Client, Format, Remote, WindowArgs, query};

#[derive(Debug, Clone, Args)]
pub struct ReadinessArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// One region: its sites instead of every region.
    #[arg(long)]
    pub region: Option<String>,
    /// Any window option asks for history over that window instead of the live rollup.
    #[command(flatten)]
    pub window: WindowArgs,
    /// History rows: `node`, `site`, `region` (default), `kind` or `network`.
    #[arg(long, default_value = "region")]
    pub by: String,
}

pub(super) async fn run(
    client: &Client,
    a: &ReadinessArgs,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    if a.window.given() {
        let by = Some(a.by.clone());
        let mut q = a.window.query();
        q.extend(query(&[("by", &by), ("region", &a.region)]));
        let report = client.get("/api/v1/readiness/history", &q).await?;
        return print_history(out, format, &report);
    }
    let q = query(&[("region", &a.region)]);
    let report = client.get("/api/v1/readiness", &q).await?;
    print_rollups(out, format, &report, a.region.is_some())
}

fn json_out(out: &mut dyn Write, v: &Value) -> Result<(), CliError> {
    let json = serde_json::to_string_pretty(v).map_err(|e| CliError::Protocol(e.to_string()))?;
    writeln!(out, "{json}")?;
    Ok(())
}

fn print_rollups(
    out: &mut dyn Write,
    format: Format,
    report: &Value,
    sites: bool,
) -> Result<(), CliError> {
    if format == Format::Json {
        return json_out(out, report);
    }
    let group = if sites { "SITE" } else { "REGION" };
    let mut t = Table::new(&[
        group,
        "READY_%",
        "SIRENS",
        "S_READY",
        "S_DEGRADED",
        "S_NOT_READY",
        "S_MAINT",
        "NODES",
        "READY",
        "DEGRADED",
        "NOT_READY",
        "MAINT",
    ]);
    let csv = format == Format::Csv;
    let mut row = |name: String, r: &Value| {
        let (s, n) = (&r["sirens"], &r["nodes"]);
        t.push(vec![
            name,
            pct(&r["ready_pct"], csv),
            text(&s["total"]),
            text(&s["ready"]),
            text(&s["degraded"]),
            text(&s["not_ready"]),
            text(&s["maintenance"]),
            text(&n["total"]),
            text(&n["ready"]),
            text(&n["degraded"]),
            text(&n["not_ready"]),
            text(&n["maintenance"]),
        ]);
    };
    let list = if sites { "sites" } else { "regions" };
    let key = if sites { "site" } else { "region" };
    for r in report[list].as_array().into_iter().flatten() {
        row(text(&r[key]), r);
    }
    if !sites {
        row("(network)".to_owned(), &report["network"]);
    }
    if csv {
        t.write_csv(out)?;
    } else {
        writeln!(out, "at {}", text(&report["at"]))?;
        t.write_aligned(out)?;
    }
    Ok(())
}

fn print_history(out: &mut dyn Write, format: Format, report: &Value) -> Result<(), CliError> {
    if format == Format::Json {
        return json_out(out, report);
    }
    let groups: &[&str] = match report["by"].as_str() {
        Some("node") => &["region", "site", "node", "kind"],
        Some("site") => &["region", "site"],
        Some("region") => &["region"],
        Some("kind") => &["kind"],
        _ => &[],
    };
    let mut headers: Vec<String> = groups.iter().map(|g| g.to_uppercase()).collect();
    headers.extend(
        [
            "NODES",
            "READY_%",
            "DEGRADED_%",
            "NOT_READY_%",
            "NOT_READY",
            "MAINT",
            "UNKNOWN",
        ]
        .map(str::to_owned),
    );
    let mut t = Table::new(&headers.iter().map(String::as_str).collect::<Vec<_>>());
    let csv = format == Format::Csv;
    let dur = |v: &Value| {
        if csv { text(v) } else { human_duration(v) }
    };
    for r in report["rows"].as_array().into_iter().flatten() {
        let mut cells: Vec<String> = groups.iter().map(|g| text(&r[*g])).collect();
        cells.extend([
            text(&r["nodes"]),
            pct(&r["ready_pct"], csv),
            pct(&r["degraded_pct"], csv),
            pct(&r["not_ready_pct"], csv),
            dur(&r["not_ready_s"]),
            dur(&r["maintenance_s"]),
            dur(&r["unknown_s"]),
        ]);
        t.push(cells);
    }
    if csv {
        t.write_csv(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "from {}  to {}",
        text(&report["from"]),
        text(&report["to"])
    )?;
    t.write_aligned(out)?;
    Ok(())
}
