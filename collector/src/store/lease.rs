//! The active collector's lease (PostgreSQL only; see [`crate::ha`]): a row per lease
//! name saying who holds it, since which takeover (`epoch`) and until when. Times are
//! the database's clock, so the collectors' clocks need not agree.
//!
//! Design: a lease row, not a session advisory lock. An advisory lock is released only
//! when its connection closes: a collector that stalls (or whose host vanishes without
//! closing its sockets) would keep it for as long as the server keeps the connection. A
//! row with an expiry is given up by stalling too. The `epoch` fences: every write
//! transaction of the active collector checks, under a share lock on the row, that it
//! still holds the epoch it took ([`Fence`]), so a holder that stalled past its lease and
//! wakes up cannot commit anything after another collector took over.

use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicI64};

use super::StoreError;
use super::db::Db;
use super::sql::args;

/// The database's clock in milliseconds.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// What [`Db::try_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseTry {
    /// The lease is this collector's now, under `epoch`. `from` held it before (an
    /// expired holder other than this collector: a takeover).
    Taken { epoch: i64, from: Option<String> },
    /// Another collector holds it for `remaining_ms` more.
    Held { holder: String, remaining_ms: i64 },
}

impl Db {
    /// Takes lease `name` for `holder` for `ttl_ms` if nobody holds it, it expired, or
    /// `holder` held it (a restart of the same collector).
    pub fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<LeaseTry, StoreError> {
        let c = self.conn();
        c.begin_write()?;
        let result = (|| {
            c.execute(
                "INSERT INTO collector_lease (name, holder, epoch, expires_at, renewed_at)
                 VALUES (?1, '', 0, 0, 0) ON CONFLICT (name) DO NOTHING",
                args![name],
            )?;
            let (current, epoch, remaining) = c.query_one(
                &format!(
                    "SELECT holder, epoch, expires_at - {NOW_MS} FROM collector_lease
                     WHERE name = ?1 FOR UPDATE"
                ),
                args![name],
                |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
            )?;
            if remaining > 0 && !current.is_empty() && current != holder {
                return Ok(LeaseTry::Held {
                    holder: current,
                    remaining_ms: remaining,
                });
            }
            c.execute(
                &format!(
                    "UPDATE collector_lease SET holder = ?2, epoch = ?3,
                         expires_at = {NOW_MS} + ?4, renewed_at = {NOW_MS}
                     WHERE name = ?1"
                ),
                args![name, holder, epoch + 1, ttl_ms],
            )?;
            Ok(LeaseTry::Taken {
                epoch: epoch + 1,
                from: (!current.is_empty() && current != holder).then_some(current),
            })
        })();
        finish(c, result)
    }

    /// Extends lease `name` by `ttl_ms` from now if `holder` still holds it under `epoch`.
    pub fn renew_lease(
        &self,
        name: &str,
        holder: &str,
        epoch: i64,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            &format!(
                "UPDATE collector_lease SET expires_at = {NOW_MS} + ?4, renewed_at = {NOW_MS}
                 WHERE name = ?1 AND holder = ?2 AND epoch = ?3"
            ),
            args![name, holder, epoch, ttl_ms],
        )?;
        Ok(n == 1)
    }

    /// Gives lease `name` up at once (a clean stop), if `holder` still holds it under
    /// `epoch`: a standby takes over without waiting for the expiry.
    pub fn release_lease(&self, name: &str, holder: &str, epoch: i64) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE collector_lease SET expires_at = 0
             WHERE name = ?1 AND holder = ?2 AND epoch = ?3",
            args![name, holder, epoch],
        )?;
        Ok(())
    }

    /// Whether `holder` holds lease `name` under `epoch`, locking the row against a
    /// takeover until the caller's transaction ends.
    fn holds_lease(&self, name: &str, holder: &str, epoch: i64) -> Result<bool, StoreError> {
        let found = self.conn().query_opt(
            "SELECT 1 FROM collector_lease
             WHERE name = ?1 AND holder = ?2 AND epoch = ?3 FOR SHARE",
            args![name, holder, epoch],
            |r| r.get::<i64>(0),
        )?;
        Ok(found.is_some())
    }
}

fn finish<T>(c: &super::sql::Conn, result: Result<T, StoreError>) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            c.batch("COMMIT")?;
            Ok(v)
        }
        Err(e) => {
            let _ = c.batch("ROLLBACK");
            Err(e)
        }
    }
}

/// Fences the store's writes to the lease this collector holds: once armed (when the
/// collector becomes active), every write transaction commits only while the lease is
/// still its own under the armed epoch. Unarmed (SQLite, or a standby) it costs nothing.
#[derive(Debug)]
pub struct Fence {
    name: String,
    holder: String,
    /// 0: not armed.
    epoch: AtomicI64,
    lost: AtomicBool,
}

impl Fence {
    pub fn new(name: &str, holder: &str) -> Self {
        Self {
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch: AtomicI64::new(0),
            lost: AtomicBool::new(false),
        }
    }

    /// From now on, writes commit only under lease `epoch`.
    pub fn arm(&self, epoch: i64) {
        self.epoch.store(epoch, Release);
    }

    /// A write found the lease taken by another collector.
    pub fn lost(&self) -> bool {
        self.lost.load(Acquire)
    }

    /// Checks the lease inside the writer's open transaction: `Err` when the lease is not
    /// this collector's any more (the transaction must roll back).
    pub(super) fn check(&self, db: &Db) -> Result<(), String> {
        let epoch = self.epoch.load(Acquire);
        if epoch == 0 {
            return Ok(());
        }
        match db.holds_lease(&self.name, &self.holder, epoch) {
            Ok(true) => Ok(()),
            Ok(false) => {
                self.lost.store(true, Release);
                Err(format!(
                    "this collector ({}) lost the active lease (epoch {epoch}) to another collector; nothing was written",
                    self.holder
                ))
            }
            Err(e) => Err(format!("cannot check the active lease: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::store::engines::postgres_url;
    use crate::store::sql::pg_config;

    #[test]
    fn the_lease_is_taken_when_free_expired_or_ones_own_and_held_otherwise() {
        let config = pg_config(&postgres_url(), None).expect("url");
        let db = Db::connect(&config).expect("connect");
        let taken = |holder: &str, ttl_ms| db.try_lease("active", holder, ttl_ms).expect("try");
        assert_eq!(
            taken("a", 60_000),
            LeaseTry::Taken {
                epoch: 1,
                from: None
            }
        );
        let LeaseTry::Held {
            holder,
            remaining_ms,
        } = taken("b", 60_000)
        else {
            panic!("b must not take a held lease");
        };
        assert_eq!(holder, "a");
        assert!(remaining_ms > 50_000, "{remaining_ms}");
        // The same collector restarted takes its own lease back at once.
        assert_eq!(
            taken("a", 1),
            LeaseTry::Taken {
                epoch: 2,
                from: None
            }
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        // Expired: a takeover, from a.
        assert_eq!(
            taken("b", 60_000),
            LeaseTry::Taken {
                epoch: 3,
                from: Some("a".into())
            }
        );
        assert!(!db.renew_lease("active", "a", 2, 60_000).expect("renew"));
        assert!(db.renew_lease("active", "b", 3, 60_000).expect("renew"));
        db.release_lease("active", "b", 3).expect("release");
        assert_eq!(
            taken("c", 60_000),
            LeaseTry::Taken {
                epoch: 4,
                from: Some("b".into())
            },
            "a released lease is free at once"
        );
    }

    /// A collector that lost its lease (it stalled, another took over) commits nothing:
    /// its write is refused with the reason, and its fence says so.
    #[test]
    fn writes_are_fenced_once_the_lease_is_taken_over() {
        // The blocking PostgreSQL client must not run inside a runtime: only the store's
        // calls do.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let url = postgres_url();
        let store =
            crate::store::Store::connect(&url, None, Arc::new(Metrics::new())).expect("store");
        let leases = Db::connect_reader(&pg_config(&url, None).expect("url")).expect("connect");
        let fence = Arc::new(Fence::new("active", "a"));
        store.set_fence(fence.clone());
        let LeaseTry::Taken { epoch, .. } = leases.try_lease("active", "a", 1).expect("try") else {
            panic!("a free lease");
        };
        fence.arm(epoch);
        let write = |at: u64| {
            store.call(move |db| db.set_pruned_before(crate::model::UnixMillis::from_millis(at)))
        };
        rt.block_on(write(1))
            .expect("a holds the lease: the write commits");
        std::thread::sleep(std::time::Duration::from_millis(20));
        let taken = leases.try_lease("active", "b", 60_000).expect("try");
        assert!(matches!(taken, LeaseTry::Taken { .. }), "{taken:?}");
        assert!(!fence.lost(), "not known before a write");
        let refused = rt.block_on(write(2)).expect_err("fenced");
        assert!(
            refused.to_string().contains("lost the active lease"),
            "{refused}"
        );
        assert!(fence.lost());
        assert_eq!(
            rt.block_on(store.read(|db| db.pruned_before()))
                .expect("read"),
            Some(crate::model::UnixMillis::from_millis(1)),
            "nothing of the refused write was committed"
        );
    }

    /// The store's threads open their connections again after the server dropped them (a
    /// restart): while it is unreachable, writes and reads fail with its error; once it
    /// takes connections again, the next ones succeed.
    #[test]
    fn the_store_connects_again_after_the_server_dropped_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let server = alarmnet_e2e::Postgres::shared();
        let url = server.create_database();
        let name = url.rsplit('/').next().expect("a database name");
        let store =
            crate::store::Store::connect(&url, None, Arc::new(Metrics::new())).expect("store");
        let write = |at: u64| {
            store.call(move |db| db.set_pruned_before(crate::model::UnixMillis::from_millis(at)))
        };
        let read = || store.read(|db| db.pruned_before());
        rt.block_on(write(1)).expect("written");

        server.cut_off(name);
        let refused = rt.block_on(write(2)).expect_err("the server is gone");
        assert!(refused.to_string().contains("postgres"), "{refused}");
        assert!(rt.block_on(read()).is_err(), "reads fail too");

        server.let_in(name);
        rt.block_on(write(3)).expect("connected again");
        assert_eq!(
            rt.block_on(read()).expect("read"),
            Some(crate::model::UnixMillis::from_millis(3))
        );
    }
}
