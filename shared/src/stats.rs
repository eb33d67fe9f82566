//! Per-tenant daily activity counters for the tenant's admin view: one item a day in the tenant's partition
//! of the tenancy table (`stats#<YYYY-MM-DD>`), moved with `ADD` (no read), summed over a few days when read.
//! Counts only, never who.

use std::collections::BTreeMap;
use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use time::OffsetDateTime;

use crate::dynamo::s;
use crate::ids::TenantId;
use crate::tenancy::StoreError;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A sync or backfill job that finished.
    SyncOk,
    /// A sync attempt that will be retried (a provider's 429 or 5xx, a timeout).
    SyncRetried,
    /// A sync that ended in an error or needs the user to reconnect.
    SyncFailed,
}

impl Counter {
    pub fn attribute(self) -> &'static str {
        match self {
            Self::SyncOk => "sync_ok",
            Self::SyncRetried => "sync_retried",
            Self::SyncFailed => "sync_failed",
        }
    }

    pub const ALL: [Counter; 3] = [Self::SyncOk, Self::SyncRetried, Self::SyncFailed];
}

fn day_sk(day: time::Date) -> String {
    format!("stats#{}", crate::time::format_day(day))
}

#[derive(Clone)]
pub struct StatsStore {
    client: Client,
    table: String,
}

impl StatsStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Adds one to a counter of today (UTC). Best effort: a lost count is logged, never an error.
    pub async fn count(&self, tenant: &TenantId, counter: Counter) {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(day_sk(crate::time::now().date())))
            .update_expression("ADD #c :one")
            .expression_attribute_names("#c", counter.attribute())
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await;
        if let Err(e) = out {
            tracing::warn!(tenant_id = %tenant, counter = counter.attribute(), error = ?e, "could not count");
        }
    }

    /// Each counter summed over the `days` days up to and including `today`.
    pub async fn sum(
        &self,
        tenant: &TenantId,
        today: OffsetDateTime,
        days: u32,
    ) -> Result<BTreeMap<&'static str, u64>, StoreError> {
        let keys: Vec<HashMap<String, AttributeValue>> = (0..days.clamp(1, 100))
            .map(|back| {
                let day = today.date() - time::Duration::days(i64::from(back));
                HashMap::from([("pk".to_owned(), s(tenant.as_str())), ("sk".to_owned(), s(day_sk(day)))])
            })
            .collect();
        let mut totals: BTreeMap<&'static str, u64> = Counter::ALL.iter().map(|c| (c.attribute(), 0)).collect();
        for chunk in keys.chunks(100) {
            let mut pending = chunk.to_vec();
            for _ in 0..5 {
                if pending.is_empty() {
                    break;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(pending.clone()))
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.into()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(crate::dynamo::unavailable("reading activity counters"))?;
                for item in out.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    for c in Counter::ALL {
                        let v = item.get(c.attribute()).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
                        *totals.entry(c.attribute()).or_default() += v.unwrap_or(0u64);
                    }
                }
                pending =
                    out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).map(|k| k.keys).unwrap_or_default();
            }
        }
        Ok(totals)
    }
}
