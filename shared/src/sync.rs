//! Sync jobs and the normalized data they write. A job is one SQS message: sync `days` of one user's data
//! from one provider. Daily summaries are stored per (user, local date, source), so a redelivered job
//! rewrites the same items and changes nothing.

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::ids::{TenantId, UserId};
use crate::providers::ProviderId;
use crate::tenancy::StoreError;

/// Which providers' data can be synced so far (the others connect, and sync when their readers land).
pub fn can_sync(p: ProviderId) -> bool {
    p == ProviderId::Oura
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncJob {
    pub job_id: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub provider: ProviderId,
    /// How many days back from today to sync.
    pub days: u32,
}

impl SyncJob {
    pub fn new(tenant_id: TenantId, user_id: UserId, provider: ProviderId, days: u32) -> Self {
        Self {
            job_id: format!("job_{}", ulid::Ulid::new().to_string().to_lowercase()),
            tenant_id,
            user_id,
            provider,
            days,
        }
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

/// One day of one user from one source, in the normalized model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DailySummary {
    /// The user's local calendar date, `YYYY-MM-DD`.
    pub day: String,
    pub source: ProviderId,
    pub steps: Option<i64>,
    pub active_energy_kcal: Option<f64>,
    pub total_energy_kcal: Option<f64>,
    pub distance_m: Option<f64>,
    pub activity_score: Option<i64>,
    pub synced_at: String,
}

/// The data table (`DATA_TABLE`): pk `<tenant>#<user>`, sk `daily#<day>#<source>`.
#[derive(Clone, Debug)]
pub struct DataStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn pk(tenant: &TenantId, user: &UserId) -> String {
    format!("{tenant}#{user}")
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn num<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, k: &str) -> Option<T> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

impl DataStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Writes (or rewrites) one day from one source: idempotent.
    pub async fn put_daily(&self, tenant: &TenantId, user: &UserId, d: &DailySummary) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(pk(tenant, user)))
            .item("sk", AttributeValue::S(format!("daily#{}#{}", d.day, d.source)))
            .item("day", AttributeValue::S(d.day.clone()))
            .item("source", AttributeValue::S(d.source.to_string()))
            .item("synced_at", AttributeValue::S(d.synced_at.clone()));
        let fields = [
            ("steps", d.steps.map(n)),
            ("active_energy_kcal", d.active_energy_kcal.map(n)),
            ("total_energy_kcal", d.total_energy_kcal.map(n)),
            ("distance_m", d.distance_m.map(n)),
            ("activity_score", d.activity_score.map(n)),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                req = req.item(k, v);
            }
        }
        req.send()
            .await
            .map_err(|e| StoreError::Unavailable(anyhow::Error::new(e).context("writing a daily summary")))?;
        Ok(())
    }

    /// Days `from..=to` (inclusive, `YYYY-MM-DD`) of every source, in date order.
    pub async fn daily(
        &self,
        tenant: &TenantId,
        user: &UserId,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailySummary>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :a AND :b")
                .expression_attribute_values(":pk", AttributeValue::S(pk(tenant, user)))
                .expression_attribute_values(":a", AttributeValue::S(format!("daily#{from}")))
                .expression_attribute_values(":b", AttributeValue::S(format!("daily#{to}#~")))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(anyhow::Error::new(e).context("reading daily summaries")))?;
            for item in page.items() {
                let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                let (Some(day), Some(source)) = (s("day"), s("source")) else { continue };
                let Ok(source) = ProviderId::parse(&source) else { continue };
                out.push(DailySummary {
                    day,
                    source,
                    steps: num(item, "steps"),
                    active_energy_kcal: num(item, "active_energy_kcal"),
                    total_energy_kcal: num(item, "total_energy_kcal"),
                    distance_m: num(item, "distance_m"),
                    activity_score: num(item, "activity_score"),
                    synced_at: s("synced_at").unwrap_or_default(),
                });
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(out);
            }
        }
    }
}
