//! Steps of the Connect flow, shared by the tests that drive it over HTTP.

use serde_json::{Value, json};

use crate::{Auth, TestStack, TestTenant};

pub const RETURN_URL: &str = "https://app.example/devices/done";

/// A client that does not follow redirects, like a test of redirects should be.
pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default()
}

pub async fn configure(s: &TestStack, t: &TestTenant, provider: &str) {
    let app = json!({"client_id": format!("{provider}-client"), "client_secret": format!("{provider}-secret-value")});
    let r = s.call("PUT", &format!("/v1/settings/providers/{provider}"), Auth::Bearer(&t.api_key), Some(app)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .call(
            "PUT",
            "/v1/settings/connect",
            Auth::Bearer(&t.api_key),
            Some(json!({"allowed_return_urls": [RETURN_URL]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

pub async fn session(s: &TestStack, t: &TestTenant, user_id: &str) -> String {
    let r = s
        .call(
            "POST",
            &format!("/v1/users/{user_id}/connect-sessions"),
            Auth::Bearer(&t.api_key),
            Some(json!({"return_url": RETURN_URL})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["url"].as_str().unwrap_or_default().to_owned()
}

pub fn location(r: &reqwest::Response) -> String {
    r.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Clicks Connect on the page, then Approve (or Deny) at the sandbox; returns our callback URL.
pub async fn consent(page_url: &str, provider: &str, decision: &str) -> String {
    let http = no_redirects();
    let start = http.post(format!("{page_url}/{provider}/connect")).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(start.status().as_u16(), 303, "Connect redirects to the provider");
    let authorize = url::Url::parse(&location(&start)).unwrap_or_else(|e| panic!("{e}"));
    let mut form: Vec<(String, String)> =
        authorize.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    form.push(("sandbox_user".into(), "sandbox-user-1".into()));
    form.push(("decision".into(), decision.into()));
    let mut consent_url = authorize.clone();
    consent_url.set_query(None);
    let approved = http.post(consent_url).form(&form).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(approved.status().is_redirection(), "the sandbox sends the browser back: {}", approved.status());
    location(&approved)
}

pub async fn connections(s: &TestStack, t: &TestTenant, user_id: &str) -> Vec<Value> {
    let r = s.call("GET", &format!("/v1/users/{user_id}/connections"), Auth::Bearer(&t.api_key), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"].as_array().cloned().unwrap_or_default()
}

/// The tokens stored for the user's Oura connection, opened from the vault the way the platform would.
pub async fn stored_tokens(s: &TestStack, t: &TestTenant, user_id: &str) -> Value {
    use secrecy::ExposeSecret;
    let item = s
        .dynamodb
        .get_item()
        .table_name(&s.table)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(t.id.clone()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(format!("conn#{user_id}#oura")))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let sealed = item.item().and_then(|i| i.get("tokens")).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let vault =
        shared::vault::Vault::new(aws_sdk_kms::Client::new(&shared::aws::sdk_config().await), s.token_key_id.clone());
    let tenant = shared::ids::TenantId::parse(&t.id).unwrap_or_else(|e| panic!("{e}"));
    let user = shared::ids::UserId::parse(user_id).unwrap_or_else(|e| panic!("{e}"));
    let ctx = shared::connect::token_context(&tenant, &user, shared::providers::ProviderId::Oura);
    let opened = vault.open_string(&ctx, &sealed).await.unwrap_or_else(|e| panic!("{e:?}"));
    serde_json::from_str(opened.expose_secret()).unwrap_or_default()
}

/// A sandbox provider's counters (`/sandbox/state`).
pub async fn sandbox_state(s: &TestStack, provider: &str) -> Value {
    let r = s.http.get(format!("{}/sandbox/state", s.sandboxes[provider])).send().await;
    match r {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(e) => panic!("{e}"),
    }
}
