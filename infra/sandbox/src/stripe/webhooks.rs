//! Webhook delivery: each event is POSTed to each listening endpoint with a fresh `Stripe-Signature`, retried on
//! anything but 2xx, and every attempt is recorded for `/sandbox/state`.

use std::time::Duration;

use axum::http::header;
use serde_json::{Value, json};

use super::App;
use super::state::{Delivery, DeliveryRecord, now};

/// Waits before the 2nd, 3rd and 4th attempts (Stripe spreads retries over 3 days; the sandbox over ~3 s).
const RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(100), Duration::from_millis(500), Duration::from_secs(2)];

/// Sends deliveries in the background, first attempts in order; retries run on their own.
pub(crate) fn dispatch(app: &App, deliveries: Vec<Delivery>) {
    if deliveries.is_empty() {
        return;
    }
    let app = app.clone();
    tokio::spawn(async move {
        deliver_in_order(&app, deliveries).await;
    });
}

/// Makes the first attempt of each delivery in turn (waiting for each), leaving retries to background tasks.
/// Returns what each first attempt got.
pub(crate) async fn deliver_in_order(app: &App, deliveries: Vec<Delivery>) -> Vec<Value> {
    let mut outcomes = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let status = attempt(app, &d, 1).await;
        outcomes.push(json!({"event": d.event, "type": d.kind, "endpoint": d.endpoint, "status": status}));
        if !status.is_some_and(|s| (200..300).contains(&s)) {
            let app = app.clone();
            tokio::spawn(async move { retry(&app, d).await });
        }
    }
    outcomes
}

async fn retry(app: &App, d: Delivery) {
    for (i, delay) in RETRY_DELAYS.iter().enumerate() {
        tokio::time::sleep(*delay).await;
        let status = attempt(app, &d, i as u32 + 2).await;
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return;
        }
    }
    tracing::warn!(event = %d.event, endpoint = %d.endpoint, "Stripe sandbox gave up delivering a webhook");
}

/// One POST of the event to the endpoint. `None` when the receiver could not be reached (or the endpoint or event
/// is gone).
async fn attempt(app: &App, d: &Delivery, n: u32) -> Option<u16> {
    let found = app.with(|s| {
        let account = s.accounts.get(&d.account)?;
        let endpoint = account.endpoint(&d.endpoint)?;
        let event = account.event(&d.event)?;
        Some((endpoint.url().to_string(), endpoint.secret.clone(), event.clone()))
    });
    let (url, secret, event) = found?;
    let body = serde_json::to_vec(&event).ok()?;
    let t = now();
    let sent = app
        .http
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::USER_AGENT, "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
        .header("stripe-signature", super::sign(&secret, t, &body))
        .body(body)
        .send()
        .await;
    let (status, error) = match sent {
        Ok(res) => (Some(res.status().as_u16()), None),
        Err(e) => (None, Some(e.to_string())),
    };
    app.with(|s| {
        if let Some(account) = s.accounts.get_mut(&d.account) {
            account.deliveries.push(DeliveryRecord {
                event: d.event.clone(),
                kind: d.kind.clone(),
                endpoint: d.endpoint.clone(),
                url,
                attempt: n,
                status,
                error,
                at: t,
            });
        }
    });
    status
}
