//! `exec`: any Nagios/Monitoring-Plugins-style command. Exit code 0..3 is the status
//! (anything else, a signal or a timeout is `unknown`), the first line of output the message,
//! and perfdata after `|` become metrics. Test procedures run through the same code.

use std::process::Stdio;
use std::time::Duration;

use alarmnet_protocol::MetricName;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::config::sanitize_metric;
use crate::health::{CheckOutcome, Status};

/// Output beyond this many bytes per stream is not read (the plugin then sees a closed pipe).
const MAX_OUTPUT: u64 = 64 * 1024;
/// How long output may still arrive after the command exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// An `exec` check.
#[derive(Debug)]
pub struct Exec {
    command: Vec<String>,
}

impl Exec {
    pub fn new(command: Vec<String>) -> Self {
        Self { command }
    }

    pub async fn run(&self) -> CheckOutcome {
        match run_command(&self.command).await {
            Err(e) => CheckOutcome {
                status: Status::Unknown,
                message: e,
                metrics: Vec::new(),
            },
            Ok(run) => {
                let plugin = parse_output(&run.stdout, &run.stderr);
                let (status, message) = match run.exit {
                    Exit::Code(code @ 0..=3) => (Status::from_exit_code(code), plugin.message),
                    Exit::Code(code) => (
                        Status::Unknown,
                        format!("exit code {code}: {}", plugin.message),
                    ),
                    Exit::Signal(sig) => (
                        Status::Unknown,
                        format!("killed by signal {sig}: {}", plugin.message),
                    ),
                };
                CheckOutcome {
                    status,
                    message,
                    metrics: plugin.metrics,
                }
            }
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// A finished command.
#[derive(Debug)]
pub struct CommandRun {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` (no shell) in its own process group with stdin closed. Dropping the future
/// (a timeout) kills the whole group, so a plugin's children do not outlive it either; so
/// does a child that exits while something it started still holds its output.
/// `Err` when the program cannot be started.
pub async fn run_command(argv: &[String]) -> Result<CommandRun, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut guard = GroupGuard(child.id());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = {
        let reads =
            async { tokio::join!(read_into(stdout, &mut out), read_into(stderr, &mut err)) };
        tokio::pin!(reads);
        tokio::select! {
            status = child.wait() => {
                // It exited: its output is complete unless something it started still holds
                // the pipes. Then keep what was read, and the guard kills the stragglers.
                if tokio::time::timeout(OUTPUT_GRACE, &mut reads).await.is_ok() {
                    guard.0 = None;
                }
                status
            }
            _ = &mut reads => {
                let status = child.wait().await;
                guard.0 = None;
                status
            }
        }
    };
    let status = status.map_err(|e| format!("waiting for {program}: {e}"))?;
    let (stdout, stderr) = (lossy(out), lossy(err));
    use std::os::unix::process::ExitStatusExt;
    let exit = match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    };
    Ok(CommandRun {
        exit,
        stdout,
        stderr,
    })
}

/// Kills the child's process group unless the run ended cleanly: on a timeout (the child
/// was never reaped, so its id still names the group) and when something the child started
/// still held its output pipes after it exited (the group lives on in those stragglers).
#[derive(Debug)]
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let pid = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            // The group may be gone already; nothing to do then.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Reads up to [`MAX_OUTPUT`] bytes into `buf`; if the future is dropped, what was read so
/// far stays in `buf`.
async fn read_into(stream: Option<impl AsyncRead + Unpin>, buf: &mut Vec<u8>) {
    if let Some(stream) = stream {
        // A read error just ends the output: what was read is still worth reporting.
        let _ = stream.take(MAX_OUTPUT).read_to_end(buf).await;
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A plugin's output, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginOutput {
    pub message: String,
    pub metrics: Vec<(MetricName, f64)>,
}

/// Parses plugin output: `TEXT | PERFDATA` on the first line, then long text whose first `|`
/// starts more perfdata running to the end. With nothing on stdout, the first line of stderr
/// is the message.
pub fn parse_output(stdout: &str, stderr: &str) -> PluginOutput {
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or("");
    let (text, mut perf) = match first.split_once('|') {
        Some((t, p)) => (t.trim(), p.to_owned()),
        None => (first.trim(), String::new()),
    };
    let mut in_perf = false;
    for line in lines {
        if in_perf {
            perf.push(' ');
            perf.push_str(line);
        } else if let Some((_, p)) = line.split_once('|') {
            in_perf = true;
            perf.push(' ');
            perf.push_str(p);
        }
    }
    let message = if !text.is_empty() {
        text.to_owned()
    } else {
        match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
            Some(l) => l.to_owned(),
            None => "(no output)".to_owned(),
        }
    };
    PluginOutput {
        message,
        metrics: parse_perfdata(&perf),
    }
}

/// Parses `label=value[UOM];warn;crit;min;max ...` (labels may be quoted with `'`). Labels
/// become metric names (`[a-z0-9_]`, at most 64); values keep the plugin's unit. Entries
/// without a number (`U`, garbage) are skipped; a repeated label keeps the last value.
pub fn parse_perfdata(perf: &str) -> Vec<(MetricName, f64)> {
    let mut out: Vec<(MetricName, f64)> = Vec::new();
    for (label, rest) in perf_items(perf) {
        let value_text = rest.split(';').next().unwrap_or("");
        let Some(value) = parse_leading_number(value_text) else {
            continue;
        };
        let Ok(name) = MetricName::new(sanitize_metric(&label)) else {
            continue;
        };
        out.retain(|(n, _)| *n != name);
        out.push((name, value));
    }
    out
}

/// Splits perfdata into `(label, value part)` pairs.
fn perf_items(perf: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut chars = perf.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut label = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            // `''` inside a quoted label is a literal quote.
            while let Some(c) = chars.next() {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        label.push('\'');
                    } else {
                        break;
                    }
                } else {
                    label.push(c);
                }
            }
            // Anything up to `=` after the closing quote belongs to the label.
            while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
                label.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
                label.push(c);
            }
        }
        let mut rest = String::new();
        if chars.next_if_eq(&'=').is_some() {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                rest.push(c);
            }
            items.push((label, rest));
        }
    }
    items
}

/// The number at the start of `s` (`12.5ms` → 12.5; a decimal comma is accepted).
fn parse_leading_number(s: &str) -> Option<f64> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | ',' | '-' | '+')))
        .unwrap_or(s.len());
    let v: f64 = s[..end].replace(',', ".").parse().ok()?;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    use std::time::Instant;

    use super::*;

    fn metrics(v: &[(&str, f64)]) -> Vec<(MetricName, f64)> {
        v.iter()
            .map(|(n, x)| (MetricName::new(*n).expect("test metric name"), *x))
            .collect()
    }

    /// Writes an executable shell script into `dir`.
    pub(crate) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        path
    }

    fn exec(path: &Path) -> Exec {
        Exec::new(vec![path.display().to_string()])
    }

    #[test]
    fn perfdata_follows_the_plugin_convention() {
        let p = parse_output(
            "DISK OK - free space: / 3326 MB (56%) | /=2643MB;5948;5958;0;5968 'Load Avg'=0.5;;;\n",
            "",
        );
        assert_eq!(p.message, "DISK OK - free space: / 3326 MB (56%)");
        assert_eq!(p.metrics, metrics(&[("_", 2643.0), ("load_avg", 0.5)]));
    }

    #[test]
    fn perfdata_in_long_output_and_odd_entries() {
        let out = "AMP OK\nline two\nline three | amp1_out_w=395.0W;;\nAmp2-Out=401,5 time=12ms u=U junk x=\n";
        let p = parse_output(out, "");
        assert_eq!(p.message, "AMP OK");
        assert_eq!(
            p.metrics,
            metrics(&[("amp1_out_w", 395.0), ("amp2_out", 401.5), ("time", 12.0)])
        );
        let q = parse_perfdata("'it''s'=1 a=1 a=2 'x y'z=-3.5%");
        assert_eq!(q, metrics(&[("it_s", 1.0), ("a", 2.0), ("x_yz", -3.5)]));
    }

    #[test]
    fn empty_stdout_falls_back_to_stderr() {
        assert_eq!(
            parse_output("", "\n  oops: no device\n").message,
            "oops: no device"
        );
        assert_eq!(parse_output("", "").message, "(no output)");
        assert_eq!(parse_output("| a=1", "").metrics, metrics(&[("a", 1.0)]));
    }

    #[tokio::test]
    async fn exit_codes_zero_to_three_are_the_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (code, status) in [
            (0, Status::Ok),
            (1, Status::Warning),
            (2, Status::Critical),
            (3, Status::Unknown),
        ] {
            let s = script(
                dir.path(),
                &format!("s{code}"),
                &format!("echo 'AMP state {code} | amp_w={code}0W;;;0'\nexit {code}"),
            );
            let out = exec(&s).run().await;
            assert_eq!(out.status, status);
            assert_eq!(out.message, format!("AMP state {code}"));
            assert_eq!(out.metrics, metrics(&[("amp_w", f64::from(code) * 10.0)]));
        }
    }

    #[tokio::test]
    async fn garbage_exit_codes_signals_and_missing_programs_are_unknown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(dir.path(), "s42", "echo weird; exit 42");
        let out = exec(&s).run().await;
        assert_eq!(out.status, Status::Unknown);
        assert_eq!(out.message, "exit code 42: weird");

        let s = script(dir.path(), "crash", "echo dying; kill -SEGV $$");
        let out = exec(&s).run().await;
        assert_eq!(out.status, Status::Unknown);
        assert!(
            out.message.starts_with("killed by signal 11"),
            "{}",
            out.message
        );

        let out = exec(&dir.path().join("absent")).run().await;
        assert_eq!(out.status, Status::Unknown);
        assert!(out.message.starts_with("cannot run"), "{}", out.message);
    }

    #[tokio::test]
    async fn dropping_a_run_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let s = script(
            dir.path(),
            "hang",
            &format!("sleep 300 &\necho $! > {}\nwait", pidfile.display()),
        );
        let argv = vec![s.display().to_string()];
        let res = tokio::time::timeout(Duration::from_millis(300), run_command(&argv)).await;
        assert!(res.is_err(), "the script must still be running");
        let pid = std::fs::read_to_string(&pidfile).expect("pid written");
        let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
        // SIGKILL is asynchronous: poll until the grandchild is gone (or is a zombie).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
            let gone = state.is_empty() || state.contains(") Z");
            if gone {
                break;
            }
            assert!(Instant::now() < deadline, "grandchild still alive: {state}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_plugin_that_leaves_a_child_behind_still_reports_and_the_child_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let s = script(
            dir.path(),
            "leaky",
            &format!(
                "sleep 300 &\necho $! > {}\necho 'LEAKY OK | a=1'\nexit 1",
                pidfile.display()
            ),
        );
        let out = tokio::time::timeout(Duration::from_secs(60), exec(&s).run())
            .await
            .expect("finishes long before its child would");
        assert_eq!(out.status, Status::Warning);
        assert_eq!(out.message, "LEAKY OK");
        assert_eq!(out.metrics, metrics(&[("a", 1.0)]));
        let pid = std::fs::read_to_string(&pidfile).expect("pid written");
        let stat = PathBuf::from(format!("/proc/{}/stat", pid.trim()));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = std::fs::read_to_string(&stat).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                break;
            }
            assert!(Instant::now() < deadline, "straggler still alive: {state}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
