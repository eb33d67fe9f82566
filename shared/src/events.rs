//! Events out: what other functions emit when something a tenant may care about happens (a connection made,
//! new data, a finished backfill). Emitting puts one message per event on the notify queue
//! (`NOTIFY_QUEUE_URL`); the notifier function delivers it, signed, to the tenant's webhook endpoint.
//! Emitting never blocks the caller's work: it returns a `Result` the caller logs.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::ids::{TenantId, UserId};
use crate::providers::ProviderId;

/// The kinds of events a tenant can subscribe to, plus `ping` (sent on request, to test an endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "connection.created")]
    ConnectionCreated,
    #[serde(rename = "connection.updated")]
    ConnectionUpdated,
    #[serde(rename = "connection.error")]
    ConnectionError,
    #[serde(rename = "data.updated")]
    DataUpdated,
    #[serde(rename = "backfill.completed")]
    BackfillCompleted,
    #[serde(rename = "usage.threshold")]
    UsageThreshold,
    #[serde(rename = "ping")]
    Ping,
}

impl EventType {
    /// What a tenant may subscribe to (`ping` is always delivered).
    pub const SUBSCRIBABLE: [Self; 6] = [
        Self::ConnectionCreated,
        Self::ConnectionUpdated,
        Self::ConnectionError,
        Self::DataUpdated,
        Self::BackfillCompleted,
        Self::UsageThreshold,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionCreated => "connection.created",
            Self::ConnectionUpdated => "connection.updated",
            Self::ConnectionError => "connection.error",
            Self::DataUpdated => "data.updated",
            Self::BackfillCompleted => "backfill.completed",
            Self::UsageThreshold => "usage.threshold",
            Self::Ping => "ping",
        }
    }

    /// A subscribable type by name; the error lists the known ones.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::SUBSCRIBABLE.into_iter().find(|t| t.as_str() == raw).ok_or_else(|| {
            let known: Vec<&str> = Self::SUBSCRIBABLE.iter().map(|t| t.as_str()).collect();
            format!("unknown event type `{raw}`; known types: {}", known.join(", "))
        })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event. The tenant's endpoint receives [`Event::body`]: `{id, type, created, data}`; the tenant id
/// only routes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_` and a lowercase ULID; the receiver's key for ignoring duplicates.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// RFC 3339 UTC.
    pub created: String,
    pub tenant_id: TenantId,
    pub data: Value,
}

impl Event {
    fn new(tenant: &TenantId, kind: EventType, data: Value) -> Self {
        Self {
            id: format!("evt_{}", ulid::Ulid::new().to_string().to_lowercase()),
            kind,
            created: crate::time::now_rfc3339(),
            tenant_id: tenant.clone(),
            data,
        }
    }

    /// A user connected a provider.
    pub fn connection_created(tenant: &TenantId, user: &UserId, provider: ProviderId) -> Self {
        let data = json!({"user_id": user, "provider": provider, "status": "connected"});
        Self::new(tenant, EventType::ConnectionCreated, data)
    }

    /// A connection changed status (`connected`, `syncing`, `disconnected`, ...), with why when known.
    pub fn connection_updated(
        tenant: &TenantId,
        user: &UserId,
        provider: ProviderId,
        status: &str,
        reason: Option<&str>,
    ) -> Self {
        let data = json!({"user_id": user, "provider": provider, "status": status, "reason": reason});
        Self::new(tenant, EventType::ConnectionUpdated, data)
    }

    /// A connection stopped working (`needs_reauthorization`, `error`) and why.
    pub fn connection_error(
        tenant: &TenantId,
        user: &UserId,
        provider: ProviderId,
        status: &str,
        reason: &str,
    ) -> Self {
        let data = json!({"user_id": user, "provider": provider, "status": status, "reason": reason});
        Self::new(tenant, EventType::ConnectionError, data)
    }

    /// New or changed data: which metrics on which of the user's local dates (`YYYY-MM-DD`).
    pub fn data_updated(
        tenant: &TenantId,
        user: &UserId,
        provider: ProviderId,
        metrics: &[&str],
        dates: &[String],
    ) -> Self {
        Self::data_updated_from(tenant, user, provider.as_str(), metrics, dates)
    }

    /// `data.updated` from any source (`apple_health` imports and pushes as well as providers).
    pub fn data_updated_from(
        tenant: &TenantId,
        user: &UserId,
        source: &str,
        metrics: &[&str],
        dates: &[String],
    ) -> Self {
        let data = json!({"user_id": user, "provider": source, "metrics": metrics, "dates": dates});
        Self::new(tenant, EventType::DataUpdated, data)
    }

    /// A first-connect backfill finished: how many days it covered and how many records it wrote.
    pub fn backfill_completed(tenant: &TenantId, user: &UserId, provider: ProviderId, days: u32, records: u64) -> Self {
        let data = json!({"user_id": user, "provider": provider, "days": days, "records": records});
        Self::new(tenant, EventType::BackfillCompleted, data)
    }

    /// A test event for the tenant's endpoint.
    /// A user's AI usage passed `percent` of the plan's monthly tokens (once a period).
    pub fn usage_threshold(
        tenant: &TenantId,
        user: &UserId,
        period: &str,
        percent: u64,
        tokens_committed: u64,
        tokens_limit: u64,
    ) -> Self {
        let data = json!({
            "user_id": user, "period": period, "percent": percent,
            "tokens_committed": tokens_committed, "tokens_limit": tokens_limit,
        });
        Self::new(tenant, EventType::UsageThreshold, data)
    }

    pub fn ping(tenant: &TenantId) -> Self {
        Self::new(tenant, EventType::Ping, json!({"message": "webhook endpoint test from Tenantry"}))
    }

    /// The JSON the tenant's endpoint receives (and the signature covers).
    pub fn body(&self) -> String {
        json!({"id": self.id, "type": self.kind, "created": self.created, "data": self.data}).to_string()
    }
}

/// A message on the notify queue: an event, and on retries and replays the delivery it continues and when
/// it is due (waits longer than SQS's 15-minute delay are re-sent until due).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub event: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    /// RFC 3339; the message is not worked on before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

/// The notify queue (`NOTIFY_QUEUE_URL`), or its dead-letter queue.
#[derive(Clone, Debug)]
pub struct Events {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Events {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }

    /// Queues the event for delivery to its tenant's endpoint (dropped there if none is subscribed).
    pub async fn emit(&self, event: &Event) -> anyhow::Result<()> {
        self.send(&Notice { event: event.clone(), delivery_id: None, not_before: None }, 0).await
    }

    /// Queues a notice that becomes visible after `delay_seconds` (clamped to SQS's 0..=900).
    pub async fn send(&self, notice: &Notice, delay_seconds: i64) -> anyhow::Result<()> {
        let delay = i32::try_from(delay_seconds.clamp(0, 900)).unwrap_or(900);
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(serde_json::to_string(notice)?)
            .delay_seconds(delay)
            .send()
            .await
            .with_context(|| format!("queueing {} event {}", notice.event.kind, notice.event.id))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_parse_by_their_wire_names_and_unknown_ones_list_the_known() {
        for t in EventType::SUBSCRIBABLE {
            assert_eq!(EventType::parse(t.as_str()), Ok(t));
            assert_eq!(serde_json::to_value(t).ok(), Some(json!(t.as_str())));
        }
        let e = EventType::parse("data.deleted").err().unwrap_or_default();
        assert!(e.contains("data.updated") && e.contains("backfill.completed"), "{e}");
        assert!(EventType::parse("ping").is_err(), "ping is not a subscription");
    }

    #[test]
    fn the_body_has_id_type_created_and_data_but_not_the_tenant() {
        let tenant = TenantId::generate();
        let user = UserId::generate();
        let e = Event::data_updated(&tenant, &user, ProviderId::Oura, &["steps"], &["2026-11-29".into()]);
        let body: Value = serde_json::from_str(&e.body()).unwrap_or_default();
        assert_eq!(body["type"], "data.updated");
        assert!(body["id"].as_str().is_some_and(|i| i.starts_with("evt_") && i.len() == 30));
        assert_eq!(body["data"]["dates"], json!(["2026-11-29"]));
        assert_eq!(body["data"]["user_id"], json!(user));
        assert!(!e.body().contains(tenant.as_str()));
    }

    #[test]
    fn a_notice_round_trips_through_its_queue_json() {
        let e = Event::connection_created(&TenantId::generate(), &UserId::generate(), ProviderId::Oura);
        let n = Notice { event: e, delivery_id: Some("whd_x".into()), not_before: None };
        let text = serde_json::to_string(&n).unwrap_or_default();
        assert!(!text.contains("not_before"));
        assert_eq!(serde_json::from_str::<Notice>(&text).ok(), Some(n));
    }
}
