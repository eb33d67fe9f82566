//! The Stripe calls billing makes, through async-stripe 1.0 with the tenant's own secret key: customers,
//! Checkout Sessions (mode subscription), portal sessions, reading a subscription back, meter events and
//! meters' totals. Stripe's answers become our error shape: a refused key or request says what to fix, an
//! unreachable Stripe is 503.

use std::collections::HashMap;
use std::time::Duration;

use shared::ApiError;
use shared::ids::{TenantId, UserId};
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::billing_meter::ListBillingMeter;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_summary::ListIdBillingMeterEventSummary;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::{CreateCustomer, DeleteCustomer};

/// Stripe's real API.
pub const STRIPE_API: &str = "https://api.stripe.com/";

/// How long one Stripe call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one tenant's Stripe account.
pub struct Stripe {
    client: stripe::Client,
}

/// The parts of a subscription billing uses.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub id: String,
    pub customer: String,
    pub status: String,
    /// The price ids of its items.
    pub prices: Vec<String>,
    /// Unix seconds: the latest end of its items' current periods.
    pub current_period_end: Option<i64>,
    pub metadata: HashMap<String, String>,
}

/// How sending one meter event ended.
#[derive(Debug, Clone, PartialEq)]
pub enum MeterOutcome {
    /// Stripe has it (now, or from an earlier send with the same identifier).
    Accepted,
    /// Stripe refused it as too old (past its 35 days).
    TooOld(String),
    /// Stripe refused it for good (a deleted customer, a bad value...): its message.
    Refused(String),
    /// Stripe was unreachable, limited us, failed, or refused the key: worth another try later.
    Retry(String),
}

/// Maps a Stripe failure: the key refused -> 409, a request refused -> 400 with Stripe's message, anything
/// else (429, 5xx, unreachable, an answer we cannot read) -> 503, so callers and Stripe's webhook retry.
pub fn api_error(e: StripeError) -> ApiError {
    match e {
        StripeError::Stripe(err, 401 | 403) => {
            tracing::warn!(message = err.message.as_deref().unwrap_or(""), "Stripe refused the tenant's key");
            ApiError::conflict(
                "stripe_key_rejected",
                "Stripe refused the tenant's secret key; set a valid one with PUT /v1/settings/stripe",
            )
        }
        StripeError::Stripe(err, status) if (400..500).contains(&status) && status != 429 && status != 409 => {
            ApiError::bad_request(
                "stripe_rejected",
                format!("Stripe refused the request: {}", err.message.as_deref().unwrap_or("no message")),
            )
        }
        other => {
            tracing::warn!(error = %other, "Stripe call failed");
            ApiError::unavailable("Stripe could not be reached or failed; retry shortly")
        }
    }
}

impl Stripe {
    /// `base`: `TENANTRY_STRIPE_URL` (the sandbox), else Stripe itself.
    pub fn new(secret_key: &str, base: Option<&str>) -> Result<Self, ApiError> {
        let base = base.map_or_else(|| STRIPE_API.to_owned(), |b| format!("{}/", b.trim_end_matches('/')));
        let client = stripe::ClientBuilder::new(secret_key)
            .url(base)
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| ApiError::internal(anyhow::anyhow!("building the Stripe client: {e}")))?;
        Ok(Self { client })
    }

    /// A customer for the user, at most one per user even when two requests race (Stripe's idempotency key).
    pub async fn create_customer(
        &self,
        tenant: &TenantId,
        user: &UserId,
        email: Option<&str>,
    ) -> Result<String, ApiError> {
        let metadata =
            HashMap::from([("tenant_id".to_owned(), tenant.to_string()), ("user_id".to_owned(), user.to_string())]);
        let mut req = CreateCustomer::new().metadata(metadata);
        if let Some(email) = email {
            req = req.email(email);
        }
        let key = IdempotencyKey::new(format!("tenantry-customer-{tenant}-{user}"))
            .map_err(|e| ApiError::internal(anyhow::anyhow!("idempotency key: {e:?}")))?;
        let customer = req
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(api_error)?;
        Ok(customer.id.to_string())
    }

    /// Deletes the customer (Stripe cancels their subscriptions with it); one already gone counts as deleted,
    /// so a purge that is run again finishes.
    pub async fn delete_customer(&self, customer: &str) -> Result<(), ApiError> {
        match DeleteCustomer::new(customer).send(&self.client).await {
            Ok(_) => Ok(()),
            Err(StripeError::Stripe(_, 404)) => Ok(()),
            Err(e) => Err(api_error(e)),
        }
    }

    /// A Checkout Session for one recurring price: `(id, url)`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_checkout(
        &self,
        customer: &str,
        user: &UserId,
        price: &str,
        metered: bool,
        success_url: &str,
        cancel_url: &str,
        metadata: HashMap<String, String>,
    ) -> Result<(String, Option<String>), ApiError> {
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(price.to_owned());
        // A metered price takes no quantity; a licensed one needs it.
        item.quantity = (!metered).then_some(1);
        let mut sub = CreateCheckoutSessionSubscriptionData::new();
        sub.metadata = Some(metadata.clone());
        let session = CreateCheckoutSession::new()
            .mode(stripe_shared::CheckoutSessionMode::Subscription)
            .customer(customer)
            .client_reference_id(user.to_string())
            .line_items(vec![item])
            .success_url(success_url)
            .cancel_url(cancel_url)
            .metadata(metadata)
            .subscription_data(sub)
            .send(&self.client)
            .await
            .map_err(api_error)?;
        Ok((session.id.to_string(), session.url))
    }

    /// A customer portal session's URL.
    pub async fn create_portal(&self, customer: &str, return_url: &str) -> Result<String, ApiError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer)
            .return_url(return_url)
            .send(&self.client)
            .await
            .map_err(api_error)?;
        Ok(session.url)
    }

    /// A subscription as Stripe has it now.
    pub async fn subscription(&self, id: &str) -> Result<Subscription, ApiError> {
        let sub = RetrieveSubscription::new(id).send(&self.client).await.map_err(api_error)?;
        Ok(Subscription {
            id: sub.id.to_string(),
            customer: sub.customer.id().to_string(),
            status: sub.status.as_str().to_owned(),
            prices: sub.items.data.iter().map(|i| i.price.id.to_string()).collect(),
            current_period_end: sub.items.data.iter().map(|i| i.current_period_end).max(),
            metadata: sub.metadata,
        })
    }

    /// Sends one meter event; `identifier` makes a repeat (a retry, a redelivered message) count once.
    pub async fn meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: &str,
        identifier: &str,
        timestamp: i64,
    ) -> MeterOutcome {
        let payload = HashMap::from([
            ("stripe_customer_id".to_owned(), customer.to_owned()),
            ("value".to_owned(), value.to_owned()),
        ]);
        // No Idempotency-Key: Stripe would replay a saved 500 for a day; the identifier already dedupes.
        let sent = CreateBillingMeterEvent::new(event_name, payload)
            .identifier(identifier)
            .timestamp(timestamp)
            .send(&self.client)
            .await;
        match sent {
            Ok(_) => MeterOutcome::Accepted,
            Err(StripeError::Stripe(err, status)) => {
                let code = err.code.as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default();
                let message = format!("{} ({status} {code})", err.message.as_deref().unwrap_or("no message"));
                // Stripe has an event with this identifier already: counted once, as we want.
                let duplicate = code.contains("duplicate")
                    || err.message.as_deref().is_some_and(|m| m.contains("identifier") && m.contains("already"));
                match status {
                    400 if duplicate => MeterOutcome::Accepted,
                    400 if code == "timestamp_too_far_in_past" => MeterOutcome::TooOld(message),
                    400 | 404 => MeterOutcome::Refused(message),
                    _ => MeterOutcome::Retry(message),
                }
            }
            Err(other) => MeterOutcome::Retry(other.to_string()),
        }
    }

    /// The account's active meters: event name -> meter id.
    pub async fn meters(&self) -> Result<HashMap<String, String>, ApiError> {
        let mut out = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut req = ListBillingMeter::new().limit(100).status(stripe_billing::BillingMeterStatus::Active);
            if let Some(a) = &after {
                req = req.starting_after(a.as_str());
            }
            let page = req.send(&self.client).await.map_err(api_error)?;
            for m in &page.data {
                out.insert(m.event_name.clone(), m.id.to_string());
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// What Stripe has aggregated for one customer on a meter over `[start, end)` (minute-aligned seconds).
    pub async fn meter_total(&self, meter: &str, customer: &str, start: i64, end: i64) -> Result<f64, ApiError> {
        let page = ListIdBillingMeterEventSummary::new(meter, customer, end, start)
            .limit(100)
            .send(&self.client)
            .await
            .map_err(api_error)?;
        Ok(page.data.iter().map(|s| s.aggregated_value).sum())
    }
}
