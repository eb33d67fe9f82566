//! The purge. Every hour a sweep reads the due index (tenancy gsi1 `purge`, no scan), claims each due purge
//! (moves it an hour ahead and marks it started, so no restore races it and a purge that dies is queued again)
//! and queues one message per user or tenant on `PurgeQueue`. A job deletes, by access path only:
//!
//! - provider connections (tokens revoked at the provider where it has a way; a provider's failure is logged,
//!   never fatal) and their provider-user lookups; connect sessions and OAuth states (the user's gsi1);
//! - imports and their id markers, the import objects (`apple-health/<tenant>/<user>/`) and unfinished
//!   multipart uploads; exports (gsi1 `<tenant>#exports#<user>`) and their objects (`exports/<tenant>/<user>/`);
//! - billing state, the Stripe customer (deleted at Stripe with the tenant's key) and its index item;
//! - webhook deliveries about the user (gsi1 `<tenant>#deliveries#<user>`);
//! - the user's partitions of DataTable and MeterTable (`<tenant>#<user>`);
//! - the audit entries about them stay but are pseudonymized; then `user.purged` is recorded;
//! - the external id marker, and last of all the user item, which holds the purge's place in the index.
//!
//! Each step is idempotent and the user item goes last, so a redelivered or crashed job simply continues.
//! Offboarding a tenant runs the same for each of its users, then deletes its whole partition and prefixes.

use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::ApiError;
use shared::audit::{Actor, NewEntry};
use shared::connect::{ConnectStore, TokenSet, token_context};
use shared::deletion::{DeletionStore, Due, Subject};
use shared::dynamo::{Item, get_s};
use shared::ids::{TenantId, UserId};
use shared::providers::Overrides;
use shared::tenancy::{Status, Stores, TenancyStore};
use shared::vault::Vault;

/// A claimed purge is due again after this long if it did not finish (a lost message, a crash).
const RETRY_SECS: i64 = 3600;
/// Due purges read per sweep page.
const SWEEP_PAGE: i32 = 100;
/// Pages per sweep at most (the rest waits for the next hour).
const SWEEP_PAGES: usize = 20;

/// What the function reads beyond [`shared::Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PURGE_QUEUE_URL`: where the sweep queues purge jobs.
    pub queue_url: String,
    /// `EXPORT_BUCKET`: the GDPR export files; unset, there are none to delete.
    pub export_bucket: Option<String>,
    /// `TENANTRY_STRIPE_URL`: the Stripe sandbox; unset in AWS.
    pub stripe_url: Option<String>,
}

impl Settings {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        Ok(Self {
            queue_url: get("PURGE_QUEUE_URL").context("PURGE_QUEUE_URL is not set")?,
            export_bucket: get("EXPORT_BUCKET"),
            stripe_url: get(billing::STRIPE_URL_VAR),
        })
    }
}

/// One queue message: a user's purge or a tenant's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub tenant_id: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
}

impl Job {
    fn of(subject: &Subject) -> Self {
        match subject {
            Subject::User(t, u) => Self { tenant_id: t.clone(), user_id: Some(u.clone()) },
            Subject::Tenant(t) => Self { tenant_id: t.clone(), user_id: None },
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sweep {
    pub due: usize,
    pub queued: usize,
}

/// What purging one user deleted (counts only: this goes to the audit log).
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Purged {
    pub connections: usize,
    pub tenancy_items: usize,
    pub data_items: usize,
    pub meter_items: usize,
    pub objects: usize,
    pub stripe_customers: usize,
    pub audit_entries: usize,
}

pub struct Purger {
    /// Tenant-scoped stores: everything a job deletes is one tenant's.
    pub stores: Stores,
    /// The function's own role on the tenancy table: the cross-tenant due index and its claims only.
    pub own: DeletionStore,
    pub vault: Arc<Vault>,
    pub http: reqwest::Client,
    pub providers: Overrides,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub data_table: String,
    pub meter_table: String,
    pub import_bucket: Option<String>,
    pub settings: Settings,
}

/// The name a purged user's audit entries carry instead of their id: stable (the same user always gets the
/// same one) but not their id.
pub fn pseudonym(tenant: &TenantId, user: &UserId) -> String {
    let digest = Sha256::digest(format!("{tenant}#{user}").as_bytes());
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("deleted_{hex}")
}

fn store_err(e: shared::tenancy::StoreError) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

fn api_err(e: ApiError) -> anyhow::Error {
    anyhow::anyhow!("{} ({}): {}", e.status, e.code, e.message)
}

impl Purger {
    pub fn new(config: &shared::Config, sdk: &aws_config::SdkConfig, settings: Settings) -> anyhow::Result<Self> {
        Ok(Self {
            stores: Stores::from_config(config, sdk),
            own: DeletionStore::new(shared::aws::dynamodb(sdk), &config.tenancy_table),
            vault: Arc::new(shared::aws::vault(config, sdk)?),
            http: reqwest::Client::new(),
            providers: config.providers.clone(),
            s3: shared::aws::s3(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            data_table: config.data_table.clone().context("DATA_TABLE is not set")?,
            meter_table: config.meter_table.clone().context("METER_TABLE is not set")?,
            import_bucket: config.import_bucket.clone(),
            settings,
        })
    }

    /// Queues every purge due now, each claimed first so two sweeps never queue one twice in an hour.
    #[tracing::instrument(skip_all, err)]
    pub async fn sweep(&self) -> anyhow::Result<Sweep> {
        let mut sweep = Sweep::default();
        let now = shared::time::now();
        let retry_at = shared::time::format(now + time::Duration::seconds(RETRY_SECS));
        for _ in 0..SWEEP_PAGES {
            let due: Vec<Due> = self.own.due(&shared::time::format(now), SWEEP_PAGE).await.map_err(store_err)?;
            sweep.due += due.len();
            let mut messages = Vec::new();
            for d in &due {
                if self.own.claim(d, &retry_at).await.map_err(store_err)? {
                    messages.push((serde_json::to_string(&Job::of(&d.subject))?, 0));
                }
            }
            shared::batch::send_many(&self.sqs, &self.settings.queue_url, &messages, "purge jobs").await?;
            sweep.queued += messages.len();
            if due.len() < SWEEP_PAGE as usize {
                break;
            }
        }
        if sweep.due > 0 {
            tracing::info!(due = sweep.due, queued = sweep.queued, "purges queued");
        }
        Ok(sweep)
    }

    /// A batch of jobs; a job that failed comes back (and after five receives lands in PurgeDeadLetters,
    /// while its index entry queues it again within the hour).
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        shared::batch::partial(&event, |m| self.one(m)).await
    }

    async fn one(&self, message: &SqsMessage) -> bool {
        let Some(job) = message.body.as_deref().and_then(|b| serde_json::from_str::<Job>(b).ok()) else {
            tracing::error!(message_id = ?message.message_id, "not a purge job; dropped");
            return false;
        };
        shared::telemetry::record_tenant(&job.tenant_id);
        let outcome = match &job.user_id {
            Some(user) => self.purge_user(&job.tenant_id, user).await.map(|_| ()),
            None => self.purge_tenant(&job.tenant_id).await,
        };
        match outcome {
            Ok(()) => false,
            Err(e) => {
                tracing::error!(tenant_id = %job.tenant_id, user_id = ?job.user_id, error = ?e, "purge failed; it will run again");
                true
            }
        }
    }

    /// Purges one deleted user; a user already purged (a redelivery) or not deleted is left alone.
    #[tracing::instrument(skip(self), fields(tenant_id = %tenant, user_id = %user), err)]
    pub async fn purge_user(&self, tenant: &TenantId, user: &UserId) -> anyhow::Result<Option<Purged>> {
        let tenancy = self.stores.tenant(tenant).await.map_err(api_err)?;
        let store = tenancy.deletion_store();
        let subject = Subject::User(tenant.clone(), user.clone());
        let Some(item) = store.purge_item(&subject).await.map_err(store_err)? else {
            tracing::info!("already purged");
            return Ok(None);
        };
        if get_s(&item, "status") != Some(Status::Deleted.as_str()) {
            tracing::warn!("the user is not deleted (restored?); not purged");
            return Ok(None);
        }
        let mut purged = self.purge_user_items(&tenancy, tenant, user, &item).await?;
        let name = pseudonym(tenant, user);
        purged.audit_entries = tenancy.audit_store().pseudonymize(tenant, user, &name).await.map_err(store_err)?;
        let entry = NewEntry::new(Actor::system("purge"), "user.purged")
            .target("user", &name)
            .details(serde_json::to_value(purged)?);
        tenancy.audit_store().record(tenant, entry).await.map_err(store_err)?;
        store.finish(&subject).await.map_err(store_err)?;
        tracing::info!(?purged, "user purged");
        Ok(Some(purged))
    }

    /// Everything of one user but the user item (and their audit entries).
    async fn purge_user_items(
        &self,
        tenancy: &TenancyStore,
        tenant: &TenantId,
        user: &UserId,
        user_item: &Item,
    ) -> anyhow::Result<Purged> {
        let mut purged = Purged::default();
        let store = tenancy.deletion_store();
        let connect = tenancy.connect_store();
        let t = tenant.as_str();

        // Connections first: nothing syncs for the user from here on.
        for c in connect.connections(tenant, user).await.map_err(store_err)? {
            self.revoke(&connect, tenant, user, &c).await;
            match connect.delete_connection(tenant, user, c.provider).await {
                Ok(()) | Err(shared::tenancy::StoreError::NotFound) => purged.connections += 1,
                Err(e) => return Err(store_err(e)),
            }
        }

        let mut keys = Vec::new();
        // Connect sessions and OAuth states; exports; webhook deliveries about the user.
        for index in [
            shared::connect::sessions_index(tenant, user),
            format!("{tenant}#exports#{user}"),
            shared::notify::deliveries_index(tenant, user.as_str()),
        ] {
            keys.extend(shared::deletion::keys_of(&store.indexed(&index).await.map_err(store_err)?));
        }
        // Imports and the markers that find them by id.
        let imports = store.keys(t, &format!("imp#{user}#")).await.map_err(store_err)?;
        for (_, sk) in &imports {
            if let Some(id) = sk.rsplit('#').next() {
                keys.push((t.to_owned(), format!("impid#{id}")));
            }
        }
        keys.extend(imports);
        // Billing: the Stripe customer at Stripe, then its index item and the billing state.
        let billing_sk = format!("billing#{user}");
        if let Some(billing) = store.item(t, &billing_sk).await.map_err(store_err)? {
            if let Some(customer) = get_s(&billing, "customer_id") {
                // The index first: a Stripe webhook about the customer finds no user to update any more. The
                // billing item keeps the customer id until Stripe has deleted it, so a retry deletes it again.
                store.delete(t, &format!("stripe_customer#{customer}")).await.map_err(store_err)?;
                if self.delete_customer(tenancy, tenant, customer).await? {
                    purged.stripe_customers += 1;
                }
            }
            keys.push((t.to_owned(), billing_sk));
        }
        if let Some(external) = get_s(user_item, "external_id") {
            keys.push((t.to_owned(), format!("ext#{external}")));
        }
        purged.tenancy_items = store.delete_all(&keys).await.map_err(store_err)?;

        let partition = format!("{tenant}#{user}");
        let data = store.on(&self.data_table);
        purged.data_items =
            data.delete_all(&data.keys(&partition, "").await.map_err(store_err)?).await.map_err(store_err)?;
        let meter = store.on(&self.meter_table);
        purged.meter_items =
            meter.delete_all(&meter.keys(&partition, "").await.map_err(store_err)?).await.map_err(store_err)?;

        if let Some(bucket) = &self.import_bucket {
            purged.objects += self.delete_prefix(bucket, &format!("apple-health/{tenant}/{user}/")).await?;
        }
        if let Some(bucket) = &self.settings.export_bucket {
            purged.objects += self.delete_prefix(bucket, &format!("exports/{tenant}/{user}/")).await?;
        }
        Ok(purged)
    }

    /// Revokes a connection's tokens at the provider, best effort: a provider's failure is logged and the
    /// purge goes on (the tokens are deleted here whatever the provider says).
    async fn revoke(&self, connect: &ConnectStore, tenant: &TenantId, user: &UserId, c: &shared::connect::Connection) {
        let opened = self.vault.open(&token_context(tenant, user, c.provider), &c.tokens_sealed).await;
        let tokens = match opened.map(|b| serde_json::from_slice::<TokenSet>(b.expose_secret())) {
            Ok(Ok(tokens)) => tokens,
            Ok(Err(_)) => return tracing::warn!(provider = %c.provider, "stored tokens unreadable; not revoked"),
            Err(e) => return tracing::warn!(provider = %c.provider, error = %e, "could not open tokens; not revoked"),
        };
        let provider_user = c.provider_user_id.as_deref();
        connect::revoke(&self.http, &self.providers, &self.vault, connect, tenant, c.provider, &tokens, provider_user)
            .await;
    }

    /// Deletes the customer at the tenant's Stripe: `true` when done (or already gone there). A tenant without
    /// Stripe keys now, or whose key Stripe refuses, cannot have it deleted by us: logged, and the purge goes
    /// on. Stripe unreachable is an error: the job comes back.
    async fn delete_customer(&self, tenancy: &TenancyStore, tenant: &TenantId, customer: &str) -> anyhow::Result<bool> {
        let Some(settings) = tenancy.billing_store().stripe(tenant).await.map_err(store_err)? else {
            tracing::warn!("the tenant has no Stripe keys any more; its Stripe customer is left at Stripe");
            return Ok(false);
        };
        let key = self.vault.open_string(&shared::billing::secret_key_context(tenant), &settings.secret_key).await?;
        let stripe = billing::stripe_api::Stripe::new(key.expose_secret(), self.settings.stripe_url.as_deref())
            .map_err(api_err)?;
        match stripe.delete_customer(customer).await {
            Ok(()) => Ok(true),
            Err(e) if e.status.is_server_error() => Err(api_err(e)),
            Err(e) => {
                tracing::warn!(code = %e.code, message = %e.message, "Stripe refused to delete the customer; left there");
                Ok(false)
            }
        }
    }

    /// Deletes every object under `prefix` and aborts unfinished multipart uploads there; how many objects.
    async fn delete_prefix(&self, bucket: &str, prefix: &str) -> anyhow::Result<usize> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let mut deleted = 0;
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .context("listing objects to purge")?;
            let ids: Vec<ObjectIdentifier> = page
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<_, _>>()
                .context("naming objects to purge")?;
            if !ids.is_empty() {
                deleted += ids.len();
                let delete =
                    Delete::builder().set_objects(Some(ids)).quiet(true).build().context("building a delete")?;
                let out =
                    self.s3.delete_objects().bucket(bucket).delete(delete).send().await.context("deleting objects")?;
                anyhow::ensure!(out.errors().is_empty(), "S3 refused to delete {} objects", out.errors().len());
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let uploads = self
            .s3
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(prefix)
            .send()
            .await
            .context("listing uploads to purge")?;
        for u in uploads.uploads() {
            if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                self.s3
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .context("aborting an upload")?;
            }
        }
        Ok(deleted)
    }

    /// Offboards a tenant: every user's purge, then the whole partition and the tenant's object prefixes.
    #[tracing::instrument(skip(self), fields(tenant_id = %tenant), err)]
    pub async fn purge_tenant(&self, tenant: &TenantId) -> anyhow::Result<()> {
        let tenancy = self.stores.tenant(tenant).await.map_err(api_err)?;
        let store = tenancy.deletion_store();
        let subject = Subject::Tenant(tenant.clone());
        if store.purge_item(&subject).await.map_err(store_err)?.is_none() {
            tracing::info!("already offboarded");
            return Ok(());
        }
        let t = tenant.as_str();
        let mut users = 0;
        for (_, sk) in store.keys(t, "user#").await.map_err(store_err)? {
            let Some(user) = sk.strip_prefix("user#").and_then(|u| UserId::parse(u).ok()) else { continue };
            if let Some(item) = store.item(t, &sk).await.map_err(store_err)? {
                self.purge_user_items(&tenancy, tenant, &user, &item).await?;
                store.delete(t, &sk).await.map_err(store_err)?;
                users += 1;
            }
        }
        for (bucket, prefix) in [
            (self.import_bucket.as_ref(), format!("apple-health/{tenant}/")),
            (self.settings.export_bucket.as_ref(), format!("exports/{tenant}/")),
        ] {
            if let Some(bucket) = bucket {
                self.delete_prefix(bucket, &prefix).await?;
            }
        }
        // Everything else of the tenant is in its partition; the tenant item and the marker go last.
        let rest: Vec<(String, String)> = store
            .keys(t, "")
            .await
            .map_err(store_err)?
            .into_iter()
            .filter(|(_, sk)| sk != "tenant" && sk != "offboard")
            .collect();
        let items = store.delete_all(&rest).await.map_err(store_err)?;
        store.delete(t, "tenant").await.map_err(store_err)?;
        store.finish(&subject).await.map_err(store_err)?;
        tracing::info!(users, items, "tenant offboarded");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pseudonym_is_stable_and_does_not_contain_the_ids() {
        let (t, u) = (TenantId::generate(), UserId::generate());
        let p = pseudonym(&t, &u);
        assert_eq!(p, pseudonym(&t, &u));
        assert_ne!(p, pseudonym(&t, &UserId::generate()));
        assert!(p.starts_with("deleted_") && p.len() == "deleted_".len() + 12);
        assert!(!p.contains(u.as_str()) && !p.contains(t.as_str()));
    }

    #[test]
    fn a_job_round_trips_and_a_tenant_job_has_no_user() {
        let t = TenantId::generate();
        let user = Job { tenant_id: t.clone(), user_id: Some(UserId::generate()) };
        let tenant = Job { tenant_id: t, user_id: None };
        for job in [user, tenant.clone()] {
            let text = serde_json::to_string(&job).unwrap_or_default();
            assert_eq!(serde_json::from_str::<Job>(&text).ok(), Some(job));
        }
        assert!(!serde_json::to_string(&tenant).unwrap_or_default().contains("user_id"));
    }
}
