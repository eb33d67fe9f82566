//! Webhooks out, stored: a tenant's endpoint (URL, subscribed event types, signing secret sealed in the
//! vault) and one delivery item per event sent to it, with its attempts. Signatures follow Stripe's scheme:
//! `Tenantry-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.

use anyhow::Context;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::dynamo::{
    Item, conditional_failed, delete_existing, get_consistent, get_s, old_item, req_s, s, unavailable,
};
use crate::events::EventType;
use crate::http::Page;
use crate::ids::TenantId;
use crate::tenancy::StoreError;

pub const SIGNATURE_HEADER: &str = "Tenantry-Signature";
pub const EVENT_ID_HEADER: &str = "Tenantry-Event-Id";

const ENDPOINT_SK: &str = "webhook_endpoint";
const DELIVERY_PREFIX: &str = "whd#";

/// The vault context of the tenant's webhook signing secret.
pub fn secret_context(tenant: &TenantId) -> crate::vault::SecretContext {
    crate::vault::SecretContext::tenant(tenant.clone(), "webhook_secret")
}

/// A new signing secret, shown to the tenant and stored sealed.
pub fn mint_secret() -> String {
    format!("whsec_{}", crate::apikey::random_secret())
}

/// The signature header value for `body` sent at unix time `t`.
pub fn signature(secret: &[u8], t: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot run.
        Err(_) => return format!("t={t},v1="),
    };
    mac.update(format!("{t}.{body}").as_bytes());
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

/// A tenant's webhook endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub url: String,
    pub events: Vec<EventType>,
    #[serde(skip)]
    pub secret_sealed: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Endpoint {
    /// Whether events of this type go to the endpoint (a `ping` always does).
    pub fn wants(&self, kind: EventType) -> bool {
        kind == EventType::Ping || self.events.contains(&kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed].into_iter().find(|s| s.as_str() == raw)
    }
}

/// One event on its way to the tenant's endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
    pub created_at: String,
    /// Until when a worker holds the current attempt.
    #[serde(skip)]
    pub lease_until: Option<String>,
    /// The event as the endpoint receives it, byte for byte, so a replay sends the same body.
    #[serde(skip)]
    pub body: String,
}

impl Delivery {
    /// A pending delivery of an event body, due now.
    pub fn new(id: String, event_id: &str, kind: EventType, body: String) -> Self {
        let now = crate::time::now_rfc3339();
        Self {
            id,
            event_id: event_id.to_owned(),
            kind: kind.as_str().to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            last_status_code: None,
            last_error: None,
            next_attempt_at: Some(now.clone()),
            created_at: now,
            lease_until: None,
            body,
        }
    }

    /// The first delivery of an event has an id derived from the event's, so a redelivered queue message
    /// finds it instead of making a second one.
    pub fn id_for_event(event_id: &str) -> String {
        format!("whd_{}", event_id.strip_prefix("evt_").unwrap_or(event_id))
    }

    /// A fresh delivery id (a replay).
    pub fn new_id() -> String {
        format!("whd_{}", ulid::Ulid::new().to_string().to_lowercase())
    }

    /// Whether `raw` has the shape of a delivery id (anything else is simply absent).
    pub fn valid_id(raw: &str) -> bool {
        raw.len() == 30 && raw.starts_with("whd_") && raw[4..].chars().all(|c| c.is_ascii_alphanumeric())
    }
}

/// What asking for an attempt returned.
#[derive(Debug)]
pub enum Claim {
    /// This caller may make the attempt now; the delivery as claimed (attempts already counted).
    Granted(Delivery),
    /// Not now: delivered, failed, not yet due, or another worker is attempting it. The delivery as it is.
    Refused(Option<Delivery>),
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: DeliveryStatus,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// When pending: when the next attempt is due.
    pub next_attempt_at: Option<String>,
}

/// The index of the deliveries whose event is about one end user (gsi1).
pub fn deliveries_index(tenant: &TenantId, user: &str) -> String {
    format!("{tenant}#deliveries#{user}")
}

/// The end user an event body is about (`data.user_id`), if any.
fn user_of_event(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let user = v.get("data")?.get("user_id")?.as_str()?;
    crate::ids::UserId::parse(user).ok().map(|u| u.to_string())
}

fn delivery_sk(id: &str) -> String {
    format!("{DELIVERY_PREFIX}{id}")
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn num<T: std::str::FromStr>(item: &Item, key: &str) -> Option<T> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

fn delivery_from(item: &Item) -> anyhow::Result<Delivery> {
    Ok(Delivery {
        id: req_s(item, "delivery_id")?,
        event_id: req_s(item, "event_id")?,
        kind: req_s(item, "type")?,
        status: DeliveryStatus::parse(&req_s(item, "status")?).context("stored delivery status")?,
        attempts: num(item, "attempts").unwrap_or(0),
        last_status_code: num(item, "last_status_code"),
        last_error: get_s(item, "last_error").map(str::to_owned),
        next_attempt_at: get_s(item, "next_attempt_at").map(str::to_owned),
        created_at: req_s(item, "created_at")?,
        lease_until: get_s(item, "lease_until").map(str::to_owned),
        body: req_s(item, "event")?,
    })
}

/// The endpoint and deliveries of tenants, in the tenancy table (see docs/data-model.md).
#[derive(Clone, Debug)]
pub struct NotifyStore {
    client: Client,
    table: String,
}

impl NotifyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub async fn put_endpoint(&self, tenant: &TenantId, e: &Endpoint) -> Result<(), StoreError> {
        let events = e.events.iter().map(|t| t.as_str().to_owned()).collect();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(ENDPOINT_SK))
            .item("url", s(&e.url))
            .item("events", AttributeValue::Ss(events))
            .item("secret", s(&e.secret_sealed))
            .item("created_at", s(&e.created_at))
            .item("updated_at", s(&e.updated_at))
            .send()
            .await
            .map_err(unavailable("storing a webhook endpoint"))?;
        Ok(())
    }

    pub async fn endpoint(&self, tenant: &TenantId) -> Result<Option<Endpoint>, StoreError> {
        let item =
            get_consistent(&self.client, &self.table, tenant.as_str(), ENDPOINT_SK, "reading a webhook endpoint")
                .await?;
        let Some(item) = item else { return Ok(None) };
        let events = item.get("events").and_then(|v| v.as_ss().ok()).cloned().unwrap_or_default();
        Ok(Some(Endpoint {
            url: req_s(&item, "url")?,
            // A type no longer known is skipped rather than failing every delivery.
            events: events.iter().filter_map(|t| EventType::parse(t).ok()).collect(),
            secret_sealed: req_s(&item, "secret")?,
            created_at: req_s(&item, "created_at")?,
            updated_at: req_s(&item, "updated_at")?,
        }))
    }

    /// Removes the endpoint; `NotFound` when there is none.
    pub async fn delete_endpoint(&self, tenant: &TenantId) -> Result<(), StoreError> {
        delete_existing(&self.client, &self.table, tenant.as_str(), ENDPOINT_SK, "deleting a webhook endpoint").await
    }

    /// Stores a new delivery; `false` when one with its id exists already (a redelivered message).
    pub async fn create_delivery(&self, tenant: &TenantId, d: &Delivery) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(delivery_sk(&d.id)))
            .item("delivery_id", s(&d.id))
            .item("event_id", s(&d.event_id))
            .item("type", s(&d.kind))
            .item("event", s(&d.body))
            .item("status", s(d.status.as_str()))
            .item("attempts", n(d.attempts))
            .item("created_at", s(&d.created_at))
            .item("updated_at", s(&d.created_at));
        if let Some(at) = &d.next_attempt_at {
            req = req.item("next_attempt_at", s(at));
        }
        // A delivery about one end user is indexed by them, so their purge deletes it without a scan.
        if let Some(user) = user_of_event(&d.body) {
            req = req.item("gsi1pk", s(deliveries_index(tenant, &user))).item("gsi1sk", s(delivery_sk(&d.id)));
        }
        crate::dynamo::put_if_absent(req, "storing a webhook delivery").await
    }

    pub async fn delivery(&self, tenant: &TenantId, id: &str) -> Result<Option<Delivery>, StoreError> {
        let sk = delivery_sk(id);
        let item =
            get_consistent(&self.client, &self.table, tenant.as_str(), &sk, "reading a webhook delivery").await?;
        Ok(item.as_ref().map(delivery_from).transpose()?)
    }

    /// Removes a delivery that was never queued (a replay whose message could not be sent).
    pub async fn delete_delivery(&self, tenant: &TenantId, id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(delivery_sk(id)))
            .send()
            .await
            .map_err(unavailable("deleting a webhook delivery"))?;
        Ok(())
    }

    /// Deliveries newest first (ids are ULIDs); the cursor is the last sort key.
    pub async fn deliveries(
        &self,
        tenant: &TenantId,
        page: &Page,
    ) -> Result<(Vec<Delivery>, Option<String>), StoreError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :t AND begins_with(sk, :p)")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":p", s(DELIVERY_PREFIX))
            .scan_index_forward(false)
            .limit(page.limit);
        if let Some(after) = &page.after {
            if !after.starts_with(DELIVERY_PREFIX) {
                return Err(StoreError::BadCursor);
            }
            q = q.exclusive_start_key("pk", s(tenant.as_str())).exclusive_start_key("sk", s(after));
        }
        let out = q.send().await.map_err(unavailable("listing webhook deliveries"))?;
        let next = out.last_evaluated_key().and_then(|k| get_s(k, "sk")).map(str::to_owned);
        Ok((out.items().iter().map(delivery_from).collect::<anyhow::Result<_>>()?, next))
    }

    /// Claims the next attempt: granted only while the delivery is pending, due, and not being attempted
    /// by another worker (a lease until `lease_until`). Counts the attempt.
    pub async fn claim(&self, tenant: &TenantId, id: &str, now: &str, lease_until: &str) -> Result<Claim, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(delivery_sk(id)))
            .update_expression(
                "SET attempts = attempts + :one, lease_until = :lease, next_attempt_at = :lease, updated_at = :now",
            )
            .condition_expression(
                "#st = :pending AND next_attempt_at <= :now AND (attribute_not_exists(lease_until) OR lease_until <= :now)",
            )
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":lease", s(lease_until))
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match out {
            Ok(out) => Ok(Claim::Granted(delivery_from(out.attributes().context("update returned no item")?)?)),
            Err(e) if conditional_failed(&e) => {
                Ok(Claim::Refused(old_item(&e).as_ref().map(delivery_from).transpose()?))
            }
            Err(e) => Err(unavailable("claiming a webhook delivery attempt")(e)),
        }
    }

    /// Records how an attempt ended and releases the lease. Only a pending delivery changes, so a late
    /// worker never turns a delivered one back.
    pub async fn finish(&self, tenant: &TenantId, id: &str, o: &Outcome) -> Result<(), StoreError> {
        let mut set = vec!["#st = :st", "updated_at = :now"];
        let mut remove = vec!["lease_until"];
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant.as_str()))
            .key("sk", s(delivery_sk(id)))
            .condition_expression("#st = :pending")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":st", s(o.status.as_str()))
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":now", s(crate::time::now_rfc3339()));
        match o.status_code {
            Some(code) => {
                set.push("last_status_code = :code");
                req = req.expression_attribute_values(":code", n(code));
            }
            None => remove.push("last_status_code"),
        }
        match &o.error {
            Some(error) => {
                set.push("last_error = :error");
                req = req.expression_attribute_values(":error", s(error));
            }
            None => remove.push("last_error"),
        }
        match &o.next_attempt_at {
            Some(at) => {
                set.push("next_attempt_at = :next");
                req = req.expression_attribute_values(":next", s(at));
            }
            None => remove.push("next_attempt_at"),
        }
        let out = req.update_expression(format!("SET {} REMOVE {}", set.join(", "), remove.join(", "))).send().await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if conditional_failed(&e) => Err(StoreError::Conflict("the delivery is no longer pending".into())),
            Err(e) => Err(unavailable("recording a webhook delivery attempt")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripes_scheme_over_the_timestamp_and_raw_body() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently with openssl.
        let sig = signature(b"whsec_test", 1_700_000_000, "{}");
        assert_eq!(sig, "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91");
        assert_ne!(sig, signature(b"whsec_other", 1_700_000_000, "{}"));
        assert_ne!(sig, signature(b"whsec_test", 1_700_000_001, "{}"));
    }

    #[test]
    fn the_first_delivery_of_an_event_has_a_stable_id() {
        let id = Delivery::id_for_event("evt_01jdzz0000000000000000000e");
        assert_eq!(id, "whd_01jdzz0000000000000000000e");
        assert!(Delivery::valid_id(&id) && Delivery::valid_id(&Delivery::new_id()));
        assert!(!Delivery::valid_id("whd_../x") && !Delivery::valid_id("evt_01jdzz0000000000000000000e"));
    }
}
