//! `Process`, `binary` and `Alertmanager`: output capture, signals, exit status.

use std::time::Duration;

use alarmnet_e2e::{Alertmanager, Process};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn captures_output_and_exit_status() {
    let mut child = Process::builder("/bin/sh")
        .args(["-c", "echo out-$GREETING; echo err >&2; exit 3"])
        .env("GREETING", "hello")
        .spawn();
    let status = child.wait_exit(WAIT).await.expect("exits by itself");
    assert_eq!(status.code(), Some(3));
    assert_eq!(child.stdout_text(), "out-hello\n");
    assert_eq!(child.stderr_text(), "err\n");
}

#[tokio::test]
async fn signals_reach_the_child() {
    // The shell reports each signal it traps, so the test sees delivery, not just death.
    // USR1 rather than HUP: a shell cannot trap a signal ignored on entry, and HUP is ignored
    // under nohup and some CI runners.
    let script = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 7' TERM; \
                  echo ready; while true; do sleep 0.05; done";
    let mut child = Process::builder("/bin/sh").args(["-c", script]).spawn();
    child.wait_for_output("ready", WAIT).await;
    child.signal("USR1");
    child.wait_for_output("got-usr1", WAIT).await;
    assert!(child.is_running());
    child.signal("TERM");
    let status = child.wait_exit(WAIT).await.expect("exits on TERM");
    assert_eq!(status.code(), Some(7));
    assert!(child.stdout_text().contains("got-term"));
}

#[tokio::test]
async fn stopped_child_does_not_exit_until_continued_and_killed() {
    let mut child = Process::builder("/bin/sleep").arg("30").spawn();
    child.signal("STOP");
    assert_eq!(child.wait_exit(Duration::from_millis(100)).await, None);
    child.signal("CONT");
    child.signal("KILL");
    let status = child.wait_exit(WAIT).await.expect("killed");
    assert_eq!(status.code(), None, "killed by a signal");
}

#[tokio::test]
#[should_panic(expected = "without printing")]
async fn wait_for_output_fails_fast_when_the_child_exits() {
    let mut child = Process::builder("/bin/true").spawn();
    child.wait_for_output("never printed", WAIT).await;
}

#[test]
#[should_panic(expected = "run `cargo build --workspace --bins` first")]
fn missing_binary_says_how_to_build_it() {
    alarmnet_e2e::binary("alarmnet-no-such-binary");
}

#[tokio::test]
async fn alertmanager_starts_empty_and_accepts_an_alert() {
    let am = Alertmanager::start().await;
    assert_eq!(am.alerts().await, serde_json::json!([]));
    let alert = serde_json::json!([{
        "labels": {"alertname": "NodeDown", "node": "n1"},
        "annotations": {"summary": "harness"},
    }]);
    let response = reqwest::Client::new()
        .post(format!("{}/api/v2/alerts", am.url()))
        .json(&alert)
        .send()
        .await
        .expect("POST /api/v2/alerts");
    assert!(response.status().is_success(), "{}", response.status());
    let alerts = am.alerts().await;
    assert_eq!(alerts[0]["labels"]["alertname"], "NodeDown", "{alerts}");
}
