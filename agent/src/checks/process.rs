//! `process`: a named process is alive (the display player). Matches `/proc/<pid>/comm`
//! or the file name of argv[0] (`process`), or a substring of the command line (`cmdline`).
//! Metric `count`; fewer than `min_count` matches is `critical`.

use std::path::PathBuf;

use super::tcp::metric;
use crate::health::{CheckOutcome, Status};

/// What identifies the process.
#[derive(Debug, Clone)]
pub enum Matcher {
    Name(String),
    Cmdline(String),
}

/// A `process` check. Reads are blocking: run it on a blocking thread.
#[derive(Debug, Clone)]
pub struct Process {
    proc_root: PathBuf,
    matcher: Matcher,
    min_count: u32,
}

impl Process {
    pub fn new(matcher: Matcher, min_count: u32) -> Self {
        Self {
            proc_root: "/proc".into(),
            matcher,
            min_count,
        }
    }

    pub fn collect(&self) -> CheckOutcome {
        let entries = match std::fs::read_dir(&self.proc_root) {
            Ok(e) => e,
            Err(e) => {
                return CheckOutcome {
                    status: Status::Unknown,
                    message: format!("{}: {e}", self.proc_root.display()),
                    metrics: Vec::new(),
                };
            }
        };
        let me = std::process::id().to_string();
        let count = entries
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.bytes().all(|b| b.is_ascii_digit()) && name != me.as_str()
            })
            .filter(|e| self.matches(&e.path()))
            .count();
        let what = match &self.matcher {
            Matcher::Name(n) => format!("process `{n}`"),
            Matcher::Cmdline(c) => format!("command line containing `{c}`"),
        };
        let count_u32 = u32::try_from(count).unwrap_or(u32::MAX);
        let (status, message) = if count_u32 >= self.min_count {
            (Status::Ok, format!("{count} × {what}"))
        } else if count == 0 {
            (Status::Critical, format!("no {what} running"))
        } else {
            (
                Status::Critical,
                format!("{count} × {what}, at least {} expected", self.min_count),
            )
        };
        CheckOutcome {
            status,
            message,
            metrics: vec![(metric("count"), count as f64)],
        }
    }

    fn matches(&self, pid_dir: &std::path::Path) -> bool {
        // Processes may exit while we look: unreadable means no match.
        let cmdline = std::fs::read(pid_dir.join("cmdline")).unwrap_or_default();
        match &self.matcher {
            Matcher::Name(name) => {
                let comm = std::fs::read_to_string(pid_dir.join("comm")).unwrap_or_default();
                let comm = comm.trim_end_matches('\n');
                // The kernel cuts `comm` to 15 bytes.
                let comm_matches =
                    comm == name || (name.len() > 15 && comm.len() == 15 && name.starts_with(comm));
                let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
                let argv0 = String::from_utf8_lossy(argv0);
                let base = argv0.rsplit('/').next().unwrap_or_default();
                comm_matches || base == name
            }
            Matcher::Cmdline(needle) => {
                let joined: Vec<u8> = cmdline
                    .iter()
                    .map(|b| if *b == 0 { b' ' } else { *b })
                    .collect();
                String::from_utf8_lossy(&joined).contains(needle.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn count(out: &CheckOutcome) -> f64 {
        out.metrics[0].1
    }

    #[test]
    fn counts_live_processes_by_name_and_command_line() {
        // A unique duration doubles as a command line marker.
        let marker = format!("300.{}", std::process::id());
        let _a = Kill(
            std::process::Command::new("sleep")
                .arg(&marker)
                .spawn()
                .expect("spawn sleep"),
        );
        // The child shows its own command line only once it has exec'd: poll for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let by_line = loop {
            let out = Process::new(Matcher::Cmdline(marker.clone()), 1).collect();
            if out.status == Status::Ok || std::time::Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(by_line.status, Status::Ok, "{}", by_line.message);
        assert_eq!(count(&by_line), 1.0);

        let two = Process::new(Matcher::Cmdline(marker.clone()), 2).collect();
        assert_eq!(two.status, Status::Critical);
        assert!(two.message.contains("at least 2"), "{}", two.message);

        let by_name = Process::new(Matcher::Name("sleep".into()), 1).collect();
        assert_eq!(by_name.status, Status::Ok);
        assert!(count(&by_name) >= 1.0);

        let none = Process::new(Matcher::Name(format!("{marker}-absent")), 1).collect();
        assert_eq!(none.status, Status::Critical);
        assert_eq!(count(&none), 0.0);
        assert!(none.message.starts_with("no process"), "{}", none.message);
    }
}
