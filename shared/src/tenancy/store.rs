//! The tenancy table in DynamoDB: every partition key is a tenant id (pool model), so one tenant's items
//! can never be read through another tenant's partition. Access patterns are listed in docs/data-model.md.
//!
//! | item          | pk        | sk                 | gsi1pk          | gsi1sk              |
//! |---------------|-----------|--------------------|-----------------|---------------------|
//! | tenant        | tenant id | `tenant`           | `tenants`       | created_at#tenant id|
//! | API key       | tenant id | `key#<key id>`     |                 |                     |
//! | end user      | tenant id | `user#<user id>`   |                 |                     |
//! | external id   | tenant id | `ext#<external id>`|                 |                     |
//! | login (JWKS)  | tenant id | `auth`             | `iss#<issuer>`  | tenant id           |

use std::collections::HashMap;

use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, ReturnValue, TransactWriteItem};

use super::{ApiKey, AuthSettings, Status, Tenant, TenantName, User, UserPatch};
use crate::apikey::{self, NewKey};
use crate::dynamo::{Item, conditional_failed, delete_existing, get_consistent, get_s, req_s, s, unavailable};
use crate::error::ApiError;
use crate::http::Page;
use crate::ids::{Email, ExternalId, KeyId, TenantId, UserId};

/// Expected outcomes are variants; everything else is `Unavailable` with its cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("the cursor belongs to another list")]
    BadCursor,
    #[error("the tenancy table could not be reached")]
    Unavailable(#[from] anyhow::Error),
}

impl StoreError {
    /// Maps to the API error; `what` names the object for a 404.
    pub fn into_api(self, what: &str) -> ApiError {
        match self {
            Self::NotFound => ApiError::not_found(what),
            Self::Conflict(message) => ApiError::conflict("conflict", message),
            Self::BadCursor => ApiError::bad_request(
                "invalid_cursor",
                "cursor is not one we issued for this list; pass next_cursor back unchanged",
            ),
            Self::Unavailable(e) => ApiError::internal(e),
        }
    }
}

fn transaction_cancelled<R>(e: &SdkError<TransactWriteItemsError, R>) -> bool {
    e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception())
}

/// How a conflict over a deleted user's external id begins (the authorizer refuses their tokens by it).
pub const DELETED_USER_CONFLICT: &str = "the user with this external id";

const TENANT_SK: &str = "tenant";
const AUTH_SK: &str = "auth";
const TENANTS_GSI: &str = "tenants";

fn key_sk(id: &KeyId) -> String {
    format!("key#{id}")
}

fn user_sk(id: &UserId) -> String {
    format!("user#{id}")
}

fn ext_sk(id: &ExternalId) -> String {
    format!("ext#{}", id.as_str())
}

fn tenant_from(item: &Item) -> anyhow::Result<Tenant> {
    Ok(Tenant {
        id: TenantId::parse(&req_s(item, "pk")?)?,
        name: TenantName::parse(&req_s(item, "name")?).map_err(anyhow::Error::msg)?,
        status: Status::parse(&req_s(item, "status")?).context("stored tenant status")?,
        created_at: req_s(item, "created_at")?,
        updated_at: req_s(item, "updated_at")?,
    })
}

fn key_from(item: &Item) -> anyhow::Result<ApiKey> {
    Ok(ApiKey {
        tenant_id: TenantId::parse(&req_s(item, "pk")?)?,
        id: KeyId::parse(&req_s(item, "key_id")?)?,
        prefix: req_s(item, "prefix")?,
        secret_hash: req_s(item, "secret_hash")?,
        created_at: req_s(item, "created_at")?,
        last_used_at: get_s(item, "last_used_at").map(str::to_owned),
        revoked_at: get_s(item, "revoked_at").map(str::to_owned),
    })
}

fn user_from(item: &Item) -> anyhow::Result<User> {
    Ok(User {
        tenant_id: TenantId::parse(&req_s(item, "pk")?)?,
        id: UserId::parse(&req_s(item, "user_id")?)?,
        external_id: ExternalId::parse(&req_s(item, "external_id")?).map_err(anyhow::Error::msg)?,
        email: get_s(item, "email").map(Email::parse).transpose().map_err(anyhow::Error::msg)?,
        status: Status::parse(&req_s(item, "status")?).context("stored user status")?,
        created_at: req_s(item, "created_at")?,
        updated_at: req_s(item, "updated_at")?,
    })
}

fn auth_from(item: &Item) -> anyhow::Result<(TenantId, AuthSettings)> {
    Ok((
        TenantId::parse(&req_s(item, "pk")?)?,
        AuthSettings {
            issuer: req_s(item, "issuer")?,
            jwks_url: req_s(item, "jwks_url")?,
            audience: req_s(item, "audience")?,
        },
    ))
}

/// The DynamoDB adapter for tenants, keys, users and login settings. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TenancyStore {
    client: Client,
    table: String,
}

impl TenancyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// The connections store on the same table and credentials.
    pub fn connect_store(&self) -> crate::connect::ConnectStore {
        crate::connect::ConnectStore::new(self.client.clone(), &self.table)
    }

    /// Webhook subscriptions and delivery markers through the same credentials.
    pub fn subscription_store(&self) -> crate::subscriptions::SubscriptionStore {
        crate::subscriptions::SubscriptionStore::new(self.client.clone(), &self.table)
    }

    /// The normalized data table through the same credentials.
    pub fn data_store(&self, table: &str) -> crate::datastore::DataStore {
        crate::datastore::DataStore::new(self.client.clone(), table)
    }

    /// Plans, metering settings and LLM keys on the same table and credentials.
    pub fn billing_store(&self) -> crate::billing::BillingStore {
        crate::billing::BillingStore::new(self.client.clone(), &self.table)
    }

    /// The tenant's audit log on the same table and credentials.
    pub fn audit_store(&self) -> crate::audit::AuditStore {
        crate::audit::AuditStore::new(self.client.clone(), &self.table)
    }

    pub fn plan_store(&self) -> crate::meter::PlanStore {
        crate::meter::PlanStore::new(self.client.clone(), &self.table)
    }

    /// Budgets and the usage ledger in `meter_table`, with the same credentials.
    pub fn meter_store(&self, meter_table: &str) -> crate::meter::MeterStore {
        crate::meter::MeterStore::new(self.client.clone(), meter_table)
    }

    /// The tenant's source priority on the same table and credentials.
    pub fn priority_store(&self) -> crate::priority::PriorityStore {
        crate::priority::PriorityStore::new(self.client.clone(), &self.table)
    }

    /// Webhook endpoint and deliveries on the same table and credentials.
    pub fn notify_store(&self) -> crate::notify::NotifyStore {
        crate::notify::NotifyStore::new(self.client.clone(), &self.table)
    }

    /// Apple Health imports on the same table and credentials.
    pub fn import_store(&self) -> crate::imports::ImportStore {
        crate::imports::ImportStore::new(self.client.clone(), &self.table)
    }

    /// The same table through other credentials (a tenant-scoped session).
    pub fn with_client(&self, client: Client) -> Self {
        Self { client, table: self.table.clone() }
    }

    fn put(&self, item: Item, condition: &str) -> anyhow::Result<TransactWriteItem> {
        let put =
            Put::builder().table_name(&self.table).set_item(Some(item)).condition_expression(condition).build()?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn key_item(key: &NewKey, now: &str) -> Item {
        HashMap::from([
            ("pk".into(), s(key.tenant_id.as_str())),
            ("sk".into(), s(key_sk(&key.key_id))),
            ("key_id".into(), s(key.key_id.as_str())),
            ("prefix".into(), s(&key.prefix)),
            ("secret_hash".into(), s(&key.secret_hash)),
            ("created_at".into(), s(now)),
        ])
    }

    /// Creates a tenant and its first API key in one transaction.
    pub async fn create_tenant(&self, name: TenantName) -> Result<(Tenant, NewKey), StoreError> {
        let now = crate::time::now_rfc3339();
        let tenant = Tenant {
            id: TenantId::generate(),
            name,
            status: Status::Active,
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        let key = apikey::mint(&tenant.id);
        let tenant_item = HashMap::from([
            ("pk".into(), s(tenant.id.as_str())),
            ("sk".into(), s(TENANT_SK)),
            ("gsi1pk".into(), s(TENANTS_GSI)),
            ("gsi1sk".into(), s(format!("{now}#{}", tenant.id))),
            ("name".into(), s(tenant.name.as_str())),
            ("status".into(), s(tenant.status.as_str())),
            ("created_at".into(), s(&now)),
            ("updated_at".into(), s(&now)),
        ]);
        self.client
            .transact_write_items()
            .transact_items(self.put(tenant_item, "attribute_not_exists(pk)")?)
            .transact_items(self.put(Self::key_item(&key, &now), "attribute_not_exists(pk)")?)
            .send()
            .await
            .map_err(unavailable("creating a tenant"))?;
        Ok((tenant, key))
    }

    pub async fn get_tenant(&self, id: &TenantId) -> Result<Tenant, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(id.as_str()))
            .key("sk", s(TENANT_SK))
            .send()
            .await
            .map_err(unavailable("reading a tenant"))?;
        Ok(tenant_from(out.item().ok_or(StoreError::NotFound)?)?)
    }

    /// Tenants in creation order; the cursor is the last tenant's index position.
    pub async fn list_tenants(&self, page: &Page) -> Result<(Vec<Tenant>, Option<String>), StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", s(TENANTS_GSI))
            .limit(page.limit);
        if let Some(after) = &page.after {
            let tenant = after.rsplit('#').next().unwrap_or_default();
            q = q
                .exclusive_start_key("gsi1pk", s(TENANTS_GSI))
                .exclusive_start_key("gsi1sk", s(after))
                .exclusive_start_key("pk", s(tenant))
                .exclusive_start_key("sk", s(TENANT_SK));
        }
        let out = q.send().await.map_err(unavailable("listing tenants"))?;
        let tenants = out.items().iter().map(tenant_from).collect::<anyhow::Result<Vec<_>>>()?;
        let next = out.last_evaluated_key().and_then(|k| get_s(k, "gsi1sk")).map(str::to_owned);
        Ok((tenants, next))
    }

    pub async fn set_tenant_status(&self, id: &TenantId, status: Status) -> Result<Tenant, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(id.as_str()))
            .key("sk", s(TENANT_SK))
            .update_expression("SET #st = :st, updated_at = :now")
            // A tenant being offboarded is never enabled (or disabled) again.
            .condition_expression("attribute_exists(pk) AND #st <> :deleted")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":deleted", s(Status::Deleted.as_str()))
            .expression_attribute_values(":st", s(status.as_str()))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => Ok(tenant_from(out.attributes().context("update returned no item")?)?),
            Err(e) if conditional_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(unavailable("changing a tenant's status")(e)),
        }
    }

    /// Mints and stores a new key for the tenant.
    pub async fn create_key(&self, tenant: &TenantId) -> Result<(ApiKey, NewKey), StoreError> {
        let now = crate::time::now_rfc3339();
        let key = apikey::mint(tenant);
        let out = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::key_item(&key, &now)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match out {
            Ok(_) => {}
            Err(e) if conditional_failed(&e) => {
                return Err(StoreError::Conflict("key id collision".into()));
            }
            Err(e) => return Err(unavailable("storing an API key")(e)),
        }
        let stored = ApiKey {
            tenant_id: tenant.clone(),
            id: key.key_id.clone(),
            prefix: key.prefix.clone(),
            secret_hash: key.secret_hash.clone(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        };
        Ok((stored, key))
    }

    async fn query_prefix(
        &self,
        tenant: &TenantId,
        prefix: &str,
        page: &Page,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :t AND begins_with(sk, :p)")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":p", s(prefix))
            .limit(page.limit);
        if let Some(after) = &page.after {
            if !after.starts_with(prefix) {
                return Err(StoreError::BadCursor);
            }
            q = q.exclusive_start_key("pk", s(tenant.as_str())).exclusive_start_key("sk", s(after));
        }
        let out = q.send().await.map_err(unavailable("querying a tenant's items"))?;
        let next = out.last_evaluated_key().and_then(|k| get_s(k, "sk")).map(str::to_owned);
        Ok((out.items.unwrap_or_default(), next))
    }

    pub async fn list_keys(&self, tenant: &TenantId, page: &Page) -> Result<(Vec<ApiKey>, Option<String>), StoreError> {
        let (items, next) = self.query_prefix(tenant, "key#", page).await?;
        Ok((items.iter().map(key_from).collect::<anyhow::Result<_>>()?, next))
    }

    /// Marks a key revoked (kept, so a caller presenting it is told it was revoked). Refuses to revoke the
    /// tenant's last active key, which would lock the tenant out.
    pub async fn revoke_key(&self, tenant: &TenantId, id: &KeyId) -> Result<ApiKey, StoreError> {
        let mut active_others = 0;
        let mut page = Page { limit: 100, after: None };
        loop {
            let (keys, next) = self.list_keys(tenant, &page).await?;
            active_others += keys.iter().filter(|k| k.revoked_at.is_none() && &k.id != id).count();
            match next {
                Some(after) => page.after = Some(after),
                None => break,
            }
        }
        if active_others == 0 {
            return Err(StoreError::Conflict(
                "this is the tenant's last active API key; create another before revoking it".into(),
            ));
        }
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(key_sk(id)))
            .update_expression("SET revoked_at = if_not_exists(revoked_at, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(out) => Ok(key_from(out.attributes().context("update returned no item")?)?),
            Err(e) if conditional_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(unavailable("revoking an API key")(e)),
        }
    }

    /// One round trip for the authorizer: the tenant and the presented key, either possibly absent.
    pub async fn tenant_and_key(
        &self,
        tenant: &TenantId,
        key: &KeyId,
    ) -> Result<(Option<Tenant>, Option<ApiKey>), StoreError> {
        let keys = KeysAndAttributes::builder()
            .keys(HashMap::from([("pk".into(), s(tenant.as_str())), ("sk".into(), s(TENANT_SK))]))
            .keys(HashMap::from([("pk".into(), s(tenant.as_str())), ("sk".into(), s(key_sk(key)))]))
            .consistent_read(true)
            .build()
            .context("building the key lookup")?;
        let out = self
            .client
            .batch_get_item()
            .request_items(&self.table, keys)
            .send()
            .await
            .map_err(unavailable("reading a tenant and key"))?;
        if out.unprocessed_keys().is_some_and(|u| !u.is_empty()) {
            return Err(StoreError::Unavailable(anyhow::anyhow!("key lookup throttled")));
        }
        let items = out.responses().and_then(|r| r.get(&self.table)).cloned().unwrap_or_default();
        let mut found = (None, None);
        for item in &items {
            match get_s(item, "sk") {
                Some(TENANT_SK) => found.0 = Some(tenant_from(item)?),
                Some(_) => found.1 = Some(key_from(item)?),
                None => {}
            }
        }
        Ok(found)
    }

    /// Stamps a key's last use, at most once a minute, so a busy key costs no write per request.
    pub async fn touch_key(&self, tenant: &TenantId, key: &KeyId) -> Result<(), StoreError> {
        let now = crate::time::now();
        let cutoff = crate::time::format(now - time::Duration::minutes(1));
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(key_sk(key)))
            .update_expression("SET last_used_at = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(last_used_at) OR last_used_at < :cutoff)",
            )
            .expression_attribute_values(":now", s(crate::time::format(now)))
            .expression_attribute_values(":cutoff", s(cutoff))
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Ok(()),
            Err(e) => Err(unavailable("stamping a key's last use")(e)),
        }
    }

    /// Creates the user, or returns the one that already has this external id (`false`).
    /// The `ext#` marker is written in the same transaction, conditional on absence, so two racing creates
    /// end with one user.
    pub async fn create_user(
        &self,
        tenant: &TenantId,
        external_id: &ExternalId,
        email: Option<Email>,
    ) -> Result<(User, bool), StoreError> {
        if let Some(existing) = self.user_by_external_id(tenant, external_id).await? {
            return Ok((existing, false));
        }
        self.refuse_deleted_external_id(tenant, external_id).await?;
        let now = crate::time::now_rfc3339();
        let user = User {
            id: UserId::generate(),
            tenant_id: tenant.clone(),
            external_id: external_id.clone(),
            email,
            status: Status::Active,
            created_at: now.clone(),
            updated_at: now,
        };
        let marker = HashMap::from([
            ("pk".into(), s(tenant.as_str())),
            ("sk".into(), s(ext_sk(external_id))),
            ("user_id".into(), s(user.id.as_str())),
        ]);
        let out = self
            .client
            .transact_write_items()
            .transact_items(self.put(marker, "attribute_not_exists(pk)")?)
            .transact_items(self.put(Self::user_item(&user), "attribute_not_exists(pk)")?)
            .send()
            .await;
        match out {
            Ok(_) => Ok((user, true)),
            Err(e) if transaction_cancelled(&e) => match self.user_by_external_id(tenant, external_id).await? {
                Some(existing) => Ok((existing, false)),
                None => Err(StoreError::Conflict("the user was being created concurrently; retry".into())),
            },
            Err(e) => Err(unavailable("creating a user")(e)),
        }
    }

    fn user_item(user: &User) -> Item {
        let mut item = HashMap::from([
            ("pk".into(), s(user.tenant_id.as_str())),
            ("sk".into(), s(user_sk(&user.id))),
            ("user_id".into(), s(user.id.as_str())),
            ("external_id".into(), s(user.external_id.as_str())),
            ("status".into(), s(user.status.as_str())),
            ("created_at".into(), s(&user.created_at)),
            ("updated_at".into(), s(&user.updated_at)),
        ]);
        if let Some(email) = &user.email {
            item.insert("email".into(), s(email.as_str()));
        }
        item
    }

    pub async fn user_by_external_id(
        &self,
        tenant: &TenantId,
        external_id: &ExternalId,
    ) -> Result<Option<User>, StoreError> {
        let sk = ext_sk(external_id);
        let marker = get_consistent(&self.client, &self.table, tenant.as_str(), &sk, "reading an external id").await?;
        let Some(user_id) = marker.as_ref().and_then(|i| get_s(i, "user_id")) else {
            return Ok(None);
        };
        let user_id = UserId::parse(user_id).context("stored external id marker")?;
        match self.get_user(tenant, &user_id).await {
            Ok(u) => Ok(Some(u)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user; a deleted user (waiting for its purge) is `NotFound`, as if already gone.
    pub async fn get_user(&self, tenant: &TenantId, id: &UserId) -> Result<User, StoreError> {
        let user = self.get_user_even_deleted(tenant, id).await?;
        if user.status == Status::Deleted {
            return Err(StoreError::NotFound);
        }
        Ok(user)
    }

    /// The user whatever its status, deleted too (restore and purge need it).
    pub async fn get_user_even_deleted(&self, tenant: &TenantId, id: &UserId) -> Result<User, StoreError> {
        let item = get_consistent(&self.client, &self.table, tenant.as_str(), &user_sk(id), "reading a user").await?;
        Ok(user_from(item.as_ref().ok_or(StoreError::NotFound)?)?)
    }

    /// Counts the tenant's items under a key prefix (`user#`, `conn#`, ...) by the values of `fields` (absent
    /// values count as ""): a query of the tenant's partition reading only those fields, for aggregate views.
    pub async fn tally(
        &self,
        tenant: &TenantId,
        prefix: &str,
        fields: &[&str],
    ) -> Result<std::collections::BTreeMap<Vec<String>, u64>, StoreError> {
        let names: Vec<String> = (0..fields.len()).map(|i| format!("#f{i}")).collect();
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
            .expression_attribute_values(":pk", s(tenant.as_str()))
            .expression_attribute_values(":p", s(prefix))
            .projection_expression(names.join(", "));
        for (name, field) in names.iter().zip(fields) {
            query = query.expression_attribute_names(name, *field);
        }
        let items = crate::dynamo::query_all(query, "counting items").await?;
        let mut counts = std::collections::BTreeMap::new();
        for item in &items {
            let key: Vec<String> = fields.iter().map(|f| get_s(item, f).unwrap_or_default().to_owned()).collect();
            *counts.entry(key).or_default() += 1;
        }
        Ok(counts)
    }

    /// The tenant's daily activity counters on the same table and credentials.
    pub fn stats_store(&self) -> crate::stats::StatsStore {
        crate::stats::StatsStore::new(self.client.clone(), &self.table)
    }

    /// An external id whose user is deleted but not yet purged cannot be given to a new user (its marker
    /// still names the deleted one): 409 saying so.
    async fn refuse_deleted_external_id(&self, tenant: &TenantId, external_id: &ExternalId) -> Result<(), StoreError> {
        let sk = ext_sk(external_id);
        let marker = get_consistent(&self.client, &self.table, tenant.as_str(), &sk, "reading an external id").await?;
        let Some(user_id) = marker.as_ref().and_then(|i| get_s(i, "user_id")) else { return Ok(()) };
        let user_id = UserId::parse(user_id).context("stored external id marker")?;
        match self.get_user_even_deleted(tenant, &user_id).await {
            Ok(u) if u.status == Status::Deleted => Err(StoreError::Conflict(format!(
                "{DELETED_USER_CONFLICT} ({user_id}) was deleted and waits for its purge; restore it with \
                 POST /v1/users/{user_id}/restore, or use the external id again once it is purged"
            ))),
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Users, deleted ones left out (a page may hold fewer than `limit`; follow `next_cursor`).
    pub async fn list_users(&self, tenant: &TenantId, page: &Page) -> Result<(Vec<User>, Option<String>), StoreError> {
        let (items, next) = self.query_prefix(tenant, "user#", page).await?;
        let users: Vec<User> = items.iter().map(user_from).collect::<anyhow::Result<_>>()?;
        Ok((users.into_iter().filter(|u| u.status != Status::Deleted).collect(), next))
    }

    /// Deletions, restores, purges and offboarding on the same table and credentials.
    pub fn deletion_store(&self) -> crate::deletion::DeletionStore {
        crate::deletion::DeletionStore::new(self.client.clone(), &self.table)
    }

    pub async fn update_user(&self, tenant: &TenantId, id: &UserId, patch: UserPatch) -> Result<User, StoreError> {
        let mut set = vec!["updated_at = :now"];
        let mut remove = vec![];
        let mut q = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(user_sk(id)))
            // A deleted user is absent to a patch too.
            .condition_expression("attribute_exists(pk) AND #st <> :deleted")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":deleted", s(Status::Deleted.as_str()))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .return_values(ReturnValue::AllNew);
        if let Some(status) = patch.status {
            set.push("#st = :st");
            q = q.expression_attribute_values(":st", s(status.as_str()));
        }
        match patch.email {
            Some(Some(email)) => {
                set.push("email = :email");
                q = q.expression_attribute_values(":email", s(email.as_str()));
            }
            Some(None) => remove.push("email"),
            None => {}
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        match q.update_expression(expr).send().await {
            Ok(out) => Ok(user_from(out.attributes().context("update returned no item")?)?),
            Err(e) if conditional_failed(&e) => Err(StoreError::NotFound),
            Err(e) => Err(unavailable("updating a user")(e)),
        }
    }

    /// Two tenants may not claim the same issuer and audience, or a token could not tell which tenant it
    /// is for. Reads the issuer index, so it needs the function's own role, not a tenant session.
    pub async fn check_issuer_free(&self, tenant: &TenantId, settings: &AuthSettings) -> Result<(), StoreError> {
        let claimed = self.auth_by_issuer(&settings.issuer).await?;
        if claimed.iter().any(|(t, a)| t != tenant && a.audience == settings.audience) {
            return Err(StoreError::Conflict(
                "another tenant already uses this issuer with this audience; use an audience unique to your app".into(),
            ));
        }
        Ok(())
    }

    /// Sets the tenant's login (after [`Self::check_issuer_free`]).
    pub async fn put_auth(&self, tenant: &TenantId, settings: &AuthSettings) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(AUTH_SK))
            .item("gsi1pk", s(format!("iss#{}", settings.issuer)))
            .item("gsi1sk", s(tenant.as_str()))
            .item("issuer", s(&settings.issuer))
            .item("jwks_url", s(&settings.jwks_url))
            .item("audience", s(&settings.audience))
            .item("updated_at", s(crate::time::now_rfc3339()))
            .send()
            .await
            .map_err(unavailable("storing login settings"))?;
        Ok(())
    }

    pub async fn get_auth(&self, tenant: &TenantId) -> Result<AuthSettings, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(AUTH_SK))
            .send()
            .await
            .map_err(unavailable("reading login settings"))?;
        Ok(auth_from(out.item().ok_or(StoreError::NotFound)?)?.1)
    }

    pub async fn delete_auth(&self, tenant: &TenantId) -> Result<(), StoreError> {
        delete_existing(&self.client, &self.table, tenant.as_str(), AUTH_SK, "deleting login settings").await
    }

    /// Every tenant whose login uses this issuer (usually one).
    pub async fn auth_by_issuer(&self, issuer: &str) -> Result<Vec<(TenantId, AuthSettings)>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(":p", s(format!("iss#{issuer}")))
            .limit(100)
            .send()
            .await
            .map_err(unavailable("finding a tenant by issuer"))?;
        Ok(out.items().iter().map(auth_from).collect::<anyhow::Result<_>>()?)
    }
}
