//! The collector's modules depend one way (docs/ARCHITECTURE.md, "Who owns what"): the API
//! reads the store and the model and never reaches back into ingest or the core; ingest
//! hands events to the core without importing it; outputs do not import ingest. This test
//! reads the source and fails on an import that would close a circle again.

mod source;

use source::rust_files;

/// (files under this folder of `src/`, modules they must not import, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "api",
        &["ingest", "pipeline"],
        "the API reads the store and the model; requests to the core go through api::control",
    ),
    (
        "ingest",
        &["pipeline"],
        "ingest only hands CoreEvents to the core over its channel",
    ),
    (
        "outputs",
        &["ingest"],
        "outputs take committed alerts; shared helpers live in model",
    ),
];

/// The source without `//` comments.
fn code(text: &str) -> String {
    source::without_comments(text).join("\n")
}

/// The modules of the crate that `code` names: `crate::x` paths and `use crate::{x, ...}`.
fn crate_modules(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A grouped import: every top-level name in the braces (nested groups are paths
            // below one of them).
            let mut depth = 0;
            let mut name = String::new();
            let mut at_top = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_top = true,
                    _ => {}
                }
                if depth == 0 && at_top {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                    } else if !name.is_empty() {
                        found.push(std::mem::take(&mut name));
                        at_top = false;
                    }
                }
            }
            if !name.is_empty() {
                found.push(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
    }
    found
}

#[test]
fn no_module_imports_back_against_the_data_path() {
    let src = source::src();
    let mut problems = Vec::new();
    for (folder, forbidden, why) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "no sources under src/{folder}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for module in crate_modules(&code(&text)) {
                if forbidden.contains(&module.as_str()) {
                    problems.push(format!(
                        "{} imports crate::{module} ({why})",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_paths_and_grouped_imports() {
    let text = "use crate::ingest::now;\nuse crate::{model::Millis, pipeline};\n\
                // crate::store in a comment\nlet x = crate::api::f();";
    assert_eq!(
        crate_modules(&code(text)),
        ["ingest", "model", "pipeline", "api"]
    );
}
