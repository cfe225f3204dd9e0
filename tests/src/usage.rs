//! What a process has used so far, from `/proc` (Linux): CPU time and resident memory. For
//! benchmarks and measurements, of a child or of the process itself
//! (`std::process::id()`).

/// User + system CPU seconds of process `pid`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / 100.0
}

/// Resident memory of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    pages * 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let before = cpu_seconds(me);
        // Spin until 100 ms of CPU time show (a busy machine may give this thread less than
        // the wall time), or give up after 20 s.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_seconds(me) - before < 0.1 && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(
            cpu_seconds(me) - before >= 0.1,
            "20 s of spinning counted as less than 100 ms of CPU"
        );
        // More than a page, less than the machine.
        let rss = rss_bytes(me);
        assert!(rss > 1 << 20 && rss < 1 << 40, "{rss}");
    }
}
