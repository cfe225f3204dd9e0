//! The HTTP API (`/api/v1/*`) and the operations console (`/`), as one axum [`Router`].
//!
//! The contract is docs/openapi.yaml (guide: docs/api.md). Handlers read the store through
//! [`Store`]; writes (acks, silences) go to the core through [`Control`], the single owner
//! of alert state; live events come from [`EventHub`]; recent heartbeat metrics from
//! [`RecentMetrics`]. Query parameters are parsed by hand ([`Params`]) so that every bad
//! value answers 400 naming its parameter.

pub(crate) mod audit;
pub mod auth;
pub mod console;
pub mod control;
mod cursor;
pub(crate) mod drills;
pub mod error;
pub mod events;
mod handlers;
pub(crate) mod readiness;
pub mod recent;
pub mod relay;
pub mod tickets;
mod uptime;

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod conformance;
#[cfg(test)]
mod hardening_tests;
#[cfg(test)]
mod readiness_tests;
#[cfg(test)]
mod uptime_tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use jiff::tz::TimeZone;

pub use auth::{Auth, AuthConfig, Caller, Role, TokenConfig};
pub use control::{Control, ControlError, ControlRequest, serve_with_store};
pub use error::ApiError;
pub use events::{EventHub, EventKind};
pub use recent::{RecentMetrics, Sample};

use crate::model::{Clock, UnixMillis, system_clock};
use crate::readiness::Board;
use crate::store::Store;

const DAY: Duration = Duration::from_secs(86_400);

/// The longest window of an uptime or readiness history report: 400 days (a year and a
/// little, so a calendar year with its neighbours' edges fits).
pub const MAX_REPORT_WINDOW: Duration = Duration::from_secs(400 * DAY.as_secs());

/// The most metric names `GET /api/v1/nodes/{node}/metrics?names=` takes.
pub const MAX_METRIC_NAMES: usize = 64;

/// The longest an API request may take by default.
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Report queries (uptime, readiness history) that may run at once by default: each keeps
/// a store reader thread busy, and the readers also answer every list.
pub const DEFAULT_MAX_REPORTS: usize = 4;

/// The bound on report queries running at once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reports {
    slots: Arc<tokio::sync::Semaphore>,
}

impl Reports {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
        }
    }

    /// A slot for one report, or 503 `busy` (with `Retry-After`) when all are taken.
    pub(crate) fn start(&self) -> Result<ReportSlot, ApiError> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::busy("too many reports are running; try again in a few seconds")
        })?;
        Ok(ReportSlot {
            _permit: permit,
            abandoned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }
}

/// A running report's slot. Dropped with the request's future (the client went away, or
/// the request timed out), it marks the report abandoned, so the store work, which runs
/// on a reader thread the drop cannot stop, stops at its next check.
#[derive(Debug)]
pub(crate) struct ReportSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    abandoned: Arc<std::sync::atomic::AtomicBool>,
}

impl ReportSlot {
    /// What the store work checks between nodes.
    pub(crate) fn abandoned(&self) -> Abandoned {
        Abandoned(self.abandoned.clone())
    }
}

impl Drop for ReportSlot {
    fn drop(&mut self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Tells store work whether its request is still waiting (by default: always).
#[derive(Debug, Clone, Default)]
pub(crate) struct Abandoned(Arc<std::sync::atomic::AtomicBool>);

impl Abandoned {
    /// `Err(StoreError::Abandoned)` once the request is gone.
    pub(crate) fn check(&self) -> Result<(), crate::store::StoreError> {
        if self.0.load(std::sync::atomic::Ordering::Relaxed) {
            Err(crate::store::StoreError::Abandoned)
        } else {
            Ok(())
        }
    }
}

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub events: EventHub,
    pub control: Control,
    pub auth: Auth,
    pub recent: RecentMetrics,
    /// The zone answers are written in and plain dates are read in.
    pub tz: TimeZone,
    pub clock: Clock,
    /// The drills task; `None`: drill writes answer 503.
    pub drills: Option<crate::drills::DrillControl>,
    /// Default and longest deadline of a drill.
    pub drill_limits: crate::drills::DrillsSettings,
    /// The readiness rollups the core publishes.
    pub readiness: Board,
    /// Event-stream tickets issued and not yet used.
    pub tickets: tickets::Tickets,
    /// Report queries (uptime, readiness history) running at once, bounded.
    pub reports: Reports,
    /// The longest an API request (the event stream excepted) may take.
    pub request_timeout: std::time::Duration,
    /// Reverse proxies whose `X-Forwarded-For` the audit log believes.
    pub trusted_proxies: Arc<[std::net::IpAddr]>,
    /// This collector's role: a standby refuses drill writes (see [`crate::ha`]).
    pub roles: crate::ha::Roles,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("auth", &self.auth)
            .field("tz", &self.tz)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    pub fn new(
        store: Store,
        events: EventHub,
        control: Control,
        auth: Auth,
        recent: RecentMetrics,
        tz: TimeZone,
    ) -> Self {
        Self {
            store,
            events,
            control,
            auth,
            recent,
            tz,
            clock: system_clock(),
            drills: None,
            drill_limits: crate::drills::DrillsSettings::default(),
            readiness: Board::new(),
            tickets: tickets::Tickets::default(),
            reports: Reports::new(DEFAULT_MAX_REPORTS),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            trusted_proxies: Arc::from([]),
            roles: crate::ha::single(),
        }
    }

    /// The same state following this collector's role.
    pub fn with_roles(mut self, roles: crate::ha::Roles) -> Self {
        self.roles = roles;
        self
    }

    /// The same state believing `X-Forwarded-For` from these proxies (`[http]
    /// trusted_proxies`).
    pub fn with_trusted_proxies(mut self, proxies: &[std::net::IpAddr]) -> Self {
        self.trusted_proxies = Arc::from(proxies);
        self
    }

    /// The same state answering 503 `timeout` to requests that take longer than `limit`.
    pub fn with_request_timeout(mut self, limit: std::time::Duration) -> Self {
        self.request_timeout = limit;
        self
    }

    /// The same state running at most `max` report queries at once.
    pub fn with_max_reports(mut self, max: usize) -> Self {
        self.reports = Reports::new(max);
        self
    }

    /// The same state with the drills task's control and limits.
    pub fn with_drills(
        mut self,
        control: crate::drills::DrillControl,
        limits: crate::drills::DrillsSettings,
    ) -> Self {
        self.drills = Some(control);
        self.drill_limits = limits;
        self
    }

    /// The same state with another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same state reading the readiness rollups from `board` (the core's).
    pub fn with_readiness(mut self, board: Board) -> Self {
        self.readiness = board;
        self
    }

    pub(crate) fn now(&self) -> UnixMillis {
        (self.clock)()
    }
}

/// `/api/v1/*` and the console. Merge it with [`crate::http::router`]'s health routes.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/whoami", get(handlers::whoami))
        .route("/summary", get(handlers::summary))
        .route("/nodes", get(handlers::nodes))
        .route("/nodes/{node}", get(handlers::node))
        .route("/nodes/{node}/history", get(handlers::history))
        .route("/nodes/{node}/metrics", get(handlers::metrics))
        .route("/alerts", get(handlers::alerts))
        .route("/alerts/{id}/ack", post(handlers::ack))
        .route(
            "/silences",
            get(handlers::silences).post(handlers::add_silence),
        )
        .route("/silences/{id}", delete(handlers::end_silence))
        .route("/uptime", get(uptime::uptime))
        .route("/drills", get(drills::list).post(drills::start))
        .route("/drills/{id}", get(drills::show))
        .route("/drills/{id}/cancel", post(drills::cancel))
        .route("/readiness", get(readiness::readiness))
        .route("/readiness/history", get(readiness::history))
        .route("/events/ticket", post(tickets::issue))
        .route("/audit", get(audit::list))
        .fallback(handlers::no_route)
        .route_layer(middleware::from_fn_with_state(state.clone(), identify))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit::record_writes,
        ));
    // The stream authenticates itself (`?ticket=`, and the deprecated `?access_token=`).
    let api = api.route("/events", get(events::events));
    Router::new()
        .nest("/api/v1", api.with_state(state))
        .merge(console::router())
}

/// Identifies the caller of every `/api/v1` route but the event stream, refusing unknown
/// tokens and (without `anonymous_read`) missing ones; handlers find the [`Caller`] in the
/// request's extensions. Also bounds each request's time (`[http] request_timeout`).
async fn identify(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    match state.auth.identify(request.headers(), None) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            // Dropping the handler's future on timeout drops its work with it (a report
            // marks itself abandoned, see `ReportSlot`).
            match tokio::time::timeout(state.request_timeout, next.run(request)).await {
                Ok(response) => response,
                Err(_) => ApiError::timeout(format!(
                    "the request took longer than {}",
                    humantime::format_duration(state.request_timeout)
                ))
                .into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// The query string as given, with typed getters whose errors name the parameter.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The last value of `name` (empty values count as absent).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// The report window of `since`, `from`/`to`, `day`, `week`, `month` or `year`, read in
    /// `tz` (as `/api/v1/uptime` and `/api/v1/readiness/history` take it).
    pub(crate) fn window(
        &self,
        now: crate::model::UnixMillis,
        tz: &jiff::tz::TimeZone,
    ) -> Result<crate::uptime::Window, crate::uptime::ParamError> {
        crate::uptime::WindowParams {
            since: self.owned("since"),
            from: self.owned("from"),
            to: self.owned("to"),
            day: self.owned("day"),
            week: self.owned("week"),
            month: self.owned("month"),
            year: self.owned("year"),
        }
        .resolve(now, tz)
    }

    /// [`Params::window`], refused (400) when longer than [`MAX_REPORT_WINDOW`]: a report
    /// reads every transition of its window, so the window bounds the work one request asks.
    pub(crate) fn report_window(
        &self,
        now: crate::model::UnixMillis,
        tz: &jiff::tz::TimeZone,
    ) -> Result<crate::uptime::Window, ApiError> {
        let window = self.window(now, tz)?;
        if window.to() - window.from() > MAX_REPORT_WINDOW {
            let name = ["since", "year", "from", "to", "month", "week", "day"]
                .into_iter()
                .find(|n| self.get(n).is_some())
                .unwrap_or("from");
            return Err(ApiError::bad_param(
                name,
                self.get(name).unwrap_or_default(),
                &format!(
                    "the window is longer than {} days; ask for shorter windows",
                    MAX_REPORT_WINDOW.as_secs() / DAY.as_secs()
                ),
            ));
        }
        Ok(window)
    }

    /// A value parsed by `parse`, which says what is expected when it fails.
    pub(crate) fn parse<T>(
        &self,
        name: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| parse(v).ok_or_else(|| ApiError::bad_param(name, v, expected)))
            .transpose()
    }

    /// A comma-separated list of values, each parsed by `parse`.
    pub(crate) fn list<T>(
        &self,
        name: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<Vec<T>>, ApiError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| parse(s).ok_or_else(|| ApiError::bad_param(name, v, expected)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}
