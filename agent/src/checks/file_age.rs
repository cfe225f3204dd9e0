//! `file_age`: a file was modified within `max_age` (display content sync, a controller's
//! status dump). Metric `age_s`. A missing file is `critical`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::tcp::{metric, round1};
use crate::health::{CheckOutcome, Status};

/// A `file_age` check. Reads are blocking: run it on a blocking thread.
#[derive(Debug, Clone)]
pub struct FileAge {
    path: PathBuf,
    max_age: Duration,
    warn_age: Option<Duration>,
}

impl FileAge {
    pub fn new(path: PathBuf, max_age: Duration, warn_age: Option<Duration>) -> Self {
        Self {
            path,
            max_age,
            warn_age,
        }
    }

    pub fn collect(&self) -> CheckOutcome {
        self.collect_at(SystemTime::now())
    }

    fn collect_at(&self, now: SystemTime) -> CheckOutcome {
        let modified = match std::fs::metadata(&self.path).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) => {
                return CheckOutcome {
                    status: Status::Critical,
                    message: format!("{}: {e}", self.path.display()),
                    metrics: Vec::new(),
                };
            }
        };
        // A file from the future (clock stepped back) counts as fresh.
        let age = now.duration_since(modified).unwrap_or_default();
        let shown = humantime::format_duration(Duration::from_secs(age.as_secs()));
        let (status, message) = if age > self.max_age {
            let max = humantime::format_duration(self.max_age);
            (
                Status::Critical,
                format!(
                    "{} not updated for {shown} (max {max})",
                    self.path.display()
                ),
            )
        } else if let Some(warn) = self.warn_age.filter(|w| age > *w) {
            let warn = humantime::format_duration(warn);
            (
                Status::Warning,
                format!(
                    "{} not updated for {shown} (warn {warn})",
                    self.path.display()
                ),
            )
        } else {
            (
                Status::Ok,
                format!("{} updated {shown} ago", self.path.display()),
            )
        };
        CheckOutcome {
            status,
            message,
            metrics: vec![(metric("age_s"), round1(age.as_secs_f64()))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_are_judged_against_warn_and_max() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("content.json");
        std::fs::write(&path, "{}").expect("write");
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let check = FileAge::new(
            path.clone(),
            Duration::from_secs(600),
            Some(Duration::from_secs(300)),
        );
        let at = |secs: u64| check.collect_at(mtime + Duration::from_secs(secs));

        let fresh = at(10);
        assert_eq!(fresh.status, Status::Ok);
        assert_eq!(fresh.metrics[0].1, 10.0);
        assert_eq!(at(301).status, Status::Warning);
        let stale = at(601);
        assert_eq!(stale.status, Status::Critical);
        assert!(stale.message.contains("10m 1s"), "{}", stale.message);
        // From the future: age 0, ok.
        let future = check.collect_at(mtime - Duration::from_secs(50));
        assert_eq!((future.status, future.metrics[0].1), (Status::Ok, 0.0));
        // The real clock: just written.
        assert_eq!(check.collect().status, Status::Ok);
    }

    #[test]
    fn a_missing_file_is_critical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let check = FileAge::new(dir.path().join("absent"), Duration::from_secs(60), None);
        let out = check.collect();
        assert_eq!(out.status, Status::Critical);
        assert!(out.metrics.is_empty());
    }
}
