//! The Debian packages (`deploy/package.sh`), built from the binaries the test run already
//! has: each builds, carries the right files with the right modes, unpacks into a scratch
//! root (`dpkg -x`), its binary answers `--version`, its systemd unit passes
//! `systemd-analyze verify` without a single warning, and its config is the checked-in
//! example (which the crates' own tests load) and loads in the installed binary (the agent
//! runs `check` on it, the collector starts on it and answers `/healthz`).
//!
//! Then both are installed for real by `dpkg --root` into a scratch root with its own
//! database, maintainer scripts included (run without chroot, with `$DPKG_ROOT` set, and
//! with `adduser`, `getent` and `chown` replaced by stubs that record their calls, so
//! nothing outside the scratch root changes): configured, the installed binaries answer
//! `--version`, the configs are 0640 and handed to the service's group; an upgrade keeps
//! an edited config and the agent's spool, a removal keeps both, a purge deletes them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use std::time::Duration;

use alarmnet_e2e::{Process, binary, free_port, wait_for};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `dpkg-deb -c` as (mode, owner, path) rows.
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                (*f.first()?).to_owned(),
                (*f.get(1)?).to_owned(),
                (*f.last()?).trim_start_matches('.').to_owned(),
            ))
        })
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_debian_packages_build_unpack_and_their_units_verify() {
    if !has("dpkg-deb") {
        eprintln!("dpkg-deb is missing: package test not run");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("debs");
    let built = run(Command::new(workspace().join("deploy/package.sh"))
        .arg("--agent-bin")
        .arg(binary("alarmnet-agent"))
        .arg("--collector-bin")
        .arg(binary("alarmnet-collector"))
        .arg("--out")
        .arg(&out)
        .arg("--fast"));
    let debs: Vec<PathBuf> = String::from_utf8_lossy(&built.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    let arch =
        String::from_utf8_lossy(&run(Command::new("dpkg").arg("--print-architecture")).stdout)
            .trim()
            .to_owned();

    let root = dir.path().join("root");
    for (name, config) in [
        ("alarmnet-agent", "agent"),
        ("alarmnet-collector", "collector"),
    ] {
        let deb = out.join(format!("{name}_{VERSION}_{arch}.deb"));
        assert!(debs.contains(&deb), "{deb:?} not among {debs:?}");
        assert_eq!(field(&deb, "Package"), name);
        assert_eq!(field(&deb, "Version"), VERSION);
        assert_eq!(field(&deb, "Architecture"), arch);
        assert!(field(&deb, "Depends").contains("adduser"));

        let files = contents(&deb);
        let find = |path: &str| {
            files
                .iter()
                .find(|(_, _, p)| p == path)
                .unwrap_or_else(|| panic!("{path} missing from {name}: {files:?}"))
        };
        let (mode, owner, _) = find(&format!("/usr/bin/{name}"));
        assert_eq!((mode.as_str(), owner.as_str()), ("-rwxr-xr-x", "root/root"));
        let (mode, _, _) = find(&format!("/lib/systemd/system/{name}.service"));
        assert_eq!(mode, "-rw-r--r--");
        // Readable by the service's group only (postinst hands it to that group).
        let (mode, _, _) = find(&format!("/etc/alarmnet/{config}.toml"));
        assert_eq!(mode, "-rw-r-----");

        let control = dir.path().join(format!("{name}.control"));
        run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
        let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
        assert_eq!(conffiles.trim(), format!("/etc/alarmnet/{config}.toml"));
        for script in ["postinst", "prerm", "postrm"] {
            run(Command::new("sh").arg("-n").arg(control.join(script)));
        }
        let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
        assert!(postinst.contains(&format!(
            "chown root:{name} \"$DPKG_ROOT/etc/alarmnet/{config}.toml\""
        )));
        assert!(postinst.contains("adduser --system --group"));

        run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
        let installed = root.join("usr/bin").join(name);
        let version = text(&run(Command::new(&installed).arg("--version")));
        assert!(
            version.contains(name) && version.contains(VERSION),
            "{name} --version said: {version}"
        );
        let config_file = root.join("etc/alarmnet").join(format!("{config}.toml"));
        assert_eq!(
            std::fs::read(&config_file).expect("installed config"),
            std::fs::read(workspace().join(format!("deploy/{config}.example.toml")))
                .expect("example config"),
            "the installed config is the checked-in example"
        );

        let unit = std::fs::read_to_string(root.join(format!("lib/systemd/system/{name}.service")))
            .expect("unit");
        for line in [
            "DynamicUser=yes",
            &format!("User={name}"),
            "MemoryMax=",
            "TasksMax=",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            &format!("StateDirectory={name}"),
        ] {
            assert!(unit.contains(line), "{name}.service lacks {line}");
        }
        verify_unit(dir.path(), name, &unit, &installed);
    }

    // The installed agent loads the installed config (64 would mean it is invalid); its
    // checks may find this machine lacking (exit 1 to 3), which is not the point here.
    let check = Command::new(root.join("usr/bin/alarmnet-agent"))
        .arg("check")
        .arg("--config")
        .arg(root.join("etc/alarmnet/agent.toml"))
        .output()
        .expect("run the installed agent");
    assert!(
        matches!(check.status.code(), Some(0..=3)),
        "the installed agent.toml does not load: {}",
        text(&check)
    );

    // The installed collector runs on the installed config, with only its paths and ports
    // moved into the scratch directory (no broker: it runs blind, and still serves HTTP).
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("state dir");
    let http = format!("127.0.0.1:{}", free_port());
    let mut collector = Process::builder(root.join("usr/bin/alarmnet-collector"))
        .name("installed collector")
        .arg("run")
        .arg("--config")
        .arg(root.join("etc/alarmnet/collector.toml"))
        .env("ALARMNET_STORE__PATH", state.join("alarmnet.db"))
        .env("ALARMNET_INFLUX__SPOOL_DIR", state.join("tsdb-spool"))
        .env("ALARMNET_HTTP__LISTEN", &http)
        .env(
            "ALARMNET_MQTT__BROKER",
            format!("mqtt://127.0.0.1:{}", free_port()),
        )
        .spawn();
    let url = format!("http://{http}/healthz");
    wait_for(
        Duration::from_secs(30),
        "the installed collector's /healthz",
        || {
            let url = url.clone();
            async move {
                let r = reqwest::get(url).await.ok()?;
                r.status().is_success().then_some(())
            }
        },
    )
    .await;
    let status = collector.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");

    install_into_a_scratch_root(dir.path(), &out, &arch);
}

/// `dpkg --root` into `dir/installed` with its own admin directory: install, upgrade over
/// an edited config and a spool, remove, purge.
fn install_into_a_scratch_root(dir: &Path, debs: &Path, arch: &str) {
    use std::os::unix::fs::PermissionsExt as _;

    let root = dir.join("installed");
    let admin = root.join("var/lib/dpkg");
    for sub in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(sub)).expect("admin dir");
    }
    std::fs::write(admin.join("status"), "").expect("status file");
    // Stubs for what would change the host: the scripts' user creation and chown (a
    // scratch root has no users), recorded in `calls`.
    let stubs = dir.join("stubs");
    std::fs::create_dir(&stubs).expect("stubs");
    let calls = dir.join("calls");
    for (tool, exit) in [("adduser", 0), ("getent", 2), ("chown", 0)] {
        let stub = stubs.join(tool);
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit {exit}\n",
                calls.display()
            ),
        )
        .expect("stub");
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dpkg = |args: &[&std::ffi::OsStr]| -> String {
        text(&run(Command::new("dpkg")
            .env("PATH", &path)
            .arg(format!("--root={}", root.display()))
            .arg(format!("--admindir={}", admin.display()))
            .args([
                "--force-script-chrootless",
                "--force-not-root",
                // The scratch root has no libc6 or adduser package.
                "--force-depends",
                "--force-confold",
                "--log=/dev/null",
                "--no-triggers",
            ])
            .args(args)))
    };
    let agent_deb = debs.join(format!("alarmnet-agent_{VERSION}_{arch}.deb"));
    let collector_deb = debs.join(format!("alarmnet-collector_{VERSION}_{arch}.deb"));
    dpkg(&[
        "-i".as_ref(),
        agent_deb.as_os_str(),
        collector_deb.as_os_str(),
    ]);

    let status = |name: &str| -> String {
        let out = Command::new("dpkg-query")
            .arg(format!("--admindir={}", admin.display()))
            .args(["-W", "-f=${Status}", name])
            .output()
            .expect("dpkg-query");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o7777
    };
    for (name, config) in [
        ("alarmnet-agent", "agent"),
        ("alarmnet-collector", "collector"),
    ] {
        assert_eq!(status(name), "install ok installed", "{name}");
        let bin = root.join("usr/bin").join(name);
        assert_eq!(mode(&bin), 0o755, "{name} binary mode");
        let version = text(&run(Command::new(&bin).arg("--version")));
        assert!(
            version.contains(name) && version.contains(VERSION),
            "installed {name} --version said: {version}"
        );
        let config_file = root.join(format!("etc/alarmnet/{config}.toml"));
        let m = mode(&config_file);
        assert_eq!(m, 0o640, "{config}.toml mode {m:o}");
        assert_eq!(m & 0o007, 0, "{config}.toml is world-readable");
        assert!(
            root.join(format!("lib/systemd/system/{name}.service"))
                .is_file()
        );
    }
    // Every installed file matches the package's checksums (DEBIAN/md5sums).
    let verified = dpkg(&[
        "--verify".as_ref(),
        "alarmnet-agent".as_ref(),
        "alarmnet-collector".as_ref(),
    ]);
    assert!(verified.trim().is_empty(), "dpkg --verify: {verified}");
    let called = std::fs::read_to_string(&calls).expect("calls");
    for name in ["alarmnet-agent", "alarmnet-collector"] {
        assert!(
            called.contains(&format!(
                "adduser --system --group --no-create-home --home /nonexistent {name}"
            )),
            "{called}"
        );
        let config = name.trim_start_matches("alarmnet-");
        assert!(
            called.contains(&format!(
                "chown root:{name} {}",
                root.join(format!("etc/alarmnet/{config}.toml")).display()
            )),
            "the config is not handed to the service's group: {called}"
        );
    }

    // Upgrade (the same version again takes the same path): the edited config and the
    // spool stay.
    let agent_config = root.join("etc/alarmnet/agent.toml");
    let mut edited = std::fs::read_to_string(&agent_config).expect("config");
    edited.push_str("\n# edited on site\n");
    std::fs::write(&agent_config, &edited).expect("edit config");
    let spool = root.join("var/lib/private/alarmnet-agent/spool");
    std::fs::create_dir_all(&spool).expect("spool dir");
    std::fs::write(spool.join("spool-00000001.log"), b"records").expect("spool file");
    dpkg(&["-i".as_ref(), agent_deb.as_os_str()]);
    assert_eq!(status("alarmnet-agent"), "install ok installed");
    assert_eq!(
        std::fs::read_to_string(&agent_config).expect("config"),
        edited,
        "an upgrade replaced the edited config"
    );
    assert!(
        spool.join("spool-00000001.log").is_file(),
        "an upgrade lost the spool"
    );

    // Removal keeps the config and the state; purge deletes both.
    dpkg(&["-r".as_ref(), "alarmnet-agent".as_ref()]);
    assert!(!root.join("usr/bin/alarmnet-agent").exists());
    assert!(agent_config.is_file(), "removal deleted the config");
    assert!(
        spool.join("spool-00000001.log").is_file(),
        "removal lost the spool"
    );
    dpkg(&["-P".as_ref(), "alarmnet-agent".as_ref()]);
    assert!(!agent_config.exists(), "purge kept the config");
    assert!(
        !root.join("var/lib/private/alarmnet-agent").exists(),
        "purge kept the state directory"
    );
    assert!(root.join("usr/bin/alarmnet-collector").is_file());
}

/// `systemd-analyze verify` of the unit with its `ExecStart=` pointing at the unpacked
/// binary (verify checks that the binary is executable); any output is a failure, since
/// verify reports unknown or misplaced keys as warnings with exit code 0.
fn verify_unit(dir: &Path, name: &str, unit: &str, installed: &Path) {
    if !has("systemd-analyze") {
        eprintln!(
            "systemd-analyze is missing (Debian package `systemd`): {name}.service not verified"
        );
        return;
    }
    let copy = dir.join(format!("{name}.service"));
    let exec = format!("/usr/bin/{name} ");
    assert!(unit.contains(&format!("ExecStart={exec}")));
    std::fs::write(
        &copy,
        unit.replace(&exec, &format!("{} ", installed.display())),
    )
    .expect("write unit copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let said = text(&out);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {name}.service: {said}"
    );
}
