//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, the hardening headers, and serving
//! a router over plain HTTP or TLS ([`crate::tls`]) with each request's [`Peer`]; and
//! `[http]` ([`HttpConfig`] builds the parsed [`HttpSettings`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::connect_info::Connected;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::IncomingStream;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AuthConfig, TokenConfig};
use crate::metrics::Metrics;
use crate::readiness::Board;
use crate::timeseries::SinkHandle;
use crate::tls::{TlsFiles, TlsListener, TlsReloader};

/// `[http]`: the API, the console, metrics and health.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port (logged at start).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Reads need no token (a wall screen on a closed network). Writes always need one.
    #[serde(default)]
    pub anonymous_read: bool,
    /// `[[http.tokens]] name, role` and one of `token`, `token_sha256` (its digest, from
    /// `alarmnet-collector hash-token`) or `token_file` (`viewer` reads; `operator` also
    /// acknowledges and silences). ALARMNET_HTTP__TOKENS is not a list key.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// An API request (the event stream excepted) taking longer than this is answered 503
    /// `timeout` and its work dropped: a slow report cannot hold a connection for ever.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Report queries (uptime, readiness history) running at once; more are answered 503
    /// `busy` with `Retry-After`. Each keeps a store reader thread busy.
    #[serde(default = "default_max_reports")]
    pub max_reports: usize,
    /// PEM certificate chain of the API and console: with `tls_key_file`, they are served
    /// over HTTPS only. Read again on SIGHUP (new connections get the new certificate).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file` (readable by the service only).
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: set, every client must present a certificate they signed
    /// (mutual TLS, e.g. for the operations centre's own machines). Tokens still apply.
    pub tls_client_ca_file: Option<PathBuf>,
    /// Allow plain HTTP on an address other than loopback. Without TLS, tokens and
    /// acknowledgements cross the network in clear: only behind a TLS-terminating proxy.
    #[serde(default)]
    pub insecure: bool,
    /// Reverse proxies whose `X-Forwarded-For` is believed: the audit log records the
    /// client address they report instead of the proxy's. Empty: the socket's address.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_reports() -> usize {
    crate::api::DEFAULT_MAX_REPORTS
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            anonymous_read: false,
            tokens: Vec::new(),
            request_timeout: default_request_timeout(),
            max_reports: default_max_reports(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            insecure: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[http]` checked: the address parsed, token files read, the TLS files loaded once.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Where the API listens; port 0 picks a free port.
    pub listen: SocketAddr,
    pub anonymous_read: bool,
    /// The tokens, with every `token_file` read.
    pub tokens: Vec<TokenConfig>,
    pub request_timeout: Duration,
    pub max_reports: usize,
    /// The certificate, key and client CA files when the API is served over TLS.
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpAddr>,
}

impl HttpSettings {
    /// The API's tokens and roles.
    pub fn auth(&self) -> AuthConfig {
        AuthConfig {
            anonymous_read: self.anonymous_read,
            tokens: self.tokens.clone(),
        }
    }

    /// The TLS files, when the API is served over TLS.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        self.tls.clone()
    }
}

impl HttpConfig {
    /// Checks every key (reading token files, relative ones from `credentials`), and
    /// returns the parsed settings, or every problem under its `http.` key path.
    pub fn build(mut self, credentials: Option<&Path>) -> Result<HttpSettings, Vec<String>> {
        let mut errors = crate::api::auth::read_token_files(&mut self.tokens, credentials);
        let auth = AuthConfig {
            anonymous_read: self.anonymous_read,
            tokens: self.tokens,
        };
        errors.extend(auth.validate());
        let listen = match self.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                errors.push(format!(
                    "http.listen: {:?} is not an address:port ({e})",
                    self.listen
                ));
                None
            }
        };
        if self.request_timeout < Duration::from_secs(1) {
            errors.push("http.request_timeout: must be at least 1s".into());
        }
        if !(1..=64).contains(&self.max_reports) {
            errors.push("http.max_reports: must be 1 to 64".into());
        }
        // The listener's TLS: files that go together, files that do not load, and plain
        // HTTP on a non-loopback address without `insecure = true`.
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            errors.push("http.tls_cert_file, http.tls_key_file: give both or neither".into());
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            errors.push(
                "http.tls_client_ca_file: set without http.tls_cert_file and http.tls_key_file"
                    .into(),
            );
        }
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca_file,
            }),
            _ => None,
        };
        if let Some(files) = &tls
            && let Err(e) = crate::tls::server_config(files)
        {
            errors.push(e.to_string());
        }
        if let Some(addr) = listen
            && !addr.ip().is_loopback()
            && tls.is_none()
            && !self.insecure
        {
            errors.push(format!(
                "http.insecure: http.listen = {:?} is not a loopback address and the API has \
                 no TLS; set http.tls_cert_file and http.tls_key_file, or set \
                 http.insecure = true to serve plain HTTP there (tokens would cross the \
                 network in clear)",
                self.listen
            ));
        }
        match listen {
            Some(listen) if errors.is_empty() => Ok(HttpSettings {
                listen,
                anonymous_read: auth.anonymous_read,
                tokens: auth.tokens,
                request_timeout: self.request_timeout,
                max_reports: self.max_reports,
                tls,
                trusted_proxies: self.trusted_proxies,
            }),
            _ => Err(errors),
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    /// The time-series sink, whose counters join `/metrics` (`alarmnet_tsdb_*`).
    pub tsdb: Option<SinkHandle>,
    /// The readiness rollups, whose per-region gauges join `/metrics`.
    pub readiness: Option<Board>,
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The policy the console runs under: its own scripts only (no inline script, no eval), no
/// framing by other sites (clickjacking an acknowledge button), no plugins. Inline `style`
/// attributes stay allowed: the console sets bar widths and chart colours through them.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the hardening headers to every answer: the content security policy, no MIME
/// sniffing, no framing (also for browsers without CSP level 2), no referrer.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The address a request came from (the TCP peer), in the request's extensions as
/// `ConnectInfo<Peer>` for plain and TLS connections alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// Serves plain HTTP until `shutdown`, every answer with the hardening headers.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, None, router, shutdown).await
}

/// Serves until `shutdown`: over TLS when `tls` is given (its certificate reloadable
/// while serving), else plain HTTP; every answer with the hardening headers, and over TLS
/// also `Strict-Transport-Security`.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsReloader>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn(security_headers));
    let stopped = async move { shutdown.cancelled().await };
    match tls {
        None => {
            let app = router.into_make_service_with_connect_info::<Peer>();
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }
        Some(tls) => {
            let router = router.layer(axum::middleware::map_response(strict_transport));
            let app = router.into_make_service_with_connect_info::<Peer>();
            axum::serve(TlsListener::new(listener, tls)?, app)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

/// Browsers that reached the console over TLS keep to TLS for a year.
async fn strict_transport(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    response
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = s.metrics.render();
            if let Some(tsdb) = &s.tsdb {
                tsdb.counters().render_prometheus(&mut text);
            }
            if let Some(board) = &s.readiness {
                board.snapshot().render_prometheus(&mut text);
            }
            text
        },
    )
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the store is open and committing, and the broker connected and delivering (a
/// link check's echo came back through the collector's subscriptions). On a shared store
/// the answer names the role: a standby is ready too (it serves the API).
async fn readyz(State(s): State<HttpState>) -> (StatusCode, String) {
    let mut missing = Vec::new();
    if !s.metrics.store_open.load(Relaxed) {
        missing.push("store not open");
    }
    if s.metrics.store_failing.load(Relaxed) {
        missing.push("store cannot commit (disk full?)");
    }
    if !s.metrics.mqtt_connected.load(Relaxed) {
        missing.push("not connected to the broker");
    } else if !s.metrics.mqtt_receiving.load(Relaxed) {
        // Connected, but its subscriptions not yet known to deliver (no echo yet).
        missing.push("not yet receiving from the broker");
    }
    let role = match s.metrics.role.load(Relaxed) {
        1 => " (standby)",
        2 => " (active)",
        _ => "",
    };
    if missing.is_empty() {
        (StatusCode::OK, format!("ready{role}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_text(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("request");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let metrics = Arc::new(Metrics::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            router(HttpState {
                metrics: metrics.clone(),
                tsdb: None,
                readiness: None,
            }),
            shutdown.clone(),
        ));
        assert_eq!(get_text(addr, "/healthz").await, (200, "ok\n".into()));
        for path in ["/healthz", "/no-such-page"] {
            let r = reqwest::get(format!("http://{addr}{path}"))
                .await
                .expect("request");
            let h = r.headers();
            assert_eq!(
                h["content-security-policy"], CONTENT_SECURITY_POLICY,
                "{path}"
            );
            assert!(CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            assert_eq!(h["x-frame-options"], "DENY", "{path}");
            assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        }
        let (code, body) = get_text(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("store") && body.contains("broker"), "{body}");
        metrics.store_open.store(true, Relaxed);
        metrics.mqtt_connected.store(true, Relaxed);
        metrics.mqtt_receiving.store(true, Relaxed);
        assert_eq!(get_text(addr, "/readyz").await.0, 200);
        metrics.received.fetch_add(5, Relaxed);
        let (code, body) = get_text(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            body.contains("alarmnet_messages_received_total 5\n"),
            "{body}"
        );
        shutdown.cancel();
        server.await.expect("join").expect("clean stop");
    }
}
