//! sync-worker: takes sync jobs from SQS and brings one user's data from one provider into the normalized
//! model. One job per connection at a time (a lease), tokens refreshed by exactly one job (compare and
//! swap on the token version, single-use refresh tokens), 429 sends the job back until the provider's reset
//! (ChangeMessageVisibility, never a sleep), 401 or `invalid_grant` marks the connection for
//! reauthorization, other faults retry through the queue and end in its dead-letter queue.
//!
//! A backfill is a chain of jobs, one chunk of days each, newest first: a chunk's job queues the next chunk,
//! then records its checkpoint on the connection, so the connection shows its progress and a duplicate or
//! stale chunk job finds itself covered and stops.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use secrecy::ExposeSecret;
use shared::connect::{ConnectStore, Connection, ConnectionStatus, Lease, TokenSet, token_context};
use shared::datastore::DataStore;
use shared::events::{Event, Events};
use shared::oauth::{self, ExchangeError};
use shared::providers::Overrides;
use shared::readers::{self, FetchCtx, FetchError};
use shared::stats::Counter;
use shared::sync::{SyncJob, SyncQueue, can_sync};
use shared::tenancy::Stores;
use shared::vault::{SecretContext, Vault};
use tracing::instrument;

pub struct Worker {
    pub stores: Stores,
    pub vault: Arc<Vault>,
    pub http: reqwest::Client,
    pub providers: Overrides,
    pub queue: SyncQueue,
    pub data_table: String,
    /// The tenant's webhooks out: `data.updated`, `backfill.completed`, `connection.error`.
    pub events: Events,
}

/// How a job ended, when it did not succeed.
#[derive(Debug)]
enum Failure {
    /// Try again after this many seconds, backing off with each delivery (provider 5xx, timeout, AWS).
    Retry { after: i32, why: String },
    /// Try again after exactly this many seconds (a rate limit's reset, a busy lease).
    Wait { after: i32, why: String },
    /// The user must reconnect; the job is done.
    Reauthorize(String),
    /// Nothing to retry (no such connection, a malformed message).
    Drop(String),
}

const LEASE_SECONDS: i64 = 120;

/// How many times SQS has handed this message out (1 on the first delivery).
fn receive_count(message: &SqsMessage) -> u32 {
    message.attributes.get("ApproximateReceiveCount").and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// The wait before the next attempt: what the failure asked for, doubled with each earlier delivery (a
/// provider that keeps failing is asked less and less often), at most 15 minutes; after the queue's
/// `maxReceiveCount` deliveries the message goes to the dead-letter queue. A rate limit's reset is already
/// exact, so it is the floor, never shortened.
fn backoff(after: i32, receives: u32) -> i32 {
    let doubled = i64::from(after.max(1)) << receives.saturating_sub(1).min(10);
    i32::try_from(doubled.min(900)).unwrap_or(900).max(after)
}

/// The metric a sync's outcome counts in (docs/deploy.md, "Metrics").
fn outcome_metric(outcome: &Result<(), Failure>) -> &'static str {
    match outcome {
        Ok(()) => "SyncJobsDone",
        Err(Failure::Retry { .. } | Failure::Wait { .. }) => "SyncJobsRetried",
        Err(Failure::Reauthorize(_) | Failure::Drop(_)) => "SyncJobsFailed",
    }
}

impl Worker {
    /// The Lambda entry: each message is a job; failed ones are reported for retry (partial batch).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        shared::batch::partial(&event, |m| self.one(m)).await
    }

    /// Runs one message; true when it must come back.
    async fn one(&self, message: &SqsMessage) -> bool {
        let job: SyncJob = match message.body.as_deref().map(serde_json::from_str) {
            Some(Ok(job)) => job,
            _ => {
                tracing::error!(message_id = ?message.message_id, "not a sync job; dropped");
                return false;
            }
        };
        shared::telemetry::record_tenant(&job.tenant_id);
        match self.run(&job).await {
            Ok(()) => false,
            Err(Failure::Drop(why)) => {
                tracing::warn!(job_id = %job.job_id, why = %why, "sync job dropped");
                false
            }
            Err(Failure::Reauthorize(why)) => {
                tracing::warn!(job_id = %job.job_id, tenant_id = %job.tenant_id, provider = %job.provider, why = %why, "connection needs reauthorization");
                false
            }
            Err(Failure::Retry { after, why }) => {
                self.come_back(message, job, backoff(after, receive_count(message)), &why).await
            }
            Err(Failure::Wait { after, why }) => self.come_back(message, job, after, &why).await,
        }
    }

    /// Sends the message back to the queue for `after` seconds (ChangeMessageVisibility, never a sleep);
    /// true, so the batch reports it failed and SQS keeps it.
    async fn come_back(&self, message: &SqsMessage, job: SyncJob, after: i32, why: &str) -> bool {
        tracing::info!(job_id = %job.job_id, after, why = %why, "sync job will be retried");
        if let Some(handle) = &message.receipt_handle
            && let Err(e) = self.queue.retry_after(handle, after).await
        {
            tracing::warn!(error = ?e, "could not delay the retry; the queue's visibility timeout applies");
        }
        true
    }

    #[instrument(skip_all, fields(job_id = %job.job_id, tenant_id = %job.tenant_id, user_id = %job.user_id, provider = %job.provider))]
    async fn run(&self, job: &SyncJob) -> Result<(), Failure> {
        let unavailable = |e: &dyn std::fmt::Display| Failure::Retry { after: 30, why: e.to_string() };
        let tenancy = self.stores.tenant(&job.tenant_id).await.map_err(|e| unavailable(&e))?;
        // A deleted user (waiting for its purge) is not synced; the purge removes the connection.
        match tenancy.get_user(&job.tenant_id, &job.user_id).await {
            Ok(_) => {}
            Err(shared::tenancy::StoreError::NotFound) => {
                tracing::info!("the user is deleted or gone; job dropped");
                return Ok(());
            }
            Err(e) => return Err(unavailable(&e)),
        }
        let store = tenancy.connect_store();
        let until = shared::time::format(shared::time::now() + time::Duration::seconds(LEASE_SECONDS));
        // A backfill chunk reads old days: nothing is coalesced into it (it leases zero recent days).
        let recent_days = if job.backfill.is_some() { 0 } else { job.days };
        match store.acquire_lease(&job.tenant_id, &job.user_id, job.provider, &job.job_id, recent_days, &until).await {
            Ok(Lease::Acquired) => {}
            Ok(Lease::Gone) => return Err(Failure::Drop("the connection is gone".into())),
            // The running job covers this one: fifty "Sync now" clicks are one sync.
            Ok(Lease::Held { days }) if job.backfill.is_none() && days >= job.days => {
                return Err(Failure::Drop("coalesced into the sync already running".into()));
            }
            Ok(Lease::Held { .. }) => {
                return Err(Failure::Wait { after: 10, why: "another sync of this connection is running".into() });
            }
            Err(e) => return Err(unavailable(&e)),
        }
        let outcome = self.sync(&store, &tenancy.data_store(&self.data_table), job).await;
        let status = match &outcome {
            Ok(()) => Ok(()),
            Err(Failure::Reauthorize(why)) => Err((ConnectionStatus::NeedsReauthorization, why.clone())),
            // Still on its way: the job comes back, so the connection stays "syncing", with the reason.
            Err(Failure::Retry { why, .. } | Failure::Wait { why, .. }) => {
                Err((ConnectionStatus::Syncing, why.clone()))
            }
            Err(Failure::Drop(why)) => Err((ConnectionStatus::Error, why.clone())),
        };
        if let Err((ConnectionStatus::NeedsReauthorization | ConnectionStatus::Error, why)) = &status {
            let state = if matches!(outcome, Err(Failure::Reauthorize(_))) { "needs_reauthorization" } else { "error" };
            self.emit(Event::connection_error(&job.tenant_id, &job.user_id, job.provider, state, why)).await;
        }
        if let Err(e) = store.finish_sync(&job.tenant_id, &job.user_id, job.provider, &job.job_id, status).await {
            tracing::warn!(error = ?e, "could not record the sync's outcome");
        }
        // The tenant's admin view counts attempts (a wait for another sync's lease is none).
        let counter = match &outcome {
            Ok(()) => Some(Counter::SyncOk),
            Err(Failure::Retry { .. }) => Some(Counter::SyncRetried),
            Err(Failure::Wait { .. }) => None,
            Err(Failure::Drop(_) | Failure::Reauthorize(_)) => Some(Counter::SyncFailed),
        };
        if let Some(c) = counter {
            tenancy.stats_store().count(&job.tenant_id, c).await;
        }
        shared::metrics::count(outcome_metric(&outcome), job.tenant_id.as_str(), 1);
        outcome
    }

    async fn sync(&self, store: &ConnectStore, data: &DataStore, job: &SyncJob) -> Result<(), Failure> {
        let retry = |e: &dyn std::fmt::Display| Failure::Retry { after: 30, why: e.to_string() };
        if !can_sync(job.provider) {
            return Err(Failure::Drop(format!("syncing {} is not available yet", job.provider)));
        }
        let conn = store
            .connection(&job.tenant_id, &job.user_id, job.provider)
            .await
            .map_err(|e| retry(&e))?
            .ok_or_else(|| Failure::Drop("the connection is gone".into()))?;
        if let Some(chunk) = &job.backfill
            && conn.backfill.as_ref().is_none_or(|b| b.covers(chunk))
        {
            tracing::info!(start = %chunk.start, "backfill chunk already in (a duplicate or an earlier backfill's)");
            return Ok(());
        }
        let tokens = self.fresh_tokens(store, job, &conn).await?;
        let ctx = FetchCtx {
            http: &self.http,
            providers: &self.providers,
            access_token: &tokens.access_token,
            provider_user_id: conn.provider_user_id.as_deref(),
        };
        let window = job.window(time::OffsetDateTime::now_utc().date());
        let batch = readers::fetch(job.provider, &ctx, window).await.map_err(|e| match e {
            FetchError::RateLimited { retry_after, .. } => Failure::Wait { after: retry_after, why: e.to_string() },
            FetchError::Unauthorized(why) => Failure::Reauthorize(why),
            FetchError::Unavailable(why) => Failure::Retry { after: 60, why },
        })?;
        let stored = data.put_batch(&job.tenant_id, &job.user_id, &batch).await.map_err(|e| retry(&e))?;
        let written = stored.items;
        // Only what changed is news: an hourly sync that finds the same data tells the tenant nothing.
        if !stored.changed.is_empty() {
            let (metrics, dates) = stored.changed.touched();
            let metrics: Vec<&str> = metrics.iter().map(String::as_str).collect();
            let dates: Vec<String> = dates.into_iter().map(shared::time::format_day).collect();
            self.emit(Event::data_updated(&job.tenant_id, &job.user_id, job.provider, &metrics, &dates)).await;
        }
        if let (Some(chunk), Some(progress)) = (&job.backfill, &conn.backfill) {
            // Next chunk first, checkpoint second: a crash in between repeats a chunk, never skips one.
            let next = job.continuation();
            if let Some(next) = &next {
                self.queue.send(next).await.map_err(|e| Failure::Retry { after: 30, why: format!("{e:#}") })?;
            }
            let moved = store.checkpoint_backfill(job, chunk, progress, written).await.map_err(|e| retry(&e))?;
            tracing::info!(start = %chunk.start, end = %chunk.end, moved, "backfill chunk done");
            if moved && next.is_none() {
                let days = u32::try_from(progress.days_total).unwrap_or(0);
                let items = u64::try_from(progress.items).unwrap_or(0) + written as u64;
                let event = Event::backfill_completed(&job.tenant_id, &job.user_id, job.provider, days, items);
                self.emit(event).await;
            }
        }
        tracing::info!(start = %window.start, end = %window.end, items = written, "sync done");
        Ok(())
    }

    /// Queues an event for the tenant's webhooks; a failure is logged, never the sync's.
    async fn emit(&self, event: Event) {
        if let Err(e) = self.events.emit(&event).await {
            tracing::error!(event_id = %event.id, error = ?e, "could not queue an event");
        }
    }

    fn context(job: &SyncJob) -> SecretContext {
        token_context(&job.tenant_id, &job.user_id, job.provider)
    }

    async fn open_tokens(&self, job: &SyncJob, conn: &Connection) -> Result<TokenSet, Failure> {
        let bytes = self
            .vault
            .open(&Self::context(job), &conn.tokens_sealed)
            .await
            .map_err(|e| Failure::Retry { after: 30, why: format!("vault: {e}") })?;
        serde_json::from_slice(bytes.expose_secret())
            .map_err(|_| Failure::Reauthorize("stored tokens are unreadable".into()))
    }

    /// The access token, refreshed first when it expires within a minute. Exactly one refresh per token
    /// version: the new tokens are stored with a compare-and-swap on the version read; a job that loses the
    /// swap has spent nothing (single-use refresh tokens are spent only by the winner, who holds the lease).
    async fn fresh_tokens(&self, store: &ConnectStore, job: &SyncJob, conn: &Connection) -> Result<TokenSet, Failure> {
        let tokens = self.open_tokens(job, conn).await?;
        let soon = shared::time::now().unix_timestamp() + 60;
        if tokens.expires_at.is_none_or(|at| at > soon) {
            return Ok(tokens);
        }
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            return Err(Failure::Reauthorize("the access token expired and the provider gave no refresh token".into()));
        };
        let creds = store
            .open_app(&self.vault, &job.tenant_id, job.provider)
            .await
            .map_err(|e| Failure::Retry { after: 30, why: format!("{e:#}") })?
            .ok_or_else(|| Failure::Drop("the provider app is no longer configured".into()))?;
        let refreshed = oauth::refresh(&self.http, job.provider.provider(), &self.providers, &creds, refresh_token)
            .await
            .map_err(|e| match e {
                ExchangeError::Refused { code, .. } if code == "invalid_grant" => {
                    Failure::Reauthorize("the provider no longer accepts this connection (invalid_grant)".into())
                }
                ExchangeError::Refused { .. } => Failure::Reauthorize(e.to_string()),
                other => Failure::Retry { after: 60, why: other.to_string() },
            })?;
        let plain =
            serde_json::to_vec(&refreshed.tokens).map_err(|e| Failure::Retry { after: 30, why: e.to_string() })?;
        let sealed = self
            .vault
            .seal(&Self::context(job), &plain)
            .await
            .map_err(|e| Failure::Retry { after: 30, why: format!("vault: {e}") })?;
        match store.replace_tokens(&job.tenant_id, &job.user_id, job.provider, &sealed, conn.token_version).await {
            Ok(true) => {
                tracing::info!("tokens refreshed");
                Ok(refreshed.tokens)
            }
            Ok(false) => {
                Err(Failure::Wait { after: 5, why: "tokens changed under this job; it will re-read them".into() })
            }
            Err(e) => Err(Failure::Retry { after: 30, why: e.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::providers::ProviderId;

    #[test]
    fn the_sample_backfill_event_carries_a_chunk_and_its_redelivery_count() {
        let event: Result<SqsEvent, _> =
            serde_json::from_str(include_str!("../../../events/sync-worker/backfill-chunk.json"));
        let message = event.ok().and_then(|e| e.records.into_iter().next());
        assert_eq!(message.as_ref().map(receive_count), Some(2));
        let job = message.and_then(|m| m.body).and_then(|b| serde_json::from_str::<SyncJob>(&b).ok());
        let chunk = job.and_then(|j| j.backfill);
        assert_eq!(chunk.map(|c| (c.end - c.start).whole_days()), Some(29), "{chunk:?}");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_fifteen_minutes() {
        assert_eq!([1, 2, 3, 4].map(|n| backoff(60, n)), [60, 120, 240, 480]);
        assert_eq!(backoff(60, 9), 900);
        assert_eq!(backoff(3_600, 1), 3_600, "a provider's reset is never shortened");
    }

    #[test]
    fn the_sample_event_carries_a_sync_job() {
        let event: Result<SqsEvent, _> = serde_json::from_str(include_str!("../../../events/sync-worker/job.json"));
        let job = event
            .ok()
            .and_then(|e| e.records.into_iter().next())
            .and_then(|m| m.body)
            .map(|b| serde_json::from_str::<SyncJob>(&b));
        assert!(matches!(job, Some(Ok(SyncJob { provider: ProviderId::Oura, days: 7, .. }))), "{job:?}");
    }
}
