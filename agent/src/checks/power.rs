//! `power`: the Linux power supply class (`/sys/class/power_supply`). Metrics `ac_power`
//! (1 when any mains or USB supply is online), `battery_pct` and `battery_v` (of the first
//! battery by name). Mains lost gives the configured `mains_lost` status (default
//! `warning`); battery thresholds (default `battery_pct` below 30 warning, 15 critical) do
//! the rest. No supply at all is `unknown`.

use std::path::{Path, PathBuf};

use super::tcp::metric;
use crate::health::{CheckOutcome, Status};

/// A `power` check. Reads are blocking: run it on a blocking thread.
#[derive(Debug, Clone)]
pub struct Power {
    root: PathBuf,
    mains_lost: Status,
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_number(path: &Path) -> Option<f64> {
    read_trimmed(path)?
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
}

impl Power {
    pub fn new(root: PathBuf, mains_lost: Status) -> Self {
        Self { root, mains_lost }
    }

    pub fn collect(&self) -> CheckOutcome {
        let mut supplies: Vec<PathBuf> = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(e) => return unknown(format!("{}: {e}", self.root.display())),
        };
        supplies.sort();
        let mut external_seen = false;
        let mut ac_online = false;
        let mut battery: Option<(f64, Option<f64>, Option<String>)> = None;
        for supply in &supplies {
            match read_trimmed(&supply.join("type")).as_deref() {
                Some("Mains" | "USB" | "Wireless") => {
                    if let Some(online) = read_number(&supply.join("online")) {
                        external_seen = true;
                        ac_online |= online > 0.0;
                    }
                }
                Some("Battery") if battery.is_none() => {
                    if read_number(&supply.join("present")) == Some(0.0) {
                        continue;
                    }
                    if let Some(pct) = read_number(&supply.join("capacity")) {
                        let volts = read_number(&supply.join("voltage_now")).map(|uv| uv / 1e6);
                        let state = read_trimmed(&supply.join("status"));
                        battery = Some((pct, volts, state));
                    }
                }
                _ => {}
            }
        }
        if !external_seen && battery.is_none() {
            return unknown(format!(
                "no power supply found under {}",
                self.root.display()
            ));
        }
        let mut metrics = Vec::new();
        let mut parts = Vec::new();
        let mut status = Status::Ok;
        if external_seen {
            metrics.push((metric("ac_power"), if ac_online { 1.0 } else { 0.0 }));
            if ac_online {
                parts.push("mains on".to_owned());
            } else {
                parts.push("mains power lost".to_owned());
                status = self.mains_lost;
            }
        }
        if let Some((pct, volts, state)) = battery {
            metrics.push((metric("battery_pct"), pct));
            let mut text = format!("battery {pct} %");
            if let Some(v) = volts {
                metrics.push((metric("battery_v"), (v * 100.0).round() / 100.0));
                text.push_str(&format!(" {v:.2} V"));
            }
            if let Some(state) = state.filter(|s| !s.is_empty()) {
                text.push_str(&format!(" ({})", state.to_lowercase()));
            }
            parts.push(text);
        }
        CheckOutcome {
            status,
            message: parts.join(", "),
            metrics,
        }
    }
}

fn unknown(message: String) -> CheckOutcome {
    CheckOutcome {
        status: Status::Unknown,
        message,
        metrics: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supply(root: &Path, name: &str, files: &[(&str, &str)]) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for (file, text) in files {
            std::fs::write(dir.join(file), format!("{text}\n")).expect("write fixture");
        }
    }

    fn get(out: &CheckOutcome, name: &str) -> Option<f64> {
        out.metrics
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| *v)
    }

    #[test]
    fn mains_and_battery_from_a_fixture_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        supply(root, "AC", &[("type", "Mains"), ("online", "1")]);
        supply(
            root,
            "BAT0",
            &[
                ("type", "Battery"),
                ("capacity", "97"),
                ("voltage_now", "13412000"),
                ("status", "Full"),
            ],
        );
        let power = Power::new(root.to_owned(), Status::Warning);
        let out = power.collect();
        assert_eq!(out.status, Status::Ok);
        assert_eq!(get(&out, "ac_power"), Some(1.0));
        assert_eq!(get(&out, "battery_pct"), Some(97.0));
        assert_eq!(get(&out, "battery_v"), Some(13.41));
        assert_eq!(out.message, "mains on, battery 97 % 13.41 V (full)");

        supply(root, "AC", &[("online", "0")]);
        supply(root, "BAT0", &[("status", "Discharging")]);
        let out = power.collect();
        assert_eq!(out.status, Status::Warning);
        assert_eq!(get(&out, "ac_power"), Some(0.0));
        assert!(
            out.message.starts_with("mains power lost"),
            "{}",
            out.message
        );
        let out = Power::new(root.to_owned(), Status::Critical).collect();
        assert_eq!(out.status, Status::Critical);
    }

    #[test]
    fn battery_only_nodes_and_empty_trees() {
        let dir = tempfile::tempdir().expect("tempdir");
        let power = Power::new(dir.path().to_owned(), Status::Warning);
        assert_eq!(power.collect().status, Status::Unknown);
        supply(
            dir.path(),
            "BAT1",
            &[("type", "Battery"), ("capacity", "40")],
        );
        let out = power.collect();
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.metrics.len(), 1);
        assert_eq!(get(&out, "battery_pct"), Some(40.0));
        let out = Power::new(dir.path().join("absent"), Status::Warning).collect();
        assert_eq!(out.status, Status::Unknown);
    }
}
