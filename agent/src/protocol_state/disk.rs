//! Whether the spool's disk works, as the protocol reports it: the `spool/SPOOL_WRITE_FAILED`
//! fault raised when the spool turns failing and cleared when it writes again, and when to
//! try the disk next.
//!
//! Design: the spool itself never fails a caller (it holds records in memory while its disk
//! does not take them, see [`crate::spool`]); this tracker only turns its state into fault
//! changes, one per transition, and paces the retries. The fault goes through the normal
//! fault path (a `fault` message, and its key in every heartbeat's `faults` while active),
//! so the collector alerts on it like on any check's fault.

use std::time::Duration;

use alarmnet_protocol::{FaultKey, FaultStatus, Name, Severity};
use tokio::time::Instant;

/// How often a failing disk is tried again.
pub const DISK_RETRY: Duration = Duration::from_secs(5);
/// The fault's check name and code.
pub const FAULT_CHECK: &str = "spool";
pub const FAULT_CODE: &str = "SPOOL_WRITE_FAILED";
/// A spool that cannot write loses its protection against loss, not the node's function.
pub const FAULT_SEVERITY: Severity = Severity::Major;

/// A change of the spool fault to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFault {
    pub status: FaultStatus,
    pub message: String,
}

/// The spool fault's state and the retry schedule.
#[derive(Debug)]
pub struct DiskWatch {
    active: bool,
    retry_at: Option<Instant>,
    retry_every: Duration,
}

impl Default for DiskWatch {
    fn default() -> Self {
        Self::new(DISK_RETRY)
    }
}

impl DiskWatch {
    pub fn new(retry_every: Duration) -> Self {
        Self {
            active: false,
            retry_at: None,
            retry_every,
        }
    }

    /// The spool's state after an operation at `now`: `failure` is its error while it
    /// cannot write. Returns the fault change to send, if the state changed.
    pub fn observe(&mut self, failure: Option<&str>, now: Instant) -> Option<DiskFault> {
        match (failure, self.active) {
            (Some(error), false) => {
                self.active = true;
                self.retry_at = Some(now + self.retry_every);
                Some(DiskFault {
                    status: FaultStatus::Raised,
                    message: format!(
                        "cannot write the spool ({error}): records are sent from memory, \
                         unprotected against loss, until it can"
                    ),
                })
            }
            (None, true) => {
                self.active = false;
                self.retry_at = None;
                Some(DiskFault {
                    status: FaultStatus::Cleared,
                    message: "the spool writes to disk again".into(),
                })
            }
            _ => None,
        }
    }

    /// A retry at `now` failed: the next one is due a period later.
    pub fn retry_failed(&mut self, now: Instant) {
        if self.active {
            self.retry_at = Some(now + self.retry_every);
        }
    }

    /// When to try the disk again; `None` while it works.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether the fault is raised now.
    pub fn active(&self) -> bool {
        self.active
    }

    /// The fault's key while it is raised, for the heartbeat's `faults`.
    pub fn fault_key(&self) -> Option<FaultKey> {
        self.active.then(fault_key).flatten()
    }
}

/// `spool/SPOOL_WRITE_FAILED`.
pub fn fault_key() -> Option<FaultKey> {
    Some(FaultKey::new(
        Name::new(FAULT_CHECK).ok()?,
        Name::new(FAULT_CODE).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_raise_per_failure_one_clear_per_recovery_and_retries_paced() {
        let mut w = DiskWatch::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(w.observe(None, t0), None, "a working disk says nothing");
        assert_eq!(w.retry_at(), None);
        assert_eq!(w.fault_key(), None);

        let raised = w
            .observe(Some("No space left on device (os error 28)"), t0)
            .expect("raised");
        assert_eq!(raised.status, FaultStatus::Raised);
        assert!(raised.message.contains("os error 28"), "{}", raised.message);
        assert_eq!(w.retry_at(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            w.fault_key().map(|k| k.to_string()),
            Some("spool/SPOOL_WRITE_FAILED".into())
        );
        // Every further failed operation while failing: no second raise.
        assert_eq!(w.observe(Some("again"), t0 + Duration::from_secs(1)), None);
        assert_eq!(w.retry_at(), Some(t0 + Duration::from_secs(5)));

        let t1 = t0 + Duration::from_secs(5);
        w.retry_failed(t1);
        assert_eq!(w.retry_at(), Some(t1 + Duration::from_secs(5)));

        let cleared = w
            .observe(None, t1 + Duration::from_secs(5))
            .expect("cleared");
        assert_eq!(cleared.status, FaultStatus::Cleared);
        assert!(!w.active());
        assert_eq!(w.retry_at(), None);
        w.retry_failed(t1);
        assert_eq!(w.retry_at(), None, "no retries while the disk works");
        assert_eq!(w.observe(None, t1), None);

        // A new failure raises again.
        assert!(w.observe(Some("Read-only file system"), t1).is_some());
    }
}
