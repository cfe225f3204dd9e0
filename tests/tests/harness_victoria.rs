//! The VictoriaMetrics handle: a line-protocol point written over plain HTTP comes back
//! through `export` and `query`, and survives a restart.

use std::time::Duration;

use alarmnet_e2e::{VictoriaMetrics, wait_for};

#[tokio::test]
async fn export_returns_a_point_written_as_line_protocol() {
    let mut vm = VictoriaMetrics::start().await;
    let ts_ms: i64 = 1_764_330_000_123;
    let line = format!(
        "harness,node=n1,site=s1 cpu_pct=3.5,up=1i {}",
        ts_ms * 1_000_000
    );
    let response = reqwest::Client::new()
        .post(format!("{}/api/v2/write", vm.url()))
        .body(line)
        .send()
        .await
        .expect("POST /api/v2/write");
    assert!(response.status().is_success(), "{}", response.status());

    let series = wait_for(
        Duration::from_secs(10),
        "the point in the export",
        || async {
            let series = vm.export(r#"{__name__=~"harness_.*"}"#).await;
            (series.len() == 2).then_some(series)
        },
    )
    .await;
    let cpu = &series[0];
    assert_eq!(cpu.name(), "harness_cpu_pct");
    assert_eq!(cpu.label("node"), Some("n1"));
    assert_eq!(cpu.label("site"), Some("s1"));
    assert_eq!(cpu.values, vec![3.5]);
    assert_eq!(cpu.timestamps, vec![ts_ms]);
    assert_eq!(series[1].name(), "harness_up");
    assert_eq!(series[1].values, vec![1.0]);

    let answer = vm
        .query(&format!("harness_cpu_pct @ {}", ts_ms / 1000))
        .await;
    assert_eq!(answer["status"], "success", "{answer}");

    vm.stop().await;
    vm.start_again().await;
    let again = vm.export("harness_cpu_pct").await;
    assert_eq!(again.len(), 1, "the point survives a clean restart");
    assert_eq!(again[0].values, vec![3.5]);
}
