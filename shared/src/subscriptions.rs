//! Provider webhook subscriptions and what webhooks leave behind: one item per subscription a tenant's
//! provider app holds (`sub#<provider>[#<scope>]`: the provider's id for it, when it expires, a sealed
//! signing key where the provider hands one out, the last event seen), a due-time index entry while the
//! sync-scheduler has something to do for it (create, retry, renew), the last verified webhook of each
//! connection (`last_webhook_at`, for the polling fallback), and one short-lived marker per delivery so a
//! redelivered webhook is recognised.
//!
//! Which providers have a subscription API: Oura (per app, per data type and event; they expire and are
//! renewed), Strava and Polar (one per app, no expiry), Withings (per user, made with the user's token).
//! WHOOP and Garmin take their webhook URL in the provider's developer portal, so there is nothing to create.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::dynamo::{Item, conditional_failed, get_s, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::providers::ProviderId;
use crate::tenancy::StoreError;

/// Renew a subscription when less than this is left of it.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(7);

/// Webhooks count as live while the connection's last verified event is younger than this.
pub const WEBHOOK_SILENCE: time::Duration = time::Duration::hours(24);

/// How long a delivery marker is kept: providers retry within hours, and the worker coalesces the rest.
const DELIVERY_TTL_SECONDS: i64 = 86_400;

/// The due index partition of subscriptions (gsi1); few items per tenant, so one partition is enough.
const INDEX_PK: &str = "subs";

/// The subscriptions a tenant's app holds at a provider, by scope (`""` = one per app). Withings
/// subscriptions are per user and made lazily, so they are not listed here.
pub fn app_scopes(p: ProviderId) -> &'static [&'static str] {
    match p {
        ProviderId::Oura => &["create.daily_activity", "update.daily_activity"],
        ProviderId::Strava | ProviderId::Polar => &[""],
        _ => &[],
    }
}

/// Whether the provider's webhooks are subscribed through an API (so a missing or failed subscription
/// means no webhooks), rather than in the provider's portal.
pub fn has_subscription_api(p: ProviderId) -> bool {
    !app_scopes(p).is_empty() || p == ProviderId::Withings
}

/// The vault context of a provider's webhook signing key (Polar's `signature_secret_key`).
pub fn signing_key_context(tenant: &TenantId, p: ProviderId) -> crate::vault::SecretContext {
    crate::vault::SecretContext::tenant(tenant.clone(), format!("webhook_key:{p}"))
}

/// The verification token we give a provider when subscribing (Oura `verification_token`, Strava
/// `verify_token`): derived from the app's secret and the tenant, so it needs no storage and differs per tenant.
pub fn verification_token(secret: &[u8], tenant: &TenantId) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(b"tenantry-webhook-verification:");
    mac.update(tenant.as_str().as_bytes());
    mac.finalize().into_bytes().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Where a tenant's provider app sends its webhooks.
pub fn callback_url(public_url: &str, tenant: &TenantId, p: ProviderId) -> String {
    format!("{}/webhooks/{p}/{tenant}", public_url.trim_end_matches('/'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubStatus {
    /// Asked for, not made yet (or to be made again).
    Pending,
    Active,
    /// The provider refused or was down; retried with backoff.
    Failed,
}

impl SubStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }

    fn parse(v: &str) -> Self {
        match v {
            "active" => Self::Active,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// One subscription of a tenant's provider app.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub tenant_id: TenantId,
    pub provider: ProviderId,
    /// Which of the app's subscriptions: an Oura `event_type.data_type`, a Withings user id; `""` for the
    /// one subscription of an app.
    pub scope: String,
    pub status: SubStatus,
    /// The client id of the app that holds it: saving another app asks for a new subscription.
    pub client_id: String,
    /// The provider's id of the subscription.
    pub id: Option<String>,
    /// RFC 3339, for subscriptions that expire.
    pub expires_at: Option<String>,
    /// The provider's signing key, sealed ([`signing_key_context`]).
    pub key_sealed: Option<String>,
    pub last_event_at: Option<String>,
    pub last_error: Option<String>,
    pub attempts: u32,
    /// When it was last stored (RFC 3339; set by the store).
    pub updated_at: Option<String>,
}

impl Subscription {
    pub fn pending(tenant: &TenantId, provider: ProviderId, scope: &str, client_id: &str) -> Self {
        Self {
            tenant_id: tenant.clone(),
            provider,
            scope: scope.to_owned(),
            status: SubStatus::Pending,
            client_id: client_id.to_owned(),
            id: None,
            expires_at: None,
            key_sealed: None,
            last_event_at: None,
            last_error: None,
            attempts: 0,
            updated_at: None,
        }
    }

    /// Active and, if it expires, not expired at `now` (RFC 3339).
    pub fn is_live(&self, now: &str) -> bool {
        self.status == SubStatus::Active && self.expires_at.as_deref().is_none_or(|e| e > now)
    }
}

fn sub_sk(p: ProviderId, scope: &str) -> String {
    if scope.is_empty() { format!("sub#{p}") } else { format!("sub#{p}#{scope}") }
}

/// The store of subscriptions, delivery markers and `last_webhook_at`. Built on a tenant session's client
/// (webhooks, control) or on the scheduler's own role (the due index reads across tenants).
#[derive(Clone, Debug)]
pub struct SubscriptionStore {
    client: Client,
    table: String,
}

impl SubscriptionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    fn from_item(item: &Item) -> Option<Subscription> {
        let tenant_id = TenantId::parse(get_s(item, "pk")?).ok()?;
        let rest = get_s(item, "sk")?.strip_prefix("sub#")?;
        let (p, scope) = rest.split_once('#').unwrap_or((rest, ""));
        let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
        let opt = |k: &str| get_s(item, k).map(str::to_owned);
        Some(Subscription {
            tenant_id,
            provider: ProviderId::parse(p).ok()?,
            scope: scope.to_owned(),
            status: SubStatus::parse(get_s(item, "status").unwrap_or_default()),
            client_id: opt("client_id").unwrap_or_default(),
            id: opt("sub_id"),
            expires_at: opt("expires_at"),
            key_sealed: opt("key"),
            last_event_at: opt("last_event_at"),
            last_error: opt("last_error"),
            attempts: n("attempts").unwrap_or(0),
            updated_at: opt("updated_at"),
        })
    }

    /// Asks for the app's subscriptions at the provider: a pending item per scope, due at once, unless an
    /// active one of the same app already exists. The sync-scheduler's tick makes them, so saving an app
    /// never waits for (or fails with) the provider.
    pub async fn request(&self, tenant: &TenantId, p: ProviderId, client_id: &str) -> Result<usize, StoreError> {
        let now = crate::time::now_rfc3339();
        let mut asked = 0;
        for scope in app_scopes(p) {
            let out = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(tenant.as_str()))
                .item("sk", s(sub_sk(p, scope)))
                .item("status", s(SubStatus::Pending.as_str()))
                .item("client_id", s(client_id))
                .item("attempts", AttributeValue::N("0".into()))
                .item("gsi1pk", s(INDEX_PK))
                .item("gsi1sk", s(format!("{now}#{tenant}#{p}#{scope}")))
                .condition_expression("attribute_not_exists(pk) OR #st <> :active OR client_id <> :cid")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":active", s(SubStatus::Active.as_str()))
                .expression_attribute_values(":cid", s(client_id))
                .send()
                .await;
            match out {
                Ok(_) => asked += 1,
                Err(e) if conditional_failed(&e) => {}
                Err(e) => return Err(unavailable("asking for a webhook subscription")(e)),
            }
        }
        Ok(asked)
    }

    /// Stores a subscription as it now stands; `next_check` (RFC 3339) puts it in the due index for the
    /// scheduler (retry, renewal), `None` takes it out.
    pub async fn save(&self, sub: &Subscription, next_check: Option<&str>) -> Result<(), StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(sub.tenant_id.as_str()))
            .item("sk", s(sub_sk(sub.provider, &sub.scope)))
            .item("status", s(sub.status.as_str()))
            .item("client_id", s(&sub.client_id))
            .item("attempts", AttributeValue::N(sub.attempts.to_string()))
            .item("updated_at", s(crate::time::now_rfc3339()));
        let optional = [
            ("sub_id", &sub.id),
            ("expires_at", &sub.expires_at),
            ("key", &sub.key_sealed),
            ("last_event_at", &sub.last_event_at),
            ("last_error", &sub.last_error),
        ];
        for (k, v) in optional {
            if let Some(v) = v {
                req = req.item(k, s(v));
            }
        }
        if let Some(at) = next_check {
            req = req
                .item("gsi1pk", s(INDEX_PK))
                .item("gsi1sk", s(format!("{at}#{}#{}#{}", sub.tenant_id, sub.provider, sub.scope)));
        }
        req.send().await.map_err(unavailable("storing a webhook subscription"))?;
        Ok(())
    }

    pub async fn get(&self, tenant: &TenantId, p: ProviderId, scope: &str) -> Result<Option<Subscription>, StoreError> {
        let sk = sub_sk(p, scope);
        let item = crate::dynamo::get_consistent(
            &self.client,
            &self.table,
            tenant.as_str(),
            &sk,
            "reading a webhook subscription",
        )
        .await?;
        Ok(item.as_ref().and_then(Self::from_item))
    }

    /// The tenant's subscriptions at the provider whose scope starts with `scope_prefix` (`""`: all).
    pub async fn list(
        &self,
        tenant: &TenantId,
        p: ProviderId,
        scope_prefix: &str,
    ) -> Result<Vec<Subscription>, StoreError> {
        let prefix = if scope_prefix.is_empty() { format!("sub#{p}") } else { sub_sk(p, scope_prefix) };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :t AND begins_with(sk, :p)")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":p", s(prefix))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable("listing webhook subscriptions"))?;
        // `sub#oura` must not match `sub#ourax`: keep exact provider matches only.
        Ok(out.items().iter().filter_map(Self::from_item).filter(|sub| sub.provider == p).collect())
    }

    /// Subscriptions the scheduler has something to do for by `now` (RFC 3339), oldest first, across
    /// tenants: the scheduler's own role only.
    pub async fn due(&self, now: &str, limit: i32) -> Result<Vec<Subscription>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :pk AND gsi1sk < :now")
            .expression_attribute_values(":pk", s(INDEX_PK))
            .expression_attribute_values(":now", s(format!("{now}#~")))
            .limit(limit.max(1))
            .send()
            .await
            .map_err(unavailable("reading due webhook subscriptions"))?;
        Ok(out.items().iter().filter_map(Self::from_item).collect())
    }

    /// Records the first delivery of a webhook body; `false` when the same body came before (a provider's
    /// retry or a replay), which callers acknowledge without queueing anything.
    pub async fn first_delivery(&self, tenant: &TenantId, p: ProviderId, body: &[u8]) -> Result<bool, StoreError> {
        let digest = delivery_digest(body);
        let expires = crate::time::now().unix_timestamp() + DELIVERY_TTL_SECONDS;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("hook#{p}#{digest}")))
            .item("ttl", AttributeValue::N(expires.to_string()));
        crate::dynamo::put_if_absent(put, "recording a webhook delivery").await
    }

    /// Stamps a verified event: `last_webhook_at` on the user's connection (the polling fallback reads it
    /// from the due index) and `last_event_at` on the subscription it came through, where there is one.
    pub async fn record_event(
        &self,
        tenant: &TenantId,
        p: ProviderId,
        user: Option<&UserId>,
        scope: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = crate::time::now_rfc3339();
        let mut targets = Vec::new();
        if let Some(user) = user {
            targets.push((format!("conn#{user}#{p}"), "last_webhook_at"));
        }
        if let Some(scope) = scope {
            targets.push((sub_sk(p, scope), "last_event_at"));
        }
        for (sk, field) in targets {
            let out = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(tenant.as_str()))
                .key("sk", s(sk))
                .update_expression(format!("SET {field} = :now"))
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":now", s(&now))
                .send()
                .await;
            match out {
                Ok(_) => {}
                Err(e) if conditional_failed(&e) => {}
                Err(e) => return Err(unavailable("stamping a webhook event")(e)),
            }
        }
        Ok(())
    }
}

impl SubscriptionStore {
    /// The tenant's allow-list of sender addresses for an unsigned provider's webhooks (Withings); empty
    /// means any sender (the known-user check still applies).
    pub async fn allowed_ips(&self, tenant: &TenantId, p: ProviderId) -> Result<Vec<String>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(format!("hookcfg#{p}")))
            .send()
            .await
            .map_err(unavailable("reading a webhook allow-list"))?;
        Ok(out.item.and_then(|i| i.get("allowed_ips").and_then(|v| v.as_ss().ok()).cloned()).unwrap_or_default())
    }

    /// Replaces the allow-list (an empty list removes it).
    pub async fn set_allowed_ips(&self, tenant: &TenantId, p: ProviderId, ips: &[String]) -> Result<(), StoreError> {
        let key = |r: aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder| {
            r.table_name(&self.table).key("pk", s(tenant.as_str())).key("sk", s(format!("hookcfg#{p}")))
        };
        if ips.is_empty() {
            key(self.client.delete_item()).send().await.map_err(unavailable("removing a webhook allow-list"))?;
            return Ok(());
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("hookcfg#{p}")))
            .item("allowed_ips", AttributeValue::Ss(ips.to_vec()))
            .send()
            .await
            .map_err(unavailable("storing a webhook allow-list"))?;
        Ok(())
    }

    /// Forgets a delivery marker, so that the provider's retry of a delivery we could not finish (the
    /// queue was down) is not taken for a duplicate.
    pub async fn forget_delivery(&self, tenant: &TenantId, p: ProviderId, body: &[u8]) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(format!("hook#{p}#{}", delivery_digest(body))))
            .send()
            .await
            .map_err(unavailable("forgetting a webhook delivery"))?;
        Ok(())
    }
}

fn delivery_digest(body: &[u8]) -> String {
    use sha2::Digest;
    Sha256::digest(body).iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_is_live_while_active_and_unexpired() {
        let tenant = TenantId::parse("ten_01hzzzzzzzzzzzzzzzzzzzzzzz").unwrap_or_else(|e| panic!("{e}"));
        let mut sub = Subscription::pending(&tenant, ProviderId::Oura, "create.daily_activity", "c");
        assert!(!sub.is_live("2026-01-01T00:00:00.000Z"));
        sub.status = SubStatus::Active;
        sub.expires_at = Some("2026-02-01T00:00:00.000Z".into());
        assert!(sub.is_live("2026-01-01T00:00:00.000Z"));
        assert!(!sub.is_live("2026-02-01T00:00:00.001Z"));
        sub.expires_at = None;
        assert!(sub.is_live("2030-01-01T00:00:00.000Z"), "a subscription without expiry stays live");
    }

    #[test]
    fn the_verification_token_differs_per_tenant_and_secret() {
        let a = TenantId::parse("ten_01hzzzzzzzzzzzzzzzzzzzzzzz").unwrap_or_else(|e| panic!("{e}"));
        let b = TenantId::parse("ten_01hyyyyyyyyyyyyyyyyyyyyyyy").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verification_token(b"s", &a).len(), 32);
        assert_ne!(verification_token(b"s", &a), verification_token(b"s", &b));
        assert_ne!(verification_token(b"s", &a), verification_token(b"t", &a));
    }
}
