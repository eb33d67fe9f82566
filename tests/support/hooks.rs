//! Helpers for the webhook and subscription tests: connect a user to any sandbox provider, read items, drive
//! the sandbox's webhook controls, and build the scheduler's subscription keeper against this stack.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use crate::connect::{configure, connections, consent, no_redirects, session};
use crate::{TestStack, TestTenant};

/// Configures the tenant's app at `provider` and connects a new user through the Connect page; returns
/// the user id and the provider's id of the user.
pub async fn connect_user(s: &TestStack, t: &TestTenant, provider: &str, name: &str) -> (String, String) {
    configure(s, t, provider).await;
    let user = s.user(t, name).await;
    let user_id = user["id"].as_str().unwrap_or_default().to_owned();
    let url = session(s, t, &user_id).await;
    let callback = consent(&url, provider, "approve").await;
    no_redirects().get(&callback).send().await.unwrap_or_else(|e| panic!("{e}"));
    let conn = connections(s, t, &user_id).await.into_iter().find(|c| c["provider"] == provider).unwrap_or_default();
    let provider_user = conn["provider_user_id"].as_str().unwrap_or_default().to_owned();
    (user_id, provider_user)
}

/// One item of the tenancy table, attribute values as strings.
pub async fn item(s: &TestStack, tenant: &str, sk: &str) -> Option<HashMap<String, String>> {
    let out = s
        .dynamodb
        .get_item()
        .table_name(&s.table)
        .key("pk", AttributeValue::S(tenant.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.item.map(|i| {
        i.into_iter().map(|(k, v)| (k, v.as_s().cloned().or_else(|_| v.as_n().cloned()).unwrap_or_default())).collect()
    })
}

/// Sets string attributes of an item (tests move clocks this way: a due time, a last event).
pub async fn set(s: &TestStack, tenant: &str, sk: &str, values: &[(&str, &str)]) {
    let mut req = s
        .dynamodb
        .update_item()
        .table_name(&s.table)
        .key("pk", AttributeValue::S(tenant.to_owned()))
        .key("sk", AttributeValue::S(sk.to_owned()));
    let mut parts = Vec::new();
    for (i, (k, v)) in values.iter().enumerate() {
        parts.push(format!("#k{i} = :v{i}"));
        req = req
            .expression_attribute_names(format!("#k{i}"), *k)
            .expression_attribute_values(format!(":v{i}"), AttributeValue::S((*v).to_owned()));
    }
    req.update_expression(format!("SET {}", parts.join(", "))).send().await.unwrap_or_else(|e| panic!("{e:?}"));
}

/// Every sort key of the tenant's partition that starts with `prefix`.
pub async fn keys(s: &TestStack, tenant: &str, prefix: &str) -> Vec<String> {
    let out = s
        .dynamodb
        .query()
        .table_name(&s.table)
        .key_condition_expression("pk = :t AND begins_with(sk, :p)")
        .expression_attribute_values(":t", AttributeValue::S(tenant.to_owned()))
        .expression_attribute_values(":p", AttributeValue::S(prefix.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    out.items().iter().filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned()).collect()
}

/// POSTs JSON to a sandbox provider's control route and returns its answer.
pub async fn sandbox(s: &TestStack, provider: &str, path: &str, body: Value) -> Value {
    let r = s.http.post(format!("{}{path}", s.sandboxes[provider])).json(&body).send().await;
    match r {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => panic!("{e}"),
    }
}

/// The status of each delivery a `/sandbox/webhooks/send` made.
pub fn statuses(sent: &Value) -> Vec<u64> {
    sent["deliveries"].as_array().map(|d| d.iter().filter_map(|x| x["status"].as_u64()).collect()).unwrap_or_default()
}

/// The scheduler's subscription keeper, built as the local stack builds it.
pub async fn keeper(s: &TestStack) -> sync_scheduler::Keeper {
    let sdk = shared::aws::sdk_config().await;
    let overrides = shared::providers::Overrides::from_lookup(|k| {
        s.sandboxes
            .iter()
            .find(|(id, _)| format!("TENANTRY_{}_URL", id.to_uppercase()) == k)
            .map(|(_, url)| url.clone())
    });
    sync_scheduler::Keeper::new(
        shared::subscriptions::SubscriptionStore::new(s.dynamodb.clone(), &s.table),
        shared::connect::ConnectStore::new(s.dynamodb.clone(), &s.table),
        Arc::new(shared::vault::Vault::new(aws_sdk_kms::Client::new(&sdk), s.token_key_id.clone())),
        overrides,
        s.base.clone(),
    )
}

/// Posts a body to our webhook endpoint with headers; returns the status.
pub async fn post(s: &TestStack, provider: &str, tenant: &str, headers: &[(&str, String)], body: &str) -> u16 {
    let mut req = s.http.post(format!("{}/webhooks/{provider}/{tenant}", s.base)).body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}
