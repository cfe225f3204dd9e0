//! Bearer tokens with roles: `viewer` reads, `operator` also acknowledges and silences.
//!
//! Config (`[http]`): `anonymous_read = false` and `[[http.tokens]] name, token, role`.
//! See docs/api.md "Tokens and roles" for the rules this module enforces.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::secret::{self, Secret};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

/// One `[[http.tokens]]` entry: a name, a role and exactly one of `token` (clear),
/// `token_sha256` (its digest) or `token_file` (the clear token in a file).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Recorded as who acknowledged or silenced.
    pub name: String,
    /// The clear token (at least 16 characters).
    #[serde(default)]
    pub token: Option<Secret>,
    /// The token's SHA-256 digest in hex (`alarmnet-collector hash-token`), so the
    /// configuration does not hold the token itself.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// A file holding the clear token; a relative name is looked up in systemd's
    /// `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) when it is set.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    pub role: Role,
}

impl TokenConfig {
    /// A token given in clear (tests and the demo).
    pub fn clear(name: impl Into<String>, token: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            token: Some(Secret::new(token)),
            token_sha256: None,
            token_file: None,
            role,
        }
    }

    /// The digest the token is compared by; `None` before validation succeeded.
    fn digest(&self) -> Option<[u8; 32]> {
        match (&self.token, &self.token_sha256) {
            (Some(t), None) => Some(secret::sha256(t.expose().as_bytes())),
            (None, Some(h)) => secret::from_hex(h),
            _ => None,
        }
    }
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &self.token)
            .field(
                "token_sha256",
                &self.token_sha256.as_ref().map(|_| "<redacted>"),
            )
            .field("token_file", &self.token_file)
            .field("role", &self.role)
            .finish()
    }
}

/// The API's part of `[http]`: `anonymous_read` and `tokens`. config.rs may embed these two
/// fields in its `HttpConfig` (they are plain keys of `[http]`), then build [`Auth`] with
/// [`Auth::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Reads need no token (a wall screen on a closed network). Writes always need one.
    #[serde(default)]
    pub anonymous_read: bool,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// Reads every `token_file` into its entry's `token` (a relative name in `credentials`,
/// systemd's credentials directory); every problem, each naming its key.
pub fn read_token_files(tokens: &mut [TokenConfig], credentials: Option<&Path>) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, t) in tokens.iter_mut().enumerate() {
        let Some(file) = &t.token_file else { continue };
        let at = format!("http.tokens[{i}]");
        if t.token.is_some() || t.token_sha256.is_some() {
            errors.push(format!(
                "{at}.token_file: set together with token or token_sha256; give only one"
            ));
            continue;
        }
        match secret::read_file(&format!("{at}.token_file"), file, credentials) {
            Ok(token) => t.token = Some(token),
            Err(e) => errors.push(e),
        }
    }
    errors
}

impl AuthConfig {
    /// Every problem at once, each prefixed with its key (`http.tokens[1].token: ...`).
    /// Token files must have been read ([`read_token_files`]).
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        let mut digests = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("http.tokens[{i}]");
            if t.name.trim().is_empty() || t.name.len() > 64 {
                errors.push(format!("{at}.name: must be 1 to 64 characters"));
            }
            if !names.insert(t.name.as_str()) {
                errors.push(format!("{at}.name: {:?} is used twice", t.name));
            }
            let key = if t.token_file.is_some() {
                "token_file"
            } else {
                "token"
            };
            match (&t.token, &t.token_sha256) {
                (None, None) if t.token_file.is_none() => errors.push(format!(
                    "{at}: one of token, token_sha256 or token_file is required"
                )),
                // The file could not be read (reported by `read_token_files`).
                (None, None) => {}
                (Some(_), Some(_)) => errors.push(format!(
                    "{at}.token_sha256: set together with {key}; give only one"
                )),
                (Some(token), None) => {
                    if let Some(problem) = secret::token_problem(token.expose()) {
                        errors.push(format!("{at}.{key}: {problem}"));
                    }
                }
                (None, Some(hex)) => match secret::from_hex(hex) {
                    None => errors.push(format!(
                        "{at}.token_sha256: must be 64 hex digits (alarmnet-collector hash-token)"
                    )),
                    Some(d) if secret::is_placeholder_digest(&d) => errors.push(format!(
                        "{at}.token_sha256: the digest of an example placeholder token"
                    )),
                    Some(_) => {}
                },
            }
            if let Some(d) = t.digest() {
                if digests.iter().any(|o| secret::same_digest(o, &d)) {
                    errors.push(format!("{at}.{key}: the same token is configured twice"));
                }
                digests.push(d);
            }
        }
        errors
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token, with `anonymous_read` on (reads only).
    Anonymous,
    Token {
        name: String,
        role: Role,
    },
}

impl Caller {
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::Token { name, .. } => Some(name),
        }
    }

    /// The caller's name if it may write; 401 without a token, 403 for a viewer.
    pub fn operator(&self, doing: &str) -> Result<&str, ApiError> {
        match self {
            Caller::Anonymous => Err(ApiError::unauthorized(format!(
                "{doing} needs an operator token (Authorization: Bearer <token>)"
            ))),
            Caller::Token {
                name,
                role: Role::Viewer,
            } => Err(ApiError::forbidden(format!(
                "{doing} needs the operator role; token {name} is a viewer"
            ))),
            Caller::Token {
                name,
                role: Role::Operator,
            } => Ok(name),
        }
    }
}

/// A known token: who it is, what it may do, and its digest.
#[derive(Clone)]
struct Known {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The configured tokens, kept only as digests.
#[derive(Clone)]
pub struct Auth {
    tokens: Vec<Known>,
    anonymous_read: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .field("anonymous_read", &self.anonymous_read)
            .finish()
    }
}

impl Auth {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            // Entries without a valid digest were refused at load.
            tokens: config
                .tokens
                .iter()
                .filter_map(|t| {
                    Some(Known {
                        name: t.name.clone(),
                        role: t.role,
                        digest: t.digest()?,
                    })
                })
                .collect(),
            anonymous_read: config.anonymous_read,
        }
    }

    /// Identifies the caller from `Authorization: Bearer`, or from `access_token` (only
    /// passed for the event stream). An unknown token is 401 in every mode; no token is 401
    /// unless `anonymous_read`.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        access_token: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let presented = match headers.get(AUTHORIZATION) {
            Some(value) => {
                let value = value
                    .to_str()
                    .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        ApiError::unauthorized("expected Authorization: Bearer <token>")
                    })?;
                Some(token.trim())
            }
            None => access_token,
        };
        match presented {
            None if self.anonymous_read => Ok(Caller::Anonymous),
            None => Err(ApiError::unauthorized("this request needs a bearer token")),
            Some(token) => self
                .find(token)
                .map(|t| Caller::Token {
                    name: t.name.clone(),
                    role: t.role,
                })
                .ok_or_else(|| ApiError::unauthorized("unknown token")),
        }
    }

    /// The token whose digest is `token`'s. Every configured digest is compared, each
    /// in constant time, so the time taken tells nothing of which matched or how closely.
    fn find(&self, token: &str) -> Option<&Known> {
        let digest = secret::sha256(token.as_bytes());
        self.tokens.iter().fold(None, |found, t| {
            let same = secret::same_digest(&t.digest, &digest);
            if same && found.is_none() {
                Some(t)
            } else {
                found
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(anonymous_read: bool) -> Auth {
        Auth::new(&AuthConfig {
            anonymous_read,
            tokens: vec![
                TokenConfig::clear("wall", "viewer-token-0123456789", Role::Viewer),
                TokenConfig {
                    token: None,
                    token_sha256: Some(secret::to_hex(&secret::sha256(
                        b"operator-token-0123456789",
                    ))),
                    ..TokenConfig::clear("desk", "", Role::Operator)
                },
            ],
        })
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        h
    }

    #[test]
    fn tokens_roles_and_anonymous_reads() {
        let strict = auth(false);
        let none = HeaderMap::new();
        assert_eq!(
            strict.identify(&none, None).map_err(|e| e.status.as_u16()),
            Err(401)
        );
        let open = auth(true);
        assert_eq!(open.identify(&none, None), Ok(Caller::Anonymous));
        // An unknown token is refused even when reads are open.
        assert_eq!(
            open.identify(&bearer("nope"), None).map_err(|e| e.code),
            Err("unauthorized")
        );
        let viewer = strict
            .identify(&bearer("viewer-token-0123456789"), None)
            .expect("viewer");
        assert_eq!(
            viewer.operator("acking").map_err(|e| e.status.as_u16()),
            Err(403)
        );
        let op = strict
            .identify(&none, Some("operator-token-0123456789"))
            .expect("operator via access_token");
        assert_eq!(op.operator("acking"), Ok("desk"));
        assert_eq!(
            Caller::Anonymous
                .operator("acking")
                .map_err(|e| e.status.as_u16()),
            Err(401)
        );
    }

    #[test]
    fn config_problems_are_all_reported() {
        let c = AuthConfig {
            anonymous_read: false,
            tokens: vec![
                TokenConfig::clear("a", "short", Role::Viewer),
                TokenConfig::clear("a", "short", Role::Operator),
            ],
        };
        let errors = c.validate();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("http.tokens[0].token"), "{errors:?}");
        let debug = format!("{:?}", c.tokens[0]);
        assert!(!debug.contains("short"), "{debug}");
    }

    #[test]
    fn hashed_tokens_files_placeholders_and_conflicts() {
        // The hashed operator token of `auth()` identifies, by header and access_token.
        let a = auth(false);
        assert_eq!(
            a.identify(&bearer("operator-token-0123456789"), None)
                .expect("hashed token")
                .name(),
            Some("desk")
        );
        assert!(
            a.identify(&bearer("operator-token-012345678"), None)
                .is_err()
        );

        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("wall.token"), "file-token-0123456789\n").expect("write");
        let mut tokens = vec![
            TokenConfig {
                token: None,
                token_file: Some("wall.token".into()),
                ..TokenConfig::clear("wall", "", Role::Viewer)
            },
            TokenConfig {
                token_file: Some("missing.token".into()),
                ..TokenConfig::clear("both", "clear-token-0123456789", Role::Viewer)
            },
            TokenConfig {
                token: None,
                token_file: Some("missing.token".into()),
                ..TokenConfig::clear("gone", "", Role::Viewer)
            },
        ];
        let errors = read_token_files(&mut tokens, Some(dir.path()));
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with("http.tokens[1].token_file: set together"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("http.tokens[2].token_file: "),
            "{errors:?}"
        );
        assert!(errors[1].contains("missing.token"), "{errors:?}");
        let c = AuthConfig {
            anonymous_read: false,
            tokens: tokens[..1].to_vec(),
        };
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let caller = Auth::new(&c)
            .identify(&bearer("file-token-0123456789"), None)
            .expect("token from the file");
        assert_eq!(caller.name(), Some("wall"));

        let placeholder = secret::to_hex(&secret::sha256(b"change-me-viewer-0000"));
        let c = AuthConfig {
            anonymous_read: false,
            tokens: vec![
                TokenConfig::clear("a", "change-me-operator-0000", Role::Operator),
                TokenConfig {
                    token: None,
                    token_sha256: Some(placeholder),
                    ..TokenConfig::clear("b", "", Role::Viewer)
                },
                TokenConfig {
                    token: None,
                    token_sha256: Some("abc".into()),
                    ..TokenConfig::clear("c", "", Role::Viewer)
                },
                TokenConfig {
                    token_sha256: Some(secret::to_hex(&secret::sha256(b"x"))),
                    ..TokenConfig::clear("d", "clear-token-0123456789", Role::Viewer)
                },
                TokenConfig {
                    token: None,
                    ..TokenConfig::clear("e", "", Role::Viewer)
                },
                TokenConfig {
                    token: None,
                    token_sha256: Some(secret::to_hex(&secret::sha256(b"clear-token-0123456789"))),
                    ..TokenConfig::clear("f", "", Role::Viewer)
                },
            ],
        };
        let errors = c.validate();
        let all = errors.join("\n");
        for needle in [
            "http.tokens[0].token: a placeholder",
            "http.tokens[1].token_sha256: the digest of an example placeholder",
            "http.tokens[2].token_sha256: must be 64 hex digits",
            "http.tokens[3].token_sha256: set together with token",
            "http.tokens[4]: one of token, token_sha256 or token_file is required",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(errors.len(), 5, "{all}");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("change-me") && !debug.contains("abc"),
            "{debug}"
        );
    }
}
