//! Sandbox controls (not Stripe): accounts, renewals and failed payments, webhook redelivery, held and reordered
//! deliveries, fault switches and `/sandbox/state`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::seq::SliceRandom as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiResult, StripeError};
use super::state::{Account, Delivery, FaultsUpdate, new_id};
use super::{App, billing, webhooks};

fn json_response(body: Value) -> Response {
    axum::Json(body).into_response()
}

pub(crate) async fn index() -> Response {
    json_response(json!({
        "sandbox": "stripe",
        "api": [
            "POST|GET /v1/customers", "GET|POST|DELETE /v1/customers/{id}",
            "POST|GET /v1/prices", "GET|POST /v1/prices/{id}",
            "POST|GET /v1/checkout/sessions", "GET /v1/checkout/sessions/{id}", "POST /v1/checkout/sessions/{id}/expire",
            "POST /v1/billing_portal/sessions",
            "GET /v1/subscriptions", "GET|POST|DELETE /v1/subscriptions/{id}", "GET /v1/invoices/{id}",
            "POST /v1/billing/meter_events", "POST|GET /v1/billing/meters", "GET /v1/billing/meters/{id}/event_summaries",
            "POST|GET /v1/webhook_endpoints", "GET|DELETE /v1/webhook_endpoints/{id}",
            "GET /v1/events", "GET /v1/events/{id}",
        ],
        "pages": ["GET /checkout/{id}", "POST /checkout/{id}/pay", "GET /portal/{id}", "POST /portal/{id}/subscriptions/{sub}/cancel"],
        "sandbox_controls": [
            "GET /sandbox/state[?account=acct_...]", "POST /sandbox/reset", "POST /sandbox/accounts", "DELETE /sandbox/accounts/{id}",
            "POST /sandbox/subscriptions/{id}/advance", "POST /sandbox/subscriptions/{id}/fail_payment",
            "POST /sandbox/events/{id}/resend", "POST /sandbox/deliver", "GET|POST|DELETE /sandbox/faults",
        ],
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StateQuery {
    account: Option<String>,
}

/// `GET /sandbox/state[?account=acct_...]`.
pub(crate) async fn state(State(app): State<App>, Query(q): Query<StateQuery>) -> Response {
    json_response(app.with(|s| s.to_json(q.account.as_deref())))
}

/// `POST /sandbox/reset`: forgets every account, event and switch.
pub(crate) async fn reset(State(app): State<App>) -> Response {
    app.with(|s| *s = Default::default());
    json_response(app.with(|s| s.to_json(None)))
}

/// `POST /sandbox/accounts`: a new account and its secret key, with the seeded prices by lookup key.
pub(crate) async fn create_account(State(app): State<App>) -> Response {
    let key = new_id("sk_test_", 32);
    let body = app.with(|s| {
        let account = s.account_for_key(&key);
        let prices: serde_json::Map<String, Value> = account
            .prices
            .iter()
            .filter_map(|p| Some((p["lookup_key"].as_str()?.to_string(), p["id"].clone())))
            .collect();
        json!({"account": account.id, "secret_key": key, "prices": prices})
    });
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

/// `DELETE /sandbox/accounts/{id}`: the account's key answers 401 from now on (its objects stay in the state).
pub(crate) async fn revoke_account(State(app): State<App>, Path(id): Path<String>) -> Response {
    let revoked = app.with(|s| {
        let key = s.accounts.get(&id).map(|a| a.key.clone())?;
        s.revoked.insert(key);
        Some(())
    });
    match revoked {
        Some(()) => json_response(json!({"account": id, "revoked": true})),
        None => StripeError::no_such("account", &id, None).into_response(),
    }
}

/// Runs a lifecycle step on the account holding subscription `id`, then sends the events it made.
async fn on_subscription(
    app: &App,
    id: &str,
    step: impl FnOnce(&mut Account, &str, &str) -> ApiResult<Value>,
) -> Response {
    let base = app.base_url();
    let (outcome, deliveries) = app.with(|s| {
        let outcome = match s.account_holding(id, |a| &a.subscriptions) {
            Some(account) => {
                let r = step(account, id, &base);
                if r.is_err() {
                    account.outbox.clear();
                }
                r
            }
            None => Err(StripeError::no_such("subscription", id, None)),
        };
        (outcome, s.take_outbox())
    });
    webhooks::dispatch(app, deliveries);
    match outcome {
        Ok(sub) => json_response(sub),
        Err(e) => e.into_response(),
    }
}

/// `POST /sandbox/subscriptions/{id}/advance`: the next billing event (see `billing::advance`).
pub(crate) async fn advance_subscription(State(app): State<App>, Path(id): Path<String>) -> Response {
    on_subscription(&app, &id, billing::advance).await
}

/// `POST /sandbox/subscriptions/{id}/fail_payment`: a failed payment (see `billing::fail_payment`).
pub(crate) async fn fail_payment(State(app): State<App>, Path(id): Path<String>) -> Response {
    on_subscription(&app, &id, billing::fail_payment).await
}

/// `POST /sandbox/events/{id}/resend`: delivers the same event (same id, body) again to every endpoint that
/// listens for its type; held like any delivery while `hold` is on.
pub(crate) async fn resend_event(State(app): State<App>, Path(id): Path<String>) -> Response {
    let queued = app.with(|s| {
        let account = s.accounts.values_mut().find(|a| a.event(&id).is_some())?;
        let kind = account.event(&id)?["type"].as_str().unwrap_or_default().to_string();
        let listeners: Vec<String> =
            account.endpoints.iter().filter(|e| e.wants(&kind)).map(|e| e.id().to_string()).collect();
        let n = listeners.len();
        for endpoint in listeners {
            let d = Delivery { account: account.id.clone(), endpoint, event: id.clone(), kind: kind.clone() };
            account.outbox.push(d);
        }
        Some((n, s.take_outbox(), s.hold))
    });
    match queued {
        Some((n, deliveries, held)) => {
            webhooks::dispatch(&app, deliveries);
            json_response(json!({"event": id, "deliveries": n, "held": held}))
        }
        None => StripeError::no_such("event", &id, None).into_response(),
    }
}

/// `POST /sandbox/deliver` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliverRequest {
    /// `true`: hold deliveries from now on (nothing is sent); `false`: stop holding and send what was held.
    hold: Option<bool>,
    /// Send held deliveries in random order (same as `"order": "shuffle"`).
    #[serde(default)]
    shuffle: bool,
    /// `queued` (default), `reverse` or `shuffle`.
    order: Option<String>,
}

/// `POST /sandbox/deliver`: `{"hold": true}` holds every delivery from now on; `{}` / `{"shuffle": true}` /
/// `{"order": "reverse"}` sends what is held in that order (first attempts one after another, answered with their
/// statuses) and keeps holding; `{"hold": false, ...}` does the same and stops holding.
pub(crate) async fn deliver(State(app): State<App>, body: Bytes) -> Response {
    let req: DeliverRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DeliverRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return StripeError::invalid(format!(
                    "{e}; expected e.g. {{\"hold\": true}}, {{\"shuffle\": true}}, {{\"order\": \"reverse\"}} or {{\"hold\": false}}"
                ))
                .into_response();
            }
        }
    };
    let order = match (req.shuffle, req.order.as_deref()) {
        (true, _) | (false, Some("shuffle")) => "shuffle",
        (false, None | Some("queued")) => "queued",
        (false, Some("reverse")) => "reverse",
        (false, Some(other)) => {
            return StripeError::invalid(format!("Unknown order '{other}': expected queued, reverse or shuffle"))
                .into_response();
        }
    };
    let (mut batch, hold) = app.with(|s| {
        if let Some(h) = req.hold {
            s.hold = h;
        }
        let batch = if req.hold == Some(true) { Vec::new() } else { std::mem::take(&mut s.held) };
        (batch, s.hold)
    });
    match order {
        "shuffle" => batch.shuffle(&mut rand::thread_rng()),
        "reverse" => batch.reverse(),
        _ => {}
    }
    let delivered = webhooks::deliver_in_order(&app, batch).await;
    json_response(json!({"hold": hold, "order": order, "delivered": delivered}))
}

fn faults_json(app: &App) -> Value {
    app.with(|s| serde_json::to_value(&s.faults).unwrap_or_else(|_| json!({})))
}

pub(crate) async fn faults(State(app): State<App>) -> Response {
    json_response(faults_json(&app))
}

/// `POST /sandbox/faults`: a partial update; answers with the switches as they now stand.
pub(crate) async fn set_faults(State(app): State<App>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultsUpdate>(&body) {
        Ok(update) => {
            app.with(|s| s.faults.apply(update));
            json_response(faults_json(&app))
        }
        Err(e) => StripeError::invalid(format!(
            "{e}; expected e.g. {{\"server_error\": 1}}, {{\"rate_limited\": 2}}, {{\"hang\": 1}} or {{\"slow_ms\": 50}}"
        ))
        .into_response(),
    }
}

pub(crate) async fn clear_faults(State(app): State<App>) -> Response {
    app.with(|s| s.faults = Default::default());
    json_response(faults_json(&app))
}
