//! sync-worker: takes sync jobs from SQS and brings one user's data from one provider into the normalized
//! model. One job per connection at a time (a lease), tokens refreshed by exactly one job (compare and
//! swap on the token version, single-use refresh tokens), 429 sends the job back until the provider's reset
//! (ChangeMessageVisibility, never a sleep), 401 or `invalid_grant` marks the connection for
//! reauthorization, other faults retry through the queue and end in its dead-letter queue.
//!
//! Today it syncs Oura's daily activity; the other providers' data arrives with the rest of the sync issue.

use std::sync::Arc;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use secrecy::ExposeSecret;
use shared::connect::{ConnectStore, Connection, ConnectionStatus, Lease, TokenSet, token_context};
use shared::oauth::{self, ExchangeError};
use shared::providers::{Overrides, ProviderId};
use shared::sync::{DailySummary, DataStore, SyncJob, SyncQueue, can_sync};
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
}

/// How a job ended, when it did not succeed.
#[derive(Debug)]
enum Failure {
    /// Try again after this many seconds (rate limit, busy lease, provider 5xx, timeout).
    Retry { after: i32, why: String },
    /// The user must reconnect; the job is done.
    Reauthorize(String),
    /// Nothing to retry (no such connection, a malformed message).
    Drop(String),
}

const LEASE_SECONDS: i64 = 120;

impl Worker {
    /// The Lambda entry: each message is a job; failed ones are reported for retry (partial batch).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let mut response = SqsBatchResponse::default();
        let results = futures::future::join_all(event.records.iter().map(|m| self.one(m))).await;
        for (message, retry) in event.records.iter().zip(results) {
            if retry && let Some(id) = &message.message_id {
                response.add_failure(id.clone());
            }
        }
        response
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
                tracing::info!(job_id = %job.job_id, after, why = %why, "sync job will be retried");
                if let Some(handle) = &message.receipt_handle
                    && let Err(e) = self.queue.retry_after(handle, after).await
                {
                    tracing::warn!(error = ?e, "could not delay the retry; the queue's visibility timeout applies");
                }
                true
            }
        }
    }

    #[instrument(skip_all, fields(job_id = %job.job_id, tenant_id = %job.tenant_id, user_id = %job.user_id, provider = %job.provider))]
    async fn run(&self, job: &SyncJob) -> Result<(), Failure> {
        let unavailable = |e: &dyn std::fmt::Display| Failure::Retry { after: 30, why: e.to_string() };
        let tenancy = self.stores.tenant(&job.tenant_id).await.map_err(|e| unavailable(&e))?;
        let store = tenancy.connect_store();
        let until = shared::time::format(shared::time::now() + time::Duration::seconds(LEASE_SECONDS));
        match store.acquire_lease(&job.tenant_id, &job.user_id, job.provider, &job.job_id, job.days, &until).await {
            Ok(Lease::Acquired) => {}
            Ok(Lease::Gone) => return Err(Failure::Drop("the connection is gone".into())),
            // The running job covers this one: fifty "Sync now" clicks are one sync.
            Ok(Lease::Held { days }) if days >= job.days => {
                return Err(Failure::Drop("coalesced into the sync already running".into()));
            }
            Ok(Lease::Held { .. }) => {
                return Err(Failure::Retry { after: 10, why: "a shorter sync of this connection is running".into() });
            }
            Err(e) => return Err(unavailable(&e)),
        }
        let outcome = self.sync(&store, &tenancy.data_store(&self.data_table), job).await;
        let status = match &outcome {
            Ok(()) => Ok(()),
            Err(Failure::Reauthorize(why)) => Err((ConnectionStatus::NeedsReauthorization, why.clone())),
            // Still on its way: the job comes back, so the connection stays "syncing", with the reason.
            Err(Failure::Retry { why, .. }) => Err((ConnectionStatus::Syncing, why.clone())),
            Err(Failure::Drop(why)) => Err((ConnectionStatus::Error, why.clone())),
        };
        if let Err(e) = store.finish_sync(&job.tenant_id, &job.user_id, job.provider, &job.job_id, status).await {
            tracing::warn!(error = ?e, "could not record the sync's outcome");
        }
        outcome
    }

    async fn sync(&self, store: &ConnectStore, data: &DataStore, job: &SyncJob) -> Result<(), Failure> {
        if !can_sync(job.provider) {
            return Err(Failure::Drop(format!("syncing {} is not available yet", job.provider)));
        }
        let conn = store
            .connection(&job.tenant_id, &job.user_id, job.provider)
            .await
            .map_err(|e| Failure::Retry { after: 30, why: e.to_string() })?
            .ok_or_else(|| Failure::Drop("the connection is gone".into()))?;
        let tokens = self.fresh_tokens(store, job, &conn).await?;
        let days = self.fetch_oura_daily(&tokens, job).await?;
        for day in &days {
            data.put_daily(&job.tenant_id, &job.user_id, day)
                .await
                .map_err(|e| Failure::Retry { after: 30, why: e.to_string() })?;
        }
        tracing::info!(days = days.len(), "sync done");
        Ok(())
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
                Err(Failure::Retry { after: 5, why: "tokens changed under this job; it will re-read them".into() })
            }
            Err(e) => Err(Failure::Retry { after: 30, why: e.to_string() }),
        }
    }

    /// Oura daily activity for the job's days, mapped to daily summaries.
    async fn fetch_oura_daily(&self, tokens: &TokenSet, job: &SyncJob) -> Result<Vec<DailySummary>, Failure> {
        let today = time::OffsetDateTime::now_utc().date();
        let start = today - time::Duration::days(i64::from(job.days.clamp(1, 365)));
        let url = self.providers.url(ProviderId::Oura, "https://api.ouraring.com/v2/usercollection/daily_activity");
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut query = vec![("start_date", start.to_string()), ("end_date", today.to_string())];
            if let Some(token) = &next {
                query.push(("next_token", token.clone()));
            }
            let response = self
                .http
                .get(&url)
                .bearer_auth(&tokens.access_token)
                .query(&query)
                .timeout(std::time::Duration::from_secs(20))
                .send()
                .await
                .map_err(|e| Failure::Retry { after: 60, why: format!("Oura unreachable: {}", e.without_url()) })?;
            let status = response.status().as_u16();
            if status == 429 {
                let after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60);
                return Err(Failure::Retry { after, why: "Oura rate limit".into() });
            }
            if status == 401 {
                return Err(Failure::Reauthorize("Oura refused the access token (401)".into()));
            }
            if status >= 500 {
                return Err(Failure::Retry { after: 60, why: format!("Oura answered {status}") });
            }
            let body: serde_json::Value = response
                .json()
                .await
                .map_err(|_| Failure::Retry { after: 60, why: "Oura sent unreadable JSON".into() })?;
            let synced_at = shared::time::now_rfc3339();
            for d in body["data"].as_array().into_iter().flatten() {
                let Some(day) = d["day"].as_str() else { continue };
                out.push(DailySummary {
                    day: day.to_owned(),
                    source: ProviderId::Oura,
                    steps: d["steps"].as_i64(),
                    active_energy_kcal: d["active_calories"].as_f64(),
                    total_energy_kcal: d["total_calories"].as_f64(),
                    distance_m: d["equivalent_walking_distance"].as_f64(),
                    activity_score: d["score"].as_i64(),
                    synced_at: synced_at.clone(),
                });
            }
            next = body["next_token"].as_str().map(str::to_owned);
            if next.is_none() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
