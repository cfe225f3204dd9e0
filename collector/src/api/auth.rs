//! Bearer tokens with roles: `viewer` reads, `operator` also acknowledges and silences.
//!
//! Config (`[http]`): `anonymous_read = false` and `[[http.tokens]] name, token, role`.
//! See docs/api.md "Tokens and roles" for the rules this module enforces.

use std::collections::HashSet;
use std::fmt;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use serde::{Deserialize, Serialize};

use super::error::ApiError;

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

/// One `[[http.tokens]]` entry.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Recorded as who acknowledged or silenced.
    pub name: String,
    pub token: String,
    pub role: Role,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
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

impl AuthConfig {
    /// Every problem at once, each prefixed with its key (`http.tokens[1].token: ...`).
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        let mut secrets = HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("http.tokens[{i}]");
            if t.name.trim().is_empty() || t.name.len() > 64 {
                errors.push(format!("{at}.name: must be 1 to 64 characters"));
            }
            if t.token.len() < 16 {
                errors.push(format!("{at}.token: must be at least 16 characters"));
            }
            if t.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                errors.push(format!("{at}.token: must not contain spaces"));
            }
            if !names.insert(t.name.as_str()) {
                errors.push(format!("{at}.name: {:?} is used twice", t.name));
            }
            if !secrets.insert(t.token.as_str()) {
                errors.push(format!("{at}.token: the same token is configured twice"));
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

/// The configured tokens.
#[derive(Clone)]
pub struct Auth {
    tokens: Vec<TokenConfig>,
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
            tokens: config.tokens.clone(),
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
                .tokens
                .iter()
                .find(|t| same(t.token.as_bytes(), token.as_bytes()))
                .map(|t| Caller::Token {
                    name: t.name.clone(),
                    role: t.role,
                })
                .ok_or_else(|| ApiError::unauthorized("unknown token")),
        }
    }
}

/// Compares without stopping at the first difference (the length is not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(anonymous_read: bool) -> Auth {
        Auth::new(&AuthConfig {
            anonymous_read,
            tokens: vec![
                TokenConfig {
                    name: "wall".into(),
                    token: "viewer-token-0123456789".into(),
                    role: Role::Viewer,
                },
                TokenConfig {
                    name: "desk".into(),
                    token: "operator-token-0123456789".into(),
                    role: Role::Operator,
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
                TokenConfig {
                    name: "a".into(),
                    token: "short".into(),
                    role: Role::Viewer,
                },
                TokenConfig {
                    name: "a".into(),
                    token: "short".into(),
                    role: Role::Operator,
                },
            ],
        };
        let errors = c.validate();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("http.tokens[0].token"), "{errors:?}");
        let debug = format!("{:?}", c.tokens[0]);
        assert!(!debug.contains("short"), "{debug}");
    }
}
