//! Billing: each tenant bills its own users through its own Stripe account. Checkout and portal sessions
//! for a user (`/v1/users/{user_id}/billing/...` and the `/v1/me/...` twins), the user's billing state, and
//! the tenant's Stripe webhook (`/webhooks/stripe/{tenant_id}`), which moves users between plans.
//!
//! Webhooks are applied by reading the subscription back from Stripe, so the order events arrive in does not
//! matter (the state applied is always Stripe's latest); each event id is processed once (a conditional
//! marker); we answer non-2xx only when we failed, so Stripe retries exactly then.

pub mod reconcile;
pub mod signature;
pub mod stripe_api;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use shared::ApiError;
use shared::billing::{self as domain, BillingState, BillingStore, Effect};
use shared::http::{Json, Routes, Subject};
use shared::ids::{TenantId, UserId};
use shared::meter::{PlanName, PlanStore};
use shared::tenancy::Stores;
use shared::vault::Vault;

use crate::stripe_api::Stripe;

/// Points Stripe calls elsewhere (the sandbox); unset in AWS.
pub const STRIPE_URL_VAR: &str = "TENANTRY_STRIPE_URL";

#[derive(Clone)]
pub struct AppState {
    pub stores: Stores,
    pub vault: Arc<Vault>,
    /// `TENANTRY_STRIPE_URL`: where Stripe calls go instead of `https://api.stripe.com` (the sandbox).
    pub stripe_url: Option<String>,
    /// The usage ledger (`METER_TABLE`), for the reconciliation report.
    pub meter_table: String,
}

pub fn routes() -> Routes<AppState> {
    Routes::new()
        .post("/v1/users/{user_id}/billing/checkout", checkout)
        .post("/v1/me/billing/checkout", checkout)
        .post("/v1/users/{user_id}/billing/portal", portal)
        .post("/v1/me/billing/portal", portal)
        .get("/v1/users/{user_id}/billing", get_billing)
        .get("/v1/me/billing", get_billing)
        .get("/v1/billing/reconciliation", reconcile::reconciliation)
        .post("/webhooks/stripe/{tenant_id}", webhook)
}

pub fn router(state: AppState) -> axum::Router {
    routes().into_router(state)
}

pub(crate) struct Tenant {
    billing: BillingStore,
    plans: PlanStore,
}

pub(crate) async fn tenant(app: &AppState, tenant: &TenantId) -> Result<Tenant, ApiError> {
    let store = app.stores.tenant(tenant).await?;
    Ok(Tenant { billing: store.billing_store(), plans: store.plan_store() })
}

/// The tenant's Stripe client; 409 when the tenant has not set its keys.
pub(crate) async fn stripe(app: &AppState, t: &Tenant, tenant: &TenantId) -> Result<Stripe, ApiError> {
    let settings = t.billing.stripe(tenant).await.map_err(|e| e.into_api("Stripe settings"))?.ok_or_else(|| {
        ApiError::conflict("stripe_not_configured", "set your Stripe keys first: PUT /v1/settings/stripe")
    })?;
    let key = app
        .vault
        .open_string(&domain::secret_key_context(tenant), &settings.secret_key)
        .await
        .map_err(|e| ApiError::internal(e.into()))?;
    Stripe::new(key.expose_secret(), app.stripe_url.as_deref())
}

fn check_url(field: &str, raw: &str) -> Result<(), ApiError> {
    let ok = (raw.starts_with("https://") || raw.starts_with("http://")) && raw.len() <= 2048 && raw.len() > 8;
    if ok { Ok(()) } else { Err(ApiError::bad_request("invalid_url", format!("{field} must be an http(s) URL"))) }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    plan: String,
    success_url: String,
    cancel_url: String,
}

/// A Checkout Session (mode subscription) for the plan's Stripe price; the user's Stripe customer is made
/// once and reused.
async fn checkout(
    subject: Subject,
    State(app): State<AppState>,
    Json(body): Json<CheckoutBody>,
) -> Result<Response, ApiError> {
    check_url("success_url", &body.success_url)?;
    check_url("cancel_url", &body.cancel_url)?;
    let name = PlanName::parse(&body.plan).map_err(|m| ApiError::bad_request("invalid_plan_name", m))?;
    let (tenant_id, user_id) = (subject.tenant(), subject.user());
    let t = tenant(&app, tenant_id).await?;
    let user =
        app.stores.tenant(tenant_id).await?.get_user(tenant_id, user_id).await.map_err(|e| e.into_api("user"))?;
    let plan = t.plans.get_plan(tenant_id, &name).await.map_err(|e| e.into_api("plan"))?.ok_or_else(|| {
        ApiError::bad_request(
            "unknown_plan",
            format!("there is no plan `{name}`; create it with PUT /v1/settings/plans/{name}"),
        )
    })?;
    let price = plan.stripe_price_id.clone().ok_or_else(|| {
        ApiError::bad_request(
            "plan_not_billable",
            format!("plan `{name}` has no stripe_price_id; set one with PUT /v1/settings/plans/{name}"),
        )
    })?;
    let stripe = stripe(&app, &t, tenant_id).await?;
    let state = t.billing.state(tenant_id, user_id).await.map_err(|e| e.into_api("billing"))?;
    let customer = match state.customer_id {
        Some(c) => c,
        None => {
            let made = stripe.create_customer(tenant_id, user_id, user.email.as_ref().map(|e| e.as_str())).await?;
            t.billing.set_customer(tenant_id, user_id, &made).await.map_err(|e| e.into_api("billing"))?
        }
    };
    let metadata = HashMap::from([
        ("tenant_id".to_owned(), tenant_id.to_string()),
        ("user_id".to_owned(), user_id.to_string()),
        ("plan".to_owned(), name.to_string()),
    ]);
    let session = stripe
        .create_checkout(
            &customer,
            user_id,
            &price,
            plan.event_name.is_some(),
            &body.success_url,
            &body.cancel_url,
            metadata,
        )
        .await?;
    tracing::info!(tenant_id = %tenant_id, user_id = %user_id, plan = %name, "checkout session created");
    Ok(axum::Json(json!({"url": session.1, "id": session.0})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PortalBody {
    return_url: String,
}

/// A customer portal session, for a user who has a Stripe customer (after their first checkout).
async fn portal(
    subject: Subject,
    State(app): State<AppState>,
    Json(body): Json<PortalBody>,
) -> Result<Response, ApiError> {
    check_url("return_url", &body.return_url)?;
    let (tenant_id, user_id) = (subject.tenant(), subject.user());
    let t = tenant(&app, tenant_id).await?;
    app.stores.tenant(tenant_id).await?.get_user(tenant_id, user_id).await.map_err(|e| e.into_api("user"))?;
    let state = t.billing.state(tenant_id, user_id).await.map_err(|e| e.into_api("billing"))?;
    let customer = state.customer_id.ok_or_else(|| {
        ApiError::conflict(
            "no_billing_customer",
            "this user has never started a checkout; POST .../billing/checkout first",
        )
    })?;
    let url = stripe(&app, &t, tenant_id).await?.create_portal(&customer, &body.return_url).await?;
    Ok(axum::Json(json!({"url": url})).into_response())
}

fn rfc3339(unix: Option<i64>) -> Option<String> {
    unix.and_then(|u| time::OffsetDateTime::from_unix_timestamp(u).ok()).map(shared::time::format)
}

/// The user's plan, subscription status and period end. A failed renewal's grace period that ran out is
/// applied here too (the user goes back to the default plan).
async fn get_billing(subject: Subject, State(app): State<AppState>) -> Result<Response, ApiError> {
    let (tenant_id, user_id) = (subject.tenant(), subject.user());
    let t = tenant(&app, tenant_id).await?;
    let (_, mut own) = t.plans.user_plan(tenant_id, user_id).await.map_err(|e| e.into_api("user"))?;
    let state = t.billing.state(tenant_id, user_id).await.map_err(|e| e.into_api("billing"))?;
    if state.effect(shared::time::now()) == Effect::Default && own.is_some() && own == state.plan {
        t.plans.set_user_plan(tenant_id, user_id, None).await.map_err(|e| e.into_api("user"))?;
        own = None;
    }
    let plan = match own {
        Some(p) => Some(p),
        None => t.plans.settings(tenant_id).await.map_err(|e| e.into_api("settings"))?.default_plan,
    };
    Ok(axum::Json(json!({
        "user_id": user_id,
        "plan": plan,
        "status": state.status,
        "current_period_end": rfc3339(state.current_period_end),
        "grace_ends_at": rfc3339(state.grace_ends_at()),
        "subscription_id": state.subscription_id,
        "customer_id": state.customer_id,
    }))
    .into_response())
}

fn refused(message: &str) -> ApiError {
    ApiError::bad_request("invalid_signature", message.to_owned())
}

/// `POST /webhooks/stripe/{tenant_id}`: Stripe's events for the tenant's account, signed with the tenant's
/// webhook secret. Unknown tenants and bad signatures are refused (4xx) with nothing changed.
async fn webhook(
    State(app): State<AppState>,
    Path(raw_tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let no_secret = "no Stripe webhook secret is set for this tenant; set it with PUT /v1/settings/stripe";
    let tenant_id = TenantId::parse(&raw_tenant).map_err(|_| refused(no_secret))?;
    let t = tenant(&app, &tenant_id).await?;
    let settings = t.billing.stripe(&tenant_id).await.map_err(|e| e.into_api("Stripe settings"))?;
    let settings = settings.ok_or_else(|| refused(no_secret))?;
    let secret = app
        .vault
        .open_string(&domain::webhook_secret_context(&tenant_id), &settings.webhook_secret)
        .await
        .map_err(|e| ApiError::internal(e.into()))?;
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    signature::verify(secret.expose_secret(), header, &body, shared::time::now().unix_timestamp()).map_err(|e| {
        tracing::warn!(tenant_id = %tenant_id, reason = %e, "Stripe webhook refused");
        refused(&e.to_string())
    })?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("the event is not JSON: {e}")))?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(ApiError::bad_request("invalid_body", "the event has no `id` or `type`"));
    };
    if t.billing.event_seen(&tenant_id, id).await.map_err(|e| e.into_api("event"))? {
        return Ok(axum::Json(json!({"received": true, "duplicate": true})).into_response());
    }
    let applied = handle(&app, &t, &tenant_id, kind, &event["data"]["object"]).await?;
    let first = t.billing.mark_event(&tenant_id, id, kind).await.map_err(|e| e.into_api("event"))?;
    tracing::info!(tenant_id = %tenant_id, event = %id, kind, applied, "Stripe event processed");
    Ok(axum::Json(json!({"received": true, "duplicate": !first, "applied": applied})).into_response())
}

fn id_of(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v["id"].as_str())
}

/// The subscription an event is about, and a user named by the event itself (checkout's
/// `client_reference_id`).
fn subscription_of(kind: &str, object: &Value) -> Option<(String, Option<String>)> {
    let sub = match kind {
        "checkout.session.completed" => id_of(&object["subscription"]),
        "customer.subscription.created" | "customer.subscription.updated" | "customer.subscription.deleted" => {
            object["id"].as_str()
        }
        "invoice.payment_failed" | "invoice.paid" | "invoice.payment_succeeded" => {
            id_of(&object["parent"]["subscription_details"]["subscription"]).or_else(|| id_of(&object["subscription"]))
        }
        _ => None,
    }?;
    let user = (kind == "checkout.session.completed")
        .then(|| object["client_reference_id"].as_str().map(str::to_owned))
        .flatten();
    Some((sub.to_owned(), user))
}

/// Applies an event: reads its subscription back from Stripe and moves the user to what it pays for.
/// `false` when the event is not about one of the tenant's users' subscriptions.
async fn handle(
    app: &AppState,
    t: &Tenant,
    tenant_id: &TenantId,
    kind: &str,
    object: &Value,
) -> Result<bool, ApiError> {
    let Some((sub_id, named_user)) = subscription_of(kind, object) else { return Ok(false) };
    let stripe = stripe(app, t, tenant_id).await?;
    // When we asked: of two webhooks racing, the one that asked later (saw Stripe's later state) wins.
    let read_at_ms = (shared::time::now().unix_timestamp_nanos() / 1_000_000) as i64;
    let sub = stripe.subscription(&sub_id).await?;
    let mut user = t.billing.user_of_customer(tenant_id, &sub.customer).await.map_err(|e| e.into_api("billing"))?;
    if user.is_none() {
        let named = named_user.or_else(|| sub.metadata.get("user_id").cloned());
        if let Some(u) = named.and_then(|u| UserId::parse(&u).ok()) {
            let store = app.stores.tenant(tenant_id).await?;
            if store.get_user(tenant_id, &u).await.is_ok() {
                t.billing.set_customer(tenant_id, &u, &sub.customer).await.map_err(|e| e.into_api("billing"))?;
                user = Some(u);
            }
        }
    }
    let Some(user) = user else {
        tracing::info!(tenant_id = %tenant_id, subscription = %sub_id, "subscription of no user of this tenant");
        return Ok(false);
    };
    let before = t.billing.state(tenant_id, &user).await.map_err(|e| e.into_api("billing"))?;
    // An older subscription ending must not undo a newer live one.
    if before.subscription_id.as_deref().is_some_and(|s| s != sub.id)
        && before.status.as_deref().is_some_and(domain::is_live)
        && !domain::is_live(&sub.status)
    {
        return Ok(false);
    }
    let plans = t.plans.list_plans(tenant_id).await.map_err(|e| e.into_api("plan"))?;
    let plan = plans
        .iter()
        .find(|(_, p)| p.stripe_price_id.as_ref().is_some_and(|price| sub.prices.contains(price)))
        .map(|(n, _)| n.clone())
        .or_else(|| sub.metadata.get("plan").and_then(|p| PlanName::parse(p).ok()));
    let now = shared::time::now().unix_timestamp();
    let past_due_since = match (sub.status.as_str(), &before) {
        ("past_due", b) if b.status.as_deref() == Some("past_due") && b.subscription_id.as_deref() == Some(&sub.id) => {
            b.past_due_since.or(Some(now))
        }
        ("past_due", _) => Some(now),
        _ => None,
    };
    let after = BillingState {
        customer_id: Some(sub.customer.clone()),
        subscription_id: Some(sub.id.clone()),
        status: Some(sub.status.clone()),
        plan,
        current_period_end: sub.current_period_end,
        past_due_since,
    };
    if !t.billing.put_state(tenant_id, &user, &after, read_at_ms).await.map_err(|e| e.into_api("billing"))? {
        return Ok(false);
    }
    let set = |p: Option<PlanName>| async move {
        t.plans.set_user_plan(tenant_id, &user, p.as_ref()).await.map_err(|e| e.into_api("user"))
    };
    match after.effect(shared::time::now()) {
        Effect::Paid(p) => set(Some(p)).await?,
        Effect::Default => set(None).await?,
        Effect::Keep => {}
    }
    Ok(true)
}
