//! Operator commands that talk to a running collector over its HTTP API:
//! `alarmnet-collector nodes | alerts | ack | silence (add|list|end) | uptime | readiness |
//! drill (start|list|show|cancel) | audit`.
//!
//! `--url` (or `ALARMNET_URL`) names the collector, the token comes from `ALARMNET_TOKEN`
//! (never a flag: command lines are visible to other users). Output is an aligned table by
//! default, or `--format json` (the API's items, every page) or `--format csv`.

mod drills;
mod output;
mod readiness;

#[cfg(test)]
mod tests;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use output::{Table, human_duration, pct, text};
pub use readiness::ReadinessArgs;

/// The environment variable holding the API token.
pub const TOKEN_ENV: &str = "ALARMNET_TOKEN";

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Where the collector is and how to print.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The collector's base URL.
    #[arg(long, env = "ALARMNET_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// PEM CA certificate(s) to trust for an `https://` URL (the network's CA from
    /// `alarmnet-collector pki`), besides the system's roots.
    #[arg(long, env = "ALARMNET_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The client subcommands; main.rs flattens them into its own.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// List nodes with their live state.
    Nodes(NodesArgs),
    /// List alerts (firing ones by default).
    Alerts(AlertsArgs),
    /// Acknowledge an alert (operator token).
    Ack(AckArgs),
    /// Maintenance windows: add, list, end.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Availability over a window, per node or rolled up.
    Uptime(UptimeArgs),
    /// Drills: start, list, show, cancel.
    #[command(subcommand)]
    Drill(drills::DrillCommand),
    /// Readiness by region (or site): live counts, or the share of time over a window.
    Readiness(ReadinessArgs),
    /// The audit log: operator actions, refusals and reloads, newest first (operator token).
    Audit(AuditArgs),
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// Entries of the last duration (`7d`, `12h`).
    #[arg(long)]
    pub since: Option<String>,
    /// From (RFC 3339, local date-time or date).
    #[arg(long, conflicts_with = "since")]
    pub from: Option<String>,
    /// Until (a plain date is inclusive); default now.
    #[arg(long, conflicts_with = "since")]
    pub to: Option<String>,
    /// The token name that acted.
    #[arg(long)]
    pub actor: Option<String>,
    /// `alert.ack`, `silence.add`, `silence.end`, `drill.start`, `drill.cancel`,
    /// `config.reload` or `write`.
    #[arg(long)]
    pub action: Option<String>,
    /// `success`, `refused` or `failed`.
    #[arg(long)]
    pub outcome: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct NodesArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    /// Comma-separated states, e.g. `offline,late`.
    #[arg(long)]
    pub state: Option<String>,
    /// Only nodes in this readiness state: `ready`, `degraded` or `not_ready`.
    #[arg(long)]
    pub readiness: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// `firing`, `resolved` or `all`.
    #[arg(long, default_value = "firing")]
    pub status: String,
    /// Comma-separated severities, e.g. `critical,major`.
    #[arg(long)]
    pub severity: Option<String>,
    #[arg(long)]
    pub rule: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub node: Option<String>,
    /// Alerts active in the last duration (`7d`, `12h`).
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct AckArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// The alert's id.
    pub id: String,
    #[arg(long)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum SilenceCommand {
    /// Create a silence (operator token); at least one of region, site, node, kind.
    Add(SilenceAddArgs),
    /// List silences (active and pending by default).
    List(SilenceListArgs),
    /// End a silence now (operator token).
    End(SilenceEndArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SilenceAddArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    /// Start (RFC 3339, local `2026-11-30T09:00`, or a date); default now.
    #[arg(long)]
    pub starts_at: Option<String>,
    /// End, like `--starts-at` (a plain date is inclusive).
    #[arg(long, conflicts_with = "duration")]
    pub ends_at: Option<String>,
    /// Length instead of `--ends-at`: `3h`, `1d12h`.
    #[arg(long)]
    pub duration: Option<String>,
    #[arg(long)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SilenceListArgs {
    #[command(flatten)]
    pub remote: Remote,
    /// `active`, `pending` or `expired` (default: active and pending).
    #[arg(long)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SilenceEndArgs {
    #[command(flatten)]
    pub remote: Remote,
    pub id: String,
}

/// A report window, as `/api/v1/uptime` and `/api/v1/readiness/history` read it.
#[derive(Debug, Clone, Args)]
pub struct WindowArgs {
    /// The last duration up to now: `30d`, `12h`, `1d12h`.
    #[arg(long)]
    pub since: Option<String>,
    /// Window start: RFC 3339, local date-time or date.
    #[arg(long)]
    pub from: Option<String>,
    /// Window end (a plain date is inclusive); default now.
    #[arg(long)]
    pub to: Option<String>,
    /// A calendar day: `2026-10-01`.
    #[arg(long)]
    pub day: Option<String>,
    /// An ISO week: `2026-W40`.
    #[arg(long)]
    pub week: Option<String>,
    /// A calendar month: `2026-10`.
    #[arg(long)]
    pub month: Option<String>,
    /// A calendar year: `2026`.
    #[arg(long)]
    pub year: Option<String>,
}

impl WindowArgs {
    /// The window's query parameters (only those given).
    pub(crate) fn query(&self) -> Vec<(String, String)> {
        query(&[
            ("since", &self.since),
            ("from", &self.from),
            ("to", &self.to),
            ("day", &self.day),
            ("week", &self.week),
            ("month", &self.month),
            ("year", &self.year),
        ])
    }

    /// Whether any window option was given.
    pub(crate) fn given(&self) -> bool {
        !self.query().is_empty()
    }
}

#[derive(Debug, Clone, Args)]
pub struct UptimeArgs {
    #[command(flatten)]
    pub remote: Remote,
    #[command(flatten)]
    pub window: WindowArgs,
    /// `node`, `site`, `region`, `kind` or `network`.
    #[arg(long, default_value = "node")]
    pub by: String,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    /// One node: its row lists its outages.
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
}

/// What went wrong talking to the collector.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the collector at {url}: {source}")]
    Connect { url: String, source: reqwest::Error },
    /// The API answered with an error.
    #[error("{status}: {message}")]
    Api { status: u16, message: String },
    #[error("unexpected answer from the collector: {0}")]
    Protocol(String),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("--ca-file {path}: {problem}")]
    CaFile { path: String, problem: String },
}

impl Command {
    fn remote(&self) -> &Remote {
        match self {
            Command::Nodes(a) => &a.remote,
            Command::Alerts(a) => &a.remote,
            Command::Ack(a) => &a.remote,
            Command::Silence(SilenceCommand::Add(a)) => &a.remote,
            Command::Silence(SilenceCommand::List(a)) => &a.remote,
            Command::Silence(SilenceCommand::End(a)) => &a.remote,
            Command::Uptime(a) => &a.remote,
            Command::Drill(d) => d.remote(),
            Command::Readiness(a) => &a.remote,
            Command::Audit(a) => &a.remote,
        }
    }
}

/// Runs one command, printing to stdout and errors to stderr. The token is read from
/// [`TOKEN_ENV`]. Exit codes: 0 done, 1 the collector refused or failed, 69 unreachable.
pub fn run(command: Command) -> ExitCode {
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("alarmnet-collector: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(execute(&command, token.as_deref(), &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alarmnet-collector: {e}");
            match e {
                CliError::Connect { .. } => ExitCode::from(69),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Runs one command against the collector, writing the result to `out`.
pub async fn execute(
    command: &Command,
    token: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let remote = command.remote();
    let client = Client::new(&remote.url, token, remote.ca_file.as_deref())?;
    let format = remote.format;
    match command {
        Command::Nodes(a) => {
            let q = query(&[
                ("region", &a.region),
                ("site", &a.site),
                ("kind", &a.kind),
                ("state", &a.state),
                ("readiness", &a.readiness),
            ]);
            let items = client.all_pages("/api/v1/nodes", &q).await?;
            print_list(out, format, &items, node_table)
        }
        Command::Alerts(a) => {
            let status = (a.status != "all").then(|| a.status.clone());
            let q = query(&[
                ("status", &status),
                ("severity", &a.severity),
                ("rule", &a.rule),
                ("region", &a.region),
                ("site", &a.site),
                ("node", &a.node),
                ("since", &a.since),
            ]);
            let items = client.all_pages("/api/v1/alerts", &q).await?;
            print_list(out, format, &items, alert_table)
        }
        Command::Ack(a) => {
            let body = match &a.comment {
                Some(c) => json!({"comment": c}),
                None => json!({}),
            };
            let path = format!("/api/v1/alerts/{}/ack", urlencode(&a.id));
            let alert = client
                .send(reqwest::Method::POST, &path, Some(body))
                .await?;
            print_one(out, format, alert, alert_table)
        }
        Command::Silence(SilenceCommand::Add(a)) => {
            let mut body = serde_json::Map::new();
            for (k, v) in [
                ("region", &a.region),
                ("site", &a.site),
                ("node", &a.node),
                ("kind", &a.kind),
                ("starts_at", &a.starts_at),
                ("ends_at", &a.ends_at),
                ("duration", &a.duration),
                ("comment", &a.comment),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            let s = client
                .send(
                    reqwest::Method::POST,
                    "/api/v1/silences",
                    Some(Value::Object(body)),
                )
                .await?;
            print_one(out, format, s, silence_table)
        }
        Command::Silence(SilenceCommand::List(a)) => {
            let items = client
                .all_pages("/api/v1/silences", &query(&[("status", &a.status)]))
                .await?;
            print_list(out, format, &items, silence_table)
        }
        Command::Silence(SilenceCommand::End(a)) => {
            let path = format!("/api/v1/silences/{}", urlencode(&a.id));
            let s = client.send(reqwest::Method::DELETE, &path, None).await?;
            print_one(out, format, s, silence_table)
        }
        Command::Uptime(a) => {
            let by = Some(a.by.clone());
            let mut q = a.window.query();
            q.extend(query(&[
                ("by", &by),
                ("region", &a.region),
                ("site", &a.site),
                ("node", &a.node),
                ("kind", &a.kind),
            ]));
            let report = client.get("/api/v1/uptime", &q).await?;
            print_uptime(out, format, &report)
        }
        Command::Drill(d) => drills::execute(d, &client, format, out).await,
        Command::Readiness(a) => readiness::run(&client, a, format, out).await,
        Command::Audit(a) => {
            let q = query(&[
                ("since", &a.since),
                ("from", &a.from),
                ("to", &a.to),
                ("actor", &a.actor),
                ("action", &a.action),
                ("outcome", &a.outcome),
            ]);
            let items = client.all_pages("/api/v1/audit", &q).await?;
            print_list(out, format, &items, audit_table)
        }
    }
}

fn query(pairs: &[(&str, &Option<String>)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| ((*k).to_owned(), v.clone())))
        .collect()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(
        url: &str,
        token: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, CliError> {
        let mut http = reqwest::Client::builder();
        if let Some(path) = ca_file {
            let ca_error = |problem: String| CliError::CaFile {
                path: path.display().to_string(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_error("no CERTIFICATE in the file".into()));
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        Ok(Self {
            http: http
                .build()
                .map_err(|e| CliError::Protocol(format!("http client: {e}")))?,
            base: url.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        })
    }

    async fn request(&self, req: reqwest::RequestBuilder) -> Result<Value, CliError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let response = req.send().await.map_err(|source| CliError::Connect {
            url: self.base.clone(),
            source,
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| CliError::Protocol(e.to_string()))?;
        let body: Value = serde_json::from_str(&text)
            .map_err(|_| CliError::Protocol(format!("{status}: {}", text.trim())))?;
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .map_or_else(|| text.trim().to_owned(), str::to_owned);
        Err(CliError::Api {
            status: status.as_u16(),
            message,
        })
    }

    async fn get(&self, path: &str, query: &[(String, String)]) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        self.request(self.http.get(url).query(query)).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.request(req).await
    }

    /// Every item of a paginated list, following `next_cursor`.
    async fn all_pages(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<Value>, CliError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            q.push(("limit".into(), "1000".into()));
            if let Some(c) = &cursor {
                q.push(("cursor".into(), c.clone()));
            }
            let page = self.get(path, &q).await?;
            let Some(list) = page["items"].as_array() else {
                return Err(CliError::Protocol(format!(
                    "{path}: no items in the answer"
                )));
            };
            items.extend(list.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) if !list.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }
}

fn print_one(
    out: &mut dyn Write,
    format: Format,
    item: Value,
    table: fn(&[Value]) -> Table,
) -> Result<(), CliError> {
    if format == Format::Json {
        let json =
            serde_json::to_string_pretty(&item).map_err(|e| CliError::Protocol(e.to_string()))?;
        writeln!(out, "{json}")?;
        return Ok(());
    }
    print_list(out, format, &[item], table)
}

fn print_list(
    out: &mut dyn Write,
    format: Format,
    items: &[Value],
    table: fn(&[Value]) -> Table,
) -> Result<(), CliError> {
    match format {
        Format::Json => {
            let json = serde_json::to_string_pretty(items)
                .map_err(|e| CliError::Protocol(e.to_string()))?;
            writeln!(out, "{json}")?;
        }
        Format::Csv => table(items).write_csv(out)?,
        Format::Table => table(items).write_aligned(out)?,
    }
    Ok(())
}

fn node_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "NODE",
        "REGION",
        "SITE",
        "KIND",
        "STATE",
        "READINESS",
        "SINCE",
        "LAST_SEEN",
        "FAULTS",
        "NAME",
    ]);
    for n in items {
        t.push(vec![
            text(&n["node"]),
            text(&n["region"]),
            text(&n["site"]),
            text(&n["kind"]),
            text(&n["state"]),
            text(&n["readiness"]["state"]),
            text(&n["since"]),
            text(&n["last_seen"]),
            text(&n["faults"]),
            text(&n["name"]),
        ]);
    }
    t
}

fn alert_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID", "SEVERITY", "STATUS", "RULE", "SUBJECT", "STARTED", "ENDED", "ACK", "SUMMARY",
    ]);
    for a in items {
        let subject = ["node", "site", "region"]
            .iter()
            .find_map(|k| a[*k].as_str())
            .unwrap_or("network");
        t.push(vec![
            text(&a["id"]),
            text(&a["severity"]),
            text(&a["status"]),
            text(&a["rule"]),
            subject.to_owned(),
            text(&a["started_at"]),
            text(&a["ended_at"]),
            text(&a["ack"]["by"]),
            text(&a["summary"]),
        ]);
    }
    t
}

fn silence_table(items: &[Value]) -> Table {
    let mut t = Table::new(&["ID", "STATUS", "MATCHES", "STARTS", "ENDS", "BY", "COMMENT"]);
    for s in items {
        let matches: Vec<String> = ["region", "site", "node", "kind"]
            .iter()
            .filter_map(|k| s[*k].as_str().map(|v| format!("{k}={v}")))
            .collect();
        t.push(vec![
            text(&s["id"]),
            text(&s["status"]),
            matches.join(","),
            text(&s["starts_at"]),
            text(&s["ends_at"]),
            text(&s["created_by"]),
            text(&s["comment"]),
        ]);
    }
    t
}

fn audit_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "AT", "ACTOR", "ROLE", "PEER", "ACTION", "TARGET", "OUTCOME", "STATUS", "MESSAGE",
    ]);
    for e in items {
        t.push(vec![
            text(&e["at"]),
            text(&e["actor"]),
            text(&e["role"]),
            text(&e["peer"]),
            text(&e["action"]),
            text(&e["target"]),
            text(&e["outcome"]),
            text(&e["status"]),
            text(&e["detail"]["message"]),
        ]);
    }
    t
}

fn print_uptime(out: &mut dyn Write, format: Format, report: &Value) -> Result<(), CliError> {
    if format == Format::Json {
        let json =
            serde_json::to_string_pretty(report).map_err(|e| CliError::Protocol(e.to_string()))?;
        writeln!(out, "{json}")?;
        return Ok(());
    }
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
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
            "AVAIL_%",
            "COVERAGE_%",
            "DOWNTIME",
            "MAINT",
            "UNKNOWN",
            "OUTAGES",
            "LONGEST",
            "MTTR",
            "MTBF",
            "TESTS",
            "TEST_PASS_%",
        ]
        .map(str::to_owned),
    );
    let mut t = Table::new(&headers.iter().map(String::as_str).collect::<Vec<_>>());
    let csv = format == Format::Csv;
    // Seconds stay numbers in CSV (for spreadsheets); tables read as durations.
    let dur = |v: &Value| {
        if csv { text(v) } else { human_duration(v) }
    };
    for r in &rows {
        let mut cells: Vec<String> = groups.iter().map(|g| text(&r[*g])).collect();
        cells.extend([
            text(&r["nodes"]),
            pct(&r["availability_pct"], csv),
            pct(&r["coverage_pct"], csv),
            dur(&r["downtime_s"]),
            dur(&r["maintenance_s"]),
            dur(&r["unknown_s"]),
            text(&r["outages"]),
            dur(&r["longest_outage_s"]),
            dur(&r["mttr_s"]),
            dur(&r["mtbf_s"]),
            text(&r["tests"]),
            pct(&r["test_pass_pct"], csv),
        ]);
        t.push(cells);
    }
    if csv {
        t.write_csv(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "from {}  to {}  (figures until {})",
        text(&report["from"]),
        text(&report["to"]),
        text(&report["until"])
    )?;
    t.write_aligned(out)?;
    for r in &rows {
        let Some(list) = r["outage_list"].as_array() else {
            continue;
        };
        writeln!(out, "\noutages of {}:", text(&r["node"]))?;
        let mut o = Table::new(&["START", "END", "DURATION", "CAUSE"]);
        for x in list {
            o.push(vec![
                text(&x["start"]),
                if x["end"].is_null() {
                    "ongoing".to_owned()
                } else {
                    text(&x["end"])
                },
                human_duration(&x["duration_s"]),
                text(&x["cause"]),
            ]);
        }
        o.write_aligned(out)?;
    }
    Ok(())
}
