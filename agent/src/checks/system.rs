//! `system`: CPU (from `/proc/stat` deltas), memory (`/proc/meminfo`), disk (`statvfs`),
//! load (`/proc/loadavg`), uptime and the hottest thermal zone. Metrics `cpu_pct`,
//! `mem_pct`, `disk_pct`, `load1`, `uptime_s`, `temp_c`; a value that cannot be read is
//! left out, and the run is `unknown` only when nothing could be read.
//!
// Design: `statvfs` comes from `rustix` (already in the dependency tree through `tempfile`,
// raw Linux syscalls without libc, and `unsafe_code` stays forbidden here).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alarmnet_protocol::MetricName;

use super::tcp::{metric, round1};
use crate::health::{CheckOutcome, Status};

/// Without an earlier sample, the CPU is sampled twice this far apart.
const FIRST_CPU_WINDOW: Duration = Duration::from_millis(200);

/// A `system` check. Reads are blocking: run it on a blocking thread.
#[derive(Debug, Clone)]
pub struct System {
    proc_root: PathBuf,
    thermal_root: PathBuf,
    disk_path: PathBuf,
    previous_cpu: Arc<Mutex<Option<CpuSample>>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuSample {
    total: u64,
    idle: u64,
}

impl System {
    pub fn new(disk_path: PathBuf) -> Self {
        Self::with_roots("/proc".into(), "/sys/class/thermal".into(), disk_path)
    }

    /// With other `/proc` and thermal roots, for tests.
    pub fn with_roots(proc_root: PathBuf, thermal_root: PathBuf, disk_path: PathBuf) -> Self {
        Self {
            proc_root,
            thermal_root,
            disk_path,
            previous_cpu: Arc::default(),
        }
    }

    pub fn collect(&self) -> CheckOutcome {
        let mut metrics: Vec<(MetricName, f64)> = Vec::new();
        let mut parts = Vec::new();
        if let Some(cpu) = self.cpu_pct() {
            metrics.push((metric("cpu_pct"), round1(cpu)));
            parts.push(format!("cpu {cpu:.1} %"));
        }
        if let Some(mem) = mem_pct(&self.proc_root) {
            metrics.push((metric("mem_pct"), round1(mem)));
            parts.push(format!("mem {mem:.1} %"));
        }
        if let Some(disk) = disk_pct(&self.disk_path) {
            metrics.push((metric("disk_pct"), round1(disk)));
            parts.push(format!("disk {disk:.1} %"));
        }
        if let Some(load) = first_number(&self.proc_root.join("loadavg")) {
            metrics.push((metric("load1"), load));
            parts.push(format!("load {load}"));
        }
        if let Some(temp) = max_temp_c(&self.thermal_root) {
            metrics.push((metric("temp_c"), round1(temp)));
            parts.push(format!("{temp:.1} °C"));
        }
        if let Some(up) = first_number(&self.proc_root.join("uptime")) {
            metrics.push((metric("uptime_s"), up.floor()));
            let up = humantime::format_duration(Duration::from_secs(up as u64));
            parts.push(format!("up {up}"));
        }
        if metrics.is_empty() {
            return CheckOutcome {
                status: Status::Unknown,
                message: format!("nothing readable under {}", self.proc_root.display()),
                metrics,
            };
        }
        CheckOutcome {
            status: Status::Ok,
            message: parts.join(", "),
            metrics,
        }
    }

    /// CPU busy share since the previous run (or over a short window on the first).
    fn cpu_pct(&self) -> Option<f64> {
        let stat = self.proc_root.join("stat");
        let mut previous = self
            .previous_cpu
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = match *previous {
            Some(s) => s,
            None => {
                let s = cpu_sample(&stat)?;
                std::thread::sleep(FIRST_CPU_WINDOW);
                s
            }
        };
        let now = cpu_sample(&stat)?;
        *previous = Some(now);
        let total = now.total.checked_sub(before.total)?;
        let idle = now.idle.checked_sub(before.idle)?;
        if total == 0 {
            return None;
        }
        Some(100.0 * (1.0 - idle as f64 / total as f64).clamp(0.0, 1.0))
    }
}

/// `cpu user nice system idle iowait irq softirq steal ...`: idle is idle + iowait.
fn cpu_sample(stat: &Path) -> Option<CpuSample> {
    let text = std::fs::read_to_string(stat).ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    Some(CpuSample {
        total: fields.iter().sum(),
        idle: fields[3] + fields.get(4).copied().unwrap_or(0),
    })
}

fn mem_pct(proc_root: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| 100.0 * (1.0 - available / total).clamp(0.0, 1.0))
}

/// Used share as `df` shows it: used / (used + available to unprivileged users).
fn disk_pct(path: &Path) -> Option<f64> {
    let st = rustix::fs::statvfs(path).ok()?;
    let used = st.f_blocks.checked_sub(st.f_bfree)? as f64;
    let usable = used + st.f_bavail as f64;
    (usable > 0.0).then(|| 100.0 * used / usable)
}

fn first_number(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: f64 = text.split_whitespace().next()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// The hottest `thermal_zone*/temp` (millidegrees Celsius).
fn max_temp_c(thermal_root: &Path) -> Option<f64> {
    let entries = std::fs::read_dir(thermal_root).ok()?;
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .filter_map(|e| first_number(&e.path().join("temp")))
        .map(|milli| milli / 1000.0)
        .reduce(f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(out: &CheckOutcome, name: &str) -> Option<f64> {
        out.metrics
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| *v)
    }

    #[test]
    fn reads_every_metric_from_a_fixture_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc_root = dir.path().join("proc");
        let thermal = dir.path().join("thermal");
        std::fs::create_dir_all(&proc_root).expect("mkdir");
        for (zone, temp) in [("thermal_zone0", "48500\n"), ("thermal_zone1", "51250\n")] {
            std::fs::create_dir_all(thermal.join(zone)).expect("mkdir");
            std::fs::write(thermal.join(zone).join("temp"), temp).expect("write");
        }
        std::fs::create_dir_all(thermal.join("cooling_device0")).expect("mkdir");
        let write = |name: &str, text: &str| {
            std::fs::write(proc_root.join(name), text).expect("write fixture");
        };
        write("stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n");
        write(
            "meminfo",
            "MemTotal:        1000000 kB\nMemFree:  100 kB\nMemAvailable:     590000 kB\n",
        );
        write("loadavg", "0.12 0.10 0.05 1/123 4567\n");
        write("uptime", "86400.55 170000.00\n");

        let system = System::with_roots(proc_root.clone(), thermal, dir.path().to_owned());
        let out = system.collect();
        assert_eq!(out.status, Status::Ok);
        // Nothing moved between the two samples of the first run: no cpu figure.
        assert_eq!(get(&out, "cpu_pct"), None);
        assert_eq!(get(&out, "mem_pct"), Some(41.0));
        assert_eq!(get(&out, "load1"), Some(0.12));
        assert_eq!(get(&out, "uptime_s"), Some(86400.0));
        assert_eq!(get(&out, "temp_c"), Some(51.3));
        let disk = get(&out, "disk_pct").expect("statvfs on the temp dir");
        assert!((0.0..=100.0).contains(&disk));
        assert!(out.message.contains("mem 41.0 %"), "{}", out.message);

        // 1000 more jiffies of which 250 idle: 75 % busy.
        write("stat", "cpu  500 0 450 1000 50 0 0 0 0 0\n");
        let out = system.collect();
        assert_eq!(get(&out, "cpu_pct"), Some(75.0));
    }

    #[test]
    fn nothing_readable_is_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let system = System::with_roots(
            dir.path().join("none"),
            dir.path().join("none"),
            dir.path().join("none"),
        );
        let out = system.collect();
        assert_eq!(out.status, Status::Unknown);
        assert!(out.metrics.is_empty());
    }

    #[test]
    fn the_real_system_yields_memory_disk_and_load() {
        let out = System::new("/".into()).collect();
        assert_eq!(out.status, Status::Ok, "{}", out.message);
        for m in ["mem_pct", "disk_pct", "load1", "uptime_s", "cpu_pct"] {
            assert!(get(&out, m).is_some(), "{m} missing: {:?}", out.metrics);
        }
    }
}
