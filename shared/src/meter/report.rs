//! Usage to Stripe meters, the ledger side. A ledger entry of a usage-billed plan is written with a report
//! state (`report = pending`) and the keys of the sparse index `gsi2` (`rpk` = one of [`REPORT_SHARDS`]
//! shards, `rdue` = when it is next due, Unix seconds). The usage reporter finds due entries through that index
//! (no scan), claims them by moving `rdue` ahead, sends them to Stripe with the entry's id as the meter event's
//! `identifier`, and finishes them (`reported`, `failed`, `expired` or `unbillable`), which takes them out of
//! the index. An entry whose report fails for a passing reason stays pending and comes due again.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use serde::{Deserialize, Serialize};

use super::Period;
use super::store::MeterStore;
use crate::dynamo::{Item, conditional_failed, get_s, query_all, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::tenancy::StoreError;

/// The report index is spread over this many partitions (`report#0` .. `report#7`).
pub const REPORT_SHARDS: u32 = 8;
/// Stripe takes meter events at most 35 days old.
pub const STRIPE_WINDOW_SECS: i64 = 35 * 86_400;

/// Where a ledger entry stands with Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// Not yet accepted by Stripe; due again at `rdue`.
    Pending,
    /// Stripe accepted it (or had it already, by identifier).
    Reported,
    /// Stripe refused it for good (its message is kept in `report_error`).
    Failed,
    /// It could not be sent within Stripe's 35 days.
    Expired,
    /// Nobody to bill: the user has no Stripe customer.
    Unbillable,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Reported => "reported",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Unbillable => "unbillable",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Reported, Self::Failed, Self::Expired, Self::Unbillable]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// What a new ledger entry is reported to Stripe as.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportAs {
    /// The Stripe meter's `event_name`.
    pub event_name: String,
    /// `payload[value]`: a decimal number as text.
    pub value: String,
}

/// A meter event value as Stripe wants it: whole numbers without a fraction.
pub fn value_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// The index shard of an entry: spread by the last character of its (random) id.
fn shard_of(id: &str) -> u32 {
    id.bytes().last().map_or(0, |b| u32::from(b) % REPORT_SHARDS)
}

/// Adds the report state and index keys to a new ledger entry's item.
pub(super) fn with_report(
    put: aws_sdk_dynamodb::types::builders::PutBuilder,
    id: &str,
    report: Option<&ReportAs>,
    at_unix: i64,
) -> aws_sdk_dynamodb::types::builders::PutBuilder {
    let Some(r) = report else { return put };
    put.item("report", s(ReportStatus::Pending.as_str()))
        .item("meter_event", s(&r.event_name))
        .item("report_value", AttributeValue::N(r.value.clone()))
        .item("rpk", s(format!("report#{}", shard_of(id))))
        .item("rdue", AttributeValue::N(at_unix.to_string()))
}

/// One ledger entry due for Stripe: everything the reporter needs to send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingReport {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The entry's sort key, `ledger#<period>#<id>`.
    pub sk: String,
    /// The entry id: the meter event's `identifier`.
    pub id: String,
    pub event_name: String,
    pub value: String,
    /// When the usage happened, Unix seconds (the meter event's `timestamp`).
    pub timestamp: i64,
    /// `rdue` as read; a claim succeeds only if it is unchanged.
    #[serde(default)]
    pub due: i64,
}

fn num(item: &Item, key: &str) -> Option<i64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<f64>().ok()).map(|v| v as i64)
}

impl PendingReport {
    fn of(item: &Item) -> Option<Self> {
        let (tenant, user) = get_s(item, "pk")?.split_once('#')?;
        let created = get_s(item, "created_at").and_then(crate::time::parse)?;
        Some(Self {
            tenant_id: TenantId::parse(tenant).ok()?,
            user_id: UserId::parse(user).ok()?,
            sk: get_s(item, "sk")?.to_owned(),
            id: get_s(item, "id")?.to_owned(),
            event_name: get_s(item, "meter_event")?.to_owned(),
            value: item.get("report_value").and_then(|v| v.as_n().ok())?.clone(),
            timestamp: created.unix_timestamp(),
            due: num(item, "rdue")?,
        })
    }

    fn pk(&self) -> String {
        format!("{}#{}", self.tenant_id, self.user_id)
    }
}

impl MeterStore {
    /// An UpdateItem of one ledger entry.
    fn update_entry(
        &self,
        r: &PendingReport,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client().update_item().table_name(self.table()).key("pk", s(r.pk())).key("sk", s(&r.sk))
    }

    /// Entries of one index shard due at `now`, oldest due first; at most `limit`.
    pub async fn due_reports(&self, shard: u32, now: i64, limit: i32) -> Result<Vec<PendingReport>, StoreError> {
        let out = self
            .client()
            .query()
            .table_name(self.table())
            .index_name("gsi2")
            .key_condition_expression("rpk = :p AND rdue <= :now")
            .expression_attribute_values(":p", s(format!("report#{shard}")))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .limit(limit)
            .send()
            .await
            .map_err(unavailable("reading due usage reports"))?;
        let items = out.items.unwrap_or_default();
        let due: Vec<_> = items.iter().filter_map(PendingReport::of).collect();
        if due.len() < items.len() {
            tracing::warn!(shard, skipped = items.len() - due.len(), "unreadable pending report entries");
        }
        Ok(due)
    }

    /// Moves a pending entry's next due time to `until`, if no one else did since it was read.
    pub async fn claim_report(&self, r: &PendingReport, until: i64) -> Result<bool, StoreError> {
        let out = self
            .update_entry(r)
            .update_expression("SET rdue = :until")
            .condition_expression("rdue = :due")
            .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
            .expression_attribute_values(":due", AttributeValue::N(r.due.to_string()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if conditional_failed(&e) => Ok(false),
            Err(e) => Err(unavailable("claiming a usage report")(e)),
        }
    }

    /// Of `entries` (one tenant's), the sort keys still pending, read consistently.
    pub async fn still_pending(
        &self,
        tenant: &TenantId,
        entries: &[PendingReport],
    ) -> Result<HashSet<String>, StoreError> {
        let mut pending = HashSet::new();
        for chunk in entries.chunks(100) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .filter(|e| &e.tenant_id == tenant)
                .map(|e| HashMap::from([("pk".to_owned(), s(e.pk())), ("sk".to_owned(), s(&e.sk))]))
                .collect();
            let mut tries = 0;
            while !keys.is_empty() {
                tries += 1;
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys.clone()))
                    .projection_expression("sk, #r")
                    .expression_attribute_names("#r", "report")
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Unavailable(e.into()))?;
                let out = self
                    .client()
                    .batch_get_item()
                    .request_items(self.table(), request)
                    .send()
                    .await
                    .map_err(unavailable("reading usage report states"))?;
                for item in out.responses.and_then(|mut r| r.remove(self.table())).unwrap_or_default() {
                    if get_s(&item, "report") == Some(ReportStatus::Pending.as_str())
                        && let Some(sk) = get_s(&item, "sk")
                    {
                        pending.insert(sk.to_owned());
                    }
                }
                keys =
                    out.unprocessed_keys.and_then(|mut u| u.remove(self.table())).map(|k| k.keys).unwrap_or_default();
                if tries > 5 && !keys.is_empty() {
                    return Err(StoreError::Unavailable(anyhow::anyhow!("DynamoDB kept keys unprocessed")));
                }
            }
        }
        Ok(pending)
    }

    /// Records how an entry's report ended and takes it out of the index.
    pub async fn finish_report(
        &self,
        r: &PendingReport,
        status: ReportStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .update_entry(r)
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":st", s(status.as_str()))
            .expression_attribute_values(":at", s(crate::time::now_rfc3339()));
        update = match error {
            Some(message) => update
                .update_expression("SET #r = :st, report_at = :at, report_error = :e REMOVE rpk, rdue")
                .expression_attribute_values(":e", s(message)),
            None => update.update_expression("SET #r = :st, report_at = :at REMOVE rpk, rdue, report_error"),
        };
        match update.expression_attribute_names("#r", "report").send().await {
            Ok(_) => Ok(()),
            // The entry is gone (the user was deleted): nothing to record.
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(unavailable("recording a usage report")(e)),
        }
    }

    /// Keeps an entry pending until `until` (a passing failure), with the reason.
    pub async fn defer_report(&self, r: &PendingReport, until: i64, reason: &str) -> Result<(), StoreError> {
        let out = self
            .update_entry(r)
            .condition_expression("attribute_exists(rpk)")
            .update_expression("SET rdue = :until, report_error = :e")
            .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
            .expression_attribute_values(":e", s(reason))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(unavailable("deferring a usage report")(e)),
        }
    }

    /// The users with a usage item in the period (from the month index), sorted.
    pub async fn period_users(&self, tenant: &TenantId, period: Period) -> Result<Vec<UserId>, StoreError> {
        let query = self
            .client()
            .query()
            .table_name(self.table())
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :g")
            .expression_attribute_values(":g", s(format!("{tenant}#{period}")))
            .projection_expression("gsi1sk");
        let items = query_all(query, "listing a month's users").await?;
        let mut users: Vec<UserId> =
            items.iter().filter_map(|i| get_s(i, "gsi1sk")).filter_map(|u| UserId::parse(u).ok()).collect();
        users.sort();
        users.dedup();
        Ok(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_whole_numbers_when_they_can_be() {
        assert_eq!(value_text(1234.0), "1234");
        assert_eq!(value_text(0.0), "0");
        assert_eq!(value_text(2.5), "2.5");
    }

    #[test]
    fn shards_stay_in_range_and_statuses_round_trip() {
        for id in ["led_01jz", "led_01jzzzzz", ""] {
            assert!(shard_of(id) < REPORT_SHARDS);
        }
        for st in [ReportStatus::Pending, ReportStatus::Reported, ReportStatus::Failed, ReportStatus::Expired] {
            assert_eq!(ReportStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(ReportStatus::parse("unknown"), None);
    }
}
