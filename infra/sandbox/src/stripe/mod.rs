//! Sandbox Stripe: a local stand-in for the slice of the Stripe API a tenant uses to bill its own users (customers,
//! prices, Checkout for subscriptions, the customer portal, subscriptions, billing meter events, webhook
//! endpoints), speaking Stripe's wire format (form-encoded requests with bracket keys, JSON objects, Stripe's error
//! shape, `Idempotency-Key`, signed webhook deliveries) closely enough for async-stripe and curl.
//!
//! Every secret key is its own account: objects made with one key are invisible to every other key. Hosted pages
//! (`/checkout/{id}`, `/portal/{id}`) stand in for Stripe Checkout and the customer portal; `/sandbox/*` drives
//! what a test needs (renewals, failed payments, held / reordered / repeated webhook deliveries, faults) and
//! shows what happened (`/sandbox/state`). See the crate README for the endpoint table.

mod api;
mod billing;
mod control;
mod error;
mod form;
mod objects;
mod pages;
mod state;
mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use state::StripeState;

/// The variable that points the platform at the Stripe API base URL (the sandbox's `url`).
pub const ENV_VAR: &str = "TENANTRY_STRIPE_URL";

/// The API version the sandbox says it renders (`Stripe-Version` response header, events' `api_version`): the one
/// async-stripe 1.0.0-rc.10 is generated from.
pub const API_VERSION: &str = "2026-09-30.endive";

/// The `Stripe-Signature` header value for a delivery of `body` at unix time `t`: `t={t},v1={hex}`, where the hex is
/// HMAC-SHA256 keyed with the endpoint secret (the whole `whsec_...` string) over `"{t}.{body}"`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", signature_hex(secret, t, body))
}

fn signature_hex(secret: &str, t: i64, body: &[u8]) -> String {
    // HMAC takes keys of any length, so new_from_slice cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts any key length"),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

pub(crate) struct StripeApp {
    state: Mutex<StripeState>,
    /// Where hosted pages and list `url`s point: set once the server knows its address.
    base_url: Mutex<String>,
    http: reqwest::Client,
}

pub(crate) type App = Arc<StripeApp>;

impl StripeApp {
    /// Runs `f` under the state lock. A panic elsewhere never leaves the sandbox unusable.
    pub fn with<R>(&self, f: impl FnOnce(&mut StripeState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    pub fn base_url(&self) -> String {
        self.base_url.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

/// Request bodies up to 1 MB (Stripe's own limit is lower for most endpoints).
const BODY_LIMIT: usize = 1024 * 1024;

/// How long one webhook delivery attempt may take before it counts as failed.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);

fn app_with_base(base_url: String) -> App {
    let http = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    Arc::new(StripeApp { state: Mutex::new(StripeState::default()), base_url: Mutex::new(base_url), http })
}

/// The axum app of the Stripe sandbox, with fresh in-memory state. Hosted page URLs use `http://127.0.0.1` until
/// served by [`start`], which knows the real address.
pub fn router() -> Router {
    build(app_with_base("http://127.0.0.1".into()))
}

fn build(app: App) -> Router {
    Router::new()
        .route("/", get(control::index))
        // The API.
        .route("/v1/customers", post(api::create_customer).get(api::list_customers))
        .route(
            "/v1/customers/{id}",
            get(api::retrieve_customer).post(api::update_customer).delete(api::delete_customer),
        )
        .route("/v1/prices", post(api::create_price).get(api::list_prices))
        .route("/v1/prices/{id}", get(api::retrieve_price).post(api::update_price))
        .route("/v1/checkout/sessions", post(api::create_checkout_session).get(api::list_checkout_sessions))
        .route("/v1/checkout/sessions/{id}", get(api::retrieve_checkout_session))
        .route("/v1/checkout/sessions/{id}/expire", post(api::expire_checkout_session))
        .route("/v1/billing_portal/sessions", post(api::create_portal_session))
        .route("/v1/subscriptions", get(api::list_subscriptions))
        .route(
            "/v1/subscriptions/{id}",
            get(api::retrieve_subscription).post(api::update_subscription).delete(api::cancel_subscription),
        )
        .route("/v1/invoices/{id}", get(api::retrieve_invoice))
        .route("/v1/billing/meter_events", post(api::create_meter_event))
        .route("/v1/billing/meters", post(api::create_meter).get(api::list_meters))
        .route("/v1/billing/meters/{id}/event_summaries", get(api::meter_event_summaries))
        .route("/v1/webhook_endpoints", post(api::create_webhook_endpoint).get(api::list_webhook_endpoints))
        .route("/v1/webhook_endpoints/{id}", get(api::retrieve_webhook_endpoint).delete(api::delete_webhook_endpoint))
        .route("/v1/events", get(api::list_events))
        .route("/v1/events/{id}", get(api::retrieve_event))
        // Hosted pages.
        .route("/checkout/{id}", get(pages::checkout_page))
        .route("/checkout/{id}/pay", post(pages::checkout_pay))
        .route("/portal/{id}", get(pages::portal_page))
        .route("/portal/{id}/subscriptions/{sub}/cancel", post(pages::portal_cancel))
        // Sandbox controls.
        .route("/sandbox/state", get(control::state))
        .route("/sandbox/reset", post(control::reset))
        .route("/sandbox/accounts", post(control::create_account))
        .route("/sandbox/accounts/{id}", axum::routing::delete(control::revoke_account))
        .route("/sandbox/subscriptions/{id}/advance", post(control::advance_subscription))
        .route("/sandbox/subscriptions/{id}/fail_payment", post(control::fail_payment))
        .route("/sandbox/events/{id}/resend", post(control::resend_event))
        .route("/sandbox/deliver", post(control::deliver))
        .route("/sandbox/faults", get(control::faults).post(control::set_faults).delete(control::clear_faults))
        .fallback(api::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

/// The Stripe sandbox running in the background. Dropping it stops the server.
pub struct StripeRunning {
    /// `http://HOST:PORT`, the value for [`ENV_VAR`] (async-stripe's `ClientBuilder::url`).
    pub url: String,
    server: crate::server::Server,
}

impl StripeRunning {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Stops accepting connections and waits (a few seconds at most) for requests in flight.
    pub async fn stop(self) {
        self.server.stop().await
    }
}

impl std::fmt::Debug for StripeRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeRunning").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Serves the Stripe sandbox on `addr` (port 0 picks a free port); its hosted pages link to that address.
pub async fn start(addr: SocketAddr) -> anyhow::Result<StripeRunning> {
    let server = crate::server::Server::start(|url| build(app_with_base(url.to_owned())), addr, "stripe").await?;
    Ok(StripeRunning { url: server.url.clone(), server })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_documented_vector() {
        let header = sign("whsec_test_secret", 1_735_689_600, br#"{"id":"evt_test_webhook","object":"event"}"#);
        assert_eq!(header, "t=1735689600,v1=ddfd02b511b32e75f640cd68a239fa54407bf16354b543697b1cd8e8377a223d");
    }
}
