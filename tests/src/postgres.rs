//! A private PostgreSQL server (Debian's `postgresql` package, no system service): `initdb`
//! into a temp dir and `postgres` on a free loopback port, with one fresh database per
//! caller.
//!
//! Two ways to have one:
//! - [`Postgres::shared`]: one server per test process, for the store's test suite (hundreds
//!   of tests, each in its own database). Statics are never dropped, so the server is run
//!   under a small shell watchdog that stops it and removes its files once the test
//!   process is gone.
//! - [`Postgres::start`]: a server of one's own, stopped when the handle is dropped (tests
//!   that stop or kill the database on purpose).
//!
//! - [`Postgres::start_tls`] / [`Postgres::shared_tls`]: a server that takes only TLS
//!   connections from 127.0.0.1 (`hostssl`; `hostnossl` is rejected), its certificate
//!   issued for `127.0.0.1` by a CA made for the test ([`Postgres::ca_file`]).
//!
//! The harness is synchronous (plain child processes and the PostgreSQL command-line
//! tools), so it serves sync unit tests and async tests alike.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::ids::free_port;

/// Where Debian installs the server's programs.
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The superuser `initdb` creates, and the user every URL names.
const USER: &str = "alarmnet";

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    root: PathBuf,
    /// The watchdog shell (leader of the server's process group).
    child: Option<Child>,
    databases: AtomicU32,
    /// Where the harness's own tools connect: `127.0.0.1`, or the socket directory on a
    /// TLS-only server (its TCP port refuses plain connections).
    admin_host: String,
    /// With TLS: the CA that issued the server's certificate (PEM).
    ca_file: Option<PathBuf>,
}

/// The uid and gid of the `postgres` system user: `initdb` refuses to run as root.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != "postgres" {
            return None;
        }
        let uid = f.nth(1)?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A command that runs as the `postgres` user when this process is root.
fn command(program: &str) -> Command {
    let mut c = Command::new(Path::new(BIN).join(program));
    if is_root() {
        let (uid, gid) = postgres_user().expect("a `postgres` user (Debian's postgresql package)");
        c.uid(uid).gid(gid);
    }
    c
}

impl Postgres {
    /// One server for the whole test process, started on first use.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    /// One TLS-only server ([`Self::start_tls`]) for the whole test process.
    pub fn shared_tls() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start_tls)
    }

    /// A server that takes only TLS connections over TCP: `ssl=on` with a certificate for
    /// `127.0.0.1` (and no other name) issued by a CA made here ([`Self::ca_file`]), and a
    /// `pg_hba.conf` with `hostssl` for 127.0.0.1 and `hostnossl … reject`.
    pub fn start_tls() -> Postgres {
        Self::start_as(false, true)
    }

    /// Starts a server of one's own on a free port with an empty cluster, and waits until
    /// it accepts connections. Panics (with the server's log) when it cannot.
    pub fn start() -> Postgres {
        Self::start_as(false, false)
    }

    /// [`Self::start`] with durable commits (fsync, full page writes, synchronous commit),
    /// as a production server runs: for benchmarks of the store.
    pub fn start_durable() -> Postgres {
        Self::start_as(true, false)
    }

    fn start_as(durable: bool, tls: bool) -> Postgres {
        assert!(
            Path::new(BIN).join("postgres").is_file(),
            "PostgreSQL is not installed ({BIN}/postgres): apt-get install postgresql"
        );
        let root = std::env::temp_dir().join(format!(
            "alarmnet-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&root).expect("create the server's temp dir");
        if is_root() {
            let (uid, gid) = postgres_user().expect("a `postgres` user");
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).expect("chown the temp dir");
        }
        let data = root.join("data");
        let out = command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let tls_files = tls.then(|| write_tls_files(&root));
        let log = root.join("postgres.log");
        // The watchdog: runs the server, and stops it and removes its files when the test
        // process (`$1`) is gone or the server ends.
        let script = r#"
watch=$1; shift
"$@" & pg=$!
trap 'kill -INT $pg 2>/dev/null' INT TERM
while [ -d /proc/$watch ] && kill -0 $pg 2>/dev/null; do sleep 0.5; done
kill -INT $pg 2>/dev/null; wait $pg
rm -rf "$ROOT"
"#;
        let mut c = Command::new("/bin/sh");
        c.arg("-c")
            .arg(script)
            .arg("sh")
            .arg(std::process::id().to_string())
            .arg(Path::new(BIN).join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&root)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=300"]);
        if let Some(files) = &tls_files {
            c.args(["-c", "ssl=on"])
                .arg("-c")
                .arg(format!("ssl_cert_file={}", files.cert.display()))
                .arg("-c")
                .arg(format!("ssl_key_file={}", files.key.display()))
                .arg("-c")
                .arg(format!("hba_file={}", files.hba.display()));
        }
        if !durable {
            // A test server: durability is not what is tested here, speed is.
            c.args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        c.env("ROOT", &root)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("create the server log"))
            .stderr(std::fs::File::create(root.join("postgres.err")).expect("create a log"))
            .process_group(0);
        if is_root() {
            let (uid, gid) = postgres_user().expect("a `postgres` user");
            c.uid(uid).gid(gid);
        }
        let child = c.spawn().expect("start postgres");
        let server = Postgres {
            port,
            child: Some(child),
            databases: AtomicU32::new(0),
            admin_host: match &tls_files {
                Some(_) => root.display().to_string(),
                None => "127.0.0.1".into(),
            },
            ca_file: tls_files.map(|f| f.ca),
            root,
        };
        server.wait_ready();
        server
    }

    /// `program` (a client: `psql`, `createdb`, `pg_isready`) aimed at this server as its
    /// superuser, over the socket the harness administers it by.
    fn client(&self, program: &str) -> Command {
        let mut c = command(program);
        c.args([
            "-h",
            &self.admin_host,
            "-p",
            &self.port.to_string(),
            "-U",
            USER,
        ]);
        c
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = self
                .client("pg_isready")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start within {READY_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        ["postgres.log", "postgres.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.root.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// With [`Self::start_tls`]: the PEM file of the CA that issued the server's
    /// certificate.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let out = self
            .client("createdb")
            .arg(&name)
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(&name)
    }

    /// Runs `sql` with `psql` on database `db` and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args([
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Makes database `db` unreachable, as a server restart looks to its clients: every
    /// connection to it is dropped, and new ones are refused until [`Self::let_in`].
    pub fn cut_off(&self, db: &str) {
        self.psql(
            "postgres",
            &format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS false"),
        );
        self.psql(
            "postgres",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = '{db}'"
            ),
        );
    }

    /// Takes connections to database `db` again (after [`Self::cut_off`]).
    pub fn let_in(&self, db: &str) {
        self.psql(
            "postgres",
            &format!("ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS true"),
        );
    }

    /// Stops the server (fast shutdown) and waits for it; its files are removed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = format!("-{}", child.id());
        let _ = Command::new("kill").args(["-INT", "--", &group]).status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The files of a TLS-only server.
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    hba: PathBuf,
}

/// Makes a CA, the server's certificate for `127.0.0.1` and its key (mode 0600, owned by
/// the server's user: postgres refuses a key others can read), and a `pg_hba.conf` that
/// takes TLS from 127.0.0.1 only (the harness's own tools use the socket).
fn write_tls_files(root: &Path) -> TlsFiles {
    use std::os::unix::fs::PermissionsExt as _;
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "alarmnet test PostgreSQL CA");
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("server params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "127.0.0.1");
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    let files = TlsFiles {
        ca: root.join("ca.pem"),
        cert: root.join("server.crt"),
        key: root.join("server.key"),
        hba: root.join("pg_hba.conf"),
    };
    std::fs::write(&files.ca, ca.pem()).expect("write the CA");
    std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
    std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600))
        .expect("chmod the key");
    std::fs::write(
        &files.hba,
        "local all all trust\n\
         hostssl all all 127.0.0.1/32 trust\n\
         hostnossl all all 127.0.0.1/32 reject\n",
    )
    .expect("write pg_hba.conf");
    if is_root() {
        let (uid, gid) = postgres_user().expect("a `postgres` user");
        for f in [&files.ca, &files.cert, &files.key, &files.hba] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown a TLS file");
        }
    }
    files
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- postgres log -----\n{}", crate::tail(&self.log(), 40));
        }
        self.stop();
    }
}
