//! Webhooks in, at `/webhooks/{provider}/{tenant_id}`: each tenant's provider app subscribes with its own
//! URL, so the secret to check with is known before the body is read. A verified event becomes a targeted
//! sync job; forged or stale signatures are refused (401) and logged; duplicates are harmless (a delivery
//! marker per body, and the sync worker coalesces jobs for a connection already syncing).
//!
//! How each provider is checked (see `verify`):
//! - Oura: `x-oura-signature` = hex HMAC-SHA256(client secret, `x-oura-timestamp` + body), 5 minutes tolerance.
//! - WHOOP: `X-WHOOP-Signature` = base64 HMAC-SHA256(client secret, `X-WHOOP-Signature-Timestamp` + body),
//!   the timestamp in milliseconds, 5 minutes tolerance.
//! - Polar: `Polar-Webhook-Signature` = hex HMAC-SHA256(the webhook's `signature_secret_key`, body); the
//!   creation `PING` comes before we hold the key and is acknowledged without effect.
//! - Strava (unsigned): only events of the subscription we created, for athletes we know.
//! - Withings (unsigned): only users we know, and from the tenant's sender allow-list when it has one.
//! - Garmin (unsigned push and ping): only users we know.
//!
//! Signed providers answer an unknown tenant exactly like a bad signature: a stranger learns nothing from
//! probing tenant ids. Events for users we do not know are acknowledged (200), so the provider keeps the
//! subscription, and logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use shared::ApiError;
use shared::http::Routes;
use shared::ids::TenantId;
use shared::providers::ProviderId;
use shared::subscriptions::{SubscriptionStore, signing_key_context};
use shared::sync::{SyncJob, SyncQueue, can_sync};
use shared::tenancy::Stores;
use shared::vault::Vault;

pub use shared::subscriptions::verification_token;

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

/// How many days a targeted sync covers at most, however old the event's data.
pub const MAX_EVENT_DAYS: u32 = 30;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return Vec::new() };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Oura's signature: UPPERCASE hex HMAC-SHA256(key = client secret, message = timestamp + raw body).
pub fn oura_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    hmac_sha256(secret, &[timestamp.as_bytes(), body]).iter().map(|b| format!("{b:02X}")).collect()
}

/// WHOOP's signature: base64 HMAC-SHA256(key = client secret, message = timestamp + raw body).
pub fn whoop_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(hmac_sha256(secret, &[timestamp.as_bytes(), body]))
}

/// Polar's signature: lowercase hex HMAC-SHA256(key = the webhook's signature_secret_key, message = raw body).
pub fn polar_signature(key: &[u8], body: &[u8]) -> String {
    hmac_sha256(key, &[body]).iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &str, b: &str) -> bool {
    shared::apikey::constant_time_eq(a.as_bytes(), b.as_bytes())
}

fn refused(p: ProviderId, why: &str, message: &str) -> ApiError {
    tracing::warn!(provider = %p, reason = why, "webhook refused");
    ApiError::unauthorized("invalid_signature", message.to_owned())
}

fn bad_body(p: ProviderId, e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_body", format!("not a {} webhook: {e}", p.provider().display_name()))
}

/// Whether a timestamp (seconds, or milliseconds when it is that large) is within the tolerance of now.
fn fresh(raw: &str) -> bool {
    let Ok(t) = raw.trim().parse::<i64>() else { return false };
    let secs = if t > 100_000_000_000 { t / 1000 } else { t };
    (shared::time::now().unix_timestamp() - secs).abs() <= TOLERANCE_SECS
}

/// Days back from today that a sync must cover for data starting at `unix` seconds (at least 2, since a
/// late event may concern yesterday in the user's time zone).
fn days_since(unix: Option<i64>) -> u32 {
    let Some(t) = unix else { return 2 };
    let age = (shared::time::now().unix_timestamp() - t).max(0) / 86_400;
    u32::try_from(age + 2).unwrap_or(MAX_EVENT_DAYS).min(MAX_EVENT_DAYS)
}

fn rfc3339_unix(raw: Option<&str>) -> Option<i64> {
    raw.and_then(|r| time::OffsetDateTime::parse(r, &time::format_description::well_known::Rfc3339).ok())
        .map(|t| t.unix_timestamp())
}

fn date_unix(raw: Option<&str>) -> Option<i64> {
    let d = time::Date::parse(raw?, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp())
}

/// A JSON number or string id, as a string (`10129` and `"10129"` alike).
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn header<'a>(headers: &'a HeaderMap, k: &str) -> Option<&'a str> {
    headers.get(k).and_then(|v| v.to_str().ok())
}

/// The tenant's app secret at the provider; `None` for an unknown tenant or an unconfigured app, which
/// callers must answer exactly like a bad signature.
async fn app_secret(app: &AppState, tenant: &str, p: ProviderId) -> Result<Option<(TenantId, Vec<u8>)>, ApiError> {
    let Ok(tenant) = TenantId::parse(tenant) else { return Ok(None) };
    let store = app.stores.tenant(&tenant).await?.connect_store();
    let opened = store.open_app(&app.vault, &tenant, p).await.map_err(ApiError::internal)?;
    Ok(opened.map(|a| (tenant, a.client_secret.expose_secret().as_bytes().to_vec())))
}

async fn subscriptions(app: &AppState, tenant: &TenantId) -> Result<SubscriptionStore, ApiError> {
    Ok(app.stores.tenant(tenant).await?.subscription_store())
}

fn provider(raw: &str) -> Result<ProviderId, ApiError> {
    match ProviderId::parse(raw) {
        Ok(ProviderId::GoogleHealth) | Err(_) => Err(ApiError::not_found("webhook receiver for this provider")),
        Ok(p) => Ok(p),
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

/// The provider checks that we own the URL before it sends events: Oura and Strava echo a challenge for
/// our verification token; Withings only checks that the URL answers (HEAD or GET).
async fn verify_subscription(
    State(app): State<AppState>,
    Path((raw, tenant)): Path<(String, String)>,
    Query(q): Query<Challenge>,
) -> Result<Response, ApiError> {
    let p = provider(&raw)?;
    let (token, challenge, key) = match p {
        ProviderId::Withings => return Ok(StatusCode::OK.into_response()),
        ProviderId::Strava if q.hub_mode.as_deref() == Some("subscribe") => {
            (q.hub_verify_token, q.hub_challenge, "hub.challenge")
        }
        ProviderId::Oura | ProviderId::Strava => (q.verification_token, q.challenge, "challenge"),
        _ => return Err(ApiError::bad_request("invalid_query", format!("{p} sends no verification request"))),
    };
    let (Some(token), Some(challenge)) = (token, challenge) else {
        return Err(ApiError::bad_request("invalid_query", "a verification request carries a token and a challenge"));
    };
    let expected = app_secret(&app, &tenant, p).await?.map(|(t, secret)| verification_token(&secret, &t));
    if !expected.is_some_and(|e| same(&e, &token)) {
        return Err(refused(p, "wrong verification token", "the verification token does not match this endpoint"));
    }
    Ok(axum::Json(json!({ key: challenge })).into_response())
}

/// A verified webhook: which tenant, which of its users (by the provider's id) with how many days to sync,
/// and the subscription it came through (for `last_event_at`).
struct Verified {
    tenant: TenantId,
    users: BTreeMap<String, u32>,
    scope: Option<String>,
}

enum Outcome {
    Verified(Verified),
    /// Acknowledged without effect (Polar's PING, an unsigned event for a tenant id that cannot exist).
    Ack(&'static str),
}

/// An event: verified first, then turned into targeted sync jobs.
async fn event(
    State(app): State<AppState>,
    Path((raw, tenant)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, ApiError> {
    let p = provider(&raw)?;
    let verified = match verify(&app, p, &tenant, &parts, &body).await? {
        Outcome::Verified(v) => v,
        Outcome::Ack(why) => {
            tracing::info!(provider = %p, reason = why, "webhook acknowledged without effect");
            return Ok(StatusCode::OK.into_response());
        }
    };
    let tenant = verified.tenant;
    let subs = subscriptions(&app, &tenant).await?;
    if !subs.first_delivery(&tenant, p, &body).await.map_err(|e| e.into_api("webhook delivery"))? {
        tracing::info!(tenant_id = %tenant, provider = %p, "webhook delivered again; already handled");
        return Ok(StatusCode::OK.into_response());
    }
    if let Err(e) = enqueue(&app, &subs, &tenant, p, &verified.users, verified.scope.as_deref()).await {
        // Let the provider's retry through: it must not be taken for a duplicate.
        let _ = subs.forget_delivery(&tenant, p, &body).await;
        return Err(e);
    }
    Ok(StatusCode::OK.into_response())
}

async fn enqueue(
    app: &AppState,
    subs: &SubscriptionStore,
    tenant: &TenantId,
    p: ProviderId,
    users: &BTreeMap<String, u32>,
    scope: Option<&str>,
) -> Result<(), ApiError> {
    let store = app.stores.tenant(tenant).await?.connect_store();
    if let Some(scope) = scope {
        subs.record_event(tenant, p, None, Some(scope)).await.map_err(|e| e.into_api("webhook subscription"))?;
    }
    for (provider_user, days) in users {
        let found = store.user_by_provider_id(tenant, p, provider_user).await.map_err(|e| e.into_api("connection"))?;
        let Some(user) = found else {
            // Answered 200 anyway: the provider would otherwise retry, then drop our subscription.
            tracing::info!(tenant_id = %tenant, provider = %p, "webhook for a user we do not know; ignored");
            continue;
        };
        subs.record_event(tenant, p, Some(&user), None).await.map_err(|e| e.into_api("connection"))?;
        if can_sync(p) {
            let job = SyncJob::new(tenant.clone(), user.clone(), p, *days);
            app.sync.send(&job).await.map_err(|e| ApiError::unavailable(format!("could not queue the sync: {e:#}")))?;
            tracing::info!(tenant_id = %tenant, user_id = %user, provider = %p, job_id = %job.job_id, days, "webhook queued a sync");
        } else {
            tracing::info!(tenant_id = %tenant, user_id = %user, provider = %p, "webhook verified; this provider does not sync yet");
        }
    }
    Ok(())
}

async fn verify(app: &AppState, p: ProviderId, tenant: &str, parts: &Parts, body: &[u8]) -> Result<Outcome, ApiError> {
    let headers = &parts.headers;
    match p {
        ProviderId::Oura => {
            let (Some(ts), Some(signature)) =
                (header(headers, "x-oura-timestamp"), header(headers, "x-oura-signature"))
            else {
                return Err(refused(p, "missing headers", "x-oura-timestamp and x-oura-signature are required"));
            };
            let tenant =
                signed_by_app(app, p, tenant, ts, |s| same(&oura_signature(s, ts, body), &signature.to_uppercase()))
                    .await?;
            let e: Value = serde_json::from_slice(body).map_err(|e| bad_body(p, e))?;
            let user = e.get("user_id").and_then(id_of).ok_or_else(|| bad_body(p, "user_id is missing"))?;
            let scope = match (e["event_type"].as_str(), e["data_type"].as_str()) {
                (Some(ev), Some(dt)) => Some(format!("{ev}.{dt}")),
                _ => None,
            };
            let days = days_since(rfc3339_unix(e["event_time"].as_str()));
            Ok(Outcome::Verified(Verified { tenant, users: BTreeMap::from([(user, days)]), scope }))
        }
        ProviderId::Whoop => {
            let ts = header(headers, "x-whoop-signature-timestamp");
            let signature = header(headers, "x-whoop-signature");
            let (Some(ts), Some(signature)) = (ts, signature) else {
                return Err(refused(
                    p,
                    "missing headers",
                    "X-WHOOP-Signature and X-WHOOP-Signature-Timestamp are required",
                ));
            };
            let tenant = signed_by_app(app, p, tenant, ts, |s| same(&whoop_signature(s, ts, body), signature)).await?;
            let e: Value = serde_json::from_slice(body).map_err(|e| bad_body(p, e))?;
            let user = e.get("user_id").and_then(id_of).ok_or_else(|| bad_body(p, "user_id is missing"))?;
            Ok(Outcome::Verified(Verified { tenant, users: BTreeMap::from([(user, 2)]), scope: None }))
        }
        ProviderId::Polar => polar(app, tenant, headers, body).await,
        ProviderId::Strava => strava(app, tenant, body).await,
        ProviderId::Withings => withings(app, tenant, parts, body).await,
        _ => garmin(tenant, body),
    }
}

/// Checks a signature made with the tenant's app secret and a timestamp header; unknown tenants, forged
/// signatures and stale timestamps are refused alike.
async fn signed_by_app(
    app: &AppState,
    p: ProviderId,
    tenant: &str,
    ts: &str,
    matches: impl Fn(&[u8]) -> bool,
) -> Result<TenantId, ApiError> {
    let is_fresh = fresh(ts);
    let secret = app_secret(app, tenant, p).await?;
    match secret.filter(|(_, s)| matches(s)) {
        Some((tenant, _)) if is_fresh => Ok(tenant),
        Some(_) => Err(refused(p, "stale timestamp", "the signature's timestamp is more than 5 minutes off")),
        None => Err(refused(p, "forged signature or unknown tenant", "the signature does not match")),
    }
}

async fn polar(app: &AppState, tenant: &str, headers: &HeaderMap, body: &[u8]) -> Result<Outcome, ApiError> {
    let p = ProviderId::Polar;
    let e: Value = serde_json::from_slice(body).map_err(|e| bad_body(p, e))?;
    // Polar pings the URL while creating the webhook, before it has told us the key: nothing to verify,
    // nothing to do.
    if e["event"] == "PING" {
        return Ok(Outcome::Ack("polar ping"));
    }
    let Some(signature) = header(headers, "polar-webhook-signature") else {
        return Err(refused(p, "missing headers", "Polar-Webhook-Signature is required"));
    };
    let Ok(tenant) = TenantId::parse(tenant) else {
        return Err(refused(p, "unknown tenant", "the signature does not match"));
    };
    let sub = subscriptions(app, &tenant).await?.get(&tenant, p, "").await.map_err(|e| e.into_api("subscription"))?;
    let Some(sealed) = sub.and_then(|s| s.key_sealed) else {
        return Err(refused(p, "no webhook key", "the signature does not match"));
    };
    let key =
        app.vault.open(&signing_key_context(&tenant, p), &sealed).await.map_err(|e| ApiError::internal(e.into()))?;
    if !same(&polar_signature(key.expose_secret(), body), &signature.to_lowercase()) {
        return Err(refused(p, "forged signature", "the signature does not match"));
    }
    let user = e.get("user_id").and_then(id_of).ok_or_else(|| bad_body(p, "user_id is missing"))?;
    let days = days_since(rfc3339_unix(e["timestamp"].as_str()));
    Ok(Outcome::Verified(Verified { tenant, users: BTreeMap::from([(user, days)]), scope: Some(String::new()) }))
}

async fn strava(app: &AppState, tenant: &str, body: &[u8]) -> Result<Outcome, ApiError> {
    let p = ProviderId::Strava;
    let e: Value = serde_json::from_slice(body).map_err(|e| bad_body(p, e))?;
    let (Some(owner), Some(subscription)) =
        (e.get("owner_id").and_then(id_of), e.get("subscription_id").and_then(id_of))
    else {
        return Err(bad_body(p, "owner_id and subscription_id are required"));
    };
    let Ok(tenant) = TenantId::parse(tenant) else { return Ok(Outcome::Ack("not a tenant id")) };
    let sub = subscriptions(app, &tenant).await?.get(&tenant, p, "").await.map_err(|e| e.into_api("subscription"))?;
    if sub.and_then(|s| s.id).is_none_or(|id| id != subscription) {
        return Err(refused(p, "not our subscription", "the subscription_id is not one this endpoint created"));
    }
    let days = days_since(e["event_time"].as_i64());
    Ok(Outcome::Verified(Verified { tenant, users: BTreeMap::from([(owner, days)]), scope: Some(String::new()) }))
}

/// The address the request came from, as API Gateway saw it (never a header the sender can set).
fn source_ip(parts: &Parts) -> Option<String> {
    match parts.extensions.get::<lambda_http::request::RequestContext>()? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

async fn withings(app: &AppState, tenant: &str, parts: &Parts, body: &[u8]) -> Result<Outcome, ApiError> {
    let p = ProviderId::Withings;
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let Some(user) = form.get("userid").filter(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_digit())) else {
        return Err(bad_body(p, "a form with a numeric userid (and appli, startdate, enddate) is expected"));
    };
    let Ok(tenant) = TenantId::parse(tenant) else { return Ok(Outcome::Ack("not a tenant id")) };
    let allowed =
        subscriptions(app, &tenant).await?.allowed_ips(&tenant, p).await.map_err(|e| e.into_api("allow-list"))?;
    if !allowed.is_empty() && !source_ip(parts).is_some_and(|ip| allowed.contains(&ip)) {
        return Err(refused(p, "sender not on the allow-list", "this sender may not post Withings notifications here"));
    }
    let days = days_since(form.get("startdate").and_then(|d| d.parse().ok()));
    Ok(Outcome::Verified(Verified { tenant, users: BTreeMap::from([(user.clone(), days)]), scope: None }))
}

/// Garmin push (`{"dailies": [{userId, calendarDate, ...}]}`) and ping (`{"dailies": [{userId,
/// uploadStartTimeInSeconds, uploadEndTimeInSeconds, callbackURL}]}`): each user named becomes one job.
fn garmin(tenant: &str, body: &[u8]) -> Result<Outcome, ApiError> {
    let p = ProviderId::Garmin;
    let e: Value = serde_json::from_slice(body).map_err(|e| bad_body(p, e))?;
    let Some(kinds) = e.as_object() else { return Err(bad_body(p, "an object of summary lists is expected")) };
    let mut users: BTreeMap<String, u32> = BTreeMap::new();
    for (kind, items) in kinds {
        // Deregistrations and permission changes name users but bring no data to fetch.
        if kind == "deregistrations" || kind == "userPermissionsChange" {
            continue;
        }
        let Some(items) = items.as_array() else { return Err(bad_body(p, format!("`{kind}` is not a list"))) };
        for item in items {
            let Some(user) = item.get("userId").and_then(id_of) else {
                return Err(bad_body(p, format!("an item of `{kind}` has no userId")));
            };
            let start = item["uploadStartTimeInSeconds"]
                .as_i64()
                .or_else(|| item["startTimeInSeconds"].as_i64())
                .or_else(|| date_unix(item["calendarDate"].as_str()));
            let days = days_since(start);
            users.entry(user).and_modify(|d| *d = (*d).max(days)).or_insert(days);
        }
    }
    let Ok(tenant) = TenantId::parse(tenant) else { return Ok(Outcome::Ack("not a tenant id")) };
    Ok(Outcome::Verified(Verified { tenant, users, scope: None }))
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

    #[test]
    fn the_whoop_signature_is_base64_of_the_same_mac_over_timestamp_and_body() {
        let body = br#"{"user_id":10129,"id":"x","type":"sleep.updated"}"#;
        let mac = hmac_sha256(b"secret", &[b"1735689600000", body]);
        let sig = whoop_signature(b"secret", "1735689600000", body);
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(&sig).ok(), Some(mac));
        assert_ne!(sig, whoop_signature(b"secret", "1735689600001", body));
    }

    #[test]
    fn timestamps_in_seconds_or_milliseconds_are_fresh_only_near_now() {
        let now = shared::time::now().unix_timestamp();
        assert!(fresh(&now.to_string()));
        assert!(fresh(&(now * 1000).to_string()));
        assert!(!fresh(&(now - 301).to_string()));
        assert!(!fresh(&((now + 400) * 1000).to_string()));
        assert!(!fresh("yesterday"));
    }

    #[test]
    fn an_event_syncs_the_days_since_its_data_began_within_bounds() {
        let now = shared::time::now().unix_timestamp();
        assert_eq!(days_since(None), 2);
        assert_eq!(days_since(Some(now)), 2);
        assert_eq!(days_since(Some(now - 3 * 86_400 - 10)), 5);
        assert_eq!(days_since(Some(now - 400 * 86_400)), MAX_EVENT_DAYS);
    }

    #[test]
    fn a_garmin_ping_names_each_user_once_with_the_widest_range() {
        let now = shared::time::now().unix_timestamp();
        let body = json!({
            "dailies": [{"userId": "g1", "uploadStartTimeInSeconds": now - 86_400, "uploadEndTimeInSeconds": now,
                         "callbackURL": "https://apis.garmin.com/wellness-api/rest/dailies?uploadStartTimeInSeconds=1"}],
            "sleeps": [{"userId": "g1", "uploadStartTimeInSeconds": now - 5 * 86_400}, {"userId": "g2"}],
            "deregistrations": [{"userId": "g3"}]
        });
        let Ok(Outcome::Verified(v)) = garmin("ten_01hzzzzzzzzzzzzzzzzzzzzzzz", body.to_string().as_bytes()) else {
            panic!("a ping is accepted")
        };
        assert_eq!(v.users, BTreeMap::from([("g1".to_owned(), 7), ("g2".to_owned(), 2)]));
        assert!(garmin("ten_01hzzzzzzzzzzzzzzzzzzzzzzz", br#"{"dailies": [{"calendarDate": "2026-01-01"}]}"#).is_err());
        assert!(garmin("ten_01hzzzzzzzzzzzzzzzzzzzzzzz", b"[1, 2]").is_err());
    }
}
