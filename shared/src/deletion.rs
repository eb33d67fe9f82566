//! Deleting end users and offboarding tenants: the tenant's deletion settings (the grace period), marking a
//! user deleted (invisible at once) and restoring them, the purge due index, and the key-by-key deletes the
//! purge makes. Every delete goes by an access path (a partition, a key prefix, an index): nothing is scanned.
//!
//! | item | pk | sk | gsi1pk | gsi1sk |
//! |---|---|---|---|---|
//! | deleted user | tenant | `user#<user>` | `purge` | `<purge at>#<tenant>#<user>` |
//! | tenant being offboarded | tenant | `offboard` | `purge` | `<requested at>#<tenant>#tenant` |
//! | deletion settings | tenant | `account_settings` | | |

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, Put, TransactWriteItem, Update, WriteRequest};

use crate::dynamo::{Item, conditional_failed, get_consistent, get_s, query_all, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::tenancy::{Status, StoreError};

/// The grace period when the tenant set none.
pub const DEFAULT_GRACE_DAYS: u32 = 30;
/// The longest grace period a tenant may set.
pub const MAX_GRACE_DAYS: u32 = 365;
/// The due index's partition (gsi1 of the tenancy table).
pub const PURGE_INDEX: &str = "purge";
const SETTINGS_SK: &str = "account_settings";
const OFFBOARD_SK: &str = "offboard";

/// What a purge is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    User(TenantId, UserId),
    Tenant(TenantId),
}

impl Subject {
    pub fn tenant(&self) -> &TenantId {
        match self {
            Self::User(t, _) | Self::Tenant(t) => t,
        }
    }

    /// The sort key of the item that holds this purge's place in the due index.
    fn sk(&self) -> String {
        match self {
            Self::User(_, u) => format!("user#{u}"),
            Self::Tenant(_) => OFFBOARD_SK.to_owned(),
        }
    }

    fn due_sk(&self, at: &str) -> String {
        match self {
            Self::User(t, u) => format!("{at}#{t}#{u}"),
            Self::Tenant(t) => format!("{at}#{t}#tenant"),
        }
    }

    /// Reads a due index sort key back.
    fn parse_due(sk: &str) -> Option<Self> {
        let mut parts = sk.rsplitn(3, '#');
        let (who, tenant) = (parts.next()?, parts.next()?);
        let tenant = TenantId::parse(tenant).ok()?;
        if who == "tenant" { Some(Self::Tenant(tenant)) } else { Some(Self::User(tenant, UserId::parse(who).ok()?)) }
    }
}

/// A purge the sweep found due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub subject: Subject,
    /// Its due index sort key as read (the claim's compare and set).
    pub due_sk: String,
}

/// A user marked deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub purge_at: String,
    /// `false` when the user was deleted already (a repeated DELETE): the first deletion's time stands.
    pub new: bool,
}

/// How a restore ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restore {
    /// Back, with the status they had before.
    Restored(Status),
    /// Not deleted (a repeated restore): their status.
    NotDeleted(Status),
    /// Too late: the purge has begun.
    PurgeStarted,
}

/// Deletions through one set of credentials, on one table (the tenancy table; [`Self::on`] for the others).
#[derive(Clone, Debug)]
pub struct DeletionStore {
    client: Client,
    table: String,
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DeletionStore {
    /// An UpdateItem of the user's (or the tenant's offboarding) item.
    fn update_subject(
        &self,
        subject: &Subject,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(subject.tenant().as_str()))
            .key("sk", s(subject.sk()))
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// The same credentials on another table (DataTable, MeterTable).
    pub fn on(&self, table: &str) -> Self {
        Self { client: self.client.clone(), table: table.to_owned() }
    }

    /// The tenant's grace period in days (the default when unset).
    pub async fn grace_days(&self, tenant: &TenantId) -> Result<u32, StoreError> {
        let item =
            get_consistent(&self.client, &self.table, tenant.as_str(), SETTINGS_SK, "reading account settings").await?;
        Ok(item
            .as_ref()
            .and_then(|i| i.get("deletion_grace_days"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_GRACE_DAYS))
    }

    pub async fn put_grace_days(&self, tenant: &TenantId, days: u32) -> Result<String, StoreError> {
        let now = crate::time::now_rfc3339();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(SETTINGS_SK))
            .item("deletion_grace_days", n(days))
            .item("updated_at", s(&now))
            .send()
            .await
            .map_err(unavailable("storing account settings"))?;
        Ok(now)
    }

    /// Marks the user deleted and due for purge at `purge_at` (RFC 3339) in one write: from now on every
    /// API treats them as absent. A user deleted already keeps their first purge time. `NotFound` when absent.
    pub async fn delete_user(&self, tenant: &TenantId, user: &UserId, purge_at: &str) -> Result<Deletion, StoreError> {
        let subject = Subject::User(tenant.clone(), user.clone());
        let out = self
            .update_subject(&subject)
            .update_expression(
                "SET status_before = #st, #st = :deleted, deleted_at = :now, purge_at = :at, updated_at = :now, \
                 gsi1pk = :index, gsi1sk = :due",
            )
            .condition_expression("attribute_exists(pk) AND #st <> :deleted")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":deleted", s(Status::Deleted.as_str()))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .expression_attribute_values(":at", s(purge_at))
            .expression_attribute_values(":index", s(PURGE_INDEX))
            .expression_attribute_values(":due", s(subject.due_sk(purge_at)))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match out {
            Ok(_) => Ok(Deletion { purge_at: purge_at.to_owned(), new: true }),
            Err(e) if conditional_failed(&e) => match crate::dynamo::old_item(&e) {
                Some(old) => {
                    Ok(Deletion { purge_at: get_s(&old, "purge_at").unwrap_or(purge_at).to_owned(), new: false })
                }
                None => Err(StoreError::NotFound),
            },
            Err(e) => Err(unavailable("deleting a user")(e)),
        }
    }

    /// Brings a deleted user back with the status they had, unless their purge has begun. `NotFound` when
    /// there is no such user (never was, or purged).
    pub async fn restore_user(&self, tenant: &TenantId, user: &UserId) -> Result<Restore, StoreError> {
        let subject = Subject::User(tenant.clone(), user.clone());
        let item = get_consistent(&self.client, &self.table, tenant.as_str(), &subject.sk(), "reading a user")
            .await?
            .ok_or(StoreError::NotFound)?;
        let status = get_s(&item, "status").and_then(Status::parse).context("stored user status")?;
        if status != Status::Deleted {
            return Ok(Restore::NotDeleted(status));
        }
        if item.contains_key("purge_started_at") {
            return Ok(Restore::PurgeStarted);
        }
        let before = get_s(&item, "status_before")
            .and_then(Status::parse)
            .filter(|s| *s != Status::Deleted)
            .unwrap_or(Status::Active);
        let out = self
            .update_subject(&subject)
            .update_expression(
                "SET #st = :before, updated_at = :now REMOVE status_before, deleted_at, purge_at, gsi1pk, gsi1sk",
            )
            .condition_expression("#st = :deleted AND attribute_not_exists(purge_started_at)")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":deleted", s(Status::Deleted.as_str()))
            .expression_attribute_values(":before", s(before.as_str()))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .send()
            .await;
        match out {
            Ok(_) => Ok(Restore::Restored(before)),
            // The sweep claimed it between the read and the write.
            Err(e) if conditional_failed(&e) => Ok(Restore::PurgeStarted),
            Err(e) => Err(unavailable("restoring a user")(e)),
        }
    }

    /// Marks the tenant offboarded (every credential of it refused from now on) and due for purge now.
    /// `Ok(false)` when it was being offboarded already; `NotFound` when there is no such tenant.
    pub async fn offboard_tenant(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let now = crate::time::now_rfc3339();
        let subject = Subject::Tenant(tenant.clone());
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s("tenant"))
            .update_expression("SET #st = :deleted, updated_at = :now")
            .condition_expression("attribute_exists(pk) AND #st <> :deleted")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":deleted", s(Status::Deleted.as_str()))
            .expression_attribute_values(":now", s(&now))
            .build()
            .context("building the offboarding")?;
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(subject.sk()))
            .item("requested_at", s(&now))
            .item("gsi1pk", s(PURGE_INDEX))
            .item("gsi1sk", s(subject.due_sk(&now)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .context("building the offboarding")?;
        let out = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => {
                let tenant_item =
                    get_consistent(&self.client, &self.table, tenant.as_str(), "tenant", "reading a tenant").await?;
                match tenant_item {
                    None => Err(StoreError::NotFound),
                    Some(t) if get_s(&t, "status") == Some(Status::Deleted.as_str()) => Ok(false),
                    Some(_) => Err(StoreError::Conflict("the tenant changed while being offboarded; retry".into())),
                }
            }
            Err(e) => Err(unavailable("offboarding a tenant")(e)),
        }
    }

    /// Purges due by `now`, oldest first, at most `limit`. Reads the index across tenants: the function's
    /// own role, never a tenant session.
    pub async fn due(&self, now: &str, limit: i32) -> Result<Vec<Due>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :p AND gsi1sk < :now")
            .expression_attribute_values(":p", s(PURGE_INDEX))
            .expression_attribute_values(":now", s(format!("{now}#~")))
            .limit(limit.max(1))
            .send()
            .await
            .map_err(unavailable("reading due purges"))?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| {
                let sk = get_s(i, "gsi1sk")?;
                Some(Due { subject: Subject::parse_due(sk)?, due_sk: sk.to_owned() })
            })
            .collect())
    }

    /// Claims a due purge for the sweep: moves it to `retry_at` (so a purge that dies is queued again then)
    /// and marks it started (no restore from here on), only if nobody claimed it since it was read.
    pub async fn claim(&self, due: &Due, retry_at: &str) -> Result<bool, StoreError> {
        let now = crate::time::now_rfc3339();
        let req = self
            .update_subject(&due.subject)
            .update_expression("SET gsi1sk = :next, purge_started_at = if_not_exists(purge_started_at, :now)")
            .condition_expression("gsi1sk = :old")
            .expression_attribute_values(":next", s(due.subject.due_sk(retry_at)))
            .expression_attribute_values(":old", s(&due.due_sk))
            .expression_attribute_values(":now", s(now));
        crate::dynamo::update_if(req, "claiming a purge").await
    }

    /// The item holding a purge's place (the deleted user, the offboarding marker); `None` once purged.
    pub async fn purge_item(&self, subject: &Subject) -> Result<Option<Item>, StoreError> {
        get_consistent(&self.client, &self.table, subject.tenant().as_str(), &subject.sk(), "reading a purge").await
    }

    /// Keys `(pk, sk)` of every item in partition `pk` whose sort key starts with `prefix` ("" for all).
    pub async fn keys(&self, pk: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .projection_expression("pk, sk")
            .expression_attribute_values(":pk", s(pk));
        query = if prefix.is_empty() {
            query.key_condition_expression("pk = :pk")
        } else {
            query
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":p", s(prefix))
        };
        Ok(keys_of(&query_all(query, "listing keys to delete").await?))
    }

    /// Items in one gsi1 partition (a user's index: their audit entries, exports, sessions, deliveries).
    pub async fn indexed(&self, gsi1pk: &str) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", s(gsi1pk));
        query_all(query, "reading an index to purge").await
    }

    /// One item, whole (consistent).
    pub async fn item(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        get_consistent(&self.client, &self.table, pk, sk, "reading an item to purge").await
    }

    /// Deletes one item; absent is fine (a purge resumed after a crash).
    pub async fn delete(&self, pk: &str, sk: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(unavailable("deleting an item"))?;
        Ok(())
    }

    /// Deletes items by key, 25 to a BatchWriteItem, resending what DynamoDB hands back unprocessed.
    pub async fn delete_all(&self, keys: &[(String, String)]) -> Result<usize, StoreError> {
        for chunk in keys.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|(pk, sk)| {
                    let key = HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))]);
                    DeleteRequest::builder()
                        .set_key(Some(key))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                })
                .collect::<Result<_, _>>()
                .context("building deletes")?;
            let mut backoff = Duration::from_millis(50);
            for attempt in 0.. {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(unavailable("deleting items"))?;
                pending = out.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if attempt >= 8 {
                    return Err(StoreError::Unavailable(anyhow::anyhow!(
                        "DynamoDB kept {} deletes unprocessed",
                        pending.len()
                    )));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        Ok(keys.len())
    }

    /// Removes a finished purge's own item last of all (the user item, the offboarding marker), so a purge
    /// that dies before this is found again by the sweep and finishes.
    pub async fn finish(&self, subject: &Subject) -> Result<(), StoreError> {
        self.delete(subject.tenant().as_str(), &subject.sk()).await
    }
}

/// `(pk, sk)` of each item.
pub fn keys_of(items: &[Item]) -> Vec<(String, String)> {
    items.iter().filter_map(|i| Some((get_s(i, "pk")?.to_owned(), get_s(i, "sk")?.to_owned()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_key_reads_back_as_the_purge_it_names() {
        let (t, u) = (TenantId::generate(), UserId::generate());
        for subject in [Subject::User(t.clone(), u), Subject::Tenant(t)] {
            let sk = subject.due_sk("2026-11-29T10:00:00Z");
            assert_eq!(Subject::parse_due(&sk), Some(subject));
        }
        assert_eq!(Subject::parse_due("2026-11-29T10:00:00Z#nonsense#x"), None);
    }
}
