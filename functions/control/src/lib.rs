//! The control plane: the operator's tenant registry (`/admin/v1`), a tenant's API keys and settings
//! (`/v1/api-keys`, `/v1/settings`), and the OpenAPI document.

pub mod admin;
pub mod audit_trail;
pub mod dead_letters;
pub mod meter_settings;
pub mod provider_settings;
pub mod stripe_settings;
pub mod webhook_settings;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::http::{Json, Operator, PageParams, Query, Routes, TenantScope, created, list_body};
use shared::ids::{KeyId, TenantId};
use shared::priority::SourcePriority;
use shared::tenancy::{ApiKeyView, AuthSettings, Status, Stores, TenantName};

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    /// Accept `http://` JWKS URLs and webhook endpoints on loopback. Only the local stack sets it: in Lambda,
    /// loopback is the runtime API, which a tenant must never make the authorizer (or the notifier) call.
    pub allow_loopback_jwks: bool,
    /// Seals provider apps' client secrets.
    pub vault: Arc<shared::vault::Vault>,
    /// The API's public base URL, for the redirect URIs tenants register at providers.
    pub public_url: String,
    /// The notify queue: webhook test pings and replays.
    pub events: shared::events::Events,
    /// The stack's dead-letter queues, for the operator.
    pub dead_letters: dead_letters::DeadLetters,
    /// The AI meter's table (`METER_TABLE`): the month's tokens in the admin view.
    pub meter_table: String,
}

/// Every route this function serves.
pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/admin/v1/tenants", create_tenant)
        .get("/admin/v1/tenants", list_tenants)
        .get("/admin/v1/tenants/{tenant_id}", get_tenant)
        .post("/admin/v1/tenants/{tenant_id}/disable", disable_tenant)
        .post("/admin/v1/tenants/{tenant_id}/enable", enable_tenant)
        .post("/v1/api-keys", create_key)
        .get("/v1/api-keys", list_keys)
        .delete("/v1/api-keys/{key_id}", revoke_key)
        .get("/v1/settings/auth", get_auth)
        .put("/v1/settings/auth", put_auth)
        .delete("/v1/settings/auth", delete_auth)
        .get("/v1/settings/source-priority", get_source_priority)
        .put("/v1/settings/source-priority", put_source_priority)
        .get("/v1/settings/providers", provider_settings::list_apps)
        .get("/v1/settings/providers/{provider}", provider_settings::get_app)
        .put("/v1/settings/providers/{provider}", provider_settings::put_app)
        .get("/v1/settings/connect", provider_settings::get_connect)
        .put("/v1/settings/connect", provider_settings::put_connect)
        .get("/v1/settings/webhooks", webhook_settings::get_webhooks)
        .put("/v1/settings/webhooks", webhook_settings::put_webhooks)
        .delete("/v1/settings/webhooks", webhook_settings::delete_webhooks)
        .post("/v1/settings/webhooks/rotate-secret", webhook_settings::rotate_secret)
        .post("/v1/settings/webhooks/test", webhook_settings::test_webhooks)
        .get("/v1/webhook-deliveries", webhook_settings::list_deliveries)
        .post("/v1/webhook-deliveries/{delivery_id}/replay", webhook_settings::replay_delivery)
        .get("/v1/settings/plans", meter_settings::list_plans)
        .get("/v1/settings/plans/{plan}", meter_settings::get_plan)
        .put("/v1/settings/plans/{plan}", meter_settings::put_plan)
        .delete("/v1/settings/plans/{plan}", meter_settings::delete_plan)
        .get("/v1/settings/metering", meter_settings::get_metering)
        .put("/v1/settings/metering", meter_settings::put_metering)
        .get("/v1/settings/llm", meter_settings::list_llm)
        .put("/v1/settings/llm/{provider}", meter_settings::put_llm)
        .delete("/v1/settings/llm/{provider}", meter_settings::delete_llm)
        .get("/v1/settings/stripe", stripe_settings::get_stripe)
        .put("/v1/settings/stripe", stripe_settings::put_stripe)
        .delete("/v1/settings/stripe", stripe_settings::delete_stripe)
        .get("/admin/v1/dead-letters", dead_letters::list)
        .get("/admin/v1/dead-letters/{queue}", dead_letters::peek)
        .post("/admin/v1/dead-letters/{queue}/redrive", dead_letters::redrive)
        .get("/v1/admin/stats", admin::stats)
        .get("/v1/audit", admin::audit)
        .get("/openapi.json", openapi)
}

pub fn router(state: AppState) -> axum::Router {
    let trail = (state.stores.clone(), audit_trail::table as shared::audit::AuditTable);
    routes().into_router(state).route_layer(axum::middleware::from_fn_with_state(trail, shared::audit::trail))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: TenantName,
}

async fn create_tenant(
    _: Operator,
    State(app): State<AppState>,
    Json(body): Json<CreateTenant>,
) -> Result<Response, ApiError> {
    let (tenant, key) = app.stores.own().create_tenant(body.name).await.map_err(|e| e.into_api("tenant"))?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    let mut view = serde_json::to_value(&tenant).map_err(anyhow::Error::from)?;
    view["api_key"] = json!(key.full.expose_secret());
    view["api_key_id"] = json!(key.key_id);
    Ok(created(view))
}

async fn list_tenants(
    _: Operator,
    State(app): State<AppState>,
    Query(q): Query<PageParams>,
) -> Result<Response, ApiError> {
    let (tenants, next) = app.stores.own().list_tenants(&q.page()?).await.map_err(|e| e.into_api("tenant"))?;
    Ok(axum::Json(list_body(tenants, next)).into_response())
}

/// An id that cannot be ours is simply absent.
fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::not_found("tenant"))
}

async fn get_tenant(_: Operator, State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let tenant = app.stores.own().get_tenant(&tenant_id(&id)?).await.map_err(|e| e.into_api("tenant"))?;
    Ok(axum::Json(tenant).into_response())
}

async fn set_status(app: AppState, id: &str, status: Status) -> Result<Response, ApiError> {
    let tenant = app.stores.own().set_tenant_status(&tenant_id(id)?, status).await.map_err(|e| e.into_api("tenant"))?;
    tracing::info!(tenant_id = %tenant.id, status = status.as_str(), "tenant status changed");
    Ok(axum::Json(tenant).into_response())
}

async fn disable_tenant(
    _: Operator,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_status(app, &id, Status::Disabled).await
}

async fn enable_tenant(_: Operator, State(app): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    set_status(app, &id, Status::Active).await
}

async fn create_key(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let (stored, key) = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .create_key(&scope.tenant_id)
        .await
        .map_err(|e| e.into_api("API key"))?;
    tracing::info!(tenant_id = %scope.tenant_id, key_id = %stored.id, by_key = %scope.key_id, "API key created");
    let mut view = serde_json::to_value(ApiKeyView::from(stored)).map_err(anyhow::Error::from)?;
    view["api_key"] = json!(key.full.expose_secret());
    Ok(created(view))
}

async fn list_keys(
    scope: TenantScope,
    State(app): State<AppState>,
    Query(q): Query<PageParams>,
) -> Result<Response, ApiError> {
    let (keys, next) = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .list_keys(&scope.tenant_id, &q.page()?)
        .await
        .map_err(|e| e.into_api("API key"))?;
    let views: Vec<ApiKeyView> = keys.into_iter().map(ApiKeyView::from).collect();
    Ok(axum::Json(list_body(views, next)).into_response())
}

async fn revoke_key(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = KeyId::parse(&id).map_err(|_| ApiError::not_found("API key"))?;
    let key =
        app.stores.tenant(&scope.tenant_id).await?.revoke_key(&scope.tenant_id, &id).await.map_err(|e| match e {
            shared::tenancy::StoreError::Conflict(m) => ApiError::conflict("last_active_key", m),
            e => e.into_api("API key"),
        })?;
    tracing::info!(tenant_id = %scope.tenant_id, key_id = %id, "API key revoked");
    Ok(axum::Json(ApiKeyView::from(key)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutAuth {
    issuer: String,
    jwks_url: String,
    audience: String,
}

/// HTTPS to a named host; `http://` on loopback only where the local stack allows it.
fn check_jwks_url(raw: &str, allow_loopback: bool) -> Result<(), ApiError> {
    let bad = || ApiError::bad_request("invalid_jwks_url", "jwks_url must be an https:// URL of your login provider");
    let url = reqwest::Url::parse(raw).map_err(|_| bad())?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" if !loopback => Ok(()),
        "http" | "https" if loopback && allow_loopback => Ok(()),
        _ => Err(bad()),
    }
}

async fn put_auth(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(body): Json<PutAuth>,
) -> Result<Response, ApiError> {
    let text = |field: &str, v: &str| {
        if v.trim().is_empty() || v.len() > 2048 {
            Err(ApiError::bad_request("invalid_body", format!("{field} must be 1 to 2048 characters")))
        } else {
            Ok(v.trim().to_owned())
        }
    };
    let settings = AuthSettings {
        issuer: text("issuer", &body.issuer)?,
        jwks_url: text("jwks_url", &body.jwks_url)?,
        audience: text("audience", &body.audience)?,
    };
    check_jwks_url(&settings.jwks_url, app.allow_loopback_jwks)?;
    app.stores.own().check_issuer_free(&scope.tenant_id, &settings).await.map_err(|e| match e {
        shared::tenancy::StoreError::Conflict(m) => ApiError::conflict("issuer_taken", m),
        e => e.into_api("login settings"),
    })?;
    let store = app.stores.tenant(&scope.tenant_id).await?;
    store.put_auth(&scope.tenant_id, &settings).await.map_err(|e| e.into_api("login settings"))?;
    tracing::info!(tenant_id = %scope.tenant_id, "login settings changed");
    Ok(axum::Json(settings).into_response())
}

async fn get_auth(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let settings = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .get_auth(&scope.tenant_id)
        .await
        .map_err(|e| e.into_api("login settings"))?;
    Ok(axum::Json(settings).into_response())
}

async fn get_source_priority(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.stores.tenant(&scope.tenant_id).await?.priority_store();
    let priority = store.get(&scope.tenant_id).await.map_err(|e| e.into_api("source priority"))?;
    Ok(axum::Json(priority).into_response())
}

/// Replaces the tenant's source priority. Unknown metrics and malformed source names are refused by the
/// body's types; a source listed twice in one order is refused here.
async fn put_source_priority(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(body): Json<SourcePriority>,
) -> Result<Response, ApiError> {
    body.check().map_err(|e| ApiError::bad_request("invalid_body", e))?;
    let store = app.stores.tenant(&scope.tenant_id).await?.priority_store();
    store.put(&scope.tenant_id, &body).await.map_err(|e| e.into_api("source priority"))?;
    tracing::info!(tenant_id = %scope.tenant_id, "source priority changed");
    Ok(axum::Json(body).into_response())
}

async fn delete_auth(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    app.stores
        .tenant(&scope.tenant_id)
        .await?
        .delete_auth(&scope.tenant_id)
        .await
        .map_err(|e| e.into_api("login settings"))?;
    tracing::info!(tenant_id = %scope.tenant_id, "login settings removed");
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

async fn openapi() -> Response {
    axum::Json(shared::openapi::document()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_urls_must_be_https_and_loopback_only_where_the_local_stack_allows_it() {
        assert!(check_jwks_url("https://login.example.com/.well-known/jwks.json", false).is_ok());
        assert!(check_jwks_url("http://127.0.0.1:9001/2018-06-01/runtime/invocation/next", false).is_err());
        assert!(check_jwks_url("http://127.0.0.1:8080/jwks", true).is_ok());
        assert!(check_jwks_url("http://login.example.com/jwks", true).is_err());
        assert!(check_jwks_url("file:///etc/passwd", true).is_err());
        assert!(check_jwks_url("not a url", true).is_err());
    }
}
