//! A full disk under the collector's store: the failed commits are counted and logged,
//! `/readyz` says why the collector is not ready, nothing accepted is dropped, and once space
//! is back every fault received meanwhile is in the store.
//!
//! The store lives on a small tmpfs of its own (mounting needs root, which the test machines
//! have; elsewhere the test says so and passes without running).

mod collector_support;

use std::time::Duration;

use collector_support::{Collector, Publisher, SmallDisk, birth, workdir};
use rumqttc::QoS;
use serde_json::Value;

use alarmnet_e2e::{Mosquitto, wait_for};

const T: Duration = Duration::from_secs(30);

fn fault(seq: u64, code: &str) -> Vec<u8> {
    format!(
        r#"{{"v":1,"boot":"boot000000000001","seq":{seq},"ts":{},"check":"amplifier","code":"{code}","severity":"major","status":"raised"}}"#,
        1_764_330_000_000 + seq
    )
    .into_bytes()
}

async fn stored_faults(collector: &Collector, node: &str) -> Vec<String> {
    let url = format!(
        "http://127.0.0.1:{}/api/v1/nodes/{node}/history?type=faults&since=3650d&limit=1000",
        collector.http_port
    );
    let body: Value = reqwest::get(url)
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|f| f["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn readyz(collector: &Collector) -> (u16, String) {
    let r = reqwest::get(format!("http://127.0.0.1:{}/readyz", collector.http_port))
        .await
        .expect("readyz");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

#[tokio::test]
async fn a_full_disk_holds_writes_and_loses_nothing() {
    let dir = workdir();
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).expect("store dir");
    let Some(disk) = SmallDisk::mount(&store_dir, "8m") else {
        eprintln!("cannot mount a tmpfs (not root?): full-disk test not run");
        return;
    };
    let broker = Mosquitto::start().await;
    let collector = Collector::start(&broker, &store_dir, "anonymous_read = true\n").await;
    let p = Publisher::connect(&broker).await;
    let node = "lz-cg-s001";
    let base = format!("alarmnet/v1/lanzhou/lz-chengguan/{node}");
    p.publish(
        &format!("{base}/birth"),
        birth("lanzhou", "lz-chengguan", node, 1_764_330_000_000),
        QoS::AtLeastOnce,
        true,
    )
    .await;
    p.publish(
        &format!("{base}/fault"),
        fault(1, "F000"),
        QoS::AtLeastOnce,
        false,
    )
    .await;
    let c = &collector;
    wait_for(T, "the first fault stored", move || async move {
        (stored_faults(c, node).await.len() == 1).then_some(())
    })
    .await;

    let filler = disk.fill();
    const HELD: u64 = 40;
    for seq in 2..2 + HELD {
        p.publish(
            &format!("{base}/fault"),
            fault(seq, &format!("F{seq:03}")),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    collector
        .wait_metric_at_least("alarmnet_store_write_failures_total", 1.0, T)
        .await;
    let (status, text) = readyz(&collector).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("store cannot commit"), "{text}");
    wait_for(T, "the error in the log", move || async move {
        c.process
            .stderr_text()
            .contains("store write failed; writes kept and retried")
            .then_some(())
    })
    .await;
    assert!(collector.metric("alarmnet_store_pending_writes").await >= 1.0);
    // Nothing held is in the store yet. (A read may itself fail while the disk is full, as
    // SQLite's shared WAL index can need room: then the API says so with an error status.)
    let url = format!(
        "http://127.0.0.1:{}/api/v1/nodes/{node}/history?type=faults&since=3650d&limit=1000",
        collector.http_port
    );
    let r = reqwest::get(url).await.expect("request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("JSON, also for errors");
    if status == 200 {
        assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    } else {
        eprintln!("while the disk is full the read answered {status}: {body}");
        assert!(
            status >= 500 && body["error"].is_object(),
            "{status} {body}"
        );
    }

    std::fs::remove_file(filler).expect("free the disk");
    collector
        .wait_metric("alarmnet_store_pending_writes", 0.0, T)
        .await;
    wait_for(T, "every held fault stored", move || async move {
        (stored_faults(c, node).await.len() == 1 + HELD as usize).then_some(())
    })
    .await;
    let mut codes = stored_faults(&collector, node).await;
    codes.sort();
    let want: Vec<String> = std::iter::once("F000".to_owned())
        .chain((2..2 + HELD).map(|s| format!("F{s:03}")))
        .collect();
    assert_eq!(codes, want);
    wait_for(T, "ready again", move || async move {
        (readyz(c).await.0 == 200).then_some(())
    })
    .await;
    drop(collector);
    drop(disk);
}

/// With a reserve file on the store's disk, filling the disk once costs nothing: the first
/// failed commit deletes the reserve and is retried at once, so every fault is stored,
/// `store_failed` never fires, and the release is counted. Once the disk has room the
/// reserve is made again.
#[tokio::test]
async fn the_reserve_file_gives_a_full_disk_room_to_commit() {
    let dir = workdir();
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).expect("store dir");
    let Some(disk) = SmallDisk::mount(&store_dir, "8m") else {
        eprintln!("cannot mount a tmpfs (not root?): reserve test not run");
        return;
    };
    let broker = Mosquitto::start().await;
    let collector = Collector::start_with_env(
        &broker,
        &store_dir,
        "anonymous_read = true\n",
        &[("ALARMNET_STORE__RESERVE", "1MiB")],
    )
    .await;
    collector
        .wait_metric("alarmnet_store_reserve_present", 1.0, T)
        .await;
    assert!(store_dir.join("alarmnet.db.reserve").exists());
    let p = Publisher::connect(&broker).await;
    let node = "lz-cg-s002";
    let base = format!("alarmnet/v1/lanzhou/lz-chengguan/{node}");
    p.publish(
        &format!("{base}/birth"),
        birth("lanzhou", "lz-chengguan", node, 1_764_330_000_000),
        QoS::AtLeastOnce,
        true,
    )
    .await;
    let c = &collector;
    wait_for(T, "the node registered", move || async move {
        reqwest::get(format!(
            "http://127.0.0.1:{}/api/v1/nodes/{node}",
            c.http_port
        ))
        .await
        .ok()
        .filter(|r| r.status().is_success())
        .map(|_| ())
    })
    .await;

    let filler = disk.fill();
    const N: u64 = 20;
    for seq in 1..=N {
        p.publish(
            &format!("{base}/fault"),
            fault(seq, &format!("R{seq:03}")),
            QoS::AtLeastOnce,
            false,
        )
        .await;
    }
    collector
        .wait_metric("alarmnet_store_reserve_released_total", 1.0, T)
        .await;
    wait_for(
        T,
        "every fault stored with the reserve's room",
        move || async move { (stored_faults(c, node).await.len() == N as usize).then_some(()) },
    )
    .await;
    assert_eq!(collector.metric("alarmnet_store_failing").await, 0.0);
    assert_eq!(
        collector.metric("alarmnet_store_reserve_present").await,
        0.0
    );
    assert!(
        collector
            .process
            .stderr_text()
            .contains("reserve file deleted to make room")
    );

    std::fs::remove_file(filler).expect("free the disk");
    collector
        .wait_metric(
            "alarmnet_store_reserve_present",
            1.0,
            Duration::from_secs(45),
        )
        .await;
    drop(collector);
    drop(disk);
}
