//! `alarmnet-collector drill start | list | show | cancel`.

use std::io::Write;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{Table, text};
use super::{CliError, Client, Format, Remote, print_list, print_one, query, urlencode};

#[derive(Debug, Clone, Subcommand)]
pub enum DrillCommand {
    /// Start a drill on a selector (operator token); `--dry-run` only counts the nodes.
    Start(DrillStartArgs),
    /// List drills, newest first.
    List(DrillListArgs),
    /// A drill's tally, sounding rate and per-node results.
    Show(DrillShowArgs),
    /// Cancel an open drill (operator token).
    Cancel(DrillIdArgs),
}

impl DrillCommand {
    pub(super) fn remote(&self) -> &Remote {
        match self {
            DrillCommand::Start(a) => &a.remote,
            DrillCommand::List(a) => &a.remote,
            DrillCommand::Show(a) => &a.remote,
            DrillCommand::Cancel(a) => &a.remote,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct DrillStartArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    /// Comma-separated node ids.
    #[arg(long)]
    pub nodes: Option<String>,
    /// The test kind (default `silent`).
    #[arg(long)]
    pub test: Option<String>,
    /// How long to wait for receipts: `10m`, `1h`.
    #[arg(long)]
    pub deadline: Option<String>,
    /// Count the nodes that would be asked; start nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DrillListArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// `open`, `completed`, `expired` or `cancelled`.
    #[arg(long)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DrillShowArgs {
    #[command(flatten)]
    pub remote: Remote,
    pub id: String,
    /// Comma-separated outcomes to list: `fail,error,silent`.
    #[arg(long)]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DrillIdArgs {
    #[command(flatten)]
    pub remote: Remote,
    pub id: String,
}

pub(super) async fn execute(
    command: &DrillCommand,
    client: &Client,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        DrillCommand::Start(a) => {
            let mut selector = serde_json::Map::new();
            for (k, v) in [("region", &a.region), ("site", &a.site), ("kind", &a.kind)] {
                if let Some(v) = v {
                    selector.insert(k.into(), json!(v));
                }
            }
            if let Some(nodes) = &a.nodes {
                let list: Vec<&str> = nodes
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                selector.insert("nodes".into(), json!(list));
            }
            let mut body = json!({"selector": selector, "dry_run": a.dry_run});
            for (k, v) in [("test", &a.test), ("deadline", &a.deadline)] {
                if let (Some(v), Value::Object(m)) = (v, &mut body) {
                    m.insert(k.into(), json!(v));
                }
            }
            let answer = client
                .send(reqwest::Method::POST, "/api/v1/drills", Some(body))
                .await?;
            if a.dry_run {
                if format == Format::Json {
                    print_one(out, format, answer, drill_table)
                } else {
                    writeln!(out, "{} nodes would be asked", text(&answer["selected"]))?;
                    Ok(())
                }
            } else {
                print_one(out, format, answer, drill_table)
            }
        }
        DrillCommand::List(a) => {
            let items = client
                .all_pages("/api/v1/drills", &query(&[("status", &a.status)]))
                .await?;
            print_list(out, format, &items, drill_table)
        }
        DrillCommand::Show(a) => {
            let path = format!("/api/v1/drills/{}", urlencode(&a.id));
            let q = query(&[("outcome", &a.outcome)]);
            let first = client.get(&path, &[("limit".into(), "1".into())]).await?;
            let results = client.all_pages(&path, &q).await?;
            let drill = first["drill"].clone();
            match format {
                Format::Json => {
                    let all = json!({"drill": drill, "results": results});
                    let text = serde_json::to_string_pretty(&all)
                        .map_err(|e| CliError::Protocol(e.to_string()))?;
                    writeln!(out, "{text}")?;
                    Ok(())
                }
                Format::Csv => result_table(&results).write_csv(out).map_err(Into::into),
                Format::Table => {
                    let t = &drill["tally"];
                    writeln!(
                        out,
                        "drill {}  {}  test {}  started {} by {}  deadline {}",
                        text(&drill["id"]),
                        text(&drill["status"]),
                        text(&drill["test"]),
                        text(&drill["started_at"]),
                        text(&drill["started_by"]),
                        text(&drill["deadline"]),
                    )?;
                    writeln!(
                        out,
                        "asked {}  passed {}  failed {}  errored {}  silent {}  late {}  waiting {}  sounding rate {} %",
                        text(&t["asked"]),
                        text(&t["passed"]),
                        text(&t["failed"]),
                        text(&t["errored"]),
                        text(&t["silent"]),
                        text(&t["late"]),
                        text(&t["waiting"]),
                        text(&drill["sounding_rate_pct"]),
                    )?;
                    writeln!(out)?;
                    result_table(&results).write_aligned(out)?;
                    Ok(())
                }
            }
        }
        DrillCommand::Cancel(a) => {
            let path = format!("/api/v1/drills/{}/cancel", urlencode(&a.id));
            let d = client.send(reqwest::Method::POST, &path, None).await?;
            print_one(out, format, d, drill_table)
        }
    }
}

fn drill_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "STATUS",
        "TEST",
        "STARTED",
        "BY",
        "ASKED",
        "PASSED",
        "FAILED",
        "ERRORED",
        "SILENT",
        "LATE",
        "WAITING",
        "SOUNDING_PCT",
    ]);
    for d in items {
        let n = &d["tally"];
        t.push(vec![
            text(&d["id"]),
            text(&d["status"]),
            text(&d["test"]),
            text(&d["started_at"]),
            text(&d["started_by"]),
            text(&n["asked"]),
            text(&n["passed"]),
            text(&n["failed"]),
            text(&n["errored"]),
            text(&n["silent"]),
            text(&n["late"]),
            text(&n["waiting"]),
            text(&d["sounding_rate_pct"]),
        ]);
    }
    t
}

fn result_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "NODE",
        "REGION",
        "SITE",
        "KIND",
        "OUTCOME",
        "RESULT",
        "RECEIVED",
        "DURATION_MS",
        "MESSAGE",
    ]);
    for r in items {
        t.push(vec![
            text(&r["node"]),
            text(&r["region"]),
            text(&r["site"]),
            text(&r["kind"]),
            text(&r["outcome"]),
            text(&r["result"]),
            text(&r["received_at"]),
            text(&r["duration_ms"]),
            text(&r["message"]),
        ]);
    }
    t
}
