//! The one error type every HTTP function returns, and the one place it becomes a status and a JSON body
//! `{"error": {"code", "message", "request_id"}}`.

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

tokio::task_local! {
    /// The request id of the request being served; error bodies carry it so a tenant can quote it to us.
    pub static REQUEST_ID: String;
}

/// The current request id, or an empty string outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// An error answered to a caller. Expected outcomes carry their status and code; infrastructure failures
/// (`internal`) keep their cause for the logs and show the caller only the request id.
#[derive(Debug, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    pub retry_after_secs: Option<u64>,
    /// More fields of the error object beside code, message and request id (a budget's `reset_at`).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
    #[source]
    pub source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { status, code: code.into(), message: message.into(), retry_after_secs: None, details: None, source: None }
    }

    /// 400: the request itself must change.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no credentials, or credentials we do not accept.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    /// 403: valid credentials of a kind this route does not serve. Never used for another tenant's objects.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404 for an object that is absent or not the caller's: the two are indistinguishable on purpose.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} with that id"))
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 500 that keeps its cause for the logs; the caller sees only a generic message and the request id.
    pub fn internal(source: anyhow::Error) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something failed on our side; retry later and quote the request_id if it persists",
        );
        e.source = Some(source);
        e
    }

    /// 503 when a dependency is down; the caller may retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "service_unavailable", message)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after_secs = Some(retry_after_secs.max(1));
        e
    }

    /// Adds a field to the error object.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.get_or_insert_with(Default::default).insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body in the API's error shape.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut body = json!({"error": {"code": self.code, "message": self.message, "request_id": request_id}});
        if let (Some(details), Some(error)) = (&self.details, body["error"].as_object_mut()) {
            for (k, v) in details {
                error.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        body
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        if self.status.is_server_error() {
            tracing::error!(code = %self.code, error = ?self.source, "request failed");
        } else {
            tracing::info!(status = self.status.as_u16(), code = %self.code, "request refused");
        }
        let mut response = (self.status, axum::Json(self.body(&request_id))).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_body_has_the_design_shape_with_the_request_id() {
        let response = REQUEST_ID.scope("req-1".into(), async { ApiError::not_found("user").into_response() }).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }

    #[tokio::test]
    async fn an_internal_error_hides_its_cause_from_the_caller() {
        let response = ApiError::internal(anyhow::anyhow!("table tenancy secret detail")).into_response();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains("secret detail"));
    }
}
