//! An output's bounded queue with two lanes: availability notices ahead of the rest.
//!
//! Design: a siren going offline must never wait behind, or be dropped for, a flood of fault
//! or threshold notices. Notices of the availability rules (`node_offline`, `site_outage`,
//! `region_outage`, `collector_blind`, `store_failed`, firing or resolved) go in the high lane, every other
//! rule in the low lane; the output task always takes the high lane first. The capacity
//! bounds both lanes together. When the queue is full, a low-priority notice is dropped
//! (the newest one queued, to make room for an availability notice, or the incoming one
//! otherwise); an availability notice is dropped only when nothing but availability notices
//! are queued. Each lane is first in, first out and an alert's rule decides its lane, so
//! an alert's notices keep their order (a resolution never overtakes its firing).
//!
//! A `tokio::sync::mpsc` channel cannot reorder or evict, hence this small queue: a
//! `std::sync::Mutex` held for a push or a pop only (never across an `.await`), and a
//! [`Notify`] to wake the single receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Notice;

/// Whether `notice` goes in the high lane: its rule says a node, site or region is
/// unreachable, or the collector itself is unable to watch
/// ([`RuleKind::is_availability`](crate::model::RuleKind::is_availability)).
pub fn is_availability(notice: &Notice) -> bool {
    notice.alert().rule.is_availability()
}

#[derive(Debug)]
struct Lanes {
    high: VecDeque<Notice>,
    low: VecDeque<Notice>,
    capacity: usize,
    senders: usize,
}

#[derive(Debug)]
struct Shared {
    lanes: Mutex<Lanes>,
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The core's end of an output queue.
#[derive(Debug)]
pub struct NoticeSender {
    shared: Arc<Shared>,
}

/// The output task's end.
#[derive(Debug)]
pub struct NoticeReceiver {
    shared: Arc<Shared>,
}

/// What became of a pushed notice.
#[derive(Debug)]
pub enum Pushed {
    /// Queued; nothing dropped.
    Queued,
    /// Queued, and this low-priority notice was dropped to make room.
    Displaced(Notice),
    /// Not queued: the queue is full of notices at least as important.
    Full(Notice),
}

/// A queue holding at most `capacity` notices (at least 1).
pub fn channel(capacity: usize) -> (NoticeSender, NoticeReceiver) {
    let shared = Arc::new(Shared {
        lanes: Mutex::new(Lanes {
            high: VecDeque::new(),
            low: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
        }),
        ready: Notify::new(),
    });
    (
        NoticeSender {
            shared: shared.clone(),
        },
        NoticeReceiver { shared },
    )
}

impl NoticeSender {
    /// Queues `notice` without waiting; see the module documentation for what is dropped
    /// when the queue is full.
    pub fn push(&self, notice: Notice) -> Pushed {
        let high = is_availability(&notice);
        let mut lanes = self.shared.lock();
        let pushed = if lanes.high.len() + lanes.low.len() < lanes.capacity {
            Pushed::Queued
        } else if !high {
            return Pushed::Full(notice);
        } else if let Some(dropped) = lanes.low.pop_back() {
            Pushed::Displaced(dropped)
        } else {
            return Pushed::Full(notice);
        };
        if high {
            lanes.high.push_back(notice);
        } else {
            lanes.low.push_back(notice);
        }
        drop(lanes);
        self.shared.ready.notify_one();
        pushed
    }

    /// Notices waiting.
    pub fn len(&self) -> usize {
        let lanes = self.shared.lock();
        lanes.high.len() + lanes.low.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Clone for NoticeSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for NoticeSender {
    fn drop(&mut self) {
        self.shared.lock().senders -= 1;
        self.shared.ready.notify_one();
    }
}

impl NoticeReceiver {
    /// The next notice, availability first. `None` once every sender is gone and the queue
    /// is empty. Cancel-safe: a notice is taken only when this returns it.
    pub async fn recv(&mut self) -> Option<Notice> {
        loop {
            {
                let mut lanes = self.shared.lock();
                if let Some(n) = lanes.high.pop_front().or_else(|| lanes.low.pop_front()) {
                    return Some(n);
                }
                if lanes.senders == 0 {
                    return None;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// The next notice if one waits.
    pub fn try_recv(&mut self) -> Option<Notice> {
        let mut lanes = self.shared.lock();
        lanes.high.pop_front().or_else(|| lanes.low.pop_front())
    }
}

#[cfg(test)]
mod tests {
    use alarmnet_protocol::AlertStatus;

    use super::*;
    use crate::outputs::tests_support::alert;

    /// A notice of `rule` told apart by `label` (kept in its summary: the queue never
    /// looks at ids or summaries).
    fn notice(label: &str, rule: &str, status: AlertStatus) -> Notice {
        let mut a = alert("0000000000000001", status);
        a.rule = rule.parse().expect("rule");
        a.summary = label.to_owned();
        Notice::Alert(Arc::new(a.into()))
    }

    fn key(n: &Notice) -> (String, AlertStatus) {
        let a = n.alert();
        (a.summary.clone(), a.status)
    }

    fn drain(rx: &mut NoticeReceiver) -> Vec<(String, AlertStatus)> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|n| key(&n))
            .collect()
    }

    use AlertStatus::{Firing, Resolved};

    #[test]
    fn availability_goes_first_and_each_alert_keeps_its_order() {
        let (tx, mut rx) = channel(100);
        for i in 0..5 {
            assert!(matches!(
                tx.push(notice(&format!("f{i}"), "fault", Firing)),
                Pushed::Queued
            ));
        }
        tx.push(notice("off", "node_offline", Firing));
        tx.push(notice("f0", "fault", Resolved));
        tx.push(notice("off", "node_offline", Resolved));
        tx.push(notice("blind", "collector_blind", Firing));
        let got = drain(&mut rx);
        assert_eq!(
            got,
            vec![
                ("off".into(), Firing),
                ("off".into(), Resolved),
                ("blind".into(), Firing),
                ("f0".into(), Firing),
                ("f1".into(), Firing),
                ("f2".into(), Firing),
                ("f3".into(), Firing),
                ("f4".into(), Firing),
                ("f0".into(), Resolved),
            ]
        );
    }

    #[test]
    fn a_full_queue_drops_low_priority_first_never_availability_while_low_waits() {
        let (tx, mut rx) = channel(3);
        tx.push(notice("f1", "fault", Firing));
        tx.push(notice("f2", "fault", Firing));
        tx.push(notice("site", "site_outage", Firing));
        // Full: another fault is refused.
        assert!(matches!(
            tx.push(notice("f3", "fault", Firing)),
            Pushed::Full(n) if key(&n).0 == "f3"
        ));
        // Full: an offline displaces the newest fault, then the next one.
        assert!(matches!(
            tx.push(notice("off1", "node_offline", Firing)),
            Pushed::Displaced(n) if key(&n).0 == "f2"
        ));
        assert!(matches!(
            tx.push(notice("off2", "region_outage", Firing)),
            Pushed::Displaced(n) if key(&n).0 == "f1"
        ));
        // Only availability notices queued: the newcomer is the one dropped.
        assert!(matches!(
            tx.push(notice("off3", "node_offline", Firing)),
            Pushed::Full(n) if key(&n).0 == "off3"
        ));
        assert_eq!(
            drain(&mut rx),
            vec![
                ("site".into(), Firing),
                ("off1".into(), Firing),
                ("off2".into(), Firing),
            ]
        );
    }

    #[tokio::test]
    async fn recv_waits_for_a_notice_and_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = channel(10);
        let other = tx.clone();
        let waiter = tokio::spawn(async move {
            let first = rx.recv().await.map(|n| key(&n).0);
            let end = rx.recv().await.map(|n| key(&n).0);
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.push(notice("t1", "battery_low", Firing));
        drop(tx);
        drop(other);
        let (first, end) = waiter.await.expect("receiver task");
        assert_eq!(first.as_deref(), Some("t1"));
        assert_eq!(end, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_flood_never_delays_an_offline_by_more_than_one_delivery() {
        // A slow receiver (1 s per delivery) behind 1 000 queued fault notices: the offline
        // pushed last is the next one delivered.
        let (tx, mut rx) = channel(10_000);
        for i in 0..1_000 {
            tx.push(notice(&format!("f{i}"), "fault", Firing));
        }
        let first = rx.recv().await.map(|n| key(&n).0);
        assert_eq!(first.as_deref(), Some("f0"));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        tx.push(notice("off", "node_offline", Firing));
        let next = rx.recv().await.map(|n| key(&n).0);
        assert_eq!(next.as_deref(), Some("off"));
        assert_eq!(tx.len(), 999);
    }
}
