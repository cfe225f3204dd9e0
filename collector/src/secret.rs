//! Secrets in the configuration: a wrapper that never prints its value, secrets read from
//! files (systemd's `LoadCredential=` directory), API token digests and their constant-time
//! comparison, and the placeholder tokens of the shipped example that are refused.
//!
//! Design: tokens are compared as SHA-256 digests, so a configuration may hold only the
//! digest (`token_sha256`) and a lookup takes the same time whichever token matches.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment variable systemd sets to the directory of a unit's credentials
/// (`LoadCredential=`, `SetCredentialEncrypted=`).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The shortest clear token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// The clear tokens `deploy/collector.example.toml` once carried: refused by their digest
/// too, so copying them in hashed form does not make them acceptable.
const EXAMPLE_TOKENS: &[&str] = &["change-me-viewer-0000", "change-me-operator-0000"];

/// Words that mark a token as a placeholder copied from an example.
const PLACEHOLDER_WORDS: &[&str] = &["change-me", "change_me", "changeme", "example"];

/// A secret string (password, token). `Debug` never shows it; [`Secret::expose`] does, at
/// the one place that sends it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself: only to send it (MQTT CONNECT, an Authorization header) or hash it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `$CREDENTIALS_DIRECTORY` of the process, when systemd set it.
pub fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Where a secret file named `file` is: a relative name is looked up in `credentials`
/// (systemd's credentials directory) when given, else taken as it is.
pub fn locate(file: &Path, credentials: Option<&Path>) -> PathBuf {
    match credentials {
        Some(dir) if file.is_relative() => dir.join(file),
        _ => file.to_path_buf(),
    }
}

/// Reads a secret from `file` (see [`locate`]); one trailing line break is not part of it.
/// Errors name `key` and the file, never the content.
pub fn read_file(key: &str, file: &Path, credentials: Option<&Path>) -> Result<Secret, String> {
    let path = locate(file, credentials);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    if value.is_empty() {
        return Err(format!("{key}: {}: empty", path.display()));
    }
    Ok(Secret::new(value))
}

/// The SHA-256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex of a digest (the `token_sha256` form).
pub fn to_hex(digest: &[u8; 32]) -> String {
    use fmt::Write as _;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A `token_sha256` value: 64 hex digits, either case.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equal digests, compared without stopping at the first difference.
pub fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a clear token is refused, if it is: too short, spaces, or a placeholder.
pub fn token_problem(token: &str) -> Option<String> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Some(format!("must be at least {MIN_TOKEN_LEN} characters"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must not contain spaces".into());
    }
    let lower = token.to_lowercase();
    if let Some(word) = PLACEHOLDER_WORDS.iter().find(|w| lower.contains(*w)) {
        return Some(format!(
            "a placeholder (contains {word:?}); make one with `alarmnet-collector hash-token --new`"
        ));
    }
    None
}

/// Whether `digest` is the digest of one of the example's placeholder tokens.
pub fn is_placeholder_digest(digest: &[u8; 32]) -> bool {
    EXAMPLE_TOKENS
        .iter()
        .any(|t| same_digest(&sha256(t.as_bytes()), digest))
}

/// A new random token: 32 characters of `[A-Za-z0-9]` (about 190 bits).
pub fn new_token() -> String {
    use rand::Rng as _;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The `[[http.tokens]]` line holding `token`'s digest.
pub fn config_line(token: &str) -> String {
    format!("token_sha256 = \"{}\"", to_hex(&sha256(token.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        let d = sha256(b"abc");
        assert_eq!(
            to_hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(from_hex(&to_hex(&d)), Some(d));
        assert_eq!(from_hex(&to_hex(&d).to_uppercase()), Some(d));
        for bad in ["", "ab", &"g".repeat(64), &"é".repeat(32)] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
        assert!(same_digest(&d, &sha256(b"abc")));
        assert!(!same_digest(&d, &sha256(b"abd")));
    }

    #[test]
    fn short_spaced_and_placeholder_tokens_are_refused() {
        assert!(token_problem("short").is_some());
        assert!(token_problem("sixteen chars ok").is_some());
        for t in [
            "change-me-viewer-0000",
            "CHANGE_ME_0123456789",
            "my-example-token-0123",
        ] {
            assert!(
                token_problem(t).is_some_and(|p| p.contains("placeholder")),
                "{t}"
            );
        }
        assert_eq!(token_problem("Zq3v9TqK0bLx1mWd"), None);
        assert!(is_placeholder_digest(&sha256(b"change-me-operator-0000")));
        assert!(!is_placeholder_digest(&sha256(b"Zq3v9TqK0bLx1mWd")));
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert_eq!(token_problem(&t), None);
        assert!(config_line(&t).starts_with("token_sha256 = \""));
    }

    #[test]
    fn files_are_found_in_the_credentials_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("api.token"), "s3cret-value\n").expect("write");
        let s = read_file("k", Path::new("api.token"), Some(dir.path())).expect("read");
        assert_eq!(s.expose(), "s3cret-value");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let abs = dir.path().join("api.token");
        assert_eq!(
            read_file("k", &abs, None).expect("absolute").expose(),
            "s3cret-value"
        );
        let e = read_file(
            "http.tokens[0].token_file",
            Path::new("nope"),
            Some(dir.path()),
        )
        .expect_err("missing");
        assert!(e.starts_with("http.tokens[0].token_file: "), "{e}");
        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        let e = read_file("k", Path::new("empty"), Some(dir.path())).expect_err("empty");
        assert!(e.ends_with("empty"), "{e}");
    }
}
