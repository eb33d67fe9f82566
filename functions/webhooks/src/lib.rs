//! Webhooks in, at `/webhooks/{provider}/{tenant_id}`: each tenant's provider app subscribes with its own
//! URL, so the secret to check with is known before the body is read. A verified event becomes a targeted
//! sync job; forged or stale signatures are refused (401) and logged; duplicates are harmless (the sync
//! worker coalesces jobs for a connection already syncing).
//!
//! Answers never depend on whether the tenant exists before the signature is checked: a stranger learns
//! nothing from probing tenant ids.
//!
//! Today: Oura (challenge and `x-oura-signature`) and Strava (`hub.challenge`). WHOOP, Polar, Withings and
//! Garmin arrive with the rest of the sync issue.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use shared::ApiError;
use shared::http::Routes;
use shared::ids::TenantId;
use shared::providers::ProviderId;
use shared::sync::{SyncJob, SyncQueue, can_sync};
use shared::tenancy::Stores;
use shared::vault::Vault;

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub vault: Arc<Vault>,
    pub sync: SyncQueue,
}

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .get("/webhooks/{provider}/{tenant_id}", verify_subscription)
        .post("/webhooks/{provider}/{tenant_id}", event)
}

pub fn router(state: AppState) -> axum::Router {
    routes().into_router(state)
}

/// How old (or how far ahead) a signed timestamp may be.
pub const TOLERANCE_SECS: i64 = 300;

/// Oura's signature: UPPERCASE hex HMAC-SHA256(key = client secret, message = timestamp + raw body).
pub fn oura_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02X}")).collect()
}

/// The verification token we give a provider when subscribing: derived from the app's secret and the
/// tenant, so it needs no storage and differs per tenant.
pub fn verification_token(secret: &[u8], tenant: &TenantId) -> String {
    oura_signature(secret, "tenantry-webhook-verification:", tenant.as_str().as_bytes())[..32].to_lowercase()
}

fn same(a: &str, b: &str) -> bool {
    shared::apikey::constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn refused(message: &str) -> ApiError {
    ApiError::unauthorized("invalid_signature", message.to_owned())
}

/// The tenant's app secret at the provider; `None` for an unknown tenant or an unconfigured app, which
/// callers must answer exactly like a bad signature.
async fn app_secret(app: &AppState, tenant: &str, p: ProviderId) -> Result<Option<(TenantId, Vec<u8>)>, ApiError> {
    let Ok(tenant) = TenantId::parse(tenant) else { return Ok(None) };
    let store = app.stores.tenant(&tenant).await?.connect_store();
    let opened = store.open_app(&app.vault, &tenant, p).await.map_err(ApiError::internal)?;
    Ok(opened.map(|a| (tenant, a.client_secret.expose_secret().as_bytes().to_vec())))
}

fn provider(raw: &str) -> Result<ProviderId, ApiError> {
    match ProviderId::parse(raw) {
        Ok(p @ (ProviderId::Oura | ProviderId::Strava)) => Ok(p),
        _ => Err(ApiError::not_found("webhook receiver for this provider")),
    }
}

#[derive(Deserialize)]
struct Challenge {
    verification_token: Option<String>,
    challenge: Option<String>,
    #[serde(rename = "hub.mode")]
    hub_mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    hub_verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    hub_challenge: Option<String>,
}

/// The provider checks that we own the URL before it sends events.
async fn verify_subscription(
    State(app): State<AppState>,
    Path((raw, tenant)): Path<(String, String)>,
    Query(q): Query<Challenge>,
) -> Result<Response, ApiError> {
    let p = provider(&raw)?;
    let (token, challenge, key) = match p {
        ProviderId::Strava if q.hub_mode.as_deref() == Some("subscribe") => {
            (q.hub_verify_token, q.hub_challenge, "hub.challenge")
        }
        _ => (q.verification_token, q.challenge, "challenge"),
    };
    let (Some(token), Some(challenge)) = (token, challenge) else {
        return Err(ApiError::bad_request("invalid_query", "a verification request carries a token and a challenge"));
    };
    let expected = app_secret(&app, &tenant, p).await?.map(|(t, secret)| verification_token(&secret, &t));
    if !expected.is_some_and(|e| same(&e, &token)) {
        tracing::warn!(provider = %p, "webhook verification with a wrong token refused");
        return Err(refused("the verification token does not match this endpoint"));
    }
    Ok(axum::Json(json!({ key: challenge })).into_response())
}

#[derive(Deserialize)]
struct OuraEvent {
    user_id: String,
    data_type: Option<String>,
}

/// An event: verified first, then turned into a targeted sync job.
async fn event(
    State(app): State<AppState>,
    Path((raw, tenant)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = provider(&raw)?;
    let (tenant, provider_user) = match p {
        ProviderId::Oura => {
            let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let (Some(ts), Some(signature)) = (header("x-oura-timestamp"), header("x-oura-signature")) else {
                return Err(refused("x-oura-timestamp and x-oura-signature are required"));
            };
            let fresh =
                ts.parse::<i64>().is_ok_and(|t| (shared::time::now().unix_timestamp() - t).abs() <= TOLERANCE_SECS);
            let secret = app_secret(&app, &tenant, p).await?;
            let verified = secret.filter(|(_, s)| same(&oura_signature(s, &ts, &body), &signature.to_uppercase()));
            let Some((tenant, _)) = verified.filter(|_| fresh) else {
                tracing::warn!(provider = %p, fresh, "webhook with a forged or stale signature refused");
                return Err(refused("the signature does not match, or its timestamp is more than 5 minutes off"));
            };
            let event: OuraEvent = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request("invalid_body", format!("not an Oura event: {e}")))?;
            tracing::info!(tenant_id = %tenant, provider = %p, data_type = ?event.data_type, "webhook verified");
            (tenant, event.user_id)
        }
        // Strava events are unsigned; the owner is matched against the tenant's connections only.
        _ => {
            let Ok(tenant) = TenantId::parse(&tenant) else { return Ok(StatusCode::OK.into_response()) };
            let event: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request("invalid_body", format!("not a Strava event: {e}")))?;
            (tenant, event["owner_id"].to_string())
        }
    };
    let store = app.stores.tenant(&tenant).await?.connect_store();
    let Some(user) =
        store.user_by_provider_id(&tenant, p, &provider_user).await.map_err(|e| e.into_api("connection"))?
    else {
        // Answer 200 anyway: the provider would otherwise retry, then drop our subscription.
        tracing::info!(tenant_id = %tenant, provider = %p, "webhook for a user we do not know; ignored");
        return Ok(StatusCode::OK.into_response());
    };
    if can_sync(p) {
        let job = SyncJob::new(tenant.clone(), user.clone(), p, 2);
        app.sync.send(&job).await.map_err(|e| ApiError::unavailable(format!("could not queue the sync: {e:#}")))?;
        tracing::info!(tenant_id = %tenant, user_id = %user, provider = %p, job_id = %job.job_id, "webhook queued a sync");
    }
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oura_signature_matches_the_documented_vector() {
        let body = br#"{"event_type":"create","data_type":"sleep","object_id":"abc","event_time":"2025-01-01T00:00:00+00:00","user_id":"u1"}"#;
        assert_eq!(
            oura_signature(b"secret", "1735689600", body),
            "C5943433863AC36C16A07BED20687C91DAB477AA3CFE1D68B21B939461B4928B"
        );
    }
}
