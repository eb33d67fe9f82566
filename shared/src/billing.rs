//! Billing through each tenant's own Stripe account: the tenant's sealed Stripe keys, each user's billing
//! state (customer, subscription, status, period end, when a payment first failed), the customer -> user
//! index and the processed-event markers, all in the tenancy table under the tenant's partition.
//!
//! The domain part (`BillingState`, `Effect`, `effect`) has no AWS types; `BillingStore` is the DynamoDB
//! adapter.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use crate::dynamo::{Item, conditional_failed, get_consistent, get_s, s, unavailable};
use crate::ids::{TenantId, UserId};
use crate::meter::PlanName;
use crate::tenancy::StoreError;
use crate::vault::SecretContext;

/// How long a user whose renewal failed (`past_due`) keeps the paid plan before falling back to the default.
pub const GRACE_PERIOD: Duration = Duration::days(3);

/// How long a processed Stripe event id is remembered (Stripe retries for up to 3 days).
pub const EVENT_MARKER_TTL: Duration = Duration::days(30);

/// Where the tenant's Stripe secret key is sealed.
pub fn secret_key_context(tenant: &TenantId) -> SecretContext {
    SecretContext::tenant(tenant.clone(), "stripe:secret_key")
}

/// Where the tenant's webhook signing secret is sealed.
pub fn webhook_secret_context(tenant: &TenantId) -> SecretContext {
    SecretContext::tenant(tenant.clone(), "stripe:webhook_secret")
}

/// The tenant's Stripe settings as stored: both secrets sealed, with hints that may be shown.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    pub secret_key: String,
    pub secret_key_hint: String,
    pub webhook_secret: String,
    pub webhook_secret_hint: String,
    pub updated_at: String,
}

/// A user's billing state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BillingState {
    pub customer_id: Option<String>,
    pub subscription_id: Option<String>,
    /// Stripe's subscription status (`active`, `trialing`, `past_due`, `canceled`, ...).
    pub status: Option<String>,
    /// The plan the subscription pays for.
    pub plan: Option<PlanName>,
    /// Unix seconds.
    pub current_period_end: Option<i64>,
    /// Unix seconds: when the subscription was first seen `past_due` (cleared when it recovers).
    pub past_due_since: Option<i64>,
}

/// What a user's plan should be, given their billing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The paid plan.
    Paid(PlanName),
    /// Back to the tenant's default plan.
    Default,
    /// Leave the user's plan as it is (nothing paid yet, e.g. `incomplete`).
    Keep,
}

/// Whether a subscription in this status is one the user pays for (or may still pay for).
pub fn is_live(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due")
}

impl BillingState {
    /// When the grace period of a failed renewal ends.
    pub fn grace_ends_at(&self) -> Option<i64> {
        match (self.status.as_deref(), self.past_due_since) {
            (Some("past_due"), Some(since)) => Some(since + GRACE_PERIOD.whole_seconds()),
            _ => None,
        }
    }

    /// The plan this state gives at `now`: paid while active or trialing and during a failed renewal's
    /// grace period; the default once canceled, unpaid or past the grace period.
    pub fn effect(&self, now: OffsetDateTime) -> Effect {
        match (self.status.as_deref(), &self.plan) {
            (Some("active" | "trialing"), Some(plan)) => Effect::Paid(plan.clone()),
            (Some("past_due"), Some(plan)) => match self.grace_ends_at() {
                Some(end) if now.unix_timestamp() >= end => Effect::Default,
                _ => Effect::Paid(plan.clone()),
            },
            (Some("incomplete"), _) | (None, _) => Effect::Keep,
            _ => Effect::Default,
        }
    }
}

/// The billing items of one tenant's partition.
#[derive(Clone)]
pub struct BillingStore {
    client: Client,
    table: String,
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_i(item: &Item, key: &str) -> Option<i64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

impl BillingStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Stores the sealed secrets with their hints; answers `updated_at`.
    pub async fn put_stripe(
        &self,
        tenant: &TenantId,
        secret_key: (&str, &str),
        webhook_secret: (&str, &str),
    ) -> Result<String, StoreError> {
        let now = crate::time::now_rfc3339();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s("stripe_settings"))
            .item("secret_key", s(secret_key.0))
            .item("secret_key_hint", s(secret_key.1))
            .item("webhook_secret", s(webhook_secret.0))
            .item("webhook_secret_hint", s(webhook_secret.1))
            .item("updated_at", s(&now))
            .send()
            .await
            .map_err(unavailable("storing Stripe settings"))?;
        Ok(now)
    }

    pub async fn stripe(&self, tenant: &TenantId) -> Result<Option<StripeSettings>, StoreError> {
        let item =
            get_consistent(&self.client, &self.table, tenant.as_str(), "stripe_settings", "reading Stripe settings")
                .await?;
        Ok(item.and_then(|i| {
            Some(StripeSettings {
                secret_key: get_s(&i, "secret_key")?.to_owned(),
                secret_key_hint: get_s(&i, "secret_key_hint").unwrap_or_default().to_owned(),
                webhook_secret: get_s(&i, "webhook_secret")?.to_owned(),
                webhook_secret_hint: get_s(&i, "webhook_secret_hint").unwrap_or_default().to_owned(),
                updated_at: get_s(&i, "updated_at").unwrap_or_default().to_owned(),
            })
        }))
    }

    pub async fn delete_stripe(&self, tenant: &TenantId) -> Result<(), StoreError> {
        crate::dynamo::delete_existing(
            &self.client,
            &self.table,
            tenant.as_str(),
            "stripe_settings",
            "deleting Stripe settings",
        )
        .await
    }

    /// A user's billing state (the default when they never billed).
    pub async fn state(&self, tenant: &TenantId, user: &UserId) -> Result<BillingState, StoreError> {
        let item =
            get_consistent(&self.client, &self.table, tenant.as_str(), &format!("billing#{user}"), "reading billing")
                .await?;
        let Some(i) = item else { return Ok(BillingState::default()) };
        Ok(BillingState {
            customer_id: get_s(&i, "customer_id").map(str::to_owned),
            subscription_id: get_s(&i, "subscription_id").map(str::to_owned),
            status: get_s(&i, "status").map(str::to_owned),
            plan: get_s(&i, "plan").and_then(|p| PlanName::parse(p).ok()),
            current_period_end: get_i(&i, "current_period_end"),
            past_due_since: get_i(&i, "past_due_since"),
        })
    }

    /// Records the user's Stripe customer, unless they already have one: answers the customer to use (the
    /// one stored first), and indexes it `stripe_customer#<id>` -> user.
    pub async fn set_customer(&self, tenant: &TenantId, user: &UserId, customer: &str) -> Result<String, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(format!("billing#{user}")))
            .update_expression("SET customer_id = :c, updated_at = :now")
            .condition_expression("attribute_not_exists(customer_id)")
            .expression_attribute_values(":c", s(customer))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()))
            .send()
            .await;
        let chosen = match out {
            Ok(_) => customer.to_owned(),
            Err(e) if conditional_failed(&e) => {
                self.state(tenant, user).await?.customer_id.unwrap_or_else(|| customer.to_owned())
            }
            Err(e) => return Err(unavailable("storing a Stripe customer")(e)),
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("stripe_customer#{chosen}")))
            .item("user_id", s(user.as_str()))
            .send()
            .await
            .map_err(unavailable("indexing a Stripe customer"))?;
        Ok(chosen)
    }

    /// The user a Stripe customer belongs to.
    pub async fn user_of_customer(&self, tenant: &TenantId, customer: &str) -> Result<Option<UserId>, StoreError> {
        let item = get_consistent(
            &self.client,
            &self.table,
            tenant.as_str(),
            &format!("stripe_customer#{customer}"),
            "reading a Stripe customer",
        )
        .await?;
        Ok(item.as_ref().and_then(|i| get_s(i, "user_id")).and_then(|u| UserId::parse(u).ok()))
    }

    /// Replaces the user's subscription fields with what Stripe answered when asked at `read_at_ms` (unix
    /// milliseconds), unless a later read was stored already (two webhooks racing): `false` then, and nothing
    /// changed.
    pub async fn put_state(
        &self,
        tenant: &TenantId,
        user: &UserId,
        st: &BillingState,
        read_at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut set = vec!["updated_at = :now", "read_at = :read"];
        let mut remove = Vec::new();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(format!("billing#{user}")))
            .condition_expression("attribute_not_exists(read_at) OR read_at <= :read")
            .expression_attribute_values(":read", n(read_at_ms))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()));
        let fields: [(&str, &str, Option<AttributeValue>); 6] = [
            ("customer_id", ":cus", st.customer_id.as_deref().map(s)),
            ("subscription_id", ":sub", st.subscription_id.as_deref().map(s)),
            ("#status", ":st", st.status.as_deref().map(s)),
            ("#plan", ":plan", st.plan.as_ref().map(|p| s(p.as_str()))),
            ("current_period_end", ":end", st.current_period_end.map(n)),
            ("past_due_since", ":pds", st.past_due_since.map(n)),
        ];
        let mut exprs = Vec::new();
        for (name, value, v) in fields {
            match v {
                Some(v) => {
                    exprs.push(format!("{name} = {value}"));
                    req = req.expression_attribute_values(value, v);
                }
                None if name == "customer_id" => {}
                None => remove.push(name),
            }
        }
        set.extend(exprs.iter().map(String::as_str));
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let req = req
            .update_expression(expr)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#plan", "plan");
        crate::dynamo::update_if(req, "storing billing state").await
    }

    /// Whether a Stripe event was processed already.
    pub async fn event_seen(&self, tenant: &TenantId, event: &str) -> Result<bool, StoreError> {
        let item = get_consistent(
            &self.client,
            &self.table,
            tenant.as_str(),
            &format!("stripe_evt#{event}"),
            "reading a Stripe event marker",
        )
        .await?;
        Ok(item.is_some())
    }

    /// Marks a Stripe event processed (a conditional put); `false` when it was marked already.
    pub async fn mark_event(&self, tenant: &TenantId, event: &str, kind: &str) -> Result<bool, StoreError> {
        let now = crate::time::now();
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("stripe_evt#{event}")))
            .item("type", s(kind))
            .item("processed_at", s(crate::time::format(now)))
            .item("ttl", n((now + EVENT_MARKER_TTL).unix_timestamp()));
        crate::dynamo::put_if_absent(put, "marking a Stripe event").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, since: Option<i64>) -> BillingState {
        BillingState {
            status: Some(status.into()),
            plan: PlanName::parse("pro").ok(),
            past_due_since: since,
            ..BillingState::default()
        }
    }

    #[test]
    fn a_past_due_user_keeps_the_paid_plan_until_the_grace_period_ends() {
        let since = 1_800_000_000;
        let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let pro = PlanName::parse("pro").ok();
        let s = state("past_due", Some(since));
        assert_eq!(s.effect(at(since + 3600)), Effect::Paid(pro.clone().unwrap_or_else(|| unreachable!())));
        assert_eq!(s.effect(at(since + GRACE_PERIOD.whole_seconds())), Effect::Default);
        assert_eq!(state("canceled", None).effect(at(since)), Effect::Default);
        assert_eq!(state("incomplete", None).effect(at(since)), Effect::Keep);
    }
}
