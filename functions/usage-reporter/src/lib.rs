//! Usage to Stripe meters, exactly once. Every minute a sweep finds the ledger entries due for Stripe (the
//! meter table's sparse index `gsi2`, no scan), claims each by moving its due time ahead, and queues them on
//! `UsageQueue`, one tenant's entries to a message. The same function takes the queue's batches and sends each
//! entry to the tenant's own Stripe account as a meter event whose `identifier` is the ledger entry id, then
//! records how it ended on the entry, which takes it out of the index.
//!
//! Exactly once: an entry is sent only while it is still pending (read consistently just before), Stripe
//! counts an identifier once (a retry or a second delivery within its 24 hours), and the entry is marked
//! reported right after. A passing failure (Stripe down, 429, a refused key) leaves the entry pending with
//! the reason, due again after the claim time: the table, not the queue, holds what is left to do. A message
//! comes back (and, past five receives, lands in the dead letters) only when our own storage failed.
//! Entries Stripe can no longer take (older than 35 days) end `expired`; nothing is dropped silently.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use billing::stripe_api::{MeterOutcome, Stripe};
use futures::StreamExt;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::billing as domain;
use shared::ids::{TenantId, UserId};
use shared::meter::report::{REPORT_SHARDS, STRIPE_WINDOW_SECS};
use shared::meter::{MeterStore, PendingReport, ReportStatus};
use shared::tenancy::Stores;
use shared::vault::Vault;

/// A claimed entry comes due again after this long if it was not finished (a lost message, a crash, a
/// passing Stripe failure), unless `USAGE_CLAIM_SECONDS` says otherwise.
pub const CLAIM_SECS: i64 = 600;
/// Overrides [`CLAIM_SECS`] (tests make it short).
pub const CLAIM_SECS_VAR: &str = "USAGE_CLAIM_SECONDS";
/// A tenant without Stripe keys is asked again after this many claim times (an hour by default).
const NOT_CONFIGURED_CLAIMS: i64 = 6;
/// Entries per queue message (one tenant's).
const PER_MESSAGE: usize = 40;
/// Entries read per index shard per sweep.
const SWEEP_LIMIT: i32 = 400;
/// Stripe calls in flight per message.
const CONCURRENCY: usize = 8;
/// An entry this close to Stripe's 35 days is not sent: it could cross the line in flight.
const WINDOW_MARGIN_SECS: i64 = 300;

/// Which trigger an invocation came from: the queue's batch (`Records`) or the minute schedule.
pub fn is_queue_batch(event: &serde_json::Value) -> bool {
    event.get("Records").is_some()
}

/// One queue message: entries of one tenant.
#[derive(Debug, Serialize, Deserialize)]
pub struct Batch {
    pub tenant_id: TenantId,
    pub entries: Vec<PendingReport>,
}

pub struct Reporter {
    /// The function's own view of the meter table, for the cross-tenant index sweep and claims.
    pub meter: MeterStore,
    /// Tenant-scoped stores (the entries, Stripe settings and billing state of one tenant).
    pub stores: Stores,
    pub meter_table: String,
    pub vault: Arc<Vault>,
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    /// `TENANTRY_STRIPE_URL`: the Stripe sandbox; unset in AWS.
    pub stripe_url: Option<String>,
    /// [`CLAIM_SECS`], or `USAGE_CLAIM_SECONDS`.
    pub claim_secs: i64,
}

/// The claim time from a lookup of `USAGE_CLAIM_SECONDS`; [`CLAIM_SECS`] when unset or unreadable.
pub fn claim_secs(get: impl Fn(&str) -> Option<String>) -> i64 {
    get(CLAIM_SECS_VAR).and_then(|v| v.parse().ok()).filter(|s| *s > 0).unwrap_or(CLAIM_SECS)
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sweep {
    pub due: usize,
    pub claimed: usize,
    pub queued: usize,
}

/// How one message's entries ended.
#[derive(Debug, Default)]
struct Tally {
    by_status: BTreeMap<&'static str, usize>,
    retry: usize,
}

impl Tally {
    /// `UsageReported` (Stripe took them), `UsageReportsFailed` (refused, expired or unbillable: they stay in
    /// the reconciliation report) and `UsageReportsRetried` (docs/deploy.md, "Metrics").
    fn emit_metrics(&self, tenant: &str) {
        let n = |status: &str| self.by_status.get(status).copied().unwrap_or_default() as u64;
        let failed = n("failed") + n("expired") + n("unbillable");
        let metrics = [
            ("UsageReported", n("reported")),
            ("UsageReportsFailed", failed),
            ("UsageReportsRetried", self.retry as u64),
        ];
        shared::metrics::emit(
            &[("TenantId", tenant)],
            &metrics.map(|(name, n)| shared::metrics::Metric::count(name, n)),
        );
    }
}

impl Reporter {
    /// The scheduled run: due entries of every shard, claimed and queued.
    pub async fn sweep(&self) -> anyhow::Result<Sweep> {
        let now = shared::time::now().unix_timestamp();
        let shards =
            futures::future::join_all((0..REPORT_SHARDS).map(|s| self.meter.due_reports(s, now, SWEEP_LIMIT))).await;
        let mut due = Vec::new();
        for shard in shards {
            due.extend(shard?);
        }
        let mut result = Sweep { due: due.len(), ..Sweep::default() };
        let until = now + self.claim_secs;
        let claims: Vec<_> = futures::stream::iter(due)
            .map(|entry| async move {
                match self.meter.claim_report(&entry, until).await {
                    Ok(true) => Some(entry),
                    Ok(false) => None,
                    Err(e) => {
                        tracing::warn!(error = ?e, entry = %entry.id, "could not claim an entry; next sweep");
                        None
                    }
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut by_tenant: BTreeMap<TenantId, Vec<PendingReport>> = BTreeMap::new();
        for entry in claims.into_iter().flatten() {
            result.claimed += 1;
            by_tenant.entry(entry.tenant_id.clone()).or_default().push(entry);
        }
        let mut messages = Vec::new();
        for (tenant_id, entries) in by_tenant {
            for chunk in entries.chunks(PER_MESSAGE) {
                let batch = Batch { tenant_id: tenant_id.clone(), entries: chunk.to_vec() };
                messages.push((serde_json::to_string(&batch)?, 0));
                result.queued += chunk.len();
            }
        }
        // A failed send leaves its entries claimed: they come due again after CLAIM_SECS.
        shared::batch::send_many(&self.sqs, &self.queue_url, &messages, "usage reports").await?;
        if result.due > 0 {
            tracing::info!(due = result.due, claimed = result.claimed, queued = result.queued, "usage reports queued");
        }
        Ok(result)
    }

    /// The queue's batches; a message with entries to try again is reported for redelivery.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        shared::batch::partial(&event, |m| self.one(m)).await
    }

    async fn one(&self, message: &SqsMessage) -> bool {
        let batch: Batch = match message.body.as_deref().map(serde_json::from_str) {
            Some(Ok(b)) => b,
            _ => {
                // Kept for the dead-letter queue, where it can be read.
                tracing::error!(message_id = ?message.message_id, "not a usage report batch");
                return true;
            }
        };
        shared::telemetry::record_tenant(&batch.tenant_id);
        match self.report(&batch).await {
            Ok(tally) => {
                tracing::info!(tenant_id = %batch.tenant_id, outcomes = ?tally.by_status, retry = tally.retry,
                    "usage reports sent");
                tally.emit_metrics(batch.tenant_id.as_str());
                false
            }
            Err(e) => {
                tracing::warn!(tenant_id = %batch.tenant_id, error = ?e, "usage reports failed; the message comes back");
                true
            }
        }
    }

    async fn report(&self, batch: &Batch) -> anyhow::Result<Tally> {
        let tenant = &batch.tenant_id;
        let tenancy = self.stores.tenant(tenant).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let meter = tenancy.meter_store(&self.meter_table);
        let entries: Vec<&PendingReport> = batch.entries.iter().filter(|e| &e.tenant_id == tenant).collect();
        let pending = meter.still_pending(tenant, &batch.entries).await?;
        let entries: Vec<&PendingReport> = entries.into_iter().filter(|e| pending.contains(&e.sk)).collect();
        let mut tally = Tally::default();
        if entries.is_empty() {
            return Ok(tally);
        }
        let billing = tenancy.billing_store();
        let Some(settings) = billing.stripe(tenant).await? else {
            let until = shared::time::now().unix_timestamp() + NOT_CONFIGURED_CLAIMS * self.claim_secs;
            for e in &entries {
                meter.defer_report(e, until, "the tenant has no Stripe keys (PUT /v1/settings/stripe)").await?;
            }
            *tally.by_status.entry("waiting_for_stripe_keys").or_default() += entries.len();
            return Ok(tally);
        };
        let key = self.vault.open_string(&domain::secret_key_context(tenant), &settings.secret_key).await?;
        let stripe = Stripe::new(key.expose_secret(), self.stripe_url.as_deref())
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let mut customers: HashMap<UserId, Option<String>> = HashMap::new();
        for e in &entries {
            if !customers.contains_key(&e.user_id) {
                let state = billing.state(tenant, &e.user_id).await?;
                customers.insert(e.user_id.clone(), state.customer_id);
            }
        }
        let (now, claim) = (shared::time::now().unix_timestamp(), self.claim_secs);
        let outcomes: Vec<anyhow::Result<Option<ReportStatus>>> = futures::stream::iter(entries.into_iter().cloned())
            .map(|e| {
                let customer = customers.get(&e.user_id).cloned().flatten();
                let (stripe, meter) = (&stripe, &meter);
                async move {
                    let e = &e;
                    let (status, error) = if now - e.timestamp > STRIPE_WINDOW_SECS - WINDOW_MARGIN_SECS {
                        (ReportStatus::Expired, Some("older than Stripe's 35 days".to_owned()))
                    } else if let Some(customer) = customer {
                        match stripe.meter_event(&e.event_name, &customer, &e.value, &e.id, e.timestamp).await {
                            MeterOutcome::Accepted => (ReportStatus::Reported, None),
                            MeterOutcome::TooOld(m) => (ReportStatus::Expired, Some(m)),
                            MeterOutcome::Refused(m) => (ReportStatus::Failed, Some(m)),
                            MeterOutcome::Retry(m) => {
                                meter.defer_report(e, now + claim, &m).await?;
                                tracing::warn!(entry = %e.id, reason = %m, "Stripe did not take a meter event; retrying");
                                return Ok(None);
                            }
                        }
                    } else {
                        (ReportStatus::Unbillable, Some("the user has no Stripe customer".to_owned()))
                    };
                    meter.finish_report(e, status, error.as_deref()).await?;
                    Ok(Some(status))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome? {
                Some(status) => *tally.by_status.entry(status.as_str()).or_default() += 1,
                None => tally.retry += 1,
            }
        }
        Ok(tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_events_are_a_schedule_tick_and_a_batch_of_one_tenants_entries() {
        let tick: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/usage-reporter/tick.json")).unwrap_or_default();
        assert!(!is_queue_batch(&tick));
        let raw: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/usage-reporter/batch.json")).unwrap_or_default();
        assert!(is_queue_batch(&raw));
        let event: SqsEvent = serde_json::from_value(raw).unwrap_or_default();
        let body = event.records.first().and_then(|r| r.body.as_deref()).unwrap_or_default();
        let batch: Batch = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(batch.entries.len(), 1);
        assert_eq!(batch.entries[0].id, "led_01jdzz0000000000000000000f");
        assert_eq!(batch.entries[0].tenant_id, batch.tenant_id);
    }

    #[test]
    fn the_claim_time_comes_from_the_environment_when_it_is_a_positive_number() {
        assert_eq!(claim_secs(|_| None), CLAIM_SECS);
        assert_eq!(claim_secs(|_| Some("5".into())), 5);
        assert_eq!(claim_secs(|_| Some("0".into())), CLAIM_SECS);
        assert_eq!(claim_secs(|_| Some("soon".into())), CLAIM_SECS);
    }
}
