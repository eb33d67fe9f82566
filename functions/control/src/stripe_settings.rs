//! A tenant's own Stripe account (`/v1/settings/stripe`): the secret key billing calls Stripe with and the
//! webhook signing secret its events are checked with, both sealed in the vault and never shown again.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::billing::{GRACE_PERIOD, secret_key_context, webhook_secret_context};
use shared::http::{Json, TenantScope};

use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutStripe {
    secret_key: String,
    webhook_secret: String,
}

fn hint(secret: &str) -> String {
    format!("…{}", &secret[secret.len().saturating_sub(4)..])
}

fn well_formed(secret: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| secret.starts_with(p))
        && secret.len() <= 255
        && secret.len() >= 12
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn settings_json(app: &AppState, scope: &TenantScope, hints: Option<(&str, &str, &str)>) -> serde_json::Value {
    json!({
        "configured": hints.is_some(),
        "secret_key_hint": hints.map(|h| h.0),
        "webhook_secret_hint": hints.map(|h| h.1),
        "updated_at": hints.map(|h| h.2),
        "webhook_url": format!("{}/webhooks/stripe/{}", app.public_url, scope.tenant_id),
        "grace_period_days": GRACE_PERIOD.whole_days(),
    })
}

pub async fn get_stripe(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.stores.tenant(&scope.tenant_id).await?.billing_store();
    let s = store.stripe(&scope.tenant_id).await.map_err(|e| e.into_api("Stripe settings"))?;
    let hints = s.as_ref().map(|s| (s.secret_key_hint.as_str(), s.webhook_secret_hint.as_str(), s.updated_at.as_str()));
    Ok(axum::Json(settings_json(&app, &scope, hints)).into_response())
}

/// Seals and stores the tenant's Stripe secret key and webhook signing secret.
pub async fn put_stripe(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(body): Json<PutStripe>,
) -> Result<Response, ApiError> {
    let key = body.secret_key.trim();
    let whsec = body.webhook_secret.trim();
    if !well_formed(key, &["sk_test_", "sk_live_", "rk_test_", "rk_live_"]) {
        return Err(ApiError::bad_request(
            "invalid_secret_key",
            "secret_key must be your Stripe secret (or restricted) key as issued: sk_test_..., sk_live_..., rk_...",
        ));
    }
    if !well_formed(whsec, &["whsec_"]) {
        return Err(ApiError::bad_request(
            "invalid_webhook_secret",
            "webhook_secret must be the signing secret of your Stripe webhook endpoint: whsec_...",
        ));
    }
    let sealed_key = app
        .vault
        .seal(&secret_key_context(&scope.tenant_id), key.as_bytes())
        .await
        .map_err(|e| ApiError::internal(e.into()))?;
    let sealed_whsec = app
        .vault
        .seal(&webhook_secret_context(&scope.tenant_id), whsec.as_bytes())
        .await
        .map_err(|e| ApiError::internal(e.into()))?;
    let (key_hint, whsec_hint) = (hint(key), hint(whsec));
    let updated_at = app
        .stores
        .tenant(&scope.tenant_id)
        .await?
        .billing_store()
        .put_stripe(&scope.tenant_id, (&sealed_key, &key_hint), (&sealed_whsec, &whsec_hint))
        .await
        .map_err(|e| e.into_api("Stripe settings"))?;
    Ok(axum::Json(settings_json(&app, &scope, Some((&key_hint, &whsec_hint, &updated_at)))).into_response())
}

/// Forgets both secrets: checkouts answer 409 and webhooks are refused until they are set again.
pub async fn delete_stripe(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = app.stores.tenant(&scope.tenant_id).await?.billing_store();
    store.delete_stripe(&scope.tenant_id).await.map_err(|e| e.into_api("Stripe settings"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
