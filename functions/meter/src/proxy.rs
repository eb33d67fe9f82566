//! The drop-in proxy: `POST .../ai/anthropic/v1/messages` and `.../ai/openai/v1/chat/completions` take the
//! upstream API's own request, check who may call and what the plan allows, reserve budget and rate in one
//! write, forward with the tenant's key, pass the answer through as it arrives (SSE event by event), and
//! settle to the usage the upstream reported in one more write.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use shared::ApiError;
use shared::events::Event;
use shared::http::Subject;
use shared::meter::{
    Admission, LedgerEntry, LlmProvider, MeterStore, ModelPrice, ReportAs, Reservation, TokenUsage, price, prices,
};
use shared::tenancy::Status;

use crate::AppState;
use crate::breaker::Gate;
use crate::usage::{self, SseMeter};

/// Largest request body the proxy reads (Function URLs take 6 MB).
pub const MAX_BODY_BYTES: usize = 4 << 20;
/// The output reserved for an OpenAI call that names no limit; it is also sent upstream as the limit, so the
/// budget holds.
pub const DEFAULT_OPENAI_MAX_OUTPUT: u64 = 4096;

pub const REMAINING: HeaderName = HeaderName::from_static("x-tenantry-tokens-remaining");
pub const RESET: HeaderName = HeaderName::from_static("x-tenantry-budget-reset");
pub const WARNING: HeaderName = HeaderName::from_static("x-tenantry-budget-warning");
pub const MAX_TOKENS: HeaderName = HeaderName::from_static("x-tenantry-max-tokens");
pub const METERING: HeaderName = HeaderName::from_static("x-tenantry-metering");

pub async fn anthropic(subject: Subject, State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    proxy(&app, &subject, LlmProvider::Anthropic, &headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn openai(subject: Subject, State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    proxy(&app, &subject, LlmProvider::OpenAi, &headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

/// The request as the proxy understood it.
struct Call {
    api: LlmProvider,
    body: Map<String, Value>,
    price: &'static ModelPrice,
    /// The client's output limit (`max_tokens`; OpenAI's `max_completion_tokens` or `max_tokens`).
    max_output: Option<u64>,
    stream: bool,
    /// The client asked for OpenAI's usage chunk itself.
    wants_usage_chunk: bool,
    input_estimate: u64,
}

fn parse_call(api: LlmProvider, raw: &[u8]) -> Result<Call, ApiError> {
    let body = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(ApiError::bad_request("invalid_json", "the body must be a JSON object")),
        Err(e) => return Err(ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))),
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request("model_required", "`model` (a string) is required"))?;
    let price = price(api, model).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_model",
            format!(
                "`{model}` is not a {} model the proxy can price; known models: {}",
                api.display_name(),
                prices::models(api).join(", ")
            ),
        )
    })?;
    let limit_field = |k: &str| -> Result<Option<u64>, ApiError> {
        match body.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().filter(|n| *n > 0).map(Some).ok_or_else(|| {
                ApiError::bad_request("invalid_max_tokens", format!("`{k}` must be a positive integer"))
            }),
        }
    };
    let max_output = match api {
        LlmProvider::Anthropic => Some(limit_field("max_tokens")?.ok_or_else(|| {
            ApiError::bad_request("max_tokens_required", "`max_tokens` (a positive integer) is required")
        })?),
        LlmProvider::OpenAi => limit_field("max_completion_tokens")?.or(limit_field("max_tokens")?),
    };
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let wants_usage_chunk =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool).unwrap_or(false);
    // About four bytes a token for text; JSON syntax makes this an overestimate, which settling corrects.
    let input_estimate = (raw.len() as u64).div_ceil(4) + 8;
    Ok(Call { api, body, price, max_output, stream, wants_usage_chunk, input_estimate })
}

impl Call {
    /// The body to send: the output limit the reservation allows, and OpenAI's usage chunk asked for.
    fn upstream_body(&mut self, allowed_output: Option<u64>) -> Vec<u8> {
        if let Some(allowed) = allowed_output {
            let key = match self.api {
                LlmProvider::Anthropic => "max_tokens",
                LlmProvider::OpenAi if self.body.contains_key("max_tokens") => "max_tokens",
                LlmProvider::OpenAi => "max_completion_tokens",
            };
            if self.max_output != Some(allowed) {
                self.body.insert(key.to_owned(), json!(allowed));
            }
        }
        if self.api == LlmProvider::OpenAi && self.stream {
            let options = self.body.entry("stream_options").or_insert_with(|| json!({}));
            if let Some(o) = options.as_object_mut() {
                o.insert("include_usage".into(), json!(true));
            }
        }
        serde_json::to_vec(&self.body).unwrap_or_default()
    }
}

async fn proxy(
    app: &AppState,
    who: &Subject,
    api: LlmProvider,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the request body is over 4 MiB")
    })?;
    // Whose call it is first: another tenant's user is a 404 whatever the body.
    let tenancy = app.stores.tenant(who.tenant()).await?;
    let plans = tenancy.plan_store();
    // The reads are independent: side by side, so the call waits for the slowest, not the sum.
    let (user, settings) = tokio::join!(plans.user_plan(who.tenant(), who.user()), plans.settings(who.tenant()));
    let (status, own_plan) = user.map_err(|e| e.into_api("user"))?;
    let mut call = parse_call(api, &raw)?;
    if status == Status::Disabled {
        return Err(ApiError::forbidden("user_disabled", "this user is disabled; the tenant can enable them again"));
    }
    let settings = settings.map_err(|e| e.into_api("settings"))?;
    let plan_name = own_plan.or(settings.default_plan.clone()).ok_or_else(|| {
        ApiError::conflict(
            "no_plan",
            "the user has no plan and the tenant has no default plan: create one with PUT /v1/settings/plans/{plan} \
             and name it in PUT /v1/settings/metering {\"default_plan\"}",
        )
    })?;
    let meter = tenancy.meter_store(&app.meter_table);
    let (plan, key, budget) = tokio::join!(
        plans.get_plan(who.tenant(), &plan_name),
        app.llm_key(&plans, who.tenant(), api),
        meter.budget(who.tenant(), who.user(), shared::time::now())
    );
    let plan = plan.map_err(|e| e.into_api("plan"))?.ok_or_else(|| {
        ApiError::conflict(
            "no_plan",
            format!("the plan `{plan_name}` does not exist; create it with PUT /v1/settings/plans/{plan_name}"),
        )
    })?;
    if !plan.allows(call.price.model) {
        return Err(ApiError::forbidden(
            "model_not_allowed",
            format!("the plan `{plan_name}` does not include `{}`", call.price.model),
        ));
    }
    let key = key?;
    let gate = app.breaker.check(who.tenant(), api, Instant::now());
    if let Gate::Open(wait) = gate {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
            format!(
                "{} has been failing; calls resume after a successful probe (in about {} s)",
                api.display_name(),
                wait.as_secs().max(1)
            ),
        );
        e.retry_after_secs = Some(wait.as_secs().max(1));
        return Err(e);
    }
    let abandon = |app: &AppState| {
        if gate == Gate::Probe {
            app.breaker.abandon_probe(who.tenant(), api);
        }
    };
    let asked = call.max_output.unwrap_or(DEFAULT_OPENAI_MAX_OUTPUT);
    let reserved = match budget {
        Ok(budget) => meter.reserve_on(budget, &plan, call.input_estimate, asked).await,
        Err(e) => Err(e),
    };
    let reservation = match reserved {
        Ok(Admission::Admitted(r)) => Some(r),
        Ok(Admission::BudgetExhausted { committed, limit, reset_at }) => {
            abandon(app);
            return Ok(budget_exhausted(committed, limit, reset_at));
        }
        Ok(Admission::RateLimited { retry_after_secs }) => {
            abandon(app);
            return Err(ApiError::rate_limited(
                format!(
                    "the plan `{plan_name}` allows {} calls a minute; retry after {retry_after_secs} s",
                    plan.requests_per_minute
                ),
                retry_after_secs,
            ));
        }
        Err(e) if settings.fail_open => {
            tracing::warn!(error = ?e, "budget store unreachable; the tenant fails open: forwarding unmetered");
            None
        }
        Err(e) => {
            abandon(app);
            tracing::error!(error = ?e, "budget store unreachable; failing closed");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "meter_unavailable",
                "the usage meter cannot be reached, so the call was not made; retry shortly",
            ));
        }
    };
    if let Some(r) = reservation.as_ref().filter(|r| r.crossed_threshold) {
        let event = Event::usage_threshold(
            who.tenant(),
            who.user(),
            &r.period.to_string(),
            shared::meter::store::THRESHOLD_PCT,
            r.committed,
            r.limit,
        );
        if let Err(e) = app.events.emit(&event).await {
            tracing::warn!(error = ?e, "could not send usage.threshold");
        }
    }
    let body = call.upstream_body(reservation.as_ref().map(|r| r.max_output));
    let ctx = Settle {
        meter,
        who: who.clone(),
        reservation,
        api,
        price: call.price,
        stream: call.stream,
        report_event: plan.event_name.clone(),
    };
    let url = format!("{}{}", app.upstream_base(api), upstream_path(api));
    let mut request = app.http.post(url).header(header::CONTENT_TYPE, "application/json").body(body);
    request = match api {
        LlmProvider::Anthropic => {
            let version = headers.get("anthropic-version").and_then(|v| v.to_str().ok()).unwrap_or("2023-06-01");
            let mut r = request.header("x-api-key", key.expose_secret()).header("anthropic-version", version);
            if let Some(beta) = headers.get("anthropic-beta") {
                r = r.header("anthropic-beta", beta);
            }
            r
        }
        LlmProvider::OpenAi => request.bearer_auth(key.expose_secret()),
    };
    let sent = tokio::time::timeout(app.tuning.first_byte, request.send()).await;
    let failed = match sent {
        Ok(Ok(r)) => Ok(r),
        Err(_) => Err((
            "upstream_timeout",
            format!("{} did not answer within {} ms", api.display_name(), app.tuning.first_byte.as_millis()),
        )),
        Ok(Err(e)) => {
            Err(("upstream_unavailable", format!("{} could not be reached: {}", api.display_name(), without_url(&e))))
        }
    };
    let upstream = match failed {
        Ok(r) => r,
        Err((code, message)) => {
            app.breaker.failure(who.tenant(), api, Instant::now());
            ctx.release().await;
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message));
        }
    };
    let status = upstream.status();
    if status.is_server_error() || status.as_u16() == 529 {
        app.breaker.failure(who.tenant(), api, Instant::now());
        ctx.release().await;
        return Ok(pass_through(upstream).await);
    }
    // Anything else (a 4xx included) shows the upstream is up.
    app.breaker.success(who.tenant(), api);
    if !status.is_success() {
        ctx.release().await;
        return Ok(pass_through(upstream).await);
    }
    let mut response = if call.stream {
        stream(app, upstream, ctx, !call.wants_usage_chunk)
    } else {
        whole(app, upstream, ctx).await?
    };
    // The client's limit was lowered to fit the budget (or set, where it named none): say so.
    let forwarded = response_limit(&call.body, api);
    if forwarded != call.max_output
        && let Some(v) = forwarded.and_then(|n| HeaderValue::from_str(&n.to_string()).ok())
    {
        response.headers_mut().insert(MAX_TOKENS, v);
    }
    Ok(response)
}

/// The output limit that was forwarded.
fn response_limit(body: &Map<String, Value>, api: LlmProvider) -> Option<u64> {
    match api {
        LlmProvider::Anthropic => body.get("max_tokens").and_then(Value::as_u64),
        LlmProvider::OpenAi => {
            body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(Value::as_u64)
        }
    }
}

fn upstream_path(api: LlmProvider) -> &'static str {
    match api {
        LlmProvider::Anthropic => "/v1/messages",
        LlmProvider::OpenAi => "/v1/chat/completions",
    }
}

/// A reqwest error without the URL (it would show the upstream's address).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connection refused or reset"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    kind.to_owned()
}

fn budget_exhausted(committed: u64, limit: u64, reset_at: time::OffsetDateTime) -> Response {
    let reset = shared::time::format(reset_at);
    let e = ApiError::new(
        StatusCode::PAYMENT_REQUIRED,
        "budget_exhausted",
        format!("this user's monthly budget of {limit} tokens is used ({committed} committed); it resets at {reset}"),
    )
    .with_detail("reset_at", reset.clone())
    .with_detail("tokens_limit", limit);
    let mut response = e.into_response();
    response.headers_mut().insert(REMAINING, HeaderValue::from_static("0"));
    if let Ok(v) = HeaderValue::from_str(&reset) {
        response.headers_mut().insert(RESET, v);
    }
    response
}

/// The upstream's error as it sent it (status, body, `retry-after` and rate-limit headers), so SDKs react
/// as they would to the API itself.
async fn pass_through(upstream: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        let n = name.as_str();
        let keep =
            ["content-type", "retry-after", "request-id", "x-request-id"].contains(&n) || n.contains("ratelimit");
        if keep {
            headers.insert(name.clone(), value.clone());
        }
    }
    let body = upstream.bytes().await.unwrap_or_default();
    (status, headers, body).into_response()
}

/// Everything needed to settle one call once its usage is known.
struct Settle {
    meter: MeterStore,
    who: Subject,
    reservation: Option<Reservation>,
    api: LlmProvider,
    price: &'static ModelPrice,
    stream: bool,
    /// The plan's Stripe meter event, when it is usage-billed: the entry is reported as its tokens.
    report_event: Option<String>,
}

impl Settle {
    async fn release(&self) {
        let Some(r) = &self.reservation else { return };
        if let Err(e) = self.meter.release(self.who.tenant(), self.who.user(), r).await {
            tracing::error!(error = ?e, reservation = r.id, tokens = r.tokens, "could not release a reservation");
        }
    }

    /// Settles to `usage`; the remaining budget after it.
    async fn settle(&self, usage: TokenUsage, complete: bool) -> Option<u64> {
        shared::metrics::count("AiTokensMetered", self.who.tenant().as_str(), usage.total());
        let entry = LedgerEntry {
            id: self.reservation.as_ref().map_or_else(String::new, |r| r.id.clone()),
            provider: self.api,
            model: self.price.model.to_owned(),
            usage,
            cost_micros: usage.cost_micros(self.price),
            stream: self.stream,
            complete,
            created_at: shared::time::now_rfc3339(),
            report_as: self
                .report_event
                .as_ref()
                .map(|name| ReportAs { event_name: name.clone(), value: usage.total().to_string() }),
        };
        let Some(r) = &self.reservation else {
            // Failing open: the store was down; the usage goes to the logs for reconciliation.
            tracing::error!(entry = ?entry, "unmetered call (the budget store was unreachable)");
            return None;
        };
        if let Err(e) = self.meter.settle(self.who.tenant(), self.who.user(), r, &entry).await {
            tracing::error!(error = ?e, entry = ?entry, "could not settle a call; its usage is in this log line");
        }
        let committed = (r.committed as i64 + usage.total() as i64 - r.tokens as i64).max(0) as u64;
        Some(r.limit.saturating_sub(committed))
    }
}

fn budget_headers(headers: &mut HeaderMap, r: Option<&Reservation>, remaining: Option<u64>) {
    let Some(r) = r else {
        headers.insert(METERING, HeaderValue::from_static("unavailable"));
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&remaining.unwrap_or_else(|| r.remaining()).to_string()) {
        headers.insert(REMAINING, v);
    }
    if let Ok(v) = HeaderValue::from_str(&shared::time::format(r.period.reset_at())) {
        headers.insert(RESET, v);
    }
    if r.over_threshold() {
        headers.insert(WARNING, HeaderValue::from_static("80% of this month's tokens are used"));
    }
}

/// A whole JSON answer: read, settle, answer.
async fn whole(app: &AppState, upstream: reqwest::Response, ctx: Settle) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let content_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = match tokio::time::timeout(app.tuning.stream_idle, upstream.bytes()).await {
        Ok(Ok(b)) => b,
        _ => {
            app.breaker.failure(ctx.who.tenant(), ctx.api, Instant::now());
            ctx.release().await;
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_failed",
                format!("{} broke off its answer; nothing was counted", ctx.api.display_name()),
            ));
        }
    };
    let usage = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| usage::from_body(ctx.api, &v));
    let remaining = ctx.settle(usage.unwrap_or_default(), usage.is_some()).await;
    let mut response = (status, bytes).into_response();
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    budget_headers(response.headers_mut(), ctx.reservation.as_ref(), remaining);
    Ok(response)
}

/// A server-sent event stream: a task reads the upstream and forwards each complete event as it arrives.
/// It reads to the upstream's end even when the client has gone (the upstream bills the whole answer),
/// settles, and only then ends the client's body, so in Lambda the invocation lasts until the usage is in.
/// A stream the upstream broke off ends the client's body with an error rather than a clean end.
fn stream(app: &AppState, upstream: reqwest::Response, ctx: Settle, strip_usage_chunk: bool) -> Response {
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let content_type =
        upstream.headers().get(header::CONTENT_TYPE).cloned().unwrap_or(HeaderValue::from_static("text/event-stream"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    budget_headers(&mut headers, ctx.reservation.as_ref(), None);
    let (idle, breaker) = (app.tuning.stream_idle, app.breaker.clone());
    tokio::spawn(async move {
        let mut meter = SseMeter::new(ctx.api, strip_usage_chunk);
        let mut chunks = upstream.bytes_stream();
        let (mut client_gone, mut broke) = (false, false);
        loop {
            match tokio::time::timeout(idle, chunks.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let out = meter.push(&chunk);
                    if !out.is_empty() && !client_gone && tx.send(Ok(Bytes::from(out))).await.is_err() {
                        client_gone = true;
                        tracing::info!("the client left mid-stream; reading the upstream to its end");
                    }
                }
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    broke = true;
                    break;
                }
            }
        }
        let rest = meter.finish();
        if !rest.is_empty() && !client_gone {
            let _ = tx.send(Ok(Bytes::from(rest))).await;
        }
        if broke {
            breaker.failure(ctx.who.tenant(), ctx.api, Instant::now());
        }
        ctx.settle(meter.usage, meter.complete).await;
        if broke || !meter.complete {
            let _ = tx.send(Err(std::io::Error::other("the upstream stream broke off"))).await;
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    (status, headers, Body::from_stream(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anthropic_call_needs_a_known_model_and_max_tokens() {
        let api = LlmProvider::Anthropic;
        let code = |body: &str| parse_call(api, body.as_bytes()).err().map(|e| e.code.to_string());
        assert_eq!(code("{nope"), Some("invalid_json".into()));
        assert_eq!(code("[1]"), Some("invalid_json".into()));
        assert_eq!(code(r#"{"max_tokens": 5}"#), Some("model_required".into()));
        assert_eq!(code(r#"{"model": "claude-9", "max_tokens": 5}"#), Some("unknown_model".into()));
        assert_eq!(code(r#"{"model": "gpt-4o", "max_tokens": 5}"#), Some("unknown_model".into()));
        assert_eq!(code(r#"{"model": "claude-haiku-4-5", "messages": []}"#), Some("max_tokens_required".into()));
        assert_eq!(code(r#"{"model": "claude-haiku-4-5", "max_tokens": 0}"#), Some("invalid_max_tokens".into()));
        assert_eq!(code(r#"{"model": "claude-haiku-4-5-20251001", "max_tokens": 5}"#), None);
    }

    #[test]
    fn the_forwarded_body_carries_the_allowed_limit_and_asks_openai_for_usage() {
        let raw = br#"{"model": "gpt-4o-mini", "stream": true, "messages": []}"#;
        let mut call = parse_call(LlmProvider::OpenAi, raw).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(call.max_output, None);
        let sent: Value = serde_json::from_slice(&call.upstream_body(Some(4096))).unwrap_or_default();
        assert_eq!(sent["max_completion_tokens"], 4096);
        assert_eq!(sent["stream_options"]["include_usage"], true);
        let raw = br#"{"model": "claude-haiku-4-5", "max_tokens": 1000, "messages": []}"#;
        let mut call = parse_call(LlmProvider::Anthropic, raw).unwrap_or_else(|e| panic!("{e}"));
        let sent: Value = serde_json::from_slice(&call.upstream_body(Some(300))).unwrap_or_default();
        assert_eq!(sent["max_tokens"], 300);
        assert!(sent.get("stream_options").is_none());
    }
}
