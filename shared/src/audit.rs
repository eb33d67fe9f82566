//! The tenant's audit log: who did what and when (keys created or revoked, settings changed, users disabled,
//! exports, deletions). Append-only: entries are put only if absent and nothing in the API changes or
//! removes one. Items live in the tenant's partition of the tenancy table, `sk = audit#<ulid>` (time
//! ordered); an entry about one end user also carries `gsi1pk = <tenant>#audit#<user>`, so the user's
//! entries can be exported, and pseudonymized when the user is purged, without a scan.
//!
//! Entries hold ids and setting names, never personal data (no emails, no health data, no secrets).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Principal;
use crate::dynamo::{Item, get_s, query_all, s, unavailable};
use crate::http::Page;
use crate::ids::{TenantId, UserId};
use crate::tenancy::StoreError;

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Actor {
    /// The Tenantry operator (the operator key).
    Operator,
    /// One of the tenant's API keys.
    ApiKey { id: String },
    /// An end user signed in with the tenant's login.
    EndUser { id: String },
    /// Tenantry itself (a scheduled purge, a webhook from Stripe).
    System { name: String },
}

impl Actor {
    /// A tenant API key.
    pub fn key(id: &crate::ids::KeyId) -> Self {
        Self::ApiKey { id: id.to_string() }
    }

    pub fn of(principal: &Principal) -> Self {
        match principal {
            Principal::Operator => Self::Operator,
            Principal::Tenant { key_id, .. } => Self::ApiKey { id: key_id.to_string() },
            Principal::EndUser { user_id, .. } => Self::EndUser { id: user_id.to_string() },
            Principal::Anonymous { .. } => Self::System { name: "anonymous".into() },
        }
    }

    pub fn system(name: &str) -> Self {
        Self::System { name: name.to_owned() }
    }
}

/// One thing that happened, to be recorded.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub actor: Actor,
    /// `<object>.<verb>`, e.g. `api_key.created`, `settings.stripe.updated`, `user.disabled`.
    pub action: String,
    /// What it was done to: `(type, id)`, e.g. `("api_key", "key_...")`.
    pub target: Option<(String, String)>,
    /// The end user it concerns, if any (indexed, for the user's export and purge).
    pub user: Option<UserId>,
    /// Non-personal details: changed setting names, counts, a plan name.
    pub details: Value,
}

impl NewEntry {
    pub fn new(actor: Actor, action: impl Into<String>) -> Self {
        Self { actor, action: action.into(), target: None, user: None, details: Value::Null }
    }

    pub fn target(mut self, kind: &str, id: impl ToString) -> Self {
        self.target = Some((kind.to_owned(), id.to_string()));
        self
    }

    /// Marks the entry as about `user` (and targets them unless a target is set).
    pub fn about(mut self, user: &UserId) -> Self {
        if self.target.is_none() {
            self.target = Some(("user".to_owned(), user.to_string()));
        }
        self.user = Some(user.clone());
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// The audit log of the tenancy table.
#[derive(Clone)]
pub struct AuditStore {
    client: Client,
    table: String,
}

fn user_index(tenant: &TenantId, user: &UserId) -> String {
    format!("{tenant}#audit#{user}")
}

/// An entry as the API shows it.
pub fn entry_json(item: &Item) -> Value {
    let parse = |k: &str| get_s(item, k).and_then(|d| serde_json::from_str::<Value>(d).ok()).unwrap_or(Value::Null);
    serde_json::json!({
        "id": get_s(item, "id"),
        "at": get_s(item, "at"),
        "actor": parse("actor"),
        "action": get_s(item, "action"),
        "target": get_s(item, "target_type").map(|t| serde_json::json!({"type": t, "id": get_s(item, "target_id")})),
        "user_id": get_s(item, "user_id"),
        "details": parse("details"),
    })
}

impl AuditStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Appends an entry; its id (`aud_<ulid>`).
    pub async fn record(&self, tenant: &TenantId, entry: NewEntry) -> Result<String, StoreError> {
        let ulid = ulid::Ulid::new().to_string().to_lowercase();
        let id = format!("aud_{ulid}");
        let actor = serde_json::to_string(&entry.actor).map_err(|e| StoreError::Unavailable(e.into()))?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(tenant.as_str()))
            .item("sk", s(format!("audit#{ulid}")))
            .item("id", s(&id))
            .item("at", s(crate::time::now_rfc3339()))
            .item("actor", s(actor))
            .item("action", s(&entry.action))
            .condition_expression("attribute_not_exists(sk)");
        if let Some((kind, target)) = &entry.target {
            put = put.item("target_type", s(kind)).item("target_id", s(target));
        }
        if let Some(user) = &entry.user {
            put = put
                .item("user_id", s(user.as_str()))
                .item("gsi1pk", s(user_index(tenant, user)))
                .item("gsi1sk", s(format!("audit#{ulid}")));
        }
        if !entry.details.is_null() {
            put = put.item("details", s(entry.details.to_string()));
        }
        put.send().await.map_err(unavailable("recording an audit entry"))?;
        tracing::info!(tenant_id = %tenant, audit_id = %id, action = %entry.action, "audited");
        Ok(id)
    }

    /// [`record`](Self::record) after the change it describes is made: a failure to record does not undo
    /// the change, so it is logged with the whole entry (and the error) instead of failing the request.
    pub async fn record_or_log(&self, tenant: &TenantId, entry: NewEntry) {
        let (action, target) = (entry.action.clone(), entry.target.clone());
        if let Err(e) = self.record(tenant, entry).await {
            tracing::error!(tenant_id = %tenant, action = %action, target = ?target, error = ?e, "audit entry not recorded");
        }
    }

    /// A page of the log, newest first; the cursor is the last entry's sort key.
    pub async fn list(&self, tenant: &TenantId, page: &Page) -> Result<(Vec<Value>, Option<String>), StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :a)")
            .expression_attribute_values(":pk", s(tenant.as_str()))
            .expression_attribute_values(":a", s("audit#"))
            .scan_index_forward(false)
            .limit(page.limit);
        if let Some(after) = &page.after {
            if !after.starts_with("audit#") {
                return Err(StoreError::BadCursor);
            }
            query = query.exclusive_start_key("pk", s(tenant.as_str())).exclusive_start_key("sk", s(after));
        }
        let out = query.send().await.map_err(unavailable("reading the audit log"))?;
        let next = out.last_evaluated_key().and_then(|k| get_s(k, "sk")).map(str::to_owned);
        Ok((out.items().iter().map(entry_json).collect(), next))
    }

    /// Every entry about one user, oldest first (their export; their purge).
    pub async fn of_user(&self, tenant: &TenantId, user: &UserId) -> Result<Vec<Item>, StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("gsi1")
            .key_condition_expression("gsi1pk = :u")
            .expression_attribute_values(":u", s(user_index(tenant, user)));
        query_all(query, "reading a user's audit entries").await
    }

    /// After a purge: the user's entries stay in the log (what happened, when, by whom) but no longer name
    /// them: the user id becomes `pseudonym`, and the entries leave the user's index.
    pub async fn pseudonymize(&self, tenant: &TenantId, user: &UserId, pseudonym: &str) -> Result<usize, StoreError> {
        let items = self.of_user(tenant, user).await?;
        for item in &items {
            let Some(sk) = get_s(item, "sk") else { continue };
            let mut update = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(tenant.as_str()))
                .key("sk", s(sk))
                .expression_attribute_values(":p", AttributeValue::S(pseudonym.to_owned()));
            let mut set = vec!["user_id = :p"];
            if get_s(item, "target_id") == Some(user.as_str()) {
                set.push("target_id = :p");
            }
            if get_s(item, "actor").is_some_and(|a| a.contains(user.as_str())) {
                let actor = serde_json::to_string(&Actor::EndUser { id: pseudonym.to_owned() })
                    .map_err(|e| StoreError::Unavailable(e.into()))?;
                update = update.expression_attribute_values(":a", AttributeValue::S(actor));
                set.push("actor = :a");
            }
            update = update.update_expression(format!("SET {} REMOVE gsi1pk, gsi1sk", set.join(", ")));
            update.send().await.map_err(unavailable("pseudonymizing an audit entry"))?;
        }
        Ok(items.len())
    }
}

/// Where an audited route's target id comes from.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    None,
    /// A path parameter, e.g. `key_id`.
    Param(&'static str, &'static str),
    /// A field of the JSON answer, e.g. the new key's `id`.
    Answer(&'static str, &'static str),
}

/// What a successful call of one route records.
#[derive(Debug, Clone, Copy)]
pub struct Audited {
    pub action: &'static str,
    pub target: Target,
    /// The path parameter naming the end user the call is about, if any.
    pub user_param: Option<&'static str>,
    /// Fields of the JSON answer copied into the details (never personal data: a status, a plan name).
    pub details: &'static [&'static str],
}

impl Audited {
    pub const fn new(action: &'static str, target: Target) -> Self {
        Self { action, target, user_param: None, details: &[] }
    }

    pub const fn about(mut self, user_param: &'static str) -> Self {
        self.user_param = Some(user_param);
        self
    }

    pub const fn with(mut self, details: &'static [&'static str]) -> Self {
        self.details = details;
        self
    }
}

/// Which route records what: `(method, route template)` to an entry; routes not listed record nothing.
pub type AuditTable = fn(&axum::http::Method, &str) -> Option<Audited>;

/// Route middleware (`Router::route_layer`): after a 2xx answer of a listed route, records who did it (the
/// principal), the action, its target and details, in the acting tenant's log (for the operator: the tenant
/// its path or answer names). The answer is passed on unchanged.
pub async fn trail(
    axum::extract::State((stores, table)): axum::extract::State<(crate::tenancy::Stores, AuditTable)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    let (mut parts, body) = req.into_parts();
    let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let audited = route.as_deref().and_then(|r| table(&parts.method, r));
    let Some(audited) = audited else {
        return next.run(axum::extract::Request::from_parts(parts, body)).await;
    };
    let principal = Principal::from_request_parts(&mut parts, &()).await.ok();
    let params = axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(&mut parts, &())
        .await
        .map(|p| p.0)
        .unwrap_or_default();
    let response = next.run(axum::extract::Request::from_parts(parts, body)).await;
    if !response.status().is_success() {
        return response;
    }
    let (head, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        tracing::error!(action = audited.action, "audited answer unreadable");
        return axum::response::Response::from_parts(head, axum::body::Body::empty());
    };
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let field = |f: &str| answer.get(f).and_then(|v| v.as_str().map(str::to_owned));
    let (tenant, actor) = match &principal {
        Some(p @ (Principal::Tenant { tenant_id, .. } | Principal::EndUser { tenant_id, .. })) => {
            (Some(tenant_id.clone()), Actor::of(p))
        }
        Some(Principal::Operator) => {
            let named = params.get("tenant_id").cloned().or_else(|| field("id"));
            (named.and_then(|t| TenantId::parse(&t).ok()), Actor::Operator)
        }
        _ => (None, Actor::system("unknown")),
    };
    if let Some(tenant) = tenant {
        let mut entry = NewEntry::new(actor, audited.action);
        match audited.target {
            Target::Param(kind, p) => {
                if let Some(id) = params.get(p) {
                    entry = entry.target(kind, id);
                }
            }
            Target::Answer(kind, f) => {
                if let Some(id) = field(f) {
                    entry = entry.target(kind, id);
                }
            }
            Target::None => {}
        }
        let user = audited.user_param.and_then(|p| params.get(p)).cloned().or_else(|| {
            // An entry whose target is a user (one just created) is about them too: their export and purge find it.
            entry.target.as_ref().filter(|(kind, _)| kind == "user").map(|(_, id)| id.clone())
        });
        if let Some(user) = user.and_then(|u| UserId::parse(&u).ok()) {
            entry = entry.about(&user);
        }
        let details: serde_json::Map<String, Value> =
            audited.details.iter().filter_map(|f| Some(((*f).to_owned(), answer.get(*f)?.clone()))).collect();
        if !details.is_empty() {
            entry = entry.details(Value::Object(details));
        }
        match stores.tenant(&tenant).await {
            Ok(store) => store.audit_store().record_or_log(&tenant, entry).await,
            Err(e) => {
                tracing::error!(tenant_id = %tenant, action = audited.action, error = ?e, "audit entry not recorded")
            }
        }
    }
    axum::response::Response::from_parts(head, axum::body::Body::from(bytes))
}
