//! The provisioned Grafana dashboards parse and only use the provisioned datasources.

use std::path::PathBuf;

fn grafana(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana")
        .join(path)
}

#[test]
fn dashboards_parse_and_name_provisioned_datasources() {
    let datasources = std::fs::read_to_string(grafana("datasources/alarmnet.yaml")).expect("yaml");
    for (file, uid, lang) in [
        ("dashboards/alarmnet.json", "alarmnet-influxdb", "query"),
        (
            "dashboards/alarmnet-victoriametrics.json",
            "alarmnet-victoriametrics",
            "expr",
        ),
    ] {
        assert!(
            datasources.contains(&format!("uid: {uid}")),
            "{uid} not provisioned"
        );
        let text = std::fs::read_to_string(grafana(file)).expect("dashboard");
        let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
        let panels = dash["panels"].as_array().expect("panels");
        assert!(panels.len() >= 6, "{file}");
        for panel in panels {
            let title = panel["title"].as_str().expect("title");
            assert_eq!(panel["datasource"]["uid"], uid, "{file}: {title}");
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title}");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], uid, "{file}: {title}");
                let q = t[lang].as_str().expect("query text");
                assert!(q.contains("alarmnet_"), "{file}: {title}: {q}");
            }
        }
    }
}
