//! The CLI against a running API (the API tests' server and data).

use clap::Parser;
use serde_json::Value;

use super::*;
use crate::api::tests::{OPERATOR, Server, VIEWER};

/// The commands as main.rs mounts them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

async fn run_cli(s: &Server, args: &[&str], token: Option<&str>) -> Result<String, CliError> {
    let url = format!("http://{}", s.addr);
    let mut argv = vec!["alarmnet-collector"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--url", &url]);
    let cli = Cli::try_parse_from(argv).expect("valid command line");
    let mut out = Vec::new();
    execute(&cli.command, token, &mut out).await?;
    Ok(String::from_utf8(out).expect("utf-8"))
}

#[tokio::test]
async fn nodes_as_table_json_and_csv() {
    let s = Server::start(false).await;
    let table = run_cli(&s, &["nodes", "--region", "lanzhou"], Some(VIEWER))
        .await
        .expect("nodes");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("NODE        REGION   SITE   KIND     STATE"),
        "{table}"
    );
    // Columns line up: STATE starts at the same place on every line.
    let col = lines[0].find("STATE").expect("header");
    assert!(
        lines.iter().skip(1).all(|l| l[col..].starts_with("online")),
        "{table}"
    );

    let json = run_cli(
        &s,
        &["nodes", "--state", "offline", "--format", "json"],
        Some(VIEWER),
    )
    .await
    .expect("json");
    let v: Value = serde_json::from_str(&json).expect("json output");
    assert_eq!(v.as_array().map(Vec::len), Some(1));
    assert_eq!(v[0]["node"], "ts-a-s001");

    let csv = run_cli(&s, &["nodes", "--format", "csv"], Some(VIEWER))
        .await
        .expect("csv");
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 5, "{csv}");
    assert!(rows[0].starts_with("node,region,site,kind,state"), "{csv}");
    assert!(
        rows[4].starts_with("ts-a-s001,tianshui,ts-a,siren,offline,"),
        "{csv}"
    );

    // Without a token the collector refuses, and the message says why.
    let err = run_cli(&s, &["nodes"], None).await.expect_err("refused");
    assert!(matches!(err, CliError::Api { status: 401, .. }), "{err}");
}

#[tokio::test]
async fn ack_and_alerts() {
    let s = Server::start(false).await;
    let err = run_cli(&s, &["ack", "000000000000a005"], Some(VIEWER))
        .await
        .expect_err("viewer");
    assert!(err.to_string().contains("operator"), "{err}");
    let out = run_cli(
        &s,
        &[
            "ack",
            "000000000000a005",
            "--comment",
            "on the way",
            "--format",
            "json",
        ],
        Some(OPERATOR),
    )
    .await
    .expect("ack");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["ack"]["comment"], "on the way");
    let table = run_cli(&s, &["alerts"], Some(VIEWER))
        .await
        .expect("alerts");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].starts_with("000000000000a005") && lines[1].contains("ops-desk-1"),
        "{table}"
    );
    let all = run_cli(
        &s,
        &["alerts", "--status", "all", "--format", "csv"],
        Some(VIEWER),
    )
    .await
    .expect("all");
    assert_eq!(all.matches("\r\n").count(), 4, "{all}");
}

#[tokio::test]
async fn silences_add_list_end() {
    let s = Server::start(false).await;
    let out = run_cli(
        &s,
        &[
            "silence",
            "add",
            "--site",
            "ts-a",
            "--duration",
            "2h",
            "--comment",
            "mast, paint",
            "--format",
            "json",
        ],
        Some(OPERATOR),
    )
    .await
    .expect("add");
    let created: Value = serde_json::from_str(&out).expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let list = run_cli(&s, &["silence", "list"], Some(VIEWER))
        .await
        .expect("list");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("site=ts-a")),
        "{list}"
    );
    let ended = run_cli(&s, &["silence", "end", &id], Some(OPERATOR))
        .await
        .expect("end");
    assert!(
        ended.lines().nth(1).is_some_and(|l| l.contains("expired")),
        "{ended}"
    );
    let csv = run_cli(
        &s,
        &["silence", "list", "--status", "expired", "--format", "csv"],
        Some(VIEWER),
    )
    .await
    .expect("csv");
    assert!(csv.contains("\"mast, paint\""), "{csv}");
}

#[tokio::test]
async fn uptime_report_by_site_and_for_one_node() {
    let s = Server::start(false).await;
    let table = run_cli(
        &s,
        &[
            "uptime", "--month", "2026-10", "--by", "site", "--region", "lanzhou",
        ],
        Some(VIEWER),
    )
    .await
    .expect("uptime");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("from 2026-10-01T00:00:00+08:00"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("REGION   SITE   NODES  AVAIL_%"),
        "{table}"
    );
    // 1482 of 1488 node-hours up; 2 of 3 tests passed.
    assert!(
        lines[2].contains("99.597") && lines[2].contains("6h00m"),
        "{table}"
    );
    assert!(lines[1].ends_with("TESTS  TEST_PASS_%"), "{table}");
    let last: Vec<&str> = lines[2].split_whitespace().rev().take(2).collect();
    assert_eq!(last, ["66.667", "3"], "{table}");
    let node = run_cli(
        &s,
        &[
            "uptime",
            "--from",
            "2026-10-01",
            "--to",
            "2026-10-31",
            "--node",
            "lz-cg-s001",
        ],
        Some(VIEWER),
    )
    .await
    .expect("node");
    assert!(node.contains("outages of lz-cg-s001:"), "{node}");
    assert!(
        node.contains("2026-10-10T00:00:00+08:00  2026-10-10T06:00:00+08:00  6h00m"),
        "{node}"
    );
    let csv = run_cli(
        &s,
        &[
            "uptime", "--month", "2026-10", "--by", "region", "--format", "csv",
        ],
        Some(VIEWER),
    )
    .await
    .expect("csv");
    assert!(csv.starts_with("region,nodes,avail_%"), "{csv}");
    assert!(csv.contains("\r\ntianshui,1,100,"), "{csv}");
    assert!(csv.contains(",3,66.66666666666667\r\n"), "{csv}");
    let err = run_cli(&s, &["uptime", "--month", "2026-13"], Some(VIEWER))
        .await
        .expect_err("bad month");
    assert!(
        matches!(&err, CliError::Api { status: 400, message } if message.contains("month")),
        "{err}"
    );
}

#[tokio::test]
async fn drills_start_list_show_and_cancel() {
    let s = Server::start(false).await;
    let dry = run_cli(
        &s,
        &["drill", "start", "--region", "lanzhou", "--dry-run"],
        Some(OPERATOR),
    )
    .await
    .expect("dry run");
    assert_eq!(dry.trim(), "3 nodes would be asked");
    let err = run_cli(&s, &["drill", "start"], Some(VIEWER))
        .await
        .expect_err("viewer");
    assert!(matches!(err, CliError::Api { status: 403, .. }), "{err}");
    let err = run_cli(
        &s,
        &["drill", "start", "--nodes", "lz-cg-s001,nope"],
        Some(OPERATOR),
    )
    .await
    .expect_err("unknown node");
    assert!(
        matches!(&err, CliError::Api { status: 400, message } if message.contains("nope")),
        "{err}"
    );
    let started = run_cli(
        &s,
        &[
            "drill",
            "start",
            "--kind",
            "siren",
            "--deadline",
            "5m",
            "--format",
            "json",
        ],
        Some(OPERATOR),
    )
    .await
    .expect("start");
    let v: Value = serde_json::from_str(&started).expect("json");
    let id = v["id"].as_str().expect("id").to_owned();
    assert_eq!(v["tally"]["asked"], 3);

    let list = run_cli(&s, &["drill", "list", "--status", "open"], Some(VIEWER))
        .await
        .expect("list");
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("ID "), "{list}");
    assert!(lines[1].starts_with(&id), "newest first: {list}");
    assert_eq!(lines.len(), 3, "the new and the seeded drill: {list}");

    let shown = run_cli(&s, &["drill", "show", &id], Some(VIEWER))
        .await
        .expect("show");
    assert!(
        shown.contains(
            "asked 3  passed 0  failed 0  errored 0  silent 0  late 0  waiting 3  sounding rate 0.0 %"
        ),
        "{shown}"
    );
    assert!(shown.contains("lz-ql-s001"), "{shown}");
    let csv = run_cli(&s, &["drill", "show", &id, "--format", "csv"], Some(VIEWER))
        .await
        .expect("csv");
    assert!(csv.starts_with("node,region,site,kind,outcome"), "{csv}");
    assert_eq!(
        csv.split("\r\n").filter(|l| !l.is_empty()).count(),
        4,
        "{csv}"
    );

    let cancelled = run_cli(&s, &["drill", "cancel", &id], Some(OPERATOR))
        .await
        .expect("cancel");
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let again = run_cli(&s, &["drill", "cancel", &id], Some(OPERATOR))
        .await
        .expect_err("twice");
    assert!(
        matches!(again, CliError::Api { status: 409, .. }),
        "{again}"
    );
}

#[tokio::test]
async fn nodes_show_readiness_and_filter_by_it() {
    let s = Server::start(false).await;
    let table = run_cli(&s, &["nodes", "--readiness", "not_ready"], Some(VIEWER))
        .await
        .expect("nodes");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let col = lines[0].find("READINESS").expect("header");
    assert!(
        lines
            .iter()
            .skip(1)
            .all(|l| l[col..].starts_with("not_ready")),
        "{table}"
    );
}

#[tokio::test]
async fn readiness_rollups_and_history_as_table_json_and_csv() {
    let s = Server::start(false).await;
    let table = run_cli(&s, &["readiness"], Some(VIEWER))
        .await
        .expect("readiness");
    let lines: Vec<&str> = table.lines().collect();
    // "at ...", the header, two regions and the network.
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[1].starts_with("REGION"), "{table}");
    assert!(lines[2].starts_with("lanzhou"), "{table}");
    assert!(lines[2].contains("50.000"), "{table}");
    assert!(lines[4].starts_with("(network)"), "{table}");

    let csv = run_cli(
        &s,
        &["readiness", "--region", "lanzhou", "--format", "csv"],
        Some(VIEWER),
    )
    .await
    .expect("csv");
    let rows: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[0].starts_with("site,ready_%,"), "{csv}");
    assert!(rows[1].starts_with("lz-cg,100,"), "{csv}");

    let json = run_cli(
        &s,
        &["readiness", "--month", "2026-10", "--format", "json"],
        Some(VIEWER),
    )
    .await
    .expect("json");
    let v: Value = serde_json::from_str(&json).expect("json output");
    assert_eq!(v["by"], "region");
    assert_eq!(v["rows"][0]["region"], "lanzhou");
    let history = run_cli(&s, &["readiness", "--month", "2026-10"], Some(VIEWER))
        .await
        .expect("history");
    assert!(
        history
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("REGION")),
        "{history}"
    );
    assert!(history.contains("86.828"), "{history}");

    let err = run_cli(&s, &["readiness", "--month", "2026-13"], Some(VIEWER))
        .await
        .expect_err("bad month");
    assert!(err.to_string().contains("month"), "{err}");
}
