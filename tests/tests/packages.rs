//! The Debian packages (`deploy/package.sh`), built from the binaries the test run already
//! has: each builds, carries the right files with the right modes, unpacks into a scratch
//! root (`dpkg -x`), its binary answers `--version`, its systemd unit passes
//! `systemd-analyze verify` without a single warning, and its config is the checked-in
//! example (which the crates' own tests load) and loads in the installed binary (the agent
//! runs `check` on it, the collector starts on it and answers `/healthz`).

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
        assert!(postinst.contains(&format!("chown root:{name} /etc/alarmnet/{config}.toml")));
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
