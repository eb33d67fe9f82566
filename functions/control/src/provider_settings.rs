//! A tenant's provider apps (`/v1/settings/providers/{provider}`: client id, sealed client secret, scopes)
//! and the hosted Connect page's settings (`/v1/settings/connect`: return-URL allow-list, logo).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shared::ApiError;
use shared::connect::{ConnectSettings, ProviderApp};
use shared::http::{Json, TenantScope, list_body};
use shared::providers::ProviderId;

use crate::AppState;

fn provider(raw: &str) -> Result<ProviderId, ApiError> {
    ProviderId::parse(raw).map_err(|m| ApiError::new(axum::http::StatusCode::NOT_FOUND, "unknown_provider", m))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutApp {
    client_id: String,
    client_secret: String,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// Withings only: where its (unsigned) notifications may come from.
    #[serde(default)]
    webhook_allowed_ips: Option<Vec<String>>,
}

/// What a tenant sees of its app: everything but the secret, plus the redirect URI to register.
#[derive(Serialize)]
struct AppView {
    #[serde(flatten)]
    app: ProviderApp,
    redirect_uri: String,
}

fn view(app: ProviderApp, state: &AppState) -> AppView {
    let redirect_uri = format!("{}/oauth/{}/callback", state.public_url, app.provider);
    AppView { app, redirect_uri }
}

fn bounded(field: &str, v: &str, max: usize) -> Result<String, ApiError> {
    let v = v.trim();
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_body", format!("{field} must be 1 to {max} printable characters")));
    }
    Ok(v.to_owned())
}

pub async fn put_app(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<PutApp>,
) -> Result<Response, ApiError> {
    let provider = provider(&raw)?;
    let client_id = bounded("client_id", &body.client_id, 512)?;
    let secret = bounded("client_secret", &body.client_secret, 2048)?;
    let scopes = match body.scopes {
        Some(scopes) => scopes.iter().map(|s| bounded("each scope", s, 256)).collect::<Result<Vec<_>, _>>()?,
        None => provider.provider().default_scopes().iter().map(|s| (*s).to_owned()).collect(),
    };
    let allowed_ips = match body.webhook_allowed_ips {
        Some(_) if provider != ProviderId::Withings => {
            return Err(ApiError::bad_request("invalid_body", "webhook_allowed_ips applies to withings only"));
        }
        Some(ips) if ips.len() > 50 || ips.iter().any(|ip| ip.parse::<std::net::IpAddr>().is_err()) => {
            return Err(ApiError::bad_request("invalid_body", "webhook_allowed_ips must be at most 50 IP addresses"));
        }
        other => other,
    };
    let sealed = app
        .vault
        .seal(&shared::connect::app_secret_context(&scope.tenant_id, provider), secret.as_bytes())
        .await
        .map_err(|e| ApiError::internal(e.into()))?;
    let stored = ProviderApp {
        provider,
        client_id,
        client_secret_sealed: sealed,
        scopes,
        updated_at: shared::time::now_rfc3339(),
    };
    let store = app.stores.tenant(&scope.tenant_id).await?.connect_store();
    store.put_app(&scope.tenant_id, &stored).await.map_err(|e| e.into_api("provider app"))?;
    tracing::info!(tenant_id = %scope.tenant_id, provider = %provider, "provider app configured");
    // Webhooks: the sync-scheduler's next tick makes the subscriptions asked for here, so a provider that
    // is down never fails the save.
    let subs = app.stores.tenant(&scope.tenant_id).await?.subscription_store();
    if let Some(ips) = &allowed_ips {
        subs.set_allowed_ips(&scope.tenant_id, provider, ips).await.map_err(|e| e.into_api("provider app"))?;
    }
    if let Err(e) = subs.request(&scope.tenant_id, provider, &stored.client_id).await {
        tracing::warn!(tenant_id = %scope.tenant_id, provider = %provider, error = %e, "webhook subscription not asked for; saving the app again asks again");
    }
    Ok(axum::Json(view(stored, &app)).into_response())
}

pub async fn get_app(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let provider = provider(&raw)?;
    let store = app.stores.tenant(&scope.tenant_id).await?.connect_store();
    let found = store.app(&scope.tenant_id, provider).await.map_err(|e| e.into_api("provider app"))?;
    let found = found.ok_or_else(|| ApiError::not_found("provider app for this provider"))?;
    Ok(axum::Json(view(found, &app)).into_response())
}

pub async fn list_apps(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.stores.tenant(&scope.tenant_id).await?.connect_store();
    let apps = store.apps(&scope.tenant_id).await.map_err(|e| e.into_api("provider app"))?;
    let views: Vec<AppView> = apps.into_iter().map(|a| view(a, &app)).collect();
    Ok(axum::Json(list_body(views, None)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutConnect {
    allowed_return_urls: Vec<String>,
    #[serde(default)]
    logo_url: Option<String>,
}

/// An absolute http(s) URL without credentials or fragment.
fn absolute_url(field: &str, raw: &str, https_only: bool) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request("invalid_url", format!("{field}: `{raw}` must be an absolute https:// URL"));
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    let scheme_ok = url.scheme() == "https" || (!https_only && url.scheme() == "http");
    if !scheme_ok || url.host_str().is_none() || !url.username().is_empty() || url.fragment().is_some() {
        return Err(bad());
    }
    Ok(raw.to_owned())
}

pub async fn put_connect(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(body): Json<PutConnect>,
) -> Result<Response, ApiError> {
    if body.allowed_return_urls.len() > 20 {
        return Err(ApiError::bad_request("invalid_body", "at most 20 allowed_return_urls"));
    }
    let settings = ConnectSettings {
        allowed_return_urls: body
            .allowed_return_urls
            .iter()
            .map(|u| absolute_url("allowed_return_urls", u, false))
            .collect::<Result<_, _>>()?,
        logo_url: body.logo_url.as_deref().map(|u| absolute_url("logo_url", u, true)).transpose()?,
    };
    let store = app.stores.tenant(&scope.tenant_id).await?.connect_store();
    store.put_settings(&scope.tenant_id, &settings).await.map_err(|e| e.into_api("connect settings"))?;
    tracing::info!(tenant_id = %scope.tenant_id, "connect settings changed");
    Ok(axum::Json(settings).into_response())
}

pub async fn get_connect(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.stores.tenant(&scope.tenant_id).await?.connect_store();
    let settings = store.settings(&scope.tenant_id).await.map_err(|e| e.into_api("connect settings"))?;
    Ok(axum::Json(settings).into_response())
}
