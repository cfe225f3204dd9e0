//! Event-stream tickets: `POST /api/v1/events/ticket` trades the bearer token for a
//! short-lived, single-use ticket that `GET /api/v1/events?ticket=` takes, so the token
//! itself never travels in a URL (browsers' `EventSource` cannot send headers, and URLs
//! end up in proxy and access logs).
//!
//! Design: tickets live in memory only (a restart invalidates them, and a client asks for a
//! new one on every connection anyway); the table is bounded, expired tickets are swept
//! on every issue, and when it is full of live tickets a new one is refused (503) rather
//! than an old one evicted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult};
use crate::model::UnixMillis;

/// How long a ticket may wait for its connection.
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// Tickets waiting at most; more at once are refused.
pub const MAX_TICKETS: usize = 10_000;

#[derive(Debug)]
struct Issued {
    caller: Caller,
    expires_at: UnixMillis,
}

/// The tickets issued and not yet used. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tickets {
    inner: Arc<Mutex<HashMap<String, Issued>>>,
}

impl Tickets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        // Only inserts and removes happen under the lock: a panic leaves the map usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new ticket for `caller`, valid until `now + TICKET_TTL`; `None` when
    /// [`MAX_TICKETS`] live tickets are waiting.
    pub fn issue(&self, caller: Caller, now: UnixMillis) -> Option<String> {
        let mut map = self.lock();
        map.retain(|_, t| t.expires_at > now);
        if map.len() >= MAX_TICKETS {
            return None;
        }
        let ticket = crate::secret::new_token();
        map.insert(
            ticket.clone(),
            Issued {
                caller,
                expires_at: now + TICKET_TTL,
            },
        );
        Some(ticket)
    }

    /// Uses `ticket` up: its caller if it was issued and has not expired. A second use
    /// of the same ticket fails.
    pub fn redeem(&self, ticket: &str, now: UnixMillis) -> Option<Caller> {
        self.lock()
            .remove(ticket)
            .filter(|t| t.expires_at > now)
            .map(|t| t.caller)
    }
}

/// `POST /api/v1/events/ticket`: `{"ticket": "...", "expires_in": 30}`.
pub(super) async fn issue(
    State(s): State<ApiState>,
    c: Option<Extension<Caller>>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let caller = super::handlers::caller(&c);
    let ticket = s.tickets.issue(caller, s.now()).ok_or_else(|| {
        ApiError::unavailable("too many event-stream tickets waiting; try again shortly")
    })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"ticket": ticket, "expires_in": TICKET_TTL.as_secs()})),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Role;

    #[test]
    fn tickets_are_single_use_and_expire() {
        let t = Tickets::default();
        let who = Caller::Token {
            name: "wall".into(),
            role: Role::Viewer,
        };
        let a = t
            .issue(who.clone(), UnixMillis::from_millis(1_000))
            .expect("issued");
        assert_eq!(a.len(), 32);
        assert_eq!(
            t.redeem(&a, UnixMillis::from_millis(1_001)),
            Some(who.clone())
        );
        assert_eq!(
            t.redeem(&a, UnixMillis::from_millis(1_002)),
            None,
            "single use"
        );
        let b = t
            .issue(who.clone(), UnixMillis::from_millis(1_000))
            .expect("issued");
        assert_eq!(
            t.redeem(&b, UnixMillis::from_millis(1_000) + TICKET_TTL),
            None,
            "expired"
        );
        assert_eq!(
            t.redeem("no-such-ticket", UnixMillis::from_millis(1_000)),
            None
        );
        // Expired tickets make room; live ones do not.
        for _ in 0..MAX_TICKETS {
            t.issue(who.clone(), UnixMillis::from_millis(5_000))
                .expect("room");
        }
        assert_eq!(
            t.issue(who.clone(), UnixMillis::from_millis(5_001)),
            None,
            "full"
        );
        assert!(
            t.issue(who, UnixMillis::from_millis(5_000) + TICKET_TTL)
                .is_some(),
            "swept"
        );
    }
}
