//! Locating the workspace's built binaries and running a child process whose output is
//! captured to files, signalled by name, and killed when the handle is dropped.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::wait::POLL_INTERVAL;

/// The path of the workspace binary `name`, built by `cargo build --workspace --bins`.
///
/// Looks in `$ALARMNET_E2E_BIN_DIR` when set (a measurement can run release binaries from a
/// debug test), then beside the running test executable (`<target>/debug/deps/..`), then in
/// `$CARGO_TARGET_DIR/debug`, then in the workspace's `target/debug`. Tests never run cargo
/// themselves: a build inside a test would race the other tests and hide build errors.
pub fn binary(name: &str) -> PathBuf {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let mut tried = Vec::new();
    for dir in binary_dirs() {
        let path = dir.join(&file);
        if path.is_file() {
            return path;
        }
        tried.push(path.display().to_string());
    }
    panic!(
        "binary `{name}` not found (tried {}): run `cargo build --workspace --bins` first",
        tried.join(", ")
    );
}

fn binary_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("ALARMNET_E2E_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name().is_some_and(|n| n == "deps")
        && let Some(profile) = deps.parent()
    {
        dirs.push(profile.to_path_buf());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        // A relative target dir is relative to where cargo ran: the workspace root.
        dirs.push(workspace.join(target).join("debug"));
    }
    dirs.push(workspace.join("target").join("debug"));
    dirs
}

/// How to start a [`Process`]: program, arguments, environment, working directory.
#[derive(Debug)]
pub struct ProcessBuilder {
    program: PathBuf,
    name: String,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    env_removes: Vec<OsString>,
    current_dir: Option<PathBuf>,
}

impl ProcessBuilder {
    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the child (the rest is inherited).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Removes an inherited environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_removes.push(key.into());
        self
    }

    /// Runs the child in `dir` instead of the test's working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// The label used in log output (defaults to the program's file name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Starts the child with stdin closed and stdout/stderr captured to files.
    pub fn spawn(self) -> Process {
        let dir = tempfile::Builder::new()
            .prefix(&format!("alarmnet-e2e-{}-", sanitize(&self.name)))
            .tempdir()
            .expect("create a temp dir for process output");
        let stdout_path = dir.path().join("stdout.log");
        let stderr_path = dir.path().join("stderr.log");
        let mut command = std::process::Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create stdout.log"))
            .stderr(File::create(&stderr_path).expect("create stderr.log"));
        for key in &self.env_removes {
            command.env_remove(key);
        }
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        if let Some(cwd) = &self.current_dir {
            command.current_dir(cwd);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        Process {
            name: self.name,
            child,
            exit: None,
            stdout_path,
            stderr_path,
            _dir: dir,
        }
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A running child process. Dropping the handle kills it (SIGKILL) and, if the test is
/// panicking, prints the tail of its stdout and stderr.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: std::process::Child,
    exit: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: TempDir,
}

impl Process {
    /// Prepares to run `program` (usually `binary("alarmnet-agent")`).
    pub fn builder(program: impl Into<PathBuf>) -> ProcessBuilder {
        let program = program.into();
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.display().to_string());
        ProcessBuilder {
            program,
            name,
            args: Vec::new(),
            envs: Vec::new(),
            env_removes: Vec::new(),
            current_dir: None,
        }
    }

    /// The label given to this process in log output.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name: `TERM`, `KILL`, `STOP`, `CONT`, `INT`, `HUP`, ...
    ///
    /// Panics if the process has already been reaped (its pid may belong to someone else).
    pub fn signal(&mut self, signal: &str) {
        assert!(
            self.exit.is_none() && self.try_exit().is_none(),
            "cannot send SIG{signal} to {}: it has already exited",
            self.name
        );
        send_signal(self.pid(), signal);
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("query child status");
        }
        self.exit
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGTERM, then SIGKILL if the process has not exited within `grace`. Returns how it
    /// exited.
    pub async fn terminate(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        send_signal(self.pid(), "TERM");
        if let Some(status) = self.wait_exit(grace).await {
            return status;
        }
        self.kill_and_reap()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill_and_reap(&mut self) -> ExitStatus {
        if let Some(status) = self.try_exit() {
            return status;
        }
        // Ignore the error: the process may have exited since `try_exit`.
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for a killed child");
        self.exit = Some(status);
        status
    }

    /// Everything the process has written to stdout so far (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything the process has written to stderr so far (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Where stdout is captured.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// Where stderr is captured.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Waits until `needle` appears in stdout or stderr. Panics after `timeout`, or as soon
    /// as the process exits without having printed it.
    pub async fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let exited = self.try_exit();
            if self.stdout_text().contains(needle) || self.stderr_text().contains(needle) {
                return;
            }
            if let Some(status) = exited {
                panic!(
                    "{} exited ({status}) without printing {needle:?}\n{}",
                    self.name,
                    self.output_tail(40)
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not print {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.output_tail(40)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The last `lines` lines of stdout and of stderr, labelled.
    pub fn output_tail(&self, lines: usize) -> String {
        format!(
            "----- {name} stdout (last {lines} lines) -----\n{}\n\
             ----- {name} stderr (last {lines} lines) -----\n{}\n\
             ----- end of {name} -----",
            crate::tail(&self.stdout_text(), lines).trim_end(),
            crate::tail(&self.stderr_text(), lines).trim_end(),
            name = self.name,
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill_and_reap();
        if std::thread::panicking()
            && (!self.stdout_text().is_empty() || !self.stderr_text().is_empty())
        {
            eprintln!("{}", self.output_tail(60));
        }
    }
}

/// Sends `signal` (a name such as `TERM`) to `pid` with the `kill` command: the workspace
/// forbids `unsafe`, so no direct `libc::kill`.
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the `kill` command");
    assert!(status.success(), "kill -s {signal} {pid} failed: {status}");
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
