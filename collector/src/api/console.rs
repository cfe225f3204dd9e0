//! The operations console's static files (collector/console/), embedded in the binary.
//! To serve another file, add a line to [`FILES`].

use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// `(path, content type, bytes)`; `/` serves `index.html`.
pub const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../console/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/app.js"),
    ),
    (
        "/drills.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/drills.js"),
    ),
    (
        "/readiness.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/readiness.js"),
    ),
    (
        "/audit.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/audit.js"),
    ),
    (
        "/i18n.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../console/i18n.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/style.css"),
    ),
];

/// Routes for every embedded file (and `/`); other paths outside the API answer 404.
pub fn router() -> Router {
    Router::new().fallback(serve)
}

async fn serve(uri: Uri) -> Response {
    let path = match uri.path() {
        "/" => "/index.html",
        p => p,
    };
    match FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response(),
    }
}
