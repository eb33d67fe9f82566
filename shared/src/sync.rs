//! Sync jobs and their queue. A job is one SQS message: sync the last `days` of one user's data from one
//! provider, or one chunk of a backfill. Jobs are idempotent (the data store upserts), so a redelivered
//! message changes nothing.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use time::Date;

use crate::ids::{TenantId, UserId};
use crate::providers::ProviderId;
pub use crate::readers::can_sync;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncJob {
    pub job_id: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub provider: ProviderId,
    /// How many days back from today to sync (today included).
    pub days: u32,
    /// Set on the jobs of a first-connect backfill: which chunk this job reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillChunk>,
}

/// One chunk of a backfill: the local dates `start..=end`, newest chunk first, down to `oldest`. The job of
/// a chunk queues the next older chunk before it records its checkpoint on the connection, so a worker that
/// dies in between leaves a duplicate, never a gap; a duplicate finds the checkpoint past it and stops.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackfillChunk {
    #[serde(with = "crate::time::day")]
    pub start: Date,
    #[serde(with = "crate::time::day")]
    pub end: Date,
    #[serde(with = "crate::time::day")]
    pub oldest: Date,
}

impl BackfillChunk {
    /// The first (newest) chunk of a backfill of `plan.max_days` ending on `today`.
    pub fn first(plan: crate::readers::BackfillPlan, today: Date) -> Self {
        let oldest = today - time::Duration::days(i64::from(plan.max_days.max(1)) - 1);
        Self::ending(today, oldest, plan.chunk_days)
    }

    fn ending(end: Date, oldest: Date, chunk_days: u32) -> Self {
        let start = (end - time::Duration::days(i64::from(chunk_days.max(1)) - 1)).max(oldest);
        Self { start, end, oldest }
    }

    /// The chunk after this one (older), if any is left.
    pub fn next(&self, chunk_days: u32) -> Option<Self> {
        let end = self.start.previous_day()?;
        (end >= self.oldest).then(|| Self::ending(end, self.oldest, chunk_days))
    }
}

impl SyncJob {
    pub fn new(tenant_id: TenantId, user_id: UserId, provider: ProviderId, days: u32) -> Self {
        Self {
            job_id: format!("job_{}", ulid::Ulid::new().to_string().to_lowercase()),
            tenant_id,
            user_id,
            provider,
            days,
            backfill: None,
        }
    }

    /// The first job of a backfill.
    pub fn backfill(tenant_id: TenantId, user_id: UserId, provider: ProviderId, today: Date) -> Self {
        let chunk = BackfillChunk::first(crate::readers::backfill_plan(provider), today);
        Self { backfill: Some(chunk), ..Self::new(tenant_id, user_id, provider, 0) }
    }

    /// The job of the next chunk, or `None` when this was the last.
    pub fn continuation(&self) -> Option<Self> {
        let next = self.backfill?.next(crate::readers::backfill_plan(self.provider).chunk_days)?;
        Some(Self { backfill: Some(next), ..Self::new(self.tenant_id.clone(), self.user_id.clone(), self.provider, 0) })
    }

    /// The local dates this job reads.
    pub fn window(&self, today: Date) -> crate::readers::Window {
        match self.backfill {
            Some(c) => crate::readers::Window { start: c.start, end: c.end },
            None => crate::readers::Window::last_days(self.days, today),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_backfill_walks_back_in_chunks_to_its_oldest_day_without_gaps_or_overlaps() {
        let plan = crate::readers::BackfillPlan { max_days: 70, chunk_days: 30 };
        let first = BackfillChunk::first(plan, date!(2026 - 11 - 29));
        assert_eq!((first.start, first.end), (date!(2026 - 10 - 31), date!(2026 - 11 - 29)));
        let second = first.next(30).unwrap_or(first);
        assert_eq!((second.start, second.end), (date!(2026 - 10 - 01), date!(2026 - 10 - 30)));
        let third = second.next(30).unwrap_or(second);
        assert_eq!((third.start, third.end), (date!(2026 - 09 - 21), date!(2026 - 09 - 30)));
        assert_eq!(third.start, third.oldest);
        assert_eq!(third.next(30), None);
    }

    #[test]
    fn jobs_from_before_backfills_still_read() {
        let old = r#"{"job_id":"job_1","tenant_id":"ten_01jdz9x8y7w6v5t4s3r2q1p0nm","user_id":"usr_01jdz9x8y7w6v5t4s3r2q1p0nm","provider":"oura","days":7}"#;
        let job: Result<SyncJob, _> = serde_json::from_str(old);
        assert!(job.is_ok_and(|j| j.backfill.is_none() && j.days == 7));
    }
}

/// The sync queue (`SYNC_QUEUE_URL`).
#[derive(Clone, Debug)]
pub struct SyncQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SyncQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }

    pub async fn send(&self, job: &SyncJob) -> anyhow::Result<()> {
        self.send_delayed(job, 0).await
    }

    /// Queues a job that becomes visible after `delay_seconds` (at most 900, SQS's limit).
    pub async fn send_delayed(&self, job: &SyncJob, delay_seconds: i32) -> anyhow::Result<()> {
        let body = serde_json::to_string(job)?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_seconds.clamp(0, 900))
            .send()
            .await
            .context("queueing a sync job")?;
        Ok(())
    }

    /// Queues jobs, each with its own delay (at most 900 s), ten to a SendMessageBatch call. Entries SQS
    /// refuses are sent again (three tries); what still fails is an error naming how many.
    pub async fn send_many(&self, jobs: &[(SyncJob, i32)]) -> anyhow::Result<()> {
        let bodies = jobs
            .iter()
            .map(|(job, delay)| Ok((serde_json::to_string(job)?, *delay)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        crate::batch::send_many(&self.client, &self.url, &bodies, "sync jobs").await
    }

    /// Puts a received message back after `seconds` (a provider's rate-limit reset, a busy lease), without
    /// a sleep in the worker.
    pub async fn retry_after(&self, receipt_handle: &str, seconds: i32) -> anyhow::Result<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds.clamp(0, 43_200))
            .send()
            .await
            .context("changing a message's visibility")?;
        Ok(())
    }
}
