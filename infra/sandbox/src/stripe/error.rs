//! Stripe's error shape: `{"error": {"type", "code"?, "message", "param"?}}` with the status Stripe uses.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// One API error, rendered as Stripe renders it.
#[derive(Debug, Clone)]
pub(crate) struct StripeError {
    pub status: StatusCode,
    /// `invalid_request_error`, `api_error`, `card_error` or `idempotency_error`.
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
    /// `Stripe-Should-Retry` header, when set.
    pub should_retry: Option<bool>,
}

pub(crate) type ApiResult<T> = Result<T, StripeError>;

impl StripeError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        StripeError { status, kind, code: None, message: message.into(), param: None, should_retry: None }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// `Missing required param: {param}.` (400 `parameter_missing`).
    pub fn missing(param: &str) -> Self {
        Self::invalid(format!("Missing required param: {param}.")).code("parameter_missing").param(param)
    }

    /// `Invalid {what}: {detail}` on a parameter (400 `parameter_invalid_*`).
    pub fn bad_param(param: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self::invalid(message).code(code).param(param)
    }

    /// `No such {kind}: '{id}'` (404 `resource_missing`).
    pub fn no_such(kind: &str, id: &str, param: Option<&str>) -> Self {
        let mut e = Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("No such {kind}: '{id}'"))
            .code("resource_missing");
        e.param = param.map(str::to_string);
        e
    }

    /// A missing or unusable secret key (401).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
    }

    pub fn body(&self) -> Value {
        let mut err = Map::new();
        err.insert("type".into(), json!(self.kind));
        err.insert("message".into(), json!(self.message));
        if let Some(code) = self.code {
            err.insert("code".into(), json!(code));
            err.insert(
                "doc_url".into(),
                json!(format!("https://stripe.com/docs/error-codes/{}", code.replace('_', "-"))),
            );
        }
        if let Some(param) = &self.param {
            err.insert("param".into(), json!(param));
        }
        json!({ "error": Value::Object(err) })
    }
}

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(retry) = self.should_retry {
            res.headers_mut()
                .insert("stripe-should-retry", HeaderValue::from_static(if retry { "true" } else { "false" }));
        }
        res
    }
}
