//! A tenant's webhook endpoint (`/v1/settings/webhooks`: URL, subscribed event types, signing secret sealed
//! in the vault) and its deliveries (`/v1/webhook-deliveries`: list, replay).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use shared::ApiError;
use shared::events::{Event, EventType, Notice};
use shared::http::{Json, PageParams, Query, TenantScope, list_body};
use shared::ids::TenantId;
use shared::notify::{Delivery, Endpoint, NotifyStore, secret_context};
use shared::vault::ExposeSecret;

use crate::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutWebhooks {
    url: String,
    events: Vec<String>,
}

/// `https://` to a named host; `http://` (or https) on loopback only where the local stack allows it, since
/// in Lambda loopback is the runtime API.
fn check_url(raw: &str, allow_loopback: bool) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request("invalid_url", format!("url: `{raw}` must be an absolute https:// URL of your endpoint"))
    };
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(bad()),
    };
    let scheme_ok = match url.scheme() {
        "https" => !loopback || allow_loopback,
        "http" => loopback && allow_loopback,
        _ => false,
    };
    if !scheme_ok || raw.len() > 2048 || !url.username().is_empty() || url.fragment().is_some() {
        return Err(bad());
    }
    Ok(raw.to_owned())
}

/// The event types, each known, without repeats; at least one.
fn check_events(raw: &[String]) -> Result<Vec<EventType>, ApiError> {
    if raw.is_empty() {
        let known: Vec<&str> = EventType::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("events must name at least one of: {}", known.join(", ")),
        ));
    }
    let mut events = Vec::new();
    for name in raw {
        let t = EventType::parse(name).map_err(|m| ApiError::bad_request("unknown_event_type", m))?;
        if !events.contains(&t) {
            events.push(t);
        }
    }
    Ok(events)
}

fn no_endpoint() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no webhook endpoint is configured; set one with PUT /v1/settings/webhooks",
    )
}

async fn store_of(app: &AppState, tenant: &TenantId) -> Result<NotifyStore, ApiError> {
    Ok(app.stores.tenant(tenant).await?.notify_store())
}

async fn seal(app: &AppState, tenant: &TenantId, secret: &str) -> Result<String, ApiError> {
    app.vault
        .seal(&secret_context(tenant), secret.as_bytes())
        .await
        .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("sealing a webhook secret")))
}

/// Sets the endpoint. A new endpoint gets a new signing secret; changing one keeps its secret (rotate it
/// with `rotate-secret`). The secret is in the answer either way.
pub async fn put_webhooks(
    scope: TenantScope,
    State(app): State<AppState>,
    Json(body): Json<PutWebhooks>,
) -> Result<Response, ApiError> {
    let tenant = &scope.tenant_id;
    let url = check_url(body.url.trim(), app.allow_loopback_jwks)?;
    let events = check_events(&body.events)?;
    let store = store_of(&app, tenant).await?;
    let now = shared::time::now_rfc3339();
    let existing = store.endpoint(tenant).await.map_err(|e| e.into_api("webhook endpoint"))?;
    let (secret, sealed, created_at) = match existing {
        Some(e) => {
            let opened = app
                .vault
                .open_string(&secret_context(tenant), &e.secret_sealed)
                .await
                .map_err(|e| ApiError::internal(anyhow::Error::new(e).context("opening the webhook secret")))?;
            (opened.expose_secret().to_owned(), e.secret_sealed, e.created_at)
        }
        None => {
            let secret = shared::notify::mint_secret();
            let sealed = seal(&app, tenant, &secret).await?;
            (secret, sealed, now.clone())
        }
    };
    let endpoint = Endpoint { url, events, secret_sealed: sealed, created_at, updated_at: now };
    store.put_endpoint(tenant, &endpoint).await.map_err(|e| e.into_api("webhook endpoint"))?;
    tracing::info!(tenant_id = %tenant, events = endpoint.events.len(), "webhook endpoint set");
    let mut view = serde_json::to_value(&endpoint).map_err(anyhow::Error::from)?;
    view["secret"] = json!(secret);
    Ok(axum::Json(view).into_response())
}

pub async fn get_webhooks(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = store_of(&app, &scope.tenant_id).await?;
    let endpoint = store.endpoint(&scope.tenant_id).await.map_err(|e| e.into_api("webhook endpoint"))?;
    Ok(axum::Json(endpoint.ok_or_else(no_endpoint)?).into_response())
}

pub async fn delete_webhooks(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = store_of(&app, &scope.tenant_id).await?;
    store.delete_endpoint(&scope.tenant_id).await.map_err(|e| match e {
        shared::tenancy::StoreError::NotFound => no_endpoint(),
        e => e.into_api("webhook endpoint"),
    })?;
    tracing::info!(tenant_id = %scope.tenant_id, "webhook endpoint removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A new signing secret; the old one stops signing at once.
pub async fn rotate_secret(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let tenant = &scope.tenant_id;
    let store = store_of(&app, tenant).await?;
    let mut endpoint =
        store.endpoint(tenant).await.map_err(|e| e.into_api("webhook endpoint"))?.ok_or_else(no_endpoint)?;
    let secret = shared::notify::mint_secret();
    endpoint.secret_sealed = seal(&app, tenant, &secret).await?;
    endpoint.updated_at = shared::time::now_rfc3339();
    store.put_endpoint(tenant, &endpoint).await.map_err(|e| e.into_api("webhook endpoint"))?;
    tracing::info!(tenant_id = %tenant, "webhook secret rotated");
    Ok(axum::Json(json!({"secret": secret, "updated_at": endpoint.updated_at})).into_response())
}

/// Sends a `ping` event to the endpoint, through the same queue and signing as every event.
pub async fn test_webhooks(scope: TenantScope, State(app): State<AppState>) -> Result<Response, ApiError> {
    let store = store_of(&app, &scope.tenant_id).await?;
    store.endpoint(&scope.tenant_id).await.map_err(|e| e.into_api("webhook endpoint"))?.ok_or_else(no_endpoint)?;
    let event = Event::ping(&scope.tenant_id);
    app.events
        .emit(&event)
        .await
        .map_err(|e| ApiError::unavailable(format!("the event queue could not be reached; retry shortly ({e:#})")))?;
    let delivery_id = Delivery::id_for_event(&event.id);
    Ok((StatusCode::ACCEPTED, axum::Json(json!({"event_id": event.id, "delivery_id": delivery_id}))).into_response())
}

pub async fn list_deliveries(
    scope: TenantScope,
    State(app): State<AppState>,
    Query(q): Query<PageParams>,
) -> Result<Response, ApiError> {
    let store = store_of(&app, &scope.tenant_id).await?;
    let (list, next) =
        store.deliveries(&scope.tenant_id, &q.page()?).await.map_err(|e| e.into_api("webhook delivery"))?;
    Ok(axum::Json(list_body(list, next)).into_response())
}

/// Sends a delivery's event again, byte for byte, as a new delivery with its own attempts and window.
pub async fn replay_delivery(
    scope: TenantScope,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = &scope.tenant_id;
    if !Delivery::valid_id(&id) {
        return Err(ApiError::not_found("webhook delivery"));
    }
    let store = store_of(&app, tenant).await?;
    let old = store.delivery(tenant, &id).await.map_err(|e| e.into_api("webhook delivery"))?;
    let old = old.ok_or_else(|| ApiError::not_found("webhook delivery"))?;
    if store.endpoint(tenant).await.map_err(|e| e.into_api("webhook endpoint"))?.is_none() {
        return Err(ApiError::conflict("no_webhook_endpoint", "no webhook endpoint is configured; set one first"));
    }
    let mut body: serde_json::Value = serde_json::from_str(&old.body).map_err(anyhow::Error::from)?;
    body["tenant_id"] = json!(tenant);
    let event: Event = serde_json::from_value(body).map_err(anyhow::Error::from)?;
    let replay = Delivery::new(Delivery::new_id(), &old.event_id, event.kind, old.body.clone());
    store.create_delivery(tenant, &replay).await.map_err(|e| e.into_api("webhook delivery"))?;
    let notice = Notice { event, delivery_id: Some(replay.id.clone()), not_before: None };
    if let Err(e) = app.events.send(&notice, 0).await {
        // Nothing was queued: the new delivery must not sit pending for a message that does not exist.
        let _ = store.delete_delivery(tenant, &replay.id).await;
        return Err(ApiError::unavailable(format!("the event queue could not be reached; retry shortly ({e:#})")));
    }
    tracing::info!(tenant_id = %tenant, delivery_id = %replay.id, replay_of = %id, "webhook delivery replayed");
    let mut view = serde_json::to_value(&replay).map_err(anyhow::Error::from)?;
    view["replay_of"] = json!(id);
    Ok((StatusCode::ACCEPTED, axum::Json(view)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_must_be_https_and_loopback_only_where_the_local_stack_allows_it() {
        assert!(check_url("https://hooks.example.com/tenantry", false).is_ok());
        assert!(check_url("http://hooks.example.com/tenantry", true).is_err());
        assert!(check_url("http://127.0.0.1:8080/hook", false).is_err());
        assert!(check_url("https://localhost/hook", false).is_err());
        assert!(check_url("http://127.0.0.1:8080/hook", true).is_ok());
        assert!(check_url("http://[::1]:8080/hook", true).is_ok());
        assert!(check_url("https://user:pw@hooks.example.com/", false).is_err());
        assert!(check_url("ftp://hooks.example.com/", true).is_err());
        assert!(check_url("not a url", true).is_err());
    }

    #[test]
    fn event_lists_must_be_known_types_and_not_empty() {
        let events = check_events(&["data.updated".into(), "data.updated".into(), "connection.created".into()]);
        assert_eq!(events.ok(), Some(vec![EventType::DataUpdated, EventType::ConnectionCreated]));
        let e = check_events(&["data.deleted".into()]).err();
        assert!(e.is_some_and(|e| e.code == "unknown_event_type" && e.message.contains("backfill.completed")));
        assert!(check_events(&[]).is_err());
    }
}
