//! The store's tests run on both engines: SQLite in memory, and PostgreSQL (a fresh
//! database on one server per test process, started by `alarmnet_e2e::Postgres`).

use std::sync::Arc;

use alarmnet_e2e::Postgres;

use super::sql::pg_config;
use super::{Db, Store};
use crate::metrics::Metrics;

/// A new, empty PostgreSQL database (migrated), and its URL.
pub(crate) fn postgres_url() -> String {
    Postgres::shared().create_database()
}

/// A connection to a new, empty, migrated PostgreSQL database.
pub(crate) fn postgres_db() -> Db {
    let config = pg_config(&postgres_url(), None).expect("a postgres URL");
    Db::connect(&config).expect("connect to postgres")
}

/// Runs `test` on a fresh database of each engine, saying which (a failure's output shows
/// the engine it failed on).
pub(crate) fn each_engine(test: impl Fn(Db)) {
    eprintln!("engine: sqlite");
    test(Db::open_in_memory().expect("open sqlite"));
    eprintln!("engine: postgres");
    test(postgres_db());
}

/// A store on a new PostgreSQL database, with its reader threads.
pub(crate) fn postgres_store(metrics: Arc<Metrics>) -> Store {
    Store::connect(&postgres_url(), None, metrics).expect("a store on postgres")
}
