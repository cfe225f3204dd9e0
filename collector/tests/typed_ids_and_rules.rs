//! Alert rules and alert/silence ids are types (`model::RuleKind`, `model::AlertId`,
//! `model::SilenceId`): a string becomes one of them once, where it is parsed, and code
//! past that point matches on the variant or compares the values. This test reads the
//! collector's non-test source and fails where a rule or an id is handled as a string
//! again outside the modules that parse and print them.

mod source;

use std::path::Path;

use source::rust_files;

use alarmnet_collector::model::RuleKind;

/// The files that turn strings into rules and ids and back (paths under `src/`).
const PARSERS: &[&str] = &["model/rule.rs", "model/ids.rs"];

/// Whether the whole file is tests (`tests.rs`, `*_tests.rs`).
fn is_test_file(path: &Path) -> bool {
    path.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s == "tests" || s.ends_with("_tests"))
}

/// The code of a source file: `//` comments removed, and inline `#[cfg(test)] mod x { ... }`
/// modules (which close the files that have them) cut off.
fn code(text: &str) -> String {
    let lines = source::without_comments(text);
    let mut end = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let next = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
        let inline_module = next.is_some_and(|n| {
            let n = n.trim();
            (n.starts_with("mod ") || n.contains(" mod ")) && n.ends_with('{')
        });
        if line.trim() == "#[cfg(test)]" && inline_module {
            end = i;
            break;
        }
    }
    lines[..end].join("\n")
}

/// What handling a rule or an id as a string looks like, each with why it is wrong.
fn violations(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    // Code on one line, so a pattern split over lines by rustfmt is still seen.
    let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    for pattern in [
        "rule.as_str() ==",
        "rule.as_str() !=",
        "== rule.as_str()",
        "match rule.as_str()",
        "rule.as_str().to_owned()",
        "_RULES.contains(",
    ] {
        if flat.contains(pattern) {
            found.push(format!("`{pattern}`: match on the RuleKind instead"));
        }
    }
    for rule in RuleKind::BUILTIN {
        let name = format!("\"{}\"", rule.as_str());
        for pattern in [
            format!("== {name}"),
            format!("!= {name}"),
            format!("{name} =>"),
            format!("{name} |"),
            format!("| {name}"),
        ] {
            if flat.contains(&pattern) {
                found.push(format!("`{pattern}`: use RuleKind::{rule:?}"));
            }
        }
    }
    for pattern in ["u64::from_str_radix(", ":016x}"] {
        if flat.contains(pattern) {
            found.push(format!(
                "`{pattern}`: alert and silence ids are parsed and printed by AlertId/SilenceId"
            ));
        }
    }
    found
}

#[test]
fn no_rule_or_id_is_handled_as_a_string_outside_parsing() {
    let src = source::src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let name = file.strip_prefix(&src).unwrap_or(&file);
        let shown = name.to_string_lossy().replace('\\', "/");
        if is_test_file(&file) || PARSERS.contains(&shown.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for v in violations(&code(&text)) {
            problems.push(format!("{shown}: {v}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_string_handling_and_skips_tests_and_comments() {
    let bad = "fn f(a: &Alert) -> bool {\n    a.rule.as_str()\n        == \"fault\"\n}";
    assert_eq!(violations(&code(bad)).len(), 2, "{:?}", violations(bad));
    let bad = "match rule {\n    \"node_offline\" | \"flapping\" => 1,\n}";
    assert!(!violations(&code(bad)).is_empty());
    assert_eq!(
        violations("let fp = u64::from_str_radix(&alert.id, 16);").len(),
        1
    );
    assert_eq!(
        violations("AVAILABILITY_RULES.contains(&a.rule.as_str())").len(),
        1
    );
    let fine = "// a.rule.as_str() == \"fault\" in a comment\nlet x = RuleKind::Fault;\n\
                #[cfg(test)]\nmod tests {\n    fn t() { assert!(a.rule.as_str() == \"fault\"); }\n}";
    assert!(violations(&code(fine)).is_empty(), "{}", code(fine));
    // `#[cfg(test)] mod tests;` (a file of its own) does not end the code.
    let later = "#[cfg(test)]\nmod tests;\n\nfn f() -> bool { rule.as_str() == x }";
    assert_eq!(violations(&code(later)).len(), 1);
}
