//! The HTTP edge shared by every function: our JSON extractor (errors in our shape), the principal
//! extractors that build a tenant scope from the authorizer's context, request ids, pagination, and a
//! route table that remembers what it serves (so tests can hold it against the OpenAPI document).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::request::RequestContext;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::Instrument;

use crate::auth::Principal;
use crate::error::{ApiError, REQUEST_ID};
use crate::ids::{KeyId, TenantId, UserId};

/// Largest request body we read; larger bodies get 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The authorizer's context of this request, as API Gateway (or the local stack) put it.
fn authorizer_context(parts: &Parts) -> Option<&HashMap<String, Value>> {
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.authorizer.as_ref().map(|a| &a.fields),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn request_id_of(parts: &Parts) -> Option<String> {
    match parts.extensions.get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.request_id.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // A function behind a Function URL authenticates in-process and leaves the principal here.
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        Ok(authorizer_context(parts).map(Principal::from_context).unwrap_or_else(Principal::missing))
    }
}

fn refused(principal: Principal, needed: &'static str, code: &'static str) -> ApiError {
    match principal {
        Principal::Anonymous { status, code, message } => {
            ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED), code, message)
        }
        _ => ApiError::forbidden(code, format!("this route needs {needed}")),
    }
}

/// The operator, and only the operator.
pub struct Operator;

impl<S: Send + Sync> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        match Principal::from_request_parts(parts, s).await? {
            Principal::Operator => Ok(Operator),
            other => Err(refused(other, "the operator key", "operator_key_required")),
        }
    }
}

/// A tenant acting with one of its API keys. The only way tenant routes reach tenant data: the tenant id
/// comes from the verified context, never from the request.
#[derive(Debug, Clone)]
pub struct TenantScope {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
}

impl<S: Send + Sync> FromRequestParts<S> for TenantScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        match Principal::from_request_parts(parts, s).await? {
            Principal::Tenant { tenant_id, key_id } => Ok(TenantScope { tenant_id, key_id }),
            other => Err(refused(other, "a tenant API key", "tenant_key_required")),
        }
    }
}

/// An end user signed in with the tenant's login, for `/v1/me` routes.
#[derive(Debug, Clone)]
pub struct EndUserScope {
    pub tenant_id: TenantId,
    pub user_id: UserId,
}

impl<S: Send + Sync> FromRequestParts<S> for EndUserScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        match Principal::from_request_parts(parts, s).await? {
            Principal::EndUser { tenant_id, user_id } => Ok(EndUserScope { tenant_id, user_id }),
            other => Err(refused(other, "an end user's token from the tenant's login", "end_user_token_required")),
        }
    }
}

/// Whose data a request is about: the path's `{user_id}`, for a tenant key; the signed-in end user on
/// `/v1/me/...`. A malformed user id is a 404 like any user the tenant does not have.
#[derive(Debug, Clone)]
pub struct Subject {
    pub tenant: TenantId,
    pub user: UserId,
}

impl<S: Send + Sync> FromRequestParts<S> for Subject {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = axum::extract::Path::<HashMap<String, String>>::from_request_parts(parts, state).await.ok();
        match params.as_ref().and_then(|p| p.get("user_id")) {
            Some(raw) => {
                let scope = TenantScope::from_request_parts(parts, state).await?;
                let user = UserId::parse(raw).map_err(|_| ApiError::not_found("user"))?;
                Ok(Self { tenant: scope.tenant_id, user })
            }
            None => {
                let scope = EndUserScope::from_request_parts(parts, state).await?;
                Ok(Self { tenant: scope.tenant_id, user: scope.user_id })
            }
        }
    }
}

impl Subject {
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The user the request is about.
    pub fn user(&self) -> &UserId {
        &self.user
    }
}

/// `axum::Json` with our error shape: 400 for malformed JSON, wrong types and unknown fields (types
/// opt in with `deny_unknown_fields`), 415 without a JSON content type, 413 over [`MAX_BODY_BYTES`].
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, s: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::JsonRejection as R;
        match axum::Json::<T>::from_request(req, s).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(R::JsonDataError(e)) => Err(ApiError::bad_request("invalid_body", body_error_text(&e))),
            Err(R::JsonSyntaxError(e)) => Err(ApiError::bad_request("invalid_json", body_error_text(&e))),
            Err(R::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `content-type: application/json`",
            )),
            Err(R::BytesRejection(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body is larger than {} bytes", MAX_BODY_BYTES),
            )),
            Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// serde's own words (field, line, column) are the most useful thing to tell the caller.
fn body_error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    format!("the JSON body was not accepted: {text}")
}

/// Query parameters, with our error shape.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, s)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// `?limit=&cursor=` on every list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A validated page request: `limit` in 1..=100 (default 50), and the opaque cursor decoded.
#[derive(Debug, Clone)]
pub struct Page {
    pub limit: i32,
    pub after: Option<String>,
}

impl PageParams {
    pub fn page(self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request("invalid_query", "limit must be between 1 and 100"));
        }
        let after = match self.cursor {
            None => None,
            Some(c) => Some(decode_cursor(&c).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one we issued; pass next_cursor back unchanged")
            })?),
        };
        Ok(Page { limit: i32::try_from(limit).unwrap_or(50), after })
    }
}

/// Cursors are opaque to callers; they hold only a sort key position, never a tenant id, so a cursor from
/// another tenant can only point into the caller's own partition.
pub fn encode_cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()
}

/// `{"data": [...], "next_cursor": ...}`.
pub fn list_body<T: serde::Serialize>(data: Vec<T>, next: Option<String>) -> serde_json::Value {
    serde_json::json!({"data": data, "next_cursor": next.as_deref().map(encode_cursor)})
}

/// Gives every request an id (API Gateway's, or a new one), logs it in a span with the tenant (every log line
/// of the request carries both), puts it on error bodies and the `x-request-id` header, and records the
/// request's metrics (`shared::metrics::http_request`).
pub async fn request_id_layer(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let id = request_id_of(&parts).unwrap_or_else(|| ulid::Ulid::new().to_string());
    // A function behind a Function URL (the meter) authenticates in-process and leaves the principal here.
    let tenant = match parts.extensions.get::<Principal>() {
        Some(principal) => principal.tenant_id().map(ToString::to_string),
        None => {
            authorizer_context(&parts).map(Principal::from_context).and_then(|p| p.tenant_id().map(ToString::to_string))
        }
    }
    .unwrap_or_default();
    // The route's template, never the raw path: a Connect link carries its secret in the path.
    let route = parts.extensions.get::<axum::extract::MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let span =
        tracing::info_span!("request", request_id = %id, tenant_id = %tenant, method = %parts.method, route = %route);
    let req = Request::from_parts(parts, body);
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req)).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    crate::metrics::http_request(&tenant, &route, response.status().as_u16(), started.elapsed().as_secs_f64() * 1e3);
    response
}

/// A router that records each (method, path) it serves, in API Gateway's `{param}` syntax.
pub struct Routes<S = ()> {
    router: Router<S>,
    served: Vec<(Method, &'static str)>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self { router: Router::new(), served: Vec::new() }
    }
}

macro_rules! verb {
    ($name:ident, $method:ident) => {
        pub fn $name<H: Handler<T, S>, T: 'static>(self, path: &'static str, handler: H) -> Self {
            self.add(Method::$method, path, axum::routing::$name(handler))
        }
    };
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, method: Method, path: &'static str, route: axum::routing::MethodRouter<S>) -> Self {
        self.router = self.router.route(path, route);
        self.served.push((method, path));
        self
    }

    verb!(get, GET);
    verb!(post, POST);
    verb!(put, PUT);
    verb!(patch, PATCH);
    verb!(delete, DELETE);

    pub fn served(&self) -> Vec<(Method, &'static str)> {
        self.served.clone()
    }

    /// The finished router: request ids, the body limit, and JSON answers for unknown routes and methods.
    pub fn into_router(self, state: S) -> Router {
        self.router
            .fallback(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such route; see /openapi.json")
            })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this route does not take that method; see /openapi.json",
                )
            })
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn(request_id_layer))
            .with_state(state)
    }
}

/// 201/200 with a JSON body.
pub fn created(body: impl serde::Serialize) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tests::Lines;
    use tower::ServiceExt;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_refused() {
        let page = PageParams { limit: None, cursor: Some(encode_cursor("user#usr_1")) }.page();
        assert_eq!(page.ok().and_then(|p| p.after).as_deref(), Some("user#usr_1"));
        assert!(PageParams { limit: None, cursor: Some("%%%".into()) }.page().is_err());
        assert!(PageParams { limit: Some(0), cursor: None }.page().is_err());
        assert!(PageParams { limit: Some(101), cursor: None }.page().is_err());
    }

    /// A request as API Gateway hands it over after the authorizer allowed a tenant key.
    fn tenant_request(uri: &str, tenant: &str) -> Request {
        let context = serde_json::json!({
            "routeKey": "GET /v1/things/{id}", "accountId": "123456789012", "apiId": "local", "stage": "$default",
            "requestId": "req-log-test", "domainName": "127.0.0.1", "timeEpoch": 0,
            "http": {"method": "GET", "path": uri, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "t"},
            "authorizer": {"lambda": {"principal": "tenant", "tenant_id": tenant, "key_id": KeyId::generate().to_string()}},
        });
        let context = serde_json::from_value(context).expect("a valid API Gateway v2 request context");
        let mut request = Request::new(axum::body::Body::empty());
        *request.uri_mut() = uri.parse().expect("a valid uri");
        request.extensions_mut().insert(RequestContext::ApiGatewayV2(context));
        request
    }

    async fn thing(scope: TenantScope) -> Result<&'static str, ApiError> {
        tracing::info!(tenant = %scope.tenant_id, "looking for the thing");
        tracing::warn!("the thing is not there");
        Err(ApiError::not_found("thing"))
    }

    #[tokio::test]
    async fn every_log_line_of_a_request_carries_its_request_id_and_tenant_id_and_the_request_is_counted() {
        let tenant = crate::ids::TenantId::generate().to_string();
        let lines = Lines::default();
        let subscriber = crate::telemetry::json_subscriber(tracing_subscriber::EnvFilter::new("info"), lines.clone());
        let _logs = tracing::subscriber::set_default(subscriber.finish());
        let metrics = crate::metrics::Captured::start();
        let router = Routes::new().get("/v1/things/{id}", thing).into_router(());

        let response = router.oneshot(tenant_request("/v1/things/thg_1", &tenant)).await.expect("infallible");

        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("req-log-test"));
        let logged = lines.parsed();
        assert!(logged.len() >= 2, "the handler logs two lines: {logged:?}");
        for line in &logged {
            assert_eq!(line["request_id"], "req-log-test", "{line}");
            assert_eq!(line["tenant_id"], tenant.as_str(), "{line}");
            assert_eq!(line["route"], "/v1/things/{id}", "{line}");
        }
        let counted: Vec<_> = metrics.lines().into_iter().filter(|l| l["TenantId"] == tenant.as_str()).collect();
        assert_eq!(counted.len(), 1, "{counted:?}");
        assert_eq!((counted[0]["Requests"].as_f64(), counted[0]["Http4xx"].as_f64()), (Some(1.0), Some(1.0)));
        assert_eq!(counted[0]["Http5xx"], 0);
        assert_eq!(counted[0]["RouteClass"], "tenant");
        assert!(counted[0]["Latency"].as_f64().is_some_and(|ms| ms >= 0.0), "{}", counted[0]);
    }
}
