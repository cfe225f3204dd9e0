//! The audit log: every operator action (and every attempt at one) with who, when, from
//! where and what came of it, kept in the store (`audit` table) for
//! `[retention] audit` and listed by `GET /api/v1/audit`.
//!
//! Who: the API token's name and role (or `anonymous`, `unknown_token`, `system` for the
//! collector's own acts such as a SIGHUP reload). From where: the TCP peer, or the client
//! a trusted reverse proxy names in `X-Forwarded-For` ([`client_address`]).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use serde::Serialize;

use crate::model::UnixMillis;

/// What came of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done and committed.
    Success,
    /// Refused: no or a wrong token, the wrong role, a bad request, a conflict.
    Refused,
    /// Accepted but could not be carried out (store or core unavailable, bad files).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "success" => Some(Outcome::Success),
            "refused" => Some(Outcome::Refused),
            "failed" => Some(Outcome::Failed),
            _ => None,
        }
    }

    /// The outcome an HTTP status stands for.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=399 => Outcome::Success,
            400..=499 => Outcome::Refused,
            _ => Outcome::Failed,
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The row id (0 before it is stored).
    pub id: i64,
    pub at: UnixMillis,
    /// The token's name; `None` without a (known) token, or for the collector itself.
    pub actor: Option<String>,
    /// `operator`, `viewer`, `anonymous`, `unknown_token` or `system`.
    pub role: String,
    /// The client's address; `None` for the collector's own acts.
    pub peer: Option<String>,
    /// `alert.ack`, `silence.add`, `silence.end`, `drill.start`, `drill.cancel`,
    /// `config.reload`, or `write` for any other write request.
    pub action: String,
    /// The alert, silence or drill id, or what was reloaded.
    pub target: Option<String>,
    pub outcome: Outcome,
    /// The HTTP status answered, for API requests.
    pub status: Option<u16>,
    /// JSON: the request body (shortened) and the refusal's message.
    pub detail: Option<String>,
}

/// The client behind a request: the socket's peer, unless that peer is one of `trusted`
/// proxies, in which case `X-Forwarded-For` is read from the right (the hop nearest us),
/// skipping further trusted proxies, and the first address not trusted is the client.
/// Without a peer (in-process tests) `None`.
pub fn client_address(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Option<String> {
    let peer = peer?;
    if !trusted.contains(&peer.ip()) {
        return Some(peer.ip().to_string());
    }
    let mut client = peer.ip();
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted.contains(&ip) {
                    break;
                }
            }
            // A hop we cannot read: stop at the last address we could.
            Err(_) => break,
        }
    }
    Some(client.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("header"));
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let other: SocketAddr = "192.0.2.7:5000".parse().expect("addr");
        let trusted = [
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ];
        // Not a trusted peer: the header is ignored (anyone can send it).
        assert_eq!(
            client_address(Some(other), &xff("203.0.113.9"), &trusted).as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(
            client_address(Some(proxy), &xff("203.0.113.9"), &[]).as_deref(),
            Some("10.0.0.1")
        );
        // From a trusted proxy: the nearest untrusted hop, not a forged leftmost one.
        assert_eq!(
            client_address(
                Some(proxy),
                &xff("1.2.3.4, 203.0.113.9, 10.0.0.2"),
                &trusted
            )
            .as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            client_address(Some(proxy), &HeaderMap::new(), &trusted).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            client_address(Some(proxy), &xff("garbage"), &trusted).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(client_address(None, &HeaderMap::new(), &trusted), None);
    }

    #[test]
    fn outcomes_of_statuses() {
        assert_eq!(Outcome::of_status(201), Outcome::Success);
        assert_eq!(Outcome::of_status(403), Outcome::Refused);
        assert_eq!(Outcome::of_status(503), Outcome::Failed);
        for o in [Outcome::Success, Outcome::Refused, Outcome::Failed] {
            assert_eq!(Outcome::from_name(o.as_str()), Some(o));
        }
    }
}
