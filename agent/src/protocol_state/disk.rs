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
/// How long the disk must take every write after a recovery before the fault clears: a
/// nearly full disk that takes one compaction and fails again keeps the fault raised
/// instead of raising and clearing it every few seconds.
pub const DISK_CLEAR_AFTER: Duration = Duration::from_secs(10);
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

/// Where the disk is, as far as the fault is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// Writes work; no fault.
    Working,
    /// Writes fail; the fault is raised and the disk is tried again at `retry_at`.
    Failing { retry_at: Instant },
    /// Writes work again since `since`; the fault clears once that has lasted.
    Recovered { since: Instant },
}

/// The spool fault's state and the retry schedule.
#[derive(Debug)]
pub struct DiskWatch {
    condition: Condition,
    retry_every: Duration,
    clear_after: Duration,
}

impl Default for DiskWatch {
    fn default() -> Self {
        Self::new(DISK_RETRY, DISK_CLEAR_AFTER)
    }
}

impl DiskWatch {
    pub fn new(retry_every: Duration, clear_after: Duration) -> Self {
        Self {
            condition: Condition::Working,
            retry_every,
            clear_after,
        }
    }

    /// The spool's state after an operation (or a timer) at `now`: `failure` is its error
    /// while it cannot write. Returns the fault change to send, if any.
    pub fn observe(&mut self, failure: Option<&str>, now: Instant) -> Option<DiskFault> {
        let failing = Condition::Failing {
            retry_at: now + self.retry_every,
        };
        match (failure, self.condition) {
            (Some(error), Condition::Working) => {
                self.condition = failing;
                Some(DiskFault {
                    status: FaultStatus::Raised,
                    message: format!(
                        "cannot write the spool ({error}): records are sent from memory, \
                         unprotected against loss, until it can"
                    ),
                })
            }
            // Failed again before the recovery held: still raised, nothing to send.
            (Some(_), Condition::Recovered { .. }) => {
                self.condition = failing;
                None
            }
            (None, Condition::Failing { .. }) => {
                self.condition = Condition::Recovered { since: now };
                self.cleared_if_held(now)
            }
            (None, Condition::Recovered { .. }) => self.cleared_if_held(now),
            (Some(_), Condition::Failing { .. }) | (None, Condition::Working) => None,
        }
    }

    fn cleared_if_held(&mut self, now: Instant) -> Option<DiskFault> {
        let Condition::Recovered { since } = self.condition else {
            return None;
        };
        if now < since + self.clear_after {
            return None;
        }
        self.condition = Condition::Working;
        Some(DiskFault {
            status: FaultStatus::Cleared,
            message: "the spool writes to disk again".into(),
        })
    }

    /// A retry at `now` failed: the next one is due a period later.
    pub fn retry_failed(&mut self, now: Instant) {
        if let Condition::Failing { .. } = self.condition {
            self.condition = Condition::Failing {
                retry_at: now + self.retry_every,
            };
        }
    }

    /// When the session must look again: the next retry of a failing disk, or when a
    /// recovery will have held long enough to clear the fault; `None` while all is well.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.condition {
            Condition::Working => None,
            Condition::Failing { retry_at } => Some(retry_at),
            Condition::Recovered { since } => Some(since + self.clear_after),
        }
    }

    /// Whether the fault is raised now.
    pub fn active(&self) -> bool {
        self.condition != Condition::Working
    }

    /// The fault's key while it is raised, for the heartbeat's `faults`.
    pub fn fault_key(&self) -> Option<FaultKey> {
        self.active().then(fault_key).flatten()
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

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn one_raise_per_failure_one_clear_per_lasting_recovery_and_retries_paced() {
        let mut w = DiskWatch::new(5 * S, 10 * S);
        let t0 = Instant::now();
        assert_eq!(w.observe(None, t0), None, "a working disk says nothing");
        assert_eq!(w.retry_at(), None);
        assert_eq!(w.fault_key(), None);

        let raised = w
            .observe(Some("No space left on device (os error 28)"), t0)
            .expect("raised");
        assert_eq!(raised.status, FaultStatus::Raised);
        assert!(raised.message.contains("os error 28"), "{}", raised.message);
        assert_eq!(w.retry_at(), Some(t0 + 5 * S));
        assert_eq!(
            w.fault_key().map(|k| k.to_string()),
            Some("spool/SPOOL_WRITE_FAILED".into())
        );
        // Every further failed operation while failing: no second raise, same schedule.
        assert_eq!(w.observe(Some("again"), t0 + S), None);
        assert_eq!(w.retry_at(), Some(t0 + 5 * S));
        w.retry_failed(t0 + 5 * S);
        assert_eq!(w.retry_at(), Some(t0 + 10 * S));

        // The retry works at t1: the fault stays until the disk has worked for 10 s.
        let t1 = t0 + 10 * S;
        assert_eq!(w.observe(None, t1), None);
        assert!(w.active());
        assert_eq!(
            w.retry_at(),
            Some(t1 + 10 * S),
            "looked at again when it has held"
        );
        w.retry_failed(t1 + S);
        assert_eq!(
            w.retry_at(),
            Some(t1 + 10 * S),
            "no retry of a working disk"
        );
        assert_eq!(w.observe(None, t1 + 9 * S), None);
        let cleared = w.observe(None, t1 + 10 * S).expect("cleared");
        assert_eq!(cleared.status, FaultStatus::Cleared);
        assert!(!w.active());
        assert_eq!(w.retry_at(), None);
        assert_eq!(w.observe(None, t1 + 11 * S), None);

        // A new failure raises again.
        assert!(
            w.observe(Some("Read-only file system"), t1 + 12 * S)
                .is_some()
        );
    }

    #[test]
    fn a_disk_that_fails_again_soon_after_a_recovery_does_not_flap() {
        let mut w = DiskWatch::new(5 * S, 10 * S);
        let t0 = Instant::now();
        assert!(w.observe(Some("full"), t0).is_some());
        let mut sent = Vec::new();
        // A nearly full disk: each retry's compaction fits, the next append does not.
        for round in 1..=10u32 {
            let t = t0 + 5 * S * round;
            sent.extend(w.observe(None, t));
            sent.extend(w.observe(Some("full"), t + S));
        }
        assert!(sent.is_empty(), "{sent:?}");
        assert!(w.active());
        assert_eq!(
            w.fault_key().map(|k| k.to_string()).as_deref(),
            Some(FAULT_KEY_TEXT)
        );
        // Without a clear delay the fault clears at once on the first success.
        let mut eager = DiskWatch::new(5 * S, Duration::ZERO);
        assert!(eager.observe(Some("full"), t0).is_some());
        assert_eq!(
            eager.observe(None, t0 + 5 * S).map(|c| c.status),
            Some(FaultStatus::Cleared)
        );
    }

    const FAULT_KEY_TEXT: &str = "spool/SPOOL_WRITE_FAILED";
}
