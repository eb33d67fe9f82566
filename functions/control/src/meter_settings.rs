//! A tenant's AI metering settings: plans (`/v1/settings/plans/{plan}`), which plan users without one get and
//! whether calls fail open when the meter's store is down (`/v1/settings/metering`), and the tenant's own
//! Anthropic and OpenAI keys (`/v1/settings/llm/{provider}`, sealed in the vault, never shown again).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::http::{Json, TenantScope};
use shared::meter::{LlmProvider, MeterSettings, Plan, PlanName, PlanStore, llm_key_context, prices};

use crate::AppState;

async fn store(app: &AppState, scope: &TenantScope) -> Result<PlanStore, ApiError> {
    Ok(app.stores.tenant(&scope.tenant_id).await?.plan_store())
}

fn plan_name(raw: &str) -> Result<PlanName, ApiError> {
    PlanName::parse(raw).map_err(|m| ApiError::bad_request("invalid_plan_name", m))
}

fn plan_json(name: &PlanName, plan: &Plan) -> serde_json::Value {
    let mut v = json!(plan);
    v["name"] = json!(name);
    v
}

pub async fn list_plans(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let plans = store(&app, &scope).await?.list_plans(&scope.tenant_id).await.map_err(|e| e.into_api("plan"))?;
    let data: Vec<_> = plans.iter().map(|(n, p)| plan_json(n, p)).collect();
    Ok(axum::Json(json!({"data": data, "next_cursor": null})).into_response())
}

pub async fn get_plan(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = PlanName::parse(&raw).map_err(|_| ApiError::not_found("plan"))?;
    let plan = store(&app, &scope)
        .await?
        .get_plan(&scope.tenant_id, &name)
        .await
        .map_err(|e| e.into_api("plan"))?
        .ok_or_else(|| ApiError::not_found("plan"))?;
    Ok(axum::Json(plan_json(&name, &plan)).into_response())
}

/// Creates or replaces a plan; users on it get the new limits on their next call.
pub async fn put_plan(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
    Json(plan): Json<Plan>,
) -> Result<Response, ApiError> {
    let name = plan_name(&raw)?;
    plan.check().map_err(|m| ApiError::bad_request("invalid_plan", m))?;
    store(&app, &scope).await?.put_plan(&scope.tenant_id, &name, &plan).await.map_err(|e| e.into_api("plan"))?;
    Ok(axum::Json(plan_json(&name, &plan)).into_response())
}

/// Deletes a plan, unless it is the default (users without a plan would be left with none).
pub async fn delete_plan(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let name = PlanName::parse(&raw).map_err(|_| ApiError::not_found("plan"))?;
    let plans = store(&app, &scope).await?;
    let settings = plans.settings(&scope.tenant_id).await.map_err(|e| e.into_api("settings"))?;
    if settings.default_plan.as_ref() == Some(&name) {
        return Err(ApiError::conflict(
            "plan_in_use",
            format!("`{name}` is the default plan; name another in PUT /v1/settings/metering first"),
        ));
    }
    plans.delete_plan(&scope.tenant_id, &name).await.map_err(|e| e.into_api("plan"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn get_metering(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let settings = store(&app, &scope).await?.settings(&scope.tenant_id).await.map_err(|e| e.into_api("settings"))?;
    Ok(axum::Json(settings).into_response())
}

pub async fn put_metering(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(settings): Json<MeterSettings>,
) -> Result<Response, ApiError> {
    let plans = store(&app, &scope).await?;
    if let Some(name) = &settings.default_plan
        && plans.get_plan(&scope.tenant_id, name).await.map_err(|e| e.into_api("plan"))?.is_none()
    {
        return Err(ApiError::bad_request(
            "unknown_plan",
            format!("there is no plan `{name}`; create it with PUT /v1/settings/plans/{name} first"),
        ));
    }
    plans.put_settings(&scope.tenant_id, &settings).await.map_err(|e| e.into_api("settings"))?;
    Ok(axum::Json(settings).into_response())
}

fn provider(raw: &str) -> Result<LlmProvider, ApiError> {
    LlmProvider::parse(raw).ok_or_else(|| ApiError::not_found("LLM provider (use anthropic or openai)"))
}

/// Which keys are set (with their last four characters), and the models each API may be called with.
pub async fn list_llm(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let plans = store(&app, &scope).await?;
    let mut data = Vec::new();
    for api in LlmProvider::ALL {
        let key = plans.llm_key(&scope.tenant_id, api).await.map_err(|e| e.into_api("LLM key"))?;
        data.push(json!({
            "provider": api, "configured": key.is_some(),
            "key_hint": key.as_ref().map(|k| &k.1), "updated_at": key.as_ref().map(|k| &k.2),
            "models": prices::models(api),
        }));
    }
    Ok(axum::Json(json!({"data": data, "next_cursor": null})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutLlmKey {
    api_key: String,
}

/// Seals and stores the tenant's key; the proxy sends it upstream in place of the caller's Tenantry credential.
pub async fn put_llm(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<PutLlmKey>,
) -> Result<Response, ApiError> {
    let api = provider(&raw)?;
    let key = body.api_key.trim();
    if key.len() < 8 || key.len() > 512 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_api_key",
            format!("api_key must be your {} API key as issued (8 to 512 characters, no spaces)", api.display_name()),
        ));
    }
    let sealed = app
        .vault
        .seal(&llm_key_context(&scope.tenant_id, api), key.as_bytes())
        .await
        .map_err(|e| ApiError::internal(e.into()))?;
    let hint = format!("…{}", &key[key.len() - 4..]);
    let updated_at = store(&app, &scope)
        .await?
        .put_llm_key(&scope.tenant_id, api, &sealed, &hint)
        .await
        .map_err(|e| e.into_api("LLM key"))?;
    Ok(axum::Json(json!({"provider": api, "configured": true, "key_hint": hint, "updated_at": updated_at}))
        .into_response())
}

pub async fn delete_llm(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let api = provider(&raw)?;
    store(&app, &scope).await?.delete_llm_key(&scope.tenant_id, api).await.map_err(|e| e.into_api("LLM key"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
