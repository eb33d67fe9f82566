//! The meter: a drop-in proxy for the Anthropic and OpenAI APIs that holds each end user to their plan's
//! token budget and rate, and the usage routes (a user's month, the tenant's month, a user's plan, the
//! tenant's own meter events). It runs behind a Function URL with response streaming, so it authenticates
//! each request itself with the authorizer's code.

pub mod breaker;
pub mod proxy;
pub mod usage;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authorizer::Authorizer;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::ApiError;
use shared::http::{Json, Query, Routes, Subject, TenantScope};
use shared::ids::{TenantId, UserId};
use shared::meter::store::EventOutcome;
use shared::meter::{LlmProvider, NewEvent, Period, PlanName, PlanStore, ReportAs, Usage, report};
use shared::tenancy::Stores;
use shared::vault::Vault;

use crate::breaker::Breaker;

/// Timeouts and breaker settings (`METER_*` variables; tests shorten them).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Until the upstream's response headers.
    pub first_byte: Duration,
    /// Between two chunks of an answer.
    pub stream_idle: Duration,
    pub breaker_threshold: u32,
    pub breaker_cooldown: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            first_byte: Duration::from_secs(120),
            stream_idle: Duration::from_secs(120),
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

impl Tuning {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let d = Self::default();
        let ms = |k: &str, default: Duration| {
            get(k).and_then(|v| v.parse::<u64>().ok()).map_or(default, Duration::from_millis)
        };
        Self {
            first_byte: ms("METER_FIRST_BYTE_TIMEOUT_MS", d.first_byte),
            stream_idle: ms("METER_STREAM_IDLE_TIMEOUT_MS", d.stream_idle),
            breaker_threshold: get("METER_BREAKER_THRESHOLD")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.breaker_threshold),
            breaker_cooldown: ms("METER_BREAKER_COOLDOWN_MS", d.breaker_cooldown),
        }
    }
}

/// Opened LLM keys by tenant and API, with the `updated_at` they were stored with: a changed key is opened
/// again, an unchanged one costs no KMS call.
type KeyCache = Mutex<HashMap<(TenantId, LlmProvider), (String, SecretString)>>;

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub meter_table: String,
    pub vault: Arc<Vault>,
    pub events: shared::events::Events,
    pub http: reqwest::Client,
    pub upstream: Arc<HashMap<LlmProvider, String>>,
    pub breaker: Arc<Breaker>,
    pub tuning: Tuning,
    pub authorizer: Arc<Authorizer>,
    pub keys: Arc<KeyCache>,
}

impl AppState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stores: Stores,
        meter_table: String,
        vault: Arc<Vault>,
        events: shared::events::Events,
        http: reqwest::Client,
        upstream: HashMap<LlmProvider, String>,
        tuning: Tuning,
        authorizer: Arc<Authorizer>,
    ) -> Self {
        Self {
            stores,
            meter_table,
            vault,
            events,
            http,
            upstream: Arc::new(upstream),
            breaker: Arc::new(Breaker::new(tuning.breaker_threshold, tuning.breaker_cooldown)),
            tuning,
            authorizer,
            keys: Arc::default(),
        }
    }

    pub fn upstream_base(&self, api: LlmProvider) -> String {
        self.upstream.get(&api).map_or(api.real_base_url(), String::as_str).trim_end_matches('/').to_owned()
    }

    /// The tenant's key for `api`, opened; 409 when the tenant has not set one.
    pub async fn llm_key(
        &self,
        plans: &PlanStore,
        tenant: &TenantId,
        api: LlmProvider,
    ) -> Result<SecretString, ApiError> {
        let stored = plans.llm_key(tenant, api).await.map_err(|e| e.into_api("LLM key"))?;
        let Some((sealed, _, updated_at)) = stored else {
            return Err(ApiError::conflict(
                "llm_key_missing",
                format!("the tenant has no {} key: set it with PUT /v1/settings/llm/{api}", api.display_name()),
            ));
        };
        let cache_key = (tenant.clone(), api);
        if let Some((at, key)) = self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(&cache_key)
            && *at == updated_at
        {
            return Ok(key.clone());
        }
        let ctx = shared::meter::llm_key_context(tenant, api);
        let key = self.vault.open_string(&ctx, &sealed).await.map_err(|e| ApiError::internal(e.into()))?;
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).insert(cache_key, (updated_at, key.clone()));
        Ok(key)
    }
}

/// Every route this function serves.
pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/v1/users/{user_id}/ai/anthropic/v1/messages", proxy::anthropic)
        .post("/v1/me/ai/anthropic/v1/messages", proxy::anthropic)
        .post("/v1/users/{user_id}/ai/openai/v1/chat/completions", proxy::openai)
        .post("/v1/me/ai/openai/v1/chat/completions", proxy::openai)
        .get("/v1/users/{user_id}/usage", user_usage)
        .get("/v1/me/usage", user_usage)
        .get("/v1/usage", tenant_usage)
        .post("/v1/usage/events", record_event)
        .get("/v1/users/{user_id}/plan", get_user_plan)
        .put("/v1/users/{user_id}/plan", put_user_plan)
}

/// The router, authenticating every request in-process (there is no API Gateway authorizer in front of a
/// Function URL).
pub fn router(state: AppState) -> axum::Router {
    let authorizer = state.authorizer.clone();
    let trail = (state.stores.clone(), audited as shared::audit::AuditTable);
    routes()
        .into_router(state)
        .route_layer(axum::middleware::from_fn_with_state(trail, shared::audit::trail))
        .layer(axum::middleware::from_fn_with_state(authorizer, authenticate))
}

/// A user's plan changing is audited; calls and usage are not (they are the ledger).
fn audited(method: &axum::http::Method, route: &str) -> Option<shared::audit::Audited> {
    use shared::audit::{Audited, Target};
    (method == axum::http::Method::PUT && route == "/v1/users/{user_id}/plan")
        .then(|| Audited::new("user.plan_changed", Target::None).about("user_id").with(&["plan"]))
}

async fn authenticate(State(authorizer): State<Arc<Authorizer>>, mut req: Request, next: Next) -> Response {
    let principal = authorizer.authorize(req.headers()).await;
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodQuery {
    period: Option<String>,
}

fn period(q: &PeriodQuery) -> Result<Period, ApiError> {
    Period::parse_or_current(q.period.as_deref()).map_err(|e| ApiError::bad_request("invalid_query", e))
}

fn usd(micros: u64) -> f64 {
    (micros as f64 / 1e6 * 1e6).round() / 1e6
}

fn usage_json(u: &Usage) -> serde_json::Map<String, Value> {
    let by_model: serde_json::Map<String, Value> = u
        .by_model
        .iter()
        .map(|(m, v)| {
            (
                m.clone(),
                json!({
                    "input_tokens": v.input_tokens, "output_tokens": v.output_tokens, "cache_tokens": v.cache_tokens,
                    "tokens_used": v.input_tokens + v.output_tokens + v.cache_tokens,
                    "requests": v.requests, "cost_usd": usd(v.cost_micros),
                }),
            )
        })
        .collect();
    let body = json!({
        "input_tokens": u.input_tokens, "output_tokens": u.output_tokens, "cache_tokens": u.cache_tokens,
        "tokens_used": u.tokens_used, "in_flight_tokens": u.in_flight_tokens, "requests": u.requests,
        "cost_usd": usd(u.cost_micros), "by_model": by_model, "events": u.events,
    });
    body.as_object().cloned().unwrap_or_default()
}

/// `GET /v1/users/{id}/usage?period=YYYY-MM` (and `/v1/me/usage`).
async fn user_usage(
    subject: Subject,
    State(app): State<AppState>,
    Query(q): Query<PeriodQuery>,
) -> Result<Response, ApiError> {
    let period = period(&q)?;
    let tenancy = app.stores.tenant(subject.tenant()).await?;
    let effective =
        tenancy.plan_store().effective_plan(subject.tenant(), subject.user()).await.map_err(|e| e.into_api("user"))?;
    let (plan_name, plan) = effective.map_or((None, None), |(n, p)| (Some(n), p));
    let usage = tenancy
        .meter_store(&app.meter_table)
        .usage(subject.tenant(), subject.user(), period)
        .await
        .map_err(|e| e.into_api("usage"))?;
    let mut body = usage_json(&usage);
    let limit = plan.as_ref().map(|p| p.monthly_tokens);
    body.insert("period".into(), json!(period.to_string()));
    body.insert("user_id".into(), json!(subject.user()));
    body.insert("plan".into(), json!(plan_name));
    body.insert("tokens_limit".into(), json!(limit));
    body.insert("remaining".into(), json!(limit.map(|l| l.saturating_sub(usage.tokens_used + usage.in_flight_tokens))));
    body.insert("reset_at".into(), json!(shared::time::format(period.reset_at())));
    Ok(axum::Json(Value::Object(body)).into_response())
}

/// `GET /v1/usage?period=YYYY-MM`: the tenant's month over all its users.
async fn tenant_usage(
    scope: TenantScope,
    State(app): State<AppState>,
    Query(q): Query<PeriodQuery>,
) -> Result<Response, ApiError> {
    let period = period(&q)?;
    let (usage, users) = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .meter_store(&app.meter_table)
        .tenant_usage(&scope.tenant_id, period)
        .await
        .map_err(|e| e.into_api("usage"))?;
    let mut body = usage_json(&usage);
    body.insert("period".into(), json!(period.to_string()));
    body.insert("users".into(), json!(users));
    Ok(axum::Json(Value::Object(body)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPlanBody {
    /// `null` returns the user to the tenant's default plan.
    plan: Option<PlanName>,
}

fn user_id(raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|_| ApiError::not_found("user"))
}

async fn get_user_plan(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let user = user_id(&raw)?;
    let plans = app.stores.tenant(&scope.tenant_id).await?.plan_store();
    let (_, own) = plans.user_plan(&scope.tenant_id, &user).await.map_err(|e| e.into_api("user"))?;
    let default = plans.settings(&scope.tenant_id).await.map_err(|e| e.into_api("settings"))?.default_plan;
    let effective = own.clone().or(default);
    Ok(axum::Json(json!({"user_id": user, "plan": own, "effective_plan": effective})).into_response())
}

/// `PUT /v1/users/{id}/plan {"plan"}`: takes effect on the user's next call (the budget is the plan's).
async fn put_user_plan(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<UserPlanBody>,
) -> Result<Response, ApiError> {
    let user = user_id(&raw)?;
    let plans = app.stores.tenant(&scope.tenant_id).await?.plan_store();
    if let Some(name) = &body.plan
        && plans.get_plan(&scope.tenant_id, name).await.map_err(|e| e.into_api("plan"))?.is_none()
    {
        return Err(ApiError::bad_request(
            "unknown_plan",
            format!("there is no plan `{name}`; create it with PUT /v1/settings/plans/{name}"),
        ));
    }
    plans.set_user_plan(&scope.tenant_id, &user, body.plan.as_ref()).await.map_err(|e| e.into_api("user"))?;
    Ok(axum::Json(json!({"user_id": user, "plan": body.plan})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MeterEvent {
    user_id: String,
    event_name: String,
    value: f64,
    idempotency_key: String,
    /// RFC 3339; now when absent. At most 35 days back and 5 minutes ahead (Stripe's meter window).
    timestamp: Option<String>,
}

/// `POST /v1/usage/events`: the tenant's own metered quantity for a user, counted once per idempotency key.
async fn record_event(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(e): Json<MeterEvent>,
) -> Result<Response, ApiError> {
    let name_ok = !e.event_name.is_empty()
        && e.event_name.len() <= 100
        && e.event_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if !name_ok {
        return Err(ApiError::bad_request(
            "invalid_event_name",
            "event_name must be 1 to 100 of letters, digits, `_`, `-` and `.`",
        ));
    }
    if !e.value.is_finite() || e.value < 0.0 {
        return Err(ApiError::bad_request("invalid_value", "value must be a finite number, zero or more"));
    }
    if e.idempotency_key.is_empty() || e.idempotency_key.len() > 200 {
        return Err(ApiError::bad_request("invalid_idempotency_key", "idempotency_key must be 1 to 200 characters"));
    }
    let now = shared::time::now();
    let at = match &e.timestamp {
        None => now,
        Some(t) => shared::time::parse(t).ok_or_else(|| {
            ApiError::bad_request("invalid_timestamp", "timestamp must be RFC 3339, like 2026-11-29T10:00:00Z")
        })?,
    };
    if at > now + time::Duration::minutes(5) || at < now - time::Duration::days(35) {
        return Err(ApiError::bad_request(
            "invalid_timestamp",
            "timestamp must be at most 35 days back and 5 minutes ahead",
        ));
    }
    let user = UserId::parse(&e.user_id).map_err(|_| ApiError::not_found("user"))?;
    let tenancy = app.stores.tenant(&scope.tenant_id).await?;
    tenancy.get_user(&scope.tenant_id, &user).await.map_err(|e| e.into_api("user"))?;
    // A user on a usage-billed plan has their events reported to Stripe under the event's own name.
    let plan = tenancy.plan_store().effective_plan(&scope.tenant_id, &user).await.map_err(|e| e.into_api("user"))?;
    let report = plan
        .and_then(|(_, p)| p?.event_name)
        .map(|_| ReportAs { event_name: e.event_name.clone(), value: report::value_text(e.value) });
    let outcome = tenancy
        .meter_store(&app.meter_table)
        .record_event(
            &scope.tenant_id,
            &user,
            &NewEvent { name: &e.event_name, value: e.value, key: &e.idempotency_key, at, report: report.as_ref() },
        )
        .await
        .map_err(|e| e.into_api("event"))?;
    let body = |id: &str, duplicate: bool| {
        json!({"id": id, "user_id": user, "event_name": e.event_name, "value": e.value,
               "timestamp": shared::time::format(at), "duplicate": duplicate})
    };
    match outcome {
        EventOutcome::Recorded { id } => Ok(shared::http::created(body(&id, false))),
        EventOutcome::Duplicate { id } => Ok(axum::Json(body(&id, true)).into_response()),
        EventOutcome::KeyReused => Err(ApiError::conflict(
            "idempotency_key_reused",
            "this idempotency_key was used for a different event; use a new key for a new event",
        )),
    }
}
