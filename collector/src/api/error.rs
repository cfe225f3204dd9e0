//! The API's error answer: `{"error": {"code", "message", "param"?}}` with its status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::StoreError;
use crate::uptime::ParamError;

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_S: &str = "5";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    /// 400 `bad_parameter` naming `param`, with the value given and what was expected.
    pub fn bad_param(param: &str, value: &str, expected: &str) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                format!("bad parameter `{param}` ({value:?}): {expected}"),
            )
        }
    }

    /// 400 `bad_body` naming the field at fault.
    pub fn bad_body(field: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(field.to_owned()),
            ..Self::new(StatusCode::BAD_REQUEST, "bad_body", message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 naming the parameter that points at nothing.
    pub fn not_found(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(StatusCode::NOT_FOUND, "not_found", message)
        }
    }

    /// 404 for a path the API does not have.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such API path: {path}"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503 `busy`: a bounded resource (report slots) is taken; answered with `Retry-After`.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
    }

    /// 503 `timeout`: the request took longer than the API allows.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        Self {
            param: Some(e.param.to_owned()),
            ..Self::new(StatusCode::BAD_REQUEST, "bad_parameter", e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Closed | StoreError::Commit(_) | StoreError::Sqlite(_) => {
                tracing::warn!(error = %e, "api: store unavailable");
                Self::unavailable(format!("the store cannot answer now: {e}"))
            }
            other => {
                tracing::error!(error = %other, "api: store error");
                Self::internal(format!("store: {other}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        response
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;
