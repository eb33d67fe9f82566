//! notifier: takes events from the notify queue and POSTs them, signed, to the tenant's webhook endpoint.
//! Each event becomes one delivery item (its id derived from the event's, so a redelivered message finds
//! it); each attempt is claimed with a conditional write (pending, due, not leased), so a delivery succeeds
//! at most once. A failed attempt is retried with exponential backoff through the queue (re-sent with a
//! not-before time where the wait is longer than SQS's 15-minute delay) until the retry window (24 h) is
//! spent; then the delivery is marked failed and its message goes to the dead-letter queue.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use secrecy::ExposeSecret;
use shared::events::{Events, Notice};
use shared::notify::{Claim, Delivery, DeliveryStatus, EVENT_ID_HEADER, NotifyStore, Outcome, SIGNATURE_HEADER};
use shared::tenancy::Stores;
use shared::vault::Vault;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::instrument;

/// How long an endpoint has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claimed attempt is the claimer's alone: longer than the request's timeout.
const LEASE: time::Duration = time::Duration::seconds(30);

/// When failed attempts are retried: `first_retry`, doubling, at most `max_wait` apart, for `window` after
/// the delivery was created.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub first_retry: time::Duration,
    pub max_wait: time::Duration,
    pub window: time::Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            first_retry: time::Duration::seconds(30),
            max_wait: time::Duration::hours(1),
            window: time::Duration::hours(24),
        }
    }
}

impl Policy {
    /// The default, with `NOTIFY_RETRY_FIRST_SECONDS`, `NOTIFY_RETRY_MAX_SECONDS` and
    /// `NOTIFY_RETRY_WINDOW_SECONDS` where set (the tests use seconds).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let secs = |k: &str, default: time::Duration| {
            get(k).and_then(|v| v.parse::<i64>().ok()).filter(|v| *v > 0).map_or(default, time::Duration::seconds)
        };
        let d = Self::default();
        Self {
            first_retry: secs("NOTIFY_RETRY_FIRST_SECONDS", d.first_retry),
            max_wait: secs("NOTIFY_RETRY_MAX_SECONDS", d.max_wait),
            window: secs("NOTIFY_RETRY_WINDOW_SECONDS", d.window),
        }
    }

    /// The wait after the `attempts`-th failed attempt.
    pub fn backoff(&self, attempts: u32) -> time::Duration {
        let factor = 2i32.saturating_pow(attempts.saturating_sub(1).min(20));
        self.first_retry.saturating_mul(factor).min(self.max_wait)
    }
}

/// The client for tenants' endpoints: a 10 s timeout and no redirects (a 3xx is a failed attempt).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(TIMEOUT).build().unwrap_or_default()
}

pub struct Notifier {
    pub stores: Stores,
    pub vault: Arc<Vault>,
    pub http: reqwest::Client,
    pub queue: Events,
    pub dead_letters: Events,
    pub policy: Policy,
}

fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(raw, &Rfc3339).ok()
}

fn seconds_until(t: OffsetDateTime, now: OffsetDateTime) -> i64 {
    // Rounded up, so a message is never early.
    i64::try_from(((t - now).whole_milliseconds() + 999).div_euclid(1000)).unwrap_or(i64::MAX)
}

impl Notifier {
    /// The Lambda entry: each message is an event (or a retry of one); failed ones are reported for retry.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        shared::batch::partial(&event, |m| self.one(m)).await
    }

    /// Works one message; true when it must come back.
    async fn one(&self, message: &SqsMessage) -> bool {
        let notice: Notice = match message.body.as_deref().map(serde_json::from_str) {
            Some(Ok(n)) => n,
            _ => {
                tracing::error!(message_id = ?message.message_id, "not a notify message; dropped");
                return false;
            }
        };
        shared::telemetry::record_tenant(&notice.event.tenant_id);
        let now = shared::time::now();
        if let Some(due) = notice.not_before.as_deref().and_then(parse_time)
            && due > now
        {
            // Still waiting past SQS's longest delay: send it on again until it is due.
            return match self.queue.send(&notice, seconds_until(due, now)).await {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(error = ?e, "could not re-queue a waiting delivery; it comes back");
                    true
                }
            };
        }
        match self.deliver(&notice).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(event_id = %notice.event.id, error = ?e, "delivery step failed; the message comes back");
                true
            }
        }
    }

    #[instrument(skip_all, fields(tenant_id = %notice.event.tenant_id, event_id = %notice.event.id, event_type = %notice.event.kind))]
    async fn deliver(&self, notice: &Notice) -> anyhow::Result<()> {
        let tenant = &notice.event.tenant_id;
        let store = self.stores.tenant(tenant).await?.notify_store();
        let id = notice.delivery_id.clone().unwrap_or_else(|| Delivery::id_for_event(&notice.event.id));
        let Some(endpoint) = store.endpoint(tenant).await? else {
            if notice.delivery_id.is_some() {
                let outcome = Outcome {
                    status: DeliveryStatus::Failed,
                    status_code: None,
                    error: Some("the webhook endpoint was removed".into()),
                    next_attempt_at: None,
                };
                let _ = store.finish(tenant, &id, &outcome).await;
            }
            tracing::info!("no webhook endpoint; event dropped");
            return Ok(());
        };
        if notice.delivery_id.is_none() {
            if !endpoint.wants(notice.event.kind) {
                tracing::debug!("event type not subscribed; dropped");
                return Ok(());
            }
            let delivery = Delivery::new(id.clone(), &notice.event.id, notice.event.kind, notice.event.body());
            store.create_delivery(tenant, &delivery).await?;
        }
        let secret = self.vault.open_string(&shared::notify::secret_context(tenant), &endpoint.secret_sealed).await?;
        let now = shared::time::now();
        let lease = shared::time::format(now + LEASE);
        let delivery = match store.claim(tenant, &id, &shared::time::format(now), &lease).await? {
            Claim::Granted(d) => d,
            Claim::Refused(Some(d)) if d.status == DeliveryStatus::Pending => {
                if d.lease_until.as_deref().and_then(parse_time).is_some_and(|until| until > now) {
                    anyhow::bail!("another worker is attempting this delivery");
                }
                tracing::info!(delivery_id = %id, "not due yet; the scheduled retry will deliver it");
                return Ok(());
            }
            Claim::Refused(d) => {
                tracing::info!(delivery_id = %id, status = ?d.map(|d| d.status), "nothing to deliver");
                return Ok(());
            }
        };
        let t = now.unix_timestamp();
        let sent = self
            .http
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, shared::notify::signature(secret.expose_secret().as_bytes(), t, &delivery.body))
            .header(EVENT_ID_HEADER, &delivery.event_id)
            .body(delivery.body.clone())
            .send()
            .await;
        let (code, error) = match sent {
            Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
            Ok(r) => (Some(r.status().as_u16()), Some(format!("the endpoint answered {}", r.status().as_u16()))),
            Err(e) if e.is_timeout() => (None, Some("the endpoint did not answer within 10 s".to_owned())),
            Err(e) => (None, Some(format!("the endpoint could not be reached: {}", e.without_url()))),
        };
        let Some(error) = error else {
            store.finish(tenant, &id, &outcome(DeliveryStatus::Delivered, code, None, None)).await?;
            tracing::info!(delivery_id = %id, attempts = delivery.attempts, "delivered");
            shared::metrics::count("WebhooksDelivered", tenant.as_str(), 1);
            return Ok(());
        };
        self.after_failure(&store, notice, &delivery, code, error, now).await
    }

    /// Schedules the next attempt, or, past the window, marks the delivery failed and dead-letters it.
    async fn after_failure(
        &self,
        store: &NotifyStore,
        notice: &Notice,
        delivery: &Delivery,
        code: Option<u16>,
        error: String,
        now: OffsetDateTime,
    ) -> anyhow::Result<()> {
        let tenant = &notice.event.tenant_id;
        let wait = self.policy.backoff(delivery.attempts);
        let next = now + wait;
        let deadline = parse_time(&delivery.created_at).unwrap_or(now) + self.policy.window;
        let retry = Notice {
            event: notice.event.clone(),
            delivery_id: Some(delivery.id.clone()),
            not_before: (next <= deadline).then(|| shared::time::format(next)),
        };
        let (queue, delay) =
            if next <= deadline { (&self.queue, seconds_until(next, now)) } else { (&self.dead_letters, 0) };
        if let Err(e) = queue.send(&retry, delay).await {
            // Nothing is scheduled: leave the delivery due now, and let this message come back.
            let due = outcome(DeliveryStatus::Pending, code, Some(error), Some(shared::time::format(now)));
            store.finish(tenant, &delivery.id, &due).await?;
            return Err(e);
        }
        if next <= deadline {
            let pending = outcome(DeliveryStatus::Pending, code, Some(error.clone()), retry.not_before.clone());
            store.finish(tenant, &delivery.id, &pending).await?;
            tracing::info!(delivery_id = %delivery.id, attempts = delivery.attempts, error = %error, retry_in_s = wait.whole_seconds(), "attempt failed; retry scheduled");
            shared::metrics::count("WebhookAttemptsFailed", tenant.as_str(), 1);
        } else {
            store
                .finish(tenant, &delivery.id, &outcome(DeliveryStatus::Failed, code, Some(error.clone()), None))
                .await?;
            tracing::warn!(delivery_id = %delivery.id, attempts = delivery.attempts, error = %error, "retry window spent; delivery failed and dead-lettered");
            shared::metrics::count("WebhooksFailed", tenant.as_str(), 1);
        }
        Ok(())
    }
}

fn outcome(status: DeliveryStatus, status_code: Option<u16>, error: Option<String>, next: Option<String>) -> Outcome {
    Outcome { status, status_code, error, next_attempt_at: next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_event_carries_a_notice() {
        let event: Result<SqsEvent, _> = serde_json::from_str(include_str!("../../../events/notifier/event.json"));
        let notice = event
            .ok()
            .and_then(|e| e.records.into_iter().next())
            .and_then(|m| m.body)
            .map(|b| serde_json::from_str::<Notice>(&b));
        let Some(Ok(notice)) = notice else { panic!("no notice in the sample: {notice:?}") };
        assert_eq!(notice.event.kind, shared::events::EventType::ConnectionCreated);
        assert_eq!(notice.event.data["provider"], "oura");
        assert!(notice.delivery_id.is_none() && notice.not_before.is_none());
    }

    #[test]
    fn backoff_doubles_from_the_first_retry_up_to_the_cap_and_24_hours_is_the_default_window() {
        let p = Policy::default();
        let waits: Vec<i64> = (1..=9).map(|a| p.backoff(a).whole_seconds()).collect();
        assert_eq!(waits, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(p.backoff(200), time::Duration::hours(1), "no overflow");
        assert_eq!(p.window, time::Duration::hours(24));
        let quick = Policy::from_lookup(|k| (k == "NOTIFY_RETRY_WINDOW_SECONDS").then(|| "5".to_owned()));
        assert_eq!((quick.window, quick.first_retry), (time::Duration::seconds(5), p.first_retry));
    }

    #[test]
    fn a_wait_is_rounded_up_to_whole_seconds() {
        let now = shared::time::now();
        assert_eq!(seconds_until(now + time::Duration::milliseconds(1500), now), 2);
        assert_eq!(seconds_until(now + time::Duration::seconds(2000), now), 2000);
    }
}
