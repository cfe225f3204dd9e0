//! `[store]`: where the store lives (an SQLite file, or a PostgreSQL database several
//! collectors share), its reserve file and its backlog bound.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::StoreError;
use super::pg::{PgTarget, PgTls, PgTlsFiles};
use crate::secret::{self, Secret};

/// `[store]`: the embedded SQLite store by default, PostgreSQL with `url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file; its directory must exist and be writable. Not used with
    /// `url`.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// A PostgreSQL database instead of the file: `postgres://user@host:port/dbname`
    /// (libpq's URL form, e.g. `?connect_timeout=5`). Several collectors may share one.
    /// TLS as libpq: `sslmode=disable|prefer|require|verify-ca|verify-full` (`allow` is
    /// refused), `sslrootcert=`, `sslcert=`, `sslkey=`. Without `sslmode`: `verify-full`
    /// when a CA is given, else `prefer` (TLS if the server offers it, unauthenticated).
    #[serde(default)]
    pub url: Option<Secret>,
    /// With `url`: the PEM file of the CA that signs the PostgreSQL server's certificate
    /// (as `sslrootcert`). Set it so that the server is authenticated and the password
    /// never goes to an impostor or in clear: `sslmode` then defaults to `verify-full`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `url`: a client certificate (PEM) for the server's `cert` authentication (as
    /// `sslcert`), with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file` (as `sslkey`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A file holding the PostgreSQL user's password (read at start; a relative name is
    /// looked up in `$CREDENTIALS_DIRECTORY`), so that the URL carries none.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Size of the reserve file kept next to the database (`alarmnet.db.reserve`). When a
    /// commit fails because the disk is full, the file is deleted so the store has room to
    /// commit what it holds and recover; it is made again once the disk has twice this much
    /// free. `"0"` keeps no reserve.
    #[serde(default = "default_reserve")]
    pub reserve: ByteSize,
    /// Most writes (transitions, alerts, faults, test receipts, ...) held in memory while
    /// the store cannot commit. Beyond it, the newest fault, test and readiness rows are
    /// dropped first, then the others, each counted in
    /// `alarmnet_store_backlog_dropped_total{kind}`; judging and notifying go on.
    #[serde(default = "default_max_backlog")]
    pub max_backlog: usize,
    /// With `url`: how long the active collector's lease lasts without renewal (it renews
    /// every third of it). A standby takes over within this long of the active one
    /// stopping or stalling; the active one stops itself when it could not renew for this
    /// long. See `docs/operations.md`, "Active and standby".
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: std::time::Duration,
    /// With `url`: this collector serves only these regions (a region shard; see
    /// `docs/scale.md`). Collectors with the same `shard` name are that shard's active and
    /// standbys; collectors of other shards serve the other regions on the same database.
    #[serde(default)]
    pub shard: Option<String>,
    /// The regions of `shard`.
    #[serde(default)]
    pub regions: Vec<String>,
}

/// A size in bytes: a number, or a string with a unit (`"64MiB"`, `"512KiB"`, `"1GiB"`,
/// `"10MB"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. \"64MiB\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn default_reserve() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_backlog() -> usize {
    1_000_000
}

fn default_lease() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

fn default_store_path() -> PathBuf {
    "/var/lib/alarmnet-collector/alarmnet.db".into()
}
impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: default_store_path(),
            url: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            password_file: None,
            reserve: default_reserve(),
            max_backlog: default_max_backlog(),
            lease: default_lease(),
            shard: None,
            regions: Vec::new(),
        }
    }
}

/// The regions a shard serves (`[store] shard` and `regions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardScope {
    pub name: String,
    pub regions: std::collections::BTreeSet<alarmnet_protocol::RegionId>,
}

impl ShardScope {
    pub fn serves(&self, region: &alarmnet_protocol::RegionId) -> bool {
        self.regions.contains(region)
    }
}

impl StoreConfig {
    /// The shard this collector serves, if it is one (after [`Self::problems`]).
    pub fn shard_scope(&self) -> Option<ShardScope> {
        let name = self.shard.clone()?;
        Some(ShardScope {
            name,
            regions: self
                .regions
                .iter()
                .filter_map(|r| alarmnet_protocol::RegionId::new(r.clone()).ok())
                .collect(),
        })
    }
}

/// Where the store is, as `[store]` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL database, with the password from `password_file` when given and the
    /// TLS files of `[store]`.
    Postgres {
        url: Secret,
        password: Option<Secret>,
        tls: PgTlsFiles,
    },
}

impl Location {
    /// What a PostgreSQL connection is made from (its TLS files read now); `None` for
    /// SQLite.
    pub fn pg_target(&self) -> Result<Option<PgTarget>, StoreError> {
        match self {
            Location::Sqlite(_) => Ok(None),
            Location::Postgres { url, password, tls } => Ok(Some(PgTarget::new(
                url.expose(),
                password.as_ref().map(|p| p.expose()),
                tls,
            )?)),
        }
    }

    /// What logs and errors may name: the file, or the URL without its password (with its
    /// `sslmode`).
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres { url, tls, .. } => match PgTls::settle(url.expose(), tls)
                .ok()
                .and_then(|t| Some((t.url().parse::<postgres::Config>().ok()?, t.mode)))
            {
                Some((c, mode)) => {
                    let host = c.get_hosts().first().map(|h| match h {
                        postgres::config::Host::Tcp(h) => h.clone(),
                        postgres::config::Host::Unix(p) => p.display().to_string(),
                    });
                    format!(
                        "postgres://{}@{}:{}/{}?sslmode={}",
                        c.get_user().unwrap_or_default(),
                        host.unwrap_or_default(),
                        c.get_ports().first().copied().unwrap_or(5432),
                        c.get_dbname().unwrap_or_default(),
                        mode.as_str()
                    )
                }
                None => "postgres://<unreadable url>".into(),
            },
        }
    }
}

impl StoreConfig {
    /// Where the store is: reads `password_file` (from `credentials` when relative).
    pub fn location(&self, credentials: Option<&Path>) -> Result<Location, String> {
        let Some(url) = &self.url else {
            return Ok(Location::Sqlite(self.path.clone()));
        };
        let password = self
            .password_file
            .as_ref()
            .map(|f| secret::read_file("store.password_file", f, credentials))
            .transpose()?;
        Ok(Location::Postgres {
            url: url.clone(),
            password,
            tls: self.tls_files(),
        })
    }

    fn tls_files(&self) -> PgTlsFiles {
        PgTlsFiles {
            ca: self.ca_file.clone(),
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        }
    }

    /// Every problem, each under its `store.` key.
    pub fn problems(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.path.as_os_str().is_empty() {
            errors.push("store.path: must not be empty".into());
        }
        if let Some(url) = &self.url {
            let url = url.expose();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                errors.push("store.url: must be a postgres:// URL".into());
            } else {
                match PgTls::settle(url, &self.tls_files()) {
                    Err(problems) => errors.extend(problems),
                    Ok(tls) => {
                        if let Err(e) = tls.url().parse::<postgres::Config>() {
                            errors.push(format!("store.url: {e}"));
                        }
                        errors.extend(tls.file_problems());
                    }
                }
            }
        } else {
            for (key, set) in [
                ("password_file", self.password_file.is_some()),
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
            ] {
                if set {
                    errors.push(format!("store.{key}: only with store.url (PostgreSQL)"));
                }
            }
        }
        if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(600))
            .contains(&self.lease)
        {
            errors.push("store.lease: must be 1s to 10m".into());
        }
        match (&self.shard, self.regions.is_empty()) {
            (None, true) => {}
            (None, false) => errors.push("store.regions: only with store.shard".into()),
            (Some(_), true) => errors.push("store.shard: needs store.regions".into()),
            (Some(name), false) => {
                if self.url.is_none() {
                    errors.push("store.shard: only with store.url (PostgreSQL)".into());
                }
                if alarmnet_protocol::Name::new(name.clone()).is_err() {
                    errors.push(format!("store.shard: {name:?} is not a valid name"));
                }
                for r in &self.regions {
                    if let Err(e) = alarmnet_protocol::RegionId::new(r.clone()) {
                        errors.push(format!("store.regions: {r:?}: {e}"));
                    }
                }
            }
        }
        if self.max_backlog < 1_000 {
            errors.push("store.max_backlog: must be at least 1000 writes".into());
        }
        errors
    }
}
