//! The field guides cannot rot: every `alarmnet-collector` and `alarmnet-agent` command line
//! in a ```sh block of `docs/operations.md` and `docs/operations.zh.md` names subcommands
//! and options that the built binaries' `--help` lists, at the level they are given.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use alarmnet_e2e::binary;

const GUIDES: [&str; 2] = ["docs/operations.md", "docs/operations.zh.md"];
const BINARIES: [&str; 2] = ["alarmnet-collector", "alarmnet-agent"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What `--help` says at one level of subcommands.
#[derive(Debug, Default)]
struct Help {
    subcommands: BTreeSet<String>,
    /// Option (`--config`, `-c`) → whether it takes a value.
    options: BTreeMap<String, bool>,
}

fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.trim_end().ends_with(':') {
            section = line.trim_end();
            continue;
        }
        let trimmed = line.trim_start();
        if section == "Commands:" && line.starts_with("  ") && !trimmed.is_empty() {
            if let Some(name) = trimmed.split_whitespace().next() {
                help.subcommands.insert(name.to_owned());
            }
            continue;
        }
        if trimmed.starts_with('-') {
            // `-c, --config <FILE>  text`, `--format <FORMAT>  text`, `--new  text`
            let spec = trimmed.split("  ").next().unwrap_or_default();
            let takes_value = spec.contains('<');
            for word in spec.split([',', ' ', '=']) {
                let word = word.trim();
                if word.starts_with('-') && word.len() > 1 && !word.contains('<') {
                    help.options.insert(word.to_owned(), takes_value);
                }
            }
        }
    }
    help.options.entry("--help".into()).or_insert(false);
    help
}

struct Helps {
    cache: BTreeMap<(String, Vec<String>), Help>,
}

impl Helps {
    fn get(&mut self, bin: &str, path: &[String]) -> &Help {
        self.cache
            .entry((bin.to_owned(), path.to_vec()))
            .or_insert_with(|| {
                let out = Command::new(binary(bin))
                    .args(path)
                    .arg("--help")
                    .output()
                    .unwrap_or_else(|e| panic!("run {bin} --help: {e}"));
                assert!(
                    out.status.success(),
                    "{bin} {} --help failed: {}",
                    path.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                parse_help(&String::from_utf8_lossy(&out.stdout))
            })
    }
}

/// The logical lines (continuations joined) of every ```sh block, with their line numbers.
fn sh_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        if fence.starts_with("```") {
            in_sh = !in_sh && fence.trim_start_matches('`').trim() == "sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        let body = line.trim_end();
        if let Some(head) = body.strip_suffix('\\') {
            joined.push_str(head);
            joined.push(' ');
            pending = Some((start, joined));
        } else {
            joined.push_str(body);
            lines.push((start, joined));
        }
    }
    lines
}

/// Drops a shell comment: `#` at the start of a word.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// The invocations of our binaries on a line: (binary, its arguments).
fn invocations(line: &str) -> Vec<(String, Vec<String>)> {
    let line = strip_comment(line);
    let mut found = Vec::new();
    // Shell separators; a `|` inside a word (`add|list|end`) is the guide's "one of".
    let mut simple = line.to_owned();
    for sep in [" | ", "&&", "||", ";", "$(", "`", "(", ")", "{ ", " }"] {
        simple = simple.replace(sep, "\n");
    }
    for command in simple.lines() {
        let mut words: Vec<String> = command
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_owned())
            .collect();
        while words
            .first()
            .is_some_and(|w| w == "sudo" || w == "exec" || is_assignment(w))
        {
            words.remove(0);
        }
        let Some(first) = words.first() else { continue };
        let program = first.rsplit('/').next().unwrap_or(first);
        if BINARIES.contains(&program) {
            let args = words[1..].to_vec();
            found.push((program.to_owned(), args));
        } else if program == "cargo"
            && words.get(1).is_some_and(|w| w == "run")
            && let Some(dash) = words.iter().position(|w| w == "--")
        {
            let named = words
                .windows(2)
                .find(|w| w[0] == "-p" || w[0] == "--bin" || w[0] == "--package")
                .map(|w| w[1].clone());
            if let Some(bin) = named.filter(|b| BINARIES.contains(&b.as_str())) {
                found.push((bin, words[dash + 1..].to_vec()));
            }
        }
    }
    found
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// Checks one invocation against the help texts; returns the problems.
fn check(helps: &mut Helps, bin: &str, args: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut path: Vec<String> = Vec::new();
    let mut words = args.iter();
    let mut leaf = false;
    while let Some(word) = words.next() {
        if word.starts_with('>') || word.starts_with('<') || word.starts_with("2>") {
            break;
        }
        let help = helps.get(bin, &path);
        if word.starts_with('-') && word.len() > 1 && word != "--" {
            let name = word.split('=').next().unwrap_or(word);
            match help.options.get(name) {
                Some(true) if !word.contains('=') => {
                    words.next();
                }
                Some(_) => {}
                None => problems.push(format!("`{bin} {}` has no option `{name}`", path.join(" "))),
            }
            continue;
        }
        if leaf || help.subcommands.is_empty() {
            continue; // a positional argument
        }
        if word.starts_with('<') || word.starts_with('[') || word == "..." {
            leaf = true;
            continue;
        }
        let alternatives: Vec<&str> = word.split('|').collect();
        let unknown: Vec<&&str> = alternatives
            .iter()
            .filter(|alt| !help.subcommands.contains(**alt))
            .collect();
        if !unknown.is_empty() {
            // What follows belongs to a subcommand that does not exist: nothing to check.
            problems.push(format!(
                "`{bin} {}` has no subcommand {unknown:?} (it has {:?})",
                path.join(" "),
                help.subcommands
            ));
            return problems;
        }
        if alternatives.len() == 1 {
            path.push(word.clone());
            // The agent's subcommands take no further subcommands.
            leaf = bin == "alarmnet-agent";
        } else {
            leaf = true;
        }
    }
    problems
}

#[test]
fn every_command_in_the_guides_exists_in_the_binaries() {
    let mut helps = Helps {
        cache: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    let mut checked = BTreeMap::<&str, usize>::new();
    for guide in GUIDES {
        let text = std::fs::read_to_string(workspace().join(guide))
            .unwrap_or_else(|e| panic!("{guide}: {e}"));
        for (line_no, line) in sh_lines(&text) {
            for (bin, args) in invocations(&line) {
                *checked.entry(guide).or_default() += 1;
                for p in check(&mut helps, &bin, &args) {
                    problems.push(format!("{guide}:{line_no}: {p}\n    {line}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The guides are not empty of commands (the parser found them).
    for guide in GUIDES {
        assert!(
            checked.get(guide).copied().unwrap_or(0) >= 20,
            "{guide}: only {checked:?} command lines found"
        );
    }
}

#[test]
fn the_checker_catches_a_made_up_subcommand_and_option() {
    let mut helps = Helps {
        cache: BTreeMap::new(),
    };
    let line = "alarmnet-collector check-config --config x.toml # no such thing";
    let (bin, args) = invocations(line).remove(0);
    assert_eq!(check(&mut helps, &bin, &args).len(), 1);
    let line = "alarmnet-collector pki revoke --dir d --node n --frobnicate";
    let (bin, args) = invocations(line).remove(0);
    let problems = check(&mut helps, &bin, &args);
    assert!(
        problems.len() == 1 && problems[0].contains("--frobnicate"),
        "{problems:?}"
    );
    let line = "CC=x sudo alarmnet-agent check --config /etc/alarmnet/agent.toml; echo $?";
    let (bin, args) = invocations(line).remove(0);
    assert_eq!(bin, "alarmnet-agent");
    assert!(check(&mut helps, &bin, &args).is_empty());
    let line = "alarmnet-agent check --verbose";
    let (bin, args) = invocations(line).remove(0);
    assert_eq!(check(&mut helps, &bin, &args).len(), 1);
    assert!(invocations("systemctl enable --now alarmnet-agent").is_empty());
}
