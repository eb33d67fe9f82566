//! Device connections: each tenant's provider apps and Connect settings, connect sessions (the hosted page's
//! capability links), single-use OAuth states, and the connections themselves with their sealed tokens.
//! All items live in the tenancy table under the tenant's partition (see docs/data-model.md).

use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};

use crate::dynamo::{Item, conditional_failed, get_s, old_item, req_s, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::providers::ProviderId;
use crate::tenancy::StoreError;

pub use crate::apikey::random_secret;

/// The vault context of a connection's tokens, and of the secrets of its OAuth flow.
pub fn token_context(tenant: &TenantId, user: &UserId, provider: ProviderId) -> crate::vault::SecretContext {
    crate::vault::SecretContext::user(tenant.clone(), user.clone(), provider.as_str())
}

/// The vault context of a provider app's client secret.
pub fn app_secret_context(tenant: &TenantId, provider: ProviderId) -> crate::vault::SecretContext {
    crate::vault::SecretContext::tenant(tenant.clone(), format!("provider_app:{provider}"))
}

fn secret_hash(secret: &str) -> String {
    crate::apikey::hash_secret(secret)
}

/// A tenant's app at a provider; the secret stays sealed.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderApp {
    pub provider: ProviderId,
    pub client_id: String,
    #[serde(skip)]
    pub client_secret_sealed: String,
    pub scopes: Vec<String>,
    pub updated_at: String,
}

/// How the hosted Connect page looks and where it may send people back to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConnectSettings {
    pub allowed_return_urls: Vec<String>,
    #[serde(default)]
    pub logo_url: Option<String>,
}

impl ConnectSettings {
    /// A return URL is allowed when it equals an allowed URL or extends one at a path or query boundary
    /// (`https://app.example/done` allows `https://app.example/done?x=1`, not `https://app.example/done.evil`).
    pub fn allows(&self, url: &str) -> bool {
        self.allowed_return_urls.iter().any(|allowed| {
            url == allowed
                || url.strip_prefix(allowed.as_str()).is_some_and(|rest| {
                    rest.starts_with('?') || rest.starts_with('#') || (allowed.ends_with('/') && !rest.starts_with('/'))
                })
        })
    }
}

/// A connect session: who may connect what, and where to go back to.
#[derive(Debug, Clone)]
pub struct ConnectSession {
    pub tenant_id: TenantId,
    pub id: String,
    pub user_id: UserId,
    pub return_url: String,
    pub providers: Vec<ProviderId>,
    pub expires_at: String,
}

/// An OAuth state, redeemed once.
#[derive(Debug, Clone)]
pub struct OAuthState {
    pub session_id: String,
    pub user_id: UserId,
    pub provider: ProviderId,
    pub pkce_sealed: Option<String>,
    pub redirect_uri: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Connected,
    NeedsReauthorization,
    Syncing,
    Error,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::NeedsReauthorization => "needs_reauthorization",
            Self::Syncing => "syncing",
            Self::Error => "error",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Connected, Self::NeedsReauthorization, Self::Syncing, Self::Error].into_iter().find(|v| v.as_str() == s)
    }
}

/// A user's connection to one provider, as the API shows it (never the tokens).
#[derive(Debug, Clone, Serialize)]
pub struct Connection {
    pub provider: ProviderId,
    pub status: ConnectionStatus,
    pub provider_user_id: Option<String>,
    pub scopes: Vec<String>,
    pub connected_at: String,
    pub last_synced_at: Option<String>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub tokens_sealed: String,
    /// Bumped by every token refresh; a refresh stores its tokens only over the version it started from.
    #[serde(skip)]
    pub token_version: u64,
    /// The first-connect backfill's progress.
    pub backfill: Option<BackfillProgress>,
}

/// How far a connection's backfill has come: it reads from today back to `oldest_day`, newest chunk first;
/// everything from `done_through` to today is in.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackfillProgress {
    pub status: BackfillStatus,
    pub oldest_day: String,
    pub done_through: Option<String>,
    pub days_total: i64,
    pub days_done: i64,
    pub percent: i64,
    /// Items written so far (daily records, sleep sessions, workouts, sample hours).
    pub items: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillStatus {
    Running,
    Completed,
}

impl BackfillProgress {
    /// A backfill about to start with `chunk`, its first job.
    pub fn starting(chunk: &crate::sync::BackfillChunk) -> Self {
        let days_total = (chunk.end - chunk.oldest).whole_days() + 1;
        Self {
            status: BackfillStatus::Running,
            oldest_day: crate::time::format_day(chunk.oldest),
            done_through: None,
            days_total,
            days_done: 0,
            percent: 0,
            items: 0,
        }
    }

    fn from_item(item: &Item) -> Option<Self> {
        let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
        let days_total = num("backfill_days_total")?;
        let days_done = num("backfill_days_done").unwrap_or(0);
        Some(Self {
            status: if get_s(item, "backfill_status") == Some("completed") {
                BackfillStatus::Completed
            } else {
                BackfillStatus::Running
            },
            oldest_day: get_s(item, "backfill_oldest")?.to_owned(),
            done_through: get_s(item, "backfill_through").map(str::to_owned),
            days_total,
            days_done,
            percent: if days_total > 0 { days_done * 100 / days_total } else { 100 },
            items: num("backfill_items").unwrap_or(0),
        })
    }

    /// Whether `chunk` of this backfill is already in (a duplicate or stale job).
    pub fn covers(&self, chunk: &crate::sync::BackfillChunk) -> bool {
        let other_backfill = self.oldest_day != crate::time::format_day(chunk.oldest);
        let done = self.done_through.as_deref().and_then(crate::time::parse_day).is_some_and(|t| t <= chunk.start);
        other_backfill || done
    }
}

/// The outcome of asking for a connection's sync lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Acquired,
    /// Another job is syncing this connection, over this many days.
    Held {
        days: u32,
    },
    /// The connection no longer exists.
    Gone,
}

/// The tokens of a connection, sealed as one JSON document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// The store for everything above.
#[derive(Clone, Debug)]
pub struct ConnectStore {
    client: Client,
    table: String,
}

fn app_sk(p: ProviderId) -> String {
    format!("app#{p}")
}

/// The index of a user's connect sessions and OAuth states (gsi1), which their purge deletes.
pub fn sessions_index(tenant: &TenantId, user: &UserId) -> String {
    format!("{tenant}#sessions#{user}")
}

fn conn_sk(user: &UserId, p: ProviderId) -> String {
    format!("conn#{user}#{p}")
}

/// Shards of the due-time index, so the scheduler's reads and the writes of many connections spread
/// over several index partitions.
pub const DUE_SHARDS: u32 = 8;

/// How often a connection is synced on schedule.
pub const SYNC_INTERVAL: time::Duration = time::Duration::hours(1);

fn due_pk(tenant: &TenantId, user: &UserId) -> String {
    let shard = crate::apikey::hash_secret(&format!("{tenant}{user}"))
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("due#{}", shard % DUE_SHARDS)
}

/// The due-index sort key: when, then who (so it is unique and carries the connection's key).
fn due_sk(at: &str, tenant: &TenantId, user: &UserId, p: ProviderId) -> String {
    format!("{at}#{tenant}#{user}#{p}")
}

/// A connection the scheduler found due.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub provider: ProviderId,
    /// The index entry as read; planning replaces it only if it is still this one.
    pub due_sk: String,
    /// When the connection last synced, and last had a verified webhook (the polling fallback reads both).
    pub last_synced_at: Option<String>,
    pub last_webhook_at: Option<String>,
}

fn list_of(item: &Item, key: &str) -> Vec<String> {
    item.get(key).and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default()
}

fn set_or_skip(values: &[String]) -> Option<AttributeValue> {
    (!values.is_empty()).then(|| AttributeValue::Ss(values.to_vec()))
}

impl ConnectStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    async fn get(&self, tenant: &TenantId, sk: &str) -> Result<Option<Item>, StoreError> {
        crate::dynamo::get_consistent(&self.client, &self.table, tenant.as_str(), sk, "reading a connect item").await
    }

    pub async fn put_app(&self, tenant: &TenantId, app: &ProviderApp) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(app_sk(app.provider)))
            .item("client_id", s(&app.client_id))
            .item("client_secret", s(&app.client_secret_sealed))
            .item("updated_at", s(&app.updated_at));
        if let Some(scopes) = set_or_skip(&app.scopes) {
            req = req.item("scopes", scopes);
        }
        req.send().await.map_err(unavailable("storing a provider app"))?;
        Ok(())
    }

    fn app_from(item: &Item, provider: ProviderId) -> anyhow::Result<ProviderApp> {
        Ok(ProviderApp {
            provider,
            client_id: req_s(item, "client_id")?,
            client_secret_sealed: req_s(item, "client_secret")?,
            scopes: list_of(item, "scopes"),
            updated_at: req_s(item, "updated_at")?,
        })
    }

    pub async fn app(&self, tenant: &TenantId, provider: ProviderId) -> Result<Option<ProviderApp>, StoreError> {
        match self.get(tenant, &app_sk(provider)).await? {
            Some(item) => Ok(Some(Self::app_from(&item, provider)?)),
            None => Ok(None),
        }
    }

    /// The tenant's app at the provider with its client secret opened from the vault; `None` when the
    /// tenant has not configured one.
    pub async fn open_app(
        &self,
        vault: &crate::vault::Vault,
        tenant: &TenantId,
        provider: ProviderId,
    ) -> anyhow::Result<Option<crate::oauth::App>> {
        let Some(row) = self.app(tenant, provider).await? else { return Ok(None) };
        let secret = vault
            .open_string(&app_secret_context(tenant, provider), &row.client_secret_sealed)
            .await
            .context("opening the provider app's secret")?;
        Ok(Some(crate::oauth::App { client_id: row.client_id, client_secret: secret, scopes: row.scopes }))
    }

    /// Every configured provider app of the tenant, in provider order.
    pub async fn apps(&self, tenant: &TenantId) -> Result<Vec<ProviderApp>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :t AND begins_with(sk, :p)")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":p", s("app#"))
            .send()
            .await
            .map_err(unavailable("listing provider apps"))?;
        let mut apps = Vec::new();
        for item in out.items() {
            let name = get_s(item, "sk").and_then(|sk| sk.strip_prefix("app#")).unwrap_or_default();
            if let Ok(p) = ProviderId::parse(name) {
                apps.push(Self::app_from(item, p)?);
            }
        }
        apps.sort_by_key(|a| a.provider);
        Ok(apps)
    }

    pub async fn put_settings(&self, tenant: &TenantId, settings: &ConnectSettings) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s("connect_settings"))
            .item("updated_at", s(crate::time::now_rfc3339()));
        if let Some(urls) = set_or_skip(&settings.allowed_return_urls) {
            req = req.item("allowed_return_urls", urls);
        }
        if let Some(logo) = &settings.logo_url {
            req = req.item("logo_url", s(logo));
        }
        req.send().await.map_err(unavailable("storing connect settings"))?;
        Ok(())
    }

    pub async fn settings(&self, tenant: &TenantId) -> Result<ConnectSettings, StoreError> {
        Ok(self
            .get(tenant, "connect_settings")
            .await?
            .map(|item| ConnectSettings {
                allowed_return_urls: list_of(&item, "allowed_return_urls"),
                logo_url: get_s(&item, "logo_url").map(str::to_owned),
            })
            .unwrap_or_default())
    }

    /// Creates a session; returns it and the secret of its link (shown once, stored hashed).
    pub async fn create_session(
        &self,
        tenant: &TenantId,
        user: &UserId,
        return_url: &str,
        providers: &[ProviderId],
        ttl: time::Duration,
    ) -> Result<(ConnectSession, String), StoreError> {
        let id = format!("cs_{}", ulid::Ulid::new().to_string().to_lowercase());
        let secret = random_secret();
        let expires = crate::time::now() + ttl;
        let session = ConnectSession {
            tenant_id: tenant.clone(),
            id: id.clone(),
            user_id: user.clone(),
            return_url: return_url.to_owned(),
            providers: providers.to_vec(),
            expires_at: crate::time::format(expires),
        };
        let names: Vec<String> = providers.iter().map(ToString::to_string).collect();
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("cs#{id}")))
            .item("user_id", s(user.as_str()))
            // The user's purge finds their sessions here, without a scan.
            .item("gsi1pk", s(sessions_index(tenant, user)))
            .item("gsi1sk", s(format!("cs#{id}")))
            .item("return_url", s(return_url))
            .item("secret_hash", s(secret_hash(&secret)))
            .item("expires_at", s(&session.expires_at))
            .item("ttl", AttributeValue::N((expires.unix_timestamp() + 86_400).to_string()))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(p) = set_or_skip(&names) {
            req = req.item("providers", p);
        }
        req.send().await.map_err(unavailable("storing a connect session"))?;
        Ok((session, secret))
    }

    /// The session a link names, if the link's secret matches and it has not expired.
    pub async fn session(
        &self,
        tenant: &TenantId,
        id: &str,
        secret: &str,
    ) -> Result<Option<ConnectSession>, StoreError> {
        let Some(item) = self.get(tenant, &format!("cs#{id}")).await? else { return Ok(None) };
        let stored = req_s(&item, "secret_hash")?;
        if !crate::apikey::constant_time_eq(stored.as_bytes(), secret_hash(secret).as_bytes()) {
            return Ok(None);
        }
        Ok(Some(ConnectSession {
            tenant_id: tenant.clone(),
            id: id.to_owned(),
            user_id: UserId::parse(&req_s(&item, "user_id")?).map_err(anyhow::Error::from)?,
            return_url: req_s(&item, "return_url")?,
            providers: list_of(&item, "providers").iter().filter_map(|p| ProviderId::parse(p).ok()).collect(),
            expires_at: req_s(&item, "expires_at")?,
        }))
    }

    /// Stores a fresh state for the provider redirect; `secret` is the random part of the `state` parameter.
    pub async fn put_state(
        &self,
        tenant: &TenantId,
        secret: &str,
        state: &OAuthState,
        ttl: time::Duration,
    ) -> Result<(), StoreError> {
        let expires = crate::time::now() + ttl;
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("oauth#{}", secret_hash(secret))))
            .item("gsi1pk", s(sessions_index(tenant, &state.user_id)))
            .item("gsi1sk", s(format!("oauth#{}", secret_hash(secret))))
            .item("session_id", s(&state.session_id))
            .item("user_id", s(state.user_id.as_str()))
            .item("provider", s(state.provider.as_str()))
            .item("redirect_uri", s(&state.redirect_uri))
            .item("expires_at", s(crate::time::format(expires)))
            .item("ttl", AttributeValue::N((expires.unix_timestamp() + 86_400).to_string()))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(pkce) = &state.pkce_sealed {
            req = req.item("pkce", s(pkce));
        }
        req.send().await.map_err(unavailable("storing an OAuth state"))?;
        Ok(())
    }

    /// Redeems a state exactly once: `Ok(Some)` the first time within its lifetime; `Err(Conflict)` when it
    /// was already used or has expired (the message says which); `Ok(None)` when there is no such state.
    pub async fn redeem_state(&self, tenant: &TenantId, secret: &str) -> Result<Option<OAuthState>, StoreError> {
        let now = crate::time::now_rfc3339();
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(format!("oauth#{}", secret_hash(secret))))
            .update_expression("SET used_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(used_at) AND expires_at > :now")
            .expression_attribute_values(":now", s(&now))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        let item = match out {
            Ok(out) => out.attributes.context("update returned no item")?,
            Err(e) if conditional_failed(&e) => {
                let old = old_item(&e);
                return match old {
                    None => Ok(None),
                    Some(old) if old.contains_key("used_at") => Err(StoreError::Conflict("state_used".into())),
                    Some(_) => Err(StoreError::Conflict("state_expired".into())),
                };
            }
            Err(e) => return Err(unavailable("redeeming an OAuth state")(e)),
        };
        Ok(Some(OAuthState {
            session_id: req_s(&item, "session_id")?,
            user_id: UserId::parse(&req_s(&item, "user_id")?).map_err(anyhow::Error::from)?,
            provider: ProviderId::parse(&req_s(&item, "provider")?).map_err(anyhow::Error::msg)?,
            pkce_sealed: get_s(&item, "pkce").map(str::to_owned),
            redirect_uri: req_s(&item, "redirect_uri")?,
        }))
    }

    /// Which of the tenant's users the provider knows by `provider_user_id` (webhooks name users so).
    pub async fn user_by_provider_id(
        &self,
        tenant: &TenantId,
        p: ProviderId,
        provider_user_id: &str,
    ) -> Result<Option<UserId>, StoreError> {
        let Some(item) = self.get(tenant, &format!("puser#{p}#{provider_user_id}")).await? else { return Ok(None) };
        Ok(Some(UserId::parse(&req_s(&item, "user_id")?).map_err(anyhow::Error::from)?))
    }

    /// Creates or replaces the user's connection to the provider (reconnecting replaces the tokens), and
    /// the lookup from the provider's user id.
    pub async fn put_connection(&self, tenant: &TenantId, user: &UserId, c: &Connection) -> Result<(), StoreError> {
        if let Some(pid) = &c.provider_user_id {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(tenant.as_str()))
                .item("sk", s(format!("puser#{}#{pid}", c.provider)))
                .item("user_id", s(user.as_str()))
                .send()
                .await
                .map_err(unavailable("storing a provider user id"))?;
        }
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(conn_sk(user, c.provider)))
            .item("user_id", s(user.as_str()))
            .item("provider", s(c.provider.as_str()))
            .item("status", s(c.status.as_str()))
            .item("tokens", s(&c.tokens_sealed))
            .item("token_version", AttributeValue::N(c.token_version.to_string()))
            .item("connected_at", s(&c.connected_at))
            // Due at once: the first scheduled sync follows the connection.
            .item("gsi1pk", s(due_pk(tenant, user)))
            .item("gsi1sk", s(due_sk(&crate::time::now_rfc3339(), tenant, user, c.provider)));
        if let Some(id) = &c.provider_user_id {
            req = req.item("provider_user_id", s(id));
        }
        if let Some(scopes) = set_or_skip(&c.scopes) {
            req = req.item("scopes", scopes);
        }
        if let Some(b) = &c.backfill {
            req = req
                .item("backfill_status", s("running"))
                .item("backfill_oldest", s(&b.oldest_day))
                .item("backfill_days_total", AttributeValue::N(b.days_total.to_string()))
                .item("backfill_days_done", AttributeValue::N("0".into()));
        }
        req.send().await.map_err(unavailable("storing a connection"))?;
        Ok(())
    }

    fn connection_from(item: &Item) -> anyhow::Result<Connection> {
        Ok(Connection {
            provider: ProviderId::parse(&req_s(item, "provider")?).map_err(anyhow::Error::msg)?,
            status: ConnectionStatus::parse(&req_s(item, "status")?).context("stored connection status")?,
            provider_user_id: get_s(item, "provider_user_id").map(str::to_owned),
            scopes: list_of(item, "scopes"),
            connected_at: req_s(item, "connected_at")?,
            last_synced_at: get_s(item, "last_synced_at").map(str::to_owned),
            last_error: get_s(item, "last_error").map(str::to_owned),
            tokens_sealed: req_s(item, "tokens")?,
            token_version: item
                .get("token_version")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            backfill: BackfillProgress::from_item(item),
        })
    }

    async fn update_connection(
        &self,
        tenant: &TenantId,
        user: &UserId,
        p: ProviderId,
        update: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(conn_sk(user, p)))
            .update_expression(update)
            .condition_expression(condition);
        if update.contains("#st") {
            req = req.expression_attribute_names("#st", "status");
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        crate::dynamo::update_if(req, "updating a connection").await
    }

    /// Sets a connection's status (Sync now marks it syncing); `NotFound` when there is none.
    pub async fn set_status(
        &self,
        tenant: &TenantId,
        user: &UserId,
        p: ProviderId,
        status: ConnectionStatus,
    ) -> Result<(), StoreError> {
        let ok = self
            .update_connection(
                tenant,
                user,
                p,
                "SET #st = :st",
                "attribute_exists(pk)",
                vec![(":st", s(status.as_str()))],
            )
            .await?;
        if ok { Ok(()) } else { Err(StoreError::NotFound) }
    }

    /// Takes the connection's sync lease for `job` (syncing `days`) until `until` (RFC 3339), so that one
    /// connection syncs once at a time.
    pub async fn acquire_lease(
        &self,
        tenant: &TenantId,
        user: &UserId,
        p: ProviderId,
        job: &str,
        days: u32,
        until: &str,
    ) -> Result<Lease, StoreError> {
        let now = crate::time::now_rfc3339();
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(conn_sk(user, p)))
            .update_expression("SET lease_job = :job, lease_until = :until, lease_days = :days")
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(lease_until) OR lease_until < :now OR lease_job = :job)")
            .expression_attribute_values(":job", s(job))
            .expression_attribute_values(":until", s(until))
            .expression_attribute_values(":days", AttributeValue::N(days.to_string()))
            .expression_attribute_values(":now", s(now))
            .return_values_on_condition_check_failure(aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(_) => Ok(Lease::Acquired),
            Err(e) if conditional_failed(&e) => {
                let old = old_item(&e);
                Ok(match old {
                    None => Lease::Gone,
                    Some(item) => Lease::Held {
                        days: item
                            .get("lease_days")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0),
                    },
                })
            }
            Err(e) => Err(unavailable("taking a sync lease")(e)),
        }
    }

    /// Ends a sync: the outcome becomes the status, and the lease is released (only by the job holding it).
    pub async fn finish_sync(
        &self,
        tenant: &TenantId,
        user: &UserId,
        p: ProviderId,
        job: &str,
        outcome: Result<(), (ConnectionStatus, String)>,
    ) -> Result<(), StoreError> {
        let now = crate::time::now_rfc3339();
        let next = due_sk(&crate::time::format(crate::time::now() + SYNC_INTERVAL), tenant, user, p);
        let (update, values) = match outcome {
            Ok(()) => (
                "SET #st = :st, last_synced_at = :now, gsi1sk = :next REMOVE last_error, lease_job, lease_until, lease_days",
                vec![
                    (":st", s(ConnectionStatus::Connected.as_str())),
                    (":now", s(now)),
                    (":job", s(job)),
                    (":next", s(next)),
                ],
            ),
            // A connection that needs the person again is not due until they reconnect.
            Err((ConnectionStatus::NeedsReauthorization, error)) => (
                "SET #st = :st, last_error = :err REMOVE lease_job, lease_until, lease_days, gsi1pk, gsi1sk",
                vec![(":st", s(ConnectionStatus::NeedsReauthorization.as_str())), (":err", s(error)), (":job", s(job))],
            ),
            Err((status, error)) => (
                "SET #st = :st, last_error = :err REMOVE lease_job, lease_until, lease_days",
                vec![(":st", s(status.as_str())), (":err", s(error)), (":job", s(job))],
            ),
        };
        self.update_connection(tenant, user, p, update, "attribute_exists(pk) AND lease_job = :job", values).await?;
        Ok(())
    }

    /// Records that a backfill chunk is in: everything from `chunk.start` to the backfill's first day. Only
    /// the job holding the lease may, and only forwards (an older `done_through`), so a late duplicate cannot
    /// move it back. False when the condition refused it.
    pub async fn checkpoint_backfill(
        &self,
        job: &crate::sync::SyncJob,
        chunk: &crate::sync::BackfillChunk,
        progress: &BackfillProgress,
        items: usize,
    ) -> Result<bool, StoreError> {
        let (tenant, user, p) = (&job.tenant_id, &job.user_id, job.provider);
        let finished = chunk.start <= chunk.oldest;
        let done = progress.days_total - (chunk.start - chunk.oldest).whole_days();
        let through = crate::time::format_day(chunk.start);
        self.update_connection(
            tenant,
            user,
            p,
            "SET backfill_through = :through, backfill_days_done = :done, backfill_status = :bs ADD backfill_items :items",
            "lease_job = :job AND backfill_oldest = :oldest AND (attribute_not_exists(backfill_through) OR backfill_through > :through)",
            vec![
                (":through", s(through)),
                (":done", AttributeValue::N(done.clamp(0, progress.days_total).to_string())),
                (":bs", s(if finished { "completed" } else { "running" })),
                (":items", AttributeValue::N(items.to_string())),
                (":job", s(&job.job_id)),
                (":oldest", s(crate::time::format_day(chunk.oldest))),
            ],
        )
        .await
    }

    /// Connections due by `now` in one shard of the due index, oldest first, at most `limit`. Reads the
    /// index across tenants: the scheduler's own role, never a tenant session.
    pub async fn due(&self, shard: u32, now: &str, limit: i32) -> Result<Vec<Due>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk AND gsi1sk < :now")
            .expression_attribute_values(":pk", s(format!("due#{shard}")))
            .expression_attribute_values(":now", s(format!("{now}#~")))
            .limit(limit.max(1))
            .send()
            .await
            .map_err(unavailable("reading due connections"))?;
        let mut due = Vec::new();
        for item in out.items() {
            let Some(sk) = get_s(item, "gsi1sk") else { continue };
            let mut parts = sk.rsplitn(4, '#');
            let (Some(p), Some(u), Some(t)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let (Ok(provider), Ok(user_id), Ok(tenant_id)) =
                (ProviderId::parse(p), UserId::parse(u), TenantId::parse(t))
            else {
                continue;
            };
            due.push(Due {
                tenant_id,
                user_id,
                provider,
                due_sk: sk.to_owned(),
                last_synced_at: get_s(item, "last_synced_at").map(str::to_owned),
                last_webhook_at: get_s(item, "last_webhook_at").map(str::to_owned),
            });
        }
        Ok(due)
    }

    /// Moves a due connection's next sync to `next_at`, only if nobody planned it since it was read: two
    /// schedulers never plan the same connection twice.
    pub async fn plan(&self, d: &Due, next_at: &str) -> Result<bool, StoreError> {
        self.update_connection(
            &d.tenant_id,
            &d.user_id,
            d.provider,
            "SET gsi1sk = :next",
            "gsi1sk = :old",
            vec![(":next", s(due_sk(next_at, &d.tenant_id, &d.user_id, d.provider))), (":old", s(&d.due_sk))],
        )
        .await
    }

    /// Stores refreshed tokens only over the version they were refreshed from (compare and swap): a second
    /// refresher loses and must re-read instead of overwriting.
    pub async fn replace_tokens(
        &self,
        tenant: &TenantId,
        user: &UserId,
        p: ProviderId,
        sealed: &str,
        from_version: u64,
    ) -> Result<bool, StoreError> {
        self.update_connection(
            tenant,
            user,
            p,
            "SET tokens = :t, token_version = :next",
            "token_version = :v",
            vec![
                (":t", s(sealed)),
                (":next", AttributeValue::N((from_version + 1).to_string())),
                (":v", AttributeValue::N(from_version.to_string())),
            ],
        )
        .await
    }

    pub async fn connection(
        &self,
        tenant: &TenantId,
        user: &UserId,
        p: ProviderId,
    ) -> Result<Option<Connection>, StoreError> {
        match self.get(tenant, &conn_sk(user, p)).await? {
            Some(item) => Ok(Some(Self::connection_from(&item)?)),
            None => Ok(None),
        }
    }

    pub async fn connections(&self, tenant: &TenantId, user: &UserId) -> Result<Vec<Connection>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :t AND begins_with(sk, :p)")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":p", s(format!("conn#{user}#")))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable("listing connections"))?;
        Ok(out.items().iter().map(Self::connection_from).collect::<anyhow::Result<_>>()?)
    }

    /// Deletes the connection and its tokens, and the lookup from the provider's user id when it still names
    /// this user; `NotFound` when there was none.
    pub async fn delete_connection(&self, tenant: &TenantId, user: &UserId, p: ProviderId) -> Result<(), StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(conn_sk(user, p)))
            .condition_expression("attribute_exists(pk)")
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let old = match out {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(e) if conditional_failed(&e) => return Err(StoreError::NotFound),
            Err(e) => return Err(unavailable("deleting a connection")(e)),
        };
        if let Some(pid) = get_s(&old, "provider_user_id") {
            // Only while it still names this user (another user may have connected the same account since).
            let out = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(tenant.as_str()))
                .key("sk", s(format!("puser#{p}#{pid}")))
                .condition_expression("user_id = :u")
                .expression_attribute_values(":u", s(user.as_str()))
                .send()
                .await;
            match out {
                Ok(_) => {}
                Err(e) if conditional_failed(&e) => {}
                Err(e) => return Err(unavailable("deleting a provider user id")(e)),
            }
        }
        Ok(())
    }

    /// Takes the user's connections out of the scheduler's due index (`on = false`: the user was deleted), or
    /// puts them back due now (`on = true`: restored; not those waiting for reauthorization, which stay out).
    pub async fn set_scheduled(&self, tenant: &TenantId, user: &UserId, on: bool) -> Result<(), StoreError> {
        for c in self.connections(tenant, user).await? {
            let mut req = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(tenant.as_str()))
                .key("sk", s(conn_sk(user, c.provider)))
                .condition_expression("attribute_exists(pk)");
            if on {
                if c.status == ConnectionStatus::NeedsReauthorization {
                    continue;
                }
                req = req
                    .update_expression("SET gsi1pk = :pk, gsi1sk = :sk")
                    .expression_attribute_values(":pk", s(due_pk(tenant, user)))
                    .expression_attribute_values(
                        ":sk",
                        s(due_sk(&crate::time::now_rfc3339(), tenant, user, c.provider)),
                    );
            } else {
                req = req.update_expression("REMOVE gsi1pk, gsi1sk");
            }
            crate::dynamo::update_if(req, "scheduling a deleted user's connection").await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_url_must_match_the_allow_list_at_a_boundary() {
        let s = ConnectSettings {
            allowed_return_urls: vec!["https://app.example/done".into(), "https://b.example/".into()],
            logo_url: None,
        };
        assert!(s.allows("https://app.example/done"));
        assert!(s.allows("https://app.example/done?result=ok"));
        assert!(s.allows("https://b.example/anything"));
        assert!(!s.allows("https://app.example/done.evil.example"));
        assert!(!s.allows("https://app.example/donex"));
        assert!(!s.allows("https://b.example//evil.example"));
        assert!(!s.allows("https://evil.example/?https://app.example/done"));
    }
}
